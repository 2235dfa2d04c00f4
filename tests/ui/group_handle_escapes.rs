// The group's view of a stream cannot leave the group.
fn demo(stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
    let _leak = nccl::group(|g| Ok(g.on(stream)))?;
    Ok(())
}

fn main() {}
