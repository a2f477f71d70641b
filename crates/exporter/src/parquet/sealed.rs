//! Sealed row groups: a partition's rows, sorted and encoded as Parquet in memory as soon as a
//! row group's worth has arrived, instead of waiting as Arrow until the whole file is written.
//!
//! Encoded, rows take a small fraction of their Arrow size (7–10 bytes per span instead of
//! ~830 for the benchmark's spans), so a partition holds at most one row group as Arrow however
//! large its file grows. A file is then the sealed row groups of its partition copied one after
//! the other, column chunk by column chunk, without decoding or re-encoding anything (statistics,
//! page indexes and bloom filters travel with them). Each row group is sorted by trace id, then
//! time, and says so in its sorting columns.
//!
//! A sealed row group is a complete Parquet file in memory, so the live tail can hand it to
//! queries by decoding it like any file of the lake.

use std::io::Write;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::Compression;
use parquet::bloom_filter::Sbbf;
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader, SortingColumn};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use spanlake_core::SpanBlock;
use spanlake_core::ids::push_id;

use super::convert::{SpanRows, clamp_nanos};
use super::flat::empty_lists;
use super::maps::write_chunk;
use super::own::{OwnColumns, leaves_of};
use super::schema::Table;

/// Spans waiting for their row group: a block as it was taken, and when.
#[derive(Debug, Clone)]
pub struct HeldSpans {
    pub ingest: i64,
    pub block: Arc<SpanBlock>,
}

/// Rows copied into the encoder at a time: each chunk is encoded while still in cache, and the
/// sorted copy never holds more than this many rows.
const WRITE_CHUNK_ROWS: usize = 2048;

/// …nor rows of more than about this many bytes (spans: as held, plus their attributes with
/// every value copied per span): 2,048 spans of 20 × 5 KB attributes made a 200 MB chunk.
/// Spans of 10 short attributes (~600 bytes so counted) stay at 2,048.
const WRITE_CHUNK_BYTES: usize = 2 << 20;

/// parquet's column writers for the leaves of the `nested` fields of `schema` alone (`events`
/// and `links`, which the seal does not encode itself), written as `props` say. Writers for
/// every column would each make a codec, a zstd compressor and decompressor (a `cpuid` that
/// traps in a VM, ~2% of the collector's CPU at 10k spans/s), for columns written elsewhere.
fn nested_writers(
    schema: &SchemaRef,
    nested: [usize; 2],
    props: &Arc<WriterProperties>,
) -> Result<Vec<parquet::arrow::arrow_writer::ArrowColumnWriter>, SealError> {
    let fields: Vec<_> = nested.iter().map(|&f| schema.field(f).clone()).collect();
    let arrow = Arc::new(arrow::datatypes::Schema::new(fields));
    let parquet = parquet::arrow::ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(&arrow)?;
    // A file of these columns alone that nothing is written to: the factory takes its schema
    // and properties. Their leaves have the same paths, types and levels as in the whole
    // schema, so their chunks go into the row group as they are.
    let file = SerializedFileWriter::new(
        std::io::sink(),
        parquet.root_schema_ptr(),
        Arc::clone(props),
    )?;
    Ok(ArrowRowGroupWriterFactory::new(&file, arrow).create_column_writers(0)?)
}

/// `order` in the chunks a seal copies into the encoder: at most `WRITE_CHUNK_ROWS` rows, and a
/// chunk ends at the row whose `bytes` bring it to `WRITE_CHUNK_BYTES`.
fn write_chunks<'a, T>(
    order: &'a [T],
    bytes: impl Fn(&T) -> usize + 'a,
) -> impl Iterator<Item = &'a [T]> + 'a {
    let mut rest = order;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(WRITE_CHUNK_ROWS);
        let mut sum = 0;
        for (k, row) in rest[..end].iter().enumerate() {
            sum += bytes(row);
            if sum >= WRITE_CHUNK_BYTES {
                end = k + 1;
                break;
            }
        }
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

/// Rows of one partition, sorted and encoded as a Parquet file of one row group, in memory.
#[derive(Debug, Clone)]
pub struct Sealed {
    bytes: Bytes,
    rows: usize,
}

/// Why rows could not be sealed or a file assembled from sealed row groups.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Parquet(#[from] ParquetError),
}

impl Sealed {
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Memory held: the encoded bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Sort `batches` by the string column `by_trace` (nulls last), then the integer column
    /// `by_time`, and encode them as one row group with `props` (whose bloom filter on
    /// `trace_id` is sized here, for the distinct trace ids of these rows).
    pub fn seal(
        batches: &[RecordBatch],
        schema: &SchemaRef,
        props: &WriterProperties,
        [by_trace, by_time]: [usize; 2],
    ) -> Result<Sealed, SealError> {
        let (order, traces) = sort_order(batches, by_trace, by_time);
        let sort = [by_trace, by_time];
        let mut w = row_group_writer(
            Arc::clone(schema),
            props,
            sort,
            order.len(),
            traces,
            Vec::new(),
        )?;
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        let row_bytes: Vec<usize> = batches
            .iter()
            .map(|b| b.get_array_memory_size() / b.num_rows().max(1))
            .collect();
        for chunk in write_chunks(&order, |&(b, _)| row_bytes[b]) {
            w.write(&arrow::compute::interleave_record_batch(&refs, chunk)?)?;
        }
        Sealed::finish(w, order.len())
    }

    /// Sort the spans of `held` by trace id, then start time, and encode them as one row group
    /// of the spans table with `props`, a chunk of rows at a time in that order, so no
    /// unsorted copy of the rows is ever made. Every column but `events` and `links` is
    /// encoded straight from the blocks (`own.rs`); those two are converted to Arrow and
    /// written by parquet's column writers when a span has any, and are runs of empty lists
    /// otherwise.
    pub fn seal_spans(held: &[HeldSpans], props: &WriterProperties) -> Result<Sealed, SealError> {
        let table = Table::Spans;
        let schema = table.schema();
        let (order, traces) = span_order(held);
        let unfilled = unfilled_columns(held);
        let mut props = row_group_props(props, table.sort_columns(), order.len(), traces, unfilled);
        parquet::arrow::add_encoded_arrow_schema_to_metadata(&schema, &mut props);
        let props = Arc::new(props);
        let parquet_schema = parquet::arrow::ArrowSchemaConverter::new()
            .with_coerce_types(props.coerce_types())
            .convert(&schema)?;
        let mut file = SerializedFileWriter::new(
            Vec::new(),
            parquet_schema.root_schema_ptr(),
            Arc::clone(&props),
        )?;
        if order.is_empty() {
            return Ok(Sealed::from_buf(file.into_inner()?, 0));
        }
        let leaves_of = leaves_of(&parquet_schema, schema.fields().len());
        let nested = [schema.index_of("events")?, schema.index_of("links")?];
        // Events and links converted to Arrow and parquet's writers for them. Most services
        // send neither: then their leaves are runs of empty lists (below), and neither is made.
        let mut lists = if held
            .iter()
            .any(|h| !h.block.events().is_empty() || !h.block.links().is_empty())
        {
            Some((SpanRows::new(), nested_writers(&schema, nested, &props)?))
        } else {
            None
        };
        let mut own = OwnColumns::new(held, order.len(), &schema, &parquet_schema, &props)?;
        // What a span of each block takes, on average, as it arrived and as rows: the chunks
        // bound the events and links converted at once. Without them the chunks make no
        // difference, and the walk over every attribute is skipped.
        let span_bytes: Vec<usize> = match lists {
            Some(_) => held
                .iter()
                .map(|h| (h.block.heap_bytes() + h.block.attr_bytes()) / h.block.len().max(1))
                .collect(),
            None => vec![0; held.len()],
        };
        for chunk in write_chunks(&order, |&(hi, _)| span_bytes[hi as usize]) {
            for &(hi, i) in chunk {
                let (hi, i) = (hi as usize, i as usize);
                own.push_span(held, hi, i)?;
                if let Some((rows, _)) = &mut lists {
                    let b = &held[hi].block;
                    rows.append_nested(b, &b.spans()[i])?;
                }
            }
            own.push_groups(held, chunk)?;
            let Some((rows, writers)) = &mut lists else {
                continue;
            };
            let mut writers = writers.iter_mut();
            for (f, array) in nested.iter().zip(rows.finish_nested()?) {
                for leaf in compute_leaves(schema.field(*f), &array)? {
                    writers
                        .next()
                        .ok_or_else(|| ParquetError::General("a column writer short".into()))?
                        .write(&leaf)?;
                }
            }
        }

        let mut out = file.next_row_group()?;
        let mut writers = lists.map(|(_, writers)| writers.into_iter());
        for (f, field) in schema.fields().iter().enumerate() {
            if own.append(field.name(), &mut out, &props, order.len())? {
                continue;
            }
            let Some(writers) = &mut writers else {
                for leaf in leaves_of[f].clone() {
                    let chunk = empty_lists(parquet_schema.column(leaf), order.len(), &props)?;
                    write_chunk(&mut out, chunk, &props)?;
                }
                continue;
            };
            for _ in leaves_of[f].clone() {
                let w = writers
                    .next()
                    .ok_or_else(|| ParquetError::General("a column writer short".into()))?;
                w.close()?.append_to_row_group(&mut out)?;
            }
        }
        out.close()?;
        Ok(Sealed::from_buf(file.into_inner()?, order.len()))
    }

    /// The row group a writer encoded, held in as little memory as it takes.
    fn finish(w: ArrowWriter<Vec<u8>>, rows: usize) -> Result<Sealed, SealError> {
        Ok(Sealed::from_buf(w.into_inner()?, rows))
    }

    fn from_buf(mut buf: Vec<u8>, rows: usize) -> Sealed {
        buf.shrink_to_fit();
        Sealed {
            bytes: Bytes::from(buf),
            rows,
        }
    }

    /// The rows, decoded (for queries of the live tail).
    pub fn decode(&self) -> Result<Vec<RecordBatch>, SealError> {
        let reader = ParquetRecordBatchReaderBuilder::try_new(self.bytes.clone())?
            .with_batch_size(WRITE_CHUNK_ROWS)
            .build()?;
        Ok(reader.collect::<Result<Vec<_>, _>>()?)
    }
}

/// The sorting columns every row group records.
pub fn sorting_columns(columns: [usize; 2]) -> Vec<SortingColumn> {
    columns
        .iter()
        .map(|&c| SortingColumn {
            column_idx: c as i32,
            descending: false,
            nulls_first: false,
        })
        .collect()
}

/// Write a Parquet file to `out` whose row groups are `parts`, in order, copied as they are
/// encoded. `props` gives the file's key-value metadata and writer name; the Arrow schema is
/// recorded as `ArrowWriter` records it, so readers see exactly the types of a written file.
pub fn assemble<W: Write + Send>(
    out: W,
    parts: &[Sealed],
    schema: &SchemaRef,
    props: &WriterProperties,
    sort_columns: [usize; 2],
) -> Result<W, SealError> {
    let mut props = props
        .clone()
        .into_builder()
        .set_sorting_columns(Some(sorting_columns(sort_columns)))
        .build();
    parquet::arrow::add_encoded_arrow_schema_to_metadata(schema, &mut props);
    let parquet_schema = parquet::arrow::ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(schema)?
        .root_schema_ptr();
    let mut w = SerializedFileWriter::new(out, parquet_schema, Arc::new(props))?;
    for part in parts {
        let meta = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Optional)
            .parse_and_finish(&part.bytes)?;
        for (g, rg) in meta.row_groups().iter().enumerate() {
            let column_index = meta.column_index().and_then(|c| c.get(g));
            let offset_index = meta.offset_index().and_then(|o| o.get(g));
            let mut out = w.next_row_group()?;
            for (c, column) in rg.columns().iter().enumerate() {
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: rg.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: Sbbf::read_from_column_chunk(column, &part.bytes)?,
                    column_index: column_index.and_then(|r| r.get(c)).cloned(),
                    offset_index: offset_index.and_then(|r| r.get(c)).cloned(),
                };
                out.append_column(&part.bytes, close)?;
            }
            out.close()?;
        }
    }
    Ok(w.into_inner()?)
}

/// The order of the rows of `batches` in a row group — by the string column `by_trace` (nulls
/// last), then the integer column `by_time` — as `(batch, row)` pairs, and the number of
/// distinct trace ids (nulls counted as one).
fn sort_order(
    batches: &[RecordBatch],
    by_trace: usize,
    by_time: usize,
) -> (Vec<(usize, usize)>, usize) {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    let mut keys: Vec<SortKey<'_>> = Vec::with_capacity(batches.iter().map(|b| b.num_rows()).sum());
    for (bi, b) in batches.iter().enumerate() {
        let trace = b.column(by_trace).as_string::<i32>();
        let time = b.column(by_time).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            let t = (!trace.is_null(r)).then(|| trace.value(r));
            let at = if time.is_null(r) { 0 } else { time.value(r) };
            keys.push(SortKey::new(t, at, bi, r));
        }
    }
    keys.sort_unstable_by(SortKey::cmp);
    let traces = distinct(&keys, |a, b| a.id == b.id);
    (keys.iter().map(|k| (k.batch, k.row)).collect(), traces)
}

/// Distinct values among sorted `keys`, by `same`.
fn distinct<K>(keys: &[K], same: impl Fn(&K, &K) -> bool) -> usize {
    keys.iter()
        .zip(keys.iter().skip(1))
        .filter(|(a, b)| !same(a, b))
        .count()
        + usize::from(!keys.is_empty())
}

/// A writer of one row group of `rows` rows sorted by `sort`, with `props` and a bloom filter
/// on `trace_id` sized for `traces` distinct ids.
fn row_group_writer(
    schema: SchemaRef,
    props: &WriterProperties,
    sort: [usize; 2],
    rows: usize,
    traces: usize,
    uncompressed: Vec<ColumnPath>,
) -> Result<ArrowWriter<Vec<u8>>, SealError> {
    let props = row_group_props(props, sort, rows, traces, uncompressed);
    Ok(ArrowWriter::try_new(Vec::new(), schema, Some(props))?)
}

/// The properties of one row group of `rows` rows sorted by `sort`: `props`, a bloom filter on
/// `trace_id` sized for `traces` distinct ids, the columns `uncompressed` not compressed.
fn row_group_props(
    props: &WriterProperties,
    sort: [usize; 2],
    rows: usize,
    traces: usize,
    uncompressed: Vec<ColumnPath>,
) -> WriterProperties {
    let mut props = props
        .clone()
        .into_builder()
        .set_column_bloom_filter_max_ndv(ColumnPath::from("trace_id"), traces.max(1) as u64)
        .set_sorting_columns(Some(sorting_columns(sort)))
        .set_max_row_group_row_count(Some(rows.max(1)))
        .set_max_row_group_bytes(None);
    for path in uncompressed {
        props = props.set_column_compression(path, Compression::UNCOMPRESSED);
    }
    props.build()
}

/// The spans table's leaf columns that no span of `held` fills (every value null or every list
/// or map empty). Their pages hold only repetition and definition levels, a few bytes that no
/// codec makes smaller, so they are written uncompressed: parquet creates a zstd compressor and
/// decompressor for every compressed column of every row group (~10 µs each, most of what
/// sealing a small row group costs), and about half the columns are empty for most services
/// (events, links, trace state, scope attributes, schema URLs).
fn unfilled_columns(held: &[HeldSpans]) -> Vec<ColumnPath> {
    /// Whether an attribute map has any entry, and any that is not a string (its type map).
    #[derive(Clone, Copy, Default)]
    struct Map {
        any: bool,
        typed: bool,
    }
    fn note(m: &mut Map, b: &SpanBlock, rows: spanlake_core::spans::Rows) {
        if m.typed || rows.is_empty() {
            return;
        }
        m.any = true;
        m.typed = b
            .attrs(rows)
            .iter()
            .any(|a| !matches!(a.value(), spanlake_core::spans::Value::Str(_)));
    }
    let [mut span, mut event, mut link, mut resource, mut scope] = [Map::default(); 5];
    let (mut trace_state, mut status_message, mut events, mut links, mut link_state) =
        (false, false, false, false, false);
    let (mut resource_url, mut scope_name, mut scope_version, mut scope_url) =
        (false, false, false, false);
    for h in held {
        let b = &h.block;
        for r in b.resources() {
            note(&mut resource, b, r.attrs);
            resource_url |= !r.schema_url.is_empty();
        }
        for s in b.scopes() {
            note(&mut scope, b, s.attrs);
            scope_name |= s.present && !s.name.is_empty();
            scope_version |= s.present && !s.version.is_empty();
            scope_url |= !s.schema_url.is_empty();
        }
        for sp in b.spans() {
            note(&mut span, b, sp.attrs);
            trace_state |= !sp.trace_state.is_empty();
            status_message |= sp.status.is_some_and(|s| !s.message.is_empty());
        }
        for e in b.events() {
            events = true;
            note(&mut event, b, e.attrs);
        }
        for l in b.links() {
            links = true;
            link_state |= !l.trace_state.is_empty();
            note(&mut link, b, l.attrs);
        }
    }
    let mut empty: Vec<&str> = Vec::new();
    let mut maps = |m: Map, values: &'static str, types: &'static str| {
        if !m.any {
            empty.push(values);
        }
        if !m.typed {
            empty.push(types);
        }
    };
    maps(span, "attributes", "attribute_types");
    maps(resource, "resource_attributes", "resource_attribute_types");
    maps(scope, "scope_attributes", "scope_attribute_types");
    maps(
        event,
        "events.list.element.attributes",
        "events.list.element.attribute_types",
    );
    maps(
        link,
        "links.list.element.attributes",
        "links.list.element.attribute_types",
    );
    for (filled, column) in [
        (events, "events"),
        (links, "links"),
        (link_state, "links.list.element.trace_state"),
        (trace_state, "trace_state"),
        (status_message, "status_message"),
        (resource_url, "resource_schema_url"),
        (scope_name, "scope_name"),
        (scope_version, "scope_version"),
        (scope_url, "scope_schema_url"),
    ] {
        if !filled {
            empty.push(column);
        }
    }
    span_leaves()
        .iter()
        .filter(|(dotted, _)| {
            empty.iter().any(|e| {
                dotted
                    .strip_prefix(e)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            })
        })
        .map(|(_, path)| path.clone())
        .collect()
}

/// The spans table's Parquet leaf columns, as dotted strings and as paths.
fn span_leaves() -> &'static [(String, ColumnPath)] {
    static LEAVES: std::sync::OnceLock<Vec<(String, ColumnPath)>> = std::sync::OnceLock::new();
    LEAVES.get_or_init(|| {
        parquet::arrow::ArrowSchemaConverter::new()
            .convert(&Table::Spans.schema())
            .map(|descr| {
                descr
                    .columns()
                    .iter()
                    .map(|c| (c.path().string(), c.path().clone()))
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// A row's place in a row group's order: trace id (nulls last), then time. The id's first 32 bytes
/// are packed into two big-endian integers, so most comparisons are two integer compares
/// instead of a `memcmp` (OTLP ids are 32 hex digits; longer free-form ids fall back to
/// comparing the strings).
struct SortKey<'a> {
    hi: u128,
    lo: u128,
    id: Option<&'a str>,
    time: i64,
    batch: usize,
    row: usize,
}

impl<'a> SortKey<'a> {
    fn new(id: Option<&'a str>, time: i64, batch: usize, row: usize) -> Self {
        let (hi, lo) = match id {
            Some(s) => {
                let b = s.as_bytes();
                (
                    pack(b.get(..16).unwrap_or(b)),
                    pack(b.get(16..).unwrap_or(&[])),
                )
            }
            None => (u128::MAX, u128::MAX),
        };
        SortKey {
            hi,
            lo,
            id,
            time,
            batch,
            row,
        }
    }

    fn cmp(a: &Self, b: &Self) -> std::cmp::Ordering {
        a.hi.cmp(&b.hi)
            .then(a.lo.cmp(&b.lo))
            .then_with(|| match (a.id, b.id) {
                // Equal packed prefixes: ids of up to 32 bytes differ only by length (the
                // zero padding), longer ones by their remaining bytes.
                (Some(x), Some(y)) if x.len() <= 32 && y.len() <= 32 => x.len().cmp(&y.len()),
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then(a.time.cmp(&b.time))
    }
}

/// The order of the spans of `held` in a row group — by trace id as stored, then start time —
/// as `(block, span)` pairs, and the number of distinct trace ids.
///
/// When every trace id is a binary OTLP id (16 bytes; its stored hex text sorts as its bytes
/// do), the sort key is the id as one integer and the time: 32 bytes compared without a call.
/// Otherwise (native text ids) each id is packed as its stored text ([`SpanKey`]).
fn span_order(held: &[HeldSpans]) -> (Vec<(u32, u32)>, usize) {
    let spans = held.iter().map(|h| h.block.len()).sum();
    let binary = held.iter().all(|h| {
        h.block.spans().iter().all(|s| {
            let id = h.block.raw(s.trace_id);
            id.len() == 16 && !id.starts_with(spanlake_core::ids::TEXT_ID)
        })
    });
    if binary {
        let mut keys: Vec<(u128, i64, u32, u32)> = Vec::with_capacity(spans);
        for (hi, h) in held.iter().enumerate() {
            let b = &h.block;
            for (i, span) in b.spans().iter().enumerate() {
                let id = b
                    .raw(span.trace_id)
                    .try_into()
                    .map(u128::from_be_bytes)
                    .unwrap_or(0);
                let time = clamp_nanos(span.start_time_unix_nano);
                keys.push((id, time, hi as u32, i as u32));
            }
        }
        sort_by_buckets(&mut keys);
        let traces = distinct(&keys, |a, b| a.0 == b.0);
        return (keys.iter().map(|k| (k.2, k.3)).collect(), traces);
    }
    let mut keys: Vec<SpanKey> = Vec::with_capacity(spans);
    for (hi, h) in held.iter().enumerate() {
        let b = &h.block;
        for (i, span) in b.spans().iter().enumerate() {
            let time = clamp_nanos(span.start_time_unix_nano);
            keys.push(SpanKey::new(
                b.raw(span.trace_id),
                time,
                hi as u32,
                i as u32,
            ));
        }
    }
    let id_of = |k: &SpanKey| {
        let b = &held[k.block as usize].block;
        b.raw(b.spans()[k.span as usize].trace_id)
    };
    keys.sort_unstable_by(|a, b| SpanKey::cmp(a, b, &id_of));
    let traces = distinct(&keys, |a, b| SpanKey::id_cmp(a, b, &id_of).is_eq());
    (keys.iter().map(|k| (k.block, k.span)).collect(), traces)
}

/// Sort `keys` (a binary trace id, a time, a block and a span): scattered into buckets by the
/// ids' leading bits, as many buckets as keys, then each bucket sorted. The bits are the first
/// in which the ids differ (every id shares those above: a time, as AWS X-Ray's ids begin
/// with, or a load generator's run). OTLP trace ids are otherwise random, so a bucket holds
/// about one trace's spans, and this takes a few passes where a comparison sort takes a dozen
/// (it was ~4% of the collector's instructions). Ids that do not spread over the buckets fill
/// a few large ones, which are then sorted as a whole.
fn sort_by_buckets(keys: &mut Vec<(u128, i64, u32, u32)>) {
    let n = keys.len();
    let first = keys.first().map_or(0, |k| k.0);
    let differ = keys.iter().fold(0u128, |d, k| d | (k.0 ^ first));
    if n < 64 || differ == 0 {
        keys.sort_unstable();
        return;
    }
    let bits = (usize::BITS - (n - 1).leading_zeros()).min(16);
    // Below the highest bit in which any two ids differ, `bits` bits (or as many as there are).
    let top = 128 - differ.leading_zeros();
    let shift = top.saturating_sub(bits);
    let mask = (1u128 << bits) - 1;
    let bucket = |k: &(u128, i64, u32, u32)| ((k.0 >> shift) & mask) as usize;
    let mut starts = vec![0u32; (1 << bits) + 1];
    for k in keys.iter() {
        starts[bucket(k) + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut sorted = vec![(0u128, 0i64, 0u32, 0u32); n];
    let mut next = starts.clone();
    for k in keys.iter() {
        let at = &mut next[bucket(k)];
        sorted[*at as usize] = *k;
        *at += 1;
    }
    for w in starts.windows(2) {
        let b = &mut sorted[w[0] as usize..w[1] as usize];
        if b.len() <= 16 {
            // Insertion sort: most buckets hold a span or a few.
            for i in 1..b.len() {
                let mut j = i;
                while j > 0 && b[j] < b[j - 1] {
                    b.swap(j, j - 1);
                    j -= 1;
                }
            }
        } else {
            b.sort_unstable();
        }
    }
    *keys = sorted;
}

/// A span's place in a row group's order, from its raw trace id: the id as stored (lowercase
/// hex of an OTLP id, the text of a native one) packed into four big-endian integers, so that
/// comparing them compares the stored strings (ids longer than 32 characters, which only native
/// text ids can be, are compared whole when their first 32 agree); then the start time.
struct SpanKey {
    packed: [u64; 4],
    /// Length of the stored id (0: none).
    len: u32,
    time: i64,
    block: u32,
    span: u32,
}

impl SpanKey {
    fn new(id: &[u8], time: i64, block: u32, span: u32) -> Self {
        let mut stored = [0u8; 32];
        let len = match id.strip_prefix(spanlake_core::ids::TEXT_ID.as_slice()) {
            Some(text) if std::str::from_utf8(text).is_ok() => {
                let n = text.len().min(32);
                stored[..n].copy_from_slice(&text[..n]);
                text.len()
            }
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for (i, &b) in id.iter().take(16).enumerate() {
                    stored[2 * i] = HEX[(b >> 4) as usize];
                    stored[2 * i + 1] = HEX[(b & 15) as usize];
                }
                id.len() * 2
            }
        };
        let word =
            |i: usize| u64::from_be_bytes(stored[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        SpanKey {
            packed: [word(0), word(1), word(2), word(3)],
            len: len as u32,
            time,
            block,
            span,
        }
    }

    fn id_cmp<'a>(a: &Self, b: &Self, id_of: &impl Fn(&Self) -> &'a [u8]) -> std::cmp::Ordering {
        a.packed.cmp(&b.packed).then_with(|| {
            if a.len <= 32 && b.len <= 32 {
                // Equal first 32 characters: the shorter (zero-padded) id comes first.
                a.len.cmp(&b.len)
            } else {
                let (mut x, mut y) = (String::new(), String::new());
                push_id(&mut x, id_of(a));
                push_id(&mut y, id_of(b));
                x.cmp(&y)
            }
        })
    }

    fn cmp<'a>(a: &Self, b: &Self, id_of: &impl Fn(&Self) -> &'a [u8]) -> std::cmp::Ordering {
        Self::id_cmp(a, b, id_of).then(a.time.cmp(&b.time))
    }
}

/// Up to 16 bytes as a big-endian integer, zero-padded on the right.
fn pack(bytes: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    let n = bytes.len().min(16);
    buf[..n].copy_from_slice(&bytes[..n]);
    u128::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::schema::Table;
    use crate::parquet::writer::{PAGE_ROWS, writer_properties};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Rows of the spans table with the given trace ids (as hex) and start times.
    fn rows(ids: &[(&str, i64)]) -> RecordBatch {
        use crate::parquet::convert::SpanRows;
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let spans = ids
            .iter()
            .enumerate()
            .map(|(i, (trace, start))| Span {
                trace_id: (0..16)
                    .map(|b| u8::from_str_radix(&trace[b * 2..b * 2 + 2], 16).expect("hex"))
                    .collect(),
                span_id: vec![i as u8 + 1; 8],
                name: format!("op{i}"),
                start_time_unix_nano: *start as u64,
                end_time_unix_nano: *start as u64 + 5,
                ..Default::default()
            })
            .collect();
        let groups = vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }];
        let mut r = SpanRows::new();
        r.append(&[spanlake_core::SpanBlock::from_prost(&groups)], 1)
            .expect("append");
        r.finish().expect("finish")
    }

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 32).collect()
    }

    /// A block of two resources (services `{tag}-a` and `{tag}-b`), each span named after its
    /// service and id; trace ids as given, a text id when it is not 32 hex digits.
    fn block(tag: &str, spans: &[(&str, u64)]) -> HeldSpans {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let groups = ["a", "b"].map(|svc| {
            let service = format!("{tag}-{svc}");
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(service.clone())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: spans
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| (i % 2 == 0) == (svc == "a"))
                        .map(|(i, &(trace, start))| Span {
                            trace_id: spanlake_core::ids::id_from_text(trace, 16),
                            span_id: vec![i as u8 + 1; 8],
                            name: format!("{service}/{i}"),
                            start_time_unix_nano: start,
                            end_time_unix_nano: start + 1,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }
        });
        HeldSpans {
            ingest: 7,
            block: Arc::new(SpanBlock::from_prost(&groups)),
        }
    }

    /// `spans` as one held block of one resource and scope.
    fn one_block(spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) -> HeldSpans {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
        let groups = [ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }];
        HeldSpans {
            ingest: 7,
            block: Arc::new(SpanBlock::from_prost(&groups)),
        }
    }

    #[test]
    fn chunks_close_at_their_rows_or_bytes_and_keep_every_row_in_order() {
        let sizes = |order: &[usize], bytes: fn(&usize) -> usize| -> Vec<usize> {
            let chunks: Vec<&[usize]> = write_chunks(order, bytes).collect();
            assert_eq!(chunks.concat(), order, "every row once, in order");
            chunks.iter().map(|c| c.len()).collect()
        };
        let order: Vec<usize> = (0..5000).collect();
        assert_eq!(sizes(&order, |_| 100), [2048, 2048, 904]);
        // 100 KB rows: a chunk ends at the row that brings it to 2 MiB (21 rows).
        assert_eq!(sizes(&order[..50], |_| 100_000), [21, 21, 8]);
        // One row past the bound is a chunk of its own.
        assert_eq!(sizes(&order[..3], |_| WRITE_CHUNK_BYTES * 2), [1, 1, 1]);
        assert!(sizes(&[], |_| 1).is_empty());
    }

    /// Native text ids longer than the 32 characters a sort key packs, equal in those.
    const LONG_1: &str = "0-evaluation-run-of-the-new-model-1";
    const LONG_2: &str = "0-evaluation-run-of-the-new-model-2";

    #[test]
    fn spans_are_sealed_in_order_each_with_its_own_resource() {
        let held = [
            block(
                "x",
                &[
                    (&id('b'), 30),
                    (&id('a'), 20),
                    ("run-2", 5),
                    (&id('b'), 10),
                    (LONG_2, 1),
                    ("run-2x", 1),
                ],
            ),
            block(
                "y",
                &[
                    (&id('a'), 10),
                    ("run-10", 1),
                    (&id('c'), 1),
                    (&id('a'), 5),
                    (LONG_1, 9),
                    (LONG_2, 0),
                ],
            ),
        ];
        let sealed = Sealed::seal_spans(&held, &writer_properties(3, 1 << 20)).expect("sealed");
        assert_eq!(sealed.rows(), 12);
        let batches = sealed.decode().expect("decoded");
        let mut got = Vec::new();
        for b in &batches {
            let trace = b.column(0).as_string::<i32>();
            let start = b.column(7).as_primitive::<Int64Type>();
            let name = b.column(5).as_string::<i32>();
            let service = b.column(14).as_string::<i32>();
            for r in 0..b.num_rows() {
                assert!(
                    name.value(r).starts_with(&format!("{}/", service.value(r))),
                    "row {r}: span {} has service {}",
                    name.value(r),
                    service.value(r)
                );
                got.push((trace.value(r).to_string(), start.value(r)));
            }
        }
        let mut expected = got.clone();
        expected.sort();
        assert_eq!(got, expected, "sorted by trace id, then start");
        assert_eq!(
            got.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            [
                LONG_1,
                LONG_2,
                LONG_2,
                &id('a'),
                &id('a'),
                &id('a'),
                &id('b'),
                &id('b'),
                &id('c'),
                "run-10",
                "run-2",
                "run-2x"
            ]
        );
    }

    #[test]
    fn a_file_is_its_sealed_row_groups_in_order_each_sorted() {
        let schema = Table::Spans.schema();
        let props = writer_properties(3, 8192);
        let cols = Table::Spans.sort_columns();
        let (a, b, c) = (id('a'), id('b'), id('c'));
        let first = Sealed::seal(
            &[rows(&[(&c, 5), (&a, 9)]), rows(&[(&a, 1)])],
            &schema,
            &props,
            cols,
        )
        .expect("seal");
        let second =
            Sealed::seal(&[rows(&[(&b, 2), (&a, 3)])], &schema, &props, cols).expect("seal");
        assert_eq!((first.rows(), second.rows()), (3, 2));

        // What the tail hands to queries: the rows, sorted within the part.
        let decoded = first.decode().expect("decode");
        let ids: Vec<&str> = decoded[0]
            .column(0)
            .as_string::<i32>()
            .iter()
            .flatten()
            .collect();
        assert_eq!(ids, [a.as_str(), &a, &c]);
        assert_eq!(decoded[0].schema(), schema);

        let file = assemble(Vec::new(), &[first, second], &schema, &props, cols).expect("assemble");
        let file = Bytes::from(file);

        // Read back by the Arrow reader: the same schema, every row, each row group sorted.
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file.clone())
            .expect("open")
            .build()
            .expect("reader")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(batches[0].schema(), schema);
        let all = arrow::compute::concat_batches(&schema, &batches).expect("concat");
        let ids: Vec<&str> = all.column(0).as_string::<i32>().iter().flatten().collect();
        assert_eq!(ids, [a.as_str(), &a, &c, &a, &b]);
        let starts: Vec<i64> = all.column(7).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(starts, [1, 9, 5, 3, 2]);

        // Row groups, sorting columns, bloom filters and the file's metadata are all there.
        let reader = SerializedFileReader::new(file.clone()).expect("footer");
        let meta = reader.metadata();
        assert_eq!(meta.num_row_groups(), 2);
        for g in 0..2 {
            let rg = meta.row_group(g);
            assert_eq!(rg.sorting_columns().map(|s| s.len()), Some(2));
            let bloom = Sbbf::read_from_column_chunk(rg.column(0), &file)
                .expect("read bloom filter")
                .expect("bloom filter on trace_id");
            assert!(bloom.check(&a.as_str()));
        }
        let kv = meta
            .file_metadata()
            .key_value_metadata()
            .cloned()
            .unwrap_or_default();
        assert!(kv.iter().any(|k| k.key == "spanlake.schema_version"));
        assert!(kv.iter().any(|k| k.key == "ARROW:schema"));
        let with_index = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(&file)
            .expect("page index copied");
        assert_eq!(with_index.offset_index().map(|o| o.len()), Some(2));
        assert_eq!(all.column(0).null_count(), 0);
    }

    /// Binary OTLP ids only (the integer sort key): rows come out by the stored hex id, then
    /// start time, every span once.
    #[test]
    fn binary_ids_are_sealed_in_the_order_of_their_text() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ids: Vec<String> = (0..20)
            .map(|_| format!("{:016x}{:016x}", next() % 4, next()))
            .collect();
        let mut sent = Vec::new();
        let held: Vec<HeldSpans> = (0..3)
            .map(|_| {
                let spans: Vec<(String, u64)> = (0..70)
                    .map(|_| (ids[(next() % 20) as usize].clone(), 1 + next() % 50))
                    .collect();
                sent.extend(spans.iter().map(|(i, t)| (i.clone(), *t as i64)));
                let refs: Vec<(&str, u64)> = spans.iter().map(|(i, t)| (i.as_str(), *t)).collect();
                block("b", &refs)
            })
            .collect();
        let sealed = Sealed::seal_spans(&held, &writer_properties(3, 1 << 20)).expect("sealed");
        let mut got = Vec::new();
        for b in sealed.decode().expect("decoded") {
            let trace = b.column(0).as_string::<i32>();
            let start = b.column(7).as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                got.push((trace.value(r).to_string(), start.value(r)));
            }
        }
        sent.sort();
        assert_eq!(got, sent);
    }

    /// Pages are closed at ~128 KiB or 8,192 rows and dictionaries at ~256 KiB (then the chunk
    /// goes on plainly encoded): what a seal holds per column stays small however large the row
    /// group.
    #[test]
    fn pages_and_dictionaries_stay_small() {
        use opentelemetry_proto::tonic::trace::v1::Span;
        use parquet::column::page::Page;
        // 20,000 spans with distinct 40-byte names: ~800 KB of names.
        let spans = (0..20_000u32)
            .map(|i| Span {
                trace_id: [i.to_be_bytes(), [1; 4], [2; 4], [3; 4]].concat(),
                span_id: [i.to_be_bytes(), [4; 4]].concat(),
                name: format!("{i:0>40}"),
                start_time_unix_nano: 1,
                ..Default::default()
            })
            .collect();
        let held = [one_block(spans)];
        let sealed = Sealed::seal_spans(&held, &writer_properties(3, 1 << 20)).expect("sealed");
        let reader = SerializedFileReader::new(sealed.bytes.clone()).expect("file");
        let rg = reader.get_row_group(0).expect("row group");
        let column = |name: &str| {
            (0..rg.num_columns())
                .find(|&c| rg.metadata().column(c).column_path().string() == name)
                .expect("column")
        };
        for name in ["name", "trace_id"] {
            let (mut data, mut dictionary, mut largest) = (0, 0, 0);
            for page in rg.get_column_page_reader(column(name)).expect("pages") {
                let page = page.expect("page");
                largest = largest.max(page.buffer().len());
                match page {
                    Page::DictionaryPage { .. } => dictionary += 1,
                    _ => data += 1,
                }
            }
            // Closed at the first batch of values past the limit.
            assert!(largest < 300 << 10, "{name}: a page of {largest} bytes");
            assert!(data >= 4, "{name}: {data} data pages");
            assert!(dictionary <= 1, "{name}");
        }
        // A column of one repeated value never fills 128 KiB: it is closed every 8,192 rows.
        let mut pages = Vec::new();
        for page in rg.get_column_page_reader(column("kind")).expect("pages") {
            if let Page::DataPage { num_values, .. } | Page::DataPageV2 { num_values, .. } =
                page.expect("page")
            {
                pages.push(num_values as usize);
            }
        }
        assert!(
            pages.len() >= 3 && pages.iter().all(|&n| n <= PAGE_ROWS),
            "rows per page of kind: {pages:?}"
        );
        // Ten runs of rows through the same builders: every row reads back, in trace order.
        let names: Vec<String> = sealed
            .decode()
            .expect("decode")
            .iter()
            .flat_map(|b| {
                let names = b.column_by_name("name").expect("name").as_string::<i32>();
                (0..b.num_rows())
                    .map(|r| names.value(r).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        let want: Vec<String> = (0..20_000).map(|i| format!("{i:0>40}")).collect();
        assert!(names == want, "names differ");
    }

    /// Columns no span of a row group fills are written uncompressed, the others with zstd;
    /// a file of row groups that differ in this reads back whole.
    #[test]
    fn columns_no_span_fills_are_stored_uncompressed() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
        use parquet::basic::Compression;
        let plain = block("p", &[(&id('a'), 1), (&id('b'), 2)]);
        let mut groups = plain.block.to_prost();
        let span = &mut groups[0].scope_spans[0].spans[0];
        span.trace_state = "vendor=1".into();
        span.events.push(Event {
            time_unix_nano: 3,
            name: "exception".into(),
            attributes: vec![KeyValue {
                key: "exception.type".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("IOError".into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        span.links.push(Link {
            trace_id: vec![7; 16],
            span_id: vec![8; 8],
            ..Default::default()
        });
        let rich = HeldSpans {
            ingest: 7,
            block: Arc::new(SpanBlock::from_prost(&groups)),
        };
        let props = writer_properties(3, 1 << 20);
        let codec = |sealed: &Sealed, column: &str| {
            let meta = ParquetMetaDataReader::new()
                .parse_and_finish(&sealed.bytes)
                .expect("footer");
            let rg = meta.row_group(0);
            (0..rg.num_columns())
                .map(|c| rg.column(c))
                .find(|c| c.column_path().string() == column)
                .map(|c| match c.compression() {
                    Compression::ZSTD(_) => "zstd",
                    Compression::UNCOMPRESSED => "uncompressed",
                    _ => "other",
                })
                .expect("column")
        };
        let (plain, rich) = (
            Sealed::seal_spans(&[plain], &props).expect("seal"),
            Sealed::seal_spans(&[rich], &props).expect("seal"),
        );
        for column in [
            "events.list.element.name",
            "events.list.element.attributes.key_value.key",
            "links.list.element.span_id",
            "trace_state",
        ] {
            assert_eq!(codec(&plain, column), "uncompressed", "{column}");
            assert_eq!(codec(&rich, column), "zstd", "{column}");
        }
        for sealed in [&plain, &rich] {
            for column in ["trace_id", "name", "resource_attributes.key_value.value"] {
                assert_eq!(codec(sealed, column), "zstd", "{column}");
            }
            for column in [
                "events.list.element.attribute_types.key_value.key",
                "status_message",
            ] {
                assert_eq!(codec(sealed, column), "uncompressed", "{column}");
            }
        }

        let schema = Table::Spans.schema();
        let cols = Table::Spans.sort_columns();
        let file = assemble(Vec::new(), &[plain, rich], &schema, &props, cols).expect("assemble");
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file))
            .expect("open")
            .build()
            .expect("reader")
            .collect::<Result<_, _>>()
            .expect("read");
        let all = arrow::compute::concat_batches(&schema, &batches).expect("concat");
        assert_eq!(all.num_rows(), 4);
        let events = all
            .column_by_name("events")
            .expect("events")
            .as_list::<i32>();
        let names: Vec<usize> = (0..4).map(|r| events.value(r).len()).collect();
        assert_eq!(names, [0, 0, 1, 0]);
        let state = all
            .column_by_name("trace_state")
            .expect("trace_state")
            .as_string::<i32>();
        assert_eq!(state.iter().flatten().collect::<Vec<_>>(), ["vendor=1"]);
    }

    /// Spans of random attributes (keys and values repeated from span to span or not, every
    /// kind of value, empty maps), as blocks decoded from a request (strings shared between
    /// spans) or built from messages (nothing shared).
    fn attribute_blocks() -> impl proptest::strategy::Strategy<Value = Vec<HeldSpans>> {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{
            AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
        };
        use opentelemetry_proto::tonic::resource::v1::Resource;
        use opentelemetry_proto::tonic::trace::v1::{
            ResourceSpans, ScopeSpans, Span, Status, span,
        };
        use proptest::prelude::*;
        use spanlake_core::ids::TEXT_ID;
        let value = prop_oneof![
            4 => "[a-c]{0,3}".prop_map(|s| Some(Value::StringValue(s))),
            1 => "[a-z]{20,40}".prop_map(|s| Some(Value::StringValue(s))),
            1 => (-3i64..3).prop_map(|i| Some(Value::IntValue(i))),
            1 => any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
            1 => (0..3u8).prop_map(|d| Some(Value::DoubleValue(f64::from(d) / 4.0))),
            1 => Just(None),
            1 => Just(Some(Value::ArrayValue(ArrayValue {
                values: vec![AnyValue { value: Some(Value::IntValue(1)) }],
            }))),
        ];
        let kv = ("[k-n]{1,2}", value).prop_map(|(key, value)| KeyValue {
            key,
            value: Some(AnyValue { value }),
            ..Default::default()
        });
        let attrs = |n: usize| proptest::collection::vec(kv.clone(), 0..n);
        let words = || proptest::sample::select(vec!["", "a", "b", "op", "zz"]);
        // Times: small, and near the greatest a column holds (clamped past it).
        let time = prop_oneof![4 => 0u64..4, 1 => (i64::MAX as u64 - 2)..=(i64::MAX as u64 + 1)];
        let count = prop_oneof![4 => Just(0u32), 1 => 0u32..3, 1 => Just(u32::MAX)];
        let span = (
            (any::<u8>(), time.clone(), attrs(7), 0usize..4),
            (words(), words(), -1i32..8, -1i32..4, words()),
            (
                prop_oneof![Just(0u64), time],
                (0u32..3, any::<u32>()),
                (count.clone(), count.clone(), count),
            ),
        )
            .prop_map(
                |(
                    (t, start, attributes, parent),
                    (name, state, kind, code, message),
                    (end, (flags, wide), (dropped_attrs, dropped_events, dropped_links)),
                )| Span {
                    // Now and then an id given as text (native API), which sorts as text.
                    trace_id: if t % 31 == 0 {
                        [TEXT_ID.as_slice(), format!("run-{}", t % 2).as_bytes()].concat()
                    } else {
                        vec![t % 5; 16]
                    },
                    span_id: vec![t; 8],
                    // None, a span of the request, one a longer id than OTLP's, or text.
                    parent_span_id: match parent {
                        0 => Vec::new(),
                        1 => vec![t / 2; 8],
                        2 => vec![t; 40],
                        _ => [TEXT_ID.as_slice(), b"step"].concat(),
                    },
                    flags: if flags == 2 { wide } else { flags },
                    name: name.into(),
                    trace_state: state.into(),
                    kind,
                    status: (code >= 0).then(|| Status {
                        code,
                        message: message.into(),
                    }),
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    dropped_attributes_count: dropped_attrs,
                    dropped_events_count: dropped_events,
                    dropped_links_count: dropped_links,
                    // Now and then an event and a link (written through parquet's writers).
                    events: if t % 7 == 0 {
                        vec![span::Event {
                            time_unix_nano: start,
                            name: "retry".into(),
                            attributes: attributes.clone(),
                            dropped_attributes_count: dropped_events % 2,
                        }]
                    } else {
                        Vec::new()
                    },
                    links: if t % 11 == 0 {
                        vec![span::Link {
                            trace_id: vec![t; 16],
                            span_id: vec![t / 3; 8],
                            flags: 1,
                            ..Default::default()
                        }]
                    } else {
                        Vec::new()
                    },
                    attributes,
                },
            );
        let scope = (
            proptest::collection::vec(span, 1..12),
            attrs(3),
            (any::<bool>(), words(), words(), words(), 0u32..2),
        )
            .prop_map(
                |(spans, a, (present, name, version, url, dropped))| ScopeSpans {
                    scope: present.then(|| InstrumentationScope {
                        name: name.into(),
                        version: version.into(),
                        attributes: a,
                        dropped_attributes_count: dropped,
                    }),
                    spans,
                    schema_url: url.into(),
                },
            );
        let group = (
            proptest::collection::vec(scope, 1..3),
            attrs(4),
            (words(), words(), 0u32..2),
        )
            .prop_map(|(s, mut a, (service, url, dropped))| {
                if !service.is_empty() {
                    a.push(KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(service.into())),
                        }),
                        ..Default::default()
                    });
                }
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: a,
                        dropped_attributes_count: dropped,
                        ..Default::default()
                    }),
                    scope_spans: s,
                    schema_url: url.into(),
                }
            });
        let block = (
            proptest::collection::vec(group, 1..3),
            any::<bool>(),
            -2i64..3,
        )
            .prop_map(|(groups, decoded, ingest)| {
                let block = if decoded {
                    let body = prost::Message::encode_to_vec(&ExportTraceServiceRequest {
                        resource_spans: groups,
                    });
                    SpanBlock::decode(&body, false).expect("decodes").0
                } else {
                    SpanBlock::from_prost(&groups)
                };
                HeldSpans {
                    ingest,
                    block: Arc::new(block),
                }
            });
        proptest::collection::vec(block, 1..4)
    }

    /// What the seal wrote, decoded, and the same rows converted to Arrow as they arrived.
    fn sealed_and_converted(held: &[HeldSpans], props: &WriterProperties) -> (Sealed, RecordBatch) {
        let sealed = Sealed::seal_spans(held, props).expect("sealed");
        let (order, _) = span_order(held);
        let mut rows = crate::parquet::convert::SpanRows::new();
        for &(hi, i) in &order {
            let b = &held[hi as usize].block;
            let origins = rows.origins(b);
            let (r, s, _) = b
                .indices()
                .find(|&(_, _, at)| at == i as usize)
                .expect("span");
            rows.append_one(b, &origins, (r, s, i as usize), held[hi as usize].ingest)
                .expect("append");
        }
        (sealed, rows.finish().expect("rows"))
    }

    /// Thousands of rows of attributes with distinct values (indices wider than a byte, level
    /// runs longer than one header byte counts), empty values, integers and rows without
    /// attributes read back as the rows hold them.
    #[test]
    fn wide_dictionaries_and_long_runs_read_back() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        use opentelemetry_proto::tonic::trace::v1::Span;
        let kv = |key: &str, value: Option<Value>| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value }),
            ..Default::default()
        };
        let spans = (0..6_000u32)
            .map(|i| Span {
                trace_id: [i.to_be_bytes(), [1; 4], [2; 4], [3; 4]].concat(),
                span_id: [i.to_be_bytes(), [4; 4]].concat(),
                name: "op".into(),
                start_time_unix_nano: 1,
                // Thousands of distinct durations, some spans still running (nulls).
                end_time_unix_nano: if i % 13 == 0 { 0 } else { 2 + u64::from(i) * 3 },
                flags: i % 3,
                attributes: if i % 11 == 0 {
                    Vec::new()
                } else {
                    vec![
                        kv("id", Some(Value::StringValue(format!("value-{i}")))),
                        kv("n", Some(Value::IntValue(i64::from(i % 7)))),
                        kv("e", (i % 3 == 0).then_some(Value::BoolValue(true))),
                    ]
                },
                ..Default::default()
            })
            .collect();
        let held = [one_block(spans)];
        for props in [
            writer_properties(3, 1 << 20),
            writer_properties(3, 1 << 20)
                .into_builder()
                .set_dictionary_page_size_limit(1 << 30)
                .set_data_page_size_limit(1 << 30)
                .set_data_page_row_count_limit(1 << 30)
                .build(),
            // The dictionary closes at 4 KiB: the first pages index it, the rest are PLAIN.
            writer_properties(3, 1 << 20)
                .into_builder()
                .set_dictionary_page_size_limit(4 << 10)
                .build(),
        ] {
            let (sealed, want) = sealed_and_converted(&held, &props);
            let got = sealed.decode().expect("decode");
            let got = arrow::compute::concat_batches(&want.schema(), &got).expect("concat");
            assert!(got == want, "rows differ");
            use parquet::basic::Encoding;
            use parquet::column::page::Page;
            let reader = SerializedFileReader::new(sealed.bytes.clone()).expect("file");
            let rg = reader.get_row_group(0).expect("row group");
            // The times: differences, bit-packed.
            let start = (0..rg.num_columns())
                .find(|&c| rg.metadata().column(c).column_path().string() == "start_time_unix_nano")
                .expect("column");
            assert!(
                rg.get_column_page_reader(start)
                    .expect("pages")
                    .all(|p| matches!(
                        p.expect("page"),
                        Page::DataPage {
                            encoding: Encoding::DELTA_BINARY_PACKED,
                            ..
                        }
                    )),
                "start times"
            );
            // A string leaf inside a map, and an integer column.
            for column in ["attributes.key_value.value", "duration_ns"] {
                let c = (0..rg.num_columns())
                    .find(|&c| rg.metadata().column(c).column_path().string() == column)
                    .expect("column");
                let encodings: Vec<Encoding> = rg
                    .get_column_page_reader(c)
                    .expect("pages")
                    .filter_map(|p| match p.expect("page") {
                        Page::DataPage { encoding, .. } => Some(encoding),
                        _ => None,
                    })
                    .collect();
                let small = props.dictionary_page_size_limit() < 64 << 10;
                assert!(
                    encodings.contains(&Encoding::RLE_DICTIONARY),
                    "{column}: {encodings:?}"
                );
                assert_eq!(
                    encodings.contains(&Encoding::PLAIN),
                    small,
                    "{column}: {encodings:?}"
                );
            }
        }
    }

    /// The same rows as parquet's `ArrowWriter` writes them, with the seal's properties.
    fn arrow_written(held: &[HeldSpans], props: &WriterProperties, rows: &RecordBatch) -> Bytes {
        let (order, traces) = span_order(held);
        let table = Table::Spans;
        let mut w = row_group_writer(
            table.schema(),
            props,
            table.sort_columns(),
            order.len(),
            traces,
            unfilled_columns(held),
        )
        .expect("writer");
        w.write(rows).expect("write");
        Bytes::from(w.into_inner().expect("file"))
    }

    /// What readers prune by in a top-level column: the chunk's statistics (min, max, nulls),
    /// each page's entry in the column index (null page, min, max, nulls) and its order.
    type Pruning = (
        Option<(Vec<u8>, Vec<u8>)>,
        Option<u64>,
        Vec<(bool, Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>)>,
        Option<parquet::basic::BoundaryOrder>,
    );

    fn pruning(file: &Bytes, column: &str) -> Pruning {
        use parquet::file::page_index::column_index::ColumnIndexMetaData;
        use parquet::file::statistics::Statistics;
        let meta = ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(file)
            .expect("footer");
        let rg = meta.row_group(0);
        let c = (0..rg.num_columns())
            .find(|&c| rg.column(c).column_path().string() == column)
            .expect("column");
        let (range, nulls) = match rg.column(c).statistics() {
            Some(Statistics::ByteArray(s)) => (
                s.min_opt().zip(s.max_opt()).map(|(lo, hi)| {
                    // Cut strings are bounds, not values, and say so.
                    let exact = [s.min_is_exact(), s.max_is_exact()].map(u8::from);
                    ([lo.data(), &exact].concat(), hi.data().to_vec())
                }),
                s.null_count_opt(),
            ),
            Some(Statistics::Int64(s)) => (
                s.min_opt()
                    .zip(s.max_opt())
                    .map(|(lo, hi)| (lo.to_le_bytes().to_vec(), hi.to_le_bytes().to_vec())),
                s.null_count_opt(),
            ),
            other => panic!("{column}: statistics {other:?}"),
        };
        let index = &meta.column_index().expect("column index")[0][c];
        let entries = match index {
            ColumnIndexMetaData::BYTE_ARRAY(pages) => (0..pages.num_pages() as usize)
                .map(|p| {
                    (
                        pages.is_null_page(p),
                        pages.min_value(p).map(<[u8]>::to_vec),
                        pages.max_value(p).map(<[u8]>::to_vec),
                        pages.null_count(p),
                    )
                })
                .collect(),
            ColumnIndexMetaData::INT64(pages) => (0..pages.num_pages() as usize)
                .map(|p| {
                    (
                        pages.is_null_page(p),
                        pages.min_value(p).map(|v| v.to_le_bytes().to_vec()),
                        pages.max_value(p).map(|v| v.to_le_bytes().to_vec()),
                        pages.null_count(p),
                    )
                })
                .collect(),
            _ => panic!("{column}: index {index:?}"),
        };
        (range, nulls, entries, index.get_boundary_order())
    }

    /// The bits of the `trace_id` bloom filter, and whether it holds each of the file's ids.
    fn bloom(file: &Bytes) -> (Vec<u8>, bool) {
        use parquet::file::properties::ReaderProperties;
        use parquet::file::serialized_reader::ReadOptionsBuilder;
        let options = ReadOptionsBuilder::new()
            .with_reader_properties(
                ReaderProperties::builder()
                    .set_read_bloom_filter(true)
                    .build(),
            )
            .build();
        let reader = SerializedFileReader::new_with_options(file.clone(), options).expect("file");
        let rg = reader.get_row_group(0).expect("row group");
        let filter = rg.get_column_bloom_filter(0).expect("bloom filter");
        let mut bits = Vec::new();
        filter.write_bitset(&mut bits).expect("bits");
        let ids = ParquetRecordBatchReaderBuilder::try_new(file.clone())
            .expect("open")
            .build()
            .expect("reader")
            .map(|b| b.expect("batch"))
            .collect::<Vec<_>>();
        let held = ids.iter().all(|b| {
            let ids = b
                .column(0)
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .expect("trace ids");
            ids.iter().flatten().all(|id| filter.check(id))
        });
        (bits, held)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// The columns the seal encodes itself read back as the rows hold them, in every
        /// reader path: whole, and by pages picked through the offset index; with the lake's
        /// properties, and with pages of 3 rows and dictionaries that fall back to PLAIN past
        /// 40 bytes, and with no dictionaries. The top-level columns' statistics and column
        /// index, and `trace_id`'s bloom filter, are those parquet's `ArrowWriter` writes for
        /// the same rows.
        #[test]
        fn own_columns_read_back_as_the_rows_hold_them(held in attribute_blocks()) {
            use parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection, RowSelector};
            let tight = writer_properties(3, 1 << 20)
                .into_builder()
                .set_data_page_row_count_limit(3)
                .set_dictionary_page_size_limit(40)
                .build();
            let lake = writer_properties(3, 1 << 20);
            // Pages of 3 rows, as parquet's writer closes them when it checks every row.
            let paged = writer_properties(3, 1 << 20)
                .into_builder()
                .set_data_page_row_count_limit(3)
                .set_write_batch_size(1)
                .build();
            for props in [&lake, &paged] {
                let (sealed, want) = sealed_and_converted(&held, props);
                let arrow = arrow_written(&held, props, &want);
                for column in OwnColumns::flat() {
                    proptest::prop_assert_eq!(
                        pruning(&sealed.bytes, column),
                        pruning(&arrow, column),
                        "{}", column
                    );
                }
                proptest::prop_assert_eq!(bloom(&sealed.bytes), bloom(&arrow));
            }
            // No dictionaries at all: every page PLAIN from the start.
            let plain = writer_properties(3, 1 << 20)
                .into_builder()
                .set_dictionary_enabled(false)
                .set_data_page_row_count_limit(3)
                .build();
            for props in [lake, tight, plain] {
                let (sealed, want) = sealed_and_converted(&held, &props);
                let got = sealed.decode().expect("decode");
                let got = arrow::compute::concat_batches(&want.schema(), &got).expect("concat");
                proptest::prop_assert_eq!(&got, &want);
                // Every other row, through the page index.
                let n = want.num_rows();
                let selectors: Vec<RowSelector> = (0..n)
                    .map(|r| if r % 2 == 0 { RowSelector::select(1) } else { RowSelector::skip(1) })
                    .collect();
                let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(
                    sealed.bytes.clone(),
                    ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
                )
                .expect("open")
                .with_row_selection(RowSelection::from(selectors))
                .build()
                .expect("reader");
                let picked: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("read");
                let picked = arrow::compute::concat_batches(&want.schema(), &picked).expect("concat");
                let every_other: Vec<u32> = (0..n as u32).step_by(2).collect();
                let want_picked = arrow::compute::take_record_batch(
                    &want,
                    &arrow::array::UInt32Array::from(every_other),
                )
                .expect("take");
                proptest::prop_assert_eq!(&picked, &want_picked);
            }
        }
    }

    proptest::proptest! {
        /// Keys sorted by buckets come out as a comparison sort orders them: random ids, ids
        /// sharing their leading bits (few buckets, large ones), repeated ids and times.
        #[test]
        fn bucket_sort_orders_as_comparing_does(
            keys in proptest::collection::vec(
                (proptest::prop_oneof![
                    proptest::prelude::any::<u128>(),
                    (0u128..4),
                    proptest::strategy::Strategy::prop_map(0u128..1 << 20, |v| v << 100),
                ], -3i64..3, 0u32..3, 0u32..50),
                0..600,
            )
        ) {
            let mut want = keys.clone();
            want.sort_unstable();
            let mut got = keys;
            sort_by_buckets(&mut got);
            proptest::prop_assert_eq!(got, want);
        }
    }

    proptest::proptest! {
        /// The packed sort key orders ids exactly as comparing the strings does (nulls last),
        /// then by time.
        #[test]
        fn sort_keys_order_like_the_strings(
            ids in proptest::collection::vec(
                proptest::option::weighted(0.9, "[0-9a-f\\x00]{0,40}"), 1..40),
            times in proptest::collection::vec(-3i64..3, 40),
        ) {
            let keys: Vec<SortKey<'_>> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| SortKey::new(id.as_deref(), times[i], 0, i))
                .collect();
            for a in &keys {
                for b in &keys {
                    let want = match (a.id, b.id) {
                        (Some(x), Some(y)) => x.cmp(y),
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => std::cmp::Ordering::Equal,
                    }
                    .then(a.time.cmp(&b.time));
                    proptest::prop_assert_eq!(SortKey::cmp(a, b), want);
                }
            }
        }
    }
}
