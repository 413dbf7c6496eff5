//! The single-leader runtime: owns the replica behind one lock, the WAL handle, the clients
//! waiting for their writes and reads, and the leader's per-follower sender tasks.
//!
//! Does I/O (through the WAL thread and the peer tasks). Every mutation of the replica is
//! followed by `settle`, which persists, applies, answers waiters and wakes senders in one place.

mod admin;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};

use rc_api::{EpochResponse, LogPosition, NodeStatus, Peer, Role, Voter, VoterConfig};

use crate::clock::Instant;
use crate::shutdown::{self, CancellationToken};
use crate::single_leader::kv::Applied;
use crate::single_leader::peer;
use crate::single_leader::replica::{
    leader, AdminRefusal, Replica, ReplicaConfig, SenderWork, WriteRefusal,
};
use crate::stats::Stats;
use crate::storage::wal::{self, FsyncPolicy, Wal, WalError, WalOp};
use crate::storage::Command;

/// Settings of the runtime itself (the replica's are in `ReplicaConfig`).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// The admin token, and TLS for the replication stream.
    pub security: Arc<crate::security::Security>,
    pub heartbeat: Duration,
    pub write_timeout: Duration,
}

/// Why a client write or linearizable read did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpFailure {
    Refused(WriteRefusal),
    /// The node stopped leading before the outcome was known: the write may or may not commit.
    OutcomeUnknown,
    Timeout,
}

/// Why a voter-set change did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VotersFailure {
    Refused(AdminRefusal),
    Op(OpFailure),
}

type WriteWaiter = oneshot::Sender<Result<Applied, OpFailure>>;

struct ReadWaiter {
    round: u64,
    read_index: u64,
    tx: oneshot::Sender<Result<(), OpFailure>>,
}

struct SenderHandle {
    epoch: u64,
    notify: Arc<Notify>,
}

struct Inner {
    replica: Replica,
    wal: Wal,
    writes: BTreeMap<u64, (u64, WriteWaiter)>,
    reads: Vec<ReadWaiter>,
    senders: HashMap<String, SenderHandle>,
    /// What the senders were last woken for.
    announced: SenderWork,
}

pub struct Node {
    pub cfg: RuntimeConfig,
    inner: Mutex<Inner>,
    durable: watch::Sender<u64>,
    pub stats: Stats,
    me: Weak<Node>,
    /// Sender tasks are spawned from the WAL thread too, which is outside the runtime.
    rt: tokio::runtime::Handle,
    /// Stops the replication senders (see [`Node::shut_down`]).
    stop: CancellationToken,
}

impl Node {
    /// Replay the data directory and start the WAL writer. Must run inside a tokio runtime.
    pub fn open(cfg: RuntimeConfig, replica_cfg: ReplicaConfig) -> Result<Arc<Node>, WalError> {
        // The log is replayed as it is read: its records are never all in memory at once.
        let mut replica = Replica::recovering(replica_cfg, wal::open(&cfg.data_dir)?);
        let segment = wal::replay(&cfg.data_dir, &mut |rec| replica.replay(rec))?;
        let replica = replica.finish_recovery();
        tracing::info!(
            epoch = replica.epoch(), last_log = ?replica.last_log(), data_dir = %cfg.data_dir.display(),
            "recovered from disk"
        );
        let (durable, _) = watch::channel(0);
        // The WAL thread reports durability back to the node, which does not exist yet.
        let slot: Arc<OnceLock<Weak<Node>>> = Arc::new(OnceLock::new());
        let on_durable = {
            let slot = slot.clone();
            Box::new(move |seq| {
                if let Some(n) = slot.get().and_then(Weak::upgrade) {
                    n.on_durable(seq);
                }
            })
        };
        let on_snapshot = {
            let slot = slot.clone();
            Box::new(move |at| {
                if let Some(n) = slot.get().and_then(Weak::upgrade) {
                    let covered = n.lock().replica.snapshot_written(at);
                    drop(covered);
                }
            })
        };
        let wal = Wal::start(&cfg.data_dir, segment, cfg.fsync, on_durable, on_snapshot)?;
        let node = Arc::new_cyclic(|me: &Weak<Node>| Node {
            cfg,
            inner: Mutex::new(Inner {
                replica,
                wal,
                writes: BTreeMap::new(),
                reads: Vec::new(),
                senders: HashMap::new(),
                announced: SenderWork::default(),
            }),
            durable,
            stats: Stats::default(),
            me: me.clone(),
            rt: tokio::runtime::Handle::current(),
            stop: CancellationToken::new(),
        });
        let _ = slot.set(Arc::downgrade(&node));
        // Persist what recovery decided (a new data directory's incarnation).
        node.with_replica(|_, _| ());
        Ok(node)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_durable(&self, seq: u64) {
        {
            let mut g = self.lock();
            g.replica.on_durable(seq, Instant::now());
            self.settle(&mut g);
        }
        self.durable.send_replace(seq);
    }

    /// Carry out the replica's effects (see [`Replica::effects`]). Called after every replica
    /// mutation, with the lock held, so WAL order is mutation order.
    fn settle(&self, g: &mut Inner) {
        let effects = g.replica.effects();
        for (index, epoch, outcome) in effects.applied {
            if let Some((want_epoch, tx)) = g.writes.remove(&index) {
                let result = if want_epoch == epoch {
                    Ok(outcome)
                } else {
                    Err(OpFailure::OutcomeUnknown)
                };
                let _ = tx.send(result);
            }
        }
        if !effects.persist.is_empty() {
            let seq = g.wal.submit(WalOp::Append(effects.persist));
            g.replica.note_submitted(seq);
        }
        if let Some(compaction) = effects.compact {
            let seq = g.wal.submit(WalOp::Compact(compaction));
            g.replica.note_submitted(seq);
        }
        match effects.leading {
            Some(work) => self.lead(g, work),
            None => Self::fail_waiters(g),
        }
    }

    /// Leading: keep one sender per follower, answer confirmed reads, wake the senders when
    /// there is something new to send (waking them on every settle would make a sender wake
    /// itself forever).
    fn lead(&self, g: &mut Inner, work: SenderWork) {
        self.sync_senders(g);
        let applied = g.replica.applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut g.reads)
            .into_iter()
            .partition(|r| g.replica.round_confirmed(r.round) && applied >= r.read_index);
        g.reads = waiting;
        for r in ready {
            let _ = r.tx.send(Ok(()));
        }
        if work != g.announced {
            g.announced = work;
            for s in g.senders.values() {
                s.notify.notify_one();
            }
        }
    }

    /// Stepped down (or never led): nobody here can decide the fate of pending writes.
    fn fail_waiters(g: &mut Inner) {
        for (_, (_, tx)) in std::mem::take(&mut g.writes) {
            let _ = tx.send(Err(OpFailure::OutcomeUnknown));
        }
        for r in std::mem::take(&mut g.reads) {
            let _ = r.tx.send(Err(OpFailure::OutcomeUnknown));
        }
        g.senders.clear();
    }

    /// One sender task per follower of the current epoch; tasks of old epochs exit by themselves.
    fn sync_senders(&self, g: &mut Inner) {
        let epoch = g.replica.epoch();
        let peers: Vec<Peer> = g
            .replica
            .followers()
            .iter()
            .map(|f| f.peer.clone())
            .collect();
        g.senders
            .retain(|id, h| h.epoch == epoch && peers.iter().any(|p| &p.id == id));
        for p in peers {
            if g.senders.contains_key(&p.id) {
                continue;
            }
            let notify = Arc::new(Notify::new());
            g.senders.insert(
                p.id.clone(),
                SenderHandle {
                    epoch,
                    notify: notify.clone(),
                },
            );
            if let Some(node) = self.me.upgrade() {
                self.rt.spawn(shutdown::until(
                    self.stop.clone(),
                    peer::run_sender(node, p, epoch, notify),
                ));
            }
        }
    }

    // ---- used by the peer tasks ------------------------------------------------------------

    pub(crate) fn with_replica<T>(&self, f: impl FnOnce(&mut Replica, Instant) -> T) -> T {
        let mut g = self.lock();
        let out = f(&mut g.replica, Instant::now());
        self.settle(&mut g);
        out
    }

    /// Run `f` on the replica, then wait until everything it persisted is durable.
    pub(crate) async fn with_replica_durably<T>(
        &self,
        f: impl FnOnce(&mut Replica, Instant) -> T,
    ) -> T {
        let (out, seq) = {
            let mut g = self.lock();
            let out = f(&mut g.replica, Instant::now());
            self.settle(&mut g);
            (out, g.wal.last_seq())
        };
        let mut rx = self.durable.subscribe();
        let _ = rx.wait_for(|d| *d >= seq).await;
        out
    }

    /// Is a sender for (`peer_id`, `epoch`) still wanted?
    /// Stop every task this node started (its replication senders); the node stops sending
    /// to followers. Called once the server has stopped taking requests.
    pub fn shut_down(&self) {
        self.stop.cancel();
    }

    pub(crate) fn sender_wanted(&self, peer_id: &str, epoch: u64) -> bool {
        self.lock()
            .senders
            .get(peer_id)
            .is_some_and(|h| h.epoch == epoch)
    }

    // ---- client API ------------------------------------------------------------------------

    /// Propose a write on the leader and wait for it to be applied.
    pub async fn write(&self, command: Command) -> Result<(LogPosition, Applied), OpFailure> {
        let (pos, rx) = {
            let mut g = self.lock();
            let pos = g
                .replica
                .propose(command, Instant::now())
                .map_err(OpFailure::Refused)?;
            let (tx, rx) = oneshot::channel();
            g.writes.insert(pos.index, (pos.epoch, tx));
            self.settle(&mut g);
            (pos, rx)
        };
        match tokio::time::timeout(self.cfg.write_timeout, rx).await {
            Ok(Ok(Ok(applied))) => Ok((pos, applied)),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(OpFailure::OutcomeUnknown),
            Err(_) => {
                self.lock().writes.remove(&pos.index);
                Err(OpFailure::Timeout)
            }
        }
    }

    /// Wait until a linearizable read may be served here (read-index with a majority round).
    pub async fn read_barrier(&self) -> Result<(), OpFailure> {
        let rx = {
            let mut g = self.lock();
            let (read_index, round) = g.replica.begin_read().map_err(OpFailure::Refused)?;
            let (tx, rx) = oneshot::channel();
            g.reads.push(ReadWaiter {
                round,
                read_index,
                tx,
            });
            self.settle(&mut g);
            rx
        };
        match tokio::time::timeout(self.cfg.write_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(OpFailure::OutcomeUnknown),
            Err(_) => Err(OpFailure::Timeout),
        }
    }

    /// Read the local state machine (after a barrier, or as a stale read).
    pub fn read<T>(&self, f: impl FnOnce(&crate::single_leader::kv::KvStore) -> T) -> T {
        f(self.lock().replica.kv())
    }

    /// Where writes should go, when this node is not the leader.
    pub fn leader(&self) -> Option<Peer> {
        let g = self.lock();
        g.replica
            .leader()
            .cloned()
            .filter(|l| l.id != g.replica.id())
    }

    /// For a stale read arriving at the leader: a follower whose lag is at most `max_lag`
    /// entries, answering recently, and carrying clearly less load than this leader.
    pub fn offload_target(&self, max_lag: u64) -> Option<Peer> {
        let g = self.lock();
        if g.replica.role() != Role::Leader {
            return None;
        }
        let now = Instant::now();
        let fresh = |t: Instant| now.saturating_duration_since(t) < self.cfg.heartbeat * 5;
        let pick = leader::least_loaded_follower(
            g.replica.followers(),
            g.replica.last_log().index,
            max_lag,
            self.stats.inflight(),
            fresh,
        );
        pick.map(|f| f.peer.clone())
    }
}
