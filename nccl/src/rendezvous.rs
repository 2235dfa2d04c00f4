//! Handing the unique id(s) from rank 0 to every rank: the [`Bootstrap`]
//! trait, and [`TcpBootstrap`], an authenticated TCP rendezvous.
//!
//! # Protocol (version 1, all integers big-endian, every message of bounded size)
//!
//! 1. rank r → rank 0, `HELLO`: magic `NCCLRS01`, rank, world, number of ids,
//!    a 16-byte random nonce (36 bytes).
//! 2. rank 0 → r, `CHALLENGE`: magic, rank 0's 16-byte nonce (24 bytes).
//! 3. r → rank 0, `PROOF`: HMAC-SHA256(secret, "nccl-rs client" ‖ both nonces
//!    ‖ rank ‖ world) (32 bytes; with no secret, the same with an empty key).
//! 4. rank 0, once every rank has proven itself, → r, `RESULT`: magic, status
//!    0, the ids (128 bytes each) and HMAC-SHA256(secret, "nccl-rs root" ‖ r's
//!    nonce ‖ ids), so r knows the ids come from a holder of the secret; or
//!    status 1 with a reason of at most 1 KiB.
//!
//! A connection that sends garbage, too little, too much, a wrong proof, a
//! rank already taken or a different world size is answered with a refusal
//! (when possible) and closed; rank 0 keeps waiting for the real ranks until
//! its deadline. Every read has a deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::id::{UNIQUE_ID_BYTES, UniqueId};

const MAGIC: &[u8; 8] = b"NCCLRS01";
const HELLO_LEN: usize = 8 + 4 + 4 + 4 + 16;
const CHALLENGE_LEN: usize = 8 + 16;
const PROOF_LEN: usize = 32;
/// Most ids one rendezvous hands out (`ncclCommInitRankScalable` uses a few).
pub const MAX_IDS: usize = 64;
const MAX_REASON: usize = 1024;
/// Longest a single connection may take to say hello and prove itself.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// A channel over which rank 0 hands the unique id(s) to every rank. Bring
/// your own (an existing key-value store, MPI) by implementing it; the TCP
/// one is [`TcpBootstrap`].
pub trait Bootstrap {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Rank 0 passes `Some(ids)` and every other rank `None`; all get rank
    /// 0's ids back.
    ///
    /// # Errors
    /// Whatever the channel fails with; implementations should have
    /// deadlines.
    fn share_ids(&mut self, ids: Option<Vec<UniqueId>>) -> Result<Vec<UniqueId>>;
}

/// The TCP rendezvous: rank 0 listens on `addr`, the others connect (with
/// retries and backoff) until the deadline.
#[derive(Clone)]
pub struct TcpBootstrap {
    addr: String,
    rank: usize,
    world: usize,
    secret: Vec<u8>,
    timeout: Duration,
    listener: Option<std::sync::Arc<TcpListener>>,
}

impl std::fmt::Debug for TcpBootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpBootstrap")
            .field("addr", &self.addr)
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field(
                "secret",
                &if self.secret.is_empty() {
                    "none"
                } else {
                    "set (hidden)"
                },
            )
            .field("timeout", &self.timeout)
            .finish()
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

fn nonce() -> Result<[u8; 16]> {
    let mut n = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut n))
        .map_err(|e| Error::Rendezvous {
            peer: "local".into(),
            reason: format!("cannot read /dev/urandom for a nonce: {e}"),
        })?;
    Ok(n)
}

fn peer_err(peer: &str, reason: impl Into<String>) -> Error {
    Error::Rendezvous {
        peer: peer.to_string(),
        reason: reason.into(),
    }
}

/// Reads exactly `buf.len()` bytes before `deadline`.
fn read_by(
    s: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    peer: &str,
    what: &str,
) -> Result<()> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    s.set_read_timeout(Some(left))
        .map_err(|e| peer_err(peer, format!("set timeout: {e}")))?;
    s.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => peer_err(
            peer,
            format!("truncated {what}: the connection closed early"),
        ),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            peer_err(peer, format!("no complete {what} within {left:?}"))
        }
        _ => peer_err(peer, format!("reading {what}: {e}")),
    })
}

fn write_all(s: &mut TcpStream, buf: &[u8], peer: &str) -> Result<()> {
    s.set_write_timeout(Some(HANDSHAKE_LIMIT)).ok();
    s.write_all(buf)
        .map_err(|e| peer_err(peer, format!("writing: {e}")))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn refuse(s: &mut TcpStream, reason: &str) {
    let r = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
    let mut msg = Vec::with_capacity(8 + 1 + 2 + r.len());
    msg.extend_from_slice(MAGIC);
    msg.push(1);
    msg.extend_from_slice(&(r.len() as u16).to_be_bytes());
    msg.extend_from_slice(r);
    s.set_write_timeout(Some(Duration::from_secs(1))).ok();
    let _ = s.write_all(&msg);
}

/// A connection that proved itself, waiting for the ids.
struct Joined {
    rank: usize,
    nonce: [u8; 16],
    stream: TcpStream,
    peer: String,
}

impl TcpBootstrap {
    /// A rendezvous at `addr` (`host:port`) for rank `rank` of `world`, giving
    /// up after `timeout`. With a non-empty `secret`, rank 0 refuses peers
    /// that cannot prove they hold it, and peers refuse a rank 0 that cannot.
    ///
    /// # Errors
    /// `InvalidArgument` for `rank >= world` or `world == 0`.
    pub fn new(
        addr: &str,
        rank: usize,
        world: usize,
        secret: &[u8],
        timeout: Duration,
    ) -> Result<TcpBootstrap> {
        if world == 0 || rank >= world {
            return Err(Error::invalid(
                "TcpBootstrap::new",
                "rank",
                format!("< world ({world})"),
                rank,
            ));
        }
        Ok(TcpBootstrap {
            addr: addr.to_string(),
            rank,
            world,
            secret: secret.to_vec(),
            timeout,
            listener: None,
        })
    }

    /// For rank 0: binds the listening socket now (so a port in use is
    /// reported at once, and peers can connect before [`Bootstrap::share_ids`]).
    ///
    /// # Errors
    /// [`Error::AddrInUse`], or `Rendezvous` for other bind failures.
    pub fn listen(&mut self) -> Result<SocketAddr> {
        if let Some(l) = &self.listener {
            return l
                .local_addr()
                .map_err(|e| peer_err(&self.addr, e.to_string()));
        }
        let l = TcpListener::bind(&self.addr).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => Error::AddrInUse {
                addr: self.addr.clone(),
            },
            _ => peer_err(&self.addr, format!("cannot listen: {e}")),
        })?;
        let a = l
            .local_addr()
            .map_err(|e| peer_err(&self.addr, e.to_string()))?;
        self.listener = Some(std::sync::Arc::new(l));
        Ok(a)
    }

    fn serve(&mut self, ids: Vec<UniqueId>) -> Result<Vec<UniqueId>> {
        if ids.is_empty() || ids.len() > MAX_IDS {
            return Err(Error::invalid(
                "share_ids",
                "ids.len()",
                format!("1 ..= {MAX_IDS}"),
                ids.len(),
            ));
        }
        let start = Instant::now();
        let deadline = start + self.timeout;
        self.listen()?;
        let listener = self.listener.clone().expect("listening");
        listener
            .set_nonblocking(true)
            .map_err(|e| peer_err(&self.addr, e.to_string()))?;
        let (tx, rx) = mpsc::channel::<std::result::Result<Joined, String>>();
        let mut joined: Vec<Option<Joined>> = (0..self.world).map(|_| None).collect();
        let mut missing = self.world - 1;
        while missing > 0 {
            if Instant::now() >= deadline {
                let missing: Vec<usize> =
                    (1..self.world).filter(|&r| joined[r].is_none()).collect();
                for j in joined.iter_mut().flatten() {
                    refuse(
                        &mut j.stream,
                        "rank 0 gave up: not every rank joined in time",
                    );
                }
                return Err(Error::RanksMissing {
                    missing,
                    world: self.world,
                    waited: start.elapsed(),
                });
            }
            match listener.accept() {
                Ok((stream, from)) => {
                    let (tx, secret, world, nids) =
                        (tx.clone(), self.secret.clone(), self.world, ids.len());
                    let conn_deadline = deadline.min(Instant::now() + HANDSHAKE_LIMIT);
                    std::thread::spawn(move || {
                        let _ = tx.send(handshake(
                            stream,
                            from.to_string(),
                            &secret,
                            world,
                            nids,
                            conn_deadline,
                        ));
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(peer_err(&self.addr, format!("accept: {e}"))),
            }
            while let Ok(r) = rx.try_recv() {
                match r {
                    Ok(mut j) if joined[j.rank].is_some() => {
                        refuse(
                            &mut j.stream,
                            &format!("rank {} has already joined", j.rank),
                        );
                    }
                    Ok(j) => {
                        let r = j.rank;
                        joined[r] = Some(j);
                        missing -= 1;
                    }
                    // a peer that failed the handshake was refused and closed
                    Err(_) => {}
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut payload = Vec::with_capacity(ids.len() * UNIQUE_ID_BYTES);
        for id in &ids {
            payload.extend_from_slice(id.as_bytes());
        }
        for j in joined.iter_mut().flatten() {
            let tag = mac(&self.secret, &[b"nccl-rs root", &j.nonce, &payload]);
            let mut msg = Vec::with_capacity(8 + 1 + 4 + payload.len() + 32);
            msg.extend_from_slice(MAGIC);
            msg.push(0);
            msg.extend_from_slice(&(ids.len() as u32).to_be_bytes());
            msg.extend_from_slice(&payload);
            msg.extend_from_slice(&tag);
            write_all(&mut j.stream, &msg, &j.peer)?;
        }
        Ok(ids)
    }

    fn join(&mut self, nids: usize) -> Result<Vec<UniqueId>> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let addrs: Vec<SocketAddr> = self
            .addr
            .to_socket_addrs()
            .map_err(|e| peer_err(&self.addr, format!("cannot resolve: {e}")))?
            .collect();
        let mut pause = Duration::from_millis(10);
        let mut last = String::from("no address");
        let mut stream = loop {
            let mut got = None;
            for a in &addrs {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match TcpStream::connect_timeout(a, left.min(Duration::from_secs(2))) {
                    Ok(s) => {
                        got = Some(s);
                        break;
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if let Some(s) = got {
                break s;
            }
            if Instant::now() + pause >= deadline {
                return Err(Error::RootUnreachable {
                    addr: self.addr.clone(),
                    waited: start.elapsed(),
                    last,
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(500));
        };
        let peer = self.addr.clone();
        let my_nonce = nonce()?;
        let mut hello = Vec::with_capacity(HELLO_LEN);
        hello.extend_from_slice(MAGIC);
        hello.extend_from_slice(&(self.rank as u32).to_be_bytes());
        hello.extend_from_slice(&(self.world as u32).to_be_bytes());
        hello.extend_from_slice(&(nids as u32).to_be_bytes());
        hello.extend_from_slice(&my_nonce);
        write_all(&mut stream, &hello, &peer)?;
        let mut ch = [0u8; CHALLENGE_LEN];
        read_by(&mut stream, &mut ch[..8], deadline, &peer, "challenge")?;
        if &ch[..8] != MAGIC {
            return Err(peer_err(
                &peer,
                "not an nccl-rs rendezvous (bad magic in the challenge)",
            ));
        }
        read_by(&mut stream, &mut ch[8..], deadline, &peer, "challenge")?;
        let root_nonce = &ch[8..24];
        let proof = mac(
            &self.secret,
            &[b"nccl-rs client", root_nonce, &my_nonce, &hello[8..16]],
        );
        write_all(&mut stream, &proof, &peer)?;
        // the answer comes once every rank has joined
        let mut head = [0u8; 9];
        read_by(
            &mut stream,
            &mut head,
            deadline,
            &peer,
            "result (rank 0 answers once every rank has joined)",
        )?;
        if &head[..8] != MAGIC {
            return Err(peer_err(&peer, "bad magic in the result"));
        }
        if head[8] != 0 {
            let mut len = [0u8; 2];
            read_by(&mut stream, &mut len, deadline, &peer, "refusal")?;
            let len = (u16::from_be_bytes(len) as usize).min(MAX_REASON);
            let mut reason = vec![0u8; len];
            read_by(&mut stream, &mut reason, deadline, &peer, "refusal")?;
            return Err(peer_err(
                &peer,
                format!(
                    "rank 0 refused rank {}: {}",
                    self.rank,
                    String::from_utf8_lossy(&reason)
                ),
            ));
        }
        let mut n = [0u8; 4];
        read_by(&mut stream, &mut n, deadline, &peer, "result")?;
        let n = u32::from_be_bytes(n) as usize;
        if n != nids {
            return Err(peer_err(
                &peer,
                format!("rank 0 sent {n} ids, expected {nids}"),
            ));
        }
        let mut payload = vec![0u8; n * UNIQUE_ID_BYTES + 32];
        read_by(&mut stream, &mut payload, deadline, &peer, "ids")?;
        let (ids, tag) = payload.split_at(n * UNIQUE_ID_BYTES);
        if !same(tag, &mac(&self.secret, &[b"nccl-rs root", &my_nonce, ids])) {
            return Err(peer_err(
                &peer,
                "rank 0 could not prove it holds the shared secret",
            ));
        }
        ids.chunks(UNIQUE_ID_BYTES)
            .map(UniqueId::from_bytes)
            .collect()
    }
}

/// Rank 0's side of one connection: hello, challenge, proof. Refuses and
/// closes on any problem.
fn handshake(
    mut s: TcpStream,
    peer: String,
    secret: &[u8],
    world: usize,
    nids: usize,
    deadline: Instant,
) -> std::result::Result<Joined, String> {
    let r = (|| -> Result<Joined> {
        let mut hello = [0u8; HELLO_LEN];
        read_by(&mut s, &mut hello[..8], deadline, &peer, "hello")?;
        if &hello[..8] != MAGIC {
            return Err(peer_err(&peer, "bad magic: not an nccl-rs rank"));
        }
        read_by(&mut s, &mut hello[8..], deadline, &peer, "hello")?;
        let (rank, w, n) = (
            u32_at(&hello, 8) as usize,
            u32_at(&hello, 12) as usize,
            u32_at(&hello, 16) as usize,
        );
        if w != world {
            return Err(peer_err(
                &peer,
                format!("world size {w} differs from rank 0's {world}"),
            ));
        }
        if rank == 0 || rank >= world {
            return Err(peer_err(&peer, format!("rank {rank} is not in 1..{world}")));
        }
        if n != nids {
            return Err(peer_err(
                &peer,
                format!("asks for {n} ids, rank 0 has {nids}"),
            ));
        }
        let mut client_nonce = [0u8; 16];
        client_nonce.copy_from_slice(&hello[20..36]);
        let root_nonce = nonce()?;
        let mut ch = Vec::with_capacity(CHALLENGE_LEN);
        ch.extend_from_slice(MAGIC);
        ch.extend_from_slice(&root_nonce);
        write_all(&mut s, &ch, &peer)?;
        let mut proof = [0u8; PROOF_LEN];
        read_by(&mut s, &mut proof, deadline, &peer, "proof")?;
        if !same(
            &proof,
            &mac(
                secret,
                &[b"nccl-rs client", &root_nonce, &client_nonce, &hello[8..16]],
            ),
        ) {
            return Err(peer_err(&peer, "wrong secret"));
        }
        // anything more before the result is a protocol violation
        s.set_nonblocking(true).ok();
        let mut extra = [0u8; 1];
        let oversized = matches!(s.read(&mut extra), Ok(n) if n > 0);
        s.set_nonblocking(false).ok();
        if oversized {
            return Err(peer_err(&peer, "sent more than the protocol allows"));
        }
        Ok(Joined {
            rank,
            nonce: client_nonce,
            stream: s.try_clone().map_err(|e| peer_err(&peer, e.to_string()))?,
            peer: peer.clone(),
        })
    })();
    r.map_err(|e| {
        refuse(&mut s, &e.to_string());
        e.to_string()
    })
}

impl Bootstrap for TcpBootstrap {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    /// One id per rank 0's `ids` (usually one); other ranks expect one.
    fn share_ids(&mut self, ids: Option<Vec<UniqueId>>) -> Result<Vec<UniqueId>> {
        let n = ids.as_ref().map_or(1, Vec::len);
        self.share_n_ids(n, ids)
    }
}

impl TcpBootstrap {
    /// Like [`Bootstrap::share_ids`] for several ids (`ncclCommInitRankScalable`):
    /// non-root ranks say how many they expect.
    ///
    /// # Errors
    /// As `share_ids`.
    pub fn share_n_ids(&mut self, n: usize, ids: Option<Vec<UniqueId>>) -> Result<Vec<UniqueId>> {
        match (self.rank, ids) {
            (0, Some(ids)) if ids.len() != n => {
                Err(Error::invalid("share_n_ids", "ids.len()", n, ids.len()))
            }
            (0, Some(ids)) if self.world == 1 => Ok(ids),
            (0, Some(ids)) => self.serve(ids),
            (0, None) => Err(Error::invalid(
                "share_n_ids",
                "ids",
                "Some(ids) at rank 0",
                "None",
            )),
            (_, Some(_)) => Err(Error::invalid(
                "share_n_ids",
                "ids",
                "None away from rank 0",
                "Some(ids)",
            )),
            (_, None) if n == 0 || n > MAX_IDS => Err(Error::invalid(
                "share_n_ids",
                "n",
                format!("1 ..= {MAX_IDS}"),
                n,
            )),
            (_, None) => self.join(n),
        }
    }
}
