//! The names most programs use, for `use nccl::prelude::*;`: the
//! communicator and its configuration, ids, reduction operators, element
//! types, groups, and the cudarc types that collectives take.

pub use crate::{
    Comm, Config, Enqueue, NcclBuffer, NcclType, ReduceOp, UniqueId, context, device_count, group,
};
pub use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
