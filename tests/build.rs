//! The tests' build script is the `nccl` crate's: it forwards nccl-sys's cfgs
//! (so tests of an API compile out under a header that lacks it) and gives
//! dynamically linked test programs a run path to libnccl.

#[path = "../nccl/build.rs"]
mod nccl_build;

fn main() {
    nccl_build::main();
}
