#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use super::*;
use crate::controller::fixtures::{cluster, UID};
use crate::crd::{LeaderlessSpec, SecretReference, SingleLeaderSpec};
use crate::labels::{ROLE_FOLLOWER, ROLE_LEADER};

fn ok(cluster: &ReplicatedCluster) -> ValidatedCluster {
    validate(cluster, &ObservedFacts::default()).unwrap()
}

#[test]
fn a_default_single_leader_cluster_gets_majority_quorum_and_the_leader_loss_timeout_as_fence() {
    let v = ok(&cluster(Mode::SingleLeader));
    assert_eq!(v.quorum, 2);
    assert_eq!(v.max_unavailable(), 1);
    assert_eq!(v.node_config["RC_MODE"], "single-leader");
    assert_eq!(v.node_config["RC_REPLICATION"], "quorum");
    assert_eq!(v.node_config["RC_FENCE_TIMEOUT_MS"], "1000");
    assert_eq!(
        v.client_services,
        vec![
            ClientService {
                name: "orders-leader".into(),
                role: Some(ROLE_LEADER)
            },
            ClientService {
                name: "orders-replicas".into(),
                role: Some(ROLE_FOLLOWER)
            },
        ]
    );
    assert_eq!(v.owner.uid, UID);
    assert_eq!(v.owner.controller, Some(true));
}

#[test]
fn peers_are_named_by_ordinal_with_stable_dns_addresses() {
    let v = ok(&cluster(Mode::SingleLeader));
    let ids: Vec<&str> = v.peers.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["orders-0", "orders-1", "orders-2"]);
    assert_eq!(v.peers[1].address, "orders-1.orders-peers.shop.svc:7400");
}

#[test]
fn a_default_leaderless_cluster_gets_majority_read_and_write_quorums() {
    let v = ok(&cluster(Mode::Leaderless));
    assert_eq!(v.node_config["RC_MODE"], "leaderless");
    assert_eq!(v.node_config["RC_REPLICATION_FACTOR"], "3");
    assert_eq!(v.node_config["RC_WRITE_QUORUM"], "2");
    assert_eq!(v.node_config["RC_READ_QUORUM"], "2");
    assert_eq!(v.node_config["RC_CONFLICT_RESOLUTION"], "last-write-wins");
    assert_eq!(
        v.client_services,
        vec![ClientService {
            name: "orders".into(),
            role: None
        }]
    );
    assert_eq!(v.max_unavailable(), 1);
}

#[test]
fn leaderless_disruption_budget_follows_the_stricter_quorum() {
    let mut c = cluster(Mode::Leaderless);
    c.spec.replicas = 5;
    c.spec.leaderless = Some(LeaderlessSpec {
        replication_factor: Some(5),
        write_quorum: Some(4),
        read_quorum: Some(2),
        ..LeaderlessSpec::default()
    });
    assert_eq!(ok(&c).max_unavailable(), 1);
    c.spec.leaderless = Some(LeaderlessSpec {
        replication_factor: Some(3),
        write_quorum: Some(3),
        read_quorum: Some(3),
        ..LeaderlessSpec::default()
    });
    assert_eq!(ok(&c).max_unavailable(), 0);
}

#[test]
fn a_single_node_cluster_allows_no_voluntary_disruption() {
    let mut c = cluster(Mode::SingleLeader);
    c.spec.replicas = 1;
    assert_eq!(ok(&c).max_unavailable(), 0);
}

#[test]
fn settings_of_the_other_mode_are_rejected() {
    let mut c = cluster(Mode::SingleLeader);
    c.spec.leaderless = Some(LeaderlessSpec::default());
    assert_eq!(
        validate(&c, &ObservedFacts::default()),
        Err(SpecError::WrongModeSettings("leaderless", "Leaderless"))
    );
    let mut c = cluster(Mode::Leaderless);
    c.spec.single_leader = Some(SingleLeaderSpec::default());
    assert!(matches!(
        validate(&c, &ObservedFacts::default()),
        Err(SpecError::WrongModeSettings("singleLeader", _))
    ));
}

#[test]
fn quorums_outside_their_bounds_are_rejected() {
    for (n, w, r, replicas) in [(4, 2, 2, 3), (3, 4, 2, 3), (3, 2, 0, 3), (3, 0, 2, 3)] {
        let mut c = cluster(Mode::Leaderless);
        c.spec.replicas = replicas;
        c.spec.leaderless = Some(LeaderlessSpec {
            replication_factor: Some(n),
            write_quorum: Some(w),
            read_quorum: Some(r),
            ..LeaderlessSpec::default()
        });
        assert_eq!(
            validate(&c, &ObservedFacts::default()),
            Err(SpecError::Quorums { n, w, r, replicas })
        );
    }
}

#[test]
fn single_leader_timing_out_of_range_or_inconsistent_is_rejected() {
    let check = |settings: SingleLeaderSpec| {
        let mut c = cluster(Mode::SingleLeader);
        c.spec.single_leader = Some(settings);
        validate(&c, &ObservedFacts::default()).map(|v| (v.failover, v.node_config))
    };
    let rejected = |settings: SingleLeaderSpec, want: &str| match check(settings) {
        Err(SpecError::SingleLeaderTiming(why)) => assert!(why.contains(want), "{why}"),
        other => panic!("accepted or wrong error: {other:?}"),
    };
    let d = SingleLeaderSpec::default;
    rejected(
        SingleLeaderSpec {
            leader_loss_timeout_ms: 100,
            ..d()
        },
        "leaderLossTimeoutMs must be between 200 and 60000",
    );
    rejected(
        SingleLeaderSpec {
            leader_loss_timeout_ms: 400,
            heartbeat_interval_ms: 100,
            ..d()
        },
        "at least five heartbeatIntervalMs",
    );
    rejected(
        SingleLeaderSpec {
            fence_timeout_ms: Some(1500),
            ..d()
        },
        "at most leaderLossTimeoutMs (1000)",
    );
    rejected(
        SingleLeaderSpec {
            min_failover_interval_seconds: -1,
            ..d()
        },
        "minFailoverIntervalSeconds",
    );
    // Defaults: fence at the leader-loss timeout, heartbeats passed to the nodes, and the
    // deprecated field carried only to be reported.
    let (timing, config) = check(SingleLeaderSpec {
        failover_delay_seconds: Some(2),
        ..d()
    })
    .unwrap();
    assert_eq!(timing.leader_loss, Duration::from_millis(1000));
    assert_eq!(timing.min_interval, Duration::from_secs(5));
    assert_eq!(timing.deprecated_delay, Some(2));
    assert_eq!(
        config.get("RC_FENCE_TIMEOUT_MS").map(String::as_str),
        Some("1000")
    );
    assert_eq!(
        config.get("RC_HEARTBEAT_MS").map(String::as_str),
        Some("100")
    );
    assert_eq!(
        config.get("RC_FORWARDING").map(String::as_str),
        Some("redirect")
    );
    let (_, proxied) = check(SingleLeaderSpec {
        client_forwarding: crate::crd::Forwarding::Proxy,
        ..d()
    })
    .unwrap();
    assert_eq!(
        proxied.get("RC_FORWARDING").map(String::as_str),
        Some("proxy")
    );
}

#[test]
fn names_that_would_overflow_pod_or_service_names_are_rejected() {
    for name in [
        "a".repeat(41),
        "9lives".into(),
        "Orders".into(),
        "orders-".into(),
    ] {
        let mut c = cluster(Mode::SingleLeader);
        c.metadata.name = Some(name.clone());
        assert_eq!(
            validate(&c, &ObservedFacts::default()),
            Err(SpecError::Name(name))
        );
    }
}

#[test]
fn a_named_admin_secret_must_exist_and_a_missing_managed_one_is_fine() {
    let mut c = cluster(Mode::SingleLeader);
    assert_eq!(
        ok(&c).admin_secret,
        AdminSecret {
            name: "orders-admin".into(),
            managed: true
        }
    );
    c.spec.admin_secret_ref = Some(SecretReference {
        name: "mine".into(),
    });
    assert_eq!(
        validate(&c, &ObservedFacts::default()),
        Err(SpecError::AdminSecret("mine".into()))
    );
    // Any Secret of the namespace will not do: it is mounted into pods.
    assert_eq!(
        validate(
            &c,
            &ObservedFacts {
                admin_secret_ready: true,
                ..ObservedFacts::default()
            },
        ),
        Err(SpecError::AdminSecretNotDedicated {
            secret: "mine".into(),
            cluster: "orders".into()
        })
    );
    let v = validate(
        &c,
        &ObservedFacts {
            admin_secret_ready: true,
            admin_secret_dedicated: true,
            ..ObservedFacts::default()
        },
    )
    .unwrap();
    assert_eq!(
        v.admin_secret,
        AdminSecret {
            name: "mine".into(),
            managed: false
        }
    );
}

#[test]
fn client_authentication_needs_a_dedicated_secret_and_points_the_nodes_at_its_tokens() {
    let mut c = cluster(Mode::SingleLeader);
    assert_eq!(ok(&c).client_tokens_secret, None);
    assert!(!ok(&c).node_config.contains_key("RC_CLIENT_TOKEN_FILE"));
    c.spec.client_auth = Some(crate::crd::ClientAuthSpec {
        secret_name: "clients".into(),
    });
    assert_eq!(
        validate(&c, &ObservedFacts::default()),
        Err(SpecError::ClientTokensSecret("clients".into()))
    );
    let undedicated = validate(
        &c,
        &ObservedFacts {
            client_secret_ready: true,
            ..ObservedFacts::default()
        },
    )
    .unwrap_err();
    assert!(
        undedicated
            .to_string()
            .contains("kubectl label secret clients replicated.dev/client-tokens-for=orders"),
        "{undedicated}"
    );
    let v = validate(
        &c,
        &ObservedFacts {
            client_secret_ready: true,
            client_secret_dedicated: true,
            ..ObservedFacts::default()
        },
    )
    .unwrap();
    assert_eq!(v.client_tokens_secret.as_deref(), Some("clients"));
    assert_eq!(
        v.node_config["RC_CLIENT_TOKEN_FILE"],
        "/etc/rc-node/clients/tokens"
    );
    let sts = serde_json::to_value(crate::controller::build::build_statefulset(&v)).unwrap();
    let volumes = sts["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(volumes.contains("\"secretName\":\"clients\""), "{volumes}");
}

#[test]
fn the_selector_string_lists_the_pod_labels() {
    assert_eq!(
        ok(&cluster(Mode::SingleLeader)).selector_string(),
        "app.kubernetes.io/instance=orders,app.kubernetes.io/name=rc-node,replicated.dev/cluster=orders"
    );
}

fn ring_of(ordinals: std::ops::Range<usize>, leaving_from: usize) -> Ring {
    Ring {
        version: 7,
        members: ordinals
            .map(|i| rc_api::Member {
                id: format!("orders-{i}"),
                address: format!("10.0.0.{i}:7400"),
                state: if i >= leaving_from {
                    rc_api::MemberState::Leaving
                } else {
                    rc_api::MemberState::Normal
                },
            })
            .collect(),
    }
}

#[test]
fn a_leaderless_statefulset_keeps_a_pod_for_every_member_still_in_the_ring() {
    let mut c = cluster(Mode::Leaderless);
    c.spec.replicas = 3;
    let facts = |ring| ObservedFacts {
        ring,
        ..ObservedFacts::default()
    };
    // Scaling down 5 -> 3: orders-3 and orders-4 are still leaving, their pods stay.
    let v = validate(&c, &facts(Some(ring_of(0..5, 3)))).unwrap();
    assert_eq!((v.replicas, v.statefulset_replicas), (3, 5));
    // Once they left the ring, the StatefulSet shrinks.
    let v = validate(&c, &facts(Some(ring_of(0..3, 3)))).unwrap();
    assert_eq!(v.statefulset_replicas, 3);
    // Scaling up: the new pods come first, then they join.
    c.spec.replicas = 5;
    let v = validate(&c, &facts(Some(ring_of(0..3, 3)))).unwrap();
    assert_eq!(v.statefulset_replicas, 5);
    // The ring recorded in the status counts when no node answers.
    c.spec.replicas = 3;
    c.status = Some(crate::crd::ReplicatedClusterStatus {
        ring: Some(crate::membership::to_record(&ring_of(0..4, 3))),
        ..Default::default()
    });
    let v = validate(&c, &ObservedFacts::default()).unwrap();
    assert_eq!(v.statefulset_replicas, 4);
    // A SingleLeader cluster ignores rings altogether.
    let v = validate(&cluster(Mode::SingleLeader), &facts(Some(ring_of(0..5, 5)))).unwrap();
    assert_eq!(v.statefulset_replicas, 3);
}

#[test]
fn scaling_a_leaderless_ring_below_its_replication_factor_is_refused_and_keeps_the_members() {
    let mut c = cluster(Mode::Leaderless);
    c.spec.replicas = 2;
    let facts = ObservedFacts {
        ring: Some(ring_of(0..3, 3)),
        ..ObservedFacts::default()
    };
    let error = validate(&c, &facts).unwrap_err();
    assert_eq!(
        error,
        SpecError::ScaleBelowReplicationFactor {
            replicas: 2,
            n: 3,
            members: 3
        }
    );
    assert_eq!(error.reason(), "ScaleDownBlocked");
    // A new cluster with too few replicas is simply an invalid spec.
    assert!(matches!(
        validate(&c, &ObservedFacts::default()),
        Err(SpecError::Quorums { .. })
    ));
}
