//! The names most programs use, for `use nccl::prelude::*;`: the
//! communicator and its configuration, ids, reduction operators, element
//! types, groups, the library's buffers (`NcclBuffer`, `Memory`), and the
//! cudarc types that collectives take.

pub use crate::{
    Comm, Config, DeviceBuffer, DeviceBufferMut, Enqueue, Memory, NcclBuffer, NcclType, ReduceOp,
    UniqueId, context, device_count, group,
};
pub use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
