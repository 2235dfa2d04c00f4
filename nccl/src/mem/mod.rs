//! Memory NCCL knows about: buffers (from `ncclMemAlloc` or a stream-ordered
//! pool) and their views,
//! user buffer registration (`ncclCommRegister`) and symmetric windows
//! (`ncclCommWindowRegister`, NCCL 2.27+) and a pool of them.

mod buffer;
mod device_buffer;
#[cfg(nccl_fn = "ncclCommWindowRegister")]
mod pool;
mod registration;
mod track;

use cudarc::driver::{CudaStream, sys as cu};

use crate::base::error::{Error, Result};

pub(crate) use buffer::one_wait;
pub use buffer::{DROP_WAIT, Memory, NcclBuffer, NcclView, NcclViewMut, SliceNotTaken};
pub use device_buffer::{DeviceBuffer, DeviceBufferMut};
#[cfg(nccl_fn = "ncclCommWindowRegister")]
pub use pool::{PoolStats, SymmetricBuffer, SymmetricPool};
pub use registration::{Local, Registered, Registration, RegistrationKind};
#[cfg(nccl_fn = "ncclCommWindowRegister")]
pub use registration::{Win, Window};

/// Whether allocating or registering now could run into a CUDA graph
/// capture: `stream` captures, in any capture mode (the driver answers for
/// the stream itself), or the legacy default stream reports a capture it
/// would have to wait for (`CUDA_ERROR_STREAM_CAPTURE_IMPLICIT`: a blocking
/// stream of the context captures, on any thread). Registering or
/// allocating from a pool then would fail, invalidate that capture, or
/// become part of it. Captures on non-blocking streams other than `stream`
/// cannot be seen from here (CUDA has no query for them).
pub(crate) fn capturing(stream: &CudaStream) -> Result<bool> {
    stream.context().bind_to_thread()?;
    let query = |handle: cu::CUstream| -> Result<bool> {
        let mut status = cu::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE;
        // SAFETY: `handle` is the borrowed, live stream or the legacy
        // default stream (a constant handle, always valid in the current
        // context, which is bound above); `status` is a valid out-pointer
        // of the type the driver writes. The query is allowed during any
        // capture.
        let r = unsafe { cu::cuStreamIsCapturing(handle, &mut status) };
        capture_answer(r, status)
    };
    const LEGACY: usize = 0x1; // CU_STREAM_LEGACY
    Ok(query(stream.cu_stream())? || query(LEGACY as cu::CUstream)?)
}

/// [`capturing`]'s reading of the driver's answer.
fn capture_answer(r: cu::CUresult, status: cu::CUstreamCaptureStatus) -> Result<bool> {
    use cu::CUstreamCaptureStatus as S;
    match r {
        cu::CUresult::CUDA_SUCCESS => Ok(!matches!(status, S::CU_STREAM_CAPTURE_STATUS_NONE)),
        cu::CUresult::CUDA_ERROR_STREAM_CAPTURE_IMPLICIT => Ok(true),
        e => Err(Error::Cuda(cudarc::driver::DriverError(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_states_read_as_capturing() {
        use cu::CUresult as R;
        use cu::CUstreamCaptureStatus as S;
        let none = S::CU_STREAM_CAPTURE_STATUS_NONE;
        assert!(!capture_answer(R::CUDA_SUCCESS, none).unwrap());
        assert!(capture_answer(R::CUDA_SUCCESS, S::CU_STREAM_CAPTURE_STATUS_ACTIVE).unwrap());
        // a capture already broken still must not register
        assert!(capture_answer(R::CUDA_SUCCESS, S::CU_STREAM_CAPTURE_STATUS_INVALIDATED).unwrap());
        assert!(capture_answer(R::CUDA_ERROR_STREAM_CAPTURE_IMPLICIT, none).unwrap());
        assert!(matches!(
            capture_answer(R::CUDA_ERROR_INVALID_HANDLE, none),
            Err(Error::Cuda(_))
        ));
    }
}
