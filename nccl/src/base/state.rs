//! The states a communicator goes through and the calls each allows.

use std::fmt;

/// Where a communicator stands, and so which calls it takes
/// ([`CommState::allows`](crate::CommState::allows)); [`Comm::state`](crate::Comm::state) says it. The module table above
/// ([`crate::CommOp`] for the calls) is the same as `allows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommState {
    /// Usable: every call but `resume`.
    Live,
    /// An operation failed or stalled (a peer died, a wait timed out) and the
    /// communicator was kept for recovery; its work may still be stuck on the
    /// GPU. Allowed: [`Comm::revoke`](crate::Comm::revoke), [`Comm::shrink`](crate::Comm::shrink) with
    /// [`ShrinkMode::Abort`], abort and drop.
    Failed,
    /// Revoked ([`Comm::revoke`](crate::Comm::revoke)): its operations were stopped and it is
    /// quiescent. Allowed: [`Comm::shrink`](crate::Comm::shrink), [`Comm::split`](crate::Comm::split),
    /// [`Comm::mem_stats`](crate::Comm::mem_stats), [`Comm::finalize`](crate::Comm::finalize) (which then releases it with
    /// `ncclCommAbort`), abort and drop.
    Revoked,
    /// Suspended ([`Comm::suspend`](crate::Comm::suspend)): its GPU memory was released. Allowed:
    /// [`Comm::resume`](crate::Comm::resume), [`Comm::mem_stats`](crate::Comm::mem_stats), abort and drop.
    Suspended,
    /// Aborted (or closed): nothing is allowed; drop it.
    Aborted,
}

/// The calls whose permission depends on a communicator's state (abort and
/// drop are always allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CommOp {
    /// Collectives and point-to-point calls, alone or in a group, and
    /// [`Comm::wait_recoverable`](crate::Comm::wait_recoverable).
    Collective,
    /// [`Comm::split`](crate::Comm::split).
    Split,
    /// [`Comm::shrink`](crate::Comm::shrink) in the given mode.
    Shrink(ShrinkMode),
    /// [`Comm::grow`](crate::Comm::grow).
    Grow,
    /// [`Comm::revoke`](crate::Comm::revoke).
    Revoke,
    /// [`Comm::suspend`](crate::Comm::suspend).
    Suspend,
    /// [`Comm::resume`](crate::Comm::resume).
    Resume,
    /// [`Comm::mem_stats`](crate::Comm::mem_stats).
    MemStats,
    /// [`Comm::finalize`](crate::Comm::finalize).
    Finalize,
}

impl CommOp {
    /// Every call, in the order of the module table.
    pub const ALL: [CommOp; 10] = [
        CommOp::Collective,
        CommOp::Split,
        CommOp::Shrink(ShrinkMode::Default),
        CommOp::Shrink(ShrinkMode::Abort),
        CommOp::Grow,
        CommOp::Revoke,
        CommOp::Suspend,
        CommOp::Resume,
        CommOp::MemStats,
        CommOp::Finalize,
    ];
}

impl fmt::Display for CommOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommOp::Collective => "collectives",
            CommOp::Split => "split",
            CommOp::Shrink(ShrinkMode::Default) => "shrink",
            CommOp::Shrink(ShrinkMode::Abort) => "shrink(ShrinkMode::Abort)",
            CommOp::Grow => "grow",
            CommOp::Revoke => "revoke",
            CommOp::Suspend => "suspend",
            CommOp::Resume => "resume",
            CommOp::MemStats => "mem_stats",
            CommOp::Finalize => "finalize",
        })
    }
}

impl CommState {
    /// Whether a communicator in this state takes `op`.
    ///
    /// ```
    /// use nccl::{CommOp, CommState, ShrinkMode};
    /// assert!(CommState::Failed.allows(CommOp::Revoke));
    /// assert!(CommState::Failed.allows(CommOp::Shrink(ShrinkMode::Abort)));
    /// assert!(!CommState::Failed.allows(CommOp::Collective));
    /// assert!(!CommState::Suspended.allows(CommOp::Collective));
    /// ```
    pub const fn allows(self, op: CommOp) -> bool {
        use CommOp as O;
        use CommState as S;
        match (self, op) {
            (S::Live, O::Resume) => false,
            (S::Live, _) => true,
            (S::Failed, O::Revoke | O::Shrink(ShrinkMode::Abort)) => true,
            (S::Revoked, O::Split | O::Shrink(_) | O::MemStats | O::Finalize) => true,
            (S::Suspended, O::Resume | O::MemStats) => true,
            _ => false,
        }
    }

    /// The state a communicator in this state is in after `op` succeeded;
    /// `None` where `op` is not allowed. `Finalize` ends it (`Aborted`: there
    /// is nothing left). A child made by split, shrink or grow is `Live`;
    /// this gives the parent's state.
    ///
    /// ```
    /// use nccl::{CommOp, CommState, ShrinkMode};
    /// assert_eq!(CommState::Failed.after(CommOp::Revoke), Some(CommState::Revoked));
    /// assert_eq!(CommState::Live.after(CommOp::Suspend), Some(CommState::Suspended));
    /// assert_eq!(CommState::Suspended.after(CommOp::Resume), Some(CommState::Live));
    /// assert_eq!(CommState::Live.after(CommOp::Shrink(ShrinkMode::Abort)), Some(CommState::Failed));
    /// assert_eq!(CommState::Revoked.after(CommOp::Collective), None);
    /// ```
    pub const fn after(self, op: CommOp) -> Option<CommState> {
        if !self.allows(op) {
            return None;
        }
        Some(match op {
            CommOp::Revoke => CommState::Revoked,
            CommOp::Suspend => CommState::Suspended,
            CommOp::Resume => CommState::Live,
            CommOp::Finalize => CommState::Aborted,
            // its outstanding work was cut off: only recovery calls are left
            CommOp::Shrink(ShrinkMode::Abort) => match self {
                CommState::Revoked => CommState::Revoked,
                _ => CommState::Failed,
            },
            _ => self,
        })
    }
}

impl fmt::Display for CommState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommState::Live => "live",
            CommState::Failed => "failed",
            CommState::Revoked => "revoked",
            CommState::Suspended => "suspended",
            CommState::Aborted => "aborted",
        })
    }
}

/// How [`Comm::shrink`](crate::Comm::shrink) treats the operations still outstanding on the
/// communicator it shrinks (`shrinkFlags`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ShrinkMode {
    /// `NCCL_SHRINK_DEFAULT`: no operation may be outstanding (NCCL: else it
    /// may deadlock). A parent whose children would share its resources
    /// ([`Config::shrink_share`](crate::Config::shrink_share)) is refused.
    #[default]
    Default,
    /// `NCCL_SHRINK_ABORT`: for shrinking after a failure: NCCL first aborts
    /// the parent's outstanding operations, and the child shares nothing
    /// with the parent.
    Abort,
}
