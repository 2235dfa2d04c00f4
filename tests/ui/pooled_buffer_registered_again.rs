// A pooled buffer is a window of its pool's communicator: it cannot be
// registered again, with another communicator or the same one. Registration
// takes owned `Send + 'static` buffers; a pooled buffer borrows its pool,
// which stays on its communicator's thread.
fn demo(
    pool: &nccl::SymmetricPool<'_>,
    other: &nccl::Comm,
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
) -> nccl::Result<()> {
    let buf = pool.alloc::<f32>(1024, stream)?;
    // SAFETY: (the promise about other ranks is not what is checked here)
    let _win = unsafe { other.window_register(buf, true) }?;
    Ok(())
}

fn main() {}
