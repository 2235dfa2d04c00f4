//! The CUDA driver, checked before cudarc touches it: cudarc loads
//! `libcuda.so` at first use and panics when it cannot, so every context this
//! crate makes comes from [`context`], which turns a missing driver, a driver
//! older than the CUDA API in use, and a missing GPU into typed errors.

use std::sync::Arc;

use cudarc::driver::CudaContext;

use crate::base::error::{Error, Result};

/// The CUDA API version this build uses through cudarc, as
/// `cuDriverGetVersion` encodes it (12000 for CUDA 12.0).
pub const CUDA_API_VERSION: i32 = if cfg!(feature = "cuda-13000") {
    13000
} else if cfg!(feature = "cuda-12080") {
    12080
} else {
    12000
};

/// The file names cudarc tries for the driver library, each once.
fn driver_names() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for n in ["cuda", "nvcuda"]
        .iter()
        .flat_map(|l| cudarc::get_lib_name_candidates(l))
    {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// The driver entry points this crate calls before a driver's version is
/// known: cudarc panics on a missing one, so a library by the driver's name
/// that lacks them (not a driver) must not reach cudarc.
const FIRST_CALLS: [&str; 3] = ["cuDriverGetVersion", "cuInit", "cuDeviceGetCount"];

/// Checks that the CUDA driver can be loaded and is new enough; returns its
/// version (`cuDriverGetVersion`). cudarc keeps the library it loads; each
/// call checks again.
///
/// # Errors
/// [`Error::NoDriver`] (also for a library by the driver's name that is not
/// one) or [`Error::DriverTooOld`].
pub fn driver_version() -> Result<i32> {
    // SAFETY: only tries to load the library (dlopen); no symbol is called.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::NoDriver {
            tried: driver_names(),
        });
    }
    // SAFETY: a candidate opens (checked above), so cudarc's loader returns
    // the first that does, as it will for every later call; nothing is
    // called.
    let lib = unsafe { cudarc::driver::sys::culib() };
    for name in FIRST_CALLS {
        // SAFETY: only looks the symbol up (dlsym); the pointer is not used.
        if unsafe { lib.get::<*const core::ffi::c_void>(name.as_bytes()) }.is_err() {
            return Err(Error::NoDriver {
                tried: vec![format!(
                    "{} (the first that opens lacks {name}: not the CUDA driver)",
                    driver_names().join(" / ")
                )],
            });
        }
    }
    let mut v = 0;
    // SAFETY: the driver library exports cuDriverGetVersion (checked
    // above), which writes one int and needs no cuInit.
    let r = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if r != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(Error::Cuda(cudarc::driver::DriverError(r)));
    }
    if v < CUDA_API_VERSION {
        return Err(Error::DriverTooOld {
            driver: v,
            needs: CUDA_API_VERSION,
        });
    }
    Ok(v)
}

/// The CUDA context of GPU `ordinal` (cudarc's `CudaContext::new`), after
/// checking what cudarc would panic on: use it in place of
/// `CudaContext::new` where the driver may be missing.
///
/// # Errors
/// [`Error::NoDriver`], [`Error::DriverTooOld`], [`Error::NoGpu`], or the
/// CUDA error of creating the context.
pub fn context(ordinal: usize) -> Result<Arc<CudaContext>> {
    let count = device_count()?;
    if ordinal >= count {
        return Err(Error::NoGpu { ordinal, count });
    }
    Ok(CudaContext::new(ordinal)?)
}

/// How many GPUs the CUDA driver sees (`cuDeviceGetCount`, after `cuInit`),
/// with the driver checked first: `Ok(0)` is a machine with a driver and no
/// GPU; no driver at all is [`Error::NoDriver`], never a panic.
///
/// ```no_run
/// let gpus = nccl::device_count()?;
/// let ctxs = (0..gpus).map(nccl::context).collect::<nccl::Result<Vec<_>>>()?;
/// # Ok::<(), nccl::Error>(())
/// ```
///
/// # Errors
/// [`Error::NoDriver`], [`Error::DriverTooOld`], or the CUDA error of
/// `cuInit` / `cuDeviceGetCount`.
pub fn device_count() -> Result<usize> {
    driver_version()?;
    cudarc::driver::result::init()?;
    let count = CudaContext::device_count()?;
    Ok(usize::try_from(count).unwrap_or(0))
}
