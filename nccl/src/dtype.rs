//! Element types: the Rust type of a buffer decides the NCCL datatype.

use cudarc::driver::DeviceRepr;

use crate::sys;
use crate::version::{Version, release};

/// The first release with enumerator `name` (from the headers), or the
/// floor when a header never had it.
const fn since(name: &str) -> Version {
    match sys::since::constant_const(name) {
        Some(r) => release(r),
        None => release(sys::since::FLOOR),
    }
}

/// 8-bit float, e4m3 (`ncclFloat8e4m3`, NCCL 2.24.3+).
pub use float8::F8E4M3;
/// 8-bit float, e5m2 (`ncclFloat8e5m2`, NCCL 2.24.3+).
pub use float8::F8E5M2;
/// 16-bit floats (`ncclFloat16`, `ncclBfloat16`).
pub use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
}

/// A type NCCL can move and reduce. Sealed: implemented for `i8`, `u8`,
/// `i32`, `u32`, `i64`, `u64`, [`f16`](struct@f16), [`bf16`], `f32`, `f64`, [`F8E4M3`]
/// and [`F8E5M2`].
pub trait NcclType: DeviceRepr + Copy + sealed::Sealed + 'static {
    /// The NCCL datatype.
    const DATATYPE: sys::ncclDataType_t;
    /// Short name (`f32`), for messages.
    const NAME: &'static str;
    /// The first NCCL version with this datatype.
    const SINCE: Version = Version::new(2, 0, 0);
}

macro_rules! nccl_type {
    ($t:ty, $dt:ident, $name:literal) => {
        impl sealed::Sealed for $t {}
        impl NcclType for $t {
            const DATATYPE: sys::ncclDataType_t = sys::ncclDataType_t::$dt;
            const NAME: &'static str = $name;
        }
    };
}

nccl_type!(i8, ncclInt8, "i8");
nccl_type!(u8, ncclUint8, "u8");
nccl_type!(i32, ncclInt32, "i32");
nccl_type!(u32, ncclUint32, "u32");
nccl_type!(i64, ncclInt64, "i64");
nccl_type!(u64, ncclUint64, "u64");
nccl_type!(f16, ncclFloat16, "f16");
nccl_type!(f32, ncclFloat32, "f32");
nccl_type!(f64, ncclFloat64, "f64");

impl sealed::Sealed for bf16 {}
impl NcclType for bf16 {
    const DATATYPE: sys::ncclDataType_t = sys::ncclDataType_t(9);
    const NAME: &'static str = "bf16";
    const SINCE: Version = since("ncclBfloat16");
}
impl sealed::Sealed for F8E4M3 {}
impl NcclType for F8E4M3 {
    const DATATYPE: sys::ncclDataType_t = sys::ncclDataType_t(10);
    const NAME: &'static str = "f8e4m3";
    const SINCE: Version = since("ncclFloat8e4m3");
}
impl sealed::Sealed for F8E5M2 {}
impl NcclType for F8E5M2 {
    const DATATYPE: sys::ncclDataType_t = sys::ncclDataType_t(11);
    const NAME: &'static str = "f8e5m2";
    const SINCE: Version = since("ncclFloat8e5m2");
}
