//! The spans table's columns the seal encodes itself, straight from the sorted blocks instead
//! of through Arrow arrays and parquet's column writer: the attribute maps (`attributes`,
//! `resource_attributes`, `scope_attributes` and their `*_types`) and the top-level string
//! columns (name, kind, status, trace state, service, scope, schema URLs).
//!
//! Most of what a span row holds is its attributes, and most of those repeat from span to span:
//! the same keys in the same order, often the same values. A block stores a key or value
//! repeated from the previous span once, at one place, so a block's attributes at each position
//! of a row are remembered by place ([`BlockIds`]): the next span of the block with the same
//! place needs no lookup, where parquet's writer hashes and compares every string of every row.
//! A resource's or scope's attributes are looked up once per group and copied to each of its
//! rows as dictionary indices. Definition and repetition levels follow from each row's number
//! of entries.
//!
//! A chunk is what parquet's `ArrowWriter` writes for the same rows with the same properties:
//! a PLAIN dictionary page and RLE_DICTIONARY data pages (v1, levels RLE), pages ending on row
//! boundaries within the properties' row and byte limits, an offset index; for top-level
//! columns the chunk's statistics and the column index (none are kept inside maps). Pages are
//! encoded as rows arrive and held compressed until the chunk is written (its dictionary page
//! goes first). A dictionary that outgrows the properties' limit closes, and later pages are
//! PLAIN, as parquet's writer falls back. Headers are written by parquet's own page writer and
//! chunks enter the row group through `append_column`.

use std::cell::RefCell;
use std::hash::BuildHasher;

use bytes::Bytes;
use parquet::basic::{BoundaryOrder, Compression, Encoding, EncodingMask, PageType};
use parquet::bloom_filter::Sbbf;
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, SerializedRowGroupWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;
use spanlake_core::SpanBlock;
use spanlake_core::spans::{Attr, Rows, Str, Value, same_bytes, text_slot};

use super::convert::block_value_text;

/// A null value's index.
pub(crate) const NULL: u32 = u32::MAX;

/// Indices from here on are of strings of the open page alone: a leaf whose dictionary is
/// closed writes its later pages PLAIN, and keeps only the open page's strings.
const SPILLED: u32 = 1 << 31;

fn hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(0x5eed_5a1e)
}

/// The distinct strings of one leaf column in first-seen order, PLAIN-encoded as its dictionary
/// page holds them (a 4-byte length, then the bytes).
#[derive(Default)]
pub(crate) struct Dict {
    table: hashbrown::HashTable<u32>,
    plain: Vec<u8>,
    /// Each entry's bytes in `plain`: start and length.
    places: Vec<(u32, u32)>,
}

/// Entry `i`'s bytes among a dictionary's `plain` bytes at `places`.
fn entry<'a>(plain: &'a [u8], places: &[(u32, u32)], i: u32) -> &'a [u8] {
    let (start, len) = places[i as usize];
    &plain[start as usize..(start + len) as usize]
}

impl Dict {
    /// The index of `s`, added if new.
    pub(crate) fn id(&mut self, s: &[u8]) -> u32 {
        let state = hasher();
        let Dict {
            table,
            plain,
            places,
        } = self;
        let hash = state.hash_one(s);
        if let Some(&i) = table.find(hash, |&i| same_bytes(entry(plain, places, i), s)) {
            return i;
        }
        let id = places.len() as u32;
        plain.extend_from_slice(&(s.len() as u32).to_le_bytes());
        places.push((plain.len() as u32, s.len() as u32));
        plain.extend_from_slice(s);
        table.insert_unique(hash, id, |&i| state.hash_one(entry(plain, places, i)));
        id
    }

    pub(crate) fn len(&self) -> usize {
        self.places.len()
    }

    fn get(&self, i: u32) -> &[u8] {
        entry(&self.plain, &self.places, i)
    }

    fn clear(&mut self) {
        self.table.clear();
        self.plain.clear();
        self.places.clear();
    }
}

/// A data page of a leaf, encoded and compressed, waiting for the chunk to be written (its
/// dictionary page goes first, and is complete only at the end).
pub(super) struct DataPage {
    pub(super) buf: Bytes,
    pub(super) uncompressed: usize,
    pub(super) levels: u32,
    pub(super) rows: u32,
    pub(super) encoding: Encoding,
}

/// One leaf column being written (a map's key or value, a string column): its dictionary and
/// the data pages encoded so far.
struct LeafWriter {
    descr: ColumnDescPtr,
    codec: Compression,
    /// Whether the leaf is optional (a map's value, a nullable column) rather than required (a
    /// map's key, a required column).
    nullable: bool,
    /// Statistics, for the top-level columns (none are kept inside maps).
    stats: Option<Box<DictStats>>,
    dict: Dict,
    dict_limit: usize,
    /// Whether the dictionary is closed (it outgrew `dict_limit`, or the properties ask for
    /// none): pages from then on are PLAIN, their new strings in `spill`.
    closed: bool,
    spill: Dict,
    pages: Vec<DataPage>,
}

impl LeafWriter {
    fn new(descr: ColumnDescPtr, props: &WriterProperties) -> LeafWriter {
        let path = descr.path();
        let stats = Stats::for_column(&descr, props).map(|stats| {
            Box::new(DictStats {
                seen_at: Vec::new(),
                distinct: Vec::new(),
                page_no: 0,
                stats,
            })
        });
        LeafWriter {
            codec: props.compression(path),
            dict_limit: props.column_dictionary_page_size_limit(path),
            closed: !props.dictionary_enabled(path),
            nullable: descr.self_type().is_optional(),
            stats,
            descr,
            dict: Dict::default(),
            spill: Dict::default(),
            pages: Vec::new(),
        }
    }

    /// The index of `s`: in the dictionary, or (closed) among the open page's strings.
    #[inline]
    fn id(&mut self, s: &[u8]) -> u32 {
        if self.closed {
            SPILLED + self.spill.id(s)
        } else {
            self.dict.id(s)
        }
    }

    /// The index of `s` in the dictionary, even once it is closed: for values found once and
    /// kept for many rows (a group's), which a closed dictionary's page strings cannot be.
    /// (Past the dictionary's close they are written PLAIN like the rest.)
    #[inline]
    fn lasting_id(&mut self, s: &[u8]) -> u32 {
        self.dict.id(s)
    }

    fn string(&self, id: u32) -> &[u8] {
        if id >= SPILLED {
            self.spill.get(id - SPILLED)
        } else {
            self.dict.get(id)
        }
    }

    /// Bytes the value `id` takes in a PLAIN page.
    fn plain_len(&self, id: u32) -> usize {
        if id == NULL {
            0
        } else {
            4 + self.string(id).len()
        }
    }

    /// Bytes about `entries` dictionary indices take with `level_bits` bits of levels each
    /// (none once the dictionary is closed: its pages' bytes are counted as PLAIN values).
    fn index_bytes(&self, entries: usize, level_bits: usize) -> usize {
        if self.closed {
            0
        } else {
            entries * (width_of(self.dict.len() as u64) as usize + level_bits) / 8
        }
    }

    fn over_limit(&self) -> bool {
        !self.closed && self.dict.plain.len() > self.dict_limit
    }

    /// Encode and compress the page of `counts` rows whose entries are `ids`; close the
    /// dictionary if it outgrew its limit.
    /// (`counts`: the entries of each row of a map; `None` for a top-level column, a value
    /// a row.)
    fn page(&mut self, counts: Option<&[u32]>, ids: &[u32]) -> Result<(), ParquetError> {
        let (buf, uncompressed, levels) = with_page(|out| {
            let levels = encode_page(counts, ids, self, out);
            Ok::<_, ParquetError>((compress(self.codec, out)?, out.len(), levels))
        })?;
        let rows = counts.map_or(ids.len(), |c| c.len());
        if let Some(mut stats) = self.stats.take() {
            stats.page(self, ids, rows);
            self.stats = Some(stats);
        }
        self.pages.push(DataPage {
            buf: Bytes::from(buf),
            uncompressed,
            levels: levels as u32,
            rows: rows as u32,
            encoding: if self.closed {
                Encoding::PLAIN
            } else {
                Encoding::RLE_DICTIONARY
            },
        });
        if self.over_limit() {
            self.closed = true;
        }
        self.spill.clear();
        Ok(())
    }
}

/// A value statistics are kept of: a string's bytes (compared as unsigned bytes, the order of
/// UTF-8 strings) or a signed 64-bit integer.
pub(super) trait Bound: PartialOrd + Clone {
    const TYPE: parquet::basic::Type;
    /// The value as the column index holds it, as a lower (`upper`: upper) bound of at most
    /// `len` bytes when it can be cut, and whether it was.
    fn bound_bytes(&self, len: Option<usize>, upper: bool) -> (Vec<u8>, bool);
    /// The chunk's statistics, as parquet's column writer makes them (strings cut to `len`
    /// bytes).
    fn statistics(
        min: Option<Self>,
        max: Option<Self>,
        nulls: u64,
        len: Option<usize>,
    ) -> Statistics;
}

impl Bound for Vec<u8> {
    const TYPE: parquet::basic::Type = parquet::basic::Type::BYTE_ARRAY;
    fn bound_bytes(&self, len: Option<usize>, upper: bool) -> (Vec<u8>, bool) {
        match len.filter(|&l| self.len() > l) {
            Some(l) => match cut(self, l, upper) {
                Some(cut) => (cut, true),
                None => (self.clone(), false),
            },
            None => (self.clone(), false),
        }
    }
    fn statistics(
        min: Option<Self>,
        max: Option<Self>,
        nulls: u64,
        len: Option<usize>,
    ) -> Statistics {
        let (min, min_cut) = min.map(|m| m.bound_bytes(len, false)).unzip();
        let (max, max_cut) = max.map(|m| m.bound_bytes(len, true)).unzip();
        Statistics::ByteArray(
            ValueStatistics::new(
                min.map(ByteArray::from),
                max.map(ByteArray::from),
                None,
                Some(nulls),
                false,
            )
            .with_min_is_exact(min_cut != Some(true))
            .with_max_is_exact(max_cut != Some(true)),
        )
    }
}

/// `s` cut to at most `len` bytes as parquet cuts a string's statistics (on a character
/// boundary when it is UTF-8): a prefix for a lower bound; for an upper bound, a prefix whose
/// last character (byte, if not UTF-8) is raised by one. `None` when no such bound exists.
fn cut(s: &[u8], len: usize, upper: bool) -> Option<Vec<u8>> {
    let Ok(text) = std::str::from_utf8(s) else {
        let mut prefix = s[..len].to_vec();
        if !upper {
            return Some(prefix);
        }
        for byte in prefix.iter_mut().rev() {
            let (raised, overflow) = byte.overflowing_add(1);
            *byte = raised;
            if !overflow {
                return Some(prefix);
            }
        }
        return None;
    };
    if !upper {
        let end = (1..=len).rfind(|&x| text.is_char_boundary(x))?;
        return Some(s[..end].to_vec());
    }
    let end = (len.saturating_sub(3)..=len).rfind(|&x| text.is_char_boundary(x))?;
    let prefix = &text[..end];
    for (at, c) in prefix.char_indices().rev() {
        if let Some(next) = char::from_u32(c as u32 + 1)
            && next.len_utf8() == c.len_utf8()
        {
            let mut out = prefix.as_bytes()[..at + c.len_utf8()].to_vec();
            next.encode_utf8(&mut out[at..]);
            return Some(out);
        }
    }
    None
}

impl Bound for i64 {
    const TYPE: parquet::basic::Type = parquet::basic::Type::INT64;
    fn bound_bytes(&self, _: Option<usize>, _: bool) -> (Vec<u8>, bool) {
        (self.to_le_bytes().to_vec(), false)
    }
    fn statistics(
        min: Option<Self>,
        max: Option<Self>,
        nulls: u64,
        _: Option<usize>,
    ) -> Statistics {
        // Signed order: the deprecated min and max fields are written too, as parquet does.
        Statistics::Int64(
            ValueStatistics::new(min, max, None, Some(nulls), false)
                .with_backwards_compatible_min_max(true),
        )
    }
}

/// Statistics of a top-level column as parquet keeps them: of the chunk (min, max, nulls) and,
/// with page statistics, of each page in the column index.
pub(super) struct Stats<T: Bound> {
    min: Option<T>,
    max: Option<T>,
    nulls: u64,
    /// The column index; invalid (not kept) without page statistics.
    index: ColumnIndexBuilder,
    /// The bytes the chunk's statistics and the column index keep of a string.
    stats_len: Option<usize>,
    index_len: Option<usize>,
    last: Option<(T, T)>,
    ascending: bool,
    descending: bool,
}

impl<T: Bound> Stats<T> {
    /// Statistics as `props` ask for the column `descr` (`None`: none at all).
    pub(super) fn for_column(descr: &ColumnDescPtr, props: &WriterProperties) -> Option<Stats<T>> {
        let pages = match props.statistics_enabled(descr.path()) {
            EnabledStatistics::None => return None,
            level => level == EnabledStatistics::Page,
        };
        let mut index = ColumnIndexBuilder::new(T::TYPE);
        if !pages {
            index.to_invalid();
        }
        Some(Stats {
            min: None,
            max: None,
            nulls: 0,
            index,
            stats_len: props.statistics_truncate_length(),
            index_len: props.column_index_truncate_length(),
            last: None,
            ascending: true,
            descending: true,
        })
    }

    /// Take in a page whose least and greatest values are `range` (`None`: every value null)
    /// and which holds `nulls` nulls.
    pub(super) fn page(&mut self, range: Option<(T, T)>, nulls: usize) {
        self.nulls += nulls as u64;
        let pages = self.index.valid();
        let Some((lo, hi)) = range else {
            if pages {
                self.index
                    .append(true, Vec::new(), Vec::new(), nulls as i64);
            }
            return;
        };
        if self.min.as_ref().is_none_or(|m| lo < *m) {
            self.min = Some(lo.clone());
        }
        if self.max.as_ref().is_none_or(|m| hi > *m) {
            self.max = Some(hi.clone());
        }
        if pages {
            if let Some((last_lo, last_hi)) = &self.last {
                if *last_lo > lo || *last_hi > hi {
                    self.ascending = false;
                }
                if lo > *last_lo || hi > *last_hi {
                    self.descending = false;
                }
            }
            let (min, _) = lo.bound_bytes(self.index_len, false);
            let (max, _) = hi.bound_bytes(self.index_len, true);
            self.index.append(false, min, max, nulls as i64);
            self.last = Some((lo, hi));
        }
    }

    /// The chunk's statistics and column index.
    pub(super) fn finish(self) -> Result<(Statistics, Option<ColumnIndexMetaData>), ParquetError> {
        let stats = T::statistics(self.min, self.max, self.nulls, self.stats_len);
        let mut index = self.index;
        let index = if index.valid() {
            index.set_boundary_order(match (self.ascending, self.descending) {
                (true, _) => BoundaryOrder::ASCENDING,
                (false, true) => BoundaryOrder::DESCENDING,
                (false, false) => BoundaryOrder::UNORDERED,
            });
            Some(index.build()?)
        } else {
            None
        };
        Ok((stats, index))
    }
}

/// A dictionary-encoded string column's statistics: the page's distinct values found by index
/// (without comparing every row's string), then compared.
struct DictStats {
    /// Page number at which each dictionary entry was last seen.
    seen_at: Vec<u32>,
    distinct: Vec<u32>,
    page_no: u32,
    stats: Stats<Vec<u8>>,
}

impl DictStats {
    /// Take in a page of `rows` rows whose values are `ids` (of `leaf`; a top-level column
    /// has a value, or a null, per row).
    fn page(&mut self, leaf: &LeafWriter, ids: &[u32], rows: usize) {
        let nulls = ids.iter().filter(|&&i| i == NULL).count();
        self.distinct.clear();
        if self.seen_at.len() < leaf.dict.len() {
            self.seen_at.resize(leaf.dict.len(), u32::MAX);
        }
        fn widen<'a>(
            range: Option<(&'a [u8], &'a [u8])>,
            s: &'a [u8],
        ) -> Option<(&'a [u8], &'a [u8])> {
            Some(range.map_or((s, s), |(lo, hi)| (lo.min(s), hi.max(s))))
        }
        let mut range = None;
        for &i in ids {
            if i == NULL {
                continue;
            }
            if i >= SPILLED {
                range = widen(range, leaf.string(i));
            } else if self.seen_at[i as usize] != self.page_no {
                self.seen_at[i as usize] = self.page_no;
                self.distinct.push(i);
            }
        }
        self.page_no += 1;
        for &i in &self.distinct {
            range = widen(range, leaf.dict.get(i));
        }
        debug_assert!(range.is_some() || nulls == rows);
        self.stats
            .page(range.map(|(lo, hi)| (lo.to_vec(), hi.to_vec())), nulls);
    }
}

/// A top-level string column the seal encodes itself (a span's name, kind, status; its
/// service and scope): a value or a null per row, dictionary-encoded, with the statistics and
/// column index parquet keeps of top-level columns.
pub(crate) struct StrColumn {
    ids: Vec<u32>,
    plain_bytes: usize,
    leaf: LeafWriter,
    rows: usize,
    row_limit: usize,
    byte_limit: usize,
}

impl StrColumn {
    pub(crate) fn new(descr: ColumnDescPtr, props: &WriterProperties) -> StrColumn {
        StrColumn {
            ids: Vec::new(),
            plain_bytes: 0,
            row_limit: props.data_page_row_count_limit().max(1),
            byte_limit: props.column_data_page_size_limit(descr.path()).max(1),
            leaf: LeafWriter::new(descr, props),
            rows: 0,
        }
    }

    /// The index of `s` (for [`StrColumn::push`]). Indices of a closed dictionary's page
    /// strings are not to be kept past the row.
    #[inline]
    pub(crate) fn id(&mut self, s: &str) -> u32 {
        self.leaf.id(s.as_bytes())
    }

    /// The index of `s`, to be kept and pushed in many rows.
    pub(crate) fn lasting_id(&mut self, s: &str) -> u32 {
        self.leaf.lasting_id(s.as_bytes())
    }

    /// Whether `id` may be kept and pushed again in later rows.
    #[inline]
    pub(crate) fn lasting(id: u32) -> bool {
        id < SPILLED || id == NULL
    }

    /// Append a row: the value `id`, or [`NULL`]. (Inlined at each column's call: ten a span.)
    #[inline(always)]
    pub(crate) fn push(&mut self, id: u32) -> Result<(), ParquetError> {
        self.ids.push(id);
        self.rows += 1;
        if self.leaf.closed {
            self.plain_bytes += self.leaf.plain_len(id);
        }
        if self.page_done() {
            self.flush_page()?;
        }
        Ok(())
    }

    /// Whether the open page is to be written: it holds the rows or the bytes a page takes,
    /// or the dictionary outgrew its limit.
    #[inline(always)]
    fn page_done(&self) -> bool {
        let n = self.ids.len();
        // An index and its level take at most 5 bytes (indices of up to 32 bits): most rows
        // are decided without looking at the dictionary.
        let full = self.plain_bytes + n * 5 >= self.byte_limit
            && self.plain_bytes + self.leaf.index_bytes(n, 1) >= self.byte_limit;
        n >= self.row_limit || full || self.leaf.over_limit()
    }

    /// Append `n` rows of the value `id` ([`NULL`], or an index kept for many rows): the
    /// pages break where `n` pushes would break them, and each check is made once for the rows
    /// that cannot reach a limit (the rows of a resource or scope, one after another).
    pub(crate) fn push_run(&mut self, id: u32, mut n: usize) -> Result<(), ParquetError> {
        if n == 1 {
            return self.push(id);
        }
        while n > 0 {
            let plain = if self.leaf.closed {
                self.leaf.plain_len(id)
            } else {
                0
            };
            let len = self.ids.len();
            // Rows before the quick bound of `push` (5 bytes a row and the PLAIN bytes)
            // reaches the byte limit: only the last can close the page.
            let by_bytes = self.byte_limit.saturating_sub(self.plain_bytes + len * 5) / (5 + plain);
            // A dictionary past its limit closes the page at the next row.
            let take = if self.leaf.over_limit() {
                1
            } else {
                n.min(self.row_limit.saturating_sub(len))
                    .min(by_bytes)
                    .max(1)
            };
            self.ids.extend(std::iter::repeat_n(id, take));
            self.rows += take;
            self.plain_bytes += plain * take;
            n -= take;
            if self.page_done() {
                self.flush_page()?;
            }
        }
        Ok(())
    }

    /// Make room for a page of a row group of `rows` rows at once (instead of growing by
    /// doublings).
    pub(crate) fn reserve(&mut self, rows: usize) {
        self.ids.reserve(rows.min(self.row_limit));
    }

    /// Append a row of `s` (`None`: null).
    pub(crate) fn push_str(&mut self, s: Option<&str>) -> Result<(), ParquetError> {
        let id = s.map_or(NULL, |s| self.id(s));
        self.push(id)
    }

    #[inline(never)]
    fn flush_page(&mut self) -> Result<(), ParquetError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        self.leaf.page(None, &self.ids)?;
        self.ids.clear();
        self.plain_bytes = 0;
        Ok(())
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }
}

/// Write a top-level string column to the row group `out`.
pub(crate) fn append_str<W: std::io::Write + Send>(
    out: &mut SerializedRowGroupWriter<'_, W>,
    c: &mut StrColumn,
    props: &WriterProperties,
) -> Result<(), ParquetError> {
    c.flush_page()?;
    append_chunk(out, &mut c.leaf, c.rows as u64, props)
}

/// One map column (`attributes`, say) being written: the open page's rows (entries per row,
/// each entry's key and value index) and the two leaves.
pub(crate) struct MapColumn {
    counts: Vec<u32>,
    keys: Vec<u32>,
    values: Vec<u32>,
    /// PLAIN bytes of the open page's entries in closed leaves.
    plain_bytes: usize,
    key: LeafWriter,
    value: LeafWriter,
    rows: usize,
    row_limit: usize,
    byte_limit: usize,
}

impl MapColumn {
    /// A map column of the leaves `[key, value]`, written as `props` say.
    fn new([key, value]: [ColumnDescPtr; 2], props: &WriterProperties) -> MapColumn {
        MapColumn {
            counts: Vec::new(),
            keys: Vec::new(),
            values: Vec::new(),
            plain_bytes: 0,
            row_limit: props.data_page_row_count_limit().max(1),
            byte_limit: props.column_data_page_size_limit(value.path()).max(1),
            key: LeafWriter::new(key, props),
            value: LeafWriter::new(value, props),
            rows: 0,
        }
    }

    #[inline(always)]
    fn push(&mut self, key: u32, value: u32) {
        self.keys.push(key);
        self.values.push(value);
        if self.key.closed {
            self.plain_bytes += self.key.plain_len(key);
        }
        if self.value.closed {
            self.plain_bytes += self.value.plain_len(value);
        }
    }

    /// Append `n` rows of the entries `keys` and `values` (indices kept for many rows): as
    /// `n` rows of [`MapColumn::push`] and [`MapColumn::end_row`], each check made once for
    /// the rows that cannot reach a limit.
    fn push_run(&mut self, keys: &[u32], values: &[u32], mut n: usize) -> Result<(), ParquetError> {
        if n == 1 {
            let start = self.keys.len();
            for (&key, &value) in keys.iter().zip(values) {
                self.push(key, value);
            }
            return self.end_row(start);
        }
        let entries = keys.len();
        while n > 0 {
            let mut plain = 0;
            if self.key.closed {
                plain += keys.iter().map(|&k| self.key.plain_len(k)).sum::<usize>();
            }
            if self.value.closed {
                plain += values
                    .iter()
                    .map(|&v| self.value.plain_len(v))
                    .sum::<usize>();
            }
            // Rows before the quick bound of `page_full` (10 bytes an entry and the PLAIN
            // bytes) reaches the byte limit: only the last can close the page.
            let row_bytes = entries * 10 + plain;
            let by_bytes = match row_bytes {
                0 => usize::MAX,
                b => {
                    self.byte_limit
                        .saturating_sub(self.plain_bytes + self.keys.len() * 10)
                        / b
                }
            };
            // A dictionary past its limit closes the page at the next row.
            let take = if self.key.over_limit() || self.value.over_limit() {
                1
            } else {
                n.min(self.row_limit.saturating_sub(self.counts.len()))
                    .min(by_bytes)
                    .max(1)
            };
            if entries == 1 {
                self.keys.extend(std::iter::repeat_n(keys[0], take));
                self.values.extend(std::iter::repeat_n(values[0], take));
            } else if entries > 1 {
                for _ in 0..take {
                    self.keys.extend_from_slice(keys);
                    self.values.extend_from_slice(values);
                }
            }
            self.plain_bytes += plain * take;
            self.counts
                .extend(std::iter::repeat_n(entries as u32, take));
            self.rows += take;
            n -= take;
            if self.page_done() {
                self.flush_page()?;
            }
        }
        Ok(())
    }

    /// End the row whose first entry was at `start`; write the page out once it is full.
    #[inline(always)]
    fn end_row(&mut self, start: usize) -> Result<(), ParquetError> {
        self.counts.push((self.keys.len() - start) as u32);
        self.rows += 1;
        if self.page_done() {
            self.flush_page()?;
        }
        Ok(())
    }

    /// Whether the open page is to be written: it holds the rows or the bytes a page takes,
    /// or a dictionary outgrew its limit.
    #[inline(always)]
    fn page_done(&self) -> bool {
        self.counts.len() >= self.row_limit
            || self.page_full()
            || self.key.over_limit()
            || self.value.over_limit()
    }

    /// Whether the open page holds about `byte_limit` bytes.
    #[inline]
    fn page_full(&self) -> bool {
        let entries = self.keys.len();
        // An entry's index and levels take at most 5 bytes a leaf (indices of up to 32 bits):
        // most rows are decided without looking at the dictionaries.
        if self.plain_bytes + entries * 10 < self.byte_limit {
            return false;
        }
        self.plain_bytes + self.key.index_bytes(entries, 3) + self.value.index_bytes(entries, 3)
            >= self.byte_limit
    }

    #[inline(never)]
    fn flush_page(&mut self) -> Result<(), ParquetError> {
        if self.counts.is_empty() {
            return Ok(());
        }
        self.key.page(Some(&self.counts), &self.keys)?;
        self.value.page(Some(&self.counts), &self.values)?;
        self.counts.clear();
        self.keys.clear();
        self.values.clear();
        self.plain_bytes = 0;
        Ok(())
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Make room for a page of a row group of `rows` rows and `entries` entries.
    fn reserve(&mut self, rows: usize, entries: usize) {
        let page = rows.min(self.row_limit);
        let page_entries = entries * page / rows.max(1);
        self.counts.reserve(page);
        self.keys.reserve(page_entries);
        self.values.reserve(page_entries);
    }
}

/// An attribute map and its type map (`attributes` and `attribute_types`).
pub(crate) struct AttrColumns {
    pub(crate) values: MapColumn,
    pub(crate) types: MapColumn,
    /// The type names' indices (a handful).
    tags: Vec<(&'static str, u32)>,
}

/// A group's attributes (a resource's or a scope's) as indices, appended to each of its rows.
#[derive(Default, Clone)]
pub(crate) struct GroupEntries {
    /// Keys and values of the attribute map, then of the type map.
    keys: [Vec<u32>; 2],
    values: [Vec<u32>; 2],
}

/// Compared entry by entry, not by `memcmp`: most groups are one entry or none, and glibc's
/// `memcmp` reads an empty `Vec`'s dangling address with a masked load, which costs the
/// processor a fault it then suppresses (measured: half the seal's time, comparing rows of
/// resources without attributes).
impl PartialEq for GroupEntries {
    fn eq(&self, other: &GroupEntries) -> bool {
        fn same(a: &[u32], b: &[u32]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
        }
        (0..2)
            .all(|k| same(&self.keys[k], &other.keys[k]) && same(&self.values[k], &other.values[k]))
    }
}

/// What one block's attributes at one position of a row (the j-th attribute of a span) were
/// last found to be. Spans of one instrumentation carry their keys in the same order, often
/// with the same values, and a block stores such a key or value once: the next span of the
/// block with the same place at that position needs no lookup.
#[derive(Clone, Copy)]
struct Slot {
    key: u64,
    key_id: u32,
    /// The key's index in the type map (`NULL`: not yet found).
    type_key_id: u32,
    /// The whole attribute last found here, when every index it took may be kept: the same
    /// record again (a key and value a block stores once for the spans that repeat them)
    /// takes the same entries without being read.
    whole: Option<Whole>,
}

/// An attribute record and its entries: in the attribute map, and in the type map when its
/// value is not a string.
#[derive(Clone, Copy)]
struct Whole {
    attr: Attr,
    entry: (u32, u32),
    typed: Option<(u32, u32)>,
}

impl Slot {
    const EMPTY: Slot = Slot {
        key: u64::MAX,
        key_id: NULL,
        type_key_id: NULL,
        whole: None,
    };
}

/// One block's [`Slot`]s, by position (a few per block, however many spans it holds).
#[derive(Default)]
pub(crate) struct BlockIds {
    slots: Vec<Slot>,
    /// Span names found, and their indices in the `name` column: a few slots, by a name's
    /// length and ends. A block stores each span's name anew, so they are compared by text.
    names: [Option<(Str, u32)>; 8],
}

impl BlockIds {
    /// The index of the span name `s` of block `b`: the one found for the same text in its
    /// slot, else `find(s)`.
    #[inline]
    pub(crate) fn name_id(&mut self, b: &SpanBlock, s: Str, find: impl FnOnce(Str) -> u32) -> u32 {
        let text = b.str(s).as_bytes();
        let slot = text_slot(text, self.names.len());
        if let Some((at, id)) = self.names[slot]
            && same_bytes(b.str(at).as_bytes(), text)
        {
            return id;
        }
        let id = find(s);
        if StrColumn::lasting(id) {
            self.names[slot] = Some((s, id));
        }
        id
    }
}

fn place(s: Str) -> u64 {
    let (off, len) = s.place();
    u64::from(off) | u64::from(len) << 32
}

impl AttrColumns {
    /// The map `values` and its type map `types` (each `[key, value]` leaves), written as
    /// `props` say.
    pub(crate) fn new(
        values: [ColumnDescPtr; 2],
        types: [ColumnDescPtr; 2],
        props: &WriterProperties,
    ) -> AttrColumns {
        AttrColumns {
            values: MapColumn::new(values, props),
            types: MapColumn::new(types, props),
            tags: Vec::new(),
        }
    }

    /// Make room for a page of a row group of `rows` rows and `entries` attributes.
    pub(crate) fn reserve(&mut self, rows: usize, entries: usize) {
        self.values.reserve(rows, entries);
    }

    /// Append one row: the attributes `rows` of block `b`. `ids` remembers what the block's
    /// attributes at each position were found to be (for this map alone: each map has its
    /// own dictionaries).
    pub(crate) fn push_row(
        &mut self,
        b: &SpanBlock,
        rows: Rows,
        ids: &mut BlockIds,
        text: &mut String,
    ) -> Result<(), ParquetError> {
        let (start, types_start) = (self.values.keys.len(), self.types.keys.len());
        for (j, a) in b.attrs(rows).iter().enumerate() {
            if ids.slots.len() <= j {
                ids.slots.push(Slot::EMPTY);
            }
            let slot = &mut ids.slots[j];
            if let Some(w) = slot.whole
                && w.attr.same_record(a)
            {
                self.values.push(w.entry.0, w.entry.1);
                if let Some((k, t)) = w.typed {
                    self.types.push(k, t);
                }
                continue;
            }
            let types_before = self.types.keys.len();
            let k = a.key();
            let kp = place(k);
            let key = if slot.key == kp {
                slot.key_id
            } else {
                let id = self.values.key.id(b.str(k).as_bytes());
                *slot = Slot {
                    key: if id < SPILLED { kp } else { u64::MAX },
                    key_id: id,
                    ..Slot::EMPTY
                };
                id
            };
            // A value seen at this place before came with its record (above).
            let value = match a.value() {
                Value::Str(s) => self.values.value.id(b.str(s).as_bytes()),
                v => self.typed(b, k, v, slot, false, text),
            };
            self.values.push(key, value);
            let typed = (self.types.keys.len() > types_before).then(|| {
                (
                    self.types.keys[types_before],
                    self.types.values[types_before],
                )
            });
            let lasting = StrColumn::lasting;
            slot.whole = (lasting(key)
                && lasting(value)
                && typed.is_none_or(|(k, t)| lasting(k) && lasting(t)))
            .then_some(Whole {
                attr: *a,
                entry: (key, value),
                typed,
            });
        }
        self.values.end_row(start)?;
        self.types.end_row(types_start)
    }

    /// A value other than a string: its text's index (or [`NULL`]), its type entered in the
    /// type map.
    /// (`lasting`: the indices are kept for many rows, see [`LeafWriter::lasting_id`].)
    fn typed(
        &mut self,
        b: &SpanBlock,
        key: Str,
        v: Value,
        slot: &mut Slot,
        lasting: bool,
        text: &mut String,
    ) -> u32 {
        let id = |leaf: &mut LeafWriter, s: &[u8]| {
            if lasting {
                leaf.lasting_id(s)
            } else {
                leaf.id(s)
            }
        };
        let (value, tag) = match v {
            Value::Int(i) => {
                let id = id(
                    &mut self.values.value,
                    itoa::Buffer::new().format(i).as_bytes(),
                );
                (id, Some("int"))
            }
            _ => {
                let tag = block_value_text(b, v, text);
                let id = if tag == Some("empty") {
                    NULL
                } else {
                    id(&mut self.values.value, text.as_bytes())
                };
                (id, tag)
            }
        };
        if let Some(tag) = tag {
            let k = if slot.type_key_id != NULL {
                slot.type_key_id
            } else {
                let id = id(&mut self.types.key, b.str(key).as_bytes());
                if id < SPILLED && slot.key == place(key) {
                    slot.type_key_id = id;
                }
                id
            };
            // The names are the same few literals: most are found by their address, without
            // a call to compare their bytes.
            let t = match self
                .tags
                .iter()
                .find(|(name, _)| std::ptr::eq(*name, tag))
                .or_else(|| self.tags.iter().find(|(name, _)| *name == tag))
            {
                Some(&(_, t)) => t,
                None => {
                    let t = id(&mut self.types.value, tag.as_bytes());
                    if t < SPILLED {
                        self.tags.push((tag, t));
                    }
                    t
                }
            };
            self.types.push(k, t);
        }
        value
    }

    /// A group's attributes (`rows` of block `b`) looked up once, for [`AttrColumns::push_group_run`].
    pub(crate) fn group(&mut self, b: &SpanBlock, rows: Rows, text: &mut String) -> GroupEntries {
        let mut g = GroupEntries::default();
        let types_start = self.types.keys.len();
        for a in b.attrs(rows) {
            let k = a.key();
            let key = self.values.key.lasting_id(b.str(k).as_bytes());
            let value = match a.value() {
                Value::Str(s) => self.values.value.lasting_id(b.str(s).as_bytes()),
                v => self.typed(b, k, v, &mut Slot { ..Slot::EMPTY }, true, text),
            };
            g.keys[0].push(key);
            g.values[0].push(value);
        }
        // `typed` entered the types as a row's would be: take them back out.
        g.keys[1].extend_from_slice(&self.types.keys[types_start..]);
        g.values[1].extend_from_slice(&self.types.values[types_start..]);
        self.types.keys.truncate(types_start);
        self.types.values.truncate(types_start);
        g
    }

    /// Append `n` rows of a group's attributes (the rows of one resource or scope, one after
    /// another).
    pub(crate) fn push_group_run(
        &mut self,
        g: &GroupEntries,
        n: usize,
    ) -> Result<(), ParquetError> {
        for (k, m) in [&mut self.values, &mut self.types].into_iter().enumerate() {
            m.push_run(&g.keys[k], &g.values[k], n)?;
        }
        Ok(())
    }
}

/// A varint (ULEB128), as the hybrid encoding's run headers are written.
pub(super) fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `n` times the value `v` of `width` bits, as one run of Parquet's RLE / bit-packing hybrid
/// encoding.
pub(super) fn rle_run(out: &mut Vec<u8>, width: u32, v: u32, n: usize) {
    varint(out, (n as u64) << 1);
    out.extend_from_slice(&v.to_le_bytes()[..width.div_ceil(8) as usize]);
}

/// Values of `width` bits (at most 32), bit-packed as one run of Parquet's RLE / bit-packing
/// hybrid encoding: a header of the number of groups of 8, then the values' bits from the
/// lowest, the last group padded with zeros.
///
/// Parquet's own encoder looks for runs of 8 equal values to write as RLE runs instead; here
/// the levels whose runs are long are written as RLE runs by the caller ([`rle_run`]), and
/// dictionary indices of attributes seldom repeat 8 times in a row (the keys of a map differ,
/// and the rows between equal values hold other keys). Zstd finds the repetitions either way.
pub(super) struct Packer<'a> {
    out: &'a mut Vec<u8>,
    width: u32,
    acc: u64,
    bits: u32,
    /// Where the run ends: its groups' bytes after the header.
    end: usize,
}

impl<'a> Packer<'a> {
    /// A run of `n` values.
    pub(super) fn new(out: &'a mut Vec<u8>, width: u32, n: usize) -> Packer<'a> {
        let groups = n.div_ceil(8);
        varint(out, (groups as u64) << 1 | 1);
        let end = out.len() + groups * width as usize;
        out.reserve(groups * width as usize);
        Packer {
            out,
            width,
            acc: 0,
            bits: 0,
            end,
        }
    }

    #[inline]
    fn flush(&mut self) {
        if self.bits >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.bits -= 32;
        }
    }

    #[inline]
    pub(super) fn push(&mut self, v: u32) {
        self.acc |= u64::from(v) << self.bits;
        self.bits += self.width;
        self.flush();
    }

    /// `k` ones, for a run of width 1.
    #[inline]
    fn ones(&mut self, mut k: u32) {
        debug_assert_eq!(self.width, 1);
        while k > 0 {
            let take = k.min(32);
            self.acc |= ((1u64 << take) - 1) << self.bits;
            self.bits += take;
            self.flush();
            k -= take;
        }
    }

    pub(super) fn finish(self) {
        let (mut acc, mut bits) = (self.acc, self.bits);
        while bits > 0 {
            self.out.push(acc as u8);
            acc >>= 8;
            bits = bits.saturating_sub(8);
        }
        debug_assert!(self.out.len() <= self.end);
        self.out.resize(self.end, 0);
    }
}

/// Bits for values up to `max`.
pub(super) fn width_of(max: u64) -> u32 {
    64 - max.leading_zeros()
}

thread_local! {
    /// The seal's zstd compressors, one per level, kept from page to page and row group to
    /// row group (parquet creates one per column chunk). The lake compresses ids and times at
    /// level 1 and the rest at its level: one compressor switched between levels clears its
    /// tables at every switch.
    static ZSTD: RefCell<Vec<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(Vec::new()) };
    /// Room for the largest page encoded, and the largest compressed, yet: a page is encoded
    /// into the one and compressed into the other, then copied out at its compressed size.
    /// Pages of ids take ~300 KiB before compression; allocated and freed for each page,
    /// buffers of that size pass glibc's threshold for mapping memory of its own, which then
    /// rises to them, and the writer thread's heap grows in pieces it keeps (peak RSS at full
    /// rate ~15 MiB higher for the same memory in use).
    static PAGE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static COMPRESSED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `f` given this thread's page room, empty.
pub(super) fn with_page<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    PAGE.with(|p| {
        let mut p = p.borrow_mut();
        p.clear();
        f(&mut p)
    })
}

/// Levels a thread keeps a compressor for at most (the lake uses two).
const ZSTD_LEVELS: usize = 4;

/// `page` compressed as `codec` says.
pub(super) fn compress(codec: Compression, page: &[u8]) -> Result<Vec<u8>, ParquetError> {
    let level = match codec {
        Compression::UNCOMPRESSED => return Ok(page.to_vec()),
        Compression::ZSTD(level) => level.compression_level(),
        other => {
            return Err(ParquetError::General(format!(
                "the spans table is written with zstd or uncompressed, not {other:?}"
            )));
        }
    };
    ZSTD.with(|z| {
        let mut z = z.borrow_mut();
        let at = match z.iter().position(|(l, _)| *l == level) {
            Some(at) => at,
            None => {
                if z.len() >= ZSTD_LEVELS {
                    z.remove(0);
                }
                z.push((level, zstd::bulk::Compressor::new(level)?));
                z.len() - 1
            }
        };
        let (_, c) = &mut z[at];
        COMPRESSED.with(|out| {
            let mut out = out.borrow_mut();
            out.clear();
            out.reserve(zstd::zstd_safe::compress_bound(page.len()));
            c.compress_to_buffer(page, &mut *out)?;
            Ok(out.to_vec())
        })
    })
    .map_err(|e: std::io::Error| ParquetError::External(Box::new(e)))
}

/// Write a map column (its key and value leaves, in order) to the row group `out`.
pub(crate) fn append_map<W: std::io::Write + Send>(
    out: &mut SerializedRowGroupWriter<'_, W>,
    m: &mut MapColumn,
    props: &WriterProperties,
) -> Result<(), ParquetError> {
    m.flush_page()?;
    let rows = m.rows as u64;
    for leaf in [&mut m.key, &mut m.value] {
        append_chunk(out, leaf, rows, props)?;
    }
    Ok(())
}

/// Write a leaf's column chunk of `rows` rows (its dictionary page, then its data pages) and
/// append it to the row group `out`, with what parquet records of it.
fn append_chunk<W: std::io::Write + Send>(
    out: &mut SerializedRowGroupWriter<'_, W>,
    leaf: &mut LeafWriter,
    rows: u64,
    props: &WriterProperties,
) -> Result<(), ParquetError> {
    let pages = std::mem::take(&mut leaf.pages);
    let dictionary = pages
        .iter()
        .any(|p| p.encoding == Encoding::RLE_DICTIONARY)
        .then(|| (std::mem::take(&mut leaf.dict.plain), leaf.dict.len() as u32));
    let stats = leaf.stats.take().map(|s| s.stats.finish()).transpose()?;
    let chunk = Chunk {
        descr: leaf.descr.clone(),
        codec: leaf.codec,
        dictionary,
        pages,
        stats,
        bloom: None,
        rows,
    };
    write_chunk(out, chunk, props)
}

/// A column chunk's parts, for [`write_chunk`].
pub(super) struct Chunk {
    pub(super) descr: ColumnDescPtr,
    pub(super) codec: Compression,
    /// The dictionary page's values, PLAIN, and their number.
    pub(super) dictionary: Option<(Vec<u8>, u32)>,
    pub(super) pages: Vec<DataPage>,
    /// The chunk's statistics and column index.
    pub(super) stats: Option<(Statistics, Option<ColumnIndexMetaData>)>,
    pub(super) bloom: Option<Sbbf>,
    pub(super) rows: u64,
}

/// Write a column chunk (its dictionary page, then its data pages) and append it to the row
/// group `out`, with what parquet records of it.
pub(super) fn write_chunk<W: std::io::Write + Send>(
    out: &mut SerializedRowGroupWriter<'_, W>,
    chunk: Chunk,
    props: &WriterProperties,
) -> Result<(), ParquetError> {
    let mut sink = TrackedWrite::new(Vec::new());
    let mut pages = SerializedPageWriter::new(&mut sink);
    let mut offsets = OffsetIndexBuilder::new();
    let mut stats: Vec<PageEncodingStats> = Vec::new();
    let (mut compressed, mut uncompressed, mut written, mut levels) = (0i64, 0i64, 0u64, 0i64);
    let mut data_offset = None;
    let mut dictionary_offset = None;
    let mut encodings = vec![Encoding::PLAIN, Encoding::RLE];
    if let Some((plain, num_values)) = chunk.dictionary {
        let size = plain.len();
        let page = Page::DictionaryPage {
            buf: Bytes::from(compress(chunk.codec, &plain)?),
            num_values,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        let spec = pages.write_page(CompressedPage::new(page, size))?;
        dictionary_offset = Some(spec.offset as i64);
        compressed += spec.compressed_size as i64;
        uncompressed += spec.uncompressed_size as i64;
        written += spec.bytes_written;
        stats.push(PageEncodingStats {
            page_type: PageType::DICTIONARY_PAGE,
            encoding: Encoding::PLAIN,
            count: 1,
        });
        encodings.push(Encoding::RLE_DICTIONARY);
    }
    for p in chunk.pages {
        let page = Page::DataPage {
            buf: p.buf,
            num_values: p.levels,
            encoding: p.encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let spec = pages.write_page(CompressedPage::new(page, p.uncompressed))?;
        data_offset.get_or_insert(spec.offset as i64);
        offsets.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
        offsets.append_row_count(i64::from(p.rows));
        compressed += spec.compressed_size as i64;
        uncompressed += spec.uncompressed_size as i64;
        written += spec.bytes_written;
        levels += i64::from(p.levels);
        if !encodings.contains(&p.encoding) {
            encodings.push(p.encoding);
        }
        match stats.last_mut() {
            Some(s) if s.page_type == PageType::DATA_PAGE && s.encoding == p.encoding => {
                s.count += 1
            }
            _ => stats.push(PageEncodingStats {
                page_type: PageType::DATA_PAGE,
                encoding: p.encoding,
                count: 1,
            }),
        }
    }
    pages.close()?;
    let (statistics, column_index) = chunk.stats.unzip();
    let mut metadata = ColumnChunkMetaData::builder(chunk.descr)
        .set_compression(chunk.codec)
        .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
        .set_page_encoding_stats(stats)
        .set_total_compressed_size(compressed)
        .set_total_uncompressed_size(uncompressed)
        .set_num_values(levels)
        .set_data_page_offset(data_offset.unwrap_or(0))
        .set_dictionary_page_offset(dictionary_offset);
    if let Some(statistics) = statistics {
        metadata = metadata.set_statistics(statistics);
    }
    let metadata = metadata.build()?;
    let close = ColumnCloseResult {
        bytes_written: written,
        rows_written: chunk.rows,
        metadata,
        bloom_filter: chunk.bloom,
        column_index: column_index.flatten(),
        offset_index: (!props.offset_index_disabled()).then(|| offsets.build()),
    };
    out.append_column(&Bytes::from(sink.into_inner()?), close)
}

/// `out` with a section of levels written by `fill`, after its length (4 bytes, little
/// endian), as a v1 data page holds them.
pub(super) fn with_length(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    fill(out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

/// One data page (v1, uncompressed): repetition levels (maps), definition levels (maps and
/// optional columns), then the values. `counts` holds the entries of each row of a map, whose
/// entries are `ids`; a top-level column (`None`) has one value or null per row. The page goes
/// into `out`; returns its number of levels.
fn encode_page(counts: Option<&[u32]>, ids: &[u32], leaf: &LeafWriter, out: &mut Vec<u8>) -> usize {
    let dictionary = !leaf.closed;
    let width = width_of(leaf.dict.len().saturating_sub(1) as u64);
    let max_def = leaf.descr.max_def_level() as u32;
    let def_width = width_of(u64::from(max_def));
    let rows = counts.unwrap_or(&[]);
    let empty_rows = rows.iter().filter(|&&n| n == 0).count();
    let levels = ids.len() + empty_rows;
    let nulls = if leaf.nullable {
        ids.iter().filter(|&&i| i == NULL).count()
    } else {
        0
    };
    out.reserve(levels / 2 + ids.len() * (width as usize).div_ceil(8) + 32);
    if counts.is_some() {
        // Repetition: 0 starts a row, 1 continues its map.
        with_length(out, |out| {
            if rows.iter().all(|&n| n <= 1) {
                rle_run(out, 1, 0, levels);
                return;
            }
            let mut p = Packer::new(out, 1, levels);
            for &n in rows {
                p.push(0);
                if n > 1 {
                    p.ones(n - 1);
                }
            }
            p.finish();
        });
    }
    if max_def > 0 {
        // Definition: a value present is the greatest level, a null one less; 0 an empty map.
        with_length(out, |out| {
            if empty_rows == 0 && nulls == 0 {
                rle_run(out, def_width, max_def, levels);
            } else if counts.is_some() && empty_rows == rows.len() {
                rle_run(out, def_width, 0, levels);
            } else if empty_rows == 0 && nulls == ids.len() {
                rle_run(out, def_width, max_def - 1, levels);
            } else {
                let def = |i: u32| if i == NULL { max_def - 1 } else { max_def };
                let mut p = Packer::new(out, def_width, levels);
                match counts {
                    None => ids.iter().for_each(|&i| p.push(def(i))),
                    Some(rows) => {
                        let mut e = 0;
                        for &n in rows {
                            if n == 0 {
                                p.push(0);
                            }
                            for &i in &ids[e..e + n as usize] {
                                p.push(def(i));
                            }
                            e += n as usize;
                        }
                    }
                }
                p.finish();
            }
        });
    }
    let present = ids.iter().copied().filter(|&i| i != NULL);
    if dictionary {
        out.push(width as u8);
        let n = ids.len() - nulls;
        if width == 0 {
            // One entry: every index is 0, as one run (as parquet writes it).
            if n > 0 {
                rle_run(out, 0, 0, n);
            }
        } else if n > 0 {
            let mut p = Packer::new(out, width, n);
            for i in present {
                p.push(i);
            }
            p.finish();
        }
    } else {
        for i in present {
            let s = leaf.string(i);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s);
        }
    }
    levels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_what_parquet_reads() {
        // The format's examples: 8 ones are one RLE run (count 8 << 1, then the value);
        // 0..8 at width 3 is one bit-packed group (1 << 1 | 1, then 3 bytes).
        let mut out = Vec::new();
        rle_run(&mut out, 1, 1, 8);
        assert_eq!(out, vec![16, 1]);
        let packed = |width: u32, n: usize, values: &mut dyn Iterator<Item = u32>| {
            let mut out = Vec::new();
            let mut p = Packer::new(&mut out, width, n);
            for v in values {
                p.push(v);
            }
            p.finish();
            out
        };
        let mut out = Vec::new();
        let out8 = packed(3, 8, &mut (0..8));
        assert_eq!(out8, vec![3, 0b1000_1000, 0b1100_0110, 0b1111_1010]);
        // 9 values are two groups, the second padded; 2,000 groups take a two-byte header.
        let out9 = packed(3, 9, &mut (0..9).map(|v| v % 8));
        assert_eq!(
            out9,
            vec![5, 0b1000_1000, 0b1100_0110, 0b1111_1010, 0, 0, 0]
        );
        let mut p = Packer::new(&mut out, 1, 16_000);
        p.ones(15_999);
        p.push(1);
        p.finish();
        assert_eq!(&out[..2], &[0xa1, 0x1f]);
        assert_eq!(out.len(), 2 + 2_000);
        assert!(out[2..].iter().all(|&b| b == 0xff));
        // Widths that straddle the 32-bit flush: 17 bits.
        let wide = packed(17, 8, &mut (0..8).map(|i| 0x1_0000 + i));
        assert_eq!(wide.len(), 1 + 17);
        let bit = |at: usize| u32::from(wide[1 + at / 8] >> (at % 8) & 1);
        let back: Vec<u32> = (0..8)
            .map(|i| (0..17).map(|b| bit(17 * i + b) << b).sum())
            .collect();
        assert_eq!(back, (0..8).map(|i| 0x1_0000 + i).collect::<Vec<_>>());
    }

    /// A run of rows of one value is written as the same pages as its rows one by one: the
    /// same breaks (row limit, byte limit, a dictionary closing on the way), the same bytes.
    #[test]
    fn runs_break_pages_where_their_rows_would() {
        let schema = parquet::arrow::ArrowSchemaConverter::new()
            .convert(&super::super::schema::Table::Spans.schema())
            .expect("schema");
        let leaves = |prefix: &str| -> Vec<ColumnDescPtr> {
            schema
                .columns()
                .iter()
                .filter(|c| c.path().string().starts_with(prefix))
                .cloned()
                .collect()
        };
        let text = leaves("service_name")[0].clone();
        let map = leaves("resource_attributes.");
        let map = [map[0].clone(), map[1].clone()];
        // As the lake writes them: statistics of the top-level column alone.
        let base = || {
            let b =
                WriterProperties::builder().set_compression(Compression::ZSTD(Default::default()));
            map.iter().fold(b, |b, leaf| {
                b.set_column_statistics_enabled(
                    leaf.path().clone(),
                    parquet::file::properties::EnabledStatistics::None,
                )
            })
        };
        let props = [
            base().set_data_page_row_count_limit(4).build(),
            base().set_data_page_size_limit(90).build(),
            base()
                .set_data_page_size_limit(300)
                .set_dictionary_page_size_limit(40)
                .build(),
            base()
                .set_dictionary_enabled(false)
                .set_data_page_size_limit(120)
                .build(),
        ];
        let pages = |l: &LeafWriter| -> Vec<(u32, u32, usize, Bytes)> {
            l.pages
                .iter()
                .map(|p| (p.rows, p.levels, p.uncompressed, p.buf.clone()))
                .collect()
        };
        let long = "a value longer than most pages' byte limits here, repeated row after row";
        let runs: [(&str, usize); 8] = [
            ("a", 3),
            (long, 300),
            ("", 1),
            ("b", 1),
            ("a", 130),
            ("c", 1),
            (long, 90),
            ("a", 70),
        ];
        for props in &props {
            let (mut one, mut run) = (
                StrColumn::new(text.clone(), props),
                StrColumn::new(text.clone(), props),
            );
            for (s, n) in runs {
                let id = |c: &mut StrColumn| if s.is_empty() { NULL } else { c.lasting_id(s) };
                let (i1, i2) = (id(&mut one), id(&mut run));
                for _ in 0..n {
                    one.push(i1).expect("push");
                }
                run.push_run(i2, n).expect("run");
            }
            one.flush_page().expect("flush");
            run.flush_page().expect("flush");
            assert_eq!(one.rows(), run.rows());
            assert!(one.leaf.pages.len() > 1, "{props:?}");
            assert_eq!(pages(&one.leaf), pages(&run.leaf));

            // Rows of no entry, one and three.
            let (mut one, mut run) = (
                MapColumn::new(map.clone(), props),
                MapColumn::new(map.clone(), props),
            );
            for (k, (s, n)) in runs.into_iter().enumerate() {
                let entries = [0, 1, 3][k % 3];
                let ids = |m: &mut MapColumn| -> (Vec<u32>, Vec<u32>) {
                    (0..entries)
                        .map(|e| {
                            let key = m.key.lasting_id(format!("key.{e}").as_bytes());
                            let value = if s.is_empty() {
                                NULL
                            } else {
                                m.value.lasting_id(s.as_bytes())
                            };
                            (key, value)
                        })
                        .unzip()
                };
                let ((k1, v1), (k2, v2)) = (ids(&mut one), ids(&mut run));
                for _ in 0..n {
                    let start = one.keys.len();
                    for (&k, &v) in k1.iter().zip(&v1) {
                        one.push(k, v);
                    }
                    one.end_row(start).expect("row");
                }
                run.push_run(&k2, &v2, n).expect("run");
            }
            one.flush_page().expect("flush");
            run.flush_page().expect("flush");
            assert_eq!(one.rows(), run.rows());
            assert!(one.value.pages.len() > 1, "{props:?}");
            assert_eq!(pages(&one.key), pages(&run.key));
            assert_eq!(pages(&one.value), pages(&run.value));
        }
    }

    #[test]
    fn dictionary_indices_are_first_seen_and_distinct() {
        let mut d = Dict::default();
        let ids: Vec<u32> = ["a", "b", "a", "", "b", "c"]
            .iter()
            .map(|s| d.id(s.as_bytes()))
            .collect();
        assert_eq!(ids, vec![0, 1, 0, 2, 1, 3]);
        assert_eq!(d.len(), 4);
        assert_eq!(d.get(3), b"c");
        assert_eq!(&d.plain[..5], &[1, 0, 0, 0, b'a']);
    }
}
