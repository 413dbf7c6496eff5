//! The failover executor's voter-set steps against real rc-node processes on loopback (no
//! Kubernetes): scale-up through learners, scale-down with the leader leaving, a member whose
//! volume was replaced, and empty members that must not elect a leader. Every acknowledged
//! write is read back at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{auth, Nodes};
use rc_api::{EpochRequest, PromoteRequest, Role, SingleLeaderStatus};
use rc_operator::failover::execute::{drive, refresh, Report};
use rc_operator::failover::{Action, Member, PodState, Timing, View};
use rc_operator::node_client::{HttpNodeAdmin, NodeAdmin};

const SINGLE_LEADER: &[&str] = &["--fence-timeout-ms", "500", "--write-timeout-ms", "1500"];

/// What the operator would see with `members` pods (orders-0..) and `spec.replicas = desired`.
fn view_of(nodes: &Nodes, members: usize, desired: usize) -> View {
    View {
        members: (0..members)
            .map(|i| Member {
                name: format!("orders-{i}"),
                address: Some(nodes.addr(i)),
                stable_address: nodes.addr(i),
                pod: PodState::Ready,
                role_label: None,
                node: Err("not observed yet".into()),
            })
            .collect(),
        desired,
        had_voters: false,
        timing: Timing {
            leader_loss: Duration::from_millis(600),
            min_interval: Duration::ZERO,
            deprecated_delay: None,
        },
        last_failover_ms: None,
        known_epoch: 0,
        no_leader_since_ms: None,
        statuses_read_ms: None,
        switchover: None,
    }
}

/// The same world with another member count and spec, keeping what the operator knew.
fn resize(nodes: &Nodes, view: &View, members: usize, desired: usize) -> View {
    View {
        had_voters: true,
        known_epoch: view.known_epoch,
        no_leader_since_ms: view.no_leader_since_ms,
        statuses_read_ms: None,
        switchover: None,
        ..view_of(nodes, members, desired)
    }
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}

async fn pass(admin: &HttpNodeAdmin, view: &mut View) -> Report {
    refresh(admin, &auth(), view).await;
    let report = drive(admin, &auth(), view, &now_ms).await;
    // The caller's part: role labels.
    if let Action::Relabel { pods } = &report.decision.action {
        for (name, role) in pods {
            if let Some(m) = view.members.iter_mut().find(|m| &m.name == name) {
                m.role_label = Some((*role).to_owned());
            }
        }
    }
    report
}

fn status(view: &View, i: usize) -> Option<&SingleLeaderStatus> {
    view.members.get(i)?.status().ok()
}

/// The voter ids the serving leader reports.
fn voters(view: &View) -> Vec<String> {
    view.members
        .iter()
        .filter_map(|m| m.status().ok())
        .filter(|n| n.role == Role::Leader && !n.self_fenced)
        .max_by_key(|n| n.epoch)
        .and_then(|n| n.config.as_ref())
        .map(|c| c.voters.iter().map(|v| v.id.clone()).collect())
        .unwrap_or_default()
}

/// The voter ids node `i` holds (even a leader that fenced itself).
fn voters_on(view: &View, i: usize) -> Vec<String> {
    status(view, i)
        .and_then(|n| n.config.as_ref())
        .map(|c| c.voters.iter().map(|v| v.id.clone()).collect())
        .unwrap_or_default()
}

fn names(ordinals: &[usize]) -> Vec<String> {
    ordinals.iter().map(|i| format!("orders-{i}")).collect()
}

/// Passes until the leader's committed voter set is `want` and nothing is pending (15 s).
async fn settle(admin: &HttpNodeAdmin, view: &mut View, want: &[usize], nodes: &Nodes) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut reasons = Vec::new();
    loop {
        let report = pass(admin, view).await;
        reasons.extend(report.notes.iter().map(|n| n.message.clone()));
        let done = report.decision.voters_pending.is_none()
            && report.decision.leader.is_some()
            && voters(view) == names(want);
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "voters never became {want:?}: {:?}\n{reasons:#?}\n{}",
            report.decision,
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `count` acknowledged writes `prefix{n}` through the serving leader.
async fn write(nodes: &Nodes, view: &View, prefix: &str, count: usize) -> Vec<String> {
    let leader = view
        .members
        .iter()
        .position(|m| m.status().is_ok_and(|n| n.role == Role::Leader))
        .unwrap();
    let mut acked = Vec::new();
    for n in 0..count {
        let key = format!("{prefix}{n}");
        if nodes.put(leader, &key, "v").await == 200 {
            acked.push(key);
        }
    }
    assert_eq!(acked.len(), count, "{}", nodes.logs());
    acked
}

/// Every key readable (linearizable) from node `i`.
async fn assert_readable(nodes: &Nodes, i: usize, keys: &[String]) {
    for key in keys {
        let url = format!(
            "http://{}/v1/kv/{key}?consistency=linearizable",
            nodes.addr(i)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = nodes.http().get(&url).send().await;
            if let Ok(r) = r {
                match r.status().as_u16() {
                    200 => break,
                    404 => panic!("acknowledged {key} lost\n{}", nodes.logs()),
                    _ => {}
                }
            }
            assert!(
                Instant::now() < deadline,
                "no read of {key}\n{}",
                nodes.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Bootstraps orders-0..2 (the first three of `nodes`) as the voters.
async fn three_voters(admin: &HttpNodeAdmin, nodes: &Nodes) -> View {
    let mut view = view_of(nodes, 3, 3);
    settle(admin, &mut view, &[0, 1, 2], nodes).await;
    view
}

/// Passes until a leader is elected (15 s); its ordinal.
async fn until_promoted(admin: &HttpNodeAdmin, view: &mut View, nodes: &Nodes) -> usize {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let report = pass(admin, view).await;
        if let Some(p) = report.promoted {
            return p.to.trim_start_matches("orders-").parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no failover: {:?}\n{}",
            report.decision,
            nodes.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn leader_of(view: &View) -> usize {
    view.members
        .iter()
        .position(|m| {
            m.status()
                .is_ok_and(|n| n.role == Role::Leader && !n.self_fenced)
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_3_to_5_adds_learners_as_voters_one_at_a_time_and_a_failover_keeps_every_write() {
    let mut nodes = Nodes::start(5, SINGLE_LEADER);
    nodes.wait_all_up().await;
    let admin = HttpNodeAdmin::new(Duration::from_millis(500), Duration::from_millis(500)).unwrap();
    let view = three_voters(&admin, &nodes).await;
    let mut keys = write(&nodes, &view, "three", 20).await;

    let mut view = resize(&nodes, &view, 5, 5);
    let mut notes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while voters(&view) != names(&[0, 1, 2, 3, 4]) {
        let report = pass(&admin, &mut view).await;
        notes.extend(
            report
                .notes
                .into_iter()
                .filter(|n| n.reason == "VotersChanged"),
        );
        assert!(Instant::now() < deadline, "{:?}", report.decision);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let steps: Vec<&str> = notes.iter().map(|n| n.message.as_str()).collect();
    assert_eq!(steps.len(), 2, "one voter per step: {steps:#?}");
    // Whichever learner caught up first is added first (under load orders-4 may beat
    // orders-3): the law is one voter per step, four voters after the first.
    let first = steps[0].strip_prefix("voters are now ").unwrap_or_default();
    let first_voters = first.split(':').next().unwrap_or_default();
    assert_eq!(first_voters.split(", ").count(), 4, "{steps:#?}");
    assert!(
        first_voters.starts_with("orders-0, orders-1, orders-2, orders-"),
        "{steps:#?}"
    );
    keys.extend(write(&nodes, &view, "five", 20).await);

    // Kill the leader: a new one is elected among the five voters with every write.
    let old = leader_of(&view);
    nodes.kill9(old);
    let new = until_promoted(&admin, &mut view, &nodes).await;
    assert_readable(&nodes, new, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_learners_never_elect_a_leader_without_the_latest_writes() {
    let mut nodes = Nodes::start(5, SINGLE_LEADER);
    nodes.wait_all_up().await;
    let admin = HttpNodeAdmin::new(Duration::from_millis(500), Duration::from_millis(500)).unwrap();
    let view = three_voters(&admin, &nodes).await;
    let keys = write(&nodes, &view, "k", 20).await;
    // Two voters die; the cluster is scaled to 5 at the same time: orders-3 and orders-4 join
    // as learners, and cannot become voters (the new set would have no live majority).
    nodes.kill9(1);
    nodes.kill9(2);
    // Past the fence timeout the leader knows they are gone.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut view = resize(&nodes, &view, 5, 5);
    for _ in 0..5 {
        pass(&admin, &mut view).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(voters_on(&view, 0), names(&[0, 1, 2]));
    // The leader dies too. Three of five members answer, all of them learners or out of date:
    // the old operator elected one of them and lost the writes. Nobody may be elected now.
    nodes.kill9(0);
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let report = pass(&admin, &mut view).await;
        assert_eq!(report.promoted, None, "{:?}", report.decision);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Voters come back: one of them is elected, with the data.
    nodes.spawn(1);
    nodes.spawn(2);
    let new = until_promoted(&admin, &mut view, &nodes).await;
    assert!(new == 1 || new == 2, "a learner was elected: orders-{new}");
    assert_readable(&nodes, new, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_5_to_3_removes_voters_one_at_a_time_and_hands_over_from_a_leaving_leader() {
    let nodes = Nodes::start(5, SINGLE_LEADER);
    nodes.wait_all_up().await;
    let admin = HttpNodeAdmin::new(Duration::from_millis(500), Duration::from_millis(500)).unwrap();
    let mut view = view_of(&nodes, 5, 5);
    settle(&admin, &mut view, &[0, 1, 2, 3, 4], &nodes).await;
    // Move leadership to orders-4 by hand (fence at 2, promote it), as a switchover would.
    for i in 0..5 {
        admin
            .epoch(&nodes.addr(i), &auth(), EpochRequest { epoch: 2 })
            .await
            .unwrap();
    }
    let followers = (0..4)
        .map(|i| rc_api::Peer {
            id: format!("orders-{i}"),
            address: nodes.addr(i),
        })
        .collect();
    let request = PromoteRequest {
        epoch: 2,
        followers,
        voters: Vec::new(),
    };
    admin
        .promote(&nodes.addr(4), &auth(), request)
        .await
        .unwrap();
    refresh(&admin, &auth(), &mut view).await;
    let mut keys = write(&nodes, &view, "five", 20).await;

    let mut view = resize(&nodes, &view, 5, 3);
    settle(&admin, &mut view, &[0, 1, 2], &nodes).await;
    let leader = leader_of(&view);
    assert!(leader < 3, "the leader left with orders-4");
    assert_eq!(status(&view, leader).map(|s| s.epoch), Some(3));
    keys.extend(write(&nodes, &view, "three", 20).await);
    assert_readable(&nodes, leader, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_volume_while_another_member_is_down_loses_nothing_and_rejoins_as_a_voter() {
    let mut nodes = Nodes::start(3, SINGLE_LEADER);
    nodes.wait_all_up().await;
    let admin = HttpNodeAdmin::new(Duration::from_millis(500), Duration::from_millis(500)).unwrap();
    let mut view = three_voters(&admin, &nodes).await;
    let keys = write(&nodes, &view, "k", 20).await;
    // orders-2 is down; orders-1's volume is replaced.
    nodes.kill9(2);
    nodes.kill9(1);
    nodes.wipe(1);
    nodes.spawn(1);
    nodes.wait_up(1).await;
    // Nothing is acknowledged with orders-0 and an empty orders-1, and the voter set cannot
    // drop orders-1 without a live majority.
    assert!(nodes.put(0, "while-down", "v").await >= 500);
    for _ in 0..5 {
        pass(&admin, &mut view).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(voters_on(&view, 0), names(&[0, 1, 2]));
    // orders-2 returns: orders-1 is removed (it lost its data), then added back once it has
    // caught up, as its new incarnation.
    nodes.spawn(2);
    settle(&admin, &mut view, &[0, 1, 2], &nodes).await;
    let leader = leader_of(&view);
    let config = status(&view, leader).unwrap().config.clone().unwrap();
    let one = status(&view, 1).unwrap().incarnation;
    assert!(config.counts("orders-1", one), "{config:?}");
    assert_readable(&nodes, leader, &keys).await;
}
