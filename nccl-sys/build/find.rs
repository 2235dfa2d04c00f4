//! NCCL discovery: where `nccl.h`, `libnccl` and `libcudart_static.a` are, and
//! which link mode to use.
//!
//! This file is shared, as one source, by `nccl-sys/build/main.rs` (the build
//! script) and `xtask` (`cargo xtask locate`, and its unit tests on fake prefix
//! trees). It uses only `std`: everything that touches the outside world other
//! than the file system (environment variables, pkg-config, python) goes
//! through the [`Host`] trait, so tests can make it hermetic.
//!
//! Search order (first hit wins; every step checks that the files exist):
//!
//! 1. `NCCL_INCLUDE_DIR` + `NCCL_LIB_DIR` (explicit: trusted, see below)
//! 2. `NCCL_DIR` (`include/`, then `lib/`, `lib64/` or `lib/<multiarch>`)
//! 3. pkg-config `nccl`
//! 4. `CUDA_HOME`, `CUDA_PATH`, then `/usr/local/cuda`, `/usr`, `/usr/local`
//!    (each with `lib64/`, `lib/`, `lib/<multiarch>`)
//! 5. the `nvidia/nccl` folder of NVIDIA's pip wheel (`nvidia-nccl-cu13`,
//!    `nvidia-nccl-cu12`) in the site-packages of `$VIRTUAL_ENV`,
//!    `$CONDA_PREFIX` and the `python3` on `PATH`
//!
//! Every variable is read target-prefixed first
//! (`X86_64_UNKNOWN_LINUX_GNU_NCCL_DIR`), then plain.
//!
//! Explicit paths (`NCCL_INCLUDE_DIR`, `NCCL_LIB_DIR`, `CUDA_HOME`/`CUDA_PATH`
//! for cudart when linking statically) are used as given: a missing file there
//! is a warning, not an error, because cross builds and builds linked on
//! another machine need exactly that. Everything found by searching is checked,
//! and a missing piece there is an error.

#![allow(dead_code)] // each includer uses a different part

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The variables that influence discovery, for `rerun-if-env-changed` and reports.
pub const VARIABLES: &[&str] = &[
    "NCCL_INCLUDE_DIR",
    "NCCL_LIB_DIR",
    "NCCL_DIR",
    "NCCL_STATIC",
    "CUDA_HOME",
    "CUDA_PATH",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "PKG_CONFIG_PATH",
    "DOCS_RS",
    "NCCL_SYS_BINDGEN",
];

/// What discovery needs from the outside world besides the file system.
pub trait Host {
    /// A raw environment variable (the build script also prints
    /// `cargo:rerun-if-env-changed` for it).
    fn raw_var(&self, name: &str) -> Option<OsString>;
    /// The target triple being built for.
    fn target(&self) -> String;
    /// pkg-config's answer for `nccl`: include dirs and library dirs.
    fn pkg_config(&self) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
        pkg_config::Config::new()
            .cargo_metadata(false)
            .env_metadata(false)
            .probe("nccl")
            .map(|l| (l.include_paths, l.link_paths))
            .map_err(|e| {
                let text = e.to_string();
                let line = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("failed");
                line.to_string()
            })
    }
    /// The host triple, for the failure message (`HOST` in a build script).
    fn host_triple(&self) -> String {
        std::env::var("HOST").unwrap_or_else(|_| "?".into())
    }
    /// The nccl-sys version, for the failure message.
    fn crate_version(&self) -> String {
        std::env::var("CARGO_PKG_VERSION").unwrap_or_else(|_| "?".into())
    }
    /// site-packages folders of the `python3` on `PATH`.
    fn python_site_packages(&self) -> Result<Vec<PathBuf>, String> {
        python3_site_packages()
    }
    /// The usual installation prefixes, after `CUDA_HOME`/`CUDA_PATH`.
    fn system_prefixes(&self) -> Vec<PathBuf> {
        ["/usr/local/cuda", "/usr", "/usr/local"]
            .iter()
            .map(PathBuf::from)
            .collect()
    }
}

/// site-packages of the `python3` on PATH (purelib, platlib, site and user
/// site). The interpreter is the first in an absolute folder of `PATH` (never
/// one found through `.` or an empty entry), run isolated (`-I -S`: nothing
/// from the working directory, `PYTHON*` variables or `.pth` hooks) from
/// `/`, killed after 10 s, its answer read up to 64 KiB; only absolute
/// folders are taken from it.
pub fn python3_site_packages() -> Result<Vec<PathBuf>, String> {
    use std::io::Read;
    let script = "import sysconfig,site\n\
                  p=[sysconfig.get_paths()['purelib'],sysconfig.get_paths()['platlib']]\n\
                  try:\n  p+=site.getsitepackages()+[site.getusersitepackages()]\n\
                  except Exception:\n  pass\n\
                  print('\\n'.join(dict.fromkeys(p)))";
    let python = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.is_absolute())
        .map(|d| d.join("python3"))
        .find(|f| f.is_file())
        .ok_or("no python3 in an absolute folder of PATH")?;
    let mut child = std::process::Command::new(&python)
        .args(["-I", "-S", "-c", script])
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("could not run {}: {e}", python.display()))?;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if std::time::Instant::now() < end => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} gave no answer within 10 s", python.display()));
            }
        }
    };
    let mut out = Vec::new();
    if let Some(o) = child.stdout.take() {
        let _ = o.take(64 << 10).read_to_end(&mut out);
    }
    if !status.success() {
        return Err(format!("{} failed ({status})", python.display()));
    }
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.is_dir())
        .collect())
}

/// Reads `NAME` for the target: `<TARGET>_NAME` first, then `NAME`.
/// Empty values count as unset.
pub fn var(host: &dyn Host, name: &str) -> Option<OsString> {
    let prefixed = format!(
        "{}_{}",
        host.target().to_uppercase().replace('-', "_"),
        name
    );
    host.raw_var(&prefixed)
        .or_else(|| host.raw_var(name))
        .filter(|v| !v.is_empty())
}

/// How the NCCL installation was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `NCCL_INCLUDE_DIR` and/or `NCCL_LIB_DIR`.
    Explicit,
    /// `NCCL_DIR`.
    NcclDir(PathBuf),
    /// pkg-config `nccl`.
    PkgConfig,
    /// A CUDA or system prefix.
    Prefix(PathBuf),
    /// NVIDIA's pip wheel (`.../site-packages/nvidia/nccl`).
    PipWheel(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Explicit => write!(f, "NCCL_INCLUDE_DIR/NCCL_LIB_DIR"),
            Source::NcclDir(p) => write!(f, "NCCL_DIR={}", p.display()),
            Source::PkgConfig => write!(f, "pkg-config nccl"),
            Source::Prefix(p) => write!(f, "prefix {}", p.display()),
            Source::PipWheel(p) => write!(f, "pip wheel {}", p.display()),
        }
    }
}

/// A found NCCL installation.
#[derive(Clone, Debug)]
pub struct Nccl {
    /// Folder holding `nccl.h`.
    pub include_dir: PathBuf,
    /// Folder holding the library (or where it is expected, for explicit paths).
    pub lib_dir: PathBuf,
    /// `libnccl.so` or `libnccl.so.2`, when present.
    pub shared_lib: Option<PathBuf>,
    /// `libnccl_static.a`, when present.
    pub static_lib: Option<PathBuf>,
    /// How it was found.
    pub source: Source,
    /// Warnings about explicit paths whose files are missing.
    pub warnings: Vec<String>,
}

impl Nccl {
    /// `include_dir/nccl.h`.
    pub fn header(&self) -> PathBuf {
        self.include_dir.join("nccl.h")
    }
    /// Whether the paths came from explicit variables (trusted as given).
    pub fn is_explicit(&self) -> bool {
        self.source == Source::Explicit
    }
}

/// Static or dynamic linking of libnccl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// `libnccl_static.a` + `cudart_static`.
    Static,
    /// `libnccl.so`.
    Dynamic,
}

impl fmt::Display for LinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkMode::Static => "static",
            LinkMode::Dynamic => "dynamic",
        })
    }
}

/// The chosen link mode and what it needs.
#[derive(Clone, Debug)]
pub struct Link {
    /// Static or dynamic.
    pub mode: LinkMode,
    /// Why this mode was chosen, in words.
    pub reason: String,
    /// Folder of `libcudart_static.a` (static mode only).
    pub cudart_dir: Option<PathBuf>,
    /// Warnings about explicit paths whose files are missing.
    pub warnings: Vec<String>,
}

/// One place looked at, for the failure message and `cargo xtask locate`.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// What was tried ("NCCL_DIR=/opt/nccl", "prefix /usr").
    pub what: String,
    /// What was found missing, or why it was skipped.
    pub outcome: String,
}

/// Discovery failed: everything tried, and the fixes.
#[derive(Clone, Debug)]
pub struct FindError {
    /// One-line summary.
    pub summary: String,
    /// Every place and variable tried.
    pub attempts: Vec<Attempt>,
    /// `HOST`, `TARGET` and crate version line.
    pub context: String,
}

impl fmt::Display for FindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary)?;
        if !self.attempts.is_empty() {
            writeln!(f, "\nTried, in order:")?;
            for a in &self.attempts {
                writeln!(f, "  - {}: {}", a.what, a.outcome)?;
            }
        }
        writeln!(
            f,
            "\nFixes:\n  \
             - Debian/Ubuntu with NVIDIA's CUDA repository: apt install libnccl-dev (libnccl2)\n  \
             - without root, CPU-only or not: pip install nvidia-nccl-cu13 (or nvidia-nccl-cu12), \
             in the active venv or the python3 on PATH\n  \
             - NCCL somewhere else: NCCL_DIR=/path/to/nccl (with include/nccl.h and lib/libnccl.so), \
             or NCCL_INCLUDE_DIR=... NCCL_LIB_DIR=...\n  \
             - link mode: NCCL_STATIC=1 (libnccl_static.a + libcudart_static.a, CUDA_HOME=...) \
             or NCCL_STATIC=0 (libnccl.so)\n  \
             - in this repository: cargo xtask test (or ci: they fetch the pip wheels themselves), \
             cargo xtask locate (report)"
        )?;
        write!(f, "\n{}", self.context)
    }
}

fn context(host: &dyn Host) -> String {
    format!(
        "HOST={} TARGET={} nccl-sys {}",
        host.host_triple(),
        host.target(),
        host.crate_version()
    )
}

/// The Debian multiarch folder name for a target triple (`x86_64-linux-gnu`).
pub fn multiarch(target: &str) -> Option<String> {
    let mut parts = target.split('-');
    let arch = parts.next()?;
    let os_parts: Vec<&str> = parts.collect();
    // x86_64-unknown-linux-gnu -> [unknown, linux, gnu]
    let (os, env) = match os_parts.as_slice() {
        [_, os, env] => (*os, *env),
        [os, env] => (*os, *env),
        _ => return None,
    };
    if os != "linux" {
        return None;
    }
    let arch = match arch {
        "i686" | "i586" => "i386",
        a => a,
    };
    Some(format!("{arch}-{os}-{env}"))
}

/// Library sub-folders looked at under a prefix, in order.
pub fn lib_subdirs(target: &str) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("lib64"), PathBuf::from("lib")];
    if let Some(m) = multiarch(target) {
        v.push(Path::new("lib").join(m));
    }
    v
}

/// The NCCL libraries in `dir`: (shared, static).
pub fn libs_in(dir: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
    let shared = ["libnccl.so", "libnccl.so.2"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file());
    let stat = Some(dir.join("libnccl_static.a")).filter(|p| p.is_file());
    (shared, stat)
}

/// Looks for `include/nccl.h` and a library folder under `prefix`.
fn probe_prefix(prefix: &Path, target: &str) -> Result<(PathBuf, PathBuf), String> {
    if !prefix.is_dir() {
        return Err("folder does not exist".into());
    }
    let inc = prefix.join("include");
    let header_ok = inc.join("nccl.h").is_file();
    let lib = lib_subdirs(target)
        .into_iter()
        .map(|s| prefix.join(s))
        .find(|d| {
            let (s, a) = libs_in(d);
            s.is_some() || a.is_some()
        });
    match (header_ok, lib) {
        (true, Some(lib)) => Ok((inc, lib)),
        (false, Some(lib)) => Err(format!(
            "{} has libnccl but {} is missing",
            lib.display(),
            inc.join("nccl.h").display()
        )),
        (true, None) => Err(format!(
            "{} is there but no libnccl.so, libnccl.so.2 or libnccl_static.a in {}",
            inc.join("nccl.h").display(),
            lib_subdirs(target)
                .iter()
                .map(|s| s.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (false, None) => Err("no include/nccl.h and no libnccl".into()),
    }
}

fn found(inc: PathBuf, lib: PathBuf, source: Source) -> Nccl {
    let (shared_lib, static_lib) = libs_in(&lib);
    Nccl {
        include_dir: inc,
        lib_dir: lib,
        shared_lib,
        static_lib,
        source,
        warnings: Vec::new(),
    }
}

/// site-packages folders under an environment prefix (`$VIRTUAL_ENV`, `$CONDA_PREFIX`).
pub fn site_packages_under(prefix: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in ["lib", "lib64"] {
        let Ok(rd) = std::fs::read_dir(prefix.join(lib)) else {
            continue;
        };
        let mut names: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("python3"))
            })
            .map(|p| p.join("site-packages"))
            .filter(|p| p.is_dir())
            .collect();
        names.sort();
        out.extend(names);
    }
    out
}

/// Finds NCCL, in the documented order.
pub fn find_nccl(host: &dyn Host) -> Result<Nccl, FindError> {
    let target = host.target();
    let mut attempts = Vec::new();
    let fail = |summary: String, attempts: Vec<Attempt>| FindError {
        summary,
        attempts,
        context: context(host),
    };

    // Relative paths are refused: this script runs in nccl-sys's folder,
    // the final link in the dependent's, so one value would name two places
    // (the files checked here and the ones linked there).
    for name in [
        "NCCL_INCLUDE_DIR",
        "NCCL_LIB_DIR",
        "NCCL_DIR",
        "CUDA_HOME",
        "CUDA_PATH",
    ] {
        if let Some(v) = var(host, name).filter(|v| !Path::new(v).is_absolute()) {
            return Err(fail(
                format!(
                    "{name}={} is a relative path: give an absolute one (the build script and \
                     the final link run in different folders, so a relative path would name \
                     different files)",
                    Path::new(&v).display()
                ),
                attempts,
            ));
        }
    }

    // 1. explicit include and library folders: trusted as given.
    let inc = var(host, "NCCL_INCLUDE_DIR").map(PathBuf::from);
    let lib = var(host, "NCCL_LIB_DIR").map(PathBuf::from);
    if inc.is_some() || lib.is_some() {
        let mut warnings = Vec::new();
        // A half-explicit setting takes the other half from NCCL_DIR or the search.
        let (inc, lib) = match (inc, lib) {
            (Some(i), Some(l)) => (i, l),
            (i, l) => {
                let rest = find_searched(host, &target, &mut attempts).map_err(|s| {
                    fail(
                        format!(
                            "NCCL_INCLUDE_DIR and NCCL_LIB_DIR must be set together, or the other \
                             one must be findable: {s}"
                        ),
                        attempts.clone(),
                    )
                })?;
                (i.unwrap_or(rest.include_dir), l.unwrap_or(rest.lib_dir))
            }
        };
        if !inc.join("nccl.h").is_file() {
            warnings.push(format!(
                "NCCL_INCLUDE_DIR: {} does not exist; using it as given",
                inc.join("nccl.h").display()
            ));
        }
        let (s, a) = libs_in(&lib);
        if s.is_none() && a.is_none() {
            warnings.push(format!(
                "NCCL_LIB_DIR: no libnccl.so, libnccl.so.2 or libnccl_static.a in {}; using it as given",
                lib.display()
            ));
        }
        let mut n = found(inc, lib, Source::Explicit);
        n.warnings = warnings;
        return Ok(n);
    }
    attempts.push(Attempt {
        what: "NCCL_INCLUDE_DIR + NCCL_LIB_DIR".into(),
        outcome: "unset".into(),
    });

    // 2. NCCL_DIR: an explicit prefix, but its contents are checked (it is a
    //    promise that a complete installation is there).
    if let Some(dir) = var(host, "NCCL_DIR").map(PathBuf::from) {
        return match probe_prefix(&dir, &target) {
            Ok((i, l)) => Ok(found(i, l, Source::NcclDir(dir))),
            Err(why) => {
                attempts.push(Attempt {
                    what: format!("NCCL_DIR={}", dir.display()),
                    outcome: why.clone(),
                });
                Err(fail(
                    format!(
                        "NCCL_DIR={} is not a usable NCCL installation: {why}",
                        dir.display()
                    ),
                    attempts,
                ))
            }
        };
    }
    attempts.push(Attempt {
        what: "NCCL_DIR".into(),
        outcome: "unset".into(),
    });

    find_searched(host, &target, &mut attempts).map_err(|_| {
        fail(
            "could not find NCCL (nccl.h and libnccl)".into(),
            attempts.clone(),
        )
    })
}

/// Steps 3–5: pkg-config, prefixes, pip wheels.
fn find_searched(
    host: &dyn Host,
    target: &str,
    attempts: &mut Vec<Attempt>,
) -> Result<Nccl, String> {
    // 3. pkg-config
    match host.pkg_config() {
        Ok((incs, libs)) => {
            let inc = incs.iter().find(|d| d.join("nccl.h").is_file()).cloned();
            let lib = libs.iter().find(|d| {
                let (s, a) = libs_in(d);
                s.is_some() || a.is_some()
            });
            match (inc, lib) {
                (Some(i), Some(l)) => return Ok(found(i, l.clone(), Source::PkgConfig)),
                (i, l) => {
                    let mut missing = Vec::new();
                    if i.is_none() {
                        missing.push("no nccl.h in its include dirs");
                    }
                    if l.is_none() {
                        missing.push("no libnccl in its lib dirs");
                    }
                    attempts.push(Attempt {
                        what: "pkg-config nccl".into(),
                        outcome: format!("found nccl.pc, but {}", missing.join(" and ")),
                    })
                }
            }
        }
        Err(e) => attempts.push(Attempt {
            what: "pkg-config nccl".into(),
            outcome: e,
        }),
    }

    // 4. CUDA_HOME, CUDA_PATH, usual prefixes
    let mut prefixes: Vec<(String, PathBuf)> = Vec::new();
    for v in ["CUDA_HOME", "CUDA_PATH"] {
        match var(host, v) {
            Some(p) => {
                prefixes.push((format!("{v}={}", Path::new(&p).display()), PathBuf::from(p)))
            }
            None => attempts.push(Attempt {
                what: v.into(),
                outcome: "unset".into(),
            }),
        }
    }
    for p in host.system_prefixes() {
        prefixes.push((format!("prefix {}", p.display()), p));
    }
    for (what, p) in prefixes {
        match probe_prefix(&p, target) {
            Ok((i, l)) => return Ok(found(i, l, Source::Prefix(p))),
            Err(e) => attempts.push(Attempt { what, outcome: e }),
        }
    }

    // 5. pip wheels
    let mut sites: Vec<(String, PathBuf)> = Vec::new();
    for v in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        match var(host, v) {
            Some(p) if !Path::new(&p).is_absolute() => attempts.push(Attempt {
                what: format!("{v}={}", Path::new(&p).display()),
                outcome: "skipped: not an absolute path".into(),
            }),
            Some(p) => {
                let found_sites = site_packages_under(Path::new(&p));
                if found_sites.is_empty() {
                    attempts.push(Attempt {
                        what: format!("{v}={}", Path::new(&p).display()),
                        outcome: "no lib/python3*/site-packages".into(),
                    });
                }
                sites.extend(found_sites.into_iter().map(|s| (v.to_string(), s)));
            }
            None => attempts.push(Attempt {
                what: v.into(),
                outcome: "unset".into(),
            }),
        }
    }
    match host.python_site_packages() {
        Ok(s) => sites.extend(s.into_iter().map(|s| ("python3 on PATH".to_string(), s))),
        Err(e) => attempts.push(Attempt {
            what: "python3 on PATH".into(),
            outcome: e,
        }),
    }
    for (origin, site) in sites {
        let root = site.join("nvidia").join("nccl");
        match probe_prefix(&root, target) {
            Ok((i, l)) => return Ok(found(i, l, Source::PipWheel(root))),
            Err(e) => attempts.push(Attempt {
                what: format!("pip wheel {} ({origin})", root.display()),
                outcome: e,
            }),
        }
    }
    Err("not found".into())
}

/// Folders where `libcudart_static.a` may be, in order, with whether each is
/// explicit (trusted as given).
fn cudart_candidates(host: &dyn Host, nccl: &Nccl) -> (Vec<PathBuf>, Option<(String, PathBuf)>) {
    let target = host.target();
    let mut v = Vec::new();
    let arch = target.split('-').next().unwrap_or("x86_64");
    for name in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = var(host, name) {
            let p = PathBuf::from(p);
            let dirs: Vec<PathBuf> = [
                p.join("lib64"),
                p.join("lib"),
                p.join("targets").join(format!("{arch}-linux")).join("lib"),
            ]
            .into_iter()
            .collect();
            if let Some(d) = dirs.iter().find(|d| d.join("libcudart_static.a").is_file()) {
                return (vec![d.clone()], None);
            }
            // explicit: used as given (lib64, the CUDA toolkit's layout)
            return (vec![], Some((name.to_string(), dirs[0].clone())));
        }
    }
    // Beside a pip-wheel NCCL: nvidia/cu13/lib (CUDA 13 wheels), nvidia/cuda_runtime/lib (CUDA 12)
    if let Source::PipWheel(root) = &nccl.source {
        if let Some(nvidia) = root.parent() {
            v.push(nvidia.join("cu13").join("lib"));
            v.push(nvidia.join("cuda_runtime").join("lib"));
        }
    }
    v.push(nccl.lib_dir.clone());
    for p in host.system_prefixes() {
        for s in lib_subdirs(&target) {
            v.push(p.join(s));
        }
        v.push(p.join("targets").join(format!("{arch}-linux")).join("lib"));
    }
    (v, None)
}

/// Chooses static or dynamic linking from `NCCL_STATIC` and what was found.
pub fn choose_link(host: &dyn Host, nccl: &Nccl) -> Result<Link, FindError> {
    let fail = |summary: String, attempts: Vec<Attempt>| FindError {
        summary,
        attempts,
        context: context(host),
    };
    let setting = var(host, "NCCL_STATIC").map(|v| v.to_string_lossy().into_owned());
    let mut warnings = Vec::new();
    let (mode, reason) = match setting.as_deref() {
        Some("0") => {
            if nccl.shared_lib.is_none() {
                if nccl.is_explicit() {
                    warnings.push(format!(
                        "NCCL_STATIC=0 but no libnccl.so in {}; linking -lnccl as given",
                        nccl.lib_dir.display()
                    ));
                } else {
                    return Err(fail(
                        format!(
                            "NCCL_STATIC=0 asks for dynamic linking, but there is no libnccl.so or \
                             libnccl.so.2 in {} (found through {})",
                            nccl.lib_dir.display(),
                            nccl.source
                        ),
                        vec![],
                    ));
                }
            }
            (LinkMode::Dynamic, "NCCL_STATIC=0".to_string())
        }
        Some(v) => {
            if nccl.static_lib.is_none() {
                let want = nccl.lib_dir.join("libnccl_static.a");
                if nccl.is_explicit() {
                    warnings.push(format!(
                        "NCCL_STATIC={v} but {} does not exist; using NCCL_LIB_DIR as given",
                        want.display()
                    ));
                } else {
                    return Err(fail(
                        format!(
                            "NCCL_STATIC={v} asks for static linking, but {} does not exist (NCCL \
                             found through {}). Install the static library (libnccl-dev ships \
                             libnccl_static.a; NVIDIA's pip wheels do not), point NCCL_LIB_DIR at it, \
                             or set NCCL_STATIC=0",
                            want.display(),
                            nccl.source
                        ),
                        vec![],
                    ));
                }
            }
            (LinkMode::Static, format!("NCCL_STATIC={v}"))
        }
        None => match (&nccl.static_lib, &nccl.shared_lib) {
            (Some(a), _) => (
                LinkMode::Static,
                format!("NCCL_STATIC unset and {} exists", a.display()),
            ),
            (None, _) => (
                LinkMode::Dynamic,
                format!(
                    "NCCL_STATIC unset and no libnccl_static.a in {}",
                    nccl.lib_dir.display()
                ),
            ),
        },
    };
    let mut cudart_dir = None;
    if mode == LinkMode::Static {
        let (candidates, explicit) = cudart_candidates(host, nccl);
        if let Some((name, dir)) = explicit {
            if !dir.join("libcudart_static.a").is_file() {
                warnings.push(format!(
                    "{name}: {} does not exist; using it as given",
                    dir.join("libcudart_static.a").display()
                ));
            }
            cudart_dir = Some(dir);
        } else if let Some(d) = candidates
            .iter()
            .find(|d| d.join("libcudart_static.a").is_file())
        {
            cudart_dir = Some(d.clone());
        } else if nccl.is_explicit() {
            warnings.push(
                "static linking: libcudart_static.a not found (set CUDA_HOME); linking -lcudart_static as given"
                    .to_string(),
            );
        } else {
            return Err(fail(
                "static linking needs libcudart_static.a, which was not found. Set CUDA_HOME to the \
                 CUDA toolkit, pip install nvidia-cuda-runtime, or set NCCL_STATIC=0"
                    .into(),
                candidates
                    .into_iter()
                    .map(|d| Attempt {
                        what: d.display().to_string(),
                        outcome: "no libcudart_static.a".into(),
                    })
                    .collect(),
            ));
        }
    }
    Ok(Link {
        mode,
        reason,
        cudart_dir,
        warnings,
    })
}

/// The NCCL version a library file was built as, read from its name
/// (`libnccl.so.2.28.3`) or from the `NCCL version X.Y.Z` string inside it.
pub fn library_version(path: &Path) -> Option<(u32, u32, u32)> {
    if let Ok(real) = std::fs::canonicalize(path) {
        let name = real.file_name()?.to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("libnccl.so.") {
            let parts: Vec<u32> = rest.split('.').filter_map(|p| p.parse().ok()).collect();
            if parts.len() == 3 {
                return Some((parts[0], parts[1], parts[2]));
            }
        }
    }
    scan_version(path)
}

fn scan_version(path: &Path) -> Option<(u32, u32, u32)> {
    use std::io::Read;
    const NEEDLE: &[u8] = b"NCCL version ";
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 1 << 22];
    let mut carry = 0usize;
    loop {
        let n = f.read(&mut buf[carry..]).ok()?;
        if n == 0 {
            return None;
        }
        let end = carry + n;
        let hay = &buf[..end];
        let mut i = 0;
        while let Some(pos) = hay[i..].iter().position(|&b| b == b'N') {
            let at = i + pos;
            if hay.len() - at < NEEDLE.len() + 16 {
                break;
            }
            if &hay[at..at + NEEDLE.len()] == NEEDLE {
                let tail = &hay[at + NEEDLE.len()..at + NEEDLE.len() + 16];
                if let Some(v) = parse_version_prefix(tail) {
                    return Some(v);
                }
            }
            i = at + 1;
        }
        // keep the tail, in case the string straddles two reads
        let keep = (NEEDLE.len() + 16).min(end);
        buf.copy_within(end - keep..end, 0);
        carry = keep;
    }
}

fn parse_version_prefix(b: &[u8]) -> Option<(u32, u32, u32)> {
    let s: String = b
        .iter()
        .take_while(|c| c.is_ascii_digit() || **c == b'.')
        .map(|&c| c as char)
        .collect();
    let parts: Vec<u32> = s.split('.').filter_map(|p| p.parse().ok()).collect();
    (parts.len() == 3).then(|| (parts[0], parts[1], parts[2]))
}
