//! Point-to-point: [`Comm::send`] and [`Comm::recv`], one peer each.

use crate::base::contract;
use crate::base::dtype::NcclType;
use crate::base::error::Result;
use crate::comm::Comm;
use crate::mem::{DeviceBuffer, DeviceBufferMut};
use crate::ops::Enqueue;
use crate::ops::call::{Call, vp};
use crate::sys;

impl Comm {
    /// Sends `buf` to rank `peer` (`ncclSend`); the peer posts a matching
    /// [`Comm::recv`]. Pair sends and receives inside a [`group`](crate::group)
    /// when ranks exchange with each other, or they deadlock.
    ///
    /// # Errors
    /// `InvalidArgument` for `peer >= world` or a stream of another GPU.
    pub fn send<'a, T: NcclType>(
        &'a self,
        buf: &'a impl DeviceBuffer<T>,
        peer: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        let mut c = Call::begin::<T>(self, "send", stream)?;
        contract::rank_arg("send", "peer", peer, self.world_size())?;
        let n = buf.len();
        let s = c.read(buf);
        c.run("ncclSend", |comm, st| {
            // SAFETY: see above; buf holds n; peer < world.
            unsafe { sys::ncclSend(vp(s), n, T::DATATYPE, peer as i32, comm, st) }
        })
    }

    /// Receives into `buf` from rank `peer` (`ncclRecv`).
    ///
    /// # Errors
    /// `InvalidArgument` for `peer >= world` or a stream of another GPU.
    pub fn recv<'a, T: NcclType>(
        &'a self,
        buf: &'a mut impl DeviceBufferMut<T>,
        peer: usize,
        stream: impl Enqueue<'a>,
    ) -> Result<()> {
        let mut c = Call::begin::<T>(self, "recv", stream)?;
        contract::rank_arg("recv", "peer", peer, self.world_size())?;
        let n = buf.len();
        let d = c.write(buf);
        c.run("ncclRecv", |comm, st| {
            // SAFETY: see above; buf holds n; peer < world.
            unsafe { sys::ncclRecv(vp(d), n, T::DATATYPE, peer as i32, comm, st) }
        })
    }
}
