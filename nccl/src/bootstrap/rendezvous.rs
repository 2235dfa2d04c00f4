//! Handing the unique id(s) from rank 0 to every rank: the [`Bootstrap`]
//! trait, and [`TcpBootstrap`], an authenticated and encrypted TCP
//! rendezvous.
//!
//! # Protocol (version 4; integers big-endian; every message of bounded size)
//!
//! Before any connection, every rank computes the job's identity `J`, the
//! SHA-256 of `nccl-rs rendezvous v4` ‖ world size (u64) ‖ the job id
//! ([`TcpBootstrap::job_id`]; from [`LaunchInfo`](crate::bootstrap::LaunchInfo):
//! the run id, restart count and launcher's job id) ‖ the rendezvous address
//! (the `addr` every rank is given, each of the last two as a u64 length and
//! the bytes), and the rendezvous key `M` = Argon2id(secret, salt `J`; 19 MiB,
//! 2 passes, 1 lane; 32 bytes). Each guess at the secret from a captured
//! handshake costs that much, and a rank of another job (another world size,
//! run, or address) holds another key even with the same secret.
//!
//! 1. rank r → rank 0, `HELLO`: magic `NCCLRS04`, a 32-byte random nonce `cn`.
//! 2. rank 0 → r, `CHALLENGE`: magic, a 32-byte random nonce `rn`.
//! 3. Both derive two keys with HKDF-SHA256 from `M` (salt `J`, info
//!    `client to root` or `root to client` ‖ `cn` ‖ `rn`): fresh keys for
//!    every connection, one per direction. Every sealed message below has
//!    magic ‖ `cn` ‖ `rn` ‖ `J` as associated data.
//! 4. r → rank 0, `JOIN`: XChaCha20-Poly1305 under the client key, a fresh
//!    random 24-byte nonce, of rank (u64), world size (u64) and number of ids
//!    (u32). Only a holder of the secret, of this job, can make one that
//!    opens: it proves both, bound to this connection's nonces (no replay).
//!    A `JOIN` that does not open gets `UNPROVEN`, a length of 0 (four zero
//!    bytes, unsealed: it tells nothing a closed connection would not), and
//!    the connection is closed; the rank stops with an error naming the
//!    secret and the job's identity.
//! 5. rank 0 → r, at once, `ACK` (or a refusal, below): length (u32), then a
//!    sealed message under the root key: status 2. That it opens proves rank
//!    0 holds the secret and belongs to this job.
//! 6. rank 0, once every rank has joined, → r, `RESULT`: length (u32), then a
//!    sealed message under the root key: status 0, the number of ids (u32) and
//!    the ids (128 bytes each); or status 1 and a reason. The ids never
//!    travel in clear.
//!
//! With [`TcpBootstrap::port_range`], rank 0 listens on the first free port
//! of a range, and the other ranks try each in turn, a few seconds each,
//! until one acknowledges their join: no port but the job's own needs to be
//! free (the survivors of a lost rank meet this way,
//! [`LaunchInfo::survivors_bootstrap`](crate::bootstrap::LaunchInfo::survivors_bootstrap)).
//! There, an answer that does not open (another program on a port, an echo
//! service, another job's rank 0) means "try the next port".
//!
//! Rank 0 serves every connection from the calling thread (no thread per
//! connection) with non-blocking sockets and `poll(2)`: at most
//! [`MAX_PENDING`] connections are still proving themselves (the oldest that
//! has made the least progress is dropped to make room), each has one
//! deadline for its whole handshake ([`TcpBootstrap::handshake_timeout`]),
//! `accept` errors such as running out of file descriptors are survived with a
//! backoff. A connection that fails to prove the secret gets only
//! `UNPROVEN`; one dropped before its `JOIN` was read (to make room, or past
//! its deadline) tries again until the rendezvous's deadline; refusals (another world size, a rank taken) go only to peers that
//! proved it, sealed, and never state rank 0's own values.
//!
//! Without a secret the same messages are sealed under a key everyone can
//! derive: nothing is authenticated, and anyone who reaches rank 0's port can
//! take a rank and read the id, which is a bearer token for the communicator.
//! That mode logs a warning (`log::warn!`) once per process, and two live
//! connections claiming one rank end the rendezvous with an error at rank 0
//! (nothing can tell which is real).

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::base::error::{Error, Result};
use crate::bootstrap::net::{self, IoFail};
use crate::bootstrap::secret::{MIN_SECRET_LEN, Secret};
use crate::comm::{Bootstrap, UNIQUE_ID_BYTES, UniqueId};

const MAGIC: &[u8; 8] = b"NCCLRS04";
/// Argon2id's memory (KiB), passes and lanes for the rendezvous key: the
/// first of OWASP's recommended settings.
const KDF_MEMORY_KIB: u32 = 19 * 1024;
const KDF_PASSES: u32 = 2;
const KDF_LANES: u32 = 1;
const NONCE: usize = 32;
const HELLO_LEN: usize = 8 + NONCE;
const CHALLENGE_LEN: usize = 8 + NONCE;
/// AEAD nonce and tag around every sealed message.
const SEAL: usize = 24 + 16;
const JOIN_PLAIN: usize = 8 + 8 + 4;
const JOIN_LEN: usize = SEAL + JOIN_PLAIN;
/// Most ids one rendezvous hands out (`ncclCommInitRankScalable` uses a few).
pub const MAX_IDS: usize = 64;
/// Longest refusal reason sent or shown.
const MAX_REASON: usize = 256;
/// Largest sealed result: status, count, the ids.
const MAX_FRAME: usize = SEAL + 1 + 4 + MAX_IDS * UNIQUE_ID_BYTES;
/// Most connections rank 0 keeps while they prove themselves.
pub const MAX_PENDING: usize = 128;
/// Largest world size: NCCL counts ranks in an `int`.
pub const MAX_WORLD: usize = i32::MAX as usize;
/// Default limit for one connection's handshake at rank 0.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// With several ports, how long a rank gives one of them to answer before
/// it tries the next.
const CANDIDATE_LIMIT: Duration = Duration::from_secs(3);
/// How long one refusal may take to write (the peer reads it, or times out
/// on its own).
const REFUSAL_WAIT: Duration = Duration::from_millis(500);
/// How long the refusals of every joined rank may take together, when rank
/// 0 gives up on all of them.
const REFUSALS_WAIT: Duration = Duration::from_secs(2);
/// Status of rank 0's acknowledgement of a join.
const ACK: u8 = 2;
/// Rank 0's answer to a `JOIN` that does not open: a frame length of 0.
const UNPROVEN: [u8; 4] = [0; 4];
/// Accepts per turn of rank 0's loop, so that connections already accepted
/// are served between bursts.
const ACCEPTS_PER_TURN: usize = 16;

/// Checks `rank < world <= MAX_WORLD` (NCCL's `int`) for `op`.
pub(crate) fn check_rank_world(op: &'static str, rank: usize, world: usize) -> Result<()> {
    if world == 0 || world > MAX_WORLD {
        return Err(Error::invalid(
            op,
            "world",
            format!("1 ..= {MAX_WORLD}"),
            world,
        ));
    }
    crate::base::contract::rank_arg(op, "rank", rank, world)
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// The loud, once-per-process warning of a rendezvous without a secret.
pub(crate) fn warn_no_secret(what: &str) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        log::warn!(
            "{what} runs without a shared secret (NCCL_RS_SECRET unset): anyone \
             who can reach its port can take a rank and read the NCCL unique id, a bearer token \
             that lets them join the communicator. Set NCCL_RS_SECRET to the same random value on \
             every rank (e.g. `export NCCL_RS_SECRET=$(head -c 32 /dev/urandom | base64)`)."
        );
    }
}

/// The TCP rendezvous: rank 0 listens on `addr`, the others connect (with
/// retries and backoff) until the deadline.
#[derive(Clone)]
pub struct TcpBootstrap {
    addr: String,
    bind: Option<String>,
    rank: usize,
    world: usize,
    secret: Option<Secret>,
    job: String,
    ports: u16,
    timeout: Duration,
    handshake: Duration,
    listener: Option<Arc<TcpListener>>,
}

impl std::fmt::Debug for TcpBootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpBootstrap")
            .field("addr", &self.addr)
            .field("bind", &self.bind)
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("secret", &self.secret)
            .field("job", &self.job)
            .field("ports", &self.ports)
            .field("timeout", &self.timeout)
            .field("handshake", &self.handshake)
            .finish()
    }
}

pub(crate) fn peer_err(peer: &str, reason: impl Into<String>) -> Error {
    Error::Rendezvous {
        peer: peer.to_string(),
        reason: reason.into(),
    }
}

/// The job's identity `J` (module docs): what every rank of one rendezvous
/// must agree on.
fn job_hash(world: usize, job: &str, addr: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"nccl-rs rendezvous v4");
    h.update((world as u64).to_be_bytes());
    for part in [job.as_bytes(), addr.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The rendezvous key `M` and the identity `J` it was made for.
struct Master {
    key: Zeroizing<[u8; 32]>,
    job: [u8; 32],
}

impl Master {
    /// Argon2id of the secret salted with `job` (module docs); without a
    /// secret, a key everyone can make.
    fn derive(secret: Option<&Secret>, job: [u8; 32]) -> Result<Master> {
        let mut key = Zeroizing::new([0u8; 32]);
        if let Some(s) = secret {
            let kdf = |e: argon2::Error| peer_err("local", format!("key derivation: {e}"));
            let params = argon2::Params::new(KDF_MEMORY_KIB, KDF_PASSES, KDF_LANES, Some(32))
                .map_err(kdf)?;
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(s.expose(), &job, &mut key[..])
                .map_err(kdf)?;
        }
        Ok(Master { key, job })
    }
}

/// The two ciphers of one connection.
struct Keys {
    c2r: XChaCha20Poly1305,
    r2c: XChaCha20Poly1305,
    aad: Vec<u8>,
}

impl Keys {
    fn derive(m: &Master, cn: &[u8; NONCE], rn: &[u8; NONCE]) -> Keys {
        let hk = Hkdf::<Sha256>::new(Some(&m.job), &m.key[..]);
        let key = |label: &[u8]| {
            let mut k = Zeroizing::new([0u8; 32]);
            // 32 bytes is far below HKDF-SHA256's limit of 255 * 32.
            let _ = hk.expand_multi_info(&[label, cn, rn], &mut k[..]);
            XChaCha20Poly1305::new(&(*k).into())
        };
        let mut aad = MAGIC.to_vec();
        aad.extend_from_slice(cn);
        aad.extend_from_slice(rn);
        aad.extend_from_slice(&m.job);
        Keys {
            c2r: key(b"client to root"),
            r2c: key(b"root to client"),
            aad,
        }
    }
}

/// Nonce ‖ ciphertext of `plain`.
fn seal(c: &XChaCha20Poly1305, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
    let n = net::random::<24>().map_err(|e| peer_err("local", format!("no random bytes: {e}")))?;
    let ct = c
        .encrypt(XNonce::from_slice(&n), Payload { msg: plain, aad })
        .map_err(|_| peer_err("local", "encryption failed"))?;
    let mut out = n.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// The plaintext of a sealed message, `None` if it does not open.
fn open(c: &XChaCha20Poly1305, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL {
        return None;
    }
    let (n, ct) = sealed.split_at(24);
    c.decrypt(XNonce::from_slice(n), Payload { msg: ct, aad })
        .ok()
}

/// A sealed result frame: length, then the sealed message.
fn frame(k: &Keys, plain: &[u8]) -> Result<Vec<u8>> {
    let sealed = seal(&k.r2c, &k.aad, plain)?;
    let mut f = (sealed.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&sealed);
    Ok(f)
}

fn refusal(k: &Keys, reason: &str) -> Result<Vec<u8>> {
    let r = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
    let mut plain = vec![1u8];
    plain.extend_from_slice(r);
    frame(k, &plain)
}

enum Stage {
    /// Waiting for the hello.
    Hello,
    /// Challenge sent, waiting for the sealed join.
    Join(Keys),
    /// Proved the secret and holds `rank`; waits for the ids.
    Joined(usize, Keys),
}

struct Conn {
    s: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    deadline: Instant,
    buf: Vec<u8>,
    stage: Stage,
}

impl Conn {
    fn need(&self) -> usize {
        match self.stage {
            Stage::Hello => HELLO_LEN,
            Stage::Join(_) => JOIN_LEN,
            Stage::Joined(..) => 0,
        }
    }
    fn progress(&self) -> u8 {
        match self.stage {
            Stage::Hello => 0,
            Stage::Join(_) => 1,
            Stage::Joined(..) => 2,
        }
    }
}

/// What one turn of reading did to a connection.
enum Step {
    Keep,
    Drop,
    /// Authenticated, valid, for rank r: rank 0 decides about duplicates.
    Claims(usize),
}

impl TcpBootstrap {
    /// A rendezvous at `addr` (`host:port`) for rank `rank` of `world`, giving
    /// up after `timeout` (`Duration::MAX`: no practical limit). With a
    /// secret, rank 0 only admits peers that prove they hold it, and peers
    /// only accept ids from a rank 0 that proves it; the ids travel
    /// encrypted. Without one (`None`), see the module docs: a warning is
    /// logged once.
    ///
    /// Every rank must give the same `addr` (the address the others connect
    /// to, as text: it is part of the job's identity), and the same
    /// [`job_id`](TcpBootstrap::job_id). Rank 0 may give port 0 (its
    /// [`listen`](TcpBootstrap::listen) picks one): the port it gets counts.
    ///
    /// # Errors
    /// `InvalidArgument` for `rank >= world`, `world == 0`, `world` above
    /// [`MAX_WORLD`], or a secret shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn new(
        addr: &str,
        rank: usize,
        world: usize,
        secret: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<TcpBootstrap> {
        TcpBootstrap::with_secret(addr, rank, world, secret.map(Secret::from), timeout)
    }

    /// [`TcpBootstrap::new`] with a [`Secret`] (taken, not copied).
    ///
    /// # Errors
    /// As [`TcpBootstrap::new`].
    pub fn with_secret(
        addr: &str,
        rank: usize,
        world: usize,
        secret: Option<Secret>,
        timeout: Duration,
    ) -> Result<TcpBootstrap> {
        check_rank_world("TcpBootstrap::new", rank, world)?;
        if let Some(s) = secret.as_ref().filter(|s| s.len() < MIN_SECRET_LEN) {
            return Err(Error::invalid(
                "TcpBootstrap::new",
                "secret",
                format!(
                    "None or at least {MIN_SECRET_LEN} bytes (random ones: \
                     `head -c 32 /dev/urandom | base64`)"
                ),
                format!("{} bytes", s.len()),
            ));
        }
        Ok(TcpBootstrap {
            addr: addr.to_string(),
            bind: None,
            rank,
            world,
            secret,
            job: String::new(),
            ports: 1,
            timeout,
            handshake: HANDSHAKE_LIMIT,
            listener: None,
        })
    }

    /// Rank 0 listens on `bind` (e.g. `0.0.0.0:29500`) instead of `addr`,
    /// which stays the address the other ranks connect to.
    pub fn bind_to(mut self, bind: &str) -> TcpBootstrap {
        self.bind = Some(bind.to_string());
        self
    }

    /// The job this rendezvous belongs to (default empty): bound into every
    /// key, so that a rank of another job (a leftover process on a reused
    /// port) cannot join even with the same secret. Every rank must give the
    /// same; [`LaunchInfo::bootstrap`](crate::bootstrap::LaunchInfo::bootstrap)
    /// gives [`LaunchInfo::job`](crate::bootstrap::LaunchInfo::job).
    pub fn job_id(mut self, job: &str) -> TcpBootstrap {
        self.job = job.to_string();
        self
    }

    /// Meet at the first free port of `tries` (at least 1) from `addr`'s:
    /// rank 0 listens on the first of them it can bind, the other ranks try
    /// each in turn (a few seconds each) until one acknowledges their join
    /// with this rendezvous's keys. So no port but `addr`'s own needs to be
    /// free; every rank must give the same `tries`. `addr` then needs a port
    /// other than 0, with room for the range below 65536.
    pub fn port_range(mut self, tries: u16) -> TcpBootstrap {
        self.ports = tries.max(1);
        self
    }

    /// Gives up `timeout` after the start of the next exchange (what
    /// [`TcpBootstrap::new`] set).
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// How long rank 0 gives one connection to prove itself (default 10 s,
    /// never past the rendezvous deadline).
    pub fn handshake_timeout(mut self, limit: Duration) -> TcpBootstrap {
        self.handshake = limit;
        self
    }

    /// For rank 0: binds the listening socket now (so a port in use is
    /// reported at once, and peers can connect before [`Bootstrap::share_ids`]).
    /// With [`port_range`](TcpBootstrap::port_range), the first free port of
    /// the range.
    ///
    /// # Errors
    /// [`Error::AddrInUse`] (every port of the range in use), or `Rendezvous`
    /// for other bind failures; `InvalidArgument` for a range without room.
    pub fn listen(&mut self) -> Result<SocketAddr> {
        let at = self.bind.clone().unwrap_or_else(|| self.addr.clone());
        if let Some(l) = &self.listener {
            return l.local_addr().map_err(|e| peer_err(&at, e.to_string()));
        }
        let ports = self.candidates()?;
        let host = at.rsplit_once(':').map_or(at.as_str(), |(h, _)| h);
        // a name is looked up once, within the rendezvous's deadline
        let addrs = net::resolve_by(&at, net::deadline_after(self.timeout))
            .map_err(|e| peer_err(&at, e))?;
        for (i, port) in ports.iter().enumerate() {
            let (here, at_port) = if ports.len() == 1 {
                (at.clone(), addrs.clone())
            } else {
                let v = addrs.iter().map(|a| SocketAddr::new(a.ip(), *port));
                (format!("{host}:{port}"), v.collect())
            };
            match TcpListener::bind(&at_port[..]) {
                Ok(l) => {
                    let a = l.local_addr().map_err(|e| peer_err(&here, e.to_string()))?;
                    if i > 0 {
                        log::info!(
                            "rendezvous of {} ranks at {here}: the ports before it are in use",
                            self.world
                        );
                    }
                    self.listener = Some(Arc::new(l));
                    return Ok(a);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
                Err(e) => return Err(peer_err(&here, format!("cannot listen: {e}"))),
            }
        }
        Err(Error::AddrInUse {
            addr: match ports[..] {
                [_] => at,
                _ => format!("{host}:{}-{}", ports[0], ports[ports.len() - 1]),
            },
        })
    }

    /// The address in the job's identity: `addr`, with the port rank 0's
    /// listener got when `addr` asks for port 0.
    fn identity_addr(&self) -> String {
        if let (Some(host), None, Some(l)) =
            (self.addr.strip_suffix(":0"), &self.bind, &self.listener)
        {
            if let Ok(a) = l.local_addr() {
                return format!("{host}:{}", a.port());
            }
        }
        self.addr.clone()
    }

    /// The rendezvous key of this job (the slow step: once per rendezvous).
    fn master(&self) -> Result<Master> {
        Master::derive(
            self.secret.as_ref(),
            job_hash(self.world, &self.job, &self.identity_addr()),
        )
    }

    /// Rank 0's side of one connection after `poll` said it is readable:
    /// reads what the stage needs (never more), and acts on a complete
    /// message.
    fn advance(&self, m: &Master, c: &mut Conn, nids: usize) -> Step {
        use std::io::Read;
        if let Stage::Joined(..) = c.stage {
            // anything, or the end, from a joined rank ends it
            let mut b = [0u8; 1];
            return match c.s.read(&mut b) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Step::Keep,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Step::Keep,
                _ => Step::Drop,
            };
        }
        let need = c.need();
        let mut chunk = [0u8; JOIN_LEN];
        let want = need - c.buf.len();
        match c.s.read(&mut chunk[..want]) {
            Ok(0) => return Step::Drop,
            Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                return Step::Keep;
            }
            Err(_) => return Step::Drop,
        }
        if c.buf.len() < need {
            return Step::Keep;
        }
        let msg = std::mem::take(&mut c.buf);
        match std::mem::replace(&mut c.stage, Stage::Hello) {
            Stage::Hello => {
                if &msg[..8] != MAGIC {
                    return Step::Drop;
                }
                let Ok(rn) = net::random::<NONCE>() else {
                    return Step::Drop;
                };
                let mut cn = [0u8; NONCE];
                cn.copy_from_slice(&msg[8..]);
                let mut ch = MAGIC.to_vec();
                ch.extend_from_slice(&rn);
                // 40 bytes into a fresh socket's buffer: all or nothing
                if !matches!(std::io::Write::write(&mut c.s, &ch), Ok(n) if n == ch.len()) {
                    return Step::Drop;
                }
                c.stage = Stage::Join(Keys::derive(m, &cn, &rn));
                Step::Keep
            }
            Stage::Join(k) => {
                let Some(p) = open(&k.c2r, &k.aad, &msg) else {
                    // not a holder of the secret, or of another job: only
                    // that (4 bytes into a socket that has sent its last
                    // message: all or nothing; a rank that misses them
                    // tries again)
                    let _ = std::io::Write::write(&mut c.s, &UNPROVEN);
                    return Step::Drop;
                };
                let rank = u64::from_be_bytes(p[0..8].try_into().expect("8 bytes"));
                let world = u64::from_be_bytes(p[8..16].try_into().expect("8 bytes"));
                let n = u32::from_be_bytes(p[16..20].try_into().expect("4 bytes"));
                let problem = if world != self.world as u64 {
                    Some(format!("world size {world} differs from rank 0's"))
                } else if rank == 0 || rank >= world {
                    Some(format!("rank {rank} is not one rank 0 waits for"))
                } else if n as usize != nids {
                    Some(format!("asks for {n} ids; rank 0 shares another number"))
                } else {
                    None
                };
                if let Some(p) = problem {
                    self.send_refusal(c, &k, &p);
                    return Step::Drop;
                }
                c.stage = Stage::Joined(rank as usize, k);
                Step::Claims(rank as usize)
            }
            Stage::Joined(..) => unreachable!("handled above"),
        }
    }

    fn send_refusal(&self, c: &mut Conn, k: &Keys, reason: &str) {
        self.send_refusal_by(c, k, reason, net::deadline_after(REFUSAL_WAIT));
    }

    /// A refusal to `c`, written by `until` at the latest (best effort: the
    /// peer learns why, or times out on its own).
    fn send_refusal_by(&self, c: &mut Conn, k: &Keys, reason: &str, until: Instant) {
        if let Ok(f) = refusal(k, reason) {
            let _ = c.s.set_nonblocking(false);
            let _ = net::write_all_by(&mut c.s, &f, until);
        }
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
        let deadline = net::deadline_after(self.timeout);
        let here = self.bind.clone().unwrap_or_else(|| self.addr.clone());
        // a connection per rank stays open until every rank has joined:
        // descriptors for them beside those open now, and a few to spare
        // (strangers are evicted when descriptors run out)
        let open_now = std::fs::read_dir("/proc/self/fd").map_or(64, Iterator::count) as u64;
        let need = open_now + (self.world as u64 - 1) + 16;
        if let Err((soft, hard)) = net::fd_limit_at_least(need) {
            return Err(peer_err(
                &here,
                format!(
                    "rank 0 keeps a connection to each of the {} other ranks until all have \
                     joined: it needs about {need} open files and this process may open {soft} \
                     (hard limit {hard}); raise the limit (`ulimit -n`, or the launcher's)",
                    self.world - 1
                ),
            ));
        }
        self.listen()?;
        let listener = self.listener.clone().expect("listening");
        let master = self.master()?;
        listener
            .set_nonblocking(true)
            .map_err(|e| peer_err(&here, e.to_string()))?;
        let nids = ids.len();
        let mut conns: Vec<Conn> = Vec::new();
        let mut joined: HashSet<usize> = HashSet::new();
        let mut accept_pause: Option<Instant> = None;
        let mut backoff = Duration::from_millis(5);
        let want = self.world - 1;
        while joined.len() < want {
            let now = Instant::now();
            if now >= deadline {
                self.refuse_all(&mut conns, "rank 0 gave up: not every rank joined in time");
                let missing: Vec<usize> = (1..self.world)
                    .filter(|r| !joined.contains(r))
                    .take(32)
                    .collect();
                return Err(Error::RanksMissing {
                    missing,
                    missing_count: want - joined.len(),
                    world: self.world,
                    waited: start.elapsed(),
                });
            }
            // handshakes past their own deadline are dropped
            conns.retain(|c| matches!(c.stage, Stage::Joined(..)) || c.deadline > now);
            let accepting = accept_pause.is_none_or(|t| now >= t);
            let next = conns
                .iter()
                .filter(|c| !matches!(c.stage, Stage::Joined(..)))
                .map(|c| c.deadline)
                .chain([deadline])
                .chain(accept_pause.filter(|_| !accepting))
                .min()
                .unwrap_or(deadline);
            let wait = next
                .saturating_duration_since(now)
                .clamp(Duration::from_millis(1), Duration::from_millis(100));
            let mut fds: Vec<(&dyn std::os::fd::AsRawFd, bool)> =
                conns.iter().map(|c| (&c.s as _, false)).collect();
            if accepting {
                fds.push((&*listener as _, false));
            }
            let ready = net::poll(&fds, wait).map_err(|e| peer_err(&here, format!("poll: {e}")))?;
            drop(fds);
            // connections, from the back so that swap_remove keeps indices
            for i in (0..conns.len()).rev() {
                let r = ready[i];
                if !(r.readable || r.closed) {
                    continue;
                }
                match self.advance(&master, &mut conns[i], nids) {
                    Step::Keep => {}
                    Step::Drop => {
                        let c = conns.swap_remove(i);
                        if let Stage::Joined(rank, _) = c.stage {
                            joined.remove(&rank); // it died: the rank is free again
                        }
                    }
                    Step::Claims(rank) => {
                        if joined.insert(rank) {
                            // acknowledged at once: 45 bytes into a socket
                            // whose peer waits for them, all or nothing
                            let ack = match &conns[i].stage {
                                Stage::Joined(_, k) => frame(k, &[ACK]).ok(),
                                _ => None,
                            };
                            let sent = ack.is_some_and(|f| {
                                matches!(std::io::Write::write(&mut conns[i].s, &f), Ok(n) if n == f.len())
                            });
                            if !sent {
                                joined.remove(&rank);
                                conns.swap_remove(i);
                            }
                            continue;
                        }
                        if self.secret.is_none() {
                            let err = peer_err(
                                &conns[i].peer.to_string(),
                                format!(
                                    "two live connections claim rank {rank} and there is no \
                                     secret to tell the real one: set NCCL_RS_SECRET on every rank"
                                ),
                            );
                            self.refuse_all(&mut conns, "rank 0 gave up: a rank was claimed twice");
                            return Err(err);
                        }
                        let mut c = conns.swap_remove(i);
                        if let Stage::Joined(_, k) = std::mem::replace(&mut c.stage, Stage::Hello) {
                            self.send_refusal(
                                &mut c,
                                &k,
                                &format!("rank {rank} has already joined"),
                            );
                        }
                    }
                }
            }
            if accepting && ready.last().is_some_and(|r| r.readable || r.closed) {
                for _ in 0..ACCEPTS_PER_TURN {
                    match listener.accept() {
                        Ok((s, peer)) => {
                            backoff = Duration::from_millis(5);
                            if s.set_nonblocking(true).is_err() {
                                continue;
                            }
                            let _ = s.set_nodelay(true);
                            if conns.len() - joined.len() >= MAX_PENDING {
                                evict(&mut conns);
                            }
                            let now = Instant::now();
                            let mut c = Conn {
                                s,
                                peer,
                                accepted: now,
                                deadline: deadline
                                    .min(now.checked_add(self.handshake).unwrap_or(deadline)),
                                buf: Vec::with_capacity(HELLO_LEN),
                                stage: Stage::Hello,
                            };
                            // its hello is often there already
                            if !matches!(self.advance(&master, &mut c, nids), Step::Drop) {
                                conns.push(c);
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::Interrupted
                                    | std::io::ErrorKind::ConnectionAborted
                                    | std::io::ErrorKind::ConnectionReset
                            ) => {}
                        Err(e) => {
                            // out of descriptors or memory (or stranger): make
                            // room, wait a little, and go on serving
                            if net::is_resource_error(&e) {
                                evict(&mut conns);
                            }
                            accept_pause = Some(Instant::now() + backoff);
                            backoff = (backoff * 2).min(Duration::from_millis(200));
                            break;
                        }
                    }
                }
            }
        }
        let mut payload = vec![0u8];
        payload.extend_from_slice(&(nids as u32).to_be_bytes());
        for id in &ids {
            payload.extend_from_slice(id.as_bytes());
        }
        let until = deadline.min(net::deadline_after(HANDSHAKE_LIMIT));
        for i in 0..conns.len() {
            let c = &mut conns[i];
            let Stage::Joined(_, k) = std::mem::replace(&mut c.stage, Stage::Hello) else {
                continue;
            };
            let sent = frame(&k, &payload).and_then(|f| {
                c.s.set_nonblocking(false)
                    .map_err(|e| peer_err(&c.peer.to_string(), e.to_string()))?;
                net::write_all_by(&mut c.s, &f, until)
                    .map_err(|e| peer_err(&c.peer.to_string(), format!("sending the ids: {e}")))
            });
            if let Err(e) = sent {
                // this rank will not join NCCL's init: the ranks not sent
                // the ids yet learn it now rather than at their timeouts
                let reason = format!("rank 0 gave up: {e}");
                self.refuse_all(&mut conns[i + 1..], &reason);
                return Err(e);
            }
        }
        Ok(ids)
    }

    /// Refuses every joined connection of `conns`, all within one
    /// [`REFUSALS_WAIT`].
    fn refuse_all(&self, conns: &mut [Conn], reason: &str) {
        let until = net::deadline_after(REFUSALS_WAIT);
        for c in conns {
            if let Stage::Joined(_, k) = std::mem::replace(&mut c.stage, Stage::Hello) {
                self.send_refusal_by(c, &k, reason, until);
            }
        }
    }

    fn join(&mut self, nids: usize) -> Result<Vec<UniqueId>> {
        let start = Instant::now();
        let deadline = net::deadline_after(self.timeout);
        let peer = self.addr.clone();
        let candidates = self.candidates()?;
        let addrs = net::resolve_by(&self.addr, deadline).map_err(|e| peer_err(&peer, e))?;
        let master = self.master()?;
        let unreachable = |last: String| Error::RootUnreachable {
            addr: peer.clone(),
            waited: start.elapsed(),
            last,
        };
        let mut pause = Duration::from_millis(10);
        let (mut s, keys) = if candidates.len() == 1 {
            // a busy rank 0 may drop a connection before its challenge: retry
            loop {
                let s = net::connect_by(&addrs, deadline).map_err(unreachable)?;
                match self.attempt(s, &master, nids, deadline, false) {
                    Ok(x) => break x,
                    Err(Attempt::Retry(e)) => {
                        if net::left(deadline).is_some_and(|l| l > pause) {
                            std::thread::sleep(pause);
                            pause = (pause * 2).min(Duration::from_millis(500));
                            continue;
                        }
                        return Err(unreachable(e));
                    }
                    Err(Attempt::NotHere(e) | Attempt::Fail(e)) => return Err(e),
                }
            }
        } else {
            // each port in turn, a few seconds each, until one is this
            // rendezvous's rank 0 (it proves it by acknowledging our proof)
            let per = self.handshake.min(CANDIDATE_LIMIT);
            let mut last = vec![String::from("not tried"); candidates.len()];
            'found: loop {
                for (i, port) in candidates.iter().enumerate() {
                    if net::left(deadline).is_none() {
                        return Err(unreachable(summary(&candidates, &last)));
                    }
                    let until = deadline.min(Instant::now() + per);
                    let at: Vec<SocketAddr> = addrs
                        .iter()
                        .map(|a| SocketAddr::new(a.ip(), *port))
                        .collect();
                    let s = match net::connect_once(&at, until) {
                        Ok(s) => s,
                        Err(e) => {
                            last[i] = e;
                            continue;
                        }
                    };
                    match self.attempt(s, &master, nids, until, true) {
                        Ok(x) => break 'found x,
                        Err(Attempt::Retry(e)) => last[i] = e,
                        Err(Attempt::NotHere(e)) => last[i] = e.to_string(),
                        Err(Attempt::Fail(e)) => return Err(e),
                    }
                }
                match net::left(deadline) {
                    Some(l) if l > pause => std::thread::sleep(pause),
                    _ => return Err(unreachable(summary(&candidates, &last))),
                }
                pause = (pause * 2).min(Duration::from_millis(500));
            }
        };
        // the answer comes once every rank has joined
        let p = read_frame(&mut s, &keys, deadline)
            .map_err(|e| self.frame_err(e, "answer (rank 0 answers once every rank has joined)"))?;
        match p.first() {
            Some(0) if p.len() >= 5 => {}
            Some(1) => return Err(self.refused(&p)),
            _ => return Err(peer_err(&peer, "malformed answer")),
        }
        let n = u32::from_be_bytes(p[1..5].try_into().expect("4 bytes")) as usize;
        let body = &p[5..];
        if n != nids || body.len() != n * UNIQUE_ID_BYTES {
            return Err(peer_err(
                &peer,
                format!("rank 0 sent {n} ids, expected {nids}"),
            ));
        }
        body.chunks(UNIQUE_ID_BYTES)
            .map(UniqueId::from_bytes)
            .collect()
    }

    /// The ports to meet at: `addr`'s, and the next ones with
    /// [`TcpBootstrap::port_range`].
    fn candidates(&self) -> Result<Vec<u16>> {
        let port = self
            .addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        match (port, self.ports) {
            (_, 1) => Ok(vec![port.unwrap_or(0)]),
            (Some(p), n) if p != 0 && u32::from(p) + u32::from(n) - 1 <= 65535 => {
                Ok((0..n).map(|i| p + i).collect())
            }
            _ => Err(Error::invalid(
                "TcpBootstrap::port_range",
                "addr",
                format!(
                    "host:port with a port from 1 to {}",
                    65536 - u32::from(self.ports)
                ),
                crate::base::text::quote(&self.addr),
            )),
        }
    }

    /// One try at rank 0 over `s`, until `until`: hello, challenge, the
    /// sealed join, and rank 0's acknowledgement of it. `several`: this is
    /// one of several ports, where no answer in time, or one that does not
    /// open, means "not here" rather than an end.
    fn attempt(
        &self,
        mut s: TcpStream,
        master: &Master,
        nids: usize,
        until: Instant,
        several: bool,
    ) -> std::result::Result<(TcpStream, Keys), Attempt> {
        let peer = &self.addr;
        let timed_out = |what: &str| {
            if several {
                Attempt::NotHere(peer_err(
                    peer,
                    format!("no {what} within {:?}", CANDIDATE_LIMIT),
                ))
            } else {
                Attempt::Fail(peer_err(
                    peer,
                    format!("no complete {what} within {:?}", self.timeout),
                ))
            }
        };
        let cn = net::random::<NONCE>()
            .map_err(|e| Attempt::Fail(peer_err("local", format!("no random bytes: {e}"))))?;
        let mut hello = MAGIC.to_vec();
        hello.extend_from_slice(&cn);
        let mut ch = [0u8; CHALLENGE_LEN];
        match net::write_all_by(&mut s, &hello, until)
            .and_then(|()| net::read_exact_by(&mut s, &mut ch, until))
        {
            Ok(()) => {}
            Err(IoFail::Deadline) => return Err(timed_out("challenge")),
            Err(e) => return Err(Attempt::Retry(format!("dropped before the challenge: {e}"))),
        }
        if &ch[..8] != MAGIC {
            return Err(Attempt::NotHere(peer_err(
                peer,
                "not an nccl-rs rendezvous of this version (bad magic in the challenge)",
            )));
        }
        let mut rn = [0u8; NONCE];
        rn.copy_from_slice(&ch[8..]);
        let keys = Keys::derive(master, &cn, &rn);
        let mut plain = (self.rank as u64).to_be_bytes().to_vec();
        plain.extend_from_slice(&(self.world as u64).to_be_bytes());
        plain.extend_from_slice(&(nids as u32).to_be_bytes());
        let join = seal(&keys.c2r, &keys.aad, &plain).map_err(Attempt::Fail)?;
        match net::write_all_by(&mut s, &join, until) {
            Ok(()) => {}
            Err(IoFail::Deadline) => return Err(timed_out("room for our join")),
            Err(e) => return Err(Attempt::Retry(format!("join: {e}"))),
        }
        // with several ports, anything but an answer that opens means
        // "not this rendezvous's rank 0": try the next port
        let elsewhere = several;
        match read_frame(&mut s, &keys, until) {
            Ok(p) if p == [ACK] => Ok((s, keys)),
            Ok(p) if p.first() == Some(&1) => Err(Attempt::Fail(self.refused(&p))),
            Ok(_) => Err(Attempt::Fail(peer_err(peer, "malformed answer"))),
            Err(FrameFail::Io(IoFail::Deadline)) => Err(timed_out("acknowledgement of our join")),
            Err(e) if elsewhere => Err(Attempt::NotHere(self.frame_err(e, "acknowledgement"))),
            // dropped before our join was read (rank 0 makes room when
            // more ranks connect at once than it keeps, or our handshake
            // ran past its deadline): again
            Err(FrameFail::Io(e)) => Err(Attempt::Retry(format!(
                "rank 0 closed the connection before acknowledging our join ({e})"
            ))),
            Err(e) => Err(Attempt::Fail(self.frame_err(e, "acknowledgement"))),
        }
    }

    /// Rank 0's refusal `p` (status 1, reason) as an error.
    fn refused(&self, p: &[u8]) -> Error {
        peer_err(
            &self.addr,
            format!(
                "rank 0 refused rank {}: {}",
                self.rank,
                crate::base::text::printable(&p[1..], MAX_REASON)
            ),
        )
    }

    fn frame_err(&self, e: FrameFail, what: &str) -> Error {
        let peer = &self.addr;
        match e {
            FrameFail::Length(0) => peer_err(
                peer,
                "rank 0 did not accept our \
                 proof of the secret and job (NCCL_RS_SECRET differs from rank 0's, or is \
                 set on only one side; or this rank belongs to another job: the world size, \
                 the run id (NCCL_RS_RUN_ID, TORCHELASTIC_RUN_ID, the launcher's job id) and \
                 the rendezvous address must be the same on every rank)",
            ),
            FrameFail::Io(IoFail::Deadline) => peer_err(
                peer,
                format!("no complete {what} within {:?}", self.timeout),
            ),
            FrameFail::Io(IoFail::Eof { .. }) => peer_err(
                peer,
                format!("rank 0 closed the connection before its {what} (did rank 0 end?)"),
            ),
            FrameFail::Io(e) => peer_err(peer, format!("{what}: {e}")),
            FrameFail::Length(n) => peer_err(peer, format!("malformed answer of {n} bytes")),
            FrameFail::Forged => {
                peer_err(peer, "rank 0 could not prove it holds the shared secret")
            }
        }
    }
}

/// How one try at one port ended without reaching rank 0.
enum Attempt {
    /// Dropped before the challenge (a busy rank 0): try again.
    Retry(String),
    /// Not this rendezvous's rank 0 there (another program, another job, or
    /// no answer in time): with several ports, try the next.
    NotHere(Error),
    /// An end: rank 0 refused us, the deadline passed, a local failure.
    Fail(Error),
}

/// Why a sealed frame could not be read.
enum FrameFail {
    Io(IoFail),
    Length(usize),
    Forged,
}

/// One sealed frame from rank 0 (length, sealed message), opened.
fn read_frame(
    s: &mut TcpStream,
    keys: &Keys,
    until: Instant,
) -> std::result::Result<Vec<u8>, FrameFail> {
    let mut len = [0u8; 4];
    net::read_exact_by(s, &mut len, until).map_err(FrameFail::Io)?;
    let len = u32::from_be_bytes(len) as usize;
    if !(SEAL..=MAX_FRAME).contains(&len) {
        return Err(FrameFail::Length(len));
    }
    let mut sealed = vec![0u8; len];
    net::read_exact_by(s, &mut sealed, until).map_err(FrameFail::Io)?;
    open(&keys.r2c, &keys.aad, &sealed).ok_or(FrameFail::Forged)
}

/// What happened at each port, for the error once none answered.
fn summary(ports: &[u16], last: &[String]) -> String {
    ports
        .iter()
        .zip(last)
        .map(|(p, l)| format!("port {p}: {l}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Drops the pending connection that has made the least progress, the
/// oldest among equals (a stranger dripping bytes, before a rank that is
/// about to prove itself).
fn evict(conns: &mut Vec<Conn>) {
    if let Some(i) = conns
        .iter()
        .enumerate()
        .filter(|(_, c)| !matches!(c.stage, Stage::Joined(..)))
        .min_by_key(|(_, c)| (c.progress(), c.accepted))
        .map(|(i, _)| i)
    {
        conns.swap_remove(i);
    }
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
        if self.world > 1 && self.secret.is_none() {
            warn_no_secret("the nccl-rs TCP rendezvous");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_argon2id_of_the_secret_salted_with_the_job() {
        let secret = Secret::from("0123456789abcdef");
        let job = job_hash(4, "run=a", "h:1");
        let m = Master::derive(Some(&secret), job).unwrap();
        let mut want = [0u8; 32];
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(19 * 1024, 2, 1, Some(32)).unwrap(),
        )
        .hash_password_into(b"0123456789abcdef", &job, &mut want)
        .unwrap();
        assert_eq!(*m.key, want);
        // every part of the identity changes it, and the parts do not run
        // into each other
        for other in [
            job_hash(5, "run=a", "h:1"),
            job_hash(4, "run=b", "h:1"),
            job_hash(4, "run=a", "h:2"),
            job_hash(4, "", "run=ah:1"),
            job_hash(4, "run=ah:1", ""),
        ] {
            assert_ne!(other, job);
        }
        // a JOIN sealed with another job's keys does not open, one of this
        // job's does
        let (cn, rn) = ([1u8; NONCE], [2u8; NONCE]);
        let mine = Keys::derive(&m, &cn, &rn);
        let other = Master::derive(Some(&secret), job_hash(4, "run=b", "h:1")).unwrap();
        let theirs = Keys::derive(&other, &cn, &rn);
        let join = seal(&theirs.c2r, &theirs.aad, b"join").unwrap();
        assert!(open(&mine.c2r, &mine.aad, &join).is_none());
        let join = seal(&mine.c2r, &mine.aad, b"join").unwrap();
        assert_eq!(
            open(&mine.c2r, &mine.aad, &join).as_deref(),
            Some(&b"join"[..])
        );
    }
}
