"""Every bad input gets a clear answer, the valid spans beside it are kept, and the collector
keeps serving."""

import gzip
import json
import socket
import urllib.request

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import pipeline, read_lake
from test_otlp_json import build_request, post, to_otlp_json


@pytest.fixture
def c(collector_factory, data_dir):
    http = {"max_request_body_size": 1 << 20, "cors": {"allowed_origins": ["https://*.example.com"], "max_age": 600}}
    return collector_factory(pipeline(data_dir, http=http))


def status_message(body):
    return json.loads(body)["message"]


def test_wrong_content_type_is_415(c):
    status, headers, body = post(f"{c.http_url}/v1/traces", b"{}", content_type="text/plain")
    assert status == 415
    assert "Content-Type \"text/plain\" is not supported; send application/x-protobuf or application/json" in status_message(body)
    r = urllib.request.Request(f"{c.http_url}/v1/traces", data=b"{}", method="POST")
    r.remove_header("Content-type")
    status, _, body = post(f"{c.http_url}/v1/traces", b"{}", content_type="")
    assert status == 415
    assert "no Content-Type" in status_message(body)
    status, _, body = post(f"{c.http_url}/v1/traces", b"{}", encoding="br")
    assert status == 415
    assert "Content-Encoding \"br\" is not supported" in status_message(body)


def test_undecodable_bodies_are_400_saying_what_is_wrong(c):
    status, headers, body = post(f"{c.http_url}/v1/traces", b'{"resourceSpans": [', "application/json")
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    msg = status_message(body)
    assert "not a valid OTLP JSON ExportTraceServiceRequest" in msg and "line 1" in msg
    status, _, body = post(f"{c.http_url}/v1/traces", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"xyz"}]}]}]}')
    assert status == 400 and "OTLP JSON" in status_message(body)
    status, headers, body = post(f"{c.http_url}/v1/traces", b"\xff\xff\xff\xff", "application/x-protobuf")
    assert status == 400
    assert headers["Content-Type"] == "application/x-protobuf"
    from google.rpc import status_pb2  # shipped with the gRPC tooling's googleapis protos

    st = status_pb2.Status.FromString(body)
    assert st.code == 3 and "not a valid OTLP protobuf ExportTraceServiceRequest" in st.message
    status, _, body = post(f"{c.http_url}/v1/traces", b"not gzip at all", encoding="gzip")
    assert status == 400 and "not valid gzip" in status_message(body)


def test_oversize_bodies_are_413(c):
    # Refused from the declared length, before the body is read.
    host, port = c.http.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1048577\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert b"larger than max_request_body_size (1048576 bytes)" in reply
    # Sent without a length (chunked): refused once the limit is crossed.
    def chunks():
        for _ in range(17):
            yield b"x" * 65536
    r = urllib.request.Request(f"{c.http_url}/v1/traces", data=chunks(), method="POST",
                               headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    try:
        with urllib.request.urlopen(r, timeout=10) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, ConnectionError):
        status = None  # the server may close before the client has sent everything
    assert status in (413, None)
    # small on the wire, too big once inflated
    bomb = gzip.compress(json.dumps({"resourceSpans": [], "pad": " " * (4 << 20)}).encode())
    assert len(bomb) < 64 * 1024
    status, _, body = post(f"{c.http_url}/v1/traces", bomb, encoding="gzip")
    assert status == 413


def test_invalid_ids_are_refused_one_by_one(c, data_dir):
    req = build_request()
    spans = req.resource_spans[0].scope_spans[0].spans
    bad = spans.add()
    bad.CopyFrom(spans[1])
    bad.name = "short trace id"
    bad.trace_id = b"\x01" * 15
    zero = spans.add()
    zero.CopyFrom(spans[1])
    zero.name = "zero span id"
    zero.span_id = b"\x00" * 8
    missing = spans.add()
    missing.CopyFrom(spans[1])
    missing.name = "no span id"
    missing.span_id = b""
    # JSON
    status, _, body = post(f"{c.http_url}/v1/traces", json.dumps(to_otlp_json(req)).encode())
    assert status == 200
    ps = json.loads(body)["partialSuccess"]
    assert int(ps["rejectedSpans"]) == 3
    assert "span \"short trace id\"" in ps["errorMessage"] and "trace_id has 15 bytes; it must have 16" in ps["errorMessage"]
    assert "span_id is all zeros" in ps["errorMessage"] and "span_id is missing" in ps["errorMessage"]
    # protobuf over HTTP
    for s in spans:
        s.trace_id = bytes.fromhex("abababababababababababababababab") if len(s.trace_id) == 16 else s.trace_id
    status, _, body = post(f"{c.http_url}/v1/traces", req.SerializeToString(), "application/x-protobuf")
    assert status == 200
    resp = trace_service_pb2.ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == 3
    # gRPC
    for s in spans:
        s.trace_id = bytes.fromhex("cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd") if len(s.trace_id) == 16 else s.trace_id
    with grpc.insecure_channel(c.grpc) as ch:
        resp = trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=10)
    assert resp.partial_success.rejected_spans == 3
    assert "span_id is all zeros" in resp.partial_success.error_message
    assert c.stop() == 0
    rows = read_lake(data_dir)
    assert sorted((r["trace_id"][:4], r["name"]) for r in rows) == sorted(
        (t, n) for t in ("0af7", "abab", "cdcd") for n in ("agent.run", "llm.call (still running)")
    )


def test_grpc_garbage_and_oversize_keep_the_server_up(collector_factory, data_dir):
    c = collector_factory(pipeline(data_dir).replace('"endpoint": "127.0.0.1:0"\n', '"endpoint": "127.0.0.1:0", "max_recv_msg_size_mib": 1\n', 1))
    with grpc.insecure_channel(c.grpc) as ch:
        def raw(method):
            return ch.unary_unary(
                f"/opentelemetry.proto.collector.trace.v1.TraceService/{method}",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )

        with pytest.raises(grpc.RpcError) as e:
            raw("Export")(b"\xff\xff\xff\xff", timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid OTLP protobuf ExportTraceServiceRequest" in e.value.details()
        req = build_request()
        req.resource_spans[0].scope_spans[0].spans[0].name = "x" * (2 << 20)
        with pytest.raises(grpc.RpcError) as e:
            trace_service_pb2_grpc.TraceServiceStub(ch).Export(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max_recv_msg_size_mib (1048576 bytes)" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            raw("Import")(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        ok = trace_service_pb2_grpc.TraceServiceStub(ch).Export(build_request(), timeout=10)
        assert not ok.HasField("partial_success") or ok.partial_success.rejected_spans == 0
    assert c.stop() == 0
    assert len(read_lake(data_dir)) == 2


def test_cors_for_browser_sdks(c):
    def preflight(origin):
        r = urllib.request.Request(
            f"{c.http_url}/v1/traces",
            method="OPTIONS",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
        )
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.status, resp.headers

    status, headers = preflight("https://app.example.com")
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert headers["Access-Control-Max-Age"] == "600"
    status, headers = preflight("https://evil.test")
    assert headers.get("Access-Control-Allow-Origin") is None
    r = urllib.request.Request(
        f"{c.http_url}/v1/traces", data=b"{}", method="POST",
        headers={"Content-Type": "application/json", "Origin": "https://app.example.com"},
    )
    with urllib.request.urlopen(r, timeout=10) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


def test_unknown_paths_and_methods(c):
    status, _, _ = post(f"{c.http_url}/v1/metrics", b"{}")
    assert status == 404
    r = urllib.request.Request(f"{c.http_url}/v1/traces", method="GET")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(r, timeout=10)
    assert e.value.code == 405
