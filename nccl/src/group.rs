//! Groups (`ncclGroupStart`/`ncclGroupEnd`): calls issued inside one group are
//! launched together, which is how point-to-point exchanges avoid deadlock and
//! how several collectives become one launch.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::error::{Result, check};
use crate::sys;

/// A non-blocking communicator used inside this thread's open group: when
/// `ncclGroupEnd` answers `ncclInProgress`, each is polled until it settles.
struct Pending {
    raw: sys::ncclComm_t,
    abort: Arc<AtomicBool>,
    timeout: Option<Duration>,
}

thread_local! {
    /// Open groups on this thread (NCCL's group state is per thread too).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
}

/// Whether this thread is inside a group.
#[inline(always)]
pub(crate) fn in_group() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Notes a non-blocking communicator used in the open group.
#[cold]
pub(crate) fn note(raw: sys::ncclComm_t, abort: &Arc<AtomicBool>, timeout: Option<Duration>) {
    PENDING.with(|p| {
        let mut p = p.borrow_mut();
        if !p.iter().any(|x| x.raw == raw) {
            p.push(Pending {
                raw,
                abort: abort.clone(),
                timeout,
            });
        }
    });
}

/// Forgets a communicator that is being freed (aborted) inside a group.
pub(crate) fn forget(raw: sys::ncclComm_t) {
    let _ = PENDING.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.retain(|x| x.raw != raw);
        }
    });
}

/// `ncclGroupEnd`, and at the outermost end, waiting for the non-blocking
/// communicators of the group when NCCL answers `ncclInProgress`.
fn group_end(api: &'static str, end: impl FnOnce() -> sys::ncclResult_t) -> Result<()> {
    let depth = DEPTH.with(|d| {
        let v = d.get().saturating_sub(1);
        d.set(v);
        v
    });
    let r = end();
    if depth > 0 {
        return check(api, r);
    }
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    if r != sys::ncclResult_t::ncclInProgress {
        return check(api, r);
    }
    for p in pending {
        // SAFETY: the communicator was used in this group on this thread and
        // is still alive: one freed meanwhile was forgotten (`forget`).
        unsafe { crate::comm::settle_raw(p.raw, &p.abort, p.timeout, api)? };
    }
    Ok(())
}

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
/// (`ncclGroupSimulateEnd`, NCCL 2.22.3+), and returns NCCL's estimate of how
/// long it would take, in microseconds, with `f`'s result.
///
/// The estimate is `None` when NCCL makes none: it leaves the time undefined
/// where no algorithm would run, as for a communicator of one rank (seen with
/// NCCL 2.28.3 on an H100).
///
/// # Errors
/// `Unsupported` before NCCL 2.22; `f`'s or NCCL's error.
#[cfg(nccl_2_22)]
pub fn group_simulate<R>(f: impl FnOnce() -> Result<R>) -> Result<(R, Option<f32>)> {
    crate::version::require_api("ncclGroupSimulateEnd")?;
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
    let end = group_end("ncclGroupSimulateEnd", || unsafe {
        sys::ncclGroupSimulateEnd(&mut info)
    });
    let r = out?;
    end?;
    let est = info.estimatedTime;
    // NCCL_UNDEF_FLOAT (-1) where nothing was estimated
    Ok((r, (est.is_finite() && est >= 0.0).then_some(est)))
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
        DEPTH.with(|d| d.set(d.get() + 1));
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
        group_end("ncclGroupEnd", || unsafe { sys::ncclGroupEnd() })
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // SAFETY: closes the group this guard opened (same thread: !Send).
        if let Err(e) = group_end("ncclGroupEnd", || unsafe { sys::ncclGroupEnd() }) {
            eprintln!("nccl: ncclGroupEnd in GroupGuard::drop failed: {e}");
        }
    }
}
