//! Reduction operations, built in and custom (PreMulSum).

use std::marker::PhantomData;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, SyncOnDrop};
use std::sync::Arc;

use crate::base::dtype::NcclType;
use crate::base::error::Result;
use crate::base::runtime::require_api;
use crate::comm::Comm;
use crate::sys;

/// How a reduction combines values.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum ReduceOp<'a> {
    /// Sum.
    Sum,
    /// Product.
    Prod,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
    /// Mean over ranks (NCCL 2.10+).
    ///
    /// On a communicator of one rank, NCCL refuses it for fp8 with
    /// `ncclInvalidArgument` (its one-rank path lacks the fp8 scaling kernel
    /// in 2.28 and 2.29); with more ranks it works.
    Avg,
    /// Sum of each rank's values multiplied by a scalar first (for fp8 on a
    /// one-rank communicator, NCCL refuses it as it refuses `Avg`).
    PreMulSum(&'a PreMulSum<'a>),
}

impl ReduceOp<'_> {
    /// The raw op for `comm`, checked: a custom op must belong to `comm` and
    /// to the element type `T`.
    #[inline]
    pub(crate) fn raw_for<T: NcclType>(
        &self,
        op: &'static str,
        comm: &Comm,
    ) -> Result<sys::ncclRedOp_t> {
        Ok(match self {
            ReduceOp::Sum => sys::ncclRedOp_t::ncclSum,
            ReduceOp::Prod => sys::ncclRedOp_t::ncclProd,
            ReduceOp::Max => sys::ncclRedOp_t::ncclMax,
            ReduceOp::Min => sys::ncclRedOp_t::ncclMin,
            ReduceOp::Avg => sys::ncclRedOp_t(4),
            ReduceOp::PreMulSum(p) => {
                if !std::ptr::eq(p.comm, comm) {
                    return Err(crate::Error::invalid(
                        op,
                        "op",
                        "a PreMulSum created on this communicator",
                        "one created on another communicator",
                    ));
                }
                if p.datatype != T::DATATYPE {
                    return Err(crate::Error::invalid(
                        op,
                        "op",
                        format!("a PreMulSum for {}", T::NAME),
                        format!("a PreMulSum for {}", p.type_name),
                    ));
                }
                p.op
            }
        })
    }
}

/// A PreMulSum reduction (`ncclRedOpCreatePreMulSum`): each rank's values
/// are multiplied by a scalar, then summed. Destroyed (`ncclRedOpDestroy`)
/// on drop; it borrows its communicator (and a device scalar), so it cannot
/// outlive them. Use it as [`ReduceOp::PreMulSum`] with buffers of the
/// element type it was made for.
pub struct PreMulSum<'a> {
    op: sys::ncclRedOp_t,
    comm: &'a Comm,
    datatype: sys::ncclDataType_t,
    type_name: &'static str,
    /// The device scalar (a `&'a CudaSlice<T>` with `T` erased) and how to
    /// acquire it on a stream: every collective using the op reads it, so
    /// cudarc must order it like a buffer of the call.
    scalar: Option<(*const (), ScalarUse)>,
    /// The device scalar's context (the object it was allocated in).
    scalar_ctx: Option<&'a Arc<CudaContext>>,
    _borrow: PhantomData<&'a ()>,
}

/// Acquires the erased `CudaSlice<T>` at the pointer for reading on a stream.
type ScalarUse = for<'x> unsafe fn(*const (), &'x CudaStream) -> SyncOnDrop<'x>;

/// # Safety
/// `p` must point to a `CudaSlice<T>` alive for `'x`.
unsafe fn scalar_use<'x, T: NcclType>(p: *const (), stream: &'x CudaStream) -> SyncOnDrop<'x> {
    // SAFETY: as the caller promises.
    let slice: &'x CudaSlice<T> = unsafe { &*(p as *const CudaSlice<T>) };
    slice.device_ptr(stream).1
}

impl std::fmt::Debug for PreMulSum<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreMulSum")
            .field("op", &self.op.0)
            .field("type", &self.type_name)
            .field("device_scalar", &self.scalar.is_some())
            .finish()
    }
}

impl Comm {
    /// A PreMulSum with a host scalar, read once now.
    ///
    /// # Errors
    /// NCCL's error; `Unsupported` before NCCL 2.11.
    pub fn pre_mul_sum<T: NcclType>(&self, scalar: T) -> Result<PreMulSum<'_>> {
        let mut s = scalar;
        // SAFETY: the scalar is host memory read before the call returns
        // (ncclScalarHostImmediate).
        unsafe {
            self.create_pre_mul_sum::<T>(
                &mut s as *mut T as *mut _,
                sys::ncclScalarResidence_t::ncclScalarHostImmediate,
            )
        }
    }

    /// A PreMulSum with a device scalar (one element on this communicator's
    /// GPU), read each time a collective using the op runs; the op borrows it.
    ///
    /// # Errors
    /// `InvalidArgument` unless `scalar` has exactly one element; NCCL's error.
    pub fn pre_mul_sum_device<'a, T: NcclType>(
        &'a self,
        scalar: &'a CudaSlice<T>,
    ) -> Result<PreMulSum<'a>> {
        if scalar.len() != 1 {
            return Err(crate::Error::invalid(
                "pre_mul_sum_device",
                "scalar.len()",
                1,
                scalar.len(),
            ));
        }
        if scalar.context().ordinal() != self.device() {
            return Err(crate::Error::invalid(
                "pre_mul_sum_device",
                "scalar",
                format!("memory of GPU {}", self.device()),
                format!("memory of GPU {}", scalar.context().ordinal()),
            ));
        }
        let (ptr, sync) = scalar.device_ptr(scalar.stream());
        drop(sync);
        // SAFETY: ptr is one T of device memory that the returned op borrows,
        // so it outlives the op; each collective using the op acquires the
        // scalar on its own stream (`scalar_use`), so cudarc orders its
        // writes before, and its free after, every read.
        let mut op = unsafe {
            self.create_pre_mul_sum::<T>(
                ptr as *mut _,
                sys::ncclScalarResidence_t::ncclScalarDevice,
            )
        }?;
        op.scalar = Some((scalar as *const CudaSlice<T> as *const (), scalar_use::<T>));
        op.scalar_ctx = Some(scalar.context());
        Ok(op)
    }

    /// # Safety
    /// `scalar` must point to one `T` that stays valid as `residence` demands.
    unsafe fn create_pre_mul_sum<'a, T: NcclType>(
        &'a self,
        scalar: *mut core::ffi::c_void,
        residence: sys::ncclScalarResidence_t,
    ) -> Result<PreMulSum<'a>> {
        require_api("ncclRedOpCreatePreMulSum")?;
        let mut op = sys::ncclRedOp_t(0);
        // SAFETY: valid communicator and out-pointer; scalar as the caller promised.
        unsafe {
            nccl!(self.as_raw() => ncclRedOpCreatePreMulSum(&mut op, scalar, T::DATATYPE, residence, self.as_raw()))
        }?;
        Ok(PreMulSum {
            op,
            comm: self,
            datatype: T::DATATYPE,
            type_name: T::NAME,
            scalar: None,
            scalar_ctx: None,
            _borrow: PhantomData,
        })
    }
}

impl<'a> PreMulSum<'a> {
    /// The device scalar acquired for reading on `stream`, for a collective
    /// using this op; `None` for a host scalar.
    pub(crate) fn scalar_use<'x>(&'x self, stream: &'x CudaStream) -> Option<SyncOnDrop<'x>> {
        let (p, f) = self.scalar?;
        // SAFETY: p is the `&'a CudaSlice<T>` of `pre_mul_sum_device` with the
        // matching `f`, and 'a outlives 'x (self is borrowed for 'x).
        Some(unsafe { f(p, stream) })
    }

    /// The `CudaContext` the device scalar was allocated in; `None` for a
    /// host scalar.
    pub(crate) fn scalar_context(&self) -> Option<&'a Arc<CudaContext>> {
        self.scalar_ctx
    }

    /// The raw op handle.
    pub fn as_raw(&self) -> sys::ncclRedOp_t {
        self.op
    }
}

impl Drop for PreMulSum<'_> {
    fn drop(&mut self) {
        let comm = self.comm.as_raw();
        if comm.is_null() {
            return; // aborted: NCCL freed the op with the communicator
        }
        // SAFETY: op was created on comm, which the borrow keeps alive.
        let r = unsafe { sys::ncclRedOpDestroy(self.op, comm) };
        if r != sys::ncclResult_t::ncclSuccess {
            log::error!("ncclRedOpDestroy failed ({}); the op leaks", r.0);
        }
    }
}
