//! Collectives and point-to-point calls, bound to a cudarc stream, with every
//! argument checked before NCCL sees it.
//!
//! Buffers are anything implementing cudarc's [`DevicePtr`] (read) or
//! [`DevicePtrMut`] (written): `CudaSlice`, `CudaView`, `CudaViewMut`, and
//! this crate's [`NcclBuffer`](crate::NcclBuffer) and registered buffers. Each
//! call asks cudarc for the pointers on the given stream, so cudarc's
//! cross-stream tracking stays correct: when it manages stream
//! synchronization (its default once a context has several streams), the
//! stream first waits for pending writes (and, for outputs, reads) of the
//! buffers, and the NCCL call is recorded as their latest use. That costs one
//! event wait and one event record per buffer; a program that orders its
//! streams itself can turn it off with cudarc's
//! `CudaContext::disable_event_tracking`.

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, sys as cu};

use crate::comm::Comm;
use crate::contract;
use crate::dtype::NcclType;
use crate::error::{Error, Result, check_comm};
use crate::group::GroupGuard;
use crate::op::ReduceOp;
use crate::sys;
use crate::version::{Version, require};

#[inline(always)]
fn vp(p: cu::CUdeviceptr) -> *mut core::ffi::c_void {
    p as usize as *mut core::ffi::c_void
}

#[inline(always)]
fn at<T>(p: cu::CUdeviceptr, elems: usize) -> *mut core::ffi::c_void {
    vp(p + (elems * std::mem::size_of::<T>()) as u64)
}

#[inline(always)]
fn raw_stream(s: &CudaStream) -> sys::cudaStream_t {
    s.cu_stream() as sys::cudaStream_t
}

#[inline(always)]
fn bytes<T>(n: usize) -> usize {
    n * std::mem::size_of::<T>()
}

/// Whether this build and the runtime library have `api`.
#[cfg(nccl_2_28)]
fn runtime_has(api: &'static str) -> bool {
    crate::version::has_api(api)
}

impl Comm {
    #[inline(always)]
    fn stream_ok(&self, op: &'static str, stream: &CudaStream) -> Result<()> {
        self.live(op)?;
        if stream.context().ordinal() == self.device() {
            Ok(())
        } else {
            Err(self.wrong_stream(op, stream))
        }
    }

    #[cold]
    fn wrong_stream(&self, op: &'static str, stream: &CudaStream) -> Error {
        Error::invalid(
            op,
            "stream",
            format!("a stream of this communicator's GPU {}", self.device()),
            format!("a stream of GPU {}", stream.context().ordinal()),
        )
    }

    #[inline(always)]
    fn type_ok<T: NcclType>(&self) -> Result<()> {
        if T::SINCE > Version::new(2, 0, 0) {
            require(T::NAME, T::SINCE)
        } else {
            Ok(())
        }
    }

    /// `ncclSend` of `n` elements at `ptr` to `peer`.
    ///
    /// # Safety
    /// `ptr` must hold `n` elements of `T` on this communicator's GPU until
    /// the send has run on `stream`; `peer < world`.
    #[inline(always)]
    unsafe fn send_raw<T: NcclType>(
        &self,
        ptr: *mut core::ffi::c_void,
        n: usize,
        peer: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        // SAFETY: as the caller promises.
        let r = unsafe {
            sys::ncclSend(
                ptr,
                n,
                T::DATATYPE,
                peer as i32,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclSend", r)
    }

    /// `ncclRecv` of `n` elements into `ptr` from `peer`.
    ///
    /// # Safety
    /// As [`Comm::send_raw`], for writing.
    #[inline(always)]
    unsafe fn recv_raw<T: NcclType>(
        &self,
        ptr: *mut core::ffi::c_void,
        n: usize,
        peer: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        // SAFETY: as the caller promises.
        let r = unsafe {
            sys::ncclRecv(
                ptr,
                n,
                T::DATATYPE,
                peer as i32,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclRecv", r)
    }

    #[inline(always)]
    fn done(&self, api: &'static str, r: sys::ncclResult_t) -> Result<()> {
        if r == sys::ncclResult_t::ncclSuccess {
            return Ok(());
        }
        // a non-blocking communicator still enqueuing: wait (with its timeout)
        if r == sys::ncclResult_t::ncclInProgress {
            // inside a group, the group's end waits for it
            if crate::group::in_group() {
                return Ok(());
            }
            return self.settle(api, r);
        }
        check_comm(api, r, self.as_raw())
    }

    /// All-reduce: every rank's `recv` becomes the reduction over ranks of
    /// their `send` (`ncclAllReduce`).
    ///
    /// # Errors
    /// `InvalidArgument` for different lengths, overlapping buffers, a stream
    /// of another GPU, or a custom op of another communicator or type.
    pub fn all_reduce<T: NcclType>(
        &self,
        send: &impl DevicePtr<T>,
        recv: &mut impl DevicePtrMut<T>,
        op: ReduceOp<'_>,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "all_reduce";
        self.stream_ok(OP, stream)?;
        contract::same_len(OP, send.len(), recv.len())?;
        let rop = op.raw_for::<T>(OP, self)?;
        self.type_ok::<T>()?;
        let n = send.len();
        let (s, _gs) = send.device_ptr(stream);
        let (d, _gd) = recv.device_ptr_mut(stream);
        contract::disjoint(OP, (s, bytes::<T>(n)), (d, bytes::<T>(n)))?;
        // SAFETY: both buffers hold n elements of T on this communicator's GPU
        // (stream checked), stay borrowed until the call has been enqueued, and
        // cudarc orders later uses after it on the stream.
        let r = unsafe {
            sys::ncclAllReduce(
                vp(s),
                vp(d),
                n,
                T::DATATYPE,
                rop,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclAllReduce", r)
    }

    /// In-place all-reduce of `buf`.
    ///
    /// # Errors
    /// As [`Comm::all_reduce`].
    pub fn all_reduce_in_place<T: NcclType>(
        &self,
        buf: &mut impl DevicePtrMut<T>,
        op: ReduceOp<'_>,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "all_reduce_in_place";
        self.stream_ok(OP, stream)?;
        let rop = op.raw_for::<T>(OP, self)?;
        self.type_ok::<T>()?;
        let n = buf.len();
        let (d, _g) = buf.device_ptr_mut(stream);
        // SAFETY: as all_reduce, with sendbuff == recvbuff (NCCL's in-place form).
        let r = unsafe {
            sys::ncclAllReduce(
                vp(d),
                vp(d),
                n,
                T::DATATYPE,
                rop,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclAllReduce", r)
    }

    /// Broadcast: the root's `send` lands in every rank's `recv`
    /// (`ncclBroadcast`). `send` is only read at the root, but every rank
    /// passes one of `recv`'s length.
    ///
    /// # Errors
    /// `InvalidArgument` for `root >= world`, different lengths, overlap, or a
    /// stream of another GPU.
    pub fn broadcast<T: NcclType>(
        &self,
        send: &impl DevicePtr<T>,
        recv: &mut impl DevicePtrMut<T>,
        root: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "broadcast";
        self.stream_ok(OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        contract::same_len(OP, send.len(), recv.len())?;
        self.type_ok::<T>()?;
        let n = recv.len();
        let (s, _gs) = send.device_ptr(stream);
        let (d, _gd) = recv.device_ptr_mut(stream);
        contract::disjoint(OP, (s, bytes::<T>(n)), (d, bytes::<T>(n)))?;
        // SAFETY: as all_reduce; root < world checked.
        let r = unsafe {
            sys::ncclBroadcast(
                vp(s),
                vp(d),
                n,
                T::DATATYPE,
                root as i32,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclBroadcast", r)
    }

    /// In-place broadcast: the root's `buf` is copied into every rank's `buf`.
    ///
    /// # Errors
    /// As [`Comm::broadcast`].
    pub fn broadcast_in_place<T: NcclType>(
        &self,
        buf: &mut impl DevicePtrMut<T>,
        root: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "broadcast_in_place";
        self.stream_ok(OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        self.type_ok::<T>()?;
        let n = buf.len();
        let (d, _g) = buf.device_ptr_mut(stream);
        // SAFETY: as broadcast, in place.
        let r = unsafe {
            sys::ncclBroadcast(
                vp(d),
                vp(d),
                n,
                T::DATATYPE,
                root as i32,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclBroadcast", r)
    }

    /// Reduce: the reduction of every rank's `send` lands in the root's
    /// `recv` (`ncclReduce`). Only the root needs `recv` (`Some`, of `send`'s
    /// length); other ranks may pass `None`.
    ///
    /// # Errors
    /// `InvalidArgument` for `root >= world`, `None` at the root, a wrong
    /// length, overlap, or a stream of another GPU.
    pub fn reduce<T: NcclType, R: DevicePtrMut<T>>(
        &self,
        send: &impl DevicePtr<T>,
        recv: Option<&mut R>,
        op: ReduceOp<'_>,
        root: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "reduce";
        self.stream_ok(OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        if self.rank() == root && recv.is_none() {
            return Err(Error::invalid(
                OP,
                "recv",
                "Some(buffer) at the root",
                "None",
            ));
        }
        let rop = op.raw_for::<T>(OP, self)?;
        self.type_ok::<T>()?;
        let n = send.len();
        let (s, _gs) = send.device_ptr(stream);
        let (d, _gd) = match recv {
            Some(r) => {
                contract::same_len(OP, n, r.len())?;
                let (d, g) = r.device_ptr_mut(stream);
                (d, Some(g))
            }
            None => (0, None),
        };
        if d != 0 {
            contract::disjoint(OP, (s, bytes::<T>(n)), (d, bytes::<T>(n)))?;
        }
        // SAFETY: send holds n elements; recv (read only at the root, where it
        // was checked to exist with n elements) may be null elsewhere.
        let r = unsafe {
            sys::ncclReduce(
                vp(s),
                vp(d),
                n,
                T::DATATYPE,
                rop,
                root as i32,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclReduce", r)
    }

    /// In-place reduce into the root's `buf`.
    ///
    /// # Errors
    /// As [`Comm::reduce`].
    pub fn reduce_in_place<T: NcclType>(
        &self,
        buf: &mut impl DevicePtrMut<T>,
        op: ReduceOp<'_>,
        root: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "reduce_in_place";
        self.stream_ok(OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        let rop = op.raw_for::<T>(OP, self)?;
        self.type_ok::<T>()?;
        let n = buf.len();
        let (d, _g) = buf.device_ptr_mut(stream);
        // SAFETY: as reduce, in place.
        let r = unsafe {
            sys::ncclReduce(
                vp(d),
                vp(d),
                n,
                T::DATATYPE,
                rop,
                root as i32,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclReduce", r)
    }

    /// All-gather: rank `i`'s `send` lands in chunk `i` of every rank's
    /// `recv` (`ncclAllGather`); `recv.len() == send.len() × world`.
    ///
    /// # Errors
    /// `InvalidArgument` for wrong lengths, overlap, or a stream of another GPU.
    pub fn all_gather<T: NcclType>(
        &self,
        send: &impl DevicePtr<T>,
        recv: &mut impl DevicePtrMut<T>,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "all_gather";
        self.stream_ok(OP, stream)?;
        contract::all_gather(send.len(), recv.len(), self.world_size())?;
        self.type_ok::<T>()?;
        let n = send.len();
        let (s, _gs) = send.device_ptr(stream);
        let rn = recv.len();
        let (d, _gd) = recv.device_ptr_mut(stream);
        contract::disjoint(OP, (s, bytes::<T>(n)), (d, bytes::<T>(rn)))?;
        // SAFETY: send holds n and recv n × world elements (checked).
        let r = unsafe {
            sys::ncclAllGather(
                vp(s),
                vp(d),
                n,
                T::DATATYPE,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclAllGather", r)
    }

    /// In-place all-gather: `buf` holds `world` chunks, this rank's chunk
    /// (`rank`) is its input, and every chunk is filled.
    ///
    /// # Errors
    /// `InvalidArgument` when `buf.len()` is not a multiple of `world`.
    pub fn all_gather_in_place<T: NcclType>(
        &self,
        buf: &mut impl DevicePtrMut<T>,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "all_gather_in_place";
        self.stream_ok(OP, stream)?;
        let chunk = contract::chunked(OP, buf.len(), self.world_size())?;
        self.type_ok::<T>()?;
        let (d, _g) = buf.device_ptr_mut(stream);
        // SAFETY: sendbuff = recvbuff + rank × chunk, NCCL's in-place layout.
        let r = unsafe {
            sys::ncclAllGather(
                at::<T>(d, self.rank() * chunk),
                vp(d),
                chunk,
                T::DATATYPE,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclAllGather", r)
    }

    /// Reduce-scatter: chunk `i` of the reduction of every rank's `send`
    /// lands in rank `i`'s `recv` (`ncclReduceScatter`); `send.len() ==
    /// recv.len() × world`.
    ///
    /// # Errors
    /// `InvalidArgument` for wrong lengths, overlap, a stream of another GPU,
    /// or a custom op of another communicator or type.
    pub fn reduce_scatter<T: NcclType>(
        &self,
        send: &impl DevicePtr<T>,
        recv: &mut impl DevicePtrMut<T>,
        op: ReduceOp<'_>,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "reduce_scatter";
        self.stream_ok(OP, stream)?;
        contract::reduce_scatter(send.len(), recv.len(), self.world_size())?;
        let rop = op.raw_for::<T>(OP, self)?;
        self.type_ok::<T>()?;
        let n = recv.len();
        let (s, _gs) = send.device_ptr(stream);
        let (d, _gd) = recv.device_ptr_mut(stream);
        contract::disjoint(OP, (s, bytes::<T>(send.len())), (d, bytes::<T>(n)))?;
        // SAFETY: send holds n × world and recv n elements (checked).
        let r = unsafe {
            sys::ncclReduceScatter(
                vp(s),
                vp(d),
                n,
                T::DATATYPE,
                rop,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclReduceScatter", r)
    }

    /// In-place reduce-scatter: `buf` holds `world` chunks; afterwards chunk
    /// `rank` holds this rank's part of the reduction (other chunks are
    /// unspecified).
    ///
    /// # Errors
    /// `InvalidArgument` when `buf.len()` is not a multiple of `world`.
    pub fn reduce_scatter_in_place<T: NcclType>(
        &self,
        buf: &mut impl DevicePtrMut<T>,
        op: ReduceOp<'_>,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "reduce_scatter_in_place";
        self.stream_ok(OP, stream)?;
        let chunk = contract::chunked(OP, buf.len(), self.world_size())?;
        let rop = op.raw_for::<T>(OP, self)?;
        self.type_ok::<T>()?;
        let (d, _g) = buf.device_ptr_mut(stream);
        // SAFETY: recvbuff = sendbuff + rank × chunk, NCCL's in-place layout.
        let r = unsafe {
            sys::ncclReduceScatter(
                vp(d),
                at::<T>(d, self.rank() * chunk),
                chunk,
                T::DATATYPE,
                rop,
                self.as_raw(),
                raw_stream(stream),
            )
        };
        self.done("ncclReduceScatter", r)
    }

    /// Sends `buf` to rank `peer` (`ncclSend`); the peer posts a matching
    /// [`Comm::recv`]. Pair sends and receives inside a [`group`](crate::group)
    /// when ranks exchange with each other, or they deadlock.
    ///
    /// # Errors
    /// `InvalidArgument` for `peer >= world` or a stream of another GPU.
    pub fn send<T: NcclType>(
        &self,
        buf: &impl DevicePtr<T>,
        peer: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "send";
        self.stream_ok(OP, stream)?;
        contract::rank_arg(OP, "peer", peer, self.world_size())?;
        self.type_ok::<T>()?;
        let (s, _g) = buf.device_ptr(stream);
        // SAFETY: buf holds len() elements of T; peer < world checked.
        unsafe { self.send_raw::<T>(vp(s), buf.len(), peer, stream) }
    }

    /// Receives into `buf` from rank `peer` (`ncclRecv`).
    ///
    /// # Errors
    /// `InvalidArgument` for `peer >= world` or a stream of another GPU.
    pub fn recv<T: NcclType>(
        &self,
        buf: &mut impl DevicePtrMut<T>,
        peer: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "recv";
        self.stream_ok(OP, stream)?;
        contract::rank_arg(OP, "peer", peer, self.world_size())?;
        self.type_ok::<T>()?;
        let n = buf.len();
        let (d, _g) = buf.device_ptr_mut(stream);
        // SAFETY: buf holds n elements of T; peer < world checked.
        unsafe { self.recv_raw::<T>(vp(d), n, peer, stream) }
    }

    /// All-to-all: chunk `j` of rank `i`'s `send` lands in chunk `i` of rank
    /// `j`'s `recv`. Equal lengths, a multiple of `world`. Native
    /// `ncclAlltoAll` from NCCL 2.28, grouped send/recv before.
    ///
    /// # Errors
    /// `InvalidArgument` for wrong lengths, overlap, or a stream of another GPU.
    pub fn all_to_all<T: NcclType>(
        &self,
        send: &impl DevicePtr<T>,
        recv: &mut impl DevicePtrMut<T>,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "all_to_all";
        self.stream_ok(OP, stream)?;
        let chunk = contract::all_to_all(send.len(), recv.len(), self.world_size())?;
        self.type_ok::<T>()?;
        let (s, _gs) = send.device_ptr(stream);
        let (d, _gd) = recv.device_ptr_mut(stream);
        contract::disjoint(OP, (s, bytes::<T>(send.len())), (d, bytes::<T>(send.len())))?;
        #[cfg(nccl_2_28)]
        if runtime_has("ncclAlltoAll") {
            // SAFETY: both buffers hold chunk × world elements (checked).
            let r = unsafe {
                sys::ncclAlltoAll(
                    vp(s),
                    vp(d),
                    chunk,
                    T::DATATYPE,
                    self.as_raw(),
                    raw_stream(stream),
                )
            };
            return self.done("ncclAlltoAll", r);
        }
        let g = GroupGuard::start()?;
        for p in 0..self.world_size() {
            // SAFETY: chunk p of each buffer is in bounds (chunk × world elements).
            unsafe { self.send_raw::<T>(at::<T>(s, p * chunk), chunk, p, stream) }?;
            // SAFETY: as above.
            unsafe { self.recv_raw::<T>(at::<T>(d, p * chunk), chunk, p, stream) }?;
        }
        g.end()
    }

    /// Gather: rank `i`'s `send` lands in chunk `i` of the root's `recv`
    /// (`Some` at the root, `send.len() × world` long; ignored elsewhere).
    /// Native `ncclGather` from NCCL 2.28, grouped send/recv before.
    ///
    /// # Errors
    /// `InvalidArgument` for `root >= world`, `None` or a wrong length at the
    /// root, overlap, or a stream of another GPU.
    pub fn gather<T: NcclType, R: DevicePtrMut<T>>(
        &self,
        send: &impl DevicePtr<T>,
        recv: Option<&mut R>,
        root: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "gather";
        self.stream_ok(OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        let is_root = self.rank() == root;
        contract::rooted(
            OP,
            send.len(),
            recv.as_ref().map(|r| r.len()),
            is_root,
            self.world_size(),
        )?;
        self.type_ok::<T>()?;
        let n = send.len();
        let (s, _gs) = send.device_ptr(stream);
        let (d, _gd) = match recv {
            Some(r) if is_root => {
                let (d, g) = r.device_ptr_mut(stream);
                (d, Some(g))
            }
            _ => (0, None),
        };
        if d != 0 {
            contract::disjoint(
                OP,
                (s, bytes::<T>(n)),
                (d, bytes::<T>(n * self.world_size())),
            )?;
        }
        #[cfg(nccl_2_28)]
        if runtime_has("ncclGather") {
            // SAFETY: send holds n elements; at the root recv holds n × world.
            let r = unsafe {
                sys::ncclGather(
                    vp(s),
                    vp(d),
                    n,
                    T::DATATYPE,
                    root as i32,
                    self.as_raw(),
                    raw_stream(stream),
                )
            };
            return self.done("ncclGather", r);
        }
        let g = GroupGuard::start()?;
        if is_root {
            for p in 0..self.world_size() {
                // SAFETY: chunk p of recv is in bounds at the root.
                unsafe { self.recv_raw::<T>(at::<T>(d, p * n), n, p, stream) }?;
            }
        }
        // SAFETY: send holds n elements.
        unsafe { self.send_raw::<T>(vp(s), n, root, stream) }?;
        g.end()
    }

    /// Scatter: chunk `i` of the root's `send` (`Some` at the root,
    /// `recv.len() × world` long) lands in rank `i`'s `recv`. Native
    /// `ncclScatter` from NCCL 2.28, grouped send/recv before.
    ///
    /// # Errors
    /// `InvalidArgument` for `root >= world`, `None` or a wrong length at the
    /// root, overlap, or a stream of another GPU.
    pub fn scatter<T: NcclType, S: DevicePtr<T>>(
        &self,
        send: Option<&S>,
        recv: &mut impl DevicePtrMut<T>,
        root: usize,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "scatter";
        self.stream_ok(OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        let is_root = self.rank() == root;
        contract::rooted(
            OP,
            recv.len(),
            send.map(|s| s.len()),
            is_root,
            self.world_size(),
        )?;
        self.type_ok::<T>()?;
        let n = recv.len();
        let (s, _gs) = match send {
            Some(sb) if is_root => {
                let (p, g) = sb.device_ptr(stream);
                (p, Some(g))
            }
            _ => (0, None),
        };
        let (d, _gd) = recv.device_ptr_mut(stream);
        if s != 0 {
            contract::disjoint(
                OP,
                (s, bytes::<T>(n * self.world_size())),
                (d, bytes::<T>(n)),
            )?;
        }
        #[cfg(nccl_2_28)]
        if runtime_has("ncclScatter") {
            // SAFETY: recv holds n elements; at the root send holds n × world.
            let r = unsafe {
                sys::ncclScatter(
                    vp(s),
                    vp(d),
                    n,
                    T::DATATYPE,
                    root as i32,
                    self.as_raw(),
                    raw_stream(stream),
                )
            };
            return self.done("ncclScatter", r);
        }
        let g = GroupGuard::start()?;
        if is_root {
            for p in 0..self.world_size() {
                // SAFETY: chunk p of send is in bounds at the root.
                unsafe { self.send_raw::<T>(at::<T>(s, p * n), n, p, stream) }?;
            }
        }
        // SAFETY: recv holds n elements.
        unsafe { self.recv_raw::<T>(vp(d), n, root, stream) }?;
        g.end()
    }

    /// All-gather of uneven shards: rank `i` contributes `counts[i]` elements
    /// (its `send`), and every rank's `recv` (of `sum(counts)` elements) holds
    /// all shards in rank order. Grouped broadcasts.
    ///
    /// # Errors
    /// `InvalidArgument` unless `counts` has one entry per rank, sums to
    /// `recv.len()` and `counts[rank] == send.len()`.
    pub fn all_gather_v<T: NcclType>(
        &self,
        send: &impl DevicePtr<T>,
        recv: &mut impl DevicePtrMut<T>,
        counts: &[usize],
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "all_gather_v";
        self.stream_ok(OP, stream)?;
        let offs = contract::v_counts(OP, "counts", counts, self.world_size(), recv.len())?;
        if counts[self.rank()] != send.len() {
            return Err(Error::invalid(
                OP,
                "send.len()",
                format!("counts[rank] ({})", counts[self.rank()]),
                send.len(),
            ));
        }
        self.type_ok::<T>()?;
        let (s, _gs) = send.device_ptr(stream);
        let rn = recv.len();
        let (d, _gd) = recv.device_ptr_mut(stream);
        contract::disjoint(OP, (s, bytes::<T>(send.len())), (d, bytes::<T>(rn)))?;
        let g = GroupGuard::start()?;
        for (r, (&c, &o)) in counts.iter().zip(&offs).enumerate() {
            if c == 0 {
                continue;
            }
            let src = if r == self.rank() {
                vp(s)
            } else {
                at::<T>(d, o)
            };
            // SAFETY: shard r is in bounds of recv (offsets from checked counts);
            // the root's source is its own send of counts[r] elements.
            self.done("ncclBroadcast", unsafe {
                sys::ncclBroadcast(
                    src,
                    at::<T>(d, o),
                    c,
                    T::DATATYPE,
                    r as i32,
                    self.as_raw(),
                    raw_stream(stream),
                )
            })?;
        }
        g.end()
    }

    /// Reduce-scatter of uneven shards: `send` (of `sum(counts)` elements) is
    /// reduced over ranks, and rank `i` receives shard `i` (`counts[i]`
    /// elements) in `recv`. Grouped reduces.
    ///
    /// # Errors
    /// `InvalidArgument` unless `counts` has one entry per rank, sums to
    /// `send.len()` and `counts[rank] == recv.len()`.
    pub fn reduce_scatter_v<T: NcclType>(
        &self,
        send: &impl DevicePtr<T>,
        recv: &mut impl DevicePtrMut<T>,
        counts: &[usize],
        op: ReduceOp<'_>,
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "reduce_scatter_v";
        self.stream_ok(OP, stream)?;
        let offs = contract::v_counts(OP, "counts", counts, self.world_size(), send.len())?;
        if counts[self.rank()] != recv.len() {
            return Err(Error::invalid(
                OP,
                "recv.len()",
                format!("counts[rank] ({})", counts[self.rank()]),
                recv.len(),
            ));
        }
        let rop = op.raw_for::<T>(OP, self)?;
        self.type_ok::<T>()?;
        let (s, _gs) = send.device_ptr(stream);
        let rn = recv.len();
        let (d, _gd) = recv.device_ptr_mut(stream);
        contract::disjoint(OP, (s, bytes::<T>(send.len())), (d, bytes::<T>(rn)))?;
        let g = GroupGuard::start()?;
        for (r, (&c, &o)) in counts.iter().zip(&offs).enumerate() {
            if c == 0 {
                continue;
            }
            // SAFETY: shard r of send is in bounds; recv (read only at root r,
            // this rank for r == rank) holds counts[rank] elements.
            self.done("ncclReduce", unsafe {
                sys::ncclReduce(
                    at::<T>(s, o),
                    vp(d),
                    c,
                    T::DATATYPE,
                    rop,
                    r as i32,
                    self.as_raw(),
                    raw_stream(stream),
                )
            })?;
        }
        g.end()
    }

    /// All-to-all of uneven shards: this rank sends `send_counts[j]` elements
    /// (consecutive in `send`, in rank order) to rank `j`, and receives
    /// `recv_counts[j]` from rank `j` into `recv` (in rank order). Each rank's
    /// `send_counts[j]` must equal rank `j`'s `recv_counts[i]` (NCCL cannot
    /// check that across ranks). Grouped send/recv.
    ///
    /// # Errors
    /// `InvalidArgument` unless both count lists have one entry per rank and
    /// sum to their buffer's length.
    pub fn all_to_all_v<T: NcclType>(
        &self,
        send: &impl DevicePtr<T>,
        send_counts: &[usize],
        recv: &mut impl DevicePtrMut<T>,
        recv_counts: &[usize],
        stream: &CudaStream,
    ) -> Result<()> {
        const OP: &str = "all_to_all_v";
        self.stream_ok(OP, stream)?;
        let soff = contract::v_counts(
            OP,
            "send_counts",
            send_counts,
            self.world_size(),
            send.len(),
        )?;
        let roff = contract::v_counts(
            OP,
            "recv_counts",
            recv_counts,
            self.world_size(),
            recv.len(),
        )?;
        self.type_ok::<T>()?;
        let (s, _gs) = send.device_ptr(stream);
        let rn = recv.len();
        let (d, _gd) = recv.device_ptr_mut(stream);
        contract::disjoint(OP, (s, bytes::<T>(send.len())), (d, bytes::<T>(rn)))?;
        let g = GroupGuard::start()?;
        for p in 0..self.world_size() {
            if send_counts[p] > 0 {
                // SAFETY: shard p of send is in bounds (checked counts).
                unsafe { self.send_raw::<T>(at::<T>(s, soff[p]), send_counts[p], p, stream) }?;
            }
            if recv_counts[p] > 0 {
                // SAFETY: shard p of recv is in bounds (checked counts).
                unsafe { self.recv_raw::<T>(at::<T>(d, roff[p]), recv_counts[p], p, stream) }?;
            }
        }
        g.end()
    }
}
