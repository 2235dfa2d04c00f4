//! The memory a call may hand to NCCL: [`DeviceBuffer`] (read) and
//! [`DeviceBufferMut`] (written).
//!
//! cudarc's `DevicePtr` and `DevicePtrMut` are safe traits: any type may
//! implement them and report an address and a length that are not those of
//! live device memory. NCCL reads and writes `len()` elements at that
//! address, so a collective that took any `DevicePtr` would let safe code
//! corrupt memory. The calls take these unsafe traits instead, implemented
//! for cudarc's `CudaSlice`, `CudaView` and `CudaViewMut` and for this
//! crate's buffers, views and registrations; a type of your own implements
//! them with `unsafe impl`, promising what they say.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

use crate::mem::{NcclBuffer, NcclView, NcclViewMut, Registration, RegistrationKind};

/// Device memory that a call may give NCCL to read.
///
/// # Safety
///
/// An implementor promises, for every `stream` of `self.stream()`'s
/// `CudaContext` object (and, where `ORDERS_OWN_USES` is `true`, of
/// any object of the same CUDA context; the calls refuse other streams): the address that `device_ptr(stream)`
/// returns is the start of `self.len()` elements of `T` of device memory of
/// that GPU, which stays allocated, and is not written by anything but work
/// ordered before this use, until the work enqueued on `stream` before the
/// returned guard is dropped has finished (the guard records that use, as
/// cudarc's events do, so that a later writer or the free waits for it).
pub unsafe trait DeviceBuffer<T>: DevicePtr<T> {
    /// Whether the buffer orders its uses itself, whatever `CudaContext`
    /// object a stream of its GPU context comes from (this crate's
    /// buffers), rather than through cudarc's events, whose flags cudarc
    /// keeps per object. The calls take such a buffer on any stream of its
    /// context; others only on streams of the buffer's own object.
    #[doc(hidden)]
    const ORDERS_OWN_USES: bool = false;
}

/// Device memory that a call may give NCCL to write.
///
/// # Safety
///
/// As [`DeviceBuffer`], for `device_ptr_mut(stream)`, and besides: nothing
/// else reads or writes those elements until that work has finished, but
/// work ordered after it (the guard records the use as a write).
pub unsafe trait DeviceBufferMut<T>: DevicePtrMut<T> {
    /// As [`DeviceBuffer`]'s.
    #[doc(hidden)]
    const ORDERS_OWN_USES: bool = false;
}

// SAFETY: cudarc's slice owns `len` elements at its address until it is
// dropped (but for a length whose byte count wrapped in cudarc's
// allocation: the calls refuse a length whose bytes do not fit an isize);
// its drop waits (stream-ordered) for the events its guards record when its
// context tracks events. The calls use it only on streams of its own
// `CudaContext` object, whose flags decide both the record and the wait
// (cudarc keeps them per object); a program that turned tracking off
// promised cudarc (`disable_event_tracking` is unsafe) to order its streams
// itself. `&self` keeps writers away for as long as a guard lives.
unsafe impl<T> DeviceBuffer<T> for CudaSlice<T> {}
// SAFETY: as for reading, and `&mut self` keeps every other user away.
unsafe impl<T> DeviceBufferMut<T> for CudaSlice<T> {}
// SAFETY: a view borrows what it views (the address and length are within
// it, cudarc checks the range): a slice, whose own events it records into,
// or a module's global (`CudaModule::get_global`), borrowed with its module.
// Such a view has no events: the module's unload after the call is ordered
// only by the driver, as it is for cudarc's own kernels on that global (a
// limit of cudarc's, noted in docs/performance.md's list for cudarc).
unsafe impl<T> DeviceBuffer<T> for CudaView<'_, T> {}
// SAFETY: as `CudaView`; a mutable view borrows its slice exclusively.
unsafe impl<T> DeviceBuffer<T> for CudaViewMut<'_, T> {}
// SAFETY: as `CudaView`; a mutable view borrows its slice exclusively.
unsafe impl<T> DeviceBufferMut<T> for CudaViewMut<'_, T> {}

// SAFETY: an `NcclBuffer` owns `len` elements at its address until it is
// dropped, and its drop joins every use its guards recorded (or leaks the
// memory, logged); it orders uses on streams of any object of its CUDA
// context itself (`Uses::on` compares the raw contexts); see the rules in
// `mem/buffer.rs`.
unsafe impl<T> DeviceBuffer<T> for NcclBuffer<T> {
    const ORDERS_OWN_USES: bool = true;
}
// SAFETY: as for reading; `&mut self` keeps every other user away.
unsafe impl<T> DeviceBufferMut<T> for NcclBuffer<T> {
    const ORDERS_OWN_USES: bool = true;
}
// SAFETY: a view borrows its buffer (the range is checked when the view is
// made) and shares the buffer's tracking.
unsafe impl<T> DeviceBuffer<T> for NcclView<'_, T> {
    const ORDERS_OWN_USES: bool = true;
}
// SAFETY: as `NcclView`; a mutable view borrows its buffer exclusively.
unsafe impl<T> DeviceBuffer<T> for NcclViewMut<'_, T> {
    const ORDERS_OWN_USES: bool = true;
}
// SAFETY: as `NcclView`; a mutable view borrows its buffer exclusively.
unsafe impl<T> DeviceBufferMut<T> for NcclViewMut<'_, T> {
    const ORDERS_OWN_USES: bool = true;
}

// SAFETY: a registration owns its buffer, itself a `DeviceBuffer`, and
// hands out the buffer's own address, length and guards.
unsafe impl<T: 'static, B, K: RegistrationKind> DeviceBuffer<T> for Registration<T, B, K>
where
    B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static,
{
    const ORDERS_OWN_USES: bool = <B as DeviceBuffer<T>>::ORDERS_OWN_USES;
}
// SAFETY: as for reading, through the buffer's `device_ptr_mut`.
unsafe impl<T: 'static, B, K: RegistrationKind> DeviceBufferMut<T> for Registration<T, B, K>
where
    B: DeviceBuffer<T> + DeviceBufferMut<T> + Send + 'static,
{
    const ORDERS_OWN_USES: bool = <B as DeviceBufferMut<T>>::ORDERS_OWN_USES;
}

#[cfg(nccl_fn = "ncclCommWindowRegister")]
mod symmetric {
    use super::{DeviceBuffer, DeviceBufferMut};
    use crate::mem::SymmetricBuffer;

    // SAFETY: a pool's buffer holds one of the pool's windows (of at least
    // `len` elements) for its life and hands out that window's
    // `NcclBuffer`'s address and guards.
    unsafe impl<T> DeviceBuffer<T> for SymmetricBuffer<'_, T> {
        const ORDERS_OWN_USES: bool = true;
    }
    // SAFETY: as for reading; the pool hands each range to one buffer.
    unsafe impl<T> DeviceBufferMut<T> for SymmetricBuffer<'_, T> {
        const ORDERS_OWN_USES: bool = true;
    }
}
