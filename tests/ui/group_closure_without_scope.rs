// The pattern that freed buffers under a group's launch: a closure with no
// group handle, buffers made inside it. It must not compile.
use nccl::{Comm, ReduceOp};

fn demo(comm: &Comm, stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
    nccl::group(|| {
        let s = stream.alloc_zeros::<f32>(8)?;
        let mut r = stream.alloc_zeros::<f32>(8)?;
        comm.all_reduce(&s, &mut r, ReduceOp::Sum, stream)
    })
}

fn main() {}
