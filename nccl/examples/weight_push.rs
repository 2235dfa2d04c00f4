//! A trainer pushing its weights into inference engines with one-sided puts
//! ([`nccl::Comm::put_signal`], NCCL 2.29.2+), timed against the
//! broadcast-based weight sync (`weight_sync.rs`) over the same buffers.
//!
//! Every rank runs this program under a launcher (`cargo xtask launch -n
//! N`, torchrun, `mpirun`, Slurm; docs/launchers.md), one GPU per rank
//! (`LOCAL_RANK`): rank 0 is the trainer, the other ranks are engines. For
//! each size every rank registers one window of that size (collectively, in
//! the same order), the trainer's source and each engine's destination.
//! Each step the trainer writes new weights (deterministic values that
//! depend on the step), puts them into every engine's window (one group of
//! puts, in `WEIGHT_PUSH_CHUNKS` pieces per engine, each raising the
//! engine's signal), and each engine waits on its stream for that many
//! signals from rank 0, then copies the window to the host and checks every
//! value. Then the same steps again with `broadcast_in_place` from rank 0.
//!
//! Ordering. The engine's check is queued on the stream its wait is on, so
//! it cannot read before the data is there. The trainer writes its next
//! weights on the stream its puts are on, so the copy starts only once the
//! previous puts have completed there (read their source). A step starts
//! with a barrier (a one-element all-reduce) that an engine joins only
//! after its check, so no put lands in a window still being read.
//!
//! Timing: per step, each rank records CUDA events on its stream around
//! its part of the transfer, after the barrier (trainer: the puts or the
//! broadcast; engine: the wait or the broadcast); a step's time is the
//! longest over the ranks, and rank 0 prints the median over
//! `WEIGHT_PUSH_STEPS` steps after `WEIGHT_PUSH_WARMUP` untimed ones, as a
//! table and as one JSON line per size (the line starting with `{`).
//!
//! Where it runs: one-sided puts need symmetric windows, which NCCL makes
//! only for ranks that map each other's memory: GPUs of one host (NVLink or
//! PCIe peer access), one GPU per rank. Ranks sharing one GPU under
//! different `NCCL_HOSTID`s (`cargo xtask launch --one-gpu`) get no windows.
//! NCCL 2.29.2+ is needed twice: the libnccl run on, and the `nccl.h` the
//! program is built against (built on an older one, `put_signal` is not
//! compiled in and the program reports it Unsupported; tests/gpu/build.sh
//! makes its runtime-load build on the 2.32.3 header). Run `tests/gpu/weight-push.sh`, or
//! e.g. `NCCL_NVLS_ENABLE=0 cargo xtask launch -n 3 --
//! target/release/examples/weight_push`.
//!
//! Environment: `WEIGHT_PUSH_SIZES` (bytes, a comma-separated list with
//! optional K/M/G suffixes of 1024; default `1M,64M,512M`),
//! `WEIGHT_PUSH_STEPS` (default 20), `WEIGHT_PUSH_WARMUP` (default 3),
//! `WEIGHT_PUSH_CHUNKS` (puts per engine per step, default 1).
//!
//! Exit codes: 0 every value checked; 1 a wrong value or an error; 2 bad
//! settings (fewer than 2 ranks, an unreadable variable); 3 `put_signal` is
//! Unsupported (a libnccl older than 2.29.2, or a build against an older
//! `nccl.h`); 4 NCCL made
//! no windows (no symmetric memory support between these ranks); 5 no CUDA
//! driver or no GPU.

use std::process::ExitCode;

/// Why the program stops, each with its exit code.
#[derive(Debug)]
#[cfg_attr(not(nccl_fn = "ncclPutSignal"), allow(dead_code))]
enum Stop {
    /// A wrong value or an error (1).
    Failed(String),
    /// Bad settings (2).
    Usage(String),
    /// `put_signal` is Unsupported (3).
    Unsupported(String),
    /// NCCL made no symmetric windows (4).
    NoWindows(String),
    /// No CUDA driver or no GPU (5).
    NoGpu(String),
}

impl Stop {
    fn code(&self) -> u8 {
        match self {
            Stop::Failed(_) => 1,
            Stop::Usage(_) => 2,
            Stop::Unsupported(_) => 3,
            Stop::NoWindows(_) => 4,
            Stop::NoGpu(_) => 5,
        }
    }
    fn text(&self) -> &str {
        match self {
            Stop::Failed(s)
            | Stop::Usage(s)
            | Stop::Unsupported(s)
            | Stop::NoWindows(s)
            | Stop::NoGpu(s) => s,
        }
    }
}

impl From<nccl::Error> for Stop {
    fn from(e: nccl::Error) -> Stop {
        match e {
            nccl::Error::Unsupported { .. } => {
                Stop::Unsupported(format!("put_signal is Unsupported: {e}"))
            }
            nccl::Error::NoDriver { .. } | nccl::Error::NoGpu { .. } => Stop::NoGpu(e.to_string()),
            nccl::Error::LaunchEnv { .. } => Stop::Usage(e.to_string()),
            e => Stop::Failed(e.to_string()),
        }
    }
}

impl From<cudarc::driver::DriverError> for Stop {
    fn from(e: cudarc::driver::DriverError) -> Stop {
        Stop::Failed(format!("CUDA: {e}"))
    }
}

/// The settings, from the environment (read, and refused when wrong, in
/// every build; used where `put_signal` is compiled in).
#[derive(Debug)]
#[cfg_attr(not(nccl_fn = "ncclPutSignal"), allow(dead_code))]
struct Settings {
    sizes: Vec<usize>,
    steps: usize,
    warmup: usize,
    chunks: usize,
}

fn count(name: &str, default: usize, min: usize, max: usize) -> Result<usize, Stop> {
    match std::env::var(name) {
        Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => Err(Stop::Usage(format!("{name}: {e}"))),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(Stop::Usage(format!(
                "{name}={v:?}: expected a whole number from {min} to {max}"
            ))),
        },
    }
}

/// `"64M"` as 64 MiB; a multiple of 4 bytes (the weights are `u32`).
fn size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let shift = match unit {
        'B' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        _ => return Err(format!("{s:?}: unknown unit (K, M or G)")),
    };
    let n: usize = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size"))?;
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 || bytes % 4 != 0 {
        return Err(format!("{s:?}: a size is a positive multiple of 4 bytes"));
    }
    Ok(bytes)
}

impl Settings {
    fn from_env() -> Result<Settings, Stop> {
        let sizes = match std::env::var("WEIGHT_PUSH_SIZES") {
            Err(std::env::VarError::NotPresent) => "1M,64M,512M".to_string(),
            Err(e) => return Err(Stop::Usage(format!("WEIGHT_PUSH_SIZES: {e}"))),
            Ok(v) => v,
        };
        let sizes = sizes
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(size)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Stop::Usage(format!("WEIGHT_PUSH_SIZES: {e}")))?;
        if sizes.is_empty() {
            return Err(Stop::Usage("WEIGHT_PUSH_SIZES: no size".into()));
        }
        Ok(Settings {
            sizes,
            steps: count("WEIGHT_PUSH_STEPS", 20, 1, 1_000_000)?,
            warmup: count("WEIGHT_PUSH_WARMUP", 3, 0, 1_000_000)?,
            // a step's signals are counted in one u32 (SignalWait::count)
            chunks: count("WEIGHT_PUSH_CHUNKS", 1, 1, 65_536)?,
        })
    }
}

#[cfg(nccl_fn = "ncclPutSignal")]
mod push {
    use std::sync::Arc;

    use cudarc::driver::sys::CUevent_flags;
    use cudarc::driver::{CudaEvent, CudaSlice, CudaStream};
    use nccl::{Comm, NcclBuffer, ReduceOp, Signal, SignalWait, Window};

    use super::{Settings, Stop};

    /// Weight `i` of transfer `tag`: every transfer (warm-up and timed, puts
    /// and broadcasts, every size) has its own tag, so a value left from an
    /// earlier one is caught.
    fn weight(i: usize, tag: u32) -> u32 {
        let mut x = (i as u64) ^ (u64::from(tag) << 40);
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        x as u32
    }

    /// The median of `v` (not empty).
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    }

    fn human(bytes: usize) -> String {
        match bytes {
            b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
            b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
            b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
            b => format!("{b} B"),
        }
    }

    /// How the weights travel.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Method {
        /// One group of `put_signal`s from the trainer, `wait_signal` on
        /// the engines.
        Put,
        /// `broadcast_in_place` from rank 0.
        Broadcast,
    }

    /// One rank's side of the run.
    struct Rank {
        comm: Comm,
        stream: Arc<CudaStream>,
        /// One element, for the barrier.
        token: CudaSlice<u32>,
        settings: Settings,
        /// The tag of the next transfer, the same on every rank.
        tag: u32,
    }

    /// What one size's steps left on this rank.
    struct Steps {
        /// Milliseconds per timed step, this rank's part.
        times: Vec<f64>,
        /// Wrong values seen (engines).
        wrong: u64,
        /// The first of them.
        first: Option<String>,
    }

    impl Rank {
        fn is_trainer(&self) -> bool {
            self.comm.rank() == 0
        }

        /// Every rank has reached this point of its stream (the token
        /// stays 0).
        fn barrier(&mut self) -> Result<(), Stop> {
            self.comm
                .all_reduce_in_place(&mut self.token, ReduceOp::Max, &self.stream)?;
            Ok(())
        }

        fn event(&self) -> Result<CudaEvent, Stop> {
            Ok(self
                .stream
                .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?)
        }

        /// The element ranges of one step's puts to one engine.
        fn chunks(&self, n: usize) -> Vec<std::ops::Range<usize>> {
            let k = self.settings.chunks.min(n);
            (0..k).map(|c| n * c / k..n * (c + 1) / k).collect()
        }

        /// `warmup + steps` transfers of `win`'s weights by `method`, the
        /// engines checking every value of each.
        fn run_steps(
            &mut self,
            win: &mut Window<u32, NcclBuffer<u32>>,
            host: &mut [u32],
            method: Method,
        ) -> Result<Steps, Stop> {
            let n = host.len();
            let chunks = self.chunks(n);
            let engines = self.comm.world_size() - 1;
            let mut out = Steps {
                times: Vec::new(),
                wrong: 0,
                first: None,
            };
            let mut events = Vec::with_capacity(self.settings.steps);
            for step in 0..self.settings.warmup + self.settings.steps {
                let tag = self.tag;
                self.tag = self.tag.wrapping_add(1);
                if self.is_trainer() {
                    for (i, w) in host.iter_mut().enumerate() {
                        *w = weight(i, tag);
                    }
                    // queued after this stream's earlier puts or broadcast:
                    // the source is overwritten only once they have read it
                    self.stream.memcpy_htod(&*host, win)?;
                }
                self.barrier()?;
                let start = self.event()?;
                match (method, self.is_trainer()) {
                    (Method::Put, true) => {
                        let (comm, stream, win) = (&self.comm, &self.stream, &*win);
                        nccl::group(|g| {
                            for peer in 1..=engines {
                                for r in &chunks {
                                    comm.put_signal(
                                        win,
                                        r.clone(),
                                        peer,
                                        win,
                                        r.start,
                                        Signal::default(),
                                        g.on(stream),
                                    )?;
                                }
                            }
                            Ok::<_, nccl::Error>(())
                        })?;
                    }
                    (Method::Put, false) => {
                        // one signal per put of this step; NCCL counts
                        // each wait from where the previous one ended
                        let wait = SignalWait {
                            peer: 0,
                            count: chunks.len() as u32,
                            signal: Signal::default(),
                        };
                        self.comm.wait_signal(&[wait], &self.stream)?;
                    }
                    (Method::Broadcast, _) => {
                        self.comm.broadcast_in_place(win, 0, &self.stream)?;
                    }
                }
                let end = self.event()?;
                if step >= self.settings.warmup {
                    events.push((start, end));
                }
                if !self.is_trainer() {
                    // on the stream of the wait (or broadcast): after the data
                    self.stream.memcpy_dtoh(&*win, host)?;
                    self.stream.synchronize()?;
                    for (i, &got) in host.iter().enumerate() {
                        let want = weight(i, tag);
                        if got != want {
                            out.wrong += 1;
                            if out.first.is_none() {
                                out.first = Some(format!(
                                    "{method:?} of {}, step {step}: weight {i} is {got:#010x}, the trainer sent {want:#010x}",
                                    human(n * 4)
                                ));
                            }
                        }
                    }
                }
            }
            self.stream.synchronize()?;
            for (start, end) in &events {
                out.times.push(f64::from(start.elapsed_ms(end)?));
            }
            Ok(out)
        }

        /// Each step's longest time over the ranks, and the wrong values of
        /// every engine (rank 0's answer; every rank gets it).
        fn gather(
            &mut self,
            put: &Steps,
            bcast: &Steps,
        ) -> Result<(Vec<f64>, Vec<f64>, u64), Stop> {
            let steps = put.times.len();
            let mut v: Vec<f64> = put.times.iter().chain(&bcast.times).copied().collect();
            v.push((put.wrong + bcast.wrong) as f64);
            let mut d = self.stream.clone_htod(&v)?;
            self.comm
                .all_reduce_in_place(&mut d, ReduceOp::Max, &self.stream)?;
            let v = self.stream.clone_dtoh(&d)?;
            self.stream.synchronize()?;
            let wrong = v[2 * steps] as u64;
            Ok((v[..steps].to_vec(), v[steps..2 * steps].to_vec(), wrong))
        }

        /// One size: register, push, broadcast, report.
        fn size(&mut self, bytes: usize) -> Result<(), Stop> {
            let n = bytes / 4;
            let buf = NcclBuffer::<u32>::alloc_zeros(&self.stream, n)?;
            // the zeroing is done before any peer can put into the window:
            // registering is collective and comes after it
            self.stream.synchronize()?;
            // SAFETY: every rank registers one window per size, of the same
            // size, in the same order (sizes come from the same settings on
            // every rank), and every put and broadcast below covers the
            // same offsets on every rank, within the window.
            let mut win = unsafe { self.comm.window_register(buf, true) }?;
            // every rank learns whether NCCL made every rank's window
            let mut mapped = self.stream.clone_htod(&[u32::from(win.is_mapped())])?;
            self.comm
                .all_reduce_in_place(&mut mapped, ReduceOp::Min, &self.stream)?;
            if self.stream.clone_dtoh(&mapped)?[0] != 1 {
                self.comm.deregister(win)?;
                return Err(Stop::NoWindows(format!(
                    "NCCL made no symmetric window of {} on at least one rank (Registration::is_mapped is false): one-sided puts need ranks that map each other's memory, one GPU per rank on one host; ranks sharing a GPU under different NCCL_HOSTIDs (--one-gpu) get none",
                    human(bytes)
                )));
            }
            let mut host = vec![0u32; n];
            let put = self.run_steps(&mut win, &mut host, Method::Put)?;
            let bcast = self.run_steps(&mut win, &mut host, Method::Broadcast)?;
            drop(host);
            let (put_t, bcast_t, wrong) = self.gather(&put, &bcast)?;
            self.comm.deregister(win)?;
            if let Some(first) = put.first.or(bcast.first) {
                eprintln!("engine {}: {first}", self.comm.rank());
            }
            if wrong > 0 {
                return Err(Stop::Failed(format!(
                    "{}: an engine saw {wrong} wrong value(s) in one step set (first mismatches on stderr)",
                    human(bytes)
                )));
            }
            if self.is_trainer() {
                let (p, b) = (median(put_t), median(bcast_t));
                let gbps = |ms: f64| bytes as f64 / (ms * 1e-3) / 1e9;
                println!(
                    "{:>9}  {:>14.4}  {:>10.2}  {:>14.4}  {:>10.2}  {:>7.2}",
                    human(bytes),
                    p,
                    gbps(p),
                    b,
                    gbps(b),
                    b / p
                );
                println!(
                    "{{\"size_bytes\":{bytes},\"engines\":{},\"chunks\":{},\"steps\":{},\"put_signal_ms\":{p:.6},\"broadcast_ms\":{b:.6},\"put_signal_gbps\":{:.3},\"broadcast_gbps\":{:.3},\"checked\":true}}",
                    self.comm.world_size() - 1,
                    self.chunks(n).len(),
                    self.settings.steps,
                    gbps(p),
                    gbps(b)
                );
            }
            Ok(())
        }
    }

    pub(super) fn main(settings: Settings) -> Result<(), Stop> {
        let (comm, info) =
            nccl::bootstrap::init_from_launcher(&nccl::bootstrap::LaunchOptions::default())?;
        let stream = comm.context().new_stream()?;
        let token = stream.alloc_zeros::<u32>(1)?;
        let mut me = Rank {
            comm,
            stream,
            token,
            settings,
            tag: 0,
        };
        if me.is_trainer() {
            println!(
                "weight_push: trainer + {} engine(s), libnccl {} (nccl.h {}), {} launch; {} steps after {} warm-up, {} put(s) per engine per step",
                info.world - 1,
                nccl::version()?,
                nccl::HEADER_VERSION,
                info.source,
                me.settings.steps,
                me.settings.warmup,
                me.settings.chunks
            );
            println!(
                "median per-step GPU time (the slowest rank's), GB/s = bytes per engine / time"
            );
            println!(
                "{:>9}  {:>14}  {:>10}  {:>14}  {:>10}  {:>7}",
                "size", "put_signal ms", "GB/s", "broadcast ms", "GB/s", "ratio"
            );
        }
        for bytes in me.settings.sizes.clone() {
            me.size(bytes)?;
        }
        let trainer = me.is_trainer();
        me.comm.finalize()?;
        if trainer {
            println!("weight_push: every engine checked every value of every step");
        }
        Ok(())
    }
}

fn run() -> Result<(), Stop> {
    let settings = Settings::from_env()?;
    let info = nccl::bootstrap::LaunchInfo::from_env()?;
    if info.world < 2 {
        return Err(Stop::Usage(format!(
            "a world of {} rank(s): run a trainer and at least one engine under a launcher, e.g. `cargo xtask launch -n 3 -- weight_push`",
            info.world
        )));
    }
    // before any rendezvous, so that every rank stops alike
    let gpus = nccl::device_count()?;
    if gpus == 0 {
        return Err(Stop::NoGpu("the CUDA driver sees no GPU".into()));
    }
    nccl::require_api("ncclPutSignal")?;
    #[cfg(nccl_fn = "ncclPutSignal")]
    return push::main(settings);
    #[cfg(not(nccl_fn = "ncclPutSignal"))]
    {
        // require_api refuses an API the header lacks; kept for the types
        let _ = settings;
        Err(Stop::Unsupported(format!(
            "put_signal is Unsupported: this program was built against nccl.h {}, which has no ncclPutSignal (NCCL 2.29.2+)",
            nccl::HEADER_VERSION
        )))
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(stop) => {
            eprintln!("weight_push: {}", stop.text());
            ExitCode::from(stop.code())
        }
    }
}
