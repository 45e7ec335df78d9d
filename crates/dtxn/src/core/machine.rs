//! The state machine of one transaction.

use super::types::*;
use crate::{PreparedResult, RetryPolicy};

/// The limits the core enforces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Participants per transaction.
    pub max_participants: usize,
    /// Phase-2 retry budget (only `max_attempts` matters to the core).
    pub retry: RetryPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_participants: crate::CoordinatorConfig::DEFAULT_MAX_PARTICIPANTS,
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
            #[cfg(feature = "planted-bugs")]
            planted: None,
        }
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

    /// Makes the per-participant state on leaving Active.
    fn materialize_peers(&mut self) {
        if self.peers.len() != self.registered {
            self.peers = vec![Peer::UNASKED; self.registered];
        }
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
        self.state = to;
        Ok(())
    }

    /// Feeds one event; the participant calls it requires are appended to
    /// `actions`. On error nothing changed.
    pub fn handle(&mut self, event: Event, actions: &mut Vec<Action>) -> Result<(), CoreError> {
        use TransactionState::*;
        match event {
            Event::Register => {
                if self.state != Active {
                    return Err(self.invalid(Operation::Register));
                }
                if self.registered >= self.limits.max_participants {
                    return Err(CoreError::TooManyParticipants {
                        limit: self.limits.max_participants,
                    });
                }
                self.registered += 1;
                Ok(())
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
                        if peer.prepare == PrepareStatus::Voted(PreparedResult::Ready) {
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
                    for (participant, peer) in self.peers.iter_mut().enumerate() {
                        if peer.prepare == PrepareStatus::Voted(PreparedResult::Ready)
                            || (read_only_too
                                && peer.prepare == PrepareStatus::Voted(PreparedResult::ReadOnly))
                        {
                            peer.phase2 = Phase2Status::InFlight { attempt: 1 };
                            self.outstanding += 1;
                            actions.push(Action::Commit {
                                participant,
                                attempt: 1,
                            });
                        }
                    }
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
                // Phase 1 is bounded by the prepare timeout; when it ends in
                // Prepared the driver delivers the event again (an expired
                // deadline or a shutdown). Decided transactions are bounded
                // by the retry policy.
                _ => Ok(()),
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
        }
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
        if self.peers.get(participant).map(|p| &p.prepare) != Some(&PrepareStatus::InFlight) {
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
        let last_attempt = attempt >= max_attempts || retry_budget_spent;
        let commit = self.state == TransactionState::Committing;
        let hide_hazard = self.planted(PlantedBug::HideHazard);
        let peer = self
            .peers
            .get_mut(participant)
            .filter(|p| p.phase2 == Phase2Status::InFlight { attempt })
            .ok_or(CoreError::Stale { participant })?;
        match result {
            Ok(()) => {
                peer.phase2 = Phase2Status::Acknowledged { attempts: attempt };
                self.outstanding -= 1;
            }
            Err(_) if last_attempt && hide_hazard => {
                peer.phase2 = Phase2Status::Acknowledged { attempts: attempt };
                self.outstanding -= 1;
            }
            Err(last) if last_attempt || last.is_permanent() => {
                peer.phase2 = Phase2Status::GaveUp {
                    attempts: attempt,
                    last: Box::new(last),
                };
                self.outstanding -= 1;
            }
            Err(_) => {
                let attempt = attempt + 1;
                peer.phase2 = Phase2Status::InFlight { attempt };
                actions.push(if commit {
                    Action::Commit {
                        participant,
                        attempt,
                    }
                } else {
                    Action::Rollback {
                        participant,
                        attempt,
                    }
                });
            }
        }
        self.finish_if_done()
    }

    fn finish_if_done(&mut self) -> Result<(), CoreError> {
        if self.outstanding > 0 {
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
    fn rollback_covers_never_prepared_participants() {
        let mut t = txn_with(2);
        let out = step(&mut t, Event::Rollback);
        assert_eq!(out.len(), 2);
        assert_eq!(t.abort_cause(), Some(&AbortCause::RolledBack));
    }

    #[test]
    fn deadline_in_prepared_aborts() {
        let mut t = txn_with(1);
        step(&mut t, Event::Prepare);
        step(&mut t, vote(0, PreparedResult::Ready));
        assert_eq!(step(&mut t, Event::DeadlineExpired).len(), 1);
        assert_eq!(t.abort_cause(), Some(&AbortCause::DeadlineExpired));
    }
}
