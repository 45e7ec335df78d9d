//! Several coordinators on one PostgreSQL (PROTOCOL.md rule 17), against a
//! real server: the one at `DTXN_TEST_POSTGRES_URL`, with the feature
//! `postgres-tests` (`.ci/run` starts it). Never skipped.
//!
//! Leases here are the database's own time (`now()`), so these tests wait
//! on the wall clock, briefly (leases of 300 ms), and poll for what they
//! wait for. Each test uses a cluster schema of its own.

#![cfg(feature = "postgres-tests")]

use std::sync::Arc;
use std::time::Duration;

use dtxn::log::{
    ClusterOptions, CommitRecord, DecisionLog, LogError, LoggedParticipant, PostgresLog,
};
use dtxn::TransactionId;
use sqlx::Connection;

const LEASE: Duration = Duration::from_millis(300);

fn url() -> String {
    std::env::var("DTXN_TEST_POSTGRES_URL")
        .expect("DTXN_TEST_POSTGRES_URL must name a PostgreSQL server (see .ci/postgres-up)")
}

/// A cluster schema no other test (or earlier run) uses.
fn cluster() -> String {
    format!("c{:012x}", fastrand::u64(..) >> 16)
}

async fn join(cluster: &str, node: &str) -> PostgresLog {
    let options = ClusterOptions::new(node, format!("http://{node}.local"))
        .lease(LEASE)
        .schema(cluster);
    // A node id whose previous process just went waits for its lock.
    for _ in 0..400 {
        match PostgresLog::join_cluster(&url(), options.clone()).await {
            Ok(log) => return log,
            Err(LogError::Locked { .. }) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("node {node} was never released");
}

fn record(incarnation: u64, sequence: u64) -> CommitRecord {
    CommitRecord {
        txn: TransactionId::from_u128(u128::from(incarnation) << 64 | u128::from(sequence)),
        participants: vec![LoggedParticipant {
            key: "users".into(),
            payload: None,
        }],
    }
}

/// Makes `node`'s lease expire now, as if it had stopped renewing it long
/// ago (its process hung, or lost the network).
async fn expire(cluster: &str, node: &str) {
    let mut conn = sqlx::PgConnection::connect(&url()).await.unwrap();
    sqlx::query(&format!(
        "UPDATE {cluster}.dtxn_nodes SET lease_expires = now() - interval '1 second' WHERE node = $1"
    ))
    .bind(node)
    .execute(&mut conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_survivor_takes_over_a_dead_nodes_decisions_and_ids_and_fences_it_out() {
    let cluster = cluster();
    let a = join(&cluster, "a").await;
    let b = join(&cluster, "b").await;
    let contents = b.open(0xb0).await.unwrap();
    assert_eq!(contents.incarnations, [0xb0]);
    b.log_commit(record(0xb0, 1)).await.unwrap();
    b.log_commit(record(0xb0, 2)).await.unwrap();
    b.log_end(record(0xb0, 2).txn);
    a.open(0xa0).await.unwrap();
    assert!(b.lease().unwrap().is_held());

    // b is alive and renewing: nothing to take over.
    assert_eq!(a.take_over().await.unwrap(), None);
    expire(&cluster, "b").await;
    let taken = a.take_over().await.unwrap().expect("b's lease expired");
    assert_eq!(taken.node, "b");
    assert_eq!(taken.incarnations, [0xb0]);
    // Its ended decision may come along (ends are lazy); its live one must.
    assert!(taken.in_doubt.contains(&record(0xb0, 1)));
    assert_eq!(a.take_over().await.unwrap(), None);

    // b, back from its pause, can write nothing: it is fenced for good.
    let fenced = b.log_commit(record(0xb0, 3)).await.unwrap_err();
    assert!(
        matches!(fenced, LogError::Fenced { ref node } if node == "b"),
        "{fenced}"
    );
    assert!(b.lease().unwrap().is_lost());

    // The cluster says who owns what now.
    let view = a.cluster().unwrap();
    let owner = view.owner_of(record(0xb0, 9).txn).await.unwrap().unwrap();
    assert_eq!(owner.node_id, "a");
    assert_eq!(view.owner_of(record(0xcc, 1).txn).await.unwrap(), None);
    let nodes = view.nodes().await.unwrap();
    let live: Vec<_> = nodes.iter().map(|n| (n.node_id.as_str(), n.live)).collect();
    assert_eq!(live, [("a", true), ("b", false)]);

    // a's part of the log holds b's decision now: a restart of a finds it.
    drop(a);
    let a = join(&cluster, "a").await;
    let contents = a.open(0xa1).await.unwrap();
    assert!(contents.in_doubt.contains(&record(0xb0, 1)));
    let mut incarnations = contents.incarnations;
    incarnations.sort_unstable();
    assert_eq!(incarnations, [0xa0, 0xa1, 0xb0]);
}

#[tokio::test]
async fn of_survivors_racing_for_a_dead_node_exactly_one_takes_it() {
    let cluster = cluster();
    let dead = join(&cluster, "dead").await;
    dead.open(0xd0).await.unwrap();
    dead.log_commit(record(0xd0, 1)).await.unwrap();
    let survivors: Vec<PostgresLog> = futures_join(["s1", "s2", "s3", "s4"].map(|node| {
        let cluster = cluster.clone();
        async move { join(&cluster, node).await }
    }))
    .await;
    for (i, s) in survivors.iter().enumerate() {
        s.open(0x50 + i as u64).await.unwrap();
    }
    expire(&cluster, "dead").await;
    for _round in 0..5 {
        let attempts = survivors.iter().map(|s| s.take_over());
        let results = futures_join(attempts).await;
        let taken: Vec<_> = results.into_iter().filter_map(Result::unwrap).collect();
        assert!(taken.len() <= 1, "{taken:?}");
        if let [taken] = &taken[..] {
            assert_eq!(taken.node, "dead");
            assert_eq!(taken.in_doubt, [record(0xd0, 1)]);
            return;
        }
    }
    panic!("nobody took the dead node over");
}

#[tokio::test]
async fn a_node_that_rejoins_before_anyone_took_it_over_finds_its_decisions() {
    let cluster = cluster();
    let other = join(&cluster, "other").await;
    other.open(0x10).await.unwrap();
    let node = join(&cluster, "n").await;
    node.open(0x20).await.unwrap();
    node.log_commit(record(0x20, 1)).await.unwrap();
    let epoch =
        |nodes: &[dtxn::log::NodeInfo]| nodes.iter().find(|n| n.node_id == "n").unwrap().epoch;
    let before = epoch(&other.cluster().unwrap().nodes().await.unwrap());
    drop(node);
    let node = join(&cluster, "n").await;
    let contents = node.open(0x21).await.unwrap();
    assert_eq!(contents.in_doubt, [record(0x20, 1)]);
    let mut incarnations = contents.incarnations;
    incarnations.sort_unstable();
    assert_eq!(incarnations, [0x20, 0x21]);
    let after = epoch(&other.cluster().unwrap().nodes().await.unwrap());
    assert_eq!(after, before + 1);
    // Renewed by its join: nobody takes it over.
    assert_eq!(other.take_over().await.unwrap(), None);
}

#[tokio::test]
async fn an_idle_node_keeps_its_lease_and_a_dropped_one_is_taken_over_after_it() {
    let cluster = cluster();
    let a = join(&cluster, "a").await;
    a.open(1).await.unwrap();
    let b = join(&cluster, "b").await;
    b.open(2).await.unwrap();
    b.log_commit(record(2, 1)).await.unwrap();
    // Four leases without a write: b's writer renews on its own.
    tokio::time::sleep(LEASE * 4).await;
    assert!(b.lease().unwrap().is_held());
    assert_eq!(a.take_over().await.unwrap(), None);
    // b's process goes away: its lease runs out, then a takes over.
    drop(b);
    let mut taken = None;
    for _ in 0..100 {
        if let Some(t) = a.take_over().await.unwrap() {
            taken = Some(t);
            break;
        }
        tokio::time::sleep(LEASE / 10).await;
    }
    let taken = taken.expect("b was never taken over");
    assert_eq!(taken.in_doubt, [record(2, 1)]);
}

#[tokio::test]
async fn bad_node_ids_schemas_and_leases_are_refused_with_a_typed_error() {
    for node in ["", "Upper", "1abc", "a-b", &"x".repeat(60)] {
        let options = ClusterOptions::new(node, "http://x").schema(cluster());
        let e = PostgresLog::join_cluster(&url(), options)
            .await
            .unwrap_err();
        assert!(matches!(e, LogError::InvalidNodeId { .. }), "{node}: {e}");
    }
    for lease in [Duration::ZERO, Duration::from_millis(10), Duration::MAX] {
        let options = ClusterOptions::new("a", "http://x")
            .schema(cluster())
            .lease(lease);
        let e = PostgresLog::join_cluster(&url(), options)
            .await
            .unwrap_err();
        assert!(matches!(e, LogError::InvalidLease { .. }), "{e}");
    }
    let options = ClusterOptions::new("a", "http://x").schema("Not-A-Schema");
    let e = PostgresLog::join_cluster(&url(), options)
        .await
        .unwrap_err();
    assert!(matches!(e, LogError::InvalidSchema { .. }), "{e}");
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<PostgresLog>();
    is::<dtxn::log::ClusterView>();
    is::<Arc<dyn DecisionLog>>();
}
