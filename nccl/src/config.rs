//! Communicator configuration (`ncclConfig_t`), as a builder.

use std::ffi::CString;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;
use crate::version::{Version, require};

/// How a communicator is created: a builder over `ncclConfig_t`. Fields left
/// unset keep NCCL's defaults (and its `NCCL_*` environment variables).
///
/// ```
/// let cfg = nccl::Config::new().blocking(false).comm_name("tp-group").max_ctas(16);
/// # let _ = cfg;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Config {
    blocking: Option<bool>,
    cga_cluster_size: Option<i32>,
    min_ctas: Option<i32>,
    max_ctas: Option<i32>,
    net_name: Option<CString>,
    split_share: Option<bool>,
    traffic_class: Option<i32>,
    comm_name: Option<CString>,
    collnet_enable: Option<bool>,
    cta_policy: Option<i32>,
    shrink_share: Option<bool>,
    nvls_ctas: Option<i32>,
    n_channels_per_net_peer: Option<i32>,
    nvlink_centric_sched: Option<bool>,
    pub(crate) timeout: Option<Duration>,
    bad_string: Option<&'static str>,
}

macro_rules! setter {
    ($(#[$m:meta])* $name:ident: $t:ty) => {
        $(#[$m])*
        pub fn $name(mut self, v: $t) -> Self {
            self.$name = Some(v);
            self
        }
    };
}

impl Config {
    /// All fields at NCCL's defaults.
    pub fn new() -> Config {
        Config::default()
    }

    setter!(
        /// `blocking`: `false` makes NCCL calls return `ncclInProgress` and
        /// finish in the background; this crate then waits for them (up to
        /// [`Config::timeout`]) before returning.
        blocking: bool
    );
    setter!(
        /// `cgaClusterSize` (0–8).
        cga_cluster_size: i32
    );
    setter!(
        /// `minCTAs`.
        min_ctas: i32
    );
    setter!(
        /// `maxCTAs`.
        max_ctas: i32
    );
    setter!(
        /// `splitShare` (NCCL 2.18+): children of a split share the parent's resources.
        split_share: bool
    );
    setter!(
        /// `trafficClass` (NCCL 2.22+).
        traffic_class: i32
    );
    setter!(
        /// `collnetEnable` (NCCL 2.24+).
        collnet_enable: bool
    );
    setter!(
        /// `CTAPolicy` (NCCL 2.27+): `NCCL_CTA_POLICY_DEFAULT`, `_EFFICIENCY` or `_ZERO`.
        cta_policy: i32
    );
    setter!(
        /// `shrinkShare` (NCCL 2.27+).
        shrink_share: bool
    );
    setter!(
        /// `nvlsCTAs` (NCCL 2.27+).
        nvls_ctas: i32
    );
    setter!(
        /// `nChannelsPerNetPeer` (NCCL 2.28+).
        n_channels_per_net_peer: i32
    );
    setter!(
        /// `nvlinkCentricSched` (NCCL 2.28+).
        nvlink_centric_sched: bool
    );

    /// `netName`: the network plugin to use (`"Socket"`, `"IB"`).
    pub fn net_name(mut self, name: &str) -> Self {
        match CString::new(name) {
            Ok(c) => self.net_name = Some(c),
            Err(_) => self.bad_string = Some("net_name"),
        }
        self
    }

    /// `commName` (NCCL 2.22+): a name shown in NCCL's logs and profilers.
    pub fn comm_name(mut self, name: &str) -> Self {
        match CString::new(name) {
            Ok(c) => self.comm_name = Some(c),
            Err(_) => self.bad_string = Some("comm_name"),
        }
        self
    }

    /// A deadline for creating the communicator (both modes) and, for a
    /// non-blocking one, also for splitting, finalizing and each call that
    /// returns `ncclInProgress`; past it the call fails with
    /// [`Error::Timeout`] and the communicator is aborted. Default: no limit.
    ///
    /// A blocking creation cannot be aborted before NCCL returns the
    /// communicator: it runs on a thread of its own, the caller gets `Timeout`
    /// at the deadline, and a creation that still succeeds later is aborted.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    pub(crate) fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// This config with deadline `t` unless it already has a timeout of its
    /// own. The mode stays as set (blocking unless `blocking(false)`).
    pub(crate) fn with_default_deadline(&self, t: Duration) -> Config {
        if self.timeout.is_some() {
            return self.clone();
        }
        self.clone().timeout(t)
    }

    pub(crate) fn is_blocking(&self) -> bool {
        self.blocking.unwrap_or(true)
    }

    /// The raw struct; the returned value borrows this config's strings.
    /// Fields newer than the header or the runtime library are `Unsupported`.
    pub(crate) fn to_raw(&self) -> Result<sys::ncclConfig_t> {
        if let Some(arg) = self.bad_string {
            return Err(Error::invalid(
                "Config",
                arg,
                "a string without NUL bytes",
                "one with a NUL byte",
            ));
        }
        let mut c = default_raw();
        let int = |v: Option<i32>| v.unwrap_or(sys::NCCL_CONFIG_UNDEF_INT);
        let flag = |v: Option<bool>| v.map(i32::from).unwrap_or(sys::NCCL_CONFIG_UNDEF_INT);
        let need = |set: bool, api: &'static str, minor: u32| {
            if set {
                require(api, Version::new(2, minor, 0))
            } else {
                Ok(())
            }
        };
        c.blocking = flag(self.blocking);
        c.cgaClusterSize = int(self.cga_cluster_size);
        c.minCTAs = int(self.min_ctas);
        c.maxCTAs = int(self.max_ctas);
        c.netName = self
            .net_name
            .as_ref()
            .map_or(std::ptr::null(), |s| s.as_ptr());
        need(self.split_share.is_some(), "Config::split_share", 18)?;
        c.splitShare = flag(self.split_share);
        need(self.traffic_class.is_some(), "Config::traffic_class", 22)?;
        c.trafficClass = int(self.traffic_class);
        need(self.comm_name.is_some(), "Config::comm_name", 22)?;
        c.commName = self
            .comm_name
            .as_ref()
            .map_or(std::ptr::null(), |s| s.as_ptr());
        need(self.collnet_enable.is_some(), "Config::collnet_enable", 24)?;
        c.collnetEnable = flag(self.collnet_enable);
        need(self.cta_policy.is_some(), "Config::cta_policy", 27)?;
        c.CTAPolicy = int(self.cta_policy);
        need(self.shrink_share.is_some(), "Config::shrink_share", 27)?;
        c.shrinkShare = flag(self.shrink_share);
        need(self.nvls_ctas.is_some(), "Config::nvls_ctas", 27)?;
        c.nvlsCTAs = int(self.nvls_ctas);
        need(
            self.n_channels_per_net_peer.is_some(),
            "Config::n_channels_per_net_peer",
            28,
        )?;
        c.nChannelsPerNetPeer = int(self.n_channels_per_net_peer);
        need(
            self.nvlink_centric_sched.is_some(),
            "Config::nvlink_centric_sched",
            28,
        )?;
        c.nvlinkCentricSched = flag(self.nvlink_centric_sched);
        Ok(c)
    }
}

/// `NCCL_CONFIG_INITIALIZER`: size, magic, version, every field undefined.
fn default_raw() -> sys::ncclConfig_t {
    let u = sys::NCCL_CONFIG_UNDEF_INT;
    sys::ncclConfig_t {
        size: std::mem::size_of::<sys::ncclConfig_t>(),
        magic: 0xcafe_beef,
        version: sys::NCCL_VERSION_CODE,
        blocking: u,
        cgaClusterSize: u,
        minCTAs: u,
        maxCTAs: u,
        netName: std::ptr::null(),
        splitShare: u,
        trafficClass: u,
        commName: std::ptr::null(),
        collnetEnable: u,
        CTAPolicy: u,
        shrinkShare: u,
        nvlsCTAs: u,
        nChannelsPerNetPeer: u,
        nvlinkCentricSched: u,
    }
}
