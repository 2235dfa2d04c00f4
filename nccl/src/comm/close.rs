//! Closing a communicator: the orderly [`Comm::finalize`], [`Comm::abort`],
//! `Drop`, and aborting from another thread ([`AbortHandle`], [`Watchdog`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use cudarc::driver::CudaContext;

use crate::base::error::{Error, Result};
use crate::base::state::{CommOp, CommState};
use crate::comm::Comm;
use crate::sys;

impl Comm {
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
    /// `ncclCommFinalize` waits for every CUDA graph that captured this
    /// communicator's calls to be destroyed: destroy those graphs first (a
    /// communicator dropped instead is aborted on a thread of its own,
    /// which waits for them in the background).
    ///
    /// With a [`Config::timeout`](crate::Config::timeout) the close is
    /// bounded: a blocking communicator's finalize and destroy together run
    /// on a thread of its own and are left there after the timeout
    /// (`Timeout`, op `ncclCommFinalize`; what the communicator holds is
    /// released when they return); a non-blocking one's finalize is waited
    /// for up to the timeout, then its destroy the same way (op
    /// `ncclCommDestroy`). Without a timeout they are waited for in full, as
    /// for a child of split or shrink taken while its parent showed an older
    /// error (see `abort`).
    ///
    /// # Errors
    /// NCCL's error from finalizing (e.g. a peer died) or destroying, or
    /// `Timeout` for a non-blocking communicator that outlasts its configured
    /// timeout or a destroy that does; `WrongState`.
    pub fn finalize(self) -> Result<()> {
        crate::base::thread::not_in_group("finalize")?;
        self.allow("finalize", CommOp::Finalize)?;
        let _ = self.ctx.bind_to_thread();
        if self.state.get() == CommState::Revoked {
            // revoked and settled: nothing to flush, and finalize after
            // revoke is invalid in NCCL
            return self.abort();
        }
        if let (true, Some(limit), None) = (self.blocking, self.timeout, &self.linger) {
            // a blocking finalize waits for the peers' work and for the
            // graphs that captured this communicator's calls: bounded on a
            // thread of its own, with the destroy after it
            let ctx = self.ctx.clone();
            let (raw, done) = self.into_parts();
            // SAFETY: valid (live: `allow` refused the other states above),
            // owned and not used afterwards.
            return unsafe {
                close_within(
                    raw,
                    Some(ctx),
                    done,
                    limit,
                    "ncclCommFinalize",
                    finalize_destroy,
                )
            };
        }
        // SAFETY: valid communicator, used by this thread only.
        let r = unsafe { sys::ncclCommFinalize(self.raw.get()) };
        if let Err(e) = self.settle("ncclCommFinalize", r) {
            drop(self); // aborts
            return Err(e);
        }
        if self.linger.is_some() {
            // a child whose creation may have failed: flushed, and then
            // released as its drop would, after its parent (`release_raw`)
            drop(self);
            return Ok(());
        }
        let (timeout, ctx) = (self.timeout, self.ctx.clone());
        let (raw, done) = self.into_parts();
        match timeout {
            // SAFETY: a valid communicator, finalized (its operations are
            // done), owned and not used afterwards.
            Some(limit) => unsafe {
                close_within(raw, Some(ctx), done, limit, "ncclCommDestroy", destroy)
            },
            None => {
                // SAFETY: as above; destroy frees it (from NCCL 2.31.2 it
                // may also wait at a barrier with the peers, see above).
                let r = unsafe { nccl!(ncclCommDestroy(raw)) };
                done();
                r
            }
        }
    }

    /// Stops all operations and frees the communicator at once
    /// (`ncclCommAbort`), without waiting for peers.
    ///
    /// `ncclCommAbort` waits for every CUDA graph that captured this
    /// communicator's calls to be destroyed, and on NCCL 2.23 – 2.26.1 it can
    /// block forever after a peer died. So it runs on a thread of its own,
    /// is waited for at most 3 s, and is then
    /// left to that thread (logged; see `docs/versions.md`), unless a
    /// non-blocking operation is still in flight (then NCCL's job must be
    /// joined before its pointers are freed, and the abort is waited for in
    /// full). Called (or dropped) while a group is open on this thread, the
    /// abort runs on a thread of its own and is waited for: inside a group
    /// NCCL would only start it. A child of split or shrink taken while its
    /// parent still showed an older error (its creation may have failed, and
    /// NCCL may still point the parent at its abort flag) is aborted only
    /// once the parent is released or makes another child: until then its
    /// work goes on, and this returns at once.
    ///
    /// # Errors
    /// NCCL's error from aborting (the communicator is gone either way; an
    /// abort left to its thread logs it instead).
    pub fn abort(self) -> Result<()> {
        if self.linger.is_some() {
            // a child whose creation may have failed: its abort waits for
            // its parent's (see `release_raw`), as its drop does
            drop(self);
            return Ok(());
        }
        let ctx = self.ctx.clone();
        let (raw, done) = self.into_parts();
        if raw.is_null() {
            return Ok(()); // already aborted
        }
        // the abort runs on a thread of its own and may be left there (see
        // `abort_raw`): then NCCL's error, if any, is logged there
        let result = Arc::new(AtomicI32::new(NOT_RETURNED));
        // SAFETY: valid communicator, owned and not used afterwards.
        if !unsafe { abort_raw_with(raw, Some(ctx), done, &result) } {
            return Ok(());
        }
        match result.load(Ordering::Acquire) {
            NOT_RETURNED => Ok(()),
            r => crate::base::call::check("ncclCommAbort", sys::ncclResult_t(r as u32)),
        }
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
        if crate::base::thread::in_group() {
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
        unsafe { self.release_raw(self.raw.replace(std::ptr::null_mut())) };
        self.state.set(CommState::Aborted);
        self.abort.store(true, Ordering::Relaxed);
        Error::Aborted { op }
    }

    /// Whether the communicator has been aborted (by [`Comm::wait_or_abort`], a
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
}

/// Aborts `raw` (`ncclCommAbort`) unless it is null; a failure is logged.
/// Abort does not wait on peers. `done` runs once `ncclCommAbort` has
/// returned (what NCCL held is then released): on this thread, or, see
/// below, on the thread the abort was left to. For a null `raw` it is
/// dropped unrun: whoever took the handle closes what it holds.
///
/// On NCCL 2.23.x – 2.26.1 `ncclCommAbort` can block forever: it joins
/// NCCL's proxy progress thread, whose loop (`ncclProxyProgress`, reworked in
/// 2.23.4) stopped checking the abort flag, and which spins while a network
/// operation is in flight, as when a peer died mid-collective (2.26.2 put the
/// check back: "Fixes to ncclCommAbort"). Seen on 2.23.4, 2.24.3 and 2.25.1
/// with a peer killed and with a peer that never took part. NCCL's threads of
/// a communicator left so keep running, and the process's exit waits for
/// them, bounded ([`in_flight`]). And every release's `ncclCommAbort` waits
/// for the CUDA graphs that captured the communicator's calls to be
/// destroyed (`commDestroySync` polls until `localPersistentRefs` is 0): a
/// communicator dropped before such a graph would block forever.
///
/// So, when nothing of NCCL's may still write through this process's
/// pointers (no non-blocking operation in flight: see [`may_leave_abort`]),
/// the abort runs on a thread of its own and is waited for at most
/// [`ABORT_WAIT`]: NCCL sets the abort flag first, so its kernels stop and
/// the streams drain; if it has not returned by then it is left to that
/// thread (logged), `done` with it. Returns whether the abort returned
/// before this function did.
///
/// A thread of its own first makes `ctx` (the communicator's CUDA context)
/// current: NCCL's group end saves and restores the runtime's current
/// device, which on a fresh thread would make GPU 0's primary context.
///
/// # Safety
/// `raw` is null or a valid communicator that the caller owns, that no other
/// thread is using, and that nobody uses again.
pub(crate) unsafe fn abort_raw(
    raw: sys::ncclComm_t,
    ctx: Option<Arc<CudaContext>>,
    done: impl FnOnce() + Send + 'static,
) -> bool {
    // SAFETY: as the caller promises.
    unsafe { abort_raw_with(raw, ctx, done, &Arc::default()) }
}

/// Makes `ctx` current on this (new) thread, where given.
fn bind(ctx: &Option<Arc<CudaContext>>) {
    if let Some(c) = ctx {
        if let Err(e) = c.bind_to_thread() {
            log::warn!("binding the communicator's CUDA context to the closing thread: {e}");
        }
    }
}

/// [`abort_raw`], storing `ncclCommAbort`'s result in `result` once it
/// returns (on whichever thread).
///
/// # Safety
/// As [`abort_raw`].
unsafe fn abort_raw_with(
    raw: sys::ncclComm_t,
    ctx: Option<Arc<CudaContext>>,
    done: impl FnOnce() + Send + 'static,
    result: &Arc<AtomicI32>,
) -> bool {
    if raw.is_null() {
        return true;
    }
    if crate::base::thread::in_group() {
        return abort_outside_group(Owned(raw), ctx, done, result.clone());
    }
    // SAFETY: valid, owned by the caller, used by no other thread.
    let leave = unsafe { may_leave_abort(raw) };
    if !leave {
        // SAFETY: as the caller promises.
        unsafe { abort_logged(raw, result) };
        done();
        return true;
    }
    let owned = Owned(raw);
    let theirs = result.clone();
    let work = move || {
        let owned = owned;
        bind(&ctx);
        // SAFETY: the caller's promises moved here with `raw`: owned, used
        // by no other thread (this one no longer touches it), never used again.
        unsafe { abort_logged(owned.0, &theirs) };
    };
    let returned = match bounded(work, Box::new(done), ABORT_WAIT) {
        Ok(returned) => returned,
        Err(done) => {
            // no thread: the closure was dropped unrun, `raw` is still ours
            // SAFETY: as the caller promises.
            unsafe { abort_logged(raw, result) };
            done();
            return true;
        }
    };
    if !returned {
        if abort_may_hang() {
            log::error!(
                "ncclCommAbort has not returned after {ABORT_WAIT:?}: NCCL 2.23 - 2.26.1 can block \
                 in it forever while a network operation is in flight (fixed in 2.26.2), and every \
                 NCCL waits in it for the CUDA graphs that captured the communicator's calls to be \
                 destroyed; the communicator is left to thread nccl-abort, and what it holds is \
                 released if it ever returns"
            );
        } else {
            log::warn!(
                "ncclCommAbort has not returned after {ABORT_WAIT:?} (NCCL waits in it for the \
                 CUDA graphs that captured the communicator's calls to be destroyed, and a large \
                 communicator takes long to tear down): it is left to thread nccl-abort, and \
                 what the communicator holds is released when it returns"
            );
        }
    }
    returned
}

/// `ncclCommDestroy`, as [`close_within`]'s step.
///
/// # Safety
/// `raw` is a valid, finalized communicator, owned and never used again.
unsafe fn destroy(raw: sys::ncclComm_t) -> (&'static str, sys::ncclResult_t) {
    // SAFETY: as the caller promises.
    ("ncclCommDestroy", unsafe { sys::ncclCommDestroy(raw) })
}

/// `ncclCommFinalize`, then `ncclCommDestroy` (or `ncclCommAbort` when the
/// finalize failed), as [`close_within`]'s step: what fails first is named.
///
/// # Safety
/// `raw` is a valid blocking communicator, owned and never used again.
unsafe fn finalize_destroy(raw: sys::ncclComm_t) -> (&'static str, sys::ncclResult_t) {
    // SAFETY: as the caller promises; blocking, so finalize returns with its
    // work done, and the communicator is freed exactly once after it.
    unsafe {
        let mut r = sys::ncclCommFinalize(raw);
        // in progress: NCCL made it non-blocking after all (the variable
        // changed after NCCL read it): wait for it to settle (this thread is
        // bounded by its caller), then destroy
        while r == sys::ncclResult_t::ncclInProgress {
            std::thread::sleep(Duration::from_micros(100));
            let mut state = sys::ncclResult_t::ncclSuccess;
            let q = sys::ncclCommGetAsyncError(raw, &mut state);
            r = if q == sys::ncclResult_t::ncclSuccess {
                state
            } else {
                q
            };
        }
        if r != sys::ncclResult_t::ncclSuccess {
            let _ = sys::ncclCommAbort(raw);
            return ("ncclCommFinalize", r);
        }
        ("ncclCommDestroy", sys::ncclCommDestroy(raw))
    }
}

/// Runs `close` (which frees `raw`) on a thread of its own (`nccl-abort`),
/// waits for it at most `limit` and then leaves it there (`Timeout` for
/// `op`); `done` runs once it has returned, as for an abort ([`bounded`]).
/// Without a thread it runs here, unbounded.
///
/// # Safety
/// As `close`'s: `raw` valid, owned and never used again.
unsafe fn close_within(
    raw: sys::ncclComm_t,
    ctx: Option<Arc<CudaContext>>,
    done: impl FnOnce() + Send + 'static,
    limit: Duration,
    op: &'static str,
    close: unsafe fn(sys::ncclComm_t) -> (&'static str, sys::ncclResult_t),
) -> Result<()> {
    let owned = Owned(raw);
    let outcome = Arc::new(std::sync::Mutex::new(None));
    let theirs = outcome.clone();
    let work = move || {
        let owned = owned;
        bind(&ctx);
        // SAFETY: the caller's promises moved here with the handle; this
        // thread is now its only user.
        let (api, r) = unsafe { close(owned.0) };
        // stored before anything that could panic (the logger)
        *theirs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((api, r));
        if r != sys::ncclResult_t::ncclSuccess {
            log::error!("{api} failed with code {}", r.0);
        }
    };
    match bounded(work, Box::new(done), limit) {
        Ok(true) => {
            let got = outcome
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            // none: the close panicked before it had NCCL's answer
            let (api, r) = got.unwrap_or((op, sys::ncclResult_t::ncclInternalError));
            crate::base::call::check(api, r)
        }
        Ok(false) => {
            log::warn!(
                "{op} has not returned after {limit:?} (it waits for the peers and for the CUDA \
                 graphs that captured the communicator's calls): it is left to thread nccl-abort, \
                 and what the communicator holds is released when it returns"
            );
            Err(Error::Timeout { op, after: limit })
        }
        Err(done) => {
            // no thread: the closure was dropped unrun, `raw` is still ours
            // SAFETY: as the caller promises.
            let (api, r) = unsafe { close(raw) };
            done();
            crate::base::call::check(api, r)
        }
    }
}

/// Runs `work` on a thread of its own (`nccl-abort`) and waits for it at
/// most `wait`. `done` runs exactly once after `work` has returned: here if
/// it returned in time (`Ok(true)`), else on that thread when it does
/// (`Ok(false)`). If no thread can be made, neither has run: `done` comes
/// back (`Err`).
fn bounded(
    work: impl FnOnce() + Send + 'static,
    done: Box<dyn FnOnce() + Send>,
    wait: std::time::Duration,
) -> std::result::Result<bool, Box<dyn FnOnce() + Send>> {
    let handoff = Arc::new(Handoff {
        state: std::sync::Mutex::new(Left {
            done: Some(done),
            returned: false,
            abandoned: false,
        }),
        cv: std::sync::Condvar::new(),
    });
    let theirs = handoff.clone();
    let spawned = std::thread::Builder::new()
        .name("nccl-abort".into())
        .spawn(move || {
            // a panic in it (a logger's, say) must still mark it returned,
            // run `done` and uncount it; this thread logs only at its end
            let work_panicked =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).is_err();
            let mut left = theirs.lock();
            left.returned = true;
            // the waiter runs `done` itself unless it has given up
            let abandoned = left.abandoned;
            let done = if abandoned { left.done.take() } else { None };
            drop(left);
            theirs.cv.notify_all();
            // a panic in it must not keep the process's exit waiting
            let done_panicked = done.is_some_and(|f| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
            });
            if abandoned {
                in_flight::returned();
            }
            if work_panicked {
                log::error!("a close left to thread nccl-abort panicked");
            }
            if done_panicked {
                log::error!("releasing what an abort left to its thread held panicked");
            }
        });
    if let Err(e) = spawned {
        log::warn!("no thread for ncclCommAbort ({e}); aborting on this one");
        let done = handoff.lock().done.take();
        return Err(done.unwrap_or_else(|| Box::new(|| ())));
    }
    let left = handoff.lock();
    let (mut left, _) = handoff
        .cv
        .wait_timeout_while(left, wait, |l| !l.returned)
        .unwrap_or_else(|p| p.into_inner());
    if left.returned {
        let done = left.done.take();
        drop(left);
        if let Some(f) = done {
            f();
        }
        return Ok(true);
    }
    left.abandoned = true;
    // counted before the lock goes: the thread sees `abandoned` only after
    in_flight::left();
    Ok(false)
}

/// The aborts left to their threads that have not returned yet (and the
/// blocking creations left so, `wait::within`, whose NCCL threads can run
/// into the exit the same way), and what makes the process's exit wait for
/// them.
///
/// On NCCL 2.23 – 2.26.1 an abort left to its thread can return while the
/// process exits. `exit` runs the destructors of the CUDA runtime linked
/// into libnccl, and NCCL's own thread, still tearing the communicator down
/// (`commReclaim`), then calls into the runtime they destroyed: the process
/// ends by SIGSEGV instead of its exit code (seen on 2.23.4 and 2.25.1, H100,
/// 2026-12-07: the backtraces were `exit` → `cuLibraryUnload` on the main
/// thread and `commDestroySync` → `cudaThreadExchangeStreamCaptureMode` on
/// NCCL's). Such an abort is often blocked on a peer that is itself
/// exiting, and goes on only once that peer's sockets close: so survivors
/// that exit together wait for each other. The first abort left to a thread
/// therefore registers an exit handler, which runs before those destructors
/// (handlers run in reverse order of registration, and libnccl registered
/// its own when it was loaded). It waits for every such abort, and what runs
/// after it, at most [`EXIT_WAIT`](in_flight::EXIT_WAIT). If one is still
/// running then, the handler (glibc's `on_exit`, which knows the exit
/// status) flushes C's stdio and ends the process at once with that status
/// (`_exit`), skipping the handlers and library destructors that would run
/// under NCCL's thread; an error is logged first. Where `on_exit` is not
/// there (other C libraries), the handler only waits. With glibc, the
/// object holding the handler and those threads' code (the program, or a
/// shared library built on this crate) is then kept loaded for the rest of
/// the process (`RTLD_NODELETE`), so that a `dlclose` cannot unmap them.
pub(crate) mod in_flight {
    use std::sync::{Condvar, Mutex, Once};
    use std::time::{Duration, Instant};

    /// How long the process's exit waits for aborts (and creations) left
    /// to their threads before it ends the process without the rest of its
    /// exit (see the module). Every such abort has already run for
    /// [`ABORT_WAIT`](super::ABORT_WAIT) or more by then; a creation, for
    /// its caller's timeout.
    pub(crate) const EXIT_WAIT: Duration = Duration::from_secs(2);

    /// The process that counts, and its aborts still running. A child made
    /// by `fork` inherits the count and the `atexit` handler but none of
    /// the threads: it counts from zero ([`Count::of`]).
    static COUNT: Mutex<Count> = Mutex::new(Count::new());
    static CHANGED: Condvar = Condvar::new();
    static HOOK: Once = Once::new();

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe extern "C" {
        fn on_exit(
            f: extern "C" fn(core::ffi::c_int, *mut core::ffi::c_void),
            arg: *mut core::ffi::c_void,
        ) -> core::ffi::c_int;
        static stdout: *mut core::ffi::c_void;
        static stderr: *mut core::ffi::c_void;
        fn ftrylockfile(stream: *mut core::ffi::c_void) -> core::ffi::c_int;
        fn funlockfile(stream: *mut core::ffi::c_void);
        fn fflush_unlocked(stream: *mut core::ffi::c_void) -> core::ffi::c_int;
        fn _exit(status: core::ffi::c_int) -> !;
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    unsafe extern "C" {
        fn atexit(f: extern "C" fn()) -> core::ffi::c_int;
    }

    /// A count kept with the id of the process that counts (this one's
    /// aborts; also the stuck creations and name lookups, through
    /// `wait::ProcessCount`): a child made by `fork` inherits it but none
    /// of the threads it counts, and counts from zero.
    #[derive(Debug, PartialEq)]
    pub(crate) struct Count {
        pid: u32,
        n: usize,
    }

    impl Count {
        /// Zero, of no process yet (no process has id 0).
        pub(crate) const fn new() -> Count {
            Count { pid: 0, n: 0 }
        }

        #[cfg(test)]
        pub(super) fn of_test(pid: u32, n: usize) -> Count {
            Count { pid, n }
        }

        /// The count of process `me`, reset first if it was another
        /// process's (before a `fork`).
        pub(crate) fn of(&mut self, me: u32) -> &mut usize {
            if self.pid != me {
                *self = Count { pid: me, n: 0 };
            }
            &mut self.n
        }
    }

    fn count() -> std::sync::MutexGuard<'static, Count> {
        COUNT.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An abort (or a blocking creation, `wait::within`) was left to its
    /// thread.
    pub(crate) fn left() {
        *count().of(std::process::id()) += 1;
        // nothing in the `Once` logs: a logger that panics there would
        // poison it, and every later call (from drops) would panic
        let mut hooked = None;
        HOOK.call_once(|| {
            // the thread left running and the exit handler are code of the
            // object (program or shared library) this crate is linked into:
            // a `dlclose` must not unmap it under them
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            let pinned = format!("{:?}", pin::object_of(left as *const core::ffi::c_void));
            #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
            let pinned = String::from("not pinned (no glibc)");
            hooked = Some((pinned, register()));
        });
        if let Some((pinned, registered)) = hooked {
            log::debug!("the object holding nccl-rs's exit handler: {pinned}");
            if registered != 0 {
                log::warn!(
                    "registering an exit handler failed: the process's exit will not wait for NCCL's aborts"
                );
            }
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn register() -> core::ffi::c_int {
        // SAFETY: `at_exit` is a plain function that lives as long as the
        // process (`left` pinned the object holding it before this call: a
        // `dlclose` of a library built on this crate leaves it mapped) and
        // never unwinds (no unwrap; a poisoned lock is taken as
        // it is; the logger's call is caught); its argument is unused.
        unsafe { on_exit(at_exit, std::ptr::null_mut()) }
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn register() -> core::ffi::c_int {
        // SAFETY: as above.
        unsafe { atexit(at_exit_wait) }
    }

    /// Keeping the object that holds some code loaded for the rest of the
    /// process (glibc's `RTLD_NODELETE`).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub(super) mod pin {
        use core::ffi::{CStr, c_char, c_int, c_void};

        /// glibc's `Dl_info`.
        #[repr(C)]
        struct DlInfo {
            fname: *const c_char,
            fbase: *mut c_void,
            sname: *const c_char,
            saddr: *mut c_void,
        }

        const RTLD_LAZY: c_int = 0x1;
        const RTLD_NOLOAD: c_int = 0x4;
        const RTLD_NODELETE: c_int = 0x1000;

        unsafe extern "C" {
            fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
            fn dlopen(file: *const c_char, flags: c_int) -> *mut c_void;
        }

        #[derive(Debug, PartialEq, Eq)]
        pub(in super::super) enum Pin {
            /// The shared library holding the code stays loaded.
            Pinned,
            /// No shared library holds the code under an absolute name: it
            /// is the main program's, which is never unloaded.
            MainProgram,
        }

        /// Makes the object holding `addr` stay loaded until the process
        /// ends, whatever `dlclose` calls follow.
        pub(in super::super) fn object_of(addr: *const c_void) -> Pin {
            let mut info = DlInfo {
                fname: core::ptr::null(),
                fbase: core::ptr::null_mut(),
                sname: core::ptr::null(),
                saddr: core::ptr::null_mut(),
            };
            // SAFETY: dladdr only reads the loader's tables and writes the
            // `Dl_info` it is given (glibc's layout, above).
            if unsafe { dladdr(addr, &mut info) } == 0 || info.fname.is_null() {
                return Pin::MainProgram;
            }
            // SAFETY: the loader's NUL-terminated name of the object, valid
            // while the object is loaded, which it is: it holds this code.
            let name = unsafe { CStr::from_ptr(info.fname) };
            // a shared library's name is its absolute path; the main
            // program's is how it was started (argv[0]), and it is never
            // unloaded: a relative name is not looked for at all
            if !name.to_bytes().starts_with(b"/") {
                return Pin::MainProgram;
            }
            // SAFETY: with RTLD_NOLOAD nothing is loaded or initialized: an
            // object already loaded under this name (or file) gets one more
            // reference, which is never dropped, and RTLD_NODELETE, so it
            // stays mapped for the rest of the process; none found is NULL
            // (the main program started by an absolute path: never unloaded).
            let h = unsafe { dlopen(name.as_ptr(), RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE) };
            if h.is_null() {
                Pin::MainProgram
            } else {
                Pin::Pinned
            }
        }
    }

    /// An abort (or creation) left to its thread has returned, and what it
    /// held is released.
    pub(crate) fn returned() {
        let mut c = count();
        let n = c.of(std::process::id());
        *n = n.saturating_sub(1);
        drop(c);
        CHANGED.notify_all();
    }

    /// How many aborts (and creations) left to their threads are still
    /// running in this process.
    pub(crate) fn running() -> usize {
        *count().of(std::process::id())
    }

    /// Waits until no abort left to a thread is still running, at most
    /// `max`; returns how many still are.
    pub(crate) fn wait(max: Duration) -> usize {
        let (end, me) = (Instant::now() + max, std::process::id());
        let mut c = count();
        while *c.of(me) > 0 {
            let now = Instant::now();
            if now >= end {
                break;
            }
            c = match CHANGED.wait_timeout(c, end - now) {
                Ok((c, _)) => c,
                Err(p) => p.into_inner().0,
            };
        }
        *c.of(me)
    }

    /// The exit handler (glibc): waits, then ends the process at once with
    /// `status` if an abort still runs.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    extern "C" fn at_exit(status: core::ffi::c_int, _: *mut core::ffi::c_void) {
        let left = wait(EXIT_WAIT);
        if left == 0 {
            return;
        }
        // the logger is the program's: a panic in it (a thread-local it
        // uses is already gone by now, say) must not unwind out of here
        let _ = std::panic::catch_unwind(|| {
            log::error!(
                "{left} NCCL call(s) left to their threads (aborts, blocking creations, frees of NCCL memory) still running {EXIT_WAIT:?} into the process's exit: ending it now with status {status}, without the rest of its exit handlers and library destructors (NCCL's threads would run on a CUDA runtime they destroy)"
            );
        });
        // SAFETY: `stdout` and `stderr` are glibc's streams, valid for the
        // process's life; each is flushed only if its lock is free (another
        // thread may hold it forever, in a blocked write say: then its
        // buffered output is lost rather than the exit hung). `_exit` ends
        // the process without returning, which an exit handler may do; Rust's
        // own stdout was flushed before `exit` was called (after `main`, and
        // by `std::process::exit`).
        unsafe {
            for f in [stdout, stderr] {
                if ftrylockfile(f) == 0 {
                    fflush_unlocked(f);
                    funlockfile(f);
                }
            }
            _exit(status);
        }
    }

    /// The exit handler elsewhere: waits only.
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    extern "C" fn at_exit_wait() {
        let _ = wait(EXIT_WAIT);
    }
}

/// What [`bounded`] and the thread it leaves `work` to share: `done`
/// runs exactly once, on the waiter if the abort returned in time, else on
/// that thread when it returns.
struct Handoff {
    state: std::sync::Mutex<Left>,
    cv: std::sync::Condvar,
}

struct Left {
    done: Option<Box<dyn FnOnce() + Send>>,
    /// `ncclCommAbort` has returned.
    returned: bool,
    /// The waiter gave up: the thread runs `done`.
    abandoned: bool,
}

impl Handoff {
    /// The state, also after a panic elsewhere (the flags stay meaningful).
    fn lock(&self) -> std::sync::MutexGuard<'_, Left> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Comm {
    /// The handle, and what releases the rest once NCCL has destroyed or
    /// aborted it ([`Comm::on_release`]). `self` goes with a null handle:
    /// its `Drop` aborts nothing and leaves the registry open.
    fn into_parts(self) -> (sys::ncclComm_t, impl FnOnce() + Send + 'static) {
        let done = self.on_release();
        (self.raw.replace(std::ptr::null_mut()), done)
    }

    /// What runs once the communicator's destroy or abort has returned: its
    /// parked registrations are freed ([`Registry::close`](crate::comm::registry::Registry::close)),
    /// with its CUDA context current (this may be another thread). It holds
    /// the context and the name (NCCL keeps a pointer to it) until then, so
    /// that both outlive an abort left to a thread of its own.
    fn on_release(&self) -> impl FnOnce() + Send + use<> {
        let (registry, ctx, name) = (self.registry.clone(), self.ctx.clone(), self.name.clone());
        let orphans = self.orphans.clone();
        move || {
            if let Err(e) = ctx.bind_to_thread() {
                log::warn!("freeing a communicator's registrations without its CUDA context: {e}");
            }
            registry.close();
            // NCCL no longer writes through this communicator: its
            // children that waited for that are aborted now
            release_orphans(&orphans);
            drop(ctx);
            drop(name);
        }
    }

    /// Aborts `raw` (this communicator's handle, taken out of it) and then
    /// runs [`Comm::on_release`]; for a child still being taken from NCCL,
    /// or one whose creation may have failed (`linger`: see [`Orphans`]),
    /// both wait for the parent's release instead. `Comm::abort` and
    /// `Comm::finalize` come here too for such a child.
    ///
    /// # Safety
    /// As [`abort_raw`].
    unsafe fn release_raw(&self, raw: sys::ncclComm_t) {
        match &self.linger {
            // SAFETY: as the caller promises.
            Some(parent) => unsafe {
                orphan(parent, raw, Some(self.ctx.clone()), self.on_release())
            },
            // SAFETY: as the caller promises.
            None => unsafe {
                abort_raw(raw, Some(self.ctx.clone()), self.on_release());
            },
        }
    }
}

/// The children of a communicator whose abort must come after its own.
///
/// While a child's creation (split, shrink) has not succeeded, NCCL keeps a
/// pointer to the child's abort flag in the parent (`childAbortFlag`, set by
/// `ncclCommSplit`/`ncclCommShrink` and cleared only when the child's
/// initialization succeeds: `init.cc`, every supported release), and the
/// parent's abort writes through it (`setCommAbortFlags`; NCCL's group jobs
/// copy it too). Aborting such a child frees that flag, so the parent's
/// later abort would write freed memory. A child whose creation failed,
/// timed out (the parent aborted first, whose abort may be left to its
/// thread), or that was made but could not be taken (its rank or size
/// unreadable) is therefore handed to its parent's list, never to a
/// caller, and aborted
/// once the parent's own abort or destroy has returned (its
/// [`Comm::on_release`]), or once a later child of the parent has been
/// created (NCCL then no longer points to the earlier ones); after the
/// parent's release a child handed over is aborted at once. A parent whose
/// abort never returns (left to its thread) never releases them: they are
/// leaked, as that parent is.
///
/// A child taken although the parent's state still showed the error it had
/// before the call (NCCL may keep reporting it after a job that succeeded,
/// so such a child is handed to the caller as made), or one not of the rank
/// and size asked, may have failed all the same: it keeps its parent's list
/// for its whole life (`linger`), so its abort, when it is dropped, also
/// waits for the parent's (or a later child's creation).
#[derive(Default)]
pub(crate) struct Orphans {
    /// The parent has been released: abort at once.
    closed: bool,
    /// The aborts waiting for it.
    waiting: Vec<Box<dyn FnOnce() + Send>>,
}

/// A communicator's [`Orphans`], shared with its children.
pub(crate) type OrphanList = Arc<std::sync::Mutex<Orphans>>;

impl std::fmt::Debug for Orphans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orphans")
            .field("closed", &self.closed)
            .field("waiting", &self.waiting.len())
            .finish()
    }
}

/// Hands `raw`, a child of the communicator that owns `list`, to that list
/// (see [`Orphans`]): aborted, then `done` run, once the parent has been
/// released, or now if it already has been. A null `raw` aborts nothing
/// (`done` is dropped unrun, as [`abort_raw`] does).
///
/// # Safety
/// As [`abort_raw`].
pub(crate) unsafe fn orphan(
    list: &OrphanList,
    raw: sys::ncclComm_t,
    ctx: Option<Arc<CudaContext>>,
    done: impl FnOnce() + Send + 'static,
) {
    if raw.is_null() {
        return;
    }
    let owned = Owned(raw);
    let job = move || {
        let owned = owned;
        // SAFETY: the caller's promises moved here with the handle.
        unsafe { abort_raw(owned.0, ctx, done) };
    };
    defer_or_run(list, Box::new(job));
}

/// Adds `job` to the list, or runs it now if the list is closed.
fn defer_or_run(list: &OrphanList, job: Box<dyn FnOnce() + Send>) {
    let mut l = list.lock().unwrap_or_else(|p| p.into_inner());
    if l.closed {
        drop(l);
        job();
    } else {
        l.waiting.push(job);
    }
}

/// Runs what waited in the list, in order, and leaves it open: the
/// parent made a child since, so NCCL no longer points to the earlier ones.
pub(crate) fn release_earlier_orphans(list: &OrphanList) {
    let waiting = std::mem::take(&mut list.lock().unwrap_or_else(|p| p.into_inner()).waiting);
    for job in waiting {
        job();
    }
}

/// Closes the list and runs what waited in it, in order.
fn release_orphans(list: &OrphanList) {
    let waiting = {
        let mut l = list.lock().unwrap_or_else(|p| p.into_inner());
        l.closed = true;
        std::mem::take(&mut l.waiting)
    };
    for job in waiting {
        job();
    }
}

/// [`abort_raw`] while this thread has a group open: `ncclCommAbort` opens
/// and ends a group of its own around its work, so inside the caller's it
/// only sets the abort flag and leaves the teardown to the caller's
/// `ncclGroupEnd` (NCCL's `init.cc`, every supported release), and `done`
/// would free what NCCL still holds. A thread of its own has no group open:
/// the abort runs there in full, and this one waits for it (as
/// [`abort_raw`] would: bounded on the releases whose abort can hang). If
/// no thread can be made, the communicator and what `done` would free are
/// leaked (logged) rather than freed too early.
fn abort_outside_group(
    owned: Owned,
    ctx: Option<Arc<CudaContext>>,
    done: impl FnOnce() + Send + 'static,
    result: Arc<AtomicI32>,
) -> bool {
    // held outside the thread's closure: if no thread can be made, std
    // drops the closure unrun, and `done` must not be dropped with it (its
    // captures would free what NCCL still uses)
    let slot = Arc::new(std::sync::Mutex::new(Some((owned, done))));
    let theirs = slot.clone();
    let aborted = outside_group(move || {
        let taken = theirs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some((owned, done)) = taken else {
            return false;
        };
        // SAFETY: `abort_raw`'s caller's promises moved here with the handle
        // (this thread is now its only user), and no group is open here.
        unsafe { abort_raw_with(owned.0, ctx, done, &result) }
    });
    aborted.unwrap_or_else(|e| {
        let left = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // never run, never dropped: the communicator and what it holds stay
        std::mem::forget(left);
        log::error!("no thread to abort a communicator dropped inside a group ({e}): it is leaked");
        false
    })
}

/// Runs `f` on a new thread (`nccl-abort`), where no group is open, and
/// waits for it. If no thread can be made, `f` is dropped unrun.
fn outside_group<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> std::io::Result<R> {
    #[cfg(test)]
    if tests::NO_THREAD.get() {
        drop(f); // as `spawn` does when it fails
        return Err(std::io::Error::other("no thread (test)"));
    }
    let t = std::thread::Builder::new()
        .name("nccl-abort".into())
        .spawn(f)?;
    t.join()
        .map_err(|_| std::io::Error::other("the abort thread panicked"))
}

/// `ncclCommAbort`, its result stored in `result`, its failure logged.
///
/// # Safety
/// As [`abort_raw`], `raw` not null.
unsafe fn abort_logged(raw: sys::ncclComm_t, result: &AtomicI32) {
    // SAFETY: as the caller promises.
    let r = unsafe { sys::ncclCommAbort(raw) };
    result.store(r.0 as i32, Ordering::Release);
    if r != sys::ncclResult_t::ncclSuccess {
        log::error!("ncclCommAbort failed with code {}", r.0);
    }
}

/// `abort_raw_with`'s result before `ncclCommAbort` has returned.
const NOT_RETURNED: i32 = -1;

/// A communicator handed to the thread that aborts it.
struct Owned(sys::ncclComm_t);
// SAFETY: NCCL's communicators may be used from any thread, one at a time;
// `abort_raw`'s caller gives this one up (nobody else uses it again).
unsafe impl Send for Owned {}

/// How long [`abort_raw`] waits for an abort it may leave to a thread of
/// its own: longer than an abort takes without a hang or a live graph
/// (about a second on NCCL 2.23 – 2.26.1, seen on the H100), short enough
/// for a deadline a survivor still meets.
pub(crate) const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How many aborts left to their threads (and blocking creations left so)
/// may still be running inside NCCL before a new communicator is refused
/// ([`Error::AbortsRunning`]). Each holds NCCL's threads and the
/// communicator's GPU memory until NCCL lets it go, so a loop that keeps
/// making and dropping communicators whose aborts cannot finish (a CUDA graph
/// still holds them; NCCL 2.23 – 2.26.1 after a lost peer) stops here
/// instead of growing without bound. The refusal is this rank's alone: in a
/// collective creation (split, shrink, grow) the other ranks wait for it as
/// for any rank that fails before the call, up to their own timeouts.
pub const MAX_ABORTS_RUNNING: usize = 8;

/// Refuses a new communicator (`op`) while [`MAX_ABORTS_RUNNING`] aborts
/// left to their threads are still running.
pub(crate) fn admit(op: &'static str) -> Result<()> {
    let running = in_flight::running();
    if running >= MAX_ABORTS_RUNNING {
        return Err(Error::AbortsRunning { op, running });
    }
    Ok(())
}

/// Whether the libnccl in use has the abort that can block forever
/// (its version cached): see [`abort_may_hang_on`].
fn abort_may_hang() -> bool {
    crate::base::runtime::runtime_is(abort_may_hang_on)
}

/// NCCL 2.23.0 up to 2.26.2: `ncclProxyProgress` runs while network
/// operations are active without reading the abort flag (2.22.3's loop reads
/// it; 2.23.4 dropped it; 2.26.2 restored it).
pub(crate) fn abort_may_hang_on(v: crate::base::version::Version) -> bool {
    use crate::base::version::Version;
    v >= Version::new(2, 23, 0) && v < Version::new(2, 26, 2)
}

/// Whether an abort of `raw` may be left unfinished: only when no
/// non-blocking operation of it is in flight (`ncclCommGetAsyncError` is not
/// `ncclInProgress`). Such an operation's job (a non-blocking group's launch,
/// creation, split) still writes through pointers this process gave it (a
/// child's slot, the buffers it enqueues), and this crate frees those only
/// once the abort has joined that job; a blocking communicator's calls have
/// all returned, leaving only kernels, which stop at the abort flag.
///
/// # Safety
/// `raw` is a valid communicator used by no other thread.
unsafe fn may_leave_abort(raw: sys::ncclComm_t) -> bool {
    let mut state = sys::ncclResult_t::ncclSuccess;
    // SAFETY: valid communicator, one int written through a valid pointer.
    let r = unsafe { sys::ncclCommGetAsyncError(raw, &mut state) };
    r == sys::ncclResult_t::ncclSuccess && state != sys::ncclResult_t::ncclInProgress
}

impl Drop for Comm {
    /// Aborts the communicator, in whatever state (see the type's
    /// documentation for why not destroy). Never panics; a failure is
    /// logged. The abort is waited for at most a few seconds, then left to a
    /// thread of its own (a CUDA graph that captured its calls and is still
    /// alive, NCCL 2.23 – 2.26.1's hang), unless a non-blocking operation is
    /// still in flight (see [`Comm::abort`]).
    fn drop(&mut self) {
        // SAFETY: null or valid, owned, used by this thread only (a `&mut`),
        // and never used again (now null). A communicator used in an open
        // group cannot be dropped (the group borrows it until its end); one
        // dropped while another group is open is aborted outside it
        // (`abort_raw`).
        unsafe { self.release_raw(self.raw.replace(std::ptr::null_mut())) };
    }
}

/// Lets another thread abort a communicator: for a watchdog, or to unblock a
/// rank waiting on a peer that is gone. `Send + Sync + Clone`.
///
/// [`AbortHandle::abort`] only *requests* the abort; the thread that owns the
/// [`Comm`] carries it out (`ncclCommAbort`) in its next call, or within about
/// a millisecond while it waits in [`Comm::wait_or_abort`] or for a non-blocking
/// operation. Aborting from the owning thread alone keeps the communicator
/// from being freed under a call in progress. A thread blocked elsewhere (in
/// cudarc's `synchronize`, say) is not reached: wait with [`Comm::wait_or_abort`]
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
    ///
    /// # Errors
    /// `InvalidArgument` (arg `thread`) when the system refuses a thread for it.
    pub fn abort_after(&self, deadline: Duration) -> Result<Watchdog> {
        let handle = self.clone();
        let cancel = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let c = cancel.clone();
        let thread = std::thread::Builder::new()
            .name("nccl-rs-watchdog".into())
            .spawn(move || {
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
            })
            .map_err(|e| {
                Error::invalid(
                    "abort_after",
                    "thread",
                    "a thread for the watchdog",
                    e.to_string(),
                )
            })?;
        Ok(Watchdog {
            cancel,
            thread: Some(thread),
        })
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

#[cfg(test)]
mod tests {
    use super::{
        Owned, abort_may_hang_on, abort_outside_group, abort_raw, bounded, in_flight, outside_group,
    };
    use crate::base::version::Version;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    std::thread_local! {
        /// `outside_group` fails as if no thread could be made.
        pub(super) static NO_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Dropped when what a release would free is freed.
    struct Freed(Arc<AtomicUsize>);
    impl Drop for Freed {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// With no thread for an abort inside a group, what the communicator's
    /// release would free is leaked, not dropped unrun with the closure
    /// that `spawn` gives up (it would free memory NCCL still uses).
    #[test]
    fn no_thread_for_an_abort_in_a_group_leaks_what_it_holds() {
        let freed = Arc::new(AtomicUsize::new(0));
        let ran = Arc::new(AtomicUsize::new(0));
        let held = Freed(freed.clone());
        let ran2 = ran.clone();
        let done = move || {
            let _held = &held;
            ran2.fetch_add(1, Ordering::SeqCst);
        };
        let result = Arc::new(std::sync::atomic::AtomicI32::new(0));
        NO_THREAD.set(true);
        let aborted = abort_outside_group(Owned(std::ptr::null_mut()), None, done, result);
        NO_THREAD.set(false);
        assert!(!aborted);
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "release ran without an abort"
        );
        assert_eq!(
            freed.load(Ordering::SeqCst),
            0,
            "what NCCL may use was freed"
        );
        // the control: with a thread, the closure reaches it (a null
        // handle is already aborted: its release is dropped there)
        let held = Freed(freed.clone());
        let done = move || {
            let _held = held;
        };
        let result = Arc::new(std::sync::atomic::AtomicI32::new(0));
        assert!(abort_outside_group(
            Owned(std::ptr::null_mut()),
            None,
            done,
            result
        ));
        assert_eq!(freed.load(Ordering::SeqCst), 1);
    }

    /// A close whose thread panics (a logger's panic, say) still counts as
    /// returned, runs what its release holds, and is an error, not a
    /// success; an abort's panicking work leaves nothing counted either.
    #[test]
    fn a_panicking_close_is_an_error_and_is_released() {
        unsafe fn panics(_: crate::sys::ncclComm_t) -> (&'static str, crate::sys::ncclResult_t) {
            panic!("test: the close panics")
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let ran2 = ran.clone();
        // SAFETY: `panics` never touches the (null) handle.
        let r = unsafe {
            super::close_within(
                std::ptr::null_mut(),
                None,
                move || {
                    ran2.fetch_add(1, Ordering::SeqCst);
                },
                Duration::from_secs(5),
                "ncclCommDestroy",
                panics,
            )
        };
        assert!(r.is_err(), "a panicked close reported {r:?}");
        assert_eq!(ran.load(Ordering::SeqCst), 1, "its release did not run");
        // the same through `bounded` left to its thread: its release runs
        // (and then it is uncounted) when the panicking work ends
        let ran3 = ran.clone();
        let left = bounded(
            || {
                std::thread::sleep(Duration::from_millis(100));
                panic!("test: the abort panics")
            },
            Box::new(move || {
                ran3.fetch_add(1, Ordering::SeqCst);
            }),
            Duration::from_millis(10),
        );
        assert_eq!(left.ok(), Some(false));
        let t = std::time::Instant::now();
        while ran.load(Ordering::SeqCst) < 2 {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the release never ran"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// New communicators are refused while too many aborts are left
    /// running, and admitted again once they return.
    #[test]
    fn creation_is_refused_while_too_many_aborts_run() {
        assert!(super::admit("test").is_ok() || in_flight::running() >= super::MAX_ABORTS_RUNNING);
        for _ in 0..super::MAX_ABORTS_RUNNING {
            in_flight::left();
        }
        let refused = super::admit("ncclCommInitRankConfig");
        for _ in 0..super::MAX_ABORTS_RUNNING {
            in_flight::returned();
        }
        match refused {
            Err(crate::Error::AbortsRunning { op, running }) => {
                assert_eq!(op, "ncclCommInitRankConfig");
                assert!(running >= super::MAX_ABORTS_RUNNING);
            }
            other => panic!("not refused: {other:?}"),
        }
        // other tests' aborts may still run, but not this many
        assert!(super::admit("test").is_ok());
    }

    /// Where the child's earlier exit handler (standing for libnccl's
    /// destructors, registered before any abort) writes its mark.
    static MARK: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

    unsafe extern "C" {
        fn atexit(f: extern "C" fn()) -> core::ffi::c_int;
    }

    extern "C" fn mark() {
        if let Some(p) = MARK.get() {
            let _ = std::fs::write(p, b"ran");
        }
    }

    /// In a child process of this test binary (when `CHILD` is set): an
    /// exit handler registered first, then an abort left to its thread that
    /// takes `abort_ms`, whose `done` writes `<dir>/released`; then
    /// `exit(7)`. In the parent: runs the child; returns its exit code, how
    /// long it took, and whether `released` and the mark were written.
    fn exit_with_abort_in_flight(test: &str, abort_ms: u64) -> (i32, Duration, bool, bool) {
        const CHILD: &str = "NCCL_RS_TEST_EXIT_WAIT_CHILD";
        if let Some(dir) = std::env::var_os(CHILD) {
            let dir = std::path::PathBuf::from(dir);
            MARK.set(dir.join("mark")).unwrap();
            // SAFETY: `mark` is a plain function that never unwinds
            assert_eq!(unsafe { atexit(mark) }, 0);
            let released = dir.join("released");
            let r = bounded(
                move || std::thread::sleep(Duration::from_millis(abort_ms)),
                Box::new(move || {
                    let _ = std::fs::write(&released, b"released");
                }),
                Duration::from_millis(20),
            );
            assert_eq!(r.ok(), Some(false), "the abort was not left to its thread");
            std::process::exit(7);
        }
        let dir = std::env::temp_dir().join(format!(
            "nccl-rs-exit-wait-{}-{abort_ms}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let t0 = std::time::Instant::now();
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "--nocapture", "--test-threads=1"])
            .arg(test)
            .env(CHILD, &dir)
            .status()
            .unwrap();
        let took = t0.elapsed();
        let released = dir.join("released").exists();
        let marked = dir.join("mark").exists();
        let _ = std::fs::remove_dir_all(&dir);
        (status.code().unwrap_or(-1), took, released, marked)
    }

    /// The process's exit waits for an abort left to its thread, and for
    /// what runs after it, then finishes its exit as usual.
    /// A shared library holding the exit handler stays loaded after its
    /// last `dlclose`. glibc's libthread_db (which no program loads unless
    /// it debugs threads) stands in for a library built on this crate: the
    /// control shows that its last `dlclose` unloads it here, then the pin
    /// keeps it. (Its address comes from the loader's map, not `dlsym`,
    /// which would make the test program depend on it.)
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_pinned_library_stays_loaded_after_its_last_dlclose() {
        use core::ffi::{c_char, c_int, c_void};
        use in_flight::pin::{Pin, object_of};
        /// The head of glibc's `struct link_map`.
        #[repr(C)]
        struct LinkMap {
            addr: usize,
            name: *const c_char,
            dynamic: *const c_void,
        }
        unsafe extern "C" {
            fn dlopen(file: *const c_char, flags: c_int) -> *mut c_void;
            fn dlinfo(h: *mut c_void, request: c_int, out: *mut c_void) -> c_int;
            fn dlclose(h: *mut c_void) -> c_int;
        }
        // lazily: it calls functions its user (a debugger) provides
        const LAZY: c_int = 0x1;
        const LOADED_ONLY: c_int = LAZY | 0x4; // RTLD_NOLOAD
        const RTLD_DI_LINKMAP: c_int = 2;
        let lib = c"libthread_db.so.1";
        // SAFETY: glibc's own library, whose initializers do nothing
        // harmful and none of whose functions is called; each handle is
        // closed once; NOLOAD only looks it up; dlinfo writes one pointer,
        // to the loader's map of the library, read while it is loaded.
        unsafe {
            let h = dlopen(lib.as_ptr(), LAZY);
            assert!(!h.is_null(), "{lib:?} (part of glibc) could not be opened");
            assert_eq!(dlclose(h), 0);
            assert!(
                dlopen(lib.as_ptr(), LOADED_ONLY).is_null(),
                "control: {lib:?} stayed loaded without a pin (was it loaded already?)"
            );
            let h = dlopen(lib.as_ptr(), LAZY);
            assert!(!h.is_null());
            let mut map: *const LinkMap = core::ptr::null();
            assert_eq!(dlinfo(h, RTLD_DI_LINKMAP, (&raw mut map).cast()), 0);
            // its dynamic section: an address inside the library
            assert_eq!(object_of((*map).dynamic), Pin::Pinned);
            assert_eq!(dlclose(h), 0);
            assert!(
                !dlopen(lib.as_ptr(), LOADED_ONLY).is_null(),
                "{lib:?} was unloaded despite the pin"
            );
            // this test's own code is the test program's
            let here: fn(Duration) -> usize = in_flight::wait;
            assert_eq!(object_of(here as *const c_void), Pin::MainProgram);
        }
    }

    #[test]
    fn exit_waits_for_aborts_left_to_their_threads() {
        let (code, _, released, marked) = exit_with_abort_in_flight(
            "comm::close::tests::exit_waits_for_aborts_left_to_their_threads",
            600,
        );
        assert_eq!(code, 7, "the child's own exit code");
        assert!(released, "exit did not wait");
        assert!(marked, "the rest of the exit did not run");
    }

    /// An abort still running after `EXIT_WAIT`: the process ends with its
    /// own status then, without the exit handlers registered before the
    /// abort was left (glibc), or after the wait alone (elsewhere).
    #[test]
    fn exit_ends_without_destructors_under_a_stuck_abort() {
        let (code, took, released, marked) = exit_with_abort_in_flight(
            "comm::close::tests::exit_ends_without_destructors_under_a_stuck_abort",
            (in_flight::EXIT_WAIT * 4).as_millis() as u64,
        );
        assert_eq!(code, 7, "the child's own exit code");
        assert!(took >= in_flight::EXIT_WAIT, "exit did not wait: {took:?}");
        assert!(!released, "the abort cannot have returned");
        assert!(
            took < in_flight::EXIT_WAIT * 3,
            "exit waited for the stuck abort: {took:?}"
        );
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(!marked, "the earlier exit handler ran under the abort");
        }
    }

    /// A child handed to its parent's list waits for the parent's release,
    /// then goes in order; once the parent is released, at once.
    #[test]
    fn orphans_wait_for_their_parent_release() {
        let list = super::OrphanList::default();
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..3 {
            let r = ran.clone();
            super::defer_or_run(&list, Box::new(move || r.lock().unwrap().push(i)));
        }
        assert!(
            ran.lock().unwrap().is_empty(),
            "ran before the parent's release"
        );
        // a later child made: the earlier ones go, the list stays open
        super::release_earlier_orphans(&list);
        assert_eq!(*ran.lock().unwrap(), vec![0, 1, 2]);
        let r = ran.clone();
        super::defer_or_run(&list, Box::new(move || r.lock().unwrap().push(9)));
        assert_eq!(ran.lock().unwrap().len(), 3, "still open: it waits");
        super::release_orphans(&list);
        assert_eq!(*ran.lock().unwrap(), vec![0, 1, 2, 9]);
        ran.lock().unwrap().pop();
        let r = ran.clone();
        super::defer_or_run(&list, Box::new(move || r.lock().unwrap().push(3)));
        assert_eq!(
            *ran.lock().unwrap(),
            vec![0, 1, 2, 3],
            "after the release: at once"
        );
        // a null child aborts nothing and drops what would run after it
        let r = ran.clone();
        // SAFETY: a null handle
        unsafe {
            super::orphan(&list, std::ptr::null_mut(), None, move || {
                r.lock().unwrap().push(4)
            })
        };
        assert_eq!(ran.lock().unwrap().len(), 4);
    }

    #[test]
    fn a_forked_child_counts_from_zero() {
        let mut c = in_flight::Count::of_test(10, 2);
        assert_eq!(*c.of(10), 2, "the same process keeps its count");
        assert_eq!(*c.of(11), 0, "a child inherits none of the threads");
        *c.of(11) += 1;
        assert_eq!(c, in_flight::Count::of_test(11, 1));
    }

    #[test]
    fn waiting_for_aborts_in_flight_is_bounded() {
        let (tx, rx) = mpsc::channel::<()>();
        let r = bounded(
            move || {
                let _ = rx.recv();
            },
            Box::new(|| ()),
            Duration::from_millis(10),
        );
        assert_eq!(r.ok(), Some(false));
        let t0 = std::time::Instant::now();
        assert!(in_flight::wait(Duration::from_millis(50)) >= 1);
        assert!(t0.elapsed() >= Duration::from_millis(50));
        tx.send(()).unwrap();
        assert_eq!(in_flight::wait(Duration::from_secs(5)), 0);
    }

    #[test]
    fn a_null_handle_runs_nothing() {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        // SAFETY: a null handle: nothing is aborted
        assert!(unsafe {
            abort_raw(std::ptr::null_mut(), None, move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
        });
        assert_eq!(ran.load(Ordering::SeqCst), 0, "done ran for a null handle");
    }

    #[test]
    fn an_abort_inside_a_group_runs_where_no_group_is_open() {
        // what `abort_raw` does for a handle dropped inside a group: NCCL's
        // abort would be deferred to the group's end on this thread
        crate::base::thread::OPEN.with(|o| o.set(true));
        assert!(crate::base::thread::in_group());
        let (in_group, name) = outside_group(|| {
            (
                crate::base::thread::in_group(),
                std::thread::current().name().map(str::to_owned),
            )
        })
        .unwrap();
        crate::base::thread::OPEN.with(|o| o.set(false));
        assert!(!in_group, "the abort thread had a group open");
        assert_eq!(name.as_deref(), Some("nccl-abort"));
        // and a null handle inside a group still runs nothing
        crate::base::thread::OPEN.with(|o| o.set(true));
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        // SAFETY: a null handle: nothing is aborted
        let returned = unsafe {
            abort_raw(std::ptr::null_mut(), None, move || {
                r.fetch_add(1, Ordering::SeqCst);
            })
        };
        crate::base::thread::OPEN.with(|o| o.set(false));
        assert!(returned);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn work_in_time_runs_done_on_the_waiter() {
        let (tx, rx) = mpsc::channel();
        let here = std::thread::current().id();
        let done = Box::new(move || tx.send(std::thread::current().id()).unwrap());
        assert!(matches!(
            bounded(|| {}, done, Duration::from_secs(5)),
            Ok(true)
        ));
        assert_eq!(
            rx.try_recv().unwrap(),
            here,
            "done ran elsewhere, or not before the return"
        );
    }

    #[test]
    fn work_too_slow_is_left_and_done_runs_once_after_it() {
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        let (tx, rx) = mpsc::channel();
        let (go, wait_go) = mpsc::channel::<()>();
        let returned = bounded(
            move || wait_go.recv().unwrap(),
            Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
                tx.send(()).unwrap();
            }),
            Duration::from_millis(50),
        );
        assert!(matches!(returned, Ok(false)));
        assert_eq!(
            ran.load(Ordering::SeqCst),
            0,
            "done ran before the work returned"
        );
        go.send(()).unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("done never ran");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_abort_that_can_hang_is_2_23_to_2_26_1() {
        let v = |a, b, c| Version::new(a, b, c);
        for hangs in [v(2, 23, 4), v(2, 24, 3), v(2, 25, 1), v(2, 26, 1)] {
            assert!(abort_may_hang_on(hangs), "{hangs}");
        }
        for fine in [
            v(2, 18, 3),
            v(2, 21, 5),
            v(2, 22, 3),
            v(2, 26, 2),
            v(2, 30, 7),
        ] {
            assert!(!abort_may_hang_on(fine), "{fine}");
        }
    }
}
