//! SIGTERM (Kubernetes stopping a pod, `docker compose stop`, systemd) and SIGINT (Ctrl-C) mean
//! the same to every command: stop cleanly. Both are caught from the moment
//! [`stop_requested`] is called, so that a signal that comes while a cycle runs is kept and
//! acted on when the cycle ends: never lost, and never the default handler's death (status 143
//! or 130, no closing words).

use tokio::sync::watch;

/// Turns `true` at the first SIGTERM or SIGINT. Call it inside the runtime, before anything that
/// may take long.
pub fn stop_requested() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::spawn(async move {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                    let _ = tx.send(true);
                });
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot catch SIGTERM and SIGINT: they end the process");
                // Keep the sender: the receivers wait for ever instead of seeing it gone.
                tokio::spawn(async move {
                    std::future::pending::<()>().await;
                    drop(tx);
                });
            }
        }
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = tx.send(true);
        } else {
            std::future::pending::<()>().await;
        }
    });
    rx
}

/// Resolves once `stop` has turned `true` (at once if it has).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}
