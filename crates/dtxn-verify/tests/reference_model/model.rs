//! The reference model: a small table of what every issued transaction
//! should be, and what every client call should return.
//!
//! The model knows only the PROTOCOL.md contract and the scripted
//! participants' behaviour; it never looks at the coordinator. Each
//! transition records the exact expected result of its call in
//! [`Model::expect`], which the system under test compares with what the
//! real coordinator returned.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use dtxn::{
    AbortReason, CallFailure, CoordinatorError, Decision, Hazard, Operation, Registration,
    TransactionId, TransactionState,
};
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest_state_machine::ReferenceStateMachine;

use super::participant::{self, Calls, Phase2, Script, Vote, P, SCRIPTED_PANIC};

/// Unfinished transactions at once: small, so `CapacityExceeded` is common.
pub const MAX_TRANSACTIONS: usize = 3;
/// Participants per transaction: small, so `TooManyParticipants` is common.
pub const MAX_PARTICIPANTS: usize = 2;
/// Finished transactions remembered: small, so old ids get `NotFound`.
pub const RETENTION_COUNT: usize = 2;
/// Per `prepare` call.
pub const PREPARE_TIMEOUT: Duration = Duration::from_millis(100);
/// Per `commit` / `rollback` attempt.
pub const PHASE2_TIMEOUT: Duration = Duration::from_millis(100);
/// Phase-2 attempts before a participant is given up on.
pub const MAX_ATTEMPTS: u32 = 3;
/// Backoff before the second phase-2 attempt.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(10);
/// Cap on the phase-2 backoff.
pub const MAX_BACKOFF: Duration = Duration::from_millis(40);
/// Transaction deadline: far beyond what a test case spends on calls
/// (at most a second of virtual time per step), so only
/// [`Step::ExpireDeadlines`] reaches it.
pub const DEADLINE: Duration = Duration::from_secs(3600);
/// Background sweep period: rare, so it costs nothing between steps.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(600);
/// Time-based forgetting is out of the model: only the count limit forgets.
pub const RETENTION_PERIOD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A transaction's name in a test case: `t3` is the transaction the
/// fourth `Begin` step started (if it was not refused). Names are carried by
/// the steps, so deleting unrelated steps while shrinking never renames a
/// transaction.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct T(pub u32);

impl fmt::Debug for T {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// The transaction a call names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TxnRef {
    /// The transaction started by `Begin` with this name.
    Named(T),
    /// An id this coordinator never issued.
    Never,
}

impl fmt::Debug for TxnRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TxnRef::Named(t) => t.fmt(f),
            TxnRef::Never => f.write_str("never_issued"),
        }
    }
}

/// The participant a registration passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// A new participant with this name, following this script.
    New(P, Script),
    /// An existing participant, the same `Arc` again (a duplicate when
    /// already registered in the transaction).
    Existing(P),
}

impl Who {
    /// The participant's name.
    pub fn name(self) -> P {
        match self {
            Who::New(p, _) | Who::Existing(p) => p,
        }
    }
}

/// One client action on the coordinator (a proptest transition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `begin_transaction`, naming the transaction if one is started.
    Begin(T),
    /// `register_participant`.
    Register {
        /// The transaction.
        txn: TxnRef,
        /// The participant.
        who: Who,
    },
    /// `prepare_transaction`, awaited.
    Prepare(TxnRef),
    /// `commit_transaction`, awaited.
    Commit(TxnRef),
    /// `rollback_transaction`, awaited.
    Rollback(TxnRef),
    /// `get_transaction_state`.
    GetState(TxnRef),
    /// Virtual time passes the transaction deadline (and one sweep): every
    /// Active or Prepared transaction is rolled back by the coordinator.
    ExpireDeadlines,
}

/// Why the model expects a call to be refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `NotFound`.
    NotFound,
    /// `InvalidState`.
    InvalidState {
        /// The settled state the transaction is in.
        current: TransactionState,
        /// The refused operation.
        operation: Operation,
    },
    /// `TooManyParticipants`.
    TooManyParticipants,
    /// `CapacityExceeded`.
    CapacityExceeded,
}

impl Refusal {
    /// The exact error the coordinator must return for a call on `txn`.
    pub fn error(&self, txn: TransactionId) -> CoordinatorError {
        match *self {
            Refusal::NotFound => CoordinatorError::NotFound { txn },
            Refusal::InvalidState { current, operation } => CoordinatorError::InvalidState {
                txn,
                current,
                operation,
            },
            Refusal::TooManyParticipants => CoordinatorError::TooManyParticipants {
                txn,
                limit: MAX_PARTICIPANTS,
            },
            Refusal::CapacityExceeded => CoordinatorError::CapacityExceeded {
                limit: MAX_TRANSACTIONS,
            },
        }
    }
}

/// The expected outcome of phase 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhaseOne {
    /// `PrepareOutcome::Prepared`.
    Prepared,
    /// `PrepareOutcome::Aborted` with one of these reasons (several only
    /// when participants fail at the same instant, so "first" is a tie).
    Aborted(Vec<AbortReason>),
}

/// The expected result of `prepare_transaction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrepareExpect {
    /// The outcome.
    pub outcome: PhaseOne,
    /// Virtual time the call takes: zero, or the prepare timeout when the
    /// first failure is a hang (early abort: a No vote or a panic does not
    /// wait for hanging participants).
    pub elapsed: Duration,
}

/// The expected `TransactionOutcome` of `commit_transaction` /
/// `rollback_transaction` (all but the id, which the model does not know).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeExpect {
    /// The decision.
    pub decision: Decision,
    /// Empty for Commit; otherwise the possible abort reasons.
    pub abort_reasons: Vec<AbortReason>,
    /// Exactly the participants given up on in phase 2, by index.
    pub hazards: Vec<Hazard>,
}

/// The expected result of the last step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Expect {
    /// No step yet.
    #[default]
    Nothing,
    /// Of [`Step::Begin`].
    Begin(Result<(), Refusal>),
    /// Of [`Step::Register`].
    Register(Result<Registration, Refusal>),
    /// Of [`Step::Prepare`].
    Prepare(Result<PrepareExpect, Refusal>),
    /// Of [`Step::Commit`] and [`Step::Rollback`].
    Outcome(Result<OutcomeExpect, Refusal>),
    /// Of [`Step::GetState`].
    State(Result<TransactionState, Refusal>),
    /// Of [`Step::ExpireDeadlines`] (checked through the invariants).
    TimePassed,
}

/// What the model knows of one issued transaction.
///
/// Every step awaits its call and then lets background work finish (see
/// the system under test), so between steps a transaction is always in one
/// of the *settled* states Active, Prepared, Committed or Aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    /// Its name.
    pub name: T,
    /// Active, Prepared, Committed or Aborted.
    pub state: TransactionState,
    /// Its participants, in registration order.
    pub participants: Vec<P>,
    /// Whether phase 1 was started (every participant was asked to prepare).
    pub prepare_sent: bool,
    /// Once Aborted: the possible abort reasons (one unless a tie).
    pub abort_reasons: Vec<AbortReason>,
}

/// The reference state: the transaction table as the contract defines it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    /// Issued transactions, in issue order.
    pub txns: Vec<Txn>,
    /// Every participant created so far.
    pub pool: BTreeMap<P, Script>,
    /// `Begin` steps so far (the next fresh transaction name).
    pub begun: u32,
    /// Indices of finished transactions, in the order they finished (the
    /// coordinator forgets all but the last [`RETENTION_COUNT`]).
    pub finished: Vec<usize>,
    /// The expected result of the last step.
    pub expect: Expect,
}

impl Model {
    /// Transactions counted against `max_transactions`.
    pub fn unfinished(&self) -> usize {
        self.txns.iter().filter(|t| !t.state.is_terminal()).count()
    }

    /// Finished transactions the coordinator still remembers.
    pub fn remembered(&self) -> usize {
        self.finished.len().min(RETENTION_COUNT)
    }

    /// Whether transaction `i` finished so long ago (in count) that the
    /// coordinator forgot it.
    pub fn forgotten(&self, i: usize) -> bool {
        self.finished
            .iter()
            .position(|&f| f == i)
            .is_some_and(|pos| pos + RETENTION_COUNT < self.finished.len())
    }

    /// The issue-order index of the transaction a call names, if issued.
    pub fn index(&self, txn: TxnRef) -> Option<usize> {
        match txn {
            TxnRef::Named(t) => self.txns.iter().position(|x| x.name == t),
            TxnRef::Never => None,
        }
    }

    /// The transaction a call names, or `NotFound`.
    pub fn lookup(&self, txn: TxnRef) -> Result<usize, Refusal> {
        self.index(txn)
            .filter(|&i| !self.forgotten(i))
            .ok_or(Refusal::NotFound)
    }

    /// What `get_transaction_state` must answer for transaction `i`.
    pub fn state_of(&self, i: usize) -> Result<TransactionState, Refusal> {
        if self.forgotten(i) {
            Err(Refusal::NotFound)
        } else {
            Ok(self.txns[i].state)
        }
    }

    /// The exact calls the participant registered `slot`-th in transaction
    /// `i` has received for it once everything settled (PROTOCOL.md rules
    /// 1, 4 and 5: `commit` only to Ready voters after a Commit decision;
    /// `rollback` after an Abort decision to everyone but ReadOnly and
    /// explicit Aborted voters; every phase-2 call until acknowledged or
    /// given up on).
    pub fn calls(&self, i: usize, slot: usize) -> Calls {
        let txn = &self.txns[i];
        let script = self.pool[&txn.participants[slot]];
        let vote = txn.prepare_sent.then_some(script.vote);
        let mut calls = Calls {
            prepare: u32::from(txn.prepare_sent),
            ..Calls::default()
        };
        match txn.state {
            TransactionState::Committed if vote == Some(Vote::Ready) => {
                calls.commit = script.phase2.attempts();
            }
            TransactionState::Aborted if !matches!(vote, Some(Vote::ReadOnly | Vote::Aborted)) => {
                calls.rollback = script.phase2.attempts();
            }
            _ => {}
        }
        calls
    }

    /// The outcome of finished transaction `i`.
    pub fn outcome(&self, i: usize) -> OutcomeExpect {
        let txn = &self.txns[i];
        let decision = match txn.state {
            TransactionState::Committed => Decision::Commit,
            _ => Decision::Abort,
        };
        let hazards = txn
            .participants
            .iter()
            .enumerate()
            .filter(|&(slot, _)| {
                let calls = self.calls(i, slot);
                calls.commit + calls.rollback > 0
            })
            .filter_map(|(slot, &p)| {
                let phase2: Phase2 = self.pool[&p].phase2;
                phase2.gave_up(p).map(|last_failure| Hazard {
                    participant: participant::name(p),
                    index: slot,
                    decision,
                    attempts: phase2.attempts(),
                    last_failure,
                })
            })
            .collect();
        OutcomeExpect {
            decision,
            abort_reasons: txn.abort_reasons.clone(),
            hazards,
        }
    }

    /// Phase 1 of Active transaction `i`: the first No vote or panic
    /// decides Abort at once; otherwise a hang decides it at the prepare
    /// timeout; otherwise Prepared.
    fn phase_one(&self, i: usize) -> PrepareExpect {
        let mut at_once = Vec::new();
        let mut timed_out = Vec::new();
        for (index, &p) in self.txns[i].participants.iter().enumerate() {
            let participant = participant::name(p);
            match self.pool[&p].vote {
                Vote::Ready | Vote::ReadOnly => {}
                Vote::Aborted => at_once.push(AbortReason::Voted {
                    participant,
                    index,
                    reason: participant::refusal(p),
                }),
                Vote::Panic => at_once.push(AbortReason::PrepareFailed {
                    participant,
                    index,
                    failure: CallFailure::Panicked(SCRIPTED_PANIC.to_owned()),
                }),
                Vote::Hang => timed_out.push(AbortReason::PrepareFailed {
                    participant,
                    index,
                    failure: CallFailure::TimedOut,
                }),
            }
        }
        if !at_once.is_empty() {
            PrepareExpect {
                outcome: PhaseOne::Aborted(at_once),
                elapsed: Duration::ZERO,
            }
        } else if !timed_out.is_empty() {
            PrepareExpect {
                outcome: PhaseOne::Aborted(timed_out),
                elapsed: PREPARE_TIMEOUT,
            }
        } else {
            PrepareExpect {
                outcome: PhaseOne::Prepared,
                elapsed: Duration::ZERO,
            }
        }
    }

    fn finish(&mut self, i: usize, state: TransactionState, abort_reasons: Vec<AbortReason>) {
        let txn = &mut self.txns[i];
        txn.state = state;
        txn.abort_reasons = abort_reasons;
        self.finished.push(i);
    }

    fn begin(&mut self, name: T) -> Result<(), Refusal> {
        self.begun += 1;
        if self.unfinished() >= MAX_TRANSACTIONS {
            return Err(Refusal::CapacityExceeded);
        }
        self.txns.push(Txn {
            name,
            state: TransactionState::Active,
            participants: Vec::new(),
            prepare_sent: false,
            abort_reasons: Vec::new(),
        });
        Ok(())
    }

    fn register(&mut self, txn: TxnRef, who: Who) -> Result<Registration, Refusal> {
        if let Who::New(p, script) = who {
            self.pool.insert(p, script);
        }
        let p = who.name();
        let i = self.lookup(txn)?;
        let txn = &mut self.txns[i];
        if txn.state != TransactionState::Active {
            return Err(Refusal::InvalidState {
                current: txn.state,
                operation: Operation::Register,
            });
        }
        // The duplicate check comes before the limit: a duplicate changes
        // nothing, so it is not refused even at the limit.
        if txn.participants.contains(&p) {
            return Ok(Registration::AlreadyRegistered);
        }
        if txn.participants.len() >= MAX_PARTICIPANTS {
            return Err(Refusal::TooManyParticipants);
        }
        txn.participants.push(p);
        Ok(Registration::Registered)
    }

    fn prepare(&mut self, txn: TxnRef) -> Result<PrepareExpect, Refusal> {
        let i = self.lookup(txn)?;
        let txn = &self.txns[i];
        let at_once = |outcome| PrepareExpect {
            outcome,
            elapsed: Duration::ZERO,
        };
        Ok(match txn.state {
            TransactionState::Active => {
                let expect = self.phase_one(i);
                self.txns[i].prepare_sent = true;
                match &expect.outcome {
                    PhaseOne::Prepared => self.txns[i].state = TransactionState::Prepared,
                    PhaseOne::Aborted(reasons) => {
                        self.finish(i, TransactionState::Aborted, reasons.clone());
                    }
                }
                expect
            }
            // After a Commit decision the phase-1 outcome was Prepared.
            TransactionState::Prepared | TransactionState::Committed => at_once(PhaseOne::Prepared),
            _ => at_once(PhaseOne::Aborted(txn.abort_reasons.clone())),
        })
    }

    fn commit(&mut self, txn: TxnRef) -> Result<OutcomeExpect, Refusal> {
        let i = self.lookup(txn)?;
        match self.txns[i].state {
            TransactionState::Prepared => {
                self.finish(i, TransactionState::Committed, Vec::new());
                Ok(self.outcome(i))
            }
            TransactionState::Committed => Ok(self.outcome(i)),
            current => Err(Refusal::InvalidState {
                current,
                operation: Operation::Commit,
            }),
        }
    }

    fn rollback(&mut self, txn: TxnRef) -> Result<OutcomeExpect, Refusal> {
        let i = self.lookup(txn)?;
        match self.txns[i].state {
            TransactionState::Active | TransactionState::Prepared => {
                self.finish(i, TransactionState::Aborted, vec![AbortReason::RolledBack]);
                Ok(self.outcome(i))
            }
            TransactionState::Aborted => Ok(self.outcome(i)),
            current => Err(Refusal::InvalidState {
                current,
                operation: Operation::Rollback,
            }),
        }
    }

    fn expire_deadlines(&mut self) {
        for i in 0..self.txns.len() {
            if !self.txns[i].state.is_terminal() {
                self.finish(
                    i,
                    TransactionState::Aborted,
                    vec![AbortReason::DeadlineExpired],
                );
            }
        }
    }

    fn index_ok(&self, txn: TxnRef) -> bool {
        txn == TxnRef::Never || self.index(txn).is_some()
    }

    /// Which row of the PROTOCOL.md client-API table (or which misuse)
    /// `step` exercises from this state; used to show that generation
    /// reaches every row.
    pub fn row(&self, step: &Step) -> String {
        let target = |txn: TxnRef| match self.index(txn) {
            None => Err("call with a never-issued id"),
            Some(i) if self.forgotten(i) => Err("call with a forgotten id"),
            Some(i) => Ok(&self.txns[i]),
        };
        let active = |txn: TxnRef, state| {
            self.index(txn)
                .filter(|&i| !self.forgotten(i) && self.txns[i].state == state)
        };
        let row = |op: &str, txn: TxnRef| match target(txn) {
            Err(row) => row.to_owned(),
            Ok(t) => format!("{op} in {}", t.state),
        };
        match *step {
            Step::Begin(_) if self.unfinished() >= MAX_TRANSACTIONS => "begin at capacity".into(),
            Step::Begin(_) => "begin".into(),
            Step::Register { txn, who } => match target(txn) {
                Err(row) => row.to_owned(),
                Ok(t) if t.state != TransactionState::Active => "register outside Active".into(),
                Ok(t) if t.participants.contains(&who.name()) => {
                    "register the same participant again".into()
                }
                Ok(t) if t.participants.len() >= MAX_PARTICIPANTS => {
                    "register at the participant limit".into()
                }
                Ok(_) if matches!(who, Who::Existing(_)) => {
                    "register a participant of another transaction".into()
                }
                Ok(_) => "register in Active".into(),
            },
            Step::Prepare(txn) if active(txn, TransactionState::Active).is_some() => {
                let i = active(txn, TransactionState::Active).expect("just checked");
                match self.phase_one(i).outcome {
                    PhaseOne::Prepared if self.txns[i].participants.is_empty() => {
                        "prepare with no participants".into()
                    }
                    PhaseOne::Prepared => "prepare in Active -> Prepared".into(),
                    PhaseOne::Aborted(reasons) => match &reasons[0] {
                        AbortReason::Voted { .. } => "prepare in Active -> Aborted by a No vote",
                        AbortReason::PrepareFailed {
                            failure: CallFailure::TimedOut,
                            ..
                        } => "prepare in Active -> Aborted by a timeout",
                        _ => "prepare in Active -> Aborted by a panic",
                    }
                    .into(),
                }
            }
            Step::Prepare(txn) => row("prepare", txn),
            Step::Commit(txn) if active(txn, TransactionState::Prepared).is_some() => {
                let mut after = self.clone();
                match after.commit(txn) {
                    Ok(o) if !o.hazards.is_empty() => "commit in Prepared with hazards".into(),
                    _ => "commit in Prepared".into(),
                }
            }
            Step::Commit(txn) => row("commit", txn),
            Step::Rollback(txn) => row("rollback", txn),
            Step::GetState(txn) => row("get state", txn),
            Step::ExpireDeadlines if self.unfinished() > 0 => {
                "deadline rolls back an unfinished transaction".into()
            }
            Step::ExpireDeadlines => "deadline passes with nothing unfinished".into(),
        }
    }
}

fn script() -> impl Strategy<Value = Script> {
    let vote = prop_oneof![
        4 => Just(Vote::Ready),
        2 => Just(Vote::ReadOnly),
        1 => Just(Vote::Aborted),
        1 => Just(Vote::Panic),
        1 => Just(Vote::Hang),
    ];
    let phase2 = prop_oneof![
        6 => Just(Phase2::Ok),
        2 => Just(Phase2::FailThenOk),
        1 => Just(Phase2::FailAlways),
        1 => Just(Phase2::FailPermanent),
        1 => Just(Phase2::Hang),
    ];
    (vote, phase2).prop_map(|(vote, phase2)| Script { vote, phase2 })
}

/// Mostly one of the last few transactions started (older ones are usually
/// finished or forgotten), sometimes any, sometimes a never-issued id.
fn txn_ref(state: &Model) -> BoxedStrategy<TxnRef> {
    let names: Vec<TxnRef> = state.txns.iter().map(|t| TxnRef::Named(t.name)).collect();
    if names.is_empty() {
        return Just(TxnRef::Never).boxed();
    }
    let recent = names[names.len().saturating_sub(3)..].to_vec();
    prop_oneof![
        8 => proptest::sample::select(recent),
        3 => proptest::sample::select(names),
        1 => Just(TxnRef::Never),
    ]
    .boxed()
}

/// Two times in three a transaction in a state where `wanted` holds (so
/// registrations, prepares and commits mostly do something), otherwise any
/// reference from [`txn_ref`] (misuse).
fn preferring(state: &Model, wanted: impl Fn(&Txn) -> bool) -> BoxedStrategy<TxnRef> {
    let candidates: Vec<TxnRef> = (0..state.txns.len())
        .filter(|&i| wanted(&state.txns[i]) && !state.forgotten(i))
        .map(|i| TxnRef::Named(state.txns[i].name))
        .collect();
    let any = txn_ref(state);
    if candidates.is_empty() {
        return any;
    }
    prop_oneof![2 => proptest::sample::select(candidates), 1 => any].boxed()
}

/// Mostly a new participant, often a recent one again (a duplicate, or the
/// same `Arc` in another transaction), sometimes any earlier one.
fn who(state: &Model) -> BoxedStrategy<Who> {
    let fresh = P(u32::try_from(state.pool.len()).expect("few participants"));
    let new = script().prop_map(move |script| Who::New(fresh, script));
    let created: Vec<Who> = state.pool.keys().map(|&p| Who::Existing(p)).collect();
    if created.is_empty() {
        return new.boxed();
    }
    let recent = created[created.len().saturating_sub(2)..].to_vec();
    prop_oneof![
        3 => new,
        2 => proptest::sample::select(recent),
        1 => proptest::sample::select(created),
    ]
    .boxed()
}

/// The [`ReferenceStateMachine`] over [`Model`].
pub struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let txn = || txn_ref(state);
        let in_state = |wanted| preferring(state, move |t| t.state == wanted);
        let begin_weight = if state.txns.is_empty() { 16 } else { 4 };
        let mut steps: Vec<(u32, BoxedStrategy<Step>)> = vec![
            (begin_weight, Just(Step::Begin(T(state.begun))).boxed()),
            (
                8,
                (in_state(TransactionState::Active), who(state))
                    .prop_map(|(txn, who)| Step::Register { txn, who })
                    .boxed(),
            ),
            (
                6,
                in_state(TransactionState::Active)
                    .prop_map(Step::Prepare)
                    .boxed(),
            ),
            (
                6,
                in_state(TransactionState::Prepared)
                    .prop_map(Step::Commit)
                    .boxed(),
            ),
            (3, txn().prop_map(Step::Rollback).boxed()),
            (2, txn().prop_map(Step::GetState).boxed()),
        ];
        if Self::preconditions(state, &Step::ExpireDeadlines) {
            steps.push((1, Just(Step::ExpireDeadlines).boxed()));
        }
        Union::new_weighted(steps).boxed()
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        state.expect = match *step {
            Step::Begin(name) => Expect::Begin(state.begin(name)),
            Step::Register { txn, who } => Expect::Register(state.register(txn, who)),
            Step::Prepare(txn) => Expect::Prepare(state.prepare(txn)),
            Step::Commit(txn) => Expect::Outcome(state.commit(txn)),
            Step::Rollback(txn) => Expect::Outcome(state.rollback(txn)),
            Step::GetState(txn) => Expect::State(state.lookup(txn).map(|i| state.txns[i].state)),
            Step::ExpireDeadlines => {
                state.expire_deadlines();
                Expect::TimePassed
            }
        };
        state
    }

    /// Names must be fresh where a step creates them and refer to issued
    /// transactions and created participants where a step uses them
    /// (shrinking deletes and simplifies steps, which can break this). Deadlines may
    /// expire only with at most one unfinished transaction: several
    /// transactions rolled back by one sweep finish in an order that depends
    /// on retry jitter, which would make the retention queue (and so which
    /// ids are forgotten) unpredictable.
    fn preconditions(state: &Model, step: &Step) -> bool {
        match *step {
            Step::Begin(name) => state.txns.iter().all(|t| t.name != name),
            Step::Register { txn, who } => {
                state.index_ok(txn)
                    && match who {
                        Who::New(p, _) => !state.pool.contains_key(&p),
                        Who::Existing(p) => state.pool.contains_key(&p),
                    }
            }
            Step::Prepare(txn) | Step::Commit(txn) | Step::Rollback(txn) | Step::GetState(txn) => {
                state.index_ok(txn)
            }
            Step::ExpireDeadlines => state.unfinished() <= 1,
        }
    }
}
