//! The result check: rank `r` contributes `r % 4 + 1` in every element; one
//! more operation on fresh data is compared, on the host, with what the
//! collective must produce.

use nccl::ReduceOp;

use crate::elem::Elem;
use crate::options::Opts;
use crate::timing::{Buffers, Rank, issue_all};
use nccl::{DeviceBuffer, DeviceBufferMut};

/// What rank `rank` puts in every element of its input.
pub fn contribution(rank: usize) -> f64 {
    (rank % 4 + 1) as f64
}

/// Refills the inputs, runs the collective once more and counts the wrong
/// elements over the ranks of this process.
#[allow(clippy::too_many_arguments)]
pub fn check_once<T: Elem, B: DeviceBuffer<T> + DeviceBufferMut<T>>(
    o: &Opts,
    ranks: &[Rank],
    bufs: &mut Buffers<B>,
    coll: &str,
    world: usize,
    count: usize,
    in_place: bool,
    op: ReduceOp<'_>,
) -> nccl::Result<i64> {
    for (i, r) in ranks.iter().enumerate() {
        let v = T::from_f64(contribution(r.comm.rank()));
        let (send, recv) = &mut bufs[i];
        r.stream.memcpy_htod(&vec![v; send.len()], send)?;
        if in_place {
            r.stream.memcpy_htod(&vec![v; recv.len()], recv)?;
        }
    }
    issue_all::<T, B>(o, ranks, bufs, coll, in_place, op)?;
    let mut wrong = 0;
    for (i, r) in ranks.iter().enumerate() {
        let got = r.stream.clone_dtoh(&bufs[i].1)?;
        r.stream.synchronize()?;
        wrong += count_wrong::<T>(
            coll,
            &o.op,
            o.root,
            r.comm.rank(),
            world,
            count,
            in_place,
            &got,
        );
    }
    Ok(wrong)
}

/// Elements of `got` (this rank's output) that differ from the expected
/// result when rank `r` contributed `r % 4 + 1` everywhere.
#[allow(clippy::too_many_arguments)]
pub fn count_wrong<T: Elem>(
    coll: &str,
    op: &str,
    root: usize,
    rank: usize,
    world: usize,
    count: usize,
    in_place: bool,
    got: &[T],
) -> i64 {
    let v = contribution;
    let red = || {
        let xs = (0..world).map(v);
        match op {
            "sum" => xs.sum::<f64>(),
            "prod" => xs.product(),
            "max" => xs.fold(f64::MIN, f64::max),
            "min" => xs.fold(f64::MAX, f64::min),
            _ => (0..world).map(v).sum::<f64>() / world as f64,
        }
    };
    let want: Vec<f64> = match coll {
        "all_reduce" => vec![red(); count],
        "reduce" if rank == root => vec![red(); count],
        "reduce" => return 0,
        "broadcast" => vec![v(root); count],
        "all_gather" => (0..world).flat_map(|r| vec![v(r); count]).collect(),
        "reduce_scatter" if in_place => {
            let mut w = vec![f64::NAN; count * world];
            w[rank * count..(rank + 1) * count].fill(red());
            w
        }
        "reduce_scatter" => vec![red(); count],
        "all_to_all" => (0..world).flat_map(|r| vec![v(r); count / world]).collect(),
        "sendrecv" => vec![v((rank + world - 1) % world); count],
        "gather" if rank == root => (0..world).flat_map(|r| vec![v(r); count]).collect(),
        "gather" => return 0,
        "scatter" => vec![v(root); count],
        _ => return 0,
    };
    got.iter()
        .zip(&want)
        .filter(|(g, w)| {
            !w.is_nan() && (T::from_f64(**w).to_f64() - g.to_f64()).abs() > 1e-2 * w.abs().max(1.0)
        })
        .count() as i64
        + (want.len() as i64 - got.len().min(want.len()) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nccl::F8E4M3;

    #[test]
    fn wrong_counts_detect_errors() {
        // 2 ranks, rank r contributes r % 4 + 1: sums to 3
        let good = vec![3.0f32; 4];
        assert_eq!(
            count_wrong::<f32>("all_reduce", "sum", 0, 0, 2, 4, false, &good),
            0
        );
        let mut bad = good.clone();
        bad[2] = 2.0;
        assert_eq!(
            count_wrong::<f32>("all_reduce", "sum", 0, 0, 2, 4, false, &bad),
            1
        );
        // a short result counts its missing elements
        assert_eq!(
            count_wrong::<f32>("all_reduce", "sum", 0, 0, 2, 4, false, &good[..1]),
            3
        );
        assert_eq!(
            count_wrong::<f32>(
                "all_gather",
                "sum",
                0,
                1,
                2,
                2,
                false,
                &[1.0, 1.0, 2.0, 2.0]
            ),
            0
        );
        assert_eq!(
            count_wrong::<f32>("sendrecv", "sum", 0, 0, 2, 2, false, &[2.0, 2.0]),
            0
        );
        // avg of 1 and 2 in fp8: 1.5 is exact
        let avg = [F8E4M3::from_f64(1.5), F8E4M3::from_f64(1.0)];
        assert_eq!(
            count_wrong::<F8E4M3>("all_reduce", "avg", 0, 0, 2, 2, false, &avg),
            1
        );
    }
}
