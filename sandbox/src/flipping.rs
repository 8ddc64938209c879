//! The shape of the termination race: sessions that sit idle for a while, run a short
//! statement, and go idle again, as long as they run.
//!
//! A killer that checks a session and then signals it can end it in the middle of a statement
//! if the session starts one in between. This workload makes that happen often enough to count:
//! every session keeps crossing an idle timeout shortly before it wakes up. A session the server
//! ends is replaced by a new one at once, so the workload keeps its size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use super::Sandbox;

/// Who the sessions are and how they flip.
#[derive(Debug, Clone)]
pub struct FlippingSpec {
    /// How many sessions run at once.
    pub sessions: usize,
    /// They log in over the Unix socket (trust: no password, fast to replace).
    pub user: String,
    pub database: String,
    pub application_name: String,
    /// Each idle spell lasts a uniformly random time between these two.
    pub idle: (Duration, Duration),
    /// Each statement, `SELECT pg_sleep(…)`, lasts a uniformly random time between these two.
    pub busy: (Duration, Duration),
}

/// Running flipping sessions. [`Flipping::stop`] ends them; dropping it aborts them.
pub struct Flipping {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    statements: AtomicU64,
    ended: AtomicU64,
    failed_connects: AtomicU64,
}

/// What the sessions saw so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlippingCounts {
    /// Statements that ran to completion.
    pub statements: u64,
    /// Sessions the server ended (each was replaced).
    pub ended: u64,
    /// Attempts to open a replacement that failed (retried after 50 ms).
    pub failed_connects: u64,
}

impl Sandbox {
    /// Starts `spec.sessions` flipping sessions, each opened before this returns.
    ///
    /// Must be called within a tokio runtime.
    pub async fn start_flipping(
        &self,
        spec: &FlippingSpec,
    ) -> Result<Flipping, super::SandboxError> {
        let (stop, stopped) = watch::channel(false);
        let counts = Arc::new(Counts::default());
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.dir())
            .port(self.port())
            .user(&spec.user)
            .dbname(&spec.database)
            .application_name(&spec.application_name);
        let mut tasks = Vec::with_capacity(spec.sessions);
        for i in 0..spec.sessions {
            // The first connection is opened here, so that a bad spec fails the call.
            let first = connect(&config).await.map_err(|e| {
                super::SandboxError::postgres(
                    format!("opening flipping session {i} as {:?}", spec.user),
                    e,
                )
            })?;
            let session = Session {
                config: config.clone(),
                idle: spec.idle,
                busy: spec.busy,
                random: SplitMix64(0x9e37_79b9_7f4a_7c15 ^ i as u64),
                counts: counts.clone(),
                stopped: stopped.clone(),
            };
            tasks.push(tokio::spawn(session.run(first)));
        }
        Ok(Flipping {
            stop,
            tasks,
            counts,
        })
    }
}

impl Flipping {
    pub fn counts(&self) -> FlippingCounts {
        FlippingCounts {
            statements: self.counts.statements.load(Ordering::Relaxed),
            ended: self.counts.ended.load(Ordering::Relaxed),
            failed_connects: self.counts.failed_connects.load(Ordering::Relaxed),
        }
    }

    /// Ends every session (a statement under way is left to finish) and returns the counts.
    pub async fn stop(mut self) -> FlippingCounts {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        self.counts()
    }
}

impl Drop for Flipping {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// An open connection: the client, and its connection task, which ends when the server closes it.
type Connection = (tokio_postgres::Client, JoinHandle<()>);

async fn connect(config: &tokio_postgres::Config) -> Result<Connection, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok((client, task))
}

struct Session {
    config: tokio_postgres::Config,
    idle: (Duration, Duration),
    busy: (Duration, Duration),
    random: SplitMix64,
    counts: Arc<Counts>,
    stopped: watch::Receiver<bool>,
}

impl Session {
    async fn run(mut self, first: Connection) {
        let mut connection = Some(first);
        while !*self.stopped.borrow() {
            let (client, mut task) = match connection.take() {
                Some(open) => open,
                None => match connect(&self.config).await {
                    Ok(open) => open,
                    Err(_) => {
                        self.counts.failed_connects.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            loop {
                let idle = self.random.between(self.idle);
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    // Ended while idle: replaced at once, not at the end of the spell.
                    _ = &mut task => {
                        self.counts.ended.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    _ = self.stopped.changed() => return,
                }
                let busy = self.random.between(self.busy);
                // Display of f64 never uses an exponent: always valid SQL.
                let sql = format!("SELECT pg_sleep({})", busy.as_secs_f64());
                if client.simple_query(&sql).await.is_ok() {
                    self.counts.statements.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.counts.ended.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

/// A small, fast, seedable generator: enough for spreading timings, no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high]`.
    fn between(&mut self, (low, high): (Duration, Duration)) -> Duration {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high.saturating_sub(low)).mul_f64(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_timings_over_the_whole_range_and_never_outside() {
        let mut random = SplitMix64(7);
        let range = (Duration::from_millis(500), Duration::from_millis(1500));
        let samples: Vec<Duration> = (0..10_000).map(|_| random.between(range)).collect();
        assert!(samples.iter().all(|d| *d >= range.0 && *d <= range.1));
        let below = samples
            .iter()
            .filter(|d| **d < Duration::from_secs(1))
            .count();
        assert!(
            (4_500..5_500).contains(&below),
            "{below} of 10,000 below the middle"
        );
    }
}
