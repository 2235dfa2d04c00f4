// send/recv pairs: a receive buffer made inside the group must not compile.
use nccl::Comm;

fn demo(comm: &Comm, stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
    let send = stream.alloc_zeros::<f32>(8)?;
    nccl::group(|g| {
        let mut recv = stream.alloc_zeros::<f32>(8)?;
        comm.send(&send, 0, g.on(stream))?;
        comm.recv(&mut recv, 0, g.on(stream))
    })
}

fn main() {}
