//! The client API table of PROTOCOL.md: what each call does in each state.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{begin_with, config, coordinator, ms, Kind, Mock, Step};
use dtxn::{
    AbortReason, CoordinatorError, Decision, Operation, Participant, PrepareOutcome, Registration,
    TransactionCoordinator, TransactionId, TransactionState,
};

fn invalid(err: CoordinatorError) -> (TransactionState, Operation) {
    match err {
        CoordinatorError::InvalidState {
            current, operation, ..
        } => (current, operation),
        other => panic!("expected InvalidState, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn registering_the_same_participant_twice_has_no_effect() {
    let c = coordinator();
    let p = Mock::new("p").arc();
    let txn = c.begin_transaction().unwrap();
    let dynp: Arc<dyn Participant> = p.clone();
    assert_eq!(
        c.register_participant(txn, dynp.clone()).unwrap(),
        Registration::Registered
    );
    assert_eq!(
        c.register_participant(txn, dynp).unwrap(),
        Registration::AlreadyRegistered
    );
    c.prepare_transaction(txn).await.unwrap();
    c.commit_transaction(txn).await.unwrap();
    assert_eq!(p.calls(), [Kind::Prepare, Kind::Commit]);
    assert_eq!(c.transaction_report(txn).unwrap().participants.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn registering_outside_active_is_invalid_state() {
    let c = coordinator();
    let slow = Mock::new("slow")
        .on_prepare(Step::after(ms(10), Step::Ok))
        .arc();
    let txn = begin_with(&c, [slow]);
    let prepare = tokio::spawn({
        let c = c.clone();
        async move { c.prepare_transaction(txn).await }
    });
    tokio::task::yield_now().await;
    let late: Arc<dyn Participant> = Mock::new("late").arc();
    assert_eq!(
        invalid(c.register_participant(txn, late.clone()).unwrap_err()),
        (TransactionState::Preparing, Operation::Register)
    );
    prepare.await.unwrap().unwrap();
    assert_eq!(
        invalid(c.register_participant(txn, late.clone()).unwrap_err()),
        (TransactionState::Prepared, Operation::Register)
    );
    c.commit_transaction(txn).await.unwrap();
    assert_eq!(
        invalid(c.register_participant(txn, late).unwrap_err()),
        (TransactionState::Committed, Operation::Register)
    );
}

#[tokio::test(start_paused = true)]
async fn participant_limit_is_enforced_with_a_clear_error() {
    let c = TransactionCoordinator::with_config(config().max_participants(2).build().unwrap());
    let txn = c.begin_transaction().unwrap();
    let ps: Vec<Arc<dyn Participant>> = (0..3).map(|_| Mock::new("p").arc() as _).collect();
    c.register_participant(txn, ps[0].clone()).unwrap();
    c.register_participant(txn, ps[1].clone()).unwrap();
    let err = c.register_participant(txn, ps[2].clone()).unwrap_err();
    assert_eq!(err, CoordinatorError::TooManyParticipants { txn, limit: 2 });
    assert!(err.to_string().contains("maximum of 2 participants"));
    // A duplicate at the limit is still just a duplicate.
    assert_eq!(
        c.register_participant(txn, ps[0].clone()).unwrap(),
        Registration::AlreadyRegistered
    );
    // The transaction is unharmed.
    c.prepare_transaction(txn).await.unwrap();
    assert!(c.commit_transaction(txn).await.unwrap().is_committed());
}

#[tokio::test(start_paused = true)]
async fn begin_beyond_capacity_fails_until_a_transaction_finishes() {
    let c = TransactionCoordinator::with_config(config().max_transactions(3).build().unwrap());
    let ids: Vec<_> = (0..3).map(|_| c.begin_transaction().unwrap()).collect();
    assert_eq!(
        c.begin_transaction().unwrap_err(),
        CoordinatorError::CapacityExceeded { limit: 3 }
    );
    c.rollback_transaction(ids[0]).await.unwrap();
    assert!(c.begin_transaction().is_ok());
    assert_eq!(c.stats().unfinished, 3);
}

#[tokio::test(start_paused = true)]
async fn prepare_while_preparing_waits_for_the_same_phase_one() {
    let c = coordinator();
    let p = Mock::new("p")
        .on_prepare(Step::after(ms(20), Step::aborted("no")))
        .arc();
    let txn = begin_with(&c, [p.clone()]);
    let (a, b, d) = tokio::join!(
        c.prepare_transaction(txn),
        c.prepare_transaction(txn),
        c.prepare_transaction(txn)
    );
    assert_eq!(a.unwrap(), b.clone().unwrap());
    assert_eq!(b.unwrap(), d.unwrap());
    assert_eq!(p.count(Kind::Prepare), 1);
}

#[tokio::test(start_paused = true)]
async fn prepare_after_phase_one_returns_the_outcome_again_and_calls_nobody() {
    let c = coordinator();
    let p = Mock::new("p").arc();
    let txn = begin_with(&c, [p.clone()]);
    assert!(c.prepare_transaction(txn).await.unwrap().is_prepared());
    assert!(c.prepare_transaction(txn).await.unwrap().is_prepared());
    c.commit_transaction(txn).await.unwrap();
    assert!(c.prepare_transaction(txn).await.unwrap().is_prepared());
    assert_eq!(p.calls(), [Kind::Prepare, Kind::Commit]);

    let no = Mock::new("no").on_prepare(Step::aborted("stock")).arc();
    let txn = begin_with(&c, [no.clone()]);
    let first = c.prepare_transaction(txn).await.unwrap();
    assert!(matches!(
        first,
        PrepareOutcome::Aborted(AbortReason::Voted { .. })
    ));
    assert_eq!(c.prepare_transaction(txn).await.unwrap(), first);
    c.rollback_transaction(txn).await.unwrap();
    assert_eq!(c.prepare_transaction(txn).await.unwrap(), first);
    assert_eq!(no.calls(), [Kind::Prepare]);
}

#[tokio::test(start_paused = true)]
async fn commit_repeats_and_concurrent_commits_share_one_outcome() {
    let c = coordinator();
    let p = Mock::new("p")
        .on_commit(Step::after(ms(10), Step::Ok))
        .arc();
    let txn = begin_with(&c, [p.clone()]);
    c.prepare_transaction(txn).await.unwrap();
    let (a, b) = tokio::join!(c.commit_transaction(txn), c.commit_transaction(txn));
    assert_eq!(a.unwrap(), b.unwrap());
    let again = c.commit_transaction(txn).await.unwrap();
    assert!(again.is_committed());
    assert_eq!(p.count(Kind::Commit), 1);
}

#[tokio::test(start_paused = true)]
async fn commit_before_prepare_is_invalid_state() {
    let c = coordinator();
    let slow = Mock::new("slow")
        .on_prepare(Step::after(ms(10), Step::Ok))
        .arc();
    let txn = begin_with(&c, [slow.clone()]);
    assert_eq!(
        invalid(c.commit_transaction(txn).await.unwrap_err()),
        (TransactionState::Active, Operation::Commit)
    );
    let prepare = tokio::spawn({
        let c = c.clone();
        async move { c.prepare_transaction(txn).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        invalid(c.commit_transaction(txn).await.unwrap_err()),
        (TransactionState::Preparing, Operation::Commit)
    );
    assert!(prepare.await.unwrap().unwrap().is_prepared());
    assert!(c.commit_transaction(txn).await.unwrap().is_committed());
    assert_eq!(slow.count(Kind::Commit), 1);
}

#[tokio::test(start_paused = true)]
async fn commit_after_abort_decision_is_invalid_state() {
    let c = coordinator();
    let p = Mock::new("p")
        .on_rollback(Step::after(ms(10), Step::Ok))
        .arc();
    let txn = begin_with(&c, [p.clone()]);
    c.prepare_transaction(txn).await.unwrap();
    let rollback = tokio::spawn({
        let c = c.clone();
        async move { c.rollback_transaction(txn).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        invalid(c.commit_transaction(txn).await.unwrap_err()),
        (TransactionState::Aborting, Operation::Commit)
    );
    rollback.await.unwrap().unwrap();
    assert_eq!(
        invalid(c.commit_transaction(txn).await.unwrap_err()),
        (TransactionState::Aborted, Operation::Commit)
    );
    assert_eq!(p.count(Kind::Commit), 0);
}

#[tokio::test(start_paused = true)]
async fn rollback_while_preparing_decides_abort() {
    let c = coordinator();
    let ready = Mock::new("ready").arc();
    let slow = Mock::new("slow")
        .on_prepare(Step::after(ms(30), Step::Ok))
        .arc();
    let txn = begin_with(&c, [ready.clone(), slow.clone()]);
    let prepare = tokio::spawn({
        let c = c.clone();
        async move { c.prepare_transaction(txn).await }
    });
    tokio::time::sleep(ms(1)).await;
    let outcome = c.rollback_transaction(txn).await.unwrap();
    assert_eq!(outcome.abort_reason, Some(AbortReason::RolledBack));
    assert_eq!(
        prepare.await.unwrap().unwrap(),
        PrepareOutcome::Aborted(AbortReason::RolledBack)
    );
    assert_eq!(ready.calls(), [Kind::Prepare, Kind::Rollback]);
    assert_eq!(slow.calls(), [Kind::Prepare, Kind::Rollback]);
}

#[tokio::test(start_paused = true)]
async fn rollback_is_idempotent() {
    let c = coordinator();
    let p = Mock::new("p").arc();
    let txn = begin_with(&c, [p.clone()]);
    c.prepare_transaction(txn).await.unwrap();
    let first = c.rollback_transaction(txn).await.unwrap();
    assert_eq!(c.rollback_transaction(txn).await.unwrap(), first);
    assert_eq!(p.calls(), [Kind::Prepare, Kind::Rollback]);
}

#[tokio::test(start_paused = true)]
async fn rollback_after_commit_decision_is_invalid_state() {
    let c = coordinator();
    let p = Mock::new("p")
        .on_commit(Step::after(ms(10), Step::Ok))
        .arc();
    let txn = begin_with(&c, [p.clone()]);
    c.prepare_transaction(txn).await.unwrap();
    let commit = tokio::spawn({
        let c = c.clone();
        async move { c.commit_transaction(txn).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        invalid(c.rollback_transaction(txn).await.unwrap_err()),
        (TransactionState::Committing, Operation::Rollback)
    );
    assert_eq!(commit.await.unwrap().unwrap().decision, Decision::Commit);
    assert_eq!(
        invalid(c.rollback_transaction(txn).await.unwrap_err()),
        (TransactionState::Committed, Operation::Rollback)
    );
    assert_eq!(p.count(Kind::Rollback), 0);
}

#[tokio::test(start_paused = true)]
async fn every_call_on_an_unknown_id_is_not_found() {
    let c = coordinator();
    let txn: TransactionId = "00000000-0000-0000-0000-00000000beef".parse().unwrap();
    let nf = CoordinatorError::NotFound { txn };
    let p: Arc<dyn Participant> = Mock::new("p").arc();
    assert_eq!(c.register_participant(txn, p).unwrap_err(), nf);
    assert_eq!(c.prepare_transaction(txn).await.unwrap_err(), nf);
    assert_eq!(c.commit_transaction(txn).await.unwrap_err(), nf);
    assert_eq!(c.rollback_transaction(txn).await.unwrap_err(), nf);
    assert_eq!(c.get_transaction_state(txn).unwrap_err(), nf);
    assert_eq!(c.transaction_report(txn).unwrap_err(), nf);
}

#[tokio::test(start_paused = true)]
async fn finished_transactions_are_forgotten_after_the_retention_period() {
    let c = TransactionCoordinator::with_config(
        config()
            .retention_period(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let txn = begin_with(&c, [Mock::new("p").arc()]);
    c.prepare_transaction(txn).await.unwrap();
    c.commit_transaction(txn).await.unwrap();
    tokio::time::sleep(ms(500)).await;
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        TransactionState::Committed
    );
    tokio::time::sleep(ms(600)).await;
    assert_eq!(
        c.get_transaction_state(txn).unwrap_err(),
        CoordinatorError::NotFound { txn }
    );
    assert_eq!(c.stats().remembered, 0);
}

#[tokio::test(start_paused = true)]
async fn at_most_retention_count_finished_transactions_are_remembered() {
    let c = TransactionCoordinator::with_config(config().retention_count(10).build().unwrap());
    let mut ids = Vec::new();
    for _ in 0..50 {
        let txn = begin_with(&c, [Mock::new("p").arc()]);
        c.rollback_transaction(txn).await.unwrap();
        ids.push(txn);
    }
    assert_eq!(c.stats().remembered, 10);
    assert!(c.get_transaction_state(ids[39]).is_err());
    assert_eq!(
        c.get_transaction_state(ids[40]).unwrap(),
        TransactionState::Aborted
    );
}

#[test]
fn invalid_configuration_is_refused() {
    let err = dtxn::CoordinatorConfig::builder()
        .max_participants(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err,
        dtxn::ConfigError::Zero {
            setting: "max_participants"
        }
    );
    assert_eq!(err.to_string(), "max_participants must be at least 1");
}

#[tokio::test(start_paused = true)]
async fn shutdown_rolls_back_undecided_transactions_finishes_decided_ones_and_refuses_begin() {
    let c = coordinator();
    let active = Mock::new("active").arc();
    let prepared = Mock::new("prepared").arc();
    let committing = Mock::new("committing")
        .on_commit(Step::after(ms(50), Step::Ok))
        .arc();
    let t_active = begin_with(&c, [active.clone()]);
    let t_prepared = begin_with(&c, [prepared.clone()]);
    let t_committing = begin_with(&c, [committing.clone()]);
    c.prepare_transaction(t_prepared).await.unwrap();
    c.prepare_transaction(t_committing).await.unwrap();
    let commit = tokio::spawn({
        let c = c.clone();
        async move { c.commit_transaction(t_committing).await }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        c.get_transaction_state(t_committing).unwrap(),
        TransactionState::Committing
    );

    c.shutdown().await;

    assert_eq!(c.begin_transaction(), Err(CoordinatorError::ShuttingDown));
    assert_eq!(
        c.get_transaction_state(t_active).unwrap(),
        TransactionState::Aborted
    );
    assert_eq!(
        c.get_transaction_state(t_prepared).unwrap(),
        TransactionState::Aborted
    );
    assert_eq!(
        c.transaction_report(t_prepared).unwrap().abort_reason,
        Some(AbortReason::CoordinatorShutdown)
    );
    assert!(commit.await.unwrap().unwrap().is_committed());
    assert_eq!(committing.calls(), [Kind::Prepare, Kind::Commit]);
    assert_eq!(prepared.calls(), [Kind::Prepare, Kind::Rollback]);
    assert_eq!(active.calls(), [Kind::Rollback]);
    assert!(c.unfinished_transactions().is_empty());
}

#[tokio::test(start_paused = true)]
async fn stats_count_outcomes_and_hazards_and_the_unfinished_list_shows_in_doubt_transactions() {
    let c = TransactionCoordinator::with_config(
        config()
            .retry(dtxn::RetryPolicy::new(2, ms(1), ms(1)).unwrap())
            .build()
            .unwrap(),
    );
    let ok = begin_with(&c, [Mock::new("a").arc()]);
    c.prepare_transaction(ok).await.unwrap();
    c.commit_transaction(ok).await.unwrap();
    let gone = Mock::new("gone")
        .on_commit(Step::Fail(dtxn::ParticipantError::permanent("deleted")))
        .arc();
    let hazardous = begin_with(&c, [gone, Mock::new("b").arc()]);
    c.prepare_transaction(hazardous).await.unwrap();
    assert!(c.commit_transaction(hazardous).await.unwrap().has_hazards());
    let rolled = begin_with(&c, [Mock::new("c").arc()]);
    c.rollback_transaction(rolled).await.unwrap();

    let in_doubt = begin_with(&c, [Mock::new("d").arc(), Mock::new("e").arc()]);
    c.prepare_transaction(in_doubt).await.unwrap();
    tokio::time::advance(ms(5)).await;
    let active = c.begin_transaction().unwrap();

    let stats = c.stats();
    assert_eq!(
        (
            stats.committed,
            stats.aborted,
            stats.hazards,
            stats.unfinished
        ),
        (2, 1, 1, 2)
    );
    let list = c.unfinished_transactions();
    let seen: Vec<_> = list
        .iter()
        .map(|s| (s.txn, s.state, s.participants))
        .collect();
    assert_eq!(
        seen,
        [
            (in_doubt, TransactionState::Prepared, 2),
            (active, TransactionState::Active, 0)
        ]
    );
    assert!(list[0].age >= ms(5));
}

#[tokio::test(start_paused = true)]
async fn re_registering_any_of_many_participants_is_recognised() {
    let c = coordinator();
    let txn = c.begin_transaction().unwrap();
    let ps: Vec<Arc<dyn Participant>> = (0..100)
        .map(|i| Mock::new(&format!("p{i}")).arc() as Arc<dyn Participant>)
        .collect();
    for p in &ps {
        assert_eq!(
            c.register_participant(txn, p.clone()).unwrap(),
            Registration::Registered
        );
    }
    for p in &ps {
        assert_eq!(
            c.register_participant(txn, p.clone()).unwrap(),
            Registration::AlreadyRegistered
        );
    }
    assert_eq!(c.transaction_report(txn).unwrap().participants.len(), 100);
}
