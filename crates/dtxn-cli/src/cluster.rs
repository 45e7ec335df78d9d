//! `dtxn serve --node-id`: the HTTP server's view of a cluster of
//! coordinators on one PostgreSQL ([`dtxn::log::PostgresLog::join_cluster`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dtxn::log::{ClusterView, NodeInfo};
use dtxn::{TransactionCoordinator, TransactionId};
use dtxn_http::server::{Cluster, ClusterError, ClusterFuture, ClusterNode, ClusterStatus};
use tokio::time::Instant;

/// How long a copy of the owners table answers for an incarnation it
/// holds. Ownership moves only when a node is taken over; a stale answer
/// costs a failed forward to the dead node, which makes the next lookup
/// read the table again.
const FRESH: Duration = Duration::from_secs(1);

/// How often, at most, the owners table is read. A lookup the copy cannot
/// answer (an incarnation that just started, a client's typo, or a hostile
/// flood of made-up ids) waits for the next read, shared by every lookup
/// waiting: requests cannot be turned into database queries.
const MIN_REFRESH: Duration = Duration::from_millis(100);

/// The cluster of one `dtxn serve` process: its node, a copy of the
/// store's owners table, and its coordinator's lease.
pub struct PgCluster {
    view: ClusterView,
    coordinator: TransactionCoordinator,
    owners: Arc<Owners>,
}

struct Owners {
    copy: Mutex<Copy>,
    /// One read of the table at a time; lookups that miss wait for it.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Copy {
    /// When the table was read (`None`: never, or the copy was dropped).
    read_at: Option<Instant>,
    /// Incarnation → owner; this node's own incarnations map to `None`.
    owner: HashMap<u64, Option<ClusterNode>>,
    /// A forward to an owner from this copy failed: read again as soon as
    /// [`MIN_REFRESH`] allows.
    stale: bool,
}

impl Copy {
    /// The owner of `incarnation` from this copy, if it knows it and is
    /// fresh.
    fn answer(&self, incarnation: u64, now: Instant) -> Option<Option<ClusterNode>> {
        let age = now.saturating_duration_since(self.read_at?);
        let fresh = age < FRESH && !self.stale;
        self.owner.get(&incarnation).filter(|_| fresh).cloned()
    }

    /// The owner of `incarnation` from a copy read at or after `since`.
    fn answer_since(&self, incarnation: u64, since: Instant) -> Option<Option<ClusterNode>> {
        self.read_at.filter(|at| *at >= since)?;
        Some(self.owner.get(&incarnation).cloned().flatten())
    }

    /// When the table may be read next.
    fn next_read(&self) -> Option<Instant> {
        self.read_at.map(|at| at + MIN_REFRESH)
    }
}

impl PgCluster {
    pub fn new(view: ClusterView, coordinator: TransactionCoordinator) -> Self {
        Self {
            view,
            coordinator,
            owners: Arc::new(Owners {
                copy: Mutex::default(),
                reading: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

impl Owners {
    fn copy(&self) -> std::sync::MutexGuard<'_, Copy> {
        self.copy.lock().unwrap_or_else(PoisonError::into_inner)
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
        if let Some(owner) = self.owners.copy().answer(key, Instant::now()) {
            return Box::pin(std::future::ready(Ok(owner)));
        }
        let (view, owners) = (self.view.clone(), Arc::clone(&self.owners));
        let asked = Instant::now();
        Box::pin(async move {
            let _reading = owners.reading.lock().await;
            // Read meanwhile by another lookup?
            let next_read = {
                let copy = owners.copy();
                if let Some(owner) = copy.answer_since(key, asked) {
                    return Ok(owner);
                }
                copy.next_read()
            };
            if let Some(at) = next_read {
                tokio::time::sleep_until(at).await;
            }
            let read_at = Instant::now();
            let table = view.owners().await.map_err(store_error)?;
            let me = view.node_id();
            let owner = table
                .into_iter()
                .map(|(incarnation, info)| {
                    // This node's own ids are answered here.
                    let other = (info.node_id != me).then(|| node(info));
                    (incarnation, other)
                })
                .collect::<HashMap<_, _>>();
            let mut copy = owners.copy();
            *copy = Copy {
                read_at: Some(read_at),
                owner,
                stale: false,
            };
            Ok(copy.owner.get(&key).cloned().flatten())
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

    fn forget_owner(&self, _txn: TransactionId) {
        // The owner did not answer: it may have been taken over. The next
        // lookup reads the table again (still at most every MIN_REFRESH).
        self.owners.copy().stale = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn node(id: &str) -> ClusterNode {
        ClusterNode {
            node_id: id.to_owned(),
            address: format!("http://{id}"),
            live: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_owners_copy_is_read_again_at_most_every_tenth_of_a_second() {
        let now = Instant::now();
        let mut copy = Copy {
            read_at: Some(now),
            owner: HashMap::from([(1, Some(node("b"))), (2, None)]),
            stale: false,
        };
        assert_eq!(copy.answer(1, now), Some(Some(node("b"))));
        assert_eq!(copy.answer(2, now), Some(None));
        // An incarnation the copy does not know: read the table again, but
        // not before MIN_REFRESH; a lookup made before that read waits for
        // it and takes its answer.
        assert_eq!(copy.answer(3, now), None);
        assert_eq!(copy.next_read(), Some(now + MIN_REFRESH));
        assert_eq!(copy.answer_since(3, now), Some(None));
        assert_eq!(copy.answer_since(3, now + ms(1)), None);
        assert_eq!(copy.answer(1, now + FRESH), None);
        assert_eq!(Copy::default().answer(1, now), None);
        assert_eq!(Copy::default().next_read(), None);
        // A failed forward: the next lookup reads again.
        copy.stale = true;
        assert_eq!(copy.answer(1, now), None);
    }
}
