//! Client behaviours: how a workload drives one transaction through the
//! coordinator once its participants are registered, with every call timed
//! and recorded as a [`ClientCall`] for the checker.

use std::future::Future;
use std::time::Duration;

use dtxn::{TransactionCoordinator, TransactionId};
use tokio::time::Instant;

use crate::check::{ClientCall, ClientOp, ClientResult};
use crate::trace::{txn_label, Trace};

/// What the client of one transaction does after registering participants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ClientPlan {
    /// Prepare; commit if prepared, else roll back (the normal client).
    Commit,
    /// Prepare, then roll back whatever the outcome.
    RollbackAfterPrepare,
    /// Roll back without preparing.
    RollbackActive,
    /// Register and go away: the deadline must roll it back.
    AbandonActive,
    /// Prepare and go away: the deadline must roll back a Prepared one.
    AbandonPrepared,
    /// Prepare, then commit even if phase 1 aborted (the coordinator must
    /// refuse with `InvalidState`), then roll back if refused.
    CommitRegardless,
    /// Prepare and roll back concurrently.
    RacePrepareRollback,
    /// Prepare twice concurrently, then commit twice concurrently (or roll
    /// back twice if aborted).
    Duplicate,
    /// Calls under a short client-side timeout (dropping the futures),
    /// polling the state in between; leaves what is unfinished to the
    /// coordinator (rule 13).
    Impatient,
}

impl ClientPlan {
    /// Every plan.
    pub const ALL: [ClientPlan; 9] = [
        ClientPlan::Commit,
        ClientPlan::RollbackAfterPrepare,
        ClientPlan::RollbackActive,
        ClientPlan::AbandonActive,
        ClientPlan::AbandonPrepared,
        ClientPlan::CommitRegardless,
        ClientPlan::RacePrepareRollback,
        ClientPlan::Duplicate,
        ClientPlan::Impatient,
    ];

    /// A random plan: `Commit` with probability `commit_share`, otherwise
    /// any of the others.
    pub fn random(rng: &mut fastrand::Rng, commit_share: f64) -> Self {
        if rng.f64() < commit_share {
            ClientPlan::Commit
        } else {
            Self::ALL[rng.usize(1..Self::ALL.len())]
        }
    }
}

/// Runs `plan` on `txn`, pausing up to `max_pause` (random, from `rng`)
/// between steps; returns every call made.
pub async fn drive(
    coordinator: &TransactionCoordinator,
    txn: TransactionId,
    plan: ClientPlan,
    rng: &mut fastrand::Rng,
    max_pause: Duration,
    trace: Option<&Trace>,
) -> Vec<ClientCall> {
    let c = coordinator;
    let mut calls = Vec::new();
    let pause_ms = max_pause.as_millis() as u64;
    if let Some(trace) = trace {
        trace.log(format_args!("client {} runs {plan:?}", txn_label(txn)));
    }
    tokio::time::sleep(pause(rng, pause_ms)).await;
    match plan {
        ClientPlan::Commit => {
            let prepared = prepare(c, txn, &mut calls).await;
            tokio::time::sleep(pause(rng, pause_ms)).await;
            if prepared {
                commit(c, txn, &mut calls).await;
            } else {
                rollback(c, txn, &mut calls).await;
            }
        }
        ClientPlan::RollbackAfterPrepare => {
            prepare(c, txn, &mut calls).await;
            tokio::time::sleep(pause(rng, pause_ms)).await;
            rollback(c, txn, &mut calls).await;
        }
        ClientPlan::RollbackActive => {
            rollback(c, txn, &mut calls).await;
        }
        ClientPlan::AbandonActive => {}
        ClientPlan::AbandonPrepared => {
            prepare(c, txn, &mut calls).await;
        }
        ClientPlan::CommitRegardless => {
            prepare(c, txn, &mut calls).await;
            tokio::time::sleep(pause(rng, pause_ms)).await;
            if !commit(c, txn, &mut calls).await {
                rollback(c, txn, &mut calls).await;
            }
        }
        ClientPlan::RacePrepareRollback => {
            let delay = pause(rng, pause_ms);
            let mut a = Vec::new();
            let mut b = Vec::new();
            tokio::join!(prepare(c, txn, &mut a), async {
                tokio::time::sleep(delay).await;
                rollback(c, txn, &mut b).await
            });
            calls.extend(a);
            calls.extend(b);
        }
        ClientPlan::Duplicate => {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (p1, p2) = tokio::join!(prepare(c, txn, &mut a), prepare(c, txn, &mut b));
            tokio::time::sleep(pause(rng, pause_ms)).await;
            if p1 && p2 {
                tokio::join!(commit(c, txn, &mut a), commit(c, txn, &mut b));
            } else {
                tokio::join!(rollback(c, txn, &mut a), rollback(c, txn, &mut b));
            }
            calls.extend(a);
            calls.extend(b);
        }
        ClientPlan::Impatient => {
            let patience = pause(rng, pause_ms) + Duration::from_millis(1);
            let prepared = record(
                &mut calls,
                ClientOp::Prepare,
                Some(patience),
                c.prepare_transaction(txn),
                ClientResult::Prepare,
            )
            .await;
            let prepared = matches!(
                prepared,
                ClientResult::Prepare(Ok(dtxn::PrepareOutcome::Prepared))
            );
            tokio::time::sleep(pause(rng, pause_ms)).await;
            state(c, txn, &mut calls);
            if prepared || rng.bool() {
                record(
                    &mut calls,
                    ClientOp::Commit,
                    Some(patience),
                    c.commit_transaction(txn),
                    ClientResult::Finish,
                )
                .await;
            }
            tokio::time::sleep(pause(rng, pause_ms)).await;
            state(c, txn, &mut calls);
        }
    }
    if let Some(trace) = trace {
        trace.log(format_args!("client {} done", txn_label(txn)));
    }
    calls
}

fn pause(rng: &mut fastrand::Rng, max_ms: u64) -> Duration {
    Duration::from_millis(rng.u64(0..=max_ms))
}

async fn record<T, F: Future<Output = T>>(
    calls: &mut Vec<ClientCall>,
    op: ClientOp,
    patience: Option<Duration>,
    fut: F,
    wrap: impl FnOnce(T) -> ClientResult,
) -> ClientResult {
    let start = Instant::now();
    let result = match patience {
        Some(p) => match tokio::time::timeout(p, fut).await {
            Ok(r) => wrap(r),
            Err(_) => ClientResult::Cancelled,
        },
        None => wrap(fut.await),
    };
    calls.push(ClientCall {
        op,
        elapsed: start.elapsed(),
        result: result.clone(),
    });
    result
}

async fn prepare(
    c: &TransactionCoordinator,
    txn: TransactionId,
    calls: &mut Vec<ClientCall>,
) -> bool {
    let r = record(
        calls,
        ClientOp::Prepare,
        None,
        c.prepare_transaction(txn),
        ClientResult::Prepare,
    )
    .await;
    matches!(r, ClientResult::Prepare(Ok(dtxn::PrepareOutcome::Prepared)))
}

/// Returns whether the commit call returned an outcome.
async fn commit(
    c: &TransactionCoordinator,
    txn: TransactionId,
    calls: &mut Vec<ClientCall>,
) -> bool {
    let r = record(
        calls,
        ClientOp::Commit,
        None,
        c.commit_transaction(txn),
        ClientResult::Finish,
    )
    .await;
    matches!(r, ClientResult::Finish(Ok(_)))
}

async fn rollback(c: &TransactionCoordinator, txn: TransactionId, calls: &mut Vec<ClientCall>) {
    record(
        calls,
        ClientOp::Rollback,
        None,
        c.rollback_transaction(txn),
        ClientResult::Finish,
    )
    .await;
}

fn state(c: &TransactionCoordinator, txn: TransactionId, calls: &mut Vec<ClientCall>) {
    calls.push(ClientCall {
        op: ClientOp::State,
        elapsed: Duration::ZERO,
        result: ClientResult::State(c.get_transaction_state(txn)),
    });
}

/// Waits until `txn` is Committed or Aborted, polling its state every
/// `poll` (a poll past the deadline rolls it back, like the sweeper would),
/// for at most `limit`. Returns whether it finished.
pub async fn wait_terminal(
    coordinator: &TransactionCoordinator,
    txn: TransactionId,
    poll: Duration,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    loop {
        match coordinator.get_transaction_state(txn) {
            Ok(s) if s.is_terminal() => return true,
            Err(_) => return false,
            Ok(_) => {}
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(poll).await;
    }
}
