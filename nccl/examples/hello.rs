use nccl::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "NCCL {} (nccl.h {})",
        nccl::version()?,
        nccl::HEADER_VERSION
    );
    // rank 0 makes the id and hands it to the other ranks (here: none)
    let id = UniqueId::new()?;
    println!("unique id {id}");
    // the GPU's context, with the driver checked first (no panic without one)
    let ctx = match nccl::context(0) {
        Ok(ctx) => ctx,
        Err(e @ (nccl::Error::NoDriver { .. } | nccl::Error::NoGpu { .. })) => {
            println!("nothing to reduce here: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let stream = ctx.new_stream()?;
    let comm = Comm::init_rank(&ctx, 1, &id, 0)?;
    // no event call on their own stream (a CudaSlice pays cudarc's events)
    let send = NcclBuffer::from_host(&stream, &[1.0f32, 2.0, 3.0], Memory::Stream)?;
    let mut recv = NcclBuffer::<f32>::alloc_zeros_in(&stream, 3, Memory::Stream)?;
    comm.all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)?;
    println!("all_reduce over 1 rank: {:?}", stream.clone_dtoh(&recv)?);
    comm.finalize()?;
    Ok(())
}
