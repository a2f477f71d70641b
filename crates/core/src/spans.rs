//! Spans as they travel a pipeline: one request's spans in flat tables.
//!
//! A [`SpanBlock`] holds what one OTLP request (or one stage's output) carried — resources,
//! scopes, spans, events, links and every attribute — as records in a handful of vectors, with
//! every string copied back to back into one `String` and every id or byte value into one
//! `Vec<u8>`. Decoding a request into it takes one exactly-sized allocation per table instead of
//! a `String` or `Vec` per field (what prost's owned structs cost: most of the collector's
//! allocations). Stages read it through the accessors here; text a stage adds (a redacted value,
//! a marker attribute) is appended to the block's text, and the record points at it.
//!
//! The hierarchy is kept by ranges: a resource owns a range of scopes, a scope a range of spans,
//! a span ranges of attributes, events and links. [`SpanBlock::decode`] reads OTLP protobuf
//! (`ExportTraceServiceRequest`) straight from the request's bytes, [`SpanBlock::encode`] writes
//! it back, and [`SpanBlock::from_prost`]/[`SpanBlock::to_prost`] convert from and to prost's
//! structs for the paths that build spans one by one (OTLP/JSON, the native API, closed copies
//! of running spans).

use std::ops::Range;

use opentelemetry_proto::tonic::common::v1::any_value::Value as PValue;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource as PResource;
use opentelemetry_proto::tonic::trace::v1::span::{Event as PEvent, Link as PLink};
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span as PSpan, Status as PStatus,
};
use prost::Message;

use crate::ids::{id_problem, to_hex};

/// A string of a block: where it lies in the block's text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Str {
    off: u32,
    len: u32,
}

impl Str {
    #[inline]
    pub fn is_empty(self) -> bool {
        self.len == 0
    }

    /// Where the string lies in its block's text: offset and length. Two strings of one
    /// block at the same place are the same text (a block stores a string repeated from the
    /// previous span once, at one place).
    #[inline]
    pub fn place(self) -> (u32, u32) {
        (self.off, self.len)
    }
}

/// Bytes of a block (an id, a bytes value, a nested value's protobuf): where they lie in the
/// block's byte store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Raw {
    off: u32,
    len: u32,
}

impl Raw {
    #[inline]
    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// A range of records in one of a block's tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rows {
    pub start: u32,
    pub end: u32,
}

impl Rows {
    #[inline]
    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    #[inline]
    pub fn len(self) -> usize {
        (self.end - self.start) as usize
    }

    #[inline]
    pub fn is_empty(self) -> bool {
        self.end == self.start
    }

    fn from_range(r: Range<usize>) -> Rows {
        Rows {
            start: r.start as u32,
            end: r.end as u32,
        }
    }
}

/// An attribute's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// The key-value had no value at all.
    Absent,
    /// A value with none of its fields set.
    Empty,
    Str(Str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(Raw),
    /// An array, a key-value list (or a profiles string index): the `AnyValue` message's own
    /// protobuf bytes, read with prost when needed.
    Nested(Raw),
}

/// An attribute: its key and value in 16 bytes. The value's kind is kept in the top bits of
/// the key's length (keys are at most [`MAX_KEY_LEN`] bytes), its payload in 8 bytes: an
/// integer, a double's bits, a bool, or a string's or bytes' place. Attribute records are most
/// of what a block holds (ten to a span is common), and a held row group keeps them for every
/// span until it is sealed.
#[derive(Clone, Copy)]
pub struct Attr {
    key_off: u32,
    /// The key's length; the value's kind in the top [`KIND_BITS`] bits.
    key_len: u32,
    payload: u64,
}

const KIND_BITS: u32 = 3;
const KIND_SHIFT: u32 = 32 - KIND_BITS;

/// The longest attribute key a block holds (512 MiB less a byte); requests are far smaller
/// (the receivers' size limits are at most this).
pub const MAX_KEY_LEN: usize = (1 << KIND_SHIFT) - 1;

impl Attr {
    /// An attribute of `key` (at most [`MAX_KEY_LEN`] bytes) and `value`.
    #[inline(always)]
    pub fn new(key: Str, value: Value) -> Attr {
        assert!(
            key.len as usize <= MAX_KEY_LEN,
            "an attribute key of {} bytes (at most {MAX_KEY_LEN})",
            key.len
        );
        let mut a = Attr {
            key_off: key.off,
            key_len: key.len,
            payload: 0,
        };
        a.set_value(value);
        a
    }

    #[inline]
    pub fn key(&self) -> Str {
        Str {
            off: self.key_off,
            len: self.key_len & MAX_KEY_LEN as u32,
        }
    }

    #[inline]
    pub fn value(&self) -> Value {
        let p = self.payload;
        let place = || (p as u32, (p >> 32) as u32);
        match self.key_len >> KIND_SHIFT {
            0 => Value::Absent,
            1 => Value::Empty,
            2 => {
                let (off, len) = place();
                Value::Str(Str { off, len })
            }
            3 => Value::Bool(p != 0),
            4 => Value::Int(p as i64),
            5 => Value::Double(f64::from_bits(p)),
            6 => {
                let (off, len) = place();
                Value::Bytes(Raw { off, len })
            }
            _ => {
                let (off, len) = place();
                Value::Nested(Raw { off, len })
            }
        }
    }

    /// Whether `other` is the very same record: the same key and value at the same places
    /// of the block (a repeat that decoding stored once), or the same number. Compared as
    /// bits, without reading the value.
    #[inline(always)]
    pub fn same_record(&self, other: &Attr) -> bool {
        self.key_off == other.key_off
            && self.key_len == other.key_len
            && self.payload == other.payload
    }

    /// The value's string, when it is one.
    #[inline]
    fn str_value(&self) -> Option<Str> {
        match self.value() {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Give the attribute another value (its key stays).
    #[inline(always)]
    pub fn set_value(&mut self, value: Value) {
        let place = |off: u32, len: u32| u64::from(off) | u64::from(len) << 32;
        let (kind, payload) = match value {
            Value::Absent => (0, 0),
            Value::Empty => (1, 0),
            Value::Str(s) => (2, place(s.off, s.len)),
            Value::Bool(b) => (3, u64::from(b)),
            Value::Int(i) => (4, i as u64),
            Value::Double(d) => (5, d.to_bits()),
            Value::Bytes(r) => (6, place(r.off, r.len)),
            Value::Nested(r) => (7, place(r.off, r.len)),
        };
        self.key_len = self.key_len & MAX_KEY_LEN as u32 | kind << KIND_SHIFT;
        self.payload = payload;
    }
}

impl PartialEq for Attr {
    fn eq(&self, other: &Attr) -> bool {
        self.key() == other.key() && self.value() == other.value()
    }
}

impl std::fmt::Debug for Attr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attr")
            .field("key", &self.key())
            .field("value", &self.value())
            .finish()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resource {
    /// Whether the request carried a resource message (OTLP allows none).
    pub present: bool,
    pub attrs: Rows,
    pub dropped_attributes_count: u32,
    pub schema_url: Str,
    pub scopes: Rows,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Whether the request carried an instrumentation scope message.
    pub present: bool,
    pub name: Str,
    pub version: Str,
    pub attrs: Rows,
    pub dropped_attributes_count: u32,
    pub schema_url: Str,
    pub spans: Rows,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    pub code: i32,
    pub message: Str,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub trace_id: Raw,
    pub span_id: Raw,
    pub parent_span_id: Raw,
    pub trace_state: Str,
    pub flags: u32,
    pub name: Str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attrs: Rows,
    pub dropped_attributes_count: u32,
    pub events: Rows,
    pub dropped_events_count: u32,
    pub links: Rows,
    pub dropped_links_count: u32,
    pub status: Option<Status>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub time_unix_nano: u64,
    pub name: Str,
    pub attrs: Rows,
    pub dropped_attributes_count: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub trace_id: Raw,
    pub span_id: Raw,
    pub trace_state: Str,
    pub flags: u32,
    pub attrs: Rows,
    pub dropped_attributes_count: u32,
}

/// Spans in flat tables; see the module's documentation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanBlock {
    text: String,
    /// While a request is read: its strings, not yet checked as UTF-8 (see `read_request`).
    unchecked: Vec<u8>,
    bytes: Vec<u8>,
    resources: Vec<Resource>,
    scopes: Vec<Scope>,
    spans: Vec<Span>,
    events: Vec<Event>,
    links: Vec<Link>,
    attrs: Vec<Attr>,
    request: Request,
}

/// The protobuf request a block was read from, kept while the block is exactly what reading
/// it gives (see [`SpanBlock::decode_request`]): the write-ahead log writes these bytes instead
/// of encoding the block again. Every way of changing a block lets it go — the tables are
/// reached for writing only through the `*_mut` methods, which do — so a block a processor
/// changed (a redacted secret) is always encoded from its tables. Not part of the block's
/// value: ignored by `==`, and a copy of a block does not have it.
#[derive(Default)]
struct Request(Option<bytes::Bytes>);

impl Clone for Request {
    fn clone(&self) -> Self {
        Request(None)
    }
}

impl PartialEq for Request {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(b) => write!(f, "Request({} bytes)", b.len()),
            None => f.write_str("Request(None)"),
        }
    }
}

/// What each table of a decoded request held: the room the next request on the same thread
/// is decoded into (see [`SpanBlock::decode`]).
#[derive(Clone, Copy, Debug)]
struct Room {
    text: u32,
    bytes: u32,
    resources: u32,
    scopes: u32,
    spans: u32,
    events: u32,
    links: u32,
    attrs: u32,
}

impl Room {
    const NONE: Room = Room {
        text: 0,
        bytes: 0,
        resources: 0,
        scopes: 0,
        spans: 0,
        events: 0,
        links: 0,
        attrs: 0,
    };
    /// Bytes a table (or the text) of the next request is given at most: one huge request
    /// does not make every later one allocate its size.
    const MAX_BYTES: usize = 256 << 10;

    fn of(b: &SpanBlock) -> Room {
        let n = |len: usize| len.min(u32::MAX as usize) as u32;
        Room {
            text: n(b.text.len().max(b.unchecked.len())),
            bytes: n(b.bytes.len()),
            resources: n(b.resources.len()),
            scopes: n(b.scopes.len()),
            spans: n(b.spans.len()),
            events: n(b.events.len()),
            links: n(b.links.len()),
            attrs: n(b.attrs.len()),
        }
    }
}

/// Key and value bytes of `attrs`, a value counted wherever it is used (8 for a number).
fn attr_bytes_in(attrs: &[Attr]) -> usize {
    attrs
        .iter()
        .map(|a| {
            a.key().len as usize
                + match a.value() {
                    Value::Str(s) => s.len as usize,
                    Value::Bytes(r) | Value::Nested(r) => r.len as usize,
                    _ => 8,
                }
        })
        .sum()
}

/// Long strings already copied out of one block, by their place in it: decoding points a
/// value equal to the previous span's at the same place at the same bytes, and a copy keeps
/// one of them (the testbed's 20 values of 5 KB on every span of a request stay 100 KB, not
/// 1 MB a request). Shorter strings are copied each time, as cheaply as they are looked up.
#[derive(Default)]
struct Seen {
    copies: std::collections::HashMap<u64, Str>,
}

impl Seen {
    const MIN_LEN: u32 = 256;

    #[inline]
    fn key(s: Str) -> u64 {
        u64::from(s.off) | u64::from(s.len) << 32
    }
}

/// Spans refused from one request for invalid ids.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    pub count: i64,
    /// The first few reasons, for the client's `partial_success.error_message`.
    pub reasons: Vec<String>,
}

const MAX_REASONS: usize = 3;

impl Rejections {
    /// The client's `partial_success.error_message` (empty when nothing was refused).
    pub fn message(&self) -> String {
        if self.count == 0 {
            return String::new();
        }
        let more = self.count as usize - self.reasons.len();
        format!(
            "{} span(s) rejected for invalid ids (trace_id must be 16 bytes, span_id 8, neither all zeros): {}{}",
            self.count,
            self.reasons.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        )
    }
}

impl SpanBlock {
    /// Number of spans.
    #[inline]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    #[inline]
    pub fn str(&self, s: Str) -> &str {
        &self.text[s.off as usize..(s.off + s.len) as usize]
    }

    #[inline]
    pub fn raw(&self, r: Raw) -> &[u8] {
        &self.bytes[r.off as usize..(r.off + r.len) as usize]
    }

    /// The resource groups.
    #[inline]
    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// The scope groups, each resource's in turn.
    #[inline]
    pub fn scopes(&self) -> &[Scope] {
        &self.scopes
    }

    /// The spans, each scope's in turn.
    #[inline]
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Every span's events, each span's in turn.
    #[inline]
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Every span's links, each span's in turn.
    #[inline]
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The attribute table: every resource's, scope's, span's, event's and link's attributes.
    #[inline]
    pub fn attr_table(&self) -> &[Attr] {
        &self.attrs
    }

    /// The resource groups, to change (the block no longer is its request).
    pub fn resources_mut(&mut self) -> &mut Vec<Resource> {
        self.request.0 = None;
        &mut self.resources
    }

    /// The scope groups, to change (the block no longer is its request).
    pub fn scopes_mut(&mut self) -> &mut Vec<Scope> {
        self.request.0 = None;
        &mut self.scopes
    }

    /// The spans, to change (the block no longer is its request).
    pub fn spans_mut(&mut self) -> &mut Vec<Span> {
        self.request.0 = None;
        &mut self.spans
    }

    /// The events, to change (the block no longer is its request).
    pub fn events_mut(&mut self) -> &mut Vec<Event> {
        self.request.0 = None;
        &mut self.events
    }

    /// The links, to change (the block no longer is its request).
    pub fn links_mut(&mut self) -> &mut Vec<Link> {
        self.request.0 = None;
        &mut self.links
    }

    /// The attribute table, to change (the block no longer is its request).
    pub fn attrs_mut(&mut self) -> &mut Vec<Attr> {
        self.request.0 = None;
        &mut self.attrs
    }

    /// The protobuf request this block was read from, when the block is still exactly what
    /// reading it gives ([`SpanBlock::decode_request`]; nothing refused, nothing changed).
    #[inline]
    pub fn request(&self) -> Option<&[u8]> {
        self.request.0.as_deref()
    }

    /// Let go of the request this block was read from (when it is held past the point where
    /// the request's bytes serve: they are as large as the block again).
    pub fn drop_request(&mut self) {
        self.request.0 = None;
    }

    /// Append text to the block.
    pub fn push_str(&mut self, s: &str) -> Str {
        self.request.0 = None;
        let off = self.text.len();
        self.text.push_str(s);
        Str {
            off: off as u32,
            len: s.len() as u32,
        }
    }

    pub fn push_raw(&mut self, b: &[u8]) -> Raw {
        self.request.0 = None;
        let off = self.bytes.len();
        self.bytes.extend_from_slice(b);
        Raw {
            off: off as u32,
            len: b.len() as u32,
        }
    }

    /// Give back the room no store or table uses. glibc's allocator shrinks in place: nothing
    /// is copied.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.unchecked = Vec::new();
        self.bytes.shrink_to_fit();
        self.resources.shrink_to_fit();
        self.scopes.shrink_to_fit();
        self.spans.shrink_to_fit();
        self.events.shrink_to_fit();
        self.links.shrink_to_fit();
        self.attrs.shrink_to_fit();
    }

    /// Memory the block holds: its stores and tables, as allocated.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity()
            + self.bytes.capacity()
            + self.resources.capacity() * size_of::<Resource>()
            + self.scopes.capacity() * size_of::<Scope>()
            + self.spans.capacity() * size_of::<Span>()
            + self.events.capacity() * size_of::<Event>()
            + self.links.capacity() * size_of::<Link>()
            + self.attrs.capacity() * size_of::<Attr>()
    }

    /// Bytes of every attribute's key and value, each counted where it is used: a value that
    /// decoding shared between spans (the same long value on every span of a request) counts
    /// once per span, as it takes once every span's attributes are copied out (Arrow rows).
    pub fn attr_bytes(&self) -> usize {
        attr_bytes_in(&self.attrs)
    }

    /// [`SpanBlock::attr_bytes`] of the attributes in `rows` alone (one span's, say).
    pub fn attr_bytes_of(&self, rows: Rows) -> usize {
        attr_bytes_in(self.attrs(rows))
    }

    #[inline]
    pub fn attrs(&self, rows: Rows) -> &[Attr] {
        &self.attrs[rows.range()]
    }

    /// Every span with its resource and scope, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Resource, &Scope, &Span)> + '_ {
        self.resources.iter().flat_map(move |r| {
            self.scopes[r.scopes.range()]
                .iter()
                .flat_map(move |s| self.spans[s.spans.range()].iter().map(move |sp| (r, s, sp)))
        })
    }

    /// Indices of every span with its resource's and scope's, in order.
    pub fn indices(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.resources.iter().enumerate().flat_map(move |(ri, r)| {
            self.scopes[r.scopes.range()]
                .iter()
                .zip(r.scopes.range())
                .flat_map(move |(s, si)| s.spans.range().map(move |i| (ri, si, i)))
        })
    }

    /// The string value of a resource attribute `key`, if it has one.
    pub fn resource_str(&self, r: &Resource, key: &str) -> Option<&str> {
        self.attrs(r.attrs)
            .iter()
            .find(|a| self.str(a.key()) == key)
            .and_then(|a| match a.value() {
                Value::Str(s) => Some(self.str(s)),
                _ => None,
            })
    }

    /// Give span `i` new attributes: `keep` of its own, then `added`. Its attributes move to
    /// the end of the table (the old records stay, unreferenced).
    pub fn set_span_attrs(&mut self, i: usize, keep: impl Fn(&Attr) -> bool, added: &[Attr]) {
        self.request.0 = None;
        let old = self.spans[i].attrs;
        let start = self.attrs.len();
        for j in old.range() {
            let a = self.attrs[j];
            if keep(&a) {
                self.attrs.push(a);
            }
        }
        self.attrs.extend_from_slice(added);
        self.spans[i].attrs = Rows::from_range(start..self.attrs.len());
    }

    /// Keep the spans for which `keep` is true; scopes and resources left empty go too.
    fn retain_spans(&mut self, mut keep: impl FnMut(&SpanBlock, &Span) -> bool) {
        self.request.0 = None;
        let flags: Vec<bool> = self.spans.iter().map(|s| keep(self, s)).collect();
        if flags.iter().all(|&k| k) {
            return;
        }
        let mut spans = Vec::with_capacity(self.spans.len());
        let mut scopes = Vec::with_capacity(self.scopes.len());
        let mut resources = Vec::with_capacity(self.resources.len());
        for r in &self.resources {
            let first_scope = scopes.len();
            for s in &self.scopes[r.scopes.range()] {
                let first_span = spans.len();
                for i in s.spans.range() {
                    if flags[i] {
                        spans.push(self.spans[i]);
                    }
                }
                if spans.len() > first_span {
                    let mut s = *s;
                    s.spans = Rows::from_range(first_span..spans.len());
                    scopes.push(s);
                }
            }
            if scopes.len() > first_scope {
                let mut r = *r;
                r.scopes = Rows::from_range(first_scope..scopes.len());
                resources.push(r);
            }
        }
        self.spans = spans;
        self.scopes = scopes;
        self.resources = resources;
    }

    /// Take the first `n` spans out into a new block, which holds only their text (this one
    /// keeps its text for the spans it still has).
    pub fn take_front(&mut self, n: usize) -> SpanBlock {
        self.request.0 = None;
        let len = self.spans.len();
        let n = n.min(len);
        let head = self.copy_spans(0..n);
        self.retain_positions(n..len);
        head
    }

    /// A new block of the spans at `positions`, with their resources and scopes.
    fn copy_spans(&self, positions: Range<usize>) -> SpanBlock {
        self.copy_where(|i| positions.contains(&i))
    }

    /// A new block of the spans whose position `keep` accepts, with their resources and
    /// scopes; it holds only their text, and a string the block shares between spans once.
    pub fn copy_where(&self, keep: impl Fn(usize) -> bool) -> SpanBlock {
        let mut out = SpanBlock::default();
        self.copy_into(&mut out, keep);
        out
    }

    /// Append the spans whose position `keep` accepts to `out` (their resources and scopes
    /// as records of their own).
    fn copy_into(&self, out: &mut SpanBlock, keep: impl Fn(usize) -> bool) {
        let seen = &mut Seen::default();
        for r in &self.resources {
            let scopes_start = out.scopes.len();
            for sc in &self.scopes[r.scopes.range()] {
                let spans_start = out.spans.len();
                for i in sc.spans.range() {
                    if keep(i) {
                        let copied = out.copy_span(self, &self.spans[i], seen);
                        out.spans.push(copied);
                    }
                }
                if out.spans.len() == spans_start {
                    continue;
                }
                let scope = Scope {
                    name: out.copy_str(self, sc.name, seen),
                    version: out.copy_str(self, sc.version, seen),
                    attrs: out.copy_attrs(self, sc.attrs, seen),
                    schema_url: out.copy_str(self, sc.schema_url, seen),
                    spans: Rows::from_range(spans_start..out.spans.len()),
                    ..*sc
                };
                out.scopes.push(scope);
            }
            if out.scopes.len() > scopes_start {
                let res = Resource {
                    attrs: out.copy_attrs(self, r.attrs, seen),
                    schema_url: out.copy_str(self, r.schema_url, seen),
                    scopes: Rows::from_range(scopes_start..out.scopes.len()),
                    ..*r
                };
                out.resources.push(res);
            }
        }
    }

    /// Copy string `s` of `from`; one `seen` before (of the same `from`) is not copied again.
    #[inline]
    fn copy_str(&mut self, from: &SpanBlock, s: Str, seen: &mut Seen) -> Str {
        if s.len < Seen::MIN_LEN {
            return self.push_str(from.str(s));
        }
        match seen.copies.entry(Seen::key(s)) {
            std::collections::hash_map::Entry::Occupied(e) => *e.get(),
            std::collections::hash_map::Entry::Vacant(e) => *e.insert(self.push_str(from.str(s))),
        }
    }

    fn copy_raw(&mut self, from: &SpanBlock, r: Raw) -> Raw {
        self.push_raw(from.raw(r))
    }

    fn copy_attrs(&mut self, from: &SpanBlock, rows: Rows, seen: &mut Seen) -> Rows {
        let start = self.attrs.len();
        for a in from.attrs(rows) {
            let key = self.copy_str(from, a.key(), seen);
            let value = match a.value() {
                Value::Str(v) => Value::Str(self.copy_str(from, v, seen)),
                Value::Bytes(v) => Value::Bytes(self.copy_raw(from, v)),
                Value::Nested(v) => Value::Nested(self.copy_raw(from, v)),
                v => v,
            };
            self.attrs.push(Attr::new(key, value));
        }
        Rows::from_range(start..self.attrs.len())
    }

    /// Copy one span of `from` (its attributes, events and links too) into this block's
    /// tables; the span record itself is returned for the caller to place.
    fn copy_span(&mut self, from: &SpanBlock, sp: &Span, seen: &mut Seen) -> Span {
        let attrs = self.copy_attrs(from, sp.attrs, seen);
        let events_start = self.events.len();
        for e in &from.events[sp.events.range()] {
            let ev = Event {
                name: self.copy_str(from, e.name, seen),
                attrs: self.copy_attrs(from, e.attrs, seen),
                ..*e
            };
            self.events.push(ev);
        }
        let links_start = self.links.len();
        for l in &from.links[sp.links.range()] {
            let link = Link {
                trace_id: self.copy_raw(from, l.trace_id),
                span_id: self.copy_raw(from, l.span_id),
                trace_state: self.copy_str(from, l.trace_state, seen),
                attrs: self.copy_attrs(from, l.attrs, seen),
                ..*l
            };
            self.links.push(link);
        }
        Span {
            trace_id: self.copy_raw(from, sp.trace_id),
            span_id: self.copy_raw(from, sp.span_id),
            parent_span_id: self.copy_raw(from, sp.parent_span_id),
            trace_state: self.copy_str(from, sp.trace_state, seen),
            name: self.copy_str(from, sp.name, seen),
            attrs,
            events: Rows::from_range(events_start..self.events.len()),
            links: Rows::from_range(links_start..self.links.len()),
            status: sp.status.map(|st| Status {
                code: st.code,
                message: self.copy_str(from, st.message, seen),
            }),
            ..*sp
        }
    }

    fn retain_positions(&mut self, keep: Range<usize>) {
        let mut i = 0;
        self.retain_spans(|_, _| {
            i += 1;
            keep.contains(&(i - 1))
        });
    }
}

// ---------------------------------------------------------------------------------------------
// prost's structs, both ways

impl SpanBlock {
    /// The block of prost's resource groups (copied; no id is checked; groups without spans
    /// are left out, as [`SpanBlock::decode`] leaves them out).
    pub fn from_prost(groups: &[ResourceSpans]) -> SpanBlock {
        let mut b = SpanBlock::default();
        for rs in groups {
            let scopes_start = b.scopes.len();
            for ss in &rs.scope_spans {
                if ss.spans.is_empty() {
                    continue;
                }
                let spans_start = b.spans.len();
                for sp in &ss.spans {
                    let attrs = b.push_kvs(&sp.attributes);
                    let events_start = b.events.len();
                    for e in &sp.events {
                        let ev = Event {
                            time_unix_nano: e.time_unix_nano,
                            name: b.push_str(&e.name),
                            attrs: b.push_kvs(&e.attributes),
                            dropped_attributes_count: e.dropped_attributes_count,
                        };
                        b.events.push(ev);
                    }
                    let events = Rows::from_range(events_start..b.events.len());
                    let links_start = b.links.len();
                    for l in &sp.links {
                        let link = Link {
                            trace_id: b.push_raw(&l.trace_id),
                            span_id: b.push_raw(&l.span_id),
                            trace_state: b.push_str(&l.trace_state),
                            flags: l.flags,
                            attrs: b.push_kvs(&l.attributes),
                            dropped_attributes_count: l.dropped_attributes_count,
                        };
                        b.links.push(link);
                    }
                    let links = Rows::from_range(links_start..b.links.len());
                    let span = Span {
                        trace_id: b.push_raw(&sp.trace_id),
                        span_id: b.push_raw(&sp.span_id),
                        parent_span_id: b.push_raw(&sp.parent_span_id),
                        trace_state: b.push_str(&sp.trace_state),
                        flags: sp.flags,
                        name: b.push_str(&sp.name),
                        kind: sp.kind,
                        start_time_unix_nano: sp.start_time_unix_nano,
                        end_time_unix_nano: sp.end_time_unix_nano,
                        attrs,
                        dropped_attributes_count: sp.dropped_attributes_count,
                        events,
                        dropped_events_count: sp.dropped_events_count,
                        links,
                        dropped_links_count: sp.dropped_links_count,
                        status: sp.status.as_ref().map(|st| Status {
                            code: st.code,
                            message: b.push_str(&st.message),
                        }),
                    };
                    b.spans.push(span);
                }
                let scope = ss.scope.as_ref();
                let sc = Scope {
                    present: scope.is_some(),
                    name: b.push_str(scope.map(|s| s.name.as_str()).unwrap_or("")),
                    version: b.push_str(scope.map(|s| s.version.as_str()).unwrap_or("")),
                    attrs: b.push_kvs(scope.map(|s| s.attributes.as_slice()).unwrap_or(&[])),
                    dropped_attributes_count: scope.map_or(0, |s| s.dropped_attributes_count),
                    schema_url: b.push_str(&ss.schema_url),
                    spans: Rows::from_range(spans_start..b.spans.len()),
                };
                b.scopes.push(sc);
            }
            if b.scopes.len() == scopes_start {
                continue;
            }
            let res = rs.resource.as_ref();
            let r = Resource {
                present: res.is_some(),
                attrs: b.push_kvs(res.map(|r| r.attributes.as_slice()).unwrap_or(&[])),
                dropped_attributes_count: res.map_or(0, |r| r.dropped_attributes_count),
                schema_url: b.push_str(&rs.schema_url),
                scopes: Rows::from_range(scopes_start..b.scopes.len()),
            };
            b.resources.push(r);
        }
        b
    }

    fn push_kvs(&mut self, kvs: &[KeyValue]) -> Rows {
        let start = self.attrs.len();
        for kv in kvs {
            let key = self.push_str(&kv.key);
            let value = match &kv.value {
                None => Value::Absent,
                Some(AnyValue { value: None }) => Value::Empty,
                Some(AnyValue { value: Some(v) }) => match v {
                    PValue::StringValue(s) => Value::Str(self.push_str(s)),
                    PValue::BoolValue(b) => Value::Bool(*b),
                    PValue::IntValue(i) => Value::Int(*i),
                    PValue::DoubleValue(d) => Value::Double(*d),
                    PValue::BytesValue(b) => Value::Bytes(self.push_raw(b)),
                    PValue::ArrayValue(_)
                    | PValue::KvlistValue(_)
                    | PValue::StringValueStrindex(_) => {
                        let any = kv
                            .value
                            .as_ref()
                            .map(|a| a.encode_to_vec())
                            .unwrap_or_default();
                        Value::Nested(self.push_raw(&any))
                    }
                },
            };
            self.attrs.push(Attr::new(key, value));
        }
        Rows::from_range(start..self.attrs.len())
    }

    /// An attribute's value as prost's (`None`: no value).
    pub fn any_value(&self, v: Value) -> Option<AnyValue> {
        let value = match v {
            Value::Absent => return None,
            Value::Empty => None,
            Value::Str(s) => Some(PValue::StringValue(self.str(s).to_owned())),
            Value::Bool(b) => Some(PValue::BoolValue(b)),
            Value::Int(i) => Some(PValue::IntValue(i)),
            Value::Double(d) => Some(PValue::DoubleValue(d)),
            Value::Bytes(b) => Some(PValue::BytesValue(self.raw(b).to_vec())),
            // Checked when the block was built: nested values are valid messages.
            Value::Nested(b) => return Some(AnyValue::decode(self.raw(b)).unwrap_or_default()),
        };
        Some(AnyValue { value })
    }

    pub fn key_values(&self, rows: Rows) -> Vec<KeyValue> {
        self.attrs(rows)
            .iter()
            .map(|a| KeyValue {
                key: self.str(a.key()).to_owned(),
                value: self.any_value(a.value()),
                ..Default::default()
            })
            .collect()
    }

    pub fn prost_resource(&self, r: &Resource) -> Option<PResource> {
        r.present.then(|| PResource {
            attributes: self.key_values(r.attrs),
            dropped_attributes_count: r.dropped_attributes_count,
            ..Default::default()
        })
    }

    pub fn prost_scope(&self, s: &Scope) -> Option<InstrumentationScope> {
        s.present.then(|| InstrumentationScope {
            name: self.str(s.name).to_owned(),
            version: self.str(s.version).to_owned(),
            attributes: self.key_values(s.attrs),
            dropped_attributes_count: s.dropped_attributes_count,
        })
    }

    pub fn prost_status(&self, st: &Status) -> PStatus {
        PStatus {
            code: st.code,
            message: self.str(st.message).to_owned(),
        }
    }

    pub fn prost_span(&self, sp: &Span) -> PSpan {
        PSpan {
            trace_id: self.raw(sp.trace_id).to_vec(),
            span_id: self.raw(sp.span_id).to_vec(),
            trace_state: self.str(sp.trace_state).to_owned(),
            parent_span_id: self.raw(sp.parent_span_id).to_vec(),
            flags: sp.flags,
            name: self.str(sp.name).to_owned(),
            kind: sp.kind,
            start_time_unix_nano: sp.start_time_unix_nano,
            end_time_unix_nano: sp.end_time_unix_nano,
            attributes: self.key_values(sp.attrs),
            dropped_attributes_count: sp.dropped_attributes_count,
            events: self.events[sp.events.range()]
                .iter()
                .map(|e| PEvent {
                    time_unix_nano: e.time_unix_nano,
                    name: self.str(e.name).to_owned(),
                    attributes: self.key_values(e.attrs),
                    dropped_attributes_count: e.dropped_attributes_count,
                })
                .collect(),
            dropped_events_count: sp.dropped_events_count,
            links: self.links[sp.links.range()]
                .iter()
                .map(|l| PLink {
                    trace_id: self.raw(l.trace_id).to_vec(),
                    span_id: self.raw(l.span_id).to_vec(),
                    trace_state: self.str(l.trace_state).to_owned(),
                    attributes: self.key_values(l.attrs),
                    dropped_attributes_count: l.dropped_attributes_count,
                    flags: l.flags,
                })
                .collect(),
            dropped_links_count: sp.dropped_links_count,
            status: sp.status.as_ref().map(|st| self.prost_status(st)),
        }
    }

    /// The block as prost's resource groups.
    pub fn to_prost(&self) -> Vec<ResourceSpans> {
        self.resources
            .iter()
            .map(|r| ResourceSpans {
                resource: self.prost_resource(r),
                scope_spans: self.scopes[r.scopes.range()]
                    .iter()
                    .map(|s| ScopeSpans {
                        scope: self.prost_scope(s),
                        spans: self.spans[s.spans.range()]
                            .iter()
                            .map(|sp| self.prost_span(sp))
                            .collect(),
                        schema_url: self.str(s.schema_url).to_owned(),
                    })
                    .collect(),
                schema_url: self.str(r.schema_url).to_owned(),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf: reading

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

#[cold]
fn err<T>(what: &str) -> Result<T, DecodeError> {
    Err(DecodeError(what.to_string()))
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// A slot among `n` for a text, from its length and its first and last bytes: for the small
/// caches of span names (a block repeats a handful of names, each stored anew) in redaction
/// and the seal. A few distinct names mostly land in distinct slots.
#[inline]
pub fn text_slot(text: &[u8], n: usize) -> usize {
    let end = |b: Option<&u8>| usize::from(b.copied().unwrap_or(0));
    (text.len() + 3 * end(text.first()) + 5 * end(text.last())) % n
}

/// `a == b`, without a `memcmp` call for the short strings most keys, values and ids are:
/// two overlapping 8-byte (or 4-byte) words cover up to 16 (or 8) bytes.
#[inline(always)]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word8 =
        |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or([0; 8]));
    let word4 =
        |s: &[u8], at: usize| u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or([0; 4]));
    match n {
        0 => true,
        1..4 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..8 => word4(a, 0) == word4(b, 0) && word4(a, n - 4) == word4(b, n - 4),
        8..=16 => word8(a, 0) == word8(b, 0) && word8(a, n - 8) == word8(b, n - 8),
        _ => a == b,
    }
}

/// Whether [`id_problem`] finds nothing wrong with `id`, in a few instructions: the check of
/// every span's three ids.
#[inline(always)]
fn id_valid(id: &[u8], len: usize, required: bool) -> bool {
    match (id.len(), len) {
        (0, _) => !required,
        (16, 16) => id.try_into().map(u128::from_ne_bytes).is_ok_and(|v| v != 0),
        (8, 8) => id.try_into().map(u64::from_ne_bytes).is_ok_and(|v| v != 0),
        _ => false,
    }
}

/// Whether a request's top level holds field 1 (resource groups) alone.
fn only_resource_groups(body: &[u8]) -> bool {
    let mut w = Wire::new(body);
    loop {
        match w.key() {
            Ok(None) => return true,
            Ok(Some((1, LEN))) => {
                if w.len_of(LEN).is_err() {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// A cursor over one message's bytes.
#[derive(Clone, Copy)]
struct Wire<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Wire<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Wire { buf, pos: 0 }
    }

    #[inline(always)]
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, DecodeError> {
        // Most varints here (keys, lengths, small counts) are one byte.
        if let Some(&b) = self.buf.get(self.pos)
            && b < 0x80
        {
            self.pos += 1;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return err("a varint runs past the end of its message");
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return err("a varint is longer than 64 bits");
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        err("a varint is longer than 64 bits")
    }

    /// The next field's number and wire type, or `None` at the end.
    #[inline(always)]
    fn key(&mut self) -> Result<Option<(u32, u8)>, DecodeError> {
        if self.done() {
            return Ok(None);
        }
        let k = self.varint()?;
        if k > u64::from(u32::MAX) {
            return err("a field key is out of range");
        }
        let wire = (k & 7) as u8;
        let field = (k >> 3) as u32;
        if field == 0 {
            return err("a field has number 0");
        }
        Ok(Some((field, wire)))
    }

    #[inline(always)]
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return err("a length-delimited field runs past the end of its message");
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// A length-delimited field's bytes, its wire type checked.
    #[inline(always)]
    fn len_of(&mut self, wire: u8) -> Result<&'a [u8], DecodeError> {
        expect(wire, LEN)?;
        self.bytes()
    }

    /// A `uint32` (or enum) varint field, its wire type checked (truncated as protobuf does).
    #[inline(always)]
    fn u32_of(&mut self, wire: u8) -> Result<u32, DecodeError> {
        expect(wire, VARINT)?;
        Ok(self.varint()? as u32)
    }

    #[inline(always)]
    fn fixed64_of(&mut self, wire: u8) -> Result<u64, DecodeError> {
        expect(wire, FIXED64)?;
        self.fixed64()
    }

    #[inline(always)]
    fn fixed32_of(&mut self, wire: u8) -> Result<u32, DecodeError> {
        expect(wire, FIXED32)?;
        self.fixed32()
    }

    #[inline(always)]
    fn fixed64(&mut self) -> Result<u64, DecodeError> {
        let Some(b) = self.buf.get(self.pos..self.pos + 8) else {
            return err("a 64-bit field runs past the end of its message");
        };
        self.pos += 8;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    #[inline(always)]
    fn fixed32(&mut self) -> Result<u32, DecodeError> {
        let Some(b) = self.buf.get(self.pos..self.pos + 4) else {
            return err("a 32-bit field runs past the end of its message");
        };
        self.pos += 4;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }

    fn skip(&mut self, field: u32, wire: u8, depth: u32) -> Result<(), DecodeError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed64().map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.fixed32().map(drop),
            START_GROUP => {
                if depth > 100 {
                    return err("groups are nested too deeply");
                }
                loop {
                    match self.key()? {
                        None => return err("a group is not closed"),
                        Some((f, END_GROUP)) if f == field => return Ok(()),
                        Some((_, END_GROUP)) => return err("a group is closed by another field"),
                        Some((f, w)) => self.skip(f, w, depth + 1)?,
                    }
                }
            }
            END_GROUP => err("a group ends where none started"),
            _ => err("a field has an invalid wire type"),
        }
    }
}

/// Hand every length-delimited field of message `m` (already read once, so well formed) to
/// `each` with its number: the second pass over a message, for its child messages.
fn each_field(
    m: &[u8],
    mut each: impl FnMut(u32, &[u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut w = Wire::new(m);
    while let Some((field, wire)) = w.key()? {
        if wire == LEN {
            let msg = w.bytes()?;
            each(field, msg)?;
        } else {
            w.skip(field, wire, 0)?;
        }
    }
    Ok(())
}

#[inline(always)]
fn expect(wire: u8, want: u8) -> Result<(), DecodeError> {
    if wire == want {
        Ok(())
    } else {
        err("a field has the wrong wire type")
    }
}

/// Marks of every table, to take back a span refused after it was read.
struct Marks {
    text: usize,
    bytes: usize,
    attrs: usize,
    events: usize,
    links: usize,
}

impl SpanBlock {
    /// Read an OTLP protobuf `ExportTraceServiceRequest`. With `check_ids`, spans with an
    /// invalid trace, span or parent span id are left out and counted in the rejections.
    ///
    /// The request is read into a block with the room this thread's previous request needed
    /// (and a quarter more), then the room not used is given back: the allocator shrinks in
    /// place, so held blocks carry no spare room, nothing is copied, and a table grows (and
    /// is copied) only when a request is larger than the one before.
    pub fn decode(body: &[u8], check_ids: bool) -> Result<(SpanBlock, Rejections), DecodeError> {
        thread_local! {
            static ROOM: std::cell::Cell<Room> = const { std::cell::Cell::new(Room::NONE) };
        }
        let room = ROOM.get();
        let mut b = SpanBlock::with_room(&room, body.len());
        let rej = b.read_request(body, check_ids);
        ROOM.set(Room::of(&b));
        let rej = rej?;
        b.shrink_to_fit();
        Ok((b, rej))
    }

    /// [`SpanBlock::decode`], keeping `body` with the block while the block is exactly what
    /// reading it gives ([`SpanBlock::request`]): when no span was refused and the request
    /// holds nothing but resource groups (field 1; the write-ahead log's records keep log
    /// records in field 2, which a replay must not find in a trace request's bytes).
    pub fn decode_request(
        body: impl Into<bytes::Bytes>,
        check_ids: bool,
    ) -> Result<(SpanBlock, Rejections), DecodeError> {
        let body = body.into();
        let (mut b, rej) = Self::decode(&body, check_ids)?;
        if rej.count == 0 && !b.is_empty() && only_resource_groups(&body) {
            b.request.0 = Some(body);
        }
        Ok((b, rej))
    }

    /// An empty block with `room` for each table (a quarter more, at most
    /// [`Room::MAX_BYTES`]), the text's and bytes' bounded by the request's size.
    fn with_room(room: &Room, body: usize) -> SpanBlock {
        fn table<T>(n: u32) -> Vec<T> {
            let n = n as usize;
            Vec::with_capacity((n + n / 4).min(Room::MAX_BYTES / size_of::<T>()))
        }
        let body = u32::try_from(body).unwrap_or(u32::MAX);
        SpanBlock {
            text: String::new(),
            unchecked: table(room.text.min(body)),
            bytes: table(room.bytes.min(body)),
            resources: table(room.resources),
            scopes: table(room.scopes),
            spans: table(room.spans),
            events: table(room.events),
            links: table(room.links),
            attrs: table(room.attrs),
            request: Request(None),
        }
    }

    fn clear(&mut self) {
        self.request.0 = None;
        self.text.clear();
        self.unchecked.clear();
        self.bytes.clear();
        self.resources.clear();
        self.scopes.clear();
        self.spans.clear();
        self.events.clear();
        self.links.clear();
        self.attrs.clear();
    }

    /// Read a request's spans into this (empty) block. Strings are gathered unchecked and
    /// checked as UTF-8 all at once at the end: each must start on a character boundary (its
    /// end is where the next one starts, or the end), so each is valid once the whole is —
    /// one long check instead of one per string.
    fn read_request(&mut self, body: &[u8], check_ids: bool) -> Result<Rejections, DecodeError> {
        let rej = self.read_spans(body, check_ids)?;
        match String::from_utf8(std::mem::take(&mut self.unchecked)) {
            Ok(text) => {
                self.text = text;
                Ok(rej)
            }
            Err(e) => {
                self.unchecked = e.into_bytes();
                err("a string field is not valid UTF-8")
            }
        }
    }

    fn read_spans(&mut self, body: &[u8], check_ids: bool) -> Result<Rejections, DecodeError> {
        let mut rej = Rejections::default();
        let mut w = Wire::new(body);
        while let Some((field, wire)) = w.key()? {
            if field == 1 {
                let m = w.len_of(wire)?;
                self.resource_spans(m, check_ids, &mut rej)?;
            } else {
                w.skip(field, wire, 0)?;
            }
        }
        Ok(rej)
    }

    fn marks(&self) -> Marks {
        Marks {
            text: self.unchecked.len(),
            bytes: self.bytes.len(),
            attrs: self.attrs.len(),
            events: self.events.len(),
            links: self.links.len(),
        }
    }

    /// Take back what was read since `m` (a refused span, an empty group). Its strings are
    /// checked first: a request with a string that is not UTF-8 is refused whole, as protobuf
    /// has it, even where the string's span would have been refused anyway.
    fn rewind(&mut self, m: &Marks) -> Result<(), DecodeError> {
        if std::str::from_utf8(&self.unchecked[m.text..]).is_err() {
            return err("a string field is not valid UTF-8");
        }
        self.unchecked.truncate(m.text);
        self.bytes.truncate(m.bytes);
        self.attrs.truncate(m.attrs);
        self.events.truncate(m.events);
        self.links.truncate(m.links);
        Ok(())
    }

    /// A string field: its bytes appended to the request's strings (checked as UTF-8 with
    /// them, see `read_request`).
    #[inline]
    fn text_field(&mut self, w: &mut Wire<'_>, wire: u8) -> Result<Str, DecodeError> {
        let v = w.len_of(wire)?;
        self.text_of(v)
    }

    /// The bytes of a string read from the request being decoded.
    #[inline]
    fn unchecked_str(&self, s: Str) -> &[u8] {
        &self.unchecked[s.off as usize..(s.off + s.len) as usize]
    }

    #[inline]
    fn text_of(&mut self, s: &[u8]) -> Result<Str, DecodeError> {
        // A string starting with a continuation byte starts inside a character.
        if s.first().is_some_and(|&b| b & 0xC0 == 0x80) {
            return err("a string field is not valid UTF-8");
        }
        let off = self.unchecked.len();
        self.unchecked.extend_from_slice(s);
        Ok(Str {
            off: off as u32,
            len: s.len() as u32,
        })
    }

    /// The string `s`: `like` (a string already read) when it is the same text, so text
    /// repeated from span to span is stored once; else stored as [`text_of`](Self::text_of).
    #[inline(always)]
    fn text_like(&mut self, s: &[u8], like: Option<Str>) -> Result<Str, DecodeError> {
        match like {
            Some(l) if same_bytes(self.unchecked_str(l), s) => Ok(l),
            _ => self.text_of(s),
        }
    }

    /// The bytes `id`: the first of `like` (ids already read) that holds the same bytes, else
    /// stored anew. Empty ids are stored (as nothing) rather than shared.
    #[inline]
    fn id_like(&mut self, id: &[u8], like: impl IntoIterator<Item = Raw>) -> Raw {
        match like
            .into_iter()
            .find(|&r| !id.is_empty() && same_bytes(self.raw(r), id))
        {
            Some(r) => r,
            None => self.push_raw(id),
        }
    }

    fn resource_spans(
        &mut self,
        m: &[u8],
        check_ids: bool,
        rej: &mut Rejections,
    ) -> Result<(), DecodeError> {
        let marks = self.marks();
        let mut r = Resource {
            scopes: Rows::from_range(self.scopes.len()..self.scopes.len()),
            ..Default::default()
        };
        let mut attrs_start = None;
        // First the resource and the schema URL, so the resource's attributes lie together;
        // then the scope groups.
        let mut w = Wire::new(m);
        while let Some((field, wire)) = w.key()? {
            match field {
                1 => {
                    let msg = w.len_of(wire)?;
                    r.present = true;
                    let start = *attrs_start.get_or_insert(self.attrs.len());
                    let mut rw = Wire::new(msg);
                    while let Some((f, wt)) = rw.key()? {
                        match f {
                            1 => {
                                let kv = rw.len_of(wt)?;
                                self.key_value(kv, None)?;
                            }
                            2 => {
                                r.dropped_attributes_count = rw.u32_of(wt)?;
                            }
                            _ => rw.skip(f, wt, 0)?,
                        }
                    }
                    r.attrs = Rows::from_range(start..self.attrs.len());
                }
                3 => {
                    r.schema_url = self.text_field(&mut w, wire)?;
                }
                2 => {
                    w.len_of(wire)?;
                }
                _ => w.skip(field, wire, 0)?,
            }
        }
        if attrs_start.is_none() {
            r.attrs = Rows::from_range(self.attrs.len()..self.attrs.len());
        }
        each_field(m, |field, msg| match field {
            2 => self.scope_spans(msg, check_ids, rej),
            _ => Ok(()),
        })?;
        r.scopes.end = self.scopes.len() as u32;
        if r.scopes.is_empty() {
            self.rewind(&marks)?;
        } else {
            self.resources.push(r);
        }
        Ok(())
    }

    fn scope_spans(
        &mut self,
        m: &[u8],
        check_ids: bool,
        rej: &mut Rejections,
    ) -> Result<(), DecodeError> {
        let marks = self.marks();
        let mut s = Scope {
            spans: Rows::from_range(self.spans.len()..self.spans.len()),
            ..Default::default()
        };
        let mut attrs_start = None;
        let mut w = Wire::new(m);
        while let Some((field, wire)) = w.key()? {
            match field {
                1 => {
                    let msg = w.len_of(wire)?;
                    s.present = true;
                    let start = *attrs_start.get_or_insert(self.attrs.len());
                    let mut sw = Wire::new(msg);
                    while let Some((f, wt)) = sw.key()? {
                        match f {
                            1 => {
                                s.name = self.text_field(&mut sw, wt)?;
                            }
                            2 => {
                                s.version = self.text_field(&mut sw, wt)?;
                            }
                            3 => {
                                let kv = sw.len_of(wt)?;
                                self.key_value(kv, None)?;
                            }
                            4 => {
                                s.dropped_attributes_count = sw.u32_of(wt)?;
                            }
                            _ => sw.skip(f, wt, 0)?,
                        }
                    }
                    s.attrs = Rows::from_range(start..self.attrs.len());
                }
                3 => {
                    s.schema_url = self.text_field(&mut w, wire)?;
                }
                2 => {
                    w.len_of(wire)?;
                }
                _ => w.skip(field, wire, 0)?,
            }
        }
        if attrs_start.is_none() {
            s.attrs = Rows::from_range(self.attrs.len()..self.attrs.len());
        }
        each_field(m, |field, msg| match field {
            2 => self.span(msg, check_ids, rej),
            _ => Ok(()),
        })?;
        s.spans.end = self.spans.len() as u32;
        if s.spans.is_empty() {
            self.rewind(&marks)?;
        } else {
            self.scopes.push(s);
        }
        Ok(())
    }

    fn span(&mut self, m: &[u8], check_ids: bool, rej: &mut Rejections) -> Result<(), DecodeError> {
        let marks = self.marks();
        let mut sp = Span::default();
        let mut attrs_start = None;
        let mut children = false;
        let (mut trace_id, mut span_id, mut parent): (&[u8], &[u8], &[u8]) = (&[], &[], &[]);
        // The previous span's attributes, read once here (not from the span just stored at
        // each attribute).
        let prev_attrs = self.spans.last().map(|p| p.attrs);
        let mut w = Wire::new(m);
        while let Some((field, wire)) = w.key()? {
            match field {
                1 => {
                    trace_id = w.len_of(wire)?;
                }
                2 => {
                    span_id = w.len_of(wire)?;
                }
                3 => {
                    sp.trace_state = self.text_field(&mut w, wire)?;
                }
                4 => {
                    parent = w.len_of(wire)?;
                }
                5 => {
                    sp.name = self.text_field(&mut w, wire)?;
                }
                6 => {
                    expect(wire, VARINT)?;
                    sp.kind = w.varint()? as i32;
                }
                7 => {
                    sp.start_time_unix_nano = w.fixed64_of(wire)?;
                }
                8 => {
                    sp.end_time_unix_nano = w.fixed64_of(wire)?;
                }
                9 => {
                    let kv = w.len_of(wire)?;
                    let start = *attrs_start.get_or_insert(self.attrs.len());
                    // Spans of one instrumentation repeat their keys in the same order, often
                    // with the same values: the key and string value at this place in the
                    // previous span are shared when they are the same.
                    let like = prev_attrs.and_then(|p| {
                        let i = p.start as usize + (self.attrs.len() - start);
                        (i < p.end as usize).then_some(i)
                    });
                    self.key_value(kv, like)?;
                    sp.attrs = Rows::from_range(start..self.attrs.len());
                }
                10 => {
                    sp.dropped_attributes_count = w.u32_of(wire)?;
                }
                11 | 13 => {
                    w.len_of(wire)?;
                    children = true;
                }
                12 => {
                    sp.dropped_events_count = w.u32_of(wire)?;
                }
                14 => {
                    sp.dropped_links_count = w.u32_of(wire)?;
                }
                15 => {
                    let msg = w.len_of(wire)?;
                    let mut st = sp.status.unwrap_or_default();
                    let mut sw = Wire::new(msg);
                    while let Some((f, wt)) = sw.key()? {
                        match f {
                            2 => {
                                st.message = self.text_field(&mut sw, wt)?;
                            }
                            3 => {
                                expect(wt, VARINT)?;
                                st.code = sw.varint()? as i32;
                            }
                            _ => sw.skip(f, wt, 0)?,
                        }
                    }
                    sp.status = Some(st);
                }
                16 => {
                    sp.flags = w.fixed32_of(wire)?;
                }
                _ => w.skip(field, wire, 0)?,
            }
        }
        if attrs_start.is_none() {
            sp.attrs = Rows::from_range(self.attrs.len()..self.attrs.len());
        }
        // Events and links (most spans have none), each with its attributes together.
        sp.events = Rows::from_range(self.events.len()..self.events.len());
        sp.links = Rows::from_range(self.links.len()..self.links.len());
        if children {
            each_field(m, |field, msg| match field {
                11 => self.event(msg),
                13 => self.link(msg),
                _ => Ok(()),
            })?;
        }
        sp.events.end = self.events.len() as u32;
        sp.links.end = self.links.len() as u32;
        if check_ids
            && !(id_valid(trace_id, 16, true)
                && id_valid(span_id, 8, true)
                && id_valid(parent, 8, false))
        {
            let problem = id_problem(trace_id, 16, true)
                .map(|p| ("trace_id", p))
                .or_else(|| id_problem(span_id, 8, true).map(|p| ("span_id", p)))
                .or_else(|| id_problem(parent, 8, false).map(|p| ("parent_span_id", p)));
            if let Some((field, why)) = problem {
                rej.count += 1;
                if rej.reasons.len() < MAX_REASONS {
                    let name = String::from_utf8_lossy(self.unchecked_str(sp.name));
                    let who = if span_id.len() == 8 {
                        format!("span {name:?} ({})", to_hex(span_id))
                    } else {
                        format!("span {name:?}")
                    };
                    rej.reasons.push(format!("{who}: {field} {why}"));
                }
                self.rewind(&marks)?;
                return Ok(());
            }
        }
        // A request's spans come trace by trace, children after their parent or beside their
        // siblings: the previous span's trace id, and its span id or parent id as this span's
        // parent, are shared when they are the same bytes.
        let prev = self
            .spans
            .last()
            .map(|p| (p.trace_id, [p.parent_span_id, p.span_id]));
        sp.trace_id = self.id_like(trace_id, prev.map(|(t, _)| t));
        sp.span_id = self.push_raw(span_id);
        sp.parent_span_id = self.id_like(parent, prev.into_iter().flat_map(|(_, p)| p));
        self.spans.push(sp);
        Ok(())
    }

    fn event(&mut self, m: &[u8]) -> Result<(), DecodeError> {
        let mut e = Event::default();
        let start = self.attrs.len();
        let mut w = Wire::new(m);
        while let Some((field, wire)) = w.key()? {
            match field {
                1 => {
                    e.time_unix_nano = w.fixed64_of(wire)?;
                }
                2 => {
                    e.name = self.text_field(&mut w, wire)?;
                }
                3 => {
                    let kv = w.len_of(wire)?;
                    self.key_value(kv, None)?;
                }
                4 => {
                    e.dropped_attributes_count = w.u32_of(wire)?;
                }
                _ => w.skip(field, wire, 0)?,
            }
        }
        e.attrs = Rows::from_range(start..self.attrs.len());
        self.events.push(e);
        Ok(())
    }

    fn link(&mut self, m: &[u8]) -> Result<(), DecodeError> {
        let mut l = Link::default();
        let start = self.attrs.len();
        let mut w = Wire::new(m);
        while let Some((field, wire)) = w.key()? {
            match field {
                1 => {
                    let v = w.len_of(wire)?;
                    l.trace_id = self.push_raw(v);
                }
                2 => {
                    let v = w.len_of(wire)?;
                    l.span_id = self.push_raw(v);
                }
                3 => {
                    l.trace_state = self.text_field(&mut w, wire)?;
                }
                4 => {
                    let kv = w.len_of(wire)?;
                    self.key_value(kv, None)?;
                }
                5 => {
                    l.dropped_attributes_count = w.u32_of(wire)?;
                }
                6 => {
                    l.flags = w.fixed32_of(wire)?;
                }
                _ => w.skip(field, wire, 0)?,
            }
        }
        l.attrs = Rows::from_range(start..self.attrs.len());
        self.links.push(l);
        Ok(())
    }

    /// Read a `KeyValue` into the attribute table; its key is the key of the attribute at
    /// `like` (one already read) when it is the same text, and so is a string value, so
    /// repeated keys and values are stored once.
    #[inline(always)]
    fn key_value(&mut self, m: &[u8], like: Option<usize>) -> Result<(), DecodeError> {
        // The layout every SDK writes for a short attribute: the key (field 1), then the value
        // (field 2) holding a string (1) or an integer (3), each length one byte. Read as one
        // pattern; anything else (fields repeated or reordered, longer lengths, other kinds)
        // takes the general reading below, which gives the same result.
        if let [0x0a, kl, rest @ ..] = m
            && *kl < 0x80
            && let Some((k, [0x12, vl, v @ ..])) = rest.split_at_checked(usize::from(*kl))
            && usize::from(*vl) == v.len()
        {
            enum Short<'a> {
                Str(&'a [u8]),
                Int(i64),
            }
            let short = match v {
                [0x0a, sl, s @ ..] if usize::from(*sl) == s.len() => Some(Short::Str(s)),
                [0x18, n @ ..] => {
                    let mut w = Wire::new(n);
                    let i = w.varint()?;
                    w.done().then_some(Short::Int(i as i64))
                }
                _ => None,
            };
            if let Some(short) = short {
                let key = self.text_like(k, like.map(|i| self.attrs[i].key()))?;
                let value = match short {
                    Short::Str(s) => {
                        Value::Str(self.text_like(s, like.and_then(|i| self.attrs[i].str_value()))?)
                    }
                    Short::Int(i) => Value::Int(i),
                };
                self.attrs.push(Attr::new(key, value));
                return Ok(());
            }
        }
        self.key_value_slow(m, like)
    }

    #[inline(never)]
    fn key_value_slow(&mut self, m: &[u8], like: Option<usize>) -> Result<(), DecodeError> {
        let (mut key, mut value) = (Str::default(), Value::Absent);
        let mut w = Wire::new(m);
        while let Some((field, wire)) = w.key()? {
            match field {
                1 => {
                    let k = w.len_of(wire)?;
                    if k.len() > MAX_KEY_LEN {
                        return err("an attribute key is longer than 512 MiB");
                    }
                    key = self.text_like(k, like.map(|i| self.attrs[i].key()))?;
                }
                2 => {
                    let v = w.len_of(wire)?;
                    value = self.any_value_of(v, like.and_then(|i| self.attrs[i].str_value()))?;
                }
                3 => {
                    expect(wire, VARINT)?;
                    w.varint()?;
                }
                _ => w.skip(field, wire, 0)?,
            }
        }
        self.attrs.push(Attr::new(key, value));
        Ok(())
    }

    #[inline]
    /// Read an `AnyValue`; a string value is `like` (a string already read) when it is the
    /// same text.
    fn any_value_of(&mut self, m: &[u8], like: Option<Str>) -> Result<Value, DecodeError> {
        let mut v = Value::Empty;
        let mut w = Wire::new(m);
        while let Some((field, wire)) = w.key()? {
            v = match field {
                1 => {
                    let s = w.len_of(wire)?;
                    Value::Str(self.text_like(s, like)?)
                }
                2 => {
                    expect(wire, VARINT)?;
                    Value::Bool(w.varint()? != 0)
                }
                3 => {
                    expect(wire, VARINT)?;
                    Value::Int(w.varint()? as i64)
                }
                4 => {
                    expect(wire, FIXED64)?;
                    Value::Double(f64::from_bits(w.fixed64()?))
                }
                7 => {
                    let s = w.len_of(wire)?;
                    Value::Bytes(self.push_raw(s))
                }
                5 | 6 | 8 => {
                    expect(wire, if field == 8 { VARINT } else { LEN })?;
                    w.skip(field, wire, 0)?;
                    Value::Nested(Raw::default())
                }
                _ => {
                    w.skip(field, wire, 0)?;
                    continue;
                }
            };
        }
        if let Value::Nested(_) = v {
            // Rare: checked whole by prost, and kept as the message it is.
            if let Err(e) = AnyValue::decode(m) {
                return Err(DecodeError(format!(
                    "a nested attribute value is invalid: {e}"
                )));
            }
            v = Value::Nested(self.push_raw(m));
        }
        Ok(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Protobuf: writing

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Size of a length-delimited field of `n` bytes with a one-byte key (every field number here
/// is below 16).
fn len_field(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

fn varint_field(v: u64) -> usize {
    if v == 0 { 0 } else { 1 + varint_len(v) }
}

/// A protobuf encoding written into room sized for it beforehand ([`SpanBlock::encode`]): a
/// cursor over a slice, where pushing to a `Vec` checks its capacity and updates its length at
/// every byte.
struct Put<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Put<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.buf[self.pos] = b;
        self.pos += 1;
    }

    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte((v as u8) | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline(always)]
    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    /// `s`'s bytes. Up to 16 are copied as one 16-byte move from `from` (which holds `s` at
    /// `at`, and more after it) where both have the room: most keys and values are short, and
    /// a `memcpy` call costs more than the copy. The bytes past `s` are overwritten by what
    /// follows (the room is exactly the encoding's length).
    #[inline(always)]
    fn copy(&mut self, from: &[u8], at: usize, len: usize) {
        let end = self.pos + len;
        if len <= 16
            && let (Some(dst), Some(src)) = (
                self.buf.get_mut(self.pos..self.pos + 16),
                from.get(at..at + 16),
            )
        {
            dst.copy_from_slice(src);
        } else {
            self.buf[self.pos..end].copy_from_slice(&from[at..at + len]);
        }
        self.pos = end;
    }

    #[inline(always)]
    fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, FIXED64);
        self.buf[self.pos..self.pos + 8].copy_from_slice(&v.to_le_bytes());
        self.pos += 8;
    }

    #[inline(always)]
    fn fixed32(&mut self, field: u32, v: u32) {
        self.key(field, FIXED32);
        self.buf[self.pos..self.pos + 4].copy_from_slice(&v.to_le_bytes());
        self.pos += 4;
    }

    #[inline(always)]
    fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v);
        }
    }

    #[inline(always)]
    fn message(&mut self, field: u32, len: usize) {
        self.key(field, LEN);
        self.varint(len as u64);
    }
}

impl SpanBlock {
    /// A string field of the block's text (none when empty).
    #[inline(always)]
    fn put_str(&self, out: &mut Put<'_>, field: u32, s: Str) {
        if s.len != 0 {
            out.message(field, s.len as usize);
            out.copy(self.text.as_bytes(), s.off as usize, s.len as usize);
        }
    }

    /// A bytes field of the block's raw bytes (none when empty).
    #[inline(always)]
    fn put_raw(&self, out: &mut Put<'_>, field: u32, r: Raw) {
        if r.len != 0 {
            out.message(field, r.len as usize);
            out.copy(&self.bytes, r.off as usize, r.len as usize);
        }
    }

    fn value_len(&self, v: Value) -> usize {
        match v {
            Value::Absent | Value::Empty => 0,
            Value::Str(s) => len_field(s.len as usize),
            Value::Bool(_) => 2,
            Value::Int(i) => 1 + varint_len(i as u64),
            Value::Double(_) => 9,
            Value::Bytes(b) => len_field(b.len as usize),
            Value::Nested(b) => b.len as usize,
        }
    }

    fn attr_len(&self, a: &Attr) -> usize {
        let key = if a.key().is_empty() {
            0
        } else {
            len_field(a.key().len as usize)
        };
        let value = match a.value() {
            Value::Absent => 0,
            v => len_field(self.value_len(v)),
        };
        key + value
    }

    /// The length of the attributes at `rows`, from `attr_lens` (each attribute's, see
    /// [`encode`](Self::encode)).
    fn attrs_len(attr_lens: &[usize], rows: Rows) -> usize {
        attr_lens[rows.range()].iter().map(|&n| len_field(n)).sum()
    }

    fn put_attrs(&self, out: &mut Put<'_>, field: u32, rows: Rows, attr_lens: &[usize]) {
        for (a, &len) in self.attrs(rows).iter().zip(&attr_lens[rows.range()]) {
            out.message(field, len);
            self.put_str(out, 1, a.key());
            let value = a.value();
            if value != Value::Absent {
                out.message(2, self.value_len(value));
                match value {
                    Value::Absent | Value::Empty => {}
                    Value::Str(s) => {
                        out.message(1, s.len as usize);
                        out.copy(self.text.as_bytes(), s.off as usize, s.len as usize);
                    }
                    Value::Bool(b) => {
                        out.key(2, VARINT);
                        out.byte(u8::from(b));
                    }
                    Value::Int(i) => {
                        out.key(3, VARINT);
                        out.varint(i as u64);
                    }
                    Value::Double(d) => out.fixed64(4, d.to_bits()),
                    Value::Bytes(b) => {
                        out.message(7, b.len as usize);
                        out.copy(&self.bytes, b.off as usize, b.len as usize);
                    }
                    Value::Nested(b) => out.copy(&self.bytes, b.off as usize, b.len as usize),
                }
            }
        }
    }

    fn event_len(&self, e: &Event, attr_lens: &[usize]) -> usize {
        (if e.time_unix_nano != 0 { 9 } else { 0 })
            + if e.name.is_empty() {
                0
            } else {
                len_field(e.name.len as usize)
            }
            + Self::attrs_len(attr_lens, e.attrs)
            + varint_field(u64::from(e.dropped_attributes_count))
    }

    fn link_len(&self, l: &Link, attr_lens: &[usize]) -> usize {
        let b = |r: Raw| {
            if r.is_empty() {
                0
            } else {
                len_field(r.len as usize)
            }
        };
        b(l.trace_id)
            + b(l.span_id)
            + if l.trace_state.is_empty() {
                0
            } else {
                len_field(l.trace_state.len as usize)
            }
            + Self::attrs_len(attr_lens, l.attrs)
            + varint_field(u64::from(l.dropped_attributes_count))
            + if l.flags != 0 { 5 } else { 0 }
    }

    fn status_len(&self, st: &Status) -> usize {
        (if st.message.is_empty() {
            0
        } else {
            len_field(st.message.len as usize)
        }) + varint_field(st.code as i64 as u64)
    }

    fn span_len(&self, sp: &Span, attr_lens: &[usize]) -> usize {
        let b = |r: Raw| {
            if r.is_empty() {
                0
            } else {
                len_field(r.len as usize)
            }
        };
        let s = |r: Str| {
            if r.is_empty() {
                0
            } else {
                len_field(r.len as usize)
            }
        };
        b(sp.trace_id)
            + b(sp.span_id)
            + s(sp.trace_state)
            + b(sp.parent_span_id)
            + s(sp.name)
            + varint_field(sp.kind as i64 as u64)
            + if sp.start_time_unix_nano != 0 { 9 } else { 0 }
            + if sp.end_time_unix_nano != 0 { 9 } else { 0 }
            + Self::attrs_len(attr_lens, sp.attrs)
            + varint_field(u64::from(sp.dropped_attributes_count))
            + self.events[sp.events.range()]
                .iter()
                .map(|e| len_field(self.event_len(e, attr_lens)))
                .sum::<usize>()
            + varint_field(u64::from(sp.dropped_events_count))
            + self.links[sp.links.range()]
                .iter()
                .map(|l| len_field(self.link_len(l, attr_lens)))
                .sum::<usize>()
            + varint_field(u64::from(sp.dropped_links_count))
            + sp.status.map_or(0, |st| len_field(self.status_len(&st)))
            + if sp.flags != 0 { 6 } else { 0 }
    }

    fn put_span(&self, out: &mut Put<'_>, sp: &Span, len: usize, attr_lens: &[usize]) {
        out.message(2, len);
        self.put_raw(out, 1, sp.trace_id);
        self.put_raw(out, 2, sp.span_id);
        self.put_str(out, 3, sp.trace_state);
        self.put_raw(out, 4, sp.parent_span_id);
        self.put_str(out, 5, sp.name);
        out.uint(6, sp.kind as i64 as u64);
        if sp.start_time_unix_nano != 0 {
            out.fixed64(7, sp.start_time_unix_nano);
        }
        if sp.end_time_unix_nano != 0 {
            out.fixed64(8, sp.end_time_unix_nano);
        }
        self.put_attrs(out, 9, sp.attrs, attr_lens);
        out.uint(10, u64::from(sp.dropped_attributes_count));
        for e in &self.events[sp.events.range()] {
            out.message(11, self.event_len(e, attr_lens));
            if e.time_unix_nano != 0 {
                out.fixed64(1, e.time_unix_nano);
            }
            self.put_str(out, 2, e.name);
            self.put_attrs(out, 3, e.attrs, attr_lens);
            out.uint(4, u64::from(e.dropped_attributes_count));
        }
        out.uint(12, u64::from(sp.dropped_events_count));
        for l in &self.links[sp.links.range()] {
            out.message(13, self.link_len(l, attr_lens));
            self.put_raw(out, 1, l.trace_id);
            self.put_raw(out, 2, l.span_id);
            self.put_str(out, 3, l.trace_state);
            self.put_attrs(out, 4, l.attrs, attr_lens);
            out.uint(5, u64::from(l.dropped_attributes_count));
            if l.flags != 0 {
                out.fixed32(6, l.flags);
            }
        }
        out.uint(14, u64::from(sp.dropped_links_count));
        if let Some(st) = sp.status {
            out.message(15, self.status_len(&st));
            self.put_str(out, 2, st.message);
            out.uint(3, st.code as i64 as u64);
        }
        if sp.flags != 0 {
            out.fixed32(16, sp.flags);
        }
    }

    fn scope_len(&self, s: &Scope, span_lens: &[usize], attr_lens: &[usize]) -> usize {
        let scope = if s.present {
            let inner = (if s.name.is_empty() {
                0
            } else {
                len_field(s.name.len as usize)
            }) + (if s.version.is_empty() {
                0
            } else {
                len_field(s.version.len as usize)
            }) + Self::attrs_len(attr_lens, s.attrs)
                + varint_field(u64::from(s.dropped_attributes_count));
            len_field(inner)
        } else {
            0
        };
        scope
            + span_lens[s.spans.range()]
                .iter()
                .map(|&n| len_field(n))
                .sum::<usize>()
            + if s.schema_url.is_empty() {
                0
            } else {
                len_field(s.schema_url.len as usize)
            }
    }

    fn resource_len(&self, r: &Resource, span_lens: &[usize], attr_lens: &[usize]) -> usize {
        let res = if r.present {
            len_field(
                Self::attrs_len(attr_lens, r.attrs)
                    + varint_field(u64::from(r.dropped_attributes_count)),
            )
        } else {
            0
        };
        res + self.scopes[r.scopes.range()]
            .iter()
            .map(|s| len_field(self.scope_len(s, span_lens, attr_lens)))
            .sum::<usize>()
            + if r.schema_url.is_empty() {
                0
            } else {
                len_field(r.schema_url.len as usize)
            }
    }

    /// Append the block as an OTLP protobuf `ExportTraceServiceRequest`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Each attribute's and each span's length once: the messages holding them are
        // prefixed with the sums (each attribute's length was computed twice before, ~2% of
        // the collector's CPU at full load with durable acknowledgements).
        let (attr_lens, span_lens) = self.lengths();
        let attr_lens = attr_lens.as_slice();
        let start = out.len();
        let total = self.encoded_len_with(&span_lens, attr_lens);
        out.resize(start + total, 0);
        let out = &mut Put {
            buf: &mut out[start..],
            pos: 0,
        };
        for r in &self.resources {
            out.message(1, self.resource_len(r, &span_lens, attr_lens));
            if r.present {
                out.message(
                    1,
                    Self::attrs_len(attr_lens, r.attrs)
                        + varint_field(u64::from(r.dropped_attributes_count)),
                );
                self.put_attrs(out, 1, r.attrs, attr_lens);
                out.uint(2, u64::from(r.dropped_attributes_count));
            }
            for s in &self.scopes[r.scopes.range()] {
                out.message(2, self.scope_len(s, &span_lens, attr_lens));
                if s.present {
                    let inner = (if s.name.is_empty() {
                        0
                    } else {
                        len_field(s.name.len as usize)
                    }) + (if s.version.is_empty() {
                        0
                    } else {
                        len_field(s.version.len as usize)
                    }) + Self::attrs_len(attr_lens, s.attrs)
                        + varint_field(u64::from(s.dropped_attributes_count));
                    out.message(1, inner);
                    self.put_str(out, 1, s.name);
                    self.put_str(out, 2, s.version);
                    self.put_attrs(out, 3, s.attrs, attr_lens);
                    out.uint(4, u64::from(s.dropped_attributes_count));
                }
                for i in s.spans.range() {
                    self.put_span(out, &self.spans[i], span_lens[i], attr_lens);
                }
                self.put_str(out, 3, s.schema_url);
            }
            self.put_str(out, 3, r.schema_url);
        }
        debug_assert_eq!(out.pos, total, "the encoding's length as computed");
    }

    /// The protobuf encoding's length.
    #[cfg(test)]
    fn encoded_len(&self) -> usize {
        let (attr_lens, span_lens) = self.lengths();
        self.encoded_len_with(&span_lens, &attr_lens)
    }

    /// Every attribute's encoded length, by its place in the attribute table, then every
    /// span's.
    fn lengths(&self) -> (Vec<usize>, Vec<usize>) {
        let attr_lens: Vec<usize> = self.attrs.iter().map(|a| self.attr_len(a)).collect();
        let span_lens = self
            .spans
            .iter()
            .map(|sp| self.span_len(sp, &attr_lens))
            .collect();
        (attr_lens, span_lens)
    }

    fn encoded_len_with(&self, span_lens: &[usize], attr_lens: &[usize]) -> usize {
        self.resources
            .iter()
            .map(|r| len_field(self.resource_len(r, span_lens, attr_lens)))
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// The write-ahead log's own encoding

/// The first bytes of spans in the log's own encoding ([`SpanBlock::encode_native`]) as
/// builds of session 12 wrote it: the text as it is. No protobuf message the log held before
/// starts with them (`S` would be field 10 as a group start), nor does a zstd frame.
pub const NATIVE_MAGIC_V1: [u8; 4] = *b"SLB1";
/// The first bytes of spans in the log's own encoding as written now: the text in pieces, a
/// long value an earlier record of the segment wrote referred to by its number
/// ([`SegmentValues`]).
pub const NATIVE_MAGIC: [u8; 4] = *b"SLB2";

/// Bytes of each record in the native encoding.
const NATIVE_RESOURCE: usize = 29;
const NATIVE_SCOPE: usize = 45;
const NATIVE_SPAN: usize = 113;
const NATIVE_EVENT: usize = 28;
const NATIVE_LINK: usize = 40;
const NATIVE_ATTR: usize = 16;

/// Pieces of the text in the own encoding (`SLB2`).
const PIECE_LITERAL: u8 = 0;
const PIECE_DEFINE: u8 = 1;
const PIECE_REFER: u8 = 2;

/// The long values one segment of the write-ahead log holds, numbered in the order records
/// defined them: a record refers to a value an earlier record of the same segment wrote
/// instead of writing it again (the collector testbed sends the same 20 values of 5 KB on
/// every span: 100 KB a request, or ~100 bytes once the segment has them). The writer keeps
/// one table per segment and looks values up by hash, comparing the bytes on a match; replay
/// keeps one per segment read, defining values as their records come.
#[derive(Clone, Debug, Default)]
pub struct SegmentValues {
    arena: Vec<u8>,
    /// Each value's place in `arena`, by number.
    places: Vec<(u32, u32)>,
    /// The writer's index: hash of a value → its number.
    by_hash: std::collections::HashMap<u64, u32>,
    /// Values of records already written (the rest belong to the record being written).
    committed: usize,
    /// Records still to write without looking their values up (the table is full and values
    /// stopped repeating).
    skip: u32,
}

impl SegmentValues {
    /// Values shorter than this are written where they are used.
    pub const MIN_LEN: usize = 256;
    /// Bytes of values the writer keeps per segment: values that never repeat fill it once,
    /// then are written where they are used.
    pub const MAX_BYTES: usize = 1 << 20;
    /// Records written without lookups after one that found nothing in a full table.
    const BACKOFF: u32 = 16;

    /// Start a new segment: no value is known.
    pub fn clear(&mut self) {
        self.arena.clear();
        self.places.clear();
        self.by_hash.clear();
        self.committed = 0;
        self.skip = 0;
    }

    /// The record last encoded is written: the values it defined stay.
    pub fn commit(&mut self) {
        self.committed = self.places.len();
    }

    /// The record last encoded was not written: forget the values it defined since the last
    /// [`commit`](Self::commit).
    pub fn rollback(&mut self) {
        if self.places.len() == self.committed {
            return;
        }
        self.places.truncate(self.committed);
        self.arena.truncate(
            self.places
                .last()
                .map_or(0, |&(off, len)| (off + len) as usize),
        );
        let n = self.committed as u32;
        self.by_hash.retain(|_, id| *id < n);
    }

    /// How many values the table holds.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    pub fn is_empty(&self) -> bool {
        self.places.is_empty()
    }

    fn get(&self, id: u32) -> Option<&[u8]> {
        let &(off, len) = self.places.get(id as usize)?;
        self.arena.get(off as usize..(off + len) as usize)
    }

    fn define(&mut self, value: &[u8]) -> u32 {
        let id = self.places.len() as u32;
        self.places
            .push((self.arena.len() as u32, value.len() as u32));
        self.arena.extend_from_slice(value);
        id
    }

    /// The writer's choice for one long value: `Some((id, true))` to refer to value `id`,
    /// `Some((id, false))` when it is defined here as `id`, `None` to write it in place.
    fn share(&mut self, value: &[u8]) -> Option<(u32, bool)> {
        let h = twox_hash::XxHash3_64::oneshot(value);
        if let Some(&id) = self.by_hash.get(&h)
            && self.get(id) == Some(value)
        {
            return Some((id, true));
        }
        if self.arena.len() + value.len() > Self::MAX_BYTES {
            return None;
        }
        let id = self.define(value);
        self.by_hash.insert(h, id);
        Some((id, false))
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_place(out: &mut Vec<u8>, off: u32, len: u32) {
    put_u32(out, off);
    put_u32(out, len);
}

/// A cursor over a native encoding; every read is bounds-checked.
struct Native<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Native<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let Some(b) = self.buf.get(self.pos..).and_then(|rest| rest.get(..n)) else {
            return err("the spans end early");
        };
        self.pos += n;
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let lo = u64::from(self.u32()?);
        Ok(lo | u64::from(self.u32()?) << 32)
    }
    fn rows(&mut self, table: usize) -> Result<Rows, DecodeError> {
        let r = Rows {
            start: self.u32()?,
            end: self.u32()?,
        };
        if r.start > r.end || r.end as usize > table {
            return err("a range of records lies outside its table");
        }
        Ok(r)
    }
    /// A text of `len` bytes in pieces ([`SpanBlock::encode_native`]); the values it defines
    /// are added to `values`.
    fn text_pieces(
        &mut self,
        len: usize,
        values: &mut SegmentValues,
    ) -> Result<Vec<u8>, DecodeError> {
        let count = self.u32()?;
        let mut text = Vec::with_capacity(len.min(self.buf.len()));
        for _ in 0..count {
            let kind = self.u8()?;
            let n = self.u32()?;
            let piece = match kind {
                PIECE_LITERAL => self.take(n as usize)?,
                PIECE_DEFINE => {
                    let value = self.take(n as usize)?;
                    values.define(value);
                    value
                }
                PIECE_REFER => match values.get(n) {
                    Some(v) => v,
                    None => return err("a value of the segment that no record defined"),
                },
                _ => return err("an unknown piece of text"),
            };
            if text.len() + piece.len() > len {
                return err("the text's pieces are longer than the text");
            }
            text.extend_from_slice(piece);
        }
        if text.len() != len {
            return err("the text's pieces are shorter than the text");
        }
        Ok(text)
    }

    /// `n` records of `size` bytes each, checked to be there before any is read.
    fn table<T>(
        &mut self,
        n: usize,
        size: usize,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        if n.checked_mul(size)
            .is_none_or(|b| b > self.buf.len() - self.pos)
        {
            return err("the spans end early");
        }
        (0..n).map(|_| read(self)).collect()
    }
}

impl SpanBlock {
    /// `blocks` as one block in the write-ahead log's own encoding: the tables as they are,
    /// after [`NATIVE_MAGIC`]. The spans are copied into `scratch` first, so only what they
    /// use is written — never text a processor replaced (a redacted secret stays out of the
    /// log) — and a string a block shares between spans once: the same long values on every
    /// span of a request are written once, not once a span as protobuf repeats them.
    ///
    /// A string value of ≥ [`SegmentValues::MIN_LEN`] bytes that `values` (the segment's
    /// table) already holds is referred to by its number; one it does not is defined, for the
    /// next records to refer to.
    ///
    /// ```text
    /// "SLB2", then u32 LE counts: text bytes, bytes, resources, scopes, spans, events,
    /// links, attributes; the text in pieces (u32 count, then each a kind byte: 0 bytes
    /// written here, or 1 a value defined here — u32 length and the bytes —, or 2 a value
    /// of the segment — u32 its number); the bytes, then each table's records, fields in
    /// order, little-endian: a Str, Raw or Rows as two u32 (offset and length, or start and
    /// end), a bool or an option's presence as one byte.
    /// ```
    ///
    /// (`SLB1`, written by session 12's builds, has the text as it is instead of pieces.)
    pub fn encode_native(
        blocks: &[SpanBlock],
        scratch: &mut SpanBlock,
        values: &mut SegmentValues,
        out: &mut Vec<u8>,
    ) {
        scratch.clear();
        for b in blocks {
            b.copy_into(scratch, |_| true);
        }
        scratch.put_native(values, out);
    }

    /// The text in pieces: long string values shared through `values`, the rest as it is.
    fn put_text(&self, values: &mut SegmentValues, out: &mut Vec<u8>) {
        let text = self.text.as_bytes();
        let mut long: Vec<(u32, u32)> = Vec::new();
        if values.skip > 0 {
            values.skip -= 1;
        } else {
            for a in &self.attrs {
                if let Value::Str(v) = a.value()
                    && v.len as usize >= SegmentValues::MIN_LEN
                {
                    long.push((v.off, v.len));
                }
            }
            long.sort_unstable();
            long.dedup();
        }
        let count_at = out.len();
        put_u32(out, 0);
        let mut pieces = 0u32;
        let literal = |out: &mut Vec<u8>, bytes: &[u8]| {
            if bytes.is_empty() {
                return 0;
            }
            out.push(PIECE_LITERAL);
            put_u32(out, bytes.len() as u32);
            out.extend_from_slice(bytes);
            1
        };
        let (mut written, mut found, mut full) = (0usize, false, false);
        for (off, len) in long {
            let (off, end) = (off as usize, off as usize + len as usize);
            if off < written {
                continue;
            }
            let value = &text[off..end];
            let Some((id, refer)) = values.share(value) else {
                full = true;
                continue;
            };
            pieces += literal(out, &text[written..off]);
            if refer {
                found = true;
                out.push(PIECE_REFER);
                put_u32(out, id);
            } else {
                out.push(PIECE_DEFINE);
                put_u32(out, len);
                out.extend_from_slice(value);
            }
            pieces += 1;
            written = end;
        }
        pieces += literal(out, &text[written..]);
        if full && !found {
            values.skip = SegmentValues::BACKOFF;
        }
        out[count_at..count_at + 4].copy_from_slice(&pieces.to_le_bytes());
    }

    fn put_native(&self, values: &mut SegmentValues, out: &mut Vec<u8>) {
        out.reserve(
            4 + 32
                + self.text.len()
                + self.bytes.len()
                + self.resources.len() * NATIVE_RESOURCE
                + self.scopes.len() * NATIVE_SCOPE
                + self.spans.len() * NATIVE_SPAN
                + self.events.len() * NATIVE_EVENT
                + self.links.len() * NATIVE_LINK
                + self.attrs.len() * NATIVE_ATTR,
        );
        out.extend_from_slice(&NATIVE_MAGIC);
        for n in [
            self.text.len(),
            self.bytes.len(),
            self.resources.len(),
            self.scopes.len(),
            self.spans.len(),
            self.events.len(),
            self.links.len(),
            self.attrs.len(),
        ] {
            put_u32(out, n as u32);
        }
        self.put_text(values, out);
        out.extend_from_slice(&self.bytes);
        let str = |out: &mut Vec<u8>, s: Str| put_place(out, s.off, s.len);
        let raw = |out: &mut Vec<u8>, r: Raw| put_place(out, r.off, r.len);
        let rows = |out: &mut Vec<u8>, r: Rows| put_place(out, r.start, r.end);
        for r in &self.resources {
            out.push(u8::from(r.present));
            rows(out, r.attrs);
            put_u32(out, r.dropped_attributes_count);
            str(out, r.schema_url);
            rows(out, r.scopes);
        }
        for s in &self.scopes {
            out.push(u8::from(s.present));
            str(out, s.name);
            str(out, s.version);
            rows(out, s.attrs);
            put_u32(out, s.dropped_attributes_count);
            str(out, s.schema_url);
            rows(out, s.spans);
        }
        for sp in &self.spans {
            raw(out, sp.trace_id);
            raw(out, sp.span_id);
            raw(out, sp.parent_span_id);
            str(out, sp.trace_state);
            put_u32(out, sp.flags);
            str(out, sp.name);
            put_u32(out, sp.kind as u32);
            put_u64(out, sp.start_time_unix_nano);
            put_u64(out, sp.end_time_unix_nano);
            rows(out, sp.attrs);
            put_u32(out, sp.dropped_attributes_count);
            rows(out, sp.events);
            put_u32(out, sp.dropped_events_count);
            rows(out, sp.links);
            put_u32(out, sp.dropped_links_count);
            let st = sp.status.unwrap_or_default();
            out.push(u8::from(sp.status.is_some()));
            put_u32(out, st.code as u32);
            str(out, st.message);
        }
        for e in &self.events {
            put_u64(out, e.time_unix_nano);
            str(out, e.name);
            rows(out, e.attrs);
            put_u32(out, e.dropped_attributes_count);
        }
        for l in &self.links {
            raw(out, l.trace_id);
            raw(out, l.span_id);
            str(out, l.trace_state);
            put_u32(out, l.flags);
            rows(out, l.attrs);
            put_u32(out, l.dropped_attributes_count);
        }
        for a in &self.attrs {
            put_u32(out, a.key_off);
            put_u32(out, a.key_len);
            put_u64(out, a.payload);
        }
    }

    /// Read spans [`SpanBlock::encode_native`] wrote at the start of `buf`: the block and the
    /// bytes it took. Every place, range and string is checked (a damaged record is an error,
    /// never a panic later): strings lie in the text on character boundaries, bytes in the
    /// byte store, ranges in their tables, and the resources' scopes and the scopes' spans
    /// follow one another and cover their tables.
    ///
    /// `values` is the segment's table: the values earlier records of the segment defined
    /// (those this one defines are added to it).
    pub fn decode_native(
        buf: &[u8],
        values: &mut SegmentValues,
    ) -> Result<(SpanBlock, usize), DecodeError> {
        let mut n = Native { buf, pos: 0 };
        let pieces = match n.take(4)? {
            m if m == NATIVE_MAGIC => true,
            m if m == NATIVE_MAGIC_V1 => false,
            _ => return err("not spans in the log's own encoding"),
        };
        let mut counts = [0usize; 8];
        for c in &mut counts {
            *c = n.u32()? as usize;
        }
        let [text, bytes, resources, scopes, spans, events, links, attrs] = counts;
        let text = if pieces {
            n.text_pieces(text, values)?
        } else {
            n.take(text)?.to_vec()
        };
        let Ok(text) = String::from_utf8(text) else {
            return err("the text is not UTF-8");
        };
        let store = n.take(bytes)?;
        let in_text = |off: usize, len: usize| {
            off + len <= text.len()
                && text.is_char_boundary(off)
                && text.is_char_boundary(off + len)
        };
        let str = |n: &mut Native<'_>| -> Result<Str, DecodeError> {
            let (off, len) = (n.u32()?, n.u32()?);
            if !in_text(off as usize, len as usize) {
                return err("a string lies outside the text");
            }
            Ok(Str { off, len })
        };
        let raw = |n: &mut Native<'_>| -> Result<Raw, DecodeError> {
            let (off, len) = (n.u32()?, n.u32()?);
            if off as usize + len as usize > store.len() {
                return err("bytes lie outside the byte store");
            }
            Ok(Raw { off, len })
        };
        let resources = n.table(resources, NATIVE_RESOURCE, |n| {
            Ok(Resource {
                present: n.u8()? != 0,
                attrs: n.rows(attrs)?,
                dropped_attributes_count: n.u32()?,
                schema_url: str(n)?,
                scopes: n.rows(scopes)?,
            })
        })?;
        let scopes = n.table(scopes, NATIVE_SCOPE, |n| {
            Ok(Scope {
                present: n.u8()? != 0,
                name: str(n)?,
                version: str(n)?,
                attrs: n.rows(attrs)?,
                dropped_attributes_count: n.u32()?,
                schema_url: str(n)?,
                spans: n.rows(spans)?,
            })
        })?;
        let spans = n.table(spans, NATIVE_SPAN, |n| {
            Ok(Span {
                trace_id: raw(n)?,
                span_id: raw(n)?,
                parent_span_id: raw(n)?,
                trace_state: str(n)?,
                flags: n.u32()?,
                name: str(n)?,
                kind: n.u32()? as i32,
                start_time_unix_nano: n.u64()?,
                end_time_unix_nano: n.u64()?,
                attrs: n.rows(attrs)?,
                dropped_attributes_count: n.u32()?,
                events: n.rows(events)?,
                dropped_events_count: n.u32()?,
                links: n.rows(links)?,
                dropped_links_count: n.u32()?,
                status: {
                    let present = n.u8()? != 0;
                    let st = Status {
                        code: n.u32()? as i32,
                        message: str(n)?,
                    };
                    present.then_some(st)
                },
            })
        })?;
        let events = n.table(events, NATIVE_EVENT, |n| {
            Ok(Event {
                time_unix_nano: n.u64()?,
                name: str(n)?,
                attrs: n.rows(attrs)?,
                dropped_attributes_count: n.u32()?,
            })
        })?;
        let links = n.table(links, NATIVE_LINK, |n| {
            Ok(Link {
                trace_id: raw(n)?,
                span_id: raw(n)?,
                trace_state: str(n)?,
                flags: n.u32()?,
                attrs: n.rows(attrs)?,
                dropped_attributes_count: n.u32()?,
            })
        })?;
        let attrs = n.table(attrs, NATIVE_ATTR, |n| {
            let a = Attr {
                key_off: n.u32()?,
                key_len: n.u32()?,
                payload: n.u64()?,
            };
            if !in_text(a.key_off as usize, a.key().len as usize) {
                return err("an attribute's key lies outside the text");
            }
            let (off, len) = (a.payload as u32 as usize, (a.payload >> 32) as usize);
            match a.value() {
                Value::Str(_) if !in_text(off, len) => {
                    err("an attribute's value lies outside the text")
                }
                Value::Bytes(_) | Value::Nested(_) if off + len > store.len() => {
                    err("an attribute's value lies outside the byte store")
                }
                _ => Ok(a),
            }
        })?;
        let follow = |ranges: &mut dyn Iterator<Item = Rows>, total: usize| {
            let mut next = 0;
            for r in ranges {
                if r.start as usize != next {
                    return false;
                }
                next = r.end as usize;
            }
            next == total
        };
        if !follow(&mut resources.iter().map(|r| r.scopes), scopes.len())
            || !follow(&mut scopes.iter().map(|s| s.spans), spans.len())
        {
            return err("the resources' scopes or the scopes' spans do not follow one another");
        }
        let block = SpanBlock {
            text,
            unchecked: Vec::new(),
            bytes: store.to_vec(),
            resources,
            scopes,
            spans,
            events,
            links,
            attrs,
            request: Request(None),
        };
        Ok((block, n.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `same_bytes` is `==` at every length up to past its word sizes, for equal slices and
    /// for slices differing in any one byte.
    #[test]
    fn same_bytes_is_equality() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
            assert!(same_bytes(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 1;
                assert!(!same_bytes(&a, &b), "length {n}, byte {at}");
            }
            assert!(!same_bytes(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    #[test]
    fn an_attribute_keeps_its_key_and_any_value_in_16_bytes() {
        assert_eq!(std::mem::size_of::<Attr>(), 16);
        let place = |off, len| (Str { off, len }, Raw { off, len });
        let values = |off, len| {
            let (s, r) = place(off, len);
            [
                Value::Absent,
                Value::Empty,
                Value::Str(s),
                Value::Bool(true),
                Value::Bool(false),
                Value::Int(-1),
                Value::Int(i64::MIN),
                Value::Double(-0.5),
                Value::Double(f64::INFINITY),
                Value::Bytes(r),
                Value::Nested(r),
            ]
        };
        let keys = [(0, 0), (7, 1), (u32::MAX, MAX_KEY_LEN as u32)];
        for (off, len) in keys {
            let key = Str { off, len };
            for v in values(u32::MAX, u32::MAX).into_iter().chain(values(3, 0)) {
                let mut a = Attr::new(key, v);
                assert_eq!((a.key(), a.value()), (key, v));
                // Another value, of every kind, leaves the key as it was.
                for w in values(1, 2) {
                    a.set_value(w);
                    assert_eq!((a.key(), a.value()), (key, w));
                }
            }
        }
        // Equality is the values' own (NaN is equal to nothing, as before).
        let nan = Attr::new(Str::default(), Value::Double(f64::NAN));
        assert_ne!(nan, nan);
        assert!(matches!(nan.value(), Value::Double(d) if d.is_nan()));
    }

    #[test]
    #[should_panic(expected = "an attribute key of 536870912 bytes")]
    fn a_key_longer_than_the_limit_is_refused() {
        let key = Str {
            off: 0,
            len: MAX_KEY_LEN as u32 + 1,
        };
        Attr::new(key, Value::Int(1));
    }

    /// A small deterministic generator: every case differs, every run is the same.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn text(&mut self) -> String {
            const WORDS: [&str; 8] = ["", "GET /cart", "é", "db.query", "x", "日本", "a b", "🙂"];
            (0..self.below(3))
                .map(|_| WORDS[self.below(8) as usize])
                .collect()
        }
        fn bytes(&mut self, lens: &[usize]) -> Vec<u8> {
            let n = lens[self.below(lens.len() as u64) as usize];
            (0..n).map(|_| self.next() as u8).collect()
        }
        fn value(&mut self, depth: u32) -> Option<AnyValue> {
            let v = match self.below(if depth > 1 { 7 } else { 10 }) {
                0 => return None,
                1 => None,
                2 => Some(PValue::StringValue(self.text())),
                // Long values from a few, so that records repeat them (the log shares them).
                3 => Some(PValue::StringValue(match self.below(4) {
                    0 => self.text(),
                    k => ["é".repeat(150), "x".repeat(300), "日本🙂 ".repeat(40)][k as usize - 1]
                        .clone(),
                })),
                4 => Some(PValue::BoolValue(self.below(2) == 1)),
                5 => Some(PValue::IntValue(self.next() as i64 >> self.below(64))),
                6 => Some(PValue::DoubleValue(self.next() as f64 / 7.0)),
                7 => Some(PValue::BytesValue(self.bytes(&[0, 1, 5]))),
                8 => Some(PValue::ArrayValue(ArrayValue {
                    values: (0..self.below(3))
                        .map(|_| self.value(depth + 1).unwrap_or_default())
                        .collect(),
                })),
                _ => Some(PValue::KvlistValue(KeyValueList {
                    values: self.kvs(depth + 1),
                })),
            };
            Some(AnyValue { value: v })
        }
        fn kvs(&mut self, depth: u32) -> Vec<KeyValue> {
            (0..self.below(4))
                .map(|_| KeyValue {
                    key: self.text(),
                    value: self.value(depth),
                    ..Default::default()
                })
                .collect()
        }
        fn span(&mut self) -> PSpan {
            PSpan {
                trace_id: self.bytes(&[16, 16, 0]),
                span_id: self.bytes(&[8, 8, 0]),
                trace_state: self.text(),
                parent_span_id: self.bytes(&[8, 0]),
                flags: self.below(3) as u32 * 256,
                name: self.text(),
                kind: self.below(7) as i32 - 1,
                start_time_unix_nano: self.next() >> self.below(64),
                end_time_unix_nano: if self.below(3) == 0 {
                    0
                } else {
                    self.next() >> self.below(64)
                },
                attributes: self.kvs(0),
                dropped_attributes_count: self.below(3) as u32,
                events: (0..self.below(3))
                    .map(|_| PEvent {
                        time_unix_nano: self.next(),
                        name: self.text(),
                        attributes: self.kvs(0),
                        dropped_attributes_count: self.below(2) as u32,
                    })
                    .collect(),
                dropped_events_count: self.below(2) as u32,
                links: (0..self.below(3))
                    .map(|_| PLink {
                        trace_id: self.bytes(&[16, 3]),
                        span_id: self.bytes(&[8]),
                        trace_state: self.text(),
                        attributes: self.kvs(0),
                        dropped_attributes_count: self.below(2) as u32,
                        flags: self.below(2) as u32,
                    })
                    .collect(),
                dropped_links_count: self.below(2) as u32,
                status: (self.below(2) == 1).then(|| PStatus {
                    message: self.text(),
                    code: self.below(4) as i32 - 1,
                }),
            }
        }
        fn request(&mut self) -> Vec<ResourceSpans> {
            (0..self.below(4))
                .map(|_| ResourceSpans {
                    resource: (self.below(4) > 0).then(|| PResource {
                        attributes: self.kvs(0),
                        dropped_attributes_count: self.below(2) as u32,
                        ..Default::default()
                    }),
                    scope_spans: (0..self.below(3))
                        .map(|_| ScopeSpans {
                            scope: (self.below(3) > 0).then(|| InstrumentationScope {
                                name: self.text(),
                                version: self.text(),
                                attributes: self.kvs(0),
                                dropped_attributes_count: self.below(2) as u32,
                            }),
                            spans: (0..self.below(4)).map(|_| self.span()).collect(),
                            schema_url: self.text(),
                        })
                        .collect(),
                    schema_url: self.text(),
                })
                .collect()
        }
    }

    /// What a block keeps of prost's groups: groups without spans go.
    fn without_empty_groups(mut groups: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
        for rs in &mut groups {
            rs.scope_spans.retain(|s| !s.spans.is_empty());
        }
        groups.retain(|rs| !rs.scope_spans.is_empty());
        groups
    }

    /// Nor does it keep the profiles-only `key_strindex` of an attribute or a resource's entity
    /// references (nothing stores them).
    fn without_profile_fields(mut groups: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
        fn clear(kvs: &mut [KeyValue]) {
            for kv in kvs {
                kv.key_strindex = 0;
            }
        }
        for rs in &mut groups {
            if let Some(r) = rs.resource.as_mut() {
                clear(&mut r.attributes);
                r.entity_refs.clear();
            }
            for ss in &mut rs.scope_spans {
                if let Some(sc) = ss.scope.as_mut() {
                    clear(&mut sc.attributes);
                }
                for sp in &mut ss.spans {
                    clear(&mut sp.attributes);
                    sp.events.iter_mut().for_each(|e| clear(&mut e.attributes));
                    sp.links.iter_mut().for_each(|l| clear(&mut l.attributes));
                }
            }
        }
        groups
    }

    fn encode_prost(groups: &[ResourceSpans]) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: groups.to_vec(),
        }
        .encode_to_vec()
    }

    #[test]
    fn decoding_agrees_with_prost_and_encoding_round_trips() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for case in 0..2000 {
            let groups = g.request();
            let body = encode_prost(&groups);
            let (block, rej) = SpanBlock::decode(&body, false).expect("prost's encoding decodes");
            assert_eq!(rej.count, 0);
            let expected = without_empty_groups(groups.clone());
            assert_eq!(block.to_prost(), expected, "case {case}");
            assert_eq!(
                SpanBlock::from_prost(&expected).to_prost(),
                expected,
                "case {case}"
            );
            // Our encoding is what prost would write for the same spans.
            let mut ours = Vec::new();
            block.encode(&mut ours);
            assert_eq!(ours.len(), block.encoded_len(), "case {case}");
            let back =
                ExportTraceServiceRequest::decode(ours.as_slice()).expect("prost reads ours");
            assert_eq!(back.resource_spans, expected, "case {case}");
            assert_eq!(
                ours,
                encode_prost(&expected),
                "case {case}: same bytes as prost"
            );
        }
    }

    #[test]
    fn the_logs_own_encoding_round_trips_every_request() {
        let mut g = Gen(0x51ab_c0de_1234_5678);
        let mut scratch = SpanBlock::default();
        // One segment's tables, the writer's and replay's; a new segment every 50 records.
        let (mut written, mut read) = (SegmentValues::default(), SegmentValues::default());
        let mut referring = 0;
        for case in 0..2000 {
            if case % 50 == 0 {
                written.clear();
                read.clear();
            }
            let body = encode_prost(&g.request());
            let (block, _) = SpanBlock::decode(&body, false).expect("decodes");
            // Two blocks into one record: the second's places move past the first's.
            let blocks = [block.clone(), block.clone()];
            let mut out = vec![0xAA];
            SpanBlock::encode_native(&blocks, &mut scratch, &mut written, &mut out);
            if SpanBlock::decode_native(&out[1..], &mut SegmentValues::default()).is_err() {
                referring += 1; // it needs values of earlier records
            }
            let (back, used) = SpanBlock::decode_native(&out[1..], &mut read)
                .unwrap_or_else(|e| panic!("case {case}: {e}"));
            assert_eq!(used, out.len() - 1, "case {case}");
            assert_eq!(read.len(), written.len(), "case {case}");
            let mut expected = block.to_prost();
            expected.extend(block.to_prost());
            assert_eq!(back.to_prost(), expected, "case {case}");
        }
        assert!(
            referring > 500,
            "{referring} records referred to earlier ones"
        );
    }

    #[test]
    fn spans_in_the_own_encoding_of_session_12_builds_read_back() {
        let mut g = Gen(0x5e55_1012_abcd_0001);
        let mut n = 0;
        while n < 200 {
            let (block, _) =
                SpanBlock::decode(&encode_prost(&g.request()), false).expect("decodes");
            let mut out = Vec::new();
            SpanBlock::encode_native(
                std::slice::from_ref(&block),
                &mut SpanBlock::default(),
                &mut SegmentValues::default(),
                &mut out,
            );
            // `SLB1` had the text as it is: the same record without the pieces' framing.
            let pieces = u32::from_le_bytes([out[36], out[37], out[38], out[39]]);
            if pieces > 1 {
                continue; // long values: defined in pieces, which SLB1 had not
            }
            let mut v1 = NATIVE_MAGIC_V1.to_vec();
            v1.extend_from_slice(&out[4..36]);
            v1.extend_from_slice(&out[if pieces == 0 { 40 } else { 45 }..]);
            let (back, used) =
                SpanBlock::decode_native(&v1, &mut SegmentValues::default()).expect("reads back");
            assert_eq!((used, back.to_prost()), (v1.len(), block.to_prost()));
            n += 1;
        }
    }

    #[test]
    fn records_of_the_log_refer_to_values_earlier_records_of_the_segment_wrote() {
        let big = |k: usize| (b'a' + k as u8) as char;
        let request = |seed: u8| {
            vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..10u8)
                        .map(|i| PSpan {
                            trace_id: vec![seed; 16],
                            span_id: vec![i + 1; 8],
                            name: "GET /cart".into(),
                            attributes: (0..20)
                                .map(|k| KeyValue {
                                    key: format!("attr.{k}"),
                                    value: Some(AnyValue {
                                        value: Some(PValue::StringValue(
                                            big(k).to_string().repeat(5000),
                                        )),
                                    }),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }]
        };
        let block = |seed| {
            SpanBlock::decode(&encode_prost(&request(seed)), false)
                .expect("decodes")
                .0
        };
        let (mut written, mut read) = (SegmentValues::default(), SegmentValues::default());
        let mut scratch = SpanBlock::default();
        // Each record is written: the log commits its values.
        let encode = |b: &SpanBlock, written: &mut SegmentValues, scratch: &mut SpanBlock| {
            let mut out = Vec::new();
            SpanBlock::encode_native(std::slice::from_ref(b), scratch, written, &mut out);
            written.commit();
            out
        };
        let first = encode(&block(1), &mut written, &mut scratch);
        let second = encode(&block(2), &mut written, &mut scratch);
        assert!(first.len() > 100_000, "the first defines the 20 values");
        assert!(
            second.len() < 10_000,
            "the second refers to them: {} bytes",
            second.len()
        );
        for (out, seed) in [(&first, 1), (&second, 2)] {
            let (back, _) = SpanBlock::decode_native(out, &mut read).expect("replays");
            assert_eq!(back.to_prost(), block(seed).to_prost());
        }
        assert!(
            SpanBlock::decode_native(&second, &mut SegmentValues::default()).is_err(),
            "alone, the second refers to values no record defined"
        );

        // A record that was not written takes its values back: the next one defines them.
        written.clear();
        let mut unwritten = Vec::new();
        SpanBlock::encode_native(&[block(1)], &mut scratch, &mut written, &mut unwritten);
        written.rollback();
        assert!(written.is_empty());
        let again = encode(&block(2), &mut written, &mut scratch);
        let (back, _) =
            SpanBlock::decode_native(&again, &mut SegmentValues::default()).expect("stands alone");
        assert_eq!(back.to_prost(), block(2).to_prost());

        // Values that never repeat fill the table once, then are written where they are.
        written.clear();
        let mut sizes = Vec::new();
        for seed in 0..20u8 {
            let mut b = request(seed);
            for sp in &mut b[0].scope_spans[0].spans {
                for (k, kv) in sp.attributes.iter_mut().enumerate() {
                    kv.value = Some(AnyValue {
                        value: Some(PValue::StringValue(format!("{seed:03}{k:02}").repeat(1000))),
                    });
                }
            }
            let b = SpanBlock::decode(&encode_prost(&b), false)
                .expect("decodes")
                .0;
            sizes.push(encode(&b, &mut written, &mut scratch).len());
        }
        assert!(written.arena.len() <= SegmentValues::MAX_BYTES);
        assert!(written.skip > 0, "it stopped looking values up");
        assert!(
            sizes.iter().all(|&n| n > 100_000),
            "every record writes its values: {sizes:?}"
        );
    }

    #[test]
    fn damaged_spans_in_the_logs_own_encoding_are_refused_or_read_whole() {
        let mut g = Gen(0x0dd_ba11_cafe_f00d);
        let mut scratch = SpanBlock::default();
        let (mut written, mut read) = (SegmentValues::default(), SegmentValues::default());
        let (mut refused, mut whole) = (0, 0);
        for _ in 0..3000 {
            let body = encode_prost(&g.request());
            let (block, _) = SpanBlock::decode(&body, false).expect("decodes");
            let mut out = Vec::new();
            SpanBlock::encode_native(&[block], &mut scratch, &mut written, &mut out);
            let mut before = read.clone();
            SpanBlock::decode_native(&out, &mut read).expect("the record as written reads back");
            match g.below(3) {
                0 => {
                    let i = g.below(out.len() as u64) as usize;
                    out[i] = g.next() as u8;
                }
                1 => out.truncate(g.below(out.len() as u64) as usize),
                _ => {
                    let i = 4 + g.below(out.len() as u64 - 4) as usize;
                    out[i..].iter_mut().for_each(|b| *b = b.wrapping_add(1));
                }
            }
            match SpanBlock::decode_native(&out, &mut before) {
                // Whatever reads back is a block every accessor can walk.
                Ok((b, _)) => {
                    let _ = b.to_prost();
                    let mut again = Vec::new();
                    b.encode(&mut again);
                    whole += 1;
                }
                Err(_) => refused += 1,
            }
        }
        assert!(
            refused > 1000 && whole > 100,
            "refused {refused}, read {whole}"
        );
    }

    #[test]
    fn the_logs_own_encoding_writes_a_shared_value_once_and_no_replaced_text() {
        let long = "v".repeat(5000);
        let groups = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..10u8)
                    .map(|i| PSpan {
                        trace_id: vec![7; 16],
                        span_id: vec![i + 1; 8],
                        name: "GET /cart".into(),
                        attributes: vec![
                            KeyValue {
                                key: "payload".into(),
                                value: Some(AnyValue {
                                    value: Some(PValue::StringValue(long.clone())),
                                }),
                                ..Default::default()
                            },
                            KeyValue {
                                key: "password".into(),
                                value: Some(AnyValue {
                                    value: Some(PValue::StringValue(format!("hunter{i}-secret"))),
                                }),
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }];
        let (mut block, _) = SpanBlock::decode(&encode_prost(&groups), false).expect("decodes");
        // A processor replaces each secret: the old text stays in the block, unreferenced.
        let mask = block.push_str("[REDACTED]");
        for a in block.attrs.iter_mut() {
            if matches!(a.value(), Value::Str(s) if s.len < 100) {
                a.set_value(Value::Str(mask));
            }
        }
        let mut out = Vec::new();
        let values = &mut SegmentValues::default();
        SpanBlock::encode_native(
            &[block.clone()],
            &mut SpanBlock::default(),
            values,
            &mut out,
        );
        assert!(
            out.len() < 2 * long.len(),
            "{} bytes for ten spans sharing one value of {}",
            out.len(),
            long.len()
        );
        let written = String::from_utf8_lossy(&out);
        assert!(!written.contains("hunter"), "replaced text is not written");
        let (back, _) =
            SpanBlock::decode_native(&out, &mut SegmentValues::default()).expect("reads back");
        assert_eq!(back.to_prost(), block.to_prost());
        assert_eq!(back.len(), 10);
    }

    #[test]
    fn damaged_requests_are_refused_where_prost_refuses_them() {
        let mut g = Gen(0x2545_f491_4f6c_dd1d);
        let mut accepted = 0;
        for case in 0..3000 {
            let mut body = encode_prost(&g.request());
            if body.is_empty() {
                continue;
            }
            // Damage: a byte changed, the end cut, or a stretch of bytes duplicated.
            match g.below(3) {
                0 => {
                    let i = g.below(body.len() as u64) as usize;
                    body[i] = g.next() as u8;
                }
                1 => body.truncate(g.below(body.len() as u64) as usize),
                _ => {
                    let i = g.below(body.len() as u64) as usize;
                    let j = (i + 1 + g.below(8) as usize).min(body.len());
                    let piece = body[i..j].to_vec();
                    body.splice(i..i, piece);
                }
            }
            let ours = SpanBlock::decode(&body, false);
            if let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice()) {
                let (block, _) =
                    ours.unwrap_or_else(|e| panic!("case {case}: prost accepts, we say {e}"));
                let expected = without_profile_fields(without_empty_groups(req.resource_spans));
                assert_eq!(block.to_prost(), expected, "case {case}");
                accepted += 1;
            }
        }
        assert!(
            accepted > 200,
            "the damage left too few valid requests ({accepted})"
        );
    }

    /// A request whose strings are put in place of one-byte markers, so they need not be UTF-8.
    fn with_bytes(groups: &[ResourceSpans], marks: &[(u8, u8)]) -> Vec<u8> {
        let mut body = encode_prost(groups);
        for &(mark, byte) in marks {
            let at = body
                .iter()
                .position(|&b| b == mark)
                .expect("marker in the request");
            body[at] = byte;
        }
        body
    }

    #[test]
    fn strings_that_are_not_utf8_refuse_the_request() {
        let span = |trace_state: &str, name: &str, trace: Vec<u8>| PSpan {
            trace_id: trace,
            span_id: vec![2; 8],
            trace_state: trace_state.into(),
            name: name.into(),
            ..Default::default()
        };
        let request = |spans| {
            vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }]
        };
        let cases = [
            // Two halves of "é" in two strings: each alone is not UTF-8, together they are.
            (
                request(vec![span("Q", "R", vec![1; 16])]),
                vec![(b'Q', 0xC3), (b'R', 0xA9)],
            ),
            // A character cut short before the next string.
            (
                request(vec![span("ok", "xQ", vec![1; 16])]),
                vec![(b'Q', 0xC3)],
            ),
            // Not UTF-8 in a span refused for its trace id.
            (
                request(vec![span("", "Q", vec![1; 15])]),
                vec![(b'Q', 0xFF)],
            ),
        ];
        for (i, (groups, marks)) in cases.iter().enumerate() {
            let body = with_bytes(groups, marks);
            assert!(
                ExportTraceServiceRequest::decode(body.as_slice()).is_err(),
                "case {i}: prost refuses it too"
            );
            let e = SpanBlock::decode(&body, true).expect_err("not UTF-8");
            assert!(e.to_string().contains("not valid UTF-8"), "case {i}: {e}");
        }
        // The same requests with valid strings are taken.
        let fine = with_bytes(&request(vec![span("Q", "R", vec![1; 16])]), &[]);
        assert_eq!(SpanBlock::decode(&fine, true).expect("valid").0.len(), 1);
    }

    #[test]
    fn the_quick_id_check_agrees_with_id_problem() {
        for n in [0, 1, 7, 8, 9, 15, 16, 17] {
            let mut ids = vec![vec![0u8; n]];
            for at in 0..n {
                let mut id = vec![0u8; n];
                id[at] = 1 << (at % 8);
                ids.push(id);
            }
            for id in ids {
                for (len, required) in [(16, true), (8, true), (8, false)] {
                    assert_eq!(
                        id_valid(&id, len, required),
                        id_problem(&id, len, required).is_none(),
                        "{id:?} as {len} bytes, required {required}"
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_ids_are_refused_one_by_one() {
        let span = |name: &str, trace: Vec<u8>, id: Vec<u8>, parent: Vec<u8>| PSpan {
            name: name.into(),
            trace_id: trace,
            span_id: id,
            parent_span_id: parent,
            ..Default::default()
        };
        let groups = vec![
            ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![
                        span("ok", vec![1; 16], vec![2; 8], vec![]),
                        span("short", vec![1; 15], vec![2; 8], vec![]),
                        span("zero", vec![1; 16], vec![0; 8], vec![]),
                        span("child", vec![1; 16], vec![3; 8], vec![2; 8]),
                        span("bad parent", vec![1; 16], vec![4; 8], vec![2; 3]),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            },
            ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span("gone", vec![], vec![2; 8], vec![])],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ];
        let (block, rej) = SpanBlock::decode(&encode_prost(&groups), true).expect("decodes");
        let names: Vec<_> = block.spans.iter().map(|s| block.str(s.name)).collect();
        assert_eq!(names, ["ok", "child"]);
        assert_eq!(block.resources.len(), 1, "the emptied group goes");
        assert_eq!(rej.count, 4);
        let message = rej.message();
        assert!(message.starts_with("4 span(s) rejected"), "{message}");
        assert!(
            message.contains("span \"short\" (0202020202020202): trace_id has 15 bytes"),
            "{message}"
        );
        assert!(
            message.contains("span \"zero\" (0000000000000000): span_id is all zeros"),
            "{message}"
        );
        assert!(message.ends_with("; and 1 more"), "{message}");
    }

    /// A span's trace id, and its parent id when it is the previous span's id or parent id, is
    /// stored once; a refused span in between changes nothing.
    #[test]
    fn ids_of_neighbouring_spans_are_stored_once() {
        let span = |trace: u8, id: u8, parent: Option<u8>| PSpan {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            ..Default::default()
        };
        let mut refused = span(1, 9, Some(2));
        refused.trace_id = vec![1; 15];
        let groups = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(1, 1, None),    // root: trace id and span id stored
                    span(1, 2, Some(1)), // child of the previous span: span id stored
                    span(1, 3, Some(1)), // sibling: span id stored
                    refused,
                    span(1, 4, Some(3)), // child of the previous kept span
                    span(2, 5, Some(7)), // another trace: all three stored
                ],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let (block, rej) = SpanBlock::decode(&encode_prost(&groups), true).expect("decodes");
        assert_eq!(rej.count, 1);
        let mut expected = groups.clone();
        expected[0].scope_spans[0].spans.remove(3);
        assert_eq!(block.to_prost(), expected);
        let spans = &block.spans;
        assert_eq!(spans[1].trace_id, spans[0].trace_id);
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        assert_eq!(spans[2].parent_span_id, spans[1].parent_span_id);
        assert_eq!(spans[3].parent_span_id, spans[2].span_id);
        assert_ne!(spans[4].trace_id, spans[3].trace_id);
        assert_eq!(block.bytes.len(), 16 + 8 * 4 + 16 + 8 + 8);
    }

    /// A key or string value at the same place as in the previous kept span is stored once;
    /// other keys and values, and those of a refused span, do not disturb it.
    #[test]
    fn attribute_bytes_count_a_shared_value_on_every_span() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        let long = "v".repeat(5000);
        let spans = (0..10u8)
            .map(|i| PSpan {
                trace_id: vec![1; 16],
                span_id: vec![i + 1; 8],
                attributes: vec![
                    KeyValue {
                        key: "payload".into(),
                        value: Some(AnyValue {
                            value: Some(V::StringValue(long.clone())),
                        }),
                        ..Default::default()
                    },
                    KeyValue {
                        key: "n".into(),
                        value: Some(AnyValue {
                            value: Some(V::IntValue(i.into())),
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            })
            .collect();
        let groups = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }];
        let (block, _) = SpanBlock::decode(&encode_prost(&groups), true).expect("decode");
        // Decoding stores the value once; as rows, every span has it.
        assert!(
            block.heap_bytes() < 2 * 5000 + 4096,
            "{}",
            block.heap_bytes()
        );
        assert_eq!(
            block.attr_bytes(),
            10 * ("payload".len() + 5000 + "n".len() + 8)
        );
    }

    /// An attribute's bytes as a span's field 9, in a request of that one span, twice: the
    /// second span reads the first's attribute as its `like`.
    fn request_of_attribute(kv: &[u8]) -> Vec<u8> {
        fn field(tag: u8, body: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let mut n = body.len();
            while n >= 0x80 {
                out.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            out.push(n as u8);
            out.extend_from_slice(body);
            out
        }
        let mut span = field(0x0a, &[1; 16]);
        span.extend(field(0x12, &[2; 8]));
        span.extend(field(0x4a, kv));
        let spans = [field(0x12, &span), field(0x12, &span)].concat();
        field(0x0a, &field(0x12, &spans))
    }

    #[test]
    fn every_layout_of_an_attribute_reads_as_prost_reads_it() {
        let negative = [&b"\x0a\x01k\x12\x0b\x18"[..], &[0xff; 9], &[0x01]].concat();
        let long = [&b"\x0a\x01k\x12\xcb\x01\x0a\xc8\x01"[..], &[b'v'; 200]].concat();
        let cases: [(&str, &[u8]); 21] = [
            ("key, then a string", b"\x0a\x01k\x12\x03\x0a\x01v"),
            ("key, then an empty string", b"\x0a\x01k\x12\x02\x0a\x00"),
            ("empty key, then a string", b"\x0a\x00\x12\x03\x0a\x01v"),
            ("key, then an int", b"\x0a\x01k\x12\x02\x18\x07"),
            ("key, then a long int", b"\x0a\x01k\x12\x03\x18\xc8\x01"),
            ("key, then a negative int", &negative),
            ("value, then key", b"\x12\x03\x0a\x01v\x0a\x01k"),
            ("key twice", b"\x0a\x01a\x0a\x01k\x12\x03\x0a\x01v"),
            ("value twice", b"\x0a\x01k\x12\x02\x18\x01\x12\x03\x0a\x01v"),
            ("string, then int", b"\x0a\x01k\x12\x05\x0a\x01v\x18\x07"),
            ("int, then string", b"\x0a\x01k\x12\x05\x18\x07\x0a\x01v"),
            ("key_strindex after", b"\x0a\x01k\x12\x03\x0a\x01v\x18\x02"),
            ("no value", b"\x0a\x01k"),
            ("a bool", b"\x0a\x01k\x12\x02\x10\x01"),
            ("a long string", &long),
            ("a length past the end", b"\x0a\x01k\x12\x04\x0a\x01v"),
            ("a string past its value", b"\x0a\x01k\x12\x03\x0a\x02v"),
            ("an int cut short", b"\x0a\x01k\x12\x02\x18\x80"),
            ("an int missing", b"\x0a\x01k\x12\x01\x18"),
            ("a key mid-character", b"\x0a\x01\x80\x12\x03\x0a\x01v"),
            ("a value mid-character", b"\x0a\x01k\x12\x03\x0a\x01\x80"),
        ];
        for (what, kv) in cases {
            let body = request_of_attribute(kv);
            match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(req) => {
                    let (block, _) = SpanBlock::decode(&body, true)
                        .unwrap_or_else(|e| panic!("{what}: prost reads it, we say {e}"));
                    let expected = without_profile_fields(req.resource_spans);
                    assert_eq!(block.to_prost(), expected, "{what}");
                }
                Err(_) => assert!(SpanBlock::decode(&body, true).is_err(), "{what}"),
            }
        }
    }

    #[test]
    fn repeated_keys_and_values_are_stored_once() {
        use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
        let span = |trace: Vec<u8>, attrs: &[(&str, V)]| PSpan {
            trace_id: trace,
            span_id: vec![2; 8],
            attributes: attrs
                .iter()
                .map(|(k, v)| KeyValue {
                    key: (*k).into(),
                    value: Some(AnyValue {
                        value: Some(v.clone()),
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let text = |t: &str| V::StringValue(t.into());
        let groups = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span(
                        vec![1; 16],
                        &[("http.route", text("/a")), ("user.id", text("u1"))],
                    ),
                    span(
                        vec![1; 16],
                        &[
                            ("http.route", text("/a")),
                            ("db.system", text("u1")),
                            ("user.id", text("u2")),
                        ],
                    ),
                    span(
                        vec![1; 15],
                        &[
                            ("http.route", text("/b")),
                            ("db.system", text("pg")),
                            ("peer", text("u2")),
                        ],
                    ),
                    span(
                        vec![1; 16],
                        &[
                            ("http.route", text("/c")),
                            ("db.system", V::IntValue(1)),
                            ("user.id", text("u2")),
                        ],
                    ),
                    span(
                        vec![1; 16],
                        &[
                            ("http.route", text("/c")),
                            ("db.system", text("u1")),
                            ("user.id", text("u2")),
                        ],
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }];
        let (block, rej) = SpanBlock::decode(&encode_prost(&groups), true).expect("decodes");
        assert_eq!(rej.count, 1);
        let attrs: Vec<Vec<Attr>> = block
            .spans
            .iter()
            .map(|s| block.attrs(s.attrs).to_vec())
            .collect();
        let str_of = |a: &Attr| match a.value() {
            Value::Str(s) => Some(s),
            _ => None,
        };
        assert_eq!(
            attrs[1][0], attrs[0][0],
            "same key and value, same place: shared"
        );
        assert_ne!(
            attrs[1][1].key(),
            attrs[0][1].key(),
            "another key at that place"
        );
        assert_eq!(
            str_of(&attrs[1][1]),
            str_of(&attrs[0][1]),
            "the same value under another key: shared"
        );
        assert_eq!(attrs[2][0].key(), attrs[1][0].key());
        assert_ne!(str_of(&attrs[2][0]), str_of(&attrs[1][0]), "another value");
        assert_eq!(
            attrs[2][1].key(),
            attrs[1][1].key(),
            "the refused span changes nothing"
        );
        assert_eq!(attrs[2][2], attrs[1][2]);
        assert_eq!(attrs[3][0], attrs[2][0]);
        assert_ne!(
            str_of(&attrs[3][1]),
            str_of(&attrs[1][1]),
            "after an integer at that place, a string is stored again"
        );
        // Every key and value reads back as sent.
        let mut expected = groups.clone();
        expected[0].scope_spans[0].spans.remove(2);
        assert_eq!(block.to_prost(), expected);
        let stored = [
            "http.route",
            "/a",
            "user.id",
            "u1",
            "db.system",
            "user.id",
            "u2",
            "/c",
            "u1",
        ];
        assert_eq!(block.text.len(), stored.concat().len());
    }

    #[test]
    fn cutting_and_attribute_changes_keep_every_span() {
        let mut g = Gen(77);
        for _ in 0..300 {
            let groups = without_empty_groups(g.request());
            let block = SpanBlock::from_prost(&groups);
            let n = block.len();
            let at = g.below(n as u64 + 1) as usize;
            let spans = |b: &SpanBlock| -> Vec<PSpan> {
                b.to_prost()
                    .into_iter()
                    .flat_map(|rs| rs.scope_spans)
                    .flat_map(|ss| ss.spans)
                    .collect()
            };
            let mut rest = block.clone();
            let front = rest.take_front(at);
            assert_eq!((front.len(), rest.len()), (at, n - at));
            let mut joined = spans(&front);
            joined.extend(spans(&rest));
            assert_eq!(joined, spans(&block), "every span once, in order");
            // Each part keeps its spans' resources and scopes.
            let origins =
                |b: &SpanBlock| -> Vec<(Option<PResource>, Option<InstrumentationScope>)> {
                    b.iter()
                        .map(|(r, s, _)| (b.prost_resource(r), b.prost_scope(s)))
                        .collect()
                };
            let mut joined = origins(&front);
            joined.extend(origins(&rest));
            assert_eq!(joined, origins(&block));
            if n > 0 {
                let mut b = block.clone();
                let key = b.push_str("added");
                b.set_span_attrs(
                    0,
                    |a| a.value() != Value::Absent,
                    &[Attr::new(key, Value::Int(1))],
                );
                let mut expected = spans(&block)[0].attributes.clone();
                expected.retain(|kv| kv.value.is_some());
                expected.push(KeyValue {
                    key: "added".into(),
                    value: Some(AnyValue {
                        value: Some(PValue::IntValue(1)),
                    }),
                    ..Default::default()
                });
                assert_eq!(spans(&b)[0].attributes, expected);
            }
        }
    }
}
