//! Settings of the lifecycle (auto-close) processor.

use std::time::Duration;

use serde::Deserialize;

/// `processors: lifecycle:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// A trace with running spans and no new span for this long is ended: its running spans are
    /// closed with reason `timeout`. Default `5m`.
    #[serde(default = "default_trace_timeout", with = "humantime_serde")]
    pub trace_timeout: Duration,
    /// Most traces with running spans held; past it the least recently active trace is ended
    /// with reason `evicted`. Default `10000`.
    #[serde(default = "default_max_traces")]
    pub max_traces: usize,
    /// Most running spans held, over all traces; past it the least recently active trace is
    /// ended with reason `evicted`. Default `100000`.
    #[serde(default = "default_max_running_spans")]
    pub max_running_spans: usize,
    /// When a span ends, close its running descendants (reason `parent_end`). Default `true`.
    #[serde(default = "default_true")]
    pub close_children_on_parent_end: bool,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            trace_timeout: default_trace_timeout(),
            max_traces: default_max_traces(),
            max_running_spans: default_max_running_spans(),
            close_children_on_parent_end: true,
        }
    }
}

fn default_trace_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_max_traces() -> usize {
    10_000
}
fn default_max_running_spans() -> usize {
    100_000
}
fn default_true() -> bool {
    true
}

impl LifecycleConfig {
    /// Every problem with these settings, as `(key, message)`. No I/O.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.trace_timeout.is_zero() {
            p.push((
                "trace_timeout",
                "trace_timeout must be above 0 (e.g. 5m)".to_string(),
            ));
        }
        if self.max_traces == 0 {
            p.push(("max_traces", "max_traces must be at least 1".to_string()));
        }
        if self.max_running_spans == 0 {
            p.push((
                "max_running_spans",
                "max_running_spans must be at least 1".to_string(),
            ));
        }
        p
    }
}
