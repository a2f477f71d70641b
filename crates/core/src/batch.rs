//! The batch: what moves through a pipeline.

use std::any::Any;
use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// Something held by a batch until every consumer of the batch is done with it, released by
/// dropping it: an in-flight slot of the batch processor, an acknowledgement a client waits on.
pub type Guard = Arc<dyn Any + Send + Sync>;

/// The signal a batch carries. Spans today; trace-level events (OTLP logs) join as a variant so
/// that they travel the same pipelines.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// OTLP spans, grouped by resource and scope exactly as they arrived.
    Spans(Vec<ResourceSpans>),
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
    pub fn spans(resource_spans: Vec<ResourceSpans>) -> Self {
        let items = count_spans(&resource_spans);
        Batch {
            signal: Signal::Spans(resource_spans),
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

    /// Split into the resource groups and the guards, consuming the batch.
    pub fn into_parts(self) -> (Vec<ResourceSpans>, Vec<Guard>) {
        match self.signal {
            Signal::Spans(rs) => (rs, self.guards),
        }
    }

    /// Rebuild from parts; the span count is recomputed.
    pub fn from_parts(resource_spans: Vec<ResourceSpans>, guards: Vec<Guard>) -> Self {
        let mut b = Batch::spans(resource_spans);
        b.guards = guards;
        b
    }

    /// Recount the spans after a stage changed the contents in place.
    pub fn recount(&mut self) {
        self.items = match &self.signal {
            Signal::Spans(rs) => count_spans(rs),
        };
    }
}

pub fn count_spans(resource_spans: &[ResourceSpans]) -> usize {
    resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .map(|s| s.spans.len())
        .sum()
}
