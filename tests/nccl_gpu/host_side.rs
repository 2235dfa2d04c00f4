//! The host-side API beside live communicators on the GPU machine: NCCL's
//! parameter registry, the library and driver queries, and the rendezvous
//! (a `TcpStore` with `StoreBootstrap`, then `TcpBootstrap` with a secret)
//! making communicators that all-reduce. The parent serves the store
//! ([`Meeting`]); every world's ranks meet there, and the parent counts them
//! out at the end ([`Meeting::tally`]).

use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::CudaContext;
use nccl::bootstrap::{
    MIN_SECRET_LEN, Secret, StoreBootstrap, TcpBootstrap, TcpStore, TcpStoreServer, store_id_key,
};
use nccl::{Bootstrap, Comm, ReduceOp, UNIQUE_ID_BYTES, UniqueId};

use crate::{Report, e2s};

/// How long each rendezvous step may take.
const MEET: Duration = Duration::from_secs(30);

/// The variable that tells a rank process where the store is.
pub(crate) const STORE_VAR: &str = "NCCL_RS_TEST_STORE";

/// The store the ranks meet at and the secret of their TCP rendezvous.
pub(crate) struct Meeting {
    server: TcpStoreServer,
    /// The secret as text, for the ranks' `NCCL_RS_SECRET`.
    secret: String,
}

impl Meeting {
    /// A store on the loopback interface and a fresh secret.
    pub(crate) fn start() -> Result<Meeting, String> {
        let server = TcpStoreServer::bind("127.0.0.1:0").map_err(e2s)?;
        use std::io::Read;
        let mut raw = [0u8; 24];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        let secret = raw.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Meeting { server, secret })
    }

    /// The store's address, as the ranks get it.
    pub(crate) fn addr(&self) -> String {
        self.server.local_addr().to_string()
    }

    /// What a rank process needs in its environment.
    pub(crate) fn env(&self) -> [(&'static str, String); 2] {
        [
            (STORE_VAR, self.addr()),
            ("NCCL_RS_SECRET", self.secret.clone()),
        ]
    }

    /// The secret as this (parent) process holds it.
    pub(crate) fn secret(&self) -> Secret {
        Secret::from(self.secret.as_str())
    }

    /// After every world has run: each of their ranks counted itself out,
    /// and the store's keys of a world can be deleted.
    pub(crate) fn tally(&self, worlds: &[usize], rep: &mut Report) {
        let r = (|| -> Result<(), String> {
            let mut s = TcpStore::connect(&self.addr(), MEET).map_err(e2s)?;
            for &world in worlds {
                let key = store_id_key(&job(world), "0");
                let done = s.add(&format!("{key}/done"), 0).map_err(e2s)?;
                if done != world as i64 {
                    return Err(format!(
                        "world {world}: {done} ranks counted themselves out"
                    ));
                }
                let before = s.num_keys().map_err(e2s)?;
                let mut gone = 0;
                for r in 0..world {
                    if !s.delete_key(&format!("{key}/got/{r}")).map_err(e2s)? {
                        return Err(format!("world {world}: rank {r}'s key was not there"));
                    }
                    gone += 1;
                }
                if s.delete_key(&format!("{key}/got/{world}")).map_err(e2s)? {
                    return Err(format!("world {world}: deleted a key no rank set"));
                }
                let after = s.num_keys().map_err(e2s)?;
                if after != before - gone {
                    return Err(format!("{before} keys, {gone} deleted, {after} left"));
                }
            }
            Ok(())
        })();
        rep.check("the store counted every rank of every world out", r);
    }
}

/// The job name of a world's rendezvous.
fn job(world: usize) -> String {
    format!("nccl_gpu-world{world}")
}

/// A communicator from `id` all-reduces `rank + 1` over the world.
fn all_reduce_once(
    ctx: &Arc<CudaContext>,
    world: usize,
    rank: usize,
    id: &UniqueId,
) -> Result<(), String> {
    let comm = Comm::init_rank(ctx, world, id, rank).map_err(e2s)?;
    let s = ctx.new_stream().map_err(|e| e.to_string())?;
    let a = s
        .clone_htod(&[(rank + 1) as f32; 5])
        .map_err(|e| e.to_string())?;
    let mut b = s.alloc_zeros::<f32>(5).map_err(|e| e.to_string())?;
    comm.all_reduce(&a, &mut b, ReduceOp::Sum, &s)
        .map_err(e2s)?;
    let out = s.clone_dtoh(&b).map_err(|e| e.to_string())?;
    s.synchronize().map_err(|e| e.to_string())?;
    let want = (world * (world + 1) / 2) as f32;
    if out.iter().any(|&x| x != want) {
        return Err(format!("all_reduce gave {out:?}, want {want} each"));
    }
    comm.finalize().map_err(e2s)
}

/// Rank `rank` of `world` meets the others at the store `addr`: two ids
/// through `StoreBootstrap`, checked to be the same at every rank, make two
/// communicators; then rank 0 listens for a `TcpBootstrap` with `secret`,
/// publishes its address in the store, and the id it hands out makes a
/// third. Each rank then counts itself out in the store.
pub(crate) fn rendezvous(
    ctx: &Arc<CudaContext>,
    world: usize,
    rank: usize,
    addr: &str,
    secret: Secret,
    rep: &mut Report,
) {
    let job = job(world);
    let key = store_id_key(&job, "0");
    let mut kept: Option<StoreBootstrap> = None;
    let r = (|| -> Result<(), String> {
        let mut s = TcpStore::connect(addr, MEET).map_err(e2s)?;
        s.set_timeout(MEET);
        if s.timeout() != MEET || s.addr() != addr {
            return Err(format!("store {} with timeout {:?}", s.addr(), s.timeout()));
        }
        let mut boot = StoreBootstrap::new(s, rank, world, &key).map_err(e2s)?;
        if boot.key() != key || boot.rank() != rank || boot.world_size() != world {
            return Err(format!(
                "bootstrap {} as rank {} of {}",
                boot.key(),
                boot.rank(),
                boot.world_size()
            ));
        }
        let mine = match rank {
            0 => Some(vec![
                UniqueId::new().map_err(e2s)?,
                UniqueId::new().map_err(e2s)?,
            ]),
            _ => None,
        };
        let ids = boot.share_n_ids(2, mine.clone()).map_err(e2s)?;
        if mine.is_some_and(|m| m != ids) || ids[0] == ids[1] {
            return Err("rank 0 got other ids back than it shared".into());
        }
        // every rank publishes what it got and compares with the others'
        let got: Vec<u8> = ids.iter().flat_map(|i| *i.as_bytes()).collect();
        let s = boot.store();
        s.set(&format!("{key}/got/{rank}"), &got).map_err(e2s)?;
        let keys: Vec<String> = (0..world).map(|r| format!("{key}/got/{r}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        s.wait(&keys).map_err(e2s)?;
        if !s.check(&keys).map_err(e2s)? {
            return Err("wait returned before every rank's key was set".into());
        }
        for k in &keys {
            let v = s.get(k).map_err(e2s)?;
            if v != got {
                return Err(format!("{k} holds other ids than rank {rank} got"));
            }
            if UniqueId::from_bytes(&v[..UNIQUE_ID_BYTES]).map_err(e2s)? != ids[0] {
                return Err(format!("{k}: the first id does not round-trip"));
            }
        }
        for id in &ids {
            all_reduce_once(ctx, world, rank, id)?;
        }
        kept = Some(boot);
        Ok(())
    })();
    rep.check(
        "rendezvous through a TcpStore (StoreBootstrap, two ids, two communicators)",
        r,
    );

    let r = (|| -> Result<(), String> {
        let boot = kept.as_mut().ok_or("no store: the check above failed")?;
        let s = boot.store();
        if secret.len() < MIN_SECRET_LEN || secret.is_empty() {
            return Err(format!("a secret of {} bytes", secret.len()));
        }
        let tcp_key = format!("{key}/tcp");
        let ids = if rank == 0 {
            let mut b = TcpBootstrap::with_secret("127.0.0.1:0", 0, world, Some(secret), MEET)
                .map_err(e2s)?
                .job_id(&job)
                .handshake_timeout(Duration::from_secs(10));
            let at = b.listen().map_err(e2s)?;
            s.set(&tcp_key, at.to_string().as_bytes()).map_err(e2s)?;
            b.share_n_ids(1, Some(vec![UniqueId::new().map_err(e2s)?]))
                .map_err(e2s)?
        } else {
            let at = String::from_utf8(s.get(&tcp_key).map_err(e2s)?)
                .map_err(|e| format!("rank 0's address: {e}"))?;
            let mut b = TcpBootstrap::with_secret(&at, rank, world, Some(secret), MEET)
                .map_err(e2s)?
                .job_id(&job)
                .handshake_timeout(Duration::from_secs(10));
            if b.rank() != rank || b.world_size() != world {
                return Err(format!("bootstrap rank {} of {}", b.rank(), b.world_size()));
            }
            b.share_ids(None).map_err(e2s)?
        };
        all_reduce_once(ctx, world, rank, &ids[0])?;
        // one rank is named first, whichever it is, and the others see it
        let first = s
            .compare_set(&format!("{key}/first"), b"", rank.to_string().as_bytes())
            .map_err(e2s)?;
        let first: usize = String::from_utf8_lossy(&first)
            .parse()
            .map_err(|e| format!("first rank {first:?}: {e}"))?;
        if first >= world {
            return Err(format!("first rank {first} of {world}"));
        }
        let n = s.add(&format!("{key}/done"), 1).map_err(e2s)?;
        if !(1..=world as i64).contains(&n) {
            return Err(format!("{n} ranks done of {world}"));
        }
        Ok(())
    })();
    rep.check(
        "rendezvous through TcpBootstrap with a secret (its address shared in the store)",
        r,
    );
}

/// A rank process's secret, as its environment gives it.
pub(crate) fn secret_from_env(rep: &mut Report) -> Option<Secret> {
    let s = Secret::from_env();
    let want = std::env::var("NCCL_RS_SECRET").ok();
    let r = match (&s, &want) {
        (Some(s), Some(w)) if s.expose() == w.as_bytes() && s.len() == w.len() => Ok(()),
        _ => Err("NCCL_RS_SECRET did not come through".into()),
    };
    rep.check("the secret from the environment", r);
    s
}

/// The driver and library queries answer as the running process sees them.
pub(crate) fn library_and_driver(rep: &mut Report) {
    use nccl::library::LoadError;
    use nccl::sys::LinkMode;
    let r = (|| -> Result<(), String> {
        let v = nccl::driver_version().map_err(e2s)?;
        let mut raw = 0;
        // SAFETY: cuDriverGetVersion writes one int; cudarc has loaded the
        // driver (this process holds a context).
        let rc = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut raw) };
        if rc != cudarc::driver::sys::CUresult::CUDA_SUCCESS || raw != v {
            return Err(format!(
                "driver_version {v}, the driver says {raw} ({rc:?})"
            ));
        }
        if !nccl::is_available() || nccl::library_error().is_some() {
            return Err(format!("not available: {:?}", nccl::library_error()));
        }
        let runtime = nccl::version().map_err(e2s)?;
        let caps = nccl::capabilities().map_err(e2s)?;
        match nccl::library::current() {
            Ok(info) => {
                if info.version != runtime || caps.link_mode == LinkMode::Static {
                    return Err(format!("{info:?} in a {:?} build", caps.link_mode));
                }
                // the library in use, named again, is accepted as itself
                let again = nccl::library::load(&info.path).map_err(e2s)?;
                if again != info {
                    return Err(format!("load gave {again:?}, current {info:?}"));
                }
            }
            Err(nccl::Error::Library(LoadError::Static)) if caps.link_mode == LinkMode::Static => {}
            Err(e) => return Err(e2s(e)),
        }
        // the elastic APIs available are those this library is new enough for
        for (api, ok) in nccl::elastic_support() {
            if ok.is_ok() != api.check().is_ok() || (ok.is_ok() && runtime < api.since()) {
                return Err(format!("{} (NCCL {}+): {ok:?}", api.name(), api.since()));
            }
        }
        Ok(())
    })();
    rep.check("driver, library and elastic support queries", r);
}

/// NCCL's parameter registry (2.30.4+) read while a communicator is live:
/// each parameter reads back alone as listed, through its typed getter too;
/// a value the environment sets is the one NCCL has.
#[cfg(nccl_fn = "ncclParamBind")]
pub(crate) fn params_live(rep: &mut Report) {
    use nccl::{Param, ParamValue};
    let r = (|| -> Result<(), String> {
        let all = nccl::params().map_err(e2s)?;
        if all.is_empty() || all.len() != all.iter().count() {
            return Err(format!("listing: {all}"));
        }
        let keys: Vec<&str> = all.iter().map(|p| p.key.as_str()).collect();
        if !keys.windows(2).all(|w| w[0] < w[1]) {
            return Err(format!("not sorted: {keys:?}"));
        }
        for p in &all {
            let one = Param::read(&p.key).map_err(e2s)?;
            if &one != p || all.get(&p.key) != Some(p) {
                return Err(format!("{} listed as {p}, read as {one}", p.key));
            }
            let ty = p.value.param_type();
            if ty.name().is_empty() || ty.to_string() != ty.name() {
                return Err(format!("{}: type name {:?}", p.key, ty.name()));
            }
            let same = match &p.value {
                ParamValue::I8(v) => nccl::param::<i8>(&p.key).map(|x| x == *v),
                ParamValue::I16(v) => nccl::param::<i16>(&p.key).map(|x| x == *v),
                ParamValue::I32(v) => nccl::param::<i32>(&p.key).map(|x| x == *v),
                ParamValue::I64(v) => nccl::param::<i64>(&p.key).map(|x| x == *v),
                ParamValue::U8(v) => nccl::param::<u8>(&p.key).map(|x| x == *v),
                ParamValue::U16(v) => nccl::param::<u16>(&p.key).map(|x| x == *v),
                ParamValue::U32(v) => nccl::param::<u32>(&p.key).map(|x| x == *v),
                ParamValue::U64(v) => nccl::param::<u64>(&p.key).map(|x| x == *v),
                ParamValue::Str(v) => nccl::param::<String>(&p.key).map(|x| x == *v),
                _ => Ok(true),
            }
            .map_err(e2s)?;
            if !same {
                return Err(format!("{}: the typed getter differs from {p}", p.key));
            }
            // an integer is not text: the wrong type is refused, typed
            if p.value.as_int().is_some()
                && !matches!(
                    nccl::param::<String>(&p.key),
                    Err(nccl::Error::InvalidArgument { .. })
                )
            {
                return Err(format!("{} (an integer) was read as text", p.key));
            }
        }
        // the ranks of worlds 2 and 4 get a format of their own
        if let Ok(want) = std::env::var("NCCL_DEBUG_TIMESTAMP_FORMAT") {
            let got: String = nccl::param("NCCL_DEBUG_TIMESTAMP_FORMAT").map_err(e2s)?;
            if got != want {
                return Err(format!("the environment says {want:?}, NCCL {got:?}"));
            }
        }
        match nccl::param::<u64>("NCCL_RS_NO_SUCH_PARAMETER") {
            Err(nccl::Error::InvalidArgument { .. }) => Ok(()),
            other => Err(format!("an unknown key gave {other:?}")),
        }
    })();
    rep.check("NCCL's parameter registry beside a live communicator", r);
}
