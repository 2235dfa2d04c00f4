//! Safe Rust bindings to NVIDIA NCCL on [cudarc]: RAII communicators,
//! collectives bound to a cudarc stream whose arguments are checked before
//! NCCL sees them, and typed errors that carry NCCL's own explanation.
//!
//! # Example
//!
//! One process, one GPU, world size 1 (with more ranks, one of them makes
//! the [`UniqueId`] and sends it to the others, e.g. as hex text):
//!
//! ```no_run
//! use nccl::prelude::*;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let ctx = nccl::context(0)?; // the driver and the GPU checked first
//!     let stream = ctx.new_stream()?;
//!     let id = UniqueId::new()?;
//!     let comm = Comm::init_rank(&ctx, 1, &id, 0)?;
//!
//!     // buffers of the stream-ordered pool, ordered by this crate against
//!     // their stream: calls there make no event call (cudarc's `CudaSlice`
//!     // works too, with cudarc's per-call events)
//!     let send = NcclBuffer::from_host(&stream, &[1.0f32, 2.0, 3.0], Memory::Stream)?;
//!     let mut recv = NcclBuffer::<f32>::alloc_zeros_in(&stream, 3, Memory::Stream)?;
//!     comm.all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)?;
//!     assert_eq!(stream.clone_dtoh(&recv)?, [1.0, 2.0, 3.0]);
//!
//!     // A wrong length is a typed error, and NCCL is never called:
//!     let mut short = NcclBuffer::<f32>::alloc_zeros_in(&stream, 2, Memory::Stream)?;
//!     let err = comm.all_reduce(&send, &mut short, ReduceOp::Sum, &stream).unwrap_err();
//!     assert!(matches!(err, nccl::Error::InvalidArgument { op: "all_reduce", .. }));
//!
//!     comm.finalize()?; // the orderly close; dropping a Comm aborts it
//!     Ok(())
//! }
//! ```
//!
//! # What is checked
//!
//! Before NCCL is called: buffer lengths against each collective's contract,
//! `root`/`peer` against the world size, that the stream
//! belongs to the communicator's GPU, that out-of-place buffers do not
//! overlap, that a custom op belongs to this communicator and element type,
//! and that the NCCL in use has the API (else [`Error::Unsupported`]).
//!
//! # Streams, cudarc's event tracking, and CUDA graphs
//!
//! Collectives take buffers through [`DeviceBuffer`]/[`DeviceBufferMut`]:
//! cudarc's `CudaSlice` and views, this crate's buffers and registrations,
//! or a type of your own that promises, with `unsafe impl`, what they say
//! (cudarc's own `DevicePtr` is safe to implement with any address, so it
//! cannot be enough for NCCL). They ask cudarc for the pointers, so
//! cudarc's cross-stream tracking stays correct: once a context has a stream
//! of its own (cudarc turns tracking on with the first `new_stream`), each
//! `CudaSlice` waits for its last uses and records its use by the collective
//! once NCCL has enqueued it (event waits and records per buffer and call,
//! even when every use is on one stream). [`NcclBuffer`] orders its uses
//! against the stream it was allocated on instead: uses there cost no driver
//! call, uses on other streams are ordered both ways, and it can be sliced
//! ([`NcclView`], [`NcclViewMut`]) for buckets. On the stream-ordered pool
//! ([`Memory::Stream`], `CudaSlice`'s memory) it is the path at the C loop's
//! speed, with tracking on: the one the example above takes. A `CudaSlice`
//! an engine already has moves onto that path without a copy with
//! [`NcclBuffer::from_cuda_slice`]. Programs that order their
//! streams themselves can also skip cudarc's cost with its (unsafe)
//! `CudaContext::disable_event_tracking` before allocating.
//! `docs/performance.md` gives the measured costs.
//!
//! Collectives can be captured into a CUDA graph with cudarc's
//! `begin_capture`/`end_capture` and replayed. CUDA refuses, inside a
//! capture, a wait on an event recorded outside it, which is what cudarc's
//! tracking does: capture collectives on buffers made while event tracking
//! was off (as for any cudarc work in a graph). In a capture NCCL registers
//! the buffers of the collectives itself (`NCCL_GRAPH_REGISTER`, on by
//! default), so peers may then write them directly, sized by their own
//! counts: there, ranks that disagree on counts corrupt memory rather than
//! data (README, "What every rank must agree on").
//!
//! # Symmetric memory
//!
//! NCCL's symmetric-memory kernels (small messages, NCCL 2.27+) run on
//! *windows*: memory from `ncclMemAlloc` registered with every rank at once
//! (`Comm::window_register`). Registering is collective, slow next to a
//! small collective, and impossible inside a CUDA graph capture. A
//! `SymmetricPool` (a header of 2.27+) registers each window once, per size
//! class, and hands it out again after its buffer drops; `reserve` registers
//! ahead of a capture, and an allocation while its stream captures is served
//! from the pool or refused (`Error::Capturing`), never registered. Its
//! buffers borrow the pool, which borrows the communicator: one
//! registration per buffer, which the compiler enforces. Every rank makes
//! the same sequence of allocations and drops, which gives every rank the
//! same windows (`SymmetricPool::new` is `unsafe` for that promise).
//! `stats()` counts registrations and reuses; `is_symmetric()` says whether
//! NCCL made windows at all (without symmetric memory support, the pool is
//! a cache of plain `ncclMemAlloc` memory).
//!
//! # Deadlines: every wait ends
//!
//! | deadline | bounds | at the deadline |
//! | --- | --- | --- |
//! | [`Config::timeout`] | creation; finalize and destroy; a non-blocking communicator's split, shrink, grow and each of its calls | [`Error::Timeout`]; the communicator is aborted (a blocking creation is left to NCCL, at most [`MAX_STUCK_CREATIONS`]; a blocking finalize, or a destroy, to a thread of its own, and new communicators wait while [`MAX_ABORTS_RUNNING`] are so) |
//! | the `timeout` of [`Comm::wait_or_abort`] | the work queued on a stream | [`Error::Timeout`]; the communicator is aborted |
//! | the `timeout` of [`Comm::wait_recoverable`] | the same | [`Error::Stalled`]; the communicator is kept, [`Failed`](CommState::Failed), for revoke or shrink |
//! | the `timeout` of [`Comm::connect`] | pre-connecting the peers | as `wait_or_abort` |
//! | [`DROP_WAIT`] | dropping a buffer or deregistering one whose stream is still busy | the memory is leaked (logged), never freed under a kernel |
//! | `bootstrap::LaunchOptions::timeout` | the rendezvous and creation under a launcher | a typed rendezvous error or `Timeout` |
//!
//! An [`AbortHandle`] ends any of these waits from another thread.
//!
//! # Groups
//!
//! [`group()`] runs a closure between `ncclGroupStart` and `ncclGroupEnd`;
//! calls join the group by taking [`Group::on`]`(&stream)` as their stream:
//!
//! ```no_run
//! # fn demo(comm: &nccl::Comm, a: &cudarc::driver::CudaSlice<f32>,
//! #         b: &mut cudarc::driver::CudaSlice<f32>,
//! #         s: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
//! let peer = (comm.rank() + 1) % comm.world_size();
//! nccl::group(|g| {
//!     comm.send(a, peer, g.on(s))?;
//!     comm.recv(b, peer, g.on(s))
//! })
//! # }
//! ```
//!
//! NCCL launches grouped calls at the group's end, so everything they borrow
//! must outlive the group: the compiler checks that (a buffer made or a
//! communicator dropped inside the closure does not compile), and cudarc
//! records the buffers' uses after the launch. A call given a bare stream
//! inside the closure, and a nested group, are [`Error::InGroup`].
//!
//! # Many processes
//!
//! Every rank needs rank 0's [`UniqueId`]. A [`Bootstrap`] is a channel
//! that hands it over; bring your own (MPI, your engine's store) and this
//! crate needs nothing more. With the default feature `bootstrap`,
//! `bootstrap::init_from_launcher` goes from "torchrun / srun / mpirun /
//! mpiexec started me" to a communicator, through this crate's authenticated
//! TCP rendezvous or a PyTorch `TCPStore` (the `bootstrap` module has the
//! details).
//! `nccl/examples/weight_sync.rs` puts a PyTorch process and Rust processes
//! in one communicator.
//!
//! # Versions
//!
//! This builds against every NCCL from 2.18 ([`MIN_VERSION`]) to the newest
//! and runs on every libnccl from 2.18 on, whatever header it was built
//! against. [`version()`] is the libnccl in use, [`HEADER_VERSION`] the
//! `nccl.h` this was built against; [`capabilities()`] reports both, the link
//! mode, the library file, the optional APIs and NCCL's parameters (from
//! NCCL 2.30.4, whose parameter registry `params()` and `param()` read with
//! their types: [`Params`]).
//!
//! An API exists in this crate when the header declares it (cfgs from
//! nccl-sys), and works when the libnccl in use has it too; otherwise it
//! returns [`Error::Unsupported`] with the first release that has it (from
//! NCCL's headers, [`nccl_sys::since`]) and the runtime's version, never a
//! loader failure: with dynamic linking, functions newer than 2.18 are
//! looked up by name when first called. [`require_api`] asks beforehand.
//! `Config` fields are set only when both have them, and the
//! `ncclConfig_t` passed is the one the runtime's own header would make.
//!
//! # Link modes
//!
//! Static or dynamic as nccl-sys finds NCCL (see its docs), or, with the
//! feature `runtime-load`, nothing linked at build time and libnccl opened at
//! run time: from a path given to [`library::load`], an environment variable
//! (`NCCL_RS_LIBRARY`, vLLM's `VLLM_NCCL_SO_PATH`), a libnccl already loaded
//! in the process (reused), the loader's path, or the `nvidia-nccl` wheel of
//! the active Python environment ([`library`] has the details).
//! [`is_available()`] says whether NCCL can be used at all, without failing.

#![warn(missing_docs)]

pub use cudarc;
pub use nccl_sys as sys;

// The layers, bottom up (docs/architecture.md): base; comm; mem; ops;
// device; elastic; caps, params and library on base; bootstrap on top. No module
// imports one above it.
#[macro_use]
mod base;
#[cfg(feature = "bootstrap")]
pub mod bootstrap;
mod caps;
mod comm;
mod device;
mod elastic;
pub mod library;
mod mem;
mod ops;
mod params;
pub mod prelude;

pub use base::driver::{CUDA_API_VERSION, context, device_count, driver_version};
pub use base::dtype::{F8E4M3, F8E5M2, NcclType, bf16, f16};
pub use base::error::{Error, NcclCode, Result, error_string};
pub use base::runtime::{require_api, version};
pub use base::state::{CommOp, CommState, ShrinkMode};
pub use base::version::{HEADER_VERSION, MIN_VERSION, Version, VersionError};
pub use caps::{
    Capabilities, Feature, LinkMode, OPTIONAL_APIS, TUNING_PARAMS, Tuning, capabilities,
    is_available, library_error,
};
pub use comm::{
    AbortHandle, Bootstrap, Comm, Config, MAX_ABORTS_RUNNING, MAX_STUCK_CREATIONS, UNIQUE_ID_BYTES,
    UniqueId, Watchdog,
};
pub use device::{CommProperties, DevComm, DevCommBytes, DevCommRequirements, Team};
pub use elastic::{ElasticApi, GrowPlan, MemStats, RankMap, Recovery, Shrunk, elastic_support};
pub use mem::{
    DROP_WAIT, DeviceBuffer, DeviceBufferMut, Local, Memory, NcclBuffer, NcclView, NcclViewMut,
    Registered, Registration, RegistrationKind, SliceNotTaken,
};
#[cfg(nccl_fn = "ncclCommWindowRegister")]
pub use mem::{PoolStats, SymmetricBuffer, SymmetricPool, Win, Window};
#[cfg(nccl_fn = "ncclGroupSimulateEnd")]
pub use ops::group_simulate;
pub use ops::{CONNECT_BYTES, Enqueue, Group, OnStream, PreMulSum, ReduceOp, group};
#[cfg(nccl_fn = "ncclAllReduceConfig")]
pub use ops::{CollConfig, Configured};
#[cfg(nccl_fn = "ncclPutSignal")]
pub use ops::{Signal, SignalWait, WindowMemory};
pub use params::{Param, ParamGet, ParamType, ParamValue, Params};
#[cfg(nccl_fn = "ncclParamBind")]
pub use params::{param, params};
