//! The OTLP/gRPC server's front: the connections, served by hyper's HTTP/2 server, and the two
//! OTLP calls — trace exports (`TraceService/Export`, the collector's hot path) and logs exports
//! (`LogsService/Export`, span events sent as log records) — answered here straight from the
//! request's frames; every other call (the native and query APIs, health) goes on to tonic's
//! routes.
//!
//! For the OTLP calls this is what tonic's server did, without the layers a unary call with
//! one message does not need (tonic's service stack, the router, a streaming decoder and a
//! boxed body per layer): the gRPC framing (a compression flag and a length before the
//! message), `grpc-encoding` identity or gzip, the size limit (`max_recv_msg_size_mib`, told
//! from the prefix before the rest is read), the memory reservation before decoding, and
//! statuses OTLP clients act on: `INVALID_ARGUMENT` for what cannot be decoded,
//! `RESOURCE_EXHAUSTED` without retry information for a message over the limit (both final),
//! with `RetryInfo` for overload, `UNAVAILABLE` when the collector is stopping.
//!
//! A client's deadline (`grpc-timeout`) is the client's: when it passes, the client resets the
//! stream (HTTP/2 `RST_STREAM`), and hyper drops the call's work.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use spanlake_core::{Batch, CancellationToken, Intake, Reservation};
use tonic::Status;
use tonic::body::Body;

use super::decode::{GunzipError, gunzip, keep_valid_logs, spans_of_protobuf, spans_of_request};

/// The trace export's path.
pub(crate) const EXPORT_TRACES: &str =
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The logs export's path (span events sent as log records).
pub(crate) const EXPORT_LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The gRPC prefix before a message: a compression flag and the message's length.
const PREFIX: usize = 5;

/// The compressions a client may use (sent back with every answer, and with the refusal of
/// another one, as the gRPC protocol asks).
const ACCEPTED_ENCODINGS: &str = "gzip";

/// The service hyper calls for every request of a connection.
#[derive(Clone)]
pub(crate) struct Front {
    shared: Arc<Shared>,
    routes: tonic::service::Routes,
}

struct Shared {
    intake: Intake,
    max_message: usize,
}

impl Front {
    pub(crate) fn new(intake: Intake, max_message: usize, routes: tonic::service::Routes) -> Self {
        Front {
            shared: Arc::new(Shared {
                intake,
                max_message,
            }),
            routes,
        }
    }
}

impl hyper::service::Service<Request<Incoming>> for Front {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let traces = match req.uri().path() {
            EXPORT_TRACES => Some(true),
            EXPORT_LOGS => Some(false),
            _ => None,
        };
        if let Some(traces) = traces {
            let shared = Arc::clone(&self.shared);
            Box::pin(async move {
                let answered = if traces {
                    export_traces(&shared, req).await
                } else {
                    export_logs(&shared, req).await
                };
                Ok(answered.unwrap_or_else(|refusal| refusal))
            })
        } else {
            let mut routes = self.routes.clone();
            Box::pin(async move {
                let Ok(resp) = tower::Service::call(&mut routes, req.map(Body::new)).await;
                Ok(super::grpc::refine_status(resp))
            })
        }
    }
}

/// Serve the connections `listener` accepts until `shutdown`; then stop accepting (the port
/// closes at once), let every connection finish the calls it has begun (HTTP/2 `GOAWAY`), and
/// return when the last one has closed.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    front: Front,
    shutdown: CancellationToken,
) {
    let mut http2 = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    // As tonic's server configured it: hyper's defaults, no limit on concurrent streams, no
    // keep-alive pings of the server's own.
    http2
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(None)
        .keep_alive_interval(None);
    // Every connection task holds a sender: when the last is dropped, all have closed.
    let (open, mut closed) = tokio::sync::mpsc::channel::<Infallible>(1);
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // try again shortly rather than spinning.
                    tracing::warn!(error = %e, "OTLP/gRPC could not accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = http2.serve_connection(hyper_util::rt::TokioIo::new(stream), front.clone());
        let shutdown = shutdown.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "OTLP/gRPC connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open);
    let _ = closed.recv().await;
}

/// A refusal of the call, as its answer.
type Refusal = Response<Body>;

fn refuse(status: Status) -> Refusal {
    status.into_http()
}

/// `TraceService/Export`: read the one message, decode it, admit its spans, answer.
async fn export_traces(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let keep = shared.intake.keeps_requests();
    let (message, reservation) = read_message(shared, req, keep).await?;
    let decoded = if keep {
        spans_of_request(message)
    } else {
        spans_of_protobuf(&message)
    };
    let (block, rejected) = decoded.map_err(|e| refuse(Status::invalid_argument(e)))?;
    admit(&shared.intake, reservation, Batch::blocks(vec![block])).await?;
    let partial_success = (rejected.count > 0).then_some(ExportTracePartialSuccess {
        rejected_spans: rejected.count,
        error_message: rejected.message,
    });
    Ok(answer(&ExportTraceServiceResponse { partial_success }))
}

/// `LogsService/Export` (span events sent as log records): read the one message, decode it,
/// admit its records, answer.
async fn export_logs(shared: &Shared, req: Request<Incoming>) -> Result<Response<Body>, Refusal> {
    let (message, reservation) = read_message(shared, req, false).await?;
    let request = ExportLogsServiceRequest::decode(&message[..]).map_err(|e| {
        refuse(Status::invalid_argument(format!(
            "the request is not an OTLP logs export: {e}"
        )))
    })?;
    drop(message);
    let mut resource_logs = request.resource_logs;
    let rejected = keep_valid_logs(&mut resource_logs);
    admit(&shared.intake, reservation, Batch::logs(resource_logs)).await?;
    let partial_success = (rejected.count > 0).then_some(ExportLogsPartialSuccess {
        rejected_log_records: rejected.count,
        error_message: rejected.message,
    });
    Ok(answer(&ExportLogsServiceResponse { partial_success }))
}

/// Admit what a request held, with the memory reserved for it before decoding, and wait until
/// it is as safe as the pipelines make it; an empty batch has nothing to wait for. Overload is
/// `RESOURCE_EXHAUSTED` with `RetryInfo`, anything else `UNAVAILABLE`: both retryable for an
/// OTLP client.
async fn admit(intake: &Intake, reservation: Reservation, mut batch: Batch) -> Result<(), Refusal> {
    batch.add_guard(Arc::new(reservation));
    if batch.is_empty() {
        return Ok(());
    }
    intake
        .admit(batch)
        .await
        .map_err(|e| refuse(e.to_grpc_status()))
}

/// Read a unary call's one message, decompressed, with the memory reserved for it.
///
/// Its prefix comes first (the size, so room is reserved before the rest is read), then its
/// bytes. A message that arrives in one frame is that frame's bytes (no copy) unless `keep`
/// (the pipeline keeps the request for its log): a frame shares its memory with others h2
/// read at once, so a kept message is copied into a buffer of its own size.
async fn read_message(
    shared: &Shared,
    req: Request<Incoming>,
    keep: bool,
) -> Result<(Bytes, Reservation), Refusal> {
    let (parts, mut body) = req.into_parts();
    let grpc = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        return Err(not_grpc());
    }
    let gzip = match parts
        .headers
        .get("grpc-encoding")
        .map(HeaderValue::as_bytes)
    {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(other) => {
            let mut refusal = refuse(Status::unimplemented(format!(
                "the message is compressed with {}, which this server does not read \
                 (it reads gzip)",
                String::from_utf8_lossy(other)
            )));
            refusal.headers_mut().insert(
                "grpc-accept-encoding",
                HeaderValue::from_static(ACCEPTED_ENCODINGS),
            );
            return Err(refusal);
        }
    };
    let max = shared.max_message;
    let too_large = || {
        refuse(Status::resource_exhausted(format!(
            "the request is larger than max_recv_msg_size_mib ({max} bytes)"
        )))
    };

    let mut prefix = [0u8; PREFIX];
    let mut have = 0;
    let mut declared: Option<(bool, usize)> = None;
    let mut reservation = None;
    let mut single: Option<Bytes> = None;
    let mut gathered = BytesMut::new();
    let mut got = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            refuse(Status::cancelled(format!(
                "the request could not be read: {e}"
            )))
        })?;
        let Ok(mut data) = frame.into_data() else {
            continue; // a client's trailers: nothing in them for a unary call
        };
        let len = match declared {
            Some((_, len)) => len,
            None => {
                let n = data.len().min(PREFIX - have);
                prefix[have..have + n].copy_from_slice(&data[..n]);
                have += n;
                data.advance(n);
                if have < PREFIX {
                    continue;
                }
                let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
                if prefix[0] > 1 {
                    return Err(refuse(Status::invalid_argument(format!(
                        "the message's compression flag is {}, not 0 or 1",
                        prefix[0]
                    ))));
                }
                if len > max {
                    return Err(too_large());
                }
                reservation = Some(
                    shared
                        .intake
                        .reserve(len + PREFIX)
                        .map_err(|e| refuse(e.to_grpc_status()))?,
                );
                declared = Some((prefix[0] == 1, len));
                len
            }
        };
        if data.is_empty() {
            continue;
        }
        if got + data.len() > len {
            return Err(refuse(Status::invalid_argument(
                "the request holds more than one message; a unary call carries one",
            )));
        }
        got += data.len();
        if single.is_none() && gathered.is_empty() && data.len() == len && !keep {
            single = Some(data);
        } else {
            if gathered.capacity() == 0 {
                gathered.reserve(len);
            }
            gathered.put(data);
        }
    }
    // Room is reserved as the prefix is read: both or neither.
    let (Some((compressed, len)), Some(reservation)) = (declared, reservation) else {
        return Err(refuse(Status::invalid_argument(if have == 0 {
            "the request holds no message".to_string()
        } else {
            format!("the request ended inside its gRPC prefix ({have} of {PREFIX} bytes)")
        })));
    };
    if got < len {
        return Err(refuse(Status::invalid_argument(format!(
            "the request ended after {got} of its message's {len} bytes"
        ))));
    }
    let mut message = single.unwrap_or_else(|| gathered.freeze());
    if compressed {
        if !gzip {
            return Err(refuse(Status::internal(
                "the message is marked compressed but the request names no grpc-encoding",
            )));
        }
        message = gunzip(&message, max).map_err(|e| match e {
            GunzipError::TooLarge => too_large(),
            GunzipError::Invalid(e) => refuse(Status::invalid_argument(format!(
                "the gzip message could not be decompressed: {e}"
            ))),
        })?;
    }
    Ok((message, reservation))
}

/// A unary call's answer: the message after its prefix, then `grpc-status: 0`.
fn answer<M: Message>(message: &M) -> Response<Body> {
    let len = message.encoded_len();
    let data = if len == 0 {
        Bytes::from_static(&[0; PREFIX])
    } else {
        let mut out = BytesMut::with_capacity(PREFIX + len);
        out.put_u8(0);
        out.put_u32(len as u32);
        message
            .encode(&mut out)
            .expect("the buffer has room for the message");
        out.freeze()
    };
    let mut resp = Response::new(Body::new(Unary {
        data: Some(data),
        trailers: true,
    }));
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        "grpc-accept-encoding",
        HeaderValue::from_static(ACCEPTED_ENCODINGS),
    );
    resp
}

/// A request that is not gRPC (its content type does not begin with `application/grpc`): HTTP
/// 415, as the gRPC protocol asks.
fn not_grpc() -> Refusal {
    let mut resp = Response::new(Body::new(http_body_util::Full::new(Bytes::from_static(
        b"this port serves OTLP over gRPC: the content type must begin with application/grpc\n",
    ))));
    *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The body of a unary answer: one data frame, then the trailers with `grpc-status: 0`.
struct Unary {
    data: Option<Bytes>,
    trailers: bool,
}

impl http_body::Body for Unary {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if std::mem::take(&mut self.trailers) {
            let mut trailers = HeaderMap::with_capacity(1);
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.trailers
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::otlp::GrpcConfig;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use spanlake_core::{Pressure, bounded};

    /// A running OTLP/gRPC server on 127.0.0.1 and the queue its batches arrive in.
    struct Server {
        addr: SocketAddr,
        batches: spanlake_core::Receiver,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn server(max_mib: usize) -> Server {
        let (tx, batches) = bounded("test", 16);
        let intake = Intake::new(vec![tx], Duration::from_secs(5), Pressure::unlimited());
        let config = GrpcConfig {
            endpoint: "127.0.0.1:0".into(),
            max_recv_msg_size_mib: max_mib,
            trace_api: false,
        };
        let shutdown = CancellationToken::new();
        let (addr, task) =
            crate::otlp::grpc::start(&config, intake, shutdown.clone(), None).expect("listens");
        Server {
            addr,
            batches,
            shutdown,
            task,
        }
    }

    fn request(spans: usize) -> ExportTraceServiceRequest {
        let span = |i: usize| Span {
            trace_id: vec![7; 16],
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("span {i}"),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans).map(span).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Take the next batch and count its spans (dropping it acknowledges the client).
    async fn next_spans(batches: &mut spanlake_core::Receiver) -> usize {
        tokio::time::timeout(Duration::from_secs(10), batches.recv())
            .await
            .expect("a batch arrives")
            .expect("the queue is open")
            .len()
    }

    /// A tonic client's connection to `addr`.
    async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connects")
    }

    #[tokio::test]
    async fn tonic_clients_export_plain_and_gzip() {
        let mut s = server(4);
        let channel = channel(s.addr).await;
        let plain = TraceServiceClient::new(channel.clone());
        let gzip = TraceServiceClient::new(channel)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        for (mut client, spans) in [(plain, 3), (gzip, 2_000)] {
            let call = tokio::spawn(async move { client.export(request(spans)).await });
            assert_eq!(next_spans(&mut s.batches).await, spans);
            let answer = call.await.expect("joins").expect("accepted").into_inner();
            assert_eq!(answer.partial_success, None);
        }
        s.shutdown.cancel();
        s.task.await.expect("the server stops");
    }

    #[tokio::test]
    async fn logs_exports_are_answered_plain_and_gzip_and_bad_records_counted() {
        use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let mut s = server(4);
        let channel = channel(s.addr).await;
        let record = |trace_id: Vec<u8>| LogRecord {
            trace_id,
            span_id: vec![3; 8],
            event_name: "exception".into(),
            time_unix_nano: 1_500,
            ..Default::default()
        };
        let logs = |records: Vec<LogRecord>| ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let plain = LogsServiceClient::new(channel.clone());
        let gzip = LogsServiceClient::new(channel)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        for (mut client, n) in [(plain, 2), (gzip, 300)] {
            let mut records: Vec<_> = (0..n).map(|_| record(vec![7; 16])).collect();
            records.push(record(vec![1, 2, 3])); // a trace id of 3 bytes: refused
            let call = tokio::spawn(async move { client.export(logs(records)).await });
            assert_eq!(next_spans(&mut s.batches).await, n);
            let answer = call.await.expect("joins").expect("accepted").into_inner();
            let partial = answer.partial_success.expect("a partial success");
            assert_eq!(partial.rejected_log_records, 1);
            assert!(partial.error_message.contains("trace_id"), "{partial:?}");
        }

        // Not a logs export, and over the limit: final statuses, nothing admitted.
        let logs_call = |body: Vec<Bytes>| raw_call_to(s.addr, EXPORT_LOGS, &[GRPC], body, true);
        let (_, headers, _) = logs_call(vec![framed(0, &[0xff; 40])]).await;
        assert_eq!(grpc_status(&headers), "3");
        let mut prefix = BytesMut::new();
        prefix.put_u8(0);
        prefix.put_u32((4 << 20) + 1);
        let (_, headers, _) = logs_call(vec![prefix.freeze()]).await;
        assert_eq!(grpc_status(&headers), "8");
        assert!(s.batches.try_recv().is_none());
        s.shutdown.cancel();
        s.task.await.expect("the server stops");
    }

    /// A raw HTTP/2 call: the answer's status, headers (with trailers) and body.
    async fn raw_call(
        addr: SocketAddr,
        headers: &[(&str, &str)],
        body: Vec<Bytes>,
        end: bool,
    ) -> (StatusCode, HeaderMap, Bytes) {
        raw_call_to(addr, EXPORT_TRACES, headers, body, end).await
    }

    /// A raw HTTP/2 call to `path`.
    async fn raw_call_to(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<Bytes>,
        end: bool,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let (client, conn) = h2::client::handshake(tcp).await.expect("handshake");
        tokio::spawn(conn);
        let mut client = client.ready().await.expect("ready");
        let mut req = http::Request::post(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let (response, mut send) = client
            .send_request(req.body(()).expect("request"), false)
            .expect("sent");
        let n = body.len();
        for (i, chunk) in body.into_iter().enumerate() {
            send.send_data(chunk, end && i + 1 == n).expect("data");
        }
        if n == 0 && end {
            send.send_data(Bytes::new(), true).expect("end");
        }
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("answered in time")
            .expect("answer");
        let status = response.status();
        let mut headers = response.headers().clone();
        let mut body = response.into_body();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            data.put(chunk.expect("body"));
        }
        if let Some(trailers) = body.trailers().await.expect("trailers") {
            headers.extend(trailers);
        }
        drop(send);
        (status, headers, data.freeze())
    }

    fn framed(flag: u8, message: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(flag);
        out.put_u32(message.len() as u32);
        out.put_slice(message);
        out.freeze()
    }

    fn grpc_status(headers: &HeaderMap) -> &str {
        headers
            .get("grpc-status")
            .expect("a grpc-status")
            .to_str()
            .expect("ascii")
    }

    const GRPC: (&str, &str) = ("content-type", "application/grpc");

    #[tokio::test]
    async fn every_bad_call_gets_a_clear_status_and_the_server_stays_up() {
        let mut s = server(1);
        let good = request(5).encode_to_vec();
        let gz = |data: &[u8]| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("compresses");
            e.finish().expect("compresses")
        };

        // Not gRPC: HTTP 415.
        let (status, _, body) = raw_call(
            s.addr,
            &[("content-type", "application/json")],
            vec![framed(0, &good)],
            true,
        )
        .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(String::from_utf8_lossy(&body).contains("application/grpc"));

        // What the call is, its headers, its body's frames, the grpc-status wanted.
        type Case = (
            &'static str,
            Vec<(&'static str, &'static str)>,
            Vec<Bytes>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "unknown encoding",
                vec![GRPC, ("grpc-encoding", "zstd")],
                vec![framed(1, &good)],
                "12",
            ),
            ("no message", vec![GRPC], vec![], "3"),
            (
                "prefix cut",
                vec![GRPC],
                vec![Bytes::from_static(&[0, 0, 0])],
                "3",
            ),
            (
                "message cut",
                vec![GRPC],
                vec![framed(0, &good).slice(..20)],
                "3",
            ),
            (
                "two messages",
                vec![GRPC],
                vec![framed(0, &good), framed(0, &good)],
                "3",
            ),
            ("bad flag", vec![GRPC], vec![framed(2, &good)], "3"),
            (
                "not protobuf",
                vec![GRPC],
                vec![framed(0, &[0xff; 40])],
                "3",
            ),
            (
                "compressed, no encoding",
                vec![GRPC],
                vec![framed(1, &gz(&good))],
                "13",
            ),
            (
                "not gzip",
                vec![GRPC, ("grpc-encoding", "gzip")],
                vec![framed(1, &good)],
                "3",
            ),
            (
                "over the limit once decompressed",
                vec![GRPC, ("grpc-encoding", "gzip")],
                vec![framed(1, &gz(&vec![0u8; (1 << 20) + 1]))],
                "8",
            ),
        ];
        for (what, headers, body, want) in cases {
            let (status, headers, _) = raw_call(s.addr, &headers, body, true).await;
            assert_eq!(status, StatusCode::OK, "{what}");
            assert_eq!(grpc_status(&headers), want, "{what}: {headers:?}");
            assert!(headers.contains_key("grpc-message"), "{what}");
            if want == "12" {
                assert_eq!(headers["grpc-accept-encoding"], "gzip");
            }
        }

        // Over the limit by its prefix alone: refused before the rest is sent (the stream is
        // still open when the answer comes).
        let mut prefix = BytesMut::new();
        prefix.put_u8(0);
        prefix.put_u32((1 << 20) + 1);
        let (_, headers, _) = raw_call(s.addr, &[GRPC], vec![prefix.freeze()], false).await;
        assert_eq!(grpc_status(&headers), "8");

        // Nothing of the above reached the pipeline; a good call still does, in pieces and
        // gzip-compressed.
        let whole = framed(0, &good);
        let pieces = vec![whole.slice(..2), whole.slice(2..9), whole.slice(9..)];
        let call = tokio::spawn(raw_call(s.addr, &[GRPC], pieces, true));
        assert_eq!(next_spans(&mut s.batches).await, 5);
        let (_, headers, body) = call.await.expect("joins");
        assert_eq!(grpc_status(&headers), "0");
        assert_eq!(&body[..], &[0, 0, 0, 0, 0]);
        let call = tokio::spawn(raw_call(
            s.addr,
            &[GRPC, ("grpc-encoding", "gzip")],
            vec![framed(1, &gz(&good))],
            true,
        ));
        assert_eq!(next_spans(&mut s.batches).await, 5);
        assert_eq!(grpc_status(&call.await.expect("joins").1), "0");
        assert!(s.batches.try_recv().is_none());
        s.shutdown.cancel();
        s.task.await.expect("the server stops");
    }

    #[tokio::test]
    async fn spans_refused_are_counted_in_the_answer() {
        let mut s = server(4);
        let mut req = request(3);
        req.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![1, 2, 3];
        let call = tokio::spawn(raw_call(
            s.addr,
            &[GRPC],
            vec![framed(0, &req.encode_to_vec())],
            true,
        ));
        assert_eq!(next_spans(&mut s.batches).await, 2);
        let (_, headers, body) = call.await.expect("joins");
        assert_eq!(grpc_status(&headers), "0");
        let answer = ExportTraceServiceResponse::decode(&body[PREFIX..]).expect("an answer");
        let partial = answer.partial_success.expect("a partial success");
        assert_eq!(partial.rejected_spans, 1);
        assert!(!partial.error_message.is_empty());
    }

    #[tokio::test]
    async fn stopping_finishes_the_calls_begun_and_takes_no_new_ones() {
        let mut s = server(4);
        let call = tokio::spawn(raw_call(
            s.addr,
            &[GRPC],
            vec![framed(0, &request(4).encode_to_vec())],
            true,
        ));
        // The batch is held here: the call waits for its acknowledgement.
        let held = tokio::time::timeout(Duration::from_secs(10), s.batches.recv())
            .await
            .expect("a batch arrives")
            .expect("the queue is open");
        s.shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!s.task.is_finished(), "a call is still in flight");
        assert!(
            tokio::net::TcpStream::connect(s.addr).await.is_err(),
            "the port is closed"
        );
        drop(held);
        let (_, headers, _) = call.await.expect("joins");
        assert_eq!(grpc_status(&headers), "0");
        tokio::time::timeout(Duration::from_secs(10), s.task)
            .await
            .expect("the server stops once its calls are done")
            .expect("joins");
    }
}
