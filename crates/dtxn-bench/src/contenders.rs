//! What is measured: the floor, the hand-written baseline and dtxn, each
//! running one full transaction over a set of participants, and any
//! [`Peer`] (a transaction system from another crate, plugged in from
//! outside so this crate does not depend on it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dtxn::{
    CoordinatorConfig, CoordinatorError, Participant, PreparedResult, TransactionCoordinator,
    TransactionId,
};
use futures_util::future::{join_all, BoxFuture};

/// Transaction ids for the floor and the baseline, which have no id
/// generator of their own (dtxn's constructor is private; parsing one per
/// call would add cost the floor must not have).
#[derive(Debug, Clone)]
pub struct IdPool(Arc<[TransactionId]>);

impl IdPool {
    /// `n` distinct ids.
    pub fn new(n: usize) -> Self {
        Self(
            (0..n.max(1))
                .map(|i| {
                    format!("{:032x}", i as u128 + 1)
                        .parse()
                        .expect("32 hex digits")
                })
                .collect(),
        )
    }

    /// The id for key `k` (ids repeat every `n` keys).
    pub fn get(&self, k: u64) -> TransactionId {
        self.0[(k % self.0.len() as u64) as usize]
    }
}

/// The coordinator a team writes in an afternoon: one global mutex over a
/// table of participant lists, participants called one after another.
#[derive(Default)]
pub struct Baseline {
    table: Mutex<HashMap<u64, Vec<Arc<dyn Participant>>>>,
    next: AtomicU64,
}

impl Baseline {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<Arc<dyn Participant>>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Begins a transaction.
    pub fn begin(&self) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.table().insert(id, Vec::new());
        id
    }

    /// Registers `participant` in `txn`.
    pub fn register(&self, txn: u64, participant: Arc<dyn Participant>) {
        if let Some(list) = self.table().get_mut(&txn) {
            list.push(participant);
        }
    }

    /// Prepares each participant in turn; on a no vote rolls back the
    /// others and forgets the transaction. `true` when all voted yes.
    pub async fn prepare(&self, txn: u64, id: TransactionId) -> bool {
        let list = self.table().get(&txn).cloned().unwrap_or_default();
        for (i, p) in list.iter().enumerate() {
            if let PreparedResult::Aborted(_) = p.prepare(id).await {
                for (j, q) in list.iter().enumerate() {
                    if j != i {
                        let _ = q.rollback(id).await;
                    }
                }
                self.table().remove(&txn);
                return false;
            }
        }
        true
    }

    /// Commits each participant in turn and forgets the transaction.
    pub async fn commit(&self, txn: u64, id: TransactionId) {
        let list = self.table().remove(&txn).unwrap_or_default();
        for p in &list {
            let _ = p.commit(id).await;
        }
    }
}

/// A transaction system from another crate (`dtxn-bench-peers` has
/// `dist_tx` and `steno`), driven by the workloads next to dtxn over the same
/// participants.
///
/// A peer's coordinator usually keeps per-caller state (an XA transaction
/// manager runs one transaction at a time), so each driving task gets its
/// own [`PeerSession`], set up before the clock starts.
pub trait Peer: Send + Sync {
    /// Its name in reports (`dist_tx`, `steno`).
    fn name(&self) -> &'static str;

    /// A fresh instance with no state left from earlier measurements (as
    /// [`Contender::baseline`] is fresh).
    fn fresh(&self) -> Arc<dyn Peer>;

    /// Sets up what one driving task uses to run transactions over
    /// `participants`, one after another. Not timed.
    fn session(
        &self,
        participants: &Arc<[Arc<dyn Participant>]>,
    ) -> BoxFuture<'static, Box<dyn PeerSession>>;
}

/// One driving task's handle on a [`Peer`].
pub trait PeerSession: Send {
    /// Runs one transaction over the session's participants to its end;
    /// `key` is distinct per transaction. Returns whether it committed.
    fn cycle(&mut self, key: u64) -> BoxFuture<'_, bool>;
}

/// What one driving task runs its transactions through: the contender
/// itself, or a peer's per-task session.
pub enum Session {
    /// The floor, the baseline or dtxn, with the participants.
    Own(Contender, Arc<[Arc<dyn Participant>]>),
    /// A peer's session.
    Peer(Box<dyn PeerSession>),
}

impl Session {
    /// Runs one transaction (see [`Contender::cycle`]).
    pub async fn cycle(&mut self, key: u64) -> Result<bool, CoordinatorError> {
        match self {
            Self::Own(contender, participants) => contender.cycle(key, participants).await,
            Self::Peer(session) => Ok(session.cycle(key).await),
        }
    }
}

/// One of the measured systems.
#[derive(Clone)]
pub enum Contender {
    /// The participants' own calls made directly: prepare on each, then
    /// commit on each; `concurrent` makes each phase's calls at once
    /// (`join_all`) instead of in sequence.
    Floor {
        /// Call each phase's participants concurrently.
        concurrent: bool,
        /// Ids to pass.
        ids: IdPool,
    },
    /// The hand-written baseline.
    Baseline(Arc<Baseline>, IdPool),
    /// dtxn's full cycle: begin, register N, prepare, commit.
    Dtxn(TransactionCoordinator),
    /// A peer crate's system.
    Peer(Arc<dyn Peer>),
}

impl Contender {
    /// The floor.
    pub fn floor(concurrent: bool) -> Self {
        Self::Floor {
            concurrent,
            ids: IdPool::new(4096),
        }
    }

    /// A fresh baseline.
    pub fn baseline() -> Self {
        Self::Baseline(Arc::default(), IdPool::new(4096))
    }

    /// A fresh dtxn coordinator with room for `max_transactions` at once and
    /// remembering at most `retention_count` finished ones.
    pub fn dtxn(max_transactions: usize, retention_count: usize) -> Self {
        let config = CoordinatorConfig::builder()
            .max_transactions(max_transactions)
            .retention_count(retention_count)
            .build()
            .expect("a valid configuration");
        Self::Dtxn(TransactionCoordinator::with_config(config))
    }

    /// A fresh instance of `peer`.
    pub fn peer(peer: &dyn Peer) -> Self {
        Self::Peer(peer.fresh())
    }

    /// The contender's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Floor { .. } => "floor",
            Self::Baseline(..) => "baseline",
            Self::Dtxn(_) => "dtxn",
            Self::Peer(peer) => peer.name(),
        }
    }

    /// Sets up what one driving task runs its transactions through (for a
    /// peer, its session; otherwise the contender itself).
    pub async fn session(&self, participants: &Arc<[Arc<dyn Participant>]>) -> Session {
        match self {
            Self::Peer(peer) => Session::Peer(peer.session(participants).await),
            own => Session::Own(own.clone(), Arc::clone(participants)),
        }
    }

    /// Runs one transaction to its end; `key` distinguishes transactions for
    /// the floor. Returns whether it committed. A peer sets up a session for
    /// this one transaction (drive it through [`Contender::session`] to
    /// reuse one).
    pub async fn cycle(
        &self,
        key: u64,
        participants: &[Arc<dyn Participant>],
    ) -> Result<bool, CoordinatorError> {
        match self {
            Self::Floor { concurrent, ids } => {
                let id = ids.get(key);
                if *concurrent {
                    let votes = join_all(participants.iter().map(|p| p.prepare(id))).await;
                    std::hint::black_box(votes);
                    let acks = join_all(participants.iter().map(|p| p.commit(id))).await;
                    std::hint::black_box(acks);
                } else {
                    for p in participants {
                        std::hint::black_box(p.prepare(id).await);
                    }
                    for p in participants {
                        let _ = std::hint::black_box(p.commit(id).await);
                    }
                }
                Ok(true)
            }
            Self::Baseline(baseline, ids) => {
                let txn = baseline.begin();
                let id = ids.get(txn);
                for p in participants {
                    baseline.register(txn, Arc::clone(p));
                }
                if baseline.prepare(txn, id).await {
                    baseline.commit(txn, id).await;
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
            Self::Dtxn(coordinator) => {
                let txn = coordinator.begin_transaction()?;
                for p in participants {
                    coordinator.register_participant(txn, Arc::clone(p))?;
                }
                if coordinator.prepare_transaction(txn).await?.is_prepared() {
                    Ok(coordinator.commit_transaction(txn).await?.is_committed())
                } else {
                    Ok(false)
                }
            }
            Self::Peer(peer) => {
                let participants: Arc<[Arc<dyn Participant>]> = participants.into();
                let mut session = peer.session(&participants).await;
                Ok(session.cycle(key).await)
            }
        }
    }
}
