//! (I/O: files) The files of a volume the kubelet writes (secret, configMap, downwardAPI,
//! projected) as one payload, brought onto the volume's directory much as the kubelet's atomic
//! writer does: a changed file is replaced by rename (a reader sees the old content or the
//! new, never a partial file), an unchanged one is not touched (so its mtime tells when it
//! really changed), and a file of the previous payload that the new one lacks is removed.
//! Unlike the kubelet's writer, the payload is not switched as a whole (no `..data` symlink):
//! while a pass runs, a reader may see some files new and others still old.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{create_dir, safe_relative};

/// One file's content and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// What a volume should hold: files by path relative to the volume.
#[derive(Debug, Default)]
pub struct Payload {
    pub files: BTreeMap<PathBuf, File>,
    /// Files that belong to the volume but that this pass leaves as they are (service-account
    /// tokens that are not due for renewal): neither rewritten nor removed.
    pub keep: BTreeSet<PathBuf>,
}

impl Payload {
    /// Adds (or, for a path already added, replaces) a file; `rel` may not leave the volume.
    pub fn add(&mut self, rel: &str, bytes: impl Into<Vec<u8>>, mode: i32) -> anyhow::Result<()> {
        let path = safe_relative(rel)?.to_path_buf();
        let mode = u32::try_from(mode).unwrap_or(0o644) & 0o7777;
        self.keep.remove(&path);
        self.files.insert(
            path,
            File {
                bytes: bytes.into(),
                mode,
            },
        );
        Ok(())
    }

    /// Keeps the file at `rel` as it is.
    pub fn keep(&mut self, rel: &str) -> anyhow::Result<()> {
        let path = safe_relative(rel)?.to_path_buf();
        if !self.files.contains_key(&path) {
            self.keep.insert(path);
        }
        Ok(())
    }

    /// Every path the volume holds after this pass.
    pub fn paths(&self) -> BTreeSet<PathBuf> {
        self.files.keys().chain(&self.keep).cloned().collect()
    }
}

/// What [`apply`] changed, paths relative to the volume.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
}

impl Applied {
    pub fn changed(&self) -> bool {
        !self.written.is_empty() || !self.removed.is_empty()
    }
}

/// Brings `dir` to `payload`: first removes the files of `previous` (the paths the last pass
/// left) that the payload no longer has, then writes each file whose content, mode or (with
/// `group`, the pod's fsGroup) group differs, complete with its final mode and group before it
/// is renamed into place. Only files this kubelet wrote are ever removed.
pub fn apply(
    dir: &Path,
    payload: &Payload,
    previous: &BTreeSet<PathBuf>,
    group: Option<u32>,
) -> anyhow::Result<Applied> {
    let mut applied = Applied::default();
    let now = payload.paths();
    for rel in previous.difference(&now) {
        if remove(dir, rel)? {
            applied.removed.push(rel.clone());
        }
    }
    for (rel, file) in &payload.files {
        // Secret-like volumes are given to the fsGroup read-only (`give_to_group`).
        let mode = if group.is_some() {
            file.mode | 0o040
        } else {
            file.mode
        };
        let path = dir.join(rel);
        if !is_current(&path, &file.bytes, mode, group) {
            write_file(&path, &file.bytes, mode, group)?;
            applied.written.push(rel.clone());
        }
    }
    Ok(applied)
}

/// Whether `path` is a regular file with these bytes, mode and group.
fn is_current(path: &Path, bytes: &[u8], mode: u32, group: Option<u32>) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.len() == bytes.len() as u64
        && meta.permissions().mode() & 0o7777 == mode
        && group.is_none_or(|g| meta.gid() == g)
        && std::fs::read(path).is_ok_and(|b| b == bytes)
}

/// Writes a temporary file beside `path` with its final mode and group, then renames it over
/// `path`.
fn write_file(path: &Path, bytes: &[u8], mode: u32, group: Option<u32>) -> anyhow::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        bail!("{}: not a file path", path.display());
    };
    create_dir(parent)?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".rc-tmp");
    let tmp = parent.join(tmp_name);
    let written = write_tmp(&tmp, bytes, mode, group).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_tmp(tmp: &Path, bytes: &[u8], mode: u32, group: Option<u32>) -> anyhow::Result<()> {
    std::fs::write(tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    if let Some(g) = group {
        nix::unistd::chown(tmp, None, Some(nix::unistd::Gid::from_raw(g)))
            .with_context(|| format!("chown :{g} {}", tmp.display()))?;
    }
    Ok(())
}

/// Removes the file at `rel` (`false`: there was none), then the directories above it that
/// this leaves empty, up to the volume's own.
fn remove(dir: &Path, rel: &Path) -> anyhow::Result<bool> {
    let path = dir.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if !meta.is_dir() => {}
        // Gone already, or a directory now (a later key's parent): nothing of ours to remove.
        _ => return Ok(false),
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    let mut parent = path.parent();
    while let Some(p) = parent.filter(|p| *p != dir && p.starts_with(dir)) {
        if std::fs::remove_dir(p).is_err() {
            break; // not empty
        }
        parent = p.parent();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::time::{Duration, SystemTime};

    /// A fresh directory under the system's temporary directory, removed at drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "rc-process-kubelet-{name}-{}-{:?}",
                std::process::id(),
                SystemTime::now()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn payload(files: &[(&str, &str)]) -> Payload {
        let mut p = Payload::default();
        for (path, content) in files {
            p.add(path, content.as_bytes(), 0o600).unwrap();
        }
        p
    }

    fn mtime(path: &Path) -> SystemTime {
        std::fs::metadata(path).unwrap().modified().unwrap()
    }

    /// Every file under `dir`, relative, with its content.
    fn contents(dir: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(dir).unwrap().display().to_string();
                    out.insert(rel, std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn unchanged_files_are_not_rewritten_and_changed_ones_are() {
        let tmp = TempDir::new("unchanged");
        let dir = &tmp.0;
        let first = payload(&[("tls.crt", "cert-1"), ("tls.key", "key-1")]);
        let applied = apply(dir, &first, &BTreeSet::new(), None).unwrap();
        assert_eq!(
            applied.written,
            vec![PathBuf::from("tls.crt"), "tls.key".into()]
        );
        let mode = std::fs::metadata(dir.join("tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o600);

        // Far enough apart for any filesystem's mtime resolution.
        let (crt_before, key_before) = (mtime(&dir.join("tls.crt")), mtime(&dir.join("tls.key")));
        std::thread::sleep(Duration::from_millis(20));
        let same = apply(dir, &first, &first.paths(), None).unwrap();
        assert_eq!(same, Applied::default());
        assert!(!same.changed());
        assert_eq!(mtime(&dir.join("tls.crt")), crt_before);

        let rotated = payload(&[("tls.crt", "cert-2"), ("tls.key", "key-1")]);
        let applied = apply(dir, &rotated, &first.paths(), None).unwrap();
        assert_eq!(applied.written, vec![PathBuf::from("tls.crt")]);
        assert!(applied.removed.is_empty());
        assert_eq!(mtime(&dir.join("tls.key")), key_before);
        assert_ne!(mtime(&dir.join("tls.crt")), crt_before);
        assert_eq!(
            contents(dir),
            BTreeMap::from([
                ("tls.crt".to_owned(), "cert-2".to_owned()),
                ("tls.key".to_owned(), "key-1".to_owned())
            ])
        );
    }

    #[test]
    fn a_removed_key_disappears_with_its_empty_directories() {
        let tmp = TempDir::new("removed");
        let dir = &tmp.0;
        let first = payload(&[("a", "1"), ("nested/deeper/b", "2"), ("nested/c", "3")]);
        apply(dir, &first, &BTreeSet::new(), None).unwrap();
        // A file the kubelet did not write is never removed.
        std::fs::write(dir.join("foreign"), "x").unwrap();

        let second = payload(&[("nested/c", "3")]);
        let applied = apply(dir, &second, &first.paths(), None).unwrap();
        assert_eq!(
            applied.removed,
            vec![PathBuf::from("a"), "nested/deeper/b".into()]
        );
        assert!(applied.written.is_empty());
        assert!(!dir.join("nested/deeper").exists());
        assert_eq!(
            contents(dir),
            BTreeMap::from([
                ("foreign".to_owned(), "x".to_owned()),
                ("nested/c".to_owned(), "3".to_owned())
            ])
        );

        // A key that becomes a directory of keys, and back.
        let third = payload(&[("nested", "now a file")]);
        apply(dir, &third, &second.paths(), None).unwrap();
        let fourth = payload(&[("nested/again", "4")]);
        apply(dir, &fourth, &third.paths(), None).unwrap();
        assert_eq!(
            contents(dir),
            BTreeMap::from([
                ("foreign".to_owned(), "x".to_owned()),
                ("nested/again".to_owned(), "4".to_owned())
            ])
        );
    }

    #[test]
    fn kept_files_are_neither_rewritten_nor_removed() {
        let tmp = TempDir::new("kept");
        let dir = &tmp.0;
        let first = payload(&[("token", "t-1"), ("ca.crt", "ca")]);
        apply(dir, &first, &BTreeSet::new(), None).unwrap();
        let mut second = payload(&[("ca.crt", "ca")]);
        second.keep("token").unwrap();
        assert_eq!(second.paths(), first.paths());
        let applied = apply(dir, &second, &first.paths(), None).unwrap();
        assert!(!applied.changed());
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "t-1");
        assert!(second.keep("../escape").is_err());
    }

    #[test]
    fn with_an_fs_group_files_are_written_group_readable_once() {
        let tmp = TempDir::new("group");
        let dir = &tmp.0;
        // Our own group: chown to it needs no privilege.
        let gid = nix::unistd::getgid().as_raw();
        let first = payload(&[("k", "v")]);
        apply(dir, &first, &BTreeSet::new(), Some(gid)).unwrap();
        let meta = std::fs::metadata(dir.join("k")).unwrap();
        assert_eq!(
            (meta.permissions().mode() & 0o7777, meta.gid()),
            (0o640, gid)
        );
        let again = apply(dir, &first, &first.paths(), Some(gid)).unwrap();
        assert!(!again.changed());
    }

    #[test]
    fn a_mode_change_rewrites_and_no_temporary_file_is_left() {
        let tmp = TempDir::new("mode");
        let dir = &tmp.0;
        let first = payload(&[("k", "v")]);
        apply(dir, &first, &BTreeSet::new(), None).unwrap();
        let mut second = Payload::default();
        second.add("k", "v", 0o644).unwrap();
        let applied = apply(dir, &second, &first.paths(), None).unwrap();
        assert_eq!(applied.written, vec![PathBuf::from("k")]);
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("k")]);
    }
}
