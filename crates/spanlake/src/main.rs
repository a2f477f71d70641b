//! `spanlake`: the collector binary.
//!
//! `spanlake run` starts the pipelines of a pipeline file (the embedded default when no
//! `--config` is given); `spanlake validate` checks a file and lists every problem as
//! `FILE:LINE: message`. Components are registered in [`registry`] and wired in [`service`].

mod memory;
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
    /// Run a read-only SQL query over the lake; the tables are `spans` (one row per span) and
    /// `spans_raw` (every stored copy).
    Query {
        /// Root of the lake.
        #[arg(long, default_value = "./spanlake-data")]
        data: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The SQL, e.g. "SELECT name, duration_ns FROM spans WHERE status_code = 'ERROR'".
        sql: String,
    },
    /// Show one trace as an indented waterfall.
    Trace {
        /// Root of the lake.
        #[arg(long, default_value = "./spanlake-data")]
        data: PathBuf,
        /// The trace id (32 hex digits for OTLP traces, or the id the native API was given).
        trace_id: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
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

// glibc's malloc on Linux with glibc, given back by `memory::release_freed_memory`; mimalloc
// elsewhere, as before (only glibc's malloc has been measured against it).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Query { data, format, sql } => block_on(query(data, format, sql)),
        Command::Trace { data, trace_id } => block_on(show_trace(data, trace_id)),
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
            memory::release_freed_memory(plan.service.memory_release_delay);
            let workers = plan.service.worker_threads;
            block_on_with(workers, async move {
                run(plan).await.map_err(|e| format!("{e:#}"))
            })
        }
    }
}

/// Run `f` on a multi-threaded runtime; an error is printed and exits 1.
fn block_on(f: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    block_on_with(0, f)
}

/// [`block_on`] with `workers` worker threads (`0`: tokio's default, one per core, or
/// `TOKIO_WORKER_THREADS`).
fn block_on_with(
    workers: usize,
    f: impl std::future::Future<Output = Result<(), String>>,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spanlake: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("spanlake: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn open_lake(data: &std::path::Path) -> Result<spanlake_query::QueryEngine, String> {
    if !data.join("spans").is_dir() {
        return Err(format!(
            "no lake at {}: expected {}/spans/ (give the directory with --data)",
            data.display(),
            data.display()
        ));
    }
    Ok(spanlake_query::QueryEngine::open(data, None))
}

async fn query(data: PathBuf, format: Format, sql: String) -> Result<(), String> {
    let engine = open_lake(&data).await?;
    let (schema, batches) = engine.sql(&sql).await.map_err(|e| e.to_string())?;
    let text = match format {
        Format::Table => spanlake_query::render::table(&schema, &batches),
        Format::Csv => spanlake_query::render::csv(&schema, &batches),
        Format::Json => spanlake_query::render::json(&batches),
    }
    .map_err(|e| e.to_string())?;
    println!("{}", text.trim_end());
    Ok(())
}

async fn show_trace(data: PathBuf, trace_id: String) -> Result<(), String> {
    let engine = open_lake(&data).await?;
    let given = trace_id.trim().to_string();
    // Hex ids are stored in lowercase; free-form ids as given.
    let mut candidates = vec![given.clone()];
    if given.chars().all(|c| c.is_ascii_hexdigit()) && given != given.to_ascii_lowercase() {
        candidates.push(given.to_ascii_lowercase());
    }
    for id in candidates {
        let spans = engine.trace(&id).await.map_err(|e| e.to_string())?;
        let events = engine.events(&id).await.map_err(|e| e.to_string())?;
        let info = engine.trace_info(&id).await.map_err(|e| e.to_string())?;
        if spans.is_empty() && events.is_empty() && info.is_none() {
            continue;
        }
        let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
        print!(
            "{}",
            spanlake_query::render::waterfall(&id, &spans, &events, info.as_ref(), color)
        );
        return Ok(());
    }
    Err(format!(
        "trace {given} is not in the lake at {}",
        data.display()
    ))
}

async fn run(plan: registry::Plan) -> anyhow::Result<()> {
    // Listen for signals before anything starts: a SIGTERM right after start must still drain.
    let signal = shutdown_signal()?;
    let running = service::start(&plan).await?;
    eprint!("{}", service::banner(&plan, &running));
    // Start-up is over: its code need not stay resident.
    match memory::release_startup_code() {
        Ok(bytes) => tracing::debug!(bytes, "start-up code pages released"),
        Err(e) => tracing::debug!(error = %e, "start-up code pages kept"),
    }
    signal.await;
    tracing::info!("shutting down: no new requests; draining the pipelines");
    running.stop().await?;
    tracing::info!("stopped; everything accepted is committed");
    Ok(())
}

/// Resolves at the first SIGTERM or SIGINT; the handlers are installed when this is called.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
