//! `ncclConfig_t` as the libnccl in use expects it.

use crate::{CONFIG_LAYOUT, NCCL_CONFIG_INITIALIZER, NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH};
use crate::{ncclConfig_t, since};

/// `NCCL_CONFIG_INITIALIZER` as the header of release `runtime` has it: the
/// struct to pass (after setting fields) to a libnccl of that release.
///
/// For a runtime as new as this build's header or newer, that is this
/// header's [`NCCL_CONFIG_INITIALIZER`]. For an older one, `size` covers only
/// the fields that release has (per [`since`]) and `version` is that
/// release's code, exactly as its own header would fill them; the fields it
/// lacks stay at `NCCL_CONFIG_UNDEF_INT` and are not read by it.
///
/// (NCCL copies `min(size, its own sizeof)` bytes and resets fields newer
/// than `version`, so the header's struct would work too; this one is what
/// that library's own users pass.)
///
/// ```
/// let c = nccl_sys::config_for_runtime((2, 18, 3));
/// assert_eq!(c.version, 21803.min(nccl_sys::NCCL_VERSION_CODE));
/// assert_eq!(c.magic, 0xcafe_beef);
/// assert!(c.size <= std::mem::size_of::<nccl_sys::ncclConfig_t>());
/// ```
pub fn config_for_runtime(runtime: since::Release) -> ncclConfig_t {
    let mut c = NCCL_CONFIG_INITIALIZER;
    let header = (NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
    if runtime >= header {
        return c;
    }
    let full = core::mem::size_of::<ncclConfig_t>();
    let end = CONFIG_LAYOUT
        .iter()
        .filter(|(name, _, _)| since::config_field(name).is_some_and(|s| s <= runtime))
        .map(|(_, offset, size)| offset + size)
        .max()
        .unwrap_or(full);
    let align = core::mem::align_of::<ncclConfig_t>();
    c.size = end.div_ceil(align).saturating_mul(align).min(full);
    let (major, minor, patch) = runtime;
    c.version = (major * 10000 + minor * 100 + patch) as _;
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sizeof(ncclConfig_t)` of committed bindings, from bindgen's layout
    /// assertion (`[..][size_of::<ncclConfig_vN>() - 48usize]`).
    fn committed_size(release: since::Release) -> usize {
        let path = format!(
            "{}/bindings/nccl_{}_{}.rs",
            env!("CARGO_MANIFEST_DIR"),
            release.0,
            release.1
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text.find("\"Size of ncclConfig_v").unwrap();
        let rest = &text[at..];
        let rest = &rest[rest.find("() - ").unwrap() + 5..];
        rest[..rest.find("usize").unwrap()].parse().unwrap()
    }

    /// For every release older than this build's header that has committed
    /// bindings, the struct made for it has that release's own size and
    /// version code.
    #[test]
    fn config_for_an_older_runtime_is_that_runtimes_struct() {
        let header = (NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH);
        let mut checked = 0;
        for &r in since::BINDINGS.iter().filter(|r| **r < header) {
            let c = config_for_runtime(r);
            assert_eq!(c.size, committed_size(r), "{r:?}");
            assert_eq!(c.version, r.0 * 10000 + r.1 * 100 + r.2, "{r:?}");
            assert_eq!(c.magic, 0xcafe_beef);
            checked += 1;
        }
        assert_eq!(
            checked,
            since::BINDINGS.iter().filter(|r| **r < header).count()
        );
        let c = config_for_runtime(header);
        assert_eq!(c.size, core::mem::size_of::<ncclConfig_t>());
        assert_eq!(c.version, crate::NCCL_VERSION_CODE);
    }
}
