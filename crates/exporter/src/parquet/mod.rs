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

use spanlake_core::{Batch, Exporter, Guard, IntakeError, Pressure, Receiver, Signal, SpanBlock};
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

/// The writer's own thread: every piece of blocking work on the lake (taking batches into the
/// write-ahead log, sealing row groups, committing files, the log's fsyncs) runs there, one at
/// a time, off the async workers. (Without a log, taking a batch is only buffering it: the
/// exporter's task does that itself, see [`takes_inline`].) On tokio's blocking pool the work
/// hopped between threads, each with its allocator's own partly used pages: with one thread
/// the sidecar peaks ~2 MiB lower at 10k spans/s, and the writer shows by name in `top -H` and
/// profiles. The fsync runs here too:
/// on tokio's blocking pool it cost one more hop a batch and waited a timer's tick (~1 ms).
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

/// At most this many batches share one trip to the writer's thread.
const GROUP_MAX: usize = 64;

/// What a batch brings to the write-ahead log, about: its spans' memory, its logs' protobuf.
fn batch_bytes(batch: &Batch) -> usize {
    match &batch.signal {
        Signal::Spans(blocks) => blocks.iter().map(SpanBlock::heap_bytes).sum(),
        Signal::Logs(groups) => groups.iter().map(prost::Message::encoded_len).sum(),
        Signal::EndTrace(_) => 0,
    }
}

/// The batches that go to the writer's thread together with `first` (group commit): those
/// waiting now and those arriving within `wait` (`wal.sync_interval`), up to `max_bytes`
/// (`wal.sync_bytes`) or [`GROUP_MAX`] batches.
async fn gather(
    first: Batch,
    input: &mut Receiver,
    wait: Duration,
    max_bytes: usize,
) -> Vec<Batch> {
    let deadline = Instant::now() + wait;
    let mut bytes = batch_bytes(&first);
    let mut group = vec![first];
    while group.len() < GROUP_MAX && bytes < max_bytes {
        let next = match input.try_recv() {
            Some(b) => b,
            None if wait.is_zero() => break,
            None => match tokio::time::timeout_at(deadline, input.recv()).await {
                Ok(Some(b)) => b,
                Ok(None) | Err(_) => break,
            },
        };
        if matches!(next.signal, Signal::EndTrace(_)) {
            continue;
        }
        bytes += batch_bytes(&next);
        group.push(next);
    }
    group
}

/// What a trip to the writer's thread did, for the exporter's task to act on.
#[derive(Default)]
struct Outcome {
    /// A batch could not be taken (its clients were told to retry).
    refused: Option<WriteError>,
    /// An fsync failed (the clients of every batch it covered were told to retry).
    unsynced: Option<std::io::Error>,
    /// What committing the files that were due gave.
    committed: Option<Result<Vec<Committed>, WriteError>>,
}

/// Written to the write-ahead log, not yet fsynced: the files, the clients waiting.
#[derive(Default)]
struct Unsynced {
    files: Vec<Arc<std::fs::File>>,
    acks: Vec<Guard>,
    bytes: usize,
}

impl Unsynced {
    fn add(&mut self, written: Written, acks: Vec<Guard>) {
        if !self.files.iter().any(|f| Arc::ptr_eq(f, &written.file)) {
            self.files.push(written.file);
        }
        self.bytes += written.bytes;
        self.acks.extend(acks);
    }

    /// One fsync of every file written since the last; then the clients waiting on it are
    /// answered (told to retry, when it failed).
    fn sync(&mut self, out: &mut Outcome) {
        if let Err(e) = self.files.iter().try_for_each(|f| f.sync_data()) {
            spanlake_core::fail_all(&self.acks);
            out.unsynced = Some(e);
        }
        self.files.clear();
        self.acks.clear();
        self.bytes = 0;
    }
}

/// On the writer's thread, one trip for a group of batches: take each; make what went to the
/// write-ahead log durable, one fsync for every `sync_bytes` written (group commit); answer
/// the clients; then seal the row groups and (when `commit`: commits are not backing off)
/// commit the files that are due. Clients are answered before any sealing, and from here: the
/// fsync waits on the disk in this thread, not in another the answer would hop through. A full
/// log refuses its batch and (when `commit`) has everything buffered committed at once, which
/// frees it for the rest of the group.
fn take_group(w: &mut LakeWriter, group: Vec<Batch>, sync_bytes: usize, commit: bool) -> Outcome {
    let (mut out, took) = take_batches(w, group, sync_bytes, commit);
    if took {
        seal_due(w, commit, &mut out);
    }
    out
}

/// [`take_group`] up to the seal: whether a batch was taken, and what became of them.
fn take_batches(
    w: &mut LakeWriter,
    group: Vec<Batch>,
    sync_bytes: usize,
    mut commit: bool,
) -> (Outcome, bool) {
    let mut out = Outcome::default();
    let mut log = Unsynced::default();
    let mut took = false;
    for batch in group {
        let (signal, guards) = batch.into_signal();
        let taken = match signal {
            Signal::Spans(blocks) => w.take(blocks),
            Signal::Logs(groups) => w.take_logs(&groups),
            Signal::EndTrace(_) => Ok(None),
        };
        match taken {
            Ok(Some(written)) => {
                took = true;
                // The in-flight slot and the memory go back now; the clients are answered
                // after the fsync.
                let (acks, rest) = spanlake_core::split_acks(guards);
                drop(rest);
                log.add(written, acks);
                if log.bytes >= sync_bytes {
                    log.sync(&mut out);
                }
            }
            // Buffered (memory acknowledgements): the clients can be told.
            Ok(None) => {
                took = true;
                drop(guards);
            }
            Err(e) => {
                spanlake_core::fail_all(&guards);
                let full = matches!(
                    e,
                    WriteError::Wal {
                        source: wal::WalError::Full { .. },
                        ..
                    }
                );
                out.refused = Some(e);
                if full && commit {
                    // Make room: everything buffered goes to its files now (the batches of
                    // this group taken so far included: their spans are then in fsynced files,
                    // whatever becomes of their log records).
                    let result = w.commit_all();
                    commit = result.is_ok();
                    out.committed = Some(result);
                }
            }
        }
    }
    if !log.files.is_empty() {
        log.sync(&mut out);
    }
    (out, took)
}

/// Seal the row groups that are complete and (when `commit`) commit the files that are due.
/// While commits are failing, row groups are still sealed (memory).
fn seal_due(w: &mut LakeWriter, commit: bool, out: &mut Outcome) {
    if w.has_work() {
        if commit {
            out.committed = Some(w.commit_full());
        } else {
            w.seal_ready();
        }
    }
}

/// Whether the async task takes `group` itself: without a write-ahead log, taking spans is
/// moving them into the buffer (a copy of each block), quicker than a trip to the writer's
/// thread and back — two wake-ups a request at 10k spans/s, and the client waits for both.
/// Log records are turned into Arrow rows when taken: they still go to the thread.
fn takes_inline(w: &LakeWriter, group: &[Batch]) -> bool {
    w.wal().is_none()
        && group
            .iter()
            .all(|b| matches!(b.signal, Signal::Spans(_) | Signal::EndTrace(_)))
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
        // Group commit: with durable acknowledgements, batches arriving within
        // `wal.sync_interval` share an fsync.
        let wait = if writer.wal().is_some() {
            config.wal.sync_interval
        } else {
            Duration::ZERO
        };
        let sync_bytes = config.wal.sync_bytes;
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
                        let group = gather(batch, &mut input, wait, sync_bytes).await;
                        let commit = backoff.ready();
                        let mut out;
                        if takes_inline(&writer, &group) {
                            // Only sealing and commits, when due, go to the thread.
                            let took;
                            (out, took) = take_batches(&mut writer, group, sync_bytes, commit);
                            if took && writer.has_work() {
                                (writer, out) = thread
                                    .run(writer, move |w| {
                                        let mut out = out;
                                        seal_due(w, commit, &mut out);
                                        out
                                    })
                                    .await;
                            }
                        } else {
                            (writer, out) = thread
                                .run(writer, move |w| take_group(w, group, sync_bytes, commit))
                                .await;
                        }
                        if let Some(e) = &out.unsynced {
                            tracing::error!(exporter = %name, error = %e, "parquet: cannot fsync the write-ahead log; clients will retry");
                            pressure.refuse(
                                &disk_fault(&name),
                                IntakeError::Unavailable(format!("the write-ahead log cannot be synced: {e}")),
                                Some(Duration::from_secs(1)),
                            );
                        }
                        if let Some(result) = &out.committed {
                            backoff.record(&name, result);
                        }
                        if let Some(e) = &out.refused {
                            refuse_for(&name, e, &pressure);
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
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
    use spanlake_core::{Ack, AckWait, TraceEnd};
    use std::future::Future;

    /// A batch of one span whose attribute holds `size` bytes, and its client's answer.
    fn batch(id: u8, size: usize) -> (Batch, AckWait) {
        let span = Span {
            trace_id: vec![id; 16],
            span_id: vec![id; 8],
            name: format!("s{id}"),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_000_000_010,
            attributes: vec![KeyValue {
                key: "payload".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("x".repeat(size))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut b = Batch::spans(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }]);
        let (guard, wait) = Ack::pair();
        b.add_guard(guard);
        (b, wait)
    }

    fn durable_config(tag: &str) -> ParquetConfig {
        let path = std::env::temp_dir().join(format!(
            "spanlake-exporter-{tag}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        ParquetConfig {
            path,
            wal: WalConfig {
                segment_size: 16 * 1024,
                max_size: 32 * 1024,
                ..WalConfig::default()
            },
            ..ParquetConfig::default()
        }
    }

    /// One trip to the writer's thread takes a group of batches into the write-ahead log: when
    /// it returns, every client is answered — stored, or told to retry when the log had no
    /// room for its batch, without failing the others — and a crash right after loses none of
    /// the stored ones. When commits may run, the full log has what is buffered committed at
    /// once (the first batch goes to a file, the third to the freed log); otherwise both wait
    /// in the log.
    #[tokio::test]
    async fn a_group_of_batches_is_logged_synced_and_answered_in_one_trip() {
        for (sync_bytes, commit) in [(1, false), (4 << 20, false), (4 << 20, true)] {
            let case = format!("sync_bytes {sync_bytes}, commit {commit}");
            let config = durable_config("group");
            let (mut w, _) =
                LakeWriter::open("parquet", config.clone(), Arc::default(), true).expect("open");
            let (group, waits): (Vec<_>, Vec<_>) = [(1, 10), (2, 40_000), (3, 10)]
                .map(|(id, size)| batch(id, size))
                .into_iter()
                .unzip();
            let out = take_group(&mut w, group, sync_bytes, commit);
            assert!(
                matches!(
                    out.refused,
                    Some(WriteError::Wal {
                        source: wal::WalError::Full { .. },
                        ..
                    })
                ),
                "the large batch does not fit the log: {case}"
            );
            assert!(out.unsynced.is_none());
            // Answered already: no trip, timer or other task is needed any more.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let answers: Vec<_> = waits
                .into_iter()
                .map(|wait| std::pin::pin!(wait.wait()).as_mut().poll(&mut cx))
                .collect();
            assert_eq!(
                answers,
                [true, false, true].map(std::task::Poll::Ready),
                "{case}"
            );
            let committed = match out.committed {
                None => 0,
                Some(Ok(files)) => files.iter().map(|f| f.rows).sum(),
                Some(Err(e)) => panic!("{case}: {e}"),
            };
            assert_eq!(committed, usize::from(commit), "{case}");
            drop(w); // a crash
            let (w, report) =
                LakeWriter::open("parquet", config.clone(), Arc::default(), true).expect("reopen");
            assert_eq!(report.expect("durable").spans, 2 - committed, "{case}");
            assert_eq!(w.buffered_rows(), 2 - committed);
            std::fs::remove_dir_all(&config.path).ok();
        }
    }

    /// The batches waiting when one arrives go with it (ends of traces, which the lake does not
    /// store, left out), up to the bytes of one fsync; with an interval, so do those arriving
    /// within it.
    #[tokio::test]
    async fn waiting_batches_share_the_trip_up_to_the_bytes_of_one_fsync() {
        let (tx, mut rx) = spanlake_core::channel::bounded("exporter", 16);
        for id in 2..=4 {
            tx.try_send(batch(id, 10).0).expect("room");
        }
        tx.try_send(Batch::end_trace(TraceEnd {
            trace_id: vec![9; 16],
            status: Status::default(),
            end_time_unix_nano: 0,
        }))
        .expect("room");
        tx.try_send(batch(5, 10).0).expect("room");
        let group = gather(batch(1, 10).0, &mut rx, Duration::ZERO, usize::MAX).await;
        assert_eq!(
            group.iter().map(Batch::len).sum::<usize>(),
            5,
            "every span batch waiting"
        );
        assert!(rx.try_recv().is_none());

        for id in 2..=4 {
            tx.try_send(batch(id, 1000).0).expect("room");
        }
        let first = batch(1, 1000).0;
        let one = batch_bytes(&first);
        let group = gather(first, &mut rx, Duration::ZERO, 2 * one).await;
        assert_eq!(group.len(), 2, "up to sync_bytes");
        let group = gather(
            rx.try_recv().expect("left"),
            &mut rx,
            Duration::ZERO,
            usize::MAX,
        )
        .await;
        assert_eq!(group.len(), 2, "the rest, on the next trip");

        let late = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            late.send(batch(2, 1000).0).await.expect("open");
        });
        let group = gather(batch(1, 1000).0, &mut rx, Duration::from_secs(10), 2 * one).await;
        assert_eq!(group.len(), 2, "one arriving within the interval");
        let group = gather(
            batch(1, 10).0,
            &mut rx,
            Duration::from_millis(30),
            usize::MAX,
        )
        .await;
        assert_eq!(group.len(), 1, "none arrives within the interval");
    }

    /// The `.parquet` files under `dir`, and the rows each holds (read from its footer).
    fn lake_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, i64)> {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        writer::tests::files(dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .map(|path| {
                let file = std::fs::File::open(&path).expect("open");
                let rows = SerializedFileReader::new(file)
                    .expect("footer")
                    .metadata()
                    .file_metadata()
                    .num_rows();
                (path, rows)
            })
            .collect()
    }

    /// With memory acknowledgements (no write-ahead log) the exporter's task takes batches
    /// itself, without a trip to the writer's thread: each client is answered once its batch
    /// is buffered, and when a file is due its rows are still sealed and committed at once
    /// (on the writer's thread), not at the file's age.
    #[tokio::test]
    async fn memory_acknowledged_batches_are_taken_at_once_and_committed_when_due() {
        // A fresh lake's path; no log is opened (not durable).
        let mut config = durable_config("memory");
        config.max_rows_per_file = 4;
        config.row_group_size = 2;
        config.max_file_age = Duration::from_secs(3600);
        let exporter = ParquetExporter::open(
            "parquet",
            config.clone(),
            Arc::default(),
            Pressure::new(0),
            false,
        )
        .expect("open");
        let (tx, rx) = spanlake_core::channel::bounded("exporter", 16);
        let task = Box::new(exporter).start(rx);
        for id in 1..=3 {
            let (b, wait) = batch(id, 10);
            tx.send(b).await.expect("open");
            assert!(wait.wait().await, "batch {id} answered as stored");
        }
        assert!(lake_files(&config.path).is_empty(), "no file is due yet");
        let (b, wait) = batch(4, 10);
        tx.send(b).await.expect("open");
        assert!(wait.wait().await);
        let mut files = Vec::new();
        for _ in 0..500 {
            files = lake_files(&config.path);
            if !files.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(files.len(), 1, "the due file is committed: {files:?}");
        assert_eq!(files[0].1, 4);
        let (b, wait) = batch(5, 10);
        tx.send(b).await.expect("open");
        assert!(wait.wait().await);
        drop(tx);
        task.await.expect("joined").expect("closed cleanly");
        let rows: i64 = lake_files(&config.path).iter().map(|f| f.1).sum();
        assert_eq!(rows, 5, "the last batch committed on shutdown");
        std::fs::remove_dir_all(&config.path).ok();
    }

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
