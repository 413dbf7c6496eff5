//! The leaderless runtime: the local store, quorum coordination of reads and writes, ring
//! installation and the durable log behind them. Background work (failure detection, hinted
//! handoff, anti-entropy, streaming) is in `tasks`, HTTP in `http`.
//!
//! Does I/O: disk through the WAL thread, peers through the binary peer stream (`peer.rs`) and
//! a few internal HTTP calls (bearer token).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod coordinator;
mod durability;
mod outbox;
mod status;
mod view;

pub(crate) use view::ReadView;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use rc_api::{
    LeaderlessStatus, LogPosition, Member, MemberState, MemberView, ModeStatus, NodeStatus, Peer,
    Ring, StreamState,
};

use super::dvv::{Clock, ConflictResolution, KeyState};
use super::hlc::Hlc;
use super::ring::{self, Layout, RingError};
use crate::shutdown::CancellationToken;
use crate::stats::Stats;
use crate::storage::snapshot::SnapshotSource;
use crate::storage::wal::{self, Compaction, FsyncPolicy, Wal, WalError, WalOp};
use crate::storage::{Hint, WalRecord};

#[derive(Debug, Clone)]
pub struct LeaderlessConfig {
    pub id: String,
    pub address: String,
    pub n: usize,
    pub w: usize,
    pub r: usize,
    pub conflict: ConflictResolution,
    /// The admin token peers send, and TLS for calls to them.
    pub security: Arc<crate::security::Security>,
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub hint_limit: usize,
    pub anti_entropy_every: Duration,
    pub tombstone_grace: Duration,
    pub request_timeout: Duration,
    /// Peers to ask for the ring when this node has none (e.g. after losing its disk).
    pub seeds: Vec<Peer>,
    /// Key states written between snapshots; `None`: as many as the store holds (at least
    /// 100,000).
    pub compact_every: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderlessError {
    #[error("no ring installed yet: the operator has not pushed membership to this node")]
    NoRing,
    #[error("only {acks} of the required {need} owners acknowledged the write (it may still be applied on some of them)")]
    WriteQuorum { acks: usize, need: usize },
    #[error("only {got} of the required {need} owners answered the read")]
    ReadQuorum { got: usize, need: usize },
    #[error("no owner of this key is reachable")]
    NoOwner,
    #[error("forwarding to owner {0} failed: {1}")]
    Forward(String, String),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("{0}")]
    Invalid(String),
}

/// What a remote owner answers to `/internal/v1/put` and what a coordinator reports.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PutOutcome {
    pub acks: usize,
    pub w: usize,
}

/// Every key's merged state. Persistent (structurally shared): a snapshot is an O(1) clone.
/// States are behind an `Arc`: while a snapshot shares the map, the first write to a node of
/// it copies that node's entries (up to 64), and those copies are then counter increments,
/// not whole key states with their clocks and values.
pub(crate) type Store = imbl::OrdMap<String, Arc<KeyState>>;
/// Writes held for members that were down, by id.
pub(crate) type Hints = imbl::OrdMap<u64, Hint>;

/// The keys a hint waits for: one pass over the hints, then a lookup per key (the hints run
/// to the hint limit, 100,000, while a member is down).
pub(crate) fn hinted_keys(hints: &Hints) -> std::collections::HashSet<&str> {
    hints.values().map(|h| h.key.as_str()).collect()
}

pub(crate) struct Inner {
    pub store: Store,
    pub ring: Option<Ring>,
    /// Shared: every request takes the layout without copying its token tables; a ring change
    /// swaps in a new one.
    pub layout: Arc<Layout>,
    pub hints: Hints,
    next_hint: u64,
    pub hlc: Hlc,
    /// Counter of the last dot this incarnation issued, for any key (dots are never reused).
    pub dots_issued: u64,
    pub stream: StreamState,
    pub keys_streamed: u64,
    pub ae_rounds: u64,
    pub keys_repaired: u64,
    /// This node lost (or never had) its data while the ring may name it an owner: it answers
    /// no reads until it has streamed its ranges back (see `RESTORE_MARKER`).
    pub restoring: bool,
    /// When the current ring replaced an older one: writes this process coordinated under
    /// that one may be in flight for up to a request timeout after it. `None`: none can be.
    pub ring_installed: Option<std::time::Instant>,
    wal: Wal,
    /// Key states written since the last snapshot, and how many start the next one.
    since_compaction: u64,
    compact_after: u64,
}

/// Most keys, and about the most bytes, per page of streaming, anti-entropy or cleanup: every
/// exchange stays small whatever the data size.
pub const PAGE_KEYS: usize = 1000;
pub const PAGE_BYTES: usize = 4 << 20;

pub struct LeaderlessNode {
    pub cfg: LeaderlessConfig,
    inner: Mutex<Inner>,
    /// Last failure-detector verdict per member id (absent = not probed yet = assumed up).
    alive: Mutex<HashMap<String, bool>>,
    /// Probe results turned into verdicts (misses in a row, indirect probes).
    pub(crate) detector: Mutex<super::failure_detector::Detector>,
    durable: watch::Sender<u64>,
    pub http: reqwest::Client,
    pub stats: Stats,
    pub(crate) me: Weak<LeaderlessNode>,
    /// The dot actor of this process run: the node id and a random incarnation. A restarted or
    /// wiped node is a new actor, so it can never issue a dot an earlier run issued.
    pub actor: String,
    /// Stops the background loops (see [`LeaderlessNode::shut_down`]).
    pub(crate) stop: CancellationToken,
    /// Writes and reads on their way to each replica, batched.
    outboxes: outbox::Outboxes<outbox::Queued>,
    read_outboxes: outbox::Outboxes<outbox::QueuedRead>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LeaderlessNode {
    pub fn open(cfg: LeaderlessConfig) -> anyhow::Result<Arc<LeaderlessNode>> {
        let recovered = durability::recover(&cfg)?;
        let layout = Arc::new(
            recovered
                .ring
                .as_ref()
                .map(|r| Layout::new(r, cfg.n))
                .unwrap_or_default(),
        );
        let (durable, _) = watch::channel(0);
        let slot: Arc<OnceLock<watch::Sender<u64>>> = Arc::new(OnceLock::new());
        let _ = slot.set(durable.clone());
        let on_durable = Box::new(move |seq| {
            if let Some(tx) = slot.get() {
                tx.send_replace(seq);
            }
        });
        // Nothing waits for a leaderless snapshot: its log has no base to move.
        let wal = Wal::start(
            &cfg.data_dir,
            recovered.segment,
            cfg.fsync,
            on_durable,
            Box::new(|_| ()),
        )?;
        let http = cfg.security.http_client(
            reqwest::Client::builder()
                .timeout(cfg.request_timeout)
                .connect_timeout(Duration::from_millis(500)),
        )?;
        let compact_after = durability::next_compaction(&cfg, recovered.store.len());
        let node = Arc::new_cyclic(|me| LeaderlessNode {
            inner: Mutex::new(Inner {
                store: recovered.store,
                ring: recovered.ring,
                layout,
                hints: recovered.hints,
                next_hint: recovered.next_hint,
                hlc: recovered.hlc,
                dots_issued: 0,
                stream: StreamState::Idle,
                keys_streamed: 0,
                ae_rounds: 0,
                keys_repaired: 0,
                restoring: recovered.restoring,
                ring_installed: None,
                wal,
                since_compaction: recovered.replayed,
                compact_after,
            }),
            alive: Mutex::new(HashMap::new()),
            detector: Mutex::new(super::failure_detector::Detector::default()),
            durable,
            http,
            stats: Stats::default(),
            me: me.clone(),
            actor: format!("{}~{:016x}", cfg.id, crate::random::random_seed()),
            stop: CancellationToken::new(),
            outboxes: outbox::Outboxes::default(),
            read_outboxes: outbox::Outboxes::default(),
            cfg,
        });
        super::tasks::spawn_all(&node);
        Ok(node)
    }

    /// Stop the background loops (gossip, hints, anti-entropy, streaming) and any decommission
    /// in progress. Called once the server has stopped taking requests.
    pub fn shut_down(&self) {
        self.stop.cancel();
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_alive(&self, id: &str) -> bool {
        id == self.cfg.id
            || self
                .alive
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .copied()
                .unwrap_or(true)
    }

    pub(crate) fn set_alive(&self, id: &str, up: bool) {
        let before = self
            .alive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), up);
        if before != Some(up) && before.is_some() {
            tracing::info!(member = id, up, "failure detector changed its verdict");
        }
    }

    /// Merge `incoming` into the local state of `key` durably; returns the merged state and
    /// whether anything changed.
    pub async fn apply_local(&self, items: Vec<(String, Arc<KeyState>)>) -> usize {
        let (changed, seq) = {
            let mut g = self.lock();
            let mut records = Vec::new();
            for (key, incoming) in items {
                g.hlc.observe(incoming.max_ts());
                let empty = KeyState::default();
                let current = g.store.get(&key).map_or(&empty, |s| &**s);
                let merged = current.merge(&incoming, self.cfg.conflict);
                if merged != *current {
                    let merged = Arc::new(merged);
                    g.store.insert(key.clone(), Arc::clone(&merged));
                    records.push(WalRecord::KeyState { key, state: merged });
                }
            }
            let changed = records.len();
            // Nothing new: an identical state may still be on its way to the disk (submitted by
            // an earlier call); answer only once everything submitted so far is durable.
            let seq = if changed > 0 {
                self.persist(&mut g, records)
            } else {
                g.wal.last_seq()
            };
            (changed, seq)
        };
        self.wait_durable(seq).await;
        changed
    }

    /// A POST of `body` (JSON) to `path` on the peer surface of the member known as `address`,
    /// with the admin token; more settings (a timeout) may follow.
    pub(crate) fn internal_post(
        &self,
        address: &str,
        path: &str,
        body: &impl Serialize,
    ) -> reqwest::RequestBuilder {
        self.http
            .post(self.cfg.security.url(address, path))
            .bearer_auth(self.cfg.security.token())
            .json(body)
    }

    /// [`Self::internal_post`] sent, and its JSON answer; `None` on any failure or error status.
    pub(crate) async fn internal_call<T: serde::de::DeserializeOwned>(
        &self,
        address: &str,
        path: &str,
        body: &impl Serialize,
    ) -> Option<T> {
        let resp = self.internal_post(address, path, body).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    pub fn local_state(&self, key: &str) -> Option<KeyState> {
        self.lock().store.get(key).map(|s| KeyState::clone(s))
    }

    /// The local state of each key (empty when absent), under one lock; `None` while this node
    /// is restoring (its data is incomplete and must not count as an owner's answer).
    pub fn local_states(&self, keys: &[String]) -> Option<Vec<KeyState>> {
        let g = self.lock();
        if g.restoring {
            return None;
        }
        Some(
            keys.iter()
                .map(|k| {
                    g.store
                        .get(k)
                        .map(|s| KeyState::clone(s))
                        .unwrap_or_default()
                })
                .collect(),
        )
    }

    fn layout(&self) -> Result<Arc<Layout>, LeaderlessError> {
        let g = self.lock();
        if g.ring.is_none() {
            return Err(LeaderlessError::NoRing);
        }
        Ok(g.layout.clone())
    }

    /// `PUT /admin/ring`: validate, then install if newer. `Ok(false)` = already installed.
    pub async fn install_ring(&self, ring: Ring) -> Result<bool, LeaderlessError> {
        ring::validate(&ring, self.cfg.n)?;
        let seq = {
            let mut g = self.lock();
            if !ring::check_upgrade(g.ring.as_ref(), &ring)? {
                return Ok(false);
            }
            tracing::info!(
                from = g.ring.as_ref().map(|r| r.version),
                to = ring.version,
                members = ring.members.len(),
                "installed a new ring"
            );
            // Named `joining` by a ring that did not already have it joining (a new member, or
            // one added back after a decommission): stream its ranges in anew.
            let joining = |r: Option<&Ring>| {
                r.into_iter()
                    .flat_map(|r| r.members.iter())
                    .any(|m| m.id == self.cfg.id && m.state == MemberState::Joining)
            };
            if joining(Some(&ring)) && !joining(g.ring.as_ref()) && g.stream != StreamState::Idle {
                tracing::info!(was = ?g.stream, "joining again: streaming this node's ranges in anew");
                g.stream = StreamState::Idle;
            }
            if g.ring.is_some() {
                g.ring_installed = Some(std::time::Instant::now());
            }
            g.layout = Arc::new(Layout::new(&ring, self.cfg.n));
            g.ring = Some(ring.clone());
            self.persist(&mut g, vec![WalRecord::Ring(ring)])
        };
        self.wait_durable(seq).await;
        Ok(true)
    }

    pub fn ring(&self) -> Option<Ring> {
        self.lock().ring.clone()
    }

    pub fn my_state(&self) -> Option<MemberState> {
        self.lock()
            .ring
            .as_ref()?
            .members
            .iter()
            .find(|m| m.id == self.cfg.id)
            .map(|m| m.state)
    }

    /// Local keys starting with `prefix`, in order, at most `limit`.
    pub fn scan_local(&self, prefix: &str, limit: usize) -> Vec<(String, Arc<KeyState>)> {
        let g = self.lock();
        g.store
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, s)| (k.clone(), Arc::clone(s)))
            .collect()
    }

    /// Keys (with the digest of the state a purge would drop) whose local state is that one,
    /// or absent, and that have no hint queued here; with `purge`, drop them, durably: each
    /// drop is a log record (`KeyRemoved`), so a restart does not bring the key back.
    pub(crate) async fn purge_agreed(&self, keys: &[(String, u64)], purge: bool) -> Vec<String> {
        let (agreed, seq) = {
            let mut g = self.lock();
            // One pass over the hints per page, not one per key: this holds the node lock.
            let hinted = hinted_keys(&g.hints);
            let agreed: Vec<String> = keys
                .iter()
                .filter(|(k, d)| g.store.get(k).is_none_or(|s| s.digest(k) == *d))
                .filter(|(k, _)| !hinted.contains(k.as_str()))
                .map(|(k, _)| k.clone())
                .collect();
            drop(hinted);
            let removed: Vec<WalRecord> = match purge {
                true => agreed
                    .iter()
                    .filter(|k| g.store.remove(*k).is_some())
                    .map(|key| WalRecord::KeyRemoved { key: key.clone() })
                    .collect(),
                false => Vec::new(),
            };
            let seq = (!removed.is_empty()).then(|| self.persist(&mut g, removed));
            (agreed, seq)
        };
        if let Some(seq) = seq {
            self.wait_durable(seq).await;
        }
        agreed
    }

    /// How long until writes this node coordinated under an older ring have all finished (each
    /// is bounded by the request timeout), or `None` if they have. Ranges are streamed in and
    /// handed over only after that, so no such write misses a range's new owner.
    pub fn ring_settles_in(&self) -> Option<Duration> {
        let since = self.lock().ring_installed?.elapsed();
        self.cfg
            .request_timeout
            .checked_sub(since)
            .filter(|d| !d.is_zero())
    }

    pub(crate) fn set_stream(&self, state: StreamState, streamed: u64) {
        let mut g = self.lock();
        g.stream = state;
        g.keys_streamed += streamed;
    }
}

/// Body of `/internal/v1/put`: a client write forwarded to an owner.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedPut {
    pub key: String,
    pub value: Option<String>,
    pub context: Clock,
    pub w: usize,
}
