//! Who am I, and where do the ranks meet? Rank, world size and local rank
//! from the launcher that started this process (torchrun, Slurm, Open MPI,
//! MPICH's or Intel MPI's `mpiexec` (Hydra), Cray PALS, or this crate's own
//! variables), and the rendezvous: torchrun's own `TCPStore`, a store named
//! by `NCCL_RS_STORE`, or this crate's TCP rendezvous at
//! `MASTER_ADDR:MASTER_PORT`, `NCCL_RS_ROOT`, or a root derived from Slurm's
//! node list.
//!
//! # Nested launchers
//!
//! The innermost launcher wins, without complaint about the outer ones'
//! variables (they are listed in [`LaunchInfo::ignored`]). In order:
//! `NCCL_RS_*` (set by hand), torchrun (`RANK`…; torchrun inside `sbatch`
//! or `srun` inherits `SLURM_PROCID` of the batch step), Open MPI
//! (`OMPI_COMM_WORLD_*`; `mpirun` inside `salloc` inherits the `SLURM_*` of
//! its daemons' step), PMI (`PMI_RANK`, `PMI_SIZE` and a local rank,
//! `MPI_LOCALRANKID` from Hydra's `mpiexec` or `PMI_LOCAL_RANK` from Cray
//! PALS; Hydra inside `salloc` leaves each rank the `SLURM_*` of its proxy's
//! step, the same `SLURM_PROCID` for every rank of a node), Slurm
//! (`SLURM_PROCID`…). `PMI_RANK` without a local rank does not count: `srun
//! --mpi=pmi2` sets it for ranks that Slurm describes.
//!
//! # Where the ranks meet ([`Rendezvous`])
//!
//! 1. `NCCL_RS_STORE=host:port`: a PyTorch `TCPStore` there (a Python
//!    trainer's `torch.distributed.TCPStore`, a [`TcpStoreServer`](crate::bootstrap::TcpStoreServer)).
//! 2. `NCCL_RS_ROOT=host:port`: this crate's TCP rendezvous, rank 0 listening.
//! 3. torchrun with `TORCHELASTIC_USE_AGENT_STORE=True` (static rendezvous,
//!    `--standalone`, c10d): the agent's `TCPStore` at
//!    `MASTER_ADDR:MASTER_PORT`, which the agent already listens on.
//! 4. `MASTER_ADDR` + `MASTER_PORT`: this crate's TCP rendezvous.
//! 5. Under Slurm (launched by `srun`, or by `mpirun` or `mpiexec` inside an
//!    allocation; `mpiexec`'s ranks on one node meet as in 7 instead) with no
//!    `MASTER_ADDR`: the first host of
//!    `SLURM_STEP_NODELIST` (else `SLURM_JOB_NODELIST`), port
//!    [`slurm_port`](crate::bootstrap::slurm::slurm_port)`(job id, step id)`
//!    (20000–29999) unless `MASTER_PORT` is set. Rank 0 checks that it runs
//!    on that host (`SLURMD_NODENAME`).
//! 6. `mpirun` with every rank on one node, no Slurm, no `MASTER_ADDR`:
//!    `127.0.0.1`, port from the Open MPI job id (20000–29999) unless
//!    `MASTER_PORT` is set.
//! 7. `mpiexec` (Hydra) with every rank on one node (`MPI_LOCALNRANKS` equal
//!    to `PMI_SIZE`; inside a Slurm allocation too), no `MASTER_ADDR`, and
//!    this process's parent Hydra's proxy (`hydra_pmi_proxy`, one per node,
//!    the parent of every rank there): `127.0.0.1`, port from its process id
//!    (20000–29999) unless `MASTER_PORT` is set. Hydra exports no job id, so
//!    only [`LaunchInfo::from_env`], which can ask for the parent process,
//!    finds this; on several nodes, or for ranks started through a wrapper
//!    that stays their parent, give `MASTER_ADDR` and `MASTER_PORT`.
//!
//! In a store, the id is under [`store_id_key`]`(run,
//! restart)` = `nccl-rs/<run>/<restart>/uid` with `run` from `NCCL_RS_RUN_ID`,
//! else `TORCHELASTIC_RUN_ID`, else `default`, and `restart` from
//! `TORCHELASTIC_RESTART_COUNT`, else `0`: each torchrun restart meets under
//! a fresh key.

use std::ffi::OsString;
use std::fmt;
use std::time::{Duration, Instant};

use crate::base::error::{Error, Result};
use crate::base::text::quote;
use crate::bootstrap::rendezvous::{MAX_WORLD, TcpBootstrap};
use crate::bootstrap::secret::{MIN_SECRET_LEN, Secret};
use crate::bootstrap::slurm;
use crate::bootstrap::store::{StoreBootstrap, TcpStore, store_id_key};
use crate::comm::Bootstrap;

/// Which launcher's variables were used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LaunchSource {
    /// `NCCL_RS_RANK`, `NCCL_RS_WORLD_SIZE`, `NCCL_RS_LOCAL_RANK` (optional, default 0).
    Explicit,
    /// torchrun / `torch.distributed.launch`: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`.
    Torchrun,
    /// Slurm (`srun`): `SLURM_PROCID`, `SLURM_NTASKS` (or `SLURM_NPROCS`), `SLURM_LOCALID`.
    Slurm,
    /// Open MPI (`mpirun`): `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`,
    /// `OMPI_COMM_WORLD_LOCAL_RANK`.
    OpenMpi,
    /// A PMI launcher: `PMI_RANK`, `PMI_SIZE`, and the local rank
    /// `MPI_LOCALRANKID` (Hydra's `mpiexec`/`mpirun`: MPICH, Intel MPI,
    /// MVAPICH2), else `PMI_LOCAL_RANK` (Cray PALS, Cray PMI). Present only
    /// with one of the local ranks: `PMI_RANK` alone (`srun --mpi=pmi2`)
    /// leaves the launch to Slurm's variables.
    Pmi,
}

impl fmt::Display for LaunchSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LaunchSource::Explicit => "NCCL_RS_* variables",
            LaunchSource::Torchrun => "torchrun (RANK/WORLD_SIZE/LOCAL_RANK)",
            LaunchSource::Slurm => "Slurm (SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID)",
            LaunchSource::OpenMpi => "Open MPI (OMPI_COMM_WORLD_*)",
            LaunchSource::Pmi => "MPICH/Intel MPI/PALS (PMI_RANK/PMI_SIZE)",
        })
    }
}

/// The variable names of one launcher.
struct SourceVars {
    source: LaunchSource,
    rank: &'static str,
    /// World sizes, first set wins.
    world: &'static [&'static str],
    /// Local ranks, first set wins.
    local: &'static [&'static str],
    /// Present only when a local rank is set too (else: when the rank is).
    needs_local: bool,
}

/// The launchers, innermost first.
const SOURCES: [SourceVars; 5] = [
    SourceVars {
        source: LaunchSource::Explicit,
        rank: "NCCL_RS_RANK",
        world: &["NCCL_RS_WORLD_SIZE"],
        local: &["NCCL_RS_LOCAL_RANK"],
        needs_local: false,
    },
    SourceVars {
        source: LaunchSource::Torchrun,
        rank: "RANK",
        world: &["WORLD_SIZE"],
        local: &["LOCAL_RANK"],
        needs_local: false,
    },
    SourceVars {
        source: LaunchSource::OpenMpi,
        rank: "OMPI_COMM_WORLD_RANK",
        world: &["OMPI_COMM_WORLD_SIZE"],
        local: &["OMPI_COMM_WORLD_LOCAL_RANK"],
        needs_local: false,
    },
    // `srun --mpi=pmi2` sets PMI_RANK and PMI_SIZE but neither local rank:
    // those launches stay Slurm's
    SourceVars {
        source: LaunchSource::Pmi,
        rank: "PMI_RANK",
        world: &["PMI_SIZE"],
        local: &["MPI_LOCALRANKID", "PMI_LOCAL_RANK"],
        needs_local: true,
    },
    SourceVars {
        source: LaunchSource::Slurm,
        rank: "SLURM_PROCID",
        world: &["SLURM_NTASKS", "SLURM_NPROCS"],
        local: &["SLURM_LOCALID"],
        needs_local: false,
    },
];

/// Where the ranks meet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rendezvous {
    /// Nothing says where (fine for world 1; an error for more ranks).
    Unset,
    /// This crate's TCP rendezvous: rank 0 listens at `addr` (`host:port`).
    Tcp {
        /// Where rank 0 listens and the others connect.
        addr: String,
        /// The variables it came from.
        from: &'static str,
    },
    /// A PyTorch `TCPStore` at `addr`; the id is under `key`.
    Store {
        /// The store's `host:port`.
        addr: String,
        /// The key of the id ([`store_id_key`]).
        key: String,
        /// The variables it came from.
        from: &'static str,
    },
}

/// What the launcher told this process.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LaunchInfo {
    /// This process's rank, `0..world`.
    pub rank: usize,
    /// Number of ranks, at most `i32::MAX` (NCCL's limit).
    pub world: usize,
    /// Rank among the processes of this machine (picks the GPU).
    pub local_rank: usize,
    /// Where the ranks meet.
    pub rendezvous: Rendezvous,
    /// The launcher whose variables were used.
    pub source: LaunchSource,
    /// Outer launchers whose variables were present too and ignored.
    pub ignored: Vec<LaunchSource>,
    /// The job's identity, the same on every rank of one launch and
    /// different from other jobs': the run id (`NCCL_RS_RUN_ID`, else
    /// `TORCHELASTIC_RUN_ID`, else `default`), the restart count
    /// (`TORCHELASTIC_RESTART_COUNT`), and the launcher's own job id (Slurm's
    /// job and step ids for ranks started by `srun`, Open MPI's job id for
    /// ranks started by `mpirun`). Hydra's `mpiexec` exports no job id: ranks
    /// that meet by the pid of the proxy that is every rank's parent on one
    /// node (read by [`LaunchInfo::from_env`]; not when `MASTER_ADDR` and
    /// `MASTER_PORT` say where to meet) take that pid (`hydra=<pid>`), other
    /// ranks inside a Slurm allocation the job and step ids of its proxies'
    /// step, and on several nodes outside Slurm nothing (each node's proxy
    /// has its own). The TCP rendezvous binds it into its keys
    /// ([`TcpBootstrap::job_id`]): a rank of another job cannot join.
    pub job: String,
    /// Run id and restart count, for the store keys.
    run: (String, String),
    /// With a root derived from Slurm's node list: the node rank 0 must run
    /// on, and the node this process runs on (`SLURMD_NODENAME`).
    slurm_nodes: Option<(String, Option<String>)>,
}

fn env_err(var: impl Into<String>, problem: impl Into<String>) -> Error {
    Error::LaunchEnv {
        var: var.into(),
        problem: problem.into(),
    }
}

/// Reads variables, refusing values that are not UTF-8 (never silently
/// ignoring them); an empty value counts as unset.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<OsString>);

impl Vars<'_> {
    fn text(&self, var: &str) -> Result<Option<String>> {
        match (self.0)(var) {
            None => Ok(None),
            Some(v) => {
                let s = v.into_string().map_err(|v| {
                    env_err(
                        var,
                        format!(
                            "{} is not valid UTF-8",
                            crate::base::text::printable(v.as_encoded_bytes(), 64)
                        ),
                    )
                })?;
                Ok(Some(s).filter(|s| !s.trim().is_empty()))
            }
        }
    }

    fn number(&self, var: &str, max: u64) -> Result<Option<u64>> {
        let Some(v) = self.text(var)? else {
            return Ok(None);
        };
        let shown = crate::base::text::printable(v.as_bytes(), 40);
        let n: u64 = v
            .trim()
            .parse()
            .map_err(|_| env_err(var, format!("{shown:?} is not a non-negative integer")))?;
        if n > max {
            return Err(env_err(
                var,
                format!("{n} is above {max}, the most NCCL (an int) can take"),
            ));
        }
        Ok(Some(n))
    }

    fn first_text(&self, vars: &[&'static str]) -> Result<Option<(&'static str, String)>> {
        for v in vars {
            if let Some(t) = self.text(v)? {
                return Ok(Some((v, t)));
            }
        }
        Ok(None)
    }

    /// The number of the first of `vars` that is set.
    fn first_number(&self, vars: &[&'static str], max: u64) -> Result<Option<(&'static str, u64)>> {
        for v in vars {
            if let Some(n) = self.number(v, max)? {
                return Ok(Some((v, n)));
            }
        }
        Ok(None)
    }
}

/// A port number 1..=65535 from `var`.
fn port(var: &str, text: &str) -> Result<u16> {
    match text.trim().parse::<u16>() {
        Ok(0) => Err(env_err(var, "port 0 is not a port to meet at")),
        Ok(p) => Ok(p),
        Err(_) => Err(env_err(
            var,
            format!(
                "{:?} is not a port number (1-65535)",
                crate::base::text::printable(text.as_bytes(), 40)
            ),
        )),
    }
}

/// `host` and `port` as `host:port`, with brackets around an IPv6 address
/// (given with or without them).
fn join_host(var: &str, host: &str, port: u16) -> Result<String> {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if h.is_empty()
        || h.chars()
            .any(|c| c.is_whitespace() || c.is_control() || "[]/".contains(c))
    {
        return Err(env_err(
            var,
            format!(
                "{:?} is not a host name or address",
                crate::base::text::printable(host.as_bytes(), 64)
            ),
        ));
    }
    Ok(if h.contains(':') {
        format!("[{h}]:{port}")
    } else {
        format!("{h}:{port}")
    })
}

/// `host:port` or `[v6]:port` from `var`, normalized.
fn host_port(var: &str, text: &str) -> Result<String> {
    let t = text.trim();
    let (host, p) = if let Some(rest) = t.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or_else(|| env_err(var, format!("{} is not [address]:port", quote(t))))?;
        (h, p)
    } else {
        let (h, p) = t
            .rsplit_once(':')
            .ok_or_else(|| env_err(var, format!("{} is not host:port", quote(t))))?;
        if h.contains(':') {
            return Err(env_err(
                var,
                format!(
                    "{}: an IPv6 address needs brackets, as in [::1]:29500",
                    quote(t)
                ),
            ));
        }
        (h, p)
    };
    join_host(var, host, port(var, p)?)
}

impl LaunchInfo {
    /// Reads this process's environment, and for ranks of Hydra's `mpiexec`
    /// its parent process (whether it is Hydra's proxy, `hydra_pmi_proxy`,
    /// whose process id the one-node rendezvous derives its port from).
    ///
    /// # Errors
    /// [`Error::LaunchEnv`] naming the variables when none of the launchers'
    /// variables are set, a value is missing, not UTF-8, not a number or out
    /// of range (`rank < world <= i32::MAX`, ports 1–65535), or a rendezvous
    /// address or Slurm node list is malformed.
    pub fn from_env() -> Result<LaunchInfo> {
        // the parent matters only to a rank of a PMI launcher
        let proxy = std::env::var_os("PMI_RANK").and_then(|_| hydra_proxy());
        LaunchInfo::read(&|k| std::env::var_os(k), proxy)
    }

    /// Like [`LaunchInfo::from_env`], with the variables from `get`. The
    /// one-node rendezvous of Hydra's `mpiexec` needs the parent process,
    /// which is no variable: from here it is [`Rendezvous::Unset`] unless
    /// `MASTER_ADDR`/`MASTER_PORT`, `NCCL_RS_ROOT`, `NCCL_RS_STORE` or Slurm's
    /// variables say where to meet.
    ///
    /// # Errors
    /// As [`LaunchInfo::from_env`].
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<LaunchInfo> {
        LaunchInfo::read(&|k| get(k).map(OsString::from), None)
    }

    /// Like [`LaunchInfo::from_env`], with the variables (possibly not
    /// UTF-8) from `get`. As with [`LaunchInfo::from_vars`], the one-node
    /// rendezvous of Hydra's `mpiexec` (which needs the parent process) is
    /// [`Rendezvous::Unset`] unless the variables say where to meet.
    ///
    /// # Errors
    /// As [`LaunchInfo::from_env`].
    pub fn from_os_vars(get: &dyn Fn(&str) -> Option<OsString>) -> Result<LaunchInfo> {
        LaunchInfo::read(get, None)
    }

    /// The launch from the variables of `get` and, for a rank that Hydra's
    /// `mpiexec` started, the process id of its proxy (this process's
    /// parent), if known.
    fn read(
        get: &dyn Fn(&str) -> Option<OsString>,
        hydra_proxy: Option<u32>,
    ) -> Result<LaunchInfo> {
        let v = Vars(get);
        let max = MAX_WORLD as u64;
        let mut present = Vec::new();
        for s in &SOURCES {
            // a source that needs a local rank is absent without one, its
            // rank variable unread (whatever `srun --mpi=pmi2` put there)
            if s.needs_local && v.first_text(s.local)?.is_none() {
                continue;
            }
            if v.text(s.rank)?.is_some() {
                present.push(s);
            }
        }
        let Some(&s) = present.first() else {
            // a PMI launcher that gives no local rank (MPICH's gforker,
            // Flux's simple PMI): say what is missing rather than nothing
            if v.text("PMI_RANK")?.is_some() {
                return Err(env_err(
                    "MPI_LOCALRANKID/PMI_LOCAL_RANK",
                    "PMI_RANK is set but no local rank (the rank among this machine's processes, \
                     which picks its GPU): set NCCL_RS_RANK, NCCL_RS_WORLD_SIZE and \
                     NCCL_RS_LOCAL_RANK from your launcher's values",
                ));
            }
            return Err(env_err(
                "RANK/WORLD_SIZE",
                "no launcher variables found: start under torchrun, srun (Slurm), mpirun (Open MPI) \
                 or mpiexec (MPICH, Intel MPI), `cargo xtask launch`, or set NCCL_RS_RANK and \
                 NCCL_RS_WORLD_SIZE",
            ));
        };
        let (source, rank_var) = (s.source, s.rank);
        let ignored = present[1..].iter().map(|p| p.source).collect();
        // read again to parse: a `get` that answers differently the second
        // time (or the environment changed by another thread) is an error
        let rank = v
            .number(rank_var, max)?
            .ok_or_else(|| env_err(rank_var, "set, then unset while it was read"))?;
        let (world_var, world) = v
            .first_number(s.world, max)?
            .ok_or_else(|| env_err(s.world[0], format!("missing ({rank_var} is set)")))?;
        if world == 0 {
            return Err(env_err(world_var, "must be at least 1"));
        }
        if rank >= world {
            return Err(env_err(
                format!("{rank_var}/{world_var}"),
                format!("rank {rank} is not below the world size {world}"),
            ));
        }
        // a launcher nested in another starts at least as many processes
        // as the outer one did (torchrun under mpirun: one agent per MPI
        // rank); fewer means the variables that won are stale (a shell's
        // RANK/WORLD_SIZE, a pod's) and ranks would meet as the wrong world.
        // Explicit values and Slurm's allocation are not compared.
        if source != LaunchSource::Explicit {
            for outer in &present[1..] {
                if outer.source == LaunchSource::Slurm {
                    continue;
                }
                if let Ok(Some((outer_var, outer_world))) = v.first_number(outer.world, max) {
                    if outer_world > world {
                        return Err(env_err(
                            format!("{world_var}/{outer_var}"),
                            format!(
                                "{world_var}={world} ({source:?}'s, taken first) is less than \
                                 {outer_var}={outer_world} ({:?}'s): these are not one launch's \
                                 variables; unset the stale ones, or set NCCL_RS_RANK, \
                                 NCCL_RS_WORLD_SIZE and NCCL_RS_LOCAL_RANK",
                                outer.source
                            ),
                        ));
                    }
                }
            }
        }
        let local_rank = match (v.first_number(s.local, max)?, source) {
            (Some((_, l)), _) => l,
            (None, LaunchSource::Explicit) => 0,
            (None, _) => {
                return Err(env_err(
                    s.local[0],
                    format!(
                        "missing ({rank_var} is set): the rank among this machine's processes \
                         picks its GPU; set it (0 where each machine runs one process)"
                    ),
                ));
            }
        };
        let run = run_id(&v)?;
        let hydra = match source {
            LaunchSource::Pmi => hydra_one_node(&v, hydra_proxy)?,
            _ => None,
        };
        let (rendezvous, slurm_nodes) = rendezvous(&v, source, &run, hydra)?;
        // the proxy's pid names the job only where the ranks met by it: a
        // rank that meets at MASTER_ADDR/MASTER_PORT may have another parent
        let hydra = hydra.filter(
            |_| matches!(&rendezvous, Rendezvous::Tcp { from, .. } if FROM_HYDRA.contains(from)),
        );
        let job = job_identity(&v, source, &run, hydra)?;
        Ok(LaunchInfo {
            rank: rank as usize,
            world: world as usize,
            local_rank: local_rank as usize,
            rendezvous,
            source,
            ignored,
            job,
            run,
            slurm_nodes,
        })
    }

    /// The channel for the id this launch asks for: a [`StoreBootstrap`]
    /// connected to the store, or a [`TcpBootstrap`] (rank 0 already
    /// listening, on all interfaces unless the root is a loopback address),
    /// with `opts.timeout`, the secret of `opts` (or `NCCL_RS_SECRET`) and
    /// [`LaunchInfo::job`] as its job id.
    ///
    /// # Errors
    /// `LaunchEnv` for no rendezvous with more than one rank, an empty
    /// secret or one shorter than [`MIN_SECRET_LEN`] bytes, or (Slurm) rank 0
    /// on another node than the one the root was derived from; `AddrInUse`;
    /// `Store` when the store cannot be reached.
    pub fn bootstrap(&self, opts: &LaunchOptions) -> Result<Box<dyn Bootstrap + Send>> {
        self.channel(opts, opts.timeout).map(Channel::boxed)
    }

    /// [`LaunchInfo::bootstrap`] with `timeout` for `opts.timeout`.
    fn channel(&self, opts: &LaunchOptions, timeout: Duration) -> Result<Channel> {
        if self.world == 1 {
            return Ok(Channel::Tcp(TcpBootstrap::new(
                "127.0.0.1:1",
                0,
                1,
                None,
                timeout,
            )?));
        }
        match &self.rendezvous {
            Rendezvous::Unset if self.source == LaunchSource::Pmi => Err(env_err(
                "MASTER_ADDR/MASTER_PORT",
                format!(
                    "needed to meet the other ranks (world {}): mpiexec exports no job id to \
                     derive a meeting place from, so give every rank the same ones (Hydra: \
                     `mpiexec -genv MASTER_ADDR <rank 0's host> -genv MASTER_PORT 29500 …`), \
                     or NCCL_RS_ROOT, or NCCL_RS_STORE; on one node, ranks that Hydra's \
                     mpiexec starts directly (not through a wrapper script that stays their \
                     parent) meet on loopback by themselves",
                    self.world
                ),
            )),
            Rendezvous::Unset => Err(env_err(
                "MASTER_ADDR/MASTER_PORT",
                format!(
                    "needed to meet the other ranks (world {}): set them, or NCCL_RS_ROOT, or NCCL_RS_STORE",
                    self.world
                ),
            )),
            Rendezvous::Store { addr, key, .. } => {
                let store = TcpStore::connect(addr, timeout)?;
                Ok(Channel::Store(StoreBootstrap::new(
                    store, self.rank, self.world, key,
                )?))
            }
            Rendezvous::Tcp { addr, .. } => {
                let secret = opts.secret()?;
                let mut b =
                    TcpBootstrap::with_secret(addr, self.rank, self.world, secret, timeout)?
                        .job_id(&self.job);
                if self.rank == 0 {
                    if let Some((root, Some(here))) = &self.slurm_nodes {
                        if root != here {
                            return Err(env_err(
                                "SLURM_STEP_NODELIST",
                                format!(
                                    "rank 0 runs on {here}, not on {root}, the first node of the \
                                     step where the other ranks look for it: set MASTER_ADDR \
                                     (and MASTER_PORT) to rank 0's host"
                                ),
                            ));
                        }
                    }
                    if let Some(bind) = wildcard(addr) {
                        b = b.bind_to(&bind);
                    }
                    b.listen()?; // a port in use fails before an id is made
                }
                Ok(Channel::Tcp(b))
            }
        }
    }
}

/// The channel [`LaunchInfo::bootstrap`] makes, before it is boxed.
enum Channel {
    Tcp(TcpBootstrap),
    Store(StoreBootstrap),
}

impl Channel {
    fn boxed(self) -> Box<dyn Bootstrap + Send> {
        match self {
            Channel::Tcp(b) => Box::new(b),
            Channel::Store(b) => Box::new(b),
        }
    }

    /// Gives its next exchange `timeout` in all: what connecting to the
    /// store or listening took is then not counted twice.
    fn set_timeout(&mut self, timeout: Duration) {
        match self {
            Channel::Tcp(b) => b.set_timeout(timeout),
            Channel::Store(b) => b.store().set_timeout(timeout),
        }
    }

    fn bootstrap(&mut self) -> &mut dyn Bootstrap {
        match self {
            Channel::Tcp(b) => b,
            Channel::Store(b) => b,
        }
    }
}

/// The time left before `deadline`, or `Timeout` for `step` (the whole had
/// `after`) when none is.
fn time_left(deadline: Instant, step: &'static str, after: Duration) -> Result<Duration> {
    crate::bootstrap::net::left(deadline).ok_or(Error::Timeout { op: step, after })
}

/// How many ports from the job's own the survivors' TCP rendezvous tries
/// ([`LaunchInfo::survivors_bootstrap`]).
pub const SURVIVOR_PORTS: u16 = 16;

impl LaunchInfo {
    /// The channel through which the survivors of this launch meet after
    /// losing the ranks `lost` (as [`Comm::shrink_or_recreate`](crate::Comm::shrink_or_recreate)
    /// needs: this rank under its new rank, [`RankMap::excluding`](crate::RankMap::excluding),
    /// of the survivors' world), for their `epoch`-th recovery (1, 2, …: each
    /// recovery of one job meets apart from the earlier ones). Every survivor
    /// calls it with the same `lost` and `epoch`; it needs no port or key but
    /// the job's own:
    ///
    /// - a store rendezvous: the same store, under
    ///   `nccl-rs/<run>/<restart>/survivors/<epoch>/<lost>/uid` (`<lost>`: 16
    ///   hex digits from the lost ranks);
    /// - the TCP rendezvous: the job's address, its port or one of the next
    ///   [`SURVIVOR_PORTS`]` - 1` ([`TcpBootstrap::port_range`]): the new rank 0
    ///   listens on the first free one, the others find it by its proof of
    ///   the secret; the job id says `survivors`, the epoch and the lost
    ///   ranks, so no rank of the first rendezvous or of another recovery is
    ///   mistaken for one of these. The new rank 0 must run on the
    ///   rendezvous's host: if the lost ranks include rank 0 and the new one
    ///   runs elsewhere, this is an error there (a job that must survive the
    ///   loss of rank 0's host meets through a store).
    ///
    /// With `opts.timeout`, and the secret of `opts` (or `NCCL_RS_SECRET`).
    /// The new rank 0 listens at once.
    ///
    /// # Errors
    /// `InvalidArgument` (as [`RankMap::excluding`](crate::RankMap::excluding))
    /// for a `lost` that names this rank, a rank twice, or every rank; as
    /// [`LaunchInfo::bootstrap`]; `Rendezvous` when the new rank 0 is not on
    /// the rendezvous's host; `AddrInUse` when every port of the range is.
    pub fn survivors_bootstrap(
        &self,
        lost: &[usize],
        epoch: u64,
        opts: &LaunchOptions,
    ) -> Result<Box<dyn Bootstrap + Send>> {
        let map = crate::RankMap::excluding(self.world, self.rank, lost)?;
        let me = map.new_rank(self.rank).expect("excluding keeps this rank");
        let world = map.world();
        let tag = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            for r in map.excluded() {
                h.update((*r as u64).to_be_bytes());
            }
            let h = h.finalize();
            let hex: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
            format!("survivors/{epoch}/{hex}")
        };
        if world == 1 {
            return Ok(Box::new(TcpBootstrap::new(
                "127.0.0.1:1",
                0,
                1,
                None,
                opts.timeout,
            )?));
        }
        match &self.rendezvous {
            Rendezvous::Unset => Err(env_err(
                "MASTER_ADDR/MASTER_PORT",
                format!(
                    "needed for the {world} survivors to meet: set them, or NCCL_RS_ROOT, or \
                     NCCL_RS_STORE"
                ),
            )),
            Rendezvous::Store { addr, .. } => {
                let (run, restart) = &self.run;
                let key = format!("nccl-rs/{run}/{restart}/{tag}/uid");
                let store = TcpStore::connect(addr, opts.timeout)?;
                Ok(Box::new(StoreBootstrap::new(store, me, world, &key)?))
            }
            Rendezvous::Tcp { addr, .. } => {
                let secret = opts.secret()?;
                let mut b = TcpBootstrap::with_secret(addr, me, world, secret, opts.timeout)?
                    .job_id(&format!("{};{tag}", self.job))
                    .port_range(SURVIVOR_PORTS);
                if me == 0 {
                    if self.rank != 0 {
                        check_local(addr, self.rank, opts.timeout)?;
                    }
                    if let Some(bind) = wildcard(addr) {
                        b = b.bind_to(&bind);
                    }
                    b.listen()?;
                }
                Ok(Box::new(b))
            }
        }
    }
}

/// That the host of `addr` is this machine (one of its addresses binds),
/// for survivor `rank` that became rank 0.
fn check_local(addr: &str, rank: usize, timeout: Duration) -> Result<()> {
    let deadline = crate::bootstrap::net::deadline_after(timeout.min(Duration::from_secs(10)));
    let ips = crate::bootstrap::net::resolve_by(addr, deadline)
        .map_err(|e| crate::bootstrap::rendezvous::peer_err(addr, e))?;
    let here = ips
        .iter()
        .any(|a| a.ip().is_loopback() || std::net::TcpListener::bind((a.ip(), 0)).is_ok());
    if here {
        return Ok(());
    }
    Err(crate::bootstrap::rendezvous::peer_err(
        addr,
        format!(
            "rank {rank}, rank 0 of the survivors, does not run on the rendezvous's host, where \
             the others look for it (the lost rank 0 ran there): a job that must survive the \
             loss of rank 0's host meets through a store (NCCL_RS_STORE, torchrun's agent store)"
        ),
    ))
}

/// Where rank 0 listens for `addr`: all interfaces of its port, unless the
/// host is a loopback address (then `addr` itself).
fn wildcard(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_loopback() => None,
        Ok(std::net::IpAddr::V6(_)) => Some(format!("[::]:{port}")),
        _ if host == "localhost" => None,
        _ => Some(format!("0.0.0.0:{port}")),
    }
}

type Found = (Rendezvous, Option<(String, Option<String>)>);

/// The run id (`NCCL_RS_RUN_ID`, `TORCHELASTIC_RUN_ID`, `default`) and the
/// restart count (`TORCHELASTIC_RESTART_COUNT`, `0`).
fn run_id(v: &Vars<'_>) -> Result<(String, String)> {
    let run = match v.first_text(&["NCCL_RS_RUN_ID", "TORCHELASTIC_RUN_ID"])? {
        Some((var, r)) if r.len() > 256 || r.chars().any(char::is_control) => {
            return Err(env_err(
                var,
                "longer than 256 characters or has control characters",
            ));
        }
        Some((_, r)) => r,
        None => "default".into(),
    };
    let restart = match v.number("TORCHELASTIC_RESTART_COUNT", u64::MAX)? {
        Some(n) => n.to_string(),
        None => "0".into(),
    };
    Ok((run, restart))
}

/// [`LaunchInfo::job`]: run id, restart count, and the id the launcher gave
/// the job (only the launcher that started the ranks: every rank sees the
/// same). Hydra's `mpiexec` gives none: ranks that met by the pid of its
/// proxy (`hydra`, one node) take that pid, the same for every rank there;
/// other ranks inside a Slurm allocation take the Slurm step of its
/// proxies, the same on every node.
fn job_identity(
    v: &Vars<'_>,
    source: LaunchSource,
    (run, restart): &(String, String),
    hydra: Option<u32>,
) -> Result<String> {
    let mut job = format!("run={run};restart={restart}");
    let launcher = match source {
        LaunchSource::Slurm => slurm_job(v)?,
        LaunchSource::Pmi => match hydra {
            Some(pid) => Some(format!("hydra={pid}")),
            None => slurm_job(v)?,
        },
        LaunchSource::OpenMpi => v
            .first_text(&["PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid"])?
            .map(|(_, j)| format!("ompi={}", j.trim())),
        LaunchSource::Explicit | LaunchSource::Torchrun => None,
    };
    if let Some(l) = launcher {
        if l.len() > 256 || l.chars().any(char::is_control) {
            return Err(env_err(
                "SLURM_JOB_ID/PMIX_NAMESPACE",
                "the launcher's job id is longer than 256 characters or has control characters",
            ));
        }
        job.push(';');
        job.push_str(&l);
    }
    Ok(job)
}

/// `slurm=<job>.<step>` from Slurm's job and step ids (step 0 when unset),
/// or `None` outside Slurm.
fn slurm_job(v: &Vars<'_>) -> Result<Option<String>> {
    let Some((_, j)) = v.first_text(&["SLURM_JOB_ID", "SLURM_JOBID"])? else {
        return Ok(None);
    };
    let step = v
        .first_text(&["SLURM_STEP_ID", "SLURM_STEPID"])?
        .map_or_else(|| "0".to_string(), |(_, s)| s);
    Ok(Some(format!("slurm={}.{}", j.trim(), step.trim())))
}

/// A root derived from the launcher's variables when `MASTER_ADDR` is not
/// given: its host, port, and (under Slurm) the node this process runs on.
struct Derived {
    host: String,
    port: u16,
    here: Option<String>,
    how: Derivation,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Derivation {
    /// The first node of the Slurm step, the port from its ids.
    Slurm,
    /// `mpirun` on one node: loopback, the port from Open MPI's job id.
    OpenMpiOneNode,
    /// `mpiexec` on one node: loopback, the port from the proxy's pid.
    HydraOneNode,
}

fn rendezvous(
    v: &Vars<'_>,
    source: LaunchSource,
    (run, restart): &(String, String),
    hydra: Option<u32>,
) -> Result<Found> {
    let key = store_id_key(run, restart);
    if let Some(s) = v.text("NCCL_RS_STORE")? {
        let addr = host_port("NCCL_RS_STORE", &s)?;
        return Ok((
            Rendezvous::Store {
                addr,
                key,
                from: "NCCL_RS_STORE",
            },
            None,
        ));
    }
    if let Some(r) = v.text("NCCL_RS_ROOT")? {
        let addr = host_port("NCCL_RS_ROOT", &r)?;
        return Ok((
            Rendezvous::Tcp {
                addr,
                from: "NCCL_RS_ROOT",
            },
            None,
        ));
    }
    let agent = v
        .text("TORCHELASTIC_USE_AGENT_STORE")?
        .is_some_and(|s| matches!(s.trim().to_ascii_lowercase().as_str(), "true" | "1"));
    let master_addr = v.text("MASTER_ADDR")?;
    let master_port = match v.text("MASTER_PORT")? {
        Some(p) => Some(port("MASTER_PORT", &p)?),
        None => None,
    };
    // Hydra on one node first, also inside a Slurm allocation: two
    // `mpiexec` runs there share the allocation's step ids, not a proxy
    let mut derived = hydra.map(|pid| Derived {
        host: "127.0.0.1".into(),
        port: port_from_text(&format!("hydra-{pid}")),
        here: None,
        how: Derivation::HydraOneNode,
    });
    if derived.is_none() {
        derived = match source {
            LaunchSource::Slurm | LaunchSource::OpenMpi | LaunchSource::Pmi => slurm_root(v)?,
            LaunchSource::Explicit | LaunchSource::Torchrun => None,
        };
    }
    if derived.is_none() && source == LaunchSource::OpenMpi {
        derived = open_mpi_one_node(v)?;
    }
    match (master_addr, master_port, derived) {
        (Some(a), Some(p), _) => {
            let addr = join_host("MASTER_ADDR", &a, p)?;
            Ok(if agent && source == LaunchSource::Torchrun {
                (
                    Rendezvous::Store {
                        addr,
                        key,
                        from: "torchrun's agent store (TORCHELASTIC_USE_AGENT_STORE, MASTER_ADDR, MASTER_PORT)",
                    },
                    None,
                )
            } else {
                (
                    Rendezvous::Tcp {
                        addr,
                        from: "MASTER_ADDR, MASTER_PORT",
                    },
                    None,
                )
            })
        }
        // the variable not given is derived
        (Some(a), None, Some(d)) => Ok((
            Rendezvous::Tcp {
                addr: join_host("MASTER_ADDR", &a, d.port)?,
                from: match d.how {
                    Derivation::Slurm => "MASTER_ADDR, port from the Slurm job and step ids",
                    Derivation::OpenMpiOneNode => "MASTER_ADDR, port from the Open MPI job id",
                    Derivation::HydraOneNode => FROM_HYDRA[2],
                },
            },
            None,
        )),
        (None, p, Some(d)) => Ok((
            Rendezvous::Tcp {
                addr: join_host("SLURM_STEP_NODELIST", &d.host, p.unwrap_or(d.port))?,
                from: match (d.how, p.is_some()) {
                    (Derivation::Slurm, true) => "first node of the Slurm step, MASTER_PORT",
                    (Derivation::Slurm, false) => {
                        "first node of the Slurm step, port from the job and step ids"
                    }
                    (Derivation::OpenMpiOneNode, true) => {
                        "Open MPI on one node: loopback, MASTER_PORT"
                    }
                    (Derivation::OpenMpiOneNode, false) => {
                        "Open MPI on one node: loopback, port from the job id"
                    }
                    (Derivation::HydraOneNode, true) => FROM_HYDRA[1],
                    (Derivation::HydraOneNode, false) => FROM_HYDRA[0],
                },
            },
            Some((d.host, d.here)),
        )),
        (Some(_), None, None) => Err(env_err("MASTER_PORT", "missing (MASTER_ADDR is set)")),
        (None, Some(_), None) => Err(env_err("MASTER_ADDR", "missing (MASTER_PORT is set)")),
        (None, None, None) => Ok((Rendezvous::Unset, None)),
    }
}

/// `Rendezvous::Tcp::from` of the rendezvous derived from the pid of
/// Hydra's proxy: with nothing given, with `MASTER_PORT`, with `MASTER_ADDR`.
const FROM_HYDRA: [&str; 3] = [
    "mpiexec (Hydra) on one node: loopback, port from the proxy's pid",
    "mpiexec (Hydra) on one node: loopback, MASTER_PORT",
    "MASTER_ADDR, port from the mpiexec proxy's pid",
];

/// A port in 20000–29999 (as under Slurm) from an FNV-1a hash of `text`.
fn port_from_text(text: &str) -> u16 {
    let h = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    slurm::slurm_port(h % 1_000_000_007, 0)
}

/// `mpirun` with every rank on this node (`OMPI_COMM_WORLD_LOCAL_SIZE` equal
/// to `OMPI_COMM_WORLD_SIZE`): loopback, and a port from the job's id
/// (`PMIX_NAMESPACE`, else `OMPI_MCA_ess_base_jobid`; 20000–29999 as under
/// Slurm, from an FNV-1a hash of the text).
fn open_mpi_one_node(v: &Vars<'_>) -> Result<Option<Derived>> {
    let max = MAX_WORLD as u64;
    let (Some(local), Some(world)) = (
        v.number("OMPI_COMM_WORLD_LOCAL_SIZE", max)?,
        v.number("OMPI_COMM_WORLD_SIZE", max)?,
    ) else {
        return Ok(None);
    };
    let Some((_, job)) = v.first_text(&["PMIX_NAMESPACE", "OMPI_MCA_ess_base_jobid"])? else {
        return Ok(None);
    };
    if local != world {
        return Ok(None);
    }
    Ok(Some(Derived {
        host: "127.0.0.1".into(),
        port: port_from_text(&job),
        here: None,
        how: Derivation::OpenMpiOneNode,
    }))
}

/// The process id of Hydra's proxy when this process is a rank that
/// `mpiexec` started on one node: every rank local (`MPI_LOCALNRANKS` equal
/// to `PMI_SIZE`) and `hydra_proxy` known (the parent, as [`hydra_proxy`]
/// finds it). The proxy is the parent of every rank of its node, so all of
/// them derive the same; on several nodes each has its own, so none is
/// used.
fn hydra_one_node(v: &Vars<'_>, hydra_proxy: Option<u32>) -> Result<Option<u32>> {
    let Some(pid) = hydra_proxy else {
        return Ok(None);
    };
    let max = MAX_WORLD as u64;
    match (
        v.number("MPI_LOCALNRANKS", max)?,
        v.number("PMI_SIZE", max)?,
    ) {
        (Some(local), Some(world)) if local == world => Ok(Some(pid)),
        _ => Ok(None),
    }
}

/// This process's parent's id when the parent is Hydra's proxy
/// (`/proc/<ppid>/comm` is `hydra_pmi_proxy`); `None` otherwise or when it
/// cannot be read.
fn hydra_proxy() -> Option<u32> {
    let ppid = std::os::unix::process::parent_id();
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).ok()?;
    (comm.trim() == "hydra_pmi_proxy").then_some(ppid)
}

/// Under Slurm: the first node of the step (or job), the derived port, and
/// the node this process runs on.
fn slurm_root(v: &Vars<'_>) -> Result<Option<Derived>> {
    let Some((list_var, list)) = v.first_text(&[
        "SLURM_STEP_NODELIST",
        "SLURM_JOB_NODELIST",
        "SLURM_NODELIST",
    ])?
    else {
        return Ok(None);
    };
    let Some((job_var, job)) = v.first_text(&["SLURM_JOB_ID", "SLURM_JOBID"])? else {
        return Ok(None);
    };
    let job: u64 = job
        .trim()
        .parse()
        .map_err(|_| env_err(job_var, format!("{} is not a job id", quote(&job))))?;
    let step = match v.first_text(&["SLURM_STEP_ID", "SLURM_STEPID"])? {
        Some((var, s)) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| env_err(var, format!("{} is not a step id", quote(&s))))?,
        None => 0,
    };
    let first = slurm::hostlist_first(&list).map_err(|e| {
        env_err(
            list_var,
            format!("{} is not a Slurm hostlist: {e}", quote(&list)),
        )
    })?;
    let here = v.text("SLURMD_NODENAME")?.map(|s| s.trim().to_string());
    Ok(Some(Derived {
        host: first,
        port: slurm::slurm_port(job, step),
        here,
        how: Derivation::Slurm,
    }))
}

/// How [`init_from_launcher`] sets up the communicator.
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    /// Deadline for the rendezvous and communicator creation together
    /// (`Duration::MAX`: no practical limit); without a timeout of
    /// `config`'s own, also the communicator's [`Config::timeout`](crate::Config::timeout)
    /// afterwards (its finalize, and a non-blocking one's waits).
    pub timeout: Duration,
    /// Shared secret of the TCP rendezvous, at least [`MIN_SECRET_LEN`]
    /// bytes (any bytes). `None` (the default): `NCCL_RS_SECRET` when set
    /// (read as bytes, so any value works), else no secret, with a logged
    /// warning: the unique id is a bearer token, and without a secret anyone
    /// who reaches rank 0's port can take a rank and the id. An empty or
    /// shorter secret is an error. A store rendezvous has no authentication
    /// of its own (see [`TcpStore`]). `Debug` does not show it.
    pub secret: Option<Secret>,
    /// Communicator configuration; unless it sets its own timeout, creation
    /// has what the rendezvous left of `timeout` as its deadline. The
    /// default is blocking: each call costs the host time it costs in C. A
    /// non-blocking communicator (`Config::new().blocking(false)`) can also
    /// abandon a call that is still connecting to a peer, for about 70 µs
    /// more host time per call (NCCL launches each of its calls from a
    /// thread of its own; docs/performance.md).
    pub config: crate::Config,
    /// Connect the collectives' peers while the communicator is created
    /// (default `true`), inside creation's deadline: a few all-reduces of
    /// growing size (scratch memory of [`CONNECT_BYTES`](crate::CONNECT_BYTES) on the GPU while they
    /// run), so that NCCL (which connects lazily, at a collective's first
    /// use) sets up every algorithm it picks then. Afterwards a collective of
    /// a blocking communicator only enqueues work, and a survivor waiting on a
    /// dead or absent peer in [`Comm::wait_or_abort`](crate::Comm::wait_or_abort) gets a typed
    /// error or an abort at its deadline. Send/recv still connect to a peer at
    /// their first use: where a peer may be absent at that moment, use a
    /// non-blocking communicator.
    pub connect: bool,
}

impl Default for LaunchOptions {
    fn default() -> LaunchOptions {
        LaunchOptions {
            timeout: Duration::from_secs(300),
            secret: None,
            config: crate::Config::new(),
            connect: true,
        }
    }
}

impl LaunchOptions {
    /// The secret to use: `secret`, else `NCCL_RS_SECRET`'s bytes.
    fn secret(&self) -> Result<Option<Secret>> {
        let (s, var) = match &self.secret {
            Some(s) => (Some(s.clone()), "LaunchOptions::secret"),
            None => (Secret::from_env(), "NCCL_RS_SECRET"),
        };
        match s {
            Some(s) if s.is_empty() => Err(env_err(
                var,
                "is set but empty: give every rank the same random value of at least 16 bytes \
                 (`head -c 32 /dev/urandom | base64`), or unset it",
            )),
            Some(s) if s.len() < MIN_SECRET_LEN => Err(env_err(
                var,
                format!(
                    "is {} bytes; at least {MIN_SECRET_LEN} are needed, as a captured handshake \
                     lets anyone guess a short secret offline: give every rank the same random \
                     value (`head -c 32 /dev/urandom | base64`)",
                    s.len()
                ),
            )),
            s => Ok(s),
        }
    }
}

/// From "my launcher started me" to a ready communicator: reads the
/// launcher's variables ([`LaunchInfo::from_env`]), binds GPU `local_rank`
/// (modulo the GPUs visible), hands rank 0's unique id to every rank through
/// the rendezvous the launch names ([`LaunchInfo::bootstrap`]; the module
/// docs list them), and creates the communicator, all within `opts.timeout`
/// counted from the call: each step gets what the steps before it left.
/// Where `opts.config` sets a timeout of its own, creation and connecting
/// the peers get that instead.
///
/// ```no_run
/// let (comm, info) = nccl::bootstrap::init_from_launcher(&nccl::bootstrap::LaunchOptions::default())?;
/// log::info!("rank {} of {} on GPU {} ({})", comm.rank(), comm.world_size(), comm.device(), info.source);
/// comm.finalize()?;
/// # Ok::<(), nccl::Error>(())
/// ```
///
/// # Errors
/// `LaunchEnv` for missing, malformed or out-of-range variables (or no
/// rendezvous address with more than one rank); the rendezvous and store
/// errors; CUDA and NCCL errors; `Timeout`, also when a step finds no time
/// left (op `share_launch_id`, `init_from_launcher (create)` or
/// `init_from_launcher (connect)`).
pub fn init_from_launcher(opts: &LaunchOptions) -> Result<(crate::Comm, LaunchInfo)> {
    const CREATE: &str = "init_from_launcher (create)";
    const CONNECT: &str = "init_from_launcher (connect)";
    let deadline = crate::bootstrap::net::deadline_after(opts.timeout);
    let info = LaunchInfo::from_env()?;
    // cudarc panics without a driver: check it first
    crate::base::driver::driver_version()?;
    cudarc::driver::result::init()?;
    let gpus = cudarc::driver::CudaContext::device_count()? as usize;
    if gpus == 0 {
        return Err(env_err(
            "CUDA_VISIBLE_DEVICES",
            "no GPU is visible to this process",
        ));
    }
    let gpu = pick_gpu(
        info.local_rank,
        gpus,
        std::env::var_os("NCCL_HOSTID").is_some(),
    )?;
    let ctx = cudarc::driver::CudaContext::new(gpu)?;
    let id = share_launch_id_by(&info, opts, deadline)?;
    let config = opts
        .config
        .with_default_deadline(time_left(deadline, CREATE, opts.timeout)?);
    // the communicator keeps the timeout it would have had without the
    // rendezvous before it (its later waits get the whole of it)
    let kept = opts.config.timeout.or(Some(opts.timeout));
    if !opts.connect || info.world == 1 {
        let comm = crate::Comm::init_rank_with(&ctx, info.world, &id, info.rank, &config)?;
        return Ok((comm.with_timeout(kept), info));
    }
    let (world, rank) = (info.world, info.rank);
    let comm = if config.is_blocking() {
        // creation and connection cannot be abandoned inside NCCL's blocking
        // calls: they run on a thread of their own, and this one waits at most
        // the deadline (a communicator made too late is aborted there)
        let limit = config.timeout.unwrap_or(opts.timeout);
        let config = config.clone().no_timeout();
        crate::comm::wait::within(limit, "init_from_launcher", move || {
            let end = crate::bootstrap::net::deadline_after(limit);
            let comm = crate::Comm::init_rank_with(&ctx, world, &id, rank, &config)?;
            comm.connect(time_left(end, CONNECT, limit)?)?;
            Ok(comm)
        })?
    } else {
        let limit = config.timeout.unwrap_or(opts.timeout);
        let end = crate::bootstrap::net::deadline_after(limit);
        let comm = crate::Comm::init_rank_with(&ctx, world, &id, rank, &config)?;
        comm.connect(time_left(end, CONNECT, limit)?)?;
        comm
    };
    Ok((comm.with_timeout(kept), info))
}

/// The GPU of local rank `local` among `gpus` visible ones. More local ranks
/// than GPUs put several ranks on one GPU, which NCCL allows only for ranks
/// with different `NCCL_HOSTID`s (else it fails with "Duplicate GPU
/// detected"): that is taken as the request to share (`hostid`); without it
/// it is an error that says so, never a silent doubling up.
fn pick_gpu(local: usize, gpus: usize, hostid: bool) -> Result<usize> {
    if local < gpus {
        return Ok(local);
    }
    if hostid {
        return Ok(local % gpus);
    }
    Err(env_err(
        "LOCAL_RANK",
        format!(
            "local rank {local}, but {gpus} GPU(s) visible (CUDA_VISIBLE_DEVICES): two ranks would share a GPU; \
             start at most {gpus} ranks per node, or give each rank its own NCCL_HOSTID to share GPUs on purpose \
             (as `cargo xtask launch --one-gpu` does)"
        ),
    ))
}

/// The rendezvous of [`init_from_launcher`] alone (no GPU needed): rank 0
/// makes a unique id, every rank gets it, all within `opts.timeout`
/// (connecting to the store, or listening, and the exchange together).
///
/// # Errors
/// As [`LaunchInfo::bootstrap`] and the rendezvous; NCCL's error from
/// `ncclGetUniqueId`; `Timeout` (op `share_launch_id`) when connecting
/// leaves no time for the exchange.
pub fn share_launch_id(info: &LaunchInfo, opts: &LaunchOptions) -> Result<crate::UniqueId> {
    share_launch_id_by(
        info,
        opts,
        crate::bootstrap::net::deadline_after(opts.timeout),
    )
}

/// [`share_launch_id`], done by `deadline`: connecting (or listening) and
/// the exchange share it.
fn share_launch_id_by(
    info: &LaunchInfo,
    opts: &LaunchOptions,
    deadline: Instant,
) -> Result<crate::UniqueId> {
    const OP: &str = "share_launch_id";
    if info.world == 1 {
        return crate::UniqueId::new();
    }
    let mut channel = info.channel(opts, time_left(deadline, OP, opts.timeout)?)?;
    channel.set_timeout(time_left(deadline, OP, opts.timeout)?);
    let b = channel.bootstrap();
    let ids = if info.rank == 0 {
        b.share_ids(Some(vec![crate::UniqueId::new()?]))?
    } else {
        b.share_ids(None)?
    };
    Ok(ids[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hydra(pairs: &[(&str, &str)], proxy: Option<u32>) -> LaunchInfo {
        let m: std::collections::HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        LaunchInfo::read(&|k| m.get(k).cloned(), proxy).unwrap()
    }

    /// What this module reads of rank 1 of `mpiexec -n 2` on one node
    /// (tests/bootstrap.rs has all that MPICH 4.0's Hydra sets).
    const ONE_NODE: &[(&str, &str)] = &[
        ("PMI_RANK", "1"),
        ("PMI_SIZE", "2"),
        ("MPI_LOCALRANKID", "1"),
        ("MPI_LOCALNRANKS", "2"),
    ];

    #[test]
    fn hydra_on_one_node_meets_on_loopback_at_a_port_from_the_proxy() {
        // the documented port: FNV-1a of "hydra-<pid>", then slurm_port
        let text = "hydra-4321";
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in text.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let port = 20000 + ((h % 1_000_000_007) * 97 % 10000) as u16;
        let i = hydra(ONE_NODE, Some(4321));
        assert_eq!((i.rank, i.world, i.local_rank), (1, 2, 1));
        assert_eq!(i.source, LaunchSource::Pmi);
        assert_eq!(
            i.rendezvous,
            Rendezvous::Tcp {
                addr: format!("127.0.0.1:{port}"),
                from: "mpiexec (Hydra) on one node: loopback, port from the proxy's pid",
            }
        );
        assert_eq!(i.job, "run=default;restart=0;hydra=4321");
        // another proxy, another job and (here) another port
        let j = hydra(ONE_NODE, Some(4322));
        assert_eq!(j.job, "run=default;restart=0;hydra=4322");
        assert_ne!(j.rendezvous, i.rendezvous);
        // MASTER_PORT wins over the derived port
        let mut env = ONE_NODE.to_vec();
        env.push(("MASTER_PORT", "29555"));
        assert_eq!(
            hydra(&env, Some(4321)).rendezvous,
            Rendezvous::Tcp {
                addr: "127.0.0.1:29555".into(),
                from: "mpiexec (Hydra) on one node: loopback, MASTER_PORT",
            }
        );
    }

    #[test]
    fn hydra_on_several_nodes_or_without_its_proxy_derives_nothing() {
        // 2 of 4 ranks on this node: each node's proxy has its own pid
        let mut env = ONE_NODE.to_vec();
        env.retain(|(k, _)| !matches!(*k, "MPI_LOCALNRANKS" | "PMI_SIZE"));
        env.extend([("MPI_LOCALNRANKS", "2"), ("PMI_SIZE", "4")]);
        let i = hydra(&env, Some(4321));
        assert_eq!((i.rank, i.world, i.source), (1, 4, LaunchSource::Pmi));
        assert_eq!(i.rendezvous, Rendezvous::Unset);
        assert_eq!(i.job, "run=default;restart=0");
        let e = i.bootstrap(&LaunchOptions::default()).err().unwrap();
        assert!(
            matches!(&e, Error::LaunchEnv { var, problem }
                if var == "MASTER_ADDR/MASTER_PORT" && problem.contains("-genv MASTER_ADDR")
                    && problem.contains("wrapper script")),
            "{e}"
        );
        // the parent is not the proxy (a wrapper script, or from_vars)
        let i = hydra(ONE_NODE, None);
        assert_eq!(i.rendezvous, Rendezvous::Unset);
        assert_eq!(i.job, "run=default;restart=0");
    }

    #[test]
    fn hydra_inside_slurm_meets_by_its_proxy_on_one_node_else_by_the_step() {
        let slurm = [
            ("SLURM_JOB_ID", "77"),
            ("SLURM_STEP_ID", "3"),
            ("SLURM_PROCID", "0"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_NTASKS", "1"),
            ("SLURM_STEP_NODELIST", "n[1-2]"),
            ("SLURMD_NODENAME", "n1"),
        ];
        // one node: two mpiexec runs of one allocation share its step ids,
        // not a proxy
        let mut env = ONE_NODE.to_vec();
        env.extend(slurm);
        let i = hydra(&env, Some(4321));
        assert_eq!(i.job, "run=default;restart=0;hydra=4321");
        assert_eq!(i.rendezvous, hydra(ONE_NODE, Some(4321)).rendezvous);
        assert_eq!(i.ignored, vec![LaunchSource::Slurm]);
        // several nodes (2 of 4 ranks here): the proxies' step
        env.retain(|(k, _)| !matches!(*k, "PMI_SIZE"));
        env.push(("PMI_SIZE", "4"));
        let i = hydra(&env, Some(4321));
        assert_eq!(i.job, "run=default;restart=0;slurm=77.3");
        assert_eq!(
            i.rendezvous,
            Rendezvous::Tcp {
                addr: format!("n1:{}", slurm::slurm_port(77, 3)),
                from: "first node of the Slurm step, port from the job and step ids",
            }
        );
    }

    #[test]
    fn hydra_ranks_told_where_to_meet_share_a_job_whatever_their_parent() {
        // `mpiexec -n 1 wrapper ./app : -n 1 ./app`: one rank's parent is
        // the proxy, the other's the wrapper; both meet at MASTER_*
        let mut env = ONE_NODE.to_vec();
        env.extend([("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29500")]);
        let (a, b) = (hydra(&env, Some(4321)), hydra(&env, None));
        assert_eq!(a.job, b.job);
        assert_eq!(a.job, "run=default;restart=0");
        assert_eq!(a.rendezvous, b.rendezvous);
        // a port derived from the pid (MASTER_ADDR alone) names the job by it
        env.retain(|(k, _)| *k != "MASTER_PORT");
        let c = hydra(&env, Some(4321));
        assert_eq!(c.job, "run=default;restart=0;hydra=4321");
        assert!(
            matches!(&c.rendezvous, Rendezvous::Tcp { from, .. } if *from == FROM_HYDRA[2]),
            "{:?}",
            c.rendezvous
        );
    }

    #[test]
    fn ranks_share_a_gpu_only_when_asked() {
        assert_eq!(pick_gpu(1, 2, false).unwrap(), 1);
        assert_eq!(pick_gpu(3, 2, true).unwrap(), 1);
        let e = pick_gpu(2, 2, false).unwrap_err();
        assert!(
            matches!(&e, Error::LaunchEnv { var, problem } if var == "LOCAL_RANK" && problem.contains("NCCL_HOSTID")),
            "{e}"
        );
    }

    /// A store at `addr` that answers a client's hello (validate and ping)
    /// only after `slow`, then nothing more: each connection is held open.
    fn slow_store(slow: Duration) -> (String, std::thread::JoinHandle<()>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            // VALIDATE, the magic, PING, the nonce
            let mut hello = [0u8; 10];
            s.read_exact(&mut hello).unwrap();
            std::thread::sleep(slow);
            let _ = s.write_all(&hello[6..]);
            // hold the connection until the client gives up
            let _ = s.read_to_end(&mut Vec::new());
        });
        (addr, h)
    }

    /// Connecting to the store and waiting there for the id share one
    /// deadline: a store slow to answer the hello that never gives the id
    /// ends the rendezvous at `opts.timeout`, not at nearly twice it.
    #[test]
    fn the_rendezvous_ends_within_its_timeout_in_all() {
        let timeout = Duration::from_millis(1500);
        let (addr, store) = slow_store(timeout * 6 / 10);
        let m: std::collections::HashMap<&str, String> = [
            ("NCCL_RS_RANK", "1".to_string()),
            ("NCCL_RS_WORLD_SIZE", "2".to_string()),
            ("NCCL_RS_STORE", addr),
        ]
        .into();
        let info = LaunchInfo::from_vars(&|k| m.get(k).cloned()).unwrap();
        let opts = LaunchOptions {
            timeout,
            ..LaunchOptions::default()
        };
        let t = Instant::now();
        let e = share_launch_id(&info, &opts).unwrap_err();
        let took = t.elapsed();
        assert!(matches!(e, Error::Store { .. }), "{e}");
        assert!(took >= timeout * 9 / 10, "gave up early: {took:?}");
        assert!(
            took < timeout * 13 / 10,
            "{took:?} for a timeout of {timeout:?}"
        );
        store.join().unwrap();
        // a step that finds no time left is not started
        let e = share_launch_id_by(&info, &opts, Instant::now()).unwrap_err();
        assert!(
            matches!(e, Error::Timeout { op: "share_launch_id", after } if after == timeout),
            "{e}"
        );
    }
}
