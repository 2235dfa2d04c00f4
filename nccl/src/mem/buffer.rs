//! Buffers for NCCL ([`NcclBuffer`]: `ncclMemAlloc` memory, or a
//! stream-ordered pool's) and views of their ranges ([`NcclView`],
//! [`NcclViewMut`]).
//!
//! # Ordering across streams
//!
//! A buffer is allocated on a stream, its *home*, which it keeps (an
//! `Arc<CudaStream>`) until it is freed. When the context tracks events
//! (cudarc's `is_managing_stream_synchronization`: event tracking on and at
//! least one stream made with `new_stream`/`fork`), a use is ordered as
//! follows, by the rules of the `track` module:
//!
//! - **On the home stream**: nothing is recorded or waited, unless a write on
//!   another stream, or (before a write) reads on other streams, have not been
//!   waited for yet: then the home stream waits for their events, once.
//! - **On another stream `T`**: if home has uses that the home event does not
//!   cover yet (a write since its last record; for a write, a read too), the
//!   home event is recorded on home; `T` then waits for the home event and the
//!   last foreign write's event (and, for a write, every foreign read's
//!   event); the use's guard records its own event on `T` once the use is
//!   enqueued: the write event, or the read event of `T` (one per reader
//!   stream, up to four at once; past that, the guard waits on the host for
//!   `T` instead).
//! - **Freeing** (drop), and deregistering (which acquires the buffer for a
//!   write on home): home waits for every event not yet waited for, then the
//!   host waits for the home stream, at most [`DROP_WAIT`]; past it, the
//!   memory is leaked (and logged) rather than freed under a kernel. Pool
//!   memory ([`Memory::Stream`]) is freed on home instead (`cuMemFreeAsync`),
//!   after those waits: the host does not wait. `ncclMemAlloc`'s memory is
//!   freed at once where it is cuMem's (NCCL's default); where it is not
//!   (`NCCL_CUMEM_ENABLE=0`, no virtual memory management) `ncclMemFree` is
//!   `cudaFree`, which waits for the whole device, so it runs on a thread of
//!   its own (`nccl-mem-free`); CUDA holds up the process's other CUDA
//!   calls until that wait ends, so abort a stuck communicator first.
//! - **Taking over a `CudaSlice`** ([`NcclBuffer::from_cuda_slice`]): home,
//!   the slice's stream, waits for the slice's cudarc events; that wait
//!   counts as a write on home (on the per-thread stream, the host waits for
//!   it instead, as for a new buffer there).
//!
//! Events are made on first need: a buffer used on its home stream only has
//! none. Views share their buffer's state (the rules are per buffer, not per
//! range).
//!
//! # Why this is sound
//!
//! Claim: when a use is enqueued, every earlier use it conflicts with (one of
//! the two writes) is ordered before it on the GPU, and when the memory is
//! freed every use is complete.
//!
//! 1. *Exclusive writes.* A write needs `&mut` (of the buffer or of its only
//!    mutable view), so when a write is acquired, or the buffer freed, no
//!    other use is in flight (acquired but not yet enqueued, or its guard not
//!    yet dropped: guards borrow the buffer). Reads may be acquired from
//!    several threads at once; they are serialized on the buffer's lock, and
//!    every record or wait they cause is enqueued while it is held. A read on
//!    home skips the lock when one under it left nothing for home reads to
//!    do (no foreign write pending, home's reads marked): only an exclusive
//!    use can change that, and each clears the flag (`Track::home_read_is_free`;
//!    the model in `mem/track.rs` checks the skipped reads).
//! 2. *Every settled use is covered.* A use is settled once its guard has
//!    dropped. Each settled use is (a) on home, so before everything enqueued
//!    on home later; or (b) in an event still tracked (the write slot, or a
//!    read slot), recorded on its stream after it; or (c) waited for by home
//!    (the slot was *joined*), which marks home as having unrecorded uses; or
//!    (d) waited for by a later foreign writer before its write, so covered by
//!    that write's event; or (e) complete, its guard having waited on the
//!    host. A slot is freed only in (c) or (d), under exclusive access.
//! 3. *The home event.* It is only recorded on home, so each record covers
//!    every earlier home use and, transitively, what home waited for. Two
//!    flags say which home uses may not be covered: writes (`home_w`) and
//!    reads (`home_r`). A write, or a join of a foreign write, is enqueued by
//!    the time anything else is acquired (1), so a foreign reader that sees
//!    `home_w`, records the home event and clears the flag covers it. A home
//!    *read* may be acquired, then another thread's foreign read records the
//!    home event, and only then the home read is enqueued: so only an
//!    exclusive foreign write clears `home_r`.
//! 4. *The acquiring use waits for the rest.* A home read waits for the write
//!    slot; a home write joins every slot; a foreign use waits for the home
//!    event (recorded afresh first if home has uncovered writes, or for a
//!    write uncovered uses) and the write slot; a foreign write also waits for
//!    every read slot. With 2 this orders every conflicting settled use.
//! 5. *Stream identity.* A use counts as on home only if its stream has the
//!    home stream's handle and context, and the handle is not the per-thread
//!    default stream (`0x2`, a different stream on each thread): home is kept
//!    alive, so no other live stream has its handle. Handles of other streams
//!    are never trusted to skip a wait (a destroyed stream's handle can come
//!    back while its work still runs). They only let reads on one stream share
//!    a read event, and a read that reuses the event first makes its stream
//!    wait for it, so the event keeps covering the earlier reads even if the
//!    handle now names another stream. Two streams alive at once never share
//!    a handle, except `0x2`, which never shares an event. A buffer made on
//!    `0x2` has no use on home at all: its zeroing is waited for on the host.
//! 6. *Events never recorded or made.* Waiting for an event never recorded
//!    waits for nothing, which is right: a slot is only taken by a use whose
//!    guard records it. Where an event cannot be made or recorded, the use's
//!    guard, or the acquiring thread, waits on the host instead.
//! 7. *The free.* Drop joins every slot into home (2c), then waits on the host
//!    for home, so every use is complete before `ncclMemFree`; or, for pool
//!    memory, enqueues `cuMemFreeAsync` on home after the joins, so every use
//!    is ordered before the free on the GPU (CUDA reuses a freed block only
//!    after the free, in stream order, or for another stream after the
//!    driver has seen the free complete). On the per-thread stream (rule 5),
//!    home is the dropping thread's: every use there was foreign and is in a
//!    slot (or complete), and the joins make that stream wait for all of
//!    them before the free.
//! 8. *A slice taken over.* Its uses before are cudarc's: each is covered by
//!    the slice's write or read event, and home waits for both (checked
//!    calls of ours, whatever the context's tracking says by then) before
//!    the buffer exists. The exception is cudarc's: it keeps one read event,
//!    so of reads on several other streams only the last is covered, for
//!    later uses and for the free, as for the slice itself; and a slice
//!    made while tracking was off has no events. The buffer starts as a
//!    fresh one does: a write on home (rule 3's `home_w`), so a first use on
//!    another stream waits for home, and through it for those uses; on the
//!    per-thread stream, as for a new buffer, the host waits for that stream
//!    before the buffer is handed out. A stream that captures, or that the
//!    waits joined to a capture, is refused. Only slices of a context with
//!    memory pools are taken over (cudarc's `has_async_alloc`): cudarc
//!    frees those with `cuMemFreeAsync` on the slice's stream, as rule 7
//!    frees pool memory on home. Elsewhere cudarc frees with `cuMemFree`,
//!    which can wait for work on every stream of the device: a drop could
//!    then wait without bound.
//!
//! The `track` module's tests check these rules against a model of CUDA's
//! stream and event ordering on random programs (including in-flight reads
//! on several threads, handle reuse and more reader streams than slots),
//! and check that the same model catches cudarc 0.19's single read event.
//!
//! Limits. With event tracking off nothing is tracked, as for cudarc's own
//! buffers: cudarc's unsafe `disable_event_tracking` leaves the ordering to
//! the program. A context also stops tracking when the last stream of its
//! own is dropped (cudarc counts them), event tracking still on; uses on
//! other streams that are still pending in the buffer's events are not
//! forgotten then: a later read waits for a pending foreign write, and a
//! later write for every pending use on another stream (uses on home are
//! not tracked then, as for cudarc's buffers). Before a context makes its first stream it does not track
//! either; cudarc's `new_stream` synchronizes the context when it makes that
//! stream, which orders the uses made until then (`fork` only makes the new
//! stream wait for its parent), as for cudarc's own buffers. A guard is cudarc's `SyncOnDrop`, which skips its record when
//! cudarc has an error stored for the context (it reports that error
//! instead), as for every cudarc buffer. A use on another stream waits for
//! *all* the work queued on home so far, not only this buffer's: programs
//! that queue unrelated work on home before handing a buffer to another
//! stream wait longer than they need to. Uses on the home stream record
//! nothing, so they can be captured into a CUDA graph with event tracking on,
//! as long as no use on another stream is pending (its wait would reach
//! outside the capture).
//!
//! Host waits without a deadline remain in three rare places, where no event
//! can carry a use: a fifth reader stream while four others hold the read
//! slots, a stream of a context object that does not track events (cudarc's
//! guard records only on a tracking context), and an event that cannot be
//! made or recorded (a failing driver). There the use's guard waits for its
//! stream on the host once the use is enqueued (cudarc's `SyncOnDrop::Sync`),
//! so a collective that never ends (a dead peer) keeps that thread waiting.
//! More slots could not carry such reads soundly: cudarc's guard records its
//! event only when dropped, so two streams cannot share one event while
//! their uses may still be in flight.

use std::marker::PhantomData;
use std::ops::{Bound, Range, RangeBounds};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::{
    CudaContext, CudaEvent, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceSlice,
    DriverError, SyncOnDrop, sys as cu,
};

use crate::base::call::check;
use crate::base::dtype::NcclType;
use crate::base::error::{Error, Result};
use crate::base::runtime::require_api;
use crate::mem::track::{Act, After, Ev, On, Track};
use crate::sys;

/// How long dropping an [`NcclBuffer`] waits for its stream before leaking it.
/// The buffers a communicator frees when it closes (parked registrations)
/// share one such wait: closing never waits longer than this for them all.
/// A stream found still busy after this wait is remembered for a minute: a
/// buffer dropped on it meanwhile is asked about once and, still busy,
/// leaked at once (so dropping many buffers of a hung stream does not wait
/// this long for each).
pub const DROP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// CUDA's per-thread default stream handle (`CU_STREAM_PER_THREAD`): the
/// same handle names a different stream on each thread.
const PER_THREAD: usize = 0x2;

/// Device memory for NCCL, from `ncclMemAlloc` (NCCL 2.19+, what NCCL's
/// registration, windows and NVLink optimizations want:
/// [`alloc_zeros`](NcclBuffer::alloc_zeros)) or from the device's
/// stream-ordered pool (`cuMemAllocAsync`, the memory cudarc's `CudaSlice`
/// has, without cudarc's per-use events: [`Memory::Stream`]; a `CudaSlice`
/// becomes one without a copy with
/// [`from_cuda_slice`](NcclBuffer::from_cuda_slice)). Usable in
/// every collective (it implements cudarc's `DevicePtr`/`DevicePtrMut`) and
/// with cudarc's copies; freed on drop. [`slice`](NcclBuffer::slice) and
/// [`slice_mut`](NcclBuffer::slice_mut) give views of a range (buckets).
///
/// Its uses on the stream it was allocated on cost nothing beyond the call:
/// no event is recorded or waited. Uses on other streams are ordered both
/// ways with events, when the context tracks events (cudarc's default once
/// it has a stream of its own), including several readers on different
/// streams before a write. The module's source gives the rules and why they
/// are sound. Dropping it waits for its stream (after every use on other
/// streams) up to [`DROP_WAIT`]; if that stream is stuck, the memory is
/// leaked, and logged, instead of freed under a kernel. Pool memory is
/// freed on its stream, after every use, without a wait on the host; NCCL
/// memory that is not cuMem's (freed by `cudaFree`, which waits for the
/// whole device) on a thread of its own.
///
/// It is `Send` and `Sync` (for `T` that is): no host thread ever touches
/// the memory, reads from several threads are ordered under a lock, and
/// writes need `&mut`.
#[derive(Debug)]
pub struct NcclBuffer<T> {
    ptr: cu::CUdeviceptr,
    len: usize,
    memory: Memory,
    uses: Uses,
    _t: PhantomData<T>,
}

/// Where an [`NcclBuffer`]'s memory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Memory {
    /// `ncclMemAlloc` (NCCL 2.19+): memory NCCL can map for its peers, which
    /// registration on every release, windows (`SymmetricPool`) and NCCL's
    /// NVLink zero-copy paths need. NCCL's calls on it take more host time
    /// than on plain device memory (docs/performance.md).
    Nccl,
    /// The device's default stream-ordered pool (`cuMemAllocAsync`, the
    /// memory of cudarc's `CudaSlice`), allocated and freed on the buffer's
    /// stream: no wait on the host to free it. Every collective takes it;
    /// NCCL 2.30.3+ refuses to register it, and windows cannot be made of it
    /// (both are typed errors).
    Stream,
}

/// The home stream, the tracking state and the events of a buffer.
#[derive(Debug)]
struct Uses {
    home: Home,
    track: Mutex<Track>,
    /// A use on another stream was tracked: an event may hold it still.
    /// Read, without the lock, only by uses made with tracking off.
    foreign: AtomicBool,
    /// A home read was made under the lock since the last exclusive use, so
    /// a read on home has nothing to do ([`Track::home_read_is_free`]): such
    /// reads skip the lock. Set only under the lock, cleared by every
    /// exclusive use (`write`, `join`).
    home_read_free: AtomicBool,
}

/// The home stream and the buffer's events (made on first need; their
/// addresses are stable while the buffer lives, as guards need).
#[derive(Debug)]
struct Home {
    stream: Arc<CudaStream>,
    events: [OnceLock<CudaEvent>; Ev::COUNT],
}

impl<T: NcclType> NcclBuffer<T> {
    /// `len` zeroed elements of `ncclMemAlloc` memory ([`Memory::Nccl`]) on
    /// the GPU of `stream` (zeroed on `stream`, which becomes the buffer's
    /// home stream).
    ///
    /// # Errors
    /// `InvalidArgument` for `len == 0` or a byte size that overflows;
    /// `Unsupported` before NCCL 2.19; NCCL's or CUDA's error.
    pub fn alloc_zeros(stream: &Arc<CudaStream>, len: usize) -> Result<NcclBuffer<T>> {
        Self::alloc_zeros_in(stream, len, Memory::Nccl)
    }

    /// `len` zeroed elements of `memory` on the GPU of `stream` (allocated,
    /// for [`Memory::Stream`], and zeroed on `stream`, which becomes the
    /// buffer's home stream).
    ///
    /// # Errors
    /// `InvalidArgument` for `len == 0` or a byte size that overflows;
    /// `Capturing` for [`Memory::Stream`] while `stream` captures a CUDA
    /// graph (the allocation would become the graph's); `Timeout` on the
    /// per-thread default stream when the work queued there before does not
    /// end within [`DROP_WAIT`] (the new memory is ordered after it by a
    /// wait on the host there); `Unsupported` for
    /// [`Memory::Nccl`] before NCCL 2.19; NCCL's or CUDA's error (a device
    /// without memory pools answers CUDA's `CUDA_ERROR_NOT_SUPPORTED`).
    pub fn alloc_zeros_in(
        stream: &Arc<CudaStream>,
        len: usize,
        memory: Memory,
    ) -> Result<NcclBuffer<T>> {
        Self::alloc("NcclBuffer::alloc_zeros", stream, len, memory, None)
    }

    /// A copy of `data` in new memory of kind `memory` on the GPU of
    /// `stream` (allocated and copied on `stream`, which becomes the
    /// buffer's home stream): cudarc's `clone_htod` for an `NcclBuffer`.
    /// [`Memory::Stream`] is the memory for collectives alone; registration
    /// and windows want [`Memory::Nccl`].
    ///
    /// # Errors
    /// As [`alloc_zeros_in`](NcclBuffer::alloc_zeros_in) (an empty `data`
    /// is `InvalidArgument`), and CUDA's error of the copy.
    pub fn from_host(
        stream: &Arc<CudaStream>,
        data: &[T],
        memory: Memory,
    ) -> Result<NcclBuffer<T>> {
        Self::alloc(
            "NcclBuffer::from_host",
            stream,
            data.len(),
            memory,
            Some(data),
        )
    }

    /// `len` elements of `memory` (see `alloc_zeros_in`), a copy of `data`
    /// (of `len` elements) or zeros; `op` names the caller in errors.
    fn alloc(
        op: &'static str,
        stream: &Arc<CudaStream>,
        len: usize,
        memory: Memory,
        data: Option<&[T]>,
    ) -> Result<NcclBuffer<T>> {
        if memory == Memory::Nccl {
            require_api("ncclMemAlloc")?;
        }
        if len == 0 {
            return Err(Error::invalid(op, "len", "at least 1", 0));
        }
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::invalid(op, "len", "a size in bytes that fits usize", len))?;
        stream.context().bind_to_thread()?;
        let ptr = match memory {
            Memory::Nccl => {
                let mut p: *mut core::ffi::c_void = std::ptr::null_mut();
                // SAFETY: valid out-pointer; the stream's GPU is current.
                check("ncclMemAlloc", unsafe {
                    ffi!("ncclMemAlloc", ncclMemAlloc(&mut p, bytes))
                })?;
                p as usize as cu::CUdeviceptr
            }
            Memory::Stream => {
                if crate::mem::capturing(stream)? {
                    return Err(Error::Capturing { op, bytes });
                }
                // SAFETY: the stream is alive (borrowed) and its GPU current;
                // the memory is freed once, on home, in drop.
                unsafe { cudarc::driver::result::malloc_async(stream.cu_stream(), bytes) }?
            }
        };
        // from here on, an error frees the memory (drop)
        let buf = Self::wrap(stream, ptr, len, memory);
        match data {
            // SAFETY: the allocation just made holds `bytes`, on the stream's
            // GPU, and `data` as many (`len` of them). The copy only reads
            // `data`: from pageable memory it returns once read; from
            // page-locked memory a later host write, or a free of it, may
            // still change what the GPU gets, never host memory (as cudarc's
            // `memcpy_htod`).
            Some(data) => unsafe {
                cudarc::driver::result::memcpy_htod_async(buf.ptr, data, stream.cu_stream())
            }?,
            // SAFETY: the range is the allocation just made, on the stream's GPU.
            None => unsafe {
                cudarc::driver::result::memset_d8_async(buf.ptr, 0, bytes, stream.cu_stream())
            }?,
        }
        if stream.cu_stream() as usize == PER_THREAD {
            // no use counts as home on the per-thread stream (rule 5 of the
            // module's source): the first write must be over before any use.
            // Waited for at most DROP_WAIT: that stream may hold work that
            // never ends (a collective on a dead peer); the buffer then
            // goes (its drop leaks it if the stream is still busy)
            if !idle_by(stream, std::time::Instant::now() + DROP_WAIT)? {
                // the stream is stuck: the buffer is leaked at once (its
                // drop would wait DROP_WAIT again)
                SHARED_DEADLINE.with(|d| {
                    let outer = d.replace(Some(std::time::Instant::now()));
                    drop(buf);
                    d.set(outer);
                });
                return Err(Error::Timeout {
                    op,
                    after: DROP_WAIT,
                });
            }
        }
        Ok(buf)
    }

    /// Takes over the memory of a cudarc `CudaSlice`, without a copy: the
    /// slice's stream becomes the buffer's home stream, and the memory is
    /// freed as cudarc would have freed it (`cuMemFreeAsync` on that stream:
    /// [`Memory::Stream`]), unless a use may still run then: like every
    /// `NcclBuffer`, it is leaked (and logged) rather than freed under a
    /// kernel or inside a capture. From then on its uses are tracked as an
    /// `NcclBuffer`'s: nothing to record or wait on home, where cudarc makes
    /// three event waits and two records per out-of-place collective
    /// (docs/performance.md).
    ///
    /// First, home waits for the slice's two cudarc events (its last write,
    /// and its last read: cudarc keeps one read event, so of reads on
    /// several other streams only the last is covered, as for a write to
    /// the slice itself), whatever the context's tracking says now. A slice
    /// made while tracking was off has no events: ordering its earlier uses
    /// on other streams is left to the program, as for the slice itself.
    ///
    /// # Errors
    /// The slice comes back in a boxed [`SliceNotTaken`] (which converts
    /// into [`Error`] with `?`): CUDA's `CUDA_ERROR_NOT_SUPPORTED` on a device
    /// without memory pools (cudarc's memory there is `cuMemAlloc`'s, whose
    /// free can wait for every stream of the device: a drop could not be
    /// bounded); `InvalidArgument` for an empty slice (as
    /// [`alloc_zeros_in`]); `Capturing` while its stream captures a CUDA
    /// graph, or when the waits joined it to one; CUDA's error of a wait;
    /// `Timeout` when its stream is the per-thread default stream and the
    /// work queued there does not end within [`DROP_WAIT`] (as for
    /// [`alloc_zeros_in`]). Home may have waited for the slice's events by
    /// then; the events themselves are as they were.
    ///
    /// [`alloc_zeros_in`]: NcclBuffer::alloc_zeros_in
    pub fn from_cuda_slice(
        mut slice: CudaSlice<T>,
    ) -> std::result::Result<NcclBuffer<T>, Box<SliceNotTaken<T>>> {
        const OP: &str = "NcclBuffer::from_cuda_slice";
        let stream = slice.stream().clone();
        let ctx = stream.context().clone();
        let len = slice.len();
        // cudarc's calls report an error stored for the context instead of
        // running: take one now, give it back after
        let stored = ctx.check_err();
        let checked = (|| -> Result<()> {
            if !ctx.has_async_alloc() {
                return Err(DriverError(cu::cudaError_enum::CUDA_ERROR_NOT_SUPPORTED).into());
            }
            let bytes = match len.checked_mul(std::mem::size_of::<T>()) {
                Some(0) | None => {
                    return Err(Error::invalid(OP, "slice", "a non-empty slice", len));
                }
                Some(b) => b,
            };
            ctx.bind_to_thread()?;
            if crate::mem::capturing(&stream)? {
                return Err(Error::Capturing { op: OP, bytes });
            }
            // the slice's events, from cudarc's guards (which wait for them
            // on home when the context tracks), taken out of the guards so
            // that nothing is recorded over them before home has waited
            let read = event_of(DevicePtr::device_ptr(&slice, &stream).1);
            let write = event_of(slice.device_ptr_mut(&stream).1);
            for ev in [read, write].into_iter().flatten() {
                // SAFETY: home is alive (held) and its context current
                // (bound above); the event is the slice's, alive until the
                // slice is given up below, of the same context. A wait on
                // an event never recorded waits for nothing.
                unsafe {
                    cudarc::driver::result::stream::wait_event(
                        stream.cu_stream(),
                        ev,
                        cu::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT,
                    )
                }?;
            }
            // an event recorded inside another stream's capture would have
            // joined home to that capture
            if crate::mem::capturing(&stream)? {
                return Err(Error::Capturing { op: OP, bytes });
            }
            // no use counts as home on the per-thread stream (rule 5): the
            // waits must be over before any use, at most DROP_WAIT
            if stream.cu_stream() as usize == PER_THREAD
                && !idle_by(&stream, std::time::Instant::now() + DROP_WAIT)?
            {
                return Err(Error::Timeout {
                    op: OP,
                    after: DROP_WAIT,
                });
            }
            Ok(())
        })();
        let taken = match checked {
            Ok(()) => {
                // cudarc's leak waits for the same events again, then gives
                // up the memory without freeing it
                let ptr = slice.leak();
                Ok(Self::wrap(&stream, ptr, len, Memory::Stream))
            }
            Err(error) => Err(Box::new(SliceNotTaken { error, slice })),
        };
        // what cudarc's own waits stored meanwhile: ours were checked
        // directly (a stored error is shared by every thread of the context)
        let _ = ctx.check_err();
        ctx.record_err(stored);
        taken
    }
}

/// The raw event a cudarc guard would record on drop, taken out of it so
/// that the guard records nothing.
fn event_of(mut guard: SyncOnDrop<'_>) -> Option<cu::CUevent> {
    match &mut guard {
        SyncOnDrop::Record(target) => target.take().map(|(e, _)| e.cu_event()),
        SyncOnDrop::Sync(_) => None,
    }
}

/// A `CudaSlice` that [`NcclBuffer::from_cuda_slice`] did not take over, and
/// why. `?` turns it into the [`Error`] (the slice is then dropped, which
/// frees it as cudarc does).
pub struct SliceNotTaken<T> {
    /// Why the slice was not taken over.
    pub error: Error,
    /// The slice (see [`NcclBuffer::from_cuda_slice`]'s errors for what
    /// may have been enqueued on its stream).
    pub slice: CudaSlice<T>,
}

impl<T> std::fmt::Debug for SliceNotTaken<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SliceNotTaken")
            .field("error", &self.error)
            .field("slice_len", &self.slice.len())
            .finish()
    }
}

impl<T> std::fmt::Display for SliceNotTaken<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NcclBuffer::from_cuda_slice: {}", self.error)
    }
}

impl<T> std::error::Error for SliceNotTaken<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<Box<SliceNotTaken<T>>> for Error {
    fn from(e: Box<SliceNotTaken<T>>) -> Error {
        e.error
    }
}

impl<T> NcclBuffer<T> {
    /// The buffer of `len` elements of `memory` at `ptr` on home `stream`,
    /// whose first use (the zeroing, the copy, or the waits of a slice taken
    /// over) is on home.
    fn wrap(
        stream: &Arc<CudaStream>,
        ptr: cu::CUdeviceptr,
        len: usize,
        memory: Memory,
    ) -> NcclBuffer<T> {
        let per_thread = stream.cu_stream() as usize == PER_THREAD;
        NcclBuffer {
            ptr,
            len,
            memory,
            uses: Uses {
                home: Home {
                    stream: stream.clone(),
                    events: Default::default(),
                },
                // that first use is a write on home
                track: Mutex::new(Track::new(!per_thread)),
                foreign: AtomicBool::new(false),
                home_read_free: AtomicBool::new(false),
            },
            _t: PhantomData,
        }
    }
}

impl<T> NcclBuffer<T> {
    /// The raw device address.
    pub fn as_raw(&self) -> cu::CUdeviceptr {
        self.ptr
    }

    /// Where the memory comes from.
    pub fn memory(&self) -> Memory {
        self.memory
    }

    /// A view of the elements in `range`, or `None` when the range is out of
    /// bounds (as `<[T]>::get`). Its uses are tracked with the buffer's.
    pub fn try_slice(&self, range: impl RangeBounds<usize>) -> Option<NcclView<'_, T>> {
        let r = bounds(&range, self.len)?;
        Some(view::<T>(self.ptr, r, &self.uses))
    }

    /// A view of the elements in `range`.
    ///
    /// # Panics
    /// When the range is out of bounds, as slicing `[T]` does
    /// ([`try_slice`](NcclBuffer::try_slice) returns `None` instead).
    pub fn slice(&self, range: impl RangeBounds<usize>) -> NcclView<'_, T> {
        let len = self.len;
        self.try_slice((range.start_bound(), range.end_bound()))
            .unwrap_or_else(|| out_of_bounds(&range, len))
    }

    /// A mutable view of the elements in `range`, or `None` when the range is
    /// out of bounds. It borrows the whole buffer: its uses are tracked with
    /// the buffer's, whose writes must be exclusive.
    pub fn try_slice_mut(&mut self, range: impl RangeBounds<usize>) -> Option<NcclViewMut<'_, T>> {
        let r = bounds(&range, self.len)?;
        Some(view_mut::<T>(self.ptr, r, &mut self.uses))
    }

    /// A mutable view of the elements in `range` (see
    /// [`try_slice_mut`](NcclBuffer::try_slice_mut)).
    ///
    /// # Panics
    /// When the range is out of bounds.
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> NcclViewMut<'_, T> {
        let len = self.len;
        self.try_slice_mut((range.start_bound(), range.end_bound()))
            .unwrap_or_else(|| out_of_bounds(&range, len))
    }
}

impl NcclBuffer<u8> {
    /// A view of the elements `elems` of `U` laid from byte 0 of this byte
    /// buffer, or `None` when they do not fit: the typed views of the
    /// symmetric pool's byte buffers. Its uses are tracked with the
    /// buffer's, which are per buffer, whatever the element type.
    #[cfg_attr(not(nccl_fn = "ncclCommWindowRegister"), allow(dead_code))]
    pub(crate) fn typed<U>(&self, elems: Range<usize>) -> Option<NcclView<'_, U>> {
        let fits = elems.end.checked_mul(std::mem::size_of::<U>())? <= self.len;
        (fits && elems.start <= elems.end).then(|| view::<U>(self.ptr, elems, &self.uses))
    }

    /// A mutable view of the elements `elems` of `U` from byte 0 (see
    /// [`typed`](NcclBuffer::typed)).
    #[cfg_attr(not(nccl_fn = "ncclCommWindowRegister"), allow(dead_code))]
    pub(crate) fn typed_mut<U>(&mut self, elems: Range<usize>) -> Option<NcclViewMut<'_, U>> {
        let fits = elems.end.checked_mul(std::mem::size_of::<U>())? <= self.len;
        (fits && elems.start <= elems.end).then(|| view_mut::<U>(self.ptr, elems, &mut self.uses))
    }
}

/// `range` within `0..len`, or `None`.
pub(super) fn bounds(range: &impl RangeBounds<usize>, len: usize) -> Option<Range<usize>> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1)?,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => len,
    };
    (start <= end && end <= len).then_some(start..end)
}

#[cold]
#[track_caller]
pub(super) fn out_of_bounds(range: &impl RangeBounds<usize>, len: usize) -> ! {
    panic!(
        "range ({:?}, {:?}) out of bounds for a buffer of {len} elements",
        range.start_bound(),
        range.end_bound()
    )
}

/// The address `elems` elements of `T` past `p` (within the allocation).
fn offset<T>(p: cu::CUdeviceptr, elems: usize) -> cu::CUdeviceptr {
    p + (elems * std::mem::size_of::<T>()) as u64
}

/// The view of elements `r` of `T` from `base`, its uses tracked by `uses`
/// (the caller has checked that `r` is within the allocation).
fn view<T>(base: cu::CUdeviceptr, r: Range<usize>, uses: &Uses) -> NcclView<'_, T> {
    NcclView {
        ptr: offset::<T>(base, r.start),
        len: r.len(),
        uses,
        _t: PhantomData,
    }
}

/// The mutable view of elements `r` of `T` from `base` (as [`view`]).
fn view_mut<T>(base: cu::CUdeviceptr, r: Range<usize>, uses: &mut Uses) -> NcclViewMut<'_, T> {
    NcclViewMut {
        ptr: offset::<T>(base, r.start),
        len: r.len(),
        uses,
        _t: PhantomData,
    }
}

/// A view of a range of an [`NcclBuffer`] (`&[T]` on the GPU), from
/// [`NcclBuffer::slice`]: usable wherever a buffer is read, its uses tracked
/// with the buffer's.
pub struct NcclView<'a, T> {
    ptr: cu::CUdeviceptr,
    len: usize,
    uses: &'a Uses,
    _t: PhantomData<&'a [T]>,
}

/// A mutable view of a range of an [`NcclBuffer`] (`&mut [T]` on the GPU),
/// from [`NcclBuffer::slice_mut`]: usable wherever a buffer is written (and
/// read), its uses tracked with the buffer's. It borrows the whole buffer,
/// since tracking is per buffer: there is no `split_at_mut`, and grouped
/// calls on several ranges of one buffer take one view each, in turn.
pub struct NcclViewMut<'a, T> {
    ptr: cu::CUdeviceptr,
    len: usize,
    uses: &'a mut Uses,
    _t: PhantomData<&'a mut [T]>,
}

impl<T> Clone for NcclView<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for NcclView<'_, T> {}

impl<T> std::fmt::Debug for NcclView<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclView")
            .field("ptr", &(self.ptr as *const ()))
            .field("len", &self.len)
            .finish()
    }
}

impl<T> std::fmt::Debug for NcclViewMut<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NcclViewMut")
            .field("ptr", &(self.ptr as *const ()))
            .field("len", &self.len)
            .finish()
    }
}

impl<'a, T> NcclView<'a, T> {
    /// The raw device address of the view's first element.
    pub fn as_raw(&self) -> cu::CUdeviceptr {
        self.ptr
    }
    /// A view of `range` within this view, or `None` when out of bounds.
    pub fn try_slice(&self, range: impl RangeBounds<usize>) -> Option<NcclView<'a, T>> {
        let r = bounds(&range, self.len)?;
        Some(view::<T>(self.ptr, r, self.uses))
    }
    /// A view of `range` within this view.
    ///
    /// # Panics
    /// When the range is out of bounds.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> NcclView<'a, T> {
        self.try_slice((range.start_bound(), range.end_bound()))
            .unwrap_or_else(|| out_of_bounds(&range, self.len))
    }
}

impl<T> NcclViewMut<'_, T> {
    /// The raw device address of the view's first element.
    pub fn as_raw(&self) -> cu::CUdeviceptr {
        self.ptr
    }
    /// A shared view of `range` within this view, or `None` when out of
    /// bounds.
    pub fn try_slice(&self, range: impl RangeBounds<usize>) -> Option<NcclView<'_, T>> {
        let r = bounds(&range, self.len)?;
        Some(view::<T>(self.ptr, r, &*self.uses))
    }
    /// A mutable view of `range` within this view, or `None` when out of
    /// bounds.
    pub fn try_slice_mut(&mut self, range: impl RangeBounds<usize>) -> Option<NcclViewMut<'_, T>> {
        let r = bounds(&range, self.len)?;
        Some(view_mut::<T>(self.ptr, r, &mut *self.uses))
    }
}

impl Home {
    /// Event `ev`, made now if it does not exist yet.
    fn event(&self, ev: Ev) -> std::result::Result<&CudaEvent, DriverError> {
        let slot = &self.events[ev.index()];
        if let Some(e) = slot.get() {
            return Ok(e);
        }
        let made = self.stream.context().new_event(None)?;
        // made under the buffer's lock or with `&mut`: nobody else sets it
        // meanwhile; if someone did, theirs is kept and ours destroyed
        let _ = slot.set(made);
        slot.get()
            .ok_or(DriverError(cu::cudaError_enum::CUDA_ERROR_UNKNOWN))
    }

    /// Makes one driver call of the tracker's.
    fn act(&self, a: Act, stream: &CudaStream) {
        match a {
            Act::RecordHome => self.record_home(),
            Act::HomeWaits(ev) => self.wait(&self.stream, ev),
            Act::Waits(ev) => self.wait(stream, ev),
        }
    }

    /// Records the home event on home; failing that, waits on the host for
    /// home, which covers its work as well.
    fn record_home(&self) {
        let r = self.event(Ev::Home).and_then(|e| e.record(&self.stream));
        if let Err(e) = r {
            let ctx = self.stream.context();
            // cudarc reports an error stored earlier instead of running a
            // call: the failed one took it, so this one runs
            let sync = self.stream.synchronize();
            log::warn!(
                "NcclBuffer: cannot record an event on its stream ({e}); waited for the stream instead"
            );
            ctx.record_err(Err::<(), _>(e));
            if let Err(e) = sync {
                log::error!("NcclBuffer: cannot wait for its stream either ({e})");
                ctx.record_err(Err::<(), _>(e));
            }
        }
    }

    /// `on` waits for event `ev`; failing that, the host waits for it. An
    /// event never made was never recorded: there is nothing to wait for.
    fn wait(&self, on: &CudaStream, ev: Ev) {
        let Some(e) = self.events[ev.index()].get() else {
            return;
        };
        if let Err(err) = on.wait(e) {
            let sync = e.synchronize();
            log::warn!(
                "NcclBuffer: a stream cannot wait for the buffer's event ({err}); waited on the host instead"
            );
            on.context().record_err(Err::<(), _>(err));
            if let Err(err) = sync {
                log::error!(
                    "NcclBuffer: cannot wait for the buffer's event on the host either ({err})"
                );
                on.context().record_err(Err::<(), _>(err));
            }
        }
    }

    /// The guard that does what the tracker asks once the use is enqueued.
    fn guard<'a>(&'a self, after: After, stream: &'a CudaStream) -> SyncOnDrop<'a> {
        match after {
            After::Nothing => SyncOnDrop::Record(None),
            After::Sync => SyncOnDrop::sync_stream(stream),
            After::Record(ev) => match self.event(ev) {
                Ok(e) => SyncOnDrop::Record(Some((e, stream))),
                Err(err) => {
                    log::warn!(
                        "NcclBuffer: cannot make an event ({err}); the use waits for its stream on the host"
                    );
                    stream.context().record_err(Err::<(), _>(err));
                    SyncOnDrop::sync_stream(stream)
                }
            },
        }
    }

    /// How the tracker sees a use on `stream`; `None` when the buffer's
    /// context does not track events (then nothing is).
    #[inline(always)]
    fn on(&self, stream: &CudaStream) -> Option<On> {
        let ctx = self.stream.context();
        if !ctx.is_managing_stream_synchronization() {
            return None;
        }
        let same_ctx = Arc::ptr_eq(stream.context(), ctx) || **stream.context() == **ctx;
        let handle = stream.cu_stream() as usize;
        if same_ctx && handle == self.stream.cu_stream() as usize && handle != PER_THREAD {
            return Some(On::Home);
        }
        Some(On::Foreign {
            key: (handle != PER_THREAD).then_some(handle),
            recordable: same_ctx && stream.context().is_managing_stream_synchronization(),
        })
    }
}

impl Uses {
    /// Acquires the memory for a read on `stream` (see the module docs).
    #[inline]
    fn read<'a>(&'a self, stream: &'a CudaStream) -> SyncOnDrop<'a> {
        let Some(on) = self.home.on(stream) else {
            if self.foreign.load(Ordering::Acquire)
                && self.home.stream.context().is_event_tracking()
            {
                // tracking stopped (the context's last stream of its own
                // was dropped) while a foreign write may be pending
                let mut t = self.track.lock().unwrap_or_else(PoisonError::into_inner);
                t.untracked_read(&mut |a| self.home.act(a, stream));
            }
            return SyncOnDrop::Record(None);
        };
        if on == On::Home && self.home_read_free.load(Ordering::Acquire) {
            // nothing to wait for or mark (rule 1): no lock, no driver call
            return SyncOnDrop::Record(None);
        }
        let mut t = self.track.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(on, On::Foreign { .. }) {
            self.foreign.store(true, Ordering::Release);
        }
        let after = t.read(on, &mut |a| self.home.act(a, stream));
        if on == On::Home {
            self.home_read_free
                .store(t.home_read_is_free(), Ordering::Release);
        }
        // built under the lock: a read sharing the slot finds the event made
        self.home.guard(after, stream)
    }

    /// Acquires the memory for a write on `stream`; `&mut`: nothing else is
    /// in flight, and no lock is taken.
    #[inline]
    fn write<'a>(&'a mut self, stream: &'a CudaStream) -> SyncOnDrop<'a> {
        let Uses {
            home,
            track,
            foreign,
            home_read_free,
        } = self;
        *home_read_free.get_mut() = false;
        let home: &'a Home = home;
        let Some(on) = home.on(stream) else {
            if *foreign.get_mut() && home.stream.context().is_event_tracking() {
                // tracking stopped while foreign uses may be pending: this
                // write waits for them all, and nothing is pending after it
                let t = track.get_mut().unwrap_or_else(PoisonError::into_inner);
                t.untracked_write(&mut |a| home.act(a, stream));
                *foreign.get_mut() = t.foreign_pending();
            }
            return SyncOnDrop::Record(None);
        };
        let t = track.get_mut().unwrap_or_else(PoisonError::into_inner);
        let after = t.write(on, &mut |a| home.act(a, stream));
        *foreign.get_mut() = t.foreign_pending();
        home.guard(after, stream)
    }

    /// Home waits for every tracked use on other streams, whatever the
    /// context's tracking says now; `false` if it cannot (the memory must
    /// then not be freed).
    fn join(&mut self, what: &str) -> bool {
        let Uses {
            home,
            track,
            home_read_free,
            ..
        } = self;
        *home_read_free.get_mut() = false;
        let t = track.get_mut().unwrap_or_else(PoisonError::into_inner);
        let mut ok = true;
        t.join(&mut |a| {
            if let Act::HomeWaits(ev) = a {
                if let Some(e) = home.events[ev.index()].get() {
                    if let Err(err) = home.stream.wait(e) {
                        log::error!(
                            "{what}: cannot order the buffer's uses on other streams ({err}); leaking it"
                        );
                        ok = false;
                    }
                }
            }
        });
        ok
    }
}

thread_local! {
    /// The deadline shared by the buffers freed inside [`one_wait`] on this
    /// thread, if any.
    static SHARED_DEADLINE: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Runs `f`, in which the buffers dropped on this thread wait for their
/// streams [`DROP_WAIT`] in all, not each (closing a communicator frees every
/// parked buffer at once): once that is spent, a buffer whose stream is still
/// busy is leaked at once. Nested calls share the outermost deadline.
pub(crate) fn one_wait<R>(f: impl FnOnce() -> R) -> R {
    let outer = SHARED_DEADLINE.with(|d| d.get());
    if outer.is_none() {
        SHARED_DEADLINE.with(|d| d.set(Some(std::time::Instant::now() + DROP_WAIT)));
    }
    /// Restores the outer state, also when `f` unwinds.
    struct Restore(Option<std::time::Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SHARED_DEADLINE.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(outer);
    f()
}

/// When a buffer dropped now must stop waiting for its stream: [`DROP_WAIT`]
/// from now, or the shared deadline of [`one_wait`] if that is sooner.
/// And whether it is the drop's own [`DROP_WAIT`] (no sooner shared
/// deadline cut it short).
fn drop_deadline() -> (std::time::Instant, bool) {
    let own = std::time::Instant::now() + DROP_WAIT;
    match SHARED_DEADLINE.with(|d| d.get()) {
        Some(shared) if shared < own => (shared, false),
        _ => (own, true),
    }
}

/// Waits on the host until `stream` is idle, at most until
/// [`drop_deadline`]. `false` when it is still busy then (a collective
/// hanging on a dead peer, say): the caller must not free the memory.
fn quiesce(stream: &CudaStream, what: &str) -> bool {
    // a capturing stream answers the query with an error, not with whether
    // its work is done
    match crate::mem::capturing(stream) {
        Ok(false) => {}
        Ok(true) => {
            log::error!("{what}: the buffer's stream is capturing a CUDA graph; leaking it");
            return false;
        }
        Err(e) => {
            log::error!(
                "{what}: cannot tell whether the buffer's stream captures ({e}); leaking it"
            );
            return false;
        }
    }
    let key = stuck::key(stream);
    // a stream found stuck a moment ago is asked once, not waited for again:
    // buffers dropped one after another on it do not each wait DROP_WAIT.
    // Only a full wait of the drop's own marks a stream stuck, and asking
    // once does not renew the mark (it lapses after a minute).
    let (deadline, full) = if stuck::is_known(key) {
        (std::time::Instant::now(), false)
    } else {
        drop_deadline()
    };
    match idle_by(stream, deadline) {
        Ok(true) => {
            stuck::forget(key);
            true
        }
        Ok(false) => {
            if full {
                stuck::note(key);
            }
            log::error!("{what}: the buffer's stream is still busy past its deadline; leaking it");
            false
        }
        // only success says the work is done (a broken context answers
        // every query with its error): leak rather than free under a use
        Err(e) => {
            log::error!(
                "{what}: cannot tell whether the buffer's stream is idle ({e}); leaking it"
            );
            false
        }
    }
}

/// The streams that a drop recently found still busy past its deadline
/// (a collective hanging on a dead peer, say): a later drop on one of them
/// asks once whether it is idle instead of waiting [`DROP_WAIT`] again.
/// Knowing a stream wrongly (a handle reused after its stream was
/// destroyed) only makes a drop leak sooner; it never frees memory early.
mod stuck {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use cudarc::driver::CudaStream;

    /// How long a stream stays known as stuck.
    const REMEMBER: Duration = Duration::from_secs(60);
    /// How many streams are remembered (the oldest goes first).
    const MAX: usize = 16;

    /// A stream, by its context's and its own handle; `None` for the
    /// default streams, whose handles name a different stream per thread
    /// or context.
    pub(super) type Key = Option<(usize, usize)>;

    static KNOWN: Mutex<Vec<((usize, usize), Instant)>> = Mutex::new(Vec::new());

    fn known() -> std::sync::MutexGuard<'static, Vec<((usize, usize), Instant)>> {
        KNOWN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn key(stream: &CudaStream) -> Key {
        let s = stream.cu_stream() as usize;
        (s > 2).then(|| (stream.context().cu_ctx() as usize, s))
    }

    /// Whether `key` was found stuck within [`REMEMBER`].
    pub(super) fn is_known(key: Key) -> bool {
        let Some(k) = key else { return false };
        let now = Instant::now();
        let mut v = known();
        v.retain(|(_, at)| now.duration_since(*at) < REMEMBER);
        v.iter().any(|(x, _)| *x == k)
    }

    /// `key` was found stuck now.
    pub(super) fn note(key: Key) {
        let Some(k) = key else { return };
        let mut v = known();
        v.retain(|(x, _)| *x != k);
        if v.len() >= MAX {
            v.remove(0);
        }
        v.push((k, Instant::now()));
    }

    /// `key` was found idle.
    pub(super) fn forget(key: Key) {
        let Some(k) = key else { return };
        known().retain(|(x, _)| *x != k);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn streams_are_remembered_bounded_and_forgotten() {
            // handles no real context uses, so that parallel tests do not meet them
            let k = |i: usize| Some((0xdead_0000, 0xbeef_0000 + i));
            assert!(!is_known(k(0)));
            note(k(0));
            assert!(is_known(k(0)));
            forget(k(0));
            assert!(!is_known(k(0)));
            // the default streams are never remembered
            note(None);
            assert!(!is_known(None));
            // at most MAX: the oldest goes first
            for i in 0..=MAX {
                note(k(i));
            }
            assert!(!is_known(k(0)));
            assert!(is_known(k(MAX)));
            for i in 0..=MAX {
                forget(k(i));
            }
        }
    }
}

/// Polls `stream` until it is idle (`true`) or `deadline` passes
/// (`false`); CUDA's error for an answer other than done or not ready.
fn idle_by(
    stream: &CudaStream,
    deadline: std::time::Instant,
) -> std::result::Result<bool, DriverError> {
    loop {
        // SAFETY: the stream is alive (borrowed).
        match unsafe { cu::cuStreamQuery(stream.cu_stream()) } {
            cu::CUresult::CUDA_SUCCESS => return Ok(true),
            cu::CUresult::CUDA_ERROR_NOT_READY if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            cu::CUresult::CUDA_ERROR_NOT_READY => return Ok(false),
            e => return Err(DriverError(e)),
        }
    }
}

impl<T> Drop for NcclBuffer<T> {
    fn drop(&mut self) {
        const WHAT: &str = "NcclBuffer::drop";
        let ctx = self.uses.home.stream.context().clone();
        // an error cudarc stored for the context would fail the first call
        // below instead of running it: take it now, give it back at the end
        let stored = ctx.check_err();
        // ncclMemFree may run on another thread than the allocation did
        let _ = ctx.bind_to_thread();
        // Work queued on any stream may still use the buffer: home waits for
        // the uses elsewhere, then the host for home, never without bound (a
        // collective may hang on a dead peer); past the limit the memory is
        // leaked rather than freed under a kernel.
        match self.memory {
            Memory::Nccl => {
                if self.uses.join(WHAT) && quiesce(&self.uses.home.stream, WHAT) {
                    if is_vmm(self.ptr) {
                        // SAFETY: ptr came from ncclMemAlloc and is freed
                        // once, after every use of it has finished (checked
                        // above).
                        unsafe { nccl_mem_free(self.ptr) };
                    } else {
                        free_elsewhere(ctx.clone(), self.ptr);
                    }
                }
            }
            Memory::Stream => self.free_on_home(WHAT),
        }
        ctx.record_err(stored);
    }
}

/// `ncclMemFree(ptr)`, a failure logged.
///
/// # Safety
/// `ptr` came from `ncclMemAlloc`, is freed once, and nothing uses it any more.
unsafe fn nccl_mem_free(ptr: cu::CUdeviceptr) {
    // SAFETY: as the caller promises.
    let r = unsafe {
        ffi!(
            "ncclMemFree",
            ncclMemFree(ptr as usize as *mut core::ffi::c_void)
        )
    };
    if r != sys::ncclResult_t::ncclSuccess {
        log::error!("nccl: ncclMemFree failed with code {}", r.0);
    }
}

/// Whether `ptr` is memory of CUDA's virtual memory management (what
/// `ncclMemAlloc` makes where NCCL uses cuMem, its default): freed by
/// unmapping, which waits for nothing. Otherwise `ncclMemFree` is
/// `cudaFree`, which waits for the whole device (allocator.cc).
fn is_vmm(ptr: cu::CUdeviceptr) -> bool {
    let mut h: cu::CUmemGenericAllocationHandle = 0;
    // SAFETY: an out-pointer and an address; the driver only looks the
    // address up (an error for memory it did not map with cuMemMap).
    let r = unsafe { cu::cuMemRetainAllocationHandle(&mut h, ptr as usize as *mut _) };
    if r != cu::CUresult::CUDA_SUCCESS {
        return false;
    }
    // SAFETY: gives back the reference just taken; the mapping keeps its own.
    let _ = unsafe { cu::cuMemRelease(h) };
    true
}

/// Frees memory of `ncclMemAlloc` that is not cuMem's on one thread of the
/// process's own (`nccl-mem-free`), in order: `cudaFree` there waits for
/// every stream of the device, and a collective stuck on a dead peer, on
/// any communicator, would keep a drop waiting forever. The memory is
/// freed once the device is idle; while it is not, it stays allocated (an
/// allocation right after the drop may find less memory free). During
/// `cudaFree`'s own wait CUDA holds up the process's other CUDA calls (seen
/// on the H100, with a collective stuck on a missing peer), so the thread
/// first waits for the device with `cuCtxSynchronize`, meant to leave the
/// others' calls going (not yet run on a GPU): abort a communicator that
/// may be stuck all the same (its abort flag, set first, stops its
/// kernels). The process's exit waits for the frees queued, at most as long
/// as for an abort left to its thread. If no thread can be made, or in a
/// child of `fork` (which has the queue but not the thread), the memory is
/// leaked (logged).
fn free_elsewhere(ctx: Arc<CudaContext>, ptr: cu::CUdeviceptr) {
    type Job = (Arc<CudaContext>, cu::CUdeviceptr);
    /// The queue, and the process that made its thread.
    type Freer = (Mutex<std::sync::mpsc::Sender<Job>>, u32);
    static FREER: OnceLock<Option<Freer>> = OnceLock::new();
    let freer = FREER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("nccl-mem-free".into())
            .spawn(move || {
                for (ctx, ptr) in rx {
                    let _ = ctx.bind_to_thread();
                    // SAFETY: no arguments; waits for the current context,
                    // bound above.
                    let _ = unsafe { cu::cuCtxSynchronize() };
                    // SAFETY: each address comes once, from a buffer's drop
                    // after every use of it finished (see there).
                    unsafe { nccl_mem_free(ptr) };
                    drop(ctx);
                    crate::comm::close::in_flight::returned();
                }
            });
        match spawned {
            Ok(_) => Some((Mutex::new(tx), std::process::id())),
            Err(e) => {
                log::error!("no thread to free NCCL memory on ({e})");
                None
            }
        }
    });
    // the process's exit waits for the free, bounded, as for an abort left
    // to its thread (a cudaFree still running while CUDA's runtime is torn
    // down would crash the exit)
    crate::comm::close::in_flight::left();
    let sent = freer.as_ref().is_some_and(|(tx, pid)| {
        *pid == std::process::id()
            && tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .send((ctx, ptr))
                .is_ok()
    });
    if !sent {
        crate::comm::close::in_flight::returned();
        log::error!("NcclBuffer::drop: memory at {ptr:#x} is leaked (no thread to free it on)");
    }
}

impl<T> NcclBuffer<T> {
    /// Frees pool memory on home, after every use (rule 7 of the module's
    /// source), or leaks it (logged) where that cannot be ordered: a failed
    /// join, or home capturing a graph (a free there would have to be of the
    /// graph's own memory, and would end the capture).
    fn free_on_home(&mut self, what: &str) {
        let home = self.uses.home.stream.clone();
        match crate::mem::capturing(&home) {
            Ok(false) => {}
            Ok(true) => {
                log::error!("{what}: its stream is capturing a CUDA graph; leaking it");
                return;
            }
            Err(e) => {
                log::error!("{what}: cannot tell whether its stream captures ({e}); leaking it");
                return;
            }
        }
        if !self.uses.join(what) {
            return;
        }
        // SAFETY: ptr came from cuMemAllocAsync, or is a taken-over slice's,
        // which cudarc's drop would free with cuMemFreeAsync on this very
        // stream (its context has async allocation); it is freed once; home
        // is alive (held) and, after the joins, ordered after every use of
        // the memory, so the free runs after them on the GPU.
        if let Err(e) = unsafe { cudarc::driver::result::free_async(self.ptr, home.cu_stream()) } {
            log::error!("{what}: cuMemFreeAsync failed ({e}); the memory is leaked");
        }
    }
}

impl<T> DeviceSlice<T> for NcclBuffer<T> {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.uses.home.stream
    }
}

impl<T> DevicePtr<T> for NcclBuffer<T> {
    /// On the home stream, nothing to wait or record (unless uses on other
    /// streams are pending); elsewhere, ordered after every write (see the
    /// module docs).
    #[inline]
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, self.uses.read(stream))
    }
}

impl<T> DevicePtrMut<T> for NcclBuffer<T> {
    /// Ordered after every use; on the home stream, nothing to record.
    #[inline]
    fn device_ptr_mut<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, self.uses.write(stream))
    }
}

impl<T> DeviceSlice<T> for NcclView<'_, T> {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.uses.home.stream
    }
}

impl<T> DevicePtr<T> for NcclView<'_, T> {
    #[inline]
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, self.uses.read(stream))
    }
}

impl<T> DeviceSlice<T> for NcclViewMut<'_, T> {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.uses.home.stream
    }
}

impl<T> DevicePtr<T> for NcclViewMut<'_, T> {
    #[inline]
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, self.uses.read(stream))
    }
}

impl<T> DevicePtrMut<T> for NcclViewMut<'_, T> {
    #[inline]
    fn device_ptr_mut<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, self.uses.write(stream))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_freed_together_share_one_wait() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        // alone: DROP_WAIT from now
        let (own, full) = super::drop_deadline();
        assert!(own >= t0 + super::DROP_WAIT && full);
        let (first, later, nested) = super::one_wait(|| {
            let first = super::drop_deadline().0;
            std::thread::sleep(Duration::from_millis(20));
            // a later buffer in the same batch gets no fresh DROP_WAIT (and
            // a stream it finds busy then is not taken for stuck)
            let later = super::drop_deadline();
            let nested = super::one_wait(super::drop_deadline);
            (first, later, nested)
        });
        assert_eq!((first, false), later);
        assert_eq!((first, false), nested);
        assert!(first <= Instant::now() + super::DROP_WAIT - Duration::from_millis(20));
        // after the batch (also after a panic inside one): each its own again
        let caught = std::panic::catch_unwind(|| super::one_wait(|| panic!("inside")));
        assert!(caught.is_err());
        std::thread::sleep(Duration::from_millis(5));
        assert!(super::drop_deadline().0 > first);
    }

    use super::*;

    #[test]
    fn ranges_as_slices_take_them() {
        assert_eq!(bounds(&(..), 10), Some(0..10));
        assert_eq!(bounds(&(2..5), 10), Some(2..5));
        assert_eq!(bounds(&(2..=5), 10), Some(2..6));
        assert_eq!(bounds(&(..=9), 10), Some(0..10));
        assert_eq!(bounds(&(10..), 10), Some(10..10)); // empty, at the end
        assert_eq!(bounds(&(3..3), 10), Some(3..3));
        assert_eq!(bounds(&(..=10), 10), None);
        assert_eq!(bounds(&(11..), 10), None);
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = 5..2;
        assert_eq!(bounds(&backwards, 10), None);
        assert_eq!(bounds(&(..=usize::MAX), 10), None);
        assert_eq!(
            bounds(&(Bound::Excluded(usize::MAX), Bound::Unbounded), 10),
            None
        );
        assert_eq!(
            bounds(&(Bound::Excluded(1), Bound::Excluded(4)), 10),
            Some(2..4)
        );
        assert_eq!(offset::<f32>(0x1000, 3), 0x100c);
        assert_eq!(offset::<u8>(0x1000, 0), 0x1000);
    }

    #[test]
    #[should_panic(expected = "out of bounds for a buffer of 4 elements")]
    fn out_of_bounds_panics_like_a_slice() {
        out_of_bounds(&(2..7), 4);
    }
}
