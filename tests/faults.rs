//! Many processes and many failures, on a GPU: ranks are processes sharing
//! GPU 0 (each its own NCCL_HOSTID, NCCL_SOCKET_IFNAME=lo), started by this
//! program with torchrun's variables as `cargo xtask launch --one-gpu` does,
//! and they bootstrap with `nccl::bootstrap::init_from_launcher`:
//!
//! - 2 and 4 ranks bootstrap and all-reduce correctly;
//! - `kill -9` of one rank in a loop of collectives: every survivor returns a
//!   typed error within 2× its timeout, none hangs, exit codes say what happened;
//! - a rank that never joins: the others fail within the deadline;
//! - abort from another thread unblocks a wait on a missing peer;
//! - 1 000 init→finalize cycles (world 1) without growth of GPU memory or
//!   open file descriptors;
//! - surviving a lost rank: 3 and 4 ranks, `kill -9` of one inside a loop of
//!   all_reduce; every survivor detects it (typed error within 2× its
//!   timeout), revokes (NCCL 2.28.7+) or shrinks with `ShrinkMode::Abort`,
//!   shrinks to the survivors and runs 100 all_reduces with correct values;
//!   the time from the kill to the first correct result is printed.
//!
//! `FAULTS_ONLY=survive` (a comma-separated list of `allreduce`, `kill`,
//! `never-join`, `abort-thread`, `cycles`, `survive`) runs only those checks.
//!
//! A custom harness: closes with `N passed, M failed`.

use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cudarc::driver::CudaContext;
use nccl::bootstrap::LaunchOptions;
use nccl::{Comm, CommState, ElasticApi, Error, ReduceOp, ShrinkMode, UniqueId};
use nccl_rs_tests::say;

/// Exit codes of a rank process.
const OK: u8 = 0;
const TYPED_ERROR: u8 = 10;
const WRONG_RESULT: u8 = 12;
const OTHER: u8 = 13;
const ABORTED_IN_TIME: u8 = 14;

fn code(e: &Error) -> u8 {
    match e {
        Error::Nccl { .. }
        | Error::Timeout { .. }
        | Error::Stalled { .. }
        | Error::Aborted { .. }
        | Error::RanksMissing { .. }
        | Error::RootUnreachable { .. }
        | Error::Rendezvous { .. } => TYPED_ERROR,
        _ => OTHER,
    }
}

/// One rank: what it does depends on `FAULTS_SCENARIO`.
fn rank_main(scenario: &str) -> u8 {
    let timeout = Duration::from_secs(5);
    let opts = LaunchOptions {
        timeout: Duration::from_secs(20),
        ..LaunchOptions::default()
    };
    let rank: usize = std::env::var("RANK").unwrap().parse().unwrap();
    if scenario == "never-join" && rank == 2 {
        return OK; // this rank never shows up
    }
    let t0 = Instant::now();
    let opts = if scenario == "never-join" {
        LaunchOptions { timeout, ..opts }
    } else {
        opts
    };
    let (comm, info) = match nccl::bootstrap::init_from_launcher(&opts) {
        Ok(x) => x,
        Err(e) => {
            say(&format!(
                "rank {rank}: init failed after {:.1?}: {e}",
                t0.elapsed()
            ));
            return code(&e);
        }
    };
    if scenario == "survive" {
        return match survive(comm, &info) {
            Ok(c) => c,
            Err(e) => {
                say(&format!("rank {rank}: survive: {e}"));
                code(&e)
            }
        };
    }
    let ctx = comm.context().clone();
    let stream = ctx.new_stream().unwrap();
    let n = 1 << 16;
    let send = stream.clone_htod(&vec![(info.rank + 1) as f32; n]).unwrap();
    let mut recv = stream.alloc_zeros::<f32>(n).unwrap();
    let want = (info.world * (info.world + 1) / 2) as f32;
    let r: Result<u8, Error> = (|| match scenario {
        "allreduce" => {
            comm.all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)?;
            comm.wait(&stream, timeout)?;
            let out = stream.clone_dtoh(&recv)?;
            if out.iter().any(|&x| x != want) {
                say(&format!("rank {rank}: wrong result {} != {want}", out[0]));
                return Ok(WRONG_RESULT);
            }
            say(&format!(
                "rank {rank} of {} ({}, GPU {}): all_reduce correct ({want} everywhere)",
                info.world,
                info.source,
                comm.device()
            ));
            Ok(OK)
        }
        "kill" => {
            // collectives until a peer dies; the parent kills one rank
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) {
                let t = Instant::now();
                if let Err(e) = comm
                    .all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)
                    .and_then(|()| comm.wait(&stream, timeout))
                {
                    say(&format!(
                        "rank {rank}: typed error {:.1?} after the last good step: {e}",
                        t.elapsed()
                    ));
                    return Err(e);
                }
            }
            Ok(OTHER) // nobody died?
        }
        "abort-thread" => {
            if rank == 1 {
                // never takes part; stays alive until rank 0 gave up
                std::thread::sleep(Duration::from_secs(8));
                return Ok(OK);
            }
            let h = comm.abort_handle();
            let killer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                h.abort();
            });
            let t = Instant::now();
            // the enqueue itself may wait (non-blocking: in our polling loop)
            let r = comm
                .all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)
                .and_then(|()| comm.wait(&stream, Duration::from_secs(60)));
            killer.join().unwrap();
            match r {
                Err(Error::Aborted { op }) if t.elapsed() < Duration::from_secs(10) => {
                    say(&format!(
                        "rank 0: {op} was aborted from another thread after {:.1?}",
                        t.elapsed()
                    ));
                    Ok(ABORTED_IN_TIME)
                }
                other => {
                    say(&format!(
                        "rank 0: expected Aborted within 10 s, got {other:?} after {:.1?}",
                        t.elapsed()
                    ));
                    Ok(OTHER)
                }
            }
        }
        other => panic!("unknown scenario {other}"),
    })();
    match r {
        Ok(c) => {
            if c == OK {
                if let Err(e) = comm.finalize() {
                    say(&format!("rank {rank}: finalize: {e}"));
                    return code(&e);
                }
            }
            c
        }
        Err(e) => code(&e),
    }
}

/// Now, as nanoseconds since the Unix epoch: a clock the rank processes and
/// this one share.
fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Records `what` (a file `what-rank{rank}` holding the time and a note) in
/// the folder `FAULTS_OUT` the parent reads.
fn mark(what: &str, rank: usize, note: &str) {
    if let Ok(dir) = std::env::var("FAULTS_OUT") {
        let path = std::path::Path::new(&dir).join(format!("{what}-rank{rank}"));
        let _ = std::fs::write(path, format!("{}\n{note}\n", unix_ns()));
    }
}

/// A rank of the survival scenario: all_reduce until a peer is lost (the
/// parent kills rank `FAULTS_VICTIM`), then recover as the README's
/// "Surviving a lost rank" does: revoke (or, with `FAULTS_HOW=abort` or
/// without NCCL 2.28.7, shrink with `ShrinkMode::Abort`), shrink to the
/// survivors, and 100 all_reduces that must be correct.
fn survive(comm: Comm, info: &nccl::bootstrap::LaunchInfo) -> Result<u8, Error> {
    let (rank, world) = (info.rank, info.world);
    let victim: usize = std::env::var("FAULTS_VICTIM").unwrap().parse().unwrap();
    let how = std::env::var("FAULTS_HOW").unwrap_or_default();
    let timeout = Duration::from_secs(5);
    let n = 1 << 16;
    let stream = comm.context().new_stream()?;
    let send = stream.clone_htod(&vec![(rank + 1) as f32; n])?;
    let mut recv = stream.alloc_zeros::<f32>(n)?;
    let want = (world * (world + 1) / 2) as f32;

    // 1. collectives until a peer is lost (the parent kills the victim once
    //    every rank has marked itself ready)
    let start = Instant::now();
    let mut step = 0usize;
    let err = loop {
        if start.elapsed() > Duration::from_secs(90) {
            say(&format!("rank {rank}: nobody died in 90 s"));
            return Ok(OTHER);
        }
        stream.memset_zeros(&mut recv)?;
        let t = Instant::now();
        if let Err(e) = comm
            .all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)
            .and_then(|()| comm.wait_recoverable(&stream, timeout))
        {
            mark("detect", rank, &e.to_string());
            say(&format!(
                "rank {rank}: typed error after {step} steps, {:.2?} into the step: {e}",
                t.elapsed()
            ));
            break e;
        }
        if step == 0 {
            if stream.clone_dtoh(&recv)?.iter().any(|&x| x != want) {
                say(&format!("rank {rank}: wrong result before the kill"));
                return Ok(WRONG_RESULT);
            }
            mark("ready", rank, "");
        }
        step += 1;
    };
    if rank == victim {
        say(&format!("rank {rank}: the victim is still alive: {err}"));
        return Ok(OTHER);
    }
    if comm.state() != CommState::Failed {
        say(&format!(
            "rank {rank}: state {} after the error",
            comm.state()
        ));
        return Ok(OTHER);
    }

    // 2. stop what is stuck, and leave the lost rank out
    let t = Instant::now();
    let revoked = if how == "abort" {
        false
    } else {
        match comm.revoke() {
            Ok(()) => true,
            Err(Error::Unsupported { .. }) => false,
            Err(e) => return Err(e),
        }
    };
    let t_revoke = t.elapsed();
    // what NCCL still reports before the shrink (its shrink refuses a parent
    // whose asynchronous state is an error): for the record
    say(&format!(
        "rank {rank}: asynchronous state before the shrink: {:?}",
        comm.async_error().map_err(|e| e.nccl_code())
    ));
    let mode = if revoked {
        ShrinkMode::Default
    } else {
        ShrinkMode::Abort
    };
    // the survivors' own rendezvous, used if NCCL refuses the shrink: the
    // job's (the new rank 0 listens on the first free port from
    // MASTER_PORT, which NCCL's own sockets may hold)
    let opts = LaunchOptions {
        timeout: Duration::from_secs(30),
        ..LaunchOptions::default()
    };
    let mut survivors = info.survivors_bootstrap(&[victim], 1, &opts)?;
    let (nccl::Shrunk { comm: small, ranks }, how_done) =
        comm.shrink_or_recreate(&[victim], mode, None, &mut *survivors)?;
    let t_shrink = t.elapsed() - t_revoke;
    let expect_new = ranks.new_rank(rank);
    if Some(small.rank()) != expect_new || small.world_size() != world - 1 {
        say(&format!(
            "rank {rank}: shrunk to rank {} of {}, expected {expect_new:?} of {}",
            small.rank(),
            small.world_size(),
            world - 1
        ));
        return Ok(OTHER);
    }
    say(&format!(
        "rank {rank}: {} in {t_revoke:.2?}, {how_done:?} ({mode:?}) in {t_shrink:.2?}: rank {} of {} now (old ranks {:?})",
        if revoked { "revoked" } else { "no revoke" },
        small.rank(),
        small.world_size(),
        ranks.survivors()
    ));

    // 3. go on with the survivors, on a fresh stream (the old one may hold
    //    the aborted kernel)
    let stream = small.context().new_stream()?;
    let send = stream.clone_htod(&vec![(rank + 1) as f32; n])?;
    let mut recv = stream.alloc_zeros::<f32>(n)?;
    let want: usize = ranks.survivors().iter().map(|r| r + 1).sum();
    for i in 0..100 {
        stream.memset_zeros(&mut recv)?;
        small.all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)?;
        small.wait(&stream, timeout)?;
        let out = stream.clone_dtoh(&recv)?;
        if out.iter().any(|&x| x != want as f32) {
            say(&format!(
                "rank {rank}: all_reduce {i} on the shrunk communicator: {} != {want}",
                out[0]
            ));
            return Ok(WRONG_RESULT);
        }
        if i == 0 {
            mark("first-ok", rank, "");
        }
    }
    small.finalize()?;
    say(&format!(
        "rank {rank}: 100 all_reduces correct on the shrunk communicator ({want} everywhere)"
    ));
    Ok(OK)
}

fn spawn(scenario: &str, world: usize, ranks: &[usize], port: u16) -> Vec<(usize, Child)> {
    spawn_with(scenario, world, ranks, port, &[])
}

fn spawn_with(
    scenario: &str,
    world: usize,
    ranks: &[usize],
    port: u16,
    extra: &[(&str, String)],
) -> Vec<(usize, Child)> {
    let me = std::env::current_exe().unwrap();
    ranks
        .iter()
        .map(|&r| {
            let c = Command::new(&me)
                .envs(extra.iter().map(|(k, v)| (k, v)))
                .env("FAULTS_SCENARIO", scenario)
                .env("RANK", r.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_RANK", r.to_string())
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("NCCL_RS_SECRET", "faults-test-0123456789")
                .env("NCCL_HOSTID", format!("nccl-rs-rank{r}"))
                .env("NCCL_SOCKET_IFNAME", "lo")
                .spawn()
                .unwrap();
            (r, c)
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for every child up to `limit`; kills and reports the ones still running.
fn reap(mut kids: Vec<(usize, Child)>, limit: Duration) -> Vec<(usize, Option<i32>, Duration)> {
    let start = Instant::now();
    let mut out = Vec::new();
    while !kids.is_empty() {
        kids.retain_mut(|(r, c)| match c.try_wait() {
            Ok(Some(s)) => {
                out.push((*r, s.code(), start.elapsed()));
                false
            }
            _ => true,
        });
        if start.elapsed() > limit {
            for (r, c) in &mut kids {
                let _ = c.kill();
                let _ = c.wait();
                out.push((*r, None, start.elapsed()));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    out.sort_by_key(|x| x.0);
    out
}

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `n` init→finalize cycles of world-1 communicators, spread over `threads`
/// threads (NCCL's init of one rank takes a sizeable fraction of a second,
/// mostly waiting, so cycles overlap well); GPU free memory and open file
/// descriptors before and after.
fn cycles(ctx: &std::sync::Arc<CudaContext>, n: usize, threads: usize) -> Result<String, String> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let e = |e: Error| e.to_string();
    // one cycle first, so lazily created state is not counted as growth
    let t = Instant::now();
    Comm::init_rank(ctx, 1, &UniqueId::new().map_err(e)?, 0)
        .map_err(e)?
        .finalize()
        .map_err(e)?;
    say(&format!("first init→finalize cycle: {:.1?}", t.elapsed()));
    let (free0, _) = ctx.mem_get_info().map_err(|x| x.to_string())?;
    let fd0 = count_fds();
    let arcs0 = std::sync::Arc::strong_count(ctx);
    let heap0 = LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    let t = Instant::now();
    let done = AtomicUsize::new(0);
    let result = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                let done = &done;
                s.spawn(move || -> Result<(), String> {
                    ctx.bind_to_thread().map_err(|x| x.to_string())?;
                    for i in (k..n).step_by(threads) {
                        let comm = Comm::init_rank(ctx, 1, &UniqueId::new().map_err(e)?, 0)
                            .map_err(|x| format!("cycle {i}: {x}"))?;
                        // every way a communicator ends: finalize, abort,
                        // split (with and without a color) then finalize
                        let r = match i % 3 {
                            0 => comm.finalize(),
                            1 => comm.abort(),
                            _ => (|| {
                                if comm.split(None, 0, None)?.is_some() {
                                    return Err(Error::Aborted {
                                        op: "split(None) gave a child",
                                    });
                                }
                                let child =
                                    comm.split(Some(0), 0, None)?.ok_or(Error::Aborted {
                                        op: "split(Some(0)) gave none",
                                    })?;
                                child.finalize()?;
                                comm.finalize()
                            })(),
                        };
                        r.map_err(|x| format!("cycle {i}: {x}"))?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        let mut last = Instant::now();
        while !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() >= Duration::from_secs(15) {
                last = Instant::now();
                say(&format!(
                    "  {} of {n} cycles after {:.1?}",
                    done.load(Ordering::Relaxed),
                    t.elapsed()
                ));
            }
        }
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a cycle thread panicked".into()))
            })
            .collect::<Result<Vec<()>, String>>()
    });
    result?;
    let (free1, _) = ctx.mem_get_info().map_err(|x| x.to_string())?;
    let fd1 = count_fds();
    let arcs1 = std::sync::Arc::strong_count(ctx);
    let heap1 = LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    let grew = free0.saturating_sub(free1);
    let report = format!(
        "{n} init→finalize/abort/split cycles ({threads} threads) in {:.1?}: GPU free memory {free0} → {free1} bytes (−{grew}), open fds {fd0} → {fd1}, context Arc count {arcs0} → {arcs1}, live Rust heap {heap0} → {heap1} bytes",
        t.elapsed()
    );
    if grew > 64 << 20 || fd1 > fd0 + 4 || arcs1 != arcs0 || heap1 > heap0 + (1 << 20) {
        return Err(format!("growth: {report}"));
    }
    Ok(report)
}

/// Live bytes of the Rust heap, to see leaks of what `Comm` owns (a leaked
/// `Arc` per cycle would show here and in the context's strong count).
static LIVE_BYTES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(l.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: as GlobalAlloc::alloc's caller promises.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        LIVE_BYTES.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        // SAFETY: as GlobalAlloc::dealloc's caller promises.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The parent's side of the survival scenario: starts `world` ranks, kills
/// `victim` with SIGKILL once every rank has run a correct all_reduce, and
/// checks that every survivor detected it within 2× its timeout (5 s) and
/// then ran 100 correct all_reduces on the shrunk communicator; reports the
/// time from the kill to each survivor's first correct result.
fn survive_check(world: usize, victim: usize, how: &str) -> Result<String, String> {
    let dir = std::env::temp_dir().join(format!(
        "nccl-rs-faults-{}-{world}-{how}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let read = |what: &str, r: usize| -> Option<u128> {
        std::fs::read_to_string(dir.join(format!("{what}-rank{r}")))
            .ok()?
            .lines()
            .next()?
            .parse()
            .ok()
    };
    let extra = [
        ("FAULTS_VICTIM", victim.to_string()),
        ("FAULTS_HOW", how.to_string()),
        ("FAULTS_OUT", dir.display().to_string()),
    ];
    let ranks: Vec<usize> = (0..world).collect();
    let mut kids = spawn_with("survive", world, &ranks, free_port(), &extra);
    let t = Instant::now();
    while !(0..world).all(|r| read("ready", r).is_some()) {
        let someone_exited = kids
            .iter_mut()
            .any(|(_, c)| matches!(c.try_wait(), Ok(Some(_))));
        if someone_exited || t.elapsed() > Duration::from_secs(90) {
            let res = reap(kids, Duration::from_secs(10));
            return Err(format!("the ranks did not all get ready: {res:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500)); // a few more steps
    if let Some((_, c)) = kids.iter_mut().find(|(r, _)| *r == victim) {
        let _ = c.kill(); // SIGKILL
    }
    let killed = unix_ns();
    let res = reap(kids, Duration::from_secs(120));
    let marks: Vec<(Option<u128>, Option<u128>)> = (0..world)
        .map(|r| (read("detect", r), read("first-ok", r)))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let limit = 2 * Duration::from_secs(5);
    let secs = |ns: u128| ns as f64 / 1e9;
    let mut problems = Vec::new();
    let mut detect = Vec::new();
    let mut first = Vec::new();
    for (r, code, _) in &res {
        if *r == victim {
            continue;
        }
        if *code != Some(OK as i32) {
            problems.push(format!("rank {r} exited with {code:?}"));
        }
        let (detected, first_ok) = marks[*r];
        match detected {
            Some(d) if d < killed => problems.push(format!("rank {r} failed before the kill")),
            Some(d) if d - killed > limit.as_nanos() => problems.push(format!(
                "rank {r} detected the loss {:.2} s after the kill (limit {limit:?})",
                secs(d - killed)
            )),
            Some(d) => detect.push(format!("rank {r} {:.2} s", secs(d - killed))),
            None => problems.push(format!("rank {r} recorded no detection")),
        }
        if let Some(f) = first_ok {
            first.push((*r, f.saturating_sub(killed)));
        }
    }
    let worst = first.iter().map(|x| x.1).max().unwrap_or(0);
    let report = format!(
        "kill → typed error: {}; kill → first correct all_reduce on the shrunk communicator: {} (worst {:.2} s); exits {res:?}",
        detect.join(", "),
        first
            .iter()
            .map(|(r, f)| format!("rank {r} {:.2} s", secs(*f)))
            .collect::<Vec<_>>()
            .join(", "),
        secs(worst)
    );
    if problems.is_empty() && first.len() == world - 1 {
        Ok(report)
    } else {
        Err(format!("{}; {report}", problems.join("; ")))
    }
}

fn main() -> ExitCode {
    nccl_rs_tests::log_to_stderr();
    if let Ok(s) = std::env::var("FAULTS_SCENARIO") {
        return ExitCode::from(rank_main(&s));
    }
    const CHECKS: [&str; 6] = [
        "allreduce",
        "kill",
        "never-join",
        "abort-thread",
        "cycles",
        "survive",
    ];
    let only: Option<Vec<String>> = std::env::var("FAULTS_ONLY")
        .ok()
        .map(|v| v.split(',').map(|x| x.trim().to_string()).collect());
    if let Some(bad) = only
        .iter()
        .flatten()
        .find(|x| !CHECKS.contains(&x.as_str()))
    {
        say(&format!(
            "FAULTS_ONLY: unknown check {bad:?}; known: {CHECKS:?}"
        ));
        return ExitCode::FAILURE;
    }
    let run = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    let Some(ctx) = nccl_rs_tests::gpu_or_skip("faults suite", 0) else {
        println!("faults: 0 passed, 0 failed (no GPU: see the line above)");
        return ExitCode::SUCCESS;
    };
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut check = |what: &str, r: Result<String, String>| match r {
        Ok(m) => {
            say(&format!("ok {what}: {m}"));
            passed += 1;
        }
        Err(m) => {
            say(&format!("FAIL {what}: {m}"));
            failed.push(what.to_string());
        }
    };

    for world in [2, 4].into_iter().filter(|_| run("allreduce")) {
        let kids = spawn(
            "allreduce",
            world,
            &(0..world).collect::<Vec<_>>(),
            free_port(),
        );
        let res = reap(kids, Duration::from_secs(120));
        let ok = res.iter().all(|(_, c, _)| *c == Some(OK as i32));
        check(
            &format!("{world} ranks bootstrap from torchrun variables and all-reduce"),
            if ok {
                Ok(format!("{res:?}"))
            } else {
                Err(format!("{res:?}"))
            },
        );
    }

    // kill -9 of rank 2 of 3 during the loop; timeout per wait is 5 s
    if run("kill") {
        let mut kids = spawn("kill", 3, &[0, 1, 2], free_port());
        std::thread::sleep(Duration::from_secs(8));
        let victim = kids.iter_mut().find(|(r, _)| *r == 2).unwrap();
        let _ = victim.1.kill(); // SIGKILL
        let killed_at = Instant::now();
        let res = reap(kids, Duration::from_secs(60));
        let survivors: Vec<_> = res.iter().filter(|(r, _, _)| *r != 2).collect();
        let ok = survivors
            .iter()
            .all(|(_, c, _)| *c == Some(TYPED_ERROR as i32))
            && killed_at.elapsed() <= Duration::from_secs(10 + 2);
        check(
            "kill -9 of one rank: survivors return a typed error within 2× their timeout",
            if ok {
                Ok(format!(
                    "{res:?} (all done {:.1?} after the kill)",
                    killed_at.elapsed()
                ))
            } else {
                Err(format!(
                    "{res:?}, {:.1?} after the kill",
                    killed_at.elapsed()
                ))
            },
        );
    }

    // rank 2 of 3 never joins; the deadline is 5 s
    if run("never-join") {
        let kids = spawn("never-join", 3, &[0, 1], free_port());
        let res = reap(kids, Duration::from_secs(30));
        let ok = res
            .iter()
            .all(|(_, c, t)| *c == Some(TYPED_ERROR as i32) && *t < Duration::from_secs(12));
        check(
            "a rank that never joins: the others fail within the deadline",
            if ok {
                Ok(format!("{res:?}"))
            } else {
                Err(format!("{res:?}"))
            },
        );
    }

    // abort from another thread
    if run("abort-thread") {
        let kids = spawn("abort-thread", 2, &[0, 1], free_port());
        let res = reap(kids, Duration::from_secs(60));
        let ok = res
            .iter()
            .any(|(r, c, _)| *r == 0 && *c == Some(ABORTED_IN_TIME as i32));
        check(
            "abort from another thread unblocks a wait on a missing peer",
            if ok {
                Ok(format!("{res:?}"))
            } else {
                Err(format!("{res:?}"))
            },
        );
    }

    // surviving a lost rank: kill -9 of one rank of 3 (the last) and of 4 (a
    // middle one, so that ranks renumber), then revoke + shrink or shrink
    // with ShrinkMode::Abort
    if run("survive") {
        let hows: Vec<&str> = match (ElasticApi::Shrink.check(), ElasticApi::Revoke.check()) {
            (Err(e), _) => {
                say(&format!("NOT RUN: surviving a lost rank: {e}"));
                vec![]
            }
            (Ok(()), Err(e)) => {
                say(&format!(
                    "NOT RUN: the revoke variant of surviving a lost rank: {e}"
                ));
                vec!["abort"]
            }
            (Ok(()), Ok(())) => vec!["revoke", "abort"],
        };
        for (world, victim) in [(3, 2), (4, 1)] {
            for &how in &hows {
                let what = match how {
                    "revoke" => "revoke, then shrink",
                    _ => "shrink with ShrinkMode::Abort",
                };
                check(
                    &format!("{world} ranks lose rank {victim} (kill -9) and go on: {what}"),
                    survive_check(world, victim, how),
                );
            }
        }
    }

    // 1 000 init→finalize cycles, world 1
    if run("cycles") {
        let n: usize = std::env::var("FAULTS_CYCLES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let threads: usize = std::env::var("FAULTS_CYCLE_THREADS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(8);
        check(
            "init→finalize cycles without growth",
            cycles(&ctx, n, threads.max(1)),
        );
    }

    println!("faults: {passed} passed, {} failed", failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
