//! Waiting for what NCCL finishes on its own thread: non-blocking
//! operations that answer `ncclInProgress`, and [`Comm::wait_or_abort`](crate::Comm::wait_or_abort).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::base::call::{check_comm, failure};
use crate::base::error::{Error, NcclCode, Result};
use crate::base::state::CommState;
use crate::comm::Comm;
use crate::comm::close::in_flight::Count;
use crate::sys;

impl Comm {
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

    /// Like [`Comm::settle`](crate::Comm::settle), after an operation on this communicator (a
    /// collective, a group's end): an error NCCL reports (other than refusing
    /// the arguments at once) keeps the communicator,
    /// [`Failed`](crate::CommState::Failed); the timeout or an abort request
    /// while NCCL still works on the call aborts it (see `unsettled`).
    pub(crate) fn settle_op(&self, api: &'static str, r: sys::ncclResult_t) -> Result<()> {
        match NcclCode::from_raw(r) {
            None => Ok(()),
            Some(NcclCode::InProgress) => {
                self.live(api)?;
                // SAFETY: a live communicator of this thread (Comm is !Sync).
                unsafe { settle_raw(self.raw.get(), &self.abort, self.timeout, api) }
                    .map_err(|e| self.unsettled(api, e))
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
    /// As [`Comm::settle_op`](crate::Comm::settle_op), an error or the timeout leaves it `Failed`.
    pub(crate) fn settle_after_group(&self, api: &'static str) -> Result<()> {
        if self.raw.get().is_null() {
            return Err(Error::Aborted { op: api });
        }
        // SAFETY: a live communicator of this thread (Comm is !Sync).
        unsafe { settle_raw(self.raw.get(), &self.abort, self.timeout, api) }
            .map_err(|e| self.unsettled(api, e))
    }

    /// After polling an operation that NCCL answered `ncclInProgress` for
    /// ended in `e`. While NCCL still reports it in progress (the timeout, an
    /// abort request), NCCL's own thread may not have enqueued the kernels
    /// yet and still holds the call's buffers and stream: the caller's
    /// borrows end when this returns, so the communicator is aborted first
    /// (`ncclCommAbort` joins that thread; NCCL 2.23+ launches from it), and
    /// the error says so ([`Error::Timeout`], [`Error::Aborted`]). An error
    /// NCCL reported means its thread is done: the communicator is kept,
    /// [`Failed`](crate::CommState::Failed), for recovery.
    fn unsettled(&self, api: &'static str, e: Error) -> Error {
        match e {
            Error::Timeout { .. } | Error::Aborted { .. } => {
                let aborted = self.abort_now(api);
                match e {
                    Error::Timeout { .. } => e,
                    _ => aborted,
                }
            }
            e => self.failed_with(e),
        }
    }

    /// Marks a live communicator [`Failed`](crate::CommState::Failed) after error
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

    /// Waits until all work queued on `stream` so far is done, for at most
    /// `timeout`, watching the communicator's asynchronous errors (a dead peer)
    /// and abort requests while it waits: the loop NCCL documents in place of
    /// `cudaStreamSynchronize`. On an error, an abort request or the timeout,
    /// the communicator is aborted (which also ends its stuck kernels) and the
    /// error returned. On NCCL 2.23 – 2.26.1, whose abort can block forever
    /// after a peer died, that abort is waited for at most a few seconds and
    /// then left to a thread of its own ([`Comm::abort`](crate::Comm::abort)),
    /// unless a non-blocking operation of the communicator is still in
    /// flight: NCCL's job then holds pointers that are freed only after the
    /// abort has joined it, so it is waited for in full.
    ///
    /// Its own CUDA calls (an event, its queries) can be held up by CUDA:
    /// with `NCCL_CUMEM_ENABLE=0` a dropped [`NcclBuffer`](crate::NcclBuffer)
    /// is freed by `cudaFree`, which waits for the whole device, and CUDA
    /// holds other calls meanwhile; with a kernel stuck on a dead peer that
    /// lasts until the communicator is aborted. There, abort (or drop) a
    /// communicator that may be stuck before dropping its buffers.
    ///
    /// # Errors
    /// [`Error::Nccl`] (e.g. `ncclRemoteError`) for an asynchronous error,
    /// [`Error::Aborted`], [`Error::Timeout`], or a CUDA error.
    pub fn wait_or_abort(
        &self,
        stream: &cudarc::driver::CudaStream,
        timeout: Duration,
    ) -> Result<()> {
        self.wait_impl("wait_or_abort", stream, timeout, false)
    }

    /// Like [`Comm::wait_or_abort`](crate::Comm::wait_or_abort), but a failure keeps the communicator for
    /// recovery instead of aborting it: after an asynchronous error (a dead
    /// peer), a CUDA error or `timeout`, the communicator is
    /// [`Failed`](crate::CommState::Failed) and its work may still be stuck on the
    /// GPU. Then allowed: [`Comm::revoke`](crate::Comm::revoke) (stops that work),
    /// [`Comm::shrink`](crate::Comm::shrink) with [`ShrinkMode::Abort`](crate::ShrinkMode::Abort)
    /// (stops it and leaves the dead out), or abort / drop. An abort request
    /// ([`AbortHandle`](crate::AbortHandle)) still aborts. A `Failed` communicator is not waited
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

    /// The loop of [`Comm::wait_or_abort`](crate::Comm::wait_or_abort); `keep`: on failure mark the communicator
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
}

/// How many blocking creations may still be stuck inside NCCL after their
/// timeouts (see [`Config::timeout`](crate::Config::timeout)) before further
/// ones are refused ([`Error::CreationStuck`]). Creations already running
/// when the limit is reached (one per calling thread: one per GPU, say) may
/// still add to it: running creations are not limited, so that every GPU of
/// a process can create its communicator at once.
pub const MAX_STUCK_CREATIONS: usize = 2;

/// A count of this process's threads of one kind (blocking creations, name
/// lookups), shared between threads; per process as the aborts' count is
/// ([`Count`]): a child made by `fork` counts from zero.
pub(crate) struct ProcessCount(Mutex<Count>);

impl ProcessCount {
    pub(crate) const fn new() -> ProcessCount {
        ProcessCount(Mutex::new(Count::new()))
    }

    /// `f` on the count of process `me` ([`Count::of`]).
    pub(crate) fn of<R>(&self, me: u32, f: impl FnOnce(&mut usize) -> R) -> R {
        f(self.0.lock().unwrap_or_else(PoisonError::into_inner).of(me))
    }

    fn mine<R>(&self, f: impl FnOnce(&mut usize) -> R) -> R {
        self.of(std::process::id(), f)
    }

    /// This process's count.
    pub(crate) fn get(&self) -> usize {
        self.mine(|n| *n)
    }

    /// Counts one more unless `max` are counted already; `Err` with the
    /// count then. The check and the count are one step, so `max` holds
    /// however many threads ask at once.
    #[cfg(any(feature = "bootstrap", test))]
    pub(crate) fn take(&self, max: usize) -> std::result::Result<(), usize> {
        self.mine(|n| {
            if *n >= max {
                return Err(*n);
            }
            *n += 1;
            Ok(())
        })
    }

    /// Counts one more.
    fn add(&self) {
        self.mine(|n| *n += 1);
    }

    /// Counts one less.
    pub(crate) fn release(&self) {
        self.mine(|n| *n = n.saturating_sub(1));
    }
}

/// The blocking creations of [`within`] left to NCCL at their timeouts and
/// not returned yet.
static STUCK: ProcessCount = ProcessCount::new();

/// Runs `f` (a blocking init) on a thread of its own and waits at most
/// `limit` for it: `Timeout` after that, and a communicator that `f` still
/// returns later is dropped (aborted) on that thread.
///
/// NCCL offers no way to abandon a blocking creation from outside (its abort
/// needs the communicator, which only the blocked call may use), so a
/// creation whose peers never come keeps its thread, CUDA context and NCCL
/// state until NCCL gives up. Those are bounded: while
/// [`MAX_STUCK_CREATIONS`] are still blocked, another is refused at once
/// ([`Error::CreationStuck`]) instead of piling up in a retry loop. A
/// non-blocking [`Config`](crate::Config) makes creation abortable instead.
pub(crate) fn within<T: Send + 'static>(
    limit: Duration,
    api: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    within_of(&STUCK, limit, api, f)
}

/// [`within`], its stuck creations counted in `stuck`.
fn within_of<T: Send + 'static>(
    stuck: &'static ProcessCount,
    limit: Duration,
    api: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let n = stuck.get();
    if n >= MAX_STUCK_CREATIONS {
        return Err(Error::CreationStuck { op: api, stuck: n });
    }
    let panicked = move || {
        Error::invalid(
            api,
            "init thread",
            "a result",
            "the thread ended without one (panicked)",
        )
    };
    let (tx, rx) = std::sync::mpsc::channel::<Result<T>>();
    // (finished, abandoned), decided under one lock so that a creation is
    // counted as stuck exactly while its caller has given up and NCCL still
    // holds it
    let state = Arc::new(Mutex::new((false, false)));
    let state2 = state.clone();
    let started = std::thread::Builder::new()
        .name("nccl-init".into())
        .spawn(move || {
            // a panic ends the creation as an error (and its count)
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(panicked()));
            let abandoned = {
                let mut s = state2.lock().unwrap_or_else(PoisonError::into_inner);
                s.0 = true;
                if s.1 {
                    stuck.release();
                }
                s.1
            };
            // nobody waits any more: the returned Comm drops here (aborts)
            let _ = tx.send(r);
            if abandoned {
                crate::comm::close::in_flight::returned();
            }
        });
    if let Err(e) = started {
        return Err(Error::invalid(
            api,
            "thread",
            "a thread for the init",
            e.to_string(),
        ));
    }
    match rx.recv_timeout(limit) {
        Ok(r) => r,
        Err(RecvTimeoutError::Timeout) => {
            {
                let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                if !s.0 {
                    // counted until NCCL returns it
                    s.1 = true;
                    stuck.add();
                    // NCCL's threads of it may run into the process's exit
                    crate::comm::close::in_flight::left();
                    return Err(Error::Timeout {
                        op: api,
                        after: limit,
                    });
                }
            }
            // it finished just now: its result is on its way
            rx.recv().unwrap_or_else(|_| Err(panicked()))
        }
        Err(RecvTimeoutError::Disconnected) => Err(panicked()),
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
        unsafe { nccl!(raw => ncclCommGetAsyncError(raw, &mut state)) }?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn late(d: Duration) -> impl FnOnce() -> Result<Comm> + Send + 'static {
        move || {
            std::thread::sleep(d);
            Err(Error::invalid("test", "x", "y", "z"))
        }
    }

    /// Creations abandoned at their timeout are counted while NCCL holds
    /// them, and refused beyond the bound instead of piling up.
    #[test]
    fn stuck_creations_are_bounded() {
        let ms = Duration::from_millis;
        for _ in 0..MAX_STUCK_CREATIONS {
            let e = within(ms(20), "test", late(ms(600))).unwrap_err();
            assert!(matches!(e, Error::Timeout { .. }), "{e}");
        }
        assert_eq!(STUCK.get(), MAX_STUCK_CREATIONS);
        // the process's exit would wait for them (and end early past that)
        assert!(crate::comm::close::in_flight::wait(Duration::ZERO) >= MAX_STUCK_CREATIONS);
        let t = std::time::Instant::now();
        let e = within(ms(20), "test", late(ms(1))).unwrap_err();
        assert!(
            matches!(
                e,
                Error::CreationStuck {
                    stuck: MAX_STUCK_CREATIONS,
                    ..
                }
            ),
            "{e}"
        );
        assert!(t.elapsed() < ms(20), "refused at once");
        // once NCCL lets go, creations run again
        std::thread::sleep(ms(800));
        assert_eq!(STUCK.get(), 0);
        assert_eq!(
            crate::comm::close::in_flight::wait(ms(2000)),
            0,
            "no longer in flight for the exit"
        );
        let e = within(ms(500), "test", late(ms(1))).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { op: "test", .. }),
            "{e}"
        );
    }

    /// Creations that start at once all run (one per GPU of a process);
    /// once the bound is stuck, the next is refused; a creation that
    /// panics is an error.
    #[test]
    fn creations_at_once_all_run_and_the_stuck_bound_refuses() {
        static C: ProcessCount = ProcessCount::new();
        let ms = Duration::from_millis;
        let n = MAX_STUCK_CREATIONS + 2;
        let go = Arc::new(std::sync::Barrier::new(n));
        let tries: Vec<_> = (0..n)
            .map(|_| {
                let go = go.clone();
                std::thread::spawn(move || {
                    go.wait();
                    within_of(&C, ms(2000), "test", late(ms(50)))
                })
            })
            .collect();
        for t in tries {
            let e = t.join().unwrap().unwrap_err();
            assert!(
                matches!(e, Error::InvalidArgument { op: "test", .. }),
                "{e}"
            );
        }
        assert_eq!(C.get(), 0);
        for _ in 0..MAX_STUCK_CREATIONS {
            let e = within_of(&C, ms(20), "test", late(ms(600))).unwrap_err();
            assert!(matches!(e, Error::Timeout { .. }), "{e}");
        }
        let e = within_of(&C, ms(20), "test", late(ms(1))).unwrap_err();
        assert!(matches!(e, Error::CreationStuck { .. }), "{e}");
        let t = std::time::Instant::now();
        while C.get() > 0 {
            assert!(t.elapsed() < ms(5000), "the stuck creations never returned");
            std::thread::sleep(ms(10));
        }
        let e = within_of(&C, ms(2000), "test", || -> Result<Comm> { panic!("test") }).unwrap_err();
        assert!(e.to_string().contains("panicked"), "{e}");
        assert_eq!(C.get(), 0);
    }

    /// A child made by `fork` while creations are stuck in its parent has
    /// none of their threads: it counts from zero, and creates.
    #[test]
    fn a_forked_child_counts_creations_from_zero() {
        static C: ProcessCount = ProcessCount::new();
        let parent = std::process::id().wrapping_add(1);
        C.of(parent, |n| *n = MAX_STUCK_CREATIONS);
        assert_eq!(
            C.of(parent, |n| *n),
            MAX_STUCK_CREATIONS,
            "the parent keeps its count"
        );
        assert_eq!(C.get(), 0);
        C.of(parent, |n| *n = MAX_STUCK_CREATIONS);
        let e = within_of(&C, Duration::from_secs(2), "test", late(Duration::ZERO)).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { op: "test", .. }),
            "{e}"
        );
        assert_eq!(C.get(), 0);
        // and its own creations are bounded as its parent's were
        let c = ProcessCount::new();
        for _ in 0..MAX_STUCK_CREATIONS {
            assert_eq!(c.take(MAX_STUCK_CREATIONS), Ok(()));
        }
        assert_eq!(c.take(MAX_STUCK_CREATIONS), Err(MAX_STUCK_CREATIONS));
        c.release();
        assert_eq!(c.take(MAX_STUCK_CREATIONS), Ok(()));
    }
}
