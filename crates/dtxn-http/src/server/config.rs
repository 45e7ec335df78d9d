//! [`ServerConfig`]: the server's settings and their defaults.

use std::time::Duration;

use crate::HttpParticipant;

/// Settings of the coordinator's HTTP server, for [`router`](super::router)
/// and [`serve`](super::serve).
///
/// Build it from [`ServerConfig::default`] with the builder-style setters;
/// each documents its default. Settings are checked when the router is made
/// ([`ServerError`](super::ServerError) names the bad one).
///
/// ```
/// use std::time::Duration;
/// use dtxn_http::server::ServerConfig;
///
/// let config = ServerConfig::default()
///     .bearer_token("s3cret")
///     .participant("users", "http://users.internal:7001/2pc/")
///     .participant("billing", "http://billing.internal:7002/2pc/")
///     .allow_ad_hoc_participants(false)
///     .participant_timeout(Duration::from_secs(2));
/// ```
#[derive(Clone)]
#[must_use = "a ServerConfig does nothing until given to router or serve"]
pub struct ServerConfig {
    pub(super) bearer_token: Option<String>,
    pub(super) max_concurrent_requests: usize,
    pub(super) max_body_bytes: usize,
    pub(super) participants: Vec<(String, String)>,
    pub(super) allow_ad_hoc_participants: bool,
    pub(super) participant_timeout: Duration,
    pub(super) shutdown_grace: Duration,
}

impl ServerConfig {
    /// Default of [`max_concurrent_requests`](Self::max_concurrent_requests).
    pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
    /// Default of [`max_body_bytes`](Self::max_body_bytes): 16 KiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;
    /// Default of [`shutdown_grace`](Self::shutdown_grace).
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// How many ad hoc participants (distinct name and URL) are remembered,
    /// so that registering one twice is recognised and its connection pool
    /// reused.
    pub const AD_HOC_CACHE_CAPACITY: usize = 10_000;

    /// Requires `Authorization: Bearer <token>` on every route but
    /// `/health`; other requests get `401`. Default: no token, no
    /// authentication (bind to a private interface, or put a proxy in
    /// front). The token must be non-empty visible ASCII.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// The most requests handled at once (≥ 1). Beyond it requests are shed
    /// at once with `503` and `Retry-After`, never queued. Default
    /// [`DEFAULT_MAX_CONCURRENT_REQUESTS`](Self::DEFAULT_MAX_CONCURRENT_REQUESTS).
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n;
        self
    }

    /// The largest accepted request body in bytes (≥ 1); a bigger one gets
    /// `413`. Default
    /// [`DEFAULT_MAX_BODY_BYTES`](Self::DEFAULT_MAX_BODY_BYTES).
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// A known participant service: clients register it by `name` alone
    /// (`{"name": "users"}`). `base_url` follows
    /// [`HttpParticipant::new`]. Default: none. Names must be unique.
    pub fn participant(mut self, name: impl Into<String>, base_url: impl Into<String>) -> Self {
        self.participants.push((name.into(), base_url.into()));
        self
    }

    /// Whether clients may register participants the server does not know,
    /// by name and URL (`{"name": "x", "url": "http://host:port/2pc/"}`).
    /// Turn it off when clients are not trusted to choose which hosts the
    /// coordinator calls. Default `true`.
    pub fn allow_ad_hoc_participants(mut self, allow: bool) -> Self {
        self.allow_ad_hoc_participants = allow;
        self
    }

    /// The timeout of each HTTP call to a participant (> 0); the
    /// coordinator's own phase timeouts apply too, whichever is shorter.
    /// Default [`HttpParticipant::DEFAULT_TIMEOUT`].
    pub fn participant_timeout(mut self, timeout: Duration) -> Self {
        self.participant_timeout = timeout;
        self
    }

    /// How long [`serve`](super::serve) lets clients finish their
    /// transactions once shutdown starts, before rolling back what is still
    /// undecided. The final stage (in-flight requests, phase 2 still being
    /// delivered) is bounded by the same duration again. Default
    /// [`DEFAULT_SHUTDOWN_GRACE`](Self::DEFAULT_SHUTDOWN_GRACE).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bearer_token: None,
            max_concurrent_requests: Self::DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            participants: Vec::new(),
            allow_ad_hoc_participants: true,
            participant_timeout: HttpParticipant::DEFAULT_TIMEOUT,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            // Never print the secret.
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<set>"))
            .field("max_concurrent_requests", &self.max_concurrent_requests)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("participants", &self.participants)
            .field("allow_ad_hoc_participants", &self.allow_ad_hoc_participants)
            .field("participant_timeout", &self.participant_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .finish()
    }
}
