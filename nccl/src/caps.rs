//! What this build and the NCCL it runs with can do.

use std::fmt;
use std::path::PathBuf;

use crate::base::error::{Error, Result};
use crate::base::runtime::{checked_runtime, has_api, since};
use crate::base::version::{HEADER_VERSION, Version};
use crate::sys;

/// How libnccl reaches this build.
pub use sys::LinkMode;

/// An optional NCCL API and whether this build and runtime have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    /// The API, by NCCL's name (`ncclCommWindowRegister`).
    pub api: &'static str,
    /// The first NCCL release with it (read from the headers).
    pub since: Version,
    /// Whether this build's header declares it and the libnccl in use has it.
    pub available: bool,
}

/// The capability report: versions, link mode, the library file and
/// optional APIs.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// The libnccl in use (`ncclGetVersion`).
    pub runtime: Version,
    /// The nccl.h this build was made with.
    pub header: Version,
    /// Static, dynamic or run-time loaded.
    pub link_mode: LinkMode,
    /// The libnccl file in use (`None` when linked statically).
    pub library: Option<PathBuf>,
    /// How that file was found (linked, path in code, environment, already
    /// loaded, loader path, Python environment).
    pub library_source: Option<String>,
    /// Where the bindings come from (bindgen on the header, or committed).
    pub bindings: &'static str,
    /// Optional APIs.
    pub features: Vec<Feature>,
}

/// Optional APIs of the safe layer and of NCCL worth knowing about; their
/// versions come from the headers ([`nccl_sys::since`]).
pub const OPTIONAL_APIS: &[&str] = &[
    "ncclMemAlloc",
    "ncclCommRegister",
    "ncclGroupSimulateEnd",
    "ncclCommInitRankScalable",
    "ncclFloat8e4m3",
    "ncclFloat8e5m2",
    "ncclCommWindowRegister",
    "ncclCommShrink",
    "ncclAlltoAll",
    "ncclGather",
    "ncclScatter",
    "ncclCommRevoke",
    "ncclCommGrow",
    "ncclCommSuspend",
    "ncclTimeout",
    "ncclAllReduceConfig",
];

/// The capability report for this process.
///
/// # Errors
/// `LibraryTooOld` when the libnccl loaded is older than 2.18; `Library`
/// when none can be opened (`runtime-load`); NCCL's error if it cannot say
/// its version.
pub fn capabilities() -> Result<Capabilities> {
    let runtime = checked_runtime()?;
    let (library, library_source) = match sys::library() {
        Ok(l) => (Some(l.path().to_path_buf()), Some(l.source().to_string())),
        Err(_) => (None, None),
    };
    Ok(Capabilities {
        runtime,
        header: HEADER_VERSION,
        link_mode: sys::LINK_MODE,
        library,
        library_source,
        bindings: sys::BINDINGS_SOURCE,
        features: OPTIONAL_APIS
            .iter()
            .map(|&api| Feature {
                api,
                since: since(api),
                available: has_api(api),
            })
            .collect(),
    })
}

/// Whether NCCL can be used in this process: a libnccl is linked or can be
/// opened, and it is at least [`MIN_VERSION`](crate::MIN_VERSION). Never
/// fails: this is the check for running with NCCL disabled (vLLM's
/// `NCCLLibrary` "disabled" mode); [`library_error`] says why not.
pub fn is_available() -> bool {
    checked_runtime().is_ok()
}

/// Why [`is_available`] is `false` (`None` when it is `true`).
pub fn library_error() -> Option<Error> {
    checked_runtime().err()
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "NCCL runtime {} (header {}), linked {:?}",
            self.runtime, self.header, self.link_mode
        )?;
        if let (Some(p), Some(s)) = (&self.library, &self.library_source) {
            writeln!(f, "  library {} ({s})", p.display())?;
        }
        writeln!(f, "  bindings: {}", self.bindings)?;
        for feat in &self.features {
            writeln!(
                f,
                "  {:<50} {:>8}  {}",
                feat.api,
                format!("{}+", feat.since),
                if feat.available { "yes" } else { "no" }
            )?;
        }
        Ok(())
    }
}
