//! Groups (`ncclGroupStart`/`ncclGroupEnd`): calls issued inside one group are
//! launched together, which is how point-to-point exchanges avoid deadlock and
//! how several collectives become one launch.

use crate::error::{Result, check};
use crate::sys;

/// Runs `f` inside a group: `ncclGroupStart`, `f`, then `ncclGroupEnd`, which
/// always runs, also when `f` fails (then `f`'s error is returned).
///
/// ```no_run
/// # fn demo(comm: &nccl::Comm, a: &cudarc::driver::CudaSlice<f32>, b: &mut cudarc::driver::CudaSlice<f32>,
/// #         s: &cudarc::driver::CudaStream) -> nccl::Result<()> {
/// let next = (comm.rank() + 1) % comm.world_size();
/// let prev = (comm.rank() + comm.world_size() - 1) % comm.world_size();
/// nccl::group(|| {
///     comm.send(a, next, s)?;
///     comm.recv(b, prev, s)
/// })
/// # }
/// ```
///
/// # Errors
/// `f`'s error, or NCCL's error from starting or ending the group.
pub fn group<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    let g = GroupGuard::start()?;
    let out = f();
    let end = g.end();
    let r = out?;
    end?;
    Ok(r)
}

/// Runs `f` in a group that is simulated, not launched
/// (`ncclGroupSimulateEnd`, NCCL 2.22+), and returns NCCL's estimate of how
/// long it would take, in microseconds, with `f`'s result.
///
/// # Errors
/// `Unsupported` before NCCL 2.22; `f`'s or NCCL's error.
#[cfg(nccl_2_22)]
pub fn group_simulate<R>(f: impl FnOnce() -> Result<R>) -> Result<(R, f32)> {
    crate::version::require("ncclGroupSimulateEnd", crate::Version::new(2, 22, 0))?;
    let g = GroupGuard::start()?;
    let out = f();
    let mut info = sys::ncclSimInfo_t {
        size: std::mem::size_of::<sys::ncclSimInfo_t>(),
        magic: 0x7468_5283,
        version: sys::NCCL_VERSION_CODE,
        estimatedTime: sys::NCCL_UNDEF_FLOAT as f32,
    };
    std::mem::forget(g);
    // SAFETY: closes the group opened above, with an initialized SimInfo.
    let end = check("ncclGroupSimulateEnd", unsafe {
        sys::ncclGroupSimulateEnd(&mut info)
    });
    let r = out?;
    end?;
    Ok((r, info.estimatedTime))
}

/// An open group that is closed when dropped, so it cannot be left open. Use
/// [`GroupGuard::end`] to see `ncclGroupEnd`'s result (that is where errors
/// of the grouped calls surface); a drop only logs it.
#[derive(Debug)]
#[must_use = "the group ends when this guard drops"]
pub struct GroupGuard {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl GroupGuard {
    /// `ncclGroupStart`. Groups nest; NCCL launches at the outermost end.
    ///
    /// # Errors
    /// NCCL's error.
    pub fn start() -> Result<GroupGuard> {
        // SAFETY: no arguments; pairs with the ncclGroupEnd in end/drop.
        check("ncclGroupStart", unsafe { sys::ncclGroupStart() })?;
        Ok(GroupGuard {
            _not_send: std::marker::PhantomData,
        })
    }

    /// `ncclGroupEnd`, reporting its result.
    ///
    /// # Errors
    /// NCCL's error for the grouped calls.
    pub fn end(self) -> Result<()> {
        std::mem::forget(self);
        // SAFETY: closes the group this guard opened (same thread: !Send).
        check("ncclGroupEnd", unsafe { sys::ncclGroupEnd() })
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: closes the group this guard opened (same thread: !Send).
        let r = unsafe { sys::ncclGroupEnd() };
        if r != sys::ncclResult_t::ncclSuccess {
            eprintln!(
                "nccl: ncclGroupEnd in GroupGuard::drop failed with code {}",
                r.0
            );
        }
    }
}
