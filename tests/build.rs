//! The test programs linked to a shared libnccl get a run path to its folder
//! (`DEP_NCCL_LIB_DIR` from nccl-sys), so plain `cargo test` runs them
//! wherever nccl-sys found NCCL by itself.

fn main() {
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
