//! The rendezvous's shared secret: bytes that never show in `Debug` output
//! and are zeroed when dropped.

use zeroize::Zeroizing;

/// Fewest bytes a shared secret may have. Rank 0's proof of the secret can
/// be captured by anyone on the network path and guessed at offline; the
/// key derivation (Argon2id) makes each guess cost tens of milliseconds, and
/// this floor keeps the obviously guessable out. Use random bytes:
/// `head -c 32 /dev/urandom | base64`.
pub const MIN_SECRET_LEN: usize = 16;

/// A shared secret (the TCP rendezvous's `NCCL_RS_SECRET`): any bytes, at
/// least [`MIN_SECRET_LEN`] of them where a rendezvous uses it. `Debug`
/// shows `Secret(<redacted>)`; every copy is zeroed when dropped (the bytes
/// it was made from, and the process's environment, are the caller's).
///
/// ```
/// let s = nccl::bootstrap::Secret::from("correct horse battery staple");
/// assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
/// assert_eq!(s.expose(), b"correct horse battery staple");
/// ```
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// The secret in `NCCL_RS_SECRET` (its bytes, any value), `None` when
    /// the variable is unset.
    pub fn from_env() -> Option<Secret> {
        std::env::var_os("NCCL_RS_SECRET").map(|v| Secret::from(v.into_encoded_bytes()))
    }

    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Takes the bytes (no copy is left behind).
impl From<Vec<u8>> for Secret {
    fn from(v: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(v))
    }
}

/// Takes the string's bytes (no copy is left behind).
impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret::from(s.into_bytes())
    }
}

impl From<&[u8]> for Secret {
    fn from(b: &[u8]) -> Secret {
        Secret::from(b.to_vec())
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret::from(s.as_bytes())
    }
}
