//! [`DevComm`]: a device communicator (`ncclDevCommCreate`), and
//! [`DevCommBytes`], the bytes a kernel takes by value.
//!
//! What NCCL does (`src/dev_runtime.cc`, 2.28.3 to 2.30.7):
//! `ncclDevCommCreate` is collective: it queues a task that runs at the end
//! of the (implicit) group, which allocates the resource window (barriers),
//! registers it symmetrically and ends with a bootstrap barrier of every
//! rank; the `ncclDevComm` is written then, through the pointer given, on
//! NCCL's own thread for a non-blocking communicator. `ncclDevCommDestroy`
//! is local: it deregisters the resource window (on a private stream it
//! synchronizes) and, with GIN, frees the signals and contexts; it does not
//! wait for the user's streams.

use cudarc::driver::DeviceRepr;

use crate::base::error::Result;
use crate::comm::Comm;
use crate::comm::registry::{Parked, Pending};
use crate::sys;
use crate::sys::device::{DeviceLayout, MAX_STRUCT_SIZE};

use super::requirements::DevCommRequirements;
use super::{DEVICE_API, require_device, running_layout};

/// An `ncclDevComm` as bytes: what NCCL wrote, 8-aligned, in the layout of
/// the running release ([`DevComm::size`] of them are meaningful, the rest
/// are zero). A kernel takes it by value where its signature has
/// `ncclDevComm` (cudarc's `launch_builder(..).arg(dev_comm.kernel_arg())`):
/// the driver copies as many bytes as the kernel's parameter has, which is
/// [`DevComm::size`] for a kernel compiled against the running release's
/// `nccl_device.h`.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct DevCommBytes([u8; MAX_STRUCT_SIZE]);

impl std::fmt::Debug for DevCommBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCommBytes(..)")
    }
}

// SAFETY: plain bytes with no pointers into host memory that the device
// would follow (the pointers NCCL wrote are device addresses), Copy, and
// laid out as C would lay out a 16-aligned byte array: valid to copy to
// the device as a kernel parameter.
unsafe impl DeviceRepr for DevCommBytes {}

/// A device communicator of a [`Comm`] (`ncclDevComm`, NCCL 2.28.3+,
/// experimental in NCCL): what a user kernel written against
/// `nccl_device.h` takes by value to reach the peers' windows, barriers and
/// teams. Made by [`Comm::dev_comm`]; it borrows the communicator. Dropped,
/// it is parked with the communicator and destroyed (`ncclDevCommDestroy`,
/// a local call) at its next window registration or device-communicator
/// creation, or when it closes: its resource window has a place in the
/// symmetric space, which every rank frees at the same points.
///
/// Kernels that use it must have completed before it is dropped: its
/// barriers live in memory that dropping it unmaps. Launching a kernel is
/// `unsafe` in cudarc, and that promise is part of it (synchronize the
/// stream, or drop it after the communicator's work is done). So is this
/// one, for a kernel that reaches peers through it (its barriers, multimem):
/// every rank made and dropped its device communicators and windows at the
/// same points of its sequence of those calls, so that each rank's NCCL
/// placed them at the same offsets (see [`Comm::window_register`]).
pub struct DevComm<'c> {
    comm: &'c Comm,
    /// Where NCCL wrote it: a heap slot owned here, parked with the
    /// communicator on drop and freed after its destroy or the
    /// communicator's close (or leaked when NCCL might still write it).
    slot: *mut DevCommBytes,
    layout: &'static DeviceLayout,
}

impl std::fmt::Debug for DevComm<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevComm")
            .field("rank", &self.rank())
            .field("world", &self.world_size())
            .field("lsa_rank", &self.lsa_rank())
            .field("lsa_size", &self.lsa_size())
            .field("size", &self.size())
            .finish()
    }
}

impl Comm {
    /// Creates a device communicator (`ncclDevCommCreate`, NCCL 2.28.3+;
    /// collective: every rank calls it, with the same requirements, in the
    /// same order as its other collective setup calls).
    ///
    /// NCCL needs symmetric memory support for it (CUDA VMM, and ranks that
    /// can map each other's memory: one process per GPU on one node, or
    /// NVLink across nodes); without it NCCL answers `ncclInvalidUsage`.
    /// Where LSA (load/store access) is not available between two ranks,
    /// they are in different LSA teams: a kernel then reaches only its
    /// LSA peers through the device communicator.
    ///
    /// Not inside a [`group`](crate::group()): NCCL writes the device
    /// communicator when the outermost group ends. On a non-blocking
    /// communicator it waits (up to the communicator's timeout) until
    /// NCCL's own thread has written it.
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.28.3 or for a requirement the running
    /// release lacks; `UnknownLayout` for a release whose structures this
    /// build does not know; `InvalidArgument` for a count above `i32::MAX`,
    /// or for a world or GIN barrier count NCCL 2.29.7+ would refuse
    /// without a GIN connection
    /// ([`DevCommRequirements::barrier_count`]);
    /// `InGroup`; `Busy` when a window dropped earlier is still in use
    /// after [`DROP_WAIT`](crate::DROP_WAIT) (released first, as by
    /// [`Comm::window_register`]; nothing was created: the other ranks wait
    /// in this call until this one retries it);
    /// NCCL's error: `ncclInvalidUsage` without symmetric memory
    /// support (the communicator stays usable), or one NCCL reports at the
    /// group's end (the communicator is then
    /// [`Failed`](crate::CommState::Failed)); `Timeout` (the communicator
    /// is then aborted).
    pub fn dev_comm(&self, reqs: &DevCommRequirements) -> Result<DevComm<'_>> {
        const OP: &str = "dev_comm";
        const API: &str = "ncclDevCommCreate";
        let runtime = require_device(API, DEVICE_API)?;
        reqs.check_for(runtime)?;
        let layout = running_layout(API)?;
        crate::base::thread::not_in_group(OP)?;
        self.allow(OP, crate::CommOp::Collective)?;
        // NCCL lays out symmetric memory of its own here: the windows
        // dropped so far go first, on every rank (see `window_register`)
        self.release_windows(OP)?;
        let raw_reqs = reqs.raw(layout);
        // NCCL writes the device communicator at the end of the (implicit)
        // group, on its own thread for a non-blocking communicator: the
        // slot lives on the heap and is freed only once NCCL is done.
        let slot = Box::into_raw(Box::new(DevCommBytes([0; MAX_STRUCT_SIZE])));
        // SAFETY: a live communicator of this thread (Comm is !Sync);
        // `raw_reqs` is the requirements struct of the running release's
        // shape (at least its sizeof, from the table), which NCCL deep-copies
        // before returning (no resource or team lists: null); `slot` is an
        // 8-aligned heap block of MAX_STRUCT_SIZE bytes, at least the
        // release's sizeof(ncclDevComm), valid until NCCL is done with it.
        let r = unsafe {
            sys::device::ncclDevCommCreate(self.as_raw(), raw_reqs.as_ptr(), slot.cast())
        };
        // success is polled too, whatever mode the communicator was made
        // with: for a blocking one that is one call that finds it settled
        let r = if r == sys::ncclResult_t::ncclSuccess {
            sys::ncclResult_t::ncclInProgress
        } else {
            r
        };
        // as after a collective: a refusal at the call keeps the
        // communicator; an error NCCL reports later leaves it Failed; the
        // timeout aborts it (NCCL's thread still holds the call)
        let settled = self.settle_op(API, r);
        if let Err(e) = settled {
            // NCCL may still hold the slot: a task of a failed group stays
            // queued and runs at a later group end. The slot is never freed
            // (256 bytes), so such a write stays harmless. NCCL's refusals
            // at the call (no symmetric memory support) are the same on
            // every rank and leave the communicator usable.
            log::debug!("ncclDevCommCreate failed; its output slot is kept: {e}");
            return Err(e);
        }
        Ok(DevComm {
            comm: self,
            slot,
            layout,
        })
    }
}

impl DevComm<'_> {
    /// The bytes to pass to a kernel by value (see [`DevCommBytes`]).
    pub fn kernel_arg(&self) -> &DevCommBytes {
        // SAFETY: the slot is a live Box owned by self, written by NCCL
        // before `dev_comm` returned (settled) and not written since.
        unsafe { &*self.slot }
    }

    /// The bytes NCCL wrote: `sizeof(ncclDevComm)` of the running release.
    pub fn as_bytes(&self) -> &[u8] {
        &self.kernel_arg().0[..self.layout.dev_comm_size]
    }

    /// `sizeof(ncclDevComm)` of the running release: the size of a
    /// kernel's `ncclDevComm` parameter compiled against its header.
    pub fn size(&self) -> usize {
        self.layout.dev_comm_size
    }

    /// The NCCL version code whose layout this is (`22803`).
    pub fn version_code(&self) -> u32 {
        self.layout.version_code
    }

    fn int_at(&self, i: usize) -> i32 {
        let o = self.layout.dev_comm_ranks[i];
        let b = &self.kernel_arg().0[o..o + 4];
        i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }

    /// This rank in the world, as NCCL wrote it (`rank`).
    pub fn rank(&self) -> i32 {
        self.int_at(0)
    }

    /// The world size, as NCCL wrote it (`nRanks`).
    pub fn world_size(&self) -> i32 {
        self.int_at(1)
    }

    /// This rank in its LSA team (`lsaRank`).
    pub fn lsa_rank(&self) -> i32 {
        self.int_at(2)
    }

    /// The size of this rank's LSA team (`lsaSize`).
    pub fn lsa_size(&self) -> i32 {
        self.int_at(3)
    }

    /// The communicator it belongs to.
    pub fn comm(&self) -> &Comm {
        self.comm
    }
}

impl Drop for DevComm<'_> {
    /// Parks the device communicator with its communicator, which destroys
    /// it (`ncclDevCommDestroy`, which frees its resource window's place in
    /// the symmetric space) at the next point every rank shares: a window
    /// registration, a device-communicator creation, or close (see
    /// [`Comm::window_register`]). Never calls NCCL, never blocks.
    fn drop(&mut self) {
        let parked = Pending {
            api: "ncclDevCommDestroy",
            release: destroy_parked,
            handle: self.slot as usize,
            memory: Box::new(Slot(self.slot)),
            window: true,
        };
        // closed (aborted or destroyed): NCCL freed it with the
        // communicator, and the slot is freed here
        drop(self.comm.registry.park(parked));
    }
}

/// `ncclDevCommDestroy` of a parked device communicator.
///
/// # Safety
/// As [`Pending::release`]: `comm` is the live communicator `slot`'s device
/// communicator was made for, and `slot` (a [`Slot`]'s) is destroyed once.
unsafe fn destroy_parked(comm: sys::ncclComm_t, slot: *mut core::ffi::c_void) -> sys::ncclResult_t {
    // SAFETY: as the caller promises; the slot holds the device
    // communicator NCCL wrote for `comm` (its creation settled), and the
    // kernels that used it have completed (the launch's promise). Local:
    // NCCL deregisters the resource window on a private stream.
    unsafe { sys::device::ncclDevCommDestroy(comm, slot.cast()) }
}

/// The heap slot of a parked device communicator, freed when the parked
/// entry goes (after its destroy, or with the closed communicator).
struct Slot(*mut DevCommBytes);

// SAFETY: the slot is plain bytes owned by this value alone.
unsafe impl Send for Slot {}

impl Parked for Slot {
    fn uses_done(&mut self) -> bool {
        // the kernels that use it have completed: the launch's promise
        true
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // SAFETY: from Box::into_raw, reclaimed once; NCCL is done with it
        // (destroyed, or freed with its communicator).
        drop(unsafe { Box::from_raw(self.0) });
    }
}
