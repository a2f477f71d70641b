//! Spans in the JSON shape the Jaeger UI reads (`/api/traces` of jaeger-query).

use std::collections::BTreeMap;

use base64::Engine as _;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde_json::{Value as Json, json};
use spanlake_exporter::attributes::json_of;

use crate::rows::StoredSpan;

fn tag(key: &str, value: Option<&Value>) -> Json {
    let (ty, v) = match value {
        Some(Value::StringValue(s)) => ("string", json!(s)),
        Some(Value::BoolValue(b)) => ("bool", json!(b)),
        Some(Value::IntValue(i)) => ("int64", json!(i)),
        Some(Value::DoubleValue(d)) => ("float64", json!(d)),
        Some(Value::BytesValue(b)) => (
            "binary",
            json!(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
        other => ("string", json!(json_of(other).to_string())),
    };
    json!({ "key": key, "type": ty, "value": v })
}

fn tags(kvs: &[KeyValue]) -> Vec<Json> {
    kvs.iter()
        .map(|kv| tag(&kv.key, kv.value.as_ref().and_then(|v| v.value.as_ref())))
        .collect()
}

const KINDS: [&str; 6] = ["", "internal", "server", "client", "producer", "consumer"];

/// One trace in Jaeger's shape.
pub fn trace(trace_id: &str, spans: &[StoredSpan]) -> Json {
    let mut processes: BTreeMap<String, Json> = BTreeMap::new();
    let mut process_of: Vec<(Vec<KeyValue>, String)> = Vec::new();
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        let pid = match process_of
            .iter()
            .find(|(attrs, _)| *attrs == s.resource.attributes)
        {
            Some((_, pid)) => pid.clone(),
            None => {
                let pid = format!("p{}", process_of.len() + 1);
                let service = s
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "unknown_service".into());
                let rtags: Vec<Json> = tags(&s.resource.attributes)
                    .into_iter()
                    .filter(|t| t["key"] != "service.name")
                    .collect();
                processes.insert(
                    pid.clone(),
                    json!({ "serviceName": service, "tags": rtags }),
                );
                process_of.push((s.resource.attributes.clone(), pid.clone()));
                pid
            }
        };
        let span = &s.span;
        let mut stags = tags(&span.attributes);
        if let Some(k) = KINDS.get(span.kind as usize).filter(|k| !k.is_empty()) {
            stags.push(json!({ "key": "span.kind", "type": "string", "value": k }));
        }
        let status = span.status.as_ref();
        match status.map(|s| s.code).unwrap_or(0) {
            2 => {
                stags.push(json!({ "key": "error", "type": "bool", "value": true }));
                stags
                    .push(json!({ "key": "otel.status_code", "type": "string", "value": "ERROR" }));
            }
            1 => stags.push(json!({ "key": "otel.status_code", "type": "string", "value": "OK" })),
            _ => {}
        }
        if let Some(msg) = status.map(|s| s.message.as_str()).filter(|m| !m.is_empty()) {
            stags.push(json!({ "key": "otel.status_description", "type": "string", "value": msg }));
        }
        if !span.trace_state.is_empty() {
            stags.push(
                json!({ "key": "w3c.tracestate", "type": "string", "value": span.trace_state }),
            );
        }
        let mut references = Vec::new();
        if let Some(p) = &s.parent_span_id {
            references.push(json!({ "refType": "CHILD_OF", "traceID": trace_id, "spanID": p }));
        }
        for l in &span.links {
            references.push(json!({
                "refType": "FOLLOWS_FROM",
                "traceID": spanlake_core::ids::id_text(&l.trace_id),
                "spanID": spanlake_core::ids::id_text(&l.span_id),
            }));
        }
        let logs: Vec<Json> = span
            .events
            .iter()
            .map(|e| {
                let mut fields = vec![json!({ "key": "event", "type": "string", "value": e.name })];
                fields.extend(tags(&e.attributes));
                json!({ "timestamp": e.time_unix_nano / 1000, "fields": fields })
            })
            .collect();
        let start_us = span.start_time_unix_nano / 1000;
        let duration_us = span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano)
            / 1000;
        let warnings: Json = if s.is_running() {
            json!(["span has not ended"])
        } else {
            Json::Null
        };
        out.push(json!({
            "traceID": trace_id,
            "spanID": s.span_id,
            "flags": span.flags & 0xff,
            "operationName": span.name,
            "references": references,
            "startTime": start_us,
            "duration": if s.is_running() { 0 } else { duration_us },
            "tags": stags,
            "logs": logs,
            "processID": pid,
            "warnings": warnings,
        }));
    }
    json!({ "traceID": trace_id, "spans": out, "processes": processes, "warnings": Json::Null })
}
