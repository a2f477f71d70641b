//! The `spans_raw` and `logs_raw` tables: every committed file of a lake's table, united with
//! its live tail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use spanlake_exporter::parquet::convert::partition_of;
use spanlake_exporter::parquet::{LiveTail, Table};

/// The schema queries see: the table's columns, then the partition columns `date` and `hour`.
pub fn table_schema(table: Table) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("date", DataType::Utf8, false));
    fields.push(Field::new("hour", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

#[derive(Debug)]
pub struct LakeTable {
    root: PathBuf,
    tail: Option<Arc<LiveTail>>,
    table: Table,
    schema: SchemaRef,
}

impl LakeTable {
    pub fn new(root: &Path, tail: Option<Arc<LiveTail>>, table: Table) -> Self {
        LakeTable {
            root: root.to_path_buf(),
            tail,
            table,
            schema: table_schema(table),
        }
    }

    fn listing(&self, state: &dyn Session) -> Result<ListingTable> {
        let dir = self.root.join(self.table.dir());
        let url = ListingTableUrl::parse(format!("{}/", dir.display()))?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![
                ("date".into(), DataType::Utf8),
                ("hour".into(), DataType::Utf8),
            ]);
        let _ = state;
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(self.table.schema());
        ListingTable::try_new(config)
    }

    /// The live rows, with their partition columns.
    fn live_batches(&self) -> Result<Vec<RecordBatch>> {
        let Some(tail) = &self.tail else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let parts = tail
            .snapshot(self.table)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        for (hour, batches) in parts {
            let (date, hh) = partition_of(hour);
            for b in batches {
                let n = b.num_rows();
                let mut cols: Vec<ArrayRef> = b.columns().to_vec();
                cols.push(Arc::new(StringArray::from(vec![date.as_str(); n])));
                cols.push(Arc::new(StringArray::from(vec![hh.as_str(); n])));
                out.push(RecordBatch::try_new(self.schema.clone(), cols)?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Files prune with them (statistics, bloom filters, partitions); rows are filtered again.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // The tail first, then the files: a row leaves the tail only after its file is in place.
        let live = self.live_batches()?;
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if self.root.join(self.table.dir()).is_dir() {
            inputs.push(
                self.listing(state)?
                    .scan(state, projection, filters, limit)
                    .await?,
            );
        }
        if !live.is_empty() || inputs.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[live],
                self.schema.clone(),
                projection.cloned(),
            )?);
        }
        UnionExec::try_new(inputs)
    }
}
