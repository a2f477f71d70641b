//! Processors: the stages between receivers and exporters.
//!
//! Each processor runs as its own task, reads whole batches from its bounded input queue and
//! writes whole batches to the next queue (or the pipeline's exporters), and exits when its
//! input closes after flushing what it holds — that is how a shutdown drains a pipeline.
//!
//! - `batch`: groups spans into batches of at most `max_size`, waits at most `timeout`, and keeps
//!   at most `max_inflight` batches being exported at once, pushing back upstream beyond that.
//!
//! Redaction and the span lifecycle (auto-close) processors come next and sit before `batch`.

pub mod batch;
pub mod lifecycle;
pub mod redaction;
