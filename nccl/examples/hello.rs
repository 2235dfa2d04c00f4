use nccl::cudarc::driver::CudaContext;
use nccl::{Comm, ReduceOp, UniqueId};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "NCCL {} (nccl.h {})",
        nccl::version()?,
        nccl::HEADER_VERSION
    );
    // rank 0 makes the id and hands it to the other ranks (here: none)
    let id = UniqueId::new()?;
    println!("unique id {id}");

    // SAFETY: only looks for the CUDA driver library (cudarc loads it lazily).
    if !unsafe { nccl::cudarc::driver::sys::is_culib_present() } {
        println!("no CUDA driver here: nothing to reduce");
        return Ok(());
    }
    let ctx = CudaContext::new(0)?;
    let stream = ctx.new_stream()?;
    let comm = Comm::init_rank(&ctx, 1, &id, 0)?;
    let send = stream.clone_htod(&[1.0f32, 2.0, 3.0])?;
    let mut recv = stream.alloc_zeros::<f32>(3)?;
    comm.all_reduce(&send, &mut recv, ReduceOp::Sum, &stream)?;
    println!("all_reduce over 1 rank: {:?}", stream.clone_dtoh(&recv)?);
    comm.finalize()?;
    Ok(())
}
