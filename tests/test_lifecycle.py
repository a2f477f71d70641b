"""Batching limits seen from outside, file rolling, the debug exporter, several pipelines and
fan-out, and clean shutdown: nothing acknowledged is lost."""

import json
import signal
import threading
import time

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import pipeline, read_lake
from test_otlp_json import post


def request(n, trace_byte=1, start=1_767_225_600_000_000_000, first=0):
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "load"
    ss = rs.scope_spans.add()
    for i in range(first, first + n):
        s = ss.spans.add()
        s.trace_id = bytes([trace_byte]) * 16
        s.span_id = (i + 1).to_bytes(8, "big")
        s.name = f"op-{i}"
        s.start_time_unix_nano = start + i
        s.end_time_unix_nano = start + i + 1000
    return req


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_commits_everything_acknowledged(collector_factory, data_dir, sig):
    # Long timeouts: only the shutdown can flush these.
    c = collector_factory(pipeline(data_dir, batch={"timeout": "1h", "max_size": 1000}, parquet={"max_file_age": "1h"}))
    acked = 0
    stop = threading.Event()

    def sender(k):
        nonlocal acked
        i = 0
        while not stop.is_set() and i < 200:
            try:
                status, _, _ = post(f"{c.http_url}/v1/traces", request(50, trace_byte=k + 1, first=i * 50).SerializeToString(), "application/x-protobuf")
            except OSError:
                status = None  # the collector stopped accepting: not acknowledged
            if status == 200:
                acked += 50
            i += 1

    threads = [threading.Thread(target=sender, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    c.proc.send_signal(sig)
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert c.stop() == 0, c.stderr()
    rows = read_lake(data_dir)
    assert acked > 0
    assert len(rows) >= acked, f"{acked} spans acknowledged, {len(rows)} in the lake"
    assert len({(r["trace_id"], r["span_id"]) for r in rows}) == len(rows)


def test_files_roll_by_age_and_rows(collector_factory, data_dir):
    c = collector_factory(pipeline(data_dir, batch={"max_size": 10, "timeout": "50ms"}, parquet={"max_rows_per_file": 25, "max_file_age": "300ms"}))
    status, _, _ = post(f"{c.http_url}/v1/traces", request(60).SerializeToString(), "application/x-protobuf")
    assert status == 200
    # by rows: 60 spans in batches of 10 make files of ~30 rows without waiting for age
    deadline = time.time() + 10
    while time.time() < deadline and len(list(data_dir.rglob("*.parquet"))) < 2:
        time.sleep(0.05)
    assert len(list(data_dir.rglob("*.parquet"))) >= 2
    # by age: a lone span is committed while the collector keeps running
    post(f"{c.http_url}/v1/traces", request(1, trace_byte=9, first=1000).SerializeToString(), "application/x-protobuf")
    deadline = time.time() + 10
    while time.time() < deadline and len(read_lake(data_dir)) < 61:
        time.sleep(0.05)
    assert len(read_lake(data_dir)) == 61
    assert not list(data_dir.rglob("*.tmp")), "no temporary file is visible after commit"
    assert c.stop() == 0


def test_debug_exporter_and_fan_out(collector_factory, data_dir):
    c = collector_factory(pipeline(data_dir, exporters=("parquet", "debug"), extra_exporters={"debug": {"verbosity": "normal"}}))
    assert post(f"{c.http_url}/v1/traces", request(3).SerializeToString(), "application/x-protobuf")[0] == 200
    assert c.stop() == 0
    lines = [json.loads(l) for l in c.stdout().splitlines()]
    assert [l["name"] for l in lines] == ["op-0", "op-1", "op-2"]
    assert lines[0]["trace_id"] == "01" * 16 and lines[0]["service_name"] == "load" and lines[0]["duration_ns"] == 1000
    assert len(read_lake(data_dir)) == 3


def test_several_pipelines_in_one_process(collector_factory, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = {
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:0"}}}, "otlp/second": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}},
        "processors": {"batch": {"timeout": "50ms"}, "batch/big": {"max_size": 5000}},
        "exporters": {"parquet/a": {"path": str(a)}, "parquet/b": {"path": str(b)}},
        "service": {"pipelines": {
            "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["parquet/a", "parquet/b"]},
            "traces/archive": {"receivers": ["otlp", "otlp/second"], "processors": ["batch/big"], "exporters": ["parquet/b"]},
        }},
    }
    c = collector_factory(json.dumps(cfg))
    assert post(f"{c.http_url}/v1/traces", request(4).SerializeToString(), "application/x-protobuf")[0] == 200
    assert c.stop() == 0, c.stderr()
    # pipeline 1 writes both lakes; pipeline 2 writes b again (the same spans, twice in b)
    assert len(read_lake(a)) == 4
    assert len(read_lake(b)) == 8
