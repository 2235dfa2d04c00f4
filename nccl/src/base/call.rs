//! The one way to call NCCL: [`check`]/[`check_comm`] turn an
//! `ncclResult_t` into a [`Result`] (keeping the code, the API and NCCL's
//! explanation), and `nccl!` (below) makes a call from its name: the function is
//! looked up in the since table, the header's cfg decides whether it exists
//! in this build, and the result goes through the funnel.

use crate::base::error::{Error, Result, nccl_error};
use crate::sys;

/// The funnel: `ncclSuccess` is `Ok`, anything else an [`Error::Nccl`] with
/// `ncclGetLastError`'s text (the process's last NCCL warning).
#[inline(always)]
pub(crate) fn check(api: &'static str, r: sys::ncclResult_t) -> Result<()> {
    if r == sys::ncclResult_t::ncclSuccess {
        Ok(())
    } else {
        Err(failure(api, r, std::ptr::null_mut()))
    }
}

/// Like [`check`], with the communicator's last error.
#[inline(always)]
pub(crate) fn check_comm(
    api: &'static str,
    r: sys::ncclResult_t,
    comm: sys::ncclComm_t,
) -> Result<()> {
    if r == sys::ncclResult_t::ncclSuccess {
        Ok(())
    } else {
        Err(failure(api, r, comm))
    }
}

#[cold]
#[inline(never)]
pub(crate) fn failure(api: &'static str, r: sys::ncclResult_t, comm: sys::ncclComm_t) -> Error {
    if r == sys::ncclResult_t::ncclInvalidUsage {
        if let Some(e) = not_reached(api) {
            return e;
        }
    }
    nccl_error(api, r, comm)
}

/// Why a call that returned `ncclInvalidUsage` may never have reached NCCL:
/// no library could be opened (`runtime-load`), or the library lacks the
/// function (its wrapper in nccl-sys returns that code then).
fn not_reached(api: &'static str) -> Option<Error> {
    if sys::LINK_MODE == sys::LinkMode::Runtime {
        if let Err(e) = sys::library() {
            return Some(Error::Library(e));
        }
    }
    if sys::since::function(api).is_some() && !sys::available(api) {
        return Some(match crate::base::runtime::checked_runtime() {
            Ok(runtime) => Error::Unsupported {
                api,
                since: crate::base::runtime::since(api),
                runtime,
            },
            Err(e) => e,
        });
    }
    None
}

/// Calls NCCL function `$f` and turns its result into a [`Result`] through
/// the funnel, naming the API after the function: `nccl!(ncclGetUniqueId(&mut
/// id))`, or `nccl!(raw => ncclCommRegister(raw, …))` to add communicator
/// `raw`'s last error to a failure. A function the library in use lacks
/// (its nccl-sys wrapper answers `ncclInvalidUsage`) becomes
/// [`Error::Unsupported`] with the release that has it (the since table).
/// It expands inside the caller's `unsafe` block: the call's contract is the
/// caller's to state.
macro_rules! nccl {
    ($comm:expr => $f:ident ( $($arg:expr),* $(,)? )) => {{
        let comm: $crate::sys::ncclComm_t = $comm;
        $crate::base::call::check_comm(stringify!($f), $crate::sys::$f($($arg),*), comm)
    }};
    ($f:ident ( $($arg:expr),* $(,)? )) => {
        $crate::base::call::check(stringify!($f), $crate::sys::$f($($arg),*))
    };
}

/// `nccl_sys::$f($args)` when this build's header declares function `$f`
/// (cfg `nccl_fn`); otherwise the arguments are evaluated and the value is
/// `ncclInvalidUsage`, as nccl-sys's wrapper of a function the library lacks
/// gives. Callers check [`require_api`](crate::base::runtime::require_api) first, so that value only shows if
/// they skip it. Use it inside the `unsafe` block of the call it replaces.
macro_rules! ffi {
    ($name:literal, $f:ident ( $($arg:expr),* $(,)? )) => {{
        #[cfg(nccl_fn = $name)]
        let r = crate::sys::$f($($arg),*);
        #[cfg(not(nccl_fn = $name))]
        let r = {
            $(let _ = $arg;)*
            crate::base::call::header_lacks()
        };
        r
    }};
}

/// The stand-in [`ffi!`] calls for a function this build's header lacks.
///
/// # Safety
/// None needed: it is `unsafe` only to stand where an FFI call stood.
#[allow(dead_code)] // used only under headers that lack something
pub(crate) unsafe fn header_lacks() -> sys::ncclResult_t {
    sys::ncclResult_t::ncclInvalidUsage
}
