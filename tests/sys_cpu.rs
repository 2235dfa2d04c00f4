//! nccl-sys against the real libnccl, on any machine (no GPU needed).

use std::ffi::CStr;

use nccl_sys as sys;

fn version() -> i32 {
    let mut v = 0;
    // SAFETY: ncclGetVersion writes one int through a valid pointer.
    let r = unsafe { sys::ncclGetVersion(&mut v) };
    assert_eq!(r, sys::ncclResult_t::ncclSuccess);
    v
}

#[test]
fn linked_library_version_equals_header_version() {
    assert_eq!(version(), sys::NCCL_VERSION_CODE as i32);
    assert_eq!(sys::HEADER_VERSION_CODE, sys::NCCL_VERSION_CODE as i32);
    assert_eq!(
        sys::NCCL_VERSION_CODE,
        sys::NCCL_MAJOR * 10000 + sys::NCCL_MINOR * 100 + sys::NCCL_PATCH
    );
}

#[test]
fn link_mode_is_reported() {
    assert_ne!(
        sys::LINK_MODE,
        sys::LinkMode::None,
        "a real build is linked"
    );
    assert!(!sys::BUILD_LIB_DIR.is_empty());
}

#[test]
fn error_string_for_every_result_code() {
    let codes = [
        (sys::ncclResult_t::ncclSuccess, "no error"),
        (
            sys::ncclResult_t::ncclUnhandledCudaError,
            "unhandled cuda error",
        ),
        (sys::ncclResult_t::ncclSystemError, "unhandled system error"),
        (sys::ncclResult_t::ncclInternalError, "internal error"),
        (sys::ncclResult_t::ncclInvalidArgument, "invalid argument"),
        (sys::ncclResult_t::ncclInvalidUsage, "invalid usage"),
        (
            sys::ncclResult_t::ncclRemoteError,
            "remote process exited or there was a network error",
        ),
        (
            sys::ncclResult_t::ncclInProgress,
            "NCCL operation in progress",
        ),
    ];
    assert_eq!(codes.len() as u32, sys::ncclResult_t::ncclNumResults.0);
    for (code, want) in codes {
        // SAFETY: ncclGetErrorString returns a static C string for any code.
        let s = unsafe { CStr::from_ptr(sys::ncclGetErrorString(code)) };
        let s = s.to_str().unwrap();
        assert!(
            s.contains(want),
            "code {}: {s:?} does not contain {want:?}",
            code.0
        );
    }
    // a value this header does not know is representable and answered
    // SAFETY: as above; NCCL answers unknown codes with a fixed string.
    let s = unsafe { CStr::from_ptr(sys::ncclGetErrorString(sys::ncclResult_t(99))) };
    assert!(!s.to_bytes().is_empty());
}

#[test]
fn unique_id_is_produced() {
    let mut a = sys::ncclUniqueId::default();
    let mut b = sys::ncclUniqueId::default();
    // SAFETY: ncclGetUniqueId fills the 128-byte struct.
    let r = unsafe { sys::ncclGetUniqueId(&mut a) };
    assert_eq!(r, sys::ncclResult_t::ncclSuccess);
    // SAFETY: as above.
    let r = unsafe { sys::ncclGetUniqueId(&mut b) };
    assert_eq!(r, sys::ncclResult_t::ncclSuccess);
    assert!(
        a.internal.iter().any(|&c| c != 0),
        "the id is not all zeros"
    );
    assert_ne!(a, b, "two ids differ");
}

#[test]
fn comm_init_without_a_gpu_fails_with_unhandled_cuda_error() {
    if let Ok(n) = nccl_rs_tests::gpu_count() {
        nccl_rs_tests::say(&format!(
            "comm_init_without_a_gpu: {n} GPU(s) present; the no-GPU failure path is tested on CPU machines, \
             and sys_gpu tests the success path here"
        ));
        return;
    }
    let mut id = sys::ncclUniqueId::default();
    // SAFETY: fills the id.
    let r = unsafe { sys::ncclGetUniqueId(&mut id) };
    assert_eq!(r, sys::ncclResult_t::ncclSuccess);
    let mut comm: sys::ncclComm_t = std::ptr::null_mut();
    // SAFETY: comm is a valid out-pointer; world 1, rank 0 is a valid pairing.
    let r = unsafe { sys::ncclCommInitRank(&mut comm, 1, id, 0) };
    assert_eq!(r, sys::ncclResult_t::ncclUnhandledCudaError);
    // SAFETY: a null communicator asks for the thread's last error.
    let last = unsafe { CStr::from_ptr(sys::ncclGetLastError(std::ptr::null_mut())) };
    let last = last.to_string_lossy();
    assert!(
        last.contains("CUDA driver version is insufficient"),
        "ncclGetLastError: {last:?}"
    );
}
