//! Reconcile errors, by step. Every variant is transient (the API server or a node may answer
//! next time) and is retried with backoff; an invalid spec is not an error but a status
//! condition (see `validate::SpecError`).

/// A reconcile step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind}s: {source}")]
    Observe {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing status: {0}")]
    PatchStatus(#[source] kube::Error),
    #[error("evicting a pod for a rolling update: {0}")]
    Rollout(#[source] kube::Error),
    #[error("removing the switchover request annotation: {0}")]
    Annotate(#[source] kube::Error),
    #[error("{0}")]
    Credentials(String),
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Observe { .. } => "observe",
            Error::Apply { .. } => "apply",
            Error::PatchStatus(_) => "status",
            Error::Rollout(_) => "rollout",
            Error::Annotate(_) => "annotate",
            Error::Credentials(_) => "credentials",
        }
    }
}
