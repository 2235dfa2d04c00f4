//! One rank of a rendezvous, as its own process, for the bootstrap tests (no
//! GPU needed):
//!
//! - `rendezvous-peer [--nofile N] [--handshake-ms M] [--job ID] ADDR RANK WORLD SECRET TIMEOUT_MS NIDS`:
//!   the TCP rendezvous; an empty SECRET means none (any bytes work, also
//!   not UTF-8). Rank 0 makes the ids and prints `LISTEN <addr>` first.
//!   `--nofile` lowers this process's file descriptor limit first; `--job`
//!   sets the job id.
//! - `rendezvous-peer --launcher TIMEOUT_MS`: what `init_from_launcher` does
//!   before creating a communicator (launcher variables, then torchrun's store,
//!   `NCCL_RS_STORE` or the TCP rendezvous); prints `SOURCE <launcher> RANK r WORLD w`.
//! - `rendezvous-peer --survivors LOST EPOCH TIMEOUT_MS`: the survivors of
//!   the launch in the environment after losing the ranks LOST (`1,3`)
//!   meet ([`LaunchInfo::survivors_bootstrap`]); prints `NEW <rank>/<world>`
//!   and new rank 0 makes the id.
//! - `rendezvous-peer --no-threads`: with this process's address space
//!   limited so that no thread can start, a store client for a host name
//!   (its lookup runs on a thread) and a store server; prints `LOOKUP <error>`
//!   and `SERVER <error>`.
//! - `rendezvous-peer --store-server ADDR [DATA_MB]`: a `TcpStoreServer`;
//!   prints `LISTEN <addr>`, serves until standard input closes. With
//!   `DATA_MB`, the process's data segment (`RLIMIT_DATA`: heap and private
//!   memory) is limited to that: a server that grows past it dies instead
//!   of taking the machine's memory.
//! - `rendezvous-peer --store-basic ADDR`: the client script of
//!   `tests/fixtures/tcpstore/harness.cpp` (`basic`), printing the same lines.
//!
//! Prints `IDS <hex>,<hex>…` or `ERR <error>`; exits 0 or 1.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use nccl::UniqueId;
use nccl::bootstrap::{LaunchInfo, LaunchOptions, TcpBootstrap, TcpStore, TcpStoreServer};

fn ids_line(ids: &[UniqueId]) -> String {
    format!(
        "IDS {}",
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn say(line: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

fn store_basic(addr: &str) -> nccl::Result<()> {
    let mut s = TcpStore::connect(addr, Duration::from_secs(20))?;
    let id: Vec<u8> = (0..128u8).collect();
    s.set("nccl-rs/run7/0/uid", &id)?;
    let v = s.get("nccl-rs/run7/0/uid")?;
    say(&format!("get len={} {}", v.len(), hex(&v)));
    say(&format!("add {}", s.add("nccl-rs/run7/0/joined", 1)?));
    say(&format!("add {}", s.add("nccl-rs/run7/0/joined", -3)?));
    say(&format!(
        "check {}",
        s.check(&["nccl-rs/run7/0/uid"])? as u8
    ));
    say(&format!(
        "check {}",
        s.check(&["nccl-rs/run7/0/uid", "absent"])? as u8
    ));
    for (e, d) in [(&b""[..], &b"a"[..]), (b"x", b"b"), (b"a", b"b")] {
        let v = s.compare_set("cas", e, d)?;
        say(&format!("cas len={} {}", v.len(), hex(&v)));
    }
    say(&format!("delete {}", s.delete_key("cas")? as u8));
    say(&format!("numkeys {}", s.num_keys()?));
    s.wait(&["nccl-rs/run7/0/uid"])?;
    s.set_timeout(Duration::from_millis(300));
    match s.wait(&["never"]) {
        Ok(()) => say("wait returned?!"),
        Err(e) => say(&format!("wait timeout: {e}")),
    }
    s.set_timeout(Duration::from_secs(20));
    say(&format!("numkeys {}", s.num_keys()?));
    Ok(())
}

fn limit(what: libc::__rlimit_resource_t, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: setrlimit reads the struct it is given; lowering a limit of
    // this process only.
    let r = unsafe { libc::setrlimit(what, &lim) };
    assert_eq!(r, 0, "setrlimit");
}

fn main() -> std::process::ExitCode {
    nccl_rs_tests::log_to_stderr();
    let mut a: Vec<OsString> = std::env::args_os().skip(1).collect();
    let text = |o: &OsString| o.to_string_lossy().into_owned();
    let r = match a.first().map(text).as_deref() {
        Some("--launcher") => (|| {
            let ms: u64 = text(&a[1]).parse().expect("TIMEOUT_MS");
            let info = LaunchInfo::from_env()?;
            say(&format!(
                "SOURCE {:?} RANK {} WORLD {}",
                info.source, info.rank, info.world
            ));
            let opts = LaunchOptions {
                timeout: Duration::from_millis(ms),
                ..LaunchOptions::default()
            };
            nccl::bootstrap::share_launch_id(&info, &opts).map(|id| vec![id])
        })(),
        Some("--survivors") => (|| {
            let lost: Vec<usize> = text(&a[1])
                .split(',')
                .map(|r| r.parse().expect("LOST"))
                .collect();
            let epoch: u64 = text(&a[2]).parse().expect("EPOCH");
            let ms: u64 = text(&a[3]).parse().expect("TIMEOUT_MS");
            let info = LaunchInfo::from_env()?;
            let opts = LaunchOptions {
                timeout: Duration::from_millis(ms),
                ..LaunchOptions::default()
            };
            let mut b = info.survivors_bootstrap(&lost, epoch, &opts)?;
            say(&format!("NEW {}/{}", b.rank(), b.world_size()));
            let ids = (b.rank() == 0).then(UniqueId::new).transpose()?;
            b.share_ids(ids.map(|i| vec![i]))
        })(),
        Some("--no-threads") => {
            // what the process maps now, and 1 MiB more: a thread's stack
            // (2 MiB) does not fit
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmSize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap();
            limit(libc::RLIMIT_AS, (kb + 1024) << 10);
            let lookup = TcpStore::connect("localhost:1", Duration::from_secs(2)).map(|_| ());
            let server = TcpStoreServer::bind("127.0.0.1:0").map(|_| ());
            say(&format!("LOOKUP {lookup:?}"));
            say(&format!("SERVER {server:?}"));
            return std::process::ExitCode::SUCCESS;
        }
        Some("--store-server") => {
            if let Some(mb) = a.get(2) {
                let mb: u64 = text(mb).parse().expect("DATA_MB");
                limit(libc::RLIMIT_DATA, mb << 20);
            }
            let s = match TcpStoreServer::bind(&text(&a[1])) {
                Ok(s) => s,
                Err(e) => {
                    say(&format!("ERR {e:?}"));
                    return std::process::ExitCode::FAILURE;
                }
            };
            say(&format!("LISTEN {}", s.local_addr()));
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            return std::process::ExitCode::SUCCESS;
        }
        Some("--store-basic") => match store_basic(&text(&a[1])) {
            Ok(()) => return std::process::ExitCode::SUCCESS,
            Err(e) => Err(e),
        },
        _ => {
            let mut handshake = None;
            let mut job = String::new();
            while a.first().is_some_and(|x| text(x).starts_with("--")) {
                let flag = text(&a.remove(0));
                let v = text(&a.remove(0));
                let n = || -> u64 { v.parse().expect("a number") };
                match flag.as_str() {
                    "--nofile" => limit(libc::RLIMIT_NOFILE, n()),
                    "--handshake-ms" => handshake = Some(Duration::from_millis(n())),
                    "--job" => job = v.clone(),
                    f => panic!("unknown flag {f}"),
                }
            }
            if a.len() != 6 {
                eprintln!(
                    "usage: rendezvous-peer [--nofile N] [--handshake-ms M] [--job ID] ADDR RANK WORLD SECRET TIMEOUT_MS NIDS"
                );
                return std::process::ExitCode::from(2);
            }
            let (rank, world, ms, n): (usize, usize, u64, usize) = (
                text(&a[1]).parse().unwrap(),
                text(&a[2]).parse().unwrap(),
                text(&a[4]).parse().unwrap(),
                text(&a[5]).parse().unwrap(),
            );
            let secret = a[3].clone().into_vec();
            let addr = text(&a[0]);
            (|| {
                let mut b = TcpBootstrap::new(
                    &addr,
                    rank,
                    world,
                    (!secret.is_empty()).then_some(&secret[..]),
                    Duration::from_millis(ms),
                )?
                .job_id(&job);
                if let Some(h) = handshake {
                    b = b.handshake_timeout(h);
                }
                if rank == 0 {
                    say(&format!("LISTEN {}", b.listen()?));
                    let ids = (0..n)
                        .map(|_| UniqueId::new())
                        .collect::<nccl::Result<Vec<_>>>()?;
                    b.share_n_ids(n, Some(ids))
                } else {
                    b.share_n_ids(n, None)
                }
            })()
        }
    };
    match r {
        Ok(ids) => {
            say(&ids_line(&ids));
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            say(&format!("ERR {e:?}"));
            std::process::ExitCode::FAILURE
        }
    }
}
