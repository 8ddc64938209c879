//! What a cycle costs, at scale, side by side with the bare work it cannot avoid.
//!
//! ```sh
//! cargo bench --bench cycle                  # full sizes (about 15 minutes)
//! cargo bench --bench cycle -- --tiny        # tiny sizes, to keep the code working
//! cargo test --bench cycle -- --tiny         # the same as a test build (CI: scripts/test)
//! cargo bench --bench cycle -- --only observe,act
//! cargo bench --bench cycle -- --controller-window 120
//! cargo bench --bench cycle -- --only controller --controller-binary path/to/poolwarden
//! cargo bench --bench cycle -- --only decide,scale --scale-window 180
//! cargo bench --bench cycle -- --only scale --scale-policies 1000
//! ```
//!
//! Six sections, each printing Markdown tables: observe (the snapshot vs the bare
//! `SELECT * FROM pg_stat_activity`, and on MariaDB vs the bare processlist, with the cost and
//! window of MySQL's one-at-a-time kills), decide (the pure function on synthetic snapshots), act
//! (mass termination), latency (idleTimeout crossed → session ended), controller (the real
//! binary's API requests, memory and CPU against the Kubernetes API stand-in) and scale (the
//! same binary with 10 to 1,000 policies over four servers, one slow and one dead). Nothing here
//! asserts on time: the figures are for people to read. Full sizes run under `cargo bench` (or
//! with `--full`); run any other way (`cargo test --all-targets`), the tiny sizes do.

#[path = "cycle/act.rs"]
mod act;
#[path = "cycle/act_cost.rs"]
mod act_cost;
#[path = "cycle/act_race.rs"]
mod act_race;
#[path = "cycle/common.rs"]
mod common;
#[path = "cycle/controller.rs"]
mod controller;
#[path = "cycle/decide.rs"]
mod decide;
#[path = "cycle/latency.rs"]
mod latency;
#[path = "cycle/observe.rs"]
mod observe;
#[path = "cycle/observe_mysql.rs"]
mod observe_mysql;
#[path = "cycle/observe_statements.rs"]
mod observe_statements;
#[path = "cycle/scale.rs"]
mod scale;
#[path = "cycle/scale_platform.rs"]
mod scale_platform;
#[path = "cycle/scale_probe.rs"]
mod scale_probe;
#[path = "cycle/scale_tables.rs"]
mod scale_tables;
#[allow(dead_code)] // shared with the tests; the bench uses part of it
#[path = "../tests/support/kube.rs"]
mod standin;

/// The allocator of the image's binary (see `src/main.rs`), so that what the benchmark's own
/// process does (observing, deciding) costs what it costs in the image.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use common::{Config, Res, load1, proc_field, raise_open_file_limit};

const SECTIONS: [&str; 6] = ["observe", "decide", "act", "latency", "controller", "scale"];
/// The default measured window of the controller's steady state: two status heartbeats.
const CONTROLLER_WINDOW_SECS: u64 = 630;
/// The default measured window of each row of the scale section: six 30 s intervals.
const SCALE_WINDOW_SECS: u64 = 180;

struct Args {
    config: Config,
    only: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut tiny = None;
    let mut benched = false;
    let mut only: Vec<String> = SECTIONS.iter().map(|s| (*s).to_owned()).collect();
    let mut window = None;
    let mut scale_window = None;
    let mut scale_policies = None;
    let mut binary = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tiny" => tiny = Some(true),
            // `cargo bench` passes --bench to every bench target; `cargo test` (say, with
            // --all-targets) does not, and then the tiny sizes run unless --full is given.
            "--bench" => benched = true,
            "--full" => tiny = Some(false),
            "--only" => {
                let list = args.next().ok_or("--only needs a list, e.g. observe,act")?;
                only = list.split(',').map(str::to_owned).collect();
                if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    return Err(format!(
                        "unknown section {bad:?}; known: {}",
                        SECTIONS.join(", ")
                    ));
                }
            }
            "--controller-window" => {
                let secs = args.next().ok_or("--controller-window needs seconds")?;
                window = Some(secs.parse().map_err(|_| format!("not seconds: {secs}"))?);
            }
            "--scale-window" => {
                let secs = args.next().ok_or("--scale-window needs seconds")?;
                scale_window = Some(secs.parse().map_err(|_| format!("not seconds: {secs}"))?);
            }
            "--scale-policies" => {
                let list = args
                    .next()
                    .ok_or("--scale-policies needs a list, e.g. 10,1000")?;
                let rows = list
                    .split(',')
                    .map(|n| n.parse().map_err(|_| format!("not a number: {n}")))
                    .collect::<Result<Vec<usize>, _>>()?;
                scale_policies = Some(rows);
            }
            "--controller-binary" => {
                binary = Some(
                    args.next()
                        .ok_or("--controller-binary needs a path")?
                        .into(),
                );
            }
            "-h" | "--help" => {
                return Err(format!(
                    "usage: cargo bench --bench cycle -- [--tiny | --full] [--only {}] \
                     [--controller-window SECS] [--scale-window SECS] [--scale-policies N,N] \
                     [--controller-binary PATH]",
                    SECTIONS.join(",")
                ));
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    let tiny = tiny.unwrap_or(!benched);
    Ok(Args {
        config: Config {
            tiny,
            controller_window: window.unwrap_or(if tiny { 20 } else { CONTROLLER_WINDOW_SECS }),
            scale_window: scale_window.unwrap_or(SCALE_WINDOW_SECS),
            scale_policies,
            controller_binary: binary.unwrap_or_else(|| env!("CARGO_BIN_EXE_poolwarden").into()),
        },
        only,
    })
}

fn machine() -> String {
    let postgres = common::SERVER_VERSION.get().map_or("?", String::as_str);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = proc_field(Path::new("/proc/meminfo"), "MemTotal:")
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "machine: {cores} cores ({cpu}), {memory} memory, Linux {}; PostgreSQL {postgres}; \
         {} build",
        kernel.trim(),
        if cfg!(debug_assertions) {
            "debug (figures not representative)"
        } else {
            "optimised"
        }
    )
}

async fn bench(args: Args) -> Res<()> {
    let cfg = &args.config;
    let began = Instant::now();
    let files = raise_open_file_limit();
    eprintln!(
        "poolwarden benchmarks ({}), load average {:.2}, open-file limit {files}",
        if cfg.tiny { "tiny sizes" } else { "full sizes" },
        load1()
    );
    for section in SECTIONS
        .iter()
        .filter(|s| args.only.iter().any(|o| o == *s))
    {
        let start = Instant::now();
        let load_before = load1();
        eprintln!("== {section}");
        let mut produced = match *section {
            "observe" => {
                let mut tables = observe::run(cfg).await?;
                tables.push(observe_statements::run(cfg).await?);
                tables.extend(observe_mysql::run(cfg).await?);
                tables
            }
            "decide" => vec![decide::run(cfg).await?],
            "act" => act::run(cfg).await?,
            "latency" => vec![latency::run(cfg).await?],
            "scale" => scale::run(cfg).await?,
            _ => controller::run(cfg).await?,
        };
        if let Some(last) = produced.last_mut() {
            last.note(format!(
                "({section}: {:.0} s; load average {load_before:.2} before, {:.2} after)",
                start.elapsed().as_secs_f64(),
                load1()
            ));
        }
        for t in &produced {
            println!("{}", t.render());
        }
        if !cfg.tiny {
            // Thousands of backends have just exited: let the machine settle before the next.
            tokio::time::sleep(std::time::Duration::from_secs(15)).await;
        }
    }
    println!("{}", machine());
    println!(
        "total: {:.0} s; load average at the end {:.2}",
        began.elapsed().as_secs_f64(),
        load1()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The driver's own Display is only "db error": the server's message is in the source.
            let mut message = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                message.push_str(&format!(": {c}"));
                cause = c.source();
            }
            eprintln!("benchmark failed: {message}");
            ExitCode::FAILURE
        }
    }
}
