//! The live tail: rows taken by a parquet exporter but not yet in a committed file.
//!
//! Queries read it beside the committed files, so a span is visible as soon as its request is
//! acknowledged. A partition's rows are here as they were taken (span blocks, log records as
//! Arrow batches) until a row group's worth is sealed (encoded in memory, see `sealed.rs`), then
//! as that sealed row group; a query converts or decodes them. They leave the tail only after the partition's file is renamed into place; a query
//! that snapshots the tail before listing the files therefore never misses a row (it may see
//! one twice, which queries remove).

use std::collections::BTreeMap;
use std::sync::Mutex;

use arrow::array::RecordBatch;

use super::convert::HourKey;
use super::convert::SpanRows;
use super::schema::Table;
use super::sealed::{HeldSpans, SealError, Sealed};

#[derive(Default, Debug)]
struct Part {
    sealed: Vec<Sealed>,
    batches: Vec<RecordBatch>,
    spans: Vec<HeldSpans>,
}

type Parts = BTreeMap<(Table, HourKey), Part>;

#[derive(Default, Debug)]
pub struct LiveTail {
    parts: Mutex<Parts>,
}

impl LiveTail {
    fn lock(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, table: Table, hour: HourKey, batch: RecordBatch) {
        self.lock()
            .entry((table, hour))
            .or_default()
            .batches
            .push(batch);
    }

    pub(crate) fn push_spans(&self, hour: HourKey, held: HeldSpans) {
        self.lock()
            .entry((Table::Spans, hour))
            .or_default()
            .spans
            .push(held);
    }

    /// The partition's batches were sealed into `sealed`: it replaces them, at once for
    /// readers. (A partition's batches here are always exactly the writer's batches not yet
    /// sealed: both are pushed together, and the writer seals all of them at once.)
    pub(crate) fn seal(&self, table: Table, hour: HourKey, sealed: Sealed) {
        let mut parts = self.lock();
        let part = parts.entry((table, hour)).or_default();
        part.batches.clear();
        part.spans.clear();
        part.sealed.push(sealed);
    }

    /// Called once the partition's file is committed.
    pub(crate) fn remove(&self, table: Table, hour: HourKey) {
        self.lock().remove(&(table, hour));
    }

    /// The rows of `table` now in the tail, by partition. Batches and blocks are shared, not
    /// copied; outside the lock, sealed row groups are decoded and blocks converted.
    pub fn snapshot(&self, table: Table) -> Result<Vec<(HourKey, Vec<RecordBatch>)>, SealError> {
        type Snapshot = (HourKey, Vec<Sealed>, Vec<RecordBatch>, Vec<HeldSpans>);
        let parts: Vec<Snapshot> = self
            .lock()
            .iter()
            .filter(|((t, _), _)| *t == table)
            .map(|((_, h), p)| (*h, p.sealed.clone(), p.batches.clone(), p.spans.clone()))
            .collect();
        let mut out = Vec::with_capacity(parts.len());
        for (hour, sealed, batches, spans) in parts {
            let mut rows = Vec::new();
            for s in &sealed {
                rows.extend(s.decode()?);
            }
            rows.extend(batches);
            if !spans.is_empty() {
                let mut converted = SpanRows::new();
                for h in &spans {
                    converted.append(std::slice::from_ref(&*h.block), h.ingest)?;
                }
                rows.push(converted.finish()?);
            }
            out.push((hour, rows));
        }
        Ok(out)
    }

    /// Rows in the tail, every table.
    pub fn rows(&self) -> usize {
        self.lock()
            .values()
            .map(|p| {
                p.sealed.iter().map(Sealed::rows).sum::<usize>()
                    + p.batches.iter().map(|b| b.num_rows()).sum::<usize>()
                    + p.spans.iter().map(|h| h.block.len()).sum::<usize>()
            })
            .sum()
    }
}
