//! Safe Rust bindings to NVIDIA NCCL (placeholder; the safe layer follows).

pub use nccl_sys as sys;
