//! The state machine of one transaction.

use std::time::Duration;

use super::retry::RetryPolicy;
use super::types::*;

/// Microseconds since the transaction began, saturating; [`NEVER`] = not
/// (yet). Per-participant timings are kept this small (8 bytes a
/// participant) because a transaction may have hundreds.
type Micros = u32;
const NEVER: Micros = u32::MAX;

fn micros(d: Duration) -> Micros {
    u32::try_from(d.as_micros()).unwrap_or(NEVER - 1)
}

fn duration(m: Micros) -> Option<Duration> {
    (m != NEVER).then(|| Duration::from_micros(m.into()))
}

/// What the core records only to report it: when each phase began and
/// ended. The protocol never reads it, so it is not part of a
/// transaction's identity: transactions that differ only here compare
/// equal and hash alike, as they behave alike (a model checker exploring
/// the states must not tell them apart).
#[derive(Debug, Clone)]
struct Timings {
    decided_at: Option<Duration>,
    prepare_started: Micros,
    finished: Micros,
    // Per participant: in each `Peer` (`Peer::times`), so one allocation
    // holds a participant's progress and its timings.
}

impl PartialEq for Timings {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Timings {}

impl std::hash::Hash for Timings {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

/// The core's time: what it was last told, its deadline and its timers.
/// The core never reads a clock: whoever drives it passes the time since
/// the transaction began (see [`Transaction::handle_at`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Clock {
    /// The latest time fed in (time never goes back).
    now: Duration,
    /// When an Active or Prepared transaction is rolled back;
    /// `Duration::MAX` = never.
    deadline: Duration,
    /// The deadline was declared passed ([`Event::DeadlineExpired`]) while
    /// phase 1 ran: it takes effect when phase 1 ends.
    expired: bool,
    /// The coordinator shut down while phase 1 ran: likewise.
    shutdown: bool,
    /// The state of the jitter generator (SplitMix64).
    rng: u64,
    /// When the retry policy's time budget, which runs from the decision,
    /// is spent (`Duration::MAX`: not decided, or never).
    retry_until: Duration,
}

/// The Commit decision's record in the decision log (see
/// [`Transaction::with_decision_log`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Record {
    /// No decision log: a Commit decision is delivered at once.
    NotKept,
    /// Kept, nothing written (no Commit decision yet, or one with nobody
    /// to deliver it to).
    Unwritten,
    /// Write `attempt` is under way.
    Writing { attempt: u32 },
    /// Write `attempt - 1` failed; write `attempt` is due at `due`.
    Retrying { attempt: u32, due: Duration },
    /// Durable: phase 2 is delivered.
    Durable,
}

/// The phase-2 call of `attempt` for the decision (`commit` or not).
fn phase2_action(commit: bool, participant: usize, attempt: u32) -> Action {
    if commit {
        Action::Commit {
            participant,
            attempt,
        }
    } else {
        Action::Rollback {
            participant,
            attempt,
        }
    }
}

/// Whether `peer` gets `commit` after a Commit decision: it voted `Ready`
/// (or, with the planted bug, `ReadOnly`).
fn gets_commit(peer: &Peer, read_only_too: bool) -> bool {
    match peer.prepare {
        PrepareStatus::Voted(PreparedResult::Ready) => true,
        PrepareStatus::Voted(PreparedResult::ReadOnly) => read_only_too,
        _ => false,
    }
}

/// The limits the core enforces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Participants per transaction.
    pub max_participants: usize,
    /// Phase-2 retry budget (only `max_attempts` matters to the core).
    pub retry: RetryPolicy,
}

impl Limits {
    /// The default participants per transaction.
    pub const DEFAULT_MAX_PARTICIPANTS: usize = 100;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_participants: Self::DEFAULT_MAX_PARTICIPANTS,
            retry: RetryPolicy::default(),
        }
    }
}

/// One transaction's protocol state. See the [module docs](super).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Transaction {
    state: TransactionState,
    cause: Option<AbortCause>,
    /// Participants registered so far.
    registered: usize,
    /// Each participant's progress. Empty while Active (registration only
    /// counts, so a registering transaction carries no per-participant
    /// state and no growth slack); made, at its exact size, when the
    /// transaction leaves Active.
    peers: Vec<Peer>,
    limits: Limits,
    /// `prepare` calls in flight.
    preparing: usize,
    /// Participants that still need phase 2 to finish before the transaction
    /// is terminal (including in-flight prepares after an Abort decision).
    outstanding: usize,
    clock: Clock,
    timings: Timings,
    /// Phase-2 attempts waiting out their backoff: (participant, due).
    /// Their status is already `InFlight` with the new attempt; the action
    /// is issued by [`Transaction::handle_timeout`] once due.
    scheduled: Vec<(usize, Duration)>,
    record: Record,
    #[cfg(feature = "planted-bugs")]
    planted: Option<PlantedBug>,
}

/// Deliberate protocol bugs, compiled in only with the `planted-bugs`
/// feature, that the verification suite must catch (so none of its checkers
/// can pass vacuously). Without the feature no bug can be switched on.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlantedBug {
    /// A commit request after an Abort decision sends `commit` to the Ready
    /// voters (breaks agreement).
    CommitAfterAbort,
    /// The Abort decision forgets prepares still in flight: a late `Ready`
    /// never gets `rollback` (breaks rollback coverage).
    ForgetInFlightPrepare,
    /// A Commit decision with a hazard is reported as Aborted (breaks
    /// stability / honest outcome).
    AbortedAfterCommit,
    /// The first `Ready` vote makes the transaction Prepared without waiting
    /// for the others (breaks commit validity).
    PreparedOnFirstReady,
    /// A participant given up on is recorded as acknowledged (hides a hazard).
    HideHazard,
    /// `ReadOnly` voters also get `commit` (breaks phase discipline).
    CommitReadOnly,
    /// With a decision log, `commit` calls go out with the write of the
    /// decision instead of after it is durable (breaks agreement when the
    /// coordinator crashes before the write lands: presumed abort).
    CommitBeforeLogged,
    /// A deadline or shutdown that arrives while phase 1 runs is forgotten:
    /// a transaction that then reaches Prepared with no client left is
    /// never rolled back (breaks termination).
    ForgetDeferredAbandonment,
}

impl Transaction {
    /// A new transaction in `Active` with no participants.
    pub fn new(limits: Limits) -> Self {
        Self {
            state: TransactionState::Active,
            cause: None,
            registered: 0,
            peers: Vec::new(),
            limits,
            preparing: 0,
            outstanding: 0,
            clock: Clock {
                now: Duration::ZERO,
                deadline: Duration::MAX,
                expired: false,
                shutdown: false,
                rng: 0,
                retry_until: Duration::MAX,
            },
            timings: Timings {
                decided_at: None,
                prepare_started: NEVER,
                finished: NEVER,
            },
            scheduled: Vec::new(),
            record: Record::NotKept,
            #[cfg(feature = "planted-bugs")]
            planted: None,
        }
    }

    /// The same transaction, rolled back by the core itself once it is
    /// still Active or Prepared `deadline` after it began (PROTOCOL.md
    /// rule 12). Without one it has no deadline.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.clock.deadline = deadline;
        self
    }

    /// The same transaction, drawing its phase-2 retry jitter from a
    /// generator seeded with `seed`: the same seed and the same inputs give
    /// the same delays.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.clock.rng = seed;
        self
    }

    /// With a decision log (PROTOCOL.md rule 16, presumed abort): a Commit
    /// decision with participants to deliver it to first asks for
    /// [`Action::LogCommit`], and its `commit` calls are issued only once
    /// [`Event::CommitLogged`] reports it durable. Abort decisions are not
    /// logged. Until then the transaction is Committing but
    /// [`awaiting_log`](Self::awaiting_log): nobody may be told it
    /// committed, since a crash now would abort it.
    #[must_use]
    pub fn with_decision_log(mut self) -> Self {
        self.record = Record::Unwritten;
        self
    }

    /// Whether the transaction keeps its Commit decision in a decision log.
    pub fn keeps_decision_log(&self) -> bool {
        self.record != Record::NotKept
    }

    /// The Commit decision is taken but not durable yet: a write to the
    /// decision log is under way or waits to be retried. An outcome query
    /// must then be answered "pending", not "committed".
    #[inline]
    pub fn awaiting_log(&self) -> bool {
        matches!(
            self.record,
            Record::Writing { .. } | Record::Retrying { .. }
        )
    }

    /// The write of the decision log under way, if one is (its attempt).
    pub fn log_write_in_flight(&self) -> Option<u32> {
        match self.record {
            Record::Writing { attempt } => Some(attempt),
            _ => None,
        }
    }

    /// The Commit decision is durable in the decision log (so its end, once
    /// every participant acknowledged, is worth an end record).
    pub fn commit_logged(&self) -> bool {
        self.record == Record::Durable
    }

    /// Switches on a deliberate bug (verification only).
    #[cfg(feature = "planted-bugs")]
    #[doc(hidden)]
    pub fn plant(&mut self, bug: PlantedBug) {
        self.planted = Some(bug);
    }

    #[inline]
    fn planted(&self, _bug: PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.planted == Some(_bug);
        #[cfg(not(feature = "planted-bugs"))]
        false
    }

    /// The current state.
    pub fn state(&self) -> TransactionState {
        self.state
    }

    /// Why the decision was Abort, once it was.
    pub fn abort_cause(&self) -> Option<&AbortCause> {
        self.cause.as_ref()
    }

    /// Every participant's progress, in registration order. Empty while
    /// Active: every registered participant is then [`Peer::UNASKED`].
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }

    /// Number of registered participants.
    pub fn participant_count(&self) -> usize {
        self.registered
    }

    /// The latest time fed in, since the transaction began.
    pub fn now(&self) -> Duration {
        self.clock.now
    }

    /// The deadline, since the transaction began (`Duration::MAX`: none).
    pub fn deadline(&self) -> Duration {
        self.clock.deadline
    }

    /// When the transaction left Active (phase 1 began, or it was decided
    /// Abort before).
    pub fn prepare_started(&self) -> Option<Duration> {
        duration(self.timings.prepare_started)
    }

    /// When the decision was taken.
    pub fn decided_at(&self) -> Option<Duration> {
        self.timings.decided_at
    }

    /// When the transaction reached Committed or Aborted.
    pub fn finished_at(&self) -> Option<Duration> {
        duration(self.timings.finished)
    }

    /// How long participant `i`'s `prepare` took, once it ended.
    pub fn prepare_latency(&self, i: usize) -> Option<Duration> {
        let started = duration(self.timings.prepare_started)?;
        let ended = duration(self.peers.get(i)?.times.prepared)?;
        Some(ended.saturating_sub(started))
    }

    /// How long participant `i`'s phase 2 took, retries included, once it
    /// ended. It began at the decision or, for a `prepare` still running
    /// then, when that `prepare` ended.
    pub fn phase2_latency(&self, i: usize) -> Option<Duration> {
        let t = self.peers.get(i)?.times;
        let decided = self.timings.decided_at?;
        let started = duration(t.prepared).map_or(decided, |p| p.max(decided));
        Some(duration(t.phase2_done)?.saturating_sub(started))
    }

    /// When participant `i`'s next phase-2 attempt is due, if it is waiting
    /// out its backoff (its status is already `InFlight` with that attempt,
    /// but no call is made yet).
    pub fn retry_due(&self, i: usize) -> Option<Duration> {
        self.scheduled
            .iter()
            .find(|&&(p, _)| p == i)
            .map(|&(_, due)| due)
    }

    /// The next time the core needs [`handle_timeout`](Self::handle_timeout):
    /// the deadline while Active or Prepared, the earliest phase-2
    /// attempt waiting out its backoff, or the next write of the decision
    /// log after a failed one. `None`: no timer is needed.
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut retry = self.scheduled.iter().map(|&(_, due)| due).min();
        if let Record::Retrying { due, .. } = self.record {
            retry = Some(retry.map_or(due, |r| r.min(due)));
        }
        let deadline = matches!(
            self.state,
            TransactionState::Active | TransactionState::Prepared
        )
        .then_some(self.clock.deadline)
        .filter(|&d| d != Duration::MAX);
        match (retry, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Makes the per-participant state on leaving Active.
    fn materialize_peers(&mut self) {
        if self.peers.len() != self.registered {
            // Each element written from the constant, not cloned from
            // the first (`vec![x; n]` clones, field by field).
            self.peers = (0..self.registered).map(|_| Peer::UNASKED).collect();
        }
    }

    /// The next sample in [0, 1) of the jitter generator (SplitMix64).
    fn sample(&mut self) -> f64 {
        self.clock.rng = self.clock.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.clock.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether the retry policy's time budget, counted from the decision,
    /// is spent.
    fn retry_budget_spent(&self) -> bool {
        self.clock.now >= self.clock.retry_until
    }

    /// The backoff before phase-2 attempt `attempt`, jittered, and never
    /// past the retry time budget: the last attempt comes when it ends, so
    /// phase 2 is bounded by the budget plus one call, whatever the backoff.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = self.limits.retry.backoff(attempt);
        if base.is_zero() {
            return Duration::ZERO;
        }
        let left = self.clock.retry_until.saturating_sub(self.clock.now);
        RetryPolicy::jitter(base, self.sample()).min(left)
    }

    /// Participants given up on in phase 2 (heuristic hazards).
    pub fn hazards(&self) -> impl Iterator<Item = (usize, u32, &CallFailure)> {
        self.peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.phase2 {
                Phase2Status::GaveUp { attempts, last } => Some((i, *attempts, &**last)),
                _ => None,
            })
    }

    /// The one transition function: every state change passes here and
    /// moves outside the protocol's diagram are refused.
    fn transit(&mut self, to: TransactionState) -> Result<(), CoreError> {
        use TransactionState::*;
        let legal = matches!(
            (self.state, to),
            (Active, Preparing)
                | (Active, Aborting)
                | (Preparing, Prepared)
                | (Preparing, Aborting)
                | (Prepared, Committing)
                | (Prepared, Aborting)
                | (Committing, Committed)
                | (Aborting, Aborted)
        );
        if !legal {
            return Err(CoreError::IllegalTransition {
                from: self.state,
                to,
            });
        }
        if self.state == Active {
            self.timings.prepare_started = micros(self.clock.now);
        }
        if to.decision().is_some() && self.timings.decided_at.is_none() {
            self.timings.decided_at = Some(self.clock.now);
            self.clock.retry_until = self
                .clock
                .now
                .saturating_add(self.limits.retry.max_elapsed());
        }
        if to.is_terminal() {
            self.timings.finished = micros(self.clock.now);
        }
        self.state = to;
        Ok(())
    }

    /// Feeds one event at time `now` (since the transaction began; a time
    /// earlier than one already fed counts as that one). An expired
    /// deadline is applied first, as a client calling after it expects:
    /// then the Abort decision stands even if the event itself is refused.
    /// Otherwise as [`handle`](Self::handle).
    pub fn handle_at(
        &mut self,
        event: Event,
        now: Duration,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.clock.now = self.clock.now.max(now);
        self.abandon_if_due(actions)?;
        self.dispatch(event, actions)?;
        // A deadline or shutdown that came during phase 1 takes effect as
        // soon as phase 1 ends in Prepared.
        self.abandon_if_due(actions)
    }

    /// The timers at time `now`: rolls back an Active or Prepared
    /// transaction past its deadline, and issues the phase-2 attempts
    /// whose backoff is over. Call it at [`poll_timeout`](Self::poll_timeout)
    /// (earlier or later is harmless).
    pub fn handle_timeout(
        &mut self,
        now: Duration,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.clock.now = self.clock.now.max(now);
        self.abandon_if_due(actions)?;
        if let Record::Retrying { attempt, due } = self.record {
            if due <= self.clock.now {
                self.record = Record::Writing { attempt };
                actions.push(Action::LogCommit { attempt });
            }
        }
        if self.scheduled.is_empty() {
            return Ok(());
        }
        let commit = self.state == TransactionState::Committing;
        let now = self.clock.now;
        let peers = &self.peers;
        self.scheduled.retain(|&(participant, due)| {
            if due > now {
                return true;
            }
            if let Phase2Status::InFlight { attempt } = peers[participant].phase2 {
                actions.push(phase2_action(commit, participant, attempt));
            }
            false
        });
        Ok(())
    }

    /// An operator's "retry now": brings every phase-2 attempt waiting
    /// out its backoff, and the next write of the decision log, forward to
    /// `now`, and issues them (as [`handle_timeout`](Self::handle_timeout)
    /// would once they are due). Changes nothing else.
    pub fn retry_now(&mut self, now: Duration, actions: &mut Vec<Action>) -> Result<(), CoreError> {
        self.clock.now = self.clock.now.max(now);
        let now = self.clock.now;
        for (_, due) in &mut self.scheduled {
            *due = (*due).min(now);
        }
        if let Record::Retrying { due, .. } = &mut self.record {
            *due = (*due).min(now);
        }
        self.handle_timeout(now, actions)
    }

    /// Rolls back an Active or Prepared transaction whose deadline passed
    /// or whose coordinator shut down, including one that was Preparing
    /// then and has just reached Prepared.
    fn abandon_if_due(&mut self, actions: &mut Vec<Action>) -> Result<(), CoreError> {
        if !matches!(
            self.state,
            TransactionState::Active | TransactionState::Prepared
        ) {
            return Ok(());
        }
        let deferred = !self.planted(PlantedBug::ForgetDeferredAbandonment);
        let cause = if self.clock.shutdown && deferred {
            AbortCause::CoordinatorShutdown
        } else if (self.clock.expired && deferred) || self.clock.now >= self.clock.deadline {
            AbortCause::DeadlineExpired
        } else {
            return Ok(());
        };
        self.decide_abort(cause, actions)
    }

    /// Feeds one event at the latest time fed in (see
    /// [`handle_at`](Self::handle_at)); the participant calls it requires
    /// are appended to `actions`. On error nothing changed.
    pub fn handle(&mut self, event: Event, actions: &mut Vec<Action>) -> Result<(), CoreError> {
        self.handle_at(event, self.clock.now, actions)
    }

    /// Exactly [`handle`](Self::handle)`(Event::Register, actions)`, in
    /// fewer instructions when no timer can be due: an Active transaction
    /// with no deadline passed at the latest time fed in and no shutdown or
    /// expiry noted, where `handle`'s timer checks before and after the
    /// event find nothing to do. Otherwise it is `handle` itself.
    pub fn register(&mut self, actions: &mut Vec<Action>) -> Result<(), CoreError> {
        let idle = self.state == TransactionState::Active
            && !self.clock.shutdown
            && !self.clock.expired
            && self.clock.now < self.clock.deadline;
        if !idle {
            return self.handle(Event::Register, actions);
        }
        self.count_registration()
    }

    /// [`Event::Register`] in the Active state.
    fn count_registration(&mut self) -> Result<(), CoreError> {
        if self.registered >= self.limits.max_participants {
            return Err(CoreError::TooManyParticipants {
                limit: self.limits.max_participants,
            });
        }
        self.registered += 1;
        Ok(())
    }

    fn dispatch(&mut self, event: Event, actions: &mut Vec<Action>) -> Result<(), CoreError> {
        use TransactionState::*;
        match event {
            Event::Register => {
                if self.state != Active {
                    return Err(self.invalid(Operation::Register));
                }
                self.count_registration()
            }
            Event::Prepare => match self.state {
                Active => {
                    self.transit(Preparing)?;
                    self.materialize_peers();
                    if self.peers.is_empty() {
                        return self.transit(Prepared);
                    }
                    for (participant, peer) in self.peers.iter_mut().enumerate() {
                        peer.prepare = PrepareStatus::InFlight;
                        actions.push(Action::Prepare { participant });
                    }
                    self.preparing = self.peers.len();
                    Ok(())
                }
                // Repeats: the driver waits for / reports the phase-1 outcome.
                _ => Ok(()),
            },
            Event::Commit => match self.state {
                Aborting | Aborted if self.planted(PlantedBug::CommitAfterAbort) => {
                    for (participant, peer) in self.peers.iter().enumerate() {
                        if matches!(peer.prepare, PrepareStatus::Voted(PreparedResult::Ready)) {
                            actions.push(Action::Commit {
                                participant,
                                attempt: 1,
                            });
                        }
                    }
                    Ok(())
                }
                Prepared => {
                    self.transit(Committing)?;
                    let read_only_too = self.planted(PlantedBug::CommitReadOnly);
                    if self.record == Record::Unwritten
                        && self
                            .peers
                            .iter()
                            .any(|peer| gets_commit(peer, read_only_too))
                    {
                        self.record = Record::Writing { attempt: 1 };
                        actions.push(Action::LogCommit { attempt: 1 });
                        if self.planted(PlantedBug::CommitBeforeLogged) {
                            self.deliver_commit(actions);
                        }
                        return Ok(());
                    }
                    self.deliver_commit(actions);
                    self.finish_if_done()
                }
                Committing | Committed => Ok(()),
                Active | Preparing | Aborting | Aborted => Err(self.invalid(Operation::Commit)),
            },
            Event::Rollback => match self.state {
                Active | Preparing | Prepared => self.decide_abort(AbortCause::RolledBack, actions),
                Aborting | Aborted => Ok(()),
                Committing | Committed => Err(self.invalid(Operation::Rollback)),
            },
            Event::DeadlineExpired | Event::Shutdown => match self.state {
                Active | Prepared => {
                    let cause = if event == Event::Shutdown {
                        AbortCause::CoordinatorShutdown
                    } else {
                        AbortCause::DeadlineExpired
                    };
                    self.decide_abort(cause, actions)
                }
                // Phase 1 is bounded by the prepare timeout; the event takes
                // effect if it ends in Prepared. Decided transactions are
                // bounded by the retry policy.
                Preparing => {
                    if event == Event::Shutdown {
                        self.clock.shutdown = true;
                    } else {
                        self.clock.expired = true;
                    }
                    Ok(())
                }
                Committing | Committed | Aborting | Aborted => Ok(()),
            },
            Event::PrepareDone {
                participant,
                result,
            } => self.prepare_done(participant, result, actions),
            Event::Phase2Done {
                participant,
                attempt,
                result,
                retry_budget_spent,
            } => self.phase2_done(participant, attempt, result, retry_budget_spent, actions),
            Event::CommitLogged { attempt, result } => {
                self.commit_logged_at(attempt, result, actions)
            }
        }
    }

    /// Issues the first `commit` call to every participant that gets one.
    fn deliver_commit(&mut self, actions: &mut Vec<Action>) {
        let read_only_too = self.planted(PlantedBug::CommitReadOnly);
        for (participant, peer) in self.peers.iter_mut().enumerate() {
            if gets_commit(peer, read_only_too) {
                peer.phase2 = Phase2Status::InFlight { attempt: 1 };
                self.outstanding += 1;
                actions.push(Action::Commit {
                    participant,
                    attempt: 1,
                });
            }
        }
    }

    /// The end of a write of the Commit decision to the log.
    fn commit_logged_at(
        &mut self,
        attempt: u32,
        result: Result<(), CallFailure>,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        if self.record != (Record::Writing { attempt }) {
            return Err(CoreError::StaleLogAnswer { attempt });
        }
        if result.is_ok() {
            self.record = Record::Durable;
            if self.planted(PlantedBug::CommitBeforeLogged) {
                // Delivered with the write already.
                return self.finish_if_done();
            }
            // Phase 2 starts now: its time budget runs from here.
            self.clock.retry_until = self
                .clock
                .now
                .saturating_add(self.limits.retry.max_elapsed());
            self.deliver_commit(actions);
            return self.finish_if_done();
        }
        // The write may have reached the disk: neither deliver nor give up,
        // write again (the backoff of the retry policy, without its limits).
        let attempt = attempt.saturating_add(1);
        let base = self.limits.retry.backoff(attempt);
        let delay = if base.is_zero() {
            Duration::ZERO
        } else {
            RetryPolicy::jitter(base, self.sample())
        };
        if delay.is_zero() {
            self.record = Record::Writing { attempt };
            actions.push(Action::LogCommit { attempt });
        } else {
            let due = self.clock.now.saturating_add(delay);
            self.record = Record::Retrying { attempt, due };
        }
        Ok(())
    }

    fn invalid(&self, operation: Operation) -> CoreError {
        CoreError::InvalidState {
            current: self.state,
            operation,
        }
    }

    /// Takes the Abort decision and starts rollback to everyone who may hold
    /// work: never-asked, `Ready` voters and failed prepares now; in-flight
    /// prepares once their call ends (see `prepare_done`).
    fn decide_abort(
        &mut self,
        cause: AbortCause,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        self.transit(TransactionState::Aborting)?;
        self.materialize_peers();
        self.cause = Some(cause);
        let forget_in_flight = self.planted(PlantedBug::ForgetInFlightPrepare);
        for (participant, peer) in self.peers.iter_mut().enumerate() {
            match &peer.prepare {
                PrepareStatus::NotAsked
                | PrepareStatus::Voted(PreparedResult::Ready)
                | PrepareStatus::Failed(_) => {
                    peer.phase2 = Phase2Status::InFlight { attempt: 1 };
                    self.outstanding += 1;
                    actions.push(Action::Rollback {
                        participant,
                        attempt: 1,
                    });
                }
                PrepareStatus::InFlight if forget_in_flight => {}
                PrepareStatus::InFlight => self.outstanding += 1,
                PrepareStatus::Voted(PreparedResult::ReadOnly | PreparedResult::Aborted(_)) => {}
            }
        }
        self.finish_if_done()
    }

    fn prepare_done(
        &mut self,
        participant: usize,
        result: Result<PreparedResult, CallFailure>,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        let first_ready_prepares = self.planted(PlantedBug::PreparedOnFirstReady);
        let forget_in_flight = self.planted(PlantedBug::ForgetInFlightPrepare);
        if !matches!(
            self.peers.get(participant),
            Some(Peer {
                prepare: PrepareStatus::InFlight,
                ..
            })
        ) {
            return Err(CoreError::Stale { participant });
        }
        // A prepare can only be in flight in Preparing or Aborting; refuse
        // before changing anything.
        let expected = matches!(
            self.state,
            TransactionState::Preparing | TransactionState::Aborting
        ) || (forget_in_flight && self.state == TransactionState::Aborted)
            || first_ready_prepares;
        if !expected {
            return Err(CoreError::IllegalTransition {
                from: self.state,
                to: self.state,
            });
        }
        // Checked above: the participant exists and its prepare is in flight.
        let peer = &mut self.peers[participant];
        let needs_rollback = !matches!(
            result,
            Ok(PreparedResult::ReadOnly | PreparedResult::Aborted(_))
        );
        peer.prepare = match result {
            Ok(vote) => PrepareStatus::Voted(vote),
            Err(failure) => PrepareStatus::Failed(Box::new(failure)),
        };
        peer.times.prepared = micros(self.clock.now);
        self.preparing -= 1;
        match self.state {
            TransactionState::Preparing => match &peer.prepare {
                PrepareStatus::Voted(PreparedResult::Aborted(reason)) => {
                    let cause = AbortCause::Voted {
                        participant,
                        reason: reason.clone(),
                    };
                    self.decide_abort(cause, actions)
                }
                PrepareStatus::Failed(failure) => {
                    let cause = AbortCause::PrepareFailed {
                        participant,
                        failure: (**failure).clone(),
                    };
                    self.decide_abort(cause, actions)
                }
                _ if self.preparing == 0 => self.transit(TransactionState::Prepared),
                PrepareStatus::Voted(PreparedResult::Ready) if first_ready_prepares => {
                    self.transit(TransactionState::Prepared)
                }
                _ => Ok(()),
            },
            TransactionState::Aborting | TransactionState::Aborted if forget_in_flight => {
                self.finish_if_done()
            }
            TransactionState::Aborting => {
                // A late answer after the Abort decision: this participant was
                // counted as outstanding in `decide_abort`.
                if needs_rollback {
                    peer.phase2 = Phase2Status::InFlight { attempt: 1 };
                    actions.push(Action::Rollback {
                        participant,
                        attempt: 1,
                    });
                } else {
                    self.outstanding -= 1;
                }
                self.finish_if_done()
            }
            // A prepare can only be in flight in Preparing or Aborting.
            other => Err(CoreError::IllegalTransition {
                from: other,
                to: other,
            }),
        }
    }

    fn phase2_done(
        &mut self,
        participant: usize,
        attempt: u32,
        result: Result<(), CallFailure>,
        retry_budget_spent: bool,
        actions: &mut Vec<Action>,
    ) -> Result<(), CoreError> {
        let max_attempts = self.limits.retry.max_attempts();
        let last_attempt =
            attempt >= max_attempts || retry_budget_spent || self.retry_budget_spent();
        let commit = self.state == TransactionState::Committing;
        let hide_hazard = self.planted(PlantedBug::HideHazard);
        if self.peers.get(participant).map(|p| &p.phase2)
            != Some(&Phase2Status::InFlight { attempt })
        {
            return Err(CoreError::Stale { participant });
        }
        if !self.scheduled.is_empty() {
            // An answer for an attempt still waiting out its backoff (a
            // driver reporting the calls it dropped) is that attempt's.
            self.scheduled.retain(|&(p, _)| p != participant);
        }
        let retry = match &result {
            Err(failure) => !last_attempt && !failure.is_permanent(),
            Ok(()) => false,
        };
        // Only retries draw from the generator.
        let delay = if retry {
            self.backoff(attempt + 1)
        } else {
            Duration::ZERO
        };
        let peer = &mut self.peers[participant];
        match result {
            Ok(()) => {
                peer.phase2 = Phase2Status::Acknowledged { attempts: attempt };
                self.outstanding -= 1;
            }
            Err(_) if !retry && hide_hazard => {
                peer.phase2 = Phase2Status::Acknowledged { attempts: attempt };
                self.outstanding -= 1;
            }
            Err(last) if !retry => {
                peer.phase2 = Phase2Status::GaveUp {
                    attempts: attempt,
                    last: Box::new(last),
                };
                self.outstanding -= 1;
            }
            Err(_) => {
                let attempt = attempt + 1;
                peer.phase2 = Phase2Status::InFlight { attempt };
                if !delay.is_zero() {
                    let due = self.clock.now.saturating_add(delay);
                    self.scheduled.push((participant, due));
                } else {
                    actions.push(phase2_action(commit, participant, attempt));
                }
            }
        }
        if !matches!(
            self.peers[participant].phase2,
            Phase2Status::InFlight { .. }
        ) {
            self.peers[participant].times.phase2_done = micros(self.clock.now);
        }
        self.finish_if_done()
    }

    #[inline]
    fn finish_if_done(&mut self) -> Result<(), CoreError> {
        if self.outstanding > 0 || self.awaiting_log() {
            return Ok(());
        }
        match self.state {
            TransactionState::Committing
                if self.planted(PlantedBug::AbortedAfterCommit)
                    && self.hazards().next().is_some() =>
            {
                // Deliberately bypasses `transit`.
                self.state = TransactionState::Aborted;
                Ok(())
            }
            TransactionState::Committing => self.transit(TransactionState::Committed),
            TransactionState::Aborting => self.transit(TransactionState::Aborted),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParticipantError;
    use std::time::Duration;
    use TransactionState::*;

    fn limits(max_attempts: u32) -> Limits {
        Limits {
            max_participants: 3,
            retry: RetryPolicy::new(
                max_attempts,
                std::time::Duration::ZERO,
                std::time::Duration::ZERO,
            )
            .unwrap(),
        }
    }

    fn txn_with(n: usize) -> Transaction {
        let mut t = Transaction::new(limits(2));
        for _ in 0..n {
            t.handle(Event::Register, &mut Vec::new()).unwrap();
        }
        t
    }

    #[test]
    fn registration_only_counts_and_leaving_active_makes_exact_state() {
        let mut t = txn_with(3);
        assert_eq!(t.participant_count(), 3);
        assert!(t.peers().is_empty() && t.peers.capacity() == 0);
        let mut out = Vec::new();
        t.handle(Event::Prepare, &mut out).unwrap();
        assert_eq!(t.peers().len(), 3);
        assert_eq!(t.peers.capacity(), 3);
        assert_eq!(out.len(), 3);

        // Abort straight from Active: every registered participant is
        // rolled back.
        let mut t = txn_with(2);
        let mut out = Vec::new();
        t.handle(Event::Rollback, &mut out).unwrap();
        assert_eq!(t.peers().len(), 2);
        assert!(out.iter().all(|a| matches!(a, Action::Rollback { .. })));
        assert_eq!(out.len(), 2);
    }

    fn step(t: &mut Transaction, e: Event) -> Vec<Action> {
        let mut out = Vec::new();
        t.handle(e, &mut out).unwrap();
        out
    }

    fn vote(participant: usize, v: PreparedResult) -> Event {
        Event::PrepareDone {
            participant,
            result: Ok(v),
        }
    }

    fn ack(participant: usize, attempt: u32) -> Event {
        Event::Phase2Done {
            participant,
            attempt,
            result: Ok(()),
            retry_budget_spent: false,
        }
    }

    #[test]
    fn empty_transaction_prepares_and_commits_trivially() {
        let mut t = txn_with(0);
        assert!(step(&mut t, Event::Prepare).is_empty());
        assert_eq!(t.state(), Prepared);
        assert!(step(&mut t, Event::Commit).is_empty());
        assert_eq!(t.state(), Committed);
    }

    #[test]
    fn read_only_voters_get_no_phase_two() {
        let mut t = txn_with(2);
        step(&mut t, Event::Prepare);
        step(&mut t, vote(0, PreparedResult::ReadOnly));
        step(&mut t, vote(1, PreparedResult::Ready));
        assert_eq!(
            step(&mut t, Event::Commit),
            [Action::Commit {
                participant: 1,
                attempt: 1
            }]
        );
        step(&mut t, ack(1, 1));
        assert_eq!(t.state(), Committed);
        assert_eq!(t.peers()[0].phase2, Phase2Status::NotSent);
    }

    #[test]
    fn first_no_vote_decides_abort_at_once_and_waits_for_in_flight() {
        let mut t = txn_with(3);
        step(&mut t, Event::Prepare);
        step(&mut t, vote(0, PreparedResult::Ready));
        let out = step(
            &mut t,
            vote(1, PreparedResult::Aborted("out of stock".into())),
        );
        assert_eq!(t.state(), Aborting);
        // Ready voter 0 is rolled back now; voter 1 (explicit No) never.
        assert_eq!(
            out,
            [Action::Rollback {
                participant: 0,
                attempt: 1
            }]
        );
        // Participant 2's prepare is still in flight; a late Ready gets rollback.
        let out = step(&mut t, vote(2, PreparedResult::Ready));
        assert_eq!(
            out,
            [Action::Rollback {
                participant: 2,
                attempt: 1
            }]
        );
        step(&mut t, ack(0, 1));
        assert_eq!(t.state(), Aborting);
        step(&mut t, ack(2, 1));
        assert_eq!(t.state(), Aborted);
        assert!(matches!(
            t.abort_cause(),
            Some(AbortCause::Voted { participant: 1, .. })
        ));
    }

    #[test]
    fn failed_prepare_counts_as_no_and_gets_rollback() {
        let mut t = txn_with(1);
        step(&mut t, Event::Prepare);
        let out = step(
            &mut t,
            Event::PrepareDone {
                participant: 0,
                result: Err(CallFailure::TimedOut),
            },
        );
        assert_eq!(out.len(), 1);
        step(&mut t, ack(0, 1));
        assert_eq!(t.state(), Aborted);
    }

    #[test]
    fn phase_two_retries_then_gives_up_as_hazard() {
        let mut t = txn_with(1);
        step(&mut t, Event::Prepare);
        step(&mut t, vote(0, PreparedResult::Ready));
        step(&mut t, Event::Commit);
        let fail = |attempt| Event::Phase2Done {
            participant: 0,
            attempt,
            result: Err(CallFailure::Panicked("boom".into())),
            retry_budget_spent: false,
        };
        assert_eq!(
            step(&mut t, fail(1)),
            [Action::Commit {
                participant: 0,
                attempt: 2
            }]
        );
        assert!(step(&mut t, fail(2)).is_empty());
        assert_eq!(t.state(), Committed);
        assert_eq!(t.hazards().count(), 1);
    }

    #[test]
    fn permanent_error_gives_up_without_retry() {
        let mut t = txn_with(1);
        step(&mut t, Event::Rollback);
        let out = step(
            &mut t,
            Event::Phase2Done {
                participant: 0,
                attempt: 1,
                result: Err(ParticipantError::permanent("gone").into()),
                retry_budget_spent: false,
            },
        );
        assert!(out.is_empty());
        assert_eq!(t.state(), Aborted);
        assert_eq!(t.hazards().count(), 1);
    }

    #[test]
    fn a_failure_after_the_retry_time_budget_gives_up_before_the_last_attempt() {
        let fail = |attempt, retry_budget_spent| Event::Phase2Done {
            participant: 0,
            attempt,
            result: Err(ParticipantError::transient("connection refused").into()),
            retry_budget_spent,
        };
        for commit in [true, false] {
            // Three attempts allowed: within the budget a transient failure
            // is retried, and once the budget is spent the next failure
            // gives up although attempts are left.
            let mut t = Transaction::new(limits(3));
            t.handle(Event::Register, &mut Vec::new()).unwrap();
            if commit {
                step(&mut t, Event::Prepare);
                step(&mut t, vote(0, PreparedResult::Ready));
                step(&mut t, Event::Commit);
            } else {
                step(&mut t, Event::Rollback);
            }
            assert_eq!(step(&mut t, fail(1, false)).len(), 1);
            assert!(step(&mut t, fail(2, true)).is_empty());
            assert_eq!(t.state(), if commit { Committed } else { Aborted });
            assert!(matches!(
                t.peers()[0].phase2,
                Phase2Status::GaveUp { attempts: 2, .. }
            ));
        }
    }

    #[test]
    fn stale_and_duplicate_responses_change_nothing() {
        let mut t = txn_with(1);
        step(&mut t, Event::Prepare);
        step(&mut t, vote(0, PreparedResult::Ready));
        let before = t.clone();
        let mut out = Vec::new();
        assert_eq!(
            t.handle(vote(0, PreparedResult::Ready), &mut out),
            Err(CoreError::Stale { participant: 0 })
        );
        assert_eq!(
            t.handle(ack(0, 1), &mut out),
            Err(CoreError::Stale { participant: 0 })
        );
        assert_eq!(t, before);
        assert!(out.is_empty());
    }

    #[test]
    fn client_table_rules() {
        let mut t = txn_with(1);
        let mut out = Vec::new();
        assert!(matches!(
            t.handle(Event::Commit, &mut out),
            Err(CoreError::InvalidState {
                current: Active,
                operation: Operation::Commit
            })
        ));
        step(&mut t, Event::Prepare);
        assert!(t.handle(Event::Commit, &mut out).is_err());
        assert!(t.handle(Event::Register, &mut out).is_err());
        step(&mut t, vote(0, PreparedResult::Ready));
        step(&mut t, Event::Commit);
        assert!(matches!(
            t.handle(Event::Rollback, &mut out),
            Err(CoreError::InvalidState {
                current: Committing,
                ..
            })
        ));
        // Deadline after the Commit decision changes nothing.
        assert!(step(&mut t, Event::DeadlineExpired).is_empty());
        assert_eq!(t.state(), Committing);
    }

    #[test]
    fn participant_limit_is_enforced() {
        let mut t = txn_with(3);
        assert_eq!(
            t.handle(Event::Register, &mut Vec::new()),
            Err(CoreError::TooManyParticipants { limit: 3 })
        );
    }

    #[test]
    fn register_is_handle_register_in_every_state_reached_here() {
        // Machines in each state, with deadlines passed or not and the
        // phase-1 notes (expiry, shutdown) set or not.
        let mut machines = Vec::new();
        for registered in 0..=3 {
            for deadline in [Duration::MAX, MS, Duration::ZERO] {
                let fresh = || {
                    let mut t = Transaction::new(limits(2)).with_deadline(deadline);
                    for _ in 0..registered {
                        let _ = t.handle(Event::Register, &mut Vec::new());
                    }
                    t
                };
                machines.push(fresh());
                for events in [
                    &[Event::Prepare][..],
                    &[Event::Prepare, Event::DeadlineExpired],
                    &[Event::Prepare, Event::Shutdown],
                    &[Event::Rollback],
                    &[Event::Shutdown],
                    &[Event::DeadlineExpired],
                ] {
                    let mut t = fresh();
                    for event in events {
                        let _ = t.handle_at(event.clone(), MS, &mut Vec::new());
                    }
                    machines.push(t);
                }
            }
        }
        assert!(machines.len() > 80);
        for machine in machines {
            let (mut by_handle, mut by_register) = (machine.clone(), machine);
            let (mut handled, mut registered) = (Vec::new(), Vec::new());
            assert_eq!(
                by_handle.handle(Event::Register, &mut handled),
                by_register.register(&mut registered)
            );
            assert_eq!(handled, registered);
            assert_eq!(by_handle, by_register);
        }
    }

    #[test]
    fn rollback_covers_never_prepared_participants() {
        let mut t = txn_with(2);
        let out = step(&mut t, Event::Rollback);
        assert_eq!(out.len(), 2);
        assert_eq!(t.abort_cause(), Some(&AbortCause::RolledBack));
    }

    const MS: Duration = Duration::from_millis(1);

    fn fail(participant: usize, attempt: u32) -> Event {
        Event::Phase2Done {
            participant,
            attempt,
            result: Err(CallFailure::TimedOut),
            retry_budget_spent: false,
        }
    }

    fn step_at(t: &mut Transaction, e: Event, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        t.handle_at(e, now, &mut out).unwrap();
        out
    }

    fn timeout_at(t: &mut Transaction, now: Duration) -> Vec<Action> {
        let mut out = Vec::new();
        t.handle_timeout(now, &mut out).unwrap();
        out
    }

    #[test]
    fn the_deadline_is_a_timer_of_the_core() {
        let mut t = txn_with(1).with_deadline(100 * MS);
        assert_eq!(t.poll_timeout(), Some(100 * MS));
        assert!(timeout_at(&mut t, 99 * MS).is_empty());
        assert_eq!(t.state(), Active);
        assert_eq!(timeout_at(&mut t, 100 * MS).len(), 1);
        assert_eq!(t.abort_cause(), Some(&AbortCause::DeadlineExpired));
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn a_client_call_after_the_deadline_finds_the_transaction_rolled_back() {
        let mut t = txn_with(1).with_deadline(100 * MS);
        step_at(&mut t, Event::Prepare, MS);
        step_at(&mut t, vote(0, PreparedResult::Ready), 2 * MS);
        let mut out = Vec::new();
        assert_eq!(
            t.handle_at(Event::Commit, 100 * MS, &mut out),
            Err(CoreError::InvalidState {
                current: Aborting,
                operation: Operation::Commit
            })
        );
        // The refusal keeps the rollback the expired deadline required.
        assert_eq!(
            out,
            [Action::Rollback {
                participant: 0,
                attempt: 1
            }]
        );
    }

    #[test]
    fn a_deadline_or_shutdown_during_phase_one_takes_effect_when_it_ends() {
        for (event, cause) in [
            (Event::Shutdown, AbortCause::CoordinatorShutdown),
            (Event::DeadlineExpired, AbortCause::DeadlineExpired),
        ] {
            let mut t = txn_with(2);
            step(&mut t, Event::Prepare);
            assert!(step(&mut t, event).is_empty());
            assert_eq!(t.state(), Preparing);
            step(&mut t, vote(0, PreparedResult::Ready));
            let out = step(&mut t, vote(1, PreparedResult::Ready));
            assert_eq!(t.state(), Aborting);
            assert_eq!(t.abort_cause(), Some(&cause));
            assert_eq!(out.len(), 2);
        }
        // The same with the clock: the deadline passes while preparing.
        let mut t = txn_with(1).with_deadline(100 * MS);
        step_at(&mut t, Event::Prepare, MS);
        assert_eq!(t.poll_timeout(), None, "phase 1 is bounded by its calls");
        step_at(&mut t, vote(0, PreparedResult::Ready), 150 * MS);
        assert_eq!(t.abort_cause(), Some(&AbortCause::DeadlineExpired));
    }

    #[test]
    fn a_phase_two_retry_waits_out_its_backoff_as_a_timer() {
        let retry = RetryPolicy::new(3, 10 * MS, 40 * MS).unwrap();
        let mut t = Transaction::new(Limits {
            max_participants: 3,
            retry,
        })
        .with_seed(42);
        t.handle(Event::Register, &mut Vec::new()).unwrap();
        step(&mut t, Event::Rollback);
        assert!(step_at(&mut t, fail(0, 1), 5 * MS).is_empty());
        let due = t.poll_timeout().expect("a retry timer");
        // Backoff 10 ms, jittered into [5, 10] ms after the failure.
        assert!((10 * MS..=15 * MS).contains(&due), "{due:?}");
        assert_eq!(t.retry_due(0), Some(due));
        assert!(timeout_at(&mut t, due - MS).is_empty());
        assert_eq!(
            timeout_at(&mut t, due),
            [Action::Rollback {
                participant: 0,
                attempt: 2
            }]
        );
        assert_eq!((t.poll_timeout(), t.retry_due(0)), (None, None));
        step_at(&mut t, ack(0, 2), due + MS);
        assert_eq!(t.state(), Aborted);
        // Timings are kept to the microsecond.
        assert_eq!(
            t.phase2_latency(0).map(|d| d.as_micros()),
            Some((due + MS).as_micros())
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_jitter() {
        let due = |seed| {
            let retry = RetryPolicy::new(3, 100 * MS, 100 * MS).unwrap();
            let mut t = Transaction::new(Limits {
                max_participants: 1,
                retry,
            })
            .with_seed(seed);
            t.handle(Event::Register, &mut Vec::new()).unwrap();
            step(&mut t, Event::Rollback);
            step(&mut t, fail(0, 1));
            t.poll_timeout().unwrap()
        };
        assert_eq!(due(7), due(7));
        let spread: std::collections::HashSet<_> = (0..20).map(due).collect();
        assert!(spread.len() > 10, "jitter barely varies: {spread:?}");
    }

    #[test]
    fn the_retry_time_budget_is_judged_from_the_times_fed() {
        let retry = RetryPolicy::new(10, 10 * MS, 10 * MS)
            .unwrap()
            .with_max_elapsed(100 * MS)
            .unwrap();
        let mut t = Transaction::new(Limits {
            max_participants: 1,
            retry,
        });
        t.handle(Event::Register, &mut Vec::new()).unwrap();
        step_at(&mut t, Event::Rollback, 50 * MS);
        // Backoff is capped by the budget left.
        step_at(&mut t, fail(0, 1), 145 * MS);
        assert_eq!(t.poll_timeout(), Some(150 * MS));
        timeout_at(&mut t, 150 * MS);
        // Attempts are left, but the budget is spent: a hazard.
        assert!(step_at(&mut t, fail(0, 2), 151 * MS).is_empty());
        assert_eq!(t.state(), Aborted);
        assert_eq!(t.hazards().count(), 1);
    }

    #[test]
    fn an_answer_for_an_attempt_still_backing_off_is_taken_as_its_own() {
        let retry = RetryPolicy::new(3, 10 * MS, 10 * MS).unwrap();
        let mut t = Transaction::new(Limits {
            max_participants: 1,
            retry,
        });
        t.handle(Event::Register, &mut Vec::new()).unwrap();
        step(&mut t, Event::Rollback);
        step(&mut t, fail(0, 1));
        assert!(t.retry_due(0).is_some());
        step(&mut t, ack(0, 2));
        assert_eq!((t.state(), t.poll_timeout()), (Aborted, None));
    }

    #[test]
    fn timings_are_recorded_but_not_part_of_equality() {
        let mut a = txn_with(1);
        let mut b = txn_with(1);
        step_at(&mut a, Event::Prepare, MS);
        step_at(&mut b, Event::Prepare, MS);
        step_at(&mut a, vote(0, PreparedResult::Ready), 3 * MS);
        step_at(&mut b, vote(0, PreparedResult::Ready), 3 * MS);
        assert_eq!(a, b);
        assert_eq!(a.prepare_latency(0), Some(2 * MS));
        assert_eq!(a.prepare_started(), Some(MS));
        let mut c = txn_with(1);
        step_at(&mut c, Event::Prepare, 2 * MS);
        step_at(&mut c, vote(0, PreparedResult::Ready), 3 * MS);
        assert_eq!(a, c, "only the recorded timings differ");
        assert_eq!(c.prepare_latency(0), Some(MS));
    }

    #[test]
    fn deadline_in_prepared_aborts() {
        let mut t = txn_with(1);
        step(&mut t, Event::Prepare);
        step(&mut t, vote(0, PreparedResult::Ready));
        assert_eq!(step(&mut t, Event::DeadlineExpired).len(), 1);
        assert_eq!(t.abort_cause(), Some(&AbortCause::DeadlineExpired));
    }

    /// A prepared transaction with a decision log: `ready` Ready voters
    /// and one ReadOnly voter.
    fn logged_prepared(ready: usize, retry: RetryPolicy) -> Transaction {
        let mut t = Transaction::new(Limits {
            max_participants: 4,
            retry,
        })
        .with_seed(7)
        .with_decision_log();
        for _ in 0..=ready {
            t.handle(Event::Register, &mut Vec::new()).unwrap();
        }
        step(&mut t, Event::Prepare);
        for i in 0..ready {
            step(&mut t, vote(i, PreparedResult::Ready));
        }
        step(&mut t, vote(ready, PreparedResult::ReadOnly));
        assert_eq!(t.state(), Prepared);
        t
    }

    fn logged(attempt: u32, ok: bool) -> Event {
        Event::CommitLogged {
            attempt,
            result: if ok {
                Ok(())
            } else {
                Err(CallFailure::Error(ParticipantError::transient("disk")))
            },
        }
    }

    #[test]
    fn with_a_log_commit_calls_wait_for_the_decision_to_be_durable() {
        let mut t = logged_prepared(2, RetryPolicy::default());
        assert!(t.keeps_decision_log() && !t.awaiting_log());
        assert_eq!(
            step(&mut t, Event::Commit),
            [Action::LogCommit { attempt: 1 }]
        );
        assert_eq!(t.state(), Committing);
        assert!(t.awaiting_log() && !t.commit_logged());
        assert_eq!(t.log_write_in_flight(), Some(1));
        // Nothing ends a transaction waiting for its log, nor repeats it.
        assert!(step(&mut t, Event::Commit).is_empty());
        assert!(step(&mut t, Event::Shutdown).is_empty());
        assert_eq!(
            step(&mut t, logged(1, true)),
            [
                Action::Commit {
                    participant: 0,
                    attempt: 1
                },
                Action::Commit {
                    participant: 1,
                    attempt: 1
                }
            ]
        );
        assert!(t.commit_logged() && !t.awaiting_log());
        step(&mut t, ack(0, 1));
        step(&mut t, ack(1, 1));
        assert_eq!(t.state(), Committed);
    }

    #[test]
    fn a_failed_log_write_is_written_again_after_a_backoff_however_often() {
        let retry = RetryPolicy::new(2, 10 * MS, 40 * MS).unwrap();
        let mut t = logged_prepared(1, retry);
        step(&mut t, Event::Commit);
        let mut now = Duration::ZERO;
        // Far more failures than the policy's attempts: a write that may
        // have reached the disk is never given up on.
        for attempt in 1..6 {
            now += MS;
            assert!(step_at(&mut t, logged(attempt, false), now).is_empty());
            assert!(t.awaiting_log() && t.log_write_in_flight().is_none());
            let due = t.poll_timeout().expect("the next write is a timer");
            assert!(due > now && due <= now + 40 * MS, "{due:?}");
            assert!(timeout_at(&mut t, due - MS).is_empty());
            assert_eq!(
                timeout_at(&mut t, due),
                [Action::LogCommit {
                    attempt: attempt + 1
                }]
            );
            now = due;
        }
        assert_eq!(
            step_at(&mut t, logged(6, true), now + MS),
            [Action::Commit {
                participant: 0,
                attempt: 1
            }]
        );
    }

    #[test]
    fn stale_log_answers_are_refused_and_change_nothing() {
        let mut t = logged_prepared(1, RetryPolicy::default());
        let mut out = Vec::new();
        let before = t.clone();
        assert_eq!(
            t.handle(logged(1, true), &mut out),
            Err(CoreError::StaleLogAnswer { attempt: 1 })
        );
        assert_eq!(t, before);
        step(&mut t, Event::Commit);
        let before = t.clone();
        assert_eq!(
            t.handle(logged(2, true), &mut out),
            Err(CoreError::StaleLogAnswer { attempt: 2 })
        );
        assert_eq!((t, out.len()), (before, 0));
    }

    #[test]
    fn nothing_is_logged_without_a_log_for_aborts_or_for_read_only_voters() {
        let mut t = logged_prepared(0, RetryPolicy::default());
        assert!(step(&mut t, Event::Commit).is_empty());
        assert_eq!(t.state(), Committed);
        assert!(!t.commit_logged());

        let mut t = logged_prepared(2, RetryPolicy::default());
        let out = step(&mut t, Event::Rollback);
        assert!(out.iter().all(|a| matches!(a, Action::Rollback { .. })));

        let mut t = txn_with(1);
        step(&mut t, Event::Prepare);
        step(&mut t, vote(0, PreparedResult::Ready));
        assert!(!t.keeps_decision_log());
        assert_eq!(
            step(&mut t, Event::Commit),
            [Action::Commit {
                participant: 0,
                attempt: 1
            }]
        );
    }
}
