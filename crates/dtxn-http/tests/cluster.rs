//! Cluster mode over real loopback connections: several coordinator
//! servers in this process, each with its own coordinator and a test
//! [`Cluster`] backed by a shared in-memory "store" (nodes and owners).
//! The owner of a transaction is the node that began it, recorded by the
//! test after `POST /transactions`.
//!
//! Real sockets need the real clock; nothing here waits on it except the
//! bounds that turn a hang into a failure. A node "down" is a server that
//! was stopped (its listener closed), or an address nothing listens on.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtxn::log::{CommitRecord, DecisionLog, LogContents, LogFuture, ParticipantRegistry};
use dtxn::{
    async_trait, CoordinatorConfig, Participant, ParticipantError, PreparedResult,
    TransactionCoordinator, TransactionId, TransactionState,
};
use dtxn_http::participant_router;
use dtxn_http::server::{
    serve, Cluster, ClusterError, ClusterFuture, ClusterNode, ClusterStatus, ServerConfig,
    ServerError, ShutdownReport, FORWARDED_BY_HEADER, MAX_NODE_ANSWER_BYTES,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A bound on every wait, so a broken server fails a test instead of
/// hanging it.
const PATIENCE: Duration = Duration::from_secs(5);

/// The bearer token every node of the test cluster shares.
const TOKEN: &str = "cluster-s3cret";

/// The nodes the store knows.
type Nodes = Arc<Mutex<Vec<ClusterNode>>>;
/// Who owns which transaction, in one node's view of the store.
type Owners = Arc<Mutex<HashMap<TransactionId, String>>>;

/// The test cluster's view of the store: the nodes, and who owns what.
/// Nodes normally share both maps; two nodes given different owner maps
/// disagree about an owner.
struct TestCluster {
    node: String,
    nodes: Nodes,
    owners: Owners,
    /// When set, `owner` and `nodes` fail as a store that is down would.
    store_down: AtomicBool,
    status: Mutex<ClusterStatus>,
    /// Every `forget_owner` call.
    forgotten: Mutex<Vec<TransactionId>>,
}

impl TestCluster {
    fn new(node: &str, nodes: &Nodes, owners: &Owners) -> Arc<Self> {
        Arc::new(Self {
            node: node.to_owned(),
            nodes: Arc::clone(nodes),
            owners: Arc::clone(owners),
            store_down: AtomicBool::new(false),
            status: Mutex::new(ClusterStatus {
                lease_held: true,
                ..ClusterStatus::default()
            }),
            forgotten: Mutex::new(Vec::new()),
        })
    }

    fn set_status(&self, status: ClusterStatus) {
        *self.status.lock().unwrap() = status;
    }

    fn forgotten(&self) -> Vec<TransactionId> {
        self.forgotten.lock().unwrap().clone()
    }

    fn store_error(&self) -> Option<ClusterError> {
        self.store_down
            .load(Ordering::SeqCst)
            .then(|| ClusterError::Store {
                message: "connection refused (postgres://dtxn:hunter2@db)".into(),
            })
    }
}

impl Cluster for TestCluster {
    fn node_id(&self) -> &str {
        &self.node
    }

    /// Names the owner even when it is this node: the server must answer
    /// those locally.
    fn owner(&self, txn: TransactionId) -> ClusterFuture<Option<ClusterNode>> {
        let answer = match self.store_error() {
            Some(e) => Err(e),
            None => {
                let owner = self.owners.lock().unwrap().get(&txn).cloned();
                let nodes = self.nodes.lock().unwrap();
                Ok(owner.and_then(|id| nodes.iter().find(|n| n.node_id == id).cloned()))
            }
        };
        Box::pin(async move { answer })
    }

    fn nodes(&self) -> ClusterFuture<Vec<ClusterNode>> {
        let answer = match self.store_error() {
            Some(e) => Err(e),
            None => Ok(self.nodes.lock().unwrap().clone()),
        };
        Box::pin(async move { answer })
    }

    fn status(&self) -> ClusterStatus {
        *self.status.lock().unwrap()
    }

    fn forget_owner(&self, txn: TransactionId) {
        self.forgotten.lock().unwrap().push(txn);
    }
}

/// An in-test participant service that records the calls it receives.
struct Service {
    name: &'static str,
    calls: Mutex<Vec<String>>,
}

impl Service {
    fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            calls: Mutex::new(Vec::new()),
        })
    }

    fn record(&self, call: &str, txn: TransactionId) {
        self.calls.lock().unwrap().push(format!("{call} {txn}"));
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Participant for Service {
    fn name(&self) -> &str {
        self.name
    }
    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        self.record("prepare", txn);
        PreparedResult::Ready
    }
    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.record("commit", txn);
        Ok(())
    }
    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.record("rollback", txn);
        Ok(())
    }
}

/// Serves `service` on a fresh loopback port; returns its base URL.
async fn spawn_service(service: Arc<Service>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, participant_router(service)).await });
    url
}

/// A loopback address nothing listens on any more.
async fn closed_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    address
}

/// An answer: status, headers and the JSON body.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("<no code>")
    }
}

/// A running node: its server, coordinator and cluster view.
struct Node {
    id: &'static str,
    base: String,
    cluster: Arc<TestCluster>,
    coordinator: TransactionCoordinator,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<ShutdownReport, ServerError>>,
}

/// The test client: no proxy from the environment, bounded waits.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// Starts node `id` serving `coordinator`, and adds it (live) to `cluster`'s
/// node list.
async fn start_node(
    id: &'static str,
    cluster: Arc<TestCluster>,
    coordinator: TransactionCoordinator,
    config: ServerConfig,
) -> Node {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    cluster.nodes.lock().unwrap().push(ClusterNode {
        node_id: id.to_owned(),
        address: base.clone(),
        live: true,
    });
    let config = config
        .bearer_token(TOKEN)
        .cluster(Arc::clone(&cluster) as Arc<dyn Cluster>);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, coordinator.clone(), config, async {
        let _ = stopped.await;
    }));
    Node {
        id,
        base,
        cluster,
        coordinator,
        stop: Some(stop),
        task,
    }
}

impl Node {
    /// Sends a request with the cluster's token and `headers`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = http()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status}: the body is not JSON ({e}): {text:?}"));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send(method, path, body, &[]).await
    }

    /// Begins a transaction here and records this node as its owner.
    async fn begin(&self) -> (String, TransactionId) {
        let answer = self.call(Method::POST, "/transactions", None).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        let id = answer.body["id"].as_str().unwrap().to_owned();
        let txn: TransactionId = id.parse().unwrap();
        self.cluster
            .owners
            .lock()
            .unwrap()
            .insert(txn, self.id.to_owned());
        (id, txn)
    }

    async fn metrics(&self) -> String {
        let response = http()
            .get(format!("{}/metrics", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// The value of the sample `name` (with its labels, if any) in
    /// `/metrics`.
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Stops the server and waits for it to finish.
    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap();
    }
}

/// A cluster's shared store: empty node list and owner map.
fn store() -> (Nodes, Owners) {
    (Arc::default(), Arc::default())
}

/// Two nodes `a` and `b` sharing a store, with `config`.
async fn two_nodes(config: ServerConfig) -> (Node, Node) {
    let (nodes, owners) = store();
    let a = start_node(
        "a",
        TestCluster::new("a", &nodes, &owners),
        TransactionCoordinator::new(),
        config.clone(),
    )
    .await;
    let b = start_node(
        "b",
        TestCluster::new("b", &nodes, &owners),
        TransactionCoordinator::new(),
        config,
    )
    .await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_begun_on_one_node_commits_through_another() {
    let users = Service::new("users");
    let billing = Service::new("billing");
    let config = ServerConfig::default()
        .participant("users", spawn_service(Arc::clone(&users)).await)
        .participant("billing", spawn_service(Arc::clone(&billing)).await);
    let (a, b) = two_nodes(config).await;
    let (id, txn) = a.begin().await;
    let path = |rest: &str| format!("/transactions/{id}{rest}");

    // Registration: a POST body goes through, and so does the owner's
    // status, 201 then 200.
    for name in ["users", "billing"] {
        let answer = b
            .call(
                Method::POST,
                &path("/participants"),
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        assert_eq!(answer.body["registration"], "registered");
    }
    let again = b
        .call(
            Method::POST,
            &path("/participants"),
            Some(json!({"name": "users"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["registration"], "already_registered");
    // The owner's errors come back as they are.
    let early = b.call(Method::POST, &path("/commit"), None).await;
    assert_eq!(early.status, StatusCode::CONFLICT, "{}", early.body);
    assert_eq!(early.code(), "invalid_state");
    assert_eq!(
        early.headers["content-type"].to_str().unwrap(),
        "application/json"
    );

    let prepared = b.call(Method::POST, &path("/prepare"), None).await;
    assert_eq!(prepared.status, StatusCode::OK, "{}", prepared.body);
    assert_eq!(prepared.body, json!({"outcome": "prepared"}));
    let state = b.call(Method::GET, &path(""), None).await;
    assert_eq!(state.body, json!({"id": id, "state": "prepared"}));

    let committed = b.call(Method::POST, &path("/commit"), None).await;
    assert_eq!(committed.status, StatusCode::OK, "{}", committed.body);
    assert_eq!(committed.body["decision"], "commit");
    assert_eq!(committed.body["hazards"], json!([]));
    let state = b.call(Method::GET, &path(""), None).await;
    assert_eq!(state.body["state"], "committed");
    let report = b.call(Method::GET, &path("/report"), None).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.body);
    assert_eq!(report.body["state"], "committed");
    assert_eq!(report.body["participants"].as_array().unwrap().len(), 2);
    let outcome = b.call(Method::GET, &path("/outcome"), None).await;
    assert_eq!(outcome.body, json!({"id": id, "outcome": "committed"}));

    // Every call ran once, on the owner; the other node never held it.
    for service in [&users, &billing] {
        assert_eq!(
            service.calls(),
            [format!("prepare {txn}"), format!("commit {txn}")]
        );
    }
    assert_eq!(
        a.coordinator.get_transaction_state(txn).unwrap(),
        TransactionState::Committed
    );
    assert!(b.coordinator.get_transaction_state(txn).is_err());
    // The owner answered its own requests itself, though its cluster
    // names it as the owner.
    assert_eq!(b.metric("dtxn_forwarded_requests_total").await, Some(10.0));
    assert_eq!(a.metric("dtxn_forwarded_requests_total").await, Some(0.0));
    let local = a.call(Method::GET, &path("/outcome"), None).await;
    assert_eq!(local.body["outcome"], "committed");
    assert_eq!(a.metric("dtxn_forwarded_requests_total").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_retry_and_resolve_are_forwarded_and_unauthenticated_requests_are_not() {
    let users = Service::new("users");
    let config =
        ServerConfig::default().participant("users", spawn_service(Arc::clone(&users)).await);
    let (a, b) = two_nodes(config).await;
    let (id, txn) = a.begin().await;
    let path = |rest: &str| format!("/transactions/{id}{rest}");
    b.call(
        Method::POST,
        &path("/participants"),
        Some(json!({"name": "users"})),
    )
    .await;

    let rolled_back = b.call(Method::POST, &path("/rollback"), None).await;
    assert_eq!(rolled_back.status, StatusCode::OK, "{}", rolled_back.body);
    assert_eq!(rolled_back.body["decision"], "abort");
    let retried = b.call(Method::POST, &path("/retry"), None).await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
    assert_eq!(retried.body, json!({"id": id, "state": "aborted"}));
    let resolved = b.call(Method::POST, &path("/resolve"), None).await;
    assert_eq!(resolved.status, StatusCode::NOT_FOUND, "{}", resolved.body);
    assert_eq!(resolved.code(), "no_logged_hazard");
    assert_eq!(
        a.coordinator.get_transaction_state(txn).unwrap(),
        TransactionState::Aborted
    );
    assert_eq!(b.metric("dtxn_forwarded_requests_total").await, Some(4.0));

    // No token: refused where it lands, never forwarded.
    let response = http()
        .get(format!("{}{}", b.base, path("")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(b.metric("dtxn_forwarded_requests_total").await, Some(4.0));
    // A wrong id is answered where it lands too.
    let bad = b.call(Method::GET, "/transactions/not-an-id", None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.code(), "invalid_id");
    // Begin and the list are this node's own.
    b.call(Method::POST, "/transactions", None).await;
    let list = b.call(Method::GET, "/transactions", None).await;
    assert_eq!(list.body["transactions"].as_array().unwrap().len(), 1);
    assert_eq!(b.metric("dtxn_forwarded_requests_total").await, Some(4.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_already_forwarded_is_answered_where_it_lands() {
    let (a, b) = two_nodes(ServerConfig::default()).await;
    let (id, _) = a.begin().await;
    let forwarded = [(FORWARDED_BY_HEADER, "a")];

    let state = b
        .send(
            Method::GET,
            &format!("/transactions/{id}"),
            None,
            &forwarded,
        )
        .await;
    assert_eq!(state.status, StatusCode::NOT_FOUND, "{}", state.body);
    assert_eq!(state.code(), "not_found");
    let outcome = b
        .send(
            Method::GET,
            &format!("/transactions/{id}/outcome"),
            None,
            &forwarded,
        )
        .await;
    assert_eq!(outcome.status, StatusCode::OK);
    assert_eq!(outcome.body["outcome"], "unknown");
    assert_eq!(b.metric("dtxn_forwarded_requests_total").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_disagree_about_an_owner_stop_after_one_hop() {
    let nodes = Arc::default();
    // Each node believes the other owns the transaction.
    let txn = TransactionId::from_u128(0x00c0_ffee);
    let a_view = Arc::new(Mutex::new(HashMap::from([(txn, "b".to_owned())])));
    let b_view = Arc::new(Mutex::new(HashMap::from([(txn, "a".to_owned())])));
    let config = ServerConfig::default();
    let a = start_node(
        "a",
        TestCluster::new("a", &nodes, &a_view),
        TransactionCoordinator::new(),
        config.clone(),
    )
    .await;
    let b = start_node(
        "b",
        TestCluster::new("b", &nodes, &b_view),
        TransactionCoordinator::new(),
        config,
    )
    .await;

    let answer = a
        .call(Method::GET, &format!("/transactions/{txn}"), None)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    assert_eq!(answer.code(), "not_found");
    assert_eq!(a.metric("dtxn_forwarded_requests_total").await, Some(1.0));
    assert_eq!(b.metric("dtxn_forwarded_requests_total").await, Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_that_is_down_answers_503_owner_unavailable_and_is_forgotten() {
    let (a, b) = two_nodes(ServerConfig::default()).await;
    let (id, txn) = a.begin().await;
    // Finished, so that stopping `a` has nothing to drain.
    let rolled_back = a
        .call(Method::POST, &format!("/transactions/{id}/rollback"), None)
        .await;
    assert_eq!(rolled_back.status, StatusCode::OK);
    a.stop().await;

    let answer = b
        .call(Method::GET, &format!("/transactions/{id}/outcome"), None)
        .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.code(), "owner_unavailable");
    assert!(answer.headers.contains_key("retry-after"));
    let error = answer.body["error"].as_str().unwrap();
    assert!(error.contains("\"a\""), "{error}");
    assert!(!error.contains(TOKEN), "{error}");
    assert_eq!(b.cluster.forgotten(), [txn]);
    assert_eq!(
        b.metric("dtxn_forward_failures_total{reason=\"owner_unavailable\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(b.metric("dtxn_forwarded_requests_total").await, Some(1.0));
}

/// A stand-in node that answers every request `200` with a JSON string
/// of exactly `bytes` bytes; returns its address.
async fn spawn_node_answering(bytes: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let body = format!("\"{}\"", "a".repeat(bytes - 2));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                // The request's head (a GET has no body).
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_answer_is_taken_up_to_the_cap_and_refused_beyond() {
    let (nodes, owners) = store();
    let a = start_node(
        "a",
        TestCluster::new("a", &nodes, &owners),
        TransactionCoordinator::new(),
        ServerConfig::default(),
    )
    .await;
    let at_cap = TransactionId::from_u128(1);
    let over_cap = TransactionId::from_u128(2);
    for (id, txn, bytes) in [
        ("x", at_cap, MAX_NODE_ANSWER_BYTES),
        ("y", over_cap, MAX_NODE_ANSWER_BYTES + 1),
    ] {
        let address = spawn_node_answering(bytes).await;
        nodes.lock().unwrap().push(ClusterNode {
            node_id: id.to_owned(),
            address,
            live: true,
        });
        owners.lock().unwrap().insert(txn, id.to_owned());
    }
    let get = |txn: TransactionId| {
        http()
            .get(format!("{}/transactions/{txn}/report", a.base))
            .bearer_auth(TOKEN)
            .send()
    };

    let response = get(at_cap).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), MAX_NODE_ANSWER_BYTES);
    let response = get(over_cap).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "owner_unavailable");
    assert!(body["error"].as_str().unwrap().contains("\"y\""));
    assert_eq!(a.cluster.forgotten(), [over_cap]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_lookup_that_fails_answers_503_cluster_unavailable() {
    let (a, b) = two_nodes(ServerConfig::default()).await;
    let (id, _) = a.begin().await;
    b.cluster.store_down.store(true, Ordering::SeqCst);

    let answer = b
        .call(Method::GET, &format!("/transactions/{id}"), None)
        .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.code(), "cluster_unavailable");
    assert!(answer.headers.contains_key("retry-after"));
    // The store's own error (here with credentials in it) is logged, not
    // answered.
    assert!(!answer.body["error"].as_str().unwrap().contains("hunter2"));
    assert_eq!(
        b.metric("dtxn_forward_failures_total{reason=\"cluster_unavailable\"}")
            .await,
        Some(1.0)
    );
    // The cluster-wide list needs the node list too; this node's does not.
    let list = b.call(Method::GET, "/admin/decisions", None).await;
    assert_eq!(
        list.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        list.body
    );
    assert_eq!(list.code(), "cluster_unavailable");
    let own = b
        .call(Method::GET, "/admin/decisions?scope=node", None)
        .await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);

    b.cluster.store_down.store(false, Ordering::SeqCst);
    let answer = b
        .call(Method::GET, &format!("/transactions/{id}"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_lease_lost_without_the_lease_or_once_fenced() {
    let (a, _b) = two_nodes(ServerConfig::default()).await;
    let ready = || async {
        // `/ready` needs no token.
        let response = http()
            .get(format!("{}/ready", a.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        (status, body["status"].as_str().unwrap().to_owned())
    };
    let held = ClusterStatus {
        lease_held: true,
        ..ClusterStatus::default()
    };
    assert_eq!(ready().await, (StatusCode::OK, "ready".to_owned()));
    for lost in [
        ClusterStatus {
            lease_held: false,
            ..held
        },
        ClusterStatus {
            fenced: true,
            ..held
        },
    ] {
        a.cluster.set_status(lost);
        assert_eq!(
            ready().await,
            (StatusCode::SERVICE_UNAVAILABLE, "lease_lost".to_owned()),
            "{lost:?}"
        );
    }
    a.cluster.set_status(held);
    assert_eq!(ready().await, (StatusCode::OK, "ready".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_cluster_status_at_scrape_time_and_count_forwards() {
    let (a, b) = two_nodes(ServerConfig::default()).await;
    a.cluster.set_status(ClusterStatus {
        lease_held: true,
        fenced: false,
        takeovers: 3,
        adopted_decisions: 5,
        owned_incarnations: 2,
    });
    let text = a.metrics().await;
    for line in [
        "# TYPE dtxn_cluster_lease_held gauge",
        "dtxn_cluster_lease_held 1",
        "dtxn_cluster_fenced 0",
        "dtxn_cluster_owned_incarnations 2",
        "# TYPE dtxn_cluster_takeovers_total counter",
        "dtxn_cluster_takeovers_total 3",
        "dtxn_cluster_adopted_decisions_total 5",
        "dtxn_forwarded_requests_total 0",
        "dtxn_forward_failures_total{reason=\"owner_unavailable\"} 0",
        "dtxn_forward_failures_total{reason=\"cluster_unavailable\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    a.cluster.set_status(ClusterStatus {
        lease_held: false,
        fenced: true,
        takeovers: 3,
        adopted_decisions: 5,
        owned_incarnations: 1,
    });
    assert_eq!(a.metric("dtxn_cluster_lease_held").await, Some(0.0));
    assert_eq!(a.metric("dtxn_cluster_fenced").await, Some(1.0));
    assert_eq!(a.metric("dtxn_cluster_owned_incarnations").await, Some(1.0));

    let (id, _) = a.begin().await;
    b.call(Method::GET, &format!("/transactions/{id}"), None)
        .await;
    assert_eq!(b.metric("dtxn_forwarded_requests_total").await, Some(1.0));
    b.call(Method::GET, &format!("/transactions/{id}/report"), None)
        .await;
    assert_eq!(b.metric("dtxn_forwarded_requests_total").await, Some(2.0));
}

#[tokio::test]
async fn a_lone_server_shows_no_cluster_metrics() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        TransactionCoordinator::new(),
        ServerConfig::default(),
        std::future::pending(),
    ));
    let text = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("dtxn_transactions_in_flight"), "{text}");
    assert!(!text.contains("dtxn_cluster_"), "{text}");
    assert!(!text.contains("dtxn_forward"), "{text}");
}

/// A decision log in memory: every write is durable at once.
#[derive(Default)]
struct MemoryLog;

impl DecisionLog for MemoryLog {
    fn open(&self, incarnation: u64) -> LogFuture<LogContents> {
        Box::pin(async move { Ok(LogContents::new(Vec::new(), vec![incarnation])) })
    }
    fn log_commit(&self, _: CommitRecord) -> LogFuture<()> {
        Box::pin(async { Ok(()) })
    }
    fn log_end(&self, _: TransactionId) {}
}

/// A participant whose commit fails for good: its transaction's Commit
/// decision stays in the log as a heuristic hazard.
struct Refuses;

#[async_trait]
impl Participant for Refuses {
    fn name(&self) -> &str {
        "ledger"
    }
    fn recovery_key(&self) -> Option<&str> {
        Some("ledger")
    }
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        Err(ParticipantError::permanent("ledger closed"))
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
}

/// A coordinator with a decision log holding one logged decision with a
/// hazard; returns it and the decision's transaction.
async fn coordinator_with_a_logged_hazard() -> (TransactionCoordinator, TransactionId) {
    let (coordinator, _) = TransactionCoordinator::recover(
        CoordinatorConfig::default(),
        Arc::new(MemoryLog),
        &ParticipantRegistry::new(),
    )
    .await
    .unwrap();
    let txn = coordinator.begin_transaction().unwrap();
    coordinator
        .register_participant(txn, Arc::new(Refuses))
        .unwrap();
    assert!(coordinator
        .prepare_transaction(txn)
        .await
        .unwrap()
        .is_prepared());
    let outcome = coordinator.commit_transaction(txn).await.unwrap();
    assert_eq!(outcome.hazards.len(), 1);
    assert_eq!(coordinator.logged_decisions().len(), 1);
    (coordinator, txn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_list_gathers_every_live_node_and_names_the_unreachable() {
    let (nodes, owners) = store();
    let (a_coordinator, a_txn) = coordinator_with_a_logged_hazard().await;
    let (b_coordinator, b_txn) = coordinator_with_a_logged_hazard().await;
    let a = start_node(
        "a",
        TestCluster::new("a", &nodes, &owners),
        a_coordinator,
        ServerConfig::default(),
    )
    .await;
    let b = start_node(
        "b",
        TestCluster::new("b", &nodes, &owners),
        b_coordinator,
        ServerConfig::default(),
    )
    .await;
    // `c` is live in the store but down; `d`'s lease lapsed, so it is not
    // asked at all.
    for (id, live) in [("c", true), ("d", false)] {
        let address = closed_address().await;
        nodes.lock().unwrap().push(ClusterNode {
            node_id: id.to_owned(),
            address,
            live,
        });
    }
    let entry = |txn: TransactionId, node: &str| json!({"id": txn.to_string(), "state": "committed", "hazards": ["ledger"], "node": node});
    let mut both = vec![(a_txn, "a"), (b_txn, "b")];
    both.sort();
    let both: Vec<Value> = both.into_iter().map(|(t, n)| entry(t, n)).collect();

    for query in ["", "?scope=cluster"] {
        let list = a
            .call(Method::GET, &format!("/admin/decisions{query}"), None)
            .await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        assert_eq!(
            list.body,
            json!({"decisions": both, "unreachable": ["c"]}),
            "{query}"
        );
    }
    let own = a
        .call(Method::GET, "/admin/decisions?scope=node", None)
        .await;
    assert_eq!(own.body, json!({"decisions": [entry(a_txn, "a")]}));
    let forwarded = b
        .send(
            Method::GET,
            "/admin/decisions",
            None,
            &[(FORWARDED_BY_HEADER, "a")],
        )
        .await;
    assert_eq!(forwarded.body, json!({"decisions": [entry(b_txn, "b")]}));

    let bad = a
        .call(Method::GET, "/admin/decisions?scope=everything", None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert_eq!(bad.code(), "invalid_query");
}

#[tokio::test]
async fn a_node_id_that_cannot_be_a_header_is_refused() {
    let (nodes, owners) = store();
    for id in ["", "two words", "é"] {
        let config = ServerConfig::default().cluster(TestCluster::new(id, &nodes, &owners));
        assert!(
            matches!(
                config.validate(None),
                Err(ServerError::InvalidSetting {
                    setting: "cluster",
                    ..
                })
            ),
            "{id:?}"
        );
    }
    let config = ServerConfig::default().forward_timeout(Duration::ZERO);
    assert!(matches!(
        config.validate(None),
        Err(ServerError::InvalidSetting {
            setting: "forward_timeout",
            ..
        })
    ));
    // The node is shown, nothing else of the cluster.
    let config = ServerConfig::default().cluster(TestCluster::new("node-7", &nodes, &owners));
    assert!(format!("{config:?}").contains("cluster: Some(\"node-7\")"));
}
