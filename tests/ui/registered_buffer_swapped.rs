// A registration owns its buffer until NCCL has released it: safe code gets
// no `&mut` of the buffer, through which it could put another buffer in its
// place and free the registered one while NCCL still maps it.
use nccl::NcclBuffer;

fn demo(reg: &mut nccl::Registered<f32, NcclBuffer<f32>>, other: NcclBuffer<f32>) {
    let old = std::mem::replace(reg.get_mut(), other);
    drop(old);
}

fn main() {}
