"""Traces as first-class (seed 004): a trace opened with metadata, trace-level and span-level
events, spans, and an end with a status that auto-closes what still runs — replayed through the
native API and through the official OpenTelemetry Python SDK (spans + OTLP logs), then read
back through SQL (`traces`, `logs`, `spans`), GetTrace, the Tempo API and `spanlake trace`."""

import json
import pathlib
import subprocess
import time
import urllib.request

import grpc
import pytest

from conftest import BIN, pipeline
from test_native_api import pb  # noqa: F401  (the stubs fixture)
from test_otlp_json import post

SECRET = "Bearer abcdefghijklmnopqrstuvwxyz0123456789"
API_KEY = "sk_live_4f9a8b7c6d5e4f3a2b1c"


def sql(c, query):
    status, _, body = post(f"{c.query_url}/api/sql", query.encode(), "text/plain")
    assert status == 200, body
    return json.loads(body)


def lake_bytes(data_dir):
    return b"".join(p.read_bytes() for p in pathlib.Path(data_dir).rglob("*") if p.is_file())


@pytest.fixture
def default_collector(collector_factory, data_dir):
    return collector_factory(pipeline(
        data_dir, batch={"timeout": "20ms"}, processors=("lifecycle", "redaction", "batch"),
        acknowledgements="durable", parquet={"max_file_age": "500ms"}))


def test_seed_004_through_the_native_api(default_collector, data_dir, pb):  # noqa: F811
    trace, grpc_mod = pb
    c = default_collector
    ch = grpc.insecure_channel(c.grpc)
    stub = grpc_mod.TraceStub(ch)
    tid = "publish-7f3a"
    t = time.time_ns()
    ms = 1_000_000

    r = stub.StartTrace(trace.StartTraceRequest(
        trace_id=tid, project_id="proj-42", request_id="req-9001",
        input=json.dumps({"mediaUrl": "https://cdn.example/v.mp4", "title": "Launch"}),
        context=json.dumps({"ip": "203.0.113.7", "api_key": API_KEY}),
        tags=["publish", "api"], service_name="publisher", start_time_unix_nano=t), timeout=10)
    assert r.success and r.trace_id == tid
    ev = lambda name, at, span="", level="INFO", **attrs: stub.RecordEvent(trace.RecordEventRequest(  # noqa: E731
        trace_id=tid, span_id=span, level=level, name=name, time_unix_nano=t + at * ms, attributes=attrs), timeout=10)
    ev("publish.request.received", 1, mediaUrl="https://cdn.example/v.mp4")
    span = lambda sid, name, start, end=0, parent="": stub.RecordSpan(trace.Span(  # noqa: E731
        trace_id=tid, span_id=sid, parent_span_id=parent, name=name, start_time_unix_nano=t + start * ms,
        end_time_unix_nano=(t + end * ms) if end else 0, resource=trace.Resource(attributes={"service.name": "publisher"}),
        status=trace.Status(code=1) if end else None), timeout=10)
    span("master", "master", 2)
    ev("platforms.selected", 3, span="master", platforms='["instagram","youtube"]')
    span("ig", "instagram", 4, parent="master")
    span("prep", "prep", 5, 20, parent="ig")
    ev("prep.started", 6, span="prep")
    ev("coordinator.waiting_for_upload", 21, authorization=SECRET)
    span("upload", "upload", 22, 40, parent="ig")
    ev("upload.started", 23, span="upload")
    ev("worker.resumed", 30, level="WARN")  # another worker continues the trace (fromExisting)
    end = stub.EndTrace(trace.EndTraceRequest(trace_id=tid, status=trace.Status(code=1), end_time_unix_nano=t + 50 * ms), timeout=10)
    assert end.success and end.closed_spans == 2  # instagram and master were still running

    # The trace's row.
    [row] = sql(c, f"SELECT * FROM traces WHERE trace_id = '{tid}'")
    assert row["project_id"] == "proj-42" and row["request_id"] == "req-9001"
    assert json.loads(row["input"]) == {"mediaUrl": "https://cdn.example/v.mp4", "title": "Launch"}
    context = json.loads(row["context"])
    assert context["ip"] == "203.0.113.7" and context["api_key"] != API_KEY
    assert json.loads(row["tags"]) == ["publish", "api"]
    assert row["status_code"] == "OK"
    assert row["start_time_unix_nano"] == t and row["end_time_unix_nano"] == t + 50 * ms
    assert row["duration_ns"] == 50 * ms
    assert row["root_name"] == "master" and row["root_service_name"] == "publisher"
    assert (row["span_count"], row["error_count"], row["running_count"], row["event_count"]) == (4, 0, 0, 6)

    # Events in order on the timeline: trace-level ones have no span.
    events = sql(c, f"SELECT span_id, event_name, severity_text, attributes FROM logs WHERE trace_id = '{tid}' "
                    "AND event_name NOT LIKE 'spanlake.trace.%' ORDER BY time_unix_nano")
    # (the SQL API leaves out null fields)
    assert [(e["event_name"], e.get("span_id")) for e in events] == [
        ("publish.request.received", None), ("platforms.selected", "master"), ("prep.started", "prep"),
        ("coordinator.waiting_for_upload", None), ("upload.started", "upload"), ("worker.resumed", None)]
    assert events[5]["severity_text"] == "WARN"
    assert events[3]["attributes"]["authorization"] != SECRET
    # Running spans were closed at the trace's end with its status.
    closed = sql(c, f"SELECT span_id, end_time_unix_nano, status_code, attributes['spanlake.auto_close_reason'] AS reason "
                    f"FROM spans WHERE trace_id = '{tid}' AND span_id IN ('master', 'ig') ORDER BY span_id")
    assert [(r["span_id"], r["end_time_unix_nano"], r["status_code"], r["reason"]) for r in closed] == [
        ("ig", t + 50 * ms, "OK", "trace_end"), ("master", t + 50 * ms, "OK", "trace_end")]

    # GetTrace: the tree, the events, the metadata.
    got = stub.GetTrace(trace.GetTraceRequest(trace_id=tid), timeout=10)
    assert [(s.span.name, s.depth) for s in got.spans] == [("master", 0), ("instagram", 1), ("prep", 2), ("upload", 2)]
    assert [(e.name, e.span_id, e.level) for e in got.events] == [
        ("publish.request.received", "", "INFO"), ("platforms.selected", "master", "INFO"), ("prep.started", "prep", "INFO"),
        ("coordinator.waiting_for_upload", "", "INFO"), ("upload.started", "upload", "INFO"), ("worker.resumed", "", "WARN")]
    assert got.info.project_id == "proj-42" and list(got.info.tags) == ["publish", "api"]
    assert got.info.status_code == "OK" and got.info.span_count == 4 and got.info.event_count == 6

    # Tempo: span events on their span, trace-level events on the root, marked.
    with urllib.request.urlopen(f"{c.query_url}/api/traces/{tid}", timeout=10) as resp:
        doc = json.loads(resp.read())
    spans = {s["name"]: s for b in doc["batches"] for ss in b["scopeSpans"] for s in ss["spans"]}
    assert [e["name"] for e in spans["prep"].get("events", [])] == ["prep.started"]
    root_events = [e["name"] for e in spans["master"]["events"]]
    assert root_events == ["publish.request.received", "platforms.selected", "coordinator.waiting_for_upload", "worker.resumed"]
    # Jaeger: the same events as span logs.
    with urllib.request.urlopen(f"{c.query_url}/jaeger/api/traces/{tid}", timeout=10) as resp:
        jdoc = json.loads(resp.read())
    jspans = {s["operationName"]: s for s in jdoc["data"][0]["spans"]}
    upload_logs = [f["value"] for log in jspans["upload"]["logs"] for f in log["fields"] if f["key"] == "event"]
    assert upload_logs == ["upload.started"], jspans["upload"]["logs"]
    ch.close()
    assert c.stop() == 0

    # The CLI's trace view, from the committed files.
    out = subprocess.run([BIN, "trace", tid, "--data", str(data_dir)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "project proj-42 · request req-9001" in text and "status OK" in text
    lines = text.splitlines()
    prep = next(i for i, l in enumerate(lines) if l.lstrip().startswith("prep "))
    assert "prep.started" in lines[prep + 1]
    trace_events = lines[lines.index("trace events:") + 1:]
    assert [l.split()[4] for l in trace_events] == ["publish.request.received", "coordinator.waiting_for_upload", "worker.resumed"]
    # Nothing secret anywhere on disk.
    raw = lake_bytes(data_dir)
    assert SECRET.encode() not in raw and API_KEY.encode() not in raw


def test_seed_004_through_the_python_sdk_with_otlp_logs(collector_factory, data_dir):
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    c = collector_factory(pipeline(data_dir, batch={"timeout": "20ms"}, processors=("lifecycle", "redaction", "batch")))
    resource = Resource.create({"service.name": "publisher"})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{c.http_url}/v1/traces")))
    tracer = tp.get_tracer("seed004")
    lp_http = LoggerProvider(resource=resource)
    lp_http.add_log_record_processor(SimpleLogRecordProcessor(HttpLogExporter(endpoint=f"{c.http_url}/v1/logs")))
    lp_grpc = LoggerProvider(resource=resource)
    lp_grpc.add_log_record_processor(SimpleLogRecordProcessor(GrpcLogExporter(endpoint=c.grpc, insecure=True)))
    log_http = lp_http.get_logger("seed004")
    log_grpc = lp_grpc.get_logger("seed004")

    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace

    def trace_level(trace_id):
        # What a worker that knows only the trace id has (seed 004's Tracer.fromExisting): the
        # trace, and no span.
        sc = otel_trace.SpanContext(trace_id, 0, is_remote=True)
        return otel_trace.set_span_in_context(otel_trace.NonRecordingSpan(sc), otel_context.Context())

    with tracer.start_as_current_span("master") as master:
        trace_id = master.get_span_context().trace_id
        # Trace-level: the trace's id, no span.
        log_http.emit(LogRecord(context=trace_level(trace_id), severity_text="INFO", severity_number=SeverityNumber.INFO,
                                event_name="publish.request.received", body="publish.request.received",
                                attributes={"mediaUrl": "https://cdn.example/v.mp4"}))
        with tracer.start_as_current_span("instagram"):
            with tracer.start_as_current_span("prep") as prep:
                # Span-level, from the current context, over gRPC.
                log_grpc.emit(LogRecord(severity_text="INFO", severity_number=SeverityNumber.INFO,
                                        event_name="prep.started", body="prep.started",
                                        attributes={"password": "hunter2-secret"}))
                prep.set_status(Status(StatusCode.OK))
            log_http.emit(LogRecord(context=trace_level(trace_id), severity_text="INFO", severity_number=SeverityNumber.INFO,
                                    event_name="coordinator.waiting_for_upload", body="coordinator.waiting_for_upload"))
            with tracer.start_as_current_span("upload"):
                pass
    lp_http.shutdown()
    lp_grpc.shutdown()
    tp.shutdown()

    tid = f"{trace_id:032x}"
    events = sql(c, f"SELECT span_id, event_name, body, attributes, service_name FROM logs WHERE trace_id = '{tid}' ORDER BY time_unix_nano")
    assert [e["event_name"] for e in events] == ["publish.request.received", "prep.started", "coordinator.waiting_for_upload"]
    assert "span_id" not in events[0] and "span_id" not in events[2]
    prep_id = sql(c, f"SELECT span_id FROM spans WHERE trace_id = '{tid}' AND name = 'prep'")[0]["span_id"]
    assert events[1]["span_id"] == prep_id
    assert events[1]["attributes"]["password"] != "hunter2-secret"
    assert events[0]["service_name"] == "publisher"
    [row] = sql(c, f"SELECT root_name, span_count, event_count, status_code FROM traces WHERE trace_id = '{tid}'")
    assert (row["root_name"], row["span_count"], row["event_count"]) == ("master", 4, 3)
    assert c.stop() == 0
    assert b"hunter2-secret" not in lake_bytes(data_dir)


def test_otlp_logs_over_http_json_and_bad_input(collector_factory, data_dir):
    c = collector_factory(pipeline(data_dir))
    doc = {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
           "scopeLogs": [{"scope": {"name": "s"}, "logRecords": [
               {"timeUnixNano": "1767225600000000000", "severityNumber": 17, "severityText": "ERROR",
                "traceId": "5B8EFFF798038103D269B633813FC60C", "body": {"stringValue": "payment failed"},
                "attributes": [{"key": "order", "value": {"intValue": "42"}}]},
               {"timeUnixNano": "1767225600000000001", "traceId": "5b8e", "body": {"stringValue": "bad id"}},
               {"observedTimeUnixNano": "1767225600000000002", "body": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": True}}]}}}]}]}]}
    status, headers, body = post(f"{c.http_url}/v1/logs", json.dumps(doc).encode())
    assert status == 200, body
    assert json.loads(body)["partialSuccess"]["rejectedLogRecords"] == "1"
    # gzip, as SDKs send it
    import gzip
    one = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"timeUnixNano": "1767225600000000003", "body": {"stringValue": "zipped"}}]}]}]}
    status, _, body = post(f"{c.http_url}/v1/logs", gzip.compress(json.dumps(one).encode()), encoding="gzip")
    assert status == 200, body
    status, _, body = post(f"{c.http_url}/v1/logs", b"{not json")
    assert status == 400 and b"ExportLogsServiceRequest" in body
    status, _, _ = post(f"{c.http_url}/v1/logs", b"x", "text/plain")
    assert status == 415
    rows = sql(c, "SELECT trace_id, severity_number, body, body_type, attributes, time_unix_nano FROM logs ORDER BY time_unix_nano")
    assert rows[0]["trace_id"] == "5b8efff798038103d269b633813fc60c" and rows[0]["body"] == "payment failed"
    assert rows[0]["attributes"] == {"order": "42"} and rows[0]["severity_number"] == 17
    assert rows[2]["body"] == "zipped"
    assert "trace_id" not in rows[1] and rows[1]["body_type"] == "kvlist" and rows[1]["time_unix_nano"] == 1767225600000000002
    assert c.stop() == 0
    # An independent reader sees the logs table too.
    import duckdb
    glob = str(pathlib.Path(data_dir) / "logs" / "**" / "*.parquet")
    n = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true)").fetchone()[0]
    assert n == 3
