//! The accept loop of [`serve`](super::serve): a cap on open connections,
//! and per connection the header-read and idle timeouts (the body-read
//! timeout is [`middleware::read_body`](super::middleware::read_body)).
//!
//! A connection is, at any moment, in one of three phases:
//!
//! * **idle**: no request in it (just accepted, or its last answer given)
//!   and no byte of the next one received; closed after `idle_timeout`;
//! * **head**: bytes of a request arrived but not yet all of its headers;
//!   closed `header_read_timeout` after the first of them;
//! * **busy**: a request is being handled; bounded by the body-read
//!   timeout and the coordinator's own timeouts, not here.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// How long to wait after a failed `accept` (out of file descriptors,
/// say) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The connection limits of [`run`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `app` on `listener` until `stop` completes, then lets every open
/// connection finish its request in flight (idle ones close at once) and
/// returns. Dropping the future closes every connection.
pub(super) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut stop = pin!(stop);
    loop {
        let accept = async {
            // Cancel safe: dropping either wait loses neither a permit nor
            // a connection.
            let permit = Arc::clone(&permits).acquire_owned().await;
            (permit, listener.accept().await)
        };
        tokio::select! {
            biased;
            () = &mut stop => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            (permit, accepted) = accept => {
                let Ok(permit) = permit else { break };
                match accepted {
                    Ok((stream, peer)) => {
                        let app = app.clone();
                        let closing = closing_rx.clone();
                        connections.spawn(async move {
                            connection(stream, app, limits, closing).await;
                            tracing::trace!(%peer, "connection closed");
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    }
                }
            }
        }
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it closes, a timeout closes it, or
/// `closing` asks it to finish.
async fn connection(
    stream: TcpStream,
    app: Router,
    limits: Limits,
    mut closing: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: Arc::clone(&activity),
    });
    let service = hyper::service::service_fn({
        let activity = Arc::clone(&activity);
        move |request: hyper::Request<Incoming>| {
            let busy = Busy::start(Arc::clone(&activity));
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(Body::new)).await;
                drop(busy);
                response
            }
        }
    });
    let mut conn = pin!(hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, service));
    let mut finishing = *closing.borrow();
    if finishing {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            phase = activity.expired(limits) => {
                tracing::debug!(phase, "closing a connection that timed out");
                return;
            }
            changed = closing.changed(), if !finishing => {
                finishing = true;
                if changed.is_err() || *closing.borrow() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Where a connection is; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle { since: Instant },
    Head { since: Instant },
    Busy { requests: usize },
}

/// A connection's phase, shared by its socket, its service and its
/// watchdog ([`Activity::expired`]).
#[derive(Debug)]
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Idle {
                since: Instant::now(),
            }),
            changed: Notify::new(),
        }
    }

    fn update(&self, step: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        let next = step(*phase);
        if next != *phase {
            *phase = next;
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: an idle connection starts receiving a request head.
    fn received(&self) {
        self.update(|phase| match phase {
            Phase::Idle { .. } => Phase::Head {
                since: Instant::now(),
            },
            other => other,
        });
    }

    /// Completes when the connection has been idle for `idle_timeout`, or
    /// receiving a head for `header_read_timeout`; names the phase.
    async fn expired(&self, limits: Limits) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let phase = *self.phase.lock().unwrap_or_else(PoisonError::into_inner);
            let (deadline, name) = match phase {
                Phase::Idle { since } => (since + limits.idle_timeout, "idle"),
                Phase::Head { since } => (since + limits.header_read_timeout, "head"),
                Phase::Busy { .. } => {
                    changed.await;
                    continue;
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return name,
                () = changed => {}
            }
        }
    }
}

/// A request in flight on a connection, from its head to its answer.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Self {
        activity.update(|phase| match phase {
            Phase::Busy { requests } => Phase::Busy {
                requests: requests + 1,
            },
            _ => Phase::Busy { requests: 1 },
        });
        Self(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.update(|phase| match phase {
            Phase::Busy { requests } if requests > 1 => Phase::Busy {
                requests: requests - 1,
            },
            _ => Phase::Idle {
                since: Instant::now(),
            },
        });
    }
}

/// A socket that reports received bytes to its [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
    };

    /// Whether `activity` expires within `within` (paused clock: advanced
    /// instantly).
    async fn expires_within(activity: &Activity, within: Duration) -> Option<&'static str> {
        tokio::time::timeout(within, activity.expired(LIMITS))
            .await
            .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_idle_timeout() {
        let activity = Activity::new();
        assert_eq!(
            expires_within(&activity, Duration::from_secs(29)).await,
            None
        );
        assert_eq!(
            expires_within(&activity, Duration::from_secs(2)).await,
            Some("idle")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_head_has_the_header_timeout_from_its_first_byte() {
        let activity = Activity::new();
        tokio::time::advance(Duration::from_secs(20)).await;
        activity.received();
        assert_eq!(
            expires_within(&activity, Duration::from_millis(1900)).await,
            None
        );
        // More bytes of the same head do not restart the clock.
        activity.received();
        assert_eq!(
            expires_within(&activity, Duration::from_millis(200)).await,
            Some("head")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_never_expires_and_idles_again_after_its_answer() {
        let activity = Arc::new(Activity::new());
        activity.received();
        let busy = Busy::start(Arc::clone(&activity));
        // Body bytes while busy are not a new head.
        activity.received();
        assert_eq!(
            expires_within(&activity, Duration::from_secs(3600)).await,
            None
        );
        drop(busy);
        assert_eq!(
            expires_within(&activity, Duration::from_secs(29)).await,
            None
        );
        assert_eq!(
            expires_within(&activity, Duration::from_secs(2)).await,
            Some("idle")
        );
    }
}
