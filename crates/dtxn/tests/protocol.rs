//! The safety and liveness rules of PROTOCOL.md, one behaviour per test.
//! Every timeout runs on tokio's paused clock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{begin_with, coordinator, ms, Kind, Mock, Step};
use dtxn::{
    AbortReason, CallFailure, Decision, Participant, ParticipantError, Phase2Status,
    PrepareOutcome, PreparedResult, TransactionId, TransactionState,
};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn all_ready_commits_and_each_voter_gets_commit_once() {
    let c = coordinator();
    let ps: Vec<_> = (0..3).map(|i| Mock::new(&format!("p{i}")).arc()).collect();
    let txn = begin_with(&c, ps.iter().cloned());
    assert_eq!(
        c.prepare_transaction(txn).await.unwrap(),
        PrepareOutcome::Prepared
    );
    let outcome = c.commit_transaction(txn).await.unwrap();
    assert!(outcome.is_committed());
    assert!(outcome.hazards.is_empty());
    for p in &ps {
        assert_eq!(p.calls(), [Kind::Prepare, Kind::Commit]);
    }
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Committed
    );
}

#[tokio::test(start_paused = true)]
async fn transaction_without_participants_commits_trivially() {
    let c = coordinator();
    let txn = c.begin_transaction().unwrap();
    assert!(c.prepare_transaction(txn).await.unwrap().is_prepared());
    assert!(c.commit_transaction(txn).await.unwrap().is_committed());
}

#[tokio::test(start_paused = true)]
async fn read_only_voters_get_no_phase_two() {
    let c = coordinator();
    let ro = Mock::new("ro")
        .on_prepare(Step::Vote(PreparedResult::ReadOnly))
        .arc();
    let rw = Mock::new("rw").arc();
    let txn = begin_with(&c, [ro.clone(), rw.clone()]);
    c.prepare_transaction(txn).await.unwrap();
    c.commit_transaction(txn).await.unwrap();
    assert_eq!(ro.calls(), [Kind::Prepare]);
    assert_eq!(rw.calls(), [Kind::Prepare, Kind::Commit]);
}

#[tokio::test(start_paused = true)]
async fn all_read_only_commits_without_phase_two() {
    let c = coordinator();
    let ps: Vec<_> = (0..2)
        .map(|_| {
            Mock::new("ro")
                .on_prepare(Step::Vote(PreparedResult::ReadOnly))
                .arc()
        })
        .collect();
    let txn = begin_with(&c, ps.iter().cloned());
    c.prepare_transaction(txn).await.unwrap();
    assert!(c.commit_transaction(txn).await.unwrap().is_committed());
    assert!(ps.iter().all(|p| p.calls() == [Kind::Prepare]));
}

#[tokio::test(start_paused = true)]
async fn first_no_vote_decides_abort_without_waiting_for_slow_participants() {
    let c = coordinator();
    let no = Mock::new("no")
        .on_prepare(Step::after(ms(1), Step::aborted("out of stock")))
        .arc();
    let slow = Mock::new("slow")
        .on_prepare(Step::after(ms(90), Step::Ok))
        .arc();
    let txn = begin_with(&c, [no.clone(), slow.clone()]);
    let start = Instant::now();
    let outcome = c.prepare_transaction(txn).await.unwrap();
    assert_eq!(
        start.elapsed(),
        ms(1),
        "prepare returned at the first no vote"
    );
    assert_eq!(
        outcome,
        PrepareOutcome::Aborted(AbortReason::Voted {
            participant: "no".into(),
            index: 0,
            reason: "out of stock".into()
        })
    );
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Aborting
    );
    // The decision stands; rollback completes once the slow prepare ends.
    let outcome = c.rollback_transaction(txn).await.unwrap();
    assert_eq!(outcome.decision, Decision::Abort);
    assert_eq!(start.elapsed(), ms(90));
}

#[tokio::test(start_paused = true)]
async fn rollback_reaches_in_flight_prepares() {
    let c = coordinator();
    let no = Mock::new("no")
        .on_prepare(Step::aborted("invalid user"))
        .arc();
    let late_ready = Mock::new("late")
        .on_prepare(Step::after(ms(50), Step::Ok))
        .arc();
    let late_ro = Mock::new("late-ro")
        .on_prepare(Step::after(ms(50), Step::Vote(PreparedResult::ReadOnly)))
        .arc();
    let txn = begin_with(&c, [no.clone(), late_ready.clone(), late_ro.clone()]);
    assert!(!c.prepare_transaction(txn).await.unwrap().is_prepared());
    c.rollback_transaction(txn).await.unwrap();
    assert_eq!(late_ready.calls(), [Kind::Prepare, Kind::Rollback]);
    assert_eq!(
        late_ro.calls(),
        [Kind::Prepare],
        "read-only voters need no rollback"
    );
    assert_eq!(
        no.calls(),
        [Kind::Prepare],
        "explicit no voters already undid their work"
    );
}

#[tokio::test(start_paused = true)]
async fn prepare_that_panics_counts_as_abort_and_gets_rollback() {
    let c = coordinator();
    let bad = Mock::new("bad").on_prepare(Step::Panic).arc();
    let good = Mock::new("good").arc();
    let txn = begin_with(&c, [bad.clone(), good.clone()]);
    match c.prepare_transaction(txn).await.unwrap() {
        PrepareOutcome::Aborted(AbortReason::PrepareFailed {
            participant,
            failure: CallFailure::Panicked(msg),
            ..
        }) => {
            assert_eq!(participant, "bad");
            assert!(msg.contains("scripted panic"));
        }
        other => panic!("unexpected {other:?}"),
    }
    c.rollback_transaction(txn).await.unwrap();
    assert_eq!(
        bad.calls(),
        [Kind::Prepare, Kind::Rollback],
        "unknown state gets rollback"
    );
    assert_eq!(good.calls(), [Kind::Prepare, Kind::Rollback]);
}

#[tokio::test(start_paused = true)]
async fn prepare_that_hangs_times_out_within_the_prepare_timeout() {
    let c = coordinator();
    let hang = Mock::new("hang").on_prepare(Step::Hang).arc();
    let txn = begin_with(&c, [hang.clone(), Mock::new("ok").arc()]);
    let start = Instant::now();
    let outcome = c.prepare_transaction(txn).await.unwrap();
    assert_eq!(start.elapsed(), c.config().prepare_timeout());
    assert!(matches!(
        outcome,
        PrepareOutcome::Aborted(AbortReason::PrepareFailed {
            failure: CallFailure::TimedOut,
            ..
        })
    ));
    c.rollback_transaction(txn).await.unwrap();
    assert_eq!(hang.calls(), [Kind::Prepare, Kind::Rollback]);
}

#[tokio::test(start_paused = true)]
async fn rollback_of_active_transaction_reaches_participants_never_asked_to_prepare() {
    let c = coordinator();
    let ps: Vec<_> = (0..3).map(|_| Mock::new("p").arc()).collect();
    let txn = begin_with(&c, ps.iter().cloned());
    let outcome = c.rollback_transaction(txn).await.unwrap();
    assert_eq!(outcome.abort_reason, Some(AbortReason::RolledBack));
    assert!(ps.iter().all(|p| p.calls() == [Kind::Rollback]));
}

#[tokio::test(start_paused = true)]
async fn failing_commit_is_retried_until_acknowledged() {
    let c = coordinator();
    let flaky = Mock::new("flaky")
        .on_commit(Step::Fail(ParticipantError::transient("busy")))
        .on_commit(Step::Panic)
        .arc();
    let txn = begin_with(&c, [flaky.clone()]);
    c.prepare_transaction(txn).await.unwrap();
    let outcome = c.commit_transaction(txn).await.unwrap();
    assert!(outcome.is_committed() && outcome.hazards.is_empty());
    assert_eq!(flaky.count(Kind::Commit), 3);
    let report = c.transaction_report(txn).unwrap();
    assert_eq!(
        report.participants[0].phase2,
        Phase2Status::Acknowledged { attempts: 3 }
    );
}

#[tokio::test(start_paused = true)]
async fn commit_given_up_after_retry_budget_is_a_hazard_not_an_abort() {
    let c = coordinator();
    let dead = Mock::new("dead")
        .on_commit(Step::Hang)
        .on_commit(Step::Panic)
        .on_commit(Step::Fail(ParticipantError::transient("still down")))
        .arc();
    let ok = Mock::new("ok").arc();
    let txn = begin_with(&c, [dead.clone(), ok.clone()]);
    c.prepare_transaction(txn).await.unwrap();
    let start = Instant::now();
    let outcome = c.commit_transaction(txn).await.unwrap();
    // 3 attempts: 100 ms timeout + backoff ≤ 10 ms + panic + backoff ≤ 20 ms + error.
    assert!(start.elapsed() <= ms(130), "{:?}", start.elapsed());
    assert!(outcome.is_committed());
    assert_eq!(outcome.hazards.len(), 1);
    let hazard = &outcome.hazards[0];
    assert_eq!((hazard.participant.as_str(), hazard.attempts), ("dead", 3));
    assert_eq!(hazard.decision, Decision::Commit);
    assert_eq!(ok.calls(), [Kind::Prepare, Kind::Commit]);
    assert_eq!(
        dead.count(Kind::Rollback),
        0,
        "never both commit and rollback"
    );
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Committed
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_error_is_given_up_at_once() {
    let c = coordinator();
    let gone = Mock::new("gone")
        .on_rollback(Step::Fail(ParticipantError::permanent("deleted")))
        .arc();
    let txn = begin_with(&c, [gone.clone()]);
    let outcome = c.rollback_transaction(txn).await.unwrap();
    assert_eq!(outcome.decision, Decision::Abort);
    assert_eq!(outcome.hazards.len(), 1);
    assert_eq!(gone.count(Kind::Rollback), 1);
}

#[tokio::test(start_paused = true)]
async fn active_transaction_past_its_deadline_is_rolled_back_by_the_coordinator() {
    let c = coordinator();
    let p = Mock::new("p").arc();
    let txn = begin_with(&c, [p.clone()]);
    let deadline = c.config().transaction_deadline();
    tokio::time::sleep(deadline + c.config().sweep_interval()).await;
    // No client call: the sweeper rolled it back.
    assert_eq!(p.calls(), [Kind::Rollback]);
    let report = c.transaction_report(txn).unwrap();
    assert_eq!(report.state, TransactionState::Aborted);
    assert_eq!(report.abort_reason, Some(AbortReason::DeadlineExpired));
    assert_eq!(c.stats().unfinished, 0);
}

#[tokio::test(start_paused = true)]
async fn prepared_transaction_past_its_deadline_is_rolled_back() {
    let c = coordinator();
    let p = Mock::new("p").arc();
    let txn = begin_with(&c, [p.clone()]);
    c.prepare_transaction(txn).await.unwrap();
    tokio::time::advance(c.config().transaction_deadline()).await;
    // A client call at the deadline sees the expiry, whether the sweeper
    // (due at the same instant) or the call itself applied it.
    let err = c.commit_transaction(txn).await.unwrap_err();
    assert!(matches!(
        err,
        dtxn::CoordinatorError::InvalidState {
            current: TransactionState::Aborting | TransactionState::Aborted,
            ..
        }
    ));
    let outcome = c.rollback_transaction(txn).await.unwrap();
    assert_eq!(outcome.abort_reason, Some(AbortReason::DeadlineExpired));
    assert_eq!(p.calls(), [Kind::Prepare, Kind::Rollback]);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_commit_future_still_finishes_the_transaction() {
    let c = coordinator();
    let slow = Mock::new("slow")
        .on_commit(Step::after(ms(50), Step::Ok))
        .arc();
    let txn = begin_with(&c, [slow.clone()]);
    c.prepare_transaction(txn).await.unwrap();
    // The client gives up after 1 ms.
    assert!(tokio::time::timeout(ms(1), c.commit_transaction(txn))
        .await
        .is_err());
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Committing
    );
    tokio::time::sleep(ms(60)).await;
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Committed
    );
    assert_eq!(slow.count(Kind::Commit), 1);
    // Asking again returns the outcome without calling anyone.
    assert!(c.commit_transaction(txn).await.unwrap().is_committed());
    assert_eq!(slow.count(Kind::Commit), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_prepare_future_still_finishes_phase_one() {
    let c = coordinator();
    let slow = Mock::new("slow")
        .on_prepare(Step::after(ms(50), Step::Ok))
        .arc();
    let txn = begin_with(&c, [slow.clone()]);
    let task = tokio::spawn({
        let c = c.clone();
        async move { c.prepare_transaction(txn).await }
    });
    tokio::time::sleep(ms(1)).await;
    task.abort();
    tokio::time::sleep(ms(60)).await;
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Prepared
    );
    assert!(c.prepare_transaction(txn).await.unwrap().is_prepared());
    assert_eq!(slow.count(Kind::Prepare), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_commit_and_rollback_take_exactly_one_decision() {
    let c = coordinator();
    let p = Mock::new("p")
        .on_commit(Step::after(ms(5), Step::Ok))
        .on_rollback(Step::after(ms(5), Step::Ok))
        .arc();
    let txn = begin_with(&c, [p.clone()]);
    c.prepare_transaction(txn).await.unwrap();
    let mut handles = Vec::new();
    for i in 0..20 {
        let c = c.clone();
        handles.push(tokio::spawn(async move {
            if i % 2 == 0 {
                c.commit_transaction(txn).await.map(|o| o.decision)
            } else {
                c.rollback_transaction(txn).await.map(|o| o.decision)
            }
        }));
    }
    let mut decisions = Vec::new();
    for h in handles {
        if let Ok(d) = h.await.unwrap() {
            decisions.push(d);
        }
    }
    // Callers of the losing operation got InvalidState; winners agree.
    assert!(!decisions.is_empty());
    assert!(decisions.windows(2).all(|w| w[0] == w[1]));
    let phase2 = p.count(Kind::Commit) + p.count(Kind::Rollback);
    assert_eq!(phase2, 1, "exactly one phase-2 call");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_participant_does_not_affect_other_transactions() {
    let c = coordinator();
    let bomb = Mock::new("bomb")
        .on_prepare(Step::Panic)
        .on_commit(Step::Panic)
        .arc();
    let t1 = begin_with(&c, [bomb.clone()]);
    let good = Mock::new("good").arc();
    let t2 = begin_with(&c, [good.clone()]);
    let (r1, r2) = tokio::join!(c.prepare_transaction(t1), c.prepare_transaction(t2));
    assert!(!r1.unwrap().is_prepared());
    assert!(r2.unwrap().is_prepared());
    assert!(c.commit_transaction(t2).await.unwrap().is_committed());
    c.rollback_transaction(t1).await.unwrap();
    // The coordinator is healthy afterwards.
    let t3 = begin_with(&c, [Mock::new("x").arc()]);
    c.prepare_transaction(t3).await.unwrap();
    assert!(c.commit_transaction(t3).await.unwrap().is_committed());
}

#[tokio::test(start_paused = true)]
async fn transaction_ids_are_unique_across_coordinators() {
    let a = coordinator();
    let b = coordinator();
    let ids: std::collections::HashSet<_> = (0..100)
        .flat_map(|_| {
            [
                a.begin_transaction().unwrap(),
                b.begin_transaction().unwrap(),
            ]
        })
        .collect();
    assert_eq!(ids.len(), 200);
    // An id from one coordinator is unknown to the other.
    let foreign = a.begin_transaction().unwrap();
    assert!(matches!(
        b.get_transaction_state(foreign),
        Err(dtxn::CoordinatorError::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_coordinator_rolls_back_what_no_client_can_finish() {
    let c = coordinator();
    let p = Mock::new("p").arc();
    let q = Mock::new("q").arc();
    let t1 = begin_with(&c, [p.clone()]);
    let t2 = begin_with(&c, [q.clone()]);
    c.prepare_transaction(t2).await.unwrap();
    let _ = t1;
    drop(c);
    tokio::time::sleep(ms(10)).await;
    assert_eq!(p.calls(), [Kind::Rollback]);
    assert_eq!(q.calls(), [Kind::Prepare, Kind::Rollback]);
}

#[tokio::test(start_paused = true)]
async fn report_names_each_participant_with_vote_result_and_timings() {
    let c = coordinator();
    let a = Mock::new("users")
        .on_prepare(Step::after(ms(3), Step::Ok))
        .arc();
    let b = Mock::new("products")
        .on_prepare(Step::Vote(PreparedResult::ReadOnly))
        .arc();
    let txn = begin_with(&c, [a, b]);
    c.prepare_transaction(txn).await.unwrap();
    c.commit_transaction(txn).await.unwrap();
    let report = c.transaction_report(txn).unwrap();
    assert_eq!(report.participants[0].name, "users");
    assert_eq!(report.participants[0].prepare_latency, Some(ms(3)));
    assert_eq!(
        report.participants[0].phase2,
        Phase2Status::Acknowledged { attempts: 1 }
    );
    assert_eq!(
        report.participants[1].prepare,
        dtxn::PrepareStatus::Voted(PreparedResult::ReadOnly)
    );
    assert_eq!(report.participants[1].phase2, Phase2Status::NotSent);
    assert_eq!(report.state, TransactionState::Committed);
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.contains("\"users\""));
}

#[tokio::test(start_paused = true)]
async fn blocking_participants_run_off_the_runtime_and_their_panics_are_caught() {
    use dtxn::{Blocking, BlockingParticipant, TransactionId};
    struct SyncDb {
        panic: bool,
    }
    impl BlockingParticipant for SyncDb {
        fn name(&self) -> &str {
            "sync-db"
        }
        fn prepare(&self, _: TransactionId) -> PreparedResult {
            assert!(!self.panic, "sync driver crashed");
            PreparedResult::Ready
        }
        fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
        fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
    }
    let c = coordinator();
    let txn = c.begin_transaction().unwrap();
    c.register_participant(txn, Arc::new(Blocking::new(SyncDb { panic: false })))
        .unwrap();
    assert!(c.prepare_transaction(txn).await.unwrap().is_prepared());
    assert!(c.commit_transaction(txn).await.unwrap().is_committed());

    let txn = c.begin_transaction().unwrap();
    c.register_participant(txn, Arc::new(Blocking::new(SyncDb { panic: true })))
        .unwrap();
    match c.prepare_transaction(txn).await.unwrap() {
        PrepareOutcome::Aborted(AbortReason::PrepareFailed {
            participant,
            failure: CallFailure::Panicked(m),
            ..
        }) => {
            assert_eq!(participant, "sync-db");
            assert!(m.contains("sync driver crashed"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let _ = Duration::ZERO;
}

#[tokio::test(start_paused = true)]
async fn dropping_the_coordinator_while_preparing_rolls_back_once_phase_one_ends() {
    let c = coordinator();
    let slow = Mock::new("slow")
        .on_prepare(Step::after(ms(50), Step::Ok))
        .arc();
    let txn = begin_with(&c, [slow.clone()]);
    // The client gives up on prepare, then drops the coordinator.
    assert!(tokio::time::timeout(ms(5), c.prepare_transaction(txn))
        .await
        .is_err());
    drop(c);
    tokio::time::sleep(ms(100)).await;
    assert_eq!(slow.calls(), [Kind::Prepare, Kind::Rollback]);
}

#[tokio::test(start_paused = true)]
async fn deadline_passing_during_phase_one_rolls_back_when_it_ends() {
    let c = dtxn::TransactionCoordinator::with_config(
        common::config()
            .prepare_timeout(ms(500))
            .transaction_deadline(ms(600))
            .sweep_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    );
    let slow = Mock::new("slow")
        .on_prepare(Step::after(ms(400), Step::Ok))
        .arc();
    let txn = begin_with(&c, [slow.clone()]);
    tokio::time::sleep(ms(300)).await;
    let task = tokio::spawn({
        let c = c.clone();
        async move { c.prepare_transaction(txn).await }
    });
    // Phase 1 ends at 700 ms, past the 600 ms deadline: rolled back at once,
    // without waiting for the (hour-long) sweep.
    let _ = task.await.unwrap();
    tokio::time::sleep(ms(1)).await;
    assert_eq!(slow.calls(), [Kind::Prepare, Kind::Rollback]);
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Aborted
    );
}

/// A participant whose prepare call fails without a vote (say, a remote
/// service whose connection broke).
struct Unreachable(Mock);

#[dtxn::async_trait]
impl Participant for Unreachable {
    fn name(&self) -> &str {
        "unreachable"
    }
    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        self.0.prepare(txn).await
    }
    async fn try_prepare(&self, txn: TransactionId) -> Result<PreparedResult, ParticipantError> {
        self.0.prepare(txn).await;
        Err(ParticipantError::transient("connection reset"))
    }
    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.0.commit(txn).await
    }
    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.0.rollback(txn).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_prepare_call_aborts_and_the_failed_participant_still_gets_rollback() {
    let c = coordinator();
    let unreachable = Arc::new(Unreachable(Mock::new("unreachable")));
    let other = Mock::new("other").arc();
    let txn = c.begin_transaction().unwrap();
    c.register_participant(txn, unreachable.clone()).unwrap();
    c.register_participant(txn, other.clone()).unwrap();
    let outcome = c.prepare_transaction(txn).await.unwrap();
    assert_eq!(
        outcome,
        PrepareOutcome::Aborted(AbortReason::PrepareFailed {
            participant: "unreachable".into(),
            index: 0,
            failure: CallFailure::Error(ParticipantError::transient("connection reset")),
        })
    );
    c.rollback_transaction(txn).await.unwrap();
    assert_eq!(unreachable.0.calls(), [Kind::Prepare, Kind::Rollback]);
    assert_eq!(other.calls(), [Kind::Prepare, Kind::Rollback]);
}

/// A client call that finds the deadline passed applies the expiry itself
/// (before the sweeper does): the rollbacks that follow, and their
/// answers, must be applied like any others. (A regression: the answers of
/// a transaction that left Active this way once found no per-participant
/// timings and stopped its runner, leaving it Aborting for ever.)
#[tokio::test(start_paused = true)]
async fn a_deadline_found_expired_by_a_client_call_still_finishes_the_rollback() {
    let c = dtxn::TransactionCoordinator::with_config(
        common::config()
            .transaction_deadline(ms(200))
            .sweep_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    );
    let slow = Mock::new("slow")
        .on_rollback(Step::after(ms(10), Step::Ok))
        .arc();
    let quick = Mock::new("quick").arc();
    let txn = begin_with(&c, [slow.clone(), quick.clone()]);
    // Past the deadline; the sweeper, an hour away, has not run.
    tokio::time::sleep(ms(300)).await;
    let outcome = tokio::time::timeout(Duration::from_secs(60), c.rollback_transaction(txn))
        .await
        .expect("the rollback finishes")
        .unwrap();
    assert_eq!(outcome.decision, Decision::Abort);
    assert!(outcome.hazards.is_empty());
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Aborted
    );
    assert_eq!(slow.count(Kind::Rollback), 1);
    assert_eq!(quick.count(Kind::Rollback), 1);
    let report = c.transaction_report(txn).unwrap();
    assert!(
        report
            .participants
            .iter()
            .all(|p| p.phase2_latency.is_some()),
        "{report:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_wakes_for_a_deadline_after_sleeping_idle_and_forgets_on_time() {
    let c = dtxn::TransactionCoordinator::with_config(
        common::config()
            .retention_period(Duration::from_secs(30))
            .build()
            .unwrap(),
    );
    // An hour with nothing to do: the sweeper sleeps until woken.
    c.begin_transaction().unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(c.stats().unfinished, 0);
    let p = Mock::new("p").arc();
    let started = Instant::now();
    let txn = begin_with(&c, [p.clone()]);
    let deadline = c.config().transaction_deadline();
    // Still Active just before its deadline, rolled back by the sweeper
    // within one sweep interval after it: no client call in between.
    tokio::time::sleep_until(started + deadline - ms(1)).await;
    assert_eq!(c.stats().unfinished, 1);
    tokio::time::sleep_until(started + deadline + c.config().sweep_interval()).await;
    assert_eq!(p.calls(), [Kind::Rollback]);
    assert_eq!(c.stats().unfinished, 0);
    // Remembered for the retention period, then forgotten by the sweeper
    // (the first transaction was forgotten long ago).
    let finished = Instant::now();
    tokio::time::sleep_until(finished + Duration::from_secs(29)).await;
    assert_eq!(c.stats().remembered, 1);
    tokio::time::sleep_until(finished + Duration::from_secs(30) + c.config().sweep_interval())
        .await;
    assert_eq!(c.stats().remembered, 0);
    assert!(c.outcome(txn) == dtxn::OutcomeStatus::Unknown);
}

#[tokio::test(start_paused = true)]
async fn the_same_jitter_seed_replays_the_same_retry_delays() {
    async fn phase2_latency(seed: u64) -> Duration {
        let c = dtxn::TransactionCoordinator::with_config(
            common::config()
                .retry(
                    dtxn::RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(4))
                        .unwrap(),
                )
                .jitter_seed(seed)
                .build()
                .unwrap(),
        );
        let flaky = Mock::new("flaky")
            .on_commit(Step::Fail(ParticipantError::transient("busy")))
            .on_commit(Step::Fail(ParticipantError::transient("busy")))
            .arc();
        let txn = begin_with(&c, [flaky]);
        c.prepare_transaction(txn).await.unwrap();
        c.commit_transaction(txn).await.unwrap();
        let report = c.transaction_report(txn).unwrap();
        report.participants[0].phase2_latency.unwrap()
    }
    let first = phase2_latency(7).await;
    // Two backoffs, jittered into [0.5, 1] s and [1, 2] s.
    assert!(
        (Duration::from_millis(1500)..=Duration::from_millis(3100)).contains(&first),
        "{first:?}"
    );
    assert_eq!(phase2_latency(7).await, first);
    assert_ne!(phase2_latency(8).await, first);
}
