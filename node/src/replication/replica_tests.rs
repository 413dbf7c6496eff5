//! Unit tests of the replica state machine: three replicas wired by hand, no I/O.

use super::*;

fn cfg(id: &str, replication: Replication) -> ReplicaConfig {
    ReplicaConfig {
        id: id.into(),
        address: format!("{id}:7400"),
        replication,
        fence_timeout: Duration::from_millis(500),
        snapshot_every: 1_000_000,
        max_batch_entries: 100,
        max_batch_bytes: 1 << 20,
    }
}

fn peer(id: &str) -> Peer {
    Peer {
        id: id.into(),
        address: format!("{id}:7400"),
    }
}

fn node(id: &str) -> Replica {
    Replica::recover(cfg(id, Replication::Quorum), None, vec![])
}

fn put(k: &str) -> Command {
    Command::Put {
        key: k.into(),
        value: "v".into(),
    }
}

/// Make everything pushed so far durable.
fn sync(r: &mut Replica, seq: &mut u64, now: Instant) {
    r.take_records();
    *seq += 1;
    r.note_submitted(*seq);
    r.on_durable(*seq, now);
}

/// Deliver leader's next frame to `f` and the answer back. Returns the reply.
fn exchange(
    leader: &mut Replica,
    i: usize,
    f: &mut Replica,
    seq: &mut u64,
    now: Instant,
) -> Option<PeerReply> {
    let out = leader.outgoing(i, true)?;
    let Outgoing::Append {
        prev,
        entries,
        commit,
        round,
    } = out
    else {
        return None;
    };
    let me = peer(leader.id());
    let entries = entries.iter().map(|e| (**e).clone()).collect();
    let reply = f.on_append(leader.epoch(), &me, prev, entries, commit, round, 0, now);
    sync(f, seq, now);
    let id = f.id().to_string();
    leader.on_reply(&id, reply.clone(), now, now);
    Some(reply)
}

fn three() -> (Replica, Replica, Replica, u64, Instant) {
    let now = Instant::now();
    let (mut a, mut b, mut c) = (node("a"), node("b"), node("c"));
    for r in [&mut a, &mut b, &mut c] {
        r.fence(1);
    }
    let mut seq = 0;
    a.promote(1, vec![peer("b"), peer("c")], now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    sync(&mut a, &mut seq, now);
    (a, b, c, seq, now)
}

#[test]
fn a_quorum_write_commits_only_once_a_majority_holds_it() {
    let (mut a, mut b, _c, mut seq, now) = three();
    let pos = a
        .propose(put("x"), now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    sync(&mut a, &mut seq, now);
    assert!(
        a.commit_index() < pos.index,
        "leader alone is not a majority"
    );
    exchange(&mut a, 0, &mut b, &mut seq, now);
    assert_eq!(a.commit_index(), pos.index);
    let applied = a.apply_committed();
    assert_eq!(
        applied.last().map(|(i, e, _)| (*i, *e)),
        Some((pos.index, 1))
    );
    assert!(a.kv().get("x").is_some());
}

#[test]
fn a_follower_truncates_a_divergent_uncommitted_suffix() {
    let (mut a, mut b, mut c, mut seq, now) = three();
    exchange(&mut a, 0, &mut b, &mut seq, now);
    exchange(&mut a, 1, &mut c, &mut seq, now);
    // a appends two entries nobody else gets, then is deposed.
    a.propose(put("lost1"), now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    a.propose(put("lost2"), now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    sync(&mut a, &mut seq, now);
    b.fence(2);
    c.fence(2);
    b.promote(2, vec![peer("a"), peer("c")], now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    b.propose(put("kept"), now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    sync(&mut b, &mut seq, now);
    exchange(&mut b, 1, &mut c, &mut seq, now);
    // a hears from b in epoch 2: it adopts the epoch, backs up and truncates.
    for _ in 0..4 {
        exchange(&mut b, 0, &mut a, &mut seq, now);
    }
    assert_eq!(a.role(), Role::Follower);
    assert_eq!(a.epoch(), 2);
    assert_eq!(a.last_log(), b.last_log());
    a.apply_committed();
    assert!(a.kv().get("lost1").is_none() && a.kv().get("kept").is_some());
}

#[test]
fn a_node_accepts_one_leader_per_epoch_and_refuses_older_epochs() {
    let now = Instant::now();
    let mut n = node("n");
    n.fence(5);
    assert!(n.follow(5, peer("a")).is_ok());
    assert!(n.follow(5, peer("a")).is_ok(), "idempotent");
    assert_eq!(
        n.follow(5, peer("b")),
        Err(AdminRefusal::LeaderTaken {
            epoch: 5,
            leader: "a".into()
        })
    );
    assert_eq!(
        n.promote(5, vec![], now),
        Err(AdminRefusal::LeaderTaken {
            epoch: 5,
            leader: "a".into()
        })
    );
    assert_eq!(
        n.follow(4, peer("b")),
        Err(AdminRefusal::StaleEpoch {
            requested: 4,
            current: 5
        })
    );
    let reply = n.on_append(4, &peer("b"), LogPosition::default(), vec![], 0, 0, 0, now);
    assert!(matches!(reply, PeerReply::Rejected { epoch: 5, .. }));
    let reply = n.on_append(5, &peer("b"), LogPosition::default(), vec![], 0, 0, 0, now);
    assert!(
        matches!(reply, PeerReply::Rejected { .. }),
        "b is not epoch 5's leader"
    );
    n.fence(3);
    assert_eq!(n.epoch(), 5, "fencing never goes backwards");
}

#[test]
fn a_leader_steps_down_when_a_follower_reports_a_newer_epoch() {
    let (mut a, mut b, _c, mut seq, now) = three();
    b.fence(7);
    let reply = exchange(&mut a, 0, &mut b, &mut seq, now);
    assert!(matches!(reply, Some(PeerReply::Rejected { epoch: 7, .. })));
    assert_eq!(a.role(), Role::Follower);
    assert_eq!(a.epoch(), 7);
    assert!(matches!(
        a.propose(put("x"), now),
        Err(WriteRefusal::NotLeader { .. })
    ));
}

#[test]
fn a_leader_without_majority_contact_fences_itself() {
    let (mut a, mut b, _c, mut seq, now) = three();
    exchange(&mut a, 0, &mut b, &mut seq, now);
    assert!(a.propose(put("x"), now).is_ok());
    let later = now + Duration::from_millis(600);
    assert!(a.self_fenced(later));
    assert_eq!(a.propose(put("y"), later), Err(WriteRefusal::SelfFenced));
    // A fresh answer to a frame sent after the silence lifts the fence.
    let out = a.outgoing(0, true);
    assert!(out.is_some());
    a.on_reply(
        "b",
        PeerReply::Ok {
            match_index: 0,
            round: 0,
            load: 0,
        },
        later,
        later,
    );
    assert!(!a.self_fenced(later));
}

#[test]
fn a_read_round_is_confirmed_only_by_a_majority_answering_after_it_began() {
    let (mut a, mut b, mut c, mut seq, now) = three();
    assert!(
        matches!(a.begin_read(), Err(WriteRefusal::SelfFenced)),
        "no-op not committed yet"
    );
    exchange(&mut a, 0, &mut b, &mut seq, now);
    let (read_index, round) = a.begin_read().unwrap_or_else(|e| unreachable!("{e:?}"));
    assert_eq!(read_index, a.commit_index());
    assert!(!a.round_confirmed(round));
    exchange(&mut a, 1, &mut c, &mut seq, now);
    assert!(a.round_confirmed(round));
}

#[test]
fn replay_rebuilds_log_and_meta_and_never_resumes_leadership() {
    let (mut a, _b, _c, _seq, now) = three();
    a.propose(put("x"), now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    let mut records = vec![WalRecord::Meta(Meta {
        epoch: 1,
        leader: Some(peer("a")),
    })];
    records.push(WalRecord::Entry(Entry {
        index: 1,
        epoch: 1,
        command: Command::Noop,
    }));
    records.push(WalRecord::Entry(Entry {
        index: 2,
        epoch: 1,
        command: put("x"),
    }));
    records.push(WalRecord::Truncate { from: 2 });
    let r = Replica::recover(cfg("a", Replication::Quorum), None, records);
    assert_eq!(r.role(), Role::Follower);
    assert_eq!(r.epoch(), 1);
    assert_eq!(r.last_log(), LogPosition { epoch: 1, index: 1 });
}
