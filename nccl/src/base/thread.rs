//! What is open on this thread: NCCL's group state is per thread.

use std::cell::Cell;

use crate::base::error::{Error, Result};

thread_local! {
    /// Whether a [`group`] is open on this thread. NCCL's group state is per
    /// thread, so a call on this thread inside the closure would be deferred
    /// by NCCL; calls with a bare stream check this and refuse. Nothing that
    /// can move to another thread refers to it: it is set and cleared by
    /// [`group`] around its closure, on the calling thread.
    pub(crate) static OPEN: Cell<bool> = const { Cell::new(false) };

    /// The `cgaClusterSize` of the collective being made on this thread
    /// (`None`: unset, the communicator's), for the check of an open
    /// group: set only around a configured call's NCCL call
    /// ([`with_call_cga`]), so `None` for every other call.
    static CALL_CGA: Cell<Option<i32>> = const { Cell::new(None) };
}

/// The `cgaClusterSize` setting of the call being made on this thread
/// (`None`: unset): read when a group admits the call.
#[inline(always)]
pub(crate) fn call_cga() -> Option<i32> {
    CALL_CGA.with(Cell::get)
}

/// Runs `f` (a configured collective's NCCL call and the checks just before
/// it) with [`call_cga`] answering `cga`; `None` again afterwards, also if
/// `f` panics. Calls do not nest: `f` makes one NCCL call.
#[cfg_attr(not(nccl_fn = "ncclAllReduceConfig"), allow(dead_code))]
#[inline]
pub(crate) fn with_call_cga<R>(cga: Option<i32>, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CALL_CGA.with(|c| c.set(None));
        }
    }
    if cga.is_none() {
        // already None (every call resets it)
        return f();
    }
    CALL_CGA.with(|c| c.set(cga));
    let _reset = Reset;
    f()
}

/// Whether a group is open on this thread.
#[inline(always)]
pub(crate) fn in_group() -> bool {
    OPEN.with(Cell::get)
}

/// Fails with [`Error::InGroup`] while a group is open on this thread: for
/// calls that NCCL would defer to the group's end but that cannot be tied to
/// the group's scope (a bare stream, creation, split, finalize).
#[inline(always)]
pub(crate) fn not_in_group(op: &'static str) -> Result<()> {
    if in_group() {
        Err(Error::InGroup { op })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_cga_is_set_only_around_the_call() {
        assert_eq!(call_cga(), None);
        assert_eq!(with_call_cga(Some(4), call_cga), Some(4));
        assert_eq!(call_cga(), None);
        assert_eq!(with_call_cga(None, call_cga), None);
        let r = std::panic::catch_unwind(|| with_call_cga(Some(2), || panic!("in the call")));
        assert!(r.is_err());
        assert_eq!(call_cga(), None, "reset after a panic");
    }
}
