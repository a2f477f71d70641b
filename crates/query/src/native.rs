//! The native trace API (`proto/trace.proto`, package `trace`), served on the OTLP gRPC port.
//!
//! `RecordSpan` turns a native span into an OTLP span and admits it through the same intake as
//! OTLP requests, so it takes the same pipelines into the same lake; `QuerySpans` and `GetTrace`
//! read the lake (files and live tail); `EndTrace` closes the trace's running spans by recording
//! closed copies, which queries prefer over the running ones.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as otlp;
use spanlake_core::ids::id_from_text;
use spanlake_core::{Batch, Intake, IntakeError, Reservation};
use spanlake_exporter::attributes::text_of;
use tonic::{Request, Response, Status};

use spanlake_processor::lifecycle::{Reason, derived_status, mark_closed};

use crate::QueryEngine;
use crate::events::{StoredEvent, TraceInfo};
use crate::http::params::{sql_str, tag_condition};
use crate::rows::{StoredSpan, stored_spans, to_resource_spans};
use crate::tree::tree_order;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use spanlake_exporter::parquet::logs::{TRACE_END, TRACE_START};

pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("trace");

    /// The encoded descriptors of `trace.proto`, for gRPC reflection.
    pub const DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/trace_descriptor.bin"));
}

/// Attribute keys the richer span fields are stored under (see docs/native-api.md).
pub mod keys {
    pub const SESSION_ID: &str = "session.id";
    pub const SESSION_NAME: &str = "session.name";
    pub const TAGS: &str = "tags";
    pub const INPUT: &str = "input.value";
    pub const OUTPUT: &str = "output.value";
    pub const SIGNAL_PREFIX: &str = "signal.";
    pub const CONTENT_TYPE: &str = "content.type";
    pub const PROVIDER: &str = "llm.provider";
    pub const MODEL: &str = "llm.model";
    pub const COST: &str = "llm.cost_usd";
    pub const EXPECTED: &str = "expected.value";
}

/// The scope native spans are recorded under.
pub const SCOPE_NAME: &str = "spanlake.native";

pub struct TraceApi {
    intake: Intake,
    engine: Option<QueryEngine>,
}

impl TraceApi {
    pub fn new(intake: Intake, engine: Option<QueryEngine>) -> Self {
        TraceApi { intake, engine }
    }

    fn engine(&self) -> Result<&QueryEngine, Status> {
        self.engine.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this collector writes no lake to query: add a parquet exporter and service.query",
            )
        })
    }

    /// Room for a request of this size, asked before it is turned into a batch.
    fn reserve(&self, request: &impl prost::Message) -> Result<Reservation, Status> {
        self.intake.reserve(request.encoded_len()).map_err(refused)
    }

    /// Admit the batch made from a request, holding the request's reservation with it, and
    /// wait until its contents are as safe as the pipeline makes them.
    async fn admit(&self, reservation: Reservation, mut batch: Batch) -> Result<(), Status> {
        batch.add_guard(std::sync::Arc::new(reservation));
        self.intake.admit(batch).await.map_err(refused)
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string_kvs(map: &std::collections::HashMap<String, String>) -> Vec<KeyValue> {
    let sorted: BTreeMap<&String, &String> = map.iter().collect();
    sorted
        .into_iter()
        .map(|(k, v)| kv(k, Value::StringValue(v.clone())))
        .collect()
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A native span as OTLP, its richer fields as attributes.
pub fn to_otlp(span: pb::Span) -> otlp::ResourceSpans {
    let mut attributes = string_kvs(&span.attributes);
    let mut put = |key: &str, v: Value| {
        attributes.retain(|a| a.key != key);
        attributes.push(kv(key, v));
    };
    if !span.session_id.is_empty() {
        put(keys::SESSION_ID, Value::StringValue(span.session_id));
    }
    if !span.session_name.is_empty() {
        put(keys::SESSION_NAME, Value::StringValue(span.session_name));
    }
    if !span.tags.is_empty() {
        let values = span
            .tags
            .into_iter()
            .map(|t| AnyValue {
                value: Some(Value::StringValue(t)),
            })
            .collect();
        put(keys::TAGS, Value::ArrayValue(ArrayValue { values }));
    }
    if !span.input.is_empty() {
        put(keys::INPUT, Value::StringValue(span.input));
    }
    if !span.output.is_empty() {
        put(keys::OUTPUT, Value::StringValue(span.output));
    }
    let signals: BTreeMap<String, f64> = span.signals.into_iter().collect();
    for (name, v) in signals {
        put(
            &format!("{}{name}", keys::SIGNAL_PREFIX),
            Value::DoubleValue(v),
        );
    }
    if let Some(c) = span.content {
        if !c.r#type.is_empty() {
            put(keys::CONTENT_TYPE, Value::StringValue(c.r#type));
        }
        if !c.provider.is_empty() {
            put(keys::PROVIDER, Value::StringValue(c.provider));
        }
        if !c.model.is_empty() {
            put(keys::MODEL, Value::StringValue(c.model));
        }
        if c.cost != 0.0 {
            put(keys::COST, Value::DoubleValue(c.cost));
        }
        if !c.expected.is_empty() {
            put(keys::EXPECTED, Value::StringValue(c.expected));
        }
    }
    let events = span
        .events
        .into_iter()
        .map(|e| otlp::span::Event {
            time_unix_nano: e.time_unix_nano,
            name: e.name,
            attributes: string_kvs(&e.attributes),
            dropped_attributes_count: 0,
        })
        .collect();
    let status = span.status.map(|s| otlp::Status {
        code: s.code,
        message: s.message,
    });
    let out = otlp::Span {
        trace_id: id_from_text(&span.trace_id, 16),
        span_id: id_from_text(&span.span_id, 8),
        parent_span_id: if span.parent_span_id.is_empty() {
            Vec::new()
        } else {
            id_from_text(&span.parent_span_id, 8)
        },
        name: span.name,
        kind: span.kind,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        attributes,
        events,
        status,
        ..Default::default()
    };
    otlp::ResourceSpans {
        resource: Some(Resource {
            attributes: span
                .resource
                .map(|r| string_kvs(&r.attributes))
                .unwrap_or_default(),
            ..Default::default()
        }),
        scope_spans: vec![otlp::ScopeSpans {
            scope: Some(InstrumentationScope {
                name: SCOPE_NAME.into(),
                ..Default::default()
            }),
            spans: vec![out],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn text(v: Option<&AnyValue>) -> String {
    let mut s = String::new();
    text_of(v.and_then(|v| v.value.as_ref()), &mut s);
    s
}

/// A stored span as a native span: attributes as text, the documented keys back in their fields.
pub fn to_native(s: &StoredSpan) -> pb::Span {
    let mut out = pb::Span {
        trace_id: s.trace_id.clone(),
        span_id: s.span_id.clone(),
        parent_span_id: s.parent_span_id.clone().unwrap_or_default(),
        name: s.span.name.clone(),
        kind: s.span.kind,
        start_time_unix_nano: s.span.start_time_unix_nano,
        end_time_unix_nano: s.span.end_time_unix_nano,
        status: s.span.status.as_ref().map(|st| pb::Status {
            code: st.code,
            message: st.message.clone(),
        }),
        resource: Some(pb::Resource {
            attributes: s
                .resource
                .attributes
                .iter()
                .map(|a| (a.key.clone(), text(a.value.as_ref())))
                .collect(),
        }),
        events: s
            .span
            .events
            .iter()
            .map(|e| pb::Event {
                name: e.name.clone(),
                time_unix_nano: e.time_unix_nano,
                attributes: e
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), text(a.value.as_ref())))
                    .collect(),
            })
            .collect(),
        ..Default::default()
    };
    let mut content = pb::Content::default();
    for a in &s.span.attributes {
        let value = a.value.as_ref().and_then(|v| v.value.as_ref());
        match (a.key.as_str(), value) {
            (keys::SESSION_ID, Some(Value::StringValue(v))) => out.session_id = v.clone(),
            (keys::SESSION_NAME, Some(Value::StringValue(v))) => out.session_name = v.clone(),
            (keys::TAGS, Some(Value::ArrayValue(arr))) => {
                out.tags = arr.values.iter().map(|v| text(Some(v))).collect()
            }
            (keys::INPUT, Some(Value::StringValue(v))) => out.input = v.clone(),
            (keys::OUTPUT, Some(Value::StringValue(v))) => out.output = v.clone(),
            (keys::CONTENT_TYPE, Some(Value::StringValue(v))) => content.r#type = v.clone(),
            (keys::PROVIDER, Some(Value::StringValue(v))) => content.provider = v.clone(),
            (keys::MODEL, Some(Value::StringValue(v))) => content.model = v.clone(),
            (keys::COST, Some(Value::DoubleValue(v))) => content.cost = *v,
            (keys::EXPECTED, Some(Value::StringValue(v))) => content.expected = v.clone(),
            (k, Some(Value::DoubleValue(v))) if k.starts_with(keys::SIGNAL_PREFIX) => {
                out.signals
                    .insert(k[keys::SIGNAL_PREFIX.len()..].to_string(), *v);
            }
            _ => {
                out.attributes.insert(a.key.clone(), text(a.value.as_ref()));
            }
        }
    }
    if content != pb::Content::default() {
        out.content = Some(content);
    }
    out
}

/// OpenTelemetry severity number of a level name (`INFO` → 9); 0 when unknown.
pub fn severity_number(level: &str) -> i32 {
    match level.trim().to_ascii_uppercase().as_str() {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" | "WARNING" => 13,
        "ERROR" => 17,
        "FATAL" | "CRITICAL" => 21,
        _ => 0,
    }
}

/// Attribute keys of a trace's start and end records (the `traces` table reads them).
pub mod trace_keys {
    pub const PROJECT_ID: &str = "spanlake.project_id";
    pub const REQUEST_ID: &str = "spanlake.request_id";
    pub const INPUT: &str = "spanlake.input";
    pub const CONTEXT: &str = "spanlake.context";
    pub const TAGS: &str = "spanlake.tags";
    pub const STATUS_CODE: &str = "spanlake.status_code";
    pub const STATUS_MESSAGE: &str = "spanlake.status_message";
}

/// One log record as a batch of its own, under the native scope and `service`.
fn log_batch(record: LogRecord, service: &str) -> Batch {
    let resource = (!service.is_empty()).then(|| Resource {
        attributes: vec![kv("service.name", Value::StringValue(service.to_string()))],
        ..Default::default()
    });
    Batch::logs(vec![ResourceLogs {
        resource,
        scope_logs: vec![ScopeLogs {
            scope: Some(InstrumentationScope {
                name: SCOPE_NAME.into(),
                ..Default::default()
            }),
            log_records: vec![record],
            ..Default::default()
        }],
        ..Default::default()
    }])
}

/// The trace's end, as the record the `traces` table reads.
fn end_record(trace_id: &[u8], code: i32, message: &str, end: u64) -> LogRecord {
    let mut attributes = vec![kv(
        trace_keys::STATUS_CODE,
        Value::StringValue(
            spanlake_exporter::parquet::schema::status_name(code)
                .map(str::to_string)
                .unwrap_or_else(|| code.to_string()),
        ),
    )];
    if !message.is_empty() {
        attributes.push(kv(
            trace_keys::STATUS_MESSAGE,
            Value::StringValue(message.to_string()),
        ));
    }
    LogRecord {
        time_unix_nano: end,
        observed_time_unix_nano: now_nanos(),
        trace_id: trace_id.to_vec(),
        severity_number: if code == 2 { 17 } else { 9 },
        severity_text: if code == 2 { "ERROR" } else { "INFO" }.into(),
        event_name: TRACE_END.into(),
        attributes,
        ..Default::default()
    }
}

fn to_trace_event(e: &StoredEvent) -> pb::TraceEvent {
    let mut attributes = std::collections::HashMap::new();
    let mut text = String::new();
    for a in &e.attributes {
        text_of(a.value.as_ref().and_then(|v| v.value.as_ref()), &mut text);
        attributes.insert(a.key.clone(), text.clone());
    }
    pb::TraceEvent {
        span_id: e.span_id.clone().unwrap_or_default(),
        time_unix_nano: e.time_unix_nano.max(0) as u64,
        level: e.level(),
        name: e.name.clone(),
        body: e.body.clone().unwrap_or_default(),
        attributes,
    }
}

fn to_pb_info(i: TraceInfo) -> pb::TraceInfo {
    let tags: Vec<String> = i
        .tags
        .as_deref()
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    pb::TraceInfo {
        project_id: i.project_id.unwrap_or_default(),
        request_id: i.request_id.unwrap_or_default(),
        input: i.input.unwrap_or_default(),
        context: i.context.unwrap_or_default(),
        tags,
        status_code: i.status_code.unwrap_or_default(),
        status_message: i.status_message.unwrap_or_default(),
        start_time_unix_nano: i.start_time_unix_nano.unwrap_or(0).max(0) as u64,
        end_time_unix_nano: i.end_time_unix_nano.unwrap_or(0).max(0) as u64,
        root_service_name: i.root_service_name.unwrap_or_default(),
        root_name: i.root_name.unwrap_or_default(),
        span_count: i.span_count.max(0) as u32,
        error_count: i.error_count.max(0) as u32,
        event_count: i.event_count.max(0) as u32,
    }
}

fn refused(e: IntakeError) -> Status {
    e.to_grpc_status()
}

fn query_failed(e: crate::QueryError) -> Status {
    Status::internal(format!("query failed: {e}"))
}

/// Ids as stored: hex ids in lowercase, free-form ids as given.
fn stored_id(id: &str) -> String {
    spanlake_core::ids::id_text(&id_from_text(id.trim(), 16))
}

#[tonic::async_trait]
impl pb::trace_server::Trace for TraceApi {
    async fn record_span(
        &self,
        request: Request<pb::Span>,
    ) -> Result<Response<pb::RecordSpanResponse>, Status> {
        let span = request.into_inner();
        if span.trace_id.trim().is_empty() {
            return Err(Status::invalid_argument("trace_id is required"));
        }
        if span.span_id.trim().is_empty() {
            return Err(Status::invalid_argument("span_id is required"));
        }
        let reservation = self.reserve(&span)?;
        self.admit(reservation, Batch::spans(vec![to_otlp(span)]))
            .await?;
        Ok(Response::new(pb::RecordSpanResponse { success: true }))
    }

    async fn query_spans(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let engine = self.engine()?;
        let q = request.into_inner();
        let f = q.filter.unwrap_or_default();
        let mut conds = vec!["TRUE".to_string()];
        if !f.trace_id.trim().is_empty() {
            conds.push(format!("trace_id = {}", sql_str(&stored_id(&f.trace_id))));
        }
        if !f.service_name.is_empty() {
            conds.push(format!("service_name = {}", sql_str(&f.service_name)));
        }
        if !f.name.is_empty() {
            conds.push(format!("name = {}", sql_str(&f.name)));
        }
        if let Some(code) = f.status_code {
            let name = match code {
                0 => "UNSET".to_string(),
                1 => "OK".to_string(),
                2 => "ERROR".to_string(),
                other => {
                    return Err(Status::invalid_argument(format!(
                        "status_code {other} is not 0 (UNSET), 1 (OK) or 2 (ERROR)"
                    )));
                }
            };
            conds.push(format!("status_code = '{name}'"));
        }
        if let Some(r) = f.start_time {
            if r.from_unix_nano > 0 {
                conds.push(format!(
                    "start_time_unix_nano >= {}",
                    r.from_unix_nano.min(i64::MAX as u64)
                ));
            }
            if r.to_unix_nano > 0 {
                conds.push(format!(
                    "start_time_unix_nano < {}",
                    r.to_unix_nano.min(i64::MAX as u64)
                ));
            }
        }
        let attrs: BTreeMap<String, String> = f.attributes.into_iter().collect();
        for (k, v) in &attrs {
            conds.push(tag_condition(k, v));
        }
        let limit = if q.limit == 0 {
            1000
        } else {
            q.limit.min(100_000)
        };
        let sql = format!(
            "SELECT * FROM spans WHERE {} ORDER BY start_time_unix_nano, span_id LIMIT {limit}",
            conds.join(" AND ")
        );
        let (_, batches) = engine.sql(&sql).await.map_err(query_failed)?;
        let mut spans = Vec::new();
        for b in &batches {
            spans.extend(stored_spans(b).map_err(query_failed)?.iter().map(to_native));
        }
        Ok(Response::new(pb::QueryResponse { spans }))
    }

    async fn end_trace(
        &self,
        request: Request<pb::EndTraceRequest>,
    ) -> Result<Response<pb::EndTraceResponse>, Status> {
        let req = request.into_inner();
        if req.trace_id.trim().is_empty() {
            return Err(Status::invalid_argument("trace_id is required"));
        }
        let engine = self.engine()?;
        let id = stored_id(&req.trace_id);
        let running_before = engine
            .trace(&id)
            .await
            .map_err(query_failed)?
            .into_iter()
            .filter(|s| s.is_running())
            .count();
        let end = if req.end_time_unix_nano == 0 {
            now_nanos()
        } else {
            req.end_time_unix_nano
        };
        let (code, message) = req
            .status
            .map(|s| (s.code, s.message))
            .unwrap_or((0, String::new()));
        // In the pipeline first: the lifecycle processor closes the running spans it holds, and
        // this call returns once their closed copies are stored.
        let control = spanlake_core::TraceEnd {
            trace_id: id_from_text(&id, 16),
            status: otlp::Status {
                code,
                message: message.clone(),
            },
            end_time_unix_nano: end,
        };
        self.intake
            .admit(Batch::end_trace(control))
            .await
            .map_err(refused)?;
        // The trace's status and end, for the `traces` table.
        self.intake
            .admit(log_batch(
                end_record(&id_from_text(&id, 16), code, &message, end),
                "",
            ))
            .await
            .map_err(refused)?;
        // Then whatever still runs in the lake (no lifecycle processor in the pipeline, or spans
        // recorded before a restart) is closed the same way.
        let status = derived_status(Some(&otlp::Status { code, message }), "trace");
        let mut closed: Vec<StoredSpan> = engine
            .trace(&id)
            .await
            .map_err(query_failed)?
            .into_iter()
            .filter(|s| s.is_running())
            .collect();
        for s in closed.iter_mut() {
            mark_closed(&mut s.span, end, status.clone(), Reason::TraceEnd);
        }
        if !closed.is_empty() {
            self.intake
                .admit(Batch::spans(to_resource_spans(&closed)))
                .await
                .map_err(refused)?;
        }
        Ok(Response::new(pb::EndTraceResponse {
            success: true,
            closed_spans: running_before as u32,
        }))
    }

    async fn get_trace(
        &self,
        request: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::GetTraceResponse>, Status> {
        let req = request.into_inner();
        if req.trace_id.trim().is_empty() {
            return Err(Status::invalid_argument("trace_id is required"));
        }
        let engine = self.engine()?;
        let id = stored_id(&req.trace_id);
        let spans = engine.trace(&id).await.map_err(query_failed)?;
        if spans.is_empty() {
            return Err(Status::not_found(format!(
                "trace {} not found",
                req.trace_id.trim()
            )));
        }
        let nodes = tree_order(&spans)
            .into_iter()
            .map(|n| pb::TreeSpan {
                span: Some(to_native(&spans[n.index])),
                depth: n.depth as u32,
                orphan: n.orphan,
            })
            .collect();
        let events = engine
            .events(&id)
            .await
            .map_err(query_failed)?
            .iter()
            .map(to_trace_event)
            .collect();
        let info = engine
            .trace_info(&id)
            .await
            .map_err(query_failed)?
            .map(to_pb_info);
        Ok(Response::new(pb::GetTraceResponse {
            trace_id: id,
            spans: nodes,
            events,
            info,
        }))
    }

    async fn start_trace(
        &self,
        request: Request<pb::StartTraceRequest>,
    ) -> Result<Response<pb::StartTraceResponse>, Status> {
        let req = request.into_inner();
        if req.trace_id.trim().is_empty() {
            return Err(Status::invalid_argument("trace_id is required"));
        }
        let reservation = self.reserve(&req)?;
        let id = stored_id(&req.trace_id);
        let mut attributes = string_kvs(&req.attributes);
        let mut put = |key: &str, v: &str| {
            if !v.is_empty() {
                attributes.retain(|a| a.key != key);
                attributes.push(kv(key, Value::StringValue(v.to_string())));
            }
        };
        put(trace_keys::PROJECT_ID, &req.project_id);
        put(trace_keys::REQUEST_ID, &req.request_id);
        put(trace_keys::INPUT, &req.input);
        put(trace_keys::CONTEXT, &req.context);
        if !req.tags.is_empty() {
            attributes.retain(|a| a.key != trace_keys::TAGS);
            attributes.push(kv(
                trace_keys::TAGS,
                Value::ArrayValue(ArrayValue {
                    values: req
                        .tags
                        .iter()
                        .map(|t| AnyValue {
                            value: Some(Value::StringValue(t.clone())),
                        })
                        .collect(),
                }),
            ));
        }
        let now = now_nanos();
        let record = LogRecord {
            time_unix_nano: if req.start_time_unix_nano == 0 {
                now
            } else {
                req.start_time_unix_nano
            },
            observed_time_unix_nano: now,
            trace_id: id_from_text(&id, 16),
            severity_number: 9,
            severity_text: "INFO".into(),
            event_name: TRACE_START.into(),
            attributes,
            ..Default::default()
        };
        self.admit(reservation, log_batch(record, &req.service_name))
            .await?;
        Ok(Response::new(pb::StartTraceResponse {
            success: true,
            trace_id: id,
        }))
    }

    async fn record_event(
        &self,
        request: Request<pb::RecordEventRequest>,
    ) -> Result<Response<pb::RecordEventResponse>, Status> {
        let req = request.into_inner();
        if req.trace_id.trim().is_empty() {
            return Err(Status::invalid_argument("trace_id is required"));
        }
        if req.name.trim().is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        let reservation = self.reserve(&req)?;
        let id = stored_id(&req.trace_id);
        let span = req.span_id.trim();
        let now = now_nanos();
        let level = req.level.trim().to_ascii_uppercase();
        let record = LogRecord {
            time_unix_nano: if req.time_unix_nano == 0 {
                now
            } else {
                req.time_unix_nano
            },
            observed_time_unix_nano: now,
            trace_id: id_from_text(&id, 16),
            span_id: if span.is_empty() {
                Vec::new()
            } else {
                id_from_text(span, 8)
            },
            severity_number: severity_number(&level),
            severity_text: if level.is_empty() {
                "INFO".into()
            } else {
                level
            },
            event_name: req.name,
            attributes: string_kvs(&req.attributes),
            ..Default::default()
        };
        self.admit(reservation, log_batch(record, "")).await?;
        Ok(Response::new(pb::RecordEventResponse { success: true }))
    }
}

/// The native API with gRPC health checking and server reflection, ready to add to a server.
pub fn routes(
    intake: Intake,
    engine: Option<QueryEngine>,
) -> Result<tonic::service::Routes, String> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::DESCRIPTOR)
        .register_encoded_file_descriptor_set(opentelemetry_proto::DESCRIPTORS)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| format!("gRPC reflection: {e}"))?;
    tokio::spawn(async move {
        health_reporter
            .set_serving::<pb::trace_server::TraceServer<TraceApi>>()
            .await;
        health_reporter
            .set_service_status(
                "opentelemetry.proto.collector.trace.v1.TraceService",
                tonic_health::ServingStatus::Serving,
            )
            .await;
        // keep the reporter (and so the statuses) alive as long as the server runs
        std::future::pending::<()>().await;
    });
    Ok(
        tonic::service::Routes::new(pb::trace_server::TraceServer::new(TraceApi::new(
            intake, engine,
        )))
        .add_service(health)
        .add_service(reflection),
    )
}

#[cfg(test)]
mod fuzz {
    //! Bounded fuzzing of the native API's input: any bytes as a `Span`, any strings as ids.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn any_bytes_as_a_native_span(data in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(span) = <pb::Span as prost::Message>::decode(data.as_slice()) {
                let rs = to_otlp(span);
                prop_assert_eq!(rs.scope_spans.len(), 1);
            }
        }

        #[test]
        fn any_text_as_an_id(text in "\\PC{0,80}") {
            let _ = stored_id(&text);
            let _ = id_from_text(&text, 8);
        }
    }
}
