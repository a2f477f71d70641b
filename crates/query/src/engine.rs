//! The query engine: DataFusion over a lake (its committed files and its live tail).

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use spanlake_exporter::parquet::LiveTail;

use crate::QueryError;
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

#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
}

impl QueryEngine {
    /// An engine over the lake at `root`, with the live tail of the exporter writing it, if any.
    pub async fn open(root: &Path, tail: Option<Arc<LiveTail>>) -> Result<QueryEngine, QueryError> {
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
        ctx.register_table("spans_raw", Arc::new(LakeTable::new(root, tail)))?;
        ctx.sql(SPANS_VIEW).await?;
        Ok(QueryEngine { ctx })
    }

    /// Run a read-only SQL query. DDL, DML (`INSERT`, `COPY`) and statements that change the
    /// session (`SET`) are refused.
    pub async fn sql(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self.ctx.sql_with_options(sql, options).await.map_err(|e| {
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
            .ctx
            .sql(&format!("SELECT * FROM spans_raw WHERE trace_id = '{id}'"))
            .await?;
        let mut spans = Vec::new();
        for b in df.collect().await? {
            spans.extend(stored_spans(&b)?);
        }
        Ok(dedupe(spans))
    }

    /// Spans still running: no row of theirs has an end (neither a real end nor an auto-closed
    /// copy). What a lifecycle processor held when the collector stopped.
    pub async fn running_spans(&self) -> Result<Vec<StoredSpan>, QueryError> {
        let df = self
            .ctx
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

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }
}
