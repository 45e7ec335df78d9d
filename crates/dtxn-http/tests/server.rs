//! The coordinator's HTTP server over real loopback connections, with
//! participant services served by `participant_router`.
//!
//! Real sockets need the real clock, so nothing here pauses time; waits are
//! short and every one is bounded.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtxn::{
    async_trait, CoordinatorConfig, Participant, ParticipantError, PreparedResult,
    TransactionCoordinator, TransactionId, TransactionState,
};
use dtxn_http::participant_router;
use dtxn_http::server::{serve, ServerConfig, ServerError, ShutdownReport};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

/// A bound on every wait, so a broken server fails a test instead of
/// hanging it.
const PATIENCE: Duration = Duration::from_secs(5);

/// How a test participant votes.
enum Vote {
    Ready,
    Abort(&'static str),
    /// Signals `entered`, then waits for `release` before voting Ready.
    ReadyWhenReleased {
        entered: Arc<Notify>,
        release: Arc<Notify>,
    },
}

/// An in-test participant that records the calls it receives.
struct Service {
    name: &'static str,
    vote: Vote,
    calls: Mutex<Vec<String>>,
}

impl Service {
    fn new(name: &'static str, vote: Vote) -> Arc<Self> {
        Arc::new(Self {
            name,
            vote,
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
        match &self.vote {
            Vote::Ready => PreparedResult::Ready,
            Vote::Abort(reason) => PreparedResult::Aborted((*reason).to_owned()),
            Vote::ReadyWhenReleased { entered, release } => {
                entered.notify_one();
                release.notified().await;
                PreparedResult::Ready
            }
        }
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

/// A running coordinator server and a client for it.
struct Server {
    base: String,
    http: reqwest::Client,
    token: Option<&'static str>,
    coordinator: TransactionCoordinator,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<ShutdownReport, ServerError>>,
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

/// A configuration that lets clients register the loopback test services
/// by URL.
fn loopback() -> ServerConfig {
    ServerConfig::default().allow_participant_net("127.0.0.0/8")
}

async fn start(config: ServerConfig) -> Server {
    start_with(TransactionCoordinator::new(), config).await
}

async fn start_with(coordinator: TransactionCoordinator, config: ServerConfig) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, coordinator.clone(), config, async {
        let _ = stopped.await;
    }));
    Server {
        base,
        http: reqwest::Client::builder()
            .timeout(PATIENCE)
            .build()
            .unwrap(),
        token: None,
        coordinator,
        stop: Some(stop),
        task,
    }
}

impl Server {
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
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
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn begin(&self) -> String {
        let answer = self.call(Method::POST, "/transactions", None).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.body["id"].as_str().unwrap().to_owned()
    }

    async fn register(&self, id: &str, body: Value) -> Answer {
        self.call(
            Method::POST,
            &format!("/transactions/{id}/participants"),
            Some(body),
        )
        .await
    }

    async fn phase(&self, id: &str, phase: &str) -> Answer {
        self.call(Method::POST, &format!("/transactions/{id}/{phase}"), None)
            .await
    }

    async fn state(&self, id: &str) -> String {
        let answer = self
            .call(Method::GET, &format!("/transactions/{id}"), None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body["state"].as_str().unwrap().to_owned()
    }

    async fn text(&self, path: &str) -> String {
        let response = self.request(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// Tells `serve` to shut down.
    fn signal_shutdown(&mut self) {
        self.stop.take().unwrap().send(()).unwrap();
    }

    /// Waits for `serve` to return.
    async fn finished(self) -> ShutdownReport {
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("serve returned")
            .unwrap()
            .unwrap()
    }
}

/// Begins a transaction with `service` registered and prepares it.
async fn prepared_transaction(server: &Server, name: &str, url: &str) -> String {
    let id = server.begin().await;
    let answer = server
        .register(&id, json!({"name": name, "url": url}))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let answer = server.phase(&id, "prepare").await;
    assert_eq!(answer.body["outcome"], "prepared", "{}", answer.body);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_commits_through_the_api() {
    let users = Service::new("users", Vote::Ready);
    let billing = Service::new("billing", Vote::Ready);
    let users_url = spawn_service(Arc::clone(&users)).await;
    let billing_url = spawn_service(Arc::clone(&billing)).await;
    let server = start(loopback().participant("users", &users_url)).await;

    let answer = server.call(Method::POST, "/transactions", None).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.body["state"], "active");
    let id = answer.body["id"].as_str().unwrap().to_owned();
    let txn: TransactionId = id.parse().unwrap();
    assert_eq!(
        answer.headers["location"].to_str().unwrap(),
        format!("/transactions/{id}")
    );

    let by_name = server.register(&id, json!({"name": "users"})).await;
    assert_eq!(by_name.status, StatusCode::CREATED, "{}", by_name.body);
    assert_eq!(by_name.body["registration"], "registered");
    let by_url = server
        .register(&id, json!({"name": "billing", "url": billing_url}))
        .await;
    assert_eq!(by_url.status, StatusCode::CREATED, "{}", by_url.body);
    assert_eq!(by_url.body["registration"], "registered");
    // The same service again, by its known URL or its ad hoc URL: no effect.
    for again in [
        json!({"name": "users", "url": users_url}),
        json!({"name": "billing", "url": billing_url}),
    ] {
        let answer = server.register(&id, again).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert_eq!(answer.body["registration"], "already_registered");
    }

    let answer = server.phase(&id, "prepare").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!({"outcome": "prepared"}));
    assert_eq!(server.state(&id).await, "prepared");

    let answer = server.phase(&id, "commit").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["id"], id.as_str());
    assert_eq!(answer.body["decision"], "commit");
    assert_eq!(answer.body["hazards"], json!([]));
    assert_eq!(server.state(&id).await, "committed");

    let report = server
        .call(Method::GET, &format!("/transactions/{id}/report"), None)
        .await;
    assert_eq!(report.status, StatusCode::OK);
    assert_eq!(report.body["state"], "committed");
    let participants = report.body["participants"].as_array().unwrap();
    let names: Vec<_> = participants.iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, [json!("users"), json!("billing")]);
    for p in participants {
        assert_eq!(p["prepare"], json!({"status": "voted", "vote": "ready"}));
        assert_eq!(
            p["phase2"],
            json!({"status": "acknowledged", "attempts": 1})
        );
        assert!(p["prepare_latency_ms"].as_f64().unwrap() >= 0.0);
    }
    assert!(report.body["decided_ms"].as_f64().is_some());

    for service in [&users, &billing] {
        assert_eq!(
            service.calls(),
            [format!("prepare {txn}"), format!("commit {txn}")]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_vote_aborts_with_its_reason() {
    let stock = Service::new("stock", Vote::Abort("out of stock"));
    let users = Service::new("users", Vote::Ready);
    let stock_url = spawn_service(Arc::clone(&stock)).await;
    let users_url = spawn_service(Arc::clone(&users)).await;
    let server = start(loopback()).await;
    let id = server.begin().await;
    server
        .register(&id, json!({"name": "users", "url": users_url}))
        .await;
    server
        .register(&id, json!({"name": "stock", "url": stock_url}))
        .await;

    let answer = server.phase(&id, "prepare").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body["outcome"], "aborted");
    let reason = &answer.body["reason"];
    assert_eq!(reason["kind"], "voted");
    assert_eq!(reason["participant"], "stock");
    assert_eq!(reason["index"], 1);
    assert_eq!(reason["reason"], "out of stock");
    assert_eq!(reason["message"], "stock voted to abort: out of stock");

    let commit = server.phase(&id, "commit").await;
    assert_eq!(commit.status, StatusCode::CONFLICT);
    assert_eq!(commit.code(), "invalid_state");
    let rollback = server.phase(&id, "rollback").await;
    assert_eq!(rollback.status, StatusCode::OK);
    assert_eq!(rollback.body["decision"], "abort");
    assert_eq!(rollback.body["abort_reason"]["kind"], "voted");
    assert_eq!(server.state(&id).await, "aborted");
    // The service that voted yes is rolled back; the one that said no is not.
    assert!(users.calls().iter().any(|c| c.starts_with("rollback")));
    assert!(!stock.calls().iter().any(|c| c.starts_with("rollback")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transactions_are_listed_as_in_doubt() {
    let url = spawn_service(Service::new("users", Vote::Ready)).await;
    let server = start(loopback()).await;
    let active = server.begin().await;
    let prepared = prepared_transaction(&server, "users", &url).await;

    let ids = |answer: &Answer| -> Vec<String> {
        answer.body["transactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = server.call(Method::GET, "/transactions", None).await;
    assert_eq!(all.status, StatusCode::OK);
    assert_eq!(ids(&all), [active.clone(), prepared.clone()]);
    let listed = &all.body["transactions"][1];
    assert_eq!(listed["state"], "prepared");
    assert_eq!(listed["in_doubt"], true);
    assert_eq!(listed["participants"], 1);
    assert!(listed["age_ms"].is_u64());
    assert_eq!(all.body["transactions"][0]["in_doubt"], false);

    let in_doubt = server
        .call(Method::GET, "/transactions?in_doubt=true", None)
        .await;
    assert_eq!(ids(&in_doubt), std::slice::from_ref(&prepared));
    let active_only = server
        .call(Method::GET, "/transactions?state=active", None)
        .await;
    assert_eq!(ids(&active_only), [active]);

    server.phase(&prepared, "commit").await;
    let in_doubt = server
        .call(Method::GET, "/transactions?in_doubt=true", None)
        .await;
    assert_eq!(ids(&in_doubt), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_and_the_server_stays_healthy() {
    let url = spawn_service(Service::new("users", Vote::Ready)).await;
    let server = start(loopback()).await;
    let id = server.begin().await;
    let participants = format!("/transactions/{id}/participants");
    let unknown = "00000000-0000-0000-0000-000000000000";
    let json_body = |body: &str| {
        server
            .request(Method::POST, &participants)
            .header("content-type", "application/json")
            .body(body.to_owned())
    };
    let oversized = format!(r#"{{"name": "{}"}}"#, "a".repeat(20 * 1024));

    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            json_body(r#"{"name": "#),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            "wrong content type",
            server
                .request(Method::POST, &participants)
                .header("content-type", "text/plain")
                .body(r#"{"name": "users"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "a body of the wrong shape",
            json_body(r#"{"nom": "users"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "an oversized body",
            json_body(&oversized),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "an unknown known-participant name",
            json_body(r#"{"name": "nobody"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_participant",
        ),
        (
            "a bad participant URL",
            json_body(r#"{"name": "x", "url": "ftp://host/"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_participant_url",
        ),
        (
            "an unknown transaction",
            server.request(Method::GET, &format!("/transactions/{unknown}")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "an unknown transaction's commit",
            server.request(Method::POST, &format!("/transactions/{unknown}/commit")),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "a malformed id",
            server.request(Method::GET, "/transactions/not-an-id"),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "a malformed id in a phase",
            server.request(Method::POST, "/transactions/1234/prepare"),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "commit before prepare",
            server.request(Method::POST, &format!("/transactions/{id}/commit")),
            StatusCode::CONFLICT,
            "invalid_state",
        ),
        (
            "a bad query",
            server.request(Method::GET, "/transactions?in_doubt=maybe"),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            "an unknown route",
            server.request(Method::GET, "/nowhere"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "a wrong method",
            server.request(Method::DELETE, "/transactions"),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (what, request, status, code) in cases {
        let answer = server.send(request).await;
        assert_eq!(
            (answer.status, answer.code()),
            (status, code),
            "{what}: {}",
            answer.body
        );
        assert!(
            answer.body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}"
        );
    }

    // Nothing above changed the transaction, and the server still works.
    assert_eq!(server.state(&id).await, "active");
    let health = server.call(Method::GET, "/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    let answer = server
        .register(&id, json!({"name": "users", "url": url}))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(
        server.phase(&id, "prepare").await.body["outcome"],
        "prepared"
    );
    assert_eq!(server.phase(&id, "commit").await.body["decision"], "commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_beyond_capacity_is_429_and_registration_by_url_is_off_by_default() {
    let config = CoordinatorConfig::builder()
        .max_transactions(1)
        .build()
        .unwrap();
    let server = start_with(
        TransactionCoordinator::with_config(config),
        ServerConfig::default(),
    )
    .await;
    let id = server.begin().await;
    let answer = server.call(Method::POST, "/transactions", None).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.code(), "capacity_exceeded");
    assert_eq!(answer.headers["retry-after"], "1");

    let answer = server
        .register(&id, json!({"name": "x", "url": "http://127.0.0.1:9/"}))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.code(), "ad_hoc_participants_disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_guards_every_route_but_health() {
    let mut server = start(ServerConfig::default().bearer_token("s3cret")).await;
    for (token, what) in [(None, "no token"), (Some("wrong"), "a wrong token")] {
        server.token = token;
        for (method, path) in [
            (Method::POST, "/transactions"),
            (Method::GET, "/transactions"),
            (Method::GET, "/metrics"),
            (Method::GET, "/openapi.json"),
        ] {
            let answer = server.call(method.clone(), path, None).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{what}: {method} {path}"
            );
            assert_eq!(answer.code(), "unauthorized");
            assert_eq!(answer.headers["www-authenticate"], "Bearer");
        }
        let health = server.call(Method::GET, "/health", None).await;
        assert_eq!(health.status, StatusCode::OK, "{what}: /health");
    }
    server.token = Some("s3cret");
    let id = server.begin().await;
    assert_eq!(server.state(&id).await, "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_concurrency_limit_are_shed() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let slow = Service::new(
        "slow",
        Vote::ReadyWhenReleased {
            entered: Arc::clone(&entered),
            release: Arc::clone(&release),
        },
    );
    let url = spawn_service(slow).await;
    let server = Arc::new(start(loopback().max_concurrent_requests(1)).await);
    let id = server.begin().await;
    server
        .register(&id, json!({"name": "slow", "url": url}))
        .await;

    let preparing = tokio::spawn({
        let server = Arc::clone(&server);
        let id = id.clone();
        async move { server.phase(&id, "prepare").await }
    });
    // The prepare request holds the only slot until the participant votes.
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("prepare reached the participant");
    let shed = server
        .call(Method::GET, &format!("/transactions/{id}"), None)
        .await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.code(), "overloaded");
    assert_eq!(shed.headers["retry-after"], "1");

    release.notify_one();
    let prepared = preparing.await.unwrap();
    assert_eq!(prepared.body["outcome"], "prepared");
    assert_eq!(server.state(&id).await, "prepared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_transactions_by_outcome() {
    let ready = spawn_service(Service::new("ready", Vote::Ready)).await;
    let refusing = spawn_service(Service::new("refusing", Vote::Abort("no"))).await;
    let server = start(loopback()).await;
    for _ in 0..2 {
        let id = prepared_transaction(&server, "ready", &ready).await;
        assert_eq!(server.phase(&id, "commit").await.status, StatusCode::OK);
    }
    let id = server.begin().await;
    server
        .register(&id, json!({"name": "refusing", "url": refusing}))
        .await;
    assert_eq!(
        server.phase(&id, "prepare").await.body["outcome"],
        "aborted"
    );
    assert_eq!(server.phase(&id, "rollback").await.status, StatusCode::OK);
    let _unfinished = server.begin().await;

    let metrics = server.text("/metrics").await;
    for line in [
        r#"dtxn_transactions_total{outcome="committed"} 2"#,
        r#"dtxn_transactions_total{outcome="aborted"} 1"#,
        "dtxn_hazards_total 0",
        "dtxn_transactions_in_flight 1",
        r#"dtxn_phase_duration_seconds_count{phase="prepare"} 3"#,
        r#"dtxn_phase_duration_seconds_count{phase="commit"} 2"#,
        r#"dtxn_phase_duration_seconds_count{phase="rollback"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in:\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with(r#"dtxn_http_requests_total{code="2xx"}"#)),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route() {
    let server = start(ServerConfig::default()).await;
    let answer = server.call(Method::GET, "/openapi.json", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let routes: BTreeSet<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    let expected: BTreeSet<String> = [
        "POST /transactions",
        "GET /transactions",
        "GET /transactions/{id}",
        "GET /transactions/{id}/report",
        "GET /transactions/{id}/outcome",
        "POST /transactions/{id}/participants",
        "POST /transactions/{id}/prepare",
        "POST /transactions/{id}/commit",
        "POST /transactions/{id}/rollback",
        "POST /transactions/{id}/retry",
        "POST /transactions/{id}/resolve",
        "GET /admin/decisions",
        "GET /health",
        "GET /ready",
        "GET /metrics",
        "GET /openapi.json",
        "GET /openapi/participant.json",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(routes, expected);
    let commit_responses = &doc["paths"]["/transactions/{id}/commit"]["post"]["responses"];
    assert!(commit_responses["409"].is_object());
    for schema in [
        "ErrorBody",
        "OutcomeResponse",
        "RegisterRequest",
        "ReportResponse",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "no schema {schema}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn the_participant_side_is_an_openapi_document_too_and_the_repository_copy_is_current() {
    let server = start(ServerConfig::default()).await;
    let answer = server
        .call(Method::GET, "/openapi/participant.json", None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/prepare", "/commit", "/rollback"] {
        let operation = &doc["paths"][path]["post"];
        assert_eq!(
            operation["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/PhaseRequest",
            "{path}"
        );
        assert!(operation["responses"]["400"].is_object(), "{path}");
    }
    assert_eq!(
        doc["paths"]["/prepare"]["post"]["responses"]["200"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/VoteResponse"
    );
    let request = &doc["components"]["schemas"]["PhaseRequest"]["properties"];
    for field in [
        "version",
        "transaction_id",
        "attempt",
        "payload",
        "outcome_url",
    ] {
        assert!(request[field].is_object(), "PhaseRequest has no {field}");
    }
    for schema in ["VoteResponse", "Vote", "ErrorBody"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    // The copy in the repository, for services that never run a
    // coordinator: regenerate it with
    // `DTXN_WRITE_PARTICIPANT_OPENAPI=1 cargo test -p dtxn-http --test server`.
    let current = dtxn_http::server::participant_openapi();
    assert_eq!(serde_json::from_str::<Value>(&current).unwrap(), doc);
    let copy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/participant-openapi.json"
    );
    if std::env::var_os("DTXN_WRITE_PARTICIPANT_OPENAPI").is_some() {
        std::fs::write(copy, format!("{current}\n")).unwrap();
    }
    let kept = std::fs::read_to_string(copy).unwrap_or_default();
    assert_eq!(
        kept.trim_end(),
        current,
        "docs/participant-openapi.json is out of date; regenerate it (see above)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_clients_commit_during_grace_and_rolls_back_the_rest() {
    let service = Service::new("users", Vote::Ready);
    let url = spawn_service(Arc::clone(&service)).await;
    let mut server = start(loopback().shutdown_grace(Duration::from_millis(800))).await;
    let committed = prepared_transaction(&server, "users", &url).await;
    let abandoned = prepared_transaction(&server, "users", &url).await;

    let coordinator = server.coordinator.clone();
    server.signal_shutdown();

    // Draining: not ready, though alive, and no transaction begins...
    let mut ready = server.call(Method::GET, "/ready", None).await;
    let waited = tokio::time::Instant::now();
    while ready.status == StatusCode::OK && waited.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(5)).await;
        ready = server.call(Method::GET, "/ready", None).await;
    }
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.body,
        json!({"status": "shutting_down", "unfinished": 2})
    );
    let health = server.call(Method::GET, "/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body, json!({"status": "draining", "unfinished": 2}));
    let begin = server.call(Method::POST, "/transactions", None).await;
    assert_eq!(begin.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(begin.code(), "shutting_down");
    // ...but a client may still finish its transaction.
    let answer = server.phase(&committed, "commit").await;
    assert_eq!(answer.body["decision"], "commit", "{}", answer.body);

    let report = server.finished().await;
    assert_eq!(report.unfinished_at_signal, 2);
    assert_eq!(report.finished_in_grace, 1);
    assert_eq!(report.rolled_back, 1);
    assert_eq!(report.unfinished_at_exit, 0);
    assert!(report.grace_expired);

    let state = |id: &str| {
        coordinator
            .get_transaction_state(id.parse().unwrap())
            .unwrap()
    };
    assert_eq!(state(&committed), TransactionState::Committed);
    assert_eq!(state(&abandoned), TransactionState::Aborted);
    assert!(service.calls().contains(&format!("rollback {abandoned}")));
    assert!(service.calls().contains(&format!("commit {committed}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_nothing_unfinished_does_not_wait_for_the_grace_period() {
    let url = spawn_service(Service::new("users", Vote::Ready)).await;
    let mut server = start(loopback().shutdown_grace(Duration::from_secs(60))).await;
    let id = prepared_transaction(&server, "users", &url).await;
    server.phase(&id, "commit").await;

    // `finished` gives up long before the 60 s grace would end.
    server.signal_shutdown();
    let report = server.finished().await;
    assert_eq!(report.unfinished_at_signal, 0);
    assert_eq!(report.rolled_back, 0);
    assert!(!report.grace_expired);
}

/// Liveness and metrics stay reachable when every API slot is taken;
/// readiness says the server is saturated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_are_never_shed_and_ready_reports_saturation() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let slow = Service::new(
        "slow",
        Vote::ReadyWhenReleased {
            entered: Arc::clone(&entered),
            release: Arc::clone(&release),
        },
    );
    let url = spawn_service(slow).await;
    let server = Arc::new(start(loopback().max_concurrent_requests(1)).await);
    let ready = server.call(Method::GET, "/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ready");
    let id = server.begin().await;
    server
        .register(&id, json!({"name": "slow", "url": url}))
        .await;
    let preparing = tokio::spawn({
        let server = Arc::clone(&server);
        let id = id.clone();
        async move { server.phase(&id, "prepare").await }
    });
    tokio::time::timeout(PATIENCE, entered.notified())
        .await
        .expect("prepare reached the participant");

    // The API is saturated...
    let shed = server.call(Method::GET, "/transactions", None).await;
    assert_eq!(shed.code(), "overloaded");
    // ...but the process is alive and observable.
    let health = server.call(Method::GET, "/health", None).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.body);
    assert_eq!(health.body["status"], "ok");
    assert!(server
        .text("/metrics")
        .await
        .contains("dtxn_transactions_in_flight 1"));
    let ready = server.call(Method::GET, "/ready", None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.body["status"], "saturated");

    release.notify_one();
    assert_eq!(preparing.await.unwrap().body["outcome"], "prepared");
    let ready = server.call(Method::GET, "/ready", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_by_url_is_limited_to_allowed_hosts_and_never_this_server() {
    let url = spawn_service(Service::new("users", Vote::Ready)).await;
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();

    // Off by default.
    let closed = start(ServerConfig::default()).await;
    let id = closed.begin().await;
    let answer = closed
        .register(&id, json!({"name": "users", "url": url}))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.code(), "ad_hoc_participants_disabled");

    // On for one host only.
    let server = start(ServerConfig::default().allow_participant_host("127.0.0.1")).await;
    let own_port = server.base.rsplit(':').next().unwrap().to_owned();
    let id = server.begin().await;
    for (what, target, status, code) in [
        (
            "another loopback address",
            format!("http://127.0.0.2:{port}/"),
            StatusCode::FORBIDDEN,
            "participant_host_not_allowed",
        ),
        (
            "a host name for an allowed address",
            format!("http://localhost:{port}/"),
            StatusCode::FORBIDDEN,
            "participant_host_not_allowed",
        ),
        (
            "the cloud metadata service",
            "http://169.254.169.254/latest/".to_owned(),
            StatusCode::FORBIDDEN,
            "participant_host_not_allowed",
        ),
        (
            "the coordinator itself",
            format!("http://127.0.0.1:{own_port}/"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_participant_url",
        ),
    ] {
        let answer = server
            .register(&id, json!({"name": "x", "url": target}))
            .await;
        assert_eq!((answer.status, answer.code()), (status, code), "{what}");
    }
    let answer = server
        .register(&id, json!({"name": "users", "url": url}))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(
        server.phase(&id, "prepare").await.body["outcome"],
        "prepared"
    );
}

/// A participant URL that is really some internal service: whatever it
/// answers, the client learns the status and at most a capped JSON `error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_reasons_never_carry_a_participants_raw_body() {
    use axum::routing::post;
    const SECRET: &str = "SECRET-internal-data";
    let long_error = "e".repeat(10_000);
    let internal = axum::Router::new()
        .route(
            "/text/prepare",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, SECRET) }),
        )
        .route(
            "/json/prepare",
            post(|| async { (StatusCode::OK, axum::Json(json!({"data": SECRET}))) }),
        )
        .route(
            "/string/prepare",
            post(|| async { (StatusCode::OK, axum::Json(json!(SECRET))) }),
        )
        .route(
            "/variant/prepare",
            post(|| async { (StatusCode::OK, axum::Json(json!({"vote": SECRET}))) }),
        )
        .route(
            "/refusal/prepare",
            post(move || {
                let long_error = long_error.clone();
                async move {
                    (
                        StatusCode::CONFLICT,
                        axum::Json(json!({"code": "no", "error": long_error})),
                    )
                }
            }),
        )
        .route(
            "/vote/prepare",
            post(|| async { axum::Json(json!({"vote": "aborted", "reason": "r".repeat(10_000)})) }),
        )
        .fallback(|| async { StatusCode::OK });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, internal).await });
    let server = start(loopback()).await;

    for path in ["text", "json", "string", "variant"] {
        let id = server.begin().await;
        let url = format!("{base}/{path}/");
        let answer = server.register(&id, json!({"name": "p", "url": url})).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        let answer = server.phase(&id, "prepare").await;
        assert_eq!(answer.body["outcome"], "aborted", "{path}");
        let text = answer.body.to_string();
        assert!(!text.contains(SECRET), "{path}: {text}");
        let report = server
            .call(Method::GET, &format!("/transactions/{id}/report"), None)
            .await;
        assert!(!report.body.to_string().contains(SECRET), "{path}");
    }
    let id = server.begin().await;
    server
        .register(&id, json!({"name": "p", "url": format!("{base}/text/")}))
        .await;
    let message = server.phase(&id, "prepare").await.body["reason"]["message"].clone();
    assert!(
        message.as_str().unwrap().contains("500"),
        "the status is kept: {message}"
    );

    for path in ["refusal", "vote"] {
        let id = server.begin().await;
        server
            .register(&id, json!({"name": "p", "url": format!("{base}/{path}/")}))
            .await;
        let answer = server.phase(&id, "prepare").await;
        let reason = answer.body["reason"]["reason"].as_str().unwrap().to_owned();
        assert!(
            reason.chars().count() <= dtxn_http::wire::MAX_REASON_CHARS + 1,
            "{path}: {} characters",
            reason.len()
        );
        assert!(reason.ends_with('…'), "{path}: {reason}");
    }
}

/// Clients whose every enumerated value is `snake_case`, and the document
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enumerated_values_are_snake_case_in_answers_queries_and_the_document() {
    let url = spawn_service(Service::new("users", Vote::Ready)).await;
    let server = start(loopback()).await;
    let id = prepared_transaction(&server, "users", &url).await;
    let listed = server
        .call(Method::GET, "/transactions?state=prepared", None)
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_eq!(listed.body["transactions"][0]["state"], "prepared");
    let refused = server
        .call(Method::GET, "/transactions?state=Prepared", None)
        .await;
    assert_eq!(refused.code(), "invalid_query");
    let again = server
        .register(&id, json!({"name": "users", "url": url}))
        .await;
    assert_eq!(again.code(), "invalid_state");
    let outcome = server.phase(&id, "commit").await;
    assert_eq!(outcome.body["decision"], "commit");

    let doc = server.call(Method::GET, "/openapi.json", None).await.body;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut enums = 0;
    for (name, schema) in schemas {
        for value in schema["enum"].as_array().into_iter().flatten() {
            let value = value.as_str().unwrap();
            enums += 1;
            assert!(
                value
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}: {value}"
            );
        }
    }
    assert!(enums > 20, "{enums} enumerated values");
    for (schema, values) in [
        (
            "TxnState",
            json!([
                "active",
                "preparing",
                "prepared",
                "committing",
                "committed",
                "aborting",
                "aborted"
            ]),
        ),
        ("DecisionName", json!(["commit", "abort"])),
        (
            "RegistrationName",
            json!(["registered", "already_registered"]),
        ),
    ] {
        assert_eq!(
            doc["components"]["schemas"][schema]["enum"], values,
            "{schema}"
        );
    }
}

/// Reads one HTTP/1.1 answer (headers and a `Content-Length` body) from a
/// raw socket.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|l| l.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// Reads a raw socket until the server closes it; returns what it sent.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept a stalled connection open");
    String::from_utf8_lossy(&buf).into_owned()
}

/// Clients that stall mid-body, mid-headers or before sending anything are
/// cut off after their timeout, and meanwhile hold no API slot: with one
/// slot, another client is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clients_are_cut_off_and_never_block_others() {
    use tokio::io::AsyncWriteExt;
    let url = spawn_service(Service::new("users", Vote::Ready)).await;
    let timeout = Duration::from_millis(500);
    let mut server = start(
        loopback()
            .max_concurrent_requests(1)
            .header_read_timeout(timeout)
            .body_read_timeout(timeout)
            .idle_timeout(timeout),
    )
    .await;
    // No pooled connections: the server closes idle ones quickly here.
    server.http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let id = server.begin().await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let connect = || tokio::net::TcpStream::connect(address.clone());

    let mut bodies = Vec::new();
    for _ in 0..3 {
        let mut stream = connect().await.unwrap();
        let head = format!(
            "POST /transactions/{id}/participants HTTP/1.1\r\nhost: x\r\n\
             content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"name\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        bodies.push(stream);
    }
    let mut head = connect().await.unwrap();
    head.write_all(b"GET /transactions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut silent = connect().await.unwrap();

    // Another client is served, all the way to a commit.
    let answer = server
        .register(&id, json!({"name": "users", "url": url}))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(
        server.phase(&id, "prepare").await.body["outcome"],
        "prepared"
    );
    assert_eq!(server.phase(&id, "commit").await.body["decision"], "commit");

    // And every stalled socket is closed; a stalled body is told why.
    for stream in &mut bodies {
        let answer = read_until_closed(stream).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(answer.contains("body_timeout"), "{answer:?}");
    }
    assert_eq!(read_until_closed(&mut head).await, "");
    assert_eq!(read_until_closed(&mut silent).await, "");
    let health = server.call(Method::GET, "/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
}

/// Beyond `max_connections`, a client waits in the backlog until an open
/// connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    use tokio::io::AsyncWriteExt;
    let server = start(ServerConfig::default().max_connections(1)).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let request = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";

    // The holder is served, then keeps its connection open (keep-alive).
    let mut holder = tokio::net::TcpStream::connect(&address).await.unwrap();
    holder.write_all(request).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, read_answer(&mut holder))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let mut waiting = tokio::net::TcpStream::connect(&address).await.unwrap();
    waiting.write_all(request).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), read_answer(&mut waiting)).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");

    drop(holder);
    let answer = tokio::time::timeout(PATIENCE, read_answer(&mut waiting))
        .await
        .expect("served once the other connection closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// `GET /transactions/{id}/outcome`: the decision once taken, `pending`
/// before, and `unknown` (never `aborted`, never `404`) for ids the server
/// does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_queries_answer_every_state_and_unknown_for_ids_not_held() {
    let url = spawn_service(Service::new("users", Vote::Ready)).await;
    let server = start(loopback()).await;
    let outcome = |id: String| {
        let server = &server;
        async move {
            let answer = server
                .call(Method::GET, &format!("/transactions/{id}/outcome"), None)
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            assert_eq!(
                answer.body["id"].as_str().unwrap().replace('-', ""),
                id.replace('-', "")
            );
            answer.body["outcome"].as_str().unwrap().to_owned()
        }
    };
    let active = server.begin().await;
    assert_eq!(outcome(active.clone()).await, "pending");
    let prepared = prepared_transaction(&server, "users", &url).await;
    assert_eq!(outcome(prepared.clone()).await, "pending");
    assert_eq!(
        server.phase(&prepared, "commit").await.body["decision"],
        "commit"
    );
    assert_eq!(outcome(prepared).await, "committed");
    assert_eq!(
        server.phase(&active, "rollback").await.body["decision"],
        "abort"
    );
    assert_eq!(outcome(active).await, "aborted");
    // An id this server never issued (or forgot, or issued before a
    // restart): unknown.
    assert_eq!(
        outcome("0123456789abcdef0000000000000007".to_owned()).await,
        "unknown"
    );
    let bad = server
        .call(Method::GET, "/transactions/not-an-id/outcome", None)
        .await;
    assert_eq!(bad.code(), "invalid_id");
    let doc = server.call(Method::GET, "/openapi.json", None).await.body;
    assert!(doc["paths"]["/transactions/{id}/outcome"]["get"].is_object());
}
