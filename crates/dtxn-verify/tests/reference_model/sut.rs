//! The system under test: the real [`TransactionCoordinator`] on a tokio
//! current-thread runtime with a paused clock, driven one step at a time
//! and compared with the reference model after every step.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use dtxn::core::PlantedBug;
use dtxn::{
    AbortReason, CoordinatorConfig, CoordinatorError, Decision, PrepareOutcome, RetryPolicy,
    TransactionCoordinator, TransactionId, TransactionOutcome, TransactionState,
};
use proptest_state_machine::StateMachineTest;
use tokio::runtime::Runtime;
use tokio::time::Instant;

use super::model::*;
use super::participant::{self, Calls, Scripted, P};

/// Longest a decided transaction may take to deliver phase 2, in virtual
/// time: an in-flight prepare (100 ms) plus three phase-2 attempts of up to
/// 100 ms with up to 30 ms of backoff, with ample slack. Exceeding it is a
/// liveness failure (PROTOCOL.md rules 10 and 11), not a slow machine.
pub const SETTLE_BUDGET: Duration = Duration::from_secs(1);
const SETTLE_POLL: Duration = Duration::from_millis(5);
/// Slack for the paused clock's millisecond timer granularity.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// Which coordinator to test: the real one, or one with a planted bug.
pub trait Flavour: 'static {
    /// The planted bug, if any.
    const PLANTED: Option<PlantedBug>;
}

/// The coordinator as shipped.
pub struct Faithful;

impl Flavour for Faithful {
    const PLANTED: Option<PlantedBug> = None;
}

/// The model test's configuration: small limits, short timeouts, far
/// deadline and retention (see the constants in the model).
pub fn config(planted: Option<PlantedBug>) -> CoordinatorConfig {
    let builder = CoordinatorConfig::builder()
        .max_transactions(MAX_TRANSACTIONS)
        .max_participants(MAX_PARTICIPANTS)
        .prepare_timeout(PREPARE_TIMEOUT)
        .phase2_timeout(PHASE2_TIMEOUT)
        .retry(RetryPolicy::new(MAX_ATTEMPTS, INITIAL_BACKOFF, MAX_BACKOFF).expect("valid policy"))
        .transaction_deadline(DEADLINE)
        .retention_period(RETENTION_PERIOD)
        .retention_count(RETENTION_COUNT)
        .sweep_interval(SWEEP_INTERVAL);
    match planted {
        Some(bug) => builder.planted_bug(bug),
        None => builder,
    }
    .build()
    .expect("valid configuration")
}

/// An id no coordinator issues: sequence numbers start at 1, so sequence 0
/// is never handed out whatever the coordinator's random nonce.
pub fn never_issued() -> TransactionId {
    "00000000-0000-0000-0000-000000000000"
        .parse()
        .expect("a valid id")
}

/// The live coordinator and what the test knows about it.
pub struct Sut {
    // Dropped before the runtime, so its shutdown rollbacks can be spawned.
    coordinator: TransactionCoordinator,
    rt: Runtime,
    /// Issued ids, in issue order (the model's transaction indices).
    ids: Vec<TransactionId>,
    /// Every participant created.
    pool: BTreeMap<P, Arc<Scripted>>,
    /// The abort reason first reported per transaction index: later reports
    /// must repeat it (stability, PROTOCOL.md rule 3).
    reasons: HashMap<usize, AbortReason>,
}

impl Sut {
    fn new(planted: Option<PlantedBug>) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a tokio runtime");
        // Created inside the runtime so its sweeper and clock are the
        // runtime's (paused) ones.
        let coordinator = {
            let _entered = rt.enter();
            TransactionCoordinator::with_config(config(planted))
        };
        Self {
            coordinator,
            rt,
            ids: Vec::new(),
            pool: BTreeMap::new(),
            reasons: HashMap::new(),
        }
    }

    /// The issue-order index (if issued) and the id of the transaction
    /// `txn` names.
    fn id(&self, model: &Model, txn: TxnRef) -> (Option<usize>, TransactionId) {
        match model.index(txn) {
            Some(i) => (Some(i), self.ids[i]),
            None => (None, never_issued()),
        }
    }

    /// Lets background work for `txn` (rollback after an Abort decision,
    /// in-flight prepares) run until the transaction is no longer
    /// Preparing, Committing or Aborting, within [`SETTLE_BUDGET`].
    fn settle(&self, step: &Step, txn: TransactionId) {
        let result = self.rt.block_on(async {
            let start = Instant::now();
            loop {
                let state = self.coordinator.get_transaction_state(txn);
                let transient = matches!(
                    state,
                    Ok(TransactionState::Preparing
                        | TransactionState::Committing
                        | TransactionState::Aborting)
                );
                if !transient {
                    return Ok(());
                }
                if start.elapsed() > SETTLE_BUDGET {
                    return Err(state);
                }
                tokio::time::sleep(SETTLE_POLL).await;
            }
        });
        if let Err(state) = result {
            panic!("{step:?}: the transaction is still {state:?} after {SETTLE_BUDGET:?}");
        }
    }

    /// Checks a reported abort reason: one the model allows, and the same
    /// every time it is reported for this transaction.
    fn check_reason(&mut self, step: &Step, i: usize, allowed: &[AbortReason], got: &AbortReason) {
        assert!(
            allowed.contains(got),
            "{step:?}: abort reason {got:?}, the model allows only {allowed:?}"
        );
        let first = self.reasons.entry(i).or_insert_with(|| got.clone());
        assert_eq!(
            first, got,
            "{step:?}: the abort reason changed from {first:?} to {got:?}"
        );
    }

    fn check_outcome(
        &mut self,
        step: &Step,
        i: usize,
        expected: &OutcomeExpect,
        got: &TransactionOutcome,
    ) {
        let fail = || panic!("{step:?}: the model expects {expected:?}, got {got:?}");
        if got.txn != self.ids[i] || got.decision != expected.decision {
            fail();
        }
        match (&got.abort_reason, expected.decision) {
            (None, Decision::Commit) => {}
            (Some(reason), Decision::Abort) => {
                self.check_reason(step, i, &expected.abort_reasons, reason)
            }
            _ => fail(),
        }
        assert_eq!(
            got.hazards, expected.hazards,
            "{step:?}: hazards differ from the model's (left: coordinator)"
        );
    }

    fn prepare(&mut self, model: &Model, step: &Step, txn: TxnRef) {
        let Expect::Prepare(expected) = &model.expect else {
            unreachable!("checked by the caller")
        };
        let (i, id) = self.id(model, txn);
        let (result, elapsed, state) = self.rt.block_on(async {
            let start = Instant::now();
            let result = self.coordinator.prepare_transaction(id).await;
            let elapsed = start.elapsed();
            (result, elapsed, self.coordinator.get_transaction_state(id))
        });
        let Some((expected, got)) = compare(step, id, expected, &result) else {
            return;
        };
        let i = i.expect("an issued transaction");
        match (&expected.outcome, got) {
            (PhaseOne::Prepared, PrepareOutcome::Prepared) => {}
            (PhaseOne::Aborted(allowed), PrepareOutcome::Aborted(reason)) => {
                // Rule 9: the decision is visible as soon as prepare returns;
                // rollback may still be in delivery.
                assert!(
                    matches!(
                        state,
                        Ok(TransactionState::Aborting | TransactionState::Aborted)
                    ),
                    "{step:?}: prepare returned Aborted but the transaction is {state:?}"
                );
                self.check_reason(step, i, allowed, reason);
                self.settle(step, id);
            }
            _ => panic!("{step:?}: the model expects {expected:?}, got {got:?}"),
        }
        assert!(
            elapsed >= expected.elapsed && elapsed <= expected.elapsed + TIMER_SLACK,
            "{step:?}: prepare took {elapsed:?} of virtual time, the model expects {:?}",
            expected.elapsed
        );
    }

    fn finish(&mut self, model: &Model, step: &Step, txn: TxnRef) {
        let Expect::Outcome(expected) = &model.expect else {
            unreachable!("checked by the caller")
        };
        let (i, id) = self.id(model, txn);
        let result = self.rt.block_on(async {
            match step {
                Step::Commit(_) => self.coordinator.commit_transaction(id).await,
                _ => self.coordinator.rollback_transaction(id).await,
            }
        });
        if let Some((expected, got)) = compare(step, id, expected, &result) {
            self.check_outcome(step, i.expect("an issued transaction"), expected, got);
        }
    }
}

/// Compares a call's result with the model's expectation: equal errors,
/// or both `Ok` (returned for a closer look). Panics on any other mix.
fn compare<'a, E: Debug, T: Debug>(
    step: &Step,
    txn: TransactionId,
    expected: &'a Result<E, Refusal>,
    got: &'a Result<T, CoordinatorError>,
) -> Option<(&'a E, &'a T)> {
    match (expected, got) {
        (Ok(expected), Ok(got)) => Some((expected, got)),
        (Err(refusal), Err(error)) if refusal.error(txn) == *error => None,
        _ => panic!("{step:?}: the model expects {expected:?}, the coordinator returned {got:?}"),
    }
}

/// The [`StateMachineTest`] running [`Reference`] against a coordinator.
pub struct CoordinatorUnderTest<F>(PhantomData<F>);

impl<F: Flavour> StateMachineTest for CoordinatorUnderTest<F> {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Model) -> Sut {
        participant::install_quiet_panic_hook();
        Sut::new(F::PLANTED)
    }

    fn apply(mut sut: Sut, model: &Model, step: Step) -> Sut {
        let unexpected = || panic!("{step:?}: the model recorded {:?}", model.expect);
        match (&step, &model.expect) {
            (Step::Begin(_), Expect::Begin(expected)) => {
                let result = {
                    let _entered = sut.rt.enter();
                    sut.coordinator.begin_transaction()
                };
                match (expected, result) {
                    (Ok(()), Ok(id)) => sut.ids.push(id),
                    (Err(refusal), Err(error)) if refusal.error(never_issued()) == error => {}
                    (expected, got) => {
                        panic!("{step:?}: the model expects {expected:?}, got {got:?}")
                    }
                }
            }
            (&Step::Register { txn, who }, Expect::Register(expected)) => {
                if let Who::New(p, script) = who {
                    sut.pool.insert(p, Arc::new(Scripted::new(p, script)));
                }
                let participant = participant::as_dyn(&sut.pool[&who.name()]);
                let (_, id) = sut.id(model, txn);
                let result = {
                    let _entered = sut.rt.enter();
                    sut.coordinator.register_participant(id, participant)
                };
                if let Some((expected, got)) = compare(&step, id, expected, &result) {
                    assert_eq!(got, expected, "{step:?}");
                }
            }
            (&Step::Prepare(txn), Expect::Prepare(_)) => sut.prepare(model, &step, txn),
            (&(Step::Commit(txn) | Step::Rollback(txn)), Expect::Outcome(_)) => {
                sut.finish(model, &step, txn)
            }
            (&Step::GetState(txn), Expect::State(expected)) => {
                let (_, id) = sut.id(model, txn);
                let result = {
                    let _entered = sut.rt.enter();
                    sut.coordinator.get_transaction_state(id)
                };
                if let Some((expected, got)) = compare(&step, id, expected, &result) {
                    assert_eq!(got, expected, "{step:?}");
                }
            }
            (Step::ExpireDeadlines, Expect::TimePassed) => {
                // Past every deadline, then one sweep, then rollback delivery.
                sut.rt.block_on(async {
                    tokio::time::sleep(DEADLINE + SWEEP_INTERVAL + SETTLE_BUDGET).await;
                });
            }
            _ => unexpected(),
        }
        sut
    }

    /// After every step: the unfinished and remembered counts, every issued
    /// transaction's state (or `NotFound` once forgotten), and the exact
    /// calls every participant has received for every transaction.
    fn check_invariants(sut: &Sut, model: &Model) {
        let _entered = sut.rt.enter();
        assert_eq!(sut.ids.len(), model.txns.len(), "issued transactions");
        let stats = sut.coordinator.stats();
        assert_eq!(
            stats.unfinished,
            model.unfinished(),
            "unfinished transactions (left: coordinator)"
        );
        assert_eq!(
            stats.remembered,
            model.remembered(),
            "remembered finished transactions (left: coordinator)"
        );
        for (i, &id) in sut.ids.iter().enumerate() {
            let expected = model.state_of(i).map_err(|refusal| refusal.error(id));
            assert_eq!(
                sut.coordinator.get_transaction_state(id),
                expected,
                "state of {:?} (left: coordinator)",
                model.txns[i].name
            );
        }
        // Keyed by transaction name; a call for an id never issued (a
        // coordinator bug) shows up under that id.
        let names: HashMap<TransactionId, String> = sut
            .ids
            .iter()
            .zip(&model.txns)
            .map(|(&id, txn)| (id, format!("{:?}", txn.name)))
            .collect();
        for (&p, participant) in &sut.pool {
            let got: BTreeMap<String, Calls> = participant
                .calls()
                .into_iter()
                .map(|(id, calls)| (names.get(&id).cloned().unwrap_or(id.to_string()), calls))
                .collect();
            let mut expected = BTreeMap::new();
            for (i, txn) in model.txns.iter().enumerate() {
                for slot in (0..txn.participants.len()).filter(|&s| txn.participants[s] == p) {
                    let calls = model.calls(i, slot);
                    if calls != Calls::default() {
                        expected.insert(format!("{:?}", txn.name), calls);
                    }
                }
            }
            assert_eq!(
                got, expected,
                "calls received by {p:?}, per transaction (left: received)"
            );
        }
    }
}
