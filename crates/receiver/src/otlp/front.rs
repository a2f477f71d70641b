//! The OTLP/gRPC server's front: what the two OTLP calls mean — trace exports
//! (`TraceService/Export`, the collector's hot path) and logs exports (`LogsService/Export`,
//! span events sent as log records) — answered straight from the request's frames by the
//! server's own HTTP/2 connections (`http2.rs`); every other call (the native and query APIs,
//! health, reflection) goes on to tonic's routes.
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
//! stream (HTTP/2 `RST_STREAM`), and the connection drops the call's work.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use spanlake_core::{Batch, CancellationToken, Intake, Reservation};
use tonic::Status;

use super::decode::{GunzipError, gunzip, keep_valid_logs, spans_of_protobuf, spans_of_request};

/// The trace export's path.
pub(crate) const EXPORT_TRACES: &str =
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The logs export's path (span events sent as log records).
pub(crate) const EXPORT_LOGS: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// The gRPC prefix before a message: a compression flag and the message's length.
pub(crate) const PREFIX: usize = 5;

/// The compressions a client may use (sent back with every answer, and with the refusal of
/// another one, as the gRPC protocol asks).
pub(crate) const ACCEPTED_ENCODINGS: &str = "gzip";

/// What every connection of the server shares: the OTLP calls' intake and limit, and the
/// routes of the other calls.
#[derive(Clone)]
pub(crate) struct Front {
    pub(crate) shared: Arc<Shared>,
    pub(crate) routes: tonic::service::Routes,
}

pub(crate) struct Shared {
    pub(crate) intake: Intake,
    pub(crate) max_message: usize,
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

/// The OTLP call a path names: `Some(true)` trace exports, `Some(false)` logs exports.
pub(crate) fn otlp_call(path: &[u8]) -> Option<bool> {
    if path == EXPORT_TRACES.as_bytes() {
        Some(true)
    } else if path == EXPORT_LOGS.as_bytes() {
        Some(false)
    } else {
        None
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
        let front = front.clone();
        let shutdown = shutdown.clone();
        let open = open.clone();
        tokio::spawn(async move {
            if let Err(e) = super::http2::serve_connection(stream, front, shutdown).await {
                tracing::debug!(error = %e, "OTLP/gRPC connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open);
    let _ = closed.recv().await;
}

/// Whether a call's content type is gRPC's (`application/grpc`, `application/grpc+proto`...).
pub(crate) fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|v| v.starts_with(b"application/grpc"))
}

/// Whether a call's messages are gzip-compressed, from its `grpc-encoding`; another
/// compression is refused (`UNIMPLEMENTED`, with the ones accepted).
pub(crate) fn is_gzip(encoding: Option<&[u8]>) -> Result<bool, Status> {
    match encoding {
        None | Some(b"identity") => Ok(false),
        Some(b"gzip") => Ok(true),
        Some(other) => Err(Status::unimplemented(format!(
            "the message is compressed with {}, which this server does not read (it reads gzip)",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// The body a request that is not gRPC is answered with (HTTP 415, as the gRPC protocol asks).
pub(crate) const NOT_GRPC: &str =
    "this port serves OTLP over gRPC: the content type must begin with application/grpc\n";

/// Answer an OTLP call whose message has been read: decode it, admit what it holds, and give
/// the answer's message (with its gRPC prefix) or the refusal.
pub(crate) async fn export(
    shared: &Shared,
    traces: bool,
    message: Bytes,
    reservation: Reservation,
) -> Result<Bytes, Status> {
    if traces {
        export_traces(shared, message, reservation).await
    } else {
        export_logs(shared, message, reservation).await
    }
}

/// `TraceService/Export`: decode the one message, admit its spans, answer.
async fn export_traces(
    shared: &Shared,
    message: Bytes,
    reservation: Reservation,
) -> Result<Bytes, Status> {
    let decoded = if shared.intake.keeps_requests() {
        spans_of_request(message)
    } else {
        // Decoding copies what it keeps: the message (perhaps a slice of the connection's
        // read buffer) is let go before the wait for the acknowledgement.
        let decoded = spans_of_protobuf(&message);
        drop(message);
        decoded
    };
    let (block, rejected) = decoded.map_err(Status::invalid_argument)?;
    admit(&shared.intake, reservation, Batch::blocks(vec![block])).await?;
    let partial_success = (rejected.count > 0).then_some(ExportTracePartialSuccess {
        rejected_spans: rejected.count,
        error_message: rejected.message,
    });
    Ok(answer(&ExportTraceServiceResponse { partial_success }))
}

/// `LogsService/Export` (span events sent as log records): decode the one message, admit its
/// records, answer.
async fn export_logs(
    shared: &Shared,
    message: Bytes,
    reservation: Reservation,
) -> Result<Bytes, Status> {
    let request = ExportLogsServiceRequest::decode(&message[..]).map_err(|e| {
        Status::invalid_argument(format!("the request is not an OTLP logs export: {e}"))
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
async fn admit(intake: &Intake, reservation: Reservation, mut batch: Batch) -> Result<(), Status> {
    batch.add_guard(Arc::new(reservation));
    if batch.is_empty() {
        return Ok(());
    }
    intake.admit(batch).await.map_err(|e| e.to_grpc_status())
}

/// A unary call's answer: the message after its gRPC prefix.
fn answer<M: Message>(message: &M) -> Bytes {
    let len = message.encoded_len();
    if len == 0 {
        return Bytes::from_static(&[0; PREFIX]);
    }
    let mut out = BytesMut::with_capacity(PREFIX + len);
    out.put_u8(0);
    out.put_u32(len as u32);
    message
        .encode(&mut out)
        .expect("the buffer has room for the message");
    out.freeze()
}

/// The refusal of a message over `max` bytes (final for an OTLP client).
fn too_large(max: usize) -> Status {
    Status::resource_exhausted(format!(
        "the request is larger than max_recv_msg_size_mib ({max} bytes)"
    ))
}

/// A unary call's one message, read as its bytes arrive: its prefix first (the size, so room
/// is reserved before the rest is read), then its bytes, then decompressed.
pub(crate) struct MessageReader {
    max: usize,
    keep: bool,
    gzip: bool,
    prefix: [u8; PREFIX],
    have: usize,
    declared: Option<(bool, usize)>,
    reservation: Option<Reservation>,
    single: Option<Bytes>,
    gathered: BytesMut,
}

impl MessageReader {
    /// A reader of one message of at most `max` bytes. With `keep` (the pipeline keeps the
    /// request for its log) the message is always a buffer of its own: a frame shares its
    /// memory with others read at once.
    pub(crate) fn new(max: usize, keep: bool, gzip: bool) -> Self {
        MessageReader {
            max,
            keep,
            gzip,
            prefix: [0; PREFIX],
            have: 0,
            declared: None,
            reservation: None,
            single: None,
            gathered: BytesMut::new(),
        }
    }

    /// The next bytes of the call's body. A message that arrives in one piece is that piece
    /// (no copy) unless it is to be kept.
    pub(crate) fn push(&mut self, intake: &Intake, mut data: Bytes) -> Result<(), Status> {
        let len = match self.declared {
            Some((_, len)) => len,
            None => {
                let n = data.len().min(PREFIX - self.have);
                self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data.advance(n);
                if self.have < PREFIX {
                    return Ok(());
                }
                let p = self.prefix;
                let len = u32::from_be_bytes([p[1], p[2], p[3], p[4]]) as usize;
                if p[0] > 1 {
                    return Err(Status::invalid_argument(format!(
                        "the message's compression flag is {}, not 0 or 1",
                        p[0]
                    )));
                }
                if len > self.max {
                    return Err(too_large(self.max));
                }
                self.reservation = Some(
                    intake
                        .reserve(len + PREFIX)
                        .map_err(|e| e.to_grpc_status())?,
                );
                self.declared = Some((p[0] == 1, len));
                len
            }
        };
        if data.is_empty() {
            return Ok(());
        }
        let got = self.single.as_ref().map_or(self.gathered.len(), Bytes::len);
        if got + data.len() > len {
            return Err(Status::invalid_argument(
                "the request holds more than one message; a unary call carries one",
            ));
        }
        if got == 0 && data.len() == len && !self.keep {
            self.single = Some(data);
        } else {
            if self.gathered.capacity() == 0 {
                self.gathered.reserve(len);
            }
            self.gathered.put(data);
        }
        Ok(())
    }

    /// The buffer the message is gathered in, with room reserved for the whole message, and
    /// how many more bytes it takes: for reading the message's bytes straight into it. `None`
    /// until the prefix has been read, when the message is one frame's bytes, or when it is
    /// whole.
    pub(crate) fn room(&mut self) -> Option<(&mut BytesMut, usize)> {
        let (_, len) = self.declared?;
        if self.single.is_some() || self.gathered.len() >= len {
            return None;
        }
        if self.gathered.capacity() == 0 {
            self.gathered.reserve(len);
        }
        let left = len - self.gathered.len();
        Some((&mut self.gathered, left))
    }

    /// The message, decompressed, and the memory reserved for it, once the body has ended.
    pub(crate) fn finish(self) -> Result<(Bytes, Reservation), Status> {
        // Room is reserved as the prefix is read: both or neither.
        let (Some((compressed, len)), Some(reservation)) = (self.declared, self.reservation) else {
            return Err(Status::invalid_argument(if self.have == 0 {
                "the request holds no message".to_string()
            } else {
                format!(
                    "the request ended inside its gRPC prefix ({} of {PREFIX} bytes)",
                    self.have
                )
            }));
        };
        let mut message = self.single.unwrap_or_else(|| self.gathered.freeze());
        if message.len() < len {
            return Err(Status::invalid_argument(format!(
                "the request ended after {} of its message's {len} bytes",
                message.len()
            )));
        }
        if compressed {
            if !self.gzip {
                return Err(Status::internal(
                    "the message is marked compressed but the request names no grpc-encoding",
                ));
            }
            let max = self.max;
            message = gunzip(&message, max).map_err(|e| match e {
                GunzipError::TooLarge => too_large(max),
                GunzipError::Invalid(e) => Status::invalid_argument(format!(
                    "the gzip message could not be decompressed: {e}"
                )),
            })?;
        }
        Ok((message, reservation))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::otlp::GrpcConfig;
    use http::{HeaderMap, StatusCode};
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
        server_with(max_mib, None)
    }

    fn server_with(max_mib: usize, routes: Option<tonic::service::Routes>) -> Server {
        let (tx, batches) = bounded("test", 16);
        let intake = Intake::new(vec![tx], Duration::from_secs(5), Pressure::unlimited());
        let config = GrpcConfig {
            endpoint: "127.0.0.1:0".into(),
            max_recv_msg_size_mib: max_mib,
            trace_api: false,
        };
        let shutdown = CancellationToken::new();
        let (addr, task) =
            crate::otlp::grpc::start(&config, intake, shutdown.clone(), routes).expect("listens");
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

    #[tokio::test]
    async fn a_message_larger_than_the_windows_and_many_calls_at_once_on_one_connection() {
        let mut s = server(8);
        let channel = channel(s.addr).await;
        // ~3.5 MiB in one message: more than the stream's and the connection's 1 MiB windows.
        let mut big = request(20_000);
        for span in &mut big.resource_spans[0].scope_spans[0].spans {
            span.name = "n".repeat(150);
        }
        assert!(big.encoded_len() > 3 << 20, "{}", big.encoded_len());
        let mut client = TraceServiceClient::new(channel.clone());
        let call = tokio::spawn(async move { client.export(big).await });
        assert_eq!(next_spans(&mut s.batches).await, 20_000);
        call.await.expect("joins").expect("accepted");

        let calls: Vec<_> = (0..64)
            .map(|i| {
                let mut client = TraceServiceClient::new(channel.clone());
                tokio::spawn(async move { client.export(request(1 + i % 7)).await })
            })
            .collect();
        let mut spans = 0;
        for _ in 0..64 {
            spans += next_spans(&mut s.batches).await;
        }
        assert_eq!(spans, (0..64).map(|i| 1 + i % 7).sum::<usize>());
        for call in calls {
            call.await.expect("joins").expect("accepted");
        }
        s.shutdown.cancel();
        s.task.await.expect("the server stops");
    }

    /// An HTTP/2 frame as a client writes it.
    fn h2_frame(kind: u8, flags: u8, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// Read the server's frames until `until` matches one (kind, flags, id, payload); all
    /// frames read, in order.
    async fn h2_frames_until(
        tcp: &mut tokio::net::TcpStream,
        until: impl Fn(u8, u8, u32, &[u8]) -> bool,
    ) -> Vec<(u8, u8, u32, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut got = BytesMut::new();
        let mut frames = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                while got.len() >= 9 {
                    let len = u32::from_be_bytes([0, got[0], got[1], got[2]]) as usize;
                    if got.len() < 9 + len {
                        break;
                    }
                    let h = got.split_to(9);
                    let id = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
                    let payload = got.split_to(len).to_vec();
                    let done = until(h[3], h[4], id, &payload);
                    frames.push((h[3], h[4], id, payload));
                    if done {
                        return;
                    }
                }
                let n = tcp.read_buf(&mut got).await.expect("reads");
                assert!(n > 0, "closed after {frames:?}");
            }
        })
        .await
        .expect("the frame looked for arrives in time");
        frames
    }

    /// A raw HTTP/2 connection to `addr`: the preface and an empty SETTINGS written.
    async fn h2_open(addr: SocketAddr) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .expect("writes");
        tcp.write_all(&h2_frame(4, 0, 0, &[]))
            .await
            .expect("writes");
        tcp
    }

    #[tokio::test]
    async fn large_frames_arriving_in_pieces_are_read_whole() {
        use tokio::io::AsyncWriteExt;
        let mut s = server(4);
        let mut tcp = h2_open(s.addr).await;
        // The server's SETTINGS let a client send frames of up to 1 MiB.
        let frames = h2_frames_until(&mut tcp, |kind, flags, _, _| kind == 4 && flags == 0).await;
        let settings = &frames.last().expect("SETTINGS").3;
        assert!(
            settings
                .chunks(6)
                .any(|e| e == [0, 5, 0, 0x10, 0, 0].as_slice()),
            "{settings:?}"
        );
        // A header block of more than 16 KiB in one HEADERS frame.
        let mut encoder = loona_hpack::Encoder::new();
        let filler = "f".repeat(20_000);
        let fields: [(&[u8], &[u8]); 6] = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", EXPORT_TRACES.as_bytes()),
            (b":authority", b"spanlake"),
            (b"content-type", b"application/grpc"),
            (b"x-filler", filler.as_bytes()),
        ];
        let block = encoder.encode(fields);
        assert!(block.len() > 16_384);
        tcp.write_all(&h2_frame(1, 0x4, 1, &block))
            .await
            .expect("writes");
        // A frame of a type unknown to the protocol, 100 KB: skipped.
        tcp.write_all(&h2_frame(0xfa, 0, 0, &vec![7; 100_000]))
            .await
            .expect("writes");
        // One padded DATA frame of ~800 KB holding the whole message, written in pieces: its
        // header and pad length first, then 100 KB at a time.
        let mut big = request(5_000);
        for (i, span) in big.resource_spans[0].scope_spans[0]
            .spans
            .iter_mut()
            .enumerate()
        {
            span.name = format!("{i:0>120}");
        }
        let message = framed(0, &big.encode_to_vec());
        let mut payload = vec![200u8];
        payload.extend_from_slice(&message);
        payload.extend_from_slice(&[0; 200]);
        assert!(payload.len() > 700_000 && payload.len() < 1 << 20);
        let data = h2_frame(0, 0x8 | 0x1, 1, &payload);
        let before = crate::otlp::http2::READ_DIRECT.with(std::cell::Cell::get);
        tcp.write_all(&data[..10]).await.expect("writes");
        for piece in data[10..].chunks(100_000) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tcp.write_all(piece).await.expect("writes");
        }
        assert_eq!(next_spans(&mut s.batches).await, 5_000);
        // The answer's trailers end the stream; no GOAWAY before them.
        let frames = h2_frames_until(&mut tcp, |kind, flags, id, _| {
            kind == 1 && flags & 0x1 != 0 && id == 1
        })
        .await;
        assert!(frames.iter().all(|f| f.0 != 7), "{frames:?}");
        let direct = crate::otlp::http2::READ_DIRECT.with(std::cell::Cell::get) - before;
        assert!(
            direct > message.len() / 2,
            "{direct} of {} bytes read straight into the message",
            message.len()
        );
        // A frame over the 1 MiB advertised ends the connection with FRAME_SIZE_ERROR.
        let mut over = h2_frame(0xfa, 0, 0, &[]);
        over[..3].copy_from_slice(&((1u32 << 20) + 1).to_be_bytes()[1..]);
        tcp.write_all(&over).await.expect("writes");
        let frames = h2_frames_until(&mut tcp, |kind, _, _, _| kind == 7).await;
        let goaway = &frames.last().expect("GOAWAY").3;
        assert_eq!(goaway[4..8], 6u32.to_be_bytes(), "FRAME_SIZE_ERROR");
        s.shutdown.cancel();
        s.task.await.expect("the server stops");
    }

    #[tokio::test]
    async fn other_calls_go_to_the_routes_on_the_same_connection() {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("spanlake", tonic_health::ServingStatus::Serving)
            .await;
        let mut s = server_with(4, Some(tonic::service::Routes::new(health)));
        let channel = channel(s.addr).await;
        let mut traces = TraceServiceClient::new(channel.clone());
        let mut health = HealthClient::new(channel);
        let ask = || HealthCheckRequest {
            service: "spanlake".into(),
        };
        // An export, a unary call and a streaming one, interleaved on one connection.
        let call = tokio::spawn(async move { traces.export(request(3)).await });
        assert_eq!(next_spans(&mut s.batches).await, 3);
        call.await.expect("joins").expect("accepted");
        let status = health.check(ask()).await.expect("answered").into_inner();
        assert_eq!(status.status, 1); // SERVING
        let mut watch = health.watch(ask()).await.expect("watching").into_inner();
        let first = watch.message().await.expect("a message").expect("open");
        assert_eq!(first.status, 1);
        reporter
            .set_service_status("spanlake", tonic_health::ServingStatus::NotServing)
            .await;
        let second = watch.message().await.expect("a message").expect("open");
        assert_eq!(second.status, 2); // NOT_SERVING
        let unknown = health
            .check(HealthCheckRequest {
                service: "nothing".into(),
            })
            .await
            .expect_err("an unknown service");
        assert_eq!(unknown.code(), tonic::Code::NotFound);

        // A refusal is one HEADERS frame that ends the stream (a "trailers-only" answer):
        // gRPC's C core takes no other form.
        let tcp = tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connects");
        let (client, conn) = h2::client::handshake(tcp).await.expect("handshake");
        tokio::spawn(conn);
        let mut client = client.ready().await.expect("ready");
        let req = http::Request::post(format!("http://{}/no.Such/Method", s.addr))
            .header("content-type", "application/grpc")
            .body(())
            .expect("request");
        let (response, mut send) = client.send_request(req, false).expect("sent");
        send.send_data(framed(0, b""), true).expect("data");
        let response = response.await.expect("answer");
        assert_eq!(grpc_status(response.headers()), "12");
        assert!(
            response.body().is_end_stream(),
            "the headers end the stream"
        );
        drop(watch);
        s.shutdown.cancel();
        s.task.await.expect("the server stops");
    }

    #[tokio::test]
    async fn pings_are_answered_and_a_connection_that_is_not_http2_is_told_and_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let s = server(4);
        // The preface, an empty SETTINGS, a PING.
        let mut tcp = h2_open(s.addr).await;
        tcp.write_all(&[0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])
            .await
            .expect("writes");
        let mut got = Vec::new();
        let pong = [0, 0, 8, 6, 1, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 1024];
            while !got.windows(pong.len()).any(|w| w == pong) {
                let n = tcp.read(&mut buf).await.expect("reads");
                assert!(n > 0, "closed before the PING's answer");
                got.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(found.is_ok(), "no PING answer in {got:?}");

        // HTTP/1.1 on the gRPC port: a GOAWAY saying why, then the connection closes.
        let mut tcp = tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connects");
        tcp.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("writes");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
            .await
            .expect("closed in time")
            .expect("reads");
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("serves OTLP over gRPC"), "{text}");
        s.shutdown.cancel();
        s.task.await.expect("the server stops");
    }
}
