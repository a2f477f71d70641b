//! The spans table's columns a seal encodes itself, filled row by row in the row group's
//! order and written as finished chunks: every top-level column but `events` and `links`
//! (those go through Arrow and parquet's column writer when a span of the row group has any,
//! and are runs of empty lists otherwise: see `sealed.rs`). The maps and strings are
//! `maps.rs`'s, the ids and integers `flat.rs`'s.

use arrow::datatypes::Schema;
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedRowGroupWriter;
use parquet::schema::types::{ColumnDescPtr, SchemaDescriptor};
use spanlake_core::SpanBlock;

use super::convert::clamp_nanos;
use super::flat::{IdColumn, IntColumn};
use super::maps::{AttrColumns, BlockIds, GroupEntries, NULL, StrColumn, append_map, append_str};
use super::schema::{kind_name, status_name};
use super::sealed::HeldSpans;

/// The top-level string columns, in this order in [`OwnColumns::strs`].
const STRINGS: [&str; 10] = [
    "trace_state",
    "name",
    "kind",
    "status_code",
    "status_message",
    "service_name",
    "resource_schema_url",
    "scope_name",
    "scope_version",
    "scope_schema_url",
];

/// The id columns, in this order in [`OwnColumns::ids`].
const IDS: [&str; 3] = ["trace_id", "span_id", "parent_span_id"];

/// The INT64 columns (integers and timestamps), in this order in [`OwnColumns::ints`].
const INTS: [&str; 12] = [
    "flags",
    "start_time_unix_nano",
    "end_time_unix_nano",
    "duration_ns",
    "start_time",
    "end_time",
    "dropped_attributes_count",
    "dropped_events_count",
    "dropped_links_count",
    "resource_dropped_attributes_count",
    "scope_dropped_attributes_count",
    "ingest_time_unix_nano",
];

/// The attribute maps, `[values, types]` by the prefix of their names.
const MAPS: [&str; 3] = ["", "resource_", "scope_"];

/// A block's resources' `[service, schema URL]` and scopes' `[name, version, URL]`, as
/// indices in their string columns.
type GroupStrs = (Vec<[u32; 2]>, Vec<[u32; 3]>);

/// The columns a seal writes itself, and what it found once per block and group.
pub(super) struct OwnColumns {
    strs: [StrColumn; STRINGS.len()],
    ids: [IdColumn; IDS.len()],
    ints: [IntColumn; INTS.len()],
    /// The span's, resource's and scope's attribute maps.
    maps: [AttrColumns; MAPS.len()],
    /// Each span's resource and scope in its block.
    origin_of: Vec<Vec<(u32, u32)>>,
    /// Each block's resources' and scopes' attributes, looked up once.
    groups: Vec<(Vec<GroupEntries>, Vec<GroupEntries>)>,
    group_strs: Vec<GroupStrs>,
    block_ids: Vec<BlockIds>,
    /// Kinds and status codes, a handful each, and their indices.
    kinds: Vec<(i32, u32)>,
    codes: Vec<(i32, u32)>,
    text: String,
}

/// Each top-level field's leaf columns (a map has two), by the field's index.
pub(super) fn leaves_of(schema: &SchemaDescriptor, fields: usize) -> Vec<std::ops::Range<usize>> {
    let mut leaves_of: Vec<std::ops::Range<usize>> = vec![0..0; fields];
    for leaf in 0..schema.num_columns() {
        let r = &mut leaves_of[schema.get_column_root_idx(leaf)];
        if r.start == r.end {
            *r = leaf..leaf + 1;
        } else {
            r.end = leaf + 1;
        }
    }
    leaves_of
}

impl OwnColumns {
    /// The columns for the `rows` rows of `held`, whose Arrow schema is `schema` and Parquet
    /// schema `parquet`, written as `props` say.
    pub(super) fn new(
        held: &[HeldSpans],
        rows: usize,
        schema: &Schema,
        parquet: &SchemaDescriptor,
        props: &WriterProperties,
    ) -> Result<OwnColumns, ParquetError> {
        let leaves = leaves_of(parquet, schema.fields().len());
        let leaf = |name: &str, k: usize| -> Result<ColumnDescPtr, ParquetError> {
            let f = schema
                .index_of(name)
                .map_err(|e| ParquetError::General(e.to_string()))?;
            Ok(parquet.column(leaves[f].start + k))
        };
        /// A column for each name.
        fn each<T, const N: usize>(
            names: [&str; N],
            make: impl FnMut(&str) -> Result<T, ParquetError>,
        ) -> Result<[T; N], ParquetError> {
            let columns: Vec<T> = names.into_iter().map(make).collect::<Result<_, _>>()?;
            columns
                .try_into()
                .map_err(|_| ParquetError::General("a column for each name".into()))
        }
        let mut own = OwnColumns {
            strs: each(STRINGS, |name| Ok(StrColumn::new(leaf(name, 0)?, props)))?,
            ids: each(IDS, |name| IdColumn::new(leaf(name, 0)?, props))?,
            ints: each(INTS, |name| Ok(IntColumn::new(leaf(name, 0)?, props)))?,
            maps: each(MAPS, |prefix| {
                let map = |name: String| Ok::<_, ParquetError>([leaf(&name, 0)?, leaf(&name, 1)?]);
                Ok(AttrColumns::new(
                    map(format!("{prefix}attributes"))?,
                    map(format!("{prefix}attribute_types"))?,
                    props,
                ))
            })?,
            origin_of: Vec::new(),
            groups: Vec::new(),
            group_strs: Vec::new(),
            block_ids: held.iter().map(|_| BlockIds::default()).collect(),
            kinds: Vec::new(),
            codes: Vec::new(),
            text: String::new(),
        };
        own.reserve(held, rows);
        own.origin_of = held
            .iter()
            .map(|h| {
                let mut origins = vec![(0, 0); h.block.len()];
                for (r, s, i) in h.block.indices() {
                    origins[i] = (r as u32, s as u32);
                }
                origins
            })
            .collect();
        let OwnColumns {
            maps: [_, resource_maps, scope_maps],
            text,
            ..
        } = &mut own;
        own.groups = held
            .iter()
            .map(|h| {
                let b = &h.block;
                (
                    b.resources()
                        .iter()
                        .map(|r| resource_maps.group(b, r.attrs, text))
                        .collect(),
                    b.scopes()
                        .iter()
                        .map(|s| scope_maps.group(b, s.attrs, text))
                        .collect(),
                )
            })
            .collect();
        let [service, resource_url, scope_name, scope_version, scope_url] =
            group_columns(&mut own.strs);
        fn found(c: &mut StrColumn, s: &str) -> u32 {
            if s.is_empty() { NULL } else { c.lasting_id(s) }
        }
        own.group_strs = held
            .iter()
            .map(|h| {
                let b = &h.block;
                let resources = b
                    .resources()
                    .iter()
                    .map(|r| {
                        [
                            b.resource_str(r, "service.name")
                                .map_or(NULL, |s| service.lasting_id(s)),
                            found(resource_url, b.str(r.schema_url)),
                        ]
                    })
                    .collect();
                let scopes = b
                    .scopes()
                    .iter()
                    .map(|s| {
                        let (n, v) = if s.present {
                            (b.str(s.name), b.str(s.version))
                        } else {
                            ("", "")
                        };
                        [
                            found(scope_name, n),
                            found(scope_version, v),
                            found(scope_url, b.str(s.schema_url)),
                        ]
                    })
                    .collect();
                (resources, scopes)
            })
            .collect();
        Ok(own)
    }

    /// Make room for a page of each column at once (instead of growing by doublings).
    fn reserve(&mut self, held: &[HeldSpans], rows: usize) {
        for c in &mut self.strs {
            c.reserve(rows);
        }
        for c in &mut self.ints {
            c.reserve(rows);
        }
        for c in &mut self.ids {
            c.reserve(rows, 32);
        }
        let entries = |attrs: &dyn Fn(&SpanBlock) -> usize| -> usize {
            held.iter().map(|h| attrs(&h.block)).sum()
        };
        let [span, resource, scope] = &mut self.maps;
        span.reserve(
            rows,
            entries(&|b| b.spans().iter().map(|s| s.attrs.len()).sum()),
        );
        resource.reserve(
            rows,
            entries(&|b| b.iter().map(|(r, _, _)| r.attrs.len()).sum()),
        );
        scope.reserve(
            rows,
            entries(&|b| b.iter().map(|(_, s, _)| s.attrs.len()).sum()),
        );
    }

    /// Append the columns of span `i` of `held[hi]` that are its own (the rest: see
    /// [`OwnColumns::push_groups`]).
    pub(super) fn push_span(
        &mut self,
        held: &[HeldSpans],
        hi: usize,
        i: usize,
    ) -> Result<(), ParquetError> {
        let b = &held[hi].block;
        let span = &b.spans()[i];

        let [trace_id, span_id, parent] = &mut self.ids;
        trace_id.push(b.raw(span.trace_id))?;
        span_id.push(b.raw(span.span_id))?;
        parent.push(b.raw(span.parent_span_id))?;

        let [
            flags,
            start_ns,
            end_ns,
            duration,
            start_ts,
            end_ts,
            dropped_attrs,
            dropped_events,
            dropped_links,
            ..,
        ] = &mut self.ints;
        flags.push(Some(i64::from(span.flags)))?;
        let start = clamp_nanos(span.start_time_unix_nano);
        start_ns.push(Some(start))?;
        let end = (span.end_time_unix_nano != 0).then(|| clamp_nanos(span.end_time_unix_nano));
        end_ns.push(end)?;
        duration.push(end.map(|end| end.saturating_sub(start)))?;
        start_ts.push(Some(start / 1000))?;
        end_ts.push(end.map(|end| end / 1000))?;
        dropped_attrs.push(Some(i64::from(span.dropped_attributes_count)))?;
        dropped_events.push(Some(i64::from(span.dropped_events_count)))?;
        dropped_links.push(Some(i64::from(span.dropped_links_count)))?;

        let [span_maps, ..] = &mut self.maps;
        let ids = &mut self.block_ids[hi];
        span_maps.push_row(b, span.attrs, ids, &mut self.text)?;

        let [trace_state, name, kind, status_code, status_message, ..] = &mut self.strs;
        fn nonempty(s: &str) -> Option<&str> {
            (!s.is_empty()).then_some(s)
        }
        /// The index of an enumeration's value `v`, named `text`: kept for the few there are.
        fn enum_id(c: &mut StrColumn, seen: &mut Vec<(i32, u32)>, v: i32, text: &str) -> u32 {
            if let Some(&(_, id)) = seen.iter().find(|(k, _)| *k == v) {
                return id;
            }
            let id = c.id(text);
            if StrColumn::lasting(id) {
                seen.push((v, id));
            }
            id
        }
        let n = ids.name_id(b, span.name, |s| name.id(b.str(s)));
        name.push(n)?;
        trace_state.push_str(nonempty(b.str(span.trace_state)))?;
        let k = match kind_name(span.kind) {
            Some(k) => enum_id(kind, &mut self.kinds, span.kind, k),
            None => kind.id(&span.kind.to_string()),
        };
        kind.push(k)?;
        let (code, message) = span.status.map_or((0, ""), |s| (s.code, b.str(s.message)));
        let c = match status_name(code) {
            Some(c) => enum_id(status_code, &mut self.codes, code, c),
            None => status_code.id(&code.to_string()),
        };
        status_code.push(c)?;
        status_message.push_str(nonempty(message))?;
        Ok(())
    }

    /// Append the columns a row takes from its resource, scope and block (their attributes,
    /// the service name, the scope's name, the ingest time…) to the rows of `chunk`, each
    /// span `(hi, i)` of `held` already appended by [`OwnColumns::push_span`]. Each of the
    /// three goes by runs: rows of the same values one after another (a trace's spans, or
    /// spans of one service from several requests) are appended at once.
    pub(super) fn push_groups(
        &mut self,
        held: &[HeldSpans],
        chunk: &[(u32, u32)],
    ) -> Result<(), ParquetError> {
        let OwnColumns {
            strs,
            ints,
            maps: [_, resource_maps, scope_maps],
            origin_of,
            groups,
            group_strs,
            ..
        } = self;
        let [service, resource_url, scope_name, scope_version, scope_url] = group_columns(strs);
        let [.., resource_dropped, scope_dropped, ingest] = ints;
        /// A row's columns from its resource or scope: where they come from (block and group),
        /// and their values (the same in another block when it is the same resource).
        struct Group<'a, const N: usize> {
            from: (u32, u32),
            strs: [u32; N],
            dropped: u32,
            map: &'a GroupEntries,
        }
        impl<const N: usize> Group<'_, N> {
            fn same(&self, o: &Self) -> bool {
                self.from == o.from
                    || (self.strs == o.strs
                        && self.dropped == o.dropped
                        && (std::ptr::eq(self.map, o.map) || self.map == o.map))
            }
        }
        let resource = |&(hi, i): &(u32, u32)| {
            let (h, i) = (hi as usize, i as usize);
            let r = origin_of[h][i].0;
            Group {
                from: (hi, r),
                strs: group_strs[h].0[r as usize],
                dropped: held[h].block.resources()[r as usize].dropped_attributes_count,
                map: &groups[h].0[r as usize],
            }
        };
        runs(chunk, resource, Group::same, |g, n| {
            let [svc, url] = g.strs;
            service.push_run(svc, n)?;
            resource_url.push_run(url, n)?;
            resource_dropped.push_run(Some(i64::from(g.dropped)), n)?;
            resource_maps.push_group_run(g.map, n)
        })?;
        let scope = |&(hi, i): &(u32, u32)| {
            let (h, i) = (hi as usize, i as usize);
            let s = origin_of[h][i].1;
            let scope = &held[h].block.scopes()[s as usize];
            Group {
                from: (hi, s),
                strs: group_strs[h].1[s as usize],
                dropped: if scope.present {
                    scope.dropped_attributes_count
                } else {
                    0
                },
                map: &groups[h].1[s as usize],
            }
        };
        runs(chunk, scope, Group::same, |g, n| {
            let [sn, sv, su] = g.strs;
            scope_name.push_run(sn, n)?;
            scope_version.push_run(sv, n)?;
            scope_url.push_run(su, n)?;
            scope_dropped.push_run(Some(i64::from(g.dropped)), n)?;
            scope_maps.push_group_run(g.map, n)
        })?;
        runs(
            chunk,
            |&(hi, _)| held[hi as usize].ingest,
            |a, b| a == b,
            |&at, n| ingest.push_run(Some(at), n),
        )
    }

    /// Write the column `name`'s chunks (each of its leaves) to the row group `out`, if it is
    /// one of these; `false` if it is not.
    pub(super) fn append<W: std::io::Write + Send>(
        &mut self,
        name: &str,
        out: &mut SerializedRowGroupWriter<'_, W>,
        props: &WriterProperties,
        rows: usize,
    ) -> Result<bool, ParquetError> {
        if let Some(k) = STRINGS.iter().position(|n| *n == name) {
            debug_assert_eq!(self.strs[k].rows(), rows);
            append_str(out, &mut self.strs[k], props)?;
        } else if let Some(k) = IDS.iter().position(|n| *n == name) {
            debug_assert_eq!(self.ids[k].rows(), rows as u64);
            self.ids[k].append_to(out, props)?;
        } else if let Some(k) = INTS.iter().position(|n| *n == name) {
            debug_assert_eq!(self.ints[k].rows(), rows as u64);
            self.ints[k].append_to(out, props)?;
        } else if let Some((k, types)) = MAPS.iter().enumerate().find_map(|(k, prefix)| {
            let rest = name.strip_prefix(prefix)?;
            match rest {
                "attributes" => Some((k, false)),
                "attribute_types" => Some((k, true)),
                _ => None,
            }
        }) {
            let m = &mut self.maps[k];
            let column = if types { &mut m.types } else { &mut m.values };
            debug_assert_eq!(column.rows(), rows);
            append_map(out, column, props)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// The top-level columns of one leaf the seal writes itself (all but the maps), which
    /// keep statistics and a column index.
    #[cfg(test)]
    pub(super) fn flat() -> impl Iterator<Item = &'static str> {
        STRINGS.into_iter().chain(IDS).chain(INTS)
    }
}

/// The string columns a row takes from its resource (service, schema URL) and its scope (name,
/// version, schema URL).
fn group_columns(strs: &mut [StrColumn; STRINGS.len()]) -> [&mut StrColumn; 5] {
    let [
        ..,
        service,
        resource_url,
        scope_name,
        scope_version,
        scope_url,
    ] = strs;
    [service, resource_url, scope_name, scope_version, scope_url]
}

/// The rows of `chunk` by runs of the same key (`key` of a row, compared by `same`): `push`
/// takes each run's key and length, in order.
fn runs<T>(
    chunk: &[(u32, u32)],
    key: impl Fn(&(u32, u32)) -> T,
    same: impl Fn(&T, &T) -> bool,
    mut push: impl FnMut(&T, usize) -> Result<(), ParquetError>,
) -> Result<(), ParquetError> {
    let mut rows = chunk.iter();
    let Some(first) = rows.next() else {
        return Ok(());
    };
    let (mut run, mut n) = (key(first), 1);
    for row in rows {
        let k = key(row);
        if same(&run, &k) {
            n += 1;
        } else {
            push(&run, n)?;
            (run, n) = (k, 1);
        }
    }
    push(&run, n)
}
