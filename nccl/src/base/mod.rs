//! The bottom layer: what every other part uses and that uses nothing of
//! theirs. In order, each file using only those above it: untrusted text
//! ([`text`]), NCCL versions ([`version`]), communicator states
//! ([`state`]), errors ([`error`]), the libnccl in use ([`runtime`]), the one
//! way to call NCCL ([`call`]), argument contracts ([`contract`]), element
//! types ([`dtype`]), the CUDA driver ([`driver`]) and this thread's group
//! flag ([`thread`]).

pub(crate) mod error;
pub(crate) mod runtime;
pub(crate) mod state;
pub(crate) mod text;
pub(crate) mod version;
#[macro_use]
pub(crate) mod call;
pub(crate) mod contract;
pub(crate) mod driver;
pub(crate) mod dtype;
pub(crate) mod thread;
