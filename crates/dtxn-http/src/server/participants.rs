//! The server's participants: the known ones, and a bounded cache of ad hoc
//! ones, all sharing one HTTP client.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::StatusCode;

use super::error::{ApiError, ServerError};
use super::ServerConfig;
use crate::{HttpParticipant, HttpParticipantError};

/// The longest accepted participant name, in bytes.
const MAX_NAME_LEN: usize = 128;

/// Hands out one `Arc<HttpParticipant>` per (name, base URL), so that
/// registering the same service twice in a transaction is recognised by the
/// coordinator (it compares `Arc`s) and every call shares one connection
/// pool.
pub(crate) struct Participants {
    client: reqwest::Client,
    timeout: Duration,
    known: HashMap<String, Arc<HttpParticipant>>,
    allow_ad_hoc: bool,
    /// Ad hoc participants by (name, normalised base URL).
    ad_hoc: Mutex<HashMap<(String, String), Arc<HttpParticipant>>>,
    capacity: usize,
}

impl Participants {
    pub fn new(config: &ServerConfig) -> Result<Self, ServerError> {
        let client = HttpParticipant::default_client().map_err(ServerError::Client)?;
        let mut known = HashMap::new();
        for (name, url) in &config.participants {
            let participant = HttpParticipant::builder(name.clone(), url)
                .client(client.clone())
                .timeout(config.participant_timeout)
                .build()
                .map_err(|source| ServerError::InvalidParticipant {
                    name: name.clone(),
                    source,
                })?;
            if known.insert(name.clone(), Arc::new(participant)).is_some() {
                return Err(ServerError::DuplicateParticipant { name: name.clone() });
            }
        }
        Ok(Self {
            client,
            timeout: config.participant_timeout,
            known,
            allow_ad_hoc: config.allow_ad_hoc_participants,
            ad_hoc: Mutex::new(HashMap::new()),
            capacity: ServerConfig::AD_HOC_CACHE_CAPACITY,
        })
    }

    /// The participant a registration request names: a known one by `name`,
    /// or (when allowed) the one at `url`.
    pub fn resolve(&self, name: &str, url: Option<&str>) -> Result<Arc<HttpParticipant>, ApiError> {
        let Some(url) = url else {
            return self.known.get(name).cloned().ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_participant",
                    format!("no known participant is named {name:?}; give a \"url\" too"),
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
        let fresh = HttpParticipant::builder(name, url)
            .client(self.client.clone())
            .timeout(self.timeout)
            .build()
            .map_err(|e| {
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
        if !self.allow_ad_hoc {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "ad_hoc_participants_disabled",
                "this server only registers its known participants, by name",
            ));
        }
        Ok(self.cached(name, fresh))
    }

    fn cached(&self, name: &str, fresh: HttpParticipant) -> Arc<HttpParticipant> {
        let key = (name.to_owned(), fresh.base_url().as_str().to_owned());
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
                participant = name,
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
        Participants::new(&config).unwrap()
    }

    #[test]
    fn the_same_service_resolves_to_the_same_arc() {
        let p = registry(ServerConfig::default().participant("users", "http://127.0.0.1:9/u"));
        let a = p.resolve("x", Some("http://127.0.0.1:9/x")).unwrap();
        let b = p.resolve("x", Some("http://127.0.0.1:9/x/")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = p.resolve("y", Some("http://127.0.0.1:9/x")).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        let known = p.resolve("users", None).unwrap();
        let by_url = p.resolve("users", Some("http://127.0.0.1:9/u/")).unwrap();
        assert!(Arc::ptr_eq(&known, &by_url));
    }

    #[test]
    fn a_full_cache_forgets_only_unused_participants() {
        let mut p = registry(ServerConfig::default());
        p.capacity = 2;
        let held = p.resolve("a", Some("http://127.0.0.1:9/a")).unwrap();
        drop(p.resolve("b", Some("http://127.0.0.1:9/b")).unwrap());
        let _c = p.resolve("c", Some("http://127.0.0.1:9/c")).unwrap();
        let again = p.resolve("a", Some("http://127.0.0.1:9/a")).unwrap();
        assert!(Arc::ptr_eq(&held, &again));
        assert_eq!(p.ad_hoc.lock().unwrap().len(), 2);
    }

    #[test]
    fn bad_requests_are_refused_with_specific_codes() {
        let p = registry(ServerConfig::default().allow_ad_hoc_participants(false));
        let code = |r: Result<_, ApiError>| r.err().map(|e| e.code);
        assert_eq!(code(p.resolve("nobody", None)), Some("unknown_participant"));
        assert_eq!(
            code(p.resolve("x", Some("ftp://host/"))),
            Some("invalid_participant_url")
        );
        assert_eq!(
            code(p.resolve("", Some("http://h/"))),
            Some("invalid_participant_name")
        );
        assert_eq!(
            code(p.resolve("x", Some("http://h/"))),
            Some("ad_hoc_participants_disabled")
        );
    }
}
