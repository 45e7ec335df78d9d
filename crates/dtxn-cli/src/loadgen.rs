//! `dtxn loadgen`: drives full transactions through the coordinator's HTTP
//! API and reports throughput and latency.
//!
//! Without `--target` it is self-contained: it starts `dtxn serve`'s server
//! and no-op participant services on loopback in this process, so one
//! command measures the whole network path (client → coordinator →
//! participants) on this machine.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtxn_bench::measure::quantile;
use dtxn_bench::Noop;
use dtxn_http::server::model::{
    DecisionName, OutcomeResponse, PrepareOutcomeName, PrepareResponse, RegisterRequest,
    RegisterResponse, TransactionStatus,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Options of `dtxn loadgen`.
#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {
    /// A running coordinator (`dtxn serve`) to load; without it one is
    /// started in this process on loopback.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,

    /// Participant service base URLs to register in every transaction
    /// (with --target). Without --target, --participants no-op services
    /// are started on loopback.
    #[arg(long = "participant-url", value_name = "URL")]
    pub participant_urls: Vec<String>,

    /// No-op participant services per transaction (without --target).
    #[arg(long, default_value_t = 3)]
    pub participants: usize,

    /// Clients running transactions at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// Transactions to run in all.
    #[arg(long, default_value_t = 20_000)]
    pub transactions: u64,

    /// Bearer token for the coordinator API.
    #[arg(long, env = "DTXN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a load run measured.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// Participants per transaction.
    pub participants: usize,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Transactions that committed.
    pub committed: u64,
    /// Transactions that failed (a non-2xx answer or not committed).
    pub failed: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Committed transactions per second.
    pub transactions_per_second: f64,
    /// HTTP requests to the coordinator per second.
    pub requests_per_second: f64,
    /// Full-transaction latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// Runs the load and prints the report.
pub async fn execute(args: LoadgenArgs) -> ExitCode {
    match run(&args).await {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!("dtxn loadgen: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print_report(&report);
            }
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("dtxn loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

async fn bind_loopback() -> std::io::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    Ok((listener, url))
}

/// Starts the coordinator server and `participants` no-op services on
/// loopback; returns the coordinator's URL and the services' URLs.
async fn start_local(participants: usize) -> std::io::Result<(String, Vec<String>)> {
    let mut urls = Vec::with_capacity(participants);
    for _ in 0..participants {
        let (listener, url) = bind_loopback().await?;
        let app = dtxn_http::participant_router(Arc::new(Noop));
        tokio::spawn(async move { axum::serve(listener, app).await });
        urls.push(url);
    }
    let (listener, url) = bind_loopback().await?;
    let coordinator = dtxn::TransactionCoordinator::new();
    let config = dtxn_http::server::ServerConfig::default();
    tokio::spawn(dtxn_http::server::serve(
        listener,
        coordinator,
        config,
        std::future::pending(),
    ));
    Ok((url, urls))
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    requests: AtomicU64,
}

impl Client {
    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&RegisterRequest>,
    ) -> Result<T, String> {
        let mut request = self.http.post(format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("POST {path}: {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("POST {path}: {e}: {text}"))
    }

    /// One full transaction: begin, register, prepare, commit.
    async fn transaction(&self, participants: &[String]) -> Result<(), String> {
        let begun: TransactionStatus = self.post("transactions", None).await?;
        let id = begun.id;
        for (i, url) in participants.iter().enumerate() {
            let request = RegisterRequest {
                name: format!("p{i}"),
                url: Some(url.clone()),
            };
            self.post::<RegisterResponse>(
                &format!("transactions/{id}/participants"),
                Some(&request),
            )
            .await?;
        }
        let prepared: PrepareResponse = self
            .post(&format!("transactions/{id}/prepare"), None)
            .await?;
        if prepared.outcome != PrepareOutcomeName::Prepared {
            return Err(format!("{id} not prepared: {:?}", prepared.reason));
        }
        let outcome: OutcomeResponse = self
            .post(&format!("transactions/{id}/commit"), None)
            .await?;
        if outcome.decision != DecisionName::Commit {
            return Err(format!("{id} not committed: {:?}", outcome.abort_reason));
        }
        Ok(())
    }
}

async fn run(args: &LoadgenArgs) -> Result<LoadReport, String> {
    let (base, participants) = match &args.target {
        Some(target) => {
            let base = if target.ends_with('/') {
                target.clone()
            } else {
                format!("{target}/")
            };
            (base, args.participant_urls.clone())
        }
        None => start_local(args.participants)
            .await
            .map_err(|e| format!("cannot start the local servers: {e}"))?,
    };
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let client = Arc::new(Client {
        http,
        base,
        token: args.token.clone(),
        requests: AtomicU64::new(0),
    });
    let participants = Arc::new(participants);
    let next = Arc::new(AtomicU64::new(0));
    let total = args.transactions;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (client, participants, next) = (client.clone(), participants.clone(), next.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t0 = Instant::now();
                match client.transaction(&participants).await {
                    Ok(()) => latencies.push(t0.elapsed()),
                    Err(e) => failures.push(e),
                }
            }
            (latencies, failures)
        });
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(total as usize);
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        let (mut l, f) = joined.map_err(|e| e.to_string())?;
        latencies.append(&mut l);
        if let Some(first) = f.first() {
            tracing::warn!(failures = f.len(), first = %first, "transactions failed");
        }
        failed += f.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ms = |q: f64| quantile(&latencies, q).as_secs_f64() * 1e3;
    Ok(LoadReport {
        participants: participants.len(),
        concurrency: args.concurrency,
        committed: latencies.len() as u64,
        failed,
        seconds,
        transactions_per_second: latencies.len() as f64 / seconds,
        requests_per_second: client.requests.load(Ordering::Relaxed) as f64 / seconds,
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    })
}

fn print_report(r: &LoadReport) {
    println!(
        "{} transactions x {} participants, {} clients, over HTTP",
        r.committed + r.failed,
        r.participants,
        r.concurrency
    );
    println!("  committed     {:>8}", r.committed);
    println!("  failed        {:>8}", r.failed);
    println!(
        "  throughput    {:>8.0} tx/s   ({:.0} coordinator requests/s)",
        r.transactions_per_second, r.requests_per_second
    );
    println!(
        "  latency       p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
    );
}
