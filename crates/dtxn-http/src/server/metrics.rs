//! Prometheus metrics: the coordinator's counts read at scrape time, phase
//! latencies and HTTP answers measured by the server; in a cluster, the
//! cluster's status read at scrape time and the forwards counted.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use dtxn::TransactionCoordinator;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::cluster::Cluster;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = [(&'static str, &'static str); 1];

/// A coordinator phase, timed by the handlers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Phase {
    Prepare,
    Commit,
    Rollback,
}

impl Phase {
    fn label(self) -> Labels {
        let name = match self {
            Self::Prepare => "prepare",
            Self::Commit => "commit",
            Self::Rollback => "rollback",
        };
        [("phase", name)]
    }
}

fn phase_histogram() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// The server's metrics registry.
pub(crate) struct Metrics {
    registry: Registry,
    phase_duration: Family<Labels, Histogram, fn() -> Histogram>,
    http_requests: Family<Labels, Counter>,
    /// Requests forwarded to their transaction's owner (cluster mode).
    forwarded: Counter,
    /// Forwards that failed, by reason (cluster mode).
    forward_failures: Family<Labels, Counter>,
}

impl Metrics {
    /// The registry; with a `cluster`, its gauges and the forwarding
    /// counters too.
    pub fn new(coordinator: TransactionCoordinator, cluster: Option<Arc<dyn Cluster>>) -> Self {
        let mut registry = Registry::default();
        let phase_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(phase_histogram);
        registry.register(
            "dtxn_phase_duration_seconds",
            "Time the coordinator took to answer prepare, commit and rollback requests",
            phase_duration.clone(),
        );
        let http_requests = Family::<Labels, Counter>::default();
        registry.register(
            "dtxn_http_requests",
            "HTTP requests answered, by status class",
            http_requests.clone(),
        );
        registry.register_collector(Box::new(CoordinatorCollector { coordinator }));
        let forwarded = Counter::default();
        let forward_failures = Family::<Labels, Counter>::default();
        if let Some(cluster) = cluster {
            registry.register(
                "dtxn_forwarded_requests",
                "Requests forwarded to the node owning their transaction",
                forwarded.clone(),
            );
            // Both reasons show from the start, at zero.
            for reason in ["owner_unavailable", "cluster_unavailable"] {
                drop(forward_failures.get_or_create(&[("reason", reason)]));
            }
            registry.register(
                "dtxn_forward_failures",
                "Requests that could not be forwarded: owner_unavailable (the owner did not \
                 answer) or cluster_unavailable (the owner could not be found)",
                forward_failures.clone(),
            );
            registry.register_collector(Box::new(ClusterCollector { cluster }));
        }
        Self {
            registry,
            phase_duration,
            http_requests,
            forwarded,
            forward_failures,
        }
    }

    /// A request forwarded to its transaction's owner.
    pub fn count_forwarded(&self) {
        self.forwarded.inc();
    }

    /// A request that could not be forwarded, by error code.
    pub fn count_forward_failure(&self, reason: &'static str) {
        self.forward_failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn observe_phase(&self, phase: Phase, elapsed: Duration) {
        self.phase_duration
            .get_or_create(&phase.label())
            .observe(elapsed.as_secs_f64());
    }

    pub fn count_response(&self, status: StatusCode) {
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests.get_or_create(&[("code", class)]).inc();
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads the coordinator's lifetime counts at scrape time, so they are
/// exact whoever drove the coordinator (this server or code in-process).
#[derive(Debug)]
struct CoordinatorCollector {
    coordinator: TransactionCoordinator,
}

impl Collector for CoordinatorCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.coordinator.stats();
        let mut family = encoder.encode_descriptor(
            "dtxn_transactions",
            "Transactions finished, by outcome",
            None,
            MetricType::Counter,
        )?;
        for (outcome, count) in [("committed", stats.committed), ("aborted", stats.aborted)] {
            ConstCounter::new(count).encode(family.encode_family(&[("outcome", outcome)])?)?;
        }
        let hazards = ConstCounter::new(stats.hazards);
        hazards.encode(encoder.encode_descriptor(
            "dtxn_hazards",
            "Participants given up on in phase 2 (heuristic hazards)",
            None,
            hazards.metric_type(),
        )?)?;
        let in_flight = ConstGauge::new(stats.unfinished as i64);
        in_flight.encode(encoder.encode_descriptor(
            "dtxn_transactions_in_flight",
            "Transactions not yet committed or aborted",
            None,
            in_flight.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Reads the cluster's status at scrape time.
struct ClusterCollector {
    cluster: Arc<dyn Cluster>,
}

impl std::fmt::Debug for ClusterCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCollector")
            .field("node", &self.cluster.node_id())
            .finish()
    }
}

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.cluster.status();
        for (name, help, value) in [
            (
                "dtxn_cluster_lease_held",
                "1 while this node holds its lease in the cluster store",
                i64::from(status.lease_held),
            ),
            (
                "dtxn_cluster_fenced",
                "1 once another node has taken over this node's transactions",
                i64::from(status.fenced),
            ),
            (
                "dtxn_cluster_owned_incarnations",
                "Incarnations (transaction id prefixes) this node owns: its own and those taken over",
                i64::try_from(status.owned_incarnations).unwrap_or(i64::MAX),
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        for (name, help, value) in [
            (
                "dtxn_cluster_takeovers",
                "Takeovers of other nodes' transactions this node made",
                status.takeovers,
            ),
            (
                "dtxn_cluster_adopted_decisions",
                "Logged Commit decisions this node adopted in takeovers",
                status.adopted_decisions,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
