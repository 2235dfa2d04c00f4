//! The argument contracts of every collective, as plain functions: each
//! returns `Ok` or the typed error the collective would return, before NCCL
//! is called. They need no GPU, so they are tested on any machine.

use crate::error::{Error, Result};

/// `root` (or `peer`) must name a rank.
pub fn rank_arg(op: &'static str, arg: &'static str, value: usize, world: usize) -> Result<()> {
    if value < world {
        Ok(())
    } else {
        Err(Error::invalid(op, arg, format!("< world ({world})"), value))
    }
}

/// Two buffers of the same length (all_reduce, broadcast, reduce at root,
/// all_to_all).
pub fn same_len(op: &'static str, send: usize, recv: usize) -> Result<()> {
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
pub fn all_gather(send: usize, recv: usize, world: usize) -> Result<()> {
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
pub fn reduce_scatter(send: usize, recv: usize, world: usize) -> Result<()> {
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
pub fn all_to_all(send: usize, recv: usize, world: usize) -> Result<usize> {
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
pub fn chunked(op: &'static str, len: usize, world: usize) -> Result<usize> {
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
pub fn rooted(
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
pub fn v_counts(
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
pub fn own_count(op: &'static str, arg: &'static str, count: usize, len: usize) -> Result<()> {
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

/// Out-of-place buffers must not overlap (NCCL's only aliasing is the exact
/// in-place layout, which the `*_in_place` calls provide).
pub fn disjoint(op: &'static str, a: (u64, usize), b: (u64, usize)) -> Result<()> {
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
