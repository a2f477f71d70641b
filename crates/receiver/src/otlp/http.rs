//! OTLP/HTTP: `POST /v1/traces` with protobuf or JSON bodies, optionally gzip.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use spanlake_core::{Batch, CancellationToken, Intake, IntakeError};
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::config::{CorsConfig, HttpConfig};
use super::decode::{
    GunzipError, decode_logs_json, decode_logs_protobuf, gunzip, keep_valid_logs, spans_of_json,
    spans_of_protobuf, spans_of_request,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};

/// `google.rpc.Status`, the body of an OTLP/HTTP error response.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

struct Shared {
    intake: Intake,
    max_body: usize,
}

pub(crate) fn start(
    config: &HttpConfig,
    intake: Intake,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), std::io::Error> {
    let listener = spanlake_core::net::bind(&config.endpoint)?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        intake,
        max_body: config.max_request_body_size,
    });
    let mut router = Router::new()
        .route(&config.traces_url_path, post(export_traces))
        .route(&config.logs_url_path, post(export_logs))
        .with_state(shared)
        .layer(axum::extract::DefaultBodyLimit::disable());
    if let Some(cors) = &config.cors
        && !cors.allowed_origins.is_empty()
    {
        router = router.layer(cors_layer(cors));
    }
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, %addr, "OTLP/HTTP server stopped with an error");
        }
    });
    Ok((addr, task))
}

fn cors_layer(c: &CorsConfig) -> CorsLayer {
    let patterns: Vec<String> = c.allowed_origins.clone();
    let any = patterns.iter().any(|p| p == "*");
    let origin = if any {
        AllowOrigin::any()
    } else {
        AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            let Ok(o) = origin.to_str() else { return false };
            patterns.iter().any(|p| origin_matches(p, o))
        })
    };
    let mut headers = vec![header::CONTENT_TYPE, header::CONTENT_ENCODING];
    headers.extend(c.allowed_headers.iter().filter_map(|h| h.parse().ok()));
    let mut layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods([Method::POST])
        .allow_headers(headers);
    if let Some(secs) = c.max_age {
        layer = layer.max_age(std::time::Duration::from_secs(secs));
    }
    layer
}

/// `https://*.example.com` matches `https://app.example.com`; without `*`, an exact match.
fn origin_matches(pattern: &str, origin: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(origin),
        Some((pre, post)) => {
            origin.len() >= pre.len() + post.len()
                && origin[..pre.len()].eq_ignore_ascii_case(pre)
                && origin[origin.len() - post.len()..].eq_ignore_ascii_case(post)
        }
    }
}

fn error(encoding: Encoding, status: StatusCode, message: String) -> Response {
    let grpc_code = match status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => 3, // INVALID_ARGUMENT
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 3,
        StatusCode::TOO_MANY_REQUESTS => 8, // RESOURCE_EXHAUSTED
        _ => 14,                            // UNAVAILABLE
    };
    let body = match encoding {
        Encoding::Protobuf => RpcStatus {
            code: grpc_code,
            message,
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": grpc_code, "message": message })
            .to_string()
            .into_bytes(),
    };
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A retryable refusal: 429 for overload (the client should slow down), 503 otherwise; both
/// with `Retry-After`.
fn refused(encoding: Encoding, e: IntakeError) -> Response {
    let status = if e.is_overload() {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = error(encoding, status, e.to_string());
    if let Ok(v) = HeaderValue::from_str(&e.retry_after().as_secs().max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn media_type(headers: &HeaderMap) -> Result<Encoding, String> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        "" => Err(
            "the request has no Content-Type; send application/x-protobuf or application/json"
                .into(),
        ),
        _ => Err(format!(
            "Content-Type {raw:?} is not supported; send application/x-protobuf or application/json"
        )),
    }
}

/// What an endpoint takes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Traces,
    Logs,
}

async fn export_traces(state: State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    export(state, headers, body, Kind::Traces).await
}

async fn export_logs(state: State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    export(state, headers, body, Kind::Logs).await
}

async fn export(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
    kind: Kind,
) -> Response {
    let encoding = match media_type(&headers) {
        Ok(e) => e,
        Err(msg) => return error(Encoding::Json, StatusCode::UNSUPPORTED_MEDIA_TYPE, msg),
    };
    let max = shared.max_body;
    let too_large = || {
        error(
            encoding,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than max_request_body_size ({max} bytes)"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && len > max
    {
        return too_large();
    }
    // Admission comes before reading and decoding: a refused request costs next to nothing.
    let mut reservations = Vec::with_capacity(2);
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        match shared.intake.reserve(len) {
            Ok(r) => reservations.push(r),
            Err(e) => return refused(encoding, e),
        }
    }
    let raw: Bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(e) => {
            let source_is_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util_limit::LengthLimitError>());
            if source_is_limit || e.to_string().contains("length limit") {
                return too_large();
            }
            return error(
                encoding,
                StatusCode::BAD_REQUEST,
                format!("the request body could not be read: {e}"),
            );
        }
    };
    if reservations.is_empty() {
        match shared.intake.reserve(raw.len()) {
            Ok(r) => reservations.push(r),
            Err(e) => return refused(encoding, e),
        }
    }
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let raw_len = raw.len();
    let body = match content_encoding.as_str() {
        "" | "identity" => raw,
        "gzip" | "x-gzip" => match gunzip(&raw, max) {
            Ok(b) => b,
            Err(GunzipError::TooLarge) => return too_large(),
            Err(GunzipError::Invalid(e)) => {
                return error(
                    encoding,
                    StatusCode::BAD_REQUEST,
                    format!("the body is marked Content-Encoding: gzip but is not valid gzip: {e}"),
                );
            }
        },
        other => {
            return error(
                encoding,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {other:?} is not supported; send gzip or no encoding"),
            );
        }
    };
    if body.len() > raw_len {
        match shared.intake.reserve(body.len() - raw_len) {
            Ok(r) => reservations.push(r),
            Err(e) => return refused(encoding, e),
        }
    }
    let decoded = match (kind, encoding) {
        (Kind::Traces, Encoding::Protobuf) if shared.intake.keeps_requests() => {
            spans_of_request(body.clone())
        }
        (Kind::Traces, Encoding::Protobuf) => spans_of_protobuf(&body),
        (Kind::Traces, Encoding::Json) => spans_of_json(&body),
        (Kind::Logs, Encoding::Protobuf) => {
            return export_decoded_logs(
                &shared,
                encoding,
                decode_logs_protobuf(&body),
                reservations,
            )
            .await;
        }
        (Kind::Logs, Encoding::Json) => {
            return export_decoded_logs(&shared, encoding, decode_logs_json(&body), reservations)
                .await;
        }
    };
    let (block, rejected) = match decoded {
        Ok(r) => r,
        Err(msg) => return error(encoding, StatusCode::BAD_REQUEST, msg),
    };
    let mut batch = Batch::blocks(if block.is_empty() {
        Vec::new()
    } else {
        vec![block]
    });
    for r in reservations {
        batch.add_guard(Arc::new(r));
    }
    if !batch.is_empty()
        && let Err(e) = shared.intake.admit(batch).await
    {
        return refused(encoding, e);
    }
    let partial_success = (rejected.count > 0).then_some(ExportTracePartialSuccess {
        rejected_spans: rejected.count,
        error_message: rejected.message,
    });
    let response = ExportTraceServiceResponse { partial_success };
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => json_response(&response),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

async fn export_decoded_logs(
    shared: &Shared,
    encoding: Encoding,
    decoded: Result<ExportLogsServiceRequest, String>,
    reservations: Vec<spanlake_core::Reservation>,
) -> Response {
    let mut resource_logs = match decoded {
        Ok(r) => r.resource_logs,
        Err(msg) => return error(encoding, StatusCode::BAD_REQUEST, msg),
    };
    let rejected = keep_valid_logs(&mut resource_logs);
    let mut batch = Batch::logs(resource_logs);
    for r in reservations {
        batch.add_guard(Arc::new(r));
    }
    if !batch.is_empty()
        && let Err(e) = shared.intake.admit(batch).await
    {
        return refused(encoding, e);
    }
    let body = match encoding {
        Encoding::Protobuf => ExportLogsServiceResponse {
            partial_success: (rejected.count > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: rejected.count,
                error_message: rejected.message.clone(),
            }),
        }
        .encode_to_vec(),
        Encoding::Json if rejected.count == 0 => b"{}".to_vec(),
        Encoding::Json => serde_json::json!({
            "partialSuccess": { "rejectedLogRecords": rejected.count.to_string(), "errorMessage": rejected.message }
        })
        .to_string()
        .into_bytes(),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

fn json_response(r: &ExportTraceServiceResponse) -> Vec<u8> {
    match &r.partial_success {
        None => b"{}".to_vec(),
        Some(p) => serde_json::json!({
            "partialSuccess": { "rejectedSpans": p.rejected_spans.to_string(), "errorMessage": p.error_message }
        })
        .to_string()
        .into_bytes(),
    }
}

mod http_body_util_limit {
    pub use http_body_util::LengthLimitError;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_exactly_or_by_one_wildcard() {
        assert!(origin_matches(
            "https://app.example.com",
            "https://app.example.com"
        ));
        assert!(!origin_matches(
            "https://app.example.com",
            "https://evil.com"
        ));
        assert!(origin_matches(
            "https://*.example.com",
            "https://a.example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://example.org"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "http://a.example.com"
        ));
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(media_type(&h), Ok(Encoding::Json));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            media_type(&h),
            Err("Content-Type \"text/plain\" is not supported; send application/x-protobuf or application/json".into())
        );
    }
}
