//! Turns the NCCL header version that nccl-sys found (`DEP_NCCL_VERSION_NUMBER`)
//! into cfgs for this crate: `nccl_2_N` for every 2.N up to it, so APIs that
//! an older header lacks compile out (and report `Error::Unsupported`), and
//! `nccl_2_N_P` for the few APIs that a patch release added (listed in
//! [`PATCH_CFGS`]).
//!
//! Also gives the package's programs (`nccl-bench`, tests, examples) a run
//! path to the libnccl they link dynamically.

/// APIs that arrived in a patch release, not with their minor version: the
/// cfg is set when the header is at least that release. Checked against
/// NVIDIA's headers: 2.28.3 lacks `ncclCommRevoke`, 2.28.7 has it; 2.29.2 and
/// 2.29.3 lack `ncclCommSuspend`/`ncclCommResume`/`ncclCommMemStats`, 2.29.7
/// has them.
const PATCH_CFGS: &[(u32, &str)] = &[(22807, "nccl_2_28_7"), (22907, "nccl_2_29_7")];

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_NCCL_VERSION_NUMBER");
    for minor in 0..=40 {
        println!("cargo:rustc-check-cfg=cfg(nccl_2_{minor})");
    }
    for (_, cfg) in PATCH_CFGS {
        println!("cargo:rustc-check-cfg=cfg({cfg})");
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
    // codes of 2.9 and later only (the old encoding ended at 2.8)
    for &(since, cfg) in PATCH_CFGS {
        if code >= 10000 && code >= since {
            println!("cargo:rustc-cfg={cfg}");
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
