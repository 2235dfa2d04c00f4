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
use std::time::{Duration, Instant};

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
    in_child_at(case, env, None);
}

/// Like [`in_child`], in the working directory `cwd` when given.
fn in_child_at(case: &str, env: &[(&str, &std::ffi::OsStr)], cwd: Option<&Path>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
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

/// A fresh folder for one case's files.
fn scratch(case: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nccl-rs-{case}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An executable shell script.
fn script(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The `python3` of an absolute directory of `PATH`.
fn real_python() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .filter(|d| d.is_absolute())
        .map(|d| d.join("python3"))
        .find(|f| f.is_file())
}

/// The search's attempts, in a child where none succeeded.
fn attempts() -> Vec<nccl::library::Attempt> {
    match nccl::library_error() {
        Some(Error::Library(LoadError::NotFound { tried })) => tried,
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_python_probe_runs_nothing_from_the_working_directory() {
    const CASE: &str = "the_python_probe_runs_nothing_from_the_working_directory";
    if is_child(CASE) {
        let dir = PathBuf::from(std::env::var_os("NCCL_RS_TEST_DIR").unwrap());
        assert!(!nccl::is_available());
        let tried = attempts();
        // the real interpreter answered (its folders were looked at)
        assert!(
            tried.iter().any(|a| a.place.ends_with("(python3 on PATH)")),
            "{tried:?}"
        );
        assert!(!dir.join("marker").exists());
        return;
    }
    if on_loader_path() {
        eprintln!("{CASE}: NOT RUN here: a libnccl.so.2 on the loader path ends the search first");
        return;
    }
    let Some(python) = real_python() else {
        eprintln!("{CASE}: NOT RUN here: no python3 on PATH");
        return;
    };
    // what a hostile working directory holds: modules the probe imports, and
    // a `python3` that `.` or an empty entry of PATH would find
    let dir = scratch("cwd");
    let marker = dir.join("marker");
    for m in ["sysconfig", "site", "os", "encodings"] {
        std::fs::write(
            dir.join(format!("{m}.py")),
            format!(
                "open({:?}, 'a').write('{m}.py ran\\n')\nprint({:?})\n",
                marker.display().to_string(),
                dir.display().to_string()
            ),
        )
        .unwrap();
    }
    script(
        &dir.join("python3"),
        &format!(
            "#!/bin/sh\necho './python3 ran' >> {:?}\necho {:?}\n",
            marker.display().to_string(),
            dir.display().to_string()
        ),
    );
    let mut path = std::ffi::OsString::from(".::");
    path.push(python.parent().unwrap());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap());
    in_child_at(
        CASE,
        &[("PATH", &path), ("NCCL_RS_TEST_DIR", dir.as_os_str())],
        Some(&dir),
    );
    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        ran.is_empty(),
        "the search ran code from the working directory: {ran}"
    );
}

#[test]
fn a_python_that_hangs_is_cut_off_and_blocks_no_other_thread() {
    const CASE: &str = "a_python_that_hangs_is_cut_off_and_blocks_no_other_thread";
    let part = std::env::var("NCCL_RS_TEST_PART").unwrap_or_default();
    if is_child(CASE) && part == "cut" {
        let t = Instant::now();
        assert!(!nccl::is_available());
        let took = t.elapsed();
        assert!(
            (Duration::from_millis(4500)..Duration::from_secs(8)).contains(&took),
            "{took:?}"
        );
        let tried = attempts();
        let py = tried.iter().find(|a| a.place == "python3 on PATH").unwrap();
        assert!(py.outcome.contains("no answer within 5s"), "{py:?}");
        // what it started was killed with it
        let dir = PathBuf::from(std::env::var_os("NCCL_RS_TEST_DIR").unwrap());
        let pid = std::fs::read_to_string(dir.join("pid")).unwrap();
        // SIGKILL takes effect soon after kill(2) returns: gone or a zombie
        let t = Instant::now();
        while let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
            let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
            if state == Some("Z") {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "still running: {stat}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        return;
    }
    if is_child(CASE) && part == "load" {
        let searching = std::thread::spawn(|| {
            let t = Instant::now();
            (nccl::is_available(), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(500));
        let lib = test_lib();
        let t = Instant::now();
        nccl::library::load(&lib).unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let (found, took) = searching.join().unwrap();
        assert!(found, "the search sees the library loaded meanwhile");
        assert!(took < Duration::from_secs(8), "{took:?}");
        return check_loaded(&lib, Source::Explicit);
    }
    if is_child(CASE) {
        panic!("NCCL_RS_TEST_PART={part:?}");
    }
    if on_loader_path() {
        eprintln!("{CASE}: NOT RUN here: a libnccl.so.2 on the loader path ends the search first");
        return;
    }
    let dir = scratch("hang");
    script(
        &dir.join("python3"),
        &format!(
            "#!/bin/sh\nsleep 60 &\necho $! > {:?}\nwait\n",
            dir.join("pid").display().to_string()
        ),
    );
    let mut path = dir.clone().into_os_string();
    path.push(":/usr/bin:/bin");
    for part in ["cut", "load"] {
        in_child(
            CASE,
            &[
                ("PATH", &path),
                ("NCCL_RS_TEST_DIR", dir.as_os_str()),
                ("NCCL_RS_TEST_PART", part.as_ref()),
            ],
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Builds a shared library from C `source` into `dir/name` with `cc`; `None`
/// when there is no C compiler.
fn c_library(dir: &Path, name: &str, source: &str) -> Option<PathBuf> {
    let c = dir.join(format!("{name}.c"));
    let so = dir.join(format!("{name}.so"));
    std::fs::write(&c, source).unwrap();
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .output()
        .ok()?;
    assert!(out.status.success(), "{out:?}");
    Some(so)
}

/// Whether the library at `path` is loaded in this process.
fn is_loaded(path: &Path) -> bool {
    let c = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: RTLD_NOLOAD only looks the library up; a handle found takes a
    // reference that is given back at once.
    let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD) };
    if h.is_null() {
        return false;
    }
    // SAFETY: h is the live handle just taken.
    unsafe { libc::dlclose(h) };
    true
}

#[test]
fn a_library_that_fails_its_checks_is_not_left_loaded() {
    const CASE: &str = "a_library_that_fails_its_checks_is_not_left_loaded";
    if is_child(CASE) {
        let dir = PathBuf::from(std::env::var_os("NCCL_RS_TEST_DIR").unwrap());
        let (failing, foreign) = (dir.join("failing.so"), dir.join("foreign.so"));
        // through the variable: its ncclGetVersion fails
        assert!(!nccl::is_available());
        let last = attempts().pop().unwrap();
        assert!(
            last.outcome.contains("ncclGetVersion failed with code 1"),
            "{last:?}"
        );
        assert!(
            !is_loaded(&failing),
            "a library that failed is still loaded"
        );
        // given in code: not NCCL at all
        let e = nccl::library::load(&foreign).unwrap_err();
        assert!(e.to_string().contains("not an NCCL library"), "{e}");
        assert!(
            !is_loaded(&foreign),
            "a library that failed is still loaded"
        );
        return;
    }
    let dir = scratch("fake-libs");
    let failing = c_library(
        &dir,
        "failing",
        "int ncclGetVersion(int *v) { *v = 0; return 1; }\n",
    );
    let Some(failing) = failing else {
        eprintln!("{CASE}: NOT RUN here: no C compiler (cc) to build the fake libraries");
        return;
    };
    c_library(&dir, "foreign", "int not_nccl(void) { return 0; }\n").unwrap();
    in_child(
        CASE,
        &[
            ("NCCL_RS_LIBRARY", failing.as_os_str()),
            ("NCCL_RS_TEST_DIR", dir.as_os_str()),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A libnccl in the working directory is not loaded through an empty or
/// relative entry of `LD_LIBRARY_PATH`, nor through a relative
/// `$VIRTUAL_ENV`: those steps say why they were skipped.
#[test]
fn a_library_in_the_working_directory_is_not_loaded() {
    const CASE: &str = "a_library_in_the_working_directory_is_not_loaded";
    if is_child(CASE) {
        if std::env::var_os("NCCL_RS_TEST_RESET").is_some_and(|v| !v.is_empty()) {
            // the program makes the variable safe after it started: the
            // loader still uses the value it started with
            // SAFETY: the child runs this one test, on one thread, before
            // anything else reads the environment.
            unsafe { std::env::set_var("LD_LIBRARY_PATH", "/nonexistent") };
        }
        let dir = canon(&PathBuf::from(
            std::env::var_os("NCCL_RS_TEST_DIR").unwrap(),
        ));
        if let Ok(info) = nccl::library::current() {
            assert!(
                !canon(&info.path).starts_with(&dir),
                "loaded from the working directory: {}",
                info.path.display()
            );
            return;
        }
        let tried = attempts();
        let said = |place: &str, why: &str| {
            tried
                .iter()
                .any(|a| a.place.starts_with(place) && a.outcome.contains(why))
        };
        assert!(
            said("libnccl.so.2 on the loader path", "an empty entry"),
            "{tried:?}"
        );
        assert!(
            said("$VIRTUAL_ENV=venv", "not an absolute path"),
            "{tried:?}"
        );
        return;
    }
    let dir = scratch("cwd-lib");
    std::fs::copy(test_lib(), dir.join("libnccl.so.2")).unwrap();
    let site = dir.join("venv/lib/python3.12/site-packages/nvidia/nccl/lib");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::copy(test_lib(), site.join("libnccl.so.2")).unwrap();
    for reset in ["", "1"] {
        in_child_at(
            CASE,
            &[
                ("LD_LIBRARY_PATH", std::ffi::OsStr::new("/nonexistent:")),
                ("VIRTUAL_ENV", std::ffi::OsStr::new("venv")),
                ("PATH", std::ffi::OsStr::new("/nonexistent")),
                ("NCCL_RS_TEST_DIR", dir.as_os_str()),
                ("NCCL_RS_TEST_RESET", std::ffi::OsStr::new(reset)),
            ],
            Some(&dir),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// With an empty entry in `LD_LIBRARY_PATH` (a trailing `:`, as `export
/// LD_LIBRARY_PATH=/x:$LD_LIBRARY_PATH` leaves when it was unset), the
/// library in its absolute folders is still found, by full path.
#[test]
fn an_empty_ld_library_path_entry_still_finds_its_absolute_folders() {
    const CASE: &str = "an_empty_ld_library_path_entry_still_finds_its_absolute_folders";
    let dir = canon(test_lib().parent().unwrap());
    if is_child(CASE) {
        if std::env::var_os("NCCL_RS_TEST_RESET").is_some_and(|v| !v.is_empty()) {
            // the program changes the variable after it started: the
            // folders searched are still those the loader uses
            // SAFETY: the child runs this one test, on one thread, before
            // anything else reads the environment.
            unsafe { std::env::set_var("LD_LIBRARY_PATH", "/nonexistent") };
        }
        return check_loaded(&dir.join("libnccl.so.2"), Source::LoaderPath);
    }
    let mut path = dir.clone().into_os_string();
    path.push(":");
    for reset in ["", "1"] {
        in_child(
            CASE,
            &[
                ("LD_LIBRARY_PATH", &path),
                ("NCCL_RS_TEST_RESET", std::ffi::OsStr::new(reset)),
            ],
        );
    }
}

/// A setuid program (secure-execution mode) trusts no path from its
/// environment: `NCCL_RS_LIBRARY` names a real libnccl, and is skipped,
/// saying why. Run as root on a copy of this test program owned by
/// `nobody` with the setuid bit (real user root, effective user nobody).
#[test]
fn a_setuid_program_trusts_no_path_from_its_environment() {
    const CASE: &str = "a_setuid_program_trusts_no_path_from_its_environment";
    if is_child(CASE) {
        // SAFETY: reads the auxiliary vector only
        if unsafe { libc::getauxval(libc::AT_SECURE) } == 0 {
            println!("child: not in secure-execution mode");
            return;
        }
        match nccl::library::current() {
            Ok(info) => assert_ne!(
                info.source,
                Source::Env("NCCL_RS_LIBRARY"),
                "loaded from the environment's path"
            ),
            Err(_) => {
                let tried = attempts();
                assert!(
                    tried
                        .iter()
                        .any(|a| a.place == "$NCCL_RS_LIBRARY"
                            && a.outcome.contains("secure-execution")),
                    "{tried:?}"
                );
            }
        }
        println!("child: secure, checked");
        return;
    }
    // SAFETY: plain getters
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("{CASE}: NOT RUN here: needs root to make a setuid copy of this program");
        return;
    }
    let dir = scratch("setuid");
    let exe = dir.join("runtime_load");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    let c = CString::new(exe.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path of a file this test made
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let mut cmd = Command::new(&exe);
    cmd.args(["--exact", CASE, "--nocapture", "--test-threads=1"])
        .current_dir("/")
        .env(CHILD, CASE)
        .env("NCCL_RS_TEST_LIB", test_lib());
    for v in SEARCH_VARS {
        cmd.env_remove(v);
    }
    cmd.env("NCCL_RS_LIBRARY", test_lib());
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("child: not in secure-execution mode") {
        eprintln!("{CASE}: NOT RUN here: the setuid bit is ignored (nosuid or no_new_privs)");
        if std::env::var_os("NCCL_RS_REQUIRE_SETUID").is_some() {
            panic!("NCCL_RS_REQUIRE_SETUID is set but the setuid copy did not run setuid");
        }
        return;
    }
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("child: secure, checked"), "{text}");
}

/// A copy of the test library (another file for the loader), and a hard
/// link to it (the same file under another name).
fn copies_of_the_library(case: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch(case);
    let copy = dir.join("copy").join("libnccl.so.2");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(canon(&test_lib()), &copy).unwrap();
    let link = dir.join("link").join("libnccl.so.2");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::fs::hard_link(&copy, &link).unwrap();
    (dir, copy, link)
}

/// A libnccl whose functions are in the global scope (what a Python host's
/// `RTLD_GLOBAL` does) and another file named by the variable, or by
/// `load`: refused, since NCCL would call into the first with the second's
/// structures. The same file, under a hard link or by its bare soname, is
/// taken.
#[test]
fn another_library_beside_one_in_the_global_scope_is_refused() {
    const CASE: &str = "another_library_beside_one_in_the_global_scope_is_refused";
    if is_child(CASE) {
        let global = PathBuf::from(std::env::var_os("NCCL_RS_TEST_GLOBAL").unwrap());
        let c = CString::new(global.to_str().unwrap()).unwrap();
        // SAFETY: opens a real libnccl into the global scope, as a host
        // would; the handle is kept for the process.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        assert!(!h.is_null());
        let named = PathBuf::from(std::env::var_os("NCCL_RS_LIBRARY").unwrap());
        let other = PathBuf::from(std::env::var_os("NCCL_RS_TEST_OTHER").unwrap());
        if named == other {
            match nccl::library_error() {
                Some(Error::Library(LoadError::OtherLoaded { loaded, requested })) => {
                    assert_eq!(canon(&loaded), canon(&global));
                    assert_eq!(requested, other);
                }
                e => panic!("{e:?}"),
            }
            assert!(matches!(
                nccl::library::load(&other),
                Err(Error::Library(LoadError::OtherLoaded { .. }))
            ));
            nccl::library::load(&global).unwrap();
            return check_loaded(&global, Source::Explicit);
        }
        // the same file: a hard link to it, or its bare soname
        assert!(nccl::is_available(), "{:?}", nccl::library_error());
        let info = nccl::library::current().unwrap();
        assert_eq!(info.source, Source::Env("NCCL_RS_LIBRARY"));
        return;
    }
    let (dir, copy, link) = copies_of_the_library("global");
    let other = test_lib();
    for (global, named) in [
        (&copy, other.as_os_str()),
        (&copy, link.as_os_str()),
        (&copy, std::ffi::OsStr::new("libnccl.so.2")),
    ] {
        in_child(
            CASE,
            &[
                ("NCCL_RS_TEST_GLOBAL", global.as_os_str()),
                ("NCCL_RS_LIBRARY", named),
                ("NCCL_RS_TEST_OTHER", other.as_os_str()),
            ],
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A libnccl in the global scope under another soname (a renamed copy, as
/// wheel repair tools make, opened with `RTLD_GLOBAL`): the search's later
/// steps (the loader path by name, here) do not open a second libnccl beside
/// it either.
#[test]
fn no_step_opens_a_library_beside_a_renamed_global_one() {
    const CASE: &str = "no_step_opens_a_library_beside_a_renamed_global_one";
    if is_child(CASE) {
        let global = PathBuf::from(std::env::var_os("NCCL_RS_TEST_GLOBAL").unwrap());
        let c = CString::new(global.to_str().unwrap()).unwrap();
        // SAFETY: opens a real libnccl (its soname changed) into the global
        // scope, as a host would; the handle is kept for the process.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        assert!(!h.is_null());
        match nccl::library_error() {
            Some(Error::Library(LoadError::OtherLoaded { loaded, requested })) => {
                assert_eq!(canon(&loaded), canon(&global));
                assert_eq!(requested, PathBuf::from("libnccl.so.2"));
            }
            e => panic!("{e:?}"),
        }
        return;
    }
    let dir = scratch("renamed-global");
    let renamed = dir.join("libncc9.so.2");
    let mut bytes = std::fs::read(canon(&test_lib())).unwrap();
    let at = bytes
        .windows(13)
        .position(|w| w == b"libnccl.so.2\0")
        .expect("the soname in the library's strings");
    bytes[at..at + 12].copy_from_slice(b"libncc9.so.2");
    std::fs::write(&renamed, bytes).unwrap();
    in_child(
        CASE,
        &[
            ("NCCL_RS_TEST_GLOBAL", renamed.as_os_str()),
            (
                "LD_LIBRARY_PATH",
                canon(test_lib().parent().unwrap()).as_os_str(),
            ),
            ("PATH", std::ffi::OsStr::new("/nonexistent")),
        ],
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A relative path in the variable is refused (it names a file of the
/// working directory); so is a bare name where `LD_LIBRARY_PATH` would make
/// the loader search the working directory for it.
#[test]
fn the_variable_names_nothing_in_the_working_directory() {
    const CASE: &str = "the_variable_names_nothing_in_the_working_directory";
    if is_child(CASE) {
        let value = std::env::var("NCCL_RS_LIBRARY").unwrap();
        assert!(!nccl::is_available());
        let tried = attempts();
        let last = tried.last().unwrap();
        assert_eq!(last.place, format!("$NCCL_RS_LIBRARY={value}"));
        let want = if value.contains('/') {
            "not an absolute path"
        } else {
            "a bare name, and LD_LIBRARY_PATH has an empty entry"
        };
        assert!(last.outcome.contains(want), "{last:?}");
        // `load` refuses the same path the same way, before opening it
        match nccl::library::load(&value) {
            Err(Error::Library(LoadError::NotFound { tried })) => {
                assert_eq!(tried.len(), 1, "{tried:?}");
                assert_eq!(tried[0].place, format!("load({value})"));
                assert!(tried[0].outcome.contains(want), "{tried:?}");
            }
            other => panic!("load({value}): {other:?}"),
        }
        return;
    }
    // the working directory holds a library under both names
    let dir = scratch("variable-cwd");
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    for name in ["libnccl.so.2", "lib/libnccl.so.2"] {
        std::os::unix::fs::symlink(canon(&test_lib()), dir.join(name)).unwrap();
    }
    for (value, ld) in [
        ("lib/libnccl.so.2", "/nonexistent"),
        ("libnccl.so.2", "/nonexistent::"),
    ] {
        in_child_at(
            CASE,
            &[
                ("NCCL_RS_LIBRARY", std::ffi::OsStr::new(value)),
                ("LD_LIBRARY_PATH", std::ffi::OsStr::new(ld)),
            ],
            Some(&dir),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
