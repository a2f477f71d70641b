//! Settings of the OTLP receiver, in the OpenTelemetry Collector's terms.

use serde::{Deserialize, Deserializer};

/// The largest request size a receiver can be set to accept, in MiB: a decoded request keeps
/// its strings and bytes by 32-bit offsets, and an attribute key is at most 512 MiB.
pub const MAX_REQUEST_MIB: usize = 512;

/// `receivers: otlp:`. With no `protocols`, both gRPC and HTTP listen on their default ports.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[derive(Default)]
pub struct OtlpReceiverConfig {
    #[serde(default)]
    pub protocols: Protocols,
}

/// `protocols:`: a protocol listed (even with no settings) is on; one left out is off.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    #[serde(default, deserialize_with = "listed")]
    pub grpc: Option<GrpcConfig>,
    #[serde(default, deserialize_with = "listed")]
    pub http: Option<HttpConfig>,
}

impl Default for Protocols {
    fn default() -> Self {
        Protocols {
            grpc: Some(GrpcConfig::default()),
            http: Some(HttpConfig::default()),
        }
    }
}

/// A key that is present turns its protocol on, even with no settings (`grpc:`).
fn listed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// `protocols: grpc:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// `host:port` to listen on. Default `127.0.0.1:4317`.
    #[serde(default = "default_grpc_endpoint")]
    pub endpoint: String,
    /// Largest request accepted, in MiB, after decompression. Default `4`.
    #[serde(default = "default_grpc_max")]
    pub max_recv_msg_size_mib: usize,
    /// Serve spanlake's native trace API (`trace.Trace`: RecordSpan, QuerySpans, EndTrace,
    /// GetTrace), gRPC health and reflection on this port too. Default `true`.
    #[serde(default = "default_true")]
    pub trace_api: bool,
}

fn default_true() -> bool {
    true
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: default_grpc_endpoint(),
            max_recv_msg_size_mib: default_grpc_max(),
            trace_api: true,
        }
    }
}

/// `protocols: http:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on. Default `127.0.0.1:4318`.
    #[serde(default = "default_http_endpoint")]
    pub endpoint: String,
    /// Largest request body accepted, in bytes, before and after decompression. Default 20 MiB.
    #[serde(default = "default_http_max")]
    pub max_request_body_size: usize,
    /// Path of the traces endpoint. Default `/v1/traces`.
    #[serde(default = "default_traces_path")]
    pub traces_url_path: String,
    /// Path of the logs endpoint (trace-level events and other log records). Default
    /// `/v1/logs`.
    #[serde(default = "default_logs_path")]
    pub logs_url_path: String,
    /// Cross-origin requests from browser SDKs. Off unless `allowed_origins` is set.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: default_http_endpoint(),
            max_request_body_size: default_http_max(),
            traces_url_path: default_traces_path(),
            logs_url_path: default_logs_path(),
            cors: None,
        }
    }
}

/// `http: cors:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to send spans: exact (`https://app.example.com`), with one `*` wildcard
    /// (`https://*.example.com`), or `*` for any.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Request headers allowed beyond the ones OTLP needs (`Content-Type`, `Content-Encoding`).
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// How long, in seconds, a browser may cache a preflight answer. Default: not sent.
    #[serde(default)]
    pub max_age: Option<u64>,
}

fn default_grpc_endpoint() -> String {
    "127.0.0.1:4317".into()
}
fn default_http_endpoint() -> String {
    "127.0.0.1:4318".into()
}
fn default_grpc_max() -> usize {
    4
}
fn default_http_max() -> usize {
    20 * 1024 * 1024
}
fn default_logs_path() -> String {
    "/v1/logs".into()
}

fn default_traces_path() -> String {
    "/v1/traces".into()
}

impl OtlpReceiverConfig {
    /// Every problem with these settings, as `(key path, message)`. No I/O.
    pub fn validate(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        let p = &self.protocols;
        if p.grpc.is_none() && p.http.is_none() {
            problems.push((
                vec!["protocols"],
                "protocols: enable grpc, http or both".to_string(),
            ));
        }
        if let Some(g) = &p.grpc {
            if let Err(e) = spanlake_core::net::check_endpoint(&g.endpoint, 4317) {
                problems.push((
                    vec!["protocols", "grpc", "endpoint"],
                    format!("protocols.grpc.endpoint: {e}"),
                ));
            }
            if g.max_recv_msg_size_mib == 0 || g.max_recv_msg_size_mib > MAX_REQUEST_MIB {
                problems.push((
                    vec!["protocols", "grpc", "max_recv_msg_size_mib"],
                    format!(
                        "protocols.grpc.max_recv_msg_size_mib must be from 1 to {MAX_REQUEST_MIB}"
                    ),
                ));
            }
        }
        if let Some(h) = &p.http {
            if let Err(e) = spanlake_core::net::check_endpoint(&h.endpoint, 4318) {
                problems.push((
                    vec!["protocols", "http", "endpoint"],
                    format!("protocols.http.endpoint: {e}"),
                ));
            }
            if h.max_request_body_size == 0 || h.max_request_body_size > MAX_REQUEST_MIB << 20 {
                problems.push((
                    vec!["protocols", "http", "max_request_body_size"],
                    format!(
                        "protocols.http.max_request_body_size must be from 1 to {} bytes ({MAX_REQUEST_MIB} MiB)",
                        MAX_REQUEST_MIB << 20
                    ),
                ));
            }
            if !h.logs_url_path.starts_with('/') || h.logs_url_path == h.traces_url_path {
                problems.push((
                    vec!["protocols", "http", "logs_url_path"],
                    format!(
                        "protocols.http.logs_url_path {:?} must start with / and differ from traces_url_path",
                        h.logs_url_path
                    ),
                ));
            }
            if !h.traces_url_path.starts_with('/') {
                problems.push((
                    vec!["protocols", "http", "traces_url_path"],
                    format!(
                        "protocols.http.traces_url_path {:?} must start with /",
                        h.traces_url_path
                    ),
                ));
            }
            if let Some(c) = &h.cors {
                for o in &c.allowed_origins {
                    if o.matches('*').count() > 1 {
                        problems.push((
                            vec!["protocols", "http", "cors", "allowed_origins"],
                            format!(
                                "protocols.http.cors.allowed_origins: {o:?} may hold at most one *"
                            ),
                        ));
                    }
                }
            }
        }
        if let (Some(g), Some(h)) = (&p.grpc, &p.http)
            && g.endpoint == h.endpoint
            && !g.endpoint.ends_with(":0")
        {
            problems.push((
                vec!["protocols", "http", "endpoint"],
                format!("protocols: grpc and http both listen on {}", g.endpoint),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> OtlpReceiverConfig {
        serde_yaml::from_str(yaml).expect("valid config")
    }

    #[test]
    fn empty_means_both_protocols_on_default_ports() {
        let c = parse("{}");
        assert_eq!(c, OtlpReceiverConfig::default());
        assert_eq!(
            c.protocols.grpc.as_ref().map(|g| g.endpoint.as_str()),
            Some("127.0.0.1:4317")
        );
        assert_eq!(
            c.protocols.http.as_ref().map(|h| h.max_request_body_size),
            Some(20 * 1024 * 1024)
        );
    }

    #[test]
    fn a_listed_protocol_is_on_and_an_unlisted_one_off() {
        let c = parse("protocols:\n  grpc:\n");
        assert_eq!(c.protocols.grpc, Some(GrpcConfig::default()));
        assert_eq!(c.protocols.http, None);
        let c = parse(
            "protocols:\n  http:\n    endpoint: 0.0.0.0:9000\n    cors:\n      allowed_origins: ['https://*.example.com']\n",
        );
        let h = c.protocols.http.expect("http on");
        assert_eq!(h.endpoint, "0.0.0.0:9000");
        assert_eq!(
            h.cors.expect("cors").allowed_origins,
            vec!["https://*.example.com".to_string()]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            serde_yaml::from_str::<OtlpReceiverConfig>("protocols:\n  grpc:\n    endpont: x\n")
                .expect_err("typo");
        assert!(err.to_string().contains("unknown field `endpont`"), "{err}");
    }

    #[test]
    fn validate_names_each_problem() {
        let c = parse(
            "protocols:\n  grpc:\n    endpoint: localhost\n  http:\n    endpoint: ':99999'\n    traces_url_path: v1/traces\n",
        );
        let msgs: Vec<String> = c.validate().into_iter().map(|(_, m)| m).collect();
        assert_eq!(msgs, vec![
            "protocols.grpc.endpoint: \"localhost\" is not host:port (e.g. 127.0.0.1:4317, or 0.0.0.0:4317 for every interface)".to_string(),
            "protocols.http.endpoint: \":99999\" has no host; write 127.0.0.1:99999 (local only) or 0.0.0.0:99999".to_string(),
            "protocols.http.traces_url_path \"v1/traces\" must start with /".to_string(),
        ]);
    }

    #[test]
    fn request_size_limits_are_bounded() {
        let c = parse(
            "protocols:\n  grpc:\n    max_recv_msg_size_mib: 513\n  http:\n    max_request_body_size: 536870913\n",
        );
        let msgs: Vec<String> = c.validate().into_iter().map(|(_, m)| m).collect();
        assert_eq!(
            msgs,
            vec![
                "protocols.grpc.max_recv_msg_size_mib must be from 1 to 512".to_string(),
                "protocols.http.max_request_body_size must be from 1 to 536870912 bytes (512 MiB)"
                    .to_string(),
            ]
        );
        let c = parse(
            "protocols:\n  grpc:\n    max_recv_msg_size_mib: 512\n  http:\n    max_request_body_size: 536870912\n",
        );
        assert!(c.validate().is_empty());
    }
}
