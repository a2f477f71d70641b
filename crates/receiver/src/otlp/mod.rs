//! The OTLP receiver: gRPC and HTTP.

mod config;
mod decode;
mod front;
mod grpc;
mod hpack;
mod http;
mod http2;

pub use config::{CorsConfig, GrpcConfig, HttpConfig, OtlpReceiverConfig, Protocols};
pub use decode::{
    Rejections, decode_json, decode_protobuf, keep_valid_spans, spans_of_json, spans_of_protobuf,
};

use spanlake_core::{CancellationToken, Intake, ReceiverComponent, RunningReceiver};

/// The OTLP receiver, built from its validated config.
pub struct OtlpReceiver {
    config: OtlpReceiverConfig,
    extra: Option<tonic::service::Routes>,
}

impl OtlpReceiver {
    pub fn new(config: OtlpReceiverConfig) -> Self {
        OtlpReceiver {
            config,
            extra: None,
        }
    }
}

impl ReceiverComponent for OtlpReceiver {
    fn add_grpc_routes(&mut self, routes: tonic::service::Routes) -> bool {
        if self.config.protocols.grpc.is_none() {
            return false;
        }
        self.extra = Some(routes);
        true
    }

    fn wants_trace_api(&self) -> bool {
        self.config
            .protocols
            .grpc
            .as_ref()
            .is_some_and(|g| g.trace_api)
    }

    fn start(
        self: Box<Self>,
        intake: Intake,
        shutdown: CancellationToken,
    ) -> Result<RunningReceiver, std::io::Error> {
        let mut listening = Vec::new();
        let mut tasks = Vec::new();
        if let Some(g) = &self.config.protocols.grpc {
            let (addr, task) = grpc::start(g, intake.clone(), shutdown.clone(), self.extra)?;
            listening.push(("otlp/grpc".to_string(), addr));
            tasks.push(task);
        }
        if let Some(h) = &self.config.protocols.http {
            let (addr, task) = http::start(h, intake.clone(), shutdown.clone())?;
            listening.push(("otlp/http".to_string(), addr));
            tasks.push(task);
        }
        drop(intake);
        let task = tokio::spawn(async move {
            for t in tasks {
                if let Err(e) = t.await {
                    tracing::error!(error = %e, "OTLP server task failed");
                }
            }
        });
        Ok(RunningReceiver { listening, task })
    }
}
