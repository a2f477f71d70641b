//! The batch processor.
//!
//! Spans are grouped into batches of at most `max_size`; a span waits at most `timeout` for its
//! batch; at most `max_inflight` batches are being exported at once. A batch holds an in-flight
//! slot until every exporter has taken it (the slot travels with the batch as a guard and is
//! released when the last copy is dropped). While all slots are taken the processor stops
//! reading its input, so the bounded queues upstream fill and receivers refuse with a
//! retryable error instead of anything growing without bound.

mod config;
mod split;

pub use config::{BatchConfig, ENV_OVERRIDES};
pub use split::Pending;

use std::sync::Arc;

use spanlake_core::{Batch, CancellationToken, Fanout, Processor, Receiver};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub struct BatchProcessor {
    config: BatchConfig,
    name: String,
}

impl BatchProcessor {
    pub fn new(name: impl Into<String>, config: BatchConfig) -> Self {
        BatchProcessor {
            config,
            name: name.into(),
        }
    }
}

impl Processor for BatchProcessor {
    fn start(
        self: Box<Self>,
        input: Receiver,
        output: Fanout,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(run(self.name, self.config, input, output, shutdown))
    }
}

struct Emitter {
    slots: Arc<Semaphore>,
    output: Fanout,
    name: String,
}

impl Emitter {
    /// Wait for an in-flight slot, then send. Returns false once the downstream is closed.
    async fn emit(&self, mut batch: Batch) -> bool {
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return false;
        };
        batch.add_guard(Arc::new(slot));
        match self.output.send(batch).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(processor = %self.name, error = %e, "batch lost: the exporters are gone");
                false
            }
        }
    }
}

async fn run(
    name: String,
    config: BatchConfig,
    mut input: Receiver,
    output: Fanout,
    shutdown: CancellationToken,
) {
    let emitter = Emitter {
        slots: Arc::new(Semaphore::new(config.max_inflight)),
        output,
        name,
    };
    let mut pending = Pending::default();
    let mut deadline: Option<Instant> = None;
    let mut draining = false;
    loop {
        tokio::select! {
            biased;
            next = input.recv() => {
                let Some(batch) = next else { break };
                if !batch.is_spans() || batch.is_empty() {
                    // A control message, or an empty batch carrying only guards (a client
                    // waiting on it), is not batched: it goes on at once.
                    if emitter.output.send(batch).await.is_err() {
                        return;
                    }
                    continue;
                }
                let arrived_into_empty = pending.is_empty();
                pending.push(batch);
                let mut emitted = false;
                while pending.len() >= config.max_size {
                    let chunk = pending.take(config.max_size);
                    emitted = true;
                    if !emitter.emit(chunk).await {
                        return;
                    }
                }
                if pending.is_empty() {
                    deadline = None;
                } else if draining || (config.flush_when_idle && input.is_empty()) {
                    deadline = Some(Instant::now());
                } else if arrived_into_empty || emitted {
                    // What is left arrived with this batch (older spans leave first).
                    deadline = Some(Instant::now() + config.timeout);
                }
            }
            _ = shutdown.cancelled(), if !draining => {
                // From now on nothing waits: flush what is held, then pass batches on as they come.
                draining = true;
                deadline = if pending.is_empty() { None } else { Some(Instant::now()) };
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                deadline = None;
                let chunk = pending.take(config.max_size);
                if !emitter.emit(chunk).await {
                    return;
                }
            }
        }
    }
    // Input closed: flush everything, still within the size and in-flight limits.
    while !pending.is_empty() {
        let chunk = pending.take(config.max_size);
        if !emitter.emit(chunk).await {
            return;
        }
    }
}

/// Wait for `deadline`; one already reached is ready at once, without a timer: tokio rounds a
/// timer up to the next millisecond, which every flush of an idle queue (deadline "now") would
/// wait, and the worker wake up for.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) if d <= Instant::now() => {}
        Some(d) => tokio::time::sleep_until(d).await,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use spanlake_core::bounded;
    use std::time::Duration;

    fn spans(n: usize, first: usize) -> Batch {
        let spans = (first..first + n)
            .map(|i| Span {
                name: i.to_string(),
                ..Default::default()
            })
            .collect();
        Batch::spans(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    fn names(b: &Batch) -> Vec<usize> {
        let spanlake_core::Signal::Spans(blocks) = &b.signal else {
            panic!("spans expected")
        };
        blocks
            .iter()
            .flat_map(|b| {
                b.spans()
                    .iter()
                    .map(move |s| b.str(s.name).parse().expect("number"))
            })
            .collect()
    }

    struct Harness {
        input: spanlake_core::Sender,
        output: spanlake_core::Receiver,
        task: JoinHandle<()>,
        shutdown: CancellationToken,
    }

    /// A processor that waits for `timeout` (the seeds' batching), as most tests check.
    fn start(max_size: usize, timeout_ms: u64, max_inflight: usize, in_cap: usize) -> Harness {
        start_with(max_size, timeout_ms, max_inflight, in_cap, false)
    }

    fn start_with(
        max_size: usize,
        timeout_ms: u64,
        max_inflight: usize,
        in_cap: usize,
        flush_when_idle: bool,
    ) -> Harness {
        let (input, in_rx) = bounded("in", in_cap);
        let (out_tx, output) = bounded("out", 1000);
        let config = BatchConfig {
            max_size,
            timeout: Duration::from_millis(timeout_ms),
            max_inflight,
            flush_when_idle,
        };
        let shutdown = CancellationToken::new();
        let task = Box::new(BatchProcessor::new("batch", config)).start(
            in_rx,
            Fanout::new(vec![out_tx]),
            shutdown.clone(),
        );
        Harness {
            input,
            output,
            task,
            shutdown,
        }
    }

    /// Let the processor task run until it waits again.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn try_next(h: &mut Harness) -> Option<Option<Batch>> {
        futures_now(h.output.recv())
    }

    fn futures_now<F: std::future::Future>(f: F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_span_waits_at_most_the_timeout() {
        let mut h = start(100, 1000, 3, 8);
        h.input.send(spans(3, 0)).await.expect("send");
        settle().await;
        tokio::time::advance(Duration::from_millis(999)).await;
        settle().await;
        assert!(try_next(&mut h).is_none(), "sent before its timeout");
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        let b = try_next(&mut h).flatten().expect("sent at its timeout");
        assert_eq!(names(&b), vec![0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_counts_from_the_first_span_of_the_batch() {
        let mut h = start(100, 1000, 3, 8);
        h.input.send(spans(1, 0)).await.expect("send");
        settle().await;
        tokio::time::advance(Duration::from_millis(600)).await;
        h.input.send(spans(1, 1)).await.expect("send");
        settle().await;
        tokio::time::advance(Duration::from_millis(400)).await;
        settle().await;
        let b = try_next(&mut h).flatten().expect("both spans at 1000ms");
        assert_eq!(names(&b), vec![0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn big_requests_are_split_at_max_size() {
        let mut h = start(100, 1000, 10, 8);
        h.input.send(spans(250, 0)).await.expect("send");
        settle().await;
        let a = try_next(&mut h)
            .flatten()
            .expect("first full batch at once");
        let b = try_next(&mut h)
            .flatten()
            .expect("second full batch at once");
        assert_eq!((a.len(), b.len()), (100, 100));
        assert_eq!(names(&a), (0..100).collect::<Vec<_>>());
        assert!(try_next(&mut h).is_none(), "the rest waits for the timeout");
        tokio::time::advance(Duration::from_millis(1000)).await;
        settle().await;
        let c = try_next(&mut h).flatten().expect("rest at the timeout");
        assert_eq!(names(&c), (200..250).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn max_inflight_pushes_back_upstream() {
        let mut h = start(10, 1000, 2, 1);
        for i in 0..3 {
            h.input.send(spans(10, i * 10)).await.expect("send");
            settle().await;
        }
        let first = try_next(&mut h).flatten().expect("first");
        let second = try_next(&mut h).flatten().expect("second");
        assert!(
            try_next(&mut h).is_none(),
            "a third batch while two are in flight"
        );
        // The processor is stuck waiting for a slot: its input queue fills, and stays full.
        h.input
            .send(spans(10, 30))
            .await
            .expect("one more fits in the queue");
        settle().await;
        assert_eq!(
            h.input.try_send(spans(1, 99)),
            Err(spanlake_core::SendError::Full("in".into()))
        );
        drop(first); // an exporter finished a batch
        settle().await;
        let third = try_next(&mut h)
            .flatten()
            .expect("third once a slot is free");
        assert_eq!(names(&third), (20..30).collect::<Vec<_>>());
        drop((second, third));
        let Harness {
            input,
            mut output,
            task,
            ..
        } = h;
        drop(input);
        let fourth = output.recv().await.expect("flushed on close");
        assert_eq!(names(&fourth), (30..40).collect::<Vec<_>>());
        task.await.expect("processor exits when its input closes");
    }

    #[tokio::test(start_paused = true)]
    async fn with_flush_when_idle_a_partial_batch_leaves_once_the_queue_is_empty() {
        let mut h = start_with(100, 60_000, 3, 8, true);
        // three batches queued at once are taken together, then sent without waiting
        for i in 0..3 {
            h.input.send(spans(10, i * 10)).await.expect("send");
        }
        settle().await;
        let b = try_next(&mut h)
            .flatten()
            .expect("sent once nothing more was queued");
        assert_eq!(names(&b), (0..30).collect::<Vec<_>>());
        assert!(try_next(&mut h).is_none());
        // a big request is still cut at max_size
        h.input.send(spans(150, 100)).await.expect("send");
        settle().await;
        let a = try_next(&mut h).flatten().expect("full batch");
        let b = try_next(&mut h).flatten().expect("the rest, at once");
        assert_eq!((a.len(), b.len()), (100, 50));
    }

    /// On the real clock: an idle queue's partial batch is out as soon as the processor has
    /// run, not after a timer set to "now" — tokio rounds timers up to the next millisecond,
    /// which every request would wait (and the worker wake up for).
    #[tokio::test]
    async fn with_flush_when_idle_no_timer_holds_the_batch() {
        let mut h = start_with(100, 60_000, 3, 8, true);
        for round in 0..20 {
            h.input.send(spans(10, round * 10)).await.expect("send");
            settle().await;
            let b = try_next(&mut h)
                .flatten()
                .expect("out without waiting for a timer");
            assert_eq!(b.len(), 10);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn on_shutdown_nothing_waits_for_its_timeout() {
        let mut h = start(100, 60_000, 3, 8);
        h.input.send(spans(3, 0)).await.expect("send");
        settle().await;
        assert!(try_next(&mut h).is_none());
        h.shutdown.cancel();
        settle().await;
        let b = try_next(&mut h)
            .flatten()
            .expect("flushed at once on shutdown");
        assert_eq!(names(&b), vec![0, 1, 2]);
        // and later arrivals pass straight through, without waiting for the timeout
        h.input.send(spans(2, 3)).await.expect("send");
        settle().await;
        let b = try_next(&mut h).flatten().expect("passed on at once");
        assert_eq!(names(&b), vec![3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_the_input_flushes_everything() {
        let mut h = start(4, 60_000, 100, 8);
        h.input.send(spans(10, 0)).await.expect("send");
        drop(h.input);
        h.task.await.expect("exits");
        let mut got = Vec::new();
        while let Some(b) = h.output.recv().await {
            assert!(b.len() <= 4);
            got.extend(names(&b));
        }
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }
}
