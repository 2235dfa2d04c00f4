// NCCL allows one thread at a time per communicator: Comm is not Sync.
fn main() {
    fn needs_sync<T: Sync>() {}
    needs_sync::<nccl::Comm>();
}
