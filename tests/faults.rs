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
//! - a non-blocking collective still in NCCL's hands at its timeout aborts
//!   the communicator before its buffers are released (`nb-timeout`);
//! - a blocking creation whose peer never comes returns `Timeout` at its
//!   `Config::timeout`, and the process's exit then waits for NCCL's stuck
//!   creation 2 s and ends with its own code (`stuck-create`);
//! - NCCL 2.29+ (each says `NOT RUN` with the versions where this build's
//!   header or the libnccl in use lacks the API): 2 ranks grow to 3 with a
//!   joiner process (`Comm::grow`, `Comm::join`); suspend and resume with
//!   `mem_stats` and the GPU's free memory; rank 2 of 3 leaves and the others
//!   revoke and shrink with `ShrinkMode::Default`; a communicator made with
//!   `Config::graph_usage_mode(1)` captures and replays a graph; each ends
//!   with correct all_reduces.
//!
//! - a communicator dropped while a CUDA graph that captured its call lives
//!   returns (the abort waits for the graph on a thread of its own), and
//!   one finalized then, with a timeout, returns `Timeout`
//!   (`graph-drop`); `NCCL_COMM_BLOCKING=0` makes a communicator
//!   non-blocking whatever its config, and a group's end waits for it
//!   before the buffers go (`env-nonblocking`); with `NCCL_CUMEM_ENABLE=0`
//!   an `NcclBuffer`'s drop does not wait for a collective stuck on a
//!   missing peer (`no-cumem`);
//!
//! `FAULTS_ONLY=survive` (a comma-separated list of `allreduce`, `kill`,
//! `never-join`, `abort-thread`, `nb-timeout`, `stuck-create`, `graph-drop`,
//! `env-nonblocking`, `no-cumem`, `cycles`,
//! `survive`, `grow`, `suspend`, `shrink-default`, `graph-mode`) runs only
//! those checks.
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
/// Done; the communicator is left to its drop (no finalize).
const LEFT: u8 = 15;

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
    if scenario == "stuck-create" {
        // rank 0 of 2 alone, blocking, 2 s: rank 1 never comes
        let t0 = Instant::now();
        let made = CudaContext::new(0).map_err(Error::from).and_then(|ctx| {
            let id = UniqueId::new()?;
            let config = nccl::Config::new().timeout(Duration::from_secs(2));
            Comm::init_rank_with(&ctx, 2, &id, 0, &config)
        });
        return match made {
            Err(e @ Error::Timeout { .. }) => {
                say(&format!(
                    "rank {rank}: typed error after {:.1?}: {e}",
                    t0.elapsed()
                ));
                TYPED_ERROR
            }
            Err(e) => {
                say(&format!("rank {rank}: {e}"));
                OTHER
            }
            Ok(_) => {
                say(&format!("rank {rank}: made a communicator of 2 alone"));
                OTHER
            }
        };
    }
    let t0 = Instant::now();
    let opts = match scenario {
        "never-join" => LaunchOptions { timeout, ..opts },
        // non-blocking, peers not connected: the first collective connects
        // on NCCL's own thread, which waits for a peer that never comes
        "nb-timeout" => LaunchOptions {
            config: nccl::Config::new().blocking(false).timeout(nb_timeout()),
            connect: false,
            ..opts
        },
        // blocking, with a timeout: the destroy in finalize is bounded
        "graph-finalize" => LaunchOptions {
            config: nccl::Config::new().timeout(Duration::from_secs(8)),
            ..opts
        },
        _ => opts,
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
    if scenario == "no-cumem" {
        return no_cumem(comm, &info).unwrap_or_else(|e| {
            say(&format!("rank {rank}: no-cumem: {e}"));
            code(&e)
        });
    }
    if scenario == "graph-drop" || scenario == "graph-finalize" {
        return graph_drop(comm, &info, scenario == "graph-finalize").unwrap_or_else(|e| {
            say(&format!("rank {rank}: graph-drop: {e}"));
            code(&e)
        });
    }
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
            comm.wait_or_abort(&stream, timeout)?;
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
                    .and_then(|()| comm.wait_or_abort(&stream, timeout))
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
                std::thread::sleep(nb_timeout() + Duration::from_secs(5));
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
                .and_then(|()| comm.wait_or_abort(&stream, Duration::from_secs(60)));
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
        "nb-timeout" => {
            if rank == 1 {
                // never takes part; stays alive until rank 0 gave up
                std::thread::sleep(nb_timeout() + Duration::from_secs(5));
                return Ok(OK);
            }
            // buffers of their own, dropped right after the failed call: NCCL
            // must be done with them by then (the communicator aborted, which
            // joins NCCL's thread); compute-sanitizer reports it otherwise
            let a = stream.clone_htod(&vec![1.0f32; n])?;
            let mut b = stream.alloc_zeros::<f32>(n)?;
            let t = Instant::now();
            let r = comm.all_reduce(&a, &mut b, ReduceOp::Sum, &stream);
            drop((a, b));
            let after = t.elapsed();
            let aborted = comm.is_aborted();
            // more work on the GPU afterwards, on the freed memory's pool
            let again = stream.clone_htod(&vec![2.0f32; n])?;
            let back = stream.clone_dtoh(&again)?;
            match r {
                Err(Error::Timeout { .. }) if aborted && back.iter().all(|&x| x == 2.0) => {
                    say(&format!(
                        "rank 0: the non-blocking all_reduce timed out after {after:.1?}; the communicator was aborted before its buffers were dropped"
                    ));
                    Ok(ABORTED_IN_TIME)
                }
                other => {
                    say(&format!(
                        "rank 0: expected Timeout with the communicator aborted, got {other:?} (aborted: {aborted}) after {after:.1?}"
                    ));
                    Ok(OTHER)
                }
            }
        }
        "env-nonblocking" => {
            // NCCL_COMM_BLOCKING=0 made the communicator non-blocking, its
            // config notwithstanding: the crate must know, and a group's
            // end must wait for NCCL's launch before the buffers go
            if comm.is_blocking() {
                say(&format!(
                    "rank {rank}: NCCL_COMM_BLOCKING=0 but is_blocking() is true"
                ));
                return Ok(OTHER);
            }
            for step in 0..20 {
                let a = stream.clone_htod(&vec![(info.rank + 1) as f32; n])?;
                let mut b = stream.alloc_zeros::<f32>(n)?;
                nccl::group(|g| comm.all_reduce(&a, &mut b, ReduceOp::Sum, g.on(&stream)))?;
                let mut state = nccl::sys::ncclResult_t::ncclSuccess;
                // SAFETY: a live communicator of this thread; one int written.
                unsafe { nccl::sys::ncclCommGetAsyncError(comm.as_raw(), &mut state) };
                if state == nccl::sys::ncclResult_t::ncclInProgress {
                    say(&format!(
                        "rank {rank}: step {step}: the group ended with NCCL still launching"
                    ));
                    return Ok(OTHER);
                }
                let out = stream.clone_dtoh(&b)?;
                drop((a, b));
                if out.iter().any(|&x| x != want) {
                    say(&format!("rank {rank}: step {step}: {} != {want}", out[0]));
                    return Ok(WRONG_RESULT);
                }
            }
            say(&format!(
                "rank {rank}: non-blocking by NCCL_COMM_BLOCKING=0: 20 grouped all_reduces right"
            ));
            Ok(OK)
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

/// `graph-drop`: a graph captures an all_reduce on an `NcclBuffer` and
/// replays it; then the communicator is dropped while the graph lives.
/// `ncclCommAbort` waits for the graph's destruction, so the drop must leave
/// it to a thread instead of blocking forever. With `finalize` (the
/// communicator made blocking with an 8 s timeout), it is finalized instead:
/// `ncclCommFinalize` waits for the graph, and finalize must return
/// `Timeout` after the timeout.
fn graph_drop(comm: Comm, info: &nccl::bootstrap::LaunchInfo, finalize: bool) -> Result<u8, Error> {
    let rank = info.rank;
    let n = 1 << 16;
    let want = (info.world * (info.world + 1) / 2) as f32;
    let gs = comm.context().new_stream()?;
    let mut b =
        nccl::NcclBuffer::<f32>::from_host(&gs, &vec![(rank + 1) as f32; n], nccl::Memory::Nccl)?;
    gs.begin_capture(
        cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
    )?;
    let captured = comm.all_reduce_in_place(&mut b, ReduceOp::Sum, &gs);
    let graph = gs.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0));
    captured?;
    let Some(graph) = graph? else {
        say(&format!("rank {rank}: the capture made no graph"));
        return Ok(OTHER);
    };
    graph.launch()?;
    let out = gs.clone_dtoh(&b)?;
    if out.iter().any(|&x| x != want) {
        say(&format!("rank {rank}: replay gave {} != {want}", out[0]));
        return Ok(WRONG_RESULT);
    }
    let t = Instant::now();
    if finalize {
        let r = comm.finalize();
        let took = t.elapsed();
        drop(graph);
        say(&format!(
            "rank {rank}: finalize before the graph's destruction returned after {took:.1?}: {r:?}"
        ));
        let timed_out = matches!(
            r,
            Err(Error::Timeout {
                op: "ncclCommFinalize",
                ..
            })
        );
        return Ok(if timed_out && took < Duration::from_secs(20) {
            LEFT
        } else {
            OTHER
        });
    }
    drop(comm);
    let took = t.elapsed();
    drop(graph);
    say(&format!(
        "rank {rank}: the communicator dropped before its graph returned after {took:.1?}"
    ));
    Ok(if took < Duration::from_secs(10) {
        LEFT
    } else {
        OTHER
    })
}

/// `no-cumem` (`NCCL_CUMEM_ENABLE=0`, so `ncclMemFree` is `cudaFree`, which
/// waits for the whole device): rank 0's collective waits for rank 1, which
/// never takes part; dropping an `NcclBuffer` meanwhile must return at
/// once. Then the communicator is dropped (its abort flag stops the kernel
/// first thing) before any other CUDA call: `cudaFree`, running on its own
/// thread, holds the process's CUDA calls up until the device is idle.
fn no_cumem(comm: Comm, info: &nccl::bootstrap::LaunchInfo) -> Result<u8, Error> {
    if info.rank == 1 {
        std::thread::sleep(Duration::from_secs(8));
        return Ok(LEFT);
    }
    let n = 1 << 16;
    let ctx = comm.context().clone();
    let stream = ctx.new_stream()?;
    let other = ctx.new_stream()?;
    let send = stream.clone_htod(&vec![1.0f32; n])?;
    let mut recv = stream.alloc_zeros::<f32>(n)?;
    let x = nccl::NcclBuffer::<f32>::alloc_zeros(&stream, n)?;
    stream.synchronize()?;
    comm.all_reduce(&send, &mut recv, ReduceOp::Sum, &other)?;
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    drop(x);
    let took = t.elapsed();
    drop(comm);
    say(&format!(
        "rank 0: an NcclBuffer (cudaFree memory) dropped beside a stuck collective in {took:.1?}; the communicator then dropped in {:.1?}",
        t.elapsed() - took
    ));
    Ok(if took < Duration::from_secs(2) {
        LEFT
    } else {
        OTHER
    })
}

/// The non-blocking communicator's timeout in `nb-timeout`: 3 s, or
/// `FAULTS_NB_TIMEOUT_S` seconds (longer under compute-sanitizer, which
/// slows the creation itself past 3 s).
fn nb_timeout() -> Duration {
    let s = std::env::var("FAULTS_NB_TIMEOUT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    Duration::from_secs(s)
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
            Err(e) => {
                // not confirmed: the communicator was aborted, and
                // shrink_or_recreate goes straight to a fresh one
                say(&format!("rank {rank}: revoke: {e}"));
                false
            }
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
        small.wait_or_abort(&stream, timeout)?;
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

/// A check's outcome: the ranks' results, as its message either way.
fn verdict(ok: bool, res: &impl std::fmt::Debug) -> Result<String, String> {
    if ok {
        Ok(format!("{res:?}"))
    } else {
        Err(format!("{res:?}"))
    }
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
                if s.code().is_none() {
                    use std::os::unix::process::ExitStatusExt as _;
                    eprintln!(
                        "rank {r}: ended by signal {} after {:.1?}",
                        s.signal().map_or("?".into(), |n| n.to_string()),
                        start.elapsed()
                    );
                }
                out.push((*r, s.code(), start.elapsed()));
                false
            }
            _ => true,
        });
        if start.elapsed() > limit {
            for (r, c) in &mut kids {
                let _ = c.kill();
                let _ = c.wait();
                eprintln!("rank {r}: still running after {limit:?}, killed");
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
    if let Some(code) = api29_rank() {
        return ExitCode::from(code);
    }
    if let Ok(s) = std::env::var("FAULTS_SCENARIO") {
        return ExitCode::from(rank_main(&s));
    }
    const CHECKS: [&str; 15] = [
        "allreduce",
        "kill",
        "never-join",
        "abort-thread",
        "nb-timeout",
        "stuck-create",
        "graph-drop",
        "env-nonblocking",
        "no-cumem",
        "cycles",
        "survive",
        "grow",
        "suspend",
        "shrink-default",
        "graph-mode",
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
            verdict(ok, &res),
        );
    }

    // a non-blocking call still in NCCL's hands at its timeout: the
    // communicator is aborted before the call's buffers are released
    if run("nb-timeout") {
        let kids = spawn("nb-timeout", 2, &[0, 1], free_port());
        let res = reap(kids, Duration::from_secs(60).max(nb_timeout() * 4));
        // rank 1 only waits; its finalize after rank 0's abort may fail
        let ok = res
            .iter()
            .any(|(r, c, _)| *r == 0 && *c == Some(ABORTED_IN_TIME as i32));
        check(
            "non-blocking timeout with buffers in flight: aborted before they are dropped",
            verdict(ok, &res),
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
            verdict(ok, &res),
        );
    }

    // a blocking creation stuck in NCCL at its timeout (2 s): the rank
    // returns Timeout, and its exit waits 2 s for NCCL's creation, then ends
    // with the rank's code (without that wait it would end at about 2 s)
    if run("stuck-create") {
        let kids = spawn("stuck-create", 2, &[0], free_port());
        let res = reap(kids, Duration::from_secs(30));
        let ok = res.iter().all(|(_, c, t)| {
            *c == Some(TYPED_ERROR as i32)
                && *t >= Duration::from_millis(3900)
                && *t < Duration::from_secs(10)
        });
        check(
            "a blocking creation stuck at its timeout: Timeout, then the exit waits 2 s for it",
            verdict(ok, &res),
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
            verdict(ok, &res),
        );
    }

    // dropping a communicator while a graph that captured its all_reduce
    // lives: ncclCommAbort waits for the graph, the drop must not
    if run("graph-drop") {
        for (scenario, what) in [
            (
                "graph-drop",
                "a communicator dropped before the CUDA graph that captured its call returns",
            ),
            (
                "graph-finalize",
                "finalize with a timeout before the CUDA graph that captured its call: Timeout",
            ),
        ] {
            let kids = spawn(scenario, 2, &[0, 1], free_port());
            let res = reap(kids, Duration::from_secs(60));
            let ok = res.iter().all(|(_, c, _)| *c == Some(LEFT as i32));
            check(what, verdict(ok, &res));
        }
    }

    // NCCL_COMM_BLOCKING=0 overrides the config: grouped calls' buffers are
    // released only once NCCL has launched them
    if run("env-nonblocking") {
        // the variable, and the same line in NCCL's configuration file
        // (which NCCL reads itself, maybe only once the creation began)
        let conf = std::env::temp_dir().join(format!("nccl-rs-faults-{}.conf", std::process::id()));
        std::fs::write(&conf, "NCCL_COMM_BLOCKING=0\n").unwrap();
        for (how, env) in [
            ("the variable", ("NCCL_COMM_BLOCKING", "0".to_string())),
            (
                "NCCL_CONF_FILE",
                ("NCCL_CONF_FILE", conf.display().to_string()),
            ),
        ] {
            let kids = spawn_with("env-nonblocking", 2, &[0, 1], free_port(), &[env]);
            let res = reap(kids, Duration::from_secs(60));
            let ok = res.iter().all(|(_, c, _)| *c == Some(OK as i32));
            check(
                &format!(
                    "NCCL_COMM_BLOCKING=0 ({how}): the communicator is non-blocking and a group's end waits for it"
                ),
                verdict(ok, &res),
            );
        }
        let _ = std::fs::remove_file(conf);
    }

    // NCCL_CUMEM_ENABLE=0 (ncclMemFree is cudaFree): a buffer's drop does
    // not wait for a collective stuck on a missing peer
    if run("no-cumem") {
        let env = [("NCCL_CUMEM_ENABLE", "0".to_string())];
        let kids = spawn_with("no-cumem", 2, &[0, 1], free_port(), &env);
        let res = reap(kids, Duration::from_secs(60));
        let ok = res
            .iter()
            .any(|(r, c, _)| *r == 0 && *c == Some(LEFT as i32));
        check(
            "NCCL_CUMEM_ENABLE=0: dropping an NcclBuffer beside a stuck collective returns",
            verdict(ok, &res),
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

    // the APIs of NCCL 2.29+: grow/join, suspend/resume, a voluntary leave
    // (revoke + ShrinkMode::Default), Config::graph_usage_mode
    api29_checks(&run, &mut check);

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

// ---------------------------------------------------------------------------
// The APIs of NCCL 2.29+ (grow/join, suspend/resume/mem_stats, revoke then a
// `ShrinkMode::Default` shrink without a dead rank, `Config::graph_usage_mode`)
// with ranks as processes on GPU 0. Each check runs when this build's header
// and the libnccl in use have what it needs, and says `NOT RUN` with both
// versions otherwise.
// ---------------------------------------------------------------------------

/// The rank scenarios of the 2.29+ checks.
const API29_SCENARIOS: [&str; 5] = [
    "grow",
    "grow-join",
    "suspend",
    "shrink-default",
    "graph-mode",
];

/// A rank process of one of the 2.29+ checks (`FAULTS_SCENARIO` one of
/// [`API29_SCENARIOS`]): its exit code; `None` for any other process.
fn api29_rank() -> Option<u8> {
    let scenario = std::env::var("FAULTS_SCENARIO").ok()?;
    if !API29_SCENARIOS.contains(&scenario.as_str()) {
        return None;
    }
    let r = match scenario.as_str() {
        "grow" => grow_rank(),
        "grow-join" => join_rank(),
        "suspend" => suspend_rank(),
        "shrink-default" => shrink_default_rank(),
        _ => graph_mode_rank(),
    };
    Some(r.unwrap_or_else(|e| {
        say(&format!(
            "rank {}: {scenario}: {e}",
            std::env::var("RANK").unwrap_or_default()
        ));
        code(&e)
    }))
}

/// The launcher options of these ranks: 60 s for the rendezvous and creation.
fn api29_launch(config: nccl::Config, connect: bool) -> LaunchOptions {
    LaunchOptions {
        timeout: Duration::from_secs(60),
        config,
        connect,
        ..LaunchOptions::default()
    }
}

/// `times` all_reduces of `rank + 1` over `comm`, each checked against the
/// sum over its ranks; `false` (after saying so) on a wrong value. The
/// buffers are freed and the stream synchronized before it returns, so that
/// no cudarc memory comes or goes afterwards.
fn all_reduce_ok(comm: &Comm, what: &str, times: usize) -> Result<bool, Error> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let n = 1 << 16;
    let stream = comm.context().new_stream()?;
    let send = stream.clone_htod(&vec![(rank + 1) as f32; n])?;
    let mut recv = stream.alloc_zeros::<f32>(n)?;
    let want = (world * (world + 1) / 2) as f32;
    for i in 0..times {
        stream.memset_zeros(&mut recv)?;
        comm.all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)?;
        comm.wait_or_abort(&stream, Duration::from_secs(20))?;
        let out = stream.clone_dtoh(&recv)?;
        if let Some(bad) = out.iter().find(|&&x| x != want) {
            say(&format!(
                "rank {rank} of {world}: all_reduce {i} {what}: {bad} != {want}"
            ));
            return Ok(false);
        }
    }
    drop((send, recv));
    stream.synchronize()?;
    Ok(true)
}

fn env_usize(name: &str) -> Result<usize, Error> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or(Error::Aborted {
            op: "a rank variable of the faults test is missing",
        })
}

/// The address of the grow's joiner bootstrap: the port after the launch's.
fn grow_addr() -> Result<String, Error> {
    Ok(format!("127.0.0.1:{}", env_usize("MASTER_PORT")? + 1))
}

/// An existing rank of the grow check: bootstraps from the launcher's
/// variables, checks an all_reduce, grows to `FAULTS_GROW_TO` ranks (rank 0
/// hands the grow id to the joiners through a `TcpBootstrap` of its own),
/// keeps its rank, and checks 10 all_reduces of the grown communicator.
fn grow_rank() -> Result<u8, Error> {
    let (comm, _) = nccl::bootstrap::init_from_launcher(&api29_launch(nccl::Config::new(), true))?;
    let (rank, world) = (comm.rank(), comm.world_size());
    let new_world = env_usize("FAULTS_GROW_TO")?;
    if !all_reduce_ok(&comm, "before the grow", 1)? {
        return Ok(WRONG_RESULT);
    }
    let t = Instant::now();
    let grown = if rank == 0 {
        let secret = std::env::var("NCCL_RS_SECRET").unwrap_or_default();
        let mut joiners = nccl::bootstrap::TcpBootstrap::new(
            &grow_addr()?,
            0,
            new_world - world + 1,
            Some(secret.as_bytes()),
            Duration::from_secs(60),
        )?;
        comm.grow(new_world, Some(&mut joiners), None)?
    } else {
        comm.grow(new_world, None, None)?
    };
    if (grown.rank(), grown.world_size(), grown.state()) != (rank, new_world, CommState::Live) {
        say(&format!(
            "rank {rank}: grown to rank {} of {} ({}), expected rank {rank} of {new_world}",
            grown.rank(),
            grown.world_size(),
            grown.state()
        ));
        return Ok(OTHER);
    }
    let took = t.elapsed();
    if !all_reduce_ok(&grown, "after the grow", 10)? {
        return Ok(WRONG_RESULT);
    }
    comm.finalize()?;
    grown.finalize()?;
    say(&format!(
        "rank {rank}: grew from {world} to {new_world} ranks in {took:.2?}; 10 all_reduces correct"
    ));
    Ok(OK)
}

/// A joiner of the grow check: rank `RANK` of `WORLD_SIZE` after the grow,
/// member `RANK - FAULTS_GROW_FROM + 1` of the joiners' bootstrap.
fn join_rank() -> Result<u8, Error> {
    let rank = env_usize("RANK")?;
    let new_world = env_usize("WORLD_SIZE")?;
    let old_world = env_usize("FAULTS_GROW_FROM")?;
    let ctx = CudaContext::new(0)?;
    let secret = std::env::var("NCCL_RS_SECRET").unwrap_or_default();
    let mut boot = nccl::bootstrap::TcpBootstrap::new(
        &grow_addr()?,
        rank - old_world + 1,
        new_world - old_world + 1,
        Some(secret.as_bytes()),
        Duration::from_secs(60),
    )?;
    let t = Instant::now();
    let comm = Comm::join(
        &ctx,
        new_world,
        &mut boot,
        &nccl::Config::new().timeout(Duration::from_secs(60)),
    )?;
    if (comm.rank(), comm.world_size()) != (rank, new_world) {
        say(&format!(
            "joiner: rank {} of {}, expected rank {rank} of {new_world}",
            comm.rank(),
            comm.world_size()
        ));
        return Ok(OTHER);
    }
    let took = t.elapsed();
    if !all_reduce_ok(&comm, "after joining", 10)? {
        return Ok(WRONG_RESULT);
    }
    comm.finalize()?;
    say(&format!(
        "rank {rank}: joined as rank {rank} of {new_world} in {took:.2?}; 10 all_reduces correct"
    ));
    Ok(OK)
}

/// A rank of the suspend check: mem_stats before, while suspended and after
/// resume; the GPU's free memory grows by what NCCL says it can release
/// when suspended and shrinks by as much on resume; collectives are refused
/// while suspended; 10 correct all_reduces after resume.
fn suspend_rank() -> Result<u8, Error> {
    let (comm, _) = nccl::bootstrap::init_from_launcher(&api29_launch(nccl::Config::new(), true))?;
    let rank = comm.rank();
    let ctx = comm.context().clone();
    // what the refused all_reduce uses is made first: no memory of this
    // process comes or goes between the measurements below but NCCL's (and
    // the all_reduce, a barrier of sorts, makes every rank's come before)
    let stream = ctx.new_stream()?;
    let send = stream.alloc_zeros::<f32>(4)?;
    let mut recv = stream.alloc_zeros::<f32>(4)?;
    stream.synchronize()?;
    if !all_reduce_ok(&comm, "before suspend", 1)? {
        return Ok(WRONG_RESULT);
    }
    let before = comm.mem_stats()?;
    let (free0, _) = ctx.mem_get_info()?;
    comm.suspend()?;
    let (free1, _) = ctx.mem_get_info()?;
    let during = comm.mem_stats()?;
    let state_during = comm.state();
    let refused = comm.all_reduce(&send, &mut recv, ReduceOp::Sum, &stream);
    let (free_before_resume, _) = ctx.mem_get_info()?;
    comm.resume()?;
    let (free2, _) = ctx.mem_get_info()?;
    let after = comm.mem_stats()?;
    let state_after = comm.state();
    let mut problems = Vec::new();
    for (when, s, suspended) in [
        ("before", &before, false),
        ("suspended", &during, true),
        ("resumed", &after, false),
    ] {
        if s.suspended != suspended {
            problems.push(format!(
                "{when}: mem_stats says suspended = {}",
                s.suspended
            ));
        }
        if s.total != s.persistent + s.suspendable {
            problems.push(format!(
                "{when}: total {} != persistent {} + suspendable {}",
                s.total, s.persistent, s.suspendable
            ));
        }
    }
    if state_during != CommState::Suspended || state_after != CommState::Live {
        problems.push(format!(
            "states {state_during} while suspended, {state_after} after resume"
        ));
    }
    if !matches!(refused, Err(Error::WrongState { .. })) {
        problems.push(format!(
            "all_reduce while suspended: {refused:?}, expected WrongState"
        ));
    }
    // NCCL unmaps and releases what it can suspend (other ranks on this GPU
    // release theirs too, which only adds to the free memory); resume maps it
    // again. 10 % slack for rounding to the allocation granularity.
    let s = before.suspendable as i64;
    let (released, restored) = (
        free1 as i64 - free0 as i64,
        free_before_resume as i64 - free2 as i64,
    );
    if s > 0 && released < s * 9 / 10 {
        problems.push(format!(
            "suspend released {released} bytes of the GPU's memory, NCCL said {s} could be"
        ));
    }
    if s > 0 && restored < s * 9 / 10 {
        problems.push(format!(
            "resume took {restored} bytes of the GPU's memory, NCCL said {s} were suspended"
        ));
    }
    drop((send, recv));
    stream.synchronize()?;
    let ok_after = all_reduce_ok(&comm, "after resume", 10)?;
    comm.finalize()?;
    say(&format!(
        "rank {rank}: mem_stats before {before:?}, suspended {during:?}, resumed {after:?}; GPU free memory {free0} → {free1} (suspended, {released:+} bytes) → {free2} (resumed, {:+} bytes){}",
        -restored,
        if s == 0 {
            "; NCCL tracks no suspendable memory for this communicator, so the release is not measured"
        } else {
            ""
        }
    ));
    if !problems.is_empty() {
        say(&format!("rank {rank}: suspend: {}", problems.join("; ")));
        return Ok(OTHER);
    }
    Ok(if ok_after { OK } else { WRONG_RESULT })
}

/// Waits until every rank in `ranks` has marked `what` (see [`mark`]), up to
/// `limit`.
fn wait_marks(what: &str, ranks: std::ops::Range<usize>, limit: Duration) -> bool {
    let Ok(dir) = std::env::var("FAULTS_OUT") else {
        return false;
    };
    let t = Instant::now();
    while t.elapsed() < limit {
        if ranks.clone().all(|r| {
            std::path::Path::new(&dir)
                .join(format!("{what}-rank{r}"))
                .exists()
        }) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A rank of the voluntary-leave check: the last rank leaves (it closes its
/// communicator once the others are done with the old one); the others
/// revoke, shrink with `ShrinkMode::Default` without it, and check 10
/// all_reduces of the smaller communicator.
fn shrink_default_rank() -> Result<u8, Error> {
    let (comm, _) = nccl::bootstrap::init_from_launcher(&api29_launch(nccl::Config::new(), true))?;
    let (rank, world) = (comm.rank(), comm.world_size());
    if !all_reduce_ok(&comm, "before the shrink", 1)? {
        return Ok(WRONG_RESULT);
    }
    let leaver = world - 1;
    if rank == leaver {
        // stays until the others have their new communicator, so that its
        // leaving cannot reach their old one before they shrank it
        let done = wait_marks("shrunk", 0..leaver, Duration::from_secs(60));
        drop(comm); // ncclCommAbort
        say(&format!("rank {rank}: left the communicator"));
        return Ok(if done { OK } else { OTHER });
    }
    let t = Instant::now();
    comm.revoke()?;
    let revoked = comm.state();
    let nccl::Shrunk { comm: small, ranks } = comm.shrink(&[leaver], ShrinkMode::Default, None)?;
    let took = t.elapsed();
    mark("shrunk", rank, "");
    let survivors: Vec<usize> = (0..leaver).collect();
    if revoked != CommState::Revoked
        || (small.rank(), small.world_size()) != (rank, world - 1)
        || ranks.survivors() != survivors
    {
        say(&format!(
            "rank {rank}: state {revoked} after revoke; shrunk to rank {} of {} (old ranks {:?})",
            small.rank(),
            small.world_size(),
            ranks.survivors()
        ));
        return Ok(OTHER);
    }
    if !all_reduce_ok(&small, "after the shrink", 10)? {
        return Ok(WRONG_RESULT);
    }
    small.finalize()?;
    comm.finalize()?; // revoked: released with ncclCommAbort
    say(&format!(
        "rank {rank}: revoked and shrank to rank {rank} of {} (ShrinkMode::Default) in {took:.2?}; 10 all_reduces correct",
        world - 1
    ));
    Ok(OK)
}

/// A rank of the graph-usage check: a communicator made with
/// `Config::graph_usage_mode(1)` (one graph) captures 3 in-place
/// all_reduces and replays them twice, with the right values each time.
/// Its peers are connected at creation (the launcher's all_reduces,
/// finished before the capture), so that the capture connects nothing.
fn graph_mode_rank() -> Result<u8, Error> {
    let config = nccl::Config::new().graph_usage_mode(1);
    let (comm, _) = nccl::bootstrap::init_from_launcher(&api29_launch(config, true))?;
    let (rank, world) = (comm.rank(), comm.world_size());
    let ctx = comm.context().clone();
    let stream = ctx.new_stream()?;
    let n = 4099;
    // cudarc's cross-stream events cannot be waited on inside a capture:
    // the captured buffer is made while event tracking is off.
    // SAFETY: `buf` is used on `stream` alone, which is synchronized before
    // `buf` is dropped.
    unsafe { ctx.disable_event_tracking() };
    let buf = stream.clone_htod(&vec![(rank + 1) as f32; n]);
    // SAFETY: buffers made from here on are tracked again.
    unsafe { ctx.enable_event_tracking() };
    let mut buf = buf?;
    stream.synchronize()?;
    stream.begin_capture(
        cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
    )?;
    let steps = 3;
    let captured =
        (0..steps).try_for_each(|_| comm.all_reduce_in_place(&mut buf, ReduceOp::Sum, &stream));
    // the capture always ends, so that a failure leaves no stream capturing
    let graph = stream.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0));
    captured?;
    let Some(graph) = graph? else {
        say(&format!("rank {rank}: the capture gave no graph"));
        return Ok(OTHER);
    };
    let unchanged = stream.clone_dtoh(&buf)?;
    if unchanged.iter().any(|&x| x != (rank + 1) as f32) {
        say(&format!(
            "rank {rank}: the buffer changed during the capture"
        ));
        return Ok(WRONG_RESULT);
    }
    // every all_reduce after the first multiplies by the world size
    let mut want = (world * (world + 1) / 2) as f32 / world as f32;
    for replay in 0..2 {
        graph.launch()?;
        want *= (world as f32).powi(steps);
        let out = stream.clone_dtoh(&buf)?;
        if let Some(bad) = out.iter().find(|&&x| x != want) {
            say(&format!("rank {rank}: replay {replay}: {bad} != {want}"));
            return Ok(WRONG_RESULT);
        }
    }
    drop(graph);
    stream.synchronize()?;
    drop(buf);
    comm.finalize()?;
    say(&format!(
        "rank {rank}: graph_usage_mode(1): 3 all_reduces captured, 2 replays correct ({want} everywhere)"
    ));
    Ok(OK)
}

/// Starts `ranks` of `world` for `scenario` (with `extra` variables) and
/// `joiners` more as `joiner_scenario` ranks of the grown world, and waits
/// up to `limit` for them to exit 0.
fn api29_run(
    scenario: &str,
    world: usize,
    joiners: usize,
    extra: &[(&str, String)],
    limit: Duration,
) -> Result<String, String> {
    let port = free_port();
    let mut kids = spawn_with(
        scenario,
        world,
        &(0..world).collect::<Vec<_>>(),
        port,
        extra,
    );
    if joiners > 0 {
        let new: Vec<usize> = (world..world + joiners).collect();
        kids.extend(spawn_with("grow-join", world + joiners, &new, port, extra));
    }
    let t = Instant::now();
    let res = reap(kids, limit);
    let took = t.elapsed();
    if res.iter().all(|(_, c, _)| *c == Some(OK as i32)) {
        Ok(format!("{res:?} ({took:.1?})"))
    } else {
        Err(format!("{res:?} ({took:.1?})"))
    }
}

/// The 2.29+ checks that `run` selects, reported through `check`; those
/// this build or libnccl lacks the API for say `NOT RUN` with the versions.
fn api29_checks(run: &dyn Fn(&str) -> bool, check: &mut dyn FnMut(&str, Result<String, String>)) {
    let limit = Duration::from_secs(90);
    let gate = |apis: &[&'static str]| -> Result<(), String> {
        for api in apis {
            if let Err(e) = nccl::require_api(api) {
                return Err(match e {
                    Error::Unsupported { since, runtime, .. } => format!(
                        "needs NCCL {since}+ ({api}), have libnccl {runtime} and nccl.h {}",
                        nccl::HEADER_VERSION
                    ),
                    e => e.to_string(),
                });
            }
        }
        Ok(())
    };
    let checks: [(&str, &str, &[&'static str]); 4] = [
        (
            "grow",
            "grow: 2 ranks grow to 3 with a joiner process, all_reduce on the grown communicator",
            &["ncclCommGrow", "ncclCommGetUniqueId"],
        ),
        (
            "suspend",
            "suspend/resume: mem_stats, GPU memory released and restored, all_reduce after resume",
            &["ncclCommSuspend", "ncclCommResume", "ncclCommMemStats"],
        ),
        (
            "shrink-default",
            "revoke, then shrink with ShrinkMode::Default: rank 2 of 3 leaves, all_reduce on the rest",
            &["ncclCommRevoke", "ncclCommShrink"],
        ),
        (
            "graph-mode",
            "Config::graph_usage_mode(1): 2 ranks capture and replay a graph of all_reduces",
            &["graphUsageMode"],
        ),
    ];
    for (name, what, apis) in checks {
        if !run(name) {
            continue;
        }
        if let Err(why) = gate(apis) {
            say(&format!("NOT RUN: {what}: {why}"));
            continue;
        }
        let r = match name {
            "grow" => api29_run(
                "grow",
                2,
                1,
                &[
                    ("FAULTS_GROW_FROM", "2".into()),
                    ("FAULTS_GROW_TO", "3".into()),
                ],
                limit,
            ),
            "shrink-default" => {
                let dir = std::env::temp_dir()
                    .join(format!("nccl-rs-faults-shrink-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                match std::fs::create_dir_all(&dir) {
                    Ok(()) => {
                        let r = api29_run(
                            "shrink-default",
                            3,
                            0,
                            &[("FAULTS_OUT", dir.display().to_string())],
                            limit,
                        );
                        let _ = std::fs::remove_dir_all(&dir);
                        r
                    }
                    Err(e) => Err(format!("{}: {e}", dir.display())),
                }
            }
            other => api29_run(other, 2, 0, &[], limit),
        };
        check(what, r);
    }
}
