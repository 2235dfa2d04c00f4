//! Feature `runtime-load`: libnccl opened at run time, vLLM's way. Each case
//! runs in a child process of this test binary (one libnccl per process,
//! chosen once), with exactly the environment the case needs.
//!
//! `NCCL_RS_TEST_LIB` names a real `libnccl.so.2` (`cargo xtask ci` sets it;
//! the NCCL of the build is used when it is unset). On a machine with a
//! libnccl on the loader's default path (a system NCCL, as on a GPU machine)
//! the search stops there, before the Python environment: the two cases that
//! need to get further check that order instead, and say so.

#![cfg(feature = "runtime-load")]

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

use nccl::library::{LoadError, Source};
use nccl::{Error, UniqueId};

const CHILD: &str = "NCCL_RS_TEST_CHILD";

/// Every variable the search reads: removed for each child, then set as the
/// case says.
const SEARCH_VARS: [&str; 5] = [
    "NCCL_RS_LIBRARY",
    "VLLM_NCCL_SO_PATH",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "LD_LIBRARY_PATH",
];

fn test_lib() -> PathBuf {
    if let Some(p) = std::env::var_os("NCCL_RS_TEST_LIB") {
        return PathBuf::from(p);
    }
    let from_build = Path::new(nccl::sys::BUILD_INCLUDE_DIR)
        .join("..")
        .join("lib")
        .join("libnccl.so.2");
    assert!(
        from_build.is_file(),
        "set NCCL_RS_TEST_LIB to a libnccl.so.2 (this build found no NCCL to default to)"
    );
    from_build
}

fn canon(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Whether this process is the child running `case`.
fn is_child(case: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|c| c == case)
}

/// Runs `case` in a child with the search variables cleared, then `env`.
fn in_child(case: &str, env: &[(&str, &std::ffi::OsStr)]) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", case, "--nocapture", "--test-threads=1"])
        .env(CHILD, case)
        .env("NCCL_RS_TEST_LIB", test_lib());
    for v in SEARCH_VARS {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child {case} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "child {case} ran no test:\n{text}"
    );
}

/// Whether `libnccl.so.2` opens from the loader's default path (the
/// environment of the children: no `LD_LIBRARY_PATH`).
fn on_loader_path() -> bool {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "loader_path_probe",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "loader_path_probe")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("probe: loader path has libnccl.so.2")
}

/// The probe of [`on_loader_path`], run as a child.
#[test]
fn loader_path_probe() {
    if is_child("loader_path_probe") {
        let name = CString::new("libnccl.so.2").unwrap();
        // SAFETY: dlopen of a library name with RTLD_LAZY; the handle is
        // closed again at once, nothing of it is used.
        let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
        if !h.is_null() {
            // SAFETY: h is the live handle opened above.
            unsafe { libc::dlclose(h) };
            println!("probe: loader path has libnccl.so.2");
        }
    }
}

/// What every child checks once a library is in use.
fn check_loaded(path: &Path, source: Source) {
    let info = nccl::library::current().unwrap();
    assert_eq!(info.source, source);
    assert_eq!(canon(&info.path), canon(path));
    assert!(nccl::is_available());
    assert_eq!(nccl::version().unwrap(), info.version);
    let caps = nccl::capabilities().unwrap();
    assert_eq!(caps.link_mode, nccl::LinkMode::Runtime);
    assert_eq!(caps.library.as_deref().map(canon), Some(canon(path)));
    assert!(
        caps.to_string().contains(&info.path.display().to_string()),
        "{caps}"
    );
    assert_ne!(UniqueId::new().unwrap(), UniqueId::new().unwrap());
}

#[test]
fn from_nccl_rs_library() {
    let lib = test_lib();
    if is_child("from_nccl_rs_library") {
        return check_loaded(&lib, Source::Env("NCCL_RS_LIBRARY"));
    }
    in_child(
        "from_nccl_rs_library",
        &[("NCCL_RS_LIBRARY", lib.as_os_str())],
    );
}

#[test]
fn from_vllm_nccl_so_path() {
    let lib = test_lib();
    if is_child("from_vllm_nccl_so_path") {
        return check_loaded(&lib, Source::Env("VLLM_NCCL_SO_PATH"));
    }
    in_child(
        "from_vllm_nccl_so_path",
        &[("VLLM_NCCL_SO_PATH", lib.as_os_str())],
    );
}

/// A virtual environment with NVIDIA's wheel layout, the library linked in.
fn fake_venv(case: &str) -> PathBuf {
    let venv = std::env::temp_dir().join(format!("nccl-rs-venv-{}-{case}", std::process::id()));
    let dir = venv.join("lib/python3.12/site-packages/nvidia/nccl/lib");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("libnccl.so.2");
    let _ = std::fs::remove_file(&file);
    std::os::unix::fs::symlink(canon(&test_lib()), &file).unwrap();
    venv
}

#[test]
fn from_the_python_environment() {
    if is_child("from_the_python_environment") {
        let venv = PathBuf::from(std::env::var_os("VIRTUAL_ENV").unwrap());
        let file = venv.join("lib/python3.12/site-packages/nvidia/nccl/lib/libnccl.so.2");
        return check_loaded(&file, Source::PythonEnv("$VIRTUAL_ENV".into()));
    }
    if on_loader_path() {
        // the documented order: the loader path comes before the Python env
        eprintln!(
            "from_the_python_environment: a libnccl.so.2 is on this machine's loader path, which the \
             search takes first; checking that order instead (run on a machine without one for the \
             Python-environment step)"
        );
        let venv = fake_venv("python-order");
        in_child(
            "loader_path_before_python_environment",
            &[("VIRTUAL_ENV", venv.as_os_str())],
        );
        let _ = std::fs::remove_dir_all(venv);
        return;
    }
    let venv = fake_venv("python");
    in_child(
        "from_the_python_environment",
        &[("VIRTUAL_ENV", venv.as_os_str())],
    );
    let _ = std::fs::remove_dir_all(venv);
}

/// The child of the Python-environment case on a machine with a system
/// libnccl: the loader path wins.
#[test]
fn loader_path_before_python_environment() {
    if is_child("loader_path_before_python_environment") {
        let info = nccl::library::current().unwrap();
        assert_eq!(info.source, Source::LoaderPath);
        assert!(nccl::is_available());
    }
}

#[test]
fn missing_library_is_a_typed_error_listing_every_place() {
    if !is_child("missing_library_is_a_typed_error_listing_every_place") && on_loader_path() {
        eprintln!(
            "missing_library_is_a_typed_error_listing_every_place: NOT RUN here: this machine has a \
             libnccl.so.2 on its loader path, so no library can be missing (CI runs it)"
        );
        if std::env::var_os("NCCL_RS_REQUIRE_MISSING_LIB").is_some() {
            panic!("NCCL_RS_REQUIRE_MISSING_LIB is set but a libnccl is on the loader path");
        }
        return;
    }
    if is_child("missing_library_is_a_typed_error_listing_every_place") {
        assert!(!nccl::is_available());
        let Some(Error::Library(LoadError::NotFound { tried })) = nccl::library_error() else {
            panic!("{:?}", nccl::library_error());
        };
        let places: Vec<&str> = tried.iter().map(|a| a.place.as_str()).collect();
        for want in [
            "$NCCL_RS_LIBRARY",
            "$VLLM_NCCL_SO_PATH",
            "libnccl.so.2 already loaded in this process",
            "libnccl.so already loaded in this process",
            "libnccl.so.2 on the loader path",
            "libnccl.so on the loader path",
            "$VIRTUAL_ENV",
            "$CONDA_PREFIX",
            "python3 on PATH",
        ] {
            assert!(places.contains(&want), "{want} not in {places:?}");
        }
        let text = Error::Library(LoadError::NotFound {
            tried: tried.clone(),
        })
        .to_string();
        assert!(
            text.contains("libnccl not found") && text.contains("NCCL_RS_LIBRARY="),
            "{text}"
        );
        // every call is the typed error, never a crash
        assert!(matches!(UniqueId::new(), Err(Error::Library(_))));
        assert!(matches!(nccl::version(), Err(Error::Library(_))));
        assert!(!nccl::sys::available("ncclGetVersion"));
        let mut code = 0;
        // SAFETY: no library: the wrapper returns without calling anything.
        let r = unsafe { nccl::sys::ncclGetVersion(&mut code) };
        assert_eq!(r, nccl::sys::ncclResult_t::ncclInvalidUsage);
        // a library given later still works
        let lib = test_lib();
        nccl::library::load(&lib).unwrap();
        return check_loaded(&lib, Source::Explicit);
    }
    in_child(
        "missing_library_is_a_typed_error_listing_every_place",
        &[("PATH", std::ffi::OsStr::new("/nonexistent"))],
    );
}

#[test]
fn a_library_already_loaded_is_reused() {
    let lib = test_lib();
    if is_child("a_library_already_loaded_is_reused") {
        // what an embedding host (PyTorch) has done before we run
        let c = CString::new(lib.to_str().unwrap()).unwrap();
        // SAFETY: opens a real libnccl; the handle is kept for the process.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!h.is_null());
        return check_loaded(&lib, Source::AlreadyLoaded);
    }
    in_child("a_library_already_loaded_is_reused", &[]);
}

#[test]
fn explicit_load_wins_and_another_library_is_refused() {
    let lib = test_lib();
    if is_child("explicit_load_wins_and_another_library_is_refused") {
        // the variable is not consulted when a path is given
        let info = nccl::library::load(&lib).unwrap();
        assert_eq!(info.source, Source::Explicit);
        nccl::library::load(&lib).unwrap();
        let e = nccl::library::load("/nonexistent/libnccl.so.2").unwrap_err();
        assert!(
            matches!(e, Error::Library(LoadError::OtherLoaded { .. })),
            "{e:?}"
        );
        return check_loaded(&lib, Source::Explicit);
    }
    in_child(
        "explicit_load_wins_and_another_library_is_refused",
        &[(
            "NCCL_RS_LIBRARY",
            std::ffi::OsStr::new("/nonexistent/libnccl.so.2"),
        )],
    );
}

#[test]
fn a_bad_path_in_the_variable_stops_the_search() {
    if is_child("a_bad_path_in_the_variable_stops_the_search") {
        let Some(Error::Library(LoadError::NotFound { tried })) = nccl::library_error() else {
            panic!("{:?}", nccl::library_error());
        };
        let last = tried.last().unwrap();
        assert_eq!(last.place, "$NCCL_RS_LIBRARY=/nonexistent/libnccl.so.2");
        assert!(!last.outcome.is_empty());
        assert!(!nccl::is_available(), "the venv was not looked at");
        return;
    }
    let venv = fake_venv("bad-path");
    in_child(
        "a_bad_path_in_the_variable_stops_the_search",
        &[
            (
                "NCCL_RS_LIBRARY",
                std::ffi::OsStr::new("/nonexistent/libnccl.so.2"),
            ),
            ("VIRTUAL_ENV", venv.as_os_str()),
        ],
    );
    let _ = std::fs::remove_dir_all(venv);
}
