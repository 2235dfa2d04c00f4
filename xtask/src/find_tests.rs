//! Discovery unit tests on fake prefix trees in temporary folders. They run
//! the same `find.rs` the build script compiles, through a hermetic host (no
//! real environment, pkg-config or python).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::find::{self, Host, LinkMode, Source};

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// A temporary folder, removed on drop.
struct Tree(PathBuf);

impl Tree {
    fn new(tag: &str) -> Tree {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "nccl-rs-find-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tree(p)
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
    /// Creates a file (and its folders).
    fn file(&self, rel: &str, contents: &str) -> PathBuf {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }
    /// A full NCCL installation under `prefix` with its library in `libdir`.
    fn nccl(&self, prefix: &str, libdir: &str, with_static: bool) -> PathBuf {
        self.file(
            &format!("{prefix}/include/nccl.h"),
            "#define NCCL_VERSION_CODE 22803\n",
        );
        self.file(&format!("{prefix}/{libdir}/libnccl.so"), "");
        if with_static {
            self.file(&format!("{prefix}/{libdir}/libnccl_static.a"), "");
        }
        self.path(prefix)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A host with given variables and prefixes, and no pkg-config or python.
#[derive(Default)]
struct FakeHost {
    vars: HashMap<String, OsString>,
    prefixes: Vec<PathBuf>,
    pkg: Option<(Vec<PathBuf>, Vec<PathBuf>)>,
    python: Vec<PathBuf>,
}

impl FakeHost {
    fn var(mut self, k: &str, v: impl Into<OsString>) -> Self {
        self.vars.insert(k.to_string(), v.into());
        self
    }
}

impl Host for FakeHost {
    fn raw_var(&self, name: &str) -> Option<OsString> {
        self.vars.get(name).cloned()
    }
    fn target(&self) -> String {
        TARGET.into()
    }
    fn pkg_config(&self) -> Result<(Vec<PathBuf>, Vec<PathBuf>), String> {
        self.pkg.clone().ok_or_else(|| "no nccl.pc (fake)".into())
    }
    fn python_site_packages(&self) -> Result<Vec<PathBuf>, String> {
        Ok(self.python.clone())
    }
    fn system_prefixes(&self) -> Vec<PathBuf> {
        self.prefixes.clone()
    }
    fn host_triple(&self) -> String {
        TARGET.into()
    }
    fn crate_version(&self) -> String {
        "0.1.0".into()
    }
}

#[test]
fn explicit_variables_win_over_nccl_dir_and_search() {
    let t = Tree::new("explicit");
    let a = t.nccl("a", "lib", false);
    let b = t.nccl("b", "lib", true);
    let c = t.nccl("c", "lib", true);
    let host = FakeHost {
        prefixes: vec![c],
        ..Default::default()
    }
    .var("NCCL_INCLUDE_DIR", a.join("include"))
    .var("NCCL_LIB_DIR", a.join("lib"))
    .var("NCCL_DIR", &b);
    let n = find::find_nccl(&host).unwrap();
    assert_eq!(n.source, Source::Explicit);
    assert_eq!(n.include_dir, a.join("include"));
    assert_eq!(n.lib_dir, a.join("lib"));
    assert!(n.warnings.is_empty(), "{:?}", n.warnings);
    // without the explicit pair, NCCL_DIR wins over the prefix search
    let host = FakeHost {
        prefixes: vec![t.path("c")],
        ..Default::default()
    }
    .var("NCCL_DIR", &b);
    assert_eq!(find::find_nccl(&host).unwrap().source, Source::NcclDir(b));
}

#[test]
fn target_prefixed_variable_wins() {
    let t = Tree::new("prefixed");
    let a = t.nccl("a", "lib", false);
    let b = t.nccl("b", "lib", false);
    let host = FakeHost::default()
        .var("NCCL_DIR", &a)
        .var("X86_64_UNKNOWN_LINUX_GNU_NCCL_DIR", &b);
    assert_eq!(
        find::find_nccl(&host).unwrap().include_dir,
        b.join("include")
    );
}

#[test]
fn lib64_lib_and_multiarch_layouts() {
    let t = Tree::new("layouts");
    for (libdir, tag) in [
        ("lib64", "l64"),
        ("lib", "l"),
        ("lib/x86_64-linux-gnu", "ma"),
    ] {
        let p = t.nccl(tag, libdir, false);
        let host = FakeHost {
            prefixes: vec![p.clone()],
            ..Default::default()
        };
        let n = find::find_nccl(&host).unwrap();
        assert_eq!(n.lib_dir, p.join(libdir), "layout {libdir}");
        assert_eq!(n.source, Source::Prefix(p.clone()));
        assert_eq!(n.shared_lib, Some(p.join(libdir).join("libnccl.so")));
    }
    // lib64 is preferred over lib when both hold a library
    let p = t.nccl("both", "lib", false);
    t.file("both/lib64/libnccl.so", "");
    let host = FakeHost {
        prefixes: vec![p.clone()],
        ..Default::default()
    };
    assert_eq!(find::find_nccl(&host).unwrap().lib_dir, p.join("lib64"));
}

#[test]
fn cuda_home_comes_before_system_prefixes() {
    let t = Tree::new("cudahome");
    let cuda = t.nccl("cuda", "lib64", false);
    let usr = t.nccl("usr", "lib", false);
    let host = FakeHost {
        prefixes: vec![usr],
        ..Default::default()
    }
    .var("CUDA_HOME", &cuda);
    assert_eq!(find::find_nccl(&host).unwrap().source, Source::Prefix(cuda));
}

#[test]
fn static_library_decides_the_default_link_mode() {
    let t = Tree::new("static");
    let p = t.nccl("p", "lib", true);
    t.file("p/lib/libcudart_static.a", "");
    let host = FakeHost {
        prefixes: vec![p.clone()],
        ..Default::default()
    };
    let n = find::find_nccl(&host).unwrap();
    assert_eq!(n.static_lib, Some(p.join("lib/libnccl_static.a")));
    let link = find::choose_link(&host, &n).unwrap();
    assert_eq!(link.mode, LinkMode::Static);
    assert_eq!(link.cudart_dir, Some(p.join("lib")));
    assert!(link.reason.contains("libnccl_static.a"), "{}", link.reason);

    let host0 = FakeHost {
        prefixes: vec![p.clone()],
        ..Default::default()
    }
    .var("NCCL_STATIC", "0");
    assert_eq!(
        find::choose_link(&host0, &n).unwrap().mode,
        LinkMode::Dynamic
    );

    // no static library: dynamic by default
    let q = t.nccl("q", "lib", false);
    let host = FakeHost {
        prefixes: vec![q],
        ..Default::default()
    };
    let n = find::find_nccl(&host).unwrap();
    let link = find::choose_link(&host, &n).unwrap();
    assert_eq!(link.mode, LinkMode::Dynamic);
    assert_eq!(link.cudart_dir, None);
}

#[test]
fn static_requested_but_not_found_by_search_is_an_error() {
    let t = Tree::new("nostatic");
    let p = t.nccl("p", "lib", false);
    let host = FakeHost {
        prefixes: vec![p.clone()],
        ..Default::default()
    }
    .var("NCCL_STATIC", "1");
    let n = find::find_nccl(&host).unwrap();
    let e = find::choose_link(&host, &n).unwrap_err().to_string();
    assert!(
        e.contains(&p.join("lib/libnccl_static.a").display().to_string()),
        "{e}"
    );
    assert!(e.contains("NCCL_STATIC=1"), "{e}");
    assert!(e.contains("NCCL_STATIC=0"), "{e}");
    assert!(e.contains("TARGET=x86_64-unknown-linux-gnu"), "{e}");
}

#[test]
fn static_without_cudart_is_an_error_when_searched() {
    let t = Tree::new("nocudart");
    let p = t.nccl("p", "lib", true);
    let host = FakeHost {
        prefixes: vec![p],
        ..Default::default()
    };
    let n = find::find_nccl(&host).unwrap();
    let e = find::choose_link(&host, &n).unwrap_err().to_string();
    assert!(e.contains("libcudart_static.a"), "{e}");
    assert!(e.contains("CUDA_HOME"), "{e}");
}

#[test]
fn pip_wheel_layout_in_a_virtualenv() {
    let t = Tree::new("pip");
    let site = "venv/lib/python3.12/site-packages";
    t.file(&format!("{site}/nvidia/nccl/include/nccl.h"), "");
    t.file(&format!("{site}/nvidia/nccl/lib/libnccl.so.2"), "");
    t.file(&format!("{site}/nvidia/cu13/lib/libcudart_static.a"), "");
    let host = FakeHost::default().var("VIRTUAL_ENV", t.path("venv"));
    let n = find::find_nccl(&host).unwrap();
    let root = t.path(site).join("nvidia/nccl");
    assert_eq!(n.source, Source::PipWheel(root.clone()));
    assert_eq!(n.shared_lib, Some(root.join("lib/libnccl.so.2")));
    assert_eq!(n.static_lib, None);
    assert_eq!(
        find::choose_link(&host, &n).unwrap().mode,
        LinkMode::Dynamic
    );

    // the python3 on PATH is searched too (and CONDA_PREFIX, like VIRTUAL_ENV)
    let host = FakeHost {
        python: vec![t.path(site)],
        ..Default::default()
    };
    assert_eq!(
        find::find_nccl(&host).unwrap().source,
        Source::PipWheel(root.clone())
    );
    let host = FakeHost::default().var("CONDA_PREFIX", t.path("venv"));
    assert_eq!(
        find::find_nccl(&host).unwrap().source,
        Source::PipWheel(root.clone())
    );

    // a static build beside a pip NCCL takes cudart from nvidia/cu13/lib
    t.file(&format!("{site}/nvidia/nccl/lib/libnccl_static.a"), "");
    let host = FakeHost::default().var("VIRTUAL_ENV", t.path("venv"));
    let n = find::find_nccl(&host).unwrap();
    let link = find::choose_link(&host, &n).unwrap();
    assert_eq!(link.mode, LinkMode::Static);
    assert_eq!(link.cudart_dir, Some(t.path(site).join("nvidia/cu13/lib")));
}

#[test]
fn pkg_config_is_used_when_it_points_at_real_files() {
    let t = Tree::new("pkg");
    let p = t.nccl("p", "lib", false);
    let host = FakeHost {
        pkg: Some((vec![p.join("include")], vec![p.join("lib")])),
        ..Default::default()
    };
    assert_eq!(find::find_nccl(&host).unwrap().source, Source::PkgConfig);
    // a nccl.pc pointing nowhere is reported, and the search goes on
    let q = t.nccl("q", "lib", false);
    let host = FakeHost {
        pkg: Some((vec![t.path("nowhere")], vec![t.path("nowhere")])),
        prefixes: vec![q.clone()],
        ..Default::default()
    };
    assert_eq!(find::find_nccl(&host).unwrap().source, Source::Prefix(q));
}

#[test]
fn nccl_dir_that_does_not_exist_is_a_clear_error() {
    let t = Tree::new("missingdir");
    let good = t.nccl("good", "lib", false);
    let missing = t.path("does-not-exist");
    let host = FakeHost {
        prefixes: vec![good],
        ..Default::default()
    }
    .var("NCCL_DIR", &missing);
    let e = find::find_nccl(&host).unwrap_err().to_string();
    assert!(
        e.contains(&format!("NCCL_DIR={}", missing.display())),
        "{e}"
    );
    assert!(e.contains("does not exist"), "{e}");
    assert!(e.contains("pip install nvidia-nccl-cu13"), "{e}");
    assert!(e.contains("libnccl-dev"), "{e}");
    assert!(
        e.contains("HOST=x86_64-unknown-linux-gnu TARGET=x86_64-unknown-linux-gnu nccl-sys 0.1.0"),
        "{e}"
    );

    // a NCCL_DIR with a header but no library says which part is missing
    t.file("half/include/nccl.h", "");
    let host = FakeHost::default().var("NCCL_DIR", t.path("half"));
    let e = find::find_nccl(&host).unwrap_err().to_string();
    assert!(e.contains("no libnccl.so"), "{e}");
}

#[test]
fn relative_paths_are_refused_naming_the_variable() {
    let t = Tree::new("relative");
    let good = t.nccl("good", "lib", false);
    for name in [
        "NCCL_DIR",
        "NCCL_INCLUDE_DIR",
        "NCCL_LIB_DIR",
        "CUDA_HOME",
        "CUDA_PATH",
    ] {
        let host = FakeHost {
            prefixes: vec![good.clone()],
            ..Default::default()
        }
        .var(name, "nccl/here");
        let e = find::find_nccl(&host).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{name}=nccl/here is a relative path")),
            "{name}: {e}"
        );
    }
    // a relative environment prefix is skipped, and the search goes on
    let host = FakeHost {
        prefixes: vec![good.clone()],
        ..Default::default()
    }
    .var("VIRTUAL_ENV", "venv");
    assert_eq!(find::find_nccl(&host).unwrap().source, Source::Prefix(good));
}

#[test]
fn nothing_found_lists_every_place_tried() {
    let t = Tree::new("nothing");
    let host = FakeHost {
        prefixes: vec![t.path("usr"), t.path("opt")],
        ..Default::default()
    }
    .var("CUDA_HOME", t.path("cuda"));
    let e = find::find_nccl(&host).unwrap_err();
    let text = e.to_string();
    for what in [
        "NCCL_INCLUDE_DIR + NCCL_LIB_DIR",
        "NCCL_DIR",
        "pkg-config nccl",
        "CUDA_PATH",
        "VIRTUAL_ENV",
        "CONDA_PREFIX",
    ] {
        assert!(
            e.attempts.iter().any(|a| a.what == what),
            "{what} missing from {text}"
        );
    }
    assert!(
        text.contains(&format!("CUDA_HOME={}", t.path("cuda").display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("prefix {}", t.path("usr").display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("prefix {}", t.path("opt").display())),
        "{text}"
    );
}

#[test]
fn explicit_paths_that_are_missing_only_warn() {
    let t = Tree::new("explicitmissing");
    let host = FakeHost::default()
        .var("NCCL_INCLUDE_DIR", t.path("inc"))
        .var("NCCL_LIB_DIR", t.path("lib"))
        .var("NCCL_STATIC", "1")
        .var("CUDA_HOME", t.path("cuda"));
    let n = find::find_nccl(&host).unwrap();
    assert_eq!(n.source, Source::Explicit);
    assert_eq!(n.warnings.len(), 2, "{:?}", n.warnings);
    assert!(
        n.warnings[0].contains("nccl.h does not exist"),
        "{:?}",
        n.warnings
    );
    assert!(n.warnings[1].contains("NCCL_LIB_DIR"), "{:?}", n.warnings);
    let link = find::choose_link(&host, &n).unwrap();
    assert_eq!(link.mode, LinkMode::Static);
    assert_eq!(link.cudart_dir, Some(t.path("cuda/lib64")));
    assert!(
        link.warnings
            .iter()
            .any(|w| w.contains("libnccl_static.a does not exist")),
        "{:?}",
        link.warnings
    );
    assert!(
        link.warnings
            .iter()
            .any(|w| w.starts_with("CUDA_HOME") && w.contains("libcudart_static.a")),
        "{:?}",
        link.warnings
    );
}

#[test]
fn multiarch_names() {
    assert_eq!(
        find::multiarch("x86_64-unknown-linux-gnu").as_deref(),
        Some("x86_64-linux-gnu")
    );
    assert_eq!(
        find::multiarch("aarch64-unknown-linux-gnu").as_deref(),
        Some("aarch64-linux-gnu")
    );
    assert_eq!(find::multiarch("x86_64-pc-windows-msvc"), None);
}

#[test]
fn library_version_from_name_and_contents() {
    let t = Tree::new("libversion");
    let real = t.file("lib/libnccl.so.2.27.7", "");
    std::os::unix::fs::symlink(&real, t.path("lib/libnccl.so")).unwrap();
    assert_eq!(
        find::library_version(&t.path("lib/libnccl.so")),
        Some((2, 27, 7))
    );
    // the pip wheel's libnccl.so.2 only says it inside, like the real one
    let mut blob = vec![0u8; 5_000_000];
    let s = b"NCCL version 2.28.3+cuda13.0";
    let at = (1 << 22) - 10; // straddles the first read
    blob[at..at + s.len()].copy_from_slice(s);
    let p = t.path("lib/libnccl.so.2");
    std::fs::write(&p, &blob).unwrap();
    assert_eq!(find::library_version(&p), Some((2, 28, 3)));
    std::fs::write(&p, b"no version here").unwrap();
    assert_eq!(find::library_version(&p), None);
}

#[test]
fn header_without_a_version_is_a_clear_error() {
    let t = Tree::new("noversion");
    t.file("inc/nccl.h", "/* not NCCL */\n");
    let root = crate::repo_root().join("nccl-sys");
    let e = crate::version::header_version(crate::cc_build(), &root, &t.path("inc")).unwrap_err();
    assert!(e.contains("defines no usable version"), "{e}");
    assert!(
        e.contains(&t.path("inc/nccl.h").display().to_string()),
        "{e}"
    );
    // and a header that does define one is read by the preprocessor
    t.file(
        "inc2/nccl.h",
        "#define NCCL_MAJOR 2\n#define NCCL_MINOR 19\n#define NCCL_PATCH 3\n#define NCCL_VERSION_CODE 21903\n",
    );
    let v = crate::version::header_version(crate::cc_build(), &root, &t.path("inc2")).unwrap();
    assert_eq!((v.code, v.major, v.minor, v.patch), (21903, 2, 19, 3));
}

#[test]
fn missing_header_path_reported() {
    let t = Tree::new("noheader");
    let root = crate::repo_root().join("nccl-sys");
    let e = crate::version::header_version(crate::cc_build(), &root, Path::new(&t.path("none")))
        .unwrap_err();
    assert!(e.contains("does not exist"), "{e}");
}

/// The build script's own `python3` probe (the real interpreter of this
/// machine, if any): absolute folders only, or an error that says why.
#[test]
fn the_build_python_probe_answers_absolute_folders_only() {
    match find::python3_site_packages() {
        Ok(dirs) => assert!(dirs.iter().all(|d| d.is_absolute()), "{dirs:?}"),
        Err(e) => assert!(e.contains("python3"), "{e}"),
    }
}
