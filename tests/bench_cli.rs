//! The benchmark's command line: without a GPU it reports capabilities and
//! says there is nothing to measure; with one, a small sweep of every
//! collective runs, checks its results and writes JSON and SVG.

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_nccl-bench");

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
    assert!(err.contains("NCCL runtime"), "capability report: {err}");
    match nccl_rs_tests::gpu_count() {
        Err(why) => {
            assert!(out.contains("no GPU to measure"), "{out}");
            nccl_rs_tests::say(&format!(
                "bench sweep NOT RUN (no GPU: {why}); checked the no-GPU report instead"
            ));
            assert!(
                !nccl_rs_tests::gpu_required(),
                "NCCL_RS_REQUIRE_GPU=1 but no GPU"
            );
        }
        Ok(_) => {
            assert!(out.contains("out of bounds values: 0 OK"), "{out}");
            let j = std::fs::read_to_string(&json).unwrap();
            for c in [
                "all_reduce",
                "all_gather",
                "reduce_scatter",
                "broadcast",
                "reduce",
                "all_to_all",
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
