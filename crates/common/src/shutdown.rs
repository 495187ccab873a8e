//! Shutdown: tokio-util's [`CancellationToken`] is the signal (clones share it, child tokens
//! follow their parent but can fire alone); this module adds the process's signal handler and
//! the bounded drain every server ends with.

use std::{future::Future, time::Duration};

pub use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on SIGTERM or SIGINT (Ctrl-C). Call once per process, inside the runtime.
pub fn cancel_on_signals(shutdown: &CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown signal received");
        shutdown.cancel();
    });
    Ok(())
}

/// Runs `work` to its end, but once `shutdown` has fired for at most `grace` more: what is
/// still in flight then is abandoned (`None`) with a warning naming it (`what`).
pub async fn drain_within_grace<F: Future>(
    work: F,
    shutdown: &CancellationToken,
    grace: Duration,
    what: &str,
) -> Option<F::Output> {
    tokio::select! {
        output = work => Some(output),
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "{what} outlived the shutdown grace; stopping anyway"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_ends_in_time_keeps_its_output() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let out = drain_within_grace(async { 7 }, &shutdown, Duration::from_secs(5), "work").await;
        assert_eq!(out, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn work_is_cut_off_a_grace_after_shutdown_and_not_before() {
        let shutdown = CancellationToken::new();
        let never = std::future::pending::<()>();
        let drained = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { drain_within_grace(never, &shutdown, Duration::from_secs(30), "work").await }
        });
        // Without a shutdown, no amount of time cuts the work off.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!drained.is_finished());
        shutdown.cancel();
        assert_eq!(drained.await.unwrap(), None);
    }
}
