//! NCCL versions: decoding `NCCL_VERSION_CODE`, the runtime library's version
//! and the header's.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::error::{Error, Result, check};
use crate::sys;

/// `nccl_sys::$f($args)` when this build's header declares function `$f`
/// (cfg `nccl_fn`); otherwise the arguments are evaluated and the value is
/// `ncclInvalidUsage`, as nccl-sys's wrapper of a function the library lacks
/// gives. Callers check [`require_api`] first, so that value only shows if
/// they skip it. Use it inside the `unsafe` block of the call it replaces.
macro_rules! ffi {
    ($name:literal, $f:ident ( $($arg:expr),* $(,)? )) => {{
        #[cfg(nccl_fn = $name)]
        let r = crate::sys::$f($($arg),*);
        #[cfg(not(nccl_fn = $name))]
        let r = {
            $(let _ = $arg;)*
            crate::version::header_lacks()
        };
        r
    }};
}
pub(crate) use ffi;

/// The stand-in [`ffi!`] calls for a function this build's header lacks.
///
/// # Safety
/// None needed: it is `unsafe` only to stand where an FFI call stood.
#[allow(dead_code)] // used only under headers that lack something
pub(crate) unsafe fn header_lacks() -> sys::ncclResult_t {
    sys::ncclResult_t::ncclInvalidUsage
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

/// The version of the libnccl this process runs with (`ncclGetVersion`).
///
/// With the `runtime-load` feature this opens the library if no NCCL call
/// has yet (see [`crate::library`]).
///
/// # Errors
/// NCCL's own error if `ncclGetVersion` fails, or a code it returns that is
/// not a version; [`Error::Library`] when no libnccl can be opened
/// (`runtime-load`).
pub fn version() -> Result<Version> {
    if sys::LINK_MODE == sys::LinkMode::Runtime {
        let lib = sys::library().map_err(Error::Library)?;
        return Version::from_code(lib.version_code());
    }
    let mut code = 0;
    // SAFETY: ncclGetVersion writes one int through a valid pointer.
    check("ncclGetVersion", unsafe { sys::ncclGetVersion(&mut code) })?;
    Version::from_code(code)
}

/// The runtime version, read once it succeeds; an error when the library is
/// older than [`MIN_VERSION`] (its functions may not even exist) or cannot be
/// opened. A library older than this build's header is fine: what it lacks
/// is `Unsupported` when used ([`require_api`]).
pub(crate) fn checked_runtime() -> Result<Version> {
    static RUNTIME: OnceLock<Version> = OnceLock::new();
    if let Some(v) = RUNTIME.get() {
        return Ok(*v);
    }
    let runtime = version()?;
    if runtime < MIN_VERSION {
        return Err(Error::LibraryTooOld {
            runtime,
            minimum: MIN_VERSION,
        });
    }
    Ok(*RUNTIME.get_or_init(|| runtime))
}

/// Fails with [`Error::Unsupported`] unless the runtime library is at least
/// `needs` (for what has no name of its own in NCCL's headers), patch level
/// included.
pub(crate) fn require(api: &'static str, needs: Version) -> Result<()> {
    let runtime = checked_runtime()?;
    if runtime >= needs {
        Ok(())
    } else {
        Err(Error::Unsupported {
            api,
            since: needs,
            runtime,
        })
    }
}

/// The first release with `name` per the headers ([`nccl_sys::since`]); for
/// a name only this build's (newer) header has, that header's version.
pub(crate) fn since(name: &str) -> Version {
    sys::since::any(name).map_or(HEADER_VERSION, release)
}

/// The one availability check: `Ok` when this build's header declares `api`
/// (an NCCL function, constant or result code, by NCCL's name) and the
/// libnccl in use has it: for a function, its symbol is there (linked, or
/// found by name); for anything else, the runtime is at least the release
/// that introduced it. Otherwise [`Error::Unsupported`] with the first
/// release that has it and the runtime's version.
///
/// # Errors
/// As above; [`Error::LibraryTooOld`] for a libnccl older than 2.18;
/// [`Error::Library`] when none can be opened (`runtime-load`).
pub fn require_api(api: &'static str) -> Result<()> {
    let runtime = checked_runtime()?;
    let since = since(api);
    let have = sys::declared(api)
        && match (sys::available(api), sys::since::function(api)) {
            (true, _) => true,
            (false, Some(_)) => false, // a function the library lacks
            (false, None) => runtime >= since,
        };
    if have {
        Ok(())
    } else {
        Err(Error::Unsupported {
            api,
            since,
            runtime,
        })
    }
}

/// [`require_api`] as a yes/no (a runtime that cannot say its version: no).
pub(crate) fn has_api(api: &'static str) -> bool {
    require_api(api).is_ok()
}

/// For a `Config` setter: `Ok` when this build's `ncclConfig_t` has `field`
/// and the runtime is at least the release that introduced it; else
/// [`Error::Unsupported`] naming `setter`.
pub(crate) fn require_field(setter: &'static str, field: &str) -> Result<()> {
    let runtime = checked_runtime()?;
    let since = sys::since::config_field(field).map_or(HEADER_VERSION, release);
    if sys::declared(field) && runtime >= since {
        Ok(())
    } else {
        Err(Error::Unsupported {
            api: setter,
            since,
            runtime,
        })
    }
}
