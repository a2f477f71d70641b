//! Rows of the lake back into OTLP spans, with the original attribute types.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, Int64Array, MapArray, RecordBatch, StringArray, StructArray};
use arrow::datatypes::Int64Type;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use spanlake_exporter::attributes::value_of;

use crate::QueryError;

/// One stored span with what it was sent with.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSpan {
    /// The ids as stored (lowercase hex for OTLP spans, free strings for native ones).
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub service_name: Option<String>,
    pub span: Span,
    pub resource: Resource,
    pub resource_schema_url: String,
    pub scope: InstrumentationScope,
    pub scope_schema_url: String,
    pub ingest_time_unix_nano: i64,
}

impl StoredSpan {
    pub fn is_running(&self) -> bool {
        self.span.end_time_unix_nano == 0
    }

    /// Closed by spanlake on the client's behalf (auto-close), not by the client.
    pub fn auto_closed(&self) -> bool {
        self.span
            .attributes
            .iter()
            .any(|kv| kv.key == "spanlake.auto_closed")
    }

    pub fn status_code(&self) -> i32 {
        self.span.status.as_ref().map(|s| s.code).unwrap_or(0)
    }
}

/// Id text back to OTLP bytes (see [`spanlake_core::ids::id_from_text`]).
pub fn id_bytes(id: &str, binary_len: usize) -> Vec<u8> {
    spanlake_core::ids::id_from_text(id, binary_len)
}

pub(crate) fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, QueryError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| QueryError::Schema(format!("column {name} is missing or has another type")))
}

fn field<'a, T: 'static>(s: &'a StructArray, name: &str) -> Result<&'a T, QueryError> {
    s.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| QueryError::Schema(format!("field {name} is missing or has another type")))
}

pub(crate) fn opt_str(a: &StringArray, i: usize) -> Option<String> {
    (!a.is_null(i)).then(|| a.value(i).to_string())
}

fn str_or_empty(a: &StringArray, i: usize) -> String {
    opt_str(a, i).unwrap_or_default()
}

/// The attributes of row `i` of a value map and its type map.
pub(crate) fn key_values(values: &MapArray, types: &MapArray, i: usize) -> Vec<KeyValue> {
    let tmap: HashMap<String, String> = {
        let entries = types.value(i);
        let k = entries.column(0).as_string::<i32>();
        let v = entries.column(1).as_string::<i32>();
        (0..entries.len())
            .map(|j| (k.value(j).to_string(), v.value(j).to_string()))
            .collect()
    };
    let entries = values.value(i);
    let k = entries.column(0).as_string::<i32>();
    let v = entries.column(1).as_string::<i32>();
    (0..entries.len())
        .map(|j| {
            let key = k.value(j).to_string();
            let tag = tmap.get(&key).map(String::as_str);
            let text = if v.is_null(j) { "" } else { v.value(j) };
            let value = value_of(text, tag).unwrap_or_else(|| {
                Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        text.to_string(),
                    ),
                )
            });
            // An empty value comes back as no value at all, as most senders write it.
            let value = value.map(|v| AnyValue { value: Some(v) });
            KeyValue {
                key,
                value,
                ..Default::default()
            }
        })
        .collect()
}

fn kind_of(name: &str) -> i32 {
    match name {
        "INTERNAL" => 1,
        "SERVER" => 2,
        "CLIENT" => 3,
        "PRODUCER" => 4,
        "CONSUMER" => 5,
        other => other.parse().unwrap_or(0),
    }
}

pub(crate) fn status_of(name: &str) -> i32 {
    match name {
        "OK" => 1,
        "ERROR" => 2,
        other => other.parse().unwrap_or(0),
    }
}

fn u64_of(v: i64) -> u64 {
    v.max(0) as u64
}

/// Every row of `batch` (a `spans` or `spans_raw` result with all span columns).
pub fn stored_spans(batch: &RecordBatch) -> Result<Vec<StoredSpan>, QueryError> {
    let trace_id = col::<StringArray>(batch, "trace_id")?;
    let span_id = col::<StringArray>(batch, "span_id")?;
    let parent = col::<StringArray>(batch, "parent_span_id")?;
    let trace_state = col::<StringArray>(batch, "trace_state")?;
    let flags = col::<Int64Array>(batch, "flags")?;
    let name = col::<StringArray>(batch, "name")?;
    let kind = col::<StringArray>(batch, "kind")?;
    let start = col::<Int64Array>(batch, "start_time_unix_nano")?;
    let end = col::<Int64Array>(batch, "end_time_unix_nano")?;
    let status_code = col::<StringArray>(batch, "status_code")?;
    let status_message = col::<StringArray>(batch, "status_message")?;
    let service = col::<StringArray>(batch, "service_name")?;
    let attrs = col::<MapArray>(batch, "attributes")?;
    let attr_types = col::<MapArray>(batch, "attribute_types")?;
    let dropped_attrs = col::<Int64Array>(batch, "dropped_attributes_count")?;
    let events = batch
        .column_by_name("events")
        .map(|c| c.as_list::<i32>())
        .ok_or_else(|| QueryError::Schema("column events is missing".into()))?;
    let dropped_events = col::<Int64Array>(batch, "dropped_events_count")?;
    let links = batch
        .column_by_name("links")
        .map(|c| c.as_list::<i32>())
        .ok_or_else(|| QueryError::Schema("column links is missing".into()))?;
    let dropped_links = col::<Int64Array>(batch, "dropped_links_count")?;
    let rattrs = col::<MapArray>(batch, "resource_attributes")?;
    let rtypes = col::<MapArray>(batch, "resource_attribute_types")?;
    let rdropped = col::<Int64Array>(batch, "resource_dropped_attributes_count")?;
    let rschema = col::<StringArray>(batch, "resource_schema_url")?;
    let scope_name = col::<StringArray>(batch, "scope_name")?;
    let scope_version = col::<StringArray>(batch, "scope_version")?;
    let sattrs = col::<MapArray>(batch, "scope_attributes")?;
    let stypes = col::<MapArray>(batch, "scope_attribute_types")?;
    let sdropped = col::<Int64Array>(batch, "scope_dropped_attributes_count")?;
    let sschema = col::<StringArray>(batch, "scope_schema_url")?;
    let ingest = col::<Int64Array>(batch, "ingest_time_unix_nano")?;

    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        let ev_rows = events.value(i);
        let ev = ev_rows.as_struct();
        let mut span_events = Vec::with_capacity(ev.len());
        if !ev.is_empty() {
            let t = ev
                .column_by_name("time_unix_nano")
                .map(|c| c.as_primitive::<Int64Type>());
            let n = field::<StringArray>(ev, "name")?;
            let a = field::<MapArray>(ev, "attributes")?;
            let at = field::<MapArray>(ev, "attribute_types")?;
            let d = field::<Int64Array>(ev, "dropped_attributes_count")?;
            for j in 0..ev.len() {
                span_events.push(Event {
                    time_unix_nano: t.map(|t| u64_of(t.value(j))).unwrap_or(0),
                    name: n.value(j).to_string(),
                    attributes: key_values(a, at, j),
                    dropped_attributes_count: d.value(j) as u32,
                });
            }
        }
        let ln_rows = links.value(i);
        let ln = ln_rows.as_struct();
        let mut span_links = Vec::with_capacity(ln.len());
        if !ln.is_empty() {
            let t = field::<StringArray>(ln, "trace_id")?;
            let s = field::<StringArray>(ln, "span_id")?;
            let ts = field::<StringArray>(ln, "trace_state")?;
            let f = field::<Int64Array>(ln, "flags")?;
            let a = field::<MapArray>(ln, "attributes")?;
            let at = field::<MapArray>(ln, "attribute_types")?;
            let d = field::<Int64Array>(ln, "dropped_attributes_count")?;
            for j in 0..ln.len() {
                span_links.push(Link {
                    trace_id: id_bytes(t.value(j), 16),
                    span_id: id_bytes(s.value(j), 8),
                    trace_state: str_or_empty(ts, j),
                    attributes: key_values(a, at, j),
                    dropped_attributes_count: d.value(j) as u32,
                    flags: f.value(j) as u32,
                });
            }
        }
        let span = Span {
            trace_id: id_bytes(trace_id.value(i), 16),
            span_id: id_bytes(span_id.value(i), 8),
            trace_state: str_or_empty(trace_state, i),
            parent_span_id: opt_str(parent, i)
                .map(|p| id_bytes(&p, 8))
                .unwrap_or_default(),
            flags: flags.value(i) as u32,
            name: name.value(i).to_string(),
            kind: kind_of(kind.value(i)),
            start_time_unix_nano: u64_of(start.value(i)),
            end_time_unix_nano: if end.is_null(i) {
                0
            } else {
                u64_of(end.value(i))
            },
            attributes: key_values(attrs, attr_types, i),
            dropped_attributes_count: dropped_attrs.value(i) as u32,
            events: span_events,
            dropped_events_count: dropped_events.value(i) as u32,
            links: span_links,
            dropped_links_count: dropped_links.value(i) as u32,
            status: Some(Status {
                message: str_or_empty(status_message, i),
                code: status_of(status_code.value(i)),
            }),
        };
        out.push(StoredSpan {
            trace_id: trace_id.value(i).to_string(),
            span_id: span_id.value(i).to_string(),
            parent_span_id: opt_str(parent, i),
            service_name: opt_str(service, i),
            span,
            resource: Resource {
                attributes: key_values(rattrs, rtypes, i),
                dropped_attributes_count: rdropped.value(i) as u32,
                entity_refs: Vec::new(),
            },
            resource_schema_url: str_or_empty(rschema, i),
            scope: InstrumentationScope {
                name: str_or_empty(scope_name, i),
                version: str_or_empty(scope_version, i),
                attributes: key_values(sattrs, stypes, i),
                dropped_attributes_count: sdropped.value(i) as u32,
            },
            scope_schema_url: str_or_empty(sschema, i),
            ingest_time_unix_nano: ingest.value(i),
        });
    }
    Ok(out)
}

/// One row per `(trace_id, span_id)`: a span with a real end beats a running or auto-closed
/// copy; otherwise the newest wins. The result is ordered by start time.
pub fn dedupe(spans: Vec<StoredSpan>) -> Vec<StoredSpan> {
    let mut best: HashMap<(String, String), StoredSpan> = HashMap::with_capacity(spans.len());
    for s in spans {
        let key = (s.trace_id.clone(), s.span_id.clone());
        match best.get(&key) {
            Some(cur) if rank(cur) >= rank(&s) => {}
            _ => {
                best.insert(key, s);
            }
        }
    }
    let mut out: Vec<StoredSpan> = best.into_values().collect();
    out.sort_by(|a, b| {
        (a.span.start_time_unix_nano, &a.span_id).cmp(&(b.span.start_time_unix_nano, &b.span_id))
    });
    out
}

fn rank(s: &StoredSpan) -> (bool, i64) {
    (!s.is_running() && !s.auto_closed(), s.ingest_time_unix_nano)
}

/// Group spans back into OTLP `ResourceSpans` (one per resource and scope, in first-seen order).
pub fn to_resource_spans(spans: &[StoredSpan]) -> Vec<ResourceSpans> {
    let mut out: Vec<ResourceSpans> = Vec::new();
    for s in spans {
        let rs = match out.iter_mut().position(|r| {
            r.resource.as_ref() == Some(&s.resource) && r.schema_url == s.resource_schema_url
        }) {
            Some(i) => &mut out[i],
            None => {
                out.push(ResourceSpans {
                    resource: Some(s.resource.clone()),
                    scope_spans: Vec::new(),
                    schema_url: s.resource_schema_url.clone(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        let ss =
            match rs.scope_spans.iter_mut().position(|x| {
                x.scope.as_ref() == Some(&s.scope) && x.schema_url == s.scope_schema_url
            }) {
                Some(i) => &mut rs.scope_spans[i],
                None => {
                    rs.scope_spans.push(ScopeSpans {
                        scope: Some(s.scope.clone()),
                        spans: Vec::new(),
                        schema_url: s.scope_schema_url.clone(),
                    });
                    rs.scope_spans.last_mut().expect("just pushed")
                }
            };
        ss.spans.push(s.span.clone());
    }
    out
}
