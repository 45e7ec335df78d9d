//! The peers run the same transactions as dtxn over the same participants,
//! and report honestly what happened to them. Nothing about timings is
//! asserted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};
use dtxn_bench::{drive, participants::many, Contender, Noop, Peer};
use dtxn_bench_peers::{DistTx, Steno};

/// Counts every call it gets; votes as told.
#[derive(Default)]
struct Counting {
    vote_no: bool,
    prepares: AtomicUsize,
    commits: AtomicUsize,
    rollbacks: AtomicUsize,
}

#[async_trait]
impl Participant for Counting {
    async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        self.prepares.fetch_add(1, Ordering::Relaxed);
        if self.vote_no {
            PreparedResult::Aborted("no".to_owned())
        } else {
            PreparedResult::Ready
        }
    }
    async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        self.rollbacks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn counting(n: usize, vote_no_at: Option<usize>) -> Vec<Arc<Counting>> {
    (0..n)
        .map(|i| {
            Arc::new(Counting {
                vote_no: Some(i) == vote_no_at,
                ..Counting::default()
            })
        })
        .collect()
}

fn as_participants(all: &[Arc<Counting>]) -> Arc<[Arc<dyn Participant>]> {
    all.iter()
        .map(|p| Arc::clone(p) as Arc<dyn Participant>)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_prepares_and_commits_every_participant_once_per_transaction() {
    for peer in dtxn_bench_peers::all() {
        for size in [1, 3, 10] {
            let all = counting(size, None);
            let d = drive(
                &Contender::peer(peer.as_ref()),
                &as_participants(&all),
                40,
                8,
                true,
            )
            .await;
            assert_eq!(d.failed, 0, "{} at {size}", peer.name());
            assert_eq!(d.latencies.len(), 40);
            for p in &all {
                assert_eq!(p.prepares.load(Ordering::Relaxed), 40, "{}", peer.name());
                assert_eq!(p.commits.load(Ordering::Relaxed), 40, "{}", peer.name());
                assert_eq!(p.rollbacks.load(Ordering::Relaxed), 0, "{}", peer.name());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_run_a_thousand_transactions_at_once() {
    let participants = many(3, || Arc::new(Noop));
    for peer in dtxn_bench_peers::all() {
        let d = drive(
            &Contender::peer(peer.as_ref()),
            &participants,
            2000,
            1000,
            false,
        )
        .await;
        assert_eq!(d.failed, 0, "{}", peer.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steno_saga_with_a_failing_action_does_not_commit_and_undoes_the_others() {
    let all = counting(3, Some(1));
    let contender = Contender::peer(&Steno::new());
    let d = drive(&contender, &as_participants(&all), 1, 1, false).await;
    assert_eq!(d.failed, 1);
    // The two others ran (in parallel) and were compensated.
    for (i, p) in all.iter().enumerate() {
        if i != 1 {
            assert_eq!(
                p.rollbacks.load(Ordering::Relaxed),
                p.commits.load(Ordering::Relaxed)
            );
        }
    }
}

/// Recorded peer behaviour, not an endorsement: `dist_tx` 0.5.2's
/// `SimpleTransactionManager::commit_transaction`, after a failed
/// `xa_prepare` whose rollback succeeds, goes on to `xa_commit` every
/// resource manager and returns `Ok`. The benchmark only measures the
/// happy path, where this does not arise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dist_tx_reports_a_commit_after_a_no_vote() {
    let all = counting(3, Some(1));
    let contender = Contender::peer(&DistTx::new());
    let d = drive(&contender, &as_participants(&all), 1, 1, false).await;
    assert_eq!(d.failed, 0, "dist_tx reports success");
    for p in &all {
        assert_eq!(p.rollbacks.load(Ordering::Relaxed), 1);
        assert_eq!(p.commits.load(Ordering::Relaxed), 1);
    }
}

#[test]
fn peers_are_named() {
    let names: Vec<&str> = dtxn_bench_peers::all().iter().map(|p| p.name()).collect();
    assert_eq!(names, ["dist_tx", "steno"]);
    assert_eq!(Steno::new().fresh().name(), "steno");
}
