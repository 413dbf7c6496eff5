//! Two outboxes per replica, one for writes and one for reads: what this node coordinates
//! queues there and goes out together, one frame on the replica's peer stream (and one group
//! commit there, for writes) per batch instead of one call per operation. While a batch is in
//! flight the next one gathers, so batches grow with the load, as a group commit does. Each
//! operation still hears its own answer: a write `true` once the replica holds it durably, or
//! `false` after a failure, when a hint keeps it for the replica's return; a read the state,
//! or `None`.

use super::*;
use crate::leaderless::peer::Link;

/// Most operations in one batch.
const MAX_BATCH: usize = 256;

/// A write waiting in an outbox, and where its answer goes.
pub(super) struct Queued {
    key: String,
    state: Arc<KeyState>,
    ack: mpsc::Sender<bool>,
}

/// A read waiting in an outbox, and where its answer goes.
pub(super) struct QueuedRead {
    key: String,
    reply: tokio::sync::oneshot::Sender<Option<KeyState>>,
}

/// One kind of outbox, by member id, with the address each one sends to.
pub(crate) struct Outboxes<T>(Mutex<HashMap<String, (String, mpsc::UnboundedSender<T>)>>);

impl<T> Default for Outboxes<T> {
    fn default() -> Self {
        Outboxes(Mutex::new(HashMap::new()))
    }
}

impl<T: Send + 'static> Outboxes<T> {
    /// `member`'s outbox, started with `run` on first use and again when the member's address
    /// changed (the old one ends when its sender is dropped).
    fn sender<F>(
        &self,
        node: &LeaderlessNode,
        member: &Member,
        run: impl FnOnce(Arc<LeaderlessNode>, Member, mpsc::UnboundedReceiver<T>) -> F,
    ) -> Option<mpsc::UnboundedSender<T>>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut boxes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((address, tx)) = boxes.get(&member.id) {
            if *address == member.address && !tx.is_closed() {
                return Some(tx.clone());
            }
        }
        let owner = node.me.upgrade()?;
        let (tx, rx) = mpsc::unbounded_channel();
        boxes.insert(member.id.clone(), (member.address.clone(), tx.clone()));
        super::super::tasks::spawn(node, run(owner, member.clone(), rx));
        Some(tx)
    }
}

impl LeaderlessNode {
    /// Queue `state` of `key` for `member`; `ack` hears whether it got there.
    pub(super) fn queue_for(
        &self,
        member: &Member,
        key: String,
        state: Arc<KeyState>,
        ack: mpsc::Sender<bool>,
    ) {
        let queued = Queued { key, state, ack };
        // None: shutting down, nobody sends any more.
        let Some(outbox) = self.outboxes.sender(self, member, send_writes) else {
            let _ = queued.ack.try_send(false);
            return;
        };
        if let Err(mpsc::error::SendError(queued)) = outbox.send(queued) {
            let _ = queued.ack.try_send(false);
        }
    }

    /// `member`'s state of `key`, through its read outbox; `None` if it did not answer or is
    /// restoring.
    pub(super) async fn read_from(&self, member: &Member, key: &str) -> Option<KeyState> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let outbox = self.read_outboxes.sender(self, member, send_reads)?;
        let queued = QueuedRead {
            key: key.to_owned(),
            reply,
        };
        outbox.send(queued).ok()?;
        answer.await.ok().flatten()
    }
}

/// Send what gathers in `member`'s write outbox, a batch at a time, until the node shuts down
/// (or the outbox is replaced after an address change).
async fn send_writes(
    node: Arc<LeaderlessNode>,
    member: Member,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let mut link = Link::new(member.clone());
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, acks): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|q| ((q.key, q.state), q.ack)).unzip();
        let ok = node.is_alive(&member.id) && link.replicate(&node, &items).await.is_ok();
        if !ok {
            node.set_alive(&member.id, false);
            node.add_hints(&member.id, items).await;
        }
        for ack in acks {
            let _ = ack.send(ok).await;
        }
    }
}

/// Send what gathers in `member`'s read outbox, a batch at a time.
async fn send_reads(
    node: Arc<LeaderlessNode>,
    member: Member,
    mut rx: mpsc::UnboundedReceiver<QueuedRead>,
) {
    let mut link = Link::new(member);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (keys, replies): (Vec<_>, Vec<_>) = batch.drain(..).map(|q| (q.key, q.reply)).unzip();
        let states = link.read(&node, &keys).await.ok().flatten();
        match states {
            Some(states) => {
                for (reply, state) in replies.into_iter().zip(states) {
                    let _ = reply.send(Some(state));
                }
            }
            None => replies.into_iter().for_each(|r| drop(r.send(None))),
        }
    }
}
