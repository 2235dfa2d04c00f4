// A registration owns its buffer until NCCL has released it, so a borrowed
// view (whose memory its owner could free meanwhile) cannot be registered.
fn demo(comm: &nccl::Comm, buf: &mut cudarc::driver::CudaSlice<f32>) -> nccl::Result<()> {
    let view = buf.slice_mut(0..4);
    // SAFETY: (the promise about other ranks is not what is checked here)
    let _reg = unsafe { comm.register(view) }?;
    Ok(())
}

fn main() {}
