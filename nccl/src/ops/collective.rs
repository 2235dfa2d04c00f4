//! Collectives: every rank takes part, bound to a stream, each stating its
//! own contract and going through [`Call`].

use crate::base::contract;
use crate::base::dtype::NcclType;
use crate::base::error::{Error, Result};
use crate::comm::Comm;
use crate::mem::{DeviceBuffer, DeviceBufferMut};
use crate::ops::Enqueue;
use crate::ops::ReduceOp;
#[cfg(any(
    nccl_fn = "ncclAlltoAll",
    nccl_fn = "ncclGather",
    nccl_fn = "ncclScatter"
))]
use crate::ops::call::runtime_has;
use crate::ops::call::{Call, at, copies_own_chunk, vp};
use crate::sys;

impl Comm {
    /// All-reduce: every rank's `recv` becomes the reduction over ranks of
    /// their `send` (`ncclAllReduce`).
    ///
    /// `stream` is where the call is enqueued: a `&CudaStream` (now) or, in
    /// a [`group`](crate::group), `g.on(&stream)` (at the group's end). The
    /// same holds for every call of this kind.
    ///
    /// # Errors
    /// `InvalidArgument` for different lengths, overlapping buffers, a stream
    /// of another GPU, or a custom op of another communicator or type;
    /// `InGroup` for a bare stream inside a group.
    pub fn all_reduce<'a, T: NcclType>(
        &'a self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        op: ReduceOp<'a>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        let mut c = Call::begin::<T>(self, "all_reduce", stream)?;
        contract::same_len("all_reduce", send.len(), recv.len())?;
        let rop = c.reduction::<T>(op)?;
        let n = send.len();
        let (s, d) = (c.read(send), c.write(recv));
        c.run("ncclAllReduce", |comm, st| {
            // SAFETY: see the note above `impl Comm`; send and recv hold n.
            unsafe { sys::ncclAllReduce(vp(s), vp(d), n, T::DATATYPE, rop, comm, st) }
        })
    }

    /// In-place all-reduce of `buf`.
    ///
    /// # Errors
    /// As [`Comm::all_reduce`].
    pub fn all_reduce_in_place<'a, T: NcclType>(
        &'a self,
        buf: &'a mut impl DeviceBufferMut<T>,
        op: ReduceOp<'a>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        let mut c = Call::begin::<T>(self, "all_reduce_in_place", stream)?;
        let rop = c.reduction::<T>(op)?;
        let n = buf.len();
        let d = c.write(buf);
        c.run("ncclAllReduce", |comm, st| {
            // SAFETY: see above; sendbuff == recvbuff is NCCL's in-place form.
            unsafe { sys::ncclAllReduce(vp(d), vp(d), n, T::DATATYPE, rop, comm, st) }
        })
    }

    /// Broadcast: the root's `send` lands in every rank's `recv`
    /// (`ncclBroadcast`). `send` is only read at the root, but every rank
    /// passes one of `recv`'s length.
    ///
    /// # Errors
    /// `InvalidArgument` for `root >= world`, different lengths, overlap, or a
    /// stream of another GPU.
    pub fn broadcast<'a, T: NcclType>(
        &'a self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "broadcast";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        contract::same_len(OP, send.len(), recv.len())?;
        let n = recv.len();
        let (s, d) = (c.read(send), c.write(recv));
        c.run("ncclBroadcast", |comm, st| {
            // SAFETY: see above; root < world, both hold n.
            unsafe { sys::ncclBroadcast(vp(s), vp(d), n, T::DATATYPE, root as i32, comm, st) }
        })
    }

    /// In-place broadcast: the root's `buf` is copied into every rank's `buf`.
    ///
    /// # Errors
    /// As [`Comm::broadcast`].
    pub fn broadcast_in_place<'a, T: NcclType>(
        &'a self,
        buf: &'a mut impl DeviceBufferMut<T>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "broadcast_in_place";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        let n = buf.len();
        let d = c.write(buf);
        c.run("ncclBroadcast", |comm, st| {
            // SAFETY: see above; in place.
            unsafe { sys::ncclBroadcast(vp(d), vp(d), n, T::DATATYPE, root as i32, comm, st) }
        })
    }

    /// Reduce: the reduction of every rank's `send` lands in the root's
    /// `recv` (`ncclReduce`). Only the root needs `recv` (`Some`, of `send`'s
    /// length); other ranks may pass `None`.
    ///
    /// # Errors
    /// `InvalidArgument` for `root >= world`, `None` at the root, a wrong
    /// length, overlap, or a stream of another GPU.
    pub fn reduce<'a, T: NcclType, R: DeviceBufferMut<T>>(
        &'a self,
        send: &'a impl DeviceBuffer<T>,
        recv: Option<&'a mut R>,
        op: ReduceOp<'a>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "reduce";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        let n = send.len();
        if self.rank() == root && recv.is_none() {
            return Err(Error::invalid(
                OP,
                "recv",
                "Some(buffer) at the root",
                "None",
            ));
        }
        if let Some(r) = &recv {
            contract::same_len(OP, n, r.len())?;
        }
        let rop = c.reduction::<T>(op)?;
        let s = c.read(send);
        let d = match recv {
            Some(r) => c.write(r),
            None => 0,
        };
        c.run("ncclReduce", |comm, st| {
            // SAFETY: see above; send holds n; recv (written only at the
            // root, where it holds n) may be null elsewhere.
            unsafe { sys::ncclReduce(vp(s), vp(d), n, T::DATATYPE, rop, root as i32, comm, st) }
        })
    }

    /// In-place reduce into the root's `buf`.
    ///
    /// # Errors
    /// As [`Comm::reduce`].
    pub fn reduce_in_place<'a, T: NcclType>(
        &'a self,
        buf: &'a mut impl DeviceBufferMut<T>,
        op: ReduceOp<'a>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "reduce_in_place";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        let rop = c.reduction::<T>(op)?;
        let n = buf.len();
        let d = c.write(buf);
        c.run("ncclReduce", |comm, st| {
            // SAFETY: see above; in place.
            unsafe { sys::ncclReduce(vp(d), vp(d), n, T::DATATYPE, rop, root as i32, comm, st) }
        })
    }

    /// All-gather: rank `i`'s `send` lands in chunk `i` of every rank's
    /// `recv` (`ncclAllGather`); `recv.len() == send.len() × world`.
    ///
    /// # Errors
    /// `InvalidArgument` for wrong lengths, overlap, or a stream of another GPU.
    pub fn all_gather<'a, T: NcclType>(
        &'a self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        let mut c = Call::begin::<T>(self, "all_gather", stream)?;
        contract::all_gather(send.len(), recv.len(), self.world_size())?;
        let n = send.len();
        let (s, d) = (c.read(send), c.write(recv));
        c.run("ncclAllGather", |comm, st| {
            // SAFETY: see above; send holds n and recv n × world.
            unsafe { sys::ncclAllGather(vp(s), vp(d), n, T::DATATYPE, comm, st) }
        })
    }

    /// In-place all-gather: `buf` holds `world` chunks, this rank's chunk
    /// (`rank`) is its input, and every chunk is filled.
    ///
    /// # Errors
    /// `InvalidArgument` when `buf.len()` is not a multiple of `world`.
    pub fn all_gather_in_place<'a, T: NcclType>(
        &'a self,
        buf: &'a mut impl DeviceBufferMut<T>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "all_gather_in_place";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        let chunk = contract::chunked(OP, buf.len(), self.world_size())?;
        let own = self.rank() * chunk;
        let d = c.write(buf);
        c.run("ncclAllGather", |comm, st| {
            // SAFETY: see above; sendbuff = recvbuff + rank × chunk is NCCL's
            // in-place layout, in bounds (world chunks).
            unsafe { sys::ncclAllGather(at::<T>(d, own), vp(d), chunk, T::DATATYPE, comm, st) }
        })
    }

    /// Reduce-scatter: chunk `i` of the reduction of every rank's `send`
    /// lands in rank `i`'s `recv` (`ncclReduceScatter`); `send.len() ==
    /// recv.len() × world`.
    ///
    /// # Errors
    /// `InvalidArgument` for wrong lengths, overlap, a stream of another GPU,
    /// or a custom op of another communicator or type.
    pub fn reduce_scatter<'a, T: NcclType>(
        &'a self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        op: ReduceOp<'a>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        let mut c = Call::begin::<T>(self, "reduce_scatter", stream)?;
        contract::reduce_scatter(send.len(), recv.len(), self.world_size())?;
        let rop = c.reduction::<T>(op)?;
        let n = recv.len();
        let (s, d) = (c.read(send), c.write(recv));
        c.run("ncclReduceScatter", |comm, st| {
            // SAFETY: see above; send holds n × world and recv n.
            unsafe { sys::ncclReduceScatter(vp(s), vp(d), n, T::DATATYPE, rop, comm, st) }
        })
    }

    /// In-place reduce-scatter: `buf` holds `world` chunks; afterwards chunk
    /// `rank` holds this rank's part of the reduction (other chunks are
    /// unspecified).
    ///
    /// # Errors
    /// `InvalidArgument` when `buf.len()` is not a multiple of `world`.
    pub fn reduce_scatter_in_place<'a, T: NcclType>(
        &'a self,
        buf: &'a mut impl DeviceBufferMut<T>,
        op: ReduceOp<'a>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "reduce_scatter_in_place";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        let chunk = contract::chunked(OP, buf.len(), self.world_size())?;
        let rop = c.reduction::<T>(op)?;
        let own = self.rank() * chunk;
        let d = c.write(buf);
        c.run("ncclReduceScatter", |comm, st| {
            // SAFETY: see above; recvbuff = sendbuff + rank × chunk is NCCL's
            // in-place layout, in bounds (world chunks).
            unsafe {
                sys::ncclReduceScatter(vp(d), at::<T>(d, own), chunk, T::DATATYPE, rop, comm, st)
            }
        })
    }

    /// All-to-all: chunk `j` of rank `i`'s `send` lands in chunk `i` of rank
    /// `j`'s `recv`. Equal lengths, a multiple of `world`. Native
    /// `ncclAlltoAll` from NCCL 2.28, grouped send/recv before (and before
    /// 2.19.4 the rank's own chunk a device-to-device copy, as
    /// [`Comm::all_to_all_v`] says).
    ///
    /// # Errors
    /// `InvalidArgument` for wrong lengths, overlap, or a stream of another GPU.
    pub fn all_to_all<'a, T: NcclType>(
        &'a self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        let mut c = Call::begin::<T>(self, "all_to_all", stream)?;
        let chunk = contract::all_to_all(send.len(), recv.len(), self.world_size())?;
        let (s, d) = (c.read(send), c.write(recv));
        #[cfg(nccl_fn = "ncclAlltoAll")]
        if runtime_has("ncclAlltoAll") {
            return c.run("ncclAlltoAll", |comm, st| {
                // SAFETY: see above; both hold chunk × world.
                unsafe { sys::ncclAlltoAll(vp(s), vp(d), chunk, T::DATATYPE, comm, st) }
            });
        }
        let (world, me) = (self.world_size(), self.rank());
        let own = copies_own_chunk();
        c.run_many("ncclGroupEnd", |c| {
            // the copy first: if it fails, nothing of NCCL's is queued yet
            if own {
                c.copy(
                    at::<T>(d, me * chunk),
                    at::<T>(s, me * chunk),
                    chunk * size_of::<T>(),
                )?;
            }
            for p in 0..world {
                if own && p == me {
                    continue;
                }
                // SAFETY: see above; chunk p of each buffer is in bounds.
                c.nccl("ncclSend", |comm, st| unsafe {
                    sys::ncclSend(
                        at::<T>(s, p * chunk),
                        chunk,
                        T::DATATYPE,
                        p as i32,
                        comm,
                        st,
                    )
                })?;
                // SAFETY: as above.
                c.nccl("ncclRecv", |comm, st| unsafe {
                    sys::ncclRecv(
                        at::<T>(d, p * chunk),
                        chunk,
                        T::DATATYPE,
                        p as i32,
                        comm,
                        st,
                    )
                })?;
            }
            Ok(())
        })
    }

    /// Gather: rank `i`'s `send` lands in chunk `i` of the root's `recv`
    /// (`Some` at the root, `send.len() × world` long; ignored elsewhere).
    /// Native `ncclGather` from NCCL 2.28, grouped send/recv before (the
    /// root's own chunk a device copy before 2.19.4).
    ///
    /// # Errors
    /// `InvalidArgument` for `root >= world`, `None` or a wrong length at the
    /// root, overlap, or a stream of another GPU.
    pub fn gather<'a, T: NcclType, R: DeviceBufferMut<T>>(
        &'a self,
        send: &'a impl DeviceBuffer<T>,
        recv: Option<&'a mut R>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "gather";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        let (world, at_root) = (self.world_size(), self.rank() == root);
        let n = send.len();
        contract::rooted(OP, n, recv.as_ref().map(|r| r.len()), at_root, world)?;
        let s = c.read(send);
        let d = match recv {
            Some(r) if at_root => c.write(r),
            _ => 0,
        };
        #[cfg(nccl_fn = "ncclGather")]
        if runtime_has("ncclGather") {
            return c.run("ncclGather", |comm, st| {
                // SAFETY: see above; send holds n; at the root recv holds n × world.
                unsafe { sys::ncclGather(vp(s), vp(d), n, T::DATATYPE, root as i32, comm, st) }
            });
        }
        let own = at_root && copies_own_chunk();
        c.run_many("ncclGroupEnd", |c| {
            if at_root {
                // the copy first: if it fails, nothing of NCCL's is queued yet
                if own {
                    c.copy(at::<T>(d, root * n), vp(s), n * size_of::<T>())?;
                }
                for p in 0..world {
                    if own && p == root {
                        continue;
                    }
                    // SAFETY: see above; chunk p of recv is in bounds at the root.
                    c.nccl("ncclRecv", |comm, st| unsafe {
                        sys::ncclRecv(at::<T>(d, p * n), n, T::DATATYPE, p as i32, comm, st)
                    })?;
                }
            }
            if own {
                return Ok(());
            }
            // SAFETY: see above; send holds n.
            c.nccl("ncclSend", |comm, st| unsafe {
                sys::ncclSend(vp(s), n, T::DATATYPE, root as i32, comm, st)
            })
        })
    }

    /// Scatter: chunk `i` of the root's `send` (`Some` at the root,
    /// `recv.len() × world` long) lands in rank `i`'s `recv`. Native
    /// `ncclScatter` from NCCL 2.28, grouped send/recv before (the root's
    /// own chunk a device copy before 2.19.4).
    ///
    /// # Errors
    /// `InvalidArgument` for `root >= world`, `None` or a wrong length at the
    /// root, overlap, or a stream of another GPU.
    pub fn scatter<'a, T: NcclType, S: DeviceBuffer<T>>(
        &'a self,
        send: Option<&'a S>,
        recv: &'a mut impl DeviceBufferMut<T>,
        root: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "scatter";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        contract::rank_arg(OP, "root", root, self.world_size())?;
        let (world, at_root) = (self.world_size(), self.rank() == root);
        let n = recv.len();
        contract::rooted(OP, n, send.map(|s| s.len()), at_root, world)?;
        let s = match send {
            Some(sb) if at_root => c.read(sb),
            _ => 0,
        };
        let d = c.write(recv);
        #[cfg(nccl_fn = "ncclScatter")]
        if runtime_has("ncclScatter") {
            return c.run("ncclScatter", |comm, st| {
                // SAFETY: see above; recv holds n; at the root send holds n × world.
                unsafe { sys::ncclScatter(vp(s), vp(d), n, T::DATATYPE, root as i32, comm, st) }
            });
        }
        let own = at_root && copies_own_chunk();
        c.run_many("ncclGroupEnd", |c| {
            if at_root {
                // the copy first: if it fails, nothing of NCCL's is queued yet
                if own {
                    c.copy(vp(d), at::<T>(s, root * n), n * size_of::<T>())?;
                }
                for p in 0..world {
                    if own && p == root {
                        continue;
                    }
                    // SAFETY: see above; chunk p of send is in bounds at the root.
                    c.nccl("ncclSend", |comm, st| unsafe {
                        sys::ncclSend(at::<T>(s, p * n), n, T::DATATYPE, p as i32, comm, st)
                    })?;
                }
            }
            if own {
                return Ok(());
            }
            // SAFETY: see above; recv holds n.
            c.nccl("ncclRecv", |comm, st| unsafe {
                sys::ncclRecv(vp(d), n, T::DATATYPE, root as i32, comm, st)
            })
        })
    }

    /// All-gather of uneven shards: rank `i` contributes `counts[i]` elements
    /// (its `send`), and every rank's `recv` (of `sum(counts)` elements) holds
    /// all shards in rank order. Grouped broadcasts.
    ///
    /// # Errors
    /// `InvalidArgument` unless `counts` has one entry per rank, sums to
    /// `recv.len()` and `counts[rank] == send.len()`.
    pub fn all_gather_v<'a, T: NcclType>(
        &'a self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        counts: &[usize],
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "all_gather_v";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        let offs = contract::v_counts(OP, "counts", counts, self.world_size(), recv.len())?;
        contract::own_count(OP, "send.len()", counts[self.rank()], send.len())?;
        let me = self.rank();
        let (s, d) = (c.read(send), c.write(recv));
        c.run_many("ncclGroupEnd", |c| {
            for (r, (&n, &o)) in counts.iter().zip(&offs).enumerate() {
                if n == 0 {
                    continue;
                }
                let src = if r == me { vp(s) } else { at::<T>(d, o) };
                // SAFETY: see above; shard r is in bounds of recv (offsets from
                // checked counts); the root's source is its send of n elements.
                c.nccl("ncclBroadcast", |comm, st| unsafe {
                    sys::ncclBroadcast(src, at::<T>(d, o), n, T::DATATYPE, r as i32, comm, st)
                })?;
            }
            Ok(())
        })
    }

    /// Reduce-scatter of uneven shards: `send` (of `sum(counts)` elements) is
    /// reduced over ranks, and rank `i` receives shard `i` (`counts[i]`
    /// elements) in `recv`. Grouped reduces.
    ///
    /// # Errors
    /// `InvalidArgument` unless `counts` has one entry per rank, sums to
    /// `send.len()` and `counts[rank] == recv.len()`.
    pub fn reduce_scatter_v<'a, T: NcclType>(
        &'a self,
        send: &'a impl DeviceBuffer<T>,
        recv: &'a mut impl DeviceBufferMut<T>,
        counts: &[usize],
        op: ReduceOp<'a>,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "reduce_scatter_v";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        let offs = contract::v_counts(OP, "counts", counts, self.world_size(), send.len())?;
        contract::own_count(OP, "recv.len()", counts[self.rank()], recv.len())?;
        let rop = c.reduction::<T>(op)?;
        let (s, d) = (c.read(send), c.write(recv));
        c.run_many("ncclGroupEnd", |c| {
            for (r, (&n, &o)) in counts.iter().zip(&offs).enumerate() {
                if n == 0 {
                    continue;
                }
                // SAFETY: see above; shard r of send is in bounds; recv (written
                // only at root r, i.e. this rank for r == rank) holds counts[rank].
                c.nccl("ncclReduce", |comm, st| unsafe {
                    sys::ncclReduce(
                        at::<T>(s, o),
                        vp(d),
                        n,
                        T::DATATYPE,
                        rop,
                        r as i32,
                        comm,
                        st,
                    )
                })?;
            }
            Ok(())
        })
    }

    /// All-to-all of uneven shards: this rank sends `send_counts[j]` elements
    /// (consecutive in `send`, in rank order) to rank `j`, and receives
    /// `recv_counts[j]` from rank `j` into `recv` (in rank order). Each rank's
    /// `send_counts[j]` must equal rank `j`'s `recv_counts[i]` (NCCL cannot
    /// check that across ranks; this rank checks its own pair). Grouped
    /// send/recv; before NCCL 2.19.4, whose scheduler could fault on a send
    /// to self in a group, the rank's own shard is a device-to-device copy.
    ///
    /// # Errors
    /// `InvalidArgument` unless both count lists have one entry per rank and
    /// sum to their buffer's length, and `send_counts[rank] ==
    /// recv_counts[rank]`.
    pub fn all_to_all_v<'a, T: NcclType>(
        &'a self,
        send: &'a impl DeviceBuffer<T>,
        send_counts: &[usize],
        recv: &'a mut impl DeviceBufferMut<T>,
        recv_counts: &[usize],
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        const OP: &str = "all_to_all_v";
        let mut c = Call::begin::<T>(self, OP, stream)?;
        let world = self.world_size();
        let soff = contract::v_counts(OP, "send_counts", send_counts, world, send.len())?;
        let roff = contract::v_counts(OP, "recv_counts", recv_counts, world, recv.len())?;
        let me = self.rank();
        contract::own_pair(OP, send_counts[me], recv_counts[me])?;
        let own = copies_own_chunk();
        let (s, d) = (c.read(send), c.write(recv));
        c.run_many("ncclGroupEnd", |c| {
            // the copy first: if it fails, nothing of NCCL's is queued yet
            if own {
                c.copy(
                    at::<T>(d, roff[me]),
                    at::<T>(s, soff[me]),
                    send_counts[me] * size_of::<T>(),
                )?;
            }
            for p in 0..world {
                let (sn, rn) = (send_counts[p], recv_counts[p]);
                if own && p == me {
                    continue;
                }
                if sn > 0 {
                    // SAFETY: see above; shard p of send is in bounds.
                    c.nccl("ncclSend", |comm, st| unsafe {
                        sys::ncclSend(at::<T>(s, soff[p]), sn, T::DATATYPE, p as i32, comm, st)
                    })?;
                }
                if rn > 0 {
                    // SAFETY: see above; shard p of recv is in bounds.
                    c.nccl("ncclRecv", |comm, st| unsafe {
                        sys::ncclRecv(at::<T>(d, roff[p]), rn, T::DATATYPE, p as i32, comm, st)
                    })?;
                }
            }
            Ok(())
        })
    }
}

/// The scratch memory [`Comm::connect`] uses while it runs.
pub const CONNECT_BYTES: usize = 32 << 20;

impl Comm {
    /// Connects this rank to the peers its collectives will use, now rather
    /// than inside the first collective (NCCL connects lazily, at a
    /// collective's first use of an algorithm): a few in-place all-reduces
    /// of 1 KiB to [`CONNECT_BYTES`] (×8) on the context's default stream,
    /// then [`Comm::wait_or_abort`] for them, at most `timeout`. Collective over all
    /// ranks, like an all-reduce.
    ///
    /// Afterwards a collective of a blocking communicator only enqueues
    /// work, so a peer that dies or never comes is seen by
    /// [`Comm::wait_or_abort`] (with its deadline) instead of blocking inside NCCL.
    /// [`bootstrap::init_from_launcher`](crate::bootstrap) does this by
    /// default. Send and receive still connect to a peer at their first use.
    ///
    /// The default stream is used because a new stream would turn on
    /// cudarc's cross-stream event tracking for the whole context.
    ///
    /// # Errors
    /// As [`Comm::all_reduce_in_place`] and [`Comm::wait_or_abort`] (which aborts the
    /// communicator on a failure or at `timeout`); CUDA's error allocating
    /// the scratch memory.
    pub fn connect(&self, timeout: std::time::Duration) -> Result<()> {
        let stream = self.context().default_stream();
        let mut scratch = stream.alloc_zeros::<u8>(CONNECT_BYTES)?;
        let mut n = 1 << 10;
        while n <= CONNECT_BYTES {
            let mut part = scratch.slice_mut(0..n);
            self.all_reduce_in_place(&mut part, ReduceOp::Max, &stream)?;
            n *= 8;
        }
        self.wait_or_abort(&stream, timeout)?;
        drop(scratch);
        Ok(())
    }
}
