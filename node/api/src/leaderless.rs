//! Leaderless wire types: the ring and its members, what a node reports of it, and a read's
//! answer with its causal context.

use serde::{Deserialize, Serialize};

/// A member's place in the leaderless ring. Spelled `Joining` on the wire and in the CRD; the
/// lowercase spelling of earlier versions is still accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub enum MemberState {
    /// Receives writes for the ranges it will own and streams them in; serves no reads yet.
    #[serde(alias = "joining")]
    Joining,
    /// Owns its ranges.
    #[serde(alias = "normal")]
    Normal,
    /// Still owns its ranges until it has streamed them to their next owners.
    #[serde(alias = "leaving")]
    Leaving,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: String,
    pub address: String,
    pub state: MemberState,
}

/// `PUT /admin/ring`: the membership, versioned; a node installs only newer versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ring {
    pub version: u64,
    pub members: Vec<Member>,
}

/// A member as one node sees it: ring state plus what failure detection says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: String,
    pub address: String,
    pub state: MemberState,
    pub alive: bool,
}

impl MemberView {
    /// `member` of the ring, as alive or not.
    pub fn of(member: &Member, alive: bool) -> MemberView {
        MemberView {
            id: member.id.clone(),
            address: member.address.clone(),
            state: member.state,
            alive,
        }
    }
}

/// Progress of moving data on membership changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Idle,
    Streaming,
    /// A joining node has every range it will own.
    Joined,
    /// A leaving node has handed every range to its next owners.
    Decommissioned,
    /// Handing ranges over failed (a next owner stayed unreachable); `POST /admin/decommission`
    /// retries.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderlessStatus {
    pub ring_version: u64,
    pub members: Vec<MemberView>,
    pub replication_factor: usize,
    pub write_quorum: usize,
    pub read_quorum: usize,
    pub keys: u64,
    pub hints_queued: u64,
    pub stream: StreamState,
    pub keys_streamed: u64,
    pub anti_entropy_rounds: u64,
    pub keys_repaired: u64,
    /// The node lost (or never had) its data and is streaming its ranges back in; it answers
    /// no reads as an owner until then.
    #[serde(default)]
    pub restoring: bool,
    /// Hints queued on this node, by the member they are for.
    #[serde(default)]
    pub hints_for: std::collections::BTreeMap<String, u64>,
}

/// Leaderless read: every concurrent value (one unless `Siblings` mode kept several) and the
/// causal context to pass back on the next write so it supersedes what was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderlessValue {
    pub key: String,
    /// Set when exactly one value is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub siblings: Vec<String>,
    pub context: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_states_are_pascal_case_and_read_the_old_lowercase_too(
    ) -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::to_string(&MemberState::Joining)?,
            r#""Joining""#
        );
        let old: MemberState = serde_json::from_str(r#""leaving""#)?;
        assert_eq!(old, MemberState::Leaving);
        Ok(())
    }
}
