//! Executes the core's actions: calls participants under timeouts with
//! panics caught, and feeds each result back as an event.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::entry::{safe_name, Applied, Call, Entry};
use super::Shared;
use crate::core::{Action, CallFailure, Event, TransactionState};
use crate::{CallContext, Phase, TransactionId};

/// The participant calls of one transaction in flight, and the loop that
/// feeds their results into the machine.
///
/// A client call first drives its runner *inline*, in the client's own
/// task, for as long as the calls answer at once
/// ([`drive_ready`](Self::drive_ready)); the first call that would make it
/// wait sends everything left to a spawned task
/// ([`detach`](Self::detach)). So in the common case (every participant
/// answers at once) no task is spawned, and progress never depends on the
/// client future being polled again: a caller that parks its future blocks
/// nobody (PROTOCOL.md rule 14).
pub(crate) struct Runner<F> {
    /// First field, so dropped first: a call's reference to its participant
    /// is never the last while the entry is still held here.
    pending: Pending<F>,
    shared: Arc<Shared>,
    entry: Arc<Entry>,
    /// `perform`, as a pointer so that `F` (its unnameable future type) is
    /// fixed once and more calls can be pushed later.
    perform: fn(Call, TransactionId, Duration, Duration) -> F,
    /// When the core next needs its timer (a phase-2 attempt waiting out
    /// its backoff), as of the last step this runner took.
    wake_at: Option<Instant>,
    /// The timer for `wake_at`, made the first time it is needed.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// What a runner found when it polled.
enum Progress {
    /// Answers wait to be fed to the machine.
    Answers,
    /// The core's timer is due.
    Timer,
    /// Nothing is left to do.
    Idle,
}

/// A runner for what a step of the machine requires.
pub(crate) fn runner(
    shared: &Arc<Shared>,
    entry: &Arc<Entry>,
    applied: Applied,
) -> Runner<impl Future<Output = Event> + Send + 'static> {
    let mut runner = Runner {
        shared: Arc::clone(shared),
        entry: Arc::clone(entry),
        pending: Pending::default(),
        perform,
        wake_at: None,
        timer: None,
    };
    runner.take(applied);
    runner
}

impl<F: Future<Output = Event> + Send + 'static> Runner<F> {
    /// Takes on the calls and the timer a step requires.
    fn take(&mut self, applied: Applied) {
        let config = &self.shared.config;
        for call in applied.calls {
            self.pending.push((self.perform)(
                call,
                self.entry.id,
                config.prepare_timeout,
                config.phase2_timeout,
            ));
        }
        self.wake_at = applied.wake_at;
    }

    /// Feeds call results and timers into the machine until `done(state)`
    /// holds or nothing is left. Cancel safe: a dropped drive loses no call
    /// (they stay in `pending`), no result (results are applied in the same
    /// poll that takes them) and no timer (`wake_at` stays).
    pub async fn drive_until(&mut self, done: impl Fn(TransactionState) -> bool) {
        while !done(self.entry.state()) {
            match std::future::poll_fn(|cx| self.poll_progress(cx, true)).await {
                Progress::Answers => self.feed(),
                Progress::Timer => {
                    let applied = self.entry.timeout(&self.shared);
                    self.take(applied);
                }
                Progress::Idle => return,
            }
        }
    }

    /// Feeds the results of calls that answer at once, without waiting,
    /// until `done(state)` holds, no call is left, or every call left would
    /// wait (a pending timer counts as waiting).
    ///
    /// The calls are polled with a no-op waker: whoever polls `pending`
    /// next (the task [`detach`](Self::detach) spawns) polls every call
    /// left again, with its own waker.
    pub fn drive_ready(&mut self, done: impl Fn(TransactionState) -> bool) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        while !done(self.entry.state()) {
            match self.poll_progress(&mut cx, false) {
                std::task::Poll::Ready(Progress::Answers) => self.feed(),
                _ => return,
            }
        }
    }

    /// Polls the calls still running, then (with `timers`) the core's timer.
    fn poll_progress(
        &mut self,
        cx: &mut std::task::Context<'_>,
        timers: bool,
    ) -> std::task::Poll<Progress> {
        use std::task::Poll;
        if self.pending.poll_all(cx) {
            return Poll::Ready(Progress::Answers);
        }
        if let Some(at) = self.wake_at.filter(|_| timers) {
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_ready() {
                self.wake_at = None;
                return Poll::Ready(Progress::Timer);
            }
        }
        if self.pending.is_empty() && self.wake_at.is_none() {
            Poll::Ready(Progress::Idle)
        } else {
            Poll::Pending
        }
    }

    /// Applies the answers taken, all at once (one lock, one clock
    /// reading), and takes on the calls they require.
    fn feed(&mut self) {
        let applied = self.entry.apply_all(self.pending.answers(), &self.shared);
        if let Err(e) = &applied.result {
            // Stale answers cannot occur here (each call is outstanding
            // exactly once) but are harmless; anything else is a core bug.
            tracing::error!(txn = %self.entry.id, error = %e, "core refused a call result");
        }
        self.take(applied);
    }

    /// Runs the calls still pending and the timer to the end in a spawned
    /// task.
    pub fn detach(mut self, phase: &'static str) {
        if self.pending.is_empty() && self.wake_at.is_none() {
            return;
        }
        let span = tracing::debug_span!("dtxn", txn = %self.entry.id, phase);
        let (shared, id) = (Arc::clone(&self.shared), self.entry.id);
        let task = async move { self.drive_until(|_| false).await }.instrument(span);
        match shared.runtime() {
            Some(handle) => {
                handle.spawn(task);
            }
            // Only when the last handle is dropped outside any runtime:
            // dropping the task abandons its calls (see `Drop`), and what
            // follows waits for the next runtime the coordinator is used on.
            None => tracing::warn!(txn = %id, "no tokio runtime to run participant calls now"),
        }
    }
}

impl<F> Drop for Runner<F> {
    /// A runner is dropped with calls pending only when its task was
    /// dropped unfinished: its runtime shut down (a coordinator that
    /// outlives a `#[tokio::test]`, say). Those calls will never answer, so
    /// the machine is told they failed ([`CallFailure::Abandoned`]), and the
    /// retries or rollbacks that follow wait for a live runtime
    /// ([`Shared::abandoned`]). Nothing is left stuck in flight.
    fn drop(&mut self) {
        if self.pending.is_empty() && self.wake_at.is_none() {
            return;
        }
        // The call futures hold participant futures: user code.
        super::entry::drop_user(std::mem::take(&mut self.pending));
        self.shared.abandoned(&self.entry);
    }
}

/// The participant calls of a runner, each boxed once, and their answers
/// until they are applied.
///
/// Every poll polls every call still running, in order, all under the one
/// waker of whoever polls: a wake-up from any call re-polls them all. That
/// is O(calls running) per wake-up, against a `FuturesUnordered`'s
/// per-call queue node, reference count and wake-up bookkeeping, which
/// cost more than they save at these sizes (at most `max_participants`
/// calls, most answering on their first poll). Answers stay in their
/// slot until applied, so a runner allocates one `Vec` and nothing per
/// answer.
pub(crate) struct Pending<F> {
    slots: Vec<Slot<F>>,
    running: usize,
    answered: usize,
}

enum Slot<F> {
    Running(Pin<Box<F>>),
    Answered(Event),
    Done,
}

impl<F> Default for Pending<F> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            running: 0,
            answered: 0,
        }
    }
}

impl<F> Pending<F> {
    /// No call is running (answers may wait to be applied).
    fn is_empty(&self) -> bool {
        self.running == 0
    }

    /// Takes the answers, in call order.
    fn answers(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.answered = 0;
        self.slots.iter_mut().filter_map(|slot| match slot {
            Slot::Answered(_) => match std::mem::replace(slot, Slot::Done) {
                Slot::Answered(event) => Some(event),
                _ => None,
            },
            _ => None,
        })
    }
}

impl<F: Future<Output = Event>> Pending<F> {
    fn push(&mut self, call: F) {
        if self.running == 0 && self.answered == 0 {
            // Reuse the room of finished calls.
            self.slots.clear();
        }
        self.slots.push(Slot::Running(Box::pin(call)));
        self.running += 1;
    }

    /// Polls every call still running once; returns whether any answer
    /// waits to be applied.
    fn poll_all(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        for slot in &mut self.slots {
            let Slot::Running(call) = slot else { continue };
            if let std::task::Poll::Ready(event) = call.as_mut().poll(cx) {
                // `perform` dropped the participant's `Arc` (user code)
                // before answering: dropping the finished future runs none.
                *slot = Slot::Answered(event);
                self.running -= 1;
                self.answered += 1;
            }
        }
        self.answered > 0
    }
}

/// Performs one participant call and turns its result into an event.
async fn perform(
    mut call: Call,
    txn: TransactionId,
    prepare_timeout: Duration,
    phase2_timeout: Duration,
) -> Event {
    let event = call_participant(&mut call, txn, prepare_timeout, phase2_timeout).await;
    // The participant may be the last reference (its entry forgotten while
    // the call ran): its `Drop` is user code.
    super::entry::drop_user(call.participant);
    event
}

async fn call_participant(
    call: &mut Call,
    txn: TransactionId,
    prepare_timeout: Duration,
    phase2_timeout: Duration,
) -> Event {
    let (phase, attempt) = match call.action {
        Action::Prepare { .. } => (Phase::Prepare, 1),
        Action::Commit { attempt, .. } => (Phase::Commit, attempt),
        Action::Rollback { attempt, .. } => (Phase::Rollback, attempt),
    };
    let cx = CallContext::new(txn, phase)
        .with_attempt(attempt)
        .with_payload(call.payload.take());
    let p = &call.participant;
    let event = match call.action {
        Action::Prepare { participant } => Event::PrepareDone {
            participant,
            result: guarded(prepare_timeout, p.prepare_with(&cx))
                .await
                .and_then(|r| r.map_err(CallFailure::Error)),
        },
        Action::Commit { participant, .. } | Action::Rollback { participant, .. } => {
            let phase2 = if phase == Phase::Commit {
                p.commit_with(&cx)
            } else {
                p.rollback_with(&cx)
            };
            Event::Phase2Done {
                participant,
                attempt,
                result: guarded(phase2_timeout, phase2)
                    .await
                    .and_then(|r| r.map_err(CallFailure::Error)),
                // Judged by the core, from the times it is fed.
                retry_budget_spent: false,
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
///
/// The timer is armed only if the call does not answer on its first poll:
/// most calls answer at once, and for them reading the clock and
/// registering a timer would be pure cost. The timeout then runs from that
/// first poll, which is when the call started.
async fn guarded<T>(timeout: Duration, call: impl Future<Output = T>) -> Result<T, CallFailure> {
    let mut call = std::pin::pin!(AssertUnwindSafe(call).catch_unwind());
    let first = std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
        std::task::Poll::Ready(answer) => std::task::Poll::Ready(Some(answer)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await;
    let answer = match first {
        Some(answer) => answer,
        None => match tokio::time::timeout(timeout, call).await {
            Err(_elapsed) => return Err(CallFailure::TimedOut),
            Ok(answer) => answer,
        },
    };
    answer.map_err(|payload| CallFailure::Panicked(panic_message(&*payload)))
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
