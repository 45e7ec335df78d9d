//! Outcome queries (PROTOCOL.md rule 15): what was decided, for anyone
//! holding a transaction id; never `aborted` for an id the coordinator
//! does not hold.

mod common;

use std::time::Duration;

use common::{begin_with, config, coordinator, ms, Mock, Step};
use dtxn::{OutcomeStatus, PrepareOutcome, TransactionCoordinator};

#[tokio::test(start_paused = true)]
async fn outcome_is_pending_until_the_decision_then_the_decision_from_its_first_moment() {
    let c = coordinator();
    let slow = Mock::new("slow")
        .on_prepare(Step::after(ms(30), Step::Ok))
        .on_commit(Step::after(ms(30), Step::Ok))
        .arc();
    let txn = begin_with(&c, [slow]);
    assert_eq!(c.outcome(txn), OutcomeStatus::Pending); // Active
    let prepare = tokio::spawn({
        let c = c.clone();
        async move { c.prepare_transaction(txn).await }
    });
    tokio::time::sleep(ms(10)).await;
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        dtxn::TransactionState::Preparing
    );
    assert_eq!(c.outcome(txn), OutcomeStatus::Pending);
    assert_eq!(prepare.await.unwrap().unwrap(), PrepareOutcome::Prepared);
    assert_eq!(c.outcome(txn), OutcomeStatus::Pending); // Prepared: in doubt
    let commit = tokio::spawn({
        let c = c.clone();
        async move { c.commit_transaction(txn).await }
    });
    tokio::time::sleep(ms(10)).await;
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        dtxn::TransactionState::Committing
    );
    // Decided, though phase 2 is still delivering it.
    assert_eq!(c.outcome(txn), OutcomeStatus::Committed);
    commit.await.unwrap().unwrap();
    assert_eq!(c.outcome(txn), OutcomeStatus::Committed);
}

#[tokio::test(start_paused = true)]
async fn outcome_is_aborted_once_abort_is_decided() {
    let c = coordinator();
    let slow = Mock::new("slow")
        .on_rollback(Step::after(ms(30), Step::Ok))
        .arc();
    let txn = begin_with(&c, [slow]);
    let rollback = tokio::spawn({
        let c = c.clone();
        async move { c.rollback_transaction(txn).await }
    });
    tokio::time::sleep(ms(10)).await;
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        dtxn::TransactionState::Aborting
    );
    assert_eq!(c.outcome(txn), OutcomeStatus::Aborted);
    rollback.await.unwrap().unwrap();
    assert_eq!(c.outcome(txn), OutcomeStatus::Aborted);
}

#[tokio::test(start_paused = true)]
async fn outcome_past_the_deadline_is_aborted() {
    let c = TransactionCoordinator::with_config(
        config()
            .transaction_deadline(Duration::from_secs(1))
            // No sweep before the query: the query itself must expire it.
            .sweep_interval(Duration::from_secs(3600))
            .build()
            .unwrap(),
    );
    let txn = begin_with(&c, [Mock::new("a").arc()]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.outcome(txn), OutcomeStatus::Aborted);
}

#[tokio::test(start_paused = true)]
async fn outcome_of_an_id_not_held_is_unknown_never_aborted() {
    // Forgotten at once after it finished (retention count zero)...
    let c = TransactionCoordinator::with_config(config().retention_count(0).build().unwrap());
    let rolled_back = begin_with(&c, [Mock::new("a").arc()]);
    c.rollback_transaction(rolled_back).await.unwrap();
    assert_eq!(c.outcome(rolled_back), OutcomeStatus::Unknown);
    let committed = begin_with(&c, [Mock::new("b").arc()]);
    c.prepare_transaction(committed).await.unwrap();
    c.commit_transaction(committed).await.unwrap();
    assert_eq!(c.outcome(committed), OutcomeStatus::Unknown);
    // ...never begun here...
    let never: dtxn::TransactionId = "0123456789abcdef0000000000000007".parse().unwrap();
    assert_eq!(c.outcome(never), OutcomeStatus::Unknown);
    // ...or begun by this coordinator's previous incarnation.
    let restarted = coordinator();
    let before_restart = {
        let old = coordinator();
        let txn = begin_with(&old, [Mock::new("c").arc()]);
        old.rollback_transaction(txn).await.unwrap();
        txn
    };
    assert_eq!(restarted.outcome(before_restart), OutcomeStatus::Unknown);
}

#[test]
fn outcome_statuses_serialize_in_snake_case() {
    for (status, text) in [
        (OutcomeStatus::Committed, "committed"),
        (OutcomeStatus::Aborted, "aborted"),
        (OutcomeStatus::Pending, "pending"),
        (OutcomeStatus::Unknown, "unknown"),
    ] {
        assert_eq!(serde_json::to_value(status).unwrap(), text);
        assert_eq!(status.to_string(), text);
    }
}
