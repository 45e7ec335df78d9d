//! The background sweeper: rolls back transactions past their deadline
//! that no client call touched, forgets finished transactions after their
//! retention, and resumes calls abandoned with a runtime.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::time::Instant;

use super::entry::{self, lock};
use super::{deadline_after, exec, Shared, SWEEPING};
use crate::core::{Event, TransactionState};

impl Shared {
    /// Runs the calls queued by [`abandoned`](Self::abandoned), and the
    /// timers of their transactions.
    fn adopt_orphans(self: &Arc<Self>) {
        let orphans = std::mem::take(&mut *lock(&self.orphans));
        for (entry, calls, log) in orphans {
            tracing::info!(txn = %entry.id, "resuming participant calls abandoned with a runtime");
            let applied = entry::Applied {
                calls,
                log,
                wake_at: entry.wake_at(),
                result: Ok(()),
            };
            exec::runner(self, &entry, applied, false).detach("resume");
        }
    }

    /// Rolls back expired Active/Prepared transactions (at shutdown, tells
    /// every undecided one: the core rolls back those Active or Prepared,
    /// and those Preparing once phase 1 ends) and forgets old finished ones.
    /// Returns when it next has work: the earliest deadline still to come of
    /// an undecided transaction, or the next finished one to forget.
    pub(super) fn sweep(self: &Arc<Self>, shutting_down: bool) -> Option<Instant> {
        self.adopt_orphans();
        let now = Instant::now();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for shard in self.shards.iter() {
            due.extend(
                lock(shard)
                    .values()
                    .filter(|e| {
                        let state = e.state();
                        if shutting_down {
                            return state.decision().is_none();
                        }
                        if state.decision().is_none() && e.deadline > now {
                            next = Some(next.map_or(e.deadline, |n| n.min(e.deadline)));
                        }
                        // One still Preparing past its deadline is rolled
                        // back by its core once phase 1 ends.
                        e.deadline <= now
                            && matches!(
                                state,
                                TransactionState::Active | TransactionState::Prepared
                            )
                    })
                    .cloned(),
            );
        }
        for entry in due {
            let applied = if shutting_down {
                entry.apply(Event::Shutdown, self)
            } else {
                entry.timeout(self)
            };
            if entry.state().decision().is_some() {
                tracing::info!(txn = %entry.id, shutting_down, "rolled back an abandoned transaction");
            }
            self.run_detached(&entry, applied);
        }
        let mut forget = Vec::new();
        {
            let mut finished = lock(&self.finished);
            while let Some(&(at, id)) = finished.front() {
                if now.saturating_duration_since(at) < self.config.retention_period {
                    let expires = deadline_after(at, self.config.retention_period);
                    next = Some(next.map_or(expires, |n| n.min(expires)));
                    break;
                }
                finished.pop_front();
                forget.push(id);
            }
        }
        self.forget(forget);
        next
    }
}

/// Held by the sweeper task: clears [`Shared::sweeper_running`] (and the
/// runtime it ran on) when the task ends or is dropped with its runtime.
pub(super) struct SweeperRunning(pub(super) Weak<Shared>);

impl Drop for SweeperRunning {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            // The runtime first: a sweeper started after the flag clears
            // stores its own.
            *lock(&shared.runtime) = None;
            shared.sweeper_running.store(false, Ordering::Release);
        }
    }
}

/// The background task: sleeps until the next deadline or retention expiry
/// (never sooner than `sweep_interval` after its last sweep, so that many
/// deadlines close together cost one sweep), or until woken by one earlier
/// than planned, an orphaned call or a shutdown; sweeps; and stops when the
/// coordinator is dropped (the drop itself rolls back what no client can
/// finish). An idle coordinator's sweeper sleeps until woken.
pub(super) async fn sweeper(shared: Weak<Shared>, _running: SweeperRunning) {
    let Some(interval) = shared.upgrade().map(|s| s.config.sweep_interval) else {
        return;
    };
    loop {
        let (notified, wake_at) = match shared.upgrade() {
            Some(s) if s.shutdown.load(Ordering::Acquire) => return,
            Some(s) => {
                // While it sweeps, any new deadline wakes it again after:
                // the sweep may have missed its transaction.
                s.sweeper_wakes.store(SWEEPING, Ordering::Release);
                // No user code runs in a sweep (participants are dropped
                // with their panics caught); should anything panic all the
                // same, deadlines must still be enforced next time.
                let swept =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.sweep(false)));
                let next = match swept {
                    Ok(next) => next,
                    Err(_) => {
                        tracing::error!("a sweep panicked; the sweeper goes on");
                        Some(Instant::now())
                    }
                };
                let earliest = deadline_after(Instant::now(), interval);
                let wake_at = next.map(|at| at.max(earliest));
                s.sweeper_wakes.store(
                    wake_at.map_or(u64::MAX, |at| s.since_epoch(at)),
                    Ordering::Release,
                );
                // Registered before sleeping so a wake-up is not missed.
                let s2 = Arc::clone(&s);
                drop(s);
                (async move { s2.wake_sweeper.notified().await }, wake_at)
            }
            None => return,
        };
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {}
            _ = notified => {}
        }
    }
}
