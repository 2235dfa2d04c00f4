//! Communicators: creation, splitting, and an honest close.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cudarc::driver::CudaContext;

use crate::config::Config;
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
    raw: Cell<sys::ncclComm_t>,
    abort: Arc<AtomicBool>,
    ctx: Arc<CudaContext>,
    rank: usize,
    world: usize,
    blocking: bool,
    timeout: Option<Duration>,
}

// SAFETY: an NCCL communicator is not tied to the thread that created it; NCCL
// only forbids concurrent use, which `&self`/`&mut self` plus `!Sync` (the raw
// pointer field) rule out. The CUDA context is `Send` too.
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
    if rank >= world {
        return Err(Error::invalid(
            op,
            "rank",
            format!("< world ({world})"),
            rank,
        ));
    }
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
        let comm = Comm {
            raw: Cell::new(raw),
            abort: Arc::default(),
            ctx: ctx.clone(),
            rank,
            world,
            blocking: config.is_blocking(),
            timeout: config.timeout,
        };
        comm.settle(api, r)?;
        Ok(comm)
    }

    /// One communicator per context, all in this process
    /// (`ncclCommInitAll`): rank `i` runs on `ctxs[i]`.
    ///
    /// # Errors
    /// `InvalidArgument` for no contexts or the same GPU twice; NCCL's error.
    pub fn init_all(ctxs: &[Arc<CudaContext>]) -> Result<Vec<Comm>> {
        const OP: &str = "init_all";
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
            .map(|(rank, (raw, ctx))| Comm {
                raw: Cell::new(raw),
                abort: Arc::default(),
                ctx: ctx.clone(),
                rank,
                world: ctxs.len(),
                blocking: true,
                timeout: None,
            })
            .collect())
    }

    /// Splits this communicator (`ncclCommSplit`, collective over all its
    /// ranks): ranks passing the same `color` form a new communicator,
    /// ordered by `key` (then by their rank here). `color: None` takes no part
    /// (`NCCL_SPLIT_NOCOLOR`) and returns `Ok(None)`.
    ///
    /// # Errors
    /// `InvalidArgument` for a color above `i32::MAX`; NCCL's error.
    pub fn split(
        &self,
        color: Option<u32>,
        key: i32,
        config: Option<&Config>,
    ) -> Result<Option<Comm>> {
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
        let mut raw: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: valid communicator, out-pointer and config.
        let r = unsafe { sys::ncclCommSplit(self.raw.get(), color, key, &mut raw, &mut raw_cfg) };
        let mut child = Comm {
            raw: Cell::new(raw),
            abort: Arc::default(),
            ctx: self.ctx.clone(),
            rank: 0,
            world: 0,
            blocking: config.is_blocking(),
            timeout: config.timeout,
        };
        if let Err(e) = child.settle("ncclCommSplit", r) {
            if raw.is_null() {
                // nothing to abort: report the parent's view of the error
                std::mem::forget(child);
            }
            return Err(e);
        }
        if raw.is_null() {
            std::mem::forget(child);
            return Ok(None);
        }
        child.rank = child.query("ncclCommUserRank", sys::ncclCommUserRank)? as usize;
        child.world = child.query("ncclCommCount", sys::ncclCommCount)? as usize;
        Ok(Some(child))
    }

    fn query(
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
    /// operation failed in the background (e.g. a peer died).
    ///
    /// # Errors
    /// The asynchronous error, as [`Error::Nccl`].
    pub fn async_error(&self) -> Result<()> {
        let state = self.async_error_raw("ncclCommGetAsyncError")?;
        check_comm("ncclCommGetAsyncError", state, self.raw.get())
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
    pub fn into_raw(self) -> sys::ncclComm_t {
        let raw = self.raw.get();
        std::mem::forget(self);
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
        let mut c = Comm {
            raw: Cell::new(raw),
            abort: Arc::default(),
            ctx,
            rank: 0,
            world: 0,
            blocking: true,
            timeout: None,
        };
        c.rank = c.query("ncclCommUserRank", sys::ncclCommUserRank)? as usize;
        c.world = c.query("ncclCommCount", sys::ncclCommCount)? as usize;
        Ok(c)
    }

    /// The orderly close: waits until all of this rank's operations are done
    /// (`ncclCommFinalize`), then frees the communicator (`ncclCommDestroy`).
    /// On error the communicator is aborted, so nothing leaks.
    ///
    /// # Errors
    /// NCCL's error from finalizing (e.g. a peer died), or `Timeout` for a
    /// non-blocking communicator that outlasts its configured timeout.
    pub fn finalize(self) -> Result<()> {
        self.live("finalize")?;
        let _ = self.ctx.bind_to_thread();
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
        if !self.blocking && crate::group::in_group() {
            crate::group::note(self.raw.get(), &self.abort, self.timeout);
        }
        Ok(())
    }

    /// Aborts the communicator now (it stays a `Comm`, but every call fails
    /// with [`Error::Aborted`]); returns that error for `op`.
    #[cold]
    pub(crate) fn abort_now(&self, op: &'static str) -> Error {
        let raw = self.raw.replace(std::ptr::null_mut());
        if !raw.is_null() {
            crate::group::forget(raw);
            // SAFETY: valid communicator, owned, used by this thread only
            // (Comm is !Sync); it is never used again (raw is now null).
            let r = unsafe { sys::ncclCommAbort(raw) };
            if r != sys::ncclResult_t::ncclSuccess {
                eprintln!("nccl: ncclCommAbort failed with code {}", r.0);
            }
        }
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
        const OP: &str = "wait";
        self.live(OP)?;
        let event = stream.record_event(None)?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(10);
        loop {
            match event.try_is_complete() {
                Ok(true) => return self.async_error_settled(OP),
                Ok(false) => {}
                Err(e) => {
                    self.abort_now(OP);
                    return Err(e.into());
                }
            }
            let state = self.async_error_raw(OP)?;
            match NcclCode::from_raw(state) {
                None | Some(NcclCode::InProgress) => {}
                Some(_) => {
                    let e = failure("ncclCommGetAsyncError", state, self.raw.get());
                    self.abort_now(OP);
                    return Err(e);
                }
            }
            if self.abort.load(Ordering::Relaxed) {
                return Err(self.abort_now(OP));
            }
            if start.elapsed() >= timeout {
                self.abort_now(OP);
                return Err(Error::Timeout {
                    op: OP,
                    after: timeout,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(1));
        }
    }

    /// The asynchronous error state, where `ncclInProgress` counts as fine.
    fn async_error_settled(&self, op: &'static str) -> Result<()> {
        let state = self.async_error_raw(op)?;
        match NcclCode::from_raw(state) {
            None | Some(NcclCode::InProgress) => Ok(()),
            Some(_) => Err(failure("ncclCommGetAsyncError", state, self.raw.get())),
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
fn within(
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
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    loop {
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: as the caller promises; valid out-pointer.
        let r = unsafe { sys::ncclCommGetAsyncError(raw, &mut state) };
        check_comm("ncclCommGetAsyncError", r, raw)?;
        match NcclCode::from_raw(state) {
            None => return Ok(()),
            Some(NcclCode::InProgress) => {}
            Some(_) => return Err(failure(api, state, raw)),
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

impl Drop for Comm {
    /// Aborts the communicator (see the type's documentation for why not
    /// destroy). Never panics; a failure is written to stderr.
    fn drop(&mut self) {
        if self.raw.get().is_null() {
            return;
        }
        crate::group::forget(self.raw.get());
        // SAFETY: valid communicator, owned; abort does not wait on peers.
        let r = unsafe { sys::ncclCommAbort(self.raw.get()) };
        if r != sys::ncclResult_t::ncclSuccess {
            eprintln!("nccl: ncclCommAbort in Comm::drop failed with code {}", r.0);
        }
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
