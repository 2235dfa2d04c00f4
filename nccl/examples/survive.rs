// Surviving a lost rank. Start 3 or more ranks, e.g. on one GPU:
//   cargo build --example survive
//   cargo xtask launch -n 3 --one-gpu --grace 60 -- target/debug/examples/survive
// The last rank crashes at step 50; the others see it, stop what is stuck,
// leave it out and go on: NCCL shrinks the communicator, or, where it
// refuses, they make a new one. (`launch` then reports the crashed rank.)
use std::time::Duration;

use nccl::bootstrap::LaunchOptions;
use nccl::{Error, ReduceOp, ShrinkMode, Shrunk};

fn main() -> Result<(), Error> {
    let (comm, info) = nccl::bootstrap::init_from_launcher(&LaunchOptions::default())?;
    let lost = info.world - 1; // who is lost: agreed outside NCCL (a store, the launcher)
    let timeout = Duration::from_secs(5);
    let stream = comm.context().new_stream()?;
    let send = stream.clone_htod(&vec![(info.rank + 1) as f32; 1 << 16])?;
    let mut recv = stream.alloc_zeros::<f32>(1 << 16)?;

    // 1. collectives until a peer is lost: a typed error within the timeout
    let mut step = 0;
    let err = loop {
        if info.rank == lost && step == 50 {
            std::process::abort(); // a crash: no goodbye to the peers
        }
        let r = comm
            .all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)
            .and_then(|()| comm.wait_recoverable(&stream, timeout));
        if let Err(e) = r {
            break e; // comm.state() is now CommState::Failed
        }
        step += 1;
    };
    eprintln!("rank {}: lost a peer at step {step}: {err}", info.rank);

    // 2. stop what is stuck, and leave the lost rank out
    let mode = match comm.revoke() {
        Ok(()) => ShrinkMode::Default, // NCCL 2.28.7+: revoked and quiescent
        // older NCCL: the shrink aborts; a revoke NCCL could not confirm
        // aborted the communicator, and a fresh one is made below
        Err(_) => ShrinkMode::Abort,
    };
    // where NCCL refuses to shrink (its parent keeps the peer's error), the
    // survivors make a fresh communicator: they meet through the job's own
    // rendezvous (its store under a new key, or its TCP address: the new
    // rank 0 listens on the first free port from the job's)
    let opts = LaunchOptions {
        timeout: timeout * 6,
        ..LaunchOptions::default()
    };
    let mut survivors = info.survivors_bootstrap(&[lost], 1, &opts)?;
    let (Shrunk { comm: small, ranks }, how) =
        comm.shrink_or_recreate(&[lost], mode, None, &mut *survivors)?;
    eprintln!("rank {}: {how:?}", info.rank);

    // 3. go on with the survivors, on a fresh stream
    let stream = small.context().new_stream()?;
    let send = stream.clone_htod(&vec![(info.rank + 1) as f32; 1 << 16])?;
    let mut recv = stream.alloc_zeros::<f32>(1 << 16)?;
    small.all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)?;
    small.wait_or_abort(&stream, timeout)?;
    let want: usize = ranks.survivors().iter().map(|r| r + 1).sum();
    let ok = stream.clone_dtoh(&recv)?.iter().all(|&x| x == want as f32);
    eprintln!(
        "rank {} is rank {} of {} now; all_reduce {}",
        info.rank,
        small.rank(),
        small.world_size(),
        if ok { "correct" } else { "WRONG" }
    );
    small.finalize()?;
    std::process::exit(if ok { 0 } else { 1 })
}
