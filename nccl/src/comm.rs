//! Communicators: creation, splitting, and an honest close.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use cudarc::driver::CudaContext;

use crate::config::Config;
use crate::elastic::{CommOp, CommState};
use crate::error::{Error, NcclCode, Result, check, check_comm, failure};
use crate::id::UniqueId;
use crate::sys;
use crate::version::checked_runtime;

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

fn world_arg(op: &'static str, world: usize) -> Result<i32> {
    if world == 0 || world > i32::MAX as usize {
        return Err(Error::invalid(op, "world", "1 ..= i32::MAX ranks", world));
    }
    Ok(world as i32)
}

/// `world` as NCCL's `nranks`, checked with `rank < world`.
fn rank_args(op: &'static str, world: usize, rank: usize) -> Result<i32> {
    let nranks = world_arg(op, world)?;
    crate::contract::rank_arg(op, "rank", rank, world)?;
    Ok(nranks)
}

impl Comm {
    /// Creates this process's rank `rank` of a communicator of `world` ranks
    /// on the GPU of `ctx` (`ncclCommInitRank`). Every rank calls it with the
    /// same `id` (made by one of them with [`UniqueId::new`]); it returns once
    /// all have joined.
    ///
    /// `ctx` is bound to the calling thread first: NCCL uses the thread's
    /// current device.
    ///
    /// # Errors
    /// `InvalidArgument` for `rank >= world` or `world == 0`;
    /// `LibraryTooOld` when the libnccl loaded is older than 2.18;
    /// NCCL's error (with its explanation) otherwise.
    pub fn init_rank(
        ctx: &Arc<CudaContext>,
        world: usize,
        id: &UniqueId,
        rank: usize,
    ) -> Result<Comm> {
        Comm::init_rank_with(ctx, world, id, rank, &Config::new())
    }

    /// [`Comm::init_rank`] with a [`Config`] (`ncclCommInitRankConfig`).
    ///
    /// # Errors
    /// As `init_rank`; `Unsupported` for config fields the NCCL in use lacks;
    /// `Timeout` when a non-blocking init outlasts [`Config::timeout`].
    pub fn init_rank_with(
        ctx: &Arc<CudaContext>,
        world: usize,
        id: &UniqueId,
        rank: usize,
        config: &Config,
    ) -> Result<Comm> {
        const OP: &str = "init_rank";
        crate::group::not_in_group(OP)?;
        let nranks = rank_args(OP, world, rank)?;
        checked_runtime()?;
        if let (true, Some(limit)) = (config.is_blocking(), config.timeout) {
            // A blocking init cannot be aborted before it returns the
            // communicator, so it runs on a thread of its own and the caller
            // waits at most `limit`. A late success is aborted there.
            let (ctx2, id2, config2) = (ctx.clone(), *id, config.clone().no_timeout());
            return within(limit, "ncclCommInitRankConfig", move || {
                Comm::init_rank_with(&ctx2, world, &id2, rank, &config2)
            });
        }
        let mut raw_cfg = config.to_raw()?;
        ctx.bind_to_thread()?;
        let mut raw: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: valid out-pointer and config (its strings live in `config`);
        // the id is passed by value; rank < nranks was checked.
        let r = unsafe {
            sys::ncclCommInitRankConfig(&mut raw, nranks, *id.as_raw(), rank as i32, &mut raw_cfg)
        };
        Comm::adopt(raw, ctx, rank, world, config, "ncclCommInitRankConfig", r)
    }

    /// Like [`Comm::init_rank_with`], bootstrapped from several unique ids
    /// (`ncclCommInitRankScalable`, NCCL 2.23+): for very large jobs, the ids
    /// spread the bootstrap over several roots. Every rank passes the same ids
    /// (share them with [`TcpBootstrap::share_n_ids`](crate::TcpBootstrap::share_n_ids)).
    ///
    /// # Errors
    /// As `init_rank_with`; `InvalidArgument` for no ids; `Unsupported`
    /// before NCCL 2.23.
    #[cfg(nccl_2_23)]
    pub fn init_rank_scalable(
        ctx: &Arc<CudaContext>,
        world: usize,
        ids: &[UniqueId],
        rank: usize,
        config: &Config,
    ) -> Result<Comm> {
        const OP: &str = "init_rank_scalable";
        crate::group::not_in_group(OP)?;
        crate::version::require_api("ncclCommInitRankScalable")?;
        let nranks = rank_args(OP, world, rank)?;
        if ids.is_empty() || ids.len() > i32::MAX as usize {
            return Err(Error::invalid(OP, "ids.len()", "at least 1", ids.len()));
        }
        let mut raw_cfg = config.to_raw()?;
        ctx.bind_to_thread()?;
        let mut raw_ids: Vec<sys::ncclUniqueId> = ids.iter().map(|i| *i.as_raw()).collect();
        let mut raw: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: valid out-pointer, ids array of ids.len() entries and config.
        let r = unsafe {
            sys::ncclCommInitRankScalable(
                &mut raw,
                nranks,
                rank as i32,
                raw_ids.len() as i32,
                raw_ids.as_mut_ptr(),
                &mut raw_cfg,
            )
        };
        Comm::adopt(raw, ctx, rank, world, config, "ncclCommInitRankScalable", r)
    }

    /// Wraps the communicator an init call `api` returned `r` for, waiting
    /// for a non-blocking one to settle; on error it is dropped (aborted).
    fn adopt(
        raw: sys::ncclComm_t,
        ctx: &Arc<CudaContext>,
        rank: usize,
        world: usize,
        config: &Config,
        api: &'static str,
        r: sys::ncclResult_t,
    ) -> Result<Comm> {
        let (blocking, timeout) = (config.is_blocking(), config.timeout);
        Comm::adopt_with(raw, ctx, rank, world, blocking, timeout, api, r)
    }

    /// [`Comm::adopt`] with the mode and timeout given. Returns only once
    /// NCCL's creation job has ended: settled, or aborted (which joins it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn adopt_with(
        raw: sys::ncclComm_t,
        ctx: &Arc<CudaContext>,
        rank: usize,
        world: usize,
        blocking: bool,
        timeout: Option<Duration>,
        api: &'static str,
        r: sys::ncclResult_t,
    ) -> Result<Comm> {
        let comm = Comm::wrap(raw, ctx.clone(), rank, world, blocking, timeout);
        comm.settle(api, r)?;
        Ok(comm)
    }

    /// A live `Comm` around `raw` (which it then owns: aborted on drop).
    pub(crate) fn wrap(
        raw: sys::ncclComm_t,
        ctx: Arc<CudaContext>,
        rank: usize,
        world: usize,
        blocking: bool,
        timeout: Option<Duration>,
    ) -> Comm {
        Comm {
            raw: Cell::new(raw),
            abort: Arc::default(),
            ctx,
            rank,
            world,
            blocking,
            timeout,
            state: Cell::new(CommState::Live),
        }
    }

    /// One communicator per context, all in this process
    /// (`ncclCommInitAll`): rank `i` runs on `ctxs[i]`.
    ///
    /// # Errors
    /// `InvalidArgument` for no contexts or the same GPU twice; NCCL's error.
    pub fn init_all(ctxs: &[Arc<CudaContext>]) -> Result<Vec<Comm>> {
        const OP: &str = "init_all";
        crate::group::not_in_group(OP)?;
        let n = world_arg(OP, ctxs.len())?;
        let devs: Vec<i32> = ctxs.iter().map(|c| c.ordinal() as i32).collect();
        for (i, d) in devs.iter().enumerate() {
            if devs[..i].contains(d) {
                return Err(Error::invalid(
                    OP,
                    "ctxs",
                    "one context per GPU",
                    format!("GPU {d} twice"),
                ));
            }
        }
        checked_runtime()?;
        ctxs[0].bind_to_thread()?;
        let mut raws: Vec<sys::ncclComm_t> = vec![std::ptr::null_mut(); ctxs.len()];
        // SAFETY: raws has room for n communicators, devs holds n ordinals.
        let r = unsafe { sys::ncclCommInitAll(raws.as_mut_ptr(), n, devs.as_ptr()) };
        check("ncclCommInitAll", r)?;
        Ok(raws
            .into_iter()
            .zip(ctxs)
            .enumerate()
            .map(|(rank, (raw, ctx))| Comm::wrap(raw, ctx.clone(), rank, ctxs.len(), true, None))
            .collect())
    }

    /// Splits this communicator (`ncclCommSplit`, collective over all its
    /// ranks): ranks passing the same `color` form a new communicator,
    /// ordered by `key` (then by their rank here). `color: None` takes no part
    /// (`NCCL_SPLIT_NOCOLOR`) and returns `Ok(None)`.
    ///
    /// Allowed while [`Live`](CommState::Live) or
    /// [`Revoked`](CommState::Revoked) (NCCL documents a revoked communicator
    /// as safe to split); this communicator's state does not change. The
    /// child is live. With no operation of this communicator outstanding
    /// (NCCL: else it may deadlock). A non-blocking split is waited for up
    /// to this communicator's timeout.
    ///
    /// # Errors
    /// `InvalidArgument` for a color above `i32::MAX`; `WrongState`; NCCL's
    /// error; `Timeout` (this communicator is then aborted).
    pub fn split(
        &self,
        color: Option<u32>,
        key: i32,
        config: Option<&Config>,
    ) -> Result<Option<Comm>> {
        crate::group::not_in_group("split")?;
        self.allow("split", CommOp::Split)?;
        let color = match color {
            Some(c) if c > i32::MAX as u32 => {
                return Err(Error::invalid(
                    "split",
                    "color",
                    "0 ..= i32::MAX or None",
                    c,
                ));
            }
            Some(c) => c as i32,
            None => sys::NCCL_SPLIT_NOCOLOR,
        };
        let default = Config::new();
        let config = config.unwrap_or(&default);
        let mut raw_cfg = config.to_raw()?;
        self.ctx.bind_to_thread()?;
        let stale = self.async_state_now();
        let slot = AtomicPtr::new(std::ptr::null_mut());
        // SAFETY: valid communicator (live or revoked, checked above) used by
        // this thread only; the config outlives the call; `slot` is where
        // NCCL's job writes the child (for a non-blocking communicator, from
        // its own thread when the job ends): `settle_child` does not return
        // before that job has ended or been joined, and `slot` lives until then.
        let r =
            unsafe { sys::ncclCommSplit(self.raw.get(), color, key, slot.as_ptr(), &mut raw_cfg) };
        let raw = self.settle_child("ncclCommSplit", r, &slot, self.timeout, stale)?;
        if raw.is_null() {
            return Ok(None); // no color
        }
        let mut child = Comm::wrap(
            raw,
            self.ctx.clone(),
            0,
            0,
            config.is_blocking(),
            config.timeout,
        );
        child.rank = child.query("ncclCommUserRank", sys::ncclCommUserRank)? as usize;
        child.world = child.query("ncclCommCount", sys::ncclCommCount)? as usize;
        Ok(Some(child))
    }

    /// After a call `api` that creates a child of this communicator from a
    /// job of *this* communicator (split, shrink) answered `r`: NCCL writes
    /// the child's handle into `slot` when that job ends (for a non-blocking
    /// communicator on a thread of its own, after the call returned
    /// `ncclInProgress`, while this communicator's state says
    /// `ncclInProgress`: NCCL's documented way to wait for a non-blocking
    /// split is to poll the parent). Waits for that, up to `limit`, and
    /// returns the child (null: none was made).
    ///
    /// On timeout or an abort request this communicator is aborted, which
    /// joins NCCL's job (`ncclCommAbort` → `ncclCommEnsureReady` →
    /// `ncclGroupJobAbort`), so nothing writes `slot` after this returns; a
    /// child already written is aborted too. On a failed job the child, if
    /// any, is aborted and this communicator becomes `Failed`.
    ///
    /// `stale` is the asynchronous error this communicator already reported
    /// before the call (a dead peer of a failed or revoked communicator):
    /// `ncclCommGetAsyncError` may keep reporting it (from the proxy's state)
    /// after the job succeeded, so when polled it does not count as the job's
    /// failure.
    pub(crate) fn settle_child(
        &self,
        api: &'static str,
        r: sys::ncclResult_t,
        slot: &AtomicPtr<sys::ncclComm>,
        limit: Option<Duration>,
        stale: Option<sys::ncclResult_t>,
    ) -> Result<sys::ncclComm_t> {
        let polled = r == sys::ncclResult_t::ncclInProgress;
        let end = if polled {
            // SAFETY: a live communicator of this thread (Comm is !Sync).
            match unsafe { settle_state_raw(self.raw.get(), &self.abort, limit, api) } {
                Ok(end) => end,
                Err(e) => {
                    // joins NCCL's job: after this nothing writes `slot`
                    self.abort_now(api);
                    // SAFETY: null or the child NCCL made, owned by nobody
                    // else (taken out of `slot`), never used again.
                    unsafe { abort_raw(slot.swap(std::ptr::null_mut(), Ordering::Acquire)) };
                    return Err(e);
                }
            }
        } else {
            r
        };
        let child = slot.swap(std::ptr::null_mut(), Ordering::Acquire);
        // a polled state may be the old error; a returned one is the call's
        if end == sys::ncclResult_t::ncclSuccess || (polled && Some(end) == stale) {
            return Ok(child);
        }
        // SAFETY: null or the (failed) child NCCL made, owned by nobody else
        // (taken out of `slot`), never used again.
        unsafe { abort_raw(child) };
        let e = failure(api, end, self.raw.get());
        self.fail();
        Err(e)
    }

    /// The asynchronous error this communicator reports now, when it is an
    /// error (not success, not in progress); `None` otherwise or when it
    /// cannot be read.
    pub(crate) fn async_state_now(&self) -> Option<sys::ncclResult_t> {
        let raw = self.raw.get();
        if raw.is_null() {
            return None;
        }
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: valid communicator of this thread and out-pointer.
        let r = unsafe { sys::ncclCommGetAsyncError(raw, &mut state) };
        match (r, NcclCode::from_raw(state)) {
            (sys::ncclResult_t::ncclSuccess, Some(c)) if c != NcclCode::InProgress => Some(state),
            _ => None,
        }
    }

    pub(crate) fn query(
        &self,
        api: &'static str,
        f: unsafe extern "C" fn(sys::ncclComm_t, *mut i32) -> sys::ncclResult_t,
    ) -> Result<i32> {
        let mut v = 0;
        // SAFETY: valid communicator and out-pointer.
        check_comm(api, unsafe { f(self.raw.get(), &mut v) }, self.raw.get())?;
        Ok(v)
    }

    /// After a call that may return `ncclInProgress` (non-blocking
    /// communicators): waits for the communicator to settle, up to the
    /// configured timeout. On error the caller drops (aborts) the communicator.
    pub(crate) fn settle(&self, api: &'static str, r: sys::ncclResult_t) -> Result<()> {
        if r != sys::ncclResult_t::ncclInProgress {
            return check_comm(api, r, self.raw.get());
        }
        self.live(api)?;
        // SAFETY: a live communicator of this thread (Comm is !Sync).
        unsafe { settle_raw(self.raw.get(), &self.abort, self.timeout, api) }
    }

    /// Like [`Comm::settle`], after an operation on this communicator (a
    /// collective, a group's end): the communicator is kept, not aborted, so
    /// an error (other than NCCL refusing the arguments at once) makes it
    /// [`Failed`](CommState::Failed), and the timeout is
    /// [`Error::Stalled`].
    pub(crate) fn settle_op(&self, api: &'static str, r: sys::ncclResult_t) -> Result<()> {
        match NcclCode::from_raw(r) {
            None => Ok(()),
            Some(NcclCode::InProgress) => {
                self.live(api)?;
                // SAFETY: a live communicator of this thread (Comm is !Sync).
                unsafe { settle_raw(self.raw.get(), &self.abort, self.timeout, api) }
                    .map_err(|e| self.failed_with(e))
            }
            // refused at the call: nothing ran
            Some(NcclCode::InvalidArgument | NcclCode::InvalidUsage) => {
                check_comm(api, r, self.raw.get())
            }
            Some(_) => check_comm(api, r, self.raw.get()).map_err(|e| self.failed_with(e)),
        }
    }

    /// At the end of a group that NCCL answered with `ncclInProgress`: waits
    /// for this (non-blocking) communicator, unless it was aborted meanwhile.
    /// As [`Comm::settle_op`], an error or the timeout leaves it `Failed`.
    pub(crate) fn settle_after_group(&self, api: &'static str) -> Result<()> {
        if self.raw.get().is_null() {
            return Err(Error::Aborted { op: api });
        }
        // SAFETY: a live communicator of this thread (Comm is !Sync).
        unsafe { settle_raw(self.raw.get(), &self.abort, self.timeout, api) }
            .map_err(|e| self.failed_with(e))
    }

    /// Marks a live communicator [`Failed`](CommState::Failed) after error
    /// `e` of one of its operations; a timeout becomes [`Error::Stalled`]
    /// (the communicator was kept, not aborted). Other states are kept.
    fn failed_with(&self, e: Error) -> Error {
        match e {
            Error::Aborted { .. } => e,
            Error::Timeout { op, after } => {
                self.fail();
                Error::Stalled { op, after }
            }
            e => {
                self.fail();
                e
            }
        }
    }

    /// Live → Failed; other states are kept.
    pub(crate) fn fail(&self) {
        if self.state.get() == CommState::Live {
            self.state.set(CommState::Failed);
        }
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
        let r = unsafe { sys::ncclCommGetAsyncError(self.raw.get(), &mut state) };
        check_comm("ncclCommGetAsyncError", r, self.raw.get())?;
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

    /// NCCL's last error message for this communicator (`ncclGetLastError`).
    pub fn last_error(&self) -> String {
        crate::error::last_error(self.raw.get())
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
    /// Null for a communicator that was aborted.
    pub fn into_raw(self) -> sys::ncclComm_t {
        // `Drop` does nothing for a null handle; the context and the abort
        // flag are released as usual.
        self.raw.replace(std::ptr::null_mut())
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

    /// The orderly close: waits until all of this rank's operations are done
    /// (`ncclCommFinalize`), then frees the communicator (`ncclCommDestroy`).
    /// On error the communicator is aborted, so nothing leaks.
    ///
    /// A [`Revoked`](CommState::Revoked) communicator has nothing left to
    /// flush and NCCL forbids finalizing it: it is released with
    /// `ncclCommAbort`, which never waits on peers (`ncclCommDestroy` may:
    /// PyTorch reports an untimed barrier in it from NCCL 2.31.2 on,
    /// pytorch#194775, which a lost rank never reaches).
    /// [`Failed`](CommState::Failed) (finalize would wait on the dead peer)
    /// and [`Suspended`](CommState::Suspended) communicators are refused
    /// with `WrongState`, and aborted.
    ///
    /// # Errors
    /// NCCL's error from finalizing (e.g. a peer died), or `Timeout` for a
    /// non-blocking communicator that outlasts its configured timeout;
    /// `WrongState`.
    pub fn finalize(self) -> Result<()> {
        crate::group::not_in_group("finalize")?;
        self.allow("finalize", CommOp::Finalize)?;
        let _ = self.ctx.bind_to_thread();
        if self.state.get() == CommState::Revoked {
            // revoked and settled: nothing to flush, and finalize after
            // revoke is invalid in NCCL
            return self.abort();
        }
        // SAFETY: valid communicator, used by this thread only.
        let r = unsafe { sys::ncclCommFinalize(self.raw.get()) };
        if let Err(e) = self.settle("ncclCommFinalize", r) {
            drop(self); // aborts
            return Err(e);
        }
        let raw = self.into_raw();
        // SAFETY: finalized, so destroy only frees local resources.
        let r = unsafe { sys::ncclCommDestroy(raw) };
        check("ncclCommDestroy", r)
    }

    /// Stops all operations and frees the communicator at once
    /// (`ncclCommAbort`), without waiting for peers.
    ///
    /// # Errors
    /// NCCL's error from aborting (the communicator is gone either way).
    pub fn abort(self) -> Result<()> {
        let raw = self.into_raw();
        if raw.is_null() {
            return Ok(()); // already aborted
        }
        // SAFETY: valid communicator, owned and not used afterwards.
        let r = unsafe { sys::ncclCommAbort(raw) };
        check("ncclCommAbort", r)
    }

    /// Fails with [`Error::Aborted`] (aborting the communicator first, if an
    /// [`AbortHandle`] asked for it) unless the communicator is usable. One
    /// relaxed atomic load on the common path.
    #[inline(always)]
    pub(crate) fn live(&self, op: &'static str) -> Result<()> {
        if self.raw.get().is_null() || self.abort.load(Ordering::Relaxed) {
            return Err(self.abort_now(op));
        }
        Ok(())
    }

    /// Aborts the communicator now (it stays a `Comm`, but every call fails
    /// with [`Error::Aborted`]); returns that error for `op`.
    #[cold]
    pub(crate) fn abort_now(&self, op: &'static str) -> Error {
        if crate::group::in_group() {
            // Calls of this communicator may sit in the thread's open group,
            // which NCCL launches at its end: aborting now would free the
            // communicator under them. The abort flag stays set, so the next
            // call after the group aborts it.
            self.abort.store(true, Ordering::Relaxed);
            return Error::Aborted { op };
        }
        // SAFETY: null or valid, owned, used by this thread only (Comm is
        // !Sync, and not inside a group: checked above), and never used again
        // (now null).
        unsafe { abort_raw(self.raw.replace(std::ptr::null_mut())) };
        self.state.set(CommState::Aborted);
        self.abort.store(true, Ordering::Relaxed);
        Error::Aborted { op }
    }

    /// Whether the communicator has been aborted (by [`Comm::wait`], a
    /// watchdog or an [`AbortHandle`] whose request this thread has acted on).
    pub fn is_aborted(&self) -> bool {
        self.raw.get().is_null()
    }

    /// A handle another thread can use to abort this communicator: see
    /// [`AbortHandle`].
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            flag: self.abort.clone(),
        }
    }

    /// Waits until all work queued on `stream` so far is done, for at most
    /// `timeout`, watching the communicator's asynchronous errors (a dead peer)
    /// and abort requests while it waits: the loop NCCL documents in place of
    /// `cudaStreamSynchronize`. On an error, an abort request or the timeout,
    /// the communicator is aborted (which also ends its stuck kernels) and the
    /// error returned.
    ///
    /// # Errors
    /// [`Error::Nccl`] (e.g. `ncclRemoteError`) for an asynchronous error,
    /// [`Error::Aborted`], [`Error::Timeout`], or a CUDA error.
    pub fn wait(&self, stream: &cudarc::driver::CudaStream, timeout: Duration) -> Result<()> {
        self.wait_impl("wait", stream, timeout, false)
    }

    /// Like [`Comm::wait`], but a failure keeps the communicator for
    /// recovery instead of aborting it: after an asynchronous error (a dead
    /// peer), a CUDA error or `timeout`, the communicator is
    /// [`Failed`](CommState::Failed) and its work may still be stuck on the
    /// GPU. Then allowed: [`Comm::revoke`] (stops that work),
    /// [`Comm::shrink`] with [`ShrinkMode::Abort`](crate::ShrinkMode::Abort)
    /// (stops it and leaves the dead out), or abort / drop. An abort request
    /// ([`AbortHandle`]) still aborts. A `Failed` communicator is not waited
    /// on again: it fails at once with `WrongState`.
    ///
    /// # Errors
    /// [`Error::Nccl`] for an asynchronous error, [`Error::Stalled`] at the
    /// timeout, [`Error::Aborted`], [`Error::WrongState`] (not live), or a
    /// CUDA error.
    pub fn wait_recoverable(
        &self,
        stream: &cudarc::driver::CudaStream,
        timeout: Duration,
    ) -> Result<()> {
        const OP: &str = "wait_recoverable";
        self.ready(OP)?;
        self.wait_impl(OP, stream, timeout, true)
    }

    /// The loop of [`Comm::wait`]; `keep`: on failure mark the communicator
    /// `Failed` instead of aborting it.
    fn wait_impl(
        &self,
        op: &'static str,
        stream: &cudarc::driver::CudaStream,
        timeout: Duration,
        keep: bool,
    ) -> Result<()> {
        self.live(op)?;
        let give_up = |e: Error| -> Error {
            if keep {
                self.fail();
            } else {
                self.abort_now(op);
            }
            e
        };
        let event = stream.record_event(None)?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(10);
        loop {
            match event.try_is_complete() {
                Ok(true) => {
                    let state = self.async_error_raw(op)?;
                    return match NcclCode::from_raw(state) {
                        None | Some(NcclCode::InProgress) => Ok(()),
                        Some(_) => {
                            let e = failure("ncclCommGetAsyncError", state, self.raw.get());
                            // the work is done: no need to abort for it
                            if keep {
                                self.fail();
                            }
                            Err(e)
                        }
                    };
                }
                Ok(false) => {}
                Err(e) => return Err(give_up(e.into())),
            }
            let state = self.async_error_raw(op)?;
            match NcclCode::from_raw(state) {
                None | Some(NcclCode::InProgress) => {}
                Some(_) => {
                    return Err(give_up(failure(
                        "ncclCommGetAsyncError",
                        state,
                        self.raw.get(),
                    )));
                }
            }
            if self.abort.load(Ordering::Relaxed) {
                return Err(self.abort_now(op));
            }
            if start.elapsed() >= timeout {
                return Err(give_up(if keep {
                    Error::Stalled { op, after: timeout }
                } else {
                    Error::Timeout { op, after: timeout }
                }));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    /// Whether this communicator was created blocking (the default).
    pub fn is_blocking(&self) -> bool {
        self.blocking
    }
}

/// Runs `f` (a blocking init) on a thread of its own and waits at most
/// `limit` for it: `Timeout` after that, and a communicator that `f` still
/// returns later is dropped (aborted) on that thread.
pub(crate) fn within(
    limit: Duration,
    api: &'static str,
    f: impl FnOnce() -> Result<Comm> + Send + 'static,
) -> Result<Comm> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("nccl-init".into())
        .spawn(move || {
            // nobody waits any more: the returned Comm drops here (aborts)
            let _ = tx.send(f());
        })
        .map_err(|e| Error::invalid(api, "thread", "a thread for the init", e.to_string()))?;
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout {
            op: api,
            after: limit,
        }),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(Error::invalid(
            api,
            "init thread",
            "a result",
            "the thread ended without one (panicked)",
        )),
    }
}

/// How long [`settle_raw`] polls back to back, then yielding the CPU between
/// polls, before it sleeps: NCCL finishes a non-blocking launch on a thread
/// of its own in tens of microseconds, less than one sleep of the scheduler,
/// and often at once.
const SPIN: Duration = Duration::from_micros(20);
const YIELD: Duration = Duration::from_micros(500);

/// Polls `ncclCommGetAsyncError` until the communicator is no longer in
/// progress: back to back for [`SPIN`], yielding the CPU up to [`YIELD`],
/// then sleeping with a backoff up to a millisecond. Stops at an error
/// (returned as `api`'s), an abort request (`Aborted`) or `timeout`
/// (`Timeout`).
///
/// # Safety
/// `raw` must be a valid communicator not used by another thread meanwhile.
pub(crate) unsafe fn settle_raw(
    raw: sys::ncclComm_t,
    abort: &AtomicBool,
    timeout: Option<Duration>,
    api: &'static str,
) -> Result<()> {
    // SAFETY: as the caller promises.
    let end = unsafe { settle_state_raw(raw, abort, timeout, api) }?;
    check_comm(api, end, raw)
}

/// Like [`settle_raw`], returning the state the communicator settled in
/// (success or an error code) instead of turning it into an error; errors
/// are only a failed poll, an abort request and the timeout.
///
/// # Safety
/// As [`settle_raw`].
pub(crate) unsafe fn settle_state_raw(
    raw: sys::ncclComm_t,
    abort: &AtomicBool,
    timeout: Option<Duration>,
    api: &'static str,
) -> Result<sys::ncclResult_t> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: as the caller promises; valid out-pointer.
        let r = unsafe { sys::ncclCommGetAsyncError(raw, &mut state) };
        check_comm("ncclCommGetAsyncError", r, raw)?;
        if state != sys::ncclResult_t::ncclInProgress {
            return Ok(state);
        }
        if abort.load(Ordering::Relaxed) {
            return Err(Error::Aborted { op: api });
        }
        let waited = start.elapsed();
        if let Some(limit) = timeout {
            if waited >= limit {
                // the caller drops (so aborts) the communicator
                return Err(Error::Timeout {
                    op: api,
                    after: limit,
                });
            }
        }
        if waited < SPIN {
            std::hint::spin_loop();
        } else if waited < YIELD {
            std::thread::yield_now();
        } else {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }
}

/// Aborts `raw` (`ncclCommAbort`) unless it is null; a failure is written to
/// stderr. Abort does not wait on peers.
///
/// # Safety
/// `raw` is null or a valid communicator that the caller owns, that no other
/// thread is using, and that nobody uses again.
pub(crate) unsafe fn abort_raw(raw: sys::ncclComm_t) {
    if raw.is_null() {
        return;
    }
    // SAFETY: as the caller promises.
    let r = unsafe { sys::ncclCommAbort(raw) };
    if r != sys::ncclResult_t::ncclSuccess {
        eprintln!("nccl: ncclCommAbort failed with code {}", r.0);
    }
}

impl Drop for Comm {
    /// Aborts the communicator, in whatever state (see the type's
    /// documentation for why not destroy). Never panics; a failure is
    /// written to stderr.
    fn drop(&mut self) {
        // SAFETY: null or valid, owned, used by this thread only (a `&mut`),
        // and never used again (now null). A communicator used in an open
        // group cannot be dropped (the group borrows it until its end).
        unsafe { abort_raw(self.raw.replace(std::ptr::null_mut())) };
    }
}

/// Lets another thread abort a communicator: for a watchdog, or to unblock a
/// rank waiting on a peer that is gone. `Send + Sync + Clone`.
///
/// [`AbortHandle::abort`] only *requests* the abort; the thread that owns the
/// [`Comm`] carries it out (`ncclCommAbort`) in its next call, or within about
/// a millisecond while it waits in [`Comm::wait`] or for a non-blocking
/// operation. Aborting from the owning thread alone keeps the communicator
/// from being freed under a call in progress. A thread blocked elsewhere (in
/// cudarc's `synchronize`, say) is not reached: wait with [`Comm::wait`]
/// where a peer may die, and use non-blocking communicators where creation,
/// split and finalize must be abortable too.
#[derive(Clone, Debug)]
pub struct AbortHandle {
    flag: Arc<AtomicBool>,
}

impl AbortHandle {
    /// Requests the abort.
    pub fn abort(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }

    /// Whether an abort has been requested (or done).
    pub fn is_requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// A watchdog: requests the abort after `deadline` unless the returned
    /// guard is dropped (or [`Watchdog::disarm`]ed) first.
    pub fn abort_after(&self, deadline: Duration) -> Watchdog {
        let handle = self.clone();
        let cancel = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let c = cancel.clone();
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*c;
            let Ok(guard) = lock.lock() else { return };
            let Ok((cancelled, _)) =
                cv.wait_timeout_while(guard, deadline, |cancelled| !*cancelled)
            else {
                return;
            };
            if !*cancelled {
                handle.abort();
            }
        });
        Watchdog {
            cancel,
            thread: Some(thread),
        }
    }
}

/// A running watchdog (see [`AbortHandle::abort_after`]); dropping it disarms it.
#[derive(Debug)]
pub struct Watchdog {
    cancel: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    /// Disarms the watchdog.
    pub fn disarm(self) {}
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Ok(mut c) = self.cancel.0.lock() {
            *c = true;
        }
        self.cancel.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
