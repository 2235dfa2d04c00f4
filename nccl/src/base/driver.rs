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

/// A file by one of the driver's names in a folder of the working directory
/// that `LD_LIBRARY_PATH` makes the loader search (an empty or relative
/// entry; see [`nccl_sys::search_path`]): cudarc opens the driver by name,
/// so that file could be loaded, its initializers run, before the real
/// driver. The refusal, as [`Error::NoDriver`] shows it. A folder that is
/// one of the system's library folders (the working directory is
/// `/usr/lib64`, say) holds what the loader would find anyway, and is
/// skipped; a folder named with a dynamic string this crate does not expand
/// (`$LIB`, `$PLATFORM`) is refused as it stands. A file placed there after
/// this check is not seen: the check is for a working directory prepared
/// before the program ran.
fn planted_driver() -> Option<String> {
    use nccl_sys::search_path::{is_system_folder, is_unexpanded, working_dir_folders};
    let folders = working_dir_folders();
    if folders.is_empty() {
        return None;
    }
    let names = driver_names();
    for dir in &folders {
        if is_unexpanded(dir) {
            return Some(format!(
                "refused: LD_LIBRARY_PATH has the entry {:?}, which names a folder of the working \
                 directory through a dynamic string; the CUDA driver, opened by name, could be \
                 loaded from there (remove the entry, or make it absolute)",
                dir.display().to_string()
            ));
        }
        if is_system_folder(dir) {
            continue;
        }
        for name in &names {
            let file = dir.join(name);
            if std::fs::symlink_metadata(&file).is_ok() {
                return Some(format!(
                    "{}: refused: an empty or relative entry of LD_LIBRARY_PATH makes the \
                     loader search {} before the system's folders, and that file is there; it \
                     could be loaded as the CUDA driver (remove the entry, or the file)",
                    file.display(),
                    dir.display()
                ));
            }
        }
    }
    None
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
    if let Some(planted) = planted_driver() {
        return Err(Error::NoDriver {
            tried: vec![planted],
        });
    }
    // SAFETY: only tries to load the library (dlopen, which runs its
    // initializers: one from the working directory is refused above); no
    // symbol is called.
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
