//! The lifecycle processor: no span stays open forever.
//!
//! A span with no end time is running. Running spans pass through (queries show them as
//! running) and are also held here, per trace. A running span is closed — a closed copy is sent
//! on, which queries prefer over the running one — when:
//!
//! - its trace ends: the native API's `EndTrace`, or the trace's root span arriving ended
//!   (reason `trace_end`, status derived from the trace's);
//! - its parent ends, with `close_children_on_parent_end` (reason `parent_end`);
//! - its trace has been idle for `trace_timeout` (reason `timeout`);
//! - the bounds are reached and its trace is the least recently active (reason `evicted`);
//! - the collector shuts down (reason `shutdown`).
//!
//! A closed copy ends at the trace's (or parent's) end time, never before its own start, and is
//! marked `spanlake.auto_closed = true`, `spanlake.auto_close_reason = <reason>`. A span whose
//! real end arrives later simply passes through and supersedes the closed copy in queries; a
//! span arriving for a trace that already ended is stored as is, and opens the trace again (a
//! trace can be continued). Nothing is dropped.

mod config;

pub use config::LifecycleConfig;

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use spanlake_core::{
    Batch, CancellationToken, Fanout, Processor, Receiver, Signal, SpanBlock, TraceEnd,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    TraceEnd,
    ParentEnd,
    Timeout,
    Shutdown,
    Evicted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TraceEnd => "trace_end",
            Reason::ParentEnd => "parent_end",
            Reason::Timeout => "timeout",
            Reason::Shutdown => "shutdown",
            Reason::Evicted => "evicted",
        }
    }
}

/// A running span with what it came with.
struct Held {
    span: Span,
    resource: Option<Resource>,
    resource_schema_url: String,
    scope: Option<InstrumentationScope>,
    scope_schema_url: String,
}

struct TraceState {
    /// Running spans by span id.
    running: HashMap<Vec<u8>, Held>,
    last_seen: Instant,
    /// Latest end time seen in the trace: the end of an idle or evicted trace.
    latest_end: u64,
}

/// The state of every trace with running spans.
pub struct Lifecycle {
    config: LifecycleConfig,
    traces: HashMap<Vec<u8>, TraceState>,
    running: usize,
}

/// The status of a span closed because `what` ("trace", a parent span) ended with `status`:
/// `ERROR` → `ERROR` naming the error, `OK` → `OK`, anything else `UNSET`.
pub fn derived_status(status: Option<&Status>, what: &str) -> Status {
    match status.map(|s| s.code).unwrap_or(0) {
        2 => {
            let msg = status.map(|s| s.message.as_str()).unwrap_or("");
            Status {
                code: 2,
                message: if msg.is_empty() {
                    format!("{what} ended with an error")
                } else {
                    format!("{what} ended with an error: {msg}")
                },
            }
        }
        1 => Status {
            code: 1,
            message: String::new(),
        },
        _ => Status::default(),
    }
}

fn marker(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Turn a running span into its closed copy: ended at `end` (never before its start), with
/// `status`, marked `spanlake.auto_closed = true` and `spanlake.auto_close_reason`.
pub fn mark_closed(span: &mut Span, end: u64, status: Status, reason: Reason) {
    span.end_time_unix_nano = end.max(span.start_time_unix_nano);
    span.status = Some(status);
    span.attributes
        .retain(|a| a.key != "spanlake.auto_closed" && a.key != "spanlake.auto_close_reason");
    span.attributes
        .push(marker("spanlake.auto_closed", Value::BoolValue(true)));
    span.attributes.push(marker(
        "spanlake.auto_close_reason",
        Value::StringValue(reason.as_str().into()),
    ));
}

impl Lifecycle {
    pub fn new(config: LifecycleConfig) -> Self {
        Lifecycle {
            config,
            traces: HashMap::new(),
            running: 0,
        }
    }

    /// Running spans held.
    pub fn running(&self) -> usize {
        self.running
    }

    pub fn traces(&self) -> usize {
        self.traces.len()
    }

    fn close(held: Held, end: u64, status: Status, reason: Reason, out: &mut Vec<ResourceSpans>) {
        let mut span = held.span;
        mark_closed(&mut span, end, status, reason);
        // Group with the previous closed span when they share resource and scope.
        if let Some(last) = out.last_mut()
            && last.resource == held.resource
            && last.schema_url == held.resource_schema_url
        {
            if let Some(ss) = last.scope_spans.last_mut()
                && ss.scope == held.scope
                && ss.schema_url == held.scope_schema_url
            {
                ss.spans.push(span);
                return;
            }
            last.scope_spans.push(ScopeSpans {
                scope: held.scope,
                spans: vec![span],
                schema_url: held.scope_schema_url,
            });
            return;
        }
        out.push(ResourceSpans {
            resource: held.resource,
            scope_spans: vec![ScopeSpans {
                scope: held.scope,
                spans: vec![span],
                schema_url: held.scope_schema_url,
            }],
            schema_url: held.resource_schema_url,
        });
    }

    /// End a whole trace: close every running span it holds.
    fn end_trace(
        &mut self,
        trace_id: &[u8],
        end: u64,
        status: Status,
        reason: Reason,
        out: &mut Vec<ResourceSpans>,
    ) -> usize {
        let Some(state) = self.traces.remove(trace_id) else {
            return 0;
        };
        let n = state.running.len();
        self.running -= n;
        let mut held: Vec<Held> = state.running.into_values().collect();
        held.sort_by_key(|h| (h.span.start_time_unix_nano, h.span.span_id.clone()));
        for h in held {
            Self::close(h, end, status.clone(), reason, out);
        }
        n
    }

    /// Close the running descendants of `parent` in its trace.
    fn close_descendants(
        &mut self,
        trace_id: &[u8],
        parent: &[u8],
        end: u64,
        status: &Status,
        out: &mut Vec<ResourceSpans>,
    ) {
        let Some(state) = self.traces.get_mut(trace_id) else {
            return;
        };
        let mut frontier = vec![parent.to_vec()];
        let mut closed = Vec::new();
        while let Some(p) = frontier.pop() {
            let children: Vec<Vec<u8>> = state
                .running
                .iter()
                .filter(|(_, h)| h.span.parent_span_id == p)
                .map(|(id, _)| id.clone())
                .collect();
            for c in children {
                if let Some(h) = state.running.remove(&c) {
                    frontier.push(c);
                    closed.push(h);
                }
            }
        }
        self.running -= closed.len();
        if state.running.is_empty() {
            self.traces.remove(trace_id);
        }
        closed.sort_by_key(|h| (h.span.start_time_unix_nano, h.span.span_id.clone()));
        for h in closed {
            Self::close(h, end, status.clone(), Reason::ParentEnd, out);
        }
    }

    /// Take in a batch of spans at `now`. Returns the closed copies to send after it. Running
    /// spans are taken first, so a root that ends in the same request closes them.
    pub fn observe(&mut self, blocks: &[SpanBlock], now: Instant) -> Vec<ResourceSpans> {
        let mut out = Vec::new();
        let all = || {
            blocks
                .iter()
                .flat_map(|b| b.iter().map(move |(r, s, sp)| (b, r, s, sp)))
        };
        for (b, r, sc, span) in all().filter(|(_, _, _, s)| s.end_time_unix_nano == 0) {
            let state = self
                .traces
                .entry(b.raw(span.trace_id).to_vec())
                .or_insert_with(|| TraceState {
                    running: HashMap::new(),
                    last_seen: now,
                    latest_end: 0,
                });
            state.last_seen = now;
            state.latest_end = state.latest_end.max(span.start_time_unix_nano);
            let held = Held {
                span: b.prost_span(span),
                resource: b.prost_resource(r),
                resource_schema_url: b.str(r.schema_url).to_owned(),
                scope: b.prost_scope(sc),
                scope_schema_url: b.str(sc.schema_url).to_owned(),
            };
            if state
                .running
                .insert(b.raw(span.span_id).to_vec(), held)
                .is_none()
            {
                self.running += 1;
            }
        }
        if self.traces.is_empty() {
            // Nothing running anywhere: an ended span has nothing to close.
            return out;
        }
        for (b, _, _, span) in all().filter(|(_, _, _, s)| s.end_time_unix_nano != 0) {
            // An ended span: its real end supersedes any running copy held.
            let trace_id = b.raw(span.trace_id);
            let Some(state) = self.traces.get_mut(trace_id) else {
                continue;
            };
            let end = span.end_time_unix_nano;
            state.last_seen = now;
            state.latest_end = state.latest_end.max(end);
            if state.running.remove(b.raw(span.span_id)).is_some() {
                self.running -= 1;
            }
            let status = span.status.map(|st| b.prost_status(&st));
            if b.raw(span.parent_span_id).is_empty() {
                let status = derived_status(status.as_ref(), "trace");
                self.end_trace(trace_id, end, status, Reason::TraceEnd, &mut out);
            } else if self.config.close_children_on_parent_end {
                let status = derived_status(
                    status.as_ref(),
                    &format!("parent span {:?}", b.str(span.name)),
                );
                let parent = b.raw(span.span_id);
                self.close_descendants(trace_id, parent, end, &status, &mut out);
            }
            if self
                .traces
                .get(trace_id)
                .is_some_and(|s| s.running.is_empty())
            {
                self.traces.remove(trace_id);
            }
        }
        self.enforce_bounds(&mut out);
        out
    }

    /// The client ended a trace.
    pub fn trace_ended(&mut self, end: &TraceEnd) -> Vec<ResourceSpans> {
        let mut out = Vec::new();
        let status = derived_status(Some(&end.status), "trace");
        self.end_trace(
            &end.trace_id,
            end.end_time_unix_nano,
            status,
            Reason::TraceEnd,
            &mut out,
        );
        out
    }

    fn enforce_bounds(&mut self, out: &mut Vec<ResourceSpans>) {
        while self.traces.len() > self.config.max_traces
            || self.running > self.config.max_running_spans
        {
            let Some(oldest) = self
                .traces
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            let end = self.traces.get(&oldest).map(|s| s.latest_end).unwrap_or(0);
            self.end_trace(&oldest, end, Status::default(), Reason::Evicted, out);
        }
    }

    /// End the traces idle for `trace_timeout` at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<ResourceSpans> {
        let mut out = Vec::new();
        let timeout = self.config.trace_timeout;
        let idle: Vec<Vec<u8>> = self
            .traces
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_seen) >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            let end = self.traces.get(&id).map(|s| s.latest_end).unwrap_or(0);
            self.end_trace(&id, end, Status::default(), Reason::Timeout, &mut out);
        }
        out
    }

    /// Close everything held (shutdown).
    pub fn close_all(&mut self, reason: Reason, end: u64) -> Vec<ResourceSpans> {
        let mut out = Vec::new();
        let ids: Vec<Vec<u8>> = self.traces.keys().cloned().collect();
        for id in ids {
            let latest = self.traces.get(&id).map(|s| s.latest_end).unwrap_or(0);
            self.end_trace(&id, latest.max(end), Status::default(), reason, &mut out);
        }
        out
    }
}

/// Where a durable pipeline's lifecycle processor finds, at start, the spans still running
/// when the collector last stopped: they are in the lake, so they survived a crash or a
/// restart, and are held again.
pub type Recover = Box<
    dyn FnOnce() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<Vec<ResourceSpans>, String>> + Send>,
        > + Send,
>;

pub struct LifecycleProcessor {
    name: String,
    config: LifecycleConfig,
    recover: Option<Recover>,
}

impl LifecycleProcessor {
    pub fn new(name: impl Into<String>, config: LifecycleConfig) -> Self {
        LifecycleProcessor {
            name: name.into(),
            config,
            recover: None,
        }
    }

    /// Durable mode: running spans outlive the collector. They are recovered with `recover` at
    /// start, and left running (not closed) at shutdown, to be recovered by the next start.
    pub fn durable(mut self, recover: Recover) -> Self {
        self.recover = Some(recover);
        self
    }
}

/// Closed copies as the batch's blocks (none when there are none).
fn blocks_of(closed: &[ResourceSpans]) -> Vec<SpanBlock> {
    let block = SpanBlock::from_prost(closed);
    if block.is_empty() {
        Vec::new()
    } else {
        vec![block]
    }
}

fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Processor for LifecycleProcessor {
    fn start(
        self: Box<Self>,
        mut input: Receiver,
        output: Fanout,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let tick = (self.config.trace_timeout / 10)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut state = Lifecycle::new(self.config);
        let name = self.name;
        let recover = self.recover;
        let durable = recover.is_some();
        tokio::spawn(async move {
            if let Some(recover) = recover {
                match recover().await {
                    Ok(groups) => {
                        // Already stored: held again, not sent again.
                        let held = [SpanBlock::from_prost(&groups)];
                        let evicted = state.observe(&held, Instant::now());
                        if state.running() > 0 {
                            tracing::info!(processor = %name, running = state.running(), traces = state.traces(), "lifecycle: holding again the spans still running at the last stop");
                        }
                        if !evicted.is_empty() && output.send(Batch::spans(evicted)).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(processor = %name, error = %e, "lifecycle: cannot recover the spans still running; they stay running until a later span or EndTrace closes them");
                    }
                }
            }
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut closed_for_shutdown = false;
            loop {
                let (closed, guards, forward) = tokio::select! {
                    next = input.recv() => {
                        let Some(mut batch) = next else { break };
                        match &batch.signal {
                            Signal::Spans(blocks) => {
                                let closed = state.observe(blocks, Instant::now());
                                (closed, Vec::new(), Some(batch))
                            }
                            Signal::Logs(_) => (Vec::new(), Vec::new(), Some(batch)),
                            Signal::EndTrace(end) => {
                                // The client waits until the closed copies are taken downstream.
                                let closed = state.trace_ended(end);
                                (closed, batch.take_guards(), None)
                            }
                        }
                    }
                    _ = ticker.tick() => (state.expire(Instant::now()), Vec::new(), None),
                    _ = shutdown.cancelled(), if !closed_for_shutdown => {
                        closed_for_shutdown = true;
                        if durable {
                            // Left running in the lake; the next start holds them again.
                            (Vec::new(), Vec::new(), None)
                        } else {
                            (state.close_all(Reason::Shutdown, now_unix_nanos()), Vec::new(), None)
                        }
                    }
                };
                if let Some(b) = forward
                    && output.send(b).await.is_err()
                {
                    tracing::error!(processor = %name, "the next stage is gone");
                    return;
                }
                if !closed.is_empty() || !guards.is_empty() {
                    let b = Batch::from_parts(blocks_of(&closed), guards);
                    if output.send(b).await.is_err() {
                        tracing::error!(processor = %name, "the next stage is gone");
                        return;
                    }
                }
            }
            if durable {
                return;
            }
            // Input closed: nothing more can end these traces.
            let closed = state.close_all(Reason::Shutdown, now_unix_nanos());
            if !closed.is_empty() {
                let _ = output.send(Batch::spans(closed)).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_000_000_000;

    fn span(trace: u8, id: u8, parent: Option<u8>, start: u64, end: u64) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("s{id}"),
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            ..Default::default()
        }
    }

    fn group(spans: Vec<Span>) -> Vec<SpanBlock> {
        vec![SpanBlock::from_prost(&[ResourceSpans {
            resource: Some(Resource {
                attributes: vec![marker("service.name", Value::StringValue("svc".into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }])]
    }

    /// (span id byte, end, status code, status message, reason) of every closed copy.
    fn closed(out: &[ResourceSpans]) -> Vec<(u8, u64, i32, String, String)> {
        out.iter()
            .flat_map(|r| {
                assert!(r.resource.is_some(), "closed copies keep their resource");
                r.scope_spans.iter()
            })
            .flat_map(|s| &s.spans)
            .map(|s| {
                let reason = s
                    .attributes
                    .iter()
                    .find(|a| a.key == "spanlake.auto_close_reason")
                    .and_then(|a| a.value.clone())
                    .and_then(|v| v.value);
                let auto = s.attributes.iter().any(|a| {
                    a.key == "spanlake.auto_closed"
                        && a.value.as_ref().and_then(|v| v.value.clone())
                            == Some(Value::BoolValue(true))
                });
                assert!(auto, "marked auto-closed");
                let Some(Value::StringValue(reason)) = reason else {
                    panic!("a reason")
                };
                let st = s.status.clone().unwrap_or_default();
                (
                    s.span_id[0],
                    s.end_time_unix_nano,
                    st.code,
                    st.message,
                    reason,
                )
            })
            .collect()
    }

    fn lc() -> Lifecycle {
        Lifecycle::new(LifecycleConfig::default())
    }

    #[tokio::test(start_paused = true)]
    async fn root_ending_closes_the_trace_with_its_status() {
        let mut l = lc();
        let now = Instant::now();
        assert!(
            l.observe(
                &group(vec![
                    span(1, 1, None, T, 0),
                    span(1, 2, Some(1), T + 10, 0),
                    span(1, 3, Some(2), T + 20, 0)
                ]),
                now
            )
            .is_empty()
        );
        assert_eq!((l.traces(), l.running()), (1, 3));
        let mut root = span(1, 1, None, T, T + 500);
        root.status = Some(Status {
            code: 2,
            message: "payment declined".into(),
        });
        let out = l.observe(&group(vec![root]), now);
        assert_eq!(
            closed(&out),
            vec![
                (
                    2,
                    T + 500,
                    2,
                    "trace ended with an error: payment declined".into(),
                    "trace_end".into()
                ),
                (
                    3,
                    T + 500,
                    2,
                    "trace ended with an error: payment declined".into(),
                    "trace_end".into()
                ),
            ]
        );
        assert_eq!((l.traces(), l.running()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_parent_ending_closes_its_running_descendants_only() {
        let mut l = lc();
        let now = Instant::now();
        l.observe(
            &group(vec![
                span(1, 1, None, T, 0),
                span(1, 2, Some(1), T, 0),
                span(1, 3, Some(2), T + 5, 0),
                span(1, 4, Some(1), T, 0),
            ]),
            now,
        );
        let mut parent = span(1, 2, Some(1), T, T + 100);
        parent.status = Some(Status {
            code: 1,
            message: String::new(),
        });
        let out = l.observe(&group(vec![parent]), now);
        assert_eq!(
            closed(&out),
            vec![(3, T + 100, 1, String::new(), "parent_end".into())]
        );
        assert_eq!(l.running(), 2, "the root and its other child still run");
        let mut off = Lifecycle::new(LifecycleConfig {
            close_children_on_parent_end: false,
            ..Default::default()
        });
        off.observe(
            &group(vec![
                span(1, 2, Some(1), T, 0),
                span(1, 3, Some(2), T + 5, 0),
            ]),
            now,
        );
        assert!(
            off.observe(&group(vec![span(1, 2, Some(1), T, T + 100)]), now)
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn end_trace_closes_at_its_end_but_never_before_a_span_starts() {
        let mut l = lc();
        l.observe(
            &group(vec![
                span(7, 1, None, T, 0),
                span(7, 2, Some(1), T + 900, 0),
            ]),
            Instant::now(),
        );
        let out = l.trace_ended(&TraceEnd {
            trace_id: vec![7; 16],
            status: Status {
                code: 1,
                message: String::new(),
            },
            end_time_unix_nano: T + 500,
        });
        assert_eq!(
            closed(&out),
            vec![
                (1, T + 500, 1, String::new(), "trace_end".into()),
                (2, T + 900, 1, String::new(), "trace_end".into())
            ]
        );
        let out = l.trace_ended(&TraceEnd {
            trace_id: vec![8; 16],
            status: Status::default(),
            end_time_unix_nano: T,
        });
        assert!(out.is_empty(), "an unknown trace has nothing to close");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_traces_time_out() {
        let mut l = Lifecycle::new(LifecycleConfig {
            trace_timeout: Duration::from_secs(60),
            ..Default::default()
        });
        let t0 = Instant::now();
        l.observe(&group(vec![span(1, 1, None, T, 0)]), t0);
        l.observe(
            &group(vec![span(2, 1, None, T, 0)]),
            t0 + Duration::from_secs(30),
        );
        // activity on trace 1 (an ended child) keeps it alive
        l.observe(
            &group(vec![span(1, 9, Some(1), T + 1, T + 700)]),
            t0 + Duration::from_secs(50),
        );
        assert!(l.expire(t0 + Duration::from_secs(89)).is_empty());
        let out = l.expire(t0 + Duration::from_secs(90));
        assert_eq!(
            closed(&out),
            vec![(1, T, 0, String::new(), "timeout".into())],
            "trace 2 went idle first"
        );
        let out = l.expire(t0 + Duration::from_secs(110));
        assert_eq!(
            closed(&out),
            vec![(1, T + 700, 0, String::new(), "timeout".into())],
            "ends at the latest end seen in its trace"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bounds_evict_the_least_recently_active_trace() {
        let mut l = Lifecycle::new(LifecycleConfig {
            max_traces: 2,
            max_running_spans: 3,
            ..Default::default()
        });
        let t0 = Instant::now();
        l.observe(&group(vec![span(1, 1, None, T, 0)]), t0);
        l.observe(
            &group(vec![span(2, 1, None, T, 0)]),
            t0 + Duration::from_secs(1),
        );
        let out = l.observe(
            &group(vec![span(3, 1, None, T, 0)]),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(
            closed(&out).iter().map(|c| c.4.clone()).collect::<Vec<_>>(),
            vec!["evicted".to_string()]
        );
        assert_eq!(out[0].scope_spans[0].spans[0].trace_id, vec![1; 16]);
        let out = l.observe(
            &group(vec![span(3, 2, Some(1), T, 0), span(3, 3, Some(1), T, 0)]),
            t0 + Duration::from_secs(3),
        );
        assert_eq!(
            out[0].scope_spans[0].spans[0].trace_id,
            vec![2; 16],
            "too many running spans: trace 2 is the oldest"
        );
        assert_eq!((l.traces(), l.running()), (1, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn late_spans_and_real_ends() {
        let mut l = lc();
        let now = Instant::now();
        l.observe(
            &group(vec![span(1, 1, None, T, 0), span(1, 2, Some(1), T, 0)]),
            now,
        );
        // the child's real end arrives: it is no longer held, so the root ending closes nothing
        assert!(
            l.observe(&group(vec![span(1, 2, Some(1), T, T + 50)]), now)
                .is_empty()
        );
        assert!(
            l.observe(&group(vec![span(1, 1, None, T, T + 60)]), now)
                .is_empty()
        );
        // a root ending in the same request closes the running spans beside it
        let out = l.observe(
            &group(vec![
                span(4, 1, None, T, T + 9),
                span(4, 2, Some(1), T + 1, 0),
            ]),
            now,
        );
        assert_eq!(
            closed(&out),
            vec![(2, T + 9, 0, String::new(), "trace_end".into())]
        );
        // a span for the ended trace: stored as is, and the trace can be continued
        assert!(
            l.observe(&group(vec![span(1, 5, Some(1), T + 100, 0)]), now)
                .is_empty()
        );
        assert_eq!(l.running(), 1);
        let out = l.trace_ended(&TraceEnd {
            trace_id: vec![1; 16],
            status: Status::default(),
            end_time_unix_nano: T + 200,
        });
        assert_eq!(
            closed(&out),
            vec![(5, T + 200, 0, String::new(), "trace_end".into())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_processor_closes_on_timeout_and_on_shutdown() {
        use spanlake_core::bounded;
        let (tx, rx) = bounded("in", 8);
        let (out_tx, mut out) = bounded("out", 64);
        let shutdown = CancellationToken::new();
        let p = Box::new(LifecycleProcessor::new(
            "lifecycle",
            LifecycleConfig {
                trace_timeout: Duration::from_secs(10),
                ..Default::default()
            },
        ));
        let task = p.start(rx, Fanout::new(vec![out_tx]), shutdown.clone());
        tx.send(Batch::blocks(group(vec![span(1, 1, None, T, 0)])))
            .await
            .expect("send");
        let passed = out.recv().await.expect("the running span passes through");
        assert_eq!(passed.len(), 1);
        tokio::time::sleep(Duration::from_secs(11)).await;
        let timed_out = out.recv().await.expect("closed on timeout");
        let Signal::Spans(g) = &timed_out.signal else {
            panic!("spans")
        };
        assert_eq!(closed(&g[0].to_prost())[0].4, "timeout");
        tx.send(Batch::blocks(group(vec![span(2, 1, None, T, 0)])))
            .await
            .expect("send");
        out.recv().await.expect("passes through");
        shutdown.cancel();
        let at_shutdown = out.recv().await.expect("closed on shutdown");
        let Signal::Spans(g) = &at_shutdown.signal else {
            panic!("spans")
        };
        assert_eq!(closed(&g[0].to_prost())[0].4, "shutdown");
        drop(tx);
        task.await.expect("exits when its input closes");
    }

    #[test]
    fn config() {
        let c: LifecycleConfig =
            serde_yaml::from_str("trace_timeout: 30s\nmax_traces: 5\n").expect("valid");
        assert_eq!(
            (
                c.trace_timeout,
                c.max_traces,
                c.max_running_spans,
                c.close_children_on_parent_end
            ),
            (Duration::from_secs(30), 5, 100_000, true)
        );
        let c: LifecycleConfig =
            serde_yaml::from_str("trace_timeout: 0s\nmax_running_spans: 0\n").expect("parses");
        assert_eq!(c.validate().len(), 2);
        assert!(serde_yaml::from_str::<LifecycleConfig>("timeout: 5m").is_err());
    }
}
