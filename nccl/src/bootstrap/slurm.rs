//! Slurm's hostlist expressions (`gpu[01-04,07]`, `a[1-2]-ib,b3`) and the
//! rendezvous port derived from the job and step ids.

use crate::base::text::quote;

/// Longest host name a hostlist may produce (DNS names have at most 253
/// characters).
pub(crate) const MAX_HOST_LEN: usize = 255;

/// Port of the rendezvous of Slurm job `job` step `step` when none is given:
/// `20000 + (job * 97 + step) mod 10000`, so in 20000–29999, below Linux's
/// default ephemeral range (32768–60999) where the kernel picks ports for
/// outgoing connections. The 10000 jobs in a row get different ports (97 and
/// 10000 share no factor), and so do the steps of one job.
pub fn slurm_port(job: u64, step: u64) -> u16 {
    let v = (u128::from(job) * 97 + u128::from(step)) % 10_000;
    20_000 + v as u16
}

/// Splits at the commas outside brackets.
fn entries(expr: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0u32, 0usize);
    for (i, c) in expr.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(format!("nested '[' at {i}")),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(format!("']' without '[' at {i}")),
            ',' if depth == 0 => {
                out.push(&expr[start..i]);
                start = i + 1;
            }
            c if c.is_whitespace() || c.is_control() => {
                return Err(format!("unexpected {c:?} at {i}"));
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("'[' without ']'".into());
    }
    out.push(&expr[start..]);
    if out.iter().any(|e| e.is_empty()) {
        return Err("empty host name".into());
    }
    Ok(out)
}

/// One piece of a host entry: text, or the numbers of a bracket group.
enum Part<'a> {
    Text(&'a str),
    /// (low, high, zero-padded width) ranges.
    Ranges(Vec<(u64, u64, usize)>),
}

fn parts(entry: &str) -> Result<Vec<Part<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = entry;
    while let Some(open) = rest.find('[') {
        if open > 0 {
            out.push(Part::Text(&rest[..open]));
        }
        let close = rest[open..].find(']').ok_or("'[' without ']'")? + open;
        let mut ranges = Vec::new();
        for item in rest[open + 1..close].split(',') {
            let (lo, hi) = item.split_once('-').unwrap_or((item, item));
            let num = |s: &str| -> Result<u64, String> {
                if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("{} is not a number or a range N-M", quote(item)));
                }
                s.parse()
                    .map_err(|_| format!("{} is not a number", quote(s)))
            };
            let (l, h) = (num(lo)?, num(hi)?);
            if l > h {
                return Err(format!("range {} runs backwards", quote(item)));
            }
            ranges.push((l, h, lo.len()));
        }
        out.push(Part::Ranges(ranges));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        out.push(Part::Text(rest));
    }
    Ok(out)
}

fn padded(v: u64, width: usize) -> String {
    format!("{v:0width$}")
}

/// The first host of a hostlist expression (what Slurm lists first, and
/// where it starts task 0 of a block distribution).
///
/// # Errors
/// Why the expression is malformed, or that the host name would be longer
/// than [`MAX_HOST_LEN`].
pub(crate) fn hostlist_first(expr: &str) -> Result<String, String> {
    let first = entries(expr)?[0];
    let mut host = String::new();
    for p in parts(first)? {
        match p {
            Part::Text(t) => host.push_str(t),
            Part::Ranges(r) => {
                let (l, _, w) = r[0];
                host.push_str(&padded(l, w));
            }
        }
        if host.len() > MAX_HOST_LEN {
            return Err(format!(
                "its first host name is longer than {MAX_HOST_LEN} characters"
            ));
        }
    }
    Ok(host)
}

/// Every host of a hostlist expression, in Slurm's order: at most
/// `max_hosts` of them, at most `max_bytes` of host names in all, each at
/// most [`MAX_HOST_LEN`]; the bounds hold before anything is allocated
/// beyond them.
///
/// # Errors
/// Why the expression is malformed, or which bound it exceeds.
#[cfg(test)]
pub(crate) fn hostlist_expand(
    expr: &str,
    max_hosts: usize,
    max_bytes: usize,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for e in entries(expr)? {
        let mut hosts = vec![String::new()];
        for p in parts(e)? {
            // the bytes of `hosts` once this part is added
            let mut held = 0usize;
            let mut add = |h: &str| -> Result<(), String> {
                if h.len() > MAX_HOST_LEN {
                    return Err(format!("a host name longer than {MAX_HOST_LEN} characters"));
                }
                held += h.len();
                if bytes + held > max_bytes {
                    return Err(format!("more than {max_bytes} bytes of host names"));
                }
                Ok(())
            };
            match p {
                Part::Text(t) => {
                    for h in &mut hosts {
                        if h.len() + t.len() > MAX_HOST_LEN {
                            return Err(format!(
                                "a host name longer than {MAX_HOST_LEN} characters"
                            ));
                        }
                        h.push_str(t);
                        add(h)?;
                    }
                }
                Part::Ranges(r) => {
                    let mut next = Vec::new();
                    for h in &hosts {
                        for &(l, hi, w) in &r {
                            for v in l..=hi {
                                if out.len() + next.len() >= max_hosts {
                                    return Err(format!("more than {max_hosts} hosts"));
                                }
                                let n = format!("{h}{}", padded(v, w));
                                add(&n)?;
                                next.push(n);
                            }
                        }
                    }
                    hosts = next;
                }
            }
        }
        if out.len() + hosts.len() > max_hosts {
            return Err(format!("more than {max_hosts} hosts"));
        }
        bytes += hosts.iter().map(String::len).sum::<usize>();
        out.extend(hosts);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        let cases: &[(&str, &[&str])] = &[
            (
                "gpu[01-04,07]",
                &["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"],
            ),
            ("a[1-2]-ib,b3", &["a1-ib", "a2-ib", "b3"]),
            ("node1", &["node1"]),
            ("n[8-11]", &["n8", "n9", "n10", "n11"]),
            ("n[008-010]", &["n008", "n009", "n010"]),
            ("r[1-2]n[1-2]", &["r1n1", "r1n2", "r2n1", "r2n2"]),
            ("x[3],y", &["x3", "y"]),
            ("[1-2]", &["1", "2"]),
        ];
        for (e, want) in cases {
            assert_eq!(hostlist_expand(e, 100, 10_000).unwrap(), *want, "{e}");
            assert_eq!(hostlist_first(e).unwrap(), want[0], "{e}");
        }
    }

    #[test]
    fn malformed_expressions_are_errors() {
        for e in [
            "", "a,", ",a", "a[1-2", "a]1", "a[]", "a[2-1]", "a[x]", "a[1-]", "a [1]", "a[[1]]",
            "a[1-2]\n",
        ] {
            assert!(hostlist_first(e).is_err(), "{e:?}");
        }
        assert!(hostlist_expand("n[0-99999999]", 1000, 1 << 20).is_err());
        assert_eq!(hostlist_first("n[0-99999999]").unwrap(), "n0");
    }

    #[test]
    fn output_bytes_are_bounded_not_only_hosts() {
        // a million hosts of 130 KB each: refused before 130 GB are made,
        // with an error that does not quote the expression
        let long = format!("{}[0-1048575]", "x".repeat(130_000));
        for e in [
            hostlist_expand(&long, 1 << 20, 1 << 20).unwrap_err(),
            hostlist_first(&long).unwrap_err(),
        ] {
            assert!(e.contains("longer than 255"), "{e}");
            assert!(e.len() < 200, "{} bytes of error", e.len());
        }
        // names within the limit, but too many bytes in all
        let wide = format!("{}[0-1048575]", "y".repeat(200));
        let e = hostlist_expand(&wide, 1 << 20, 1 << 20).unwrap_err();
        assert!(e.contains("more than 1048576 bytes"), "{e}");
        // a bad item quotes a bounded piece of itself
        let bad = format!("n[{}]", "9".repeat(100_000));
        let e = hostlist_first(&bad).unwrap_err();
        assert!(e.len() < 200, "{} bytes of error", e.len());
    }

    #[test]
    fn ports_are_in_range_and_spread() {
        assert_eq!(slurm_port(0, 0), 20000);
        assert_eq!(slurm_port(1234, 0), 20000 + 9698); // 1234 * 97 = 119698
        assert_eq!(slurm_port(1234, 1), slurm_port(1234, 0) + 1);
        let ports: std::collections::HashSet<u16> = (5_000_000..5_010_000u64)
            .map(|j| slurm_port(j, 0))
            .collect();
        assert_eq!(ports.len(), 10_000);
        for (j, s) in [(u64::MAX, u64::MAX), (u32::MAX as u64, 4294967294)] {
            assert!((20000..30000).contains(&slurm_port(j, s)));
        }
    }
}
