//! OTLP/gRPC: the server (trace exports are answered by its front, `front.rs`) and
//! `opentelemetry.proto.collector.logs.v1.LogsService/Export`, served through tonic's routes
//! with the native and query APIs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use std::collections::VecDeque;
use std::pin::Pin;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, Limited};

use spanlake_core::{Batch, CancellationToken, Intake, IntakeError, Reservation};
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::config::GrpcConfig;
use super::decode::keep_valid_logs;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};

struct Logs {
    intake: Intake,
}

#[tonic::async_trait]
impl LogsService for Logs {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let reservation = request.extensions().get::<Admitted>().cloned();
        let mut resource_logs = request.into_inner().resource_logs;
        let rejected = keep_valid_logs(&mut resource_logs);
        admit(&self.intake, reservation, Batch::logs(resource_logs)).await?;
        let partial_success = (rejected.count > 0).then_some(ExportLogsPartialSuccess {
            rejected_log_records: rejected.count,
            error_message: rejected.message,
        });
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}

/// Admit what a request held (with the memory reserved for it before decoding) and wait until
/// it is as safe as the pipelines make it; an empty batch has nothing to wait for.
async fn admit(
    intake: &Intake,
    reserved: Option<Admitted>,
    mut batch: Batch,
) -> Result<(), Status> {
    if let Some(Admitted(r)) = reserved {
        batch.add_guard(r);
    }
    if batch.is_empty() {
        return Ok(());
    }
    intake.admit(batch).await.map_err(status_of)
}

/// Overload is `RESOURCE_EXHAUSTED` with `RetryInfo`, anything else `UNAVAILABLE`: both
/// retryable for an OTLP client.
pub(crate) fn status_of(e: IntakeError) -> Status {
    e.to_grpc_status()
}

/// The memory reserved for a request, found in its extensions by the service.
#[derive(Clone)]
pub(crate) struct Admitted(Arc<Reservation>);

/// Admission before decoding: reads a request's gRPC prefix, refuses a message over the size
/// limit, asks [`Intake::reserve`] for room from the declared size, and refuses it with a
/// retryable status before tonic reads the rest or decodes anything (the body stays bounded
/// by the limit). The reservation travels with the request to its batch.
#[derive(Clone)]
pub(crate) struct Admission<S> {
    inner: S,
    intake: Intake,
    max_body: usize,
}

impl<S> Admission<S> {
    pub(crate) fn new(inner: S, intake: Intake, max_message: usize) -> Self {
        Admission {
            inner,
            intake,
            // gRPC frames: 5 bytes of header per message.
            max_body: max_message.saturating_add(5),
        }
    }
}

impl<S: NamedService> NamedService for Admission<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for Admission<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let intake = self.intake.clone();
        let max = self.max_body;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let too_large = || {
                Status::resource_exhausted(format!(
                    "the request is larger than max_recv_msg_size_mib ({} bytes)",
                    max - 5
                ))
                .into_http()
            };
            // Read up to the gRPC prefix (a compression flag and the message's length), reserve
            // room for the message, and pass the body on as it comes: tonic gathers it into
            // one buffer, so it is not gathered here first (a copy of every request).
            let mut body = Limited::new(body, max);
            let mut head = VecDeque::new();
            let mut prefix = [0u8; 5];
            let mut have = 0;
            while have < prefix.len() {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let n = data.len().min(prefix.len() - have);
                            prefix[have..have + n].copy_from_slice(&data[..n]);
                            have += data.len();
                        }
                        let trailers = frame.is_trailers();
                        head.push_back(frame);
                        if trailers {
                            break;
                        }
                    }
                    Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                        return Ok(too_large());
                    }
                    Some(Err(e)) => {
                        return Ok(Status::invalid_argument(format!(
                            "the request could not be read: {e}"
                        ))
                        .into_http());
                    }
                    None => break,
                }
            }
            let size = if have >= prefix.len() {
                let declared = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
                let size = (declared as usize).saturating_add(prefix.len());
                if size > max {
                    return Ok(too_large());
                }
                size
            } else {
                have
            };
            match intake.reserve(size) {
                Ok(r) => {
                    parts.extensions.insert(Admitted(Arc::new(r)));
                }
                Err(e) => return Ok(status_of(e).into_http()),
            }
            let body = Body::new(Replayed { head, rest: body });
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

/// A request body whose first frames were read already (to learn the message's size from its
/// gRPC prefix): they come first, then the rest as it arrives.
struct Replayed<B> {
    head: VecDeque<Frame<Bytes>>,
    rest: B,
}

impl<B> http_body::Body for Replayed<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if let Some(f) = self.head.pop_front() {
            return std::task::Poll::Ready(Some(Ok(f)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }
}

pub(crate) fn start(
    config: &GrpcConfig,
    intake: Intake,
    shutdown: CancellationToken,
    extra: Option<tonic::service::Routes>,
) -> Result<(SocketAddr, JoinHandle<()>), std::io::Error> {
    let listener = spanlake_core::net::bind(&config.endpoint)?;
    let addr = listener.local_addr()?;
    let max = config.max_recv_msg_size_mib * 1024 * 1024;
    let logs = LogsServiceServer::new(Logs {
        intake: intake.clone(),
    })
    .accept_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Gzip)
    .max_decoding_message_size(max);
    let logs = Admission::new(logs, intake.clone(), max);
    let routes = match extra {
        Some(routes) => routes.add_service(logs),
        None => tonic::service::Routes::new(logs),
    };
    let front = super::front::Front::new(intake, max, routes);
    let task = tokio::spawn(super::front::serve(listener, front, shutdown));
    Ok((addr, task))
}

/// Give a request that could not be decoded a status a client will not retry. tonic answers an
/// undecodable message with `INTERNAL` and one over the size limit with `OUT_OF_RANGE`, which
/// OTLP exporters retry; the request is the problem, so: `INVALID_ARGUMENT` and
/// `RESOURCE_EXHAUSTED` without retry information (both final for an OTLP client).
pub(crate) fn refine_status<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let headers = resp.headers_mut();
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .replace("%20", " ");
    let refined = match code {
        Some(13) if message.starts_with("failed to decode") => Some("3"),
        Some(11) if message.contains("message length too large") => Some("8"),
        _ => None,
    };
    if let Some(code) = refined {
        headers.insert("grpc-status", http::HeaderValue::from_static(code));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of_response(code: &str, message: &str) -> String {
        let resp = http::Response::builder()
            .header("grpc-status", code)
            .header("grpc-message", message)
            .body(())
            .expect("response");
        refine_status(resp).headers()["grpc-status"]
            .to_str()
            .expect("ascii")
            .to_string()
    }

    #[tokio::test]
    async fn a_body_read_up_to_its_prefix_comes_back_whole_with_its_trailers() {
        use http_body_util::StreamBody;
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
        let rest = StreamBody::new(futures::stream::iter(vec![
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"defgh"))),
            Ok(Frame::data(Bytes::from_static(b"ij"))),
            Ok(Frame::trailers(trailers.clone())),
        ]));
        let head = VecDeque::from([
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"c")),
        ]);
        let body = Replayed { head, rest };
        let got = body.collect().await.expect("collects");
        assert_eq!(got.trailers(), Some(&trailers));
        assert_eq!(got.to_bytes(), Bytes::from_static(b"abcdefghij"));
    }

    #[test]
    fn decode_failures_are_final_for_the_client() {
        assert_eq!(
            status_of_response("13", "failed%20to%20decode%20Protobuf%20message"),
            "3"
        );
        assert_eq!(
            status_of_response("11", "Error,%20decoded%20message%20length%20too%20large"),
            "8"
        );
        assert_eq!(status_of_response("14", "spanlake%20is%20overloaded"), "14");
        assert_eq!(status_of_response("13", "something else"), "13");
    }
}
