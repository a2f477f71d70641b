"""End-to-end harness: starts the real `spanlake` binary on 127.0.0.1 port 0 and talks to it
with real clients. The binary is the one `cargo build` made (override with SPANLAKE_BIN)."""

import json
import os
import pathlib
import re
import signal
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = os.environ.get("SPANLAKE_BIN", str(ROOT / "target" / "debug" / "spanlake"))


def pipeline(data_dir, batch=None, parquet=None, http=None, service=None, processors=("batch",), exporters=("parquet",), extra_exporters=None, query=True, acknowledgements=None, lifecycle=None):
    """A pipeline file (JSON is YAML) listening on free ports and writing under data_dir."""
    cfg = {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": "127.0.0.1:0"},
            "http": {"endpoint": "127.0.0.1:0", **(http or {})},
        }}},
        "processors": {"batch": {"timeout": "100ms", **(batch or {})}, "lifecycle": dict(lifecycle or {}), "redaction": {"builtin_rules": True}},
        "exporters": {"parquet": {"path": str(data_dir), **(parquet or {})}, **(extra_exporters or {})},
        "service": {**({"query": {"endpoint": "127.0.0.1:0"}} if query else {}), **(service or {}), "pipelines": {"traces": {
            "receivers": ["otlp"], "processors": list(processors), "exporters": list(exporters),
            **({"acknowledgements": acknowledgements} if acknowledgements else {})}}},
    }
    for unused in ("lifecycle", "redaction"):
        if unused not in processors:
            cfg["processors"].pop(unused)
    return json.dumps(cfg, indent=2)


class Collector:
    def __init__(self, config_text=None, args=(), env=None, workdir=None):
        self.workdir = pathlib.Path(workdir or tempfile.mkdtemp(prefix="spanlake-e2e-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [BIN, "run", *args]
        if config_text is not None:
            self.config = self.workdir / "pipeline.yaml"
            self.config.write_text(config_text)
            cmd += ["--config", str(self.config)]
        full_env = dict(os.environ)
        for k in ("BATCH_MAX", "BATCH_MS", "MAX_INFLIGHT", "TRACE_BATCH_MAX", "TRACE_BATCH_MS", "TRACE_MAX_INFLIGHT"):
            full_env.pop(k, None)
        full_env.update(env or {})
        self.stdout_path = self.workdir / "stdout.txt"
        self._stdout = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=full_env, stdout=self._stdout, stderr=subprocess.PIPE, text=True)
        self.banner = []
        self.stderr_lines = []
        self.grpc = self.http = self.query = None
        deadline = time.time() + 30
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.banner.append(line)
            m = re.search(r"(otlp|query)/(grpc|http)\s+listening on (\S+)", line)
            if m:
                setattr(self, "query" if m.group(1) == "query" else m.group(2), m.group(3))
            if line.strip().startswith("pipeline "):
                # the banner ends with its pipelines (and any environment overrides after)
                if self.grpc and self.http:
                    break
        if not (self.grpc or self.http):
            rest = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise RuntimeError("collector did not start:\n" + "".join(self.banner) + rest)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    @property
    def http_url(self):
        return f"http://{self.http}"

    @property
    def query_url(self):
        return f"http://{self.query}"

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        self._stdout.close()
        return code

    def stderr(self):
        return "".join(self.banner + self.stderr_lines)

    def stdout(self):
        return self.stdout_path.read_text()


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "lake"
    return d


@pytest.fixture
def collector_factory():
    started = []

    def make(*a, **kw):
        c = Collector(*a, **kw)
        started.append(c)
        return c

    yield make
    for c in started:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()


def read_lake(data_dir):
    """Every span in the lake, read by pyarrow, as a list of dicts (partition columns included)."""
    import pyarrow.dataset as ds

    files = sorted(pathlib.Path(data_dir).rglob("*.parquet"))
    if not files:
        return []
    dataset = ds.dataset(str(pathlib.Path(data_dir) / "spans"), format="parquet", partitioning="hive")
    return dataset.to_table().to_pylist()


def duckdb_query(data_dir, sql):
    import duckdb

    con = duckdb.connect()
    glob = str(pathlib.Path(data_dir) / "spans" / "**" / "*.parquet")
    con.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
    return con.execute(sql).fetchall()
