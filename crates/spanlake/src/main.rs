//! `spanlake`: the collector binary.
//!
//! `spanlake run` starts the pipelines of a pipeline file (the embedded default when no
//! `--config` is given); `spanlake validate` checks a file and lists every problem as
//! `FILE:LINE: message`. Components are registered in [`registry`] and wired in [`service`].

mod registry;
mod service;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use spanlake_config::{LogEncoding, TelemetryConfig};

pub(crate) const DEFAULT_PIPELINE: &str = include_str!("../../../pipelines/default.yaml");
const DEFAULT_PIPELINE_NAME: &str = "pipelines/default.yaml (embedded)";

#[derive(Parser)]
#[command(
    name = "spanlake",
    version,
    about = "OpenTelemetry trace collector that writes a queryable Parquet lake"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector.
    Run {
        /// Pipeline file; without it the embedded default pipeline runs.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Root directory of the Parquet lake, for every parquet exporter.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Check a pipeline file: exit 0, or exit 2 listing every problem as FILE:LINE: message.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn load(
    config: Option<&PathBuf>,
    overrides: &registry::Overrides,
) -> Result<registry::Plan, (ExitCode, String)> {
    let (name, text) = match config {
        None => (
            DEFAULT_PIPELINE_NAME.to_string(),
            DEFAULT_PIPELINE.to_string(),
        ),
        Some(path) => {
            let name = path.display().to_string();
            match std::fs::read_to_string(path) {
                Ok(t) => (name, t),
                Err(e) => {
                    return Err((
                        ExitCode::from(2),
                        format!("{name}: cannot read the pipeline file: {e}"),
                    ));
                }
            }
        }
    };
    registry::plan(&name, &text, &env, overrides).map_err(|p| (ExitCode::from(2), p.to_string()))
}

fn init_logs(t: &TelemetryConfig) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&t.logs.level));
    let json = match env("SPANLAKE_LOG_FORMAT").as_deref() {
        Some("json") => true,
        Some("text") => false,
        _ => t.logs.encoding == LogEncoding::Json,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { config } => {
            match load(Some(&config), &registry::Overrides::default()) {
                Ok(plan) => {
                    println!(
                        "{}: valid ({} pipeline(s))",
                        config.display(),
                        plan.pipelines.len()
                    );
                    ExitCode::SUCCESS
                }
                Err((code, msg)) => {
                    println!("{msg}");
                    code
                }
            }
        }
        Command::Run { config, data } => {
            let overrides = registry::Overrides { data };
            let plan = match load(config.as_ref(), &overrides) {
                Ok(p) => p,
                Err((code, msg)) => {
                    eprintln!("{msg}");
                    return code;
                }
            };
            init_logs(&plan.service.telemetry);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("spanlake: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(plan)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("spanlake: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(plan: registry::Plan) -> anyhow::Result<()> {
    let running = service::start(&plan)?;
    eprint!("{}", service::banner(&plan, &running));
    wait_for_signal().await?;
    tracing::info!("shutting down: no new requests; draining the pipelines");
    running.stop().await?;
    tracing::info!("stopped; everything accepted is committed");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}
