//! `dtxn service`: one of the demo's services as a standalone HTTP
//! participant service, for running the three services and a coordinator
//! by hand in separate terminals.
//!
//! The service answers the participant wire contract (`POST /prepare`,
//! `/commit`, `/rollback`, see [`dtxn_http::wire`]) and `GET /state`, a
//! JSON view of its store: committed users, orders or stock, pending
//! reservations, rolled-back transactions, injected faults and protocol
//! anomalies.
//!
//! Separate processes share no request book, so each service derives the
//! sign-up a transaction stands for from the transaction id and `--seed`
//! ([`derive_signup`](crate::demo::workload::derive_signup)): three services started with the same seed and
//! fault options agree on every request (username, product, fault) without
//! talking to each other.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use dtxn_http::RouterConfig;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::demo::services::{
    DerivedRequests, Inventory, OrderService, ProductService, Requests, Service, Store, UserService,
};
use crate::demo::workload::{stock_for, FaultKind, ServiceKind};
use crate::demo::{parse_positive, parse_rate, silence_injected_panics};

/// How long calls in flight may take to finish after Ctrl-C (an injected
/// hang never finishes).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Options of `dtxn service`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// The service to run.
    #[arg(value_enum)]
    pub service: ServiceKind,

    /// Address to listen on; port 0 picks a free port. The bound address
    /// is printed on stdout. Default: 127.0.0.1 port 7001 (users), 7002
    /// (products) or 7003 (orders).
    #[arg(long)]
    pub listen: Option<SocketAddr>,

    /// Seed from which each transaction's request is derived; start the
    /// three services with the same seed (and fault options).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Probability that a transaction injects a fault (into one of the
    /// three services, chosen by the derived request), between 0 and 1.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate: f64,

    /// The fault kinds to draw from, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = FaultKind::ALL)]
    pub faults: Vec<FaultKind>,

    /// Size the product inventory for about this many sign-ups, as the
    /// demo does (products only).
    #[arg(long, default_value_t = 1000, value_parser = parse_positive)]
    pub stock_for: usize,

    /// Require `Authorization: Bearer <TOKEN>` on the participant
    /// endpoints (a request without it is answered 401); give the
    /// coordinator the same token (`dtxn serve --participant-token
    /// NAME=TOKEN`). GET /state stays open. Prefer the environment
    /// variable: flags show in `ps`.
    #[arg(long, env = "DTXN_SERVICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ServiceKind {
    /// The port `dtxn service` listens on by default.
    fn default_port(self) -> u16 {
        match self {
            Self::Users => 7001,
            Self::Products => 7002,
            Self::Orders => 7003,
        }
    }
}

/// A service's state as JSON, whatever its store.
trait Inspect: Send + Sync + 'static {
    fn state_json(&self) -> serde_json::Value;
}

impl<S> Inspect for Service<S>
where
    S: Store + Clone,
    S::State: Serialize,
{
    fn state_json(&self) -> serde_json::Value {
        serde_json::to_value(self.state()).unwrap_or_else(
            |e| serde_json::json!({ "error": format!("cannot serialize the state: {e}") }),
        )
    }
}

/// The participant endpoints of `service` (behind `config`'s token, if
/// any) plus `GET /state`.
fn router<S>(service: Arc<Service<S>>, config: RouterConfig) -> (Router, Arc<dyn Inspect>)
where
    S: Store + Clone,
    S::State: Serialize,
{
    let inspect: Arc<dyn Inspect> = service.clone();
    let state = Router::new()
        .route("/state", get(show_state))
        .with_state(Arc::clone(&inspect));
    let participant = dtxn_http::participant_router_with(service, config);
    (participant.merge(state), inspect)
}

async fn show_state(State(service): State<Arc<dyn Inspect>>) -> Json<serde_json::Value> {
    Json(service.state_json())
}

/// Runs the service until Ctrl-C. Exit status: 0 after a clean shutdown,
/// 1 when the server failed, 2 when it could not start.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future stops waiting for Ctrl-C but
/// leaves the server task running on the runtime.
pub async fn execute(args: ServiceArgs) -> ExitCode {
    silence_injected_panics();
    let requests: Arc<dyn Requests> = Arc::new(DerivedRequests::new(
        args.seed,
        args.fault_rate,
        args.faults.clone(),
    ));
    let name = args.service.name();
    let config = match &args.token {
        None => RouterConfig::default(),
        Some(token) => match RouterConfig::default().bearer_token(token.clone()) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("dtxn service: {name}: --token: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let (app, inspect) = match args.service {
        ServiceKind::Users => router(
            Arc::new(UserService::new(Default::default(), requests)),
            config,
        ),
        ServiceKind::Products => router(
            Arc::new(ProductService::new(
                Inventory::new(&stock_for(args.stock_for)),
                requests,
            )),
            config,
        ),
        ServiceKind::Orders => router(
            Arc::new(OrderService::new(Default::default(), requests)),
            config,
        ),
    };
    let listen = args
        .listen
        .unwrap_or_else(|| (Ipv4Addr::LOCALHOST, args.service.default_port()).into());
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("dtxn service: {name} cannot listen on {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("dtxn service: {name}: no local address: {e}");
            return ExitCode::from(2);
        }
    };
    println!("{name} listening on http://{addr}/");
    eprintln!(
        "  participant endpoints POST http://{addr}/{{prepare,commit,rollback}}; \
         GET http://{addr}/state shows the store; Ctrl-C stops"
    );
    eprintln!(
        "  requests derived from transaction ids with seed {}; fault rate {}",
        args.seed, args.fault_rate
    );

    let (stop, stopped) = oneshot::channel::<()>();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                // A dropped sender also stops the server.
                let _ = stopped.await;
            })
            .await
    });
    tokio::select! {
        () = crate::serve::shutdown_signal() => {}
        ended = &mut server => {
            eprintln!("dtxn service: {name} stopped: {}", describe_end(ended));
            return ExitCode::from(1);
        }
    }
    eprintln!(
        "{name}: shutting down, finishing calls in flight (at most {}s)",
        SHUTDOWN_GRACE.as_secs()
    );
    let _ = stop.send(());
    let code = match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        Ok(ended) => {
            eprintln!("dtxn service: {name}: {}", describe_end(ended));
            ExitCode::from(1)
        }
        Err(_) => {
            eprintln!("{name}: calls still in flight after the grace period; leaving them");
            server.abort();
            ExitCode::SUCCESS
        }
    };
    println!("{name} final state: {}", inspect.state_json());
    code
}

fn describe_end(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "the server ended".to_owned(),
        Ok(Err(e)) => format!("the server failed: {e}"),
        Err(e) => format!("the server task failed: {e}"),
    }
}
