//! The registry: every component type spanlake knows, by the name used in pipeline files.
//!
//! Decoding a pipeline file goes through here, so `spanlake validate` and `spanlake run` see
//! the same problems, each on its line.

use std::path::PathBuf;
use std::sync::Arc;

use spanlake_config::{
    Acknowledgements, ComponentId, Document, Path, PipelineSpec, Problem, Problems, RawComponent,
    RawConfig, ServiceConfig,
};
use spanlake_core::{Exporter, Pressure, Processor, ReceiverComponent};
use spanlake_exporter::debug::{DebugConfig, DebugExporter};
use spanlake_exporter::parquet::{LiveTail, ParquetConfig, ParquetExporter};
use spanlake_processor::batch::{BatchConfig, BatchProcessor};
use spanlake_processor::lifecycle::{LifecycleConfig, LifecycleProcessor, Recover};
use spanlake_processor::redaction::{RedactionConfig, RedactionProcessor};
use spanlake_receiver::otlp::{OtlpReceiver, OtlpReceiverConfig};

pub const RECEIVERS: &[&str] = &["otlp"];
pub const PROCESSORS: &[&str] = &["batch", "lifecycle", "redaction"];
pub const EXPORTERS: &[&str] = &["parquet", "debug"];

#[derive(Debug, Clone)]
pub enum ReceiverSettings {
    Otlp(OtlpReceiverConfig),
}

#[derive(Debug, Clone)]
pub enum ProcessorSettings {
    Batch(BatchConfig),
    Redaction(RedactionConfig),
    Lifecycle(LifecycleConfig),
}

#[derive(Debug, Clone)]
pub enum ExporterSettings {
    Parquet(ParquetConfig),
    Debug(DebugConfig),
}

/// A pipeline file, fully decoded and validated: ready to start.
#[derive(Debug, Clone)]
pub struct Plan {
    pub file: String,
    pub receivers: Vec<(ComponentId, ReceiverSettings)>,
    pub processors: Vec<(ComponentId, ProcessorSettings)>,
    pub exporters: Vec<(ComponentId, ExporterSettings)>,
    pub pipelines: Vec<PipelineSpec>,
    pub service: ServiceConfig,
    /// Overrides taken from the environment (`BATCH_MAX=50`), to say so at start.
    pub overrides: Vec<String>,
}

/// Options given on the command line that change the file's settings.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--data DIR`: the root of every Parquet exporter.
    pub data: Option<PathBuf>,
}

fn sub(path: &[String], keys: &[&str]) -> Path {
    let mut p = path.to_vec();
    p.extend(keys.iter().map(|k| k.to_string()));
    p
}

/// Decode a component's settings, let `check` adjust and validate them, and report every
/// problem on the line of its key. `None` if the settings could not be decoded.
fn checked<T: serde::de::DeserializeOwned>(
    doc: &Document,
    c: &RawComponent,
    role: &str,
    problems: &mut Vec<Problem>,
    check: impl FnOnce(&mut T) -> Vec<(Vec<&'static str>, String)>,
) -> Option<T> {
    match doc.decode::<T>(&c.path) {
        Ok(mut cfg) => {
            for (keys, msg) in check(&mut cfg) {
                problems.push(doc.problem(
                    &sub(&c.path, &keys),
                    format!("{role} {:?}: {msg}", c.id.to_string()),
                ));
            }
            Some(cfg)
        }
        Err(p) => {
            problems.push(p);
            None
        }
    }
}

/// Problems keyed by one field, as [`checked`] takes them.
fn keyed(found: Vec<(&'static str, String)>) -> Vec<(Vec<&'static str>, String)> {
    found.into_iter().map(|(k, m)| (vec![k], m)).collect()
}

fn unknown(doc: &Document, c: &RawComponent, section: &str, known: &[&str]) -> Problem {
    doc.problem(
        &c.path,
        format!(
            "{section}: unknown type {:?} in {:?}; known: {}",
            c.id.kind,
            c.id.to_string(),
            known.join(", ")
        ),
    )
}

/// Parse, decode and validate a pipeline file. Every problem is reported, each on its line.
pub fn plan(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &Overrides,
) -> Result<Plan, Problems> {
    let doc = Document::parse(file, text, env)?;
    let (raw, mut problems) = RawConfig::from_document(&doc);
    let mut plan = Plan {
        file: file.to_string(),
        receivers: Vec::new(),
        processors: Vec::new(),
        exporters: Vec::new(),
        pipelines: raw.pipelines.clone(),
        service: raw.service.clone(),
        overrides: Vec::new(),
    };
    for c in &raw.receivers {
        match c.id.kind.as_str() {
            "otlp" => {
                let cfg = checked(
                    &doc,
                    c,
                    "receiver",
                    &mut problems,
                    |cfg: &mut OtlpReceiverConfig| cfg.validate(),
                );
                if let Some(cfg) = cfg {
                    plan.receivers
                        .push((c.id.clone(), ReceiverSettings::Otlp(cfg)));
                }
            }
            _ => problems.push(unknown(&doc, c, "receivers", RECEIVERS)),
        }
    }
    for c in &raw.processors {
        let settings = match c.id.kind.as_str() {
            "batch" => checked(
                &doc,
                c,
                "processor",
                &mut problems,
                |cfg: &mut BatchConfig| {
                    let mut found = Vec::new();
                    match cfg.apply_env(env) {
                        Ok(applied) => plan.overrides.extend(
                            applied
                                .into_iter()
                                .map(|a| format!("processor {}: {a}", c.id)),
                        ),
                        Err(errs) => found.extend(errs.into_iter().map(|e| (vec![], e))),
                    }
                    found.extend(keyed(cfg.validate()));
                    found
                },
            )
            .map(ProcessorSettings::Batch),
            "lifecycle" => checked(
                &doc,
                c,
                "processor",
                &mut problems,
                |cfg: &mut LifecycleConfig| keyed(cfg.validate()),
            )
            .map(ProcessorSettings::Lifecycle),
            "redaction" => checked(
                &doc,
                c,
                "processor",
                &mut problems,
                |cfg: &mut RedactionConfig| keyed(cfg.validate()),
            )
            .map(ProcessorSettings::Redaction),
            _ => {
                problems.push(unknown(&doc, c, "processors", PROCESSORS));
                None
            }
        };
        if let Some(settings) = settings {
            plan.processors.push((c.id.clone(), settings));
        }
    }
    for c in &raw.exporters {
        match c.id.kind.as_str() {
            "parquet" => {
                let cfg = checked(
                    &doc,
                    c,
                    "exporter",
                    &mut problems,
                    |cfg: &mut ParquetConfig| {
                        if let Some(d) = &overrides.data {
                            cfg.path = d.clone();
                        }
                        keyed(cfg.validate())
                    },
                );
                if let Some(cfg) = cfg {
                    plan.exporters
                        .push((c.id.clone(), ExporterSettings::Parquet(cfg)));
                }
            }
            "debug" => {
                if let Some(cfg) =
                    checked(&doc, c, "exporter", &mut problems, |_: &mut DebugConfig| {
                        Vec::new()
                    })
                {
                    plan.exporters
                        .push((c.id.clone(), ExporterSettings::Debug(cfg)));
                }
            }
            _ => problems.push(unknown(&doc, c, "exporters", EXPORTERS)),
        }
    }
    // Two parquet exporters writing the same directory would interleave partitions.
    let mut roots: Vec<(&ComponentId, &PathBuf)> = Vec::new();
    for (id, s) in &plan.exporters {
        if let ExporterSettings::Parquet(p) = s {
            if let Some((other, _)) = roots.iter().find(|(_, r)| *r == &p.path) {
                let path = raw
                    .exporters
                    .iter()
                    .find(|c| &c.id == id)
                    .map(|c| sub(&c.path, &["path"]))
                    .unwrap_or_default();
                problems.push(doc.problem(&path, format!("exporter {:?}: path {} is already written by exporter {:?}; give each its own directory", id.to_string(), p.path.display(), other.to_string())));
            }
            roots.push((id, &p.path));
        }
    }
    // Durable acknowledgements need somewhere durable to put the spans.
    for p in &plan.pipelines {
        if p.acknowledgements != Acknowledgements::Durable {
            continue;
        }
        let stores = p.exporters.iter().any(|r| {
            plan.exporters
                .iter()
                .any(|(id, s)| id == &r.id && matches!(s, ExporterSettings::Parquet(_)))
        });
        if !stores {
            let path = vec![
                "service".to_string(),
                "pipelines".to_string(),
                p.id.clone(),
                "acknowledgements".to_string(),
            ];
            problems.push(doc.problem(&path, format!(
                "service.pipelines.{}.acknowledgements: durable needs a parquet exporter in the pipeline (it keeps the write-ahead log); use memory, or add one",
                p.id
            )));
        }
    }
    // The query API serves one lake: the named parquet exporter, or the only one.
    if let Some(q) = &plan.service.query {
        let lakes: Vec<&ComponentId> = plan
            .exporters
            .iter()
            .filter(|(_, s)| matches!(s, ExporterSettings::Parquet(_)))
            .map(|(id, _)| id)
            .filter(|id| {
                plan.pipelines
                    .iter()
                    .any(|p| p.exporters.iter().any(|r| &r.id == *id))
            })
            .collect();
        let path = vec!["service".to_string(), "query".to_string()];
        match &q.exporter {
            Some(name) => {
                if !lakes.iter().any(|id| id.to_string() == *name) {
                    let mut p = path.clone();
                    p.push("exporter".into());
                    problems.push(doc.problem(&p, format!(
                        "service.query.exporter: {name:?} is not a parquet exporter used by a pipeline{}",
                        if lakes.is_empty() { String::new() } else { format!(" (choose {})", lakes.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")) }
                    )));
                }
            }
            None if lakes.len() == 1 => {}
            None if lakes.is_empty() => problems.push(doc.problem(&path, "service.query: no parquet exporter is used by a pipeline, so there is no lake to query")),
            None => problems.push(doc.problem(&path, format!(
                "service.query: several lakes are written ({}); name one with service.query.exporter",
                lakes.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
            ))),
        }
        if let Err(e) = spanlake_core::net::check_endpoint(&q.endpoint, 3200) {
            let mut p = path.clone();
            p.push("endpoint".into());
            problems.push(doc.problem(&p, format!("service.query.endpoint: {e}")));
        }
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(Problems::new(file, problems))
    }
}

impl Plan {
    pub fn build_receiver(&self, id: &ComponentId) -> Option<Box<dyn ReceiverComponent>> {
        self.receivers
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, s)| match s {
                ReceiverSettings::Otlp(c) => {
                    Box::new(OtlpReceiver::new(c.clone())) as Box<dyn ReceiverComponent>
                }
            })
    }

    /// Build a processor. `recover` is given to a lifecycle processor of a durable pipeline.
    pub fn build_processor(
        &self,
        id: &ComponentId,
        recover: Option<Recover>,
    ) -> Result<Box<dyn Processor>, String> {
        let (_, settings) = self
            .processors
            .iter()
            .find(|(i, _)| i == id)
            .ok_or_else(|| format!("processor {id} is not in the plan"))?;
        Ok(match settings {
            ProcessorSettings::Batch(c) => Box::new(BatchProcessor::new(id.to_string(), c.clone())),
            ProcessorSettings::Redaction(c) => {
                Box::new(RedactionProcessor::new(id.to_string(), c)?)
            }
            ProcessorSettings::Lifecycle(c) => {
                let p = LifecycleProcessor::new(id.to_string(), c.clone());
                match recover {
                    Some(r) => Box::new(p.durable(r)),
                    None => Box::new(p),
                }
            }
        })
    }

    /// Whether a pipeline feeding this exporter acknowledges `durable`.
    pub fn durable(&self, exporter: &ComponentId) -> bool {
        self.pipelines.iter().any(|p| {
            p.acknowledgements == Acknowledgements::Durable
                && p.exporters.iter().any(|r| &r.id == exporter)
        })
    }

    /// Build an exporter; a lake (parquet) exporter also gives its root and its live tail, for
    /// queries. A lake is opened here: it must be writable, and a durable one replays its
    /// write-ahead log before anything new comes in.
    pub fn build_exporter(
        &self,
        id: &ComponentId,
        pressure: &Arc<Pressure>,
    ) -> Result<(Box<dyn Exporter>, Option<Lake>), String> {
        let (_, s) = self
            .exporters
            .iter()
            .find(|(i, _)| i == id)
            .ok_or_else(|| format!("exporter {id} is not in the plan"))?;
        Ok(match s {
            ExporterSettings::Parquet(c) => {
                let tail = Arc::new(LiveTail::default());
                let lake = Lake {
                    root: c.path.clone(),
                    tail: tail.clone(),
                    durable: self.durable(id),
                };
                let e = ParquetExporter::open(
                    id.to_string(),
                    c.clone(),
                    tail,
                    Arc::clone(pressure),
                    lake.durable,
                )
                .map_err(|e| e.to_string())?;
                (Box::new(e) as Box<dyn Exporter>, Some(lake))
            }
            ExporterSettings::Debug(c) => {
                let e = DebugExporter::new(id.to_string(), c.clone());
                (Box::new(e) as Box<dyn Exporter>, None)
            }
        })
    }
}

impl Plan {
    /// Whether `id` is a lifecycle processor.
    pub fn is_lifecycle(&self, id: &ComponentId) -> bool {
        self.processors
            .iter()
            .any(|(i, s)| i == id && matches!(s, ProcessorSettings::Lifecycle(_)))
    }

    /// The exporter whose lake the query API serves.
    pub fn query_lake(&self) -> Option<ComponentId> {
        let q = self.service.query.as_ref()?;
        self.exporters
            .iter()
            .filter(|(_, s)| matches!(s, ExporterSettings::Parquet(_)))
            .map(|(id, _)| id)
            .find(|id| {
                q.exporter.as_ref().is_none_or(|n| id.to_string() == *n)
                    && self
                        .pipelines
                        .iter()
                        .any(|p| p.exporters.iter().any(|r| &r.id == *id))
            })
            .cloned()
    }
}

/// A lake written by a parquet exporter: where its files are, and its rows not yet in a file.
#[derive(Clone, Debug)]
pub struct Lake {
    pub root: PathBuf,
    pub tail: Arc<LiveTail>,
    /// Written with durable acknowledgements (a write-ahead log).
    pub durable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_embedded_pipelines_are_valid() {
        for (name, text) in [
            ("default.yaml", crate::DEFAULT_PIPELINE),
            (
                "sidecar.yaml",
                include_str!("../../../pipelines/sidecar.yaml"),
            ),
        ] {
            let plan =
                plan(name, text, &no_env, &Overrides::default()).unwrap_or_else(|p| panic!("{p}"));
            assert_eq!(plan.pipelines.len(), 1);
        }
    }

    #[test]
    fn every_problem_is_listed_with_file_and_line() {
        let text = "\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: nowhere
  kafka:
processors:
  batch:
    max_size: 0
    timout: 5s
exporters:
  parquet:
    compression_level: 99
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [parquet, s3]
";
        let err = plan("bad.yaml", text, &no_env, &Overrides::default()).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "\
bad.yaml:5: receiver \"otlp\": protocols.grpc.endpoint: \"nowhere\" is not host:port (e.g. 127.0.0.1:4317, or 0.0.0.0:4317 for every interface)
bad.yaml:6: receivers: unknown type \"kafka\" in \"kafka\"; known: otlp
bad.yaml:10: processors.batch.timout: unknown field `timout`, expected one of `max_size`, `timeout`, `max_inflight`, `flush_when_idle`
bad.yaml:13: exporter \"parquet\": compression_level 99 is not a zstd level; use 1 to 22
bad.yaml:19: service.pipelines.traces.exporters: \"s3\" is not defined under exporters: (defined: parquet)"
        );
    }

    #[test]
    fn batch_environment_overrides_are_applied_and_checked() {
        let env = |k: &str| (k == "BATCH_MAX").then(|| "500".to_string());
        let p = plan(
            "default.yaml",
            crate::DEFAULT_PIPELINE,
            &env,
            &Overrides::default(),
        )
        .expect("valid");
        let Some(ProcessorSettings::Batch(b)) = p
            .processors
            .iter()
            .map(|(_, s)| s)
            .find(|s| matches!(s, ProcessorSettings::Batch(_)))
        else {
            panic!("the default pipeline batches")
        };
        assert_eq!(b.max_size, 500);
        assert_eq!(
            p.overrides,
            vec!["processor batch: BATCH_MAX=500".to_string()]
        );
        let env = |k: &str| (k == "TRACE_BATCH_MS").then(|| "soon".to_string());
        let err = plan(
            "default.yaml",
            crate::DEFAULT_PIPELINE,
            &env,
            &Overrides::default(),
        )
        .expect_err("bad env");
        assert_eq!(
            err.to_string(),
            "default.yaml:24: processor \"batch\": environment variable TRACE_BATCH_MS=\"soon\" must be a whole number above 0"
        );
    }

    #[test]
    fn data_overrides_every_parquet_path() {
        let o = Overrides {
            data: Some(PathBuf::from("/elsewhere")),
        };
        let p = plan("default.yaml", crate::DEFAULT_PIPELINE, &no_env, &o).expect("valid");
        let ExporterSettings::Parquet(c) = &p.exporters[0].1 else {
            panic!("parquet first")
        };
        assert_eq!(c.path, PathBuf::from("/elsewhere"));
    }

    mod fuzz {
        //! Bounded fuzzing of pipeline files: the embedded ones with characters cut, flipped
        //! or inserted. Every outcome is a plan or a list of problems, never a panic.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1500))]
            #[test]
            fn damaged_pipeline_files(edits in proptest::collection::vec((any::<usize>(), 0u8..3, proptest::char::range(' ', '~')), 1..6)) {
                let mut text: Vec<char> = crate::DEFAULT_PIPELINE.chars().collect();
                for (at, op, c) in edits {
                    let at = at % text.len().max(1);
                    match op {
                        0 if !text.is_empty() => { text.remove(at); }
                        1 if !text.is_empty() => text[at] = c,
                        _ => text.insert(at, c),
                    }
                }
                let text: String = text.into_iter().collect();
                if let Err(p) = plan("fuzz.yaml", &text, &no_env, &Overrides::default()) {
                    prop_assert!(p.to_string().starts_with("fuzz.yaml:"), "{}", p);
                }
            }
        }
    }
}
