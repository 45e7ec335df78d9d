//! Exhaustive model checking of the real protocol core with [stateright].
//!
//! The model drives the product's own sans-I/O state machine,
//! [`dtxn::core::Transaction`], through every interleaving of client calls,
//! timers and participant answers (within the bounds below), and checks the
//! rules of `PROTOCOL.md` in every reachable state. Nothing of the protocol
//! is re-implemented here, nor anything of the driver: time is an input of
//! the core (its deadline is a timer of its own), so the model only plays
//! the *environment* — the client, the clock, and the participants that
//! receive the core's [`Action`]s and answer with [`Event`]s.
//!
//! # State
//!
//! A [`State`] is the real `Transaction` (it is `Clone + Eq + Hash`) plus:
//!
//! * `calls`: the calls the core issued that are not answered yet;
//! * `told`: per participant, a log of what it was *told* (how many
//!   `prepare` / `commit` / `rollback` calls it received, and whether a
//!   phase-2 call came before the matching decision or while its `prepare`
//!   was still running), what it answered to `prepare`, whether it
//!   acknowledged a phase-2 call, and whether it is dead;
//! * whether the deadline has passed and whether the coordinator shut down;
//! * the remaining failure budgets;
//! * the first decision ever observed (the watch channel the clients wait
//!   on reports every state, so whatever the core shows is what clients see),
//!   and flags raised when an event is handled against the rules (the
//!   decision changed, the client API table was not followed, the answer to
//!   an outstanding call was refused, a late answer was accepted).
//!
//! The properties are judged against the environment's log, not against
//! the core's own bookkeeping, so a core that misrecords what it did is
//! caught.
//!
//! # Actions (the nondeterminism)
//!
//! * The client calls `prepare`, `commit` or `rollback`, in any order and
//!   repeatedly. A repeat that changes nothing yields no new state (it is a
//!   self-loop), which is itself checked: repeats must call nobody and
//!   change nothing.
//! * The clock reaches the transaction's deadline, once: the core's timer
//!   fires (`handle_timeout`). Client calls after it are fed at that time,
//!   and the core must apply its expired deadline itself.
//! * The coordinator shuts down (`Shutdown`), once: no client calls and no
//!   timer afterwards (the driver's sweeper stops), so a shutdown that
//!   comes during phase 1 must be remembered by the core.
//! * Any outstanding `prepare` is answered `Ready`, `ReadOnly`,
//!   `Aborted(reason)`, or fails (`TimedOut`, `Panicked`, a transient
//!   `Error`).
//! * Any outstanding `commit` / `rollback` is acknowledged or fails (a
//!   transient error, a timeout, a permanent error), within a budget.
//! * Any participant with an outstanding call dies for good (within a
//!   budget): that call and every later one fails with `TimedOut`.
//! * A late or duplicate answer arrives for any call already answered
//!   (`Ready` / `TimedOut` for `prepare`, `Ok` / `TimedOut` for phase 2): the
//!   core must refuse it as `Stale` and change nothing, so this action yields
//!   no new state unless the core misbehaves.
//!
//! With a decision log ([`TwoPhaseCommit::with_log`]), the core is made
//! with `with_decision_log` and the environment also plays the log and the
//! coordinator's crash:
//!
//! * the write of a Commit decision ends durable, or fails (within a
//!   budget) either lost or *persisted anyway* (an error after the write
//!   landed);
//! * the coordinator crashes, once, anywhere: its memory, calls and write
//!   in flight are lost. If the decision is on disk, the restarted
//!   coordinator replays it through the core (as `recover` does) and
//!   delivers `commit` again; if not, the transaction is gone and every
//!   participant that may hold work learns `aborted` by asking (presumed
//!   abort). The properties then judge both incarnations together, so a
//!   `commit` sent before its decision was durable breaks agreement.
//!
//! # Bounds
//!
//! All participants are registered up front (registration is only possible
//! while `Active` and involves no participant call). Each phase-2 call is
//! tried at most [`MAX_ATTEMPTS`] times, at most [`PHASE2_FAILURES`]
//! phase-2 calls to live participants fail and at most [`DEATHS`]
//! participant dies. Prepare failures need no budget: each participant
//! answers `prepare` once. The only times are 0 and the deadline; the
//! retry time budget ([`RETRY_BUDGET`]) is shorter than the deadline, so
//! phase 2 decided before the clock jumps has spent its budget after.
//! With these bounds the reachable state space is
//! finite and acyclic for a correct core, so `eventually` properties are
//! sound (stateright judges them on paths ending in a state with no
//! successor).
//!
//! Sizes at the time of writing (debug build, one checker thread):
//!
//! | participants | unique states | time   |
//! |--------------|---------------|--------|
//! | 1            | 814           | 27 ms  |
//! | 2            | 34 706        | 1.8 s  |
//! | 3            | 1 199 748     | 81 s   |
//! | 4            | `#[ignore]`d: 13.2 M states, 17 min, 4 GB before time moved into the core; re-run since in a release build (`cargo test --release -p dtxn-verify --test model_check -- --ignored`), passed in 11 min on 2026-12-02 |
//! | 1, with a log and a crash | 2 128 | 66 ms |
//! | 2, with a log and a crash | 74 790 | 3.0 s |
//!
//! # Properties
//!
//! Named after the rule of `PROTOCOL.md` they check:
//!
//! * **agreement** (rule 1): no participant is told `commit` in a
//!   transaction in which any participant is told `rollback`;
//! * **commit validity** (rule 2): a Commit decision only when every
//!   participant was asked to prepare and voted `Ready` or `ReadOnly`;
//! * **stability** (rule 3): the decision is never changed or withdrawn and
//!   a terminal state never changes;
//! * **phase discipline** (rule 4): `commit` only to `Ready` voters and
//!   only after the Commit decision, `rollback` only after the Abort
//!   decision, no phase 2 while the participant's `prepare` is running or
//!   to `ReadOnly` / explicit `Aborted` voters, nobody told both, `prepare`
//!   at most once;
//! * **rollback coverage** (rule 5): in `Aborted`, every participant but the
//!   `ReadOnly` and explicit `Aborted` voters acknowledged `rollback` or is
//!   reported as a hazard;
//! * **honest outcome** (rule 6): `Committed` means every `Ready` voter
//!   acknowledged `commit` or is a reported hazard; `Aborted` means nobody
//!   was told `commit`; in a terminal state the reported hazards are exactly
//!   the participants sent phase 2 that never acknowledged;
//! * **termination** (rules 11 and 12, `eventually`): every run reaches
//!   `Committed` or `Aborted`;
//! * **no stuck phase** (rules 10 and 11): with no call outstanding the
//!   transaction is never left `Preparing`, `Committing` or `Aborting`;
//! * **client API table**: the client table of `PROTOCOL.md` and the
//!   deadline rule 12 (a refused call is refused with `InvalidState` and
//!   changes nothing; a repeat changes nothing and calls nobody);
//! * **call answers accepted**: the core accepts the answer to every call
//!   it made (no `Stale`, no `IllegalTransition` for them);
//! * **late answers change nothing**: a duplicate or late answer is refused
//!   as `Stale` and changes nothing;
//! * and `sometimes` properties showing the interesting outcomes are
//!   reachable (a commit, a commit with a hazard, an abort with a hazard,
//!   a participant given up on because the retry time budget ran out while
//!   attempts were left), so the model cannot pass vacuously.
//!
//! Rule 7 (one-phase commit) is an optional optimisation the core does not
//! implement; rules 8 and 13 concern several transactions and the async
//! driver, outside one core.
//!
//! # Showing every property can fail
//!
//! Each [`PlantedBug`] of the core is switched on in the model's initial
//! transaction and the checker must find a counterexample to the property
//! it breaks. The termination properties and the late-answer property are
//! shown failing by broken environments (see [`Environment`]), as no
//! planted core bug breaks them.
//!
//! Run with `cargo test -p dtxn-verify --test model_check -- --nocapture`
//! to see state counts, times and the counterexample traces.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use dtxn::core::{
    Action, CallFailure, CoreError, Decision, Event, Limits, PlantedBug, Transaction,
    TransactionState,
};
use dtxn::{ParticipantError, PreparedResult, RetryPolicy};
use stateright::{Checker, Expectation, HasDiscoveries, Model, Path, Property};

/// Attempts per phase-2 call, the first included.
const MAX_ATTEMPTS: u32 = 2;
/// Phase-2 calls to live participants that may fail, in one run.
const PHASE2_FAILURES: u8 = 2;
/// Participants that may die for good, in one run.
const DEATHS: u8 = 1;
/// The call counters in the log saturate here (only 0, 1 and "more than
/// once" matter, and a buggy core may repeat calls forever).
const COUNT_CAP: u8 = 3;
/// The transaction's deadline, since it began: the clock jumps there when
/// the deadline passes (no other time matters to the core's decisions).
const DEADLINE: Duration = Duration::from_secs(60);
/// The phase-2 retry time budget, from the decision.
const RETRY_BUDGET: Duration = Duration::from_secs(30);
/// With a decision log: coordinator crashes in one run.
const CRASHES: u8 = 1;
/// With a decision log: writes of the decision that fail, in one run.
const LOG_FAILURES: u8 = 1;

/// Which participant call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Prepare,
    Commit,
    Rollback,
}

/// One call the core asked for; `attempt` is 1 for `prepare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Call {
    participant: usize,
    kind: Kind,
    attempt: u32,
}

impl Call {
    /// The participant call `action` asks for (`None`: a decision-log
    /// write, which this model's core, kept without a log, never asks for).
    fn of(action: &Action) -> Option<Self> {
        let (participant, kind, attempt) = match *action {
            Action::Prepare { participant } => (participant, Kind::Prepare, 1),
            Action::Commit {
                participant,
                attempt,
            } => (participant, Kind::Commit, attempt),
            Action::Rollback {
                participant,
                attempt,
            } => (participant, Kind::Rollback, attempt),
            Action::LogCommit { .. } => return None,
        };
        Some(Self {
            participant,
            kind,
            attempt,
        })
    }
}

/// A way a participant call can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Failure {
    TimedOut,
    Panicked,
    Transient,
    Permanent,
}

impl Failure {
    fn call_failure(self) -> CallFailure {
        match self {
            Self::TimedOut => CallFailure::TimedOut,
            Self::Panicked => CallFailure::Panicked("boom".into()),
            Self::Transient => ParticipantError::transient("busy").into(),
            Self::Permanent => ParticipantError::permanent("gone").into(),
        }
    }
}

/// How a `prepare` may fail (a panic, a timeout, or an error).
const PREPARE_FAILURES: [Failure; 3] = [Failure::TimedOut, Failure::Panicked, Failure::Transient];
/// How a `commit` / `rollback` may fail.
const PHASE2_FAILURE_KINDS: [Failure; 3] =
    [Failure::Transient, Failure::TimedOut, Failure::Permanent];

/// A participant's answer to `prepare`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum PrepareReply {
    Ready,
    ReadOnly,
    /// An explicit no vote.
    Aborted,
    Failed(Failure),
}

impl PrepareReply {
    fn result(self) -> Result<PreparedResult, CallFailure> {
        match self {
            Self::Ready => Ok(PreparedResult::Ready),
            Self::ReadOnly => Ok(PreparedResult::ReadOnly),
            Self::Aborted => Ok(PreparedResult::Aborted("no".into())),
            Self::Failed(failure) => Err(failure.call_failure()),
        }
    }

    /// `ReadOnly` and explicit `Aborted` voters changed nothing (or undid
    /// it): they get no phase 2.
    fn holds_no_work(self) -> bool {
        matches!(self, Self::ReadOnly | Self::Aborted)
    }
}

/// A participant's answer to `commit` / `rollback`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Phase2Reply {
    Ack,
    Failed(Failure),
}

/// A step of the environment: one nondeterministic choice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// The client calls `prepare_transaction`.
    ClientPrepare,
    /// The client calls `commit_transaction`.
    ClientCommit,
    /// The client calls `rollback_transaction`.
    ClientRollback,
    /// The clock reaches the deadline and the core's timer fires.
    DeadlineExpired,
    /// The coordinator shuts down.
    Shutdown,
    /// An outstanding `prepare` ends.
    Vote {
        participant: usize,
        reply: PrepareReply,
    },
    /// An outstanding `commit` / `rollback` ends.
    Phase2 { call: Call, reply: Phase2Reply },
    /// The participant dies for good during this call.
    Die { call: Call },
    /// A broken driver drops this call without ever answering it.
    Lose { call: Call },
    /// A late or duplicate answer to a call already answered.
    Redeliver(Event),
    /// The write of the decision to the log ends.
    LogWritten { attempt: u32, outcome: LogOutcome },
    /// The coordinator crashes and restarts on its log: its memory, its
    /// calls in flight and its log write in flight are lost.
    Crash,
}

/// How a write of the decision log ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum LogOutcome {
    /// Durable, and reported so.
    Durable,
    /// Reported failed, and not on disk.
    FailedLost,
    /// Reported failed, yet on disk (an error after the write landed).
    FailedPersisted,
}

/// What one participant was told and answered, as it saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Told {
    /// `prepare` calls received (saturating at [`COUNT_CAP`]).
    prepare: u8,
    /// `commit` calls received (saturating).
    commit: u8,
    /// `rollback` calls received (saturating).
    rollback: u8,
    /// A phase-2 call arrived before its decision, or while `prepare` ran.
    misordered: bool,
    /// Its answer to `prepare`.
    voted: Option<PrepareReply>,
    /// It acknowledged a phase-2 call.
    acked: bool,
    /// It died: all its later calls fail.
    dead: bool,
}

impl Told {
    fn phase2(&self) -> bool {
        self.commit > 0 || self.rollback > 0
    }
}

/// Rules broken while handling an event (history flags for the properties).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Broken {
    /// The decision changed or vanished, or a terminal state changed.
    stability: bool,
    /// A client call or timer was not handled as the API table says.
    client_api: bool,
    /// The answer to an outstanding call was refused, the core reported
    /// an illegal transition, or it asked for a decision-log write without
    /// a log.
    answer_refused: bool,
    /// A late or duplicate answer was accepted or changed something.
    late_answer_accepted: bool,
}

/// The model's state: the real core plus its environment.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct State {
    /// The product's state machine.
    txn: Transaction,
    /// Calls issued and not answered yet, sorted, without duplicates.
    calls: Vec<Call>,
    /// Per participant, in registration order.
    told: Vec<Told>,
    deadline_passed: bool,
    shut_down: bool,
    phase2_failures_left: u8,
    deaths_left: u8,
    losses_left: u8,
    /// The first decision observed.
    decision: Option<Decision>,
    broken: Broken,
    /// With a decision log: the write of the decision outstanding.
    log_write: Option<u32>,
    /// With a decision log: the decision is on disk.
    durable: bool,
    log_failures_left: u8,
    crashes_left: u8,
    /// A crash found nothing in the log: the transaction is gone, and
    /// every participant that may hold work learns `aborted` by asking
    /// (presumed abort).
    presumed_abort: bool,
    /// A crash found the decision in the log and delivers it again.
    recovered: bool,
}

impl State {
    fn state(&self) -> TransactionState {
        if self.presumed_abort {
            return TransactionState::Aborted;
        }
        self.txn.state()
    }

    /// Whether the core lists participant `i` among its hazards.
    fn reported(&self, i: usize) -> bool {
        !self.presumed_abort && self.txn.hazards().any(|(j, _, _)| j == i)
    }

    /// The crash: whatever the log holds decides what follows.
    fn crash(&mut self, limits: Limits) {
        self.crashes_left -= 1;
        self.calls.clear();
        self.log_write = None;
        if !self.durable {
            // Nothing logged: presumed abort. Participants that may hold
            // work ask the outcome, hear `aborted` and roll back.
            self.presumed_abort = true;
            for told in &mut self.told {
                if !told.voted.is_some_and(PrepareReply::holds_no_work) {
                    told.rollback = told.rollback.max(1);
                    told.acked = true;
                }
            }
            return;
        }
        // Recovery replays the logged decision (its Ready voters) through
        // the core, then is told it is durable: `commit` goes out again.
        let mut txn = Transaction::new(limits)
            .with_deadline(DEADLINE)
            .with_decision_log();
        let mut ignored = Vec::new();
        let n = self.told.len();
        let replay = (0..n)
            .map(|_| Event::Register)
            .chain([Event::Prepare])
            .chain(self.told.iter().enumerate().map(|(participant, told)| {
                let vote = if told.voted == Some(PrepareReply::Ready) {
                    PreparedResult::Ready
                } else {
                    PreparedResult::ReadOnly
                };
                Event::PrepareDone {
                    participant,
                    result: Ok(vote),
                }
            }))
            .chain([Event::Commit]);
        for event in replay {
            if txn.handle(event, &mut ignored).is_err() {
                self.broken.answer_refused = true;
            }
        }
        // The replay's own actions (prepare calls, the write) are not
        // performed: only what follows the durable decision is. The
        // restarted coordinator judges its outcome by what it hears itself:
        // an acknowledgement to the coordinator that died is not one.
        self.txn = txn;
        self.recovered = true;
        for told in &mut self.told {
            told.acked = false;
        }
        let mut actions = Vec::new();
        let durable = Event::CommitLogged {
            attempt: 1,
            result: Ok(()),
        };
        if self.txn.handle(durable, &mut actions).is_err() {
            self.broken.answer_refused = true;
        }
        self.issue(&actions);
    }

    fn preparing(&self, participant: usize) -> bool {
        self.calls
            .iter()
            .any(|c| c.participant == participant && c.kind == Kind::Prepare)
    }

    /// Records the calls the core asked for.
    fn issue(&mut self, actions: &[Action]) {
        let decision = self.state().decision();
        for action in actions {
            let Some(call) = Call::of(action) else {
                match action {
                    Action::LogCommit { attempt } if self.txn.keeps_decision_log() => {
                        self.log_write = Some(*attempt);
                    }
                    _ => self.broken.answer_refused = true,
                }
                continue;
            };
            let preparing = self.preparing(call.participant);
            let told = &mut self.told[call.participant];
            let bump = |n: &mut u8| *n = (*n + 1).min(COUNT_CAP);
            match call.kind {
                Kind::Prepare => bump(&mut told.prepare),
                Kind::Commit => {
                    bump(&mut told.commit);
                    told.misordered |= preparing || decision != Some(Decision::Commit);
                }
                Kind::Rollback => {
                    bump(&mut told.rollback);
                    told.misordered |= preparing || decision != Some(Decision::Abort);
                }
            }
            if let Err(at) = self.calls.binary_search(&call) {
                self.calls.insert(at, call);
            }
        }
    }

    /// Records what clients now observe, flagging any change of decision.
    fn observe(&mut self, before: TransactionState) {
        if self.txn.awaiting_log() {
            // Not durable yet: outcome queries answer "pending".
            return;
        }
        let now = self.state();
        if before.is_terminal() && now != before {
            self.broken.stability = true;
        }
        match self.decision {
            None => self.decision = now.decision(),
            Some(seen) if now.decision() != Some(seen) => self.broken.stability = true,
            Some(_) => {}
        }
    }

    /// Feeds the answer to an outstanding call.
    fn answer(&mut self, call: Call, event: Event) {
        if let Ok(at) = self.calls.binary_search(&call) {
            self.calls.remove(at);
        }
        let before = self.state();
        let mut actions = Vec::new();
        if self.txn.handle(event, &mut actions).is_err() {
            self.broken.answer_refused = true;
        }
        self.issue(&actions);
        self.observe(before);
    }

    /// Feeds a client call, a shutdown or (`None`) the core's timer at the
    /// deadline, checking it against the API table.
    fn client(&mut self, event: Option<Event>) {
        let before = self.state();
        let mut actions = Vec::new();
        let as_specified = handle_checked(&mut self.txn, event, &mut actions);
        self.broken.client_api |= !as_specified;
        self.issue(&actions);
        self.observe(before);
    }
}

/// What the client API table of `PROTOCOL.md` (and rule 12 for timers)
/// requires of an event in a state.
enum Expected {
    /// Accepted, and phase 1 starts (or, with no participants, ends).
    StartsPhaseOne,
    /// Accepted, and the decision is taken.
    Decides(Decision),
    /// Accepted, changes nothing and calls nobody (a repeat).
    Repeat,
    /// Accepted and remembered, but no state change and nobody called
    /// until phase 1 ends (a deadline or shutdown while `Preparing`).
    Deferred,
    /// Refused with `InvalidState`, changing nothing.
    Refused,
}

fn expected(event: &Event, state: TransactionState) -> Expected {
    use TransactionState::*;
    match (event, state) {
        (Event::Prepare, Active) => Expected::StartsPhaseOne,
        (Event::Commit, Prepared) => Expected::Decides(Decision::Commit),
        (Event::Commit, Active | Preparing | Aborting | Aborted) => Expected::Refused,
        (Event::Rollback, Active | Preparing | Prepared) => Expected::Decides(Decision::Abort),
        (Event::Rollback, Committing | Committed) => Expected::Refused,
        (Event::DeadlineExpired | Event::Shutdown, Active | Prepared) => {
            Expected::Decides(Decision::Abort)
        }
        (Event::DeadlineExpired | Event::Shutdown, Preparing) => Expected::Deferred,
        _ => Expected::Repeat,
    }
}

/// Handles a client event or (`None`) the timer at the deadline; whether
/// the core did what the API table requires.
fn handle_checked(txn: &mut Transaction, event: Option<Event>, actions: &mut Vec<Action>) -> bool {
    let before = txn.clone();
    let issued_before = actions.len();
    let timer = event.is_none();
    let (expected, result) = match event {
        Some(event) => (expected(&event, before.state()), txn.handle(event, actions)),
        None => (
            expected(&Event::DeadlineExpired, before.state()),
            txn.handle_timeout(DEADLINE, actions),
        ),
    };
    // The timer moves the core's clock; nothing else may change.
    let unchanged = actions.len() == issued_before
        && if timer {
            txn.state() == before.state() && txn.peers() == before.peers()
        } else {
            *txn == before
        };
    match expected {
        Expected::StartsPhaseOne => {
            result.is_ok()
                && matches!(
                    txn.state(),
                    TransactionState::Preparing | TransactionState::Prepared
                )
        }
        Expected::Decides(decision) => result.is_ok() && txn.state().decision() == Some(decision),
        Expected::Repeat => result.is_ok() && unchanged,
        Expected::Deferred => {
            result.is_ok() && actions.len() == issued_before && txn.state() == before.state()
        }
        Expected::Refused => matches!(result, Err(CoreError::InvalidState { .. })) && unchanged,
    }
}

/// How the driver around the core behaves (the model's environment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Environment {
    /// What the core requires of its driver: every call is answered, the
    /// timer fires at the deadline (unless the coordinator shut down
    /// first), and nothing is ever re-delivered: a deadline or shutdown
    /// during phase 1 is the core's to remember.
    CoreContract,
    /// Like `CoreContract`, but the driver may drop one call without ever
    /// feeding its result back (a broken driver).
    LosesCalls,
}

/// The model: a transaction of `participants` participants, checked under
/// the bounds in the module docs.
#[derive(Clone, Debug)]
struct TwoPhaseCommit {
    participants: usize,
    environment: Environment,
    planted: Option<PlantedBug>,
    /// The core keeps a decision log, and the coordinator may crash.
    log: bool,
}

impl TwoPhaseCommit {
    fn new(participants: usize) -> Self {
        Self {
            participants,
            environment: Environment::CoreContract,
            planted: None,
            log: false,
        }
    }

    fn with_log(participants: usize) -> Self {
        Self {
            log: true,
            ..Self::new(participants)
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_participants: self.participants,
            // The retry time budget is shorter than the deadline: phase 2
            // decided before the clock jumps to the deadline has spent its
            // budget after it, so a failure then is given up on although
            // attempts are left (`retry_budget_spent`).
            retry: RetryPolicy::new(MAX_ATTEMPTS, Duration::ZERO, Duration::ZERO)
                .and_then(|policy| policy.with_max_elapsed(RETRY_BUDGET))
                .expect("a valid retry policy"),
        }
    }

    fn with_bug(participants: usize, bug: PlantedBug) -> Self {
        Self {
            planted: Some(bug),
            ..Self::new(participants)
        }
    }

    fn with_environment(participants: usize, environment: Environment) -> Self {
        Self {
            environment,
            ..Self::new(participants)
        }
    }
}

impl Model for TwoPhaseCommit {
    type State = State;
    type Action = Step;

    fn init_states(&self) -> Vec<State> {
        let mut txn = Transaction::new(self.limits()).with_deadline(DEADLINE);
        if self.log {
            txn = txn.with_decision_log();
        }
        if let Some(bug) = self.planted {
            txn.plant(bug);
        }
        for _ in 0..self.participants {
            txn.handle(Event::Register, &mut Vec::new())
                .expect("registering in Active below the limit");
        }
        vec![State {
            txn,
            calls: Vec::new(),
            told: vec![Told::default(); self.participants],
            deadline_passed: false,
            shut_down: false,
            phase2_failures_left: PHASE2_FAILURES,
            deaths_left: DEATHS,
            losses_left: u8::from(self.environment == Environment::LosesCalls),
            decision: None,
            broken: Broken::default(),
            log_write: None,
            durable: false,
            log_failures_left: if self.log { LOG_FAILURES } else { 0 },
            crashes_left: if self.log { CRASHES } else { 0 },
            presumed_abort: false,
            recovered: false,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Step>) {
        if s.presumed_abort {
            // The transaction is gone: nothing of it is left to happen.
            return;
        }
        if let Some(attempt) = s.log_write {
            actions.push(Step::LogWritten {
                attempt,
                outcome: LogOutcome::Durable,
            });
            if s.log_failures_left > 0 {
                actions.extend(
                    [LogOutcome::FailedLost, LogOutcome::FailedPersisted]
                        .map(|outcome| Step::LogWritten { attempt, outcome }),
                );
            }
        }
        if s.crashes_left > 0 {
            actions.push(Step::Crash);
        }
        if self.log && s.log_write != Some(1) {
            // A late answer of the log (the first write) must be refused.
            actions.push(Step::Redeliver(Event::CommitLogged {
                attempt: 1,
                result: Ok(()),
            }));
        }
        if !s.shut_down {
            actions.extend([
                Step::ClientPrepare,
                Step::ClientCommit,
                Step::ClientRollback,
                Step::Shutdown,
            ]);
            if !s.deadline_passed {
                actions.push(Step::DeadlineExpired);
            }
        }

        for &call in &s.calls {
            let told = &s.told[call.participant];
            match call.kind {
                Kind::Prepare if told.dead => actions.push(Step::Vote {
                    participant: call.participant,
                    reply: PrepareReply::Failed(Failure::TimedOut),
                }),
                Kind::Prepare => {
                    let replies = [
                        PrepareReply::Ready,
                        PrepareReply::ReadOnly,
                        PrepareReply::Aborted,
                    ]
                    .into_iter()
                    .chain(PREPARE_FAILURES.map(PrepareReply::Failed));
                    actions.extend(replies.map(|reply| Step::Vote {
                        participant: call.participant,
                        reply,
                    }));
                }
                Kind::Commit | Kind::Rollback if told.dead => actions.push(Step::Phase2 {
                    call,
                    reply: Phase2Reply::Failed(Failure::TimedOut),
                }),
                Kind::Commit | Kind::Rollback => {
                    actions.push(Step::Phase2 {
                        call,
                        reply: Phase2Reply::Ack,
                    });
                    if s.phase2_failures_left > 0 {
                        actions.extend(PHASE2_FAILURE_KINDS.map(|failure| Step::Phase2 {
                            call,
                            reply: Phase2Reply::Failed(failure),
                        }));
                    }
                }
            }
            if !told.dead && s.deaths_left > 0 {
                actions.push(Step::Die { call });
            }
            if s.losses_left > 0 {
                actions.push(Step::Lose { call });
            }
        }

        // Late and duplicate answers to calls already answered.
        for (participant, told) in s.told.iter().enumerate() {
            if told.prepare > 0 && !s.preparing(participant) {
                for result in [Ok(PreparedResult::Ready), Err(CallFailure::TimedOut)] {
                    actions.push(Step::Redeliver(Event::PrepareDone {
                        participant,
                        result,
                    }));
                }
            }
            let attempts = u32::from(told.commit.max(told.rollback)).min(MAX_ATTEMPTS);
            for attempt in 1..=attempts {
                let outstanding = s.calls.iter().any(|c| {
                    c.participant == participant && c.kind != Kind::Prepare && c.attempt == attempt
                });
                if !outstanding {
                    for result in [Ok(()), Err(CallFailure::TimedOut)] {
                        actions.push(Step::Redeliver(Event::Phase2Done {
                            participant,
                            attempt,
                            result,
                            retry_budget_spent: false,
                        }));
                    }
                }
            }
        }
    }

    fn next_state(&self, s: &State, step: Step) -> Option<State> {
        if let Step::Redeliver(event) = &step {
            // Cheap path: a refused stale answer must change nothing.
            let mut txn = s.txn.clone();
            let mut actions = Vec::new();
            let refused = matches!(
                txn.handle(event.clone(), &mut actions),
                Err(CoreError::Stale { .. } | CoreError::StaleLogAnswer { .. })
            );
            if refused && actions.is_empty() && txn == s.txn {
                return None;
            }
            let mut next = s.clone();
            next.txn = txn;
            next.broken.late_answer_accepted = true;
            next.issue(&actions);
            next.observe(s.state());
            return Some(next);
        }

        let mut next = s.clone();
        match step {
            Step::ClientPrepare => next.client(Some(Event::Prepare)),
            Step::ClientCommit => next.client(Some(Event::Commit)),
            Step::ClientRollback => next.client(Some(Event::Rollback)),
            Step::DeadlineExpired => {
                next.deadline_passed = true;
                next.client(None);
            }
            Step::Shutdown => {
                next.shut_down = true;
                next.client(Some(Event::Shutdown));
            }
            Step::Vote { participant, reply } => {
                next.told[participant].voted = Some(reply);
                let call = Call {
                    participant,
                    kind: Kind::Prepare,
                    attempt: 1,
                };
                let event = Event::PrepareDone {
                    participant,
                    result: reply.result(),
                };
                next.answer(call, event);
            }
            Step::Phase2 { call, reply } => {
                let result = match reply {
                    Phase2Reply::Ack => {
                        next.told[call.participant].acked = true;
                        Ok(())
                    }
                    Phase2Reply::Failed(failure) => {
                        if !next.told[call.participant].dead {
                            next.phase2_failures_left -= 1;
                        }
                        Err(failure.call_failure())
                    }
                };
                let event = Event::Phase2Done {
                    participant: call.participant,
                    attempt: call.attempt,
                    result,
                    retry_budget_spent: false,
                };
                next.answer(call, event);
            }
            Step::Die { call } => {
                next.deaths_left -= 1;
                let told = &mut next.told[call.participant];
                told.dead = true;
                let event = if call.kind == Kind::Prepare {
                    told.voted = Some(PrepareReply::Failed(Failure::TimedOut));
                    Event::PrepareDone {
                        participant: call.participant,
                        result: Err(CallFailure::TimedOut),
                    }
                } else {
                    Event::Phase2Done {
                        participant: call.participant,
                        attempt: call.attempt,
                        result: Err(CallFailure::TimedOut),
                        retry_budget_spent: false,
                    }
                };
                next.answer(call, event);
            }
            Step::Lose { call } => {
                next.losses_left -= 1;
                if let Ok(at) = next.calls.binary_search(&call) {
                    next.calls.remove(at);
                }
            }
            Step::LogWritten { attempt, outcome } => {
                next.log_write = None;
                let result = match outcome {
                    LogOutcome::Durable => {
                        next.durable = true;
                        Ok(())
                    }
                    LogOutcome::FailedLost | LogOutcome::FailedPersisted => {
                        next.log_failures_left -= 1;
                        next.durable |= outcome == LogOutcome::FailedPersisted;
                        Err(Failure::Transient.call_failure())
                    }
                };
                let before = next.state();
                let mut actions = Vec::new();
                if next
                    .txn
                    .handle(Event::CommitLogged { attempt, result }, &mut actions)
                    .is_err()
                {
                    next.broken.answer_refused = true;
                }
                next.issue(&actions);
                next.observe(before);
            }
            Step::Crash => next.crash(self.limits()),
            Step::Redeliver(_) => unreachable!("handled above"),
        }
        (next != *s).then_some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(AGREEMENT, |_, s: &State| {
                let commit = s.told.iter().any(|t| t.commit > 0);
                let rollback = s.told.iter().any(|t| t.rollback > 0);
                !(commit && rollback)
            }),
            Property::always(COMMIT_VALIDITY, |_, s: &State| {
                s.state().decision() != Some(Decision::Commit)
                    || s.told.iter().all(|t| {
                        t.prepare > 0
                            && matches!(t.voted, Some(PrepareReply::Ready | PrepareReply::ReadOnly))
                    })
            }),
            Property::always(STABILITY, |_, s: &State| !s.broken.stability),
            Property::always(PHASE_DISCIPLINE, |_, s: &State| {
                s.told.iter().all(|t| {
                    let holds_no_work = t.voted.is_some_and(PrepareReply::holds_no_work);
                    !t.misordered
                        && t.prepare <= 1
                        && (t.commit == 0 || t.voted == Some(PrepareReply::Ready))
                        && !(t.commit > 0 && t.rollback > 0)
                        && !(holds_no_work && t.phase2())
                })
            }),
            Property::always(ROLLBACK_COVERAGE, |_, s: &State| {
                s.state() != TransactionState::Aborted
                    || s.told.iter().enumerate().all(|(i, t)| {
                        t.voted.is_some_and(PrepareReply::holds_no_work)
                            || (t.rollback > 0 && (t.acked || s.reported(i)))
                    })
            }),
            Property::always(HONEST_OUTCOME, |_, s: &State| {
                let outcome = match s.state() {
                    TransactionState::Committed => s.told.iter().enumerate().all(|(i, t)| {
                        t.voted != Some(PrepareReply::Ready) || t.acked || s.reported(i)
                    }),
                    TransactionState::Aborted => s.told.iter().all(|t| t.commit == 0),
                    _ => true,
                };
                let hazards = !s.state().is_terminal()
                    || s.told.iter().enumerate().all(|(i, t)| {
                        if t.phase2() {
                            t.acked != s.reported(i)
                        } else {
                            !s.reported(i)
                        }
                    });
                outcome && hazards
            }),
            Property::eventually(TERMINATION, |_, s: &State| s.state().is_terminal()),
            Property::always(NO_STUCK_PHASE, |_, s: &State| {
                !s.calls.is_empty()
                    || s.log_write.is_some()
                    || !matches!(
                        s.state(),
                        TransactionState::Preparing
                            | TransactionState::Committing
                            | TransactionState::Aborting
                    )
            }),
            Property::always(CLIENT_API, |_, s: &State| !s.broken.client_api),
            Property::always(ANSWERS_ACCEPTED, |_, s: &State| !s.broken.answer_refused),
            Property::always(LATE_ANSWERS, |_, s: &State| !s.broken.late_answer_accepted),
            Property::sometimes(COMMITS, |_, s: &State| {
                s.state() == TransactionState::Committed
            }),
            Property::sometimes(COMMITS_WITH_HAZARD, |_, s: &State| {
                s.state() == TransactionState::Committed && s.txn.hazards().next().is_some()
            }),
            Property::sometimes(ABORTS_WITH_HAZARD, |_, s: &State| {
                s.state() == TransactionState::Aborted && s.txn.hazards().next().is_some()
            }),
            Property::sometimes(RECOVERED_COMMITS, |_, s: &State| {
                s.recovered && s.state() == TransactionState::Committed
            }),
            Property::sometimes(PRESUMED_ABORT_AFTER_PREPARED, |_, s: &State| {
                s.presumed_abort && s.told.iter().all(|t| t.voted == Some(PrepareReply::Ready))
            }),
            Property::sometimes(BUDGET_GIVES_UP, |_, s: &State| {
                // Given up on after a transient failure with attempts left:
                // only the retry time budget does that.
                s.txn.hazards().any(|(_, attempts, failure)| {
                    attempts < MAX_ATTEMPTS && !failure.is_permanent()
                })
            }),
        ]
    }
}

const AGREEMENT: &str = "agreement (rule 1)";
const COMMIT_VALIDITY: &str = "commit validity (rule 2)";
const STABILITY: &str = "stability (rule 3)";
const PHASE_DISCIPLINE: &str = "phase discipline (rule 4)";
const ROLLBACK_COVERAGE: &str = "rollback coverage (rule 5)";
const HONEST_OUTCOME: &str = "honest outcome (rule 6)";
const TERMINATION: &str = "termination (rules 11, 12)";
const NO_STUCK_PHASE: &str = "no stuck phase (rules 10, 11)";
const CLIENT_API: &str = "client API table";
const ANSWERS_ACCEPTED: &str = "call answers accepted";
const LATE_ANSWERS: &str = "late answers change nothing";
const COMMITS: &str = "sometimes: committed";
const COMMITS_WITH_HAZARD: &str = "sometimes: committed with a hazard";
const ABORTS_WITH_HAZARD: &str = "sometimes: aborted with a hazard";
const RECOVERED_COMMITS: &str = "sometimes: a logged decision delivered again after a crash";
const PRESUMED_ABORT_AFTER_PREPARED: &str =
    "sometimes: presumed abort after a crash with every participant prepared";
const BUDGET_GIVES_UP: &str = "sometimes: given up on when the retry time budget is spent";

/// A counterexample as one line per step: the step, then the core's state
/// and the calls outstanding after it.
fn trace(path: Path<State, Step>) -> String {
    let mut out = String::new();
    let steps = path.into_vec();
    for pair in steps.windows(2) {
        let (_, Some(step)) = &pair[0] else { continue };
        let after = &pair[1].0;
        let _ = writeln!(
            out,
            "  {step:?}\n      -> {} calls={:?}",
            after.state(),
            after.calls
        );
    }
    if let Some((last, _)) = steps.last() {
        let _ = writeln!(
            out,
            "  final: {:?}\n  told: {:?}\n  broken: {:?}",
            last.txn, last.told, last.broken
        );
    }
    out
}

/// Explores every reachable state; prints the count and the time taken.
fn explore(label: &str, model: TwoPhaseCommit) -> impl Checker<TwoPhaseCommit> {
    let start = Instant::now();
    let checker = model.checker().spawn_bfs().join();
    println!(
        "{label}: {} unique states ({} generated, depth {}) in {:.2?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        start.elapsed()
    );
    checker
}

/// Asserts no counterexample to any always/eventually property, and an
/// example for every `sometimes` property named in `reachable`.
fn assert_rules_hold(checker: &impl Checker<TwoPhaseCommit>, reachable: &[&'static str]) {
    assert!(checker.is_done(), "the exploration was cut short");
    let mut failures = String::new();
    for property in checker.model().properties() {
        let found = checker.discovery(property.name);
        match (property.expectation, found) {
            (Expectation::Sometimes, None) if reachable.contains(&property.name) => {
                let _ = writeln!(failures, "no example of \"{}\"", property.name);
            }
            (Expectation::Always | Expectation::Eventually, Some(path)) => {
                let _ = writeln!(
                    failures,
                    "counterexample to \"{}\":\n{}",
                    property.name,
                    trace(path)
                );
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

const ALL_OUTCOMES: [&str; 4] = [
    COMMITS,
    COMMITS_WITH_HAZARD,
    ABORTS_WITH_HAZARD,
    BUDGET_GIVES_UP,
];

#[test]
fn empty_transaction_satisfies_every_rule() {
    let checker = explore("0 participants", TwoPhaseCommit::new(0));
    // Nobody to give up on: only the plain commit is reachable.
    assert_rules_hold(&checker, &[COMMITS]);
}

#[test]
fn one_participant_satisfies_every_rule() {
    let checker = explore("1 participant", TwoPhaseCommit::new(1));
    assert_rules_hold(&checker, &ALL_OUTCOMES);
}

#[test]
fn two_participants_satisfy_every_rule() {
    let checker = explore("2 participants", TwoPhaseCommit::new(2));
    assert_rules_hold(&checker, &ALL_OUTCOMES);
}

#[test]
fn three_participants_satisfy_every_rule() {
    let checker = explore("3 participants", TwoPhaseCommit::new(3));
    assert_rules_hold(&checker, &ALL_OUTCOMES);
}

#[test]
#[ignore = "13 million states: about 17 minutes and 4 GB in a debug build; run with --ignored"]
fn four_participants_satisfy_every_rule() {
    let checker = explore("4 participants", TwoPhaseCommit::new(4));
    assert_rules_hold(&checker, &ALL_OUTCOMES);
}

const CRASH_OUTCOMES: [&str; 4] = [
    COMMITS,
    COMMITS_WITH_HAZARD,
    RECOVERED_COMMITS,
    PRESUMED_ABORT_AFTER_PREPARED,
];

#[test]
fn with_a_decision_log_one_participant_survives_a_crash_anywhere() {
    let checker = explore("1 participant, log, crash", TwoPhaseCommit::with_log(1));
    assert_rules_hold(&checker, &CRASH_OUTCOMES);
}

#[test]
fn with_a_decision_log_two_participants_survive_a_crash_anywhere() {
    let checker = explore("2 participants, log, crash", TwoPhaseCommit::with_log(2));
    assert_rules_hold(&checker, &CRASH_OUTCOMES);
}

/// A shortest counterexample to `property`: stateright keeps the *last*
/// violation it meets, so the search is repeated with a growing depth bound
/// and stops at the first depth with a discovery.
fn shortest_counterexample(
    model: &TwoPhaseCommit,
    property: &'static str,
    max_depth: usize,
) -> Option<Path<State, Step>> {
    (2..=max_depth + 1).find_map(|depth| {
        model
            .clone()
            .checker()
            .target_max_depth(depth)
            .finish_when(HasDiscoveries::AnyOf(BTreeSet::from([property])))
            .spawn_bfs()
            .join()
            .discovery(property)
    })
}

/// Explores every state of `model` and asserts that each property in
/// `expected` has a counterexample. Prints every property caught, each with
/// a shortest counterexample.
fn assert_caught(label: &str, model: TwoPhaseCommit, expected: &[&'static str]) {
    let checker = explore(label, model.clone());
    let caught: BTreeSet<&'static str> = checker
        .model()
        .properties()
        .into_iter()
        .filter(|p| p.expectation != Expectation::Sometimes)
        .map(|p| p.name)
        .filter(|&name| checker.discovery(name).is_some())
        .collect();
    println!("{label}: caught by {caught:?}");
    for &name in &caught {
        if let Some(path) = shortest_counterexample(&model, name, checker.max_depth()) {
            println!("{label}: counterexample to \"{name}\":\n{}", trace(path));
        }
    }
    for name in expected {
        assert!(
            caught.contains(name),
            "{label}: no counterexample to \"{name}\" (caught: {caught:?})"
        );
    }
}

#[test]
fn commit_after_abort_is_caught_by_agreement_and_client_api() {
    assert_caught(
        "CommitAfterAbort",
        TwoPhaseCommit::with_bug(1, PlantedBug::CommitAfterAbort),
        &[AGREEMENT, PHASE_DISCIPLINE, CLIENT_API],
    );
}

#[test]
fn forgotten_in_flight_prepare_is_caught_by_rollback_coverage() {
    assert_caught(
        "ForgetInFlightPrepare",
        TwoPhaseCommit::with_bug(1, PlantedBug::ForgetInFlightPrepare),
        &[ROLLBACK_COVERAGE],
    );
}

#[test]
fn aborted_after_commit_is_caught_by_stability_and_honest_outcome() {
    assert_caught(
        "AbortedAfterCommit",
        TwoPhaseCommit::with_bug(1, PlantedBug::AbortedAfterCommit),
        &[STABILITY, HONEST_OUTCOME],
    );
}

#[test]
fn prepared_on_first_ready_is_caught_by_commit_validity() {
    assert_caught(
        "PreparedOnFirstReady",
        TwoPhaseCommit::with_bug(2, PlantedBug::PreparedOnFirstReady),
        &[COMMIT_VALIDITY, ANSWERS_ACCEPTED],
    );
}

#[test]
fn hidden_hazard_is_caught_by_honest_outcome() {
    assert_caught(
        "HideHazard",
        TwoPhaseCommit::with_bug(1, PlantedBug::HideHazard),
        &[HONEST_OUTCOME],
    );
}

#[test]
fn commit_to_read_only_voter_is_caught_by_phase_discipline() {
    assert_caught(
        "CommitReadOnly",
        TwoPhaseCommit::with_bug(1, PlantedBug::CommitReadOnly),
        &[PHASE_DISCIPLINE],
    );
}

#[test]
fn forgotten_shutdown_during_phase_one_is_caught_by_termination() {
    // Nothing re-delivers a shutdown: a core that forgets one that came
    // while Preparing leaves the transaction Prepared for ever.
    assert_caught(
        "ForgetDeferredAbandonment",
        TwoPhaseCommit::with_bug(1, PlantedBug::ForgetDeferredAbandonment),
        &[TERMINATION],
    );
}

#[test]
fn driver_that_loses_a_call_is_caught_by_no_stuck_phase_and_late_answers() {
    assert_caught(
        "LosesCalls",
        TwoPhaseCommit::with_environment(1, Environment::LosesCalls),
        &[NO_STUCK_PHASE, LATE_ANSWERS],
    );
}

#[test]
fn commit_before_the_decision_is_durable_is_caught_by_agreement() {
    // A crash after `commit` went out but before the write landed: the
    // restarted coordinator presumes abort, the others roll back.
    assert_caught(
        "CommitBeforeLogged",
        TwoPhaseCommit {
            planted: Some(PlantedBug::CommitBeforeLogged),
            ..TwoPhaseCommit::with_log(2)
        },
        &[AGREEMENT],
    );
}
