//! One participant call in flight, polled in place.
//!
//! A call is the participant's own future (the one `async_trait` boxes)
//! and nothing around it: no box of ours, no queue node and no timer of its
//! own (the runner keeps one timer for all its calls, armed for the
//! earliest timeout of those found pending). Calls that answer on their
//! first poll, the common case, cost the participant's allocation and
//! nothing else.
//!
//! The trait's futures borrow the participant and the [`CallContext`]
//! (`prepare_with(&self, cx: &CallContext)`), yet a call must be able to
//! outlive the caller that first polled it (PROTOCOL.md rule 14): it is
//! stored beside what keeps what it borrows alive — the transaction's
//! entry, which holds the participant and the contexts of first calls, and
//! the context of any other call — which is the one use of `unsafe` in the
//! crate.
//! Measured (docs/PERFORMANCE.md): boxing each call in an owned future of
//! our own cost two allocations per participant per transaction and a
//! 450-byte copy per call.

#![allow(unsafe_code)]

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use super::entry::{drop_user, safe_name, Call, Entry};
use crate::core::{Action, CallFailure, Event};
use crate::participant::{start_prepare, PrepareCall};
use crate::{CallContext, Participant, ParticipantError, Phase, PreparedResult, TransactionId};

type Boxed<T> = Pin<Box<dyn Future<Output = Result<T, ParticipantError>> + Send>>;

/// The participant's future.
enum Answer {
    /// `prepare` itself (see [`start_prepare`]).
    Vote(Pin<Box<dyn Future<Output = PreparedResult> + Send>>),
    Prepare(Boxed<PreparedResult>),
    Phase2(Boxed<()>),
}

/// A participant of an entry, borrowed from the entry's list for a call.
///
/// Calls used to hold a clone of the participant's `Arc`; but every
/// transaction shares the same participant objects, so cloning and
/// releasing their reference counts on every call made the two cores fight
/// over those cache lines. An entry never removes a participant from its
/// list before it is dropped, so a call that keeps its entry alive (every
/// `InFlight` does) can borrow the participant instead.
pub(crate) struct Borrowed(NonNull<dyn Participant>);

impl Borrowed {
    /// Borrows the participant behind `arc`, an element of an entry's
    /// participant list. Dereferenced only by [`start`], which is given
    /// that entry.
    pub fn of(arc: &Arc<dyn Participant>) -> Self {
        Self(NonNull::from(&**arc))
    }
}

// SAFETY: a `Borrowed` is a shared reference to a `dyn Participant`, which
// is `Send + Sync` (the trait requires both); it is only dereferenced as a
// shared reference.
unsafe impl Send for Borrowed {}
// SAFETY: as for `Send`.
unsafe impl Sync for Borrowed {}

/// What keeps a call's [`CallContext`] alive at a fixed address, besides
/// the entry.
enum OwnContext {
    /// None: the entry holds the contexts of first attempts without a
    /// payload (most calls), so no allocation per call.
    None,
    /// A context of its own (a retry, or a participant with a payload).
    Own(Arc<CallContext>),
}

/// A participant call in flight.
///
/// Fields drop in declaration order: `answer`, which borrows `participant`
/// and the context, goes first.
pub(crate) struct InFlight {
    answer: Answer,
    /// When the call was first found pending: its timeout runs from then.
    started: Option<Instant>,
    timeout: Duration,
    action: Action,
    txn: TransactionId,
    /// Borrowed from `entry`'s list.
    participant: &'static dyn Participant,
    _context: OwnContext,
    /// Keeps the participant and the first-call contexts alive.
    entry: Arc<Entry>,
}

/// A call just started.
pub(crate) enum Started {
    /// It answered on its first poll (or failed to start): its future is
    /// already dropped.
    Answered(Event),
    /// It is pending: polled again by whoever polls its runner.
    Pending(InFlight),
}

/// Starts `call`: asks the participant for its future and, given a
/// `waker`, polls it once (user code both, so a panic is caught and
/// becomes the call's answer).
///
/// A call that answers on that first poll, the common case, ends here:
/// its future is dropped before the next call's is made (so a phase's
/// futures reuse one allocation's room rather than being all alive at
/// once), and nothing is kept for it, not even a reference to its entry.
pub(crate) fn start(
    entry: &Arc<Entry>,
    call: Call,
    prepare_timeout: Duration,
    phase2_timeout: Duration,
    waker: Option<&mut Context<'_>>,
) -> Started {
    let Call {
        participant,
        action,
        payload,
    } = call;
    let (phase, attempt, timeout) = match action {
        Action::Prepare { .. } => (Phase::Prepare, 1, prepare_timeout),
        Action::Commit { attempt, .. } => (Phase::Commit, attempt, phase2_timeout),
        Action::Rollback { attempt, .. } => (Phase::Rollback, attempt, phase2_timeout),
        Action::LogCommit { attempt } => {
            let failure = CallFailure::Error(ParticipantError::permanent(
                "internal: a decision-log write was routed to a participant",
            ));
            tracing::error!(txn = %entry.id, attempt, "{failure}");
            return Started::Answered(Event::CommitLogged {
                attempt,
                result: Err(failure),
            });
        }
    };
    let owner = if attempt == 1 && payload.is_none() {
        OwnContext::None
    } else {
        OwnContext::Own(Arc::new(
            CallContext::new(entry.id, phase)
                .with_attempt(attempt)
                .with_payload(payload),
        ))
    };
    let context: *const CallContext = match &owner {
        OwnContext::None => entry.context(phase),
        OwnContext::Own(context) => Arc::as_ptr(context),
    };
    // SAFETY: the participant is an element of `entry`'s participant list
    // (`Borrowed::of` is only made from one, by `Entry::step`), which keeps
    // every participant until the entry itself is dropped; the context is
    // in `entry` or in `owner`. Until this function returns, the caller's
    // `entry` and the local `owner` keep both alive, and an answer found
    // at once is dropped before `owner`. Otherwise the returned `InFlight`
    // holds both `Arc`s (`entry`, `_context`) for as long as `answer`, the
    // only thing that holds the references, exists: `answer` is declared
    // first, so it is dropped first, and neither `Arc` is released,
    // replaced or moved out of before that (`finish` drops `answer` first
    // too). Moving an `InFlight` moves the `Arc` pointers, not what they
    // point to, and everything is only ever read through shared
    // references.
    let (p, cx): (&'static dyn Participant, &'static CallContext) =
        unsafe { (participant.0.as_ref(), &*context) };
    let made = std::panic::catch_unwind(AssertUnwindSafe(|| match phase {
        Phase::Prepare => match start_prepare(p, cx) {
            PrepareCall::Vote(vote) => Answer::Vote(vote),
            PrepareCall::Call(call) => Answer::Prepare(call),
        },
        Phase::Commit => Answer::Phase2(p.commit_with(cx)),
        Phase::Rollback => Answer::Phase2(p.rollback_with(cx)),
    }));
    let mut answer = match made {
        Ok(answer) => answer,
        Err(panic) => {
            let failure = CallFailure::Panicked(panic_message(&*panic));
            drop_user(panic);
            return Started::Answered(failed(entry.id, p, &action, failure));
        }
    };
    let mut started = None;
    if let Some(waker) = waker {
        let polled = poll_answer(&mut answer, &action, entry.id, p, waker, &mut started);
        if let Poll::Ready(event) = polled {
            drop_user(answer);
            drop(owner);
            return Started::Answered(event);
        }
    }
    Started::Pending(InFlight {
        answer,
        started,
        timeout,
        action,
        txn: entry.id,
        participant: p,
        _context: owner,
        entry: Arc::clone(entry),
    })
}

/// Polls a call's future, catching a panic: `Ready` with the event that
/// answers it. The first time it is found pending, its start is noted.
fn poll_answer(
    answer: &mut Answer,
    action: &Action,
    txn: TransactionId,
    p: &dyn Participant,
    cx: &mut Context<'_>,
    started: &mut Option<Instant>,
) -> Poll<Event> {
    match (answer, action) {
        (Answer::Vote(f), &Action::Prepare { participant }) => {
            guarded(f, cx, started).map(|result| voted(txn, p, participant, result))
        }
        (Answer::Prepare(f), &Action::Prepare { participant }) => {
            guarded(f, cx, started).map(|result| voted(txn, p, participant, flatten(result)))
        }
        (
            Answer::Phase2(f),
            &Action::Commit {
                participant,
                attempt,
            },
        ) => guarded(f, cx, started).map(flatten).map(|result| {
            if result.is_ok() {
                crate::failpoint::reach!(crate::failpoint::COMMIT_ACKNOWLEDGED);
            }
            acked(txn, p, participant, attempt, result)
        }),
        (
            Answer::Phase2(f),
            &Action::Rollback {
                participant,
                attempt,
            },
        ) => guarded(f, cx, started)
            .map(flatten)
            .map(|result| acked(txn, p, participant, attempt, result)),
        // `start` makes the future that matches the action.
        (Answer::Vote(_) | Answer::Prepare(_), _)
        | (Answer::Phase2(_), Action::Prepare { .. } | Action::LogCommit { .. }) => {
            unreachable!("a call's future always matches its action")
        }
    }
}

impl InFlight {
    /// Polls the call, catching a panic: `Ready` with the event that
    /// answers it. The first time it is found pending, its start is noted.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        poll_answer(
            &mut self.answer,
            &self.action,
            self.txn,
            self.participant,
            cx,
            &mut self.started,
        )
    }

    /// When the call times out, once it was found pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.started
            .map(|started| super::deadline_after(started, self.timeout))
    }

    /// Ends the call as timed out: drops its future (cancelling it) and
    /// returns the event that says so.
    pub fn time_out(self) -> Event {
        let event = failed(
            self.txn,
            self.participant,
            &self.action,
            CallFailure::TimedOut,
        );
        self.finish();
        event
    }

    /// Drops a finished (or abandoned) call: its future first, then the
    /// participant, each with a panic from its `Drop` caught.
    pub fn finish(self) {
        let InFlight {
            answer,
            _context,
            entry,
            ..
        } = self;
        drop_user(answer);
        drop(_context);
        // The last reference to the entry, if it was forgotten while the
        // call ran: its participants' `Drop` is user code, and the entry
        // drops each with panics caught.
        drop(entry);
    }
}

/// Polls a participant's future, catching a panic; notes the start the
/// first time it is pending.
fn guarded<T>(
    f: &mut Pin<Box<dyn Future<Output = T> + Send>>,
    cx: &mut Context<'_>,
    started: &mut Option<Instant>,
) -> Poll<Result<T, CallFailure>> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| f.as_mut().poll(cx))) {
        Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
        Err(panic) => {
            let failure = CallFailure::Panicked(panic_message(&*panic));
            drop_user(panic);
            Poll::Ready(Err(failure))
        }
        Ok(Poll::Pending) => {
            started.get_or_insert_with(Instant::now);
            Poll::Pending
        }
    }
}

/// A call's outcome: the participant's failure is the call's.
fn flatten<T>(result: Result<Result<T, ParticipantError>, CallFailure>) -> Result<T, CallFailure> {
    result.and_then(|answer| answer.map_err(CallFailure::Error))
}

/// The event of a `prepare` that ended; a failure is logged.
fn voted(
    txn: TransactionId,
    p: &dyn Participant,
    participant: usize,
    result: Result<PreparedResult, CallFailure>,
) -> Event {
    if let Err(failure) = &result {
        tracing::debug!(%txn, participant = %safe_name(p), %failure, "prepare failed");
    }
    Event::PrepareDone {
        participant,
        result,
    }
}

/// The event of a `commit` or `rollback` attempt that ended; a failure is
/// logged.
fn acked(
    txn: TransactionId,
    p: &dyn Participant,
    participant: usize,
    attempt: u32,
    result: Result<(), CallFailure>,
) -> Event {
    if let Err(failure) = &result {
        tracing::info!(%txn, participant = %safe_name(p), attempt, %failure, "phase-2 call failed");
    }
    Event::Phase2Done {
        participant,
        attempt,
        result,
        // Judged by the core, from the times it is fed.
        retry_budget_spent: false,
    }
}

/// The event that answers `action` with a failure.
fn failed(txn: TransactionId, p: &dyn Participant, action: &Action, failure: CallFailure) -> Event {
    match *action {
        Action::Prepare { participant } => voted(txn, p, participant, Err(failure)),
        Action::Commit {
            participant,
            attempt,
        }
        | Action::Rollback {
            participant,
            attempt,
        } => acked(txn, p, participant, attempt, Err(failure)),
        // `start` refuses these before any call exists.
        Action::LogCommit { attempt } => Event::CommitLogged {
            attempt,
            result: Err(failure),
        },
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
