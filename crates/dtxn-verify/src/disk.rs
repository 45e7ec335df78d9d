//! A simulated disk holding a decision log ([`SimDisk`]), for the crash
//! runs of the [simulation](crate::sim): it outlives the coordinators that
//! use it, as a file outlives the processes that write it, and it is
//! deterministic on tokio's paused clock (every delay and failure is drawn
//! from its seeded generator, in the order the coordinator asks).
//!
//! # Durability
//!
//! * A write of a Commit decision ([`DecisionLog::log_commit`]) takes 0 to
//!   [`SimDisk::MAX_DELAY`] (seeded) and is durable only once its future
//!   completes: a write whose future is dropped first (its coordinator
//!   crashed) wrote nothing.
//! * A seeded share of writes fails. Half of the failures lost the record;
//!   the other half reached the disk all the same (the coordinator cannot
//!   tell the two apart and writes again).
//! * End records ([`DecisionLog::log_end`]) are lazy: each becomes durable 0
//!   to [`SimDisk::MAX_DELAY`] (seeded) after it was asked for, so a crash
//!   can lose it (recovery then delivers `commit` once more).
//! * [`SimDisk::crash`] ends the process that has the disk open: the log
//!   handle it was given is fenced (whatever it still asks for is ignored —
//!   a dead process writes nothing; its writes never complete), the ends
//!   due by then are kept and the later ones lost.
//! * A crash can be armed on a write ([`SimDisk::crash_on`]): when the
//!   `n`-th write [starts](WriteEvent::Starts) or
//!   [reaches the disk](WriteEvent::Lands) (the latter then never
//!   returns to the coordinator), [`SimDisk::crash_requested`] completes,
//!   so a crash lands exactly while a decision is being written, or between
//!   it becoming durable and the coordinator learning so.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtxn::log::{CommitRecord, DecisionLog, LogContents, LogError, LogFuture};
use dtxn::TransactionId;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::lock;
use crate::trace::{txn_label, Trace};

/// A point in the life of a decision-log write, to arm a crash on
/// ([`SimDisk::crash_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteEvent {
    /// The coordinator asked for the write; nothing is on the disk yet.
    Starts,
    /// The record reached the disk; the write's future then never
    /// completes, so the coordinator never learns it is durable.
    Lands,
}

/// What became of a write, drawn when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Durable,
    /// Reported failed; the record did not reach the disk.
    FailedLost,
    /// Reported failed; the record reached the disk all the same.
    FailedDurable,
}

struct State {
    rng: fastrand::Rng,
    failure_share: f64,
    /// The Commit decisions on the disk and not ended.
    records: BTreeMap<TransactionId, CommitRecord>,
    /// Every transaction whose decision ever reached the disk.
    written: BTreeSet<TransactionId>,
    /// Every transaction whose end record reached the disk.
    ended: BTreeSet<TransactionId>,
    /// End records asked for, durable once due.
    ends: Vec<(Instant, TransactionId)>,
    incarnations: Vec<u64>,
    /// The process allowed to use the disk; handles of older ones are
    /// fenced.
    session: u64,
    writes_started: u64,
    writes_landed: u64,
    writes_in_flight: usize,
    crash_on: Option<(WriteEvent, u64)>,
    trace: Option<Trace>,
}

impl State {
    fn log(&self, args: fmt::Arguments<'_>) {
        if let Some(trace) = &self.trace {
            trace.log(format_args!("disk: {args}"));
        }
    }

    /// Makes the end records due by `now` durable.
    fn flush(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.ends.len() {
            let (due, txn) = self.ends[i];
            if due <= now {
                self.ends.remove(i);
                self.records.remove(&txn);
                self.ended.insert(txn);
            } else {
                i += 1;
            }
        }
    }
}

/// A simulated disk with a decision log on it. See the
/// [module docs](self). Cloning gives another handle to the same disk.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
    crash: Arc<Notify>,
}

impl SimDisk {
    /// The longest a write or an end record takes to become durable.
    pub const MAX_DELAY: Duration = Duration::from_millis(2);

    /// An empty disk whose delays and failures are drawn from `seed`,
    /// failing `failure_share` of the writes, logging to `trace` if any.
    pub fn new(seed: u64, failure_share: f64, trace: Option<&Trace>) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                rng: fastrand::Rng::with_seed(seed),
                failure_share,
                records: BTreeMap::new(),
                written: BTreeSet::new(),
                ended: BTreeSet::new(),
                ends: Vec::new(),
                incarnations: Vec::new(),
                session: 0,
                writes_started: 0,
                writes_landed: 0,
                writes_in_flight: 0,
                crash_on: None,
                trace: trace.cloned(),
            })),
            crash: Arc::new(Notify::new()),
        }
    }

    /// Arms a crash on the `n`-th write (counting from 1) at `event`:
    /// [`crash_requested`](Self::crash_requested) completes then.
    pub fn crash_on(&self, event: WriteEvent, n: u64) {
        lock(&self.state).crash_on = Some((event, n));
    }

    /// Completes once an armed write event happened (never if none is
    /// armed, or it never happens).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event that happens while nobody waits is kept for
    /// the next call.
    pub async fn crash_requested(&self) {
        self.crash.notified().await;
    }

    /// A decision log on this disk for the process that opens it now (a
    /// coordinator passed to [`TransactionCoordinator::recover`](dtxn::TransactionCoordinator::recover)).
    pub fn attach(&self) -> Arc<dyn DecisionLog> {
        let session = lock(&self.state).session;
        Arc::new(SimLog {
            disk: self.clone(),
            session,
        })
    }

    /// The process using the disk crashes now: its log handle is fenced,
    /// end records due by now are durable and the others lost. Returns the
    /// transactions whose end was lost. Call it inside the crashing
    /// runtime, before dropping it.
    pub fn crash(&self) -> Vec<TransactionId> {
        let mut s = lock(&self.state);
        s.flush(Instant::now());
        s.session += 1;
        let lost: Vec<TransactionId> = s.ends.drain(..).map(|(_, txn)| txn).collect();
        if !lost.is_empty() {
            let labels: Vec<String> = lost.iter().map(|t| txn_label(*t)).collect();
            s.log(format_args!("end records lost: {labels:?}"));
        }
        lost
    }

    /// Writes started and not completed nor dropped.
    pub fn writes_in_flight(&self) -> usize {
        lock(&self.state).writes_in_flight
    }

    /// Whether `txn`'s Commit decision ever reached the disk.
    pub fn written(&self, txn: TransactionId) -> bool {
        lock(&self.state).written.contains(&txn)
    }

    /// Whether `txn`'s end record reached the disk (as of the last
    /// operation or [`crash`](Self::crash); call
    /// [`in_doubt`](Self::in_doubt) first to bring due ends in).
    pub fn ended(&self, txn: TransactionId) -> bool {
        lock(&self.state).ended.contains(&txn)
    }

    /// The Commit decisions on the disk and not ended, by transaction id
    /// (as a coordinator opening the log now would find them).
    pub fn in_doubt(&self) -> Vec<CommitRecord> {
        let mut s = lock(&self.state);
        s.flush(Instant::now());
        s.records.values().cloned().collect()
    }
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("SimDisk")
            .field("records", &s.records.len())
            .field("session", &s.session)
            .finish_non_exhaustive()
    }
}

/// One process's handle on a [`SimDisk`].
struct SimLog {
    disk: SimDisk,
    session: u64,
}

/// Counts a write in flight until its future completes or is dropped.
struct InFlight(Arc<Mutex<State>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0).writes_in_flight -= 1;
    }
}

impl SimLog {
    /// Whether this handle's process is the live one.
    fn live(&self, s: &State) -> bool {
        s.session == self.session
    }
}

/// Lets the armed crash go if it is armed on `event` of the `n`-th write.
fn arm(s: &State, crash: &Notify, event: WriteEvent, n: u64) -> bool {
    let armed = s.crash_on == Some((event, n));
    if armed {
        s.log(format_args!(
            "write {n} {event:?}: the armed crash goes off"
        ));
        crash.notify_one();
    }
    armed
}

impl DecisionLog for SimLog {
    fn open(&self, incarnation: u64) -> LogFuture<LogContents> {
        let mut s = lock(&self.disk.state);
        if !self.live(&s) {
            return Box::pin(std::future::pending());
        }
        s.flush(Instant::now());
        s.incarnations.push(incarnation);
        let contents = LogContents::new(
            s.records.values().cloned().collect(),
            s.incarnations.clone(),
        );
        Box::pin(std::future::ready(Ok(contents)))
    }

    fn log_commit(&self, record: CommitRecord) -> LogFuture<()> {
        let (delay, fate, n) = {
            let mut s = lock(&self.disk.state);
            if !self.live(&s) {
                return Box::pin(std::future::pending());
            }
            let delay = Duration::from_millis(s.rng.u64(0..=SimDisk::MAX_DELAY.as_millis() as u64));
            let fate = if s.rng.f64() >= s.failure_share {
                Fate::Durable
            } else if s.rng.bool() {
                Fate::FailedLost
            } else {
                Fate::FailedDurable
            };
            s.writes_started += 1;
            s.writes_in_flight += 1;
            let n = s.writes_started;
            s.log(format_args!(
                "write {n} of {}'s Commit decision starts ({delay:?}, {fate:?})",
                txn_label(record.txn)
            ));
            arm(&s, &self.disk.crash, WriteEvent::Starts, n);
            (delay, fate, n)
        };
        let guard = InFlight(Arc::clone(&self.disk.state));
        let disk = self.disk.clone();
        let session = self.session;
        Box::pin(async move {
            let _in_flight = guard;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            // `None`: the process died meanwhile (its write never
            // completes); `Some(crash)`: whether it dies now.
            let crash = {
                let mut s = lock(&disk.state);
                let txn = record.txn;
                if s.session != session {
                    None
                } else if fate == Fate::FailedLost {
                    s.flush(Instant::now());
                    s.log(format_args!("write {n} ({}) fails, lost", txn_label(txn)));
                    Some(false)
                } else {
                    s.flush(Instant::now());
                    s.records.insert(txn, record);
                    s.written.insert(txn);
                    s.writes_landed += 1;
                    s.log(format_args!(
                        "write {n} ({}) is durable{}",
                        txn_label(txn),
                        if fate == Fate::FailedDurable {
                            ", but reported failed"
                        } else {
                            ""
                        }
                    ));
                    Some(arm(&s, &disk.crash, WriteEvent::Lands, s.writes_landed))
                }
            };
            if crash != Some(false) {
                // Dead, or durable but the coordinator never hears of it.
                return std::future::pending().await;
            }
            match fate {
                Fate::Durable => Ok(()),
                Fate::FailedLost | Fate::FailedDurable => Err(LogError::Backend {
                    message: "simulated disk: write failed".to_owned(),
                }),
            }
        })
    }

    fn log_end(&self, txn: TransactionId) {
        let mut s = lock(&self.disk.state);
        if !self.live(&s) {
            return;
        }
        let now = Instant::now();
        let delay = Duration::from_millis(s.rng.u64(0..=SimDisk::MAX_DELAY.as_millis() as u64));
        s.log(format_args!(
            "end of {} asked for (durable in {delay:?})",
            txn_label(txn)
        ));
        s.ends.push((now + delay, txn));
        s.flush(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u128) -> CommitRecord {
        CommitRecord {
            txn: TransactionId::from_u128(n),
            participants: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_durable_only_when_it_completes_and_a_crash_fences_the_old_process() {
        let disk = SimDisk::new(1, 0.0, None);
        let log = disk.attach();
        log.open(7).await.unwrap();
        let write = log.log_commit(record(1));
        assert_eq!(disk.writes_in_flight(), 1);
        drop(write);
        assert_eq!(disk.writes_in_flight(), 0);
        assert!(disk.in_doubt().is_empty(), "a dropped write wrote nothing");
        log.log_commit(record(2)).await.unwrap();
        assert!(disk.written(TransactionId::from_u128(2)));
        disk.crash();
        log.log_end(TransactionId::from_u128(2));
        assert_eq!(
            disk.in_doubt().len(),
            1,
            "the dead process's end is ignored"
        );
        let contents = disk.attach().open(8).await.unwrap();
        assert_eq!(contents.in_doubt, [record(2)]);
        assert_eq!(contents.incarnations, [7, 8]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_end_not_yet_due_is_lost_in_a_crash() {
        let txn = TransactionId::from_u128(3);
        // Some seed gives the end record a delay.
        for seed in 0..100 {
            let disk = SimDisk::new(seed, 0.0, None);
            let log = disk.attach();
            log.log_commit(record(3)).await.unwrap();
            log.log_end(txn);
            if disk.crash().is_empty() {
                assert!(disk.ended(txn) && disk.in_doubt().is_empty());
                continue;
            }
            assert!(!disk.ended(txn));
            assert_eq!(disk.in_doubt(), [record(3)]);
            return;
        }
        panic!("no seed delayed an end record");
    }

    #[tokio::test(start_paused = true)]
    async fn an_armed_landing_makes_the_write_durable_and_never_return() {
        let disk = SimDisk::new(1, 0.0, None);
        disk.crash_on(WriteEvent::Lands, 1);
        let log = disk.attach();
        let write = log.log_commit(record(4));
        tokio::select! {
            biased;
            () = disk.crash_requested() => {}
            _ = write => panic!("the armed write returned"),
        }
        assert!(disk.written(TransactionId::from_u128(4)));
    }
}
