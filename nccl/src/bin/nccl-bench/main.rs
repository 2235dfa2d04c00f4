//! `nccl-bench`: an nccl-tests-style benchmark over the safe layer.
//! `cargo install nccl-rs --features bench`, or `cargo xtask bench [ARGS]` in
//! the repository; `nccl-bench --help` lists the options.
//!
//! One process per GPU under a launcher (torchrun, srun, `cargo xtask launch`;
//! `--one-gpu` ranks for functional runs), or one process driving `-g N` GPUs.
//! The whole report goes to stdout (the capability report, then one table per
//! collective); the progress bar goes to stderr. Without a GPU it prints the
//! capability report and says there is nothing to measure. Its stdout may
//! be closed early (`nccl-bench | head`): it then ends quietly, status 0.
//!
//! - `options`: the command line (ours and nccl-tests' spellings)
//! - `timing`: the measurement loop, as nccl-tests times it
//! - `buffers`: `--buffers`, the `CudaSlice`, `NcclBuffer` or symmetric pool
//!   buffers it runs on
//! - `breakdown`: `--breakdown`, where the host time of an all_reduce goes
//! - `check`: the expected results and the count of wrong elements
//! - `output`: table, progress bar, JSON and SVG
//! - `elem`: the element types and their host conversions

/// `print!` for the report: stdout closed early (`nccl-bench | head`) ends
/// the program quietly with status 0 (`output::stdout`).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*))
    };
}

/// `println!` through [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {
        out!("{}\n", format_args!($($arg)*))
    };
}

mod breakdown;
mod buffers;
mod check;
mod elem;
mod options;
mod output;
mod timing;

use std::sync::Arc;

use cudarc::driver::CudaContext;
use nccl::{Comm, F8E4M3, F8E5M2, bf16, f16};

use options::Opts;
use timing::{Rank, Row};

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("nccl-bench: {e}");
    std::process::exit(1)
}

/// Number of CUDA devices, or why there are none usable.
fn gpu_count() -> Result<usize, String> {
    // SAFETY: only tries to dlopen the driver library, then drops it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the CUDA driver library (libcuda.so) is not installed".into());
    }
    match CudaContext::device_count() {
        Ok(0) => Err("the CUDA driver sees no device".into()),
        Ok(n) => Ok(n as usize),
        Err(e) => Err(format!("the CUDA driver failed: {e}")),
    }
}

/// The ranks this process drives: one under a launcher, else one per GPU
/// (`-g`), in one communicator.
fn ranks(o: &Opts, gpus: usize) -> Vec<Rank> {
    if nccl::bootstrap::LaunchInfo::from_env().is_ok() {
        // blocking unless asked, as nccl-tests and NCCL's own default
        let lo = nccl::bootstrap::LaunchOptions {
            config: nccl::Config::new().blocking(!o.nonblocking),
            connect: !o.no_connect,
            ..nccl::bootstrap::LaunchOptions::default()
        };
        let (comm, info) = nccl::bootstrap::init_from_launcher(&lo).unwrap_or_else(|e| fail(e));
        eprintln!(
            "nccl-bench: rank {} of {} ({}), GPU {}",
            info.rank,
            info.world,
            info.source,
            comm.device()
        );
        if !o.event_tracking {
            timing::untrack(comm.context());
        }
        let stream = comm.context().new_stream().unwrap_or_else(|e| fail(e));
        return vec![Rank { comm, stream }];
    }
    // graph mode, non-blocking communicators and the breakdown drive one GPU
    // per process
    let want = o
        .ngpus
        .unwrap_or(if o.graph || o.nonblocking || o.breakdown.is_some() {
            1
        } else {
            gpus
        });
    let n = want.min(gpus);
    if n < want {
        eprintln!("nccl-bench: -g {want} but only {gpus} GPU(s): using {n}");
    }
    let ctxs: Vec<Arc<CudaContext>> = (0..n)
        .map(|i| CudaContext::new(i).unwrap_or_else(|e| fail(e)))
        .collect();
    if !o.event_tracking {
        ctxs.iter().for_each(timing::untrack);
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
}

/// Runs the sweep for the datatype named `-d` (our name: the parser
/// translated nccl-tests').
fn sweep(o: &Opts, ranks: &[Rank], world: usize, rows: &mut Vec<Row>) -> nccl::Result<()> {
    match o.dtype {
        "f32" => timing::run::<f32>(o, ranks, world, rows),
        "f64" => timing::run::<f64>(o, ranks, world, rows),
        "f16" => timing::run::<f16>(o, ranks, world, rows),
        "bf16" => timing::run::<bf16>(o, ranks, world, rows),
        "f8e4m3" => timing::run::<F8E4M3>(o, ranks, world, rows),
        "f8e5m2" => timing::run::<F8E5M2>(o, ranks, world, rows),
        "i8" => timing::run::<i8>(o, ranks, world, rows),
        "u8" => timing::run::<u8>(o, ranks, world, rows),
        "i32" => timing::run::<i32>(o, ranks, world, rows),
        "u32" => timing::run::<u32>(o, ranks, world, rows),
        "i64" => timing::run::<i64>(o, ranks, world, rows),
        "u64" => timing::run::<u64>(o, ranks, world, rows),
        other => fail(format!("unknown datatype {other:?}")),
    }
}

fn main() {
    // --help: on stdout, status 0; a usage error: on stderr, status 2
    let o =
        options::parse_from(options::command(), std::env::args_os()).unwrap_or_else(|e| e.exit());
    match nccl::capabilities() {
        Ok(c) => out!("{c}"),
        Err(e) => fail(e),
    }
    let gpus = match gpu_count() {
        Ok(n) => n,
        Err(why) => {
            outln!(
                "nccl-bench: no GPU to measure on this machine ({why}); the capability report is above."
            );
            return;
        }
    };
    let ranks = ranks(&o, gpus);
    let world = ranks[0].comm.world_size();
    if o.graph && ranks.len() > 1 {
        fail("--graph needs one GPU per process (run under a launcher)");
    }
    if o.buffers == options::BufKind::Symmetric && ranks.len() > 1 {
        // every rank registers its windows together, each from its process
        fail("--buffers symmetric needs one GPU per process (run under a launcher)");
    }
    if let Some(rounds) = o.breakdown {
        if ranks.len() != 1 {
            fail("--breakdown drives one GPU per process (-g 1, or run under a launcher)");
        }
        if let Err(e) = breakdown::run(&o, &ranks[0], rounds) {
            fail(e);
        }
        for r in ranks {
            if let Err(e) = r.comm.finalize() {
                fail(e);
            }
        }
        return;
    }
    if o.root >= world {
        fail(format!("--root {} but only {world} ranks", o.root));
    }
    let mut rows = Vec::new();
    if let Err(e) = sweep(&o, &ranks, world, &mut rows) {
        fail(e);
    }
    let wrong: i64 = rows.iter().map(|r| r.wrong).sum();
    if ranks[0].comm.rank() == 0 {
        output::print_summary(&rows, wrong);
        if let Some(p) = &o.json {
            output::write_json(p, &o, world, &rows).unwrap_or_else(|e| fail(format!("{p}: {e}")));
        }
        if let Some(p) = &o.plot {
            output::write_svg(p, &rows).unwrap_or_else(|e| fail(format!("{p}: {e}")));
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
