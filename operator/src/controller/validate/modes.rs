//! (pure) The mode sections of the spec (`spec.singleLeader`, `spec.leaderless`), checked, as
//! what the builders need of them: the quorum, the client Services, the failover timing, the
//! replication factor and the mode's node settings.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{ClientService, SpecError};
use crate::crd::{ReplicatedClusterSpec, SingleLeaderSpec, DEFAULT_REPLICATION_FACTOR};
use crate::failover::Timing;
use crate::labels::{ROLE_FOLLOWER, ROLE_LEADER};
use rc_api::{arg_value, env, Mode};

/// What a mode section decides.
pub(super) struct ModeSettings {
    /// Nodes that must stay up for the cluster to serve every read and write.
    pub quorum: i32,
    pub client_services: Vec<ClientService>,
    /// SingleLeader: when the operator fails over (the default in Leaderless mode).
    pub failover: Timing,
    /// Leaderless: copies of every key (zero in SingleLeader mode).
    pub replication_factor: i32,
    /// The mode's `RC_*` node settings.
    pub node_config: BTreeMap<String, String>,
}

/// SingleLeader: its timing checked, a `-leader` and a `-replicas` Service, a majority quorum.
pub(super) fn single_leader(
    name: &str,
    spec: &ReplicatedClusterSpec,
) -> Result<ModeSettings, SpecError> {
    if spec.leaderless.is_some() {
        return Err(SpecError::WrongModeSettings("leaderless", "Leaderless"));
    }
    let settings = spec.single_leader.clone().unwrap_or_default();
    let timing = single_leader_timing(&settings).map_err(SpecError::SingleLeaderTiming)?;
    let node_config = BTreeMap::from([
        (env::MODE.into(), arg_value(&Mode::SingleLeader)),
        (env::REPLICATION.into(), arg_value(&settings.replication)),
        (env::FENCE_TIMEOUT_MS.into(), timing.fence_ms.to_string()),
        (
            env::HEARTBEAT_MS.into(),
            settings.heartbeat_interval_ms.to_string(),
        ),
        (
            env::FORWARDING.into(),
            arg_value(&settings.client_forwarding),
        ),
    ]);
    let client_services = vec![
        ClientService {
            name: format!("{name}-leader"),
            role: Some(ROLE_LEADER),
        },
        ClientService {
            name: format!("{name}-replicas"),
            role: Some(ROLE_FOLLOWER),
        },
    ];
    Ok(ModeSettings {
        quorum: spec.replicas / 2 + 1,
        client_services,
        failover: timing.failover,
        replication_factor: 0,
        node_config,
    })
}

/// Leaderless: N, W and R checked against the replicas and the ring's `members`, one Service
/// over every ready pod.
pub(super) fn leaderless(
    name: &str,
    spec: &ReplicatedClusterSpec,
    members: usize,
) -> Result<ModeSettings, SpecError> {
    if spec.single_leader.is_some() {
        return Err(SpecError::WrongModeSettings("singleLeader", "SingleLeader"));
    }
    let settings = spec.leaderless.clone().unwrap_or_default();
    let n = settings
        .replication_factor
        .unwrap_or(DEFAULT_REPLICATION_FACTOR);
    let w = settings.write_quorum.unwrap_or(n / 2 + 1);
    let r = settings.read_quorum.unwrap_or(n / 2 + 1);
    if n > spec.replicas && members >= usize::try_from(n).unwrap_or(usize::MAX) {
        return Err(SpecError::ScaleBelowReplicationFactor {
            replicas: spec.replicas,
            n,
            members,
        });
    }
    let ok = (1..=spec.replicas).contains(&n) && (1..=n).contains(&w) && (1..=n).contains(&r);
    if !ok {
        return Err(SpecError::Quorums {
            n,
            w,
            r,
            replicas: spec.replicas,
        });
    }
    let node_config = BTreeMap::from([
        (env::MODE.into(), arg_value(&Mode::Leaderless)),
        (env::REPLICATION_FACTOR.into(), n.to_string()),
        (env::WRITE_QUORUM.into(), w.to_string()),
        (env::READ_QUORUM.into(), r.to_string()),
        (
            env::CONFLICT_RESOLUTION.into(),
            arg_value(&settings.conflict_resolution),
        ),
    ]);
    Ok(ModeSettings {
        // Every key stays readable and writable while at most N - max(W, R) nodes are down
        // (any set of nodes may hold some key's whole preference list).
        quorum: spec.replicas - (n - w.max(r)),
        client_services: vec![ClientService {
            name: name.to_owned(),
            role: None,
        }],
        failover: Timing::default(),
        replication_factor: n,
        node_config,
    })
}

/// The single-leader timing fields, checked (the CRD's CEL rules again, for objects that
/// bypassed them), and the fence timeout with its default.
struct SingleLeaderTiming {
    failover: Timing,
    fence_ms: i32,
}

fn single_leader_timing(settings: &SingleLeaderSpec) -> Result<SingleLeaderTiming, String> {
    let loss = settings.leader_loss_timeout_ms;
    let beat = settings.heartbeat_interval_ms;
    let interval = settings.min_failover_interval_seconds;
    if !(200..=60_000).contains(&loss) {
        return Err(format!(
            "leaderLossTimeoutMs must be between 200 and 60000, got {loss}"
        ));
    }
    if !(10..=10_000).contains(&beat) {
        return Err(format!(
            "heartbeatIntervalMs must be between 10 and 10000, got {beat}"
        ));
    }
    if loss < 5 * beat {
        return Err(format!(
            "leaderLossTimeoutMs ({loss}) must be at least five heartbeatIntervalMs ({beat})"
        ));
    }
    if !(0..=3600).contains(&interval) {
        return Err(format!(
            "minFailoverIntervalSeconds must be between 0 and 3600, got {interval}"
        ));
    }
    // A cut-off leader must stop accepting writes no later than its followers give up on it.
    let fence_ms = settings.fence_timeout_ms.unwrap_or(loss);
    if fence_ms < 30 || fence_ms < 3 * beat || fence_ms > loss {
        return Err(format!("fenceTimeoutMs ({fence_ms}) must be at least 30 and three heartbeatIntervalMs ({beat}), and at most leaderLossTimeoutMs ({loss})"));
    }
    let ms = |v: i32| Duration::from_millis(u64::try_from(v).unwrap_or(0));
    Ok(SingleLeaderTiming {
        failover: Timing {
            leader_loss: ms(loss),
            min_interval: ms(interval.saturating_mul(1000)),
            deprecated_delay: settings.failover_delay_seconds,
        },
        fence_ms,
    })
}
