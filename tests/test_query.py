"""Getting spans back: read-after-write through the HTTP API, SQL and trace trees from the CLI,
and the Tempo- and Jaeger-compatible APIs in the shapes Grafana and the Jaeger UI read."""

import json
import pathlib
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from conftest import BIN, pipeline
from test_otlp_json import build_request, post
from test_sdk_clients import grpc_exporter, make_spans


def get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def get_json(url):
    status, _, body = get(url)
    return status, json.loads(body)


def normalized(span):
    d = MessageToDict(span)
    if d.get("status") == {}:
        d.pop("status")
    return d


def spans_by_id(resource_spans):
    """span id → (resource dict, scope dict, span dict)"""
    out = {}
    for rs in resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                out[s.span_id.hex()] = (MessageToDict(rs.resource), MessageToDict(ss.scope), normalized(s))
    return out


@pytest.fixture
def sent(collector_factory, data_dir):
    """A collector that has acknowledged the SDK's varied trace and build_request()'s spans."""
    c = collector_factory(pipeline(data_dir, batch={"timeout": "50ms"}, parquet={"max_file_age": "1h"}))
    spans = make_spans()
    exporter = grpc_exporter(c)
    from opentelemetry.sdk.trace.export import SpanExportResult

    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    req = build_request()
    status, _, body = post(f"{c.http_url}/v1/traces", req.SerializeToString(), "application/x-protobuf")
    assert status == 200, body
    return c, encode_spans(spans), req


def test_read_after_write_every_api_agrees(sent):
    c, sdk_req, json_req = sent
    # Nothing is committed yet (max_file_age is an hour): everything comes from the live tail.
    for request in (sdk_req, json_req):
        expected = spans_by_id(request.resource_spans)
        trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
        # Tempo v1, protobuf
        status, headers, body = get(f"{c.query_url}/api/traces/{trace_id}", accept="application/protobuf")
        assert status == 200
        got = spans_by_id(TracesData.FromString(body).resource_spans)
        want = {k: v for k, v in expected.items() if v[2]["traceId"] == got[next(iter(got))][2]["traceId"]}
        assert got == want, "protobuf trace differs from what was sent"
        # Tempo v1 JSON (OTLP JSON: hex ids, ints as strings)
        status, doc = get_json(f"{c.query_url}/api/traces/{trace_id.upper()}")
        assert status == 200
        json_spans = [s for b in doc["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]
        assert sorted(s["spanId"] for s in json_spans) == sorted(want)
        assert all(s["traceId"] == trace_id for s in json_spans)
        # Tempo v2 JSON
        status, doc = get_json(f"{c.query_url}/api/v2/traces/{trace_id}")
        assert status == 200
        v2 = [s for b in doc["trace"]["resourceSpans"] for ss in b["scopeSpans"] for s in ss["spans"]]
        assert v2 == json_spans
        # Jaeger
        status, doc = get_json(f"{c.query_url}/jaeger/api/traces/{trace_id}")
        assert status == 200
        jt = doc["data"][0]
        assert jt["traceID"] == trace_id
        assert sorted(s["spanID"] for s in jt["spans"]) == sorted(want)
        # SQL
        status, _, body = post(f"{c.query_url}/api/sql", f"SELECT count(*) AS n FROM spans WHERE trace_id = '{trace_id}'".encode(), "text/plain")
        assert status == 200 and json.loads(body) == [{"n": len(want)}]
    # the int attribute comes back as an int over every API
    status, doc = get_json(f"{c.query_url}/api/traces/0af7651916cd43dd8448eb211c80319c")
    attrs = {a["key"]: a["value"] for b in doc["batches"] for ss in b["scopeSpans"] for s in ss["spans"] for a in s["attributes"]}
    assert attrs["gen_ai.usage.input_tokens"] == {"intValue": "9007199254740993"}
    assert attrs["cost.usd"] == {"doubleValue": 0.000123}
    assert attrs["streamed"] == {"boolValue": True}
    status, doc = get_json(f"{c.query_url}/jaeger/api/traces/0af7651916cd43dd8448eb211c80319c")
    tags = {t["key"]: t for s in doc["data"][0]["spans"] for t in s["tags"]}
    assert tags["gen_ai.usage.input_tokens"] == {"key": "gen_ai.usage.input_tokens", "type": "int64", "value": 9007199254740993}
    assert tags["error"]["value"] is True
    assert c.stop() == 0


def test_tempo_search_and_tags(sent):
    c, sdk_req, _ = sent
    assert get(f"{c.query_url}/api/echo")[2] == b"echo"
    status, doc = get_json(f"{c.query_url}/api/search?" + urllib.parse.urlencode({"tags": "service.name=checkout", "limit": 5}))
    assert status == 200, doc
    # the SDK trace (remote parent), and "publish" and "consume", each a trace of its own
    assert len(doc["traces"]) == 3
    assert {t["rootTraceName"] for t in doc["traces"]} == {"GET /cart", "publish", "consume"}
    [t] = [t for t in doc["traces"] if t["traceID"] == "5b8efff798038103d269b633813fc60c"]
    assert t["rootServiceName"] == "checkout"
    assert t["rootTraceName"] == "GET /cart"
    assert int(t["startTimeUnixNano"]) > 0 and t["durationMs"] >= 0
    status, doc = get_json(f"{c.query_url}/api/search?" + urllib.parse.urlencode({"tags": 'http.route="/cart"'}))
    assert [t["traceID"] for t in doc["traces"]] == ["5b8efff798038103d269b633813fc60c"]
    status, doc = get_json(f"{c.query_url}/api/search?" + urllib.parse.urlencode({"minDuration": "1h"}))
    assert doc["traces"] == []
    status, doc = get_json(f"{c.query_url}/api/search/tags")
    assert {"http.route", "service.name", "gen_ai.prompt"} <= set(doc["tagNames"])
    status, doc = get_json(f"{c.query_url}/api/search/tag/service.name/values")
    assert set(doc["tagValues"]) == {"checkout", "llm-agent"}
    # Jaeger UI's calls
    status, doc = get_json(f"{c.query_url}/jaeger/api/services")
    assert set(doc["data"]) == {"checkout", "llm-agent"}
    status, doc = get_json(f"{c.query_url}/jaeger/api/services/checkout/operations")
    assert "GET /cart" in doc["data"] and "SELECT carts" in doc["data"]
    status, doc = get_json(f"{c.query_url}/jaeger/api/traces?" + urllib.parse.urlencode({"service": "checkout", "operation": "SELECT carts", "limit": 10}))
    assert status == 200
    [jt] = doc["data"]
    spans = {s["operationName"]: s for s in jt["spans"]}
    child = spans["SELECT carts"]
    assert child["references"] == [{"refType": "CHILD_OF", "traceID": jt["traceID"], "spanID": spans["GET /cart"]["spanID"]}]
    assert jt["processes"][child["processID"]]["serviceName"] == "checkout"
    assert child["duration"] >= 0 and child["startTime"] > 1_600_000_000_000_000
    assert any(l["fields"][0] == {"key": "event", "type": "string", "value": "exception"} for l in child["logs"])
    assert c.stop() == 0


def test_bad_query_requests(sent):
    c, _, _ = sent
    assert get(f"{c.query_url}/api/traces/00000000000000000000000000000001")[0] == 404
    status, _, body = get(f"{c.query_url}/api/traces/{'a' * 40}")
    assert status == 400 and b"more than 32 hex digits" in body
    status, _, body = get(f"{c.query_url}/api/search?minDuration=soon")
    assert status == 400 and b"minDuration" in body
    status, _, body = get(f"{c.query_url}/api/search?limit=abc")
    assert status == 400
    status, _, body = get(f"{c.query_url}/jaeger/api/traces")
    assert status == 400 and b"service" in body
    assert get(f"{c.query_url}/jaeger/api/traces/00000000000000000000000000000001")[0] == 404
    status, _, body = post(f"{c.query_url}/api/sql", b"DROP TABLE spans", "text/plain")
    assert status == 400 and b"read-only" in body
    status, _, body = post(f"{c.query_url}/api/sql", b"SELECT nope FROM spans", "text/plain")
    assert status == 400 and b"nope" in body
    assert c.stop() == 0


def run_cli(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)


def test_cli_sql_and_trace_tree(collector_factory, data_dir):
    c = collector_factory(pipeline(data_dir, query=False))
    # a multi-level trace whose middle span never arrived
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    a = rs.resource.attributes.add()
    a.key, a.value.string_value = "service.name", "agent"
    ss = rs.scope_spans.add()
    t = bytes.fromhex("c0ffee00c0ffee00c0ffee00c0ffee00")
    base = 1_767_225_600_000_000_000

    def span(sid, parent, name, start, end, code=0, msg=""):
        s = ss.spans.add()
        s.trace_id, s.span_id, s.name = t, bytes.fromhex(sid), name
        if parent:
            s.parent_span_id = bytes.fromhex(parent)
        s.start_time_unix_nano, s.end_time_unix_nano = base + start, base + end
        s.status.code, s.status.message = code, msg

    span("0000000000000001", None, "run", 0, 10_000_000)
    span("0000000000000002", "0000000000000001", "plan", 1_000_000, 3_000_000)
    span("0000000000000003", "0000000000000002", "think", 1_500_000, 2_000_000)
    span("0000000000000004", "0000000000000001", "act", 4_000_000, 9_000_000, 2, "tool timed out")
    span("0000000000000005", "00000000000000ff", "orphan-step", 5_000_000, 6_000_000)
    assert post(f"{c.http_url}/v1/traces", req.SerializeToString(), "application/x-protobuf")[0] == 200
    # the same spans again: a client retry
    assert post(f"{c.http_url}/v1/traces", req.SerializeToString(), "application/x-protobuf")[0] == 200
    assert c.stop() == 0

    r = run_cli("trace", "--data", str(data_dir), "C0FFEE00C0FFEE00C0FFEE00C0FFEE00")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "trace c0ffee00c0ffee00c0ffee00c0ffee00: 5 span(s), 10.0 ms, 1 error(s)"
    width = lines[1].index("service")
    names = [l[:width].rstrip() for l in lines[2:8]]
    assert names == ["run", "  plan", "    think", "  act", "", "orphan-step ⤴"]
    act = lines[5]
    assert "ERROR ✗" in act and "5.0 ms" in act and act.endswith("|")
    assert lines[6].strip() == "✗ tool timed out"
    assert lines[8] == "⤴ parent not in this trace"
    # bars sit on the trace's time axis: "run" spans it all, "act" starts at 40%
    bar = lambda l: l[l.index("|") + 1 : l.rindex("|")]
    assert bar(lines[2]) == "█" * 40
    assert bar(act).index("█") == 16

    r = run_cli("query", "--data", str(data_dir), "--format", "csv",
                "SELECT name, status_code, duration_ns FROM spans ORDER BY start_time_unix_nano")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "name,status_code,duration_ns",
        "run,UNSET,10000000", "plan,UNSET,2000000", "think,UNSET,500000", "act,ERROR,5000000", "orphan-step,UNSET,1000000",
    ]
    r = run_cli("query", "--data", str(data_dir), "--format", "json", "SELECT count(*) AS n FROM spans_raw")
    assert json.loads(r.stdout) == [{"n": 10}], "both copies are stored; spans shows one"
    r = run_cli("query", "--data", str(data_dir), "SELECT date, hour, count(*) AS n FROM spans GROUP BY date, hour")
    assert r.returncode == 0 and "2026-01-01" in r.stdout and "| 00   | 5 |" in r.stdout
    r = run_cli("query", "--data", str(data_dir), "COPY (SELECT * FROM spans) TO '/tmp/out.parquet'")
    assert r.returncode == 1 and "queries are read-only" in r.stderr
    r = run_cli("trace", "--data", str(data_dir), "00000000000000000000000000000042")
    assert r.returncode == 1 and "is not in the lake" in r.stderr
    r = run_cli("query", "--data", str(data_dir / "nowhere"), "SELECT 1")
    assert r.returncode == 1 and "no lake at" in r.stderr


def test_files_committed_after_a_query_are_seen_by_the_next(collector_factory, data_dir):
    # A long-running collector lists the lake on every query: a file committed after one query
    # is in the next (a cached listing would lose those rows once they leave the live tail).
    from test_durability import make_request, http_post

    c = collector_factory(pipeline(data_dir, parquet={"max_file_age": "200ms"}))

    def files():
        return len(list(pathlib.Path(data_dir).rglob("*.parquet")))

    def count():
        status, _, body = post(f"{c.query_url}/api/sql", b"SELECT count(*) AS n FROM spans", "text/plain")
        assert status == 200, body
        return json.loads(body)[0]["n"]

    for round_, want in ((1, 5), (2, 10), (3, 15)):
        before = files()
        status, _, body = http_post(f"{c.http_url}/v1/traces", make_request(round_, round_, 5).SerializeToString())
        assert status == 200, body
        deadline = time.time() + 10
        while files() == before and time.time() < deadline:
            time.sleep(0.05)
        assert files() > before, "the file is committed"
        time.sleep(0.2)  # and its rows have left the live tail
        assert count() == want
    assert c.stop() == 0
