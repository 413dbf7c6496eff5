//! Multi-process tests of leaderless safety cases that lost or hid acknowledged writes: a wiped
//! coordinator reusing dots, a joining owner not counted by writes, a member added back after a
//! decommission, and hint replay stuck behind a dead member. Real rc-node processes on loopback,
//! N=3 W=2 R=2, driven through the public and admin APIs only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::leaderless::*;
use common::{Cluster, TOKEN};
use rc_api::{MemberState, StreamState};
use serde_json::Value;

async fn get_r(c: &Cluster, i: usize, key: &str, r: usize) -> Option<Value> {
    let resp = c
        .http
        .get(c.url(i, &format!("/v1/kv/{key}?r={r}")))
        .send()
        .await
        .ok()?;
    match resp.status().as_u16() {
        200 => resp.json().await.ok(),
        404 => Some(Value::Null),
        _ => None,
    }
}

/// Start `n` nodes; ring v1 makes the first `members` of them `normal`.
async fn cluster(n: usize, members: usize, extra: &[&str]) -> Cluster {
    // The default of these tests (no anti-entropy) unless `extra` sets its own interval.
    let own_interval = extra.contains(&"--anti-entropy-interval-seconds");
    let defaults = LEADERLESS
        .iter()
        .copied()
        .take(if own_interval { 2 } else { 4 });
    let args: Vec<&str> = defaults.chain(extra.iter().copied()).collect();
    let c = Cluster::start(n, &args);
    for i in 0..n {
        c.wait_up(i).await;
    }
    let normal: Vec<(usize, MemberState)> =
        (0..members).map(|i| (i, MemberState::Normal)).collect();
    let v1 = ring(&c, 1, &normal);
    for i in 0..members {
        let r = push_ring(&c, i, &v1).await;
        let status = r.status();
        assert!(
            status.is_success(),
            "ring v1 on n{i}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }
    for i in 0..members {
        wait_status(&c, i, "restored", |s| !s.restoring).await;
    }
    c
}

async fn push_everywhere(c: &Cluster, nodes: &[usize], ring: &Value) {
    for i in nodes {
        assert!(push_ring(c, *i, ring).await.status().is_success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_coordinator_never_reuses_a_dot_and_loses_no_acknowledged_value() {
    let mut c = cluster(3, 3, &["--conflict-resolution", "siblings"]).await;
    assert!(put(&c, 2, "cart", "v1", None).await);
    // n2 loses its disk and comes back empty; the operator gives it the ring again.
    c.kill9(2);
    std::fs::remove_dir_all(&c.nodes[2].data).unwrap();
    c.spawn(2);
    c.wait_up(2).await;
    let v1 = ring(
        &c,
        1,
        &(0..3).map(|i| (i, MemberState::Normal)).collect::<Vec<_>>(),
    );
    assert!(push_ring(&c, 2, &v1).await.status().is_success());
    // A blind write through n2: concurrent with v1, so both must stay.
    assert!(put(&c, 2, "cart", "v2", None).await);
    // (n2 answers reads again once it has streamed its ranges back.)
    wait_status(&c, 2, "n2 restored", |s| !s.restoring).await;
    let read = get_r(&c, 0, "cart", 3).await.unwrap();
    assert_eq!(values(&read), vec!["v1", "v2"], "{read}\n{}", c.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_join_count_the_joining_owner_so_none_is_lost_when_it_takes_over() {
    let mut c = cluster(4, 3, &[]).await;
    let joining: Vec<(usize, MemberState)> = vec![
        (0, MemberState::Normal),
        (1, MemberState::Normal),
        (2, MemberState::Normal),
        (3, MemberState::Joining),
    ];
    push_everywhere(&c, &[0, 1, 2, 3], &ring(&c, 2, &joining)).await;
    wait_status(&c, 3, "n3 joined", |s| s.stream == StreamState::Joined).await;
    // n3 (joined, not yet normal) and n1 go down; writes through n0.
    c.kill9(3);
    c.kill9(1);
    let mut acked = Vec::new();
    for k in 0..60 {
        let key = format!("j{k}");
        if put(&c, 0, &key, "v", None).await {
            acked.push(key);
        }
    }
    // They come back and n0 stops, before it can hand them its hints; n3 becomes a
    // normal owner. One node down: every acknowledged write must still be readable.
    c.spawn(1);
    c.spawn(3);
    c.wait_up(1).await;
    c.wait_up(3).await;
    c.pause(0);
    let normal: Vec<(usize, MemberState)> = (0..4).map(|i| (i, MemberState::Normal)).collect();
    push_everywhere(&c, &[1, 2, 3], &ring(&c, 3, &normal)).await;
    let mut missing = Vec::new();
    for key in &acked {
        // 404 is a lost write; a read that found too few owners yet (a member just resumed) is
        // retried.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let resp = c
                .http
                .get(c.url(3, &format!("/v1/kv/{key}?r=2")))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            if status == 200 {
                break;
            }
            if status == 404 || Instant::now() > deadline {
                missing.push(format!("{key}: {}", resp.text().await.unwrap_or_default()));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    c.resume(0);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged keys unreadable with one node down: {missing:?}",
        missing.len(),
        acked.len()
    );
    eprintln!(
        "{} of 60 writes acknowledged while n1 and the joiner were stopped",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_added_back_after_a_decommission_streams_its_ranges_again() {
    let c = cluster(4, 4, &[]).await;
    for k in 0..30 {
        assert!(put(&c, 0, &format!("d{k}"), "v", None).await);
    }
    let mut leaving: Vec<(usize, MemberState)> = (0..3).map(|i| (i, MemberState::Normal)).collect();
    leaving.push((3, MemberState::Leaving));
    push_everywhere(&c, &[0, 1, 2, 3], &ring(&c, 2, &leaving)).await;
    let r = c
        .http
        .post(c.url(3, "/admin/decommission"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_status(&c, 3, "n3 decommissioned", |s| {
        s.stream == StreamState::Decommissioned
    })
    .await;
    let three: Vec<(usize, MemberState)> = (0..3).map(|i| (i, MemberState::Normal)).collect();
    push_everywhere(&c, &[0, 1, 2, 3], &ring(&c, 3, &three)).await;
    let mut back = three.clone();
    back.push((3, MemberState::Joining));
    push_everywhere(&c, &[0, 1, 2, 3], &ring(&c, 4, &back)).await;
    wait_status(&c, 3, "n3 joined again", |s| {
        s.stream == StreamState::Joined
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_for_a_live_member_are_delivered_while_many_wait_for_a_dead_one() {
    let mut c = cluster(3, 3, &[]).await;
    c.kill9(2);
    for k in 0..600 {
        assert!(
            put(&c, 0, &format!("h{k}"), "v", None).await,
            "{}",
            c.logs()
        );
    }
    wait_status(&c, 0, "600 hints for n2", |s| s.hints_queued >= 600).await;
    // n1 misses one write too.
    c.pause(1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = put(&c, 0, "late", "v", None).await;
    c.resume(1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while local(&c, 1, "late").await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the hint for n1 was never delivered while n2 stayed down\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_is_purged_only_once_every_owner_holds_it_and_the_value_never_returns() {
    let flags = [
        "--anti-entropy-interval-seconds",
        "1",
        "--tombstone-grace-seconds",
        "1",
    ];
    let mut c = cluster(3, 3, &flags).await;
    assert!(put(&c, 0, "gone", "v", None).await);
    assert!(holds(&c, 2, "gone").await, "n2 never got the value");
    // n2 is away (holding the value) while the key is deleted.
    c.kill9(2);
    let r = c.http.delete(c.url(0, "/v1/kv/gone")).send().await.unwrap();
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    // Well past the grace period and several anti-entropy rounds: n2 has not agreed, so the
    // tombstone stays (purging it would let n2's value come back).
    tokio::time::sleep(Duration::from_secs(4)).await;
    for i in [0, 1] {
        assert!(
            local(&c, i, "gone").await.is_some(),
            "n{i} purged the tombstone while an owner was away\n{}",
            c.logs()
        );
    }
    c.spawn(2);
    c.wait_up(2).await;
    // A quorum read through the stale node still sees the delete.
    assert_eq!(get(&c, 2, "gone").await, Some(Value::Null));
    // n2 gets the tombstone; then all three purge it, and the value never reappears on the
    // owners that saw the delete. (n2 holds the stale value until a hint or anti-entropy
    // brings it the tombstone; that is expected and is exactly why the purge must wait.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut present = Vec::new();
        for i in 0..3 {
            if let Some(state) = local(&c, i, "gone").await {
                let live = state["siblings"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| !s["value"].is_null()));
                assert!(
                    i == 2 || !live,
                    "the deleted value came back on n{i}: {state}"
                );
                present.push(i);
            }
        }
        if present.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tombstone was never purged everywhere (still on {present:?})\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        assert!(local(&c, i, "gone").await.is_none(), "it came back on n{i}");
    }
    assert_eq!(get(&c, 0, "gone").await, Some(Value::Null));
    // Every member killed and restarted: no snapshot was written since (the default interval
    // is far away), so only the purge's own log record keeps the tombstone from coming back.
    for i in 0..3 {
        c.kill9(i);
    }
    for i in 0..3 {
        c.spawn(i);
    }
    for i in 0..3 {
        c.wait_up(i).await;
        assert!(
            local(&c, i, "gone").await.is_none(),
            "the purged tombstone came back on n{i} after a restart\n{}",
            c.logs()
        );
    }
}

/// A member that stopped owning a key after a join can still hold an old copy of it. If the
/// new owners purged the key's tombstone without asking that member, the copy would come back
/// the day ownership returns to it (here: the joiner is decommissioned).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_owners_copy_keeps_the_tombstone_and_never_comes_back() {
    let flags = [
        "--anti-entropy-interval-seconds",
        "1",
        "--tombstone-grace-seconds",
        "1",
    ];
    let c = cluster(4, 3, &flags).await;
    let keys: Vec<String> = (0..30).map(|k| format!("j{k}")).collect();
    for k in &keys {
        assert!(put(&c, 0, k, "v0", None).await);
    }
    let normal3: Vec<(usize, MemberState)> = (0..3).map(|i| (i, MemberState::Normal)).collect();
    let mut joining = normal3.clone();
    joining.push((3, MemberState::Joining));
    push_everywhere(&c, &[0, 1, 2, 3], &ring(&c, 2, &joining)).await;
    wait_status(&c, 3, "n3 joined", |s| s.stream == StreamState::Joined).await;
    let normal4: Vec<(usize, MemberState)> = (0..4).map(|i| (i, MemberState::Normal)).collect();
    push_everywhere(&c, &[0, 1, 2, 3], &ring(&c, 3, &normal4)).await;
    // A key n3 took over; delete it through n3. The member it took the key from keeps v0.
    let mut key = None;
    for k in &keys {
        if local(&c, 3, k).await.is_some() {
            key = Some(k.clone());
            break;
        }
    }
    let key = key.expect("n3 took over no key");
    let v0 = get(&c, 3, &key).await.unwrap();
    let r = c
        .http
        .delete(c.url(3, &format!("/v1/kv/{key}")))
        .query(&[("context", v0["context"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    assert_eq!(get(&c, 3, &key).await, Some(Value::Null));
    // Past the grace period and several rounds in which a purge could run.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // n3 leaves: its ranges go back to the member that held them before.
    let mut leaving = normal3.clone();
    leaving.push((3, MemberState::Leaving));
    push_everywhere(&c, &[0, 1, 2, 3], &ring(&c, 4, &leaving)).await;
    let r = c
        .http
        .post(c.url(3, "/admin/decommission"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_status(&c, 3, "n3 decommissioned", |s| {
        s.stream == StreamState::Decommissioned
    })
    .await;
    push_everywhere(&c, &[0, 1, 2], &ring(&c, 5, &normal3)).await;
    for _ in 0..3 {
        for i in 0..3 {
            assert_eq!(
                get(&c, i, &key).await,
                Some(Value::Null),
                "the deleted value came back via n{i}\n{}",
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
}

/// A write through a member that does not own the key goes to the next live owner when the
/// first one cannot be reached, before the failure detector has noticed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_a_non_owner_skips_an_owner_it_cannot_reach() {
    let mut c = cluster(4, 4, &[]).await;
    for k in 0..40 {
        let key = format!("f{k}");
        assert!(put(&c, 0, &key, "v0", None).await);
    }
    // Keys n3 does not own, and the owner each one is forwarded to first is down.
    c.kill9(0);
    let mut written = 0;
    for k in 0..40 {
        let key = format!("f{k}");
        if local(&c, 3, &key).await.is_some() {
            continue;
        }
        let r = c
            .http
            .put(c.url(3, &format!("/v1/kv/{key}")))
            .json(&serde_json::json!({"value": "v1"}))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{key}: {}",
            r.text().await.unwrap_or_default()
        );
        written += 1;
    }
    assert!(written > 0, "n3 owned every key");
}

/// A member that lost its disk must not answer reads as an owner before it has its ranges
/// back: with another owner down, its empty answer would make an acknowledged write read as
/// absent. It waits (reads fail with too few owners) until the only other copy is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_member_answers_no_reads_until_it_has_streamed_its_ranges_back() {
    let mut c = cluster(3, 3, &[]).await;
    // n1 is away: writes are acknowledged by n0 and n2 (n0 keeps hints for n1).
    c.pause(1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let keys: Vec<String> = (0..20).map(|k| format!("w{k}")).collect();
    for k in &keys {
        assert!(put(&c, 0, k, "v", None).await, "{}", c.logs());
    }
    // n0 (and its hints) goes down, n1 is back, and n2 loses its disk.
    c.kill9(0);
    c.resume(1);
    c.kill9(2);
    std::fs::remove_dir_all(&c.nodes[2].data).unwrap();
    c.spawn(2);
    c.wait_up(2).await;
    wait_status(&c, 2, "n2 has the ring again", |s| s.ring_version == 1).await;
    // The only intact copy is on n0: no read may answer "absent".
    for _ in 0..3 {
        for k in &keys {
            let got = get(&c, 1, k).await;
            assert_ne!(got, Some(Value::Null), "{k} read as absent\n{}", c.logs());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(lstatus(&c, 2).await.restoring);
    // n0 returns: n2 streams from it and serves again; every write reads back.
    c.spawn(0);
    c.wait_up(0).await;
    wait_status(&c, 2, "n2 restored", |s| !s.restoring).await;
    for k in &keys {
        let got = get(&c, 1, k).await.unwrap();
        assert_eq!(values(&got), vec!["v".to_string()], "{k}\n{}", c.logs());
    }
}

/// After a join settles, the members that stopped owning a range hand it to its owners and
/// drop their copies: every key ends on exactly N members and still reads back from all N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn former_owners_drop_ranges_they_no_longer_own_once_the_owners_hold_them() {
    let c = cluster(4, 3, &["--anti-entropy-interval-seconds", "1"]).await;
    let keys: Vec<String> = (0..40).map(|k| format!("c{k}")).collect();
    for k in &keys {
        assert!(put(&c, 0, k, "v", None).await);
    }
    let mut joining: Vec<(usize, MemberState)> = (0..3).map(|i| (i, MemberState::Normal)).collect();
    joining.push((3, MemberState::Joining));
    push_everywhere(&c, &[0, 1, 2, 3], &ring(&c, 2, &joining)).await;
    wait_status(&c, 3, "n3 joined", |s| s.stream == StreamState::Joined).await;
    let normal: Vec<(usize, MemberState)> = (0..4).map(|i| (i, MemberState::Normal)).collect();
    push_everywhere(&c, &[0, 1, 2, 3], &ring(&c, 3, &normal)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut copies = Vec::new();
        for k in &keys {
            let mut n = 0;
            for i in 0..4 {
                n += usize::from(local(&c, i, k).await.is_some());
            }
            copies.push(n);
        }
        assert!(
            copies.iter().all(|n| *n >= 3),
            "a key lost a copy: {copies:?}"
        );
        if copies.iter().all(|n| *n == 3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "former owners kept their copies: {copies:?}\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for k in &keys {
        let got = get_r(&c, 3, k, 3).await.unwrap();
        assert_eq!(values(&got), vec!["v".to_string()], "{k}");
    }
}

/// A leaving member drops its data once it has handed every range over, but the ring still names
/// it (as `leaving`, a current owner) until the operator installs the next one. In that gap it
/// must answer no reads: it used to "restore" at once (a leaving member will own nothing, so it
/// streamed nothing back) and answer empty, and a read quorum of the two leavers then returned
/// "absent" for a key acknowledged just before (seen in `leaderless_faults`, 5 -> 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_member_answers_no_reads_while_the_ring_still_names_it_leaving() {
    use rc_node::leaderless::ring::Layout;
    let c = cluster(5, 5, &[]).await;
    let (leavers, stay) = ([3usize, 4], [0usize, 1, 2]);
    let all: Vec<rc_api::Member> = (0..5)
        .map(|i| rc_api::Member {
            id: c.nodes[i].id.clone(),
            address: c.addr(i),
            state: MemberState::Normal,
        })
        .collect();
    let layout = Layout::new(
        &rc_api::Ring {
            version: 1,
            members: all,
        },
        3,
    );
    // Keys whose first two owners are the leavers: a read through a member that does not own
    // them asks exactly those two.
    let ids = |is: &[usize]| -> Vec<String> { is.iter().map(|i| c.nodes[*i].id.clone()).collect() };
    let mut keys = Vec::new();
    for k in 0..2000 {
        let key = format!("l{k}");
        let owners: Vec<String> = layout.owners(&key).iter().map(|m| m.id.clone()).collect();
        if ids(&leavers).iter().all(|l| owners[..2].contains(l)) {
            let via = stay
                .into_iter()
                .find(|i| !owners.contains(&c.nodes[*i].id))
                .unwrap();
            keys.push((key, via));
        }
        if keys.len() == 5 {
            break;
        }
    }
    assert!(!keys.is_empty(), "no key has both leavers first");
    for (key, _) in &keys {
        assert!(put(&c, 0, key, "v", None).await, "{}", c.logs());
    }
    let mut leaving: Vec<(usize, MemberState)> =
        stay.iter().map(|i| (*i, MemberState::Normal)).collect();
    leaving.extend(leavers.iter().map(|i| (*i, MemberState::Leaving)));
    push_everywhere(&c, &[0, 1, 2, 3, 4], &ring(&c, 2, &leaving)).await;
    for l in leavers {
        let r = c
            .http
            .post(c.url(l, "/admin/decommission"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    for l in leavers {
        wait_status(&c, l, "decommissioned", |s| {
            s.stream == StreamState::Decommissioned
        })
        .await;
    }
    // Several rounds of the watch that streams ranges in (every 200 ms); the operator has not
    // installed the ring without the leavers yet.
    for _ in 0..4 {
        for (key, via) in &keys {
            let got = get(&c, *via, key).await;
            assert_ne!(
                got,
                Some(Value::Null),
                "{key} read as absent through n{via} after the decommission\n{}",
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for l in leavers {
        assert!(lstatus(&c, l).await.restoring, "n{l} serves reads again");
    }
    // Once the ring no longer names them, every key reads back from its next owners.
    let three: Vec<(usize, MemberState)> = stay.iter().map(|i| (*i, MemberState::Normal)).collect();
    push_everywhere(&c, &[0, 1, 2, 3, 4], &ring(&c, 3, &three)).await;
    for (key, via) in &keys {
        let got = get(&c, *via, key).await.unwrap();
        assert_eq!(values(&got), vec!["v".to_string()], "{key}\n{}", c.logs());
    }
}
