//! The communicator: its handle and state ([`Comm`]), creation
//! ([`create`]), waiting for NCCL's own thread ([`wait`]) and close
//! ([`close`]), with its configuration ([`Config`]) and unique id ([`UniqueId`]).

pub(crate) mod close;
pub(crate) mod config;
mod create;
mod id;
pub(crate) mod registry;
pub(crate) mod wait;

pub use close::MAX_ABORTS_RUNNING;
pub(crate) use close::orphan;
pub use close::{AbortHandle, Watchdog};
pub use config::Config;
pub use id::{Bootstrap, UNIQUE_ID_BYTES, UniqueId};
pub use wait::MAX_STUCK_CREATIONS;

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use cudarc::driver::CudaContext;

use crate::base::call::failure;
use crate::base::error::{Error, NcclCode, Result};
use crate::base::state::{CommOp, CommState};
use crate::sys;

/// An NCCL communicator: one rank of a group of GPUs that run collectives
/// together, bound to one GPU (a cudarc [`CudaContext`]).
///
/// # Closing
///
/// - [`Comm::finalize`] is the orderly close: it waits until every operation
///   of this rank is done (`ncclCommFinalize`), then frees the communicator,
///   and reports any error.
/// - [`Comm::abort`] stops everything at once (`ncclCommAbort`), for when a
///   peer is gone or an operation hangs.
/// - Dropping a `Comm` aborts it: `Drop` cannot report errors and must never
///   wait without bound, and `ncclCommDestroy` of an unfinalized communicator
///   can wait on its peers. Operations still in flight are cancelled, so call
///   `finalize` when the work matters. Drop never panics.
///
/// # States
///
/// A communicator is [`CommState::Live`] until something happens to it: an
/// operation fails or stalls ([`Failed`](CommState::Failed)), it is revoked
/// ([`Revoked`](CommState::Revoked)), suspended
/// ([`Suspended`](CommState::Suspended)) or aborted
/// ([`Aborted`](CommState::Aborted)). [`Comm::state`] says which; a call the
/// state does not allow ([`CommState::allows`]) fails with
/// [`Error::WrongState`] (or [`Error::Aborted`]) without calling NCCL.
///
/// # Threads
///
/// `Comm` is `Send` (it may move to another thread) but not `Sync`: NCCL allows
/// one thread at a time to use a communicator.
///
/// ```compile_fail
/// fn needs_sync<T: Sync>() {}
/// needs_sync::<nccl::Comm>();
/// ```
#[derive(Debug)]
pub struct Comm {
    /// Null once aborted.
    pub(crate) raw: Cell<sys::ncclComm_t>,
    pub(crate) abort: Arc<AtomicBool>,
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) rank: usize,
    pub(crate) world: usize,
    pub(crate) blocking: bool,
    pub(crate) timeout: Option<Duration>,
    /// Live, failed, revoked or suspended; aborted is `raw` being null.
    pub(crate) state: Cell<CommState>,
    /// Where dropped registrations wait for this communicator's thread.
    pub(crate) registry: Arc<registry::Registry>,
    /// The `commName` NCCL points to (it keeps the pointer, does not copy
    /// the string): freed only after the communicator is (fields drop after
    /// `Drop::drop` aborted it).
    pub(crate) name: Option<Arc<std::ffi::CString>>,
    /// Its config asked children to share its resources: (split, shrink).
    pub(crate) share: (bool, bool),
    /// Its children whose abort must wait for its own (see [`close::Orphans`]).
    pub(crate) orphans: close::OrphanList,
    /// The parent's list, while this child is being taken from NCCL (its
    /// rank and size asked): if that fails, its abort waits for the
    /// parent's. Never set on a communicator a caller holds.
    pub(crate) linger: Option<close::OrphanList>,
}

// SAFETY: NCCL ties a communicator to a GPU, not to a thread: any thread may
// use it (this crate binds the communicator's CUDA context to the calling
// thread before the calls that need it), and NCCL only forbids using one
// communicator from several threads at once, which `!Sync` (the `Cell`s of
// the handle and the state) rules out. No state of this crate outside the `Comm` refers to it: a group that
// uses it borrows it (so it cannot move while the group is open), and the
// thread-local group flag does not name communicators. The abort flag is an
// `Arc<AtomicBool>`, and cudarc's `CudaContext` is `Send + Sync`.
unsafe impl Send for Comm {}

impl Comm {
    /// The communicator with `timeout` as the one its later waits (and
    /// close) take: for a creation that ran without it on a thread of its
    /// own, bounded by it there ([`wait::within`]).
    pub(crate) fn with_timeout(mut self, timeout: Option<Duration>) -> Comm {
        self.timeout = timeout;
        self
    }

    /// Where the communicator stands (see [`CommState`]).
    pub fn state(&self) -> CommState {
        if self.raw.get().is_null() {
            CommState::Aborted
        } else {
            self.state.get()
        }
    }

    /// Fails unless the communicator's state allows `op` (for the call
    /// `api`): [`Error::Aborted`] when aborted (acting on an abort request
    /// first), [`Error::WrongState`] otherwise. NCCL is not called.
    pub(crate) fn allow(&self, api: &'static str, op: CommOp) -> Result<()> {
        self.live(api)?;
        self.state.get().check(api, op)
    }

    /// [`Comm::allow`] for a collective, on the hot path: one relaxed atomic
    /// load and one comparison when live.
    #[inline(always)]
    pub(crate) fn ready(&self, api: &'static str) -> Result<()> {
        self.live(api)?;
        if self.state.get() != CommState::Live {
            return Err(self.refuse(api));
        }
        Ok(())
    }

    #[cold]
    fn refuse(&self, api: &'static str) -> Error {
        match self.state.get().check(api, CommOp::Collective) {
            Err(e) => e,
            Ok(()) => Error::Aborted { op: api },
        }
    }

    /// The asynchronous error state; `op` names the caller's operation in
    /// the `Aborted` error of an aborted communicator.
    fn async_error_raw(&self, op: &'static str) -> Result<sys::ncclResult_t> {
        self.live(op)?;
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: valid communicator and out-pointer.
        unsafe { nccl!(self.raw.get() => ncclCommGetAsyncError(self.raw.get(), &mut state)) }?;
        Ok(state)
    }

    /// The communicator's asynchronous error state
    /// (`ncclCommGetAsyncError`): `Ok(())` while healthy, the error once an
    /// operation failed in the background (e.g. a peer died). A live
    /// communicator that reports an error becomes
    /// [`Failed`](CommState::Failed).
    ///
    /// # Errors
    /// The asynchronous error, as [`Error::Nccl`].
    pub fn async_error(&self) -> Result<()> {
        let state = self.async_error_raw("ncclCommGetAsyncError")?;
        match NcclCode::from_raw(state) {
            None => Ok(()),
            // still working: not a failure
            Some(NcclCode::InProgress) => {
                Err(failure("ncclCommGetAsyncError", state, self.raw.get()))
            }
            Some(_) => {
                self.fail();
                Err(failure("ncclCommGetAsyncError", state, self.raw.get()))
            }
        }
    }

    /// NCCL's last error message (`ncclGetLastError`). NCCL keeps one for
    /// the whole process: with several communicators it may be another's,
    /// and it stays until the next warning (best effort, for messages).
    pub fn last_error(&self) -> String {
        crate::base::error::last_error(self.raw.get())
    }

    /// The name given with [`Config::comm_name`](crate::Config::comm_name)
    /// (or inherited from the parent by a child made without a config), as
    /// NCCL and its profiler plugins see it.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref().and_then(|n| n.to_str().ok())
    }

    /// This rank's index, `0..world_size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// Ordinal of the GPU this rank runs on.
    pub fn device(&self) -> usize {
        self.ctx.ordinal()
    }

    /// The CUDA context of this rank's GPU.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The raw communicator, still owned by `self`.
    pub fn as_raw(&self) -> sys::ncclComm_t {
        self.raw.get()
    }

    /// Gives up ownership: the caller must finalize/destroy or abort it.
    /// Null for a communicator that was aborted. Registrations dropped
    /// before and after stay parked, their memory never freed: NCCL may use
    /// it until the handle's new owner has destroyed or aborted it, which
    /// this crate cannot see. For the same reason the name given with
    /// [`Config::comm_name`](crate::Config::comm_name), which NCCL points
    /// to, is never freed either. A child of split or shrink taken while its
    /// parent still showed an older error may have failed its creation:
    /// then NCCL writes its abort flag from the parent until the parent is
    /// released, and its new owner must destroy or abort it only after that
    /// (this crate would wait so itself: see [`Comm::abort`]).
    pub fn into_raw(self) -> sys::ncclComm_t {
        // `Drop` does nothing for a null handle (the registry stays open);
        // the context and the abort flag are released as usual.
        let raw = self.raw.replace(std::ptr::null_mut());
        if !raw.is_null() {
            // NCCL keeps pointers to the name, and the registrations parked
            // with this communicator stay registered with the handle: the
            // caller owns both with it, so neither is ever freed here
            if let Some(name) = &self.name {
                std::mem::forget(name.clone());
            }
            std::mem::forget(self.registry.clone());
        }
        raw
    }

    /// Wraps a raw communicator.
    ///
    /// # Safety
    /// `raw` must be a valid, initialized communicator on the GPU of `ctx`,
    /// owned by nobody else (it is aborted when the `Comm` drops).
    ///
    /// # Errors
    /// NCCL's error when asking the communicator its rank and size.
    pub unsafe fn from_raw(raw: sys::ncclComm_t, ctx: Arc<CudaContext>) -> Result<Comm> {
        let mut c = Comm::wrap(raw, ctx, 0, 0, true, None);
        c.rank = c.query("ncclCommUserRank", sys::ncclCommUserRank)? as usize;
        c.world = c.query("ncclCommCount", sys::ncclCommCount)? as usize;
        Ok(c)
    }

    /// Whether this communicator is blocking: as its config asked (blocking
    /// by default), unless NCCL made it otherwise (`NCCL_COMM_BLOCKING` set
    /// to 0 or 1 overrides every config at creation).
    pub fn is_blocking(&self) -> bool {
        self.blocking
    }
}

// The typed refusal is made here, above both the states and the errors.
impl CommState {
    /// `Ok` when this state allows `op`; else the typed error that the call
    /// `api` returns in this state: [`Error::Aborted`] for an aborted
    /// communicator, [`Error::WrongState`] naming the calls that are allowed
    /// otherwise.
    ///
    /// ```
    /// use nccl::{CommOp, CommState};
    /// let e = CommState::Suspended.check("all_reduce", CommOp::Collective).unwrap_err();
    /// assert_eq!(
    ///     e.to_string(),
    ///     "all_reduce: not allowed while the communicator is suspended; allowed now: resume, mem_stats, abort"
    /// );
    /// ```
    ///
    /// # Errors
    /// As above.
    pub fn check(self, api: &'static str, op: CommOp) -> Result<()> {
        if self.allows(op) {
            return Ok(());
        }
        if self == CommState::Aborted {
            return Err(Error::Aborted { op: api });
        }
        let mut allowed: Vec<String> = CommOp::ALL
            .iter()
            .filter(|&&o| self.allows(o))
            .map(ToString::to_string)
            .collect();
        allowed.push("abort".into());
        Err(Error::WrongState {
            op: api,
            state: self,
            allowed: allowed.join(", "),
        })
    }
}
