//! `dtxn serve`: the coordinator as an HTTP/JSON service.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use dtxn::{CoordinatorConfig, TransactionCoordinator};
use dtxn_http::server::{self, ServerConfig};

/// The log filter of `dtxn serve` when `RUST_LOG` is not set: warnings,
/// and the server's own start-up and shutdown messages.
pub const LOG_FILTER: &str = "warn,dtxn_http::server=info";

/// Options of `dtxn serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is
    /// printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Require `Authorization: Bearer <TOKEN>` on every route but /health.
    #[arg(long, env = "DTXN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A known participant service, registrable by name: NAME=BASE_URL
    /// (repeatable).
    #[arg(long = "participant", value_name = "NAME=URL", value_parser = parse_participant)]
    pub participants: Vec<(String, String)>,

    /// Accept only known participants (refuse registration by URL).
    #[arg(long)]
    pub known_participants_only: bool,

    /// Most unfinished transactions at once.
    #[arg(long, default_value_t = CoordinatorConfig::DEFAULT_MAX_TRANSACTIONS)]
    pub max_transactions: usize,

    /// Most participants in one transaction.
    #[arg(long, default_value_t = CoordinatorConfig::DEFAULT_MAX_PARTICIPANTS)]
    pub max_participants: usize,

    /// Timeout of one participant's prepare, in milliseconds.
    #[arg(long, default_value_t = CoordinatorConfig::DEFAULT_PREPARE_TIMEOUT.as_millis() as u64)]
    pub prepare_timeout_ms: u64,

    /// Timeout of one commit or rollback attempt, in milliseconds.
    #[arg(long, default_value_t = CoordinatorConfig::DEFAULT_PHASE2_TIMEOUT.as_millis() as u64)]
    pub phase2_timeout_ms: u64,

    /// Transactions not decided within this many seconds are rolled back.
    #[arg(long, default_value_t = CoordinatorConfig::DEFAULT_TRANSACTION_DEADLINE.as_secs())]
    pub deadline_secs: u64,

    /// Most HTTP requests handled at once; more are answered 503.
    #[arg(long, default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// On Ctrl-C/SIGTERM, how long unfinished transactions may take to
    /// finish before the rest are rolled back, in seconds.
    #[arg(long, default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

fn parse_participant(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, url)) if !name.is_empty() && !url.is_empty() => {
            Ok((name.to_owned(), url.to_owned()))
        }
        _ => Err(format!("expected NAME=URL, got {s:?}")),
    }
}

/// Runs the server until Ctrl-C or SIGTERM, then shuts down gracefully.
pub async fn execute(args: ServeArgs) -> ExitCode {
    let config = match CoordinatorConfig::builder()
        .max_transactions(args.max_transactions)
        .max_participants(args.max_participants)
        .prepare_timeout(Duration::from_millis(args.prepare_timeout_ms))
        .phase2_timeout(Duration::from_millis(args.phase2_timeout_ms))
        .transaction_deadline(Duration::from_secs(args.deadline_secs))
        .build()
    {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dtxn serve: {e}");
            return ExitCode::from(2);
        }
    };
    let mut server_config = ServerConfig::default()
        .max_concurrent_requests(args.max_concurrent_requests)
        .allow_ad_hoc_participants(!args.known_participants_only)
        .shutdown_grace(Duration::from_secs(args.shutdown_grace_secs));
    if let Some(token) = args.token {
        server_config = server_config.bearer_token(token);
    }
    for (name, url) in args.participants {
        server_config = server_config.participant(name, url);
    }
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("dtxn serve: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("dtxn coordinator listening on http://{addr}"),
        Err(e) => eprintln!("dtxn serve: {e}"),
    }
    let coordinator = TransactionCoordinator::with_config(config);
    match server::serve(listener, coordinator, server_config, shutdown_signal()).await {
        // The server logs its shutdown report itself.
        Ok(_report) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dtxn serve: {e}");
            ExitCode::from(1)
        }
    }
}

/// Completes on Ctrl-C or (on Unix) SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
