//! Removing large files without stalling the log's fsyncs.
//!
//! Freeing a file's blocks is journalled, and with online discard (`-o discard`, common on
//! cloud disks) each freed extent is also trimmed while the journal commits: a 100 MB snapshot
//! or log segment unlinked at once held every fsync of the log behind it for tens of
//! milliseconds. Shrinking the file step by step, each step committed on its own, spreads that
//! work into pieces the log's fsyncs can pass between.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;

/// Bytes freed per step.
const STEP: u64 = 8 << 20;

/// Suffix of a file being removed: nothing reads it, and start-up deletes any left over.
pub const REMOVING: &str = ".removing";

/// Take `path` out of use at once (a rename to a name nothing reads, made durable), then free
/// it gradually. A crash part-way never leaves a cut-short file under a name replay reads.
pub fn discard(path: &Path) -> io::Result<()> {
    discard_all(std::slice::from_ref(&path.to_path_buf()))
}

/// [`discard`] for several files of one directory: all are taken out of use (renamed, with one
/// sync of the directory) before any is freed, so a crash leaves either all of them in use or
/// none.
pub fn discard_all(paths: &[std::path::PathBuf]) -> io::Result<()> {
    let mut removing = Vec::with_capacity(paths.len());
    for path in paths {
        let mut name = path.as_os_str().to_owned();
        name.push(REMOVING);
        let to = std::path::PathBuf::from(name);
        fs::rename(path, &to)?;
        removing.push(to);
    }
    if let Some(dir) = paths.first().and_then(|p| p.parent()) {
        fs::File::open(dir)?.sync_all()?;
    }
    removing.iter().try_for_each(|p| remove_gradually(p))
}

/// Delete what a crash left half-removed in `dir`.
pub fn clean_up(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().ends_with(REMOVING) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Truncate `path` from the end in [`STEP`]s, syncing each, then unlink it. A crash part-way
/// leaves a shorter file of the same name: callers only remove files that nothing reads again.
pub fn remove_gradually(path: &Path) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let mut len = file.metadata()?.len();
    while len > STEP {
        len -= STEP;
        file.set_len(len)?;
        file.sync_all()?;
    }
    drop(file);
    fs::remove_file(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_discarded_file_leaves_its_name_at_once_and_leftovers_are_cleaned_up() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("wal-1.log");
        fs::write(&path, vec![1u8; (STEP + 1) as usize])?;
        discard(&path)?;
        assert_eq!(fs::read_dir(dir.path())?.count(), 0);
        let leftover = dir.path().join(format!("wal-2.log{REMOVING}"));
        fs::write(&leftover, b"half")?;
        fs::write(dir.path().join("wal-3.log"), b"kept")?;
        clean_up(dir.path())?;
        assert!(!leftover.exists() && dir.path().join("wal-3.log").exists());
        Ok(())
    }

    #[test]
    fn a_large_file_is_removed_and_a_missing_one_is_an_error() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("big");
        fs::write(&path, vec![7u8; (2 * STEP + 5) as usize])?;
        remove_gradually(&path)?;
        assert!(!path.exists());
        assert!(remove_gradually(&path).is_err());
        Ok(())
    }
}
