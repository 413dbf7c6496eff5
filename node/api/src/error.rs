//! Error answers: `{ "error": { "code", "message", "leader"? } }`, with one stable code per
//! cause. Clients branch on the code (never on the message); a code this version does not know
//! reads as [`ErrorCode::Unknown`].

use serde::{Deserialize, Serialize};

/// Defines [`ErrorCode`] and its wire names from one table.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// Stable machine-readable error codes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum ErrorCode {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
            /// A code this version does not know (from a newer node).
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl ErrorCode {
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                    ErrorCode::Unknown => "unknown",
                }
            }
        }
    };
}

error_codes! {
    // Input
    /// The request body could not be read (or is over the size limit).
    BadBody = "bad_body",
    /// The body is not the JSON the endpoint takes.
    BadJson = "bad_json",
    /// The query string is malformed.
    BadQuery = "bad_query",
    /// The key in the path is malformed.
    BadKey = "bad_key",
    /// Keys must not be empty.
    EmptyKey = "empty_key",
    /// The key is over the node's limit.
    KeyTooLarge = "key_too_large",
    /// The value is over the node's limit.
    ValueTooLarge = "value_too_large",
    /// A batch is empty, too long or holds an invalid operation.
    BadBatch = "bad_batch",
    /// A scan's `limit` is out of range.
    BadLimit = "bad_limit",
    /// Leaderless: the causal context is not one this key handed out.
    BadContext = "bad_context",
    /// Leaderless: `r` or `w` is outside 1..=N.
    BadQuorum = "bad_quorum",
    /// Leaderless: the ring is invalid, stale, or conflicts with the installed one.
    BadRing = "bad_ring",
    /// The request is well-formed but not acceptable; the message says why.
    Invalid = "invalid",
    /// The endpoint does not exist in this mode.
    Unsupported = "unsupported",
    // Lookup
    /// No such endpoint.
    NotFound = "not_found",
    /// No such key.
    KeyNotFound = "key_not_found",
    // Authentication
    /// Missing or wrong bearer token.
    Unauthorized = "unauthorized",
    /// The client token may not do this (a read-only token writing).
    Forbidden = "forbidden",
    // Single-leader writes
    /// This node does not lead; `leader` names the one that does when known.
    NotLeader = "not_leader",
    /// No leader is known yet.
    NoLeader = "no_leader",
    /// The leader lost contact with a majority and refuses writes.
    LeaderFenced = "leader_fenced",
    /// The leader is handing leadership over (a switchover) and takes no new writes.
    LeaderHandingOver = "leader_handing_over",
    /// Proxying to the leader failed.
    ForwardFailed = "forward_failed",
    /// The write may or may not have been applied (a timeout or a failover under it).
    OutcomeUnknown = "outcome_unknown",
    // Single-leader admin refusals
    /// The request's epoch is older than the node's.
    StaleEpoch = "stale_epoch",
    /// The node is bound to another leader in this epoch.
    LeaderTaken = "leader_taken",
    /// A leader that restarted is never promoted again in its own epoch.
    RestartedLeader = "restarted_leader",
    /// Not now: a precondition (a committed configuration, a caught-up learner) does not hold yet.
    Busy = "busy",
    // Leaderless
    /// The node has no ring yet.
    NoRing = "no_ring",
    /// Fewer than W replicas acknowledged the write.
    WriteQuorumFailed = "write_quorum_failed",
    /// Fewer than R replicas answered the read.
    ReadQuorumFailed = "read_quorum_failed",
    /// No owner of the key could be reached to forward the write to.
    OwnerUnreachable = "owner_unreachable",
    /// The node is streaming its data back in and answers no reads as an owner yet.
    Restoring = "restoring",
    /// The requester's ring is older than this node's.
    RingBehind = "ring_behind",
    /// Writes under the previous ring may still be in flight.
    RingSettling = "ring_settling",
    /// Decommission was asked of a member the ring does not mark leaving.
    NotLeaving = "not_leaving",
}

impl ErrorCode {
    /// Single-leader: the write was refused before anything was appended, so it certainly did
    /// not happen and may be retried on the leader.
    pub fn write_not_applied(self) -> bool {
        matches!(
            self,
            ErrorCode::NotLeader
                | ErrorCode::NoLeader
                | ErrorCode::LeaderFenced
                | ErrorCode::LeaderHandingOver
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body of every error answer: `{ "error": { "code", "message" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
    /// Set on `not_leader`: the leader's address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_travel_as_their_snake_case_names_and_unknown_ones_are_kept_apart(
    ) -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::to_string(&ErrorCode::WriteQuorumFailed)?,
            r#""write_quorum_failed""#
        );
        assert_eq!(ErrorCode::LeaderHandingOver.as_str(), "leader_handing_over");
        let body: ErrorBody =
            serde_json::from_str(r#"{"error":{"code":"from_a_newer_node","message":"m"}}"#)?;
        assert_eq!(body.error.code, ErrorCode::Unknown);
        let back: ErrorCode = serde_json::from_str(r#""stale_epoch""#)?;
        assert_eq!(back, ErrorCode::StaleEpoch);
        Ok(())
    }
}
