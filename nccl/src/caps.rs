//! What this build and the NCCL it runs with can do, and the parameters
//! NCCL runs with.

use std::fmt;
use std::path::PathBuf;

use crate::base::error::{Error, Result};
use crate::base::runtime::{checked_runtime, has_api, since};
use crate::base::text::quote;
use crate::base::version::{HEADER_VERSION, Version};
use crate::params::{Param, Params};
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

/// The capability report: versions, link mode, the library file, optional
/// APIs and NCCL's parameters (NCCL 2.30.4+).
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
    /// NCCL's published parameters, from its registry (`nccl::params()`);
    /// `Err(Unsupported)` before NCCL 2.30.4 (header or runtime).
    pub params: Result<Params>,
    /// The tuning parameters of [`TUNING_PARAMS`] (algorithms, protocols,
    /// channels, CTAs, threads, buffer size).
    pub tuning: Vec<Tuning>,
}

/// The parameters that decide how NCCL runs collectives: algorithms,
/// protocols, channels, CTAs, threads, buffer size.
pub const TUNING_PARAMS: &[&str] = &[
    "NCCL_ALGO",
    "NCCL_PROTO",
    "NCCL_MIN_NCHANNELS",
    "NCCL_MAX_NCHANNELS",
    "NCCL_MIN_CTAS",
    "NCCL_MAX_CTAS",
    "NCCL_NTHREADS",
    "NCCL_BUFFSIZE",
];

/// One of [`TUNING_PARAMS`]: NCCL's value where its parameter registry has
/// the key, and the process environment's setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// The key (`NCCL_PROTO`).
    pub key: &'static str,
    /// The parameter as NCCL's registry has it; `None` when the registry
    /// does not have the key, or the libnccl has no parameter API (before
    /// 2.30.4). NCCL then reads the variable itself, out of reach of its C
    /// API.
    pub nccl: Option<Param>,
    /// The variable's value in this process's environment, if set (NCCL
    /// also reads `nccl.conf` files, which this does not).
    pub env: Option<String>,
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
        params: crate::params::all(),
        tuning: TUNING_PARAMS
            .iter()
            .map(|&key| Tuning {
                key,
                nccl: crate::params::lookup(key).ok().flatten(),
                env: std::env::var_os(key).map(|v| v.to_string_lossy().into_owned()),
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
        match &self.params {
            Ok(p) => writeln!(
                f,
                "  parameters (NCCL's registry, {} listed; tuning first):",
                p.len()
            )?,
            Err(e) => writeln!(f, "  parameters: {e}")?,
        }
        let registry = self.params.is_ok();
        for t in &self.tuning {
            let env = match &t.env {
                Some(v) => format!("environment {}={}", t.key, quote(v)),
                None => "not set in the environment".to_string(),
            };
            match &t.nccl {
                Some(p) => writeln!(
                    f,
                    "    {:<36} {:<8} {}  ({env})",
                    t.key,
                    p.value.param_type(),
                    p.shown()
                )?,
                None if registry => {
                    writeln!(f, "    {:<36} {:<8} not in the registry; {env}", t.key, "-")?
                }
                None => writeln!(f, "    {:<36} {:<8} {env}", t.key, "-")?,
            }
        }
        if let Ok(p) = &self.params {
            for p in p
                .iter()
                .filter(|p| !TUNING_PARAMS.contains(&p.key.as_str()))
            {
                writeln!(
                    f,
                    "    {:<36} {:<8} {}",
                    p.key,
                    p.value.param_type(),
                    p.shown()
                )?;
            }
        }
        Ok(())
    }
}
