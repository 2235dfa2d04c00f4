//! Who am I? Rank, world size and local rank from the launcher that started
//! this process: torchrun, Slurm, Open MPI, or this crate's own variables.

use std::fmt;

use crate::error::{Error, Result};

/// Which launcher's variables were used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LaunchSource {
    /// `NCCL_RS_RANK`, `NCCL_RS_WORLD_SIZE`, `NCCL_RS_LOCAL_RANK` (optional, default 0).
    Explicit,
    /// torchrun / `torch.distributed.launch`: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`.
    Torchrun,
    /// Slurm (`srun`): `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`.
    Slurm,
    /// Open MPI (`mpirun`): `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
    /// `OMPI_COMM_WORLD_LOCAL_RANK`.
    OpenMpi,
}

impl fmt::Display for LaunchSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LaunchSource::Explicit => "NCCL_RS_* variables",
            LaunchSource::Torchrun => "torchrun (RANK/WORLD_SIZE/LOCAL_RANK)",
            LaunchSource::Slurm => "Slurm (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID)",
            LaunchSource::OpenMpi => "Open MPI (OMPI_COMM_WORLD_*)",
        })
    }
}

/// The variable names of one launcher: rank, world size, local rank.
const SOURCES: [(LaunchSource, &str, &str, &str); 4] = [
    (
        LaunchSource::Explicit,
        "NCCL_RS_RANK",
        "NCCL_RS_WORLD_SIZE",
        "NCCL_RS_LOCAL_RANK",
    ),
    (LaunchSource::Torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    (
        LaunchSource::Slurm,
        "SLURM_PROCID",
        "SLURM_NTASKS",
        "SLURM_LOCALID",
    ),
    (
        LaunchSource::OpenMpi,
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
    ),
];

/// What the launcher told this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchInfo {
    /// This process's rank, `0..world`.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Rank among the processes of this machine (picks the GPU).
    pub local_rank: usize,
    /// Where rank 0 listens for the rendezvous (`host:port`), from
    /// `NCCL_RS_ROOT`, or `MASTER_ADDR` + `MASTER_PORT`; `None` when unset
    /// (fine for world 1).
    pub root: Option<String>,
    /// The launcher whose variables were used.
    pub source: LaunchSource,
}

fn env_err(var: impl Into<String>, problem: impl Into<String>) -> Error {
    Error::LaunchEnv {
        var: var.into(),
        problem: problem.into(),
    }
}

fn number(get: &dyn Fn(&str) -> Option<String>, var: &str) -> Result<Option<usize>> {
    match get(var) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| env_err(var, format!("{v:?} is not a non-negative integer"))),
    }
}

impl LaunchInfo {
    /// Reads this process's environment.
    ///
    /// # Errors
    /// [`Error::LaunchEnv`] naming the variables when none of the launchers'
    /// variables are set, a value is missing or not a number, `rank >=
    /// world`, or two launchers' variables disagree.
    pub fn from_env() -> Result<LaunchInfo> {
        LaunchInfo::from_vars(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Like [`LaunchInfo::from_env`], with the variables from `get`.
    ///
    /// # Errors
    /// As [`LaunchInfo::from_env`].
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<LaunchInfo> {
        // every launcher whose rank variable is set
        let mut present = Vec::new();
        for &(source, rank_var, world_var, local_var) in &SOURCES {
            if let Some(rank) = number(get, rank_var)? {
                let world = number(get, world_var)?;
                let local = number(get, local_var)?;
                present.push((source, rank_var, rank, world_var, world, local_var, local));
            }
        }
        let Some(&(source, rank_var, rank, world_var, world, local_var, local)) = present.first()
        else {
            return Err(env_err(
                "RANK/WORLD_SIZE",
                "no launcher variables found: start under torchrun, srun (Slurm) or mpirun (Open MPI), \
                 `cargo xtask launch`, or set NCCL_RS_RANK and NCCL_RS_WORLD_SIZE",
            ));
        };
        let world =
            world.ok_or_else(|| env_err(world_var, format!("missing ({rank_var} is set)")))?;
        if world == 0 {
            return Err(env_err(world_var, "must be at least 1"));
        }
        if rank >= world {
            return Err(env_err(
                format!("{rank_var}/{world_var}"),
                format!("rank {rank} is not below the world size {world}"),
            ));
        }
        let local_rank = match (local, source) {
            (Some(l), _) => l,
            (None, LaunchSource::Explicit) => 0,
            (None, _) => return Err(env_err(local_var, format!("missing ({rank_var} is set)"))),
        };
        for &(_, other_rank_var, other_rank, other_world_var, other_world, _, _) in &present[1..] {
            if other_rank != rank {
                return Err(env_err(
                    format!("{rank_var}/{other_rank_var}"),
                    format!(
                        "contradict each other: {rank_var}={rank} but {other_rank_var}={other_rank}"
                    ),
                ));
            }
            if let Some(w) = other_world.filter(|&w| w != world) {
                return Err(env_err(
                    format!("{world_var}/{other_world_var}"),
                    format!("contradict each other: {world_var}={world} but {other_world_var}={w}"),
                ));
            }
        }
        let root = match (get("NCCL_RS_ROOT"), get("MASTER_ADDR"), get("MASTER_PORT")) {
            (Some(r), _, _) => Some(r),
            (None, Some(a), Some(p)) => {
                let port: u16 = p
                    .trim()
                    .parse()
                    .map_err(|_| env_err("MASTER_PORT", format!("{p:?} is not a port number")))?;
                Some(if a.contains(':') {
                    format!("[{a}]:{port}")
                } else {
                    format!("{a}:{port}")
                })
            }
            (None, Some(_), None) => {
                return Err(env_err("MASTER_PORT", "missing (MASTER_ADDR is set)"));
            }
            (None, None, Some(_)) => {
                return Err(env_err("MASTER_ADDR", "missing (MASTER_PORT is set)"));
            }
            (None, None, None) => None,
        };
        Ok(LaunchInfo {
            rank,
            world,
            local_rank,
            root,
            source,
        })
    }
}

/// How [`init_from_launcher`] sets up the communicator.
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    /// Deadline for the rendezvous and for communicator creation.
    pub timeout: std::time::Duration,
    /// Shared secret for the rendezvous; default: `NCCL_RS_SECRET` if set.
    pub secret: Option<Vec<u8>>,
    /// Communicator configuration; unless it sets its own timeout, creation
    /// has `timeout` as its deadline. The default is non-blocking, so that
    /// every call that waits on a peer can be abandoned: a blocking
    /// communicator's first collective connects to its peers inside the call,
    /// where a missing peer blocks it for good and no abort reaches it.
    ///
    /// The price: NCCL launches each call of a non-blocking communicator from
    /// a thread it starts for that call, about 70 µs of host time per call
    /// (measured in C and here alike, docs/performance.md). Where host time
    /// per call matters more, `Config::new().blocking(true)`: creation keeps
    /// its deadline and calls cost what they cost in C.
    pub config: crate::Config,
}

impl Default for LaunchOptions {
    fn default() -> LaunchOptions {
        LaunchOptions {
            timeout: std::time::Duration::from_secs(300),
            secret: std::env::var("NCCL_RS_SECRET")
                .ok()
                .filter(|s| !s.is_empty())
                .map(String::into_bytes),
            config: crate::Config::new().blocking(false),
        }
    }
}

/// From "my launcher started me" to a ready communicator: reads the
/// launcher's variables ([`LaunchInfo::from_env`]), binds GPU `local_rank`
/// (modulo the GPUs visible), hands rank 0's unique id to every rank over the
/// TCP rendezvous at `MASTER_ADDR:MASTER_PORT` (or `NCCL_RS_ROOT`), and
/// creates the communicator, all within `opts.timeout`.
///
/// ```no_run
/// let (comm, info) = nccl::init_from_launcher(&nccl::LaunchOptions::default())?;
/// eprintln!("rank {} of {} on GPU {} ({})", comm.rank(), comm.world_size(), comm.device(), info.source);
/// comm.finalize()?;
/// # Ok::<(), nccl::Error>(())
/// ```
///
/// # Errors
/// `LaunchEnv` for missing or contradictory variables (or no rendezvous
/// address with more than one rank); the rendezvous errors; CUDA and NCCL
/// errors; `Timeout`.
pub fn init_from_launcher(opts: &LaunchOptions) -> Result<(crate::Comm, LaunchInfo)> {
    use crate::rendezvous::{Bootstrap, TcpBootstrap};
    let info = LaunchInfo::from_env()?;
    // cudarc panics without a driver: check it first
    crate::driver::driver_version()?;
    cudarc::driver::result::init()?;
    let gpus = cudarc::driver::CudaContext::device_count()? as usize;
    if gpus == 0 {
        return Err(env_err(
            "CUDA_VISIBLE_DEVICES",
            "no GPU is visible to this process",
        ));
    }
    let ctx = cudarc::driver::CudaContext::new(info.local_rank % gpus)?;
    let id = if info.world == 1 {
        crate::UniqueId::new()?
    } else {
        let root = info.root.clone().ok_or_else(|| {
            env_err(
                "MASTER_ADDR/MASTER_PORT",
                format!("needed to meet the other ranks (world {})", info.world),
            )
        })?;
        let secret = opts.secret.clone().unwrap_or_default();
        let mut b = TcpBootstrap::new(&root, info.rank, info.world, &secret, opts.timeout)?;
        if info.rank == 0 {
            b.listen()?; // a port in use fails before an id is made
            b.share_ids(Some(vec![crate::UniqueId::new()?]))?[0]
        } else {
            b.share_ids(None)?[0]
        }
    };
    let config = opts.config.with_default_deadline(opts.timeout);
    let comm = crate::Comm::init_rank_with(&ctx, info.world, &id, info.rank, &config)?;
    Ok((comm, info))
}
