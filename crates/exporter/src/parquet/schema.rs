//! The columns of the `spans` table. `docs/schema.md` documents them for users; keep both in step.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Bumped when a column changes meaning; written in each file's key-value metadata.
pub const SCHEMA_VERSION: &str = "1";

/// `map<string, string>` with the Parquet MAP field names.
pub fn map_type() -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("key_value", DataType::Struct(entries), false)),
        false,
    )
}

fn attrs(prefix: &str) -> [Field; 2] {
    [
        Field::new(format!("{prefix}attributes"), map_type(), false),
        Field::new(format!("{prefix}attribute_types"), map_type(), false),
    ]
}

pub fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

pub fn event_fields() -> Fields {
    let [a, t] = attrs("");
    Fields::from(vec![
        Field::new("time_unix_nano", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        a,
        t,
        Field::new("dropped_attributes_count", DataType::Int64, false),
    ])
}

pub fn link_fields() -> Fields {
    let [a, t] = attrs("");
    Fields::from(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("flags", DataType::Int64, false),
        a,
        t,
        Field::new("dropped_attributes_count", DataType::Int64, false),
    ])
}

pub fn list_of(fields: Fields) -> DataType {
    DataType::List(Arc::new(Field::new(
        "element",
        DataType::Struct(fields),
        false,
    )))
}

/// The resource and scope columns every table ends with (before `ingest_time_unix_nano`), in
/// this order.
pub fn origin_fields() -> Vec<Field> {
    let [ra, rat] = attrs("resource_");
    let [sa, sat] = attrs("scope_");
    vec![
        ra,
        rat,
        Field::new("resource_dropped_attributes_count", DataType::Int64, false),
        Field::new("resource_schema_url", DataType::Utf8, true),
        Field::new("scope_name", DataType::Utf8, true),
        Field::new("scope_version", DataType::Utf8, true),
        sa,
        sat,
        Field::new("scope_dropped_attributes_count", DataType::Int64, false),
        Field::new("scope_schema_url", DataType::Utf8, true),
    ]
}

/// The columns a table's own attributes take: `attributes` and `attribute_types`.
pub fn attribute_fields() -> [Field; 2] {
    attrs("")
}

/// The schema of every spans file.
pub fn span_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let [a, at] = attrs("");
            let mut fields = vec![
                Field::new("trace_id", DataType::Utf8, false),
                Field::new("span_id", DataType::Utf8, false),
                Field::new("parent_span_id", DataType::Utf8, true),
                Field::new("trace_state", DataType::Utf8, true),
                Field::new("flags", DataType::Int64, false),
                Field::new("name", DataType::Utf8, false),
                Field::new("kind", DataType::Utf8, false),
                Field::new("start_time_unix_nano", DataType::Int64, false),
                Field::new("end_time_unix_nano", DataType::Int64, true),
                Field::new("duration_ns", DataType::Int64, true),
                Field::new("start_time", ts(), false),
                Field::new("end_time", ts(), true),
                Field::new("status_code", DataType::Utf8, false),
                Field::new("status_message", DataType::Utf8, true),
                Field::new("service_name", DataType::Utf8, true),
                a,
                at,
                Field::new("dropped_attributes_count", DataType::Int64, false),
                Field::new("events", list_of(event_fields()), false),
                Field::new("dropped_events_count", DataType::Int64, false),
                Field::new("links", list_of(link_fields()), false),
                Field::new("dropped_links_count", DataType::Int64, false),
            ];
            fields.extend(origin_fields());
            fields.push(Field::new("ingest_time_unix_nano", DataType::Int64, false));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// OTLP span kind as stored: `SPAN_KIND_SERVER` → `SERVER`.
pub fn kind_name(kind: i32) -> Option<&'static str> {
    Some(match kind {
        0 => "UNSPECIFIED",
        1 => "INTERNAL",
        2 => "SERVER",
        3 => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        _ => return None,
    })
}

/// OTLP status code as stored: `STATUS_CODE_ERROR` → `ERROR`.
pub fn status_name(code: i32) -> Option<&'static str> {
    Some(match code {
        0 => "UNSET",
        1 => "OK",
        2 => "ERROR",
        _ => return None,
    })
}

/// The tables of a lake, each in its own directory under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Spans,
    Logs,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Spans, Table::Logs];

    /// Directory under the lake's root, and the table's name in SQL (`spans_raw`, `logs_raw`).
    pub fn dir(self) -> &'static str {
        match self {
            Table::Spans => "spans",
            Table::Logs => "logs",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Spans => span_schema(),
            Table::Logs => super::logs::log_schema(),
        }
    }

    /// Files are sorted by these columns: trace id, then time.
    pub fn sort_columns(self) -> [usize; 2] {
        match self {
            Table::Spans => [0, 7],
            Table::Logs => [0, super::logs::TIME_COLUMN],
        }
    }
}
