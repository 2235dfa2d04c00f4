//! `cargo xtask launch -n N [--one-gpu] [--port P] [--grace S] -- CMD [ARGS…]`:
//! a small local launcher. Starts N processes with torchrun's variables
//! (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT`) and a fresh `NCCL_RS_SECRET`, prefixes their output with
//! their rank, and fails if any rank fails. When one rank fails the others get
//! `--grace` seconds (default 30) to finish, then are killed.
//!
//! `--one-gpu` lets N ranks share one GPU: each gets its own `NCCL_HOSTID` and
//! `NCCL_SOCKET_IFNAME=lo` (NCCL then treats them as separate hosts talking
//! over loopback sockets), and `CUDA_VISIBLE_DEVICES` is narrowed to one GPU.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Result;

/// What to launch: `cargo xtask launch`'s arguments.
#[derive(Clone, Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct LaunchPlan {
    /// Number of ranks
    #[arg(short = 'n', long = "nproc", value_name = "N", value_parser = ranks)]
    pub n: usize,
    /// All ranks share the first visible GPU: each its own NCCL_HOSTID, NCCL_SOCKET_IFNAME=lo
    /// [default: rank r uses GPU r]
    #[arg(long)]
    pub one_gpu: bool,
    /// Rendezvous port (0: a free one)
    #[arg(long, value_name = "P", default_value_t = 0)]
    pub port: u16,
    /// Once a rank failed, how long the others may run on before they are killed
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = seconds)]
    pub grace: Duration,
    /// The program and its arguments, started N times
    #[arg(last = true, required = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

const AFTER_HELP: &str = "\
The ranks get torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
MASTER_ADDR=127.0.0.1, MASTER_PORT) and NCCL_RS_SECRET (when set, that one; otherwise a fresh
random one), and LD_LIBRARY_PATH with the NCCL library folder that bench uses first (the machine's
NCCL, or the wheels ci installed in target/nccl-deps).";

fn ranks(s: &str) -> Result<usize> {
    match s.parse() {
        Ok(0) => Err("at least 1 rank".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a number of ranks")),
    }
}

fn seconds(s: &str) -> Result<Duration> {
    s.parse()
        .map(Duration::from_secs)
        .map_err(|_| format!("{s:?} is not a whole number of seconds"))
}

/// How each rank ended, and what it printed (prefixed).
#[derive(Debug)]
pub struct LaunchReport {
    /// Exit status per rank; `None` for a rank that was killed.
    pub status: Vec<Option<ExitStatus>>,
    /// Whether the rank was killed after another rank failed.
    pub killed: Vec<bool>,
    /// Every output line, `[rank r] …`, in arrival order (read by the tests;
    /// the command prints them as they come).
    #[cfg_attr(not(test), allow(dead_code))]
    pub lines: Vec<String>,
}

impl LaunchReport {
    /// Whether every rank exited with status 0.
    pub fn ok(&self) -> bool {
        self.status.iter().all(|s| s.is_some_and(|s| s.success()))
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// A fresh secret: 16 random bytes from the kernel, in hex; an error, never
/// a weaker one, when they cannot be read.
fn secret() -> Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("launch: no random bytes for NCCL_RS_SECRET (/dev/urandom: {e})"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Longest output line kept whole; a longer one comes in pieces of this size.
const MAX_LINE: usize = 64 * 1024;
/// How long the output may go on once every rank has ended (a process a
/// rank left behind that holds its pipes); then its process group is killed.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Every line of `pipe` (bytes that are not UTF-8 replaced, lines longer
/// than [`MAX_LINE`] cut) to `tx`, until it closes: the pipe is read to its
/// end, so the rank never writes into a closed pipe.
fn forward(rank: usize, pipe: Box<dyn Read + Send>, tx: mpsc::Sender<(usize, String)>) {
    let mut r = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r
            .by_ref()
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                // the receiver gone (the launcher gave up): read on, drop
                let _ = tx.send((rank, String::from_utf8_lossy(&line).into_owned()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// SIGKILL to the process group that rank process `pid` leads.
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) takes plain integers and touches no memory of
        // ours. A negative pid names the process group the rank was started
        // as the leader of (`process_group(0)`): its id is not reused while
        // the rank is unreaped, nor, once reaped, while the group still has
        // members (Linux keeps an id that names a group); an empty group
        // gives ESRCH, unless its id was reused since, a race this
        // best-effort cleanup accepts.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

/// Runs the plan; `echo` prints each line as it arrives.
pub fn run(plan: &LaunchPlan, echo: bool) -> Result<LaunchReport> {
    let port = if plan.port == 0 {
        free_port()?
    } else {
        plan.port
    };
    let secret = match std::env::var("NCCL_RS_SECRET") {
        Ok(s) => s,
        Err(_) => secret()?,
    };
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut kids = Vec::new();
    for rank in 0..plan.n {
        let mut c = Command::new(&plan.cmd[0]);
        c.args(&plan.cmd[1..])
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", plan.n.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", plan.n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("NCCL_RS_SECRET", &secret)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // its own process group, so a kill reaches whatever the rank started
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        if plan.one_gpu {
            let first = std::env::var("CUDA_VISIBLE_DEVICES")
                .ok()
                .and_then(|v| v.split(',').next().map(str::to_string))
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "0".into());
            c.env("NCCL_HOSTID", format!("nccl-rs-rank{rank}"))
                .env("NCCL_SOCKET_IFNAME", "lo")
                .env("CUDA_VISIBLE_DEVICES", first);
        }
        let mut child = c
            .spawn()
            .map_err(|e| format!("launch: cannot start {:?}: {e}", plan.cmd[0]))?;
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || forward(rank, pipe, tx));
        }
        kids.push(child);
    }
    drop(tx);
    let mut status: Vec<Option<ExitStatus>> = vec![None; plan.n];
    let mut killed = vec![false; plan.n];
    let mut lines = Vec::new();
    // printed as they come, or (for the tests) kept
    let mut take = |rank: usize, line: String| {
        let l = format!("[rank {rank}] {line}");
        if echo {
            println!("{l}");
        } else {
            lines.push(l);
        }
    };
    let mut failed_at: Option<Instant> = None;
    loop {
        while let Ok((rank, line)) = rx.try_recv() {
            take(rank, line);
        }
        for (r, k) in kids.iter_mut().enumerate() {
            if status[r].is_none() && !killed[r] {
                if let Ok(Some(s)) = k.try_wait() {
                    status[r] = Some(s);
                    if !s.success() && failed_at.is_none() {
                        failed_at = Some(Instant::now());
                    }
                }
            }
        }
        if (0..plan.n).all(|r| status[r].is_some() || killed[r]) {
            break;
        }
        if failed_at.is_some_and(|t| t.elapsed() > plan.grace) {
            for (r, k) in kids.iter_mut().enumerate() {
                if status[r].is_none() {
                    kill_group(k.id());
                    let _ = k.kill();
                    let _ = k.wait();
                    killed[r] = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // the rest of the output: the pipes close once the processes are gone,
    // or processes a rank left behind hold them: then, past DRAIN_LIMIT,
    // their process groups are killed, and past another, the launcher goes
    // on without what they still write
    let mut until = Instant::now() + DRAIN_LIMIT;
    let mut killed_groups = false;
    loop {
        let now = Instant::now();
        if now >= until {
            if killed_groups {
                eprintln!(
                    "launch: output still open {DRAIN_LIMIT:?} after killing the ranks' process \
                     groups (a process left them): not read further"
                );
                break;
            }
            killed_groups = true;
            for k in &kids {
                kill_group(k.id());
            }
            eprintln!(
                "launch: processes the ranks left behind still held their output {DRAIN_LIMIT:?} \
                 after the last rank ended: their process groups were killed"
            );
            until = now + DRAIN_LIMIT;
            continue;
        }
        match rx.recv_timeout(until - now) {
            Ok((rank, line)) => take(rank, line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    Ok(LaunchReport {
        status,
        killed,
        lines,
    })
}

/// `cargo xtask launch …`: runs and summarizes; the exit code says whether
/// every rank succeeded.
pub fn main(plan: &LaunchPlan) -> Result<std::process::ExitCode> {
    let report = run(plan, true)?;
    for (r, s) in report.status.iter().enumerate() {
        match (s, report.killed[r]) {
            (_, true) => eprintln!(
                "launch: rank {r} killed (another rank failed, grace {:?} over)",
                plan.grace
            ),
            (Some(s), _) if s.success() => {}
            (Some(s), _) => eprintln!("launch: rank {r} failed: {s}"),
            (None, _) => eprintln!("launch: rank {r}: no status"),
        }
    }
    if report.ok() {
        eprintln!("launch: all {} ranks succeeded", plan.n);
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        Ok(std::process::ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize, one_gpu: bool, script: &str) -> LaunchPlan {
        LaunchPlan {
            n,
            one_gpu,
            port: 0,
            grace: Duration::from_millis(300),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
        }
    }

    #[test]
    fn ranks_get_torchrun_variables_and_prefixed_output() {
        let r = run(
            &plan(
                3,
                false,
                "echo $RANK/$WORLD_SIZE/$LOCAL_RANK/$MASTER_ADDR/${#NCCL_RS_SECRET}; echo err >&2",
            ),
            false,
        )
        .unwrap();
        assert!(r.ok(), "{r:?}");
        for rank in 0..3 {
            assert!(
                r.lines
                    .iter()
                    .any(|l| l == &format!("[rank {rank}] {rank}/3/{rank}/127.0.0.1/32")),
                "{:?}",
                r.lines
            );
            assert!(
                r.lines.contains(&format!("[rank {rank}] err")),
                "{:?}",
                r.lines
            );
        }
        let ports: Vec<&String> = r.lines.iter().filter(|l| l.contains("127.0.0.1")).collect();
        assert_eq!(ports.len(), 3);
    }

    #[test]
    fn one_gpu_gives_each_rank_its_own_host_id() {
        let r = run(
            &plan(2, true, "echo $NCCL_HOSTID $NCCL_SOCKET_IFNAME"),
            false,
        )
        .unwrap();
        assert!(r.ok());
        assert!(
            r.lines.contains(&"[rank 0] nccl-rs-rank0 lo".to_string()),
            "{:?}",
            r.lines
        );
        assert!(
            r.lines.contains(&"[rank 1] nccl-rs-rank1 lo".to_string()),
            "{:?}",
            r.lines
        );
    }

    #[test]
    fn a_failing_rank_fails_the_launch_and_the_hung_ones_are_killed() {
        let t = Instant::now();
        let r = run(
            &plan(3, false, "if [ $RANK = 1 ]; then exit 7; fi; sleep 30"),
            false,
        )
        .unwrap();
        assert!(!r.ok());
        assert_eq!(r.status[1].and_then(|s| s.code()), Some(7));
        assert!(r.killed[0] && r.killed[2] && !r.killed[1], "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    }

    /// `cargo xtask launch`'s arguments alone.
    fn parse(args: &[&str]) -> std::result::Result<LaunchPlan, clap::Error> {
        #[derive(clap::Parser)]
        struct Launch {
            #[command(flatten)]
            plan: LaunchPlan,
        }
        let args = std::iter::once("launch").chain(args.iter().copied());
        clap::Parser::try_parse_from(args).map(|l: Launch| l.plan)
    }

    #[test]
    fn arguments_and_usage_errors() {
        let p = parse(&[
            "-n",
            "4",
            "--one-gpu",
            "--port",
            "29500",
            "--",
            "prog",
            "-x",
            "--help",
        ])
        .unwrap();
        assert_eq!((p.n, p.one_gpu, p.port), (4, true, 29500));
        assert_eq!(p.cmd, ["prog", "-x", "--help"], "after --: the command's");
        assert_eq!(p.grace, Duration::from_secs(30));
        let p = parse(&["--nproc=2", "--grace", "5", "--", "prog"]).unwrap();
        assert_eq!(
            (p.n, p.one_gpu, p.port, p.grace.as_secs()),
            (2, false, 0, 5)
        );
        for (args, why) in [
            (&["--", "x"][..], "--nproc <N>"),
            (&["-n", "2"], "<CMD>"),
            (
                &["-n", "two", "--", "x"],
                "\"two\" is not a number of ranks",
            ),
            (&["-n", "0", "--", "x"], "at least 1 rank"),
            (
                &["-n", "2", "--grace", "1.5", "--", "x"],
                "not a whole number of seconds",
            ),
            (&["-n", "2", "--port", "99999", "--", "x"], "--port <P>"),
            (&["-n", "2", "prog"], "unexpected argument 'prog'"),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(why), "{args:?}: {e}");
        }
    }
}
