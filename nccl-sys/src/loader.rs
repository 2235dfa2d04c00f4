//! The libnccl in use, and the functions looked up in it by name.
//!
//! Dynamic linking: the library is the one the program was linked with,
//! found from the address of `ncclGetVersion` (linked directly). Run-time
//! loading (`runtime-load`): the library is opened on first need, from the
//! places [`library`] lists. Static linking: there is no shared library, and
//! nothing is looked up.
//!
//! Every lazily resolved function has a slot: null until first use, then the
//! address found or a "missing" mark. A slot is only ever written after the
//! library is known, so a failure to find the library is not remembered as a
//! missing function.

#![deny(clippy::undocumented_unsafe_blocks)]
// statically linked (and on docs.rs) nothing is opened or looked up
#![cfg_attr(
    any(nccl_sys_mode = "static", nccl_sys_mode = "none"),
    allow(dead_code)
)]

use core::ffi::{CStr, c_void};
use core::sync::atomic::{AtomicPtr, Ordering};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::LAZY_NAMES;

/// How a function of this build reaches libnccl (generated `lookup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Linked at build time.
    #[allow(dead_code)] // none such with runtime-load
    Linked,
    /// Resolved by name at first call, slot `n`.
    #[allow(dead_code)] // none such when every function is linked (static, 2.18 header)
    Lazy(usize),
    /// Not declared by this build's header.
    Absent,
}

const N: usize = LAZY_NAMES.len();

static SLOTS: [AtomicPtr<c_void>; N] = [const { AtomicPtr::new(core::ptr::null_mut()) }; N];

/// The mark of a symbol the library lacks (never a function address).
fn missing() -> *mut c_void {
    core::ptr::dangling_mut::<u8>().cast()
}

/// The address of lazily resolved function `slot`, or `None` when the
/// library lacks it or no library can be found.
#[inline]
pub(crate) fn symbol(slot: usize) -> Option<*mut c_void> {
    let p = SLOTS[slot].load(Ordering::Acquire);
    if p.is_null() {
        resolve(slot)
    } else if p == missing() {
        None
    } else {
        Some(p)
    }
}

#[cold]
#[inline(never)]
fn resolve(slot: usize) -> Option<*mut c_void> {
    let lib = library().ok()?;
    let p = lib.sym(LAZY_NAMES[slot]);
    SLOTS[slot].store(p.unwrap_or_else(missing), Ordering::Release);
    p
}

/// The address of `name` in the libnccl in use, remembered in `slot` (null
/// until first use, then the address or the "missing" mark): for functions
/// declared by hand ([`crate::device`]) rather than generated. `None` when
/// the library lacks it, or no shared library is in use (static linking).
pub(crate) fn named_symbol(slot: &AtomicPtr<c_void>, name: &CStr) -> Option<*mut c_void> {
    let p = slot.load(Ordering::Acquire);
    if p == missing() {
        return None;
    }
    if !p.is_null() {
        return Some(p);
    }
    let lib = library().ok()?;
    let p = lib.sym(name);
    slot.store(p.unwrap_or_else(missing), Ordering::Release);
    p
}

/// Whether function `name` can be called and reach libnccl: it is declared
/// by this build's header and linked (static, or dynamic for functions of
/// NCCL 2.18.1), or the loaded library has it. The host functions of the
/// device API ([`crate::device`]) count when the library has them. `false` for names this build
/// does not declare, and (`runtime-load`) when no library can be found.
///
/// ```
/// // ncclGetVersion is in every NCCL
/// assert!(!nccl_sys::available("ncclNoSuchFunction"));
/// ```
pub fn available(name: &str) -> bool {
    if let Some(have) = crate::device::available(name) {
        return have;
    }
    match crate::lookup(name) {
        Lookup::Linked => true,
        Lookup::Lazy(slot) => symbol(slot).is_some(),
        Lookup::Absent => false,
    }
}

/// Where the library in use came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Linked at build time (dynamic link mode): opened by the system's
    /// loader with the program.
    Linked,
    /// A path given to [`load`].
    Explicit,
    /// The path in this environment variable (`NCCL_RS_LIBRARY`,
    /// `VLLM_NCCL_SO_PATH`).
    Env(&'static str),
    /// A libnccl that the process had loaded already (PyTorch's, in an
    /// embedding host): reused, not loaded a second time.
    AlreadyLoaded,
    /// `libnccl.so.2` (or `libnccl.so`) on the loader's search path.
    LoaderPath,
    /// The `nvidia/nccl/lib` folder of a Python environment (the variable or
    /// interpreter that led there).
    PythonEnv(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Linked => f.write_str("linked at build time"),
            Source::Explicit => f.write_str("path given in code"),
            Source::Env(v) => write!(f, "${v}"),
            Source::AlreadyLoaded => f.write_str("already loaded in the process"),
            Source::LoaderPath => f.write_str("the loader's search path"),
            Source::PythonEnv(p) => write!(f, "Python environment ({p})"),
        }
    }
}

/// A libnccl opened (or found loaded) in this process. It stays loaded for
/// the life of the process.
#[derive(Debug)]
pub struct Library {
    handle: usize,
    path: PathBuf,
    source: Source,
    version_code: i32,
}

impl Library {
    /// The file, as the system's loader names it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How it was found.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// What its `ncclGetVersion` says (`22803` for 2.28.3).
    pub fn version_code(&self) -> i32 {
        self.version_code
    }

    /// The address of `name` in this library, if it has it.
    fn sym(&self, name: &CStr) -> Option<*mut c_void> {
        // SAFETY: the handle came from dlopen and is never closed; name is
        // NUL-terminated.
        let p = unsafe { libc::dlsym(self.handle as *mut c_void, name.as_ptr()) };
        (!p.is_null()).then_some(p)
    }

    /// Wraps a handle: checks that it is NCCL, asks its version and its
    /// file name. On every failure the handle is closed again (a library
    /// that is not the one in use is not left loaded).
    fn from_handle(handle: *mut c_void, source: Source, what: &str) -> Result<Library, String> {
        let close = |why: String| {
            // SAFETY: handle came from a successful dlopen, is closed once
            // (here, on the way out), and nothing of the library is kept: no
            // Library holding it is returned.
            unsafe { libc::dlclose(handle) };
            why
        };
        let mut lib = Library {
            handle: handle as usize,
            path: PathBuf::from(what),
            source,
            version_code: 0,
        };
        let Some(get_version) = lib.sym(c"ncclGetVersion") else {
            return Err(close("no ncclGetVersion in it: not an NCCL library".into()));
        };
        // SAFETY: ncclGetVersion has this C signature in every NCCL release.
        let get_version: unsafe extern "C" fn(*mut i32) -> crate::ncclResult_t =
            unsafe { core::mem::transmute::<*mut c_void, _>(get_version) };
        let mut code = 0;
        // SAFETY: ncclGetVersion writes one int through a valid pointer.
        let r = unsafe { get_version(&mut code) };
        if r != crate::ncclResult_t::ncclSuccess {
            return Err(close(format!(
                "its ncclGetVersion failed with code {}",
                r.0
            )));
        }
        lib.version_code = code;
        if let Some(p) = file_of(get_version as *const c_void) {
            lib.path = p;
        }
        Ok(lib)
    }
}

/// The file of the shared object holding `addr` (`dladdr`).
fn file_of(addr: *const c_void) -> Option<PathBuf> {
    let mut info = core::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only writes to info, which is valid and large enough.
    let ok = unsafe { libc::dladdr(addr, info.as_mut_ptr()) };
    if ok == 0 {
        return None;
    }
    // SAFETY: dladdr succeeded, so info is initialized.
    let info = unsafe { info.assume_init() };
    if info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: a non-null dli_fname is a NUL-terminated path owned by the loader.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Some(PathBuf::from(name.to_string_lossy().into_owned()))
}

/// `dlerror()`'s text, or `fallback`.
fn dl_error(fallback: &str) -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the
    // next dl* call on this thread; it is copied at once.
    let p = unsafe { libc::dlerror() };
    if p.is_null() {
        return fallback.to_string();
    }
    // SAFETY: non-null, NUL-terminated (above).
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// One place looked at for libnccl.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// What was tried (`$NCCL_RS_LIBRARY=/opt/nccl/lib/libnccl.so.2`).
    pub place: String,
    /// What happened there.
    pub outcome: String,
}

/// Why no libnccl is available.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadError {
    /// No libnccl was found: every place tried and what happened there.
    NotFound {
        /// The places, in the order tried.
        tried: Vec<Attempt>,
    },
    /// [`load`] was asked for a library while another one is
    /// in use already (one libnccl per process).
    OtherLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The one asked for.
        requested: PathBuf,
    },
    /// Statically linked: there is no shared library to name or search.
    Static,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotFound { tried } => {
                write!(f, "libnccl not found; tried, in order:")?;
                for a in tried {
                    write!(f, "\n  - {}: {}", a.place, a.outcome)?;
                }
                write!(
                    f,
                    "\nfix: set NCCL_RS_LIBRARY=/path/to/libnccl.so.2, put it on LD_LIBRARY_PATH, \
                     or pip install nvidia-nccl-cu12 (or -cu13) in the active Python environment"
                )
            }
            LoadError::OtherLoaded { loaded, requested } => write!(
                f,
                "cannot load {}: {} is in use already (one libnccl per process)",
                requested.display(),
                loaded.display()
            ),
            LoadError::Static => {
                f.write_str("libnccl is linked statically: there is no shared library")
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// The libnccl in use.
///
/// - Dynamic linking: the library the program was linked with (found from
///   the address of `ncclGetVersion`).
/// - Static linking: [`LoadError::Static`].
/// - `runtime-load`: opened on first need (or by [`load`]),
///   trying in order: the environment variables [`ENV_VARS`]
///   (`NCCL_RS_LIBRARY`, then vLLM's `VLLM_NCCL_SO_PATH`: a path there must
///   open, else the search stops with that error; absolute, or a bare name
///   where `LD_LIBRARY_PATH` does not make the loader search the working
///   directory; [`LoadError::OtherLoaded`] where another libnccl is in the
///   process's global scope); a `libnccl.so.2` or
///   `libnccl.so` that the process has loaded already (reused, never loaded
///   twice); `libnccl.so.2` and `libnccl.so` on the loader's search path
///   (`LD_LIBRARY_PATH`, the cache, rpaths; where `LD_LIBRARY_PATH` has an
///   empty or relative entry, which would make the loader search the working
///   directory, its absolute folders and the system's are tried by full
///   path instead. The loader still searches the working directory for what
///   it loads by name then: libnccl's own dependencies, NCCL's plugins, the
///   CUDA driver. Fix such an `LD_LIBRARY_PATH`);
///   `nvidia/nccl/lib/libnccl.so.2` in the site-packages of `$VIRTUAL_ENV`,
///   of `$CONDA_PREFIX` (absolute prefixes only), and of the `python3` on
///   `PATH`. A setuid or setgid program (secure-execution mode) skips the
///   environment's paths and the Python steps, as glibc skips
///   `LD_LIBRARY_PATH` there. Finding none is [`LoadError::NotFound`] with every
///   place tried; that outcome is kept, so the search runs once, but a later
///   [`load`] may still succeed.
///
///   The `python3` asked for its site-packages is the first in an absolute
///   directory of `PATH` (never one found through `.` or an empty entry),
///   run isolated (`-I -S`: no module from the working directory, the user's
///   folder or `PYTHON*` variables, no `.pth` hooks) from `/`, and killed
///   with what it started if it has not answered within 5 seconds. It runs
///   once per process, without the lock that [`load`] takes:
///   other threads' first NCCL calls wait for its answer at most that long.
///
/// # Errors
/// As above.
pub fn library() -> Result<&'static Library, LoadError> {
    imp::library()
}

/// The environment variables naming the library file for `runtime-load`,
/// in the order read.
pub const ENV_VARS: [&str; 2] = ["NCCL_RS_LIBRARY", "VLLM_NCCL_SO_PATH"];

/// Makes the libnccl at `path` the one every function of this crate calls.
///
/// - `runtime-load`: opens it, as vLLM's `NCCLLibrary(so_file)`; call it
///   before any NCCL function. Loading the library in use again is a no-op.
/// - Dynamic linking: the library is the one linked; `Ok` when `path` is
///   that file.
/// - Static linking: [`LoadError::Static`].
///
/// # Errors
/// [`LoadError::NotFound`] when `path` cannot be opened or is not NCCL (with
/// the loader's reason); [`LoadError::OtherLoaded`] when another libnccl is
/// in use already, or in the process's global scope (NCCL's calls to its own
/// functions would reach that one).
pub fn load(path: impl AsRef<Path>) -> Result<&'static Library, LoadError> {
    imp::load(path.as_ref())
}

fn same_or_other(l: &'static Library, path: &Path) -> Result<&'static Library, LoadError> {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    if canon(l.path()) == canon(path) {
        Ok(l)
    } else {
        Err(LoadError::OtherLoaded {
            loaded: l.path().to_path_buf(),
            requested: path.to_path_buf(),
        })
    }
}

#[cfg(nccl_sys_mode = "dynamic")]
mod imp {
    use super::*;
    use std::sync::OnceLock;

    pub(super) fn library() -> Result<&'static Library, LoadError> {
        static LIB: OnceLock<Result<Library, LoadError>> = OnceLock::new();
        LIB.get_or_init(linked).as_ref().map_err(Clone::clone)
    }

    pub(super) fn load(path: &Path) -> Result<&'static Library, LoadError> {
        same_or_other(library()?, path)
    }

    /// The library holding the linked `ncclGetVersion`.
    fn linked() -> Result<Library, LoadError> {
        let addr = crate::ncclGetVersion as *const c_void;
        let fail = |outcome: String| LoadError::NotFound {
            tried: vec![Attempt {
                place: "the libnccl linked at build time".into(),
                outcome,
            }],
        };
        let file = file_of(addr).ok_or_else(|| fail("dladdr(ncclGetVersion) failed".into()))?;
        let c = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
            .map_err(|_| fail(format!("{} has a NUL byte", file.display())))?;
        // SAFETY: c is NUL-terminated; RTLD_NOLOAD only looks the library up
        // (it is loaded: ncclGetVersion lives there) and takes a reference.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        let h = if h.is_null() {
            // the program itself (a canonical PLT address): dlsym on the
            // program's handle searches its dependencies, libnccl among them
            // SAFETY: a null file name asks for the main program's handle.
            unsafe { libc::dlopen(core::ptr::null(), libc::RTLD_LAZY) }
        } else {
            h
        };
        if h.is_null() {
            return Err(fail(dl_error("dlopen failed")));
        }
        Library::from_handle(h, Source::Linked, &file.to_string_lossy()).map_err(fail)
    }
}

#[cfg(not(any(nccl_sys_mode = "dynamic", nccl_sys_mode = "runtime")))]
mod imp {
    use super::*;

    pub(super) fn library() -> Result<&'static Library, LoadError> {
        Err(LoadError::Static)
    }

    pub(super) fn load(_: &Path) -> Result<&'static Library, LoadError> {
        Err(LoadError::Static)
    }
}

#[cfg(nccl_sys_mode = "runtime")]
mod imp {
    use super::*;
    use std::ffi::{CString, OsStr};
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::{Mutex, OnceLock};
    use std::time::{Duration, Instant};

    use crate::search_path::{
        loader_value, origin_rest, path_entries, secure_execution, system_dirs, working_dir_entry,
    };

    /// The sonames tried, newest first.
    const NAMES: [&CStr; 2] = [c"libnccl.so.2", c"libnccl.so"];
    /// How long the `python3` on `PATH` may take to name its site-packages.
    pub(super) const PYTHON_LIMIT: Duration = Duration::from_secs(5);
    /// Most bytes of the interpreter's answer read.
    const PYTHON_OUTPUT: u64 = 64 * 1024;

    static LOADED: OnceLock<Library> = OnceLock::new();
    /// The outcome of the search, once it has run and failed. Held only for
    /// the quick steps (environment variables, dlopen), never while the
    /// Python interpreter runs.
    static FAILED: Mutex<Option<LoadError>> = Mutex::new(None);
    /// What the interpreter answered (or why not), asked once: callers that
    /// come while it runs wait for it, at most [`PYTHON_LIMIT`].
    static PROBE: Mutex<Option<Probe>> = Mutex::new(None);

    /// site-packages folders the interpreter named, and what went wrong.
    #[derive(Clone)]
    struct Probe {
        sites: Vec<(String, PathBuf)>,
        tried: Vec<Attempt>,
    }

    pub(super) fn library() -> Result<&'static Library, LoadError> {
        if let Some(l) = LOADED.get() {
            return Ok(l);
        }
        let mut tried = Vec::new();
        {
            let failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(l) = LOADED.get() {
                return Ok(l);
            }
            if let Some(e) = &*failed {
                return Err(e.clone());
            }
            match quick_search(&mut tried) {
                Ok(Some(lib)) => return Ok(LOADED.get_or_init(|| lib)),
                Ok(None) => {}
                Err(e) => return Err(remember(failed, e)),
            }
        }
        // the interpreter runs with no lock held that `load` or a loaded
        // library's users need
        let probe = python_probe();
        let failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = LOADED.get() {
            return Ok(l);
        }
        if let Some(e) = &*failed {
            return Err(e.clone());
        }
        tried.extend(probe.tried);
        match open_in_sites(&probe.sites, &mut tried) {
            Ok(Some(lib)) => Ok(LOADED.get_or_init(|| lib)),
            Ok(None) => Err(remember(failed, LoadError::NotFound { tried })),
            Err(e) => Err(remember(failed, e)),
        }
    }

    fn remember(
        mut failed: std::sync::MutexGuard<'_, Option<LoadError>>,
        e: LoadError,
    ) -> LoadError {
        *failed = Some(e.clone());
        e
    }

    /// The file of a libnccl whose functions are in the process's global
    /// scope (linked by the program or a library it links, or opened with
    /// `RTLD_GLOBAL`, as Python hosts do with their CUDA libraries).
    /// Opening another libnccl beside it is refused: NCCL calls its own
    /// exported functions through that scope (`ncclCommInitRankConfig`
    /// calls `ncclCommGetAsyncError`, for one), so they would reach the
    /// other release with this one's structures.
    fn global_nccl() -> Option<PathBuf> {
        // SAFETY: dlsym with RTLD_DEFAULT looks a NUL-terminated name up in
        // the global scope and runs nothing; the address is only given to
        // dladdr, never called.
        let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"ncclGetVersion".as_ptr()) };
        if f.is_null() {
            return None;
        }
        Some(file_of(f).unwrap_or_else(|| PathBuf::from("(a libnccl of unknown file)")))
    }

    /// `Err(OtherLoaded)` when a libnccl other than `path` is in the global
    /// scope ([`global_nccl`]). A path is the same library when it is the
    /// same file (device and inode, as the loader compares: links and hard
    /// links included); a bare name when the loader, asked for it without
    /// loading (`RTLD_NOLOAD`), gives an object whose `ncclGetVersion` lies
    /// in that file (a name it has not loaded is another library).
    fn beside_global(path: &Path) -> Result<(), LoadError> {
        let Some(loaded) = global_nccl() else {
            return Ok(());
        };
        let bare = !path.as_os_str().as_bytes().contains(&b'/');
        let target = if bare {
            loaded_file_of_name(path.as_os_str())
        } else {
            Some(path.to_path_buf())
        };
        if target.is_some_and(|t| same_file(&t, &loaded)) {
            return Ok(());
        }
        Err(LoadError::OtherLoaded {
            loaded,
            requested: path.to_path_buf(),
        })
    }

    /// Whether two paths name one file (device and inode), else whether
    /// they are equal once canonical.
    fn same_file(a: &Path, b: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => {
                let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
                canon(a) == canon(b)
            }
        }
    }

    /// The file of the object the loader has loaded under `name` (its
    /// `ncclGetVersion`'s), if it has one: found without loading anything.
    fn loaded_file_of_name(name: &OsStr) -> Option<PathBuf> {
        let c = CString::new(name.as_bytes()).ok()?;
        // SAFETY: a NUL-terminated name; RTLD_NOLOAD maps nothing, runs no
        // initializer, and only takes a reference to an object already
        // loaded, given back below.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
        if h.is_null() {
            return None;
        }
        // SAFETY: a live handle and a NUL-terminated name; the address is
        // only given to dladdr, never called.
        let f = unsafe { libc::dlsym(h, c"ncclGetVersion".as_ptr()) };
        let file = if f.is_null() { None } else { file_of(f) };
        // SAFETY: the reference the NOLOAD dlopen took; the object stays
        // loaded by whoever loaded it.
        unsafe { libc::dlclose(h) };
        file
    }

    pub(super) fn load(path: &Path) -> Result<&'static Library, LoadError> {
        let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = LOADED.get() {
            return same_or_other(l, path);
        }
        let place = format!("load({})", path.display());
        if let Some(outcome) = refusal(path.as_os_str()) {
            return Err(LoadError::NotFound {
                tried: vec![Attempt { place, outcome }],
            });
        }
        beside_global(path)?;
        let lib =
            open(path.as_os_str(), Source::Explicit).map_err(|outcome| LoadError::NotFound {
                tried: vec![Attempt { place, outcome }],
            })?;
        // a search that failed before is superseded
        *failed = None;
        Ok(LOADED.get_or_init(|| lib))
    }

    /// dlopen(`file`, flags) and the checks of [`Library::from_handle`].
    fn dlopen(file: &CStr, flags: i32, source: Source) -> Result<Library, String> {
        // SAFETY: file is NUL-terminated. Opening a library runs its
        // initializers: that is what loading NCCL means (libnccl's are safe
        // to run in any process).
        let h = unsafe { libc::dlopen(file.as_ptr(), flags) };
        if h.is_null() {
            return Err(dl_error("dlopen failed"));
        }
        Library::from_handle(h, source, &file.to_string_lossy())
    }

    fn open(path: &OsStr, source: Source) -> Result<Library, String> {
        let c = CString::new(path.as_encoded_bytes()).map_err(|_| "the path has a NUL byte")?;
        dlopen(&c, libc::RTLD_NOW | libc::RTLD_LOCAL, source)
    }

    /// Every step but the Python interpreter: `Ok(None)` to go on to it,
    /// `Err` when a variable names a path that does not open.
    /// Why a path given explicitly (a variable of [`ENV_VARS`], or
    /// [`load`](super::load)) is refused before it is opened: a relative
    /// path names a file of the working directory, and a bare name is
    /// searched there too where `LD_LIBRARY_PATH` says so.
    fn refusal(path: &OsStr) -> Option<String> {
        let bytes = path.as_bytes();
        if !bytes.contains(&b'/') {
            let entry = working_dir_entry()?;
            return Some(format!(
                "refused: a bare name, and LD_LIBRARY_PATH has {entry}, which makes the loader \
                 search the working directory for it (give an absolute path, or remove that entry)"
            ));
        }
        if !bytes.starts_with(b"/") {
            return Some(
                "refused: not an absolute path (it names a file of the working directory)".into(),
            );
        }
        None
    }

    const SECURE_SKIP: &str = "skipped: a setuid or setgid program (secure-execution mode) trusts no path from the environment";

    fn quick_search(tried: &mut Vec<Attempt>) -> Result<Option<Library>, LoadError> {
        let secure = secure_execution();
        for var in ENV_VARS {
            if secure {
                tried.push(Attempt {
                    place: format!("${var}"),
                    outcome: SECURE_SKIP.into(),
                });
                continue;
            }
            let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
                tried.push(Attempt {
                    place: format!("${var}"),
                    outcome: "unset".into(),
                });
                continue;
            };
            // an explicit path wins: a bad one is an error, not a reason to
            // look elsewhere
            let place = format!("${var}={}", path.to_string_lossy());
            let not_found = |tried: &mut Vec<Attempt>, outcome: String| {
                tried.push(Attempt {
                    place: place.clone(),
                    outcome,
                });
                Err(LoadError::NotFound {
                    tried: std::mem::take(tried),
                })
            };
            if let Some(why) = refusal(&path) {
                return not_found(tried, why);
            }
            beside_global(Path::new(&path))?;
            return match open(&path, Source::Env(var)) {
                Ok(l) => Ok(Some(l)),
                Err(outcome) => {
                    tried.push(Attempt {
                        place: format!("${var}={}", path.to_string_lossy()),
                        outcome,
                    });
                    Err(LoadError::NotFound {
                        tried: std::mem::take(tried),
                    })
                }
            };
        }
        for name in NAMES {
            match dlopen(
                name,
                libc::RTLD_LAZY | libc::RTLD_NOLOAD,
                Source::AlreadyLoaded,
            ) {
                Ok(l) => return Ok(Some(l)),
                Err(_) => tried.push(Attempt {
                    place: format!("{} already loaded in this process", name.to_string_lossy()),
                    outcome: "no".into(),
                }),
            }
        }
        match working_dir_entry() {
            None => {
                for name in NAMES {
                    // a libnccl of another name in the global scope: this
                    // one would answer its calls there (see `global_nccl`)
                    beside_global(Path::new(OsStr::from_bytes(name.to_bytes())))?;
                    match dlopen(name, libc::RTLD_NOW | libc::RTLD_LOCAL, Source::LoaderPath) {
                        Ok(l) => return Ok(Some(l)),
                        Err(e) => tried.push(Attempt {
                            place: format!("{} on the loader path", name.to_string_lossy()),
                            outcome: e,
                        }),
                    }
                }
            }
            Some(entry) => {
                // the loader would search the working directory: only the
                // absolute folders of LD_LIBRARY_PATH, by full path
                for name in NAMES {
                    tried.push(Attempt {
                        place: format!("{} on the loader path", name.to_string_lossy()),
                        outcome: format!(
                            "skipped: LD_LIBRARY_PATH has {entry}, which makes the loader search \
                             the working directory; tried by full path in its absolute folders \
                             and the system's instead (set NCCL_RS_LIBRARY, or remove that entry)"
                        ),
                    });
                }
                // the value the loader uses: the one the process started
                // with (glibc unsets it for a setuid program; never trusted
                // there)
                let path = if secure {
                    Default::default()
                } else {
                    loader_value().unwrap_or_default()
                };
                // `$ORIGIN` is the program's folder, as the loader reads it
                let exe_dir = std::env::current_exe()
                    .ok()
                    .and_then(|e| std::fs::canonicalize(e).ok())
                    .and_then(|e| e.parent().map(Path::to_path_buf));
                let dirs: Vec<PathBuf> = path_entries(&path)
                    .into_iter()
                    .filter_map(|e| {
                        if e.starts_with(b"/") {
                            return Some(PathBuf::from(OsStr::from_bytes(e)));
                        }
                        let rest = origin_rest(e)?;
                        Some(exe_dir.as_ref()?.join(OsStr::from_bytes(rest)))
                    })
                    .chain(system_dirs())
                    .collect();
                // as the loader does: each name in every folder, in turn
                for name in NAMES {
                    for dir in &dirs {
                        let file = dir.join(OsStr::from_bytes(name.to_bytes()));
                        if !file.is_file() {
                            continue;
                        }
                        beside_global(&file)?;
                        match open(file.as_os_str(), Source::LoaderPath) {
                            Ok(l) => return Ok(Some(l)),
                            Err(e) => tried.push(Attempt {
                                place: format!("{} (by full path)", file.display()),
                                outcome: e,
                            }),
                        }
                    }
                }
            }
        }
        let sites = env_site_packages(tried);
        open_in_sites(&sites, tried)
    }

    /// The first `nvidia/nccl/lib/libnccl.so.2` of `sites` that opens.
    fn open_in_sites(
        sites: &[(String, PathBuf)],
        tried: &mut Vec<Attempt>,
    ) -> Result<Option<Library>, LoadError> {
        for (origin, site) in sites {
            let file = site
                .join("nvidia")
                .join("nccl")
                .join("lib")
                .join("libnccl.so.2");
            if !file.is_file() {
                tried.push(Attempt {
                    place: format!("{} ({origin})", file.display()),
                    outcome: "does not exist".into(),
                });
                continue;
            }
            beside_global(&file)?;
            match open(file.as_os_str(), Source::PythonEnv(origin.clone())) {
                Ok(l) => return Ok(Some(l)),
                Err(e) => tried.push(Attempt {
                    place: format!("{} ({origin})", file.display()),
                    outcome: e,
                }),
            }
        }
        Ok(None)
    }

    /// site-packages folders of `$VIRTUAL_ENV` and `$CONDA_PREFIX`, with the
    /// variable that led to each (absolute prefixes only: a relative one
    /// would name a folder of the working directory).
    fn env_site_packages(tried: &mut Vec<Attempt>) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
            if secure_execution() {
                tried.push(Attempt {
                    place: format!("${var}"),
                    outcome: SECURE_SKIP.into(),
                });
                continue;
            }
            let Some(prefix) = std::env::var_os(var).filter(|v| !v.is_empty()) else {
                tried.push(Attempt {
                    place: format!("${var}"),
                    outcome: "unset".into(),
                });
                continue;
            };
            if !Path::new(&prefix).is_absolute() {
                tried.push(Attempt {
                    place: format!("${var}={}", Path::new(&prefix).display()),
                    outcome: "skipped: not an absolute path (it would name a folder of the \
                              working directory)"
                        .into(),
                });
                continue;
            }
            let lib = Path::new(&prefix).join("lib");
            let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                        .map(|e| e.path().join("site-packages"))
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default();
            found.sort();
            if found.is_empty() {
                tried.push(Attempt {
                    place: format!("${var}={}", Path::new(&prefix).display()),
                    outcome: format!("no {}/python3*/site-packages", lib.display()),
                });
            }
            out.extend(found.into_iter().map(|p| (format!("${var}"), p)));
        }
        out
    }

    /// The interpreter's answer, asked once per process (callers arriving
    /// while it runs wait for it).
    fn python_probe() -> Probe {
        let mut p = PROBE.lock().unwrap_or_else(|p| p.into_inner());
        p.get_or_insert_with(ask_python).clone()
    }

    /// The `python3` of the first absolute directory of `PATH` that has one:
    /// never a relative entry (`.`, an empty one), which would run a
    /// `python3` from the working directory.
    fn python_on_path() -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .filter(|d| d.is_absolute())
            .map(|d| d.join("python3"))
            .find(|f| {
                std::fs::metadata(f)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    }

    /// Asks the `python3` on `PATH` for its site-packages folders: isolated
    /// (`-I`: no working directory or user folder on its module path, no
    /// `PYTHON*` variables; `-S`: no `site` hooks such as `.pth` files run at
    /// start), from `/`, in a process group of its own that is killed after
    /// [`PYTHON_LIMIT`].
    fn ask_python() -> Probe {
        use std::os::unix::process::CommandExt;
        const PLACE: &str = "python3 on PATH";
        let fail = |outcome: String| Probe {
            sites: Vec::new(),
            tried: vec![Attempt {
                place: PLACE.into(),
                outcome,
            }],
        };
        if secure_execution() {
            return fail(SECURE_SKIP.into());
        }
        let Some(python) = python_on_path() else {
            return fail("no python3 in PATH's absolute directories".into());
        };
        let script = "import sysconfig,site\n\
                      p=[sysconfig.get_paths()['purelib'],sysconfig.get_paths()['platlib']]\n\
                      try:\n  p+=site.getsitepackages()+[site.getusersitepackages()]\n\
                      except Exception:\n  pass\n\
                      print('\\n'.join(dict.fromkeys(p)))";
        let start = Instant::now();
        let mut child = match std::process::Command::new(&python)
            .args(["-I", "-S", "-c", script])
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => return fail(format!("could not run {}: {e}", python.display())),
        };
        // the answer is read on a thread of its own, so that a child that
        // never ends (or never closes its output) is still cut off here
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = child.stdout.take().map(|out| {
            std::thread::Builder::new()
                .name("nccl-sys-python".into())
                .spawn(move || {
                    let mut text = Vec::new();
                    let _ = out.take(PYTHON_OUTPUT).read_to_end(&mut text);
                    let _ = tx.send(text);
                })
        });
        if let Some(Err(e)) = reader {
            kill_group(&mut child);
            return fail(format!("no thread to read its answer: {e}"));
        }
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Ok(s),
                Ok(None) if start.elapsed() >= PYTHON_LIMIT => break Err(None),
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => break Err(Some(e)),
            }
        };
        let status = match status {
            Ok(s) => s,
            Err(e) => {
                // try_wait failed: the child may be reaped already (SIGCHLD
                // ignored), its pid free for reuse: no signal to its group
                if e.is_none() {
                    kill_group(&mut child);
                }
                return fail(match e {
                    None => format!(
                        "{} gave no answer within {PYTHON_LIMIT:?}: killed",
                        python.display()
                    ),
                    Some(e) => format!("{}: {e}", python.display()),
                });
            }
        };
        if !status.success() {
            return fail(format!("{} failed ({status})", python.display()));
        }
        let Ok(text) = rx.recv_timeout(Duration::from_millis(500)) else {
            return fail(format!("{} kept its output open", python.display()));
        };
        Probe {
            sites: String::from_utf8_lossy(&text)
                .lines()
                .map(PathBuf::from)
                .filter(|p| p.is_absolute() && p.is_dir())
                .map(|p| (PLACE.to_string(), p))
                .collect(),
            tried: Vec::new(),
        }
    }

    /// Kills the process group of a child not yet reaped (it leads the
    /// group), then reaps it.
    fn kill_group(child: &mut std::process::Child) {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) with a negative pid signals the process group
            // the child leads (`process_group(0)`); the child is not reaped
            // yet (every caller's try_wait said it runs, or was not called),
            // so its id, and the group's, cannot have been reused.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
