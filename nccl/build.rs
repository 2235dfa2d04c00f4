//! Turns the NCCL header version that nccl-sys found (`DEP_NCCL_VERSION_NUMBER`)
//! into cfgs for this crate: `nccl_2_N` for every 2.N up to it, so APIs that
//! an older header lacks compile out (and report `Error::Unsupported`).
//! Also gives the package's programs (`nccl-bench`, tests, examples) a run
//! path to the libnccl they link dynamically.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_NCCL_VERSION_NUMBER");
    for minor in 0..=40 {
        println!("cargo:rustc-check-cfg=cfg(nccl_2_{minor})");
    }
    let code: u32 = std::env::var("DEP_NCCL_VERSION_NUMBER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (major, minor) = if code >= 10000 {
        (code / 10000, (code % 10000) / 100)
    } else {
        (code / 1000, (code % 1000) / 100)
    };
    if major >= 2 {
        let top = if major > 2 { 40 } else { minor.min(40) };
        for m in 0..=top {
            println!("cargo:rustc-cfg=nccl_2_{m}");
        }
    }
    bench_run_path();
}

/// Programs of this package linked dynamically keep the folder of the libnccl
/// they were linked against (`DEP_NCCL_LIB_DIR`) as their run path, so an
/// installed `nccl-bench` (and the tests) start without `LD_LIBRARY_PATH`
/// (which still wins: RUNPATH). Only this package's: a build script cannot
/// set the run path of its dependents' programs (README, "Use it in your
/// project").
fn bench_run_path() {
    println!("cargo:rerun-if-env-changed=DEP_NCCL_STATIC");
    println!("cargo:rerun-if-env-changed=DEP_NCCL_LIB_DIR");
    let dynamic = std::env::var("DEP_NCCL_STATIC").is_ok_and(|v| v == "0");
    match std::env::var("DEP_NCCL_LIB_DIR") {
        Ok(dir) if dynamic && !dir.is_empty() => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
        _ => {}
    }
}
