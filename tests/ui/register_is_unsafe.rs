// Registering a buffer is a promise about the other ranks (they must pass
// registered buffers to the same calls): it takes `unsafe`.
fn demo(comm: &nccl::Comm, buf: nccl::NcclBuffer<f32>) -> nccl::Result<()> {
    let _reg = comm.register(buf)?;
    Ok(())
}

fn main() {}
