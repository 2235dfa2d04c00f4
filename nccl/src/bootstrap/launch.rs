//! Who am I, and where do the ranks meet? Rank, world size and local rank
//! from the launcher that started this process (torchrun, Slurm, Open MPI,
//! or this crate's own variables), and the rendezvous: torchrun's own
//! `TCPStore`, a store named by `NCCL_RS_STORE`, or this crate's TCP
//! rendezvous at `MASTER_ADDR:MASTER_PORT`, `NCCL_RS_ROOT`, or a root
//! derived from Slurm's node list.
//!
//! # Nested launchers
//!
//! The innermost launcher wins, without complaint about the outer ones'
//! variables (they are listed in [`LaunchInfo::ignored`]). In order:
//! `NCCL_RS_*` (set by hand), torchrun (`RANK`…; torchrun inside `sbatch`
//! or `srun` inherits `SLURM_PROCID` of the batch step), Open MPI
//! (`OMPI_COMM_WORLD_*`; `mpirun` inside `salloc` inherits the `SLURM_*` of
//! its daemons' step), Slurm (`SLURM_PROCID`…).
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
//! 5. Under Slurm (launched by `srun`, or by `mpirun` inside an allocation)
//!    with no `MASTER_ADDR`: the first host of `SLURM_STEP_NODELIST` (else
//!    `SLURM_JOB_NODELIST`), port [`slurm_port`](crate::bootstrap::slurm::slurm_port)`(job id,
//!    step id)` (20000–29999) unless `MASTER_PORT` is set. Rank 0 checks
//!    that it runs on that host (`SLURMD_NODENAME`).
//! 6. `mpirun` with every rank on one node, no Slurm, no `MASTER_ADDR`:
//!    `127.0.0.1`, port from the Open MPI job id (20000–29999) unless
//!    `MASTER_PORT` is set.
//!
//! In a store, the id is under [`store_id_key`]`(run,
//! restart)` = `nccl-rs/<run>/<restart>/uid` with `run` from `NCCL_RS_RUN_ID`,
//! else `TORCHELASTIC_RUN_ID`, else `default`, and `restart` from
//! `TORCHELASTIC_RESTART_COUNT`, else `0`: each torchrun restart meets under
//! a fresh key.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

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

/// The variable names of one launcher, innermost first: rank, world sizes
/// (first set wins), local rank.
const SOURCES: [(LaunchSource, &str, &[&str], &str); 4] = [
    (
        LaunchSource::Explicit,
        "NCCL_RS_RANK",
        &["NCCL_RS_WORLD_SIZE"],
        "NCCL_RS_LOCAL_RANK",
    ),
    (
        LaunchSource::Torchrun,
        "RANK",
        &["WORLD_SIZE"],
        "LOCAL_RANK",
    ),
    (
        LaunchSource::OpenMpi,
        "OMPI_COMM_WORLD_RANK",
        &["OMPI_COMM_WORLD_SIZE"],
        "OMPI_COMM_WORLD_LOCAL_RANK",
    ),
    (
        LaunchSource::Slurm,
        "SLURM_PROCID",
        &["SLURM_NTASKS", "SLURM_NPROCS"],
        "SLURM_LOCALID",
    ),
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
    /// ranks started by `mpirun`). The TCP rendezvous binds it into its keys
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
    /// Reads this process's environment.
    ///
    /// # Errors
    /// [`Error::LaunchEnv`] naming the variables when none of the launchers'
    /// variables are set, a value is missing, not UTF-8, not a number or out
    /// of range (`rank < world <= i32::MAX`, ports 1–65535), or a rendezvous
    /// address or Slurm node list is malformed.
    pub fn from_env() -> Result<LaunchInfo> {
        LaunchInfo::from_os_vars(&|k| std::env::var_os(k))
    }

    /// Like [`LaunchInfo::from_env`], with the variables from `get`.
    ///
    /// # Errors
    /// As [`LaunchInfo::from_env`].
    pub fn from_vars(get: &dyn Fn(&str) -> Option<String>) -> Result<LaunchInfo> {
        LaunchInfo::from_os_vars(&|k| get(k).map(OsString::from))
    }

    /// Like [`LaunchInfo::from_env`], with the variables (possibly not
    /// UTF-8) from `get`.
    ///
    /// # Errors
    /// As [`LaunchInfo::from_env`].
    pub fn from_os_vars(get: &dyn Fn(&str) -> Option<OsString>) -> Result<LaunchInfo> {
        let v = Vars(get);
        let max = MAX_WORLD as u64;
        let mut present = Vec::new();
        for &(source, rank_var, world_vars, local_var) in &SOURCES {
            if v.text(rank_var)?.is_some() {
                present.push((source, rank_var, world_vars, local_var));
            }
        }
        let Some(&(source, rank_var, world_vars, local_var)) = present.first() else {
            return Err(env_err(
                "RANK/WORLD_SIZE",
                "no launcher variables found: start under torchrun, srun (Slurm) or mpirun (Open MPI), \
                 `cargo xtask launch`, or set NCCL_RS_RANK and NCCL_RS_WORLD_SIZE",
            ));
        };
        let ignored = present[1..].iter().map(|p| p.0).collect();
        let rank = v.number(rank_var, max)?.expect("present");
        let mut world = None;
        for w in world_vars {
            if let Some(n) = v.number(w, max)? {
                world = Some((*w, n));
                break;
            }
        }
        let (world_var, world) =
            world.ok_or_else(|| env_err(world_vars[0], format!("missing ({rank_var} is set)")))?;
        if world == 0 {
            return Err(env_err(world_var, "must be at least 1"));
        }
        if rank >= world {
            return Err(env_err(
                format!("{rank_var}/{world_var}"),
                format!("rank {rank} is not below the world size {world}"),
            ));
        }
        let local_rank = match (v.number(local_var, max)?, source) {
            (Some(l), _) => l,
            (None, LaunchSource::Explicit) => 0,
            (None, _) => return Err(env_err(local_var, format!("missing ({rank_var} is set)"))),
        };
        let run = run_id(&v)?;
        let (rendezvous, slurm_nodes) = rendezvous(&v, source, &run)?;
        let job = job_identity(&v, source, &run)?;
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
        if self.world == 1 {
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
                    "needed to meet the other ranks (world {}): set them, or NCCL_RS_ROOT, or NCCL_RS_STORE",
                    self.world
                ),
            )),
            Rendezvous::Store { addr, key, .. } => {
                let store = TcpStore::connect(addr, opts.timeout)?;
                Ok(Box::new(StoreBootstrap::new(
                    store, self.rank, self.world, key,
                )?))
            }
            Rendezvous::Tcp { addr, .. } => {
                let secret = opts.secret()?;
                let mut b =
                    TcpBootstrap::with_secret(addr, self.rank, self.world, secret, opts.timeout)?
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
                Ok(Box::new(b))
            }
        }
    }
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
/// same).
fn job_identity(
    v: &Vars<'_>,
    source: LaunchSource,
    (run, restart): &(String, String),
) -> Result<String> {
    let mut job = format!("run={run};restart={restart}");
    let launcher = match source {
        LaunchSource::Slurm => match v.first_text(&["SLURM_JOB_ID", "SLURM_JOBID"])? {
            Some((_, j)) => {
                let step = v
                    .first_text(&["SLURM_STEP_ID", "SLURM_STEPID"])?
                    .map_or_else(|| "0".to_string(), |(_, s)| s);
                Some(format!("slurm={}.{}", j.trim(), step.trim()))
            }
            None => None,
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

fn rendezvous(
    v: &Vars<'_>,
    source: LaunchSource,
    (run, restart): &(String, String),
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
    let mut slurm = if matches!(source, LaunchSource::Slurm | LaunchSource::OpenMpi) {
        slurm_root(v)?
    } else {
        None
    };
    if slurm.is_none() && source == LaunchSource::OpenMpi {
        slurm = open_mpi_one_node(v)?;
    }
    match (master_addr, master_port, slurm) {
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
        // under Slurm, the variable not given is derived
        (Some(a), None, Some((_, p, _))) => Ok((
            Rendezvous::Tcp {
                addr: join_host("MASTER_ADDR", &a, p)?,
                from: "MASTER_ADDR, port from the Slurm job and step ids",
            },
            None,
        )),
        (None, p, Some((host, derived, here))) => Ok((
            Rendezvous::Tcp {
                addr: join_host("SLURM_STEP_NODELIST", &host, p.unwrap_or(derived))?,
                from: match (here.is_some() || source == LaunchSource::Slurm, p.is_some()) {
                    (true, true) => "first node of the Slurm step, MASTER_PORT",
                    (true, false) => "first node of the Slurm step, port from the job and step ids",
                    (false, true) => "Open MPI on one node: loopback, MASTER_PORT",
                    (false, false) => "Open MPI on one node: loopback, port from the job id",
                },
            },
            Some((host, here)),
        )),
        (Some(_), None, None) => Err(env_err("MASTER_PORT", "missing (MASTER_ADDR is set)")),
        (None, Some(_), None) => Err(env_err("MASTER_ADDR", "missing (MASTER_PORT is set)")),
        (None, None, None) => Ok((Rendezvous::Unset, None)),
    }
}

/// `mpirun` with every rank on this node (`OMPI_COMM_WORLD_LOCAL_SIZE` equal
/// to `OMPI_COMM_WORLD_SIZE`): loopback, and a port from the job's id
/// (`PMIX_NAMESPACE`, else `OMPI_MCA_ess_base_jobid`; 20000–29999 as under
/// Slurm, from an FNV-1a hash of the text).
fn open_mpi_one_node(v: &Vars<'_>) -> Result<Option<(String, u16, Option<String>)>> {
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
    let h = job.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Ok(Some((
        "127.0.0.1".into(),
        slurm::slurm_port(h % 1_000_000_007, 0),
        None,
    )))
}

/// Under Slurm: the first node of the step (or job), the derived port, and
/// the node this process runs on.
fn slurm_root(v: &Vars<'_>) -> Result<Option<(String, u16, Option<String>)>> {
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
    Ok(Some((first, slurm::slurm_port(job, step), here)))
}

/// How [`init_from_launcher`] sets up the communicator.
#[derive(Clone, Debug)]
pub struct LaunchOptions {
    /// Deadline for the rendezvous and for communicator creation
    /// (`Duration::MAX`: no practical limit).
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
    /// has `timeout` as its deadline. The default is blocking: each call costs
    /// the host time it costs in C. A non-blocking communicator
    /// (`Config::new().blocking(false)`) can also abandon a call that is
    /// still connecting to a peer, for about 70 µs more host time per call
    /// (NCCL launches each of its calls from a thread of its own;
    /// docs/performance.md).
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
/// docs list them), and creates the communicator, all within `opts.timeout`.
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
/// errors; CUDA and NCCL errors; `Timeout`.
pub fn init_from_launcher(opts: &LaunchOptions) -> Result<(crate::Comm, LaunchInfo)> {
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
    let id = share_launch_id(&info, opts)?;
    let config = opts.config.with_default_deadline(opts.timeout);
    if !opts.connect || info.world == 1 {
        let comm = crate::Comm::init_rank_with(&ctx, info.world, &id, info.rank, &config)?;
        return Ok((comm, info));
    }
    let (world, rank) = (info.world, info.rank);
    let comm = if config.is_blocking() {
        // creation and connection cannot be abandoned inside NCCL's blocking
        // calls: they run on a thread of their own, and this one waits at most
        // the deadline (a communicator made too late is aborted there)
        let limit = config.timeout.unwrap_or(opts.timeout);
        let config = config.clone().no_timeout();
        crate::comm::wait::within(limit, "init_from_launcher", move || {
            let start = std::time::Instant::now();
            let comm = crate::Comm::init_rank_with(&ctx, world, &id, rank, &config)?;
            comm.connect(limit.saturating_sub(start.elapsed()))?;
            Ok(comm)
        })?
    } else {
        let start = std::time::Instant::now();
        let comm = crate::Comm::init_rank_with(&ctx, world, &id, rank, &config)?;
        let left = config
            .timeout
            .unwrap_or(opts.timeout)
            .saturating_sub(start.elapsed());
        comm.connect(left)?;
        comm
    };
    Ok((comm, info))
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
/// makes a unique id, every rank gets it.
///
/// # Errors
/// As [`LaunchInfo::bootstrap`] and the rendezvous; NCCL's error from
/// `ncclGetUniqueId`.
pub fn share_launch_id(info: &LaunchInfo, opts: &LaunchOptions) -> Result<crate::UniqueId> {
    if info.world == 1 {
        return crate::UniqueId::new();
    }
    let mut b = info.bootstrap(opts)?;
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
}
