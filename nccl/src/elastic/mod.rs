//! Elastic communicators: going on without a lost rank ([`Comm::shrink`](crate::Comm::shrink),
//! [`Comm::revoke`](crate::Comm::revoke)), letting new ranks in ([`Comm::grow`](crate::Comm::grow), [`Comm::join`](crate::Comm::join)),
//! and giving a communicator's GPU memory back while it is idle
//! ([`Comm::suspend`](crate::Comm::suspend), [`Comm::resume`](crate::Comm::resume), [`Comm::mem_stats`](crate::Comm::mem_stats)); the states a
//! communicator goes through ([`CommState`](crate::CommState)) and the calls each allows.
//!
//! Each call checks, in this order and before NCCL is called: that this
//! build's header and the libnccl in use have the API ([`ElasticApi::check`],
//! else [`Error::Unsupported`]), that the communicator's state allows it
//! ([`Error::WrongState`], or [`Error::Aborted`]), and its arguments
//! ([`Error::InvalidArgument`]).
//!
//! | state | collectives | split | shrink | grow | revoke | suspend | resume | mem_stats | finalize | abort, drop |
//! | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
//! | `Live` | yes | yes | yes | yes | yes | yes | — | yes | yes | yes |
//! | `Failed` | — | — | `Abort` mode | — | yes | — | — | — | — | yes |
//! | `Revoked` | — | yes | yes | — | — | — | — | yes | yes (aborts) | yes |
//! | `Suspended` | — | — | — | — | — | — | yes | yes | — | yes |
//! | `Aborted` | — | — | — | — | — | — | — | — | — | (nothing to do) |

mod split;

use std::sync::Arc;
#[cfg(nccl_fn = "ncclCommShrink")]
use std::sync::atomic::AtomicPtr;

use cudarc::driver::CudaContext;

use crate::base::error::{Error, Result};
use crate::base::state::{CommOp, ShrinkMode};
use crate::base::version::{HEADER_VERSION, Version};
use crate::comm::Bootstrap;
use crate::comm::Comm;
use crate::comm::Config;
#[cfg(nccl_fn = "ncclCommShrink")]
use crate::sys;

/// Largest world: NCCL counts ranks in an `int`.
const MAX_WORLD: usize = i32::MAX as usize;

impl ShrinkMode {
    #[cfg(nccl_fn = "ncclCommShrink")]
    fn raw(self) -> i32 {
        match self {
            ShrinkMode::Default => sys::NCCL_SHRINK_DEFAULT as i32,
            ShrinkMode::Abort => sys::NCCL_SHRINK_ABORT as i32,
        }
    }
}

/// Which ranks of the old communicator a shrunk one keeps, in their new
/// order: NCCL closes the gaps, keeping the old order.
///
/// ```
/// let map = nccl::RankMap::excluding(4, 0, &[2])?;
/// assert_eq!(map.survivors(), [0, 1, 3]);
/// assert_eq!(map.old_rank(2), Some(3));
/// assert_eq!(map.new_rank(3), Some(2));
/// assert_eq!(map.new_rank(2), None); // excluded
/// assert_eq!(map.world(), 3);
/// # Ok::<(), nccl::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankMap {
    old_world: usize,
    /// Old rank of each new rank, ascending.
    survivors: Vec<usize>,
    /// The excluded old ranks, ascending.
    excluded: Vec<usize>,
}

impl RankMap {
    /// The map of a communicator of `old_world` ranks shrunk by the rank
    /// `me` (which must stay) leaving out `exclude`, after checking
    /// `exclude` as [`Comm::shrink`](crate::Comm::shrink) does.
    ///
    /// # Errors
    /// `InvalidArgument` (op `shrink`, arg `exclude`) when `exclude` is
    /// empty, names every rank, names a rank `>= old_world`, names one rank
    /// twice, or names `me` (an excluded rank does not call shrink); also
    /// (arg `rank`) for `me >= old_world`, and (arg `world`) for an
    /// `old_world` above `i32::MAX` (NCCL counts ranks in an `int`) or one
    /// whose map of survivors does not fit in memory.
    pub fn excluding(old_world: usize, me: usize, exclude: &[usize]) -> Result<RankMap> {
        const OP: &str = "shrink";
        if old_world > MAX_WORLD {
            return Err(Error::invalid(
                OP,
                "world",
                format!("at most {MAX_WORLD} ranks"),
                old_world,
            ));
        }
        crate::base::contract::rank_arg(OP, "rank", me, old_world)?;
        if exclude.is_empty() {
            return Err(Error::invalid(
                OP,
                "exclude",
                "at least one rank",
                "no rank",
            ));
        }
        if exclude.len() >= old_world {
            return Err(Error::invalid(
                OP,
                "exclude",
                format!("at most {} of the {old_world} ranks", old_world - 1),
                format!("{} ranks", exclude.len()),
            ));
        }
        if let Some(&r) = exclude.iter().find(|&&r| r >= old_world) {
            return Err(Error::invalid(
                OP,
                "exclude",
                format!("ranks < world ({old_world})"),
                format!("rank {r}"),
            ));
        }
        // sorted, the list answers every question without a table of
        // `old_world` entries
        let mut excluded = exclude.to_vec();
        excluded.sort_unstable();
        if let Some(w) = excluded.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::invalid(
                OP,
                "exclude",
                "each rank once",
                format!("rank {} twice", w[0]),
            ));
        }
        if excluded.binary_search(&me).is_ok() {
            return Err(Error::invalid(
                OP,
                "exclude",
                "ranks other than this one (excluded ranks do not call shrink)",
                format!("this rank ({me})"),
            ));
        }
        let world = old_world - excluded.len();
        let mut survivors = Vec::new();
        survivors.try_reserve_exact(world).map_err(|e| {
            Error::invalid(
                OP,
                "world",
                "a world whose ranks fit in memory",
                format!("{old_world} ranks ({e})"),
            )
        })?;
        let mut gone = excluded.iter().copied().peekable();
        for r in 0..old_world {
            if gone.next_if_eq(&r).is_none() {
                survivors.push(r);
            }
        }
        Ok(RankMap {
            old_world,
            survivors,
            excluded,
        })
    }

    /// The old rank of new rank `new`.
    pub fn old_rank(&self, new: usize) -> Option<usize> {
        self.survivors.get(new).copied()
    }

    /// The new rank of old rank `old`; `None` for an excluded rank or one
    /// out of range.
    pub fn new_rank(&self, old: usize) -> Option<usize> {
        self.survivors.binary_search(&old).ok()
    }

    /// The old ranks that stay, in new-rank order.
    pub fn survivors(&self) -> &[usize] {
        &self.survivors
    }

    /// The old ranks left out, ascending.
    pub fn excluded(&self) -> &[usize] {
        &self.excluded
    }

    /// Number of ranks after the shrink.
    pub fn world(&self) -> usize {
        self.survivors.len()
    }

    /// Number of ranks before.
    pub fn old_world(&self) -> usize {
        self.old_world
    }
}

/// What [`Comm::shrink`](crate::Comm::shrink) returns: the new communicator and how its ranks map
/// to the old one's.
#[derive(Debug)]
pub struct Shrunk {
    /// The new communicator (live).
    pub comm: Comm,
    /// Old ranks ↔ new ranks.
    pub ranks: RankMap,
}

/// How ranks are numbered when a communicator grows ([`Comm::grow`](crate::Comm::grow),
/// [`Comm::join`](crate::Comm::join)): the existing ranks keep theirs, `0..old_world`; the
/// joiners get `old_world..new_world`, in the order of their ranks in the
/// [`Bootstrap`] that hands them the grow id. That bootstrap has
/// `joiners + 1` members: rank 0 is the coordinator (rank 0 of the existing
/// communicator), ranks `1..=joiners` are the joiners.
///
/// ```
/// let plan = nccl::GrowPlan::new(3, 5)?;
/// assert_eq!((plan.joiners(), plan.bootstrap_world()), (2, 3));
/// assert_eq!(plan.joiner_rank(1)?, 3);
/// assert_eq!(plan.joiner_rank(2)?, 4);
/// assert_eq!(nccl::GrowPlan::from_bootstrap(5, 3)?, plan);
/// # Ok::<(), nccl::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrowPlan {
    old_world: usize,
    new_world: usize,
}

impl GrowPlan {
    /// A communicator of `old_world` ranks growing to `new_world`.
    ///
    /// # Errors
    /// `InvalidArgument` (op `grow`) unless `1 <= old_world < new_world <=
    /// i32::MAX`.
    pub fn new(old_world: usize, new_world: usize) -> Result<GrowPlan> {
        if old_world == 0 {
            return Err(Error::invalid("grow", "world", "at least 1", 0));
        }
        if new_world <= old_world || new_world > MAX_WORLD {
            return Err(Error::invalid(
                "grow",
                "new_world",
                format!(
                    "{} ..= i32::MAX (more than the {old_world} ranks now)",
                    old_world.saturating_add(1)
                ),
                new_world,
            ));
        }
        Ok(GrowPlan {
            old_world,
            new_world,
        })
    }

    /// The plan as a joiner sees it: the size after the grow and that of the
    /// bootstrap (the coordinator and one member per joiner).
    ///
    /// # Errors
    /// `InvalidArgument` (op `join`) for a bootstrap of fewer than 2 members
    /// or one with more joiners than `new_world - 1`; as [`GrowPlan::new`].
    pub fn from_bootstrap(new_world: usize, bootstrap_world: usize) -> Result<GrowPlan> {
        if bootstrap_world < 2 || bootstrap_world > new_world {
            return Err(Error::invalid(
                "join",
                "bootstrap.world_size()",
                format!("2 ..= new_world ({new_world}): the coordinator and each joiner"),
                bootstrap_world,
            ));
        }
        GrowPlan::new(new_world - (bootstrap_world - 1), new_world)
    }

    /// Ranks before.
    pub fn old_world(&self) -> usize {
        self.old_world
    }

    /// Ranks after.
    pub fn new_world(&self) -> usize {
        self.new_world
    }

    /// Ranks that join.
    pub fn joiners(&self) -> usize {
        self.new_world - self.old_world
    }

    /// Members of the bootstrap that hands out the grow id.
    pub fn bootstrap_world(&self) -> usize {
        self.joiners() + 1
    }

    /// The rank in the grown communicator of the joiner that is
    /// `bootstrap_rank` in the bootstrap.
    ///
    /// # Errors
    /// `InvalidArgument` (op `join`) unless `1 <= bootstrap_rank <= joiners`.
    pub fn joiner_rank(&self, bootstrap_rank: usize) -> Result<usize> {
        if bootstrap_rank == 0 || bootstrap_rank > self.joiners() {
            return Err(Error::invalid(
                "join",
                "bootstrap.rank()",
                format!(
                    "1 ..= {} (rank 0 is the coordinator, an existing rank)",
                    self.joiners()
                ),
                bootstrap_rank,
            ));
        }
        Ok(self.old_world + bootstrap_rank - 1)
    }

    /// Checks what an existing rank `rank` passes to [`Comm::grow`](crate::Comm::grow): rank 0
    /// (the coordinator) passes the joiners' bootstrap, as its rank 0 with
    /// [`GrowPlan::bootstrap_world`] members; every other rank passes none.
    ///
    /// # Errors
    /// `InvalidArgument` (op `grow`) otherwise.
    pub fn check_existing(&self, rank: usize, joiners: Option<&dyn Bootstrap>) -> Result<()> {
        const OP: &str = "grow";
        if rank >= self.old_world {
            return Err(Error::invalid(
                OP,
                "rank",
                format!("< world ({})", self.old_world),
                rank,
            ));
        }
        match (rank, joiners) {
            (0, None) => Err(Error::invalid(
                OP,
                "joiners",
                "Some(bootstrap) at rank 0, the coordinator that hands the joiners the grow id",
                "None",
            )),
            (0, Some(b)) if b.rank() != 0 => Err(Error::invalid(
                OP,
                "joiners.rank()",
                "0 (the coordinator)",
                b.rank(),
            )),
            (0, Some(b)) if b.world_size() != self.bootstrap_world() => Err(Error::invalid(
                OP,
                "joiners.world_size()",
                format!(
                    "{} (the coordinator and {} joiners)",
                    self.bootstrap_world(),
                    self.joiners()
                ),
                b.world_size(),
            )),
            (0, Some(_)) | (_, None) => Ok(()),
            (_, Some(_)) => Err(Error::invalid(
                OP,
                "joiners",
                "None away from rank 0 (only the coordinator talks to the joiners)",
                "Some(bootstrap)",
            )),
        }
    }
}

/// How much GPU memory a communicator holds, as NCCL tracks it
/// ([`Comm::mem_stats`](crate::Comm::mem_stats), `ncclCommMemStats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemStats {
    /// Bytes that [`Comm::suspend`](crate::Comm::suspend) can release (`ncclStatGpuMemSuspend`).
    pub suspendable: u64,
    /// Bytes kept while suspended (`ncclStatGpuMemPersist`).
    pub persistent: u64,
    /// All the bytes NCCL tracks for it (`ncclStatGpuMemTotal`).
    pub total: u64,
    /// Whether its memory is released now (`ncclStatGpuMemSuspended`).
    pub suspended: bool,
}

/// The elastic APIs, each with the NCCL release that brought it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ElasticApi {
    /// [`Comm::shrink`](crate::Comm::shrink) (`ncclCommShrink`, 2.27).
    Shrink,
    /// [`Comm::revoke`](crate::Comm::revoke) (`ncclCommRevoke`, 2.28.7).
    Revoke,
    /// [`Comm::grow`](crate::Comm::grow) and [`Comm::join`](crate::Comm::join) (`ncclCommGrow`,
    /// `ncclCommGetUniqueId`, 2.29.2).
    Grow,
    /// [`Comm::suspend`](crate::Comm::suspend), [`Comm::resume`](crate::Comm::resume) and [`Comm::mem_stats`](crate::Comm::mem_stats)
    /// (`ncclCommSuspend`, `ncclCommResume`, `ncclCommMemStats`, 2.29.7).
    Suspend,
}

impl ElasticApi {
    /// Every elastic API.
    pub const ALL: [ElasticApi; 4] = [
        ElasticApi::Shrink,
        ElasticApi::Revoke,
        ElasticApi::Grow,
        ElasticApi::Suspend,
    ];

    /// The NCCL function.
    pub const fn name(self) -> &'static str {
        match self {
            ElasticApi::Shrink => "ncclCommShrink",
            ElasticApi::Revoke => "ncclCommRevoke",
            ElasticApi::Grow => "ncclCommGrow",
            ElasticApi::Suspend => "ncclCommSuspend",
        }
    }

    /// The first NCCL release with it (from NVIDIA's headers: nccl-sys's
    /// since table).
    pub fn since(self) -> Version {
        crate::base::runtime::since(self.name())
    }

    /// `Ok` when both the `nccl.h` of this build and the libnccl in use have
    /// the API: the check its calls make first, so a program can ask before
    /// it has a communicator.
    ///
    /// # Errors
    /// [`Error::Unsupported`] otherwise; `LibraryTooOld` as everywhere.
    pub fn check(self) -> Result<()> {
        self.gate(self.name())
    }

    /// [`ElasticApi::check`], naming `api` (one of this API's functions) in
    /// the error.
    pub(crate) fn gate(self, api: &'static str) -> Result<()> {
        crate::base::runtime::require_api(api)
    }

    /// The error of a build whose header lacks the API (its call compiled
    /// out); `check` already fails then, this only keeps the types whole.
    #[allow(dead_code)] // used only by builds against older headers
    pub(crate) fn missing(self, api: &'static str) -> Error {
        Error::Unsupported {
            api,
            since: self.since(),
            runtime: crate::base::runtime::checked_runtime().unwrap_or(HEADER_VERSION),
        }
    }
}

/// Each elastic API with whether this build and the libnccl in use have it
/// (`Ok`) or the [`Error::Unsupported`] its calls would return.
///
/// ```
/// let report: Vec<String> = nccl::elastic_support()
///     .into_iter()
///     .map(|(api, ok)| format!("{} ({}+): {}", api.name(), api.since(), ok.is_ok()))
///     .collect();
/// assert_eq!(report.len(), nccl::elastic_support().len());
/// ```
pub fn elastic_support() -> Vec<(ElasticApi, Result<()>)> {
    ElasticApi::ALL.iter().map(|&a| (a, a.check())).collect()
}

/// The internal error of a result NCCL should not have given.
#[cfg(nccl_fn = "ncclCommShrink")]
fn inconsistent(api: &'static str, what: String) -> Error {
    Error::Nccl {
        api,
        code: crate::NcclCode::InternalError,
        last_error: what,
    }
}

impl Comm {
    /// A new communicator of the ranks of this one but those in `exclude`
    /// (`ncclCommShrink`, NCCL 2.27), numbered without gaps in the old order
    /// ([`Shrunk::ranks`] maps them). Collective over the ranks that stay:
    /// every one of them calls it with the same `exclude`; the excluded ranks
    /// do not call it.
    ///
    /// After a failure (a dead peer: this communicator is
    /// [`Failed`](crate::CommState::Failed)), shrink with [`ShrinkMode::Abort`],
    /// which aborts this communicator's outstanding work first, or
    /// [`Comm::revoke`](crate::Comm::revoke) first and then shrink in either mode. Which ranks are
    /// gone must be agreed outside NCCL (a store, the launcher).
    ///
    /// `config: None` gives the new communicator this one's configuration
    /// (blocking mode and timeout included). A non-blocking shrink is waited
    /// for up to the timeout of `config` if it has one, else this
    /// communicator's.
    ///
    /// States: allowed while `Live` (either mode), `Failed` (`Abort` only)
    /// or `Revoked`. Afterwards the new communicator is `Live`; this one
    /// stays as it was after `Default`, and is `Failed` after `Abort` (or
    /// still `Revoked`): drop it, or finalize it if revoked. If NCCL's shrink
    /// fails this one is `Failed`; at the timeout, aborted.
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.27; `WrongState`; `InvalidArgument` for
    /// `exclude` (see [`RankMap::excluding`]) or `config`; `InGroup`; NCCL's
    /// error; `Timeout`.
    pub fn shrink(
        &self,
        exclude: &[usize],
        mode: ShrinkMode,
        config: Option<&Config>,
    ) -> Result<Shrunk> {
        const OP: &str = "shrink";
        crate::base::thread::not_in_group(OP)?;
        crate::comm::close::admit(OP)?;
        ElasticApi::Shrink.check()?;
        self.allow(OP, CommOp::Shrink(mode))?;
        // NCCL_SHRINK_ABORT never shares
        if mode == ShrinkMode::Default {
            self.refuse_sharing(OP, true)?;
        }
        let ranks = RankMap::excluding(self.world, self.rank, exclude)?;
        #[cfg(nccl_fn = "ncclCommShrink")]
        {
            self.shrink_now(ranks, mode, config)
        }
        #[cfg(not(nccl_fn = "ncclCommShrink"))]
        {
            let _ = (ranks, config);
            Err(ElasticApi::Shrink.missing("ncclCommShrink"))
        }
    }

    #[cfg(nccl_fn = "ncclCommShrink")]
    fn shrink_now(
        &self,
        ranks: RankMap,
        mode: ShrinkMode,
        config: Option<&Config>,
    ) -> Result<Shrunk> {
        const API: &str = "ncclCommShrink";
        let mut raw_cfg = config.map(Config::to_raw).transpose()?;
        let cfg_ptr = raw_cfg
            .as_mut()
            .map_or(std::ptr::null_mut(), |c| c as *mut sys::ncclConfig_t);
        let (blocking, timeout) = match config {
            Some(c) => (c.is_blocking(), c.timeout),
            None => (self.blocking, self.timeout),
        };
        let limit = config.and_then(|c| c.timeout).or(self.timeout);
        // fits: ranks < world <= i32::MAX
        let mut list: Vec<i32> = ranks.excluded().iter().map(|&r| r as i32).collect();
        self.ctx.bind_to_thread()?;
        let stale = self.async_state_now();
        let slot = AtomicPtr::new(std::ptr::null_mut());
        // SAFETY: a valid communicator (live, failed or revoked: checked
        // above) used by this thread only; `list` holds `list.len()` distinct
        // ranks of it, none this rank, and NCCL sorts and copies it during
        // the call; the config (or null: inherit) and the strings it points
        // to outlive the wait below; `slot` is where NCCL's job writes the
        // child, and `settle_child` returns only after that job has ended or
        // was joined, while `slot` lives.
        let r = unsafe {
            sys::ncclCommShrink(
                self.raw.get(),
                list.as_mut_ptr(),
                list.len() as i32,
                slot.as_ptr(),
                cfg_ptr,
                mode.raw(),
            )
        };
        // the child's name: the config's, else (NCCL copies the pointer)
        // the parent's
        let name = config.map_or_else(|| self.name.clone(), Config::name_handle);
        let child = self.settle_child(API, r, &slot, limit, stale, name.clone())?;
        if let Some(s) = self.state.get().after(CommOp::Shrink(mode)) {
            self.state.set(s);
        }
        if child.raw.is_null() {
            return Err(inconsistent(API, "NCCL made no communicator".into()));
        }
        // NCCL copies the parent's commName pointer into a child made
        // without a config
        let share = config.map_or(self.share, Config::sharing);
        let mut comm = self.adopt_child(child, blocking, timeout, name, share)?;
        if Some(comm.rank) != ranks.new_rank(self.rank) || comm.world != ranks.world() {
            // not the child asked for: its creation may have failed, so its
            // abort (dropping `comm`) waits for this communicator's, which
            // NCCL may still point at the child's flag
            comm.linger = Some(self.orphans.clone());
            return Err(inconsistent(
                API,
                format!(
                    "NCCL made rank {} of {}, expected rank {:?} of {} (old rank {} without {:?})",
                    comm.rank,
                    comm.world,
                    ranks.new_rank(self.rank),
                    ranks.world(),
                    self.rank,
                    ranks.excluded()
                ),
            ));
        }
        Ok(Shrunk { comm, ranks })
    }

    /// Stops every outstanding operation of this communicator
    /// (`ncclCommRevoke`, NCCL 2.28.7), so that its survivors can shrink it,
    /// split it or close it without waiting on a dead peer. Local: each rank
    /// revokes its own communicator; nothing waits on the others. A
    /// non-blocking communicator is waited for until NCCL reports it
    /// quiescent, up to its timeout.
    ///
    /// States: allowed while `Live` or `Failed`; afterwards `Revoked`:
    /// collectives are refused (NCCL would answer `ncclInvalidUsage`),
    /// [`Comm::shrink`](crate::Comm::shrink) and [`Comm::split`](crate::Comm::split) work, [`Comm::finalize`](crate::Comm::finalize) releases
    /// it with `ncclCommAbort` (NCCL forbids finalizing a revoked
    /// communicator, and destroying one may wait on the lost rank), and child
    /// communicators no longer share its resources. If NCCL's revoke
    /// fails or times out, the communicator is aborted.
    ///
    /// NCCL may keep reporting the error that made the communicator
    /// `Failed` after the revoke is complete; that error does not count as
    /// the revoke's failure.
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.28.7 (build or runtime); `WrongState`;
    /// `InGroup`; NCCL's error; `Timeout`.
    pub fn revoke(&self) -> Result<()> {
        const OP: &str = "revoke";
        crate::base::thread::not_in_group(OP)?;
        ElasticApi::Revoke.check()?;
        self.allow(OP, CommOp::Revoke)?;
        #[cfg(nccl_fn = "ncclCommRevoke")]
        {
            self.revoke_now()
        }
        #[cfg(not(nccl_fn = "ncclCommRevoke"))]
        {
            Err(ElasticApi::Revoke.missing("ncclCommRevoke"))
        }
    }

    #[cfg(nccl_fn = "ncclCommRevoke")]
    fn revoke_now(&self) -> Result<()> {
        const API: &str = "ncclCommRevoke";
        self.ctx.bind_to_thread()?;
        let raw = self.raw.get();
        // SAFETY: a valid communicator used by this thread only, live or
        // failed (checked above: not revoked, finalized or aborted, which
        // NCCL refuses); NCCL_REVOKE_DEFAULT is the only flag NCCL accepts.
        let r = unsafe { sys::ncclCommRevoke(raw, sys::NCCL_REVOKE_DEFAULT as i32) };
        let end = if r == sys::ncclResult_t::ncclInProgress {
            // SAFETY: as above.
            match unsafe {
                crate::comm::wait::settle_state_raw(raw, &self.abort, self.timeout, API)
            } {
                Ok(end) => end,
                Err(e) => {
                    self.abort_now(API);
                    return Err(e);
                }
            }
        } else {
            r
        };
        if end == sys::ncclResult_t::ncclSuccess {
            self.state.set(crate::base::state::CommState::Revoked);
            return Ok(());
        }
        // Revoked promises that the communicator's work was stopped. A polled
        // state equal to the old error cannot tell a revoke that succeeded
        // from one that failed, so it is not taken as success: the
        // communicator is aborted (which does stop its work) and the caller
        // recovers by making a new one (`shrink_or_recreate`).
        let e = crate::base::call::failure(API, end, raw);
        self.abort_now(API);
        Err(e)
    }

    /// The existing ranks' side of growing this communicator to `new_world`
    /// ranks (`ncclCommGrow`, NCCL 2.29): every rank of it calls `grow`, the
    /// new ranks call [`Comm::join`](crate::Comm::join), and all get the grown communicator, in
    /// which the existing ranks keep their ranks ([`GrowPlan`]).
    ///
    /// Rank 0 coordinates: it makes the grow id (`ncclCommGetUniqueId`) and
    /// hands it to the joiners through `joiners`, a [`Bootstrap`] whose rank
    /// 0 it is and whose ranks `1..` are the joiners (as `bootstrap::TcpBootstrap`
    /// does for the launcher); every other rank passes `None`. No operation
    /// of this communicator may be outstanding. `config: None` gives the new
    /// communicator this one's configuration; a non-blocking grow is waited
    /// for up to the new communicator's timeout. A blocking grow waits for
    /// every joiner without a deadline: use a non-blocking communicator where
    /// a joiner may not come. (The ranks 0 and `world - 1` also wait inside
    /// NCCL, without a deadline, for rank 0 to send them the grow id.)
    ///
    /// If the hand-over to the joiners fails, rank 0 returns the bootstrap's
    /// error without growing, and the grow id it made stays unconsumed: NCCL
    /// makes no second one for this communicator, so it cannot grow again
    /// (it stays usable otherwise).
    ///
    /// States: allowed while `Live`; this communicator stays `Live` (NCCL
    /// says to close it once the grow is done: finalize or drop it); the new
    /// one is `Live`.
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.29.2 (build or runtime); `WrongState`;
    /// `InvalidArgument` (see [`GrowPlan::new`],
    /// [`GrowPlan::check_existing`]); the bootstrap's errors; NCCL's error;
    /// `Timeout`.
    pub fn grow(
        &self,
        new_world: usize,
        joiners: Option<&mut dyn Bootstrap>,
        config: Option<&Config>,
    ) -> Result<Comm> {
        const OP: &str = "grow";
        crate::base::thread::not_in_group(OP)?;
        crate::comm::close::admit(OP)?;
        ElasticApi::Grow.check()?;
        self.allow(OP, CommOp::Grow)?;
        let plan = GrowPlan::new(self.world, new_world)?;
        plan.check_existing(self.rank, joiners.as_deref())?;
        #[cfg(nccl_fn = "ncclCommGrow")]
        {
            self.grow_now(plan, joiners, config)
        }
        #[cfg(not(nccl_fn = "ncclCommGrow"))]
        {
            let _ = (plan, joiners, config);
            Err(ElasticApi::Grow.missing("ncclCommGrow"))
        }
    }

    #[cfg(nccl_fn = "ncclCommGrow")]
    fn grow_now(
        &self,
        plan: GrowPlan,
        joiners: Option<&mut dyn Bootstrap>,
        config: Option<&Config>,
    ) -> Result<Comm> {
        const API: &str = "ncclCommGrow";
        let mut raw_cfg = config.map(Config::to_raw).transpose()?;
        let cfg_ptr = raw_cfg
            .as_mut()
            .map_or(std::ptr::null_mut(), |c| c as *mut sys::ncclConfig_t);
        let (blocking, timeout) = match config {
            Some(c) => (c.is_blocking(), c.timeout),
            None => (self.blocking, self.timeout),
        };
        self.ctx.bind_to_thread()?;
        let id = match joiners {
            Some(boot) => {
                let mut raw_id = sys::ncclUniqueId { internal: [0; 128] };
                // SAFETY: a valid live communicator used by this thread only,
                // no operation outstanding (documented requirement); valid
                // out-pointer. Only this rank (the coordinator) asks, once per
                // grow, as NCCL requires.
                unsafe {
                    nccl!(self.raw.get() => ncclCommGetUniqueId(self.raw.get(), &mut raw_id))
                }?;
                let id = crate::UniqueId::from_raw(raw_id);
                let got = boot.share_ids(Some(vec![id]))?;
                if got.len() != 1 || got[0] != id {
                    return Err(Error::invalid(
                        "grow",
                        "joiners.share_ids",
                        "the coordinator's one id back",
                        match got.len() {
                            1 => "another id".to_string(),
                            n => format!("{n} ids"),
                        },
                    ));
                }
                Some(id)
            }
            None => None,
        };
        let id_ptr = id
            .as_ref()
            .map_or(std::ptr::null(), |i| i.as_raw() as *const sys::ncclUniqueId);
        let slot = AtomicPtr::new(std::ptr::null_mut());
        // SAFETY: a valid live communicator used by this thread only;
        // new_world > world and fits an i32 (GrowPlan); the id (at the
        // coordinator, from ncclCommGetUniqueId) or null (elsewhere), as NCCL
        // documents for existing ranks, with rank -1; the config (or null:
        // inherit) outlives the wait below; NCCL writes the new communicator
        // into `slot` during the call and again when its job ends:
        // `adopt_with` does not return before that job has ended or (through
        // the abort on error) was joined, and `slot` lives until then.
        let r = unsafe {
            sys::ncclCommGrow(
                self.raw.get(),
                plan.new_world() as i32,
                id_ptr,
                -1,
                slot.as_ptr(),
                cfg_ptr,
            )
        };
        let raw = slot.load(std::sync::atomic::Ordering::Acquire);
        let mut comm = Comm::adopt_with(
            raw,
            &self.ctx,
            self.rank,
            plan.new_world(),
            blocking,
            timeout,
            match config {
                Some(c) => c.name_handle(),
                None => self.name.clone(),
            },
            API,
            r,
        )?;
        comm.share = config.map_or(self.share, Config::sharing);
        check_grown(&comm, self.rank, plan.new_world())?;
        Ok(comm)
    }

    /// The new ranks' side of [`Comm::grow`](crate::Comm::grow): this process joins a
    /// communicator that grows to `new_world` ranks, on the GPU of `ctx`
    /// (`ncclCommGrow` with no parent, NCCL 2.29). `bootstrap` is the one the
    /// coordinator (rank 0 of the existing communicator) serves as its rank
    /// 0; this process's rank in it decides its rank in the grown
    /// communicator ([`GrowPlan::joiner_rank`]). The id comes through
    /// `bootstrap` (with its deadlines); then creation has `config`'s
    /// timeout, in both modes as for [`Comm::init_rank_with`](crate::Comm::init_rank_with).
    ///
    /// The new communicator is `Live`.
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.29.2 (build or runtime); `InvalidArgument`
    /// (see [`GrowPlan::from_bootstrap`], [`GrowPlan::joiner_rank`]) or for
    /// `config`; `InGroup`; the bootstrap's errors; NCCL's error; `Timeout`.
    pub fn join(
        ctx: &Arc<CudaContext>,
        new_world: usize,
        bootstrap: &mut dyn Bootstrap,
        config: &Config,
    ) -> Result<Comm> {
        const OP: &str = "join";
        crate::base::thread::not_in_group(OP)?;
        crate::comm::close::admit(OP)?;
        ElasticApi::Grow.check()?;
        let plan = GrowPlan::from_bootstrap(new_world, bootstrap.world_size())?;
        let rank = plan.joiner_rank(bootstrap.rank())?;
        config.to_raw()?; // a bad config fails before the bootstrap waits
        let ids = bootstrap.share_ids(None)?;
        let [id] = ids[..] else {
            return Err(Error::invalid(
                OP,
                "bootstrap.share_ids",
                "one grow id",
                format!("{} ids", ids.len()),
            ));
        };
        #[cfg(nccl_fn = "ncclCommGrow")]
        {
            if let (true, Some(limit)) = (config.is_blocking(), config.timeout) {
                // as init_rank_with: a blocking creation cannot be abandoned
                // from here, so it runs on a thread of its own
                let (ctx2, config2) = (ctx.clone(), config.clone().no_timeout());
                return crate::comm::wait::within(limit, "ncclCommGrow", move || {
                    join_with_id(&ctx2, plan, rank, &id, &config2)
                })
                .map(|c| c.with_timeout(Some(limit)));
            }
            join_with_id(ctx, plan, rank, &id, config)
        }
        #[cfg(not(nccl_fn = "ncclCommGrow"))]
        {
            let _ = (ctx, plan, rank, id);
            Err(ElasticApi::Grow.missing("ncclCommGrow"))
        }
    }

    /// Releases this communicator's dynamic GPU memory while it is idle
    /// (`ncclCommSuspend` with `NCCL_SUSPEND_MEM`, NCCL 2.29.7), as inference
    /// engines do in "sleep mode"; [`Comm::mem_stats`](crate::Comm::mem_stats) says how much.
    /// Collective: every rank of the communicator calls it. NCCL first waits
    /// for the whole GPU (`cudaDeviceSynchronize`), then for every rank
    /// (a barrier over its bootstrap network, without a deadline), and only
    /// then unmaps the memory. Not for communicators created with
    /// [`Config::split_share`](crate::Config::split_share) (NCCL refuses).
    ///
    /// States: allowed while `Live`; afterwards `Suspended`: collectives are
    /// refused (no NCCL call) until [`Comm::resume`](crate::Comm::resume). If NCCL refuses it
    /// (invalid usage), the state is kept; another failure, or its timeout on
    /// a non-blocking communicator, is that of any operation (`Failed`, or
    /// aborted).
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.29.7 (build or runtime); `WrongState`;
    /// `InGroup`; NCCL's error (`ncclInvalidUsage` with
    /// `NCCL_DISABLE_MEM_MANAGER=1` or shared resources).
    pub fn suspend(&self) -> Result<()> {
        const OP: &str = "suspend";
        crate::base::thread::not_in_group(OP)?;
        ElasticApi::Suspend.gate("ncclCommSuspend")?;
        self.allow(OP, CommOp::Suspend)?;
        #[cfg(nccl_fn = "ncclCommSuspend")]
        {
            self.ctx.bind_to_thread()?;
            // SAFETY: a valid live communicator used by this thread only;
            // NCCL_SUSPEND_MEM is the flag the header defines. NCCL itself
            // waits for the device and every rank before it unmaps memory.
            let r = unsafe { sys::ncclCommSuspend(self.raw.get(), sys::NCCL_SUSPEND_MEM as i32) };
            // NCCL 2.30.3+ queues it as a group task: a non-blocking
            // communicator answers ncclInProgress, settled here
            self.settle_op("ncclCommSuspend", r)?;
            self.state.set(crate::base::state::CommState::Suspended);
            Ok(())
        }
        #[cfg(not(nccl_fn = "ncclCommSuspend"))]
        {
            Err(ElasticApi::Suspend.missing("ncclCommSuspend"))
        }
    }

    /// Maps a suspended communicator's memory back (`ncclCommResume`, NCCL
    /// 2.29.7). Collective: every rank calls it (NCCL exchanges the new
    /// memory handles over its bootstrap network, without a deadline).
    ///
    /// States: allowed while `Suspended`; afterwards `Live`. If NCCL refuses
    /// it, it stays `Suspended` (abort or drop it, or try again).
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.29.7 (build or runtime); `WrongState`;
    /// `InGroup`; NCCL's error.
    pub fn resume(&self) -> Result<()> {
        const OP: &str = "resume";
        crate::base::thread::not_in_group(OP)?;
        ElasticApi::Suspend.gate("ncclCommResume")?;
        self.allow(OP, CommOp::Resume)?;
        #[cfg(nccl_fn = "ncclCommSuspend")]
        {
            self.ctx.bind_to_thread()?;
            // SAFETY: a valid, suspended communicator used by this thread only.
            let r = unsafe { sys::ncclCommResume(self.raw.get()) };
            // as suspend: ncclInProgress on a non-blocking communicator
            self.settle_op("ncclCommResume", r)?;
            self.state.set(crate::base::state::CommState::Live);
            Ok(())
        }
        #[cfg(not(nccl_fn = "ncclCommSuspend"))]
        {
            Err(ElasticApi::Suspend.missing("ncclCommResume"))
        }
    }

    /// How much GPU memory NCCL holds for this communicator, and whether it
    /// is suspended (`ncclCommMemStats`, NCCL 2.29.7). Local; no wait.
    ///
    /// States: allowed while `Live`, `Revoked` or `Suspended`; the state
    /// does not change.
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.29.7 (build or runtime); `WrongState`;
    /// `InGroup`; NCCL's error (`ncclInvalidUsage` with
    /// `NCCL_DISABLE_MEM_MANAGER=1`).
    pub fn mem_stats(&self) -> Result<MemStats> {
        const OP: &str = "mem_stats";
        crate::base::thread::not_in_group(OP)?;
        ElasticApi::Suspend.gate("ncclCommMemStats")?;
        self.allow(OP, CommOp::MemStats)?;
        #[cfg(nccl_fn = "ncclCommSuspend")]
        {
            let stat = |which: sys::ncclCommMemStat_t| -> Result<u64> {
                let mut v = 0u64;
                // SAFETY: a valid communicator used by this thread only, a
                // statistic the header defines, a valid out-pointer.
                unsafe {
                    nccl!(self.raw.get() => ncclCommMemStats(self.raw.get(), which, &mut v))
                }?;
                Ok(v)
            };
            Ok(MemStats {
                suspendable: stat(sys::ncclCommMemStat_t::ncclStatGpuMemSuspend)?,
                persistent: stat(sys::ncclCommMemStat_t::ncclStatGpuMemPersist)?,
                total: stat(sys::ncclCommMemStat_t::ncclStatGpuMemTotal)?,
                suspended: stat(sys::ncclCommMemStat_t::ncclStatGpuMemSuspended)? != 0,
            })
        }
        #[cfg(not(nccl_fn = "ncclCommSuspend"))]
        {
            Err(ElasticApi::Suspend.missing("ncclCommMemStats"))
        }
    }
}

/// The joiner's `ncclCommGrow`, given the id.
#[cfg(nccl_fn = "ncclCommGrow")]
fn join_with_id(
    ctx: &Arc<CudaContext>,
    plan: GrowPlan,
    rank: usize,
    id: &crate::UniqueId,
    config: &Config,
) -> Result<Comm> {
    const API: &str = "ncclCommGrow";
    let mut raw_cfg = config.to_raw()?;
    ctx.bind_to_thread()?;
    let slot = AtomicPtr::new(std::ptr::null_mut());
    // SAFETY: no parent (null), as NCCL documents for new ranks, with the
    // coordinator's grow id and this rank (old_world <= rank < new_world,
    // both fit an i32: GrowPlan); the config and its strings outlive the wait
    // below; NCCL writes the new communicator into `slot` during the call and
    // again when its job ends: `adopt_with` does not return before that job
    // has ended or (through the abort on error) was joined, and `slot` lives
    // until then. NCCL uses the calling thread's device: ctx is bound above.
    let r = unsafe {
        sys::ncclCommGrow(
            std::ptr::null_mut(),
            plan.new_world() as i32,
            id.as_raw(),
            rank as i32,
            slot.as_ptr(),
            &mut raw_cfg,
        )
    };
    let raw = slot.load(std::sync::atomic::Ordering::Acquire);
    let mut comm = Comm::adopt_with(
        raw,
        ctx,
        rank,
        plan.new_world(),
        config.is_blocking(),
        config.timeout,
        config.name_handle(),
        API,
        r,
    )?;
    comm.share = config.sharing();
    check_grown(&comm, rank, plan.new_world())?;
    Ok(comm)
}

/// The grown communicator is rank `rank` of `world`, as NCCL says.
#[cfg(nccl_fn = "ncclCommGrow")]
fn check_grown(comm: &Comm, rank: usize, world: usize) -> Result<()> {
    let r = comm.query("ncclCommUserRank", sys::ncclCommUserRank)? as usize;
    let w = comm.query("ncclCommCount", sys::ncclCommCount)? as usize;
    if (r, w) != (rank, world) {
        return Err(inconsistent(
            "ncclCommGrow",
            format!("NCCL made rank {r} of {w}, expected rank {rank} of {world}"),
        ));
    }
    Ok(())
}

/// What [`Comm::shrink_or_recreate`](crate::Comm::shrink_or_recreate) did to go on without the lost ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// `ncclCommShrink` made the new communicator.
    Shrunk,
    /// NCCL refused to shrink, and the survivors made a fresh communicator
    /// (a new unique id through the survivors' [`Bootstrap`]).
    Recreated,
}

impl Comm {
    /// [`Comm::shrink`](crate::Comm::shrink), falling back to a fresh communicator of the
    /// survivors when NCCL refuses to shrink: NCCL's shrink (and split)
    /// checks the parent's asynchronous state first (`ncclCommEnsureReady`),
    /// and after a peer's death over the network transport that state keeps
    /// the proxy's `ncclRemoteError` for good, revoke or not (seen with NCCL
    /// 2.28.9, and so in NCCL's source up to 2.30). The old communicator is
    /// released either way (`ncclCommAbort`). A communicator already aborted
    /// (by [`Comm::revoke`](crate::Comm::revoke) that could not confirm the
    /// revoke, say) goes straight to the fresh one.
    ///
    /// `survivors` is a [`Bootstrap`] of the survivors under their new ranks
    /// ([`RankMap::excluding`] gives them, new rank 0 shares the id), used
    /// only for the fallback. Every survivor must call this with the same
    /// `exclude` (each gets the same outcome: either NCCL shrinks everywhere
    /// or refuses everywhere, since every survivor saw the failure).
    ///
    /// # Errors
    /// As [`Comm::shrink`](crate::Comm::shrink) for argument and state errors; the bootstrap's and
    /// [`Comm::init_rank_with`](crate::Comm::init_rank_with)'s errors on the fallback.
    pub fn shrink_or_recreate(
        self,
        exclude: &[usize],
        mode: ShrinkMode,
        config: Option<&Config>,
        survivors: &mut dyn Bootstrap,
    ) -> Result<(Shrunk, Recovery)> {
        let ranks = RankMap::excluding(self.world_size(), self.rank(), exclude)?;
        // `excluding` checked that this rank stays
        let me = ranks
            .new_rank(self.rank())
            .ok_or_else(|| Error::invalid("shrink", "exclude", "not this rank", self.rank()))?;
        // an aborted communicator (a revoke that could not be confirmed
        // aborts it) cannot shrink: go straight to a fresh one
        if !self.is_aborted() {
            match self.shrink(exclude, mode, config) {
                Ok(s) => return Ok((s, Recovery::Shrunk)),
                Err(Error::Nccl { .. }) => {} // NCCL refused: a fresh one
                Err(e) => return Err(e),
            }
        }
        let ctx = self.context().clone();
        drop(self); // ncclCommAbort
        let world = ranks.survivors().len();
        let ids = if me == 0 {
            survivors.share_ids(Some(vec![crate::UniqueId::new()?]))?
        } else {
            survivors.share_ids(None)?
        };
        // a Bootstrap of the caller's answers with whatever it has
        let id = ids.first().ok_or_else(|| {
            Error::invalid(
                "shrink_or_recreate",
                "survivors.share_ids()",
                "at least one unique id",
                "none",
            )
        })?;
        let default = Config::new();
        let comm = Comm::init_rank_with(&ctx, world, id, me, config.unwrap_or(&default))?;
        Ok((Shrunk { comm, ranks }, Recovery::Recreated))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_world(e: Error) -> String {
        match e {
            Error::InvalidArgument {
                op: "shrink",
                arg: "world",
                actual,
                ..
            } => actual,
            e => panic!("not refused for its world: {e:?}"),
        }
    }

    /// A world NCCL cannot have is refused before anything of its size is
    /// allocated (a table of `1 << 40` flags aborted the process, one of
    /// `usize::MAX` panicked).
    #[test]
    fn worlds_beyond_nccls_int_are_refused_without_allocating() {
        for world in [MAX_WORLD + 1, 1 << 40, usize::MAX] {
            let e = RankMap::excluding(world, 0, &[1]).unwrap_err();
            assert_eq!(refused_world(e), world.to_string());
        }
        let e = RankMap::excluding(usize::MAX, usize::MAX - 1, &[0, usize::MAX - 2]).unwrap_err();
        assert_eq!(refused_world(e), usize::MAX.to_string());
    }

    /// Large worlds within the bound cost only the excluded list until the
    /// ranks are mapped: the checks of `exclude` need no table of the world.
    #[test]
    fn exclude_is_checked_without_a_table_of_the_world() {
        let big = MAX_WORLD;
        let e = RankMap::excluding(big, 5, &[7, big - 1, 7]).unwrap_err();
        assert!(e.to_string().contains("rank 7 twice"), "{e}");
        let e = RankMap::excluding(big, 5, &[big]).unwrap_err();
        assert!(e.to_string().contains(&format!("rank {big}")), "{e}");
        let e = RankMap::excluding(big, 5, &[big - 1, 5]).unwrap_err();
        assert!(e.to_string().contains("this rank (5)"), "{e}");
        let map = RankMap::excluding(6, 2, &[5, 0, 3]).unwrap();
        assert_eq!(map.survivors(), [1, 2, 4]);
        assert_eq!(map.excluded(), [0, 3, 5]);
    }
}
