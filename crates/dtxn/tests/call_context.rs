//! The call context: every participant call carries the transaction, the
//! phase, the attempt number and the payload registered with that
//! participant; participants written without it keep working unchanged.

mod common;

use std::sync::{Arc, Mutex};

use common::{config, coordinator, ms, Mock, Step};
use dtxn::{
    async_trait, CallContext, Participant, ParticipantError, Payload, Phase, PrepareOutcome,
    PreparedResult, TransactionCoordinator, TransactionId,
};

/// Records each call's context; fails the first `fail_commits` commits.
struct Recorder {
    seen: Mutex<Vec<CallContext>>,
    fail_commits: Mutex<u32>,
    vote: PreparedResult,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Self::voting(PreparedResult::Ready, 0)
    }

    fn voting(vote: PreparedResult, fail_commits: u32) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Vec::new()),
            fail_commits: Mutex::new(fail_commits),
            vote,
        })
    }

    fn seen(&self) -> Vec<CallContext> {
        self.seen.lock().unwrap().clone()
    }

    fn record(&self, cx: &CallContext) {
        self.seen.lock().unwrap().push(cx.clone());
    }
}

#[async_trait]
impl Participant for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn prepare_with(&self, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
        self.record(cx);
        Ok(self.vote.clone())
    }
    async fn commit_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.record(cx);
        let mut left = self.fail_commits.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return Err(ParticipantError::transient("not yet"));
        }
        Ok(())
    }
    async fn rollback_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.record(cx);
        Ok(())
    }
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        panic!("the coordinator calls prepare_with")
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        panic!("the coordinator calls commit_with")
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        panic!("the coordinator calls rollback_with")
    }
}

fn summary(seen: &[CallContext]) -> Vec<(Phase, u32, Option<String>)> {
    seen.iter()
        .map(|cx| {
            (
                cx.phase(),
                cx.attempt(),
                cx.payload().map(|p| p.as_str().unwrap().to_owned()),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn every_call_carries_the_payload_the_phase_and_the_attempt_number() {
    let c = coordinator();
    let p = Recorder::voting(PreparedResult::Ready, 2);
    let txn = c.begin_transaction().unwrap();
    let payload = r#"{"user":"Zoë 🦀","sku":"book"}"#;
    c.register_participant_with_payload(txn, p.clone(), payload)
        .unwrap();
    assert_eq!(
        c.prepare_transaction(txn).await.unwrap(),
        PrepareOutcome::Prepared
    );
    // Two failed commits, then success: attempts 1, 2, 3.
    assert!(c.commit_transaction(txn).await.unwrap().is_committed());
    let seen = p.seen();
    assert!(seen.iter().all(|cx| cx.transaction_id() == txn));
    let some = Some(payload.to_owned());
    assert_eq!(
        summary(&seen),
        vec![
            (Phase::Prepare, 1, some.clone()),
            (Phase::Commit, 1, some.clone()),
            (Phase::Commit, 2, some.clone()),
            (Phase::Commit, 3, some),
        ]
    );
    assert!(seen.iter().all(|cx| cx.outcome_url().is_none()));
}

#[tokio::test(start_paused = true)]
async fn rollback_carries_the_payload_too() {
    let c = coordinator();
    let p = Recorder::new();
    let txn = c.begin_transaction().unwrap();
    c.register_participant_with_payload(txn, p.clone(), "order 42")
        .unwrap();
    c.rollback_transaction(txn).await.unwrap();
    assert_eq!(
        summary(&p.seen()),
        vec![(Phase::Rollback, 1, Some("order 42".to_owned()))]
    );
}

#[tokio::test(start_paused = true)]
async fn each_participant_gets_its_own_payload_and_those_without_get_none() {
    let c = coordinator();
    let recorders: Vec<_> = (0..6).map(|_| Recorder::new()).collect();
    let txn = c.begin_transaction().unwrap();
    for (i, p) in recorders.iter().enumerate() {
        if i % 2 == 1 {
            c.register_participant_with_payload(txn, p.clone(), format!("payload {i}"))
                .unwrap();
        } else {
            c.register_participant(txn, p.clone()).unwrap();
        }
    }
    c.prepare_transaction(txn).await.unwrap();
    c.commit_transaction(txn).await.unwrap();
    for (i, p) in recorders.iter().enumerate() {
        let expected = (i % 2 == 1).then(|| format!("payload {i}"));
        assert_eq!(
            summary(&p.seen()),
            vec![
                (Phase::Prepare, 1, expected.clone()),
                (Phase::Commit, 1, expected)
            ],
            "participant {i}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_payload_is_shared_with_each_call_not_copied() {
    let c = coordinator();
    let p = Recorder::new();
    let payload = Payload::from(vec![7u8; 1 << 20]);
    let txn = c.begin_transaction().unwrap();
    c.register_participant_with_payload(txn, p.clone(), payload.clone())
        .unwrap();
    c.prepare_transaction(txn).await.unwrap();
    c.commit_transaction(txn).await.unwrap();
    for cx in p.seen() {
        assert_eq!(
            cx.payload().unwrap().as_bytes().as_ptr(),
            payload.as_bytes().as_ptr()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn registering_the_same_participant_again_keeps_the_first_payload() {
    let c = coordinator();
    let p = Recorder::new();
    let txn = c.begin_transaction().unwrap();
    assert_eq!(
        c.register_participant_with_payload(txn, p.clone(), "first")
            .unwrap(),
        dtxn::Registration::Registered
    );
    assert_eq!(
        c.register_participant_with_payload(txn, p.clone(), "second")
            .unwrap(),
        dtxn::Registration::AlreadyRegistered
    );
    c.rollback_transaction(txn).await.unwrap();
    assert_eq!(
        summary(&p.seen()),
        vec![(Phase::Rollback, 1, Some("first".to_owned()))]
    );
}

#[tokio::test(start_paused = true)]
async fn a_payload_registration_is_refused_like_any_other_after_prepare() {
    let c = coordinator();
    let txn = c.begin_transaction().unwrap();
    c.prepare_transaction(txn).await.unwrap();
    let refused = c.register_participant_with_payload(txn, Recorder::new(), "late");
    assert!(
        matches!(refused, Err(dtxn::CoordinatorError::InvalidState { .. })),
        "{refused:?}"
    );
}

/// A participant written before call contexts existed: only the plain
/// methods, and an overridden `try_prepare`.
struct Legacy {
    fail_prepare: bool,
    rolled_back: Mutex<Vec<TransactionId>>,
}

#[async_trait]
impl Participant for Legacy {
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn try_prepare(&self, txn: TransactionId) -> Result<PreparedResult, ParticipantError> {
        if self.fail_prepare {
            return Err(ParticipantError::transient(format!("{txn}: unreachable")));
        }
        Ok(self.prepare(txn).await)
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.rolled_back.lock().unwrap().push(txn);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn participants_without_call_contexts_still_get_try_prepare_and_ignore_payloads() {
    let c = coordinator();
    let failing = Arc::new(Legacy {
        fail_prepare: true,
        rolled_back: Mutex::new(Vec::new()),
    });
    let txn = c.begin_transaction().unwrap();
    c.register_participant_with_payload(txn, failing.clone(), "ignored")
        .unwrap();
    // The overridden try_prepare is what the default prepare_with calls:
    // its error is a failed call, so rollback follows.
    assert!(matches!(
        c.prepare_transaction(txn).await.unwrap(),
        PrepareOutcome::Aborted(_)
    ));
    c.rollback_transaction(txn).await.unwrap();
    assert_eq!(*failing.rolled_back.lock().unwrap(), vec![txn]);

    let mock = Mock::new("mock").on_commit(Step::Ok).arc();
    let txn = c.begin_transaction().unwrap();
    c.register_participant_with_payload(txn, mock.clone(), "ignored")
        .unwrap();
    c.prepare_transaction(txn).await.unwrap();
    assert!(c.commit_transaction(txn).await.unwrap().is_committed());
}

#[tokio::test(start_paused = true)]
async fn a_slow_participant_still_gets_its_payload_after_the_caller_has_gone() {
    // The call outlives the client future that started it (rule 14): its
    // context is owned by the call, not borrowed from the caller.
    struct Slow(Arc<Recorder>);
    #[async_trait]
    impl Participant for Slow {
        async fn prepare_with(&self, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
            tokio::time::sleep(ms(50)).await;
            self.0.prepare_with(cx).await
        }
        async fn prepare(&self, _: TransactionId) -> PreparedResult {
            unreachable!()
        }
        async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
        async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
    }
    let c = TransactionCoordinator::with_config(config().build().unwrap());
    let recorder = Recorder::new();
    let txn = c.begin_transaction().unwrap();
    c.register_participant_with_payload(txn, Arc::new(Slow(recorder.clone())), "kept")
        .unwrap();
    // Start phase 1 and drop the caller's future at once.
    let prepare = c.prepare_transaction(txn);
    tokio::select! {
        biased;
        _ = prepare => unreachable!("the participant sleeps first"),
        _ = tokio::task::yield_now() => {}
    }
    tokio::time::sleep(ms(100)).await;
    assert_eq!(
        summary(&recorder.seen()),
        vec![(Phase::Prepare, 1, Some("kept".to_owned()))]
    );
    assert_eq!(
        c.get_transaction_state(txn).unwrap(),
        dtxn::TransactionState::Prepared
    );
}

#[test]
fn payload_debug_output_shows_the_length_not_the_contents() {
    let payload = Payload::from("ssn=123-45-6789");
    assert_eq!(format!("{payload:?}"), "Payload(15 bytes)");
    let cx =
        CallContext::new(TransactionId::from_u128(1), Phase::Commit).with_payload(Some(payload));
    assert!(!format!("{cx:?}").contains("6789"));
    assert_eq!(cx.attempt(), 1);
    assert_eq!(cx.clone().with_attempt(0).attempt(), 1);
    assert_eq!(Phase::Rollback.to_string(), "rollback");
}
