//! The host half of NCCL's device API (NCCL 2.28.3+, `nccl_device.h`):
//! device communicators that a user kernel takes by value
//! ([`Comm::dev_comm`](crate::Comm::dev_comm), [`DevComm`]), teams
//! ([`Team`]), the communicator's properties ([`CommProperties`], 2.29.2+)
//! and the addresses of a window in the peers' memory
//! ([`Registration::lsa_device_ptr`](crate::Registration::lsa_device_ptr)
//! and its siblings, 2.29.2+).
//!
//! NVIDIA calls the device API experimental: its structures changed in
//! every minor release from 2.28 to 2.32. This crate knows the layout of
//! each release it has read the headers of
//! ([`nccl_sys::device::LAYOUTS`]) and refuses the others
//! ([`Error::UnknownLayout`]). A kernel must be
//! compiled against the `nccl_device.h` of the libnccl it runs with: the
//! device communicator is written in that release's layout.
//!
//! Layer: on `base`, `comm` and `mem` (docs/architecture.md).

mod dev_comm;
mod query;
mod requirements;
#[cfg(nccl_fn = "ncclCommWindowRegister")]
mod window;

pub use dev_comm::{DevComm, DevCommBytes};
pub use query::{CommProperties, Team};
pub use requirements::DevCommRequirements;

use crate::base::error::{Error, Result};
use crate::base::runtime::checked_runtime;
use crate::base::version::Version;
use crate::sys;

/// The first release with the device API's host functions.
pub(crate) const DEVICE_API: Version = Version::new(2, 28, 3);
/// The first release with `ncclCommQueryProperties` and the window pointer
/// getters.
pub(crate) const DEVICE_QUERIES: Version = Version::new(2, 29, 2);

/// `Ok` when the libnccl in use is at least `since` and has function
/// `name` (found by name, or linked); else [`Error::Unsupported`].
pub(crate) fn require_device(name: &'static str, since: Version) -> Result<Version> {
    let runtime = checked_runtime()?;
    if runtime >= since && sys::available(name) {
        Ok(runtime)
    } else {
        Err(Error::Unsupported {
            api: name,
            since,
            runtime,
        })
    }
}

/// The layout of the running release, or [`Error::UnknownLayout`].
pub(crate) fn running_layout(api: &'static str) -> Result<&'static sys::device::DeviceLayout> {
    let runtime = checked_runtime()?;
    let code = runtime.code().and_then(|c| u32::try_from(c).ok());
    code.and_then(sys::device::layout_of)
        .ok_or_else(|| Error::UnknownLayout {
            api,
            runtime,
            known: known_releases(),
        })
}

/// The releases whose layouts this build knows, as text.
fn known_releases() -> String {
    sys::device::LAYOUTS
        .iter()
        .map(|l| {
            let c = l.version_code;
            format!("{}.{}.{}", c / 10000, c / 100 % 100, c % 100)
        })
        .collect::<Vec<_>>()
        .join(", ")
}
