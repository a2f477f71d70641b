//! `spanlake-bench`: benchmarks of the lake, apart from the tests (never asserted as timed tests).
//!
//! - `make-lake`: write a lake of N spans (traces of a fixed size, realistic attributes) through
//!   the same writer the parquet exporter uses.
//! - `trace-lookup`: time trace-by-id lookups through the query engine, with no time hint, and
//!   report percentiles.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use spanlake_bench::{SERVICES, kv, resource_groups};
use spanlake_core::SpanBlock;
use spanlake_exporter::parquet::{LakeWriter, ParquetConfig};

#[derive(Parser)]
#[command(name = "spanlake-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a lake of synthetic traces.
    MakeLake {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 10_000_000)]
        spans: u64,
        #[arg(long, default_value_t = 100)]
        trace_size: u64,
        /// Hours the traces are spread over (one partition each).
        #[arg(long, default_value_t = 10)]
        hours: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The parquet exporter's `compression_level` (its default when not given).
        #[arg(long)]
        compression_level: Option<i32>,
        /// The parquet exporter's `max_row_group_bytes` (its default when not given).
        #[arg(long)]
        max_row_group_bytes: Option<usize>,
    },
    /// Spans per second through the redaction processor's work (built-in rules), against the
    /// cost of copying the same spans, measured in the same run.
    Redaction {
        #[arg(long, default_value_t = 200_000)]
        spans: u64,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Time lookups of traces by id (half present, as the lake was made with this seed).
    TraceLookup {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 10_000_000)]
        spans: u64,
        #[arg(long, default_value_t = 100)]
        trace_size: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value_t = 100)]
        samples: usize,
        /// DataFusion settings to try, e.g. --set datafusion.execution.collect_statistics=false
        #[arg(long)]
        set: Vec<String>,
    },
}

/// xorshift64*: reproducible ids without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn trace_id(seed: u64, n: u64) -> [u8; 16] {
    let mut r = Rng(seed ^ (n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1));
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&r.next().to_be_bytes());
    id[8..].copy_from_slice(&r.next().to_be_bytes());
    id
}

const T0: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const ROUTES: [&str; 6] = [
    "/cart",
    "/checkout",
    "/api/items/{id}",
    "/login",
    "/search",
    "/health",
];

fn make_trace(seed: u64, n: u64, size: u64, hours: u64) -> Vec<ResourceSpans> {
    let tid = trace_id(seed, n).to_vec();
    let start = T0 + (n % hours) * 3_600_000_000_000 + (n * 7_919) % 3_000_000_000_000;
    let mut by_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    for i in 0..size {
        let sid = ((n << 20) | (i + 1)).to_be_bytes().to_vec();
        let parent = if i == 0 {
            Vec::new()
        } else {
            ((n << 20) | ((i - 1) / 4 + 1)).to_be_bytes().to_vec()
        };
        let s0 = start + i * 1_000_000;
        let error = (n + i).is_multiple_of(97);
        let span = Span {
            trace_id: tid.clone(),
            span_id: sid,
            parent_span_id: parent,
            name: format!("GET {}", ROUTES[(i % 6) as usize]),
            kind: if i == 0 { 2 } else { 3 },
            start_time_unix_nano: s0,
            end_time_unix_nano: s0 + 500_000 + (i * 37 % 1000) * 1000,
            attributes: vec![
                kv(
                    "http.route",
                    Value::StringValue(ROUTES[(i % 6) as usize].into()),
                ),
                kv("http.request.method", Value::StringValue("GET".into())),
                kv(
                    "http.response.status_code",
                    Value::IntValue(if error { 500 } else { 200 }),
                ),
                kv(
                    "user.id",
                    Value::StringValue(format!("user-{}", n % 10_000)),
                ),
                kv("net.peer.port", Value::IntValue(40_000 + (i % 1000) as i64)),
            ],
            status: Some(Status {
                code: if error { 2 } else { 0 },
                message: if error {
                    "upstream failed".into()
                } else {
                    String::new()
                },
            }),
            ..Default::default()
        };
        by_service[(i % SERVICES.len() as u64) as usize].push(span);
    }
    resource_groups(by_service, &format!("host-{}", n % 16))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<(), String> {
    match Cli::parse().command {
        Command::MakeLake {
            data,
            spans,
            trace_size,
            hours,
            seed,
            compression_level,
            max_row_group_bytes,
        } => {
            let traces = spans / trace_size;
            let defaults = ParquetConfig::default();
            let mut w = LakeWriter::new(
                "bench",
                ParquetConfig {
                    path: data.clone(),
                    compression_level: compression_level.unwrap_or(defaults.compression_level),
                    max_row_group_bytes: max_row_group_bytes
                        .unwrap_or(defaults.max_row_group_bytes),
                    ..defaults
                },
                Arc::default(),
            );
            let t = Instant::now();
            let mut files = 0;
            for n in 0..traces {
                files += w
                    .append(vec![SpanBlock::from_prost(&make_trace(
                        seed, n, trace_size, hours,
                    ))])
                    .map_err(|e| e.to_string())?
                    .len();
            }
            files += w.commit_all().map_err(|e| e.to_string())?.len();
            let secs = t.elapsed().as_secs_f64();
            println!(
                "wrote {} spans ({traces} traces of {trace_size}) in {files} files under {} in {secs:.1} s ({:.0} spans/s)",
                traces * trace_size,
                data.display(),
                (traces * trace_size) as f64 / secs
            );
            Ok(())
        }
        Command::Redaction { spans, runs } => {
            use spanlake_processor::redaction::{RedactionConfig, Redactor};
            let traces: Vec<Vec<SpanBlock>> = (0..spans / 100)
                .map(|n| vec![SpanBlock::from_prost(&make_trace(7, n, 100, 1))])
                .collect();
            let builtin = Redactor::new(&RedactionConfig {
                builtin_rules: true,
                ..Default::default()
            })?;
            let user = Redactor::new(&RedactionConfig {
                builtin_rules: true,
                blocked_keys: vec!["user\\..*".into()],
                blocked_values: vec![r"\bTCK-\d{6}\b".into()],
                ..Default::default()
            })?;
            let mut results: Vec<(&str, Vec<f64>)> = vec![
                ("copy only (baseline)", vec![]),
                ("copy + built-in rules", vec![]),
                ("copy + built-in + user rules", vec![]),
            ];
            for _ in 0..runs {
                for (i, (_, v)) in results.iter_mut().enumerate() {
                    let t = Instant::now();
                    for tr in &traces {
                        let mut copy = tr.clone();
                        match i {
                            1 => builtin.redact(&mut copy),
                            2 => user.redact(&mut copy),
                            _ => {}
                        }
                        std::hint::black_box(&copy);
                    }
                    v.push(spans as f64 / t.elapsed().as_secs_f64());
                }
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            let base = median(&mut results[0].1.clone());
            for (what, v) in results.iter_mut() {
                let m = median(v);
                let per_span_ns = 1e9 / m - 1e9 / base;
                println!(
                    "{what:>30}: median {m:>12.0} spans/s over {runs} runs; redaction's own cost {per_span_ns:>7.0} ns/span"
                );
            }
            Ok(())
        }
        Command::TraceLookup {
            data,
            spans,
            trace_size,
            seed,
            samples,
            set,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let engine = spanlake_query::QueryEngine::open(&data, None);
                for kv in &set {
                    let (k, v) = kv.split_once('=').ok_or("--set takes key=value")?;
                    engine.context().await.map_err(|e| e.to_string())?.sql(&format!("SET {k} = {v}")).await.map_err(|e| e.to_string())?;
                }
                let traces = spans / trace_size;
                let mut rng = Rng(seed ^ 0xdead_beef);
                // warm-up: the first lookup lists files and reads footers
                let first = hex(&trace_id(seed, 0));
                engine.trace(&first).await.map_err(|e| e.to_string())?;
                let mut present = Vec::new();
                let mut absent = Vec::new();
                for i in 0..samples {
                    let (id, expect) = if i % 2 == 0 {
                        (hex(&trace_id(seed, rng.next() % traces)), trace_size as usize)
                    } else {
                        (hex(&trace_id(seed ^ 1, rng.next())), 0)
                    };
                    let t = Instant::now();
                    let got = engine.trace(&id).await.map_err(|e| e.to_string())?;
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    if got.len() != expect {
                        return Err(format!("trace {id}: {} spans, expected {expect}", got.len()));
                    }
                    if expect > 0 { present.push(ms) } else { absent.push(ms) }
                }
                for (what, mut v) in [("present", present), ("absent", absent)] {
                    v.sort_by(|a, b| a.total_cmp(b));
                    println!(
                        "{what:>8} traces: {} lookups  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                        v.len(),
                        percentile(&v, 0.5),
                        percentile(&v, 0.9),
                        percentile(&v, 0.99),
                        v.last().copied().unwrap_or(0.0)
                    );
                }
                Ok(())
            })
        }
    }
}
