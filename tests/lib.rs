//! Shared helpers of the integration tests: whether a GPU is there, and (for
//! multi-rank tests) starting ranks as separate processes.
//!
//! GPU tests call [`gpu_or_skip`]: without a GPU they say so on stderr (not
//! captured by the test harness, so it shows in every run) and return `None`;
//! with `NCCL_RS_REQUIRE_GPU=1` a missing GPU is a failure instead.

use std::io::Write as _;
use std::sync::Arc;

use cudarc::driver::CudaContext;

/// Number of CUDA devices, or why there are none usable.
pub fn gpu_count() -> Result<usize, String> {
    // SAFETY: only tries to dlopen the driver library, then drops it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda.so) is not installed".into());
    }
    match CudaContext::device_count() {
        Ok(0) => Err("the CUDA driver sees no device".into()),
        Ok(n) => Ok(n as usize),
        Err(e) => Err(format!("the CUDA driver failed: {e}")),
    }
}

/// Whether `NCCL_RS_REQUIRE_GPU=1` is set.
pub fn gpu_required() -> bool {
    std::env::var("NCCL_RS_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Writes to the real stderr, past the test harness's capture.
pub fn say(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// A context on GPU `ordinal`, bound to this thread; or `None` after saying
/// why the test `name` cannot run. Panics when `NCCL_RS_REQUIRE_GPU=1`.
pub fn gpu_or_skip(name: &str, ordinal: usize) -> Option<Arc<CudaContext>> {
    let why = match gpu_count() {
        Ok(n) if n > ordinal => {
            let ctx = CudaContext::new(ordinal).expect("create a CUDA context");
            ctx.bind_to_thread().expect("bind the CUDA context");
            return Some(ctx);
        }
        Ok(n) => format!("needs GPU {ordinal} but only {n} GPU(s) are visible"),
        Err(e) => e,
    };
    if gpu_required() {
        panic!("{name}: no GPU to run on ({why}) and NCCL_RS_REQUIRE_GPU=1");
    }
    say(&format!(
        "GPU TEST NOT RUN: {name}: {why} (set NCCL_RS_REQUIRE_GPU=1 to make this a failure)"
    ));
    None
}

/// The libnccl version the tests must run with, from `NCCL_RS_EXPECT_RUNTIME`
/// (`2.18.3`, set by `cargo xtask ci` when it runs a binary built on one
/// header against another release's library), as `(major, minor, patch)`.
/// `None` when unset: the runtime is then expected to be the header's.
///
/// # Panics
/// On a value that is not `major.minor.patch` (a broken test setup).
pub fn expected_runtime() -> Option<(u32, u32, u32)> {
    let v = std::env::var("NCCL_RS_EXPECT_RUNTIME").ok()?;
    let p: Vec<u32> = v.split('.').filter_map(|p| p.parse().ok()).collect();
    match p[..] {
        [a, b, c] => Some((a, b, c)),
        _ => panic!("NCCL_RS_EXPECT_RUNTIME={v:?} is not major.minor.patch"),
    }
}

/// The library logs through `log`; test programs show its messages on
/// stderr as `LEVEL target: message` (warnings and errors, or what
/// `NCCL_RS_TEST_LOG=debug` asks for).
pub fn log_to_stderr() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                let _ = writeln!(
                    std::io::stderr(),
                    "{} {}: {}",
                    r.level(),
                    r.target(),
                    r.args()
                );
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let level = match std::env::var("NCCL_RS_TEST_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("info") => log::LevelFilter::Info,
        _ => log::LevelFilter::Warn,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
