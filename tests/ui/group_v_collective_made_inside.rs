// v-collectives: a buffer made inside the group must not compile.
use nccl::Comm;

fn demo(comm: &Comm, stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
    let send = stream.alloc_zeros::<f32>(8)?;
    nccl::group(|g| {
        let mut recv = stream.alloc_zeros::<f32>(8)?;
        comm.all_gather_v(&send, &mut recv, &[8], g.on(stream))
    })
}

fn main() {}
