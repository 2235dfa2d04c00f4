//! The benchmark's command line: `--help`, refused arguments, and a small
//! sweep — without a GPU, the capability report and the statement that there
//! is nothing to measure; with one, every collective, checked, with JSON and
//! SVG written.

use std::process::{Command, Stdio};

const BENCH: &str = env!("CARGO_BIN_EXE_nccl-bench");

/// Why no GPU can be used, if none can.
fn no_gpu() -> Option<String> {
    // SAFETY: only tries to dlopen the driver library, then drops it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some("the CUDA driver library (libcuda.so) is not installed".into());
    }
    match cudarc::driver::CudaContext::device_count() {
        Ok(0) => Some("the CUDA driver sees no device".into()),
        Ok(_) => None,
        Err(e) => Some(format!("the CUDA driver failed: {e}")),
    }
}

#[test]
fn help_exits_0_on_stdout_with_every_default() {
    for flag in ["--help", "-h"] {
        let o = Command::new(BENCH).arg(flag).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{flag}: {o:?}");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("Usage: nccl-bench [OPTIONS]"), "{out}");
        for default in [
            "[default: all_reduce]",
            "[default: 128M]",
            "[default: f32]",
            "--cudagraph",
            "--nthreads <1>",
        ] {
            assert!(out.contains(default), "{default} missing from {out}");
        }
        assert!(o.stderr.is_empty(), "{o:?}");
    }
}

/// Runs the benchmark with `args`; a usage error: status 2, nothing on
/// stdout, and stderr says `why` and points to `--help`.
fn refused(args: &[&str], why: &str) {
    let o = Command::new(BENCH).args(args).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
    assert!(o.stdout.is_empty(), "{args:?}: {o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(why), "{args:?}: {err}");
    assert!(err.contains("try '--help'"), "{args:?}: {err}");
}

#[test]
fn bad_arguments_are_refused_with_usage_and_status_2() {
    refused(&["-c", "all_reduce,bogus"], "unknown collective \"bogus\"");
    refused(
        &["-b", "1M", "-e", "1K"],
        "--maxbytes 1024 is below --minbytes 1048576",
    );
    refused(&["-d", "float32"], "unknown datatype \"float32\"");
    refused(&["-e", "12X"], "\"12X\" is not a size");
    refused(&["-n", "0"], "must be at least 1");
    refused(&["-t", "4"], "accepted only as 1");
    refused(&["--bogus"], "unexpected argument '--bogus'");
}

/// `nccl-bench | head`: stdout closed before the report is written. The
/// program ends quietly with status 0 (it used to panic, status 101).
#[test]
fn a_closed_stdout_ends_it_quietly() {
    for args in [&["--no-progress"][..], &["--help"]] {
        let mut child = Command::new(BENCH)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // the only read end: the program's first write fails with EPIPE
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn small_sweep_or_capability_report() {
    let dir = std::env::temp_dir().join(format!("nccl-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("r.json"), dir.join("r.svg"));
    let o = Command::new(BENCH)
        .args([
            "-c",
            "all",
            "-b",
            "8",
            "-e",
            "64K",
            "-f",
            "8",
            "-n",
            "3",
            "-w",
            "1",
            "--no-progress",
            "--json",
        ])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}\n{err}");
    // the whole report is on stdout, the capability report first
    assert!(out.starts_with("NCCL runtime"), "capability report: {out}");
    assert!(out.contains("ncclCommWindowRegister"), "{out}");
    match no_gpu() {
        Some(why) => {
            assert!(
                out.contains("no GPU to measure") && out.contains("report is above"),
                "{out}"
            );
            eprintln!("bench sweep NOT RUN (no GPU: {why}); checked the no-GPU report instead");
            assert!(
                std::env::var("NCCL_RS_REQUIRE_GPU").as_deref() != Ok("1"),
                "NCCL_RS_REQUIRE_GPU=1 but no GPU"
            );
        }
        None => {
            assert!(out.contains("out of bounds values: 0 OK"), "{out}");
            let j = std::fs::read_to_string(&json).unwrap();
            for c in [
                "all_reduce",
                "all_gather",
                "reduce_scatter",
                "broadcast",
                "reduce",
                "all_to_all",
                "gather",
                "scatter",
                "sendrecv",
            ] {
                assert!(
                    j.contains(&format!("\"coll\": \"{c}\"")),
                    "{c} missing from {j}"
                );
            }
            assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
