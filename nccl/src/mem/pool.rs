//! A pool of symmetric windows ([`SymmetricPool`], NCCL 2.27+): buffers from
//! `ncclMemAlloc`, registered once with a communicator as windows
//! (`NCCL_WIN_COLL_SYMMETRIC`, which enables NCCL's symmetric-memory
//! kernels for small messages) and reused.
//!
//! Why a pool: registering a window is collective (every rank takes part,
//! through NCCL's bootstrap), costs a few milliseconds, and cannot happen
//! while a stream captures a CUDA graph. A pool registers each window once,
//! hands it out again after it is dropped, and serves allocations made
//! during a capture from what it holds ([`SymmetricPool::reserve`] before
//! the capture) without registering anything there.
//!
//! Determinism: a buffer is served from the free list of its size class,
//! last freed first, whatever the stream. So ranks that make the same
//! sequence of `alloc`, `reserve` and drops on their pools get the same
//! windows at each step (the same [`SymmetricBuffer::ordinal`]) and make
//! the same registrations, as the collective registration and NCCL's
//! symmetric kernels (the same window and offset on every rank) need.

use std::cell::{RefCell, RefMut};
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop, sys as cu};

use crate::base::dtype::NcclType;
use crate::base::error::{Error, Result};
use crate::base::runtime::require_api;
use crate::comm::Comm;
use crate::mem::buffer::{NcclBuffer, NcclView, NcclViewMut, bounds, out_of_bounds};
use crate::mem::registration::Window;

/// The smallest size class: NCCL's window alignment
/// (`NCCL_WIN_REQUIRED_ALIGNMENT`), 4 KiB.
const MIN_CLASS: usize = 4096;

/// The size class of a request of `bytes` bytes: the next power of two, at
/// least [`MIN_CLASS`]; `None` when it overflows.
fn size_class(bytes: usize) -> Option<usize> {
    bytes.max(MIN_CLASS).checked_next_power_of_two()
}

/// A window of the pool and its registration number.
struct Slot {
    win: Window<u8, NcclBuffer<u8>>,
    ordinal: usize,
}

/// What a [`SymmetricPool`] has done, for tests and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Windows registered (`ncclCommWindowRegister` calls that succeeded).
    pub registrations: usize,
    /// Of those, how many NCCL answered without a window (no symmetric
    /// memory support): plain `ncclMemAlloc` memory.
    pub unmapped: usize,
    /// Allocations served from the free list, without registering.
    pub reuses: usize,
    /// Bytes of every window the pool holds (handed out and free).
    pub bytes_held: usize,
    /// Buffers handed out now.
    pub in_use: usize,
    /// Windows free now.
    pub free: usize,
}

/// The pool's bookkeeping, over any kind of slot (windows here, plain
/// numbers in the tests): free slots by size class, each a stack (last
/// freed first), and the counts.
struct Shelf<S> {
    free: BTreeMap<usize, Vec<S>>,
    stats: PoolStats,
}

impl<S> Default for Shelf<S> {
    fn default() -> Self {
        Shelf {
            free: BTreeMap::new(),
            stats: PoolStats::default(),
        }
    }
}

impl<S> Shelf<S> {
    /// How many slots of `class` are free.
    fn free_in(&self, class: usize) -> usize {
        self.free.get(&class).map_or(0, Vec::len)
    }

    /// The last freed slot of `class`, now lent out.
    fn take(&mut self, class: usize) -> Option<S> {
        let slot = self.free.get_mut(&class)?.pop()?;
        self.stats.free -= 1;
        self.stats.reuses += 1;
        self.stats.in_use += 1;
        Some(slot)
    }

    /// Counts a new registration of `class` bytes; its ordinal.
    fn registered(&mut self, class: usize, mapped: bool) -> usize {
        let ordinal = self.stats.registrations;
        self.stats.registrations += 1;
        self.stats.unmapped += usize::from(!mapped);
        self.stats.bytes_held += class;
        ordinal
    }

    /// A new slot, lent out at once.
    fn lend_new(&mut self) {
        self.stats.in_use += 1;
    }

    /// A new slot, put on the shelf (reserved).
    fn shelve_new(&mut self, class: usize, slot: S) {
        self.stats.free += 1;
        self.free.entry(class).or_default().push(slot);
    }

    /// A lent slot, back.
    fn give_back(&mut self, class: usize, slot: S) {
        self.stats.in_use -= 1;
        self.shelve_new(class, slot);
    }
}

type Inner = Shelf<Slot>;

/// A pool of symmetric windows of one communicator (NCCL 2.27+; see the
/// module's source for the rules). [`alloc`](SymmetricPool::alloc) returns
/// a [`SymmetricBuffer`], a window usable in collectives like any buffer;
/// dropped, it comes back to the pool, still registered, for the next
/// `alloc` of its size class (powers of two from 4 KiB). Dropping the pool
/// ends its windows through the communicator's registry, as a dropped
/// [`Window`] does: parked, then deregistered by the
/// communicator's thread once their buffers are idle, at its next window
/// registration or device-communicator creation (every rank releases its
/// windows at the same points: see [`Comm::window_register`]), or at
/// close; it never calls NCCL.
/// (Memory NCCL made no window for is freed there, as an `NcclBuffer` is:
/// after the work queued on it, waited for at most
/// [`DROP_WAIT`](crate::DROP_WAIT).)
///
/// A pool and its buffers stay on the thread of their communicator (which
/// is not `Sync`): they are neither `Send` nor `Sync`. That, with the
/// borrow, keeps a pooled buffer out of every registration call, even of a
/// pool and communicator leaked for `'static`.
///
/// The pool borrows its communicator and its buffers borrow the pool, so a
/// pooled buffer can never outlive its window's communicator, and, not
/// being `'static` (nor `Send`), can never be registered again, with this
/// communicator or another ([`Comm::register`], [`Comm::window_register`]
/// take owned `Send + 'static` buffers): one registration per buffer, which
/// the compiler enforces.
///
/// Where NCCL makes no window (a communicator without symmetric memory
/// support: [`Registration::is_mapped`](crate::Registration::is_mapped) is
/// `false`), the pool still works, as a cache of plain `ncclMemAlloc`
/// memory, and says so: [`is_symmetric`](SymmetricPool::is_symmetric),
/// [`PoolStats::unmapped`].
///
/// CUDA graphs: [`alloc`](SymmetricPool::alloc) checks whether its stream
/// captures and then never registers. Reserve what the capture needs with
/// [`reserve`](SymmetricPool::reserve) on the capturing stream (a buffer's
/// uses on its own stream record no event, so they can be captured; a use
/// on another stream would wait for an event outside the capture, which
/// CUDA refuses: during a capture, use pooled buffers on their home stream
/// only). A capture on another *non-blocking* stream (as cudarc
/// makes them), in CUDA's global mode (its default), cannot be seen from
/// `stream`: registering then invalidates that capture, as any allocation
/// does; allocate on the capturing stream. (A capture on a blocking stream
/// is seen through the legacy default stream, and counts.)
pub struct SymmetricPool<'c> {
    comm: &'c Comm,
    inner: RefCell<Inner>,
}

impl std::fmt::Debug for SymmetricPool<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymmetricPool")
            .field("rank", &self.comm.rank())
            .field("stats", &self.stats())
            .finish()
    }
}

impl<'c> SymmetricPool<'c> {
    /// An empty pool of `comm`'s windows; nothing is registered yet.
    ///
    /// # Errors
    /// `Unsupported` when the libnccl in use has no windows
    /// (`ncclCommWindowRegister`, NCCL 2.27) or no `ncclMemAlloc`.
    ///
    /// # Safety
    /// The promise of [`Comm::window_register`], for every window the pool
    /// registers: every rank of `comm` makes a pool of it and the same
    /// sequence of [`alloc`](SymmetricPool::alloc),
    /// [`reserve`](SymmetricPool::reserve) and drops of its buffers, with
    /// the same sizes (registration is collective: a rank that registers
    /// when another reuses hangs both), and every call given a pooled
    /// buffer (or a part of one) is given, on every rank, the buffer of the
    /// same step, at the same offset: peers access it directly with their
    /// own offsets and counts.
    pub unsafe fn new(comm: &'c Comm) -> Result<SymmetricPool<'c>> {
        require_api("ncclMemAlloc")?;
        require_api("ncclCommWindowRegister")?;
        comm.live("SymmetricPool::new")?;
        Ok(SymmetricPool {
            comm,
            inner: RefCell::default(),
        })
    }

    /// The communicator whose windows these are.
    pub fn comm(&self) -> &'c Comm {
        self.comm
    }

    /// `len` elements of `T` from the pool: a free window of the size
    /// class, or, when none is free, a new one, allocated with
    /// `ncclMemAlloc` on `stream` (its home stream, see
    /// [`NcclBuffer`]) and registered as a symmetric
    /// window (collective: see [`SymmetricPool::new`]). A new buffer is
    /// zeroed; a reused one holds what its last user left, and keeps the
    /// home stream it was made on (`DeviceSlice::stream`): uses on another
    /// stream are ordered with events, as for any `NcclBuffer`.
    ///
    /// While `stream` captures a CUDA graph (or a blocking stream does,
    /// which the legacy default stream reports), nothing is registered: a
    /// free window is served, or the call fails with [`Error::Capturing`]
    /// and the capture goes on untouched.
    ///
    /// # Errors
    /// `InvalidArgument` for `len == 0`, a size that overflows, or a stream
    /// of another GPU; `Capturing`; `InGroup` when it would register inside
    /// a group; CUDA's error; NCCL's error (registration).
    pub fn alloc<T: NcclType>(
        &self,
        len: usize,
        stream: &Arc<CudaStream>,
    ) -> Result<SymmetricBuffer<'_, T>> {
        const OP: &str = "SymmetricPool::alloc";
        let class = self.class_of::<T>(OP, len, stream)?;
        if let Some(slot) = self.take_free(class) {
            return Ok(self.hand_out(slot, len, class));
        }
        if super::capturing(stream)? {
            return Err(Error::Capturing {
                op: OP,
                bytes: class,
            });
        }
        let slot = self.register(class, stream)?;
        self.shelf().lend_new();
        Ok(self.hand_out(slot, len, class))
    }

    /// Makes sure `count` windows of the size class of `len` elements of
    /// `T` are free, registering those missing on `stream` (collective, in
    /// the same order on every rank). Call it before a capture whose
    /// allocations it must serve, on the capturing stream. Returns how many
    /// it registered.
    ///
    /// # Errors
    /// As [`alloc`](SymmetricPool::alloc), and `Capturing` while `stream`
    /// captures and a window is missing.
    pub fn reserve<T: NcclType>(
        &self,
        len: usize,
        count: usize,
        stream: &Arc<CudaStream>,
    ) -> Result<usize> {
        const OP: &str = "SymmetricPool::reserve";
        let class = self.class_of::<T>(OP, len, stream)?;
        let have = self.shelf().free_in(class);
        let missing = count.saturating_sub(have);
        if missing > 0 && super::capturing(stream)? {
            return Err(Error::Capturing {
                op: OP,
                bytes: class,
            });
        }
        for _ in 0..missing {
            let slot = self.register(class, stream)?;
            self.shelf().shelve_new(class, slot);
        }
        Ok(missing)
    }

    /// What the pool has done and holds.
    pub fn stats(&self) -> PoolStats {
        self.shelf().stats
    }

    /// The bookkeeping, borrowed for a moment: never across a call of NCCL
    /// or CUDA, nor a buffer's drop, so this borrow never fails.
    fn shelf(&self) -> RefMut<'_, Inner> {
        self.inner.borrow_mut()
    }

    /// Whether the pool's windows are symmetric windows NCCL made: `None`
    /// before the first registration, `Some(false)` when NCCL made none
    /// (no symmetric memory support: the buffers are plain `ncclMemAlloc`
    /// memory, and NCCL's symmetric kernels are not used). NCCL 2.27 and
    /// 2.28 hand back a handle even without symmetric memory support (2.28:
    /// a plain registration's): `Some(true)` there says only that.
    pub fn is_symmetric(&self) -> Option<bool> {
        let s = self.stats();
        (s.registrations > 0).then_some(s.unmapped == 0)
    }

    /// The size class of `len` elements of `T`, checked.
    fn class_of<T>(&self, op: &'static str, len: usize, stream: &CudaStream) -> Result<usize> {
        if len == 0 {
            return Err(Error::invalid(op, "len", "at least 1", 0));
        }
        let class = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(size_class)
            .ok_or_else(|| Error::invalid(op, "len", "a size in bytes that fits usize", len))?;
        let gpu = stream.context().ordinal();
        if gpu != self.comm.device() {
            return Err(Error::invalid(
                op,
                "stream",
                format!("a stream of GPU {}", self.comm.device()),
                format!("a stream of GPU {gpu}"),
            ));
        }
        Ok(class)
    }

    /// The last freed window of `class`, if any.
    fn take_free(&self, class: usize) -> Option<Slot> {
        self.shelf().take(class)
    }

    /// `slot` as a buffer of `len` elements (counted in use by the caller).
    fn hand_out<T>(&self, slot: Slot, len: usize, class: usize) -> SymmetricBuffer<'_, T> {
        SymmetricBuffer {
            slot: Some(slot),
            len,
            class,
            inner: &self.inner,
            _t: PhantomData,
        }
    }

    /// A new window of `class` bytes, home on `stream`.
    fn register(&self, class: usize, stream: &Arc<CudaStream>) -> Result<Slot> {
        let buf = NcclBuffer::<u8>::alloc_zeros(stream, class)?;
        // SAFETY: the promise of `SymmetricPool::new`, made by the caller for
        // every window of this pool: every rank registers this one at the
        // same step of the same sequence, with the same size (the class is a
        // function of the requested size), and uses it at the same offsets.
        let win = unsafe { self.comm.window_register(buf, true) }?;
        let ordinal = self.shelf().registered(class, win.is_mapped());
        Ok(Slot { win, ordinal })
    }
}

impl Drop for SymmetricPool<'_> {
    /// Drops the free windows, which park with the communicator (its
    /// thread deregisters them); no buffer is out (they borrow the pool).
    /// Those NCCL made no window for are freed here, waiting for their
    /// streams [`DROP_WAIT`](crate::DROP_WAIT) in all, not each.
    fn drop(&mut self) {
        let free = std::mem::take(&mut self.inner.get_mut().free);
        crate::mem::buffer::one_wait(|| drop(free));
    }
}

/// A buffer of a [`SymmetricPool`]: `len` elements of `T` at the start of
/// one of the pool's windows, usable wherever a buffer is (cudarc's
/// `DevicePtr`/`DevicePtrMut`: every collective), with views of its ranges
/// ([`slice`](SymmetricBuffer::slice), [`slice_mut`](SymmetricBuffer::slice_mut))
/// tracked as an [`NcclBuffer`]'s are. Dropped, it goes
/// back to its pool, still registered.
pub struct SymmetricBuffer<'p, T> {
    /// `None` only while it goes back.
    slot: Option<Slot>,
    len: usize,
    class: usize,
    /// A `RefCell`'s: it makes the buffer neither `Send` nor `Sync`, which
    /// keeps it out of registration calls (they take `Send` buffers) even
    /// when the pool is `'static`; keep it so.
    inner: &'p RefCell<Inner>,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for SymmetricBuffer<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymmetricBuffer")
            .field("ordinal", &self.ordinal())
            .field("len", &self.len)
            .field("class", &self.class)
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

impl<T> SymmetricBuffer<'_, T> {
    fn slot(&self) -> &Slot {
        self.slot
            .as_ref()
            .expect("a live pooled buffer holds its slot")
    }

    fn bytes(&self) -> &NcclBuffer<u8> {
        self.slot().win.get()
    }

    /// Its window (one-sided operations read its handle).
    #[cfg_attr(not(nccl_fn = "ncclPutSignal"), allow(dead_code))]
    pub(crate) fn window(&self) -> &Window<u8, NcclBuffer<u8>> {
        &self.slot().win
    }

    /// The pool's registration number of its window (0 for the first the
    /// pool registered): on every rank that follows the pool's rules, the
    /// same at each step.
    pub fn ordinal(&self) -> usize {
        self.slot().ordinal
    }

    /// Whether NCCL made a window for it (see
    /// [`Registration::is_mapped`](crate::Registration::is_mapped)).
    pub fn is_mapped(&self) -> bool {
        self.slot().win.is_mapped()
    }

    /// The window's size in bytes (its size class, at least
    /// `len * size_of::<T>()`).
    pub fn capacity_bytes(&self) -> usize {
        self.class
    }

    /// The raw device address.
    pub fn as_raw(&self) -> cu::CUdeviceptr {
        self.bytes().as_raw()
    }

    /// A view of the elements in `range`, or `None` when it is out of
    /// bounds.
    pub fn try_slice(&self, range: impl RangeBounds<usize>) -> Option<NcclView<'_, T>> {
        let r = bounds(&range, self.len)?;
        self.bytes().typed(r)
    }

    /// A view of the elements in `range`.
    ///
    /// # Panics
    /// When the range is out of bounds, as slicing `[T]` does.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> NcclView<'_, T> {
        self.try_slice((range.start_bound(), range.end_bound()))
            .unwrap_or_else(|| out_of_bounds(&range, self.len))
    }

    /// A mutable view of the elements in `range`, or `None` when it is out
    /// of bounds. It borrows the whole buffer (tracking is per buffer).
    pub fn try_slice_mut(&mut self, range: impl RangeBounds<usize>) -> Option<NcclViewMut<'_, T>> {
        let r = bounds(&range, self.len)?;
        self.slot
            .as_mut()
            .expect("a live pooled buffer holds its slot")
            .win
            .buf_mut()
            .typed_mut(r)
    }

    /// A mutable view of the elements in `range`.
    ///
    /// # Panics
    /// When the range is out of bounds.
    pub fn slice_mut(&mut self, range: impl RangeBounds<usize>) -> NcclViewMut<'_, T> {
        let len = self.len;
        self.try_slice_mut((range.start_bound(), range.end_bound()))
            .unwrap_or_else(|| out_of_bounds(&range, len))
    }
}

impl<T> Drop for SymmetricBuffer<'_, T> {
    /// Back to the pool's free list, still registered; never calls NCCL or
    /// CUDA. (The next user's uses are ordered after this one's by the
    /// buffer's tracking, as for any `NcclBuffer`.)
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else {
            return;
        };
        // the pool's state is borrowed only for short bookkeeping (see
        // `SymmetricPool::shelf`); were it borrowed, the window would drop
        // and park with its communicator instead of coming back
        if let Ok(mut inner) = self.inner.try_borrow_mut() {
            inner.give_back(self.class, slot);
        }
    }
}

impl<T> DeviceSlice<T> for SymmetricBuffer<'_, T> {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.bytes().stream()
    }
}

impl<T> DevicePtr<T> for SymmetricBuffer<'_, T> {
    #[inline]
    fn device_ptr<'a>(&'a self, stream: &'a CudaStream) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        // tracking is per buffer, whatever the element type
        DevicePtr::<u8>::device_ptr(self.bytes(), stream)
    }
}

impl<T> DevicePtrMut<T> for SymmetricBuffer<'_, T> {
    #[inline]
    fn device_ptr_mut<'a>(
        &'a mut self,
        stream: &'a CudaStream,
    ) -> (cu::CUdeviceptr, SyncOnDrop<'a>) {
        let slot = self
            .slot
            .as_mut()
            .expect("a live pooled buffer holds its slot");
        DevicePtrMut::<u8>::device_ptr_mut(slot.win.buf_mut(), stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_classes_are_powers_of_two_from_the_alignment() {
        assert_eq!(size_class(1), Some(4096));
        assert_eq!(size_class(4096), Some(4096));
        assert_eq!(size_class(4097), Some(8192));
        assert_eq!(size_class(3 << 20), Some(4 << 20));
        assert_eq!(size_class(usize::MAX), None);
    }

    /// One rank's pool, with numbers for windows: `alloc` registers (the
    /// next ordinal) only when nothing of the class is free.
    fn alloc(shelf: &mut Shelf<usize>, bytes: usize) -> usize {
        let class = size_class(bytes).unwrap();
        match shelf.take(class) {
            Some(o) => o,
            None => {
                let o = shelf.registered(class, true);
                shelf.lend_new();
                o
            }
        }
    }

    #[test]
    fn the_same_sequence_gives_the_same_windows_and_registers_once() {
        // a program's allocations and frees, as every rank makes them
        let run = |shelf: &mut Shelf<usize>| -> Vec<usize> {
            let mut seen = Vec::new();
            let mut live: Vec<(usize, usize)> = Vec::new(); // (bytes, ordinal)
            for step in 0..200usize {
                let bytes = [100, 4096, 5000, 1 << 20][step * 7 % 4];
                let o = alloc(shelf, bytes);
                seen.push(o);
                live.push((bytes, o));
                if step % 3 != 0 {
                    // free the one allocated `step % 5` allocations ago
                    let k = live.len().saturating_sub(1 + step % 5);
                    let (b, o) = live.remove(k);
                    shelf.give_back(size_class(b).unwrap(), o);
                }
            }
            seen
        };
        let (mut a, mut b) = (Shelf::default(), Shelf::default());
        let (sa, sb) = (run(&mut a), run(&mut b));
        assert_eq!(sa, sb, "two ranks, the same windows at every step");
        assert_eq!(a.stats, b.stats);
        let s = a.stats;
        assert_eq!(s.registrations + s.reuses, 200, "{s:?}");
        assert_eq!(s.in_use + s.free, s.registrations, "{s:?}");
        // 200 allocations, at most ~70 live at once: most are reuses
        assert!(s.reuses > 100 && s.registrations < 100, "{s:?}");
        // ordinals are the registrations, each made once
        assert_eq!(*sa.iter().max().unwrap() + 1, s.registrations);
    }

    #[test]
    fn reuse_is_last_freed_first_within_a_class_only() {
        let mut shelf = Shelf::default();
        let (x, y) = (alloc(&mut shelf, 4096), alloc(&mut shelf, 4096));
        let z = alloc(&mut shelf, 8192);
        assert_eq!((x, y, z), (0, 1, 2));
        shelf.give_back(4096, x);
        shelf.give_back(4096, y);
        shelf.give_back(8192, z);
        // 4000 bytes: class 4096, the last freed there (y), not z
        assert_eq!(alloc(&mut shelf, 4000), y);
        assert_eq!(alloc(&mut shelf, 1), x);
        // class 4096 is empty now: a new registration
        assert_eq!(alloc(&mut shelf, 10), 3);
        assert_eq!(alloc(&mut shelf, 8000), z);
        let s = shelf.stats;
        assert_eq!(
            (s.registrations, s.reuses, s.in_use, s.free, s.bytes_held),
            (4, 3, 4, 0, 3 * 4096 + 8192)
        );
        // reserved slots are served like freed ones
        shelf.shelve_new(16384, 9);
        assert_eq!(shelf.free_in(16384), 1);
        assert_eq!(shelf.take(16384), Some(9));
        assert_eq!(shelf.take(16384), None);
    }
}
