//! The query engine: DataFusion over a lake (its committed files and its live tail).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use spanlake_exporter::parquet::{LiveTail, Table};

use crate::QueryError;
use crate::events::{EVENT_COLUMNS, StoredEvent, TraceInfo, stored_events, trace_info};
use crate::rows::{StoredSpan, dedupe, stored_spans};
use crate::table::LakeTable;

/// `spans`: one row per `(trace_id, span_id)` — a copy with a real end beats a running or
/// auto-closed one, otherwise the newest wins. `spans_raw` keeps every copy.
const SPANS_VIEW: &str = "CREATE VIEW spans AS \
    SELECT * EXCLUDE (__version) FROM ( \
      SELECT *, row_number() OVER ( \
        PARTITION BY trace_id, span_id \
        ORDER BY (end_time_unix_nano IS NOT NULL AND attributes['spanlake.auto_closed'] IS NULL) DESC, \
                 ingest_time_unix_nano DESC) AS __version \
      FROM spans_raw) \
    WHERE __version = 1";

/// `logs`: one row per log record (`record_id` is a hash of its content: a replay that wrote a
/// record twice shows it once). `logs_raw` keeps every copy.
const LOGS_VIEW: &str = "CREATE VIEW logs AS \
    SELECT * EXCLUDE (__copy) FROM ( \
      SELECT *, row_number() OVER (PARTITION BY record_id ORDER BY ingest_time_unix_nano) AS __copy \
      FROM logs_raw) \
    WHERE __copy = 1";

/// `traces`: one row per trace, from its spans, its events and its own start and end records
/// (`spanlake.trace.start` / `spanlake.trace.end`, from the native API's `StartTrace` and
/// `EndTrace` or any OTLP log record with those event names).
const TRACES_VIEW: &str = "CREATE VIEW traces AS \
    WITH s AS ( \
      SELECT trace_id, \
        min(start_time_unix_nano) AS first_start, \
        max(end_time_unix_nano) AS last_end, \
        count(*) AS span_count, \
        sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS error_count, \
        sum(CASE WHEN end_time_unix_nano IS NULL THEN 1 ELSE 0 END) AS running_count, \
        first_value(service_name ORDER BY parent_span_id IS NULL DESC, start_time_unix_nano) AS root_service_name, \
        first_value(name ORDER BY parent_span_id IS NULL DESC, start_time_unix_nano) AS root_name, \
        first_value(status_code ORDER BY parent_span_id IS NULL DESC, start_time_unix_nano) AS root_status_code \
      FROM spans GROUP BY trace_id), \
    st AS ( \
      SELECT trace_id, min(time_unix_nano) AS started, \
        first_value(attributes ORDER BY time_unix_nano) AS a, \
        first_value(service_name ORDER BY time_unix_nano) AS service \
      FROM logs WHERE event_name = 'spanlake.trace.start' AND trace_id IS NOT NULL GROUP BY trace_id), \
    en AS ( \
      SELECT trace_id, max(time_unix_nano) AS ended, \
        last_value(attributes ORDER BY time_unix_nano) AS e \
      FROM logs WHERE event_name = 'spanlake.trace.end' AND trace_id IS NOT NULL GROUP BY trace_id), \
    ev AS ( \
      SELECT trace_id, count(*) AS event_count FROM logs \
      WHERE trace_id IS NOT NULL \
        AND (event_name IS NULL OR event_name NOT IN ('spanlake.trace.start', 'spanlake.trace.end')) \
      GROUP BY trace_id), \
    ids AS (SELECT trace_id FROM s UNION SELECT trace_id FROM st UNION SELECT trace_id FROM en) \
    SELECT ids.trace_id, \
      st.a['spanlake.project_id'] AS project_id, \
      st.a['spanlake.request_id'] AS request_id, \
      st.a['spanlake.input'] AS input, \
      st.a['spanlake.context'] AS context, \
      st.a['spanlake.tags'] AS tags, \
      coalesce(en.e['spanlake.status_code'], s.root_status_code) AS status_code, \
      en.e['spanlake.status_message'] AS status_message, \
      CASE WHEN st.started IS NULL THEN s.first_start \
           WHEN s.first_start IS NULL THEN st.started \
           ELSE least(st.started, s.first_start) END AS start_time_unix_nano, \
      coalesce(en.ended, CASE WHEN s.running_count = 0 THEN s.last_end END) AS end_time_unix_nano, \
      coalesce(en.ended, CASE WHEN s.running_count = 0 THEN s.last_end END) \
        - CASE WHEN st.started IS NULL THEN s.first_start \
               WHEN s.first_start IS NULL THEN st.started \
               ELSE least(st.started, s.first_start) END AS duration_ns, \
      coalesce(s.root_service_name, st.service) AS root_service_name, \
      s.root_name, \
      coalesce(s.span_count, 0) AS span_count, \
      coalesce(s.error_count, 0) AS error_count, \
      coalesce(s.running_count, 0) AS running_count, \
      coalesce(ev.event_count, 0) AS event_count, \
      st.a AS attributes \
    FROM ids \
      LEFT JOIN s ON s.trace_id = ids.trace_id \
      LEFT JOIN st ON st.trace_id = ids.trace_id \
      LEFT JOIN en ON en.trace_id = ids.trace_id \
      LEFT JOIN ev ON ev.trace_id = ids.trace_id";

/// The query engine over one lake. Cheap to open and to clone: DataFusion's session (its
/// function registry, the views) is built on the first query, so a collector that is never
/// queried never loads the query engine's code into memory (a sidecar's idle footprint).
#[derive(Clone)]
pub struct QueryEngine {
    inner: Arc<Lazy>,
}

struct Lazy {
    root: PathBuf,
    tail: Option<Arc<LiveTail>>,
    ctx: tokio::sync::OnceCell<SessionContext>,
}

impl QueryEngine {
    /// An engine over the lake at `root`, with the live tail of the exporter writing it, if any.
    /// Nothing is read or built until the first query.
    pub fn open(root: &Path, tail: Option<Arc<LiveTail>>) -> QueryEngine {
        QueryEngine {
            inner: Arc::new(Lazy {
                root: root.to_path_buf(),
                tail,
                ctx: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// The session, built on first use.
    pub async fn context(&self) -> Result<&SessionContext, QueryError> {
        self.inner
            .ctx
            .get_or_try_init(|| session(&self.inner.root, self.inner.tail.clone()))
            .await
    }

    /// Run a read-only SQL query. DDL, DML (`INSERT`, `COPY`) and statements that change the
    /// session (`SET`) are refused.
    pub async fn sql(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self
            .context()
            .await?
            .sql_with_options(sql, options)
            .await
            .map_err(|e| {
                let msg = e.to_string();
                if msg.contains("not supported")
                    && (msg.contains("DDL") || msg.contains("DML") || msg.contains("Statement"))
                {
                    QueryError::ReadOnly(msg)
                } else {
                    QueryError::DataFusion(e)
                }
            })?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok((schema, batches))
    }

    /// Every span of a trace, one per span id, by start time. Empty if the trace is unknown.
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<StoredSpan>, QueryError> {
        let id = trace_id.replace('\'', "''");
        let df = self
            .context()
            .await?
            .sql(&format!("SELECT * FROM spans_raw WHERE trace_id = '{id}'"))
            .await?;
        let mut spans = Vec::new();
        for b in df.collect().await? {
            spans.extend(stored_spans(&b)?);
        }
        Ok(dedupe(spans))
    }

    /// A trace's events (its log records, trace-level and span-level), by time.
    pub async fn events(&self, trace_id: &str) -> Result<Vec<StoredEvent>, QueryError> {
        let id = trace_id.replace('\'', "''");
        let df = self
            .context()
            .await?
            .sql(&format!(
                "SELECT {EVENT_COLUMNS} FROM logs WHERE trace_id = '{id}' \
                 AND (event_name IS NULL OR event_name NOT IN ('spanlake.trace.start', 'spanlake.trace.end')) \
                 ORDER BY time_unix_nano, record_id"
            ))
            .await?;
        let mut out = Vec::new();
        for b in df.collect().await? {
            out.extend(stored_events(&b)?);
        }
        Ok(out)
    }

    /// A trace's row of the `traces` table, if the trace is known.
    pub async fn trace_info(&self, trace_id: &str) -> Result<Option<TraceInfo>, QueryError> {
        let id = trace_id.replace('\'', "''");
        let df = self
            .context()
            .await?
            .sql(&format!("SELECT * FROM traces WHERE trace_id = '{id}'"))
            .await?;
        for b in df.collect().await? {
            if let Some(info) = trace_info(&b)? {
                return Ok(Some(info));
            }
        }
        Ok(None)
    }

    /// Spans still running: no row of theirs has an end (neither a real end nor an auto-closed
    /// copy). What a lifecycle processor held when the collector stopped.
    pub async fn running_spans(&self) -> Result<Vec<StoredSpan>, QueryError> {
        let df = self
            .context()
            .await?
            .sql(
                "SELECT * FROM spans_raw WHERE trace_id IN \
                 (SELECT DISTINCT trace_id FROM spans_raw WHERE end_time_unix_nano IS NULL)",
            )
            .await?;
        let mut spans = Vec::new();
        for b in df.collect().await? {
            spans.extend(stored_spans(&b)?);
        }
        let mut out = dedupe(spans);
        out.retain(|s| s.is_running());
        Ok(out)
    }
}

/// DataFusion over the lake: `spans_raw` and `logs_raw` (files ∪ live tail) and the views.
async fn session(root: &Path, tail: Option<Arc<LiveTail>>) -> Result<SessionContext, QueryError> {
    let mut config = SessionConfig::new()
        .with_target_partitions(2)
        .with_information_schema(true);
    let opts = config.options_mut();
    opts.execution.parquet.pushdown_filters = true;
    opts.execution.parquet.reorder_filters = true;
    opts.execution.parquet.bloom_filter_on_read = true;
    // Planning-time statistics read every file's footer on every query; the parquet reader
    // still prunes files, row groups and pages by statistics and bloom filters as it opens
    // them. Measured on a 10M-span lake: trace lookups p50 58 ms → 38 ms.
    opts.execution.collect_statistics = false;
    // The lake grows while the collector runs: a file committed after a query must be seen
    // by the next one, so directory listings are never cached (DataFusion caches them
    // forever by default). File footers may be: files never change once committed.
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_cache_manager(
            datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
                .with_list_files_cache_limit(0),
        )
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_table(
        "spans_raw",
        Arc::new(LakeTable::new(root, tail.clone(), Table::Spans)),
    )?;
    ctx.register_table(
        "logs_raw",
        Arc::new(LakeTable::new(root, tail, Table::Logs)),
    )?;
    ctx.sql(SPANS_VIEW).await?;
    ctx.sql(LOGS_VIEW).await?;
    ctx.sql(TRACES_VIEW).await?;
    Ok(ctx)
}
