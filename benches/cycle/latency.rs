//! Detection latency (section 4): from the moment a session crosses `idleTimeout` to the moment
//! the server closes it, under `poolwarden run` (the library loop the binary runs) at a given
//! interval.

use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use poolwarden::standalone::{self, Output, RunOptions};

use crate::common::*;

const IDLE_TIMEOUT_MS: u64 = 2000;

async fn measure(interval: Duration, samples: usize) -> Res<Vec<f64>> {
    let sb = sandbox(50).await?;
    let admin = sb.admin().await?;
    let yaml = format!(
        "mode: Enforce\nscope: {{users: [app]}}\nidle: {{idleTimeout: {IDLE_TIMEOUT_MS}ms}}\n"
    );
    let spec = serde_saphyr::from_str(&yaml)?;
    let rules = poolwarden::decide::Rules::compile(&spec)?;
    let url = monitor_url(sb.port());
    let runner = tokio::spawn(async move {
        let mut sink = std::io::sink();
        let options = RunOptions {
            interval,
            cycles: None,
            output: Output::Table,
        };
        let mut audit = poolwarden::standalone::AuditTrail::log_only("bench");
        standalone::run(&url, &[], &rules, options, &mut audit, &mut sink).await
    });
    // Let the loop connect and settle into its rhythm.
    tokio::time::sleep(interval + Duration::from_millis(300)).await;

    // Sessions open at steps of 0.618 intervals, so that they cross their timeout at phases of
    // the loop spread evenly over its period.
    let step = interval.mul_f64(0.618);
    let mut pending = Vec::new();
    for i in 0..samples {
        if i > 0 {
            tokio::time::sleep(step).await;
        }
        let s = open_local(&sb, &format!("latency-{i}"), State::Idle).await?;
        // The moment it went idle, by the server's clock (the same machine's).
        let changed: Timestamp = admin
            .query_one(
                "SELECT state_change FROM pg_stat_activity WHERE pid = $1::int8",
                &[&s.pid],
            )
            .await?
            .get(0);
        let crossed = SystemTime::from(changed) + Duration::from_millis(IDLE_TIMEOUT_MS);
        pending.push((crossed, s));
    }
    let mut latencies = Vec::new();
    for (crossed, s) in pending {
        let limit = Duration::from_millis(IDLE_TIMEOUT_MS) + interval * 4 + Duration::from_secs(10);
        let ended = tokio::time::timeout(limit, s.ended)
            .await
            .map_err(|_| "a session was not terminated in time")??;
        let latency = ended
            .duration_since(crossed)
            .map_err(|_| "a session ended before it crossed its timeout")?;
        latencies.push(latency.as_secs_f64() * 1e3);
        drop(s.client);
    }
    runner.abort();
    let _ = runner.await;
    drop(admin);
    sb.stop();
    Ok(latencies)
}

pub async fn run(cfg: &Config) -> Res<Table> {
    let plan: &[(u64, usize)] = if cfg.tiny {
        &[(1, 1)]
    } else {
        &[(1, 15), (5, 10)]
    };
    let mut table = Table::new(
        "Detection latency: idleTimeout crossed → session closed by the server",
        &[
            "interval",
            "samples",
            "latency ms",
            "bound (interval + one cycle)",
        ],
    );
    for &(secs, samples) in plan {
        let interval = Duration::from_secs(secs);
        let latencies = measure(interval, samples).await?;
        table.row(vec![
            format!("{secs} s"),
            samples.to_string(),
            Stats::of(&latencies).show(0),
            format!("≈ {} ms + a cycle", secs * 1000),
        ]);
        eprintln!("  latency: interval {secs} s measured");
    }
    table.note(format!(
        "`poolwarden run` (the library loop of the binary), Enforce, with \
         `idleTimeout: {IDLE_TIMEOUT_MS}ms`. Sessions open at steps of 0.618 × the interval, so \
         that their crossings fall at evenly spread phases of the loop. The crossing is \
         `state_change + idleTimeout` (server clock, same machine); the end is when the \
         session's client sees the server close the connection."
    ));
    Ok(table)
}
