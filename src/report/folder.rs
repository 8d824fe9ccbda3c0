//! One folder, one run (DESIGN §11): a result folder is written whole into a temporary
//! folder beside it and swapped into place, and readers check that it did not change while
//! they read it.
//!
//! A run writing `<out>/<name>/`:
//!
//! 1. removes the `<out>/.<name>.<pid>-<nonce>.tmp/` folders of processes that are no
//!    longer running (what a crash left: see below);
//! 2. writes every file into its own `<out>/.<name>.<pid>-<nonce>.tmp/`, each synced, then
//!    [`MANIFEST`] (`run.json`: a run id unique to this write and the files' names), and
//!    syncs the folder;
//! 3. on Linux, swaps it in with one `renameat2`: `RENAME_NOREPLACE` when there is no
//!    `<out>/<name>` yet, `RENAME_EXCHANGE` when there is one, which atomically puts the new
//!    folder at `<out>/<name>` and the old one at the temporary name (elsewhere: renames the
//!    old folder aside, then the new one in);
//! 4. removes the old folder (now at the temporary name) and syncs `<out>`.
//!
//! What a reader of `<out>/<name>` sees at each instant: before step 3 the old folder,
//! complete; after it the new one, complete; never a mix, never a missing folder (with the
//! fallback of other systems: no folder for the instant between the two renames). A crash
//! before step 3 leaves the old folder in place and a partial `.tmp` folder; after it, the
//! new folder in place and the old one under a `.tmp` name. Either `.tmp` is removed by
//! the next write of that scenario. Two runs writing the same folder at once each swap in
//! a complete folder; the last swap wins, and the loser's folder is removed.
//!
//! A reader opens files by path one at a time, so a swap between two of its opens would
//! mix two runs: [`stable`] reads the run id before and after reading, and reads again
//! when it changed. A run id is never swapped back in once swapped out, so the same id on
//! both sides means every file came from that one folder.

use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The file that names a folder's run and its files.
pub const MANIFEST: &str = "run.json";

/// How many times [`stable`] reads a folder that keeps changing before it gives up.
const TRIES: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: a result folder needs a name", .0.display())]
    NoName(PathBuf),
    #[error("\"{0}\" is not a file name inside a result folder")]
    BadFileName(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FolderError + '_ {
    move |source| FolderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `run.json`: which run wrote the folder, and its files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub run_id: String,
    pub files: Vec<String>,
}

/// A run id no other write shares: wall-clock nanoseconds, the process, a counter and
/// random bits.
pub fn new_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos}-{}-{}-{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// The run id of a folder, from its manifest; `None` without one (a folder written before
/// manifests, or no folder).
pub fn run_id(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
    serde_json::from_str::<Manifest>(&text)
        .ok()
        .map(|m| m.run_id)
}

/// Runs `read` over a folder until the folder's run id is the same before and after it;
/// `unstable` makes the error of a folder that kept changing.
pub fn stable<T, E>(
    dir: &Path,
    mut read: impl FnMut() -> Result<T, E>,
    unstable: impl FnOnce(String) -> E,
) -> Result<T, E> {
    for attempt in 0..TRIES {
        let before = run_id(dir);
        let result = read();
        if run_id(dir) == before {
            return result;
        }
        std::thread::sleep(std::time::Duration::from_millis(1 << attempt.min(6)));
    }
    Err(unstable(format!(
        "the folder changed {TRIES} times while being read (another run is writing it); read it again when that run is done"
    )))
}

/// A result folder being written: files go into a temporary folder beside the destination,
/// and [`Staged::commit`] swaps it into place. Dropped uncommitted, it is removed.
pub struct Staged {
    dest: PathBuf,
    tmp: PathBuf,
    run_id: String,
    files: Vec<String>,
    committed: bool,
}

impl Staged {
    /// Starts a folder that will replace `dest`; removes what crashed writes of it left.
    pub fn new(dest: &Path) -> Result<Self, FolderError> {
        let name = dest
            .file_name()
            .ok_or_else(|| FolderError::NoName(dest.to_path_buf()))?
            .to_string_lossy()
            .into_owned();
        let parent = parent(dest);
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        remove_stale(parent, &name);
        let run_id = new_run_id();
        let nonce = run_id.rsplit('-').next().unwrap_or("0");
        let count = run_id.split('-').nth(2).unwrap_or("0");
        let tmp = parent.join(format!(".{name}.{}-{count}{nonce}.tmp", std::process::id()));
        std::fs::create_dir(&tmp).map_err(io(&tmp))?;
        Ok(Staged {
            dest: dest.to_path_buf(),
            tmp,
            run_id,
            files: Vec::new(),
            committed: false,
        })
    }

    /// The temporary folder, to read what was written before the swap.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Where the folder goes.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Writes one file into the folder (replacing one of that name); returns the path it
    /// will have once committed.
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<PathBuf, FolderError> {
        let plain = Path::new(name).file_name().is_some_and(|n| n == name);
        if !plain || name == MANIFEST || name.starts_with('.') {
            return Err(FolderError::BadFileName(name.into()));
        }
        let path = self.tmp.join(name);
        let mut f = std::fs::File::create(&path).map_err(io(&path))?;
        f.write_all(bytes).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        if !self.files.iter().any(|f| f == name) {
            self.files.push(name.into());
        }
        Ok(self.dest.join(name))
    }

    /// Writes the manifest and swaps the folder into place; returns its path.
    pub fn commit(mut self) -> Result<PathBuf, FolderError> {
        let manifest = Manifest {
            schema_version: 1,
            run_id: self.run_id.clone(),
            files: self.files.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest encodes");
        bytes.push(b'\n');
        let path = self.tmp.join(MANIFEST);
        let mut f = std::fs::File::create(&path).map_err(io(&path))?;
        f.write_all(&bytes).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        sync_dir(&self.tmp)?;
        let replaced = swap_in(&self.tmp, &self.dest).map_err(io(&self.dest))?;
        self.committed = true;
        if let Some(old) = replaced {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        sync_dir(parent(&self.dest))?;
        Ok(self.dest.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

fn parent(p: &Path) -> &Path {
    p.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn sync_dir(dir: &Path) -> Result<(), FolderError> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))?;
    let _ = dir;
    Ok(())
}

/// Puts `tmp` at `dest`; returns where the folder it replaced now is (to be removed).
fn swap_in(tmp: &Path, dest: &Path) -> std::io::Result<Option<PathBuf>> {
    #[cfg(target_os = "linux")]
    loop {
        match renameat2(tmp, dest, libc::RENAME_NOREPLACE) {
            Ok(()) => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) if unsupported(&e) => break,
            Err(e) => return Err(e),
        }
        match renameat2(tmp, dest, libc::RENAME_EXCHANGE) {
            Ok(()) => return Ok(Some(tmp.to_path_buf())),
            // Removed between the two calls: try to put ours there again.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if unsupported(&e) => break,
            Err(e) => return Err(e),
        }
    }
    // Elsewhere (or a file system without renameat2): the old folder aside, the new one in.
    let aside = PathBuf::from(format!(
        "{}-old.tmp",
        tmp.to_string_lossy().trim_end_matches(".tmp")
    ));
    loop {
        let moved = match std::fs::rename(dest, &aside) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        match std::fs::rename(tmp, dest) {
            Ok(()) => return Ok(moved.then_some(aside)),
            // Another run put its folder there in between: it goes aside on the next turn.
            Err(_) if dest.exists() => {
                if moved {
                    std::fs::remove_dir_all(&aside)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(target_os = "linux")]
fn unsupported(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS))
}

#[cfg(target_os = "linux")]
fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both paths are NUL-terminated strings that live across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes `.<name>.<pid>-<nonce>.tmp` folders whose process is gone.
fn remove_stale(parent: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let prefix = format!(".{name}.");
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_replaces_the_folder_whole_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("s");
        let mut a = Staged::new(&dest).unwrap();
        a.write("x", b"a").unwrap();
        a.write("only-a", b"a").unwrap();
        let id_a = a.run_id().to_string();
        a.commit().unwrap();
        assert_eq!(run_id(&dest), Some(id_a));
        let mut b = Staged::new(&dest).unwrap();
        b.write("x", b"b").unwrap();
        let id_b = b.run_id().to_string();
        b.commit().unwrap();
        assert_eq!(run_id(&dest), Some(id_b));
        assert_eq!(std::fs::read(dest.join("x")).unwrap(), b"b");
        assert!(!dest.join("only-a").exists());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn an_uncommitted_folder_is_removed_and_a_dead_runs_tmp_is_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("s");
        drop(Staged::new(&dest).unwrap());
        // pid 0x7fff_fff0 is not a running process.
        let stale = dir.path().join(format!(".s.{}-1.tmp", i32::MAX - 15));
        std::fs::create_dir(&stale).unwrap();
        let other = dir.path().join(".s2.1-1.tmp");
        std::fs::create_dir(&other).unwrap();
        Staged::new(&dest).unwrap().commit().unwrap();
        assert!(!stale.exists());
        assert!(
            other.exists(),
            "another scenario's folder is not this one's"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    /// Two writers of one folder and a reader, many times over: every read and the folder
    /// left at the end hold the files of one write, and no `.tmp` folder is left.
    #[test]
    fn concurrent_writers_never_mix_a_folder() {
        const FILES: [&str; 4] = [
            "summary.json",
            "topology.e2e.hgrm",
            "topology.hlog",
            "compare.json",
        ];
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("s");
        let done = std::sync::atomic::AtomicBool::new(false);
        let read_one = || {
            stable(
                &dest,
                || -> Result<Vec<Vec<u8>>, String> {
                    FILES
                        .iter()
                        .map(|f| std::fs::read(dest.join(f)).map_err(|e| e.to_string()))
                        .collect()
                },
                |why| why,
            )
        };
        std::thread::scope(|scope| {
            let writers: Vec<_> = (0..2)
                .map(|w| {
                    let dest = &dest;
                    scope.spawn(move || {
                        for i in 0..100 {
                            let mut s = Staged::new(dest).unwrap();
                            let tag = format!("writer {w} write {i} {}", s.run_id());
                            for f in FILES {
                                s.write(f, tag.as_bytes()).unwrap();
                            }
                            s.commit().unwrap();
                        }
                    })
                })
                .collect();
            scope.spawn(|| {
                let mut reads = 0;
                while !done.load(Ordering::Relaxed) {
                    if let Ok(files) = read_one() {
                        assert!(files.iter().all(|f| *f == files[0]), "a mixed read");
                        reads += 1;
                    }
                }
                assert!(reads > 0);
            });
            for w in writers {
                w.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
        });
        let files = read_one().unwrap();
        let tag = String::from_utf8(files[0].clone()).unwrap();
        assert!(
            files.iter().all(|f| *f == files[0]),
            "the folder mixes writes"
        );
        assert!(tag.ends_with(&run_id(&dest).unwrap()), "{tag}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("s")]);
    }

    #[test]
    fn file_names_stay_inside_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Staged::new(&dir.path().join("s")).unwrap();
        for bad in ["../x", "a/b", MANIFEST, ".hidden", ""] {
            assert!(s.write(bad, b"").is_err(), "{bad}");
        }
    }
}
