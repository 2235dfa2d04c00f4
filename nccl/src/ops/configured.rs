//! Collectives with a per-call configuration (`ncclCollConfig_t` and the
//! `nccl*Config` collectives, NCCL 2.31.2+): [`CollConfig`], used through
//! [`Comm::configured`]. Each call goes through the same funnel
//! ([`Call`](super::call::Call)) and states the same contract as its plain
//! form; the configuration is checked before NCCL sees it.

use std::ffi::CString;

use crate::base::contract;
use crate::base::dtype::NcclType;
use crate::base::error::{Error, Result};
use crate::base::runtime::{checked_runtime, require_api};
use crate::base::version::{Version, release};
use crate::comm::Comm;
use crate::mem::{DeviceBuffer, DeviceBufferMut};
use crate::ops::call::{Call, at, vp};
use crate::ops::{Enqueue, ReduceOp};
use crate::sys;

/// A per-call configuration of a collective (`ncclCollConfig_t`, NCCL
/// 2.31.2+), as a builder: use it with [`Comm::configured`]. Fields left
/// unset keep NCCL's choice (the communicator's settings); the same
/// configuration must be given on every rank (NCCL checks it only locally).
///
/// The struct passed to NCCL is the one the runtime's own header would make
/// (`NCCL_COLLCONFIG_INITIALIZER`, its size and version: [`CollConfig::raw_for`])
/// with the fields set here changed.
///
/// Not covered: vendor extensions (`ext`, which NCCL itself ignores) and
/// `launchCompletionEvent` (2.32), whose event NCCL records at every replay
/// of a captured graph, beyond any lifetime this type could check.
///
/// ```no_run
/// # fn demo(comm: &nccl::Comm, a: &cudarc::driver::CudaSlice<f32>,
/// #         b: &mut cudarc::driver::CudaSlice<f32>,
/// #         s: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
/// let cfg = nccl::CollConfig::new().max_ctas(4).alg_selection("ring");
/// comm.configured(&cfg).all_reduce(a, b, nccl::ReduceOp::Sum, s)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollConfig {
    min_ctas: Option<i32>,
    max_ctas: Option<i32>,
    nvls_ctas: Option<i32>,
    cga_cluster_size: Option<i32>,
    alg_selection: Option<CString>,
    bad_alg_selection: bool,
    force_alg_selection: Option<bool>,
    cta_policy: Option<i32>,
    user_profiler_tag: Option<u64>,
}

/// NCCL's largest CGA cluster size (`NCCL_MAX_CGA_CLUSTER_SIZE`).
const MAX_CGA_CLUSTER_SIZE: i32 = 8;

/// The first release with `ncclCollConfig_t`.
const SINCE: Version = match sys::since::constant_const("NCCL_COLLCONFIG_INITIALIZER") {
    Some(r) => release(r),
    None => Version::new(2, 31, 2),
};

/// The first release whose `ncclCollConfig_t` ends after
/// `launchCompletionEvent` (72 bytes) instead of `userProfilerTag` (64).
const LONGER: Version = Version::new(2, 32, 0);

impl CollConfig {
    /// Every field at NCCL's choice.
    pub fn new() -> CollConfig {
        CollConfig::default()
    }

    /// `minCTAs`: at least this many channels (CTAs), at least 1.
    pub fn min_ctas(mut self, v: i32) -> Self {
        self.min_ctas = Some(v);
        self
    }

    /// `maxCTAs`: at most this many channels (CTAs), at least 1 and at most
    /// the communicator's own limit (NCCL checks that one).
    pub fn max_ctas(mut self, v: i32) -> Self {
        self.max_ctas = Some(v);
        self
    }

    /// `nvlsCTAs`: the channel cap of NVLS algorithms, at least 1.
    pub fn nvls_ctas(mut self, v: i32) -> Self {
        self.nvls_ctas = Some(v);
        self
    }

    /// `cgaClusterSize`: the CUDA thread-block cluster size (Hopper and
    /// newer), 0 to 8.
    ///
    /// NCCL requires the same setting for every collective of one
    /// [`group`](crate::group()) (its header: "Inconsistent cgaClusterSize
    /// in a Group is undefined behavior"), so inside a group a collective
    /// of any communicator whose setting differs from that of the group's
    /// first collective is refused with [`Error::InvalidArgument`]
    /// (`cga_cluster_size`) before NCCL sees it. A plain collective, or a
    /// configuration without this field, counts as unset (NCCL then uses
    /// the communicator's size), which is never taken to match an explicit
    /// size. Point-to-point calls do not count; outside groups nothing is
    /// compared.
    ///
    /// ```no_run
    /// # fn demo(comm: &nccl::Comm, a: &cudarc::driver::CudaSlice<f32>,
    /// #         b: &mut cudarc::driver::CudaSlice<f32>, c: &mut cudarc::driver::CudaSlice<f32>,
    /// #         s: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
    /// let two = nccl::CollConfig::new().cga_cluster_size(2);
    /// let four = nccl::CollConfig::new().cga_cluster_size(4);
    /// let r = nccl::group(|g| {
    ///     comm.configured(&two).all_reduce(a, b, nccl::ReduceOp::Sum, g.on(s))?;
    ///     comm.configured(&four).all_reduce(a, c, nccl::ReduceOp::Sum, g.on(s)) // refused
    /// });
    /// assert!(matches!(r, Err(nccl::Error::InvalidArgument { arg: "cga_cluster_size", .. })));
    /// # Ok(()) }
    /// ```
    pub fn cga_cluster_size(mut self, v: i32) -> Self {
        self.cga_cluster_size = Some(v);
        self
    }

    /// `algSelection`: which algorithms this call may use, in NCCL's
    /// selection syntax (parsed by NCCL; empty means automatic). A string
    /// with a NUL byte makes the call fail with `InvalidArgument`.
    pub fn alg_selection(mut self, s: &str) -> Self {
        match CString::new(s) {
            Ok(c) => {
                self.alg_selection = Some(c);
                self.bad_alg_selection = false;
            }
            Err(_) => self.bad_alg_selection = true,
        }
        self
    }

    /// `forceAlgSelection` (NCCL's default: `true`): whether a selection
    /// NCCL cannot honour is an error (`true`) or falls back to automatic
    /// selection (`false`).
    pub fn force_alg_selection(mut self, v: bool) -> Self {
        self.force_alg_selection = Some(v);
        self
    }

    /// `CTAPolicy`: `NCCL_CTA_POLICY_*` bits (0 to 3); unset inherits the
    /// communicator's.
    pub fn cta_policy(mut self, v: i32) -> Self {
        self.cta_policy = Some(v);
        self
    }

    /// `userProfilerTag`: an opaque value NCCL hands to profiler plugins
    /// with this call's events. NCCL reserves the values with the top bit
    /// set; those are refused.
    pub fn user_profiler_tag(mut self, v: u64) -> Self {
        self.user_profiler_tag = Some(v);
        self
    }

    fn check(&self) -> Result<()> {
        const OP: &str = "CollConfig";
        if self.bad_alg_selection {
            return Err(Error::invalid(
                OP,
                "alg_selection",
                "a string without NUL bytes",
                "one with a NUL byte",
            ));
        }
        for (arg, v) in [
            ("min_ctas", self.min_ctas),
            ("max_ctas", self.max_ctas),
            ("nvls_ctas", self.nvls_ctas),
        ] {
            if let Some(v) = v.filter(|&v| v < 1) {
                return Err(Error::invalid(OP, arg, "at least 1", v));
            }
        }
        if let (Some(min), Some(max)) = (self.min_ctas, self.max_ctas) {
            if min > max {
                return Err(Error::invalid(
                    OP,
                    "min_ctas",
                    format!("at most max_ctas ({max})"),
                    min,
                ));
            }
        }
        if let Some(v) = self
            .cga_cluster_size
            .filter(|v| !(0..=MAX_CGA_CLUSTER_SIZE).contains(v))
        {
            return Err(Error::invalid(
                OP,
                "cga_cluster_size",
                format!("0 to {MAX_CGA_CLUSTER_SIZE}"),
                v,
            ));
        }
        if let Some(v) = self.cta_policy.filter(|v| !(0..=3).contains(v)) {
            return Err(Error::invalid(
                OP,
                "cta_policy",
                "NCCL_CTA_POLICY_* bits (0 to 3)",
                v,
            ));
        }
        if let Some(v) = self.user_profiler_tag.filter(|v| v >> 63 != 0) {
            return Err(Error::invalid(
                OP,
                "user_profiler_tag",
                "a value with the top bit clear (NCCL reserves the others)",
                format!("{v:#x}"),
            ));
        }
        Ok(())
    }

    /// The raw struct for a libnccl of release `runtime`: that release's
    /// `NCCL_COLLCONFIG_INITIALIZER` (no newer than this build's header)
    /// with the fields set here. It points into this config's strings, so
    /// it is valid while this config is. For callers of `nccl_sys` directly;
    /// [`Comm::configured`] makes it for the runtime in use.
    ///
    /// `size` and `version` are the release's own: NCCL 2.31 copies `size`
    /// bytes into a struct of its own size (64) and refuses a smaller one,
    /// so a larger struct must not reach it; 2.32 copies at most its own
    /// size (72).
    ///
    /// # Errors
    /// `InvalidArgument` for a value outside the ranges above;
    /// `Unsupported` for a release before 2.31.2.
    pub fn raw_for(&self, runtime: Version) -> Result<sys::ncclCollConfig_t> {
        self.check()?;
        if runtime < SINCE {
            return Err(Error::Unsupported {
                api: "ncclCollConfig_t",
                since: SINCE,
                runtime,
            });
        }
        let header = crate::base::version::HEADER_VERSION;
        let release = runtime.min(header);
        let full = std::mem::size_of::<sys::ncclCollConfig_t>();
        let short = std::mem::offset_of!(sys::ncclCollConfig_t, userProfilerTag)
            + std::mem::size_of::<u64>();
        // the fields this code knows: up to launchCompletionEvent from 2.32
        #[cfg(nccl_2_32)]
        let known = std::mem::offset_of!(sys::ncclCollConfig_t, launchCompletionEvent)
            + std::mem::size_of::<sys::cudaEvent_t>();
        #[cfg(not(nccl_2_32))]
        let known = short;
        let size = if release < LONGER { short } else { known }.min(full);
        let undef = sys::NCCL_CONFIG_UNDEF_INT;
        Ok(sys::ncclCollConfig_t {
            size,
            magic: sys::NCCL_API_MAGIC,
            version: release.code().unwrap_or(sys::NCCL_VERSION_CODE as i32) as _,
            ext: std::ptr::null_mut(),
            minCTAs: self.min_ctas.unwrap_or(undef),
            maxCTAs: self.max_ctas.unwrap_or(undef),
            nvlsCTAs: self.nvls_ctas.unwrap_or(undef),
            cgaClusterSize: self.cga_cluster_size.unwrap_or(undef),
            algSelection: self
                .alg_selection
                .as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr()),
            forceAlgSelection: i32::from(self.force_alg_selection.unwrap_or(true)),
            CTAPolicy: self.cta_policy.unwrap_or(undef),
            userProfilerTag: self.user_profiler_tag.unwrap_or(0),
            // newer fields (launchCompletionEvent): null, NCCL_CONFIG_UNDEF_PTR
            ..Default::default()
        })
    }

    /// [`CollConfig::raw_for`] the runtime in use, once `api` is known to
    /// be there.
    fn for_call(&self, api: &'static str) -> Result<sys::ncclCollConfig_t> {
        self.check()?; // before Unsupported: a bad value is wrong anywhere
        require_api(api)?;
        self.raw_for(checked_runtime()?)
    }
}

/// A communicator's collectives with a [`CollConfig`] (`nccl*Config`, NCCL
/// 2.31.2+): [`Comm::configured`]. Each method takes the arguments, and
/// checks the contract, of the communicator's method of the same name.
#[derive(Clone, Copy, Debug)]
pub struct Configured<'a> {
    comm: &'a Comm,
    cfg: &'a CollConfig,
}

impl Comm {
    /// This communicator's collectives with the per-call configuration
    /// `cfg` (NCCL 2.31.2+). `cfg` stays borrowed for as long as the calls'
    /// buffers: NCCL reads its algorithm selection when it launches them.
    ///
    /// ```no_run
    /// # fn demo(comm: &nccl::Comm, a: &cudarc::driver::CudaSlice<f32>,
    /// #         b: &mut cudarc::driver::CudaSlice<f32>,
    /// #         s: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
    /// let cfg = nccl::CollConfig::new().max_ctas(2);
    /// nccl::group(|g| comm.configured(&cfg).all_reduce(a, b, nccl::ReduceOp::Sum, g.on(s)))
    /// # }
    /// ```
    pub fn configured<'a>(&'a self, cfg: &'a CollConfig) -> Configured<'a> {
        Configured { comm: self, cfg }
    }
}

impl<'a> Configured<'a> {
    /// [`Call::run`], with this configuration's `cgaClusterSize` setting
    /// (unset if not set) shown to the group the call joins, which refuses
    /// a collective whose setting differs from the group's first
    /// collective's ([`crate::group`]).
    #[inline(always)]
    fn run(
        &self,
        c: Call<'a>,
        api: &'static str,
        f: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> sys::ncclResult_t,
    ) -> Result<()> {
        crate::base::thread::with_call_cga(self.cfg.cga_cluster_size, || c.run(api, f))
    }
}

// SAFETY (for every NCCL call below, beyond the note above `impl Comm` in
// `collective.rs`, which holds here word for word): `raw` lives on this
// frame until NCCL returns. NCCL copies the struct it points to when it is
// called (`ncclParseCollConfig`, at the entry of every `nccl*Config`; 2.31.2
// and 2.32.6) and does not read it afterwards; the copy's `algSelection`
// points into `self.cfg`'s string, which is borrowed for 'a, as the buffers
// are: until the call returns, or until the group's end that launches it.
// `raw`'s size and version are the runtime's own (`CollConfig::raw_for`).
impl<'a> Configured<'a> {
    /// [`Comm::all_reduce`] with this configuration (`ncclAllReduceConfig`).
    ///
    /// # Errors
    /// As [`Comm::all_reduce`]; `InvalidArgument` for the configuration;
    /// `Unsupported` before NCCL 2.31.2 (after the arguments are checked).
    pub fn all_reduce<T: NcclType>(
        &self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        op: ReduceOp<'a>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const API: &str = "ncclAllReduceConfig";
        let mut c = Call::begin::<T>(self.comm, "all_reduce", stream)?;
        contract::same_len("all_reduce", send.len(), recv.len())?;
        let raw = self.cfg.for_call(API)?;
        let rop = c.reduction::<T>(op)?;
        let n = send.len();
        let (s, d) = (c.read(send), c.write(recv));
        self.run(c, API, |comm, st| {
            // SAFETY: see above; send and recv hold n.
            unsafe { sys::ncclAllReduceConfig(vp(s), vp(d), n, T::DATATYPE, rop, comm, st, &raw) }
        })
    }

    /// [`Comm::all_reduce_in_place`] with this configuration.
    ///
    /// # Errors
    /// As [`Configured::all_reduce`].
    pub fn all_reduce_in_place<T: NcclType>(
        &self,
        buf: &'a mut impl DeviceBufferMut<T>,
        op: ReduceOp<'a>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const API: &str = "ncclAllReduceConfig";
        let mut c = Call::begin::<T>(self.comm, "all_reduce_in_place", stream)?;
        let raw = self.cfg.for_call(API)?;
        let rop = c.reduction::<T>(op)?;
        let n = buf.len();
        let d = c.write(buf);
        self.run(c, API, |comm, st| {
            // SAFETY: see above; in place.
            unsafe { sys::ncclAllReduceConfig(vp(d), vp(d), n, T::DATATYPE, rop, comm, st, &raw) }
        })
    }

    /// [`Comm::broadcast`] with this configuration (`ncclBroadcastConfig`).
    ///
    /// # Errors
    /// As [`Comm::broadcast`]; `InvalidArgument` for the configuration;
    /// `Unsupported` before NCCL 2.31.2.
    pub fn broadcast<T: NcclType>(
        &self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "broadcast";
        const API: &str = "ncclBroadcastConfig";
        let mut c = Call::begin::<T>(self.comm, OP, stream)?;
        contract::rank_arg(OP, "root", root, self.comm.world_size())?;
        contract::same_len(OP, send.len(), recv.len())?;
        let raw = self.cfg.for_call(API)?;
        let n = recv.len();
        let (s, d) = (c.read(send), c.write(recv));
        self.run(c, API, |comm, st| {
            // SAFETY: see above; root < world, both hold n.
            unsafe {
                sys::ncclBroadcastConfig(vp(s), vp(d), n, T::DATATYPE, root as i32, comm, st, &raw)
            }
        })
    }

    /// [`Comm::broadcast_in_place`] with this configuration.
    ///
    /// # Errors
    /// As [`Configured::broadcast`].
    pub fn broadcast_in_place<T: NcclType>(
        &self,
        buf: &'a mut impl DeviceBufferMut<T>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "broadcast_in_place";
        const API: &str = "ncclBroadcastConfig";
        let mut c = Call::begin::<T>(self.comm, OP, stream)?;
        contract::rank_arg(OP, "root", root, self.comm.world_size())?;
        let raw = self.cfg.for_call(API)?;
        let n = buf.len();
        let d = c.write(buf);
        self.run(c, API, |comm, st| {
            // SAFETY: see above; in place.
            unsafe {
                sys::ncclBroadcastConfig(vp(d), vp(d), n, T::DATATYPE, root as i32, comm, st, &raw)
            }
        })
    }

    /// [`Comm::reduce`] with this configuration (`ncclReduceConfig`).
    ///
    /// # Errors
    /// As [`Comm::reduce`]; `InvalidArgument` for the configuration;
    /// `Unsupported` before NCCL 2.31.2.
    pub fn reduce<T: NcclType, R: DeviceBufferMut<T>>(
        &self,
        send: &'a impl DeviceBuffer<T>,
        recv: Option<&'a mut R>,
        op: ReduceOp<'a>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "reduce";
        const API: &str = "ncclReduceConfig";
        let mut c = Call::begin::<T>(self.comm, OP, stream)?;
        contract::rank_arg(OP, "root", root, self.comm.world_size())?;
        let n = send.len();
        if self.comm.rank() == root && recv.is_none() {
            return Err(Error::invalid(
                OP,
                "recv",
                "Some(buffer) at the root",
                "None",
            ));
        }
        if let Some(r) = &recv {
            contract::same_len(OP, n, r.len())?;
        }
        let raw = self.cfg.for_call(API)?;
        let rop = c.reduction::<T>(op)?;
        let s = c.read(send);
        let d = match recv {
            Some(r) => c.write(r),
            None => 0,
        };
        self.run(c, API, |comm, st| {
            // SAFETY: see above; send holds n; recv (written only at the
            // root, where it holds n) may be null elsewhere.
            unsafe {
                sys::ncclReduceConfig(
                    vp(s),
                    vp(d),
                    n,
                    T::DATATYPE,
                    rop,
                    root as i32,
                    comm,
                    st,
                    &raw,
                )
            }
        })
    }

    /// [`Comm::reduce_in_place`] with this configuration.
    ///
    /// # Errors
    /// As [`Configured::reduce`].
    pub fn reduce_in_place<T: NcclType>(
        &self,
        buf: &'a mut impl DeviceBufferMut<T>,
        op: ReduceOp<'a>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "reduce_in_place";
        const API: &str = "ncclReduceConfig";
        let mut c = Call::begin::<T>(self.comm, OP, stream)?;
        contract::rank_arg(OP, "root", root, self.comm.world_size())?;
        let raw = self.cfg.for_call(API)?;
        let rop = c.reduction::<T>(op)?;
        let n = buf.len();
        let d = c.write(buf);
        self.run(c, API, |comm, st| {
            // SAFETY: see above; in place.
            unsafe {
                sys::ncclReduceConfig(
                    vp(d),
                    vp(d),
                    n,
                    T::DATATYPE,
                    rop,
                    root as i32,
                    comm,
                    st,
                    &raw,
                )
            }
        })
    }

    /// [`Comm::all_gather`] with this configuration (`ncclAllGatherConfig`).
    ///
    /// # Errors
    /// As [`Comm::all_gather`]; `InvalidArgument` for the configuration;
    /// `Unsupported` before NCCL 2.31.2.
    pub fn all_gather<T: NcclType>(
        &self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const API: &str = "ncclAllGatherConfig";
        let mut c = Call::begin::<T>(self.comm, "all_gather", stream)?;
        contract::all_gather(send.len(), recv.len(), self.comm.world_size())?;
        let raw = self.cfg.for_call(API)?;
        let n = send.len();
        let (s, d) = (c.read(send), c.write(recv));
        self.run(c, API, |comm, st| {
            // SAFETY: see above; send holds n and recv n × world.
            unsafe { sys::ncclAllGatherConfig(vp(s), vp(d), n, T::DATATYPE, comm, st, &raw) }
        })
    }

    /// [`Comm::all_gather_in_place`] with this configuration.
    ///
    /// # Errors
    /// As [`Configured::all_gather`].
    pub fn all_gather_in_place<T: NcclType>(
        &self,
        buf: &'a mut impl DeviceBufferMut<T>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "all_gather_in_place";
        const API: &str = "ncclAllGatherConfig";
        let mut c = Call::begin::<T>(self.comm, OP, stream)?;
        let chunk = contract::chunked(OP, buf.len(), self.comm.world_size())?;
        let raw = self.cfg.for_call(API)?;
        let own = self.comm.rank() * chunk;
        let d = c.write(buf);
        self.run(c, API, |comm, st| {
            // SAFETY: see above; sendbuff = recvbuff + rank × chunk is NCCL's
            // in-place layout, in bounds (world chunks).
            unsafe {
                sys::ncclAllGatherConfig(at::<T>(d, own), vp(d), chunk, T::DATATYPE, comm, st, &raw)
            }
        })
    }

    /// [`Comm::reduce_scatter`] with this configuration
    /// (`ncclReduceScatterConfig`).
    ///
    /// # Errors
    /// As [`Comm::reduce_scatter`]; `InvalidArgument` for the configuration;
    /// `Unsupported` before NCCL 2.31.2.
    pub fn reduce_scatter<T: NcclType>(
        &self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        op: ReduceOp<'a>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const API: &str = "ncclReduceScatterConfig";
        let mut c = Call::begin::<T>(self.comm, "reduce_scatter", stream)?;
        contract::reduce_scatter(send.len(), recv.len(), self.comm.world_size())?;
        let raw = self.cfg.for_call(API)?;
        let rop = c.reduction::<T>(op)?;
        let n = recv.len();
        let (s, d) = (c.read(send), c.write(recv));
        self.run(c, API, |comm, st| {
            // SAFETY: see above; send holds n × world and recv n.
            unsafe {
                sys::ncclReduceScatterConfig(vp(s), vp(d), n, T::DATATYPE, rop, comm, st, &raw)
            }
        })
    }

    /// [`Comm::reduce_scatter_in_place`] with this configuration.
    ///
    /// # Errors
    /// As [`Configured::reduce_scatter`].
    pub fn reduce_scatter_in_place<T: NcclType>(
        &self,
        buf: &'a mut impl DeviceBufferMut<T>,
        op: ReduceOp<'a>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "reduce_scatter_in_place";
        const API: &str = "ncclReduceScatterConfig";
        let mut c = Call::begin::<T>(self.comm, OP, stream)?;
        let chunk = contract::chunked(OP, buf.len(), self.comm.world_size())?;
        let raw = self.cfg.for_call(API)?;
        let rop = c.reduction::<T>(op)?;
        let own = self.comm.rank() * chunk;
        let d = c.write(buf);
        self.run(c, API, |comm, st| {
            // SAFETY: see above; recvbuff = sendbuff + rank × chunk is NCCL's
            // in-place layout, in bounds (world chunks).
            unsafe {
                sys::ncclReduceScatterConfig(
                    vp(d),
                    at::<T>(d, own),
                    chunk,
                    T::DATATYPE,
                    rop,
                    comm,
                    st,
                    &raw,
                )
            }
        })
    }

    /// [`Comm::all_to_all`] with this configuration (`ncclAlltoAllConfig`).
    ///
    /// # Errors
    /// As [`Comm::all_to_all`]; `InvalidArgument` for the configuration;
    /// `Unsupported` before NCCL 2.31.2.
    pub fn all_to_all<T: NcclType>(
        &self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const API: &str = "ncclAlltoAllConfig";
        let mut c = Call::begin::<T>(self.comm, "all_to_all", stream)?;
        let chunk = contract::all_to_all(send.len(), recv.len(), self.comm.world_size())?;
        let raw = self.cfg.for_call(API)?;
        let (s, d) = (c.read(send), c.write(recv));
        self.run(c, API, |comm, st| {
            // SAFETY: see above; both hold chunk × world.
            unsafe { sys::ncclAlltoAllConfig(vp(s), vp(d), chunk, T::DATATYPE, comm, st, &raw) }
        })
    }

    /// [`Comm::gather`] with this configuration (`ncclGatherConfig`).
    ///
    /// # Errors
    /// As [`Comm::gather`]; `InvalidArgument` for the configuration;
    /// `Unsupported` before NCCL 2.31.2.
    pub fn gather<T: NcclType, R: DeviceBufferMut<T>>(
        &self,
        send: &'a impl DeviceBuffer<T>,
        recv: Option<&'a mut R>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "gather";
        const API: &str = "ncclGatherConfig";
        let mut c = Call::begin::<T>(self.comm, OP, stream)?;
        let world = self.comm.world_size();
        contract::rank_arg(OP, "root", root, world)?;
        let at_root = self.comm.rank() == root;
        let n = send.len();
        contract::rooted(OP, n, recv.as_ref().map(|r| r.len()), at_root, world)?;
        let raw = self.cfg.for_call(API)?;
        let s = c.read(send);
        let d = match recv {
            Some(r) if at_root => c.write(r),
            _ => 0,
        };
        self.run(c, API, |comm, st| {
            // SAFETY: see above; send holds n; at the root recv holds n × world.
            unsafe {
                sys::ncclGatherConfig(vp(s), vp(d), n, T::DATATYPE, root as i32, comm, st, &raw)
            }
        })
    }

    /// [`Comm::scatter`] with this configuration (`ncclScatterConfig`).
    ///
    /// # Errors
    /// As [`Comm::scatter`]; `InvalidArgument` for the configuration;
    /// `Unsupported` before NCCL 2.31.2.
    pub fn scatter<T: NcclType, S: DeviceBuffer<T>>(
        &self,
        send: Option<&'a S>,
        recv: &'a mut impl DeviceBufferMut<T>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "scatter";
        const API: &str = "ncclScatterConfig";
        let mut c = Call::begin::<T>(self.comm, OP, stream)?;
        let world = self.comm.world_size();
        contract::rank_arg(OP, "root", root, world)?;
        let at_root = self.comm.rank() == root;
        let n = recv.len();
        contract::rooted(OP, n, send.map(|s| s.len()), at_root, world)?;
        let raw = self.cfg.for_call(API)?;
        let s = match send {
            Some(sb) if at_root => c.read(sb),
            _ => 0,
        };
        let d = c.write(recv);
        self.run(c, API, |comm, st| {
            // SAFETY: see above; recv holds n; at the root send holds n × world.
            unsafe {
                sys::ncclScatterConfig(vp(s), vp(d), n, T::DATATYPE, root as i32, comm, st, &raw)
            }
        })
    }
}
