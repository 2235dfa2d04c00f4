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
