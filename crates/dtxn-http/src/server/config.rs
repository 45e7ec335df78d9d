//! [`ServerConfig`]: the server's settings and their defaults.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Cluster, ServerError};
use crate::HttpParticipant;

/// Settings of the coordinator's HTTP server, for [`router`](super::router)
/// and [`serve`](super::serve).
///
/// Build it from [`ServerConfig::default`] with the builder-style setters;
/// each documents its default. Settings are checked by
/// [`validate`](Self::validate), which [`router`](super::router) and
/// [`serve`](super::serve) call too ([`ServerError`](super::ServerError)
/// names the bad one).
///
/// ```
/// use std::time::Duration;
/// use dtxn_http::server::ServerConfig;
///
/// let config = ServerConfig::default()
///     .bearer_token("s3cret")
///     .participant("users", "http://users.internal:7001/2pc/")
///     .participant("billing", "http://billing.internal:7002/2pc/")
///     // Clients may also register services by URL, on these hosts only.
///     .allow_participant_host("orders.internal")
///     .allow_participant_net("10.20.0.0/16")
///     .participant_timeout(Duration::from_secs(2))
///     .idle_timeout(Duration::from_secs(30));
/// config.validate(None)?;
/// # Ok::<(), dtxn_http::server::ServerError>(())
/// ```
///
/// # Participants and SSRF
///
/// The coordinator makes HTTP calls to the participants clients register.
/// By default only the [known participants](Self::participant) can be
/// registered, by name. Registration by URL ("ad hoc") is enabled by
/// allowing hosts ([`allow_participant_host`](Self::allow_participant_host))
/// or networks ([`allow_participant_net`](Self::allow_participant_net)); a
/// URL naming any other host is refused (`403
/// participant_host_not_allowed`). Nothing is resolved to decide: a host
/// name must be listed exactly, and networks match only URLs whose host is
/// a literal IP address, so DNS cannot widen the list. A URL at the
/// coordinator's own port on a loopback address, `localhost`, or its
/// listen address is refused as well. Calls go straight to the
/// participant, never through the proxy of the environment
/// (`HTTP_PROXY`…), unless [`participant_proxy`](Self::participant_proxy)
/// is set. What a participant answers never reaches the client verbatim:
/// abort reasons carry the HTTP status and at most the participant's own
/// JSON `error` (or vote `reason`), cut to
/// [`MAX_REASON_CHARS`](crate::wire::MAX_REASON_CHARS).
///
/// # Slow clients
///
/// Each connection has at most
/// [`header_read_timeout`](Self::header_read_timeout) from the first byte
/// of a request to the end of its headers, then at most
/// [`body_read_timeout`](Self::body_read_timeout) to send its body (which
/// is read before the request takes one of the
/// [`max_concurrent_requests`](Self::max_concurrent_requests) slots), and
/// is closed after [`idle_timeout`](Self::idle_timeout) without a request.
/// At most [`max_connections`](Self::max_connections) are open at once;
/// more wait in the listen backlog.
#[derive(Clone)]
#[must_use = "a ServerConfig does nothing until given to router or serve"]
pub struct ServerConfig {
    pub(super) bearer_token: Option<String>,
    pub(super) max_concurrent_requests: usize,
    pub(super) max_body_bytes: usize,
    pub(super) max_payload_bytes: usize,
    pub(super) public_url: Option<String>,
    pub(super) participants: Vec<(String, String)>,
    /// Bearer tokens for known participants: (participant, token).
    pub(super) participant_tokens: Vec<(String, String)>,
    /// Extra headers for known participants: (participant, name, value).
    pub(super) participant_headers: Vec<(String, String, String)>,
    pub(super) allowed_hosts: Vec<String>,
    pub(super) allowed_nets: Vec<String>,
    pub(super) participant_proxy: Option<String>,
    pub(super) participant_timeout: Duration,
    pub(super) shutdown_grace: Duration,
    pub(super) max_connections: usize,
    pub(super) header_read_timeout: Duration,
    pub(super) body_read_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) cluster: Option<Arc<dyn Cluster>>,
    pub(super) forward_timeout: Duration,
}

impl ServerConfig {
    /// Default of [`max_concurrent_requests`](Self::max_concurrent_requests).
    pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 1024;
    /// Default of [`max_body_bytes`](Self::max_body_bytes): 16 KiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024;
    /// Default of [`max_payload_bytes`](Self::max_payload_bytes): 8 KiB.
    pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 8 * 1024;
    /// The most headers a registration may give
    /// (`POST /transactions/{id}/participants` with `"headers"`).
    pub const MAX_REGISTRATION_HEADERS: usize = 16;
    /// Default of [`shutdown_grace`](Self::shutdown_grace).
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// Default of [`max_connections`](Self::max_connections).
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
    /// The largest [`max_connections`](Self::max_connections) accepted.
    pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;
    /// Default of [`header_read_timeout`](Self::header_read_timeout).
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default of [`body_read_timeout`](Self::body_read_timeout).
    pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default of [`idle_timeout`](Self::idle_timeout).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default of [`forward_timeout`](Self::forward_timeout): long enough
    /// for the owner to run a commit.
    pub const DEFAULT_FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
    /// How many ad hoc participants (distinct name and URL) are remembered,
    /// so that registering one twice is recognised and its connection pool
    /// reused.
    pub const AD_HOC_CACHE_CAPACITY: usize = 10_000;

    /// Requires `Authorization: Bearer <token>` on every route but
    /// `/health` and `/ready`; other requests get `401`. Default: no token,
    /// no authentication (bind to a private interface, or put a proxy in
    /// front). The token must be non-empty visible ASCII.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// The most API requests handled at once (≥ 1). Beyond it requests are
    /// shed at once with `503` and `Retry-After`, never queued; `/health`,
    /// `/ready` and `/metrics` are never shed. Default
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

    /// The largest `payload` a registration may carry, in bytes of JSON
    /// text (≥ 1, at most [`max_body_bytes`](Self::max_body_bytes)); a
    /// bigger one is refused with `413 payload_too_large`. The coordinator
    /// keeps each payload until the transaction is forgotten and sends it
    /// with every call, so this bounds both memory and traffic. Default
    /// [`DEFAULT_MAX_PAYLOAD_BYTES`](Self::DEFAULT_MAX_PAYLOAD_BYTES).
    pub fn max_payload_bytes(mut self, n: usize) -> Self {
        self.max_payload_bytes = n;
        self
    }

    /// This coordinator's base URL as participant services reach it
    /// (`http://coordinator.internal:8080`). With it, every participant
    /// call carries `outcome_url` = `{url}/transactions/{id}/outcome`
    /// ([wire contract](crate::wire)), so a service that prepared and lost
    /// contact knows whom to ask. Default: none, and no `outcome_url` is
    /// sent. Checked by [`validate`](Self::validate): an absolute `http`
    /// or `https` URL with no query.
    pub fn public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// A known participant service: clients register it by `name` alone
    /// (`{"name": "users"}`). `base_url` follows
    /// [`HttpParticipant::new`]. Default: none. Names must be unique.
    /// Known participants need no allow-list entry.
    pub fn participant(mut self, name: impl Into<String>, base_url: impl Into<String>) -> Self {
        self.participants.push((name.into(), base_url.into()));
        self
    }

    /// Presents `Authorization: Bearer <token>` to the known participant
    /// `name` on every call (prepare, commit, rollback), for services
    /// behind [`participant_router_with`](crate::participant_router_with)
    /// or any other check. `name` must be a [known
    /// participant](Self::participant) and `token` non-empty visible
    /// ASCII; both are checked by [`validate`](Self::validate). At most one
    /// token per participant. The token never appears in `Debug` output or
    /// logs. Participants registered by URL get no credentials.
    pub fn participant_token(mut self, name: impl Into<String>, token: impl Into<String>) -> Self {
        self.participant_tokens.push((name.into(), token.into()));
        self
    }

    /// Sends the header `header: value` to the known participant `name` on
    /// every call (repeatable), as
    /// [`HttpParticipantBuilder::header`](crate::HttpParticipantBuilder::header)
    /// does: values are treated as secrets, never shown. `name` must be a
    /// [known participant](Self::participant).
    pub fn participant_header(
        mut self,
        name: impl Into<String>,
        header: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.participant_headers
            .push((name.into(), header.into(), value.into()));
        self
    }

    /// Lets clients register participants by URL on this host: a host
    /// name, matched exactly (case aside), or a literal IP address.
    /// Repeatable. Default: none; with no host and no
    /// [net](Self::allow_participant_net) allowed, registration by URL is
    /// off (`403 ad_hoc_participants_disabled`).
    pub fn allow_participant_host(mut self, host: impl Into<String>) -> Self {
        self.allowed_hosts.push(host.into());
        self
    }

    /// Lets clients register participants by URL whose host is a literal
    /// IP address in this network, in CIDR notation (`10.0.0.0/8`,
    /// `fd00::/8`, `127.0.0.1/32`). Repeatable. Default: none. Host names
    /// never match a network (nothing is resolved).
    pub fn allow_participant_net(mut self, cidr: impl Into<String>) -> Self {
        self.allowed_nets.push(cidr.into());
        self
    }

    /// Sends every participant call through this HTTP proxy (a URL such as
    /// `http://proxy.internal:3128`). Default: none, and the proxy
    /// environment variables (`HTTP_PROXY`, `ALL_PROXY`…) are ignored.
    pub fn participant_proxy(mut self, proxy_url: impl Into<String>) -> Self {
        self.participant_proxy = Some(proxy_url.into());
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

    /// The most connections [`serve`](super::serve) keeps open (1 to
    /// [`MAX_CONNECTIONS_LIMIT`](Self::MAX_CONNECTIONS_LIMIT)); more wait
    /// in the listen backlog until one closes. Keep it below the process's
    /// file descriptor limit. Default
    /// [`DEFAULT_MAX_CONNECTIONS`](Self::DEFAULT_MAX_CONNECTIONS).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// The most time from the first byte of a request to the end of its
    /// headers (> 0); then the connection is closed. Default
    /// [`DEFAULT_HEADER_READ_TIMEOUT`](Self::DEFAULT_HEADER_READ_TIMEOUT).
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// The most time from the end of a request's headers to the end of its
    /// body (> 0); then it is answered `408 body_timeout` and the
    /// connection is closed. Default
    /// [`DEFAULT_BODY_READ_TIMEOUT`](Self::DEFAULT_BODY_READ_TIMEOUT).
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// How long a connection may stay open without a request (> 0): after
    /// it was accepted or its last answer was sent, until the first byte of
    /// the next request. Default
    /// [`DEFAULT_IDLE_TIMEOUT`](Self::DEFAULT_IDLE_TIMEOUT).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Makes this server a node of `cluster`: requests about a transaction
    /// another node owns are forwarded to it, `/ready` answers `503
    /// lease_lost` without the lease, `/metrics` shows the cluster's
    /// gauges and `GET /admin/decisions` lists the whole cluster's (see
    /// [`Cluster`] and the "Cluster" section of the [server
    /// docs](super#cluster)). Default: none, a lone coordinator. The node
    /// id must be non-empty visible ASCII, checked by
    /// [`validate`](Self::validate).
    pub fn cluster(mut self, cluster: Arc<dyn Cluster>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The most time a request forwarded to another node of the
    /// [cluster](Self::cluster) may take, from connecting to the end of
    /// the owner's answer (> 0); then it is answered `503
    /// owner_unavailable`. Also bounds asking each node for the cluster-wide
    /// `GET /admin/decisions`. Connecting alone is bounded by 2 s. Default
    /// [`DEFAULT_FORWARD_TIMEOUT`](Self::DEFAULT_FORWARD_TIMEOUT).
    pub fn forward_timeout(mut self, timeout: Duration) -> Self {
        self.forward_timeout = timeout;
        self
    }

    /// Checks every setting, the known participants' URLs and the
    /// allow-list, as [`router`](super::router) and [`serve`](super::serve)
    /// do. Call it before binding a listener to fail early. With `listen`,
    /// a known participant at this server's own address is refused too.
    ///
    /// # Errors
    ///
    /// [`ServerError::InvalidSetting`](super::ServerError::InvalidSetting)
    /// for a zero or out-of-range limit or timeout, an empty bearer token,
    /// a bad allow-list entry or proxy URL, or a [cluster](Self::cluster)
    /// node id that cannot be sent in a header;
    /// [`ServerError::InvalidParticipant`](super::ServerError::InvalidParticipant)
    /// or
    /// [`ServerError::DuplicateParticipant`](super::ServerError::DuplicateParticipant)
    /// for a bad [`participant`](Self::participant) (or a bad token or
    /// header of one);
    /// [`ServerError::InvalidCredentials`](super::ServerError::InvalidCredentials)
    /// for a [`participant_token`](Self::participant_token) or
    /// [`participant_header`](Self::participant_header) naming no known
    /// participant.
    pub fn validate(&self, listen: Option<SocketAddr>) -> Result<(), ServerError> {
        self.check_settings()?;
        super::participants::Participants::new(self, listen).map(drop)
    }

    /// The checks of [`validate`](Self::validate) that need no participant.
    pub(super) fn check_settings(&self) -> Result<(), ServerError> {
        let invalid = |setting, reason| Err(ServerError::InvalidSetting { setting, reason });
        if self.max_concurrent_requests == 0 {
            return invalid("max_concurrent_requests", "must be at least 1");
        }
        if self.max_body_bytes == 0 {
            return invalid("max_body_bytes", "must be at least 1");
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > self.max_body_bytes {
            return invalid(
                "max_payload_bytes",
                "must be at least 1 and at most max_body_bytes",
            );
        }
        if let Some(url) = &self.public_url {
            let ok = reqwest::Url::parse(url).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.query().is_none()
                    && u.fragment().is_none()
            });
            if !ok {
                return invalid(
                    "public_url",
                    "must be an absolute http or https URL without query or fragment",
                );
            }
        }
        if self.max_connections == 0 || self.max_connections > Self::MAX_CONNECTIONS_LIMIT {
            return invalid("max_connections", "must be 1 to 1048576");
        }
        for (setting, timeout) in [
            ("participant_timeout", self.participant_timeout),
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("forward_timeout", self.forward_timeout),
        ] {
            if timeout.is_zero() {
                return invalid(setting, "must be more than zero");
            }
        }
        if let Some(token) = &self.bearer_token {
            if !crate::auth::is_valid_token(token) {
                return invalid("bearer_token", "must be non-empty visible ASCII");
            }
        }
        if let Some(cluster) = &self.cluster {
            if !crate::auth::is_valid_token(cluster.node_id()) {
                return invalid("cluster", "the node id must be non-empty visible ASCII");
            }
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bearer_token: None,
            max_concurrent_requests: Self::DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            max_payload_bytes: Self::DEFAULT_MAX_PAYLOAD_BYTES,
            public_url: None,
            participants: Vec::new(),
            participant_tokens: Vec::new(),
            participant_headers: Vec::new(),
            allowed_hosts: Vec::new(),
            allowed_nets: Vec::new(),
            participant_proxy: None,
            participant_timeout: HttpParticipant::DEFAULT_TIMEOUT,
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: Self::DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            cluster: None,
            forward_timeout: Self::DEFAULT_FORWARD_TIMEOUT,
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
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("public_url", &self.public_url)
            .field("participants", &self.participants)
            // Whose credentials are set, never their values.
            .field(
                "participant_tokens",
                &self
                    .participant_tokens
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .field(
                "participant_headers",
                &self
                    .participant_headers
                    .iter()
                    .map(|(name, header, _)| (name, header))
                    .collect::<Vec<_>>(),
            )
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_nets", &self.allowed_nets)
            .field("participant_proxy", &self.participant_proxy)
            .field("participant_timeout", &self.participant_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            // The node, not the cluster's internals.
            .field("cluster", &self.cluster.as_ref().map(|c| c.node_id()))
            .field("forward_timeout", &self.forward_timeout)
            .finish()
    }
}
