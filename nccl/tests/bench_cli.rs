//! The benchmark's command line: `--help`, refused arguments, and a small
//! sweep — without a GPU, the capability report and the statement that there
//! is nothing to measure; with one, every collective, checked, with JSON and
//! SVG written.

use std::process::Command;

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
        assert!(o.status.success(), "{flag}: {o:?}");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.starts_with("usage: nccl-bench"), "{out}");
        for default in ["(default all_reduce)", "(default 128M)", "(default f32)"] {
            assert!(out.contains(default), "{default} missing from {out}");
        }
        assert!(o.stderr.is_empty(), "{o:?}");
    }
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    let o = Command::new(BENCH)
        .args(["-c", "all_reduce,bogus"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown collective \"bogus\""), "{err}");
    let o = Command::new(BENCH)
        .args(["-b", "1M", "-e", "1K"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = Command::new(BENCH)
        .args(["-d", "float32"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown datatype \"float32\""), "{err}");
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
