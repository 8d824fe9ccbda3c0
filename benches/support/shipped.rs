//! The shipped scenarios, for the benches that run them all (`scenarios`, `agreement`).

use inferlat::scenario::{self, Scenario};
use std::path::{Path, PathBuf};

/// Every top-level `scenarios/*.toml` (not `fidelity/`, `swarm/`, `traces/`), in file-name
/// order, keeping those whose name contains `filter`. A file that does not load panics: a
/// shipped scenario must be valid.
pub fn shipped(filter: Option<&str>) -> Vec<Scenario> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| scenario::load(f).unwrap_or_else(|e| panic!("{e}")))
        .filter(|s| filter.is_none_or(|f| s.name.contains(f)))
        .collect()
}
