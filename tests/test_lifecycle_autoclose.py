"""Traces left running: every span ends up closed, with the right time, status and marker —
when the root arrives ended, when the trace is idle past trace_timeout, and on shutdown."""

import json
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import pipeline, read_lake
from test_otlp_json import post

T0 = 1_767_225_600_000_000_000


def request(trace_hex, spans):
    """spans: (span id hex, parent hex or None, name, start offset, end offset or 0, status code)"""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    a = rs.resource.attributes.add()
    a.key, a.value.string_value = "service.name", "worker"
    ss = rs.scope_spans.add()
    for sid, parent, name, start, end, code in spans:
        s = ss.spans.add()
        s.trace_id, s.span_id, s.name = bytes.fromhex(trace_hex), bytes.fromhex(sid), name
        if parent:
            s.parent_span_id = bytes.fromhex(parent)
        s.start_time_unix_nano = T0 + start
        s.end_time_unix_nano = T0 + end if end else 0
        s.status.code = code
    return req.SerializeToString()


def sql(c, q):
    status, _, body = post(f"{c.query_url}/api/sql", q.encode(), "text/plain")
    assert status == 200, body
    return json.loads(body)


def test_root_ending_closes_running_spans(collector_factory, data_dir):
    c = collector_factory(pipeline(data_dir, processors=("lifecycle", "redaction", "batch"), batch={"timeout": "20ms"}))
    trace = "aa" * 16
    running = [("0000000000000001", None, "master", 0, 0, 0),
               ("0000000000000002", "0000000000000001", "instagram", 10, 0, 0),
               ("0000000000000003", "0000000000000002", "upload", 20, 0, 0),
               ("0000000000000004", "0000000000000002", "prep", 15, 18, 1)]
    assert post(f"{c.http_url}/v1/traces", request(trace, running), "application/x-protobuf")[0] == 200
    rows = sql(c, f"SELECT name, end_time_unix_nano AS e FROM spans WHERE trace_id = '{trace}' ORDER BY name")
    assert [r["name"] for r in rows if r.get("e") is None] == ["instagram", "master", "upload"], "visible as running"
    # the platform span ends: its running child is closed with the parent's end and status
    assert post(f"{c.http_url}/v1/traces", request(trace, [("0000000000000002", "0000000000000001", "instagram", 10, 500, 1)]),
                "application/x-protobuf")[0] == 200
    # the root ends with an error: whatever still runs is closed with the trace's error
    assert post(f"{c.http_url}/v1/traces", request(trace, [("0000000000000001", None, "master", 0, 900, 2)]),
                "application/x-protobuf")[0] == 200
    rows = {r["name"]: r for r in sql(c, f"SELECT name, end_time_unix_nano AS e, status_code AS s, status_message AS m, "
                                         f"attributes['spanlake.auto_close_reason'] AS reason, attributes['spanlake.auto_closed'] AS auto "
                                         f"FROM spans WHERE trace_id = '{trace}'")}
    assert len(rows) == 4, "one row per span"
    assert rows["upload"]["e"] == T0 + 500 and rows["upload"]["reason"] == "parent_end" and rows["upload"]["s"] == "OK"
    assert rows["upload"]["auto"] == "true"
    assert rows["master"]["e"] == T0 + 900 and rows["master"].get("reason") is None
    assert rows["prep"]["e"] == T0 + 18 and rows["prep"].get("reason") is None
    assert c.stop() == 0


def test_idle_traces_time_out_and_shutdown_closes_the_rest(collector_factory, data_dir):
    c = collector_factory(pipeline(data_dir, processors=("lifecycle", "batch"), batch={"timeout": "20ms"}))
    cfg_timeout = "bb" * 16
    # this collector's lifecycle uses the default 5 minute timeout: start one with a short one
    c.stop()
    cfg = json.loads(pipeline(data_dir, processors=("lifecycle", "batch"), batch={"timeout": "20ms"}))
    cfg["processors"]["lifecycle"] = {"trace_timeout": "300ms"}
    c = collector_factory(json.dumps(cfg))
    assert post(f"{c.http_url}/v1/traces", request(cfg_timeout, [("0000000000000001", None, "waiting", 5, 0, 0)]), "application/x-protobuf")[0] == 200
    deadline = time.time() + 10
    reason = None
    while time.time() < deadline and reason is None:
        rows = sql(c, f"SELECT attributes['spanlake.auto_close_reason'] AS r, end_time_unix_nano AS e FROM spans WHERE trace_id = '{cfg_timeout}'")
        reason = rows[0].get("r")
        time.sleep(0.05)
    assert reason == "timeout" and rows[0]["e"] == T0 + 5, "closed at its latest known time, never before its start"
    # left running at shutdown
    assert post(f"{c.http_url}/v1/traces", request("cc" * 16, [("0000000000000009", None, "long job", 7, 0, 0)]), "application/x-protobuf")[0] == 200
    assert c.stop() == 0
    rows = [r for r in read_lake(data_dir) if r["trace_id"] == "cc" * 16]
    closed = [r for r in rows if r["end_time_unix_nano"] is not None]
    assert len(closed) == 1 and dict(closed[0]["attributes"])["spanlake.auto_close_reason"] == "shutdown"
    assert closed[0]["end_time_unix_nano"] >= T0 + 7
