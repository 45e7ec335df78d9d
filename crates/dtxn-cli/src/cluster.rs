//! `dtxn serve --node-id`: the HTTP server's view of a cluster of
//! coordinators on one PostgreSQL ([`dtxn::log::PostgresLog::join_cluster`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dtxn::log::{ClusterView, NodeInfo};
use dtxn::{TransactionCoordinator, TransactionId};
use dtxn_http::server::{Cluster, ClusterError, ClusterFuture, ClusterNode, ClusterStatus};
use tokio::time::Instant;

/// How long an answer "who owns this incarnation" is reused. Ownership
/// moves only when a node is taken over; a stale answer costs a failed
/// forward to the dead node, after which it is asked again.
const OWNER_CACHE: Duration = Duration::from_secs(1);

/// Most incarnations remembered (an incarnation is a process start).
const OWNER_CACHE_LEN: usize = 4096;

/// Owners by incarnation, with when they were asked.
type OwnerCache = Mutex<HashMap<u64, (Instant, Option<ClusterNode>)>>;

/// The cluster of one `dtxn serve` process: its node, the store's answers,
/// and its coordinator's lease.
pub struct PgCluster {
    view: ClusterView,
    coordinator: TransactionCoordinator,
    owners: Arc<OwnerCache>,
}

impl PgCluster {
    pub fn new(view: ClusterView, coordinator: TransactionCoordinator) -> Self {
        Self {
            view,
            coordinator,
            owners: Arc::default(),
        }
    }
}

fn incarnation(txn: TransactionId) -> u64 {
    (txn.as_u128() >> 64) as u64
}

fn node(info: NodeInfo) -> ClusterNode {
    ClusterNode {
        node_id: info.node_id,
        address: info.address,
        live: info.live,
    }
}

fn store_error(e: dtxn::log::LogError) -> ClusterError {
    ClusterError::Store {
        message: e.to_string(),
    }
}

impl Cluster for PgCluster {
    fn node_id(&self) -> &str {
        self.view.node_id()
    }

    fn owner(&self, txn: TransactionId) -> ClusterFuture<Option<ClusterNode>> {
        let key = incarnation(txn);
        let now = Instant::now();
        let cached = self
            .owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .filter(|(at, _)| now.duration_since(*at) < OWNER_CACHE)
            .map(|(_, owner)| owner.clone());
        if let Some(owner) = cached {
            return Box::pin(std::future::ready(Ok(owner)));
        }
        let view = self.view.clone();
        let owners = Arc::clone(&self.owners);
        Box::pin(async move {
            let owner = view
                .owner_of(txn)
                .await
                .map_err(store_error)?
                // This node's own ids are answered here.
                .filter(|info| info.node_id != view.node_id())
                .map(node);
            let mut owners = owners.lock().unwrap_or_else(PoisonError::into_inner);
            if owners.len() >= OWNER_CACHE_LEN {
                owners.clear();
            }
            owners.insert(key, (Instant::now(), owner.clone()));
            Ok(owner)
        })
    }

    fn nodes(&self) -> ClusterFuture<Vec<ClusterNode>> {
        let view = self.view.clone();
        Box::pin(async move {
            Ok(view
                .nodes()
                .await
                .map_err(store_error)?
                .into_iter()
                .map(node)
                .collect())
        })
    }

    fn status(&self) -> ClusterStatus {
        let Some(ownership) = self.coordinator.ownership() else {
            return ClusterStatus::default();
        };
        ClusterStatus {
            lease_held: ownership.lease_held,
            fenced: ownership.fenced,
            takeovers: ownership.takeovers,
            adopted_decisions: ownership.adopted_decisions,
            owned_incarnations: ownership.incarnations as u64,
        }
    }

    fn forget_owner(&self, txn: TransactionId) {
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&incarnation(txn));
    }
}
