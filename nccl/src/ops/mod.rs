//! Operations on a communicator, bound to a stream: collectives
//! ([`collective`]), point-to-point ([`p2p`]), reduction operators
//! ([`reduce_op`]) and groups ([`group`]), all through one funnel
//! ([`call`]).

pub(crate) mod call;
mod collective;
mod group;
mod p2p;
mod reduce_op;

pub use collective::CONNECT_BYTES;
#[cfg(nccl_fn = "ncclGroupSimulateEnd")]
pub use group::group_simulate;
pub use group::{Enqueue, Group, OnStream, group};
pub(crate) use group::{GroupRef, calls_as_one};
pub use reduce_op::{PreMulSum, ReduceOp};
