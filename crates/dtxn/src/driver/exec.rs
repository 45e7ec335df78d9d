//! Executes the core's actions: calls participants under timeouts with
//! panics caught, and feeds each result back as an event.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tracing::Instrument;

use super::entry::{safe_name, Call, Entry};
use super::Shared;
use crate::core::{Action, CallFailure, Event, TransactionState};
use crate::TransactionId;

/// Spawns a task that performs `calls` and keeps feeding their results (and
/// the calls those results require, such as retries) into the machine until
/// none is left. The task owns everything it needs, so it completes even if
/// the client future that started it is dropped.
pub(crate) fn spawn_calls(
    shared: &Arc<Shared>,
    entry: &Arc<Entry>,
    calls: Vec<Call>,
    phase: &'static str,
) {
    if calls.is_empty() {
        return;
    }
    let span = tracing::debug_span!("dtxn", txn = %entry.id, phase);
    let task = run(Arc::clone(shared), Arc::clone(entry), calls).instrument(span);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(task);
        }
        Err(_) => match shared.runtime.get() {
            Some(handle) => {
                handle.spawn(task);
            }
            // Unreachable in practice: calls only arise after an async call
            // or the sweeper, both of which run inside a runtime.
            None => tracing::error!(txn = %entry.id, "no tokio runtime to run participant calls"),
        },
    }
}

async fn run(shared: Arc<Shared>, entry: Arc<Entry>, calls: Vec<Call>) {
    let mut pending = FuturesUnordered::new();
    for call in calls {
        pending.push(perform(
            call,
            entry.id,
            shared.config.prepare_timeout,
            shared.config.phase2_timeout,
        ));
    }
    while let Some(event) = pending.next().await {
        let applied = entry.apply(event, false, &shared.config.retry);
        if let Err(e) = &applied.result {
            // Stale answers cannot occur here (each call is outstanding
            // exactly once) but are harmless; anything else is a core bug.
            tracing::error!(txn = %entry.id, error = %e, "core refused a call result");
        }
        shared.after_apply(&entry, applied.changed_to);
        let mut calls = applied.calls;
        if applied.changed_to == Some(TransactionState::Prepared) {
            // The deadline and shutdown are ignored while Preparing; deliver
            // them now that phase 1 has ended, or nobody ever will.
            if let Some(event) = shared.pending_abandonment(&entry) {
                let again = entry.apply(event, false, &shared.config.retry);
                shared.after_apply(&entry, again.changed_to);
                calls.extend(again.calls);
            }
        }
        for call in calls {
            pending.push(perform(
                call,
                entry.id,
                shared.config.prepare_timeout,
                shared.config.phase2_timeout,
            ));
        }
    }
}

/// Performs one participant call and turns its result into an event.
async fn perform(
    call: Call,
    txn: TransactionId,
    prepare_timeout: Duration,
    phase2_timeout: Duration,
) -> Event {
    if !call.delay.is_zero() {
        tokio::time::sleep(call.delay).await;
    }
    let p = &call.participant;
    let event = match call.action {
        Action::Prepare { participant } => Event::PrepareDone {
            participant,
            result: guarded(prepare_timeout, async { p.try_prepare(txn).await })
                .await
                .and_then(|r| r.map_err(CallFailure::Error)),
        },
        Action::Commit {
            participant,
            attempt,
        }
        | Action::Rollback {
            participant,
            attempt,
        } => {
            let commit = matches!(call.action, Action::Commit { .. });
            let phase2 = async {
                if commit {
                    p.commit(txn).await
                } else {
                    p.rollback(txn).await
                }
            };
            Event::Phase2Done {
                participant,
                attempt,
                result: guarded(phase2_timeout, phase2)
                    .await
                    .and_then(|r| r.map_err(CallFailure::Error)),
            }
        }
    };
    match &event {
        Event::PrepareDone {
            result: Err(failure),
            ..
        } => {
            tracing::debug!(%txn, participant = %safe_name(&**p), %failure, "prepare failed");
        }
        Event::Phase2Done {
            result: Err(failure),
            attempt,
            ..
        } => {
            tracing::info!(%txn, participant = %safe_name(&**p), attempt, %failure, "phase-2 call failed");
        }
        _ => {}
    }
    event
}

/// Runs a participant future under `timeout`, catching panics.
async fn guarded<T>(timeout: Duration, call: impl Future<Output = T>) -> Result<T, CallFailure> {
    match tokio::time::timeout(timeout, AssertUnwindSafe(call).catch_unwind()).await {
        Err(_elapsed) => Err(CallFailure::TimedOut),
        Ok(Err(payload)) => Err(CallFailure::Panicked(panic_message(&*payload))),
        Ok(Ok(value)) => Ok(value),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}
