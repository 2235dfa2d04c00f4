//! The safe layer without a GPU: versions, errors, unique ids, thread
//! safety, argument contracts, capabilities — against the real libnccl.

use nccl::{Error, NcclCode, UniqueId, Version, VersionError};

#[test]
fn version_decoding_table() {
    let table = [
        (22803, (2, 28, 3), "2.28.3"),
        (22800, (2, 28, 0), "2.28.0"),
        (21903, (2, 19, 3), "2.19.3"),
        (2708, (2, 7, 8), "2.7.8"),
        (30000, (3, 0, 0), "3.0.0"),
        (20900, (2, 9, 0), "2.9.0"),
        (1000, (1, 0, 0), "1.0.0"),
    ];
    for (code, (a, b, c), text) in table {
        let v = Version::from_code(code).unwrap();
        assert_eq!((v.major, v.minor, v.patch), (a, b, c), "{code}");
        assert_eq!(v.to_string(), text);
        assert_eq!(text.parse::<Version>().unwrap(), v);
        assert_eq!(v.code(), Some(code), "round trip of {code}");
    }
    for bad in [-1, 0, 999, 2900, 9999, i32::MIN] {
        assert!(
            matches!(Version::from_code(bad), Err(VersionError::Code(code)) if code == bad),
            "{bad}"
        );
    }
    for bad in ["", "2", "2.28", "2.28.x", "2.28.3.1", "a.b.c"] {
        assert!(
            matches!(bad.parse::<Version>(), Err(VersionError::Text(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        "2.28.3+cuda13.0".parse::<Version>().unwrap(),
        Version::new(2, 28, 3)
    );
    assert!(Version::new(2, 28, 0) > Version::new(2, 19, 9));
    assert!(Version::new(3, 0, 0) > Version::new(2, 99, 99));
}

#[test]
fn runtime_and_header_versions() {
    let v = nccl::version().unwrap();
    let want = nccl_rs_tests::expected_runtime()
        .map_or(nccl::HEADER_VERSION, |(a, b, c)| Version::new(a, b, c));
    assert_eq!(v, want, "NCCL_RS_EXPECT_RUNTIME or the header's");
    assert_eq!(
        nccl::HEADER_VERSION.code(),
        Some(nccl::sys::NCCL_VERSION_CODE as i32)
    );
    assert!(nccl::is_available());
    assert!(nccl::library_error().is_none());
    let caps = nccl::capabilities().unwrap();
    assert_eq!(caps.runtime, v);
    assert_eq!(caps.link_mode, nccl::sys::LINK_MODE);
    // every optional API: since from the headers; available when both the
    // header and the runtime have it
    for f in &caps.features {
        let since = nccl::sys::since::any(f.api).unwrap();
        assert_eq!(
            f.since,
            Version::new(since.0, since.1, since.2),
            "{}",
            f.api
        );
        let header_has = nccl::sys::declared(f.api);
        assert_eq!(
            f.available,
            header_has && v >= f.since,
            "{}: header {header_has}, runtime {v}",
            f.api
        );
    }
    let window = caps
        .features
        .iter()
        .find(|f| f.api == "ncclCommWindowRegister")
        .unwrap();
    assert_eq!(window.since, Version::new(2, 27, 3));
    let text = caps.to_string();
    assert!(
        text.contains(&v.to_string()) && text.contains("ncclMemAlloc"),
        "{text}"
    );
    match caps.link_mode {
        nccl::LinkMode::Static => assert!(caps.library.is_none()),
        _ => {
            let lib = caps.library.as_ref().expect("the file in use");
            assert!(text.contains(&lib.display().to_string()), "{text}");
            let info = nccl::library::current().unwrap();
            assert_eq!(&info.path, lib);
            assert_eq!(info.version, v);
        }
    }
}

/// An API the loaded library lacks is `Unsupported` with the release that
/// introduced it (from the headers) and the runtime's version; one it has
/// passes. Run against 2.18.3 by CI, this is the "built on the newest
/// header, run on the oldest library" check.
#[test]
fn apis_the_runtime_lacks_are_unsupported() {
    let v = nccl::version().unwrap();
    for api in [
        "ncclAlltoAll",
        "ncclCommShrink",
        "ncclMemAlloc",
        "ncclTimeout",
    ] {
        let since = nccl::sys::since::any(api).unwrap();
        let since = Version::new(since.0, since.1, since.2);
        match nccl::require_api(api) {
            Ok(()) => assert!(v >= since && nccl::sys::declared(api), "{api}"),
            Err(Error::Unsupported {
                api: a,
                since: s,
                runtime,
            }) => {
                assert_eq!((a, s, runtime), (api, since, v));
                assert!(v < since || !nccl::sys::declared(api), "{api}");
                let text = Error::Unsupported {
                    api: a,
                    since: s,
                    runtime,
                }
                .to_string();
                assert!(
                    text.contains(&format!("{api} needs NCCL {s} or newer")),
                    "{text}"
                );
            }
            Err(e) => panic!("{api}: {e:?}"),
        }
    }
    // a floor API is there on every supported runtime
    nccl::require_api("ncclAllReduce").unwrap();
    nccl::require_api("ncclCommSplit").unwrap();
    assert!(matches!(
        nccl::require_api("ncclNoSuchThing"),
        Err(Error::Unsupported { .. })
    ));
    if v < Version::new(2, 28, 3) && nccl::sys::declared("ncclAlltoAll") {
        let e = nccl::require_api("ncclAlltoAll").unwrap_err();
        nccl_rs_tests::say(&format!("on libnccl {v}: {e}"));
    }
}

/// The `ncclConfig_t` passed to a library older than the header is that
/// library's own: its size and version, as its `NCCL_CONFIG_INITIALIZER`.
#[test]
fn config_matches_the_runtime() {
    use nccl::sys;
    let full = std::mem::size_of::<sys::ncclConfig_t>();
    let c = sys::config_for_runtime((2, 18, 3));
    assert_eq!(c.magic, 0xcafe_beef);
    assert_eq!(c.blocking, sys::NCCL_CONFIG_UNDEF_INT);
    if sys::NCCL_VERSION_CODE > 21803 {
        // size, magic, version, 4 ints, netName, splitShare: 48 bytes on LP64
        assert_eq!((c.size, c.version), (48, 21803));
    }
    let newest = sys::since::NEWEST;
    assert_eq!(
        sys::config_for_runtime((newest.0, newest.1 + 1, 0)).size,
        full
    );
    assert_eq!(
        sys::config_for_runtime((newest.0, newest.1 + 1, 0)).version,
        sys::NCCL_VERSION_CODE
    );
}

#[test]
fn every_result_code_maps_and_explains() {
    use nccl::sys::ncclResult_t as R;
    assert_eq!(NcclCode::from_raw(R::ncclSuccess), None);
    let table = [
        (
            R::ncclUnhandledCudaError,
            NcclCode::UnhandledCudaError,
            "ncclUnhandledCudaError",
        ),
        (R::ncclSystemError, NcclCode::SystemError, "ncclSystemError"),
        (
            R::ncclInternalError,
            NcclCode::InternalError,
            "ncclInternalError",
        ),
        (
            R::ncclInvalidArgument,
            NcclCode::InvalidArgument,
            "ncclInvalidArgument",
        ),
        (
            R::ncclInvalidUsage,
            NcclCode::InvalidUsage,
            "ncclInvalidUsage",
        ),
        (R::ncclRemoteError, NcclCode::RemoteError, "ncclRemoteError"),
        (R::ncclInProgress, NcclCode::InProgress, "ncclInProgress"),
        // by value: named even under a header older than 2.30
        (R(8), NcclCode::Timeout, "ncclTimeout"),
    ];
    for (raw, code, name) in table {
        assert_eq!(NcclCode::from_raw(raw), Some(code));
        assert_eq!(code.raw(), raw.0);
        assert_eq!(code.name(), name);
        assert!(code.to_string().contains(name));
        assert!(!nccl::error_string(raw.0).is_empty());
    }
    let unknown = NcclCode::from_raw(R(42)).unwrap();
    assert_eq!(unknown, NcclCode::Unknown(42));
    assert_eq!(unknown.raw(), 42);
}

#[test]
fn errors_say_what_happened_and_debug_shows_the_code() {
    let e = "2.x.1".parse::<Version>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"2.x.1\" is not an NCCL version (expected major.minor.patch, such as 2.28.3)"
    );
    let e = Error::from(e);
    assert!(format!("{e:?}").contains("InvalidVersion"));
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Error>();
    let e = Error::Unsupported {
        api: "ncclCommWindowRegister",
        since: Version::new(2, 27, 3),
        runtime: Version::new(2, 19, 3),
    };
    assert!(
        e.to_string().contains("needs NCCL 2.27.3 or newer")
            && e.to_string().contains("runs with libnccl 2.19.3"),
        "{e}"
    );
    let e = Error::LibraryTooOld {
        runtime: Version::new(2, 17, 1),
        minimum: nccl::MIN_VERSION,
    };
    assert!(
        e.to_string()
            .contains("libnccl 2.17.1 is older than NCCL 2.18.1"),
        "{e}"
    );
}

#[test]
fn unique_id_round_trips_and_rejects_bad_input() {
    let id = UniqueId::new().unwrap();
    let text = id.to_string();
    assert_eq!(text.len(), 256);
    assert_eq!(text.parse::<UniqueId>().unwrap(), id);
    assert_eq!(text.to_uppercase().parse::<UniqueId>().unwrap(), id);
    assert_eq!(UniqueId::from_bytes(id.as_bytes()).unwrap(), id);
    assert_ne!(UniqueId::new().unwrap(), id);
    // Debug hides the secret
    let dbg = format!("{id:?}");
    assert!(!dbg.contains(&text[..32]) && dbg.len() < 80, "{dbg}");
    for len in [0, 127, 129] {
        let e = UniqueId::from_bytes(&vec![0u8; len]).unwrap_err();
        assert!(e.to_string().contains(&format!("got {len}")), "{e}");
    }
    let e = text[..255].parse::<UniqueId>().unwrap_err();
    assert!(e.to_string().contains("255 characters"), "{e}");
    let mut bad = text.clone();
    bad.replace_range(10..11, "g");
    let e = bad.parse::<UniqueId>().unwrap_err();
    assert!(e.to_string().contains("position 10"), "{e}");
}

#[test]
fn comm_is_send_not_sync() {
    fn send<T: Send>() {}
    send::<nccl::Comm>();
    // !Sync is a compile-fail test (tests/ui/comm_not_sync.rs); this checks
    // the positive half.
}

/// The thread rules of every public type, as the compiler sees them (the
/// negative halves are compile-fail tests in tests/ui).
#[test]
fn public_types_send_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<nccl::Error>();
    send_sync::<nccl::Version>();
    send_sync::<UniqueId>();
    send_sync::<nccl::Config>();
    send_sync::<nccl::AbortHandle>();
    send_sync::<nccl::bootstrap::LaunchInfo>();
    send_sync::<nccl::bootstrap::LaunchOptions>();
    send_sync::<nccl::Capabilities>();
    send_sync::<nccl::NcclBuffer<f32>>();
    send_sync::<nccl::Watchdog>();
    send::<nccl::Comm>();
    // an engine keeps its communicator and its registered buffers together
    // and may move to another thread
    #[allow(dead_code)]
    struct Engine {
        comm: nccl::Comm,
        weights: Vec<nccl::Registered<f32, cudarc::driver::CudaSlice<f32>>>,
        scratch: nccl::Registered<f32, nccl::NcclBuffer<f32>>,
    }
    send::<Engine>();
    send::<nccl::bootstrap::TcpBootstrap>();
}

/// Versions no code stands for are refused, never overflow or wrap.
#[test]
fn impossible_versions_are_errors() {
    // would overflow i32 (and u32) arithmetic
    assert_eq!(Version::new(429497, 0, 0).code(), None);
    assert_eq!(Version::new(u32::MAX, u32::MAX, u32::MAX).code(), None);
    // would decode to another version
    assert_eq!(Version::new(2, 300, 0).code(), None);
    assert_eq!(Version::new(2, 28, 100).code(), None);
    assert_eq!(Version::new(0, 1, 0).code(), None);
    assert_eq!(Version::new(214748, 36, 47).code(), Some(i32::MAX));
    for bad in [
        "429497.0.0",
        "2.300.0",
        "2.28.100",
        "0.1.2",
        "99999999999.0.0",
    ] {
        assert!(
            matches!(bad.parse::<Version>(), Err(VersionError::Text(_))),
            "{bad:?} parsed"
        );
    }
    for v in ["2.28.3", "2.8.4", "1.0.0", "3.0.0"] {
        let p: Version = v.parse().unwrap();
        assert_eq!(Version::from_code(p.code().unwrap()).unwrap(), p, "{v}");
    }
}

/// An error quotes untrusted input shortened and escaped.
#[test]
fn errors_quote_input_shortened() {
    let huge = "9".repeat(10 << 20);
    let e = huge.parse::<Version>().unwrap_err();
    let text = e.to_string();
    assert!(text.len() < 300, "{} bytes of message", text.len());
    assert!(text.contains(&format!("({} bytes)", 10 << 20)), "{text}");
    let e = "\x1b[31m2.x\n".parse::<Version>().unwrap_err().to_string();
    assert!(!e.contains('\x1b') && !e.contains('\n'), "{e:?}");
}

/// Without a CUDA driver (CI has none), every entry point that makes a CUDA
/// context returns a typed error instead of cudarc's panic.
#[test]
fn no_driver_is_a_typed_error() {
    if nccl::driver_version().is_ok() {
        eprintln!("a CUDA driver is present: the no-driver path is tested on machines without one");
        return;
    }
    match nccl::context(0) {
        Err(Error::NoDriver { tried }) => assert!(tried.iter().any(|t| t.contains("libcuda"))),
        other => panic!("expected NoDriver, got {other:?}"),
    }
    let e = nccl::driver_version().unwrap_err().to_string();
    assert!(e.contains("no CUDA driver"), "{e}");
}

/// A library by the driver's name that is not the driver (here a copy of
/// libm, first on `LD_LIBRARY_PATH`): a typed error, not cudarc's panic on
/// its missing symbols. Runs in a child process, whose loader path has it.
#[test]
fn a_library_named_like_the_driver_is_a_typed_error() {
    if std::env::var_os("NCCL_RS_TEST_CHILD").is_some() {
        match nccl::device_count() {
            Err(Error::NoDriver { tried }) => {
                assert!(
                    tried.iter().any(|t| t.contains("not the CUDA driver")),
                    "{tried:?}"
                );
                println!("child: NoDriver");
            }
            other => println!("child: unexpected {other:?}"),
        }
        return;
    }
    let libm = libm();
    let dir = std::env::temp_dir().join(format!("nccl-rs-decoy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["libcuda.so", "libcuda.so.1"] {
        std::fs::copy(libm, dir.join(name)).unwrap();
    }
    let mut path = std::ffi::OsString::from(dir.as_os_str());
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        path.push(":");
        path.push(old);
    }
    let stdout = child_stdout(
        "a_library_named_like_the_driver_is_a_typed_error",
        &[("LD_LIBRARY_PATH", path)],
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(stdout.contains("child: NoDriver"), "{stdout}");
}

/// A file by the driver's name in the working directory, where an empty
/// entry of `LD_LIBRARY_PATH` makes the loader search it: refused before
/// anything is opened (cudarc opens the driver by name, which would load
/// that file and run its initializers), also when the program set the
/// variable to a safe value after it started (the loader keeps the value it
/// started with). The file is a copy of libm: were it opened, the error
/// would say "not the CUDA driver" instead.
#[test]
fn a_driver_in_the_working_directory_is_refused() {
    const CASE: &str = "a_driver_in_the_working_directory_is_refused";
    if std::env::var_os("NCCL_RS_TEST_CHILD").is_some() {
        if std::env::var_os("NCCL_RS_TEST_RESET").is_some() {
            // SAFETY: the child runs this one test, on one thread, before
            // anything else reads the environment.
            unsafe { std::env::set_var("LD_LIBRARY_PATH", "/nonexistent") };
        }
        let says = if std::env::var_os("NCCL_RS_TEST_DYNAMIC").is_some() {
            "through a dynamic string"
        } else {
            "libcuda.so: refused"
        };
        match nccl::device_count() {
            Err(Error::NoDriver { tried }) => {
                assert_eq!(tried.len(), 1, "{tried:?}");
                assert!(tried[0].contains(says), "{tried:?}");
                assert!(tried[0].contains("LD_LIBRARY_PATH"), "{tried:?}");
                println!("child: refused");
            }
            other => println!("child: unexpected {other:?}"),
        }
        return;
    }
    let libm = libm();
    let dir = std::env::temp_dir().join(format!("nccl-rs-cwd-driver-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(libm, dir.join("libcuda.so")).unwrap();
    // the empty entry as the program started (and as it still is, or
    // after the program made it safe), and a relative entry with a dynamic
    // string the loader expands (`$LIB`: `lib64/`, `lib/x86_64-linux-gnu/`)
    for (reset, ld) in [
        (false, "/nonexistent:"),
        (true, "/nonexistent:"),
        (false, "/nonexistent:$LIB"),
    ] {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", CASE, "--nocapture", "--test-threads=1"])
            .current_dir(&dir)
            .env("NCCL_RS_TEST_CHILD", "1")
            .env("LD_LIBRARY_PATH", ld);
        if reset {
            cmd.env("NCCL_RS_TEST_RESET", "1");
        }
        if ld.contains('$') {
            cmd.env("NCCL_RS_TEST_DYNAMIC", "1");
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("child: refused"),
            "reset {reset}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The system's libm: a real shared library that is not the CUDA driver.
fn libm() -> &'static str {
    [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib64/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file())
    .expect("a libm.so.6 to copy")
}

/// Runs `test` of this program in a child process with
/// `NCCL_RS_TEST_CHILD` and `env` set; its stdout, once it succeeded.
fn child_stdout(test: &str, env: &[(&str, std::ffi::OsString)]) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env("NCCL_RS_TEST_CHILD", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `init_from_launcher` without a CUDA driver: a typed error, not cudarc's
/// panic. Runs in a child process (the launcher variables are process-wide).
#[test]
fn init_from_launcher_without_driver() {
    if nccl::driver_version().is_ok() {
        eprintln!("a CUDA driver is present: the no-driver path is tested on machines without one");
        return;
    }
    if std::env::var_os("NCCL_RS_TEST_CHILD").is_some() {
        match nccl::bootstrap::init_from_launcher(&nccl::bootstrap::LaunchOptions::default()) {
            Err(Error::NoDriver { .. }) => println!("child: NoDriver"),
            other => println!("child: unexpected {:?}", other.map(|(_, i)| i)),
        }
        return;
    }
    let stdout = child_stdout(
        "init_from_launcher_without_driver",
        &[
            ("RANK", "0".into()),
            ("WORLD_SIZE", "1".into()),
            ("LOCAL_RANK", "0".into()),
        ],
    );
    assert!(stdout.contains("child: NoDriver"), "{stdout}");
}

// ---- elastic communicators: states, argument checks, version gates ----

use nccl::{CommOp, CommState, ElasticApi, GrowPlan, RankMap, ShrinkMode};

/// The state machine, written out here as a table independent of the
/// crate's `match`: every state × every call.
#[test]
fn comm_states_allow_exactly_the_documented_calls() {
    use CommOp as O;
    use CommState as S;
    let ops = CommOp::ALL;
    assert_eq!(
        ops,
        [
            O::Collective,
            O::Split,
            O::Shrink(ShrinkMode::Default),
            O::Shrink(ShrinkMode::Abort),
            O::Grow,
            O::Revoke,
            O::Suspend,
            O::Resume,
            O::MemStats,
            O::Finalize,
        ]
    );
    // columns in the order of `ops`
    let table: [(S, [bool; 10]); 5] = [
        (
            S::Live,
            [true, true, true, true, true, true, true, false, true, true],
        ),
        (
            S::Failed,
            [
                false, false, false, true, false, true, false, false, false, false,
            ],
        ),
        (
            S::Revoked,
            [
                false, true, true, true, false, false, false, false, true, true,
            ],
        ),
        (
            S::Suspended,
            [
                false, false, false, false, false, false, false, true, true, false,
            ],
        ),
        (S::Aborted, [false; 10]),
    ];
    for (state, row) in table {
        for (op, want) in ops.iter().zip(row) {
            assert_eq!(state.allows(*op), want, "{state} {op}");
            assert_eq!(state.check("x", *op).is_ok(), want, "{state} {op}");
            assert_eq!(state.after(*op).is_some(), want, "{state} {op}");
        }
    }
}

#[test]
fn comm_state_transitions() {
    use CommOp as O;
    use CommState as S;
    let abort = O::Shrink(ShrinkMode::Abort);
    let cases = [
        (S::Live, O::Collective, S::Live),
        (S::Live, O::Split, S::Live),
        (S::Live, O::Shrink(ShrinkMode::Default), S::Live),
        (S::Live, abort, S::Failed),
        (S::Live, O::Grow, S::Live),
        (S::Live, O::Revoke, S::Revoked),
        (S::Live, O::Suspend, S::Suspended),
        (S::Live, O::MemStats, S::Live),
        (S::Live, O::Finalize, S::Aborted),
        (S::Failed, O::Revoke, S::Revoked),
        (S::Failed, abort, S::Failed),
        (S::Revoked, O::Shrink(ShrinkMode::Default), S::Revoked),
        (S::Revoked, abort, S::Revoked),
        (S::Revoked, O::Split, S::Revoked),
        (S::Revoked, O::Finalize, S::Aborted),
        (S::Suspended, O::Resume, S::Live),
        (S::Suspended, O::MemStats, S::Suspended),
    ];
    for (from, op, to) in cases {
        assert_eq!(from.after(op), Some(to), "{from} --{op}-->");
    }
    // the recovery path: a failed wait_recoverable leaves Failed; revoke;
    // then the parent is only for shrinking, splitting and closing
    let s = S::Failed;
    assert!(!s.allows(O::Collective) && !s.allows(O::Finalize) && !s.allows(O::Split));
    let s = s.after(O::Revoke).unwrap();
    assert_eq!(s, S::Revoked);
    assert!(!s.allows(O::Revoke), "NCCL refuses a second revoke");
    assert!(s.allows(O::Shrink(ShrinkMode::Default)));
    // suspended until resumed
    let s = S::Live.after(O::Suspend).unwrap();
    assert!(!s.allows(O::Collective) && !s.allows(O::Suspend) && !s.allows(O::Finalize));
    assert_eq!(s.after(O::Resume), Some(S::Live));
}

#[test]
fn wrong_state_errors_name_the_state_and_what_is_allowed() {
    let e = CommState::Failed
        .check("all_reduce", CommOp::Collective)
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::WrongState {
                op: "all_reduce",
                state: CommState::Failed,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "all_reduce: not allowed while the communicator is failed; allowed now: shrink(ShrinkMode::Abort), revoke, abort"
    );
    assert!(format!("{e:?}").contains("WrongState"));
    let e = CommState::Revoked
        .check("finalize", CommOp::Revoke)
        .unwrap_err();
    assert!(
        e.to_string().ends_with(
            "allowed now: split, shrink, shrink(ShrinkMode::Abort), mem_stats, finalize, abort"
        ),
        "{e}"
    );
    // an aborted communicator keeps its own error
    assert!(matches!(
        CommState::Aborted.check("revoke", CommOp::Revoke),
        Err(Error::Aborted { op: "revoke" })
    ));
    let e = Error::Stalled {
        op: "wait_recoverable",
        after: std::time::Duration::from_secs(5),
    };
    let text = e.to_string();
    assert!(
        text.starts_with("wait_recoverable did not finish within 5s; the communicator is kept"),
        "{text}"
    );
    assert!(!text.ends_with('.'));
    fn send_sync<T: Send + Sync>() {}
    send_sync::<CommState>();
    send_sync::<RankMap>();
    send_sync::<GrowPlan>();
    send_sync::<nccl::MemStats>();
    fn send<T: Send>() {}
    send::<nccl::Shrunk>();
}

#[test]
fn shrink_ranks_are_checked_before_nccl() {
    let bad = |world, me, exclude: &[usize], what: &str| {
        let e = RankMap::excluding(world, me, exclude).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { op: "shrink", .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains(what), "{exclude:?}: {e}");
    };
    bad(4, 0, &[], "at least one rank");
    bad(4, 0, &[1, 2, 3, 0], "at most 3 of the 4 ranks");
    bad(4, 0, &[1, 2, 3, 3], "at most 3 of the 4 ranks");
    bad(4, 0, &[4], "rank 4");
    bad(4, 0, &[usize::MAX], "ranks < world (4)");
    bad(4, 0, &[2, 2], "rank 2 twice");
    bad(4, 1, &[1], "this rank (1)");
    bad(4, 1, &[3, 1], "this rank (1)");
    bad(1, 0, &[0], "at most 0 of the 1 ranks");
    let e = RankMap::excluding(4, 4, &[1]).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { arg: "rank", .. }),
        "{e:?}"
    );

    // every world up to 7, every set of excluded ranks and every survivor:
    // the map agrees with a direct count
    for world in 2..=7usize {
        for mask in 1u32..(1 << world) - 1 {
            let excluded: Vec<usize> = (0..world).filter(|r| mask & (1 << r) != 0).collect();
            let mut reversed = excluded.clone();
            reversed.reverse(); // order does not matter
            for me in (0..world).filter(|r| mask & (1 << r) == 0) {
                let map = RankMap::excluding(world, me, &reversed).unwrap();
                assert_eq!(map.excluded(), excluded);
                assert_eq!(map.world(), world - excluded.len());
                assert_eq!(map.old_world(), world);
                for old in 0..world {
                    let want = (mask & (1 << old) == 0)
                        .then(|| (0..old).filter(|r| mask & (1 << r) == 0).count());
                    assert_eq!(
                        map.new_rank(old),
                        want,
                        "world {world} mask {mask:b} old {old}"
                    );
                    if let Some(new) = want {
                        assert_eq!(map.old_rank(new), Some(old));
                    }
                }
                assert_eq!(map.old_rank(map.world()), None);
                assert_eq!(map.new_rank(world), None);
                assert!(map.survivors().windows(2).all(|w| w[0] < w[1]));
            }
        }
    }
}

/// A stand-in for the channel the coordinator hands the grow id through.
struct FakeBootstrap {
    rank: usize,
    world: usize,
}

impl nccl::Bootstrap for FakeBootstrap {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn share_ids(&mut self, _: Option<Vec<UniqueId>>) -> nccl::Result<Vec<UniqueId>> {
        Err(Error::Rendezvous {
            peer: "fake".into(),
            reason: "no network in this test".into(),
        })
    }
}

#[test]
fn grow_plans_number_joiners_after_the_existing_ranks() {
    let plan = GrowPlan::new(4, 7).unwrap();
    assert_eq!(
        (plan.old_world(), plan.new_world(), plan.joiners()),
        (4, 7, 3)
    );
    assert_eq!(plan.bootstrap_world(), 4);
    assert_eq!(
        (1..=3)
            .map(|b| plan.joiner_rank(b).unwrap())
            .collect::<Vec<_>>(),
        [4, 5, 6]
    );
    for b in [0, 4, usize::MAX] {
        let e = plan.joiner_rank(b).unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidArgument {
                    op: "join",
                    arg: "bootstrap.rank()",
                    ..
                }
            ),
            "{b}: {e:?}"
        );
    }
    assert_eq!(GrowPlan::from_bootstrap(7, 4).unwrap(), plan);
    for (new, boot) in [(7, 1), (7, 0), (7, 8), (3, 4)] {
        let e = GrowPlan::from_bootstrap(new, boot).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { op: "join", .. }),
            "{e:?}"
        );
    }
    for (old, new) in [
        (4, 4),
        (4, 3),
        (0, 2),
        (1, i32::MAX as usize + 1),
        (usize::MAX, 5),
        (usize::MAX, usize::MAX),
    ] {
        let e = GrowPlan::new(old, new).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { op: "grow", .. }),
            "{old}->{new}: {e:?}"
        );
    }
    assert!(GrowPlan::new(1, i32::MAX as usize).is_ok());

    // who passes the joiners' bootstrap: rank 0 only, as its rank 0, sized
    // for the coordinator and the joiners
    let ok = FakeBootstrap { rank: 0, world: 4 };
    assert!(plan.check_existing(0, Some(&ok)).is_ok());
    for r in 1..4 {
        assert!(plan.check_existing(r, None).is_ok());
        let e = plan.check_existing(r, Some(&ok)).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument { arg: "joiners", .. }),
            "{e:?}"
        );
    }
    let e = plan.check_existing(0, None).unwrap_err();
    assert!(e.to_string().contains("Some(bootstrap) at rank 0"), "{e}");
    let e = plan
        .check_existing(0, Some(&FakeBootstrap { rank: 1, world: 4 }))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidArgument {
                arg: "joiners.rank()",
                ..
            }
        ),
        "{e:?}"
    );
    let e = plan
        .check_existing(0, Some(&FakeBootstrap { rank: 0, world: 3 }))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("4 (the coordinator and 3 joiners), got 3"),
        "{e}"
    );
    let e = plan.check_existing(4, None).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { arg: "rank", .. }),
        "{e:?}"
    );
    // the fake really is unusable: nothing above reached it
    let mut fake = FakeBootstrap { rank: 1, world: 2 };
    assert!(nccl::Bootstrap::share_ids(&mut fake, None).is_err());
}

/// The version gate of each elastic API, against the libnccl this test runs
/// with (2.28.3 in CI: shrink yes; revoke, grow and suspend no).
#[test]
fn elastic_apis_are_gated_by_the_header_and_the_runtime() {
    let have = nccl::version().unwrap().min(nccl::HEADER_VERSION);
    let caps = nccl::capabilities().unwrap();
    let support = nccl::elastic_support();
    assert_eq!(support.len(), ElasticApi::ALL.len());
    let expect = [
        // the first release on PyPI whose nccl.h declares it
        (ElasticApi::Shrink, "ncclCommShrink", Version::new(2, 27, 3)),
        (ElasticApi::Revoke, "ncclCommRevoke", Version::new(2, 28, 7)),
        (ElasticApi::Grow, "ncclCommGrow", Version::new(2, 29, 2)),
        (
            ElasticApi::Suspend,
            "ncclCommSuspend",
            Version::new(2, 29, 7),
        ),
    ];
    for ((api, name, since), (got, ok)) in expect.into_iter().zip(support) {
        assert_eq!(got, api);
        assert_eq!((api.name(), api.since()), (name, since));
        match (have >= since, api.check()) {
            (true, Ok(())) => assert!(ok.is_ok()),
            (
                false,
                Err(Error::Unsupported {
                    api: a,
                    since: s,
                    runtime,
                }),
            ) => {
                assert_eq!((a, s, runtime), (name, since, nccl::version().unwrap()));
                assert!(ok.is_err());
            }
            (avail, r) => panic!("{name}: available {avail} but check gave {r:?} (have {have})"),
        }
        let feature = caps
            .features
            .iter()
            .find(|f| f.api.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from capabilities"));
        assert_eq!((feature.since, feature.available), (since, have >= since));
    }
    // patch level counts: 2.28.3 has no revoke although it is "2.28"
    if have.minor == 28 && have.patch < 7 {
        assert!(matches!(
            ElasticApi::Revoke.check(),
            Err(Error::Unsupported { .. })
        ));
    }
}

/// `NcclBuffer`'s views are buffers to the collectives (read, or read and
/// written), and follow the buffer's thread rules.
#[test]
fn ncclbuffer_views_are_buffers() {
    fn send_sync<T: Send + Sync>() {}
    fn reads<B: nccl::DeviceBuffer<f32>>() {}
    fn writes<B: nccl::DeviceBufferMut<f32>>() {}
    send_sync::<nccl::NcclView<'static, f32>>();
    send_sync::<nccl::NcclViewMut<'static, f32>>();
    reads::<nccl::NcclBuffer<f32>>();
    writes::<nccl::NcclBuffer<f32>>();
    reads::<nccl::NcclView<'static, f32>>();
    reads::<nccl::NcclViewMut<'static, f32>>();
    writes::<nccl::NcclViewMut<'static, f32>>();
    // and cudarc's own, and registrations of either
    use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
    reads::<CudaSlice<f32>>();
    writes::<CudaSlice<f32>>();
    reads::<CudaView<'static, f32>>();
    reads::<CudaViewMut<'static, f32>>();
    writes::<CudaViewMut<'static, f32>>();
    reads::<nccl::Registered<f32, nccl::NcclBuffer<f32>>>();
    writes::<nccl::Registered<f32, CudaSlice<f32>>>();
    // which of them the calls take on a stream of another context object
    // of the same CUDA context: this crate's, which order their own uses
    use nccl::{DeviceBuffer, DeviceBufferMut, NcclBuffer, Registered};
    const { assert!(<NcclBuffer<f32> as DeviceBuffer<f32>>::ORDERS_OWN_USES) };
    const { assert!(<nccl::NcclViewMut<'static, f32> as DeviceBufferMut<f32>>::ORDERS_OWN_USES) };
    const { assert!(<Registered<f32, NcclBuffer<f32>> as DeviceBufferMut<f32>>::ORDERS_OWN_USES) };
    const { assert!(!<CudaSlice<f32> as DeviceBuffer<f32>>::ORDERS_OWN_USES) };
    const { assert!(!<CudaViewMut<'static, f32> as DeviceBufferMut<f32>>::ORDERS_OWN_USES) };
    const { assert!(!<Registered<f32, CudaSlice<f32>> as DeviceBuffer<f32>>::ORDERS_OWN_USES) };
}

/// The symmetric pool: gated like windows (NCCL 2.27.3), its buffers are
/// buffers and one-sided memory, and the refusal inside a capture names the
/// way out. (Making a pool needs a communicator: tests/nccl_gpu.rs.)
#[test]
fn symmetric_pool_is_gated_and_its_buffers_are_buffers() {
    let runtime = nccl::version().unwrap();
    let since = Version::new(2, 27, 3);
    let api = "ncclCommWindowRegister";
    let header_has = nccl::sys::declared(api);
    assert_eq!(header_has, nccl::HEADER_VERSION >= since);
    match nccl::require_api(api) {
        Ok(()) => assert!(header_has && runtime >= since),
        Err(Error::Unsupported {
            api: a,
            since: s,
            runtime: r,
        }) => {
            assert_eq!((a, s, r), (api, since, runtime));
            assert!(!header_has || runtime < since);
        }
        Err(e) => panic!("{e:?}"),
    }
    #[cfg(nccl_fn = "ncclCommWindowRegister")]
    {
        fn reads<B: nccl::DeviceBuffer<f32>>() {}
        fn writes<B: nccl::DeviceBufferMut<f32>>() {}
        reads::<nccl::SymmetricBuffer<'static, f32>>();
        writes::<nccl::SymmetricBuffer<'static, f32>>();
        let s = nccl::PoolStats::default();
        assert_eq!((s.registrations, s.reuses, s.bytes_held), (0, 0, 0));
    }
    #[cfg(nccl_fn = "ncclPutSignal")]
    {
        fn one_sided<B: nccl::WindowMemory<f32>>() {}
        one_sided::<nccl::SymmetricBuffer<'static, f32>>();
        one_sided::<nccl::Window<f32, nccl::NcclBuffer<f32>>>();
    }
    let e = Error::Capturing {
        op: "SymmetricPool::alloc",
        bytes: 8192,
    };
    let text = e.to_string();
    assert!(
        text.contains("8192 bytes") && text.contains("SymmetricPool::reserve"),
        "{text}"
    );
}

// ---- NCCL's parameters (2.30.4+) ----

/// Whether this build and the libnccl in use have NCCL's parameter registry
/// (NCCL 2.30.4+); when not, says so on stderr: the parameter tests then
/// check only the `Unsupported` answer.
fn param_api_or_say(test: &str) -> bool {
    let v = nccl::version().unwrap();
    let since = Version::new(2, 30, 4);
    let have = v >= since && nccl::sys::declared("ncclParamBind");
    if !have {
        nccl_rs_tests::say(&format!(
            "{test}: libnccl {v} with header {} has no parameter registry (NCCL {since}+): \
             only the Unsupported answers are checked",
            nccl::HEADER_VERSION
        ));
    }
    have
}

/// Every parameter NCCL publishes comes with its type and value; the typed
/// getter, the listing and the one-key read agree; a wrong type and an
/// unknown key are typed errors; before 2.30.4 everything is `Unsupported`.
#[test]
fn params_have_types_and_values() {
    let runtime = nccl::version().unwrap();
    let caps = nccl::capabilities().unwrap();
    if param_api_or_say("params_have_types_and_values") {
        #[cfg(nccl_fn = "ncclParamBind")]
        registry_has_types_and_values(&caps, runtime);
    } else {
        params_are_unsupported(&caps, runtime);
    }
}

/// Before NCCL 2.30.4 (header or runtime): `Unsupported`, in the report too.
fn params_are_unsupported(caps: &nccl::Capabilities, runtime: Version) {
    match &caps.params {
        Err(Error::Unsupported {
            api: "ncclParamBind",
            since,
            runtime: r,
        }) => assert_eq!((*since, *r), (Version::new(2, 30, 4), runtime)),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(caps.tuning.iter().all(|t| t.nccl.is_none()));
    let text = caps.to_string();
    assert!(
        text.contains("parameters: ncclParamBind needs NCCL 2.30.4 or newer"),
        "{text}"
    );
    #[cfg(nccl_fn = "ncclParamBind")]
    {
        for r in [
            nccl::params().map(drop),
            nccl::param::<u32>("NCCL_DEBUG_TIMESTAMP_LEVELS").map(drop),
            nccl::Param::read("NCCL_DEBUG").map(drop),
        ] {
            assert!(
                matches!(
                    r,
                    Err(Error::Unsupported {
                        api: "ncclParamBind",
                        ..
                    })
                ),
                "{r:?}"
            );
        }
    }
}

#[cfg(nccl_fn = "ncclParamBind")]
fn registry_has_types_and_values(caps: &nccl::Capabilities, runtime: Version) {
    use nccl::{Param, ParamType, ParamValue};
    let all = nccl::params().unwrap();
    assert_eq!(caps.params.as_ref().unwrap(), &all);
    // published by every release with the registry, with the types
    // NCCL's source declares them with (src/debug.cc)
    for (key, ty) in [
        ("NCCL_DEBUG_SUBSYS", ParamType::U64),
        ("NCCL_DEBUG_TIMESTAMP_LEVELS", ParamType::U32),
        ("NCCL_DEBUG_FILE", ParamType::Str),
        ("NCCL_DEBUG_TIMESTAMP_FORMAT", ParamType::Str),
        // a bool and an enum: no typed getter in NCCL's C API
        ("NCCL_SET_THREAD_NAME", ParamType::Untyped),
        ("NCCL_DEBUG", ParamType::Untyped),
    ] {
        let p = all
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from {all}"));
        assert_eq!(p.value.param_type(), ty, "{p}");
        assert_eq!(&Param::read(key).unwrap(), p);
    }
    assert!(!all.is_empty() && all.len() == all.iter().count(), "{all}");
    let keys: Vec<&str> = all.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "sorted: {keys:?}");
    // a bool is one byte and reads TRUE or FALSE
    let name = all.get("NCCL_SET_THREAD_NAME").unwrap();
    assert!(matches!(&name.value, ParamValue::Untyped(b) if b.len() == 1));
    assert!(["TRUE", "FALSE"].contains(&name.text.as_str()), "{name}");
    // the typed getters give what the listing has
    let levels: u32 = nccl::param("NCCL_DEBUG_TIMESTAMP_LEVELS").unwrap();
    assert_eq!(
        all.get("NCCL_DEBUG_TIMESTAMP_LEVELS").unwrap().value,
        ParamValue::U32(levels)
    );
    let subsys: u64 = nccl::param("NCCL_DEBUG_SUBSYS").unwrap();
    assert_eq!(
        all.get("NCCL_DEBUG_SUBSYS").unwrap().value.as_int(),
        Some(subsys.into())
    );
    let format: String = nccl::param("NCCL_DEBUG_TIMESTAMP_FORMAT").unwrap();
    assert_eq!(all.get("NCCL_DEBUG_TIMESTAMP_FORMAT").unwrap().text, format);
    if std::env::var_os("NCCL_DEBUG_TIMESTAMP_FORMAT").is_none() {
        assert_eq!(format, "[%F %T] ", "NCCL's default");
    }
    // the wrong type is named, with the right one
    match nccl::param::<i64>("NCCL_DEBUG_TIMESTAMP_LEVELS") {
        Err(Error::InvalidArgument {
            op: "param",
            arg: "T",
            expected,
            actual,
        }) => {
            assert!(
                expected.starts_with("u32, the type NCCL declares"),
                "{expected}"
            );
            assert_eq!(actual, "i64");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        nccl::param::<String>("NCCL_DEBUG"),
        Err(Error::InvalidArgument { arg: "T", .. })
    ));
    // keys NCCL does not register (the tuning ones among them, so far)
    for key in ["NCCL_NO_SUCH_PARAMETER", "NCCL_DEBUG\0X", ""] {
        match Param::read(key) {
            Err(Error::InvalidArgument {
                op: "param",
                arg: "key",
                ..
            }) => {}
            other => panic!("{key:?}: {other:?}"),
        }
        assert!(matches!(
            nccl::param::<i32>(key),
            Err(Error::InvalidArgument { arg: "key", .. })
        ));
    }
    // the report shows the registry, the tuning keys first
    let text = caps.to_string();
    assert!(
        text.contains(&format!(
            "parameters (NCCL's registry, {} listed",
            all.len()
        )),
        "{text}"
    );
    assert!(text.contains("NCCL_DEBUG_TIMESTAMP_LEVELS"), "{text}");
    assert!(
        text.find("NCCL_ALGO").unwrap() < text.find("NCCL_DEBUG_SUBSYS").unwrap(),
        "{text}"
    );
    assert_eq!(caps.tuning.len(), nccl::TUNING_PARAMS.len());
    for t in &caps.tuning {
        match Param::read(t.key) {
            Ok(p) => assert_eq!(t.nccl.as_ref(), Some(&p)),
            Err(_) => assert!(t.nccl.is_none(), "{t:?}"),
        }
    }
    nccl_rs_tests::say(&format!(
        "libnccl {runtime}: {} published parameters; tuning keys in the registry: {:?}",
        all.len(),
        caps.tuning
            .iter()
            .filter(|t| t.nccl.is_some())
            .map(|t| t.key)
            .collect::<Vec<_>>()
    ));
}

/// What the registry reads is what NCCL resolves from the environment, and
/// `NCCL_PARAM_DUMP_ALL` lists the unpublished parameters too. In a child
/// process (the variables are read once per process).
#[test]
fn params_follow_the_environment() {
    if std::env::var_os("NCCL_RS_TEST_CHILD").is_some() {
        #[cfg(nccl_fn = "ncclParamBind")]
        if param_api_or_say("params_follow_the_environment (child)") {
            let all = nccl::params().unwrap();
            for key in [
                "NCCL_DEBUG_TIMESTAMP_FORMAT",
                "NCCL_DEBUG_SUBSYS",
                "NCCL_PARAM_DUMP_ALL",
                "NCCL_NO_CACHE",
            ] {
                match all.get(key) {
                    Some(p) => println!("child: {key}={}", p.text),
                    None => println!("child: {key} missing"),
                }
            }
        }
        let caps = nccl::capabilities().unwrap();
        println!("child report:\n{caps}");
        return;
    }
    let stdout = child_stdout(
        "params_follow_the_environment",
        &[
            ("NCCL_DEBUG_TIMESTAMP_FORMAT", "<rs> ".into()),
            ("NCCL_DEBUG_SUBSYS", "COLL".into()),
            ("NCCL_PARAM_DUMP_ALL", "1".into()),
            ("NCCL_PROTO", "Simple\x1b[31m".into()),
        ],
    );
    // the environment shows in the report, escaped
    assert!(
        stdout.contains("environment NCCL_PROTO=Simple\\u{1b}[31m"),
        "{stdout}"
    );
    if !param_api_or_say("params_follow_the_environment") {
        assert!(
            stdout.contains("parameters: ncclParamBind needs NCCL 2.30.4"),
            "{stdout}"
        );
        return;
    }
    for line in [
        "child: NCCL_DEBUG_TIMESTAMP_FORMAT=<rs> ",
        "child: NCCL_DEBUG_SUBSYS=COLL\n",
        "child: NCCL_NO_CACHE=",
        "child: NCCL_PARAM_DUMP_ALL=",
    ] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
}

// ---- per-call configuration (2.31.2+) ----

/// The `nccl*Config` collectives are available exactly when the header
/// declares them and the runtime is 2.31.2 or newer; otherwise
/// `Unsupported` names 2.31.2.
#[test]
fn configured_collectives_are_gated_by_header_and_runtime() {
    let runtime = nccl::version().unwrap();
    let since = Version::new(2, 31, 2);
    for api in [
        "ncclAllReduceConfig",
        "ncclBroadcastConfig",
        "ncclReduceConfig",
        "ncclAllGatherConfig",
        "ncclReduceScatterConfig",
        "ncclAlltoAllConfig",
        "ncclGatherConfig",
        "ncclScatterConfig",
    ] {
        let header_has = nccl::sys::declared(api);
        assert_eq!(header_has, nccl::HEADER_VERSION >= since, "{api}");
        match nccl::require_api(api) {
            Ok(()) => assert!(header_has && runtime >= since, "{api}"),
            Err(Error::Unsupported {
                api: a,
                since: s,
                runtime: r,
            }) => {
                assert_eq!((a, s, r), (api, since, runtime));
                assert!(!header_has || runtime < since, "{api}");
            }
            Err(e) => panic!("{api}: {e:?}"),
        }
    }
    if nccl::require_api("ncclAllReduceConfig").is_err() {
        nccl_rs_tests::say(&format!(
            "configured collectives: libnccl {runtime} with header {}: Unsupported (NCCL {since}+)",
            nccl::HEADER_VERSION
        ));
    }
}

/// `CollConfig` makes the struct of each release: its size and version, the
/// defaults of its `NCCL_COLLCONFIG_INITIALIZER`, the fields set; bad values
/// are refused before NCCL; and the libnccl in use (2.31.2+) accepts the
/// struct made for it: it parses the config before it looks at the
/// communicator, so with a null communicator its complaint says whether the
/// config passed.
#[cfg(nccl_fn = "ncclAllReduceConfig")]
#[test]
fn coll_config_is_the_struct_each_release_expects() {
    use nccl::CollConfig;
    use nccl::sys;
    let header = nccl::HEADER_VERSION;
    let undef = sys::NCCL_CONFIG_UNDEF_INT;
    let full = std::mem::size_of::<sys::ncclCollConfig_t>();
    let cfg = CollConfig::new()
        .min_ctas(2)
        .max_ctas(8)
        .alg_selection("ring")
        .force_alg_selection(false)
        .cta_policy(1)
        .user_profiler_tag(42);
    // 2.31.2's struct: 64 bytes, up to userProfilerTag
    let r = cfg.raw_for(Version::new(2, 31, 2)).unwrap();
    assert_eq!((r.size, r.magic, r.version), (64, 0xcafe_beef, 23102));
    assert_eq!((r.minCTAs, r.maxCTAs), (2, 8));
    assert_eq!((r.nvlsCTAs, r.cgaClusterSize), (undef, undef));
    assert_eq!((r.forceAlgSelection, r.CTAPolicy), (0, 1));
    assert_eq!(r.userProfilerTag, 42);
    assert!(r.ext.is_null());
    // SAFETY: algSelection points to cfg's NUL-terminated string.
    let alg = unsafe { std::ffi::CStr::from_ptr(r.algSelection) };
    assert_eq!(alg.to_str().unwrap(), "ring");
    // 2.32's adds launchCompletionEvent: 72 bytes
    if header >= Version::new(2, 32, 0) {
        let r = cfg.raw_for(Version::new(2, 32, 6)).unwrap();
        let v = Version::new(2, 32, 6).min(header);
        assert_eq!((r.size, r.version as i32), (72, v.code().unwrap()));
        assert_eq!(full, 72);
    } else {
        assert_eq!(full, 64);
    }
    // a runtime newer than the header gets the header's struct
    let r = cfg.raw_for(Version::new(2, 99, 0)).unwrap();
    assert_eq!((r.size, r.version), (full, sys::NCCL_VERSION_CODE as _));
    // nothing set: NCCL_COLLCONFIG_INITIALIZER
    let d = CollConfig::new().raw_for(header).unwrap();
    assert_eq!(
        (
            d.minCTAs,
            d.maxCTAs,
            d.nvlsCTAs,
            d.cgaClusterSize,
            d.CTAPolicy
        ),
        (undef, undef, undef, undef, undef)
    );
    assert_eq!((d.forceAlgSelection, d.userProfilerTag), (1, 0));
    assert!(d.algSelection.is_null());
    // before 2.31.2 there is no such struct
    match cfg.raw_for(Version::new(2, 30, 7)) {
        Err(Error::Unsupported {
            api: "ncclCollConfig_t",
            since,
            ..
        }) => assert_eq!(since, Version::new(2, 31, 2)),
        other => panic!("{other:?}"),
    }
    // bad values, before NCCL
    for (bad, arg) in [
        (CollConfig::new().min_ctas(0), "min_ctas"),
        (CollConfig::new().max_ctas(-3), "max_ctas"),
        (CollConfig::new().nvls_ctas(0), "nvls_ctas"),
        (CollConfig::new().min_ctas(9).max_ctas(8), "min_ctas"),
        (CollConfig::new().cga_cluster_size(9), "cga_cluster_size"),
        (CollConfig::new().cta_policy(4), "cta_policy"),
        (
            CollConfig::new().user_profiler_tag(1 << 63),
            "user_profiler_tag",
        ),
        (CollConfig::new().alg_selection("ri\0ng"), "alg_selection"),
    ] {
        match bad.raw_for(header) {
            Err(Error::InvalidArgument {
                op: "CollConfig",
                arg: a,
                ..
            }) => assert_eq!(a, arg),
            other => panic!("{arg}: {other:?}"),
        }
    }
    assert!(
        CollConfig::new()
            .cga_cluster_size(0)
            .raw_for(header)
            .is_ok()
    );
    assert!(
        CollConfig::new()
            .alg_selection("ri\0ng")
            .alg_selection("ring")
            .raw_for(header)
            .is_ok()
    );

    // the libnccl in use accepts the struct made for it
    let runtime = nccl::version().unwrap();
    if nccl::require_api("ncclAllReduceConfig").is_err() {
        nccl_rs_tests::say(&format!(
            "coll_config: libnccl {runtime} has no nccl*Config: NCCL's own check not run"
        ));
        return;
    }
    let nccl_says = |c: &sys::ncclCollConfig_t| -> String {
        // SAFETY: null buffers of 0 elements and a null communicator and
        // stream: NCCL parses the config (a valid struct, borrowed for the
        // call) and then refuses the null communicator before touching
        // anything else (2.31.2, 2.32.6).
        let r = unsafe {
            sys::ncclAllReduceConfig(
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
                sys::ncclDataType_t::ncclFloat32,
                sys::ncclRedOp_t::ncclSum,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                c,
            )
        };
        assert_ne!(r, sys::ncclResult_t::ncclSuccess);
        // SAFETY: a static or thread-local string of NCCL's (or null).
        let p = unsafe { sys::ncclGetLastError(std::ptr::null_mut()) };
        assert!(!p.is_null());
        // SAFETY: non-null, NUL-terminated.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    };
    let ours = cfg.raw_for(runtime).unwrap();
    let said = nccl_says(&ours);
    assert!(said.contains("comm argument is NULL"), "{said}");
    // the check can fail: NCCL names a broken struct
    let mut broken = ours;
    broken.forceAlgSelection = 5;
    let said = nccl_says(&broken);
    assert!(said.contains("forceAlgSelection=5"), "{said}");
    let mut broken = ours;
    broken.magic = 0xdead;
    let said = nccl_says(&broken);
    assert!(said.contains("magic mismatch"), "{said}");
}

// ---- one-sided communication (2.29.2+) ----

/// The one-sided calls exist when the header declares them (2.29.2+) and
/// work when the runtime has them; otherwise `Unsupported` names 2.29.2.
/// (Their argument checks need a communicator: tests/nccl_gpu.rs.)
#[test]
fn one_sided_apis_are_gated_by_header_and_runtime() {
    let runtime = nccl::version().unwrap();
    let since = Version::new(2, 29, 2);
    for api in ["ncclPutSignal", "ncclSignal", "ncclWaitSignal"] {
        let header_has = nccl::sys::declared(api);
        assert_eq!(header_has, nccl::HEADER_VERSION >= since, "{api}");
        match nccl::require_api(api) {
            Ok(()) => assert!(header_has && runtime >= since, "{api}"),
            Err(Error::Unsupported {
                api: a,
                since: s,
                runtime: r,
            }) => {
                assert_eq!((a, s, r), (api, since, runtime));
                assert!(!header_has || runtime < since, "{api}");
            }
            Err(e) => panic!("{api}: {e:?}"),
        }
    }
    #[cfg(nccl_fn = "ncclPutSignal")]
    {
        let s = nccl::Signal::default();
        assert_eq!((s.index, s.ctx), (0, 0));
        let w = nccl::SignalWait {
            peer: 1,
            count: 2,
            signal: s,
        };
        assert_ne!(w, nccl::SignalWait { count: 1, ..w });
    }
}

/// The device API's host functions follow the libnccl in use (2.28.3+, the
/// queries 2.29.2+), and a release's layout is known or refused.
#[test]
fn device_api_follows_the_library() {
    use nccl::sys::device;
    let runtime = nccl::version().unwrap();
    let code = runtime.code().unwrap() as u32;
    let has_dev = runtime >= Version::new(2, 28, 3);
    let has_queries = runtime >= Version::new(2, 29, 2);
    for name in [
        "ncclDevCommCreate",
        "ncclDevCommDestroy",
        "ncclTeamWorld",
        "ncclTeamLsa",
        "ncclTeamRail",
        "ncclTeamRankToWorld",
        "ncclTeamRankToLsa",
        "ncclLsaBarrierCreateRequirement",
    ] {
        assert_eq!(nccl::sys::available(name), has_dev, "{name} on {runtime}");
        assert_eq!(device::since(name), Some((2, 28, 3)));
    }
    for name in [
        "ncclCommQueryProperties",
        "ncclGetLsaDevicePointer",
        "ncclGetPeerDevicePointer",
        "ncclGetLsaMultimemDevicePointer",
        "ncclGetMultimemDevicePointer",
    ] {
        assert_eq!(
            nccl::sys::available(name),
            has_queries,
            "{name} on {runtime}"
        );
    }
    // the wheels this is tested with are releases whose headers were read
    if has_dev {
        let l = device::layout_of(code).expect("a layout for the libnccl under test");
        assert_eq!(l.version_code, code);
    }
    assert!(device::layout_of(22804).is_none());
}

/// Requirements a release cannot take are refused before NCCL; the rest
/// pass the check.
#[test]
fn dev_comm_requirements_are_checked_against_the_library() {
    use nccl::DevCommRequirements;
    let runtime = nccl::version().unwrap();
    let base = DevCommRequirements::new()
        .lsa_barrier_count(4)
        .lsa_multimem(false);
    match base.check() {
        Ok(()) => assert!(runtime >= Version::new(2, 28, 3)),
        Err(Error::Unsupported { since, .. }) => {
            assert!(runtime < Version::new(2, 28, 3));
            assert_eq!(since, Version::new(2, 28, 3));
        }
        Err(e) => panic!("{e}"),
    }
    // world and GIN barrier counts: from 2.29.4 (2.29.7 the first release
    // read) NCCL refuses them without a GIN connection, which the
    // requirements never ask for, so they are refused before NCCL
    let gin_refused = runtime >= Version::new(2, 29, 4);
    let barriers = base.clone().barrier_count(2).check();
    if gin_refused {
        assert!(
            matches!(
                barriers,
                Err(Error::InvalidArgument {
                    arg: "barrier_count",
                    ..
                })
            ),
            "{barriers:?}"
        );
    } else if runtime >= Version::new(2, 28, 7) {
        barriers.unwrap();
    } else {
        assert!(
            matches!(barriers, Err(Error::Unsupported { .. })),
            "{barriers:?}"
        );
    }
    let world_gin = base.clone().world_gin_barrier_count(1).check();
    match world_gin {
        Err(Error::InvalidArgument {
            arg: "world_gin_barrier_count",
            ..
        }) => assert!(runtime >= Version::new(2, 30, 3)),
        Err(Error::Unsupported { .. }) => assert!(runtime < Version::new(2, 30, 3)),
        other => panic!("{other:?}"),
    }
    if runtime >= Version::new(2, 28, 3) {
        let too_many = base.lsa_barrier_count(u32::MAX).check();
        assert!(
            matches!(
                too_many,
                Err(Error::InvalidArgument {
                    arg: "lsa_barrier_count",
                    ..
                })
            ),
            "{too_many:?}"
        );
    }
    let e = Error::UnknownLayout {
        api: "ncclDevCommCreate",
        runtime: Version::new(2, 28, 4),
        known: "2.28.3".into(),
    };
    assert!(e.to_string().contains("2.28.4") && e.to_string().contains("known: 2.28.3"));
}

#[test]
fn device_types_are_send_and_sync() {
    fn both<T: Send + Sync>() {}
    both::<nccl::DevCommRequirements>();
    both::<nccl::Team>();
    both::<nccl::CommProperties>();
    both::<nccl::DevCommBytes>();
}

/// The device-API layout table against the header this build used: a C++
/// probe, compiled with the system's C++ compiler (`CXX`, else `c++`) on
/// that header (CUDA's runtime headers replaced by nccl-sys's stand-ins),
/// prints `sizeof` and `offsetof`, which must be the table's.
#[test]
fn device_layout_matches_the_build_header() {
    use std::path::{Path, PathBuf};
    let inc = Path::new(nccl::sys::BUILD_INCLUDE_DIR);
    if !inc.join("nccl_device.h").is_file() {
        nccl_rs_tests::say(&format!(
            "device layout vs header NOT RUN: no nccl_device.h in {inc:?} (NCCL older than 2.28, or no header)"
        ));
        return;
    }
    let shim = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nccl-sys/shim");
    // 2.28.7+ include cuda.h (GIN): CUDA's, or the runtime wheel's beside NCCL's
    let cuda: Vec<PathBuf> = [
        std::env::var_os("CUDA_HOME").map(|h| PathBuf::from(h).join("include")),
        Some(PathBuf::from("/usr/local/cuda/include")),
        inc.parent()
            .and_then(Path::parent)
            .map(|nvidia| nvidia.join("cu13/include")),
        inc.parent()
            .and_then(Path::parent)
            .map(|nvidia| nvidia.join("cuda_runtime/include")),
    ]
    .into_iter()
    .flatten()
    .filter(|d| d.join("cuda.h").is_file())
    .collect();
    let dir = std::env::temp_dir().join(format!("nccl-rs-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // only cuda.h from CUDA's folder: its cuda_runtime.h would need the rest
    if let Some(c) = cuda.first() {
        std::fs::copy(c.join("cuda.h"), dir.join("cuda.h")).unwrap();
    }
    let probe = r#"
#include <cstdio>
#include <cstddef>
#include <nccl.h>
struct half { unsigned short x; };
struct __nv_bfloat16 { unsigned short x; };
#if NCCL_VERSION_CODE >= 23200
struct int4 { int x, y, z, w; };
#endif
#include <nccl_device.h>
int main() {
  std::printf("version %d\n", NCCL_VERSION_CODE);
  std::printf("devcomm %zu\n", sizeof(ncclDevComm));
  std::printf("reqs %zu\n", sizeof(ncclDevCommRequirements));
  std::printf("ranks %zu %zu %zu %zu\n", offsetof(ncclDevComm, rank), offsetof(ncclDevComm, nRanks),
              offsetof(ncclDevComm, lsaRank), offsetof(ncclDevComm, lsaSize));
#if NCCL_VERSION_CODE >= 22902
  std::printf("props %zu\n", sizeof(ncclCommProperties));
#else
  std::printf("props 0\n");
#endif
  return 0;
}
"#;
    std::fs::write(dir.join("probe.cc"), probe).unwrap();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = std::process::Command::new(&cxx)
        .args([
            "-std=c++17",
            "-D__host__=",
            "-D__device__=",
            "-D__forceinline__=inline",
        ])
        .arg(format!("-I{}", shim.display()))
        .arg(format!("-I{}", dir.display()))
        .arg(format!("-I{}", inc.display()))
        .arg(dir.join("probe.cc"))
        .arg("-o")
        .arg(dir.join("probe"))
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            nccl_rs_tests::say(&format!(
                "device layout vs header NOT RUN: no C++ compiler ({cxx}: {e})"
            ));
            return;
        }
    };
    if !out.status.success() && cuda.is_empty() && inc.join("nccl_device/gin").is_dir() {
        nccl_rs_tests::say(
            "device layout vs header NOT RUN: the header needs cuda.h, and no CUDA headers were found (CUDA_HOME)",
        );
        return;
    }
    assert!(
        out.status.success(),
        "the probe did not compile: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = std::process::Command::new(dir.join("probe"))
        .output()
        .unwrap();
    let text = String::from_utf8(run.stdout).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let nums = |key: &str| -> Vec<usize> {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key} in {text}"));
        line[key.len()..]
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    // the header's own version (with runtime-load, the bindings' version
    // may be another release's)
    let code = nums("version")[0] as u32;
    let layout = nccl::sys::device::layout_of(code)
        .unwrap_or_else(|| panic!("the build's nccl_device.h ({code}) has no layout in the table"));
    assert_eq!(nums("devcomm"), [layout.dev_comm_size], "{code}");
    assert_eq!(nums("reqs"), [layout.requirements_size], "{code}");
    assert_eq!(nums("ranks"), layout.dev_comm_ranks, "{code}");
    assert_eq!(nums("props"), [layout.properties_size], "{code}");
}

/// `ParamType::name` is the short name `Display` shows (padded as asked);
/// an empty `Params` says so.
#[test]
fn param_types_have_short_names_and_no_params_is_empty() {
    use nccl::ParamType as T;
    let names = [
        (T::I8, "i8"),
        (T::I16, "i16"),
        (T::I32, "i32"),
        (T::I64, "i64"),
        (T::U8, "u8"),
        (T::U16, "u16"),
        (T::U32, "u32"),
        (T::U64, "u64"),
        (T::Str, "string"),
        (T::Untyped, "untyped"),
    ];
    for (t, name) in names {
        assert_eq!(t.name(), name, "{t:?}");
        assert_eq!(t.to_string(), name);
    }
    assert_eq!(format!("[{:>4}]", T::U8), "[  u8]");
    let distinct: std::collections::HashSet<_> = names.iter().map(|(t, _)| t.name()).collect();
    assert_eq!(distinct.len(), names.len());
    let none = nccl::Params::default();
    assert!(none.is_empty());
    assert_eq!((none.len(), none.iter().count()), (0, 0));
    assert!(none.get("NCCL_DEBUG").is_none());
}

/// The 2.28.7 fields of the device communicator's requirements
/// (`railGinBarrierCount`, the LSA LL all-to-all): each setter changes its
/// own field only; the library in use takes them from 2.28.7 on (rail GIN
/// barriers only until 2.29.3: later releases need a GIN connection for
/// them, so they are `InvalidArgument`), before that they are
/// `Unsupported` naming the setter; counts above `i32::MAX` are refused
/// where the field exists.
#[test]
fn rail_gin_barriers_and_ll_a2a_need_2_28_7() {
    use nccl::DevCommRequirements;
    let runtime = nccl::version().unwrap();
    let since = Version::new(2, 28, 7);
    assert_eq!(DevCommRequirements::new().lsa_barriers(), 0);
    let base = DevCommRequirements::new().lsa_barrier_count(6);
    assert_eq!(base.lsa_barriers(), 6);
    let rail = base.clone().rail_gin_barrier_count(3);
    let a2a = base.clone().lsa_ll_a2a(2, 16);
    assert_eq!((rail.lsa_barriers(), a2a.lsa_barriers()), (6, 6));
    assert!(rail != base && a2a != base && rail != a2a);
    // zero is NCCL's initializer: the same requirements as not setting it
    assert_eq!(base.clone().rail_gin_barrier_count(0), base);
    assert_eq!(base.clone().lsa_ll_a2a(0, 0), base);
    assert_ne!(base.clone().lsa_ll_a2a(0, 1), base);
    if runtime < Version::new(2, 28, 3) {
        for r in [&rail, &a2a] {
            assert!(matches!(
                r.check(),
                Err(Error::Unsupported {
                    api: "ncclDevCommCreate",
                    ..
                })
            ));
        }
        return;
    }
    base.check().unwrap();
    // rail GIN barriers: refused from 2.29.4 on (NCCL needs a GIN
    // connection for them, which the requirements never ask for)
    let gin_refused = runtime >= Version::new(2, 29, 4);
    for (r, api) in [
        (&rail, "DevCommRequirements::rail_gin_barrier_count"),
        (&a2a, "DevCommRequirements::lsa_ll_a2a"),
    ] {
        let is_rail = std::ptr::eq(r, &rail);
        match r.check() {
            Ok(()) => assert!(
                runtime >= since && !(gin_refused && is_rail),
                "{api} on {runtime}"
            ),
            Err(Error::InvalidArgument {
                arg: "rail_gin_barrier_count",
                ..
            }) if gin_refused && is_rail => {}
            Err(Error::Unsupported {
                api: a,
                since: s,
                runtime: rt,
            }) => {
                assert!(runtime < since, "{api} on {runtime}");
                assert_eq!((a, s, rt), (api, since, runtime));
            }
            Err(e) => panic!("{api}: {e:?}"),
        }
    }
    for (r, arg) in [
        (
            base.clone().rail_gin_barrier_count(u32::MAX),
            "rail_gin_barrier_count",
        ),
        (base.clone().lsa_ll_a2a(u32::MAX, 1), "lsa_ll_a2a blocks"),
        (base.clone().lsa_ll_a2a(1, 1 << 31), "lsa_ll_a2a slots"),
    ] {
        match r.check() {
            Err(Error::InvalidArgument {
                op: "DevCommRequirements",
                arg: a,
                ..
            }) => {
                assert!(runtime >= since, "{arg} on {runtime}");
                assert_eq!(a, arg);
            }
            Err(Error::Unsupported { .. }) => assert!(runtime < since, "{arg} on {runtime}"),
            other => panic!("{arg}: {other:?}"),
        }
    }
    // the largest count that fits NCCL's int passes where the field exists
    // (and NCCL takes it without GIN)
    let most = base.rail_gin_barrier_count(i32::MAX as u32).check();
    assert_eq!(most.is_ok(), runtime >= since && !gin_refused, "{most:?}");
}

/// `library::load` of the libnccl in use gives what `current` gives; of
/// another path, a typed error naming both (one libnccl per process); a
/// static build has no file to load.
#[test]
fn library_load_takes_the_library_in_use_and_refuses_another() {
    use nccl::library::LoadError;
    let bogus = std::path::Path::new("/nonexistent/nccl-rs/libnccl.so.2");
    let info = match nccl::library::current() {
        Err(Error::Library(LoadError::Static)) => {
            assert!(matches!(
                nccl::library::load(bogus),
                Err(Error::Library(LoadError::Static))
            ));
            return;
        }
        other => other.unwrap(),
    };
    let again = nccl::library::load(&info.path).unwrap();
    assert_eq!(again, info);
    assert_eq!(again.version, nccl::version().unwrap());
    match nccl::library::load(bogus) {
        Err(Error::Library(LoadError::OtherLoaded { loaded, requested })) => {
            assert_eq!(loaded, info.path);
            assert_eq!(requested, bogus);
        }
        other => panic!("{other:?}"),
    }
    // the library in use is unchanged
    assert_eq!(nccl::library::current().unwrap(), info);
}
