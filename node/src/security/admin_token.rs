//! The admin token in use, and the others accepted during a rotation (`<file>.next`,
//! `<file>.previous`), re-read when the files change.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context};

use crate::http::auth::token_matches;

/// Shortest token accepted (admin or client).
pub const MIN_TOKEN_LEN: usize = 16;

/// The admin token in use, and the others accepted during a rotation.
pub(super) struct AdminToken {
    file: Option<PathBuf>,
    tokens: RwLock<Tokens>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Tokens {
    current: Arc<str>,
    /// `<file>.next` and `<file>.previous`, when present.
    others: Vec<Arc<str>>,
}

impl AdminToken {
    pub(super) fn fixed(token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            file: None,
            tokens: RwLock::new(Tokens {
                current: checked(token.trim(), "the admin token")?.into(),
                others: Vec::new(),
            }),
        })
    }

    pub(super) fn from_file(file: PathBuf) -> anyhow::Result<Self> {
        let tokens = read_tokens(&file)?;
        Ok(Self {
            file: Some(file),
            tokens: RwLock::new(tokens),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tokens> {
        self.tokens.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn current(&self) -> Arc<str> {
        self.read().current.clone()
    }

    pub(super) fn accepts(&self, given: &str) -> bool {
        let tokens = self.read();
        token_matches(&tokens.current, given)
            || tokens.others.iter().any(|t| token_matches(t, given))
    }

    /// `Ok(true)` when the files changed and were taken.
    pub(super) fn reload(&self) -> anyhow::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let tokens = read_tokens(file)?;
        if *self.read() == tokens {
            return Ok(false);
        }
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = tokens;
        Ok(true)
    }

    pub(super) fn fingerprint(&self) -> String {
        rc_tls::fingerprint(self.current().as_bytes())
    }

    /// The sent token's fingerprint, and every accepted one's.
    pub(super) fn fingerprints(&self) -> (String, Vec<String>) {
        let tokens = self.read();
        let fp = |t: &Arc<str>| rc_tls::fingerprint(t.as_bytes());
        let accepted = std::iter::once(&tokens.current)
            .chain(&tokens.others)
            .map(fp)
            .collect();
        (fp(&tokens.current), accepted)
    }
}

fn read_tokens(file: &Path) -> anyhow::Result<Tokens> {
    let current = std::fs::read_to_string(file)
        .with_context(|| format!("reading the admin token from {}", file.display()))?;
    let current: Arc<str> = checked(current.trim(), "the admin token")?.into();
    let mut others = Vec::new();
    for suffix in ["next", "previous"] {
        let path = PathBuf::from(format!("{}.{suffix}", file.display()));
        match std::fs::read_to_string(&path) {
            Ok(t) => {
                let t: Arc<str> = checked(t.trim(), &format!("the {suffix} admin token"))?.into();
                if t != current && !others.contains(&t) {
                    others.push(t);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(Tokens { current, others })
}

pub(super) fn checked<'a>(token: &'a str, what: &str) -> anyhow::Result<&'a str> {
    if token.len() < MIN_TOKEN_LEN {
        bail!("{what} must be at least {MIN_TOKEN_LEN} characters");
    }
    Ok(token)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_is_accepted_step_by_step_and_a_bad_file_keeps_the_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let next = dir.path().join("token.next");
        let previous = dir.path().join("token.previous");
        let (old, new) = ("old-token-0123456789", "new-token-0123456789");
        std::fs::write(&file, old).unwrap();
        let t = AdminToken::from_file(file.clone()).unwrap();
        assert!(t.accepts(old) && !t.accepts(new));

        // 1. The next token is accepted; the old one is still sent.
        std::fs::write(&next, new).unwrap();
        assert!(t.reload().unwrap());
        assert!(t.accepts(old) && t.accepts(new));
        assert_eq!(&*t.current(), old);
        // 2. The new one is sent; the previous one still accepted.
        std::fs::remove_file(&next).unwrap();
        std::fs::write(&file, new).unwrap();
        std::fs::write(&previous, old).unwrap();
        assert!(t.reload().unwrap());
        assert!(t.accepts(old) && t.accepts(new));
        assert_eq!(&*t.current(), new);
        assert!(!t.reload().unwrap(), "unchanged files are no change");
        // 3. The previous one is dropped.
        std::fs::remove_file(&previous).unwrap();
        assert!(t.reload().unwrap());
        assert!(!t.accepts(old) && t.accepts(new));

        // A token file emptied (or too short) keeps the tokens in use.
        std::fs::write(&file, "short").unwrap();
        assert!(t.reload().is_err());
        assert!(t.accepts(new));
        assert!(!t.accepts("short") && !t.accepts(""));
    }

    #[test]
    fn fingerprints_tell_tokens_apart_without_showing_them() {
        let t = AdminToken::fixed("a-token-of-twenty-chars").unwrap();
        let (sent, accepted) = t.fingerprints();
        assert_eq!(sent.len(), 16);
        assert_eq!(accepted, vec![sent.clone()]);
        assert!(!sent.contains("token"));
        assert_ne!(
            sent,
            AdminToken::fixed("another-token-of-twenty")
                .unwrap()
                .fingerprint()
        );
    }
}
