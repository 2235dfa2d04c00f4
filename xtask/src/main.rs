//! `cargo xtask …`: the repository's own tools (`cargo xtask --help`).
//!
//! - `ci`: everything CI runs.
//! - `test [FILTER] [--suite NAME]`: the tests with ci's environment.
//! - `bench`: the benchmark (see README).
//! - `launch`: N local ranks with torchrun's variables.
//! - `locate`: where NCCL is, as `ci`, `test` and `bench` use it.
//! - `bindgen [--check]`: regenerate (or check) the committed bindings of every
//!   NCCL minor and the `since` table (`versions.rs`); every patch release's
//!   bindings must agree with its minor's.
//! - `version-matrix`, `nccl-releases`: the NCCL version matrix of `ci` alone;
//!   releases on PyPI that `versions.rs` does not know yet.
//!
//! The `cargo xtask` alias builds this program in `target/xtask`, apart from
//! the builds it starts: those get `LIBCLANG_PATH` and the like, which the
//! shared dependencies (bindgen) track, so sharing one target folder made
//! every run rebuild them.

#[path = "../../nccl-sys/build/bindings.rs"]
mod bindings;
#[path = "../../nccl-sys/build/find.rs"]
mod find;
#[path = "../../nccl-sys/build/scan.rs"]
mod scan;
#[path = "../../nccl-sys/build/version.rs"]
mod version;

// nccl-bench's command line (plain std and clap): `cargo xtask bench`
// checks its arguments and prints its help before building anything
#[allow(dead_code)] // only the parser is used here, not what the program reads
#[path = "../../nccl/src/bin/nccl-bench/options.rs"]
mod bench_options;

#[cfg(test)]
mod bindings_tests;
mod deps;
#[cfg(test)]
mod find_tests;
mod launch;
mod package;
#[cfg(test)]
mod scan_tests;
mod versions;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{CommandFactory, Parser, Subcommand};

type Result<T, E = String> = std::result::Result<T, E>;

/// The command line; `--help` of every command comes from this declaration.
#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "The repository's own tools (`cargo xtask <command> --help`: its options and defaults)",
    after_help = deps::note(),
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Everything CI runs: fmt, clippy, bindgen --check, docs.rs build, every test, cargo publish
    /// --dry-run of nccl-sys and nccl-rs, and a user project built from the packaged crates
    #[command(long_about = CI_STEPS, after_help = deps::note())]
    Ci,
    /// The tests (all, one suite, or those matching FILTER) with the environment ci uses
    ///
    /// Runs cargo test on the workspace, with the environment and features of ci (--features
    /// nccl-rs/bench). nccl_gpu and faults have their own harness: FILTER does not narrow them.
    #[command(after_help = deps::note())]
    Test(TestArgs),
    /// nccl-bench in release mode, nccl-tests style (its options: cargo xtask bench --help)
    #[command(disable_help_flag = true)]
    Bench {
        /// nccl-bench's options, after `--` or not; --help lists them [default: -c all]
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "NCCL-BENCH OPTIONS"
        )]
        args: Vec<String>,
    },
    /// Start N local ranks of CMD with torchrun's variables
    ///
    /// Starts N ranks of CMD, prefixes their output with [rank r], and fails if any rank fails.
    Launch(launch::LaunchPlan),
    /// Where NCCL, cudart_static and libclang are: what ci, test and bench use
    ///
    /// Reports the NCCL that ci, test and bench use (the machine's, as nccl-sys's build script
    /// finds it, or the pip wheels in target/nccl-deps, or that they would be installed), its
    /// header and library versions, the link mode nccl-sys would choose, cudart_static, and
    /// libclang. Exit 1 when NCCL is neither on the machine nor installed in target/nccl-deps.
    Locate,
    /// Regenerate (--check: only compare) nccl-sys/bindings/nccl_2_N.rs (every minor from 2.18)
    /// and nccl-sys/src/since_table.rs from the headers on PyPI
    ///
    /// Regenerates nccl-sys/bindings/nccl_2_N.rs for every NCCL minor from 2.18 (each from the
    /// newest release of that minor) and nccl-sys/src/since_table.rs (the first release of every
    /// function, config field and result code) from the nccl.h of every release on PyPI, fetched
    /// by HTTP range reads into target/nccl-headers, with the bindgen configuration of nccl-sys's
    /// build script. Fails first when a patch release's bindings declare something otherwise
    /// than its minor's (other than the version constants and the config struct).
    Bindgen {
        /// Compare only; fail when a committed file differs [default: write them]
        #[arg(long)]
        check: bool,
    },
    /// Only the NCCL version matrix of ci
    ///
    /// The NCCL version matrix of ci alone: cargo check against every supported minor's header
    /// without bindgen (dynamic and static), the CPU tests of a newest-header build against the
    /// oldest and newest runtimes (wheels into target/), and the runtime-load tests.
    VersionMatrix,
    /// NCCL releases on PyPI that xtask/src/versions.rs does not know yet
    NcclReleases,
}

/// `cargo xtask ci --help`.
const CI_STEPS: &str = "\
Runs, in this order, and stops at the first failure:
  fmt            cargo fmt --all --check
  clippy         cargo clippy --workspace --all-targets --features nccl-rs/bench -- -D warnings
  bindgen        the committed bindings of every minor and the since table equal what
                 bindgen and the header scanner make from NVIDIA's headers (fetched from PyPI
                 by HTTP range reads into target/nccl-headers)
  docs.rs        cargo doc of nccl-sys and nccl-rs with DOCS_RS=1 and NCCL hidden
                 (target/docsrs)
  internal docs  cargo doc of both with --document-private-items, warnings denied
                 (target/docs-private): the contributors' docs link where they say
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
A second run on an unchanged tree compiles nothing.
Variables: NCCL_RS_REQUIRE_GPU=1 makes a missing GPU a failure of the GPU tests (default: they
say GPU TEST NOT RUN and pass).";

/// `cargo xtask test`'s arguments.
#[derive(clap::Args, Debug)]
struct TestArgs {
    /// Only the tests whose name contains FILTER [default: every test]
    #[arg(value_name = "FILTER")]
    filter: Option<String>,
    /// Only one test target [default: all of them]: sys_cpu, sys_gpu, nccl_cpu, nccl_gpu,
    /// bootstrap, faults (tests/); bench_cli (nccl/tests/); unit: the unit tests of the libraries
    /// and programs
    #[arg(long, value_name = "NAME")]
    suite: Option<String>,
    /// Passed on to the test programs (e.g. --nocapture)
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> Result<ExitCode> {
    // --help: on stdout, status 0; a usage error: on stderr, status 2
    let Some(cmd) = Cli::parse().cmd else {
        let _ = Cli::command().print_help();
        return Ok(ExitCode::SUCCESS);
    };
    let root = repo_root();
    match cmd {
        Cmd::Locate => locate(&root),
        Cmd::Bindgen { check } => bindgen_cmd(&root, check).map(|()| ExitCode::SUCCESS),
        Cmd::NcclReleases => versions::list_new_releases(&root).map(|()| ExitCode::SUCCESS),
        Cmd::VersionMatrix => {
            deps::ensure(&root)?.apply();
            versions::ci(&root).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Ci => ci(&root).map(|()| ExitCode::SUCCESS),
        Cmd::Test(args) => test(&root, &args),
        Cmd::Bench { args } => bench(&root, &args),
        Cmd::Launch(plan) => {
            // the ranks find libnccl where bench's does (nothing installed)
            deps::plan(&root).env()?.apply();
            launch::main(&plan)
        }
    }
}

/// The workspace root, from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// xtask's view of the environment: the same variables as the build script,
/// for the host target.
#[derive(Debug)]
pub struct XtaskHost;

impl find::Host for XtaskHost {
    fn raw_var(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
    fn target(&self) -> String {
        host_triple()
    }
    fn host_triple(&self) -> String {
        host_triple()
    }
    fn crate_version(&self) -> String {
        let manifest = repo_root().join("nccl-sys").join("Cargo.toml");
        std::fs::read_to_string(manifest)
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("version = ")
                        .map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| "?".into())
    }
}

/// The host target triple, from `rustc -vV`.
fn host_triple() -> String {
    Command::new("rustc")
        .arg("-vV")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        })
        .unwrap_or_else(|| "x86_64-unknown-linux-gnu".to_string())
}

/// A `cc::Build` usable outside a build script.
fn cc_build() -> cc::Build {
    let triple = host_triple();
    let mut b = cc::Build::new();
    b.target(&triple)
        .host(&triple)
        .opt_level(0)
        .debug(false)
        .cargo_metadata(false)
        .cargo_warnings(false);
    b
}

fn locate(root: &Path) -> Result<ExitCode> {
    let host = XtaskHost;
    println!("target:        {}", find::Host::target(&host));
    let plan = deps::plan(root);
    let nccl = match &plan.nccl {
        deps::Source::Machine(_) => {
            println!("NCCL from:     this machine (what ci, test and bench use)");
            find::find_nccl(&host).map_err(|e| e.to_string())?
        }
        deps::Source::Wheels { dir, installed } => {
            if !*installed {
                if let Err(why) = find::find_nccl(&host) {
                    eprintln!("NCCL not found on this machine.\n\n{why}");
                }
                println!(
                    "NCCL from:     nowhere yet: ci, test and bench would install {} into {}",
                    deps::NCCL_WHEELS.join(" "),
                    dir.display()
                );
                return Ok(ExitCode::FAILURE);
            }
            println!(
                "NCCL from:     the pip wheels in {} (none on this machine; ci installed these, \
                 and ci, test and bench use them with NCCL_DIR={})",
                dir.display(),
                dir.join("nvidia").join("nccl").display()
            );
            // nccl-sys's search as those builds run it
            // SAFETY: xtask is single-threaded here; nothing reads the environment concurrently.
            unsafe { std::env::set_var("NCCL_DIR", dir.join("nvidia").join("nccl")) };
            find::find_nccl(&host).map_err(|e| e.to_string())?
        }
    };
    let crate_dir = root.join("nccl-sys");
    println!("found through: {}", nccl.source);
    let header = nccl.header();
    match version::header_version(cc_build(), &crate_dir, &nccl.include_dir) {
        Ok(v) => {
            println!(
                "header:        {} (NCCL {v}, NCCL_VERSION_CODE {})",
                header.display(),
                v.code
            );
            let committed = crate_dir.join(bindings::committed_path(v.major, v.minor));
            // default builds use the committed set; bindgen runs only with
            // nccl-sys's feature `bindgen` (one ci step asks for it)
            if committed.is_file() {
                println!("bindings:      committed {}", committed.display());
            } else {
                println!(
                    "bindings:      no committed bindings for NCCL {}.{}: the build needs the \
                     feature nccl-sys/bindgen and libclang",
                    v.major, v.minor
                );
            }
            let clang = bindings::load_libclang().is_ok();
            println!(
                "with bindgen:  {}",
                if clang {
                    "libclang loads"
                } else {
                    "libclang does not load"
                }
            );
        }
        Err(e) => println!("header:        {} ({e})", header.display()),
    }
    let show = |p: &Option<PathBuf>| match p {
        Some(p) => match find::library_version(p) {
            Some((a, b, c)) => format!("{} (NCCL {a}.{b}.{c})", p.display()),
            None => format!("{} (version not readable)", p.display()),
        },
        None => format!("none in {}", nccl.lib_dir.display()),
    };
    println!("shared lib:    {}", show(&nccl.shared_lib));
    println!("static lib:    {}", show(&nccl.static_lib));
    for w in &nccl.warnings {
        println!("warning:       {w}");
    }
    match find::choose_link(&host, &nccl) {
        Ok(link) => {
            println!("link mode:     {} ({})", link.mode, link.reason);
            if link.mode == find::LinkMode::Static {
                match &link.cudart_dir {
                    Some(d) => {
                        println!("cudart_static: {}", d.join("libcudart_static.a").display())
                    }
                    None => println!("cudart_static: not found"),
                }
            }
            for w in &link.warnings {
                println!("warning:       {w}");
            }
        }
        Err(e) => println!("link mode:     error: {e}"),
    }
    match &plan.libclang {
        deps::Source::Machine(p) => println!("libclang:      {}", p.display()),
        deps::Source::Wheels {
            dir,
            installed: true,
        } => println!(
            "libclang:      {} (the pip wheel ci installed; none on this machine)",
            dir.join("clang").join("native").display()
        ),
        deps::Source::Wheels { dir, .. } => println!(
            "libclang:      not found (bindgen needs it: apt install libclang-dev, or pip install libclang \
             and LIBCLANG_PATH=<site-packages>/clang/native); ci, test and bench would install {} \
             into {}",
            deps::LIBCLANG_WHEEL,
            dir.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// Regenerates (or checks) the committed bindings of every NCCL minor and the
/// since table, from every release's header (bindgen needs libclang: the
/// wheel is installed when the machine has none).
fn bindgen_cmd(root: &Path, check: bool) -> Result<()> {
    let env = deps::ensure(root)?;
    env.apply();
    versions::bindgen(root, check)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(step: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("\n==> {step}: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("{step}: could not start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{step} failed ({status})"))
    }
}

/// Builds the docs of the published crates as docs.rs does: `DOCS_RS=1` and
/// no NCCL anywhere the build script could look (it must not look at all).
pub fn docsrs_command(root: &Path) -> Command {
    let mut c = cargo();
    c.current_dir(root)
        .args(["doc", "--no-deps", "-p", "nccl-sys", "-p", "nccl-rs"])
        .arg("--target-dir")
        .arg(root.join("target").join("docsrs"))
        .env("DOCS_RS", "1")
        .env("RUSTDOCFLAGS", "--cfg docsrs -D warnings")
        // if the build script probed, these would make it fail
        .env("NCCL_DIR", "/nonexistent/nccl-hidden-for-docs-rs")
        .env("NCCL_STATIC", "1")
        .env("LIBCLANG_PATH", "/nonexistent/libclang-hidden-for-docs-rs")
        .env_remove("NCCL_INCLUDE_DIR")
        .env_remove("NCCL_LIB_DIR")
        .env_remove("CUDA_HOME")
        .env_remove("CUDA_PATH");
    c
}

/// Features the workspace is checked and tested with: the benchmark
/// program (`nccl-bench`) is part of what CI covers.
pub const WORKSPACE_FEATURES: &str = "nccl-rs/bench";

/// Feature sets of `nccl-rs` without its defaults that ci checks build
/// cleanly (a CUDA API version is always needed).
const NO_DEFAULT_FEATURES: [&str; 2] = ["cuda-12000", "cuda-12000,bench"];

fn ci(root: &Path) -> Result<()> {
    let env = deps::ensure(root)?;
    env.apply();
    run(
        "fmt",
        cargo().current_dir(root).args(["fmt", "--all", "--check"]),
    )?;
    run(
        "clippy",
        cargo().current_dir(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            WORKSPACE_FEATURES,
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // without `bootstrap` (a default feature): the library alone, and with
    // the benchmark, which turns it back on; every example and program
    // that needs it says so (`required-features`)
    for features in NO_DEFAULT_FEATURES {
        run(
            &format!("clippy, nccl-rs with --no-default-features --features {features}"),
            cargo().current_dir(root).args([
                "clippy",
                "-p",
                "nccl-rs",
                "--all-targets",
                "--no-default-features",
                "--features",
                features,
                "--",
                "-D",
                "warnings",
            ]),
        )?;
    }
    eprintln!("\n==> bindgen --check (every NCCL minor, since table)");
    versions::bindgen(root, true)?;
    run(
        "docs.rs build (DOCS_RS=1, NCCL hidden)",
        &mut docsrs_command(root),
    )?;
    run(
        "internal docs (private items, warnings denied)",
        &mut internal_docs_command(root),
    )?;
    run("tests", &mut test_command(root))?;
    versions::ci(root)?;
    package::publish_dry_run(root)?;
    package::user_project(root)?;
    eprintln!("\nxtask ci: all steps passed");
    Ok(())
}

/// The contributors' docs: private items too, every link resolved.
fn internal_docs_command(root: &Path) -> Command {
    let mut c = cargo();
    c.current_dir(root)
        .args(["doc", "--no-deps", "-p", "nccl-sys", "-p", "nccl-rs"])
        .arg("--document-private-items")
        .arg("--target-dir")
        .arg(root.join("target").join("docs-private"))
        .env("RUSTDOCFLAGS", "-D warnings");
    c
}

/// `cargo test` on the workspace as ci runs it (features included).
fn test_command(root: &Path) -> Command {
    let mut c = cargo();
    c.current_dir(root)
        .args(["test", "--workspace", "--no-fail-fast", "--features"])
        .arg(WORKSPACE_FEATURES);
    c
}

/// What `cargo xtask test [FILTER] [--suite NAME] [-- ARGS]` asks for: the
/// cargo arguments after `cargo test --workspace …` and those after `--`.
fn test_args(args: &TestArgs) -> (Vec<String>, Vec<String>) {
    let cargo_args = match args.suite.as_deref() {
        None => vec![],
        Some("unit") => vec!["--lib".to_string(), "--bins".to_string()],
        Some(name) => vec!["--test".to_string(), name.to_string()],
    };
    let after = args.filter.iter().chain(&args.args).cloned().collect();
    (cargo_args, after)
}

/// `cargo xtask test …`: the tests with ci's environment.
fn test(root: &Path, args: &TestArgs) -> Result<ExitCode> {
    let (cargo_args, after) = test_args(args);
    deps::ensure(root)?.apply();
    let mut c = test_command(root);
    c.args(cargo_args);
    if !after.is_empty() {
        c.arg("--").args(after);
    }
    run("tests", &mut c).map(|()| ExitCode::SUCCESS)
}

/// `cargo xtask bench --help` and its usage errors: nccl-bench's own
/// declaration under this name.
fn bench_command() -> clap::Command {
    let cmd = bench_options::command();
    let after = cmd
        .get_after_help()
        .map(ToString::to_string)
        .unwrap_or_default();
    cmd.name("cargo xtask bench")
        .bin_name("cargo xtask bench")
        .about(
            "Builds nccl-bench (package nccl-rs, feature bench) in release mode and runs it with \
             these options (with none: -c all, every collective from 8 B to 128 MiB on every \
             visible GPU). Outside this repository: cargo install nccl-rs --features bench.",
        )
        .after_help(format!("{after}\n\n{}", deps::note()))
}

/// nccl-bench's arguments as `cargo xtask bench [--] ARGS` passes them on:
/// without the `--`, and `-c all` for none.
fn bench_args(args: &[String]) -> Vec<String> {
    let args = args.strip_prefix(&["--".to_string()]).unwrap_or(args);
    if args.is_empty() {
        // every collective, 8 B to 128 MiB, on every visible GPU
        vec!["-c".into(), "all".into()]
    } else {
        args.to_vec()
    }
}

/// `cargo xtask bench [ARGS]`: builds and runs `nccl-bench` in release mode
/// (arguments as nccl-tests', see `--help`). Without a GPU it prints the
/// capability report and says there is nothing to measure.
fn bench(root: &Path, args: &[String]) -> Result<ExitCode> {
    let args = bench_args(args);
    // --help, or a usage error, before anything is built
    let argv = std::iter::once("cargo xtask bench").chain(args.iter().map(String::as_str));
    if let Err(e) = bench_options::parse_from(bench_command(), argv) {
        e.exit();
    }
    deps::ensure(root)?.apply();
    eprintln!("xtask: building nccl-bench (release) and running it");
    let status = cargo()
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "nccl-rs",
            "--features",
            "bench",
            "--bin",
            "nccl-bench",
            "--",
        ])
        .args(&args)
        .status()
        .map_err(|e| format!("bench: could not start cargo: {e}"))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo xtask bindgen --check` as an ordinary test: stale committed
    /// bindings or a stale since table fail. It needs every release's header
    /// (fetched by `cargo xtask bindgen` or `ci` into target/nccl-headers) and
    /// libclang; without them it says it did not run.
    #[test]
    fn committed_bindings_are_current() {
        let root = repo_root();
        let missing: Vec<&str> = versions::RELEASES
            .iter()
            .copied()
            .filter(|r| {
                !root
                    .join("target/nccl-headers")
                    .join(r)
                    .join("nccl.h")
                    .is_file()
            })
            .collect();
        if !missing.is_empty() || deps::find_libclang().is_none() {
            println!(
                "SKIPPED committed_bindings_are_current: headers not fetched ({missing:?}) or no libclang; \
                 `cargo xtask bindgen --check` runs it"
            );
            return;
        }
        if let Err(e) = versions::bindgen(&root, true) {
            panic!("{e}");
        }
    }

    /// `cargo xtask ARGS`, parsed.
    fn parse(args: &[&str]) -> std::result::Result<Option<Cmd>, clap::Error> {
        let args = std::iter::once("cargo xtask").chain(args.iter().copied());
        Cli::try_parse_from(args).map(|c| c.cmd)
    }

    fn test_cmd(args: &[&str]) -> (Vec<String>, Vec<String>) {
        match parse(&[&["test"], args].concat()) {
            Ok(Some(Cmd::Test(t))) => test_args(&t),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn bench_cmd(args: &[&str]) -> Vec<String> {
        match parse(&[&["bench"], args].concat()) {
            Ok(Some(Cmd::Bench { args })) => bench_args(&args),
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn bench_opts(args: &[&str]) -> std::result::Result<bench_options::Opts, clap::Error> {
        let args = std::iter::once("cargo xtask bench").chain(args.iter().copied());
        bench_options::parse_from(bench_command(), args)
    }

    #[test]
    fn the_declaration_is_consistent() {
        Cli::command().debug_assert();
        bench_command().debug_assert();
    }

    #[test]
    fn every_command_parses() {
        assert!(parse(&[]).unwrap().is_none(), "no command: the help");
        assert!(matches!(parse(&["ci"]), Ok(Some(Cmd::Ci))));
        assert!(matches!(parse(&["locate"]), Ok(Some(Cmd::Locate))));
        assert!(matches!(
            parse(&["bindgen"]),
            Ok(Some(Cmd::Bindgen { check: false }))
        ));
        assert!(matches!(
            parse(&["bindgen", "--check"]),
            Ok(Some(Cmd::Bindgen { check: true }))
        ));
        assert!(matches!(
            parse(&["version-matrix"]),
            Ok(Some(Cmd::VersionMatrix))
        ));
        assert!(matches!(
            parse(&["nccl-releases"]),
            Ok(Some(Cmd::NcclReleases))
        ));
        match parse(&["launch", "-n", "2", "--one-gpu", "--", "prog", "--help"]) {
            Ok(Some(Cmd::Launch(p))) => {
                assert!(p.n == 2 && p.one_gpu && p.cmd == ["prog", "--help"])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors_exit_2_and_say_why() {
        for (args, why) in [
            (&["bogus"][..], "unrecognized subcommand 'bogus'"),
            (&["locate", "extra"], "unexpected argument 'extra'"),
            (&["ci", "--fast"], "unexpected argument '--fast'"),
            (&["bindgen", "--chek"], "unexpected argument '--chek'"),
            (&["test", "a", "b"], "unexpected argument 'b'"),
            (&["test", "--bogus"], "unexpected argument '--bogus'"),
            (
                &["test", "--suite"],
                "a value is required for '--suite <NAME>'",
            ),
            (&["launch", "--", "x"], "--nproc <N>"),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(why), "{args:?}: {e}");
        }
    }

    #[test]
    fn test_command_arguments() {
        let (c, a) = test_cmd(&["all_reduce"]);
        assert!(c.is_empty());
        assert_eq!(a, ["all_reduce"]);
        let (c, a) = test_cmd(&["--suite", "nccl_cpu", "version", "--", "--nocapture"]);
        assert_eq!(c, ["--test", "nccl_cpu"]);
        assert_eq!(a, ["version", "--nocapture"]);
        let (c, a) = test_cmd(&["--suite=unit"]);
        assert_eq!(c, ["--lib", "--bins"]);
        assert!(a.is_empty());
        // help is asked before the `--` only: after it, the test programs'
        let (_, a) = test_cmd(&["--", "--help"]);
        assert_eq!(a, ["--help"]);
        let e = parse(&["test", "--help"]).unwrap_err();
        assert_eq!(
            (e.kind(), e.exit_code()),
            (clap::error::ErrorKind::DisplayHelp, 0)
        );
    }

    #[test]
    fn bench_passes_nccl_bench_arguments_on() {
        assert_eq!(bench_cmd(&[]), ["-c", "all"]);
        assert_eq!(bench_cmd(&["--"]), ["-c", "all"]);
        for args in [
            &["-c", "all_reduce", "-n", "5", "--no-progress"][..],
            &["--", "-c", "all_reduce", "-n", "5", "--no-progress"],
        ] {
            assert_eq!(
                bench_cmd(args),
                ["-c", "all_reduce", "-n", "5", "--no-progress"],
                "{args:?}"
            );
        }
        // --help, before or after `--`, reaches nccl-bench's declaration
        assert_eq!(bench_cmd(&["--help"]), ["--help"]);
        assert_eq!(bench_cmd(&["--", "-h"]), ["-h"]);
        let o = bench_opts(
            &bench_cmd(&["-b", "1K", "-G"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(o.min == 1024 && o.graph);
        let e = bench_opts(&["-c", "bogus"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("unknown collective \"bogus\""),
            "{e}"
        );
        let e = bench_opts(&["-b", "1M", "-e", "1K"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("Usage: cargo xtask bench"), "{e}");
    }

    /// Every command's help names its options and their defaults.
    #[test]
    fn help_texts_list_options_and_defaults() {
        let help = |args: &[&str]| {
            let e = parse(args).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp, "{args:?}");
            e.to_string()
        };
        let top = help(&["--help"]);
        assert_eq!(top, help(&["help"]));
        for cmd in Cli::command().get_subcommands() {
            let name = cmd.get_name();
            assert!(
                top.contains(&format!("\n  {name} ")),
                "{name} missing from the usage"
            );
        }
        assert!(top.contains("target/nccl-deps") && top.contains(deps::LIBCLANG_WHEEL));
        let test = help(&["test", "--help"]);
        for text in [
            "--suite <NAME>",
            "[default: every test]",
            "bench_cli",
            "[ARGS]...",
        ] {
            assert!(test.contains(text), "{text} missing from {test}");
        }
        let ci = help(&["ci", "--help"]);
        assert!(
            ci.contains("user project") && ci.contains("NCCL_RS_REQUIRE_GPU"),
            "{ci}"
        );
        assert!(help(&["bindgen", "--help"]).contains("[default: write them]"));
        let launch = help(&["launch", "--help"]);
        for text in [
            "-n, --nproc <N>",
            "--one-gpu",
            "--port <P>",
            "[default: 30]",
            "-- <CMD>...",
            "NCCL_RS_SECRET",
        ] {
            assert!(launch.contains(text), "{text} missing from {launch}");
        }
        let e = bench_opts(&["--help"]).unwrap_err();
        assert_eq!(
            (e.kind(), e.exit_code()),
            (clap::error::ErrorKind::DisplayHelp, 0)
        );
        let bench = e.to_string();
        for text in [
            "Usage: cargo xtask bench [OPTIONS]",
            "[default: 128M]",
            "--cudagraph",
            "--nthreads <1>",
            "cargo install nccl-rs --features bench",
            "target/nccl-deps",
        ] {
            assert!(bench.contains(text), "{text} missing from {bench}");
        }
    }
}
