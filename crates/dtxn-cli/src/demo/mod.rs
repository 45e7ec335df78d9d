//! The demo scenario, `dtxn demo` (also the binary's default command).
//!
//! A user signs up and gets a free welcome product: the `UserService`
//! creates the account, the `ProductService` hands out one unit of the
//! product from a limited inventory, and the `OrderService` records the
//! welcome order — all three or none, coordinated by a
//! [`dtxn::TransactionCoordinator`] with two-phase commit.
//!
//! The demo runs a few thousand such sign-ups concurrently. Some fail on
//! purpose: an invalid username, a product out of stock, or a fault
//! injected into one service (an error, a panic or a hang in `prepare`; a
//! transient error or a panic in `commit`). It then prints what happened
//! (committed, aborted by reason, hazards, throughput, latency) and checks
//! that the three stores are consistent with each other and with the
//! coordinator's outcomes. The process exits with status 1 when that check
//! fails.
//!
//! With `--http` the same services run as HTTP participant services on
//! loopback and the coordinator calls them through
//! [`dtxn_http::HttpParticipant`]s (see [`transport`]): same workload,
//! same faults (a panic becomes a `500`, a hang a timed-out call), same
//! report and check. There the services are the SQLite ones of [`sqlite`]:
//! each keeps its state in its own SQLite file (in a temporary directory
//! removed at the end) behind the `dtxn-participant` barrier, and learns
//! each sign-up (and the fault to inject) from the JSON payload the client
//! registers it with; the consistency check reads the state back from the
//! files. `dtxn service` runs one of the in-memory services on its own
//! (see [`crate::service`]).

mod check;
mod progress;
mod report;
pub(crate) mod services;
mod sqlite;
mod transport;
pub(crate) mod workload;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtxn::{
    ConfigError, CoordinatorConfig, CoordinatorError, Participant, PrepareOutcome, RetryPolicy,
    TransactionCoordinator, TransactionOutcome,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use check::Stores;
use progress::Progress;
use report::{RunInfo, StateKind, Summary};
use services::{
    Inventory, OrderService, ProductService, RequestBook, Requests, UserService, INJECTED,
};
use sqlite::{SqliteServices, StateError};
use transport::{Transport, TransportError};
use workload::{SignUp, Workload};

/// The coordinator's prepare timeout in process: an injected hang costs
/// this much.
const PREPARE_TIMEOUT: Duration = Duration::from_millis(200);

/// The prepare timeout with `--http`. At the default concurrency, calls to
/// the loopback services queue for a few hundred milliseconds on a small
/// machine (the coordinator, the three servers and the HTTP client share
/// its cores); a 200 ms timeout would turn that queueing into aborts.
const HTTP_PREPARE_TIMEOUT: Duration = Duration::from_secs(1);

/// The log filter of the demo: with `--http`, the participant services
/// log every handler panic as an error, and the demo injects panics on
/// purpose (they show in the report as failed calls); sqlx warns of
/// statements and connections that waited long for the database under
/// load, which the report shows as latency.
pub const LOG_FILTER: &str = "warn,dtxn_http::service=off,sqlx=error";

/// The coordinator's timeout of one commit or rollback attempt.
const PHASE2_TIMEOUT: Duration = Duration::from_secs(1);

/// With `--http`, the HTTP client's own limit on one call: longer than the
/// coordinator's timeouts, so that theirs fire first and a hang is
/// reported as a timed-out call, as in process.
const HTTP_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Client-side limit on one transaction, begin to outcome. The coordinator
/// bounds every transaction far below this; reaching it means a transaction
/// got stuck, which the report shows as a failure.
const STUCK_AFTER: Duration = Duration::from_secs(30);

/// How long to wait before retrying `begin_transaction` when the
/// coordinator is at capacity.
const CAPACITY_BACKOFF: Duration = Duration::from_millis(1);

/// Options of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Number of sign-up transactions to run.
    #[arg(long, default_value_t = 3000, value_parser = parse_positive)]
    pub transactions: usize,

    /// Transactions in flight at most.
    #[arg(long, default_value_t = 256, value_parser = parse_positive)]
    pub concurrency: usize,

    /// Probability that a transaction injects a fault into one service
    /// (an error, panic or hang in prepare; a transient error or panic in
    /// commit), between 0 and 1.
    #[arg(long, default_value_t = 0.05, value_parser = parse_rate)]
    pub fault_rate: f64,

    /// Seed of the workload (which requests are invalid, which products
    /// they ask for, which faults they inject). Random by default; the
    /// report prints it so the run can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,

    /// Print a one-line JSON summary instead of the report.
    #[arg(long)]
    pub json: bool,

    /// Run the three services as HTTP participant services on 127.0.0.1
    /// (ephemeral ports) and have the coordinator call them over HTTP.
    #[arg(long)]
    pub http: bool,
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The coordinator configuration derived from the options is refused.
    #[error("invalid coordinator configuration: {0}")]
    Config(#[from] ConfigError),
    /// The services could not be reached over the chosen transport.
    #[error("cannot start the services: {0}")]
    Transport(#[from] TransportError),
    /// The services' SQLite state could not be set up, read or removed.
    #[error("{0}")]
    State(#[from] StateError),
}

pub(crate) fn parse_positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err("must be between 0 and 1".to_owned())
    }
}

/// One transaction's result as the client saw it.
#[derive(Debug, Clone)]
pub struct TxnRecord {
    /// Time from `begin_transaction` to the final outcome.
    pub latency: Duration,
    /// The outcome.
    pub result: TxnResult,
}

/// How a transaction ended.
#[derive(Debug, Clone)]
pub enum TxnResult {
    /// Decided and delivered (commit or rollback acknowledged or given up).
    Finished(TransactionOutcome),
    /// A coordinator call was refused, or the transaction got stuck.
    Failed(String),
}

/// Runs the demo with `args` and prints its report (or JSON line). Exit
/// status: 0 when the stores are consistent, 1 when not, 2 when the demo
/// could not run.
pub async fn execute(args: DemoArgs) -> ExitCode {
    // A random seed is kept short so it is easy to pass to `--seed`.
    let seed = args.seed.unwrap_or_else(|| fastrand::u32(..).into());
    silence_injected_panics();
    let summary = match run(&args, seed).await {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("dtxn demo: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        match crate::units::json_line(&summary) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("dtxn demo: cannot serialize the summary: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{summary}");
    }
    if summary.consistent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs the scenario and checks the stores.
///
/// # Errors
///
/// When the coordinator configuration derived from `args` is refused, or
/// (with `--http`) the services cannot listen.
///
/// # Cancel safety
///
/// Not cancel safe: dropping the future abandons the run half-way (the
/// coordinator finishes the transactions already decided in the
/// background).
pub async fn run(args: &DemoArgs, seed: u64) -> Result<Summary, DemoError> {
    let transport = if args.http {
        Transport::Http
    } else {
        Transport::InProcess
    };
    let prepare_timeout = match transport {
        Transport::InProcess => PREPARE_TIMEOUT,
        Transport::Http => HTTP_PREPARE_TIMEOUT,
    };
    let config = CoordinatorConfig::builder()
        .max_transactions(args.concurrency)
        .prepare_timeout(prepare_timeout)
        .phase2_timeout(PHASE2_TIMEOUT)
        .retry(RetryPolicy::new(
            5,
            Duration::from_millis(10),
            Duration::from_millis(200),
        )?)
        .transaction_deadline(Duration::from_secs(10))
        .build()?;
    let coordinator = TransactionCoordinator::with_config(config);

    let workload = Workload::generate(args.transactions, args.fault_rate, seed);
    let state = match transport {
        Transport::InProcess => State::memory(&workload.stock),
        Transport::Http => State::Sqlite(SqliteServices::open(&workload.stock).await?),
    };
    let client = state.client();
    let services = state.participants().await?;
    let connected = transport.connect(services, HTTP_CALL_TIMEOUT).await?;
    let participants: Arc<[Arc<dyn Participant>]> = connected.participants().into();

    let show_progress = !args.json && std::io::stderr().is_terminal();
    let progress = Progress::new(args.transactions as u64, show_progress);
    let limit = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for (index, signup) in workload.signups.into_iter().enumerate() {
        // The semaphore is never closed, so this cannot fail.
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            break;
        };
        let coordinator = coordinator.clone();
        let participants = Arc::clone(&participants);
        let client = client.clone();
        let progress = progress.clone();
        tasks.spawn(async move {
            let record = sign_up(&coordinator, &participants[..], &client, signup).await;
            progress.inc();
            drop(permit);
            (index, record)
        });
    }
    let mut records: Vec<Option<TxnRecord>> = vec![None; args.transactions];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, record)) => records[index] = Some(record),
            Err(e) => tracing::error!(error = %e, "a client task failed"),
        }
    }
    let elapsed = started.elapsed();
    progress.finish();
    drop(connected);

    let records: Vec<TxnRecord> = records
        .into_iter()
        .map(|record| {
            record.unwrap_or_else(|| TxnRecord {
                latency: Duration::ZERO,
                result: TxnResult::Failed("the client task panicked".to_owned()),
            })
        })
        .collect();
    let faults_injected = state.injected();
    let (stores, state, state_dir) = state.finish().await?;
    let check = check::check(&records, &stores, coordinator.stats().unfinished);
    Ok(Summary::new(
        &records,
        check,
        RunInfo {
            seed,
            concurrency: args.concurrency,
            fault_rate: args.fault_rate,
            elapsed,
            faults_injected,
            transport,
            state,
            state_dir,
        },
    ))
}

/// Where the services keep their state.
enum State {
    /// In memory, in process; each sign-up is filed in the book.
    Memory {
        book: Arc<RequestBook>,
        users: Arc<UserService>,
        products: Arc<ProductService>,
        orders: Arc<OrderService>,
    },
    /// In SQLite; each sign-up travels as the participants' payloads.
    Sqlite(SqliteServices),
}

impl State {
    /// The in-memory services, with `stock` in the inventory.
    fn memory(stock: &[u64]) -> Self {
        let book = Arc::new(RequestBook::default());
        let requests: Arc<dyn Requests> = book.clone();
        let users = Arc::new(UserService::new(Default::default(), Arc::clone(&requests)));
        let products = Arc::new(ProductService::new(
            Inventory::new(stock),
            Arc::clone(&requests),
        ));
        let orders = Arc::new(OrderService::new(Default::default(), requests));
        Self::Memory {
            book,
            users,
            products,
            orders,
        }
    }

    /// How the client tells the services what each sign-up asks for.
    fn client(&self) -> Client {
        match self {
            Self::Memory { book, .. } => Client::Book(Arc::clone(book)),
            Self::Sqlite(_) => Client::Payloads,
        }
    }

    /// The services, in [`workload::ServiceKind::ALL`] order.
    async fn participants(&self) -> Result<Vec<Arc<dyn Participant>>, DemoError> {
        match self {
            Self::Memory {
                users,
                products,
                orders,
                ..
            } => Ok(vec![
                Arc::clone(users) as Arc<dyn Participant>,
                Arc::clone(products) as Arc<dyn Participant>,
                Arc::clone(orders) as Arc<dyn Participant>,
            ]),
            Self::Sqlite(services) => Ok(services.participants().await?),
        }
    }

    /// Faults injected so far, by kind.
    fn injected(&self) -> std::collections::BTreeMap<&'static str, usize> {
        match self {
            Self::Memory { book, .. } => book.injected(),
            Self::Sqlite(services) => services.injected(),
        }
    }

    /// The stores after the run (read back from the databases for SQLite,
    /// whose directory is then removed), what kind of state it was, and
    /// the removed directory.
    async fn finish(self) -> Result<(Stores, StateKind, Option<String>), DemoError> {
        match self {
            Self::Memory {
                users,
                products,
                orders,
                ..
            } => {
                let mut anomalies = users.anomalies();
                anomalies.extend(products.anomalies());
                anomalies.extend(orders.anomalies());
                let stores = Stores {
                    users: users.snapshot(),
                    inventory: products.snapshot(),
                    orders: orders.snapshot(),
                    anomalies,
                };
                Ok((stores, StateKind::Memory, None))
            }
            Self::Sqlite(services) => {
                let stores = services.read_back().await?;
                let dir = services.close().await?;
                Ok((
                    stores,
                    StateKind::Sqlite,
                    Some(dir.to_string_lossy().into_owned()),
                ))
            }
        }
    }
}

/// How a client tells the services what a sign-up asks for.
#[derive(Clone)]
enum Client {
    /// Files it in the shared book the in-memory services read.
    Book(Arc<RequestBook>),
    /// Registers each participant with its JSON payload.
    Payloads,
}

/// One sign-up, as a client of the coordinator would run it: begin, file
/// the request (or register the three services with their payloads),
/// register the three services, prepare, then commit or (to wait until
/// every reservation is released) roll back.
async fn sign_up(
    coordinator: &TransactionCoordinator,
    participants: &[Arc<dyn Participant>],
    client: &Client,
    signup: SignUp,
) -> TxnRecord {
    let payloads = match client {
        Client::Book(_) => None,
        Client::Payloads => match sqlite::payloads(&signup) {
            Ok(payloads) => Some(payloads),
            Err(e) => {
                return TxnRecord {
                    latency: Duration::ZERO,
                    result: TxnResult::Failed(format!("cannot encode the payloads: {e}")),
                }
            }
        },
    };
    let txn = loop {
        match coordinator.begin_transaction() {
            Ok(txn) => break txn,
            Err(CoordinatorError::CapacityExceeded { .. }) => {
                tokio::time::sleep(CAPACITY_BACKOFF).await;
            }
            Err(e) => {
                return TxnRecord {
                    latency: Duration::ZERO,
                    result: TxnResult::Failed(e.to_string()),
                }
            }
        }
    };
    let started = Instant::now();
    if let Client::Book(book) = client {
        book.insert(txn, signup);
    }
    let drive = async {
        match payloads {
            None => {
                for participant in participants {
                    coordinator.register_participant(txn, Arc::clone(participant))?;
                }
            }
            Some(payloads) => {
                for (participant, payload) in participants.iter().zip(payloads) {
                    coordinator.register_participant_with_payload(
                        txn,
                        Arc::clone(participant),
                        payload,
                    )?;
                }
            }
        }
        match coordinator.prepare_transaction(txn).await? {
            PrepareOutcome::Prepared => coordinator.commit_transaction(txn).await,
            PrepareOutcome::Aborted(_) => coordinator.rollback_transaction(txn).await,
        }
    };
    let result = match tokio::time::timeout(STUCK_AFTER, drive).await {
        Ok(Ok(outcome)) => TxnResult::Finished(outcome),
        Ok(Err(e)) => TxnResult::Failed(format!("{txn}: {e}")),
        Err(_) => TxnResult::Failed(format!(
            "{txn}: no outcome after {}s (state {})",
            STUCK_AFTER.as_secs(),
            coordinator
                .get_transaction_state(txn)
                .map_or_else(|e| e.to_string(), |s| s.to_string())
        )),
    };
    let latency = started.elapsed();
    if let Client::Book(book) = client {
        book.remove(txn);
    }
    TxnRecord { latency, result }
}

/// Keeps the panics the demo injects on purpose (caught and reported by the
/// coordinator) off the terminal; other panics are printed as usual.
pub(crate) fn silence_injected_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        let injected = message.is_some_and(|m| m.starts_with(INJECTED));
        if !injected {
            default_hook(info);
        }
    }));
}
