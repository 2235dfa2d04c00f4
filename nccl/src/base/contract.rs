//! The argument contracts of every collective, as plain functions: each
//! returns `Ok` or the typed error the collective would return, before NCCL
//! is called. They need no GPU, so they are tested on any machine.

use crate::base::error::{Error, Result};

/// `root` (or `peer`) must name a rank.
pub(crate) fn rank_arg(
    op: &'static str,
    arg: &'static str,
    value: usize,
    world: usize,
) -> Result<()> {
    if value < world {
        Ok(())
    } else {
        Err(Error::invalid(op, arg, format!("< world ({world})"), value))
    }
}

/// Member `rank` of a team of `n_ranks` ranks `stride` apart in which this
/// rank is `own` (a caller may build any `Team`): in range, and what NCCL
/// computes from it in `int` (`base + (rank - own) * stride`, where `base`
/// is this rank's place in the space the answer is in) does not overflow.
/// Returns that place (negative, or past the space's end, for a member
/// outside it).
pub(crate) fn team_member(
    op: &'static str,
    (n_ranks, own, stride): (usize, usize, usize),
    rank: usize,
    base: usize,
) -> Result<i64> {
    rank_arg(op, "rank", rank, n_ranks)?;
    let team = || format!("{n_ranks} ranks, this rank {own}, stride {stride}");
    let int = |v: usize| i64::try_from(v).ok().filter(|&v| v <= i64::from(i32::MAX));
    let (Some(n), Some(o), Some(s), Some(b)) = (int(n_ranks), int(own), int(stride), int(base))
    else {
        return Err(Error::invalid(
            op,
            "team",
            "values of at most i32::MAX",
            team(),
        ));
    };
    let r = rank as i64; // < n_ranks <= i32::MAX
    if o >= n {
        return Err(Error::invalid(
            op,
            "team",
            "this rank below the team's size",
            team(),
        ));
    }
    // each factor within an int, so the product within an i64
    let step = (r - o) * s;
    let place = b + step;
    let ints = i64::from(i32::MIN)..=i64::from(i32::MAX);
    if !ints.contains(&step) || !ints.contains(&place) {
        return Err(Error::invalid(
            op,
            "team",
            format!("a team whose member {rank} is an int away from here ({base})"),
            team(),
        ));
    }
    Ok(place)
}

/// Two buffers of the same length (all_reduce, broadcast, reduce at root,
/// all_to_all).
pub(crate) fn same_len(op: &'static str, send: usize, recv: usize) -> Result<()> {
    if send == recv {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            "recv.len()",
            format!("send.len() ({send})"),
            recv,
        ))
    }
}

/// all_gather: `recv == send × world`.
pub(crate) fn all_gather(send: usize, recv: usize, world: usize) -> Result<()> {
    match send.checked_mul(world) {
        Some(want) if want == recv => Ok(()),
        _ => Err(Error::invalid(
            "all_gather",
            "recv.len()",
            format!("send.len() × world = {send} × {world}"),
            recv,
        )),
    }
}

/// reduce_scatter: `send == recv × world`.
pub(crate) fn reduce_scatter(send: usize, recv: usize, world: usize) -> Result<()> {
    match recv.checked_mul(world) {
        Some(want) if want == send => Ok(()),
        _ => Err(Error::invalid(
            "reduce_scatter",
            "send.len()",
            format!("recv.len() × world = {recv} × {world}"),
            send,
        )),
    }
}

/// A communicator has at least one rank; `world` 0 is no world.
fn world_ok(op: &'static str, world: usize) -> Result<usize> {
    if world == 0 {
        Err(Error::invalid(op, "world", "at least 1 rank", 0))
    } else {
        Ok(world)
    }
}

/// all_to_all: equal lengths, divisible by `world`; returns the per-peer count.
pub(crate) fn all_to_all(send: usize, recv: usize, world: usize) -> Result<usize> {
    same_len("all_to_all", send, recv)?;
    let world = world_ok("all_to_all", world)?;
    if send % world != 0 {
        return Err(Error::invalid(
            "all_to_all",
            "send.len()",
            format!("a multiple of world ({world})"),
            send,
        ));
    }
    Ok(send / world)
}

/// In-place all_gather / reduce_scatter: the buffer holds `world` equal
/// chunks; returns the chunk length.
pub(crate) fn chunked(op: &'static str, len: usize, world: usize) -> Result<usize> {
    let world = world_ok(op, world)?;
    if len % world != 0 {
        return Err(Error::invalid(
            op,
            "buf.len()",
            format!("a multiple of world ({world})"),
            len,
        ));
    }
    Ok(len / world)
}

/// gather (`recv == send × world` at the root) and scatter (`send == recv ×
/// world` at the root): `full` is the root's buffer, if given.
pub(crate) fn rooted(
    op: &'static str,
    part: usize,
    full: Option<usize>,
    is_root: bool,
    world: usize,
) -> Result<()> {
    match (is_root, full) {
        (true, None) => Err(Error::invalid(
            op,
            "root buffer",
            "Some(buffer) at the root",
            "None",
        )),
        (true, Some(full)) => match part.checked_mul(world) {
            Some(want) if want == full => Ok(()),
            _ => Err(Error::invalid(
                op,
                "root buffer length",
                format!("{part} × world ({world})"),
                full,
            )),
        },
        (false, _) => Ok(()),
    }
}

/// Per-rank counts of a v-collective: one per rank, summing to `total`, with
/// this rank's own count equal to `own` (when given). Returns the offsets.
pub(crate) fn v_counts(
    op: &'static str,
    arg: &'static str,
    counts: &[usize],
    world: usize,
    total: usize,
) -> Result<Vec<usize>> {
    if counts.len() != world {
        return Err(Error::invalid(
            op,
            arg,
            format!("{world} counts (one per rank)"),
            format!("{} counts", counts.len()),
        ));
    }
    let mut offsets = Vec::with_capacity(world);
    let mut sum = 0usize;
    for &c in counts {
        offsets.push(sum);
        sum = sum.checked_add(c).ok_or_else(|| {
            Error::invalid(
                op,
                arg,
                "counts whose sum fits in usize",
                "an overflowing sum",
            )
        })?;
    }
    if sum != total {
        return Err(Error::invalid(
            op,
            arg,
            format!("counts summing to the buffer length ({total})"),
            format!("a sum of {sum}"),
        ));
    }
    Ok(offsets)
}

/// A v-collective's count for this rank must match its own buffer.
pub(crate) fn own_count(
    op: &'static str,
    arg: &'static str,
    count: usize,
    len: usize,
) -> Result<()> {
    if count == len {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            arg,
            format!("counts[rank] ({count})"),
            len,
        ))
    }
}

/// What a rank sends itself in an all-to-all-v is what it receives from
/// itself: `send_counts[rank] == recv_counts[rank]` (the one pair of counts
/// a rank can check alone).
pub(crate) fn own_pair(op: &'static str, sent: usize, received: usize) -> Result<()> {
    if sent == received {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            "recv_counts",
            format!("recv_counts[rank] equal to send_counts[rank] ({sent})"),
            received,
        ))
    }
}

/// Out-of-place buffers must not overlap (NCCL's only aliasing is the exact
/// in-place layout, which the `*_in_place` calls provide).
pub(crate) fn disjoint(op: &'static str, a: (u64, usize), b: (u64, usize)) -> Result<()> {
    let (a0, a1) = (a.0, a.0.saturating_add(a.1 as u64));
    let (b0, b1) = (b.0, b.0.saturating_add(b.1 as u64));
    if a.1 == 0 || b.1 == 0 || a1 <= b0 || b1 <= a0 {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            "recv",
            "a buffer not overlapping send (use the _in_place form)",
            "overlapping buffers",
        ))
    }
}

/// A group's kinds of calls: collectives (bit 0), point-to-point calls
/// (bit 1), of communicators of 2+ ranks.
pub(crate) const GROUP_COLL: u8 = 1;
/// See [`GROUP_COLL`].
pub(crate) const GROUP_P2P: u8 = 2;

/// The first release seen to run a group that mixes collectives and
/// point-to-point calls of 2+ ranks: before it, NCCL faulted on one (an
/// illegal address in its kernel: 2.18.3 – 2.22.3 with two ranks, 2.22.3's
/// rework of how such a group becomes one launch included).
pub(crate) const MIXED_GROUPS_SINCE: crate::base::version::Version =
    crate::base::version::Version::new(2, 23, 4);

/// Whether the call `op` is a point-to-point call, or a collective this
/// crate makes of them on the releases [`group_kinds`] restricts.
fn is_p2p(op: &str) -> bool {
    matches!(
        op,
        "send" | "recv" | "all_to_all" | "all_to_all_v" | "gather" | "scatter"
    )
}

/// A group that already holds calls of the kinds `seen` takes the call `op`:
/// the kinds it then holds, or `Unsupported` where mixing collectives and
/// point-to-point calls is unsafe on `runtime`. Communicators of one rank do
/// not count (NCCL copies their collectives without a kernel plan).
pub(crate) fn group_kinds(
    seen: u8,
    op: &str,
    ranks: usize,
    runtime: crate::base::version::Version,
) -> Result<u8> {
    if ranks < 2 || runtime >= MIXED_GROUPS_SINCE {
        return Ok(seen);
    }
    let kind = if is_p2p(op) { GROUP_P2P } else { GROUP_COLL };
    if seen & !kind != 0 {
        return Err(Error::Unsupported {
            api: "collectives and point-to-point calls in one group",
            since: MIXED_GROUPS_SINCE,
            runtime,
        });
    }
    Ok(seen | kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_groups_refused_before_2_23_4() {
        use crate::base::version::Version;
        let old = Version::new(2, 21, 5);
        let coll = group_kinds(0, "all_gather_v", 2, old).unwrap();
        assert_eq!(group_kinds(coll, "all_reduce", 2, old).unwrap(), GROUP_COLL);
        match group_kinds(coll, "all_to_all", 2, old) {
            Err(Error::Unsupported { since, runtime, .. }) => {
                assert_eq!((since, runtime), (MIXED_GROUPS_SINCE, old))
            }
            other => panic!("{other:?}"),
        }
        let p2p = group_kinds(0, "send", 4, old).unwrap();
        assert!(group_kinds(p2p, "broadcast", 4, old).is_err());
        for op in ["recv", "all_to_all_v", "gather", "scatter"] {
            assert_eq!(group_kinds(p2p, op, 4, old).unwrap(), GROUP_P2P, "{op}");
        }
        // one rank, or a release that runs such groups: anything goes
        assert_eq!(group_kinds(coll, "send", 1, old).unwrap(), coll);
        assert!(group_kinds(coll, "send", 2, MIXED_GROUPS_SINCE).is_ok());
        assert!(group_kinds(coll, "send", 2, Version::new(2, 30, 7)).is_ok());
    }

    #[test]
    fn team_members_stay_within_an_int() {
        let max = i32::MAX as usize;
        assert_eq!(team_member("t", (8, 2, 1), 5, 2).unwrap(), 5);
        assert_eq!(team_member("t", (4, 1, 8), 3, 9).unwrap(), 25);
        assert_eq!(team_member("t", (4, 3, 8), 0, 25).unwrap(), 1);
        // outside the answer's space, not an error (an LSA rank of none)
        assert_eq!(team_member("t", (4, 3, 8), 0, 3).unwrap(), -21);
        // out of the team
        assert!(team_member("t", (4, 0, 1), 4, 0).is_err());
        // 4 * 2^30 overflows NCCL's int
        assert!(team_member("t", (5, 0, 1 << 30), 4, 0).is_err());
        assert!(team_member("t", (5, 4, 1 << 30), 0, 0).is_err());
        // the sum past i32::MAX
        assert!(team_member("t", (2, 0, max), 1, 1).is_err());
        assert_eq!(team_member("t", (2, 0, max - 1), 1, 1).unwrap(), max as i64);
        // fields NCCL cannot hold, or a team without this rank
        assert!(team_member("t", (max + 1, 0, 1), 1, 0).is_err());
        assert!(team_member("t", (4, 0, max + 1), 1, 0).is_err());
        assert!(team_member("t", (4, 0, 1), 1, max + 1).is_err());
        assert!(team_member("t", (4, 4, 1), 1, 0).is_err());
        assert!(team_member("t", (usize::MAX, usize::MAX - 1, usize::MAX), 3, 0).is_err());
    }

    #[test]
    fn messages_name_the_contract() {
        let e = all_gather(10, 30, 4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "all_gather: invalid recv.len(): expected send.len() × world = 10 × 4, got 30"
        );
    }

    #[test]
    fn length_contracts() {
        assert!(same_len("all_reduce", 5, 5).is_ok());
        assert!(same_len("all_reduce", 5, 4).is_err());
        assert!(all_gather(3, 12, 4).is_ok());
        assert!(all_gather(3, 11, 4).is_err());
        assert!(
            all_gather(usize::MAX, 0, 2).is_err(),
            "overflow is an error, not a wrap"
        );
        assert!(reduce_scatter(12, 3, 4).is_ok());
        assert!(reduce_scatter(12, 4, 4).is_err());
        assert_eq!(all_to_all(12, 12, 4).unwrap(), 3);
        assert!(all_to_all(12, 8, 4).is_err());
        assert!(all_to_all(10, 10, 4).is_err());
        assert_eq!(chunked("all_gather_in_place", 8, 4).unwrap(), 2);
        assert!(chunked("all_gather_in_place", 9, 4).is_err());
        assert!(rank_arg("broadcast", "root", 3, 4).is_ok());
        let e = rank_arg("broadcast", "root", 4, 4).unwrap_err();
        assert!(matches!(
            e,
            Error::InvalidArgument {
                op: "broadcast",
                arg: "root",
                ..
            }
        ));
        assert!(rooted("gather", 3, Some(12), true, 4).is_ok());
        assert!(rooted("gather", 3, Some(11), true, 4).is_err());
        assert!(rooted("gather", 3, None, true, 4).is_err());
        assert!(rooted("gather", 3, None, false, 4).is_ok());
        assert_eq!(
            v_counts("all_gather_v", "counts", &[1, 2, 3], 3, 6).unwrap(),
            vec![0, 1, 3]
        );
        assert!(v_counts("all_gather_v", "counts", &[1, 2], 3, 3).is_err());
        assert!(v_counts("all_gather_v", "counts", &[1, 2, 3], 3, 7).is_err());
        assert!(v_counts("all_gather_v", "counts", &[usize::MAX, 1, 0], 3, 0).is_err());
        assert!(disjoint("all_reduce", (0x1000, 0x100), (0x1100, 0x100)).is_ok());
        assert!(disjoint("all_reduce", (0x1000, 0x101), (0x1100, 0x100)).is_err());
        assert!(disjoint("all_reduce", (0x1000, 0x100), (0x1000, 0x100)).is_err());
    }

    #[test]
    fn own_pair_must_match() {
        assert!(own_pair("all_to_all_v", 0, 0).is_ok());
        assert!(own_pair("all_to_all_v", 7, 7).is_ok());
        match own_pair("all_to_all_v", 7, 6) {
            Err(Error::InvalidArgument { op, arg, .. }) => {
                assert_eq!((op, arg), ("all_to_all_v", "recv_counts"))
            }
            other => panic!("{other:?}"),
        }
    }

    /// World 0 is a typed error in every public contract, never a division by
    /// zero.
    #[test]
    fn world_zero_is_an_error() {
        assert!(matches!(
            all_to_all(8, 8, 0),
            Err(Error::InvalidArgument { arg: "world", .. })
        ));
        assert!(matches!(
            chunked("all_gather_in_place", 8, 0),
            Err(Error::InvalidArgument { arg: "world", .. })
        ));
        assert!(all_gather(8, 8, 0).is_err());
        assert!(reduce_scatter(8, 8, 0).is_err());
        assert!(rank_arg("send", "peer", 0, 0).is_err());
        assert!(v_counts("all_gather_v", "counts", &[], 0, 0).is_ok());
        assert!(rooted("gather", 4, Some(4), true, 0).is_err());
    }
}
