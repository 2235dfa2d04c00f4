//! The measurement, as nccl-tests times it: warm-up, then `iters`
//! back-to-back launches between two events and one synchronization; the
//! mean over iterations and ranks. Graph mode (`-G`) captures the timed loop
//! once, replays it once untimed, then times `graph_replays` replays (per-op
//! figures divide by replays × iters). The `host` column is the CPU time
//! per enqueue. The buffers are cudarc's `CudaSlice`, the library's
//! `NcclBuffer` or a `SymmetricPool`'s (`--buffers`, the `buffers` module),
//! and each rank's context
//! has a second, idle stream, as a program with a compute and a
//! communication stream has: the default path with event tracking on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, sys as cu};
use nccl::{Comm, Memory, ReduceOp};
use nccl::{DeviceBuffer, DeviceBufferMut};

use crate::buffers::{self, BufKind, Make, Plain};
use crate::check;
use crate::elem::Elem;
use crate::options::{self, Opts};
use crate::output::{self, Progress};

/// One rank driven by this process: its communicator and stream.
pub struct Rank {
    pub comm: Comm,
    pub stream: Arc<CudaStream>,
}

/// One measurement: a collective at one size, in or out of place.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub coll: String,
    pub bytes: usize,
    pub count: usize,
    pub in_place: bool,
    pub time_us: f64,
    pub algbw: f64,
    pub busbw: f64,
    pub host_us: f64,
    /// Wrong elements (summed over ranks); -1: no such measurement (no
    /// in-place form).
    pub wrong: i64,
}

/// Each rank's send and receive buffers.
pub type Buffers<B> = Vec<(B, B)>;

/// nccl-tests' bus bandwidth factor.
pub fn bus_factor(coll: &str, n: usize) -> f64 {
    let n = n as f64;
    match coll {
        "all_reduce" => 2.0 * (n - 1.0) / n,
        "all_gather" | "reduce_scatter" | "all_to_all" | "gather" | "scatter" => (n - 1.0) / n,
        _ => 1.0,
    }
}

/// Elements per rank for `size` bytes as nccl-tests counts them (send count
/// for all_gather, receive count for reduce_scatter): all_gather and
/// reduce_scatter split `size` over the ranks; all_to_all's buffer is
/// `size`, rounded to a multiple of the world size.
pub fn count_of(coll: &str, size: usize, esize: usize, world: usize) -> usize {
    let elems = (size / esize).max(1);
    match coll {
        "all_gather" | "reduce_scatter" | "gather" | "scatter" => (elems / world).max(1),
        "all_to_all" => (elems / world).max(1) * world,
        _ => elems,
    }
}

/// Sizes of the send and receive buffers for `count`.
pub fn lens(coll: &str, count: usize, world: usize, in_place: bool) -> (usize, usize) {
    match coll {
        "all_gather" | "gather" => (count, count * world),
        "scatter" => (count * world, count),
        // in place: the input is the whole (world × count) buffer
        "reduce_scatter" if in_place => (count * world, count * world),
        "reduce_scatter" => (count * world, count),
        _ => (count, count),
    }
}

/// Issues one collective on one rank, on `s` (a stream, or a group's view of
/// it).
#[allow(clippy::too_many_arguments)]
pub fn issue<'a, T: Elem, B: DeviceBuffer<T> + DeviceBufferMut<T>>(
    coll: &str,
    r: &'a Rank,
    send: &'a B,
    recv: &'a mut B,
    in_place: bool,
    op: ReduceOp<'a>,
    root: usize,
    s: impl nccl::Enqueue<'a> + Copy,
) -> nccl::Result<()> {
    let c = &r.comm;
    let world = c.world_size();
    match (coll, in_place) {
        ("all_reduce", false) => c.all_reduce(send, recv, op, s),
        ("all_reduce", true) => c.all_reduce_in_place(recv, op, s),
        ("all_gather", false) => c.all_gather(send, recv, s),
        ("all_gather", true) => c.all_gather_in_place(recv, s),
        ("reduce_scatter", false) => c.reduce_scatter(send, recv, op, s),
        ("reduce_scatter", true) => c.reduce_scatter_in_place(recv, op, s),
        ("broadcast", false) => c.broadcast(send, recv, root, s),
        ("broadcast", true) => c.broadcast_in_place(recv, root, s),
        ("reduce", false) => c.reduce(send, Some(recv), op, root, s),
        ("reduce", true) => c.reduce_in_place(recv, op, root, s),
        ("all_to_all", _) => c.all_to_all(send, recv, s),
        // every rank passes both buffers; only the root's full one is used
        ("gather", _) => c.gather(send, Some(recv), root, s),
        ("scatter", _) => c.scatter(Some(send), recv, root, s),
        ("sendrecv", _) => {
            let next = (c.rank() + 1) % world;
            let prev = (c.rank() + world - 1) % world;
            c.send(send, next, s)?;
            c.recv(recv, prev, s)
        }
        _ => unreachable!("validated collective"),
    }
}

/// Issues the collective once on every rank: inside one group when one
/// process drives several GPUs (or for a send/recv pair), directly otherwise.
pub fn issue_all<T: Elem, B: DeviceBuffer<T> + DeviceBufferMut<T>>(
    o: &Opts,
    ranks: &[Rank],
    bufs: &mut [(B, B)],
    coll: &str,
    in_place: bool,
    op: ReduceOp<'_>,
) -> nccl::Result<()> {
    if let ([r], [(s, d)]) = (ranks, &mut *bufs) {
        if coll != "sendrecv" {
            return issue::<T, B>(coll, r, s, d, in_place, op, o.root, &*r.stream);
        }
    }
    nccl::group(|g| {
        for (r, (s, d)) in ranks.iter().zip(bufs.iter_mut()) {
            issue::<T, B>(coll, r, s, d, in_place, op, o.root, g.on(&r.stream))?;
        }
        Ok(())
    })
}

/// The reduction named `-o` (one of `options::OPS`: the parser refused
/// any other).
fn op_of(name: &str) -> ReduceOp<'static> {
    match name {
        "sum" => ReduceOp::Sum,
        "prod" => ReduceOp::Prod,
        "max" => ReduceOp::Max,
        "min" => ReduceOp::Min,
        "avg" => ReduceOp::Avg,
        other => unreachable!(
            "op {other:?} passed the parser: not one of {:?}",
            options::OPS
        ),
    }
}

/// `--no-event-tracking`: buffers allocated from now on carry no cudarc events.
pub fn untrack(ctx: &Arc<CudaContext>) {
    // SAFETY: cudarc leaves cross-stream ordering to us for buffers made after
    // this. The benchmark uses each buffer on its rank's one stream only, and
    // synchronizes that stream before the buffers are freed.
    unsafe { ctx.disable_event_tracking() }
}

/// Sweeps every collective and size of `o`, printing the table (rank 0)
/// and appending the measurements to `rows`.
pub fn run<T: Elem>(
    o: &Opts,
    ranks: &[Rank],
    world: usize,
    rows: &mut Vec<Row>,
) -> nccl::Result<()> {
    // kept until the sweep is over
    let _second: Vec<Arc<CudaStream>> = ranks
        .iter()
        .map(|r| buffers::second_stream(&r.stream))
        .collect::<nccl::Result<_>>()?;
    if ranks[0].comm.rank() == 0 {
        eprintln!(
            "nccl-bench: buffers {}, event tracking {}, two streams per context",
            o.buffers.name(),
            if o.event_tracking { "on" } else { "off" }
        );
    }
    match o.buffers {
        BufKind::Slice => sweep::<T, _>(o, ranks, world, rows, &Plain::<CudaSlice<T>>::default()),
        BufKind::Nccl => sweep::<T, _>(o, ranks, world, rows, &Memory::Nccl),
        BufKind::Stream => sweep::<T, _>(o, ranks, world, rows, &Memory::Stream),
        BufKind::Symmetric => symmetric::<T>(o, ranks, world, rows),
    }
}

/// [`run`] on buffers of each rank's symmetric pool; says what the pools
/// did (registrations, reuses, whether NCCL made windows).
#[cfg(nccl_fn = "ncclCommWindowRegister")]
fn symmetric<T: Elem>(
    o: &Opts,
    ranks: &[Rank],
    world: usize,
    rows: &mut Vec<Row>,
) -> nccl::Result<()> {
    let pools = ranks
        .iter()
        // SAFETY: every rank of the job runs this same sweep: the same
        // allocations and drops, of the same sizes, in the same order, each
        // buffer used whole by the same collective on every rank.
        .map(|r| unsafe { nccl::SymmetricPool::new(&r.comm) })
        .collect::<nccl::Result<Vec<_>>>()?;
    let swept = sweep::<T, _>(o, ranks, world, rows, &pools.as_slice());
    if ranks[0].comm.rank() == 0 {
        let s = pools[0].stats();
        let kind = match pools[0].is_symmetric() {
            Some(true) => "symmetric windows",
            Some(false) => "NO windows (no symmetric memory support): plain ncclMemAlloc memory",
            None => "nothing registered",
        };
        eprintln!(
            "nccl-bench: symmetric pool of rank 0: {kind}; {} registrations, {} reuses, {} MiB held",
            s.registrations,
            s.reuses,
            s.bytes_held >> 20
        );
    }
    swept
}

/// `--buffers symmetric` under a header without windows: refused.
#[cfg(not(nccl_fn = "ncclCommWindowRegister"))]
fn symmetric<T: Elem>(_: &Opts, _: &[Rank], _: usize, _: &mut Vec<Row>) -> nccl::Result<()> {
    crate::fail(
        "--buffers symmetric: this nccl-bench was built against an nccl.h without windows (NCCL 2.27+)",
    )
}

/// [`run`] on the buffers `make` makes.
fn sweep<T: Elem, M: Make<T>>(
    o: &Opts,
    ranks: &[Rank],
    world: usize,
    rows: &mut Vec<Row>,
    make: &M,
) -> nccl::Result<()> {
    let op = op_of(&o.op);
    let sizes = options::sizes(o);
    let lead = ranks[0].comm.rank() == 0;
    let mut progress = Progress::new(o.progress && lead, o.colls.len() * sizes.len() * 2);
    for coll in &o.colls {
        if lead {
            output::print_header(o, coll, world, T::NAME);
        }
        for &size in &sizes {
            let count = count_of(coll, size, std::mem::size_of::<T>(), world);
            let mut line = [Row::default(), Row::default()];
            for (k, in_place) in [false, true].into_iter().enumerate() {
                if in_place
                    && matches!(
                        coll.as_str(),
                        "all_to_all" | "sendrecv" | "gather" | "scatter"
                    )
                {
                    line[k].wrong = -1; // no in-place form
                    continue;
                }
                line[k] = measure::<T, M>(o, ranks, world, coll, size, count, in_place, op, make)?;
                progress.step(coll, size);
            }
            // mean over ranks: times from every rank of a launched job
            average_over_ranks(ranks, &mut line)?;
            if lead {
                progress.clear();
                output::print_row(o, size, count, T::NAME, &line);
            }
            rows.extend(line.into_iter().filter(|r| r.wrong >= 0));
        }
    }
    Ok(())
}

/// One collective at one size, in or out of place: timed, then checked.
#[allow(clippy::too_many_arguments)]
fn measure<T: Elem, M: Make<T>>(
    o: &Opts,
    ranks: &[Rank],
    world: usize,
    coll: &str,
    size: usize,
    count: usize,
    in_place: bool,
    op: ReduceOp<'_>,
    make: &M,
) -> nccl::Result<Row> {
    let (sl, rl) = lens(coll, count, world, in_place);
    let mut bufs: Buffers<M::Buf> = Vec::new();
    for (i, r) in ranks.iter().enumerate() {
        let v = T::from_f64(check::contribution(r.comm.rank()));
        let send = make.filled(i, &r.stream, v, sl)?;
        let recv = if in_place {
            make.filled(i, &r.stream, v, rl)?
        } else {
            make.zeros(i, &r.stream, rl)?
        };
        bufs.push((send, recv));
    }
    for _ in 0..o.warmup {
        issue_all::<T, M::Buf>(o, ranks, &mut bufs, coll, in_place, op)?;
    }
    for r in ranks {
        r.stream.synchronize()?;
    }
    let (ms, host) = timed::<T, M::Buf>(o, ranks, &mut bufs, coll, in_place, op)?;
    // graph mode times `graph_replays` replays of `iters` operations
    let ops = (o.iters * if o.graph { o.graph_replays } else { 1 }) as f64;
    let time_us = ms * 1000.0 / ops;
    let esize = std::mem::size_of::<T>();
    let bytes_moved = count
        * esize
        * if matches!(coll, "all_gather" | "reduce_scatter" | "gather" | "scatter") {
            world
        } else {
            1
        };
    let algbw = bytes_moved as f64 / (time_us * 1e3);
    let wrong = if o.check {
        check::check_once(o, ranks, &mut bufs, coll, world, count, in_place, op)?
    } else {
        0
    };
    Ok(Row {
        coll: coll.to_string(),
        bytes: size,
        count,
        in_place,
        time_us,
        algbw,
        busbw: algbw * bus_factor(coll, world),
        host_us: host.as_secs_f64() * 1e6 / ops,
        wrong,
    })
}

/// The timed part: milliseconds between the two events on rank 0's stream,
/// and the host time spent enqueueing.
fn timed<T: Elem, B: DeviceBuffer<T> + DeviceBufferMut<T>>(
    o: &Opts,
    ranks: &[Rank],
    bufs: &mut Buffers<B>,
    coll: &str,
    in_place: bool,
    op: ReduceOp<'_>,
) -> nccl::Result<(f64, Duration)> {
    let ctx = ranks[0].comm.context();
    let start = ctx.new_event(Some(cu::CUevent_flags::CU_EVENT_DEFAULT))?;
    let end = ctx.new_event(Some(cu::CUevent_flags::CU_EVENT_DEFAULT))?;
    let host = if o.graph {
        let graphs = ranks
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.stream
                    .begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
                for _ in 0..o.iters {
                    issue_all::<T, B>(
                        o,
                        std::slice::from_ref(r),
                        std::slice::from_mut(&mut bufs[i]),
                        coll,
                        in_place,
                        op,
                    )?;
                }
                r.stream
                    .end_capture(cu::CUgraphInstantiate_flags(0))?
                    .ok_or(nccl::Error::Cuda(cudarc::driver::DriverError(
                        cu::cudaError_enum::CUDA_ERROR_UNKNOWN,
                    )))
            })
            .collect::<nccl::Result<Vec<_>>>()?;
        // one replay first (the first launch uploads the graph)
        for (g, r) in graphs.iter().zip(ranks) {
            g.launch()?;
            r.stream.synchronize()?;
        }
        start.record(&ranks[0].stream)?;
        let t = Instant::now();
        for _ in 0..o.graph_replays {
            for g in &graphs {
                g.launch()?;
            }
        }
        let h = t.elapsed();
        end.record(&ranks[0].stream)?;
        h
    } else {
        start.record(&ranks[0].stream)?;
        let t = Instant::now();
        for _ in 0..o.iters {
            issue_all::<T, B>(o, ranks, bufs, coll, in_place, op)?;
        }
        let h = t.elapsed();
        end.record(&ranks[0].stream)?;
        h
    };
    for r in ranks {
        r.stream.synchronize()?;
    }
    Ok((start.elapsed_ms(&end)? as f64, host))
}

/// Averages the times of every rank of a launched job (through the
/// communicator itself), as nccl-tests does through MPI.
fn average_over_ranks(ranks: &[Rank], line: &mut [Row; 2]) -> nccl::Result<()> {
    let world = ranks[0].comm.world_size();
    if ranks.len() == world {
        return Ok(()); // one process sees every rank's stream through rank 0's events
    }
    let r = &ranks[0];
    let mine: Vec<f64> = line
        .iter()
        .flat_map(|x| [x.time_us, x.host_us, x.wrong as f64])
        .collect();
    let mut buf = r.stream.clone_htod(&mine)?;
    r.comm
        .all_reduce_in_place(&mut buf, ReduceOp::Sum, &r.stream)?;
    let sum = r.stream.clone_dtoh(&buf)?;
    r.stream.synchronize()?;
    for (k, row) in line.iter_mut().enumerate() {
        if row.wrong < 0 {
            continue;
        }
        let scale = row.time_us;
        row.time_us = sum[3 * k] / world as f64;
        row.host_us = sum[3 * k + 1] / world as f64;
        row.wrong = sum[3 * k + 2] as i64;
        if scale > 0.0 {
            row.algbw *= scale / row.time_us;
            row.busbw *= scale / row.time_us;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_counts_and_lengths() {
        assert_eq!(bus_factor("all_reduce", 4), 1.5);
        assert_eq!(bus_factor("all_gather", 4), 0.75);
        assert_eq!(bus_factor("broadcast", 4), 1.0);
        // 64 B of f32 on 4 ranks
        assert_eq!(count_of("all_reduce", 64, 4, 4), 16);
        assert_eq!(count_of("all_gather", 64, 4, 4), 4);
        assert_eq!(count_of("all_to_all", 8, 4, 4), 4);
        assert_eq!(lens("all_gather", 4, 4, false), (4, 16));
        assert_eq!(lens("reduce_scatter", 4, 4, false), (16, 4));
        assert_eq!(lens("reduce_scatter", 4, 4, true), (16, 16));
        assert_eq!(lens("broadcast", 4, 4, true), (4, 4));
    }
}
