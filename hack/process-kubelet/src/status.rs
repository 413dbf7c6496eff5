//! (pure) What the kubelet knows about a pod's processes, and the `Pod.status` it reports from
//! that (phase, IPs, conditions, containerStatuses), as the real kubelet reports them (the
//! kubelet's status manager): `lastTransitionTime` of a condition changes only when its status
//! flips ([`Transitions`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// One container's process as the kubelet tracks it.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting { reason: String, message: String },
    Running { started_at: Timestamp },
    Terminated(Termination),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Termination {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub container_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerRt {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
    pub state: State,
    pub last: Option<Termination>,
    pub restart_count: i32,
    pub started: bool,
    pub ready: bool,
}

impl ContainerRt {
    pub fn new(name: &str, image: &str) -> Self {
        ContainerRt {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: String::new(),
            container_id: None,
            state: State::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            last: None,
            restart_count: 0,
            started: false,
            ready: false,
        }
    }

    /// Has a process been started for it at least once?
    fn ever_started(&self) -> bool {
        self.restart_count > 0
            || self.last.is_some()
            || matches!(self.state, State::Running { .. } | State::Terminated(_))
    }
}

/// Terminal phases; never left once reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PodRt {
    pub pod_ip: Option<String>,
    pub host_ip: String,
    pub start_time: Timestamp,
    pub sandbox_ready: bool,
    pub containers: Vec<ContainerRt>,
    pub terminal: Option<Terminal>,
}

impl PodRt {
    pub fn phase(&self) -> &'static str {
        match self.terminal {
            Some(Terminal::Succeeded) => "Succeeded",
            Some(Terminal::Failed) => "Failed",
            None if !self.containers.is_empty()
                && self.containers.iter().all(ContainerRt::ever_started) =>
            {
                "Running"
            }
            None => "Pending",
        }
    }

    fn all_ready(&self) -> bool {
        self.terminal.is_none() && self.containers.iter().all(|c| c.ready)
    }
}

/// Condition type -> (status, lastTransitionTime) of the last report.
#[derive(Debug, Default)]
pub struct Transitions(BTreeMap<&'static str, (bool, Timestamp)>);

impl Transitions {
    fn condition(&mut self, type_: &'static str, value: bool, now: Timestamp) -> PodCondition {
        let entry = self.0.entry(type_).or_insert((value, now));
        if entry.0 != value {
            *entry = (value, now);
        }
        let (reason, message) = match (type_, value) {
            ("ContainersReady" | "Ready", false) => (
                Some("ContainersNotReady".to_owned()),
                Some("containers with unready status".to_owned()),
            ),
            ("Ready" | "ContainersReady", true) => (None, None),
            ("PodReadyToStartContainers" | "Initialized", _) => (None, None),
            _ => (None, None),
        };
        PodCondition {
            type_: type_.to_owned(),
            status: if value { "True" } else { "False" }.to_owned(),
            last_transition_time: Some(Time(entry.1)),
            reason,
            message,
            ..PodCondition::default()
        }
    }
}

pub fn build_status(rt: &PodRt, transitions: &mut Transitions, now: Timestamp) -> PodStatus {
    let ready = rt.all_ready();
    let conditions = vec![
        transitions.condition("PodReadyToStartContainers", rt.sandbox_ready, now),
        transitions.condition("Initialized", true, now),
        transitions.condition("ContainersReady", ready, now),
        transitions.condition("Ready", ready, now),
    ];
    PodStatus {
        phase: Some(rt.phase().to_owned()),
        host_ip: Some(rt.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: rt.host_ip.clone(),
        }]),
        pod_ip: rt.pod_ip.clone(),
        pod_ips: rt.pod_ip.clone().map(|ip| vec![PodIP { ip }]),
        start_time: Some(Time(rt.start_time)),
        conditions: Some(conditions),
        container_statuses: Some(rt.containers.iter().map(container_status).collect()),
        ..PodStatus::default()
    }
}

fn container_status(c: &ContainerRt) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        state: Some(state(&c.state)),
        last_state: Some(
            c.last
                .as_ref()
                .map(|t| state(&State::Terminated(t.clone())))
                .unwrap_or_default(),
        ),
        ..ContainerStatus::default()
    }
}

fn state(s: &State) -> ContainerState {
    match s {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: Some(message.clone()).filter(|m| !m.is_empty()),
            }),
            ..ContainerState::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..ContainerState::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                signal: t.signal,
                reason: Some(t.reason.clone()),
                message: t.message.clone(),
                started_at: Some(Time(t.started_at)),
                finished_at: Some(Time(t.finished_at)),
                container_id: Some(t.container_id.clone()),
            }),
            ..ContainerState::default()
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn rt() -> PodRt {
        PodRt {
            pod_ip: Some("10.241.0.2".into()),
            host_ip: "10.241.0.1".into(),
            start_time: Timestamp::UNIX_EPOCH,
            sandbox_ready: true,
            containers: vec![ContainerRt::new("node", "img:1")],
            terminal: None,
        }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn pending_until_started_then_ready_follows_the_probe() {
        let mut t = Transitions::default();
        let t0 = Timestamp::from_second(100).unwrap();
        let mut pod = rt();
        let s = build_status(&pod, &mut t, t0);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.241.0.2");
        assert_eq!(cond(&s, "Ready").status, "False");

        pod.containers[0].state = State::Running { started_at: t0 };
        pod.containers[0].started = true;
        let t1 = Timestamp::from_second(200).unwrap();
        let s = build_status(&pod, &mut t, t1);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        // Still not ready: the transition time is the first report's.
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(Time(t0)));

        pod.containers[0].ready = true;
        let t2 = Timestamp::from_second(300).unwrap();
        let s = build_status(&pod, &mut t, t2);
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Ready").last_transition_time, Some(Time(t2)));
        assert_eq!(cond(&s, "Initialized").last_transition_time, Some(Time(t0)));
    }

    #[test]
    fn a_restarting_container_keeps_the_pod_running_and_reports_its_last_exit() {
        let mut pod = rt();
        let t0 = Timestamp::from_second(100).unwrap();
        pod.containers[0].restart_count = 1;
        pod.containers[0].state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: "back-off 10s".into(),
        };
        pod.containers[0].last = Some(Termination {
            exit_code: 1,
            signal: None,
            reason: "Error".into(),
            message: None,
            started_at: t0,
            finished_at: t0,
            container_id: "process://1".into(),
        });
        let s = build_status(&pod, &mut Transitions::default(), t0);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 1);
        assert_eq!(
            cs.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
        pod.terminal = Some(Terminal::Failed);
        assert_eq!(
            build_status(&pod, &mut Transitions::default(), t0)
                .phase
                .as_deref(),
            Some("Failed")
        );
    }
}
