//! What the collector gives back to the system: memory it no longer uses.
//!
//! Two things a sidecar pays for in resident memory and gets nothing back from, each undone by
//! one call the standard library has no safe form of (this is the workspace's only `unsafe`):
//!
//! - **Start-up code.** Parsing the pipeline, compiling redaction rules, replaying the log and
//!   binding the listeners run once, but their code pages stay mapped — and the kernel maps the
//!   executable in 64 KiB windows around every page that runs, so ~10 MiB of a 76 MiB text
//!   segment is resident after start, most of it never to run again. [`release_startup_code`]
//!   unmaps the read-only, unmodified mappings of the executable and its shared libraries once
//!   the collector is running; what
//!   runs afterwards is mapped back from the page cache on its first use (a minor fault, no disk
//!   read). Measured: idle RSS 18 → 8 MiB (`docs/benchmarks.md`).
//! - **Freed heap kept warm.** Between row groups the collector frees megabytes at a time;
//!   an allocator keeps such memory for reuse, so a sidecar's resident memory would stay at its
//!   peak. [`release_freed_memory`] gives it back once the memory in use has not grown for
//!   `service.memory_release_delay` (the sidecar pipeline: `1s`). Not while it grows: under
//!   steady load what a seal frees is taken again by the next row group moments later.
//!
//! On Linux with glibc the collector allocates with glibc's `malloc` (faster than mimalloc at
//! full load once the span path allocated little: +10% spans per CPU-second with memory
//! acknowledgements, +16% durable, a lower peak; docs/benchmarks.md «session 10»), and a
//! thread named `spanlake-memory` calls `malloc_trim`: glibc alone kept ~80 MiB after a
//! full-rate burst, ~18 MiB with the trim. Elsewhere it allocates with mimalloc, whose purge
//! delay is the setting (`MIMALLOC_PURGE_DELAY` wins).

#![allow(unsafe_code)]

use std::time::Duration;

/// Give freed memory back to the system once the memory in use has not grown for `delay`.
pub fn release_freed_memory(delay: Duration) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::start_trimming(delay);
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    mimalloc_purge::set_delay(delay);
}

/// What the allocator holds: bytes in use by the collector, and bytes freed but kept.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
struct Heap {
    in_use: usize,
    free: usize,
}

/// When to trim: the memory in use has not grown for the delay, or only by a little of what is
/// free per look (a row group filling under load, a burst arriving: what was freed is about to
/// be taken again), more than `floor` bytes are free, and the process has grown since the last
/// trim or more is free than the trim left (memory already given back is not walked again; a
/// trim made while a burst's spans were still held is followed by another once they are
/// freed, though the process does not grow for that).
/// Under steady load the memory in use grows between seals, so nothing is trimmed; after a
/// burst, or after each seal with `0s`, it is.
///
/// Under load that frees and takes large blocks at once (the testbed's requests of 10 spans of
/// 20 × 5 KB attributes: ~0.8 MB each), the use looks quiet between looks, and what a trim
/// gives back is faulted in again moments later: a trim a second, ~1,100 page faults a second
/// (~11% of the collector's samples at the testbed's 1k spans/s on a busy VM). So when the
/// process has grown back by half of what the last trim gave back, within four quiet periods
/// of it, the next trim waits twice as long (up to [`WAIT_MAX`], where it trims all the same);
/// a trim whose memory was not taken back brings the wait back to the delay.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
#[derive(Debug)]
struct TrimPolicy {
    delay: Duration,
    /// Less than this, free or grown, is not worth a trim.
    floor: usize,
    /// Resident bytes right after the last trim, or the lowest seen since (before the first
    /// trim: the lowest seen).
    resident_after_trim: usize,
    /// The last look at the heap, and when it was.
    last: Option<(std::time::Instant, Heap)>,
    /// Since when the memory in use has not grown (or only slowly), with more than `floor`
    /// bytes free.
    quiet_since: Option<std::time::Instant>,
    /// Bytes free right after the last trim (none before the first).
    free_after_trim: Option<usize>,
    /// How long the use must be quiet before a trim now: `delay`, or longer after trims whose
    /// memory was taken back at once.
    wait: Duration,
    /// When the last trim was, and the bytes it gave back.
    last_trim: Option<(std::time::Instant, usize)>,
    /// The look that found a trim due: when, and the resident bytes then.
    asked: Option<(std::time::Instant, usize)>,
    /// Whether the wait was doubled since the last trim.
    waited_longer: bool,
}

/// The longest a trim waits for quiet after trims whose memory was taken back at once.
const WAIT_MAX: Duration = Duration::from_secs(30);

impl TrimPolicy {
    fn new(delay: Duration, floor: usize) -> Self {
        TrimPolicy {
            delay,
            floor,
            resident_after_trim: usize::MAX,
            last: None,
            quiet_since: None,
            free_after_trim: None,
            wait: delay,
            last_trim: None,
            asked: None,
            waited_longer: false,
        }
    }

    /// Whether the process has grown back, by half of what the last trim gave back, within
    /// four quiet periods of it: that trim's memory was needed.
    fn taken_back(&self, now: std::time::Instant, resident: usize) -> bool {
        let window = self.wait.max(self.tick()) * 4;
        matches!(self.last_trim, Some((at, released))
            if released >= self.floor
                && now.duration_since(at) < window
                && resident.saturating_sub(self.resident_after_trim) >= released / 2)
    }

    /// How long to sleep between looks: half the delay, within 100 ms and 1 s.
    fn tick(&self) -> Duration {
        (self.delay / 2).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Whether to trim now. `heap` is looked at only when the process has grown since the
    /// last trim, or after a trim (to see whether more was freed since).
    fn due(
        &mut self,
        now: std::time::Instant,
        resident: usize,
        heap: impl FnOnce() -> Heap,
    ) -> bool {
        self.resident_after_trim = self.resident_after_trim.min(resident);
        let grown = resident - self.resident_after_trim >= self.floor;
        let Some(h) = (match self.free_after_trim {
            _ if grown => Some(heap()),
            None => None,
            Some(left) => Some(heap()).filter(|h| h.free >= left.saturating_add(self.floor)),
        }) else {
            self.last = None;
            self.quiet_since = None;
            return false;
        };
        let last = self.last.replace((now, h));
        match last {
            // Quiet: in use grew by less than 1/64 of what is free since the last look, so the
            // free memory would last over 64 looks at this pace (a trickle of spans); a row
            // group filling under load takes it again within a few.
            Some((then, before))
                if h.in_use <= before.in_use + h.free / 64 && h.free >= self.floor =>
            {
                let since = *self.quiet_since.get_or_insert(then);
                if now.duration_since(since) < self.wait {
                    return false;
                }
                let max = WAIT_MAX.max(self.delay);
                let taken_back = self.taken_back(now, resident);
                if taken_back && !self.waited_longer && self.wait < max {
                    // Once per trim: this one waits twice as long as the last.
                    self.wait = (self.wait * 2).max(self.tick()).min(max);
                    self.waited_longer = true;
                    return false;
                }
                if !taken_back {
                    self.wait = self.delay;
                }
                self.asked = Some((now, resident));
                true
            }
            _ => {
                self.quiet_since = None;
                false
            }
        }
    }

    /// A trim left the process `resident` bytes, and `free` bytes free in the heap.
    fn trimmed(&mut self, resident: usize, free: usize) {
        if let Some((at, before)) = self.asked.take() {
            self.last_trim = Some((at, before.saturating_sub(resident)));
        }
        self.waited_longer = false;
        self.resident_after_trim = resident;
        self.free_after_trim = Some(free);
        self.last = None;
        self.quiet_since = None;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use super::{Heap, TrimPolicy};
    use std::time::{Duration, Instant};

    /// Free or grown by less than 1 MiB: not worth walking the allocator's free lists.
    const FLOOR: usize = 1 << 20;

    /// The process's resident size, read from `/proc/self/statm` through a file kept open
    /// (opening it every look cost more than the rest of a look).
    pub(super) struct Statm {
        file: std::fs::File,
        page: usize,
    }

    impl Statm {
        pub(super) fn open() -> std::io::Result<Statm> {
            // SAFETY: sysconf only reads a system constant.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            Ok(Statm {
                file: std::fs::File::open("/proc/self/statm")?,
                page: usize::try_from(page).unwrap_or(4096),
            })
        }

        /// Resident bytes now, or `None` if the file could not be read.
        pub(super) fn resident(&self) -> Option<usize> {
            use std::os::unix::fs::FileExt;
            let mut buf = [0u8; 128];
            let n = self.file.read_at(&mut buf, 0).ok()?;
            let text = std::str::from_utf8(&buf[..n]).ok()?;
            let pages: usize = text.split_whitespace().nth(1)?.parse().ok()?;
            Some(pages * self.page)
        }
    }

    /// Bytes in use and bytes free (freed, not given back) in glibc's arenas; blocks mapped on
    /// their own (large ones) are given back when freed and count as in use.
    pub(super) fn heap() -> Heap {
        // SAFETY: mallinfo2 reads the allocator's statistics under its own locks.
        let info = unsafe { libc::mallinfo2() };
        Heap {
            in_use: info.uordblks + info.hblkhd,
            free: info.fordblks,
        }
    }

    /// Give every arena's free pages back (`malloc_trim(0)`).
    pub(super) fn trim() {
        // SAFETY: malloc_trim takes the allocator's locks itself; it only advises the kernel
        // that free chunks' whole pages are unused and shrinks the main heap's top.
        unsafe { libc::malloc_trim(0) };
    }

    /// Blocks up to this size come from the heap, not from a mapping of their own.
    const MMAP_THRESHOLD: usize = 4 << 20;
    /// glibc gives the heap's free top back on `free` only past this much; the trim thread
    /// gives back the rest.
    const TRIM_THRESHOLD: usize = 64 << 20;

    /// glibc maps each block over its `mmap` threshold (128 KiB at first) on its own and
    /// unmaps it when freed. It raises the threshold to the size of such a block freed, but
    /// with durable acknowledgements the testbed's large requests (~0.8 MB, held until the
    /// log has them) were still mapped afresh for each request: every page faulted in, zeroed
    /// and charged again (~16k faults a second at 1k spans/s). Fixed at 4 MiB, they come from
    /// the heap. A fixed threshold also stops glibc's own raising of its trim threshold, which
    /// then gives the heap's top back at every large `free` (95k faults in 6 s with memory
    /// acknowledgements): that one is set high, and the trim thread gives freed pages back once
    /// the memory in use stops growing. Thresholds the user set (`GLIBC_TUNABLES`,
    /// `MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) are kept.
    fn keep_request_buffers_in_the_heap() {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let tuned = tunables.contains("mmap_threshold")
            || tunables.contains("trim_threshold")
            || std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some();
        if !tuned {
            // SAFETY: mallopt only sets parameters of glibc's allocator; any value is valid.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
            }
        }
    }

    pub(super) fn start_trimming(delay: Duration) {
        keep_request_buffers_in_the_heap();
        let statm = match Statm::open() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "freed memory will not be given back: /proc/self/statm");
                return;
            }
        };
        let mut policy = TrimPolicy::new(delay, FLOOR);
        let started = std::thread::Builder::new()
            .name("spanlake-memory".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(policy.tick());
                    let Some(before) = statm.resident() else {
                        tracing::warn!(
                            "freed memory is no longer given back: /proc/self/statm unreadable"
                        );
                        return;
                    };
                    if policy.due(Instant::now(), before, heap) {
                        trim();
                        let after = statm.resident().unwrap_or(before);
                        tracing::trace!(before, after, "freed memory given back");
                        policy.trimmed(after, heap().free);
                    }
                }
            });
        if let Err(e) = started {
            tracing::warn!(error = %e, "freed memory will not be given back: no thread for it");
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod mimalloc_purge {
    use std::ffi::{c_int, c_long};

    /// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (`include/mimalloc.h`); a test
    /// checks it reads as the documented default.
    pub(super) const MI_OPTION_PURGE_DELAY: c_int = 15;

    unsafe extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
        #[cfg(test)]
        fn mi_option_get(option: c_int) -> c_long;
    }

    /// Freed heap pages are kept for `delay` before they go back to the system (mimalloc's
    /// own default is one second), unless the user chose with `MIMALLOC_PURGE_DELAY`.
    pub(super) fn set_delay(delay: std::time::Duration) {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        let ms = c_long::try_from(delay.as_millis()).unwrap_or(c_long::MAX);
        // SAFETY: setting an integer option of the allocator linked into this binary;
        // mimalloc reads options atomically and allows changing them while running.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms) }
    }

    /// The allocator's purge delay, in milliseconds.
    #[cfg(test)]
    pub(super) fn delay_ms() -> c_long {
        // SAFETY: reading an integer option of the allocator linked into this binary.
        unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
    }
}

/// A mapping of a file (the executable, a shared library) that holds the file's bytes as they
/// are: readable, not
/// writable, and with no page of its own (`Anonymous: 0 kB` in smaps: nothing relocated or
/// written into it), so unmapping its pages loses nothing.
#[derive(Debug, PartialEq)]
struct Mapping {
    start: usize,
    end: usize,
}

/// The unmodified read-only mappings of files (the executable, the shared libraries), from
/// `/proc/self/smaps` text.
fn clean_mappings(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<(Mapping, bool)> = None;
    let mut finish = |m: Option<(Mapping, bool)>| {
        if let Some((m, true)) = m {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            finish(current.take());
            let perms = fields.next().unwrap_or("");
            // offset, device, inode, then the path: a file's is absolute; `[heap]`, `[vdso]`
            // and anonymous mappings are not files.
            let path = fields.nth(3).unwrap_or("");
            let candidate = path.starts_with('/') && perms.starts_with('r') && !perms.contains('w');
            current = Some((Mapping { start, end }, candidate));
        } else if first == "Anonymous:"
            && let Some((_, candidate)) = current.as_mut()
            && fields.next() != Some("0")
        {
            *candidate = false;
        }
    }
    finish(current.take());
    out
}

/// Unmap the pages of the unmodified read-only mappings of the executable and the shared
/// libraries (code and constants): they are mapped back from the page cache as they are used
/// again. Returns the bytes of the mappings advised; the caller only reports a failure.
pub fn release_startup_code() -> std::io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for m in clean_mappings(&smaps) {
        let len = m.end - m.start;
        // SAFETY: the range is a whole read-only mapping of a file (the executable or a shared
        // library, mapped for the life of the process) with no page of its own: no relocation
        // or write ever copied a page, so each maps the page cache's copy of the file.
        // MADV_DONTNEED only drops those entries from this process's page tables; the next
        // access (running code, reading a constant) maps the same page-cache page again.
        let rc = unsafe { libc::madvise(m.start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        released += len;
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        use mimalloc_purge::{delay_ms, set_delay};
        // mimalloc 3's documented default is 1000 ms; a wrong option number reads another
        // option (14: a deprecated one, 16: NUMA nodes, both defaulting elsewhere).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(delay_ms(), 1000);
            set_delay(std::time::Duration::from_millis(250));
            assert_eq!(delay_ms(), 250);
            set_delay(std::time::Duration::from_secs(1));
        }
    }

    const MIB: usize = 1 << 20;

    fn heap(in_use: usize, free: usize) -> impl FnOnce() -> Heap {
        move || Heap {
            in_use: in_use * MIB,
            free: free * MIB,
        }
    }

    #[test]
    fn memory_is_trimmed_once_its_use_has_stopped_growing_for_the_delay() {
        let t0 = std::time::Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut p = TrimPolicy::new(Duration::from_millis(250), MIB);
        let not_asked = || -> Heap { panic!("the heap is not looked at when nothing grew") };
        // Start: the lowest resident size is the baseline; nothing grew.
        assert!(!p.due(at(0), 10 * MIB, not_asked));
        // A row group filling, sealed (its memory freed), the next one filling: what was freed
        // is taken again, so nothing is given back.
        assert!(!p.due(at(100), 60 * MIB, heap(50, 5)));
        assert!(!p.due(at(200), 60 * MIB, heap(55, 5)));
        assert!(!p.due(at(300), 60 * MIB, heap(20, 40)));
        assert!(!p.due(at(400), 60 * MIB, heap(30, 30)));
        // The load stops: in use for 250 ms without growing.
        assert!(!p.due(at(500), 60 * MIB, heap(30, 30)));
        assert!(p.due(at(650), 60 * MIB, heap(29, 31)));
        p.trimmed(20 * MIB, 2 * MIB);
        // What was given back is not walked again until the process grows anew or more is
        // freed (spans still held at the trim, committed later: the process does not grow).
        assert!(!p.due(at(700), 20 * MIB + MIB / 2, heap(29, 2)));
        assert!(!p.due(at(800), 20 * MIB, heap(29, 2)));
        assert!(!p.due(at(900), 20 * MIB, heap(10, 21)));
        assert!(!p.due(at(1000), 20 * MIB, heap(10, 21)));
        assert!(p.due(at(1150), 20 * MIB, heap(10, 21)));
        p.trimmed(20 * MIB, MIB);
        assert!(!p.due(at(1300), 20 * MIB, heap(10, 1)));
        assert!(!p.due(at(5000), 20 * MIB, heap(10, 1)));
        // Too little free to be worth a trim.
        assert!(!p.due(at(5100), 30 * MIB, heap(29, 0)));
        assert!(!p.due(at(5400), 30 * MIB, heap(29, 0)));
        assert!(!p.due(at(5500), 30 * MIB, heap(29, 5)));
        assert!(p.due(at(5750), 30 * MIB, heap(29, 5)));
        p.trimmed(10 * MIB, 0);
        // A trickle of spans: in use creeps up by a little of what is free, which is given
        // back all the same; growing by 1/64 of it or more a look is load.
        const KIB: usize = 1 << 10;
        let kib = |in_use: usize, free: usize| {
            move || Heap {
                in_use: in_use * KIB,
                free: free * KIB,
            }
        };
        assert!(!p.due(at(6000), 14 * MIB, kib(10_240, 32_768)));
        let load = "512 KiB of 31.5 MiB";
        assert!(!p.due(at(6100), 14 * MIB, kib(10_752, 32_256)), "{load}");
        let quiet = "64 KiB of 31.4 MiB";
        assert!(!p.due(at(6200), 14 * MIB, kib(10_816, 32_192)), "{quiet}");
        assert!(!p.due(at(6300), 14 * MIB, kib(10_880, 32_128)));
        assert!(p.due(at(6350), 14 * MIB, kib(10_944, 32_064)));
    }

    /// Large requests freed and taken at once: the use looks quiet, and each trim's memory is
    /// faulted in again right after. The wait doubles up to `WAIT_MAX` (where a trim is made
    /// all the same); once a trim's memory stays given back, the wait is the delay again.
    #[test]
    fn trims_whose_memory_is_taken_back_at_once_wait_longer_each_time() {
        let t0 = std::time::Instant::now();
        let now = std::cell::Cell::new(t0);
        let mut p = TrimPolicy::new(Duration::from_secs(1), MIB);
        let tick = p.tick();
        assert_eq!(tick, Duration::from_millis(500));
        // Each look: 20 MiB resident, 8 in use, 10 free (the requests come and go).
        let look = |p: &mut TrimPolicy, resident: usize| {
            now.set(now.get() + tick);
            p.due(now.get(), resident * MIB, heap(8, 10))
        };
        assert!(!look(&mut p, 12), "the baseline");
        let mut trims = Vec::new();
        for _ in 0..400 {
            if look(&mut p, 20) {
                trims.push(now.get().duration_since(t0));
                // The trim gives 8 MiB back; the next requests fault it in again.
                p.trimmed(12 * MIB, 2 * MIB);
            }
        }
        let gaps: Vec<u64> = trims.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
        assert!(gaps.len() >= 4, "trims at {trims:?}");
        assert!(
            gaps.windows(2).take(4).all(|g| g[1] > g[0]),
            "each wait longer: {gaps:?}"
        );
        assert!(
            gaps.iter().all(|g| *g <= WAIT_MAX.as_secs() + 2),
            "trimmed all the same past WAIT_MAX: {gaps:?}"
        );
        assert_eq!(p.wait, WAIT_MAX);
        // The load stops: resident stays where the last trim left it, and the next trim (more
        // was freed since) keeps its memory given back; after it the wait is the delay again.
        let mut p2 = p;
        let idle = |p: &mut TrimPolicy, free: usize| {
            now.set(now.get() + tick);
            p.due(now.get(), 12 * MIB, heap(2, free))
        };
        let mut n = 0;
        while !idle(&mut p2, 16) {
            n += 1;
            assert!(n < 200, "trimmed at last");
        }
        p2.trimmed(6 * MIB, MIB);
        assert_eq!(p2.wait, Duration::from_secs(1));
    }

    #[test]
    fn a_zero_delay_trims_at_the_first_look_after_the_use_fell() {
        let t0 = std::time::Instant::now();
        let mut p = TrimPolicy::new(Duration::ZERO, MIB);
        let t = p.tick();
        assert_eq!(t, Duration::from_millis(100));
        assert!(!p.due(t0, 8 * MIB, heap(6, 1)), "nothing grew yet");
        assert!(!p.due(t0 + t, 12 * MIB, heap(10, 1)));
        // A sidecar's seal is over: what it took is free.
        assert!(p.due(t0 + 2 * t, 12 * MIB, heap(4, 6)));
        p.trimmed(9 * MIB, 6 * MIB);
        assert!(!p.due(t0 + 3 * t, 9 * MIB, heap(4, 6)));
        // Shrunk below the last trim (a large block unmapped): the new low is the baseline.
        assert!(!p.due(t0 + 4 * t, 7 * MIB, heap(4, 6)));
        assert!(!p.due(t0 + 5 * t, 8 * MIB + MIB / 2, heap(5, 2)));
        assert!(p.due(t0 + 6 * t, 8 * MIB + MIB / 2, heap(5, 2)));
        assert_eq!(
            TrimPolicy::new(Duration::from_secs(30), MIB).tick(),
            Duration::from_secs(1)
        );
        assert_eq!(
            TrimPolicy::new(Duration::from_millis(500), MIB).tick(),
            Duration::from_millis(250)
        );
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_gives_freed_heap_back() {
        // 64 MiB in 64 KiB blocks (below glibc's mmap threshold: inside the arena), written so
        // they are resident, then freed except for every 64th block, which pins the arena's
        // top: glibc's free alone keeps the rest.
        let mut blocks: Vec<Vec<u8>> = (0..1024).map(|i| vec![i as u8 | 1; 64 * 1024]).collect();
        let pinned: Vec<Vec<u8>> = blocks.iter().step_by(64).cloned().collect();
        blocks.clear();
        blocks.shrink_to_fit();
        let free = glibc::heap().free;
        assert!(
            free >= 32 * MIB,
            "freed blocks are free in the arenas: {free}"
        );
        let statm = glibc::Statm::open().expect("statm");
        let before = statm.resident().expect("statm");
        glibc::trim();
        let after = statm.resident().expect("statm");
        assert!(
            after + 32 * MIB <= before,
            "trim gave back {} of {free} free bytes",
            before.saturating_sub(after)
        );
        assert_eq!(pinned.len(), 16);
        assert!(pinned.iter().all(|b| b[0] & 1 == 1));
    }

    #[test]
    fn only_unmodified_read_only_file_mappings_are_released() {
        let smaps = "\
00200000-01431000 r--p 00000000 fe:00 10010690                           /opt/spanlake
Rss:                1384 kB
Anonymous:             0 kB
01432000-0603e000 r-xp 01231000 fe:00 10010690                           /opt/spanlake
Rss:                9880 kB
Anonymous:             0 kB
0603e000-0639f000 r--p 05e3c000 fe:00 10010690                           /opt/spanlake
Rss:                 836 kB
Anonymous:           836 kB
0639f000-063b1000 rw-p 0619d000 fe:00 10010690                           /opt/spanlake
Anonymous:            72 kB
7f8f74846000-7f8f7499c000 r-xp 00026000 fe:00 326279                     /usr/lib/libc.so.6
Anonymous:             0 kB
7ffd59178000-7ffd59199000 rw-p 00000000 00:00 0                          [stack]
Anonymous:           128 kB
7ffd591f0000-7ffd591f2000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_mappings(smaps),
            vec![
                Mapping {
                    start: 0x200000,
                    end: 0x1431000
                },
                Mapping {
                    start: 0x1432000,
                    end: 0x603e000
                },
                Mapping {
                    start: 0x7f8f74846000,
                    end: 0x7f8f7499c000
                },
            ]
        );
    }

    #[test]
    fn released_code_still_runs() {
        let released = release_startup_code().expect("madvise");
        assert!(released > 0, "the test binary has read-only mappings");
        // Code and constants come back from the file as they are used.
        let v: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
        assert_eq!(v[255], "ff");
        assert_eq!(
            clean_mappings(""),
            Vec::<Mapping>::new(),
            "runs after release"
        );
    }
}
