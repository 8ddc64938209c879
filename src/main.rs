//! The `poolwarden` binary: parse the command line, hand over to the library.

use std::error::Error;
use std::process::ExitCode;

use clap::Parser;
use poolwarden::cli::{Cli, Command};
#[cfg(feature = "demo")]
use poolwarden::demo;
use poolwarden::standalone::AuditTrail;
use poolwarden::standalone::{self, RunOptions};
use poolwarden::{api, controller, telemetry};

/// musl's allocator costs the image's binary CPU at scale; mimalloc is the field's usual answer.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // What is still running then (an abandoned reconcile, a DNS lookup on a blocking thread)
    // must not hold the exit: a shutdown is bounded (controller::SHUTDOWN_BOUND).
    runtime.shutdown_timeout(controller::RUNTIME_TIMEOUT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn Error>> {
    match cli.command {
        Command::Crd => print!("{}", api::crd_yaml()),
        Command::Check(args) => {
            telemetry::init(cli.log_format, "warn");
            let policy = standalone::load(&args.policy)?;
            standalone::check(
                &args.database_url,
                &args.poolers,
                &policy,
                args.output,
                &mut std::io::stdout(),
            )
            .await?;
        }
        Command::Run {
            standalone: args,
            interval,
            cycles,
            audit_log,
        } => {
            telemetry::init(cli.log_format, telemetry::RUN_DEFAULT_FILTER);
            let policy = standalone::load(&args.policy)?;
            let mut audit = match &audit_log {
                Some(path) => AuditTrail::with_file(&policy.name, path)?,
                None => AuditTrail::log_only(&policy.name),
            };
            if let Some(note) = standalone::policy_poolers_note(&policy, args.poolers.len()) {
                eprintln!("warning: {note}");
            }
            let options = RunOptions {
                interval: interval.unwrap_or(policy.spec.interval).into(),
                cycles,
                output: args.output,
            };
            standalone::run(
                &args.database_url,
                &args.poolers,
                &policy.rules,
                options,
                &mut audit,
                &mut std::io::stdout(),
            )
            .await?;
        }
        Command::Controller(args) => {
            telemetry::init(cli.log_format, "info");
            let namespaces = if args.namespaces.is_empty() {
                controller::Namespaces::All
            } else {
                controller::Namespaces::Only(args.namespaces)
            };
            let webhook = args.webhook_addr.map(|addr| controller::WebhookConfig {
                addr,
                certificate: match args.webhook_cert_dir {
                    Some(dir) => controller::WebhookCertificate::Files(dir),
                    None => {
                        controller::WebhookCertificate::SelfManaged(controller::WebhookPlacement {
                            namespace: args.lease_namespace.clone(),
                            secret: args.webhook_secret,
                            service: args.webhook_service,
                            configuration: args.webhook_configuration,
                        })
                    }
                },
            });
            let config = controller::Config {
                namespaces,
                http_addr: args.http_addr,
                leader_election: args.leader_election,
                lease_name: args.lease_name,
                lease_namespace: args.lease_namespace,
                lease_duration_secs: args.lease_duration,
                identity: args.identity.unwrap_or_else(controller::default_identity),
                watch_secrets: args.watch_secrets,
                initial_list: args.initial_list,
                concurrency: args.concurrency,
                webhook,
            };
            controller::run(config, controller::any_engine).await?;
        }
        #[cfg(feature = "demo")]
        Command::Demo { engine } => {
            telemetry::init(cli.log_format, "warn");
            match engine {
                poolwarden::cli::DemoEngine::Postgres => demo::run(&mut std::io::stdout()).await?,
                poolwarden::cli::DemoEngine::Mysql => {
                    demo::mysql::run(&mut std::io::stdout()).await?
                }
            }
        }
    }
    Ok(())
}
