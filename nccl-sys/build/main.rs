//! Build script of `nccl-sys`: find NCCL, read its header's version, generate
//! bindings into `OUT_DIR`, and link libnccl statically or dynamically.
//! Discovery lives in `find.rs` (shared with `cargo xtask locate`), the header
//! version in `version.rs`, the bindgen configuration in `bindings.rs`.

mod bindings;
mod find;
mod version;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use find::{Host, LinkMode};

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

fn main() {
    if let Err(e) = run() {
        eprintln!("\nerror: nccl-sys could not be built\n\n{e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let target = std::env::var("TARGET").map_err(|e| e.to_string())?;
    for p in ["build", "shim", bindings::PREGENERATED] {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rustc-check-cfg=cfg(nccl_sys_pregenerated)");
    for minor in 0..=MAX_CFG_MINOR {
        println!("cargo:rustc-check-cfg=cfg(nccl_2_{minor})");
    }
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let host = BuildHost { target };

    // docs.rs: no NCCL there, and no probing or linking either.
    if find::var(&host, "DOCS_RS").is_some() {
        let (major, minor, patch) = bindings::PREGENERATED_VERSION;
        println!("cargo:rustc-cfg=nccl_sys_pregenerated");
        emit_version_cfgs(major, minor);
        let code = major * 10000 + minor * 100 + patch;
        write_build_info(&out_dir, "None", code, "", "")?;
        println!("cargo:version_number={code}");
        println!("cargo:static=0");
        return Ok(());
    }

    let nccl = find::find_nccl(&host).map_err(|e| e.to_string())?;
    for w in &nccl.warnings {
        println!("cargo:warning={w}");
    }
    let link = find::choose_link(&host, &nccl).map_err(|e| e.to_string())?;
    for w in &link.warnings {
        println!("cargo:warning={w}");
    }
    eprintln!(
        "nccl-sys: NCCL found through {}: {}",
        nccl.source,
        nccl.include_dir.display()
    );
    eprintln!("nccl-sys: link mode {} ({})", link.mode, link.reason);

    let header = nccl.header();
    let (version, bindings_text) = if header.is_file() {
        println!("cargo:rerun-if-changed={}", header.display());
        let mut cfg = cc::Build::new();
        cfg.cargo_metadata(false).cargo_warnings(false);
        let fallback = bindings::compiler_include_dir(&cfg);
        let v = version::header_version(cfg, &crate_dir, &nccl.include_dir)?;
        let text = bindings::generate(&crate_dir, &nccl.include_dir, fallback.as_deref())?;
        (v, Some(text))
    } else {
        // Only explicit paths get here (searched ones are checked): build on
        // with the committed bindings, loudly.
        let (major, minor, patch) = bindings::PREGENERATED_VERSION;
        println!(
            "cargo:warning={} does not exist: using the pre-generated NCCL {major}.{minor}.{patch} bindings; \
             the library linked must be compatible with them",
            header.display()
        );
        println!("cargo:rustc-cfg=nccl_sys_pregenerated");
        (
            version::HeaderVersion {
                code: major * 10000 + minor * 100 + patch,
                major,
                minor,
                patch,
            },
            None,
        )
    };
    eprintln!("nccl-sys: header version {version}");

    check_library_version(&nccl, &link, &version)?;

    if let Some(text) = bindings_text {
        std::fs::write(out_dir.join("bindings.rs"), text)
            .map_err(|e| format!("writing bindings: {e}"))?;
    }

    emit_link(&nccl, &link);
    emit_version_cfgs(version.major, version.minor);
    let mode = match link.mode {
        LinkMode::Static => "Static",
        LinkMode::Dynamic => "Dynamic",
    };
    write_build_info(
        &out_dir,
        mode,
        version.code,
        &nccl.include_dir.to_string_lossy(),
        &nccl.lib_dir.to_string_lossy(),
    )?;

    // Metadata for dependents (DEP_NCCL_*).
    println!("cargo:include={}", nccl.include_dir.display());
    println!("cargo:lib_dir={}", nccl.lib_dir.display());
    println!("cargo:static={}", u8::from(link.mode == LinkMode::Static));
    println!("cargo:version_number={}", version.code);
    println!("cargo:version={version}");
    Ok(())
}

/// Header and library of different versions: an error for static linking
/// (the archive is baked in), a warning for dynamic (the loader may find
/// another libnccl at run time anyway; `nccl` checks again then).
fn check_library_version(
    nccl: &find::Nccl,
    link: &find::Link,
    header: &version::HeaderVersion,
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
    if (major, minor, patch) == (header.major, header.minor, header.patch) {
        return Ok(());
    }
    let msg = format!(
        "header {} is NCCL {header} but library {} is NCCL {major}.{minor}.{patch}",
        nccl.header().display(),
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

fn emit_version_cfgs(major: u32, minor: u32) {
    if major >= 2 {
        let top = if major > 2 {
            MAX_CFG_MINOR
        } else {
            minor.min(MAX_CFG_MINOR)
        };
        for m in 0..=top {
            println!("cargo:rustc-cfg=nccl_2_{m}");
        }
    }
}

fn write_build_info(
    out_dir: &Path,
    mode: &str,
    code: u32,
    include: &str,
    lib: &str,
) -> Result<(), String> {
    let mut s = String::new();
    let _ = writeln!(s, "/// How libnccl was linked into this build.");
    let _ = writeln!(s, "pub const LINK_MODE: LinkMode = LinkMode::{mode};");
    let _ = writeln!(
        s,
        "/// `NCCL_VERSION_CODE` of the header the bindings were generated from."
    );
    let _ = writeln!(s, "pub const HEADER_VERSION_CODE: i32 = {code};");
    let _ = writeln!(
        s,
        "/// Folder of the `nccl.h` used at build time (empty on docs.rs)."
    );
    let _ = writeln!(s, "pub const BUILD_INCLUDE_DIR: &str = {include:?};");
    let _ = writeln!(
        s,
        "/// Folder of the libnccl linked at build time (empty on docs.rs)."
    );
    let _ = writeln!(s, "pub const BUILD_LIB_DIR: &str = {lib:?};");
    std::fs::write(out_dir.join("build_info.rs"), s)
        .map_err(|e| format!("writing build_info.rs: {e}"))
}
