//! Receivers: where spans enter spanlake.
//!
//! The `otlp` receiver serves OTLP over gRPC (`TraceService/Export`) and over HTTP
//! (`POST /v1/traces`, protobuf or JSON, optionally gzip). It decodes a request, refuses the
//! spans whose ids are invalid one by one (reported in `partial_success`), and admits the rest
//! into every pipeline that lists it through an [`spanlake_core::Intake`]. When the pipelines
//! are full it answers with a retryable refusal; it never queues without bound.
//!
//! Receivers do not batch, transform or store: that is the processors' and exporters' job.

pub mod otlp;
