//! The [`Participant`] trait that services implement, and its vote type.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::TransactionId;

/// The boxed future of a [`Participant`] call, as
/// [`async_trait`](crate::async_trait) makes them.
type CallFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which call a participant is receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Phase {
    /// Phase 1: prepare and vote.
    Prepare,
    /// Phase 2 after a Commit decision.
    Commit,
    /// Phase 2 after an Abort decision.
    Rollback,
}

impl Phase {
    /// `"prepare"`, `"commit"` or `"rollback"`: the wire contract's names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Prepare => "prepare",
            Self::Commit => "commit",
            Self::Rollback => "rollback",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Application data registered with a participant for one transaction
/// ([`TransactionCoordinator::register_participant_with_payload`](crate::TransactionCoordinator::register_participant_with_payload))
/// and handed back to it with every call, in its [`CallContext`]: *which*
/// user to create, *what* to reserve.
///
/// The coordinator never reads it. It is shared, not copied: cloning a
/// `Payload` (and handing it to each call and retry) clones a reference.
/// Over HTTP it is JSON ([`dtxn_http`'s wire contract](https://docs.rs/dtxn-http));
/// in process it is any bytes.
///
/// `Debug` shows its length only: payloads often carry personal data,
/// which has no place in logs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Payload(Arc<[u8]>);

impl Payload {
    /// The payload's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The payload as text, if it is UTF-8 (JSON always is).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes.into())
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        Self(text.into_bytes().into())
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Self(text.as_bytes().into())
    }
}

impl From<Arc<[u8]>> for Payload {
    fn from(bytes: Arc<[u8]>) -> Self {
        Self(bytes)
    }
}

/// What a participant is told with a call: the transaction, the
/// [`Phase`], the attempt number and the [`Payload`] registered with it.
/// Received by [`Participant::prepare_with`],
/// [`commit_with`](Participant::commit_with) and
/// [`rollback_with`](Participant::rollback_with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    txn: TransactionId,
    phase: Phase,
    attempt: u32,
    payload: Option<Payload>,
    outcome_url: Option<Arc<str>>,
}

impl CallContext {
    /// The first attempt of `phase` for `txn`, with no payload. The
    /// coordinator makes these; so do servers passing calls on
    /// ([`dtxn_http::participant_router`](https://docs.rs/dtxn-http)) and
    /// tests.
    pub fn new(txn: TransactionId, phase: Phase) -> Self {
        Self {
            txn,
            phase,
            attempt: 1,
            payload: None,
            outcome_url: None,
        }
    }

    /// With the attempt number (`0` counts as `1`).
    #[must_use]
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt.max(1);
        self
    }

    /// With a payload.
    #[must_use]
    pub fn with_payload(mut self, payload: Option<Payload>) -> Self {
        self.payload = payload;
        self
    }

    /// With the URL at which the coordinator answers what it decided.
    #[must_use]
    pub fn with_outcome_url(mut self, url: Option<Arc<str>>) -> Self {
        self.outcome_url = url;
        self
    }

    /// The transaction.
    pub fn transaction_id(&self) -> TransactionId {
        self.txn
    }

    /// Which call this is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// `1` for the first attempt; phase-2 retries count up. `prepare` is
    /// never retried by the coordinator.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The payload registered with this participant for this transaction,
    /// if any.
    pub fn payload(&self) -> Option<&Payload> {
        self.payload.as_ref()
    }

    /// Where to ask the coordinator what it decided (`GET` answers
    /// `{"outcome": "committed" | "aborted" | "pending" | "unknown"}`),
    /// when the call came over HTTP from a coordinator that advertises it.
    /// `None` in process: ask
    /// [`TransactionCoordinator::outcome`](crate::TransactionCoordinator::outcome).
    pub fn outcome_url(&self) -> Option<&str> {
        self.outcome_url.as_deref()
    }
}

pub use crate::core::{ParticipantError, PreparedResult};

/// A service taking part in distributed transactions.
///
/// The coordinator calls [`prepare`](Self::prepare) once per transaction, and
/// then at most one of [`commit`](Self::commit) or
/// [`rollback`](Self::rollback), possibly several times if it fails (so
/// phase 2 must be idempotent, keyed on the [`TransactionId`]).
///
/// * `prepare` may also be followed by `rollback` without a vote having been
///   seen by the coordinator (the call timed out or panicked), and `rollback`
///   may arrive for a transaction whose `prepare` was never called (the
///   transaction was abandoned while the participant was registered).
/// * A `prepare` that returns [`PreparedResult::Aborted`] or
///   [`PreparedResult::ReadOnly`] never receives phase 2.
///
/// # The call context
///
/// The coordinator calls [`prepare_with`](Self::prepare_with),
/// [`commit_with`](Self::commit_with) and
/// [`rollback_with`](Self::rollback_with), which receive a
/// [`CallContext`]: the transaction, the phase, the attempt number and the
/// [`Payload`] registered with the participant. By default they call
/// [`try_prepare`](Self::try_prepare), [`commit`](Self::commit) and
/// [`rollback`](Self::rollback) with the transaction id (at no extra
/// cost: a call is the one future the participant's method boxes, and a
/// participant that implements only `prepare` is called on it directly),
/// so a participant that needs no context implements just those. One that
/// needs the context overrides the `_with` methods (and may leave the
/// plain ones calling them):
///
/// ```
/// use dtxn::{async_trait, CallContext, Participant, ParticipantError, PreparedResult, TransactionId};
///
/// struct Users;
///
/// #[async_trait]
/// impl Participant for Users {
///     async fn prepare_with(&self, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
///         let Some(name) = cx.payload().and_then(|p| p.as_str()) else {
///             return Ok(PreparedResult::Aborted("no user name given".into()));
///         };
///         // reserve the name `name` for `cx.transaction_id()` here
///         # let _ = name;
///         Ok(PreparedResult::Ready)
///     }
///     async fn commit_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
///         // `cx.attempt()` > 1: a retry; commit must be idempotent anyway
///         Ok(())
///     }
///     async fn rollback_with(&self, _cx: &CallContext) -> Result<(), ParticipantError> {
///         Ok(())
///     }
///     // Without a context (never called by the coordinator):
///     async fn prepare(&self, _: TransactionId) -> PreparedResult {
///         PreparedResult::Aborted("a payload is required".into())
///     }
///     async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
///     async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
/// }
/// ```
///
/// The trait is object safe and uses [`async_trait`](crate::async_trait),
/// re-exported so implementors need no extra dependency. For participants
/// whose code blocks (a synchronous database client), implement
/// [`BlockingParticipant`] and wrap it in [`Blocking`].
///
/// ```
/// use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};
///
/// struct Inventory;
///
/// #[async_trait]
/// impl Participant for Inventory {
///     fn name(&self) -> &str {
///         "inventory"
///     }
///     async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
///         PreparedResult::Ready // reserve the item here
///     }
///     async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
///         Ok(()) // apply the reservation
///     }
///     async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
///         Ok(()) // release the reservation
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Participant: Send + Sync {
    /// A short name used in errors, logs and reports. Defaults to the
    /// implementing type's name.
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }

    /// The stable name under which the application can find this
    /// participant again after a coordinator restart, for a coordinator
    /// with a [decision log](crate::log): it is logged with each Commit
    /// decision, and recovery looks it up in a
    /// [`ParticipantResolver`](crate::log::ParticipantResolver) to deliver
    /// `commit` again. A remote participant returns its URL. The default,
    /// `None`, is fine without a log; with one, registering such a
    /// participant is refused
    /// ([`CoordinatorError::NotRecoverable`](crate::CoordinatorError::NotRecoverable)).
    fn recovery_key(&self) -> Option<&str> {
        None
    }

    /// Phase 1: prepare to commit `txn` and vote.
    async fn prepare(&self, txn: TransactionId) -> PreparedResult;

    /// Phase 1 for participants whose `prepare` *call* can fail without a
    /// vote — a remote service that is unreachable, answers garbage or
    /// breaks the connection. The coordinator calls this, not
    /// [`prepare`](Self::prepare); the default just votes with `prepare`.
    ///
    /// An `Err` is treated like a panic or a timeout: the transaction
    /// aborts (reported as [`AbortReason::PrepareFailed`](crate::AbortReason::PrepareFailed)),
    /// and — unlike after an [`Aborted`](PreparedResult::Aborted) vote —
    /// this participant *is* sent `rollback`, since it may have prepared
    /// before the failure was seen. Override it instead of voting `Aborted`
    /// when the participant's state is unknown.
    ///
    /// When neither this nor [`prepare_with`](Self::prepare_with) is
    /// overridden, the coordinator calls `prepare` directly: the same vote,
    /// with one boxed future per call instead of two.
    fn try_prepare<'life0, 'async_trait>(
        &'life0 self,
        txn: TransactionId,
    ) -> CallFuture<'async_trait, Result<PreparedResult, ParticipantError>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        // Called by the default `prepare_with` for the coordinator: the
        // coordinator calls `prepare` itself (see `start_prepare`).
        if direct::reached(direct::Ident::of(self)) {
            return Box::pin(direct::Unused);
        }
        Box::pin(async move { Ok(self.prepare(txn).await) })
    }

    /// Phase 2 after a Commit decision. Must be idempotent.
    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError>;

    /// Phase 2 after an Abort decision. Must be idempotent, and must accept a
    /// transaction it never prepared.
    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError>;

    /// Phase 1 with the [`CallContext`]: what the coordinator calls. The
    /// default is [`try_prepare`](Self::try_prepare) with the transaction
    /// id. Override it with an `async fn` in an `#[async_trait]` impl, like
    /// the other methods.
    fn prepare_with<'life0, 'life1, 'async_trait>(
        &'life0 self,
        cx: &'life1 CallContext,
    ) -> CallFuture<'async_trait, Result<PreparedResult, ParticipantError>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        // Not an `async fn`: the inner call's box is returned as it is,
        // rather than boxed again.
        let me = direct::Ident::of(self);
        let chained = direct::chain(me);
        let call = self.try_prepare(cx.transaction_id());
        if chained {
            direct::unchain(me);
        }
        call
    }

    /// Phase 2 after a Commit decision, with the [`CallContext`]: what the
    /// coordinator calls. The default is [`commit`](Self::commit).
    fn commit_with<'life0, 'life1, 'async_trait>(
        &'life0 self,
        cx: &'life1 CallContext,
    ) -> CallFuture<'async_trait, Result<(), ParticipantError>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.commit(cx.transaction_id())
    }

    /// Phase 2 after an Abort decision, with the [`CallContext`]: what the
    /// coordinator calls. The default is [`rollback`](Self::rollback).
    fn rollback_with<'life0, 'life1, 'async_trait>(
        &'life0 self,
        cx: &'life1 CallContext,
    ) -> CallFuture<'async_trait, Result<(), ParticipantError>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.rollback(cx.transaction_id())
    }

    /// The implementing type's name, for the coordinator's dispatch of
    /// `prepare` (see `start_prepare`). Not part of the API: leave it to
    /// its default.
    #[doc(hidden)]
    fn __dtxn_type_name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// The implementing type's id: the coordinator keeps what the
    /// handshake of `start_prepare` found for each type, which depends on
    /// the type alone. Not part of the API: leave it to its default.
    #[doc(hidden)]
    fn __dtxn_type_id(&self) -> std::any::TypeId
    where
        Self: 'static,
    {
        std::any::TypeId::of::<Self>()
    }
}

/// A participant whose code blocks the thread, such as one using a
/// synchronous database client. Wrap it in [`Blocking`] to register it.
pub trait BlockingParticipant: Send + Sync + 'static {
    /// See [`Participant::name`].
    fn name(&self) -> &str {
        std::any::type_name::<Self>()
    }
    /// See [`Participant::recovery_key`].
    fn recovery_key(&self) -> Option<&str> {
        None
    }
    /// See [`Participant::prepare`].
    fn prepare(&self, txn: TransactionId) -> PreparedResult;
    /// See [`Participant::commit`].
    fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError>;
    /// See [`Participant::rollback`].
    fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError>;
}

/// Adapts a [`BlockingParticipant`] into a [`Participant`] by running each
/// call on tokio's blocking thread pool (`spawn_blocking`), so blocking code
/// never stalls the runtime's worker threads.
///
/// A panic in the blocking code is propagated to the coordinator, which
/// treats it like any participant panic. If a call times out, the blocking
/// thread still runs the call to its end (threads cannot be cancelled).
///
/// ```
/// use std::sync::Arc;
/// use dtxn::{Blocking, BlockingParticipant, ParticipantError, PreparedResult, TransactionId};
///
/// struct SyncDb;
/// impl BlockingParticipant for SyncDb {
///     fn prepare(&self, _: TransactionId) -> PreparedResult { PreparedResult::Ready }
///     fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
///     fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> { Ok(()) }
/// }
///
/// let participant: Arc<dyn dtxn::Participant> = Arc::new(Blocking::new(SyncDb));
/// ```
pub struct Blocking<T>(Arc<T>);

impl<T: BlockingParticipant> Blocking<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Self(Arc::new(inner))
    }

    /// The wrapped participant.
    pub fn get_ref(&self) -> &T {
        &self.0
    }

    async fn run<R: Send + 'static>(&self, f: impl FnOnce(&T) -> R + Send + 'static) -> R {
        let inner = Arc::clone(&self.0);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down and cancelled the task.
            Err(_) => std::panic::panic_any("blocking participant call was cancelled"),
        }
    }
}

impl<T> fmt::Debug for Blocking<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Blocking")
            .field(&std::any::type_name::<T>())
            .finish()
    }
}

#[async_trait::async_trait]
impl<T: BlockingParticipant> Participant for Blocking<T> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn recovery_key(&self) -> Option<&str> {
        self.0.recovery_key()
    }

    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        self.run(move |p| p.prepare(txn)).await
    }

    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.run(move |p| p.commit(txn)).await
    }

    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.run(move |p| p.rollback(txn)).await
    }
}

/// What the coordinator polls for a participant's phase 1.
pub(crate) enum PrepareCall<'a> {
    /// The future of [`Participant::prepare`] itself: the participant
    /// overrides neither `prepare_with` nor `try_prepare`, whose defaults
    /// would only wrap it in `Ok` (in a second boxed future).
    Vote(CallFuture<'a, PreparedResult>),
    /// The future of [`Participant::prepare_with`].
    Call(CallFuture<'a, Result<PreparedResult, ParticipantError>>),
}

/// Starts `participant`'s phase 1 as the coordinator does: with
/// `prepare_with(cx)`, or, when its default would only call the default
/// `try_prepare`, which only wraps `prepare` in `Ok`, with `prepare` itself
/// (one boxed future per call instead of two). Not cancel sensitive: both
/// are only futures until polled. A panic from the participant propagates
/// (the caller catches it).
///
/// Which of the two it is depends on the participant's type alone (which
/// methods it overrides), so the handshake that finds it out runs once per
/// type and thread; later calls read the answer from [`seen`].
pub(crate) fn start_prepare<'a>(
    participant: &'a (dyn Participant + 'static),
    cx: &'a CallContext,
) -> PrepareCall<'a> {
    let ty = participant.__dtxn_type_id();
    match seen::direct(ty) {
        Some(true) => return PrepareCall::Vote(participant.prepare(cx.transaction_id())),
        Some(false) => return PrepareCall::Call(participant.prepare_with(cx)),
        None => {}
    }
    let me = direct::Ident {
        at: std::ptr::from_ref(participant).cast::<()>(),
        ty: participant.__dtxn_type_name(),
    };
    let probe = direct::Probe::start(me);
    let call = participant.prepare_with(cx);
    let direct = probe.finish();
    seen::remember(ty, direct);
    if direct {
        // `call` is the placeholder of the default `try_prepare`.
        drop(call);
        PrepareCall::Vote(participant.prepare(cx.transaction_id()))
    } else {
        PrepareCall::Call(call)
    }
}

/// What the handshake found for the participant types a thread called
/// last: whether a type keeps both defaults (`prepare` is called
/// directly). A few slots, replaced in turn: an application has a handful
/// of participant types, and a type that lost its slot only costs one
/// more handshake. Keyed by [`TypeId`](std::any::TypeId), which, unlike a
/// type's name, no two types share.
mod seen {
    use std::any::TypeId;
    use std::cell::Cell;

    const SLOTS: usize = 8;

    struct Seen {
        slots: [Cell<Option<(TypeId, bool)>>; SLOTS],
        next: Cell<usize>,
    }

    thread_local! {
        static SEEN: Seen = const {
            Seen {
                slots: [const { Cell::new(None) }; SLOTS],
                next: Cell::new(0),
            }
        };
    }

    /// Whether `ty` keeps both defaults, if known on this thread.
    pub(super) fn direct(ty: TypeId) -> Option<bool> {
        SEEN.try_with(|seen| {
            seen.slots
                .iter()
                .find_map(|slot| slot.get().filter(|&(t, _)| t == ty))
                .map(|(_, direct)| direct)
        })
        .ok()
        .flatten()
    }

    /// Notes what the handshake found for `ty`.
    pub(super) fn remember(ty: TypeId, direct: bool) {
        let _ = SEEN.try_with(|seen| {
            let at = seen.next.get();
            seen.slots[at].set(Some((ty, direct)));
            seen.next.set((at + 1) % SLOTS);
        });
    }
}

/// How the coordinator learns, without any change to the trait's methods,
/// that a participant's `prepare_with` and `try_prepare` are both the
/// defaults: a trait object does not tell whether a method was
/// overridden, and the defaults would box a second future around
/// `prepare`'s.
///
/// A handshake through a thread-local cell, all within one synchronous
/// call of `prepare_with`:
/// 1. [`start_prepare`] puts [`Handshake::Probe`] with the participant's
///    identity (address and type name) in the cell, and calls
///    `prepare_with`;
/// 2. the *default* `prepare_with`, finding its own identity there, moves
///    the cell to [`Handshake::Chained`] and calls `try_prepare`;
/// 3. the *default* `try_prepare`, finding its own identity chained, moves
///    the cell to [`Handshake::Reached`] and returns [`Unused`] (a
///    zero-sized future: boxing it allocates nothing), which the default
///    `prepare_with` returns as it is;
/// 4. `start_prepare` finds `Reached`, drops that future and calls
///    `prepare`.
///
/// An override of either method never runs the default's code, so the
/// cell never reaches `Reached` for that participant; any other code that
/// runs meanwhile (an override calling other participants, or the
/// coordinator) finds an identity that is not its own. The identity
/// includes the type, because a wrapper's field may share its address.
/// Whatever is left in the cell is cleared when `start_prepare` ends,
/// panics included.
///
/// The answer depends on the participant's type alone, so it is found
/// once per type and thread and kept (see [`seen`]).
mod direct {
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::{ParticipantError, PreparedResult};

    /// A participant object: its address and its type's name.
    #[derive(Clone, Copy)]
    pub(super) struct Ident {
        pub at: *const (),
        pub ty: &'static str,
    }

    impl Ident {
        pub fn of<T: ?Sized>(value: &T) -> Self {
            Self {
                at: std::ptr::from_ref(value).cast::<()>(),
                ty: std::any::type_name::<T>(),
            }
        }

        fn is(self, other: Self) -> bool {
            self.at == other.at && (std::ptr::eq(self.ty, other.ty) || self.ty == other.ty)
        }
    }

    #[derive(Clone, Copy)]
    enum Handshake {
        Idle,
        Probe(Ident),
        Chained(Ident),
        Reached,
    }

    thread_local! {
        static HANDSHAKE: Cell<Handshake> = const { Cell::new(Handshake::Idle) };
    }

    /// Step 2: called by the default `prepare_with`; whether it was probed.
    pub(super) fn chain(me: Ident) -> bool {
        HANDSHAKE.with(|cell| match cell.get() {
            Handshake::Probe(probed) if probed.is(me) => {
                cell.set(Handshake::Chained(me));
                true
            }
            _ => false,
        })
    }

    /// After step 2's `try_prepare` returned: an overridden one left the
    /// cell chained.
    pub(super) fn unchain(me: Ident) {
        HANDSHAKE.with(|cell| {
            if matches!(cell.get(), Handshake::Chained(chained) if chained.is(me)) {
                cell.set(Handshake::Idle);
            }
        });
    }

    /// Step 3: called by the default `try_prepare`; whether it was
    /// chained, in which case it returns [`Unused`].
    pub(super) fn reached(me: Ident) -> bool {
        HANDSHAKE.with(|cell| match cell.get() {
            Handshake::Chained(chained) if chained.is(me) => {
                cell.set(Handshake::Reached);
                true
            }
            _ => false,
        })
    }

    /// Steps 1 and 4, with the cell cleared when dropped.
    pub(super) struct Probe(());

    impl Probe {
        pub fn start(me: Ident) -> Self {
            HANDSHAKE.with(|cell| cell.set(Handshake::Probe(me)));
            Self(())
        }

        /// Whether the defaults were reached.
        pub fn finish(self) -> bool {
            HANDSHAKE.with(|cell| matches!(cell.replace(Handshake::Idle), Handshake::Reached))
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            // Also after `finish`: a panic in `prepare_with` leaves the
            // cell as it was.
            let _ = HANDSHAKE.try_with(|cell| cell.set(Handshake::Idle));
        }
    }

    /// The future the default `try_prepare` returns in step 3, which
    /// `start_prepare` drops unpolled. Were it ever polled, it fails the
    /// call rather than vote.
    pub(super) struct Unused;

    impl Future for Unused {
        type Output = Result<PreparedResult, ParticipantError>;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            Poll::Ready(Err(ParticipantError::permanent(
                "internal: a coordinator placeholder future was polled",
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::{start_prepare, PrepareCall};
    use crate::{
        async_trait, CallContext, Participant, ParticipantError, Phase, PreparedResult,
        TransactionId,
    };

    fn cx() -> CallContext {
        CallContext::new(TransactionId::from_parts(1, 2), Phase::Prepare)
    }

    /// Implements only the required methods; counts `prepare` calls.
    type Plain = Nth<0>;

    /// Overrides `try_prepare` to fail without a vote.
    struct Unreachable;

    #[async_trait]
    impl Participant for Unreachable {
        async fn prepare(&self, _: TransactionId) -> PreparedResult {
            PreparedResult::Ready
        }
        async fn try_prepare(&self, _: TransactionId) -> Result<PreparedResult, ParticipantError> {
            Err(ParticipantError::transient("unreachable"))
        }
        async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
        async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
    }

    /// A newtype over a participant at the same address, whose
    /// `prepare_with` asks the inner one's default `prepare_with` at once
    /// (which, were the handshake to go by address alone, would take the
    /// shortcut meant for the outer participant) and overrules its vote.
    struct Veto(Plain);

    #[async_trait]
    impl Participant for Veto {
        async fn prepare(&self, _: TransactionId) -> PreparedResult {
            PreparedResult::Ready
        }
        fn prepare_with<'a, 'b, 'c>(
            &'a self,
            cx: &'b CallContext,
        ) -> super::CallFuture<'c, Result<PreparedResult, ParticipantError>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            // Asked before the returned future is polled: while the
            // coordinator's handshake is under way.
            let inner = self.0.prepare_with(cx);
            Box::pin(async move {
                assert_eq!(inner.await?, PreparedResult::Ready);
                Ok(PreparedResult::Aborted("vetoed".into()))
            })
        }
        async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
        async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
    }

    /// Overrides `prepare_with` by wrapping its own default `try_prepare`,
    /// called eagerly (before the returned future is polled).
    struct Eager;

    #[async_trait]
    impl Participant for Eager {
        async fn prepare(&self, _: TransactionId) -> PreparedResult {
            PreparedResult::ReadOnly
        }
        fn prepare_with<'a, 'b, 'c>(
            &'a self,
            cx: &'b CallContext,
        ) -> super::CallFuture<'c, Result<PreparedResult, ParticipantError>>
        where
            'a: 'c,
            'b: 'c,
            Self: 'c,
        {
            let call = self.try_prepare(cx.transaction_id());
            Box::pin(async move {
                match call.await? {
                    PreparedResult::ReadOnly => Ok(PreparedResult::Aborted("wrapped".into())),
                    other => Ok(other),
                }
            })
        }
        async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
        async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
    }

    /// Panics when asked for its `prepare` future.
    struct PanicsAtOnce;

    impl Participant for PanicsAtOnce {
        fn prepare<'a, 'b>(&'a self, _: TransactionId) -> super::CallFuture<'b, PreparedResult>
        where
            'a: 'b,
            Self: 'b,
        {
            panic!("no future for you")
        }
        fn commit<'a, 'b>(
            &'a self,
            _: TransactionId,
        ) -> super::CallFuture<'b, Result<(), ParticipantError>>
        where
            'a: 'b,
            Self: 'b,
        {
            Box::pin(async { Ok(()) })
        }
        fn rollback<'a, 'b>(
            &'a self,
            _: TransactionId,
        ) -> super::CallFuture<'b, Result<(), ParticipantError>>
        where
            'a: 'b,
            Self: 'b,
        {
            Box::pin(async { Ok(()) })
        }
    }

    async fn run(call: PrepareCall<'_>) -> (bool, Result<PreparedResult, ParticipantError>) {
        match call {
            PrepareCall::Vote(vote) => (true, Ok(vote.await)),
            PrepareCall::Call(call) => (false, call.await),
        }
    }

    #[tokio::test]
    async fn a_participant_with_only_prepare_is_called_on_its_prepare_future_directly() {
        let plain = Plain::default();
        let cx = cx();
        let (direct, vote) = run(start_prepare(&plain, &cx)).await;
        assert!(direct);
        assert_eq!(vote, Ok(PreparedResult::Ready));
        assert_eq!(plain.0.load(Ordering::Relaxed), 1, "prepare called once");
    }

    #[tokio::test]
    async fn an_overridden_try_prepare_is_what_the_coordinator_calls() {
        let cx = cx();
        let (direct, vote) = run(start_prepare(&Unreachable, &cx)).await;
        assert!(!direct);
        assert!(vote.is_err());
    }

    #[tokio::test]
    async fn a_wrapper_at_its_inner_participants_address_keeps_its_own_prepare_with() {
        let veto = Veto(Plain::default());
        assert_eq!(
            std::ptr::from_ref(&veto).cast::<()>(),
            std::ptr::from_ref(&veto.0).cast::<()>()
        );
        let cx = cx();
        let (direct, vote) = run(start_prepare(&veto, &cx)).await;
        assert!(!direct);
        assert_eq!(vote, Ok(PreparedResult::Aborted("vetoed".into())));
        assert_eq!(veto.0 .0.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn an_override_that_wraps_its_own_default_try_prepare_keeps_working() {
        let cx = cx();
        let (direct, vote) = run(start_prepare(&Eager, &cx)).await;
        assert!(!direct);
        assert_eq!(vote, Ok(PreparedResult::Aborted("wrapped".into())));
    }

    #[tokio::test]
    async fn the_default_try_prepare_called_by_hand_votes_with_prepare() {
        let plain = Plain::default();
        assert_eq!(
            plain.try_prepare(cx().transaction_id()).await,
            Ok(PreparedResult::Ready)
        );
        assert_eq!(plain.prepare_with(&cx()).await, Ok(PreparedResult::Ready));
        assert_eq!(plain.0.load(Ordering::Relaxed), 2);
    }

    /// Implements only the required methods (keeps both defaults); counts
    /// `prepare` calls. One type per `N`.
    #[derive(Default)]
    struct Nth<const N: usize>(AtomicUsize);

    #[async_trait]
    impl<const N: usize> Participant for Nth<N> {
        async fn prepare(&self, _: TransactionId) -> PreparedResult {
            self.0.fetch_add(1, Ordering::Relaxed);
            PreparedResult::Ready
        }
        async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
        async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
    }

    /// Overrides `try_prepare` to vote through it; one type per `N`.
    struct NthOverride<const N: usize>;

    #[async_trait]
    impl<const N: usize> Participant for NthOverride<N> {
        async fn prepare(&self, _: TransactionId) -> PreparedResult {
            PreparedResult::Ready
        }
        async fn try_prepare(&self, _: TransactionId) -> Result<PreparedResult, ParticipantError> {
            Ok(PreparedResult::Aborted(format!("override {N}")))
        }
        async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
        async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
            Ok(())
        }
    }

    async fn check_nth<const N: usize>(cx: &CallContext) {
        let plain = Nth::<N>::default();
        let (direct, vote) = run(start_prepare(&plain, cx)).await;
        assert!(direct, "type {N} keeps the defaults");
        assert_eq!(vote, Ok(PreparedResult::Ready));
        assert_eq!(plain.0.load(Ordering::Relaxed), 1);
        let (direct, vote) = run(start_prepare(&NthOverride::<N>, cx)).await;
        assert!(!direct, "type {N} overrides try_prepare");
        assert_eq!(vote, Ok(PreparedResult::Aborted(format!("override {N}"))));
    }

    #[tokio::test]
    async fn what_the_handshake_found_is_kept_per_type_and_never_lent_to_another_type() {
        let cx = cx();
        // Rounds after the first take what the first found; the twenty
        // types are more than the thread keeps, so some are found again.
        for _ in 0..3 {
            check_nth::<0>(&cx).await;
            check_nth::<1>(&cx).await;
            check_nth::<2>(&cx).await;
            check_nth::<3>(&cx).await;
            check_nth::<4>(&cx).await;
            check_nth::<5>(&cx).await;
            check_nth::<6>(&cx).await;
            check_nth::<7>(&cx).await;
            check_nth::<8>(&cx).await;
            check_nth::<9>(&cx).await;
            // The wrappers of the other tests, once their types are known.
            let veto = Veto(Plain::default());
            let (direct, vote) = run(start_prepare(&veto, &cx)).await;
            assert!(!direct);
            assert_eq!(vote, Ok(PreparedResult::Aborted("vetoed".into())));
            let (direct, vote) = run(start_prepare(&Eager, &cx)).await;
            assert!(!direct);
            assert_eq!(vote, Ok(PreparedResult::Aborted("wrapped".into())));
            let plain = Plain::default();
            assert!(run(start_prepare(&plain, &cx)).await.0);
        }
    }

    #[tokio::test]
    async fn a_panic_while_starting_a_prepare_leaves_the_next_calls_unaffected() {
        let cx = cx();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(start_prepare(&PanicsAtOnce, &cx));
        }));
        assert!(panicked.is_err());
        // Neither a participant with defaults nor an override is confused
        // by what the panic interrupted.
        let plain: Arc<dyn Participant> = Arc::new(Plain::default());
        assert!(run(start_prepare(&*plain, &cx)).await.0);
        let (direct, vote) = run(start_prepare(&Eager, &cx)).await;
        assert!(!direct);
        assert_eq!(vote, Ok(PreparedResult::Aborted("wrapped".into())));
    }
}
