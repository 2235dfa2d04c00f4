//! nccl-sys on a GPU: a communicator on GPU 0 all-reduces a cudarc buffer.
//! Built statically and dynamically for the GPU validation (docs/validation.md).

use cudarc::driver::{DevicePtr, DevicePtrMut};
use nccl_sys as sys;

#[test]
fn world_one_all_reduce_of_f32_on_gpu0() {
    let Some(ctx) = nccl_rs_tests::gpu_or_skip("world_one_all_reduce_of_f32_on_gpu0", 0) else {
        return;
    };
    nccl_rs_tests::say(&format!("nccl-sys link mode: {:?}", sys::LINK_MODE));
    let stream = ctx.new_stream().unwrap();
    let n = 1 << 20;
    let host: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5 - 3.0).collect();
    let send = stream.clone_htod(&host).unwrap();
    let mut recv = stream.alloc_zeros::<f32>(n).unwrap();

    let mut id = sys::ncclUniqueId::default();
    // SAFETY: fills the id.
    let r = unsafe { sys::ncclGetUniqueId(&mut id) };
    assert_eq!(r, sys::ncclResult_t::ncclSuccess);
    let mut comm: sys::ncclComm_t = std::ptr::null_mut();
    // SAFETY: valid out-pointer; the context of GPU 0 is current on this thread.
    let r = unsafe { sys::ncclCommInitRank(&mut comm, 1, id, 0) };
    assert_eq!(r, sys::ncclResult_t::ncclSuccess);
    {
        let (s, _g1) = send.device_ptr(&stream);
        let (d, _g2) = recv.device_ptr_mut(&stream);
        // SAFETY: both buffers hold n f32 on GPU 0 and stay alive until the
        // stream is synchronized below; the stream belongs to GPU 0.
        let r = unsafe {
            sys::ncclAllReduce(
                s as *const _,
                d as *mut _,
                n,
                sys::ncclDataType_t::ncclFloat32,
                sys::ncclRedOp_t::ncclSum,
                comm,
                stream.cu_stream() as sys::cudaStream_t,
            )
        };
        assert_eq!(r, sys::ncclResult_t::ncclSuccess);
    }
    let out = stream.clone_dtoh(&recv).unwrap();
    stream.synchronize().unwrap();
    assert_eq!(out, host, "world-1 sum is the input itself");
    // SAFETY: comm is valid and idle (stream synchronized).
    unsafe {
        assert_eq!(sys::ncclCommFinalize(comm), sys::ncclResult_t::ncclSuccess);
        assert_eq!(sys::ncclCommDestroy(comm), sys::ncclResult_t::ncclSuccess);
    }
}
