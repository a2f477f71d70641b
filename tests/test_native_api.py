"""The native trace API of seed 000 (proto/trace.proto), with stubs generated from the proto by
the official gRPC tools: record spans, query them back at once, trees, ending a trace, richer
fields, health and reflection."""

import importlib
import subprocess
import sys
import time

import grpc
import pytest

from conftest import ROOT, pipeline
from test_otlp_json import post


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    out = tmp_path_factory.mktemp("stubs")
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", f"--grpc_python_out={out}", "trace.proto"],
        check=True,
    )
    sys.path.insert(0, str(out))
    return importlib.import_module("trace_pb2"), importlib.import_module("trace_pb2_grpc")


@pytest.fixture(params=[("batch",), ("lifecycle", "redaction", "batch")], ids=["plain", "default-processors"])
def client(collector_factory, data_dir, pb, request):
    c = collector_factory(pipeline(data_dir, batch={"timeout": "20ms"}, processors=request.param))
    ch = grpc.insecure_channel(c.grpc)
    yield c, pb[0], pb[1].TraceStub(ch), ch
    ch.close()


def now_ns():
    return time.time_ns()


def test_seed_000_record_and_query_back(client):
    c, trace, stub, _ = client
    t = now_ns()
    spans = [
        trace.Span(trace_id="eval-run-042", span_id="step-01", name="generate-output", kind=1,
                   start_time_unix_nano=t, end_time_unix_nano=t + 2_000_000_000,
                   attributes={"agent.name": "release-engineer", "step.type": "generation"},
                   status=trace.Status(code=1), resource=trace.Resource(attributes={"service.name": "my-product"})),
        trace.Span(trace_id="eval-run-042", span_id="step-02", parent_span_id="step-01", name="verify-output", kind=1,
                   start_time_unix_nano=t + 1, end_time_unix_nano=t + 800_000_000,
                   attributes={"agent.name": "release-engineer", "step.type": "verification", "verdict": "pass"},
                   status=trace.Status(code=1), resource=trace.Resource(attributes={"service.name": "my-product"})),
        trace.Span(trace_id="eval-run-042", span_id="step-03", parent_span_id="step-01", name="publish-results", kind=1,
                   start_time_unix_nano=t + 2, end_time_unix_nano=t + 500_000_000,
                   attributes={"agent.name": "release-engineer"},
                   status=trace.Status(code=2, message="Connection refused on port 3005"),
                   resource=trace.Resource(attributes={"service.name": "my-product"})),
    ]
    for s in spans:
        assert stub.RecordSpan(s, timeout=10).success is True
    # at once: no wait for a file
    got = stub.QuerySpans(trace.QueryRequest(filter=trace.Filter(trace_id="eval-run-042")), timeout=10).spans
    assert [s.span_id for s in got] == ["step-01", "step-02", "step-03"]
    by_id = {s.span_id: s for s in got}
    for sent in spans:
        back = by_id[sent.span_id]
        assert back.trace_id == "eval-run-042"
        assert back.parent_span_id == sent.parent_span_id
        assert back.name == sent.name and back.kind == sent.kind
        assert back.start_time_unix_nano == sent.start_time_unix_nano
        assert back.end_time_unix_nano == sent.end_time_unix_nano
        assert dict(back.attributes) == dict(sent.attributes)
        assert (back.status.code, back.status.message) == (sent.status.code, sent.status.message)
        assert dict(back.resource.attributes) == {"service.name": "my-product"}
    errors = stub.QuerySpans(trace.QueryRequest(filter=trace.Filter(trace_id="eval-run-042", status_code=2)), timeout=10).spans
    assert [(s.span_id, s.status.message) for s in errors] == [("step-03", "Connection refused on port 3005")]
    # the tree
    tree = stub.GetTrace(trace.GetTraceRequest(trace_id="eval-run-042"), timeout=10)
    assert [(n.span.span_id, n.depth, n.orphan) for n in tree.spans] == [("step-01", 0, False), ("step-02", 1, False), ("step-03", 1, False)]
    # the missing-id errors
    with pytest.raises(grpc.RpcError) as e:
        stub.RecordSpan(trace.Span(span_id="x", name="n"), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details() == "trace_id is required"
    with pytest.raises(grpc.RpcError) as e:
        stub.RecordSpan(trace.Span(trace_id="eval-run-042", name="n"), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details() == "span_id is required"
    with pytest.raises(grpc.RpcError) as e:
        stub.GetTrace(trace.GetTraceRequest(trace_id="no-such-trace"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # the same spans through SQL and the Tempo API
    status, _, body = post(f"{c.query_url}/api/sql", b"SELECT span_id, attributes['verdict'] AS v FROM spans WHERE trace_id = 'eval-run-042' AND attributes['verdict'] IS NOT NULL", "text/plain")
    assert status == 200 and b'"span_id":"step-02"' in body and b'"v":"pass"' in body
    assert c.stop() == 0


def test_end_trace_closes_running_spans(client):
    c, trace, stub, _ = client
    t = now_ns()
    stub.RecordSpan(trace.Span(trace_id="run-7", span_id="root", name="master", start_time_unix_nano=t), timeout=10)
    stub.RecordSpan(trace.Span(trace_id="run-7", span_id="prep", parent_span_id="root", name="prep",
                               start_time_unix_nano=t + 10, end_time_unix_nano=t + 20, status=trace.Status(code=1)), timeout=10)
    running = stub.QuerySpans(trace.QueryRequest(filter=trace.Filter(trace_id="run-7", name="master")), timeout=10).spans
    assert running[0].end_time_unix_nano == 0, "visible as running"
    end = t + 1_000_000
    r = stub.EndTrace(trace.EndTraceRequest(trace_id="run-7", status=trace.Status(code=2, message="upload failed"), end_time_unix_nano=end), timeout=10)
    assert r.success and r.closed_spans == 1
    got = {s.span_id: s for s in stub.QuerySpans(trace.QueryRequest(filter=trace.Filter(trace_id="run-7")), timeout=10).spans}
    assert len(got) == 2, "one row per span: the closed copy replaces the running one"
    root = got["root"]
    assert root.end_time_unix_nano == end
    assert (root.status.code, root.status.message) == (2, "trace ended with an error: upload failed")
    assert root.attributes["spanlake.auto_closed"] == "true"
    assert root.attributes["spanlake.auto_close_reason"] == "trace_end"
    assert got["prep"].status.code == 1 and "spanlake.auto_closed" not in got["prep"].attributes
    # a late real end supersedes the auto-closed copy
    stub.RecordSpan(trace.Span(trace_id="run-7", span_id="root", name="master", start_time_unix_nano=t,
                               end_time_unix_nano=t + 5_000_000, status=trace.Status(code=1)), timeout=10)
    root = stub.QuerySpans(trace.QueryRequest(filter=trace.Filter(trace_id="run-7", name="master")), timeout=10).spans
    assert [(s.end_time_unix_nano, s.status.code) for s in root] == [(t + 5_000_000, 1)]
    assert c.stop() == 0


def test_richer_fields_and_otlp_ids(client):
    c, trace, stub, _ = client
    t = now_ns()
    span = trace.Span(
        trace_id="sess-trace-1", span_id="llm-1", name="openai-completion", start_time_unix_nano=t, end_time_unix_nano=t + 5,
        session_id="s-42", session_name="checkout chat", tags=["llm", "prod"],
        input='[{"role":"user","content":"hi"}]', output='{"role":"assistant","content":"hello"}',
        signals={"latency_ms": 812.5, "tokens": 42.0},
        content=trace.Content(type="Model", provider="openai", model="gpt-4o", cost=0.002, expected='{"content":"hello"}'),
        attributes={"temperature": "0.7"},
    )
    assert stub.RecordSpan(span, timeout=10).success
    [back] = stub.QuerySpans(trace.QueryRequest(filter=trace.Filter(trace_id="sess-trace-1")), timeout=10).spans
    assert (back.session_id, back.session_name, list(back.tags)) == ("s-42", "checkout chat", ["llm", "prod"])
    assert (back.input, back.output) == (span.input, span.output)
    assert dict(back.signals) == {"latency_ms": 812.5, "tokens": 42.0}
    assert back.content == span.content
    assert dict(back.attributes) == {"temperature": "0.7"}
    status, _, body = post(
        f"{c.query_url}/api/sql",
        b"SELECT attributes['session.id'] AS s, attribute_types['tags'] AS t, attributes['llm.cost_usd'] AS cost FROM spans WHERE span_id = 'llm-1'",
        "text/plain")
    assert status == 200 and body == b'[{"s":"s-42","t":"array","cost":"0.002"}]'
    by_attr = stub.QuerySpans(trace.QueryRequest(filter=trace.Filter(attributes={"session.id": "s-42"})), timeout=10).spans
    assert [s.span_id for s in by_attr] == ["llm-1"]
    # an OTLP span is found by its lowercase (or any-case) hex id
    from test_otlp_json import build_request
    assert post(f"{c.http_url}/v1/traces", build_request().SerializeToString(), "application/x-protobuf")[0] == 200
    got = stub.QuerySpans(trace.QueryRequest(filter=trace.Filter(trace_id="0AF7651916CD43DD8448EB211C80319C")), timeout=10).spans
    assert sorted(s.span_id for s in got) == ["00f067aa0ba902b7", "b7ad6b7169203331"]
    assert stub.GetTrace(trace.GetTraceRequest(trace_id="0af7651916cd43dd8448eb211c80319c"), timeout=10).spans[0].depth == 0
    assert c.stop() == 0


def test_health_and_reflection(client):
    c, trace, stub, ch = client
    check = ch.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    assert check(b"", timeout=10) == b"\x08\x01"  # SERVING
    svc = b"trace.Trace"
    assert check(b"\x0a" + bytes([len(svc)]) + svc, timeout=10) == b"\x08\x01"
    reflect = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                               request_serializer=lambda b: b, response_deserializer=lambda b: b)
    [resp] = list(reflect(iter([b"\x3a\x00"]), timeout=10))  # list_services
    assert b"trace.Trace" in resp
    assert b"opentelemetry.proto.collector.trace.v1.TraceService" in resp
    assert b"grpc.health.v1.Health" in resp
    assert c.stop() == 0
