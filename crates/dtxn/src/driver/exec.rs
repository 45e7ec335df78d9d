//! Executes the core's actions: calls participants under timeouts with
//! panics caught, and feeds each result back as an event.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument;

use super::call::{self, InFlight, Started};
use super::entry::{Applied, Entry, LogWrite, CALLS};
use super::scratch;
use super::Shared;
use crate::core::{CallFailure, Event, TransactionState};
use crate::log::{LogError, LogFuture};
use crate::ParticipantError;

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
///
/// It holds the coordinator and the transaction through `H`: borrowed
/// ([`Lent`]) while it runs in the code that made it, so a client call
/// that finishes inline touches no reference count; owned ([`Owned`])
/// once it is sent to a task.
pub(crate) struct Runner<H: Hold> {
    /// First field, so dropped first: a call's reference to its participant
    /// is never the last while the entry is still held here.
    pending: Pending,
    hold: H,
    /// When the core next needs its timer (a phase-2 attempt waiting out
    /// its backoff), as of the last step this runner took.
    wake_at: Option<Instant>,
    /// The timer for `wake_at`, made the first time it is needed.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether calls are polled as they start: only where the participants'
    /// futures may be polled (in a client's future or this runner's task,
    /// not in plain code that merely hands calls to a task).
    inline: bool,
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

/// How a runner holds the coordinator and its transaction.
pub(crate) trait Hold {
    fn shared(&self) -> &Arc<Shared>;
    fn entry(&self) -> &Arc<Entry>;
}

/// Borrowed from the code that made the runner.
pub(crate) struct Lent<'a>(&'a Arc<Shared>, &'a Arc<Entry>);

/// Owned, by a runner in a task of its own.
pub(crate) struct Owned(Arc<Shared>, Arc<Entry>);

impl Hold for Lent<'_> {
    fn shared(&self) -> &Arc<Shared> {
        self.0
    }
    fn entry(&self) -> &Arc<Entry> {
        self.1
    }
}

impl Hold for Owned {
    fn shared(&self) -> &Arc<Shared> {
        &self.0
    }
    fn entry(&self) -> &Arc<Entry> {
        &self.1
    }
}

/// A runner for what a step of the machine requires; `inline`: see
/// [`Runner::inline`].
pub(crate) fn runner<'a>(
    shared: &'a Arc<Shared>,
    entry: &'a Arc<Entry>,
    applied: Applied,
    inline: bool,
) -> Runner<Lent<'a>> {
    let mut runner = Runner {
        hold: Lent(shared, entry),
        pending: Pending::default(),
        wake_at: None,
        timer: None,
        inline,
    };
    runner.take(applied);
    runner
}

impl<H: Hold> Runner<H> {
    /// Takes on the calls and the timer a step requires.
    fn take(&mut self, mut applied: Applied) {
        let config = &self.hold.shared().config;
        if (!applied.calls.is_empty() || applied.log.is_some()) && !self.hold.shared().may_act() {
            // Fenced (PROTOCOL.md rule 17): the transaction's new owner
            // makes these calls.
            tracing::debug!(txn = %self.hold.entry().id, calls = applied.calls.len(), "not sent: the lease is lost");
            applied.calls.clear();
            applied.log = None;
        }
        // Inline, each call is polled once as it starts, with a no-op
        // waker: one still pending is polled again, with a real waker, by
        // whoever polls this runner next (`drive_ready` or the task
        // `detach` spawns; `take` is only ever followed by one of them).
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for call in applied.calls.drain(..) {
            self.pending.push(call::start(
                self.hold.entry(),
                call,
                config.prepare_timeout,
                config.phase2_timeout,
                self.inline.then_some(&mut cx),
            ));
        }
        if let Some(LogWrite { attempt, record }) = applied.log.take() {
            if attempt == 1 {
                crate::failpoint::reach!(crate::failpoint::COMMIT_DECIDED);
            }
            let write = match &self.hold.shared().log {
                Some(log) => log.log_commit(record),
                None => Box::pin(std::future::ready(Err(LogError::Closed))),
            };
            self.pending.log = Some((attempt, write));
        }
        scratch::give(&CALLS, applied.calls);
        self.wake_at = applied.wake_at;
    }

    /// Feeds call results and timers into the machine until `done(state)`
    /// holds or nothing is left. Cancel safe: a dropped drive loses no call
    /// (they stay in `pending`), no result (results are applied in the same
    /// poll that takes them) and no timer (`wake_at` stays).
    pub async fn drive_until(&mut self, done: impl Fn(TransactionState) -> bool) {
        while !done(self.hold.entry().state()) {
            match std::future::poll_fn(|cx| self.poll_progress(cx, true)).await {
                Progress::Answers => self.feed(),
                Progress::Timer => {
                    let applied = self.hold.entry().timeout(self.hold.shared());
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
        while !done(self.hold.entry().state()) {
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
        if self.pending.poll_all(cx, timers) {
            return Poll::Ready(Progress::Answers);
        }
        if let Some(at) = self.wake_at.filter(|_| timers) {
            if poll_timer(&mut self.timer, at, cx) {
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
        let applied = self
            .hold
            .entry()
            .apply_all(self.pending.answers(), self.hold.shared());
        if let Err(e) = &applied.result {
            // Stale answers cannot occur here (each call is outstanding
            // exactly once) but are harmless; anything else is a core bug.
            tracing::error!(txn = %self.hold.entry().id, error = %e, "core refused a call result");
        }
        self.take(applied);
    }

    /// Runs the calls still pending and the timer to the end in a spawned
    /// task. Answers already in (calls that answered as they started) are
    /// applied here first: a task is spawned only for calls that wait.
    pub fn detach(mut self, phase: &'static str) {
        while self.inline && self.pending.has_answers() {
            self.feed();
        }
        // Not inline, answers (calls that failed to start) go to the task.
        if self.pending.is_empty() && !self.pending.has_answers() && self.wake_at.is_none() {
            return;
        }
        let id = self.hold.entry().id;
        let span = tracing::debug_span!("dtxn", txn = %id, phase);
        let shared = Arc::clone(self.hold.shared());
        // What is left moves to a runner that owns its transaction; this
        // one is left empty, so dropping it does nothing.
        let mut owned = Runner {
            pending: std::mem::take(&mut self.pending),
            hold: Owned(Arc::clone(&shared), Arc::clone(self.hold.entry())),
            wake_at: self.wake_at.take(),
            timer: self.timer.take(),
            inline: true,
        };
        drop(self);
        let task = async move { owned.drive_until(|_| false).await }.instrument(span);
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

impl<H: Hold> Drop for Runner<H> {
    /// A runner is dropped with calls pending only when its task was
    /// dropped unfinished: its runtime shut down (a coordinator that
    /// outlives a `#[tokio::test]`, say). Those calls will never answer, so
    /// the machine is told they failed ([`CallFailure::Abandoned`](crate::core::CallFailure::Abandoned)), and the
    /// retries or rollbacks that follow wait for a live runtime
    /// ([`Shared::abandoned`]). Nothing is left stuck in flight.
    fn drop(&mut self) {
        // Answers not yet applied count as calls in flight: they are
        // failed as abandoned (and retried) like those.
        if self.pending.is_empty() && !self.pending.has_answers() && self.wake_at.is_none() {
            return;
        }
        // The call futures hold participant futures: user code.
        super::entry::drop_user(std::mem::take(&mut self.pending));
        self.hold.shared().abandoned(self.hold.entry());
    }
}

/// The participant calls of a runner, each polled in place, and their
/// answers until they are applied.
///
/// Every poll polls every call still running, in order, all under the one
/// waker of whoever polls: a wake-up from any call re-polls them all. That
/// is O(calls running) per wake-up, against a `FuturesUnordered`'s
/// per-call queue node, reference count and wake-up bookkeeping, which
/// cost more than they save at these sizes (at most `max_participants`
/// calls, most answering on their first poll). A call that answers as it
/// starts never takes a slot: its answer goes straight to `answers`. Both
/// lists are thread-local buffers reused from runner to runner (see
/// [`scratch`]), so a runner allocates nothing per call or answer.
#[derive(Default)]
pub(crate) struct Pending {
    /// The calls found pending; `None` once answered.
    calls: Vec<Option<InFlight>>,
    /// How many of `calls` are still running.
    running: usize,
    /// Answers waiting to be applied, in the order they came.
    answers: Vec<Event>,
    /// One timer for all the calls: armed for the earliest timeout of the
    /// calls found pending (each runs from that call's first poll).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The write of the decision log under way (its attempt).
    log: Option<(u32, LogFuture<()>)>,
}

thread_local! {
    /// Runners' lists of pending calls (see [`scratch`]).
    static CALLS_PENDING: Cell<Vec<Option<InFlight>>> = const { Cell::new(Vec::new()) };
    /// Runners' lists of answers (see [`scratch`]).
    static ANSWERS: Cell<Vec<Event>> = const { Cell::new(Vec::new()) };
}

/// The event that answers the decision-log write `attempt`.
fn logged(attempt: u32, result: Result<(), LogError>) -> Event {
    match &result {
        Ok(()) => crate::failpoint::reach!(crate::failpoint::COMMIT_LOGGED),
        Err(e) => {
            tracing::warn!(attempt, error = %e, "the Commit decision could not be logged; writing it again after a backoff")
        }
    }
    Event::CommitLogged {
        attempt,
        result: result.map_err(|e| CallFailure::Error(ParticipantError::transient(e.to_string()))),
    }
}

impl Pending {
    /// No call or log write is running (answers may wait to be applied).
    fn is_empty(&self) -> bool {
        self.running == 0 && self.log.is_none()
    }

    /// Whether answers wait to be applied.
    fn has_answers(&self) -> bool {
        !self.answers.is_empty()
    }

    /// Takes the answers, in the order they came.
    fn answers(&mut self) -> std::vec::Drain<'_, Event> {
        self.answers.drain(..)
    }

    /// Keeps an answer until it is applied.
    fn answer(&mut self, event: Event) {
        keep(&mut self.answers, event);
    }

    /// Adds a started call, or the answer of one that answered at once or
    /// failed to start.
    fn push(&mut self, started: Started) {
        match started {
            Started::Answered(answer) => self.answer(answer),
            Started::Pending(call) => {
                if self.running == 0 {
                    // Reuse the room of finished calls.
                    self.calls.clear();
                }
                if self.calls.capacity() == 0 {
                    self.calls = scratch::take(&CALLS_PENDING);
                }
                self.calls.push(Some(call));
                self.running += 1;
            }
        }
    }

    /// Polls the decision-log write; once it ends, its answer waits with
    /// the calls' answers. It has no timeout of ours: the log's backend
    /// bounds its operations.
    fn poll_log(&mut self, cx: &mut std::task::Context<'_>) {
        let Some((attempt, write)) = &mut self.log else {
            return;
        };
        let polled =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| write.as_mut().poll(cx)));
        let result = match polled {
            Ok(std::task::Poll::Pending) => return,
            Ok(std::task::Poll::Ready(result)) => result,
            Err(_) => Err(LogError::Backend {
                message: "the decision log panicked".to_owned(),
            }),
        };
        let answer = logged(*attempt, result);
        self.log = None;
        self.answer(answer);
    }

    /// Polls every call still running once, and (with `arm_timer`) the
    /// timer of the earliest timeout among those pending, timing out every
    /// call whose timeout has passed when it fires; returns whether any
    /// answer waits to be applied.
    fn poll_all(&mut self, cx: &mut std::task::Context<'_>, arm_timer: bool) -> bool {
        let mut earliest: Option<Instant> = None;
        if self.log.is_some() {
            self.poll_log(cx);
        }
        if self.running == 0 {
            return self.has_answers();
        }
        for slot in &mut self.calls {
            let Some(call) = slot else { continue };
            match call.poll(cx) {
                std::task::Poll::Ready(event) => {
                    if let Some(call) = slot.take() {
                        call.finish();
                    }
                    self.running -= 1;
                    keep(&mut self.answers, event);
                }
                std::task::Poll::Pending => {
                    earliest = match (earliest, call.deadline()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        let Some(at) = earliest.filter(|_| arm_timer) else {
            return self.has_answers();
        };
        if poll_timer(&mut self.timer, at, cx) {
            let now = Instant::now();
            for slot in &mut self.calls {
                let overdue = slot
                    .as_ref()
                    .is_some_and(|call| call.deadline().is_some_and(|d| d <= now));
                if let Some(call) = slot.take_if(|_| overdue) {
                    let event = call.time_out();
                    self.running -= 1;
                    keep(&mut self.answers, event);
                }
            }
        }
        self.has_answers()
    }
}

/// Adds `event` to a runner's answers (a field of its own, so that it can
/// be added to while the calls are iterated), taking a reused buffer first.
fn keep(answers: &mut Vec<Event>, event: Event) {
    if answers.capacity() == 0 {
        *answers = scratch::take(&ANSWERS);
    }
    answers.push(event);
}

impl Drop for Pending {
    /// Calls dropped unfinished (their runner's task dropped with its
    /// runtime): each future before its participant, panics caught.
    fn drop(&mut self) {
        if self.running > 0 {
            for call in self.calls.iter_mut().filter_map(Option::take) {
                call.finish();
            }
        }
        if self.calls.capacity() > 0 {
            self.calls.clear();
            scratch::give(&CALLS_PENDING, std::mem::take(&mut self.calls));
        }
        if self.answers.capacity() > 0 {
            self.answers.clear();
            scratch::give(&ANSWERS, std::mem::take(&mut self.answers));
        }
    }
}

/// Polls `timer`, made or moved to fire `at`: whether it has fired.
fn poll_timer(
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    at: Instant,
    cx: &mut std::task::Context<'_>,
) -> bool {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
    if timer.deadline() != at {
        timer.as_mut().reset(at);
    }
    timer.as_mut().poll(cx).is_ready()
}
