// A registration borrows its communicator, which is not Sync: it cannot move
// to another thread while the communicator stays.
fn main() {
    fn needs_send<T: Send>() {}
    needs_send::<nccl::Registered<'static, f32, cudarc::driver::CudaSlice<f32>>>();
}
