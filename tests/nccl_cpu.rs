//! The safe layer without a GPU: versions, errors, unique ids, thread
//! safety, argument contracts, capabilities — against the real libnccl.

use nccl::{Error, NcclCode, UniqueId, Version, contract};

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
        assert_eq!(v.code(), code, "round trip of {code}");
    }
    for bad in [-1, 0, 999, 2900, 9999, i32::MIN] {
        assert!(
            matches!(Version::from_code(bad), Err(Error::InvalidVersionCode { code }) if code == bad),
            "{bad}"
        );
    }
    for bad in ["", "2", "2.28", "2.28.x", "2.28.3.1", "a.b.c"] {
        assert!(
            matches!(
                bad.parse::<Version>(),
                Err(Error::InvalidVersionString { .. })
            ),
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
        nccl::sys::NCCL_VERSION_CODE as i32
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
    let e = contract::all_gather(10, 30, 4).unwrap_err();
    assert_eq!(
        e.to_string(),
        "all_gather: invalid recv.len(): expected send.len() × world = 10 × 4, got 30"
    );
    assert!(format!("{e:?}").contains("InvalidArgument"));
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
    // !Sync is a compile_fail doc test on `Comm` (a negative bound cannot be
    // written here); this checks the positive half.
}

#[test]
fn length_contracts() {
    assert!(contract::same_len("all_reduce", 5, 5).is_ok());
    assert!(contract::same_len("all_reduce", 5, 4).is_err());
    assert!(contract::all_gather(3, 12, 4).is_ok());
    assert!(contract::all_gather(3, 11, 4).is_err());
    assert!(
        contract::all_gather(usize::MAX, 0, 2).is_err(),
        "overflow is an error, not a wrap"
    );
    assert!(contract::reduce_scatter(12, 3, 4).is_ok());
    assert!(contract::reduce_scatter(12, 4, 4).is_err());
    assert_eq!(contract::all_to_all(12, 12, 4).unwrap(), 3);
    assert!(contract::all_to_all(12, 8, 4).is_err());
    assert!(contract::all_to_all(10, 10, 4).is_err());
    assert_eq!(contract::chunked("all_gather_in_place", 8, 4).unwrap(), 2);
    assert!(contract::chunked("all_gather_in_place", 9, 4).is_err());
    assert!(contract::rank_arg("broadcast", "root", 3, 4).is_ok());
    let e = contract::rank_arg("broadcast", "root", 4, 4).unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidArgument {
            op: "broadcast",
            arg: "root",
            ..
        }
    ));
    assert!(contract::rooted("gather", 3, Some(12), true, 4).is_ok());
    assert!(contract::rooted("gather", 3, Some(11), true, 4).is_err());
    assert!(contract::rooted("gather", 3, None, true, 4).is_err());
    assert!(contract::rooted("gather", 3, None, false, 4).is_ok());
    assert_eq!(
        contract::v_counts("all_gather_v", "counts", &[1, 2, 3], 3, 6).unwrap(),
        vec![0, 1, 3]
    );
    assert!(contract::v_counts("all_gather_v", "counts", &[1, 2], 3, 3).is_err());
    assert!(contract::v_counts("all_gather_v", "counts", &[1, 2, 3], 3, 7).is_err());
    assert!(contract::v_counts("all_gather_v", "counts", &[usize::MAX, 1, 0], 3, 0).is_err());
    assert!(contract::disjoint("all_reduce", (0x1000, 0x100), (0x1100, 0x100)).is_ok());
    assert!(contract::disjoint("all_reduce", (0x1000, 0x101), (0x1100, 0x100)).is_err());
    assert!(contract::disjoint("all_reduce", (0x1000, 0x100), (0x1000, 0x100)).is_err());
}
