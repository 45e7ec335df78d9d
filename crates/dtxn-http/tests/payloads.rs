//! Business payloads over the wire, end to end on loopback: a client
//! registers participants with JSON payloads and headers; the coordinator
//! server sends them, unchanged, with every call, together with the
//! attempt number, the wire version and where to ask for the outcome.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use dtxn::{
    async_trait, CallContext, Participant, ParticipantError, PreparedResult, TransactionId,
};
use dtxn_http::server::{serve, ServerConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const PATIENCE: Duration = Duration::from_secs(5);

/// One request a raw service received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// A participant service written against the wire contract by hand (as a
/// service in another language would be): records every request and
/// answers `prepare` with `prepare_answer`.
#[derive(Clone)]
struct RawService {
    received: Arc<Mutex<Vec<Received>>>,
    prepare_answer: (StatusCode, &'static str),
}

impl RawService {
    async fn spawn(prepare_answer: (StatusCode, &'static str)) -> (String, Self) {
        let service = Self {
            received: Arc::default(),
            prepare_answer,
        };
        let handler = |path: &'static str| {
            let service = service.clone();
            move |headers: HeaderMap, body: String| {
                let service = service.clone();
                async move {
                    service.received.lock().unwrap().push(Received {
                        path: path.to_owned(),
                        headers,
                        body: serde_json::from_str(&body).unwrap_or(Value::Null),
                    });
                    if path == "prepare" {
                        let (status, body) = service.prepare_answer;
                        (status, body).into_response()
                    } else {
                        StatusCode::NO_CONTENT.into_response()
                    }
                }
            }
        };
        let app = Router::new()
            .route("/prepare", post(handler("prepare")))
            .route("/commit", post(handler("commit")))
            .route("/rollback", post(handler("rollback")));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, service)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

use axum::response::IntoResponse;

/// A participant served by `participant_router` that records its call
/// contexts.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<CallContext>>,
}

#[async_trait]
impl Participant for Recorder {
    async fn prepare_with(&self, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
        self.seen.lock().unwrap().push(cx.clone());
        Ok(PreparedResult::Ready)
    }
    async fn commit_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.seen.lock().unwrap().push(cx.clone());
        Ok(())
    }
    async fn rollback_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.seen.lock().unwrap().push(cx.clone());
        Ok(())
    }
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        unreachable!()
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        unreachable!()
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        unreachable!()
    }
}

struct Coordinator {
    base: String,
    http: reqwest::Client,
}

impl Coordinator {
    /// A coordinator server on loopback that lets clients register loopback
    /// services by URL; `configure` adds settings. Its public URL is its
    /// own address.
    async fn start(configure: impl FnOnce(ServerConfig) -> ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = configure(
            ServerConfig::default()
                .allow_participant_net("127.0.0.0/8")
                .public_url(base.clone()),
        );
        tokio::spawn(serve(
            listener,
            dtxn::TransactionCoordinator::new(),
            config,
            std::future::pending(),
        ));
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(PATIENCE)
                .build()
                .unwrap(),
        }
    }

    async fn call(&self, path: &str, body: Option<String>) -> (StatusCode, Value) {
        let mut request = if body.is_some() || !path.ends_with("outcome") {
            self.http.post(format!("{}{path}", self.base))
        } else {
            self.http.get(format!("{}{path}", self.base))
        };
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text:?}"));
        (status, body)
    }

    async fn begin(&self) -> String {
        let (status, body) = self.call("/transactions", None).await;
        assert_eq!(status, StatusCode::CREATED);
        body["id"].as_str().unwrap().to_owned()
    }

    async fn register(&self, id: &str, body: &str) -> (StatusCode, Value) {
        self.call(
            &format!("/transactions/{id}/participants"),
            Some(body.to_owned()),
        )
        .await
    }

    async fn outcome(&self, id: &str) -> String {
        let response = self
            .http
            .get(format!("{}/transactions/{id}/outcome", self.base))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["outcome"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn payloads_arrive_unchanged_with_every_call_including_unicode_and_escapes() {
    let coordinator = Coordinator::start(|c| c).await;
    let recorder = Arc::new(Recorder::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let app = dtxn_http::participant_router(recorder.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let payload = r#"{"email":"zoë@example.com","name":"Zoë 🦀 \"Z\" O'Brien","tags":["ü",null,1.5e3,{"nested":[]}],"note":"line\nbreak\u0000"}"#;
    let id = coordinator.begin().await;
    let (status, body) = coordinator
        .register(
            &id,
            &format!(r#"{{"name":"users","url":"{url}","payload":{payload}}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = coordinator
        .call(&format!("/transactions/{id}/prepare"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = coordinator
        .call(&format!("/transactions/{id}/commit"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    let expected: Value = serde_json::from_str(payload).unwrap();
    for cx in &seen {
        assert_eq!(cx.transaction_id().to_string(), id);
        let got: Value = serde_json::from_slice(cx.payload().unwrap().as_bytes()).unwrap();
        assert_eq!(got, expected);
        assert_eq!(
            cx.outcome_url(),
            Some(format!("{}/transactions/{id}/outcome", coordinator.base).as_str())
        );
    }
    assert_eq!(
        seen.iter().map(|cx| cx.phase()).collect::<Vec<_>>(),
        [dtxn::Phase::Prepare, dtxn::Phase::Commit]
    );
}

#[tokio::test]
async fn every_call_carries_the_version_the_attempt_the_outcome_url_and_the_registration_headers() {
    let coordinator = Coordinator::start(|c| c).await;
    let (url, service) = RawService::spawn((StatusCode::OK, r#"{"vote":"ready"}"#)).await;
    let id = coordinator.begin().await;
    let (status, body) = coordinator
        .register(
            &id,
            &format!(
                r#"{{"name":"orders","url":"{url}","payload":[1,2,3],"headers":{{"X-Tenant":"acme","x-request-id":"r-1"}}}}"#
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The same registration again is recognised: same service, same headers.
    let (status, body) = coordinator
        .register(
            &id,
            &format!(
                r#"{{"name":"orders","url":"{url}","payload":[1,2,3],"headers":{{"X-Tenant":"acme","x-request-id":"r-1"}}}}"#
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["registration"], "already_registered");
    coordinator
        .call(&format!("/transactions/{id}/prepare"), None)
        .await;
    coordinator
        .call(&format!("/transactions/{id}/commit"), None)
        .await;
    let received = service.received();
    assert_eq!(
        received.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        ["prepare", "commit"]
    );
    for r in &received {
        assert_eq!(r.body["version"], 1);
        assert_eq!(r.body["transaction_id"], id.as_str());
        assert_eq!(r.body["attempt"], 1);
        assert_eq!(r.body["payload"], json!([1, 2, 3]));
        let outcome_url = r.body["outcome_url"].as_str().unwrap();
        assert_eq!(
            outcome_url,
            format!("{}/transactions/{id}/outcome", coordinator.base)
        );
        assert_eq!(r.headers["x-tenant"], "acme");
        assert_eq!(r.headers["x-request-id"], "r-1");
    }
    // The outcome URL answers what was decided.
    let outcome: Value = reqwest::get(received[0].body["outcome_url"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(outcome["outcome"], "committed");
}

#[tokio::test]
async fn oversized_malformed_and_forbidden_registrations_get_4xx_json_and_register_nothing() {
    let coordinator = Coordinator::start(|c| c.max_payload_bytes(1000)).await;
    let (url, service) = RawService::spawn((StatusCode::OK, r#"{"vote":"ready"}"#)).await;
    let id = coordinator.begin().await;
    let register = |extra: String| format!(r#"{{"name":"p","url":"{url}"{extra}}}"#);
    // The payload limit counts the JSON text: 998 characters and 2 quotes
    // fit; one more does not.
    let fits = format!(r#","payload":"{}""#, "é".repeat(499));
    let too_big = format!(r#","payload":"{}""#, "x".repeat(999));
    for (extra, status, code) in [
        (too_big, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        (
            r#","payload":{"unclosed":"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            r#","payload":{"a":1}}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            r#","headers":{"Authorization":"Bearer stolen"}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_header",
        ),
        (
            r#","headers":{"host":"elsewhere"}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_header",
        ),
        (
            r#","headers":{"x-bad":"line\nbreak"}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_header",
        ),
        (
            format!(
                r#","headers":{{{}}}"#,
                (0..17)
                    .map(|i| format!(r#""x-h{i}":"v""#))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_header",
        ),
        (
            r#","headers":["x-a","1"]"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ] {
        let (got, body) = coordinator.register(&id, &register(extra.clone())).await;
        assert_eq!(
            (got, body["code"].as_str().unwrap()),
            (status, code),
            "{extra}: {body}"
        );
        // The secret-looking value is never echoed.
        assert!(!body.to_string().contains("stolen"), "{body}");
    }
    let (status, body) = coordinator.register(&id, &register(fits)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Only the registration that fitted is called.
    coordinator
        .call(&format!("/transactions/{id}/prepare"), None)
        .await;
    assert_eq!(service.received().len(), 1);
    assert_eq!(
        service.received()[0].body["payload"],
        Value::String("é".repeat(499))
    );
}

#[tokio::test]
async fn a_participant_answering_garbage_to_a_payload_call_is_a_failed_prepare_then_rolled_back() {
    let coordinator = Coordinator::start(|c| c).await;
    let (url, service) = RawService::spawn((StatusCode::OK, "<html>not a vote</html>")).await;
    let id = coordinator.begin().await;
    coordinator
        .register(
            &id,
            &format!(r#"{{"name":"odd","url":"{url}","payload":{{"k":"v"}}}}"#),
        )
        .await;
    let (status, body) = coordinator
        .call(&format!("/transactions/{id}/prepare"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["outcome"], "aborted", "{body}");
    assert_eq!(body["reason"]["kind"], "prepare_failed", "{body}");
    assert!(!body.to_string().contains("html"), "{body}");
    assert_eq!(coordinator.outcome(&id).await, "aborted");
    // A failed call may have prepared: rollback follows, with the payload.
    let rolled_back = async {
        loop {
            if let Some(r) = service
                .received()
                .into_iter()
                .find(|r| r.path == "rollback")
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let r = tokio::time::timeout(PATIENCE, rolled_back).await.unwrap();
    assert_eq!(r.body["payload"], json!({"k": "v"}));
}

#[tokio::test]
async fn without_a_public_url_no_outcome_url_is_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        dtxn::TransactionCoordinator::new(),
        ServerConfig::default().allow_participant_net("127.0.0.0/8"),
        std::future::pending(),
    ));
    let coordinator = Coordinator {
        base,
        http: reqwest::Client::new(),
    };
    let (url, service) = RawService::spawn((StatusCode::OK, r#"{"vote":"ready"}"#)).await;
    let id = coordinator.begin().await;
    coordinator
        .register(&id, &format!(r#"{{"name":"p","url":"{url}"}}"#))
        .await;
    coordinator
        .call(&format!("/transactions/{id}/prepare"), None)
        .await;
    let received = service.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].body.get("outcome_url").is_none());
    assert!(received[0].body.get("payload").is_none());
    assert_eq!(received[0].body["version"], 1);
}

#[test]
fn bad_server_settings_for_payloads_are_refused_by_name() {
    for (config, setting) in [
        (
            ServerConfig::default().max_payload_bytes(0),
            "max_payload_bytes",
        ),
        (
            ServerConfig::default()
                .max_body_bytes(1000)
                .max_payload_bytes(1001),
            "max_payload_bytes",
        ),
        (
            ServerConfig::default().public_url("not a url"),
            "public_url",
        ),
        (
            ServerConfig::default().public_url("ftp://coordinator/"),
            "public_url",
        ),
    ] {
        match config.validate(None) {
            Err(dtxn_http::server::ServerError::InvalidSetting { setting: s, .. }) => {
                assert_eq!(s, setting)
            }
            other => panic!("{setting}: {other:?}"),
        }
    }
}
