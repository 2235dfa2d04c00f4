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

/// What a device communicator must provide (`ncclDevCommRequirements`): the
/// fields every release from 2.28.3 on shares, and a few later ones. A
/// field the running release lacks, set to anything but its default, makes
/// [`Comm::dev_comm`](crate::Comm::dev_comm) fail with
/// [`Error::Unsupported`] before NCCL is called; [`check`](Self::check)
/// says so beforehand.
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

    /// Barriers over the world (`barrierCount`, 2.28.7+). NCCL 2.28.7 –
    /// 2.29.x make LSA barriers of them (the larger of this and
    /// `lsa_barrier_count`), plus GIN barriers on the rail team where the
    /// network has GIN; 2.30 makes them separate hybrid barriers.
    pub fn barrier_count(mut self, n: u32) -> Self {
        self.barrier_count = n;
        self
    }

    /// GIN barriers over the rail team (`railGinBarrierCount`, 2.28.7+).
    pub fn rail_gin_barrier_count(mut self, n: u32) -> Self {
        self.rail_gin_barrier_count = n;
        self
    }

    /// GIN barriers over the world (`worldGinBarrierCount`, 2.30.3+).
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
    /// set exists in its release, every count fits NCCL's `int`).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a field the release lacks (or a release
    /// without the device API); [`Error::InvalidArgument`] for a count above
    /// `i32::MAX`.
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
        assert!(w.check_for(v(22907)).is_err());
        assert!(w.check_for(v(23003)).is_ok());
        let big = r.lsa_barrier_count(u32::MAX);
        assert!(matches!(
            big.check_for(v(22803)),
            Err(Error::InvalidArgument {
                arg: "lsa_barrier_count",
                ..
            })
        ));
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
