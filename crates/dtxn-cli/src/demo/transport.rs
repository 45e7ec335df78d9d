//! How the coordinator reaches the demo's services: by calling them
//! directly ([`Transport::InProcess`]) or over HTTP on loopback
//! ([`Transport::Http`]), each service behind its own axum server.
//!
//! Either way the coordinator sees a list of [`Participant`]s, so the rest
//! of the demo (workload, report, consistency check) does not know which
//! transport it runs on.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use dtxn::Participant;
use dtxn_http::{HttpParticipant, HttpParticipantError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the coordinator calls the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Direct calls to the services' `Participant` implementations.
    InProcess,
    /// Each service is an HTTP participant service on 127.0.0.1; the
    /// coordinator calls it through an [`HttpParticipant`].
    Http,
}

impl Transport {
    /// The label used in reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::InProcess => "in-process",
            Self::Http => "http",
        }
    }

    /// Makes `services` reachable over this transport. `call_timeout`
    /// bounds each HTTP call (the coordinator's own timeouts, when
    /// shorter, apply first).
    ///
    /// # Errors
    ///
    /// [`TransportError`] when a server cannot listen or the HTTP client
    /// cannot be built.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: servers started before the cancellation stop when
    /// their handles are dropped.
    pub async fn connect(
        self,
        services: Vec<Arc<dyn Participant>>,
        call_timeout: Duration,
    ) -> Result<Connected, TransportError> {
        match self {
            Self::InProcess => Ok(Connected {
                participants: services,
                _servers: Vec::new(),
            }),
            Self::Http => {
                let client = HttpParticipant::default_client()?;
                let mut participants: Vec<Arc<dyn Participant>> = Vec::new();
                let mut servers = Vec::new();
                for service in services {
                    let name = service.name().to_owned();
                    let server = ServiceServer::start(service, (Ipv4Addr::LOCALHOST, 0).into())
                        .await
                        .map_err(|source| TransportError::Listen {
                            service: name.clone(),
                            source,
                        })?;
                    let participant = HttpParticipant::builder(name, server.url())
                        .client(client.clone())
                        .timeout(call_timeout)
                        .build()?;
                    participants.push(Arc::new(participant));
                    servers.push(server);
                }
                Ok(Connected {
                    participants,
                    _servers: servers,
                })
            }
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why the services could not be connected.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A service's server could not bind its socket.
    #[error("{service} cannot listen on 127.0.0.1: {source}")]
    Listen {
        /// The service.
        service: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The HTTP client or an `HttpParticipant` could not be built.
    #[error(transparent)]
    Client(#[from] HttpParticipantError),
}

/// The services as the coordinator reaches them. For HTTP, owns the
/// servers: dropping it stops them listening.
pub struct Connected {
    participants: Vec<Arc<dyn Participant>>,
    /// Kept for their `Drop`.
    _servers: Vec<ServiceServer>,
}

impl fmt::Debug for Connected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connected")
            .field(
                "participants",
                &self
                    .participants
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>(),
            )
            .field("servers", &self._servers)
            .finish()
    }
}

impl Connected {
    /// The participants to register, in the order the services were given.
    pub fn participants(&self) -> &[Arc<dyn Participant>] {
        &self.participants
    }
}

/// One participant served over HTTP by an axum server running in a task
/// of the current runtime. Dropping it closes the listener; connections
/// already open end when their client hangs up.
#[derive(Debug)]
pub struct ServiceServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ServiceServer {
    /// Serves `participant` under the wire contract on `addr`.
    ///
    /// # Errors
    ///
    /// When the socket cannot be bound.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing runs until the socket is bound.
    pub async fn start(
        participant: Arc<dyn Participant>,
        addr: SocketAddr,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = dtxn_http::participant_router(participant);
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(%addr, error = %e, "a demo service stopped");
            }
        });
        Ok(Self { addr, task })
    }

    /// The base URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for ServiceServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
