//! Process bootstrap (default feature `bootstrap`): from "a launcher
//! started me" to a communicator, and the channels that hand rank 0's
//! [`UniqueId`](crate::UniqueId) to every rank.
//!
//! - [`init_from_launcher`]: [`LaunchInfo`] reads the innermost launcher's
//!   variables (torchrun, Slurm, Open MPI, MPICH's or Intel MPI's `mpiexec`,
//!   Cray PALS, or `NCCL_RS_*`), [`Rendezvous`] says where the ranks meet,
//!   and the id travels through one of the channels below. `docs/launchers.md` has the rules for nested launchers
//!   and Slurm.
//! - [`TcpBootstrap`]: this crate's authenticated, encrypted TCP rendezvous
//!   (protocol and limits in `docs/launchers.md`).
//! - [`StoreBootstrap`] over a PyTorch `TCPStore`: torchrun's agent store,
//!   a Python process's `torch.distributed.TCPStore`, or a
//!   [`TcpStoreServer`], through the [`TcpStore`] client.
//!
//! Without this feature none of it is compiled, nor the crypto crates it
//! uses: implement [`Bootstrap`](crate::Bootstrap) over your own channel.

mod launch;
mod net;
mod rendezvous;
mod secret;
mod slurm;
mod store;

pub use launch::{
    LaunchInfo, LaunchOptions, LaunchSource, Rendezvous, SURVIVOR_PORTS, init_from_launcher,
    share_launch_id,
};
pub use rendezvous::{MAX_IDS, MAX_PENDING, MAX_WORLD, TcpBootstrap};
pub use secret::{MIN_SECRET_LEN, Secret};
pub use slurm::slurm_port;
pub use store::{
    MAX_CLIENT_BYTES, MAX_CONNECTIONS, MAX_KEY_LEN, MAX_KEYS_PER_QUERY, MAX_REPLY_LEN,
    MAX_STORE_BYTES, MAX_VALUE_LEN, StoreBootstrap, TcpStore, TcpStoreServer, store_id_key,
};
