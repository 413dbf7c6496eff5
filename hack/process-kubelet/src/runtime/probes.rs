//! (I/O: probe attempts) A running main container's probes, as the kubelet runs them: the
//! startup probe first (it gates the others), then readiness and liveness side by side, each at
//! its period and thresholds. Readiness sets the container's `ready`; a failed startup or
//! liveness probe asks for the container to be killed. One attempt is `crate::probe::check`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Probe};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::set_state;
use crate::kubelet::PodCtx;
use crate::probe;

/// Runs container `idx`'s probes until `stop`; a kill request (why) goes to `kill`.
pub async fn run(
    cx: Arc<PodCtx>,
    idx: usize,
    container: Container,
    stop: CancellationToken,
    kill: mpsc::Sender<String>,
) {
    let ip = cx.net.ip.to_string();
    let work = async {
        if let Some(p) = &container.startup_probe {
            if let Err(e) = startup(p, &container, &ip).await {
                let _ = kill.send(format!("Startup probe failed: {e}")).await;
                return;
            }
            set_state(&cx, Some(idx), |c| c.started = true);
        }
        tokio::join!(
            readiness(&cx, idx, &container, &ip),
            liveness(&container, &ip, &kill)
        );
    };
    tokio::select! {
        () = work => {}
        () = stop.cancelled() => {}
    }
}

/// Until the startup probe succeeds, or its last error after `failureThreshold` failures.
async fn startup(p: &Probe, container: &Container, ip: &str) -> Result<(), String> {
    let t = probe::timing(p);
    tokio::time::sleep(t.initial_delay).await;
    let mut failures = 0;
    loop {
        match probe::check(p, container, ip).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                failures += 1;
                if failures >= t.failure_threshold {
                    return Err(e);
                }
            }
        }
        tokio::time::sleep(t.period).await;
    }
}

/// Ready after `successThreshold` successes in a row, not ready after `failureThreshold`
/// failures in a row; without a readiness probe, ready at once.
async fn readiness(cx: &PodCtx, idx: usize, container: &Container, ip: &str) {
    let Some(p) = &container.readiness_probe else {
        set_state(cx, Some(idx), |c| c.ready = true);
        return;
    };
    let t = probe::timing(p);
    tokio::time::sleep(t.initial_delay).await;
    let (mut ok, mut bad) = (0u32, 0u32);
    loop {
        match probe::check(p, container, ip).await {
            Ok(()) => {
                ok += 1;
                bad = 0;
                if ok >= t.success_threshold {
                    set_state(cx, Some(idx), |c| c.ready = true);
                }
            }
            Err(e) => {
                bad += 1;
                ok = 0;
                if bad >= t.failure_threshold {
                    tracing::debug!(pod = %cx.name, error = %e, "readiness probe failed");
                    set_state(cx, Some(idx), |c| c.ready = false);
                }
            }
        }
        tokio::time::sleep(t.period).await;
    }
}

/// Asks for a kill after `failureThreshold` liveness failures in a row.
async fn liveness(container: &Container, ip: &str, kill: &mpsc::Sender<String>) {
    let Some(p) = &container.liveness_probe else {
        return;
    };
    let t = probe::timing(p);
    tokio::time::sleep(t.initial_delay).await;
    let mut bad = 0u32;
    loop {
        tokio::time::sleep(t.period).await;
        match probe::check(p, container, ip).await {
            Ok(()) => bad = 0,
            Err(e) => {
                bad += 1;
                if bad >= t.failure_threshold {
                    let _ = kill.send(format!("Liveness probe failed: {e}")).await;
                    return;
                }
            }
        }
    }
}
