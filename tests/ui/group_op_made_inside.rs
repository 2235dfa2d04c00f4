// A custom reduction made inside the group is destroyed before the launch:
// it must not compile.
use nccl::{Comm, ReduceOp};

fn demo(comm: &Comm, stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
    let send = stream.alloc_zeros::<f32>(8)?;
    let mut recv = stream.alloc_zeros::<f32>(8)?;
    nccl::group(|g| {
        let op = comm.pre_mul_sum(0.5f32)?;
        comm.all_reduce(&send, &mut recv, ReduceOp::PreMulSum(&op), g.on(stream))
    })
}

fn main() {}
