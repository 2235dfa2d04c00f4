//! A window's handle for kernels, and its addresses in the peers' memory
//! (`ncclGetLsaDevicePointer`, `ncclGetPeerDevicePointer`,
//! `ncclGetLsaMultimemDevicePointer`, NCCL 2.29.2+).
//!
//! What NCCL does (`src/dev_runtime.cc`, 2.29.7 and 2.30.7): each getter
//! finds the window's communicator from the handle, checks the rank
//! (`ncclInvalidArgument` outside the LSA team, or the world for a peer)
//! and the offset (`ncclInvalidArgument` at or past the window's size, for
//! the LSA and peer getters), and computes the address; a peer outside
//! this rank's LSA team gives null, and so does the multimem getter where
//! the system has no multimem. Nothing is mapped or unmapped: the address
//! is valid while the window is registered.

use crate::base::call::check;
use crate::base::contract;
use crate::base::error::{Error, Result};
use crate::comm::Comm;
use crate::mem::{DeviceBuffer, DeviceBufferMut, Registration, Win};
use crate::sys;

use super::{DEVICE_QUERIES, require_device};

impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static> Registration<T, B, Win> {
    /// The window's handle (`ncclWindow_t`, a device address) for a kernel
    /// parameter of that type (`launch_builder(..).arg(&handle)`), when this
    /// is a window of `comm` that NCCL made. A kernel reaches it only with a
    /// device communicator of the same communicator ([`Comm::dev_comm`]):
    /// without symmetric memory support NCCL 2.28 hands back a plain
    /// registration handle here (2.29+ none), and refuses the device
    /// communicator.
    ///
    /// # Errors
    /// `InvalidArgument` for a window of another communicator, or one NCCL
    /// made none for ([`Registration::is_mapped`] is `false`: no symmetric
    /// memory support).
    pub fn window_handle(&self, comm: &Comm) -> Result<usize> {
        self.mapped_handle(comm, "window_handle")
    }

    fn mapped_handle(&self, comm: &Comm, op: &'static str) -> Result<usize> {
        match self.handle_of(comm) {
            Some(0) => Err(Error::invalid(
                op,
                "window",
                "a window NCCL made (Registration::is_mapped)",
                "a registration without a window: this communicator has no symmetric memory support",
            )),
            Some(h) => Ok(h),
            None => Err(Error::invalid(
                op,
                "window",
                "a window of this communicator",
                "one of another communicator",
            )),
        }
    }

    /// The byte offset of element `offset`, checked against this rank's
    /// window (the same length on every rank, as windows are registered).
    fn byte_offset(&self, op: &'static str, offset: usize) -> Result<usize> {
        let len = self.get().len();
        if offset >= len {
            return Err(Error::invalid(
                op,
                "offset",
                format!("an element index below the window's length {len}"),
                offset,
            ));
        }
        Ok(offset * std::mem::size_of::<T>())
    }

    /// Checks common to the getters: the release, the communicator, the
    /// window and the offset; the window's handle and byte offset.
    fn getter(
        &self,
        comm: &Comm,
        op: &'static str,
        api: &'static str,
        offset: usize,
    ) -> Result<(sys::device::Window, usize)> {
        require_device(api, DEVICE_QUERIES)?;
        comm.live(op)?;
        let h = self.mapped_handle(comm, op)?;
        let bytes = self.byte_offset(op, offset)?;
        Ok((h as sys::device::Window, bytes))
    }

    /// The device address of element `offset` of member `lsa_rank`'s part
    /// of this window (`ncclGetLsaDevicePointer`, NCCL 2.29.2+), for loads
    /// and stores from this GPU. Valid while the window is registered.
    ///
    /// # Errors
    /// `Unsupported` before NCCL 2.29.2; `InvalidArgument` for an offset at
    /// or past the window's length, `lsa_rank` outside this rank's LSA
    /// team, a window of another communicator or an unmapped one; NCCL's
    /// error.
    pub fn lsa_device_ptr(&self, comm: &Comm, offset: usize, lsa_rank: usize) -> Result<u64> {
        const OP: &str = "lsa_device_ptr";
        const API: &str = "ncclGetLsaDevicePointer";
        let (win, bytes) = self.getter(comm, OP, API, offset)?;
        let lsa = comm.team_lsa()?;
        contract::rank_arg(OP, "lsa_rank", lsa_rank, lsa.n_ranks)?;
        let mut p = std::ptr::null_mut();
        // SAFETY: a window NCCL made for a live communicator of this thread
        // (registered until this Registration ends), an offset and rank
        // checked above, a valid out-pointer.
        let r =
            unsafe { sys::device::ncclGetLsaDevicePointer(win, bytes, lsa_rank as i32, &mut p) };
        check(API, r)?;
        Ok(p as u64)
    }

    /// The device address of element `offset` of world rank `peer`'s part
    /// of this window (`ncclGetPeerDevicePointer`, NCCL 2.29.2+), or `None`
    /// when `peer` is not in this rank's LSA team (its memory cannot be
    /// reached by loads and stores).
    ///
    /// # Errors
    /// As [`Registration::lsa_device_ptr`], with `peer` checked against the
    /// world.
    pub fn peer_device_ptr(&self, comm: &Comm, offset: usize, peer: usize) -> Result<Option<u64>> {
        const OP: &str = "peer_device_ptr";
        const API: &str = "ncclGetPeerDevicePointer";
        let (win, bytes) = self.getter(comm, OP, API, offset)?;
        contract::rank_arg(OP, "peer", peer, comm.world_size())?;
        let mut p = std::ptr::null_mut();
        // SAFETY: as in lsa_device_ptr; `peer` is a world rank.
        let r = unsafe { sys::device::ncclGetPeerDevicePointer(win, bytes, peer as i32, &mut p) };
        check(API, r)?;
        Ok((!p.is_null()).then_some(p as u64))
    }

    /// The multimem (NVLink SHARP) address of element `offset` of this
    /// window on the LSA team (`ncclGetLsaMultimemDevicePointer`, NCCL
    /// 2.29.2+), or `None` where the system has no multimem.
    ///
    /// Collective over the LSA team the first time on a system with
    /// multimem: NCCL then creates the team's multicast object with a
    /// broadcast among its ranks, so every rank of the LSA team calls it.
    ///
    /// # Errors
    /// As [`Registration::lsa_device_ptr`].
    pub fn lsa_multimem_device_ptr(&self, comm: &Comm, offset: usize) -> Result<Option<u64>> {
        const OP: &str = "lsa_multimem_device_ptr";
        const API: &str = "ncclGetLsaMultimemDevicePointer";
        let (win, bytes) = self.getter(comm, OP, API, offset)?;
        let mut p = std::ptr::null_mut();
        // SAFETY: as in lsa_device_ptr.
        let r = unsafe { sys::device::ncclGetLsaMultimemDevicePointer(win, bytes, &mut p) };
        check(API, r)?;
        Ok((!p.is_null()).then_some(p as u64))
    }
}
