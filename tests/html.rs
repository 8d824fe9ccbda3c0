//! `report.html`: the quickstart and congested-minute on the virtual clock, run twice so the
//! second run has a comparison with a saved baseline, then `inferlat report`. The page must
//! be self-contained (nothing fetched from the network), hold every plot of every scenario,
//! and escape text taken from the files. Where a `chromium` binary is on PATH, the page is
//! also loaded in headless Chromium: it must render every plot and log no console error.

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SCENARIOS: &[&str] = &["quickstart", "congested-minute"];

/// The `data-plot` of every plot each scenario's section must hold.
const PLOTS: &[&str] = &[
    "percentiles-ttft",
    "percentiles-tpot",
    "percentiles-itl",
    "percentiles-e2e",
    "over-time-e2e",
    "over-time-ttft",
    "breakdown",
    "topology",
];

fn scenario_file(name: &str) -> String {
    format!("{}/scenarios/{name}.toml", env!("CARGO_MANIFEST_DIR"))
}

fn inferlat(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("inferlat")
        .unwrap()
        .args(args)
        .timeout(Duration::from_secs(180))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs both scenarios into `out` twice (saving, then comparing with, baseline "main") and
/// writes the report; returns report.html's text.
fn build_report(out: &Path) -> String {
    let files: Vec<String> = SCENARIOS.iter().map(|s| scenario_file(s)).collect();
    for extra in [["--save-baseline", "main"], ["--baseline", "main"]] {
        let mut args = vec!["run"];
        args.extend(files.iter().map(String::as_str));
        args.extend([
            "--clock",
            "virtual",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        args.extend(extra);
        let (code, stdout, stderr) = inferlat(&args);
        assert_eq!(code, 0, "run {extra:?}: {stdout}{stderr}");
    }
    for s in SCENARIOS {
        assert!(
            out.join(s).join("compare.json").is_file(),
            "{s}: no compare.json"
        );
    }
    let (code, stdout, stderr) = inferlat(&["report", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("report.html"), "{stdout}");
    std::fs::read_to_string(out.join("report.html")).unwrap()
}

/// The values of every `name=` attribute (double- or single-quoted) in `html`.
fn attribute_values<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    let needle = format!("{name}=");
    let mut from = 0;
    while let Some(i) = lower[from..].find(&needle) {
        let at = from + i;
        from = at + needle.len();
        // Only a whole attribute name: preceded by whitespace (or `:` as in xlink:href).
        let before = html[..at].chars().next_back();
        if !before.is_some_and(|c| c.is_whitespace() || c == ':') {
            continue;
        }
        let rest = &html[from..];
        let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            out.push(
                rest.split(|c: char| c.is_whitespace() || c == '>')
                    .next()
                    .unwrap(),
            );
            continue;
        };
        let end = rest[1..].find(q).map(|e| e + 1).unwrap_or(rest.len());
        out.push(&rest[1..end]);
    }
    out
}

fn is_remote(v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    v.starts_with("http://") || v.starts_with("https://") || v.starts_with("//")
}

/// One scenario's `<section>`, found by its `data-scenario`.
fn section<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!("data-scenario=\"{name}\""))
        .unwrap_or_else(|| panic!("no section for {name}"));
    let end = html[start..]
        .find("</section>")
        .map(|e| start + e)
        .unwrap_or_else(|| panic!("{name}: section not closed"));
    &html[start..end]
}

/// The `<svg ...>...</svg>` element carrying `data-plot="plot"` in `text`.
fn plot_svg<'a>(text: &'a str, plot: &str) -> &'a str {
    let at = text
        .find(&format!("data-plot=\"{plot}\""))
        .unwrap_or_else(|| panic!("no plot {plot}"));
    let start = text[..at].rfind("<svg").expect("data-plot on an <svg>");
    let end = text[at..].find("</svg>").expect("closed svg") + at;
    &text[start..end]
}

fn check_page(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{}", &html[..80]);
    // Self-contained: nothing to fetch.
    for attr in ["src", "href", "xlink:href", "action", "poster", "data"] {
        for v in attribute_values(html, attr) {
            assert!(!is_remote(v), "{attr}=\"{v}\" points to the network");
        }
    }
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script src"), "external script");
    assert!(!lower.contains("<link"), "external stylesheet or font");
    assert!(!lower.contains("@import"), "imported stylesheet");
    for (i, _) in lower.match_indices("url(") {
        let arg = lower[i + 4..].trim_start_matches(['"', '\'']);
        let shown: String = arg.chars().take(40).collect();
        assert!(!is_remote(arg), "url({shown}) points to the network");
    }
    // Every plot, once per scenario, each with a title, a legend and (but the drawing of
    // the topology) axis labels.
    for s in SCENARIOS {
        let sec = section(html, s);
        for p in PLOTS {
            assert_eq!(
                sec.matches(&format!("data-plot=\"{p}\"")).count(),
                1,
                "{s}: plot {p}"
            );
            let svg = plot_svg(sec, p);
            assert!(svg.contains("class=\"title\""), "{s} {p}: no title");
            assert!(svg.contains("<title>"), "{s} {p}: no accessible title");
            assert!(svg.contains("class=\"legend\""), "{s} {p}: no legend");
            if *p != "topology" {
                assert_eq!(
                    svg.matches("class=\"axis-label\"").count(),
                    2,
                    "{s} {p}: axis labels"
                );
            }
        }
        // The comparison: the previous topology drawn, dashed, and the verdicts.
        let ttft = plot_svg(sec, "percentiles-ttft");
        assert!(ttft.contains("topology, previous (baseline"), "{s}");
        assert!(ttft.contains("stroke-dasharray"), "{s}: no dashed line");
        assert!(sec.contains("Against the baseline"), "{s}");
        assert!(sec.contains("no change, 0 inconclusive"), "{s}");
        // Curves and points were drawn from the files.
        assert!(ttft.matches("<polyline").count() >= 3, "{s}: ttft curves");
        assert!(
            plot_svg(sec, "over-time-e2e").matches("<circle").count() >= 10,
            "{s}: e2e over time"
        );
        assert!(
            plot_svg(sec, "breakdown").matches("<rect").count() >= 12,
            "{s}: breakdown bars"
        );
        let topo = plot_svg(sec, "topology");
        assert!(
            topo.contains(">client<") && topo.contains(">worker<") && topo.contains("RTT "),
            "{s}: {topo}"
        );
    }
    assert_eq!(
        html.matches("data-plot=\"").count(),
        PLOTS.len() * SCENARIOS.len()
    );
    // The tables of report.md.
    for text in [
        "net tax p50",
        "dev tax p50",
        "floor",
        "Throughput:",
        "Reference ttft_p50",
        "References: ",
    ] {
        assert!(html.contains(text), "no {text}");
    }
    // congested-minute's link changes are marked on its time plots and listed.
    let cm = section(html, "congested-minute");
    assert!(
        cm.contains("the links change at 20 s, 50 s"),
        "link changes"
    );
    assert!(cm.contains("50 Mbit/s, loss 1%"), "changed link");
}

fn find_chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Console messages of the page, from Chromium's stderr log: errors and uncaught
/// exceptions, and any other console line too, since Chromium logs `console.error` at its
/// own INFO level (`INFO:CONSOLE:1] "boom"`) and the page has no script that should log.
fn console_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect()
}

fn chromium(bin: &Path, args: &[&str]) -> (bool, String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.path().display()),
        ])
        .args(args)
        .timeout(Duration::from_secs(600))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn browser_check(page: &Path, shot: &Path) {
    let Some(bin) = find_chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "no chromium (or chromium-browser) on PATH: .ci/run should have installed \
                 Debian's `chromium` package (apt-get install chromium)"
            );
        }
        eprintln!(
            "note: no chromium on PATH, skipping the browser check of report.html \
             (apt-get install chromium to run it)"
        );
        return;
    };
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let (ok, dom, stderr) = chromium(&bin, &["--dump-dom", &url]);
    assert!(ok, "chromium --dump-dom failed: {stderr}");
    let errors = console_errors(&stderr);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    for s in SCENARIOS {
        let sec = section(&dom, s);
        for p in PLOTS {
            assert!(
                sec.contains(&format!("data-plot=\"{p}\"")),
                "{s}: plot {p} missing from the rendered DOM"
            );
        }
    }
    assert_eq!(
        dom.matches("data-plot=\"").count(),
        PLOTS.len() * SCENARIOS.len(),
        "plots in the rendered DOM"
    );
    let (ok, _, stderr) = chromium(
        &bin,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,3000",
            &url,
        ],
    );
    assert!(ok, "chromium --screenshot failed: {stderr}");
    let errors = console_errors(&stderr);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    let png = std::fs::read(shot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );
}

#[test]
fn report_html_is_self_contained_and_has_every_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results");
    let html = build_report(&out);
    check_page(&html);
    browser_check(&out.join("report.html"), &tmp.path().join("report.png"));

    // Text from the files is escaped: a scenario renamed to markup shows as text.
    let odd = tmp.path().join("odd/quickstart");
    std::fs::create_dir_all(&odd).unwrap();
    for e in std::fs::read_dir(out.join("quickstart")).unwrap().flatten() {
        if e.file_name() != "compare.json" {
            std::fs::copy(e.path(), odd.join(e.file_name())).unwrap();
        }
    }
    let mut s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(odd.join("summary.json")).unwrap()).unwrap();
    s["scenario"]["name"] = "<script>alert(1)</script> & \"q\"".into();
    std::fs::write(odd.join("summary.json"), s.to_string()).unwrap();
    let (code, stdout, stderr) = inferlat(&["report", odd.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let page = std::fs::read_to_string(tmp.path().join("odd/report.html")).unwrap();
    assert!(!page.contains("<script>"), "unescaped scenario name");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;"),
        "escaped scenario name"
    );
}

/// The section of a topology drawing between `data-plot="topology"` and its `</svg>`.
fn topology_of(page: &str, scenario: &str) -> String {
    plot_svg(section(page, scenario), "topology").to_string()
}

#[test]
fn the_topology_drawing_shows_recorded_roles_and_parts_and_v1_folders_still_draw() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("results");
    let (code, stdout, stderr) = inferlat(&[
        "run",
        &scenario_file("dllama-tp2"),
        "--clock",
        "virtual",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let (code, stdout, stderr) = inferlat(&["report", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    let topo = topology_of(&page, "dllama-tp2");
    assert!(topo.contains(">worker · tensor-root<"), "{topo}");
    assert!(topo.contains(">worker · tensor-member<"), "{topo}");

    // Version-1 folders have no recorded parts: their drawing still names the roles,
    // guessed from the traffic.
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let to = tmp.path().join("v1");
    let (code, stdout, stderr) = inferlat(&[
        "report",
        v1.join("quickstart").to_str().unwrap(),
        v1.join("petals-bloom-lan-relayed").to_str().unwrap(),
        "--out",
        to.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let page = std::fs::read_to_string(to.join("report.html")).unwrap();
    for s in ["quickstart", "petals-bloom-lan-relayed"] {
        let topo = topology_of(&page, s);
        assert!(
            topo.contains(">client<") && topo.contains(">worker<"),
            "{s}: {topo}"
        );
    }
    let md = std::fs::read_to_string(to.join("report.md")).unwrap();
    assert!(md.contains("| quickstart | virtual |"), "{md}");
}
