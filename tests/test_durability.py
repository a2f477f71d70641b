"""Nothing acknowledged is lost: kill -9 under load, a disk that fills and empties, a lake that
turns read-only, backpressure with retry hints, garbage on every port.

Clients here count what the collector acknowledged to them (HTTP 200 / gRPC OK); afterwards every
acknowledged span must be returned by queries exactly once. SPANLAKE_FAULT_KILLS sets how many
times the collector is killed (default 6); SPANLAKE_FAULT_REPORT names a JSON file for the figures
(docs/reliability.md quotes them)."""

import json
import os
import pathlib
import random
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import BIN, Collector, duckdb_query, pipeline

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def make_request(tag, seq, n):
    """n spans of one trace; span ids encode (tag, seq, i) so every span is unique."""
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key = "service.name"
    kv.value.string_value = "fault-client"
    ss = rs.scope_spans.add()
    trace_id = bytes([tag]) + seq.to_bytes(7, "big") + b"\x00" * 8
    for i in range(n):
        s = ss.spans.add()
        s.trace_id = trace_id
        s.span_id = bytes([tag]) + seq.to_bytes(5, "big") + i.to_bytes(2, "big")
        s.name = f"op-{i}"
        s.start_time_unix_nano = T0 + seq * 1000 + i
        s.end_time_unix_nano = T0 + seq * 1000 + i + 500
        a = s.attributes.add()
        a.key = "payload"
        a.value.string_value = "x" * 64
    return req


def span_ids(req):
    return [s.span_id.hex() for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]


def http_post(url, body, content_type="application/x-protobuf", timeout=10):
    r = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(r, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


class Sender(threading.Thread):
    """Sends requests until stopped; records the span ids of every acknowledged request and
    every answer it got, by kind."""

    def __init__(self, tag, target, protocol, spans_per_request=20):
        super().__init__(daemon=True)
        self.tag, self.target, self.protocol, self.n = tag, target, protocol, spans_per_request
        self.acked = []
        self.answers = {}
        self.stop_flag = threading.Event()
        self.seq = 0

    def count(self, kind):
        self.answers[kind] = self.answers.get(kind, 0) + 1

    def run(self):
        channel = stub = None
        if self.protocol == "grpc":
            channel = grpc.insecure_channel(self.target)
            stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        while not self.stop_flag.is_set():
            self.seq += 1
            req = make_request(self.tag, self.seq, self.n)
            try:
                if stub is not None:
                    stub.Export(req, timeout=10)
                    ok = True
                else:
                    status, _, _ = http_post(f"http://{self.target}/v1/traces", req.SerializeToString())
                    ok = status == 200
                    if not ok:
                        self.count(f"http {status}")
            except grpc.RpcError as e:
                ok = False
                self.count(f"grpc {e.code().name}")
            except OSError as e:
                ok = False
                self.count(type(e).__name__)
            if ok:
                self.count("ok")
                self.acked.extend(span_ids(req))
            else:
                time.sleep(0.02)
        if channel is not None:
            channel.close()


def sql(c, query):
    status, _, body = http_post(f"{c.query_url}/api/sql", query.encode(), "text/plain", timeout=60)
    assert status == 200, body
    return json.loads(body)


def durable_pipeline(data_dir, **kw):
    return pipeline(data_dir, acknowledgements="durable", **kw)


def check_every_acked_span_once(c, data_dir, acked):
    """Every acknowledged span is returned exactly once by the collector's queries, and is in
    the files as read by DuckDB. Returns (found, raw rows, duplicates removed)."""
    rows = sql(c, "SELECT span_id, count(*) AS n FROM spans GROUP BY span_id")
    counts = {r["span_id"]: r["n"] for r in rows}
    missing = [s for s in acked if s not in counts]
    assert not missing, f"{len(missing)} acknowledged spans are lost, e.g. {missing[:5]}"
    twice = {s: n for s, n in counts.items() if n != 1}
    assert not twice, f"spans returned more than once: {list(twice.items())[:5]}"
    raw = sql(c, "SELECT count(*) AS n FROM spans_raw")[0]["n"]
    return len(counts), raw, raw - len(counts)


def test_kill_9_under_load_loses_no_acknowledged_span(data_dir, tmp_path):
    # Row groups of 500 rows: files are assembled from several sealed row groups, and queries
    # read sealed row groups from the live tail, while the collector is killed at random.
    kills = int(os.environ.get("SPANLAKE_FAULT_KILLS", "6"))
    rng = random.Random(int(os.environ.get("SPANLAKE_FAULT_SEED", "7")))
    config = durable_pipeline(data_dir, batch={"max_size": 200, "timeout": "50ms"}, parquet={"max_file_age": "1s", "max_rows_per_file": 3000, "row_group_size": 500})
    acked, answers = [], {}
    for round_ in range(kills):
        c = Collector(config, workdir=tmp_path / f"run{round_}")
        senders = [Sender(16 * round_ + i + 1, c.grpc if i % 2 else c.http, "grpc" if i % 2 else "http") for i in range(4)]
        for s in senders:
            s.start()
        time.sleep(rng.uniform(0.3, 2.0))
        c.proc.kill()  # SIGKILL: no drain, no commit
        c.proc.wait(timeout=10)
        for s in senders:
            s.stop_flag.set()
        for s in senders:
            s.join(timeout=30)
            assert not s.is_alive()
            acked.extend(s.acked)
            for k, v in s.answers.items():
                answers[k] = answers.get(k, 0) + v
    assert answers.get("ok", 0) > kills, f"the clients were acknowledged too rarely: {answers}"

    # One more start replays what is left in the log; then everything must be there, once.
    c = Collector(config, workdir=tmp_path / "final")
    try:
        check_every_acked_span_once(c, data_dir, acked)
        time.sleep(1.5)  # the replayed spans are committed by now, and still found once
        found, raw, duplicates = check_every_acked_span_once(c, data_dir, acked)
        # An independent reader sees every acknowledged span in the committed files too, once the
        # replayed log is committed (at start).
        in_files = {r[0] for r in duckdb_query(data_dir, "SELECT DISTINCT span_id FROM spans")}
        assert set(acked) <= in_files
    finally:
        assert c.stop() == 0, c.stderr()
    report = {
        "kills": kills,
        "requests_acknowledged": answers.get("ok", 0),
        "spans_acknowledged": len(acked),
        "spans_found": found,
        "lost": 0,
        "rows_in_lake": raw,
        "duplicates_removed_by_queries": duplicates,
        "answers": answers,
    }
    print("fault run:", json.dumps(report))
    if os.environ.get("SPANLAKE_FAULT_REPORT"):
        pathlib.Path(os.environ["SPANLAKE_FAULT_REPORT"]).write_text(json.dumps(report, indent=2))


def test_running_spans_survive_a_kill(data_dir, tmp_path):
    config = durable_pipeline(data_dir, processors=("lifecycle", "batch"), lifecycle={"trace_timeout": "10m"})
    c = Collector(config, workdir=tmp_path / "a")
    req = make_request(200, 1, 3)
    spans = req.resource_spans[0].scope_spans[0].spans
    root = spans[0]
    root.ClearField("parent_span_id")
    for s in spans[1:]:
        s.parent_span_id = root.span_id
        s.end_time_unix_nano = 0  # running
    root_end = root.end_time_unix_nano
    root.end_time_unix_nano = 0  # the root runs too, for now
    status, _, body = http_post(f"{c.http_url}/v1/traces", req.SerializeToString())
    assert status == 200, body
    c.proc.kill()
    c.proc.wait(timeout=10)

    c = Collector(config, workdir=tmp_path / "b")
    try:
        # The root ends after the restart: the children it left running are closed with it.
        end = trace_service_pb2.ExportTraceServiceRequest()
        end.resource_spans.add().CopyFrom(req.resource_spans[0])
        del end.resource_spans[0].scope_spans[0].spans[1:]
        end.resource_spans[0].scope_spans[0].spans[0].end_time_unix_nano = root_end
        status, _, body = http_post(f"{c.http_url}/v1/traces", end.SerializeToString())
        assert status == 200, body
        trace = spans[0].trace_id.hex()
        deadline = time.time() + 20
        while True:
            rows = sql(c, f"SELECT span_id, end_time_unix_nano, attributes FROM spans WHERE trace_id = '{trace}' ORDER BY span_id")
            if all(r["end_time_unix_nano"] for r in rows) or time.time() > deadline:
                break
            time.sleep(0.2)
        assert len(rows) == 3
        assert all(r["end_time_unix_nano"] == root_end for r in rows), rows
        children = [r for r in rows if r["span_id"] != root.span_id.hex()]
        assert all(r["attributes"].get("spanlake.auto_close_reason") == "trace_end" for r in children), children
    finally:
        assert c.stop() == 0, c.stderr()


def test_large_spans_are_logged_compressed_and_come_back_whole_after_a_kill(data_dir, tmp_path):
    # The testbed's large spans: the same 20 values of 5,000 random bytes on every span. Their
    # log records are compressed; after a kill -9 before any file was written, every span and
    # every value comes back from the log.
    rnd = random.Random(7)
    values = {f"attr.{a}": "".join(chr(rnd.randrange(32, 127)) for _ in range(5000)) for a in range(20)}
    config = durable_pipeline(data_dir, parquet={"max_file_age": "10m"})
    c = Collector(config, workdir=tmp_path / "a")
    acked, raw = [], 0
    for seq in range(1, 9):
        req = make_request(77, seq, 10)
        for s_ in req.resource_spans[0].scope_spans[0].spans:
            for k, v in values.items():
                kv = s_.attributes.add()
                kv.key, kv.value.string_value = k, v
        body = req.SerializeToString()
        raw += len(body)
        status, _, answer = http_post(f"{c.http_url}/v1/traces", body)
        assert status == 200, answer
        acked.extend(span_ids(req))
    logged = sum(f.stat().st_size for f in (pathlib.Path(data_dir) / "_wal").glob("*.wal"))
    c.proc.kill()
    c.proc.wait(timeout=10)
    assert not list(pathlib.Path(data_dir).glob("spans/**/*.parquet")), "no file before the kill"
    assert logged < raw / 4, f"the log holds {logged} bytes for {raw} bytes of requests"

    c = Collector(config, workdir=tmp_path / "b")
    try:
        found, _, _ = check_every_acked_span_once(c, data_dir, acked)
        assert found == len(acked) == 80
        rows = sql(c, "SELECT attributes FROM spans")
        assert all(r["attributes"].get(k) == v for r in rows for k, v in values.items())
        assert c.stop() == 0, c.stderr()
        got = duckdb_query(data_dir, "SELECT count(*), count(DISTINCT span_id), min(length(attributes['attr.3'])) FROM spans")
        assert got == [(80, 80, 5000)], got
    finally:
        if c.proc.poll() is None:
            c.stop()


def test_backpressure_answers_tell_clients_to_retry(collector_factory, data_dir):
    # A request holds its memory until its spans are taken by the exporter; a batch that waits
    # 1.5 s for company keeps the first one in flight while the second asks, and a 1 MiB limit
    # has no room for both.
    c = collector_factory(durable_pipeline(
        data_dir, service={"memory_limit_mib": 1},
        batch={"max_size": 10000, "timeout": "1500ms", "flush_when_idle": False}))
    big = make_request(1, 1, 2000)  # ~250 KB on the wire, ~1 MB decoded
    results = {}

    def first():
        results["first"] = http_post(f"{c.http_url}/v1/traces", big.SerializeToString())

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.5)
    status, headers, body = http_post(f"{c.http_url}/v1/traces", make_request(1, 2, 2000).SerializeToString())
    assert status == 429, body
    assert headers.get("Retry-After") == "1"
    assert b"memory_limit_mib" in body
    with pytest.raises(grpc.RpcError) as err:
        with grpc.insecure_channel(c.grpc) as ch:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(make_request(1, 3, 2000), timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = dict(err.value.trailing_metadata() or ())
    from google.rpc import error_details_pb2, status_pb2
    st = status_pb2.Status.FromString(details["grpc-status-details-bin"])
    info = error_details_pb2.RetryInfo()
    assert st.details[0].Unpack(info)
    assert info.retry_delay.seconds == 1
    t.join(timeout=10)
    assert results["first"][0] == 200
    # Memory is given back (the exporter writes its rows out early when more than half the limit
    # is held): a client honouring Retry-After gets the request taken.
    for _ in range(10):
        status, headers, body = http_post(f"{c.http_url}/v1/traces", make_request(1, 4, 2000).SerializeToString())
        if status != 429:
            break
        time.sleep(int(headers.get("Retry-After", "1")))
    assert status == 200, body
    assert c.stop() == 0


def test_garbage_on_every_port_is_refused_and_nothing_accepted_is_lost(collector_factory, data_dir):
    c = collector_factory(durable_pipeline(data_dir))
    rng = random.Random(3)
    ok = make_request(7, 1, 5)
    status, _, _ = http_post(f"{c.http_url}/v1/traces", ok.SerializeToString())
    assert status == 200
    for addr in (c.grpc, c.http, c.query):
        host, port = addr.rsplit(":", 1)
        for _ in range(30):
            junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4000)))
            try:
                with socket.create_connection((host, int(port)), timeout=2) as s:
                    s.sendall(junk)
                    s.settimeout(2)
                    try:
                        s.recv(1024)
                    except OSError:
                        pass
            except OSError:
                pass
    for ctype in ("application/x-protobuf", "application/json", "text/plain", "application/grpc"):
        for _ in range(20):
            junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 3000)))
            status, _, _ = http_post(f"{c.http_url}/v1/traces", junk, ctype)
            assert status in (400, 415), status
    with grpc.insecure_channel(c.grpc) as ch:
        raw = ch.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        native = ch.unary_unary("/spanlake.trace.v1.Trace/RecordSpan")
        for call in (raw, native):
            for _ in range(20):
                junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000)))
                try:
                    call(junk, timeout=5)
                except grpc.RpcError as e:
                    assert e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED), e
    # Still serving, and what was accepted before is there.
    status, _, _ = http_post(f"{c.http_url}/v1/traces", make_request(7, 2, 5).SerializeToString())
    assert status == 200
    rows = sql(c, "SELECT count(*) AS n FROM spans WHERE span_id LIKE '07%'")
    assert rows == [{"n": 10}]
    assert c.stop() == 0


def test_a_lake_that_cannot_be_written_is_refused_at_start(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = durable_pipeline(blocker / "lake")
    cfg = tmp_path / "p.yaml"
    cfg.write_text(config)
    p = subprocess.run([BIN, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "cannot write" in p.stderr and str(blocker) in p.stderr, p.stderr


# --- a real file system that fills up and turns read-only --------------------------------------

def can_mount():
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_fs(tmp_path):
    if not can_mount():
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["mount", "-o", "remount,rw", str(mnt)], capture_output=True)
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(fs, leave):
    """A ballast file that takes all but `leave` bytes of the file system; returns its path."""
    ballast = fs / "ballast"
    with open(ballast, "wb") as f:
        left = free_bytes(fs) - leave
        while left > 0:
            n = min(left, 1 << 20)
            f.write(b"\0" * n)
            left -= n
    return ballast


class Tally:
    """What the senders of one test were told, all together."""

    def __init__(self):
        self.acked, self.answers = [], {}

    def absorb(self, sender):
        self.acked.extend(sender.acked)
        for k, v in sender.answers.items():
            self.answers[k] = self.answers.get(k, 0) + v


def send_until(c, senders_tag, predicate, seconds, protocol="http"):
    s = Sender(senders_tag, c.http if protocol == "http" else c.grpc, protocol, spans_per_request=50)
    s.start()
    deadline = time.time() + seconds
    while time.time() < deadline and not predicate(s):
        time.sleep(0.1)
    s.stop_flag.set()
    s.join(timeout=30)
    return s


def test_disk_full_then_empty_then_read_only_at_start(small_fs, tmp_path):
    lake = small_fs / "lake"
    config = durable_pipeline(
        lake, batch={"max_size": 500, "timeout": "20ms"},
        parquet={"max_file_age": "300ms", "max_rows_per_file": 2000, "wal": {"segment_size": 1048576, "max_size": 8388608}})
    c = Collector(config, workdir=tmp_path / "run")
    tally = Tally()
    acked, answers, absorb = tally.acked, tally.answers, tally.absorb

    try:
        s = send_until(c, 1, lambda s: len(s.acked) >= 2000, 30)
        absorb(s)
        assert len(s.acked) >= 2000, s.answers

        # Fill the disk: a ballast file takes all but a few hundred KiB.
        ballast = fill(small_fs, leave=300 * 1024)
        s = send_until(c, 2, lambda s: sum(v for k, v in s.answers.items() if k != "ok") >= 20, 60)
        absorb(s)
        refusals = {k: v for k, v in s.answers.items() if k != "ok"}
        assert refusals, f"a full disk must refuse requests: {s.answers}"
        assert set(refusals) <= {"http 503", "http 429"}, refusals
        assert c.proc.poll() is None, "the collector keeps running on a full disk"

        # Grpc clients get retryable codes too.
        s = send_until(c, 3, lambda s: sum(v for k, v in s.answers.items() if k != "ok") >= 5, 30, "grpc")
        absorb(s)
        assert set(k for k in s.answers if k != "ok") <= {"grpc UNAVAILABLE", "grpc RESOURCE_EXHAUSTED"}, s.answers

        # The disk empties; everything resumes.
        ballast.unlink()
        s = send_until(c, 4, lambda s: len(s.acked) >= 1000, 90)
        absorb(s)
        assert len(s.acked) >= 1000, s.answers

        found, raw, duplicates = check_every_acked_span_once(c, lake, acked)
        print("disk run:", json.dumps({"spans_acknowledged": len(acked), "found": found, "duplicates_removed": duplicates, "answers": answers}))
    finally:
        code = c.stop()
    assert code == 0, c.stderr()
    # After a clean stop the files alone hold every acknowledged span.
    in_files = {r[0] for r in duckdb_query(lake, "SELECT DISTINCT span_id FROM spans")}
    assert set(acked) <= in_files

    # A read-only lake (the kernel refuses a read-only remount while files are open for writing,
    # so this is the state a collector meets at start): refused with the reason, nothing touched.
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    cfg = tmp_path / "ro.yaml"
    cfg.write_text(config)
    p = subprocess.run([BIN, "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert "Read-only file system" in p.stderr and str(lake) in p.stderr, p.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    c = Collector(config, workdir=tmp_path / "again")
    try:
        check_every_acked_span_once(c, lake, acked)
    finally:
        assert c.stop() == 0, c.stderr()


def test_a_full_log_refuses_until_the_lake_takes_files_again(small_fs, tmp_path):
    # The log lives on a roomy disk, the lake on a small one that fills up: commits fail, the
    # log grows to wal.max_size, then requests are refused as overload (429 / RESOURCE_EXHAUSTED)
    # until the lake's disk has room again; then everything resumes and nothing is lost.
    lake = small_fs / "lake"
    config = durable_pipeline(
        lake, batch={"max_size": 500, "timeout": "20ms"},
        parquet={"max_file_age": "300ms", "max_rows_per_file": 2000,
                 "wal": {"path": str(tmp_path / "wal"), "segment_size": 262144, "max_size": 2097152}})
    c = Collector(config, workdir=tmp_path / "run")
    tally = Tally()
    acked, answers, absorb = tally.acked, tally.answers, tally.absorb

    try:
        ballast = fill(small_fs, leave=64 * 1024)
        s = send_until(c, 1, lambda s: s.answers.get("http 429", 0) >= 10, 60)
        absorb(s)
        assert s.answers.get("http 429", 0) >= 10, s.answers
        assert s.acked, "spans are acknowledged while the log has room"
        status, headers, body = http_post(f"{c.http_url}/v1/traces", make_request(9, 1, 5).SerializeToString())
        assert status == 429 and b"write-ahead log is full" in body, body
        assert headers.get("Retry-After") == "1"

        ballast.unlink()
        s = send_until(c, 2, lambda s: len(s.acked) >= 1000, 90)
        absorb(s)
        assert len(s.acked) >= 1000, s.answers
        check_every_acked_span_once(c, lake, acked)
    finally:
        assert c.stop() == 0, c.stderr()
    in_files = {r[0] for r in duckdb_query(lake, "SELECT DISTINCT span_id FROM spans")}
    assert set(acked) <= in_files
    assert sum(p.stat().st_size for p in (tmp_path / "wal").iterdir()) == 0, "the log is empty after a clean stop"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_python_sdk_keeps_sending_through_kills(data_dir, tmp_path):
    # The official OpenTelemetry SDK and OTLP/gRPC exporter, as an application runs them, while
    # the collector is killed and restarted on the same port: the exporter retries what was not
    # acknowledged (UNAVAILABLE), and every span whose export it reported SUCCESS is stored once.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    port = free_port()
    doc = json.loads(durable_pipeline(data_dir, batch={"timeout": "20ms"}))
    doc["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = f"127.0.0.1:{port}"
    config = json.dumps(doc)

    class Counting(SpanExporter):
        def __init__(self, inner):
            self.inner, self.acked, self.failed = inner, [], 0

        def export(self, spans):
            result = self.inner.export(spans)
            if result == SpanExportResult.SUCCESS:
                self.acked.extend(f"{s.context.span_id:016x}" for s in spans)
            else:
                self.failed += 1
            return result

        def shutdown(self):
            self.inner.shutdown()

    exporter = Counting(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=20))
    tp = TracerProvider(resource=Resource.create({"service.name": "killed-app"}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tp.get_tracer("kill-test")
    stop = threading.Event()

    def app():
        i = 0
        while not stop.is_set():
            with tracer.start_as_current_span(f"request-{i}"):
                pass
            i += 1

    rng = random.Random(5)
    c = Collector(config, workdir=tmp_path / "first")
    t = threading.Thread(target=app, daemon=True)
    t.start()
    for round_ in range(3):
        time.sleep(rng.uniform(0.5, 1.5))
        c.proc.kill()
        c.proc.wait(timeout=10)
        time.sleep(0.3)  # the application keeps going: its exports fail and are retried
        c = Collector(config, workdir=tmp_path / f"restart{round_}")
    time.sleep(1.0)
    stop.set()
    t.join(timeout=60)
    assert not t.is_alive()
    tp.shutdown()
    try:
        assert len(exporter.acked) > 50, (len(exporter.acked), exporter.failed)
        rows = sql(c, "SELECT span_id, count(*) AS n FROM spans WHERE service_name = 'killed-app' GROUP BY span_id")
        counts = {r["span_id"]: r["n"] for r in rows}
        missing = [s for s in exporter.acked if s not in counts]
        assert not missing, f"{len(missing)} of {len(exporter.acked)} acknowledged spans lost"
        assert all(n == 1 for n in counts.values())
        print("sdk kill run:", json.dumps({"acknowledged": len(exporter.acked), "failed_exports": exporter.failed, "found": len(counts)}))
    finally:
        assert c.stop() == 0, c.stderr()
