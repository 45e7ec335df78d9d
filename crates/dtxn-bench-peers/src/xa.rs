//! `dist_tx` (X/Open XA bindings, 0.5): its `SimpleTransactionManager`
//! with one resource manager per participant.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use dist_tx::a_sync::rm::ResourceManager;
use dist_tx::a_sync::tm::{SimpleTransactionManager, TransactionManager};
use dist_tx::{ErrorCode, ReturnCode, RmError, XaTransactionId};
use dtxn::{Participant, ParticipantError, PreparedResult, TransactionId};
use dtxn_bench::{IdPool, Peer, PeerSession};
use futures_util::future::BoxFuture;

/// Distinct transaction ids handed to the participants (they repeat after
/// this many transactions, as the floor's do).
const IDS: usize = 4096;

/// `dist_tx`'s `SimpleTransactionManager` (async variant).
///
/// An XA transaction manager runs one transaction at a time and holds a
/// fixed set of resource managers, registered once. So each driving task
/// gets its own manager with one resource manager per participant,
/// registered before the clock starts; a transaction is then
/// `start_transaction` (`xa_start` on each) and `commit_transaction`
/// (`xa_end`, `xa_prepare`, `xa_commit` on each, one after another; with a
/// single resource manager, `xa_commit` one-phase instead).
///
/// Each resource manager adapts one [`Participant`]: `xa_prepare` calls
/// `prepare`, `xa_commit` calls `commit`, a one-phase `xa_commit` calls
/// `prepare` then `commit` (so the participants do the same calls as under
/// dtxn), `xa_rollback` calls `rollback`; `xa_start` and `xa_end` have no
/// counterpart and return at once.
#[derive(Debug, Clone)]
pub struct DistTx {
    ids: IdPool,
}

impl DistTx {
    /// The peer.
    pub fn new() -> Self {
        Self {
            ids: IdPool::new(IDS),
        }
    }
}

impl Default for DistTx {
    fn default() -> Self {
        Self::new()
    }
}

impl Peer for DistTx {
    fn name(&self) -> &'static str {
        "dist_tx"
    }

    fn fresh(&self) -> Arc<dyn Peer> {
        Arc::new(self.clone())
    }

    fn session(
        &self,
        participants: &Arc<[Arc<dyn Participant>]>,
    ) -> BoxFuture<'static, Box<dyn PeerSession>> {
        let participants = Arc::clone(participants);
        let ids = self.ids.clone();
        Box::pin(async move {
            let mut tm = SimpleTransactionManager::new("dtxn-bench");
            for (rm_id, participant) in participants.iter().enumerate() {
                let rm = ParticipantRm {
                    participant: Arc::clone(participant),
                    ids: ids.clone(),
                };
                tm.register(Box::new(rm), rm_id as u64, false)
                    .await
                    .expect("rm ids are distinct");
            }
            Box::new(XaSession { tm }) as Box<dyn PeerSession>
        })
    }
}

/// One driving task's transaction manager.
struct XaSession {
    tm: SimpleTransactionManager,
}

impl PeerSession for XaSession {
    fn cycle(&mut self, _key: u64) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            self.tm.start_transaction().await.is_ok() && self.tm.commit_transaction().await.is_ok()
        })
    }
}

/// A [`Participant`] as an XA resource manager.
struct ParticipantRm {
    participant: Arc<dyn Participant>,
    ids: IdPool,
}

impl fmt::Debug for ParticipantRm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParticipantRm")
            .field("participant", &self.participant.name())
            .finish()
    }
}

impl ParticipantRm {
    /// The participant-side id of XA transaction `xid`: its global
    /// transaction id (a little-endian `u64` counter in
    /// `SimpleTransactionManager`'s ids) picks one from the pool.
    fn id(&self, xid: &XaTransactionId) -> TransactionId {
        let gtid = xid
            .get_global_tid()
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes);
        self.ids.get(gtid)
    }

    async fn prepare(&self, id: TransactionId) -> Result<ReturnCode, RmError> {
        match self.participant.prepare(id).await {
            PreparedResult::Ready => Ok(ReturnCode::Ok),
            PreparedResult::ReadOnly => Ok(ReturnCode::ReadOnlyCommitted),
            PreparedResult::Aborted(reason) => Err(RmError::new(ErrorCode::RmError, reason)),
        }
    }
}

fn rm_error(e: ParticipantError) -> RmError {
    RmError::new(ErrorCode::RmError, e.message().to_owned())
}

#[async_trait]
impl ResourceManager for ParticipantRm {
    async fn start(&mut self, _id: XaTransactionId) -> Result<ReturnCode, RmError> {
        Ok(ReturnCode::Ok)
    }

    async fn start_by_joining(&mut self, _id: XaTransactionId) -> Result<ReturnCode, RmError> {
        Ok(ReturnCode::Ok)
    }

    async fn start_by_resuming(&mut self, _id: XaTransactionId) -> Result<ReturnCode, RmError> {
        Ok(ReturnCode::Ok)
    }

    async fn end_success(&mut self, _id: XaTransactionId) -> Result<ReturnCode, RmError> {
        Ok(ReturnCode::Ok)
    }

    async fn end_failure(&mut self, _id: XaTransactionId) -> Result<ReturnCode, RmError> {
        Ok(ReturnCode::Ok)
    }

    async fn end_suspend(&mut self, _id: XaTransactionId) -> Result<ReturnCode, RmError> {
        Ok(ReturnCode::Ok)
    }

    async fn prepare(&mut self, id: XaTransactionId) -> Result<ReturnCode, RmError> {
        let id = self.id(&id);
        ParticipantRm::prepare(self, id).await
    }

    async fn commit(&mut self, id: XaTransactionId) -> Result<ReturnCode, RmError> {
        let id = self.id(&id);
        self.participant.commit(id).await.map_err(rm_error)?;
        Ok(ReturnCode::Ok)
    }

    async fn commit_one_phase(&mut self, id: XaTransactionId) -> Result<ReturnCode, RmError> {
        let id = self.id(&id);
        if matches!(
            ParticipantRm::prepare(self, id).await?,
            ReturnCode::ReadOnlyCommitted
        ) {
            return Ok(ReturnCode::ReadOnlyCommitted);
        }
        self.participant.commit(id).await.map_err(rm_error)?;
        Ok(ReturnCode::Ok)
    }

    async fn rollback(&mut self, id: XaTransactionId) -> Result<ReturnCode, RmError> {
        let id = self.id(&id);
        self.participant.rollback(id).await.map_err(rm_error)?;
        Ok(ReturnCode::Ok)
    }

    async fn forget(&mut self, _id: XaTransactionId) -> Result<ReturnCode, RmError> {
        Ok(ReturnCode::Ok)
    }

    async fn recover(&mut self) -> Result<Vec<XaTransactionId>, RmError> {
        Ok(Vec::new())
    }

    async fn begin_recover(&mut self) -> Result<Vec<XaTransactionId>, RmError> {
        Ok(Vec::new())
    }

    async fn end_recover(&mut self) -> Result<Vec<XaTransactionId>, RmError> {
        Ok(Vec::new())
    }
}
