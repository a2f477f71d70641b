//! The write-ahead log of a parquet exporter: spans that are acknowledged but not yet in a
//! committed Parquet file.
//!
//! The log is a directory of segments, `<id>.wal`, numbered upwards. A segment starts with a
//! 16-byte header — an 8-byte magic and the segment's id (u64 LE) — and holds records:
//!
//! ```text
//! u32 LE  payload length
//! u32 LE  CRC-32 of the segment id below and the payload
//! u64 LE  the segment's id
//! payload i64 LE ingest time (Unix ns), then the body: a protobuf message whose field 1 is
//!         OTLP ResourceSpans (as in ExportTraceServiceRequest) and field 2 OTLP
//!         ResourceLogs — or, for large spans, the spans in the log's own encoding (they
//!         start with "SLB2", or "SLB1" as session 12's builds wrote it: the block's tables
//!         as they are, see `SpanBlock::encode_native`) followed by that message's log
//!         records — or either body as one zstd frame (it starts with zstd's magic, 28 B5
//!         2F FD)
//! ```
//!
//! A segment the log moves on from ends with an end marker: a record header with length 0.
//!
//! Segments are recycled (PostgreSQL's way): one whose spans are all committed is renamed
//! `<id>.spare` instead of deleted (up to [`SPARES_MAX`], within `max_size`), and the next
//! segment is that file, written over from its start. Its blocks are already allocated and
//! the file already that long, so a write finds its pages in place and an fsync writes the
//! data alone — not the file's size, not new blocks' metadata. What the file held before
//! stays after the new records: those records carry the old segment's id, so reading stops
//! there. Replay reads each segment up to its end marker, or — the newest segment only — up
//! to the first record that does not check out.
//!
//! Segments of builds before recycling (magic `SLWAL\0\0\x01`, records with an 8-byte
//! header: length, CRC-32 of the payload) are replayed as they were written: to their end.
//!
//! Spans whose attributes take ≥ 2 KiB (judged by each block's first span) go in the own
//! encoding: a long value is written once per segment — the first record that holds it
//! defines it, later records of the same segment refer to it by number (`SegmentValues`;
//! the collector testbed sends the same 20 values of 5 KB on every span: 100 KB a request
//! for the first, ~6 KB for the next) — where protobuf repeats it on every span, and the
//! tables are copied where protobuf encodes every field. Replay therefore reads a segment's
//! records in order from its start, as it always did; a record is encoded again when it
//! has to start a new segment, and a record that is not written takes back the values it
//! defined. Ordinary spans stay protobuf, which is smaller for them. Builds before the own
//! encoding cannot replay such records (session 12's builds read `SLB1` only).
//!
//! Records of large spans or log records (≥ 2 KiB each on average, ≥ 64 KiB in all) are
//! compressed when that makes them at least half smaller. When a record does not compress
//! well enough, the next 16 large records are not tried.
//!
//! Records hold spans after every processor ran (redaction included: no secret reaches the
//! disk). Writes go to the current segment; fsyncs are grouped by the exporter (one fsync
//! serves every batch written since the last one). A segment is recycled or deleted once
//! every span in it is in a committed Parquet file.
//!
//! On start the log is replayed: every record that checks out is handed back. A torn last
//! record (a crash mid-write) is expected and ignored (the newest segment gets its end marker
//! in its place); damage anywhere else — a segment without its end marker included — sets the
//! segment aside as `<id>.wal.corrupt`, with an error in the log, after its good records are
//! replayed.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use prost::Message;
use serde::Deserialize;
use spanlake_core::SpanBlock;
use spanlake_core::spans::{NATIVE_MAGIC, NATIVE_MAGIC_V1, SegmentValues};

/// A segment's magic; its id follows.
const MAGIC: &[u8; 8] = b"SLWAL\0\0\x02";
/// The magic of segments written before recycling: records with an 8-byte header, no id.
const MAGIC_V1: &[u8; 8] = b"SLWAL\0\0\x01";
/// A segment's header: its magic and id.
const SEGMENT_HEADER: usize = 16;
/// Spare segments kept for reuse at most.
const SPARES_MAX: usize = 4;
/// A spare larger than this many segments (one record larger than a segment made it so) is
/// not kept.
const SPARE_SEGMENTS_MAX: u64 = 2;

/// The body of a record: spans and log records.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub spans: SpanBlock,
    pub resource_logs: Vec<ResourceLogs>,
}

/// A record's log records (field 2); prost skips the spans, read by [`SpanBlock::decode`].
#[derive(Clone, PartialEq, prost::Message)]
struct LogsOfRecord {
    #[prost(message, repeated, tag = "2")]
    resource_logs: Vec<ResourceLogs>,
}

impl Record {
    /// A record's payload after its ingest time: spans as field 1 (the layout of an OTLP
    /// `ExportTraceServiceRequest`), log records as field 2 — or, when the body starts with
    /// [`NATIVE_MAGIC`], the spans in the log's own encoding ([`SpanBlock::encode_native`])
    /// and then the log records.
    /// `values`: the long values earlier records of the segment defined.
    fn decode(payload: &[u8], values: &mut SegmentValues) -> Option<Record> {
        let (spans, logs) =
            if payload.starts_with(&NATIVE_MAGIC) || payload.starts_with(&NATIVE_MAGIC_V1) {
                let (spans, used) = SpanBlock::decode_native(payload, values).ok()?;
                (spans, &payload[used..])
            } else {
                (SpanBlock::decode(payload, false).ok()?.0, payload)
            };
        let logs = LogsOfRecord::decode(logs).ok()?;
        Some(Record {
            spans,
            resource_logs: logs.resource_logs,
        })
    }
}
/// A record's header: length, checksum, segment id.
const RECORD_HEADER: usize = 16;
/// A record's header in segments written before recycling: length, checksum.
const RECORD_HEADER_V1: usize = 8;

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// Records are compressed only when they hold at least this much on average per span or log
/// record…
const COMPRESS_SPAN_BYTES: usize = 2048;
/// …and this much in all.
const COMPRESS_MIN_BYTES: usize = 64 << 10;
/// Large records not tried after one that did not shrink by half.
const COMPRESS_BACKOFF: u32 = 16;
/// Spans whose attributes take at least this much are written in the log's own
/// encoding (`SpanBlock::encode_native`), which writes a long value shared between a request's
/// spans once; smaller spans as protobuf, which is smaller for them (the testbed's 10k spans/s:
/// 337 bytes a span as protobuf, 403 in the own encoding's fixed-size records).
const NATIVE_SPAN_BYTES: usize = 2048;
/// Whether a record's spans go in the log's own encoding: the first span of each block stands
/// for the block (a request's spans are alike), so choosing costs nothing per span.
fn large_spans(spans: &[SpanBlock]) -> bool {
    let (mut n, mut bytes) = (0usize, 0usize);
    for b in spans {
        if let Some(first) = b.spans().first() {
            n += 1;
            bytes += b.attr_bytes_of(first.attrs);
        }
    }
    n > 0 && bytes >= n.saturating_mul(NATIVE_SPAN_BYTES)
}

/// Room the block a record's spans are copied into keeps between records.
const SCRATCH_KEEP: usize = 1 << 20;
/// The largest record a replay decompresses (a damaged frame must not ask for more).
const DECOMPRESSED_MAX: usize = 1 << 30;

/// A record's body as it was encoded: decompressed when it is a zstd frame.
fn record_body(body: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    if !body.starts_with(&ZSTD_MAGIC) {
        return Some(std::borrow::Cow::Borrowed(body));
    }
    let size = zstd::zstd_safe::get_frame_content_size(body).ok()??;
    if size > DECOMPRESSED_MAX as u64 {
        return None;
    }
    zstd::bulk::decompress(body, size as usize)
        .ok()
        .map(std::borrow::Cow::Owned)
}

/// `exporters: parquet: wal:` — used when a pipeline of the exporter has
/// `acknowledgements: durable`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// Directory of the log. Default `<path>/_wal` (the underscore keeps it out of the way of
    /// engines that read the lake's directory).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// One fsync serves every batch written within this long of the first one waiting.
    /// Default `0s`: fsync as soon as something waits (batches arriving during an fsync share
    /// the next one). A longer interval means fewer fsyncs on a slow disk, and more latency.
    #[serde(default = "default_sync_interval", with = "humantime_serde")]
    pub sync_interval: Duration,
    /// …or as soon as this many bytes wait. Default `4194304` (4 MiB).
    #[serde(default = "default_sync_bytes")]
    pub sync_bytes: usize,
    /// The log never grows past this many bytes; once full, requests are refused (retryable)
    /// until committed files let segments go. Default `1073741824` (1 GiB).
    #[serde(default = "default_max_size")]
    pub max_size: u64,
    /// Bytes per segment file. Default `67108864` (64 MiB).
    #[serde(default = "default_segment_size")]
    pub segment_size: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            path: None,
            sync_interval: default_sync_interval(),
            sync_bytes: default_sync_bytes(),
            max_size: default_max_size(),
            segment_size: default_segment_size(),
        }
    }
}

fn default_sync_interval() -> Duration {
    Duration::ZERO
}
fn default_sync_bytes() -> usize {
    4 << 20
}
fn default_max_size() -> u64 {
    1 << 30
}
fn default_segment_size() -> u64 {
    64 << 20
}

impl WalConfig {
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.sync_bytes == 0 {
            p.push(("wal", "wal.sync_bytes must be at least 1".to_string()));
        }
        if self.segment_size < 4096 {
            p.push((
                "wal",
                "wal.segment_size must be at least 4096 bytes".to_string(),
            ));
        }
        if self.max_size < self.segment_size.saturating_mul(2) {
            p.push((
                "wal",
                format!(
                    "wal.max_size ({}) must hold at least two segments of wal.segment_size ({})",
                    self.max_size, self.segment_size
                ),
            ));
        }
        p
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("the write-ahead log is full ({used} of max_size {max} bytes)")]
    Full { used: u64, max: u64 },
    #[error("cannot write the write-ahead log at {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// One record's place in the log, for the fsync that makes it durable.
#[derive(Debug, Clone)]
pub struct Written {
    pub segment: u64,
    pub bytes: usize,
    pub file: Arc<File>,
}

struct Current {
    id: u64,
    file: Arc<File>,
    /// Where the next record goes.
    len: u64,
    /// The file's length: more than `len` in a reused spare.
    disk: u64,
}

impl Current {
    /// The segment now reaches `end`: the bytes the file grew by.
    fn reach(&mut self, end: u64) -> u64 {
        let grown = end.saturating_sub(self.disk);
        self.disk += grown;
        grown
    }
}

/// What replay found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayReport {
    pub segments: usize,
    pub records: usize,
    pub spans: usize,
    pub logs: usize,
    /// Bytes at the end of the last segment that were not a whole record.
    pub torn_bytes: u64,
    /// Segments set aside as corrupt.
    pub set_aside: Vec<PathBuf>,
}

pub struct Wal {
    dir: PathBuf,
    config: WalConfig,
    /// Every segment on disk (the current one included), with its size.
    segments: BTreeMap<u64, u64>,
    /// Segments to set aside instead of deleting once their good records are committed.
    corrupt: Vec<u64>,
    /// Committed segments kept for reuse, `<id>.spare`, with their sizes; and their sum.
    spares: BTreeMap<u64, u64>,
    spare_bytes: u64,
    current: Option<Current>,
    /// Id of the next segment; ids only grow.
    next_id: u64,
    total: u64,
    buf: Vec<u8>,
    /// The spans of the record being written, copied into one block (their stores keep their
    /// room up to [`SCRATCH_KEEP`]).
    scratch: SpanBlock,
    /// The long values records of the segment `values_segment` defined (large spans refer to
    /// them instead of writing them again).
    values: SegmentValues,
    values_segment: u64,
    /// A compressed record's body, and the compressor (made at the first large record).
    packed: Vec<u8>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// Large records still to write without trying to compress them.
    skip_compress: u32,
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.wal"))
}

fn spare_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.spare"))
}

/// The end marker of segment `id`: a record header with length 0.
fn end_marker(id: u64) -> [u8; RECORD_HEADER] {
    let mut m = [0u8; RECORD_HEADER];
    finish_record(&mut m, id);
    m
}

/// Write segment `id`'s end marker at `at` and make it durable.
fn write_end_marker(file: &File, id: u64, at: u64) -> io::Result<()> {
    file.write_all_at(&end_marker(id), at)?;
    file.sync_data()
}

impl Wal {
    /// Open the log in `dir` (created if missing) and hand every record already in it to
    /// `replay(segment, ingest_ns, resource_spans)`, oldest first.
    pub fn open(
        dir: &Path,
        config: WalConfig,
        mut replay: impl FnMut(u64, i64, Record),
    ) -> Result<(Wal, ReplayReport), WalError> {
        let io = |source| WalError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let mut ids = Vec::new();
        let mut spares = BTreeMap::new();
        // Ids only grow: past every segment, spare or set-aside segment there is (a spare
        // holds records with its old id, which a new segment must never have).
        let mut highest = 0;
        for entry in fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((hex, kind)) = name.split_once('.') else {
                continue;
            };
            let Ok(id) = u64::from_str_radix(hex, 16) else {
                continue;
            };
            match kind {
                "wal" => ids.push(id),
                "spare" => {
                    let size = entry.metadata().map_err(io)?.len();
                    spares.insert(id, size);
                }
                "wal.corrupt" => {}
                _ => continue,
            }
            highest = highest.max(id);
        }
        ids.sort_unstable();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            config,
            segments: BTreeMap::new(),
            corrupt: Vec::new(),
            spare_bytes: spares.values().sum(),
            spares,
            current: None,
            next_id: highest + 1,
            total: 0,
            buf: Vec::new(),
            scratch: SpanBlock::default(),
            values: SegmentValues::default(),
            values_segment: 0,
            packed: Vec::new(),
            compressor: None,
            skip_compress: 0,
        };
        let mut report = ReplayReport::default();
        let last = ids.last().copied();
        for id in ids {
            let path = seg_path(dir, id);
            let data = fs::read(&path).map_err(|source| WalError::Io {
                path: path.clone(),
                source,
            })?;
            report.segments += 1;
            let scan = scan_segment(&data, id, |ingest, rec| {
                report.records += 1;
                report.spans += rec.spans.len();
                report.logs += spanlake_core::batch::count_logs(&rec.resource_logs);
                replay(id, ingest, rec)
            });
            let is_last = Some(id) == last;
            let old_format = data.starts_with(MAGIC_V1);
            // Any segment but the newest must end with its marker: without one it is damaged.
            let scan = match scan {
                Ok(Scanned { end, marker: false }) if !is_last => Err(Damage {
                    at: end,
                    why: "segment ends without its end marker",
                    torn: 0,
                    foreign: false,
                }),
                scanned => scanned,
            };
            // The bytes of the segment that stay on disk (a reused file's go on past its
            // records).
            let kept = match scan {
                Ok(Scanned { marker: true, .. }) => data.len(),
                // The newest segment ends where its records do (a crash came before the log
                // moved on): it gets its end marker there, so that once newer segments follow
                // it, it does not look damaged.
                Ok(Scanned { end, marker: false }) => {
                    data.len().max(wal.end_on_replay(&path, id, end))
                }
                // Created, or being reused, when the crash came before its header was
                // written: nothing in it is this segment's.
                Err(Damage { foreign: true, .. }) if is_last || data.is_empty() => {
                    let _ = fs::remove_file(&path);
                    continue;
                }
                // Past the header (`at > 0`): a crash mid-write leaves a partial record at the
                // very end; nothing in it was acknowledged. Cut it off (older segments) or
                // end the segment in its place, so that once newer segments follow this one
                // it does not look damaged.
                Err(Damage { at, why, torn, .. }) if is_last && at > 0 => {
                    report.torn_bytes = torn as u64;
                    tracing::info!(segment = %path.display(), bytes = torn, reason = why, "write-ahead log: dropping a torn last record");
                    if old_format {
                        let cut = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_len(at as u64).and_then(|_| f.sync_all()));
                        if let Err(e) = cut {
                            tracing::warn!(segment = %path.display(), error = %e, "write-ahead log: cannot cut the torn record off");
                        }
                        at
                    } else {
                        data.len().max(wal.end_on_replay(&path, id, at))
                    }
                }
                Err(Damage { at, why, .. }) => {
                    tracing::error!(segment = %path.display(), offset = at, reason = why, "write-ahead log: segment is damaged; its records before the damage are replayed and it is set aside as .corrupt");
                    wal.corrupt.push(id);
                    report.set_aside.push(path.with_extension("wal.corrupt"));
                    data.len()
                }
            };
            wal.segments.insert(id, kept as u64);
            wal.total += kept as u64;
        }
        while wal.spares.len() > SPARES_MAX {
            wal.drop_spare();
        }
        Ok((wal, report))
    }

    /// End the newest segment found at replay at `at` (where its good records end): the
    /// bytes it keeps.
    fn end_on_replay(&self, path: &Path, id: u64, at: usize) -> usize {
        let ended = OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| write_end_marker(&f, id, at as u64));
        match ended {
            Ok(()) => at + RECORD_HEADER,
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "write-ahead log: cannot write the end marker of the newest segment; once a newer one follows, it will be set aside (its records are replayed all the same)");
                at
            }
        }
    }

    /// Let every spare segment go (a clean stop: the next start begins with fresh files).
    pub fn drop_spares(&mut self) {
        while !self.spares.is_empty() {
            self.drop_spare();
        }
    }

    /// Let the oldest spare segment go.
    fn drop_spare(&mut self) {
        if let Some((id, size)) = self.spares.pop_first() {
            self.spare_bytes -= size;
            let path = spare_path(&self.dir, id);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(segment = %path.display(), error = %e, "write-ahead log: cannot remove a spare segment");
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of every segment on disk.
    pub fn size(&self) -> u64 {
        self.total
    }

    pub fn max_size(&self) -> u64 {
        self.config.max_size
    }

    /// The segment records are written to now (the next one if none is open yet).
    pub fn current_segment(&self) -> u64 {
        match &self.current {
            Some(c) => c.id,
            None => self.next_id,
        }
    }

    /// Every record written so far is in committed files: close the current segment, so that
    /// `trim` can let it go, and start the next record in a new one.
    pub fn seal(&mut self) {
        if let Some(mut cur) = self.current.take()
            && let Err(e) = self.end_segment(&mut cur)
        {
            // Its spans are committed; should a crash come before `trim`, the replay sets it
            // aside after handing them back.
            tracing::warn!(segment = %seg_path(&self.dir, cur.id).display(), error = %e, "write-ahead log: cannot end a segment");
        }
    }

    /// Write `cur`'s end marker, durably: once a newer segment exists, replay expects it.
    fn end_segment(&mut self, cur: &mut Current) -> Result<(), WalError> {
        write_end_marker(&cur.file, cur.id, cur.len).map_err(|source| WalError::Io {
            path: seg_path(&self.dir, cur.id),
            source,
        })?;
        self.total += cur.reach(cur.len + RECORD_HEADER as u64);
        self.segments.insert(cur.id, cur.disk);
        Ok(())
    }

    /// Append one record. It is written (in the page cache) when this returns; it is durable
    /// once its file has been fsynced.
    pub fn append(
        &mut self,
        ingest_ns: i64,
        spans: &[SpanBlock],
        logs: &[ResourceLogs],
    ) -> Result<Written, WalError> {
        let written = self.append_record(ingest_ns, spans, logs);
        if written.is_err() {
            // Not in the segment: later records must not refer to values it defined.
            self.values.rollback();
        }
        written
    }

    fn append_record(
        &mut self,
        ingest_ns: i64,
        spans: &[SpanBlock],
        logs: &[ResourceLogs],
    ) -> Result<Written, WalError> {
        let segment = self.current_segment();
        let native = self.encode(ingest_ns, spans, logs, segment);
        let len = self.buf.len() as u64;
        let needs_new = match &self.current {
            None => true,
            Some(c) => c.len + len > self.config.segment_size && c.len > SEGMENT_HEADER as u64,
        };
        if needs_new && native && self.current.is_some() {
            // The record goes to the next segment: it may refer only to values defined there
            // (encoding for another segment starts its table anew).
            self.encode(ingest_ns, spans, logs, self.next_id);
        }
        let len = self.buf.len() as u64;
        let payload_len = self.buf.len() - RECORD_HEADER;
        if payload_len > u32::MAX as usize {
            return Err(WalError::Io {
                path: self.dir.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "record over 4 GiB"),
            });
        }
        // What the log's files grow by, at most: past the current file's end, or a new
        // segment's header, the record, and the end marker of the segment it follows (a spare
        // reused for it is already counted among the spares).
        let grows = match (needs_new, &self.current) {
            (false, Some(c)) => (c.len + len).saturating_sub(c.disk),
            (true, None) | (false, None) => SEGMENT_HEADER as u64 + len,
            (true, Some(_)) => (SEGMENT_HEADER + RECORD_HEADER) as u64 + len,
        };
        // Spares give way to records.
        while self.total + grows + self.spare_bytes > self.config.max_size
            && !self.spares.is_empty()
        {
            self.drop_spare();
        }
        if self.total + grows > self.config.max_size {
            return Err(WalError::Full {
                used: self.total,
                max: self.config.max_size,
            });
        }
        if needs_new {
            self.rotate()?;
        }
        let Some(cur) = self.current.as_mut() else {
            return Err(WalError::Io {
                path: self.dir.clone(),
                source: io::Error::other("no open segment"),
            });
        };
        finish_record(&mut self.buf, cur.id);
        let path = seg_path(&self.dir, cur.id);
        // A write that fails part way leaves a record that does not check out after the
        // last good one: the next record, or the end marker, is written over it.
        if let Err(source) = cur.file.write_all_at(&self.buf, cur.len) {
            return Err(WalError::Io { path, source });
        }
        cur.len += len;
        self.total += cur.reach(cur.len);
        self.segments.insert(cur.id, cur.disk);
        self.values.commit();
        Ok(Written {
            segment: cur.id,
            bytes: len as usize,
            file: Arc::clone(&cur.file),
        })
    }

    /// Encode one record into `buf` for `segment` (its header is left to [`finish_record`]);
    /// whether its spans are in the own encoding (which refers to the segment's values).
    fn encode(
        &mut self,
        ingest_ns: i64,
        spans: &[SpanBlock],
        logs: &[ResourceLogs],
        segment: u64,
    ) -> bool {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; RECORD_HEADER]);
        self.buf.extend_from_slice(&ingest_ns.to_le_bytes());
        let n_spans = spans.iter().map(SpanBlock::len).sum::<usize>();
        let native = large_spans(spans);
        if native {
            if self.values_segment != segment {
                self.values.clear();
                self.values_segment = segment;
            }
            SpanBlock::encode_native(spans, &mut self.scratch, &mut self.values, &mut self.buf);
            if self.scratch.heap_bytes() > SCRATCH_KEEP {
                self.scratch = SpanBlock::default();
            }
        } else {
            for b in spans {
                // A block still exactly its request (no processor changed it) is written as
                // the request's own bytes: the same fields, not encoded again.
                match b.request() {
                    Some(request) => self.buf.extend_from_slice(request),
                    None => b.encode(&mut self.buf),
                }
            }
        }
        for g in logs {
            prost::encoding::message::encode(2, g, &mut self.buf);
        }
        let items = n_spans + spanlake_core::batch::count_logs(logs);
        self.compress_body(items);
        native
    }

    /// Compress the encoded record in `buf` (after its header and ingest time) when its
    /// `items` (spans and log records) are large and it shrinks by half: what `write` saves
    /// copying into the page cache pays for zstd only then (random letters shrink to ~60% and
    /// cost more to compress than they save). Otherwise leave it, and after a poor ratio skip
    /// the next `COMPRESS_BACKOFF` large records.
    fn compress_body(&mut self, items: usize) {
        const BODY: usize = RECORD_HEADER + 8;
        let body = self.buf.len() - BODY;
        if body < COMPRESS_MIN_BYTES || body < items.saturating_mul(COMPRESS_SPAN_BYTES) {
            return;
        }
        if self.skip_compress > 0 {
            self.skip_compress -= 1;
            return;
        }
        let compressor = match &mut self.compressor {
            Some(c) => c,
            None => match zstd::bulk::Compressor::new(1) {
                Ok(c) => self.compressor.insert(c),
                Err(_) => return,
            },
        };
        self.packed.clear();
        self.packed.reserve(zstd::zstd_safe::compress_bound(body));
        match compressor.compress_to_buffer(&self.buf[BODY..], &mut self.packed) {
            Ok(n) if n <= body / 2 => {
                self.buf.truncate(BODY);
                self.buf.extend_from_slice(&self.packed);
            }
            _ => self.skip_compress = COMPRESS_BACKOFF,
        }
    }

    /// Close the current segment (ended and fsynced, so only the newest segment can ever hold
    /// a torn record) and start the next: a spare segment if there is one, else a new file.
    fn rotate(&mut self) -> Result<(), WalError> {
        if let Some(mut cur) = self.current.take()
            && let Err(e) = self.end_segment(&mut cur)
        {
            self.current = Some(cur);
            return Err(e);
        }
        let id = self.next_id;
        let path = seg_path(&self.dir, id);
        let io = |source| WalError::Io {
            path: path.clone(),
            source,
        };
        let (file, disk) = match self.reuse_spare(&path) {
            Some(reused) => reused,
            None => {
                let file = OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&path)
                    .map_err(io)?;
                (file, 0)
            }
        };
        let mut header = [0u8; SEGMENT_HEADER];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        header[MAGIC.len()..].copy_from_slice(&id.to_le_bytes());
        if let Err(e) = file.write_all_at(&header, 0).and_then(|_| file.sync_data()) {
            let _ = fs::remove_file(&path);
            return Err(io(e));
        }
        // The new name must survive a crash too.
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            let _ = fs::remove_file(&path);
            return Err(io(e));
        }
        self.next_id = id + 1;
        let disk = disk.max(SEGMENT_HEADER as u64);
        self.segments.insert(id, disk);
        self.total += disk;
        self.current = Some(Current {
            id,
            file: Arc::new(file),
            len: SEGMENT_HEADER as u64,
            disk,
        });
        Ok(())
    }

    /// The newest spare segment, renamed `path` and open for writing over, and its length.
    fn reuse_spare(&mut self, path: &Path) -> Option<(File, u64)> {
        while let Some((old, size)) = self.spares.pop_last() {
            self.spare_bytes -= size;
            let spare = spare_path(&self.dir, old);
            let reused = fs::rename(&spare, path).and_then(|_| {
                OpenOptions::new().write(true).open(path).inspect_err(|_| {
                    let _ = fs::remove_file(path);
                })
            });
            match reused {
                Ok(file) => return Some((file, size)),
                Err(e) => {
                    tracing::warn!(segment = %spare.display(), error = %e, "write-ahead log: cannot reuse a spare segment");
                    let _ = fs::remove_file(&spare);
                }
            }
        }
        None
    }

    /// Every span of segments before `keep_from` is in a committed file: let them go (the
    /// current segment is never removed). Returns the bytes freed.
    pub fn trim(&mut self, keep_from: u64) -> u64 {
        let current = self.current.as_ref().map(|c| c.id);
        let old: Vec<u64> = self
            .segments
            .range(..keep_from)
            .map(|(id, _)| *id)
            .filter(|id| Some(*id) != current)
            .collect();
        let mut freed = 0;
        // Newest first: the spares kept are those most likely still in the page cache.
        for id in old.into_iter().rev() {
            let path = seg_path(&self.dir, id);
            let result = if self.corrupt.contains(&id) {
                fs::rename(&path, path.with_extension("wal.corrupt"))
            } else {
                self.recycle(id, &path)
            };
            match result {
                Ok(()) => {
                    if let Some(size) = self.segments.remove(&id) {
                        self.total -= size;
                        freed += size;
                    }
                    self.corrupt.retain(|c| *c != id);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Some(size) = self.segments.remove(&id) {
                        self.total -= size;
                    }
                }
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "write-ahead log: cannot remove a committed segment; will try again");
                }
            }
        }
        freed
    }

    /// Keep committed segment `id` as a spare when there is room for one, else remove it.
    fn recycle(&mut self, id: u64, path: &Path) -> io::Result<()> {
        let live = self.total - self.segments.get(&id).copied().unwrap_or(0);
        let size = fs::metadata(path)?.len();
        let keep = self.spares.len() < SPARES_MAX
            && size <= self.config.segment_size.saturating_mul(SPARE_SEGMENTS_MAX)
            && live + self.spare_bytes + size <= self.config.max_size;
        if keep {
            match fs::rename(path, spare_path(&self.dir, id)) {
                Ok(()) => {
                    self.spares.insert(id, size);
                    self.spare_bytes += size;
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "write-ahead log: cannot keep a committed segment for reuse");
                }
            }
        }
        fs::remove_file(path)
    }
}

/// Fill in the header of the record encoded in `buf` for segment `id`: the payload's length,
/// then the CRC-32 of the id and the payload, then the id.
fn finish_record(buf: &mut [u8], id: u64) {
    let payload_len = buf.len() - RECORD_HEADER;
    buf[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf[8..16].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Where a segment's records end, and whether at its end marker (segments written before
/// recycling have none: they end with the file).
struct Scanned {
    end: usize,
    marker: bool,
}

struct Damage {
    at: usize,
    why: &'static str,
    /// Bytes of the record that does not check out (as far as the segment holds them).
    torn: usize,
    /// Nothing in the segment is its own: no header yet, or another segment's (a spare was
    /// being reused).
    foreign: bool,
}

/// Walk segment `id`'s records, handing each good one to `each`; stop at its end marker, at
/// another segment's records (what a reused file held before), or at the first damage.
fn scan_segment(
    data: &[u8],
    id: u64,
    mut each: impl FnMut(i64, Record),
) -> Result<Scanned, Damage> {
    let damage = |at, why, torn| Damage {
        at,
        why,
        torn,
        foreign: false,
    };
    if data.starts_with(MAGIC_V1) {
        return scan_old_segment(data, each).map(|()| Scanned {
            end: data.len(),
            marker: true,
        });
    }
    if data.len() < SEGMENT_HEADER {
        return Err(Damage {
            foreign: true,
            ..damage(0, "segment shorter than its header", data.len())
        });
    }
    if &data[..MAGIC.len()] != MAGIC {
        return Err(damage(
            0,
            "not a spanlake write-ahead log segment",
            data.len(),
        ));
    }
    if data[MAGIC.len()..SEGMENT_HEADER] != id.to_le_bytes() {
        return Err(Damage {
            foreign: true,
            ..damage(0, "the header is another segment's", data.len())
        });
    }
    let mut at = SEGMENT_HEADER;
    let mut values = SegmentValues::default();
    loop {
        let rest = &data[at..];
        if rest.is_empty() {
            return Ok(Scanned {
                end: at,
                marker: false,
            });
        }
        if rest.len() < RECORD_HEADER {
            return Err(damage(at, "partial record header", rest.len()));
        }
        if rest[8..16] != id.to_le_bytes() {
            // Not this segment's: what the file held before it was reused, or zeros.
            return Ok(Scanned {
                end: at,
                marker: false,
            });
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let torn = rest.len().min(RECORD_HEADER.saturating_add(len));
        let Some(checked) = rest.get(8..RECORD_HEADER + len) else {
            return Err(damage(at, "partial record", torn));
        };
        if crc32fast::hash(checked) != crc {
            return Err(damage(at, "checksum mismatch", torn));
        }
        if len == 0 {
            return Ok(Scanned {
                end: at + RECORD_HEADER,
                marker: true,
            });
        }
        let payload = &checked[8..];
        if len < 8 {
            return Err(damage(at, "record shorter than its ingest time", torn));
        }
        let Some((ingest, rec)) = read_record(payload, &mut values) else {
            return Err(damage(at, "record does not decode", torn));
        };
        each(ingest, rec);
        at += RECORD_HEADER + len;
    }
}

/// A checked record's payload (at least 8 bytes): its ingest time and body.
fn read_record(payload: &[u8], values: &mut SegmentValues) -> Option<(i64, Record)> {
    let (ingest, body) = payload.split_first_chunk::<8>()?;
    let rec = record_body(body).and_then(|body| Record::decode(&body, values))?;
    Some((i64::from_le_bytes(*ingest), rec))
}

/// Walk a segment written before recycling (records with an 8-byte header, no end marker)
/// to its end.
fn scan_old_segment(data: &[u8], mut each: impl FnMut(i64, Record)) -> Result<(), Damage> {
    let damage = |at: usize, why| Damage {
        at,
        why,
        torn: data.len() - at,
        foreign: false,
    };
    let mut at = MAGIC_V1.len();
    let mut values = SegmentValues::default();
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < RECORD_HEADER_V1 {
            return Err(damage(at, "partial record header"));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let Some(payload) = rest.get(RECORD_HEADER_V1..RECORD_HEADER_V1 + len) else {
            return Err(damage(at, "partial record"));
        };
        if len < 8 || crc32fast::hash(payload) != crc {
            return Err(damage(at, "checksum mismatch"));
        }
        let Some((ingest, rec)) = read_record(payload, &mut values) else {
            return Err(damage(at, "record does not decode"));
        };
        each(ingest, rec);
        at += RECORD_HEADER_V1 + len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use proptest::prelude::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "spanlake-wal-{tag}-{}-{}",
            std::process::id(),
            super::super::writer::now_nanos()
        ));
        fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn groups(n: u8) -> Vec<SpanBlock> {
        vec![SpanBlock::from_prost(&[ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![n; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("span {i}"),
                        start_time_unix_nano: 1_000 + i as u64,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }])]
    }

    fn replayed(dir: &Path) -> (Vec<(u64, i64, usize)>, ReplayReport, Wal) {
        let mut got = Vec::new();
        let (wal, report) = Wal::open(dir, WalConfig::default(), |seg, ingest, rs| {
            got.push((seg, ingest, rs.spans.len()))
        })
        .expect("open");
        (got, report, wal)
    }

    /// `n` spans of 20 attributes of 5,000 pseudo-random letters: the same 20 values on every
    /// span, as the testbed sends them, or (`fresh`) new values on every span.
    fn large(n: u8, seed: u64, fresh: bool) -> Vec<SpanBlock> {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        let mut x = seed;
        let mut letters = || -> String {
            (0..5000)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    char::from(b'a' + ((x >> 33) % 26) as u8)
                })
                .collect()
        };
        let once: Vec<String> = (0..20).map(|_| letters()).collect();
        let mut value = |a: usize| if fresh { letters() } else { once[a].clone() };
        let spans = (0..n)
            .map(|i| Span {
                trace_id: vec![n; 16],
                span_id: vec![i + 1; 8],
                name: format!("span {i}"),
                attributes: (0..20)
                    .map(|a| KeyValue {
                        key: format!("attribute.{a}"),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(value(a))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        vec![SpanBlock::from_prost(&[ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }])]
    }

    /// Spans in the log's own encoding, as a record holds them.
    fn native(spans: &[SpanBlock]) -> Vec<u8> {
        let mut out = Vec::new();
        SpanBlock::encode_native(
            spans,
            &mut SpanBlock::default(),
            &mut SegmentValues::default(),
            &mut out,
        );
        out
    }

    /// Blocks as the receivers decode them: a long value repeated at the same place of the
    /// next span points at the same text.
    fn as_received(blocks: Vec<SpanBlock>) -> (Vec<SpanBlock>, Vec<u8>) {
        let mut body = Vec::new();
        for b in &blocks {
            b.encode(&mut body);
        }
        let (block, _) = SpanBlock::decode(&body, false).expect("decodes");
        (vec![block], body)
    }

    #[test]
    fn records_of_a_segment_refer_to_the_values_earlier_ones_wrote_and_replay_whole() {
        let dir = tempdir("shared");
        // A segment holds a record that writes the values (~107 KB) and two that refer to
        // them (~6 KB each).
        let config = WalConfig {
            segment_size: 120_000,
            max_size: 10_000_000,
            ..WalConfig::default()
        };
        let (mut wal, _) = Wal::open(&dir, config.clone(), |_, _, _| {}).expect("open");
        let (same, _) = as_received(large(10, 1, false));
        let mut sizes = Vec::new();
        let mut segments = Vec::new();
        for i in 0..12 {
            let w = wal.append(i, &same, &[]).expect("append");
            sizes.push(w.bytes);
            segments.push(w.segment);
        }
        // The first record of each segment writes the 20 values, the next ones refer to them.
        for i in 1..12 {
            let first = segments[i] != segments[i - 1];
            assert_eq!(
                sizes[i] > 100_000,
                first,
                "record {i}: {sizes:?} in {segments:?}"
            );
        }
        assert!(segments[11] > segments[0], "{segments:?}");
        // A refused record (the log is full) takes back the values it defined.
        let before = wal.size();
        let big = wal.config.max_size;
        wal.config.max_size = before + 1000;
        let (fresh, _) = as_received(large(10, 2, false));
        assert!(matches!(
            wal.append(99, &fresh, &[]),
            Err(WalError::Full { .. })
        ));
        wal.config.max_size = big;
        let w = wal.append(12, &fresh, &[]).expect("append");
        assert!(w.bytes > 100_000, "the values are written again");
        // A refused record of ordinary spans takes back nothing of the written ones.
        wal.config.max_size = wal.size() + 10;
        assert!(matches!(
            wal.append(98, &groups(3), &[]),
            Err(WalError::Full { .. })
        ));
        wal.config.max_size = big;
        let w = wal.append(13, &fresh, &[]).expect("append");
        assert!(
            w.bytes < 10_000,
            "it refers to the values written before: {}",
            w.bytes
        );
        drop(wal);
        let mut got = Vec::new();
        let (mut wal, report) = Wal::open(&dir, config.clone(), |seg, ingest, rec| {
            got.push((seg, ingest, rec))
        })
        .expect("replay");
        assert!(report.set_aside.is_empty());
        assert_eq!(got.len(), 14);
        for (i, (_, ingest, rec)) in got.iter().enumerate() {
            assert_eq!(*ingest, i as i64);
            let expected = if i < 12 { &same } else { &fresh };
            assert!(rec.spans.to_prost() == expected[0].to_prost(), "record {i}");
        }
        // Once earlier segments are gone, a later one replays alone.
        let last = got[12].0;
        wal.trim(last);
        drop(wal);
        let mut n = 0;
        let (_, report) = Wal::open(&dir, config, |_, _, rec| {
            assert!(
                rec.spans.to_prost() == fresh[0].to_prost()
                    || rec.spans.to_prost() == same[0].to_prost()
            );
            n += 1;
        })
        .expect("replay");
        assert!(report.set_aside.is_empty() && n >= 1, "{report:?}");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn records_of_large_repeated_spans_write_each_value_once_and_come_back_whole() {
        let dir = tempdir("repeated");
        let config = WalConfig::default();
        let (mut wal, _) = Wal::open(&dir, config.clone(), |_, _, _| {}).expect("open");
        let (same, raw) = as_received(large(10, 1, false));
        assert!(raw.len() > 1_000_000);
        // Log records ride along after the spans.
        let logs = vec![ResourceLogs {
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            ..Default::default()
        }];
        let w = wal.append(7, &same, &logs).expect("append");
        assert!(
            w.bytes < raw.len() / 5,
            "the same values on every span: {} bytes written for {} of OTLP",
            w.bytes,
            raw.len()
        );
        // In the log's own encoding (not protobuf, compressed, which would be as small).
        let seg = fs::read(seg_path(&dir, w.segment)).expect("segment");
        let body = SEGMENT_HEADER + RECORD_HEADER + 8;
        assert_eq!(seg[body..body + 4], NATIVE_MAGIC);
        // Small spans are written as protobuf, as they are encoded.
        let small = groups(3);
        let mut small_raw = Vec::new();
        small[0].encode(&mut small_raw);
        let w = wal.append(8, &small, &[]).expect("append");
        assert_eq!(w.bytes, RECORD_HEADER + 8 + small_raw.len());
        drop(wal);
        let mut got = Vec::new();
        let (_, report) =
            Wal::open(&dir, config, |_, ingest, rec| got.push((ingest, rec))).expect("replay");
        assert_eq!(report.records, 2);
        assert!(report.set_aside.is_empty());
        assert_eq!(got[0].0, 7);
        assert!(
            got[0].1.spans.to_prost() == same[0].to_prost(),
            "every span and value comes back"
        );
        assert_eq!(got[0].1.resource_logs, logs);
        assert_eq!(got[1].1.spans.to_prost(), small[0].to_prost());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn records_of_earlier_builds_with_spans_as_protobuf_are_replayed() {
        let dir = tempdir("protobuf");
        let spans = groups(4);
        let logs = vec![ResourceLogs::default()];
        let mut payload = 42i64.to_le_bytes().to_vec();
        spans[0].encode(&mut payload);
        for g in &logs {
            prost::encoding::message::encode(2, g, &mut payload);
        }
        let mut seg = MAGIC_V1.to_vec();
        seg.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        seg.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        seg.extend_from_slice(&payload);
        fs::write(seg_path(&dir, 1), &seg).expect("write");
        let mut got = Vec::new();
        let (_, report) = Wal::open(&dir, WalConfig::default(), |_, ingest, rec| {
            got.push((ingest, rec))
        })
        .expect("replay");
        assert_eq!((report.records, report.spans), (1, 4));
        assert_eq!(got[0].0, 42);
        assert_eq!(got[0].1.spans.to_prost(), spans[0].to_prost());
        assert_eq!(got[0].1.resource_logs, logs);
        fs::remove_dir_all(&dir).ok();
    }

    /// A block still exactly its request is logged as the request's own bytes (here with a
    /// field this build does not know, which encoding the block would not write); one a
    /// processor changed is encoded from its tables, so a masked secret stays out of the log.
    /// Both replay as the blocks were.
    #[test]
    fn requests_are_logged_as_they_came_unless_a_processor_changed_them() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
        use spanlake_core::spans::Value;
        let request = |value: &str| {
            let mut group = ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![7; 16],
                        span_id: vec![8; 8],
                        name: "checkout".into(),
                        attributes: vec![KeyValue {
                            key: "card".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(value.into())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }
            .encode_to_vec();
            // Field 50, a varint: unknown to this build, skipped when read.
            group.extend_from_slice(&[0x90, 0x03, 0x01]);
            let mut body = vec![0x0a];
            prost::encoding::encode_varint(group.len() as u64, &mut body);
            body.extend_from_slice(&group);
            body
        };
        let kept = request("4111 1111 1111 1111 (test)");
        let (as_came, _) = SpanBlock::decode_request(kept.clone(), true).expect("decodes");
        assert_eq!(as_came.request(), Some(&kept[..]));
        let (mut masked, _) =
            SpanBlock::decode_request(request("secret-card-number"), true).expect("decodes");
        let mask = masked.push_str("****");
        masked.attrs_mut()[0].set_value(Value::Str(mask));
        assert_eq!(masked.request(), None, "changed: no longer its request");

        // A request holding more than resource groups keeps no bytes (a record's field 2 is
        // its log records).
        let mut foreign = kept.clone();
        foreign.extend_from_slice(&[0x12, 0x00]);
        let (b, _) = SpanBlock::decode_request(foreign, true).expect("decodes");
        assert_eq!(b.request(), None);

        let dir = tempdir("requests");
        let (mut wal, _) = Wal::open(&dir, WalConfig::default(), |_, _, _| {}).expect("open");
        let w1 = wal
            .append(1, std::slice::from_ref(&as_came), &[])
            .expect("append");
        let w2 = wal
            .append(2, std::slice::from_ref(&masked), &[])
            .expect("append");
        assert_eq!(w1.bytes, RECORD_HEADER + 8 + kept.len());
        drop(wal);
        let bytes = fs::read(seg_path(&dir, w1.segment)).expect("segment");
        assert!(
            bytes.windows(kept.len()).any(|w| w == kept),
            "the request's own bytes are in the log"
        );
        assert!(
            !bytes.windows(6).any(|w| w == b"secret"),
            "the masked secret is not"
        );
        assert_eq!(w2.segment, w1.segment);
        let mut back = Vec::new();
        Wal::open(&dir, WalConfig::default(), |_, ingest, rec| {
            back.push((ingest, rec.spans.to_prost()))
        })
        .expect("replay");
        assert_eq!(
            back,
            vec![(1, as_came.to_prost()), (2, masked.to_prost())],
            "replayed as they were taken"
        );
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn records_of_many_small_log_records_are_written_as_they_are() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
        use opentelemetry_proto::tonic::logs::v1::{LogRecord, ScopeLogs};
        let dir = tempdir("small-logs");
        let (mut wal, _) = Wal::open(&dir, WalConfig::default(), |_, _, _| {}).expect("open");
        // 2,000 log lines of ~60 bytes: 128 KB that would compress, but compressing small
        // items costs more than writing them.
        let logs = vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..2000)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_000 + i,
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(format!(
                                "GET /api/items/{i} 200 in 3 ms from 10.0.0.1"
                            ))),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }];
        let raw: usize = logs
            .iter()
            .map(|g| prost::encoding::message::encoded_len(2, g))
            .sum();
        assert!(raw > COMPRESS_MIN_BYTES);
        let w = wal.append(1, &[], &logs).expect("append");
        assert_eq!(w.bytes, RECORD_HEADER + 8 + raw);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn records_that_do_not_compress_are_written_as_they_are() {
        let dir = tempdir("incompressible");
        let (mut wal, _) = Wal::open(&dir, WalConfig::default(), |_, _, _| {}).expect("open");
        // New random letters on every span shrink by less than half (~4.7 bits of 8): written
        // as encoded, and the next large records are not tried.
        let mut sizes = Vec::new();
        for seed in 1..=3 {
            let spans = large(4, seed, true);
            let w = wal.append(seed as i64, &spans, &[]).expect("append");
            sizes.push((w.bytes, RECORD_HEADER + 8 + native(&spans).len()));
        }
        // (A value the segment's table has no room for is written in place, a few bytes
        // smaller than one defined for later records.)
        assert!(
            sizes
                .iter()
                .all(|&(got, raw)| got <= raw && raw - got < raw / 100),
            "{sizes:?}"
        );
        assert_eq!(wal.skip_compress, COMPRESS_BACKOFF - 2);
        drop(wal);
        let mut n = 0;
        let (_, report) = Wal::open(&dir, WalConfig::default(), |_, _, rec| n += rec.spans.len())
            .expect("replay");
        assert_eq!((report.records, n), (3, 12));
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn records_come_back_in_order_and_committed_segments_go() {
        let dir = tempdir("order");
        let config = small_segments();
        let (mut wal, report) = Wal::open(&dir, config.clone(), |_, _, _| {}).expect("open");
        assert_eq!(report, ReplayReport::default());
        let mut segs = Vec::new();
        for i in 1..=40u8 {
            segs.push(
                wal.append(i as i64, &groups(i), &[])
                    .expect("append")
                    .segment,
            );
        }
        assert!(segs.last() > segs.first(), "rotated: {segs:?}");
        drop(wal);
        let (got, report, mut wal) = replayed(&dir);
        assert_eq!(got.len(), 40);
        assert_eq!(
            got.iter().map(|g| g.1).collect::<Vec<_>>(),
            (1..=40).collect::<Vec<i64>>()
        );
        assert_eq!(got[9].2, 10);
        assert_eq!(report.spans, (1..=40).sum::<usize>());
        let before = wal.size();
        let freed = wal.trim(u64::MAX);
        assert_eq!(freed, before, "no segment is open after replay: all go");
        assert_eq!(wal.size(), 0);
        let left = files(&dir);
        assert_eq!(left.len(), SPARES_MAX, "{left:?}");
        assert!(left.iter().all(|f| f.ends_with(".spare")), "{left:?}");
        fs::remove_dir_all(&dir).ok();
    }

    /// Segments of 4 KiB in a log of 1 MiB: rotations come after a few records.
    fn small_segments() -> WalConfig {
        WalConfig {
            segment_size: 4096,
            max_size: 1 << 20,
            ..Default::default()
        }
    }

    /// Replay the log in `dir`: each record's segment and ingest time.
    fn replay_ids(dir: &Path, config: &WalConfig) -> (Vec<(u64, i64)>, ReplayReport) {
        let mut got = Vec::new();
        let (_, report) = Wal::open(dir, config.clone(), |seg, ingest, _| {
            got.push((seg, ingest))
        })
        .expect("replay");
        (got, report)
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Committed segments are kept as spares and written over as new segments: the records
    /// they held before never come back, a crash in a reused segment loses nothing
    /// acknowledged, and a spare caught mid-reuse by a crash holds nothing.
    #[test]
    fn committed_segments_are_reused_and_their_old_records_never_come_back() {
        let dir = tempdir("reuse");
        let config = small_segments();
        let (mut wal, _) = Wal::open(&dir, config.clone(), |_, _, _| {}).expect("open");
        for i in 1..=60u8 {
            wal.append(i as i64, &groups(9), &[]).expect("append");
        }
        assert!(wal.current_segment() > SPARES_MAX as u64 + 1);
        wal.seal();
        wal.trim(u64::MAX);
        let spares = files(&dir);
        assert_eq!(spares.len(), SPARES_MAX, "{spares:?}");
        let spare_size = fs::metadata(dir.join(&spares[SPARES_MAX - 1]))
            .expect("spare")
            .len();
        let first_new = wal.current_segment();

        // Fewer, smaller records than the spares held: each reused file goes on with another
        // segment's records after the new ones.
        let mut acked = Vec::new();
        for i in 1..=12u8 {
            let w = wal.append(100 + i as i64, &groups(1), &[]).expect("append");
            acked.push((w.segment, 100 + i as i64));
        }
        let used: Vec<u64> = acked.iter().map(|a| a.0).collect();
        assert_eq!(used[0], first_new);
        let reused = seg_path(&dir, first_new);
        assert_eq!(
            fs::metadata(&reused).expect("segment").len(),
            spare_size,
            "the newest spare is written over, not replaced"
        );
        assert!(
            files(&dir).iter().filter(|f| f.ends_with(".spare")).count() < SPARES_MAX,
            "spares were taken"
        );
        drop(wal); // a crash: nothing committed, nothing ended
        for round in 0..2 {
            let (got, report) = replay_ids(&dir, &config);
            assert_eq!(got, acked, "round {round}: the new records only, each once");
            assert_eq!(
                report.torn_bytes, 0,
                "another segment's records are not torn"
            );
            assert!(report.set_aside.is_empty(), "{:?}", report.set_aside);
        }

        // A newer segment after the reused ones: they all still read to their end markers.
        let (mut wal, _) = Wal::open(&dir, config.clone(), |_, _, _| {}).expect("replay");
        let w = wal.append(200, &groups(2), &[]).expect("append");
        acked.push((w.segment, 200));
        drop(wal);
        let (got, report) = replay_ids(&dir, &config);
        assert_eq!(got, acked);
        assert!(report.set_aside.is_empty(), "{:?}", report.set_aside);

        // A crash between a spare's rename and its new header: the file under the next
        // segment's name holds none of that segment's records, and goes.
        let spare = files(&dir)
            .into_iter()
            .find(|f| f.ends_with(".spare"))
            .expect("a spare is left");
        let next = w.segment + 1;
        fs::rename(dir.join(&spare), seg_path(&dir, next)).expect("rename");
        let (got, report) = replay_ids(&dir, &config);
        assert_eq!(got, acked);
        assert!(report.set_aside.is_empty(), "{:?}", report.set_aside);
        assert!(!seg_path(&dir, next).exists());
        fs::remove_dir_all(&dir).ok();
    }

    /// A record torn by a crash in a reused segment is dropped, and the segment ends in its
    /// place; a segment without its end marker that is not the newest is set aside.
    #[test]
    fn a_torn_record_in_a_reused_segment_is_dropped_and_a_missing_end_marker_is_damage() {
        let dir = tempdir("reuse-torn");
        let config = small_segments();
        let (mut wal, _) = Wal::open(&dir, config.clone(), |_, _, _| {}).expect("open");
        for i in 1..=20u8 {
            wal.append(i as i64, &groups(8), &[]).expect("append");
        }
        wal.seal();
        wal.trim(u64::MAX);
        let a = wal.append(101, &groups(1), &[]).expect("append");
        let b = wal.append(102, &groups(3), &[]).expect("append");
        assert_eq!(a.segment, b.segment);
        drop(wal);
        // Tear the second record: its last bytes never reached the disk.
        let path = seg_path(&dir, b.segment);
        let mut data = fs::read(&path).expect("read");
        let end = SEGMENT_HEADER + a.bytes + b.bytes;
        assert!(data.len() > end, "the reused file goes on past the records");
        data[end - 3] ^= 0x5a;
        fs::write(&path, &data).expect("write");
        let mut got = Vec::new();
        let (_, report) =
            Wal::open(&dir, config.clone(), |_, ingest, _| got.push(ingest)).expect("replay");
        assert_eq!(got, vec![101]);
        assert_eq!(report.torn_bytes, b.bytes as u64);
        assert!(report.set_aside.is_empty());
        let data = fs::read(&path).expect("read");
        let marker = SEGMENT_HEADER + a.bytes;
        assert_eq!(data[marker..marker + RECORD_HEADER], end_marker(b.segment));

        // Take the end marker away from a segment that is not the newest: damage.
        let (mut wal, _) = Wal::open(&dir, config.clone(), |_, _, _| {}).expect("replay");
        wal.append(103, &groups(1), &[]).expect("append");
        drop(wal);
        let mut data = fs::read(&path).expect("read");
        data[marker..marker + RECORD_HEADER].fill(0);
        fs::write(&path, &data).expect("write");
        let mut got = Vec::new();
        let (_, report) =
            Wal::open(&dir, config.clone(), |_, ingest, _| got.push(ingest)).expect("replay");
        assert_eq!(got, vec![101, 103], "every good record is handed back");
        assert_eq!(report.set_aside, vec![path.with_extension("wal.corrupt")]);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_log_refuses_past_max_size() {
        let dir = tempdir("full");
        let config = WalConfig {
            segment_size: 4096,
            max_size: 8192,
            ..Default::default()
        };
        let (mut wal, _) = Wal::open(&dir, config, |_, _, _| {}).expect("open");
        let mut n = 0;
        let err = loop {
            match wal.append(0, &groups(5), &[]) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(n > 10, "{n} records fit");
        assert!(matches!(err, WalError::Full { max: 8192, .. }), "{err}");
        assert!(wal.size() <= 8192);
        fs::remove_dir_all(&dir).ok();
    }

    fn dir_bytes(dir: &Path) -> u64 {
        fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").metadata().expect("meta").len())
            .sum()
    }

    /// With spares kept and reused, the log's files together never pass `max_size`, and the
    /// log's size is what its segment files take.
    #[test]
    fn spares_and_segments_together_stay_within_max_size() {
        let dir = tempdir("full-reuse");
        let config = WalConfig {
            segment_size: 4096,
            max_size: 16384,
            ..Default::default()
        };
        let (mut wal, _) = Wal::open(&dir, config, |_, _, _| {}).expect("open");
        let mut sizes = [2u8, 9, 5, 1, 7];
        let mut reused = 0;
        for round in 0..12 {
            let mut n = 0;
            loop {
                let spares = wal.spares.len();
                let appended = wal.append(0, &groups(sizes[n % sizes.len()]), &[]);
                reused += usize::from(wal.spares.len() < spares);
                match appended {
                    Ok(_) => n += 1,
                    Err(WalError::Full { .. }) => break,
                    Err(e) => panic!("{e}"),
                }
                let on_disk = dir_bytes(&dir);
                assert!(on_disk <= 16384, "round {round}: {on_disk} bytes");
                assert_eq!(wal.size() + wal.spare_bytes, on_disk, "round {round}");
            }
            assert!(n > 3, "round {round}: {n} records fit");
            sizes.rotate_left(1);
            // Everything is committed: the segments become spares.
            wal.seal();
            wal.trim(u64::MAX);
            assert!(dir_bytes(&dir) <= 16384);
        }
        assert!(
            reused >= 12,
            "spares were taken (reused, or let go for records) {reused} times"
        );
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_torn_tail_is_ignored_and_damage_elsewhere_is_set_aside() {
        let dir = tempdir("torn");
        let config = small_segments();
        let (mut wal, _) = Wal::open(&dir, config, |_, _, _| {}).expect("open");
        for i in 1..=30u8 {
            wal.append(i as i64, &groups(i % 7 + 1), &[])
                .expect("append");
        }
        let last = wal.current_segment();
        drop(wal);
        // Tear the last record of the last segment.
        let last_path = seg_path(&dir, last);
        let len = fs::metadata(&last_path).expect("meta").len();
        OpenOptions::new()
            .write(true)
            .open(&last_path)
            .expect("open")
            .set_len(len - 3)
            .expect("truncate");
        let (got, report, _) = replayed(&dir);
        assert_eq!(got.len(), 29, "the torn record is skipped");
        assert!(report.torn_bytes > 0);
        assert!(report.set_aside.is_empty());
        // …and cut off: a later segment after it does not make it look damaged.
        let (got, report, mut wal) = replayed(&dir);
        assert_eq!((got.len(), report.torn_bytes), (29, 0));
        wal.append(99, &groups(1), &[]).expect("a newer segment");
        drop(wal);
        let (got, report, _) = replayed(&dir);
        assert_eq!(got.len(), 30);
        assert!(report.set_aside.is_empty());

        // Flip a byte in the middle of the first segment.
        let first = seg_path(&dir, 1);
        let mut data = fs::read(&first).expect("read");
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
        fs::write(&first, &data).expect("write");
        let (got2, report, mut wal) = replayed(&dir);
        assert!(got2.len() < 29, "records after the damage are not read");
        assert_eq!(report.set_aside.len(), 1);
        wal.trim(u64::MAX);
        assert!(dir.join(format!("{:016x}.wal.corrupt", 1)).exists());
        // Set aside once: the next start does not see it again.
        let (_, report, _) = replayed(&dir);
        assert!(report.set_aside.is_empty());
        fs::remove_dir_all(&dir).ok();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// Replay of arbitrary damage: never a panic, and every record it returns was written.
        #[test]
        fn replay_survives_any_damage(
            cuts in proptest::collection::vec((0usize..4000, any::<u8>()), 0..6),
            truncate in proptest::option::of(0usize..4000),
        ) {
            let dir = tempdir("prop");
            let (mut wal, _) = Wal::open(&dir, WalConfig::default(), |_, _, _| {}).expect("open");
            for i in 1..=12u8 {
                wal.append(i as i64, &groups(i), &[]).expect("append");
            }
            let seg = wal.current_segment();
            drop(wal);
            let path = seg_path(&dir, seg);
            let mut data = fs::read(&path).expect("read");
            for (at, x) in &cuts {
                let at = at % data.len();
                data[at] ^= x;
            }
            if let Some(t) = truncate {
                data.truncate(t.min(data.len()));
            }
            fs::write(&path, &data).expect("write");
            let mut seen = Vec::new();
            let (_, report) = Wal::open(&dir, WalConfig::default(), |_, ingest, rs| {
                seen.push((ingest, rs.spans.len()))
            }).expect("open never fails on damage");
            for (ingest, n) in &seen {
                // each good record is one of those written, whole
                prop_assert!((1..=12).contains(ingest));
                prop_assert_eq!(*n as i64, *ingest);
            }
            prop_assert_eq!(report.records, seen.len());
            fs::remove_dir_all(&dir).ok();
        }
    }
}
