//! The host half of NCCL's device API (`nccl_device.h`, NCCL 2.28+):
//! device communicators, teams, communicator properties and the window
//! pointer getters. NVIDIA marks this API experimental: its structures have
//! changed in every minor release so far.
//!
//! These functions are declared in `nccl_device/*.h`, not in `nccl.h`, so
//! they are written here by hand rather than generated. They reach libnccl
//! the way the generated functions newer than 2.18.1 do: looked up by name
//! at their first call (dynamic linking and `runtime-load`), or linked
//! directly (static linking, with a header that declares them). A function
//! the library lacks returns `ncclInvalidUsage` (one returning a team
//! returns a team of 0 ranks, one returning a rank returns -1);
//! [`crate::available`] says so beforehand.
//!
//! # Layouts
//!
//! `ncclDevCommRequirements` has had four shapes: 2.28.3
//! ([`ncclDevCommRequirements_v22803`]), 2.28.7 – 2.28.9
//! ([`ncclDevCommRequirements_v22807`]), and from 2.29.2 a versioned struct
//! that starts with its size, a magic number and the version of the header
//! it was built against, and grows at its end ([`ncclDevCommRequirements_v2`],
//! the newest shape: each release reads its own prefix of it). The device
//! communicator NCCL writes (`ncclDevComm`) has its own size in each release:
//! [`LAYOUTS`] holds, per release, the sizes and offsets read from that
//! release's headers (compiled with g++ against the headers and printed with
//! `sizeof`/`offsetof`; see `docs/device.md`), and the tests of this module
//! check the structs here against the same numbers.

use core::ffi::{CStr, c_int, c_void};
use core::sync::atomic::AtomicPtr;

use crate::{ncclComm_t, ncclResult_t};

/// `ncclWindow_t` (a pointer to NCCL's window; `nccl.h` declares it from
/// 2.27, and these functions exist from 2.28.3 on whatever the header).
pub type Window = *mut c_void;

/// `NCCL_API_MAGIC` (`0xcafebeef`), the magic number of the versioned
/// structs of NCCL 2.29+.
pub const NCCL_API_MAGIC: u32 = 0xcafe_beef;

/// `ncclTeam`: a set of ranks, `nRanks` of them, this rank being `rank`,
/// their world ranks `stride` apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ncclTeam {
    /// Ranks in the team.
    pub nRanks: c_int,
    /// This rank's index in the team.
    pub rank: c_int,
    /// World-rank distance between consecutive members.
    pub stride: c_int,
}

/// `ncclMultimemHandle` (2.28+): the multicast base address of a team.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ncclMultimemHandle {
    /// `mcBasePtr`.
    pub mcBasePtr: *mut c_void,
}

/// `ncclDevCommRequirements` of NCCL 2.28.3.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ncclDevCommRequirements_v22803 {
    /// `ncclDevResourceRequirements_t*`.
    pub resourceRequirementsList: *mut c_void,
    /// `ncclTeamRequirements_t*`.
    pub teamRequirementsList: *mut c_void,
    /// Multimem on the LSA team.
    pub lsaMultimem: bool,
    /// LSA barriers.
    pub lsaBarrierCount: c_int,
}

/// `ncclDevCommRequirements` of NCCL 2.28.7 and 2.28.9 (no header yet).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ncclDevCommRequirements_v22807 {
    /// `ncclDevResourceRequirements_t*`.
    pub resourceRequirementsList: *mut c_void,
    /// `ncclTeamRequirements_t*`.
    pub teamRequirementsList: *mut c_void,
    /// Multimem on the LSA team.
    pub lsaMultimem: bool,
    /// Barriers over the world (LSA and GIN).
    pub barrierCount: c_int,
    /// LSA barriers.
    pub lsaBarrierCount: c_int,
    /// GIN barriers over the rail team.
    pub railGinBarrierCount: c_int,
    /// LL all-to-all blocks on the LSA team.
    pub lsaLLA2ABlockCount: c_int,
    /// LL all-to-all slots on the LSA team.
    pub lsaLLA2ASlotCount: c_int,
    /// Force GIN on.
    pub ginForceEnable: bool,
    /// GIN contexts (a hint).
    pub ginContextCount: c_int,
    /// GIN signals.
    pub ginSignalCount: c_int,
    /// GIN counters.
    pub ginCounterCount: c_int,
}

/// `ncclDevCommRequirements` from NCCL 2.29.2 on, in its newest shape
/// (2.32.6). Each release reads the prefix it knows (its `sizeof`, which
/// [`DeviceLayout::requirements_size`] holds and `size` must say); the
/// fields past it are ignored by older releases. The comments say which
/// release added each group.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ncclDevCommRequirements_v2 {
    /// `sizeof` of the struct as the releases knows it.
    pub size: usize,
    /// [`NCCL_API_MAGIC`].
    pub magic: u32,
    /// The NCCL version code the device code was built against.
    pub version: u32,
    /// `ncclDevResourceRequirements_t*`.
    pub resourceRequirementsList: *mut c_void,
    /// `ncclTeamRequirements_t*`.
    pub teamRequirementsList: *mut c_void,
    /// Multimem on the LSA team.
    pub lsaMultimem: bool,
    /// Barriers over the world (hybrid LSA and GIN).
    pub barrierCount: c_int,
    /// LSA barriers.
    pub lsaBarrierCount: c_int,
    /// GIN barriers over the rail team.
    pub railGinBarrierCount: c_int,
    /// LL all-to-all blocks on the LSA team.
    pub lsaLLA2ABlockCount: c_int,
    /// LL all-to-all slots on the LSA team.
    pub lsaLLA2ASlotCount: c_int,
    /// Force GIN on.
    pub ginForceEnable: bool,
    /// GIN contexts (a hint; the initializer's default is 4).
    pub ginContextCount: c_int,
    /// GIN signals.
    pub ginSignalCount: c_int,
    /// GIN counters.
    pub ginCounterCount: c_int,
    /// 2.29.7: `ncclGinConnectionType_t`.
    pub ginConnectionType: c_int,
    /// 2.29.7.
    pub ginExclusiveContexts: bool,
    /// 2.29.7.
    pub ginQueueDepth: c_int,
    /// 2.30.3 (default `NCCL_CONFIG_UNDEF_INT`).
    pub ginTrafficClass: c_int,
    /// 2.30.3.
    pub worldGinBarrierCount: c_int,
    /// 2.30.7 (default true).
    pub ginStrongSignalsRequired: bool,
    /// 2.30.7 (default true).
    pub ginVaSignalsRequired: bool,
    /// 2.31.2 (default 1).
    pub ginCustomStride: c_int,
    /// 2.31.2: `ncclGinType_t`.
    pub ginType: c_int,
    /// 2.31.2.
    pub useRuntimeVersion: bool,
    /// 2.31.2.
    pub cftCaps: c_int,
    /// 2.31.2.
    pub cftBarrierCount: c_int,
    /// 2.32.6.
    pub ginCustomArray: *mut c_int,
    /// 2.32.6.
    pub ginCustomArrayCount: c_int,
}

impl ncclDevCommRequirements_v2 {
    /// `NCCL_DEV_COMM_REQUIREMENTS_INITIALIZER` of release `layout`: its
    /// size and version, and the initializer's defaults (those of the
    /// newest header for fields the release does not read).
    pub const fn initializer(layout: &DeviceLayout) -> Self {
        ncclDevCommRequirements_v2 {
            size: layout.requirements_size,
            magic: NCCL_API_MAGIC,
            version: layout.version_code,
            resourceRequirementsList: core::ptr::null_mut(),
            teamRequirementsList: core::ptr::null_mut(),
            lsaMultimem: false,
            barrierCount: 0,
            lsaBarrierCount: 0,
            railGinBarrierCount: 0,
            lsaLLA2ABlockCount: 0,
            lsaLLA2ASlotCount: 0,
            ginForceEnable: false,
            ginContextCount: 4,
            ginSignalCount: 0,
            ginCounterCount: 0,
            ginConnectionType: 0,
            ginExclusiveContexts: false,
            ginQueueDepth: 0,
            ginTrafficClass: crate::NCCL_CONFIG_UNDEF_INT,
            worldGinBarrierCount: 0,
            ginStrongSignalsRequired: true,
            ginVaSignalsRequired: true,
            ginCustomStride: 1,
            ginType: 0,
            useRuntimeVersion: false,
            cftCaps: 0,
            cftBarrierCount: 0,
            ginCustomArray: core::ptr::null_mut(),
            ginCustomArrayCount: 0,
        }
    }
}

/// Which `ncclDevCommRequirements` a release reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequirementsShape {
    /// [`ncclDevCommRequirements_v22803`].
    V22803,
    /// [`ncclDevCommRequirements_v22807`].
    V22807,
    /// [`ncclDevCommRequirements_v2`], a prefix of `requirements_size`
    /// bytes.
    Versioned,
}

/// What one NCCL release's device API looks like in memory, read from its
/// headers (`docs/device.md` says how).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceLayout {
    /// The release's `NCCL_VERSION_CODE` (`22803`).
    pub version_code: u32,
    /// Its requirements struct.
    pub shape: RequirementsShape,
    /// `sizeof(ncclDevCommRequirements)`.
    pub requirements_size: usize,
    /// `sizeof(ncclDevComm)`: the bytes NCCL writes (its alignment is 8 in
    /// every release).
    pub dev_comm_size: usize,
    /// Offsets of `rank`, `nRanks`, `lsaRank`, `lsaSize` in `ncclDevComm`.
    pub dev_comm_ranks: [usize; 4],
    /// `sizeof(ncclCommProperties)`, 0 before 2.29.2.
    pub properties_size: usize,
    /// Offset and size in bytes of `ginType` in `ncclCommProperties` (1
    /// byte in 2.29.2/2.29.3, an int from 2.29.7 on); 0, 0 before 2.29.2.
    pub properties_gin_type: (usize, usize),
    /// Offset of `devCommRuntimeVersionSize` in `ncclCommProperties`
    /// (2.31.2+).
    pub properties_dev_comm_size: Option<usize>,
}

const fn layout(
    version_code: u32,
    shape: RequirementsShape,
    requirements_size: usize,
    dev_comm_size: usize,
    properties_size: usize,
) -> DeviceLayout {
    // from 2.30.3 ncclDevComm starts with magic and version (8 bytes)
    let base = if version_code >= 23003 { 8 } else { 0 };
    DeviceLayout {
        version_code,
        shape,
        requirements_size,
        dev_comm_size,
        dev_comm_ranks: [base, base + 4, base + 12, base + 16],
        properties_size,
        properties_gin_type: match version_code {
            0..=22901 => (0, 0),
            22902..=22906 => (34, 1),
            _ => (36, 4),
        },
        properties_dev_comm_size: if version_code >= 23102 {
            Some(136)
        } else {
            None
        },
    }
}

/// Every release whose headers this crate has read, oldest first. A release
/// not listed (a patch release never published as a wheel or a tag, or a
/// newer one) has no known layout: the safe layer refuses it.
pub const LAYOUTS: &[DeviceLayout] = &[
    layout(22803, RequirementsShape::V22803, 24, 88, 0),
    layout(22807, RequirementsShape::V22807, 56, 200, 0),
    layout(22809, RequirementsShape::V22807, 56, 200, 0),
    layout(22902, RequirementsShape::Versioned, 72, 200, 40),
    layout(22903, RequirementsShape::Versioned, 72, 200, 40),
    layout(22907, RequirementsShape::Versioned, 88, 224, 56),
    layout(23003, RequirementsShape::Versioned, 96, 240, 56),
    layout(23004, RequirementsShape::Versioned, 96, 240, 56),
    layout(23007, RequirementsShape::Versioned, 96, 240, 56),
    layout(23102, RequirementsShape::Versioned, 120, 248, 144),
    layout(23206, RequirementsShape::Versioned, 136, 248, 152),
];

/// The layout of release `version_code` (`22803`), if known.
pub fn layout_of(version_code: u32) -> Option<&'static DeviceLayout> {
    LAYOUTS.iter().find(|l| l.version_code == version_code)
}

/// The most bytes any known release writes for an `ncclDevComm` or reads of
/// an `ncclCommProperties`.
pub const MAX_STRUCT_SIZE: usize = 256;

/// The host functions of the device API and the first release with each.
pub const FUNCTIONS: &[(&str, (u32, u32, u32))] = &[
    ("ncclCommQueryProperties", (2, 29, 2)),
    ("ncclDevCommCreate", (2, 28, 3)),
    ("ncclDevCommDestroy", (2, 28, 3)),
    ("ncclGetLsaDevicePointer", (2, 29, 2)),
    ("ncclGetLsaMultimemDevicePointer", (2, 29, 2)),
    ("ncclGetMultimemDevicePointer", (2, 29, 2)),
    ("ncclGetPeerDevicePointer", (2, 29, 2)),
    ("ncclLsaBarrierCreateRequirement", (2, 28, 3)),
    ("ncclTeamLsa", (2, 28, 3)),
    ("ncclTeamRail", (2, 28, 3)),
    ("ncclTeamRankToLsa", (2, 28, 3)),
    ("ncclTeamRankToWorld", (2, 28, 3)),
    ("ncclTeamWorld", (2, 28, 3)),
];

/// The first release with device-API function `name`.
pub fn since(name: &str) -> Option<(u32, u32, u32)> {
    FUNCTIONS.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

const N: usize = FUNCTIONS.len();

static SLOTS: [AtomicPtr<c_void>; N] = [const { AtomicPtr::new(core::ptr::null_mut()) }; N];

/// The address of device-API function `FUNCTIONS[slot]` in the libnccl in
/// use, `None` when it lacks it (or, statically linked, when this build's
/// header is older than the function).
fn symbol(slot: usize, name: &CStr) -> Option<*mut c_void> {
    crate::loader::named_symbol(&SLOTS[slot], name).or_else(|| static_symbol(name))
}

/// Whether device-API function `name` can be called and reach libnccl.
pub(crate) fn available(name: &str) -> Option<bool> {
    let slot = FUNCTIONS.iter().position(|(n, _)| *n == name)?;
    let c = std::ffi::CString::new(name).ok()?;
    Some(symbol(slot, &c).is_some())
}

/// Statically linked: the function itself when the header of this build
/// (which is the library's) has it.
#[cfg(nccl_sys_mode = "static")]
fn static_symbol(name: &CStr) -> Option<*mut c_void> {
    linked::address(name)
}

#[cfg(not(nccl_sys_mode = "static"))]
fn static_symbol(_: &CStr) -> Option<*mut c_void> {
    None
}

#[cfg(nccl_sys_mode = "static")]
mod linked {
    use super::*;

    #[cfg(nccl_2_28)]
    unsafe extern "C" {
        fn ncclDevCommCreate(c: ncclComm_t, r: *const c_void, o: *mut c_void) -> ncclResult_t;
        fn ncclDevCommDestroy(c: ncclComm_t, d: *const c_void) -> ncclResult_t;
        fn ncclTeamWorld(c: ncclComm_t) -> ncclTeam;
        fn ncclTeamLsa(c: ncclComm_t) -> ncclTeam;
        fn ncclTeamRail(c: ncclComm_t) -> ncclTeam;
        fn ncclTeamRankToWorld(c: ncclComm_t, t: ncclTeam, r: c_int) -> c_int;
        fn ncclTeamRankToLsa(c: ncclComm_t, t: ncclTeam, r: c_int) -> c_int;
        fn ncclLsaBarrierCreateRequirement(
            t: ncclTeam,
            n: c_int,
            h: *mut c_void,
            r: *mut c_void,
        ) -> ncclResult_t;
    }
    #[cfg(nccl_2_29)]
    unsafe extern "C" {
        fn ncclCommQueryProperties(c: ncclComm_t, p: *mut c_void) -> ncclResult_t;
        fn ncclGetLsaDevicePointer(
            w: Window,
            o: usize,
            r: c_int,
            p: *mut *mut c_void,
        ) -> ncclResult_t;
        fn ncclGetPeerDevicePointer(
            w: Window,
            o: usize,
            r: c_int,
            p: *mut *mut c_void,
        ) -> ncclResult_t;
        fn ncclGetLsaMultimemDevicePointer(
            w: Window,
            o: usize,
            p: *mut *mut c_void,
        ) -> ncclResult_t;
        fn ncclGetMultimemDevicePointer(
            w: Window,
            o: usize,
            m: ncclMultimemHandle,
            p: *mut *mut c_void,
        ) -> ncclResult_t;
    }

    pub(super) fn address(name: &CStr) -> Option<*mut c_void> {
        match name.to_bytes() {
            #[cfg(nccl_2_28)]
            b"ncclDevCommCreate" => Some(ncclDevCommCreate as *const () as *mut c_void),
            #[cfg(nccl_2_28)]
            b"ncclDevCommDestroy" => Some(ncclDevCommDestroy as *const () as *mut c_void),
            #[cfg(nccl_2_28)]
            b"ncclTeamWorld" => Some(ncclTeamWorld as *const () as *mut c_void),
            #[cfg(nccl_2_28)]
            b"ncclTeamLsa" => Some(ncclTeamLsa as *const () as *mut c_void),
            #[cfg(nccl_2_28)]
            b"ncclTeamRail" => Some(ncclTeamRail as *const () as *mut c_void),
            #[cfg(nccl_2_28)]
            b"ncclTeamRankToWorld" => Some(ncclTeamRankToWorld as *const () as *mut c_void),
            #[cfg(nccl_2_28)]
            b"ncclTeamRankToLsa" => Some(ncclTeamRankToLsa as *const () as *mut c_void),
            #[cfg(nccl_2_28)]
            b"ncclLsaBarrierCreateRequirement" => {
                Some(ncclLsaBarrierCreateRequirement as *const () as *mut c_void)
            }
            #[cfg(nccl_2_29)]
            b"ncclCommQueryProperties" => Some(ncclCommQueryProperties as *const () as *mut c_void),
            #[cfg(nccl_2_29)]
            b"ncclGetLsaDevicePointer" => Some(ncclGetLsaDevicePointer as *const () as *mut c_void),
            #[cfg(nccl_2_29)]
            b"ncclGetPeerDevicePointer" => {
                Some(ncclGetPeerDevicePointer as *const () as *mut c_void)
            }
            #[cfg(nccl_2_29)]
            b"ncclGetLsaMultimemDevicePointer" => {
                Some(ncclGetLsaMultimemDevicePointer as *const () as *mut c_void)
            }
            #[cfg(nccl_2_29)]
            b"ncclGetMultimemDevicePointer" => {
                Some(ncclGetMultimemDevicePointer as *const () as *mut c_void)
            }
            _ => None,
        }
    }
}

/// Declares a device-API function resolved at its first call: the wrapper
/// has the C signature, and returns `$missing` when the library lacks it.
macro_rules! device_fn {
    ($(#[$doc:meta])* $slot:literal $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, missing $missing:expr) => {
        $(#[$doc])*
        ///
        /// Looked up by name at its first call; when the libnccl in use
        /// lacks it, this returns the value for "missing" named above
        /// ([`crate::available`] says so beforehand).
        ///
        /// # Safety
        /// NCCL's contract for the function: live handles, valid pointers.
        #[inline]
        pub unsafe fn $name($($arg: $ty),*) -> $ret {
            match symbol($slot, &cstr(stringify!($name))) {
                Some(f) => {
                    // SAFETY: `f` is libnccl's function of this name, whose C
                    // signature (from nccl_device/core.h, the same in every
                    // release that has it) is this one; the caller upholds
                    // the function's contract.
                    unsafe {
                        core::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) -> $ret>(f)($($arg),*)
                    }
                }
                None => {
                    $(let _ = $arg;)*
                    $missing
                }
            }
        }
    };
}

/// The function name as a C string (names are short ASCII identifiers).
fn cstr(name: &str) -> std::ffi::CString {
    std::ffi::CString::new(name).unwrap_or_default()
}

// The slot numbers below are positions in `FUNCTIONS` (checked by a test).

device_fn!(
    /// `ncclCommQueryProperties` (2.29.2+): fills a versioned
    /// `ncclCommProperties` (size, magic and version set by the caller).
    /// Missing: `ncclInvalidUsage`.
    0 ncclCommQueryProperties(comm: ncclComm_t, props: *mut c_void) -> ncclResult_t,
    missing ncclResult_t::ncclInvalidUsage
);
device_fn!(
    /// `ncclDevCommCreate` (2.28.3+), collective: `reqs` points to the
    /// requirements struct of the running release's shape; `out` to
    /// [`DeviceLayout::dev_comm_size`] bytes (8-aligned), written at the
    /// end of the (implicit) group. Missing: `ncclInvalidUsage`.
    1 ncclDevCommCreate(comm: ncclComm_t, reqs: *const c_void, out: *mut c_void) -> ncclResult_t,
    missing ncclResult_t::ncclInvalidUsage
);
device_fn!(
    /// `ncclDevCommDestroy` (2.28.3+). Missing: `ncclInvalidUsage`.
    2 ncclDevCommDestroy(comm: ncclComm_t, dev_comm: *const c_void) -> ncclResult_t,
    missing ncclResult_t::ncclInvalidUsage
);
device_fn!(
    /// `ncclGetLsaDevicePointer` (2.29.2+). Missing: `ncclInvalidUsage`.
    3 ncclGetLsaDevicePointer(window: Window, offset: usize, lsa_rank: c_int, out: *mut *mut c_void) -> ncclResult_t,
    missing ncclResult_t::ncclInvalidUsage
);
device_fn!(
    /// `ncclGetLsaMultimemDevicePointer` (2.29.2+). Missing:
    /// `ncclInvalidUsage`.
    4 ncclGetLsaMultimemDevicePointer(window: Window, offset: usize, out: *mut *mut c_void) -> ncclResult_t,
    missing ncclResult_t::ncclInvalidUsage
);
device_fn!(
    /// `ncclGetMultimemDevicePointer` (2.29.2+). Missing:
    /// `ncclInvalidUsage`.
    5 ncclGetMultimemDevicePointer(window: Window, offset: usize, multimem: ncclMultimemHandle, out: *mut *mut c_void) -> ncclResult_t,
    missing ncclResult_t::ncclInvalidUsage
);
device_fn!(
    /// `ncclGetPeerDevicePointer` (2.29.2+). Missing: `ncclInvalidUsage`.
    6 ncclGetPeerDevicePointer(window: Window, offset: usize, peer: c_int, out: *mut *mut c_void) -> ncclResult_t,
    missing ncclResult_t::ncclInvalidUsage
);
device_fn!(
    /// `ncclLsaBarrierCreateRequirement` (2.28.3+): `handle` points to an
    /// `ncclLsaBarrierHandle` (8 bytes), `req` to an
    /// `ncclDevResourceRequirements` of the release. Missing:
    /// `ncclInvalidUsage`.
    7 ncclLsaBarrierCreateRequirement(team: ncclTeam, n_barriers: c_int, handle: *mut c_void, req: *mut c_void) -> ncclResult_t,
    missing ncclResult_t::ncclInvalidUsage
);
device_fn!(
    /// `ncclTeamLsa` (2.28.3+). Missing: a team of 0 ranks.
    8 ncclTeamLsa(comm: ncclComm_t) -> ncclTeam,
    missing ncclTeam::default()
);
device_fn!(
    /// `ncclTeamRail` (2.28.3+). Missing: a team of 0 ranks.
    9 ncclTeamRail(comm: ncclComm_t) -> ncclTeam,
    missing ncclTeam::default()
);
device_fn!(
    /// `ncclTeamRankToLsa` (2.28.3+). Missing: -1.
    10 ncclTeamRankToLsa(comm: ncclComm_t, team: ncclTeam, rank: c_int) -> c_int,
    missing -1
);
device_fn!(
    /// `ncclTeamRankToWorld` (2.28.3+). Missing: -1.
    11 ncclTeamRankToWorld(comm: ncclComm_t, team: ncclTeam, rank: c_int) -> c_int,
    missing -1
);
device_fn!(
    /// `ncclTeamWorld` (2.28.3+). Missing: a team of 0 ranks.
    12 ncclTeamWorld(comm: ncclComm_t) -> ncclTeam,
    missing ncclTeam::default()
);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn slots_match_names() {
        let mut sorted = FUNCTIONS.to_vec();
        sorted.sort();
        assert_eq!(sorted, FUNCTIONS, "FUNCTIONS is sorted");
        let src = include_str!("device.rs");
        for (i, (name, _)) in FUNCTIONS.iter().enumerate() {
            let decl = format!("    {i} {name}(");
            assert!(src.contains(&decl), "slot {i} is {name}");
        }
    }

    // The numbers below are g++'s sizeof/offsetof on each release's
    // headers (docs/device.md has the probe).
    #[test]
    fn team_layout() {
        assert_eq!((size_of::<ncclTeam>(), align_of::<ncclTeam>()), (12, 4));
        assert_eq!(offset_of!(ncclTeam, rank), 4);
        assert_eq!(offset_of!(ncclTeam, stride), 8);
        assert_eq!(size_of::<ncclMultimemHandle>(), 8);
    }

    #[test]
    fn requirements_v22803() {
        type R = ncclDevCommRequirements_v22803;
        assert_eq!((size_of::<R>(), align_of::<R>()), (24, 8));
        assert_eq!(offset_of!(R, teamRequirementsList), 8);
        assert_eq!(offset_of!(R, lsaMultimem), 16);
        assert_eq!(offset_of!(R, lsaBarrierCount), 20);
    }

    #[test]
    fn requirements_v22807() {
        type R = ncclDevCommRequirements_v22807;
        assert_eq!((size_of::<R>(), align_of::<R>()), (56, 8));
        assert_eq!(offset_of!(R, lsaMultimem), 16);
        assert_eq!(offset_of!(R, barrierCount), 20);
        assert_eq!(offset_of!(R, lsaBarrierCount), 24);
        assert_eq!(offset_of!(R, railGinBarrierCount), 28);
        assert_eq!(offset_of!(R, lsaLLA2ABlockCount), 32);
        assert_eq!(offset_of!(R, lsaLLA2ASlotCount), 36);
        assert_eq!(offset_of!(R, ginForceEnable), 40);
        assert_eq!(offset_of!(R, ginContextCount), 44);
        assert_eq!(offset_of!(R, ginSignalCount), 48);
        assert_eq!(offset_of!(R, ginCounterCount), 52);
    }

    #[test]
    fn requirements_versioned() {
        type R = ncclDevCommRequirements_v2;
        assert_eq!((size_of::<R>(), align_of::<R>()), (136, 8));
        let expect = [
            (offset_of!(R, size), 0),
            (offset_of!(R, magic), 8),
            (offset_of!(R, version), 12),
            (offset_of!(R, resourceRequirementsList), 16),
            (offset_of!(R, teamRequirementsList), 24),
            (offset_of!(R, lsaMultimem), 32),
            (offset_of!(R, barrierCount), 36),
            (offset_of!(R, lsaBarrierCount), 40),
            (offset_of!(R, railGinBarrierCount), 44),
            (offset_of!(R, lsaLLA2ABlockCount), 48),
            (offset_of!(R, lsaLLA2ASlotCount), 52),
            (offset_of!(R, ginForceEnable), 56),
            (offset_of!(R, ginContextCount), 60),
            (offset_of!(R, ginSignalCount), 64),
            (offset_of!(R, ginCounterCount), 68),
            (offset_of!(R, ginConnectionType), 72),
            (offset_of!(R, ginExclusiveContexts), 76),
            (offset_of!(R, ginQueueDepth), 80),
            (offset_of!(R, ginTrafficClass), 84),
            (offset_of!(R, worldGinBarrierCount), 88),
            (offset_of!(R, ginStrongSignalsRequired), 92),
            (offset_of!(R, ginVaSignalsRequired), 93),
            (offset_of!(R, ginCustomStride), 96),
            (offset_of!(R, ginType), 100),
            (offset_of!(R, useRuntimeVersion), 104),
            (offset_of!(R, cftCaps), 108),
            (offset_of!(R, cftBarrierCount), 112),
            (offset_of!(R, ginCustomArray), 120),
            (offset_of!(R, ginCustomArrayCount), 128),
        ];
        for (i, (got, want)) in expect.iter().enumerate() {
            assert_eq!(got, want, "field {i}");
        }
        // each release's prefix ends at a field boundary of the newest shape
        for l in LAYOUTS
            .iter()
            .filter(|l| l.shape == RequirementsShape::Versioned)
        {
            assert!(l.requirements_size <= size_of::<R>(), "{}", l.version_code);
        }
    }

    #[test]
    fn table_is_sane() {
        let mut last = 0;
        for l in LAYOUTS {
            assert!(l.version_code > last);
            last = l.version_code;
            assert!(l.dev_comm_size <= MAX_STRUCT_SIZE);
            assert!(l.properties_size <= MAX_STRUCT_SIZE);
            assert_eq!(l.dev_comm_size % 8, 0);
        }
        assert_eq!(layout_of(22803).map(|l| l.dev_comm_size), Some(88));
        assert_eq!(
            layout_of(23007).map(|l| l.dev_comm_ranks),
            Some([8, 12, 20, 24])
        );
        assert_eq!(
            layout_of(22907).map(|l| l.dev_comm_ranks),
            Some([0, 4, 12, 16])
        );
        assert!(layout_of(22804).is_none());
    }
}
