// cudarc's `DevicePtr`/`DevicePtrMut` are safe to implement: a type of any
// program could report an address and a length that are not live device
// memory, and NCCL would write there. The collectives take only
// `DeviceBuffer`/`DeviceBufferMut`, which such a type must implement with
// `unsafe impl`.
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop, sys};
use std::sync::Arc;

struct Forged(Arc<CudaStream>);

impl DeviceSlice<f32> for Forged {
    fn len(&self) -> usize {
        1 << 30
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.0
    }
}

impl DevicePtr<f32> for Forged {
    fn device_ptr<'a>(&'a self, _: &'a CudaStream) -> (sys::CUdeviceptr, SyncOnDrop<'a>) {
        (0x1000, SyncOnDrop::Sync(None))
    }
}

impl DevicePtrMut<f32> for Forged {
    fn device_ptr_mut<'a>(&'a mut self, _: &'a CudaStream) -> (sys::CUdeviceptr, SyncOnDrop<'a>) {
        (0x1000, SyncOnDrop::Sync(None))
    }
}

fn demo(comm: &nccl::Comm, stream: &Arc<CudaStream>) -> nccl::Result<()> {
    let mut forged = Forged(stream.clone());
    comm.all_reduce_in_place(&mut forged, nccl::ReduceOp::Sum, stream)
}

fn main() {}
