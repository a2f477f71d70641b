//! The Parquet exporter: the lake.

mod config;
pub mod convert;
mod flat;
pub mod logs;
mod maps;
mod own;
pub mod schema;
mod sealed;
mod tail;
pub mod wal;
mod writer;

pub use config::ParquetConfig;
pub use schema::Table;
pub use sealed::{HeldSpans, SealError, Sealed};
pub use tail::LiveTail;
pub use wal::{ReplayReport, WalConfig};
pub use writer::{Committed, LakeWriter, WriteError, writer_properties};

use std::sync::Arc;
use std::time::Duration;

use spanlake_core::{Exporter, Guard, IntakeError, Pressure, Receiver, Signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use wal::Written;

pub struct ParquetExporter {
    name: String,
    config: ParquetConfig,
    writer: LakeWriter,
    pressure: Arc<Pressure>,
}

impl ParquetExporter {
    /// Open the lake at `config.path` (it must be writable). `tail` receives the rows taken but
    /// not yet committed, for queries to read. With `durable`, spans are acknowledged only once
    /// they are in the fsynced write-ahead log, and the log left by a previous run is replayed
    /// here, before anything new is taken.
    pub fn open(
        name: impl Into<String>,
        config: ParquetConfig,
        tail: Arc<LiveTail>,
        pressure: Arc<Pressure>,
        durable: bool,
    ) -> Result<Self, WriteError> {
        let name = name.into();
        let (writer, report) = LakeWriter::open(name.clone(), config.clone(), tail, durable)?;
        if let Some(r) = report
            && r.records > 0
        {
            tracing::info!(exporter = %name, segments = r.segments, records = r.records, spans = r.spans, torn_bytes = r.torn_bytes, set_aside = r.set_aside.len(), "parquet: replayed the write-ahead log");
        }
        Ok(ParquetExporter {
            name,
            config,
            writer,
            pressure,
        })
    }

    /// Spans buffered now (replayed from the write-ahead log, before the exporter starts).
    pub fn buffered_rows(&self) -> usize {
        self.writer.buffered_rows()
    }
}

/// A job for the writer's thread.
type Job = Box<dyn FnOnce() + Send>;

/// The writer's own thread: every piece of blocking work on the lake (taking batches, sealing
/// row groups, committing files) runs there, one at a time, off the async workers. On tokio's
/// blocking pool the work hopped between threads (the log's fsyncs run there too), each with
/// its allocator's own partly used pages: with one thread the sidecar peaks ~2 MiB lower at
/// 10k spans/s, and the writer shows by name in `top -H` and profiles.
struct WriterThread {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl WriterThread {
    fn spawn() -> std::io::Result<WriterThread> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("spanlake-writer".into())
            .spawn(move || {
                for job in rx {
                    job();
                }
            })?;
        Ok(WriterThread { jobs })
    }

    /// Run `f` on the writer on its thread, handing the writer there and back; a panic there
    /// goes on here.
    async fn run<T: Send + 'static>(
        &self,
        writer: LakeWriter,
        f: impl FnOnce(&mut LakeWriter) -> T + Send + 'static,
    ) -> (LakeWriter, T) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let mut w = writer;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut w)));
            let _ = tx.send(r.map(|r| (w, r)));
        });
        // The thread ends only when this sender is dropped; should it be gone all the same,
        // the job runs here.
        if let Err(std::sync::mpsc::SendError(job)) = self.jobs.send(job) {
            job();
        }
        match rx
            .await
            .expect("the writer thread runs every job it is given")
        {
            Ok(pair) => pair,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Written to the log, waiting for the fsync that acknowledges it.
struct Unsynced {
    written: Written,
    guards: Vec<Guard>,
}

/// Group commit: one fsync for every record written since the last one, within
/// `sync_interval` or `sync_bytes`; then the clients waiting on them are acknowledged.
async fn sync_loop(
    mut rx: mpsc::Receiver<Unsynced>,
    interval: Duration,
    sync_bytes: usize,
    name: String,
    pressure: Arc<Pressure>,
) {
    while let Some(first) = rx.recv().await {
        let deadline = Instant::now() + interval;
        let mut bytes = first.written.bytes;
        let mut group = vec![first];
        while bytes < sync_bytes {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(u)) => {
                    bytes += u.written.bytes;
                    group.push(u);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut files: Vec<Arc<std::fs::File>> = Vec::new();
        for u in &group {
            if !files.iter().any(|f| Arc::ptr_eq(f, &u.written.file)) {
                files.push(Arc::clone(&u.written.file));
            }
        }
        let synced =
            tokio::task::spawn_blocking(move || files.iter().try_for_each(|f| f.sync_data())).await;
        match synced {
            Ok(Ok(())) => drop(group),
            Ok(Err(e)) => {
                tracing::error!(exporter = %name, error = %e, "parquet: cannot fsync the write-ahead log; clients will retry");
                pressure.refuse(
                    &disk_fault(&name),
                    IntakeError::Unavailable(format!("the write-ahead log cannot be synced: {e}")),
                    Some(Duration::from_secs(1)),
                );
                for u in &group {
                    spanlake_core::fail_all(&u.guards);
                }
            }
            Err(e) => {
                tracing::error!(exporter = %name, error = %e, "parquet: the fsync task failed");
                for u in &group {
                    spanlake_core::fail_all(&u.guards);
                }
            }
        }
    }
}

/// Commit retries: after a failure, wait before trying again, longer each time.
struct Backoff {
    retry_at: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(30);

    fn ready(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    fn record(&mut self, name: &str, result: &Result<Vec<Committed>, WriteError>) {
        match result {
            Ok(_) => {
                if self.retry_at.take().is_some() {
                    tracing::info!(exporter = %name, "parquet: the lake takes files again");
                }
                self.delay = Self::FIRST;
            }
            Err(e) => {
                tracing::error!(exporter = %name, error = %e, retry_in = ?self.delay, "parquet: cannot commit; the spans stay buffered and are retried");
                self.retry_at = Some(Instant::now() + self.delay);
                self.delay = (self.delay * 2).min(Self::MAX);
            }
        }
    }
}

/// Tell admission what the writer holds: its buffered memory, and whether its log is full.
fn report(name: &str, w: &LakeWriter, reported: &mut usize, pressure: &Pressure) {
    let now = w.buffered_bytes();
    pressure.buffered(now as isize - *reported as isize);
    *reported = now;
    if let Some(wal) = w.wal()
        && wal.size() < wal.max_size() / 10 * 9
    {
        pressure.clear(&log_full(name));
    }
}

impl Exporter for ParquetExporter {
    fn start(self: Box<Self>, mut input: Receiver) -> JoinHandle<Result<(), String>> {
        let ParquetExporter {
            name,
            config,
            mut writer,
            pressure,
        } = *self;
        let tick_every =
            (config.max_file_age / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let durable = writer.wal().is_some();
        let (sync_tx, sync_task) = if durable {
            let (tx, rx) = mpsc::channel(1024);
            let task = tokio::spawn(sync_loop(
                rx,
                config.wal.sync_interval,
                config.wal.sync_bytes,
                name.clone(),
                Arc::clone(&pressure),
            ));
            (Some(tx), Some(task))
        } else {
            (None, None)
        };
        tokio::spawn(async move {
            let thread = WriterThread::spawn()
                .map_err(|e| format!("exporter {name}: cannot start the writer's thread: {e}"))?;
            let mut backoff = Backoff {
                retry_at: None,
                delay: Backoff::FIRST,
            };
            let mut reported = 0usize;
            // Spans replayed from the log go to their files first.
            if writer.buffered_rows() > 0 {
                let result;
                (writer, result) = thread.run(writer, |w| w.commit_all()).await;
                backoff.record(&name, &result);
            }
            report(&name, &writer, &mut reported, &pressure);
            let mut tick = tokio::time::interval(tick_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    next = input.recv() => {
                        let Some(batch) = next else { break };
                        if matches!(batch.signal, Signal::EndTrace(_)) {
                            continue;
                        }
                        let out;
                        (writer, out) = thread.run(writer, move |w| {
                            let (signal, guards) = batch.into_signal();
                            let taken = match signal {
                                Signal::Spans(blocks) => w.take(blocks),
                                Signal::Logs(groups) => w.take_logs(&groups),
                                Signal::EndTrace(_) => Ok(None),
                            };
                            (taken, guards)
                        })
                        .await;
                        let (taken, guards) = out;
                        let taken_ok = taken.is_ok();
                        match taken {
                            Ok(Some(written)) => {
                                // The spans are taken: the in-flight slot and the memory go back
                                // now; the clients are answered after the fsync.
                                let (acks, rest) = spanlake_core::split_acks(guards);
                                drop(rest);
                                if let Some(tx) = &sync_tx {
                                    let u = Unsynced { written, guards: acks };
                                    if let Err(mpsc::error::SendError(u)) = tx.send(u).await {
                                        spanlake_core::fail_all(&u.guards);
                                    }
                                }
                            }
                            // Buffered (memory acknowledgements): the clients can be told.
                            Ok(None) => drop(guards),
                            Err(e) => {
                                spanlake_core::fail_all(&guards);
                                drop(guards);
                                refuse_for(&name, &e, &pressure);
                                if matches!(e, WriteError::Wal { source: wal::WalError::Full { .. }, .. }) && backoff.ready() {
                                    // Make room: everything buffered goes to its files now.
                                    let result;
                                    (writer, result) = thread.run(writer, |w| w.commit_all()).await;
                                    backoff.record(&name, &result);
                                }
                            }
                        }
                        // Row groups and files are encoded after the clients of this batch
                        // are answered (or its fsync is under way), not before.
                        // While commits are failing, row groups are still sealed (memory).
                        if taken_ok && writer.has_work() {
                            if backoff.ready() {
                                let result;
                                (writer, result) = thread.run(writer, |w| w.commit_full()).await;
                                backoff.record(&name, &result);
                            } else {
                                (writer, ()) = thread.run(writer, |w| w.seal_ready()).await;
                            }
                        }
                        report(&name, &writer, &mut reported, &pressure);
                    }
                    _ = tick.tick() => {
                        if !backoff.ready() {
                            continue;
                        }
                        let now = Instant::now().into_std();
                        // Give memory or log space back early when either runs short.
                        let short = pressure.wants_memory_back()
                            || writer.wal().is_some_and(|w| w.size() > w.max_size() / 2);
                        let result;
                        (writer, result) = thread.run(writer, move |w| {
                            if short { w.commit_all() } else { w.commit_expired(now) }
                        })
                        .await;
                        backoff.record(&name, &result);
                        report(&name, &writer, &mut reported, &pressure);
                    }
                }
            }
            let (writer, result) = thread.run(writer, |w| w.commit_all_and_close()).await;
            pressure.buffered(-(reported as isize));
            // Every acknowledgement waiting on an fsync is answered before the task ends.
            drop(sync_tx);
            if let Some(t) = sync_task {
                let _ = t.await;
            }
            match result {
                Ok(files) => {
                    tracing::info!(exporter = %name, files = files.len(), "parquet: committed everything on shutdown");
                    Ok(())
                }
                Err(e) if writer.wal().is_some() => {
                    tracing::warn!(exporter = %name, error = %e, rows = writer.buffered_rows(), "parquet: could not commit on shutdown; the spans are in the write-ahead log and are written at the next start");
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// After a failure to take spans, refuse new requests until it clears: a full log until
/// commits make room, a failing disk for a second at a time (then requests probe it again).
fn refuse_for(name: &str, e: &WriteError, pressure: &Pressure) {
    match e {
        WriteError::Wal {
            source: wal::WalError::Full { .. },
            ..
        } => {
            tracing::warn!(exporter = %name, error = %e, "parquet: refusing spans until committed files free the write-ahead log");
            pressure.refuse(&log_full(name), IntakeError::Full(e.to_string()), None);
        }
        _ => {
            tracing::error!(exporter = %name, error = %e, "parquet: cannot take spans; clients will retry");
            pressure.refuse(
                &disk_fault(name),
                IntakeError::Unavailable(e.to_string()),
                Some(Duration::from_secs(1)),
            );
        }
    }
}

/// The refusal a full log raises, cleared once commits free the log.
fn log_full(name: &str) -> String {
    format!("{name}: write-ahead log full")
}

/// The refusal a failing disk raises: it expires after a second, so requests probe the disk
/// again (and are refused again while it fails).
fn disk_fault(name: &str) -> String {
    format!("{name}: disk fault")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work on the writer runs on its one named thread, in order, the writer coming back each
    /// time; a panic there goes on in the exporter's task.
    #[tokio::test]
    async fn the_writer_works_on_its_own_thread() {
        let thread = WriterThread::spawn().expect("thread");
        let mut writer = LakeWriter::new("parquet", ParquetConfig::default(), Arc::default());
        let mut seen = Vec::new();
        for i in 0..3 {
            let name;
            (writer, name) = thread
                .run(writer, move |w| {
                    let me = std::thread::current();
                    (me.name().map(str::to_owned), me.id(), w.buffered_rows() + i)
                })
                .await;
            seen.push(name);
        }
        assert!(
            seen.iter()
                .all(|(n, _, _)| n.as_deref() == Some("spanlake-writer"))
        );
        assert!(seen.iter().all(|(_, id, _)| *id == seen[0].1), "one thread");
        assert_ne!(seen[0].1, std::thread::current().id());
        assert_eq!(seen.iter().map(|s| s.2).collect::<Vec<_>>(), [0, 1, 2]);
        let task =
            tokio::spawn(
                async move { thread.run(writer, |_| panic!("a bug in the writer")).await },
            );
        match task.await {
            Err(e) => assert!(e.is_panic()),
            Ok(_) => panic!("the panic did not go on"),
        }
    }
}
