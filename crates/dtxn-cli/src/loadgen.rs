//! `dtxn loadgen`: drives full transactions through the coordinator's HTTP
//! API and reports throughput and latency.
//!
//! Without `--target` it is self-contained: it starts `dtxn serve`'s server
//! and no-op participant services on loopback in this process, so one
//! command measures the whole network path (client → coordinator →
//! participants) on this machine.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtxn::{Participant, ParticipantError, PreparedResult, TransactionId};
use dtxn_http::server::model::{
    AbortReasonBody, DecisionName, OutcomeResponse, PrepareOutcomeName, PrepareResponse,
    RegisterRequest, RegisterResponse, TransactionStatus,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::units;

/// Options of `dtxn loadgen`.
#[derive(Debug, clap::Args)]
pub struct LoadgenArgs {
    /// A running coordinator (`dtxn serve`) to load; without it one is
    /// started in this process on loopback. Repeat it for the nodes of a
    /// cluster (`dtxn serve --node-id`): transactions are begun on each in
    /// turn.
    #[arg(long, value_name = "URL")]
    pub target: Vec<String>,

    /// With several --target nodes: send each transaction's requests after
    /// the begin to the next node, which forwards them to the owner (as a
    /// load balancer that ignores ownership would). Without it they go to
    /// the node that began the transaction.
    #[arg(long)]
    pub via_next_node: bool,

    /// With --target: start --participants no-op participant services on
    /// loopback in this process and register them in every transaction
    /// (the coordinator must allow them: `dtxn serve
    /// --allow-participant-host 127.0.0.1`).
    #[arg(long, requires = "target", conflicts_with = "participant_urls")]
    pub start_participants: bool,

    /// Participant service base URLs to register in every transaction
    /// (with --target; without them and without --start-participants,
    /// transactions have no participant).
    #[arg(long = "participant-url", value_name = "URL")]
    pub participant_urls: Vec<String>,

    /// No-op participant services per transaction (without --target, or
    /// with --start-participants).
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
///
/// Every transaction counts: committed ones and failed ones have separate
/// latency figures, so a run where some transactions hang until a timeout
/// shows it in `latency_ms.failed`.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    /// Participants per transaction.
    pub participants: usize,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Transactions run (committed + failed).
    pub transactions: u64,
    /// Transactions that committed.
    pub committed: u64,
    /// Transactions that failed: an HTTP error, no answer, or not
    /// committed.
    pub failed: u64,
    /// Failed transactions by kind of failure: the step that failed and
    /// why (`"prepare: aborted (prepare_failed: timed_out)"`,
    /// `"begin: HTTP 401 Unauthorized"`, ...).
    pub failures_by_kind: BTreeMap<String, u64>,
    /// Wall time of the run, seconds (millisecond resolution).
    pub seconds: f64,
    /// Committed transactions per second of wall time.
    pub transactions_per_second: f64,
    /// HTTP requests to the coordinator per second of wall time.
    pub requests_per_second: f64,
    /// Latency of a transaction, from its first request to the answer
    /// that ended it, in milliseconds (microsecond resolution).
    pub latency_ms: LatencySplit,
}

/// Latency of committed and of failed transactions, kept apart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySplit {
    /// Transactions that committed.
    pub committed: Latency,
    /// Transactions that failed (all zero when none did).
    pub failed: Latency,
}

/// Latency percentiles of some transactions, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    /// Transactions measured.
    pub count: u64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// Percentiles of `latencies` (any order).
    fn of(latencies: &mut [Duration]) -> Self {
        latencies.sort_unstable();
        let ms = |q: f64| units::millis(quantile(latencies, q));
        Self {
            count: latencies.len() as u64,
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            max: ms(1.0),
        }
    }
}

/// The `q` quantile of sorted `values` (nearest rank); zero when empty.
fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((values.len() as f64) * q).ceil() as usize;
    values[rank.clamp(1, values.len()) - 1]
}

/// The request of a transaction that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Begin,
    Register,
    Prepare,
    Commit,
}

impl Step {
    fn label(self) -> &'static str {
        match self {
            Self::Begin => "begin",
            Self::Register => "register",
            Self::Prepare => "prepare",
            Self::Commit => "commit",
        }
    }
}

/// Why a transaction failed: the step, the kind (the key it is counted
/// under) and the details (logged once per kind as an example).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    kind: String,
    detail: String,
}

impl Failure {
    /// The request got no HTTP answer (connection refused, reset...).
    fn no_answer(step: Step, error: &reqwest::Error) -> Self {
        // reqwest's message hides the cause ("connection refused"...).
        let mut detail = error.to_string();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            detail = format!("{detail}: {cause}");
            source = cause.source();
        }
        Self {
            kind: format!("{}: no answer", step.label()),
            detail,
        }
    }

    /// The coordinator answered with an error status.
    fn status(step: Step, status: reqwest::StatusCode, body: &str) -> Self {
        Self {
            kind: format!("{}: HTTP {status}", step.label()),
            detail: body.to_owned(),
        }
    }

    /// The answer was not the expected JSON.
    fn invalid_answer(step: Step, detail: String) -> Self {
        Self {
            kind: format!("{}: unexpected answer", step.label()),
            detail,
        }
    }

    /// The transaction was decided Abort at `step` (prepare or commit).
    fn aborted(step: Step, reason: Option<&AbortReasonBody>) -> Self {
        let kind = match reason {
            Some(reason) => format!("{}: aborted ({})", step.label(), reason_kind(reason)),
            None => format!("{}: aborted", step.label()),
        };
        Self {
            kind,
            detail: reason.map_or_else(|| "no reason given".to_owned(), |r| r.message.clone()),
        }
    }
}

/// The kind of an abort reason as the API names it (`voted`,
/// `prepare_failed: timed_out`...), without per-transaction details.
fn reason_kind(reason: &AbortReasonBody) -> String {
    let name = |value: serde_json::Result<serde_json::Value>| {
        value
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let kind = name(serde_json::to_value(reason.kind));
    match &reason.failure {
        Some(failure) => format!("{kind}: {}", name(serde_json::to_value(failure.kind))),
        None => kind,
    }
}

/// One transaction as the client saw it.
#[derive(Debug, Clone)]
struct Sample {
    /// From its first request to the answer that ended it.
    latency: Duration,
    /// Committed, or why not.
    result: Result<(), Failure>,
}

impl LoadReport {
    /// Summarizes the `samples` of a run that took `elapsed` and made
    /// `requests` HTTP requests.
    fn new(
        samples: Vec<Sample>,
        elapsed: Duration,
        requests: u64,
        participants: usize,
        concurrency: usize,
    ) -> Self {
        let mut committed = Vec::with_capacity(samples.len());
        let mut failed = Vec::new();
        let mut failures_by_kind: BTreeMap<String, u64> = BTreeMap::new();
        let mut examples: BTreeMap<String, String> = BTreeMap::new();
        for sample in samples {
            match sample.result {
                Ok(()) => committed.push(sample.latency),
                Err(failure) => {
                    failed.push(sample.latency);
                    *failures_by_kind.entry(failure.kind.clone()).or_default() += 1;
                    examples.entry(failure.kind).or_insert(failure.detail);
                }
            }
        }
        for (kind, example) in &examples {
            tracing::warn!(
                kind = %kind,
                count = failures_by_kind.get(kind).copied().unwrap_or(0),
                example = %example,
                "transactions failed"
            );
        }
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let per_second = |n: u64| units::round(n as f64 / seconds, 1);
        let latency_ms = LatencySplit {
            committed: Latency::of(&mut committed),
            failed: Latency::of(&mut failed),
        };
        Self {
            participants,
            concurrency,
            transactions: latency_ms.committed.count + latency_ms.failed.count,
            committed: latency_ms.committed.count,
            failed: latency_ms.failed.count,
            failures_by_kind,
            seconds: units::round(elapsed.as_secs_f64(), 3),
            transactions_per_second: per_second(latency_ms.committed.count),
            requests_per_second: per_second(requests),
            latency_ms,
        }
    }
}

/// Runs the load and prints the report.
pub async fn execute(args: LoadgenArgs) -> ExitCode {
    match run(&args).await {
        Ok(report) => {
            if args.json {
                match units::json_line(&report) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!("dtxn loadgen: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print!("{}", render(&report));
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

/// Votes `Ready` and acknowledges phase 2 at once: the participant
/// services of a self-contained run, so that it measures the coordinator
/// and the network path, not the work.
#[derive(Debug, Clone, Copy)]
struct Noop;

#[dtxn::async_trait]
impl Participant for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    async fn prepare(&self, _txn: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
    async fn rollback(&self, _txn: TransactionId) -> Result<(), ParticipantError> {
        Ok(())
    }
}

/// Starts the coordinator server and `participants` no-op services on
/// loopback; returns the coordinator's URL and the services' URLs.
/// Starts `participants` no-op participant services on loopback; returns
/// their URLs.
async fn start_noop_services(participants: usize) -> std::io::Result<Vec<String>> {
    let mut urls = Vec::with_capacity(participants);
    for _ in 0..participants {
        let (listener, url) = bind_loopback().await?;
        let app = dtxn_http::participant_router(Arc::new(Noop));
        tokio::spawn(async move { axum::serve(listener, app).await });
        urls.push(url);
    }
    Ok(urls)
}

async fn start_local(participants: usize) -> std::io::Result<(String, Vec<String>)> {
    let urls = start_noop_services(participants).await?;
    let (listener, url) = bind_loopback().await?;
    let coordinator = dtxn::TransactionCoordinator::new();
    // The client registers the services by URL: allow their host.
    let config = dtxn_http::server::ServerConfig::default().allow_participant_host("127.0.0.1");
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
    /// The coordinators' base URLs (the nodes of a cluster).
    bases: Vec<String>,
    via_next_node: bool,
    token: Option<String>,
    requests: AtomicU64,
}

impl Client {
    async fn post<T: DeserializeOwned>(
        &self,
        base: &str,
        step: Step,
        path: &str,
        body: Option<&RegisterRequest>,
    ) -> Result<T, Failure> {
        let mut request = self.http.post(format!("{base}{path}"));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request
            .send()
            .await
            .map_err(|e| Failure::no_answer(step, &e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| Failure::no_answer(step, &e))?;
        if !status.is_success() {
            return Err(Failure::status(step, status, &text));
        }
        serde_json::from_str(&text)
            .map_err(|e| Failure::invalid_answer(step, format!("POST {path}: {e}: {text}")))
    }

    /// One full transaction, the `n`th: begin, register, prepare, commit.
    async fn transaction(&self, n: u64, participants: &[String]) -> Result<(), Failure> {
        let count = self.bases.len() as u64;
        let begin_at = &self.bases[(n % count) as usize];
        let via = if self.via_next_node {
            &self.bases[((n + 1) % count) as usize]
        } else {
            begin_at
        };
        let begun: TransactionStatus = self
            .post(begin_at, Step::Begin, "transactions", None)
            .await?;
        let id = begun.id;
        for (i, url) in participants.iter().enumerate() {
            let request = RegisterRequest {
                name: format!("p{i}"),
                url: Some(url.clone()),
                payload: None,
                headers: None,
            };
            self.post::<RegisterResponse>(
                via,
                Step::Register,
                &format!("transactions/{id}/participants"),
                Some(&request),
            )
            .await?;
        }
        let prepared: PrepareResponse = self
            .post(
                via,
                Step::Prepare,
                &format!("transactions/{id}/prepare"),
                None,
            )
            .await?;
        if prepared.outcome != PrepareOutcomeName::Prepared {
            return Err(Failure::aborted(Step::Prepare, prepared.reason.as_ref()));
        }
        let outcome: OutcomeResponse = self
            .post(
                via,
                Step::Commit,
                &format!("transactions/{id}/commit"),
                None,
            )
            .await?;
        if outcome.decision != DecisionName::Commit {
            return Err(Failure::aborted(
                Step::Commit,
                outcome.abort_reason.as_ref(),
            ));
        }
        Ok(())
    }
}

async fn run(args: &LoadgenArgs) -> Result<LoadReport, String> {
    let (bases, participants) = if args.target.is_empty() {
        let (base, participants) = start_local(args.participants)
            .await
            .map_err(|e| format!("cannot start the local servers: {e}"))?;
        (vec![base], participants)
    } else {
        let bases = args
            .target
            .iter()
            .map(|target| {
                if target.ends_with('/') {
                    target.clone()
                } else {
                    format!("{target}/")
                }
            })
            .collect();
        let participants = if args.start_participants {
            start_noop_services(args.participants)
                .await
                .map_err(|e| format!("cannot start the participant services: {e}"))?
        } else {
            args.participant_urls.clone()
        };
        (bases, participants)
    };
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let client = Arc::new(Client {
        http,
        bases,
        via_next_node: args.via_next_node,
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
            let mut samples = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let t0 = Instant::now();
                let result = client.transaction(n, &participants).await;
                samples.push(Sample {
                    latency: t0.elapsed(),
                    result,
                });
            }
            samples
        });
    }
    let mut samples: Vec<Sample> = Vec::with_capacity(total.try_into().unwrap_or(0));
    while let Some(joined) = tasks.join_next().await {
        samples.append(&mut joined.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed();
    Ok(LoadReport::new(
        samples,
        elapsed,
        client.requests.load(Ordering::Relaxed),
        participants.len(),
        args.concurrency,
    ))
}

/// The report as text.
fn render(r: &LoadReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "dtxn loadgen: {} transactions x {} participants, {} clients at once, over HTTP",
        r.transactions, r.participants, r.concurrency
    );
    let _ = writeln!(s, "  committed     {:>8}", r.committed);
    let _ = writeln!(s, "  failed        {:>8}", r.failed);
    let mut kinds: Vec<_> = r.failures_by_kind.iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    for (kind, count) in kinds {
        let _ = writeln!(s, "    {count:>8}  {kind}");
    }
    let _ = writeln!(s, "  wall time     {:>8.2} s", r.seconds);
    let _ = writeln!(
        s,
        "  throughput    {:>8.0} committed tx/s   ({:.0} coordinator requests/s)",
        r.transactions_per_second, r.requests_per_second
    );
    let line = |s: &mut String, label: &str, l: &Latency| {
        let _ = if l.count == 0 {
            writeln!(s, "  latency of {label:<9}  (no transactions)")
        } else {
            writeln!(
                s,
                "  latency of {label:<9}  p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   max {:.2} ms   ({} transactions)",
                l.p50, l.p90, l.p99, l.max, l.count
            )
        };
    };
    line(&mut s, "committed", &r.latency_ms.committed);
    if r.failed > 0 {
        line(&mut s, "failed", &r.latency_ms.failed);
    }
    let _ = writeln!(
        s,
        "  (latency: from a transaction's first request to the answer that ended it)"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtxn::{AbortReason, CallFailure};

    fn committed(ms: u64) -> Sample {
        Sample {
            latency: Duration::from_millis(ms),
            result: Ok(()),
        }
    }

    fn timed_out_prepare(ms: u64) -> Sample {
        let reason = AbortReasonBody::from(&AbortReason::PrepareFailed {
            participant: "p1".to_owned(),
            index: 1,
            failure: CallFailure::TimedOut,
        });
        Sample {
            latency: Duration::from_millis(ms),
            result: Err(Failure::aborted(Step::Prepare, Some(&reason))),
        }
    }

    #[test]
    fn failed_transactions_are_counted_with_their_own_latency() {
        let mut samples: Vec<Sample> = (1..=98).map(committed).collect();
        samples.push(timed_out_prepare(6000));
        samples.push(timed_out_prepare(5000));
        samples.push(Sample {
            latency: Duration::from_micros(300),
            result: Err(Failure {
                kind: "begin: HTTP 401 Unauthorized".to_owned(),
                detail: String::new(),
            }),
        });
        let report = LoadReport::new(samples, Duration::from_secs(6), 500, 3, 8);
        assert_eq!(report.transactions, 101);
        assert_eq!(report.committed, 98);
        assert_eq!(report.failed, 3);
        assert_eq!(
            report.failures_by_kind,
            BTreeMap::from([
                ("begin: HTTP 401 Unauthorized".to_owned(), 1),
                ("prepare: aborted (prepare_failed: timed_out)".to_owned(), 2),
            ])
        );
        // The hanging prepares show in the failed latency, not hidden.
        assert_eq!(report.latency_ms.committed.count, 98);
        assert_eq!(report.latency_ms.committed.max, 98.0);
        assert_eq!(report.latency_ms.failed.count, 3);
        assert_eq!(report.latency_ms.failed.max, 6000.0);
        assert_eq!(report.latency_ms.failed.p50, 5000.0);
        assert_eq!(report.transactions_per_second, 16.3);

        let text = render(&report);
        assert!(text.contains("failed               3"), "{text}");
        assert!(
            text.contains("       2  prepare: aborted (prepare_failed: timed_out)"),
            "{text}"
        );
        assert!(
            text.contains("latency of failed     p50 5000.00 ms"),
            "{text}"
        );
        assert!(text.contains("max 6000.00 ms   (3 transactions)"), "{text}");

        let json: serde_json::Value =
            serde_json::from_str(&units::json_line(&report).unwrap()).unwrap();
        assert_eq!(json["failed"], 3);
        assert_eq!(json["latency_ms"]["failed"]["max"], 6000.0);
        assert_eq!(json["latency_ms"]["committed"]["max"], 98.0);
        assert_eq!(
            json["failures_by_kind"]["prepare: aborted (prepare_failed: timed_out)"],
            2
        );
    }

    #[test]
    fn a_clean_run_shows_no_failed_latency() {
        let report = LoadReport::new(
            vec![committed(4), committed(5)],
            Duration::from_millis(10),
            8,
            1,
            2,
        );
        assert_eq!((report.committed, report.failed), (2, 0));
        assert!(report.failures_by_kind.is_empty());
        assert_eq!(report.latency_ms.failed.count, 0);
        let text = render(&report);
        assert!(!text.contains("latency of failed"), "{text}");
        assert!(text.contains("latency of committed"), "{text}");
    }
}
