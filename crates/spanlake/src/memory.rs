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
//! - **Freed heap kept warm.** mimalloc 3 keeps pages it has freed for a second before giving
//!   them back ("purge delay"); between row groups a sidecar frees megabytes at a time, so ~10
//!   MiB of its peak is memory it is done with. [`set_memory_release_delay`] applies
//!   `service.memory_release_delay` (the sidecar pipeline: `0s`) unless `MIMALLOC_PURGE_DELAY`
//!   says otherwise. Not the default: under full load, giving memory back at once costs ~25% of
//!   the spans per CPU-second (it is taken again moments later).

#![allow(unsafe_code)]

use std::ffi::{c_int, c_long};

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (`include/mimalloc.h`); a test checks
/// it reads as the documented default.
const MI_OPTION_PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

/// Freed heap pages are kept for `delay` before they go back to the system (mimalloc's own
/// default is one second), unless the user chose with `MIMALLOC_PURGE_DELAY`.
pub fn set_memory_release_delay(delay: std::time::Duration) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    let ms = c_long::try_from(delay.as_millis()).unwrap_or(c_long::MAX);
    // SAFETY: setting an integer option of the allocator linked into this binary; mimalloc
    // reads options atomically and allows changing them while running.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, ms) }
}

/// The allocator's purge delay, in milliseconds.
#[cfg(test)]
fn purge_delay_ms() -> c_long {
    // SAFETY: reading an integer option of the allocator linked into this binary.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
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

    #[test]
    fn the_purge_delay_option_is_mimallocs() {
        // mimalloc 3's documented default is 1000 ms; a wrong option number reads another
        // option (14: a deprecated one, 16: NUMA nodes, both defaulting elsewhere).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1000);
            set_memory_release_delay(std::time::Duration::from_millis(250));
            assert_eq!(purge_delay_ms(), 250);
            set_memory_release_delay(std::time::Duration::from_secs(1));
        }
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
