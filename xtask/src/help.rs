//! `cargo xtask --help` and `cargo xtask <command> --help`: every option with
//! its default. Printing help builds, installs and runs nothing.

use crate::deps::{LIBCLANG_WHEEL, NCCL_WHEELS};

/// The top-level text.
pub fn usage() -> String {
    format!(
        "\
usage: cargo xtask <command> [options]   (`cargo xtask <command> --help`: its options and defaults)

commands:
  ci                everything CI runs: fmt, clippy, bindgen --check, docs.rs build, every test,
                    cargo publish --dry-run of nccl-sys and nccl-rs, and a user project built
                    from the packaged crates
  test [FILTER] [--suite NAME] [-- ARGS...]
                    the tests (all, one suite, or those matching FILTER) with the environment
                    ci uses
  bench [ARGS...]   nccl-bench in release mode, nccl-tests style (options: cargo xtask bench --help)
  launch -n N [--one-gpu] [--port P] [--grace S] -- CMD [ARGS...]
                    start N local ranks of CMD with torchrun's variables
  locate            where NCCL, cudart_static and libclang are: what ci, test and bench use
  bindgen [--check] regenerate (--check: only compare) nccl-sys/bindings/nccl_2_N.rs (every minor
                    from 2.18) and nccl-sys/src/since_table.rs from the headers on PyPI
  version-matrix    only the NCCL version matrix of ci
  nccl-releases     NCCL releases on PyPI that xtask/src/versions.rs does not know yet
  help, -h, --help  this text

{}",
        deps_note()
    )
}

/// How `ci`, `test` and `bench` get NCCL and libclang.
pub fn deps_note() -> String {
    format!(
        "\
NCCL and libclang: ci, test and bench use the ones nccl-sys's search finds on this machine (README,
\"Finding NCCL\"); where there are none they install, once, with pip into target/nccl-deps (no root):
  NCCL:     {}
  libclang: {}
The builds then get NCCL_DIR and LIBCLANG_PATH for those, and every program LD_LIBRARY_PATH with
NCCL's library folder first.
",
        NCCL_WHEELS.join(" "),
        LIBCLANG_WHEEL
    )
}

pub const CI: &str = "\
usage: cargo xtask ci

Runs, in this order, and stops at the first failure:
  fmt            cargo fmt --all --check
  clippy         cargo clippy --workspace --all-targets --features nccl-rs/bench -- -D warnings
  bindgen        the committed bindings of every minor and the since table equal what
                 bindgen and the header scanner make from NVIDIA's headers (fetched from PyPI
                 by HTTP range reads into target/nccl-headers)
  docs.rs        cargo doc of nccl-sys and nccl-rs with DOCS_RS=1 and NCCL hidden
                 (target/docsrs)
  tests          cargo test --workspace --no-fail-fast --features nccl-rs/bench
  version matrix cargo check against the header of every supported NCCL minor without bindgen
                 (dynamic and static); the CPU tests of a build on the newest header run against
                 the oldest (2.18.3) and newest runtimes; the runtime-load feature's tests
  publish        cargo package and cargo publish --dry-run (--no-verify) of nccl-sys and nccl-rs,
                 packaged together (nccl-rs's nccl-sys is not on crates.io yet), into
                 target/package
  user project   the two .crate files unpacked into target/user-project, a venv there with only
                 nvidia-nccl-cu13 (pip), the README's example built against them and run, and
                 nccl-bench installed from them (cargo install --features bench) and run, both
                 without LD_LIBRARY_PATH
No options. A second run on an unchanged tree compiles nothing.
Variables: NCCL_RS_REQUIRE_GPU=1 makes a missing GPU a failure of the GPU tests (default: they
say GPU TEST NOT RUN and pass).
";

pub const TEST: &str = "\
usage: cargo xtask test [FILTER] [--suite NAME] [-- ARGS...]

Runs cargo test on the workspace, with the environment and features of ci (--features
nccl-rs/bench).
  FILTER         only the tests whose name contains FILTER (default: every test)
  --suite NAME   only one test target (default: all of them):
                   sys_cpu, sys_gpu, nccl_cpu, nccl_gpu, bootstrap, faults   (tests/)
                   bench_cli                                                 (nccl/tests/)
                   unit: the unit tests of the libraries and programs
  -- ARGS        passed on to the test programs (e.g. --nocapture)
nccl_gpu and faults have their own harness: FILTER does not narrow them.
";

pub const LOCATE: &str = "\
usage: cargo xtask locate

Reports the NCCL that ci, test and bench use (the machine's, as nccl-sys's build script finds it,
or the pip wheels in target/nccl-deps, or that they would be installed), its header and library
versions, the link mode nccl-sys would choose, cudart_static, and libclang. No options. Exit 1
when NCCL is neither on the machine nor installed in target/nccl-deps.
";

pub const BINDGEN: &str = "\
usage: cargo xtask bindgen [--check]

Regenerates nccl-sys/bindings/nccl_2_N.rs for every NCCL minor from 2.18 (each from the newest
release of that minor) and nccl-sys/src/since_table.rs (the first release of every function,
config field and result code) from the nccl.h of every release on PyPI, fetched by HTTP range
reads into target/nccl-headers, with the bindgen configuration of nccl-sys's build script.
  --check        compare only; fail when a committed file differs (default: write them)
";

pub const VERSION_MATRIX: &str = "\
usage: cargo xtask version-matrix

The NCCL version matrix of ci alone: cargo check against every supported minor's header without
bindgen (dynamic and static), the CPU tests of a newest-header build against the oldest and newest
runtimes (wheels into target/), and the runtime-load tests. No options.
";

pub const NCCL_RELEASES: &str = "\
usage: cargo xtask nccl-releases

Lists the NCCL releases on PyPI that xtask/src/versions.rs does not know yet. No options.
";

/// `cargo xtask bench --help`: the wrapper and nccl-bench's own options.
pub fn bench() -> String {
    format!(
        "\
usage: cargo xtask bench [NCCL-BENCH OPTIONS...]

Builds nccl-bench (package nccl-rs, feature bench) in release mode and runs it with these options
(default with none: -c all, every collective from 8 B to 128 MiB on every visible GPU). Outside
this repository: cargo install nccl-rs --features bench.

{}
{}",
        include_str!("../../nccl/src/bin/nccl-bench/usage.txt").trim_end(),
        deps_note()
    )
}

/// Whether `args` ask for help; for commands that pass arguments on after
/// `--`, only what comes before it counts.
pub fn wanted(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help")
}
