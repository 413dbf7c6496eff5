//! Unit tests of the replica state machine: three replicas wired by hand, no I/O.

use super::*;

fn cfg(id: &str, replication: Replication) -> ReplicaConfig {
    ReplicaConfig {
        id: id.into(),
        address: format!("{id}:7400"),
        replication,
        fence_timeout: Duration::from_millis(500),
        snapshot_every: Some(1_000_000),
        max_batch_entries: 100,
        max_batch_bytes: 1 << 20,
        seed: id.bytes().map(u64::from).sum::<u64>() * 7919,
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

fn voters_of(nodes: &[&Replica]) -> Vec<Voter> {
    nodes
        .iter()
        .map(|r| Voter {
            id: r.id().into(),
            incarnation: r.incarnation(),
        })
        .collect()
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
    let frame = Frame {
        epoch: leader.epoch(),
        leader: &me,
        round,
        load: 0,
        now,
    };
    let reply = f.on_append(frame, prev, entries, commit);
    sync(f, seq, now);
    let id = f.id().to_string();
    let epoch = leader.epoch();
    leader.on_reply(&id, epoch, reply.clone(), now, now);
    Some(reply)
}

/// Exchange frames until `f` has caught up with the leader (a few rounds: backing up, then
/// sending).
fn catch_up(leader: &mut Replica, i: usize, f: &mut Replica, seq: &mut u64, now: Instant) {
    for _ in 0..4 {
        exchange(leader, i, f, seq, now);
    }
}

/// Propose `command` on the leader and make it durable there; its position.
fn write(leader: &mut Replica, command: Command, seq: &mut u64, now: Instant) -> LogPosition {
    let pos = leader
        .propose(command, now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    sync(leader, seq, now);
    pos
}

fn three() -> (Replica, Replica, Replica, u64, Instant) {
    let now = Instant::now();
    let (mut a, mut b, mut c) = (node("a"), node("b"), node("c"));
    for r in [&mut a, &mut b, &mut c] {
        r.fence(1);
    }
    let mut seq = 0;
    sync(&mut b, &mut seq, now);
    sync(&mut c, &mut seq, now);
    let voters = voters_of(&[&a, &b, &c]);
    a.promote(1, vec![peer("b"), peer("c")], voters, now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    sync(&mut a, &mut seq, now);
    (a, b, c, seq, now)
}

#[test]
fn a_quorum_write_commits_only_once_a_majority_holds_it() {
    let (mut a, mut b, _c, mut seq, now) = three();
    let pos = write(&mut a, put("x"), &mut seq, now);
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
    b.promote(2, vec![peer("a"), peer("c")], vec![], now)
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
        n.promote(5, vec![], vec![], now),
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
    let b = peer("b");
    let frame = |epoch| Frame {
        epoch,
        leader: &b,
        round: 0,
        load: 0,
        now,
    };
    let reply = n.on_append(frame(4), LogPosition::default(), vec![], 0);
    assert!(matches!(reply, PeerReply::Rejected { epoch: 5, .. }));
    let reply = n.on_append(frame(5), LogPosition::default(), vec![], 0);
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
        1,
        PeerReply::Ok {
            match_index: 0,
            round: 0,
            load: 0,
            incarnation: b.incarnation(),
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
        incarnation: 42,
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

/// Four nodes: a leads epoch 1 with voters {a, b, c}; d is a learner it also replicates to.
fn three_and_a_learner() -> (Replica, Replica, Replica, Replica, u64, Instant) {
    let (mut a, b, c, mut seq, now) = three();
    let mut d = node("d");
    d.fence(1);
    sync(&mut d, &mut seq, now);
    a.promote(1, vec![peer("b"), peer("c"), peer("d")], vec![], now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    (a, b, c, d, seq, now)
}

#[test]
fn a_learner_receives_the_log_but_never_counts_for_a_commit() {
    let (mut a, mut b, _c, mut d, mut seq, now) = three_and_a_learner();
    assert_eq!(a.followers().len(), 3);
    let pos = write(&mut a, put("x"), &mut seq, now);
    catch_up(&mut a, 2, &mut d, &mut seq, now);
    assert_eq!(d.last_log(), a.last_log(), "the learner holds the write");
    assert!(
        a.commit_index() < pos.index,
        "leader + learner are not a majority of {{a, b, c}}"
    );
    assert!(a
        .follower_status(now)
        .iter()
        .any(|f| f.id == "d" && !f.voter));
    exchange(&mut a, 0, &mut b, &mut seq, now);
    assert_eq!(a.commit_index(), pos.index);
}

#[test]
fn a_follower_that_lost_its_disk_answers_as_a_new_incarnation_and_stops_counting() {
    let (mut a, mut b, _c, mut seq, now) = three();
    exchange(&mut a, 0, &mut b, &mut seq, now);
    let before = b.incarnation();
    // b's volume is replaced: same id, empty directory, another seed.
    let mut wiped = Replica::recover(
        ReplicaConfig {
            seed: 99,
            ..cfg("b", Replication::Quorum)
        },
        None,
        vec![],
    );
    assert_ne!(wiped.incarnation(), before);
    let pos = write(&mut a, put("x"), &mut seq, now);
    catch_up(&mut a, 0, &mut wiped, &mut seq, now);
    assert_eq!(wiped.last_log(), a.last_log(), "it refills from the leader");
    assert!(
        a.commit_index() < pos.index,
        "a refilled member is a learner until the voter set names its new incarnation"
    );
    assert!(a.self_fenced(now + Duration::from_millis(600)));
}

#[test]
fn the_voter_set_changes_one_caught_up_member_at_a_time() {
    let (mut a, mut b, mut c, mut d, mut seq, now) = three_and_a_learner();
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(
        matches!(
            a.change_voters(1, &ids(&["a", "b", "c", "d"]), now),
            Err(AdminRefusal::Busy(_))
        ),
        "the no-op of the epoch is not committed yet"
    );
    exchange(&mut a, 0, &mut b, &mut seq, now);
    exchange(&mut a, 1, &mut c, &mut seq, now);
    assert!(
        matches!(
            a.change_voters(1, &ids(&["a", "b", "c", "d"]), now),
            Err(AdminRefusal::Busy(_))
        ),
        "d has not answered yet"
    );
    catch_up(&mut a, 2, &mut d, &mut seq, now);
    assert!(
        matches!(
            a.change_voters(1, &ids(&["a"]), now),
            Err(AdminRefusal::Invalid(_))
        ),
        "two removals at once"
    );
    assert!(
        matches!(
            a.change_voters(1, &ids(&["b", "c", "d"]), now),
            Err(AdminRefusal::Invalid(_))
        ),
        "a swap is two changes"
    );
    assert!(
        matches!(
            a.change_voters(1, &ids(&["b", "c"]), now),
            Err(AdminRefusal::Invalid(_))
        ),
        "the leader cannot remove itself"
    );
    assert_eq!(
        b.change_voters(1, &ids(&["a", "b"]), now),
        Err(AdminRefusal::NotLeader { epoch: 1 })
    );
    let at = a
        .change_voters(1, &ids(&["a", "b", "c", "d"]), now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    sync(&mut a, &mut seq, now);
    let config = a.config().unwrap_or_else(|| unreachable!());
    assert_eq!(
        (config.index, config.voters.len(), config.committed),
        (at, 4, false)
    );
    assert!(
        matches!(
            a.change_voters(1, &ids(&["a", "b", "c"]), now),
            Err(AdminRefusal::Busy(_))
        ),
        "the previous change is not committed"
    );
    assert_eq!(
        a.change_voters(1, &ids(&["d", "c", "b", "a"]), now),
        Ok(at),
        "asking for the voter set in force is idempotent"
    );
    // In force at once: 4 voters need 3, so a and b alone do not commit it.
    exchange(&mut a, 0, &mut b, &mut seq, now);
    assert!(a.commit_index() < at);
    exchange(&mut a, 2, &mut d, &mut seq, now);
    assert_eq!(a.commit_index(), at);
    // Followers learn the voter set from the log.
    assert_eq!(d.config().map(|c| c.voters.len()), Some(4));
}

#[test]
fn a_restarted_leader_is_never_promoted_again_in_its_own_epoch_and_redirects_nowhere() {
    let (mut a, _b, _c, mut seq, now) = three();
    sync(&mut a, &mut seq, now);
    // What the WAL holds: a restart replays it.
    let records = vec![
        WalRecord::Meta(Meta {
            epoch: 1,
            leader: Some(peer("a")),
            incarnation: a.incarnation(),
        }),
        WalRecord::Entry(Entry {
            index: 1,
            epoch: 1,
            command: Command::Noop,
        }),
    ];
    let mut restarted = Replica::recover(cfg("a", Replication::Quorum), None, records);
    assert_eq!(
        restarted.promote(1, vec![peer("b"), peer("c")], vec![], now),
        Err(AdminRefusal::RestartedLeader { epoch: 1 })
    );
    assert_eq!(
        restarted.propose(put("x"), now),
        Err(WriteRefusal::NotLeader { leader: None }),
        "never send a client to ourselves"
    );
    restarted.fence(2);
    assert!(restarted
        .promote(2, vec![peer("b"), peer("c")], vec![], now)
        .is_ok());
}

#[test]
fn a_leader_sends_nothing_before_its_promotion_is_durable() {
    let now = Instant::now();
    let mut a = node("a");
    let mut seq = 0;
    a.fence(1);
    sync(&mut a, &mut seq, now);
    a.promote(1, vec![peer("b")], vec![], now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert!(
        a.outgoing(0, true).is_none(),
        "promotion record not durable"
    );
    a.take_records();
    seq += 1;
    a.note_submitted(seq);
    assert!(a.outgoing(0, true).is_none(), "submitted, not yet durable");
    a.on_durable(seq, now);
    assert!(a.outgoing(0, true).is_some());
}

#[test]
fn an_answer_to_a_frame_of_an_earlier_epoch_is_dropped() {
    let (mut a, mut b, _c, mut seq, now) = three();
    exchange(&mut a, 0, &mut b, &mut seq, now);
    a.fence(2);
    a.promote(2, vec![peer("b"), peer("c")], vec![], now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    let late = PeerReply::Ok {
        match_index: 50,
        round: 9,
        load: 0,
        incarnation: b.incarnation(),
    };
    a.on_reply("b", 1, late, now, now);
    let f = a.followers().iter().find(|f| f.peer.id == "b");
    assert_eq!(f.map(|f| f.match_index), Some(0));
}

#[test]
fn an_async_leader_that_was_deposed_drops_its_unreplicated_commits_and_converges() {
    let now = Instant::now();
    let async_node = |id: &str| Replica::recover(cfg(id, Replication::Async), None, vec![]);
    let (mut a, mut b, mut c) = (async_node("a"), async_node("b"), async_node("c"));
    let mut seq = 0;
    for r in [&mut a, &mut b, &mut c] {
        r.fence(1);
        sync(r, &mut seq, now);
    }
    let voters = voters_of(&[&a, &b, &c]);
    a.promote(1, vec![peer("b"), peer("c")], voters, now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    sync(&mut a, &mut seq, now);
    exchange(&mut a, 0, &mut b, &mut seq, now);
    exchange(&mut a, 1, &mut c, &mut seq, now);
    // a commits two writes on its own (Async) that nobody else receives.
    a.propose(put("lost"), now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    a.propose(put("lost2"), now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    sync(&mut a, &mut seq, now);
    a.apply_committed();
    assert!(a.kv().get("lost").is_some());
    b.fence(2);
    c.fence(2);
    b.promote(2, vec![peer("a"), peer("c")], vec![], now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    b.propose(put("kept"), now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    sync(&mut b, &mut seq, now);
    b.apply_committed();
    let old = a.incarnation();
    for _ in 0..6 {
        exchange(&mut b, 0, &mut a, &mut seq, now);
        a.apply_committed();
    }
    assert_eq!(a.last_log(), b.last_log(), "converged instead of wedging");
    assert!(a.kv().get("lost").is_none() && a.kv().get("kept").is_some());
    assert_ne!(
        a.incarnation(),
        old,
        "it lost committed state: a new incarnation"
    );
}

#[test]
fn the_voter_set_survives_replay_and_compaction_and_a_truncated_one_is_undone() {
    let (mut a, mut b, mut c, mut seq, now) = three();
    exchange(&mut a, 0, &mut b, &mut seq, now);
    exchange(&mut a, 1, &mut c, &mut seq, now);
    let first = a.config().unwrap_or_else(|| unreachable!());
    assert!(first.committed);
    // b learns a 2-voter set that never commits, then a newer leader truncates it.
    let ids = vec!["a".to_string(), "b".to_string()];
    a.change_voters(1, &ids, now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    sync(&mut a, &mut seq, now);
    exchange(&mut a, 0, &mut b, &mut seq, now);
    assert_eq!(b.config().map(|c| c.voters.len()), Some(2));
    c.fence(2);
    b.fence(2);
    c.promote(2, vec![peer("b")], vec![], now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    c.propose(put("x"), now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    sync(&mut c, &mut seq, now);
    for _ in 0..4 {
        exchange(&mut c, 0, &mut b, &mut seq, now);
    }
    assert_eq!(b.last_log(), c.last_log());
    assert_eq!(b.config().map(|c| c.voters), Some(first.voters.clone()));
    // Compaction keeps the configuration in the snapshot.
    let mut small = cfg("c", Replication::Quorum);
    small.snapshot_every = Some(1);
    let mut records = Vec::new();
    records.push(WalRecord::Meta(Meta {
        epoch: 2,
        leader: None,
        incarnation: c.incarnation(),
    }));
    for i in 1..=c.last_log().index {
        if let Some(e) = c.log.get(i) {
            records.push(WalRecord::Entry((**e).clone()));
        }
    }
    let mut replayed = Replica::recover(small, None, records);
    assert_eq!(
        replayed.config().map(|c| c.voters),
        Some(first.voters.clone())
    );
    replayed.commit = replayed.last_log().index;
    replayed.apply_committed();
    let compaction = replayed
        .take_compaction()
        .unwrap_or_else(|| unreachable!("compaction due"));
    assert_eq!(
        decoded(&compaction).config.map(|(_, v)| v),
        Some(first.voters)
    );
}

/// What a compaction's snapshot reads back as.
fn decoded(c: &Compaction) -> Snapshot {
    let mut bytes = Vec::new();
    c.snapshot
        .encode_into(&mut bytes)
        .unwrap_or_else(|e| unreachable!("{e}"));
    postcard::from_bytes(&bytes).unwrap_or_else(|e| unreachable!("{e}"))
}

/// A one-voter leader that snapshots every `every` applied entries, with its no-op applied.
fn solo_leader(every: u64, seq: &mut u64, now: Instant) -> Replica {
    let mut c = cfg("a", Replication::Quorum);
    c.snapshot_every = Some(every);
    let mut a = Replica::recover(c, None, vec![]);
    a.fence(1);
    let voters = voters_of(&[&a]);
    a.promote(1, vec![], voters, now)
        .unwrap_or_else(|e| unreachable!("{e}"));
    sync(&mut a, seq, now);
    a
}

#[test]
fn a_background_snapshot_leaves_the_log_whole_until_it_is_durable() {
    let (now, mut seq) = (Instant::now(), 0);
    let mut a = solo_leader(3, &mut seq, now);
    let before = a.last_log().index;
    for k in ["x", "y"] {
        write(&mut a, put(k), &mut seq, now);
    }
    let compaction = a
        .effects()
        .compact
        .unwrap_or_else(|| unreachable!("a snapshot is due"));
    assert!(compaction.background);
    let at = compaction.snapshot.last();
    assert_eq!(at.index, before + 2);
    let keys: Vec<String> = decoded(&compaction)
        .items
        .into_iter()
        .map(|i| i.0)
        .collect();
    assert_eq!(keys, ["x", "y"]);
    // Until it is durable the log keeps what it covers (a follower that needs those entries
    // gets them, not an older snapshot file), and no second snapshot starts.
    write(&mut a, put("z"), &mut seq, now);
    write(&mut a, put("w"), &mut seq, now);
    assert!(a.effects().compact.is_none());
    assert_eq!(a.log.base(), LogPosition::default());
    let covered = a.snapshot_written(LogPosition {
        epoch: 1,
        index: at.index - 1,
    });
    assert!(covered.is_empty());
    assert_eq!(
        a.log.base(),
        LogPosition::default(),
        "not the snapshot in flight"
    );
    let covered = a.snapshot_written(at);
    assert_eq!(
        covered.len() as u64,
        at.index,
        "handed back to be freed off the lock"
    );
    assert_eq!(a.log.base(), at);
    assert!(a.log.get(at.index).is_none() && a.log.get(at.index + 1).is_some());
}

#[test]
fn a_snapshot_interval_counts_a_batch_by_its_writes() {
    let (now, mut seq) = (Instant::now(), 0);
    let mut a = solo_leader(40, &mut seq, now);
    let batch = |n: usize| {
        Command::Batch(
            (0..n)
                .map(|i| Op::Put {
                    key: format!("k{i}"),
                    value: "v".into(),
                })
                .collect(),
        )
    };
    // The no-op and two entries, far fewer than 40, but 56 writes: more than 40 and a quarter.
    write(&mut a, batch(25), &mut seq, now);
    assert!(a.effects().compact.is_none(), "26 writes: not due yet");
    write(&mut a, batch(30), &mut seq, now);
    assert!(a.effects().compact.is_some(), "56 writes: due");
}

#[test]
fn a_background_snapshot_that_lands_after_the_state_was_replaced_is_ignored() {
    let (now, mut seq) = (Instant::now(), 0);
    let mut a = solo_leader(2, &mut seq, now);
    write(&mut a, put("x"), &mut seq, now);
    let at = a
        .effects()
        .compact
        .map(|c| c.snapshot.last())
        .unwrap_or_else(|| unreachable!("a snapshot is due"));
    a.discard_state("a test");
    let wipe = a
        .take_compaction()
        .unwrap_or_else(|| unreachable!("discarding writes an empty snapshot"));
    assert!(
        !wipe.background,
        "a replaced state is durable before anything after it"
    );
    assert!(a.snapshot_written(at).is_empty());
    assert_eq!(a.log.base(), LogPosition::default());
    assert_eq!(a.last_log(), LogPosition::default());
}

#[test]
fn replay_skips_the_records_a_compaction_tail_repeats() {
    // A crash before a background snapshot lands: the old segment, then the new one starting
    // with its tail (the meta and the entries after the snapshot's position, again).
    let meta = WalRecord::Meta(Meta {
        epoch: 1,
        leader: Some(peer("a")),
        incarnation: 42,
    });
    let entry = |index, k: &str| {
        WalRecord::Entry(Entry {
            index,
            epoch: 1,
            command: put(k),
        })
    };
    let records = vec![
        meta.clone(),
        entry(1, "x"),
        entry(2, "y"),
        entry(3, "z"),
        meta,
        entry(3, "z"),
        entry(4, "w"),
    ];
    let r = Replica::recover(cfg("a", Replication::Quorum), None, records);
    assert_eq!(r.last_log(), LogPosition { epoch: 1, index: 4 });
    assert_eq!(r.log.slice(1, 10).len(), 4);
}

#[test]
fn a_leader_handing_over_takes_no_writes_until_its_target_holds_the_whole_log() {
    let (mut a, mut b, _c, mut seq, now) = three();
    catch_up(&mut a, 0, &mut b, &mut seq, now);
    write(&mut a, put("x"), &mut seq, now);
    assert!(!a.holds_whole_log("b"), "b has not received x yet");
    assert!(
        a.begin_hand_over(2, "b", now + Duration::from_secs(1))
            .is_err(),
        "not epoch 2"
    );
    assert!(
        a.begin_hand_over(1, "z", now + Duration::from_secs(1))
            .is_err(),
        "no such follower"
    );
    a.begin_hand_over(1, "b", now + Duration::from_millis(100))
        .unwrap_or_else(|e| unreachable!("{e}"));
    assert_eq!(a.propose(put("y"), now), Err(WriteRefusal::HandingOver));
    // What was proposed before still reaches the target.
    catch_up(&mut a, 0, &mut b, &mut seq, now);
    assert!(a.holds_whole_log("b"));
    // A hand-over nobody completes expires; one given up ends at once.
    assert!(a
        .propose(put("y"), now + Duration::from_millis(150))
        .is_ok());
    a.begin_hand_over(1, "b", now + Duration::from_secs(5))
        .unwrap_or_else(|e| unreachable!("{e}"));
    a.end_hand_over();
    assert!(a.propose(put("z"), now).is_ok());
}

#[test]
fn a_promotion_asks_for_its_records_first_and_sends_nothing_until_they_are_durable() {
    let now = Instant::now();
    let (mut a, b, c) = (node("a"), node("b"), node("c"));
    let voters = voters_of(&[&a, &b, &c]);
    a.fence(1);
    let mut seq = 0;
    sync(&mut a, &mut seq, now);
    assert!(a.effects().leading.is_none(), "a fenced node does not lead");
    a.promote(1, vec![peer("b"), peer("c")], voters, now)
        .unwrap_or_else(|e| unreachable!("{e:?}"));
    let fx = a.effects();
    assert!(
        fx.persist.iter().any(|r| matches!(r, WalRecord::Meta(_))),
        "the promotion is recorded: {:?}",
        fx.persist
    );
    let work = fx.leading.unwrap_or_else(|| unreachable!("promoted"));
    assert!(
        !work.promotion_durable,
        "nothing is sent before the promotion is durable"
    );
    seq += 1;
    a.note_submitted(seq);
    a.on_durable(seq, now);
    let work = a
        .effects()
        .leading
        .unwrap_or_else(|| unreachable!("still leading"));
    assert!(work.promotion_durable);
    assert!(
        a.effects().persist.is_empty(),
        "effects are handed out once"
    );
}
