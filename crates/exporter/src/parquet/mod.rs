//! The Parquet exporter: the lake.

mod config;
pub mod convert;
pub mod schema;
mod tail;
mod writer;

pub use config::ParquetConfig;
pub use tail::LiveTail;
pub use writer::{Committed, LakeWriter, WriteError};

use std::sync::Arc;
use std::time::Duration;

use spanlake_core::{Exporter, Receiver};
use tokio::task::JoinHandle;

pub struct ParquetExporter {
    name: String,
    config: ParquetConfig,
    tail: Arc<LiveTail>,
}

impl ParquetExporter {
    /// `tail` receives the rows taken but not yet committed, for queries to read.
    pub fn new(name: impl Into<String>, config: ParquetConfig, tail: Arc<LiveTail>) -> Self {
        ParquetExporter {
            name: name.into(),
            config,
            tail,
        }
    }
}

/// Run blocking work on the writer off the async workers, handing the writer there and back.
async fn on_writer<T: Send + 'static>(
    writer: LakeWriter,
    f: impl FnOnce(&mut LakeWriter) -> T + Send + 'static,
) -> (LakeWriter, T) {
    let mut w = writer;
    match tokio::task::spawn_blocking(move || {
        let r = f(&mut w);
        (w, r)
    })
    .await
    {
        Ok(pair) => pair,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

impl Exporter for ParquetExporter {
    fn start(self: Box<Self>, mut input: Receiver) -> JoinHandle<Result<(), String>> {
        let name = self.name.clone();
        let tick_every =
            (self.config.max_file_age / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut writer = LakeWriter::new(self.name, self.config, self.tail);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(tick_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    next = input.recv() => {
                        let Some(batch) = next else { break };
                        let result;
                        (writer, result) = on_writer(writer, move |w| {
                            let (groups, guards) = batch.into_parts();
                            let r = w.append(&groups);
                            if let Err(WriteError::Arrow { .. }) = &r {
                                // The rows never reached the buffer: their clients must retry.
                                spanlake_core::fail_all(&guards);
                            }
                            // Rows are buffered: the batch's in-flight slot is free again.
                            drop(guards);
                            r
                        })
                        .await;
                        if let Err(e) = result {
                            tracing::error!(error = %e, "parquet: will retry the commit");
                        }
                    }
                    _ = tick.tick() => {
                        let now = tokio::time::Instant::now().into_std();
                        let result;
                        (writer, result) = on_writer(writer, move |w| w.commit_expired(now)).await;
                        if let Err(e) = result {
                            tracing::error!(error = %e, "parquet: will retry the commit");
                        }
                    }
                }
            }
            let (_, result) = on_writer(writer, |w| w.commit_all()).await;
            match result {
                Ok(files) => {
                    tracing::info!(exporter = %name, files = files.len(), "parquet: committed everything on shutdown");
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
