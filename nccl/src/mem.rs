//! Memory NCCL knows about: buffers from `ncclMemAlloc`, user buffer
//! registration (`ncclCommRegister`) and symmetric windows
//! (`ncclCommWindowRegister`, NCCL 2.27+).

use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::{
    CudaEvent, CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop, sys as cu,
};

use crate::comm::Comm;
use crate::dtype::NcclType;
use crate::error::{Error, Result, check, check_comm};
use crate::sys;
use crate::version::{ffi, require_api};

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
fn quiesce(stream: &CudaStream, events: [&Option<CudaEvent>; 2], what: &str) -> bool {
    let ctx = stream.context();
    let _ = ctx.bind_to_thread();
    if ctx.is_managing_stream_synchronization() {
        for e in events.into_iter().flatten() {
            if let Err(e) = stream.wait(e) {
                eprintln!("nccl: {what}: cannot order the buffer's last uses ({e}); leaking it");
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
            eprintln!(
                "nccl: {what}: the buffer's stream is still busy after {DROP_WAIT:?}; leaking it"
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
            eprintln!("nccl: ncclMemFree failed with code {}", r.0);
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

mod kind {
    pub trait Sealed {}
}

/// What a [`Registration`] holds: a buffer registration ([`Local`]) or a
/// window ([`Win`]). Sealed.
pub trait RegistrationKind: kind::Sealed {
    /// The NCCL function that ends it.
    #[doc(hidden)]
    const RELEASE: &'static str;
    /// Ends it.
    ///
    /// # Safety
    /// `handle` came from this kind's registration on `comm`, which is live,
    /// and is released once.
    #[doc(hidden)]
    unsafe fn release(comm: sys::ncclComm_t, handle: *mut core::ffi::c_void) -> sys::ncclResult_t;
}

/// A buffer registration (`ncclCommRegister`): [`Registered`].
#[derive(Debug)]
pub enum Local {}
impl kind::Sealed for Local {}
impl RegistrationKind for Local {
    const RELEASE: &'static str = "ncclCommDeregister";
    unsafe fn release(comm: sys::ncclComm_t, handle: *mut core::ffi::c_void) -> sys::ncclResult_t {
        // SAFETY: as the caller promises.
        unsafe { ffi!("ncclCommDeregister", ncclCommDeregister(comm, handle)) }
    }
}

/// A window (`ncclCommWindowRegister`, NCCL 2.27+): [`Window`].
#[cfg(nccl_2_27)]
#[derive(Debug)]
pub enum Win {}
#[cfg(nccl_2_27)]
impl kind::Sealed for Win {}
#[cfg(nccl_2_27)]
impl RegistrationKind for Win {
    const RELEASE: &'static str = "ncclCommWindowDeregister";
    unsafe fn release(comm: sys::ncclComm_t, handle: *mut core::ffi::c_void) -> sys::ncclResult_t {
        // SAFETY: as the caller promises; the handle is the window.
        unsafe { sys::ncclCommWindowDeregister(comm, handle as sys::ncclWindow_t) }
    }
}

/// A buffer NCCL knows about, registered with a communicator: it owns the
/// buffer while registered (so the memory cannot be freed first) and borrows
/// the communicator (so it cannot outlive it); use it in collectives like the
/// buffer itself. Dropping it, or [`Registration::into_inner`], ends the
/// registration, after waiting (bounded, [`DROP_WAIT`]) for the buffer's
/// tracked uses; while they still run the registration is kept (NCCL frees it
/// with the communicator).
#[derive(Debug)]
pub struct Registration<'c, T, B: DevicePtr<T> + DevicePtrMut<T>, K: RegistrationKind> {
    buf: B,
    handle: *mut core::ffi::c_void,
    comm: &'c Comm,
    _t: PhantomData<(T, K)>,
}

/// A buffer registered with a communicator (`ncclCommRegister`), which lets
/// NCCL skip copies through its own buffers ([`Comm::register`]).
pub type Registered<'c, T, B> = Registration<'c, T, B, Local>;

impl Comm {
    /// A buffer to register must be on this communicator's GPU and not empty.
    fn check_buffer<T, B: DeviceSlice<T>>(&self, op: &'static str, buf: &B) -> Result<()> {
        let gpu = buf.stream().context().ordinal();
        if gpu != self.device() {
            return Err(Error::invalid(
                op,
                "buf",
                format!("memory of GPU {}", self.device()),
                format!("memory of GPU {gpu}"),
            ));
        }
        if buf.is_empty() {
            return Err(Error::invalid(op, "buf.len()", "at least 1", 0));
        }
        Ok(())
    }
}

impl Comm {
    /// Registers `buf` with this communicator (NCCL 2.19+).
    ///
    /// # Errors
    /// `InvalidArgument` for a buffer on another GPU or an empty one;
    /// `Unsupported` before 2.19; NCCL's error.
    pub fn register<T: NcclType, B: DevicePtr<T> + DevicePtrMut<T>>(
        &self,
        buf: B,
    ) -> Result<Registered<'_, T, B>> {
        const OP: &str = "register";
        require_api("ncclCommRegister")?;
        self.check_buffer(OP, &buf)?;
        let bytes = buf.num_bytes();
        let (ptr, _g) = buf.device_ptr(buf.stream());
        let mut handle = std::ptr::null_mut();
        // SAFETY: ptr..ptr+bytes is device memory owned by buf, which the
        // returned value keeps until it deregisters.
        let r = unsafe {
            ffi!(
                "ncclCommRegister",
                ncclCommRegister(
                    self.as_raw(),
                    ptr as usize as *mut core::ffi::c_void,
                    bytes,
                    &mut handle
                )
            )
        };
        drop(_g);
        check_comm("ncclCommRegister", r, self.as_raw())?;
        Ok(Registration {
            buf,
            handle,
            comm: self,
            _t: PhantomData,
        })
    }
}

impl<T, B: DevicePtr<T> + DevicePtrMut<T>, K: RegistrationKind> Registration<'_, T, B, K> {
    /// The buffer.
    pub fn get(&self) -> &B {
        &self.buf
    }
    /// The buffer, mutably.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.buf
    }
    /// Ends the registration (for a window: collectively, every rank in the
    /// same order) and gives the buffer back.
    ///
    /// # Errors
    /// NCCL's error from ending it (the buffer is lost then).
    pub fn into_inner(self) -> Result<B> {
        let mut this = std::mem::ManuallyDrop::new(self);
        let live = !this.comm.is_aborted() && uses_done(&mut this.buf, K::RELEASE);
        let r = if live {
            // SAFETY: the handle came from K's registration on this live
            // communicator and is released once (Drop will not run).
            unsafe { K::release(this.comm.as_raw(), this.handle) }
        } else {
            // aborted: NCCL dropped it with the communicator; still in use:
            // kept, NCCL frees it with the communicator
            sys::ncclResult_t::ncclSuccess
        };
        // SAFETY: `this` is never used or dropped again; buf is moved out once.
        let buf = unsafe { std::ptr::read(&this.buf) };
        check_comm(K::RELEASE, r, this.comm.as_raw())?;
        Ok(buf)
    }
}

/// Before a registration ends: the buffer's tracked uses (on any stream)
/// are ordered before its own stream, which is then waited for (bounded).
/// `false` when uses may still run.
fn uses_done<T, B: DevicePtrMut<T>>(buf: &mut B, what: &str) -> bool {
    let stream = buf.stream().clone();
    // acquiring it for writing makes `stream` wait for every tracked use
    let (_, g) = buf.device_ptr_mut(&stream);
    drop(g);
    quiesce(&stream, [&None, &None], what)
}

impl<T, B: DevicePtr<T> + DevicePtrMut<T>, K: RegistrationKind> Drop for Registration<'_, T, B, K> {
    /// Ends the registration (a window collectively: the other ranks must do
    /// the same). Never panics; a failure is written to stderr.
    fn drop(&mut self) {
        if self.comm.is_aborted() {
            return; // NCCL dropped the registration with the communicator
        }
        if !uses_done(&mut self.buf, K::RELEASE) {
            // still in use: keep the registration (NCCL frees it with the
            // communicator) rather than end it under a running collective
            return;
        }
        // SAFETY: the handle came from K's registration on this communicator,
        // which the borrow keeps alive; released once, here.
        let r = unsafe { K::release(self.comm.as_raw(), self.handle) };
        if r != sys::ncclResult_t::ncclSuccess {
            eprintln!("nccl: {} failed with code {}", K::RELEASE, r.0);
        }
    }
}

impl<T, B: DevicePtr<T> + DevicePtrMut<T>, K: RegistrationKind> DeviceSlice<T>
    for Registration<'_, T, B, K>
{
    fn len(&self) -> usize {
        self.buf.len()
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.buf.stream()
    }
}

impl<T, B: DevicePtr<T> + DevicePtrMut<T>, K: RegistrationKind> DevicePtr<T>
    for Registration<'_, T, B, K>
{
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        self.buf.device_ptr(stream)
    }
}

impl<T, B: DevicePtr<T> + DevicePtrMut<T>, K: RegistrationKind> DevicePtrMut<T>
    for Registration<'_, T, B, K>
{
    fn device_ptr_mut<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        self.buf.device_ptr_mut(stream)
    }
}

/// A buffer registered as a window (`ncclCommWindowRegister`, NCCL 2.27+),
/// which enables NCCL's symmetric-memory kernels. Registration and
/// deregistration are collective: every rank registers (and later drops or
/// [`Window::deregister`]s) its window together, in the same order. The
/// buffer should come from [`NcclBuffer`]; its address must be aligned to
/// `NCCL_WIN_REQUIRED_ALIGNMENT` (4096) bytes.
#[cfg(nccl_2_27)]
pub type Window<'c, T, B> = Registration<'c, T, B, Win>;

#[cfg(nccl_2_27)]
impl Comm {
    /// Registers `buf` as a window (collective). `symmetric` asks for
    /// `NCCL_WIN_COLL_SYMMETRIC` (every rank's buffer the same size).
    ///
    /// # Errors
    /// `InvalidArgument` for a buffer on another GPU, an empty or misaligned
    /// one; `Unsupported` before 2.27; NCCL's error.
    pub fn window_register<T: NcclType, B: DevicePtr<T> + DevicePtrMut<T>>(
        &self,
        buf: B,
        symmetric: bool,
    ) -> Result<Window<'_, T, B>> {
        const OP: &str = "window_register";
        require_api("ncclCommWindowRegister")?;
        self.check_buffer(OP, &buf)?;
        let bytes = buf.num_bytes();
        let (ptr, g) = buf.device_ptr(buf.stream());
        drop(g);
        // the header states the alignment from 2.28 on (NCCL checks it too)
        #[cfg(nccl_const = "NCCL_WIN_REQUIRED_ALIGNMENT")]
        let align = sys::NCCL_WIN_REQUIRED_ALIGNMENT as u64;
        #[cfg(not(nccl_const = "NCCL_WIN_REQUIRED_ALIGNMENT"))]
        let align = 1;
        if ptr % align != 0 {
            return Err(Error::invalid(
                OP,
                "buf address",
                format!("a multiple of {align} (use NcclBuffer)"),
                format!("{ptr:#x}"),
            ));
        }
        let flags = if symmetric {
            sys::NCCL_WIN_COLL_SYMMETRIC
        } else {
            sys::NCCL_WIN_DEFAULT
        } as i32;
        let mut win: sys::ncclWindow_t = std::ptr::null_mut();
        // SAFETY: ptr..ptr+bytes is device memory owned by buf, kept by the
        // returned value until it deregisters.
        let r = unsafe {
            sys::ncclCommWindowRegister(
                self.as_raw(),
                ptr as usize as *mut _,
                bytes,
                &mut win,
                flags,
            )
        };
        check_comm("ncclCommWindowRegister", r, self.as_raw())?;
        Ok(Registration {
            buf,
            handle: win as *mut core::ffi::c_void,
            comm: self,
            _t: PhantomData,
        })
    }
}

#[cfg(nccl_2_27)]
impl<T, B: DevicePtr<T> + DevicePtrMut<T>> Registration<'_, T, B, Win> {
    /// Deregisters the window (collective) and gives the buffer back:
    /// [`Registration::into_inner`].
    ///
    /// # Errors
    /// NCCL's error from `ncclCommWindowDeregister`.
    pub fn deregister(self) -> Result<B> {
        self.into_inner()
    }
}
