//! criterion benches of the span path's stages, each on the same request: 100 spans in four
//! resource groups, 5 span attributes and 3 resource attributes (what `spanlake-loadgen` sends is
//! in the same range). Every figure is per request of 100 spans; criterion reports throughput in
//! spans.
//!
//! ```sh
//! cargo bench -p spanlake-bench --bench hot_path
//! ```
//!
//! `decode` is the floor: nothing that takes OTLP protobuf can be cheaper than reading it once.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, Status};
use parquet::arrow::ArrowWriter;
use prost::Message;
use spanlake_bench::{SERVICES, kv, resource_groups};
use spanlake_core::{Batch, SpanBlock};
use spanlake_exporter::parquet::convert::SpanRows;
use spanlake_exporter::parquet::schema::span_schema;
use spanlake_exporter::parquet::{HeldSpans, Sealed};
use spanlake_processor::batch::Pending;
use spanlake_processor::lifecycle::{Lifecycle, LifecycleConfig};
use spanlake_processor::redaction::{RedactionConfig, Redactor};

const SPANS: u64 = 100;

fn request(n: u64) -> Vec<ResourceSpans> {
    let t0 = 1_767_225_600_000_000_000u64 + n * 1_000_000_000;
    let mut groups: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    for i in 0..SPANS {
        let mut tid = [0u8; 16];
        tid[..8].copy_from_slice(&(n + 1).to_be_bytes());
        tid[8..].copy_from_slice(&(i / 10 + 1).to_be_bytes());
        groups[(i % 4) as usize].push(Span {
            trace_id: tid.to_vec(),
            span_id: ((n << 16) | (i + 1)).to_be_bytes().to_vec(),
            parent_span_id: if i % 10 == 0 {
                Vec::new()
            } else {
                ((n << 16) | ((i / 10) * 10 + 1)).to_be_bytes().to_vec()
            },
            name: format!("GET /api/items/{}", i % 7),
            kind: 2,
            start_time_unix_nano: t0 + i * 1000,
            end_time_unix_nano: t0 + i * 1000 + 500_000,
            attributes: vec![
                kv("http.route", Value::StringValue("/api/items/{id}".into())),
                kv("http.request.method", Value::StringValue("GET".into())),
                kv("http.response.status_code", Value::IntValue(200)),
                kv("user.id", Value::StringValue(format!("user-{}", i % 50))),
                kv("net.peer.port", Value::IntValue(40_000 + i as i64)),
            ],
            status: Some(Status::default()),
            ..Default::default()
        });
    }
    resource_groups(groups, "host-1")
}

fn stages(c: &mut Criterion) {
    let groups = request(1);
    let bytes = ExportTraceServiceRequest {
        resource_spans: groups.clone(),
    }
    .encode_to_vec();
    let mut g = c.benchmark_group("span_path");
    g.throughput(Throughput::Elements(SPANS));

    g.bench_function("decode into prost structs (the floor)", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(bytes.as_slice())).expect("valid"))
    });

    g.bench_function("decode into a span block", |b| {
        b.iter(|| SpanBlock::decode(black_box(bytes.as_slice()), true).expect("valid"))
    });

    g.bench_function("encode a span block (write-ahead log)", |b| {
        let block = SpanBlock::from_prost(&groups);
        let mut out = Vec::new();
        b.iter(|| {
            out.clear();
            black_box(&block).encode(&mut out);
            out.len()
        })
    });

    // Blocks as the receivers make them (decoded: repeated keys stored once).
    let blocks = vec![SpanBlock::decode(&bytes, true).expect("valid").0];

    let redactor = Redactor::new(&RedactionConfig {
        builtin_rules: true,
        ..Default::default()
    })
    .expect("rules");
    g.bench_function("redaction (built-in rules)", |b| {
        b.iter_batched_ref(
            || blocks.clone(),
            |bs| redactor.redact(bs),
            BatchSize::SmallInput,
        )
    });

    g.bench_function("lifecycle (all spans ended)", |b| {
        let mut lc = Lifecycle::new(LifecycleConfig::default());
        b.iter(|| lc.observe(black_box(&blocks), tokio::time::Instant::now()))
    });

    g.bench_function("batching (10 requests into 1000-span batches)", |b| {
        b.iter_batched(
            || {
                (0..10)
                    .map(|_| Batch::blocks(blocks.clone()))
                    .collect::<Vec<_>>()
            },
            |batches| {
                let mut p = Pending::default();
                for batch in batches {
                    p.push(batch);
                }
                p.take(1000)
            },
            BatchSize::SmallInput,
        )
    });

    let mut rows = SpanRows::new();
    g.bench_function("OTLP to Arrow", |b| {
        b.iter(|| {
            rows.append(black_box(&blocks), 7).expect("append");
            rows.finish().expect("finish")
        })
    });
    g.finish();

    // Parquet: a whole file of 100k rows, as the exporter writes it (sorted, zstd level 3).
    let mut rows = SpanRows::new();
    for n in 0..1000 {
        rows.append(&[SpanBlock::from_prost(&request(n))], 7)
            .expect("append");
    }
    let batch = rows.finish().expect("finish");
    let mut g = c.benchmark_group("lake");
    g.throughput(Throughput::Elements(batch.num_rows() as u64));
    g.sample_size(10);
    let props = spanlake_exporter::parquet::writer_properties(3, 131_072);
    g.bench_function("Parquet encode (100k spans, zstd 3)", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(4 << 20);
            let mut w =
                ArrowWriter::try_new(&mut out, Arc::clone(&span_schema()), Some(props.clone()))
                    .expect("writer");
            w.write(black_box(&batch)).expect("write");
            w.close().expect("close");
            out.len()
        })
    });
    // The same, with min/max statistics on every leaf column (the lake's settings before they
    // were turned off inside maps and lists): the difference is what they cost.
    let mut every_leaf = props.clone().into_builder();
    let descr = parquet::arrow::ArrowSchemaConverter::new()
        .convert(&span_schema())
        .expect("schema");
    for col in descr.columns() {
        every_leaf = every_leaf.set_column_statistics_enabled(
            col.path().clone(),
            parquet::file::properties::EnabledStatistics::Page,
        );
    }
    let every_leaf = every_leaf.build();
    g.bench_function("Parquet encode, statistics on every leaf", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(4 << 20);
            let mut w = ArrowWriter::try_new(
                &mut out,
                Arc::clone(&span_schema()),
                Some(every_leaf.clone()),
            )
            .expect("writer");
            w.write(black_box(&batch)).expect("write");
            w.close().expect("close");
            out.len()
        })
    });
    g.finish();

    // A seal: held blocks sorted, converted to Arrow and encoded as one row group, as the
    // exporter does when a row group fills (4,096 rows: the sidecar's; 100: the fixed cost).
    let held: Vec<HeldSpans> = (0..41)
        .map(|n| HeldSpans {
            ingest: 7,
            block: Arc::new(SpanBlock::from_prost(&request(n))),
        })
        .collect();
    let mut g = c.benchmark_group("seal");
    for blocks in [1usize, 41] {
        g.throughput(Throughput::Elements(blocks as u64 * SPANS));
        g.bench_function(format!("seal {} spans", blocks as u64 * SPANS), |b| {
            b.iter(|| Sealed::seal_spans(black_box(&held[..blocks]), &props).expect("seal"))
        });
    }
    g.finish();
}

/// The collector testbed's large spans: 10 spans a request, each with the same 20 string
/// values of 5,000 random letters (one value per attribute, as the testbed generates them).
fn large_request(seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let values: Vec<String> = (0..20)
        .map(|_| {
            (0..5000)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    char::from(b'a' + ((x >> 33) % 26) as u8)
                })
                .collect()
        })
        .collect();
    let spans = (0..10u64)
        .map(|i| Span {
            trace_id: [seed.to_be_bytes(), 1u64.to_be_bytes()].concat(),
            span_id: (seed << 8 | (i + 1)).to_be_bytes().to_vec(),
            name: "GET /api/items".into(),
            kind: 2,
            start_time_unix_nano: 1_767_225_600_000_000_000 + i,
            end_time_unix_nano: 1_767_225_600_000_500_000 + i,
            attributes: values
                .iter()
                .enumerate()
                .map(|(a, v)| kv(&format!("attribute.{a}"), Value::StringValue(v.clone())))
                .collect(),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: resource_groups(vec![spans], "host-1"),
    }
    .encode_to_vec()
}

/// The write-ahead log's append (durable acknowledgements; the fsync is left out: it is the
/// disk's): a request of the testbed's large spans, as the receiver decoded it, encoded and
/// written to the page cache.
fn log(c: &mut Criterion) {
    use spanlake_exporter::parquet::wal::{Wal, WalConfig};
    let dir = std::env::temp_dir().join(format!("spanlake-bench-wal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = WalConfig {
        max_size: 1 << 40,
        ..WalConfig::default()
    };
    let (mut wal, _) = Wal::open(&dir, config, |_, _, _| {}).expect("open the log");
    let blocks: Vec<Vec<SpanBlock>> = (1..=8)
        .map(|seed| {
            vec![
                SpanBlock::decode(&large_request(seed), true)
                    .expect("valid")
                    .0,
            ]
        })
        .collect();
    let redactor = Redactor::new(&RedactionConfig {
        builtin_rules: true,
        ..Default::default()
    })
    .expect("rules");
    let mut g = c.benchmark_group("large_spans");
    g.throughput(Throughput::Elements(10));
    g.bench_function(
        "redaction (built-in rules) of 10 spans of 20 × 5 KB values",
        |b| {
            b.iter_batched_ref(
                || blocks[0].clone(),
                |bs| redactor.redact(bs),
                BatchSize::SmallInput,
            )
        },
    );
    g.finish();

    let mut g = c.benchmark_group("write_ahead_log");
    g.throughput(Throughput::Elements(10));
    let mut n = 0;
    g.bench_function("append 10 spans of 20 × 5 KB values", |b| {
        b.iter(|| {
            n += 1;
            let w = wal
                .append(n, black_box(&blocks[n as usize % blocks.len()]), &[])
                .expect("append");
            wal.trim(w.segment);
            w.bytes
        })
    });
    g.finish();
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, stages, log);
criterion_main!(benches);
