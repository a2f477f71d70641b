//! OTLP spans → Arrow rows of the `spans` schema.
//!
//! Builders are appended to straight from the OTLP structs: ids are hex-encoded through a
//! table into one reused buffer, attribute values are written as text into another, so the
//! conversion allocates per column, not per span.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, Int64Builder, ListArray, MapArray, MapBuilder,
    MapFieldNames, PrimitiveBuilder, RecordBatch, StringBuilder, StructArray,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, SchemaRef};
use arrow::error::ArrowError;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use spanlake_core::SpanBlock;
use spanlake_core::ids::{id_in, push_hex};
use spanlake_core::spans::{Resource as BResource, Rows, Scope, Span, Value as BValue};

use super::schema::{event_fields, kind_name, link_fields, span_schema, status_name};
use crate::attributes::text_of;

/// Hours since the epoch, the partition a row goes to.
pub type HourKey = i64;

pub const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// The partition of a span: the hour of its start, or of when it was received when it has no
/// start time.
pub fn span_hour(start_time_unix_nano: u64, ingest_ns: i64) -> HourKey {
    let start = clamp_nanos(start_time_unix_nano);
    let at = if start > 0 { start } else { ingest_ns };
    at.div_euclid(NANOS_PER_HOUR)
}

pub(crate) struct AttrMaps {
    values: MapBuilder<StringBuilder, StringBuilder>,
    types: MapBuilder<StringBuilder, StringBuilder>,
}

/// An attribute as stored: key, value as text (`None`: empty), type tag.
pub(crate) type Converted = (String, Option<String>, Option<&'static str>);

/// Convert attributes to their stored text once.
pub(crate) fn convert_all(kvs: &[KeyValue], text: &mut String) -> Vec<Converted> {
    kvs.iter()
        .map(|kv| {
            let tag = text_of(kv.value.as_ref().and_then(|v| v.value.as_ref()), text);
            let value = (tag != Some("empty")).then(|| text.clone());
            (kv.key.clone(), value, tag)
        })
        .collect()
}

/// The stored text of a block's attribute value and its type tag (`None`: a string).
pub(crate) fn block_value_text(b: &SpanBlock, v: BValue, out: &mut String) -> Option<&'static str> {
    match v {
        BValue::Str(s) => {
            out.clear();
            out.push_str(b.str(s));
            None
        }
        BValue::Absent | BValue::Empty => {
            out.clear();
            Some("empty")
        }
        // Integers (common: status codes, sizes, counts) without building an `AnyValue`.
        BValue::Int(i) => {
            out.clear();
            out.push_str(itoa::Buffer::new().format(i));
            Some("int")
        }
        _ => {
            let any = b.any_value(v);
            text_of(any.as_ref().and_then(|a| a.value.as_ref()), out)
        }
    }
}

/// Convert a block's attributes to their stored text once.
pub(crate) fn convert_block(b: &SpanBlock, rows: Rows, text: &mut String) -> Vec<Converted> {
    b.attrs(rows)
        .iter()
        .map(|a| {
            let tag = block_value_text(b, a.value(), text);
            let value = (tag != Some("empty")).then(|| text.clone());
            (b.str(a.key()).to_owned(), value, tag)
        })
        .collect()
}

/// Where rows come from: the service, resource and scope columns every table has, appended once
/// per row from attributes converted once per group.
pub(crate) struct Origin {
    service_name: StringBuilder,
    resource_attrs: AttrMaps,
    resource_dropped: Int64Builder,
    resource_schema_url: StringBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    scope_attrs: AttrMaps,
    scope_dropped: Int64Builder,
    scope_schema_url: StringBuilder,
    text: String,
}

/// A block's resources and scopes, converted once for every span of the block.
pub(crate) struct BlockOrigins<'a> {
    resources: Vec<GroupOrigin<'a>>,
    scopes: Vec<ScopeOrigin<'a>>,
}

/// One group's origin, converted once: the resource, then (per scope group) the scope.
pub(crate) struct GroupOrigin<'a> {
    pub service: Option<&'a str>,
    pub resource: Vec<Converted>,
    pub resource_dropped: u32,
    pub resource_schema_url: &'a str,
}

/// A scope group's part of the origin.
pub(crate) struct ScopeOrigin<'a> {
    /// Name, version and dropped attribute count, when the group has a scope.
    pub scope: Option<(&'a str, &'a str, u32)>,
    pub attributes: Vec<Converted>,
    pub schema_url: &'a str,
}

impl Origin {
    pub(crate) fn new() -> Self {
        Origin {
            service_name: StringBuilder::new(),
            resource_attrs: AttrMaps::new(),
            resource_dropped: Int64Builder::new(),
            resource_schema_url: StringBuilder::new(),
            scope_name: StringBuilder::new(),
            scope_version: StringBuilder::new(),
            scope_attrs: AttrMaps::new(),
            scope_dropped: Int64Builder::new(),
            scope_schema_url: StringBuilder::new(),
            text: String::new(),
        }
    }

    pub(crate) fn group<'a>(
        &mut self,
        resource: Option<&'a Resource>,
        schema_url: &'a str,
    ) -> GroupOrigin<'a> {
        let (attrs, dropped): (&[KeyValue], u32) = resource
            .map(|r| (r.attributes.as_slice(), r.dropped_attributes_count))
            .unwrap_or((&[], 0));
        GroupOrigin {
            service: service_of(attrs),
            resource: convert_all(attrs, &mut self.text),
            resource_dropped: dropped,
            resource_schema_url: schema_url,
        }
    }

    pub(crate) fn scope<'a>(
        &mut self,
        scope: Option<&'a InstrumentationScope>,
        schema_url: &'a str,
    ) -> ScopeOrigin<'a> {
        ScopeOrigin {
            scope: scope.map(|s| {
                (
                    s.name.as_str(),
                    s.version.as_str(),
                    s.dropped_attributes_count,
                )
            }),
            attributes: scope
                .map(|s| convert_all(&s.attributes, &mut self.text))
                .unwrap_or_default(),
            schema_url,
        }
    }

    /// A block's resource group, converted once.
    pub(crate) fn block_group<'a>(&mut self, b: &'a SpanBlock, r: &BResource) -> GroupOrigin<'a> {
        GroupOrigin {
            service: b.resource_str(r, "service.name"),
            resource: convert_block(b, r.attrs, &mut self.text),
            resource_dropped: r.dropped_attributes_count,
            resource_schema_url: b.str(r.schema_url),
        }
    }

    /// A block's scope group, converted once.
    pub(crate) fn block_scope<'a>(&mut self, b: &'a SpanBlock, s: &Scope) -> ScopeOrigin<'a> {
        ScopeOrigin {
            scope: s
                .present
                .then(|| (b.str(s.name), b.str(s.version), s.dropped_attributes_count)),
            attributes: convert_block(b, s.attrs, &mut self.text),
            schema_url: b.str(s.schema_url),
        }
    }

    /// The service name of one row (its column comes early in every table).
    pub(crate) fn append_service(&mut self, g: &GroupOrigin<'_>) {
        match g.service {
            Some(s) => self.service_name.append_value(s),
            None => self.service_name.append_null(),
        }
    }

    /// The resource and scope columns of one row.
    pub(crate) fn append(
        &mut self,
        g: &GroupOrigin<'_>,
        s: &ScopeOrigin<'_>,
    ) -> Result<(), ArrowError> {
        self.resource_attrs.append_converted(&g.resource)?;
        self.resource_dropped
            .append_value(g.resource_dropped as i64);
        self.scope_dropped
            .append_value(s.scope.map_or(0, |(_, _, dropped)| dropped as i64));
        opt_str(&mut self.resource_schema_url, g.resource_schema_url);
        match s.scope {
            Some((name, version, _)) => {
                opt_str(&mut self.scope_name, name);
                opt_str(&mut self.scope_version, version);
            }
            None => {
                self.scope_name.append_null();
                self.scope_version.append_null();
            }
        }
        self.scope_attrs.append_converted(&s.attributes)?;
        opt_str(&mut self.scope_schema_url, s.schema_url);
        Ok(())
    }

    pub(crate) fn finish_service(&mut self) -> ArrayRef {
        self.service_name.finish_keeping_room()
    }

    /// The columns of [`origin_fields`](super::schema::origin_fields), in order.
    pub(crate) fn finish(&mut self) -> Vec<ArrayRef> {
        let [ra, rat] = self.resource_attrs.finish();
        let [sa, sat] = self.scope_attrs.finish();
        vec![
            ra,
            rat,
            self.resource_dropped.finish_keeping_room(),
            self.resource_schema_url.finish_keeping_room(),
            self.scope_name.finish_keeping_room(),
            self.scope_version.finish_keeping_room(),
            sa,
            sat,
            self.scope_dropped.finish_keeping_room(),
            self.scope_schema_url.finish_keeping_room(),
        ]
    }
}

/// The `service.name` resource attribute, when it is a string.
pub fn service_of(attrs: &[KeyValue]) -> Option<&str> {
    attrs
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.as_str())
                }
                _ => None,
            },
        )
}

fn map_builder() -> MapBuilder<StringBuilder, StringBuilder> {
    map_builder_like(0, [(0, 0), (0, 0)])
}

/// A map builder with room for `rows` maps whose keys and values take `[keys, values]` as
/// (entries, bytes).
fn map_builder_like(
    rows: usize,
    [keys, values]: [(usize, usize); 2],
) -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::with_capacity(
        Some(names),
        StringBuilder::with_capacity(keys.0, keys.1),
        StringBuilder::with_capacity(values.0, values.1),
        rows,
    )
}

/// Builders are finished a chunk of rows at a time; each is left with the room its last chunk
/// took, so the next one fills it without growing it again and again from nothing (the
/// doublings copied ~2% of the collector's instructions at 10k spans/s).
pub(crate) trait FinishKeepingRoom {
    fn finish_keeping_room(&mut self) -> ArrayRef;
}

impl FinishKeepingRoom for StringBuilder {
    fn finish_keeping_room(&mut self) -> ArrayRef {
        let (n, bytes) = (self.len(), self.values_slice().len());
        let array = self.finish();
        *self = StringBuilder::with_capacity(n, bytes);
        Arc::new(array)
    }
}

impl<T: arrow::datatypes::ArrowPrimitiveType> FinishKeepingRoom for PrimitiveBuilder<T> {
    fn finish_keeping_room(&mut self) -> ArrayRef {
        let n = self.len();
        let array = self.finish();
        *self = PrimitiveBuilder::<T>::with_capacity(n).with_data_type(array.data_type().clone());
        Arc::new(array)
    }
}

fn map_room(m: &mut MapBuilder<StringBuilder, StringBuilder>) -> (usize, [(usize, usize); 2]) {
    let rows = m.len();
    let (k, v) = m.entries();
    (
        rows,
        [
            (k.len(), k.values_slice().len()),
            (v.len(), v.values_slice().len()),
        ],
    )
}

impl AttrMaps {
    pub(crate) fn new() -> Self {
        AttrMaps {
            values: map_builder(),
            types: map_builder(),
        }
    }

    pub(crate) fn append(&mut self, kvs: &[KeyValue], text: &mut String) -> Result<(), ArrowError> {
        for kv in kvs {
            let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
            self.values.keys().append_value(&kv.key);
            // Strings (most values) go straight in; the rest are written as text first.
            if let Some(Value::StringValue(s)) = value {
                self.values.values().append_value(s);
                continue;
            }
            let tag = text_of(value, text);
            match tag {
                Some("empty") => self.values.values().append_null(),
                _ => self.values.values().append_value(text.as_str()),
            }
            if let Some(tag) = tag {
                self.types.keys().append_value(&kv.key);
                self.types.values().append_value(tag);
            }
        }
        self.values.append(true)?;
        self.types.append(true)
    }

    /// Append one row of a block's attributes.
    pub(crate) fn append_block(
        &mut self,
        b: &SpanBlock,
        rows: Rows,
        text: &mut String,
    ) -> Result<(), ArrowError> {
        for a in b.attrs(rows) {
            let key = b.str(a.key());
            self.values.keys().append_value(key);
            // Strings (most values) go straight in; the rest are written as text first.
            if let BValue::Str(s) = a.value() {
                self.values.values().append_value(b.str(s));
                continue;
            }
            let tag = block_value_text(b, a.value(), text);
            match tag {
                Some("empty") => self.values.values().append_null(),
                _ => self.values.values().append_value(text.as_str()),
            }
            if let Some(tag) = tag {
                self.types.keys().append_value(key);
                self.types.values().append_value(tag);
            }
        }
        self.values.append(true)?;
        self.types.append(true)
    }

    /// Append one row of attributes already converted to text (a resource's or scope's,
    /// converted once per group instead of once per span).
    pub(crate) fn append_converted(&mut self, kvs: &[Converted]) -> Result<(), ArrowError> {
        for (key, text, tag) in kvs {
            self.values.keys().append_value(key);
            match text {
                None => self.values.values().append_null(),
                Some(t) => self.values.values().append_value(t),
            }
            if let Some(tag) = tag {
                self.types.keys().append_value(key);
                self.types.values().append_value(tag);
            }
        }
        self.values.append(true)?;
        self.types.append(true)
    }

    pub(crate) fn finish(&mut self) -> [ArrayRef; 2] {
        let (values, types) = (map_room(&mut self.values), map_room(&mut self.types));
        let arrays: [ArrayRef; 2] = [
            Arc::new(self.values.finish()),
            Arc::new(self.types.finish()),
        ];
        self.values = map_builder_like(values.0, values.1);
        self.types = map_builder_like(types.0, types.1);
        arrays
    }
}

pub(crate) fn opt_str(b: &mut StringBuilder, s: &str) {
    if s.is_empty() {
        b.append_null()
    } else {
        b.append_value(s)
    }
}

fn hex_into(b: &mut StringBuilder, scratch: &mut String, id: &[u8]) {
    if let Some(text) = id_in(id, &mut [0u8; 64]) {
        b.append_value(text);
        return;
    }
    // Not a native text id, and longer than `id_in` writes on the stack.
    scratch.clear();
    push_hex(scratch, id);
    b.append_value(scratch.as_str());
}

/// Ids are kept as lowercase hex when they are binary OTLP ids, as text when they were given as
/// text (native API).
pub(crate) fn id_into(b: &mut StringBuilder, scratch: &mut String, id: &[u8], nullable: bool) {
    if id.is_empty() && nullable {
        b.append_null();
    } else {
        hex_into(b, scratch, id);
    }
}

#[derive(Default)]
struct Events {
    offsets: Vec<i32>,
    time: Int64Builder,
    name: StringBuilder,
    attrs: Option<AttrMaps>,
    dropped: Int64Builder,
}

#[derive(Default)]
struct Links {
    offsets: Vec<i32>,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: Int64Builder,
    attrs: Option<AttrMaps>,
    dropped: Int64Builder,
}

/// Column builders for a run of spans.
pub struct SpanRows {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    flags: Int64Builder,
    name: StringBuilder,
    kind: StringBuilder,
    start: Int64Builder,
    end: Int64Builder,
    duration: Int64Builder,
    start_ts: TimestampMicrosecondBuilder,
    end_ts: TimestampMicrosecondBuilder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    attrs: AttrMaps,
    dropped_attrs: Int64Builder,
    events: Events,
    dropped_events: Int64Builder,
    links: Links,
    dropped_links: Int64Builder,
    origin: Origin,
    ingest: Int64Builder,
    text: String,
    ids: String,
}

impl Default for SpanRows {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanRows {
    pub fn new() -> Self {
        SpanRows {
            trace_id: StringBuilder::new(),
            span_id: StringBuilder::new(),
            parent_span_id: StringBuilder::new(),
            trace_state: StringBuilder::new(),
            flags: Int64Builder::new(),
            name: StringBuilder::new(),
            kind: StringBuilder::new(),
            start: Int64Builder::new(),
            end: Int64Builder::new(),
            duration: Int64Builder::new(),
            start_ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            end_ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            status_code: StringBuilder::new(),
            status_message: StringBuilder::new(),
            attrs: AttrMaps::new(),
            dropped_attrs: Int64Builder::new(),
            events: Events {
                offsets: vec![0],
                attrs: Some(AttrMaps::new()),
                ..Default::default()
            },
            dropped_events: Int64Builder::new(),
            links: Links {
                offsets: vec![0],
                attrs: Some(AttrMaps::new()),
                ..Default::default()
            },
            dropped_links: Int64Builder::new(),
            origin: Origin::new(),
            ingest: Int64Builder::new(),
            text: String::new(),
            ids: String::new(),
        }
    }

    /// Append every span of `blocks`, received at `ingest_ns`.
    pub fn append(&mut self, blocks: &[SpanBlock], ingest_ns: i64) -> Result<(), ArrowError> {
        for b in blocks {
            let origins = self.origins(b);
            for place in b.indices() {
                self.append_one(b, &origins, place, ingest_ns)?;
            }
        }
        Ok(())
    }

    /// The resource and scope columns of a block, converted once: by resource, by scope.
    pub(crate) fn origins<'a>(&mut self, b: &'a SpanBlock) -> BlockOrigins<'a> {
        BlockOrigins {
            resources: b
                .resources()
                .iter()
                .map(|r| self.origin.block_group(b, r))
                .collect(),
            scopes: b
                .scopes()
                .iter()
                .map(|s| self.origin.block_scope(b, s))
                .collect(),
        }
    }

    /// Append one span of a block: the span at `at`, of resource `resource` and scope `scope`.
    pub(crate) fn append_one(
        &mut self,
        b: &SpanBlock,
        origins: &BlockOrigins<'_>,
        (resource, scope, at): (usize, usize, usize),
        ingest_ns: i64,
    ) -> Result<(), ArrowError> {
        self.append_span(b, &b.spans()[at], ingest_ns)?;
        let group = &origins.resources[resource];
        self.origin.append_service(group);
        self.origin.append(group, &origins.scopes[scope])
    }

    fn append_span(
        &mut self,
        b: &SpanBlock,
        span: &Span,
        ingest_ns: i64,
    ) -> Result<(), ArrowError> {
        let ids = &mut self.ids;
        id_into(&mut self.trace_id, ids, b.raw(span.trace_id), false);
        id_into(&mut self.span_id, ids, b.raw(span.span_id), false);
        id_into(
            &mut self.parent_span_id,
            ids,
            b.raw(span.parent_span_id),
            true,
        );
        self.flags.append_value(span.flags as i64);
        opt_str(&mut self.trace_state, b.str(span.trace_state));
        self.name.append_value(b.str(span.name));
        match kind_name(span.kind) {
            Some(k) => self.kind.append_value(k),
            None => self.kind.append_value(span.kind.to_string()),
        }
        let start = clamp_nanos(span.start_time_unix_nano);
        self.start.append_value(start);
        self.start_ts.append_value(start / 1000);
        if span.end_time_unix_nano == 0 {
            self.end.append_null();
            self.end_ts.append_null();
            self.duration.append_null();
        } else {
            let end = clamp_nanos(span.end_time_unix_nano);
            self.end.append_value(end);
            self.end_ts.append_value(end / 1000);
            self.duration.append_value(end.saturating_sub(start));
        }
        let (code, message) = span
            .status
            .map(|s| (s.code, b.str(s.message)))
            .unwrap_or((0, ""));
        match status_name(code) {
            Some(c) => self.status_code.append_value(c),
            None => self.status_code.append_value(code.to_string()),
        }
        opt_str(&mut self.status_message, message);
        self.attrs.append_block(b, span.attrs, &mut self.text)?;
        self.dropped_attrs
            .append_value(span.dropped_attributes_count as i64);
        self.dropped_events
            .append_value(span.dropped_events_count as i64);
        self.dropped_links
            .append_value(span.dropped_links_count as i64);
        self.append_nested(b, span)?;
        self.ingest.append_value(ingest_ns);
        Ok(())
    }

    /// Append a span's events and links (the columns [`SpanRows::for_seal`] keeps).
    pub(crate) fn append_nested(&mut self, b: &SpanBlock, span: &Span) -> Result<(), ArrowError> {
        let ev = &mut self.events;
        let ev_attrs = ev.attrs.as_mut().expect("event attribute builders");
        for e in &b.events()[span.events.range()] {
            ev.time.append_value(clamp_nanos(e.time_unix_nano));
            ev.name.append_value(b.str(e.name));
            ev_attrs.append_block(b, e.attrs, &mut self.text)?;
            ev.dropped.append_value(e.dropped_attributes_count as i64);
        }
        let last = *ev.offsets.last().expect("offsets start at 0");
        ev.offsets.push(last + span.events.len() as i32);

        let ln = &mut self.links;
        let ln_attrs = ln.attrs.as_mut().expect("link attribute builders");
        for l in &b.links()[span.links.range()] {
            hex_into(&mut ln.trace_id, &mut self.ids, b.raw(l.trace_id));
            hex_into(&mut ln.span_id, &mut self.ids, b.raw(l.span_id));
            opt_str(&mut ln.trace_state, b.str(l.trace_state));
            ln.flags.append_value(l.flags as i64);
            ln_attrs.append_block(b, l.attrs, &mut self.text)?;
            ln.dropped.append_value(l.dropped_attributes_count as i64);
        }
        let last = *ln.offsets.last().expect("offsets start at 0");
        ln.offsets.push(last + span.links.len() as i32);

        Ok(())
    }

    /// The rows as a record batch of [`span_schema`]; the builders are left empty for reuse.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let [events, links] = self.finish_nested()?;
        let [a, at] = self.attrs.finish();
        let mut columns: Vec<ArrayRef> = vec![
            self.trace_id.finish_keeping_room(),
            self.span_id.finish_keeping_room(),
            self.parent_span_id.finish_keeping_room(),
            self.trace_state.finish_keeping_room(),
            self.flags.finish_keeping_room(),
            self.name.finish_keeping_room(),
            self.kind.finish_keeping_room(),
            self.start.finish_keeping_room(),
            self.end.finish_keeping_room(),
            self.duration.finish_keeping_room(),
            self.start_ts.finish_keeping_room(),
            self.end_ts.finish_keeping_room(),
            self.status_code.finish_keeping_room(),
            self.status_message.finish_keeping_room(),
            self.origin.finish_service(),
            a,
            at,
            self.dropped_attrs.finish_keeping_room(),
            events,
            self.dropped_events.finish_keeping_room(),
            links,
            self.dropped_links.finish_keeping_room(),
        ];
        columns.extend(self.origin.finish());
        columns.push(self.ingest.finish_keeping_room());
        aligned_batch(span_schema(), columns)
    }

    /// The `events` and `links` columns of the rows appended by [`SpanRows::append_nested`]
    /// (the seal encodes the others itself: `own.rs`); their builders are left empty for
    /// reuse.
    pub(crate) fn finish_nested(&mut self) -> Result<[ArrayRef; 2], ArrowError> {
        let events = {
            let e = &mut self.events;
            let [ea, eat] = e.attrs.as_mut().expect("builders").finish();
            let fields = event_fields();
            let values = StructArray::try_new(
                fields.clone(),
                vec![
                    e.time.finish_keeping_room(),
                    e.name.finish_keeping_room(),
                    ea,
                    eat,
                    e.dropped.finish_keeping_room(),
                ],
                None,
            )?;
            let offsets = OffsetBuffer::new(std::mem::replace(&mut e.offsets, vec![0]).into());
            let field = Arc::new(Field::new(
                "element",
                arrow::datatypes::DataType::Struct(fields),
                false,
            ));
            Arc::new(ListArray::try_new(field, offsets, Arc::new(values), None)?) as ArrayRef
        };
        let links = {
            let l = &mut self.links;
            let [la, lat] = l.attrs.as_mut().expect("builders").finish();
            let fields = link_fields();
            let values = StructArray::try_new(
                fields.clone(),
                vec![
                    l.trace_id.finish_keeping_room(),
                    l.span_id.finish_keeping_room(),
                    l.trace_state.finish_keeping_room(),
                    l.flags.finish_keeping_room(),
                    la,
                    lat,
                    l.dropped.finish_keeping_room(),
                ],
                None,
            )?;
            let offsets = OffsetBuffer::new(std::mem::replace(&mut l.offsets, vec![0]).into());
            let field = Arc::new(Field::new(
                "element",
                arrow::datatypes::DataType::Struct(fields),
                false,
            ));
            Arc::new(ListArray::try_new(field, offsets, Arc::new(values), None)?) as ArrayRef
        };
        Ok([events, links])
    }
}

/// A record batch of `schema` whose nested columns (maps, lists, structs, at every depth) carry
/// the schema's own field objects rather than equal copies.
///
/// Arrow compares data types whenever arrays meet (`RecordBatch::try_new`, `interleave`,
/// `concat`); two copies of a map or list type are compared field by field and name by name,
/// but two references to the same field are equal at once. Sorting a row group interleaves
/// every buffered batch, column by column, at every depth: with 100-span batches these
/// comparisons took ~15% of the collector's CPU.
pub fn aligned_batch(schema: SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch, ArrowError> {
    let columns = columns
        .into_iter()
        .zip(schema.fields().iter())
        .map(|(c, f)| aligned(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}

/// `array` rebuilt (sharing its buffers) with the fields of `ty`.
fn aligned(array: ArrayRef, ty: &DataType) -> Result<ArrayRef, ArrowError> {
    Ok(match ty {
        DataType::Map(field, ordered) => {
            let (_, offsets, entries, nulls, _) = array.as_map().clone().into_parts();
            let entries = aligned(Arc::new(entries), field.data_type())?;
            Arc::new(MapArray::try_new(
                Arc::clone(field),
                offsets,
                entries.as_struct().clone(),
                nulls,
                *ordered,
            )?)
        }
        DataType::List(field) => {
            let (_, offsets, values, nulls) = array.as_list::<i32>().clone().into_parts();
            let values = aligned(values, field.data_type())?;
            Arc::new(ListArray::try_new(
                Arc::clone(field),
                offsets,
                values,
                nulls,
            )?)
        }
        DataType::Struct(fields) => {
            let (_, columns, nulls) = array.as_struct().clone().into_parts();
            let columns = columns
                .into_iter()
                .zip(fields.iter())
                .map(|(c, f)| aligned(c, f.data_type()))
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(StructArray::try_new(fields.clone(), columns, nulls)?)
        }
        _ => array,
    })
}

/// OTLP times are unsigned; past year 2262 they do not fit the INT64 columns and are clamped.
pub(crate) fn clamp_nanos(t: u64) -> i64 {
    t.min(i64::MAX as u64) as i64
}

/// `(YYYY-MM-DD, HH)` of an hour key, in UTC.
pub fn partition_of(hour: HourKey) -> (String, String) {
    let days = hour.div_euclid(24);
    let h = hour.rem_euclid(24);
    let (y, m, d) = civil_from_days(days);
    (format!("{y:04}-{m:02}-{d:02}"), format!("{h:02}"))
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished builder hands over exactly what was appended and is left empty, with the
    /// room the finished rows took (types, timezone and all).
    #[test]
    fn finished_builders_keep_their_room_and_nothing_else() {
        let mut s = StringBuilder::new();
        for v in ["alpha", "", "gamma"] {
            s.append_value(v);
        }
        s.append_null();
        let a = s.finish_keeping_room();
        assert_eq!(a.len(), 4);
        assert_eq!(a.null_count(), 1);
        assert_eq!(a.as_string::<i32>().value(2), "gamma");
        assert_eq!(s.len(), 0);
        assert!(s.values_capacity() >= 10 && s.offsets_capacity() >= 5);
        s.append_value("next");
        assert_eq!(s.finish_keeping_room().as_string::<i32>().value(0), "next");

        let mut t = TimestampMicrosecondBuilder::new().with_timezone("UTC");
        t.append_value(7);
        let first = t.finish_keeping_room();
        t.append_value(8);
        let second = t.finish_keeping_room();
        assert_eq!(second.data_type(), first.data_type());
        assert_eq!(second.data_type(), &crate::parquet::schema::ts());
        assert!(t.capacity() >= 1);
    }

    #[test]
    fn partitions_are_utc_dates_and_hours() {
        assert_eq!(partition_of(0), ("1970-01-01".into(), "00".into()));
        // 2024-02-29T23:xx
        let t = 1_709_250_000_i64 * 1_000_000_000; // 2024-02-29T23:40:00Z
        assert_eq!(
            partition_of(t / NANOS_PER_HOUR),
            ("2024-02-29".into(), "23".into())
        );
        let t = 1_767_225_600_i64 * 1_000_000_000; // 2026-01-01T00:00:00Z
        assert_eq!(
            partition_of(t / NANOS_PER_HOUR),
            ("2026-01-01".into(), "00".into())
        );
    }

    #[test]
    fn attribute_values_are_stored_as_the_text_users_query() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let values = [
            Value::IntValue(0),
            Value::IntValue(-1),
            Value::IntValue(200),
            Value::IntValue(i64::MIN),
            Value::IntValue(i64::MAX),
            Value::BoolValue(true),
            Value::DoubleValue(0.25),
            Value::StringValue("GET".into()),
        ];
        let attributes: Vec<KeyValue> = values
            .iter()
            .enumerate()
            .map(|(i, v)| KeyValue {
                key: format!("k{i}"),
                value: Some(AnyValue {
                    value: Some(v.clone()),
                }),
                ..Default::default()
            })
            .collect();
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "a".into(),
            start_time_unix_nano: 5,
            attributes,
            ..Default::default()
        };
        let mut rows = SpanRows::new();
        let block = SpanBlock::from_prost(&[ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }]);
        rows.append(&[block], 7).expect("append");
        let batch = rows.finish().expect("finish");
        let map_of = |name: &str| -> Vec<(String, String)> {
            let map = batch.column_by_name(name).expect(name).as_map();
            let keys = map.keys().as_string::<i32>();
            let vals = map.values().as_string::<i32>();
            (0..arrow::array::Array::len(keys))
                .map(|i| (keys.value(i).to_string(), vals.value(i).to_string()))
                .collect()
        };
        // Each value as the generic conversion (`text_of`) writes it, with its type beside.
        let mut text = String::new();
        let mut want = Vec::new();
        let mut want_types = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let tag = text_of(Some(v), &mut text);
            want.push((format!("k{i}"), text.clone()));
            if let Some(tag) = tag {
                want_types.push((format!("k{i}"), tag.to_string()));
            }
        }
        assert_eq!(map_of("attributes"), want);
        assert_eq!(map_of("attribute_types"), want_types);
        let ints: Vec<&str> = want[..5].iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            ints,
            [
                "0",
                "-1",
                "200",
                "-9223372036854775808",
                "9223372036854775807"
            ]
        );
    }

    #[test]
    fn rows_match_the_schema() {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "a".into(),
            start_time_unix_nano: 5,
            ..Default::default()
        };
        let mut rows = SpanRows::new();
        rows.append(
            &[SpanBlock::from_prost(&[ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![span.clone(), span],
                    ..Default::default()
                }],
                ..Default::default()
            }])],
            7,
        )
        .expect("append");
        let batch = rows.finish().expect("finish");
        assert_eq!(batch.num_rows(), 2);
        // Both rows (started at 5 ns, received at 7) go to hour 0.
        assert_eq!(span_hour(5, 7), 0);
        assert_eq!(
            span_hour(0, 7 * NANOS_PER_HOUR + 1),
            7,
            "no start: the hour received"
        );
        // builders are reusable
        let empty = rows.finish().expect("finish empty");
        assert_eq!(empty.num_rows(), 0);

        // Nested columns carry the schema's own fields (compared by pointer), at every depth.
        let schema = span_schema();
        for (column, field) in batch.columns().iter().zip(schema.fields().iter()) {
            match (column.data_type(), field.data_type()) {
                (DataType::Map(a, _), DataType::Map(b, _)) => {
                    assert!(Arc::ptr_eq(a, b), "{}", field.name());
                    let entries = column.as_map().entries();
                    let DataType::Struct(want) = b.data_type() else {
                        panic!("map entries are a struct")
                    };
                    assert!(
                        Arc::ptr_eq(&entries.fields()[0], &want[0]),
                        "{}",
                        field.name()
                    );
                }
                (DataType::List(a, ..), DataType::List(b, ..)) => {
                    assert!(Arc::ptr_eq(a, b), "{}", field.name());
                    let element = column.as_list::<i32>().values().as_struct();
                    let DataType::Struct(want) = b.data_type() else {
                        panic!("list elements are structs")
                    };
                    for (inner, want) in element.columns().iter().zip(want.iter()) {
                        if let (DataType::Map(x, _), DataType::Map(y, _)) =
                            (inner.data_type(), want.data_type())
                        {
                            assert!(Arc::ptr_eq(x, y), "{}.{}", field.name(), want.name());
                        }
                    }
                }
                _ => {}
            }
        }
    }
}
