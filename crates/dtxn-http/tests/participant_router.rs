//! `participant_router` answers the wire contract, including bad requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};
use dtxn_http::wire::{ErrorBody, Vote, VoteResponse};

struct Scripted {
    commits: AtomicUsize,
}

#[async_trait]
impl Participant for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        match sequence(txn) % 3 {
            0 => PreparedResult::Ready,
            1 => PreparedResult::ReadOnly,
            _ => PreparedResult::Aborted("out of stock".into()),
        }
    }
    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        match sequence(txn) % 3 {
            0 => Ok(()),
            1 => Err(ParticipantError::transient("busy")),
            _ => Err(ParticipantError::permanent("account closed")),
        }
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        panic!("rollback exploded")
    }
}

async fn start() -> (SocketAddr, Arc<Scripted>) {
    let participant = Arc::new(Scripted {
        commits: AtomicUsize::new(0),
    });
    let app = dtxn_http::participant_router(participant.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, participant)
}

fn id(sequence: u64) -> String {
    format!("00000000-0000-0007-0000-{sequence:012x}")
}

fn sequence(txn: TransactionId) -> u64 {
    let text = txn.to_string();
    u64::from_str_radix(&text[text.len() - 12..], 16).unwrap()
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn error_code(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .unwrap_or_else(|e| panic!("not an ErrorBody ({e}): {body}"))
        .code
}

#[tokio::test]
async fn votes_are_answered_as_json_with_200() {
    let (addr, _) = start().await;
    for (sequence, vote, reason) in [
        (3, Vote::Ready, None),
        (4, Vote::ReadOnly, None),
        (5, Vote::Aborted, Some("out of stock".to_owned())),
    ] {
        let (status, body) = post(
            addr,
            "/prepare",
            &format!(r#"{{"transaction_id":"{}"}}"#, id(sequence)),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<VoteResponse>(&body).unwrap(),
            VoteResponse { vote, reason }
        );
    }
}

#[tokio::test]
async fn participant_errors_map_to_503_for_transient_422_for_permanent_and_panics_to_500() {
    let (addr, participant) = start().await;
    let body = |sequence| format!(r#"{{"transaction_id":"{}"}}"#, id(sequence));
    assert_eq!(post(addr, "/commit", &body(3)).await.0, 204);
    let (status, text) = post(addr, "/commit", &body(4)).await;
    assert_eq!((status, error_code(&text).as_str()), (503, "transient"));
    let (status, text) = post(addr, "/commit", &body(5)).await;
    assert_eq!((status, error_code(&text).as_str()), (422, "permanent"));
    assert_eq!(participant.commits.load(Ordering::SeqCst), 3);
    let (status, text) = post(addr, "/rollback", &body(3)).await;
    assert_eq!((status, error_code(&text).as_str()), (500, "panicked"));
    // The service survives the panic.
    assert_eq!(post(addr, "/commit", &body(3)).await.0, 204);
}

#[tokio::test]
async fn malformed_requests_get_a_4xx_json_error() {
    let (addr, participant) = start().await;
    for (path, body, expected) in [
        ("/commit", "{", 400),
        ("/commit", r#"{"transaction_id":"xyz"}"#, 422),
        ("/commit", r#"{"txn":1}"#, 422),
        ("/nowhere", "{}", 404),
        // A version this service does not speak.
        (
            "/commit",
            r#"{"version":2,"transaction_id":"00000000-0000-0007-0000-000000000003"}"#,
            400,
        ),
        (
            "/commit",
            r#"{"version":0,"transaction_id":"00000000-0000-0007-0000-000000000003"}"#,
            400,
        ),
        (
            "/commit",
            r#"{"transaction_id":"00000000-0000-0007-0000-000000000003","attempt":-1}"#,
            422,
        ),
    ] {
        let (status, text) = post(addr, path, body).await;
        assert_eq!(status, expected, "{path} {body}: {text}");
        error_code(&text);
    }
    let oversized = format!(
        r#"{{"transaction_id":"{}","payload":"{}"}}"#,
        id(3),
        "0".repeat(dtxn_http::RouterConfig::DEFAULT_MAX_BODY_BYTES)
    );
    assert_eq!(post(addr, "/commit", &oversized).await.0, 413);
    let no_content_type = reqwest::Client::new()
        .post(format!("http://{addr}/commit"))
        .body(format!(r#"{{"transaction_id":"{}"}}"#, id(3)))
        .send()
        .await
        .unwrap();
    assert_eq!(no_content_type.status().as_u16(), 415);
    error_code(&no_content_type.text().await.unwrap());
    assert_eq!(participant.commits.load(Ordering::SeqCst), 0);
}

/// Records the call contexts it is given.
#[derive(Default)]
struct Recorder {
    seen: std::sync::Mutex<Vec<dtxn::CallContext>>,
}

#[async_trait]
impl Participant for Recorder {
    async fn prepare_with(
        &self,
        cx: &dtxn::CallContext,
    ) -> Result<PreparedResult, ParticipantError> {
        self.seen.lock().unwrap().push(cx.clone());
        Ok(PreparedResult::Ready)
    }
    async fn commit_with(&self, cx: &dtxn::CallContext) -> Result<(), ParticipantError> {
        self.seen.lock().unwrap().push(cx.clone());
        Ok(())
    }
    async fn rollback_with(&self, cx: &dtxn::CallContext) -> Result<(), ParticipantError> {
        self.seen.lock().unwrap().push(cx.clone());
        Ok(())
    }
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        unreachable!("the router calls prepare_with")
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        unreachable!("the router calls commit_with")
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        unreachable!("the router calls rollback_with")
    }
}

async fn start_with(config: dtxn_http::RouterConfig) -> (SocketAddr, Arc<Recorder>) {
    let participant = Arc::new(Recorder::default());
    let app = dtxn_http::participant_router_with(participant.clone(), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, participant)
}

#[tokio::test]
async fn the_call_context_carries_the_payload_text_the_attempt_and_the_outcome_url() {
    let (addr, participant) = start_with(dtxn_http::RouterConfig::default()).await;
    let payload = r#"{ "name": "Zoë 🦀", "tags": ["a\"b", null], "n": 1.5e3 }"#;
    let outcome = format!("http://127.0.0.1:1/transactions/{}/outcome", id(3));
    let body = format!(
        r#"{{"version":1,"transaction_id":"{}","attempt":4,"payload":{payload},"outcome_url":"{outcome}","added_later":[1]}}"#,
        id(3)
    );
    assert_eq!(post(addr, "/commit", &body).await.0, 204);
    // A request from before versions and payloads: the defaults.
    let bare = format!(r#"{{"transaction_id":"{}"}}"#, id(3));
    assert_eq!(post(addr, "/prepare", &bare).await.0, 200);
    let seen = participant.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].phase(), dtxn::Phase::Commit);
    assert_eq!(seen[0].attempt(), 4);
    // The JSON text exactly as sent: whitespace, escapes and all.
    assert_eq!(seen[0].payload().unwrap().as_str(), Some(payload));
    assert_eq!(seen[0].outcome_url(), Some(outcome.as_str()));
    assert_eq!(
        (seen[1].phase(), seen[1].attempt()),
        (dtxn::Phase::Prepare, 1)
    );
    assert!(seen[1].payload().is_none() && seen[1].outcome_url().is_none());
}

#[tokio::test]
async fn the_body_limit_is_configurable_and_refuses_with_413_json() {
    assert_eq!(
        dtxn_http::RouterConfig::default()
            .max_body_bytes(10)
            .unwrap_err(),
        dtxn_http::RouterConfigError::BodyLimitTooSmall
    );
    let config = dtxn_http::RouterConfig::default()
        .max_body_bytes(2048)
        .unwrap();
    let (addr, participant) = start_with(config).await;
    let with_payload = |n: usize| {
        format!(
            r#"{{"transaction_id":"{}","payload":"{}"}}"#,
            id(3),
            "x".repeat(n)
        )
    };
    assert_eq!(post(addr, "/prepare", &with_payload(1500)).await.0, 200);
    let (status, text) = post(addr, "/prepare", &with_payload(2048)).await;
    assert_eq!(status, 413, "{text}");
    error_code(&text);
    assert_eq!(participant.seen.lock().unwrap().len(), 1);
}
