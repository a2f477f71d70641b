//! A trace's events (log records with its trace id) and its metadata (the `traces` row), as
//! the trace view, `GetTrace` and the Tempo/Jaeger APIs show them.

use arrow::array::{Array, Int64Array, MapArray, RecordBatch, StringArray};
use opentelemetry_proto::tonic::common::v1::KeyValue;

use crate::QueryError;
use crate::rows::{StoredSpan, col, key_values, opt_str};

/// One event of a trace: trace-level when `span_id` is `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub span_id: Option<String>,
    pub time_unix_nano: i64,
    pub severity_text: Option<String>,
    pub severity_number: i64,
    /// The event's name (`event_name`), or else its body.
    pub name: String,
    pub body: Option<String>,
    pub attributes: Vec<KeyValue>,
}

impl StoredEvent {
    /// `INFO`, `ERROR`, …: the severity text, or the name of the severity number's range.
    pub fn level(&self) -> String {
        if let Some(t) = &self.severity_text {
            return t.clone();
        }
        match self.severity_number {
            1..=4 => "TRACE",
            5..=8 => "DEBUG",
            9..=12 => "INFO",
            13..=16 => "WARN",
            17..=20 => "ERROR",
            21..=24 => "FATAL",
            _ => "",
        }
        .to_string()
    }
}

/// The columns [`stored_events`] reads.
pub const EVENT_COLUMNS: &str = "span_id, time_unix_nano, severity_text, severity_number, \
    event_name, body, attributes, attribute_types";

/// Rows of a `logs` query selecting [`EVENT_COLUMNS`].
pub fn stored_events(b: &RecordBatch) -> Result<Vec<StoredEvent>, QueryError> {
    let span_id = col::<StringArray>(b, "span_id")?;
    let time = col::<Int64Array>(b, "time_unix_nano")?;
    let sev_text = col::<StringArray>(b, "severity_text")?;
    let sev_num = col::<Int64Array>(b, "severity_number")?;
    let event_name = col::<StringArray>(b, "event_name")?;
    let body = col::<StringArray>(b, "body")?;
    let attrs = col::<MapArray>(b, "attributes")?;
    let types = col::<MapArray>(b, "attribute_types")?;
    Ok((0..b.num_rows())
        .map(|i| {
            let body = opt_str(body, i);
            StoredEvent {
                span_id: opt_str(span_id, i),
                time_unix_nano: time.value(i),
                severity_text: opt_str(sev_text, i),
                severity_number: sev_num.value(i),
                name: opt_str(event_name, i)
                    .or_else(|| body.clone())
                    .unwrap_or_default(),
                body,
                attributes: key_values(attrs, types, i),
            }
        })
        .collect())
}

/// A trace's row of the `traces` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceInfo {
    pub project_id: Option<String>,
    pub request_id: Option<String>,
    pub input: Option<String>,
    pub context: Option<String>,
    pub tags: Option<String>,
    pub status_code: Option<String>,
    pub status_message: Option<String>,
    pub start_time_unix_nano: Option<i64>,
    pub end_time_unix_nano: Option<i64>,
    pub root_service_name: Option<String>,
    pub root_name: Option<String>,
    pub span_count: i64,
    pub error_count: i64,
    pub event_count: i64,
}

/// The first row of a `SELECT * FROM traces` result.
pub fn trace_info(b: &RecordBatch) -> Result<Option<TraceInfo>, QueryError> {
    if b.num_rows() == 0 {
        return Ok(None);
    }
    let s = |name: &str| -> Result<Option<String>, QueryError> {
        let c = b
            .column_by_name(name)
            .ok_or_else(|| QueryError::Schema(format!("column {name} is missing")))?;
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
            .map_err(|e| QueryError::Schema(e.to_string()))?;
        let c = c
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| QueryError::Schema(format!("column {name} is not text")))?;
        Ok(opt_str(c, 0))
    };
    let n = |name: &str| -> Result<Option<i64>, QueryError> {
        let c = b
            .column_by_name(name)
            .ok_or_else(|| QueryError::Schema(format!("column {name} is missing")))?;
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64)
            .map_err(|e| QueryError::Schema(e.to_string()))?;
        let c = c
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| QueryError::Schema(format!("column {name} is not a number")))?;
        Ok((!c.is_null(0)).then(|| c.value(0)))
    };
    Ok(Some(TraceInfo {
        project_id: s("project_id")?,
        request_id: s("request_id")?,
        input: s("input")?,
        context: s("context")?,
        tags: s("tags")?,
        status_code: s("status_code")?,
        status_message: s("status_message")?,
        start_time_unix_nano: n("start_time_unix_nano")?,
        end_time_unix_nano: n("end_time_unix_nano")?,
        root_service_name: s("root_service_name")?,
        root_name: s("root_name")?,
        span_count: n("span_count")?.unwrap_or(0),
        error_count: n("error_count")?.unwrap_or(0),
        event_count: n("event_count")?.unwrap_or(0),
    }))
}

/// Put a trace's events on its spans as span events, for APIs whose trace model has no other
/// place for them (Tempo, Jaeger): a span's events on that span, trace-level events on the root
/// span (marked `spanlake.trace_event = true`). Each carries its level as `level`.
pub fn attach_events(spans: &mut [StoredSpan], events: &[StoredEvent]) {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    if spans.is_empty() {
        return;
    }
    let root = spans
        .iter()
        .position(|s| s.span.parent_span_id.is_empty())
        .unwrap_or(0);
    let text = |k: &str, v: String| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v)),
        }),
        ..Default::default()
    };
    for e in events {
        let target = e
            .span_id
            .as_deref()
            .and_then(|id| spans.iter().position(|s| s.span_id == id));
        let mut attributes = e.attributes.clone();
        let level = e.level();
        if !level.is_empty() {
            attributes.push(text("level", level));
        }
        if let Some(body) = e.body.as_ref().filter(|b| **b != e.name) {
            attributes.push(text("body", body.clone()));
        }
        let i = match target {
            Some(i) => i,
            None => {
                attributes.push(KeyValue {
                    key: "spanlake.trace_event".into(),
                    value: Some(AnyValue {
                        value: Some(Value::BoolValue(true)),
                    }),
                    ..Default::default()
                });
                root
            }
        };
        spans[i].span.events.push(Event {
            time_unix_nano: e.time_unix_nano.max(0) as u64,
            name: e.name.clone(),
            attributes,
            dropped_attributes_count: 0,
        });
    }
    for s in spans.iter_mut() {
        s.span.events.sort_by_key(|e| e.time_unix_nano);
    }
}
