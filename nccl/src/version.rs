//! NCCL versions: decoding `NCCL_VERSION_CODE`, the runtime library's version
//! and the header's.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::error::{Error, Result, check};
use crate::sys;

/// An NCCL release, `major.minor.patch`.
///
/// ```
/// let v = nccl::Version::from_code(22800)?;
/// assert_eq!(v.to_string(), "2.28.0");
/// assert_eq!(v, "2.28.0".parse()?);
/// assert!(v > nccl::Version::new(2, 19, 3));
/// # Ok::<(), nccl::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major version (2 for every NCCL release so far).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch level.
    pub patch: u32,
}

impl Version {
    /// A version from its parts.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Decodes an `NCCL_VERSION_CODE` (what `ncclGetVersion` returns).
    ///
    /// NCCL has used two encodings: up to 2.8, `major*1000 + minor*100 +
    /// patch` (2.7.8 is 2708); from 2.9 on, `major*10000 + minor*100 + patch`
    /// (2.28.3 is 22803). A code of 10000 or more is the new encoding.
    ///
    /// # Errors
    /// [`Error::InvalidVersionCode`] for negative codes and codes that no
    /// release can have (old encoding above 2.8, minor 100+, major 0).
    pub const fn from_code(code: i32) -> Result<Version> {
        if code <= 0 {
            return Err(Error::InvalidVersionCode { code });
        }
        let c = code as u32;
        let v = if c >= 10000 {
            Version::new(c / 10000, (c % 10000) / 100, c % 100)
        } else {
            let v = Version::new(c / 1000, (c % 1000) / 100, c % 100);
            // the old encoding only ever covered 1.x and 2.0 to 2.8
            if v.major > 2 || (v.major == 2 && v.minor > 8) {
                return Err(Error::InvalidVersionCode { code });
            }
            v
        };
        if v.major == 0 {
            return Err(Error::InvalidVersionCode { code });
        }
        Ok(v)
    }

    /// The code NCCL would give this version (`NCCL_VERSION(X,Y,Z)`), or
    /// `None` for a version no code stands for: major 0, minor or patch of
    /// 100 or more, or a code beyond `i32::MAX`.
    ///
    /// ```
    /// assert_eq!(nccl::Version::new(2, 28, 3).code(), Some(22803));
    /// assert_eq!(nccl::Version::new(2, 300, 0).code(), None);
    /// assert_eq!(nccl::Version::new(429497, 0, 0).code(), None);
    /// ```
    pub const fn code(&self) -> Option<i32> {
        if self.major == 0 || self.minor >= 100 || self.patch >= 100 {
            return None;
        }
        let scale: u64 = if self.major <= 2 && self.minor <= 8 {
            1000
        } else {
            10000
        };
        let code = self.major as u64 * scale + self.minor as u64 * 100 + self.patch as u64;
        if code > i32::MAX as u64 {
            None
        } else {
            Some(code as i32)
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl FromStr for Version {
    type Err = Error;
    /// Parses `2.28.3` (a suffix such as `+cuda13.0` is ignored). Only
    /// versions that have a code ([`Version::code`]) parse.
    fn from_str(s: &str) -> Result<Version> {
        let bad = || Error::InvalidVersionString {
            input: crate::error::quote(s),
        };
        let core = s.split(['+', '-']).next().unwrap_or("");
        let mut it = core.split('.');
        let mut next = || -> Result<u32> { it.next().and_then(|p| p.parse().ok()).ok_or_else(bad) };
        let v = Version::new(next()?, next()?, next()?);
        if it.next().is_some() || v.code().is_none() {
            return Err(bad());
        }
        Ok(v)
    }
}

/// The NCCL version of the header nccl-sys generated its bindings from.
pub const HEADER_VERSION: Version = Version::new(sys::NCCL_MAJOR, sys::NCCL_MINOR, sys::NCCL_PATCH);

/// The version of the libnccl this process runs with (`ncclGetVersion`).
///
/// # Errors
/// NCCL's own error if `ncclGetVersion` fails, or a code it returns that is
/// not a version.
pub fn version() -> Result<Version> {
    let mut code = 0;
    // SAFETY: ncclGetVersion writes one int through a valid pointer.
    check("ncclGetVersion", unsafe { sys::ncclGetVersion(&mut code) })?;
    Version::from_code(code)
}

/// The runtime version, read once; an error when the library is older than
/// the header this build was made with (a dynamic build run against an older
/// libnccl), because the bindings may then call what the library lacks.
pub(crate) fn checked_runtime() -> Result<Version> {
    static RUNTIME: OnceLock<Result<Version>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let runtime = version()?;
            // Same minor: patch releases keep the API; an older minor may not.
            if (runtime.major, runtime.minor) < (HEADER_VERSION.major, HEADER_VERSION.minor) {
                return Err(Error::LibraryTooOld {
                    header: HEADER_VERSION,
                    runtime,
                });
            }
            Ok(runtime)
        })
        .clone()
}

/// Fails with [`Error::Unsupported`] unless both the header this build was
/// made with and the runtime library are at least `needs`, patch level
/// included (`ncclCommRevoke` came in 2.28.7).
pub(crate) fn require(api: &'static str, needs: Version) -> Result<()> {
    let have = checked_runtime()?.min(HEADER_VERSION);
    if have >= needs {
        Ok(())
    } else {
        Err(Error::Unsupported { api, needs, have })
    }
}
