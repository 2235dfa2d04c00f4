// A registration owns its buffer until NCCL has released it, so a borrowed
// view (whose memory its owner could free meanwhile) cannot be registered.
fn demo(comm: &nccl::Comm, buf: &mut cudarc::driver::CudaSlice<f32>) -> nccl::Result<()> {
    let view = buf.slice_mut(0..4);
    let _reg = comm.register(view)?;
    Ok(())
}

fn main() {}
