"""Pipeline files: `spanlake validate`, bad files refused by `run`, the embedded default pipeline,
`--data`, and the batch environment overrides."""

import pathlib
import subprocess
import textwrap

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: F401  (SDK present)

from conftest import BIN, ROOT, pipeline, read_lake
from test_otlp_json import build_request, kv, post


def validate(path):
    return subprocess.run([BIN, "validate", "--config", str(path)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "pipelines").glob("*.yaml")))
def test_shipped_pipelines_are_valid(name):
    r = validate(ROOT / "pipelines" / name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout


def test_validate_lists_every_problem_as_file_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        receivers:
          otlp:
            protocols:
              grpc:
                endpoint: ${env:SPANLAKE_TEST_SURELY_UNSET}
        processors:
          batch:
            max_size: many
        exporters:
          parquet:
            path: ./lake
            compresion_level: 5
        service:
          pipelines:
            traces:
              receivers: [otlp]
              processors: [batch]
              exporters: [parquet]
        """))
    r = validate(bad)
    assert r.returncode == 2
    assert r.stdout.strip().splitlines() == [
        f"{bad}:5: environment variable SPANLAKE_TEST_SURELY_UNSET is not set; set it or give a default: ${{env:SPANLAKE_TEST_SURELY_UNSET:-value}}",
    ]
    bad.write_text(bad.read_text().replace("${env:SPANLAKE_TEST_SURELY_UNSET}", "${env:SPANLAKE_TEST_SURELY_UNSET:-127.0.0.1:4317}"))
    r = validate(bad)
    assert r.returncode == 2
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"{bad}:8: processors.batch.max_size: invalid type: string \"many\"")
    assert lines[1].startswith(f"{bad}:12: exporters.parquet.compresion_level: unknown field `compresion_level`")


def test_unreadable_and_invalid_yaml(tmp_path):
    r = validate(tmp_path / "missing.yaml")
    assert r.returncode == 2
    assert f"{tmp_path / 'missing.yaml'}: cannot read the pipeline file" in r.stdout
    bad = tmp_path / "syntax.yaml"
    bad.write_text("receivers:\n  otlp: [\nexporters:\n")
    r = validate(bad)
    assert r.returncode == 2
    assert r.stdout.startswith(f"{bad}:") and "not valid YAML" in r.stdout


def test_run_refuses_a_bad_file_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("receivers:\n  otlp:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n")
    r = subprocess.run([BIN, "run", "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert f"{bad}:5: service.pipelines.traces: a pipeline needs at least one exporter" in r.stderr


def test_default_pipeline_with_data_override(collector_factory, tmp_path):
    lake = tmp_path / "elsewhere"
    c = collector_factory(
        None,
        args=["--data", str(lake)],
        env={"SPANLAKE_OTLP_GRPC_ENDPOINT": "127.0.0.1:0", "SPANLAKE_OTLP_HTTP_ENDPOINT": "127.0.0.1:0", "SPANLAKE_QUERY_ENDPOINT": "127.0.0.1:0", "BATCH_MAX": "7"},
    )
    banner = "".join(c.banner)
    assert "running pipelines/default.yaml (embedded)" in banner
    assert f"writing to {lake / 'spans'}" in banner
    assert "pipeline traces: otlp → lifecycle → redaction → batch → parquet" in banner
    status, _, body = post(f"{c.http_url}/v1/traces", build_request().SerializeToString(), "application/x-protobuf")
    assert status == 200, body
    assert c.stop() == 0
    assert "from the environment: processor batch: BATCH_MAX=7" in c.stderr()
    # the running child of the ended root is closed (a closed copy beside the running one)
    rows = read_lake(lake)
    assert len({(r["trace_id"], r["span_id"]) for r in rows}) == 2
    assert any(dict(r["attributes"]).get("spanlake.auto_close_reason") == "trace_end" for r in rows)
    assert not (pathlib.Path(c.workdir) / "spanlake-data").exists()


def test_logs_can_be_json(collector_factory, data_dir):
    c = collector_factory(pipeline(data_dir, service={"telemetry": {"logs": {"encoding": "json", "level": "info"}}}))
    assert c.stop() == 0
    import json

    logs = [json.loads(l) for l in c.stderr_lines if l.startswith("{")]
    assert any("shutting down" in l["fields"]["message"] for l in logs), c.stderr()


def test_sidecar_pipeline_after_releasing_start_up_memory(collector_factory, tmp_path):
    """The shipped sidecar pipeline, as a sidecar runs it: start-up code dropped from memory
    once running, freed memory given back at once; spans still flow, secrets are still masked
    (the built-in rules' quick look before the regexes) and everything is committed on stop."""
    lake = tmp_path / "lake"
    c = collector_factory(
        (ROOT / "pipelines" / "sidecar.yaml").read_text(),
        env={
            "SPANLAKE_OTLP_GRPC_ENDPOINT": "127.0.0.1:0",
            "SPANLAKE_OTLP_HTTP_ENDPOINT": "127.0.0.1:0",
            "SPANLAKE_DATA": str(lake),
            "RUST_LOG": "warn,spanlake=debug",
        },
    )
    req = build_request()
    span = req.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.append(kv("http.request.body", string_value="card 4111 1111 1111 1111, Bearer abcdefghijklmnop"))
    span.attributes.append(kv("user_agent.original", string_value="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"))
    for _ in range(3):
        status, _, body = post(f"{c.http_url}/v1/traces", req.SerializeToString(), "application/x-protobuf")
        assert status == 200, body
    assert c.stop() == 0
    assert "start-up code pages released" in c.stderr()
    rows = [r for r in read_lake(lake) if r["span_id"] == span.span_id.hex()]
    assert rows, "the spans are in the lake"
    attrs = dict(rows[0]["attributes"])
    assert "4111" not in attrs["http.request.body"] and "abcdefghijklmnop" not in attrs["http.request.body"]
    assert "****" in attrs["http.request.body"]
    assert attrs["user_agent.original"] == "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"
