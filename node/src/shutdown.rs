//! Stopping a node's tasks. Each node owns one token; every long-lived task it starts (the
//! single-leader replication senders, the leaderless background loops and decommissions) runs
//! under it, so cancelling the token stops them all, and a dropped node leaves nothing running.

use std::future::Future;

pub use tokio_util::sync::CancellationToken;

/// Run `task` until it finishes or `token` is cancelled, whichever comes first.
pub async fn until(token: CancellationToken, task: impl Future<Output = ()>) {
    tokio::select! {
        biased;
        () = token.cancelled() => {}
        () = task => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_cancelled_token_stops_a_task_that_would_run_forever() {
        let token = CancellationToken::new();
        let task = tokio::spawn(until(token.clone(), std::future::pending()));
        token.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(stopped, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn a_task_that_ends_by_itself_needs_no_cancel() {
        let finished = tokio::time::timeout(
            Duration::from_secs(5),
            until(CancellationToken::new(), async {}),
        )
        .await;
        assert!(finished.is_ok());
    }
}
