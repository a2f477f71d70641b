"""The official OpenTelemetry Python SDK sends varied traces over gRPC and HTTP/protobuf; the
lake, read back by pyarrow and DuckDB, holds every field as sent."""

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from conftest import duckdb_query, pipeline, read_lake
from lake_check import check_lake


def make_spans():
    """A varied trace: every attribute type, events, links, a remote parent with trace state,
    an error status, several kinds, dropped events, two scopes."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout", "deployment.environment": "e2e", "host.cpus": 4, "ratio": 0.5}),
        span_limits=SpanLimits(max_events=2),
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop.http", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0", attributes={"scope.flag": True})
    other = provider.get_tracer("shop.db")
    remote = SpanContext(
        trace_id=0x5B8EFFF798038103D269B633813FC60C,
        span_id=0xEEE19B7EC3C1B173,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )
    linked = SpanContext(trace_id=0x11112222333344445555666677778888, span_id=0x1234567890ABCDEF, is_remote=True)
    ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span(
        "GET /cart",
        context=ctx,
        kind=SpanKind.SERVER,
        attributes={
            "http.route": "/cart",
            "http.status_code": 200,
            "retry": False,
            "latency.ratio": 0.125,
            "tags": ["a", "b"],
            "codes": [1, 2, 3],
            "weights": [0.5, 1.5],
            "flags": [True, False],
        },
        links=[Link(linked, {"link.reason": "retry-of", "attempt": 2})],
    ) as root:
        root.add_event("cart.loaded", {"items": 3, "total": 9.5, "currency": "EUR"})
        root.add_event("cache.miss")
        root.add_event("dropped.by.limit")
        with other.start_as_current_span("SELECT carts", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}) as q:
            q.set_status(Status(StatusCode.ERROR, "connection reset by peer"))
            q.record_exception(ValueError("boom"))
        with tracer.start_as_current_span("render", kind=SpanKind.INTERNAL) as r:
            r.set_status(Status(StatusCode.OK))
    with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER):
        pass
    with tracer.start_as_current_span("consume", kind=SpanKind.CONSUMER):
        pass
    provider.shutdown()
    return memory.get_finished_spans()


def grpc_exporter(c):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"http://{c.grpc}", insecure=True)


def grpc_gzip_exporter(c):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from grpc import Compression

    return OTLPSpanExporter(endpoint=f"http://{c.grpc}", insecure=True, compression=Compression.Gzip)


def http_exporter(c):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{c.http_url}/v1/traces")


def http_gzip_exporter(c):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=f"{c.http_url}/v1/traces", compression=Compression.Gzip)


@pytest.mark.parametrize("make_exporter", [grpc_exporter, grpc_gzip_exporter, http_exporter, http_gzip_exporter])
def test_every_field_survives(collector_factory, data_dir, make_exporter):
    c = collector_factory(pipeline(data_dir))
    spans = make_spans()
    exporter = make_exporter(c)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert c.stop() == 0, c.stderr()

    rows = read_lake(data_dir)
    check_lake(rows, encode_spans(spans))

    # DuckDB reads the same files, maps and all.
    got = duckdb_query(
        data_dir,
        "SELECT name, kind, status_code, attributes['http.route'], attribute_types['http.status_code'], "
        "service_name, resource_attributes['host.cpus'], len(events), hour "
        "FROM spans ORDER BY start_time_unix_nano",
    )
    root = [g for g in got if g[0] == "GET /cart"][0]
    route = root[3][0] if isinstance(root[3], list) else root[3]
    code_type = root[4][0] if isinstance(root[4], list) else root[4]
    cpus = root[6][0] if isinstance(root[6], list) else root[6]
    assert (root[1], root[2], route, code_type, root[5], cpus, root[7]) == ("SERVER", "UNSET", "/cart", "int", "checkout", "4", 2)
    errors = duckdb_query(data_dir, "SELECT name, status_message FROM spans WHERE status_code = 'ERROR'")
    assert errors == [("SELECT carts", "connection reset by peer")]
    # rows are sorted by trace id, then start time, inside each file
    ordered = duckdb_query(data_dir, "SELECT trace_id, start_time_unix_nano, filename FROM read_parquet('" + str(data_dir) + "/spans/**/*.parquet', filename = true)")
    per_file = {}
    for t, s, f in ordered:
        per_file.setdefault(f, []).append((t, s))
    for f, keys in per_file.items():
        assert keys == sorted(keys), f"{f} is not sorted by (trace_id, start)"
