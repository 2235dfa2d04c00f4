//! Forwards nccl-sys's cfgs (`DEP_NCCL_CFGS`), as the `nccl` crate's build
//! script does, so that tests of an API can be compiled out under a header
//! that lacks it.

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
