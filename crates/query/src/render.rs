//! Results for people and scripts: tables, CSV, JSON, and the trace waterfall.

use std::fmt::Write as _;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::QueryError;
use crate::events::{StoredEvent, TraceInfo};
use crate::rows::StoredSpan;
use crate::tree::tree_order;

/// An aligned text table.
pub fn table(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, QueryError> {
    if batches.is_empty() {
        let empty = RecordBatch::new_empty(schema.clone());
        return Ok(arrow::util::pretty::pretty_format_batches(&[empty])?.to_string());
    }
    Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string())
}

fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// CSV with a header row; nested values (maps, lists) in their display form.
pub fn csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<String, QueryError> {
    let mut out = String::new();
    for (i, f) in schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_field(&mut out, f.name());
    }
    out.push('\n');
    let opts = FormatOptions::default().with_null("");
    for b in batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..b.num_rows() {
            for (i, f) in fmts.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                csv_field(&mut out, &f.value(row).to_string());
            }
            out.push('\n');
        }
    }
    Ok(out)
}

/// A JSON array of row objects; maps become objects, lists arrays.
pub fn json(batches: &[RecordBatch]) -> Result<String, QueryError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    if buf.is_empty() {
        return Ok("[]".into());
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn human(ns: u64) -> String {
    match ns {
        n if n >= 60_000_000_000 => format!("{:.1} min", n as f64 / 60e9),
        n if n >= 1_000_000_000 => format!("{:.2} s", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1} µs", n as f64 / 1e3),
        n => format!("{n} ns"),
    }
}

/// The trace as an indented waterfall: name, service, duration, status, and a bar on the
/// trace's time axis. Errors are marked with `✗` (and red when `color`).
///
/// The trace's metadata (`StartTrace`, `EndTrace`) heads it; events of a span are listed under
/// their span (those sent inside the span and those recorded for it), and trace-level events
/// follow the spans, in time order, each with its offset from the trace's start.
pub fn waterfall(
    trace_id: &str,
    spans: &[StoredSpan],
    events: &[StoredEvent],
    info: Option<&TraceInfo>,
    color: bool,
) -> String {
    let mut out = String::new();
    if spans.is_empty() && events.is_empty() && info.is_none() {
        return out;
    }
    let info_start = info
        .and_then(|i| i.start_time_unix_nano)
        .map(|t| t.max(0) as u64);
    let t0 = spans
        .iter()
        .map(|s| s.span.start_time_unix_nano)
        .chain(events.iter().map(|e| e.time_unix_nano.max(0) as u64))
        .chain(info_start)
        .min()
        .unwrap_or(0);
    let t1 = spans
        .iter()
        .map(|s| s.span.end_time_unix_nano.max(s.span.start_time_unix_nano))
        .chain(events.iter().map(|e| e.time_unix_nano.max(0) as u64))
        .chain(
            info.and_then(|i| i.end_time_unix_nano)
                .map(|t| t.max(0) as u64),
        )
        .max()
        .unwrap_or(t0)
        .max(t0);
    let total = (t1 - t0).max(1);
    let errors = spans.iter().filter(|s| s.status_code() == 2).count();
    let running = spans.iter().filter(|s| s.is_running()).count();
    let _ = write!(
        out,
        "trace {trace_id}: {} span(s), {}",
        spans.len(),
        human(t1 - t0)
    );
    if errors > 0 {
        let _ = write!(out, ", {errors} error(s)");
    }
    if running > 0 {
        let _ = write!(out, ", {running} running");
    }
    if !events.is_empty() {
        let _ = write!(out, ", {} event(s)", events.len());
    }
    out.push('\n');
    // Metadata of a trace opened with StartTrace (a trace of spans alone has none to show).
    if let Some(i) = info.filter(|i| {
        [&i.project_id, &i.request_id, &i.tags, &i.input, &i.context]
            .iter()
            .any(|v| v.is_some())
    }) {
        let mut meta = Vec::new();
        for (label, v) in [
            ("project", &i.project_id),
            ("request", &i.request_id),
            ("tags", &i.tags),
            ("status", &i.status_code),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                meta.push(format!("{label} {v}"));
            }
        }
        if let Some(m) = i.status_message.as_deref().filter(|m| !m.is_empty()) {
            meta.push(format!("({m})"));
        }
        if !meta.is_empty() {
            let _ = writeln!(out, "  {}", meta.join(" · "));
        }
        for (label, v) in [("input", &i.input), ("context", &i.context)] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                let _ = writeln!(out, "  {label}: {}", truncate(v, 160));
            }
        }
    }
    let event_line = |out: &mut String, indent: usize, e: &StoredEvent| {
        let offset = human((e.time_unix_nano.max(0) as u64).saturating_sub(t0));
        let mut line = format!(
            "{}• +{offset:<8} {:<5} {}",
            " ".repeat(indent),
            e.level(),
            e.name
        );
        let attrs = attributes_text(&e.attributes);
        if !attrs.is_empty() {
            line.push_str("  ");
            line.push_str(&attrs);
        }
        let _ = writeln!(out, "{}", truncate(&line, 200));
    };
    let order = tree_order(spans);
    let name_w = order
        .iter()
        .map(|n| {
            n.depth * 2 + spans[n.index].span.name.chars().count() + if n.orphan { 2 } else { 0 }
        })
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    let svc_w = spans
        .iter()
        .map(|s| s.service_name.as_deref().unwrap_or("-").chars().count())
        .max()
        .unwrap_or(7)
        .clamp(7, 24);
    const BAR: usize = 40;
    let _ = writeln!(
        out,
        "{:<name_w$}  {:<svc_w$}  {:>10}  {:<9}  timeline",
        "span", "service", "duration", "status"
    );
    for n in &order {
        let s = &spans[n.index];
        let start = s.span.start_time_unix_nano;
        let end = if s.is_running() {
            t1
        } else {
            s.span.end_time_unix_nano.max(start)
        };
        let a = ((start - t0) as u128 * BAR as u128 / total as u128) as usize;
        let b =
            (((end - t0) as u128 * BAR as u128).div_ceil(total as u128) as usize).clamp(a + 1, BAR);
        let a = a.min(BAR - 1);
        let fill = if s.is_running() { '░' } else { '█' };
        let bar: String = (0..BAR)
            .map(|i| if i >= a && i < b { fill } else { ' ' })
            .collect();
        let mut name = format!("{}{}", "  ".repeat(n.depth), s.span.name);
        if n.orphan {
            name.push_str(" ⤴");
        }
        let dur = if s.is_running() {
            "running".to_string()
        } else {
            human(end - start)
        };
        let (status, is_err) = match s.status_code() {
            2 => ("ERROR ✗", true),
            1 => ("OK", false),
            _ => ("", false),
        };
        let line = format!(
            "{:<name_w$}  {:<svc_w$}  {:>10}  {:<9}  |{bar}|",
            truncate(&name, name_w),
            truncate(s.service_name.as_deref().unwrap_or("-"), svc_w),
            dur,
            status
        );
        if is_err && color {
            let _ = writeln!(out, "\x1b[31m{line}\x1b[0m");
        } else {
            out.push_str(&line);
            out.push('\n');
        }
        if is_err
            && let Some(msg) = s
                .span
                .status
                .as_ref()
                .map(|st| st.message.as_str())
                .filter(|m| !m.is_empty())
        {
            let _ = writeln!(out, "{:<name_w$}  ✗ {msg}", "");
        }
        // The span's events: sent with the span, and recorded for it, by time.
        let mut own: Vec<StoredEvent> = s
            .span
            .events
            .iter()
            .map(|e| StoredEvent {
                span_id: Some(s.span_id.clone()),
                time_unix_nano: e.time_unix_nano.min(i64::MAX as u64) as i64,
                severity_text: None,
                severity_number: 0,
                name: e.name.clone(),
                body: None,
                attributes: e.attributes.clone(),
            })
            .collect();
        own.extend(
            events
                .iter()
                .filter(|e| e.span_id.as_deref() == Some(s.span_id.as_str()))
                .cloned(),
        );
        own.sort_by_key(|e| e.time_unix_nano);
        for e in &own {
            event_line(&mut out, n.depth * 2 + 2, e);
        }
    }
    let known: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let trace_level: Vec<&StoredEvent> = events
        .iter()
        .filter(|e| e.span_id.as_deref().is_none_or(|id| !known.contains(id)))
        .collect();
    if !trace_level.is_empty() {
        out.push_str("trace events:\n");
        for e in trace_level {
            event_line(&mut out, 2, e);
        }
    }
    if order.iter().any(|n| n.orphan) {
        out.push_str("⤴ parent not in this trace\n");
    }
    out
}

/// `k=v k2=v2`, values as text.
fn attributes_text(attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> String {
    let mut text = String::new();
    attrs
        .iter()
        .map(|a| {
            spanlake_exporter::attributes::text_of(
                a.value.as_ref().and_then(|v| v.value.as_ref()),
                &mut text,
            );
            format!("{}={}", a.key, text)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn truncate(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
