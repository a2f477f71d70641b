//! Pipeline files: reading, `${env:VAR}` substitution, and problems reported as `FILE:LINE`.
//!
//! A pipeline file has the OpenTelemetry Collector's shape — `receivers:`, `processors:`,
//! `exporters:` keyed by component id `type[/name]`, and `service: pipelines:` joining them — so
//! a user of that collector feels at home. This crate knows that shape, not the components:
//! each component's own config struct lives beside the component and is decoded here through
//! [`Document::decode`], which turns any serde error into a problem on the right line.
//!
//! Nothing here does I/O beyond reading the file; building and starting components is the job
//! of the `spanlake` binary's registry.

mod document;
mod env;
mod lines;
mod pipeline;

pub use document::{Document, Path, Problem, Problems};
pub use env::substitute;
pub use pipeline::{
    Acknowledgements, ComponentId, LogEncoding, LogsConfig, PipelineSpec, RawComponent, RawConfig,
    Reference, ServiceConfig, Signal, TelemetryConfig,
};
