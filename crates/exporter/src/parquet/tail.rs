//! The live tail: rows taken by a parquet exporter but not yet in a committed file.
//!
//! Queries read it beside the committed files, so a span is visible as soon as its request is
//! acknowledged. A partition's rows leave the tail only after its file is renamed into place;
//! a query that snapshots the tail before listing the files therefore never misses a row (it may
//! see one twice, which queries remove).

use std::collections::BTreeMap;
use std::sync::Mutex;

use arrow::array::RecordBatch;

use super::convert::HourKey;
use super::schema::Table;

type Parts = BTreeMap<(Table, HourKey), Vec<RecordBatch>>;

#[derive(Default, Debug)]
pub struct LiveTail {
    parts: Mutex<Parts>,
}

impl LiveTail {
    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, table: Table, hour: HourKey, batch: RecordBatch) {
        self.lock().entry((table, hour)).or_default().push(batch);
    }

    /// Called once the partition's file is committed.
    pub(crate) fn remove(&self, table: Table, hour: HourKey) {
        self.lock().remove(&(table, hour));
    }

    /// The rows of `table` now in the tail, by partition (cheap: the batches are shared, not
    /// copied).
    pub fn snapshot(&self, table: Table) -> Vec<(HourKey, Vec<RecordBatch>)> {
        self.lock()
            .iter()
            .filter(|((t, _), _)| *t == table)
            .map(|((_, h), v)| (*h, v.clone()))
            .collect()
    }

    /// Rows in the tail, every table.
    pub fn rows(&self) -> usize {
        self.lock().values().flatten().map(|b| b.num_rows()).sum()
    }
}
