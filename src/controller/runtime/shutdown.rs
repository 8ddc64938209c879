//! Stopping within a bound, whatever the watches, the databases or the API server are doing.
//!
//! On SIGTERM (or Ctrl-C) the controller takes no new work; the reconciles already running get
//! up to [`RECONCILE_GRACE`] to finish (none running: it goes on at once), and whatever still runs
//! then (a reconcile waiting on a database or an API call that does not answer) is abandoned.
//! Then the database connections close, the lease is released if it can be within
//! [`RELEASE_TIMEOUT`] (else a standby takes over once it runs out), and the HTTP server gets
//! [`HTTP_TIMEOUT`]. The process has ended [`SHUTDOWN_BOUND`] after the signal at the latest,
//! well inside the chart's `terminationGracePeriodSeconds` (30 s), with status 0.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How long running reconciles may take to finish after the signal.
pub const RECONCILE_GRACE: Duration = Duration::from_secs(10);
/// How long releasing the lease may take.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the HTTP server may take to close its connections.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(1);
/// How long the runtime waits for its blocking threads (a DNS lookup) as the process exits.
pub const RUNTIME_TIMEOUT: Duration = Duration::from_secs(1);
/// The most a shutdown takes, from the signal to the end of the process.
pub const SHUTDOWN_BOUND: Duration = Duration::from_secs(15);

/// How often the reconciles still running are counted during the grace.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// The reconciles running now.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    /// Counts a reconcile while the returned guard lives.
    pub fn enter(&self) -> Entered<'_> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Entered(self)
    }

    pub fn any(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }
}

/// One running reconcile; dropped when it ends (or is abandoned).
pub struct Entered<'a>(&'a InFlight);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How the work ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// It ended by itself.
    Finished,
    /// Stopped, and no reconcile was running: dropped at once.
    Idle,
    /// Stopped, and reconciles still ran at the end of the grace: dropped with them.
    Abandoned,
}

/// Runs `work` until it ends; once `stop` resolves, until no reconcile runs, or for
/// [`RECONCILE_GRACE`] at most. Dropping `work` drops whatever it still runs.
pub async fn run_until_stopped(
    work: impl Future,
    stop: impl Future<Output = ()>,
    in_flight: &InFlight,
) -> Ending {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        biased;
        _ = &mut work => return Ending::Finished,
        () = stop => {}
    }
    let deadline = Instant::now() + RECONCILE_GRACE;
    loop {
        if !in_flight.any() {
            return Ending::Idle;
        }
        if Instant::now() >= deadline {
            return Ending::Abandoned;
        }
        tokio::select! {
            _ = &mut work => return Ending::Finished,
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
}

/// Resolves once the channel says stop (`Sync`, as kube's graceful shutdown asks).
pub fn stopped(
    rx: tokio::sync::watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, done) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        crate::signals::stopped(rx).await;
        let _ = tx.send(());
    });
    async move {
        let _ = done.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_fit_in_the_bound_and_the_bound_in_the_charts_grace_period() {
        let parts = RECONCILE_GRACE + RELEASE_TIMEOUT + HTTP_TIMEOUT + RUNTIME_TIMEOUT;
        assert!(parts <= SHUTDOWN_BOUND);
        // charts/poolwarden/values.yaml: terminationGracePeriodSeconds: 30
        assert!(SHUTDOWN_BOUND * 2 <= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_that_hangs_is_abandoned_after_the_grace() {
        let in_flight = InFlight::default();
        let hung = async {
            let _running = in_flight.enter();
            std::future::pending::<()>().await;
        };
        let started = Instant::now();
        let ending = run_until_stopped(hung, std::future::ready(()), &in_flight).await;
        assert_eq!(ending, Ending::Abandoned);
        assert!(started.elapsed() >= RECONCILE_GRACE);
        assert!(!in_flight.any(), "the abandoned reconcile was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn with_nothing_running_it_stops_at_once_and_otherwise_lets_the_work_finish() {
        let in_flight = InFlight::default();
        let idle = std::future::pending::<()>();
        let ending = run_until_stopped(idle, std::future::ready(()), &in_flight).await;
        assert_eq!(ending, Ending::Idle);

        let finishing = async {
            let _running = in_flight.enter();
            tokio::time::sleep(Duration::from_secs(2)).await;
        };
        let ending = run_until_stopped(finishing, std::future::ready(()), &in_flight).await;
        assert_eq!(ending, Ending::Finished);
    }
}
