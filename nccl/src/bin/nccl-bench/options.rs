//! The command line: our options and nccl-tests' spellings of the same
//! (`src/common.cu` of NVIDIA/nccl-tests), with their defaults.

use crate::elem;
use nccl::ReduceOp;

/// `nccl-bench --help` (also shown by `cargo xtask bench --help`).
pub const USAGE: &str = include_str!("usage.txt");

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

/// Graph mode's default: the captured loop of `iters` operations is replayed
/// this many times (after one untimed replay) between the two events.
pub const GRAPH_REPLAYS: usize = 10;

/// nccl-tests options with no counterpart here: short, long, and the one
/// value that means what nccl-bench does anyway.
const FIXED: &[(&str, &str, i64)] = &[
    ("-t", "--nthreads", 1),
    ("-m", "--agg_iters", 1),
    ("-N", "--run_cycles", 1),
    ("-p", "--parallel_init", 0),
    ("-z", "--blocking", 0),
    ("-y", "--stream_null", 0),
    ("-T", "--timeout", 0),
    ("-S", "--report_timestamps", 0),
    ("-a", "--average", 1),
    ("-R", "--local_register", 0),
    ("-x", "--cta_policy", -1),
    ("-D", "--device_implementation", 0),
    ("-V", "--device_cta_count", 16),
    ("-M", "--memory", 0),
    ("-u", "--unalign", 0),
    ("-I", "--per_iter_timing", 0),
    ("-K", "--per_iter_skip", 0),
];

/// Short options that take a value (and so may carry it attached: `-b8`;
/// `-G`'s is optional).
const SHORT_WITH_VALUE: &str = "cbefinwdorgGCJ";

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
    /// `--buffers slice|nccl`: `CudaSlice` or `NcclBuffer` (the `buffers`
    /// module; `BufKind` parses the value).
    pub buffers: crate::buffers::BufKind,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            colls: vec!["all_reduce".into()],
            min: 8,
            max: 128 << 20,
            factor: 2.0,
            step: 0,
            iters: 20,
            warmup: 5,
            dtype: "f32",
            op: "sum".into(),
            root: 0,
            ngpus: None,
            graph: false,
            graph_replays: GRAPH_REPLAYS,
            check: true,
            json: None,
            plot: None,
            progress: true,
            event_tracking: true,
            nonblocking: false,
            no_connect: false,
            buffers: crate::buffers::BufKind::Slice,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Opts),
    Help,
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
    match num.parse::<f64>() {
        Ok(f) if f >= 0.0 && (f * mul as f64).fract() == 0.0 => Ok((f * mul as f64) as usize),
        _ => Err(format!("{s:?} is not a size")),
    }
}

pub fn op_of(s: &str) -> Result<ReduceOp<'static>, String> {
    Ok(match s {
        "sum" => ReduceOp::Sum,
        "prod" => ReduceOp::Prod,
        "max" => ReduceOp::Max,
        "min" => ReduceOp::Min,
        "avg" => ReduceOp::Avg,
        "mulsum" | "all" => {
            return Err(format!(
                "op {s:?} (nccl-tests) is not supported: one of sum prod max min avg"
            ));
        }
        other => return Err(format!("unknown op {other:?}: one of sum prod max min avg")),
    })
}

fn colls(list: &str) -> Result<Vec<String>, String> {
    let colls: Vec<String> = if list == "all" {
        ALL.iter().map(|s| s.to_string()).collect()
    } else {
        list.split(',').map(str::to_string).collect()
    };
    for c in &colls {
        if !ALL.contains(&c.as_str()) {
            return Err(format!("unknown collective {c:?}"));
        }
    }
    Ok(colls)
}

fn int(name: &str, v: &str) -> Result<i64, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{name} takes a number, not {v:?}"))
}

fn count(name: &str, v: &str) -> Result<usize, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{name} takes a number, not {v:?}"))
}

/// Splits `--name=value` and `-xVALUE` (for short options that take a value).
fn split(arg: &str) -> (&str, Option<&str>) {
    if arg.starts_with("--") {
        if let Some((name, value)) = arg.split_once('=') {
            return (name, Some(value));
        }
    } else if arg.len() > 2
        && arg.starts_with('-')
        && arg.is_char_boundary(2)
        && (SHORT_WITH_VALUE.contains(&arg[1..2])
            || FIXED.iter().any(|(short, _, _)| *short == &arg[..2]))
    {
        return (&arg[..2], Some(&arg[2..]));
    }
    (arg, None)
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut o = Opts::default();
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let (name, inline) = split(a);
        let mut inline = inline.map(str::to_string);
        let mut v = || {
            inline
                .take()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name {
            "-c" => {
                // ours: a list of collectives; nccl-tests': --check N
                let l = v()?;
                match l.trim().parse::<i64>() {
                    Ok(n) => o.check = n != 0,
                    Err(_) => o.colls = colls(&l)?,
                }
            }
            "--coll" => o.colls = colls(&v()?)?,
            "-b" | "--minbytes" => o.min = bytes(&v()?)?,
            "-e" | "--maxbytes" => o.max = bytes(&v()?)?,
            "-f" | "--stepfactor" => o.factor = v()?.parse().map_err(|_| "-f takes a number")?,
            "-i" | "--stepbytes" => o.step = bytes(&v()?)?,
            "-n" | "--iters" => o.iters = count("-n", &v()?)?,
            "-w" | "--warmup" | "--warmup_iters" => o.warmup = count("-w", &v()?)?,
            "-d" | "--datatype" => {
                let d = v()?;
                o.dtype = elem::canonical(&d).ok_or_else(|| {
                    let names: Vec<&str> = elem::DATATYPES.iter().map(|(ours, _)| *ours).collect();
                    format!(
                        "unknown datatype {d:?}: one of {} (or nccl-tests' names)",
                        names.join(" ")
                    )
                })?;
            }
            "-o" | "--op" => {
                let op = v()?;
                op_of(&op)?;
                o.op = op;
            }
            "-r" | "--root" => o.root = v()?.parse().map_err(|_| "-r takes a rank")?,
            "-g" | "--ngpus" => o.ngpus = Some(count("-g", &v()?)?),
            "-G" | "--graph" => {
                // a number may follow: nccl-tests' count of graph launches
                let n = match inline.take() {
                    Some(n) => Some(count("-G", &n)?),
                    None => match it.peek().map(|n| n.trim().parse::<usize>()) {
                        Some(Ok(n)) => {
                            it.next();
                            Some(n)
                        }
                        _ => None,
                    },
                };
                o.graph = n != Some(0);
                o.graph_replays = n.filter(|&n| n > 0).unwrap_or(GRAPH_REPLAYS);
            }
            "--cudagraph" => {
                let n = count("--cudagraph", &v()?)?;
                o.graph = n > 0;
                o.graph_replays = if n > 0 { n } else { GRAPH_REPLAYS };
            }
            "-C" | "--check" => o.check = int(name, &v()?)? != 0,
            "--json" | "-J" | "--output_file" => o.json = Some(v()?),
            "--plot" => o.plot = Some(v()?),
            "--no-progress" => o.progress = false,
            "--no-event-tracking" => o.event_tracking = false,
            "--nonblocking" => o.nonblocking = true,
            "--no-connect" => o.no_connect = true,
            // the buffers the collectives use (the `buffers` module)
            "--buffers" => o.buffers = v()?.parse()?,
            "--report_cputime" => {
                let n = int(name, &v()?)?;
                if !(0..=1).contains(&n) {
                    return Err(format!("--report_cputime takes 0 or 1, not {n}"));
                }
            }
            "-h" | "--help" => return Ok(Command::Help),
            other => {
                let Some((short, long, want)) = FIXED
                    .iter()
                    .find(|(short, long, _)| other == *short || other == *long)
                else {
                    return Err(format!("unknown option {other:?}\n{}", USAGE.trim_end()));
                };
                let got = int(other, &v()?)?;
                if got != *want {
                    return Err(format!(
                        "{short}/{long} {got}: nccl-tests' option is accepted only as {want} \
                         (what nccl-bench does)"
                    ));
                }
            }
        }
    }
    if o.iters == 0
        || o.min == 0
        || o.max < o.min
        || (o.step == 0 && o.factor <= 1.0)
        || o.ngpus == Some(0)
    {
        return Err(format!("bad sizes or counts\n{}", USAGE.trim_end()));
    }
    if o.graph {
        o.event_tracking = false;
    }
    Ok(Command::Run(o))
}

/// The sizes of the sweep, in bytes.
pub fn sizes(o: &Opts) -> Vec<usize> {
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
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Opts, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args)? {
            Command::Run(o) => Ok(o),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults() {
        let o = run(&[]).unwrap();
        assert_eq!(o.colls, ["all_reduce"]);
        assert_eq!((o.min, o.max, o.factor, o.step), (8, 128 << 20, 2.0, 0));
        assert_eq!(
            (o.iters, o.warmup, o.dtype, o.op.as_str()),
            (20, 5, "f32", "sum")
        );
        assert!(o.check && o.event_tracking && o.progress && !o.graph && !o.nonblocking);
        assert_eq!(o.ngpus, None);
    }

    #[test]
    fn sizes_and_factors() {
        assert_eq!(bytes("1G").unwrap(), 1 << 30);
        assert_eq!(bytes("64K").unwrap(), 65536);
        assert_eq!(bytes("1.5K").unwrap(), 1536);
        assert!(bytes("x").is_err());
        assert!(bytes("0.3").is_err());
        let o = run(&["-b", "8", "-e", "64", "-f", "2"]).unwrap();
        assert_eq!(sizes(&o), [8, 16, 32, 64]);
        let o = run(&["-b", "8", "-e", "40", "-i", "16"]).unwrap();
        assert_eq!(sizes(&o), [8, 24, 40]);
        assert!(run(&["-b", "1M", "-e", "1K"]).is_err());
        assert!(run(&["-n", "0"]).is_err());
    }

    #[test]
    fn graph_mode() {
        let o = run(&["-c", "all", "-G"]).unwrap();
        assert_eq!(o.colls.len(), 9);
        assert!(o.graph && o.graph_replays == GRAPH_REPLAYS);
        assert!(!o.event_tracking, "-G implies --no-event-tracking");
        let o = run(&["-G", "3", "-n", "5"]).unwrap();
        assert!(o.graph && o.graph_replays == 3 && o.iters == 5);
        let o = run(&["-G", "-n", "5"]).unwrap();
        assert!(o.graph && o.graph_replays == GRAPH_REPLAYS && o.iters == 5);
        let o = run(&["-G", "0"]).unwrap();
        assert!(!o.graph && o.event_tracking);
        let o = run(&["--cudagraph", "4"]).unwrap();
        assert!(o.graph && o.graph_replays == 4);
        assert!(!run(&["--cudagraph=0"]).unwrap().graph);
        let o = run(&["--no-event-tracking", "--nonblocking"]).unwrap();
        assert!(!o.event_tracking && !o.graph && o.nonblocking);
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
        ])
        .unwrap();
        assert_eq!((o.min, o.max, o.factor), (1024, 4096, 4.0));
        assert_eq!((o.iters, o.warmup, o.root, o.ngpus), (7, 2, 1, Some(2)));
        assert_eq!((o.op.as_str(), o.dtype), ("max", "bf16"));
        assert!(!o.check);
        assert_eq!(o.json.as_deref(), Some("out.json"));
        // -c with a number is nccl-tests' check count, with names our list
        assert!(!run(&["-c", "0"]).unwrap().check);
        assert!(run(&["-c", "1"]).unwrap().check);
        assert_eq!(run(&["-c", "broadcast"]).unwrap().colls, ["broadcast"]);
        assert_eq!(run(&["-b8", "-e16"]).unwrap().max, 16);
        assert_eq!(run(&["-dhalf"]).unwrap().dtype, "f16");
        for (t, ours) in [("float", "f32"), ("double", "f64"), ("uint8", "u8")] {
            assert_eq!(run(&["-d", t]).unwrap().dtype, ours);
        }
        assert_eq!(run(&["-d", "f8e4m3"]).unwrap().dtype, "f8e4m3");
        assert!(
            run(&["-d", "float32"])
                .unwrap_err()
                .contains("unknown datatype")
        );
    }

    #[test]
    fn nccl_tests_options_without_a_counterpart() {
        for ok in [
            &["-t", "1"][..],
            &["--nthreads=1"],
            &["-m", "1"],
            &["-a", "1"],
            &["-z0"],
            &["-x", "-1"],
            &["--report_cputime", "1"],
        ] {
            assert!(run(ok).is_ok(), "{ok:?}");
        }
        let e = run(&["-t", "2"]).unwrap_err();
        assert!(
            e.contains("-t/--nthreads 2") && e.contains("only as 1"),
            "{e}"
        );
        assert!(run(&["--agg_iters", "4"]).is_err());
        assert!(run(&["-R", "1"]).is_err());
        assert!(run(&["--report_cputime", "2"]).is_err());
        assert!(
            run(&["-o", "mulsum"])
                .unwrap_err()
                .contains("not supported")
        );
        assert!(run(&["--bogus"]).unwrap_err().contains("unknown option"));
        assert!(
            run(&["-c", "all_reduce,bogus"])
                .unwrap_err()
                .contains("unknown collective")
        );
    }

    #[test]
    fn help() {
        let args = vec!["-n".to_string(), "3".into(), "--help".into()];
        assert!(matches!(parse(&args), Ok(Command::Help)));
        assert!(matches!(parse(&["-h".to_string()]), Ok(Command::Help)));
        // every option the parser knows is in the text
        for (short, long, _) in FIXED {
            assert!(USAGE.contains(&format!("{short}/{long}")), "{long}");
        }
        for o in [
            "--cudagraph",
            "--warmup_iters",
            "--output_file",
            "--no-progress",
        ] {
            assert!(USAGE.contains(o), "{o}");
        }
    }
}
