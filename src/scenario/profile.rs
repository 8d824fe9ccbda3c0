//! Device profiles: what a device can do, each figure with its source.
//!
//! Shipped profiles live in `profiles/<name>.toml` and are compiled into the binary, so
//! `inferlat` works from any directory; a `profiles/` folder beside the scenario file (or
//! its parent) overrides and extends them.

pub use crate::compute::device::{DeviceProfile, Efficiency};
use std::path::{Path, PathBuf};

/// The shipped profiles, compiled in. A test checks this list matches `profiles/`.
pub const SHIPPED: &[(&str, &str)] = &[
    ("a100-40g", include_str!("../../profiles/a100-40g.toml")),
    ("a100-80g", include_str!("../../profiles/a100-80g.toml")),
    ("h100-sxm", include_str!("../../profiles/h100-sxm.toml")),
    ("h200", include_str!("../../profiles/h200.toml")),
    ("l4", include_str!("../../profiles/l4.toml")),
    ("rtx-3090", include_str!("../../profiles/rtx-3090.toml")),
    ("rtx-4090", include_str!("../../profiles/rtx-4090.toml")),
    ("t4", include_str!("../../profiles/t4.toml")),
];

/// Where a profile came from.
#[derive(Clone, Debug)]
pub enum ProfileOrigin {
    BuiltIn,
    File(PathBuf),
}

/// Finds profiles by name: `profiles/` folders near the scenario first, then the shipped set.
#[derive(Clone, Debug, Default)]
pub struct ProfileLibrary {
    dirs: Vec<PathBuf>,
}

impl ProfileLibrary {
    /// The library for a scenario file: `<dir>/profiles`, `<dir>/../profiles`, `./profiles`.
    pub fn for_scenario(file: &Path) -> Self {
        let mut dirs = Vec::new();
        if let Some(dir) = file.parent() {
            dirs.push(dir.join("profiles"));
            if let Some(up) = dir.parent() {
                dirs.push(up.join("profiles"));
            }
        }
        dirs.push(PathBuf::from("profiles"));
        dirs.retain(|d| d.is_dir());
        dirs.dedup();
        ProfileLibrary { dirs }
    }

    /// Only the built-in profiles.
    pub fn built_in() -> Self {
        ProfileLibrary { dirs: Vec::new() }
    }

    /// Every name this library knows, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
        names.push("ideal".into());
        for dir in &self.dirs {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "toml")
                        && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
                    {
                        names.push(stem.to_string());
                    }
                }
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Loads a profile by name. Errors say which file failed and why, or which names exist.
    pub fn load(&self, name: &str) -> Result<(DeviceProfile, ProfileOrigin), String> {
        if name == "ideal" {
            return Ok((DeviceProfile::ideal(), ProfileOrigin::BuiltIn));
        }
        let valid_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            && !name.contains("..");
        if valid_name {
            for dir in &self.dirs {
                let path = dir.join(format!("{name}.toml"));
                if path.is_file() {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        format!("cannot read device profile {}: {e}", path.display())
                    })?;
                    let profile = parse_profile(name, &text)
                        .map_err(|e| format!("device profile {}: {e}", path.display()))?;
                    return Ok((profile, ProfileOrigin::File(path)));
                }
            }
            if let Some((_, text)) = SHIPPED.iter().find(|(n, _)| *n == name) {
                let profile = parse_profile(name, text)
                    .map_err(|e| format!("built-in device profile {name}: {e}"))?;
                return Ok((profile, ProfileOrigin::BuiltIn));
            }
        }
        Err(format!(
            "unknown device profile \"{name}\"; known profiles: {}",
            self.names().join(", ")
        ))
    }
}

/// Parses a profile file's text; the file name gives the name when the file has none.
pub fn parse_profile(name: &str, text: &str) -> Result<DeviceProfile, String> {
    let mut p: DeviceProfile = toml::from_str(text).map_err(|e| e.to_string())?;
    if p.name.is_empty() {
        p.name = name.to_string();
    }
    if let Some((field, msg)) = p.check().into_iter().next() {
        return Err(format!("{field}: {msg}"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_parses_and_cites_sources() {
        for (name, text) in SHIPPED {
            let p = parse_profile(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&p.name, name);
            for field in ["memory", "flops", "mem_bandwidth", "efficiency"] {
                assert!(
                    p.sources.contains_key(field),
                    "{name} has no source for {field}"
                );
            }
        }
    }

    #[test]
    fn shipped_list_matches_the_profiles_folder() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter_map(|e| {
                e.path()
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
            })
            .collect();
        on_disk.sort();
        let compiled: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(on_disk, compiled);
    }

    #[test]
    fn unknown_profile_lists_known_names() {
        let e = ProfileLibrary::built_in().load("a100-90g").unwrap_err();
        assert!(e.contains("a100-80g") && e.contains("ideal"), "{e}");
        assert!(ProfileLibrary::built_in().load("../etc/passwd").is_err());
    }
}
