//! Creating communicators: one rank at a time, scalably from several ids,
//! or every rank of this process at once.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::CudaContext;

use crate::base::error::{Error, Result};
use crate::base::runtime::checked_runtime;
use crate::base::state::CommState;
use crate::comm::UniqueId;
use crate::comm::wait::within;
use crate::comm::{Comm, Config};
use crate::sys;

fn world_arg(op: &'static str, world: usize) -> Result<i32> {
    if world == 0 || world > i32::MAX as usize {
        return Err(Error::invalid(op, "world", "1 ..= i32::MAX ranks", world));
    }
    Ok(world as i32)
}

/// `world` as NCCL's `nranks`, checked with `rank < world`.
fn rank_args(op: &'static str, world: usize, rank: usize) -> Result<i32> {
    let nranks = world_arg(op, world)?;
    crate::base::contract::rank_arg(op, "rank", rank, world)?;
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
    /// `AbortsRunning` while [`MAX_ABORTS_RUNNING`](crate::MAX_ABORTS_RUNNING)
    /// aborts of earlier communicators are still running (this and every
    /// other creation, split, shrink, grow and join);
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
        crate::base::thread::not_in_group(OP)?;
        crate::comm::close::admit(OP)?;
        let nranks = rank_args(OP, world, rank)?;
        checked_runtime()?;
        if let (true, Some(limit)) = (config.is_blocking(), config.timeout) {
            // A blocking init cannot be aborted before it returns the
            // communicator, so it runs on a thread of its own and the caller
            // waits at most `limit`. A late success is aborted there.
            let (ctx2, id2, config2) = (ctx.clone(), *id, config.clone().no_timeout());
            return within(limit, "ncclCommInitRankConfig", move || {
                Comm::init_rank_with(&ctx2, world, &id2, rank, &config2)
            })
            .map(|c| c.with_timeout(Some(limit)));
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
    /// (share them with `bootstrap::TcpBootstrap::share_n_ids`).
    ///
    /// # Errors
    /// As `init_rank_with`; `InvalidArgument` for no ids; `Unsupported`
    /// before NCCL 2.23.
    #[cfg(nccl_fn = "ncclCommInitRankScalable")]
    pub fn init_rank_scalable(
        ctx: &Arc<CudaContext>,
        world: usize,
        ids: &[UniqueId],
        rank: usize,
        config: &Config,
    ) -> Result<Comm> {
        const OP: &str = "init_rank_scalable";
        crate::base::thread::not_in_group(OP)?;
        crate::comm::close::admit(OP)?;
        crate::base::runtime::require_api("ncclCommInitRankScalable")?;
        let nranks = rank_args(OP, world, rank)?;
        if ids.is_empty() || ids.len() > i32::MAX as usize {
            return Err(Error::invalid(OP, "ids.len()", "at least 1", ids.len()));
        }
        if let (true, Some(limit)) = (config.is_blocking(), config.timeout) {
            // as init_rank_with: a blocking creation waits at most `limit`
            let (ctx2, ids2, config2) = (ctx.clone(), ids.to_vec(), config.clone().no_timeout());
            return within(limit, "ncclCommInitRankScalable", move || {
                Comm::init_rank_scalable(&ctx2, world, &ids2, rank, &config2)
            })
            .map(|c| c.with_timeout(Some(limit)));
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
        let (blocking, timeout) = (config.is_blocking(), config.timeout);
        let name = config.name_handle();
        let mut comm = Comm::adopt_with(raw, ctx, rank, world, blocking, timeout, name, api, r)?;
        comm.share = config.sharing();
        Ok(comm)
    }

    /// [`Comm::adopt`] with the mode and timeout given. Returns only once
    /// NCCL's creation job has ended: settled, or aborted (which joins it).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn adopt_with(
        raw: sys::ncclComm_t,
        ctx: &Arc<CudaContext>,
        rank: usize,
        world: usize,
        blocking: bool,
        timeout: Option<Duration>,
        name: Option<Arc<std::ffi::CString>>,
        api: &'static str,
        r: sys::ncclResult_t,
    ) -> Result<Comm> {
        let mut comm = Comm::wrap(raw, ctx.clone(), rank, world, blocking, timeout);
        if r == sys::ncclResult_t::ncclInProgress {
            // only a non-blocking communicator answers so: NCCL made it one
            // (NCCL_COMM_BLOCKING, also from NCCL's configuration files)
            comm.blocking = false;
        }
        // before the settle: a failed creation is aborted, and NCCL's
        // profiler hook may read the name then
        comm.name = name;
        comm.settle(api, r)?;
        Ok(comm)
    }

    /// A live `Comm` around `raw` (which it then owns: aborted on drop).
    pub(crate) fn wrap(
        raw: sys::ncclComm_t,
        ctx: Arc<CudaContext>,
        rank: usize,
        world: usize,
        blocking: bool,
        timeout: Option<Duration>,
    ) -> Comm {
        Comm {
            raw: Cell::new(raw),
            abort: Arc::default(),
            ctx,
            rank,
            world,
            blocking,
            timeout,
            state: Cell::new(CommState::Live),
            registry: Arc::default(),
            name: None,
            share: (false, false),
            orphans: Arc::default(),
            linger: None,
        }
    }

    /// One communicator per context, all in this process
    /// (`ncclCommInitAll`): rank `i` runs on `ctxs[i]`.
    ///
    /// # Errors
    /// `InvalidArgument` for no contexts or the same GPU twice; NCCL's error.
    pub fn init_all(ctxs: &[Arc<CudaContext>]) -> Result<Vec<Comm>> {
        const OP: &str = "init_all";
        crate::base::thread::not_in_group(OP)?;
        crate::comm::close::admit(OP)?;
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
        // in progress: NCCL made them non-blocking (NCCL_COMM_BLOCKING=0);
        // each settles, and one that fails is dropped (aborted) with the rest
        let blocking = r != sys::ncclResult_t::ncclInProgress;
        if blocking {
            crate::base::call::check("ncclCommInitAll", r)?;
        }
        let comms: Vec<Comm> = raws
            .into_iter()
            .zip(ctxs)
            .enumerate()
            .filter(|(_, (raw, _))| !raw.is_null())
            .map(|(rank, (raw, ctx))| {
                let mut c = Comm::wrap(raw, ctx.clone(), rank, ctxs.len(), blocking, None);
                // no config: NCCL's defaults, which the variables override
                c.share = Config::default().sharing();
                c
            })
            .collect();
        for c in &comms {
            c.settle("ncclCommInitAll", r)?;
        }
        if comms.len() != ctxs.len() {
            return Err(Error::Nccl {
                api: "ncclCommInitAll",
                code: crate::NcclCode::InternalError,
                last_error: "NCCL made fewer communicators than asked".into(),
            });
        }
        Ok(comms)
    }

    /// Every rank of this process in one communicator, created together: a
    /// group of `ncclCommInitRankConfig`, one per `(context, rank)` of
    /// `ranks` (NCCL's pattern for several GPUs per process, and the only one
    /// that works when other processes hold the other ranks: creating them
    /// one after another would wait for each other). Every process of the
    /// communicator calls this (or [`Comm::init_rank_with`]) with the same
    /// `id` and `world`. The communicators come back in the order of `ranks`.
    ///
    /// [`Config::timeout`] bounds the whole creation as for
    /// [`Comm::init_rank_with`].
    ///
    /// ```no_run
    /// # fn demo(id: &nccl::UniqueId) -> nccl::Result<()> {
    /// // process 1 of 2, GPUs 0 and 1 are ranks 2 and 3 of 4
    /// let mine = [(nccl::context(0)?, 2), (nccl::context(1)?, 3)];
    /// let comms = nccl::Comm::init_ranks(&mine, 4, id, &nccl::Config::new())?;
    /// assert_eq!(comms[1].rank(), 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidArgument` for no ranks, a rank twice or out of range, or the
    /// same GPU twice; `InGroup`; `Unsupported` for config fields the NCCL in
    /// use lacks; NCCL's error; `Timeout`. On any error every communicator
    /// made so far is aborted.
    pub fn init_ranks(
        ranks: &[(Arc<CudaContext>, usize)],
        world: usize,
        id: &UniqueId,
        config: &Config,
    ) -> Result<Vec<Comm>> {
        const OP: &str = "init_ranks";
        crate::base::thread::not_in_group(OP)?;
        crate::comm::close::admit(OP)?;
        let nranks = world_arg(OP, world)?;
        if ranks.is_empty() {
            return Err(Error::invalid(OP, "ranks", "at least one", 0));
        }
        for (i, (ctx, rank)) in ranks.iter().enumerate() {
            crate::base::contract::rank_arg(OP, "rank", *rank, world)?;
            if ranks[..i].iter().any(|(_, r)| r == rank) {
                return Err(Error::invalid(
                    OP,
                    "ranks",
                    "each rank once",
                    format!("rank {rank} twice"),
                ));
            }
            if ranks[..i].iter().any(|(c, _)| c.ordinal() == ctx.ordinal()) {
                return Err(Error::invalid(
                    OP,
                    "ranks",
                    "one rank per GPU",
                    format!("GPU {} twice", ctx.ordinal()),
                ));
            }
        }
        checked_runtime()?;
        if let (true, Some(limit)) = (config.is_blocking(), config.timeout) {
            let (ranks2, id2, config2) = (ranks.to_vec(), *id, config.clone().no_timeout());
            return within(limit, "ncclCommInitRankConfig", move || {
                Comm::init_ranks(&ranks2, world, &id2, &config2)
            })
            .map(|cs| {
                cs.into_iter()
                    .map(|c| c.with_timeout(Some(limit)))
                    .collect()
            });
        }
        let mut raw_cfgs = ranks
            .iter()
            .map(|_| config.to_raw())
            .collect::<Result<Vec<_>>>()?;
        let mut raws: Vec<sys::ncclComm_t> = vec![std::ptr::null_mut(); ranks.len()];
        // SAFETY: no arguments; the group is ended below on this thread,
        // whatever happens in between.
        unsafe { nccl!(ncclGroupStart()) }?;
        let mut first_err = None;
        for (i, (ctx, rank)) in ranks.iter().enumerate() {
            if let Err(e) = ctx.bind_to_thread() {
                first_err = Some(e.into());
                break;
            }
            // SAFETY: valid out-pointer (a slot of `raws`, which is not
            // resized while NCCL may write it: NCCL writes it during this
            // call) and config (its strings live in `config`); the id is
            // passed by value; rank < world was checked. NCCL uses the
            // thread's current device: this rank's, bound above.
            let r = unsafe {
                sys::ncclCommInitRankConfig(
                    &mut raws[i],
                    nranks,
                    *id.as_raw(),
                    *rank as i32,
                    &mut raw_cfgs[i],
                )
            };
            if r != sys::ncclResult_t::ncclSuccess && r != sys::ncclResult_t::ncclInProgress {
                first_err = Some(crate::base::call::failure(
                    "ncclCommInitRankConfig",
                    r,
                    raws[i],
                ));
                break;
            }
        }
        // SAFETY: closes the group opened above, on this thread.
        let end = unsafe { sys::ncclGroupEnd() };
        // own every communicator NCCL made, so that an error drops (aborts) them
        let mut comms: Vec<Comm> = raws
            .iter()
            .zip(ranks)
            .filter(|(raw, _)| !raw.is_null())
            .map(|(&raw, (ctx, rank))| {
                let mut c = Comm::wrap(
                    raw,
                    ctx.clone(),
                    *rank,
                    world,
                    config.is_blocking(),
                    config.timeout,
                );
                c.name = config.name_handle();
                c.share = config.sharing();
                c
            })
            .collect();
        if let Some(e) = first_err {
            return Err(e);
        }
        if comms.len() != ranks.len() {
            return Err(Error::Nccl {
                api: "ncclCommInitRankConfig",
                code: crate::NcclCode::InternalError,
                last_error: "NCCL made fewer communicators than asked".into(),
            });
        }
        for c in &mut comms {
            // blocking: the group's end returned the result; non-blocking
            // (or made so by NCCL: it answered in progress): each
            // communicator settles (its creation job ran on NCCL's thread)
            if end == sys::ncclResult_t::ncclInProgress {
                c.blocking = false;
            }
            c.settle(
                "ncclGroupEnd",
                if c.blocking {
                    end
                } else {
                    sys::ncclResult_t::ncclInProgress
                },
            )?;
        }
        Ok(comms)
    }

    /// [`Comm::init_all`] with a [`Config`]: one communicator per context, all
    /// in this process, rank `i` on `ctxs[i]` ([`Comm::init_ranks`] with a new
    /// id).
    ///
    /// # Errors
    /// As [`Comm::init_ranks`].
    pub fn init_all_with(ctxs: &[Arc<CudaContext>], config: &Config) -> Result<Vec<Comm>> {
        let ranks: Vec<(Arc<CudaContext>, usize)> = ctxs
            .iter()
            .cloned()
            .enumerate()
            .map(|(r, c)| (c, r))
            .collect();
        Comm::init_ranks(&ranks, ctxs.len(), &UniqueId::new()?, config)
    }
}
