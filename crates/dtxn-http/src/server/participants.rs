//! The server's participants: the known ones, and a bounded cache of ad hoc
//! ones admitted by the allow-list, all sharing one HTTP client.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;
use ipnet::IpNet;
use reqwest::Url;

use super::error::{ApiError, ServerError};
use super::ServerConfig;
use crate::{HttpParticipant, HttpParticipantError};

/// The longest accepted participant name, in bytes.
const MAX_NAME_LEN: usize = 128;

/// Which hosts participants registered by URL may live on.
#[derive(Debug, Default)]
struct AllowList {
    /// Host names, lower case, without a trailing dot.
    hosts: Vec<String>,
    /// Networks (literal IP hosts become single-address networks).
    nets: Vec<IpNet>,
}

impl AllowList {
    fn new(config: &ServerConfig) -> Result<Self, ServerError> {
        let mut list = Self::default();
        for host in &config.allowed_hosts {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>() {
                list.nets.push(IpNet::from(ip.to_canonical()));
                continue;
            }
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            let valid = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            if !valid {
                return Err(ServerError::InvalidSetting {
                    setting: "allow_participant_host",
                    reason: "must be a host name or an IP address",
                });
            }
            list.hosts.push(name);
        }
        for net in &config.allowed_nets {
            let net: IpNet = net
                .trim()
                .parse()
                .map_err(|_| ServerError::InvalidSetting {
                    setting: "allow_participant_net",
                    reason: "must be a network in CIDR notation, like 10.0.0.0/8",
                })?;
            list.nets.push(net);
        }
        Ok(list)
    }

    fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.nets.is_empty()
    }

    /// Whether `host` is allowed. Nothing is resolved: names match names,
    /// networks match literal addresses.
    fn allows(&self, host: &UrlHost) -> bool {
        match host {
            UrlHost::Name(name) => self.hosts.contains(name),
            UrlHost::Ip(ip) => self.nets.iter().any(|net| net.contains(ip)),
        }
    }
}

/// A URL's host: a name (lower case, no trailing dot) or a literal address
/// (IPv4-mapped IPv6 addresses as IPv4).
enum UrlHost {
    Name(String),
    Ip(IpAddr),
}

impl UrlHost {
    fn of(url: &Url) -> Option<Self> {
        let host = url.host_str()?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        Some(match bare.parse::<IpAddr>() {
            Ok(ip) => Self::Ip(ip.to_canonical()),
            Err(_) => Self::Name(host.trim_end_matches('.').to_ascii_lowercase()),
        })
    }
}

/// Whether `url` names this server's own API, listening on `own`: its port
/// on a loopback or unspecified address, `localhost`, or the listen
/// address itself.
fn is_own_api(url: &Url, own: Option<SocketAddr>) -> bool {
    let Some(own) = own else {
        return false;
    };
    if url.port_or_known_default() != Some(own.port()) {
        return false;
    }
    match UrlHost::of(url) {
        Some(UrlHost::Name(name)) => name == "localhost" || name.ends_with(".localhost"),
        Some(UrlHost::Ip(ip)) => {
            ip.is_loopback() || ip.is_unspecified() || ip == own.ip().to_canonical()
        }
        None => false,
    }
}

/// Credentials name known participants only, and a participant has at
/// most one token.
fn check_credentials(config: &ServerConfig) -> Result<(), ServerError> {
    let known = |name: &str| config.participants.iter().any(|(n, _)| n == name);
    let names = config
        .participant_tokens
        .iter()
        .map(|(name, _)| name)
        .chain(config.participant_headers.iter().map(|(name, ..)| name));
    for name in names {
        if !known(name) {
            return Err(ServerError::InvalidCredentials {
                name: name.clone(),
                reason: "no known participant has this name",
            });
        }
    }
    for (i, (name, _)) in config.participant_tokens.iter().enumerate() {
        if config.participant_tokens[..i]
            .iter()
            .any(|(n, _)| n == name)
        {
            return Err(ServerError::InvalidCredentials {
                name: name.clone(),
                reason: "a participant takes one token",
            });
        }
    }
    Ok(())
}

/// Hands out one `Arc<HttpParticipant>` per (name, base URL), so that
/// registering the same service twice in a transaction is recognised by the
/// coordinator (it compares `Arc`s) and every call shares one connection
/// pool.
pub(crate) struct Participants {
    client: reqwest::Client,
    timeout: Duration,
    known: HashMap<String, Arc<HttpParticipant>>,
    allow: AllowList,
    /// This server's listen address, when known.
    own: Option<SocketAddr>,
    /// Ad hoc participants, and participants with registration headers,
    /// by (name, normalised base URL, headers).
    ad_hoc: Mutex<HashMap<CacheKey, Arc<HttpParticipant>>>,
    capacity: usize,
    /// This coordinator's public base URL, for `outcome_url`.
    public_url: Option<String>,
}

type CacheKey = (String, String, Vec<(String, String)>);

impl Participants {
    pub fn new(config: &ServerConfig, own: Option<SocketAddr>) -> Result<Self, ServerError> {
        let allow = AllowList::new(config)?;
        let mut client = HttpParticipant::client_builder();
        if let Some(proxy) = &config.participant_proxy {
            let invalid = || ServerError::InvalidSetting {
                setting: "participant_proxy",
                reason: "must be an http URL (the participant client has no TLS stack)",
            };
            let url = Url::parse(proxy).map_err(|_| invalid())?;
            if url.scheme() != "http" || url.host().is_none() {
                return Err(invalid());
            }
            client = client.proxy(reqwest::Proxy::all(url).map_err(|_| invalid())?);
        }
        let client = client
            .build()
            .map_err(|e| ServerError::Client(HttpParticipantError::Client(e.to_string())))?;
        let mut known = HashMap::new();
        check_credentials(config)?;
        for (name, url) in &config.participants {
            let mut builder = HttpParticipant::builder(name.clone(), url)
                .client(client.clone())
                .timeout(config.participant_timeout);
            if let Some(public) = &config.public_url {
                builder = builder.coordinator_url(public.clone());
            }
            for (_, token) in config.participant_tokens.iter().filter(|(n, _)| n == name) {
                builder = builder.bearer_token(token.clone());
            }
            for (_, header, value) in config
                .participant_headers
                .iter()
                .filter(|(n, ..)| n == name)
            {
                builder = builder.header(header.clone(), value.clone());
            }
            let participant =
                builder
                    .build()
                    .map_err(|source| ServerError::InvalidParticipant {
                        name: name.clone(),
                        source,
                    })?;
            if is_own_api(participant.base_url(), own) {
                return Err(ServerError::ParticipantIsThisServer {
                    name: name.clone(),
                    url: url.clone(),
                });
            }
            if known.insert(name.clone(), Arc::new(participant)).is_some() {
                return Err(ServerError::DuplicateParticipant { name: name.clone() });
            }
        }
        Ok(Self {
            client,
            timeout: config.participant_timeout,
            known,
            allow,
            own,
            ad_hoc: Mutex::new(HashMap::new()),
            capacity: ServerConfig::AD_HOC_CACHE_CAPACITY,
            public_url: config.public_url.clone(),
        })
    }

    /// The participant whose base URL is `url`, for recovery: a known one
    /// (with its configured credentials), else an ad hoc one if the
    /// allow-list still admits it.
    pub fn by_url(&self, url: &str) -> Option<Arc<HttpParticipant>> {
        if let Some(known) = self.known.values().find(|p| p.base_url().as_str() == url) {
            return Some(Arc::clone(known));
        }
        let name = Url::parse(url).ok().and_then(|u| {
            u.host_str().map(|host| match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            })
        })?;
        self.resolve_base(&name, Some(url)).ok()
    }

    /// The participant a registration request names: a known one by `name`,
    /// or (when the allow-list admits its host) the one at `url`; with
    /// `headers`, that participant sending them too. The same request
    /// always resolves to the same `Arc` (while cached), so registering it
    /// twice in a transaction is recognised.
    pub fn resolve(
        &self,
        name: &str,
        url: Option<&str>,
        headers: Option<&BTreeMap<String, String>>,
    ) -> Result<Arc<HttpParticipant>, ApiError> {
        let base = self.resolve_base(name, url)?;
        let Some(headers) = headers.filter(|h| !h.is_empty()) else {
            return Ok(base);
        };
        if headers.len() > ServerConfig::MAX_REGISTRATION_HEADERS {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_header",
                format!(
                    "at most {} headers per registration",
                    ServerConfig::MAX_REGISTRATION_HEADERS
                ),
            ));
        }
        let with = base
            .with_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            // Names the header and the reason, never the value.
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_header",
                    e.to_string(),
                )
            })?;
        let key = (
            name.to_owned(),
            base.base_url().as_str().to_owned(),
            headers
                .iter()
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.clone()))
                .collect(),
        );
        Ok(self.cached(key, with))
    }

    fn resolve_base(
        &self,
        name: &str,
        url: Option<&str>,
    ) -> Result<Arc<HttpParticipant>, ApiError> {
        let Some(url) = url else {
            return self.known.get(name).cloned().ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_participant",
                    format!("no known participant is named {name:?}"),
                )
            });
        };
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_participant_name",
                format!("a participant name must be 1 to {MAX_NAME_LEN} bytes of printable text"),
            ));
        }
        let mut fresh = HttpParticipant::builder(name, url)
            .client(self.client.clone())
            .timeout(self.timeout);
        if let Some(public) = &self.public_url {
            fresh = fresh.coordinator_url(public.clone());
        }
        let fresh = fresh.build().map_err(|e| {
            if matches!(e, HttpParticipantError::InvalidUrl { .. }) {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_participant_url",
                    e.to_string(),
                )
            } else {
                // Not expected: the shared client is given, not built.
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "client_unavailable",
                    e.to_string(),
                )
            }
        })?;
        if let Some(known) = self.known.get(name) {
            if known.base_url() == fresh.base_url() {
                return Ok(Arc::clone(known));
            }
        }
        if is_own_api(fresh.base_url(), self.own) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_participant_url",
                "a participant URL must not point at this coordinator",
            ));
        }
        if self.allow.is_empty() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "ad_hoc_participants_disabled",
                "this server only registers its known participants, by name",
            ));
        }
        let host = UrlHost::of(fresh.base_url());
        if !host.is_some_and(|host| self.allow.allows(&host)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "participant_host_not_allowed",
                "this server does not call participants on that host",
            ));
        }
        let key = (
            name.to_owned(),
            fresh.base_url().as_str().to_owned(),
            Vec::new(),
        );
        Ok(self.cached(key, fresh))
    }

    fn cached(&self, key: CacheKey, fresh: HttpParticipant) -> Arc<HttpParticipant> {
        let mut cache = self.ad_hoc.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(participant) = cache.get(&key) {
            return Arc::clone(participant);
        }
        if cache.len() >= self.capacity {
            // Forget only participants no transaction holds: a held one
            // must stay the same `Arc` for duplicate detection.
            cache.retain(|_, p| Arc::strong_count(p) > 1);
        }
        let participant = Arc::new(fresh);
        if cache.len() < self.capacity {
            cache.insert(key, Arc::clone(&participant));
        } else {
            tracing::warn!(
                participant = dtxn::Participant::name(&*participant),
                capacity = self.capacity,
                "ad hoc participant cache full of participants in use; not caching this one"
            );
        }
        participant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(config: ServerConfig) -> Participants {
        Participants::new(&config, None).unwrap()
    }

    fn loopback() -> ServerConfig {
        ServerConfig::default().allow_participant_net("127.0.0.0/8")
    }

    fn code(r: Result<Arc<HttpParticipant>, ApiError>) -> Option<&'static str> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn the_same_service_resolves_to_the_same_arc() {
        let p = registry(loopback().participant("users", "http://127.0.0.1:9/u"));
        let a = p.resolve("x", Some("http://127.0.0.1:9/x"), None).unwrap();
        let b = p.resolve("x", Some("http://127.0.0.1:9/x/"), None).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = p.resolve("y", Some("http://127.0.0.1:9/x"), None).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        let known = p.resolve("users", None, None).unwrap();
        let by_url = p
            .resolve("users", Some("http://127.0.0.1:9/u/"), None)
            .unwrap();
        assert!(Arc::ptr_eq(&known, &by_url));
    }

    #[test]
    fn a_full_cache_forgets_only_unused_participants() {
        let mut p = registry(loopback());
        p.capacity = 2;
        let held = p.resolve("a", Some("http://127.0.0.1:9/a"), None).unwrap();
        drop(p.resolve("b", Some("http://127.0.0.1:9/b"), None).unwrap());
        let _c = p.resolve("c", Some("http://127.0.0.1:9/c"), None).unwrap();
        let again = p.resolve("a", Some("http://127.0.0.1:9/a"), None).unwrap();
        assert!(Arc::ptr_eq(&held, &again));
        assert_eq!(p.ad_hoc.lock().unwrap().len(), 2);
    }

    #[test]
    fn bad_requests_are_refused_with_specific_codes() {
        let p = registry(ServerConfig::default().participant("users", "http://127.0.0.1:9/u"));
        assert_eq!(
            code(p.resolve("nobody", None, None)),
            Some("unknown_participant")
        );
        assert_eq!(
            code(p.resolve("x", Some("ftp://host/"), None)),
            Some("invalid_participant_url")
        );
        assert_eq!(
            code(p.resolve("", Some("http://h/"), None)),
            Some("invalid_participant_name")
        );
        // Registration by URL is off by default; a known service by its
        // own URL is still fine.
        assert_eq!(
            code(p.resolve("x", Some("http://h/"), None)),
            Some("ad_hoc_participants_disabled")
        );
        assert!(p
            .resolve("users", Some("http://127.0.0.1:9/u"), None)
            .is_ok());
    }

    #[test]
    fn only_allowed_hosts_and_networks_are_called() {
        let p = registry(
            ServerConfig::default()
                .allow_participant_host("Orders.Internal.")
                .allow_participant_host("192.0.2.7")
                .allow_participant_host("[::1]")
                .allow_participant_net("10.0.0.0/8"),
        );
        for allowed in [
            "http://orders.internal:7000/",
            "http://ORDERS.internal./2pc/",
            "http://192.0.2.7/",
            "http://10.1.2.3:80/",
            "http://[::ffff:10.9.9.9]/",
            "http://[::1]:7000/",
        ] {
            assert!(
                p.resolve("x", Some(allowed), None).is_ok(),
                "{allowed} refused"
            );
        }
        for refused in [
            "http://billing.internal/",
            "http://orders.internal.evil.example/",
            "http://192.0.2.8/",
            "http://11.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:7000/",
            "http://localhost:7000/",
            // A name that might resolve into 10/8 is still only a name.
            "http://ten.example/",
        ] {
            assert_eq!(
                code(p.resolve("x", Some(refused), None)),
                Some("participant_host_not_allowed"),
                "{refused}"
            );
        }
    }

    #[test]
    fn urls_at_the_server_itself_are_refused() {
        let own: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let config = ServerConfig::default()
            .allow_participant_net("0.0.0.0/0")
            .allow_participant_net("::/0")
            .allow_participant_host("localhost")
            .allow_participant_host("api.localhost");
        let p = Participants::new(&config, Some(own)).unwrap();
        for own_api in [
            "http://127.0.0.1:8080/",
            "http://127.0.0.2:8080/transactions/",
            "http://localhost:8080/",
            "http://api.localhost:8080/",
            "http://[::1]:8080/",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://0.0.0.0:8080/",
            "http://2130706433:8080/",
        ] {
            assert_eq!(
                code(p.resolve("x", Some(own_api), None)),
                Some("invalid_participant_url"),
                "{own_api}"
            );
        }
        assert!(p.resolve("x", Some("http://127.0.0.1:8081/"), None).is_ok());
        assert!(p.resolve("x", Some("http://localhost/"), None).is_ok());

        let own: SocketAddr = "10.0.0.5:9000".parse().unwrap();
        let p = Participants::new(&config, Some(own)).unwrap();
        assert!(p.resolve("x", Some("http://10.0.0.5:9000/"), None).is_err());
        assert!(p.resolve("x", Some("http://10.0.0.6:9000/"), None).is_ok());

        let known = ServerConfig::default().participant("me", "http://localhost:8080/");
        assert!(matches!(
            Participants::new(&known, Some("127.0.0.1:8080".parse().unwrap())),
            Err(ServerError::ParticipantIsThisServer { .. })
        ));
    }

    #[test]
    fn bad_allow_list_entries_and_proxies_are_refused() {
        for (config, setting) in [
            (
                ServerConfig::default().allow_participant_net("10.0.0.0"),
                "allow_participant_net",
            ),
            (
                ServerConfig::default().allow_participant_net("10.0.0.0/33"),
                "allow_participant_net",
            ),
            (
                ServerConfig::default().allow_participant_host(""),
                "allow_participant_host",
            ),
            (
                ServerConfig::default().allow_participant_host("http://h/"),
                "allow_participant_host",
            ),
            (
                ServerConfig::default().participant_proxy("not a url"),
                "participant_proxy",
            ),
        ] {
            assert!(
                matches!(
                    Participants::new(&config, None),
                    Err(ServerError::InvalidSetting { setting: s, .. }) if s == setting
                ),
                "{config:?}"
            );
        }
        let proxied = ServerConfig::default().participant_proxy("http://proxy.internal:3128");
        assert!(Participants::new(&proxied, None).is_ok());
    }
}
