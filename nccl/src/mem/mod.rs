//! Memory NCCL knows about: buffers from `ncclMemAlloc` and their views,
//! user buffer registration (`ncclCommRegister`) and symmetric windows
//! (`ncclCommWindowRegister`, NCCL 2.27+).

mod buffer;
mod registration;
mod track;

pub use buffer::{DROP_WAIT, NcclBuffer, NcclView, NcclViewMut};
pub use registration::{Local, Registered, Registration, RegistrationKind};
#[cfg(nccl_fn = "ncclCommWindowRegister")]
pub use registration::{Win, Window};
