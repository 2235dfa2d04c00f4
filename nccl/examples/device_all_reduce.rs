//! A user kernel on NCCL's device API: an all-reduce (sum of `f32`) over
//! the ranks of the LSA team, written against `nccl_device.h`
//! (`device_all_reduce.cu`, beside this file), compiled at run time with
//! NVRTC, launched on two windows with a device communicator passed by
//! value, and checked against the expected sums and against `all_reduce`.
//!
//! ```text
//! device_all_reduce [--ptx FILE] [--emit-ptx FILE] [--compile-only [--arch compute_90]]
//! ```
//!
//! - without `--ptx`, NVRTC (libnvrtc of CUDA 12 or 13, found by cudarc on
//!   the loader's path) compiles the kernel against the headers of
//!   `NCCL_INCLUDE_DIR`, `$NCCL_DIR/include` or `/usr/include` (the folder
//!   of `nccl.h` and `nccl_device.h`: it must be the NCCL this program runs
//!   with), `$CUDA_HOME/include` (or `CUDA_PATH`, `/usr/local/cuda`) and
//!   its `cccl` folder;
//! - `--ptx FILE` loads a kernel compiled ahead of time instead (`nvcc -ptx
//!   -arch=sm_90 -std=c++17 -I<nccl include> device_all_reduce.cu`);
//! - `--emit-ptx FILE` writes what NVRTC made; `--compile-only` stops
//!   there (no GPU needed).
//!
//! World 1 without a launcher; under `cargo xtask launch` (or torchrun,
//! Slurm, mpirun) one rank per process. Ranks that cannot map each other's
//! memory (two ranks on one GPU under different `NCCL_HOSTID`s are two
//! "nodes") have no symmetric memory support: NCCL then refuses the device
//! communicator, and this program says so and exits with code 2. Exit
//! codes: 0 passed, 1 failed, 2 not available here, 3 the kernel did not
//! compile.
//!
//! The kernel's `ncclDevComm` parameter has the size of the header it was
//! compiled against; the program checks it against the device
//! communicator's size for the running libnccl before launching.

// built against an nccl.h older than 2.27 (no windows), only the compiler
// part is used
#![cfg_attr(
    not(nccl_fn = "ncclCommWindowRegister"),
    allow(dead_code, unused_imports)
)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};
use nccl::{Comm, DevCommRequirements, NcclBuffer, ReduceOp, UniqueId};

/// The kernel's source.
const KERNEL: &str = include_str!("device_all_reduce.cu");
/// Its name.
const KERNEL_NAME: &str = "lsa_all_reduce_f32";
/// CTAs (one LSA barrier each) and threads per CTA.
const BLOCKS: u32 = 4;
const THREADS: u32 = 256;

/// Stand-ins for the C and CUDA runtime headers that `nccl.h` and
/// `nccl_device.h` include but NVRTC has no copy of: what they use from
/// them comes from libcu++ (`cuda/std/...`), which NVRTC compiles.
const STAND_INS: &[(&str, &str)] = &[
    (
        // included first (--pre-include): NVRTC refuses `__host__`
        // declarations, and the device API's headers declare the host
        // functions beside the device ones; they are never called here
        "nvrtc_prelude.h",
        "#pragma once\n#undef __host__\n#define __host__\n",
    ),
    (
        "cuda_runtime.h",
        "#pragma once\n// nccl.h uses only the stream type\ntypedef struct CUstream_st* cudaStream_t;\n",
    ),
    (
        // nccl.h includes it (inside extern \"C\") for INT_MIN, used only
        // by macros a kernel does not need
        // (2.32's enums use INT_MIN and INT_MAX): libcu++'s definitions
        "limits.h",
        "#pragma once\n#define INT_MAX   0x7fffffff\n#define INT_MIN   (-INT_MAX - 1)\n",
    ),
    (
        // C typedefs (NCCL 2.32's nccl.h includes it inside extern \"C\"),
        // the same types as libcu++'s aliases for NVRTC
        "stdint.h",
        "#pragma once\ntypedef signed char int8_t;\ntypedef signed short int16_t;\n\
         typedef signed int int32_t;\ntypedef signed long long int64_t;\n\
         typedef unsigned char uint8_t;\ntypedef unsigned short uint16_t;\n\
         typedef unsigned int uint32_t;\ntypedef unsigned long long uint64_t;\n\
         typedef int64_t intptr_t;\ntypedef uint64_t uintptr_t;\n",
    ),
    ("stdbool.h", "#pragma once\n"),
    // size_t is built into NVRTC
    ("stddef.h", "#pragma once\n"),
    ("stdlib.h", "#pragma once\n"),
    // the C++ headers that 2.30+'s GIN headers include, from libcu++
    (
        "cstdint",
        "#pragma once\n#include <stdint.h>\n#include <cuda/std/cstdint>\n",
    ),
    (
        "type_traits",
        "#pragma once\n#include <cuda/std/type_traits>\nnamespace std { using namespace cuda::std; }\n",
    ),
    ("cassert", "#pragma once\n#include <assert.h>\n"),
    // NVRTC has assert built in
    ("assert.h", "#pragma once\n"),
    ("cstddef", "#pragma once\n#include <cuda/std/cstddef>\n"),
    ("stdio.h", "#pragma once\n"),
    // NVRTC has the math functions built in
    ("math.h", "#pragma once\n"),
    ("string.h", "#pragma once\n"),
    ("errno.h", "#pragma once\n"),
    (
        "linux/types.h",
        "#pragma once\n#include <stdint.h>\ntypedef uint8_t __u8;\ntypedef uint16_t __u16;\n\
         typedef uint32_t __u32;\ntypedef uint64_t __u64;\ntypedef int32_t __s32;\n\
         typedef int64_t __s64;\ntypedef uint16_t __be16;\ntypedef uint32_t __be32;\n\
         typedef uint64_t __be64;\ntypedef uint16_t __le16;\ntypedef uint32_t __le32;\n\
         typedef uint64_t __le64;\n",
    ),
];

/// Makes or reads the kernel's PTX for an architecture; says how.
type LoadPtx<'a> = dyn Fn(&str) -> Result<(Ptx, String), Failure> + 'a;

/// The failures, by exit code.
enum Failure {
    /// 1: a result or a call went wrong.
    Failed(String),
    /// 2: the device API cannot run here.
    NotHere(String),
    /// 3: the kernel did not compile (or load).
    Compile(String),
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Failed(e.to_string())
    }
}

struct Args {
    ptx: Option<PathBuf>,
    emit: Option<PathBuf>,
    compile_only: bool,
    arch: Option<String>,
}

fn args() -> Result<Args, Failure> {
    let mut a = Args {
        ptx: None,
        emit: None,
        compile_only: false,
        arch: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| Failure::Failed(format!("{name} needs a value")))
        };
        match x.as_str() {
            "--ptx" => a.ptx = Some(value("--ptx")?.into()),
            "--emit-ptx" => a.emit = Some(value("--emit-ptx")?.into()),
            "--arch" => a.arch = Some(value("--arch")?),
            "--compile-only" => a.compile_only = true,
            other => return Err(Failure::Failed(format!("unknown argument {other:?}"))),
        }
    }
    Ok(a)
}

/// The first of `dirs` holding `file`, or an error naming what was tried.
fn find(dirs: &[PathBuf], file: &str, fix: &str) -> Result<PathBuf, Failure> {
    dirs.iter()
        .find(|d| d.join(file).is_file())
        .cloned()
        .ok_or_else(|| {
            let tried: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            Failure::Compile(format!(
                "{file} not found (looked in {}): {fix}",
                tried.join(", ")
            ))
        })
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The include folders: the stand-ins, NCCL's, CUDA's and CCCL's.
fn include_dirs(stand_ins: &Path) -> Result<Vec<PathBuf>, Failure> {
    let nccl_dirs: Vec<PathBuf> = [
        env_dir("NCCL_INCLUDE_DIR"),
        env_dir("NCCL_DIR").map(|d| d.join("include")),
        Some(PathBuf::from("/usr/include")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let nccl = find(
        &nccl_dirs,
        "nccl_device.h",
        "set NCCL_INCLUDE_DIR to the include folder of the NCCL (2.28+) this program runs with",
    )?;
    let cuda_homes: Vec<PathBuf> = [
        env_dir("CUDA_HOME"),
        env_dir("CUDA_PATH"),
        Some(PathBuf::from("/usr/local/cuda")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let cuda_dirs: Vec<PathBuf> = cuda_homes.iter().map(|h| h.join("include")).collect();
    let cuda = find(
        &cuda_dirs,
        "cuda_fp16.h",
        "install the CUDA toolkit headers and set CUDA_HOME",
    )?;
    // CUDA 13 keeps libcu++ in include/cccl, CUDA 12 in include
    let cccl_dirs: Vec<PathBuf> = cuda_dirs
        .iter()
        .flat_map(|d| [d.join("cccl"), d.clone()])
        .collect();
    let cccl = find(
        &cccl_dirs,
        "cuda/atomic",
        "install the CUDA toolkit headers or pip nvidia-cuda-cccl-cu12 (and set CUDA_HOME)",
    )?;
    let nccl = patched_copy(&nccl, &stand_ins.join("nccl"))?;
    Ok(vec![stand_ins.to_path_buf(), nccl, cuda, cccl])
}

/// Copies NCCL's headers (`nccl.h`, `nccl_device.h`, `nccl_device/`) from
/// `from` into `to`, with the one construct NVRTC refuses made acceptable:
/// NCCL 2.28's `loadConst` declares arrays of `sizeof(T)/N` elements in
/// branches a type's alignment rules out, which are zero-length there (a
/// GNU extension nvcc accepts, NVRTC does not); such an array gets at least
/// one element, which changes nothing in the branch that runs.
fn patched_copy(from: &Path, to: &Path) -> Result<PathBuf, Failure> {
    fn walk(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for e in std::fs::read_dir(from)? {
            let e = e?;
            let (src, dst) = (e.path(), to.join(e.file_name()));
            if e.file_type()?.is_dir() {
                walk(&src, &dst)?;
            } else {
                match std::fs::read_to_string(&src) {
                    Ok(text) => std::fs::write(&dst, patch(&text))?,
                    Err(_) => drop(std::fs::copy(&src, &dst)?),
                }
            }
        }
        Ok(())
    }
    std::fs::create_dir_all(to)?;
    for f in ["nccl.h", "nccl_device.h"] {
        std::fs::copy(from.join(f), to.join(f))?;
    }
    walk(&from.join("nccl_device"), &to.join("nccl_device"))?;
    Ok(to.to_path_buf())
}

/// `[sizeof(T)/N]` becomes `[(sizeof(T)/N) ? (sizeof(T)/N) : 1]`.
fn patch(text: &str) -> String {
    const KEY: &str = "[sizeof(T)/";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let after = &rest[at + KEY.len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && after[digits..].starts_with(']') {
            let e = format!("(sizeof(T)/{})", &after[..digits]);
            out.push_str(&rest[..at]);
            out.push_str(&format!("[{e} ? {e} : 1]"));
            rest = &after[digits + 1..];
        } else {
            out.push_str(&rest[..at + KEY.len()]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Compiles the kernel with NVRTC for `arch` (`compute_90`).
fn compile(arch: &str) -> Result<Ptx, Failure> {
    let stand_ins = std::env::temp_dir().join(format!("nccl-rs-nvrtc-{}", std::process::id()));
    std::fs::create_dir_all(&stand_ins)?;
    for (name, text) in STAND_INS {
        let f = stand_ins.join(name);
        if let Some(dir) = f.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(f, text)?;
    }
    let dirs = include_dirs(&stand_ins)?;
    // SAFETY: only asks whether the library can be opened (dlopen).
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Failure::Compile(
            "libnvrtc not found on the loader's path (cudarc looks for libnvrtc.so and \
             libnvrtc.so.12): add the CUDA toolkit's lib64 to LD_LIBRARY_PATH, or use --ptx"
                .into(),
        ));
    }
    let opts = CompileOptions {
        include_paths: dirs.iter().map(|d| d.display().to_string()).collect(),
        options: vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".into(),
            "--device-as-default-execution-space".into(),
            format!(
                "--pre-include={}",
                stand_ins.join("nvrtc_prelude.h").display()
            ),
        ],
        name: Some("device_all_reduce.cu".into()),
        ..Default::default()
    };
    let r = cudarc::nvrtc::compile_ptx_with_opts(KERNEL, opts);
    let _ = std::fs::remove_dir_all(&stand_ins);
    r.map_err(|e| match e {
        CompileError::CompileError { log, nvrtc, .. } => {
            let log = log.to_string_lossy();
            let log = if log.trim().is_empty() {
                "(empty)".into()
            } else {
                log
            };
            Failure::Compile(format!("NVRTC failed ({nvrtc:?}); its log:\n{log}"))
        }
        e => Failure::Compile(format!("NVRTC failed: {e:?}")),
    })
}

/// The size of the kernel's `ncclDevComm` parameter, read from its PTX
/// (`.param .align 8 .b8 <name>_param_3[N]`).
fn dev_comm_param_size(ptx: &str) -> Option<usize> {
    let key = format!("{KERNEL_NAME}_param_3[");
    let at = ptx.find(&key)? + key.len();
    ptx[at..].split(']').next()?.trim().parse().ok()
}

/// Input element `i` of world rank `rank` (small integers: exact sums).
fn input(rank: usize, i: usize) -> f32 {
    (rank + 1) as f32 + (i % 13) as f32
}

/// Makes the communicator: world 1 here, or one rank of a launcher's.
fn communicator() -> Result<(Comm, Arc<CudaStream>), Failure> {
    let launched = std::env::var_os("WORLD_SIZE").is_some() || std::env::var_os("RANK").is_some();
    if launched {
        let (comm, _) = nccl::bootstrap::init_from_launcher(&Default::default())?;
        let stream = comm.context().new_stream()?;
        return Ok((comm, stream));
    }
    let ctx = match nccl::context(0) {
        Ok(c) => c,
        Err(e @ (nccl::Error::NoDriver { .. } | nccl::Error::NoGpu { .. })) => {
            return Err(Failure::NotHere(format!("no GPU: {e}")));
        }
        Err(e) => return Err(e.into()),
    };
    let stream = ctx.new_stream()?;
    let comm = Comm::init_rank(&ctx, 1, &UniqueId::new()?, 0)?;
    Ok((comm, stream))
}

fn arch_of(ctx: &CudaContext) -> Result<String, Failure> {
    use cudarc::driver::sys::CUdevice_attribute as A;
    let major = ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = ctx.attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    Ok(format!("compute_{major}{minor}"))
}

fn run() -> Result<String, Failure> {
    let args = args()?;
    let n: usize = std::env::var("DEVICE_AR_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 20);
    let load_ptx = |arch: &str| -> Result<(Ptx, String), Failure> {
        match &args.ptx {
            Some(f) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| Failure::Compile(format!("{}: {e}", f.display())))?;
                Ok((Ptx::from_src(text.clone()), format!("ptx {}", f.display())))
            }
            None => {
                let ptx = compile(arch)?;
                let text = ptx.to_src();
                if let Some(f) = &args.emit {
                    std::fs::write(f, &text)?;
                }
                Ok((ptx, format!("nvrtc {arch}")))
            }
        }
    };
    if args.compile_only {
        let arch = args.arch.clone().unwrap_or_else(|| "compute_90".into());
        let (ptx, how) = load_ptx(&arch)?;
        let text = ptx.to_src();
        return Ok(format!(
            "compiled ({how}): {} bytes of PTX, ncclDevComm parameter {:?} bytes",
            text.len(),
            dev_comm_param_size(&text)
        ));
    }

    on_gpu(&args, n, &load_ptx)
}

/// Creates the communicator and device communicator, launches the kernel
/// and checks its result.
#[cfg(nccl_fn = "ncclCommWindowRegister")]
fn on_gpu(args: &Args, n: usize, load_ptx: &LoadPtx) -> Result<String, Failure> {
    let (comm, stream) = communicator()?;
    let (rank, world) = (comm.rank(), comm.world_size());
    let arch = match &args.arch {
        Some(a) => a.clone(),
        None => arch_of(comm.context())?,
    };
    let (ptx, how) = load_ptx(&arch)?;
    let param = dev_comm_param_size(&ptx.to_src());

    let lsa = comm.team_lsa()?;
    let members: Vec<usize> = (0..lsa.n_ranks)
        .map(|j| comm.team_rank_to_world(lsa, j))
        .collect::<Result<_, _>>()?;
    let reqs = DevCommRequirements::new().lsa_barrier_count(BLOCKS);
    let dev_comm = match comm.dev_comm(&reqs) {
        Ok(d) => d,
        Err(
            e @ nccl::Error::Nccl {
                code: nccl::NcclCode::InvalidUsage,
                ..
            },
        ) => {
            return Err(Failure::NotHere(format!(
                "NCCL refused the device communicator (no symmetric memory support: ranks \
                 that cannot map each other's memory): {e}"
            )));
        }
        Err(e @ (nccl::Error::Unsupported { .. } | nccl::Error::UnknownLayout { .. })) => {
            return Err(Failure::NotHere(e.to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    if param != Some(dev_comm.size()) {
        return Err(Failure::Compile(format!(
            "the kernel's ncclDevComm parameter is {param:?} bytes, the running libnccl's \
             device communicator {} bytes: compile against the nccl_device.h of the NCCL \
             in use",
            dev_comm.size()
        )));
    }

    let module = comm
        .context()
        .load_module(ptx)
        .map_err(|e| Failure::Compile(format!("loading the PTX: {e}")))?;
    let func = module
        .load_function(KERNEL_NAME)
        .map_err(|e| Failure::Compile(format!("{KERNEL_NAME}: {e}")))?;

    let host: Vec<f32> = (0..n).map(|i| input(rank, i)).collect();
    let mut send = NcclBuffer::<f32>::alloc_zeros(&stream, n)?;
    stream.memcpy_htod(&host, &mut send)?;
    let recv = NcclBuffer::<f32>::alloc_zeros(&stream, n)?;
    // SAFETY: every rank registers the same two windows, of the same size,
    // in the same order, and the kernel reaches them at the same offsets.
    let send = unsafe { comm.window_register(send, true)? };
    // SAFETY: as above.
    let recv = unsafe { comm.window_register(recv, true)? };
    if !send.is_mapped() || !recv.is_mapped() {
        return Err(Failure::NotHere(
            "NCCL made no windows (no symmetric memory support)".into(),
        ));
    }
    let send_win = send.window_handle(&comm)?;
    let recv_win = recv.window_handle(&comm)?;

    let cfg = LaunchConfig {
        grid_dim: (BLOCKS, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut launch = stream.launch_builder(&func);
    launch
        .arg(&send_win)
        .arg(&recv_win)
        .arg(&n)
        .arg(dev_comm.kernel_arg());
    // SAFETY: the arguments match the kernel's signature (two window
    // handles, a size_t and an ncclDevComm of the size checked above); the
    // windows hold n floats on every rank and stay registered, and the
    // device communicator lives, until the stream is synchronized below;
    // it was made with BLOCKS LSA barriers, one per CTA.
    unsafe { launch.launch(cfg) }?;
    stream.synchronize()?;

    let mut got = vec![0f32; n];
    stream.memcpy_dtoh(recv.get(), &mut got)?;
    stream.synchronize()?;
    let expect = |i: usize| members.iter().map(|&r| input(r, i)).sum::<f32>();
    if let Some(i) = (0..n).find(|&i| got[i] != expect(i)) {
        return Err(Failure::Failed(format!(
            "element {i}: the kernel wrote {}, the sum over LSA ranks {members:?} is {}",
            got[i],
            expect(i)
        )));
    }
    let mut vs_all_reduce = "all_reduce not compared (the LSA team is not the world)";
    if lsa.n_ranks == world {
        let mut reference = stream.alloc_zeros::<f32>(n)?;
        comm.all_reduce(send.get(), &mut reference, ReduceOp::Sum, &stream)?;
        let mut r = vec![0f32; n];
        stream.memcpy_dtoh(&reference, &mut r)?;
        stream.synchronize()?;
        if let Some(i) = (0..n).find(|&i| got[i] != r[i]) {
            return Err(Failure::Failed(format!(
                "element {i}: the kernel wrote {}, all_reduce {}",
                got[i], r[i]
            )));
        }
        vs_all_reduce = "equal to all_reduce";
    }
    let size = dev_comm.size();
    drop(dev_comm);
    drop((send, recv));
    comm.finalize()?;
    Ok(format!(
        "rank {rank}/{world}, LSA team {}/{} {members:?}, {n} floats ({how}, ncclDevComm {size} \
         bytes, NCCL {}): sums right, {vs_all_reduce}",
        lsa.rank,
        lsa.n_ranks,
        nccl::version()?
    ))
}

/// Windows need an `nccl.h` of NCCL 2.27 or newer at build time.
#[cfg(not(nccl_fn = "ncclCommWindowRegister"))]
fn on_gpu(_: &Args, _: usize, _: &LoadPtx) -> Result<String, Failure> {
    Err(Failure::NotHere(
        "this program was built against an nccl.h older than 2.27 (no windows)".into(),
    ))
}

fn main() -> ExitCode {
    match run() {
        Ok(s) => {
            println!("device_all_reduce: PASS: {s}");
            ExitCode::SUCCESS
        }
        Err(Failure::Failed(s)) => {
            println!("device_all_reduce: FAIL: {s}");
            ExitCode::from(1)
        }
        Err(Failure::NotHere(s)) => {
            println!("device_all_reduce: NOT AVAILABLE: {s}");
            ExitCode::from(2)
        }
        Err(Failure::Compile(s)) => {
            println!("device_all_reduce: COMPILE: {s}");
            ExitCode::from(3)
        }
    }
}
