// NCCL's groups belong to the thread that opened them: the group's handle
// cannot go to another thread.
fn demo(stream: &std::sync::Arc<cudarc::driver::CudaStream>) -> nccl::Result<()> {
    nccl::group(|g| {
        std::thread::scope(|s| {
            s.spawn(|| {
                let _ = g.on(stream);
            });
        });
        Ok(())
    })
}

fn main() {}
