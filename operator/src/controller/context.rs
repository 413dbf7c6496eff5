//! The reconciler's shared state ([`Context`]): clients, metrics, the health feed, per-cluster
//! backoff, and the Events it publishes (with one identity per distinct message, so a later
//! message is never hidden behind an aggregated first one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, ResourceExt};
use tracing::warn;

use super::observe::NodeAddressing;
use crate::crd::ReplicatedCluster;
use crate::credentials::AdminTokens;
use crate::executor::Note;
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::node_client::NodeAdmin;

/// Node certificates live 90 days by default.
pub const DEFAULT_CERTIFICATE_LIFETIME: std::time::Duration =
    std::time::Duration::from_secs(90 * 86_400);

/// Shared state of every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub nodes: Arc<dyn NodeAdmin>,
    pub metrics: Arc<Metrics>,
    pub addressing: NodeAddressing,
    /// Single-leader clusters' node health feeds, which wake reconciles (`crate::feed`).
    pub feed: Arc<Feed>,
    /// Consecutive failures per cluster, for backoff. A std Mutex: never held across `.await`.
    failures: Mutex<HashMap<String, u32>>,
    /// Per (object, Event reason): the last note and how many distinct notes came before.
    event_notes: Mutex<HashMap<(String, String), (String, u32)>>,
    /// Per cluster uid: the switchover request seen and when first (ms since the Unix epoch),
    /// for its catch-up bound. In memory: an operator restart starts the bound again.
    switchovers: Mutex<HashMap<String, (String, i64)>>,
    /// Node certificates are issued for this long (renewed with a third left).
    pub certificate_lifetime: std::time::Duration,
    /// Where the operator's own pods run: the clusters' NetworkPolicies admit them (and only
    /// them) to the admin port. `None` (running outside the cluster): no NetworkPolicy.
    pub operator_pods: Option<super::build::OperatorPods>,
    /// Per cluster uid: the tokens last read from its managed admin Secret, so a deleted Secret
    /// is recreated with the tokens the nodes hold (`controller::apply`).
    tokens: Mutex<HashMap<String, AdminTokens>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        nodes: Arc<dyn NodeAdmin>,
        metrics: Arc<Metrics>,
        addressing: NodeAddressing,
    ) -> Self {
        Self {
            client,
            recorder,
            feed: Feed::new(nodes.clone(), metrics.clone()),
            nodes,
            metrics,
            addressing,
            failures: Mutex::default(),
            event_notes: Mutex::default(),
            switchovers: Mutex::default(),
            certificate_lifetime: DEFAULT_CERTIFICATE_LIFETIME,
            operator_pods: None,
            tokens: Mutex::default(),
        }
    }

    /// Remembers what `cluster`'s admin Secret holds.
    pub fn remember_tokens(&self, cluster: &ReplicatedCluster, admin: &AdminTokens) {
        let Some(uid) = cluster.uid() else { return };
        if let Ok(mut tokens) = self.tokens.lock() {
            if tokens.get(&uid) != Some(admin) {
                tokens.insert(uid, admin.clone());
            }
        }
    }

    /// What `cluster`'s admin Secret last held, if this process saw it.
    pub fn remembered_tokens(&self, cluster: &ReplicatedCluster) -> Option<AdminTokens> {
        let uid = cluster.uid()?;
        self.tokens.lock().ok()?.get(&uid).cloned()
    }

    /// Forgets a deleted cluster's token.
    pub fn forget_token(&self, cluster: &ReplicatedCluster) {
        if let (Some(uid), Ok(mut tokens)) = (cluster.uid(), self.tokens.lock()) {
            tokens.remove(&uid);
        }
    }

    /// When the switchover request `value` on `cluster` was first seen (now, if it is new).
    /// `None` (no request on the object) forgets the cluster's entry, so that the same value
    /// asked again later counts its bound afresh.
    pub fn switchover_seen(
        &self,
        cluster: &ReplicatedCluster,
        value: Option<&str>,
        now_ms: i64,
    ) -> Option<i64> {
        let key = cluster.uid().unwrap_or_else(|| cluster.name_any());
        let Ok(mut seen) = self.switchovers.lock() else {
            return value.map(|_| now_ms);
        };
        let Some(value) = value else {
            seen.remove(&key);
            return None;
        };
        match seen.get(&key) {
            Some((v, since)) if v == value => Some(*since),
            _ => {
                seen.insert(key, (value.to_owned(), now_ms));
                Some(now_ms)
            }
        }
    }

    /// The Event `action`, which with the reason is the Event's identity: kube's recorder folds
    /// repeats of one identity into a series that keeps the *first* message, so `kubectl
    /// describe` would show "LeaderPromoted (x4) ... epoch 1" after the fourth promotion. A note
    /// that differs from the previous one under the same reason gets a new identity
    /// (`Reconcile`, `Reconcile-2`, ...); only true repeats are counted as a series.
    fn event_action(&self, reference: &ObjectReference, reason: &str, note: &str) -> String {
        let Ok(mut seen) = self.event_notes.lock() else {
            return "Reconcile".to_owned();
        };
        let key = (
            reference
                .uid
                .clone()
                .or_else(|| reference.name.clone())
                .unwrap_or_default(),
            reason.to_owned(),
        );
        event_identity(&mut seen, key, note)
    }

    pub(super) fn record_outcome(&self, key: &str, failed: bool) -> u32 {
        let Ok(mut failures) = self.failures.lock() else {
            return 1;
        };
        if failed {
            let n = failures.entry(key.to_owned()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            failures.remove(key);
            0
        }
    }

    pub(super) async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.publish_about(reference, None, type_, reason, note)
            .await;
    }

    /// [`Context::publish`] with the pod it concerns as the Event's related object (`kubectl
    /// describe pod` then shows it too).
    pub(super) async fn publish_about(
        &self,
        reference: &ObjectReference,
        pod: Option<&str>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let action = self.event_action(reference, reason, &note);
        let secondary = pod.map(|name| ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(name.to_owned()),
            namespace: reference.namespace.clone(),
            ..ObjectReference::default()
        });
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action,
            secondary,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            warn!(error = %e, reason, "could not publish event");
        }
    }

    /// One Event per note of an executor pass, in order: Warning or Normal as the note says.
    pub(super) async fn publish_notes(&self, reference: &ObjectReference, notes: &[Note]) {
        for note in notes {
            let type_ = if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            };
            self.publish_about(
                reference,
                note.about.as_deref(),
                type_,
                note.reason,
                note.message.clone(),
            )
            .await;
        }
    }
}

/// (pure) See [`Context::event_action`].
fn event_identity(
    seen: &mut HashMap<(String, String), (String, u32)>,
    key: (String, String),
    note: &str,
) -> String {
    // A situation that persists (a blocked failover, a waiting voter change) reports changing
    // figures ("heard from it 130 ms ago") on every pass: the same situation, counted as a
    // series, not a new Event each time. Only its words, not its numbers, make it new.
    let waiting = key.1.ends_with("Blocked") || key.1.ends_with("Waiting");
    let same = |a: &str, b: &str| {
        let words = |s: &str| s.replace(|c: char| c.is_ascii_digit(), "");
        if waiting {
            words(a) == words(b)
        } else {
            a == b
        }
    };
    let entry = seen.entry(key).or_insert_with(|| (note.to_owned(), 1));
    if !same(&entry.0, note) {
        *entry = (note.to_owned(), entry.1 + 1);
    }
    match entry.1 {
        1 => "Reconcile".to_owned(),
        n => format!("Reconcile-{n}"),
    }
}

#[cfg(test)]
#[test]
fn a_new_note_under_one_reason_gets_a_new_event_identity_and_a_repeat_does_not() {
    let mut seen = HashMap::new();
    let key = || ("uid-1".to_owned(), "LeaderPromoted".to_owned());
    let other = ("uid-2".to_owned(), "LeaderPromoted".to_owned());
    assert_eq!(
        event_identity(&mut seen, key(), "orders-0 leads epoch 1"),
        "Reconcile"
    );
    assert_eq!(
        event_identity(&mut seen, key(), "orders-0 leads epoch 1"),
        "Reconcile"
    );
    assert_eq!(
        event_identity(&mut seen, key(), "orders-1 leads epoch 2"),
        "Reconcile-2"
    );
    assert_eq!(
        event_identity(&mut seen, key(), "orders-0 leads epoch 3"),
        "Reconcile-3"
    );
    assert_eq!(
        event_identity(&mut seen, other, "orders-0 leads epoch 1"),
        "Reconcile"
    );
    let blocked = || ("uid-1".to_owned(), "FailoverBlocked".to_owned());
    let note =
        |ms: u32| format!("leader orders-0 seems down but orders-2 heard from it {ms} ms ago");
    assert_eq!(
        event_identity(&mut seen, blocked(), &note(100)),
        "Reconcile"
    );
    assert_eq!(
        event_identity(&mut seen, blocked(), &note(130)),
        "Reconcile"
    );
    assert_eq!(
        event_identity(
            &mut seen,
            blocked(),
            "leader orders-0 is lost but only 1 of 3 voters answer"
        ),
        "Reconcile-2"
    );
}
