//! The traits every component implements.
//!
//! A component is built from its validated config by the registry of the `spanlake` binary, and
//! started as a task. Stages hand each other whole batches over bounded channels; each stage
//! exits when its input closes, after flushing what it holds. That is how shutdown drains: stop
//! the receivers, and the closing of each queue walks down the pipeline.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::channel::{Intake, Receiver as Queue, SendError, Sender};

/// A receiver listening on the network.
pub trait Receiver: Send {
    /// Bind and start serving; hand what is accepted to `intake`. Stops accepting when
    /// `shutdown` is cancelled, finishes the requests in flight, then drops `intake`.
    fn start(
        self: Box<Self>,
        intake: Intake,
        shutdown: CancellationToken,
    ) -> Result<RunningReceiver, std::io::Error>;

    /// Serve more gRPC services beside this receiver's, on its gRPC port (the native trace API,
    /// health, reflection). Returns `false` if the receiver serves no gRPC and took nothing.
    fn add_grpc_routes(&mut self, _routes: tonic::service::Routes) -> bool {
        false
    }

    /// Whether this receiver wants the native trace API on its gRPC port.
    fn wants_trace_api(&self) -> bool {
        false
    }
}

/// A started receiver: where it listens, and its task.
pub struct RunningReceiver {
    /// `(protocol, address)` pairs actually bound (port 0 resolved).
    pub listening: Vec<(String, SocketAddr)>,
    pub task: JoinHandle<()>,
}

/// A processor stage: reads batches, writes batches.
pub trait Processor: Send {
    /// Run until `input` closes, flushing anything held before returning. Once `shutdown` is
    /// cancelled, hold nothing back: the clients whose requests are still in flight are waiting
    /// for their spans to reach the exporters.
    fn start(
        self: Box<Self>,
        input: Queue,
        output: Fanout,
        shutdown: CancellationToken,
    ) -> JoinHandle<()>;
}

/// An exporter: the end of a pipeline.
pub trait Exporter: Send {
    /// Run until `input` closes, then flush and commit everything before returning.
    fn start(self: Box<Self>, input: Queue) -> JoinHandle<Result<(), String>>;
}

/// The exit of a pipeline's last processor: every exporter of the pipeline gets each batch.
#[derive(Clone, Debug)]
pub struct Fanout {
    outputs: Vec<Sender>,
}

impl Fanout {
    pub fn new(outputs: Vec<Sender>) -> Self {
        Fanout { outputs }
    }

    /// Send to every output, waiting for room in each (backpressure flows upstream).
    pub async fn send(&self, batch: Batch) -> Result<(), SendError> {
        let n = self.outputs.len();
        let mut batch = Some(batch);
        for (i, out) in self.outputs.iter().enumerate() {
            let b = if i + 1 == n {
                batch.take().expect("last output takes the batch")
            } else {
                batch
                    .as_ref()
                    .expect("batch kept for later outputs")
                    .clone()
            };
            out.send(b).await?;
        }
        Ok(())
    }
}
