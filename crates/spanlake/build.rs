//! How the release collector is linked on Linux.
//!
//! **Position-dependent.** A position-independent executable has its pointer tables
//! (`.data.rel.ro`, 3.4 MB here) written at every start by the dynamic loader, from a
//! relocation table (4.5 MB) it reads whole: 8 MiB of a sidecar's 27 MiB idle RSS. Linked at a
//! fixed address, neither is touched (measured: 27 → 18.6 MiB idle). The executable's own image
//! is then not randomized (shared libraries, stack and heap still are); the OpenTelemetry
//! Collector's Go binaries are built the same way. `SPANLAKE_PIE=1` at build time keeps a
//! position-independent executable.
//!
//! **The serving code together.** The kernel maps code in 64 KiB windows around each page that
//! runs; the ~1.7 MB of functions a serving collector runs lie in ~120 such windows across the
//! 76 MB of code, so ~8 MiB of it stays resident under load. `symbol-order.txt` (written by
//! `scripts/symbol-order` from a profile of the collector at work) lists those functions for
//! the linker (LLD, Rust's default on x86-64 Linux since 1.90) to place first, next to each
//! other, followed by the functions only start-up runs: start-up then faults in ~2.6 MiB of
//! code instead of ~8.6 (its pages are released once it is over, but the peak RSS a sidecar's
//! limit must allow for was set there: 14.3 → 11.4 MiB at 10k spans/s). Names it does not find (another toolchain, other dependency versions) are ignored; a
//! toolchain without its own LLD links as before. `SPANLAKE_SYMBOL_ORDER=0` at build time
//! leaves the order to the linker.
//!
//! **The executable written, not mapped.** LLD writes its output through a shared mapping, and
//! the page cache then holds the fresh executable in large folios: the kernel maps a whole folio
//! around each page of code that runs, and a collector started from that file idled at 11–13
//! MiB instead of ~7 (measured: 10.6 MiB of the binary's pages resident vs 0.2; a `cp` of the
//! same file idled at ~7.5). `--no-mmap-output-file` writes it with plain writes.

fn main() {
    println!("cargo:rerun-if-env-changed=SPANLAKE_PIE");
    println!("cargo:rerun-if-env-changed=SPANLAKE_SYMBOL_ORDER");
    println!("cargo:rerun-if-changed=symbol-order.txt");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let linux = env("CARGO_CFG_TARGET_OS") == "linux";
    if linux && env("SPANLAKE_PIE") != "1" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join("symbol-order.txt");
    if linux
        && env("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && env("PROFILE") == "release"
        && links_with_rust_lld()
    {
        if env("SPANLAKE_SYMBOL_ORDER") != "0" && order.exists() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                order.display()
            );
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
        println!("cargo:rustc-link-arg-bins=-Wl,--no-mmap-output-file");
    }
}

/// Whether this toolchain links with its own LLD (rustup's toolchains since 1.90 on x86-64
/// Linux; a distribution's rustc may link with the system's `ld`, which has no symbol
/// ordering and would refuse the option).
fn links_with_rust_lld() -> bool {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = std::process::Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
    else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let target = std::env::var("TARGET").unwrap_or_default();
    std::path::Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .join("bin/gcc-ld/ld.lld")
        .exists()
}
