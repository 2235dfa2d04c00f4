//! Splitting a communicator ([`Comm::split`](crate::Comm::split)) and settling the children of
//! split, shrink and grow.

use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use crate::base::call::failure;
use crate::base::error::{Error, Result};
use crate::base::state::CommOp;
use crate::comm::orphan;
use crate::comm::wait::settle_state_raw;
use crate::comm::{Comm, Config};
use crate::sys;

impl Comm {
    /// Splits this communicator (`ncclCommSplit`, collective over all its
    /// ranks): ranks passing the same `color` form a new communicator,
    /// ordered by `key` (then by their rank here). `color: None` takes no part
    /// (`NCCL_SPLIT_NOCOLOR`) and returns `Ok(None)`.
    ///
    /// Allowed while [`Live`](crate::CommState::Live) or
    /// [`Revoked`](crate::CommState::Revoked) (NCCL documents a revoked communicator
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
        crate::base::thread::not_in_group("split")?;
        crate::comm::close::admit("split")?;
        self.allow("split", CommOp::Split)?;
        self.refuse_sharing("split", false)?;
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
        let nocolor = color == sys::NCCL_SPLIT_NOCOLOR;
        let child = self.settle_child(
            "ncclCommSplit",
            r,
            &slot,
            self.timeout,
            stale,
            config.name_handle(),
        )?;
        let raw = child.raw;
        match (raw.is_null(), nocolor) {
            (true, true) => return Ok(None), // no color: no child
            (true, false) => {
                // a job that ended in this communicator's old error made no
                // child: that was its failure, not "no color"
                self.fail();
                return Err(failure(
                    "ncclCommSplit",
                    stale.unwrap_or(sys::ncclResult_t::ncclInternalError),
                    self.raw.get(),
                ));
            }
            (false, true) => {
                // SAFETY: a communicator NCCL made, owned by nobody else
                // (taken out of the slot), never used again; its abort waits
                // for this communicator's (`Orphans`: how it stands in NCCL
                // is unclear).
                unsafe {
                    orphan(
                        &self.orphans,
                        raw,
                        Some(self.ctx.clone()),
                        holds(&self.ctx, config.name_handle()),
                    )
                };
                return Err(Error::Nccl {
                    api: "ncclCommSplit",
                    code: crate::NcclCode::InternalError,
                    last_error: "NCCL made a child for NCCL_SPLIT_NOCOLOR".into(),
                });
            }
            (false, false) => {}
        }
        let child = self.adopt_child(
            child,
            config.is_blocking(),
            config.timeout,
            config.name_handle(),
            config.sharing(),
        )?;
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
        name: Option<std::sync::Arc<std::ffi::CString>>,
    ) -> Result<Child> {
        let polled = r == sys::ncclResult_t::ncclInProgress;
        let end = if polled {
            // SAFETY: a live communicator of this thread (Comm is !Sync).
            match unsafe { settle_state_raw(self.raw.get(), &self.abort, limit, api) } {
                Ok(end) => end,
                Err(e) => {
                    // joins NCCL's job: after this nothing writes `slot`
                    self.abort_now(api);
                    // SAFETY: null or the child NCCL made, owned by nobody
                    // else (taken out of `slot`), never used again. Its abort
                    // waits for this communicator's (`Orphans`): at once if
                    // that has returned, else when it does (an abort left to
                    // its thread may still write the child's flag).
                    unsafe {
                        orphan(
                            &self.orphans,
                            slot.swap(std::ptr::null_mut(), Ordering::Acquire),
                            Some(self.ctx.clone()),
                            holds(&self.ctx, name),
                        )
                    };
                    return Err(e);
                }
            }
        } else {
            r
        };
        let child = slot.swap(std::ptr::null_mut(), Ordering::Acquire);
        if end == sys::ncclResult_t::ncclSuccess && !child.is_null() {
            // NCCL pointed the parent at this child's flag instead of the
            // earlier ones' when it began creating it (and cleared that
            // when the creation succeeded): the earlier failed children
            // are no longer referenced
            crate::comm::close::release_earlier_orphans(&self.orphans);
        }
        if end == sys::ncclResult_t::ncclSuccess {
            return Ok(Child {
                raw: child,
                uncertain: false,
            });
        }
        // a polled state may be the old error, not the job's: the child is
        // taken as made, but its creation may have failed, and then NCCL
        // still points this communicator at the child's abort flag: the
        // child's abort waits for this one's for its whole life
        if polled && Some(end) == stale {
            return Ok(Child {
                raw: child,
                uncertain: true,
            });
        }
        // SAFETY: null or the (failed) child NCCL made, owned by nobody else
        // (taken out of `slot`), never used again. Its abort waits for this
        // communicator's (`Orphans`): NCCL still points here to its flag.
        unsafe {
            orphan(
                &self.orphans,
                child,
                Some(self.ctx.clone()),
                holds(&self.ctx, name),
            )
        };
        let e = failure(api, end, self.raw.get());
        self.fail();
        Err(e)
    }

    /// Takes `child` (made by [`Comm::settle_child`] from this communicator)
    /// as a `Comm`, its rank and size asked; if they cannot be, the child's
    /// abort waits for this communicator's (`Orphans`, in `comm::close`):
    /// its creation may have failed.
    pub(crate) fn adopt_child(
        &self,
        child: Child,
        blocking: bool,
        timeout: Option<Duration>,
        name: Option<std::sync::Arc<std::ffi::CString>>,
        share: (bool, bool),
    ) -> Result<Comm> {
        let mut c = Comm::wrap(child.raw, self.ctx.clone(), 0, 0, blocking, timeout);
        (c.name, c.share) = (name, share);
        c.linger = Some(self.orphans.clone());
        c.rank = c.query("ncclCommUserRank", sys::ncclCommUserRank)? as usize;
        c.world = c.query("ncclCommCount", sys::ncclCommCount)? as usize;
        // a communicator a caller holds is aborted as any other, unless its
        // creation may have failed: NCCL answers its rank and size even
        // then, and may still write its abort flag from the parent
        if !child.uncertain {
            c.linger = None;
        }
        Ok(c)
    }
}

/// A child NCCL made, from [`Comm::settle_child`].
pub(crate) struct Child {
    /// Null: none was made.
    pub(crate) raw: sys::ncclComm_t,
    /// Taken as made on a polled state equal to the parent's earlier error:
    /// it may have failed, and NCCL may still point the parent at its abort
    /// flag (the parent clears it only on success).
    pub(crate) uncertain: bool,
}

impl Comm {
    /// Refuses a split (`shrink: false`) or shrink whose child would share
    /// this communicator's resources, as its config or NCCL's environment
    /// variable asks (NCCL lets the variable override the config).
    ///
    /// NCCL forbids driving a parent and a sharing child at the same time,
    /// and they share one abort flag, so aborting (dropping) one kills the
    /// other; a `Comm` is `Send`, so safe code could do both from two
    /// threads. Rather than a lock on every call of every communicator, the
    /// sharing is refused.
    pub(crate) fn refuse_sharing(&self, op: &'static str, shrink: bool) -> Result<()> {
        // `share` is what NCCL decided at this communicator's creation
        // (config and variable); the variable is read again now, in case
        // NCCL read it at another time than this crate did (it reads it
        // once per process)
        let (var, asked) = if shrink {
            (crate::comm::config::SHRINK_SHARE_VAR, self.share.1)
        } else {
            (crate::comm::config::SPLIT_SHARE_VAR, self.share.0)
        };
        let env = crate::comm::config::env_flag(var) == Some(true)
            || crate::comm::config::sharing_seen(var);
        if asked || env {
            return Err(Error::invalid(
                op,
                if env {
                    var
                } else if shrink {
                    "Config::shrink_share"
                } else {
                    "Config::split_share"
                },
                "off (in the config and, at this communicator's creation, in the variable): a child that shares its parent's resources could run at the same time as the parent on another thread, which NCCL forbids",
                "on",
            ));
        }
        Ok(())
    }
}

/// What an abort of a child runs once it has returned: nothing but holding
/// the CUDA context and the child's name (NCCL points to it), so that they
/// outlive an abort left to a thread of its own (see `abort_raw`).
fn holds(
    ctx: &std::sync::Arc<cudarc::driver::CudaContext>,
    name: Option<std::sync::Arc<std::ffi::CString>>,
) -> impl FnOnce() + Send + 'static {
    let ctx = ctx.clone();
    move || {
        drop(ctx);
        drop(name);
    }
}
