//! Wiring a plan into running pipelines, and taking them down in order.
//!
//! Each pipeline is `receivers → [queue] → processor → [queue] → … → fan-out → exporter queues`.
//! An exporter listed by several pipelines runs once and reads one queue they all feed. A
//! receiver listed by several pipelines admits each request into all of them, or none.
//!
//! Shutdown: receivers stop accepting and finish their requests, dropping their senders; each
//! stage sees its input close, flushes and exits, dropping its own senders; exporters commit
//! last. The whole drain is bounded by `service.shutdown_timeout`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use spanlake_config::ComponentId;
use spanlake_core::{CancellationToken, Fanout, Intake, Pressure, Sender, bounded};
use tokio::task::JoinHandle;

use crate::registry::{ExporterSettings, Plan};

/// A started collector.
pub struct Running {
    pub listening: Vec<(ComponentId, String, SocketAddr)>,
    shutdown: CancellationToken,
    receivers: Vec<JoinHandle<()>>,
    processors: Vec<JoinHandle<()>>,
    exporters: Vec<(ComponentId, JoinHandle<Result<(), String>>)>,
    timeout: Duration,
}

pub async fn start(plan: &Plan) -> anyhow::Result<Running> {
    let shutdown = CancellationToken::new();
    let capacity = plan.service.channel_capacity;
    let pressure = Pressure::new(plan.service.memory_limit_mib << 20);

    // Exporters: one instance and one queue each, shared by every pipeline that lists them.
    let mut exporter_queues: BTreeMap<ComponentId, Sender> = BTreeMap::new();
    let mut exporters = Vec::new();
    let mut lakes = BTreeMap::new();
    for p in &plan.pipelines {
        for r in &p.exporters {
            if exporter_queues.contains_key(&r.id) {
                continue;
            }
            let (exporter, lake) = plan
                .build_exporter(&r.id, &pressure)
                .map_err(|e| anyhow!(e))?;
            let (tx, rx) = bounded(format!("exporter/{}", r.id), capacity);
            exporters.push((r.id.clone(), exporter.start(rx)));
            exporter_queues.insert(r.id.clone(), tx);
            if let Some(lake) = lake {
                lakes.insert(r.id.clone(), lake);
            }
        }
    }

    // Pipelines: processors chained back to front; the head queue is where receivers admit.
    let mut heads: BTreeMap<ComponentId, Vec<Sender>> = BTreeMap::new();
    let mut processors = Vec::new();
    for p in &plan.pipelines {
        let outputs: Vec<Sender> = p
            .exporters
            .iter()
            .map(|r| exporter_queues[&r.id].clone())
            .collect();
        let mut next: Vec<Sender> = outputs;
        // A durable pipeline's running spans are recovered from its first lake.
        let durable_lake = (p.acknowledgements == spanlake_config::Acknowledgements::Durable)
            .then(|| p.exporters.iter().find_map(|r| lakes.get(&r.id)))
            .flatten();
        for (i, r) in p.processors.iter().enumerate().rev() {
            let recover = match durable_lake {
                Some(lake) if plan.is_lifecycle(&r.id) => Some(recover_running(lake)),
                _ => None,
            };
            let processor = plan
                .build_processor(&r.id, recover)
                .map_err(|e| anyhow!(e))?;
            let (tx, rx) = bounded(format!("{}/{}:{}", p.id, i, r.id), p.channel_capacity);
            processors.push(processor.start(rx, Fanout::new(next), shutdown.clone()));
            next = vec![tx];
        }
        for r in &p.receivers {
            let list = heads.entry(r.id.clone()).or_default();
            for q in &next {
                if !list.iter().any(|s| s.name() == q.name()) {
                    list.push(q.clone());
                }
            }
        }
    }
    drop(exporter_queues);

    // The lake queries read: the one service.query names, or else the only one written.
    let lake_id = plan.query_lake().or_else(|| {
        (lakes.len() == 1)
            .then(|| lakes.keys().next().cloned())
            .flatten()
    });
    // Built on the first query: a collector nobody queries never loads DataFusion.
    let engine = lake_id
        .as_ref()
        .and_then(|id| lakes.get(id))
        .map(|lake| spanlake_query::QueryEngine::open(&lake.root, Some(lake.tail.clone())));

    let mut listening = Vec::new();
    let mut receivers = Vec::new();
    for (id, queues) in heads {
        let mut receiver = plan
            .build_receiver(&id)
            .ok_or_else(|| anyhow!("receiver {id} is not in the plan"))?;
        // A durable pipeline's log writes a request's own bytes when nothing changed it.
        let durable = plan.pipelines.iter().any(|p| {
            p.acknowledgements == spanlake_config::Acknowledgements::Durable
                && p.receivers.iter().any(|r| r.id == id)
        });
        let intake = Intake::new(queues, plan.service.admission_wait, Arc::clone(&pressure))
            .keeping_requests(durable);
        if receiver.wants_trace_api() {
            let routes = spanlake_query::native::routes(intake.clone(), engine.clone())
                .map_err(|e| anyhow!("receiver {id}: {e}"))?;
            receiver.add_grpc_routes(routes);
        }
        let running = receiver
            .start(intake, shutdown.clone())
            .with_context(|| format!("receiver {id}"))?;
        for (proto, addr) in running.listening {
            listening.push((id.clone(), proto, addr));
        }
        receivers.push(running.task);
    }
    if let (Some(q), Some(id), Some(engine)) = (&plan.service.query, plan.query_lake(), engine) {
        let (addr, task) = spanlake_query::http::serve(engine, &q.endpoint, shutdown.clone())
            .context("query API")?;
        listening.push((id.clone(), "query/http".to_string(), addr));
        receivers.push(task);
    }
    Ok(Running {
        listening,
        shutdown,
        receivers,
        processors,
        exporters,
        timeout: plan.service.shutdown_timeout,
    })
}

/// The spans still running in a lake, as a lifecycle processor takes them back at start.
fn recover_running(lake: &crate::registry::Lake) -> spanlake_processor::lifecycle::Recover {
    let root = lake.root.clone();
    let tail = Arc::clone(&lake.tail);
    Box::new(move || {
        Box::pin(async move {
            // Read from the files and the tail directly: the query engine (DataFusion) is not
            // loaded for it.
            let spans = tokio::task::spawn_blocking(move || {
                spanlake_query::recover::running_spans(&root, Some(&tail))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            Ok(spanlake_query::rows::to_resource_spans(&spans))
        })
    })
}

impl Running {
    /// Stop accepting, drain every queue, commit, within the shutdown timeout.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let Running {
            receivers,
            processors,
            exporters,
            timeout,
            ..
        } = self;
        let drain = async move {
            for r in receivers {
                let _ = r.await;
            }
            for p in processors {
                let _ = p.await;
            }
            let mut failed = Vec::new();
            for (id, e) in exporters {
                match e.await {
                    Ok(Ok(())) => {}
                    Ok(Err(msg)) => failed.push(format!("exporter {id}: {msg}")),
                    Err(join) => failed.push(format!("exporter {id} panicked: {join}")),
                }
            }
            failed
        };
        match tokio::time::timeout(timeout, drain).await {
            Ok(failed) if failed.is_empty() => Ok(()),
            Ok(failed) => Err(anyhow!(
                "shutdown finished with errors; some spans are not committed:\n  {}",
                failed.join("\n  ")
            )),
            Err(_) => Err(anyhow!(
                "shutdown did not finish within shutdown_timeout ({}); spans still queued are not committed",
                humantime_duration(timeout)
            )),
        }
    }
}

fn humantime_duration(d: Duration) -> String {
    format!("{:?}", d)
}

/// The start-up block: what listens where, which file runs, where spans go.
pub fn banner(plan: &Plan, running: &Running) -> String {
    let mut s = format!(
        "spanlake {} running {}\n",
        env!("CARGO_PKG_VERSION"),
        plan.file
    );
    for (id, proto, addr) in &running.listening {
        if proto == "query/http" {
            s.push_str(&format!(
                "  {proto:<10} listening on {addr}   (Tempo and Jaeger APIs, SQL; lake of exporter {id})\n"
            ));
        } else {
            s.push_str(&format!(
                "  {proto:<10} listening on {addr}   (receiver {id})\n"
            ));
        }
    }
    for (id, settings) in &plan.exporters {
        if !plan
            .pipelines
            .iter()
            .any(|p| p.exporters.iter().any(|r| &r.id == id))
        {
            continue;
        }
        match settings {
            ExporterSettings::Parquet(c) => {
                let root = std::path::absolute(&c.path).unwrap_or_else(|_| c.path.clone());
                s.push_str(&format!(
                    "  {:<10} writing to {}   (exporter {id})\n",
                    "parquet",
                    root.join("spans").display()
                ));
                if plan.durable(id) {
                    let wal = std::path::absolute(c.wal_dir()).unwrap_or_else(|_| c.wal_dir());
                    s.push_str(&format!(
                        "  {:<10} acknowledged once in the write-ahead log {}\n",
                        "durable",
                        wal.display()
                    ));
                }
            }
            ExporterSettings::Debug(_) => s.push_str(&format!(
                "  {:<10} writing JSON lines to stdout   (exporter {id})\n",
                "debug"
            )),
        }
    }
    for p in &plan.pipelines {
        let names = |v: &[spanlake_config::Reference]| {
            v.iter()
                .map(|r| r.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut chain = vec![names(&p.receivers)];
        chain.extend(p.processors.iter().map(|r| r.id.to_string()));
        chain.push(names(&p.exporters));
        s.push_str(&format!("  pipeline {}: {}\n", p.id, chain.join(" → ")));
    }
    for o in &plan.overrides {
        s.push_str(&format!("  from the environment: {o}\n"));
    }
    s
}
