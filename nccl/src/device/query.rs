//! Teams (`ncclTeamWorld`, `ncclTeamLsa`, `ncclTeamRail`, 2.28.3+) and the
//! communicator's properties (`ncclCommQueryProperties`, 2.29.2+).

use crate::base::call::check_comm;
use crate::base::error::{Error, Result};
use crate::comm::Comm;
use crate::sys;
use crate::sys::device::{MAX_STRUCT_SIZE, NCCL_API_MAGIC, ncclTeam};

use super::{DEVICE_API, DEVICE_QUERIES, require_device, running_layout};

/// A team of ranks (`ncclTeam`): `n_ranks` ranks whose world ranks are
/// `stride` apart, this rank being `rank` among them. The world team is
/// every rank; the LSA team the ranks that can load and store each other's
/// memory (one node's GPUs, or an NVLink domain); the rail team the ranks
/// with this rank's index in their LSA teams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Team {
    /// Ranks in the team.
    pub n_ranks: usize,
    /// This rank's index in the team.
    pub rank: usize,
    /// The world-rank distance between consecutive members.
    pub stride: usize,
}

impl Team {
    fn from_raw(api: &'static str, t: ncclTeam) -> Result<Team> {
        let n = usize::try_from(t.nRanks).ok().filter(|&n| n > 0);
        let r = usize::try_from(t.rank).ok();
        let s = usize::try_from(t.stride).ok();
        match (n, r, s) {
            (Some(n_ranks), Some(rank), Some(stride)) if rank < n_ranks => Ok(Team {
                n_ranks,
                rank,
                stride,
            }),
            _ => Err(Error::invalid(
                api,
                "team",
                "a team NCCL made",
                format!("{} ranks, rank {}, stride {}", t.nRanks, t.rank, t.stride),
            )),
        }
    }

    fn to_raw(self) -> ncclTeam {
        let i = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        ncclTeam {
            nRanks: i(self.n_ranks),
            rank: i(self.rank),
            stride: i(self.stride),
        }
    }
}

/// What `ncclCommQueryProperties` says about a communicator (NCCL
/// 2.29.2+). Fields a release does not report are `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CommProperties {
    /// This rank.
    pub rank: usize,
    /// Ranks in the communicator.
    pub world_size: usize,
    /// The CUDA device.
    pub cuda_dev: i32,
    /// The NVML device.
    pub nvml_dev: i32,
    /// Whether the device API can be used (symmetric memory support).
    pub device_api_support: bool,
    /// Whether multimem (NVLink SHARP) addresses exist.
    pub multimem_support: bool,
    /// NCCL's `ncclGinType_t` (0: no GPU-initiated networking).
    pub gin_type: u32,
    /// LSA teams in the world (2.29.7+).
    pub n_lsa_teams: Option<usize>,
    /// Whether host-initiated one-sided operations work (2.29.7+).
    pub host_rma_support: Option<bool>,
    /// `sizeof(ncclDevComm)` of the running release as NCCL states it
    /// (`devCommRuntimeVersionSize`, 2.31.2+).
    pub dev_comm_runtime_size: Option<usize>,
}

/// The properties struct NCCL fills: the running release's, zeroed beyond
/// its header, 8-aligned.
#[repr(C, align(8))]
struct PropsBuf([u8; MAX_STRUCT_SIZE]);

impl PropsBuf {
    fn int(&self, o: usize) -> i32 {
        i32::from_ne_bytes([self.0[o], self.0[o + 1], self.0[o + 2], self.0[o + 3]])
    }
}

impl Comm {
    fn team(
        &self,
        op: &'static str,
        api: &'static str,
        f: unsafe fn(sys::ncclComm_t) -> ncclTeam,
    ) -> Result<Team> {
        require_device(api, DEVICE_API)?;
        self.live(op)?;
        // SAFETY: a live communicator of this thread; the call only reads
        // it (it sets the device runtime up once, 2.29+).
        let t = unsafe { f(self.as_raw()) };
        Team::from_raw(api, t)
    }

    /// The world team (`ncclTeamWorld`, NCCL 2.28.3+): every rank, stride 1.
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.28.3; `Aborted`.
    pub fn team_world(&self) -> Result<Team> {
        self.team("team_world", "ncclTeamWorld", sys::device::ncclTeamWorld)
    }

    /// This rank's LSA team (`ncclTeamLsa`, NCCL 2.28.3+): the ranks whose
    /// memory it can load and store. Ranks that NCCL sees on different
    /// nodes (for example two ranks on one GPU with different
    /// `NCCL_HOSTID`s) are in LSA teams of their own.
    ///
    /// # Errors
    /// As [`Comm::team_world`].
    pub fn team_lsa(&self) -> Result<Team> {
        self.team("team_lsa", "ncclTeamLsa", sys::device::ncclTeamLsa)
    }

    /// This rank's rail team (`ncclTeamRail`, NCCL 2.28.3+): the ranks
    /// with the same index in their LSA teams, one per LSA team.
    ///
    /// # Errors
    /// As [`Comm::team_world`].
    pub fn team_rail(&self) -> Result<Team> {
        self.team("team_rail", "ncclTeamRail", sys::device::ncclTeamRail)
    }

    /// The world rank of member `rank` of `team` (`ncclTeamRankToWorld`).
    ///
    /// # Errors
    /// `InvalidArgument` for `rank >= team.n_ranks`, or a team whose member
    /// would be more than an `int` away (NCCL computes in `int`; a `Team`
    /// made by hand can ask that); as [`Comm::team_world`].
    pub fn team_rank_to_world(&self, team: Team, rank: usize) -> Result<usize> {
        const API: &str = "ncclTeamRankToWorld";
        require_device(API, DEVICE_API)?;
        self.live("team_rank_to_world")?;
        crate::base::contract::team_member(
            "team_rank_to_world",
            (team.n_ranks, team.rank, team.stride),
            rank,
            self.rank(),
        )?;
        let r = i32::try_from(rank).unwrap_or(i32::MAX);
        // SAFETY: a live communicator of this thread; plain values, checked
        // above so that NCCL's `rank + (r - team.rank) * stride` (in int)
        // does not overflow.
        let w = unsafe { sys::device::ncclTeamRankToWorld(self.as_raw(), team.to_raw(), r) };
        usize::try_from(w)
            .ok()
            .filter(|&w| w < self.world_size())
            .ok_or_else(|| Error::invalid(API, "team", "a team of this communicator", w))
    }

    /// The LSA rank of member `rank` of `team` (`ncclTeamRankToLsa`), or
    /// `None` when that rank is not in this rank's LSA team.
    ///
    /// # Errors
    /// As [`Comm::team_rank_to_world`].
    pub fn team_rank_to_lsa(&self, team: Team, rank: usize) -> Result<Option<usize>> {
        const API: &str = "ncclTeamRankToLsa";
        require_device(API, DEVICE_API)?;
        self.live("team_rank_to_lsa")?;
        let lsa = self.team_lsa()?;
        crate::base::contract::team_member(
            "team_rank_to_lsa",
            (team.n_ranks, team.rank, team.stride),
            rank,
            lsa.rank,
        )?;
        let r = i32::try_from(rank).unwrap_or(i32::MAX);
        // SAFETY: a live communicator of this thread; plain values, checked
        // above so that NCCL's `lsaSelf + (r - team.rank) * stride` (in
        // int) does not overflow.
        let l = unsafe { sys::device::ncclTeamRankToLsa(self.as_raw(), team.to_raw(), r) };
        Ok(usize::try_from(l).ok().filter(|&l| l < lsa.n_ranks))
    }

    /// The communicator's properties (`ncclCommQueryProperties`, NCCL
    /// 2.29.2+), asked in the running release's own layout.
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.29.2; `UnknownLayout` for a release this
    /// build does not know; `Aborted`; NCCL's error.
    pub fn properties(&self) -> Result<CommProperties> {
        const API: &str = "ncclCommQueryProperties";
        require_device(API, DEVICE_QUERIES)?;
        let layout = running_layout(API)?;
        self.live("properties")?;
        let mut buf = PropsBuf([0; MAX_STRUCT_SIZE]);
        buf.0[..8].copy_from_slice(&layout.properties_size.to_ne_bytes());
        buf.0[8..12].copy_from_slice(&NCCL_API_MAGIC.to_ne_bytes());
        buf.0[12..16].copy_from_slice(&layout.version_code.to_ne_bytes());
        // SAFETY: a live communicator of this thread; `buf` is 8-aligned
        // and MAX_STRUCT_SIZE bytes, at least the release's
        // sizeof(ncclCommProperties), with its size, magic and version set
        // as NCCL_COMM_PROPERTIES_INITIALIZER does. Written before return.
        let r = unsafe {
            sys::device::ncclCommQueryProperties(self.as_raw(), buf.0.as_mut_ptr().cast())
        };
        check_comm(API, r, self.as_raw())?;
        let newer = layout.version_code >= 22907;
        let (go, gs) = layout.properties_gin_type;
        let gin_type = match gs {
            1 => u32::from(buf.0[go]),
            _ => buf.int(go) as u32,
        };
        let n_lsa = usize::try_from(buf.int(40)).ok();
        Ok(CommProperties {
            rank: usize::try_from(buf.int(16)).unwrap_or(usize::MAX),
            world_size: usize::try_from(buf.int(20)).unwrap_or(0),
            cuda_dev: buf.int(24),
            nvml_dev: buf.int(28),
            device_api_support: buf.0[32] != 0,
            multimem_support: buf.0[33] != 0,
            gin_type,
            n_lsa_teams: if newer { n_lsa } else { None },
            host_rma_support: newer.then(|| buf.0[44] != 0),
            dev_comm_runtime_size: layout.properties_dev_comm_size.map(|o| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf.0[o..o + 8]);
                usize::from_ne_bytes(b)
            }),
        })
    }
}
