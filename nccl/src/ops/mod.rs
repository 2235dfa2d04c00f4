//! Operations on a communicator, bound to a stream: collectives
//! ([`collective`]), point-to-point ([`p2p`]), reduction operators
//! ([`reduce_op`]), groups ([`mod@group`]), collectives with a per-call
//! configuration (`configured`, NCCL 2.31.2+) and one-sided puts and
//! signals (`rma`, NCCL 2.29.2+), all through one funnel ([`call`]).

pub(crate) mod call;
mod collective;
#[cfg(nccl_fn = "ncclAllReduceConfig")]
mod configured;
mod group;
mod p2p;
mod reduce_op;
#[cfg(nccl_fn = "ncclPutSignal")]
mod rma;

pub use collective::CONNECT_BYTES;
#[cfg(nccl_fn = "ncclAllReduceConfig")]
pub use configured::{CollConfig, Configured};
#[cfg(nccl_fn = "ncclGroupSimulateEnd")]
pub use group::group_simulate;
pub use group::{Enqueue, Group, OnStream, group};
pub(crate) use group::{GroupRef, calls_as_one};
pub use reduce_op::{PreMulSum, ReduceOp};
#[cfg(nccl_fn = "ncclPutSignal")]
pub use rma::{Signal, SignalWait, WindowMemory};
