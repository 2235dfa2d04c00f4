//! The libnccl in use: which file, how it was found, its version; and, with
//! the `runtime-load` feature, choosing it at run time as vLLM's
//! `NCCLLibrary(so_file)` does.
//!
//! With `runtime-load` nothing is linked at build time. The library is opened
//! at [`load`], or else at the first NCCL call, from (in order):
//!
//! 1. the path in `NCCL_RS_LIBRARY`, else in `VLLM_NCCL_SO_PATH` (a path
//!    there must open: a bad one is an error, not a reason to look further);
//! 2. a `libnccl.so.2`/`libnccl.so` that the process has loaded already (an
//!    embedding host's, such as PyTorch's): reused, never loaded twice;
//! 3. `libnccl.so.2`, then `libnccl.so`, on the loader's search path
//!    (`LD_LIBRARY_PATH`, the loader cache, rpaths). An empty or relative
//!    entry of `LD_LIBRARY_PATH` would make the loader search the working
//!    directory: then its absolute folders and the system's
//!    (`/etc/ld.so.conf.d`, the default ones) are tried by full path. The
//!    loader still searches the working directory for what it loads by
//!    name (libnccl's dependencies, NCCL's plugins, the CUDA driver): fix
//!    such an `LD_LIBRARY_PATH`;
//! 4. `nvidia/nccl/lib/libnccl.so.2` in the site-packages of `$VIRTUAL_ENV`,
//!    of `$CONDA_PREFIX` (absolute prefixes only), then of the `python3` on `PATH` (NVIDIA's
//!    `nvidia-nccl-cu12`/`-cu13` wheels). That interpreter is the first in
//!    an absolute directory of `PATH`, run isolated (`python3 -I -S`, from
//!    `/`: nothing of the working directory is run) and killed after 5
//!    seconds without an answer.
//!
//! A setuid or setgid program (secure-execution mode) skips the paths
//! named by the environment (1, and the Python steps of 4), as glibc skips
//! `LD_LIBRARY_PATH` there.
//!
//! Finding none is [`Error::Library`] listing every place tried;
//! [`is_available`](crate::is_available) asks without failing.
//!
//! ```no_run
//! # fn main() -> nccl::Result<()> {
//! // before any other NCCL call (runtime-load); elsewhere: checks it is the one linked
//! let lib = nccl::library::load("/opt/torch/lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2")?;
//! log::info!("NCCL {} from {} ({})", lib.version, lib.path.display(), lib.source);
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use crate::base::error::{Error, Result};
use crate::base::runtime::checked_runtime;
use crate::base::version::{MIN_VERSION, Version};
use crate::sys;

pub use sys::{Attempt, ENV_VARS, LoadError, Source};

/// The libnccl in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryInfo {
    /// The file, as the system's loader names it.
    pub path: PathBuf,
    /// How it was found.
    pub source: Source,
    /// Its version (`ncclGetVersion`).
    pub version: Version,
}

fn info(lib: &sys::Library) -> Result<LibraryInfo> {
    let version = Version::from_code(lib.version_code())?;
    if version < MIN_VERSION {
        return Err(Error::LibraryTooOld {
            runtime: version,
            minimum: MIN_VERSION,
        });
    }
    Ok(LibraryInfo {
        path: lib.path().to_path_buf(),
        source: lib.source().clone(),
        version,
    })
}

/// The libnccl in use (with `runtime-load`, opening it if no NCCL call has
/// yet).
///
/// # Errors
/// [`Error::Library`]: none can be opened (`runtime-load`; every place tried
/// is listed), or the build is linked statically ([`LoadError::Static`]);
/// [`Error::LibraryTooOld`] for a library older than 2.18.
pub fn current() -> Result<LibraryInfo> {
    let lib = sys::library().map_err(Error::Library)?;
    info(lib)
}

/// Makes the libnccl at `path` the one this process uses: with
/// `runtime-load`, opens it (call this before any other NCCL call); with
/// dynamic linking, checks that `path` is the library linked.
///
/// # Errors
/// [`Error::Library`] when `path` cannot be opened or is not NCCL, when
/// another libnccl is in use already, or when the build is linked
/// statically; [`Error::LibraryTooOld`] for a library older than 2.18.
pub fn load(path: impl AsRef<Path>) -> Result<LibraryInfo> {
    let lib = sys::load(path).map_err(Error::Library)?;
    let i = info(lib)?;
    // the version every availability check uses from now on
    checked_runtime()?;
    Ok(i)
}
