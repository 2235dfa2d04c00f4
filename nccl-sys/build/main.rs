//! Build script of `nccl-sys`: find NCCL, read its header's version and
//! declarations, pick the bindings (the committed set of the header's minor,
//! or with feature `bindgen` bindgen now when libclang loads), shape them for
//! the link mode (`api.rs`), link libnccl statically or dynamically (or not at all with the
//! `runtime-load` feature), and compute the cfgs, for this crate and (through
//! `DEP_NCCL_CFGS`) for dependents. Discovery lives in `find.rs` (shared with
//! `cargo xtask locate`), the header version in `version.rs`, what a header
//! declares in `scan.rs`, the bindgen configuration in `bindings.rs` (compiled
//! only with feature `bindgen`: it needs bindgen and clang-sys).

mod api;
#[cfg(feature = "bindgen")]
mod bindings;
mod find;
mod scan;
#[path = "../src/since_table.rs"]
mod since_table;
mod version;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use find::{Host, LinkMode};
use since_table::Release;

/// The build script's view of the world: variables are logged and tracked.
struct BuildHost {
    target: String,
}

impl Host for BuildHost {
    fn raw_var(&self, name: &str) -> Option<OsString> {
        println!("cargo:rerun-if-env-changed={name}");
        let v = std::env::var_os(name);
        match &v {
            Some(v) => eprintln!("{name} = {}", v.to_string_lossy()),
            None => eprintln!("{name} unset"),
        }
        v
    }
    fn target(&self) -> String {
        self.target.clone()
    }
}

/// Highest NCCL 2.x minor version for which a `nccl_2_N` cfg is declared.
const MAX_CFG_MINOR: u32 = 40;

/// The oldest NCCL this crate supports: the first release of the oldest
/// committed bindings.
const FLOOR: Release = since_table::RELEASES[0];

fn main() {
    if let Err(e) = run() {
        eprintln!("\nerror: nccl-sys could not be built\n\n{e}");
        std::process::exit(1);
    }
}

/// How this build reaches libnccl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Static,
    Dynamic,
    /// `runtime-load`: nothing linked, libnccl opened at run time.
    Runtime,
    /// docs.rs: nothing probed, nothing linked.
    Docs,
}

/// What one header declares, by kind.
#[derive(Default)]
struct Decl {
    functions: BTreeSet<String>,
    fields: BTreeSet<String>,
    constants: BTreeSet<String>,
}

impl Decl {
    fn from_scan(d: &scan::Declarations) -> Decl {
        Decl {
            functions: d.functions.clone(),
            fields: d.config_fields.iter().map(|f| f.name.clone()).collect(),
            constants: d
                .constants
                .iter()
                .cloned()
                .chain(d.result_codes.iter().map(|(n, _)| n.clone()))
                .collect(),
        }
    }

    /// Everything the since table knows up to `release` (committed bindings
    /// used without a header of their own).
    fn from_table(release: Release) -> Decl {
        let upto = |v: &[(&str, Release)]| -> BTreeSet<String> {
            v.iter()
                .filter(|(_, s)| *s <= release)
                .map(|(n, _)| n.to_string())
                .collect()
        };
        let mut constants = upto(since_table::CONSTANTS);
        constants.extend(
            since_table::RESULT_CODES
                .iter()
                .filter(|(_, _, s)| *s <= release)
                .map(|(n, _, _)| n.to_string()),
        );
        Decl {
            functions: upto(since_table::FUNCTIONS),
            fields: upto(since_table::CONFIG_FIELDS),
            constants,
        }
    }
}

/// The bindings chosen for this build.
struct Chosen {
    /// Bindgen's output (now, or committed).
    text: String,
    /// The version of the header they stand for.
    version: Release,
    /// What that header declares.
    decl: Decl,
    /// Where they come from, in words (`nccl_sys::BINDINGS_SOURCE`).
    origin: String,
}

fn show(r: Release) -> String {
    format!("{}.{}.{}", r.0, r.1, r.2)
}

/// The committed bindings of NCCL 2.`minor`, if there are any.
fn committed(crate_dir: &Path, minor: u32) -> Result<Option<(Release, String)>, String> {
    let Some(&release) = since_table::BINDINGS
        .iter()
        .find(|r| r.0 == 2 && r.1 == minor)
    else {
        return Ok(None);
    };
    let path = crate_dir.join(version::committed_path(release.0, release.1));
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("reading the committed bindings {}: {e}", path.display()))?;
    Ok(Some((release, text)))
}

/// The newest committed bindings, standing for their own release.
fn newest_committed(crate_dir: &Path, why: &str) -> Result<Chosen, String> {
    let newest = *since_table::BINDINGS
        .last()
        .ok_or("no committed bindings")?;
    let (release, text) = committed(crate_dir, newest.1)?.ok_or("no committed bindings")?;
    Ok(Chosen {
        text,
        version: release,
        decl: Decl::from_table(release),
        origin: format!("committed bindings of NCCL {} ({why})", show(release)),
    })
}

fn committed_list() -> String {
    let all: Vec<String> = since_table::BINDINGS.iter().map(|r| show(*r)).collect();
    all.join(", ")
}

/// Why the bindings were not generated now.
enum NoBindgen {
    /// Feature `bindgen` is off.
    #[cfg_attr(feature = "bindgen", allow(dead_code))]
    FeatureOff,
    /// `NCCL_SYS_BINDGEN=0`.
    Forbidden,
    /// Asked for, and bindgen could not run (no libclang, or it failed).
    #[cfg_attr(not(feature = "bindgen"), allow(dead_code))]
    Failed(String),
}

impl NoBindgen {
    fn why(&self) -> &str {
        match self {
            NoBindgen::FeatureOff => "feature `bindgen` off",
            NoBindgen::Forbidden => "NCCL_SYS_BINDGEN=0",
            NoBindgen::Failed(why) => why,
        }
    }
}

/// Bindgen on `include_dir/nccl.h`: only with feature `bindgen`, unless
/// `NCCL_SYS_BINDGEN` is `0`, and if libclang can be loaded. Never panics:
/// libclang is loaded first (bindgen would panic without it), and a panic
/// inside bindgen is caught and reported as an error.
fn try_bindgen(host: &dyn Host, crate_dir: &Path, include_dir: &Path) -> Result<String, NoBindgen> {
    let var = find::var(host, "NCCL_SYS_BINDGEN");
    if var.as_ref().is_some_and(|v| v == "0") {
        return Err(NoBindgen::Forbidden);
    }
    #[cfg(not(feature = "bindgen"))]
    {
        let _ = (crate_dir, include_dir);
        if let Some(v) = var {
            println!(
                "cargo:warning=nccl-sys: NCCL_SYS_BINDGEN={} has no effect: bindgen runs only \
                 with nccl-sys's feature `bindgen`",
                v.to_string_lossy()
            );
        }
        Err(NoBindgen::FeatureOff)
    }
    #[cfg(feature = "bindgen")]
    {
        println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");
        bindings::load_libclang().map_err(NoBindgen::Failed)?;
        let mut cfg = cc::Build::new();
        cfg.cargo_metadata(false).cargo_warnings(false);
        let fallback = bindings::compiler_include_dir(&cfg);
        std::panic::catch_unwind(|| bindings::generate(crate_dir, include_dir, fallback.as_deref()))
            .unwrap_or_else(|_| Err("bindgen panicked (its message is above)".into()))
            .map_err(NoBindgen::Failed)
    }
}

fn run() -> Result<(), String> {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let target = std::env::var("TARGET").map_err(|e| e.to_string())?;
    for p in ["build", "shim", "bindings", "src/since_table.rs"] {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let host = BuildHost { target };
    let runtime_load = std::env::var_os("CARGO_FEATURE_RUNTIME_LOAD").is_some();

    let mut nccl = None;
    let mut link = None;
    let (mode, chosen) = if find::var(&host, "DOCS_RS").is_some() {
        // docs.rs: no NCCL there, and no probing or linking either.
        let mode = if runtime_load {
            Mode::Runtime
        } else {
            Mode::Docs
        };
        (mode, newest_committed(&crate_dir, "docs.rs")?)
    } else {
        match find::find_nccl(&host) {
            Ok(n) => {
                for w in &n.warnings {
                    println!("cargo:warning={w}");
                }
                eprintln!(
                    "nccl-sys: NCCL found through {}: {}",
                    n.source,
                    n.include_dir.display()
                );
                nccl = Some(n);
            }
            Err(e) if runtime_load => {
                eprintln!("nccl-sys: runtime-load: no NCCL at build time, none needed\n{e}");
            }
            Err(e) => return Err(e.to_string()),
        }
        let mode = if runtime_load {
            Mode::Runtime
        } else {
            let n = nccl.as_ref().ok_or("unreachable: NCCL was found")?;
            let l = find::choose_link(&host, n).map_err(|e| e.to_string())?;
            for w in &l.warnings {
                println!("cargo:warning={w}");
            }
            eprintln!("nccl-sys: link mode {} ({})", l.mode, l.reason);
            let m = match l.mode {
                LinkMode::Static => Mode::Static,
                LinkMode::Dynamic => Mode::Dynamic,
            };
            link = Some(l);
            m
        };
        (
            mode,
            choose(&host, &crate_dir, nccl.as_ref(), runtime_load)?,
        )
    };
    eprintln!(
        "nccl-sys: NCCL {} bindings: {}",
        show(chosen.version),
        chosen.origin
    );

    if let (Some(n), Some(l)) = (&nccl, &link) {
        if n.header().is_file() {
            check_library_version(n, l, chosen.version)?;
        }
        emit_link(n, l);
    }

    let is_floor = |name: &str| {
        since_table::FUNCTIONS
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .is_ok_and(|i| since_table::FUNCTIONS[i].1 <= FLOOR)
    };
    let calls = match mode {
        Mode::Static => api::Calls::Direct,
        Mode::Dynamic | Mode::Docs => api::Calls::FloorDirect,
        Mode::Runtime => api::Calls::AllLazy,
    };
    let other: BTreeSet<String> = chosen
        .decl
        .fields
        .iter()
        .chain(&chosen.decl.constants)
        .cloned()
        .collect();
    let surface = api::Surface {
        functions: &chosen.decl.functions,
        other: &other,
        version: chosen.version,
    };
    let text = api::build(&chosen.text, &surface, calls, is_floor)?;
    std::fs::write(out_dir.join("bindings.rs"), text)
        .map_err(|e| format!("writing bindings: {e}"))?;

    let (cfgs, check_cfgs) = cfgs(&chosen, mode);
    for c in &check_cfgs {
        println!("cargo:rustc-check-cfg={c}");
    }
    for c in &cfgs {
        println!("cargo:rustc-cfg={c}");
    }
    let (major, minor, patch) = chosen.version;
    let code = major * 10000 + minor * 100 + patch;
    let mode_name = match mode {
        Mode::Static => "Static",
        Mode::Dynamic => "Dynamic",
        Mode::Runtime => "Runtime",
        Mode::Docs => "None",
    };
    let include = nccl
        .as_ref()
        .map(|n| n.include_dir.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lib = match (&nccl, mode) {
        (Some(n), Mode::Static | Mode::Dynamic) => n.lib_dir.to_string_lossy().into_owned(),
        _ => String::new(),
    };
    write_build_info(&out_dir, mode_name, code, &include, &lib, &chosen.origin)?;

    // Metadata for dependents (DEP_NCCL_*): `nccl`'s build script forwards
    // the cfgs, so one place computes them.
    if !include.is_empty() {
        println!("cargo:include={include}");
    }
    if !lib.is_empty() {
        println!("cargo:lib_dir={lib}");
    }
    println!("cargo:static={}", u8::from(mode == Mode::Static));
    println!("cargo:link_mode={}", mode_name.to_lowercase());
    println!("cargo:version_number={code}");
    println!("cargo:version={}", show(chosen.version));
    println!("cargo:cfgs={}", cfgs.join(";"));
    println!("cargo:check_cfgs={}", check_cfgs.join(";"));
    Ok(())
}

/// Picks the bindings: the committed set of the header's minor, or with
/// feature `bindgen` bindgen on the header found when libclang loads (and
/// the committed set when it does not). `runtime-load` without bindgen: the
/// newest committed set.
fn choose(
    host: &dyn Host,
    crate_dir: &Path,
    nccl: Option<&find::Nccl>,
    runtime_load: bool,
) -> Result<Chosen, String> {
    let header = nccl.map(find::Nccl::header).filter(|h| h.is_file());
    let Some(header) = header else {
        if let Some(n) = nccl {
            // Only explicit paths get here (searched ones are checked).
            let c = newest_committed(crate_dir, "no nccl.h at NCCL_INCLUDE_DIR")?;
            println!(
                "cargo:warning={} does not exist: using the committed NCCL {} bindings; the \
                 library linked must be compatible with them",
                n.header().display(),
                show(c.version)
            );
            return Ok(c);
        }
        return newest_committed(crate_dir, "runtime-load without an NCCL at build time");
    };
    let include_dir = header.parent().unwrap_or(Path::new("."));
    println!("cargo:rerun-if-changed={}", header.display());
    let mut cfg = cc::Build::new();
    cfg.cargo_metadata(false).cargo_warnings(false);
    let (v, expanded) = version::expand_header(cfg, crate_dir, include_dir)?;
    let release = (v.major, v.minor, v.patch);
    eprintln!("nccl-sys: header version {v}");
    if release < FLOOR {
        return Err(format!(
            "{} is NCCL {v}, older than {}, the oldest NCCL nccl-sys supports. Install a newer \
             NCCL (pip install nvidia-nccl-cu12, or libnccl-dev from NVIDIA's repository) and \
             point NCCL_DIR at it",
            header.display(),
            show(FLOOR)
        ));
    }
    let raw = std::fs::read_to_string(&header)
        .map_err(|e| format!("reading {}: {e}", header.display()))?;
    let scanned = scan::scan(&expanded, &raw).map_err(|e| format!("{}: {e}", header.display()))?;
    let from_header = |text: String, origin: String| Chosen {
        text,
        version: release,
        decl: Decl::from_scan(&scanned),
        origin,
    };
    let generated = try_bindgen(host, crate_dir, include_dir);
    if runtime_load {
        return match generated {
            Ok(text) => Ok(from_header(
                text,
                format!("bindgen on {}", header.display()),
            )),
            Err(no) => {
                eprintln!(
                    "nccl-sys: runtime-load: not binding {}: {}",
                    header.display(),
                    no.why()
                );
                newest_committed(
                    crate_dir,
                    &format!("runtime-load, no bindgen: {}", no.why()),
                )
            }
        };
    }
    let fallback = if v.major == 2 {
        committed(crate_dir, v.minor)?
    } else {
        None
    };
    match (generated, fallback) {
        (Ok(text), _) => Ok(from_header(
            text,
            format!("bindgen on {}", header.display()),
        )),
        (Err(no), Some((from, text))) => {
            let why = match &no {
                NoBindgen::FeatureOff | NoBindgen::Forbidden => no.why(),
                NoBindgen::Failed(why) => {
                    println!(
                        "cargo:warning=nccl-sys: bindgen could not run ({why}); using the \
                         committed bindings of NCCL {} for the NCCL {v} header {}",
                        show(from),
                        header.display()
                    );
                    "bindgen could not run"
                }
            };
            Ok(from_header(
                text,
                format!("committed bindings of NCCL {} ({why})", show(from)),
            ))
        }
        (Err(no), None) => {
            let fix = match &no {
                NoBindgen::Forbidden => "unset NCCL_SYS_BINDGEN (0 forbids bindgen)",
                NoBindgen::FeatureOff => {
                    "enable nccl-sys's feature `bindgen` (a dependency on nccl-sys with \
                     features = [\"bindgen\"], or --features nccl-sys/bindgen), with libclang \
                     installed: Debian/Ubuntu apt install libclang-dev; or pip install libclang \
                     and set LIBCLANG_PATH=<site-packages>/clang/native"
                }
                NoBindgen::Failed(_) => {
                    "install libclang: Debian/Ubuntu apt install libclang-dev; or pip install \
                     libclang and set LIBCLANG_PATH=<site-packages>/clang/native"
                }
            };
            Err(format!(
                "{} is NCCL {v}, and nccl-sys has no committed bindings for NCCL {}.{} (it has: \
                 {}). Bindings for it must be generated now, and bindgen did not run: {}.\n\n\
                 Fixes:\n  \
                 - {fix}\n  \
                 - or build against an NCCL that has committed bindings (NCCL_DIR=...)",
                header.display(),
                v.major,
                v.minor,
                committed_list(),
                no.why()
            ))
        }
    }
}

/// The cfgs of this build and their declarations: `nccl_2_N` for every
/// minor up to the header's; `nccl_fn`, `nccl_field` and `nccl_const` for
/// every function, `ncclConfig_t` field and constant (or result code) the
/// header declares; `nccl_sys_mode` (this crate only).
fn cfgs(chosen: &Chosen, mode: Mode) -> (Vec<String>, Vec<String>) {
    let mut on = Vec::new();
    let mut declared = Vec::new();
    for minor in 0..=MAX_CFG_MINOR {
        declared.push(format!("cfg(nccl_2_{minor})"));
    }
    let (major, minor, _) = chosen.version;
    if major >= 2 {
        let top = if major > 2 {
            MAX_CFG_MINOR
        } else {
            minor.min(MAX_CFG_MINOR)
        };
        on.extend((0..=top).map(|m| format!("nccl_2_{m}")));
    }
    let kinds: [(&str, &BTreeSet<String>, Vec<&str>); 3] = [
        (
            "nccl_fn",
            &chosen.decl.functions,
            since_table::FUNCTIONS.iter().map(|(n, _)| *n).collect(),
        ),
        (
            "nccl_field",
            &chosen.decl.fields,
            since_table::CONFIG_FIELDS.iter().map(|(n, _)| *n).collect(),
        ),
        (
            "nccl_const",
            &chosen.decl.constants,
            since_table::CONSTANTS
                .iter()
                .map(|(n, _)| *n)
                .chain(since_table::RESULT_CODES.iter().map(|(n, _, _)| *n))
                .collect(),
        ),
    ];
    for (key, names, known) in kinds {
        let all: BTreeSet<&str> = known
            .into_iter()
            .chain(names.iter().map(String::as_str))
            .collect();
        let values: Vec<String> = all.iter().map(|n| format!("\"{n}\"")).collect();
        declared.push(format!("cfg({key}, values({}))", values.join(", ")));
        on.extend(names.iter().map(|n| format!("{key}=\"{n}\"")));
    }
    let own = match mode {
        Mode::Static => "static",
        Mode::Dynamic => "dynamic",
        Mode::Runtime => "runtime",
        Mode::Docs => "none",
    };
    // for this crate only: not part of DEP_NCCL_CFGS
    println!(
        "cargo:rustc-check-cfg=cfg(nccl_sys_mode, values(\"static\", \"dynamic\", \"runtime\", \"none\"))"
    );
    println!("cargo:rustc-cfg=nccl_sys_mode=\"{own}\"");
    (on, declared)
}

/// Header and library of different versions: an error for static linking
/// (the archive is baked in), a warning for dynamic (the loader may find
/// another libnccl at run time anyway; `nccl` checks again then).
fn check_library_version(
    nccl: &find::Nccl,
    link: &find::Link,
    header: Release,
) -> Result<(), String> {
    let lib = match link.mode {
        LinkMode::Static => nccl.static_lib.as_ref(),
        LinkMode::Dynamic => nccl.shared_lib.as_ref(),
    };
    let Some(lib) = lib else { return Ok(()) };
    println!("cargo:rerun-if-changed={}", lib.display());
    let Some((major, minor, patch)) = find::library_version(lib) else {
        println!(
            "cargo:warning=could not read the NCCL version of {}; not checked against the header",
            lib.display()
        );
        return Ok(());
    };
    if (major, minor, patch) == header {
        return Ok(());
    }
    let msg = format!(
        "header {} is NCCL {} but library {} is NCCL {major}.{minor}.{patch}",
        nccl.header().display(),
        show(header),
        lib.display()
    );
    match link.mode {
        LinkMode::Static => Err(format!(
            "{msg}.\nStatic linking needs both from the same release: point NCCL_INCLUDE_DIR and \
             NCCL_LIB_DIR (or NCCL_DIR) at one installation."
        )),
        LinkMode::Dynamic => {
            println!(
                "cargo:warning={msg}; the library loaded at run time decides what is available"
            );
            Ok(())
        }
    }
}

fn emit_link(nccl: &find::Nccl, link: &find::Link) {
    println!("cargo:rustc-link-search=native={}", nccl.lib_dir.display());
    match link.mode {
        LinkMode::Dynamic => {
            let has_unversioned = nccl.lib_dir.join("libnccl.so").is_file();
            if !has_unversioned && nccl.lib_dir.join("libnccl.so.2").is_file() {
                // NVIDIA's pip wheels ship only libnccl.so.2
                println!("cargo:rustc-link-lib=dylib:+verbatim=libnccl.so.2");
            } else {
                println!("cargo:rustc-link-lib=dylib=nccl");
            }
        }
        LinkMode::Static => {
            if let Some(d) = &link.cudart_dir {
                println!("cargo:rustc-link-search=native={}", d.display());
            }
            // -bundle: the archives go to the final link, not into our rlib.
            println!("cargo:rustc-link-lib=static:-bundle=nccl_static");
            println!("cargo:rustc-link-lib=static:-bundle=cudart_static");
            for lib in ["stdc++", "dl", "rt", "pthread", "m"] {
                println!("cargo:rustc-link-lib=dylib={lib}");
            }
        }
    }
}

fn write_build_info(
    out_dir: &Path,
    mode: &str,
    code: u32,
    include: &str,
    lib: &str,
    origin: &str,
) -> Result<(), String> {
    let mut s = String::new();
    let _ = writeln!(s, "/// How libnccl was linked into this build.");
    let _ = writeln!(s, "pub const LINK_MODE: LinkMode = LinkMode::{mode};");
    let _ = writeln!(
        s,
        "/// `NCCL_VERSION_CODE` of the header of this build (of the newest committed\n\
         /// bindings when no header was used)."
    );
    let _ = writeln!(s, "pub const HEADER_VERSION_CODE: i32 = {code};");
    let _ = writeln!(
        s,
        "/// Folder of the `nccl.h` used at build time (empty when none was used)."
    );
    let _ = writeln!(s, "pub const BUILD_INCLUDE_DIR: &str = {include:?};");
    let _ = writeln!(
        s,
        "/// Folder of the libnccl linked at build time (empty when none was linked)."
    );
    let _ = writeln!(s, "pub const BUILD_LIB_DIR: &str = {lib:?};");
    let _ = writeln!(
        s,
        "/// Where this build's bindings come from (bindgen on the header found, or the\n\
         /// committed set of the header's minor)."
    );
    let _ = writeln!(s, "pub const BINDINGS_SOURCE: &str = {origin:?};");
    std::fs::write(out_dir.join("build_info.rs"), s)
        .map_err(|e| format!("writing build_info.rs: {e}"))
}
