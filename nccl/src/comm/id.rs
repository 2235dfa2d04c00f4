//! The unique id that ties the ranks of one communicator together.

use std::fmt;
use std::str::FromStr;

use crate::base::error::{Error, Result};
use crate::sys;

/// Bytes in a unique id (`NCCL_UNIQUE_ID_BYTES`).
pub const UNIQUE_ID_BYTES: usize = sys::NCCL_UNIQUE_ID_BYTES as usize;

/// An NCCL unique id: made by one rank ([`UniqueId::new`]), sent to every
/// other rank (as bytes or hex text), and passed to
/// [`Comm::init_rank`](crate::Comm::init_rank) by all of them.
///
/// It is a bearer token: it holds the root's address and a secret, and
/// anyone holding it can join the communicator. `Debug` therefore prints only
/// a short fingerprint; `Display` prints all of it, as hex, for transport.
///
/// ```
/// let id = nccl::UniqueId::new()?;
/// let text = id.to_string(); // 256 hex digits
/// let back: nccl::UniqueId = text.parse()?;
/// assert_eq!(back, id);
/// assert_eq!(nccl::UniqueId::from_bytes(id.as_bytes())?, id);
/// # Ok::<(), nccl::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UniqueId(sys::ncclUniqueId);

impl UniqueId {
    /// A fresh id (`ncclGetUniqueId`). Needs no GPU.
    ///
    /// # Errors
    /// NCCL's error, e.g. when it finds no network interface to bootstrap on.
    pub fn new() -> Result<UniqueId> {
        let mut id = sys::ncclUniqueId::default();
        // SAFETY: ncclGetUniqueId fills the 128-byte struct it is given.
        unsafe { nccl!(ncclGetUniqueId(&mut id)) }?;
        Ok(UniqueId(id))
    }

    /// The 128 raw bytes.
    pub fn as_bytes(&self) -> &[u8; UNIQUE_ID_BYTES] {
        // SAFETY: ncclUniqueId is a repr(C) struct of exactly 128 c_char
        // (checked by bindgen's layout assertions), with the alignment of u8.
        unsafe { &*(&self.0 as *const sys::ncclUniqueId as *const [u8; UNIQUE_ID_BYTES]) }
    }

    /// An id from exactly 128 bytes (as sent by another rank).
    ///
    /// # Errors
    /// [`Error::InvalidUniqueId`] naming the length when it is not 128.
    pub fn from_bytes(bytes: &[u8]) -> Result<UniqueId> {
        if bytes.len() != UNIQUE_ID_BYTES {
            return Err(Error::InvalidUniqueId {
                reason: format!("expected {UNIQUE_ID_BYTES} bytes, got {}", bytes.len()),
            });
        }
        let mut id = sys::ncclUniqueId::default();
        for (d, s) in id.internal.iter_mut().zip(bytes) {
            *d = *s as core::ffi::c_char;
        }
        Ok(UniqueId(id))
    }

    /// The raw struct, for nccl-sys calls.
    pub fn as_raw(&self) -> &sys::ncclUniqueId {
        &self.0
    }

    /// Wraps a raw struct.
    pub fn from_raw(raw: sys::ncclUniqueId) -> UniqueId {
        UniqueId(raw)
    }
}

impl fmt::Display for UniqueId {
    /// All 128 bytes as 256 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for UniqueId {
    /// A fingerprint, not the id: the id is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // FNV-1a: enough to tell two ids apart in a log, useless to join.
        let h = self
            .as_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
            });
        write!(
            f,
            "UniqueId(fingerprint {:08x}, 128 bytes hidden)",
            h as u32
        )
    }
}

impl FromStr for UniqueId {
    type Err = Error;
    /// Parses 256 hex digits (either case), as `Display` writes them.
    fn from_str(s: &str) -> Result<UniqueId> {
        let s = s.trim();
        if s.len() != UNIQUE_ID_BYTES * 2 {
            return Err(Error::InvalidUniqueId {
                reason: format!(
                    "expected {} hex digits, got {} characters",
                    UNIQUE_ID_BYTES * 2,
                    s.len()
                ),
            });
        }
        let digit = |i: usize, c: u8| -> Result<u8> {
            (c as char)
                .to_digit(16)
                .map(|d| d as u8)
                .ok_or_else(|| Error::InvalidUniqueId {
                    reason: format!(
                        "character {:?} at position {i} is not a hex digit",
                        c as char
                    ),
                })
        };
        let b = s.as_bytes();
        let mut out = [0u8; UNIQUE_ID_BYTES];
        for (i, o) in out.iter_mut().enumerate() {
            *o = digit(2 * i, b[2 * i])? << 4 | digit(2 * i + 1, b[2 * i + 1])?;
        }
        UniqueId::from_bytes(&out)
    }
}

/// A channel over which rank 0 hands the unique id(s) to every rank. Bring
/// your own (an existing key-value store, MPI) by implementing it; this crate
/// has `bootstrap::TcpBootstrap` and `bootstrap::StoreBootstrap` (feature
/// `bootstrap`).
pub trait Bootstrap {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world_size(&self) -> usize;
    /// Rank 0 passes `Some(ids)` and every other rank `None`; all get rank
    /// 0's ids back.
    ///
    /// # Errors
    /// Whatever the channel fails with; implementations should have
    /// deadlines.
    fn share_ids(&mut self, ids: Option<Vec<UniqueId>>) -> Result<Vec<UniqueId>>;
}
