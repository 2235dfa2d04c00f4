// A communicator used in the group and dropped (aborted) inside it must not
// compile: NCCL launches its calls at the group's end.
use nccl::{Comm, ReduceOp};

fn demo(comm: Comm, stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
    let send = stream.alloc_zeros::<f32>(8)?;
    let mut recv = stream.alloc_zeros::<f32>(8)?;
    nccl::group(|g| {
        comm.all_reduce(&send, &mut recv, ReduceOp::Sum, g.on(stream))?;
        drop(comm);
        Ok(())
    })
}

fn main() {}
