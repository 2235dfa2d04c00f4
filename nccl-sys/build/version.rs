//! The version of an `nccl.h`, read by the C preprocessor (`cc::Build::expand`
//! on `expando.c`), not by a regex on the text. Shared by the build script and
//! `cargo xtask locate`.

#![allow(dead_code)]

use std::path::Path;

/// An NCCL version read from a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderVersion {
    /// `NCCL_VERSION_CODE` (22803 for 2.28.3).
    pub code: u32,
    /// `NCCL_MAJOR`.
    pub major: u32,
    /// `NCCL_MINOR`.
    pub minor: u32,
    /// `NCCL_PATCH`.
    pub patch: u32,
}

impl std::fmt::Display for HeaderVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Reads the version of `include_dir/nccl.h`. `cfg` is a `cc::Build` already
/// set up for the target (the build script's own, or one made by xtask).
pub fn header_version(
    cfg: cc::Build,
    crate_dir: &Path,
    include_dir: &Path,
) -> Result<HeaderVersion, String> {
    expand_header(cfg, crate_dir, include_dir).map(|(v, _)| v)
}

/// The version of `include_dir/nccl.h` and the whole preprocessed text of
/// `expando.c` (the header's declarations, for `scan.rs`).
pub fn expand_header(
    mut cfg: cc::Build,
    crate_dir: &Path,
    include_dir: &Path,
) -> Result<(HeaderVersion, String), String> {
    let header = include_dir.join("nccl.h");
    if !header.is_file() {
        return Err(format!("{} does not exist", header.display()));
    }
    cfg.include(crate_dir.join("shim"))
        .include(include_dir)
        .file(crate_dir.join("build").join("expando.c"));
    let out = cfg
        .try_expand()
        .map_err(|e| format!("the C preprocessor failed on {}: {e}", header.display()))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let v = parse_expanded(&text).map_err(|e| format!("{}: {e}", header.display()))?;
    Ok((v, text))
}

/// Parses the preprocessor output of `expando.c`.
pub fn parse_expanded(text: &str) -> Result<HeaderVersion, String> {
    let get = |key: &str| -> Result<u32, String> {
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .ok_or_else(|| format!("{key} missing from the preprocessor output"))?;
        let value = line.trim();
        // NCCL_VERSION_CODE may expand to an expression in exotic headers;
        // a plain number is what every NCCL release has.
        value.parse::<u32>().map_err(|_| {
            format!(
                "the header defines no usable version ({} expanded to `{value}`): is this NCCL's nccl.h?",
                key.trim_start_matches("NCCL_SYS_")
            )
        })
    };
    let code = get("NCCL_SYS_VERSION_CODE ")?;
    let major = get("NCCL_SYS_MAJOR ")?;
    let minor = get("NCCL_SYS_MINOR ")?;
    let patch = get("NCCL_SYS_PATCH ")?;
    Ok(HeaderVersion {
        code,
        major,
        minor,
        patch,
    })
}
