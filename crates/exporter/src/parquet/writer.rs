//! The lake writer: buffers rows per partition, seals each complete row group (`sealed.rs`),
//! writes a file from its sealed row groups, commits by rename.
//!
//! Everything here is blocking (CPU and file I/O); the exporter task calls it on the writer's
//! own thread (`WriterThread` in `mod.rs`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arrow::array::BooleanArray;
use arrow::array::RecordBatch;
use arrow::compute::filter_record_batch;
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use spanlake_core::SpanBlock;

use super::config::{DEFAULT_LEVEL, ParquetConfig};
use super::convert::{HourKey, partition_of, span_hour};
use super::logs::LogRows;
use super::schema::{SCHEMA_VERSION, Table};
use super::sealed::{self, HeldSpans, SealError, Sealed};

/// A partition: a table and an hour.
type PartKey = (Table, HourKey);
use super::tail::LiveTail;
use super::wal::{ReplayReport, Wal, WalError, Written};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("exporter {exporter}: cannot convert spans to Arrow: {source}")]
    Arrow {
        exporter: String,
        source: arrow::error::ArrowError,
    },
    #[error("exporter {exporter}: cannot write {path}: {source}")]
    Io {
        exporter: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("exporter {exporter}: cannot encode Parquet file {path}: {source}")]
    Parquet {
        exporter: String,
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("exporter {exporter}: {source}")]
    Wal { exporter: String, source: WalError },
    #[error("exporter {exporter}: cannot encode rows as Parquet: {source}")]
    Seal { exporter: String, source: SealError },
}

/// The rows of a file being gathered: row groups already sealed (encoded in memory), then the
/// rows still waiting for a row group's worth: spans as the blocks they were taken in, log
/// records as Arrow.
struct Partition {
    sealed: Vec<Sealed>,
    batches: Vec<RecordBatch>,
    spans: Vec<HeldSpans>,
    /// Rows in `batches` and `spans`, and the memory they hold.
    open_rows: usize,
    open_bytes: usize,
    /// Every row of the partition, sealed or not, and the memory they hold.
    rows: usize,
    bytes: usize,
    opened: Instant,
    /// The oldest write-ahead log segment holding rows of this partition.
    first_segment: u64,
}

/// A committed file, as reported to the caller.
#[derive(Debug, Clone)]
pub struct Committed {
    pub path: PathBuf,
    pub rows: usize,
}

pub struct LakeWriter {
    name: String,
    config: ParquetConfig,
    props: WriterProperties,
    logs: LogRows,
    partitions: BTreeMap<PartKey, Partition>,
    buffered: usize,
    buffered_bytes: usize,
    tail: Arc<LiveTail>,
    wal: Option<Wal>,
}

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl LakeWriter {
    pub fn new(name: impl Into<String>, config: ParquetConfig, tail: Arc<LiveTail>) -> Self {
        let props = writer_properties(config.compression_level, config.row_group_size);
        LakeWriter {
            name: name.into(),
            config,
            props,
            logs: LogRows::new(),
            partitions: BTreeMap::new(),
            buffered: 0,
            buffered_bytes: 0,
            tail,
            wal: None,
        }
    }

    /// A writer for the lake at `config.path`, which must be writable. With `durable`, spans
    /// are written to the write-ahead log before they are buffered, and whatever the log
    /// already holds (spans acknowledged before a crash) is buffered again first.
    pub fn open(
        name: impl Into<String>,
        config: ParquetConfig,
        tail: Arc<LiveTail>,
        durable: bool,
    ) -> Result<(Self, Option<ReplayReport>), WriteError> {
        let mut w = LakeWriter::new(name, config, tail);
        let io = |path: &Path, source| WriteError::Io {
            exporter: w.name.clone(),
            path: path.to_path_buf(),
            source,
        };
        for table in Table::ALL {
            let dir = w.config.path.join(table.dir());
            fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            // A directory can exist and still refuse files (read-only mount, permissions).
            let probe = dir.join(format!(".spanlake-probe-{}", std::process::id()));
            File::create(&probe).map_err(|e| io(&dir, e))?;
            let _ = fs::remove_file(&probe);
            remove_unfinished(&dir);
        }
        if !durable {
            return Ok((w, None));
        }
        let dir = w.config.wal_dir();
        // Each record is buffered as it is read, and complete row groups are sealed as they
        // fill: a long log is held encoded, not as decoded spans or Arrow.
        let mut failed = None;
        let wal_config = w.config.wal.clone();
        let (wal, report) = Wal::open(&dir, wal_config, |seg, ingest, record| {
            if failed.is_some() {
                return;
            }
            w.buffer_spans(vec![record.spans], ingest, seg);
            let buffered = w.buffer_logs(&record.resource_logs, ingest, seg);
            match buffered {
                Ok(()) => w.seal_ready(),
                Err(e) => failed = Some(e),
            }
        })
        .map_err(|source| WriteError::Wal {
            exporter: w.name.clone(),
            source,
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        w.wal = Some(wal);
        Ok((w, Some(report)))
    }

    /// Rows waiting for their file.
    pub fn buffered_rows(&self) -> usize {
        self.buffered
    }

    /// Memory held by the rows waiting for their file.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    /// The write-ahead log, when the writer is durable.
    pub fn wal(&self) -> Option<&Wal> {
        self.wal.as_ref()
    }

    /// Commit everything, then (when that worked) remove the log's spare segments: a clean
    /// stop leaves the log empty.
    pub fn commit_all_and_close(&mut self) -> Result<Vec<Committed>, WriteError> {
        let result = self.commit_all();
        if result.is_ok()
            && let Some(wal) = self.wal.as_mut()
        {
            wal.drop_spares();
        }
        result
    }

    /// Take spans: into the write-ahead log first (when durable), then into the buffers that
    /// become files. The returned record becomes durable once its file is fsynced.
    pub fn take(&mut self, blocks: Vec<SpanBlock>) -> Result<Option<Written>, WriteError> {
        let (written, ingest, segment) = self.log_ahead(&blocks, &[])?;
        self.buffer_spans(blocks, ingest, segment);
        Ok(written)
    }

    /// Take log records, as [`take`](Self::take) takes spans.
    pub fn take_logs(&mut self, groups: &[ResourceLogs]) -> Result<Option<Written>, WriteError> {
        let (written, ingest, segment) = self.log_ahead(&[], groups)?;
        self.buffer_logs(groups, ingest, segment)?;
        Ok(written)
    }

    /// Write to the write-ahead log, when durable: the record, the ingest time, the segment.
    fn log_ahead(
        &mut self,
        spans: &[SpanBlock],
        logs: &[ResourceLogs],
    ) -> Result<(Option<Written>, i64, u64), WriteError> {
        let ingest = now_nanos();
        let (written, segment) = match self.wal.as_mut() {
            Some(wal) => {
                let w = wal
                    .append(ingest, spans, logs)
                    .map_err(|source| WriteError::Wal {
                        exporter: self.name.clone(),
                        source,
                    })?;
                let seg = w.segment;
                (Some(w), seg)
            }
            None => (None, 0),
        };
        Ok((written, ingest, segment))
    }

    /// Whether a partition holds a complete row group not yet sealed: `row_group_size` rows,
    /// or fewer that take `max_row_group_bytes` (large spans).
    fn row_group_ready(&self, p: &Partition) -> bool {
        p.open_rows >= self.config.row_group_size || p.open_bytes >= self.config.max_row_group_bytes
    }

    /// Whether a partition reached `max_rows_per_file` or `max_bytes_per_file`.
    fn file_ready(&self, p: &Partition) -> bool {
        p.rows >= self.config.max_rows_per_file || p.bytes >= self.config.max_bytes_per_file
    }

    /// Whether [`seal_ready`](Self::seal_ready) or [`commit_full`](Self::commit_full) has
    /// anything to do.
    pub fn has_work(&self) -> bool {
        self.partitions
            .values()
            .any(|p| self.row_group_ready(p) || self.file_ready(p))
    }

    /// Seal every complete row group: sorted and encoded, it holds a fraction of the memory.
    /// On failure the rows stay as they are (a commit tries again and reports it).
    pub fn seal_ready(&mut self) {
        let ready: Vec<PartKey> = self
            .partitions
            .iter()
            .filter(|(_, p)| self.row_group_ready(p))
            .map(|(k, _)| *k)
            .collect();
        for key in ready {
            if let Err(e) = self.seal(key) {
                tracing::warn!(exporter = %self.name, error = %e, "parquet: cannot encode a row group; the rows stay buffered");
            }
        }
    }

    /// Seal every complete row group, then commit every partition that reached
    /// `max_rows_per_file` or `max_bytes_per_file`.
    pub fn commit_full(&mut self) -> Result<Vec<Committed>, WriteError> {
        self.seal_ready();
        let full: Vec<PartKey> = self
            .partitions
            .iter()
            .filter(|(_, p)| self.file_ready(p))
            .map(|(k, _)| *k)
            .collect();
        self.commit(&full)
    }

    /// Buffer spans (without the log); commit every partition that reached
    /// `max_rows_per_file`.
    pub fn append(&mut self, blocks: Vec<SpanBlock>) -> Result<Vec<Committed>, WriteError> {
        self.buffer_spans(blocks, now_nanos(), 0);
        self.commit_full()
    }

    /// Buffer blocks of spans as they are, each into the partition of its spans' hour (a block
    /// whose spans fall in several hours is copied into one block per hour).
    fn buffer_spans(&mut self, blocks: Vec<SpanBlock>, ingest: i64, segment: u64) {
        for block in blocks {
            if block.is_empty() {
                continue;
            }
            let hours: Vec<HourKey> = block
                .spans()
                .iter()
                .map(|sp| span_hour(sp.start_time_unix_nano, ingest))
                .collect();
            let first = hours[0];
            if hours.iter().all(|&h| h == first) {
                self.buffer_held(first, block, ingest, segment);
                continue;
            }
            let mut keys = hours.clone();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                let part = block.copy_where(|i| hours[i] == key);
                self.buffer_held(key, part, ingest, segment);
            }
        }
    }

    fn buffer_held(&mut self, hour: HourKey, block: SpanBlock, ingest: i64, segment: u64) {
        // Held until its row group fills, so copied, exactly sized, without the request it
        // was read from. With a write-ahead log it is taken on the writer's thread: the copy is
        // in the memory the seal frees and reuses at once; left in the memory of the receiving
        // thread that allocated it, it came back only as that thread allocated again (~30 MiB
        // more resident at full load, measured with mimalloc). Without a log the exporter's
        // task takes it, on a worker, where a copy would gain nothing: decoding left the block
        // exactly sized (a processor that grew it gives the room back here, in place), so it
        // is kept as it is, without its request.
        let block = if self.wal.is_some() {
            block.clone()
        } else {
            let mut block = block;
            block.drop_request();
            block.shrink_to_fit();
            block
        };
        let rows = block.len();
        let bytes = block.heap_bytes();
        let held = HeldSpans {
            ingest,
            block: Arc::new(block),
        };
        let p = self.partition((Table::Spans, hour), segment);
        p.rows += rows;
        p.bytes += bytes;
        p.open_rows += rows;
        p.open_bytes += bytes;
        p.spans.push(held.clone());
        self.buffered += rows;
        self.buffered_bytes += bytes;
        self.tail.push_spans(hour, held);
    }

    fn partition(&mut self, key: PartKey, segment: u64) -> &mut Partition {
        let p = self.partitions.entry(key).or_insert_with(|| Partition {
            sealed: Vec::new(),
            batches: Vec::new(),
            spans: Vec::new(),
            open_rows: 0,
            open_bytes: 0,
            rows: 0,
            bytes: 0,
            opened: Instant::now(),
            first_segment: segment,
        });
        p.first_segment = p.first_segment.min(segment);
        p
    }

    fn buffer_logs(
        &mut self,
        groups: &[ResourceLogs],
        ingest: i64,
        segment: u64,
    ) -> Result<(), WriteError> {
        if groups.is_empty() {
            return Ok(());
        }
        let arrow_err = |source| WriteError::Arrow {
            exporter: self.name.clone(),
            source,
        };
        self.logs.append(groups, ingest).map_err(arrow_err)?;
        let (batch, hours) = self.logs.finish().map_err(arrow_err)?;
        self.buffer_split(Table::Logs, batch, hours, segment)
    }

    /// Buffer rows of `table`, each into the partition of its hour.
    fn buffer_split(
        &mut self,
        table: Table,
        batch: RecordBatch,
        hours: Vec<HourKey>,
        segment: u64,
    ) -> Result<(), WriteError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let first = hours[0];
        if hours.iter().all(|&h| h == first) {
            self.buffer((table, first), batch, segment);
        } else {
            let mut keys: Vec<HourKey> = hours.clone();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                let mask: BooleanArray = hours.iter().map(|&h| Some(h == key)).collect();
                let part =
                    filter_record_batch(&batch, &mask).map_err(|source| WriteError::Arrow {
                        exporter: self.name.clone(),
                        source,
                    })?;
                self.buffer((table, key), part, segment);
            }
        }
        Ok(())
    }

    fn buffer(&mut self, key: PartKey, batch: RecordBatch, segment: u64) {
        let p = self.partition(key, segment);
        let bytes = batch.get_array_memory_size();
        p.rows += batch.num_rows();
        p.bytes += bytes;
        p.open_rows += batch.num_rows();
        p.open_bytes += bytes;
        p.batches.push(batch.clone());
        self.buffered += batch.num_rows();
        self.buffered_bytes += bytes;
        self.tail.push(key.0, key.1, batch);
    }

    /// Sort and encode the rows of a partition not yet sealed into a sealed row group.
    fn seal(&mut self, key: PartKey) -> Result<(), WriteError> {
        let Some(p) = self.partitions.get_mut(&key) else {
            return Ok(());
        };
        if p.batches.is_empty() && p.spans.is_empty() {
            return Ok(());
        }
        let table = key.0;
        let sealed = match table {
            Table::Spans => Sealed::seal_spans(&p.spans, &self.props),
            Table::Logs => Sealed::seal(
                &p.batches,
                &table.schema(),
                &self.props,
                table.sort_columns(),
            ),
        }
        .map_err(|source| WriteError::Seal {
            exporter: self.name.clone(),
            source,
        })?;
        let size = sealed.size();
        tracing::debug!(exporter = %self.name, table = table.dir(), rows = p.open_rows, held_bytes = p.open_bytes, sealed_bytes = size, "parquet: row group sealed");
        p.bytes = p.bytes - p.open_bytes + size;
        self.buffered_bytes = self.buffered_bytes - p.open_bytes + size;
        p.batches.clear();
        p.spans.clear();
        p.open_rows = 0;
        p.open_bytes = 0;
        p.sealed.push(sealed.clone());
        self.tail.seal(key.0, key.1, sealed);
        Ok(())
    }

    /// Commit the partitions whose first row is older than `max_file_age`.
    pub fn commit_expired(&mut self, now: Instant) -> Result<Vec<Committed>, WriteError> {
        let old: Vec<PartKey> = self
            .partitions
            .iter()
            .filter(|(_, p)| now.duration_since(p.opened) >= self.config.max_file_age)
            .map(|(k, _)| *k)
            .collect();
        self.commit(&old)
    }

    /// Commit everything buffered.
    pub fn commit_all(&mut self) -> Result<Vec<Committed>, WriteError> {
        let all: Vec<PartKey> = self.partitions.keys().copied().collect();
        self.commit(&all)
    }

    /// Write one file per partition in `keys`. A partition whose file fails stays buffered for
    /// the next attempt; the first error is returned after trying them all.
    fn commit(&mut self, keys: &[PartKey]) -> Result<Vec<Committed>, WriteError> {
        let mut done = Vec::new();
        let mut first_err = None;
        for key in keys {
            let sealed = self.seal(*key);
            let Some(part) = self.partitions.get(key) else {
                continue;
            };
            match sealed.and_then(|()| self.write_file(*key, &part.sealed, part.rows)) {
                Ok(c) => {
                    self.buffered -= part.rows;
                    self.buffered_bytes -= part.bytes;
                    self.partitions.remove(key);
                    self.tail.remove(key.0, key.1);
                    done.push(c);
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if !done.is_empty()
            && let Some(wal) = self.wal.as_mut()
        {
            // Segments older than every partition still buffered hold only committed spans;
            // with nothing buffered, every segment does.
            let keep_from = match self.partitions.values().map(|p| p.first_segment).min() {
                Some(oldest) => oldest.min(wal.current_segment()),
                None => {
                    wal.seal();
                    u64::MAX
                }
            };
            wal.trim(keep_from);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    fn write_file(
        &self,
        (table, key): PartKey,
        parts: &[Sealed],
        rows: usize,
    ) -> Result<Committed, WriteError> {
        let (date, hour) = partition_of(key);
        let dir = self
            .config
            .path
            .join(table.dir())
            .join(format!("date={date}"))
            .join(format!("hour={hour}"));
        let io = |path: &Path, source| WriteError::Io {
            exporter: self.name.clone(),
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;

        let seq = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
        let stem = format!("part-{:x}-{}-{seq:04}", now_nanos(), std::process::id());
        let tmp = dir.join(format!(".{stem}.parquet.tmp"));
        let path = dir.join(format!("{stem}.parquet"));
        let result = (|| {
            let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
            // The sealed row groups, copied as they are encoded (each sorted by trace id, then
            // time, with its own bloom filter).
            let file = sealed::assemble(
                std::io::BufWriter::new(file),
                parts,
                &table.schema(),
                &self.props,
                table.sort_columns(),
            )
            .map_err(|e| {
                let source = match e {
                    SealError::Arrow(source) => {
                        return WriteError::Arrow {
                            exporter: self.name.clone(),
                            source,
                        };
                    }
                    SealError::Parquet(source) => source,
                };
                // A write that failed (disk full, I/O error) is reported as such.
                match source {
                    parquet::errors::ParquetError::External(inner) => {
                        match inner.downcast::<std::io::Error>() {
                            Ok(source) => io(&tmp, *source),
                            Err(other) => WriteError::Parquet {
                                exporter: self.name.clone(),
                                path: path.clone(),
                                source: parquet::errors::ParquetError::External(other),
                            },
                        }
                    }
                    source => WriteError::Parquet {
                        exporter: self.name.clone(),
                        path: path.clone(),
                        source,
                    },
                }
            })?;
            let file = file.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
            file.sync_all().map_err(|e| io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
            // Make the rename itself durable.
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        tracing::debug!(exporter = %self.name, path = %path.display(), rows, "committed");
        Ok(Committed { path, rows })
    }
}

/// The size a data page is closed at.
const PAGE_BYTES: usize = 128 << 10;

/// The rows a data page is closed at (parquet's default: 20,000). A dictionary-encoded page
/// holds 8 bytes per value until it is written, and a page of repeated values never reaches
/// `PAGE_BYTES`: a map column of 10 attributes a span held ~2 MiB of indices per page. Measured
/// at full load: peak 81–84 → 71–77 MiB (values of 100 kinds: 96 → 88 MiB); writing ~4%
/// slower, +2–6% bytes on disk (4,096 rows: +7% and more).
pub(crate) const PAGE_ROWS: usize = 8192;

/// Columns whose values are (nearly) all distinct: a dictionary only costs time (every value
/// is interned, then the dictionary is abandoned for plain encoding when it grows too large).
const NO_DICTIONARY: &[&str] = &["trace_id", "span_id", "parent_span_id", "record_id"];

/// The time columns: nearly all distinct too, and close to their neighbours once rows are
/// sorted by trace and time, so they are DELTA_BINARY_PACKED (the differences, bit-packed)
/// rather than PLAIN (8 bytes each): a fraction of the bytes before compression, which then
/// has a fraction of the work. The benchmark's lake went from 9.5 to 3.8 bytes a span (its
/// times are more regular than most services'). Every engine the lake is read with decodes
/// it (Spark's vectorized reader since 3.3; it is Parquet 2.0's encoding).
const TIMES: &[&str] = &[
    "start_time_unix_nano",
    "end_time_unix_nano",
    "start_time",
    "end_time",
    "time_unix_nano",
    "observed_time_unix_nano",
    "time",
    "ingest_time_unix_nano",
];

/// How every lake file is written (the sorting columns and the bloom filter's size are set
/// per file).
pub fn writer_properties(compression_level: i32, row_group_size: usize) -> WriterProperties {
    let level = ZstdLevel::try_new(compression_level).unwrap_or_default();
    let trace_id = ColumnPath::from("trace_id");
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(row_group_size))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_bloom_filter_enabled(trace_id.clone(), true)
        .set_column_bloom_filter_fpp(trace_id, 0.01)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "spanlake.schema_version".into(),
            SCHEMA_VERSION.to_string(),
        )]))
        .set_created_by(format!("spanlake {}", env!("CARGO_PKG_VERSION")));
    // Pages of at most 128 KiB and 8,192 rows (parquet's defaults are 1 MiB and 20,000 rows;
    // `PAGE_ROWS`) and dictionaries of at most 256
    // KiB (then the column chunk goes on plainly encoded): a seal holds every column's open
    // page, its dictionary and a zstd context sized for the largest page it compressed (~2.5
    // MiB for a 1 MiB page, ~1.5 for 256 KiB) at once. Measured at full load: ~4 MiB less
    // peak, same CPU; a 10-million-span lake +1.3% bytes. Smaller pages save more memory for
    // more bytes (32 / 64 KiB: ~8 MiB less again, +12% bytes), so they stop here.
    b = b
        .set_data_page_size_limit(PAGE_BYTES)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_dictionary_page_size_limit(2 * PAGE_BYTES);
    // Ids and times are nearly random bytes: zstd's higher levels search them for matches
    // that are not there, and a compressor's first page clears tables sized by its level
    // (level 3: ~768 KiB for a 128 KiB page, at every row group, for each of these columns;
    // level 1: ~32 KiB). At level 1 they take the same bytes (the sidecar pipeline's lake:
    // 9.4 → 9.2 bytes a span) for ~3% fewer instructions per span at 10k spans/s. Levels
    // above the default are the user's to ask for, and apply to them too.
    let plain_level = if compression_level <= DEFAULT_LEVEL {
        ZstdLevel::try_new(1).unwrap_or_default()
    } else {
        level
    };
    for c in NO_DICTIONARY.iter().chain(TIMES) {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(*c), false)
            .set_column_compression(ColumnPath::from(*c), Compression::ZSTD(plain_level));
    }
    for c in TIMES {
        b = b.set_column_encoding(ColumnPath::from(*c), Encoding::DELTA_BINARY_PACKED);
    }
    // Statistics serve pruning, which works on top-level columns (ids, times, names, status,
    // service); for the keys and values inside attribute maps, events and links no engine
    // prunes by min/max, and computing them compared every string once more (~5% of the
    // collector's CPU at full load).
    for path in leaves() {
        if path.parts().len() > 1 {
            b = b.set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
        }
        // Dropped counts are nearly always 0: a dictionary of one value and a run of its
        // index, which no codec makes smaller; uncompressed, a row group does not create a zstd
        // compressor for each of them.
        if path.parts().last().is_some_and(|p| p.contains("dropped_")) {
            b = b.set_column_compression(path, Compression::UNCOMPRESSED);
        }
    }
    b.build()
}

/// The Parquet leaf columns of every table.
fn leaves() -> Vec<ColumnPath> {
    let mut out = Vec::new();
    for table in Table::ALL {
        let Ok(descr) = parquet::arrow::ArrowSchemaConverter::new().convert(&table.schema()) else {
            continue;
        };
        for col in descr.columns() {
            let path = col.path();
            if !out.contains(path) {
                out.push(path.clone());
            }
        }
    }
    out
}

/// Remove files a crash left half-written (`.<name>.parquet.tmp`); no reader lists them, and
/// their rows are in the write-ahead log or were never acknowledged.
fn remove_unfinished(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_unfinished(&path);
        } else if name.starts_with('.') && name.ends_with(".parquet.tmp") {
            match fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "parquet: removed a file left unfinished by a crash")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "parquet: cannot remove an unfinished file")
                }
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array, StringArray};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "spanlake-writer-{tag}-{}-{}",
            std::process::id(),
            now_nanos()
        ));
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    /// `spans` as a request: one resource, one scope.
    fn request(spans: Vec<Span>) -> Vec<SpanBlock> {
        vec![SpanBlock::from_prost(&[ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }])]
    }

    fn span(trace: u8, id: u8, start: u64) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            name: format!("s{id}"),
            start_time_unix_nano: start,
            end_time_unix_nano: start + 10,
            ..Default::default()
        }
    }

    /// Every file under `root`, sorted.
    pub(in crate::parquet) fn files(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("read dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p)
                } else {
                    out.push(p)
                }
            }
        }
        out.sort();
        out
    }

    /// Ids and times are compressed at zstd level 1 up to the default level, at the level
    /// asked for above it; every other compressed column at the configured level.
    #[test]
    fn ids_and_times_are_compressed_at_level_one_unless_more_is_asked() {
        let zstd = |l: i32| Compression::ZSTD(ZstdLevel::try_new(l).expect("level"));
        for (configured, ids) in [(1, 1), (2, 1), (3, 1), (4, 4), (19, 19)] {
            let props = writer_properties(configured, 1000);
            for c in [
                "trace_id",
                "span_id",
                "start_time_unix_nano",
                "ingest_time_unix_nano",
            ] {
                assert_eq!(
                    props.compression(&ColumnPath::from(c)),
                    zstd(ids),
                    "{c} at level {configured}"
                );
            }
            for c in ["name", "service_name"] {
                assert_eq!(props.compression(&ColumnPath::from(c)), zstd(configured));
            }
        }
    }

    #[test]
    fn files_are_partitioned_sorted_and_committed_by_rename() {
        let root = tempdir("sorted");
        let hour = 3_600_000_000_000u64;
        let base = 1_767_225_600_000_000_000u64; // 2026-01-01T00:00:00Z
        let config = ParquetConfig {
            path: root.clone(),
            ..Default::default()
        };
        let mut w = LakeWriter::new("parquet", config, Arc::default());
        let spans = vec![
            span(9, 1, base + 50),
            span(3, 2, base + 70),
            span(3, 3, base + 60),
            span(5, 4, base + hour + 1),
        ];
        let groups = request(spans);
        assert!(
            w.append(groups.clone()).expect("append").is_empty(),
            "nothing committed before a file is full"
        );
        assert_eq!(w.buffered_rows(), 4);
        let committed = w.commit_all().expect("commit");
        assert_eq!(committed.len(), 2);
        assert_eq!(w.buffered_rows(), 0);
        let all = files(&root);
        assert_eq!(all.len(), 2, "no temporary file is left: {all:?}");
        let rel: Vec<String> = all
            .iter()
            .map(|p| {
                p.strip_prefix(&root)
                    .expect("under root")
                    .parent()
                    .expect("dir")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(
            rel,
            vec![
                "spans/date=2026-01-01/hour=00",
                "spans/date=2026-01-01/hour=01"
            ]
        );

        let file = File::open(&all[0]).expect("open");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        let batch = reader.map(|b| b.expect("batch")).next().expect("one batch");
        let ids = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("span ids");
        let order: Vec<&str> = (0..ids.len()).map(|i| ids.value(i)).collect();
        assert_eq!(
            order,
            vec!["0303030303030303", "0202020202020202", "0101010101010101"],
            "by trace id, then start time"
        );
        let dur = batch
            .column(9)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("durations");
        assert_eq!(dur.value(0), 10);

        let options = parquet::file::serialized_reader::ReadOptionsBuilder::new()
            .with_reader_properties(
                parquet::file::properties::ReaderProperties::builder()
                    .set_read_bloom_filter(true)
                    .build(),
            )
            .build();
        let meta =
            SerializedFileReader::new_with_options(File::open(&all[0]).expect("open"), options)
                .expect("footer");
        let rg = meta.get_row_group(0).expect("row group");
        assert!(
            rg.get_column_bloom_filter(0).is_some(),
            "a bloom filter on trace_id"
        );
        fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn a_failed_commit_keeps_the_rows_for_the_next_attempt() {
        let root = tempdir("readonly");
        let blocker = root.join("file-not-dir");
        fs::write(&blocker, b"x").expect("write");
        let config = ParquetConfig {
            path: blocker.clone(),
            ..Default::default()
        };
        let mut w = LakeWriter::new("parquet", config, Arc::default());
        let groups = request(vec![span(1, 1, 5)]);
        w.append(groups.clone()).expect("buffered");
        let err = w
            .commit_all()
            .expect_err("cannot create a directory under a file");
        assert!(
            err.to_string()
                .starts_with("exporter parquet: cannot write "),
            "{err}"
        );
        assert_eq!(w.buffered_rows(), 1, "rows are kept");
        fs::remove_file(&blocker).expect("clear the fault");
        assert_eq!(w.commit_all().expect("commits now").len(), 1);
        fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn complete_row_groups_are_sealed_and_stay_visible_until_their_file_is_written() {
        let root = tempdir("sealed");
        let blocker = root.join("lake");
        fs::write(&blocker, b"x").expect("write");
        let config = ParquetConfig {
            path: blocker.clone(),
            row_group_size: 3,
            max_rows_per_file: 100,
            ..Default::default()
        };
        let tail = Arc::new(LiveTail::default());
        let mut w = LakeWriter::new("parquet", config, Arc::clone(&tail));
        let base = 1_767_225_600_000_000_000u64; // 2026-01-01T00:00:00Z
        let spans = |ids: &[u8]| {
            request(
                ids.iter()
                    .map(|&i| span(10 - i, i, base + i as u64))
                    .collect(),
            )
        };
        let tail_ids = || -> Vec<String> {
            let mut ids: Vec<String> = tail
                .snapshot(Table::Spans)
                .expect("tail")
                .into_iter()
                .flat_map(|(_, batches)| span_ids(&batches))
                .collect();
            ids.sort();
            ids
        };
        for ids in [&[1u8, 2][..], &[3, 4], &[5], &[6, 7]] {
            assert!(w.append(spans(ids)).expect("append").is_empty());
        }
        // 7 rows: sealed as [1..4] when the second request came, [5..7] at the fourth.
        assert_eq!(w.buffered_rows(), 7);
        assert_eq!(tail.rows(), 7);
        let part = w.partitions.values().next().expect("one partition");
        assert_eq!(
            part.sealed.iter().map(Sealed::rows).collect::<Vec<_>>(),
            [4, 3]
        );
        assert!(part.batches.is_empty());
        assert_eq!(
            w.buffered_bytes(),
            part.sealed.iter().map(Sealed::size).sum::<usize>(),
            "sealed rows hold their encoded size, not their Arrow size"
        );
        w.append(spans(&[8])).expect("append");
        let want: Vec<String> = (1..=8u8).map(|i| hex_of(&[i; 8])).collect();
        assert_eq!(
            tail_ids(),
            want,
            "sealed and open rows are both in the tail"
        );

        // The lake cannot take the file: everything stays, sealed, and in the tail.
        w.commit_all().expect_err("the lake's path is a file");
        assert_eq!(w.buffered_rows(), 8);
        assert_eq!(tail_ids(), want);

        fs::remove_file(&blocker).expect("clear the fault");
        let committed = w.commit_all().expect("commit");
        assert_eq!(committed.len(), 1);
        assert_eq!(committed[0].rows, 8);
        assert_eq!(tail.rows(), 0);
        let (sizes, batches) = read_back(&committed[0].path);
        assert_eq!(sizes, [4, 3, 1], "one row group per seal, in order");
        let mut got = span_ids(&batches);
        // Each row group sorted by trace id (10 - i): descending span ids within a group.
        assert_eq!(got[..4], [4u8, 3, 2, 1].map(|i| hex_of(&[i; 8])));
        got.sort();
        assert_eq!(got, want);
        fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn large_spans_seal_a_row_group_by_bytes_and_read_back_sorted() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        let root = tempdir("large");
        let config = ParquetConfig {
            path: root.clone(),
            max_row_group_bytes: 1 << 20,
            ..Default::default()
        };
        let mut w = LakeWriter::new("parquet", config, Arc::default());
        let base = 1_767_225_600_000_000_000u64; // 2026-01-01T00:00:00Z
        // 10 requests of 10 spans, each with 4 attributes of 24 KB: ~1 MB a request, a row group
        // of 2 requests (converted in 2 chunks of ~2 MiB, as the seal writes them).
        for r in 0..10u8 {
            let spans = (0..10u8)
                .map(|i| {
                    let n = r * 10 + i;
                    let mut s = span(200 - n, n, base + n as u64);
                    s.attributes = (0..4)
                        .map(|a| KeyValue {
                            key: format!("payload.{a}"),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(
                                    format!("{n:03}-{a}-").repeat(4000),
                                )),
                            }),
                            ..Default::default()
                        })
                        .collect();
                    s
                })
                .collect();
            w.append(request(spans)).expect("append");
            let part = w.partitions.values().next().expect("one partition");
            assert!(
                part.open_bytes < 1 << 20,
                "a row group is sealed once it holds max_row_group_bytes ({} held)",
                part.open_bytes
            );
        }
        let committed = w.commit_all().expect("commit");
        assert_eq!(committed.len(), 1);
        assert_eq!(committed[0].rows, 100);
        let (groups, batches) = read_back(&committed[0].path);
        assert_eq!(
            groups, [20; 5],
            "row groups of ~1 MiB of spans, not of row_group_size rows"
        );
        // Each row group is sorted by trace id (200 - n): span ids descend within a group, and
        // every span is there once, its attributes whole.
        let ids: Vec<u8> = span_ids(&batches)
            .iter()
            .map(|id| u8::from_str_radix(&id[..2], 16).expect("hex"))
            .collect();
        let mut at = 0;
        for &n in &groups {
            let group = &ids[at..at + n as usize];
            assert!(group.windows(2).all(|p| p[0] > p[1]), "{group:?}");
            at += n as usize;
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100u8).collect::<Vec<_>>());
        let bytes: usize = batches
            .iter()
            .map(|b| {
                let m = b.column_by_name("attributes").expect("attributes");
                let m = m
                    .as_any()
                    .downcast_ref::<arrow::array::MapArray>()
                    .expect("map");
                let v = m
                    .values()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("values");
                v.value_data().len()
            })
            .sum();
        assert_eq!(bytes, 100 * 4 * 6 * 4000);
        fs::remove_dir_all(&root).ok();
    }

    /// The rows of each row group of the file at `path`, and its rows (read by parquet's reader).
    fn read_back(path: &Path) -> (Vec<i64>, Vec<RecordBatch>) {
        let reader = SerializedFileReader::new(File::open(path).expect("open")).expect("footer");
        let groups = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        let batches = ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open"))
            .expect("parquet")
            .build()
            .expect("reader")
            .collect::<Result<_, _>>()
            .expect("read");
        (groups, batches)
    }

    /// The `span_id` column of `batches`, in order.
    fn span_ids(batches: &[RecordBatch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let ids = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("ids");
                (0..ids.len())
                    .map(|i| ids.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_durable_writer_replays_what_was_not_committed_and_trims_what_was() {
        let root = tempdir("durable");
        let config = ParquetConfig {
            path: root.clone(),
            ..Default::default()
        };
        let groups = |id: u8| request(vec![span(id, id, 5)]);
        let (mut w, report) =
            LakeWriter::open("parquet", config.clone(), Arc::default(), true).expect("open");
        assert_eq!(report.expect("durable").records, 0);
        assert!(w.take(groups(1)).expect("take").is_some(), "logged");
        w.commit_all().expect("commit");
        assert_eq!(
            w.wal().expect("wal").size(),
            0,
            "committed: the log is empty"
        );
        w.take(groups(2)).expect("take");
        w.take(groups(3)).expect("take");
        drop(w); // a crash: two spans logged, not committed

        let tail = Arc::new(LiveTail::default());
        let (mut w, report) =
            LakeWriter::open("parquet", config.clone(), tail.clone(), true).expect("reopen");
        let report = report.expect("durable");
        assert_eq!((report.records, report.spans), (2, 2));
        assert_eq!(w.buffered_rows(), 2);
        assert_eq!(tail.rows(), 2, "replayed spans are queryable at once");
        w.commit_all().expect("commit");
        drop(w);
        let (_, report) = LakeWriter::open("parquet", config, Arc::default(), true).expect("again");
        assert_eq!(
            report.expect("durable").records,
            0,
            "nothing left to replay"
        );
        let parquet_files = files(&root)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count();
        assert_eq!(parquet_files, 2);
        fs::remove_dir_all(&root).ok();
    }

    #[test]
    fn log_records_are_logged_ahead_and_replayed_into_the_logs_table() {
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        let root = tempdir("durable-logs");
        let config = ParquetConfig {
            path: root.clone(),
            ..Default::default()
        };
        let logs = vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 5,
                    trace_id: vec![7; 16],
                    event_name: "coordinator.waiting_for_upload".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let (mut w, _) =
            LakeWriter::open("parquet", config.clone(), Arc::default(), true).expect("open");
        assert!(w.take_logs(&logs).expect("take").is_some(), "logged");
        drop(w); // a crash before the file

        let tail = Arc::new(LiveTail::default());
        let (mut w, report) =
            LakeWriter::open("parquet", config, tail.clone(), true).expect("reopen");
        assert_eq!(report.expect("durable").logs, 1);
        assert_eq!(tail.snapshot(Table::Logs).expect("tail").len(), 1);
        assert!(tail.snapshot(Table::Spans).expect("tail").is_empty());
        let files = w.commit_all().expect("commit");
        assert_eq!(files.len(), 1);
        assert!(files[0].path.starts_with(root.join("logs")));
        fs::remove_dir_all(&root).ok();
    }
}
