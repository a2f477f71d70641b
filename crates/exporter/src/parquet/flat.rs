//! The spans table's id and integer columns, encoded by the seal itself as `maps.rs` encodes
//! the maps and strings: straight from the sorted blocks into pages, without Arrow arrays or
//! parquet's column writer in between.
//!
//! - Ids (`trace_id`, `span_id`, `parent_span_id`) are PLAIN byte arrays (lowercase hex, or the
//!   text a native id was given as), as the lake's properties ask: unique values gain nothing
//!   from a dictionary. `trace_id`'s bloom filter takes each distinct id once; the rows are
//!   sorted by it, so a repeat is always the previous row's.
//! - Integers and timestamps (INT64): a dictionary where the properties enable one (flags,
//!   durations, dropped counts: a few values), falling back to PLAIN past its limit as parquet
//!   does; where they disable it, PLAIN, or DELTA_BINARY_PACKED where they ask for it (the
//!   times: [`delta_binary_packed`]).
//!
//! Both keep what parquet's writer keeps of a top-level column: the chunk's statistics and the
//! column index (signed order for integers, unsigned bytes for ids), and the offset index.
//!
//! Also here: the leaves of `events` and `links` when no row has an element
//! ([`empty_lists`]).

use bytes::Bytes;
use parquet::basic::{Compression, Encoding};
use parquet::bloom_filter::Sbbf;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedRowGroupWriter;
use parquet::schema::types::ColumnDescPtr;
use spanlake_core::ids::{TEXT_ID, hex_u64, id_in, push_hex, short_hex};
use std::hash::BuildHasher;

use super::maps::{
    Chunk, DataPage, Packer, Stats, compress, rle_run, varint, width_of, with_length, with_page,
    write_chunk,
};

fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(0x0164_5eed)
}

/// Definition levels of a page of an optional top-level column: 1 a value, 0 a null.
fn def_levels(out: &mut Vec<u8>, present: &[bool], nulls: usize) {
    let rows = present.len();
    with_length(out, |out| {
        if nulls == 0 {
            rle_run(out, 1, 1, rows);
        } else if nulls == rows {
            rle_run(out, 1, 0, rows);
        } else {
            let mut p = Packer::new(out, 1, rows);
            for &d in present {
                p.push(u32::from(d));
            }
            p.finish();
        }
    })
}

/// A page's open rows, common to both kinds of column: how many, which were null, and what
/// limits close it.
struct OpenPage {
    /// Whether each row holds a value (optional columns only).
    present: Vec<bool>,
    rows: usize,
    nulls: usize,
    row_limit: usize,
    byte_limit: usize,
}

impl OpenPage {
    fn new(descr: &ColumnDescPtr, props: &WriterProperties) -> OpenPage {
        OpenPage {
            present: Vec::new(),
            rows: 0,
            nulls: 0,
            row_limit: props.data_page_row_count_limit().max(1),
            byte_limit: props.column_data_page_size_limit(descr.path()).max(1),
        }
    }

    fn clear(&mut self) {
        self.present.clear();
        self.rows = 0;
        self.nulls = 0;
    }
}

/// The parts of a column every kind shares: what it is, how it is compressed, its finished
/// pages and statistics.
struct Column<T: super::maps::Bound> {
    descr: ColumnDescPtr,
    codec: Compression,
    nullable: bool,
    stats: Option<Stats<T>>,
    pages: Vec<DataPage>,
    rows: u64,
}

impl<T: super::maps::Bound> Column<T> {
    fn new(descr: ColumnDescPtr, props: &WriterProperties) -> Column<T> {
        Column {
            codec: props.compression(descr.path()),
            nullable: descr.self_type().is_optional(),
            stats: Stats::for_column(&descr, props),
            descr,
            pages: Vec::new(),
            rows: 0,
        }
    }

    /// Compress and keep a page of `rows` rows, `nulls` of them null (`buf`: its levels and
    /// values), whose values range over `range`.
    fn page(
        &mut self,
        buf: &[u8],
        (rows, nulls): (usize, usize),
        range: Option<(T, T)>,
        encoding: Encoding,
    ) -> Result<(), ParquetError> {
        if let Some(stats) = &mut self.stats {
            stats.page(range, nulls);
        }
        let uncompressed = buf.len();
        self.pages.push(DataPage {
            buf: Bytes::from(compress(self.codec, buf)?),
            uncompressed,
            levels: rows as u32,
            rows: rows as u32,
            encoding,
        });
        Ok(())
    }

    fn chunk(&mut self, dictionary: Option<(Vec<u8>, u32)>) -> Result<Chunk, ParquetError> {
        Ok(Chunk {
            descr: self.descr.clone(),
            codec: self.codec,
            dictionary,
            pages: std::mem::take(&mut self.pages),
            stats: self.stats.take().map(Stats::finish).transpose()?,
            bloom: None,
            rows: self.rows,
        })
    }
}

/// The distinct values of an integer column, in first-seen order.
#[derive(Default)]
struct IntDict {
    table: hashbrown::HashTable<u32>,
    values: Vec<i64>,
    /// The value last looked up and its index: most columns repeat one value row after row.
    last: Option<(i64, u32)>,
}

impl IntDict {
    #[inline]
    fn id(&mut self, v: i64) -> u32 {
        if let Some((last, id)) = self.last
            && last == v
        {
            return id;
        }
        let state = hasher();
        let hash = state.hash_one(v);
        let values = &mut self.values;
        let id = match self.table.find(hash, |&i| values[i as usize] == v) {
            Some(&i) => i,
            None => {
                let id = values.len() as u32;
                values.push(v);
                self.table
                    .insert_unique(hash, id, |&i| state.hash_one(values[i as usize]));
                id
            }
        };
        self.last = Some((v, id));
        id
    }

    fn plain(&self) -> Vec<u8> {
        self.values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// A top-level INT64 column (integers and timestamps) the seal encodes itself.
///
/// A row only appends its value: dictionary indices and the page's range are found when the
/// page is written, a tight loop over its values, and a page is checked for its size every
/// `page_rows` rows.
pub(crate) struct IntColumn {
    column: Column<i64>,
    open: OpenPage,
    /// The open page's values (nulls left out).
    values: Vec<i64>,
    /// Scratch: their dictionary indices, as the page is written.
    ids: Vec<u32>,
    dict: IntDict,
    /// Whether pages index the dictionary (it is enabled and has not outgrown `dict_limit`).
    dictionary: bool,
    /// Whether any page did.
    indexed: bool,
    dict_limit: usize,
    /// Whether pages without the dictionary are DELTA_BINARY_PACKED rather than PLAIN (the
    /// times).
    delta: bool,
    /// Rows a page takes: the properties' row limit, or fewer where 9 bytes a row (the most a
    /// value and its level take) would pass their byte limit.
    page_rows: usize,
}

impl IntColumn {
    pub(crate) fn new(descr: ColumnDescPtr, props: &WriterProperties) -> IntColumn {
        let path = descr.path();
        let open = OpenPage::new(&descr, props);
        IntColumn {
            dictionary: props.dictionary_enabled(path),
            delta: props.encoding(path) == Some(Encoding::DELTA_BINARY_PACKED),
            dict_limit: props.column_dictionary_page_size_limit(path),
            page_rows: open.row_limit.min(open.byte_limit.div_ceil(9)).max(1),
            open,
            column: Column::new(descr, props),
            values: Vec::new(),
            ids: Vec::new(),
            dict: IntDict::default(),
            indexed: false,
        }
    }

    /// Make room for a page of a row group of `rows` rows at once.
    pub(crate) fn reserve(&mut self, rows: usize) {
        let page = rows.min(self.page_rows);
        self.values.reserve(page);
        if self.column.nullable {
            self.open.present.reserve(page);
        }
    }

    /// Append a row: `v`, or a null. (Inlined at each column's call: a dozen a span.)
    #[inline(always)]
    pub(crate) fn push(&mut self, v: Option<i64>) -> Result<(), ParquetError> {
        match v {
            Some(v) => self.values.push(v),
            None => {
                debug_assert!(self.column.nullable, "a null in a required column");
                self.open.nulls += 1;
            }
        }
        if self.column.nullable {
            self.open.present.push(v.is_some());
        }
        self.open.rows += 1;
        if self.open.rows >= self.page_rows {
            self.flush_page()?;
        }
        Ok(())
    }

    /// Append `n` rows of `v` (the rows of one resource or scope, one after another): the
    /// pages break where `n` pushes would break them.
    pub(crate) fn push_run(&mut self, v: Option<i64>, mut n: usize) -> Result<(), ParquetError> {
        if n == 1 {
            return self.push(v);
        }
        while n > 0 {
            let take = n.min(self.page_rows.saturating_sub(self.open.rows)).max(1);
            match v {
                Some(v) => self.values.extend(std::iter::repeat_n(v, take)),
                None => {
                    debug_assert!(self.column.nullable, "a null in a required column");
                    self.open.nulls += take;
                }
            }
            if self.column.nullable {
                self.open
                    .present
                    .extend(std::iter::repeat_n(v.is_some(), take));
            }
            self.open.rows += take;
            n -= take;
            if self.open.rows >= self.page_rows {
                self.flush_page()?;
            }
        }
        Ok(())
    }

    /// Write the open rows as a page; with a dictionary that outgrows its limit on the way,
    /// only the rows up to there (the rest open the next page, PLAIN).
    #[inline(never)]
    fn flush_page(&mut self) -> Result<(), ParquetError> {
        if self.open.rows == 0 {
            return Ok(());
        }
        let nullable = self.column.nullable;
        let (mut rows, mut n) = (self.open.rows, self.values.len());
        let dictionary = self.dictionary;
        // A page of one value (most of the integer columns: flags, dropped counts, the ingest
        // time): looked up once, and written as one run.
        let mut single = None;
        if dictionary
            && let Some(&first) = self.values.first()
            && self.values.iter().all(|&v| v == first)
        {
            let id = self.dict.id(first);
            if self.dict.values.len() * 8 <= self.dict_limit {
                single = Some(id);
            }
        }
        if dictionary && single.is_none() {
            self.ids.clear();
            for (k, &v) in self.values.iter().enumerate() {
                self.ids.push(self.dict.id(v));
                if self.dict.values.len() * 8 > self.dict_limit {
                    // Past its limit the dictionary closes: later pages are PLAIN.
                    self.dictionary = false;
                    n = k + 1;
                    rows = if nullable {
                        let mut present = 0;
                        1 + self
                            .open
                            .present
                            .iter()
                            .position(|&p| {
                                present += usize::from(p);
                                present == n
                            })
                            .unwrap_or(self.open.rows - 1)
                    } else {
                        n
                    };
                    break;
                }
            }
        }
        let values = &self.values[..n];
        // One value: its own range. Else one pass, two plain accumulators.
        let range = match (single, values.first()) {
            (_, None) => None,
            (Some(_), Some(&v)) => Some((v, v)),
            (None, Some(_)) => {
                let (mut lo, mut hi) = (i64::MAX, i64::MIN);
                for &v in values {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
                Some((lo, hi))
            }
        };
        let nulls = rows - n;
        let (ids, dict_len) = (&self.ids, self.dict.values.len());
        let (present, delta) = (&self.open.present, self.delta);
        let column = &mut self.column;
        with_page(|out| {
            out.reserve(n * 8 + rows / 8 + 16);
            if nullable {
                def_levels(out, &present[..rows], nulls);
            }
            let encoding = if dictionary {
                let width = width_of(dict_len.saturating_sub(1) as u64);
                out.push(width as u8);
                if let Some(id) = single {
                    rle_run(out, width, id, n);
                } else if let Some(&first) = ids[..n].first() {
                    let ids = &ids[..n];
                    if ids.iter().all(|&i| i == first) {
                        rle_run(out, width, first, n);
                    } else {
                        let mut p = Packer::new(out, width, n);
                        for &i in ids {
                            p.push(i);
                        }
                        p.finish();
                    }
                }
                Encoding::RLE_DICTIONARY
            } else if delta {
                delta_binary_packed(out, values);
                Encoding::DELTA_BINARY_PACKED
            } else {
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Encoding::PLAIN
            };
            column.page(out, (rows, nulls), range, encoding)
        })?;
        self.indexed |= dictionary;
        self.column.rows += rows as u64;
        if rows == self.open.rows {
            self.open.clear();
            self.values.clear();
        } else {
            self.open.rows -= rows;
            self.open.nulls -= nulls;
            if nullable {
                self.open.present.drain(..rows);
            }
            self.values.drain(..n);
        }
        Ok(())
    }

    pub(crate) fn rows(&self) -> u64 {
        self.column.rows + self.open.rows as u64
    }

    /// Write the column's chunk to the row group `out`.
    pub(crate) fn append_to<W: std::io::Write + Send>(
        &mut self,
        out: &mut SerializedRowGroupWriter<'_, W>,
        props: &WriterProperties,
    ) -> Result<(), ParquetError> {
        // A page cut short where the dictionary closed leaves rows for another.
        while self.open.rows > 0 {
            self.flush_page()?;
        }
        let dictionary = self
            .indexed
            .then(|| (self.dict.plain(), self.dict.values.len() as u32));
        write_chunk(out, self.column.chunk(dictionary)?, props)
    }
}

/// The chunk of a leaf of a list column (`events`, `links`) when no row of the row group has
/// an element: every row an empty list, one repetition and one definition level of 0 each, no
/// values, in pages of the properties' row limit. (No statistics: the lake keeps none inside
/// lists.)
pub(crate) fn empty_lists(
    descr: ColumnDescPtr,
    rows: usize,
    props: &WriterProperties,
) -> Result<Chunk, ParquetError> {
    let codec = props.compression(descr.path());
    let row_limit = props.data_page_row_count_limit().max(1);
    let (max_rep, max_def) = (descr.max_rep_level(), descr.max_def_level());
    let mut pages = Vec::new();
    let mut left = rows;
    while left > 0 {
        let n = left.min(row_limit);
        let (buf, uncompressed) = with_page(|out| {
            for max in [max_rep, max_def] {
                if max > 0 {
                    with_length(out, |out| rle_run(out, width_of(max as u64), 0, n));
                }
            }
            Ok::<_, ParquetError>((compress(codec, out)?, out.len()))
        })?;
        pages.push(DataPage {
            buf: Bytes::from(buf),
            uncompressed,
            levels: n as u32,
            rows: n as u32,
            encoding: Encoding::PLAIN,
        });
        left -= n;
    }
    Ok(Chunk {
        descr,
        codec,
        dictionary: None,
        pages,
        stats: None,
        bloom: None,
        rows: rows as u64,
    })
}

/// Values per block and per miniblock of [`delta_binary_packed`] (parquet's own, for INT64).
const DELTA_BLOCK: usize = 256;
const DELTA_MINIBLOCK: usize = 64;

/// `values` DELTA_BINARY_PACKED: a header (block size, miniblocks per block, number of
/// values, the first value), then blocks of the differences between neighbours, each block
/// as its least difference and per miniblock the bits of every difference above it. Times
/// sorted by trace then start differ by a few bits where PLAIN takes 64 for each.
pub(super) fn delta_binary_packed(out: &mut Vec<u8>, values: &[i64]) {
    fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }
    let miniblocks = DELTA_BLOCK / DELTA_MINIBLOCK;
    varint(out, DELTA_BLOCK as u64);
    varint(out, miniblocks as u64);
    varint(out, values.len() as u64);
    let Some((&first, rest)) = values.split_first() else {
        varint(out, 0);
        return;
    };
    varint(out, zigzag(first));
    let mut prev = first;
    let mut deltas = [0i64; DELTA_BLOCK];
    for block in rest.chunks(DELTA_BLOCK) {
        let deltas = &mut deltas[..block.len()];
        for (d, &v) in deltas.iter_mut().zip(block) {
            *d = v.wrapping_sub(prev);
            prev = v;
        }
        let min = deltas.iter().copied().min().unwrap_or(0);
        varint(out, zigzag(min));
        // Each miniblock's bit width; those the last block does not need stay 0.
        let widths = out.len();
        out.resize(widths + miniblocks, 0);
        for (m, mini) in deltas.chunks(DELTA_MINIBLOCK).enumerate() {
            let max = mini.iter().copied().max().unwrap_or(min);
            let width = width_of(max.wrapping_sub(min) as u64);
            out[widths + m] = width as u8;
            // The miniblock's values from the lowest bit, padded to a whole miniblock.
            let end = out.len() + DELTA_MINIBLOCK * width as usize / 8;
            let (mut acc, mut bits) = (0u128, 0u32);
            for &d in mini.iter() {
                acc |= u128::from(d.wrapping_sub(min) as u64) << bits;
                bits += width;
                if bits >= 64 {
                    out.extend_from_slice(&(acc as u64).to_le_bytes());
                    acc >>= 64;
                    bits -= 64;
                }
            }
            out.extend_from_slice(&acc.to_le_bytes()[..bits.div_ceil(8) as usize]);
            out.resize(end, 0);
        }
    }
}

/// A top-level id column the seal encodes itself: each row's id as text, PLAIN.
pub(crate) struct IdColumn {
    column: Column<Vec<u8>>,
    open: OpenPage,
    /// The open page's values, PLAIN (each a 4-byte length, then the bytes).
    plain: Vec<u8>,
    /// Where the open page's least and greatest values are in `plain`: start and length.
    lo: (usize, usize),
    hi: (usize, usize),
    /// While every id of the open page is binary: the least and greatest as keys
    /// ([`binary_key`]), compared instead of their text.
    keys: Option<(IdKey, IdKey)>,
    /// The bloom filter and the false-positive rate it is folded down to, and the id last
    /// entered in it (its key, or else its text).
    bloom: Option<(Sbbf, f64)>,
    last: LastId,
    text: String,
}

/// The id last entered in a bloom filter: rows sorted by it repeat it, and enter it once.
enum LastId {
    None,
    Key(IdKey),
    Text(Vec<u8>),
}

/// A binary id of up to 16 bytes as a key ordered as its hex text is: its bytes big-endian,
/// zero-padded on the right, then its length.
type IdKey = (u128, usize);

/// The key of the binary id `raw` (`None`: longer than an OTLP id, or an id given as text).
fn binary_key(raw: &[u8]) -> Option<IdKey> {
    // OTLP's two sizes as what they are (no call to memcpy for a copy of unknown length).
    if raw.starts_with(TEXT_ID) {
        return None;
    }
    if let Ok(trace) = <[u8; 16]>::try_from(raw) {
        return Some((u128::from_be_bytes(trace), 16));
    }
    if let Ok(span) = <[u8; 8]>::try_from(raw) {
        return Some((u128::from(u64::from_be_bytes(span)) << 64, 8));
    }
    if raw.len() > 16 {
        return None;
    }
    let mut b = [0u8; 16];
    b[..raw.len()].copy_from_slice(raw);
    Some((u128::from_be_bytes(b), raw.len()))
}

impl IdColumn {
    pub(crate) fn new(
        descr: ColumnDescPtr,
        props: &WriterProperties,
    ) -> Result<IdColumn, ParquetError> {
        let bloom = match props.bloom_filter_properties(descr.path()) {
            Some(b) => Some((Sbbf::new_with_ndv_fpp(b.ndv(), b.fpp())?, b.fpp())),
            None => None,
        };
        Ok(IdColumn {
            open: OpenPage::new(&descr, props),
            column: Column::new(descr, props),
            plain: Vec::new(),
            lo: (0, 0),
            hi: (0, 0),
            keys: None,
            bloom,
            last: LastId::None,
            text: String::new(),
        })
    }

    /// Make room for a page of a row group of `rows` rows of ids of `len` bytes at once.
    pub(crate) fn reserve(&mut self, rows: usize, len: usize) {
        let page = rows.min(self.open.row_limit);
        self.plain
            .reserve((page * (4 + len)).min(self.open.byte_limit + 4 + len));
        if self.column.nullable {
            self.open.present.reserve(page);
        }
    }

    /// Append a row: the id `raw` as a block holds it (empty: a null, in an optional column).
    #[inline(always)]
    pub(crate) fn push(&mut self, raw: &[u8]) -> Result<(), ParquetError> {
        let open = &mut self.open;
        open.rows += 1;
        self.column.rows += 1;
        if raw.is_empty() && self.column.nullable {
            open.present.push(false);
            open.nulls += 1;
        } else {
            if self.column.nullable {
                open.present.push(true);
            }
            let key = binary_key(raw);
            let first = self.plain.is_empty();
            let at = match key {
                // OTLP ids: their hex computed in registers and written into the page as it is.
                Some((k, len @ (8 | 16))) => {
                    self.plain
                        .extend_from_slice(&(2 * len as u32).to_le_bytes());
                    let at = (self.plain.len(), 2 * len);
                    self.plain.extend_from_slice(&hex_u64((k >> 64) as u64));
                    if len == 16 {
                        self.plain.extend_from_slice(&hex_u64(k as u64));
                    }
                    at
                }
                _ => {
                    let (mut hex, mut buf) = ([0u8; 32], [0u8; 64]);
                    let text = match key {
                        Some(_) => short_hex(raw, &mut hex),
                        None => match id_in(raw, &mut buf) {
                            Some(t) => t.as_bytes(),
                            None => {
                                // Longer than an OTLP id, and not given as text.
                                self.text.clear();
                                push_hex(&mut self.text, raw);
                                self.text.as_bytes()
                            }
                        },
                    };
                    self.plain
                        .extend_from_slice(&(text.len() as u32).to_le_bytes());
                    let at = (self.plain.len(), text.len());
                    self.plain.extend_from_slice(text);
                    at
                }
            };
            let text = &self.plain[at.0..at.0 + at.1];
            let slice = |(start, len): (usize, usize)| &self.plain[start..start + len];
            match (first, key, &mut self.keys) {
                (true, _, _) => {
                    (self.lo, self.hi) = (at, at);
                    self.keys = key.map(|k| (k, k));
                }
                (false, Some(k), Some((lo, hi))) => {
                    if k > *hi {
                        (self.hi, *hi) = (at, k);
                    } else if k < *lo {
                        (self.lo, *lo) = (at, k);
                    }
                }
                _ => {
                    self.keys = None;
                    if text > slice(self.hi) {
                        self.hi = at;
                    } else if text < slice(self.lo) {
                        self.lo = at;
                    }
                }
            }
            if let Some((bloom, _)) = &mut self.bloom {
                let repeated = match (key, &self.last) {
                    (Some(k), LastId::Key(last)) => k == *last,
                    (None, LastId::Text(last)) => last == text,
                    _ => false,
                };
                if !repeated {
                    bloom.insert(text);
                    self.last = match key {
                        Some(k) => LastId::Key(k),
                        None => LastId::Text(text.to_vec()),
                    };
                }
            }
        }
        if open.rows >= open.row_limit || self.plain.len() + open.rows / 8 >= open.byte_limit {
            self.flush_page()?;
        }
        Ok(())
    }

    #[inline(never)]
    fn flush_page(&mut self) -> Result<(), ParquetError> {
        if self.open.rows == 0 {
            return Ok(());
        }
        let range = (!self.plain.is_empty()).then(|| {
            let slice = |(start, len): (usize, usize)| self.plain[start..start + len].to_vec();
            (slice(self.lo), slice(self.hi))
        });
        let (plain, open, column) = (&self.plain, &self.open, &mut self.column);
        with_page(|out| {
            out.reserve(plain.len() + open.rows / 8 + 16);
            if column.nullable {
                def_levels(out, &open.present, open.nulls);
            }
            out.extend_from_slice(plain);
            column.page(out, (open.rows, open.nulls), range, Encoding::PLAIN)
        })?;
        self.open.clear();
        self.plain.clear();
        Ok(())
    }

    pub(crate) fn rows(&self) -> u64 {
        self.column.rows
    }

    /// Write the column's chunk (and bloom filter) to the row group `out`.
    pub(crate) fn append_to<W: std::io::Write + Send>(
        &mut self,
        out: &mut SerializedRowGroupWriter<'_, W>,
        props: &WriterProperties,
    ) -> Result<(), ParquetError> {
        self.flush_page()?;
        let mut chunk = self.column.chunk(None)?;
        chunk.bloom = self.bloom.take().map(|(mut bloom, fpp)| {
            bloom.fold_to_target_fpp(fpp);
            bloom
        });
        write_chunk(out, chunk, props)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OTLP's two id sizes take their own paths: the keys are the general reading's, and
    /// order as the ids' hex text does.
    #[test]
    fn binary_keys_of_every_length_order_as_their_text() {
        let general = |raw: &[u8]| -> Option<IdKey> {
            if raw.len() > 16 || raw.starts_with(TEXT_ID) {
                return None;
            }
            let mut b = [0u8; 16];
            b[..raw.len()].copy_from_slice(raw);
            Some((u128::from_be_bytes(b), raw.len()))
        };
        let mut ids: Vec<Vec<u8>> = vec![Vec::new(), [TEXT_ID.as_slice(), b"abcd"].concat()];
        for len in [1, 7, 8, 9, 15, 16, 17] {
            for fill in [0u8, 0x7f, 0xff] {
                let mut id = vec![fill; len];
                id[0] = 0x80;
                ids.push(id.clone());
                id[len - 1] ^= 1;
                ids.push(id);
            }
        }
        for a in &ids {
            assert_eq!(binary_key(a), general(a), "{a:?}");
            for b in &ids {
                if let (Some(ka), Some(kb)) = (binary_key(a), binary_key(b)) {
                    let mut text = (String::new(), String::new());
                    push_hex(&mut text.0, a);
                    push_hex(&mut text.1, b);
                    assert_eq!(ka.cmp(&kb), text.0.cmp(&text.1), "{a:?} {b:?}");
                }
            }
        }
    }
}
