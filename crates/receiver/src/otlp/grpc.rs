//! OTLP/gRPC: the server. Both OTLP calls (trace and logs exports) are answered by its front
//! (`front.rs`); the native and query APIs and health go through tonic's routes behind it.

use std::net::SocketAddr;

use spanlake_core::{CancellationToken, Intake};
use tokio::task::JoinHandle;

use super::config::GrpcConfig;

pub(crate) fn start(
    config: &GrpcConfig,
    intake: Intake,
    shutdown: CancellationToken,
    extra: Option<tonic::service::Routes>,
) -> Result<(SocketAddr, JoinHandle<()>), std::io::Error> {
    let listener = spanlake_core::net::bind(&config.endpoint)?;
    let addr = listener.local_addr()?;
    let max = config.max_recv_msg_size_mib * 1024 * 1024;
    let front = super::front::Front::new(intake, max, extra.unwrap_or_default());
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
