//! [`HttpParticipant`]: a participant reached over HTTP.

use std::time::Duration;

use dtxn::{
    async_trait, CallContext, Participant, ParticipantError, Phase, PreparedResult, TransactionId,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::{StatusCode, Url};

use serde_json::value::RawValue;

use crate::wire::{ErrorBody, OutgoingRequest, VoteResponse, MAX_REASON_CHARS, WIRE_VERSION};

/// The most of an answer's body that is read (a vote or an error is small).
const MAX_BODY: usize = 64 * 1024;

/// Why an [`HttpParticipant`] could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpParticipantError {
    /// The base URL does not parse.
    #[error("invalid participant URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// An extra header ([`HttpParticipantBuilder::header`]) or the bearer
    /// token ([`HttpParticipantBuilder::bearer_token`]) cannot be sent.
    /// The value is never quoted: it may be a secret.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header's name (`authorization` for the bearer token).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A [`Participant`] living in another process: each call is a `POST` to
/// the service's `prepare`, `commit` or `rollback` endpoint, following the
/// [wire contract](crate::wire).
///
/// Each call carries what the coordinator's [`CallContext`] holds: the
/// attempt number and the [`Payload`](dtxn::Payload) registered with the
/// participant
/// ([`register_participant_with_payload`](dtxn::TransactionCoordinator::register_participant_with_payload)),
/// which must be JSON (a payload that is not fails the call: a prepare
/// then aborts the transaction); and, with
/// [`HttpParticipantBuilder::coordinator_url`], the URL at which the
/// service can ask what was decided.
///
/// Connections are pooled and reused (keep-alive) by the underlying
/// [`reqwest::Client`]; participants built from one
/// [`HttpParticipantBuilder::client`] share its pool. Every call has its own
/// timeout ([`HttpParticipantBuilder::timeout`]), independent of the
/// coordinator's phase timeouts (whichever is shorter wins). Redirects are
/// not followed: a participant must answer at the URL it registered. The
/// default client ignores the proxy environment variables.
///
/// What a participant answers is never passed on verbatim: errors and
/// abort reasons carry the HTTP status and at most the `error` of an
/// [`ErrorBody`] or the `reason` of a vote, cut to [`MAX_REASON_CHARS`]
/// characters, so a URL that is not a participant cannot have its answers
/// read through the coordinator.
///
/// # Credentials
///
/// A service that requires authentication gets it on every call
/// (prepare, commit and rollback): a bearer token
/// ([`HttpParticipantBuilder::bearer_token`], sent as `Authorization:
/// Bearer <token>`) and any extra headers
/// ([`HttpParticipantBuilder::header`]). Header values are marked
/// sensitive and never appear in `Debug` output, errors or logs; only
/// their names do. Calls are plain HTTP (the default build has no TLS
/// stack), so credentials travel in clear text: outside loopback or a
/// trusted network, reach the service through a local proxy that
/// originates TLS (`docs/NETWORK.md`, "Authentication and TLS").
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::{sync::Arc, time::Duration};
/// use dtxn::TransactionCoordinator;
/// use dtxn_http::HttpParticipant;
///
/// let inventory = HttpParticipant::builder("inventory", "http://127.0.0.1:7002/")
///     .timeout(Duration::from_secs(2))
///     .bearer_token(std::env::var("INVENTORY_TOKEN")?)
///     .header("x-tenant", "acme")
///     .build()?;
/// let coordinator = TransactionCoordinator::new();
/// let txn = coordinator.begin_transaction()?;
/// coordinator.register_participant(txn, Arc::new(inventory))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpParticipant {
    name: String,
    base: Url,
    prepare: Url,
    commit: Url,
    rollback: Url,
    client: reqwest::Client,
    timeout: Duration,
    /// Sent with every call; every value is marked sensitive.
    headers: HeaderMap,
    /// The coordinator's base URL without a trailing `/`, for
    /// `outcome_url`.
    coordinator: Option<String>,
}

/// Builds an [`HttpParticipant`].
pub struct HttpParticipantBuilder {
    name: String,
    url: String,
    timeout: Duration,
    client: Option<reqwest::Client>,
    /// Extra headers in the order given, validated by `build`.
    headers: Vec<(String, String)>,
    bearer_token: Option<String>,
    coordinator: Option<String>,
}

impl std::fmt::Debug for HttpParticipant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpParticipant")
            .field("name", &self.name)
            .field("base", &self.base.as_str())
            .field("timeout", &self.timeout)
            // Names only: the values may be secrets.
            .field("headers", &HeaderNames(&self.headers))
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for HttpParticipantBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpParticipantBuilder")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// Shows a header map's names, never its values.
struct HeaderNames<'a>(&'a HeaderMap);

impl std::fmt::Debug for HeaderNames<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|name| (name.as_str(), "<redacted>")))
            .finish()
    }
}

impl HttpParticipant {
    /// The default per-call timeout.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A participant named `name` at `base_url`, with default settings and a
    /// client of its own.
    ///
    /// # Errors
    ///
    /// [`HttpParticipantError::InvalidUrl`] unless `base_url` is an absolute
    /// `http` URL with a host and no query or fragment. `https` is refused:
    /// this crate's HTTP client has no TLS stack (reach such a service
    /// through a local proxy that originates TLS; `docs/NETWORK.md`).
    pub fn new(
        name: impl Into<String>,
        base_url: impl AsRef<str>,
    ) -> Result<Self, HttpParticipantError> {
        Self::builder(name, base_url).build()
    }

    /// A builder for a participant named `name` at `base_url`.
    pub fn builder(name: impl Into<String>, base_url: impl AsRef<str>) -> HttpParticipantBuilder {
        HttpParticipantBuilder {
            name: name.into(),
            url: base_url.as_ref().to_owned(),
            timeout: Self::DEFAULT_TIMEOUT,
            client: None,
            headers: Vec::new(),
            bearer_token: None,
            coordinator: None,
        }
    }

    /// A client suited to participant calls: connection pooling, no
    /// redirects, no proxy (the proxy environment variables are ignored),
    /// TCP_NODELAY, a 2 s connect timeout. Share one among many
    /// participants with [`HttpParticipantBuilder::client`].
    ///
    /// # Errors
    ///
    /// [`HttpParticipantError::Client`] if the client cannot be built.
    pub fn default_client() -> Result<reqwest::Client, HttpParticipantError> {
        Self::client_builder()
            .build()
            .map_err(|e| HttpParticipantError::Client(e.to_string()))
    }

    /// The settings of [`default_client`](Self::default_client), to add to
    /// (a proxy with [`reqwest::ClientBuilder::proxy`], TLS…) before
    /// building.
    pub fn client_builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
    }

    /// The service's base URL.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The names of the headers sent with every call besides the wire
    /// contract's own (`authorization` when a bearer token is set). The
    /// values are not exposed.
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.keys().map(HeaderName::as_str)
    }

    /// The same participant with `headers` sent on every call besides
    /// its own (the coordinator server uses this for headers given at
    /// registration). Names and values are checked as by
    /// [`HttpParticipantBuilder::header`].
    ///
    /// # Errors
    ///
    /// [`HttpParticipantError::InvalidHeader`] for a bad or reserved
    /// header.
    pub fn with_headers<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, HttpParticipantError> {
        let mut with = self.clone();
        for (name, value) in headers {
            let (name, value) = checked_header(name, value)?;
            with.headers.append(name, value);
        }
        Ok(with)
    }

    /// The URL this participant is told to ask for `txn`'s outcome.
    fn outcome_url(&self, txn: TransactionId) -> Option<String> {
        self.coordinator
            .as_ref()
            .map(|base| format!("{base}/transactions/{txn}/outcome"))
    }

    async fn post(&self, url: &Url, cx: &CallContext) -> Result<Answer, ParticipantError> {
        let payload = match cx.payload() {
            None => None,
            Some(payload) => Some(
                serde_json::from_slice::<&RawValue>(payload.as_bytes()).map_err(|e| {
                    ParticipantError::permanent(format!(
                        "POST {url}: not sent: the payload is not JSON ({:?} error at line {}, column {})",
                        e.classify(),
                        e.line(),
                        e.column()
                    ))
                })?,
            ),
        };
        let txn = cx.transaction_id();
        let outcome_url = self.outcome_url(txn);
        let body = OutgoingRequest {
            version: WIRE_VERSION,
            transaction_id: txn,
            attempt: cx.attempt(),
            payload,
            outcome_url: outcome_url.as_deref(),
        };
        let response = self
            .client
            .post(url.clone())
            .timeout(self.timeout)
            .headers(self.headers.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| transport_error(url, e))?;
        let status = response.status();
        let body = read_capped(response)
            .await
            .map_err(|e| transport_error(url, e))?;
        Ok(Answer { status, body })
    }

    async fn phase2(&self, url: &Url, cx: &CallContext) -> Result<(), ParticipantError> {
        let answer = self.post(url, cx).await?;
        if answer.status.is_success() {
            return Ok(());
        }
        let message = answer.describe(url);
        if is_retryable(answer.status) {
            Err(ParticipantError::transient(message))
        } else {
            Err(ParticipantError::permanent(message))
        }
    }
}

/// A header to send, checked: a valid name that the wire contract does
/// not set itself, and a value marked sensitive.
fn checked_header(
    name: &str,
    value: &str,
) -> Result<(HeaderName, HeaderValue), HttpParticipantError> {
    const RESERVED: [&str; 6] = [
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "host",
        "transfer-encoding",
    ];
    let invalid = |reason| HttpParticipantError::InvalidHeader {
        name: name.to_owned(),
        reason,
    };
    let header = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| invalid("not a valid header name"))?;
    if RESERVED.contains(&header.as_str()) {
        return Err(invalid(
            "reserved: set by the wire contract (or bearer_token for authorization)",
        ));
    }
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| invalid("the value must be visible ASCII, spaces or tabs"))?;
    value.set_sensitive(true);
    Ok((header, value))
}

impl HttpParticipantBuilder {
    /// The per-call timeout (default [`HttpParticipant::DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Use `client` (and its connection pool) instead of a new
    /// [`HttpParticipant::default_client`]. Cloning a `reqwest::Client` is
    /// cheap and shares the pool.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Sends `Authorization: Bearer <token>` with every call. The token
    /// must be non-empty visible ASCII (checked by
    /// [`build`](Self::build)); it is never shown in `Debug` output or
    /// errors. Read it from a secret store or an environment variable, not
    /// a command-line flag (flags show in `ps`).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Sends the header `name: value` with every call (repeatable; the same
    /// name twice sends both values). Names are case-insensitive; the
    /// headers of the wire contract itself (`content-type`,
    /// `content-length`, `host`, `transfer-encoding`, `connection`) and
    /// `authorization` (use [`bearer_token`](Self::bearer_token)) are
    /// refused by [`build`](Self::build). Values are treated as secrets:
    /// never shown in `Debug` output or errors.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The headers to send, validated.
    fn header_map(&self) -> Result<HeaderMap, HttpParticipantError> {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let (name, value) = checked_header(name, value)?;
            map.append(name, value);
        }
        if let Some(token) = &self.bearer_token {
            let invalid = || HttpParticipantError::InvalidHeader {
                name: AUTHORIZATION.as_str().to_owned(),
                reason: "the bearer token must be non-empty visible ASCII",
            };
            if !crate::auth::is_valid_token(token) {
                return Err(invalid());
            }
            let mut value =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| invalid())?;
            value.set_sensitive(true);
            map.insert(AUTHORIZATION, value);
        }
        Ok(map)
    }

    /// Tells the service where to ask what was decided: every call
    /// carries `outcome_url` = `{url}/transactions/{id}/outcome`, the
    /// coordinator server's outcome query. `url` is the coordinator's base
    /// URL as the service can reach it (`http://coordinator.internal:8080`).
    /// Default: none, and no `outcome_url` is sent. `dtxn serve` sets it
    /// from `--public-url`.
    pub fn coordinator_url(mut self, url: impl Into<String>) -> Self {
        self.coordinator = Some(url.into());
        self
    }

    /// The participant.
    ///
    /// # Errors
    ///
    /// See [`HttpParticipant::new`]; also
    /// [`HttpParticipantError::InvalidHeader`] for a bad
    /// [`header`](Self::header) or [`bearer_token`](Self::bearer_token).
    pub fn build(self) -> Result<HttpParticipant, HttpParticipantError> {
        let headers = self.header_map()?;
        let coordinator = match &self.coordinator {
            None => None,
            Some(url) => {
                let invalid = |reason: &str| HttpParticipantError::InvalidUrl {
                    url: url.clone(),
                    reason: format!("coordinator URL: {reason}"),
                };
                let parsed = Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(invalid("must be an absolute http or https URL"));
                }
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    return Err(invalid("must not have a query or fragment"));
                }
                Some(parsed.as_str().trim_end_matches('/').to_owned())
            }
        };
        let invalid = |reason: &str| HttpParticipantError::InvalidUrl {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        let mut base = Url::parse(&self.url).map_err(|e| invalid(&e.to_string()))?;
        match base.scheme() {
            "http" => {}
            // Refused here rather than failing every call later.
            "https" => {
                return Err(invalid(
                    "https is not supported: the participant client has no TLS stack; \
                     call the service through a local proxy that originates TLS",
                ))
            }
            _ => return Err(invalid("the scheme must be http")),
        }
        if base.host().is_none() {
            return Err(invalid("it has no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("it must not have a query or fragment"));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let join = |endpoint: &str| base.join(endpoint).map_err(|e| invalid(&e.to_string()));
        let (prepare, commit, rollback) = (join("prepare")?, join("commit")?, join("rollback")?);
        let client = match self.client {
            Some(client) => client,
            None => HttpParticipant::default_client()?,
        };
        Ok(HttpParticipant {
            name: self.name,
            base,
            prepare,
            commit,
            rollback,
            client,
            timeout: self.timeout,
            headers,
            coordinator,
        })
    }
}

#[async_trait]
impl Participant for HttpParticipant {
    fn name(&self) -> &str {
        &self.name
    }

    /// Its base URL: a coordinator with a decision log logs it with each
    /// Commit decision and finds the participant again by it after a
    /// restart ([`server::recovery_resolver`](crate::server::recovery_resolver)).
    /// Headers and tokens are not logged: a restarted server takes them
    /// from its configuration of the participant with that URL.
    fn recovery_key(&self) -> Option<&str> {
        Some(self.base.as_str())
    }

    /// Votes with [`try_prepare`](Self::try_prepare); a failed call becomes
    /// an `Aborted` vote here. The coordinator calls
    /// [`prepare_with`](Self::prepare_with).
    async fn prepare(&self, txn: TransactionId) -> PreparedResult {
        match self.try_prepare(txn).await {
            Ok(vote) => vote,
            Err(e) => PreparedResult::Aborted(format!("prepare call failed: {e}")),
        }
    }

    async fn try_prepare(&self, txn: TransactionId) -> Result<PreparedResult, ParticipantError> {
        self.prepare_with(&CallContext::new(txn, Phase::Prepare))
            .await
    }

    async fn commit(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.commit_with(&CallContext::new(txn, Phase::Commit))
            .await
    }

    async fn rollback(&self, txn: TransactionId) -> Result<(), ParticipantError> {
        self.rollback_with(&CallContext::new(txn, Phase::Rollback))
            .await
    }

    async fn prepare_with(&self, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
        let answer = self.post(&self.prepare, cx).await?;
        match answer.status {
            StatusCode::OK => serde_json::from_slice::<VoteResponse>(&answer.body)
                .map(|mut vote| {
                    // The participant's own words, but bounded.
                    vote.reason = vote.reason.map(|r| cap(&r));
                    PreparedResult::from(vote)
                })
                .map_err(|e| {
                    // Not `e` itself: serde's messages quote the body.
                    ParticipantError::permanent(format!(
                        "POST {}: 200 without a vote ({:?} error at line {}, column {})",
                        self.prepare,
                        e.classify(),
                        e.line(),
                        e.column()
                    ))
                }),
            StatusCode::CONFLICT => Ok(PreparedResult::Aborted(answer.reason())),
            _ => Err(ParticipantError::transient(answer.describe(&self.prepare))),
        }
    }

    async fn commit_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.phase2(&self.commit, cx).await
    }

    async fn rollback_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.phase2(&self.rollback, cx).await
    }
}

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    /// The `error` of an [`ErrorBody`] (capped), else the status. Never
    /// the raw body: the URL may not be a participant at all.
    fn reason(&self) -> String {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(body) => cap(&body.error),
            Err(_) => self.status.to_string(),
        }
    }

    fn describe(&self, url: &Url) -> String {
        match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(body) => format!("POST {url}: {}: {}", self.status, cap(&body.error)),
            Err(_) => format!("POST {url}: {}", self.status),
        }
    }
}

/// `text` cut to [`MAX_REASON_CHARS`] characters, control characters
/// replaced.
fn cap(text: &str) -> String {
    let mut chars = text.chars();
    let mut capped: String = chars
        .by_ref()
        .take(MAX_REASON_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if chars.next().is_some() {
        capped.push('…');
    }
    capped
}

/// Retrying may help: server errors, request timeout, too many requests.
fn is_retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

fn transport_error(url: &Url, e: reqwest::Error) -> ParticipantError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    // reqwest's Display omits the cause chain, which says what happened.
    let mut message = format!("POST {url}: {what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    ParticipantError::transient(message)
}

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_BODY {
            break;
        }
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_validated_and_endpoints_joined() {
        let p = HttpParticipant::new("p", "http://127.0.0.1:7001/svc").unwrap();
        assert_eq!(p.prepare.as_str(), "http://127.0.0.1:7001/svc/prepare");
        assert_eq!(p.rollback.as_str(), "http://127.0.0.1:7001/svc/rollback");
        let p = HttpParticipant::new("p", "http://localhost:7001").unwrap();
        assert_eq!(p.commit.as_str(), "http://localhost:7001/commit");
        for bad in [
            "localhost:7001",
            "ftp://host/",
            "https://host/",
            "http://host/?a=1",
            "not a url",
            "",
        ] {
            assert!(
                matches!(
                    HttpParticipant::new("p", bad),
                    Err(HttpParticipantError::InvalidUrl { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn answers_are_reduced_to_the_status_and_a_capped_error() {
        let answer = |status: StatusCode, body: &str| Answer {
            status,
            body: body.as_bytes().to_vec(),
        };
        let url = Url::parse("http://127.0.0.1:9/prepare").unwrap();
        let raw = answer(StatusCode::INTERNAL_SERVER_ERROR, "secret internals");
        assert_eq!(raw.reason(), "500 Internal Server Error");
        assert_eq!(
            raw.describe(&url),
            "POST http://127.0.0.1:9/prepare: 500 Internal Server Error"
        );
        let error = answer(StatusCode::CONFLICT, r#"{"code":"x","error":"no\nstock"}"#);
        assert_eq!(error.reason(), "no stock");
        let long = format!(r#"{{"code":"x","error":"{}"}}"#, "e".repeat(1000));
        let reason = answer(StatusCode::CONFLICT, &long).reason();
        assert_eq!(reason.chars().count(), MAX_REASON_CHARS + 1);
        assert!(reason.ends_with('…'));
        assert_eq!(cap("short"), "short");
    }

    #[test]
    fn only_server_errors_timeouts_and_throttling_are_retried() {
        assert!(is_retryable(StatusCode::SERVICE_UNAVAILABLE));
        assert!(is_retryable(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(is_retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!is_retryable(StatusCode::NOT_FOUND));
        assert!(!is_retryable(StatusCode::UNPROCESSABLE_ENTITY));
    }
}
