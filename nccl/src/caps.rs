//! What this build and the NCCL it runs with can do.

use std::fmt;

use crate::error::Result;
use crate::sys;
use crate::version::{HEADER_VERSION, Version, checked_runtime, require};

/// How libnccl is linked into this build.
pub use sys::LinkMode;

/// An optional NCCL API and whether this build and runtime have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feature {
    /// The API (`ncclCommWindowRegister`).
    pub api: &'static str,
    /// The first NCCL version with it.
    pub since: Version,
    /// Whether both header and runtime are at least `since`.
    pub available: bool,
}

/// The capability report: versions, link mode and optional APIs.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// The libnccl in use (`ncclGetVersion`).
    pub runtime: Version,
    /// The nccl.h the bindings were generated from.
    pub header: Version,
    /// Static or dynamic linking.
    pub link_mode: LinkMode,
    /// Optional APIs.
    pub features: Vec<Feature>,
}

/// Optional APIs and the NCCL version that introduced them.
pub const OPTIONAL_APIS: &[(&str, Version)] = &[
    ("ncclAvg", Version::new(2, 10, 0)),
    ("ncclBfloat16", Version::new(2, 10, 0)),
    ("ncclRedOpCreatePreMulSum", Version::new(2, 11, 0)),
    ("ncclCommSplit", Version::new(2, 18, 0)),
    ("ncclMemAlloc", Version::new(2, 19, 0)),
    ("ncclCommRegister", Version::new(2, 19, 0)),
    ("ncclGroupSimulateEnd", Version::new(2, 22, 0)),
    ("ncclCommInitRankScalable", Version::new(2, 23, 0)),
    ("ncclFloat8e4m3 / ncclFloat8e5m2", Version::new(2, 24, 0)),
    ("ncclCommWindowRegister", Version::new(2, 27, 0)),
    ("ncclCommShrink", Version::new(2, 27, 0)),
    (
        "ncclAlltoAll / ncclGather / ncclScatter (native)",
        Version::new(2, 28, 0),
    ),
    ("ncclCommRevoke", Version::new(2, 28, 7)),
    ("ncclCommGrow / ncclCommGetUniqueId", Version::new(2, 29, 2)),
    (
        "ncclCommSuspend / ncclCommResume / ncclCommMemStats",
        Version::new(2, 29, 7),
    ),
];

/// The capability report for this process.
///
/// # Errors
/// `LibraryTooOld` when the libnccl loaded is older than the header; NCCL's
/// error if it cannot say its version.
pub fn capabilities() -> Result<Capabilities> {
    let runtime = checked_runtime()?;
    Ok(Capabilities {
        runtime,
        header: HEADER_VERSION,
        link_mode: sys::LINK_MODE,
        features: OPTIONAL_APIS
            .iter()
            .map(|&(api, since)| Feature {
                api,
                since,
                // the same gate the API's own call goes through
                available: require(api, since).is_ok(),
            })
            .collect(),
    })
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "NCCL runtime {} (header {}), linked {:?}",
            self.runtime, self.header, self.link_mode
        )?;
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
