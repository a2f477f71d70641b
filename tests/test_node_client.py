"""The official OpenTelemetry JavaScript SDK (@grpc/grpc-js over Node's HTTP/2, a client stack
other than the Python SDK's gRPC core) exports over OTLP/gRPC, plain and gzip, in exports of
many HTTP/2 frames; DuckDB reads back every span it was told was accepted."""

import json
import pathlib
import shutil
import subprocess

import pytest

from conftest import duckdb_query, pipeline

NODE_DIR = pathlib.Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def node_client():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are needed for the JavaScript SDK client")
    if not (NODE_DIR / "node_modules" / "@opentelemetry" / "exporter-trace-otlp-grpc").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR, check=True, timeout=600)
    return NODE_DIR / "export.mjs"


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_javascript_sdk_exports_over_grpc(collector_factory, data_dir, node_client, compression):
    c = collector_factory(pipeline(data_dir))
    service = f"node-{compression}"
    out = subprocess.run(
        ["node", str(node_client), c.grpc, service, "1000", compression],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"exported": 1000, "code": 0}, out.stdout + out.stderr
    assert c.stop() == 0, c.stderr()
    rows = duckdb_query(
        data_dir,
        f"SELECT count(*), count(DISTINCT span_id), min(length(attributes['node.filler'])) "
        f"FROM spans WHERE service_name = '{service}'",
    )
    assert rows == [(1000, 1000, 2000)]
