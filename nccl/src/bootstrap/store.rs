//! PyTorch's `TCPStore`, spoken from Rust: a client ([`TcpStore`]) for the
//! store torchrun's agent runs (or any `torch.distributed.TCPStore`), a small
//! server ([`TcpStoreServer`]) that PyTorch clients can use, and
//! [`StoreBootstrap`], which hands the unique id through either.
//!
//! # The wire protocol (PyTorch 2.x, `c10d::TCPStore`)
//!
//! Read from PyTorch's `TCPStore.cpp`, `TCPStoreBackend.hpp` and
//! `TCPStoreLibUvBackend.cpp`, and checked against recordings of libtorch
//! 2.11.0 talking to itself (`tests/fixtures/tcpstore/`). Integers are in the
//! host's byte order, which is little-endian on every platform PyTorch ships
//! for; strings and byte strings are a `u64` length and the bytes. Every
//! request starts with one byte, the query type:
//!
//! | query | byte | request after the byte | answer |
//! | --- | --- | --- | --- |
//! | `VALIDATE` | 0 | `u32` `0x3C85F7CE` | none; must be a connection's first query |
//! | `SET` | 1 | key, value | none |
//! | `COMPARE_SET` | 2 | key, expected, desired | the value now stored (see below) |
//! | `GET` | 3 | key | value (empty if absent on the libuv server) |
//! | `ADD` | 4 | key, `i64` | the new `i64`; values are stored as decimal text |
//! | `CHECK` | 5 | `u64` count, keys | `u8`: 0 all present, 1 not |
//! | `WAIT` | 6 | `u64` count, keys | `u8` 0 once all are present |
//! | `GETNUMKEYS` | 7 | | `i64` |
//! | `DELETE_KEY` | 8 | key | `i64` number deleted |
//! | `APPEND` | 9 | key, value | none |
//! | `MULTI_GET` | 10 | `u64` count, keys | one value per key |
//! | `MULTI_SET` | 11 | `u64` count, (key, value) per key | none |
//! | `CANCEL_WAIT` | 12 | | `u8` 1 (possibly after a late 0) |
//! | `PING` | 13 | `u32` nonce | the same `u32` |
//!
//! PyTorch's Python and C++ `TCPStore` put `/` before every key; so do
//! [`TcpStore`]'s methods, so `store.set("k", …)` in Python and
//! `store.get("k")` here meet. The queue queries (14–16) and `LIST_KEYS` (17)
//! are not implemented.
//!
//! # Trust
//!
//! A `TCPStore` has no authentication: whoever reaches its port can read and
//! write every key, including the unique id (a bearer token). That is the
//! same for PyTorch's own use of it; keep the port inside the job's network.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::base::error::{Error, Result};
use crate::bootstrap::net::{self, IoFail};
use crate::bootstrap::rendezvous::{MAX_IDS, check_rank_world};
use crate::comm::Bootstrap;
use crate::comm::{UNIQUE_ID_BYTES, UniqueId};

const VALIDATE: u8 = 0;
const SET: u8 = 1;
const COMPARE_SET: u8 = 2;
const GET: u8 = 3;
const ADD: u8 = 4;
const CHECK: u8 = 5;
const WAIT: u8 = 6;
const GETNUMKEYS: u8 = 7;
const DELETE_KEY: u8 = 8;
const APPEND: u8 = 9;
const MULTI_GET: u8 = 10;
const MULTI_SET: u8 = 11;
const CANCEL_WAIT: u8 = 12;
const PING: u8 = 13;
/// PyTorch's `validationMagicNumber`.
const VALIDATION_MAGIC: u32 = 0x3C85_F7CE;
const STOP_WAITING: u8 = 0;
const WAIT_CANCELED: u8 = 1;

/// Longest key [`TcpStoreServer`] accepts (and [`TcpStore`] sends).
pub const MAX_KEY_LEN: usize = 4096;
/// Largest value [`TcpStoreServer`] stores.
pub const MAX_VALUE_LEN: usize = 1 << 20;
/// Largest value [`TcpStore`] accepts from a store.
pub const MAX_REPLY_LEN: usize = 64 << 20;
/// Most keys in one `WAIT`, `CHECK`, `MULTI_GET` or `MULTI_SET` at the server.
pub const MAX_KEYS_PER_QUERY: usize = 1024;
/// Most bytes (keys, values and 64 bytes per entry) the server holds.
pub const MAX_STORE_BYTES: usize = 64 << 20;
/// Most connections the server keeps open; fewer where the process may
/// open fewer files: half its soft `RLIMIT_NOFILE` at bind time (at least
/// 16), so that a flood of connections leaves the process descriptors for
/// its own sockets and files.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most bytes the server holds for all its connections together: requests
/// not yet complete, answers not yet read, and what pending `WAIT`s wait for
/// (their keys, and 64 bytes per key). Past it, the connection holding the
/// most is closed. With [`MAX_STORE_BYTES`] of data, this bounds the
/// server's memory whatever its clients do.
pub const MAX_CLIENT_BYTES: usize = 64 << 20;
/// How long [`TcpStoreServer::bind`] waits for a host name's lookup.
const BIND_RESOLVE_LIMIT: Duration = Duration::from_secs(10);
/// How long the server waits for a new connection's `VALIDATE`.
const VALIDATE_LIMIT: Duration = Duration::from_secs(10);
/// Most answer bytes queued for one client that does not read them: an
/// answer that would queue more closes the connection before it is made.
const MAX_OUTPUT: usize = 4 * MAX_VALUE_LEN;
/// What a pending `WAIT` costs the server per key, besides the key (held
/// twice: in the waiter lists and by its client).
const WAIT_ENTRY: usize = 64;
/// Buffers larger than this are given back once empty.
const KEEP_BUFFER: usize = 64 * 1024;

fn wire_key(key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(b'/');
    k.extend_from_slice(key.as_bytes());
    k
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// A client of a PyTorch `TCPStore` (torchrun's agent store, a
/// `torch.distributed.TCPStore` in a Python process, or [`TcpStoreServer`]).
///
/// Every operation has one deadline for all of it ([`TcpStore::timeout`]):
/// a store that answers slowly, or not at all, ends it with
/// [`Error::Store`]. After a failed operation the connection is dropped and
/// the next operation opens a new one.
///
/// ```no_run
/// use std::time::Duration;
/// let mut store = nccl::bootstrap::TcpStore::connect("127.0.0.1:29500", Duration::from_secs(30))?;
/// store.set("greeting", b"hello")?;
/// assert_eq!(store.get("greeting")?, b"hello");
/// # Ok::<(), nccl::Error>(())
/// ```
pub struct TcpStore {
    addr: String,
    addrs: Vec<SocketAddr>,
    conn: Option<TcpStream>,
    timeout: Duration,
}

impl std::fmt::Debug for TcpStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpStore")
            .field("addr", &self.addr)
            .field("connected", &self.conn.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// An answer being read before a deadline.
struct Reply<'a> {
    s: &'a mut TcpStream,
    deadline: Instant,
}

impl Reply<'_> {
    fn exact<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let mut b = [0u8; N];
        net::read_exact_by(self.s, &mut b, self.deadline).map_err(io_text)?;
        Ok(b)
    }
    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.exact::<1>()?[0])
    }
    fn i64(&mut self) -> std::result::Result<i64, String> {
        Ok(i64::from_le_bytes(self.exact::<8>()?))
    }
    fn bytes(&mut self) -> std::result::Result<Vec<u8>, String> {
        let n = u64::from_le_bytes(self.exact::<8>()?);
        if n > MAX_REPLY_LEN as u64 {
            return Err(format!(
                "the store announced a value of {n} bytes, more than the {MAX_REPLY_LEN} accepted"
            ));
        }
        let mut v = vec![0u8; n as usize];
        net::read_exact_by(self.s, &mut v, self.deadline).map_err(io_text)?;
        Ok(v)
    }
}

fn io_text(e: IoFail) -> String {
    match e {
        IoFail::Deadline => "no complete answer before the deadline".into(),
        e => e.to_string(),
    }
}

impl TcpStore {
    /// Connects to the store at `addr` (`host:port`, `[v6]:port`), retrying
    /// until `timeout`, and checks that it speaks the protocol (`VALIDATE`,
    /// then a `PING` that must come back). `timeout` is also the deadline of
    /// every later operation ([`TcpStore::set_timeout`] changes it).
    ///
    /// # Errors
    /// [`Error::Store`] when no store answers in time.
    pub fn connect(addr: &str, timeout: Duration) -> Result<TcpStore> {
        // one deadline for the lookup and the connection
        let deadline = net::deadline_after(timeout);
        let addrs = net::resolve_by(addr, deadline).map_err(|e| Error::Store {
            addr: addr.into(),
            op: "connect".into(),
            reason: e,
        })?;
        let mut s = TcpStore {
            addr: addr.into(),
            addrs,
            conn: None,
            timeout,
        };
        s.ensure(deadline)?;
        Ok(s)
    }

    /// The deadline of each operation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the deadline of each later operation.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The address given to [`TcpStore::connect`].
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn err(&self, op: &str, reason: impl Into<String>) -> Error {
        Error::Store {
            addr: self.addr.clone(),
            op: op.into(),
            reason: reason.into(),
        }
    }

    /// A validated connection, opening one if needed.
    fn ensure(&mut self, deadline: Instant) -> Result<()> {
        if self.conn.is_some() {
            return Ok(());
        }
        let mut s = net::connect_by(&self.addrs, deadline)
            .map_err(|e| self.err("connect", format!("no store reachable ({e})")))?;
        let nonce = u32::from_le_bytes(
            net::random::<4>().map_err(|e| self.err("connect", format!("no random bytes: {e}")))?,
        );
        let mut hello = vec![VALIDATE];
        hello.extend_from_slice(&VALIDATION_MAGIC.to_le_bytes());
        hello.push(PING);
        hello.extend_from_slice(&nonce.to_le_bytes());
        let mut back = [0u8; 4];
        net::write_all_by(&mut s, &hello, deadline)
            .and_then(|()| net::read_exact_by(&mut s, &mut back, deadline))
            .map_err(|e| {
                self.err(
                    "connect",
                    format!(
                        "validate and ping: {} (is this a PyTorch TCPStore?)",
                        io_text(e)
                    ),
                )
            })?;
        if u32::from_le_bytes(back) != nonce {
            return Err(self.err(
                "connect",
                "the ping came back with another nonce: not a PyTorch TCPStore",
            ));
        }
        self.conn = Some(s);
        Ok(())
    }

    /// One request and its answer, all before one deadline; the connection
    /// is dropped on any failure.
    fn query<T>(
        &mut self,
        op: &str,
        request: &[u8],
        answer: impl FnOnce(&mut Reply<'_>) -> std::result::Result<T, String>,
    ) -> Result<T> {
        self.query_by(op, request, answer, net::deadline_after(self.timeout))
    }

    /// [`TcpStore::query`] before a given deadline.
    fn query_by<T>(
        &mut self,
        op: &str,
        request: &[u8],
        answer: impl FnOnce(&mut Reply<'_>) -> std::result::Result<T, String>,
        deadline: Instant,
    ) -> Result<T> {
        self.ensure(deadline)?;
        let s = self.conn.as_mut().expect("connected");
        let r = net::write_all_by(s, request, deadline)
            .map_err(io_text)
            .and_then(|()| answer(&mut Reply { s, deadline }));
        r.map_err(|e| {
            self.conn = None;
            self.err(op, e)
        })
    }

    fn key_ok(&self, op: &str, key: &str) -> Result<Vec<u8>> {
        if key.len() >= MAX_KEY_LEN {
            return Err(self.err(
                op,
                format!(
                    "key of {} bytes; at most {} accepted",
                    key.len(),
                    MAX_KEY_LEN - 1
                ),
            ));
        }
        Ok(wire_key(key))
    }

    fn keys_request(&self, op: &str, q: u8, keys: &[&str]) -> Result<Vec<u8>> {
        let mut r = vec![q];
        r.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        for k in keys {
            put_bytes(&mut r, &self.key_ok(op, k)?);
        }
        Ok(r)
    }

    /// Stores `value` under `key`. As PyTorch's client, it gets no answer:
    /// a store that refuses the value (too large, or the store full) closes
    /// the connection, which the next call reports. [`StoreBootstrap`]
    /// checks that its value arrived.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        self.set_by(key, value, net::deadline_after(self.timeout))
    }

    /// [`TcpStore::set`] before a given deadline.
    fn set_by(&mut self, key: &str, value: &[u8], deadline: Instant) -> Result<()> {
        let mut r = vec![SET];
        put_bytes(&mut r, &self.key_ok("set", key)?);
        put_bytes(&mut r, value);
        self.query_by("set", &r, |_| Ok(()), deadline)
    }

    /// The value of `key`, waiting (until the deadline) for it to be set.
    ///
    /// # Errors
    /// [`Error::Store`], also when the key is not set in time.
    pub fn get(&mut self, key: &str) -> Result<Vec<u8>> {
        let op = format!("get {}", crate::base::text::printable(key.as_bytes(), 80));
        // one deadline for the wait and the read
        let deadline = net::deadline_after(self.timeout);
        self.wait_by(&[key], deadline).map_err(|e| match e {
            Error::Store { addr, reason, .. } => Error::Store {
                addr,
                op: op.clone(),
                reason: format!("waiting for the key: {reason}"),
            },
            e => e,
        })?;
        let mut r = vec![GET];
        put_bytes(&mut r, &self.key_ok(&op, key)?);
        self.query_by(&op, &r, |a| a.bytes(), deadline)
    }

    /// Waits (until the deadline) for every key in `keys` to be set.
    ///
    /// # Errors
    /// [`Error::Store`].
    ///
    /// A tenth of the deadline (at most 1 s) is kept to cancel the wait as
    /// PyTorch does (`CANCEL_WAIT`), so that the connection stays usable.
    pub fn wait(&mut self, keys: &[&str]) -> Result<()> {
        self.wait_by(keys, net::deadline_after(self.timeout))
    }

    /// [`TcpStore::wait`] before a given deadline.
    fn wait_by(&mut self, keys: &[&str], deadline: Instant) -> Result<()> {
        let r = self.keys_request("wait", WAIT, keys)?;
        let reserve = (self.timeout / 10).min(Duration::from_secs(1));
        let cancel_at = deadline.checked_sub(reserve).unwrap_or(deadline);
        self.ensure(deadline)?;
        let s = self.conn.as_mut().expect("connected");
        let mut a = [0u8; 1];
        let r = net::write_all_by(s, &r, cancel_at)
            .and_then(|()| net::read_exact_by(s, &mut a, cancel_at));
        let outcome: std::result::Result<(), String> = match r {
            Ok(()) if a[0] == STOP_WAITING => return Ok(()),
            Ok(()) => Err(format!("unexpected answer {} to WAIT", a[0])),
            Err(IoFail::Deadline) => {
                let mut reply = Reply { s, deadline };
                let cancelled = net::write_all_by(reply.s, &[CANCEL_WAIT], deadline)
                    .map_err(io_text)
                    .and_then(|()| match reply.u8()? {
                        WAIT_CANCELED => Ok(false),
                        // the keys came just in time; the cancel is answered too
                        STOP_WAITING => match reply.u8()? {
                            WAIT_CANCELED => Ok(true),
                            o => Err(format!("unexpected answer {o} to CANCEL_WAIT")),
                        },
                        o => Err(format!("unexpected answer {o} to CANCEL_WAIT")),
                    });
                match cancelled {
                    Ok(true) => return Ok(()),
                    Ok(false) => {
                        return Err(
                            self.err("wait", format!("keys not set within {:?}", self.timeout))
                        );
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(io_text(e)),
        };
        let e = outcome.err().unwrap_or_default();
        self.conn = None;
        Err(self.err("wait", e))
    }

    /// Whether every key in `keys` is set, without waiting.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn check(&mut self, keys: &[&str]) -> Result<bool> {
        self.check_by(keys, net::deadline_after(self.timeout))
    }

    /// [`TcpStore::check`] before a given deadline.
    fn check_by(&mut self, keys: &[&str], deadline: Instant) -> Result<bool> {
        let r = self.keys_request("check", CHECK, keys)?;
        self.query_by(
            "check",
            &r,
            |a| match a.u8()? {
                0 => Ok(true),
                1 => Ok(false),
                other => Err(format!("unexpected answer {other} to CHECK")),
            },
            deadline,
        )
    }

    /// Adds `delta` to the integer stored at `key` (0 if absent) and returns
    /// the sum.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn add(&mut self, key: &str, delta: i64) -> Result<i64> {
        let mut r = vec![ADD];
        put_bytes(&mut r, &self.key_ok("add", key)?);
        r.extend_from_slice(&delta.to_le_bytes());
        self.query("add", &r, |a| a.i64())
    }

    /// Sets `key` to `desired` if it holds `expected` (or is absent and
    /// `expected` is empty); returns what the store holds afterwards (as
    /// PyTorch's, `expected` when the key is absent and `expected` is not
    /// empty).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn compare_set(&mut self, key: &str, expected: &[u8], desired: &[u8]) -> Result<Vec<u8>> {
        let mut r = vec![COMPARE_SET];
        put_bytes(&mut r, &self.key_ok("compare_set", key)?);
        put_bytes(&mut r, expected);
        put_bytes(&mut r, desired);
        self.query("compare_set", &r, |a| a.bytes())
    }

    /// Deletes `key`; whether it was there.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn delete_key(&mut self, key: &str) -> Result<bool> {
        let mut r = vec![DELETE_KEY];
        put_bytes(&mut r, &self.key_ok("delete_key", key)?);
        self.query("delete_key", &r, |a| Ok(a.i64()? == 1))
    }

    /// Number of keys in the store (PyTorch's own keys included).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub fn num_keys(&mut self) -> Result<i64> {
        self.query("num_keys", &[GETNUMKEYS], |a| a.i64())
    }
}

/// The key under which rank 0 publishes the unique id(s) in a store:
/// `nccl-rs/<run_id>/<restart>/uid` (as `TcpStore` writes it; `/` precedes it
/// on the wire). Its value is the ids' raw bytes: 128 for one id.
pub fn store_id_key(run_id: &str, restart: &str) -> String {
    format!("nccl-rs/{run_id}/{restart}/uid")
}

/// [`Bootstrap`] through a PyTorch `TCPStore`: rank 0 sets `key` to the raw
/// bytes of the id(s) (128 per id), the other ranks wait for it and read it.
/// A Python process takes part with `store.set(key, bytes(id))` or
/// `store.get(key)` on a `torch.distributed.TCPStore` of the same address.
///
/// Use a key no earlier communicator used (with torchrun,
/// [`store_id_key`] of the run id and restart count).
#[derive(Debug)]
pub struct StoreBootstrap {
    store: TcpStore,
    rank: usize,
    world: usize,
    key: String,
}

impl StoreBootstrap {
    /// Rank `rank` of `world`, meeting under `key` of `store`.
    ///
    /// # Errors
    /// `InvalidArgument` for `rank >= world`, `world == 0` or `world` above
    /// `i32::MAX`.
    pub fn new(store: TcpStore, rank: usize, world: usize, key: &str) -> Result<StoreBootstrap> {
        check_rank_world("StoreBootstrap::new", rank, world)?;
        Ok(StoreBootstrap {
            store,
            rank,
            world,
            key: key.into(),
        })
    }

    /// The key of the id(s).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The store, e.g. for more keys of the caller's own.
    pub fn store(&mut self) -> &mut TcpStore {
        &mut self.store
    }

    /// Like [`Bootstrap::share_ids`] for several ids: non-root ranks say how
    /// many they expect. What one rank does has one deadline in all, the
    /// store's [`timeout`](TcpStore::timeout).
    ///
    /// # Errors
    /// `InvalidArgument` for a wrong count or `Some`/`None` at the wrong
    /// rank; [`Error::Store`]; [`Error::InvalidUniqueId`] when the value is
    /// not `n` ids.
    pub fn share_n_ids(&mut self, n: usize, ids: Option<Vec<UniqueId>>) -> Result<Vec<UniqueId>> {
        if n == 0 || n > MAX_IDS {
            return Err(Error::invalid(
                "share_n_ids",
                "n",
                format!("1 ..= {MAX_IDS}"),
                n,
            ));
        }
        match (self.rank, ids) {
            (0, Some(ids)) if ids.len() != n => {
                Err(Error::invalid("share_n_ids", "ids.len()", n, ids.len()))
            }
            (0, Some(ids)) => {
                let mut v = Vec::with_capacity(n * UNIQUE_ID_BYTES);
                for id in &ids {
                    v.extend_from_slice(id.as_bytes());
                }
                // one deadline for both steps, as for the others' `get`
                let deadline = net::deadline_after(self.store.timeout);
                self.store.set_by(&self.key, &v, deadline)?;
                // `set` has no answer: make sure the store kept the ids
                // (a full store closes the connection instead), so that the
                // others do not wait until their deadline for nothing
                if !self.store.check_by(&[&self.key], deadline)? {
                    return Err(Error::Store {
                        addr: self.store.addr().to_string(),
                        op: format!(
                            "set {}",
                            crate::base::text::printable(self.key.as_bytes(), 80)
                        ),
                        reason: "the store did not keep the value".into(),
                    });
                }
                Ok(ids)
            }
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
            (_, None) => {
                let v = self.store.get(&self.key)?;
                if v.len() != n * UNIQUE_ID_BYTES {
                    return Err(Error::InvalidUniqueId {
                        reason: format!(
                            "{} holds {} bytes, expected {n} id(s) of {UNIQUE_ID_BYTES}",
                            crate::base::text::printable(self.key.as_bytes(), 80),
                            v.len()
                        ),
                    });
                }
                v.chunks(UNIQUE_ID_BYTES)
                    .map(UniqueId::from_bytes)
                    .collect()
            }
        }
    }
}

impl Bootstrap for StoreBootstrap {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn share_ids(&mut self, ids: Option<Vec<UniqueId>>) -> Result<Vec<UniqueId>> {
        let n = ids.as_ref().map_or(1, Vec::len);
        self.share_n_ids(n, ids)
    }
}

/// A small PyTorch-compatible `TCPStore` server on one background thread:
/// PyTorch clients (`torch.distributed.TCPStore(host, port, is_master=False)`)
/// and [`TcpStore`] can use it. Serves `VALIDATE`, `PING`, `SET`, `GET`,
/// `ADD`, `CHECK`, `WAIT`, `CANCEL_WAIT`, `COMPARE_SET`, `DELETE_KEY`,
/// `GETNUMKEYS`, `APPEND`, `MULTI_GET` and `MULTI_SET`.
///
/// Bounded in everything: one thread whatever the number of clients,
/// [`MAX_CONNECTIONS`] (fewer under a low `RLIMIT_NOFILE`), keys of [`MAX_KEY_LEN`], values of
/// [`MAX_VALUE_LEN`], [`MAX_STORE_BYTES`] of data in all, and
/// [`MAX_CLIENT_BYTES`] held for the clients (unread answers, partial
/// requests, pending waits). An answer is sized before it is made: one that
/// would queue more than 4 MiB for a client that does not read closes that
/// client. A client has one `WAIT` pending at a time (as PyTorch's client):
/// a second one is a protocol error. A connection that does not validate
/// within 10 s, breaks the protocol or exceeds a bound is closed; when the
/// clients together hold too much, the one holding the most is closed.
/// Stops when dropped.
#[derive(Debug)]
pub struct TcpStoreServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpStoreServer {
    /// Listens on `addr` (`0.0.0.0:29500`; port 0 picks a free one; a host
    /// name is looked up within 10 s) and starts serving on a thread of its
    /// own.
    ///
    /// # Errors
    /// [`Error::AddrInUse`]; [`Error::Store`] for other failures, among them
    /// a lookup that takes too long and no thread to be had.
    pub fn bind(addr: &str) -> Result<TcpStoreServer> {
        let err = |reason: String| Error::Store {
            addr: addr.into(),
            op: "bind".into(),
            reason,
        };
        let addrs = net::resolve_by(addr, net::deadline_after(BIND_RESOLVE_LIMIT)).map_err(&err)?;
        let l = TcpListener::bind(&addrs[..]).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => Error::AddrInUse { addr: addr.into() },
            _ => err(e.to_string()),
        })?;
        l.set_nonblocking(true).map_err(|e| err(e.to_string()))?;
        let local = l.local_addr().map_err(|e| err(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nccl-rs-tcpstore".into())
            .spawn(move || {
                Server {
                    max_connections: connection_limit(),
                    ..Server::default()
                }
                .run(l, &st)
            })
            .map_err(|e| err(format!("cannot start its thread: {e}")))?;
        Ok(TcpStoreServer {
            addr: local,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpStoreServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // the loop looks at `stop` at least every 50 ms
            let _ = t.join();
        }
    }
}

struct Client {
    s: TcpStream,
    accepted: Instant,
    validated: bool,
    input: Vec<u8>,
    output: Vec<u8>,
    /// Keys of a pending WAIT that are still absent.
    awaiting: usize,
    /// The keys that pending WAIT waits for (some may have come since): what
    /// a cancel or a close takes out of [`Server::waiters`].
    awaited: Vec<Vec<u8>>,
    /// What the pending WAIT costs (its absent keys and [`WAIT_ENTRY`] each).
    wait_bytes: usize,
    /// What this client counts for in [`Server::held`]: its buffers'
    /// capacity and `wait_bytes`.
    held: usize,
}

impl Client {
    fn holds(&self) -> usize {
        self.input.capacity() + self.output.capacity() + self.wait_bytes
    }
}

#[derive(Default)]
struct Server {
    data: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
    clients: HashMap<u64, Client>,
    next: u64,
    waiters: HashMap<Vec<u8>, HashSet<u64>>,
    /// Bytes held for all clients together (at most [`MAX_CLIENT_BYTES`]).
    held: usize,
    /// Most clients at once ([`connection_limit`]).
    max_connections: usize,
}

/// [`MAX_CONNECTIONS`], or half the soft `RLIMIT_NOFILE` (at least 16) if
/// that is less, after raising the soft limit toward twice
/// [`MAX_CONNECTIONS`] where the hard limit allows it.
fn connection_limit() -> usize {
    let want = 2 * MAX_CONNECTIONS as u64 + 64;
    let soft = match net::fd_limit_at_least(want) {
        Ok(n) => n,
        Err((soft, _)) => soft,
    };
    usize::try_from(soft / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, MAX_CONNECTIONS)
}

/// Why a request could not be taken from the input yet.
enum Need {
    /// Not all of it has arrived.
    More,
    /// It breaks the protocol or a bound: close the connection.
    Bad,
}

struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Need> {
        let end = self.at.checked_add(n).ok_or(Need::Bad)?;
        let s = self.b.get(self.at..end).ok_or(Need::More)?;
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, Need> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> std::result::Result<u64, Need> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self, max: usize) -> std::result::Result<&'a [u8], Need> {
        let n = self.u64()?;
        if n > max as u64 {
            return Err(Need::Bad);
        }
        self.take(n as usize)
    }
    fn key(&mut self) -> std::result::Result<&'a [u8], Need> {
        self.bytes(MAX_KEY_LEN)
    }
    fn value(&mut self) -> std::result::Result<&'a [u8], Need> {
        self.bytes(MAX_VALUE_LEN)
    }
    fn count(&mut self) -> std::result::Result<usize, Need> {
        let n = self.u64()?;
        if n > MAX_KEYS_PER_QUERY as u64 {
            return Err(Need::Bad);
        }
        Ok(n as usize)
    }
}

/// A parsed request, borrowing from the input.
enum Query<'a> {
    Validate(u32),
    Ping(u32),
    Set(&'a [u8], &'a [u8]),
    CompareSet(&'a [u8], &'a [u8], &'a [u8]),
    Get(&'a [u8]),
    Add(&'a [u8], i64),
    Check(Vec<&'a [u8]>),
    Wait(Vec<&'a [u8]>),
    NumKeys,
    Delete(&'a [u8]),
    Append(&'a [u8], &'a [u8]),
    MultiGet(Vec<&'a [u8]>),
    MultiSet(Vec<(&'a [u8], &'a [u8])>),
    CancelWait,
}

fn keys<'a>(c: &mut Cur<'a>) -> std::result::Result<Vec<&'a [u8]>, Need> {
    let n = c.count()?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(c.key()?);
    }
    Ok(v)
}

fn parse(b: &[u8]) -> std::result::Result<(Query<'_>, usize), Need> {
    let mut c = Cur { b, at: 0 };
    let q = match c.take(1)?[0] {
        VALIDATE => Query::Validate(c.u32()?),
        PING => Query::Ping(c.u32()?),
        SET => Query::Set(c.key()?, c.value()?),
        COMPARE_SET => Query::CompareSet(c.key()?, c.value()?, c.value()?),
        GET => Query::Get(c.key()?),
        ADD => Query::Add(c.key()?, c.u64()? as i64),
        CHECK => Query::Check(keys(&mut c)?),
        WAIT => Query::Wait(keys(&mut c)?),
        GETNUMKEYS => Query::NumKeys,
        DELETE_KEY => Query::Delete(c.key()?),
        APPEND => Query::Append(c.key()?, c.value()?),
        MULTI_GET => Query::MultiGet(keys(&mut c)?),
        MULTI_SET => {
            let n = c.count()?;
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push((c.key()?, c.value()?));
            }
            Query::MultiSet(v)
        }
        CANCEL_WAIT => Query::CancelWait,
        _ => return Err(Need::Bad),
    };
    Ok((q, c.at))
}

/// Largest request: a `MULTI_SET` of the most keys and values is bounded by
/// what a client may have in flight before the server closes it.
const MAX_INPUT: usize = MAX_VALUE_LEN * 3 + MAX_KEYS_PER_QUERY * (MAX_KEY_LEN + 16);

impl Server {
    fn run(mut self, l: TcpListener, stop: &AtomicBool) {
        let mut pause: Option<Instant> = None;
        let mut backoff = Duration::from_millis(5);
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.expire(now);
            let accepting = pause.is_none_or(|t| now >= t);
            let ids: Vec<u64> = self.clients.keys().copied().collect();
            let ready = {
                let mut fds: Vec<(&dyn AsRawFd, bool)> = ids
                    .iter()
                    .map(|i| {
                        let c = &self.clients[i];
                        (&c.s as &dyn AsRawFd, !c.output.is_empty())
                    })
                    .collect();
                if accepting {
                    fds.push((&l, false));
                }
                match net::poll(&fds, Duration::from_millis(50)) {
                    Ok(r) => r,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                }
            };
            for (i, id) in ids.iter().enumerate() {
                let r = ready[i];
                if r.readable || r.closed {
                    self.read(*id);
                }
                if r.writable {
                    self.flush(*id);
                }
            }
            if accepting && ready.last().is_some_and(|r| r.readable) {
                for _ in 0..16 {
                    match l.accept() {
                        Ok((s, _)) => {
                            backoff = Duration::from_millis(5);
                            if s.set_nonblocking(true).is_err() {
                                continue;
                            }
                            let _ = s.set_nodelay(true);
                            if self.clients.len() >= self.max_connections && !self.evict() {
                                continue; // full of validated clients: refuse this one
                            }
                            self.admit(s);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            if net::is_resource_error(&e) {
                                self.evict();
                            }
                            pause = Some(Instant::now() + backoff);
                            backoff = (backoff * 2).min(Duration::from_millis(200));
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Takes a new connection as a client; its id.
    fn admit(&mut self, s: TcpStream) -> u64 {
        self.next += 1;
        self.clients.insert(
            self.next,
            Client {
                s,
                accepted: Instant::now(),
                validated: false,
                input: Vec::new(),
                output: Vec::new(),
                awaiting: 0,
                awaited: Vec::new(),
                wait_bytes: 0,
                held: 0,
            },
        );
        self.next
    }

    /// Closes the connections that have not validated within
    /// [`VALIDATE_LIMIT`], giving back what they held.
    fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.validated && now.duration_since(c.accepted) >= VALIDATE_LIMIT)
            .map(|(i, _)| *i)
            .collect();
        for i in late {
            self.close(i);
        }
    }

    /// Closes the oldest connection that has not validated; whether there
    /// was one.
    fn evict(&mut self) -> bool {
        let oldest = self
            .clients
            .iter()
            .filter(|(_, c)| !c.validated)
            .min_by_key(|(_, c)| c.accepted)
            .map(|(i, _)| *i);
        if let Some(i) = oldest {
            self.close(i);
        }
        oldest.is_some()
    }

    fn close(&mut self, id: u64) {
        if let Some(c) = self.clients.remove(&id) {
            self.held -= c.held;
            self.forget_waits(id, c.awaited);
        }
    }

    /// Forgets the pending WAIT of client `id` in the waiter lists: only
    /// its own keys are visited.
    fn unwait(&mut self, id: u64) {
        let keys = self
            .clients
            .get_mut(&id)
            .map(|c| std::mem::take(&mut c.awaited))
            .unwrap_or_default();
        self.forget_waits(id, keys);
    }

    fn forget_waits(&mut self, id: u64, keys: Vec<Vec<u8>>) {
        for k in keys {
            if let Some(w) = self.waiters.get_mut(&k) {
                w.remove(&id);
                if w.is_empty() {
                    self.waiters.remove(&k);
                }
            }
        }
    }

    /// Brings [`Server::held`] up to date with client `id`'s buffers, giving
    /// back empty buffers that grew large.
    fn reaccount(&mut self, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.input.is_empty() && c.input.capacity() > KEEP_BUFFER {
            c.input = Vec::new();
        }
        if c.output.is_empty() && c.output.capacity() > KEEP_BUFFER {
            c.output = Vec::new();
        }
        let now = c.holds();
        self.held = self.held - c.held + now;
        c.held = now;
    }

    /// Makes room for `need` more bytes held for client `id`, closing the
    /// clients that hold the most while all together would exceed
    /// [`MAX_CLIENT_BYTES`]; `false` when `id` itself is the one to close.
    fn room(&mut self, id: u64, need: usize) -> bool {
        while self.held.saturating_add(need) > MAX_CLIENT_BYTES {
            let Some(biggest) = self
                .clients
                .iter()
                .max_by_key(|(_, c)| c.held)
                .map(|(i, _)| *i)
            else {
                return false;
            };
            if biggest == id {
                return false;
            }
            self.close(biggest);
        }
        true
    }

    /// Room in client `id`'s answer queue and in the server's budget for an
    /// answer of `need` bytes, reserved; `false` closes the client.
    fn answer_room(&mut self, id: u64, need: usize) -> bool {
        let (queued, cap) = self
            .clients
            .get(&id)
            .map_or((0, 0), |c| (c.output.len(), c.output.capacity()));
        if queued.saturating_add(need) > MAX_OUTPUT {
            return false;
        }
        // one byte more than the answer: a wake-up (`STOP_WAITING`) for
        // this client may come with it (an `ADD` of the key it waits for)
        let need = need + 1;
        // grown geometrically (small answers piling up are not copied once
        // each), capped at MAX_OUTPUT, where that fits in the budget without
        // closing anyone; else exactly
        let new_cap = if cap - queued >= need {
            cap
        } else {
            let exact = queued + need;
            let doubled = exact.max((2 * cap).min(MAX_OUTPUT));
            if self.held + (doubled - cap) <= MAX_CLIENT_BYTES {
                doubled
            } else {
                exact
            }
        };
        if !self.room(id, new_cap - cap) {
            return false;
        }
        let c = self.clients.get_mut(&id).expect("live client");
        c.output.reserve_exact(new_cap - queued);
        // counted now, not after the whole batch of requests (as
        // `reaccount`, without its trimming of an empty buffer)
        let now = c.holds();
        self.held = self.held - c.held + now;
        c.held = now;
        true
    }

    fn read(&mut self, id: u64) {
        let mut chunk = [0u8; 64 * 1024];
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        match c.s.read(&mut chunk) {
            Ok(0) => return self.close(id),
            Ok(n) => c.input.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                return;
            }
            Err(_) => return self.close(id),
        }
        if c.input.len() > MAX_INPUT {
            return self.close(id);
        }
        self.reaccount(id);
        if !self.room(id, 0) {
            return self.close(id);
        }
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        // while parsed, the input (one client's, at most MAX_INPUT) is out
        // of the count
        let mut input = std::mem::take(&mut c.input);
        let mut used = 0;
        loop {
            match parse(&input[used..]) {
                Ok((q, n)) => {
                    if !self.execute(id, q) {
                        return self.close(id);
                    }
                    used += n;
                }
                Err(Need::More) => break,
                Err(Need::Bad) => return self.close(id),
            }
        }
        input.drain(..used);
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        c.input = input;
        self.reaccount(id);
        self.flush(id);
    }

    fn flush(&mut self, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        while !c.output.is_empty() {
            match c.s.write(&c.output) {
                Ok(0) => return self.close(id),
                Ok(n) => {
                    c.output.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(id),
            }
        }
        self.reaccount(id);
    }

    fn out(&mut self, id: u64) -> &mut Vec<u8> {
        &mut self.clients.get_mut(&id).expect("live client").output
    }

    fn store(&mut self, key: &[u8], value: Vec<u8>) -> bool {
        let old = self
            .data
            .get(key)
            .map_or(0, |v| v.capacity() + key.len() + 64);
        let new = self.bytes - old + value.capacity() + key.len() + 64;
        if new > MAX_STORE_BYTES {
            return false;
        }
        self.bytes = new;
        self.data.insert(key.to_vec(), value);
        self.wake(key);
        true
    }

    fn wake(&mut self, key: &[u8]) {
        for w in self.waiters.remove(key).unwrap_or_default() {
            if let Some(c) = self.clients.get_mut(&w) {
                c.awaiting = c.awaiting.saturating_sub(1);
                if c.awaiting == 0 {
                    c.wait_bytes = 0;
                    c.awaited = Vec::new();
                    // one byte past the budget at most (exact: a push
                    // may double the capacity), given back at once
                    c.output.reserve_exact(1);
                    c.output.push(STOP_WAITING);
                    self.reaccount(w);
                }
            }
        }
    }

    /// Runs one request; `false` closes the connection.
    fn execute(&mut self, id: u64, q: Query<'_>) -> bool {
        let validated = self.clients.get(&id).is_some_and(|c| c.validated);
        match q {
            Query::Validate(m) => {
                if m != VALIDATION_MAGIC || validated {
                    return false;
                }
                self.clients.get_mut(&id).expect("live client").validated = true;
                return true;
            }
            _ if !validated => return false,
            _ => {}
        }
        match q {
            Query::Validate(_) => unreachable!("handled above"),
            Query::Ping(n) => {
                if !self.answer_room(id, 4) {
                    return false;
                }
                self.out(id).extend_from_slice(&n.to_le_bytes());
            }
            Query::Set(k, v) => return self.store(k, v.to_vec()),
            Query::CompareSet(k, expected, desired) => {
                // the answer is `expected`, `desired` or the value stored
                let longest = self.data.get(k).map_or(0, Vec::len);
                let need = 8 + longest.max(expected.len()).max(desired.len());
                if !self.answer_room(id, need) {
                    return false;
                }
                let now = match self.data.get(k) {
                    None if expected.is_empty() => {
                        if !self.store(k, desired.to_vec()) {
                            return false;
                        }
                        desired.to_vec()
                    }
                    None => expected.to_vec(),
                    Some(cur) if cur.as_slice() == expected => {
                        if !self.store(k, desired.to_vec()) {
                            return false;
                        }
                        desired.to_vec()
                    }
                    Some(cur) => cur.clone(),
                };
                put_bytes(self.out(id), &now);
            }
            Query::Get(k) => {
                let need = 8 + self.data.get(k).map_or(0, Vec::len);
                if !self.answer_room(id, need) {
                    return false;
                }
                let v = self.data.get(k).map_or(&[][..], Vec::as_slice);
                let c = self.clients.get_mut(&id).expect("live client");
                put_bytes(&mut c.output, v);
            }
            Query::Add(k, delta) => {
                let cur = match self.data.get(k) {
                    None => 0,
                    Some(v) => match std::str::from_utf8(v)
                        .ok()
                        .and_then(|t| t.parse::<i64>().ok())
                    {
                        Some(x) => x,
                        None => return false,
                    },
                };
                let Some(sum) = cur.checked_add(delta) else {
                    return false;
                };
                if !self.answer_room(id, 8) || !self.store(k, sum.to_string().into_bytes()) {
                    return false;
                }
                self.out(id).extend_from_slice(&sum.to_le_bytes());
            }
            Query::Check(keys) => {
                if !self.answer_room(id, 1) {
                    return false;
                }
                let all = keys.iter().all(|k| self.data.contains_key(*k));
                self.out(id).push(if all { 0 } else { 1 });
            }
            Query::Wait(keys) => {
                if self.clients.get(&id).is_some_and(|c| c.awaiting > 0) {
                    // PyTorch's client waits for (or cancels) one WAIT before
                    // it sends another
                    return false;
                }
                let absent: HashSet<&[u8]> = keys
                    .into_iter()
                    .filter(|k| !self.data.contains_key(*k))
                    .collect();
                if absent.is_empty() {
                    if !self.answer_room(id, 1) {
                        return false;
                    }
                    self.out(id).push(STOP_WAITING);
                } else {
                    // each key is held twice: in the waiter lists and by the client
                    let cost: usize = absent.iter().map(|k| 2 * k.len() + WAIT_ENTRY).sum();
                    if !self.answer_room(id, 1) || !self.room(id, cost) {
                        return false;
                    }
                    let keys: Vec<Vec<u8>> = absent.into_iter().map(<[u8]>::to_vec).collect();
                    for k in &keys {
                        self.waiters.entry(k.clone()).or_default().insert(id);
                    }
                    let c = self.clients.get_mut(&id).expect("live client");
                    c.awaiting = keys.len();
                    c.wait_bytes = cost;
                    c.awaited = keys;
                    self.reaccount(id);
                }
            }
            Query::NumKeys => {
                if !self.answer_room(id, 8) {
                    return false;
                }
                let n = self.data.len() as i64;
                self.out(id).extend_from_slice(&n.to_le_bytes());
            }
            Query::Delete(k) => {
                if !self.answer_room(id, 8) {
                    return false;
                }
                let n: i64 = match self.data.remove(k) {
                    Some(v) => {
                        self.bytes -= v.capacity() + k.len() + 64;
                        1
                    }
                    None => 0,
                };
                self.out(id).extend_from_slice(&n.to_le_bytes());
            }
            Query::Append(k, v) => {
                // in place: the work is what the client sent, not the value's
                // size (a copy per append let one client's empty appends to
                // a 1 MiB value stall every other client)
                let Some(cur) = self.data.get_mut(k) else {
                    return self.store(k, v.to_vec());
                };
                let need = cur.len() + v.len();
                if need > MAX_VALUE_LEN {
                    return false;
                }
                // grown geometrically (many small appends copy the value a
                // few times, not once each), capped at the largest value;
                // the store counts capacity
                let cap = cur.capacity();
                let new_cap = if need <= cap {
                    cap
                } else {
                    let doubled = need.max((2 * cap).min(MAX_VALUE_LEN));
                    if self.bytes + (doubled - cap) <= MAX_STORE_BYTES {
                        doubled
                    } else {
                        need
                    }
                };
                if self.bytes + (new_cap - cap) > MAX_STORE_BYTES {
                    return false;
                }
                cur.reserve_exact(new_cap - cur.len());
                cur.extend_from_slice(v);
                self.bytes += cur.capacity() - cap;
            }
            Query::MultiGet(keys) => {
                // sized before it is made: 1024 keys of one 1 MiB value
                // would be a 1 GiB answer
                let need = keys
                    .iter()
                    .map(|k| 8 + self.data.get(*k).map_or(0, Vec::len))
                    .fold(0usize, usize::saturating_add);
                if !self.answer_room(id, need) {
                    return false;
                }
                let c = self.clients.get_mut(&id).expect("live client");
                for k in keys {
                    put_bytes(
                        &mut c.output,
                        self.data.get(k).map_or(&[][..], Vec::as_slice),
                    );
                }
            }
            Query::MultiSet(kv) => {
                for (k, v) in kv {
                    if !self.store(k, v.to_vec()) {
                        return false;
                    }
                }
            }
            Query::CancelWait => {
                if !self.answer_room(id, 1) {
                    return false;
                }
                let c = self.clients.get_mut(&id).expect("live client");
                c.awaiting = 0;
                c.wait_bytes = 0;
                self.unwait(id);
                self.out(id).push(WAIT_CANCELED);
            }
        }
        self.reaccount(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server with `n` clients on real (local) sockets; the accepted ends.
    fn server_with(n: usize) -> (Server, Vec<TcpStream>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut server = Server {
            max_connections: MAX_CONNECTIONS,
            ..Server::default()
        };
        let mut ends = Vec::new();
        for _ in 0..n {
            ends.push(TcpStream::connect(l.local_addr().unwrap()).unwrap());
            let (s, _) = l.accept().unwrap();
            server.admit(s);
        }
        (server, ends)
    }

    /// A client dropped for not validating in time gives back what its
    /// partial request held: the budget of all clients does not leak.
    #[test]
    fn late_clients_give_back_what_they_held() {
        let (mut server, _ends) = server_with(2);
        for c in server.clients.values_mut() {
            c.input.resize(1 << 20, 0); // a request not yet complete
        }
        for id in [1, 2] {
            server.reaccount(id);
        }
        assert!(server.held >= 2 << 20);
        server.clients.get_mut(&2).unwrap().validated = true;
        server.expire(Instant::now() + VALIDATE_LIMIT);
        assert!(!server.clients.contains_key(&1), "the late client stays");
        assert!(server.clients.contains_key(&2), "a validated client went");
        let left: usize = server.clients.values().map(|c| c.held).sum();
        assert_eq!(server.held, left, "the server's count leaked");
    }

    /// A store that drops the ids rank 0 publishes (a full store closes the
    /// connection instead of answering, `SET` has no answer): rank 0 gets
    /// `Error::Store` at once, not the others a wait until their deadline.
    #[test]
    fn a_publish_the_store_drops_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let fake = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut hello = [0u8; 10]; // VALIDATE magic, PING nonce
            s.read_exact(&mut hello).unwrap();
            s.write_all(&hello[6..10]).unwrap();
            let mut set = [0u8; 1];
            s.read_exact(&mut set).unwrap();
            assert_eq!(set[0], SET);
            // refused: closed without an answer
        });
        let store = TcpStore::connect(&addr, Duration::from_secs(5)).unwrap();
        let mut b = StoreBootstrap::new(store, 0, 2, "ids").unwrap();
        let id = UniqueId::from_bytes(&[7u8; UNIQUE_ID_BYTES]).unwrap();
        let r = b.share_n_ids(1, Some(vec![id]));
        assert!(matches!(r, Err(Error::Store { .. })), "{r:?}");
        fake.join().unwrap();
    }

    /// A cancelled or closed WAIT takes out its own keys only; a key that
    /// comes wakes the clients still waiting for it.
    #[test]
    fn waits_are_forgotten_per_client() {
        let (mut server, _ends) = server_with(3);
        for id in 1..=3 {
            assert!(server.execute(id, Query::Validate(VALIDATION_MAGIC)));
        }
        assert!(server.execute(1, Query::Wait(vec![b"a", b"b"])));
        assert!(server.execute(2, Query::Wait(vec![b"b", b"c"])));
        assert!(server.execute(3, Query::Wait(vec![b"c"])));
        assert_eq!(server.waiters[&b"b"[..]].len(), 2);
        assert!(server.execute(2, Query::CancelWait));
        assert_eq!(server.waiters[&b"b"[..]], HashSet::from([1]));
        assert_eq!(server.waiters[&b"c"[..]], HashSet::from([3]));
        assert!(!server.waiters.contains_key(&b"x"[..]));
        assert!(server.store(b"c", b"v".to_vec()));
        assert_eq!(server.clients[&3].awaiting, 0, "the key came: 3 is done");
        assert!(!server.waiters.contains_key(&b"c"[..]));
        server.close(1);
        assert!(!server.waiters.contains_key(&b"a"[..]));
        assert!(!server.waiters.contains_key(&b"b"[..]));
        let held: usize = server.clients.values().map(|c| c.held).sum();
        assert_eq!(server.held, held);
    }
    /// `APPEND` grows the value in place: an empty append to the largest
    /// value copies nothing (the work is what the client sent), the store's
    /// byte count follows the value, and a missing key is made and wakes
    /// its waiters.
    #[test]
    fn appends_work_in_place() {
        let (mut server, _ends) = server_with(2);
        for id in 1..=2 {
            assert!(server.execute(id, Query::Validate(VALIDATION_MAGIC)));
        }
        assert!(server.execute(2, Query::Wait(vec![b"new"])));
        assert!(server.execute(1, Query::Append(b"new", b"x")));
        assert_eq!(server.clients[&2].awaiting, 0, "the append did not wake");
        let big = vec![1u8; MAX_VALUE_LEN - 2];
        assert!(server.execute(1, Query::Set(b"a", &big)));
        let at = server.data[&b"a"[..]].as_ptr();
        for _ in 0..1000 {
            assert!(server.execute(1, Query::Append(b"a", b"")));
        }
        assert_eq!(
            server.data[&b"a"[..]].as_ptr(),
            at,
            "an empty append copied the value"
        );
        assert!(server.execute(1, Query::Append(b"a", b"yz")));
        assert_eq!(server.data[&b"a"[..]].len(), MAX_VALUE_LEN);
        assert!(
            !server.execute(1, Query::Append(b"a", b"!")),
            "past MAX_VALUE_LEN"
        );
        let v = &server.data[&b"a"[..]];
        assert!(v.capacity() <= MAX_VALUE_LEN, "capacity {}", v.capacity());
        let bytes: usize = server
            .data
            .iter()
            .map(|(k, v)| k.len() + v.capacity() + 64)
            .sum();
        assert_eq!(server.bytes, bytes);
        // small appends to a small value: a few copies, not one each
        assert!(server.execute(1, Query::Set(b"b", b"")));
        let mut moves = 0;
        let mut at = server.data[&b"b"[..]].as_ptr();
        for _ in 0..10_000 {
            assert!(server.execute(1, Query::Append(b"b", b"x")));
            let now = server.data[&b"b"[..]].as_ptr();
            moves += usize::from(now != at);
            at = now;
        }
        assert!(
            moves <= 20,
            "the value moved {moves} times in 10 000 appends"
        );
    }
}
