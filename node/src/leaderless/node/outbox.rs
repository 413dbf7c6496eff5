//! One outbox per replica: the writes this node coordinates queue there and go out together,
//! one request (and one group commit on the replica) per batch instead of one per write. While
//! a batch is in flight the next one gathers, so batches grow with the load, as a group commit
//! does. Each write still hears its own answer: `true` once the replica holds it durably, or
//! `false` after a failure, when a hint keeps it for the replica's return.

use super::*;

/// Most writes in one batch.
const MAX_BATCH: usize = 256;

/// A write waiting in an outbox, and where its answer goes.
pub(super) struct Queued {
    key: String,
    state: KeyState,
    ack: mpsc::Sender<bool>,
}

/// The outboxes, by member id, with the address each one sends to.
#[derive(Default)]
pub(crate) struct Outboxes(Mutex<HashMap<String, (String, mpsc::UnboundedSender<Queued>)>>);

impl LeaderlessNode {
    /// Queue `state` of `key` for `member`; `ack` hears whether it got there.
    pub(super) fn queue_for(
        &self,
        member: &Member,
        key: String,
        state: KeyState,
        ack: mpsc::Sender<bool>,
    ) {
        let queued = Queued { key, state, ack };
        let Some(outbox) = self.outbox(member) else {
            // Shutting down: nobody sends any more.
            let _ = queued.ack.try_send(false);
            return;
        };
        if let Err(mpsc::error::SendError(queued)) = outbox.send(queued) {
            let _ = queued.ack.try_send(false);
        }
    }

    /// `member`'s outbox, started on first use and again when the member's address changed.
    fn outbox(&self, member: &Member) -> Option<mpsc::UnboundedSender<Queued>> {
        let mut boxes = self.outboxes.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((address, tx)) = boxes.get(&member.id) {
            if *address == member.address && !tx.is_closed() {
                return Some(tx.clone());
            }
        }
        let node = self.me.upgrade()?;
        let (tx, rx) = mpsc::unbounded_channel();
        boxes.insert(member.id.clone(), (member.address.clone(), tx.clone()));
        super::super::tasks::spawn(self, send_batches(node, member.clone(), rx));
        Some(tx)
    }
}

/// Send what gathers in `member`'s outbox, a batch at a time, until the node shuts down (or
/// the outbox is replaced after an address change).
async fn send_batches(
    node: Arc<LeaderlessNode>,
    member: Member,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, acks): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|q| ((q.key, q.state), q.ack)).unzip();
        let ok = node.is_alive(&member.id) && node.send_state_slice(&member, &items).await;
        if !ok {
            node.add_hints(&member.id, items).await;
        }
        for ack in acks {
            let _ = ack.send(ok).await;
        }
    }
}
