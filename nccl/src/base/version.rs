//! NCCL versions: decoding `NCCL_VERSION_CODE`, the runtime library's version
//! and the header's.

use std::fmt;
use std::str::FromStr;

use crate::base::text::quote;
use crate::sys;

/// A number or text that is not an NCCL version.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// A code that no release has.
    #[error(
        "{0} is not an NCCL version code (expected X*10000+Y*100+Z, or X*1000+Y*100+Z before 2.9)"
    )]
    Code(i32),
    /// Text that is not `major.minor.patch` (shortened and escaped).
    #[error("\"{0}\" is not an NCCL version (expected major.minor.patch, such as 2.28.3)")]
    Text(String),
}

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
    /// [`VersionError::Code`] for negative codes and codes that no
    /// release can have (old encoding above 2.8, minor 100+, major 0).
    pub const fn from_code(code: i32) -> Result<Version, VersionError> {
        if code <= 0 {
            return Err(VersionError::Code(code));
        }
        let c = code as u32;
        let v = if c >= 10000 {
            Version::new(c / 10000, (c % 10000) / 100, c % 100)
        } else {
            let v = Version::new(c / 1000, (c % 1000) / 100, c % 100);
            // the old encoding only ever covered 1.x and 2.0 to 2.8
            if v.major > 2 || (v.major == 2 && v.minor > 8) {
                return Err(VersionError::Code(code));
            }
            v
        };
        if v.major == 0 {
            return Err(VersionError::Code(code));
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
    type Err = VersionError;
    /// Parses `2.28.3` (a suffix such as `+cuda13.0` is ignored). Only
    /// versions that have a code ([`Version::code`]) parse.
    fn from_str(s: &str) -> Result<Version, VersionError> {
        let bad = || VersionError::Text(quote(s));
        let core = s.split(['+', '-']).next().unwrap_or("");
        let mut it = core.split('.');
        let mut next = || -> Result<u32, VersionError> {
            it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)
        };
        let v = Version::new(next()?, next()?, next()?);
        if it.next().is_some() || v.code().is_none() {
            return Err(bad());
        }
        Ok(v)
    }
}

/// The NCCL version of the header this build was made with (of the newest
/// committed bindings when there was none: docs.rs, `runtime-load` without
/// NCCL at build time).
pub const HEADER_VERSION: Version = Version::new(sys::NCCL_MAJOR, sys::NCCL_MINOR, sys::NCCL_PATCH);

/// The oldest libnccl this crate runs with (and builds against): 2.18.1, the
/// first release of the oldest supported minor.
pub const MIN_VERSION: Version = release(sys::since::FLOOR);

/// A `(major, minor, patch)` of [`nccl_sys::since`] as a [`Version`].
pub(crate) const fn release((major, minor, patch): sys::since::Release) -> Version {
    Version::new(major, minor, patch)
}
