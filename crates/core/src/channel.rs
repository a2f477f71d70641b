//! Bounded channels between pipeline stages.
//!
//! Every queue in spanlake is bounded. These wrappers exist so a stage can tell "full"
//! (backpressure: answer the client with a retryable refusal) from "closed" (the pipeline is
//! shutting down), and so queue depth can be observed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::batch::Batch;
use crate::pressure::{Pressure, Reservation};

/// Create a bounded channel of `capacity` batches, named for logs and metrics.
pub fn bounded(name: impl Into<Arc<str>>, capacity: usize) -> (Sender, Receiver) {
    let name = name.into();
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        Sender {
            inner: tx,
            name: name.clone(),
        },
        Receiver { inner: rx, name },
    )
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    #[error("queue {0} is full")]
    Full(Arc<str>),
    #[error("queue {0} is closed: the pipeline is shutting down")]
    Closed(Arc<str>),
}

#[derive(Clone, Debug)]
pub struct Sender {
    inner: mpsc::Sender<Batch>,
    name: Arc<str>,
}

impl Sender {
    /// Send, waiting for room: the stage upstream slows down to the pace of this one.
    pub async fn send(&self, batch: Batch) -> Result<(), SendError> {
        self.inner
            .send(batch)
            .await
            .map_err(|_| SendError::Closed(self.name.clone()))
    }

    /// Send without waiting.
    pub fn try_send(&self, batch: Batch) -> Result<(), SendError> {
        self.inner.try_send(batch).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full(self.name.clone()),
            mpsc::error::TrySendError::Closed(b) => {
                b.fail();
                SendError::Closed(self.name.clone())
            }
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Batches waiting in the queue.
    pub fn depth(&self) -> usize {
        self.inner.max_capacity() - self.inner.capacity()
    }

    pub fn capacity(&self) -> usize {
        self.inner.max_capacity()
    }
}

#[derive(Debug)]
pub struct Receiver {
    inner: mpsc::Receiver<Batch>,
    name: Arc<str>,
}

impl Receiver {
    /// The next batch, or `None` once every sender is gone and the queue is drained.
    pub async fn recv(&mut self) -> Option<Batch> {
        self.inner.recv().await
    }

    /// The next batch if one is waiting right now, without waiting for one.
    pub fn try_recv(&mut self) -> Option<Batch> {
        self.inner.try_recv().ok()
    }

    /// No batch is waiting right now.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
/// Every variant is retryable for the client; its text is what the client is told.
pub enum IntakeError {
    /// Overload: every pipeline queue stayed full for the whole admission wait, the memory
    /// limit is reached, or the write-ahead log is full. Retry later (gRPC
    /// `RESOURCE_EXHAUSTED` with `RetryInfo`, HTTP 429).
    #[error("spanlake is overloaded ({0}); retry later")]
    Full(String),
    /// Spans cannot be stored right now (e.g. the disk refuses writes). Retry later (gRPC
    /// `UNAVAILABLE`, HTTP 503).
    #[error("spanlake cannot store spans right now ({0}); retry later")]
    Unavailable(String),
    /// The collector is shutting down.
    #[error("spanlake is shutting down; retry against another instance or later")]
    Closed,
    /// Admitted, but a stage could not store the spans (e.g. an exporter failed).
    #[error("spanlake could not store the spans; retry")]
    Lost,
}

impl IntakeError {
    /// How long a client should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// Overload (the client should slow down) rather than unavailability.
    pub fn is_overload(&self) -> bool {
        matches!(self, IntakeError::Full(_))
    }

    /// The gRPC status a client is answered with: overload is `RESOURCE_EXHAUSTED` with
    /// `google.rpc.RetryInfo` (which tells OTLP exporters to retry, and when); anything else
    /// `UNAVAILABLE`, which they always retry.
    pub fn to_grpc_status(&self) -> tonic::Status {
        let message = self.to_string();
        if !self.is_overload() {
            return tonic::Status::unavailable(message);
        }
        let delay = self.retry_after();
        let retry_info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: delay.as_secs() as i64,
                nanos: delay.subsec_nanos() as i32,
            }),
        };
        let details = RpcStatus {
            code: tonic::Code::ResourceExhausted as i32,
            message: message.clone(),
            details: vec![ProtoAny {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: prost::Message::encode_to_vec(&retry_info),
            }],
        };
        tonic::Status::with_details(
            tonic::Code::ResourceExhausted,
            message,
            prost::Message::encode_to_vec(&details).into(),
        )
    }
}

/// `google.rpc.Status`, as carried in `grpc-status-details-bin`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Where a receiver hands what it accepted: the first queue of every pipeline that lists it.
///
/// A batch is admitted into all of them or none: room is reserved in every queue first, so a
/// client told "retry" has not had half its spans taken.
#[derive(Clone, Debug)]
pub struct Intake {
    queues: Vec<Sender>,
    admission_wait: Duration,
    pressure: Arc<Pressure>,
    keep_requests: bool,
}

impl Intake {
    pub fn new(queues: Vec<Sender>, admission_wait: Duration, pressure: Arc<Pressure>) -> Self {
        Intake {
            queues,
            admission_wait,
            pressure,
            keep_requests: false,
        }
    }

    /// Whether receivers keep each trace request's bytes with its block
    /// ([`crate::SpanBlock::decode_request`]): so a durable pipeline's write-ahead log writes
    /// them instead of encoding the block again. Without one, the bytes would only be held.
    pub fn keeping_requests(mut self, keep: bool) -> Self {
        self.keep_requests = keep;
        self
    }

    /// See [`Intake::keeping_requests`].
    pub fn keeps_requests(&self) -> bool {
        self.keep_requests
    }

    /// May a request of `wire_bytes` come in? Ask before decoding it; attach the reservation
    /// to its batch (`Batch::add_guard`) so the memory stays counted while its spans move.
    pub fn reserve(&self, wire_bytes: usize) -> Result<Reservation, IntakeError> {
        self.pressure.admit(wire_bytes)
    }

    pub fn pressure(&self) -> &Arc<Pressure> {
        &self.pressure
    }

    pub fn queues(&self) -> &[Sender] {
        &self.queues
    }

    /// Admit a batch and wait until its spans are as safe as the pipelines make them: taken by
    /// every exporter (and so visible to queries). This is when a client is acknowledged.
    pub async fn admit(&self, mut batch: Batch) -> Result<(), IntakeError> {
        let (guard, wait) = crate::batch::Ack::pair();
        batch.add_guard(guard);
        self.submit(batch).await?;
        if wait.wait().await {
            Ok(())
        } else {
            Err(IntakeError::Lost)
        }
    }

    /// Admit a batch into every pipeline, waiting at most the admission wait for room.
    pub async fn submit(&self, batch: Batch) -> Result<(), IntakeError> {
        let deadline = tokio::time::Instant::now() + self.admission_wait;
        let mut permits = Vec::with_capacity(self.queues.len());
        for q in &self.queues {
            match tokio::time::timeout_at(deadline, q.inner.reserve()).await {
                Ok(Ok(p)) => permits.push(p),
                Ok(Err(_)) => return Err(IntakeError::Closed),
                Err(_) => {
                    return Err(IntakeError::Full(format!(
                        "queue {} is full ({} batches)",
                        q.name,
                        q.capacity()
                    )));
                }
            }
        }
        let n = permits.len();
        for (i, p) in permits.into_iter().enumerate() {
            if i + 1 == n {
                p.send(batch);
                break;
            }
            p.send(batch.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn intake_tells_full_from_closed() {
        let (tx, mut rx) = bounded("p", 1);
        let intake = Intake::new(vec![tx], Duration::from_millis(50), Pressure::unlimited());
        intake
            .submit(Batch::spans(vec![]))
            .await
            .expect("room for one");
        let err = intake
            .submit(Batch::spans(vec![]))
            .await
            .expect_err("queue is full");
        assert_eq!(err, IntakeError::Full("queue p is full (1 batches)".into()));
        assert!(rx.recv().await.is_some());
        drop(rx);
        let err = intake
            .submit(Batch::spans(vec![]))
            .await
            .expect_err("closed");
        assert_eq!(err, IntakeError::Closed);
    }

    #[test]
    fn overload_tells_grpc_clients_when_to_retry() {
        let st = IntakeError::Full("queue q is full".into()).to_grpc_status();
        assert_eq!(st.code(), tonic::Code::ResourceExhausted);
        let details: RpcStatus = prost::Message::decode(st.details()).expect("google.rpc.Status");
        assert_eq!(details.details.len(), 1);
        assert_eq!(
            details.details[0].type_url,
            "type.googleapis.com/google.rpc.RetryInfo"
        );
        let info: RetryInfo =
            prost::Message::decode(details.details[0].value.as_slice()).expect("RetryInfo");
        assert_eq!(info.retry_delay.map(|d| d.seconds), Some(1));
        let st = IntakeError::Unavailable("disk full".into()).to_grpc_status();
        assert_eq!(st.code(), tonic::Code::Unavailable);
        assert!(st.details().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn intake_admits_into_all_or_none() {
        let (tx1, mut rx1) = bounded("a", 4);
        let (tx2, _rx2) = bounded("b", 1);
        tx2.try_send(Batch::spans(vec![])).expect("fill b");
        let intake = Intake::new(
            vec![tx1, tx2],
            Duration::from_millis(10),
            Pressure::unlimited(),
        );
        assert!(matches!(
            intake.submit(Batch::spans(vec![])).await,
            Err(IntakeError::Full(_))
        ));
        // nothing reached queue a either
        assert!(rx1.inner.try_recv().is_err());
    }
}
