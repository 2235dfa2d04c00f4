//! The bookkeeping behind [`NcclBuffer`](super::NcclBuffer)'s cross-stream
//! ordering, with no CUDA in it: a state machine told each use of the buffer
//! (read or write, on the buffer's home stream or on another one) that
//! answers with the event records and waits to make before the use is
//! enqueued ([`Act`]) and what the use's guard does once it is enqueued
//! ([`After`]). The buffer's module docs give the argument that these rules
//! order every conflicting pair of uses; the tests below check it on a model
//! of CUDA's streams and events.

/// Streams other than the home stream whose reads may be in flight at once,
/// each tracked by an event of its own. One more reader stream at a time is
/// still sound: its guard waits on the host for its stream after the enqueue.
pub(crate) const READ_SLOTS: usize = 4;

/// An event of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ev {
    /// Recorded on the home stream (only there): the home stream's uses up
    /// to that point.
    Home,
    /// Recorded on another stream after a write there.
    Write,
    /// Recorded on another stream after reads there (one slot per stream).
    Read(usize),
}

impl Ev {
    /// How many events a buffer can have.
    pub(crate) const COUNT: usize = 2 + READ_SLOTS;

    /// Its place among a buffer's events.
    pub(crate) fn index(self) -> usize {
        match self {
            Ev::Home => 0,
            Ev::Write => 1,
            Ev::Read(i) => 2 + i,
        }
    }
}

/// The stream of a use, as the tracker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum On {
    /// The buffer's home stream (the one it was allocated on).
    Home,
    /// Any other stream.
    Foreign {
        /// A key naming this stream among the streams alive while the use is
        /// in flight (its raw handle), or `None` when several live streams
        /// share the handle (the per-thread default stream). It only lets
        /// reads on one stream share an event; no wait is ever skipped for a
        /// matching key, since a destroyed stream's handle can come back.
        key: Option<usize>,
        /// Whether an event of the buffer can be recorded on this stream (it
        /// belongs to the buffer's context, which tracks events). If not, the
        /// use's guard waits for the stream on the host instead.
        recordable: bool,
    },
}

/// A driver call to make, in this order, before the use is enqueued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// Record [`Ev::Home`] on the home stream.
    RecordHome,
    /// The home stream waits for the event.
    HomeWaits(Ev),
    /// The stream of the use waits for the event.
    Waits(Ev),
}

/// What the use's guard does once the use is enqueued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum After {
    /// Nothing: a use on the home stream is ordered by the stream itself.
    Nothing,
    /// Record the event on the use's stream.
    Record(Ev),
    /// Wait on the host until the use's stream is idle (no event can carry
    /// the use: every read slot is taken, or the stream cannot record).
    Sync,
}

/// A read slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Free,
    /// Reads on the stream with this key; a later read there shares it.
    Shared(usize),
    /// Reads on a stream without a key: shared with no other.
    Alone,
}

/// The state of one buffer (shared by its views).
///
/// Reads take `&mut Track` under the buffer's lock while other reads may be
/// in flight (acquired, not yet enqueued or recorded), except home reads with
/// nothing to do ([`Track::home_read_is_free`]), which skip it; writes and
/// the final join need the buffer exclusively, so nothing else is in flight
/// then. The
/// rules below rely on that: a read never clears what an in-flight read
/// relies on ([`Track::home_r`](Track), the read slots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Track {
    /// Home has reads that `Ev::Home` may not cover. Cleared only by a write
    /// (exclusive): a read elsewhere may record `Ev::Home` before a home read
    /// that was acquired earlier is enqueued.
    home_r: bool,
    /// Home has writes (or joined foreign writes) that `Ev::Home` does not
    /// cover. Always enqueued by the time another use is acquired (writes are
    /// exclusive; joins are enqueued under the lock).
    home_w: bool,
    /// `Ev::Home` has been recorded.
    home_recorded: bool,
    /// `Ev::Write` holds a foreign write that home has not waited for.
    fw: bool,
    /// `Ev::Read(i)` holds foreign reads that home has not waited for.
    fr: [Slot; READ_SLOTS],
}

impl Track {
    /// A buffer whose first write (the zeroing of a new allocation) was
    /// enqueued on the home stream (`home_written`), or is already complete.
    pub(crate) fn new(home_written: bool) -> Track {
        Track {
            home_r: false,
            home_w: home_written,
            home_recorded: false,
            fw: false,
            fr: [Slot::Free; READ_SLOTS],
        }
    }

    /// Whether a read on home has nothing to do: no foreign write to wait
    /// for, and home's reads already marked. Every home read leaves it so
    /// (it waits for a foreign write and marks home's reads), and while the
    /// buffer is shared (reads only) it stays so: only a foreign write,
    /// which is exclusive, sets `fw` or clears `home_r`. So once a home read
    /// has been made under the buffer's lock, later home reads may skip the
    /// lock and the tracker until the next exclusive use.
    pub(crate) fn home_read_is_free(&self) -> bool {
        self.home_r && !self.fw
    }

    /// A read on `on`: it must come after every write.
    pub(crate) fn read(&mut self, on: On, act: &mut impl FnMut(Act)) -> After {
        match on {
            On::Home => {
                if self.fw {
                    act(Act::HomeWaits(Ev::Write));
                    self.fw = false;
                    // home now carries that write: a foreign reader needs a
                    // fresh record of Ev::Home
                    self.home_w = true;
                }
                self.home_r = true;
                After::Nothing
            }
            On::Foreign { key, recordable } => {
                if self.home_w {
                    act(Act::RecordHome);
                    self.home_recorded = true;
                    // home_r stays: a home read acquired before this record
                    // may be enqueued after it
                    self.home_w = false;
                }
                if self.home_recorded {
                    act(Act::Waits(Ev::Home));
                }
                if self.fw {
                    act(Act::Waits(Ev::Write));
                }
                if !recordable {
                    return After::Sync;
                }
                if let Some(k) = key {
                    if let Some(i) = self.fr.iter().position(|s| *s == Slot::Shared(k)) {
                        // the same stream, or a new one with a destroyed
                        // stream's handle: waiting first keeps the earlier
                        // reads in the event the guard records again
                        act(Act::Waits(Ev::Read(i)));
                        return After::Record(Ev::Read(i));
                    }
                }
                match self.fr.iter().position(|s| *s == Slot::Free) {
                    Some(i) => {
                        self.fr[i] = key.map_or(Slot::Alone, Slot::Shared);
                        After::Record(Ev::Read(i))
                    }
                    None => After::Sync,
                }
            }
        }
    }

    /// A write on `on` (the buffer held exclusively): it must come after
    /// every use.
    pub(crate) fn write(&mut self, on: On, act: &mut impl FnMut(Act)) -> After {
        match on {
            On::Home => {
                self.join(act);
                self.home_w = true;
                After::Nothing
            }
            On::Foreign { recordable, .. } => {
                if self.home_w || self.home_r {
                    act(Act::RecordHome);
                    self.home_recorded = true;
                    self.home_w = false;
                    self.home_r = false;
                }
                if self.home_recorded {
                    act(Act::Waits(Ev::Home));
                }
                if self.fw {
                    act(Act::Waits(Ev::Write));
                }
                for (i, s) in self.fr.iter_mut().enumerate() {
                    if *s != Slot::Free {
                        act(Act::Waits(Ev::Read(i)));
                        // this write's record covers them from now on
                        *s = Slot::Free;
                    }
                }
                self.fw = recordable;
                if recordable {
                    After::Record(Ev::Write)
                } else {
                    After::Sync
                }
            }
        }
    }

    /// Whether a use on another stream may still be pending in an event
    /// (the write slot or a read slot).
    pub(crate) fn foreign_pending(&self) -> bool {
        self.fw || self.fr.iter().any(|s| *s != Slot::Free)
    }

    /// A read with tracking off (the context stopped tracking while uses
    /// on other streams were pending): it waits for a pending foreign
    /// write, and leaves every slot as it is.
    pub(crate) fn untracked_read(&mut self, act: &mut impl FnMut(Act)) {
        if self.fw {
            act(Act::Waits(Ev::Write));
        }
    }

    /// A write with tracking off (the buffer held exclusively): its stream
    /// waits for every pending foreign use, whose slots it then frees, as a
    /// foreign write would.
    pub(crate) fn untracked_write(&mut self, act: &mut impl FnMut(Act)) {
        if self.fw {
            act(Act::Waits(Ev::Write));
            self.fw = false;
        }
        for (i, s) in self.fr.iter_mut().enumerate() {
            if *s != Slot::Free {
                act(Act::Waits(Ev::Read(i)));
                *s = Slot::Free;
            }
        }
    }

    /// The home stream waits for every use on other streams (the buffer held
    /// exclusively): before a home write, and before the buffer is freed or
    /// deregistered (after which the host waits for the home stream).
    pub(crate) fn join(&mut self, act: &mut impl FnMut(Act)) {
        if self.fw {
            act(Act::HomeWaits(Ev::Write));
            self.fw = false;
            self.home_w = true;
        }
        for (i, s) in self.fr.iter_mut().enumerate() {
            if *s != Slot::Free {
                act(Act::HomeWaits(Ev::Read(i)));
                *s = Slot::Free;
                self.home_r = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! A model of CUDA's ordering: vector clocks per stream, an event holds
    //! the clock of its last record, a wait merges it, a host wait merges
    //! the stream's clock into everything enqueued afterwards. Every pair of
    //! uses where one writes must be ordered, and every use must be complete
    //! before the free.

    use super::*;

    const MAX: usize = 32;
    type Clock = [u64; MAX];

    fn merge(a: &mut Clock, b: &Clock) {
        for (x, y) in a.iter_mut().zip(b) {
            *x = (*x).max(*y);
        }
    }

    #[derive(Debug)]
    struct Use {
        stream: usize,
        pos: u64,
        write: bool,
        what: String,
    }

    /// The GPU model. Stream 0 is the buffer's home.
    struct Gpu {
        clocks: Vec<Clock>,
        events: [Option<Clock>; Ev::COUNT],
        host: Clock,
        uses: Vec<Use>,
        calls: usize,
    }

    impl Gpu {
        fn new() -> Gpu {
            Gpu {
                clocks: vec![[0; MAX]],
                events: [None; Ev::COUNT],
                host: [0; MAX],
                uses: Vec::new(),
                calls: 0,
            }
        }
        fn stream(&mut self) -> usize {
            assert!(self.clocks.len() < MAX, "model: too many streams");
            self.clocks.push([0; MAX]);
            self.clocks.len() - 1
        }
        fn enqueue(&mut self, s: usize) -> u64 {
            let host = self.host;
            merge(&mut self.clocks[s], &host);
            self.clocks[s][s] += 1;
            self.clocks[s][s]
        }
        fn record(&mut self, ev: Ev, s: usize) {
            self.calls += 1;
            self.enqueue(s);
            self.events[ev.index()] = Some(self.clocks[s]);
        }
        fn wait(&mut self, s: usize, ev: Ev) {
            self.calls += 1;
            self.enqueue(s);
            if let Some(c) = self.events[ev.index()] {
                merge(&mut self.clocks[s], &c);
            }
        }
        fn sync(&mut self, s: usize) {
            let c = self.clocks[s];
            merge(&mut self.host, &c);
        }
        /// A use enqueued on `s`: it must come after every earlier use it
        /// conflicts with.
        fn use_(&mut self, s: usize, write: bool, what: String) -> Result<(), String> {
            let pos = self.enqueue(s);
            let now = self.clocks[s];
            for u in &self.uses {
                if (u.write || write) && now[u.stream] < u.pos {
                    return Err(format!("{what} is not ordered after {}", u.what));
                }
            }
            self.uses.push(Use {
                stream: s,
                pos,
                write,
                what,
            });
            Ok(())
        }
        /// The free: every use must be complete on the host.
        fn free(&self) -> Result<(), String> {
            match self.uses.iter().find(|u| self.host[u.stream] < u.pos) {
                Some(u) => Err(format!("freed while {} may run", u.what)),
                None => Ok(()),
            }
        }
        fn exec(&mut self, s: usize, a: Act) {
            match a {
                Act::RecordHome => self.record(Ev::Home, 0),
                Act::HomeWaits(e) => self.wait(0, e),
                Act::Waits(e) => self.wait(s, e),
            }
        }
        fn after(&mut self, s: usize, a: After) {
            match a {
                After::Nothing => {}
                After::Record(e) => self.record(e, s),
                After::Sync => self.sync(s),
            }
        }
    }

    /// A tracked buffer on the model.
    struct Buf {
        t: Track,
        gpu: Gpu,
        /// The buffer's lock-free flag for home reads, kept as `Uses` keeps
        /// it: set after a home read under the lock, cleared by every
        /// exclusive use.
        free: bool,
        /// Home reads that took that path.
        skipped: usize,
    }

    impl Buf {
        fn new() -> Buf {
            let mut gpu = Gpu::new();
            // the zeroing, on home
            gpu.use_(0, true, "the zeroing".into()).unwrap();
            Buf {
                t: Track::new(true),
                gpu,
                free: false,
                skipped: 0,
            }
        }
        fn acquire(&mut self, s: usize, on: On, write: bool) -> After {
            let Buf {
                t,
                gpu,
                free,
                skipped,
            } = self;
            if !write && on == On::Home && *free {
                // the fast path skips the tracker: it must have nothing to
                // do, now or for any later use
                let before = t.clone();
                let mut acts = Vec::new();
                let after = t.read(on, &mut |a| acts.push(a));
                assert!(acts.is_empty() && after == After::Nothing && *t == before);
                *skipped += 1;
                return After::Nothing;
            }
            let mut act = |a| gpu.exec(s, a);
            if write {
                *free = false;
                t.write(on, &mut act)
            } else {
                let after = t.read(on, &mut act);
                if on == On::Home {
                    *free = t.home_read_is_free();
                }
                after
            }
        }
        fn finish(
            &mut self,
            s: usize,
            write: bool,
            after: After,
            what: String,
        ) -> Result<(), String> {
            self.gpu.use_(s, write, what)?;
            self.gpu.after(s, after);
            Ok(())
        }
        fn use_(&mut self, s: usize, on: On, write: bool) -> Result<(), String> {
            let after = self.acquire(s, on, write);
            let what = format!("{} on stream {s}", if write { "write" } else { "read" });
            self.finish(s, write, after, what)
        }
        fn drop_(mut self) -> Result<(), String> {
            let Buf { t, gpu, .. } = &mut self;
            t.join(&mut |a| gpu.exec(0, a));
            gpu.sync(0);
            gpu.free()
        }
    }

    fn foreign(key: usize) -> On {
        On::Foreign {
            key: Some(key),
            recordable: true,
        }
    }

    #[test]
    fn home_uses_make_no_driver_call() {
        let mut b = Buf::new();
        for i in 0..100 {
            b.use_(0, On::Home, i % 3 == 0).unwrap();
        }
        assert_eq!(b.gpu.calls, 0);
        b.drop_().unwrap();
    }

    #[test]
    fn written_on_one_stream_reduced_on_another_read_back_on_the_first() {
        let mut b = Buf::new();
        let other = b.gpu.stream();
        b.use_(0, On::Home, true).unwrap(); // a kernel writes it on home
        b.use_(other, foreign(7), true).unwrap(); // all_reduce in place on another stream
        b.use_(0, On::Home, false).unwrap(); // read back on home
        b.use_(0, On::Home, true).unwrap();
        b.drop_().unwrap();
    }

    #[test]
    fn a_write_waits_for_readers_on_two_streams() {
        let mut b = Buf::new();
        let (t, u) = (b.gpu.stream(), b.gpu.stream());
        b.use_(t, foreign(1), false).unwrap();
        b.use_(u, foreign(2), false).unwrap();
        b.use_(0, On::Home, true).unwrap();
        b.drop_().unwrap();
        // and a write on a third stream
        let mut b = Buf::new();
        let (t, u, w) = (b.gpu.stream(), b.gpu.stream(), b.gpu.stream());
        b.use_(t, foreign(1), false).unwrap();
        b.use_(u, foreign(2), false).unwrap();
        b.use_(w, foreign(3), true).unwrap();
        b.drop_().unwrap();
    }

    /// cudarc 0.19's scheme (one read event, one write event) on the same
    /// model: the checker sees its multi-reader hazard.
    #[test]
    fn the_model_catches_a_single_read_event() {
        let mut gpu = Gpu::new();
        let (t, u) = (gpu.stream(), gpu.stream());
        let (r, w) = (Ev::Read(0), Ev::Write);
        let read = |gpu: &mut Gpu, s: usize| {
            gpu.wait(s, w);
            let res = gpu.use_(s, false, format!("read on stream {s}"));
            gpu.record(r, s);
            res
        };
        read(&mut gpu, t).unwrap();
        read(&mut gpu, u).unwrap();
        gpu.wait(0, r);
        gpu.wait(0, w);
        let err = gpu.use_(0, true, "write on stream 0".into()).unwrap_err();
        assert!(err.contains("read on stream 1"), "{err}");
    }

    /// A home read acquired, then a foreign read records `Ev::Home` before
    /// the home read is enqueued: a later foreign write must still wait for
    /// that home read (the foreign read must not clear `home_r`).
    #[test]
    fn a_home_read_in_flight_survives_a_foreign_record() {
        let mut b = Buf::new();
        let (t, w) = (b.gpu.stream(), b.gpu.stream());
        let home = b.acquire(0, On::Home, false);
        b.use_(t, foreign(1), false).unwrap();
        b.finish(0, false, home, "home read".into()).unwrap();
        b.use_(w, foreign(2), true).unwrap();
        b.drop_().unwrap();
    }

    /// A stream destroyed with its read in flight, and a new stream with the
    /// same handle: the shared slot keeps the old read.
    #[test]
    fn a_reused_handle_keeps_the_old_read() {
        let mut b = Buf::new();
        let (old, new) = (b.gpu.stream(), b.gpu.stream());
        b.use_(old, foreign(5), false).unwrap();
        b.use_(new, foreign(5), false).unwrap();
        b.use_(0, On::Home, true).unwrap();
        b.drop_().unwrap();
    }

    /// More reader streams than slots: the extra one waits on the host.
    #[test]
    fn readers_beyond_the_slots_wait_on_the_host() {
        let mut b = Buf::new();
        let mut afters = Vec::new();
        for k in 0..READ_SLOTS + 2 {
            let s = b.gpu.stream();
            let a = b.acquire(s, foreign(k), false);
            afters.push(a);
            b.finish(s, false, a, format!("read {k}")).unwrap();
        }
        assert!(
            afters[..READ_SLOTS]
                .iter()
                .all(|a| matches!(a, After::Record(Ev::Read(_))))
        );
        assert_eq!(afters[READ_SLOTS..], [After::Sync, After::Sync]);
        b.use_(0, On::Home, true).unwrap();
        b.drop_().unwrap();
    }

    /// Tracking stops while foreign uses are pending: a read then waits for
    /// the pending write, a write for everything, which it then clears.
    #[test]
    fn uses_without_tracking_wait_for_pending_foreign_uses() {
        let mut t = Track::new(true);
        let mut acts = Vec::new();
        let f = |k| On::Foreign {
            key: Some(k),
            recordable: true,
        };
        assert_eq!(t.write(f(7), &mut |_| ()), After::Record(Ev::Write));
        assert_eq!(t.read(f(8), &mut |_| ()), After::Record(Ev::Read(0)));
        assert!(t.foreign_pending());
        t.untracked_read(&mut |a| acts.push(a));
        assert_eq!(acts, [Act::Waits(Ev::Write)]);
        assert!(t.foreign_pending(), "a read frees nothing");
        acts.clear();
        // a foreign write left no read slot; a read on 8 took slot 0
        t.untracked_write(&mut |a| acts.push(a));
        assert_eq!(acts, [Act::Waits(Ev::Write), Act::Waits(Ev::Read(0))]);
        assert!(!t.foreign_pending());
        acts.clear();
        t.untracked_write(&mut |a| acts.push(a));
        assert!(acts.is_empty(), "nothing left to wait for");
    }

    /// The foreign path's cost in the two patterns the docs describe.
    #[test]
    fn driver_calls_per_use_on_another_stream() {
        // in-place all_reduce on a communication stream of a buffer written
        // on its home (compute) stream, every step
        let mut b = Buf::new();
        let comm = b.gpu.stream();
        b.use_(0, On::Home, true).unwrap();
        b.use_(comm, foreign(1), true).unwrap();
        b.use_(0, On::Home, false).unwrap();
        let before = b.gpu.calls;
        b.use_(0, On::Home, true).unwrap(); // home write, comm write already joined
        b.use_(comm, foreign(1), true).unwrap();
        b.use_(0, On::Home, false).unwrap();
        // record Home + wait Home + record Write (the guard), then the home
        // read waits for Write
        assert_eq!(b.gpu.calls - before, 4);
        b.drop_().unwrap();
    }

    /// A small deterministic generator (no dependency).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Random programs: reads in flight together on several streams, writes,
    /// streams destroyed and their handles reused, per-thread streams (no
    /// key), streams that cannot record, more readers than slots.
    #[test]
    fn random_programs_order_every_conflict() {
        let mut skipped = 0;
        for seed in 1..=3000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut b = Buf::new();
            // handle -> model stream, for six foreign handles
            let mut live: Vec<usize> = (0..6).map(|_| b.gpu.stream()).collect();
            let mut flying: Vec<(usize, After, String)> = Vec::new();
            let mut log = Vec::new();
            for step in 0..60 {
                if b.gpu.clocks.len() >= MAX - 2 {
                    break;
                }
                let r = rng.below(10);
                let (s, on) = match rng.below(4) {
                    0 => (0, On::Home),
                    1 if rng.below(4) == 0 => (
                        b.gpu.stream(),
                        On::Foreign {
                            key: None,
                            recordable: true,
                        },
                    ),
                    1 if rng.below(4) == 0 => {
                        let h = rng.below(live.len());
                        (
                            live[h],
                            On::Foreign {
                                key: Some(h),
                                recordable: false,
                            },
                        )
                    }
                    _ => {
                        let h = rng.below(live.len());
                        (live[h], foreign(h))
                    }
                };
                let res = if r < 4 {
                    log.push(format!("{step}: acquire read on {s} ({on:?})"));
                    let a = b.acquire(s, on, false);
                    flying.push((s, a, format!("read on stream {s} (step {step})")));
                    Ok(())
                } else if r < 7 && !flying.is_empty() {
                    let (s, a, what) = flying.remove(rng.below(flying.len()));
                    log.push(format!("{step}: enqueue {what}, then {a:?}"));
                    b.finish(s, false, a, what)
                } else if flying.is_empty() && r < 9 {
                    log.push(format!("{step}: write on {s} ({on:?})"));
                    let a = b.acquire(s, on, true);
                    b.finish(s, true, a, format!("write on stream {s} (step {step})"))
                } else {
                    // a stream with nothing in flight is destroyed (its work
                    // may still run) and a new one gets its handle
                    let h = rng.below(live.len());
                    if flying.iter().all(|(s, ..)| *s != live[h]) {
                        log.push(format!("{step}: handle {h} now names a new stream"));
                        live[h] = b.gpu.stream();
                    }
                    Ok(())
                };
                if let Err(e) = res {
                    panic!("seed {seed}: {e}\n{}", log.join("\n"));
                }
            }
            for (s, a, what) in flying.drain(..) {
                if let Err(e) = b.finish(s, false, a, what) {
                    panic!("seed {seed}: {e}\n{}", log.join("\n"));
                }
            }
            skipped += b.skipped;
            if let Err(e) = b.drop_() {
                panic!("seed {seed}: {e}\n{}", log.join("\n"));
            }
        }
        // the programs reach the lock-free home read
        assert!(skipped > 1000, "{skipped} home reads skipped the tracker");
    }
}
