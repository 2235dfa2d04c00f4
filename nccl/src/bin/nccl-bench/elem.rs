//! The element types the benchmark runs (their host conversions through
//! `f64` are the library's `NcclType::from_f64`/`to_f64`); the names `-d`
//! accepts are in `options`.

use nccl::NcclType;

/// An element type the benchmark can allocate and fill: the library's
/// [`NcclType`] (which has the host conversions through `f64`) with what
/// cudarc needs to zero a buffer.
pub trait Elem: NcclType + cudarc::driver::ValidAsZeroBits + Default {}

impl<T: NcclType + cudarc::driver::ValidAsZeroBits + Default> Elem for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::canonical;
    use nccl::{F8E4M3, F8E5M2, bf16, f16};

    fn round_trips<T: Elem>() {
        for v in [0.0, 1.0, 2.0, 3.0, 4.0] {
            assert_eq!(T::from_f64(v).to_f64(), v, "{}", T::NAME);
        }
    }

    #[test]
    fn every_type_round_trips_small_integers() {
        round_trips::<f32>();
        round_trips::<f64>();
        round_trips::<f16>();
        round_trips::<bf16>();
        round_trips::<F8E4M3>();
        round_trips::<F8E5M2>();
        round_trips::<i8>();
        round_trips::<u8>();
        round_trips::<i32>();
        round_trips::<u32>();
        round_trips::<i64>();
        round_trips::<u64>();
    }

    #[test]
    fn both_spellings_name_the_type_of_that_name() {
        assert_eq!(canonical("float"), Some("f32"));
        assert_eq!(canonical("bfloat16"), Some("bf16"));
        assert_eq!(canonical("uint64"), Some("u64"));
        assert_eq!(canonical("f8e5m2"), Some("f8e5m2"));
        assert_eq!(canonical("f32"), Some("f32"));
        assert_eq!(canonical("float32"), None);
        // our names are the element types' own names
        for (name, t) in [
            ("f8e4m3", F8E4M3::NAME),
            ("bf16", bf16::NAME),
            ("i64", i64::NAME),
        ] {
            assert_eq!(name, t);
        }
    }
}
