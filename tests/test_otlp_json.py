"""OTLP/JSON over HTTP, as curl or a browser SDK sends it: the OTLP JSON rules (hex ids in any
case, lowerCamelCase, 64-bit integers as strings or numbers, enums as integers, unknown fields
ignored), gzip, and every field and attribute type back from the lake."""

import base64
import gzip
import json
import urllib.request

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from conftest import duckdb_query, pipeline, read_lake
from lake_check import check_lake

T0 = 1_767_225_600_123_456_789  # 2026-01-01T00:00:00.123456789Z


def kv(key, **value):
    return KeyValue(key=key, value=AnyValue(**value))


def build_request():
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.schema_url = "https://opentelemetry.io/schemas/1.26.0"
    rs.resource.attributes.extend([kv("service.name", string_value="llm-agent"), kv("region", string_value="eu")])
    rs.resource.dropped_attributes_count = 2
    ss = rs.scope_spans.add()
    ss.schema_url = "https://example.com/scope-schema"
    ss.scope.name = "agent.sdk"
    ss.scope.version = "0.9"
    ss.scope.attributes.append(kv("sdk.lang", string_value="js"))
    ss.scope.dropped_attributes_count = 1
    root = ss.spans.add()
    root.trace_id = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
    root.span_id = bytes.fromhex("b7ad6b7169203331")
    root.trace_state = "congo=t61rcWkgMzE"
    root.flags = 0x301
    root.name = "agent.run"
    root.kind = 1
    root.start_time_unix_nano = T0
    root.end_time_unix_nano = T0 + 2_500_000_000
    root.attributes.extend([
        kv("gen_ai.prompt", string_value='{"role":"user","content":"héllo ✓"}'),
        kv("gen_ai.usage.input_tokens", int_value=9_007_199_254_740_993),  # beyond 2^53: must stay exact
        kv("negative", int_value=-42),
        kv("cost.usd", double_value=0.000123),
        kv("streamed", bool_value=True),
        kv("blob", bytes_value=b"\x00\x01\xfe\xff"),
        kv("tags", array_value=ArrayValue(values=[AnyValue(string_value="a"), AnyValue(int_value=1), AnyValue(double_value=2.0), AnyValue(bool_value=False)])),
        kv("model", kvlist_value=KeyValueList(values=[kv("name", string_value="gpt"), kv("ctx", int_value=8192)])),
        KeyValue(key="empty"),
    ])
    root.dropped_attributes_count = 3
    ev = root.events.add()
    ev.time_unix_nano = T0 + 1000
    ev.name = "tool.call"
    ev.attributes.append(kv("tool", string_value="search"))
    ev.dropped_attributes_count = 1
    root.dropped_events_count = 4
    ln = root.links.add()
    ln.trace_id = bytes.fromhex("11112222333344445555666677778888")
    ln.span_id = bytes.fromhex("1234567890abcdef")
    ln.trace_state = "k=v"
    ln.flags = 1
    ln.attributes.append(kv("link.kind", string_value="follows"))
    ln.dropped_attributes_count = 2
    root.dropped_links_count = 5
    root.status.code = 2
    root.status.message = "tool failed"
    child = ss.spans.add()
    child.trace_id = root.trace_id
    child.span_id = bytes.fromhex("00f067aa0ba902b7")
    child.parent_span_id = root.span_id
    child.name = "llm.call (still running)"
    child.kind = 3
    child.start_time_unix_nano = T0 + 10
    return req


def to_otlp_json(req):
    """OTLP JSON: proto3 JSON, but trace and span ids are hex; enums as integers."""
    d = MessageToDict(req, use_integers_for_enums=True)

    def fix(o, upper):
        if isinstance(o, dict):
            for k, v in list(o.items()):
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                    h = base64.b64decode(v).hex()
                    o[k] = h.upper() if upper else h
                else:
                    fix(v, upper)
        elif isinstance(o, list):
            for x in o:
                fix(x, upper)

    fix(d, upper=True)
    return d


def post(url, body, content_type="application/json", encoding=None):
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    r = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_otlp_json_fields_and_rules(collector_factory, data_dir):
    c = collector_factory(pipeline(data_dir))
    req = build_request()
    doc = to_otlp_json(req)
    span = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    # 64-bit integers as numbers too, and fields this version does not know
    span["endTimeUnixNano"] = int(span["endTimeUnixNano"])
    span["attributes"][2]["value"]["intValue"] = -42
    span["aFieldFromTheFuture"] = {"x": [1, 2]}
    doc["somethingElse"] = True
    status, headers, body = post(f"{c.http_url}/v1/traces", json.dumps(doc).encode())
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}
    assert c.stop() == 0, c.stderr()
    check_lake(read_lake(data_dir), req)
    # the running span is stored as running: no end, no duration
    running = duckdb_query(data_dir, "SELECT end_time_unix_nano, duration_ns, parent_span_id FROM spans WHERE kind = 'CLIENT'")
    assert running == [(None, None, "b7ad6b7169203331")]


def test_gzip_json_and_protobuf(collector_factory, data_dir):
    c = collector_factory(pipeline(data_dir))
    req = build_request()
    status, _, body = post(f"{c.http_url}/v1/traces", gzip.compress(json.dumps(to_otlp_json(req)).encode()), encoding="gzip")
    assert status == 200, body
    req2 = build_request()
    for s in req2.resource_spans[0].scope_spans[0].spans:
        s.trace_id = bytes.fromhex("ffeeddccbbaa99887766554433221100")
    status, headers, body = post(f"{c.http_url}/v1/traces", gzip.compress(req2.SerializeToString()), "application/x-protobuf", "gzip")
    assert status == 200, body
    assert headers["Content-Type"] == "application/x-protobuf"
    assert c.stop() == 0
    rows = read_lake(data_dir)
    check_lake([r for r in rows if r["trace_id"].startswith("0af7")], req)
    check_lake([r for r in rows if r["trace_id"].startswith("ffee")], req2)
