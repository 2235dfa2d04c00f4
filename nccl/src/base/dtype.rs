//! Element types: the Rust type of a buffer decides the NCCL datatype.

use cudarc::driver::DeviceRepr;

use crate::base::version::{Version, release};
use crate::sys;

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

/// A type NCCL can move and reduce, with host conversions through `f64`
/// (for filling buffers and checking results: tests, benchmarks). Sealed:
/// implemented for `i8`, `u8`, `i32`, `u32`, `i64`, `u64`, [`f16`](struct@f16),
/// [`bf16`], `f32`, `f64`, [`F8E4M3`] and [`F8E5M2`].
///
/// ```
/// use nccl::NcclType;
/// assert_eq!(<u8 as NcclType>::from_f64(300.0), 255); // saturating, as `as`
/// assert_eq!(NcclType::to_f64(nccl::bf16::from_f32(1.5)), 1.5);
/// assert!(<i32 as NcclType>::INTEGER && !<i32 as NcclType>::UNSIGNED);
/// ```
pub trait NcclType: DeviceRepr + Copy + sealed::Sealed + 'static {
    /// The NCCL datatype.
    const DATATYPE: sys::ncclDataType_t;
    /// Short name (`f32`), for messages.
    const NAME: &'static str;
    /// The first NCCL version with this datatype.
    const SINCE: Version = Version::new(2, 0, 0);
    /// An integer type (reductions are exact, `Avg` truncates).
    const INTEGER: bool = false;
    /// An unsigned integer type.
    const UNSIGNED: bool = false;
    /// The value of this type nearest to `v` (integers: Rust's saturating
    /// `as`).
    fn from_f64(v: f64) -> Self;
    /// The value as `f64` (exact for every type here but `i64`/`u64`
    /// beyond 2^53).
    fn to_f64(self) -> f64;
}

macro_rules! int_type {
    ($t:ty, $dt:ident, $name:literal, $unsigned:expr) => {
        impl sealed::Sealed for $t {}
        impl NcclType for $t {
            const DATATYPE: sys::ncclDataType_t = sys::ncclDataType_t::$dt;
            const NAME: &'static str = $name;
            const INTEGER: bool = true;
            const UNSIGNED: bool = $unsigned;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
        }
    };
}

int_type!(i8, ncclInt8, "i8", false);
int_type!(u8, ncclUint8, "u8", true);
int_type!(i32, ncclInt32, "i32", false);
int_type!(u32, ncclUint32, "u32", true);
int_type!(i64, ncclInt64, "i64", false);
int_type!(u64, ncclUint64, "u64", true);

impl sealed::Sealed for f32 {}
impl NcclType for f32 {
    const DATATYPE: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat32;
    const NAME: &'static str = "f32";
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl sealed::Sealed for f64 {}
impl NcclType for f64 {
    const DATATYPE: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat64;
    const NAME: &'static str = "f64";
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        self
    }
}

// The 16- and 8-bit floats have inherent `from_f64`/`to_f64`; the paths below
// name them (float8's `to_f64` takes `&self`: as a method call on a value it
// would resolve to this trait's `to_f64(self)` and recurse).
macro_rules! small_float {
    ($t:ty, $dt:expr, $name:literal, $since:expr, $to:expr) => {
        impl sealed::Sealed for $t {}
        impl NcclType for $t {
            const DATATYPE: sys::ncclDataType_t = $dt;
            const NAME: &'static str = $name;
            const SINCE: Version = $since;
            fn from_f64(v: f64) -> Self {
                <$t>::from_f64(v)
            }
            fn to_f64(self) -> f64 {
                $to(self)
            }
        }
    };
}

small_float!(
    f16,
    sys::ncclDataType_t::ncclFloat16,
    "f16",
    Version::new(2, 0, 0),
    |x: f16| f16::to_f64(x)
);
small_float!(
    bf16,
    sys::ncclDataType_t(9),
    "bf16",
    since("ncclBfloat16"),
    |x: bf16| bf16::to_f64(x)
);
small_float!(
    F8E4M3,
    sys::ncclDataType_t(10),
    "f8e4m3",
    since("ncclFloat8e4m3"),
    |x: F8E4M3| F8E4M3::to_f64(&x)
);
small_float!(
    F8E5M2,
    sys::ncclDataType_t(11),
    "f8e5m2",
    since("ncclFloat8e5m2"),
    |x: F8E5M2| F8E5M2::to_f64(&x)
);
