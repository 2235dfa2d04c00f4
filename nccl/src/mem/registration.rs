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
use crate::comm::registry::{Parked, Pending, Registry};
use crate::mem::buffer::DROP_WAIT;
use crate::mem::{DeviceBuffer, DeviceBufferMut};
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
    /// This crate's name of the explicit release.
    #[doc(hidden)]
    const DEREGISTER: &'static str;
    /// A window (whose release must happen where every rank's does).
    #[doc(hidden)]
    const WINDOW: bool;
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
    const DEREGISTER: &'static str = "deregister";
    const WINDOW: bool = false;
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
    const DEREGISTER: &'static str = "window_deregister";
    const WINDOW: bool = true;
    unsafe fn release(comm: sys::ncclComm_t, handle: *mut core::ffi::c_void) -> sys::ncclResult_t {
        // SAFETY: as the caller promises; the handle is the window.
        unsafe { sys::ncclCommWindowDeregister(comm, handle as sys::ncclWindow_t) }
    }
}

/// The first release whose `ncclCommRegister` refuses pool memory.
const POOL_REFUSED: crate::Version = crate::Version::new(2, 30, 3);

/// A buffer NCCL knows about, registered with a communicator: it owns the
/// buffer while registered, so the memory cannot be freed (or reused at the
/// same address) while NCCL may still map it. Use it in collectives like the
/// buffer itself; [`get`](Registration::get) reaches the buffer (a
/// `CudaSlice`'s `slice(..)` gives views of a registered range, for buckets).
///
/// It does not borrow its communicator, so an engine can keep both side by
/// side, and it is `Send` when the buffer is. Dropping it never calls NCCL
/// and does not wait for NCCL: it *parks* the handle and the buffer with its
/// communicator, whose own thread deregisters them (once the work queued on
/// the buffer is done) and frees the memory at its next registration,
/// [`Comm::release_parked`](crate::Comm::release_parked), [`Comm::deregister`](crate::Comm::deregister)
/// or close; a window, only at the next window registration or
/// device-communicator creation, or close (see
/// [`Comm::window_register`](crate::Comm::window_register)). If the
/// communicator is closed first, NCCL has dropped the registration with it
/// and the buffer is simply freed.
pub struct Registration<
    T: 'static,
    B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static,
    K: RegistrationKind,
> {
    /// `None` only while it is given back or parked.
    buf: Option<B>,
    /// NCCL's handle, as an address.
    handle: usize,
    registry: Arc<Registry>,
    _t: PhantomData<(fn() -> T, K)>,
}

impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static, K: RegistrationKind>
    std::fmt::Debug for Registration<T, B, K>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("kind", &K::RELEASE)
            .field("handle", &(self.handle as *const ()))
            .field("len", &self.buf.as_ref().map(|b| b.len()))
            .finish()
    }
}

/// A buffer registered with a communicator (`ncclCommRegister`), which lets
/// NCCL skip copies through its own buffers ([`Comm::register`](crate::Comm::register)).
pub type Registered<T, B> = Registration<T, B, Local>;

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

    /// The registration of `buf` that NCCL returned as `handle`.
    fn adopt_registration<
        T: 'static,
        B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static,
        K: RegistrationKind,
    >(
        &self,
        buf: B,
        handle: *mut core::ffi::c_void,
    ) -> Registration<T, B, K> {
        Registration {
            buf: Some(buf),
            handle: handle as usize,
            registry: self.registry.clone(),
            _t: PhantomData,
        }
    }
}

impl Comm {
    /// Registers `buf` with this communicator (NCCL 2.19+). Dropped
    /// registrations of this communicator are released first
    /// ([`Comm::release_parked`]).
    ///
    /// Which memory: an [`NcclBuffer`](crate::NcclBuffer) (`ncclMemAlloc`)
    /// is what NCCL's zero-copy paths want (NVLink, NVLS). A cudarc
    /// `CudaSlice` comes from a stream-ordered pool (`cuMemAllocAsync`):
    /// NCCL before 2.30.3 registers it but can use it only on network paths
    /// (its intra-node mappings skip it), and NCCL 2.30.3+ refuses it, which
    /// this call reports as `InvalidArgument` naming the alternative.
    ///
    /// # Errors
    /// `InvalidArgument` for a buffer on another GPU, an empty one, or pool
    /// memory on NCCL 2.30.3+; `Unsupported` before 2.19; NCCL's error.
    ///
    /// # Safety
    /// A promise about the other ranks, which this rank cannot check. With a
    /// registered buffer NCCL may let peers read and write this memory
    /// directly (zero-copy over NVLink, NVLS, the network), sized by *their*
    /// arguments. So every call given this registration (or a part of it)
    /// must be given registered buffers on every rank, as NCCL's user guide
    /// requires ("mixing registered and non-registered buffers can result in
    /// undefined behavior"), with the same counts, and, where NVLS is used,
    /// at the same offset within each rank's registration. A program whose
    /// ranks make the same calls on buffers registered the same way keeps
    /// it. NCCL registers whole pages (its `ncclRegFind` then matches any
    /// buffer inside them): another buffer that shares a page with this one
    /// (a neighbouring `CudaSlice` of the same pool, say) counts as
    /// registered too while this registration lasts, and the promise covers
    /// the calls given it as well. An [`NcclBuffer`](crate::NcclBuffer) of
    /// `ncclMemAlloc` memory has its pages to itself.
    pub unsafe fn register<
        T: NcclType,
        B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static,
    >(
        &self,
        buf: B,
    ) -> Result<Registered<T, B>> {
        const OP: &str = "register";
        require_api("ncclCommRegister")?;
        self.live(OP)?;
        self.check_buffer(OP, &buf)?;
        self.release_parked();
        let bytes = buf.num_bytes();
        let (ptr, _g) = buf.device_ptr(buf.stream());
        // NCCL 2.30.3+ fails on pool memory inside the call; say why first
        if pool_memory(ptr) == Some(true) && crate::base::runtime::require(OP, POOL_REFUSED).is_ok()
        {
            return Err(pool_refused(
                OP,
                "NCCL 2.30.3 and newer cannot register stream-ordered pool memory",
            ));
        }
        let mut handle = std::ptr::null_mut();
        // SAFETY: ptr..ptr+bytes is device memory owned by buf, which the
        // returned value keeps until it deregisters; ncclCommRegister writes
        // the handle before it returns (it only updates this rank's
        // registration cache).
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
        Ok(self.adopt_registration(buf, handle))
    }

    /// Ends `reg` now and gives its buffer back: waits (at most
    /// [`DROP_WAIT`]) for the work queued on the buffer, then
    /// deregisters it. Dropped registrations are released too.
    ///
    /// # Errors
    /// `InvalidArgument` for a registration of another communicator (it is
    /// dropped: parked with its own); `Busy` when the buffer is still in use
    /// at the limit, and NCCL's error from deregistering: then the buffer
    /// may still be registered, and it stays with the communicator (freed
    /// when it closes) rather than coming back. A window (one NCCL made)
    /// still in use at the limit also aborts the communicator: the other ranks ended theirs
    /// here, and NCCL places later symmetric memory by what each rank has
    /// live (see [`Comm::window_register`]).
    pub fn deregister<
        T: 'static,
        B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static,
        K: RegistrationKind,
    >(
        &self,
        mut reg: Registration<T, B, K>,
    ) -> Result<B> {
        let op = K::DEREGISTER;
        if !Arc::ptr_eq(&reg.registry, &self.registry) {
            return Err(Error::invalid(
                op,
                "reg",
                "a registration of this communicator",
                "one of another communicator",
            ));
        }
        if self.registry.is_closed() {
            // NCCL dropped it with the communicator
            return Ok(reg
                .buf
                .take()
                .expect("a live registration holds its buffer"));
        }
        self.live(op)?;
        self.release_parked();
        let mut held = Held::<T, B>(
            reg.buf
                .take()
                .expect("a live registration holds its buffer"),
            PhantomData,
        );
        let deadline = std::time::Instant::now() + DROP_WAIT;
        while !held.uses_done() {
            if std::time::Instant::now() >= deadline {
                reg.buf = Some(held.0); // parked by its drop
                if K::WINDOW && reg.handle != 0 {
                    // the other ranks released their window here: this one,
                    // left live, would make the ranks place their next
                    // symmetric memory at different offsets (see
                    // `Comm::release_windows`)
                    drop(reg);
                    let _ = self.abort_now(op);
                }
                return Err(Error::Busy {
                    op,
                    after: DROP_WAIT,
                });
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        if reg.handle == 0 {
            return Ok(held.0); // NCCL made no window: nothing to release
        }
        // SAFETY: the handle came from K's registration on this communicator
        // (same registry), which is live and used by this thread only; it is
        // released once (the buffer left `reg`, whose drop then parks
        // nothing).
        let r = unsafe { K::release(self.as_raw(), reg.handle as *mut core::ffi::c_void) };
        if r != sys::ncclResult_t::ncclSuccess {
            self.registry.keep(Box::new(held));
            return Err(crate::base::call::failure(K::RELEASE, r, self.as_raw()));
        }
        Ok(held.0)
    }
}

impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static, K: RegistrationKind>
    Registration<T, B, K>
{
    /// The buffer.
    pub fn get(&self) -> &B {
        self.buf
            .as_ref()
            .expect("a live registration holds its buffer")
    }
    /// The buffer, mutably: only inside the crate. A `&mut B` in safe code
    /// could put another buffer in its place (`std::mem::replace`) and free
    /// the registered one while NCCL still maps it; the registration itself
    /// is the buffer's mutable access (it implements `DevicePtrMut`).
    pub(crate) fn buf_mut(&mut self) -> &mut B {
        self.buf
            .as_mut()
            .expect("a live registration holds its buffer")
    }

    /// Whether NCCL made a window (or a registration handle). A window
    /// registration answers success without one where the communicator has
    /// no symmetric memory support (NCCL 2.29+; ranks that cannot map each
    /// other's memory): the buffer then works in collectives as a plain one,
    /// and one-sided puts refuse it.
    pub fn is_mapped(&self) -> bool {
        self.handle != 0
    }
}

#[cfg(nccl_fn = "ncclCommWindowRegister")]
impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static, K: RegistrationKind>
    Registration<T, B, K>
{
    /// NCCL's handle (a window's `ncclWindow_t`), when this is a
    /// registration of `comm`; `None` for another communicator's.
    pub(crate) fn handle_of(&self, comm: &Comm) -> Option<usize> {
        Arc::ptr_eq(&self.registry, &comm.registry).then_some(self.handle)
    }
}

/// A registered buffer, type-erased for its communicator's registry.
struct Held<T, B>(B, PhantomData<fn() -> T>);

impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static> Parked for Held<T, B> {
    fn uses_done(&mut self) -> bool {
        let stream = self.0.stream().clone();
        // acquiring it for writing makes `stream` wait for every tracked use
        let (_, g) = self.0.device_ptr_mut(&stream);
        drop(g);
        let _ = stream.context().bind_to_thread();
        // a capturing stream answers the query with an error, not with
        // whether its work is done: the registration stays parked
        if crate::mem::capturing(&stream).unwrap_or(true) {
            return false;
        }
        // SAFETY: the stream is alive (an Arc held here).
        let r = unsafe { cu::cuStreamQuery(stream.cu_stream()) };
        // only success says the work is done; another error (a broken
        // context) keeps it parked: leaked rather than released under a use
        r == cu::CUresult::CUDA_SUCCESS
    }
}

impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static, K: RegistrationKind> Drop
    for Registration<T, B, K>
{
    /// Parks the registration with its communicator (see the type's docs);
    /// never calls NCCL, never panics. It blocks only where it frees the
    /// buffer itself (NCCL made no window, or the communicator is closed):
    /// as the buffer's own drop, at most [`DROP_WAIT`] for an `NcclBuffer`.
    fn drop(&mut self) {
        let Some(buf) = self.buf.take() else {
            return; // given back
        };
        if self.handle == 0 {
            return; // NCCL made no window: nothing to release, the buffer drops
        }
        let parked = Pending {
            api: K::RELEASE,
            release: K::release,
            handle: self.handle,
            memory: Box::new(Held::<T, B>(buf, PhantomData)),
            window: K::WINDOW,
        };
        // closed: NCCL dropped the registration with the communicator, and
        // the buffer is freed here
        drop(self.registry.park(parked));
    }
}

impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static, K: RegistrationKind>
    DeviceSlice<T> for Registration<T, B, K>
{
    fn len(&self) -> usize {
        self.get().len()
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.get().stream()
    }
}

impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static, K: RegistrationKind>
    DevicePtr<T> for Registration<T, B, K>
{
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        self.get().device_ptr(stream)
    }
}

impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static, K: RegistrationKind>
    DevicePtrMut<T> for Registration<T, B, K>
{
    fn device_ptr_mut<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        self.buf_mut().device_ptr_mut(stream)
    }
}

/// Whether `ptr` lies in memory from a stream-ordered pool
/// (`cuMemAllocAsync`, which is how cudarc allocates), which NCCL cannot
/// map for its peers: from NCCL 2.30.3 on `ncclCommRegister` fails on it
/// with `ncclUnhandledCudaError` (it probes the allocation with
/// `cuMemRetainAllocationHandle`), and window registration fails on it in
/// every release (at the group end, from 2.28 on). `None` when the driver
/// cannot say.
fn pool_memory(ptr: cu::CUdeviceptr) -> Option<bool> {
    let mut pool: cu::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: a valid out-pointer of the attribute's type (a CUmemoryPool
    // handle); the driver only reads `ptr` as an address.
    let r = unsafe {
        cu::cuPointerGetAttribute(
            (&mut pool as *mut cu::CUmemoryPool).cast(),
            cu::CUpointer_attribute::CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE,
            ptr,
        )
    };
    (r == cu::CUresult::CUDA_SUCCESS).then_some(!pool.is_null())
}

/// The refusal of pool memory by `op` (see [`pool_memory`]).
fn pool_refused(op: &'static str, why: &str) -> Error {
    Error::invalid(
        op,
        "buf",
        format!(
            "memory NCCL can map for its peers: an NcclBuffer (ncclMemAlloc) or cuMemCreate/cuMemAlloc memory ({why})"
        ),
        "memory of a stream-ordered pool (cuMemAllocAsync, how cudarc allocates a CudaSlice)",
    )
}

/// A buffer registered as a window (`ncclCommWindowRegister`, NCCL 2.27+),
/// which enables NCCL's symmetric-memory kernels. Registration is
/// collective: every rank registers its window together, in the same order.
/// The buffer should come from [`NcclBuffer`](crate::NcclBuffer); its address
/// must be aligned to `NCCL_WIN_REQUIRED_ALIGNMENT` (4096) bytes. Ending it
/// (drop, [`Comm::deregister`](crate::Comm::deregister)) is local to this rank.
#[cfg(nccl_fn = "ncclCommWindowRegister")]
pub type Window<T, B> = Registration<T, B, Win>;

#[cfg(nccl_fn = "ncclCommWindowRegister")]
impl Comm {
    /// Registers `buf` as a window (collective). `symmetric` asks for
    /// `NCCL_WIN_COLL_SYMMETRIC` (every rank's buffer the same size).
    ///
    /// Where the communicator has no symmetric memory support (ranks that
    /// cannot map each other's memory), NCCL 2.29+ answers success without
    /// a window: the registration then holds none
    /// ([`Registration::is_mapped`] is `false`), the buffer acts as a plain
    /// one in collectives, and one-sided puts refuse it.
    ///
    /// Not inside a [`group`](crate::group()): from NCCL 2.28 on, the window
    /// handle is written when the outermost group ends, and a grouped
    /// registration could not hand it back. On a non-blocking communicator
    /// it waits (up to the communicator's timeout) until NCCL's own thread
    /// has written the handle.
    ///
    /// Windows dropped earlier (and those of dropped
    /// [`SymmetricPool`](crate::SymmetricPool)s) are deregistered first,
    /// all of them, each once the work queued on it is done: NCCL places
    /// each rank's windows in its symmetric space by itself, first-fit, so
    /// the ranks' layouts agree only if every rank has the same windows
    /// live at each placement. Dropped windows (and device communicators)
    /// are released only here, at [`Comm::dev_comm`], and when the
    /// communicator closes.
    ///
    /// # Errors
    /// `InvalidArgument` for a buffer on another GPU, an empty, misaligned or
    /// pool-allocated one; `InGroup`; `Unsupported` before 2.27; `Busy`
    /// when a window dropped earlier is still in use after
    /// [`DROP_WAIT`] (nothing was registered: the other ranks wait in this
    /// registration until this one retries it); NCCL's error; `Timeout`
    /// (the communicator is then aborted).
    ///
    /// # Safety
    /// A promise about the other ranks:
    /// - every rank registers its windows in the same order (NCCL exchanges
    ///   and lays out the windows collectively; a rank that skips one hangs
    ///   the others, one that registers another order desynchronizes the
    ///   layout), with the same size before NCCL 2.30 (earlier releases size
    ///   the symmetric space by each rank's own buffer);
    /// - every rank drops (or deregisters) its windows at the same points of
    ///   that order, and makes and drops its device communicators
    ///   ([`Comm::dev_comm`]) there too. NCCL 2.29+ also lays out memory of its own, collectively,
    ///   at a communicator's first one-sided call (`put_signal`, `signal`,
    ///   `wait_signal`) and at its first collective that NCCL runs with the
    ///   copy engines on windows: every rank reaches those at the same point
    ///   of that order too (as it does when all ranks run the same sequence
    ///   of calls);
    /// - every call given a window (or part of one) is given windows at the
    ///   same offsets on every rank: peers access this memory directly with
    ///   their own offsets and counts. From NCCL 2.30 windows may differ in
    ///   size between ranks: a one-sided put into a peer's window must then
    ///   fit the peer's window, which this rank cannot check (it checks
    ///   only its own).
    pub unsafe fn window_register<
        T: NcclType,
        B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static,
    >(
        &self,
        buf: B,
        symmetric: bool,
    ) -> Result<Window<T, B>> {
        const OP: &str = "window_register";
        require_api("ncclCommWindowRegister")?;
        crate::base::thread::not_in_group(OP)?;
        self.live(OP)?;
        self.check_buffer(OP, &buf)?;
        self.release_windows(OP)?;
        let bytes = buf.num_bytes();
        let (ptr, g) = buf.device_ptr(buf.stream());
        drop(g);
        // NCCL would fail at the group's end, where the error is harder to
        // place (and a non-blocking communicator is then aborted)
        if pool_memory(ptr) == Some(true) {
            return Err(pool_refused(OP, "windows need memory NCCL can map"));
        }
        // NCCL 2.28+ requires (and checks at the group's end, where a
        // failure costs the communicator) NCCL_WIN_REQUIRED_ALIGNMENT, 4096
        // in every such header; a build on an older header may still run
        // on a newer library
        #[cfg(nccl_const = "NCCL_WIN_REQUIRED_ALIGNMENT")]
        let align = sys::NCCL_WIN_REQUIRED_ALIGNMENT as u64;
        #[cfg(not(nccl_const = "NCCL_WIN_REQUIRED_ALIGNMENT"))]
        let align = if crate::base::runtime::checked_runtime()? >= crate::Version::new(2, 28, 0) {
            4096
        } else {
            1
        };
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
        // NCCL 2.28+ queues the registration and writes the handle at the
        // end of the (implicit) group, on its own thread for a non-blocking
        // communicator: the slot lives on the heap and is only freed once
        // NCCL is known to be done with it.
        let slot: *mut sys::ncclWindow_t = Box::into_raw(Box::new(std::ptr::null_mut()));
        // SAFETY: ptr..ptr+bytes is device memory owned by buf, kept by the
        // returned value until it deregisters; `slot` is a valid, heap
        // allocated out-pointer that outlives NCCL's write (see below).
        let r = unsafe {
            sys::ncclCommWindowRegister(self.as_raw(), ptr as usize as *mut _, bytes, slot, flags)
        };
        // Blocking: the implicit group ended inside the call, the handle is
        // written. Non-blocking: NCCL answers success or in-progress while its
        // thread still works; polling until the communicator settles joins
        // that thread (NCCL 2.26+).
        // success is polled too, whatever mode the communicator was made
        // with: for a blocking one that is one call that finds it settled
        let r = if r == sys::ncclResult_t::ncclSuccess {
            sys::ncclResult_t::ncclInProgress
        } else {
            r
        };
        if let Err(e) = self.settle("ncclCommWindowRegister", r) {
            // NCCL may still hold the slot (a queued task of a failed group
            // runs at a later group end): abort, which joins NCCL's thread,
            // and never free the 8-byte slot.
            let _ = self.abort_now(OP);
            return Err(e);
        }
        // SAFETY: NCCL is done with the slot (settled above); it came from
        // Box::into_raw and is reclaimed once.
        let win = *unsafe { Box::from_raw(slot) };
        if win.is_null() {
            // NCCL answers success and no window when the communicator has
            // no symmetric memory support (2.29+: `*win = nullptr` then
            // `if (!comm->symmetricSupport) return ncclSuccess`; seen on
            // 2.30.7 with ranks of one GPU under different host ids)
            log::debug!("ncclCommWindowRegister made no window: no symmetric memory support");
        }
        Ok(self.adopt_registration(buf, win as *mut core::ffi::c_void))
    }
}
