//! Admission control: whether the collector can take one more request right now.
//!
//! Receivers ask before decoding a request, from its size on the wire; exporters say when they
//! cannot take more (their write-ahead log is full, their disk refuses writes) and report the
//! memory their buffers hold. One `Pressure` serves the whole collector.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::channel::IntakeError;

/// How much memory a request takes once decoded, per byte on the wire: protobuf is compact,
/// the decoded structs are not (a `String` header per value, a `Vec` per attribute list).
pub const DECODED_BYTES_PER_WIRE_BYTE: usize = 4;

#[derive(Debug, Default)]
pub struct Pressure {
    /// `0`: no limit.
    limit: usize,
    /// Bytes held by requests being decoded or moving through pipelines.
    requests: AtomicUsize,
    /// Bytes held in exporter buffers (rows waiting for their file).
    buffered: AtomicUsize,
    any_refusal: AtomicBool,
    refusals: Mutex<BTreeMap<String, Refusal>>,
    /// Until when (ms since `epoch()`) a request refused for memory asks exporters to give
    /// memory back, however little they hold.
    starved_until_ms: AtomicU64,
}

/// The clock `starved_until_ms` counts from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

#[derive(Debug, Clone)]
struct Refusal {
    error: IntakeError,
    until: Option<Instant>,
}

/// Memory reserved for one request, released when dropped: it rides on the request's batch as
/// a guard, so it is held until every exporter is done with the spans.
#[derive(Debug)]
pub struct Reservation {
    pressure: Arc<Pressure>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pressure
            .requests
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Pressure {
    /// `limit_bytes == 0` means no memory limit.
    pub fn new(limit_bytes: usize) -> Arc<Self> {
        Arc::new(Pressure {
            limit: limit_bytes,
            ..Default::default()
        })
    }

    /// No limit, nothing refused: for tests and tools.
    pub fn unlimited() -> Arc<Self> {
        Self::new(0)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes accounted for now: requests in flight and exporter buffers.
    pub fn used(&self) -> usize {
        self.requests.load(Ordering::Relaxed) + self.buffered.load(Ordering::Relaxed)
    }

    /// Whether exporters should write their buffers out early to give memory back: more than
    /// half the limit is held, or a request was refused for memory in the last second (rows
    /// held below half the limit can still leave no room for a large request; without this
    /// its retries would be refused until the rows' file was due).
    pub fn wants_memory_back(&self) -> bool {
        self.limit > 0
            && (self.used() > self.limit / 2
                || now_ms() < self.starved_until_ms.load(Ordering::Relaxed))
    }

    /// May a request of `wire_bytes` come in? Answers before the request is decoded; the
    /// reservation is held until the request's spans are safe (attach it to the batch).
    pub fn admit(self: &Arc<Self>, wire_bytes: usize) -> Result<Reservation, IntakeError> {
        if self.any_refusal.load(Ordering::Relaxed)
            && let Some(e) = self.refusal()
        {
            return Err(e);
        }
        let bytes = wire_bytes.saturating_mul(DECODED_BYTES_PER_WIRE_BYTE);
        let before = self.requests.fetch_add(bytes, Ordering::Relaxed);
        let buffered = self.buffered.load(Ordering::Relaxed);
        let used = before + bytes + buffered;
        // A collector holding nothing takes any request its size limits allow, or nothing
        // would ever get through a limit smaller than one large request.
        if self.limit > 0 && used > self.limit && before + buffered > 0 {
            self.requests.fetch_sub(bytes, Ordering::Relaxed);
            self.starved_until_ms
                .store(now_ms() + 1000, Ordering::Relaxed);
            return Err(IntakeError::Full(format!(
                "memory_limit_mib reached: {:.1} MiB in use, this request needs {:.1} MiB more, limit {} MiB",
                (used - bytes) as f64 / 1048576.0,
                bytes as f64 / 1048576.0,
                self.limit >> 20
            )));
        }
        Ok(Reservation {
            pressure: Arc::clone(self),
            bytes,
        })
    }

    /// The current refusal, if any is still in force.
    fn refusal(&self) -> Option<IntakeError> {
        let mut map = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, r| r.until.is_none_or(|u| u > now));
        if map.is_empty() {
            self.any_refusal.store(false, Ordering::Relaxed);
            return None;
        }
        map.values().next().map(|r| r.error.clone())
    }

    /// Refuse every request with `error` until `clear(source)`, or for `for_at_most`.
    pub fn refuse(&self, source: &str, error: IntakeError, for_at_most: Option<Duration>) {
        let mut map = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            source.to_string(),
            Refusal {
                error,
                until: for_at_most.map(|d| Instant::now() + d),
            },
        );
        self.any_refusal.store(true, Ordering::Relaxed);
    }

    /// `source` can take requests again.
    pub fn clear(&self, source: &str) {
        if !self.any_refusal.load(Ordering::Relaxed) {
            return;
        }
        let mut map = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(source);
        if map.is_empty() {
            self.any_refusal.store(false, Ordering::Relaxed);
        }
    }

    /// An exporter's buffers grew (positive) or shrank (negative) by `delta` bytes.
    pub fn buffered(&self, delta: isize) {
        if delta >= 0 {
            self.buffered.fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            self.buffered
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_over_the_limit_are_refused_until_memory_is_given_back() {
        let p = Pressure::new(1000);
        let a = p.admit(200).expect("an idle collector takes a request");
        assert_eq!(p.used(), 800);
        let err = p.admit(100).expect_err("800 + 400 > 1000");
        assert!(matches!(err, IntakeError::Full(ref m) if m.contains("memory_limit_mib")));
        assert_eq!(p.used(), 800, "a refused request holds nothing");
        drop(a);
        assert_eq!(p.used(), 0);
        let _b = p.admit(100).expect("room again");
        p.buffered(700);
        assert!(p.wants_memory_back());
        assert!(p.admit(1).is_err());
        p.buffered(-700);
        assert!(p.admit(1).is_ok());
        drop(_b);
        // Rows an exporter cannot write out (a failing disk) count even with no request in
        // flight: memory stays bounded.
        p.buffered(1200);
        assert!(p.admit(1).is_err());
        p.buffered(-1200);
        assert!(
            p.admit(1).is_ok(),
            "nothing held: any request its size allows"
        );
    }

    #[test]
    fn a_request_refused_for_memory_asks_for_memory_back() {
        let p = Pressure::new(1000);
        p.buffered(400);
        assert!(!p.wants_memory_back(), "less than half the limit held");
        assert!(p.admit(200).is_err(), "400 + 800 > 1000");
        assert!(
            p.wants_memory_back(),
            "the rows held leave no room for it: exporters should write them out"
        );
        p.buffered(-400);
        assert!(p.admit(200).is_ok(), "the retry is taken");
    }

    #[test]
    fn refusals_hold_until_cleared_or_expired() {
        let p = Pressure::unlimited();
        p.refuse("wal", IntakeError::Full("the log is full".into()), None);
        assert_eq!(
            p.admit(1).expect_err("refused"),
            IntakeError::Full("the log is full".into())
        );
        p.clear("wal");
        assert!(p.admit(1).is_ok());
        p.refuse(
            "disk",
            IntakeError::Unavailable("disk".into()),
            Some(Duration::ZERO),
        );
        assert!(p.admit(1).is_ok(), "an expired refusal lets requests probe");
    }
}
