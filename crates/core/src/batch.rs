//! The batch: what moves through a pipeline.

use std::any::Any;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Status};

use crate::spans::SpanBlock;

/// Something held by a batch until every consumer of the batch is done with it, released by
/// dropping it: an in-flight slot of the batch processor, an acknowledgement a client waits on.
pub type Guard = Arc<dyn Any + Send + Sync>;

/// The signal a batch carries: spans, or log records (trace-level and span-level events, trace
/// metadata), which travel the same pipelines into their own table.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// OTLP spans, grouped by resource and scope exactly as they arrived: one block per
    /// request (or per stage's output), in flat tables (see [`crate::spans`]).
    Spans(Vec<SpanBlock>),
    /// OTLP log records, grouped by resource and scope. Those with a trace id are events of
    /// that trace.
    Logs(Vec<ResourceLogs>),
    /// A trace was ended by its client (the native API's `EndTrace`). The lifecycle processor
    /// acts on it; other stages pass it on and exporters ignore it.
    EndTrace(TraceEnd),
}

/// The end of a trace, as its client declared it.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEnd {
    pub trace_id: Vec<u8>,
    pub status: Status,
    pub end_time_unix_nano: u64,
}

/// A batch of telemetry, moved through channels as a whole.
///
/// Cloning a batch (fan-out to several exporters) shares its guards: a guard is released only
/// when the last copy is dropped, i.e. when every exporter has taken the batch.
#[derive(Clone)]
pub struct Batch {
    pub signal: Signal,
    /// Number of items (spans) in `signal`, kept so no stage has to count again.
    items: usize,
    guards: Vec<Guard>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("items", &self.items)
            .field("guards", &self.guards.len())
            .finish()
    }
}

impl Batch {
    /// A control batch: the end of a trace.
    pub fn end_trace(end: TraceEnd) -> Self {
        Batch {
            signal: Signal::EndTrace(end),
            items: 0,
            guards: Vec::new(),
        }
    }

    /// Whether this batch carries spans (and not a control message).
    pub fn is_spans(&self) -> bool {
        matches!(self.signal, Signal::Spans(_))
    }

    /// A batch of log records; its length is the number of records.
    pub fn logs(resource_logs: Vec<ResourceLogs>) -> Self {
        let items = count_logs(&resource_logs);
        Batch {
            signal: Signal::Logs(resource_logs),
            items,
            guards: Vec::new(),
        }
    }

    /// The signal and the guards, consuming the batch.
    pub fn into_signal(self) -> (Signal, Vec<Guard>) {
        (self.signal, self.guards)
    }

    /// A batch of spans built from prost's structs (copied into one block; empty groups go).
    pub fn spans(resource_spans: Vec<ResourceSpans>) -> Self {
        let block = SpanBlock::from_prost(&resource_spans);
        Batch::blocks(if block.is_empty() {
            Vec::new()
        } else {
            vec![block]
        })
    }

    /// A batch of span blocks.
    pub fn blocks(blocks: Vec<SpanBlock>) -> Self {
        let items = count_spans(&blocks);
        Batch {
            signal: Signal::Spans(blocks),
            items,
            guards: Vec::new(),
        }
    }

    /// Number of spans in the batch.
    pub fn len(&self) -> usize {
        self.items
    }

    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Attach a guard released when the batch (and every clone of it) is dropped.
    pub fn add_guard(&mut self, guard: Guard) {
        self.guards.push(guard);
    }

    pub fn guards(&self) -> &[Guard] {
        &self.guards
    }

    /// Take the guards out, e.g. to hand them to the batch that absorbs this one.
    pub fn take_guards(&mut self) -> Vec<Guard> {
        std::mem::take(&mut self.guards)
    }

    /// Split into the span blocks and the guards, consuming the batch (a batch of another
    /// signal has no spans).
    pub fn into_parts(self) -> (Vec<SpanBlock>, Vec<Guard>) {
        match self.signal {
            Signal::Spans(rs) => (rs, self.guards),
            Signal::EndTrace(_) | Signal::Logs(_) => (Vec::new(), self.guards),
        }
    }

    /// Rebuild from parts; the span count is recomputed.
    pub fn from_parts(blocks: Vec<SpanBlock>, guards: Vec<Guard>) -> Self {
        let mut b = Batch::blocks(blocks);
        b.guards = guards;
        b
    }

    /// Mark every acknowledgement this batch carries as failed: the spans will not be stored,
    /// and the clients waiting on them must be told to retry.
    pub fn fail(&self) {
        fail_all(&self.guards);
    }

    /// Recount the spans after a stage changed the contents in place.
    pub fn recount(&mut self) {
        self.items = match &self.signal {
            Signal::Spans(rs) => count_spans(rs),
            Signal::Logs(rl) => count_logs(rl),
            Signal::EndTrace(_) => 0,
        };
    }
}

pub fn count_spans(blocks: &[SpanBlock]) -> usize {
    blocks.iter().map(SpanBlock::len).sum()
}

pub fn count_logs(resource_logs: &[ResourceLogs]) -> usize {
    resource_logs
        .iter()
        .flat_map(|r| r.scope_logs.iter())
        .map(|s| s.log_records.len())
        .sum()
}

/// Split guards into the clients' acknowledgements and everything else (in-flight slots,
/// memory reservations): a stage that makes spans durable later (an fsync) can release the
/// rest as soon as it has taken the spans, and answer the clients when they are safe.
pub fn split_acks(guards: Vec<Guard>) -> (Vec<Guard>, Vec<Guard>) {
    guards.into_iter().partition(|g| (**g).is::<Ack>())
}

/// Mark every acknowledgement among `guards` as failed.
pub fn fail_all(guards: &[Guard]) {
    for g in guards {
        if let Some(ack) = (**g).downcast_ref::<Ack>() {
            ack.failed.store(true, Ordering::Relaxed);
        }
    }
}

/// A client's request waiting for its spans to be safe.
///
/// It rides on every batch that holds spans of the request, as a guard. When the last copy is
/// dropped — every exporter has taken every part of the request — the waiter learns whether all
/// went well: a stage that loses spans (a closed queue, an exporter that cannot take them)
/// calls [`Batch::fail`] first.
pub struct Ack {
    failed: AtomicBool,
    done: Mutex<Option<oneshot::Sender<bool>>>,
}

/// The receiver's side of an [`Ack`].
pub struct AckWait(oneshot::Receiver<bool>);

impl Ack {
    /// A new acknowledgement: the guard to attach to a batch, and the receiver's waiter.
    pub fn pair() -> (Guard, AckWait) {
        let (tx, rx) = oneshot::channel();
        let ack = Ack {
            failed: AtomicBool::new(false),
            done: Mutex::new(Some(tx)),
        };
        (Arc::new(ack), AckWait(rx))
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        let tx = match self.done.get_mut() {
            Ok(tx) => tx.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(tx) = tx {
            let _ = tx.send(!self.failed.load(Ordering::Relaxed));
        }
    }
}

impl AckWait {
    /// `true` once every part of the request was taken by every exporter; `false` if any part
    /// was lost.
    pub async fn wait(self) -> bool {
        self.0.await.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ack_completes_when_the_last_copy_is_dropped() {
        let (guard, wait) = Ack::pair();
        let mut a = Batch::spans(vec![]);
        a.add_guard(guard);
        let b = a.clone();
        drop(a);
        let mut wait = Box::pin(wait.wait());
        assert!(
            futures_poll(&mut wait).is_none(),
            "a copy is still in the pipeline"
        );
        drop(b);
        assert!(wait.await, "every copy taken");
    }

    #[tokio::test]
    async fn a_lost_part_fails_the_ack() {
        let (guard, wait) = Ack::pair();
        let mut a = Batch::spans(vec![]);
        a.add_guard(guard);
        let b = a.clone();
        b.fail();
        drop((a, b));
        assert!(!wait.wait().await, "a part was lost");
    }

    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
