//! The libnccl this process runs with: its version, and whether it has an
//! API ([`require_api`]), the one availability check.

use std::sync::OnceLock;

use crate::base::error::{Error, Result, nccl_error};
use crate::base::version::{HEADER_VERSION, MIN_VERSION, Version, release};
use crate::sys;

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
        return Ok(Version::from_code(lib.version_code())?);
    }
    let mut code = 0;
    // SAFETY: ncclGetVersion writes one int through a valid pointer.
    let r = unsafe { sys::ncclGetVersion(&mut code) };
    if r != sys::ncclResult_t::ncclSuccess {
        // not through the funnel, which asks this module about the library
        return Err(nccl_error("ncclGetVersion", r, std::ptr::null_mut()));
    }
    Ok(Version::from_code(code)?)
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

/// Whether the runtime library (its version cached by [`checked_runtime`])
/// is one `f` picks: for NCCL bugs this crate works around by release.
/// `false` when no library can be read (every call fails then anyway).
#[inline]
pub(crate) fn runtime_is(f: impl FnOnce(Version) -> bool) -> bool {
    checked_runtime().is_ok_and(f)
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
