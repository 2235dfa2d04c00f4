//! Closing a communicator: the orderly [`Comm::finalize`], [`Comm::abort`],
//! `Drop`, and aborting from another thread ([`AbortHandle`], [`Watchdog`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    /// # Errors
    /// NCCL's error from finalizing (e.g. a peer died), or `Timeout` for a
    /// non-blocking communicator that outlasts its configured timeout;
    /// `WrongState`.
    pub fn finalize(self) -> Result<()> {
        crate::base::thread::not_in_group("finalize")?;
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
        let registry = self.registry.clone();
        let raw = self.into_raw();
        // SAFETY: finalized, so destroy only frees local resources.
        let r = unsafe { nccl!(ncclCommDestroy(raw)) };
        registry.close();
        r
    }

    /// Stops all operations and frees the communicator at once
    /// (`ncclCommAbort`), without waiting for peers.
    ///
    /// # Errors
    /// NCCL's error from aborting (the communicator is gone either way).
    pub fn abort(self) -> Result<()> {
        let registry = self.registry.clone();
        let raw = self.into_raw();
        if raw.is_null() {
            return Ok(()); // already aborted
        }
        // SAFETY: valid communicator, owned and not used afterwards.
        let r = unsafe { nccl!(ncclCommAbort(raw)) };
        registry.close();
        r
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
        unsafe { abort_raw(self.raw.replace(std::ptr::null_mut())) };
        self.registry.close();
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
/// Abort does not wait on peers.
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
        log::error!("ncclCommAbort failed with code {}", r.0);
    }
}

impl Drop for Comm {
    /// Aborts the communicator, in whatever state (see the type's
    /// documentation for why not destroy). Never panics; a failure is
    /// logged.
    fn drop(&mut self) {
        // SAFETY: null or valid, owned, used by this thread only (a `&mut`),
        // and never used again (now null). A communicator used in an open
        // group cannot be dropped (the group borrows it until its end).
        unsafe { abort_raw(self.raw.replace(std::ptr::null_mut())) };
        self.registry.close();
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
