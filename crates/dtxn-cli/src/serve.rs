//! `dtxn serve`: the coordinator as an HTTP/JSON service.

use std::fmt;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use dtxn::log::{ClusterOptions, DecisionLog, LogError, PostgresLog, SqliteLog};
use dtxn::{CoordinatorConfig, RetryPolicy, TransactionCoordinator};
use dtxn_http::server::{self, ServerConfig};

use crate::cluster::PgCluster;

/// The log filter of `dtxn serve` when `RUST_LOG` is not set: warnings,
/// and the server's own start-up and shutdown messages.
pub const LOG_FILTER: &str = "warn,dtxn_http::server=info";

/// Options of `dtxn serve`. Every option can also be set by the
/// environment variable named in `--help` (`DTXN_…`); a flag wins over the
/// environment. Durations are written like `500ms`, `30s`, `2m` or `1h`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is
    /// printed on stdout).
    #[arg(long, env = "DTXN_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Require `Authorization: Bearer <TOKEN>` on every route but /health
    /// and /ready.
    #[arg(long, env = "DTXN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A known participant service, registrable by name: NAME=BASE_URL
    /// (repeatable; comma-separated in the environment variable).
    #[arg(long = "participant", value_name = "NAME=URL", value_parser = parse_participant,
          env = "DTXN_PARTICIPANTS", value_delimiter = ',')]
    pub participants: Vec<(String, String)>,

    /// Present `Authorization: Bearer TOKEN` to the known participant NAME
    /// on every call: NAME=TOKEN (repeatable; comma-separated in the
    /// environment variable, so a token cannot contain a comma). Prefer
    /// the variable: flags show in `ps`.
    #[arg(
        long = "participant-token",
        value_name = "NAME=TOKEN",
        env = "DTXN_PARTICIPANT_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub participant_tokens: Vec<String>,

    /// Send a header to the known participant NAME on every call:
    /// NAME=HEADER:VALUE (repeatable; comma-separated in the environment
    /// variable, so a value cannot contain a comma). Values are treated as
    /// secrets.
    #[arg(
        long = "participant-header",
        value_name = "NAME=HEADER:VALUE",
        env = "DTXN_PARTICIPANT_HEADERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub participant_headers: Vec<String>,

    /// Let clients register participants by URL on this host: a host name
    /// (matched exactly) or an IP address (repeatable; comma-separated in
    /// the environment). Without any allowed host or net, only known
    /// participants can be registered.
    #[arg(
        long = "allow-participant-host",
        value_name = "HOST",
        env = "DTXN_ALLOW_PARTICIPANT_HOSTS",
        value_delimiter = ','
    )]
    pub allow_participant_hosts: Vec<String>,

    /// Let clients register participants by URL whose host is an IP
    /// address in this network, like 10.0.0.0/8 (repeatable;
    /// comma-separated in the environment).
    #[arg(
        long = "allow-participant-net",
        value_name = "CIDR",
        env = "DTXN_ALLOW_PARTICIPANT_NETS",
        value_delimiter = ','
    )]
    pub allow_participant_nets: Vec<String>,

    /// Call participants through this HTTP proxy. Without it, no proxy is
    /// used (HTTP_PROXY and friends are ignored).
    #[arg(long, value_name = "URL", env = "DTXN_PARTICIPANT_PROXY")]
    pub participant_proxy: Option<String>,

    /// Timeout of each HTTP call to a participant (the prepare and phase-2
    /// timeouts apply too; the shorter wins).
    #[arg(long, env = "DTXN_PARTICIPANT_TIMEOUT", value_name = "DURATION",
          default_value_t = HumanDuration(dtxn_http::HttpParticipant::DEFAULT_TIMEOUT))]
    pub participant_timeout: HumanDuration,

    /// Most unfinished transactions at once; beyond it begin answers 429.
    #[arg(long, env = "DTXN_MAX_TRANSACTIONS",
          default_value_t = CoordinatorConfig::DEFAULT_MAX_TRANSACTIONS)]
    pub max_transactions: usize,

    /// Most participants in one transaction.
    #[arg(long, env = "DTXN_MAX_PARTICIPANTS",
          default_value_t = CoordinatorConfig::DEFAULT_MAX_PARTICIPANTS)]
    pub max_participants: usize,

    /// Timeout of one participant's prepare.
    #[arg(long, env = "DTXN_PREPARE_TIMEOUT", value_name = "DURATION",
          default_value_t = HumanDuration(CoordinatorConfig::DEFAULT_PREPARE_TIMEOUT))]
    pub prepare_timeout: HumanDuration,

    /// Timeout of one commit or rollback attempt.
    #[arg(long, env = "DTXN_PHASE2_TIMEOUT", value_name = "DURATION",
          default_value_t = HumanDuration(CoordinatorConfig::DEFAULT_PHASE2_TIMEOUT))]
    pub phase2_timeout: HumanDuration,

    /// Phase-2 attempts per participant, the first included.
    #[arg(long, env = "DTXN_RETRY_MAX_ATTEMPTS",
          default_value_t = RetryPolicy::DEFAULT_MAX_ATTEMPTS)]
    pub retry_max_attempts: u32,

    /// Delay before the second phase-2 attempt; it doubles after each.
    #[arg(long, env = "DTXN_RETRY_INITIAL_BACKOFF", value_name = "DURATION",
          default_value_t = HumanDuration(RetryPolicy::DEFAULT_INITIAL_BACKOFF))]
    pub retry_initial_backoff: HumanDuration,

    /// Cap on the delay between phase-2 attempts.
    #[arg(long, env = "DTXN_RETRY_MAX_BACKOFF", value_name = "DURATION",
          default_value_t = HumanDuration(RetryPolicy::DEFAULT_MAX_BACKOFF))]
    pub retry_max_backoff: HumanDuration,

    /// Time budget of one participant's phase 2; past it, a failed attempt
    /// is not retried and the participant is reported as a hazard.
    #[arg(long, env = "DTXN_RETRY_MAX_ELAPSED", value_name = "DURATION",
          default_value_t = HumanDuration(RetryPolicy::DEFAULT_MAX_ELAPSED))]
    pub retry_max_elapsed: HumanDuration,

    /// Transactions not decided within this time of begin are rolled back.
    #[arg(long, env = "DTXN_TRANSACTION_DEADLINE", value_name = "DURATION",
          default_value_t = HumanDuration(CoordinatorConfig::DEFAULT_TRANSACTION_DEADLINE))]
    pub transaction_deadline: HumanDuration,

    /// How long finished transactions stay queryable.
    #[arg(long, env = "DTXN_RETENTION_PERIOD", value_name = "DURATION",
          default_value_t = HumanDuration(CoordinatorConfig::DEFAULT_RETENTION_PERIOD))]
    pub retention_period: HumanDuration,

    /// How many finished transactions stay queryable.
    #[arg(long, env = "DTXN_RETENTION_COUNT",
          default_value_t = CoordinatorConfig::DEFAULT_RETENTION_COUNT)]
    pub retention_count: usize,

    /// Period of the background sweep (deadlines, retention).
    #[arg(long, env = "DTXN_SWEEP_INTERVAL", value_name = "DURATION",
          default_value_t = HumanDuration(CoordinatorConfig::DEFAULT_SWEEP_INTERVAL))]
    pub sweep_interval: HumanDuration,

    /// Most API requests handled at once; more are answered 503
    /// (/health, /ready and /metrics are never shed).
    #[arg(long, env = "DTXN_MAX_CONCURRENT_REQUESTS",
          default_value_t = ServerConfig::DEFAULT_MAX_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,

    /// Largest request body in bytes; a bigger one is answered 413.
    #[arg(long, env = "DTXN_MAX_BODY_BYTES",
          default_value_t = ServerConfig::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// Largest JSON payload a participant registration may carry, in bytes
    /// (at most --max-body-bytes); a bigger one is answered 413.
    #[arg(long, env = "DTXN_MAX_PAYLOAD_BYTES",
          default_value_t = ServerConfig::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,

    /// This coordinator's URL as participant services reach it; each call
    /// then tells them where to ask for the outcome. Default: http://LISTEN
    /// when --listen names a specific address, else none.
    #[arg(long, env = "DTXN_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,

    /// Most open client connections; more wait in the listen backlog.
    #[arg(long, env = "DTXN_MAX_CONNECTIONS",
          default_value_t = ServerConfig::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Most time from a request's first byte to the end of its headers.
    #[arg(long, env = "DTXN_HEADER_READ_TIMEOUT", value_name = "DURATION",
          default_value_t = HumanDuration(ServerConfig::DEFAULT_HEADER_READ_TIMEOUT))]
    pub header_read_timeout: HumanDuration,

    /// Most time from the end of a request's headers to the end of its body.
    #[arg(long, env = "DTXN_BODY_READ_TIMEOUT", value_name = "DURATION",
          default_value_t = HumanDuration(ServerConfig::DEFAULT_BODY_READ_TIMEOUT))]
    pub body_read_timeout: HumanDuration,

    /// How long a client connection may stay open without a request.
    #[arg(long, env = "DTXN_IDLE_TIMEOUT", value_name = "DURATION",
          default_value_t = HumanDuration(ServerConfig::DEFAULT_IDLE_TIMEOUT))]
    pub idle_timeout: HumanDuration,

    /// On Ctrl-C/SIGTERM, how long unfinished transactions may take to
    /// finish before the rest are rolled back.
    #[arg(long, env = "DTXN_SHUTDOWN_GRACE", value_name = "DURATION",
          default_value_t = HumanDuration(ServerConfig::DEFAULT_SHUTDOWN_GRACE))]
    pub shutdown_grace: HumanDuration,

    /// Keep Commit decisions in a decision log, so they survive a crash:
    /// an SQLite file (created if missing) or a PostgreSQL URL
    /// (postgres://user:password@host:port/db). On start, the decisions it
    /// holds whose phase 2 had not ended are delivered again. Without it,
    /// everything is in memory. One coordinator at a time per file or per
    /// PostgreSQL schema.
    #[arg(
        long,
        env = "DTXN_LOG",
        value_name = "PATH|URL",
        hide_env_values = true
    )]
    pub log: Option<String>,

    /// How long to wait for a --log held by another coordinator (one that
    /// just died may hold it a moment longer) before giving up.
    #[arg(long, env = "DTXN_LOG_LOCK_WAIT", value_name = "DURATION",
          default_value_t = HumanDuration(Duration::from_secs(10)))]
    pub log_lock_wait: HumanDuration,

    /// With a PostgreSQL --log: the schema holding this coordinator's log
    /// (with --node-id: the cluster's schema; each node's decisions go in
    /// NAME_NODEID).
    #[arg(long, env = "DTXN_LOG_SCHEMA", value_name = "NAME",
          default_value = dtxn::log::PostgresLog::DEFAULT_SCHEMA)]
    pub log_schema: String,

    /// With a PostgreSQL --log: join the cluster of coordinators sharing
    /// it as this node (lowercase letters, digits and _, stable across
    /// restarts). Any node takes requests for any transaction and forwards
    /// them to its owner; when a node's lease expires, a survivor takes its
    /// Commit decisions over. The other nodes forward to --node-address.
    #[arg(long, env = "DTXN_NODE_ID", value_name = "ID", requires = "log")]
    pub node_id: Option<String>,

    /// With --node-id: where the other nodes reach this one (its own base
    /// URL). Default: --public-url, else http://LISTEN. Set --public-url to
    /// the cluster's load balancer, so that participants in doubt ask
    /// whichever node is alive.
    #[arg(
        long,
        env = "DTXN_NODE_ADDRESS",
        value_name = "URL",
        requires = "node_id"
    )]
    pub node_address: Option<String>,

    /// With --node-id: how long this node owns its transactions without
    /// renewing its lease in PostgreSQL. A dead node is taken over about
    /// this long after it stopped; a node that could not renew for this
    /// long stops acting and exits (status 3), to be restarted.
    #[arg(long, env = "DTXN_LEASE", value_name = "DURATION",
          default_value_t = HumanDuration(dtxn::log::ClusterOptions::DEFAULT_LEASE))]
    pub lease: HumanDuration,
}

/// A [`Duration`] written for humans: a whole number and a unit, `ms`,
/// `s`, `m` or `h` (`500ms`, `30s`, `2m`, `1h`). Displayed the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let bad = || format!("expected a duration like 500ms, 30s, 2m or 1h, got {s:?}");
        let n: u64 = number.parse().map_err(|_| bad())?;
        let duration = match unit.trim() {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            _ => return Err(bad()),
        };
        duration.map(Self).ok_or_else(bad)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ms = d.as_millis();
        if !d.subsec_nanos().is_multiple_of(1_000_000) {
            // Finer than the units we parse: say it as plainly as possible.
            write!(f, "{d:?}")
        } else if ms.is_multiple_of(3_600_000) && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

fn parse_participant(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, url)) if !name.is_empty() && !url.is_empty() => {
            Ok((name.to_owned(), url.to_owned()))
        }
        _ => Err(format!("expected NAME=URL, got {s:?}")),
    }
}

/// `NAME=TOKEN`. Parsed here rather than by clap, whose errors quote the
/// value: this error never quotes the token.
fn parse_participant_token(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, token)) if !name.is_empty() && !token.is_empty() => {
            Ok((name.to_owned(), token.to_owned()))
        }
        _ => Err("expected NAME=TOKEN".to_owned()),
    }
}

/// `NAME=HEADER:VALUE`; the error never quotes the value.
fn parse_participant_header(s: &str) -> Result<(String, String, String), String> {
    let parsed = s.split_once('=').and_then(|(name, header)| {
        let (header, value) = header.split_once(':')?;
        let valid = !name.is_empty() && !header.trim().is_empty();
        valid.then(|| {
            (
                name.to_owned(),
                header.trim().to_owned(),
                value.trim().to_owned(),
            )
        })
    });
    parsed.ok_or_else(|| "expected NAME=HEADER:VALUE".to_owned())
}

impl ServeArgs {
    /// The coordinator's and the server's configurations, validated
    /// (everything that can be checked before binding the listener).
    ///
    /// # Errors
    ///
    /// A message naming the bad setting.
    pub fn configs(&self) -> Result<(CoordinatorConfig, ServerConfig), String> {
        let retry = RetryPolicy::new(
            self.retry_max_attempts,
            self.retry_initial_backoff.0,
            self.retry_max_backoff.0,
        )
        .and_then(|policy| policy.with_max_elapsed(self.retry_max_elapsed.0))
        .map_err(|e| format!("retry policy: {e}"))?;
        let coordinator = CoordinatorConfig::builder()
            .max_transactions(self.max_transactions)
            .max_participants(self.max_participants)
            .prepare_timeout(self.prepare_timeout.0)
            .phase2_timeout(self.phase2_timeout.0)
            .retry(retry)
            .transaction_deadline(self.transaction_deadline.0)
            .retention_period(self.retention_period.0)
            .retention_count(self.retention_count)
            .sweep_interval(self.sweep_interval.0)
            .build()
            .map_err(|e| e.to_string())?;
        let mut server = ServerConfig::default()
            .max_concurrent_requests(self.max_concurrent_requests)
            .max_body_bytes(self.max_body_bytes)
            .max_payload_bytes(self.max_payload_bytes)
            .max_connections(self.max_connections)
            .header_read_timeout(self.header_read_timeout.0)
            .body_read_timeout(self.body_read_timeout.0)
            .idle_timeout(self.idle_timeout.0)
            .participant_timeout(self.participant_timeout.0)
            .shutdown_grace(self.shutdown_grace.0);
        if let Some(token) = &self.token {
            server = server.bearer_token(token.clone());
        }
        if let Some(proxy) = &self.participant_proxy {
            server = server.participant_proxy(proxy.clone());
        }
        for (name, url) in &self.participants {
            server = server.participant(name.clone(), url.clone());
        }
        for credential in &self.participant_tokens {
            let (name, token) = parse_participant_token(credential)
                .map_err(|e| format!("--participant-token: {e}"))?;
            server = server.participant_token(name, token);
        }
        for credential in &self.participant_headers {
            let (name, header, value) = parse_participant_header(credential)
                .map_err(|e| format!("--participant-header: {e}"))?;
            server = server.participant_header(name, header, value);
        }
        for host in &self.allow_participant_hosts {
            server = server.allow_participant_host(host.clone());
        }
        if let Some(url) = self.public_url() {
            server = server.public_url(url);
        }
        for net in &self.allow_participant_nets {
            server = server.allow_participant_net(net.clone());
        }
        server
            .validate(Some(self.listen))
            .map_err(|e| e.to_string())?;
        Ok((coordinator, server))
    }
}

impl ServeArgs {
    /// `--public-url`, or `http://LISTEN` when that names a specific
    /// address and port (an unspecified address or port 0 says nothing
    /// about how participants reach this server).
    fn public_url(&self) -> Option<String> {
        self.public_url.clone().or_else(|| {
            (!self.listen.ip().is_unspecified() && self.listen.port() != 0)
                .then(|| format!("http://{}", self.listen))
        })
    }
}

/// Runs the server until Ctrl-C or SIGTERM, then shuts down gracefully.
/// Every setting is checked before the listener is bound.
pub async fn execute(args: ServeArgs) -> ExitCode {
    #[cfg(feature = "failpoints")]
    if let Err(e) = kill_at_failpoint() {
        eprintln!("dtxn serve: {e}");
        return ExitCode::from(2);
    }
    let (config, server_config) = match args.configs() {
        Ok(configs) => configs,
        Err(e) => {
            eprintln!("dtxn serve: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("dtxn serve: cannot listen on {}: {e}", args.listen);
            return ExitCode::from(2);
        }
    };
    let address = match listener.local_addr() {
        Ok(address) => address,
        Err(e) => {
            eprintln!("dtxn serve: {e}");
            return ExitCode::from(2);
        }
    };
    // With port 0 the port is known only now: check the participants
    // against it before saying we listen.
    if let Err(e) = server_config.validate(Some(address)) {
        eprintln!("dtxn serve: {e}");
        return ExitCode::from(2);
    }
    let (coordinator, server_config) = match &args.log {
        None => (TransactionCoordinator::with_config(config), server_config),
        Some(log) => match recover(config, server_config, log, &args).await {
            Ok(opened) => opened,
            Err(e) => {
                eprintln!("dtxn serve: {e}");
                return ExitCode::from(2);
            }
        },
    };
    println!("dtxn coordinator listening on http://{address}");
    let lost = coordinator.clone();
    tokio::select! {
        served = server::serve(listener, coordinator, server_config, shutdown_signal()) => match served {
            // The server logs its shutdown report itself.
            Ok(_report) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dtxn serve: {e}");
                ExitCode::from(1)
            }
        },
        // Only with --node-id: this node stopped acting (PROTOCOL.md rule
        // 17); its transactions are another node's now.
        () = lost.fenced() => {
            eprintln!("dtxn serve: this node lost its lease (paused or cut off from PostgreSQL for longer than --lease) and was fenced out: it exits, and its transactions are finished by the node that took them over; restart it to rejoin");
            ExitCode::from(3)
        }
    }
}

/// `DTXN_KILL_AT=<point>[@<n>]`: the process sends itself `SIGKILL` the
/// `n`th time (default 1) it reaches the [crash point](dtxn::failpoint)
/// `point`, e.g. `dtxn::commit_acknowledged@2`.
#[cfg(feature = "failpoints")]
fn kill_at_failpoint() -> Result<(), String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    let Ok(spec) = std::env::var("DTXN_KILL_AT") else {
        return Ok(());
    };
    let (point, nth) = match spec.split_once('@') {
        Some((point, n)) => (
            point,
            n.parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("DTXN_KILL_AT: {n:?} is not a count from 1"))?,
        ),
        None => (spec.as_str(), 1),
    };
    if !dtxn::failpoint::ALL.contains(&point) {
        return Err(format!(
            "DTXN_KILL_AT: no crash point {point:?}; the points are {:?}",
            dtxn::failpoint::ALL
        ));
    }
    let reached = AtomicU32::new(0);
    fail::cfg_callback(point, move || {
        if reached.fetch_add(1, Ordering::SeqCst) + 1 == nth {
            // A real kill -9: no destructor, no flush, no goodbye.
            let pid = std::process::id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            loop {
                std::thread::park();
            }
        }
    })
}

/// Opens the decision log `log` (a PostgreSQL URL, else an SQLite file)
/// and starts a coordinator on it, delivering again the decisions it holds.
async fn recover(
    config: CoordinatorConfig,
    server_config: ServerConfig,
    log: &str,
    args: &ServeArgs,
) -> Result<(TransactionCoordinator, ServerConfig), String> {
    let give_up = tokio::time::Instant::now() + args.log_lock_wait.0;
    let postgres = log.starts_with("postgres://") || log.starts_with("postgresql://");
    let member = match &args.node_id {
        None => None,
        Some(_) if !postgres => {
            return Err("--node-id: a cluster shares a PostgreSQL --log, not a file".to_owned())
        }
        Some(node) => {
            let address = args.node_address.clone().or_else(|| args.public_url()).ok_or(
                "--node-id: the other nodes forward to this one at --node-address, which is needed (or --public-url, or a --listen with a specific address and port)",
            )?;
            Some(
                ClusterOptions::new(node.clone(), address)
                    .lease(args.lease.0)
                    .schema(args.log_schema.clone()),
            )
        }
    };
    let mut view = None;
    let opened = loop {
        let opened: Result<Arc<dyn DecisionLog>, LogError> = if let Some(options) = &member {
            PostgresLog::join_cluster(log, options.clone())
                .await
                .map(|l| {
                    view = l.cluster().cloned();
                    Arc::new(l) as Arc<dyn DecisionLog>
                })
        } else if postgres {
            PostgresLog::open_in_schema(log, &args.log_schema)
                .await
                .map(|l| Arc::new(l) as Arc<dyn DecisionLog>)
        } else {
            SqliteLog::open(log)
                .await
                .map(|l| Arc::new(l) as Arc<dyn DecisionLog>)
        };
        match opened {
            Err(LogError::Locked { .. }) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other.map_err(|e| format!("--log: {e}"))?,
        }
    };
    let resolver = Arc::new(server::recovery_resolver(&server_config).map_err(|e| e.to_string())?);
    let (coordinator, recovery) = TransactionCoordinator::join_cluster(config, opened, resolver)
        .await
        .map_err(|e| format!("--log: {e}"))?;
    let server_config = match view {
        Some(view) => {
            tracing::info!(node = view.node_id(), lease = ?view.lease().duration(), "joined the cluster");
            server_config.cluster(Arc::new(PgCluster::new(view, coordinator.clone())))
        }
        None => server_config,
    };
    tracing::info!(
        redelivering = recovery.redelivering.len(),
        unresolved = recovery.unresolved.len(),
        "decision log opened"
    );
    for (txn, key) in &recovery.unresolved {
        eprintln!("dtxn serve: transaction {txn}: no participant at {key} any more; it is reported as a hazard and stays in the log");
    }
    Ok((coordinator, server_config))
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<ServeArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied())).map(|c| c.serve)
    }

    #[test]
    fn durations_read_and_print_in_human_units() {
        for (text, duration) in [
            ("500ms", Duration::from_millis(500)),
            ("30s", Duration::from_secs(30)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            (" 0s ", Duration::ZERO),
        ] {
            assert_eq!(text.parse::<HumanDuration>(), Ok(HumanDuration(duration)));
        }
        for bad in [
            "",
            "5",
            "s",
            "1.5s",
            "-1s",
            "3 days",
            "99999999999999999999h",
        ] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad:?}");
        }
        for (duration, text) in [
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(HumanDuration(duration).to_string(), text);
            assert_eq!(text.parse::<HumanDuration>(), Ok(HumanDuration(duration)));
        }
    }

    #[test]
    fn every_setting_is_reachable_from_a_flag() {
        let args = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--token",
            "t0ken",
            "--participant",
            "users=http://10.0.0.1:7001/",
            "--participant-token",
            "users=pt0ken",
            "--participant-header",
            "users=X-Tenant: acme",
            "--allow-participant-host",
            "orders.internal",
            "--allow-participant-net",
            "10.0.0.0/8",
            "--participant-proxy",
            "http://proxy.internal:3128",
            "--participant-timeout",
            "3s",
            "--max-transactions",
            "7",
            "--max-participants",
            "8",
            "--prepare-timeout",
            "1500ms",
            "--phase2-timeout",
            "2s",
            "--retry-max-attempts",
            "9",
            "--retry-initial-backoff",
            "10ms",
            "--retry-max-backoff",
            "1s",
            "--retry-max-elapsed",
            "2m",
            "--transaction-deadline",
            "90s",
            "--retention-period",
            "1h",
            "--retention-count",
            "11",
            "--sweep-interval",
            "100ms",
            "--max-concurrent-requests",
            "12",
            "--max-body-bytes",
            "4096",
            "--max-payload-bytes",
            "1000",
            "--public-url",
            "http://coordinator.internal:8080",
            "--max-connections",
            "13",
            "--header-read-timeout",
            "4s",
            "--body-read-timeout",
            "5s",
            "--idle-timeout",
            "6s",
            "--shutdown-grace",
            "7s",
        ])
        .unwrap();
        let (coordinator, server) = args.configs().unwrap();
        assert_eq!(coordinator.max_transactions(), 7);
        assert_eq!(coordinator.max_participants(), 8);
        assert_eq!(coordinator.prepare_timeout(), Duration::from_millis(1500));
        assert_eq!(coordinator.phase2_timeout(), Duration::from_secs(2));
        let retry = coordinator.retry();
        assert_eq!(retry.max_attempts(), 9);
        assert_eq!(retry.initial_backoff(), Duration::from_millis(10));
        assert_eq!(retry.max_backoff(), Duration::from_secs(1));
        assert_eq!(retry.max_elapsed(), Duration::from_secs(120));
        assert_eq!(coordinator.transaction_deadline(), Duration::from_secs(90));
        assert_eq!(coordinator.retention_period(), Duration::from_secs(3600));
        assert_eq!(coordinator.retention_count(), 11);
        assert_eq!(coordinator.sweep_interval(), Duration::from_millis(100));
        let server = format!("{server:?}");
        for field in [
            r#"bearer_token: Some("<set>")"#,
            r#"participants: [("users", "http://10.0.0.1:7001/")]"#,
            r#"participant_tokens: ["users"]"#,
            r#"participant_headers: [("users", "X-Tenant")]"#,
            r#"allowed_hosts: ["orders.internal"]"#,
            r#"allowed_nets: ["10.0.0.0/8"]"#,
            r#"participant_proxy: Some("http://proxy.internal:3128")"#,
            "participant_timeout: 3s",
            "max_concurrent_requests: 12",
            "max_body_bytes: 4096",
            "max_payload_bytes: 1000",
            r#"public_url: Some("http://coordinator.internal:8080")"#,
            "max_connections: 13",
            "header_read_timeout: 4s",
            "body_read_timeout: 5s",
            "idle_timeout: 6s",
            "shutdown_grace: 7s",
        ] {
            assert!(server.contains(field), "{field} not in {server}");
        }
        assert!(!server.contains("t0ken"));
        assert!(!server.contains("acme"));
    }

    #[test]
    fn the_defaults_are_the_libraries_defaults() {
        let args = parse(&[]).unwrap();
        let listen = args.listen;
        let (coordinator, server) = args.configs().unwrap();
        let default = CoordinatorConfig::default();
        assert_eq!(coordinator.retry(), default.retry());
        assert_eq!(coordinator.retention_period(), default.retention_period());
        assert_eq!(coordinator.retention_count(), default.retention_count());
        assert_eq!(coordinator.sweep_interval(), default.sweep_interval());
        assert_eq!(
            coordinator.transaction_deadline(),
            default.transaction_deadline()
        );
        // But for the public URL, which the listen address gives.
        assert_eq!(
            format!("{server:?}"),
            format!(
                "{:?}",
                ServerConfig::default().public_url(format!("http://{listen}"))
            )
        );
    }

    #[test]
    fn the_public_url_is_the_listen_address_unless_that_says_nothing() {
        let public = |args: &[&str]| parse(args).unwrap().public_url();
        assert_eq!(
            public(&["--listen", "10.1.2.3:9000"]).as_deref(),
            Some("http://10.1.2.3:9000")
        );
        assert_eq!(public(&["--listen", "0.0.0.0:9000"]), None);
        assert_eq!(public(&["--listen", "127.0.0.1:0"]), None);
        assert_eq!(
            public(&[
                "--listen",
                "0.0.0.0:9000",
                "--public-url",
                "http://c.internal:9000"
            ])
            .as_deref(),
            Some("http://c.internal:9000")
        );
    }

    #[test]
    fn bad_settings_are_refused_before_binding() {
        for (args, needle) in [
            (&["--retry-max-attempts", "0"][..], "max_attempts"),
            (&["--retry-max-elapsed", "0s"][..], "max_elapsed"),
            (
                &["--retry-initial-backoff", "2s", "--retry-max-backoff", "1s"][..],
                "retry",
            ),
            (&["--token", ""][..], "bearer_token"),
            (&["--participant", "x=ftp://h/"][..], "\"x\""),
            (&["--participant-token", "unknown=x"][..], "\"unknown\""),
            (&["--participant-token", "s3cret"][..], "NAME=TOKEN"),
            (&["--participant-header", "users"][..], "NAME=HEADER:VALUE"),
            (
                &["--participant-header", "unknown=X-Tenant:acme"][..],
                "\"unknown\"",
            ),
            (
                &["--participant", "me=http://localhost:8080/"][..],
                "itself",
            ),
            (
                &["--allow-participant-net", "10.0.0.0"][..],
                "allow_participant_net",
            ),
            (&["--max-connections", "0"][..], "max_connections"),
            (&["--idle-timeout", "0s"][..], "idle_timeout"),
            (&["--sweep-interval", "0ms"][..], "sweep_interval"),
        ] {
            let error = parse(args).unwrap().configs().unwrap_err();
            assert!(error.contains(needle), "{args:?}: {error}");
            assert!(!error.contains("s3cret"), "{args:?}: {error}");
        }
    }
}
