//! nccl-sys against the real libnccl, on any machine (no GPU needed). CI
//! also runs these with a binary built on the newest header against the
//! oldest supported library (`NCCL_RS_EXPECT_RUNTIME` says which), and with
//! the library opened at run time (`runtime-load`).

use std::ffi::CStr;

use nccl_sys as sys;

fn version() -> i32 {
    let mut v = 0;
    // SAFETY: ncclGetVersion writes one int through a valid pointer.
    let r = unsafe { sys::ncclGetVersion(&mut v) };
    assert_eq!(r, sys::ncclResult_t::ncclSuccess);
    v
}

/// The runtime as `(major, minor, patch)`.
fn runtime() -> (u32, u32, u32) {
    let v = version() as u32;
    (v / 10000, v / 100 % 100, v % 100)
}

#[test]
fn runtime_version_is_the_expected_one() {
    let want = nccl_rs_tests::expected_runtime().unwrap_or((
        sys::NCCL_MAJOR,
        sys::NCCL_MINOR,
        sys::NCCL_PATCH,
    ));
    assert_eq!(runtime(), want, "NCCL_RS_EXPECT_RUNTIME or the header's");
    assert_eq!(sys::HEADER_VERSION_CODE, sys::NCCL_VERSION_CODE as i32);
    assert_eq!(
        sys::NCCL_VERSION_CODE,
        sys::NCCL_MAJOR * 10000 + sys::NCCL_MINOR * 100 + sys::NCCL_PATCH
    );
}

#[test]
fn link_mode_is_reported() {
    match sys::LINK_MODE {
        sys::LinkMode::Static | sys::LinkMode::Dynamic => {
            assert!(!sys::BUILD_LIB_DIR.is_empty())
        }
        sys::LinkMode::Runtime => assert!(sys::BUILD_LIB_DIR.is_empty(), "nothing linked"),
        other => panic!("a test build is linked or loads at run time, not {other:?}"),
    }
    if sys::LINK_MODE != sys::LinkMode::Static {
        let lib = sys::library().expect("the shared libnccl in use");
        assert_eq!(lib.version_code(), version());
        assert!(
            lib.path().to_string_lossy().contains("libnccl"),
            "{}",
            lib.path().display()
        );
    }
}

/// Every function of this build's header that the runtime's release has
/// (per the since table) is available; one it lacks is not, and calling it
/// gives `ncclInvalidUsage` instead of a crash or a loader error.
#[test]
fn functions_the_runtime_lacks_are_missing_not_fatal() {
    let rt = runtime();
    let mut lacking = Vec::new();
    for &(name, since) in sys::since::FUNCTIONS {
        if !sys::declared(name) {
            assert!(!sys::available(name), "{name} is not in this build");
            continue;
        }
        if since <= rt {
            assert!(sys::available(name), "{name} ({since:?}) on {rt:?}");
        } else if !sys::available(name) {
            lacking.push(name);
        }
    }
    nccl_rs_tests::say(&format!(
        "runtime {rt:?} lacks {} functions of this build's header: {lacking:?}",
        lacking.len()
    ));
    #[cfg(nccl_fn = "ncclAlltoAll")]
    if !sys::available("ncclAlltoAll") {
        assert!(rt < (2, 28, 3));
        // SAFETY: the symbol is missing, so the wrapper does not call into
        // NCCL at all and touches none of its arguments.
        let r = unsafe {
            sys::ncclAlltoAll(
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
                sys::ncclDataType_t::ncclFloat32,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        assert_eq!(r, sys::ncclResult_t::ncclInvalidUsage);
    }
    if rt < (2, 28, 3) && sys::NCCL_VERSION_CODE >= 22803 {
        assert!(lacking.contains(&"ncclAlltoAll"), "{lacking:?}");
    }
}

#[test]
fn error_string_for_every_result_code() {
    let rt = runtime();
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
    // every code of the since table, in value order
    for (i, &(name, value, _)) in sys::since::RESULT_CODES.iter().enumerate() {
        assert_eq!(value, i as u32, "{name}");
    }
    assert_eq!(
        sys::since::RESULT_CODES.len(),
        codes.len() + 1,
        "ncclTimeout is new"
    );
    assert_eq!(
        sys::since::result_code_by_value(8).unwrap().0,
        "ncclTimeout"
    );
    if rt >= sys::since::result_code("ncclTimeout").unwrap() {
        // SAFETY: as below.
        let s = unsafe { CStr::from_ptr(sys::ncclGetErrorString(sys::ncclResult_t(8))) };
        assert!(s.to_string_lossy().to_lowercase().contains("time"), "{s:?}");
    }
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
