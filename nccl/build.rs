//! Forwards the cfgs that nccl-sys computed from the NCCL header it found
//! (`DEP_NCCL_CFGS`, `DEP_NCCL_CHECK_CFGS`): `nccl_2_N` for every minor up to
//! the header's, and `nccl_fn`/`nccl_field`/`nccl_const` for every function,
//! config field and constant it declares. nccl-sys's build script is the one
//! place that decodes versions and decides cfgs; this only repeats them.

fn main() {
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
}
