//! The weight-sync pattern of RL frameworks, across languages: a PyTorch
//! "trainer" (rank 0, `tests/gpu/weight_sync_trainer.py`: torch plus a few
//! lines of ctypes over libnccl) and Rust "engines" (this program, ranks
//! 1..) form ONE NCCL communicator. They meet through a PyTorch `TCPStore`:
//! the trainer hosts it, or (`WEIGHT_SYNC_HOST_STORE=1`) engine rank 1 hosts
//! it with [`nccl::bootstrap::TcpStoreServer`] and the trainer connects as a client. The
//! unique id travels as its 128 raw bytes under
//! `nccl-rs/<WEIGHT_SYNC_RUN>/0/uid` ([`nccl::bootstrap::store_id_key`]).
//!
//! Then the trainer broadcasts its weights (`WEIGHT_SYNC_N` floats,
//! `w[i] = (i % 1000) * 0.5 + 1`) to every engine, and all ranks all-reduce
//! a vector of `rank + 1`; both sides check the values.
//!
//! Environment: `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` (the
//! store), `LOCAL_RANK` (GPU, default 0), `WEIGHT_SYNC_RUN` (default
//! `weight-sync`), `WEIGHT_SYNC_N` (default 1048576),
//! `WEIGHT_SYNC_HOST_STORE`. `tests/gpu/weight_sync.sh` starts a trainer and
//! N engines on one GPU.

use std::process::ExitCode;
use std::time::Duration;

use cudarc::driver::CudaContext;
use nccl::bootstrap::{StoreBootstrap, TcpStore, TcpStoreServer};
use nccl::{Bootstrap, Comm, ReduceOp, UniqueId};

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|e| format!("{name}: {e}"))
}

fn num(name: &str, default: Option<usize>) -> Result<usize, String> {
    match (std::env::var(name), default) {
        (Ok(v), _) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number")),
        (Err(_), Some(d)) => Ok(d),
        (Err(e), None) => Err(format!("{name}: {e}")),
    }
}

/// The trainer's weights, the same formula as weight_sync_trainer.py.
fn weight(i: usize) -> f32 {
    (i % 1000) as f32 * 0.5 + 1.0
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let rank = num("RANK", None)?;
    let world = num("WORLD_SIZE", None)?;
    let local = num("LOCAL_RANK", Some(0))?;
    let n = num("WEIGHT_SYNC_N", Some(1 << 20))?;
    let run_id = std::env::var("WEIGHT_SYNC_RUN").unwrap_or_else(|_| "weight-sync".into());
    let host = var("MASTER_ADDR")?;
    let port = num("MASTER_PORT", None)?;
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let timeout = Duration::from_secs(120);

    // Rank 1 may host the store; it lives until this engine is done.
    let _server = if std::env::var("WEIGHT_SYNC_HOST_STORE").is_ok_and(|v| v == "1") && rank == 1 {
        let s = TcpStoreServer::bind(&format!("0.0.0.0:{port}"))?;
        eprintln!("engine {rank}: hosting the TCPStore on {}", s.local_addr());
        Some(s)
    } else {
        None
    };
    let store = TcpStore::connect(&addr, timeout)?;
    let key = nccl::bootstrap::store_id_key(&run_id, "0");
    let mut boot = StoreBootstrap::new(store, rank, world, &key)?;
    let id = if rank == 0 {
        boot.share_ids(Some(vec![UniqueId::new()?]))?[0]
    } else {
        boot.share_ids(None)?[0]
    };
    eprintln!("engine {rank}: got the id from {addr} under {key} ({id:?})");

    let ctx = CudaContext::new(local)?;
    let stream = ctx.new_stream()?;
    let comm = Comm::init_rank(&ctx, world, &id, rank)?;

    // 1. weights from the trainer
    let mut weights = stream.alloc_zeros::<f32>(n)?;
    comm.broadcast_in_place(&mut weights, 0, &stream)?;
    let got = stream.clone_dtoh(&weights)?;
    if let Some(i) = (0..n).find(|&i| got[i] != weight(i)) {
        return Err(format!("weights[{i}] = {}, the trainer sent {}", got[i], weight(i)).into());
    }
    // 2. an all-reduce with everyone
    let mut v = stream.clone_htod(&vec![(rank + 1) as f32; 1024])?;
    comm.all_reduce_in_place(&mut v, ReduceOp::Sum, &stream)?;
    let sum = stream.clone_dtoh(&v)?;
    let want = (world * (world + 1) / 2) as f32;
    if sum.iter().any(|&x| x != want) {
        return Err(format!("all_reduce gave {}, expected {want}", sum[0]).into());
    }
    comm.finalize()?;
    println!("engine {rank}: broadcast of {n} weights OK, all_reduce OK (sum {want})");
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("engine: {e}");
            ExitCode::FAILURE
        }
    }
}
