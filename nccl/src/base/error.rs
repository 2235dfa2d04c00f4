//! Errors: [`Error`], what can go wrong, with the raw NCCL code, the API
//! that failed and NCCL's own explanation (`ncclGetLastError`) where NCCL
//! reported it. The funnel that makes them is in `base::call`.

use std::ffi::CStr;
use std::fmt;

use crate::base::state::CommState;
use crate::base::version::{HEADER_VERSION, Version, VersionError};
use crate::sys;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An `ncclResult_t` other than success, named when this crate knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NcclCode {
    /// `ncclUnhandledCudaError` (1): a CUDA call inside NCCL failed.
    UnhandledCudaError,
    /// `ncclSystemError` (2): a system call failed.
    SystemError,
    /// `ncclInternalError` (3): an internal check failed (NCCL bug or memory corruption).
    InternalError,
    /// `ncclInvalidArgument` (4).
    InvalidArgument,
    /// `ncclInvalidUsage` (5): the call sequence is wrong.
    InvalidUsage,
    /// `ncclRemoteError` (6): a peer exited or the network failed.
    RemoteError,
    /// `ncclInProgress` (7): a non-blocking operation is still running.
    InProgress,
    /// `ncclTimeout` (8, NCCL 2.30.3+): an operation did not finish in time.
    Timeout,
    /// A value this crate does not know (a newer libnccl), kept raw.
    Unknown(u32),
}

impl NcclCode {
    /// The code for a raw `ncclResult_t`; `None` for `ncclSuccess`.
    ///
    /// By value, not by the header's names: a code that this build's header
    /// does not have (`ncclTimeout` from a 2.30 library under a 2.28 header)
    /// is still named.
    pub fn from_raw(r: sys::ncclResult_t) -> Option<NcclCode> {
        Some(match r.0 {
            0 => return None,
            1 => NcclCode::UnhandledCudaError,
            2 => NcclCode::SystemError,
            3 => NcclCode::InternalError,
            4 => NcclCode::InvalidArgument,
            5 => NcclCode::InvalidUsage,
            6 => NcclCode::RemoteError,
            7 => NcclCode::InProgress,
            8 => NcclCode::Timeout,
            other => NcclCode::Unknown(other),
        })
    }

    /// The raw `ncclResult_t` value.
    pub fn raw(self) -> u32 {
        match self {
            NcclCode::UnhandledCudaError => 1,
            NcclCode::SystemError => 2,
            NcclCode::InternalError => 3,
            NcclCode::InvalidArgument => 4,
            NcclCode::InvalidUsage => 5,
            NcclCode::RemoteError => 6,
            NcclCode::InProgress => 7,
            NcclCode::Timeout => 8,
            NcclCode::Unknown(v) => v,
        }
    }

    /// NCCL's name of the code (`ncclInvalidArgument`).
    pub fn name(self) -> &'static str {
        match self {
            NcclCode::UnhandledCudaError => "ncclUnhandledCudaError",
            NcclCode::SystemError => "ncclSystemError",
            NcclCode::InternalError => "ncclInternalError",
            NcclCode::InvalidArgument => "ncclInvalidArgument",
            NcclCode::InvalidUsage => "ncclInvalidUsage",
            NcclCode::RemoteError => "ncclRemoteError",
            NcclCode::InProgress => "ncclInProgress",
            NcclCode::Timeout => "ncclTimeout",
            NcclCode::Unknown(_) => "unknown ncclResult_t",
        }
    }

    /// What to do about it, in a few words.
    fn advice(self) -> &'static str {
        match self {
            NcclCode::UnhandledCudaError => {
                "check the GPU and driver (nvidia-smi), and that the CUDA context is current"
            }
            NcclCode::SystemError => {
                "check sockets, shared memory (/dev/shm) and file limits; NCCL_DEBUG=WARN says more"
            }
            NcclCode::InternalError => {
                "likely an NCCL bug or memory corruption; NCCL_DEBUG=INFO says more"
            }
            NcclCode::InvalidArgument | NcclCode::InvalidUsage => {
                "the call does not match NCCL's contract; NCCL_DEBUG=WARN says more"
            }
            NcclCode::RemoteError => {
                "a peer exited or the network failed: abort this communicator and rebuild it"
            }
            NcclCode::InProgress => {
                "the operation is still running: poll the communicator until it completes"
            }
            NcclCode::Timeout => {
                "NCCL gave up waiting (a peer may be gone): abort this communicator and rebuild it"
            }
            NcclCode::Unknown(_) => "this code is newer than nccl; NCCL_DEBUG=WARN says more",
        }
    }
}

impl fmt::Display for NcclCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NcclCode::Unknown(v) => write!(f, "ncclResult_t {v}"),
            c => write!(f, "{} ({})", c.name(), c.raw()),
        }
    }
}

/// Everything that can go wrong.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An NCCL call failed.
    #[error("{api} failed with {code}: {}; {}", if last_error.is_empty() { "NCCL gave no detail" } else { last_error.as_str() }, code.advice())]
    Nccl {
        /// The NCCL function that failed (`ncclAllReduce`).
        api: &'static str,
        /// The code it returned.
        code: NcclCode,
        /// `ncclGetLastError` right after the failure (may be empty): NCCL's
        /// last warning text, one for the whole process, so with several
        /// communicators failing at once it may be another's.
        last_error: String,
    },
    /// An argument broke the contract of a call; NCCL was not called.
    #[error("{op}: invalid {arg}: expected {expected}, got {actual}")]
    InvalidArgument {
        /// The operation (`all_gather`).
        op: &'static str,
        /// The argument (`recv.len()`).
        arg: &'static str,
        /// What the contract needs.
        expected: String,
        /// What was given.
        actual: String,
    },
    /// A CUDA driver call (through cudarc) failed.
    #[error("CUDA error: {0}")]
    Cuda(#[from] cudarc::driver::DriverError),
    /// The API is missing from the libnccl in use, or from the `nccl.h` this
    /// program was built against.
    #[error(
        "{api} needs NCCL {since} or newer; this program runs with libnccl {runtime} and was built against nccl.h {header}; update whichever is older",
        header = HEADER_VERSION
    )]
    Unsupported {
        /// The API or feature (`ncclAlltoAll`, `Config::graph_usage_mode`).
        api: &'static str,
        /// The first NCCL release that has it (from the headers).
        since: Version,
        /// The version of the libnccl loaded.
        runtime: Version,
    },
    /// The libnccl in use is a release whose device-API structures this
    /// crate does not know (NCCL changes them between releases): it would
    /// not know how many bytes NCCL writes, or how to lay out its
    /// requirements.
    #[error(
        "{api}: the device API's structures of libnccl {runtime} are not known to this build (known: {known}); run with one of those releases or update nccl-rs"
    )]
    UnknownLayout {
        /// The call refused (`ncclDevCommCreate`).
        api: &'static str,
        /// The version of the libnccl loaded.
        runtime: Version,
        /// The releases this build knows.
        known: String,
    },
    /// The libnccl loaded is older than the oldest this crate supports.
    #[error(
        "libnccl {runtime} is older than NCCL {minimum}, the oldest this crate supports: run with a newer libnccl (LD_LIBRARY_PATH, or pip install nvidia-nccl-cu12)"
    )]
    LibraryTooOld {
        /// Version of the library loaded.
        runtime: Version,
        /// The oldest supported ([`MIN_VERSION`](crate::MIN_VERSION)).
        minimum: Version,
    },
    /// No libnccl could be opened (`runtime-load`), with every place tried.
    #[error("{0}")]
    Library(sys::LoadError),
    /// A non-blocking operation did not finish in time; the communicator was
    /// aborted.
    #[error("{op} did not finish within {after:?}; the communicator was aborted")]
    Timeout {
        /// What was waited for (`ncclCommInitRankConfig`).
        op: &'static str,
        /// The limit.
        after: std::time::Duration,
    },
    /// An operation on a communicator did not finish in time and the
    /// communicator was kept, in state [`CommState::Failed`], so that its
    /// survivors can recover: [`Comm::revoke`](crate::Comm::revoke) it,
    /// [`Comm::shrink`](crate::Comm::shrink) it with
    /// [`ShrinkMode::Abort`](crate::ShrinkMode::Abort), or abort it.
    #[error(
        "{op} did not finish within {after:?}; the communicator is kept (failed) for recovery: revoke it, shrink it with ShrinkMode::Abort, or abort it"
    )]
    Stalled {
        /// What was waited for (`wait_recoverable`, `ncclAllReduce`).
        op: &'static str,
        /// The limit.
        after: std::time::Duration,
    },
    /// The call is not allowed in the state the communicator is in (see
    /// [`CommState`]); NCCL was not called.
    #[error("{op}: not allowed while the communicator is {state}; allowed now: {allowed}")]
    WrongState {
        /// The call refused.
        op: &'static str,
        /// The communicator's state.
        state: CommState,
        /// The calls the state allows.
        allowed: String,
    },
    /// The communicator was aborted (by [`Comm::wait_or_abort`](crate::Comm::wait_or_abort) after
    /// an error or timeout, or at an [`AbortHandle`](crate::AbortHandle)'s
    /// request); it cannot be used again.
    #[error("{op}: the communicator was aborted; create a new one")]
    Aborted {
        /// The call that found it aborted.
        op: &'static str,
    },
    /// The launcher's environment variables are missing, malformed or
    /// contradict each other.
    #[error("launcher environment: {var}: {problem}")]
    LaunchEnv {
        /// The variable (or variables) at fault.
        var: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The rendezvous address is already in use (another job, or a stale one).
    #[error(
        "rendezvous: cannot listen on {addr}: address already in use; pick another MASTER_PORT or stop the process holding it"
    )]
    AddrInUse {
        /// The address.
        addr: String,
    },
    /// Rank 0 could not be reached before the deadline.
    #[error(
        "rendezvous: rank 0 at {addr} not reachable within {waited:?} (last error: {last}); is rank 0 running and the address right?"
    )]
    RootUnreachable {
        /// Where rank 0 was expected.
        addr: String,
        /// How long this rank tried.
        waited: std::time::Duration,
        /// The last connection error.
        last: String,
    },
    /// Rank 0 gave up waiting for some ranks.
    #[error("rendezvous: {missing_count} of {world} ranks did not join within {waited:?}: ranks {missing:?}{}", if *missing_count > missing.len() { " and more" } else { "" })]
    RanksMissing {
        /// The first (at most 32) ranks that never joined.
        missing: Vec<usize>,
        /// How many ranks never joined.
        missing_count: usize,
        /// World size.
        world: usize,
        /// How long rank 0 waited.
        waited: std::time::Duration,
    },
    /// The other side of the rendezvous refused this rank, or broke the
    /// protocol (wrong secret, garbage, truncated or oversized message,
    /// duplicate rank, different world size).
    #[error("rendezvous with {peer}: {reason}")]
    Rendezvous {
        /// The peer's address.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// A TCPStore (PyTorch's key-value store protocol, client or server)
    /// failed: unreachable, no answer before the deadline, or an answer that
    /// breaks the protocol.
    #[error("store at {addr}: {op}: {reason}")]
    Store {
        /// The store's address.
        addr: String,
        /// The operation (`get nccl-rs/run/0/uid`, `connect`).
        op: String,
        /// What went wrong.
        reason: String,
    },
    /// A number or text that is not an NCCL version.
    #[error(transparent)]
    InvalidVersion(#[from] VersionError),
    /// Earlier blocking creations that timed out are still blocked inside
    /// NCCL (their peers never came), as many as allowed; no further one is
    /// started (`nccl::MAX_STUCK_CREATIONS`).
    #[error(
        "{op}: {stuck} earlier blocking creations are still stuck inside NCCL after their timeouts; not starting another (use a non-blocking Config to make creation abortable)"
    )]
    CreationStuck {
        /// The creation refused.
        op: &'static str,
        /// How many are stuck.
        stuck: usize,
    },
    /// Earlier communicators' aborts, left to their threads, are still
    /// running inside NCCL, as many as allowed (`nccl::MAX_ABORTS_RUNNING`):
    /// no new communicator is made until some return.
    #[error(
        "{op}: {running} aborts of earlier communicators are still running inside NCCL (a CUDA graph that captured their calls may still be alive); not making another communicator"
    )]
    AbortsRunning {
        /// The creation refused.
        op: &'static str,
        /// How many are still running.
        running: usize,
    },
    /// The memory is still in use by work queued on the GPU after the wait
    /// allowed; it was left as it was (still registered, not freed).
    #[error(
        "{op}: the buffer is still in use after {after:?}; it stays registered with its communicator"
    )]
    Busy {
        /// The call (`deregister`).
        op: &'static str,
        /// How long it waited.
        after: std::time::Duration,
    },
    /// A call that cannot run inside a [`group`](crate::group): a call given a
    /// bare stream (grouped calls take [`Group::on`](crate::Group::on)), a
    /// nested group, or creating, splitting or finalizing a communicator.
    /// NCCL was not called.
    #[error(
        "{op}: not allowed while a group is open on this thread; pass g.on(&stream) to put a call in the group, or make it after the group"
    )]
    InGroup {
        /// The call refused.
        op: &'static str,
    },
    /// Memory would have to be registered while the stream captures a CUDA
    /// graph, where registering is not allowed (it would invalidate the
    /// capture): `SymmetricPool::alloc` (a header of NCCL 2.27+) had no
    /// free buffer of the size asked for. Nothing was called; the capture
    /// goes on. Reserve the buffers before the capture
    /// (`SymmetricPool::reserve`).
    #[error(
        "{op}: the stream is capturing a CUDA graph and the pool has no free buffer of {bytes} bytes; windows cannot be registered inside a capture: call SymmetricPool::reserve before the capture"
    )]
    Capturing {
        /// The call refused.
        op: &'static str,
        /// The size class asked for, in bytes.
        bytes: usize,
    },
    /// The CUDA driver library (`libcuda.so.1`) cannot be loaded.
    #[error(
        "no CUDA driver: cannot load {}; install the NVIDIA driver, or check LD_LIBRARY_PATH", tried.join(", ")
    )]
    NoDriver {
        /// The file names tried.
        tried: Vec<String>,
    },
    /// The CUDA driver is older than the CUDA API this build uses.
    #[error(
        "the CUDA driver supports CUDA {}.{}, older than the CUDA {}.{} API this build uses; update the driver or build with an older cudarc CUDA feature", driver / 1000, driver % 1000 / 10, needs / 1000, needs % 1000 / 10
    )]
    DriverTooOld {
        /// `cuDriverGetVersion` (12040 for CUDA 12.4).
        driver: i32,
        /// The CUDA version of the API in use, same encoding.
        needs: i32,
    },
    /// No GPU of that ordinal.
    #[error("no GPU {ordinal}: the CUDA driver sees {count}")]
    NoGpu {
        /// The GPU asked for.
        ordinal: usize,
        /// How many the driver sees.
        count: usize,
    },
    /// Bytes or text that are not a unique id.
    #[error("invalid unique id: {reason}")]
    InvalidUniqueId {
        /// What is wrong (length, character).
        reason: String,
    },
}

impl Error {
    /// The NCCL code, when NCCL reported the error.
    pub fn nccl_code(&self) -> Option<NcclCode> {
        match self {
            Error::Nccl { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn invalid(
        op: &'static str,
        arg: &'static str,
        expected: impl fmt::Display,
        actual: impl fmt::Display,
    ) -> Error {
        Error::InvalidArgument {
            op,
            arg,
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }
}

/// Size of NCCL's last-error buffer (`ncclLastError`, `src/debug.cc`): 1024
/// bytes in every release 2.18 – 2.30.
const LAST_ERROR_LEN: usize = 1024;

/// `ncclGetLastError` as a `String`: NCCL's last warning text, best effort.
///
/// NCCL keeps one buffer for the whole process, whatever `comm` is given
/// (`ncclGetLastError` ignores it), written by any thread's warning under a
/// lock of NCCL's that this side cannot take. So it is read byte by byte,
/// volatile and bounded by the buffer: a warning written meanwhile, from
/// another communicator or thread, gives mixed text, never a read past the
/// buffer, and the compiler assumes nothing of bytes that change.
pub(crate) fn last_error(comm: sys::ncclComm_t) -> String {
    // SAFETY: ncclGetLastError only returns the address of NCCL's static
    // buffer (init.cc; comm is not read), or null in a runtime-load build
    // without a library.
    let p = unsafe { sys::ncclGetLastError(comm) }.cast::<u8>();
    if p.is_null() {
        return String::new();
    }
    let mut text = Vec::with_capacity(128);
    for i in 0..LAST_ERROR_LEN {
        // SAFETY: p is NCCL's static buffer of LAST_ERROR_LEN bytes, alive
        // as long as the library (never unloaded), so every read is in
        // bounds. A warning that NCCL writes at this moment from another
        // thread (under its lock, which this side cannot take) races with
        // this read: Rust's model calls that undefined even for volatile
        // reads. It is inherent to `ncclGetLastError`, and accepted here
        // for an error message: each byte is read once, as a `u8` (any
        // value is valid), the loop never reads past the buffer whatever the
        // bytes, and the text goes through `from_utf8_lossy`.
        let b = unsafe { p.add(i).read_volatile() };
        if b == 0 {
            break;
        }
        text.push(b);
    }
    String::from_utf8_lossy(&text).trim().to_string()
}

/// NCCL's description of a raw result code (`ncclGetErrorString`).
pub fn error_string(code: u32) -> String {
    // SAFETY: ncclGetErrorString returns a static string for every value.
    let p = unsafe { sys::ncclGetErrorString(sys::ncclResult_t(code)) };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated and static.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// An [`Error::Nccl`] for `api`'s result `r` with NCCL's last error text
/// ([`last_error`]); the funnel (`base::call`) adds the cases
/// where NCCL was never reached.
#[cold]
#[inline(never)]
pub(crate) fn nccl_error(api: &'static str, r: sys::ncclResult_t, comm: sys::ncclComm_t) -> Error {
    Error::Nccl {
        api,
        code: NcclCode::from_raw(r).unwrap_or(NcclCode::Unknown(0)),
        last_error: last_error(comm),
    }
}
