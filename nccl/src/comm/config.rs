//! Communicator configuration (`ncclConfig_t`), as a builder.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::base::error::{Error, Result};
use crate::base::runtime::{checked_runtime, require_field};
use crate::sys;

/// Declares every `ncclConfig_t` field that has a setter, once: the field
/// of [`Config`], its setter, and its assignment in [`Config::to_raw`]
/// (checked against the header, `nccl_field`, and the runtime,
/// `require_field`). The string fields (`netName`, `commName`) and the
/// deadline are written by hand below.
macro_rules! config_fields {
    ($( $(#[$doc:meta])* $name:ident: $t:ty => $field:ident = $cname:literal, $conv:path; )*) => {
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
            $( $name: Option<$t>, )*
            net_name: Option<CString>,
            /// Shared with every communicator made with it: NCCL keeps the
            /// pointer (it does not copy the name) for the communicator's life.
            comm_name: Option<std::sync::Arc<CString>>,
            pub(crate) timeout: Option<Duration>,
            bad_string: Option<&'static str>,
        }

        impl Config {
            $(
                $(#[$doc])*
                pub fn $name(mut self, v: $t) -> Self {
                    self.$name = Some(v);
                    self
                }
            )*

            /// Writes every field set here into `c`, each after checking
            /// that both the header and the runtime have it.
            fn put_fields(&self, c: &mut sys::ncclConfig_t) -> Result<()> {
                $(
                    if let Some(v) = self.$name {
                        require_field(concat!("Config::", stringify!($name)), $cname)?;
                        #[cfg(nccl_field = $cname)]
                        {
                            c.$field = $conv(v);
                        }
                        #[cfg(not(nccl_field = $cname))]
                        let _ = (v, &c);
                    }
                )*
                Ok(())
            }
        }
    };
}

config_fields! {
        /// `blocking`: `false` makes NCCL calls return `ncclInProgress` and
        /// finish in the background; this crate then waits for them (up to
        /// [`Config::timeout`]) before returning. `NCCL_COMM_BLOCKING` (0 or
        /// 1) overrides it in NCCL, and this crate follows
        /// ([`Comm::is_blocking`](crate::Comm::is_blocking)).
        blocking: bool => blocking = "blocking", i32::from;
        /// `cgaClusterSize` (0–8).
        cga_cluster_size: i32 => cgaClusterSize = "cgaClusterSize", std::convert::identity;
        /// `minCTAs`.
        min_ctas: i32 => minCTAs = "minCTAs", std::convert::identity;
        /// `maxCTAs`.
        max_ctas: i32 => maxCTAs = "maxCTAs", std::convert::identity;
        /// `splitShare` (NCCL 2.18.1+): children of a split share the parent's
        /// resources. [`Comm::split`](crate::Comm::split) refuses to make such
        /// children (NCCL forbids using a parent and a sharing child at the
        /// same time, which two threads could): creating with it on is
        /// allowed, splitting is `InvalidArgument`.
        split_share: bool => splitShare = "splitShare", i32::from;
        /// `trafficClass` (NCCL 2.26.2+).
        traffic_class: i32 => trafficClass = "trafficClass", std::convert::identity;
        /// `collnetEnable` (NCCL 2.27.3+).
        collnet_enable: bool => collnetEnable = "collnetEnable", i32::from;
        /// `CTAPolicy` (NCCL 2.27.3+): `NCCL_CTA_POLICY_DEFAULT`, `_EFFICIENCY` or `_ZERO`.
        cta_policy: i32 => CTAPolicy = "CTAPolicy", std::convert::identity;
        /// `shrinkShare` (NCCL 2.27.3+): [`Comm::shrink`](crate::Comm::shrink)
        /// with [`ShrinkMode::Default`](crate::ShrinkMode::Default) refuses it,
        /// as `split_share`.
        shrink_share: bool => shrinkShare = "shrinkShare", i32::from;
        /// `nvlsCTAs` (NCCL 2.27.3+).
        nvls_ctas: i32 => nvlsCTAs = "nvlsCTAs", std::convert::identity;
        /// `nChannelsPerNetPeer` (NCCL 2.28.3+).
        n_channels_per_net_peer: i32 => nChannelsPerNetPeer = "nChannelsPerNetPeer", std::convert::identity;
        /// `nvlinkCentricSched` (NCCL 2.28.3+).
        nvlink_centric_sched: bool => nvlinkCentricSched = "nvlinkCentricSched", i32::from;
        /// `graphUsageMode` (NCCL 2.29.2+), NCCL's value as is.
        graph_usage_mode: i32 => graphUsageMode = "graphUsageMode", std::convert::identity;
        /// `numRmaCtx` (NCCL 2.29.2+).
        num_rma_ctx: i32 => numRmaCtx = "numRmaCtx", std::convert::identity;
        /// `maxP2pPeers` (NCCL 2.30.3+).
        max_p2p_peers: i32 => maxP2pPeers = "maxP2pPeers", std::convert::identity;
        /// `graphStreamOrdering` (NCCL 2.30.7+), NCCL's value as is.
        graph_stream_ordering: i32 => graphStreamOrdering = "graphStreamOrdering", std::convert::identity;
        /// `launchOrderImplicit` (NCCL 2.31.2+), NCCL's value as is.
        launch_order_implicit: i32 => launchOrderImplicit = "launchOrderImplicit", std::convert::identity;
        /// `numRmaSig` (NCCL 2.31.2+).
        num_rma_sig: i32 => numRmaSig = "numRmaSig", std::convert::identity;
        /// `rmaEagerInit` (NCCL 2.31.2+), NCCL's value as is.
        rma_eager_init: i32 => rmaEagerInit = "rmaEagerInit", std::convert::identity;
        /// `hostCftMode` (NCCL 2.31.2+): an `ncclHostCftMode_t` value.
        host_cft_mode: i32 => hostCftMode = "hostCftMode", std::convert::identity;
        /// `nvlsHostMode` (NCCL 2.32.3+): `ncclNvlsHostMode_t` flags.
        nvls_host_mode: i32 => nvlsHostMode = "nvlsHostMode", std::convert::identity;
}

impl Config {
    /// All fields at NCCL's defaults.
    pub fn new() -> Config {
        Config::default()
    }

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

    /// A deadline for creating the communicator (both modes), for closing it
    /// with [`Comm::finalize`](crate::Comm::finalize) (both modes: a blocking
    /// finalize and destroy run on a thread of their own and are left there
    /// past it) and, for a non-blocking one, also for splitting and each call
    /// that returns `ncclInProgress`; past it the call fails with
    /// [`Error::Timeout`] and the communicator is aborted (or, closing, left
    /// to NCCL). Default: no limit.
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

    /// Whether children of a communicator made with this config share its
    /// resources (split, shrink), as NCCL decides at its creation: the
    /// environment variables override the config.
    pub(crate) fn sharing(&self) -> (bool, bool) {
        (
            env_flag(SPLIT_SHARE_VAR).unwrap_or(self.split_share == Some(true)),
            env_flag(SHRINK_SHARE_VAR).unwrap_or(self.shrink_share == Some(true)),
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

    /// The mode NCCL gives a communicator made with this config:
    /// `NCCL_COMM_BLOCKING` set to 0 or 1 overrides every config's
    /// `blocking` at creation (`envConfigOverride`, init.cc, 2.18 – 2.30),
    /// else `blocking` (default: blocking).
    pub(crate) fn is_blocking(&self) -> bool {
        env_comm_blocking().unwrap_or(self.blocking.unwrap_or(true))
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
        self.put_fields(&mut c)?;
        // the strings: pointers into this config (NCCL copies `netName`, and
        // keeps `commName`, which the communicator then owns: `name_handle`)
        if let Some(s) = &self.net_name {
            require_field("Config::net_name", "netName")?;
            #[cfg(nccl_field = "netName")]
            {
                c.netName = s.as_ptr();
            }
            #[cfg(not(nccl_field = "netName"))]
            let _ = s;
        }
        if let Some(s) = &self.comm_name {
            require_field("Config::comm_name", "commName")?;
            #[cfg(nccl_field = "commName")]
            {
                c.commName = s.as_ptr();
            }
            #[cfg(not(nccl_field = "commName"))]
            let _ = s;
        }
        Ok(c)
    }
}

/// `NCCL_COMM_BLOCKING` as NCCL reads it (`ncclLoadParam`: `strtoll(s,
/// NULL, 0)`, whatever follows the number, 0 for text without one; out of
/// range: unset): `Some` when it makes communicators blocking (1) or
/// non-blocking (0).
pub(crate) fn env_comm_blocking() -> Option<bool> {
    match env_int("NCCL_COMM_BLOCKING")? {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// The variable that makes children of a split share their parent's
/// resources (NCCL 2.18+).
pub(crate) const SPLIT_SHARE_VAR: &str = "NCCL_COMM_SPLIT_SHARE_RESOURCES";
/// The same for shrink (NCCL 2.27+).
pub(crate) const SHRINK_SHARE_VAR: &str = "NCCL_COMM_SHRINK_SHARE_RESOURCES";

/// A share variable as NCCL applies it at a communicator's creation
/// (`envConfigOverride`): set, it replaces the config's value. NCCL turns a
/// `splitShare` other than 0 or 1 into 0, but tests `shrinkShare` for
/// truth, so for shrink any value but 0 shares. A variable seen sharing
/// once is remembered for the process ([`sharing_seen`]): NCCL reads each
/// once and keeps it.
pub(crate) fn env_flag(var: &str) -> Option<bool> {
    let v = env_int(var)?;
    let on = if var == SPLIT_SHARE_VAR {
        v == 1
    } else {
        v != 0
    };
    if on {
        seen_flag(var).store(true, Ordering::Relaxed);
    }
    Some(on)
}

/// Whether `var` has been seen asking for sharing in this process, at any
/// creation or check ([`env_flag`]).
pub(crate) fn sharing_seen(var: &str) -> bool {
    seen_flag(var).load(Ordering::Relaxed)
}

/// The flag of [`sharing_seen`] for `var`: one for split, one for shrink.
fn seen_flag(var: &str) -> &'static AtomicBool {
    static SPLIT: AtomicBool = AtomicBool::new(false);
    static SHRINK: AtomicBool = AtomicBool::new(false);
    if var == SPLIT_SHARE_VAR {
        &SPLIT
    } else {
        &SHRINK
    }
}

/// An integer variable of NCCL as its `int` parameters read it: C's
/// `strtoll` ([`strtoll_base0`]) narrowed to `int`; `None` when unset,
/// empty, out of range, or `INT_MIN` (NCCL's "unset").
fn env_int(var: &str) -> Option<i32> {
    let v = std::env::var_os(var)?;
    // as C converts: the low 32 bits
    let n = strtoll_base0(v.as_encoded_bytes())? as i32;
    (n != i32::MIN).then_some(n)
}

/// C's `strtoll(s, NULL, 0)` of a non-empty `s`: leading white space, a
/// sign, a `0x` (hex) or `0` (octal) prefix, the longest run of digits (none:
/// 0); `None` for an empty `s` or a value out of range (`ERANGE`).
fn strtoll_base0(s: &[u8]) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let mut i = 0;
    while s
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'))
    {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let hex_digit = |c: Option<&u8>| c.is_some_and(u8::is_ascii_hexdigit);
    let base: u32 = if s.get(i) == Some(&b'0')
        && matches!(s.get(i + 1), Some(b'x' | b'X'))
        && hex_digit(s.get(i + 2))
    {
        i += 2;
        16
    } else if s.get(i) == Some(&b'0') {
        8
    } else {
        10
    };
    let mut v: i128 = 0;
    while let Some(d) = s.get(i).and_then(|&c| (c as char).to_digit(base)) {
        v = v * i128::from(base) + i128::from(d);
        if v > i128::from(i64::MAX) + 1 {
            return None;
        }
        i += 1;
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

#[cfg(test)]
mod env_tests {
    use super::strtoll_base0;

    /// What glibc's strtoll(s, NULL, 0) gives for the values a user may set.
    #[test]
    fn numbers_as_nccl_reads_them() {
        for (s, want) in [
            ("0", Some(0)),
            ("1", Some(1)),
            (" 1", Some(1)),
            ("1abc", Some(1)),
            ("abc", Some(0)),
            ("0x1", Some(1)),
            ("0x", Some(0)),
            ("01", Some(1)),
            ("08", Some(0)),
            ("-0", Some(0)),
            ("+1", Some(1)),
            ("true", Some(0)),
            ("", None),
            ("99999999999999999999", None),
            ("-9223372036854775808", Some(i64::MIN)),
        ] {
            assert_eq!(strtoll_base0(s.as_bytes()), want, "{s:?}");
        }
    }
}
