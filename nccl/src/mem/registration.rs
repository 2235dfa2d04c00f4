//! Registering buffers with a communicator (`ncclCommRegister`) and as
//! symmetric windows (`ncclCommWindowRegister`, NCCL 2.27+).

use std::marker::PhantomData;
use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop, sys as cu};

use crate::base::call::check_comm;
use crate::base::dtype::NcclType;
use crate::base::error::{Error, Result};
use crate::base::runtime::require_api;
use crate::comm::Comm;
use crate::mem::buffer::quiesce;
use crate::sys;

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
#[cfg(nccl_fn = "ncclCommWindowRegister")]
#[derive(Debug)]
pub enum Win {}
#[cfg(nccl_fn = "ncclCommWindowRegister")]
impl kind::Sealed for Win {}
#[cfg(nccl_fn = "ncclCommWindowRegister")]
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
/// registration, after waiting (bounded, [`DROP_WAIT`](crate::DROP_WAIT)) for the buffer's
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
/// NCCL skip copies through its own buffers ([`Comm::register`](crate::Comm::register)).
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
    /// the same). Never panics; a failure is logged (`log::error!`).
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
            log::error!("{} failed with code {}", K::RELEASE, r.0);
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
/// buffer should come from [`NcclBuffer`](crate::NcclBuffer); its address must be aligned to
/// `NCCL_WIN_REQUIRED_ALIGNMENT` (4096) bytes.
#[cfg(nccl_fn = "ncclCommWindowRegister")]
pub type Window<'c, T, B> = Registration<'c, T, B, Win>;

#[cfg(nccl_fn = "ncclCommWindowRegister")]
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

#[cfg(nccl_fn = "ncclCommWindowRegister")]
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
