//! Communicator configuration (`ncclConfig_t`), as a builder.

use std::ffi::CString;
use std::time::Duration;

use crate::base::error::{Error, Result};
use crate::base::runtime::{checked_runtime, require_field};
use crate::sys;

/// How a communicator is created: a builder over `ncclConfig_t`. Fields left
/// unset keep NCCL's defaults (and its `NCCL_*` environment variables).
///
/// Each setter names the first NCCL release whose `ncclConfig_t` has the
/// field (from the headers, [`nccl_sys::since::config_field`]). A field set
/// here that this build's header or the libnccl in use lacks makes creating
/// the communicator fail with [`Error::Unsupported`]. The struct passed is
/// the runtime's own `NCCL_CONFIG_INITIALIZER`
/// ([`nccl_sys::config_for_runtime`]) with only the fields set here changed.
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
    /// Shared with every communicator made with it: NCCL keeps the pointer
    /// (it does not copy the name) for the communicator's life.
    comm_name: Option<std::sync::Arc<CString>>,
    collnet_enable: Option<bool>,
    cta_policy: Option<i32>,
    shrink_share: Option<bool>,
    nvls_ctas: Option<i32>,
    n_channels_per_net_peer: Option<i32>,
    nvlink_centric_sched: Option<bool>,
    graph_usage_mode: Option<i32>,
    num_rma_ctx: Option<i32>,
    max_p2p_peers: Option<i32>,
    graph_stream_ordering: Option<i32>,
    launch_order_implicit: Option<i32>,
    num_rma_sig: Option<i32>,
    rma_eager_init: Option<i32>,
    host_cft_mode: Option<i32>,
    nvls_host_mode: Option<i32>,
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
        /// `splitShare` (NCCL 2.18.1+): children of a split share the parent's
        /// resources. [`Comm::split`](crate::Comm::split) refuses to make such
        /// children (NCCL forbids using a parent and a sharing child at the
        /// same time, which two threads could): creating with it on is
        /// allowed, splitting is `InvalidArgument`.
        split_share: bool
    );
    setter!(
        /// `trafficClass` (NCCL 2.26.2+).
        traffic_class: i32
    );
    setter!(
        /// `collnetEnable` (NCCL 2.27.3+).
        collnet_enable: bool
    );
    setter!(
        /// `CTAPolicy` (NCCL 2.27.3+): `NCCL_CTA_POLICY_DEFAULT`, `_EFFICIENCY` or `_ZERO`.
        cta_policy: i32
    );
    setter!(
        /// `shrinkShare` (NCCL 2.27.3+): [`Comm::shrink`](crate::Comm::shrink)
        /// with [`ShrinkMode::Default`](crate::ShrinkMode::Default) refuses it,
        /// as `split_share`.
        shrink_share: bool
    );
    setter!(
        /// `nvlsCTAs` (NCCL 2.27.3+).
        nvls_ctas: i32
    );
    setter!(
        /// `nChannelsPerNetPeer` (NCCL 2.28.3+).
        n_channels_per_net_peer: i32
    );
    setter!(
        /// `nvlinkCentricSched` (NCCL 2.28.3+).
        nvlink_centric_sched: bool
    );
    setter!(
        /// `graphUsageMode` (NCCL 2.29.2+), NCCL's value as is.
        graph_usage_mode: i32
    );
    setter!(
        /// `numRmaCtx` (NCCL 2.29.2+).
        num_rma_ctx: i32
    );
    setter!(
        /// `maxP2pPeers` (NCCL 2.30.3+).
        max_p2p_peers: i32
    );
    setter!(
        /// `graphStreamOrdering` (NCCL 2.30.7+), NCCL's value as is.
        graph_stream_ordering: i32
    );
    setter!(
        /// `launchOrderImplicit` (NCCL 2.31.2+), NCCL's value as is.
        launch_order_implicit: i32
    );
    setter!(
        /// `numRmaSig` (NCCL 2.31.2+).
        num_rma_sig: i32
    );
    setter!(
        /// `rmaEagerInit` (NCCL 2.31.2+), NCCL's value as is.
        rma_eager_init: i32
    );
    setter!(
        /// `hostCftMode` (NCCL 2.31.2+): an `ncclHostCftMode_t` value.
        host_cft_mode: i32
    );
    setter!(
        /// `nvlsHostMode` (NCCL 2.32.3+): `ncclNvlsHostMode_t` flags.
        nvls_host_mode: i32
    );

    /// `netName`: the network plugin to use (`"Socket"`, `"IB"`).
    pub fn net_name(mut self, name: &str) -> Self {
        match CString::new(name) {
            Ok(c) => self.net_name = Some(c),
            Err(_) => self.bad_string = Some("net_name"),
        }
        self
    }

    /// `commName` (NCCL 2.27.3+): a name shown in NCCL's logs and profilers.
    pub fn comm_name(mut self, name: &str) -> Self {
        match CString::new(name) {
            Ok(c) => self.comm_name = Some(std::sync::Arc::new(c)),
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
    /// Until NCCL returns, that thread and its state stay; at most
    /// [`MAX_STUCK_CREATIONS`](crate::MAX_STUCK_CREATIONS) such creations are
    /// left behind, and further ones fail at once with
    /// [`Error::CreationStuck`]. A non-blocking creation is aborted at the
    /// deadline and leaves nothing behind.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// The name's storage, for the communicator made with this config to
    /// keep (NCCL reads `commName` through the pointer until the
    /// communicator is destroyed, and copies it into children made with no
    /// config of their own).
    pub(crate) fn name_handle(&self) -> Option<std::sync::Arc<CString>> {
        self.comm_name.clone()
    }

    /// Whether this config asks children to share the parent's resources:
    /// (`split_share`, `shrink_share`).
    pub(crate) fn sharing(&self) -> (bool, bool) {
        (
            self.split_share == Some(true),
            self.shrink_share == Some(true),
        )
    }

    pub(crate) fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// This config with deadline `t` unless it already has a timeout of its
    /// own. The mode stays as set (blocking unless `blocking(false)`).
    #[cfg(feature = "bootstrap")]
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
    /// It starts as the runtime's own `NCCL_CONFIG_INITIALIZER`; fields that
    /// this build's header or the runtime lacks are `Unsupported`.
    pub(crate) fn to_raw(&self) -> Result<sys::ncclConfig_t> {
        if let Some(arg) = self.bad_string {
            return Err(Error::invalid(
                "Config",
                arg,
                "a string without NUL bytes",
                "one with a NUL byte",
            ));
        }
        let runtime = checked_runtime()?;
        let mut c = sys::config_for_runtime((runtime.major, runtime.minor, runtime.patch));
        // Sets `c.$field` to `$v` (when set) after checking that both the
        // header and the runtime have the field; `$name` is the field's name
        // for the cfg (the field is not even in the struct without it).
        macro_rules! put {
            ($c:ident, $setter:literal, $field:ident = $name:literal, $v:expr) => {
                if let Some(v) = $v {
                    require_field($setter, $name)?;
                    #[cfg(nccl_field = $name)]
                    {
                        $c.$field = v;
                    }
                    #[cfg(not(nccl_field = $name))]
                    let _ = v;
                }
            };
        }
        let flag = |v: Option<bool>| v.map(i32::from);
        let text = |v: &Option<CString>| v.as_ref().map(|s| s.as_ptr());
        put!(
            c,
            "Config::blocking",
            blocking = "blocking",
            flag(self.blocking)
        );
        put!(
            c,
            "Config::cga_cluster_size",
            cgaClusterSize = "cgaClusterSize",
            self.cga_cluster_size
        );
        put!(c, "Config::min_ctas", minCTAs = "minCTAs", self.min_ctas);
        put!(c, "Config::max_ctas", maxCTAs = "maxCTAs", self.max_ctas);
        put!(
            c,
            "Config::net_name",
            netName = "netName",
            text(&self.net_name)
        );
        put!(
            c,
            "Config::split_share",
            splitShare = "splitShare",
            flag(self.split_share)
        );
        put!(
            c,
            "Config::traffic_class",
            trafficClass = "trafficClass",
            self.traffic_class
        );
        put!(
            c,
            "Config::comm_name",
            commName = "commName",
            self.comm_name.as_ref().map(|s| s.as_ptr())
        );
        put!(
            c,
            "Config::collnet_enable",
            collnetEnable = "collnetEnable",
            flag(self.collnet_enable)
        );
        put!(
            c,
            "Config::cta_policy",
            CTAPolicy = "CTAPolicy",
            self.cta_policy
        );
        put!(
            c,
            "Config::shrink_share",
            shrinkShare = "shrinkShare",
            flag(self.shrink_share)
        );
        put!(
            c,
            "Config::nvls_ctas",
            nvlsCTAs = "nvlsCTAs",
            self.nvls_ctas
        );
        put!(
            c,
            "Config::n_channels_per_net_peer",
            nChannelsPerNetPeer = "nChannelsPerNetPeer",
            self.n_channels_per_net_peer
        );
        put!(
            c,
            "Config::nvlink_centric_sched",
            nvlinkCentricSched = "nvlinkCentricSched",
            flag(self.nvlink_centric_sched)
        );
        put!(
            c,
            "Config::graph_usage_mode",
            graphUsageMode = "graphUsageMode",
            self.graph_usage_mode
        );
        put!(
            c,
            "Config::num_rma_ctx",
            numRmaCtx = "numRmaCtx",
            self.num_rma_ctx
        );
        put!(
            c,
            "Config::max_p2p_peers",
            maxP2pPeers = "maxP2pPeers",
            self.max_p2p_peers
        );
        put!(
            c,
            "Config::graph_stream_ordering",
            graphStreamOrdering = "graphStreamOrdering",
            self.graph_stream_ordering
        );
        put!(
            c,
            "Config::launch_order_implicit",
            launchOrderImplicit = "launchOrderImplicit",
            self.launch_order_implicit
        );
        put!(
            c,
            "Config::num_rma_sig",
            numRmaSig = "numRmaSig",
            self.num_rma_sig
        );
        put!(
            c,
            "Config::rma_eager_init",
            rmaEagerInit = "rmaEagerInit",
            self.rma_eager_init
        );
        put!(
            c,
            "Config::host_cft_mode",
            hostCftMode = "hostCftMode",
            self.host_cft_mode
        );
        put!(
            c,
            "Config::nvls_host_mode",
            nvlsHostMode = "nvlsHostMode",
            self.nvls_host_mode
        );
        Ok(c)
    }
}
