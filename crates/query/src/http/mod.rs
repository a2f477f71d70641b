//! The HTTP query API (default `127.0.0.1:3200`):
//!
//! - Tempo-compatible, for Grafana's Tempo data source: `/api/echo`, `/api/traces/{id}`,
//!   `/api/v2/traces/{id}` (OTLP JSON, or protobuf for `Accept: application/protobuf`),
//!   `/api/search`, `/api/search/tags`, `/api/search/tag/{name}/values`;
//! - Jaeger-compatible under `/jaeger/api/`, in the Jaeger UI's JSON shape;
//! - `POST /api/sql` (read-only) returning rows as JSON; `/healthz`.
//!
//! Unknown traces are 404; malformed ids and parameters are 400 with a message.

mod jaeger;
pub mod params;

use std::collections::HashMap;
use std::net::SocketAddr;

use arrow::array::{Array, AsArray, RecordBatch};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use serde_json::{Value as Json, json};
use spanlake_core::CancellationToken;
use tokio::task::JoinHandle;

use crate::rows::{StoredSpan, to_resource_spans};
use crate::{QueryEngine, QueryError};
use params::{go_duration, logfmt, sql_str, tag_condition};

type Answer = Result<Response, ApiError>;

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::ReadOnly(_) | QueryError::DataFusion(_) => {
                ApiError(StatusCode::BAD_REQUEST, e.to_string())
            }
            _ => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// Bind and serve until `shutdown`.
pub fn serve(
    engine: QueryEngine,
    endpoint: &str,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), std::io::Error> {
    let listener = spanlake_core::net::bind(endpoint)?;
    let local = listener.local_addr()?;
    let app = router(engine);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "query API stopped with an error");
        }
    });
    Ok((local, task))
}

pub fn router(engine: QueryEngine) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/ready", get(|| async { "ready" }))
        .route("/api/echo", get(|| async { "echo" }))
        .route("/api/traces/{id}", get(tempo_trace_v1))
        .route("/api/v2/traces/{id}", get(tempo_trace_v2))
        .route("/api/search", get(tempo_search))
        .route("/api/search/tags", get(tempo_tags))
        .route("/api/search/tag/{name}/values", get(tempo_tag_values))
        .route("/api/sql", post(sql))
        .route("/jaeger/api/services", get(jaeger_services))
        .route(
            "/jaeger/api/services/{service}/operations",
            get(jaeger_operations),
        )
        .route("/jaeger/api/traces/{id}", get(jaeger_trace))
        .route("/jaeger/api/traces", get(jaeger_search))
        .with_state(engine)
}

async fn find_trace(
    engine: &QueryEngine,
    raw: &str,
) -> Result<(String, Vec<StoredSpan>), ApiError> {
    let id = params::trace_id(raw).map_err(bad)?;
    let mut spans = engine.trace(&id).await?;
    if spans.is_empty() && id != raw.trim() {
        spans = engine.trace(raw.trim()).await?;
    }
    if spans.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("trace {} not found", raw.trim()),
        ));
    }
    let stored = spans[0].trace_id.clone();
    // The trace's events ride on its spans: Tempo and Jaeger have no place for them otherwise.
    let events = engine.events(&stored).await?;
    crate::events::attach_events(&mut spans, &events);
    Ok((stored, spans))
}

fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/protobuf") || a.contains("application/x-protobuf"))
}

fn protobuf(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], bytes).into_response()
}

async fn tempo_trace_v1(
    State(engine): State<QueryEngine>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let (_, spans) = find_trace(&engine, &id).await?;
    let resource_spans = to_resource_spans(&spans);
    if wants_protobuf(&headers) {
        // tempopb.Trace { repeated ResourceSpans batches = 1 } is TracesData on the wire.
        return Ok(protobuf(TracesData { resource_spans }.encode_to_vec()));
    }
    Ok(axum::Json(json!({ "batches": resource_spans })).into_response())
}

async fn tempo_trace_v2(
    State(engine): State<QueryEngine>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Answer {
    let (_, spans) = find_trace(&engine, &id).await?;
    let resource_spans = to_resource_spans(&spans);
    if wants_protobuf(&headers) {
        // tempopb.TraceByIDResponse { Trace trace = 1; ... }
        let inner = TracesData { resource_spans }.encode_to_vec();
        let mut out = Vec::with_capacity(inner.len() + 8);
        prost::encoding::bytes::encode(1, &inner, &mut out);
        return Ok(protobuf(out));
    }
    Ok(
        axum::Json(json!({ "trace": { "resourceSpans": resource_spans }, "status": "COMPLETE" }))
            .into_response(),
    )
}

/// One row of a trace search.
struct Found {
    trace_id: String,
    start: i64,
    end: i64,
    root_service: Option<String>,
    root_name: Option<String>,
    spans: i64,
}

/// Traces with a span matching every condition, whose duration is within bounds, newest first.
async fn search_traces(
    engine: &QueryEngine,
    conditions: &[String],
    min: Option<u64>,
    max: Option<u64>,
    limit: usize,
) -> Result<Vec<Found>, ApiError> {
    let matched = if conditions.is_empty() {
        String::from("TRUE")
    } else {
        conditions.join(" AND ")
    };
    let mut having = vec!["TRUE".to_string()];
    if let Some(n) = min {
        having.push(format!("max(coalesce(end_time_unix_nano, start_time_unix_nano)) - min(start_time_unix_nano) >= {n}"));
    }
    if let Some(n) = max {
        having.push(format!("max(coalesce(end_time_unix_nano, start_time_unix_nano)) - min(start_time_unix_nano) <= {n}"));
    }
    let sql = format!(
        "SELECT trace_id, min(start_time_unix_nano) AS t0, \
                max(coalesce(end_time_unix_nano, start_time_unix_nano)) AS t1, \
                first_value(service_name ORDER BY parent_span_id IS NULL DESC, start_time_unix_nano) AS root_service, \
                first_value(name ORDER BY parent_span_id IS NULL DESC, start_time_unix_nano) AS root_name, \
                count(DISTINCT span_id) AS n \
         FROM spans_raw \
         WHERE trace_id IN (SELECT trace_id FROM spans_raw WHERE {matched}) \
         GROUP BY trace_id HAVING {} ORDER BY t0 DESC LIMIT {limit}",
        having.join(" AND ")
    );
    let (_, batches) = engine.sql(&sql).await?;
    let mut out = Vec::new();
    for b in &batches {
        let ids = b.column(0).as_string::<i32>();
        let t0 = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        let t1 = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
        let rs = b.column(3).as_string::<i32>();
        let rn = b.column(4).as_string::<i32>();
        let n = b.column(5).as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            out.push(Found {
                trace_id: ids.value(i).to_string(),
                start: t0.value(i),
                end: t1.value(i),
                root_service: (!rs.is_null(i)).then(|| rs.value(i).to_string()),
                root_name: (!rn.is_null(i)).then(|| rn.value(i).to_string()),
                spans: n.value(i),
            });
        }
    }
    Ok(out)
}

fn opt_param<T>(
    q: &HashMap<String, String>,
    key: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ApiError> {
    match q.get(key).map(|s| s.trim()).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(v) => parse(v).map(Some).map_err(|e| bad(format!("{key}: {e}"))),
    }
}

fn int_param(v: &str) -> Result<i64, String> {
    v.parse::<i64>()
        .map_err(|_| format!("{v:?} is not a whole number"))
}

fn limit_param(q: &HashMap<String, String>) -> Result<usize, ApiError> {
    let limit = opt_param(q, "limit", int_param)?.unwrap_or(20);
    if !(1..=10_000).contains(&limit) {
        return Err(bad(format!("limit: {limit} must be between 1 and 10000")));
    }
    Ok(limit as usize)
}

async fn tempo_search(
    State(engine): State<QueryEngine>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let mut conditions: Vec<String> = opt_param(&q, "tags", logfmt)?
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| tag_condition(k, v))
        .collect();
    if q.contains_key("q") {
        return Err(bad(
            "q: TraceQL is not supported; search with tags=key=value",
        ));
    }
    let min = opt_param(&q, "minDuration", go_duration)?.map(|d| d.as_nanos() as u64);
    let max = opt_param(&q, "maxDuration", go_duration)?.map(|d| d.as_nanos() as u64);
    if let Some(s) = opt_param(&q, "start", int_param)? {
        conditions.push(format!(
            "start_time_unix_nano >= {}",
            s.saturating_mul(1_000_000_000)
        ));
    }
    if let Some(e) = opt_param(&q, "end", int_param)? {
        conditions.push(format!(
            "start_time_unix_nano <= {}",
            e.saturating_add(1).saturating_mul(1_000_000_000)
        ));
    }
    let limit = limit_param(&q)?;
    let found = search_traces(&engine, &conditions, min, max, limit).await?;
    let traces: Vec<Json> = found
        .iter()
        .map(|f| {
            json!({
                "traceID": f.trace_id,
                "rootServiceName": f.root_service.clone().unwrap_or_else(|| "<root span not yet received>".into()),
                "rootTraceName": f.root_name.clone().unwrap_or_default(),
                "startTimeUnixNano": f.start.to_string(),
                "durationMs": (f.end - f.start) / 1_000_000,
                "spanSets": [{ "matched": f.spans, "spans": [] }],
            })
        })
        .collect();
    Ok(
        axum::Json(json!({ "traces": traces, "metrics": { "inspectedTraces": found.len() } }))
            .into_response(),
    )
}

async fn strings(engine: &QueryEngine, sql: &str) -> Result<Vec<String>, ApiError> {
    let (_, batches) = engine.sql(sql).await?;
    Ok(batches
        .iter()
        .flat_map(|b: &RecordBatch| {
            let a = b.column(0).as_string::<i32>();
            (0..b.num_rows())
                .filter(|i| !a.is_null(*i))
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect())
}

async fn tempo_tags(State(engine): State<QueryEngine>) -> Answer {
    let mut names = strings(
        &engine,
        "SELECT DISTINCT k FROM ( \
           SELECT unnest(map_keys(attributes)) AS k FROM spans_raw \
           UNION ALL SELECT unnest(map_keys(resource_attributes)) AS k FROM spans_raw) ORDER BY k",
    )
    .await?;
    for intrinsic in ["name", "status"] {
        if !names.iter().any(|n| n == intrinsic) {
            names.push(intrinsic.to_string());
        }
    }
    names.sort();
    Ok(axum::Json(json!({ "tagNames": names })).into_response())
}

async fn tempo_tag_values(State(engine): State<QueryEngine>, Path(name): Path<String>) -> Answer {
    let sql = match name.as_str() {
        "service.name" => "SELECT DISTINCT service_name FROM spans_raw ORDER BY 1".to_string(),
        "name" => "SELECT DISTINCT name FROM spans_raw ORDER BY 1".to_string(),
        "status" => "SELECT DISTINCT lower(status_code) FROM spans_raw ORDER BY 1".to_string(),
        other => {
            let k = sql_str(other);
            format!(
                "SELECT DISTINCT v FROM (SELECT attributes[{k}] AS v FROM spans_raw \
                 UNION ALL SELECT resource_attributes[{k}] AS v FROM spans_raw) WHERE v IS NOT NULL ORDER BY v LIMIT 1000"
            )
        }
    };
    let values = strings(&engine, &sql).await?;
    Ok(axum::Json(json!({ "tagValues": values })).into_response())
}

/// `POST /api/sql`: the body is the SQL (or `{"sql": "..."}`); the answer is a JSON array of rows.
async fn sql(State(engine): State<QueryEngine>, body: String) -> Answer {
    let text = match serde_json::from_str::<Json>(&body) {
        Ok(Json::Object(o)) => o
            .get("sql")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| bad("expected {\"sql\": \"SELECT ...\"}"))?,
        _ => body,
    };
    if text.trim().is_empty() {
        return Err(bad(
            "no SQL given: POST the query as the body, e.g. SELECT count(*) FROM spans",
        ));
    }
    let (_, batches) = engine.sql(&text).await?;
    let rows = crate::render::json(&batches)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], rows).into_response())
}

fn jaeger_ok(data: Json) -> Response {
    let total = data.as_array().map(|a| a.len()).unwrap_or(0);
    axum::Json(
        json!({ "data": data, "total": total, "limit": 0, "offset": 0, "errors": Json::Null }),
    )
    .into_response()
}

async fn jaeger_services(State(engine): State<QueryEngine>) -> Answer {
    let s = strings(
        &engine,
        "SELECT DISTINCT service_name FROM spans_raw WHERE service_name IS NOT NULL ORDER BY 1",
    )
    .await?;
    Ok(jaeger_ok(json!(s)))
}

async fn jaeger_operations(
    State(engine): State<QueryEngine>,
    Path(service): Path<String>,
) -> Answer {
    let s = strings(
        &engine,
        &format!(
            "SELECT DISTINCT name FROM spans_raw WHERE service_name = {} ORDER BY 1",
            sql_str(&service)
        ),
    )
    .await?;
    Ok(jaeger_ok(json!(s)))
}

async fn jaeger_trace(State(engine): State<QueryEngine>, Path(id): Path<String>) -> Answer {
    match find_trace(&engine, &id).await {
        Ok((stored, spans)) => Ok(jaeger_ok(json!([jaeger::trace(&stored, &spans)]))),
        Err(ApiError(code, msg)) => Ok((code, axum::Json(json!({ "data": Json::Null, "total": 0, "errors": [{ "code": code.as_u16(), "msg": msg }] }))).into_response()),
    }
}

async fn jaeger_search(
    State(engine): State<QueryEngine>,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let mut conditions = Vec::new();
    let service = q
        .get("service")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("service: a service is required (see /jaeger/api/services)"))?;
    conditions.push(format!("service_name = {}", sql_str(service)));
    if let Some(op) = q.get("operation").filter(|s| !s.is_empty()) {
        conditions.push(format!("name = {}", sql_str(op)));
    }
    if let Some(tags) = q.get("tags").filter(|s| !s.is_empty()) {
        let parsed: HashMap<String, Json> = serde_json::from_str(tags)
            .map_err(|e| bad(format!("tags: expected a JSON object of strings: {e}")))?;
        for (k, v) in parsed {
            let v = match v {
                Json::String(s) => s,
                other => other.to_string(),
            };
            conditions.push(tag_condition(&k, &v));
        }
    }
    if let Some(s) = opt_param(&q, "start", int_param)? {
        conditions.push(format!(
            "start_time_unix_nano >= {}",
            s.saturating_mul(1000)
        ));
    }
    if let Some(e) = opt_param(&q, "end", int_param)? {
        conditions.push(format!(
            "start_time_unix_nano <= {}",
            e.saturating_mul(1000)
        ));
    }
    let min = opt_param(&q, "minDuration", go_duration)?.map(|d| d.as_nanos() as u64);
    let max = opt_param(&q, "maxDuration", go_duration)?.map(|d| d.as_nanos() as u64);
    let limit = limit_param(&q)?;
    let found = search_traces(&engine, &conditions, min, max, limit).await?;
    let mut traces = Vec::with_capacity(found.len());
    for f in found {
        let spans = engine.trace(&f.trace_id).await?;
        traces.push(jaeger::trace(&f.trace_id, &spans));
    }
    Ok(jaeger_ok(json!(traces)))
}
