//! Groups (`ncclGroupStart`/`ncclGroupEnd`): calls issued inside one group are
//! launched together at the group's end, which is how point-to-point
//! exchanges avoid deadlock and how several collectives become one launch.
//!
//! # Why groups are scoped
//!
//! Inside a group NCCL returns from a call *without* having enqueued it: the
//! kernels are launched by `ncclGroupEnd`. Everything a grouped call uses
//! (its communicator, buffers, stream and custom op) must therefore stay
//! alive, and cudarc must record the buffers' last use, after the group's
//! end. [`group`] makes the compiler check the first part: grouped calls take
//! [`Group::on`]`(&stream)` in place of the stream, which ties every borrow
//! of the call to the group's scope (as `std::thread::scope` does for
//! threads), so a buffer made inside the closure, or a communicator dropped
//! in it, does not compile:
//!
//! ```compile_fail,E0597
//! # fn demo(comm: &nccl::Comm, stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
//! nccl::group(|g| {
//!     let send = stream.alloc_zeros::<f32>(8)?; // dropped (freed) before the launch
//!     let mut recv = stream.alloc_zeros::<f32>(8)?;
//!     comm.all_reduce(&send, &mut recv, nccl::ReduceOp::Sum, g.on(stream))
//! })
//! # }
//! ```
//!
//! and the group keeps cudarc's guards of each buffer until after
//! `ncclGroupEnd`, so the events that order later uses on other streams are
//! recorded after the launch. A call made with a bare stream while a group is
//! open on the thread is refused ([`Error::InGroup`]) before NCCL sees it.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;

use cudarc::driver::{CudaStream, SyncOnDrop};

use crate::base::call::check;
use crate::base::contract;
use crate::base::error::{Error, Result};
use crate::base::thread::{OPEN, call_cga, in_group};
use crate::comm::Comm;
use crate::sys;

/// The state of an open group that does not depend on its scope's lifetime
/// (so that the group can be borrowed for that lifetime and still be
/// dropped): the cudarc guards to release after the launch and the
/// non-blocking communicators to wait for.
struct Open {
    /// Cudarc's guards of every buffer of the grouped calls, dropped after
    /// `ncclGroupEnd` (dropping one records the buffer's use on its stream).
    /// Their lifetime is erased; see [`GroupRef::keep`].
    guards: RefCell<Vec<SyncOnDrop<'static>>>,
    /// The communicators used in the group beyond the first (pointers to
    /// `Comm`s borrowed for the group's scope; see [`GroupRef::note`]),
    /// waited for when NCCL answers the group's end in progress.
    pending: RefCell<Vec<*const Comm>>,
    /// The first communicator of the group (most groups have one): kept
    /// here, so that noting it costs no allocation.
    first: Cell<*const Comm>,
    /// The kinds of calls in the group, where NCCL cannot mix them
    /// ([`contract::group_kinds`]).
    kinds: Cell<u8>,
    /// The `cgaClusterSize` setting of the group's first collective
    /// (`None` before one; `Some(None)`: unset, the communicator's), which
    /// every later collective must share ([`group_cga`]).
    cga: Cell<Option<Option<i32>>>,
    ended: Cell<bool>,
}

impl Open {
    fn start() -> Result<Open> {
        if in_group() {
            return Err(Error::InGroup { op: "group" });
        }
        // SAFETY: no arguments; paired with the ncclGroupEnd in `end`, which
        // runs on this thread (`Open` is owned by `Group`, which is !Send).
        unsafe { nccl!(ncclGroupStart()) }?;
        OPEN.with(|o| o.set(true));
        Ok(Open::empty(false))
    }

    /// A group's state before its first call; `ended` for one whose Drop
    /// must not end a group.
    fn empty(ended: bool) -> Open {
        Open {
            guards: RefCell::new(Vec::new()),
            pending: RefCell::new(Vec::new()),
            first: Cell::new(std::ptr::null()),
            kinds: Cell::new(0),
            cga: Cell::new(None),
            ended: Cell::new(ended),
        }
    }

    /// Records the `cgaClusterSize` setting `call` of the grouped call `op`
    /// if it is the group's first collective, or refuses it (nothing
    /// recorded) if a collective's setting differs from the first's
    /// ([`group_cga`]); point-to-point calls pass.
    #[inline]
    fn admit_cga(&self, op: &'static str, call: Option<i32>) -> Result<()> {
        if counts_for_cga(op) {
            let cga = group_cga(self.cga.get(), op, call)?;
            self.cga.set(Some(cga));
        }
        Ok(())
    }

    /// Ends the group once with `end` (`ncclGroupEnd` or
    /// `ncclGroupSimulateEnd`), waits for the non-blocking communicators when
    /// NCCL answers `ncclInProgress`, and only then drops the guards.
    fn end(&self, api: &'static str, end: impl FnOnce() -> sys::ncclResult_t) -> Result<()> {
        if self.ended.replace(true) {
            return Ok(());
        }
        OPEN.with(|o| o.set(false));
        let r = end();
        let mut out = Ok(());
        if r == sys::ncclResult_t::ncclInProgress {
            let first = self.first.get();
            let others = self.pending.borrow();
            for &p in (!first.is_null())
                .then_some(&first)
                .into_iter()
                .chain(others.iter())
            {
                // SAFETY: `p` came from a `&'scope Comm` of a grouped call
                // (`note`), and 'scope lasts until `group` returns, after this.
                let comm = unsafe { &*p };
                if let Err(e) = comm.settle_after_group(api) {
                    out = out.and(Err(e));
                }
            }
        } else {
            out = check(api, r);
        }
        // The kernels are enqueued (or the group failed): now cudarc may
        // record the buffers' uses.
        self.guards.borrow_mut().clear();
        self.pending.borrow_mut().clear();
        self.first.set(std::ptr::null());
        out
    }
}

impl Drop for Open {
    /// Ends a group left open by a panic in the closure; never panics.
    fn drop(&mut self) {
        if let Err(e) = self.end("ncclGroupEnd", || {
            // SAFETY: closes the group this value opened, on its thread.
            unsafe { sys::ncclGroupEnd() }
        }) {
            log::error!("ncclGroupEnd after a panic in a group failed: {e}");
        }
    }
}

/// An open group, lent to the closure of [`group`]: pass
/// [`g.on(&stream)`](Group::on) as the stream of a call to put the call in the
/// group. Everything such a call borrows must outlive the group's scope
/// `'scope` (so it cannot be made or dropped inside the closure).
///
/// Neither `Send` nor `Sync`: NCCL's groups belong to the thread that opened
/// them.
///
/// ```compile_fail
/// fn needs_send<T: Send>() {}
/// needs_send::<nccl::Group<'static, 'static>>();
/// ```
///
/// ```compile_fail
/// fn needs_sync<T: Sync>() {}
/// needs_sync::<nccl::Group<'static, 'static>>();
/// ```
pub struct Group<'scope, 'env: 'scope> {
    open: Open,
    /// Invariant in both lifetimes, as `std::thread::Scope`; the raw pointer
    /// makes the type neither `Send` nor `Sync`.
    _scope: PhantomData<&'scope mut &'scope ()>,
    _env: PhantomData<&'env mut &'env ()>,
    _thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for Group<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("calls_kept", &self.open.guards.borrow().len())
            .finish()
    }
}

impl Group<'_, '_> {
    /// `ncclGroupStart`, for [`group`] and [`group_simulate`] only.
    fn open() -> Result<Self> {
        Ok(Group {
            open: Open::start()?,
            _scope: PhantomData,
            _env: PhantomData,
            _thread: PhantomData,
        })
    }
}

impl<'scope> Group<'scope, '_> {
    /// `stream`, as the stream argument of a call that joins this group: the
    /// call is enqueued on `stream` at the group's end.
    pub fn on(&'scope self, stream: &'scope CudaStream) -> OnStream<'scope> {
        OnStream {
            stream,
            open: &self.open,
            _scope: PhantomData,
            _thread: PhantomData,
        }
    }
}

/// A stream seen through an open [`Group`] (from [`Group::on`]): calls given
/// it join the group, and their borrows last for the group's scope. `Copy`;
/// not `Send`.
#[derive(Clone, Copy)]
pub struct OnStream<'scope> {
    stream: &'scope CudaStream,
    open: &'scope Open,
    /// Invariant in 'scope: a covariant view could shrink to a shorter
    /// lifetime and let a call borrow what dies before the group's end.
    _scope: PhantomData<fn(&'scope ()) -> &'scope ()>,
    _thread: PhantomData<*const ()>,
}

impl std::fmt::Debug for OnStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnStream")
            .field("stream", &self.stream.cu_stream())
            .finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Where a call is enqueued: a plain stream (`&CudaStream` or
/// `&Arc<CudaStream>`), at once, or [`Group::on`]`(&stream)`, at the end of
/// the group. Sealed.
pub trait Enqueue<'a>: sealed::Sealed {
    #[doc(hidden)]
    fn target(self) -> Target<'a>;
}

/// The parts of an [`Enqueue`] argument.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub(crate) stream: &'a CudaStream,
    pub(crate) group: Option<GroupRef<'a>>,
}

/// The open group a grouped call joins.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct GroupRef<'a> {
    open: &'a Open,
}

impl sealed::Sealed for &CudaStream {}
impl<'a> Enqueue<'a> for &'a CudaStream {
    #[inline(always)]
    fn target(self) -> Target<'a> {
        Target {
            stream: self,
            group: None,
        }
    }
}

impl sealed::Sealed for &std::sync::Arc<CudaStream> {}
impl<'a> Enqueue<'a> for &'a std::sync::Arc<CudaStream> {
    #[inline(always)]
    fn target(self) -> Target<'a> {
        Target {
            stream: self,
            group: None,
        }
    }
}

impl sealed::Sealed for OnStream<'_> {}
impl<'a> Enqueue<'a> for OnStream<'a> {
    #[inline(always)]
    fn target(self) -> Target<'a> {
        Target {
            stream: self.stream,
            group: Some(GroupRef { open: self.open }),
        }
    }
}

impl std::fmt::Debug for GroupRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupRef")
    }
}

impl<'a> GroupRef<'a> {
    /// Keeps cudarc's guard of a grouped call's buffer until the group's end.
    pub(crate) fn keep(self, guard: SyncOnDrop<'a>) {
        // SAFETY: only the lifetime changes. The guard refers to a buffer's
        // event and to a stream, both borrowed for the group's scope 'a
        // (a grouped call's borrows all have that lifetime), and 'a outlasts
        // `group`'s body, where `Open::end` or `Open::drop` drops every
        // guard. Nothing else can reach the erased guard.
        let guard: SyncOnDrop<'static> = unsafe { std::mem::transmute(guard) };
        self.open.guards.borrow_mut().push(guard);
    }

    /// Admits one more call of `comm` to the group, before NCCL sees it:
    /// refused where the library cannot mix collectives and point-to-point
    /// calls in one group and this call would ([`contract::group_kinds`]),
    /// and, from NCCL 2.31.2 (per-call configurations), for a collective
    /// whose `cgaClusterSize` setting is not the group's first
    /// collective's ([`group_cga`]; the setting of the call being made is
    /// [`call_cga`]).
    #[inline]
    pub(crate) fn admit(self, comm: &Comm, op: &'static str) -> Result<()> {
        let runtime = crate::base::runtime::checked_runtime()?;
        if runtime < contract::MIXED_GROUPS_SINCE {
            let kinds =
                contract::group_kinds(self.open.kinds.get(), op, comm.world_size(), runtime)?;
            self.open.kinds.set(kinds);
        } else if runtime >= CGA_SINCE {
            self.open.admit_cga(op, call_cga())?;
        }
        Ok(())
    }

    /// Notes a communicator used in the group, to wait for at the group's
    /// end should NCCL answer it in progress (whatever mode the communicator
    /// was made with: NCCL's environment may have changed it).
    pub(crate) fn note(self, comm: &'a Comm) {
        let p: *const Comm = comm;
        let first = self.open.first.get();
        if first == p {
            return;
        }
        if first.is_null() {
            self.open.first.set(p);
            return;
        }
        let mut pending = self.open.pending.borrow_mut();
        if !pending.contains(&p) {
            pending.push(p);
        }
    }
}

/// The first release whose collectives take a per-call `cgaClusterSize`
/// (`ncclCollConfig_t`): before it every collective has the communicator's.
const CGA_SINCE: crate::base::version::Version = crate::base::version::Version::new(2, 31, 2);

/// Whether the grouped call `op` counts for the group's `cgaClusterSize`:
/// NCCL's header asks it of the collectives of a group (every call of
/// this crate's funnel but the point-to-point ones, `all_to_all_v` made of
/// them, and the one-sided ones). The native `all_to_all`, `gather` and
/// `scatter` (NCCL 2.28+, so every release with per-call settings) are
/// collectives with a setting of their own (`ncclAlltoAllConfig`, …).
#[inline]
fn counts_for_cga(op: &str) -> bool {
    !matches!(
        op,
        "send" | "recv" | "all_to_all_v" | "put_signal" | "signal" | "wait_signal"
    )
}

/// The `cgaClusterSize` setting a group holds once it takes the collective
/// `op`, whose setting is `call` (`None`: unset, so the communicator's, as
/// for every plain collective), given the group's first collective's
/// setting `first` (`None` before the first). NCCL 2.31.2+'s header: the
/// size "should be the same for all collectives in the same Group.
/// Inconsistent cgaClusterSize in a Group is undefined behavior." So a
/// collective whose setting is not the first's is refused, across
/// communicators, and an explicit size is not taken to equal an unset one
/// (the communicator's value is not known here).
fn group_cga(
    first: Option<Option<i32>>,
    op: &'static str,
    call: Option<i32>,
) -> Result<Option<i32>> {
    match first {
        None => Ok(call),
        Some(f) if f == call => Ok(f),
        Some(f) => Err(mixed_cga(op, f, call)),
    }
}

#[cold]
fn mixed_cga(op: &'static str, first: Option<i32>, call: Option<i32>) -> Error {
    let show = |v: Option<i32>| match v {
        Some(v) => v.to_string(),
        None => "unset (the communicator's)".to_owned(),
    };
    Error::invalid(
        op,
        "cga_cluster_size",
        format!(
            "the setting of the group's first collective, {} (NCCL: inconsistent \
             cgaClusterSize in a group is undefined behavior)",
            show(first)
        ),
        show(call),
    )
}

/// Runs `f` inside a group: `ncclGroupStart`, `f`, then `ncclGroupEnd`, which
/// always runs, also when `f` fails or panics (then `f`'s error is returned).
/// Calls join the group by taking [`g.on(&stream)`](Group::on) as their
/// stream; everything they borrow must be made before the group:
///
/// ```no_run
/// # fn demo(comm: &nccl::Comm, a: &cudarc::driver::CudaSlice<f32>, b: &mut cudarc::driver::CudaSlice<f32>,
/// #         s: &cudarc::driver::CudaStream) -> nccl::Result<()> {
/// let next = (comm.rank() + 1) % comm.world_size();
/// let prev = (comm.rank() + comm.world_size() - 1) % comm.world_size();
/// nccl::group(|g| {
///     comm.send(a, next, g.on(s))?;
///     comm.recv(b, prev, g.on(s))
/// })
/// # }
/// ```
///
/// Groups do not nest, and a call given a bare stream inside `f` is refused:
/// both are [`Error::InGroup`]. Before NCCL 2.23.4 a group may not mix
/// collectives with point-to-point calls (`send`, `recv`, and the
/// collectives this crate makes of them: `all_to_all`, `gather`, `scatter`
/// before 2.28, `all_to_all_v`) of communicators of 2+ ranks: NCCL 2.18 –
/// 2.22 faults on such a group, so the call that would mix them is
/// [`Error::Unsupported`] (docs/versions.md). From NCCL 2.31.2 the
/// collectives of one group, of any communicator, must share one
/// `cgaClusterSize` setting (`CollConfig::cga_cluster_size` through
/// `Comm::configured`, or unset: a plain collective, or a configuration
/// without it): a collective whose setting
/// is not that of the group's first collective is
/// [`Error::InvalidArgument`] (`cga_cluster_size`) before NCCL sees it;
/// point-to-point calls do not count.
///
/// The closure's error type is the caller's: any `E` that an [`Error`]
/// converts into (`anyhow::Error`, `Box<dyn Error>`, your own enum), so
/// `.context(…)` and `?` on other errors work inside it. When the closure
/// ends with `Ok(…)` rather than a call, name the type once:
///
/// ```no_run
/// # fn demo(comm: &nccl::Comm, a: &cudarc::driver::CudaSlice<f32>, b: &mut cudarc::driver::CudaSlice<f32>,
/// #         s: &cudarc::driver::CudaStream) -> Result<(), Box<dyn std::error::Error>> {
/// nccl::group(|g| {
///     comm.all_reduce(a, b, nccl::ReduceOp::Sum, g.on(s))?;
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })?;
/// # Ok(())
/// # }
/// ```
///
/// A helper that issues calls into the caller's group takes the stream as
/// [`OnStream`] (or any [`Enqueue`]) rather than the `&Group`, whose two
/// lifetimes are invariant:
///
/// ```no_run
/// use cudarc::driver::CudaSlice;
/// use nccl::{Comm, OnStream};
///
/// fn ring<'s>(comm: &'s Comm, a: &'s CudaSlice<f32>, b: &'s mut CudaSlice<f32>, on: OnStream<'s>) -> nccl::Result<()> {
///     let n = comm.world_size();
///     comm.send(a, (comm.rank() + 1) % n, on)?;
///     comm.recv(b, (comm.rank() + n - 1) % n, on)
/// }
/// # fn demo(comm: &Comm, a: &CudaSlice<f32>, b: &mut CudaSlice<f32>, s: &cudarc::driver::CudaStream) -> nccl::Result<()> {
/// nccl::group(|g| ring(comm, a, b, g.on(s)))
/// # }
/// ```
///
/// Only NCCL calls are deferred: other work written inside the closure (a
/// copy, a kernel launch through cudarc) is enqueued at once, so it runs
/// *before* the grouped calls on the same stream. Put such work after the
/// group (or before it) where the order matters.
///
/// # Errors
/// `f`'s error, [`Error::InGroup`] inside another group, or NCCL's error from
/// starting or ending the group (where the grouped calls' errors surface),
/// converted into `E`.
pub fn group<'env, R, E: From<Error>>(
    f: impl for<'scope> FnOnce(&'scope Group<'scope, 'env>) -> std::result::Result<R, E>,
) -> std::result::Result<R, E> {
    let g = Group::open()?;
    let out = f(&g);
    let end = g.open.end("ncclGroupEnd", || {
        // SAFETY: closes the group `Open::start` opened, on this thread.
        unsafe { sys::ncclGroupEnd() }
    });
    let r = out?;
    end?;
    Ok(r)
}

/// Runs `f` in a group that is simulated, not launched
/// (`ncclGroupSimulateEnd`, NCCL 2.22.3+), and returns NCCL's estimate of how
/// long it would take, in microseconds, with `f`'s result. The closure is
/// the same as [`group`]'s.
///
/// The estimate is `None` when NCCL makes none: it leaves the time undefined
/// where no algorithm would run, as for a communicator of one rank (seen with
/// NCCL 2.28.3 on an H100).
///
/// # Errors
/// `Unsupported` before NCCL 2.22; as [`group`].
#[cfg(nccl_fn = "ncclGroupSimulateEnd")]
pub fn group_simulate<'env, R, E: From<Error>>(
    f: impl for<'scope> FnOnce(&'scope Group<'scope, 'env>) -> std::result::Result<R, E>,
) -> std::result::Result<(R, Option<f32>), E> {
    crate::base::runtime::require_api("ncclGroupSimulateEnd")?;
    let g = Group::open()?;
    let out = f(&g);
    let mut info = sys::ncclSimInfo_t {
        size: std::mem::size_of::<sys::ncclSimInfo_t>(),
        magic: 0x7468_5283,
        version: sys::NCCL_VERSION_CODE,
        estimatedTime: sys::NCCL_UNDEF_FLOAT as f32,
    };
    let end = g.open.end("ncclGroupSimulateEnd", || {
        // SAFETY: closes the group opened above, on this thread, with an
        // initialized SimInfo that outlives the call.
        unsafe { sys::ncclGroupSimulateEnd(&mut info) }
    });
    let r = out?;
    end?;
    let est = info.estimatedTime;
    // NCCL_UNDEF_FLOAT (-1) where nothing was estimated
    Ok((r, (est.is_finite() && est >= 0.0).then_some(est)))
}

/// Issues several NCCL calls of one collective as one launch: a group of
/// their own for a call with a bare stream (ended here, waiting for a
/// non-blocking communicator), or part of the caller's open group.
pub(crate) fn calls_as_one(
    comm: &Comm,
    grouped: bool,
    api: &'static str,
    f: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if grouped {
        return f();
    }
    // SAFETY: no arguments; paired with the ncclGroupEnd below on this thread.
    unsafe { nccl!(ncclGroupStart()) }?;
    let out = f();
    // SAFETY: closes the group opened above, on this thread.
    let r = unsafe { sys::ncclGroupEnd() };
    // settled even when a call failed: on a non-blocking communicator the
    // group's job may hold the buffers of the calls queued before it
    let settled = comm.settle_op(api, r);
    out?;
    settled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_cga_keeps_the_first_collectives_setting() {
        // the first collective sets it, explicit or unset
        assert_eq!(group_cga(None, "all_reduce", Some(4)).unwrap(), Some(4));
        assert_eq!(group_cga(None, "all_reduce", None).unwrap(), None);
        // the same setting again: taken, the record unchanged
        assert_eq!(
            group_cga(Some(Some(4)), "broadcast", Some(4)).unwrap(),
            Some(4)
        );
        assert_eq!(group_cga(Some(None), "all_gather", None).unwrap(), None);
        assert_eq!(
            group_cga(Some(Some(0)), "reduce", Some(0)).unwrap(),
            Some(0)
        );
        // another size, or explicit against unset either way: refused
        for (first, call) in [
            (Some(4), Some(2)),
            (Some(4), None),
            (None, Some(4)),
            (Some(0), None),
            (None, Some(0)),
        ] {
            match group_cga(Some(first), "all_reduce", call) {
                Err(Error::InvalidArgument {
                    op: "all_reduce",
                    arg: "cga_cluster_size",
                    expected,
                    actual,
                }) => {
                    assert!(expected.contains("group's first collective"), "{expected}");
                    let show = |v: Option<i32>| v.map_or("unset".to_owned(), |v| v.to_string());
                    assert!(expected.contains(&show(first)), "{expected}");
                    assert!(actual.starts_with(&show(call)), "{actual}");
                }
                other => panic!("{first:?} then {call:?}: {other:?}"),
            }
        }
        let e = group_cga(Some(Some(2)), "all_reduce", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "all_reduce: invalid cga_cluster_size: expected the setting of the group's first \
             collective, 2 (NCCL: inconsistent cgaClusterSize in a group is undefined \
             behavior), got unset (the communicator's)"
        );
    }

    #[test]
    fn only_collectives_count_for_cga() {
        for op in [
            "send",
            "recv",
            "all_to_all_v",
            "put_signal",
            "signal",
            "wait_signal",
        ] {
            assert!(!counts_for_cga(op), "{op}");
        }
        for op in [
            "all_reduce",
            "all_reduce_in_place",
            "broadcast",
            "broadcast_in_place",
            "reduce",
            "reduce_in_place",
            "all_gather",
            "all_gather_in_place",
            "reduce_scatter",
            "reduce_scatter_in_place",
            "all_to_all",
            "gather",
            "scatter",
            "all_gather_v",
            "reduce_scatter_v",
        ] {
            assert!(counts_for_cga(op), "{op}");
        }
        assert!(CGA_SINCE > contract::MIXED_GROUPS_SINCE);
    }

    /// What `admit` does with the calls of one group from NCCL 2.31.2,
    /// without a communicator: the first collective's setting is recorded,
    /// point-to-point calls pass whatever their setting, a differing
    /// collective is refused and leaves the record as it was.
    #[test]
    fn a_group_records_and_refuses() {
        // never started: nothing for Drop to end
        let open = Open::empty(true);
        open.admit_cga("send", Some(8)).unwrap();
        assert_eq!(open.cga.get(), None, "point-to-point calls do not count");
        open.admit_cga("all_reduce", Some(2)).unwrap();
        open.admit_cga("recv", None).unwrap();
        open.admit_cga("all_gather", Some(2)).unwrap();
        assert!(open.admit_cga("all_reduce", None).is_err());
        assert!(open.admit_cga("broadcast", Some(4)).is_err());
        open.admit_cga("all_to_all_v", Some(4)).unwrap();
        assert_eq!(open.cga.get(), Some(Some(2)));
        // a group whose first collective is plain takes only unset ones
        open.cga.set(None);
        open.admit_cga("all_reduce", None).unwrap();
        assert!(open.admit_cga("all_reduce", Some(1)).is_err());
        assert_eq!(open.cga.get(), Some(None));
    }
}
