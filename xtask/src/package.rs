//! The published crates as a user gets them: `cargo publish --dry-run` of
//! nccl-sys and nccl-rs, then a small program built from the two `.crate`
//! files in a fresh venv holding only NVIDIA's NCCL wheel, and run.
//!
//! Everything lives under `target/user-project`: `crates/` (the unpacked
//! packages), `venv/`, and `app/` (the program: the README's example as
//! `src/main.rs`, [`USER_BUILD_RS`] as `build.rs`, its own target folder).
//! Files are rewritten only when their content changes, so a second run on
//! an unchanged tree compiles nothing.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use crate::{Result, cargo, run};

/// The published packages, in dependency order, with their folders.
pub const PACKAGES: [(&str, &str); 2] = [("nccl-sys", "nccl-sys"), ("nccl-rs", "nccl")];

/// The wheel the user project's venv gets: the NCCL ci uses.
pub const USER_WHEEL: &str = "nvidia-nccl-cu13==2.28.3";

/// The user project's `build.rs` (README, "Use it in your project"): a run
/// path to the libnccl that nccl-sys linked, when it linked dynamically.
pub const USER_BUILD_RS: &str = r#"// nccl-sys tells the build scripts of the packages that depend on it directly
// where the libnccl it linked is; a run path to it lets the program start
// without LD_LIBRARY_PATH.
fn main() {
    if std::env::var("DEP_NCCL_STATIC").as_deref() == Ok("0") {
        if let Ok(dir) = std::env::var("DEP_NCCL_LIB_DIR") {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
}
"#;

/// The user project's `Cargo.toml` for package versions `sys` and `rs`.
fn user_manifest(sys: &str, rs: &str) -> String {
    format!(
        r#"[package]
name = "nccl-rs-user"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
nccl-rs = "{rs}"
# only for DEP_NCCL_LIB_DIR in build.rs
nccl-sys = "{sys}"

# what crates.io will serve, from the packaged .crate files
[patch.crates-io]
nccl-rs = {{ path = "../crates/nccl-rs-{rs}" }}
nccl-sys = {{ path = "../crates/nccl-sys-{sys}" }}

[workspace]
"#
    )
}

/// A package's version, from its manifest's `version = "…"` line.
fn version(root: &Path, dir: &str) -> Result<String> {
    let manifest = root.join(dir).join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim_matches('"').to_string())
        .ok_or_else(|| format!("no version in {}", manifest.display()))
}

/// `cargo package` and `cargo publish --dry-run` of both crates together
/// (cargo 1.90+ packages a workspace's crates against each other, as
/// nccl-sys is not on crates.io yet); `cargo package` leaves the `.crate`
/// files in `target/package`. Without verification builds: the user project
/// builds exactly these files instead, as a dependent would, and does not
/// recompile when nothing changed.
pub fn publish_dry_run(root: &Path) -> Result<()> {
    for (step, args) in [
        ("package", &["package", "--no-verify", "--allow-dirty"][..]),
        (
            "publish --dry-run",
            &["publish", "--dry-run", "--no-verify", "--allow-dirty"][..],
        ),
    ] {
        let mut c = cargo();
        c.current_dir(root).args(args);
        for (name, _) in PACKAGES {
            c.args(["-p", name]);
        }
        run(&format!("{step} (nccl-sys, nccl-rs)"), &mut c)?;
    }
    Ok(())
}

/// Writes `text` to `path` unless it is there already (keeps mtimes, so
/// cargo sees nothing new).
fn put(path: &Path, text: &[u8]) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Makes `dst` hold what `src` holds, touching only files that differ.
fn sync(src: &Path, dst: &Path) -> Result<()> {
    let list = |d: &Path| -> Result<Vec<(OsString, bool)>> {
        let mut v = Vec::new();
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd {
                let e = e.map_err(|e| format!("reading {}: {e}", d.display()))?;
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                v.push((e.file_name(), is_dir));
            }
        }
        Ok(v)
    };
    let want = list(src)?;
    for (name, is_dir) in list(dst)? {
        if !want.contains(&(name.clone(), is_dir)) {
            let p = dst.join(&name);
            let r = if is_dir {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| format!("removing {}: {e}", p.display()))?;
        }
    }
    for (name, is_dir) in want {
        let (s, d) = (src.join(&name), dst.join(&name));
        if is_dir {
            sync(&s, &d)?;
        } else {
            let bytes = std::fs::read(&s).map_err(|e| format!("reading {}: {e}", s.display()))?;
            put(&d, &bytes)?;
        }
    }
    Ok(())
}

/// Unpacks `target/package/NAME-VERSION.crate` into `crates/NAME-VERSION`.
fn unpack(root: &Path, crates: &Path, name: &str, version: &str) -> Result<()> {
    let file = root
        .join("target")
        .join("package")
        .join(format!("{name}-{version}.crate"));
    let tmp = crates.join(".unpack");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&file)
        .arg("-C")
        .arg(&tmp)
        .status()
        .map_err(|e| format!("could not run tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar -xzf {} failed ({status})", file.display()));
    }
    let dir = format!("{name}-{version}");
    sync(&tmp.join(&dir), &crates.join(&dir))?;
    std::fs::remove_dir_all(&tmp).map_err(|e| format!("removing {}: {e}", tmp.display()))
}

/// The unpacked package carries the manifest it was made from
/// (`Cargo.toml.orig`): it must be the one in the tree now.
fn check_fresh(root: &Path, crates: &Path, (name, dir): (&str, &str), version: &str) -> Result<()> {
    let orig = crates
        .join(format!("{name}-{version}"))
        .join("Cargo.toml.orig");
    let now = root.join(dir).join("Cargo.toml");
    match (std::fs::read(&orig), std::fs::read(&now)) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        _ => Err(format!(
            "{} is not {}: a stale package",
            orig.display(),
            now.display()
        )),
    }
}

/// A venv with only [`USER_WHEEL`], once.
fn venv(dir: &Path) -> Result<()> {
    let stamp = dir.join(".stamp");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == USER_WHEEL) {
        return Ok(());
    }
    eprintln!(
        "xtask: making the user project's venv in {} with only {USER_WHEEL} (pip, once)",
        dir.display()
    );
    let _ = std::fs::remove_dir_all(dir);
    let py = |c: &mut Command, what: &str| -> Result<()> {
        let s = c
            .status()
            .map_err(|e| format!("{what}: could not start: {e}"))?;
        if s.success() {
            Ok(())
        } else {
            Err(format!("{what} failed ({s})"))
        }
    };
    py(
        Command::new("python3").args(["-m", "venv"]).arg(dir),
        "python3 -m venv",
    )?;
    py(
        Command::new(dir.join("bin").join("python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--root-user-action=ignore",
            USER_WHEEL,
        ]),
        "pip install in the venv",
    )?;
    std::fs::write(&stamp, USER_WHEEL).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

/// The whole environment of the user project's build and run: what a user
/// with the venv active has, and nothing of this repository's (no NCCL_DIR,
/// no LD_LIBRARY_PATH); nccl-sys finds NCCL in the venv.
fn user_env(venv: &Path) -> Result<Vec<(String, OsString)>> {
    let mut env: Vec<(String, OsString)> = Vec::new();
    // the toolchain and its caches, and the shell basics
    for k in [
        "HOME",
        "USER",
        "TMPDIR",
        "TERM",
        "CARGO_HOME",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_BUILD_JOBS",
        "CARGO_TERM_COLOR",
    ] {
        if let Some(v) = std::env::var_os(k) {
            env.push((k.into(), v));
        }
    }
    let mut path = vec![venv.join("bin")];
    if let Some(old) = std::env::var_os("PATH") {
        path.extend(std::env::split_paths(&old));
    }
    env.push((
        "PATH".into(),
        std::env::join_paths(path).map_err(|e| e.to_string())?,
    ));
    env.push(("VIRTUAL_ENV".into(), venv.into()));
    // TODO(lead, at the merge of the committed per-version bindings): remove
    // this. Until then nccl-sys runs bindgen, which needs libclang, so the
    // libclang that ci found or installed is passed on; afterwards the
    // user project must build with LIBCLANG_PATH unset.
    if let Some(v) = std::env::var_os("LIBCLANG_PATH") {
        env.push(("LIBCLANG_PATH".into(), v));
    }
    Ok(env)
}

/// Builds and runs the user project from the packaged crates; checks that
/// it prints the NCCL version and a unique id.
pub fn user_project(root: &Path) -> Result<()> {
    let dir = root.join("target").join("user-project");
    let crates = dir.join("crates");
    let (sys, rs) = (version(root, PACKAGES[0].1)?, version(root, PACKAGES[1].1)?);
    eprintln!(
        "\n==> user project: unpacking the .crate files into {}",
        crates.display()
    );
    unpack(root, &crates, PACKAGES[0].0, &sys)?;
    unpack(root, &crates, PACKAGES[1].0, &rs)?;
    check_fresh(root, &crates, PACKAGES[0], &sys)?;
    check_fresh(root, &crates, PACKAGES[1], &rs)?;
    let venv_dir = dir.join("venv");
    venv(&venv_dir)?;
    let app = dir.join("app");
    put(&app.join("Cargo.toml"), user_manifest(&sys, &rs).as_bytes())?;
    put(&app.join("build.rs"), USER_BUILD_RS.as_bytes())?;
    let example = std::fs::read(root.join("nccl").join("examples").join("hello.rs"))
        .map_err(|e| format!("reading the example: {e}"))?;
    put(&app.join("src").join("main.rs"), &example)?;
    let lock = app.join("Cargo.lock");
    if !lock.exists() {
        // the workspace's versions: the check does not move with crates.io
        let _ = std::fs::copy(root.join("Cargo.lock"), &lock);
    }
    let env = user_env(&venv_dir)?;
    let mut build = cargo();
    build
        .current_dir(&app)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("build");
    run(
        "user project: cargo build (venv, packaged crates)",
        &mut build,
    )?;
    let exe = app.join("target").join("debug").join("nccl-rs-user");
    eprintln!("\n==> user project: {} (no LD_LIBRARY_PATH)", exe.display());
    let out = Command::new(&exe)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .map_err(|e| format!("could not run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("the user project failed ({})", out.status));
    }
    check_output(&stdout)?;
    install_bench(&dir, &rs, &env)
}

/// `cargo install` of nccl-bench from the packaged nccl-rs (its nccl-sys
/// patched in as crates.io would serve it), into `target/user-project/
/// install`, sharing the user project's build folder; then the installed
/// program runs without LD_LIBRARY_PATH (its run path finds libnccl).
fn install_bench(dir: &Path, rs: &str, env: &[(String, OsString)]) -> Result<()> {
    let crates = dir.join("crates");
    let sys_dir = std::fs::read_dir(&crates)
        .map_err(|e| format!("reading {}: {e}", crates.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("nccl-sys-"))
        })
        .ok_or("no unpacked nccl-sys")?;
    let root = dir.join("install");
    let mut c = cargo();
    c.current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["install", "--features", "bench", "--debug", "--path"])
        .arg(crates.join(format!("nccl-rs-{rs}")))
        .arg("--root")
        .arg(&root)
        .arg("--target-dir")
        .arg(dir.join("app").join("target"))
        .arg("--config")
        .arg(format!(
            "patch.crates-io.nccl-sys.path={:?}",
            sys_dir.display().to_string()
        ));
    run(
        "user project: cargo install nccl-rs --features bench",
        &mut c,
    )?;
    let exe = root.join("bin").join("nccl-bench");
    eprintln!(
        "\n==> user project: {} (installed; no LD_LIBRARY_PATH)",
        exe.display()
    );
    let out = Command::new(&exe)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["-b", "8", "-e", "8", "--no-progress"])
        .output()
        .map_err(|e| format!("could not run {}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || !stdout.starts_with("NCCL runtime") {
        return Err(format!(
            "the installed nccl-bench failed ({}) or printed no capability report",
            out.status
        ));
    }
    Ok(())
}

/// The example prints `NCCL <version> …` and `unique id <256 hex digits>`.
fn check_output(stdout: &str) -> Result<()> {
    let version = stdout
        .lines()
        .find_map(|l| l.strip_prefix("NCCL "))
        .and_then(|l| l.split_whitespace().next())
        .filter(|v| v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok()));
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("unique id "))
        .filter(|h| h.len() == 2 * 128 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    match (version, id) {
        (Some(_), Some(_)) => Ok(()),
        _ => Err(format!(
            "the user project did not print an NCCL version and a unique id:\n{stdout}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README shows exactly what CI builds and runs.
    #[test]
    fn readme_shows_the_user_project() {
        let root = crate::repo_root();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let example = std::fs::read_to_string(root.join("nccl/examples/hello.rs")).unwrap();
        assert!(
            readme.contains(&example),
            "README lacks nccl/examples/hello.rs"
        );
        assert!(readme.contains(USER_BUILD_RS), "README lacks USER_BUILD_RS");
        let lines = example.lines().count();
        assert!(lines <= 30, "the example has {lines} lines");
    }

    /// docs/elastic.md shows `nccl/examples/survive.rs` (which `cargo test`
    /// and clippy build) whole, character for character. A test of xtask,
    /// not of the test crate: it reads the source tree, which only exists
    /// where the tests were built.
    #[test]
    fn elastic_page_shows_the_survive_example() {
        let root = crate::repo_root();
        let page = std::fs::read_to_string(root.join("docs/elastic.md")).unwrap();
        let example = std::fs::read_to_string(root.join("nccl/examples/survive.rs")).unwrap();
        let block = page
            .split("\n## Surviving a lost rank\n")
            .nth(1)
            .and_then(|section| section.split("```rust\n").nth(1))
            .and_then(|b| b.split("```").next())
            .expect("docs/elastic.md has a rust block under \"## Surviving a lost rank\"");
        assert_eq!(
            block, example,
            "docs/elastic.md does not show nccl/examples/survive.rs as it is"
        );
    }

    /// The relative links of every Markdown file at the root and in `docs/`
    /// (the README is the published crates' readme too) name files that
    /// exist.
    #[test]
    fn markdown_links_name_files_that_exist() {
        let root = crate::repo_root();
        let mut pages: Vec<std::path::PathBuf> = Vec::new();
        for dir in [root.clone(), root.join("docs")] {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "md") {
                    pages.push(p);
                }
            }
        }
        assert!(pages.iter().any(|p| p.ends_with("README.md")));
        let mut broken = Vec::new();
        for page in &pages {
            let text = std::fs::read_to_string(page).unwrap();
            let mut fenced = false;
            for line in text.lines() {
                if line.trim_start().starts_with("```") {
                    fenced = !fenced;
                }
                if fenced {
                    continue;
                }
                for target in line.split("](").skip(1).filter_map(|t| t.split(')').next()) {
                    let file = target.split('#').next().unwrap_or("");
                    if file.is_empty() || file.contains("://") || file.starts_with("mailto:") {
                        continue;
                    }
                    let dir = page.parent().unwrap();
                    if !dir.join(file).exists() {
                        broken.push(format!("{}: {target}", page.display()));
                    }
                }
            }
        }
        assert!(
            broken.is_empty(),
            "links to missing files:\n{}",
            broken.join("\n")
        );
    }

    #[test]
    fn output_check() {
        let id = "ab".repeat(128);
        assert!(check_output(&format!("NCCL 2.28.3 (nccl.h 2.28.3)\nunique id {id}\n")).is_ok());
        assert!(check_output(&format!("NCCL 2.28 (x)\nunique id {id}\n")).is_err());
        assert!(check_output("NCCL 2.28.3 (x)\nunique id abc\n").is_err());
        assert!(check_output("").is_err());
    }

    #[test]
    fn sync_touches_only_what_changed() {
        let base = std::env::temp_dir().join(format!("xtask-sync-{}", std::process::id()));
        let (src, dst) = (base.join("src"), base.join("dst"));
        let _ = std::fs::remove_dir_all(&base);
        put(&src.join("a/x.rs"), b"x").unwrap();
        put(&src.join("y.rs"), b"y").unwrap();
        put(&dst.join("gone.rs"), b"old").unwrap();
        sync(&src, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("a/x.rs")).unwrap(), b"x");
        assert!(!dst.join("gone.rs").exists());
        let before = std::fs::metadata(dst.join("y.rs"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        put(&src.join("a/x.rs"), b"x2").unwrap();
        sync(&src, &dst).unwrap();
        assert_eq!(std::fs::read(dst.join("a/x.rs")).unwrap(), b"x2");
        let after = std::fs::metadata(dst.join("y.rs"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after, "an unchanged file was rewritten");
        let _ = std::fs::remove_dir_all(&base);
    }
}
