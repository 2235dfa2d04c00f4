//! `--buffers slice|nccl|stream|symmetric`: the buffers the collectives run on.
//!
//! - `slice` (the default): cudarc's `CudaSlice`, as a program gets them
//!   from `stream.alloc_zeros`/`clone_htod`. With event tracking on (the
//!   default; each rank's context has two streams, see [`second_stream`]),
//!   every call pays cudarc's event waits and records inside `device_ptr`.
//! - `nccl`: the library's `NcclBuffer` (`ncclMemAlloc`, NCCL 2.19+), made on
//!   the rank's stream: uses on that stream record and wait for no event,
//!   tracking on or off.
//! - `stream`: `NcclBuffer`s of the device's stream-ordered pool
//!   (`Memory::Stream`, `cuMemAllocAsync`): `slice`'s memory, with the
//!   library's tracking instead of cudarc's.
//! - `symmetric`: buffers of a `SymmetricPool` (NCCL 2.27+): `ncclMemAlloc`
//!   memory registered once per size class as symmetric windows and reused
//!   from one size to the next, which lets NCCL pick its symmetric-memory
//!   kernels (small messages). One GPU per process (registering is
//!   collective); where NCCL makes no windows it runs on plain
//!   `ncclMemAlloc` memory and says so.
//!
//! With `--no-event-tracking` (cudarc's tracking off) `slice` and `nccl`
//! differ only in the allocator, and `slice` and `stream` not at all.

pub use crate::options::BufKind;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};
use nccl::{DeviceBuffer, DeviceBufferMut};
use nccl::{Memory, NcclBuffer};

use crate::elem::Elem;

/// How a sweep makes the buffers of the ranks of this process (`i` is the
/// rank's index in this process).
pub trait Make<T: Elem> {
    /// The buffers it makes.
    type Buf: DeviceBuffer<T> + DeviceBufferMut<T>;
    /// `len` elements equal to `v`, on `stream`.
    fn filled(
        &self,
        i: usize,
        stream: &Arc<CudaStream>,
        v: T,
        len: usize,
    ) -> nccl::Result<Self::Buf>;
    /// `len` zeros, on `stream`.
    fn zeros(&self, i: usize, stream: &Arc<CudaStream>, len: usize) -> nccl::Result<Self::Buf>;
}

/// Buffers of type `B`, each allocated on its own.
pub struct Plain<B>(std::marker::PhantomData<fn() -> B>);

impl<B> Default for Plain<B> {
    fn default() -> Self {
        Plain(std::marker::PhantomData)
    }
}

impl<T: Elem, B: BenchBuf<T>> Make<T> for Plain<B> {
    type Buf = B;
    fn filled(&self, _: usize, stream: &Arc<CudaStream>, v: T, len: usize) -> nccl::Result<B> {
        B::filled(stream, v, len)
    }
    fn zeros(&self, _: usize, stream: &Arc<CudaStream>, len: usize) -> nccl::Result<B> {
        B::zeros(stream, len)
    }
}

/// Buffers from each rank's symmetric pool (one pool per rank of this
/// process); a reused buffer is filled or zeroed again.
#[cfg(nccl_fn = "ncclCommWindowRegister")]
impl<'p, T: Elem> Make<T> for &'p [nccl::SymmetricPool<'_>] {
    type Buf = nccl::SymmetricBuffer<'p, T>;
    fn filled(
        &self,
        i: usize,
        stream: &Arc<CudaStream>,
        v: T,
        len: usize,
    ) -> nccl::Result<Self::Buf> {
        let pools: &'p [nccl::SymmetricPool<'_>] = self;
        let mut b = pools[i].alloc::<T>(len, stream)?;
        stream.memcpy_htod(&vec![v; len], &mut b)?;
        Ok(b)
    }
    fn zeros(&self, i: usize, stream: &Arc<CudaStream>, len: usize) -> nccl::Result<Self::Buf> {
        let pools: &'p [nccl::SymmetricPool<'_>] = self;
        let mut b = pools[i].alloc::<T>(len, stream)?;
        stream.memset_zeros(&mut b)?;
        Ok(b)
    }
}

/// A buffer the benchmark can make, fill and hand to the collectives.
pub trait BenchBuf<T: Elem>: DeviceBuffer<T> + DeviceBufferMut<T> + Sized {
    /// `len` elements equal to `v`, on `stream`.
    fn filled(stream: &Arc<CudaStream>, v: T, len: usize) -> nccl::Result<Self>;
    /// `len` zeros, on `stream`.
    fn zeros(stream: &Arc<CudaStream>, len: usize) -> nccl::Result<Self>;
}

impl<T: Elem> BenchBuf<T> for CudaSlice<T> {
    fn filled(stream: &Arc<CudaStream>, v: T, len: usize) -> nccl::Result<Self> {
        Ok(stream.clone_htod(&vec![v; len])?)
    }
    fn zeros(stream: &Arc<CudaStream>, len: usize) -> nccl::Result<Self> {
        Ok(stream.alloc_zeros::<T>(len)?)
    }
}

/// `NcclBuffer`s of this kind of memory.
impl<T: Elem> Make<T> for Memory {
    type Buf = NcclBuffer<T>;
    fn filled(
        &self,
        _: usize,
        stream: &Arc<CudaStream>,
        v: T,
        len: usize,
    ) -> nccl::Result<NcclBuffer<T>> {
        let mut b = NcclBuffer::alloc_zeros_in(stream, len, *self)?;
        stream.memcpy_htod(&vec![v; len], &mut b)?;
        Ok(b)
    }
    fn zeros(&self, _: usize, stream: &Arc<CudaStream>, len: usize) -> nccl::Result<NcclBuffer<T>> {
        NcclBuffer::alloc_zeros_in(stream, len, *self)
    }
}

/// A second stream in the context of `stream`, made and kept idle for the
/// sweep: the default path of a program with a compute and a communication
/// stream. (cudarc tracks events from the first stream a context makes, so
/// the cost is the same with one; the second makes the setting plain.)
pub fn second_stream(stream: &Arc<CudaStream>) -> nccl::Result<Arc<CudaStream>> {
    Ok(stream.context().new_stream()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for k in [
            BufKind::Slice,
            BufKind::Nccl,
            BufKind::Stream,
            BufKind::Symmetric,
        ] {
            assert_eq!(k.name().parse::<BufKind>(), Ok(k));
        }
        assert_eq!(BufKind::default(), BufKind::Slice);
        let e = "cuda".parse::<BufKind>().unwrap_err();
        assert!(e.contains("slice nccl stream symmetric"), "{e}");
    }
}
