//! Client authentication (optional): the tokens that may use the client API, one per line of
//! `--client-token-file`, each `<token>` (reads and writes) or `<token> read-only`. Re-read when
//! the file changes, like the admin token. Without the file the client API is open.

use std::path::PathBuf;
use std::sync::RwLock;

use anyhow::Context;

use super::admin_token::checked;
use crate::http::auth::token_matches;

/// What a client token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAccess {
    ReadWrite,
    ReadOnly,
}

/// The client tokens in force.
pub struct ClientTokens {
    file: PathBuf,
    tokens: RwLock<Vec<(String, ClientAccess)>>,
}

impl ClientTokens {
    pub fn from_file(file: PathBuf) -> anyhow::Result<Self> {
        let tokens = read(&file)?;
        Ok(Self {
            file,
            tokens: RwLock::new(tokens),
        })
    }

    /// What the bearer token `given` may do; `None` for no token this node knows.
    pub fn access(&self, given: &str) -> Option<ClientAccess> {
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        // Compare with every token (constant time each): no early exit tells which matched.
        tokens
            .iter()
            .filter(|(token, _)| token_matches(token, given))
            .map(|(_, access)| *access)
            .fold(None, |best, a| match (best, a) {
                (Some(ClientAccess::ReadWrite), _) | (_, ClientAccess::ReadWrite) => {
                    Some(ClientAccess::ReadWrite)
                }
                _ => Some(ClientAccess::ReadOnly),
            })
    }

    /// `Ok(true)` when the file changed and was taken; an unreadable or invalid file keeps the
    /// tokens in force.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let tokens = read(&self.file)?;
        let mut current = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if *current == tokens {
            return Ok(false);
        }
        *current = tokens;
        Ok(true)
    }

    /// How many tokens are in force (logged, never the tokens).
    pub fn count(&self) -> usize {
        self.tokens.read().map(|t| t.len()).unwrap_or(0)
    }
}

fn read(file: &PathBuf) -> anyhow::Result<Vec<(String, ClientAccess)>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading client tokens from {}", file.display()))?;
    parse(&text).with_context(|| format!("client tokens in {}", file.display()))
}

/// One token per line, `<token>` or `<token> read-only`; blank lines and `#` comments skipped.
fn parse(text: &str) -> anyhow::Result<Vec<(String, ClientAccess)>> {
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let token = words.next().unwrap_or_default();
        let access = match words.next() {
            None => ClientAccess::ReadWrite,
            Some("read-only") => ClientAccess::ReadOnly,
            Some(other) => anyhow::bail!(
                "line {}: {other:?} is not an access (nothing, or read-only)",
                n + 1
            ),
        };
        checked(token, &format!("the token on line {}", n + 1))?;
        tokens.push((token.to_owned(), access));
    }
    if tokens.is_empty() {
        anyhow::bail!("no client token: every client would be refused");
    }
    Ok(tokens)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_what_their_line_says_and_bad_files_are_refused() {
        let tokens =
            parse("# clients\nwriter-token-0123456789\n\nreader-token-0123456789 read-only\n")
                .unwrap();
        assert_eq!(tokens.len(), 2);
        let t = ClientTokens {
            file: PathBuf::new(),
            tokens: RwLock::new(tokens),
        };
        assert_eq!(
            t.access("writer-token-0123456789"),
            Some(ClientAccess::ReadWrite)
        );
        assert_eq!(
            t.access("reader-token-0123456789"),
            Some(ClientAccess::ReadOnly)
        );
        assert_eq!(t.access("reader-token-012345678"), None);
        assert_eq!(t.access(""), None);
        assert!(parse("short\n").is_err());
        assert!(parse("a-long-enough-token-0123 admin\n").is_err());
        assert!(parse("# only a comment\n").is_err());
    }
}
