//! The command line, declared once (clap): our options and nccl-tests'
//! spellings of the same (`src/common.cu` of NVIDIA/nccl-tests), with their
//! defaults; `--help` is generated from this declaration.
//!
//! Plain std and clap only: `cargo xtask bench` compiles this file too, to
//! check the arguments and print this help before it builds anything.

use clap::error::ErrorKind;
use clap::{Arg, ArgMatches, Args, CommandFactory, FromArgMatches, Parser};

/// Every collective, in the order `-c all` runs them.
pub const ALL: [&str; 9] = [
    "all_reduce",
    "all_gather",
    "reduce_scatter",
    "broadcast",
    "reduce",
    "all_to_all",
    "gather",
    "scatter",
    "sendrecv",
];

/// The datatypes `-d` accepts: our name (the element type's `NAME`, used in
/// the table and the JSON) first, then nccl-tests' name.
pub const DATATYPES: &[(&str, &str)] = &[
    ("f32", "float"),
    ("f16", "half"),
    ("bf16", "bfloat16"),
    ("f64", "double"),
    ("f8e4m3", "f8e4m3"),
    ("f8e5m2", "f8e5m2"),
    ("i8", "int8"),
    ("u8", "uint8"),
    ("i32", "int32"),
    ("u32", "uint32"),
    ("i64", "int64"),
    ("u64", "uint64"),
];

/// The reductions `-o` accepts.
pub const OPS: [&str; 5] = ["sum", "prod", "max", "min", "avg"];

/// nccl-tests options with no counterpart here: short, long, the values
/// that mean what nccl-bench does anyway (`|` between two; any other is
/// refused), a note.
const NCCL_TESTS_ONLY: &[(Option<char>, &str, &str, &str)] = &[
    (Some('t'), "nthreads", "1", ""),
    (Some('m'), "agg_iters", "1", ""),
    (Some('N'), "run_cycles", "1", ""),
    (Some('p'), "parallel_init", "0", ""),
    (Some('z'), "blocking", "0", ""),
    (Some('y'), "stream_null", "0", ""),
    (Some('T'), "timeout", "0", ""),
    (Some('S'), "report_timestamps", "0", ""),
    (Some('a'), "average", "1", "the mean over ranks"),
    (Some('R'), "local_register", "0", ""),
    (Some('x'), "cta_policy", "-1", ""),
    (Some('D'), "device_implementation", "0", ""),
    (Some('V'), "device_cta_count", "16", ""),
    (Some('M'), "memory", "0", ""),
    (Some('u'), "unalign", "0", ""),
    (Some('I'), "per_iter_timing", "0", ""),
    (Some('K'), "per_iter_skip", "0", ""),
    (
        None,
        "report_cputime",
        "0|1",
        "the host column is always printed (nccl-tests' -C; here -C is --check)",
    ),
];

/// What the command line asks for, resolved: the rest of the program reads
/// only this.
#[derive(Clone, Debug)]
pub struct Opts {
    pub colls: Vec<String>,
    pub min: usize,
    pub max: usize,
    pub factor: f64,
    pub step: usize,
    pub iters: usize,
    pub warmup: usize,
    /// Our name of the datatype (`f32`), whichever spelling was given.
    pub dtype: &'static str,
    /// One of [`OPS`].
    pub op: String,
    pub root: usize,
    /// `None`: every visible GPU.
    pub ngpus: Option<usize>,
    pub graph: bool,
    /// Timed replays of the captured graph.
    pub graph_replays: usize,
    pub check: bool,
    pub json: Option<String>,
    pub plot: Option<String>,
    pub progress: bool,
    pub event_tracking: bool,
    pub nonblocking: bool,
    /// `--no-connect`: under a launcher, no connection of the peers while
    /// the communicator is created (`LaunchOptions::connect`).
    pub no_connect: bool,
    /// `--breakdown [ROUNDS]`: where the host time of an all_reduce goes
    /// (the `breakdown` module), in this many interleaved rounds.
    pub breakdown: Option<usize>,
    /// `--buffers slice|nccl|stream|symmetric`: `CudaSlice`, `NcclBuffer`
    /// (of either memory) or a symmetric pool's buffers (the `buffers`
    /// module; `BufKind` parses the value).
    pub buffers: BufKind,
}

impl Default for Opts {
    /// What no arguments mean.
    fn default() -> Opts {
        parse_from(command(), ["nccl-bench"]).expect("the defaults are valid")
    }
}

const AFTER_HELP: &str = "\
Sizes take K, M and G suffixes (powers of 1024), and fractions where the result is whole (1.5K).
Options take --name=value and -xVALUE too. nccl-tests' options with no counterpart here are
accepted at the value that means what nccl-bench does anyway, and refused at any other.";

#[derive(Parser, Debug)]
#[command(
    name = "nccl-bench",
    about = "nccl-tests-style benchmark of NCCL's collectives through the safe layer (nccl-rs)",
    after_help = AFTER_HELP,
    max_term_width = 100,
    // a repeated option: the last one counts, as in nccl-tests
    args_override_self = true
)]
struct Cli {
    #[arg(
        short = 'c',
        long = "coll",
        value_name = "LIST",
        default_value = "all_reduce",
        value_parser = colls_or_check,
        action = clap::ArgAction::Append,
        help = format!(
            "Collectives, comma-separated: {}, or all; `-c N` with a number is nccl-tests' \
             --check N",
            ALL.join(" ")
        )
    )]
    coll: Vec<CollsOrCheck>,
    /// Smallest size in bytes
    #[arg(short = 'b', long = "minbytes", value_name = "N", default_value = "8", value_parser = bytes)]
    min: usize,
    /// Largest size in bytes
    #[arg(short = 'e', long = "maxbytes", value_name = "N", default_value = "128M", value_parser = bytes)]
    max: usize,
    /// Multiply the size by F each step
    #[arg(
        short = 'f',
        long = "stepfactor",
        value_name = "F",
        default_value_t = 2.0
    )]
    factor: f64,
    /// Add N bytes each step instead (0: multiply by F)
    #[arg(short = 'i', long = "stepbytes", value_name = "N", default_value = "0", value_parser = bytes)]
    step: usize,
    /// Timed iterations
    #[arg(short = 'n', long = "iters", value_name = "N", default_value_t = 20, value_parser = count)]
    iters: usize,
    /// Warm-up iterations
    #[arg(
        short = 'w',
        long = "warmup",
        visible_alias = "warmup_iters",
        value_name = "N",
        default_value_t = 5
    )]
    warmup: usize,
    #[arg(
        short = 'd',
        long = "datatype",
        value_name = "T",
        default_value = "f32",
        value_parser = datatype,
        help = format!(
            "Datatype: {}, or nccl-tests' names {}",
            DATATYPES.iter().map(|d| d.0).collect::<Vec<_>>().join(" "),
            DATATYPES.iter().map(|d| d.1).filter(|t| canonical(t) != Some(*t)).collect::<Vec<_>>().join(" ")
        )
    )]
    dtype: &'static str,
    #[arg(
        short = 'o',
        long = "op",
        value_name = "OP",
        default_value = "sum",
        value_parser = op,
        help = format!("Reduction: {}", OPS.join(" "))
    )]
    op: String,
    /// Root of broadcast and reduce
    #[arg(short = 'r', long = "root", value_name = "R", default_value_t = 0)]
    root: usize,
    /// GPUs driven by this process [default: every visible GPU; under a launcher, one per process]
    #[arg(short = 'g', long = "ngpus", value_name = "N", value_parser = count)]
    ngpus: Option<usize>,
    /// Capture the timed loop in a CUDA graph, replay it once, then time N replays (N: 10 if not
    /// given, 0 is off); implies --no-event-tracking: CUDA refuses cudarc's event waits in a
    /// capture [default: off]
    #[arg(
        short = 'G',
        long = "graph",
        visible_alias = "cudagraph",
        value_name = "N",
        num_args = 0..=1,
        default_missing_value = "10"
    )]
    graph: Option<usize>,
    /// Check results (0: no); also nccl-tests' -c N [default: 1]
    #[arg(
        short = 'C',
        long = "check",
        value_name = "0|1",
        allow_negative_numbers = true
    )]
    check: Option<i64>,
    /// Write the results as JSON
    #[arg(
        short = 'J',
        long = "json",
        visible_alias = "output_file",
        value_name = "FILE"
    )]
    json: Option<String>,
    /// Write busbw and time vs size as SVG, one line per collective
    #[arg(long = "plot", value_name = "FILE")]
    plot: Option<String>,
    /// Turn off cudarc's cross-stream event tracking for the benchmark's buffers (each collective
    /// then skips cudarc's event waits and records, as a program that orders its streams itself
    /// would)
    #[arg(long)]
    no_event_tracking: bool,
    /// Buffers the collectives use: `slice` (cudarc's CudaSlice, what a user gets by default),
    /// `nccl` (NcclBuffer, from ncclMemAlloc, tracked against its own stream), `stream`
    /// (NcclBuffer on the stream-ordered pool, CudaSlice's memory) or `symmetric` (a
    /// SymmetricPool's windows, NCCL 2.27+: registered once per size class and reused; one GPU
    /// per process)
    #[arg(long, value_name = "KIND", default_value = "slice")]
    buffers: BufKind,
    /// Non-blocking communicator (default: blocking, as nccl-tests; NCCL then launches each call
    /// from a thread of its own); one GPU per process
    #[arg(long)]
    nonblocking: bool,
    /// Under a launcher: do not connect the peers while the communicator is created
    /// (LaunchOptions::connect)
    #[arg(long)]
    no_connect: bool,
    /// No progress bar on stderr
    #[arg(long)]
    no_progress: bool,
    /// Instead of the sweep: where the host time of one all_reduce (f32 sum, out of place) goes,
    /// per size of -b/-e/-f, in ROUNDS interleaved rounds of -n iterations: the raw NCCL call,
    /// the buffers' acquisition alone, and the safe call, for CudaSlice and NcclBuffer on the
    /// pool; one GPU per process
    #[arg(long, value_name = "ROUNDS", num_args = 0..=1, default_missing_value = "10", value_parser = count)]
    breakdown: Option<usize>,
    #[command(flatten)]
    nccl_tests_only: NcclTestsOnly,
}

/// `-c`: a list of collectives (ours) or a number (nccl-tests' check count).
#[derive(Clone, Debug)]
enum CollsOrCheck {
    Colls(Vec<String>),
    Check(bool),
}

/// The options of [`NCCL_TESTS_ONLY`]: their value parsers refuse what
/// nccl-bench does not do; nothing is kept.
#[derive(Clone, Debug)]
struct NcclTestsOnly;

impl FromArgMatches for NcclTestsOnly {
    fn from_arg_matches(_: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(NcclTestsOnly)
    }
    fn update_from_arg_matches(&mut self, _: &ArgMatches) -> Result<(), clap::Error> {
        Ok(())
    }
}

impl Args for NcclTestsOnly {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.next_help_heading("nccl-tests options with no counterpart (only at the value shown)")
        .args(NCCL_TESTS_ONLY.iter().map(|&(short, long, accepts, note)| {
            Arg::new(long)
                .short(short)
                .long(long)
                .value_name(accepts)
                .help(note)
                .allow_negative_numbers(true)
                .value_parser(move |v: &str| -> Result<i64, String> {
                    match v.trim().parse() {
                        Ok(n) if accepts.split('|').any(|a| a.parse() == Ok(n)) => Ok(n),
                        Ok(_) => Err(format!(
                            "nccl-tests' option is accepted only as {accepts} (what nccl-bench does)"
                        )),
                        Err(_) => Err(format!("{v:?} is not a number")),
                    }
                })
        }))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// The declaration, for `--help` and for [`parse_from`] (`cargo xtask bench`
/// renames it).
pub fn command() -> clap::Command {
    Cli::command()
}

/// Parses `args` (the program name first) with `cmd` (from [`command`]).
/// The error is clap's: `e.exit()` prints help on stdout with status 0, or
/// the message and usage on stderr with status 2.
pub fn parse_from<I, T>(mut cmd: clap::Command, args: I) -> Result<Opts, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let m = cmd.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&m).map_err(|e| e.format(&mut cmd))?;
    cli.resolve()
        .map_err(|msg| cmd.error(ErrorKind::ValueValidation, msg))
}

impl Cli {
    fn resolve(self) -> Result<Opts, String> {
        if self.min == 0 {
            return Err("--minbytes must be at least 1".into());
        }
        if self.max < self.min {
            return Err(format!(
                "--maxbytes {} is below --minbytes {}",
                self.max, self.min
            ));
        }
        if self.step == 0 && (self.factor.is_nan() || self.factor <= 1.0) {
            return Err(format!(
                "--stepfactor {} does not grow the size: give one above 1, or --stepbytes",
                self.factor
            ));
        }
        let mut colls = Vec::new();
        let mut check = true;
        for c in self.coll {
            match c {
                CollsOrCheck::Colls(c) => colls = c,
                CollsOrCheck::Check(c) => check = c,
            }
        }
        if colls.is_empty() {
            // only `-c N` (nccl-tests' check): the default list
            colls = vec![ALL[0].to_string()];
        }
        let graph = self.graph.is_some_and(|n| n > 0);
        Ok(Opts {
            colls,
            min: self.min,
            max: self.max,
            factor: self.factor,
            step: self.step,
            iters: self.iters,
            warmup: self.warmup,
            dtype: self.dtype,
            op: self.op,
            root: self.root,
            ngpus: self.ngpus,
            graph,
            graph_replays: self.graph.filter(|&n| n > 0).unwrap_or(10),
            check: self.check.map_or(check, |c| c != 0),
            json: self.json,
            plot: self.plot,
            progress: !self.no_progress,
            // CUDA refuses cudarc's event waits in a capture
            event_tracking: !self.no_event_tracking && !graph,
            nonblocking: self.nonblocking,
            no_connect: self.no_connect,
            breakdown: self.breakdown,
            buffers: self.buffers,
        })
    }
}

/// A size: a number of bytes with an optional K, M or G suffix (powers of
/// 1024); fractions are allowed where the result is whole (`1.5K`).
pub fn bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if let Ok(n) = num.parse::<usize>() {
        return n
            .checked_mul(mul)
            .ok_or_else(|| format!("{s:?} is too large"));
    }
    match num.parse::<f64>().map(|f| f * mul as f64) {
        Ok(b) if b >= usize::MAX as f64 => Err(format!("{s:?} is too large")),
        Ok(b) if b >= 0.0 && b.fract() == 0.0 => Ok(b as usize),
        _ => Err(format!("{s:?} is not a size")),
    }
}

/// A count of at least 1.
fn count(s: &str) -> Result<usize, String> {
    match s.trim().parse() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

fn colls_or_check(list: &str) -> Result<CollsOrCheck, String> {
    if let Ok(n) = list.trim().parse::<i64>() {
        return Ok(CollsOrCheck::Check(n != 0));
    }
    if list == "all" {
        return Ok(CollsOrCheck::Colls(ALL.map(str::to_string).to_vec()));
    }
    let colls: Vec<String> = list.split(',').map(str::to_string).collect();
    match colls.iter().find(|c| !ALL.contains(&c.as_str())) {
        Some(c) => Err(format!("unknown collective {c:?}")),
        None => Ok(CollsOrCheck::Colls(colls)),
    }
}

/// Our name for a datatype given in either spelling.
pub fn canonical(name: &str) -> Option<&'static str> {
    DATATYPES
        .iter()
        .find(|(ours, theirs)| name == *ours || name == *theirs)
        .map(|(ours, _)| *ours)
}

fn datatype(s: &str) -> Result<&'static str, String> {
    canonical(s).ok_or_else(|| {
        let names: Vec<&str> = DATATYPES.iter().map(|(ours, _)| *ours).collect();
        format!(
            "unknown datatype {s:?}: one of {} (or nccl-tests' names)",
            names.join(" ")
        )
    })
}

fn op(s: &str) -> Result<String, String> {
    match s {
        _ if OPS.contains(&s) => Ok(s.to_string()),
        "mulsum" | "all" => Err(format!(
            "op {s:?} (nccl-tests) is not supported: one of {}",
            OPS.join(" ")
        )),
        _ => Err(format!("unknown op {s:?}: one of {}", OPS.join(" "))),
    }
}

/// The sizes of the sweep, in bytes.
pub fn sizes(o: &Opts) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut b = o.min;
    while b <= o.max {
        sizes.push(b);
        let next = if o.step > 0 {
            b.checked_add(o.step)
        } else {
            let n = ((b as f64) * o.factor).ceil();
            (n < usize::MAX as f64).then_some(n as usize)
        };
        match next {
            Some(n) if n > b => b = n,
            _ => break,
        }
    }
    sizes
}

/// Which buffers the collectives use (`--buffers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BufKind {
    /// cudarc's `CudaSlice`.
    #[default]
    Slice,
    /// The library's `NcclBuffer` (`ncclMemAlloc`).
    Nccl,
    /// The library's `NcclBuffer` on the stream-ordered pool (`Memory::Stream`).
    Stream,
    /// Buffers of the library's `SymmetricPool` (symmetric windows).
    Symmetric,
}

impl BufKind {
    /// The names `--buffers` takes, in the order of the variants.
    pub const NAMES: [&str; 4] = ["slice", "nccl", "stream", "symmetric"];

    pub fn name(self) -> &'static str {
        match self {
            BufKind::Slice => Self::NAMES[0],
            BufKind::Nccl => Self::NAMES[1],
            BufKind::Stream => Self::NAMES[2],
            BufKind::Symmetric => Self::NAMES[3],
        }
    }
}

impl std::str::FromStr for BufKind {
    type Err = String;
    fn from_str(s: &str) -> Result<BufKind, String> {
        match s.trim() {
            "slice" => Ok(BufKind::Slice),
            "nccl" => Ok(BufKind::Nccl),
            "stream" => Ok(BufKind::Stream),
            "symmetric" => Ok(BufKind::Symmetric),
            other => Err(format!(
                "--buffers {other:?}: one of {}",
                Self::NAMES.join(" ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Opts, String> {
        let args = std::iter::once("nccl-bench").chain(args.iter().copied());
        parse_from(command(), args).map_err(|e| e.to_string())
    }

    fn error(args: &[&str]) -> clap::Error {
        let args = std::iter::once("nccl-bench").chain(args.iter().copied());
        parse_from(command(), args).unwrap_err()
    }

    #[test]
    fn the_declaration_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn defaults() {
        let o = run(&[]).unwrap();
        assert_eq!(o.colls, ["all_reduce"]);
        assert_eq!((o.min, o.max, o.factor, o.step), (8, 128 << 20, 2.0, 0));
        assert_eq!(
            (o.iters, o.warmup, o.dtype, o.op.as_str(), o.root),
            (20, 5, "f32", "sum", 0)
        );
        assert!(o.check && o.event_tracking && o.progress && !o.graph && !o.nonblocking);
        assert!(!o.no_connect && o.json.is_none() && o.plot.is_none());
        assert_eq!((o.ngpus, o.graph_replays, o.breakdown), (None, 10, None));
    }

    #[test]
    fn breakdown_rounds() {
        assert_eq!(run(&["--breakdown"]).unwrap().breakdown, Some(10));
        assert_eq!(
            run(&["--breakdown", "3", "-n", "50"]).unwrap().breakdown,
            Some(3)
        );
        assert_eq!(run(&["--breakdown=12"]).unwrap().breakdown, Some(12));
        let o = run(&["--breakdown", "-b", "8", "-e", "32K", "-f", "4"]).unwrap();
        assert_eq!((o.breakdown, sizes(&o).len()), (Some(10), 7));
        let e = error(&["--breakdown", "0"]).to_string();
        assert!(e.contains("must be at least 1"), "{e}");
    }

    #[test]
    fn sizes_and_factors() {
        assert_eq!(bytes("1G").unwrap(), 1 << 30);
        assert_eq!(bytes("64K").unwrap(), 65536);
        assert_eq!(bytes("2m").unwrap(), 2 << 20);
        assert_eq!(bytes("1.5K").unwrap(), 1536);
        assert_eq!(bytes("100").unwrap(), 100);
        assert!(bytes("x").is_err());
        assert!(bytes("0.3").is_err());
        assert!(bytes("-1K").is_err());
        assert!(
            bytes("99999999999999999999G")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            bytes("99999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
        assert!(bytes("inf").is_err() && bytes("NaN").is_err());
        let o = run(&["-b", "8", "-e", "64", "-f", "2"]).unwrap();
        assert_eq!(sizes(&o), [8, 16, 32, 64]);
        let o = run(&["-b", "8", "-e", "40", "-i", "16"]).unwrap();
        assert_eq!(sizes(&o), [8, 24, 40]);
        let o = run(&["-b", "1K", "-e", "1M", "-f", "32"]).unwrap();
        assert_eq!(sizes(&o), [1 << 10, 1 << 15, 1 << 20]);
        // a sweep to the largest size ends
        let o = run(&["-b", "1G", "-e", &usize::MAX.to_string(), "-f", "1e300"]).unwrap();
        assert_eq!(sizes(&o), [1 << 30]);
    }

    #[test]
    fn bad_values_are_usage_errors_that_say_why() {
        for (args, why) in [
            (
                &["-b", "1M", "-e", "1K"][..],
                "--maxbytes 1024 is below --minbytes 1048576",
            ),
            (&["-b", "0"], "--minbytes must be at least 1"),
            (&["-f", "1"], "--stepfactor 1 does not grow the size"),
            (&["-f", "NaN"], "does not grow the size"),
            (&["-n", "0"], "'--iters <N>': must be at least 1"),
            (&["-g", "0"], "'--ngpus <N>': must be at least 1"),
            (&["-b", "x"], "'--minbytes <N>': \"x\" is not a size"),
            (&["-e", "1.5"], "\"1.5\" is not a size"),
            (&["-n", "many"], "\"many\" is not a number"),
            (&["-f", "fast"], "'--stepfactor <F>'"),
            (&["-b"], "a value is required for '--minbytes <N>'"),
            (&["--bogus"], "unexpected argument '--bogus'"),
            (&["extra"], "unexpected argument 'extra'"),
        ] {
            let e = error(args);
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.use_stderr(), "{args:?}");
            let msg = e.to_string();
            assert!(msg.contains(why), "{args:?}: {msg}");
            assert!(msg.contains("try '--help'"), "{args:?}: {msg}");
        }
        // a value that only needed --stepbytes to grow
        assert!(run(&["-f", "1", "-i", "8"]).is_ok());
    }

    #[test]
    fn graph_mode() {
        let o = run(&["-c", "all", "-G"]).unwrap();
        assert_eq!(o.colls.len(), 9);
        assert!(o.graph && o.graph_replays == 10);
        assert!(!o.event_tracking, "-G implies --no-event-tracking");
        let o = run(&["-G", "3", "-n", "5"]).unwrap();
        assert!(o.graph && o.graph_replays == 3 && o.iters == 5);
        let o = run(&["-G3"]).unwrap();
        assert!(o.graph && o.graph_replays == 3);
        let o = run(&["-G", "-n", "5"]).unwrap();
        assert!(o.graph && o.graph_replays == 10 && o.iters == 5);
        let o = run(&["-n", "5", "-G", "--no-progress"]).unwrap();
        assert!(o.graph && !o.progress);
        let o = run(&["-G", "0"]).unwrap();
        assert!(!o.graph && o.event_tracking);
        let o = run(&["--cudagraph", "4"]).unwrap();
        assert!(o.graph && o.graph_replays == 4);
        assert!(!run(&["--cudagraph=0"]).unwrap().graph);
        assert!(!run(&["-G", "2", "--cudagraph", "0"]).unwrap().graph);
        let o = run(&["--no-event-tracking", "--nonblocking", "--no-connect"]).unwrap();
        assert!(!o.event_tracking && !o.graph && o.nonblocking && o.no_connect);
    }

    #[test]
    fn nccl_tests_spellings() {
        let o = run(&[
            "--minbytes",
            "1K",
            "--maxbytes=4K",
            "--stepfactor",
            "4",
            "--iters",
            "7",
            "--warmup_iters",
            "2",
            "--op",
            "max",
            "--datatype",
            "bfloat16",
            "--root",
            "1",
            "--ngpus",
            "2",
            "--check",
            "0",
            "-J",
            "out.json",
            "--plot",
            "out.svg",
        ])
        .unwrap();
        assert_eq!((o.min, o.max, o.factor), (1024, 4096, 4.0));
        assert_eq!((o.iters, o.warmup, o.root, o.ngpus), (7, 2, 1, Some(2)));
        assert_eq!((o.op.as_str(), o.dtype), ("max", "bf16"));
        assert!(!o.check);
        assert_eq!(o.json.as_deref(), Some("out.json"));
        assert_eq!(o.plot.as_deref(), Some("out.svg"));
        assert_eq!(
            run(&["--output_file", "o.json"]).unwrap().json.as_deref(),
            Some("o.json")
        );
        assert_eq!(run(&["--warmup=3"]).unwrap().warmup, 3);
        assert_eq!(
            run(&["--coll", "gather,scatter"]).unwrap().colls,
            ["gather", "scatter"]
        );
        // -c with a number is nccl-tests' check count, with names our list
        assert!(!run(&["-c", "0"]).unwrap().check);
        assert!(run(&["-c", "1"]).unwrap().check);
        assert!(run(&["-c", "5"]).unwrap().check);
        assert!(!run(&["-C", "0"]).unwrap().check);
        let o = run(&["-c", "0"]).unwrap();
        assert_eq!(o.colls, ["all_reduce"], "-c N leaves the default list");
        let o = run(&["-c", "broadcast", "-c", "0"]).unwrap();
        assert!(o.colls == ["broadcast"] && !o.check);
        assert_eq!(run(&["-c", "broadcast"]).unwrap().colls, ["broadcast"]);
        // a repeated option: the last one counts
        assert_eq!(run(&["-n", "3", "-n", "4"]).unwrap().iters, 4);
        assert!(
            run(&["--nonblocking", "--nonblocking"])
                .unwrap()
                .nonblocking
        );
        assert_eq!(run(&["-b8", "-e16"]).unwrap().max, 16);
        assert_eq!(run(&["-dhalf"]).unwrap().dtype, "f16");
        for (t, ours) in [("float", "f32"), ("double", "f64"), ("uint8", "u8")] {
            assert_eq!(run(&["-d", t]).unwrap().dtype, ours);
        }
        assert_eq!(run(&["-d", "f8e4m3"]).unwrap().dtype, "f8e4m3");
        for op in OPS {
            assert_eq!(run(&["-o", op]).unwrap().op, op);
        }
        assert!(
            run(&["-d", "float32"])
                .unwrap_err()
                .contains("unknown datatype \"float32\"")
        );
    }

    #[test]
    fn nccl_tests_options_without_a_counterpart() {
        for ok in [
            &["-t", "1"][..],
            &["--nthreads=1"],
            &["-m", "1"],
            &["-a", "1"],
            &["-N", "1"],
            &["-z0"],
            &["-x", "-1"],
            &["--cta_policy=-1"],
            &["-V", "16"],
            &["--report_cputime", "1"],
            &["--report_cputime", "0"],
        ] {
            assert!(run(ok).is_ok(), "{ok:?}");
        }
        let e = run(&["-t", "2"]).unwrap_err();
        assert!(e.contains("--nthreads") && e.contains("only as 1"), "{e}");
        assert!(run(&["--agg_iters", "4"]).is_err());
        assert!(run(&["-R", "1"]).is_err());
        assert!(run(&["-x", "0"]).unwrap_err().contains("only as -1"));
        assert!(
            run(&["--report_cputime", "2"])
                .unwrap_err()
                .contains("only as 0|1")
        );
        assert!(
            run(&["-a", "one"])
                .unwrap_err()
                .contains("\"one\" is not a number")
        );
        assert!(
            run(&["-o", "mulsum"])
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            run(&["-o", "xor"])
                .unwrap_err()
                .contains("unknown op \"xor\"")
        );
        assert!(
            run(&["-c", "all_reduce,bogus"])
                .unwrap_err()
                .contains("unknown collective \"bogus\"")
        );
    }

    #[test]
    fn help_is_asked_anywhere_and_names_every_option_and_default() {
        for args in [&["--help"][..], &["-h"], &["-n", "3", "--help"]] {
            let e = error(args);
            assert_eq!(e.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(e.exit_code(), 0);
            assert!(!e.use_stderr());
        }
        let help = error(&["--help"]).to_string();
        assert_eq!(help, error(&["-h"]).to_string(), "-h is --help");
        for arg in command().get_arguments() {
            if let Some(l) = arg.get_long() {
                assert!(
                    help.contains(&format!("--{l} ")),
                    "--{l} missing from --help"
                );
            }
            if let Some(s) = arg.get_short() {
                assert!(
                    help.contains(&format!("-{s}, ")),
                    "-{s} missing from --help"
                );
            }
        }
        for text in [
            "--cudagraph",
            "--warmup_iters",
            "--output_file",
            "[default: all_reduce]",
            "[default: 128M]",
            "[default: f32]",
            "[default: 20]",
            "--nthreads <1>",
            "--cta_policy <-1>",
            "--report_cputime <0|1>",
            "bfloat16",
            "sendrecv",
            "avg",
        ] {
            assert!(help.contains(text), "{text} missing from --help:\n{help}");
        }
    }
}
