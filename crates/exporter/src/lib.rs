//! Exporters: where a pipeline's batches leave spanlake.
//!
//! - `parquet`: the lake. One row per span in Hive-style partitions
//!   (`spans/date=YYYY-MM-DD/hour=HH/*.parquet`), sorted by trace id then start time inside a
//!   file, zstd, a bloom filter on `trace_id`, written under a temporary name and renamed so no
//!   reader ever sees half a file. Conversion to Arrow, encoding and file I/O run on blocking
//!   threads, never on the async workers. The columns are documented in `docs/schema.md`.
//! - `debug`: JSON lines on stdout, for looking at what a pipeline carries.
//!
//! Exporters drain their input when it closes and commit everything before returning; they do
//! not retry forever or hold a write-ahead log (that belongs to the durability work).

pub mod attributes;
pub mod debug;
pub mod parquet;
