//! Memory NCCL knows about: buffers from `ncclMemAlloc` and their views,
//! user buffer registration (`ncclCommRegister`) and symmetric windows
//! (`ncclCommWindowRegister`, NCCL 2.27+) and a pool of them.

mod buffer;
#[cfg(nccl_fn = "ncclCommWindowRegister")]
mod pool;
mod registration;
mod track;

pub use buffer::{DROP_WAIT, NcclBuffer, NcclView, NcclViewMut};
#[cfg(nccl_fn = "ncclCommWindowRegister")]
pub use pool::{PoolStats, SymmetricBuffer, SymmetricPool};
pub use registration::{Local, Registered, Registration, RegistrationKind};
#[cfg(nccl_fn = "ncclCommWindowRegister")]
pub use registration::{Win, Window};
