//! Getting NCCL (and libclang) when the machine has none: NVIDIA's pip wheels,
//! installed under `target/nccl-deps` without root, once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::find;
use crate::{Result, XtaskHost};

/// The wheels installed when NCCL is missing: the NCCL the committed bindings
/// come from, and the CUDA runtime (libcudart_static.a) of the same CUDA major.
pub const NCCL_WHEELS: &[&str] = &["nvidia-nccl-cu13==2.28.3", "nvidia-cuda-runtime==13.0.96"];
/// libclang for bindgen, when the machine has none.
pub const LIBCLANG_WHEEL: &str = "libclang==18.1.1";

/// How `ci`, `test` and `bench` get NCCL and libclang (the end of their
/// `--help`).
pub fn note() -> String {
    format!(
        "\
NCCL and libclang: ci, test and bench use the ones nccl-sys's search finds on this machine (README,
\"Finding NCCL\"); where there are none they install, once, with pip into target/nccl-deps (no root):
  NCCL:     {}
  libclang: {LIBCLANG_WHEEL}
The builds then get NCCL_DIR and LIBCLANG_PATH for those, and every program LD_LIBRARY_PATH with
NCCL's library folder first.",
        NCCL_WHEELS.join(" ")
    )
}

/// Environment changes that make the build find what was provisioned.
#[derive(Debug, Default)]
pub struct DepsEnv {
    vars: Vec<(&'static str, OsString)>,
}

impl DepsEnv {
    /// Sets the variables in this process, so every cargo started from here
    /// inherits them.
    pub fn apply(&self) {
        for (k, v) in &self.vars {
            // SAFETY: xtask is single-threaded when it sets up its environment.
            unsafe { std::env::set_var(k, v) };
        }
    }
}

/// libclang as bindgen (clang-sys) would look for it.
pub fn find_libclang() -> Option<PathBuf> {
    let is_lib = |p: &Path| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
            n.starts_with("libclang") && n.contains(".so") && !n.starts_with("libclang-cpp")
        })
    };
    let in_dir = |d: &Path| -> Option<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| is_lib(p))
            .collect();
        v.sort();
        v.pop()
    };
    if let Some(p) = std::env::var_os("LIBCLANG_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() { Some(p) } else { in_dir(&p) };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        let mut llvm: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("llvm"))
            })
            .map(|p| p.join("lib"))
            .collect();
        llvm.sort();
        llvm.reverse();
        dirs.extend(llvm);
    }
    for d in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.iter().find_map(|d| in_dir(d))
}

fn pip_install(target: &Path, what: &[&str]) -> Result<()> {
    eprintln!(
        "xtask: installing {} into {} (pip, no root needed)",
        what.join(" "),
        target.display()
    );
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--root-user-action=ignore",
            "--upgrade",
            "--target",
        ])
        .arg(target)
        .args(what)
        .status()
        .map_err(|e| format!("could not run python3 -m pip: {e}"))?;
    if !status.success() {
        return Err(format!("pip install {} failed ({status})", what.join(" ")));
    }
    Ok(())
}

/// Installs `what` into `dir` unless a stamp says this exact list is there.
fn provision(dir: &Path, stamp_name: &str, what: &[&str]) -> Result<()> {
    let stamp = dir.join(stamp_name);
    let want = what.join("\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    pip_install(dir, what)?;
    std::fs::write(&stamp, want).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

/// Where `ci`, `test` and `bench` get NCCL or libclang from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Found on the machine, as nccl-sys's search (or clang-sys's) finds it:
    /// NCCL's library folder, or the libclang library.
    Machine(PathBuf),
    /// Not on the machine: the pip wheels in this folder (`target/nccl-deps`,
    /// or its `libclang` subfolder), installed already or not yet.
    Wheels { dir: PathBuf, installed: bool },
}

/// What `ci`, `test` and `bench` use (and `locate` reports, and `launch`
/// passes on): NCCL and libclang from the machine where they are found,
/// NVIDIA's wheels under `target/nccl-deps` where not.
#[derive(Debug, Clone)]
pub struct Plan {
    pub nccl: Source,
    pub libclang: Source,
}

/// The folder the wheels go to.
pub fn deps_dir(root: &Path) -> PathBuf {
    root.join("target").join("nccl-deps")
}

fn stamped(dir: &Path, stamp_name: &str, what: &[&str]) -> bool {
    std::fs::read_to_string(dir.join(stamp_name)).is_ok_and(|s| s == what.join("\n"))
}

/// Decides without installing anything.
pub fn plan(root: &Path) -> Plan {
    let dir = deps_dir(root);
    let nccl = match find::find_nccl(&XtaskHost) {
        Ok(n) => Source::Machine(n.lib_dir),
        Err(_) => Source::Wheels {
            installed: stamped(&dir, ".nccl-stamp", NCCL_WHEELS),
            dir: dir.clone(),
        },
    };
    let ldir = dir.join("libclang");
    let libclang = match find_libclang() {
        Some(p) => Source::Machine(p),
        None => Source::Wheels {
            installed: stamped(&ldir, ".libclang-stamp", &[LIBCLANG_WHEEL]),
            dir: ldir,
        },
    };
    Plan { nccl, libclang }
}

impl Plan {
    /// NCCL's library folder, if there is one yet.
    pub fn nccl_lib_dir(&self) -> Option<PathBuf> {
        match &self.nccl {
            Source::Machine(lib) => Some(lib.clone()),
            Source::Wheels { dir, installed } => {
                installed.then(|| dir.join("nvidia").join("nccl").join("lib"))
            }
        }
    }

    /// The variables that make a build (and the programs it makes) use
    /// this plan: `NCCL_DIR` and `LIBCLANG_PATH` for what comes from the
    /// wheels, `LD_LIBRARY_PATH` with NCCL's library folder first.
    pub fn env(&self) -> Result<DepsEnv> {
        let mut env = DepsEnv::default();
        if let Source::Wheels {
            dir,
            installed: true,
        } = &self.nccl
        {
            env.vars
                .push(("NCCL_DIR", dir.join("nvidia").join("nccl").into()));
        }
        if let Source::Wheels {
            dir,
            installed: true,
        } = &self.libclang
        {
            env.vars
                .push(("LIBCLANG_PATH", dir.join("clang").join("native").into()));
        }
        if let Some(lib) = self.nccl_lib_dir() {
            // programs linked dynamically must find libnccl at run time
            let mut ld = vec![lib.clone()];
            if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
                ld.extend(std::env::split_paths(&old).filter(|p| p != &lib));
            }
            env.vars.push((
                "LD_LIBRARY_PATH",
                std::env::join_paths(ld).map_err(|e| e.to_string())?,
            ));
        }
        Ok(env)
    }
}

/// Makes sure NCCL and libclang can be found; installs NVIDIA's pip wheels
/// under `target/nccl-deps` when they cannot. Returns the variables to set.
pub fn ensure(root: &Path) -> Result<DepsEnv> {
    let mut plan = plan(root);
    match &mut plan.nccl {
        Source::Machine(lib) => eprintln!("xtask: NCCL found on this machine ({})", lib.display()),
        Source::Wheels { dir, installed } => {
            eprintln!(
                "xtask: no NCCL found on this machine; using NVIDIA's pip wheels in {}",
                dir.display()
            );
            if !*installed {
                eprintln!(
                    "xtask: first run: downloading them (about 200 MB, once; `cargo xtask locate` \
                     says what is used)"
                );
            }
            provision(dir, ".nccl-stamp", NCCL_WHEELS)?;
            *installed = true;
        }
    }
    if let Source::Wheels { dir, installed } = &mut plan.libclang {
        eprintln!("xtask: no libclang found for bindgen; using the libclang pip wheel");
        provision(dir, ".libclang-stamp", &[LIBCLANG_WHEEL])?;
        *installed = true;
    }
    plan.env()
}
