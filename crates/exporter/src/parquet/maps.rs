//! The spans table's attribute maps (`attributes`, `resource_attributes`, `scope_attributes` and
//! their `*_types`), encoded as Parquet column chunks by the seal itself instead of through
//! Arrow arrays and parquet's generic column writer.
//!
//! Most of what a span row holds is its attributes, and most of those repeat from span to span:
//! the same keys in the same order, often the same values. A block stores a key or value
//! repeated from the previous span once, so its place in the block identifies it: each
//! distinct place is looked up in the chunk's dictionary once per block (a `u64` hash), not
//! once per row as parquet's writer hashes and compares every string of every row. Resource
//! and scope attributes are looked up once per group and copied to each of its rows as
//! dictionary indices. Definition and repetition levels follow from each row's number of
//! entries; pages are written through parquet's own page writer, so headers, the offset index
//! and the chunk's metadata are parquet's.
//!
//! A chunk is what parquet's `ArrowWriter` writes for the same rows with the same properties:
//! a PLAIN dictionary page and RLE_DICTIONARY data pages (v1, levels RLE), pages ending on row
//! boundaries within the properties' row and byte limits, no statistics (none are kept inside
//! maps), an offset index. A dictionary larger than the properties' limit is not written: the
//! whole chunk is then PLAIN.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasher;

use bytes::Bytes;
use parquet::basic::{Compression, Encoding, EncodingMask, PageType};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ColumnChunkMetaData, OffsetIndexBuilder, PageEncodingStats};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedPageWriter, SerializedRowGroupWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;
use spanlake_core::SpanBlock;
use spanlake_core::spans::{Rows, Str, Value};

use super::convert::block_value_text;

/// A null value's index in [`MapColumn::values`].
const NULL: u32 = u32::MAX;

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

impl Dict {
    /// The index of `s`, added if new.
    pub(crate) fn id(&mut self, s: &[u8]) -> u32 {
        let state = hasher();
        let Dict {
            table,
            plain,
            places,
        } = self;
        let at = |i: u32| {
            let (start, len) = places[i as usize];
            &plain[start as usize..(start + len) as usize]
        };
        let hash = state.hash_one(s);
        if let Some(&i) = table.find(hash, |&i| at(i) == s) {
            return i;
        }
        let id = places.len() as u32;
        plain.extend_from_slice(&(s.len() as u32).to_le_bytes());
        places.push((plain.len() as u32, s.len() as u32));
        plain.extend_from_slice(s);
        table.insert_unique(hash, id, |&i| {
            let (start, len) = places[i as usize];
            state.hash_one(&plain[start as usize..(start + len) as usize])
        });
        id
    }

    pub(crate) fn len(&self) -> usize {
        self.places.len()
    }

    fn get(&self, i: u32) -> &[u8] {
        let (start, len) = self.places[i as usize];
        &self.plain[start as usize..(start + len) as usize]
    }
}

/// One map column's rows: entries per row, each entry's key and value as indices into the
/// leaves' dictionaries.
#[derive(Default)]
pub(crate) struct MapColumn {
    counts: Vec<u32>,
    keys: Vec<u32>,
    values: Vec<u32>,
    key_dict: Dict,
    value_dict: Dict,
}

impl MapColumn {
    fn push(&mut self, key: u32, value: u32) {
        self.keys.push(key);
        self.values.push(value);
    }

    fn end_row(&mut self, start: usize) {
        self.counts.push((self.keys.len() - start) as u32);
    }

    pub(crate) fn rows(&self) -> usize {
        self.counts.len()
    }
}

/// An attribute map and its type map (`attributes` and `attribute_types`).
#[derive(Default)]
pub(crate) struct AttrColumns {
    pub(crate) values: MapColumn,
    pub(crate) types: MapColumn,
    /// The type names' indices (a handful).
    tags: Vec<(&'static str, u32)>,
}

/// A group's attributes (a resource's or a scope's) as indices, appended to each of its rows.
#[derive(Default, Clone)]
pub(crate) struct GroupEntries {
    values: Vec<(u32, u32)>,
    types: Vec<(u32, u32)>,
}

/// Indices already found for one block's strings, by their place in the block.
#[derive(Default)]
pub(crate) struct BlockIds {
    keys: HashMap<u64, u32, foldhash::fast::FixedState>,
    values: HashMap<u64, u32, foldhash::fast::FixedState>,
    /// Keys in the type map.
    type_keys: HashMap<u64, u32, foldhash::fast::FixedState>,
    /// Integer values (status codes, sizes, counts: they repeat) by value.
    ints: HashMap<i64, u32, foldhash::fast::FixedState>,
}

fn place(s: Str) -> u64 {
    let (off, len) = s.place();
    u64::from(off) | u64::from(len) << 32
}

impl AttrColumns {
    /// Append one row: the attributes `rows` of block `b`. `ids` remembers the block's strings
    /// already looked up (only for this map: each map has its own dictionaries).
    pub(crate) fn push_row(
        &mut self,
        b: &SpanBlock,
        rows: Rows,
        ids: &mut BlockIds,
        text: &mut String,
    ) {
        let (start, types_start) = (self.values.keys.len(), self.types.keys.len());
        for a in b.attrs(rows) {
            let k = a.key();
            let values = &mut self.values;
            let key = *ids
                .keys
                .entry(place(k))
                .or_insert_with(|| values.key_dict.id(b.str(k).as_bytes()));
            let value = match a.value() {
                Value::Str(s) => *ids
                    .values
                    .entry(place(s))
                    .or_insert_with(|| values.value_dict.id(b.str(s).as_bytes())),
                v => self.typed(b, k, v, ids, text),
            };
            self.values.push(key, value);
        }
        self.values.end_row(start);
        self.types.end_row(types_start);
    }

    /// A value other than a string: its text's index (or [`NULL`]), its type entered in the
    /// type map.
    fn typed(
        &mut self,
        b: &SpanBlock,
        key: Str,
        v: Value,
        ids: &mut BlockIds,
        text: &mut String,
    ) -> u32 {
        let (value, tag) = match v {
            Value::Int(i) => {
                let values = &mut self.values;
                let id = *ids.ints.entry(i).or_insert_with(|| {
                    values
                        .value_dict
                        .id(itoa::Buffer::new().format(i).as_bytes())
                });
                (id, Some("int"))
            }
            _ => {
                let tag = block_value_text(b, v, text);
                let id = if tag == Some("empty") {
                    NULL
                } else {
                    self.values.value_dict.id(text.as_bytes())
                };
                (id, tag)
            }
        };
        if let Some(tag) = tag {
            let types = &mut self.types;
            let k = *ids
                .type_keys
                .entry(place(key))
                .or_insert_with(|| types.key_dict.id(b.str(key).as_bytes()));
            let t = match self.tags.iter().find(|(name, _)| *name == tag) {
                Some(&(_, t)) => t,
                None => {
                    let t = self.types.value_dict.id(tag.as_bytes());
                    self.tags.push((tag, t));
                    t
                }
            };
            self.types.push(k, t);
        }
        value
    }

    /// A group's attributes (`rows` of block `b`) looked up once, for [`AttrColumns::push_group`].
    pub(crate) fn group(&mut self, b: &SpanBlock, rows: Rows, text: &mut String) -> GroupEntries {
        let mut g = GroupEntries::default();
        let mut ids = BlockIds::default();
        let (start, types_start) = (self.values.keys.len(), self.types.keys.len());
        for a in b.attrs(rows) {
            let k = a.key();
            let key = self.values.key_dict.id(b.str(k).as_bytes());
            let value = match a.value() {
                Value::Str(s) => self.values.value_dict.id(b.str(s).as_bytes()),
                v => self.typed(b, k, v, &mut ids, text),
            };
            g.values.push((key, value));
        }
        // `typed` entered the types as a row's would be: take them back out.
        g.types.extend(
            self.types.keys[types_start..]
                .iter()
                .zip(&self.types.values[types_start..])
                .map(|(&k, &v)| (k, v)),
        );
        self.types.keys.truncate(types_start);
        self.types.values.truncate(types_start);
        debug_assert_eq!(self.values.keys.len(), start);
        g
    }

    /// Append one row of a group's attributes.
    pub(crate) fn push_group(&mut self, g: &GroupEntries) {
        for (m, entries) in [(&mut self.values, &g.values), (&mut self.types, &g.types)] {
            m.keys.extend(entries.iter().map(|e| e.0));
            m.values.extend(entries.iter().map(|e| e.1));
            m.counts.push(entries.len() as u32);
        }
    }
}

/// A varint (ULEB128), as the hybrid encoding's run headers are written.
fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// `n` times the value `v` of `width` bits, as one run of Parquet's RLE / bit-packing hybrid
/// encoding.
fn rle_run(out: &mut Vec<u8>, width: u32, v: u32, n: usize) {
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
struct Packer<'a> {
    out: &'a mut Vec<u8>,
    width: u32,
    acc: u64,
    bits: u32,
    /// Where the run ends: its groups' bytes after the header.
    end: usize,
}

impl<'a> Packer<'a> {
    /// A run of `n` values.
    fn new(out: &'a mut Vec<u8>, width: u32, n: usize) -> Packer<'a> {
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
    fn push(&mut self, v: u32) {
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

    fn finish(self) {
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
fn width_of(max: u64) -> u32 {
    64 - max.leading_zeros()
}

thread_local! {
    /// The seal's zstd compressor, kept from page to page and row group to row group (parquet
    /// creates one per column chunk), and the level it was made for.
    static ZSTD: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// `page` compressed as `codec` says.
fn compress(codec: Compression, page: Vec<u8>) -> Result<Vec<u8>, ParquetError> {
    let level = match codec {
        Compression::UNCOMPRESSED => return Ok(page),
        Compression::ZSTD(level) => level.compression_level(),
        other => {
            return Err(ParquetError::General(format!(
                "attribute maps are written with zstd or uncompressed, not {other:?}"
            )));
        }
    };
    ZSTD.with(|z| {
        let mut z = z.borrow_mut();
        if z.as_ref().is_none_or(|(l, _)| *l != level) {
            *z = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, c) = z.as_mut().expect("just made");
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(page.len()));
        c.compress_to_buffer(&page, &mut out)?;
        Ok(out)
    })
    .map_err(|e: std::io::Error| ParquetError::External(Box::new(e)))
}

/// One leaf of a map: its rows' entry counts, each entry's index (or [`NULL`]) and the
/// dictionary the indices point into.
struct Leaf<'a> {
    counts: &'a [u32],
    ids: &'a [u32],
    dict: &'a Dict,
    /// Whether the leaf is optional (a map's value) rather than required (its key).
    nullable: bool,
}

/// Write a map column (its key and value leaves, in order) to the row group `out`.
pub(crate) fn append_map<W: std::io::Write + Send>(
    out: &mut SerializedRowGroupWriter<'_, W>,
    m: &MapColumn,
    [key, value]: [&ColumnDescPtr; 2],
    props: &WriterProperties,
) -> Result<(), ParquetError> {
    for (descr, leaf) in [
        (
            key,
            Leaf {
                counts: &m.counts,
                ids: &m.keys,
                dict: &m.key_dict,
                nullable: false,
            },
        ),
        (
            value,
            Leaf {
                counts: &m.counts,
                ids: &m.values,
                dict: &m.value_dict,
                nullable: true,
            },
        ),
    ] {
        let (bytes, close) = encode_leaf(&leaf, descr, props)?;
        out.append_column(&bytes, close)?;
    }
    Ok(())
}

/// A leaf's column chunk, as bytes starting at offset 0, and what parquet records of it.
fn encode_leaf(
    leaf: &Leaf<'_>,
    descr: &ColumnDescPtr,
    props: &WriterProperties,
) -> Result<(Bytes, ColumnCloseResult), ParquetError> {
    let path = descr.path();
    let codec = props.compression(path);
    let dictionary = props.dictionary_enabled(path)
        && leaf.dict.plain.len() <= props.column_dictionary_page_size_limit(path);
    let width = width_of(leaf.dict.len().saturating_sub(1) as u64);
    let (row_limit, byte_limit) = (
        props.data_page_row_count_limit().max(1),
        props.column_data_page_size_limit(path).max(1),
    );
    let value_def = if leaf.nullable { 2 } else { 1 };
    let def_width = width_of(value_def);

    let mut sink = TrackedWrite::new(Vec::new());
    let mut pages = SerializedPageWriter::new(&mut sink);
    let mut offsets = OffsetIndexBuilder::new();
    let mut stats: Vec<PageEncodingStats> = Vec::new();
    let (mut compressed, mut uncompressed, mut written, mut levels_total) =
        (0i64, 0i64, 0u64, 0i64);
    let mut data_offset = None;
    let mut dictionary_offset = None;
    if dictionary {
        let buf = compress(codec, leaf.dict.plain.clone())?;
        let page = Page::DictionaryPage {
            buf: Bytes::from(buf),
            num_values: leaf.dict.len() as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        let spec = pages.write_page(CompressedPage::new(page, leaf.dict.plain.len()))?;
        dictionary_offset = Some(spec.offset as i64);
        compressed += spec.compressed_size as i64;
        uncompressed += spec.uncompressed_size as i64;
        written += spec.bytes_written;
        stats.push(PageEncodingStats {
            page_type: PageType::DICTIONARY_PAGE,
            encoding: Encoding::PLAIN,
            count: 1,
        });
    }
    let encoding = if dictionary {
        Encoding::RLE_DICTIONARY
    } else {
        Encoding::PLAIN
    };

    // Pages: whole rows, at most `row_limit` of them and about `byte_limit` bytes.
    let (mut row, mut entry) = (0usize, 0usize);
    while row < leaf.counts.len() {
        let (first_row, first_entry) = (row, entry);
        let mut bytes = 0usize;
        while row < leaf.counts.len() && row - first_row < row_limit {
            let n = leaf.counts[row] as usize;
            let row_bytes = if dictionary {
                (n.max(1) * (width as usize + 2 + def_width as usize)).div_ceil(8)
            } else {
                leaf.ids[entry..entry + n]
                    .iter()
                    .map(|&i| {
                        if i == NULL {
                            0
                        } else {
                            4 + leaf.dict.places[i as usize].1 as usize
                        }
                    })
                    .sum::<usize>()
                    + n.max(1).div_ceil(2)
            };
            if row > first_row && bytes + row_bytes > byte_limit {
                break;
            }
            bytes += row_bytes;
            entry += n;
            row += 1;
        }
        let counts = &leaf.counts[first_row..row];
        let ids = &leaf.ids[first_entry..entry];
        let (buf, levels) = encode_page(counts, ids, leaf, dictionary, width, def_width);
        let size = buf.len();
        let page = Page::DataPage {
            buf: Bytes::from(compress(codec, buf)?),
            num_values: levels as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let spec = pages.write_page(CompressedPage::new(page, size))?;
        data_offset.get_or_insert(spec.offset as i64);
        offsets.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
        offsets.append_row_count((row - first_row) as i64);
        compressed += spec.compressed_size as i64;
        uncompressed += spec.uncompressed_size as i64;
        written += spec.bytes_written;
        levels_total += levels as i64;
        match stats.last_mut() {
            Some(s) if s.page_type == PageType::DATA_PAGE => s.count += 1,
            _ => stats.push(PageEncodingStats {
                page_type: PageType::DATA_PAGE,
                encoding,
                count: 1,
            }),
        }
    }
    pages.close()?;
    let encodings: Vec<Encoding> = if dictionary {
        vec![Encoding::PLAIN, Encoding::RLE, Encoding::RLE_DICTIONARY]
    } else {
        vec![Encoding::PLAIN, Encoding::RLE]
    };
    let metadata = ColumnChunkMetaData::builder(descr.clone())
        .set_compression(codec)
        .set_encodings_mask(EncodingMask::new_from_encodings(encodings.iter()))
        .set_page_encoding_stats(stats)
        .set_total_compressed_size(compressed)
        .set_total_uncompressed_size(uncompressed)
        .set_num_values(levels_total)
        .set_data_page_offset(data_offset.unwrap_or(0))
        .set_dictionary_page_offset(dictionary_offset)
        .build()?;
    let close = ColumnCloseResult {
        bytes_written: written,
        rows_written: leaf.counts.len() as u64,
        metadata,
        bloom_filter: None,
        column_index: None,
        offset_index: (!props.offset_index_disabled()).then(|| offsets.build()),
    };
    Ok((Bytes::from(sink.into_inner()?), close))
}

/// `out` with a section of levels written by `fill`, after its length (4 bytes, little
/// endian), as a v1 data page holds them.
fn with_length(mut out: Vec<u8>, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    fill(&mut out);
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out
}

/// One data page (v1, uncompressed) of `counts` rows whose entries are `ids`: repetition
/// levels, definition levels, then the values. Returns it and its number of levels.
fn encode_page(
    counts: &[u32],
    ids: &[u32],
    leaf: &Leaf<'_>,
    dictionary: bool,
    width: u32,
    def_width: u32,
) -> (Vec<u8>, usize) {
    let empty_rows = counts.iter().filter(|&&n| n == 0).count();
    let levels = ids.len() + empty_rows;
    let nulls = if leaf.nullable {
        ids.iter().filter(|&&i| i == NULL).count()
    } else {
        0
    };
    let mut out = Vec::with_capacity(levels / 2 + ids.len() * (width as usize).div_ceil(8) + 32);
    // Repetition: 0 starts a row, 1 continues its map.
    out = with_length(out, |out| {
        if counts.iter().all(|&n| n <= 1) {
            rle_run(out, 1, 0, levels);
            return;
        }
        let mut p = Packer::new(out, 1, levels);
        for &n in counts {
            p.push(0);
            if n > 1 {
                p.ones(n - 1);
            }
        }
        p.finish();
    });
    // Definition: 0 an empty map, 1 an entry (a null value's), 2 a value present.
    let top = if leaf.nullable { 2 } else { 1 };
    out = with_length(out, |out| {
        // One level throughout (every value present, every map empty, or every value null)
        // is one run.
        if empty_rows == 0 && nulls == 0 {
            rle_run(out, def_width, top, levels);
        } else if empty_rows == counts.len() {
            rle_run(out, def_width, 0, levels);
        } else if empty_rows == 0 && nulls == ids.len() {
            rle_run(out, def_width, 1, levels);
        } else {
            let mut p = Packer::new(out, def_width, levels);
            let mut e = 0;
            for &n in counts {
                if n == 0 {
                    p.push(0);
                }
                for &i in &ids[e..e + n as usize] {
                    p.push(if i == NULL { 1 } else { top });
                }
                e += n as usize;
            }
            p.finish();
        }
    });
    let present = ids.iter().copied().filter(|&i| i != NULL);
    if dictionary {
        out.push(width as u8);
        let n = ids.len() - nulls;
        if width == 0 {
            // One entry: every index is 0, as one run (as parquet writes it).
            if n > 0 {
                rle_run(&mut out, 0, 0, n);
            }
        } else if n > 0 {
            let mut p = Packer::new(&mut out, width, n);
            for i in present {
                p.push(i);
            }
            p.finish();
        }
    } else {
        for i in present {
            let s = leaf.dict.get(i);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s);
        }
    }
    (out, levels)
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
