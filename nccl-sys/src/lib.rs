//! Raw FFI bindings to NVIDIA's NCCL, for every NCCL from 2.18 to the newest.
//! The safe layer is the `nccl` crate; use this one directly only to reach an
//! API the safe layer does not cover.
//!
//! # Finding NCCL
//!
//! The build script looks, in this order, and checks that the files exist at
//! every step (each variable is read with the target triple as prefix first,
//! e.g. `X86_64_UNKNOWN_LINUX_GNU_NCCL_DIR`, then plain):
//!
//! 1. `NCCL_INCLUDE_DIR` + `NCCL_LIB_DIR`: used as given. A missing file there
//!    is a cargo warning, not an error (cross builds, and builds linked on
//!    another machine, need this). If `nccl.h` is missing there, the newest
//!    committed bindings are used, with a warning.
//! 2. `NCCL_DIR`: a prefix with `include/nccl.h` and `lib/`, `lib64/` or
//!    `lib/<multiarch>/` holding the library. A `NCCL_DIR` without them is an
//!    error.
//! 3. `pkg-config nccl`.
//! 4. `CUDA_HOME`, `CUDA_PATH`, then `/usr/local/cuda`, `/usr`, `/usr/local`
//!    (with `lib64/`, `lib/`, `lib/x86_64-linux-gnu/` and the like).
//! 5. The `nvidia/nccl` folder of NVIDIA's pip wheel (`pip install
//!    nvidia-nccl-cu13`) in the site-packages of `$VIRTUAL_ENV`, `$CONDA_PREFIX`
//!    and the `python3` on `PATH`.
//!
//! When nothing is found, the error lists every place and variable tried and
//! what was missing there, with the fixes. `cargo xtask locate` in this
//! repository prints the same search as a report. With the `runtime-load`
//! feature, finding nothing is fine (see below).
//!
//! # Bindings: committed, or bindgen with feature `bindgen`
//!
//! By default the build uses the committed bindings of the header's NCCL
//! minor (`bindings/nccl_2_N.rs`, one per minor from 2.18 to 2.32, each made
//! by bindgen from that minor's newest release): no libclang is needed, and
//! neither bindgen nor what only it needs (clang-sys, regex, nom and a few
//! more) is compiled. A header newer than every committed set is an error
//! that names the feature; a header older than 2.18 is an error.
//!
//! With feature `bindgen` (`nccl-sys = { version = "0.1", features =
//! ["bindgen"] }` beside a dependency on `nccl-rs`; Cargo merges the
//! features), bindgen generates the bindings from the `nccl.h` found when
//! libclang can be loaded (`LIBCLANG_PATH`, or the system's). When it cannot,
//! the committed set of the header's minor is used with a cargo warning, and
//! only a header newer than every committed set fails (the error says how to
//! get libclang). `NCCL_SYS_BINDGEN=0` uses the committed bindings even with
//! the feature; without it, setting `NCCL_SYS_BINDGEN` to anything else is a
//! cargo warning, since it cannot turn bindgen on. [`BINDINGS_SOURCE`] says
//! which bindings a build has.
//!
//! What the feature costs, measured on a 2-core machine with fresh target
//! folders (`cargo build`, debug): `nccl-rs` with its default features
//! compiles 52 crates in 15 s without it and 65 in 23 s with it;
//! `--no-default-features --features cuda-12000` (no `bootstrap`, so none of
//! its crypto crates either) 32 crates in 13 s without and 45 in 21 s with.
//!
//! Either way the API is exactly what the header found declares: a function
//! that a newer patch release of the same minor added is left out, and the
//! version constants are the header's.
//!
//! # Linking
//!
//! - `NCCL_STATIC` unset: static when `libnccl_static.a` is beside the library
//!   found, else dynamic.
//! - `NCCL_STATIC=1` (anything but `0`): static, or an error naming the missing
//!   `libnccl_static.a`. Static linking also needs `libcudart_static.a`, from
//!   `CUDA_HOME`/`CUDA_PATH` (used as given), the usual CUDA prefixes or the
//!   `nvidia/cu13/lib` folder of the `nvidia-cuda-runtime` pip wheel, plus the
//!   C++ runtime (`stdc++`), `dl`, `rt`, `pthread` and `m`. Every function is
//!   linked directly. A header and a library of different versions are an
//!   error.
//! - `NCCL_STATIC=0`: dynamic (`libnccl.so`, or `libnccl.so.2` where only that
//!   exists, as in the pip wheels). The library must then be on the loader's
//!   path at run time (`LD_LIBRARY_PATH`, or an rpath set by your build: the
//!   folder is exported as `DEP_NCCL_LIB_DIR`). Functions that NCCL 2.18.1
//!   already had are linked directly; every newer one is looked up by name in
//!   the loaded libnccl at its first call (one atomic load per call after
//!   that), so a program built against a new header starts on any libnccl
//!   from 2.18 on. Called on a library that lacks it, such a function returns
//!   `ncclInvalidUsage` (a function returning a pointer returns null, one
//!   returning nothing does nothing); [`available`] says beforehand. A header
//!   and a library of different versions are a cargo warning.
//! - feature `runtime-load`: nothing is linked and no NCCL is needed at build
//!   time (bindings: with feature `bindgen`, bindgen on the header found when
//!   libclang loads; else the newest committed set). Every function is looked up by name in a
//!   libnccl opened at run time, the first time one is called or at
//!   [`load`]; see [`library`] for where it is looked for.
//!
//! The mode chosen is [`LINK_MODE`] here and `DEP_NCCL_LINK_MODE`
//! (`static`/`dynamic`/`runtime`/`none`) and `DEP_NCCL_STATIC` (`1`/`0`) for
//! build scripts of dependents, which also get `DEP_NCCL_INCLUDE`,
//! `DEP_NCCL_LIB_DIR`, `DEP_NCCL_VERSION_NUMBER` (e.g. `22803`),
//! `DEP_NCCL_VERSION`, and the cfgs below (`DEP_NCCL_CFGS`,
//! `DEP_NCCL_CHECK_CFGS`, `;`-separated, to print as `cargo:rustc-cfg` and
//! `cargo:rustc-check-cfg`).
//!
//! # Versions and cfgs
//!
//! The header's version is read by the C preprocessor and is
//! [`NCCL_VERSION_CODE`] (and [`HEADER_VERSION_CODE`]). The build script sets
//! these cfgs for this crate and, through `DEP_NCCL_CFGS`, for dependents:
//!
//! - `nccl_2_N` for every NCCL 2.N up to the header's;
//! - `nccl_fn = "ncclX"` for every function the header declares,
//!   `nccl_field = "x"` for every `ncclConfig_t` field, and
//!   `nccl_const = "X"` for every enumerator (result codes included) and
//!   `NCCL_*` macro.
//!
//! [`since`] says which NCCL release introduced each function, field and
//! constant, read from the header of every release.
//!
//! # docs.rs
//!
//! With `DOCS_RS` set, the build script neither probes nor links: the newest
//! committed bindings are used. [`LINK_MODE`] is then [`LinkMode::None`].
//!
//! # Enums
//!
//! C enums (`ncclResult_t`, `ncclDataType_t`, `ncclRedOp_t`, …) are newtypes
//! with associated constants (`ncclResult_t::ncclSuccess`), never Rust enums: a
//! value that this header does not know, from a newer libnccl, stays a valid
//! value.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all, clippy::undocumented_unsafe_blocks)]
#![allow(missing_debug_implementations)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

mod config;
pub mod device;
mod loader;
pub mod search_path;
pub mod since;

pub use config::config_for_runtime;
pub use loader::{Attempt, ENV_VARS, Library, LoadError, Source, available, library, load};

/// How libnccl reaches this build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkMode {
    /// `libnccl_static.a` and `libcudart_static.a` are part of the binary.
    Static,
    /// `libnccl.so` is loaded with the program (linked at build time).
    Dynamic,
    /// Nothing linked: libnccl is opened at run time (feature `runtime-load`).
    Runtime,
    /// Not linked at all (docs.rs builds).
    None,
}

include!(concat!(env!("OUT_DIR"), "/build_info.rs"));

/// `NCCL_CONFIG_UNDEF_INT` (`INT_MIN` in `nccl.h`, a macro bindgen cannot
/// evaluate): an `ncclConfig_t` field left at its default.
pub const NCCL_CONFIG_UNDEF_INT: i32 = i32::MIN;

/// Whether the header of this build declares `name` (a function,
/// `ncclConfig_t` field, result code, enumerator or `NCCL_*` macro).
pub fn declared(name: &str) -> bool {
    DECLARED.binary_search(&name).is_ok()
}
