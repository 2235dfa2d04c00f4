//! Which NCCL release introduced each function, `ncclConfig_t` field, result
//! code and constant: read by `cargo xtask bindgen` from the `nccl.h` of every
//! release on PyPI from 2.18.1 to the newest, not written by hand.
//!
//! A release is `(major, minor, patch)`. "Since" is the first release on PyPI
//! whose header declares the name; NVIDIA published a few patch releases on
//! GitHub only (2.18.5, 2.19.1, …), which may have had it a little earlier.
//!
//! ```
//! use nccl_sys::since;
//! assert_eq!(since::function("ncclAlltoAll"), Some((2, 28, 3)));
//! assert_eq!(since::function("ncclCommRevoke"), Some((2, 28, 7)));
//! assert_eq!(since::config_field("graphUsageMode"), Some((2, 29, 2)));
//! assert_eq!(since::result_code("ncclTimeout"), Some((2, 30, 3)));
//! assert_eq!(since::function("ncclNoSuchThing"), None);
//! assert!(since::FLOOR <= since::NEWEST);
//! ```

include!("since_table.rs");

/// The oldest release this crate supports (the first one read).
pub const FLOOR: Release = RELEASES[0];

/// The newest release read.
pub const NEWEST: Release = RELEASES[RELEASES.len() - 1];

fn find(table: &[(&str, Release)], name: &str) -> Option<Release> {
    table.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

/// The first release that declares function `name` (`ncclAlltoAll`).
pub fn function(name: &str) -> Option<Release> {
    FUNCTIONS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| FUNCTIONS[i].1)
}

/// The first release whose `ncclConfig_t` has field `name` (`graphUsageMode`).
pub fn config_field(name: &str) -> Option<Release> {
    find(CONFIG_FIELDS, name)
}

/// The first release with result code `name` (`ncclTimeout`).
pub fn result_code(name: &str) -> Option<Release> {
    RESULT_CODES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, _, r)| *r)
}

/// The name and first release of the result code with this value.
pub fn result_code_by_value(value: u32) -> Option<(&'static str, Release)> {
    RESULT_CODES
        .iter()
        .find(|(_, v, _)| *v == value)
        .map(|(n, _, r)| (*n, *r))
}

/// The first release with constant `name`: an enumerator (`ncclFloat8e4m3`)
/// or an `NCCL_*` macro (`NCCL_WIN_REQUIRED_ALIGNMENT`).
pub fn constant(name: &str) -> Option<Release> {
    CONSTANTS
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| CONSTANTS[i].1)
}

/// The first release with `name`, whatever kind of name it is.
pub fn any(name: &str) -> Option<Release> {
    function(name)
        .or_else(|| config_field(name))
        .or_else(|| result_code(name))
        .or_else(|| constant(name))
}

/// [`constant`] in a `const` context.
pub const fn constant_const(name: &str) -> Option<Release> {
    let mut i = 0;
    while i < CONSTANTS.len() {
        if str_eq(CONSTANTS[i].0, name) {
            return Some(CONSTANTS[i].1);
        }
        i += 1;
    }
    None
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}
