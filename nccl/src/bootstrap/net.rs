//! Small pieces shared by the rendezvous and the TCPStore client and server:
//! deadlines that hold for a whole exchange (not for each read), name
//! lookups with a deadline, `poll(2)`, random bytes without a file
//! descriptor, and escaping of untrusted text.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::comm::wait::ProcessCount;

/// `now + d`, saturating far in the future instead of panicking on overflow
/// (`Duration::MAX` means "as long as it takes", not a crash).
pub(crate) fn deadline_after(d: Duration) -> Instant {
    let now = Instant::now();
    // About 100 years: far enough to mean "never", near enough to add.
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .or_else(|| now.checked_add(Duration::from_secs(24 * 3600)))
        .unwrap_or(now)
}

/// Time left before `deadline`, `None` once it has passed.
pub(crate) fn left(deadline: Instant) -> Option<Duration> {
    let l = deadline.saturating_duration_since(Instant::now());
    (!l.is_zero()).then_some(l)
}

/// How a bounded read or write ended badly.
#[derive(Debug)]
pub(crate) enum IoFail {
    /// The deadline passed with the message incomplete.
    Deadline,
    /// The peer closed the connection (after `got` bytes of the message).
    Eof { got: usize },
    /// Another socket error.
    Io(io::Error),
}

impl std::fmt::Display for IoFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IoFail::Deadline => f.write_str("deadline passed"),
            IoFail::Eof { got: 0 } => f.write_str("the connection was closed"),
            IoFail::Eof { got } => write!(f, "the connection was closed after {got} bytes"),
            IoFail::Io(e) => write!(f, "{e}"),
        }
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads exactly `buf.len()` bytes before `deadline`, however slowly they
/// come: each read waits only for the time left of the whole message.
pub(crate) fn read_exact_by(
    s: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), IoFail> {
    let mut got = 0;
    while got < buf.len() {
        let l = left(deadline).ok_or(IoFail::Deadline)?;
        s.set_read_timeout(Some(l.max(Duration::from_millis(1))))
            .map_err(IoFail::Io)?;
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(IoFail::Eof { got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => {}
            Err(e) => return Err(IoFail::Io(e)),
        }
    }
    Ok(())
}

/// Writes all of `buf` before `deadline`.
pub(crate) fn write_all_by(s: &mut TcpStream, buf: &[u8], deadline: Instant) -> Result<(), IoFail> {
    let mut sent = 0;
    while sent < buf.len() {
        let l = left(deadline).ok_or(IoFail::Deadline)?;
        s.set_write_timeout(Some(l.max(Duration::from_millis(1))))
            .map_err(IoFail::Io)?;
        match s.write(&buf[sent..]) {
            Ok(0) => return Err(IoFail::Eof { got: sent }),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if timed_out(&e) => {}
            Err(e) => return Err(IoFail::Io(e)),
        }
    }
    Ok(())
}

/// Resolves `addr` (`host:port`), failing with the resolver's words. Blocks
/// for as long as the system's resolver takes: see [`resolve_by`].
fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    let v: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .collect();
    if v.is_empty() {
        return Err(format!("{addr} resolves to no address"));
    }
    Ok(v)
}

/// Most name lookups waiting for the system's resolver on helper threads at
/// once: a lookup past its caller's deadline goes on until the resolver
/// answers, and callers that retry must not pile up threads.
const MAX_LOOKUPS: usize = 8;
/// This process's lookups on helper threads (a child made by `fork` has
/// none of its parent's).
static LOOKUPS: ProcessCount = ProcessCount::new();

/// Resolves `addr` (`host:port`, `[v6]:port`) before `deadline`: a numeric
/// address at once; a name on a helper thread, given up at the deadline (the
/// system's resolver cannot be interrupted, so the thread ends when it
/// answers; at most [`MAX_LOOKUPS`] wait at once).
pub(crate) fn resolve_by(addr: &str, deadline: Instant) -> Result<Vec<SocketAddr>, String> {
    lookup_by(addr, deadline, resolve, &LOOKUPS)
}

/// [`resolve_by`] with the blocking `lookup` given, its threads counted in
/// `lookups`.
fn lookup_by(
    addr: &str,
    deadline: Instant,
    lookup: fn(&str) -> Result<Vec<SocketAddr>, String>,
    lookups: &'static ProcessCount,
) -> Result<Vec<SocketAddr>, String> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    if lookups.take(MAX_LOOKUPS).is_err() {
        return Err(format!(
            "cannot resolve {addr}: {MAX_LOOKUPS} earlier lookups still wait for the system's \
             resolver"
        ));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = addr.to_string();
    let started = std::thread::Builder::new()
        .name("nccl-rs-resolve".into())
        .spawn(move || {
            let r = lookup(&name);
            lookups.release();
            let _ = tx.send(r);
        });
    if let Err(e) = started {
        // the closure never ran
        lookups.release();
        return Err(format!(
            "cannot resolve {addr}: no thread for the lookup: {e}"
        ));
    }
    let wait = left(deadline).unwrap_or(Duration::ZERO);
    match rx.recv_timeout(wait) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "cannot resolve {addr}: no answer from the system's resolver within {wait:.1?}"
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(format!(
            "cannot resolve {addr}: the lookup ended without an answer"
        )),
    }
}

/// Connects to one of `addrs`, retrying with backoff until `deadline`.
/// Returns the last error when the deadline passes.
pub(crate) fn connect_by(addrs: &[SocketAddr], deadline: Instant) -> Result<TcpStream, String> {
    let mut pause = Duration::from_millis(10);
    let mut last = String::from("no address to try");
    loop {
        for a in addrs {
            let Some(l) = left(deadline) else {
                return Err(last);
            };
            match TcpStream::connect_timeout(a, l.min(Duration::from_secs(2))) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        match left(deadline) {
            Some(l) if l > pause => std::thread::sleep(pause),
            _ => return Err(last),
        }
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// One pass over `addrs`, each given what is left until `until` (at most 2
/// s): the first connection made, or the last error.
pub(crate) fn connect_once(addrs: &[SocketAddr], until: Instant) -> Result<TcpStream, String> {
    let mut last = String::from("no address to try");
    for a in addrs {
        let Some(l) = left(until) else {
            break;
        };
        match TcpStream::connect_timeout(a, l.min(Duration::from_secs(2))) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Err(last)
}

/// `count` random bytes from the kernel (`getrandom(2)`: no file descriptor,
/// so it works when descriptors run out).
pub(crate) fn random<const N: usize>() -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    let mut got = 0;
    while got < N {
        // SAFETY: the pointer and length describe the unfilled tail of `b`,
        // which getrandom writes at most `N - got` bytes into.
        let r = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), N - got, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += r as usize;
    }
    Ok(b)
}

/// Which events `poll` found on one descriptor.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// Error or hang-up: the connection is finished.
    pub closed: bool,
}

/// One `poll(2)` over `fds` (descriptor, want-write) for at most `timeout`.
pub(crate) fn poll(fds: &[(&dyn AsRawFd, bool)], timeout: Duration) -> io::Result<Vec<Ready>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|(f, w)| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN | if *w { libc::POLLOUT } else { 0 },
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `p` is a valid array of `p.len()` pollfd structs that poll may
    // write `revents` into; it outlives the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![Ready::default(); p.len()]);
        }
        return Err(e);
    }
    Ok(p.iter()
        .map(|x| Ready {
            readable: x.revents & libc::POLLIN != 0,
            writable: x.revents & libc::POLLOUT != 0,
            closed: x.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0,
        })
        .collect())
}

/// Makes sure this process may open at least `need` file descriptors:
/// raises the soft `RLIMIT_NOFILE` toward the hard one when it is lower
/// (logged). `Err((soft, hard))` when even the hard limit is lower.
pub(crate) fn fd_limit_at_least(need: u64) -> std::result::Result<u64, (u64, u64)> {
    // one raise at a time in this crate (a store server and rank 0 may
    // raise at once): the limit read is the one set from
    static RAISING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = RAISING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit to the valid pointer given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Ok(u64::MAX); // not known: assume enough
    }
    let (soft, hard) = (r.rlim_cur, r.rlim_max);
    if soft >= need {
        return Ok(soft);
    }
    if hard < need {
        return Err((soft, hard));
    }
    let raised = libc::rlimit {
        rlim_cur: need,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one valid rlimit. The soft limit rises from
    // the one just read, within the hard one (no privilege needed); another
    // library of the process setting it meanwhile is a race of its own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err((soft, hard));
    }
    log::info!(
        "raised this process's soft limit of open files from {soft} to {need} (hard {hard})"
    );
    Ok(need)
}

/// Whether an `accept` error is about running out of something (descriptors,
/// memory) rather than about the one connection.
pub(crate) fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate() {
        let d = deadline_after(Duration::MAX);
        assert!(d > Instant::now() + Duration::from_secs(1000 * 24 * 3600));
        assert!(left(deadline_after(Duration::ZERO)).is_none());
    }

    /// A system resolver that takes 2 s.
    fn slow(addr: &str) -> Result<Vec<SocketAddr>, String> {
        std::thread::sleep(Duration::from_secs(2));
        resolve(addr)
    }

    #[test]
    fn lookups_end_at_their_deadline_and_do_not_pile_up() {
        // a numeric address needs no lookup, however late
        let past = Instant::now();
        assert_eq!(
            resolve_by("127.0.0.1:5", past).unwrap(),
            ["127.0.0.1:5".parse::<SocketAddr>().unwrap()]
        );
        assert!(resolve_by("[::1]:5", past).is_ok());
        // a name whose lookup hangs: given up at the deadline
        let t = Instant::now();
        let e = lookup_by(
            "localhost:5",
            deadline_after(Duration::from_millis(200)),
            slow,
            &LOOKUPS,
        )
        .unwrap_err();
        assert!(e.contains("no answer") && e.contains("localhost"), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        // the hung lookups still running are bounded: past MAX_LOOKUPS, a
        // lookup is refused at once instead of starting one more thread
        let t = Instant::now();
        let refused = (0..=MAX_LOOKUPS)
            .map(|_| {
                lookup_by(
                    "localhost:5",
                    deadline_after(Duration::from_millis(1)),
                    slow,
                    &LOOKUPS,
                )
            })
            .filter_map(Result::err)
            .find(|e| e.contains("earlier lookups"));
        assert!(refused.is_some());
        assert!(LOOKUPS.get() <= MAX_LOOKUPS);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // and the slots come back when the resolver answers
        std::thread::sleep(Duration::from_millis(2500));
        assert!(resolve_by("localhost:5", deadline_after(Duration::from_secs(5))).is_ok());
    }

    /// A child made by `fork` while its parent's lookups hang has none of
    /// their threads: it counts from zero and looks names up.
    #[test]
    fn a_forked_child_counts_lookups_from_zero() {
        static COUNT: ProcessCount = ProcessCount::new();
        fn quick(addr: &str) -> Result<Vec<SocketAddr>, String> {
            resolve(addr.replace("localhost", "127.0.0.1").as_str())
        }
        let parent = std::process::id().wrapping_add(1);
        COUNT.of(parent, |n| *n = MAX_LOOKUPS);
        let by = deadline_after(Duration::from_secs(5));
        assert!(lookup_by("localhost:5", by, quick, &COUNT).is_ok());
        // and its own hung lookups are bounded as its parent's were
        COUNT.of(std::process::id(), |n| *n = MAX_LOOKUPS);
        let e = lookup_by("localhost:5", by, quick, &COUNT).unwrap_err();
        assert!(e.contains("earlier lookups"), "{e}");
        COUNT.release();
        assert!(lookup_by("localhost:5", by, quick, &COUNT).is_ok());
        // the lookup's thread gives its slot back once it has answered
        let t = Instant::now();
        while COUNT.get() > MAX_LOOKUPS - 1 {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn random_bytes_differ() {
        assert_ne!(random::<32>().unwrap(), random::<32>().unwrap());
    }
}
