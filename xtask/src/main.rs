//! `cargo xtask …`: the repository's own tools.
//!
//! - `locate`: where NCCL is, as `nccl-sys`'s build script would find it.
//! - `bindgen [--check]`: regenerate (or check) the committed bindings of every
//!   NCCL minor and the `since` table (`versions.rs`).
//! - `ci`: everything CI runs.
//! - `bench`: the benchmark (see README).

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
mod launch;
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

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  locate            report where NCCL, cudart_static and libclang are and which link mode
                    nccl-sys would choose (exit 1 with the fixes when NCCL is not found)
  bindgen [--check] regenerate nccl-sys/bindings/nccl_2_N.rs (every minor from 2.18) and
                    nccl-sys/src/since_table.rs from the nccl.h of every release on PyPI
                    (fetched into target/nccl-headers; --check: fail if a committed file differs)
  nccl-releases     list NCCL releases on PyPI that xtask/src/versions.rs does not know yet
  version-matrix    only the NCCL version matrix of `ci`
  ci                fmt, clippy, bindgen --check, docs.rs build, all tests, and the NCCL
                    version matrix (every minor's header; oldest and newest runtime;
                    runtime-load)
  bench [ARGS]      the benchmark, nccl-tests style (cargo xtask bench -- --help)
  launch -n N [--one-gpu] [--port P] [--grace S] -- CMD [ARGS...]
                    start N ranks of CMD with torchrun's variables (see README)
";

fn try_main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo_root();
    match args.first().map(String::as_str) {
        Some("locate") => locate(),
        Some("bindgen") => {
            let check = args.iter().skip(1).any(|a| a == "--check");
            bindgen_cmd(&root, check).map(|()| ExitCode::SUCCESS)
        }
        Some("nccl-releases") => versions::list_new_releases(&root).map(|()| ExitCode::SUCCESS),
        Some("version-matrix") => {
            deps::ensure(&root)?.apply();
            versions::ci(&root).map(|()| ExitCode::SUCCESS)
        }
        Some("ci") => ci(&root).map(|()| ExitCode::SUCCESS),
        Some("bench") => bench(&root, &args[1..]),
        Some("launch") => launch::main(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => Err(format!("unknown command `{other}`\n\n{USAGE}")),
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

fn locate() -> Result<ExitCode> {
    let host = XtaskHost;
    println!("target:        {}", find::Host::target(&host));
    let nccl = match find::find_nccl(&host) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("NCCL not found.\n\n{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let crate_dir = repo_root().join("nccl-sys");
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
    match deps::find_libclang() {
        Some(p) => println!("libclang:      {}", p.display()),
        None => println!(
            "libclang:      not found (bindgen needs it: apt install libclang-dev, or pip install libclang \
             and LIBCLANG_PATH=<site-packages>/clang/native)"
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
        .args(["doc", "--no-deps", "-p", "nccl-sys", "-p", "nccl"])
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
    run(
        "tests",
        cargo()
            .current_dir(root)
            .args(["test", "--workspace", "--no-fail-fast"]),
    )?;
    versions::ci(root)?;
    eprintln!("\nxtask ci: all steps passed");
    Ok(())
}

/// `cargo xtask bench [ARGS]`: builds and runs `nccl-bench` in release mode
/// (arguments as nccl-tests', see `--help`). Without a GPU it prints the
/// capability report and says there is nothing to measure.
fn bench(root: &Path, args: &[String]) -> Result<ExitCode> {
    // no arguments: every collective, 8 B to 128 MiB, on every visible GPU
    let default = ["-c".to_string(), "all".to_string()];
    let args = if args.is_empty() { &default[..] } else { args };
    let env = deps::ensure(root)?;
    env.apply();
    let status = cargo()
        .current_dir(root)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "nccl-rs-tests",
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
}
