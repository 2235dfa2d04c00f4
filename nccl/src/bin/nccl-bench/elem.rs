//! The element types the benchmark runs, and their host conversions (fill
//! values go in as `f64`, results come back as `f64` for the check).

use nccl::{F8E4M3, F8E5M2, NcclType, bf16, f16};

/// An NCCL element type with host conversions through `f64`.
pub trait Elem: NcclType + cudarc::driver::ValidAsZeroBits + Default {
    /// The nearest value of this type.
    fn from_f64(v: f64) -> Self;
    /// The value as `f64` (exact for every type here).
    fn to_f64(self) -> f64;
}

macro_rules! elem {
    ($t:ty, $from:expr, $to:expr) => {
        impl Elem for $t {
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
            fn to_f64(self) -> f64 {
                $to(self)
            }
        }
    };
}

elem!(f32, |v| v as f32, |x: f32| x as f64);
elem!(f64, |v| v, |x: f64| x);
elem!(f16, f16::from_f64, |x: f16| x.to_f64());
elem!(bf16, bf16::from_f64, |x: bf16| x.to_f64());
// float8's `to_f64` takes `&self`: written as a method call on a value it
// would resolve to `Elem::to_f64(self)` and recurse, hence the paths.
elem!(F8E4M3, F8E4M3::from_f64, |x: F8E4M3| F8E4M3::to_f64(&x));
elem!(F8E5M2, F8E5M2::from_f64, |x: F8E5M2| F8E5M2::to_f64(&x));
elem!(i8, |v| v as i8, |x: i8| x as f64);
elem!(u8, |v| v as u8, |x: u8| x as f64);
elem!(i32, |v| v as i32, |x: i32| x as f64);
elem!(u32, |v| v as u32, |x: u32| x as f64);
elem!(i64, |v| v as i64, |x: i64| x as f64);
elem!(u64, |v| v as u64, |x: u64| x as f64);

/// The datatypes `-d` accepts: our name (the element type's `NAME`, used in
/// the table and the JSON) first, then nccl-tests' name.
pub const DATATYPES: &[(&str, &str)] = &[
    ("f32", "float"),
    ("f16", "half"),
    ("bf16", "bfloat16"),
    ("f64", "double"),
    ("f8e4m3", "f8e4m3"),
    ("f8e5m2", "f8e5m2"),
    ("i8", "int8"),
    ("u8", "uint8"),
    ("i32", "int32"),
    ("u32", "uint32"),
    ("i64", "int64"),
    ("u64", "uint64"),
];

/// Our name for a datatype given in either spelling.
pub fn canonical(name: &str) -> Option<&'static str> {
    DATATYPES
        .iter()
        .find(|(ours, theirs)| name == *ours || name == *theirs)
        .map(|(ours, _)| *ours)
}

#[cfg(test)]
mod tests {
    use super::*;

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
