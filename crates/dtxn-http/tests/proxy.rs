//! Participant calls ignore the proxy environment variables, and go
//! through a proxy only when one is configured.
//!
//! One test in its own binary: it sets process-wide environment variables.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};
use dtxn_http::server::{serve, ServerConfig};
use dtxn_http::{participant_router, HttpParticipant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PATIENCE: Duration = Duration::from_secs(5);

struct Ready;

#[async_trait]
impl Participant for Ready {
    fn name(&self) -> &str {
        "ready"
    }
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
}

/// A forward proxy that answers every request itself with an aborted vote
/// and counts the connections it gets.
async fn spawn_proxy() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let body = r#"{"vote":"aborted","reason":"answered by the proxy"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (url, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_calls_use_a_proxy_only_when_configured() {
    let (proxy, proxied) = spawn_proxy().await;
    for var in ["NO_PROXY", "no_proxy", "REQUEST_METHOD"] {
        std::env::remove_var(var);
    }
    for var in ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
        std::env::set_var(var, &proxy);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, participant_router(Arc::new(Ready))).await });
    let txn = TransactionId::from_u128(7);

    // The environment's proxy is ignored: the service itself answers.
    let direct = HttpParticipant::new("p", &service).unwrap();
    let vote = tokio::time::timeout(PATIENCE, direct.try_prepare(txn))
        .await
        .unwrap();
    assert!(matches!(vote, Ok(PreparedResult::Ready)), "{vote:?}");
    assert_eq!(proxied.load(Ordering::SeqCst), 0, "went through the proxy");

    // A configured proxy is used, by the server's participants.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = ServerConfig::default()
        .allow_participant_net("127.0.0.0/8")
        .participant_proxy(&proxy);
    let coordinator = dtxn::TransactionCoordinator::new();
    tokio::spawn(serve(listener, coordinator, config, std::future::pending()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let begun: serde_json::Value = http
        .post(format!("{base}/transactions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = begun["id"].as_str().unwrap();
    let registered = http
        .post(format!("{base}/transactions/{id}/participants"))
        .json(&serde_json::json!({"name": "p", "url": service}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), reqwest::StatusCode::CREATED);
    let prepared: serde_json::Value = http
        .post(format!("{base}/transactions/{id}/prepare"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        prepared["reason"]["reason"], "answered by the proxy",
        "{prepared}"
    );
    assert!(proxied.load(Ordering::SeqCst) >= 1);
}
