//! One rank of a TCP rendezvous, as its own process, for the bootstrap tests:
//! `rendezvous-peer ADDR RANK WORLD SECRET TIMEOUT_MS NIDS`. Rank 0 makes the
//! ids. Prints `IDS <hex>,<hex>…` or `ERR <error>`; exits 0 or 1.

use std::time::Duration;

use nccl::{TcpBootstrap, UniqueId};

fn main() -> std::process::ExitCode {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 6 {
        eprintln!("usage: rendezvous-peer ADDR RANK WORLD SECRET TIMEOUT_MS NIDS");
        return std::process::ExitCode::from(2);
    }
    let (rank, world, ms, n): (usize, usize, u64, usize) = (
        a[1].parse().unwrap(),
        a[2].parse().unwrap(),
        a[4].parse().unwrap(),
        a[5].parse().unwrap(),
    );
    let r = (|| -> nccl::Result<Vec<UniqueId>> {
        let mut b = TcpBootstrap::new(
            &a[0],
            rank,
            world,
            a[3].as_bytes(),
            Duration::from_millis(ms),
        )?;
        if rank == 0 {
            let ids = (0..n)
                .map(|_| UniqueId::new())
                .collect::<nccl::Result<Vec<_>>>()?;
            b.share_n_ids(n, Some(ids))
        } else {
            b.share_n_ids(n, None)
        }
    })();
    match r {
        Ok(ids) => {
            println!(
                "IDS {}",
                ids.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            );
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            println!("ERR {e:?}");
            std::process::ExitCode::FAILURE
        }
    }
}
