//! Snapshot tests (insta) of what people read: the terminal table and report.md, from a
//! virtual-clock run of the quickstart, which is identical every time. A change to either
//! shows as a reviewable diff (`cargo insta review`, or compare the `.snap.new` file).

use inferlat::clock::ClockKind;
use inferlat::harness::{self, Options};
use inferlat::report::{self, Environment, Results, compare, markdown};
use inferlat::scenario;
use std::path::Path;

#[test]
fn table_and_markdown_report_of_the_quickstart() {
    let file = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/quickstart.toml"
    ));
    let s = scenario::load(file).unwrap();
    let plan = inferlat::plan::plan(&s).unwrap();
    let measured = harness::run_to_end(&s, &plan, &Options::default(), ClockKind::Virtual).unwrap();
    let results = Results {
        scenario: &s,
        plan: &plan,
        measured: &measured,
        environment: Environment::capture(std::time::UNIX_EPOCH),
    };
    insta::assert_snapshot!("quickstart_table", report::table::render(&results));

    let dir = tempfile::tempdir().unwrap();
    report::write_all(&results, &dir.path().join("quickstart")).unwrap();
    let loaded = compare::load(dir.path()).unwrap();
    let entries: Vec<markdown::Entry> = loaded
        .iter()
        .map(|l| markdown::Entry {
            loaded: l,
            comparison: None,
        })
        .collect();
    insta::assert_snapshot!(
        "quickstart_report_md",
        markdown::render(&entries, "inferlat report")
    );
}
