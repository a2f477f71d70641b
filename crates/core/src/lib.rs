//! The spine every component of spanlake shares.
//!
//! spanlake's data flow is `receivers → processors → exporters`, joined by bounded channels.
//! This crate holds only what every stage of that flow needs:
//!
//! - [`batch`]: the unit that travels through a pipeline — whole batches, never span by span —
//!   and the completion guards (in-flight permits, acknowledgements) a batch carries with it;
//! - [`channel`]: the bounded channel between two stages, which tells "full" (backpressure,
//!   the client should retry) from "closed" (shutting down);
//! - [`component`]: the traits receivers, processors and exporters implement;
//! - [`pressure`]: admission control — the memory limit and the refusals exporters raise when
//!   they cannot take more, asked by receivers before they decode a request;
//! - [`ids`]: OTLP id checks and the table-driven hex encoding used on the span path.
//!
//! It does no I/O and knows no protocol beyond the OTLP data types.

pub mod batch;
pub mod channel;
pub mod component;
pub mod ids;
pub mod net;
pub mod pressure;
pub mod spans;

pub use batch::{Ack, AckWait, Batch, Guard, Signal, TraceEnd, fail_all, split_acks};
pub use channel::{Intake, IntakeError, Receiver, SendError, Sender, bounded};
pub use component::{Exporter, Fanout, Processor, Receiver as ReceiverComponent, RunningReceiver};
pub use opentelemetry_proto::tonic as otlp;
pub use pressure::{Pressure, Reservation};
pub use spans::SpanBlock;
pub use tokio_util::sync::CancellationToken;
