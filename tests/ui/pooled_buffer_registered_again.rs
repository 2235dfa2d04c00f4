// A pooled buffer is a window of its pool's communicator: it cannot be
// registered again, with another communicator or the same one. Registration
// takes owned `Send + 'static` buffers; a pooled buffer borrows its pool and
// stays on its communicator's thread (not `Send`), so even a pool leaked for
// 'static cannot hand one over.
use std::sync::Arc;

use cudarc::driver::CudaStream;

fn borrowed(pool: &nccl::SymmetricPool<'_>, other: &nccl::Comm, s: &Arc<CudaStream>) {
    let buf = pool.alloc::<f32>(1024, s).unwrap();
    // SAFETY: (the promise about other ranks is not what is checked here)
    let _win = unsafe { other.window_register(buf, true) };
}

fn leaked(pool: &'static nccl::SymmetricPool<'static>, other: &nccl::Comm, s: &Arc<CudaStream>) {
    let buf = pool.alloc::<f32>(1024, s).unwrap();
    // SAFETY: as above
    let _reg = unsafe { other.register(buf) };
}

fn main() {}
