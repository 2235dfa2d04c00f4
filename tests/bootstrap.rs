//! Launcher variables and the TCP rendezvous, on loopback with real sockets
//! and real processes (no GPU needed).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use nccl::{Bootstrap, Error, LaunchInfo, LaunchSource, TcpBootstrap, UniqueId};

fn vars(pairs: &[(&str, &str)]) -> Result<LaunchInfo, Error> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    LaunchInfo::from_vars(&move |k| m.get(k).cloned())
}

/// Environment variables of one case.
type Vars = &'static [(&'static str, &'static str)];
/// rank, world, local rank, root, source.
type Expected = (usize, usize, usize, Option<&'static str>, LaunchSource);

#[test]
fn launcher_variables_table() {
    let ok: &[(Vars, Expected)] = &[
        (
            &[
                ("RANK", "3"),
                ("WORLD_SIZE", "8"),
                ("LOCAL_RANK", "1"),
                ("MASTER_ADDR", "10.0.0.1"),
                ("MASTER_PORT", "29500"),
            ],
            (3, 8, 1, Some("10.0.0.1:29500"), LaunchSource::Torchrun),
        ),
        (
            &[
                ("SLURM_PROCID", "5"),
                ("SLURM_NTASKS", "16"),
                ("SLURM_LOCALID", "5"),
                ("MASTER_ADDR", "node1"),
                ("MASTER_PORT", "1234"),
            ],
            (5, 16, 5, Some("node1:1234"), LaunchSource::Slurm),
        ),
        (
            &[
                ("OMPI_COMM_WORLD_RANK", "0"),
                ("OMPI_COMM_WORLD_SIZE", "2"),
                ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
            ],
            (0, 2, 0, None, LaunchSource::OpenMpi),
        ),
        (
            &[
                ("NCCL_RS_RANK", "1"),
                ("NCCL_RS_WORLD_SIZE", "2"),
                ("NCCL_RS_ROOT", "host:7"),
            ],
            (1, 2, 0, Some("host:7"), LaunchSource::Explicit),
        ),
        // torchrun inside a Slurm allocation: both agree, torchrun's are used
        (
            &[
                ("RANK", "2"),
                ("WORLD_SIZE", "4"),
                ("LOCAL_RANK", "0"),
                ("SLURM_PROCID", "2"),
                ("SLURM_NTASKS", "4"),
                ("SLURM_LOCALID", "0"),
            ],
            (2, 4, 0, None, LaunchSource::Torchrun),
        ),
        // IPv6 master address
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "1"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "::1"),
                ("MASTER_PORT", "80"),
            ],
            (0, 1, 0, Some("[::1]:80"), LaunchSource::Torchrun),
        ),
    ];
    for (env, (rank, world, local, root, source)) in ok {
        let i = vars(env).unwrap_or_else(|e| panic!("{env:?}: {e}"));
        assert_eq!(
            (i.rank, i.world, i.local_rank, i.root.as_deref(), i.source),
            (*rank, *world, *local, *root, *source),
            "{env:?}"
        );
    }
    let bad: &[(Vars, &str, &str)] = &[
        (&[], "RANK/WORLD_SIZE", "no launcher variables"),
        (&[("RANK", "1")], "WORLD_SIZE", "missing"),
        (
            &[("RANK", "1"), ("WORLD_SIZE", "2")],
            "LOCAL_RANK",
            "missing",
        ),
        (
            &[("RANK", "x"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")],
            "RANK",
            "not a non-negative integer",
        ),
        (
            &[("RANK", "2"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")],
            "RANK/WORLD_SIZE",
            "not below the world size",
        ),
        (
            &[("RANK", "0"), ("WORLD_SIZE", "0"), ("LOCAL_RANK", "0")],
            "WORLD_SIZE",
            "at least 1",
        ),
        (
            &[
                ("RANK", "1"),
                ("WORLD_SIZE", "4"),
                ("LOCAL_RANK", "0"),
                ("SLURM_PROCID", "2"),
                ("SLURM_NTASKS", "4"),
            ],
            "RANK/SLURM_PROCID",
            "contradict",
        ),
        (
            &[
                ("RANK", "1"),
                ("WORLD_SIZE", "4"),
                ("LOCAL_RANK", "0"),
                ("OMPI_COMM_WORLD_RANK", "1"),
                ("OMPI_COMM_WORLD_SIZE", "8"),
            ],
            "WORLD_SIZE/OMPI_COMM_WORLD_SIZE",
            "contradict",
        ),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "h"),
            ],
            "MASTER_PORT",
            "missing",
        ),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_PORT", "1"),
            ],
            "MASTER_ADDR",
            "missing",
        ),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "99999"),
            ],
            "MASTER_PORT",
            "not a port",
        ),
    ];
    for (env, var, problem) in bad {
        match vars(env) {
            Err(Error::LaunchEnv { var: v, problem: p }) => {
                assert_eq!(v, *var, "{env:?}");
                assert!(p.contains(problem), "{env:?}: {p}");
            }
            other => panic!("{env:?}: expected LaunchEnv, got {other:?}"),
        }
    }
}

const PEER: &str = env!("CARGO_BIN_EXE_rendezvous-peer");

fn peer(
    addr: &str,
    rank: usize,
    world: usize,
    secret: &str,
    ms: u64,
    n: usize,
) -> std::process::Child {
    Command::new(PEER)
        .args([
            addr,
            &rank.to_string(),
            &world.to_string(),
            secret,
            &ms.to_string(),
            &n.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn out(o: Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A free loopback port (bound, then released).
fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn ranks_as_processes_all_receive_the_same_ids() {
    for (world, n) in [(4, 1), (3, 3)] {
        let addr = free_addr();
        let kids: Vec<_> = (0..world)
            .map(|r| peer(&addr, r, world, "s3cret", 20_000, n))
            .collect();
        let outs: Vec<String> = kids
            .into_iter()
            .map(|k| out(k.wait_with_output().unwrap()))
            .collect();
        assert!(outs[0].starts_with("IDS "), "{outs:?}");
        assert!(outs.iter().all(|o| o == &outs[0]), "{outs:?}");
        assert_eq!(outs[0].trim_start_matches("IDS ").split(',').count(), n);
    }
}

/// Rank 0 in a thread of this process, listening on a free port.
fn root(
    world: usize,
    secret: &str,
    ms: u64,
) -> (
    String,
    std::thread::JoinHandle<Result<Vec<UniqueId>, Error>>,
) {
    let mut b = TcpBootstrap::new(
        "127.0.0.1:0",
        0,
        world,
        secret.as_bytes(),
        Duration::from_millis(ms),
    )
    .unwrap();
    let addr = b.listen().unwrap().to_string();
    let h = std::thread::spawn(move || b.share_ids(Some(vec![UniqueId::new()?])));
    (addr, h)
}

#[test]
fn a_wrong_secret_is_refused() {
    let (addr, h) = root(2, "right", 1500);
    let t = Instant::now();
    let o = out(peer(&addr, 1, 2, "wrong", 5000, 1)
        .wait_with_output()
        .unwrap());
    assert!(
        o.starts_with("ERR Rendezvous") && o.contains("wrong secret"),
        "{o}"
    );
    match h.join().unwrap() {
        Err(Error::RanksMissing {
            missing, world: 2, ..
        }) => assert_eq!(missing, vec![1]),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // and a rank without any secret is refused by a root that has one
    let (addr, h) = root(2, "right", 1000);
    let o = out(peer(&addr, 1, 2, "", 5000, 1).wait_with_output().unwrap());
    assert!(o.contains("wrong secret"), "{o}");
    assert!(h.join().unwrap().is_err());
}

/// Sends raw bytes to the root; returns what the root answered.
fn poke(addr: &str, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(bytes);
    if close_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn garbage_truncated_oversized_and_duplicate_messages_are_rejected() {
    let (addr, h) = root(3, "", 20_000);
    // garbage
    let a = poke(&addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", true);
    assert!(
        a.starts_with(b"NCCLRS01\x01") && String::from_utf8_lossy(&a).contains("bad magic"),
        "{:?}",
        String::from_utf8_lossy(&a)
    );
    // a megabyte of garbage: refused after the first 8 bytes
    let a = poke(&addr, &vec![0xAB; 1 << 20], false);
    assert!(String::from_utf8_lossy(&a).contains("bad magic"));
    // truncated hello
    let a = poke(&addr, b"NCCLRS01\x00\x00", true);
    assert!(
        String::from_utf8_lossy(&a).contains("truncated hello"),
        "{:?}",
        String::from_utf8_lossy(&a)
    );
    // a hello asking for far too many ids
    let mut hello = b"NCCLRS01".to_vec();
    hello.extend_from_slice(&1u32.to_be_bytes());
    hello.extend_from_slice(&3u32.to_be_bytes());
    hello.extend_from_slice(&1_000_000u32.to_be_bytes());
    hello.extend_from_slice(&[0; 16]);
    let a = poke(&addr, &hello, true);
    assert!(
        String::from_utf8_lossy(&a).contains("asks for 1000000 ids"),
        "{:?}",
        String::from_utf8_lossy(&a)
    );
    // a different world size, and a rank out of range
    let mut hello2 = hello.clone();
    hello2[12..16].copy_from_slice(&9u32.to_be_bytes());
    assert!(String::from_utf8_lossy(&poke(&addr, &hello2, true)).contains("world size 9"));
    let mut hello3 = hello.clone();
    hello3[8..12].copy_from_slice(&7u32.to_be_bytes());
    hello3[16..20].copy_from_slice(&1u32.to_be_bytes());
    assert!(String::from_utf8_lossy(&poke(&addr, &hello3, true)).contains("rank 7 is not in 1..3"));
    // two processes claim rank 1: one is refused, the real ranks finish
    let a1 = peer(&addr, 1, 3, "", 20_000, 1);
    std::thread::sleep(Duration::from_millis(300));
    let dup = peer(&addr, 1, 3, "", 20_000, 1);
    let dup_out = out(dup.wait_with_output().unwrap());
    assert!(dup_out.contains("rank 1 has already joined"), "{dup_out}");
    let r2 = peer(&addr, 2, 3, "", 20_000, 1);
    let ids = h.join().unwrap().unwrap();
    for k in [a1, r2] {
        let o = out(k.wait_with_output().unwrap());
        assert_eq!(o, format!("IDS {}", ids[0]));
    }
}

#[test]
fn a_missing_root_fails_within_the_deadline() {
    let addr = free_addr(); // nobody listens there
    let t = Instant::now();
    let mut b = TcpBootstrap::new(&addr, 1, 2, b"", Duration::from_millis(800)).unwrap();
    match b.share_ids(None) {
        Err(Error::RootUnreachable {
            addr: a, waited, ..
        }) => {
            assert_eq!(a, addr);
            assert!(waited <= Duration::from_millis(1600), "{waited:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_millis(1600),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn ranks_missing_at_the_deadline_are_named() {
    let (addr, h) = root(4, "", 800);
    let p = peer(&addr, 2, 4, "", 5000, 1);
    let t = Instant::now();
    match h.join().unwrap() {
        Err(Error::RanksMissing {
            missing, world: 4, ..
        }) => assert_eq!(missing, vec![1, 3]),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_millis(1600));
    let o = out(p.wait_with_output().unwrap());
    assert!(o.contains("gave up"), "{o}");
}

#[test]
fn a_port_in_use_is_reported() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let mut b = TcpBootstrap::new(&addr, 0, 2, b"", Duration::from_secs(1)).unwrap();
    match b.listen() {
        Err(Error::AddrInUse { addr: a }) => assert_eq!(a, addr),
        other => panic!("{other:?}"),
    }
}

#[test]
fn debug_hides_the_secret() {
    let b = TcpBootstrap::new("127.0.0.1:1", 0, 2, b"hunter2", Duration::from_secs(1)).unwrap();
    let d = format!("{b:?}");
    assert!(!d.contains("hunter2") && d.contains("hidden"), "{d}");
}
