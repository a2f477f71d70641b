//! The debug exporter: what a pipeline carries, as JSON lines on stdout.

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};
use spanlake_core::ids::id_text;
use spanlake_core::{Exporter, Receiver, Signal};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use crate::attributes::json_of;
use crate::parquet::schema::{kind_name, status_name};

/// `exporters: debug:`.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DebugConfig {
    /// `basic`: one line per batch with its span count; `normal` (default): one line per span
    /// with its main fields and attributes; `detailed`: one line per span with its resource,
    /// scope and every field in OTLP JSON.
    #[serde(default)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    Basic,
    #[default]
    Normal,
    Detailed,
}

pub struct DebugExporter {
    name: String,
    config: DebugConfig,
}

impl DebugExporter {
    pub fn new(name: impl Into<String>, config: DebugConfig) -> Self {
        DebugExporter {
            name: name.into(),
            config,
        }
    }
}

fn attrs_json(kvs: &[KeyValue]) -> Json {
    Json::Object(
        kvs.iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    json_of(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                )
            })
            .collect::<Map<_, _>>(),
    )
}

/// The lines for one batch, each ending in a newline.
pub fn render(groups: &[ResourceSpans], verbosity: Verbosity, exporter: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if verbosity == Verbosity::Basic {
        let n: usize = groups
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let _ = serde_json::to_writer(&mut out, &json!({ "exporter": exporter, "spans": n }));
        out.push(b'\n');
        return out;
    }
    for rs in groups {
        let rattrs = rs
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                let line = if verbosity == Verbosity::Detailed {
                    json!({ "resource": rs.resource, "scope": ss.scope, "span": span })
                } else {
                    let service = rattrs
                        .iter()
                        .find(|kv| kv.key == "service.name")
                        .map(|kv| json_of(kv.value.as_ref().and_then(|v| v.value.as_ref())));
                    let status = span
                        .status
                        .as_ref()
                        .map(|s| (s.code, s.message.clone()))
                        .unwrap_or_default();
                    json!({
                        "trace_id": id_text(&span.trace_id),
                        "span_id": id_text(&span.span_id),
                        "parent_span_id": if span.parent_span_id.is_empty() { Json::Null } else { Json::String(id_text(&span.parent_span_id)) },
                        "name": span.name,
                        "kind": kind_name(span.kind).map(str::to_string).unwrap_or_else(|| span.kind.to_string()),
                        "service_name": service,
                        "start_time_unix_nano": span.start_time_unix_nano,
                        "end_time_unix_nano": span.end_time_unix_nano,
                        "duration_ns": span.end_time_unix_nano.checked_sub(span.start_time_unix_nano).filter(|_| span.end_time_unix_nano != 0),
                        "status_code": status_name(status.0).map(str::to_string).unwrap_or_else(|| status.0.to_string()),
                        "status_message": status.1,
                        "attributes": attrs_json(&span.attributes),
                        "events": span.events.len(),
                        "links": span.links.len(),
                    })
                };
                let _ = serde_json::to_writer(&mut out, &line);
                out.push(b'\n');
            }
        }
    }
    out
}

/// Log records as JSON lines: a count (`basic`), one line per record with its trace, level,
/// name, body and attributes (`normal`), or the OTLP JSON of each record (`detailed`).
fn render_logs(groups: &[ResourceLogs], verbosity: Verbosity, name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if verbosity == Verbosity::Basic {
        let n = spanlake_core::batch::count_logs(groups);
        let _ = serde_json::to_writer(&mut out, &json!({"exporter": name, "log_records": n}));
        out.push(b'\n');
        return out;
    }
    let mut text = String::new();
    for rl in groups {
        for sl in &rl.scope_logs {
            for rec in &sl.log_records {
                let line = if verbosity == Verbosity::Detailed {
                    json!({"exporter": name, "log_record": rec})
                } else {
                    let body = rec.body.as_ref().map(|b| {
                        crate::attributes::text_of(b.value.as_ref(), &mut text);
                        text.clone()
                    });
                    json!({
                        "exporter": name,
                        "trace_id": (!rec.trace_id.is_empty()).then(|| id_text(&rec.trace_id)),
                        "span_id": (!rec.span_id.is_empty()).then(|| id_text(&rec.span_id)),
                        "time_unix_nano": rec.time_unix_nano,
                        "severity_text": rec.severity_text,
                        "severity_number": rec.severity_number,
                        "event_name": rec.event_name,
                        "body": body,
                        "attributes": attrs_json(&rec.attributes),
                    })
                };
                let _ = serde_json::to_writer(&mut out, &line);
                out.push(b'\n');
            }
        }
    }
    out
}

impl Exporter for DebugExporter {
    fn start(self: Box<Self>, mut input: Receiver) -> JoinHandle<Result<(), String>> {
        tokio::spawn(async move {
            let mut stdout = tokio::io::stdout();
            while let Some(batch) = input.recv().await {
                let (signal, guards) = batch.into_signal();
                let bytes = match &signal {
                    Signal::Spans(blocks) => {
                        let groups: Vec<_> = blocks.iter().flat_map(|b| b.to_prost()).collect();
                        render(&groups, self.config.verbosity, &self.name)
                    }
                    Signal::Logs(groups) => render_logs(groups, self.config.verbosity, &self.name),
                    Signal::EndTrace(_) => Vec::new(),
                };
                drop(guards);
                if let Err(e) = stdout.write_all(&bytes).await {
                    // stdout closed (e.g. a pipe reader went away): keep draining, say it once.
                    tracing::warn!(exporter = %self.name, error = %e, "debug: cannot write to stdout");
                }
            }
            let _ = stdout.flush().await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    #[test]
    fn normal_is_one_json_line_per_span() {
        let span = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![1; 8],
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: 10,
            end_time_unix_nano: 25,
            attributes: vec![KeyValue {
                key: "n".into(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(3)),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let groups = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span.clone(), span],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let out = String::from_utf8(render(&groups, Verbosity::Normal, "debug")).expect("utf8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        let v: Json = serde_json::from_str(lines[0]).expect("json");
        assert_eq!(v["trace_id"], "abababababababababababababababab");
        assert_eq!(v["kind"], "SERVER");
        assert_eq!(v["duration_ns"], 15);
        assert_eq!(v["attributes"]["n"], 3);
        let detailed =
            String::from_utf8(render(&groups, Verbosity::Detailed, "debug")).expect("utf8");
        let v: Json = serde_json::from_str(detailed.lines().next().expect("a line")).expect("json");
        assert_eq!(v["span"]["traceId"], "abababababababababababababababab");
        let basic = String::from_utf8(render(&groups, Verbosity::Basic, "debug")).expect("utf8");
        assert_eq!(basic, "{\"exporter\":\"debug\",\"spans\":2}\n");
    }
}
