//! `cargo xtask …`: the repository's own tools (`cargo xtask --help`).
//!
//! - `ci`: everything CI runs.
//! - `test [FILTER] [--suite NAME]`: the tests with ci's environment.
//! - `bench`: the benchmark (see README).
//! - `launch`: N local ranks with torchrun's variables.
//! - `locate`: where NCCL is, as `ci`, `test` and `bench` use it.
//! - `bindgen [--check]`: regenerate (or check) the committed bindings of every
//!   NCCL minor and the `since` table (`versions.rs`).
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

mod deps;
#[cfg(test)]
mod find_tests;
mod help;
mod launch;
mod package;
#[cfg(test)]
mod scan_tests;
mod versions;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

type Result<T, E = String> = std::result::Result<T, E>;

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root();
    let (cmd, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("help", &[][..]),
    };
    let usage = match cmd {
        "ci" => help::CI.to_string(),
        "test" => help::TEST.to_string(),
        "bench" => help::bench(),
        "launch" => format!("{}\n", launch::USAGE),
        "locate" => help::LOCATE.to_string(),
        "bindgen" => help::BINDGEN.to_string(),
        "version-matrix" => help::VERSION_MATRIX.to_string(),
        "nccl-releases" => help::NCCL_RELEASES.to_string(),
        "-h" | "--help" | "help" => help::usage(),
        other => return Err(format!("unknown command `{other}`\n\n{}", help::usage())),
    };
    // bench's help includes nccl-bench's options: asked for after `--` too
    let asked = if cmd == "bench" {
        rest.iter().any(|a| a == "-h" || a == "--help")
    } else {
        help::wanted(rest)
    };
    if matches!(cmd, "-h" | "--help" | "help") || asked {
        print!("{usage}");
        return Ok(ExitCode::SUCCESS);
    }
    let no_args = |allowed: &[&str]| match rest.iter().find(|a| !allowed.contains(&a.as_str())) {
        Some(a) => Err(format!("{cmd}: unknown argument {a:?}\n\n{usage}")),
        None => Ok(()),
    };
    match cmd {
        "locate" => {
            no_args(&[])?;
            locate(&root)
        }
        "bindgen" => {
            no_args(&["--check"])?;
            bindgen_cmd(&root, !rest.is_empty()).map(|()| ExitCode::SUCCESS)
        }
        "nccl-releases" => {
            no_args(&[])?;
            versions::list_new_releases(&root).map(|()| ExitCode::SUCCESS)
        }
        "version-matrix" => {
            no_args(&[])?;
            deps::ensure(&root)?.apply();
            versions::ci(&root).map(|()| ExitCode::SUCCESS)
        }
        "ci" => {
            no_args(&[])?;
            ci(&root).map(|()| ExitCode::SUCCESS)
        }
        "test" => test(&root, rest),
        "bench" => bench(&root, rest),
        _ => {
            // the ranks find libnccl where bench's does (nothing installed)
            deps::plan(&root).env()?.apply();
            launch::main(rest)
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
            let bindgen = std::env::var("NCCL_SYS_BINDGEN").map_or(true, |b| b != "0")
                && bindings::load_libclang().is_ok();
            match (bindgen, committed.is_file()) {
                (true, _) => println!("bindings:      bindgen at build time (libclang loads)"),
                (false, true) => println!("bindings:      committed {}", committed.display()),
                (false, false) => println!(
                    "bindings:      none: no committed bindings for NCCL {}.{} and no libclang \
                     (the build would fail)",
                    v.major, v.minor
                ),
            }
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
    eprintln!("\n==> bindgen --check (every NCCL minor, since table)");
    versions::bindgen(root, true)?;
    run(
        "docs.rs build (DOCS_RS=1, NCCL hidden)",
        &mut docsrs_command(root),
    )?;
    run("tests", &mut test_command(root))?;
    versions::ci(root)?;
    package::publish_dry_run(root)?;
    package::user_project(root)?;
    eprintln!("\nxtask ci: all steps passed");
    Ok(())
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
fn test_args(args: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let mut cargo_args = Vec::new();
    let mut filter = None;
    let mut it = args.iter();
    let mut passed_on = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--suite" => {
                let name = it
                    .next()
                    .ok_or_else(|| format!("--suite needs a name\n\n{}", help::TEST))?;
                if name == "unit" {
                    cargo_args.extend(["--lib".to_string(), "--bins".to_string()]);
                } else {
                    cargo_args.extend(["--test".to_string(), name.clone()]);
                }
            }
            "--" => {
                passed_on.extend(it.by_ref().cloned());
            }
            other if other.starts_with('-') => {
                return Err(format!("test: unknown option {other:?}\n\n{}", help::TEST));
            }
            other if filter.is_none() => filter = Some(other.to_string()),
            other => {
                return Err(format!(
                    "test: one FILTER only ({other:?} is a second)\n\n{}",
                    help::TEST
                ));
            }
        }
    }
    let mut after = Vec::new();
    after.extend(filter);
    after.extend(passed_on);
    Ok((cargo_args, after))
}

/// `cargo xtask test …`: the tests with ci's environment.
fn test(root: &Path, args: &[String]) -> Result<ExitCode> {
    let (cargo_args, after) = test_args(args)?;
    deps::ensure(root)?.apply();
    let mut c = test_command(root);
    c.args(cargo_args);
    if !after.is_empty() {
        c.arg("--").args(after);
    }
    run("tests", &mut c).map(|()| ExitCode::SUCCESS)
}

/// `cargo xtask bench [ARGS]`: builds and runs `nccl-bench` in release mode
/// (arguments as nccl-tests', see `--help`). Without a GPU it prints the
/// capability report and says there is nothing to measure.
fn bench(root: &Path, args: &[String]) -> Result<ExitCode> {
    // `cargo xtask bench -- ARGS` means the same as without the `--`
    let args = args.strip_prefix(&["--".to_string()]).unwrap_or(args);
    // no arguments: every collective, 8 B to 128 MiB, on every visible GPU
    let default = ["-c".to_string(), "all".to_string()];
    let args = if args.is_empty() { &default[..] } else { args };
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
        .args(args)
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

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn test_command_arguments() {
        let (c, a) = test_args(&strings(&["all_reduce"])).unwrap();
        assert!(c.is_empty());
        assert_eq!(a, ["all_reduce"]);
        let (c, a) = test_args(&strings(&[
            "--suite",
            "nccl_cpu",
            "version",
            "--",
            "--nocapture",
        ]))
        .unwrap();
        assert_eq!(c, ["--test", "nccl_cpu"]);
        assert_eq!(a, ["version", "--nocapture"]);
        let (c, _) = test_args(&strings(&["--suite", "unit"])).unwrap();
        assert_eq!(c, ["--lib", "--bins"]);
        assert!(test_args(&strings(&["--suite"])).is_err());
        assert!(test_args(&strings(&["a", "b"])).is_err());
        assert!(test_args(&strings(&["--bogus"])).is_err());
    }

    #[test]
    fn help_is_asked_before_the_double_dash_only() {
        assert!(help::wanted(&strings(&["--help"])));
        assert!(help::wanted(&strings(&["-n", "2", "-h", "--", "x"])));
        assert!(!help::wanted(&strings(&[
            "-n", "2", "--", "prog", "--help"
        ])));
    }

    /// Every command's help names its options and their defaults.
    #[test]
    fn help_texts_list_options_and_defaults() {
        let top = help::usage();
        for cmd in [
            "ci",
            "test",
            "bench",
            "launch",
            "locate",
            "bindgen",
            "version-matrix",
            "nccl-releases",
        ] {
            assert!(
                top.contains(&format!("\n  {cmd}")),
                "{cmd} missing from the usage"
            );
        }
        assert!(
            !top.contains("bench -- --help"),
            "that spelling used to fail"
        );
        assert!(
            help::TEST.contains("--suite NAME") && help::TEST.contains("(default: every test)")
        );
        assert!(help::BINDGEN.contains("(default: write them)"));
        let bench = help::bench();
        assert!(bench.contains("(default 128M)") && bench.contains("--cudagraph"));
        for opt in ["-n N", "--one-gpu", "--port", "--grace"] {
            assert!(launch::USAGE.contains(opt), "{opt}");
        }
        assert!(launch::USAGE.contains("default 30"));
    }
}
