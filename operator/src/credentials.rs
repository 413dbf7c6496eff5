//! (pure) A cluster's credentials over time: when to issue its CA and node certificate, and
//! the steps of an admin-token rotation. The I/O is `controller::credentials`.
//!
//! **Certificates.** One CA per cluster (Secret `<cluster>-ca`, read only by the operator) and
//! one node certificate for all its pods (Secret `<cluster>-tls`, mounted). The node
//! certificate is re-issued when it is missing, names other DNS names than the cluster needs,
//! was issued by another CA, has less than a third of its life left, or a rotation is asked
//! for (`replicated.dev/rotate-certificate` on the cluster, any new value). Nodes re-read it
//! within seconds of the kubelet updating the files, and trust the CA, not the leaf, so the
//! swap needs no coordination. A CA that is lost is issued again, and the node Secret's CA
//! bundle keeps the old CA beside it until the next renewal, so a node whose files were not
//! updated yet is still trusted.
//!
//! **Admin token.** Every node accepts the tokens in `token`, `token.next` and
//! `token.previous` of the admin Secret and sends `token`. A rotation
//! (`replicated.dev/rotate-admin-token`, any new value) runs in three steps, each taken only
//! when every member's status shows the previous one took effect:
//! 1. `token.next` = a new token (every node then accepts it);
//! 2. `token` = the new one, `token.previous` = the old one (nodes, and the operator, send the
//!    new one; the old is still accepted from a node whose files lag);
//! 3. `token.previous` removed.
//!
//! No node ever receives a token it does not accept yet, so no call fails on the way.

use rc_api::Credentials;

/// The admin Secret's tokens and the rotation request it last handled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminTokens {
    pub token: String,
    pub next: Option<String>,
    pub previous: Option<String>,
    /// The `replicated.dev/rotate-admin-token` value whose rotation was started.
    pub rotation: Option<String>,
}

/// What the token rotation does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenStep {
    /// No rotation asked for or under way.
    Idle,
    /// Step 1: add a new `token.next`, recording `request` as handled.
    Begin { request: String },
    /// Step 2: every member accepts `token.next`: make it `token`, the old one `token.previous`.
    Promote,
    /// Step 3: every member sends the new token: drop `token.previous`.
    Finish,
    /// A step waits for members: which and why.
    Waiting(String),
}

/// The next step of a token rotation, from the Secret, the cluster's request and what every
/// member (by pod name; `None`: no status read) reports.
pub fn token_step(
    tokens: &AdminTokens,
    requested: Option<&str>,
    members: &[(String, Option<&Credentials>)],
) -> TokenStep {
    let lagging = |check: &dyn Fn(&Credentials) -> bool| -> Vec<String> {
        members
            .iter()
            .filter(|(_, c)| !c.is_some_and(check))
            .map(|(name, _)| name.clone())
            .collect()
    };
    if let Some(next) = &tokens.next {
        let next = rc_tls::fingerprint(next.as_bytes());
        let waiting = lagging(&|c| c.accepted_tokens.contains(&next));
        return if waiting.is_empty() {
            TokenStep::Promote
        } else {
            TokenStep::Waiting(format!(
                "waiting for {} to accept the next admin token",
                waiting.join(", ")
            ))
        };
    }
    if tokens.previous.is_some() {
        let current = rc_tls::fingerprint(tokens.token.as_bytes());
        let waiting = lagging(&|c| c.token == current);
        return if waiting.is_empty() {
            TokenStep::Finish
        } else {
            TokenStep::Waiting(format!(
                "waiting for {} to send the new admin token",
                waiting.join(", ")
            ))
        };
    }
    match requested {
        Some(r) if tokens.rotation.as_deref() != Some(r) => TokenStep::Begin {
            request: r.to_owned(),
        },
        _ => TokenStep::Idle,
    }
}

/// The stored CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The stored node certificate and what it was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNodeCert {
    /// The CA bundle nodes trust (the CA, and after a CA change the previous one too).
    pub ca_bundle: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// When it expires, seconds since the Unix epoch.
    pub not_after_s: i64,
    /// The DNS names it carries, comma-separated.
    pub names: String,
    /// The `replicated.dev/rotate-certificate` value it was issued for.
    pub rotation: Option<String>,
}

/// What the certificate step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertStep {
    Keep,
    /// No usable CA: issue one, then a node certificate.
    IssueCa,
    /// Issue a node certificate, for this reason.
    IssueNode(&'static str),
}

/// The certificate step, `now_s` and `lifetime_s` in seconds.
pub fn cert_step(
    ca: Option<&StoredCa>,
    node: Option<&StoredNodeCert>,
    requested: Option<&str>,
    names: &str,
    now_s: i64,
    lifetime_s: i64,
) -> CertStep {
    let Some(ca) = ca else {
        return CertStep::IssueCa;
    };
    let Some(node) = node else {
        return CertStep::IssueNode("the node certificate is missing");
    };
    if !node.ca_bundle.contains(ca.cert_pem.trim()) {
        return CertStep::IssueNode("the node certificate is from another CA");
    }
    if node.names != names {
        return CertStep::IssueNode("the cluster's DNS names changed");
    }
    if requested.is_some_and(|r| node.rotation.as_deref() != Some(r)) {
        return CertStep::IssueNode("a rotation was requested");
    }
    if node.not_after_s - now_s < lifetime_s / 3 {
        return CertStep::IssueNode("less than a third of its lifetime is left");
    }
    CertStep::Keep
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn creds(token: &str, accepted: &[&str]) -> Credentials {
        let fp = |t: &str| rc_tls::fingerprint(t.as_bytes());
        Credentials {
            token: fp(token),
            accepted_tokens: accepted.iter().map(|t| fp(t)).collect(),
            certificate: String::new(),
        }
    }

    #[test]
    fn a_rotation_takes_three_steps_each_after_every_member_caught_up() {
        let old = AdminTokens {
            token: "old".into(),
            ..AdminTokens::default()
        };
        let before = creds("old", &["old"]);
        let refs: Vec<(String, Option<&Credentials>)> =
            vec![("a".into(), Some(&before)), ("b".into(), Some(&before))];
        assert_eq!(token_step(&old, None, &refs), TokenStep::Idle);
        assert_eq!(
            token_step(&old, Some("1"), &refs),
            TokenStep::Begin {
                request: "1".into()
            }
        );

        // Step 1 written; one member has not reloaded yet.
        let step1 = AdminTokens {
            next: Some("new".into()),
            rotation: Some("1".into()),
            ..old.clone()
        };
        let reloaded = creds("old", &["old", "new"]);
        let partly: Vec<(String, Option<&Credentials>)> =
            vec![("a".into(), Some(&reloaded)), ("b".into(), Some(&before))];
        assert_eq!(
            token_step(&step1, Some("1"), &partly),
            TokenStep::Waiting("waiting for b to accept the next admin token".into())
        );
        let unreachable: Vec<(String, Option<&Credentials>)> =
            vec![("a".into(), Some(&reloaded)), ("b".into(), None)];
        assert!(matches!(
            token_step(&step1, Some("1"), &unreachable),
            TokenStep::Waiting(_)
        ));
        let all: Vec<(String, Option<&Credentials>)> =
            vec![("a".into(), Some(&reloaded)), ("b".into(), Some(&reloaded))];
        assert_eq!(token_step(&step1, Some("1"), &all), TokenStep::Promote);

        // Step 2 written.
        let step2 = AdminTokens {
            token: "new".into(),
            next: None,
            previous: Some("old".into()),
            rotation: Some("1".into()),
        };
        assert!(matches!(
            token_step(&step2, Some("1"), &all),
            TokenStep::Waiting(_)
        ));
        let sending = creds("new", &["new", "old"]);
        let all2: Vec<(String, Option<&Credentials>)> =
            vec![("a".into(), Some(&sending)), ("b".into(), Some(&sending))];
        assert_eq!(token_step(&step2, Some("1"), &all2), TokenStep::Finish);

        // Step 3 written: the same request starts nothing; a new one starts again.
        let done = AdminTokens {
            previous: None,
            ..step2
        };
        assert_eq!(token_step(&done, Some("1"), &all2), TokenStep::Idle);
        assert_eq!(
            token_step(&done, Some("2"), &all2),
            TokenStep::Begin {
                request: "2".into()
            }
        );
    }

    #[test]
    fn node_certificates_are_renewed_for_every_reason_and_only_then() {
        let ca = StoredCa {
            cert_pem: "CA1".into(),
            key_pem: "K".into(),
        };
        let node = StoredNodeCert {
            ca_bundle: "CA1\n".into(),
            cert_pem: "C".into(),
            key_pem: "K".into(),
            not_after_s: 1_000 + 90,
            names: "a,b".into(),
            rotation: None,
        };
        let step = |ca: Option<&StoredCa>,
                    node: Option<&StoredNodeCert>,
                    req: Option<&str>,
                    now: i64| { cert_step(ca, node, req, "a,b", now, 90) };
        assert_eq!(step(Some(&ca), Some(&node), None, 1_000), CertStep::Keep);
        assert_eq!(step(None, Some(&node), None, 1_000), CertStep::IssueCa);
        assert!(matches!(
            step(Some(&ca), None, None, 1_000),
            CertStep::IssueNode(_)
        ));
        // Two thirds of 90 s gone: renew.
        assert_eq!(step(Some(&ca), Some(&node), None, 1_059), CertStep::Keep);
        assert!(matches!(
            step(Some(&ca), Some(&node), None, 1_061),
            CertStep::IssueNode(_)
        ));
        // Asked for, once.
        assert!(matches!(
            step(Some(&ca), Some(&node), Some("x"), 1_000),
            CertStep::IssueNode(_)
        ));
        let rotated = StoredNodeCert {
            rotation: Some("x".into()),
            ..node.clone()
        };
        assert_eq!(
            step(Some(&ca), Some(&rotated), Some("x"), 1_000),
            CertStep::Keep
        );
        // Another CA, other names.
        let other_ca = StoredCa {
            cert_pem: "CA2".into(),
            ..ca.clone()
        };
        assert!(matches!(
            step(Some(&other_ca), Some(&node), None, 1_000),
            CertStep::IssueNode(_)
        ));
        let renamed = StoredNodeCert {
            names: "a".into(),
            ..node
        };
        assert!(matches!(
            step(Some(&ca), Some(&renamed), None, 1_000),
            CertStep::IssueNode(_)
        ));
    }
}
