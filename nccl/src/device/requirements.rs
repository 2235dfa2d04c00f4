//! [`DevCommRequirements`]: what a device communicator must provide, and
//! the raw struct of the running release made from it.

use crate::base::error::{Error, Result};
use crate::base::version::Version;
use crate::sys::device::{
    DeviceLayout, RequirementsShape, ncclDevCommRequirements_v2, ncclDevCommRequirements_v22803,
    ncclDevCommRequirements_v22807,
};

/// The first release with `barrierCount`, `railGinBarrierCount` and the LSA
/// LL all-to-all fields.
const BARRIERS: Version = Version::new(2, 28, 7);
/// The first release with `worldGinBarrierCount`.
const WORLD_GIN: Version = Version::new(2, 30, 3);
/// The first release that takes `barrierCount`, `railGinBarrierCount` and
/// `worldGinBarrierCount` as GIN resources (`ncclGinResourcesRequested`,
/// `src/dev_runtime.cc`: 2.29.7 `:784-786`, 2.30.7 `:1010-1012`), which
/// `ncclDevrCommCreateInternal` refuses with `ncclInvalidArgument` unless
/// the requirements ask for a GIN connection (`ginConnectionType`, or the
/// deprecated `ginForceEnable`: 2.29.7 `:827-841`, 2.30.7 `:1110-1122`).
/// These requirements never ask for one (NONE, NCCL's initializer), so
/// from that release on such a count fails at the group's end and leaves
/// the communicator failed. 2.29.2 and 2.29.3 have no connection type,
/// enable GIN only for `ginForceEnable` or GIN signals and counters
/// (`:782-795`), and take the counts as LSA and rail barriers (`:831`,
/// `:835`). The releases between (2.29.4 – 2.29.6) have no known device
/// layout and are counted with the later ones; 2.31 and 2.32 are not in
/// the source read (2.30.7 the newest) and are taken to keep the rule.
const GIN_BARRIERS: Version = Version::new(2, 29, 4);

/// What a device communicator must provide (`ncclDevCommRequirements`): the
/// fields every release from 2.28.3 on shares, and a few later ones. A
/// field the running release lacks, set to anything but its default, makes
/// [`Comm::dev_comm`](crate::Comm::dev_comm) fail with
/// [`Error::Unsupported`] before NCCL is called; [`check`](Self::check)
/// says so beforehand. These requirements never ask NCCL for GIN (no
/// `ginConnectionType`), so from NCCL 2.29.7 on, where NCCL takes the
/// world and GIN barrier counts as GIN resources and refuses them without
/// a GIN connection, those counts must stay 0 ([`Error::InvalidArgument`]
/// before NCCL is called, instead of a failed communicator).
///
/// Every rank passes the same requirements (device communicators are
/// created collectively, and the resources they reserve are laid out
/// symmetrically).
///
/// ```
/// let reqs = nccl::DevCommRequirements::new().lsa_barrier_count(32);
/// assert_eq!(reqs.lsa_barriers(), 32);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DevCommRequirements {
    lsa_multimem: bool,
    lsa_barrier_count: u32,
    barrier_count: u32,
    rail_gin_barrier_count: u32,
    world_gin_barrier_count: u32,
    lsa_ll_a2a: (u32, u32),
}

impl DevCommRequirements {
    /// No multimem, no barriers: NCCL's initializer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Multimem (NVLink SHARP) addresses on the LSA team (`lsaMultimem`,
    /// 2.28.3+); creation fails where the system has none.
    pub fn lsa_multimem(mut self, on: bool) -> Self {
        self.lsa_multimem = on;
        self
    }

    /// Barriers over the LSA team (`lsaBarrierCount`, 2.28.3+): a kernel's
    /// `ncclLsaBarrierSession` uses barrier `i` for `i` below this count
    /// (one per CTA, typically).
    pub fn lsa_barrier_count(mut self, n: u32) -> Self {
        self.lsa_barrier_count = n;
        self
    }

    /// Barriers over the world (`barrierCount`): NCCL 2.28.7 – 2.29.3 make
    /// LSA barriers of them (the larger of this and `lsa_barrier_count`),
    /// plus GIN barriers on the rail team where the network has GIN.
    ///
    /// From 2.29.7 NCCL counts them as GIN resources (2.30: hybrid LSA,
    /// rail and world GIN barriers) and refuses them without a GIN
    /// connection, which these requirements do not ask for: any count but
    /// 0 is [`Error::InvalidArgument`] there (before NCCL sees it; so are
    /// 2.29.4 – 2.29.6, whose layouts are unknown). For barriers among the
    /// LSA team use [`lsa_barrier_count`](Self::lsa_barrier_count), which
    /// every release takes. Before 2.28.7: [`Error::Unsupported`].
    pub fn barrier_count(mut self, n: u32) -> Self {
        self.barrier_count = n;
        self
    }

    /// GIN barriers over the rail team (`railGinBarrierCount`): taken by
    /// NCCL 2.28.7 – 2.29.3 (usable where the network has GIN); from
    /// 2.29.7 any count but 0 is [`Error::InvalidArgument`], as for
    /// [`barrier_count`](Self::barrier_count). Before 2.28.7:
    /// [`Error::Unsupported`].
    pub fn rail_gin_barrier_count(mut self, n: u32) -> Self {
        self.rail_gin_barrier_count = n;
        self
    }

    /// GIN barriers over the world (`worldGinBarrierCount`, 2.30.3+). Every
    /// release that has the field refuses it without a GIN connection,
    /// which these requirements do not ask for, so any count but 0 is
    /// [`Error::InvalidArgument`] (before 2.30.3: [`Error::Unsupported`]).
    pub fn world_gin_barrier_count(mut self, n: u32) -> Self {
        self.world_gin_barrier_count = n;
        self
    }

    /// LL all-to-all resources on the LSA team: `blocks` and `slots`
    /// (`lsaLLA2ABlockCount`, `lsaLLA2ASlotCount`, 2.28.7+).
    pub fn lsa_ll_a2a(mut self, blocks: u32, slots: u32) -> Self {
        self.lsa_ll_a2a = (blocks, slots);
        self
    }

    /// The LSA barrier count asked for.
    pub fn lsa_barriers(&self) -> u32 {
        self.lsa_barrier_count
    }

    /// Whether the libnccl in use can take these requirements (every field
    /// set exists in its release, every count fits NCCL's `int`, and no
    /// count asks for GIN where the release needs a GIN connection for it).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a field the release lacks (or a release
    /// without the device API); [`Error::InvalidArgument`] for a count above
    /// `i32::MAX`, or for a world or GIN barrier count from NCCL 2.29.7 on
    /// ([`barrier_count`](Self::barrier_count)).
    pub fn check(&self) -> Result<()> {
        let runtime = crate::base::runtime::checked_runtime()?;
        self.check_for(runtime)
    }

    pub(crate) fn check_for(&self, runtime: Version) -> Result<()> {
        const OP: &str = "DevCommRequirements";
        let unsupported = |api, since| {
            Err(Error::Unsupported {
                api,
                since,
                runtime,
            })
        };
        if runtime < super::DEVICE_API {
            return unsupported("ncclDevCommCreate", super::DEVICE_API);
        }
        if runtime < BARRIERS {
            if self.barrier_count != 0 {
                return unsupported("DevCommRequirements::barrier_count", BARRIERS);
            }
            if self.rail_gin_barrier_count != 0 {
                return unsupported("DevCommRequirements::rail_gin_barrier_count", BARRIERS);
            }
            if self.lsa_ll_a2a != (0, 0) {
                return unsupported("DevCommRequirements::lsa_ll_a2a", BARRIERS);
            }
        }
        if runtime < WORLD_GIN && self.world_gin_barrier_count != 0 {
            return unsupported("DevCommRequirements::world_gin_barrier_count", WORLD_GIN);
        }
        if runtime >= GIN_BARRIERS {
            for (arg, v) in [
                ("barrier_count", self.barrier_count),
                ("rail_gin_barrier_count", self.rail_gin_barrier_count),
                ("world_gin_barrier_count", self.world_gin_barrier_count),
            ] {
                if v != 0 {
                    return Err(Error::invalid(
                        OP,
                        arg,
                        format!(
                            "0 on NCCL {runtime} (from 2.29.7 NCCL takes it as a GIN resource \
                             and refuses it without a GIN connection, which these requirements \
                             do not ask for; lsa_barrier_count gives LSA barriers)"
                        ),
                        v,
                    ));
                }
            }
        }
        for (arg, v) in [
            ("lsa_barrier_count", self.lsa_barrier_count),
            ("barrier_count", self.barrier_count),
            ("rail_gin_barrier_count", self.rail_gin_barrier_count),
            ("world_gin_barrier_count", self.world_gin_barrier_count),
            ("lsa_ll_a2a blocks", self.lsa_ll_a2a.0),
            ("lsa_ll_a2a slots", self.lsa_ll_a2a.1),
        ] {
            if i32::try_from(v).is_err() {
                return Err(Error::invalid(OP, arg, "at most i32::MAX", v));
            }
        }
        Ok(())
    }

    /// The raw struct of release `layout` (after [`check_for`](Self::check_for)).
    pub(crate) fn raw(&self, layout: &DeviceLayout) -> RawRequirements {
        // counts were checked to fit an i32
        let i = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
        match layout.shape {
            RequirementsShape::V22803 => RawRequirements::V22803(ncclDevCommRequirements_v22803 {
                resourceRequirementsList: std::ptr::null_mut(),
                teamRequirementsList: std::ptr::null_mut(),
                lsaMultimem: self.lsa_multimem,
                lsaBarrierCount: i(self.lsa_barrier_count),
            }),
            RequirementsShape::V22807 => RawRequirements::V22807(ncclDevCommRequirements_v22807 {
                resourceRequirementsList: std::ptr::null_mut(),
                teamRequirementsList: std::ptr::null_mut(),
                lsaMultimem: self.lsa_multimem,
                barrierCount: i(self.barrier_count),
                lsaBarrierCount: i(self.lsa_barrier_count),
                railGinBarrierCount: i(self.rail_gin_barrier_count),
                lsaLLA2ABlockCount: i(self.lsa_ll_a2a.0),
                lsaLLA2ASlotCount: i(self.lsa_ll_a2a.1),
                // 2.28 has no initializer: zero, as its own code uses
                ginForceEnable: false,
                ginContextCount: 0,
                ginSignalCount: 0,
                ginCounterCount: 0,
            }),
            RequirementsShape::Versioned => {
                let mut r = ncclDevCommRequirements_v2::initializer(layout);
                r.lsaMultimem = self.lsa_multimem;
                r.barrierCount = i(self.barrier_count);
                r.lsaBarrierCount = i(self.lsa_barrier_count);
                r.railGinBarrierCount = i(self.rail_gin_barrier_count);
                r.worldGinBarrierCount = i(self.world_gin_barrier_count);
                r.lsaLLA2ABlockCount = i(self.lsa_ll_a2a.0);
                r.lsaLLA2ASlotCount = i(self.lsa_ll_a2a.1);
                RawRequirements::Versioned(r)
            }
        }
    }
}

/// The requirements struct in the running release's shape.
#[derive(Debug)]
pub(crate) enum RawRequirements {
    V22803(ncclDevCommRequirements_v22803),
    V22807(ncclDevCommRequirements_v22807),
    Versioned(ncclDevCommRequirements_v2),
}

impl RawRequirements {
    /// The address NCCL reads: at least as many bytes as the release's
    /// `sizeof(ncclDevCommRequirements)` (the versioned struct is the
    /// newest shape, a superset of every earlier one).
    pub(crate) fn as_ptr(&self) -> *const core::ffi::c_void {
        match self {
            RawRequirements::V22803(r) => (r as *const ncclDevCommRequirements_v22803).cast(),
            RawRequirements::V22807(r) => (r as *const ncclDevCommRequirements_v22807).cast(),
            RawRequirements::Versioned(r) => (r as *const ncclDevCommRequirements_v2).cast(),
        }
    }

    /// The size of the struct behind [`as_ptr`](Self::as_ptr).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        match self {
            RawRequirements::V22803(_) => size_of::<ncclDevCommRequirements_v22803>(),
            RawRequirements::V22807(_) => size_of::<ncclDevCommRequirements_v22807>(),
            RawRequirements::Versioned(_) => size_of::<ncclDevCommRequirements_v2>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;

    fn v(code: u32) -> Version {
        Version::from_code(code as i32).unwrap()
    }

    #[test]
    fn gates_by_release() {
        let r = DevCommRequirements::new().lsa_barrier_count(8);
        assert!(r.check_for(v(22803)).is_ok());
        assert!(matches!(
            r.check_for(v(22707)),
            Err(Error::Unsupported {
                api: "ncclDevCommCreate",
                ..
            })
        ));
        let b = r.clone().barrier_count(1);
        assert!(matches!(
            b.check_for(v(22803)),
            Err(Error::Unsupported {
                api: "DevCommRequirements::barrier_count",
                ..
            })
        ));
        assert!(b.check_for(v(22807)).is_ok());
        let w = r.clone().world_gin_barrier_count(1);
        assert!(matches!(
            w.check_for(v(22907)),
            Err(Error::Unsupported {
                api: "DevCommRequirements::world_gin_barrier_count",
                ..
            })
        ));
        assert!(w.check_for(v(23003)).is_err());
        let big = r.lsa_barrier_count(u32::MAX);
        assert!(matches!(
            big.check_for(v(22803)),
            Err(Error::InvalidArgument {
                arg: "lsa_barrier_count",
                ..
            })
        ));
    }

    /// World and GIN barrier counts: taken by 2.28.7 – 2.29.3, refused
    /// (typed, before NCCL) from 2.29.4 on, where NCCL would refuse them
    /// without a GIN connection; LSA barriers, multimem and the LSA LL
    /// all-to-all are taken by every release with the field.
    #[test]
    fn gin_barriers_refused_after_2_29_3() {
        let base = DevCommRequirements::new()
            .lsa_barrier_count(8)
            .lsa_multimem(true);
        let with = |f: fn(DevCommRequirements) -> DevCommRequirements| f(base.clone());
        let counts: [(&str, DevCommRequirements); 3] = [
            ("barrier_count", with(|r| r.barrier_count(2))),
            (
                "rail_gin_barrier_count",
                with(|r| r.rail_gin_barrier_count(2)),
            ),
            (
                "world_gin_barrier_count",
                with(|r| r.world_gin_barrier_count(2)),
            ),
        ];
        for code in [22807, 22809, 22902, 22903] {
            base.check_for(v(code)).unwrap();
            for (arg, r) in &counts[..2] {
                assert!(r.check_for(v(code)).is_ok(), "{arg} on {code}");
            }
        }
        for code in [22904, 22907, 23003, 23004, 23007, 23102, 23206] {
            base.check_for(v(code)).unwrap();
            base.clone().lsa_ll_a2a(2, 16).check_for(v(code)).unwrap();
            // 0 is NCCL's initializer: not a request
            base.clone()
                .barrier_count(0)
                .rail_gin_barrier_count(0)
                .world_gin_barrier_count(0)
                .check_for(v(code))
                .unwrap();
            for (arg, r) in &counts {
                match r.check_for(v(code)) {
                    Err(Error::InvalidArgument {
                        op: "DevCommRequirements",
                        arg: a,
                        expected,
                        actual,
                    }) => {
                        assert_eq!(a, *arg);
                        assert_eq!(actual, "2");
                        assert!(expected.starts_with("0 on NCCL"), "{expected}");
                        assert!(expected.contains("GIN connection"), "{expected}");
                    }
                    // the release lacks the field: that comes first
                    Err(Error::Unsupported { api, since, .. })
                        if *arg == "world_gin_barrier_count" && code < 23003 =>
                    {
                        assert_eq!(api, "DevCommRequirements::world_gin_barrier_count");
                        assert_eq!(since, WORLD_GIN);
                    }
                    other => panic!("{arg} on {code}: {other:?}"),
                }
            }
        }
        // before 2.28.7 the fields do not exist at all
        assert!(matches!(
            counts[0].1.check_for(v(22803)),
            Err(Error::Unsupported { .. })
        ));
        // every known layout is on one side of the line or the other
        for l in sys::device::LAYOUTS {
            let taken = counts[0].1.check_for(v(l.version_code)).is_ok();
            assert_eq!(
                taken,
                (22807..=22903).contains(&l.version_code),
                "{}",
                l.version_code
            );
        }
    }

    #[test]
    fn raw_shapes_follow_the_table() {
        let r = DevCommRequirements::new()
            .lsa_multimem(true)
            .lsa_barrier_count(3);
        for l in sys::device::LAYOUTS {
            let raw = r.raw(l);
            assert!(raw.len() >= l.requirements_size, "{}", l.version_code);
            match raw {
                RawRequirements::V22803(x) => {
                    assert_eq!(l.version_code, 22803);
                    assert_eq!((x.lsaMultimem, x.lsaBarrierCount), (true, 3));
                }
                RawRequirements::V22807(x) => {
                    assert!(matches!(l.version_code, 22807 | 22809));
                    assert_eq!(x.lsaBarrierCount, 3);
                }
                RawRequirements::Versioned(x) => {
                    assert!(l.version_code >= 22902);
                    assert_eq!(x.size, l.requirements_size);
                    assert_eq!(x.version, l.version_code);
                    assert_eq!(x.magic, sys::device::NCCL_API_MAGIC);
                    assert_eq!((x.lsaMultimem, x.lsaBarrierCount), (true, 3));
                    assert_eq!(x.ginContextCount, 4);
                    assert!(x.ginStrongSignalsRequired && x.ginVaSignalsRequired);
                }
            }
        }
    }
}
