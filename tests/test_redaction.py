"""Planted secrets in every surface, sent by the official SDK and as OTLP JSON: after the
pipeline none of them is in the lake's files (raw or decoded), the debug output or any query
answer, and the plain values beside them are unchanged."""

import io
import json

import pyarrow.parquet as pq
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from conftest import pipeline
from test_otlp_json import post
from test_sdk_clients import grpc_exporter

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
SECRETS = {
    "password": "hunter2-supersecret",
    "jwt": JWT,
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "card": "4111 1111 1111 1111",
    "pem": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
    "basic": "Basic dXNlcjpwYXNzd29yZA==",
    "apikey": "sk-live-51HcXyZabcdef",
    "cookie": "session=9f8e7d6c5b4a",
}
NEEDLES = ["hunter2-supersecret", "eyJhbGciOiJIUzI1NiJ9", "AKIAIOSFODNN7EXAMPLE", "4111 1111 1111 1111",
           "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "dXNlcjpwYXNzd29yZA==", "sk-live-51HcXyZabcdef", "9f8e7d6c5b4a"]
PLAIN = ["/checkout", "order-7781", "checkout-svc", "gpt-4o", "42"]


def send_planted(c):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout-svc", "client_secret": SECRETS["apikey"]}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop", attributes={"api_key": SECRETS["apikey"]})
    with tracer.start_as_current_span(f"charge card {SECRETS['card']}", attributes={
        "password": SECRETS["password"],
        "http.request.header.authorization": SECRETS["basic"],
        "http.request.header.cookie": SECRETS["cookie"],
        "http.route": "/checkout",
        "order.id": "order-7781",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 42,
        "gen_ai.prompt": json.dumps({"messages": [{"role": "user", "content": f"use key {SECRETS['aws']}"}], "token": SECRETS["jwt"]}),
        "pem": SECRETS["pem"],
        "tags": [f"Bearer {JWT}", "ok"],
    }) as span:
        span.add_event(f"login Bearer {JWT}", {"set-cookie": SECRETS["cookie"], "note": f"card {SECRETS['card']}"})
        span.set_status(Status(StatusCode.ERROR, f"denied for {SECRETS['aws']}"))
    provider.shutdown()
    exporter = grpc_exporter(c)
    assert exporter.export(memory.get_finished_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()


def test_no_secret_reaches_the_lake_or_a_query(collector_factory, data_dir):
    cfg = json.loads(pipeline(data_dir, processors=("redaction", "batch"), exporters=("parquet", "debug"),
                              extra_exporters={"debug": {"verbosity": "detailed"}}))
    cfg["processors"]["redaction"] = {"builtin_rules": True, "summary": "debug"}
    c = collector_factory(json.dumps(cfg))
    send_planted(c)
    # queries, at once (live tail)
    status, _, body = post(f"{c.query_url}/api/sql", b"SELECT * FROM spans", "text/plain")
    assert status == 200
    answers = [body.decode()]
    rows = json.loads(body)
    trace_id = rows[0]["trace_id"]
    for path in (f"/api/traces/{trace_id}", f"/jaeger/api/traces/{trace_id}"):
        import urllib.request
        with urllib.request.urlopen(c.query_url + path, timeout=10) as r:
            answers.append(r.read().decode())
    assert c.stop() == 0
    # the files: raw bytes, decoded values, and an uncompressed re-encoding of every column
    files = list(data_dir.rglob("*.parquet"))
    assert files
    blobs = [f.read_bytes() for f in files]
    for f in files:
        table = pq.read_table(f)
        blobs.append(repr(table.to_pylist()).encode())
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="none")
        blobs.append(buf.getvalue())
    blobs += [a.encode() for a in answers]
    blobs.append(c.stdout().encode())
    blobs.append(c.stderr().encode())
    for needle in NEEDLES:
        for b in blobs:
            assert needle.encode() not in b, f"secret {needle!r} leaked"
    # plain values are unchanged, and the summary says what was redacted
    row = pq.read_table(files[0]).to_pylist()[0]
    attrs = dict(row["attributes"])
    assert attrs["http.route"] == "/checkout" and attrs["order.id"] == "order-7781"
    assert attrs["gen_ai.usage.input_tokens"] == "42" and dict(row["attribute_types"])["gen_ai.usage.input_tokens"] == "int"
    assert attrs["password"] == "****"
    assert json.loads(attrs["gen_ai.prompt"]) == {"messages": [{"role": "user", "content": "use key ****"}], "token": "****"}
    assert row["name"] == "charge card ****"
    assert row["status_message"] == "denied for ****"
    assert int(attrs["redaction.masked.count"]) >= 8
    assert "password" in attrs["redaction.keys"]
    assert row["service_name"] == "checkout-svc"
    assert dict(row["resource_attributes"])["client_secret"] == "****"
