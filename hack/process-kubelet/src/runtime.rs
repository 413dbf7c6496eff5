//! (I/O: processes) One container's life: start a run of it (`start`: image, env, mounts, the
//! sandbox helper), run its probes (`probes`), stop it gracefully, and restart it per
//! `restartPolicy` with the kubelet's exponential back-off.

mod probes;
mod start;

use std::process::ExitStatus;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::kubelet::PodCtx;
use crate::status::{ContainerRt, State, Termination};
use start::{start_process, Started};

/// A container that ran this long has its back-off reset, as in the kubelet.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// How a container task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Exited and will not be restarted (policy); carries the exit code.
    Exited(i32),
    /// Stopped because the pod is being deleted or the kubelet shuts down.
    Stopped,
}

enum Outcome {
    Exited(ExitStatus),
    Stop,
    Killed(String),
}

/// Runs container `idx` (an init container when `init`) until it ends for good or `stop`.
pub async fn run_container(
    cx: Arc<PodCtx>,
    idx: usize,
    init: bool,
    stop: CancellationToken,
) -> Ended {
    let slot = if init { None } else { Some(idx) };
    let mut crashes: u32 = 0;
    loop {
        let Some(container) = container_spec(&cx, idx, init) else {
            return Ended::Stopped;
        };
        let started = match start_process(&cx, &container).await {
            Ok(started) => started,
            Err((reason, e)) => {
                start_failed(&cx, slot, &container.name, reason, &e);
                crashes += 1;
                if sleep_or_stop(backoff(&cx, crashes), &stop).await {
                    return Ended::Stopped;
                }
                continue;
            }
        };
        let (term, ran_since) = supervise(&cx, idx, init, &container, started, &stop).await;
        let code = term.exit_code;
        if stop.is_cancelled() {
            set_terminated(&cx, slot, &term);
            return Ended::Stopped;
        }
        if !restarts(init, &cx.restart_policy(), code) {
            set_terminated(&cx, slot, &term);
            return Ended::Exited(code);
        }
        if ran_since.elapsed() >= BACKOFF_RESET_AFTER {
            crashes = 0;
        }
        crashes += 1;
        let delay = backoff(&cx, crashes);
        if crash_loop_back_off(&cx, slot, &container.name, term, delay, &stop).await {
            return Ended::Stopped;
        }
    }
}

/// The container's spec as the pod has it now.
fn container_spec(cx: &PodCtx, idx: usize, init: bool) -> Option<Container> {
    let pod = cx.pod.borrow();
    let spec = pod.spec.as_ref()?;
    let list = if init {
        spec.init_containers.as_ref()?
    } else {
        &spec.containers
    };
    list.get(idx).cloned()
}

/// The process could not be started: the container waits with `reason`.
fn start_failed(
    cx: &PodCtx,
    slot: Option<usize>,
    container: &str,
    reason: &str,
    e: &anyhow::Error,
) {
    tracing::warn!(pod = %cx.name, %container, error = %format!("{e:#}"), "cannot start container");
    set_state(cx, slot, |c| {
        c.state = State::Waiting {
            reason: reason.into(),
            message: format!("{e:#}"),
        };
    });
}

/// One run of a started process: its log run, state and probes while it runs, then its end (a
/// stop or kill terminates it within the grace period). Also returns when it began running.
async fn supervise(
    cx: &Arc<PodCtx>,
    idx: usize,
    init: bool,
    container: &Container,
    started: Started,
    stop: &CancellationToken,
) -> (Termination, Instant) {
    let Started {
        mut child,
        at: started_at,
        pgid,
        log_start,
    } = started;
    let slot = if init { None } else { Some(idx) };
    let container_id = format!("process://{}/{}", cx.uid, pgid);
    let log_run = cx
        .logs
        .started(&container.name, &container_id, log_start, started_at);
    tokio::spawn(crate::logs::sample(log_run.clone()));
    set_state(cx, slot, |c| {
        c.state = State::Running { started_at };
        c.container_id = Some(container_id.clone());
        c.image_id = format!("process://{}", c.image);
        c.started = container.startup_probe.is_none();
        c.ready = false;
    });
    let probe_stop = stop.child_token();
    let (kill_tx, mut kill_rx) = mpsc::channel::<String>(1);
    if !init {
        tokio::spawn(probes::run(
            cx.clone(),
            idx,
            container.clone(),
            probe_stop.clone(),
            kill_tx,
        ));
    }
    let ran_since = Instant::now();
    let outcome = tokio::select! {
        status = child.wait() => match status {
            Ok(s) => Outcome::Exited(s),
            Err(e) => Outcome::Killed(format!("waiting for the process: {e}")),
        },
        () = stop.cancelled() => Outcome::Stop,
        Some(why) = kill_rx.recv() => Outcome::Killed(why),
    };
    probe_stop.cancel();
    let (status, message) = end_run(cx, &container.name, &mut child, pgid, outcome).await;
    // Whatever the program left behind in its group goes with it.
    let _ = killpg(pgid, Signal::SIGKILL);
    log_run.finish(crate::logs::file_len(&log_run.path), Timestamp::now());
    let term = termination(status, message, started_at, container_id);
    tracing::info!(pod = %cx.name, container = %container.name, exit_code = term.exit_code, "container exited");
    (term, ran_since)
}

/// The run's exit status, and why it was killed; a stop or kill terminates it first.
async fn end_run(
    cx: &PodCtx,
    container: &str,
    child: &mut Child,
    pgid: Pid,
    outcome: Outcome,
) -> (ExitStatus, Option<String>) {
    let grace = || Duration::from_secs(cx.grace_seconds.load(Ordering::Relaxed));
    match outcome {
        Outcome::Exited(s) => (s, None),
        Outcome::Stop => (terminate(child, pgid, grace()).await, None),
        Outcome::Killed(why) => {
            tracing::info!(pod = %cx.name, %container, reason = %why, "killing container");
            (terminate(child, pgid, grace()).await, Some(why))
        }
    }
}

fn termination(
    status: ExitStatus,
    message: Option<String>,
    started_at: Timestamp,
    container_id: String,
) -> Termination {
    let code = status
        .code()
        .unwrap_or_else(|| 128 + signal_of(status).unwrap_or(0));
    Termination {
        exit_code: code,
        signal: signal_of(status),
        reason: if code == 0 { "Completed" } else { "Error" }.into(),
        message,
        started_at,
        finished_at: Timestamp::now(),
        container_id,
    }
}

/// Whether `restartPolicy` runs the container again after it exited with `code` (init
/// containers: only after a failure, unless `Never`).
fn restarts(init: bool, policy: &str, code: i32) -> bool {
    match (init, policy) {
        (true, "Never") => false,
        (true, _) => code != 0,
        (false, "Never") => false,
        (false, "OnFailure") => code != 0,
        (false, _) => true,
    }
}

fn set_terminated(cx: &PodCtx, slot: Option<usize>, term: &Termination) {
    set_state(cx, slot, |c| {
        c.state = State::Terminated(term.clone());
        c.ready = false;
    });
}

/// Reports `CrashLoopBackOff` (with `term` as the last state) for `delay`, then counts the
/// restart; `true` when stopped meanwhile.
async fn crash_loop_back_off(
    cx: &PodCtx,
    slot: Option<usize>,
    container: &str,
    term: Termination,
    delay: Duration,
    stop: &CancellationToken,
) -> bool {
    set_state(cx, slot, |c| {
        c.last = Some(term);
        c.ready = false;
        c.started = false;
        c.state = State::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: format!(
                "back-off {}s restarting failed container={} pod={}",
                delay.as_secs(),
                container,
                cx.name
            ),
        };
    });
    if sleep_or_stop(delay, stop).await {
        return true;
    }
    set_state(cx, slot, |c| c.restart_count += 1);
    false
}

fn signal_of(status: ExitStatus) -> Option<i32> {
    std::os::unix::process::ExitStatusExt::signal(&status)
}

/// base * 2^(crashes-1), capped.
fn backoff(cx: &PodCtx, crashes: u32) -> Duration {
    let k = &cx.kubelet;
    let factor = 1u32
        .checked_shl(crashes.saturating_sub(1).min(16))
        .unwrap_or(u32::MAX);
    k.backoff_base.saturating_mul(factor).min(k.backoff_max)
}

/// Sleeps; `true` when stopped first.
async fn sleep_or_stop(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = stop.cancelled() => true,
    }
}

/// Updates a main container's runtime state (init containers are not reported).
fn set_state(cx: &PodCtx, slot: Option<usize>, f: impl FnOnce(&mut ContainerRt)) {
    let Some(idx) = slot else { return };
    cx.rt
        .send_if_modified(|rt| match rt.containers.get_mut(idx) {
            Some(c) => {
                let before = c.clone();
                f(c);
                *c != before
            }
            None => false,
        });
}

/// SIGTERM to the process group, SIGKILL after the grace period.
async fn terminate(child: &mut Child, pgid: Pid, grace: Duration) -> ExitStatus {
    let _ = killpg(pgid, Signal::SIGTERM);
    if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
        return status;
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    match child.wait().await {
        Ok(s) => s,
        Err(_) => std::os::unix::process::ExitStatusExt::from_raw(9),
    }
}
