//! Forwards the cfgs that nccl-sys computed from the NCCL header it found
//! (`DEP_NCCL_CFGS`, `DEP_NCCL_CHECK_CFGS`): `nccl_2_N` for every minor up to
//! the header's, and `nccl_fn`/`nccl_field`/`nccl_const` for every function,
//! config field and constant it declares. nccl-sys's build script is the one
//! place that decodes versions and decides cfgs; this only repeats them.
//!
//! Also gives the package's programs (`nccl-bench`, tests, examples) a run
//! path to the libnccl they link dynamically. The tests crate's build script
//! is this file too.

pub fn main() {
    for var in ["DEP_NCCL_CFGS", "DEP_NCCL_CHECK_CFGS"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let list = |var: &str| std::env::var(var).unwrap_or_default();
    for c in list("DEP_NCCL_CHECK_CFGS")
        .split(';')
        .filter(|c| !c.is_empty())
    {
        println!("cargo:rustc-check-cfg={c}");
    }
    for c in list("DEP_NCCL_CFGS").split(';').filter(|c| !c.is_empty()) {
        println!("cargo:rustc-cfg={c}");
    }
    run_path();
}

/// Programs of this package linked dynamically keep the folder of the libnccl
/// they were linked against (`DEP_NCCL_LIB_DIR`) as their run path, so an
/// installed `nccl-bench` (and the tests) start without `LD_LIBRARY_PATH`
/// (which still wins: RUNPATH). Only this package's: a build script cannot
/// set the run path of its dependents' programs (README, "Use it in your
/// project").
fn run_path() {
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
