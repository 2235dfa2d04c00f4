//! `nccl-bench`: an nccl-tests-style benchmark over the safe layer (run it
//! with `cargo xtask bench [ARGS]`).
//!
//! One process per GPU under a launcher (torchrun, srun, `cargo xtask launch`;
//! `--one-gpu` ranks for functional runs), or one process driving `-g N` GPUs.
//! Timing as nccl-tests: warm-up, then `-n` back-to-back launches between two
//! events, one sync; the mean over iterations and ranks. Bus bandwidth uses
//! nccl-tests' factors. The extra `host us` column is the CPU time per
//! enqueue. `-G` captures the timed loop in a CUDA graph, replays it once
//! untimed, then times 10 replays (per-op figures divide by 10 × iters).

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, sys as cu};
use nccl::{Comm, NcclType, ReduceOp, bf16, f16};

const USAGE: &str = "\
usage: nccl-bench [options]
  -c, --coll LIST     all_reduce,all_gather,reduce_scatter,broadcast,reduce,all_to_all,sendrecv or all
                      (default all_reduce)
  -b, --minbytes N    smallest size (default 8; K, M, G suffixes)
  -e, --maxbytes N    largest size (default 128M)
  -f, --stepfactor F  multiply the size by F each step (default 2)
  -i, --stepbytes N   add N bytes each step instead
  -n, --iters N       timed iterations (default 20)
  -w, --warmup N      warm-up iterations (default 5)
  -d, --datatype T    f32 f16 bf16 f64 i8 u8 i32 u32 i64 u64 (default f32)
  -o, --op OP         sum prod max min avg (default sum)
  -r, --root R        root of broadcast and reduce (default 0)
  -g, --ngpus N       GPUs driven by this process (default: every visible GPU; under a
                      launcher, one per process)
  -G, --graph         capture the timed loop in a CUDA graph, replay it once, then time 10
                      replays (implies
                      --no-event-tracking: CUDA refuses cudarc's event waits in a capture)
  -C, --check 0|1     check results (default 1)
      --json FILE     write the results as JSON
      --plot FILE     write busbw and time vs size as SVG (one line per collective)
      --no-event-tracking
                      turn off cudarc's cross-stream event tracking for the benchmark's
                      buffers (each collective then skips cudarc's event waits and records,
                      as a program that orders its streams itself would)
      --nonblocking   non-blocking communicator (default: blocking, as nccl-tests; NCCL then
                      launches each call from a thread of its own; one GPU per process)
      --no-progress   no progress bar on stderr";

#[derive(Clone, Debug)]
struct Opts {
    colls: Vec<String>,
    min: usize,
    max: usize,
    factor: f64,
    step: usize,
    iters: usize,
    warmup: usize,
    dtype: String,
    op: String,
    root: usize,
    /// `None`: every visible GPU.
    ngpus: Option<usize>,
    graph: bool,
    check: bool,
    json: Option<String>,
    plot: Option<String>,
    progress: bool,
    event_tracking: bool,
    nonblocking: bool,
}

fn bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .map(|n| n * mul)
        .map_err(|_| format!("{s:?} is not a size"))
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        colls: vec!["all_reduce".into()],
        min: 8,
        max: 128 << 20,
        factor: 2.0,
        step: 0,
        iters: 20,
        warmup: 5,
        dtype: "f32".into(),
        op: "sum".into(),
        root: 0,
        ngpus: None,
        graph: false,
        check: true,
        json: None,
        plot: None,
        progress: true,
        event_tracking: true,
        nonblocking: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "-c" | "--coll" => {
                let l = v()?;
                o.colls = if l == "all" {
                    ALL.iter().map(|s| s.to_string()).collect()
                } else {
                    l.split(',').map(str::to_string).collect()
                };
                for c in &o.colls {
                    if !ALL.contains(&c.as_str()) {
                        return Err(format!("unknown collective {c:?}"));
                    }
                }
            }
            "-b" | "--minbytes" => o.min = bytes(&v()?)?,
            "-e" | "--maxbytes" => o.max = bytes(&v()?)?,
            "-f" | "--stepfactor" => o.factor = v()?.parse().map_err(|_| "-f takes a number")?,
            "-i" | "--stepbytes" => o.step = bytes(&v()?)?,
            "-n" | "--iters" => o.iters = v()?.parse().map_err(|_| "-n takes a number")?,
            "-w" | "--warmup" => o.warmup = v()?.parse().map_err(|_| "-w takes a number")?,
            "-d" | "--datatype" => o.dtype = v()?,
            "-o" | "--op" => o.op = v()?,
            "-r" | "--root" => o.root = v()?.parse().map_err(|_| "-r takes a rank")?,
            "-g" | "--ngpus" => o.ngpus = Some(v()?.parse().map_err(|_| "-g takes a number")?),
            "-G" | "--graph" => o.graph = true,
            "-C" | "--check" => o.check = v()? != "0",
            "--json" => o.json = Some(v()?),
            "--plot" => o.plot = Some(v()?),
            "--no-progress" => o.progress = false,
            "--no-event-tracking" => o.event_tracking = false,
            "--nonblocking" => o.nonblocking = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown option {other:?}\n{USAGE}")),
        }
    }
    if o.iters == 0
        || o.min == 0
        || o.max < o.min
        || (o.step == 0 && o.factor <= 1.0)
        || o.ngpus == Some(0)
    {
        return Err(format!("bad sizes or counts\n{USAGE}"));
    }
    if o.graph {
        o.event_tracking = false;
    }
    Ok(o)
}

/// Graph mode: the captured loop of `iters` operations is replayed this many
/// times (after one untimed replay) between the two events.
const GRAPH_REPLAYS: usize = 10;

const ALL: [&str; 7] = [
    "all_reduce",
    "all_gather",
    "reduce_scatter",
    "broadcast",
    "reduce",
    "all_to_all",
    "sendrecv",
];

/// nccl-tests' bus bandwidth factor.
fn bus_factor(coll: &str, n: usize) -> f64 {
    let n = n as f64;
    match coll {
        "all_reduce" => 2.0 * (n - 1.0) / n,
        "all_gather" | "reduce_scatter" | "all_to_all" => (n - 1.0) / n,
        _ => 1.0,
    }
}

fn op_of(s: &str) -> Result<ReduceOp<'static>, String> {
    Ok(match s {
        "sum" => ReduceOp::Sum,
        "prod" => ReduceOp::Prod,
        "max" => ReduceOp::Max,
        "min" => ReduceOp::Min,
        "avg" => ReduceOp::Avg,
        other => return Err(format!("unknown op {other:?}")),
    })
}

/// One rank's buffers for one size: `count` elements per rank as nccl-tests
/// counts them (send count for all_gather, recv count for reduce_scatter).
struct Rank {
    comm: Comm,
    stream: Arc<CudaStream>,
}

#[derive(Clone, Debug, Default)]
struct Row {
    coll: String,
    bytes: usize,
    count: usize,
    in_place: bool,
    time_us: f64,
    algbw: f64,
    busbw: f64,
    host_us: f64,
    wrong: i64,
}

trait Elem: NcclType + cudarc::driver::ValidAsZeroBits + Default {
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
}
macro_rules! elem {
    ($t:ty, $from:expr, $to:expr) => {
        impl Elem for $t {
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
            fn to_f64(self) -> f64 {
                $to(self)
            }
        }
    };
}
elem!(f32, |v| v as f32, |x: f32| x as f64);
elem!(f64, |v| v, |x: f64| x);
elem!(f16, f16::from_f64, |x: f16| x.to_f64());
elem!(bf16, bf16::from_f64, |x: bf16| x.to_f64());
elem!(i8, |v| v as i8, |x: i8| x as f64);
elem!(u8, |v| v as u8, |x: u8| x as f64);
elem!(i32, |v| v as i32, |x: i32| x as f64);
elem!(u32, |v| v as u32, |x: u32| x as f64);
elem!(i64, |v| v as i64, |x: i64| x as f64);
elem!(u64, |v| v as u64, |x: u64| x as f64);

/// Sizes of the send and receive buffers for `count`.
fn lens(coll: &str, count: usize, world: usize) -> (usize, usize) {
    match coll {
        "all_gather" => (count, count * world),
        "reduce_scatter" => (count * world, count),
        _ => (count, count),
    }
}

/// Issues one collective on one rank, on `s` (a stream, or a group's view
/// of it).
#[allow(clippy::too_many_arguments)]
fn issue<'a, T: Elem>(
    coll: &str,
    r: &'a Rank,
    send: &'a CudaSlice<T>,
    recv: &'a mut CudaSlice<T>,
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
        ("reduce_scatter", true) => {
            // in place: the input is the whole (world × count) buffer
            let _ = send;
            c.reduce_scatter_in_place(recv, op, s)
        }
        ("broadcast", false) => c.broadcast(send, recv, root, s),
        ("broadcast", true) => c.broadcast_in_place(recv, root, s),
        ("reduce", false) => c.reduce(send, Some(recv), op, root, s),
        ("reduce", true) => c.reduce_in_place(recv, op, root, s),
        ("all_to_all", _) => c.all_to_all(send, recv, s),
        ("sendrecv", _) => {
            let next = (c.rank() + 1) % world;
            let prev = (c.rank() + world - 1) % world;
            c.send(send, next, s)?;
            c.recv(recv, prev, s)
        }
        _ => unreachable!("validated collective"),
    }
}

/// Issues one collective on every rank: inside one group when one process
/// drives several GPUs (or for send/recv pairs), directly otherwise.
fn on_all<T: Elem>(
    coll: &str,
    ranks: &[Rank],
    bufs: &mut [(CudaSlice<T>, CudaSlice<T>)],
    in_place: bool,
    op: ReduceOp<'_>,
    root: usize,
) -> nccl::Result<()> {
    if let ([r], [(s, d)]) = (ranks, &mut *bufs) {
        if coll != "sendrecv" {
            return issue(coll, r, s, d, in_place, op, root, &*r.stream);
        }
    }
    nccl::group(|g| {
        for (r, (s, d)) in ranks.iter().zip(bufs.iter_mut()) {
            issue(coll, r, s, d, in_place, op, root, g.on(&r.stream))?;
        }
        Ok(())
    })
}

/// `--no-event-tracking`: buffers allocated from now on carry no cudarc events.
fn untrack(ctx: &Arc<CudaContext>) {
    // SAFETY: cudarc leaves cross-stream ordering to us for buffers made after
    // this. The benchmark uses each buffer on its rank's one stream only, and
    // synchronizes that stream before the buffers are freed.
    unsafe { ctx.disable_event_tracking() }
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("nccl-bench: {e}");
    std::process::exit(1)
}

fn bench<T: Elem>(o: &Opts, ranks: &[Rank], world: usize, rows: &mut Vec<Row>) -> nccl::Result<()> {
    let op = op_of(&o.op).unwrap_or_else(|e| fail(e));
    let esize = std::mem::size_of::<T>();
    let mut sizes = Vec::new();
    let mut b = o.min;
    while b <= o.max {
        sizes.push(b);
        b = if o.step > 0 {
            b + o.step
        } else {
            ((b as f64) * o.factor).ceil() as usize
        };
    }
    let total = o.colls.len() * sizes.len() * 2;
    let mut done = 0;
    let lead = ranks[0].comm.rank() == 0;
    for coll in &o.colls {
        if lead {
            println!(
                "#\n# {coll}  ({} ranks, {}, op {}, root {}, {} iters, {} warm-up{})",
                world,
                T::NAME,
                o.op,
                o.root,
                o.iters,
                o.warmup,
                if o.graph { ", CUDA graph" } else { "" }
            );
            println!(
                "# cudarc event tracking: {}; communicator: {}",
                if o.event_tracking {
                    "on (default)"
                } else {
                    "off (--no-event-tracking)"
                },
                if o.nonblocking {
                    "non-blocking (--nonblocking)"
                } else {
                    "blocking (default)"
                }
            );
            println!(
                "# {:>12} {:>12} {:>6} {:>6} {:>5}   {:>9} {:>8} {:>8} {:>6} {:>8}   {:>9} {:>8} {:>8} {:>6} {:>8}",
                "size",
                "count",
                "type",
                "redop",
                "root",
                "time",
                "algbw",
                "busbw",
                "#wrong",
                "host",
                "time",
                "algbw",
                "busbw",
                "#wrong",
                "host"
            );
            println!(
                "# {:>12} {:>12} {:>6} {:>6} {:>5}   {:>9} {:>8} {:>8} {:>6} {:>8}   {:>9} {:>8} {:>8} {:>6} {:>8}",
                "(B)",
                "(elements)",
                "",
                "",
                "",
                "(us)",
                "(GB/s)",
                "(GB/s)",
                "",
                "(us)",
                "(us)",
                "(GB/s)",
                "(GB/s)",
                "",
                "(us)"
            );
        }
        for &size in &sizes {
            // elements per rank as nccl-tests counts them: all_gather and
            // reduce_scatter split `size` over the ranks; all_to_all's buffer
            // is `size`, rounded to a multiple of the world size
            let elems = (size / esize).max(1);
            let count = match coll.as_str() {
                "all_gather" | "reduce_scatter" => (elems / world).max(1),
                "all_to_all" => (elems / world).max(1) * world,
                _ => elems,
            };
            let mut line = [Row::default(), Row::default()];
            for (k, in_place) in [false, true].into_iter().enumerate() {
                if in_place && matches!(coll.as_str(), "all_to_all" | "sendrecv") {
                    line[k].wrong = -1; // no in-place form
                    continue;
                }
                let (sl, rl) = lens(coll, count, world);
                let rl = if in_place && coll == "reduce_scatter" {
                    sl
                } else {
                    rl
                };
                let mut bufs: Vec<(CudaSlice<T>, CudaSlice<T>)> = Vec::new();
                for r in ranks {
                    let v = T::from_f64((r.comm.rank() % 4 + 1) as f64);
                    let send = r.stream.clone_htod(&vec![v; sl])?;
                    let recv = if in_place {
                        r.stream.clone_htod(&vec![v; rl])?
                    } else {
                        r.stream.alloc_zeros::<T>(rl)?
                    };
                    bufs.push((send, recv));
                }
                // warm-up
                for _ in 0..o.warmup {
                    on_all(coll, ranks, &mut bufs, in_place, op, o.root)?;
                }
                for r in ranks {
                    r.stream.synchronize()?;
                }
                let ctx = ranks[0].comm.context();
                let start = ctx.new_event(Some(cu::CUevent_flags::CU_EVENT_DEFAULT))?;
                let end = ctx.new_event(Some(cu::CUevent_flags::CU_EVENT_DEFAULT))?;
                let host = if o.graph {
                    let graphs = ranks
                        .iter()
                        .enumerate()
                        .map(|(i, r)| {
                            r.stream.begin_capture(
                                cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                            )?;
                            for _ in 0..o.iters {
                                on_all(
                                    coll,
                                    std::slice::from_ref(r),
                                    std::slice::from_mut(&mut bufs[i]),
                                    in_place,
                                    op,
                                    o.root,
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
                    for _ in 0..GRAPH_REPLAYS {
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
                        on_all(coll, ranks, &mut bufs, in_place, op, o.root)?;
                    }
                    let h = t.elapsed();
                    end.record(&ranks[0].stream)?;
                    h
                };
                for r in ranks {
                    r.stream.synchronize()?;
                }
                let ms = start.elapsed_ms(&end)? as f64;
                // graph mode times GRAPH_REPLAYS replays of `iters` operations
                let ops = (o.iters * if o.graph { GRAPH_REPLAYS } else { 1 }) as f64;
                let time_us = ms * 1000.0 / ops;
                let bytes_moved = count
                    * esize
                    * if matches!(coll.as_str(), "all_gather" | "reduce_scatter") {
                        world
                    } else {
                        1
                    };
                let algbw = bytes_moved as f64 / (time_us * 1e3);
                let mut wrong = 0i64;
                if o.check {
                    // one more operation on fresh data, checked on the host
                    for (i, r) in ranks.iter().enumerate() {
                        let v = T::from_f64((r.comm.rank() % 4 + 1) as f64);
                        r.stream.memcpy_htod(&vec![v; sl], &mut bufs[i].0)?;
                        if in_place {
                            r.stream.memcpy_htod(&vec![v; rl], &mut bufs[i].1)?;
                        }
                    }
                    on_all(coll, ranks, &mut bufs, in_place, op, o.root)?;
                    for (i, r) in ranks.iter().enumerate() {
                        let got = r.stream.clone_dtoh(&bufs[i].1)?;
                        r.stream.synchronize()?;
                        wrong += count_wrong::<T>(
                            coll,
                            &o.op,
                            o.root,
                            r.comm.rank(),
                            world,
                            count,
                            in_place,
                            &got,
                        );
                    }
                }
                line[k] = Row {
                    coll: coll.clone(),
                    bytes: size,
                    count,
                    in_place,
                    time_us,
                    algbw,
                    busbw: algbw * bus_factor(coll, world),
                    host_us: host.as_secs_f64() * 1e6 / ops,
                    wrong,
                };
                done += 1;
                if o.progress && lead {
                    let w = 30 * done / total;
                    eprint!(
                        "\r[{}{}] {done}/{total} {coll} {size} B   ",
                        "#".repeat(w),
                        " ".repeat(30 - w)
                    );
                    let _ = std::io::stderr().flush();
                }
            }
            // mean over ranks: times from every rank of a launched job
            average_over_ranks(ranks, &mut line)?;
            if lead {
                let cell = |r: &Row| {
                    if r.wrong < 0 {
                        format!(
                            "{:>9} {:>8} {:>8} {:>6} {:>8}",
                            "N/A", "N/A", "N/A", "N/A", "N/A"
                        )
                    } else {
                        format!(
                            "{:>9.2} {:>8.2} {:>8.2} {:>6} {:>8.2}",
                            r.time_us,
                            r.algbw,
                            r.busbw,
                            if o.check {
                                r.wrong.to_string()
                            } else {
                                "N/A".into()
                            },
                            r.host_us
                        )
                    }
                };
                if o.progress {
                    eprint!("\r{}\r", " ".repeat(80));
                }
                println!(
                    "  {:>12} {:>12} {:>6} {:>6} {:>5}   {}   {}",
                    size,
                    count,
                    T::NAME,
                    o.op,
                    o.root,
                    cell(&line[0]),
                    cell(&line[1])
                );
            }
            rows.extend(line.into_iter().filter(|r| r.wrong >= 0));
        }
    }
    Ok(())
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

/// Elements of `got` (this rank's output) that differ from the expected
/// result when rank `r` contributed `r % 4 + 1` everywhere.
#[allow(clippy::too_many_arguments)]
fn count_wrong<T: Elem>(
    coll: &str,
    op: &str,
    root: usize,
    rank: usize,
    world: usize,
    count: usize,
    in_place: bool,
    got: &[T],
) -> i64 {
    let v = |r: usize| (r % 4 + 1) as f64;
    let red = || {
        let xs = (0..world).map(v);
        match op {
            "sum" => xs.sum::<f64>(),
            "prod" => xs.product(),
            "max" => xs.fold(f64::MIN, f64::max),
            "min" => xs.fold(f64::MAX, f64::min),
            _ => (0..world).map(v).sum::<f64>() / world as f64,
        }
    };
    let want: Vec<f64> = match coll {
        "all_reduce" => vec![red(); count],
        "reduce" if rank == root => vec![red(); count],
        "reduce" => return 0,
        "broadcast" => vec![v(root); count],
        "all_gather" => (0..world).flat_map(|r| vec![v(r); count]).collect(),
        "reduce_scatter" if in_place => {
            let mut w = vec![f64::NAN; count * world];
            w[rank * count..(rank + 1) * count].fill(red());
            w
        }
        "reduce_scatter" => vec![red(); count],
        "all_to_all" => (0..world).flat_map(|r| vec![v(r); count / world]).collect(),
        "sendrecv" => vec![v((rank + world - 1) % world); count],
        _ => return 0,
    };
    got.iter()
        .zip(&want)
        .filter(|(g, w)| {
            !w.is_nan() && (T::from_f64(**w).to_f64() - g.to_f64()).abs() > 1e-2 * w.abs().max(1.0)
        })
        .count() as i64
        + (want.len() as i64 - got.len().min(want.len()) as i64)
}

fn write_json(path: &str, o: &Opts, world: usize, rows: &[Row]) -> std::io::Result<()> {
    let mut s = String::from("{\n");
    s += &format!(
        "  \"world\": {world}, \"datatype\": \"{}\", \"op\": \"{}\", \"iters\": {}, \"warmup\": {}, \"graph\": {}, \"event_tracking\": {}, \"nonblocking\": {},\n  \"nccl\": \"{}\", \"link\": \"{:?}\",\n  \"results\": [\n",
        o.dtype,
        o.op,
        o.iters,
        o.warmup,
        o.graph,
        o.event_tracking,
        o.nonblocking,
        nccl::version().map(|v| v.to_string()).unwrap_or_default(),
        nccl::sys::LINK_MODE
    );
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "    {{\"coll\": \"{}\", \"bytes\": {}, \"count\": {}, \"in_place\": {}, \"time_us\": {:.3}, \"algbw_gbs\": {:.3}, \"busbw_gbs\": {:.3}, \"host_us\": {:.3}, \"wrong\": {}}}",
                r.coll, r.bytes, r.count, r.in_place, r.time_us, r.algbw, r.busbw, r.host_us, r.wrong
            )
        })
        .collect();
    s += &items.join(",\n");
    s += "\n  ]\n}\n";
    std::fs::write(path, s)
}

/// An SVG with two panels (busbw and time against size, log scales), one
/// line per collective (out-of-place results).
fn write_svg(path: &str, rows: &[Row]) -> std::io::Result<()> {
    let colors = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    ];
    let pts: Vec<&Row> = rows
        .iter()
        .filter(|r| !r.in_place && r.time_us > 0.0)
        .collect();
    let (w, h, pad) = (520.0, 360.0, 60.0);
    let lx = |b: usize| (b as f64).log2();
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), r| {
        (a.min(lx(r.bytes)), b.max(lx(r.bytes)))
    });
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        2.0 * w,
        h
    );
    for (panel, (title, val, log)) in [
        (
            "busbw (GB/s)",
            (|r: &Row| r.busbw) as fn(&Row) -> f64,
            false,
        ),
        ("time (us)", |r: &Row| r.time_us, true),
    ]
    .into_iter()
    .enumerate()
    {
        let ox = panel as f64 * w;
        let f = |v: f64| if log { v.max(1e-3).log10() } else { v };
        let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |(a, b), r| {
            (a.min(f(val(r))), b.max(f(val(r))))
        });
        let (y0, y1) = if log {
            (y0, y1.max(y0 + 1e-9))
        } else {
            (0.0, y1.max(1e-9))
        };
        let px = |x: f64| ox + pad + (x - x0) / (x1 - x0).max(1e-9) * (w - 2.0 * pad);
        let py = |y: f64| h - pad - (y - y0) / (y1 - y0).max(1e-9) * (h - 2.0 * pad);
        svg += &format!(
            "<rect x=\"{}\" y=\"{pad}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\n",
            ox + pad,
            w - 2.0 * pad,
            h - 2.0 * pad
        );
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{title} vs size (bytes, log2)</text>\n",
            ox + w / 2.0,
            pad - 20.0
        );
        svg += &format!(
            "<text x=\"{}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\">{}</text>\n",
            ox + 4.0,
            py(y1) + 4.0,
            fmt_axis(y1, log),
            ox + 4.0,
            py(y0),
            fmt_axis(y0, log)
        );
        svg += &format!(
            "<text x=\"{}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n",
            px(x0),
            h - pad + 16.0,
            1u64 << x0 as u32,
            px(x1),
            h - pad + 16.0,
            1u64 << x1 as u32
        );
        let mut names: Vec<&str> = pts.iter().map(|r| r.coll.as_str()).collect();
        names.dedup();
        for (ci, name) in names.iter().enumerate() {
            let line: Vec<String> = pts
                .iter()
                .filter(|r| r.coll == *name)
                .map(|r| format!("{:.1},{:.1}", px(lx(r.bytes)), py(f(val(r)))))
                .collect();
            let c = colors[ci % colors.len()];
            svg += &format!(
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
                line.join(" ")
            );
            svg += &format!(
                "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{name}</text>\n",
                ox + pad + 8.0,
                pad + 16.0 + 14.0 * ci as f64
            );
        }
    }
    svg += "</svg>\n";
    std::fs::write(path, svg)
}

fn fmt_axis(v: f64, log: bool) -> String {
    if log {
        format!("{:.3}", 10f64.powf(v))
    } else {
        format!("{v:.1}")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = parse(&args).unwrap_or_else(|e| fail(e));
    match nccl::capabilities() {
        Ok(c) => eprint!("{c}"),
        Err(e) => fail(e),
    }
    let gpus = match nccl_rs_tests::gpu_count() {
        Ok(n) => n,
        Err(why) => {
            println!(
                "nccl-bench: no GPU to measure on this machine ({why}); the capability report is above."
            );
            return;
        }
    };
    let launched = nccl::LaunchInfo::from_env().is_ok();
    let ranks: Vec<Rank> = if launched {
        // blocking unless asked, as nccl-tests and NCCL's own default
        let lo = nccl::LaunchOptions {
            config: nccl::Config::new().blocking(!o.nonblocking),
            ..nccl::LaunchOptions::default()
        };
        let (comm, info) = nccl::init_from_launcher(&lo).unwrap_or_else(|e| fail(e));
        eprintln!(
            "nccl-bench: rank {} of {} ({}), GPU {}",
            info.rank,
            info.world,
            info.source,
            comm.device()
        );
        if !o.event_tracking {
            untrack(comm.context());
        }
        let stream = comm.context().new_stream().unwrap_or_else(|e| fail(e));
        vec![Rank { comm, stream }]
    } else {
        // graph mode and non-blocking communicators drive one GPU per process
        let want = o
            .ngpus
            .unwrap_or(if o.graph || o.nonblocking { 1 } else { gpus });
        let n = want.min(gpus);
        if n < want {
            eprintln!("nccl-bench: -g {want} but only {gpus} GPU(s): using {n}");
        }
        let ctxs: Vec<Arc<CudaContext>> = (0..n)
            .map(|i| CudaContext::new(i).unwrap_or_else(|e| fail(e)))
            .collect();
        if !o.event_tracking {
            ctxs.iter().for_each(untrack);
        }
        let comms = if o.nonblocking {
            if n != 1 {
                fail("--nonblocking drives one GPU per process (run under a launcher for more)");
            }
            let id = nccl::UniqueId::new().unwrap_or_else(|e| fail(e));
            let cfg = nccl::Config::new().blocking(false);
            vec![Comm::init_rank_with(&ctxs[0], 1, &id, 0, &cfg).unwrap_or_else(|e| fail(e))]
        } else {
            Comm::init_all(&ctxs).unwrap_or_else(|e| fail(e))
        };
        comms
            .into_iter()
            .map(|comm| {
                let stream = comm.context().new_stream().unwrap_or_else(|e| fail(e));
                Rank { comm, stream }
            })
            .collect()
    };
    let world = ranks[0].comm.world_size();
    if o.graph && ranks.len() > 1 {
        fail("--graph needs one GPU per process (run under a launcher)");
    }
    if o.root >= world {
        fail(format!("--root {} but only {world} ranks", o.root));
    }
    let mut rows = Vec::new();
    let r = match o.dtype.as_str() {
        "f32" => bench::<f32>(&o, &ranks, world, &mut rows),
        "f64" => bench::<f64>(&o, &ranks, world, &mut rows),
        "f16" => bench::<f16>(&o, &ranks, world, &mut rows),
        "bf16" => bench::<bf16>(&o, &ranks, world, &mut rows),
        "i8" => bench::<i8>(&o, &ranks, world, &mut rows),
        "u8" => bench::<u8>(&o, &ranks, world, &mut rows),
        "i32" => bench::<i32>(&o, &ranks, world, &mut rows),
        "u32" => bench::<u32>(&o, &ranks, world, &mut rows),
        "i64" => bench::<i64>(&o, &ranks, world, &mut rows),
        "u64" => bench::<u64>(&o, &ranks, world, &mut rows),
        other => fail(format!("unknown datatype {other:?}")),
    };
    if let Err(e) = r {
        fail(e);
    }
    let lead = ranks[0].comm.rank() == 0;
    let wrong: i64 = rows.iter().map(|r| r.wrong).sum();
    if lead {
        let big: Vec<f64> = rows
            .iter()
            .filter(|r| r.bytes >= 64 << 20 && !r.in_place)
            .map(|r| r.busbw)
            .collect();
        if !big.is_empty() {
            println!(
                "# avg bus bandwidth at >= 64 MiB (out of place): {:.3} GB/s",
                big.iter().sum::<f64>() / big.len() as f64
            );
        }
        println!(
            "# out of bounds values: {wrong} {}",
            if wrong == 0 { "OK" } else { "FAILED" }
        );
        if let Some(p) = &o.json {
            write_json(p, &o, world, &rows).unwrap_or_else(|e| fail(format!("{p}: {e}")));
        }
        if let Some(p) = &o.plot {
            write_svg(p, &rows).unwrap_or_else(|e| fail(format!("{p}: {e}")));
        }
    }
    for r in ranks {
        if let Err(e) = r.comm.finalize() {
            fail(e);
        }
    }
    if wrong != 0 {
        std::process::exit(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        let mut v = Vec::new();
        for (ci, coll) in ["all_reduce", "all_gather"].into_iter().enumerate() {
            for k in 0..5 {
                let bytes = 8usize << (4 * k);
                v.push(Row {
                    coll: coll.into(),
                    bytes,
                    count: bytes / 4,
                    in_place: false,
                    time_us: 5.0 + bytes as f64 / 1e4,
                    algbw: bytes as f64 / 1e4,
                    busbw: (ci + 1) as f64 * bytes as f64 / 1e4,
                    host_us: 4.0,
                    wrong: 0,
                });
            }
        }
        v
    }

    #[test]
    fn svg_has_one_line_per_collective_in_each_panel() {
        let p = std::env::temp_dir().join(format!("nccl-bench-test-{}.svg", std::process::id()));
        write_svg(p.to_str().unwrap(), &rows()).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(s.matches("<polyline").count(), 4, "{s}");
        assert!(
            s.contains(">all_reduce<") && s.contains(">all_gather<") && s.contains("busbw (GB/s)")
        );
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn json_lists_every_row() {
        let p = std::env::temp_dir().join(format!("nccl-bench-test-{}.json", std::process::id()));
        let o = parse(&[]).unwrap();
        write_json(p.to_str().unwrap(), &o, 2, &rows()).unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(s.matches("\"coll\"").count(), 10);
        assert!(s.contains("\"world\": 2"));
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn factors_and_sizes() {
        assert_eq!(bus_factor("all_reduce", 4), 1.5);
        assert_eq!(bus_factor("all_gather", 4), 0.75);
        assert_eq!(bus_factor("broadcast", 4), 1.0);
        assert_eq!(bytes("1G").unwrap(), 1 << 30);
        assert_eq!(bytes("64K").unwrap(), 65536);
        assert!(bytes("x").is_err());
        let o = parse(&["-c".into(), "all".into(), "-G".into()]).unwrap();
        assert_eq!(o.colls.len(), 7);
        assert!(o.graph);
        assert!(!o.event_tracking, "-G implies --no-event-tracking");
        assert!(parse(&[]).unwrap().event_tracking);
        let o = parse(&["--no-event-tracking".into(), "--nonblocking".into()]).unwrap();
        assert!(!o.event_tracking && !o.graph && o.nonblocking);
        assert!(!parse(&[]).unwrap().nonblocking);
    }

    #[test]
    fn wrong_counts_detect_errors() {
        // 2 ranks, rank r contributes r % 4 + 1: sums to 3
        let good = vec![3.0f32; 4];
        assert_eq!(
            count_wrong::<f32>("all_reduce", "sum", 0, 0, 2, 4, false, &good),
            0
        );
        let mut bad = good.clone();
        bad[2] = 2.0;
        assert_eq!(
            count_wrong::<f32>("all_reduce", "sum", 0, 0, 2, 4, false, &bad),
            1
        );
        assert_eq!(
            count_wrong::<f32>(
                "all_gather",
                "sum",
                0,
                1,
                2,
                2,
                false,
                &[1.0, 1.0, 2.0, 2.0]
            ),
            0
        );
        assert_eq!(
            count_wrong::<f32>("sendrecv", "sum", 0, 0, 2, 2, false, &[2.0, 2.0]),
            0
        );
    }
}
