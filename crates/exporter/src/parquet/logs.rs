//! OTLP log records → Arrow rows of the `logs` table.
//!
//! A log record with a trace id is an event of that trace (with a span id, of that span):
//! seed 004's `trace.event("INFO", "coordinator.waiting_for_upload")`. The trace's start and
//! end (native `StartTrace`/`EndTrace`) are log records too, named `spanlake.trace.start` and
//! `spanlake.trace.end`, so they travel the same pipelines and land in the same lake.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs};
use prost::Message;

use super::convert::{AttrMaps, HourKey, NANOS_PER_HOUR, Origin, clamp_nanos, id_into, opt_str};
use super::schema::{attribute_fields, origin_fields, ts};
use crate::attributes::text_of;

/// Event names of the trace's own records.
pub const TRACE_START: &str = "spanlake.trace.start";
pub const TRACE_END: &str = "spanlake.trace.end";

/// The columns of the `logs` table. `docs/schema.md` documents them; keep both in step.
pub fn log_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let [a, at] = attribute_fields();
            let mut fields = vec![
                Field::new("trace_id", DataType::Utf8, true),
                Field::new("span_id", DataType::Utf8, true),
                Field::new("time_unix_nano", DataType::Int64, false),
                Field::new("observed_time_unix_nano", DataType::Int64, true),
                Field::new("time", ts(), false),
                Field::new("severity_number", DataType::Int64, false),
                Field::new("severity_text", DataType::Utf8, true),
                Field::new("event_name", DataType::Utf8, true),
                Field::new("body", DataType::Utf8, true),
                Field::new("body_type", DataType::Utf8, true),
                Field::new("flags", DataType::Int64, false),
                Field::new("service_name", DataType::Utf8, true),
                a,
                at,
                Field::new("dropped_attributes_count", DataType::Int64, false),
            ];
            fields.extend(origin_fields());
            fields.push(Field::new("record_id", DataType::Utf8, false));
            fields.push(Field::new("ingest_time_unix_nano", DataType::Int64, false));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// Column index of `time_unix_nano`, the second sort key after `trace_id`.
pub const TIME_COLUMN: usize = 2;

/// Column builders for a run of log records.
pub struct LogRows {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    time: Int64Builder,
    observed: Int64Builder,
    time_ts: TimestampMicrosecondBuilder,
    severity_number: Int64Builder,
    severity_text: StringBuilder,
    event_name: StringBuilder,
    body: StringBuilder,
    body_type: StringBuilder,
    flags: Int64Builder,
    attrs: AttrMaps,
    dropped: Int64Builder,
    origin: Origin,
    record_id: StringBuilder,
    ingest: Int64Builder,
    hours: Vec<HourKey>,
    text: String,
    ids: String,
    encoded: Vec<u8>,
}

impl Default for LogRows {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a, 64 bits: a stable content hash (the same record always gets the same id, in every
/// version), used to return a record once when a replay wrote it twice.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in *p {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl LogRows {
    pub fn new() -> Self {
        LogRows {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            time: Int64Builder::new(),
            observed: Int64Builder::new(),
            time_ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            severity_number: Int64Builder::new(),
            severity_text: StringBuilder::new(),
            event_name: StringBuilder::new(),
            body: StringBuilder::new(),
            body_type: StringBuilder::new(),
            flags: Int64Builder::new(),
            attrs: AttrMaps::new(),
            dropped: Int64Builder::new(),
            origin: Origin::new(),
            record_id: StringBuilder::new(),
            ingest: Int64Builder::new(),
            hours: Vec::new(),
            text: String::new(),
            ids: String::new(),
            encoded: Vec::new(),
        }
    }

    /// Append every record of `groups`, received at `ingest_ns`.
    pub fn append(&mut self, groups: &[ResourceLogs], ingest_ns: i64) -> Result<(), ArrowError> {
        for rl in groups {
            let group = self.origin.group(rl.resource.as_ref(), &rl.schema_url);
            for sl in &rl.scope_logs {
                let scope = self.origin.scope(sl.scope.as_ref(), &sl.schema_url);
                for rec in &sl.log_records {
                    self.append_record(rec, group.service, ingest_ns)?;
                    self.origin.append_service(&group);
                    self.origin.append(&group, &scope)?;
                }
            }
        }
        Ok(())
    }

    fn append_record(
        &mut self,
        rec: &LogRecord,
        service: Option<&str>,
        ingest_ns: i64,
    ) -> Result<(), ArrowError> {
        id_into(&mut self.trace_id, &mut self.ids, &rec.trace_id, true);
        id_into(&mut self.span_id, &mut self.ids, &rec.span_id, true);
        // The time of the event; when the source did not know it, when it was observed; else
        // when spanlake received it.
        let time = if rec.time_unix_nano > 0 {
            clamp_nanos(rec.time_unix_nano)
        } else if rec.observed_time_unix_nano > 0 {
            clamp_nanos(rec.observed_time_unix_nano)
        } else {
            ingest_ns
        };
        self.time.append_value(time);
        self.time_ts.append_value(time / 1000);
        if rec.observed_time_unix_nano > 0 {
            self.observed
                .append_value(clamp_nanos(rec.observed_time_unix_nano));
        } else {
            self.observed.append_null();
        }
        self.severity_number
            .append_value(rec.severity_number as i64);
        opt_str(&mut self.severity_text, &rec.severity_text);
        opt_str(&mut self.event_name, &rec.event_name);
        match rec.body.as_ref().and_then(|b| b.value.as_ref()) {
            None => {
                self.body.append_null();
                self.body_type.append_null();
            }
            Some(v) => {
                let tag = text_of(Some(v), &mut self.text);
                self.body.append_value(self.text.as_str());
                match tag {
                    Some(t) => self.body_type.append_value(t),
                    None => self.body_type.append_null(),
                }
            }
        }
        self.flags.append_value(rec.flags as i64);
        self.attrs.append(&rec.attributes, &mut self.text)?;
        self.dropped
            .append_value(rec.dropped_attributes_count as i64);
        self.encoded.clear();
        rec.encode(&mut self.encoded)
            .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
        let id = fnv1a(&[service.unwrap_or("").as_bytes(), &self.encoded]);
        self.ids.clear();
        spanlake_core::ids::push_hex(&mut self.ids, &id.to_be_bytes());
        self.record_id.append_value(self.ids.as_str());
        self.ingest.append_value(ingest_ns);
        self.hours.push(time.div_euclid(NANOS_PER_HOUR));
        Ok(())
    }

    /// The rows as a record batch of [`log_schema`], with the partition of each row; the
    /// builders are left empty for reuse.
    pub fn finish(&mut self) -> Result<(RecordBatch, Vec<HourKey>), ArrowError> {
        let [a, at] = self.attrs.finish();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.observed.finish()),
            Arc::new(self.time_ts.finish()),
            Arc::new(self.severity_number.finish()),
            Arc::new(self.severity_text.finish()),
            Arc::new(self.event_name.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.body_type.finish()),
            Arc::new(self.flags.finish()),
            self.origin.finish_service(),
            a,
            at,
            Arc::new(self.dropped.finish()),
        ];
        columns.extend(self.origin.finish());
        columns.push(Arc::new(self.record_id.finish()));
        columns.push(Arc::new(self.ingest.finish()));
        // The writer keeps these builders from one batch of logs to the next, maybe for
        // hours: they keep no room sized by the last batch (`FinishKeepingRoom`).
        self.attrs = AttrMaps::new();
        self.origin = Origin::new();
        let batch = super::convert::aligned_batch(log_schema(), columns)?;
        Ok((batch, std::mem::take(&mut self.hours)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::logs::v1::ScopeLogs;

    #[test]
    fn records_become_rows_with_stable_ids() {
        let rec = LogRecord {
            time_unix_nano: 5 * NANOS_PER_HOUR as u64 + 7,
            trace_id: vec![0xab; 16],
            severity_number: 9,
            severity_text: "INFO".into(),
            event_name: "coordinator.waiting_for_upload".into(),
            body: Some(AnyValue {
                value: Some(Value::IntValue(42)),
            }),
            ..Default::default()
        };
        let groups = vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![rec.clone(), rec],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let mut rows = LogRows::new();
        rows.append(&groups, 1).expect("append");
        let (batch, hours) = rows.finish().expect("finish");
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(hours, vec![5, 5]);
        let trace = batch.column(0).as_string::<i32>();
        assert_eq!(trace.value(0), "ab".repeat(16));
        assert!(batch.column(1).is_null(0), "no span: a trace-level event");
        let body = batch.column(8).as_string::<i32>();
        assert_eq!(body.value(0), "42");
        let ids = batch.column(25).as_string::<i32>();
        assert_eq!(ids.value(0), ids.value(1), "same record, same id");
        assert_eq!(ids.value(0).len(), 16);
    }
}
