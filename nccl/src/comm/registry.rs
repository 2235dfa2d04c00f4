//! Where a communicator's registrations come back to it.
//!
//! A [`Registration`](crate::Registration) does not borrow its communicator,
//! so that an engine can keep both in one struct. It cannot call NCCL when it
//! is dropped either: NCCL allows one thread at a time per communicator, and
//! a registration may be dropped on any thread. So it *parks* what it holds
//! here (the NCCL handle and the memory, which must stay allocated while it
//! is registered: NCCL finds registrations by address range), and the
//! communicator's own thread releases what is parked at its next
//! registration, explicit deregistration, [`Comm::release_parked`] or close
//! (windows only at the points every rank shares: [`Comm::release_windows`]).
//! Once the communicator is closed (aborted or destroyed), NCCL has dropped
//! every registration with it, and parked or later-dropped memory is simply
//! freed.

use std::any::Any;
use std::sync::{Mutex, PoisonError};

use crate::base::error::{Error, Result};
use crate::comm::Comm;
use crate::sys;

/// Memory parked until its registration ends, type-erased.
pub(crate) trait Parked: Send {
    /// Orders the memory's tracked uses onto its own stream and says,
    /// without blocking, whether that stream is idle (so nothing queued can
    /// still use the memory). `false`: ask again later.
    fn uses_done(&mut self) -> bool;
}

/// A registration waiting to be released by its communicator's thread.
pub(crate) struct Pending {
    /// `ncclCommDeregister`, `ncclCommWindowDeregister` or
    /// `ncclDevCommDestroy`.
    pub(crate) api: &'static str,
    /// Releases `handle` on a live communicator.
    pub(crate) release: unsafe fn(sys::ncclComm_t, *mut core::ffi::c_void) -> sys::ncclResult_t,
    /// NCCL's handle, as an address (it is only handed back to NCCL).
    pub(crate) handle: usize,
    pub(crate) memory: Box<dyn Parked>,
    /// A window: released only where every rank releases it too
    /// ([`Comm::release_windows`]), never whenever its buffer happens to be
    /// idle (see there).
    pub(crate) window: bool,
}

#[derive(Default)]
struct State {
    /// The communicator was aborted or destroyed: NCCL dropped every
    /// registration with it.
    closed: bool,
    pending: Vec<Pending>,
    /// Memory whose deregistration failed: it may still be registered, so it
    /// is neither freed nor handed back before the communicator closes.
    kept: Vec<Box<dyn Any + Send>>,
}

/// Shared by a communicator and its registrations.
#[derive(Default)]
pub(crate) struct Registry {
    state: Mutex<State>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Registry")
            .field("closed", &s.closed)
            .field("pending", &s.pending.len())
            .field("kept", &s.kept.len())
            .finish()
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // the state stays consistent whatever panicked while holding it
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the communicator is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Parks `p` for the communicator's thread; gives it back when the
    /// communicator is closed (then its memory may simply be freed).
    pub(crate) fn park(&self, p: Pending) -> Option<Pending> {
        let mut s = self.lock();
        if s.closed {
            return Some(p);
        }
        s.pending.push(p);
        None
    }

    /// Keeps memory that may still be registered until the communicator
    /// closes.
    pub(crate) fn keep(&self, memory: Box<dyn Any + Send>) {
        let mut s = self.lock();
        if !s.closed {
            s.kept.push(memory);
        }
        // closed: NCCL dropped the registration; `memory` is freed here
    }

    /// How many registrations are parked and how many buffers are kept after
    /// a failed deregistration.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.pending.len(), s.kept.len())
    }

    /// Marks the communicator closed (after `ncclCommAbort` or
    /// `ncclCommDestroy` returned) and frees everything parked or kept.
    pub(crate) fn close(&self) {
        let (pending, kept) = {
            let mut s = self.lock();
            s.closed = true;
            (std::mem::take(&mut s.pending), std::mem::take(&mut s.kept))
        };
        // freed outside the lock: a buffer's drop may wait for its stream,
        // DROP_WAIT for all of them together, not each
        crate::mem::one_wait(|| {
            drop(pending);
            drop(kept);
        });
    }

    fn take(&self) -> Vec<Pending> {
        std::mem::take(&mut self.lock().pending)
    }
}

impl Comm {
    /// Releases the buffer registrations that were dropped since the last
    /// call (see [`Registration`](crate::Registration)): each is
    /// deregistered once the work queued on its buffer is done, and its
    /// memory freed; those still in use stay parked for the next call.
    /// Buffer registration and explicit deregistration call it too; what is
    /// still parked when the communicator closes is freed then. Returns how
    /// many are still parked, windows included.
    ///
    /// Dropped windows stay parked here: they are released at the next
    /// window registration or device-communicator creation (see
    /// [`Comm::window_register`](crate::Comm::window_register)), or when the
    /// communicator closes.
    ///
    /// On an aborted communicator it does nothing (NCCL released them).
    pub fn release_parked(&self) -> usize {
        self.release(None).unwrap_or_else(|n| n)
    }

    /// Releases every dropped window before `op` (a window registration or
    /// a device-communicator creation) lays out more symmetric memory,
    /// waiting for the work queued on each at most [`DROP_WAIT`](crate::DROP_WAIT)
    /// in all; the other parked registrations as
    /// [`release_parked`](Comm::release_parked) does.
    ///
    /// Why windows wait for these points: from NCCL 2.28 each rank places
    /// a window in its symmetric address space first-fit, by itself
    /// (`ncclSpaceAlloc`; deregistration frees the range locally), and the
    /// multicast mappings bind each rank's memory at its own offset. The
    /// offsets agree between ranks only while every rank has the same
    /// windows live whenever NCCL places one; releasing a window whenever
    /// its buffer happens to be idle would make that depend on each GPU's
    /// progress. So each rank releases all windows dropped so far exactly
    /// here, where every rank does.
    ///
    /// # Errors
    /// `Busy` when a dropped window's buffer is still in use at the limit:
    /// nothing was released that was not done, and `op` must not go on
    /// (its caller returns the error without calling NCCL; the other ranks
    /// wait in it until this rank retries it).
    pub(crate) fn release_windows(&self, op: &'static str) -> Result<()> {
        let deadline = std::time::Instant::now() + crate::DROP_WAIT;
        match self.release(Some(deadline)) {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::Busy {
                op,
                after: crate::DROP_WAIT,
            }),
        }
    }

    /// Releases what is parked: buffer registrations whose work is done;
    /// with `windows`, also every window, waiting for each until that
    /// deadline. `Err` (how many stay parked) when a window's work outlasts
    /// it: the windows from there on stay parked, in their order.
    fn release(&self, windows: Option<std::time::Instant>) -> std::result::Result<usize, usize> {
        let raw = self.raw.get();
        if raw.is_null() {
            return Ok(0);
        }
        self.registry.release_with(windows, |p| {
            // SAFETY: the handle came from this kind's registration on this
            // communicator (a registration parks only into its own
            // communicator's registry), which is live (checked above) and
            // used by this thread only (`Comm` is !Sync); it was parked once
            // and is released once, here.
            unsafe { (p.release)(raw, p.handle as *mut core::ffi::c_void) }
        })
    }
}

impl Registry {
    /// [`Comm::release`]'s rules, with `release` ending one registration
    /// in NCCL.
    fn release_with(
        &self,
        windows: Option<std::time::Instant>,
        mut release: impl FnMut(&Pending) -> sys::ncclResult_t,
    ) -> std::result::Result<usize, usize> {
        let mut left = Vec::new();
        let mut stuck = false;
        for mut p in self.take() {
            let done = match windows {
                Some(deadline) if p.window && !stuck => {
                    let mut done = p.memory.uses_done();
                    while !done && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_micros(100));
                        done = p.memory.uses_done();
                    }
                    stuck = !done;
                    done
                }
                // windows go only where every rank releases them
                _ if p.window => false,
                _ => p.memory.uses_done(),
            };
            if !done {
                left.push(p);
                continue;
            }
            let r = release(&p);
            if r != sys::ncclResult_t::ncclSuccess {
                log::error!(
                    "{} failed with code {}; the buffer stays allocated until the communicator closes",
                    p.api,
                    r.0
                );
                self.keep(Box::new(KeepAlive(p.memory)));
            }
        }
        let n = left.len();
        for p in left {
            if let Some(p) = self.park(p) {
                drop(p);
            }
        }
        if stuck { Err(n) } else { Ok(n) }
    }
}

/// Parked memory moved to the kept list (only dropped, never used).
struct KeepAlive(#[allow(dead_code)] Box<dyn Parked>);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts how many are alive, as a buffer's memory would be.
    struct Mem(Arc<AtomicUsize>);
    impl Parked for Mem {
        fn uses_done(&mut self) -> bool {
            true
        }
    }
    impl Drop for Mem {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    use std::sync::Arc;

    unsafe fn never(_: sys::ncclComm_t, _: *mut core::ffi::c_void) -> sys::ncclResult_t {
        unreachable!("no NCCL call in these tests")
    }

    fn pending(alive: &Arc<AtomicUsize>) -> Pending {
        alive.fetch_add(1, Ordering::SeqCst);
        Pending {
            api: "ncclCommDeregister",
            release: never,
            handle: 0x1000,
            memory: Box::new(Mem(alive.clone())),
            window: false,
        }
    }

    /// Memory whose uses end after `busy` more queries (`usize::MAX`:
    /// never), counted alive as above.
    struct Busy(Arc<AtomicUsize>, usize);
    impl Parked for Busy {
        fn uses_done(&mut self) -> bool {
            if self.1 == 0 {
                return true;
            }
            if self.1 != usize::MAX {
                self.1 -= 1;
            }
            false
        }
    }
    impl Drop for Busy {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn parked(alive: &Arc<AtomicUsize>, handle: usize, busy: usize, window: bool) -> Pending {
        alive.fetch_add(1, Ordering::SeqCst);
        Pending {
            api: if window {
                "ncclCommWindowDeregister"
            } else {
                "ncclCommDeregister"
            },
            release: never,
            handle,
            memory: Box::new(Busy(alive.clone(), busy)),
            window,
        }
    }

    /// Windows are released only where every rank releases them (waiting
    /// for their work), buffer registrations whenever they are idle; a
    /// window whose work outlasts the wait stays parked with those after it.
    #[test]
    fn windows_wait_for_the_shared_points() {
        let alive = Arc::new(AtomicUsize::new(0));
        let r = Registry::default();
        let mut released = Vec::new();
        // an idle buffer registration, an idle window, a window busy for a
        // few queries
        assert!(r.park(parked(&alive, 1, 0, false)).is_none());
        assert!(r.park(parked(&alive, 2, 0, true)).is_none());
        assert!(r.park(parked(&alive, 3, 3, true)).is_none());
        // the everyday release: the registration goes, both windows stay
        let got = r.release_with(None, |p| {
            released.push(p.handle);
            sys::ncclResult_t::ncclSuccess
        });
        assert_eq!((got, &released[..]), (Ok(2), &[1][..]));
        assert_eq!(alive.load(Ordering::SeqCst), 2);
        // at a shared point: both windows, the busy one after its wait
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let got = r.release_with(Some(deadline), |p| {
            released.push(p.handle);
            sys::ncclResult_t::ncclSuccess
        });
        assert_eq!((got, &released[..]), (Ok(0), &[1, 2, 3][..]));
        assert_eq!(alive.load(Ordering::SeqCst), 0);
        // a window that stays busy: it and the window after it stay parked,
        // an idle registration after them still goes
        assert!(r.park(parked(&alive, 4, usize::MAX, true)).is_none());
        assert!(r.park(parked(&alive, 5, 0, true)).is_none());
        assert!(r.park(parked(&alive, 6, 0, false)).is_none());
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(20);
        let got = r.release_with(Some(deadline), |p| {
            released.push(p.handle);
            sys::ncclResult_t::ncclSuccess
        });
        assert_eq!((got, &released[3..]), (Err(2), &[6][..]));
        assert_eq!(r.counts(), (2, 0));
        r.close();
        assert_eq!(alive.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn parked_memory_lives_until_released_or_closed() {
        let alive = Arc::new(AtomicUsize::new(0));
        let r = Registry::default();
        assert!(r.park(pending(&alive)).is_none());
        assert!(r.park(pending(&alive)).is_none());
        r.keep(Box::new(Mem({
            alive.fetch_add(1, Ordering::SeqCst);
            alive.clone()
        })));
        assert_eq!(r.counts(), (2, 1));
        assert_eq!(
            alive.load(Ordering::SeqCst),
            3,
            "nothing is freed while registered"
        );
        r.close();
        assert_eq!(alive.load(Ordering::SeqCst), 0, "closing frees everything");
        assert!(r.is_closed());
        // after the close a registration is handed back to be freed
        let back = r.park(pending(&alive));
        assert!(back.is_some());
        drop(back);
        assert_eq!(alive.load(Ordering::SeqCst), 0);
        assert_eq!(r.counts(), (0, 0));
    }

    #[test]
    fn registrations_park_from_other_threads() {
        let alive = Arc::new(AtomicUsize::new(0));
        let r = Arc::new(Registry::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (r, alive) = (r.clone(), alive.clone());
                std::thread::spawn(move || assert!(r.park(pending(&alive)).is_none()))
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(r.counts(), (4, 0));
        assert_eq!(r.take().len(), 4);
    }
}
