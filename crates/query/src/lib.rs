//! The query side of spanlake: DataFusion over the lake.
//!
//! A lake is the Parquet files a parquet exporter committed under `<root>/spans/` plus its live
//! tail (rows taken but not yet in a file), so a span is visible as soon as its request is
//! acknowledged. SQL sees two tables:
//!
//! - `spans_raw`: every stored copy of every span, with the partition columns `date` and `hour`;
//! - `spans`: one row per `(trace_id, span_id)` — client retries and superseded copies removed.
//!
//! Trace lookups go to `spans_raw` with a `trace_id` filter, which file statistics and the
//! `trace_id` bloom filters prune, and deduplicate in Rust. [`tree`] orders a trace as a tree.
//! This crate reads; it never writes the lake.

pub mod engine;
pub mod events;
pub mod http;
pub mod native;
pub mod recover;
pub mod render;
pub mod rows;
pub mod table;
pub mod tree;

pub use engine::QueryEngine;
pub use rows::StoredSpan;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("queries are read-only: {0}")]
    ReadOnly(String),
    #[error("unexpected lake schema: {0}")]
    Schema(String),
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
}
