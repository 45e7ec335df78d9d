//! Authenticated participants over loopback: a service behind
//! `participant_router_with` that requires a bearer token, and a
//! coordinator whose `HttpParticipant`s present it (or not).
//!
//! Real sockets need real time: every wait is bounded, so a hang fails
//! the test instead of stalling it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use dtxn::{
    async_trait, AbortReason, CallFailure, CoordinatorConfig, Decision, Participant,
    ParticipantError, PrepareOutcome, PreparedResult, RetryPolicy, TransactionCoordinator,
    TransactionId,
};
use dtxn_http::server::ServerConfig;
use dtxn_http::wire::ErrorBody;
use dtxn_http::{
    participant_router_with, HttpParticipant, HttpParticipantError, RouterConfig, RouterConfigError,
};

const TOKEN: &str = "s3cret-t0ken";
/// The bound on every coordinator call in these tests.
const BOUND: Duration = Duration::from_secs(10);

/// A participant that votes Ready and logs what reached it.
#[derive(Default)]
struct Recording {
    calls: Mutex<Vec<&'static str>>,
}

impl Recording {
    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Participant for Recording {
    fn name(&self) -> &str {
        "recording"
    }
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        self.calls.lock().unwrap().push("prepare");
        PreparedResult::Ready
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        self.calls.lock().unwrap().push("commit");
        Ok(())
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        self.calls.lock().unwrap().push("rollback");
        Ok(())
    }
}

/// The headers of each request that reached the service: (path, x-tenant,
/// authorization).
type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

/// Serves `participant` behind a token on loopback; records every
/// request's headers (before authentication).
async fn service(participant: Arc<Recording>) -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    let app = participant_router_with(
        participant,
        RouterConfig::default().bearer_token(TOKEN).unwrap(),
    )
    .layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let record = Arc::clone(&record);
            async move {
                let entry = {
                    let header = |name: &str| {
                        request
                            .headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                    };
                    (
                        request.uri().path().to_owned(),
                        header("x-tenant"),
                        header("authorization"),
                    )
                };
                record.lock().unwrap().push(entry);
                let response: Response = next.run(request).await;
                response
            }
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// A coordinator with short timeouts and a short retry policy.
fn coordinator() -> TransactionCoordinator {
    let config = CoordinatorConfig::builder()
        .prepare_timeout(Duration::from_secs(2))
        .phase2_timeout(Duration::from_secs(2))
        .retry(RetryPolicy::new(2, Duration::from_millis(10), Duration::from_millis(20)).unwrap())
        .build()
        .unwrap();
    TransactionCoordinator::with_config(config)
}

/// Begins a transaction with `participant` and prepares it, within
/// [`BOUND`].
async fn begin_and_prepare(
    coordinator: &TransactionCoordinator,
    participant: HttpParticipant,
) -> (TransactionId, PrepareOutcome) {
    let txn = coordinator.begin_transaction().unwrap();
    coordinator
        .register_participant(txn, Arc::new(participant))
        .unwrap();
    let outcome = tokio::time::timeout(BOUND, coordinator.prepare_transaction(txn))
        .await
        .expect("prepare ends within the bound")
        .unwrap();
    (txn, outcome)
}

/// Prepare with `participant` aborts with a failed call whose message
/// mentions 401; the rollback that follows ends (with the refused
/// participant as a hazard: the coordinator cannot tell it did nothing).
async fn assert_refused_and_aborted(participant: HttpParticipant, service: &Recording) {
    let coordinator = coordinator();
    let (txn, outcome) = begin_and_prepare(&coordinator, participant).await;
    match outcome {
        PrepareOutcome::Aborted(AbortReason::PrepareFailed {
            participant,
            failure: CallFailure::Error(e),
            ..
        }) => {
            assert_eq!(participant, "inventory");
            assert!(e.message().contains("401"), "{}", e.message());
            assert!(!e.message().contains(TOKEN), "{}", e.message());
        }
        other => panic!("expected a failed prepare call, got {other:?}"),
    }
    let outcome = tokio::time::timeout(BOUND, coordinator.rollback_transaction(txn))
        .await
        .expect("rollback ends within the bound")
        .unwrap();
    assert_eq!(outcome.decision, Decision::Abort);
    let reason = outcome.abort_reason.as_ref().unwrap().to_string();
    assert!(reason.contains("401"), "{reason}");
    // Nothing ever reached the participant itself.
    assert_eq!(service.calls(), Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_with_the_right_token_commits_end_to_end() {
    let inventory = Arc::new(Recording::default());
    let (addr, seen) = service(Arc::clone(&inventory)).await;
    let participant = HttpParticipant::builder("inventory", format!("http://{addr}/"))
        .bearer_token(TOKEN)
        .build()
        .unwrap();
    let coordinator = coordinator();
    let (txn, outcome) = begin_and_prepare(&coordinator, participant).await;
    assert_eq!(outcome, PrepareOutcome::Prepared);
    let outcome = tokio::time::timeout(BOUND, coordinator.commit_transaction(txn))
        .await
        .expect("commit ends within the bound")
        .unwrap();
    assert_eq!(outcome.decision, Decision::Commit);
    assert!(outcome.hazards.is_empty(), "{outcome:?}");
    assert_eq!(inventory.calls(), ["prepare", "commit"]);
    let bearer = format!("Bearer {TOKEN}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (path, _, authorization) in &seen {
        assert_eq!(authorization.as_deref(), Some(bearer.as_str()), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_with_401_and_the_transaction_aborts_on_prepare() {
    let inventory = Arc::new(Recording::default());
    let (addr, _) = service(Arc::clone(&inventory)).await;
    let participant = HttpParticipant::builder("inventory", format!("http://{addr}/"))
        .bearer_token("not-the-token")
        .build()
        .unwrap();
    assert_refused_and_aborted(participant, &inventory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_refused_with_401_and_the_transaction_aborts_on_prepare() {
    let inventory = Arc::new(Recording::default());
    let (addr, _) = service(Arc::clone(&inventory)).await;
    let participant = HttpParticipant::new("inventory", format!("http://{addr}/")).unwrap();
    assert_refused_and_aborted(participant, &inventory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_headers_arrive_with_prepare_commit_and_rollback() {
    let inventory = Arc::new(Recording::default());
    let (addr, seen) = service(Arc::clone(&inventory)).await;
    let build = || {
        HttpParticipant::builder("inventory", format!("http://{addr}/"))
            .bearer_token(TOKEN)
            .header("X-Tenant", "acme")
            .build()
            .unwrap()
    };
    let coordinator = coordinator();
    let (committed, _) = begin_and_prepare(&coordinator, build()).await;
    coordinator.commit_transaction(committed).await.unwrap();
    let (rolled_back, _) = begin_and_prepare(&coordinator, build()).await;
    let outcome = coordinator.rollback_transaction(rolled_back).await.unwrap();
    assert!(outcome.hazards.is_empty(), "{outcome:?}");
    let seen = seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|(path, ..)| path.as_str()).collect();
    assert_eq!(paths, ["/prepare", "/commit", "/prepare", "/rollback"]);
    for (path, tenant, _) in &seen {
        assert_eq!(tenant.as_deref(), Some("acme"), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_the_right_token_get_a_401_json_error_on_every_path() {
    let inventory = Arc::new(Recording::default());
    let (addr, _) = service(Arc::clone(&inventory)).await;
    let client = reqwest::Client::new();
    let body = r#"{"transaction_id":"00000000-0000-0007-0000-000000000001"}"#;
    for path in ["/prepare", "/commit", "/rollback", "/elsewhere"] {
        for authorization in [None, Some("Bearer wrong"), Some(TOKEN), Some("Basic x")] {
            let mut request = client
                .post(format!("http://{addr}{path}"))
                .header("content-type", "application/json")
                .body(body);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{path} {authorization:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let error: ErrorBody = response.json().await.unwrap();
            assert_eq!(error.code, "unauthorized");
            assert!(!error.error.contains(TOKEN));
        }
    }
    assert_eq!(inventory.calls(), Vec::<&str>::new());
    let response = client
        .post(format!("http://{addr}/prepare"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(inventory.calls(), ["prepare"]);
}

#[test]
fn debug_output_never_shows_the_token_or_header_values() {
    let builder = HttpParticipant::builder("inventory", "http://127.0.0.1:9/")
        .bearer_token(TOKEN)
        .header("x-api-key", "k3y-value");
    let shown = format!("{builder:?}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains("k3y-value"),
        "{shown}"
    );
    let participant = builder.build().unwrap();
    let shown = format!("{participant:?}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains("k3y-value"),
        "{shown}"
    );
    assert!(
        shown.contains("authorization") && shown.contains("x-api-key"),
        "{shown}"
    );
    let mut names: Vec<&str> = participant.header_names().collect();
    names.sort_unstable();
    assert_eq!(names, ["authorization", "x-api-key"]);

    let router = RouterConfig::default().bearer_token(TOKEN).unwrap();
    assert!(!format!("{router:?}").contains(TOKEN));
    let server = ServerConfig::default()
        .participant("inventory", "http://127.0.0.1:9/")
        .participant_token("inventory", TOKEN)
        .participant_header("inventory", "x-api-key", "k3y-value");
    let shown = format!("{server:?}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains("k3y-value"),
        "{shown}"
    );
    server.validate(None).unwrap();
}

#[test]
fn bad_tokens_and_headers_are_refused_without_quoting_them() {
    for token in ["", "two words", "new\nline"] {
        let error = HttpParticipant::builder("p", "http://127.0.0.1:9/")
            .bearer_token(token)
            .build()
            .unwrap_err();
        assert!(
            matches!(&error, HttpParticipantError::InvalidHeader { name, .. } if name == "authorization"),
            "{error:?}"
        );
        assert_eq!(
            RouterConfig::default().bearer_token(token).unwrap_err(),
            RouterConfigError::InvalidBearerToken
        );
    }
    for (name, value) in [
        ("bad name", "v"),
        ("x-ok", "new\nline-s3cret"),
        ("Authorization", "Bearer x"),
        ("content-type", "text/plain"),
    ] {
        let error = HttpParticipant::builder("p", "http://127.0.0.1:9/")
            .header(name, value)
            .build()
            .unwrap_err();
        assert!(
            matches!(&error, HttpParticipantError::InvalidHeader { .. }),
            "{error:?}"
        );
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }
}

#[test]
fn server_credentials_must_name_a_known_participant_once() {
    let known = || ServerConfig::default().participant("inventory", "http://127.0.0.1:9/");
    for config in [
        known().participant_token("unknown", TOKEN),
        known().participant_header("unknown", "x-tenant", "acme"),
        known()
            .participant_token("inventory", TOKEN)
            .participant_token("inventory", "another"),
    ] {
        let error = config.validate(None).unwrap_err().to_string();
        assert!(error.contains("credentials for participant"), "{error}");
        assert!(!error.contains(TOKEN), "{error}");
    }
    let error = known()
        .participant_token("inventory", "two words")
        .validate(None)
        .unwrap_err()
        .to_string();
    assert!(error.contains("\"inventory\""), "{error}");
    assert!(!error.contains("two words"), "{error}");
}

#[test]
fn credential_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<HttpParticipant>();
    assert_send_sync::<dtxn_http::HttpParticipantBuilder>();
    assert_send_sync::<RouterConfig>();
    assert_send_sync::<RouterConfigError>();
}
