//! Collectives and point-to-point calls, bound to a cudarc stream, with every
//! argument checked before NCCL sees it.
//!
//! Buffers are anything implementing [`DeviceBuffer`] (read) or
//! [`DeviceBufferMut`] (written), the unsafe counterparts of cudarc's safe
//! `DevicePtr`/`DevicePtrMut` (whose implementors could report any address):
//! `CudaSlice`, `CudaView`, `CudaViewMut`, and this crate's
//! [`NcclBuffer`](crate::NcclBuffer), its views and registered buffers.
//! Each call asks for the pointers on the given stream, so cross-stream
//! tracking stays correct: when cudarc manages stream
//! synchronization (its default once a context has one stream of its own,
//! from `new_stream` or `fork`), the stream first waits for pending writes
//! (and, for outputs, reads) of the buffers, and the NCCL call is recorded as
//! their latest use once NCCL has enqueued it: when the call returns, or for a
//! grouped call ([`Group::on`](crate::Group::on)) at the group's end. For a
//! `CudaSlice` that costs, inside cudarc's `device_ptr`, where this crate
//! cannot skip it, one event wait and one record per input and two waits and
//! one record per output (an out-of-place all_reduce: three waits, two
//! records); an `NcclBuffer` used on the stream it was allocated on costs
//! none. A program that orders its streams itself can turn tracking off with
//! cudarc's `CudaContext::disable_event_tracking`.
//!
//! Every collective goes through one funnel, [`Call`]: the communicator's
//! state, the stream's GPU and the group rules are checked in
//! [`Call::begin`], buffers are acquired with [`Call::read`] and
//! [`Call::write`] (which keep cudarc's guards for as long as NCCL may still
//! enqueue), and [`Call::run`] makes the NCCL call and turns its result into a
//! `Result`. Each collective states only its own contract.

use cudarc::driver::{CudaContext, CudaStream, SyncOnDrop, sys as cu};
use std::sync::Arc;

use crate::base::call::check_comm;
use crate::base::contract;
use crate::base::dtype::NcclType;
use crate::base::error::{Error, Result};
use crate::base::runtime::require;
use crate::base::version::Version;
use crate::comm::Comm;
use crate::mem::{DeviceBuffer, DeviceBufferMut};
use crate::ops::ReduceOp;
use crate::ops::{Enqueue, GroupRef, calls_as_one};
use crate::sys;

#[inline(always)]
pub(crate) fn vp(p: cu::CUdeviceptr) -> *mut core::ffi::c_void {
    p as usize as *mut core::ffi::c_void
}

/// The address `elems` elements of `T` past `p`.
#[inline(always)]
pub(crate) fn at<T>(p: cu::CUdeviceptr, elems: usize) -> *mut core::ffi::c_void {
    vp(p + (elems * std::mem::size_of::<T>()) as u64)
}

/// Whether the collectives made of send/recv (all_to_all and gather/scatter
/// before NCCL 2.28, all_to_all_v) copy a rank's own chunk with a
/// device-to-device copy instead of a send/recv to itself: on NCCL before
/// 2.19.4. Its notes say "Fix alltoallv crash on self-sendrecv"; the fix
/// moved, in the p2p scheduler (`scheduleP2pTasksToPlan`), the reset of the
/// flag that lets work be fused from once per peer step (step 0 is a rank's
/// own pair) into the loop over one step's chunks.
pub(crate) fn copies_own_chunk() -> bool {
    crate::base::runtime::runtime_is(|v| v < Version::new(2, 19, 4))
}

/// Whether this build and the runtime library have `api`.
#[cfg(any(
    nccl_fn = "ncclAlltoAll",
    nccl_fn = "ncclGather",
    nccl_fn = "ncclScatter"
))]
pub(crate) fn runtime_has(api: &'static str) -> bool {
    crate::base::runtime::has_api(api)
}

/// One collective call being put together (see the module docs).
pub(crate) struct Call<'a> {
    comm: &'a Comm,
    op: &'static str,
    stream: &'a CudaStream,
    group: Option<GroupRef<'a>>,
    /// Cudarc's guards of the buffers (and a device scalar of a custom op):
    /// dropped after NCCL has enqueued the call, or handed to the group.
    guards: [Option<SyncOnDrop<'a>>; 3],
    /// Extents (address, bytes) of the buffers, for the overlap check.
    spans: [(u64, usize); 2],
    nspans: usize,
    /// A buffer that is not of the call stream's context: refused by
    /// [`Call::ready`].
    foreign: Option<Foreign>,
    /// A buffer whose length in bytes does not fit an `isize` (cudarc's
    /// allocation wraps the byte count in release builds, so such a slice
    /// may own far less memory than it says): refused by [`Call::ready`].
    oversized: Option<usize>,
}

/// Why [`Call::ready`] refuses a buffer of another context.
#[derive(Clone, Copy)]
enum Foreign {
    /// Memory of another GPU: NCCL does not check pointers unless told to;
    /// the kernel would reach that memory over the peer mapping, unordered
    /// with its frees.
    Gpu(usize),
    /// Memory of cudarc's (a `CudaSlice`, a view) from another
    /// `CudaContext` object of the same GPU: cudarc keeps its event
    /// tracking per object (whether to record a use is asked of the
    /// stream's, whether to wait before the free of the buffer's), so the
    /// free could overtake the call.
    Context,
}

impl<'a> Call<'a> {
    /// The checks every call shares: the communicator is usable, the stream
    /// is of its GPU, the element type is in the NCCL in use, and a call with
    /// a bare stream is not made while a group is open on this thread.
    #[inline(always)]
    pub(crate) fn begin<T: NcclType>(
        comm: &'a Comm,
        op: &'static str,
        on: impl Enqueue<'a>,
    ) -> Result<Call<'a>> {
        let target = on.target();
        if target.group.is_none() {
            crate::base::thread::not_in_group(op)?;
        }
        comm.ready(op)?;
        if target.stream.context().ordinal() != comm.device() {
            return Err(wrong_stream(comm, op, target.stream));
        }
        if T::SINCE > Version::new(2, 0, 0) {
            require(T::NAME, T::SINCE)?;
        }
        Ok(Call {
            comm,
            op,
            stream: target.stream,
            group: target.group,
            guards: [None, None, None],
            spans: [(0, 0); 2],
            nspans: 0,
            foreign: None,
            oversized: None,
        })
    }

    #[inline(always)]
    fn keep(&mut self, guard: SyncOnDrop<'a>) {
        if let Some(slot) = self.guards.iter_mut().find(|g| g.is_none()) {
            *slot = Some(guard);
        }
    }

    #[inline(always)]
    fn span<T>(&mut self, p: u64, len: usize) {
        let bytes = match len.checked_mul(std::mem::size_of::<T>()) {
            Some(b) if b <= isize::MAX as usize => b,
            _ => {
                self.oversized.get_or_insert(len);
                return;
            }
        };
        if self.nspans < self.spans.len() {
            self.spans[self.nspans] = (p, bytes);
            self.nspans += 1;
        }
    }

    /// A buffer the call reads: its device address on the call's stream.
    #[inline(always)]
    pub(crate) fn read<T, B: DeviceBuffer<T>>(&mut self, buf: &'a B) -> u64 {
        if !self.usable(buf.stream(), B::ORDERS_OWN_USES) {
            return 0;
        }
        let (p, g) = buf.device_ptr(self.stream);
        self.keep(g);
        self.span::<T>(p, buf.len());
        p
    }

    /// A buffer the call writes: its device address on the call's stream.
    #[inline(always)]
    pub(crate) fn write<T, B: DeviceBufferMut<T>>(&mut self, buf: &'a mut B) -> u64 {
        if !self.usable(buf.stream(), B::ORDERS_OWN_USES) {
            return 0;
        }
        let len = buf.len();
        let (p, g) = buf.device_ptr_mut(self.stream);
        self.keep(g);
        self.span::<T>(p, len);
        p
    }

    /// Whether a buffer whose stream is `s` may be used on the call's
    /// stream: of the same `CudaContext` object, or, for a buffer that
    /// orders its uses itself (`own`), of the same CUDA context; if not,
    /// notes why for [`Call::ready`] (no address is taken).
    #[inline(always)]
    fn usable(&mut self, s: &Arc<CudaStream>, own: bool) -> bool {
        let ctx = s.context();
        if own && ctx.cu_ctx() == self.stream.context().cu_ctx() {
            return true;
        }
        self.of_this_context(ctx)
    }

    #[inline(always)]
    fn of_this_context(&mut self, ctx: &Arc<CudaContext>) -> bool {
        let own = self.stream.context();
        if Arc::ptr_eq(ctx, own) {
            return true;
        }
        let why = if ctx.ordinal() == own.ordinal() {
            Foreign::Context
        } else {
            Foreign::Gpu(ctx.ordinal())
        };
        self.foreign.get_or_insert(why);
        false
    }

    /// The raw reduction for element type `T`, checked; a device scalar of a
    /// custom op is read by the call, so cudarc orders it like a buffer.
    #[inline(always)]
    pub(crate) fn reduction<T: NcclType>(&mut self, op: ReduceOp<'a>) -> Result<sys::ncclRedOp_t> {
        let raw = op.raw_for::<T>(self.op, self.comm)?;
        if let ReduceOp::PreMulSum(p) = op {
            if let Some(ctx) = p.scalar_context() {
                if !self.of_this_context(ctx) {
                    return Ok(raw); // refused by `ready`, unacquired
                }
            }
            if let Some(g) = p.scalar_use(self.stream) {
                self.keep(g);
            }
        }
        Ok(raw)
    }

    /// What every call checks last, before NCCL sees it: out-of-place
    /// buffers must not overlap, and a group must be able to take it
    /// ([`GroupRef::admit`](crate::ops::group::GroupRef::admit)).
    #[inline(always)]
    fn ready(&self) -> Result<()> {
        if let Some(why) = self.foreign {
            return Err(self.foreign_error(why));
        }
        if let Some(len) = self.oversized {
            return Err(Error::invalid(
                self.op,
                "buffer",
                "a length whose bytes fit an isize",
                len,
            ));
        }
        if self.nspans == 2 {
            contract::disjoint(self.op, self.spans[0], self.spans[1])?;
        }
        if let Some(g) = self.group {
            g.admit(self.comm, self.op)?;
        }
        Ok(())
    }

    #[cold]
    fn foreign_error(&self, why: Foreign) -> Error {
        match why {
            Foreign::Gpu(dev) => Error::invalid(
                self.op,
                "buffer",
                format!("memory of this communicator's GPU {}", self.comm.device()),
                format!("memory of GPU {dev}"),
            ),
            Foreign::Context => Error::invalid(
                self.op,
                "buffer",
                "cudarc memory of the stream's CudaContext (the same object: cudarc tracks \
                 uses per context object; an NcclBuffer takes any)",
                "memory of another CudaContext of the same GPU",
            ),
        }
    }

    fn raw_stream(&self) -> sys::cudaStream_t {
        self.stream.cu_stream() as sys::cudaStream_t
    }

    /// Makes the NCCL call `api` (given the raw communicator and stream) and
    /// turns its result into a `Result`. A non-blocking communicator still
    /// enqueuing is waited for (up to its timeout) outside a group, and at the
    /// group's end inside one. Cudarc's guards are released after that, or
    /// handed to the group.
    #[inline(always)]
    pub(crate) fn run(
        self,
        api: &'static str,
        f: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> sys::ncclResult_t,
    ) -> Result<()> {
        self.ready()?;
        let r = f(self.comm.as_raw(), self.raw_stream());
        self.finish(api, r)
    }

    /// Like [`Call::run`] for a collective made of several NCCL calls
    /// (`f` makes them with [`Call::nccl`]): one launch, in a group of their
    /// own or in the caller's.
    pub(crate) fn run_many(
        self,
        api: &'static str,
        f: impl FnOnce(&Call<'a>) -> Result<()>,
    ) -> Result<()> {
        self.ready()?;
        let r = calls_as_one(self.comm, self.group.is_some(), api, || f(&self));
        match r {
            Ok(()) => self.finish(api, sys::ncclResult_t::ncclSuccess),
            Err(e) => Err(e),
        }
    }

    /// A copy of `bytes` from `src` to `dst` on the call's stream, in a
    /// [`Call::run_many`] collective (a rank's own chunk, see
    /// [`copies_own_chunk`]): enqueued now, before the group's kernels. No
    /// other call of the group may touch those bytes meanwhile: the call
    /// holds `&mut` of the destination and `&` of the source until the
    /// group's end.
    pub(crate) fn copy(
        &self,
        dst: *mut core::ffi::c_void,
        src: *mut core::ffi::c_void,
        bytes: usize,
    ) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        // the driver's copy runs in the current context: make it the stream's
        self.stream.context().bind_to_thread()?;
        // SAFETY: both ranges lie in buffers the call has acquired (checked
        // by the collective), on the stream's GPU, whose context was just
        // made current; the stream is borrowed, so alive.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(
                dst as usize as cu::CUdeviceptr,
                src as usize as cu::CUdeviceptr,
                bytes,
                self.stream.cu_stream(),
            )
        }?;
        Ok(())
    }

    /// One NCCL call of a [`Call::run_many`] collective.
    pub(crate) fn nccl(
        &self,
        api: &'static str,
        f: impl FnOnce(sys::ncclComm_t, sys::cudaStream_t) -> sys::ncclResult_t,
    ) -> Result<()> {
        let r = f(self.comm.as_raw(), self.raw_stream());
        match r {
            sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress => Ok(()),
            r => check_comm(api, r, self.comm.as_raw()),
        }
    }

    #[inline(always)]
    fn finish(self, api: &'static str, r: sys::ncclResult_t) -> Result<()> {
        let Call {
            comm,
            group,
            guards,
            ..
        } = self;
        match group {
            Some(g) => {
                // every communicator, whatever mode it was made with: where
                // NCCL answers the group's end in progress, the end waits
                // for each before it lets the buffers go
                g.note(comm);
                for guard in guards.into_iter().flatten() {
                    g.keep(guard);
                }
                match r {
                    // the group's end waits for a non-blocking communicator
                    sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress => Ok(()),
                    r => check_comm(api, r, comm.as_raw()),
                }
            }
            None => {
                let out = if r == sys::ncclResult_t::ncclSuccess {
                    Ok(())
                } else {
                    comm.settle_op(api, r)
                };
                // enqueued (or failed): cudarc may record the uses now
                drop(guards);
                out
            }
        }
    }
}

#[cold]
fn wrong_stream(comm: &Comm, op: &'static str, stream: &CudaStream) -> Error {
    Error::invalid(
        op,
        "stream",
        format!("a stream of this communicator's GPU {}", comm.device()),
        format!("a stream of GPU {}", stream.context().ordinal()),
    )
}

// SAFETY (for every NCCL call below): the funnel has checked that the
// communicator is live and used by this thread only (`Comm` is !Sync), that
// the stream belongs to its GPU, and each collective has checked the lengths
// its NCCL function reads and writes (element counts and `root`/`peer`
// against the world size) before the call. The buffers, the communicator, a
// custom op and the stream are borrowed for 'a: until the call returns, or,
// inside a group, until the group's end has enqueued the kernels (NCCL may
// defer the enqueue to `ncclGroupEnd`). A buffer is freed only after the uses
// its guards record (cudarc: stream-ordered after its events; `NcclBuffer`:
// after its home stream has joined them and gone idle), and those guards are
// dropped only after the enqueue, so memory is never freed before the kernel
// that uses it.
