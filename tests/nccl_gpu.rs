//! The safe layer on a GPU: every collective × every dtype × every op, out of
//! place and in place, on deterministic data against a host-computed answer;
//! (a) world 1 in this process, (b) 2 and 4 ranks as separate processes
//! sharing GPU 0 (each its own NCCL_HOSTID, NCCL_SOCKET_IFNAME=lo; this
//! program starts them and hands them the unique id). Plus split, buffer
//! registration, windows, ncclMemAlloc buffers, PreMulSum, a send/recv ring,
//! graph capture and replay, group simulation, non-blocking init, the device
//! API's host half (teams, device communicators, properties, a window's
//! peer addresses), and every bad-input error on a live communicator that
//! must keep working. Every world's ranks also meet through a `TcpStore`
//! the parent serves and through a `TcpBootstrap` with a secret, and read
//! NCCL's parameter registry beside their communicator (`nccl_gpu/host_side.rs`).
//!
//! A custom harness (no libtest): it prints one line per check and closes
//! with `N passed, M failed`.

use std::process::{Child, Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, sys as cu};
use nccl::{
    Comm, Config, Error, F8E4M3, F8E5M2, Memory, NcclBuffer, NcclType, ReduceOp, UniqueId, bf16,
    f16,
};
use nccl_rs_tests::say;

#[path = "nccl_gpu/host_side.rs"]
mod host_side;

/// What the checks need of an element type beyond the library's
/// [`NcclType`] (whose `from_f64`/`to_f64`, `INTEGER` and `UNSIGNED` they
/// use): the relative tolerance of float results.
trait TestType: NcclType + Default + cudarc::driver::ValidAsZeroBits {
    /// Relative tolerance for float results.
    const REL: f64 = 0.0;
}

macro_rules! tolerance {
    ($($t:ty => $rel:expr),* $(,)?) => {
        $(impl TestType for $t {
            const REL: f64 = $rel;
        })*
    };
}
tolerance!(i8 => 0.0, u8 => 0.0, i32 => 0.0, u32 => 0.0, i64 => 0.0, u64 => 0.0);
tolerance!(f32 => 1e-6, f64 => 1e-12, f16 => 1e-2, bf16 => 1e-2, F8E4M3 => 0.13, F8E5M2 => 0.26);

/// The host conversions the checks rely on, for every type: run first, on
/// any machine, so a broken one fails here instead of in the middle of a suite.
fn host_conversions_ok() -> Result<(), String> {
    fn one<T: TestType>() -> Result<(), String> {
        for v in [-2.0f64, -1.0, 0.0, 1.0, 2.0] {
            let v = if T::UNSIGNED { v.abs() } else { v };
            let back = T::from_f64(v).to_f64();
            if back != v {
                return Err(format!("{}: {v} → {back}", T::NAME));
            }
        }
        Ok(())
    }
    one::<i8>()?;
    one::<u8>()?;
    one::<i32>()?;
    one::<u32>()?;
    one::<i64>()?;
    one::<u64>()?;
    one::<f16>()?;
    one::<bf16>()?;
    one::<f32>()?;
    one::<f64>()?;
    one::<F8E4M3>()?;
    one::<F8E5M2>()
}

/// Small integers, exactly representable in every type, whose sums and
/// products over 4 ranks stay exact too.
fn val<T: TestType>(seed: usize, rank: usize, i: usize) -> f64 {
    let k = (i * 7 + rank * 13 + seed * 3) % if T::UNSIGNED { 3 } else { 5 };
    if T::UNSIGNED {
        k as f64
    } else {
        k as f64 - 2.0
    }
}

fn input<T: TestType>(seed: usize, rank: usize, n: usize) -> Vec<f64> {
    (0..n).map(|i| val::<T>(seed, rank, i)).collect()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Sum,
    Prod,
    Max,
    Min,
    Avg,
}
const OPS: [Op; 5] = [Op::Sum, Op::Prod, Op::Max, Op::Min, Op::Avg];

impl Op {
    fn nccl(self) -> ReduceOp<'static> {
        match self {
            Op::Sum => ReduceOp::Sum,
            Op::Prod => ReduceOp::Prod,
            Op::Max => ReduceOp::Max,
            Op::Min => ReduceOp::Min,
            Op::Avg => ReduceOp::Avg,
        }
    }
    fn fold(self, xs: impl Iterator<Item = f64>, world: usize, int: bool) -> f64 {
        let xs: Vec<f64> = xs.collect();
        match self {
            Op::Sum => xs.iter().sum(),
            Op::Prod => xs.iter().product(),
            Op::Max => xs.iter().cloned().fold(f64::MIN, f64::max),
            Op::Min => xs.iter().cloned().fold(f64::MAX, f64::min),
            Op::Avg => {
                let s: f64 = xs.iter().sum();
                if int {
                    (s / world as f64).trunc()
                } else {
                    s / world as f64
                }
            }
        }
    }
}

struct Report {
    rank: usize,
    passed: usize,
    failed: Vec<String>,
}

/// The last check that finished, and when: a watchdog thread turns a hang
/// into a failure that names where it happened.
static PROGRESS: std::sync::Mutex<(String, Option<Instant>)> =
    std::sync::Mutex::new((String::new(), None));

/// A panic (a sticky CUDA error surfacing in a read-back, say) names the
/// last check that finished, so that the check after it is the suspect.
fn name_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let last = PROGRESS.lock().map(|p| p.0.clone()).unwrap_or_default();
        say(&format!("PANIC after the check {last:?} finished: {info}"));
        default(info);
    }));
}

fn progress(what: &str) {
    if let Ok(mut p) = PROGRESS.lock() {
        *p = (what.to_string(), Some(Instant::now()));
    }
}

/// Aborts the process when no check finishes for `limit`
/// (`NCCL_RS_TEST_WATCHDOG_S` overrides it).
fn watchdog(limit: Duration) {
    let limit = std::env::var("NCCL_RS_TEST_WATCHDOG_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(limit);
    progress("start");
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let (last, at) = PROGRESS.lock().map(|p| p.clone()).unwrap_or_default();
            if at.is_some_and(|t| t.elapsed() > limit) {
                say(&format!(
                    "WATCHDOG: no check finished for {limit:?}; the last one to finish was {last:?}. FAILED"
                ));
                // not exit(): CUDA's exit handlers can wait on the hung kernel
                std::process::abort();
            }
        }
    });
}

impl Report {
    fn check(&mut self, what: &str, r: Result<(), String>) {
        progress(what);
        if std::env::var_os("NCCL_RS_TEST_VERBOSE").is_some() {
            say(&format!(
                "rank {}: {} {what}",
                self.rank,
                if r.is_ok() { "ok" } else { "FAIL" }
            ));
        }
        let too_old = LAST_TOO_OLD.with(|l| l.borrow_mut().take());
        match r {
            Ok(()) => self.passed += 1,
            // the library refused, typed, an API this libnccl lacks: the
            // check cannot run on this release; say so
            Err(e) if too_old.as_ref().is_some_and(|(api, _)| e.contains(api)) => {
                let (_, why) = too_old.unwrap_or_default();
                say(&format!("rank {}: NOT RUN {what}: {why}", self.rank));
                TOO_OLD.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                say(&format!("rank {}: FAIL {what}: {e}", self.rank));
                self.failed.push(format!("{what}: {e}"));
            }
        }
    }
}

fn close<T: TestType>(got: &[T], want: &[f64], int_avg: bool) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("length {} != {}", got.len(), want.len()));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        let w = T::to_f64(T::from_f64(*w)); // the expected value as T holds it
        let ok = if T::INTEGER {
            if int_avg {
                (g - w).abs() <= 1.0
            } else {
                g == w
            }
        } else {
            (g - w).abs() <= 1e-9 + T::REL * w.abs().max(1.0)
        };
        if !ok {
            return Err(format!("element {i}: got {g}, want {w}"));
        }
    }
    Ok(())
}

struct Env<'a> {
    comm: &'a Comm,
    stream: &'a Arc<CudaStream>,
}

impl Env<'_> {
    fn up<T: TestType>(&self, xs: &[f64]) -> CudaSlice<T> {
        let h: Vec<T> = xs.iter().map(|&x| T::from_f64(x)).collect();
        self.stream.clone_htod(&h).unwrap()
    }
    fn zeros<T: TestType>(&self, n: usize) -> CudaSlice<T> {
        self.stream.alloc_zeros::<T>(n).unwrap()
    }
    fn down<T: TestType>(&self, d: &CudaSlice<T>) -> Vec<T> {
        let v = self.stream.clone_dtoh(d).unwrap();
        self.stream.synchronize().unwrap();
        v
    }
}

/// A check's result, where NCCL may refuse the operation outright
/// (`ncclInvalidArgument`): that refusal passes, and says so; a wrong answer
/// still fails.
fn refusal_ok(r: Result<(), String>, refusable: bool) -> Result<(), String> {
    match r {
        Err(e) if refusable && e.contains("failed with ncclInvalidArgument") => {
            if std::env::var_os("NCCL_RS_TEST_VERBOSE").is_some() {
                say(&format!("  (refused by this libnccl, as expected: {e})"));
            }
            REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// How many checks NCCL refused as [`refusal_ok`] allows.
static REFUSED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many checks met this crate's typed refusal of an API the running
/// libnccl is too old for: reported as NOT RUN with the reason (neither
/// passed nor failed).
static TOO_OLD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

thread_local! {
    /// The last refusal `e2s` formatted of an API newer than the running
    /// libnccl (`Unsupported` with `runtime` < `since`, `runtime` the
    /// library in use): its API and why, read and cleared by each check.
    static LAST_TOO_OLD: std::cell::RefCell<Option<(&'static str, String)>> =
        const { std::cell::RefCell::new(None) };
}

fn e2s(e: Error) -> String {
    if let Error::Unsupported {
        api,
        since,
        runtime,
    } = &e
    {
        if runtime < since && nccl::version().ok().as_ref() == Some(runtime) {
            let why = format!("{api} needs NCCL {since}+, the library is {runtime}");
            LAST_TOO_OLD.with(|l| *l.borrow_mut() = Some((api, why)));
        }
    }
    format!("{e} [{e:?}]")
}

/// Every collective for element type `T`.
fn suite<T: TestType>(env: &Env, rep: &mut Report) {
    let comm = env.comm;
    let (rank, world) = (comm.rank(), comm.world_size());
    let n = 67;
    let t = T::NAME;
    let int = T::INTEGER;

    for (oi, op) in OPS.into_iter().enumerate() {
        // NCCL's one-rank path refuses Avg on fp8 (ncclInvalidArgument: its
        // fp8 scaling kernel is compiled only under `__CUDA_ARCH__ >= 900`,
        // never true in host code; 2.28.3 to 2.29 at least). With more ranks
        // it works and must be right.
        let refusable =
            world == 1 && T::SINCE >= nccl::Version::new(2, 24, 0) && matches!(op, Op::Avg);
        let ins: Vec<Vec<f64>> = (0..world).map(|r| input::<T>(oi, r, n)).collect();
        let want: Vec<f64> = (0..n)
            .map(|i| op.fold(ins.iter().map(|v| v[i]), world, int))
            .collect();
        let avg = matches!(op, Op::Avg);
        // all_reduce, out of place and in place
        let send = env.up::<T>(&ins[rank]);
        let mut recv = env.zeros::<T>(n);
        let r = comm
            .all_reduce(&send, &mut recv, op.nccl(), env.stream)
            .map_err(e2s)
            .and_then(|()| close(&env.down(&recv), &want, avg && int));
        rep.check(&format!("all_reduce {t} {op:?}"), refusal_ok(r, refusable));
        let mut buf = env.up::<T>(&ins[rank]);
        let r = comm
            .all_reduce_in_place(&mut buf, op.nccl(), env.stream)
            .map_err(e2s)
            .and_then(|()| close(&env.down(&buf), &want, avg && int));
        rep.check(
            &format!("all_reduce_in_place {t} {op:?}"),
            refusal_ok(r, refusable),
        );

        // reduce to root 0 (recv only at the root), out of place and in place
        let root = 0;
        let mut recv = env.zeros::<T>(n);
        let r = comm
            .reduce(
                &send,
                if rank == root { Some(&mut recv) } else { None },
                op.nccl(),
                root,
                env.stream,
            )
            .map_err(e2s)
            .and_then(|()| {
                if rank == root {
                    close(&env.down(&recv), &want, avg && int)
                } else {
                    Ok(())
                }
            });
        rep.check(&format!("reduce {t} {op:?}"), refusal_ok(r, refusable));
        let mut buf = env.up::<T>(&ins[rank]);
        let r = comm
            .reduce_in_place(&mut buf, op.nccl(), root, env.stream)
            .map_err(e2s)
            .and_then(|()| {
                if rank == root {
                    close(&env.down(&buf), &want, avg && int)
                } else {
                    Ok(())
                }
            });
        rep.check(
            &format!("reduce_in_place {t} {op:?}"),
            refusal_ok(r, refusable),
        );

        // reduce_scatter: inputs of n × world, out of place and in place
        let ins_rs: Vec<Vec<f64>> = (0..world)
            .map(|r| input::<T>(oi + 7, r, n * world))
            .collect();
        let want_rs: Vec<f64> = (0..n)
            .map(|i| op.fold(ins_rs.iter().map(|v| v[rank * n + i]), world, int))
            .collect();
        let send = env.up::<T>(&ins_rs[rank]);
        let mut recv = env.zeros::<T>(n);
        let r = comm
            .reduce_scatter(&send, &mut recv, op.nccl(), env.stream)
            .map_err(e2s)
            .and_then(|()| close(&env.down(&recv), &want_rs, avg && int));
        rep.check(
            &format!("reduce_scatter {t} {op:?}"),
            refusal_ok(r, refusable),
        );
        let mut buf = env.up::<T>(&ins_rs[rank]);
        let r = comm
            .reduce_scatter_in_place(&mut buf, op.nccl(), env.stream)
            .map_err(e2s)
            .and_then(|()| {
                close(
                    &env.down(&buf)[rank * n..(rank + 1) * n],
                    &want_rs,
                    avg && int,
                )
            });
        rep.check(
            &format!("reduce_scatter_in_place {t} {op:?}"),
            refusal_ok(r, refusable),
        );
    }

    let ins: Vec<Vec<f64>> = (0..world).map(|r| input::<T>(11, r, n)).collect();
    // broadcast from the last rank
    let root = world - 1;
    let send = env.up::<T>(&ins[rank]);
    let mut recv = env.zeros::<T>(n);
    let r = comm
        .broadcast(&send, &mut recv, root, env.stream)
        .map_err(e2s)
        .and_then(|()| close(&env.down(&recv), &ins[root], false));
    rep.check(&format!("broadcast {t}"), r);
    let mut buf = env.up::<T>(&ins[rank]);
    let r = comm
        .broadcast_in_place(&mut buf, root, env.stream)
        .map_err(e2s)
        .and_then(|()| close(&env.down(&buf), &ins[root], false));
    rep.check(&format!("broadcast_in_place {t}"), r);

    // all_gather
    let want: Vec<f64> = ins.concat();
    let mut recv = env.zeros::<T>(n * world);
    let r = comm
        .all_gather(&send, &mut recv, env.stream)
        .map_err(e2s)
        .and_then(|()| close(&env.down(&recv), &want, false));
    rep.check(&format!("all_gather {t}"), r);
    let mut place = vec![0.0; n * world];
    place[rank * n..(rank + 1) * n].copy_from_slice(&ins[rank]);
    let mut buf = env.up::<T>(&place);
    let r = comm
        .all_gather_in_place(&mut buf, env.stream)
        .map_err(e2s)
        .and_then(|()| close(&env.down(&buf), &want, false));
    rep.check(&format!("all_gather_in_place {t}"), r);

    // all_to_all: chunk j of rank i goes to chunk i of rank j
    let ins_a: Vec<Vec<f64>> = (0..world).map(|r| input::<T>(13, r, n * world)).collect();
    let want: Vec<f64> = (0..world)
        .flat_map(|p| ins_a[p][rank * n..(rank + 1) * n].to_vec())
        .collect();
    let send = env.up::<T>(&ins_a[rank]);
    let mut recv = env.zeros::<T>(n * world);
    let r = comm
        .all_to_all(&send, &mut recv, env.stream)
        .map_err(e2s)
        .and_then(|()| close(&env.down(&recv), &want, false));
    rep.check(&format!("all_to_all {t}"), r);

    // gather to rank 0, scatter from the last rank
    let send = env.up::<T>(&ins[rank]);
    let mut recv = env.zeros::<T>(n * world);
    let r = comm
        .gather(
            &send,
            if rank == 0 { Some(&mut recv) } else { None },
            0,
            env.stream,
        )
        .map_err(e2s)
        .and_then(|()| {
            if rank == 0 {
                close(&env.down(&recv), &ins.concat(), false)
            } else {
                Ok(())
            }
        });
    rep.check(&format!("gather {t}"), r);
    let root = world - 1;
    let full = env.up::<T>(&ins_a[root]);
    let mut recv = env.zeros::<T>(n);
    let r = comm
        .scatter(
            if rank == root { Some(&full) } else { None },
            &mut recv,
            root,
            env.stream,
        )
        .map_err(e2s)
        .and_then(|()| {
            close(
                &env.down(&recv),
                &ins_a[root][rank * n..(rank + 1) * n],
                false,
            )
        });
    rep.check(&format!("scatter {t}"), r);

    // send/recv ring in a group
    let next = (rank + 1) % world;
    let prev = (rank + world - 1) % world;
    let mut recv = env.zeros::<T>(n);
    let r = nccl::group(|g| {
        comm.send(&send, next, g.on(env.stream))?;
        comm.recv(&mut recv, prev, g.on(env.stream))
    })
    .map_err(e2s)
    .and_then(|()| close(&env.down(&recv), &ins[prev], false));
    rep.check(&format!("send/recv ring {t}"), r);

    // v-collectives: rank r's shard has n + r elements
    let counts: Vec<usize> = (0..world).map(|r| n + r).collect();
    let shards: Vec<Vec<f64>> = (0..world).map(|r| input::<T>(17, r, counts[r])).collect();
    let send = env.up::<T>(&shards[rank]);
    let mut recv = env.zeros::<T>(counts.iter().sum());
    let r = comm
        .all_gather_v(&send, &mut recv, &counts, env.stream)
        .map_err(e2s)
        .and_then(|()| close(&env.down(&recv), &shards.concat(), false));
    rep.check(&format!("all_gather_v {t}"), r);

    let total: usize = counts.iter().sum();
    let off: usize = counts[..rank].iter().sum();
    let full_in: Vec<Vec<f64>> = (0..world).map(|r| input::<T>(19, r, total)).collect();
    let want: Vec<f64> = (0..counts[rank])
        .map(|i| Op::Sum.fold(full_in.iter().map(|v| v[off + i]), world, int))
        .collect();
    let send = env.up::<T>(&full_in[rank]);
    let mut recv = env.zeros::<T>(counts[rank]);
    let r = comm
        .reduce_scatter_v(&send, &mut recv, &counts, ReduceOp::Sum, env.stream)
        .map_err(e2s)
        .and_then(|()| close(&env.down(&recv), &want, false));
    rep.check(&format!("reduce_scatter_v {t}"), r);

    // all_to_all_v: rank i sends cnt(i, j) elements to rank j
    let cnt = |i: usize, j: usize| 1 + (i + 2 * j) % 3;
    let sends: Vec<Vec<f64>> = (0..world)
        .map(|i| input::<T>(23, i, (0..world).map(|j| cnt(i, j)).sum()))
        .collect();
    let send_counts: Vec<usize> = (0..world).map(|j| cnt(rank, j)).collect();
    let recv_counts: Vec<usize> = (0..world).map(|j| cnt(j, rank)).collect();
    let want: Vec<f64> = (0..world)
        .flat_map(|j| {
            let o: usize = (0..rank).map(|k| cnt(j, k)).sum();
            sends[j][o..o + cnt(j, rank)].to_vec()
        })
        .collect();
    let send = env.up::<T>(&sends[rank]);
    let mut recv = env.zeros::<T>(recv_counts.iter().sum());
    let r = comm
        .all_to_all_v(&send, &send_counts, &mut recv, &recv_counts, env.stream)
        .map_err(e2s)
        .and_then(|()| close(&env.down(&recv), &want, false));
    rep.check(&format!("all_to_all_v {t}"), r);
}

/// PreMulSum (host and device scalar), split, registration, windows,
/// ncclMemAlloc buffers, graphs and bad inputs.
fn extras(env: &Env, ctx: &Arc<CudaContext>, rep: &mut Report) {
    let comm = env.comm;
    let (rank, world) = (comm.rank(), comm.world_size());
    let n = 1000;
    let ins: Vec<Vec<f64>> = (0..world).map(|r| input::<f32>(29, r, n)).collect();
    let sum: Vec<f64> = (0..n).map(|i| ins.iter().map(|v| v[i]).sum()).collect();
    let send = env.up::<f32>(&ins[rank]);

    // PreMulSum with a host scalar, and with a device scalar
    let r = (|| -> Result<(), String> {
        let op = comm.pre_mul_sum(3.0f32).map_err(e2s)?;
        let mut recv = env.zeros::<f32>(n);
        comm.all_reduce(&send, &mut recv, ReduceOp::PreMulSum(&op), env.stream)
            .map_err(e2s)?;
        close(
            &env.down(&recv),
            &sum.iter().map(|x| 3.0 * x).collect::<Vec<_>>(),
            false,
        )
    })();
    rep.check("PreMulSum host scalar f32", r);
    let r = (|| -> Result<(), String> {
        let scalar = env.up::<f32>(&[0.5]);
        let op = comm.pre_mul_sum_device(&scalar).map_err(e2s)?;
        let mut recv = env.zeros::<f32>(n);
        comm.all_reduce(&send, &mut recv, ReduceOp::PreMulSum(&op), env.stream)
            .map_err(e2s)?;
        close(
            &env.down(&recv),
            &sum.iter().map(|x| 0.5 * x).collect::<Vec<_>>(),
            false,
        )
    })();
    rep.check("PreMulSum device scalar f32", r);
    let r = (|| -> Result<(), String> {
        let op = comm.pre_mul_sum(f16::from_f64(2.0)).map_err(e2s)?;
        let s16 = env.up::<f16>(&ins[rank]);
        let mut recv = env.zeros::<f16>(n);
        comm.all_reduce(&s16, &mut recv, ReduceOp::PreMulSum(&op), env.stream)
            .map_err(e2s)?;
        close(
            &env.down(&recv),
            &sum.iter().map(|x| 2.0 * x).collect::<Vec<_>>(),
            false,
        )
    })();
    rep.check("PreMulSum host scalar f16", r);

    // split: even and odd ranks; all_reduce inside each half
    let r = (|| -> Result<(), String> {
        let child = comm
            .split(Some((rank % 2) as u32), rank as i32, None)
            .map_err(e2s)?
            .ok_or("no child")?;
        let members: Vec<usize> = (0..world).filter(|r| r % 2 == rank % 2).collect();
        if child.world_size() != members.len() || child.rank() != rank / 2 {
            return Err(format!(
                "child rank {}/{} for rank {rank}",
                child.rank(),
                child.world_size()
            ));
        }
        let want: Vec<f64> = (0..n)
            .map(|i| members.iter().map(|&m| ins[m][i]).sum())
            .collect();
        let mut recv = env.zeros::<f32>(n);
        child
            .all_reduce(&send, &mut recv, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        close(&env.down(&recv), &want, false)?;
        // a PreMulSum of the parent is refused on the child
        let op = comm.pre_mul_sum(1.0f32).map_err(e2s)?;
        match child.all_reduce(&send, &mut recv, ReduceOp::PreMulSum(&op), env.stream) {
            Err(Error::InvalidArgument { arg: "op", .. }) => {}
            other => return Err(format!("foreign PreMulSum: {other:?}")),
        }
        drop(op);
        child.finalize().map_err(e2s)
    })();
    rep.check("split by parity + all_reduce in child", r);
    // no color: takes no part
    let r = (|| -> Result<(), String> {
        let color = if rank == 0 { None } else { Some(1) };
        let child = comm.split(color, 0, None).map_err(e2s)?;
        match (rank, child) {
            (0, None) => Ok(()),
            (0, Some(_)) => Err("rank 0 got a child with no color".into()),
            (_, Some(c)) if c.world_size() == world - 1 => c.finalize().map_err(e2s),
            (_, c) => Err(format!("child {c:?}")),
        }
    })();
    rep.check("split with no color", r);

    // a named communicator keeps its name after its Config is gone (NCCL
    // keeps the commName pointer), and so does a child split without one
    let r = (|| -> Result<(), String> {
        let cfg = nccl::Config::new().comm_name("nccl-rs-named");
        let named = match comm.split(Some(0), rank as i32, Some(&cfg)) {
            // commName is NCCL 2.27+
            Err(nccl::Error::Unsupported { .. })
                if nccl::version().map_err(e2s)? < nccl::Version::new(2, 27, 0) =>
            {
                return Ok(());
            }
            r => r.map_err(e2s)?,
        };
        drop(cfg);
        let named = named.ok_or("split with color 0 gave no communicator")?;
        let mut b = env.zeros::<f32>(n);
        let a = env.up::<f32>(&ins[rank]);
        named
            .all_reduce(&a, &mut b, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        close(&env.down(&b), &sum, false)?;
        match named.name() {
            Some("nccl-rs-named") => named.finalize().map_err(e2s),
            other => Err(format!("name {other:?}")),
        }
    })();
    rep.check("named communicator outlives its Config", r);

    // children that would share their parent's resources are refused (a
    // parent and such a child must never run at the same time)
    let r = (|| -> Result<(), String> {
        let sharing = nccl::Config::new().split_share(true);
        let parent = comm
            .split(Some(0), rank as i32, Some(&sharing))
            .map_err(e2s)?;
        let parent = parent.ok_or("split with color 0 gave no communicator")?;
        let refused = match parent.split(Some(0), 0, None) {
            Err(nccl::Error::InvalidArgument {
                op: "split",
                arg: "Config::split_share",
                ..
            }) => Ok(()),
            other => Err(format!("a sharing split: {other:?}")),
        };
        parent.finalize().map_err(e2s)?;
        refused
    })();
    rep.check("splits that would share resources are refused", r);

    // registered buffers: cudarc's CudaSlice is stream-ordered pool memory,
    // which NCCL 2.30.3+ refuses to register (a typed error, before NCCL is
    // called); an NcclBuffer registers on every release
    let r = (|| -> Result<(), String> {
        let runtime = nccl::version().map_err(e2s)?;
        if runtime >= nccl::Version::new(2, 30, 3) {
            // SAFETY: every rank makes the same calls on buffers registered
            // the same way (this suite runs the same code on each rank).
            return match unsafe { comm.register(env.up::<f32>(&ins[rank])) } {
                Err(nccl::Error::InvalidArgument {
                    op: "register",
                    arg: "buf",
                    ref expected,
                    ..
                }) if expected.contains("NcclBuffer") => {
                    let mut a = NcclBuffer::<f32>::alloc_zeros(env.stream, n).map_err(e2s)?;
                    let h: Vec<f32> = ins[rank].iter().map(|&x| x as f32).collect();
                    env.stream
                        .memcpy_htod(&h, &mut a)
                        .map_err(|e| e.to_string())?;
                    let b = NcclBuffer::<f32>::alloc_zeros(env.stream, n).map_err(e2s)?;
                    // SAFETY: as above: every rank registers both and
                    // all-reduces them with the same count.
                    let ra = unsafe { comm.register(a) }.map_err(e2s)?;
                    // SAFETY: as above.
                    let mut rb = unsafe { comm.register(b) }.map_err(e2s)?;
                    comm.all_reduce(&ra, &mut rb, ReduceOp::Sum, env.stream)
                        .map_err(e2s)?;
                    let out = env.stream.clone_dtoh(rb.get()).map_err(|e| e.to_string())?;
                    env.stream.synchronize().map_err(|e| e.to_string())?;
                    close(&out, &sum, false)?;
                    comm.deregister(rb).map_err(e2s)?;
                    comm.deregister(ra).map_err(e2s)?;
                    Ok(())
                }
                Err(e) => Err(format!(
                    "pool memory on {runtime}: expected the typed refusal, got {e}"
                )),
                Ok(_) => Err(format!(
                    "pool memory on {runtime}: registered, expected a refusal"
                )),
            };
        }
        // SAFETY: every rank registers both buffers and all-reduces them
        // with the same count (the suite runs the same code on each rank).
        let reg_send = unsafe { comm.register(env.up::<f32>(&ins[rank])) }.map_err(e2s)?;
        // SAFETY: as above.
        let mut reg_recv = unsafe { comm.register(env.zeros::<f32>(n)) }.map_err(e2s)?;
        comm.all_reduce(&reg_send, &mut reg_recv, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        let out = comm.deregister(reg_recv).map_err(e2s)?;
        close(&env.down(&out), &sum, false)?;
        // a dropped registration is parked, and released by the
        // communicator's thread once its buffer is idle
        drop(reg_send);
        env.stream.synchronize().map_err(|e| e.to_string())?;
        match comm.release_parked() {
            0 => Ok(()),
            n => Err(format!(
                "{n} registrations still parked after the stream went idle"
            )),
        }
    })();
    rep.check("registered buffers all_reduce", r);

    // ncclMemAlloc buffers, plain and as symmetric windows
    let r = (|| -> Result<(), String> {
        let mut a = NcclBuffer::<f32>::alloc_zeros(env.stream, n).map_err(e2s)?;
        let h: Vec<f32> = ins[rank].iter().map(|&x| x as f32).collect();
        env.stream
            .memcpy_htod(&h, &mut a)
            .map_err(|e| e.to_string())?;
        let mut b = NcclBuffer::<f32>::alloc_zeros(env.stream, n).map_err(e2s)?;
        comm.all_reduce(&a, &mut b, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        let out = env.stream.clone_dtoh(&b).map_err(|e| e.to_string())?;
        env.stream.synchronize().map_err(|e| e.to_string())?;
        close(&out, &sum, false)?;
        // windows: only under a header that has them (2.27+)
        #[cfg(nccl_fn = "ncclCommWindowRegister")]
        {
            // SAFETY: every rank registers the same two windows, of the
            // same size, in the same order, and all-reduces them whole.
            let wa = unsafe { comm.window_register(a, true) }.map_err(e2s)?;
            // SAFETY: as above.
            let mut wb = unsafe { comm.window_register(b, true) }.map_err(e2s)?;
            env.stream
                .memset_zeros(&mut wb)
                .map_err(|e| e.to_string())?;
            comm.all_reduce(&wa, &mut wb, ReduceOp::Sum, env.stream)
                .map_err(e2s)?;
            let out = env.stream.clone_dtoh(wb.get()).map_err(|e| e.to_string())?;
            env.stream.synchronize().map_err(|e| e.to_string())?;
            close(&out, &sum, false)?;
            comm.deregister(wb).map_err(e2s)?;
            comm.deregister(wa).map_err(e2s)?;
        }
        Ok(())
    })();
    rep.check("ncclMemAlloc buffers and windows all_reduce", r);

    // graph capture of 3 all_reduces (x ← sum over ranks of x), replayed twice.
    // cudarc's cross-stream events cannot be waited on inside a capture (CUDA
    // refuses a dependency on uncaptured work), so, as for any captured cudarc
    // work, the buffer is made while event tracking is off.
    let r = (|| -> Result<(), String> {
        let gstream = ctx.new_stream().map_err(|e| e.to_string())?;
        let h: Vec<f32> = ins[rank].iter().map(|&x| x as f32).collect();
        // SAFETY: `buf` is used on `gstream` alone, which is synchronized
        // before `buf` is dropped.
        unsafe { ctx.disable_event_tracking() };
        let buf = gstream.clone_htod(&h);
        // SAFETY: buffers made from here on are tracked again.
        unsafe { ctx.enable_event_tracking() };
        let mut buf = buf.map_err(|e| e.to_string())?;
        gstream.synchronize().map_err(|e| e.to_string())?;
        gstream
            .begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(|e| e.to_string())?;
        let steps = 3;
        let captured = (0..steps)
            .try_for_each(|_| comm.all_reduce_in_place(&mut buf, ReduceOp::Sum, &gstream));
        // the capture always ends, so that a failure leaves no stream capturing
        let graph = gstream.end_capture(cu::CUgraphInstantiate_flags(0));
        captured.map_err(e2s)?;
        let graph = graph.map_err(|e| e.to_string())?.ok_or("empty graph")?;
        // nothing ran during capture
        let unchanged = gstream.clone_dtoh(&buf).map_err(|e| e.to_string())?;
        gstream.synchronize().map_err(|e| e.to_string())?;
        close(&unchanged, &ins[rank], false)?;
        let mut want = ins[rank].clone();
        for replay in 0..2 {
            graph.launch().map_err(|e| e.to_string())?;
            // every rank holds the same values after the first all_reduce
            for s in 0..steps {
                want = if replay == 0 && s == 0 {
                    sum.clone()
                } else {
                    want.iter().map(|x| x * world as f64).collect()
                };
            }
            let out = gstream.clone_dtoh(&buf).map_err(|e| e.to_string())?;
            gstream.synchronize().map_err(|e| e.to_string())?;
            close(&out, &want, false).map_err(|e| format!("replay {replay}: {e}"))?;
        }
        Ok(())
    })();
    rep.check("graph capture and replay of all_reduce", r);

    // group simulation (a header of 2.22+)
    #[cfg(nccl_fn = "ncclGroupSimulateEnd")]
    let r = (|| -> Result<(), String> {
        let mut recv = env.zeros::<f32>(n);
        let ((), est) = nccl::group_simulate(|g| {
            comm.all_reduce(&send, &mut recv, ReduceOp::Sum, g.on(env.stream))
        })
        .map_err(e2s)?;
        // one rank: no algorithm runs, NCCL leaves the estimate undefined;
        // several ranks: a time, and nothing was launched
        let out = env.down(&recv);
        match (world, est) {
            (1, None) => Ok(()),
            (w, Some(t)) if w > 1 && t.is_finite() && t > 0.0 => {
                if out.iter().all(|&x| x == 0.0) {
                    Ok(())
                } else {
                    Err("a simulated group launched the all_reduce".into())
                }
            }
            (w, e) => Err(format!("world {w}: estimate {e:?}")),
        }
    })();
    #[cfg(nccl_fn = "ncclGroupSimulateEnd")]
    rep.check("group_simulate estimate", r);

    // every bad input is a typed error and the communicator keeps working
    let mut recv = env.zeros::<f32>(n);
    let mut short = env.zeros::<f32>(n - 1);
    let expect = |what: &str, r: Result<(), Error>, op: &str, arg: &str| -> Result<(), String> {
        match r {
            Err(Error::InvalidArgument { op: o, arg: a, .. }) if o == op && a == arg => Ok(()),
            other => Err(format!(
                "{what}: expected InvalidArgument {{ {op}, {arg} }}, got {other:?}"
            )),
        }
    };
    let f16_send = env.zeros::<f16>(n);
    let mut f16_recv = env.zeros::<f16>(n);
    let wrong_type_op = comm.pre_mul_sum(1.0f32).unwrap();
    // this rank's own pair of counts differs (n to itself, n - 1 from
    // itself), each list summing to its buffer's length
    let mut own_send = vec![0; world];
    let mut own_recv = vec![0; world];
    own_send[rank] = n;
    own_recv[rank] = n - 1;
    let mut bad: Vec<Result<(), String>> = vec![
        expect(
            "all_to_all_v: own send and receive counts differ",
            comm.all_to_all_v(&send, &own_send, &mut short, &own_recv, env.stream),
            "all_to_all_v",
            "recv_counts",
        ),
        expect(
            "all_reduce length",
            comm.all_reduce(&send, &mut short, ReduceOp::Sum, env.stream),
            "all_reduce",
            "recv.len()",
        ),
        expect(
            "reduce_scatter length",
            comm.reduce_scatter(&send, &mut short, ReduceOp::Sum, env.stream),
            "reduce_scatter",
            "send.len()",
        ),
        expect(
            "broadcast root",
            comm.broadcast(&send, &mut recv, world, env.stream),
            "broadcast",
            "root",
        ),
        expect(
            "reduce root",
            comm.reduce(&send, Some(&mut recv), ReduceOp::Sum, world + 5, env.stream),
            "reduce",
            "root",
        ),
        expect(
            "reduce without root buffer",
            comm.reduce::<f32, CudaSlice<f32>>(&send, None, ReduceOp::Sum, rank, env.stream),
            "reduce",
            "recv",
        ),
        expect(
            "send peer",
            comm.send(&send, world, env.stream),
            "send",
            "peer",
        ),
        expect(
            "recv peer",
            comm.recv(&mut recv, world + 1, env.stream),
            "recv",
            "peer",
        ),
        expect(
            "gather without root buffer",
            comm.gather::<f32, CudaSlice<f32>>(&send, None, rank, env.stream),
            "gather",
            "root buffer",
        ),
        expect(
            "scatter without root buffer",
            comm.scatter::<f32, CudaSlice<f32>>(None, &mut recv, rank, env.stream),
            "scatter",
            "root buffer",
        ),
        expect(
            "v counts sum",
            comm.all_gather_v(&send, &mut recv, &vec![1; world], env.stream),
            "all_gather_v",
            "counts",
        ),
        expect(
            "v counts length",
            comm.reduce_scatter_v(
                &send,
                &mut recv,
                &vec![n; world + 1],
                ReduceOp::Sum,
                env.stream,
            ),
            "reduce_scatter_v",
            "counts",
        ),
        expect(
            "PreMulSum of another type",
            comm.all_reduce(
                &f16_send,
                &mut f16_recv,
                ReduceOp::PreMulSum(&wrong_type_op),
                env.stream,
            ),
            "all_reduce",
            "op",
        ),
    ];
    if world > 1 {
        bad.push(expect(
            "in-place chunking",
            comm.all_gather_in_place(&mut env.zeros::<f32>(world * 3 + 1), env.stream),
            "all_gather_in_place",
            "buf.len()",
        ));
        bad.push(expect(
            "all_gather length",
            comm.all_gather(&send, &mut recv, env.stream),
            "all_gather",
            "recv.len()",
        ));
        bad.push(expect(
            "all_to_all divisibility",
            comm.all_to_all(&short, &mut env.zeros::<f32>(n - 1), env.stream),
            "all_to_all",
            "send.len()",
        ));
    }
    // memory of another CudaContext object of this GPU (cudarc tracks uses
    // per object): a buffer, and a custom op's device scalar
    let other = nccl::context(ctx.ordinal()).unwrap();
    let other_stream = other.new_stream().unwrap();
    let mut alien: CudaSlice<f32> = other_stream.alloc_zeros(n).unwrap();
    bad.push(expect(
        "a buffer of another context object",
        comm.all_reduce(&send, &mut alien, ReduceOp::Sum, env.stream),
        "all_reduce",
        "buffer",
    ));
    let alien_scalar: CudaSlice<f32> = other_stream.clone_htod(&[0.5f32]).unwrap();
    let alien_op = comm.pre_mul_sum_device(&alien_scalar).unwrap();
    bad.push(expect(
        "a device scalar of another context object",
        comm.all_reduce(&send, &mut recv, ReduceOp::PreMulSum(&alien_op), env.stream),
        "all_reduce",
        "buffer",
    ));
    // a slice whose length in bytes does not fit: cudarc's allocation wraps
    // the byte count in a release build (here to 4 bytes) and keeps the
    // length it was asked for
    #[cfg(not(debug_assertions))]
    {
        let mut wrapped: CudaSlice<f32> = env.stream.alloc_zeros((1 << 62) + 1).unwrap();
        bad.push(expect(
            "a length whose bytes overflow",
            comm.all_reduce_in_place(&mut wrapped, ReduceOp::Sum, env.stream),
            "all_reduce_in_place",
            "buffer",
        ));
    }
    drop(wrong_type_op);
    drop(alien_op);
    for (i, b) in bad.into_iter().enumerate() {
        rep.check(&format!("bad input #{i}"), b);
    }
    // an NcclBuffer orders its uses itself: a stream of another context
    // object of its GPU is taken, and a read on its home stream after it
    // sees the result
    let r = (|| -> Result<(), String> {
        let derr = |e: cudarc::driver::DriverError| e.to_string();
        let mut b =
            NcclBuffer::from_host(env.stream, &vec![1.0f32; n], Memory::Stream).map_err(e2s)?;
        comm.all_reduce_in_place(&mut b, ReduceOp::Sum, &other_stream)
            .map_err(e2s)?;
        let got = env.stream.clone_dtoh(&b).map_err(derr)?;
        env.stream.synchronize().map_err(derr)?;
        match got.iter().find(|&&x| x != world as f32) {
            None => Ok(()),
            Some(x) => Err(format!("{x} where {world} was expected")),
        }
    })();
    rep.check("NcclBuffer used on a stream of another context object", r);
    let r = comm
        .all_reduce(&send, &mut recv, ReduceOp::Sum, env.stream)
        .map_err(e2s)
        .and_then(|()| close(&env.down(&recv), &sum, false));
    rep.check("communicator works after bad inputs", r);
}

fn run_rank(ctx: &Arc<CudaContext>, world: usize, id: &UniqueId, rank: usize) -> Report {
    let mut rep = Report {
        rank,
        passed: 0,
        failed: Vec::new(),
    };
    let stream = ctx.new_stream().unwrap();
    let comm = match Comm::init_rank(ctx, world, id, rank) {
        Ok(c) => c,
        Err(e) => {
            rep.check("init_rank", Err(e2s(e)));
            return rep;
        }
    };
    rep.check(
        "init_rank",
        if comm.rank() == rank && comm.world_size() == world {
            Ok(())
        } else {
            Err("rank/world".into())
        },
    );
    let env = Env {
        comm: &comm,
        stream: &stream,
    };
    suite::<i8>(&env, &mut rep);
    suite::<u8>(&env, &mut rep);
    suite::<i32>(&env, &mut rep);
    suite::<u32>(&env, &mut rep);
    suite::<i64>(&env, &mut rep);
    suite::<u64>(&env, &mut rep);
    suite::<f16>(&env, &mut rep);
    suite::<bf16>(&env, &mut rep);
    suite::<f32>(&env, &mut rep);
    suite::<f64>(&env, &mut rep);
    suite::<F8E4M3>(&env, &mut rep);
    suite::<F8E5M2>(&env, &mut rep);
    extras(&env, ctx, &mut rep);
    beyond_bindings(&env, &mut rep);
    groups(&env, ctx, &mut rep);
    ncclbuf_streams(&env, ctx, &mut rep);
    #[cfg(nccl_fn = "ncclCommWindowRegister")]
    symmetric_pool(&env, ctx, &mut rep);
    #[cfg(nccl_fn = "ncclParamBind")]
    host_side::params_live(&mut rep);
    rep.check("finalize", comm.finalize().map_err(e2s));
    rep
}

/// Groups (issue 9): what a group borrows lives until its end, cudarc's
/// events are recorded after the launch, misuse is a typed error.
fn groups(env: &Env, ctx: &Arc<CudaContext>, rep: &mut Report) {
    let comm = env.comm;
    let (rank, world) = (comm.rank(), comm.world_size());
    let n = 1000;
    let next = (rank + 1) % world;
    let prev = (rank + world - 1) % world;

    // a bare stream inside a group, and a nested group: refused, NCCL not called
    let r = (|| -> Result<(), String> {
        let a = env.up::<f32>(&input::<f32>(41, rank, n));
        let mut b = env.zeros::<f32>(n);
        let bare = nccl::group(|_g| comm.all_reduce(&a, &mut b, ReduceOp::Sum, env.stream));
        if !matches!(bare, Err(Error::InGroup { op: "all_reduce" })) {
            return Err(format!("bare stream in a group: {bare:?}"));
        }
        let nested = nccl::group(|_g| nccl::group(|_h| Ok(())));
        if !matches!(nested, Err(Error::InGroup { .. })) {
            return Err(format!("nested group: {nested:?}"));
        }
        // the thread is out of the group again: a bare call works
        comm.all_reduce(&a, &mut b, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        env.down(&b);
        Ok(())
    })();
    rep.check("group misuse is InGroup, then calls work", r);

    // buffers made on another stream (event tracking on: the context has
    // several streams), used in a group on this stream, read back at once on
    // their own stream: cudarc's events must come after the launch. A large
    // buffer makes a read before the kernel finished visible.
    let r = (|| -> Result<(), String> {
        let other = ctx.new_stream().map_err(|e| e.to_string())?;
        if !ctx.is_managing_stream_synchronization() {
            return Err("expected cudarc to track events with several streams".into());
        }
        let big = 1 << 24;
        let host: Vec<f32> = (0..big).map(|i| ((i % 7) as f32) + rank as f32).collect();
        let send = other.clone_htod(&host).map_err(|e| e.to_string())?;
        let mut recv = other.alloc_zeros::<f32>(big).map_err(|e| e.to_string())?;
        let mut ring = other.alloc_zeros::<f32>(big).map_err(|e| e.to_string())?;
        // one group where NCCL mixes collectives and send/recv (2.23.4+, or
        // one rank); two groups where this crate refuses the mix
        let mixes = world == 1 || nccl::version().map_err(e2s)? >= nccl::Version::new(2, 23, 4);
        if mixes {
            nccl::group(|g| {
                comm.all_reduce(&send, &mut recv, ReduceOp::Sum, g.on(env.stream))?;
                comm.send(&send, next, g.on(env.stream))?;
                comm.recv(&mut ring, prev, g.on(env.stream))
            })
            .map_err(e2s)?;
        } else {
            nccl::group(|g| comm.all_reduce(&send, &mut recv, ReduceOp::Sum, g.on(env.stream)))
                .map_err(e2s)?;
            nccl::group(|g| {
                comm.send(&send, next, g.on(env.stream))?;
                comm.recv(&mut ring, prev, g.on(env.stream))
            })
            .map_err(e2s)?;
        }
        let got = other.clone_dtoh(&recv).map_err(|e| e.to_string())?;
        let got_ring = other.clone_dtoh(&ring).map_err(|e| e.to_string())?;
        other.synchronize().map_err(|e| e.to_string())?;
        let ranks_sum: f32 = (0..world).map(|r| r as f32).sum();
        for i in (0..big).step_by(4099).chain([big - 1]) {
            let want = world as f32 * ((i % 7) as f32) + ranks_sum;
            if got[i] != want {
                return Err(format!(
                    "all_reduce[{i}] = {} (want {want}): read before the launch?",
                    got[i]
                ));
            }
            let want_ring = ((i % 7) as f32) + prev as f32;
            if got_ring[i] != want_ring {
                return Err(format!("ring[{i}] = {} (want {want_ring})", got_ring[i]));
            }
        }
        // dropping them now frees them stream-ordered after the group's kernels
        drop((send, recv, ring));
        env.stream.synchronize().map_err(|e| e.to_string())
    })();
    rep.check(
        "group on another stream: events after the launch, values right",
        r,
    );

    // v-collectives and all_to_all inside a group
    let r = (|| -> Result<(), String> {
        let counts: Vec<usize> = (0..world).map(|r| 3 + r).collect();
        let shards: Vec<Vec<f64>> = (0..world).map(|r| input::<f32>(43, r, counts[r])).collect();
        let send = env.up::<f32>(&shards[rank]);
        let mut gathered = env.zeros::<f32>(counts.iter().sum());
        let a2a_in: Vec<f64> = (0..world * 4).map(|i| (rank * 100 + i) as f64).collect();
        let a2a_send = env.up::<f32>(&a2a_in);
        let mut a2a_recv = env.zeros::<f32>(world * 4);
        let mixed = nccl::group(|g| {
            comm.all_gather_v(&send, &mut gathered, &counts, g.on(env.stream))?;
            comm.all_to_all(&a2a_send, &mut a2a_recv, g.on(env.stream))
        });
        // before NCCL 2.23.4, with 2+ ranks, all_to_all is made of send/recv
        // and NCCL faulted on such a mixed group: the crate refuses the
        // all_to_all, and the group still launches the all_gather_v
        let refused = world > 1 && nccl::version().map_err(e2s)? < nccl::Version::new(2, 23, 4);
        match mixed {
            Err(Error::Unsupported { since, .. })
                if refused && since == nccl::Version::new(2, 23, 4) =>
            {
                close(&env.down(&gathered), &shards.concat(), false)?;
                if rank == 0 {
                    say(
                        "  all_to_all refused in a group with all_gather_v before NCCL 2.23.4, as expected",
                    );
                }
                return Ok(());
            }
            Err(e) => return Err(e2s(e)),
            Ok(()) if refused => return Err("expected Unsupported before NCCL 2.23.4".into()),
            Ok(()) => {}
        }
        close(&env.down(&gathered), &shards.concat(), false)?;
        let want: Vec<f64> = (0..world)
            .flat_map(|p| (0..4).map(move |j| (p * 100 + rank * 4 + j) as f64))
            .collect();
        close(&env.down(&a2a_recv), &want, false)
    })();
    rep.check("all_gather_v and all_to_all in one group", r);

    // a communicator not in the group, moved to another thread and dropped
    // there while this thread's group is open: nothing refers to it
    let r = (|| -> Result<(), String> {
        let other = Comm::init_rank(ctx, 1, &UniqueId::new().map_err(e2s)?, 0).map_err(e2s)?;
        let a = env.up::<f32>(&input::<f32>(47, rank, n));
        let mut b = env.zeros::<f32>(n);
        nccl::group(|g| {
            comm.send(&a, next, g.on(env.stream))?;
            std::thread::spawn(move || drop(other))
                .join()
                .map_err(|_| Error::Aborted {
                    op: "drop thread panicked",
                })?;
            comm.recv(&mut b, prev, g.on(env.stream))
        })
        .map_err(e2s)?;
        close(&env.down(&b), &input::<f32>(47, prev, n), false)
    })();
    rep.check("a Comm dropped on another thread during a group", r);

    // a communicator not in the group, holding a parked registration,
    // dropped on this thread while its group is open: NCCL's abort here
    // would only be deferred to the group's end, so the crate aborts it on a
    // thread of its own, and frees the registration after that abort
    let r = (|| -> Result<(), String> {
        let other = Comm::init_rank(ctx, 1, &UniqueId::new().map_err(e2s)?, 0).map_err(e2s)?;
        let parked = match NcclBuffer::<f32>::alloc_zeros(env.stream, n) {
            // SAFETY: the only rank of `other` registers it, and no
            // collective of `other` uses it
            Ok(buf) => Some(unsafe { other.register(buf) }.map_err(e2s)?),
            Err(Error::Unsupported { .. }) => None, // no ncclMemAlloc before 2.19
            Err(e) => return Err(e2s(e)),
        };
        drop(parked);
        let a = env.up::<f32>(&input::<f32>(48, rank, n));
        let mut b = env.zeros::<f32>(n);
        nccl::group(|g| {
            comm.send(&a, next, g.on(env.stream))?;
            drop(other);
            comm.recv(&mut b, prev, g.on(env.stream))
        })
        .map_err(e2s)?;
        close(&env.down(&b), &input::<f32>(48, prev, n), false)
    })();
    rep.check(
        "a Comm dropped during another's group is aborted in full",
        r,
    );
}

/// `NcclBuffer` across streams with cudarc's event tracking on (the context
/// has several streams): uses on another stream are ordered both ways, a
/// write waits for readers on two streams, views in collectives (buckets),
/// and a graph captured with tracking on. Work queued behind long copies of
/// unrelated memory starts late, so a missing wait shows as wrong values.
fn ncclbuf_streams(env: &Env, ctx: &Arc<CudaContext>, rep: &mut Report) {
    use cudarc::driver::DeviceSlice;
    fn cu(e: cudarc::driver::DriverError) -> String {
        e.to_string()
    }
    /// Keeps `s` busy (about a millisecond on an H100) with copies of
    /// memory of its own, so that what is queued after starts late.
    struct Stall(CudaSlice<u8>, CudaSlice<u8>);
    impl Stall {
        fn new(s: &Arc<CudaStream>) -> Result<Stall, String> {
            let n = 64 << 20;
            Ok(Stall(
                s.alloc_zeros::<u8>(n).map_err(cu)?,
                s.alloc_zeros::<u8>(n).map_err(cu)?,
            ))
        }
        fn on(&mut self, s: &Arc<CudaStream>) -> Result<(), String> {
            for _ in 0..8 {
                s.memcpy_dtod(&self.0, &mut self.1).map_err(cu)?;
            }
            Ok(())
        }
    }
    /// `got[i] == want(i)` at a spread of indices and the last.
    fn sampled(what: &str, got: &[f32], want: impl Fn(usize) -> f32) -> Result<(), String> {
        for i in (0..got.len()).step_by(4099).chain([got.len() - 1]) {
            if got[i] != want(i) {
                return Err(format!("{what}[{i}] = {} (want {})", got[i], want(i)));
            }
        }
        Ok(())
    }
    let comm = env.comm;
    let (rank, world) = (comm.rank(), comm.world_size());
    let big = 1 << 24;
    let ranks_sum: f32 = (0..world).map(|r| r as f32).sum();
    let mine = |i: usize| (i % 7) as f32 + rank as f32;
    let sum = |i: usize| world as f32 * (i % 7) as f32 + ranks_sum;
    let host: Vec<f32> = (0..big).map(mine).collect();

    // (a) and (b) for each kind of memory (the free differs: on the host
    // after a wait for ncclMemAlloc memory, on the stream for pool memory)
    for memory in [Memory::Nccl, Memory::Stream] {
        // (a) written on its own stream A by a copy, all_reduced on B, read back
        // on A; then zeroed on A, which must wait for B's read of it
        let r = (|| -> Result<(), String> {
            let a = ctx.new_stream().map_err(cu)?;
            let b = env.stream;
            if !ctx.is_managing_stream_synchronization() {
                return Err("expected cudarc to track events with several streams".into());
            }
            let (mut stall_a, mut stall_b) = (Stall::new(&a)?, Stall::new(b)?);
            let src = a.clone_htod(&host).map_err(cu)?;
            let mut x = NcclBuffer::<f32>::alloc_zeros_in(&a, big, memory).map_err(e2s)?;
            let mut y = NcclBuffer::<f32>::alloc_zeros_in(&a, big, memory).map_err(e2s)?;
            if (x.memory(), y.memory()) != (memory, memory) {
                return Err(format!(
                    "memory() says {:?}, asked for {memory:?}",
                    x.memory()
                ));
            }
            a.synchronize().map_err(cu)?;
            stall_a.on(&a)?;
            a.memcpy_dtod(&src, &mut x).map_err(cu)?;
            stall_b.on(b)?;
            comm.all_reduce(&x, &mut y, ReduceOp::Sum, b).map_err(e2s)?;
            a.memset_zeros(&mut x).map_err(cu)?;
            let got = a.clone_dtoh(&y).map_err(cu)?;
            let zeroed = a.clone_dtoh(&x).map_err(cu)?;
            a.synchronize().map_err(cu)?;
            sampled(
                "all_reduce on B of a buffer written on A, read on A",
                &got,
                sum,
            )?;
            sampled("the buffer zeroed on A", &zeroed, |_| 0.0)?;
            // dropped with B's uses joined into A
            drop((x, y));
            a.synchronize().map_err(cu)
        })();
        rep.check(
            &format!("NcclBuffer ({memory:?}): written on A, all_reduced on B, read on A"),
            r,
        );

        // (b) reads on two other streams (a long copy on T, an all_reduce on U),
        // then a write on the buffer's own stream must wait for both: with one
        // read event (cudarc 0.19's scheme) it would wait for U's read only
        let r = (|| -> Result<(), String> {
            let a = ctx.new_stream().map_err(cu)?;
            let (t, u) = (ctx.new_stream().map_err(cu)?, ctx.new_stream().map_err(cu)?);
            let mut stall_t = Stall::new(&t)?;
            let src = a.clone_htod(&host).map_err(cu)?;
            let mut z = NcclBuffer::<f32>::alloc_zeros_in(&a, big, memory).map_err(e2s)?;
            a.memcpy_dtod(&src, &mut z).map_err(cu)?;
            let mut out_t = t.alloc_zeros::<f32>(big).map_err(cu)?;
            let mut out_u = u.alloc_zeros::<f32>(big).map_err(cu)?;
            a.synchronize().map_err(cu)?;
            t.synchronize().map_err(cu)?;
            u.synchronize().map_err(cu)?;
            stall_t.on(&t)?;
            t.memcpy_dtod(&z, &mut out_t).map_err(cu)?;
            comm.all_reduce(&z, &mut out_u, ReduceOp::Sum, &u)
                .map_err(e2s)?;
            a.memset_zeros(&mut z).map_err(cu)?;
            let got_t = t.clone_dtoh(&out_t).map_err(cu)?;
            let got_u = u.clone_dtoh(&out_u).map_err(cu)?;
            t.synchronize().map_err(cu)?;
            u.synchronize().map_err(cu)?;
            sampled("the long copy on T (zeroed under it?)", &got_t, mine)?;
            sampled("the all_reduce on U", &got_u, sum)?;
            drop(z);
            a.synchronize().map_err(cu)
        })();
        rep.check(
            &format!("NcclBuffer ({memory:?}): a write waits for readers on two other streams"),
            r,
        );
    }

    // (a'') pool memory is not allocated inside a capture (it would become the
    // graph's): refused with Capturing, the capture goes on; outside, it is
    let r = (|| -> Result<(), String> {
        let s = ctx.new_stream().map_err(cu)?;
        s.begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cu)?;
        let refused = NcclBuffer::<f32>::alloc_zeros_in(&s, 64, Memory::Stream).map(|_| ());
        let graph = s.end_capture(cu::CUgraphInstantiate_flags(0));
        match refused {
            Err(Error::Capturing { bytes: 256, .. }) => {}
            other => return Err(format!("inside a capture: {other:?}")),
        }
        graph.map_err(|e| format!("the capture after the refusal: {e}"))?;
        let b = NcclBuffer::<f32>::alloc_zeros_in(&s, 64, Memory::Stream).map_err(e2s)?;
        let zeros = s.clone_dtoh(&b).map_err(cu)?;
        drop(b);
        s.synchronize().map_err(cu)?;
        match zeros.iter().all(|&z| z == 0.0) {
            true => Ok(()),
            false => Err(format!("not zeroed: {zeros:?}")),
        }
    })();
    rep.check(
        "NcclBuffer (Stream): refused inside a capture, zeroed outside",
        r,
    );

    // (a''') from_host: a copy of the host data, in each memory, on the
    // stream it is given; an empty slice is refused before any allocation
    for memory in [Memory::Stream, Memory::Nccl] {
        let r = (|| -> Result<(), String> {
            let s = env.stream;
            let data: Vec<f32> = (0..5000).map(mine).collect();
            let b = NcclBuffer::from_host(s, &data, memory).map_err(e2s)?;
            if b.len() != data.len() || b.memory() != memory {
                return Err(format!("{} elements of {:?}", b.len(), b.memory()));
            }
            let got = s.clone_dtoh(&b).map_err(cu)?;
            s.synchronize().map_err(cu)?;
            if got != data {
                return Err("the copy differs from the data".into());
            }
            match NcclBuffer::<f32>::from_host(s, &[], memory) {
                Err(Error::InvalidArgument { .. }) => Ok(()),
                other => Err(format!("an empty slice: {other:?}")),
            }
        })();
        rep.check(
            &format!("NcclBuffer::from_host ({memory:?}): the data; empty refused"),
            r,
        );
    }

    // (c) buckets: views of one buffer in collectives, out of place in a
    // group, in place half by half (the second half on another stream)
    let r = (|| -> Result<(), String> {
        let n = 1000;
        let m = n / 2;
        let ins: Vec<Vec<f64>> = (0..world).map(|r| input::<f32>(53, r, n)).collect();
        let want: Vec<f64> = (0..n).map(|i| ins.iter().map(|v| v[i]).sum()).collect();
        let h: Vec<f32> = ins[rank].iter().map(|&x| x as f32).collect();
        let mut g = NcclBuffer::<f32>::alloc_zeros(env.stream, n).map_err(e2s)?;
        env.stream.memcpy_htod(&h, &mut g).map_err(cu)?;
        let mut lo = NcclBuffer::<f32>::alloc_zeros(env.stream, m).map_err(e2s)?;
        let mut hi = NcclBuffer::<f32>::alloc_zeros(env.stream, n - m).map_err(e2s)?;
        if g.try_slice(..=n).is_some() || g.try_slice(m + 1..m).is_some() {
            return Err("try_slice accepted a range out of bounds".into());
        }
        let inner = g.slice(m..).slice(1..3);
        if !g.slice(m..m).is_empty()
            || inner.len() != 2
            || inner.as_raw() != g.as_raw() + (m as u64 + 1) * 4
        {
            return Err(format!("views: {inner:?} of a buffer at {:#x}", g.as_raw()));
        }
        // views outlive the group (NCCL launches at its end)
        let (g_lo, g_hi) = (g.slice(..m), g.slice(m..));
        nccl::group(|gr| {
            comm.all_reduce(&g_lo, &mut lo, ReduceOp::Sum, gr.on(env.stream))?;
            comm.all_reduce(&g_hi, &mut hi, ReduceOp::Sum, gr.on(env.stream))
        })
        .map_err(e2s)?;
        let mut got = env.stream.clone_dtoh(&lo).map_err(cu)?;
        got.extend(env.stream.clone_dtoh(&hi).map_err(cu)?);
        env.stream.synchronize().map_err(cu)?;
        close(&got, &want, false).map_err(|e| format!("grouped halves: {e}"))?;
        let other = ctx.new_stream().map_err(cu)?;
        comm.all_reduce_in_place(&mut g.slice_mut(..m), ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        comm.all_reduce_in_place(&mut g.slice_mut(m..), ReduceOp::Sum, &other)
            .map_err(e2s)?;
        let got = env.stream.clone_dtoh(&g).map_err(cu)?;
        env.stream.synchronize().map_err(cu)?;
        close(&got, &want, false).map_err(|e| format!("in place, half by half: {e}"))
    })();
    rep.check("NcclBuffer views: buckets all_reduced separately", r);

    // (c') views of views: addresses and lengths from the buffer's, None out
    // of bounds, and a write through a view of a mutable view lands in those
    // elements of the buffer and nowhere else
    let r = (|| -> Result<(), String> {
        let s = env.stream;
        let host: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let mut t = NcclBuffer::<f32>::alloc_zeros(s, 8).map_err(e2s)?;
        s.memcpy_htod(&host, &mut t).map_err(cu)?;
        let base = t.as_raw();
        let at = |i: usize| base + 4 * i as u64;
        let (hi, lo) = (3, 2);
        let v = t.try_slice(2..).ok_or("try_slice(2..)")?;
        let vv = v.try_slice(1..3).ok_or("NcclView::try_slice(1..3)")?;
        if (vv.as_raw(), vv.len()) != (at(3), 2)
            || v.try_slice(..7).is_some()
            || v.try_slice(hi..lo).is_some()
            || v.try_slice(6..).map(|e| e.len()) != Some(0)
        {
            return Err(format!("views of a view: {vv:?} of {v:?}"));
        }
        let mut copy = s.alloc_zeros::<f32>(2).map_err(cu)?;
        s.memcpy_dtod(&vv, &mut copy).map_err(cu)?;
        let got = s.clone_dtoh(&copy).map_err(cu)?;
        s.synchronize().map_err(cu)?;
        if got != [3.0, 4.0] {
            return Err(format!("copied from elements 3..5: {got:?}"));
        }
        if t.try_slice_mut(..9).is_some() || t.try_slice_mut(9..).is_some() {
            return Err("try_slice_mut accepted a range out of bounds".into());
        }
        let mut w = t.try_slice_mut(1..7).ok_or("try_slice_mut(1..7)")?;
        if (w.as_raw(), w.len()) != (at(1), 6) {
            return Err(format!(
                "try_slice_mut(1..7): {w:?} of a buffer at {base:#x}"
            ));
        }
        let r = w.try_slice(4..).ok_or("NcclViewMut::try_slice(4..)")?;
        if (r.as_raw(), r.len()) != (at(5), 2) || w.try_slice(..=6).is_some() {
            return Err(format!("NcclViewMut::try_slice(4..): {r:?} of {w:?}"));
        }
        if w.try_slice_mut(hi..lo).is_some() || w.try_slice_mut(..7).is_some() {
            return Err("NcclViewMut::try_slice_mut accepted a range out of bounds".into());
        }
        let mut ww = w
            .try_slice_mut(2..4)
            .ok_or("NcclViewMut::try_slice_mut(2..4)")?;
        if (ww.as_raw(), ww.len()) != (at(3), 2) {
            return Err(format!("NcclViewMut::try_slice_mut(2..4): {ww:?}"));
        }
        s.memset_zeros(&mut ww).map_err(cu)?;
        let got = s.clone_dtoh(&t).map_err(cu)?;
        s.synchronize().map_err(cu)?;
        if got != [0.0, 1.0, 2.0, 0.0, 0.0, 5.0, 6.0, 7.0] {
            return Err(format!("zeroed elements 3..5 through a view: {got:?}"));
        }
        Ok(())
    })();
    rep.check(
        "NcclBuffer views of views: try_slice, try_slice_mut, as_raw",
        r,
    );

    // (d) uses on its own stream record nothing: a graph can capture them
    // with event tracking on
    let r = (|| -> Result<(), String> {
        let gs = ctx.new_stream().map_err(cu)?;
        let n = 1000;
        let ins: Vec<Vec<f64>> = (0..world).map(|r| input::<f32>(59, r, n)).collect();
        let h: Vec<f32> = ins[rank].iter().map(|&x| x as f32).collect();
        let mut buf = NcclBuffer::<f32>::alloc_zeros(&gs, n).map_err(e2s)?;
        gs.memcpy_htod(&h, &mut buf).map_err(cu)?;
        gs.synchronize().map_err(cu)?;
        gs.begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cu)?;
        let captured = comm.all_reduce_in_place(&mut buf, ReduceOp::Sum, &gs);
        let graph = gs.end_capture(cu::CUgraphInstantiate_flags(0));
        captured.map_err(e2s)?;
        let graph = graph.map_err(cu)?.ok_or("empty graph")?;
        graph.launch().map_err(cu)?;
        let out = gs.clone_dtoh(&buf).map_err(cu)?;
        gs.synchronize().map_err(cu)?;
        let want: Vec<f64> = (0..n).map(|i| ins.iter().map(|v| v[i]).sum()).collect();
        close(&out, &want, false)
    })();
    rep.check("NcclBuffer on its own stream captured with tracking on", r);

    // (e) a CudaSlice taken over: written on T by a copy queued behind a
    // stall (cudarc records the slice's write event on T), taken over (its
    // stream A must wait for that event), all_reduced in place on A, where
    // a missing wait shows as the zeros the copy had not overwritten yet;
    // then read by an all_reduce on B (tracked as a foreign read) and
    // dropped (joined into A). The same memory, not a copy.
    let r = (|| -> Result<(), String> {
        let (a, t, b) = (
            ctx.new_stream().map_err(cu)?,
            ctx.new_stream().map_err(cu)?,
            env.stream,
        );
        let mut stall_t = Stall::new(&t)?;
        let src = t.clone_htod(&host).map_err(cu)?;
        let mut slice = a.alloc_zeros::<f32>(big).map_err(cu)?;
        let raw = cudarc::driver::DevicePtr::device_ptr(&slice, &a).0;
        a.synchronize().map_err(cu)?;
        t.synchronize().map_err(cu)?;
        stall_t.on(&t)?;
        t.memcpy_dtod(&src, &mut slice).map_err(cu)?;
        let mut x = NcclBuffer::from_cuda_slice(slice).map_err(|e| e2s(e.into()))?;
        if (x.memory(), x.len(), x.as_raw()) != (Memory::Stream, big, raw)
            || !Arc::ptr_eq(x.stream(), &a)
        {
            return Err(format!(
                "taken over as {:?}, {} elements at {:#x} (the slice: {big} at {raw:#x})",
                x.memory(),
                x.len(),
                x.as_raw()
            ));
        }
        comm.all_reduce_in_place(&mut x, ReduceOp::Sum, &a)
            .map_err(e2s)?;
        let got = a.clone_dtoh(&x).map_err(cu)?;
        let mut out = b.alloc_zeros::<f32>(big).map_err(cu)?;
        stall_t.on(b)?;
        comm.all_reduce(&x, &mut out, ReduceOp::Sum, b)
            .map_err(e2s)?;
        // freed on A while B's read may still be queued: the drop joins it
        drop(x);
        let got_b = b.clone_dtoh(&out).map_err(cu)?;
        a.synchronize().map_err(cu)?;
        b.synchronize().map_err(cu)?;
        sampled(
            "a slice written on T, taken over, all_reduced on its stream",
            &got,
            sum,
        )?;
        sampled("then all_reduced on B", &got_b, |i| world as f32 * sum(i))
    })();
    rep.check(
        "NcclBuffer::from_cuda_slice: after the slice's uses on another stream, then tracked",
        r,
    );

    // (e') a slice of the per-thread default stream, written on T behind a
    // stall: the buffer is handed out once the per-thread stream has waited
    // for that write (no use counts as home there, so nothing else orders
    // B's read after it); read on B
    let r = (|| -> Result<(), String> {
        let n = big;
        let pt = ctx.per_thread_stream();
        let t = ctx.new_stream().map_err(cu)?;
        let mut stall_t = Stall::new(&t)?;
        let src = t.clone_htod(&host).map_err(cu)?;
        let mut slice = pt.alloc_zeros::<f32>(n).map_err(cu)?;
        pt.synchronize().map_err(cu)?;
        t.synchronize().map_err(cu)?;
        stall_t.on(&t)?;
        t.memcpy_dtod(&src, &mut slice).map_err(cu)?;
        let x = NcclBuffer::from_cuda_slice(slice).map_err(|e| e2s(e.into()))?;
        let mut out = env.stream.alloc_zeros::<f32>(n).map_err(cu)?;
        comm.all_reduce(&x, &mut out, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        let got = env.stream.clone_dtoh(&out).map_err(cu)?;
        env.stream.synchronize().map_err(cu)?;
        drop(x);
        sampled(
            "a per-thread stream's slice taken over, all_reduced on B",
            &got,
            sum,
        )
    })();
    rep.check(
        "NcclBuffer::from_cuda_slice of the per-thread default stream",
        r,
    );
}

/// The symmetric-memory pool (NCCL 2.27+): all_reduce on pooled windows
/// beside a plain buffer, reuse without a second registration (stats), a
/// CUDA graph whose buffers come from the pool inside the capture (after
/// `reserve`) replayed several times, the typed refusal of an allocation
/// the capture would have to register (in thread-local and global capture
/// modes; the capture completes), and the pool's windows released when it
/// goes. Where NCCL makes no windows (ranks of one GPU under different host
/// ids), the pool must say so, and everything else still holds.
#[cfg(nccl_fn = "ncclCommWindowRegister")]
fn symmetric_pool(env: &Env, ctx: &Arc<CudaContext>, rep: &mut Report) {
    use nccl::SymmetricPool;
    let cu = |e: cudarc::driver::DriverError| e.to_string();
    let comm = env.comm;
    let (rank, world) = (comm.rank(), comm.world_size());
    let runtime = nccl::version().unwrap();
    if nccl::require_api("ncclCommWindowRegister").is_err() {
        // SAFETY: nothing is registered: the pool is refused
        let r = match unsafe { SymmetricPool::new(comm) } {
            Err(Error::Unsupported { .. }) => Ok(()),
            other => Err(format!("{other:?}")),
        };
        rep.check("symmetric pool: Unsupported before 2.27", r);
        if rank == 0 {
            say(&format!(
                "symmetric pool NOT RUN on libnccl {runtime} (windows: NCCL 2.27+)"
            ));
        }
        return;
    }
    let n = 1000;
    let ins: Vec<Vec<f64>> = (0..world).map(|r| input::<f32>(61, r, n)).collect();
    let sum: Vec<f64> = (0..n).map(|i| ins.iter().map(|v| v[i]).sum()).collect();
    let h: Vec<f32> = ins[rank].iter().map(|&x| x as f32).collect();
    let class = (n * 4).next_power_of_two().max(4096);

    // alloc, all_reduce between pooled windows and beside a plain buffer;
    // free and alloc again: reused, not registered again
    let r = (|| -> Result<(), String> {
        // SAFETY: every rank runs this same sequence of allocations and
        // drops, with the same sizes, and uses the buffers whole.
        let pool = unsafe { SymmetricPool::new(comm) }.map_err(e2s)?;
        if pool.is_symmetric().is_some() {
            return Err("is_symmetric answered before any registration".into());
        }
        if pool.comm().rank() != rank {
            return Err("the pool's communicator".into());
        }
        let mut a = pool.alloc::<f32>(n, env.stream).map_err(e2s)?;
        if a.capacity_bytes() != class || a.as_raw() % 4096 != 0 || a.try_slice(..=n).is_some() {
            return Err(format!(
                "capacity {} (want {class}), address {:#x}, or a view past the end",
                a.capacity_bytes(),
                a.as_raw()
            ));
        }
        env.stream.memcpy_htod(&h, &mut a).map_err(cu)?;
        let mut b = pool.alloc::<f32>(n, env.stream).map_err(e2s)?;
        comm.all_reduce(&a, &mut b, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        let out = env.stream.clone_dtoh(&b).map_err(cu)?;
        env.stream.synchronize().map_err(cu)?;
        close(&out, &sum, false).map_err(|e| format!("pooled windows: {e}"))?;
        // the same small all_reduce on a plain buffer, side by side
        let mut plain = env.zeros::<f32>(n);
        comm.all_reduce(&a, &mut plain, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        close(&env.down(&plain), &sum, false).map_err(|e| format!("into a plain buffer: {e}"))?;
        let s = pool.stats();
        if (s.registrations, s.reuses, s.in_use, s.free, s.bytes_held) != (2, 0, 2, 0, 2 * class) {
            return Err(format!("after two allocations: {s:?}"));
        }
        let mapped = a.is_mapped();
        if pool.is_symmetric() != Some(mapped) || b.is_mapped() != mapped {
            return Err(format!(
                "is_symmetric {:?}, windows mapped {mapped} and {}, {s:?}",
                pool.is_symmetric(),
                b.is_mapped()
            ));
        }
        if !mapped && rank == 0 {
            say(&format!(
                "symmetric pool on world {world}: NCCL made no windows (no symmetric memory support); the pool serves plain ncclMemAlloc memory and says so"
            ));
        }
        let (oa, ob) = (a.ordinal(), b.ordinal());
        if (oa, ob) != (0, 1) {
            return Err(format!("ordinals {oa} and {ob}, expected 0 and 1"));
        }
        drop(b);
        // another element type of the same size class reuses the window
        let c = pool.alloc::<i32>(n, env.stream).map_err(e2s)?;
        if c.ordinal() != ob {
            return Err(format!("reused window {}, expected {ob}", c.ordinal()));
        }
        drop(c);
        // two buckets, views of the reused window (same offsets on every rank)
        let mut c = pool.alloc::<f32>(n, env.stream).map_err(e2s)?;
        let half = n / 2;
        comm.all_reduce(
            &a.slice(..half),
            &mut c.slice_mut(..half),
            ReduceOp::Sum,
            env.stream,
        )
        .map_err(e2s)?;
        let (tail, mut tail_out) = (a.try_slice(half..), c.try_slice_mut(half..));
        let (Some(tail), Some(tail_out)) = (tail, tail_out.as_mut()) else {
            return Err("views of the second bucket".into());
        };
        comm.all_reduce(&tail, tail_out, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        let out = env.stream.clone_dtoh(&c).map_err(cu)?;
        env.stream.synchronize().map_err(cu)?;
        close(&out, &sum, false).map_err(|e| format!("reused window, two buckets: {e}"))?;
        let s = pool.stats();
        if (s.registrations, s.reuses, s.in_use) != (2, 2, 2) {
            return Err(format!("registered once, reused twice: {s:?}"));
        }
        drop((a, c));
        drop(pool);
        // the pool's windows parked with the communicator; idle, they still
        // wait for the next point every rank shares (a window registration)
        env.stream.synchronize().map_err(cu)?;
        let parked = comm.release_parked();
        let want = if mapped { 2 } else { 0 };
        if parked != want {
            return Err(format!(
                "{parked} windows parked after the pool went, expected {want}"
            ));
        }
        let x = NcclBuffer::<f32>::alloc_zeros(env.stream, n).map_err(e2s)?;
        // SAFETY: every rank registers this window after the same drops,
        // with the same size, and only deregisters it.
        let w = unsafe { comm.window_register(x, true) }.map_err(e2s)?;
        comm.deregister(w).map_err(e2s)?;
        match comm.release_parked() {
            0 => Ok(()),
            k => Err(format!(
                "{k} windows still parked after the next registration"
            )),
        }
    })();
    rep.check(
        "symmetric pool: all_reduce, reuse without registering again",
        r,
    );

    // reserve, then a graph whose buffer comes from the pool inside the
    // capture; an allocation the capture would have to register is refused
    let r = (|| -> Result<(), String> {
        let gs = ctx.new_stream().map_err(cu)?;
        // SAFETY: as above (same sequence on every rank).
        let pool = unsafe { SymmetricPool::new(comm) }.map_err(e2s)?;
        let made = pool.reserve::<f32>(n, 2, &gs).map_err(e2s)?;
        if made != 2 || pool.reserve::<f32>(n, 2, &gs).map_err(e2s)? != 0 {
            return Err(format!("reserve made {made}, then {:?}", pool.stats()));
        }
        let mut x = pool.alloc::<f32>(n, &gs).map_err(e2s)?;
        gs.memcpy_htod(&h, &mut x).map_err(cu)?;
        gs.synchronize().map_err(cu)?;
        gs.begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(cu)?;
        let captured = (|| -> Result<_, String> {
            let mut y = pool.alloc::<f32>(n, &gs).map_err(e2s)?;
            comm.all_reduce(&x, &mut y, ReduceOp::Sum, &gs)
                .map_err(e2s)?;
            // nothing free of this class: refused, nothing registered
            match pool.alloc::<f32>(n, &gs) {
                Err(Error::Capturing { bytes, .. }) if bytes == class => Ok(y),
                other => Err(format!(
                    "an allocation needing a registration inside a capture: {other:?}"
                )),
            }
        })();
        // the capture always ends, so that a failure leaves no stream capturing
        let graph = gs.end_capture(cu::CUgraphInstantiate_flags(0));
        let mut y = captured?;
        let graph = graph.map_err(cu)?.ok_or("empty graph")?;
        let s = pool.stats();
        if (s.registrations, s.reuses) != (2, 2) {
            return Err(format!("registered during the capture: {s:?}"));
        }
        for replay in 0..3 {
            gs.memset_zeros(&mut y).map_err(cu)?;
            graph.launch().map_err(cu)?;
            let out = gs.clone_dtoh(&y).map_err(cu)?;
            gs.synchronize().map_err(cu)?;
            close(&out, &sum, false).map_err(|e| format!("replay {replay}: {e}"))?;
        }
        drop(graph);
        // global capture mode: the refusal neither calls CUDA nor breaks it
        gs.begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL)
            .map_err(cu)?;
        let refused = pool.alloc::<f32>(4 * n, &gs).map(|_| ());
        let graph = gs.end_capture(cu::CUgraphInstantiate_flags(0));
        match refused {
            Err(Error::Capturing { .. }) => {}
            other => return Err(format!("global mode: {other:?}")),
        }
        graph.map_err(|e| format!("the capture after the refusal: {e}"))?;
        drop((x, y));
        drop(pool);
        gs.synchronize().map_err(cu)?;
        let z = NcclBuffer::<f32>::alloc_zeros(&gs, n).map_err(e2s)?;
        // SAFETY: every rank registers this window after the same drops,
        // with the same size, and only deregisters it.
        let w = unsafe { comm.window_register(z, true) }.map_err(e2s)?;
        comm.deregister(w).map_err(e2s)?;
        match comm.release_parked() {
            0 => Ok(()),
            k => Err(format!(
                "{k} windows still parked after the next registration"
            )),
        }
    })();
    rep.check(
        "symmetric pool: reserve, capture with pooled buffers, replay",
        r,
    );

    // one-sided puts on pooled windows (2.29.2+, windows NCCL made, 2 ranks
    // or more): a ring, each rank's data into the next rank's buffer
    #[cfg(nccl_fn = "ncclPutSignal")]
    if nccl::require_api("ncclPutSignal").is_ok() && world > 1 {
        use nccl::{Signal, SignalWait};
        let r = (|| -> Result<(), String> {
            // SAFETY: as above (same sequence on every rank).
            let pool = unsafe { SymmetricPool::new(comm) }.map_err(e2s)?;
            let mut src = pool.alloc::<f32>(n, env.stream).map_err(e2s)?;
            env.stream.memcpy_htod(&h, &mut src).map_err(cu)?;
            let dst = pool.alloc::<f32>(n, env.stream).map_err(e2s)?;
            // every rank's buffers are ready before any peer puts into them
            env.stream.synchronize().map_err(cu)?;
            comm.all_reduce_in_place(&mut env.zeros::<f32>(1), ReduceOp::Sum, env.stream)
                .map_err(e2s)?;
            env.stream.synchronize().map_err(cu)?;
            let (next, prev) = ((rank + 1) % world, (rank + world - 1) % world);
            let sig = Signal::default();
            let put = comm.put_signal(&src, 0..n, next, &dst, 0, sig, env.stream);
            if !src.is_mapped() {
                return match put {
                    Err(Error::InvalidArgument { .. }) => {
                        if rank == 0 {
                            say(
                                "symmetric pool: one-sided puts NOT RUN: NCCL made no windows here; the refusal was checked",
                            );
                        }
                        Ok(())
                    }
                    other => Err(format!(
                        "a put on a pooled buffer without a window: {other:?}"
                    )),
                };
            }
            put.map_err(e2s)?;
            let from_prev = SignalWait {
                peer: prev,
                count: 1,
                signal: sig,
            };
            comm.wait_signal(&[from_prev], env.stream).map_err(e2s)?;
            let got = env.stream.clone_dtoh(&dst).map_err(cu)?;
            env.stream.synchronize().map_err(cu)?;
            close(&got, &ins[prev], false).map_err(|e| format!("put from rank {prev}: {e}"))?;
            // no rank frees its windows before every rank has read
            comm.all_reduce_in_place(&mut env.zeros::<f32>(1), ReduceOp::Sum, env.stream)
                .map_err(e2s)?;
            env.stream.synchronize().map_err(cu)
        })();
        rep.check("symmetric pool: one-sided puts between pooled buffers", r);
    }
}

/// World 1 extras that need no peers: init_all, a non-blocking communicator.
/// APIs of the newest NCCL releases: collectives with a per-call
/// configuration (2.31.2+) and one-sided puts (2.29.2+). On an older
/// libnccl, what can be checked there: the argument checks and
/// `Unsupported`.
fn beyond_bindings(env: &Env, rep: &mut Report) {
    device_api(env, rep);
    #[cfg(nccl_fn = "ncclAllReduceConfig")]
    configured_collectives(env, rep);
    #[cfg(nccl_fn = "ncclPutSignal")]
    one_sided(env, rep);
    let _ = (env, rep);
}

/// The device API's host half (2.28.3+): teams against rank and world, a
/// device communicator created and dropped twice (its ranks as NCCL wrote
/// them, its size against the layout table), the properties and a window's
/// addresses in the peers' memory (2.29.2+, `Unsupported` before), read
/// back through those addresses; bounds refused before NCCL.
/// Whether NCCL gives a communicator with one local rank symmetric memory
/// support (what a device communicator needs): not before 2.29
/// (`ncclTransportCheckP2pType` of 2.28 answers no P2P for one local rank,
/// and `symmetricSupport` requires it).
fn single_rank_symmetric(runtime: nccl::Version) -> bool {
    runtime >= nccl::Version::new(2, 29, 0)
}

fn device_api(env: &Env, rep: &mut Report) {
    use nccl::{DevCommRequirements, NcclCode, Team, Version};
    let comm = env.comm;
    let (rank, world) = (comm.rank(), comm.world_size());
    let runtime = nccl::version().unwrap();
    if runtime < Version::new(2, 28, 3) {
        let r = match (
            comm.team_world(),
            comm.dev_comm(&DevCommRequirements::new()),
        ) {
            (Err(Error::Unsupported { .. }), Err(Error::Unsupported { .. })) => Ok(()),
            (a, b) => Err(format!("{a:?} / {:?}", b.map(|_| ()))),
        };
        rep.check("device API: Unsupported before 2.28.3", r);
        say(&format!(
            "rank {rank}: device API NOT RUN on libnccl {runtime} (NCCL 2.28.3+)"
        ));
        return;
    }
    let layout = nccl::sys::device::layout_of(runtime.code().unwrap() as u32);
    let lsa = match comm.team_lsa() {
        Ok(t) => t,
        Err(e) => {
            rep.check("device API: team_lsa", Err(e2s(e)));
            return;
        }
    };
    let r = (|| -> Result<(), String> {
        let w = comm.team_world().map_err(e2s)?;
        if w != (Team {
            n_ranks: world,
            rank,
            stride: 1,
        }) {
            return Err(format!("team_world {w:?}"));
        }
        if lsa.n_ranks == 0 || world % lsa.n_ranks != 0 || lsa.rank >= lsa.n_ranks {
            return Err(format!("team_lsa {lsa:?} in a world of {world}"));
        }
        if world == 1
            && lsa
                != (Team {
                    n_ranks: 1,
                    rank: 0,
                    stride: 1,
                })
        {
            return Err(format!("team_lsa {lsa:?} in world 1"));
        }
        let me = comm.team_rank_to_world(lsa, lsa.rank).map_err(e2s)?;
        if me != rank {
            return Err(format!(
                "LSA member {} is world rank {me}, not {rank}",
                lsa.rank
            ));
        }
        if comm.team_rank_to_lsa(lsa, lsa.rank).map_err(e2s)? != Some(lsa.rank) {
            return Err("team_rank_to_lsa of this rank".into());
        }
        let rail = comm.team_rail().map_err(e2s)?;
        if rail.n_ranks * lsa.n_ranks != world {
            return Err(format!("rail {rail:?} x LSA {lsa:?} != world {world}"));
        }
        match comm.team_rank_to_world(w, world) {
            Err(Error::InvalidArgument { arg: "rank", .. }) => {}
            other => return Err(format!("a rank past the team: {other:?}")),
        }
        // a team made by hand whose member NCCL would compute past an int
        let wide = nccl::Team {
            n_ranks: 5,
            rank: 0,
            stride: 1 << 30,
        };
        for (api, got) in [
            ("world", comm.team_rank_to_world(wide, 4).map(Some)),
            ("lsa", comm.team_rank_to_lsa(wide, 4)),
        ] {
            match got {
                Err(Error::InvalidArgument { arg: "team", .. }) => {}
                other => return Err(format!("team_rank_to_{api} past an int: {other:?}")),
            }
        }
        Ok(())
    })();
    rep.check("device API: teams", r);

    let r = (|| -> Result<(), String> {
        let reqs = DevCommRequirements::new().lsa_barrier_count(4);
        for round in 0..2 {
            let dc = match comm.dev_comm(&reqs) {
                Ok(d) => d,
                Err(Error::UnknownLayout { .. }) if layout.is_none() => {
                    say(&format!(
                        "rank {rank}: device communicator NOT RUN: libnccl {runtime} has no known layout (refusal checked)"
                    ));
                    return Ok(());
                }
                Err(
                    e @ Error::Nccl {
                        code: NcclCode::InvalidUsage,
                        ..
                    },
                ) if world > 1 || !single_rank_symmetric(runtime) => {
                    say(&format!(
                        "rank {rank}: device communicator NOT AVAILABLE: refused by NCCL {runtime} (no symmetric memory support{}): {e}",
                        if world > 1 {
                            " between these ranks"
                        } else {
                            " for a communicator of one local rank before 2.29"
                        }
                    ));
                    return Ok(());
                }
                Err(e) => return Err(format!("round {round}: {}", e2s(e))),
            };
            let l = layout.ok_or("a device communicator on a release without a layout")?;
            let got = (dc.rank(), dc.world_size(), dc.lsa_rank(), dc.lsa_size());
            let want = (
                rank as i32,
                world as i32,
                lsa.rank as i32,
                lsa.n_ranks as i32,
            );
            if got != want {
                return Err(format!(
                    "round {round}: NCCL wrote (rank, world, lsa rank, lsa size) {got:?}, want {want:?}"
                ));
            }
            if dc.size() != l.dev_comm_size || dc.as_bytes().len() != l.dev_comm_size {
                return Err(format!("size {}", dc.size()));
            }
            if dc.version_code() != l.version_code {
                return Err(format!(
                    "version_code {} for the layout of {}",
                    dc.version_code(),
                    l.version_code
                ));
            }
            if !std::ptr::eq(dc.comm(), comm) || dc.comm().rank() != rank {
                return Err("DevComm::comm is not the communicator it was made on".into());
            }
            drop(dc);
        }
        Ok(())
    })();
    rep.check("device API: dev_comm created and dropped twice", r);

    // the build must have them too (a static link on an older header does not)
    let queries =
        runtime >= Version::new(2, 29, 2) && nccl::sys::available("ncclCommQueryProperties");
    let r = match comm.properties() {
        Err(Error::Unsupported { .. }) if !queries => Ok(()),
        Err(Error::UnknownLayout { .. }) if layout.is_none() => Ok(()),
        Ok(p) if queries => {
            if (p.rank, p.world_size) != (rank, world) {
                Err(format!("properties {p:?}"))
            } else if p.n_lsa_teams.is_some_and(|n| n != world / lsa.n_ranks) {
                Err(format!("{:?} LSA teams, LSA team {lsa:?}", p.n_lsa_teams))
            } else if p.dev_comm_runtime_size.is_some()
                && p.dev_comm_runtime_size != layout.map(|l| l.dev_comm_size)
            {
                Err(format!(
                    "NCCL's devCommRuntimeVersionSize {:?}",
                    p.dev_comm_runtime_size
                ))
            } else {
                say(&format!("rank {rank}: properties {p:?}"));
                Ok(())
            }
        }
        other => Err(format!("{other:?}")),
    };
    rep.check("device API: properties (Unsupported before 2.29.2)", r);

    #[cfg(nccl_fn = "ncclCommWindowRegister")]
    device_window(env, rep, lsa, queries);
}

/// A window's addresses (2.29.2+): this rank's part read back through its
/// LSA address, a peer's too where there is one; bounds refused.
#[cfg(nccl_fn = "ncclCommWindowRegister")]
fn device_window(env: &Env, rep: &mut Report, lsa: nccl::Team, queries: bool) {
    let comm = env.comm;
    let (rank, world) = (comm.rank(), comm.world_size());
    if nccl::require_api("ncclCommWindowRegister").is_err() {
        return;
    }
    let n = 1024;
    let value = |r: usize, i: usize| (r * 10_000 + i) as f32;
    let r = (|| -> Result<(), String> {
        let mut a = NcclBuffer::<f32>::alloc_zeros(env.stream, n).map_err(e2s)?;
        let h: Vec<f32> = (0..n).map(|i| value(rank, i)).collect();
        env.stream
            .memcpy_htod(&h, &mut a)
            .map_err(|e| e.to_string())?;
        env.stream.synchronize().map_err(|e| e.to_string())?;
        // SAFETY: every rank registers this one window, of the same size,
        // and only reads it.
        let w = unsafe { comm.window_register(a, true) }.map_err(e2s)?;
        let first = w.lsa_device_ptr(comm, 0, lsa.rank);
        if !queries {
            return match first {
                Err(Error::Unsupported {
                    api: "ncclGetLsaDevicePointer",
                    ..
                }) => Ok(()),
                other => Err(format!("before 2.29.2: {other:?}")),
            };
        }
        if !w.is_mapped() {
            return match first {
                Err(Error::InvalidArgument { arg: "window", .. }) => {
                    say(&format!(
                        "rank {rank}: window addresses NOT RUN: NCCL made no window (no symmetric memory support); the refusal was checked"
                    ));
                    Ok(())
                }
                other => Err(format!("an unmapped window: {other:?}")),
            };
        }
        let p0 = first.map_err(e2s)?;
        let p1 = w.lsa_device_ptr(comm, 1, lsa.rank).map_err(e2s)?;
        if p1 != p0 + 4 {
            return Err(format!("element 1 at {p1:#x}, element 0 at {p0:#x}"));
        }
        if w.peer_device_ptr(comm, 0, rank).map_err(e2s)? != Some(p0) {
            return Err("peer_device_ptr of this rank != lsa_device_ptr".into());
        }
        let mut back = [0f32; 4];
        // SAFETY: p0 + 8 .. p0 + 24 lies inside this rank's part of a
        // registered window of n floats, mapped into this context by NCCL.
        unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut back, p0 + 8) }
            .map_err(|e| e.to_string())?;
        if back
            != [
                value(rank, 2),
                value(rank, 3),
                value(rank, 4),
                value(rank, 5),
            ]
        {
            return Err(format!("read through the LSA address: {back:?}"));
        }
        if lsa.n_ranks > 1 {
            let peer_lsa = (lsa.rank + 1) % lsa.n_ranks;
            let peer = comm.team_rank_to_world(lsa, peer_lsa).map_err(e2s)?;
            let pp = w.lsa_device_ptr(comm, n - 1, peer_lsa).map_err(e2s)?;
            let mut last = [0f32; 1];
            // SAFETY: the last float of the peer's part of the window,
            // mapped here by NCCL; the peer filled it before registering.
            unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut last, pp) }
                .map_err(|e| e.to_string())?;
            if last[0] != value(peer, n - 1) {
                return Err(format!("peer {peer}'s last float read as {}", last[0]));
            }
        }
        let refused = |what: &str, r: Result<Option<u64>, Error>, arg: &str| match r {
            Err(Error::InvalidArgument { arg: a, .. }) if a == arg => Ok(()),
            other => Err(format!("{what}: {other:?}")),
        };
        refused(
            "offset n",
            w.lsa_device_ptr(comm, n, lsa.rank).map(Some),
            "offset",
        )?;
        refused(
            "lsa rank past the team",
            w.lsa_device_ptr(comm, 0, lsa.n_ranks).map(Some),
            "lsa_rank",
        )?;
        refused(
            "peer past the world",
            w.peer_device_ptr(comm, 0, world),
            "peer",
        )?;
        refused(
            "multimem offset n",
            w.lsa_multimem_device_ptr(comm, n),
            "offset",
        )?;
        // NCCL gives null without multimem, or refuses where it cannot make
        // the team's multicast object: either is reported
        let mm = match w.lsa_multimem_device_ptr(comm, 0) {
            Ok(p) => format!("{p:?}"),
            Err(e @ Error::Nccl { .. }) => format!("refused by NCCL: {e}"),
            Err(e) => return Err(e2s(e)),
        };
        say(&format!(
            "rank {rank}: window at LSA address {p0:#x}, multimem {mm}"
        ));
        Ok(())
    })();
    rep.check(
        "device API: window addresses (Unsupported before 2.29.2), bounds",
        r,
    );
}

/// One-sided puts and signals (2.29.2+): argument checks on every world;
/// with 2 ranks or more, a ring of puts (each rank writes its data into the
/// next rank's window and waits for the previous rank's), grouped puts to
/// every peer, and a barrier of bare signals.
#[cfg(nccl_fn = "ncclPutSignal")]
fn one_sided(env: &Env, rep: &mut Report) {
    use nccl::{Signal, SignalWait};
    let comm = env.comm;
    let (rank, world) = (comm.rank(), comm.world_size());
    let runtime = nccl::version().unwrap();
    if nccl::require_api("ncclPutSignal").is_err() {
        let r = match comm.signal(0, Signal::default(), env.stream) {
            Err(Error::Unsupported {
                api: "ncclSignal", ..
            }) => Ok(()),
            other => Err(format!("{other:?}")),
        };
        rep.check("one-sided: Unsupported before 2.29.2", r);
        if rank == 0 {
            say(&format!(
                "one-sided puts NOT RUN on libnccl {runtime} (NCCL 2.29.2+)"
            ));
        }
        return;
    }
    let n = 256;
    let data = |r: usize| -> Vec<f64> { input::<f32>(53, r, n * world) };
    let r = (|| -> Result<(), String> {
        let mut a = NcclBuffer::<f32>::alloc_zeros(env.stream, n * world).map_err(e2s)?;
        let h: Vec<f32> = data(rank).iter().map(|&x| x as f32).collect();
        env.stream
            .memcpy_htod(&h, &mut a)
            .map_err(|e| e.to_string())?;
        let b = NcclBuffer::<f32>::alloc_zeros(env.stream, n * world).map_err(e2s)?;
        // every rank's windows are filled before any peer can put into them:
        // registering is collective and comes after this
        env.stream.synchronize().map_err(|e| e.to_string())?;
        // SAFETY: every rank registers the same two windows, of the same
        // size, in the same order, and puts only within them.
        let src = unsafe { comm.window_register(a, true) }.map_err(e2s)?;
        // SAFETY: as above.
        let dst = unsafe { comm.window_register(b, true) }.map_err(e2s)?;
        if !src.is_mapped() || !dst.is_mapped() {
            // NCCL made no windows (no symmetric memory support between
            // these ranks, e.g. processes of one GPU under different host
            // ids): a put is refused before NCCL is called
            let r = comm.put_signal(
                &src,
                0..1,
                (rank + 1) % world,
                &dst,
                0,
                Signal::default(),
                env.stream,
            );
            return match r {
                Err(Error::InvalidArgument { .. }) => {
                    say(&format!(
                        "rank {rank}: one-sided puts NOT RUN: NCCL made no windows here (no symmetric memory support); the refusal was checked"
                    ));
                    Ok(())
                }
                other => Err(format!("a put on a window NCCL did not make: {other:?}")),
            };
        }

        // checked before NCCL
        let expect = |what: &str, r: Result<(), Error>, arg: &str| -> Result<(), String> {
            match r {
                Err(Error::InvalidArgument { arg: a, .. }) if a == arg => Ok(()),
                other => Err(format!(
                    "{what}: expected InvalidArgument {{ {arg} }}, got {other:?}"
                )),
            }
        };
        let sig = Signal::default();
        let s = env.stream;
        expect(
            "peer",
            comm.put_signal(&src, 0..n, world, &dst, 0, sig, s),
            "peer",
        )?;
        expect(
            "src range",
            comm.put_signal(&src, 0..n * world + 1, 0, &dst, 0, sig, s),
            "src_range",
        )?;
        expect(
            "empty",
            comm.put_signal(&src, 3..3, 0, &dst, 0, sig, s),
            "src_range",
        )?;
        expect(
            "dst bounds",
            comm.put_signal(&src, 0..n, 0, &dst, n * world - n + 1, sig, s),
            "dst_offset",
        )?;
        expect("no waits", comm.wait_signal(&[], s), "waits")?;
        let zero = SignalWait {
            peer: 0,
            count: 0,
            signal: sig,
        };
        expect("zero count", comm.wait_signal(&[zero], s), "waits.count")?;
        expect("signal peer", comm.signal(world, sig, s), "peer")?;
        if runtime < nccl::Version::new(2, 31, 2) {
            let other = Signal { index: 1, ctx: 0 };
            expect("signal index", comm.signal(0, other, s), "signal.index")?;
        }
        if world == 1 {
            comm.deregister(dst).map_err(e2s)?;
            comm.deregister(src).map_err(e2s)?;
            return Ok(());
        }

        // a ring: my chunk `rank` into the next rank's window, at `rank`
        let (next, prev) = ((rank + 1) % world, (rank + world - 1) % world);
        let mine = rank * n..(rank + 1) * n;
        comm.put_signal(&src, mine.clone(), next, &dst, rank * n, sig, s)
            .map_err(e2s)?;
        let from_prev = SignalWait {
            peer: prev,
            count: 1,
            signal: sig,
        };
        comm.wait_signal(&[from_prev], s).map_err(e2s)?;
        let got = s.clone_dtoh(dst.get()).map_err(|e| e.to_string())?;
        s.synchronize().map_err(|e| e.to_string())?;
        let want = &data(prev)[prev * n..(prev + 1) * n];
        close(&got[prev * n..(prev + 1) * n], want, false)
            .map_err(|e| format!("ring put from rank {prev}: {e}"))?;
        // no rank puts again before every rank has read this round
        let barrier = || -> Result<(), String> {
            comm.all_reduce_in_place(&mut env.zeros::<f32>(1), ReduceOp::Sum, s)
                .map_err(e2s)?;
            s.synchronize().map_err(|e| e.to_string())
        };
        barrier()?;

        // grouped: chunk `p` of my data to every other peer p, at `rank`;
        // then wait for one signal of each
        nccl::group(|g| {
            for p in (0..world).filter(|&p| p != rank) {
                comm.put_signal(&src, p * n..(p + 1) * n, p, &dst, rank * n, sig, g.on(s))?;
            }
            Ok::<_, Error>(())
        })
        .map_err(e2s)?;
        let waits: Vec<SignalWait> = (0..world)
            .filter(|&p| p != rank)
            .map(|p| SignalWait {
                peer: p,
                count: 1,
                signal: sig,
            })
            .collect();
        comm.wait_signal(&waits, s).map_err(e2s)?;
        let got = s.clone_dtoh(dst.get()).map_err(|e| e.to_string())?;
        s.synchronize().map_err(|e| e.to_string())?;
        for p in (0..world).filter(|&p| p != rank) {
            close(
                &got[p * n..(p + 1) * n],
                &data(p)[rank * n..(rank + 1) * n],
                false,
            )
            .map_err(|e| format!("grouped put from rank {p}: {e}"))?;
        }

        // a barrier of bare signals: every rank signals every other
        nccl::group(|g| {
            for p in (0..world).filter(|&p| p != rank) {
                comm.signal(p, sig, g.on(s))?;
            }
            Ok::<_, Error>(())
        })
        .map_err(e2s)?;
        comm.wait_signal(&waits, s).map_err(e2s)?;
        s.synchronize().map_err(|e| e.to_string())?;

        comm.deregister(dst).map_err(e2s)?;
        comm.deregister(src).map_err(e2s)?;
        Ok(())
    })();
    rep.check(
        "one-sided: argument checks, a ring of puts, grouped puts, a signal barrier",
        r,
    );
}

#[cfg(nccl_fn = "ncclAllReduceConfig")]
fn configured_collectives(env: &Env, rep: &mut Report) {
    use nccl::CollConfig;
    let comm = env.comm;
    let (rank, world) = (comm.rank(), comm.world_size());
    let n = 96 * world;
    let ins: Vec<Vec<f64>> = (0..world).map(|r| input::<f32>(41, r, n)).collect();
    let sum: Vec<f64> = (0..n).map(|i| ins.iter().map(|v| v[i]).sum()).collect();
    let send = env.up::<f32>(&ins[rank]);
    let cfg = CollConfig::new().max_ctas(2).force_alg_selection(false);
    let on = comm.configured(&cfg);

    // checked before NCCL, whatever the runtime
    let r = match on.all_reduce(
        &send,
        &mut env.zeros::<f32>(n - 1),
        ReduceOp::Sum,
        env.stream,
    ) {
        Err(Error::InvalidArgument {
            op: "all_reduce",
            arg: "recv.len()",
            ..
        }) => Ok(()),
        other => Err(format!("{other:?}")),
    };
    rep.check("configured all_reduce: length checked", r);
    let bad = CollConfig::new().min_ctas(0);
    let r = match comm.configured(&bad).all_reduce(
        &send,
        &mut env.zeros::<f32>(n),
        ReduceOp::Sum,
        env.stream,
    ) {
        Err(Error::InvalidArgument {
            op: "CollConfig",
            arg: "min_ctas",
            ..
        }) => Ok(()),
        other => Err(format!("{other:?}")),
    };
    rep.check("configured all_reduce: config checked", r);

    let runtime = nccl::version().unwrap();
    if nccl::require_api("ncclAllReduceConfig").is_err() {
        let r = match on.all_reduce(&send, &mut env.zeros::<f32>(n), ReduceOp::Sum, env.stream) {
            Err(Error::Unsupported {
                api: "ncclAllReduceConfig",
                since,
                ..
            }) if since == nccl::Version::new(2, 31, 2) => Ok(()),
            other => Err(format!("{other:?}")),
        };
        rep.check("configured all_reduce: Unsupported before 2.31.2", r);
        // the in-place forms name their own NCCL function
        let r = (|| -> Result<(), String> {
            let mut buf = env.up::<f32>(&ins[rank]);
            for (api, got) in [
                (
                    "ncclBroadcastConfig",
                    on.broadcast_in_place(&mut buf, 0, env.stream),
                ),
                (
                    "ncclReduceConfig",
                    on.reduce_in_place(&mut buf, ReduceOp::Sum, 0, env.stream),
                ),
                (
                    "ncclAllGatherConfig",
                    on.all_gather_in_place(&mut buf, env.stream),
                ),
                (
                    "ncclReduceScatterConfig",
                    on.reduce_scatter_in_place(&mut buf, ReduceOp::Sum, env.stream),
                ),
            ] {
                match got {
                    Err(Error::Unsupported {
                        api: a,
                        since,
                        runtime: r,
                    }) if a == api && since == nccl::Version::new(2, 31, 2) && r == runtime => {}
                    other => return Err(format!("{api}: {other:?}")),
                }
            }
            Ok(())
        })();
        rep.check(
            "configured in-place collectives: Unsupported before 2.31.2",
            r,
        );
        if rank == 0 {
            say(&format!(
                "configured collectives NOT RUN on libnccl {runtime} (NCCL 2.31.2+): \
                 only their argument checks and Unsupported were checked"
            ));
        }
        return;
    }
    let r = (|| -> Result<(), String> {
        let mut recv = env.zeros::<f32>(n);
        on.all_reduce(&send, &mut recv, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        close(&env.down(&recv), &sum, false)
    })();
    rep.check("configured all_reduce", r);
    let r = (|| -> Result<(), String> {
        let mut gathered = env.zeros::<f32>(n * world);
        let mut buf = env.up::<f32>(&ins[rank]);
        nccl::group(|g| {
            on.all_gather(&send, &mut gathered, g.on(env.stream))?;
            on.all_reduce_in_place(&mut buf, ReduceOp::Sum, g.on(env.stream))
        })
        .map_err(e2s)?;
        let want: Vec<f64> = ins.iter().flatten().copied().collect();
        close(&env.down(&gathered), &want, false)?;
        close(&env.down(&buf), &sum, false)
    })();
    rep.check(
        "configured all_gather and all_reduce_in_place in a group",
        r,
    );
    // one cgaClusterSize for the collectives of a group (NCCL 2.31.2+'s
    // header: otherwise undefined behavior): a second all_reduce with
    // another size, or a plain one after an explicit size, is refused
    // before NCCL; the first still runs at the group's end; the same size
    // twice is taken
    let r = (|| -> Result<(), String> {
        let one = CollConfig::new().cga_cluster_size(1);
        let two = CollConfig::new().cga_cluster_size(2);
        let (mut a, mut b) = (env.zeros::<f32>(n), env.zeros::<f32>(n));
        let mixed = nccl::group(|g| {
            comm.configured(&one)
                .all_reduce(&send, &mut a, ReduceOp::Sum, g.on(env.stream))?;
            comm.configured(&two)
                .all_reduce(&send, &mut b, ReduceOp::Sum, g.on(env.stream))
        });
        match mixed {
            Err(Error::InvalidArgument {
                op: "all_reduce",
                arg: "cga_cluster_size",
                ..
            }) => {}
            other => return Err(format!("sizes 1 then 2: {other:?}")),
        }
        close(&env.down(&a), &sum, false).map_err(|e| format!("the first call: {e}"))?;
        let (mut a, mut b) = (env.zeros::<f32>(n), env.zeros::<f32>(n));
        let plain = nccl::group(|g| {
            comm.configured(&two)
                .all_reduce(&send, &mut a, ReduceOp::Sum, g.on(env.stream))?;
            comm.all_reduce(&send, &mut b, ReduceOp::Sum, g.on(env.stream))
        });
        match plain {
            Err(Error::InvalidArgument {
                arg: "cga_cluster_size",
                ..
            }) => {}
            other => return Err(format!("size 2 then unset: {other:?}")),
        }
        close(&env.down(&a), &sum, false).map_err(|e| format!("size 2 then unset: {e}"))?;
        let (mut a, mut b) = (env.zeros::<f32>(n), env.zeros::<f32>(n));
        nccl::group(|g| {
            comm.configured(&two)
                .all_reduce(&send, &mut a, ReduceOp::Sum, g.on(env.stream))?;
            comm.configured(&two)
                .all_reduce(&send, &mut b, ReduceOp::Sum, g.on(env.stream))
        })
        .map_err(e2s)?;
        close(&env.down(&a), &sum, false)?;
        close(&env.down(&b), &sum, false)
    })();
    rep.check(
        "configured all_reduces in a group: one cga_cluster_size, mixed sizes refused",
        r,
    );
    let r = (|| -> Result<(), String> {
        let ring = CollConfig::new()
            .alg_selection("ring")
            .force_alg_selection(false)
            .user_profiler_tag(7);
        let mut out = env.zeros::<f32>(n);
        comm.configured(&ring)
            .broadcast(&send, &mut out, world - 1, env.stream)
            .map_err(e2s)?;
        close(&env.down(&out), &ins[world - 1], false)
    })();
    rep.check("configured broadcast with an algorithm selection", r);
    // the in-place forms: broadcast and reduce from the last rank, all_gather
    // of each rank's chunk, reduce_scatter leaving each rank its chunk
    let r = (|| -> Result<(), String> {
        let last = world - 1;
        let mut b = env.up::<f32>(&ins[rank]);
        on.broadcast_in_place(&mut b, last, env.stream)
            .map_err(e2s)?;
        close(&env.down(&b), &ins[last], false).map_err(|e| format!("broadcast: {e}"))?;
        let mut red = env.up::<f32>(&ins[rank]);
        on.reduce_in_place(&mut red, ReduceOp::Sum, last, env.stream)
            .map_err(e2s)?;
        if rank == last {
            close(&env.down(&red), &sum, false).map_err(|e| format!("reduce: {e}"))?;
        }
        let chunk = n / world;
        // only this rank's chunk set: the rest must come from the others
        let mut host = vec![0f64; n];
        host[rank * chunk..(rank + 1) * chunk].copy_from_slice(&ins[rank][..chunk]);
        let mut g = env.up::<f32>(&host);
        on.all_gather_in_place(&mut g, env.stream).map_err(e2s)?;
        let want: Vec<f64> = (0..world).flat_map(|r| ins[r][..chunk].to_vec()).collect();
        close(&env.down(&g), &want, false).map_err(|e| format!("all_gather: {e}"))?;
        let mut rs = env.up::<f32>(&ins[rank]);
        on.reduce_scatter_in_place(&mut rs, ReduceOp::Sum, env.stream)
            .map_err(e2s)?;
        let got = env.down(&rs);
        close(
            &got[rank * chunk..(rank + 1) * chunk],
            &sum[rank * chunk..(rank + 1) * chunk],
            false,
        )
        .map_err(|e| format!("reduce_scatter: {e}"))
    })();
    rep.check(
        "configured broadcast, reduce, all_gather and reduce_scatter in place",
        r,
    );
}

fn world_one_extras(ctx: &Arc<CudaContext>, rep: &mut Report) {
    fn cu(e: cudarc::driver::DriverError) -> String {
        e.to_string()
    }
    // a buffer on another GPU than the communicator's is refused before
    // NCCL sees it (NCCL does not check pointers by default)
    if nccl_rs_tests::gpu_count().is_ok_and(|n| n >= 2) {
        let r = (|| -> Result<(), String> {
            let comm = Comm::init_rank(ctx, 1, &UniqueId::new().map_err(e2s)?, 0).map_err(e2s)?;
            let other = CudaContext::new(1).map_err(cu)?.new_stream().map_err(cu)?;
            let far = other.clone_htod(&[1.0f32; 8]).map_err(cu)?;
            let s = ctx.new_stream().map_err(cu)?;
            let mut near = s.alloc_zeros::<f32>(8).map_err(cu)?;
            match comm.all_reduce(&far, &mut near, ReduceOp::Sum, &s) {
                Err(Error::InvalidArgument { arg: "buffer", .. }) => {}
                other => return Err(format!("a buffer of GPU 1: {other:?}")),
            }
            let mut far = far;
            match comm.all_reduce_in_place(&mut far, ReduceOp::Sum, &s) {
                Err(Error::InvalidArgument { arg: "buffer", .. }) => {}
                other => return Err(format!("in place on GPU 1: {other:?}")),
            }
            comm.finalize().map_err(e2s)
        })();
        rep.check("buffers on another GPU are refused", r);
    } else {
        say("rank 0: NOT RUN buffers on another GPU are refused: one GPU here");
    }

    let r = (|| -> Result<(), String> {
        let comms = Comm::init_all(std::slice::from_ref(ctx)).map_err(e2s)?;
        let s = ctx.new_stream().map_err(|e| e.to_string())?;
        let a = s.clone_htod(&[1.0f64, 2.0]).map_err(|e| e.to_string())?;
        let mut b = s.alloc_zeros::<f64>(2).map_err(|e| e.to_string())?;
        comms[0]
            .all_reduce(&a, &mut b, ReduceOp::Max, &s)
            .map_err(e2s)?;
        let out = s.clone_dtoh(&b).map_err(|e| e.to_string())?;
        s.synchronize().map_err(|e| e.to_string())?;
        if out != [1.0, 2.0] {
            return Err(format!("{out:?}"));
        }
        for c in comms {
            c.finalize().map_err(e2s)?;
        }
        Ok(())
    })();
    rep.check("init_all (one GPU)", r);
    // grouped, configured creation: blocking with a deadline, and
    // non-blocking; a connected communicator
    for blocking in [true, false] {
        let cfg = Config::new()
            .blocking(blocking)
            .timeout(Duration::from_secs(60));
        let r = (|| -> Result<(), String> {
            let comms = Comm::init_all_with(std::slice::from_ref(ctx), &cfg).map_err(e2s)?;
            let id = UniqueId::new().map_err(e2s)?;
            let more = Comm::init_ranks(&[(ctx.clone(), 0)], 1, &id, &cfg).map_err(e2s)?;
            for c in comms.iter().chain(&more) {
                c.connect(Duration::from_secs(30)).map_err(e2s)?;
                let s = ctx.new_stream().map_err(|e| e.to_string())?;
                let a = s.clone_htod(&[3.0f32, 4.0]).map_err(|e| e.to_string())?;
                let mut b = s.alloc_zeros::<f32>(2).map_err(|e| e.to_string())?;
                c.all_reduce(&a, &mut b, ReduceOp::Sum, &s).map_err(e2s)?;
                c.wait_or_abort(&s, Duration::from_secs(30)).map_err(e2s)?;
                let out = s.clone_dtoh(&b).map_err(|e| e.to_string())?;
                if out != [3.0, 4.0] {
                    return Err(format!("{out:?}"));
                }
            }
            // a rank twice is refused before NCCL is called
            match Comm::init_ranks(&[(ctx.clone(), 0), (ctx.clone(), 0)], 2, &id, &cfg) {
                Err(nccl::Error::InvalidArgument {
                    op: "init_ranks", ..
                }) => {}
                other => return Err(format!("a rank twice: {:?}", other.map(|v| v.len()))),
            }
            for c in comms.into_iter().chain(more) {
                c.finalize().map_err(e2s)?;
            }
            Ok(())
        })();
        rep.check(
            &format!("init_all_with, init_ranks and connect (blocking: {blocking})"),
            r,
        );
    }
    let r = (|| -> Result<(), String> {
        let id = UniqueId::new().map_err(e2s)?;
        let cfg = Config::new()
            .blocking(false)
            .comm_name("nonblocking-test")
            .timeout(Duration::from_secs(60));
        let comm = Comm::init_rank_with(ctx, 1, &id, 0, &cfg).map_err(e2s)?;
        if comm.is_blocking() {
            return Err("communicator says it is blocking".into());
        }
        comm.async_error().map_err(e2s)?;
        // calls answer ncclInProgress and settle; in a group, the group's end does
        let s = ctx.new_stream().map_err(|e| e.to_string())?;
        let a = s.clone_htod(&[3.0f32, -1.0]).map_err(|e| e.to_string())?;
        let mut b = s.alloc_zeros::<f32>(2).map_err(|e| e.to_string())?;
        let mut c = s.alloc_zeros::<f32>(2).map_err(|e| e.to_string())?;
        comm.all_reduce(&a, &mut b, ReduceOp::Sum, &s)
            .map_err(e2s)?;
        nccl::group(|g| {
            comm.send(&a, 0, g.on(&s))?;
            comm.recv(&mut c, 0, g.on(&s))
        })
        .map_err(e2s)?;
        comm.wait_or_abort(&s, Duration::from_secs(30))
            .map_err(e2s)?;
        let (bo, co) = (
            s.clone_dtoh(&b).map_err(|e| e.to_string())?,
            s.clone_dtoh(&c).map_err(|e| e.to_string())?,
        );
        s.synchronize().map_err(|e| e.to_string())?;
        if bo != [3.0, -1.0] || co != [3.0, -1.0] {
            return Err(format!("all_reduce {bo:?}, send/recv to self {co:?}"));
        }
        comm.finalize().map_err(e2s)
    })();
    rep.check(
        "non-blocking: init, all_reduce, a send/recv group, finalize",
        r,
    );
    // windows: refused inside a group (NCCL 2.28+ writes the handle at the
    // group's end); on a non-blocking communicator the handle is read only
    // once NCCL's thread is done, and the window works
    #[cfg(nccl_fn = "ncclCommWindowRegister")]
    {
        let r = (|| -> Result<(), String> {
            if nccl::require_api("ncclCommWindowRegister").is_err() {
                say("windows in a group / non-blocking NOT RUN: NCCL older than 2.27");
                return Ok(());
            }
            let s = ctx.new_stream().map_err(|e| e.to_string())?;
            for blocking in [true, false] {
                let cfg = Config::new()
                    .blocking(blocking)
                    .timeout(Duration::from_secs(60));
                let comm = Comm::init_rank_with(ctx, 1, &UniqueId::new().map_err(e2s)?, 0, &cfg)
                    .map_err(e2s)?;
                let a = NcclBuffer::<f32>::alloc_zeros(&s, 1024).map_err(e2s)?;
                let mut b = NcclBuffer::<f32>::alloc_zeros(&s, 1024).map_err(e2s)?;
                let x = NcclBuffer::<f32>::alloc_zeros(&s, 1024).map_err(e2s)?;
                let grouped = nccl::group(|_g| {
                    // SAFETY: one rank: no other rank to agree with.
                    unsafe { comm.window_register(x, true) }.map(|_| ())
                });
                if !matches!(
                    grouped,
                    Err(Error::InGroup {
                        op: "window_register"
                    })
                ) {
                    return Err(format!("window_register in a group: {grouped:?}"));
                }
                // SAFETY: one rank: no other rank to agree with.
                let w = unsafe { comm.window_register(a, true) }.map_err(e2s)?;
                comm.all_reduce(&w, &mut b, ReduceOp::Sum, &s)
                    .map_err(e2s)?;
                comm.wait_or_abort(&s, Duration::from_secs(30))
                    .map_err(e2s)?;
                comm.deregister(w).map_err(e2s)?;
                comm.finalize().map_err(e2s)?;
            }
            Ok(())
        })();
        rep.check(
            "windows: refused in a group; registered on a non-blocking communicator",
            r,
        );
    }
    // device communicators (2.28.3+): refused in a group; on a non-blocking
    // communicator NCCL writes it on its own thread, read once it is done
    let r = (|| -> Result<(), String> {
        if nccl::version().map_err(e2s)? < nccl::Version::new(2, 28, 3) {
            say("device communicators in a group / non-blocking NOT RUN: NCCL older than 2.28.3");
            return Ok(());
        }
        let reqs = nccl::DevCommRequirements::new().lsa_barrier_count(2);
        for blocking in [true, false] {
            let cfg = Config::new()
                .blocking(blocking)
                .timeout(Duration::from_secs(60));
            let comm = Comm::init_rank_with(ctx, 1, &UniqueId::new().map_err(e2s)?, 0, &cfg)
                .map_err(e2s)?;
            let grouped = nccl::group(|_g| comm.dev_comm(&reqs).map(|_| ()));
            if !matches!(grouped, Err(Error::InGroup { op: "dev_comm" })) {
                return Err(format!("dev_comm in a group: {grouped:?}"));
            }
            let runtime = nccl::version().map_err(e2s)?;
            let made = match comm.dev_comm(&reqs) {
                Ok(dc) => Some(dc),
                Err(
                    e @ Error::Nccl {
                        code: nccl::NcclCode::InvalidUsage,
                        ..
                    },
                ) if !single_rank_symmetric(runtime) => {
                    say(&format!(
                        "device communicator (blocking {blocking}) NOT AVAILABLE: refused by NCCL {runtime} for a communicator of one local rank (the refusal in a group was checked): {e}"
                    ));
                    None
                }
                Err(e) => return Err(e2s(e)),
            };
            if made.is_none() {
                drop(made);
                comm.finalize().map_err(e2s)?;
                continue;
            }
            let dc = made.ok_or("checked above")?;
            let got = (dc.rank(), dc.world_size(), dc.lsa_rank(), dc.lsa_size());
            if got != (0, 1, 0, 1) {
                return Err(format!("blocking {blocking}: NCCL wrote {got:?}"));
            }
            drop(dc);
            // the communicator still works after the device communicator
            let s = ctx.new_stream().map_err(|e| e.to_string())?;
            let a = s.clone_htod(&[2.0f32]).map_err(|e| e.to_string())?;
            let mut b = s.alloc_zeros::<f32>(1).map_err(|e| e.to_string())?;
            comm.all_reduce(&a, &mut b, ReduceOp::Sum, &s)
                .map_err(e2s)?;
            comm.wait_or_abort(&s, Duration::from_secs(30))
                .map_err(e2s)?;
            comm.finalize().map_err(e2s)?;
        }
        Ok(())
    })();
    rep.check(
        "device communicators: refused in a group; made on a non-blocking communicator",
        r,
    );
    // a blocking init with a deadline: rank 1 of 2 never comes
    let r = (|| -> Result<(), String> {
        let cfg = Config::new().timeout(Duration::from_secs(2));
        let t = Instant::now();
        match Comm::init_rank_with(ctx, 2, &UniqueId::new().map_err(e2s)?, 0, &cfg) {
            Err(Error::Timeout { .. }) if t.elapsed() < Duration::from_secs(4) => Ok(()),
            other => Err(format!("{:?} after {:.1?}", other.map(|_| ()), t.elapsed())),
        }
    })();
    rep.check("blocking init honours its deadline (a missing rank)", r);
    let r = match Comm::init_rank(ctx, 2, &UniqueId::new().unwrap(), 2) {
        Err(Error::InvalidArgument {
            op: "init_rank",
            arg: "rank",
            ..
        }) => Ok(()),
        other => Err(format!("{other:?}")),
    };
    rep.check("init_rank with rank >= world", r);
}

fn spawn_ranks(world: usize, meeting: &[(&str, String)]) -> Result<Vec<Child>, String> {
    let id = UniqueId::new().map_err(e2s)?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    (0..world)
        .map(|rank| {
            let mut c = Command::new(&me);
            c.env("NCCL_RS_TEST_RANK", rank.to_string())
                .env("NCCL_RS_TEST_WORLD", world.to_string())
                .env("NCCL_RS_TEST_ID", id.to_string())
                .envs(meeting.iter().map(|(k, v)| (k, v)))
                // a value of its own in NCCL's parameter registry
                .env(
                    "NCCL_DEBUG_TIMESTAMP_FORMAT",
                    format!("[nccl-rs rank {rank}/{world}] "),
                );
            if !per_gpu() {
                // several ranks on GPU 0: each its own host id, loopback sockets
                c.env("NCCL_HOSTID", format!("nccl-rs-rank{rank}"))
                    .env("NCCL_SOCKET_IFNAME", "lo");
            }
            c.spawn().map_err(|e| format!("spawn rank {rank}: {e}"))
        })
        .collect()
}

/// `NCCL_RS_TEST_PER_GPU=1`: the process ranks run one per GPU (rank `r` on
/// GPU `r % count`), as on a machine of several GPUs, instead of all on GPU 0.
fn per_gpu() -> bool {
    std::env::var("NCCL_RS_TEST_PER_GPU").is_ok_and(|v| v == "1")
}

fn wait_all(mut kids: Vec<Child>, limit: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut codes = vec![None; kids.len()];
    while codes.iter().any(Option::is_none) {
        for (i, k) in kids.iter_mut().enumerate() {
            if codes[i].is_none() {
                if let Ok(Some(st)) = k.try_wait() {
                    codes[i] = Some(st);
                }
            }
        }
        if start.elapsed() > limit {
            for k in &mut kids {
                let _ = k.kill();
            }
            return Err(format!(
                "ranks still running after {limit:?}: killed ({codes:?})"
            ));
        }
        // the ranks have watchdogs of their own; this process only waits
        progress(&format!("waiting for {} rank processes", kids.len()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let bad: Vec<String> = codes
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.unwrap().success())
        .map(|(i, c)| format!("rank {i}: {}", c.unwrap()))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join(", "))
    }
}

fn main() -> ExitCode {
    nccl_rs_tests::log_to_stderr();
    if let Err(e) = host_conversions_ok() {
        println!("nccl_gpu: FAILED before any GPU work: host conversion {e}");
        return ExitCode::FAILURE;
    }
    // a rank started by the parent below
    if let Ok(rank) = std::env::var("NCCL_RS_TEST_RANK") {
        let rank: usize = rank.parse().unwrap();
        let world: usize = std::env::var("NCCL_RS_TEST_WORLD")
            .unwrap()
            .parse()
            .unwrap();
        let id: UniqueId = std::env::var("NCCL_RS_TEST_ID").unwrap().parse().unwrap();
        watchdog(Duration::from_secs(60));
        name_panics();
        let gpu = if per_gpu() {
            rank % nccl_rs_tests::gpu_count().unwrap()
        } else {
            0
        };
        let ctx = CudaContext::new(gpu).unwrap();
        ctx.bind_to_thread().unwrap();
        let mut rep = run_rank(&ctx, world, &id, rank);
        match std::env::var(host_side::STORE_VAR) {
            Ok(addr) => {
                if let Some(secret) = host_side::secret_from_env(&mut rep) {
                    host_side::rendezvous(&ctx, world, rank, &addr, secret, &mut rep);
                }
            }
            Err(_) => rep.check(
                "rendezvous",
                Err(format!("{} not set by the parent", host_side::STORE_VAR)),
            ),
        }
        say(&format!(
            "rank {rank}/{world}: {} passed ({} of them refused by NCCL as allowed), {} failed, {} not run (NCCL too old)",
            rep.passed,
            REFUSED.load(std::sync::atomic::Ordering::Relaxed),
            rep.failed.len(),
            TOO_OLD.load(std::sync::atomic::Ordering::Relaxed)
        ));
        return if rep.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    let Some(ctx) = nccl_rs_tests::gpu_or_skip("nccl_gpu suite", 0) else {
        println!("nccl_gpu: 0 passed, 0 failed (no GPU: see the line above)");
        return ExitCode::SUCCESS;
    };
    say(&format!(
        "nccl_gpu: {}",
        nccl::capabilities()
            .map(|c| c.to_string())
            .unwrap_or_else(|e| e.to_string())
    ));
    let mut total = Report {
        rank: 0,
        passed: 0,
        failed: Vec::new(),
    };

    watchdog(Duration::from_secs(60));
    name_panics();

    // (b) 2 and 4 ranks as processes on GPU 0 (or the worlds in
    // NCCL_RS_TEST_WORLDS), all started now so that they run while (a) does
    let worlds: Vec<usize> = std::env::var("NCCL_RS_TEST_WORLDS")
        .map(|v| v.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|_| vec![2, 4]);
    let t = Instant::now();
    // the store every world's ranks meet at (world 1 too, below)
    let meeting = host_side::Meeting::start();
    let meeting_env = meeting
        .as_ref()
        .map(|m| m.env().to_vec())
        .unwrap_or_default();
    let started: Vec<(usize, Result<Vec<Child>, String>)> = worlds
        .iter()
        .map(|&w| {
            let kids = match &meeting {
                Ok(_) => spawn_ranks(w, &meeting_env),
                Err(e) => Err(format!("no store to meet at: {e}")),
            };
            (w, kids)
        })
        .collect();

    // (a) world 1 in this process
    let t1 = Instant::now();
    let id = UniqueId::new().unwrap();
    let rep = run_rank(&ctx, 1, &id, 0);
    say(&format!(
        "world 1: {} passed ({} of them refused by NCCL as allowed), {} failed ({:.1?})",
        rep.passed,
        REFUSED.load(std::sync::atomic::Ordering::Relaxed),
        rep.failed.len(),
        t1.elapsed()
    ));
    total.passed += rep.passed;
    total.failed.extend(rep.failed);
    world_one_extras(&ctx, &mut total);
    api_surface(&ctx, &mut total);
    host_side::library_and_driver(&mut total);
    match &meeting {
        Ok(m) => host_side::rendezvous(&ctx, 1, 0, &m.addr(), m.secret(), &mut total),
        Err(e) => total.check("rendezvous", Err(format!("no store to meet at: {e}"))),
    }

    let mut met = vec![1];
    for (world, kids) in started {
        let r = kids.and_then(|kids| wait_all(kids, Duration::from_secs(300)));
        say(&format!(
            "world {world} ({}): {} ({:.1?} after they started)",
            if per_gpu() {
                "one process per GPU"
            } else {
                "processes on one GPU"
            },
            if r.is_ok() {
                "all ranks passed"
            } else {
                "FAILED"
            },
            t.elapsed()
        ));
        if r.is_ok() {
            met.push(world);
        }
        total.check(
            &format!("world {world}: every rank passes the whole suite"),
            r,
        );
    }
    if let Ok(m) = &meeting {
        m.tally(&met, &mut total);
    }

    // world 1's checks, then one check per further world (its ranks'
    // own failures are printed above, prefixed with their rank)
    println!(
        "nccl_gpu: {} passed, {} failed (world 1's checks and one per further world), \
         {} of world 1's not run (NCCL too old for them)",
        total.passed,
        total.failed.len(),
        TOO_OLD.load(std::sync::atomic::Ordering::Relaxed)
    );
    for f in &total.failed {
        println!("  FAILED {f}");
    }
    if total.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// World 1, in the parent process: the public API the suite above leaves
/// out. A communicator made with each `Config` setter that this build's
/// header and the libnccl in use have (the others say `NOT RUN` with both
/// versions) all-reduces correctly; raw handles round-trip through
/// nccl-sys; an abort requested by a watchdog stops the communicator;
/// `init_rank_scalable` and `device_count`.
fn api_surface(ctx: &Arc<CudaContext>, rep: &mut Report) {
    // a world-1 communicator made with `cfg` all-reduces [1, -2, 3]
    let works = |cfg: &Config| -> Result<(), String> {
        let comm =
            Comm::init_rank_with(ctx, 1, &UniqueId::new().map_err(e2s)?, 0, cfg).map_err(e2s)?;
        let s = ctx.new_stream().map_err(|e| e.to_string())?;
        let a = s
            .clone_htod(&[1.0f32, -2.0, 3.0])
            .map_err(|e| e.to_string())?;
        let mut b = s.alloc_zeros::<f32>(3).map_err(|e| e.to_string())?;
        comm.all_reduce(&a, &mut b, ReduceOp::Sum, &s)
            .map_err(e2s)?;
        let out = s.clone_dtoh(&b).map_err(|e| e.to_string())?;
        s.synchronize().map_err(|e| e.to_string())?;
        if out != [1.0, -2.0, 3.0] {
            return Err(format!("all_reduce gave {out:?}"));
        }
        comm.finalize().map_err(e2s)
    };
    // NCCL_CTA_POLICY_EFFICIENCY (2.27.3+; not a name in older headers)
    let policy = 1;
    // (setter, ncclConfig_t field, the config): values NCCL accepts on one GPU
    let setters: Vec<(&str, &'static str, Config)> = vec![
        (
            "cga_cluster_size",
            "cgaClusterSize",
            Config::new().cga_cluster_size(2),
        ),
        // with a maximum: NCCL 2.28.3 compares the minimum with an unset
        // maximum on more than one rank ("Invalid config min/max channels
        // attribute value 2/-2147483648", seen on an H200)
        (
            "min_ctas",
            "minCTAs",
            Config::new().min_ctas(2).max_ctas(32),
        ),
        ("max_ctas", "maxCTAs", Config::new().max_ctas(8)),
        ("net_name", "netName", Config::new().net_name("Socket")),
        ("split_share", "splitShare", Config::new().split_share(true)),
        (
            "traffic_class",
            "trafficClass",
            Config::new().traffic_class(0),
        ),
        (
            "collnet_enable",
            "collnetEnable",
            Config::new().collnet_enable(false),
        ),
        ("cta_policy", "CTAPolicy", Config::new().cta_policy(policy)),
        (
            "shrink_share",
            "shrinkShare",
            Config::new().shrink_share(true),
        ),
        ("nvls_ctas", "nvlsCTAs", Config::new().nvls_ctas(4)),
        (
            "n_channels_per_net_peer",
            "nChannelsPerNetPeer",
            Config::new().n_channels_per_net_peer(2),
        ),
        (
            "nvlink_centric_sched",
            "nvlinkCentricSched",
            Config::new().nvlink_centric_sched(false),
        ),
        (
            "graph_usage_mode",
            "graphUsageMode",
            Config::new().graph_usage_mode(2),
        ),
        ("num_rma_ctx", "numRmaCtx", Config::new().num_rma_ctx(1)),
        (
            "max_p2p_peers",
            "maxP2pPeers",
            Config::new().max_p2p_peers(1),
        ),
        (
            "graph_stream_ordering",
            "graphStreamOrdering",
            Config::new().graph_stream_ordering(0),
        ),
        (
            "launch_order_implicit",
            "launchOrderImplicit",
            Config::new().launch_order_implicit(0),
        ),
        ("num_rma_sig", "numRmaSig", Config::new().num_rma_sig(1)),
        (
            "rma_eager_init",
            "rmaEagerInit",
            Config::new().rma_eager_init(0),
        ),
        // ncclHostCftDisable
        (
            "host_cft_mode",
            "hostCftMode",
            Config::new().host_cft_mode(2),
        ),
        // ncclNvlsHostModeDisable: no NVLS on one GPU anyway
        (
            "nvls_host_mode",
            "nvlsHostMode",
            Config::new().nvls_host_mode(i32::MAX),
        ),
    ];
    for (setter, field, cfg) in setters {
        let what = format!("Config::{setter}: a communicator made with it all-reduces");
        match nccl::require_api(field) {
            Ok(()) => rep.check(&what, works(&cfg)),
            Err(Error::Unsupported { since, runtime, .. }) => say(&format!(
                "NOT RUN: {what}: needs NCCL {since}+ ({field}), have libnccl {runtime} and nccl.h {}",
                nccl::HEADER_VERSION
            )),
            Err(e) => rep.check(&what, Err(e2s(e))),
        }
    }

    // raw handles: nccl-sys calls on them, and back
    let r = (|| -> Result<(), String> {
        let id = UniqueId::new().map_err(e2s)?;
        if UniqueId::from_raw(*id.as_raw()) != id {
            return Err("UniqueId::from_raw(*as_raw()) is another id".into());
        }
        let comm = Comm::init_rank(ctx, 1, &id, 0).map_err(e2s)?;
        let mut count = 0;
        // SAFETY: a valid communicator (owned by `comm`, alive), a valid
        // out-pointer; ncclCommCount only reads it.
        let r = unsafe { nccl::sys::ncclCommCount(comm.as_raw(), &mut count) };
        if r != nccl::sys::ncclResult_t::ncclSuccess || count != 1 {
            return Err(format!("ncclCommCount on as_raw(): {r:?}, {count}"));
        }
        // NCCL's last error: its warning about a null out-pointer, which it
        // refuses before touching the communicator
        // SAFETY: a valid communicator; the null out-pointer is checked by
        // NCCL (PtrCheck) before any write.
        let r = unsafe { nccl::sys::ncclCommUserRank(comm.as_raw(), std::ptr::null_mut()) };
        let text = comm.last_error();
        if r != nccl::sys::ncclResult_t::ncclInvalidArgument || !text.contains("NULL") {
            return Err(format!(
                "ncclCommUserRank(comm, NULL): {r:?}, last_error {text:?}"
            ));
        }
        let op = comm.pre_mul_sum(2.0f32).map_err(e2s)?;
        if op.as_raw().0 < nccl::sys::ncclRedOp_t::ncclNumOps.0 {
            return Err(format!(
                "PreMulSum::as_raw() is a built-in op: {:?}",
                op.as_raw()
            ));
        }
        drop(op);
        let s = ctx.new_stream().map_err(|e| e.to_string())?;
        let buf = NcclBuffer::<f32>::alloc_zeros(&s, 16).map_err(e2s)?;
        if buf.as_raw() == 0 {
            return Err("NcclBuffer::as_raw() is null".into());
        }
        drop(buf);
        let raw = comm.into_raw();
        // SAFETY: `raw` is the valid communicator into_raw gave up, on the
        // GPU of `ctx`, owned by nothing else now.
        let back = unsafe { Comm::from_raw(raw, ctx.clone()) }.map_err(e2s)?;
        if (back.rank(), back.world_size()) != (0, 1) {
            return Err(format!(
                "from_raw: rank {} of {}",
                back.rank(),
                back.world_size()
            ));
        }
        let a = s.clone_htod(&[5.0f64]).map_err(|e| e.to_string())?;
        let mut b = s.alloc_zeros::<f64>(1).map_err(|e| e.to_string())?;
        back.all_reduce(&a, &mut b, ReduceOp::Sum, &s)
            .map_err(e2s)?;
        let out = s.clone_dtoh(&b).map_err(|e| e.to_string())?;
        s.synchronize().map_err(|e| e.to_string())?;
        if out != [5.0] {
            return Err(format!("all_reduce after from_raw: {out:?}"));
        }
        back.finalize().map_err(e2s)
    })();
    rep.check(
        "raw handles: as_raw, into_raw → from_raw, UniqueId, NcclBuffer, PreMulSum, last_error",
        r,
    );

    // a watchdog that is disarmed does nothing; one that fires aborts
    let r = (|| -> Result<(), String> {
        let comm = Comm::init_rank(ctx, 1, &UniqueId::new().map_err(e2s)?, 0).map_err(e2s)?;
        let h = comm.abort_handle();
        h.abort_after(Duration::from_secs(3600))
            .map_err(e2s)?
            .disarm();
        std::thread::sleep(Duration::from_millis(50));
        if h.is_requested() || comm.is_aborted() {
            return Err("a disarmed watchdog requested the abort".into());
        }
        let s = ctx.new_stream().map_err(|e| e.to_string())?;
        let a = s.clone_htod(&[1.0f32]).map_err(|e| e.to_string())?;
        let mut b = s.alloc_zeros::<f32>(1).map_err(|e| e.to_string())?;
        comm.all_reduce(&a, &mut b, ReduceOp::Sum, &s)
            .map_err(e2s)?;
        s.synchronize().map_err(|e| e.to_string())?;
        let fired = h.abort_after(Duration::from_millis(20)).map_err(e2s)?;
        let t = Instant::now();
        while !h.is_requested() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !h.is_requested() {
            return Err("the watchdog did not request the abort within 5 s".into());
        }
        match comm.all_reduce(&a, &mut b, ReduceOp::Sum, &s) {
            Err(Error::Aborted { .. }) if comm.is_aborted() => {}
            other => {
                return Err(format!(
                    "after the watchdog fired: {other:?}, is_aborted {}",
                    comm.is_aborted()
                ));
            }
        }
        drop(fired);
        Ok(())
    })();
    rep.check(
        "AbortHandle::abort_after: disarmed does nothing, fired aborts (is_aborted)",
        r,
    );

    #[cfg(nccl_fn = "ncclCommInitRankScalable")]
    {
        let what = "init_rank_scalable (one id, world 1) all-reduces";
        match nccl::require_api("ncclCommInitRankScalable") {
            Ok(()) => {
                let r = (|| -> Result<(), String> {
                    let ids = [UniqueId::new().map_err(e2s)?];
                    let comm =
                        Comm::init_rank_scalable(ctx, 1, &ids, 0, &Config::new()).map_err(e2s)?;
                    let s = ctx.new_stream().map_err(|e| e.to_string())?;
                    let a = s.clone_htod(&[7i32]).map_err(|e| e.to_string())?;
                    let mut b = s.alloc_zeros::<i32>(1).map_err(|e| e.to_string())?;
                    comm.all_reduce(&a, &mut b, ReduceOp::Max, &s)
                        .map_err(e2s)?;
                    let out = s.clone_dtoh(&b).map_err(|e| e.to_string())?;
                    s.synchronize().map_err(|e| e.to_string())?;
                    if out != [7] {
                        return Err(format!("{out:?}"));
                    }
                    comm.finalize().map_err(e2s)
                })();
                rep.check(what, r);
            }
            Err(e) => say(&format!("NOT RUN: {what}: {e}")),
        }
    }

    let r = match (nccl::device_count(), nccl_rs_tests::gpu_count()) {
        (Ok(n), Ok(m)) if n == m => Ok(()),
        other => Err(format!("nccl::device_count vs the CUDA driver: {other:?}")),
    };
    rep.check("device_count is the CUDA driver's count", r);
}
