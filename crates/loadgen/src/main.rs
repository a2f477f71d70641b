//! `spanlake-loadgen`: drive an OTLP collector and measure it.
//!
//! - `run`: send OTLP over gRPC or HTTP/protobuf — requests encoded ahead of time so the
//!   generator is not the bottleneck — at a fixed or the highest rate, and report spans/s
//!   accepted, latency percentiles and every error by kind.
//! - `bench`: start a collector binary on free ports, measure its idle memory, drive it, then
//!   report spans per collector CPU-second (from /proc, the collector process alone), peak RSS,
//!   bytes per span on disk beside the raw OTLP bytes, and the spans written against the spans
//!   acknowledged (they must match).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use clap::{Args, Parser, Subcommand, ValueEnum};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(
    name = "spanlake-loadgen",
    about = "OTLP load generator and collector benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send load to a running collector.
    Run {
        /// host:port of the collector's OTLP gRPC or HTTP port.
        #[arg(long)]
        endpoint: String,
        #[command(flatten)]
        load: Load,
    },
    /// The floor: an OTLP/gRPC trace endpoint that only decodes each request (tonic and prost,
    /// which spanlake is built on) and answers. Its CPU per span, under the same load, is what
    /// no collector built on them goes below. Prints `listening on ADDR`.
    Sink {
        #[arg(long, default_value = "127.0.0.1:0")]
        endpoint: String,
    },
    /// Start a collector, measure it under load, stop it, count what it wrote.
    Bench {
        /// The collector binary.
        #[arg(long, default_value = "target/release/spanlake")]
        collector: PathBuf,
        /// A pipeline file (JSON is YAML) with `{GRPC}`, `{HTTP}` and `{DATA}` placeholders;
        /// by default the default pipeline's processors and a parquet exporter.
        #[arg(long)]
        config: Option<PathBuf>,
        /// `memory` or `durable` (fills `{ACKS}` in the pipeline file; the default pipeline
        /// uses it).
        #[arg(long, default_value = "memory", value_parser = ["memory", "durable"])]
        acknowledgements: String,
        #[command(flatten)]
        load: Load,
    },
}

#[derive(Args, Clone)]
struct Load {
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    #[arg(long, default_value_t = 100)]
    spans_per_request: usize,
    /// Attributes per span.
    #[arg(long, default_value_t = 10)]
    attributes: usize,
    /// Bytes per attribute value.
    #[arg(long, default_value_t = 16)]
    attribute_size: usize,
    /// Distinct values of each string attribute, drawn at random per span (0: every value
    /// differs). The default, 1, sends each attribute's one value span after span, as the
    /// collector testbed does (random letters, a different value for each attribute and run).
    #[arg(long, default_value_t = 1)]
    distinct_values: u64,
    /// Spans per trace (a root and children).
    #[arg(long, default_value_t = 10)]
    trace_size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Spans per second to offer; 0 sends as fast as the collector answers.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Distinct requests encoded ahead of time (sent round-robin).
    #[arg(long, default_value_t = 256)]
    distinct: usize,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Protocol {
    Grpc,
    Http,
}

fn kv(k: String, v: Value) -> KeyValue {
    KeyValue {
        key: k,
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// A 64-bit mix (splitmix64's finalizer): neighbouring inputs give unrelated outputs.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A value of `size` lowercase letters for `id` (letters, not digits: a run of digits would
/// look like a card number to redaction).
fn value_text(size: usize, id: u64) -> String {
    let mut x = id;
    (0..size)
        .map(|_| {
            x = mix(x.wrapping_add(0x9e37_79b9_7f4a_7c15));
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// Requests encoded ahead of time; ids differ between requests and runs.
fn encode_requests(l: &Load) -> Vec<Bytes> {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let now = run;
    // `--distinct-values 1`: one value per attribute for the whole run.
    let fixed: Vec<String> = (0..l.attributes)
        .map(|a| value_text(l.attribute_size, mix(run ^ a as u64)))
        .collect();
    (0..l.distinct)
        .map(|r| {
            let spans = (0..l.spans_per_request)
                .map(|i| {
                    let n = (r * l.spans_per_request + i) as u64;
                    let trace = n / l.trace_size.max(1) as u64;
                    let mut trace_id = [0u8; 16];
                    trace_id[..8].copy_from_slice(&run.to_be_bytes());
                    trace_id[8..].copy_from_slice(&(trace + 1).to_be_bytes());
                    let in_trace = n % l.trace_size.max(1) as u64;
                    let span_id = (n + 1).to_be_bytes().to_vec();
                    let parent = if in_trace == 0 {
                        Vec::new()
                    } else {
                        (n - in_trace + 1).to_be_bytes().to_vec()
                    };
                    Span {
                        trace_id: trace_id.to_vec(),
                        span_id,
                        parent_span_id: parent,
                        name: format!("op-{}", i % 8),
                        kind: 2,
                        start_time_unix_nano: now + n * 1000,
                        end_time_unix_nano: now + n * 1000 + 500_000,
                        attributes: (0..l.attributes)
                            .map(|a| {
                                if a % 4 == 3 {
                                    kv(format!("attr.{a}"), Value::IntValue(a as i64))
                                } else {
                                    let v = match l.distinct_values {
                                        1 => fixed[a].clone(),
                                        d => {
                                            let x = mix(n * 1000 + a as u64 + run);
                                            value_text(
                                                l.attribute_size,
                                                if d == 0 { x } else { x % d },
                                            )
                                        }
                                    };
                                    kv(format!("attr.{a}"), Value::StringValue(v))
                                }
                            })
                            .collect(),
                        status: Some(Status::default()),
                        ..Default::default()
                    }
                })
                .collect();
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv(
                            "service.name".into(),
                            Value::StringValue("loadgen".into()),
                        )],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "loadgen".into(),
                            ..Default::default()
                        }),
                        spans,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            Bytes::from(req.encode_to_vec())
        })
        .collect()
}

/// Bytes in, bytes out: the requests are already encoded.
#[derive(Clone, Default)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[derive(Default)]
struct Outcome {
    accepted: u64,
    rejected: u64,
    latencies_us: Vec<u32>,
    errors: BTreeMap<String, u64>,
}

fn rejected_in(body: &[u8]) -> i64 {
    ExportTraceServiceResponse::decode(body)
        .ok()
        .and_then(|r| r.partial_success)
        .map(|p| p.rejected_spans)
        .unwrap_or(0)
}

async fn http_post(
    stream: &mut tokio::net::TcpStream,
    host: &str,
    body: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream
        .write_all(body)
        .await
        .map_err(|e| format!("write: {e}"))?;
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or("bad status line")?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                read_more(stream, buf).await?;
            }
            return Ok((status, buf[end + 4..end + 4 + len].to_vec()));
        }
        read_more(stream, buf).await?;
    }
}

/// Append what the server sent next to `buf`.
async fn read_more(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 8192];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

async fn worker(
    endpoint: String,
    l: Load,
    requests: Arc<Vec<Bytes>>,
    worker: usize,
    stop: Arc<AtomicBool>,
    sent_spans: Arc<AtomicU64>,
) -> Outcome {
    let mut out = Outcome::default();
    let per_request = l.spans_per_request as u64;
    let pause = (l.rate > 0).then(|| {
        Duration::from_secs_f64(l.concurrency as f64 * per_request as f64 / l.rate as f64)
    });
    let mut next = tokio::time::Instant::now();
    let mut i = worker;
    let mut grpc = None;
    let mut http = None;
    let mut buf = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if let Some(p) = pause {
            tokio::time::sleep_until(next).await;
            next += p;
        }
        let body = requests[i % requests.len()].clone();
        i += l.concurrency;
        let t = Instant::now();
        let result: Result<i64, String> = match l.protocol {
            Protocol::Grpc => {
                if grpc.is_none() {
                    match tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
                        .map_err(|e| e.to_string())
                    {
                        Ok(ep) => match ep.connect().await {
                            Ok(ch) => grpc = Some(tonic::client::Grpc::new(ch)),
                            Err(e) => {
                                *out.errors.entry(format!("connect: {e}")).or_default() += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                                continue;
                            }
                        },
                        Err(e) => {
                            return Outcome {
                                errors: BTreeMap::from([(e, 1)]),
                                ..Default::default()
                            };
                        }
                    }
                }
                let client = grpc.as_mut().expect("connected");
                match client.ready().await {
                    Err(e) => Err(format!("not ready: {e}")),
                    Ok(()) => {
                        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
                            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                        );
                        match client
                            .unary(tonic::Request::new(body), path, RawCodec)
                            .await
                        {
                            Ok(resp) => Ok(rejected_in(resp.get_ref())),
                            Err(st) => Err(format!("grpc {:?}", st.code())),
                        }
                    }
                }
            }
            Protocol::Http => {
                if http.is_none() {
                    match tokio::net::TcpStream::connect(&endpoint).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            http = Some(s);
                        }
                        Err(e) => {
                            *out.errors
                                .entry(format!("connect: {}", e.kind()))
                                .or_default() += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    }
                }
                let stream = http.as_mut().expect("connected");
                match http_post(stream, &endpoint, &body, &mut buf).await {
                    Ok((200, body)) => Ok(rejected_in(&body)),
                    Ok((code, _)) => Err(format!("http {code}")),
                    Err(e) => {
                        http = None;
                        Err(e)
                    }
                }
            }
        };
        let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match result {
            Ok(rejected) => {
                out.accepted += per_request - rejected as u64;
                out.rejected += rejected as u64;
                out.latencies_us.push(us);
                sent_spans.fetch_add(per_request, Ordering::Relaxed);
            }
            Err(kind) => *out.errors.entry(kind).or_default() += 1,
        }
    }
    out
}

struct Report {
    accepted: u64,
    rejected: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: BTreeMap<String, u64>,
    bytes_per_span: f64,
}

async fn drive(endpoint: &str, l: &Load) -> Report {
    let requests = Arc::new(encode_requests(l));
    let raw: usize = requests.iter().map(|r| r.len()).sum();
    let bytes_per_span = raw as f64 / (requests.len() * l.spans_per_request) as f64;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let tasks: Vec<_> = (0..l.concurrency)
        .map(|w| {
            tokio::spawn(worker(
                endpoint.to_string(),
                l.clone(),
                requests.clone(),
                w,
                stop.clone(),
                sent.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(l.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Outcome::default();
    for t in tasks {
        if let Ok(o) = t.await {
            total.accepted += o.accepted;
            total.rejected += o.rejected;
            total.latencies_us.extend(o.latencies_us);
            for (k, v) in o.errors {
                *total.errors.entry(k).or_default() += v;
            }
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let pct = |p: f64| {
        if total.latencies_us.is_empty() {
            0.0
        } else {
            total.latencies_us[((total.latencies_us.len() - 1) as f64 * p) as usize] as f64 / 1000.0
        }
    };
    Report {
        accepted: total.accepted,
        rejected: total.rejected,
        seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        errors: total.errors,
        bytes_per_span,
    }
}

fn print_report(r: &Report) {
    println!(
        "accepted {} spans in {:.1} s: {:.0} spans/s; latency p50 {:.2} ms p99 {:.2} ms; rejected {}; errors {:?}; raw OTLP {:.0} bytes/span",
        r.accepted,
        r.seconds,
        r.accepted as f64 / r.seconds,
        r.p50_ms,
        r.p99_ms,
        r.rejected,
        r.errors,
        r.bytes_per_span
    );
}

/// utime + stime of a process, in seconds (USER_HZ = 100 on Linux).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(key)
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn lake_rows_and_bytes(dir: &std::path::Path) -> (u64, u64) {
    let (mut rows, mut bytes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
                use parquet::file::reader::FileReader;
                let reader = std::fs::File::open(&p)
                    .ok()
                    .and_then(|f| parquet::file::reader::SerializedFileReader::new(f).ok());
                if let Some(r) = reader {
                    rows += r.metadata().file_metadata().num_rows() as u64;
                }
            }
        }
    }
    (rows, bytes)
}

const DEFAULT_BENCH_PIPELINE: &str = r#"{
  "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "{GRPC}"}, "http": {"endpoint": "{HTTP}"}}}},
  "processors": {"lifecycle": {}, "redaction": {"builtin_rules": true}, "batch": {"max_size": 1000, "timeout": "200ms"}},
  "exporters": {"parquet": {"path": "{DATA}"}},
  "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["lifecycle", "redaction", "batch"], "exporters": ["parquet"], "acknowledgements": "{ACKS}"}}}
}"#;

async fn bench(
    collector: PathBuf,
    config: Option<PathBuf>,
    acknowledgements: String,
    l: Load,
) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("spanlake-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let data = dir.join("lake");
    let template = match &config {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => DEFAULT_BENCH_PIPELINE.to_string(),
    };
    // Two free ports, both held until both are known (a port let go at once could come back
    // as the second).
    let (grpc, http) = {
        let bind = || std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string());
        let (a, b) = (bind()?, bind()?);
        let addr = |l: &std::net::TcpListener| {
            l.local_addr()
                .map(|a| a.to_string())
                .map_err(|e| e.to_string())
        };
        (addr(&a)?, addr(&b)?)
    };
    let cfg = template
        .replace("{GRPC}", &grpc)
        .replace("{HTTP}", &http)
        .replace("{ACKS}", &acknowledgements)
        .replace("{DATA}", &data.display().to_string());
    let cfg_path = dir.join("pipeline.yaml");
    std::fs::write(&cfg_path, cfg).map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(&collector)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", collector.display()))?;
    let pid = child.id().ok_or("the collector exited")?;
    let endpoint = if l.protocol == Protocol::Grpc {
        grpc
    } else {
        http
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&endpoint).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Ok(Some(code)) = child.try_wait() {
        return Err(format!(
            "the collector exited as it started ({code}): run `{} run --config {}` to see why",
            collector.display(),
            cfg_path.display()
        ));
    }
    let idle_kib = status_kib(pid, "VmRSS:");
    let cpu0 = cpu_seconds(pid);
    let report = drive(&endpoint, &l).await;
    let cpu1 = cpu_seconds(pid);
    let peak_kib = status_kib(pid, "VmHWM:");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let code = child.wait().await.map_err(|e| e.to_string())?;
    let (rows, bytes) = lake_rows_and_bytes(&data);
    print_report(&report);
    let cpu = cpu1 - cpu0;
    println!(
        "collector: {:.0} spans per CPU-second ({:.2} CPU-s for {} spans; {:.1}% of a core over the run); idle RSS {:.1} MiB, peak RSS {:.1} MiB",
        report.accepted as f64 / cpu.max(1e-9),
        cpu,
        report.accepted,
        100.0 * cpu / report.seconds,
        idle_kib as f64 / 1024.0,
        peak_kib as f64 / 1024.0
    );
    println!(
        "lake: {rows} rows written for {} spans acknowledged ({}); {:.1} bytes/span on disk vs {:.1} bytes/span of raw OTLP; exit {code}",
        report.accepted,
        if rows == report.accepted {
            "match"
        } else {
            "MISMATCH"
        },
        bytes as f64 / rows.max(1) as f64,
        report.bytes_per_span
    );
    let _ = std::fs::remove_dir_all(&dir);
    if rows != report.accepted {
        return Err("spans written and acknowledged differ".into());
    }
    Ok(())
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), String> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        match cli.command {
            Command::Run { endpoint, load } => {
                print_report(&drive(&endpoint, &load).await);
                Ok(())
            }
            Command::Bench {
                collector,
                config,
                acknowledgements,
                load,
            } => bench(collector, config, acknowledgements, load).await,
            Command::Sink { endpoint } => sink(&endpoint).await,
        }
    })
}

/// Decodes every request and keeps nothing.
struct Sink;

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        drop(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn sink(endpoint: &str) -> Result<(), String> {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;
    let listener = tokio::net::TcpListener::bind(endpoint)
        .await
        .map_err(|e| format!("cannot listen on {endpoint}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(
            TraceServiceServer::new(Sink)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .max_decoding_message_size(64 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The string values the requests of `distinct_values` carry for `attr.0`.
    fn values(distinct_values: u64) -> (usize, BTreeSet<String>) {
        let mut l = Load::parse_from(["load", "--distinct", "8", "--attribute-size", "12"]);
        l.distinct_values = distinct_values;
        let mut all = Vec::new();
        for body in encode_requests(&l) {
            let req = ExportTraceServiceRequest::decode(body).expect("decodes");
            for sp in &req.resource_spans[0].scope_spans[0].spans {
                match &sp.attributes[0]
                    .value
                    .as_ref()
                    .and_then(|v| v.value.as_ref())
                {
                    Some(Value::StringValue(s)) => all.push(s.clone()),
                    other => panic!("attr.0 is {other:?}"),
                }
            }
        }
        assert!(
            all.iter()
                .all(|v| v.len() == 12 && v.bytes().all(|b| b.is_ascii_lowercase()))
        );
        (all.len(), all.into_iter().collect())
    }

    #[derive(Parser)]
    struct LoadOnly {
        #[command(flatten)]
        load: Load,
    }

    impl Load {
        fn parse_from<const N: usize>(args: [&str; N]) -> Load {
            LoadOnly::parse_from(args).load
        }
    }

    #[test]
    fn values_are_as_distinct_as_asked() {
        assert_eq!(values(1).1.len(), 1, "the default: one value");
        let mut l = Load::parse_from(["load", "--distinct", "2", "--attribute-size", "12"]);
        l.attributes = 3;
        let req =
            ExportTraceServiceRequest::decode(encode_requests(&l)[0].clone()).expect("decodes");
        let sp = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_ne!(
            sp.attributes[0].value, sp.attributes[1].value,
            "each attribute has its own value"
        );
        let (n, seen) = values(5);
        assert_eq!((n, seen.len()), (800, 5));
        let (n, seen) = values(0);
        assert_eq!(seen.len(), n, "every value differs");
    }
}
