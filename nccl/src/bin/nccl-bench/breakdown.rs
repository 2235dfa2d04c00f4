//! `--breakdown [ROUNDS]`: where the host time of one all_reduce goes.
//!
//! Per size of `-b/-e/-f` (f32 sum, out of place, on the rank's stream, whose
//! context has a second stream as in [`run`](crate::timing::run)), each of
//! these is timed over `-n` iterations after `-w` warm-up ones, host time
//! only, in ROUNDS rounds whose order rotates:
//!
//! - `ffi`: `ncclAllReduce` through the raw bindings on the `CudaSlice`
//!   buffers' addresses, taken once: what a C loop pays, from this process;
//!   `ffi-pool` the same on the `NcclBuffer`s' addresses (each safe call is
//!   compared with the raw call on its own memory);
//! - `slice-acq` / `stream-acq`: only acquiring the buffers, as a call does
//!   (`device_ptr` of the input, `device_ptr_mut` of the output, both guards
//!   dropped), with no NCCL call: the cost of the buffers' tracking
//!   (cudarc's events for `CudaSlice`; the library's for `NcclBuffer` on
//!   the pool, `Memory::Stream`);
//! - `slice-call` / `stream-call`: `Comm::all_reduce` on them: the safe call;
//! - `slice-off`: `slice-call` with cudarc's event tracking turned off around
//!   the timed loop (a `CudaSlice` as a context with tracking off gives it;
//!   the `untracked` column of `tests/gpu/side-by-side.sh`, in this process).
//!
//! `call - ffi - acq` is then what the library's own checks and funnel cost,
//! and `slice-off - ffi` the same for a `CudaSlice` with no tracking.
//! Every rank of a launched job runs the same sequence (the acquisitions make
//! no NCCL call). After the rounds, each size's outputs are checked.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use nccl::{Comm, Memory, NcclBuffer, ReduceOp};

use crate::options::{self, Opts};
use crate::timing::Rank;

/// The timed columns, in their order in the report.
const COLS: [&str; 7] = [
    "ffi",
    "slice-acq",
    "slice-call",
    "slice-off",
    "ffi-pool",
    "stream-acq",
    "stream-call",
];

/// One size's buffers: a `CudaSlice` pair and an `NcclBuffer` pair, and the
/// `CudaSlice`s' addresses (taken once, for `ffi`).
struct Bufs {
    slice: (CudaSlice<f32>, CudaSlice<f32>),
    pool: (NcclBuffer<f32>, NcclBuffer<f32>),
    raw: (u64, u64),
}

/// Runs the breakdown on the one rank of this process and prints it (rank 0).
pub fn run(o: &Opts, rank: &Rank, rounds: usize) -> nccl::Result<()> {
    let Rank { comm, stream } = rank;
    let _second = crate::buffers::second_stream(stream)?;
    let lead = comm.rank() == 0;
    let world = comm.world_size();
    let tracking = stream.context().is_managing_stream_synchronization();
    if lead {
        outln!(
            "# breakdown: host us per all_reduce (f32 sum, out of place), world {world}, \
             median of {rounds} rounds of {} iterations; cudarc event tracking {}",
            o.iters,
            if tracking {
                "on (a CudaSlice call: 3 event waits, 2 records)"
            } else {
                "off"
            }
        );
        outln!(
            "# {:>10} {}",
            "size",
            COLS.map(|c| format!("{c:>11}")).join(" ")
        );
    }
    let mut medians: Vec<[f64; COLS.len()]> = Vec::new();
    for size in options::sizes(o) {
        let n = size / std::mem::size_of::<f32>();
        if n == 0 {
            continue;
        }
        let mut slice: (CudaSlice<f32>, CudaSlice<f32>) =
            (stream.clone_htod(&vec![1.0f32; n])?, stream.alloc_zeros(n)?);
        // the addresses, once: their guards record on this stream, where
        // every use of these buffers is
        let raw = (
            slice.0.device_ptr(stream).0,
            slice.1.device_ptr_mut(stream).0,
        );
        let mut b = Bufs {
            slice,
            pool: (
                NcclBuffer::from_host(stream, &vec![1.0f32; n], Memory::Stream)?,
                NcclBuffer::alloc_zeros_in(stream, n, Memory::Stream)?,
            ),
            raw,
        };
        let mut times: [Vec<f64>; COLS.len()] = Default::default();
        for r in 0..rounds {
            for k in 0..COLS.len() {
                let col = (k + r) % COLS.len();
                let off = tracking && COLS[col] == "slice-off";
                if off {
                    // SAFETY: every use of this process's buffers is on
                    // `stream` (the second stream is never used), so no
                    // CudaSlice needs an event to order a use on another
                    // stream while tracking is off.
                    unsafe { stream.context().disable_event_tracking() };
                }
                let t = timed(o, stream, || one(col, comm, stream, n, &mut b));
                if off {
                    // SAFETY: no CudaSlice was made while tracking was off
                    // (cudarc's condition), and the uses it did not record
                    // were all on `stream`, as every later one is.
                    unsafe { stream.context().enable_event_tracking() };
                }
                times[col].push(t?);
            }
        }
        let m = times.map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        });
        check(stream, &b, world)?;
        if lead {
            outln!(
                "{:>10} B {}",
                size,
                m.map(|v| format!("{v:>11.3}")).join(" ")
            );
        }
        medians.push(m);
    }
    if lead && !medians.is_empty() {
        let mid = |k: usize| {
            let mut v: Vec<f64> = medians.iter().map(|m| m[k]).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let [ffi, sa, sc, so, fp, pa, pc] = [0, 1, 2, 3, 4, 5, 6].map(mid);
        outln!("# median over sizes: ffi {ffi:.3} us, ffi-pool {fp:.3} us");
        outln!(
            "# CudaSlice, cudarc's tracking off: call {so:.3} us = x{:.3} of ffi on the same \
             buffers, the library's checks and funnel {:.3} us",
            so / ffi,
            so - ffi
        );
        for (name, ffi, acq, call) in [
            ("CudaSlice", ffi, sa, sc),
            ("NcclBuffer (pool)", fp, pa, pc),
        ] {
            outln!(
                "# {name}: call {call:.3} us = x{:.3} of ffi on the same buffers; acquiring the \
                 buffers {acq:.3} us, the library's checks and funnel {:.3} us",
                call / ffi,
                call - ffi - acq
            );
        }
    }
    Ok(())
}

/// Host microseconds per iteration of `f` over `-n` iterations, after `-w`
/// warm-up ones; the stream is drained before and after (untimed).
fn timed(
    o: &Opts,
    stream: &CudaStream,
    mut f: impl FnMut() -> nccl::Result<()>,
) -> nccl::Result<f64> {
    for _ in 0..o.warmup {
        f()?;
    }
    stream.synchronize()?;
    let t0 = Instant::now();
    for _ in 0..o.iters {
        f()?;
    }
    let us = t0.elapsed().as_secs_f64() * 1e6 / o.iters as f64;
    stream.synchronize()?;
    Ok(us)
}

/// One iteration of column `col` of [`COLS`].
fn one(
    col: usize,
    comm: &Comm,
    stream: &Arc<CudaStream>,
    n: usize,
    b: &mut Bufs,
) -> nccl::Result<()> {
    match col {
        0 | 4 => {
            let (s, d) = match col {
                0 => b.raw,
                _ => (b.pool.0.as_raw(), b.pool.1.as_raw()),
            };
            // SAFETY: both addresses are of live buffers of n f32 (held by
            // `b` for the whole call) on the communicator's GPU; they do not
            // overlap; the call is enqueued on the stream every other use of
            // these buffers is on (the NcclBuffers' home), so neither
            // cudarc's ordering nor the library's is affected.
            let r = unsafe {
                nccl::sys::ncclAllReduce(
                    s as usize as *const core::ffi::c_void,
                    d as usize as *mut core::ffi::c_void,
                    n,
                    nccl::sys::ncclDataType_t::ncclFloat32,
                    nccl::sys::ncclRedOp_t::ncclSum,
                    comm.as_raw(),
                    stream.cu_stream() as nccl::sys::cudaStream_t,
                )
            };
            if r != nccl::sys::ncclResult_t::ncclSuccess {
                crate::fail(format!("ncclAllReduce: {}", nccl::error_string(r.0)));
            }
            Ok(())
        }
        1 => {
            let (_, g1) = b.slice.0.device_ptr(stream);
            let (_, g2) = b.slice.1.device_ptr_mut(stream);
            drop((g1, g2));
            Ok(())
        }
        2 | 3 => comm.all_reduce(&b.slice.0, &mut b.slice.1, ReduceOp::Sum, &**stream),
        5 => {
            let (_, g1) = b.pool.0.device_ptr(stream);
            let (_, g2) = b.pool.1.device_ptr_mut(stream);
            drop((g1, g2));
            Ok(())
        }
        _ => comm.all_reduce(&b.pool.0, &mut b.pool.1, ReduceOp::Sum, &**stream),
    }
}

/// Both outputs hold `world` (every rank's input is ones).
fn check(stream: &Arc<CudaStream>, b: &Bufs, world: usize) -> nccl::Result<()> {
    for (name, got) in [
        ("CudaSlice", stream.clone_dtoh(&b.slice.1)?),
        ("NcclBuffer", stream.clone_dtoh(&b.pool.1)?),
    ] {
        if let Some(i) = got.iter().position(|&v| v != world as f32) {
            crate::fail(format!(
                "--breakdown: the {name} output holds {} at {i}, not {world}",
                got[i]
            ));
        }
    }
    Ok(())
}
