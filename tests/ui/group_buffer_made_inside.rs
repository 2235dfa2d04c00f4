// A buffer made inside the group is freed before the group's end launches
// the call: it must not compile.
use nccl::{Comm, ReduceOp};

fn demo(comm: &Comm, stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
    let mut recv = stream.alloc_zeros::<f32>(8)?;
    nccl::group(|g| {
        let send = stream.alloc_zeros::<f32>(8)?;
        comm.all_reduce(&send, &mut recv, ReduceOp::Sum, g.on(stream))
    })
}

fn main() {}
