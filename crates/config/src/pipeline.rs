//! The collector-shaped skeleton of a pipeline file: component sections and `service:`.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

use crate::document::{Document, Path, Problem};

/// `type[/name]`, as in the OpenTelemetry Collector: `otlp`, `parquet/archive`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId {
    pub kind: String,
    pub name: Option<String>,
}

impl ComponentId {
    pub fn parse(s: &str) -> Result<ComponentId, String> {
        let (kind, name) = match s.split_once('/') {
            Some((k, n)) => (k, Some(n)),
            None => (s, None),
        };
        let ok = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        };
        if !ok(kind) || name.is_some_and(|n| !ok(n)) {
            return Err(format!(
                "{s:?} is not a component id: write type[/name] with letters, digits, '_', '-' or '.'"
            ));
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{}/{}", self.kind, n),
            None => f.write_str(&self.kind),
        }
    }
}

/// A component as written in the file: its id, and where its settings are.
#[derive(Debug, Clone)]
pub struct RawComponent {
    pub id: ComponentId,
    /// Path of its settings in the document (`["exporters", "parquet/archive"]`).
    pub path: Path,
}

/// The signal a pipeline carries, from its id (`traces`, `traces/sampled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Traces,
}

/// A reference from a pipeline to a component, with its line.
#[derive(Debug, Clone)]
pub struct Reference {
    pub id: ComponentId,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// The pipeline id as written: `traces` or `traces/name`.
    pub id: String,
    pub signal: Signal,
    pub receivers: Vec<Reference>,
    pub processors: Vec<Reference>,
    pub exporters: Vec<Reference>,
    /// Capacity, in batches, of each queue between the pipeline's stages.
    pub channel_capacity: usize,
    /// When a client's request is answered with success.
    pub acknowledgements: Acknowledgements,
    pub line: usize,
}

/// `service.pipelines.<id>.acknowledgements`: when a client is told its spans are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acknowledgements {
    /// Once every exporter of the pipeline has taken the spans (they are queryable; a crash
    /// before their file is committed loses them).
    #[default]
    Memory,
    /// Once the spans are in an fsynced write-ahead log or a committed Parquet file: nothing
    /// acknowledged is lost to a crash.
    Durable,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFields {
    #[serde(default)]
    receivers: Vec<String>,
    #[serde(default)]
    processors: Vec<String>,
    #[serde(default)]
    exporters: Vec<String>,
    channel_capacity: Option<usize>,
    #[serde(default)]
    acknowledgements: Acknowledgements,
}

/// `service.telemetry`: the collector's own logs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
#[derive(Default)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub logs: LogsConfig,
}

/// `service.telemetry.logs`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// A `RUST_LOG`-style filter. Default `info`; the `RUST_LOG` variable wins over it.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` (default) or `json`.
    #[serde(default = "default_encoding")]
    pub encoding: LogEncoding,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            level: default_level(),
            encoding: default_encoding(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    Text,
    Json,
}

fn default_level() -> String {
    "info".into()
}
fn default_encoding() -> LogEncoding {
    LogEncoding::Text
}

/// `service:` settings other than the pipelines.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// How long a clean shutdown may take to drain, flush and commit. Default `10s`.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Default capacity, in batches, of each queue between stages. Default `64`.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// How long a receiver waits for room in a full pipeline before refusing the request with a
    /// retryable error. Default `1s`.
    #[serde(default = "default_admission_wait", with = "humantime_serde")]
    pub admission_wait: Duration,
    /// Requests are refused (retryable) rather than decoded when the memory held by requests
    /// in flight and by exporter buffers would pass this many MiB. `0` or absent: no limit.
    #[serde(default)]
    pub memory_limit_mib: usize,
    /// Freed memory goes back to the system once the memory in use has not grown for this
    /// long (with mimalloc, where glibc is not the allocator: its purge delay). Default
    /// `250ms`; `0s` gives it back at the first look after it was freed.
    #[serde(default = "default_memory_release_delay", with = "humantime_serde")]
    pub memory_release_delay: Duration,
    /// Threads running receivers, processors and exporters' queues (encoding and writing files
    /// run on threads of their own). `0` or absent: one per CPU core.
    #[serde(default)]
    pub worker_threads: usize,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The HTTP query API (Tempo- and Jaeger-compatible, SQL). Off when absent.
    #[serde(default, deserialize_with = "listed")]
    pub query: Option<QueryServerConfig>,
    /// Read separately by [`RawConfig::from_document`].
    #[serde(default)]
    pipelines: Option<Value>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            shutdown_timeout: default_shutdown_timeout(),
            channel_capacity: default_channel_capacity(),
            admission_wait: default_admission_wait(),
            memory_limit_mib: 0,
            memory_release_delay: default_memory_release_delay(),
            worker_threads: 0,
            telemetry: TelemetryConfig::default(),
            query: None,
            pipelines: None,
        }
    }
}

/// `service.query`: the HTTP query API over one lake.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryServerConfig {
    /// `host:port` to listen on. Default `127.0.0.1:3200` (Tempo's port).
    #[serde(default = "default_query_endpoint")]
    pub endpoint: String,
    /// The parquet exporter whose lake is served. May be left out when there is only one.
    #[serde(default)]
    pub exporter: Option<String>,
}

impl Default for QueryServerConfig {
    fn default() -> Self {
        QueryServerConfig {
            endpoint: default_query_endpoint(),
            exporter: None,
        }
    }
}

fn default_query_endpoint() -> String {
    "127.0.0.1:3200".into()
}

/// A key that is present turns its feature on, even with no settings (`query:`).
fn listed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

/// Measured at full load (docs/benchmarks.md, «session 6»): 1 s → 250 ms cuts the peak by
/// ~22% for ~7% fewer spans per CPU-second; 100 ms saves little more and costs more.
fn default_memory_release_delay() -> Duration {
    Duration::from_millis(250)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_channel_capacity() -> usize {
    64
}
fn default_admission_wait() -> Duration {
    Duration::from_secs(1)
}

/// The whole file, before any component is decoded.
#[derive(Debug, Clone)]
pub struct RawConfig {
    pub receivers: Vec<RawComponent>,
    pub processors: Vec<RawComponent>,
    pub exporters: Vec<RawComponent>,
    pub service: ServiceConfig,
    pub pipelines: Vec<PipelineSpec>,
}

const SECTIONS: [&str; 3] = ["receivers", "processors", "exporters"];

fn key(s: &str) -> String {
    s.to_string()
}

impl RawConfig {
    /// Read the skeleton, checking what can be checked without knowing the components: ids,
    /// unknown top-level keys, pipeline shapes and references. Returns every problem found.
    pub fn from_document(doc: &Document) -> (RawConfig, Vec<Problem>) {
        let mut problems = Vec::new();
        let mut sections: [Vec<RawComponent>; 3] = Default::default();
        if let Value::Mapping(root) = doc.root() {
            for (k, _) in root {
                let name = k.as_str().unwrap_or("");
                if !SECTIONS.contains(&name) && name != "service" {
                    let path = vec![name.to_string()];
                    let hint = match name {
                        "extensions" | "connectors" => {
                            format!("{name} are not supported by spanlake")
                        }
                        _ => "expected one of receivers, processors, exporters, service".into(),
                    };
                    problems.push(
                        doc.problem(&path, format!("unknown top-level key {name:?}: {hint}")),
                    );
                }
            }
        }
        for (i, section) in SECTIONS.iter().enumerate() {
            match doc.get(&[key(section)]) {
                None | Some(Value::Null) => {}
                Some(Value::Mapping(m)) => {
                    for (k, _) in m {
                        let Some(id) = k.as_str() else {
                            problems.push(doc.problem(
                                &[key(section)],
                                format!("{section}: component ids must be strings"),
                            ));
                            continue;
                        };
                        let path = vec![key(section), id.to_string()];
                        match ComponentId::parse(id) {
                            Ok(cid) => sections[i].push(RawComponent { id: cid, path }),
                            Err(e) => problems.push(doc.problem(&path, format!("{section}: {e}"))),
                        }
                    }
                }
                Some(_) => problems.push(doc.problem(
                    &[key(section)],
                    format!("{section} must be a mapping of component ids to settings"),
                )),
            }
        }
        let service: ServiceConfig = match doc.decode(&[key("service")]) {
            Ok(s) => s,
            Err(p) => {
                problems.push(p);
                ServiceConfig::default()
            }
        };
        let [receivers, processors, exporters] = sections;
        let mut config = RawConfig {
            receivers,
            processors,
            exporters,
            service,
            pipelines: Vec::new(),
        };
        config.read_pipelines(doc, &mut problems);
        (config, problems)
    }

    fn read_pipelines(&mut self, doc: &Document, problems: &mut Vec<Problem>) {
        let base = vec![key("service"), key("pipelines")];
        let Some(Value::Mapping(m)) = doc.get(&base) else {
            problems.push(doc.problem(
                &base,
                "service.pipelines: no pipeline is defined; add e.g. service: pipelines: traces: {receivers: [otlp], exporters: [parquet]}",
            ));
            return;
        };
        for (k, _) in m {
            let Some(pid) = k.as_str() else { continue };
            let mut path = base.clone();
            path.push(pid.to_string());
            let line = doc.line_of(&path);
            let signal = match ComponentId::parse(pid) {
                Ok(id) if id.kind == "traces" => Signal::Traces,
                Ok(id) if matches!(id.kind.as_str(), "metrics" | "logs" | "profiles") => {
                    problems.push(doc.problem(&path, format!("service.pipelines.{pid}: {} pipelines are not supported yet; spanlake stores traces", id.kind)));
                    continue;
                }
                _ => {
                    problems.push(doc.problem(
                        &path,
                        format!("service.pipelines.{pid}: a pipeline id is traces or traces/NAME"),
                    ));
                    continue;
                }
            };
            let fields: PipelineFields = match doc.decode(&path) {
                Ok(f) => f,
                Err(p) => {
                    problems.push(p);
                    continue;
                }
            };
            let mut spec = PipelineSpec {
                id: pid.to_string(),
                signal,
                receivers: Vec::new(),
                processors: Vec::new(),
                exporters: Vec::new(),
                channel_capacity: fields
                    .channel_capacity
                    .unwrap_or(self.service.channel_capacity),
                acknowledgements: fields.acknowledgements,
                line,
            };
            if spec.channel_capacity == 0 {
                problems.push(doc.problem(
                    &[path.clone(), vec![key("channel_capacity")]].concat(),
                    format!("service.pipelines.{pid}.channel_capacity must be at least 1"),
                ));
            }
            let lists = [
                (
                    "receivers",
                    &fields.receivers,
                    &self.receivers,
                    &mut spec.receivers,
                ),
                (
                    "processors",
                    &fields.processors,
                    &self.processors,
                    &mut spec.processors,
                ),
                (
                    "exporters",
                    &fields.exporters,
                    &self.exporters,
                    &mut spec.exporters,
                ),
            ];
            for (section, names, defined, out) in lists {
                let mut seen = BTreeSet::new();
                for (i, name) in names.iter().enumerate() {
                    let item = [path.clone(), vec![key(section), i.to_string()]].concat();
                    let line = doc.line_of(&item);
                    let Ok(id) = ComponentId::parse(name) else {
                        problems.push(doc.problem(
                            &item,
                            format!(
                                "service.pipelines.{pid}.{section}: {name:?} is not a component id"
                            ),
                        ));
                        continue;
                    };
                    if !defined.iter().any(|c| c.id == id) {
                        let known: Vec<String> = defined.iter().map(|c| c.id.to_string()).collect();
                        let known = if known.is_empty() {
                            "none are defined".to_string()
                        } else {
                            format!("defined: {}", known.join(", "))
                        };
                        problems.push(doc.problem(&item, format!(
                            "service.pipelines.{pid}.{section}: {name:?} is not defined under {section}: ({known})"
                        )));
                        continue;
                    }
                    if !seen.insert(id.clone()) {
                        problems.push(doc.problem(
                            &item,
                            format!("service.pipelines.{pid}.{section}: {name:?} is listed twice"),
                        ));
                        continue;
                    }
                    out.push(Reference { id, line });
                }
            }
            if fields.receivers.is_empty() {
                problems.push(doc.problem(
                    &path,
                    format!("service.pipelines.{pid}: a pipeline needs at least one receiver"),
                ));
            }
            if fields.exporters.is_empty() {
                problems.push(doc.problem(
                    &path,
                    format!("service.pipelines.{pid}: a pipeline needs at least one exporter"),
                ));
            }
            self.pipelines.push(spec);
        }
        if m.is_empty() {
            problems.push(doc.problem(&base, "service.pipelines: no pipeline is defined"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn read(text: &str) -> (RawConfig, Vec<String>) {
        let doc = Document::parse("p.yaml", text, &no_env).expect("parses");
        let (cfg, problems) = RawConfig::from_document(&doc);
        let mut msgs: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.line, p.message))
            .collect();
        msgs.sort();
        (cfg, msgs)
    }

    #[test]
    fn reads_a_collector_shaped_file() {
        let (cfg, problems) = read(
            "receivers:\n  otlp:\nprocessors:\n  batch:\nexporters:\n  parquet:\n  debug/verbose:\n    verbosity: detailed\nservice:\n  shutdown_timeout: 3s\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      exporters: [parquet, debug/verbose]\n      channel_capacity: 8\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            cfg.exporters[1].id,
            ComponentId {
                kind: "debug".into(),
                name: Some("verbose".into())
            }
        );
        assert_eq!(cfg.service.shutdown_timeout, Duration::from_secs(3));
        let p = &cfg.pipelines[0];
        assert_eq!(
            (
                p.receivers.len(),
                p.processors.len(),
                p.exporters.len(),
                p.channel_capacity
            ),
            (1, 1, 2, 8)
        );
        assert_eq!(p.exporters[1].line, 15);
    }

    #[test]
    fn lists_every_problem_with_its_line() {
        let (_, problems) = read(
            "receivers:\n  otlp:\nexporter:\n  parquet:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp, otlp]\n      exporters:\n        - parquet\n    metrics:\n      receivers: [otlp]\n",
        );
        assert_eq!(
            problems,
            vec![
                "10: service.pipelines.traces.exporters: \"parquet\" is not defined under exporters: (none are defined)".to_string(),
                "11: service.pipelines.metrics: metrics pipelines are not supported yet; spanlake stores traces".to_string(),
                "3: unknown top-level key \"exporter\": expected one of receivers, processors, exporters, service".to_string(),
                "8: service.pipelines.traces.receivers: \"otlp\" is listed twice".to_string(),
            ]
        );
    }

    #[test]
    fn component_ids_are_checked() {
        assert!(ComponentId::parse("otlp/").is_err());
        assert!(ComponentId::parse("a b").is_err());
        assert_eq!(
            ComponentId::parse("parquet/x-1")
                .expect("valid")
                .to_string(),
            "parquet/x-1"
        );
    }

    #[test]
    fn service_defaults() {
        let (cfg, problems) = read("service:\n  pipelines: {}\n");
        assert_eq!(
            problems,
            vec!["2: service.pipelines: no pipeline is defined".to_string()]
        );
        let d = ServiceConfig::default();
        assert_eq!(
            (
                cfg.service.shutdown_timeout,
                cfg.service.channel_capacity,
                cfg.service.admission_wait
            ),
            (d.shutdown_timeout, d.channel_capacity, d.admission_wait)
        );
        assert_eq!(cfg.service.telemetry.logs.encoding, LogEncoding::Text);
    }
}
