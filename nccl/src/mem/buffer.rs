//! Buffers from `ncclMemAlloc` ([`NcclBuffer`]).

use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::{
    CudaEvent, CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop, sys as cu,
};

use crate::base::call::check;
use crate::base::dtype::NcclType;
use crate::base::error::{Error, Result};
use crate::base::runtime::require_api;
use crate::sys;

/// How long dropping an [`NcclBuffer`] waits for its stream before leaking it.
pub const DROP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Device memory from `ncclMemAlloc` (NCCL 2.19+): the allocation NCCL's
/// registration and NVLink optimizations want. Usable in every collective
/// (it implements cudarc's `DevicePtr`/`DevicePtrMut`) and with cudarc's
/// copies; freed with `ncclMemFree` on drop.
///
/// Its uses across streams are ordered as cudarc orders a `CudaSlice`'s: when
/// the context tracks events (cudarc's default once it has several streams),
/// each use waits for the last write (and a write for the last reads) and
/// records itself, and dropping the buffer first makes its stream wait for
/// every recorded use. A context without event tracking (cudarc's unsafe
/// `disable_event_tracking`, or one stream only) carries no events. Dropping
/// then waits for the buffer's stream, up to [`DROP_WAIT`]; if that stream is
/// stuck, the memory is leaked instead of freed under a kernel.
#[derive(Debug)]
pub struct NcclBuffer<T> {
    ptr: cu::CUdeviceptr,
    len: usize,
    stream: Arc<CudaStream>,
    /// Last reads and last write, as cudarc's `CudaSlice` keeps them.
    read: Option<CudaEvent>,
    write: Option<CudaEvent>,
    _t: PhantomData<T>,
}

// SAFETY: the buffer is device memory owned by this value, not tied to a
// thread: `ncclMemFree` may run on any thread (Drop binds the buffer's CUDA
// context first), and the stream it holds is an `Arc<CudaStream>`, which
// cudarc makes `Send + Sync`. The raw pointer is a device address, never
// dereferenced on the host.
unsafe impl<T: Send> Send for NcclBuffer<T> {}
// SAFETY: `&NcclBuffer` only hands out the device address and the stream
// (for cudarc's `DevicePtr`, whose device writes need `&mut` through
// `DevicePtrMut`); it holds no interior mutability.
unsafe impl<T: Sync> Sync for NcclBuffer<T> {}

impl<T: NcclType> NcclBuffer<T> {
    /// `len` zeroed elements on the GPU of `stream` (zeroed on `stream`).
    ///
    /// # Errors
    /// `InvalidArgument` for `len == 0` or a byte size that overflows;
    /// `Unsupported` before NCCL 2.19; NCCL's or CUDA's error.
    pub fn alloc_zeros(stream: &Arc<CudaStream>, len: usize) -> Result<NcclBuffer<T>> {
        const OP: &str = "NcclBuffer::alloc_zeros";
        require_api("ncclMemAlloc")?;
        if len == 0 {
            return Err(Error::invalid(OP, "len", "at least 1", 0));
        }
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::invalid(OP, "len", "a size in bytes that fits usize", len))?;
        stream.context().bind_to_thread()?;
        let mut p: *mut core::ffi::c_void = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the stream's GPU is current.
        check("ncclMemAlloc", unsafe {
            ffi!("ncclMemAlloc", ncclMemAlloc(&mut p, bytes))
        })?;
        let mut buf = NcclBuffer {
            ptr: p as usize as cu::CUdeviceptr,
            len,
            stream: stream.clone(),
            read: None,
            write: None,
            _t: PhantomData,
        };
        let ctx = stream.context();
        if ctx.is_event_tracking() {
            buf.read = Some(ctx.new_event(None)?);
            buf.write = Some(ctx.new_event(None)?);
        }
        // SAFETY: the range is the allocation just made, on the stream's GPU.
        unsafe { cudarc::driver::result::memset_d8_async(buf.ptr, 0, bytes, stream.cu_stream()) }?;
        // the zeroing is the first write
        if let (true, Some(w)) = (ctx.is_managing_stream_synchronization(), &buf.write) {
            w.record(stream)?;
        }
        Ok(buf)
    }
}

impl<T> NcclBuffer<T> {
    /// The raw device address.
    pub fn as_raw(&self) -> cu::CUdeviceptr {
        self.ptr
    }
}

/// Makes `stream` wait for the tracked uses (`read`, `write`) of a buffer,
/// then waits on the host until `stream` is idle, at most [`DROP_WAIT`].
/// `false` when the stream is still busy then (a collective hanging on a
/// dead peer, say): the caller must not free or deregister the memory.
pub(super) fn quiesce(stream: &CudaStream, events: [&Option<CudaEvent>; 2], what: &str) -> bool {
    let ctx = stream.context();
    let _ = ctx.bind_to_thread();
    if ctx.is_managing_stream_synchronization() {
        for e in events.into_iter().flatten() {
            if let Err(e) = stream.wait(e) {
                log::error!("{what}: cannot order the buffer's last uses ({e}); leaking it");
                return false;
            }
        }
    }
    let deadline = std::time::Instant::now() + DROP_WAIT;
    loop {
        // SAFETY: the stream is alive (borrowed).
        let r = unsafe { cu::cuStreamQuery(stream.cu_stream()) };
        if r != cu::CUresult::CUDA_ERROR_NOT_READY {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            log::error!(
                "{what}: the buffer's stream is still busy after {DROP_WAIT:?}; leaking it"
            );
            return false;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

impl<T> Drop for NcclBuffer<T> {
    fn drop(&mut self) {
        // Work queued on any stream may still use the buffer: order its
        // tracked uses before the buffer's stream and wait for that stream,
        // never without bound (a collective may hang on a dead peer); past
        // the limit the memory is leaked rather than freed under a kernel.
        if !quiesce(&self.stream, [&self.read, &self.write], "NcclBuffer::drop") {
            return;
        }
        // ncclMemFree may run on another thread than the allocation did
        let _ = self.stream.context().bind_to_thread();
        // SAFETY: ptr came from ncclMemAlloc and is freed once, after every
        // use queued on its stream has finished (checked above).
        let r = unsafe {
            ffi!(
                "ncclMemFree",
                ncclMemFree(self.ptr as usize as *mut core::ffi::c_void)
            )
        };
        if r != sys::ncclResult_t::ncclSuccess {
            log::error!("nccl: ncclMemFree failed with code {}", r.0);
        }
    }
}

impl<T> DeviceSlice<T> for NcclBuffer<T> {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

impl<T> DevicePtr<T> for NcclBuffer<T> {
    /// As cudarc's `CudaSlice`: `stream` waits for the last write; the guard
    /// records this read.
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        if stream.context().is_managing_stream_synchronization() {
            if let Some(w) = &self.write {
                stream.context().record_err(stream.wait(w));
            }
        }
        (self.ptr, SyncOnDrop::record_event(&self.read, stream))
    }
}

impl<T> DevicePtrMut<T> for NcclBuffer<T> {
    /// As cudarc's `CudaSlice`: `stream` waits for the last reads and write;
    /// the guard records this write.
    fn device_ptr_mut<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        if stream.context().is_managing_stream_synchronization() {
            for e in [&self.read, &self.write].into_iter().flatten() {
                stream.context().record_err(stream.wait(e));
            }
        }
        (self.ptr, SyncOnDrop::record_event(&self.write, stream))
    }
}
