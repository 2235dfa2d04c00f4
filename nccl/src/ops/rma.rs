//! One-sided communication (NCCL 2.29.2+): [`Comm::put_signal`] writes
//! into a peer's part of a window and raises a signal there,
//! [`Comm::signal`] raises one without data, [`Comm::wait_signal`] waits on
//! this rank's stream for signals from peers. Bound to a stream and grouped
//! like collectives, through the same funnel ([`Call`]).
//!
//! What NCCL does (its user guide and `src/enqueue.cc`, 2.29.2 to 2.30.7):
//! a put reads `count` elements of a buffer inside a symmetric window of
//! this rank, in stream order, and writes them into rank `peer`'s part of
//! the destination window at the given offset; the source may be reused
//! once the put has completed on the stream. The peer's signal (its index
//! and context) is raised only after the data has been delivered, and after
//! every earlier put and signal of this rank to the same peer and context.
//! A wait completes on its stream once the signals it counts have arrived,
//! and then the data they announce is visible in the waiting rank's memory.
//! NCCL does not check the destination range against the peer's window.

use std::ops::Range;

use crate::base::contract;
use crate::base::dtype::NcclType;
use crate::base::error::{Error, Result};
use crate::base::runtime::{checked_runtime, require_api};
use crate::base::version::Version;
use crate::comm::Comm;
use crate::mem::{DeviceBuffer, DeviceBufferMut, SymmetricBuffer, Window};
use crate::ops::Enqueue;
use crate::ops::call::{Call, at};
use crate::sys;

/// A signal of one-sided operations: NCCL's signal index (`sigIdx`) and
/// context (`ctx`). NCCL 2.29 and 2.30 accept only index 0 and context 0
/// (refused here before NCCL is called); from 2.31.2 a communicator has
/// `numRmaSig` indices and `numRmaCtx` contexts
/// ([`Config::num_rma_sig`](crate::Config::num_rma_sig),
/// [`Config::num_rma_ctx`](crate::Config::num_rma_ctx)), which NCCL checks.
/// Operations of one rank to the same peer and context complete in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Signal {
    /// The signal index.
    pub index: u32,
    /// The context.
    pub ctx: u32,
}

/// What [`Comm::wait_signal`] waits for: `count` signals from rank `peer`
/// on `signal`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SignalWait {
    /// The rank that raises them.
    pub peer: usize,
    /// How many (at least 1): one per put or signal of that peer.
    pub count: u32,
    /// Which signal.
    pub signal: Signal,
}

/// The first release whose NCCL accepts signal indices and contexts other
/// than 0.
const MANY_SIGNALS: Version = Version::new(2, 31, 2);

/// `signal` as NCCL's `(sigIdx, ctx)`, refused before NCCL when the libnccl
/// in use cannot take it.
fn raw_signal(op: &'static str, signal: Signal) -> Result<(i32, i32)> {
    let many = checked_runtime()? >= MANY_SIGNALS;
    let limit = if many {
        "at most i32::MAX"
    } else {
        "0 (NCCL 2.29 and 2.30)"
    };
    let check = |arg: &'static str, v: u32| -> Result<i32> {
        match i32::try_from(v) {
            Ok(x) if many || x == 0 => Ok(x),
            _ => Err(Error::invalid(op, arg, limit, v)),
        }
    };
    Ok((
        check("signal.index", signal.index)?,
        check("signal.ctx", signal.ctx)?,
    ))
}

mod sealed {
    pub trait Sealed {}
}

/// Memory one-sided operations take: a [`Window`] or a buffer of a
/// [`SymmetricPool`](crate::SymmetricPool) (whose window it is). Sealed.
pub trait WindowMemory<T>: DeviceBuffer<T> + sealed::Sealed {
    /// NCCL's handle of the window, when it is one of `comm`'s (0 when NCCL
    /// made none); `None` for another communicator's.
    #[doc(hidden)]
    fn window_of(&self, comm: &Comm) -> Option<usize>;
}

impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static> sealed::Sealed
    for Window<T, B>
{
}
impl<T: 'static, B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static> WindowMemory<T>
    for Window<T, B>
{
    fn window_of(&self, comm: &Comm) -> Option<usize> {
        self.handle_of(comm)
    }
}

impl<T> sealed::Sealed for SymmetricBuffer<'_, T> {}
impl<T> WindowMemory<T> for SymmetricBuffer<'_, T> {
    fn window_of(&self, comm: &Comm) -> Option<usize> {
        self.window().handle_of(comm)
    }
}

/// NCCL's handle of `win`, which must be a window of `comm`.
fn window_handle<T>(
    comm: &Comm,
    op: &'static str,
    arg: &'static str,
    win: &impl WindowMemory<T>,
) -> Result<sys::ncclWindow_t> {
    match win.window_of(comm) {
        Some(0) => Err(Error::invalid(
            op,
            arg,
            "a window NCCL made (Registration::is_mapped)",
            "a registration without a window: this communicator has no symmetric memory support",
        )),
        Some(h) => Ok(h as sys::ncclWindow_t),
        None => Err(Error::invalid(
            op,
            arg,
            "a window of this communicator",
            "one of another communicator",
        )),
    }
}

// SAFETY (for every NCCL call below): as for the collectives (the note
// above `impl Comm` in `collective.rs`): the communicator is live and used by
// this thread only, the stream is of its GPU, and everything the call
// borrows lives for 'a: until the call returns, or until the group's end
// that enqueues it. What each call reads and writes is stated at the call.
impl Comm {
    /// One-sided put (`ncclPutSignal`, NCCL 2.29.2+): the elements
    /// `src_range` of window `src` (this rank's) are written into rank
    /// `peer`'s part of window `dst`, from element `dst_offset` on, and then
    /// `signal` is raised at the peer, which sees the data once its
    /// [`Comm::wait_signal`] for this rank has completed on its stream. The
    /// peer takes no part in the call.
    ///
    /// Both windows must be registered with `symmetric = true`
    /// ([`Comm::window_register`]; a [`SymmetricPool`](crate::SymmetricPool)'s
    /// buffers are), `src` may be `dst`, and `dst` must have
    /// the same length on every rank: the range is checked against this
    /// rank's part of `dst`, which NCCL does not do (a peer's part cannot be
    /// seen from here). `src` may be reused once the put has completed on
    /// `stream`; until then, and until the peer's wait, the data is in
    /// flight. In a [`group`](crate::group), puts to different peers or
    /// contexts may complete in any order; to one peer and context, in
    /// order. The write at the peer is ordered against the peer's own uses
    /// of `dst` by the signal alone, not by the buffers' tracking, also when
    /// `peer` is this rank: read what a put brought only after
    /// [`Comm::wait_signal`].
    ///
    /// # Errors
    /// `InvalidArgument` for `peer >= world`, an empty or out-of-bounds
    /// `src_range`, a destination range past `dst`'s end, a window of
    /// another communicator, a signal the libnccl cannot take, or a stream
    /// of another GPU; `InGroup` for a bare stream in a group; `Unsupported`
    /// before NCCL 2.29.2; NCCL's error (a source window that is not
    /// symmetric, a CUDA driver older than 12.5).
    #[allow(clippy::too_many_arguments)]
    pub fn put_signal<'a, T, S, D>(
        &'a self,
        src: &'a S,
        src_range: Range<usize>,
        peer: usize,
        dst: &'a D,
        dst_offset: usize,
        signal: Signal,
        stream: impl Enqueue<'a> + Copy,
    ) -> Result<()>
    where
        T: NcclType,
        S: WindowMemory<T>,
        D: WindowMemory<T>,
    {
        const OP: &str = "put_signal";
        const API: &str = "ncclPutSignal";
        require_api(API)?;
        let target = stream.target();
        let mut c = Call::begin::<T>(self, OP, stream)?;
        contract::rank_arg(OP, "peer", peer, self.world_size())?;
        let (start, count) = (src_range.start, src_range.len());
        if src_range.end > src.len() || start > src_range.end {
            return Err(Error::invalid(
                OP,
                "src_range",
                format!("a range within 0..{}", src.len()),
                format!("{}..{}", src_range.start, src_range.end),
            ));
        }
        if count == 0 {
            return Err(Error::invalid(
                OP,
                "src_range",
                "at least one element (Comm::signal sends none)",
                "an empty range",
            ));
        }
        match dst_offset.checked_add(count) {
            Some(end) if end <= dst.len() => {}
            _ => {
                return Err(Error::invalid(
                    OP,
                    "dst_offset",
                    format!(
                        "dst_offset + {count} <= dst.len() ({}), as on every rank",
                        dst.len()
                    ),
                    dst_offset,
                ));
            }
        }
        let (sig, ctx) = raw_signal(OP, signal)?;
        let win = window_handle(self, OP, "dst", dst)?;
        let byte_offset = dst_offset * std::mem::size_of::<T>();
        let s = c.read(src);
        // `dst` is written at the peer, not here; its use is recorded on
        // this stream all the same, so that ending this rank's registration
        // (which unmaps the peers' parts) waits for the put.
        let (_, dst_use) = dst.device_ptr(target.stream);
        let r = c.run(API, |comm, st| {
            // SAFETY: see above. NCCL reads `count` elements from
            // src + start, inside `src` (checked; NCCL also checks that it
            // lies in a symmetric window of this communicator), in stream
            // order. It writes `count` elements at `byte_offset` of the
            // peer's part of `dst`, a window of this communicator
            // (checked), whose registration holds at least `dst_offset +
            // count` elements here and, as documented, at the peer. That is
            // device memory of the peer (of this process only when `peer`
            // is this rank), written without cudarc's record, as any data a
            // peer puts; no host memory is touched. `dst` and `src` are
            // borrowed for 'a and their uses recorded on the stream, so
            // neither is freed nor deregistered before the put has run.
            unsafe {
                sys::ncclPutSignal(
                    at::<T>(s, start),
                    count,
                    T::DATATYPE,
                    peer as i32,
                    win,
                    byte_offset,
                    sig,
                    ctx,
                    0,
                    comm,
                    st,
                )
            }
        });
        match target.group {
            // recorded after the group's end launches the put
            Some(g) if r.is_ok() => g.keep(dst_use),
            // enqueued (or failed): the use may be recorded now
            _ => drop(dst_use),
        }
        r
    }

    /// Raises `signal` at rank `peer` without data (`ncclSignal`, NCCL
    /// 2.29.2+), after every earlier put and signal of this rank to `peer`
    /// on the same context.
    ///
    /// # Errors
    /// `InvalidArgument` for `peer >= world`, a signal the libnccl cannot
    /// take, or a stream of another GPU; `InGroup`; `Unsupported` before
    /// NCCL 2.29.2; NCCL's error.
    pub fn signal<'a>(
        &'a self,
        peer: usize,
        signal: Signal,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "signal";
        const API: &str = "ncclSignal";
        require_api(API)?;
        let c = Call::begin::<u8>(self, OP, stream)?;
        contract::rank_arg(OP, "peer", peer, self.world_size())?;
        let (sig, ctx) = raw_signal(OP, signal)?;
        c.run(API, |comm, st| {
            // SAFETY: see above; peer < world; it moves no data, only
            // NCCL's own signal counter at the peer.
            unsafe { sys::ncclSignal(peer as i32, sig, ctx, 0, comm, st) }
        })
    }

    /// Makes `stream` wait until the signals in `waits` have arrived
    /// (`ncclWaitSignal`, NCCL 2.29.2+): `count` from each `peer`. Once the
    /// wait has completed on `stream`, the data of the puts those signals
    /// announce is visible in this rank's windows.
    ///
    /// That data lands without any record of cudarc's: work on other
    /// streams that reads it must be ordered after `stream` by the program
    /// (an event, or the same stream).
    ///
    /// # Errors
    /// `InvalidArgument` for an empty `waits`, a `peer >= world`, a `count`
    /// of 0 or over `i32::MAX`, a signal the libnccl cannot take, or a
    /// stream of another GPU; `InGroup`; `Unsupported` before NCCL 2.29.2;
    /// NCCL's error.
    pub fn wait_signal<'a>(&'a self, waits: &[SignalWait], stream: impl Enqueue<'a>) -> Result<()> {
        const OP: &str = "wait_signal";
        const API: &str = "ncclWaitSignal";
        require_api(API)?;
        let c = Call::begin::<u8>(self, OP, stream)?;
        if waits.is_empty() {
            return Err(Error::invalid(OP, "waits", "at least one", "none"));
        }
        let n = i32::try_from(waits.len())
            .map_err(|_| Error::invalid(OP, "waits.len()", "at most i32::MAX", waits.len()))?;
        let mut descs = Vec::with_capacity(waits.len());
        for w in waits {
            contract::rank_arg(OP, "waits.peer", w.peer, self.world_size())?;
            let count = match i32::try_from(w.count) {
                Ok(c) if c >= 1 => c,
                _ => return Err(Error::invalid(OP, "waits.count", "1 to i32::MAX", w.count)),
            };
            let (sig, ctx) = raw_signal(OP, w.signal)?;
            descs.push(sys::ncclWaitSignalDesc_t {
                opCnt: count,
                peer: w.peer as i32,
                sigIdx: sig,
                ctx,
            });
        }
        c.run(API, |comm, st| {
            // SAFETY: see above; `descs` holds `n` descriptors, which NCCL
            // copies when called (peers and counts) and does not keep; the
            // wait reads only NCCL's own signal counters.
            unsafe { sys::ncclWaitSignal(n, descs.as_mut_ptr(), comm, st) }
        })
    }
}
