//! A reference-model test of the coordinator's public API, with
//! `proptest-state-machine`.
//!
//! # The model
//!
//! [`model::Model`] is the client-API table of `docs/PROTOCOL.md` written as a
//! small state table: for every transaction id issued so far, its state, its
//! participants and (once aborted) why; the participants created so far and
//! the script each follows; and the order in which transactions finished.
//! From that it predicts the exact result of every call — the outcome, the
//! error variant with its fields, the abort reason, the hazards — and the
//! exact `prepare` / `commit` / `rollback` calls every participant receives.
//!
//! Participants are [scripted](participant::Script) by the generated step
//! that creates them: a vote (Ready, ReadOnly, Aborted, panic, hang past the
//! prepare timeout) and a phase-2 behaviour (ok, fail once then ok, fail
//! always, fail permanently, hang). So the model knows, for example, that a
//! No vote or a panic aborts phase 1 at once while a hang aborts it at the
//! prepare timeout, that all Ready/ReadOnly votes prepare, and that commit
//! to a participant that always fails still commits, with that participant
//! listed as a hazard after three attempts.
//!
//! Steps ([`model::Step`]) are begin, register (a new participant, or an
//! existing `Arc` again — a duplicate in the same transaction, a shared
//! participant in another), prepare, commit, rollback, get-state, and letting
//! the transaction deadline pass; with misuse mixed in: ids never issued,
//! ids finished and forgotten, repeats, wrong order, and the limits (three
//! unfinished transactions, two participants, two remembered finished
//! transactions — all small so they are hit often). Steps name what they
//! create (`Begin(t3)`, `New(p2, script)`) and refer to it by that name, so
//! a shrunk sequence reads as a script and deleting an unrelated step while
//! shrinking never changes what the others refer to.
//!
//! # Settled states
//!
//! The system under test ([`sut`]) runs the real coordinator on a tokio
//! current-thread runtime with a paused clock, so hangs, timeouts and
//! retries take no wall-clock time and are deterministic. Each step awaits
//! its call. Only an Aborted `prepare` returns while work goes on in the
//! background (rollback is delivered after the decision, rule 9), so right
//! after it the test checks that the transaction is already Aborting or
//! Aborted, and then lets virtual time run until it is Aborted (bounded:
//! rules 10 and 11). Between steps every transaction is therefore in one of
//! the settled states Active, Prepared, Committed or Aborted, and the model
//! predicts each one exactly — including the `current` state inside every
//! `InvalidState` error. The transient rows of the table (calls made while
//! Preparing, Committing or Aborting) need concurrent callers and are
//! covered by `crates/dtxn/tests/client_api.rs`, not here.
//!
//! A tie is the only non-determinism the model admits: when several
//! participants fail at the same instant, any of them may be reported as
//! the first abort reason — but the same one every time (rule 3).
//!
//! # Invariants checked after every step
//!
//! Each call's result is compared with the model's as it returns (and a
//! `prepare` must take exactly the virtual time the model predicts: zero,
//! or the prepare timeout when only a hang aborts it). Then:
//! `stats().unfinished` and `stats().remembered` equal the model's counts;
//! `get_transaction_state` of every issued id equals the model's state (or
//! `NotFound` once forgotten); every participant received exactly the calls
//! the model predicts for every transaction (agreement, phase discipline,
//! rollback coverage, retries: rules 1, 4, 5, 11).
//!
//! # The checker catches bugs
//!
//! The `reference_model_catches_*` tests run the same state machine against
//! coordinators with a planted bug and assert that the property fails, then
//! print the sequence proptest shrank the failure to. Run them with
//! `--nocapture` to see it.

#[path = "reference_model/model.rs"]
mod model;
#[path = "reference_model/participant.rs"]
mod participant;
#[path = "reference_model/sut.rs"]
mod sut;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use dtxn::core::PlantedBug;
use dtxn::{AbortReason, Decision, Operation, Registration, TransactionState};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{
    Config, FileFailurePersistence, RngAlgorithm, TestError, TestRng, TestRunner,
};
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

use model::{Expect, Model, PhaseOne, Reference, Refusal, Step, TxnRef, Who, T};
use participant::{Phase2, Script, Vote, P};
use sut::{CoordinatorUnderTest, Faithful, Flavour};

/// Steps per generated sequence.
const SEQUENCE: Range<usize> = 1..40;

/// Cases of the main property: about 20 s in a debug build on a loaded
/// two-core machine (a case is cheap: the paused clock makes every timeout
/// and retry instant). Override with `PROPTEST_CASES`.
const CASES: u32 = 20_000;

fn model_config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES);
    Config {
        cases,
        // A failure is saved next to this file, as
        // `reference_model.proptest-regressions`, and replayed first.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

prop_state_machine! {
    #![proptest_config(model_config())]

    /// The coordinator agrees with the reference model on every call's
    /// result, every state, the counts, and every participant call.
    #[test]
    fn coordinator_behaves_like_the_reference_model(
        sequential SEQUENCE => CoordinatorUnderTest<Faithful>
    );
}

/// A hand-written session through the API table: the model's predictions
/// for the notable steps are asserted here against PROTOCOL.md directly
/// (so a wrong model cannot agree with a wrong coordinator unnoticed), and
/// the same session is then run against the coordinator.
#[test]
fn a_scripted_session_follows_the_client_api_table() {
    use Step::*;
    let t = |n| TxnRef::Named(T(n));
    let new = |p, vote, phase2| Who::New(P(p), Script { vote, phase2 });
    let register = |n, who| Register { txn: t(n), who };
    let steps = [
        // t0: a Ready voter that always fails phase 2, itself again, a
        // ReadOnly voter, one too many; commit too early, then properly.
        Begin(T(0)),
        register(0, new(0, Vote::Ready, Phase2::FailAlways)),
        register(0, Who::Existing(P(0))),
        register(0, new(1, Vote::ReadOnly, Phase2::Ok)),
        register(0, new(2, Vote::Ready, Phase2::Ok)),
        Commit(t(0)),
        Prepare(t(0)),
        Prepare(t(0)),
        Commit(t(0)),
        Rollback(t(0)),
        // t1: a hanging participant and a No vote: Abort at once.
        Begin(T(1)),
        register(1, new(3, Vote::Hang, Phase2::FailThenOk)),
        register(1, new(4, Vote::Aborted, Phase2::Ok)),
        Prepare(t(1)),
        Commit(t(1)),
        Rollback(t(1)),
        // t2..t6: capacity; then the deadline rolls back t5.
        Begin(T(2)),
        Rollback(t(2)),
        Begin(T(3)),
        Commit(t(3)),
        Begin(T(4)),
        Begin(T(5)),
        Begin(T(6)),
        Rollback(t(3)),
        Rollback(t(4)),
        Commit(t(5)),
        ExpireDeadlines,
        GetState(t(0)),
        GetState(TxnRef::Never),
    ];
    let mut model = Model::default();
    let mut expectations = Vec::new();
    for step in &steps {
        assert!(
            Reference::preconditions(&model, step),
            "{step:?} is not a legal step here"
        );
        model = Reference::apply(model, step);
        expectations.push(model.expect.clone());
    }
    let refusal = |current, operation| Refusal::InvalidState { current, operation };
    assert_eq!(
        expectations[2],
        Expect::Register(Ok(Registration::AlreadyRegistered))
    );
    assert_eq!(
        expectations[4],
        Expect::Register(Err(Refusal::TooManyParticipants))
    );
    assert_eq!(
        expectations[5],
        Expect::Outcome(Err(refusal(TransactionState::Active, Operation::Commit)))
    );
    let Expect::Outcome(Ok(committed)) = &expectations[8] else {
        panic!("commit of a Prepared transaction: {:?}", expectations[8]);
    };
    assert_eq!(committed.decision, Decision::Commit);
    assert_eq!(committed.hazards.len(), 1, "the always-failing Ready voter");
    assert_eq!(committed.hazards[0].attempts, model::MAX_ATTEMPTS);
    assert_eq!(
        expectations[9],
        Expect::Outcome(Err(refusal(
            TransactionState::Committed,
            Operation::Rollback
        )))
    );
    let Expect::Prepare(Ok(aborted)) = &expectations[13] else {
        panic!("prepare with a No vote: {:?}", expectations[13]);
    };
    assert!(matches!(
        &aborted.outcome,
        PhaseOne::Aborted(reasons) if matches!(reasons[..], [AbortReason::Voted { index: 1, .. }])
    ));
    assert_eq!(aborted.elapsed, Duration::ZERO, "early abort (rule 9)");
    assert_eq!(
        expectations[14],
        Expect::Outcome(Err(refusal(TransactionState::Aborted, Operation::Commit)))
    );
    // Rollback reaches the timed-out participant (it failed once, then
    // acknowledged), never the No voter (rule 5).
    let timed_out = model.calls(1, 0);
    assert_eq!((timed_out.prepare, timed_out.rollback), (1, 2));
    assert_eq!(model.calls(1, 1).rollback, 0);
    assert_eq!(
        expectations[22],
        Expect::Begin(Err(Refusal::CapacityExceeded))
    );
    assert_eq!(
        model.txns[5].abort_reasons,
        [AbortReason::DeadlineExpired],
        "the deadline rolled back t5, still Active"
    );
    // Six finished, two remembered: t0 is long forgotten.
    assert_eq!(expectations[27], Expect::State(Err(Refusal::NotFound)));
    assert_eq!(expectations[28], Expect::State(Err(Refusal::NotFound)));

    CoordinatorUnderTest::<Faithful>::test_sequential(
        Config::default(),
        Model::default(),
        steps.to_vec(),
        None,
    );
}

/// Generation is not vacuous: sequences from the strategy exercise every
/// settled row of the client-API table, and every kind of misuse.
#[test]
fn generated_sequences_reach_every_row_of_the_client_api_table() {
    let strategy = Reference::sequential_strategy(SEQUENCE);
    let mut runner = TestRunner::deterministic();
    let mut rows: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..500 {
        let (mut model, steps, _) = strategy
            .new_tree(&mut runner)
            .expect("a sequence")
            .current();
        for step in &steps {
            *rows.entry(model.row(step)).or_default() += 1;
            model = Reference::apply(model, step);
        }
    }
    println!("steps per row in 500 generated sequences: {rows:#?}");
    let required = [
        "begin",
        "begin at capacity",
        "register in Active",
        "register the same participant again",
        "register at the participant limit",
        "register a participant of another transaction",
        "register outside Active",
        "prepare with no participants",
        "prepare in Active -> Prepared",
        "prepare in Active -> Aborted by a No vote",
        "prepare in Active -> Aborted by a panic",
        "prepare in Active -> Aborted by a timeout",
        "prepare in Prepared",
        "prepare in Committed",
        "prepare in Aborted",
        "commit in Active",
        "commit in Prepared",
        "commit in Prepared with hazards",
        "commit in Committed",
        "commit in Aborted",
        "rollback in Active",
        "rollback in Prepared",
        "rollback in Committed",
        "rollback in Aborted",
        "get state in Active",
        "call with a never-issued id",
        "call with a forgotten id",
        "deadline rolls back an unfinished transaction",
    ];
    for row in required {
        assert!(
            rows.get(row).is_some_and(|&n| n >= 5),
            "generation rarely or never reaches {row:?}: {rows:#?}"
        );
    }
}

/// Runs the state machine against a coordinator with `F`'s planted bug,
/// asserts the property fails, and returns the failure message and the
/// sequence proptest shrank it to (also printed).
fn shrunk_failure<F: Flavour>() -> (String, Vec<Step>) {
    let config = Config {
        cases: 2_000,
        // The failure is expected: do not record it as a regression.
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config.clone(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let failure = participant::expecting_failures(|| {
        runner
            .run(
                &Reference::sequential_strategy(SEQUENCE),
                |(model, steps, seen)| {
                    CoordinatorUnderTest::<F>::test_sequential(config.clone(), model, steps, seen);
                    Ok(())
                },
            )
            .err()
    });
    match failure {
        Some(TestError::Fail(reason, (_, steps, _))) => {
            println!(
                "planted bug {:?} caught; minimal failing sequence ({} steps):\n{steps:#?}\nfailure: {}",
                F::PLANTED.expect("a planted bug"),
                steps.len(),
                reason.message()
            );
            (reason.message().to_owned(), steps)
        }
        Some(TestError::Abort(reason)) => panic!("the run was aborted: {reason}"),
        None => panic!(
            "planted bug {:?} went unnoticed in {} cases",
            F::PLANTED,
            config.cases
        ),
    }
}

macro_rules! planted {
    ($($marker:ident => $bug:ident),* $(,)?) => {$(
        struct $marker;
        impl Flavour for $marker {
            const PLANTED: Option<PlantedBug> = Some(PlantedBug::$bug);
        }
    )*};
}

planted! {
    CommitAfterAbort => CommitAfterAbort,
    PreparedOnFirstReady => PreparedOnFirstReady,
    HideHazard => HideHazard,
    CommitReadOnly => CommitReadOnly,
    ForgetInFlightPrepare => ForgetInFlightPrepare,
    AbortedAfterCommit => AbortedAfterCommit,
}

/// Shrinking works: the counterexample is a handful of steps.
fn assert_small(steps: &[Step]) {
    assert!(
        steps.len() <= 8,
        "shrinking left {} steps: {steps:#?}",
        steps.len()
    );
}

#[test]
fn reference_model_catches_commit_after_abort() {
    let (message, steps) = shrunk_failure::<CommitAfterAbort>();
    assert_small(&steps);
    assert!(matches!(steps.last(), Some(Step::Commit(_))), "{steps:?}");
    assert!(message.contains("InvalidState"), "{message}");
}

#[test]
fn reference_model_catches_prepared_on_first_ready() {
    let (_, steps) = shrunk_failure::<PreparedOnFirstReady>();
    assert_small(&steps);
    assert!(
        steps.iter().any(|s| matches!(s, Step::Prepare(_))),
        "{steps:?}"
    );
}

#[test]
fn reference_model_catches_a_hidden_hazard() {
    let (message, steps) = shrunk_failure::<HideHazard>();
    assert_small(&steps);
    assert!(message.contains("hazards"), "{message}");
}

#[test]
fn reference_model_catches_commit_to_read_only_voters() {
    let (message, steps) = shrunk_failure::<CommitReadOnly>();
    assert_small(&steps);
    assert!(message.contains("calls received"), "{message}");
}

#[test]
fn reference_model_catches_a_forgotten_in_flight_prepare() {
    let (_, steps) = shrunk_failure::<ForgetInFlightPrepare>();
    assert_small(&steps);
    assert!(
        steps.iter().any(|s| matches!(s, Step::Prepare(_))),
        "{steps:?}"
    );
}

#[test]
fn reference_model_catches_aborted_after_commit() {
    let (_, steps) = shrunk_failure::<AbortedAfterCommit>();
    assert_small(&steps);
    assert!(
        steps.iter().any(|s| matches!(s, Step::Commit(_))),
        "{steps:?}"
    );
}
