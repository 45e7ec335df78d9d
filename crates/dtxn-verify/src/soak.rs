//! The chaos soak: many bank transfers at high concurrency on a
//! multi-thread runtime with the real clock, random participant counts and
//! random faults, every transaction checked as it finishes and the ledger
//! checked at the end.
//!
//! Unlike [`simulate`](crate::simulate) a soak is not reproducible: the
//! seed shapes the workload, but the interleaving depends on the operating
//! system's scheduling. What it adds is real parallelism (two or more
//! worker threads racing on the coordinator's table and the accounts),
//! realistic scale (up to 1000 concurrent transactions of up to 100
//! participants) and real timers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtxn::{CoordinatorConfig, CoordinatorError, Decision, RetryPolicy, TransactionCoordinator};
use tokio::sync::Semaphore;

use crate::bank::{random_transfer, Bank};
use crate::check::{
    check_ledger, check_transaction, describe, error_summary, phase2_budget, Bounds, LedgerTotals,
    ParticipantEvidence, TxnEvidence,
};
use crate::client::{drive, wait_terminal, ClientPlan};
use crate::fault::{FaultCounts, FaultKind};
use crate::lock;
use crate::sim::Configure;
use crate::trace::txn_label;
use crate::workload::random_fault;

fn unchanged(b: dtxn::CoordinatorConfigBuilder) -> dtxn::CoordinatorConfigBuilder {
    b
}

/// The shape of a soak run.
#[derive(Debug, Clone, Copy)]
pub struct SoakParams {
    /// Transactions to run.
    pub transactions: usize,
    /// Transactions in flight at once (the coordinator's
    /// `max_transactions` is set above it).
    pub concurrency: usize,
    /// Participants per transaction: 1 to this many (at most 100, the
    /// coordinator's default limit, unless `configure` raises it).
    pub max_participants: usize,
    /// Bank accounts (at least `max_participants`).
    pub accounts: usize,
    /// Opening balance of every account.
    pub opening_balance: i64,
    /// Probability that a transaction gets faults (1 to 3 of its
    /// participants).
    pub fault_rate: f64,
    /// Share of faults that kill their participant.
    pub death_share: f64,
    /// Participants that may die over the whole run (a dead account fails
    /// every later transaction it joins, so keep this small).
    pub max_deaths: usize,
    /// Share of clients that simply prepare and commit.
    pub commit_share: f64,
    /// Runtime worker threads.
    pub worker_threads: usize,
    /// Seeds the workload (not the interleaving).
    pub seed: u64,
    /// Coordinator prepare timeout.
    pub prepare_timeout: Duration,
    /// Coordinator phase-2 timeout.
    pub phase2_timeout: Duration,
    /// Coordinator retry policy.
    pub retry: RetryPolicy,
    /// Coordinator transaction deadline.
    pub deadline: Duration,
    /// Coordinator sweep interval.
    pub sweep_interval: Duration,
    /// Fixed slack added to the call bounds for scheduling noise. On top of
    /// it, each bound allows `2 · max_attempts + 2` times the largest
    /// scheduler lag measured so far (see [`SoakReport::max_scheduler_lag_ms`]):
    /// a saturated runtime delays every task wake-up and timer of a call's
    /// path, which is the machine's limit, not the coordinator's.
    pub slack: Duration,
    /// Adjusts the coordinator configuration (applied last).
    pub configure: Configure,
}

impl Default for SoakParams {
    fn default() -> Self {
        Self {
            transactions: 10_000,
            concurrency: 1000,
            max_participants: 100,
            accounts: 500,
            opening_balance: 1_000,
            fault_rate: 0.2,
            death_share: 0.05,
            max_deaths: 2,
            commit_share: 0.8,
            worker_threads: std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2),
            seed: 1,
            prepare_timeout: Duration::from_millis(200),
            phase2_timeout: Duration::from_millis(100),
            retry: RetryPolicy::new(3, Duration::from_millis(5), Duration::from_millis(20))
                .expect("valid retry policy"),
            deadline: Duration::from_secs(2),
            sweep_interval: Duration::from_millis(50),
            slack: Duration::from_secs(1),
            configure: unchanged,
        }
    }
}

/// What a soak run did and found. Serializes to one JSON object with the
/// counts; `"violations"` is the number of violations, whose messages (the
/// first [`MAX_MESSAGES`]) stay in [`messages`](Self::messages) for
/// printing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SoakReport {
    /// The workload seed.
    pub seed: u64,
    /// Transactions run.
    pub transactions: u64,
    /// Committed.
    pub committed: u64,
    /// Aborted.
    pub aborted: u64,
    /// Not finished when checked (each is also a violation).
    pub unfinished: u64,
    /// Participants reported as heuristic hazards, over all transactions.
    pub hazards: u64,
    /// Transactions with at least one hazard.
    pub transactions_with_hazards: u64,
    /// Money in doubt: the net of the transfer legs that participants
    /// lost after a Commit (heuristic hazards) never applied, so that
    /// closing total + `in_doubt` = opening total; negative when the
    /// accounts end with more than they should (see
    /// [`check`](crate::check)). An operator would repair it by hand.
    pub in_doubt: i64,
    /// Money still reserved at the end by hazard participants (they never
    /// learned the outcome, so never released their holds).
    pub held: i64,
    /// Faults that fired, by kind.
    pub faults: FaultCounts,
    /// Invariant instances checked.
    pub invariants_checked: u64,
    /// Wall-clock duration of the run, in milliseconds.
    pub elapsed_ms: u64,
    /// The largest lateness of a 10 ms probe timer during the run, in
    /// milliseconds: how long a woken task waited for a worker thread.
    pub max_scheduler_lag_ms: u64,
    /// Broken invariants.
    #[serde(rename = "violations")]
    pub violation_count: u64,
    /// The first violation messages, each followed by a description of its
    /// transaction.
    #[serde(skip)]
    pub messages: Vec<String>,
}

impl SoakReport {
    /// No invariant broken.
    pub fn passed(&self) -> bool {
        self.violation_count == 0
    }
}

/// At most this many violation messages are kept in
/// [`SoakReport::messages`] (the count goes on).
pub const MAX_MESSAGES: usize = 100;

#[derive(Default)]
struct Totals {
    report: SoakReport,
    held: i64,
}

impl Totals {
    fn violation(&mut self, message: String) {
        self.report.violation_count += 1;
        self.note(message);
    }

    fn note(&mut self, message: String) {
        if self.report.messages.len() < MAX_MESSAGES {
            self.report.messages.push(message);
        }
    }
}

/// Runs a soak on a fresh multi-thread runtime (blocking the caller until
/// done).
pub fn soak(params: &SoakParams) -> SoakReport {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(params.worker_threads.max(1))
        .enable_time()
        .build()
        .expect("a multi-thread runtime");
    let started = std::time::Instant::now();
    let mut report = runtime.block_on(run(*params));
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

async fn run(params: SoakParams) -> SoakReport {
    let concurrency = params.concurrency.max(1);
    let config = (params.configure)(
        CoordinatorConfig::builder()
            .max_transactions(concurrency * 2)
            .prepare_timeout(params.prepare_timeout)
            .phase2_timeout(params.phase2_timeout)
            .retry(params.retry)
            .transaction_deadline(params.deadline)
            .sweep_interval(params.sweep_interval)
            .retention_period(Duration::from_secs(3600))
            .retention_count(concurrency * 4),
    )
    .build()
    .expect("soak config is valid");
    let accounts = params.accounts.max(params.max_participants).max(1);
    let bank = Arc::new(Bank::new(
        std::iter::repeat_n(params.opening_balance, accounts),
        None,
    ));
    let coordinator = TransactionCoordinator::with_config(config.clone());
    let lag = Arc::new(AtomicU64::new(0));
    let probe = tokio::spawn(measure_lag(Arc::clone(&lag)));
    let wait_limit = config.transaction_deadline()
        + config.sweep_interval()
        + config.prepare_timeout()
        + phase2_budget(&config);
    let totals = Arc::new(Mutex::new(Totals::default()));
    let deaths = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut rng = fastrand::Rng::with_seed(params.seed);

    for _ in 0..params.transactions {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let seed = rng.u64(..);
        let coordinator = coordinator.clone();
        let bank = Arc::clone(&bank);
        let totals = Arc::clone(&totals);
        let deaths = Arc::clone(&deaths);
        let config = config.clone();
        let lag = Arc::clone(&lag);
        tokio::spawn(async move {
            let _permit = permit;
            let mut rng = fastrand::Rng::with_seed(seed);
            let outcome = one_transaction(
                &coordinator,
                &bank,
                &config,
                &params,
                &lag,
                wait_limit,
                &deaths,
                &mut rng,
            )
            .await;
            let mut totals = lock(&totals);
            totals.report.transactions += 1;
            match outcome {
                Ok((verdict, evidence)) => {
                    let r = &mut totals.report;
                    match (verdict.finished, verdict.decision) {
                        (true, Some(Decision::Commit)) => r.committed += 1,
                        (true, Some(Decision::Abort)) => r.aborted += 1,
                        _ => r.unfinished += 1,
                    }
                    r.hazards += verdict.hazards as u64;
                    r.transactions_with_hazards += u64::from(verdict.hazards > 0);
                    r.in_doubt += verdict.in_doubt;
                    r.invariants_checked += verdict.checks;
                    totals.held += verdict.held;
                    if !verdict.violations.is_empty() {
                        let detail = describe(&evidence);
                        for v in verdict.violations {
                            totals.violation(v);
                        }
                        totals.note(format!("  {detail}"));
                    }
                }
                Err(message) => totals.violation(message),
            }
        });
    }
    // Wait for every transaction task.
    let _all = permits
        .acquire_many(concurrency as u32)
        .await
        .expect("the semaphore is never closed");

    probe.abort();
    let mut totals = std::mem::take(&mut *lock(&totals));
    totals.report.max_scheduler_lag_ms = lag.load(Ordering::Relaxed) / 1000;
    let unfinished = coordinator.stats().unfinished;
    totals.report.invariants_checked += 1;
    if unfinished != 0 {
        totals.violation(format!(
            "coordinator: {unfinished} transactions unfinished after every client finished"
        ));
    }
    let ledger = LedgerTotals {
        opening: bank.initial_total(),
        closing: bank.total(),
        in_doubt: totals.report.in_doubt,
        held_by_transactions: totals.held,
        held_in_accounts: bank.held_total(),
        lowest_balance: bank
            .accounts()
            .iter()
            .map(|a| a.resource().balance())
            .min()
            .unwrap_or(0),
    };
    let (violations, checks) = check_ledger(&ledger);
    totals.report.invariants_checked += checks;
    for v in violations {
        totals.violation(v);
    }
    totals.report.held = totals.held;
    totals.report.faults = bank.faults_fired();
    totals.report.seed = params.seed;
    totals.report
}

/// Records in `lag` (microseconds) the largest lateness of a 10 ms timer.
async fn measure_lag(lag: Arc<AtomicU64>) {
    let period = Duration::from_millis(10);
    loop {
        let start = tokio::time::Instant::now();
        tokio::time::sleep(period).await;
        let late = start.elapsed().saturating_sub(period);
        lag.fetch_max(late.as_micros() as u64, Ordering::Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
async fn one_transaction(
    coordinator: &TransactionCoordinator,
    bank: &Bank,
    config: &CoordinatorConfig,
    params: &SoakParams,
    lag: &AtomicU64,
    wait_limit: Duration,
    deaths: &AtomicUsize,
    rng: &mut fastrand::Rng,
) -> Result<(crate::check::TxnVerdict, TxnEvidence), String> {
    let accounts = bank.accounts().len();
    let txn = loop {
        match coordinator.begin_transaction() {
            Ok(txn) => break txn,
            // A finished transaction frees its slot just after its state
            // is published; wait for the counter to catch up.
            Err(CoordinatorError::CapacityExceeded { .. }) => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(e) => return Err(format!("begin: {}", error_summary(&e))),
        }
    };
    let k = rng.usize(1..=params.max_participants.clamp(1, accounts));
    let transfer = random_transfer(rng, accounts, k, 20);
    let mut faults = vec![Vec::new(); k];
    if rng.f64() < params.fault_rate {
        for _ in 0..rng.usize(1..=3.min(k)) {
            let mut fault = random_fault(rng, config, params.death_share);
            if matches!(fault.kind, FaultKind::Die(_))
                && deaths.fetch_add(1, Ordering::Relaxed) >= params.max_deaths
            {
                fault.kind = FaultKind::Hang;
            }
            faults[rng.usize(..k)].push(fault);
        }
    }
    for ((account, delta), faults) in transfer.iter().zip(&faults) {
        let p = bank.account(*account);
        p.resource().stage(txn, *delta);
        for fault in faults {
            p.plan(txn, *fault);
        }
        coordinator
            .register_participant(txn, Arc::clone(p) as Arc<dyn dtxn::Participant>)
            .map_err(|e| format!("{}: register: {}", txn_label(txn), error_summary(&e)))?;
    }
    let plan = ClientPlan::random(rng, params.commit_share);
    let calls = drive(coordinator, txn, plan, rng, Duration::from_millis(5), None).await;
    // Wait for the end, allowing for the scheduler lag as the bounds do.
    let hops = 2 * config.retry().max_attempts() + 2;
    let allowance = || params.slack + Duration::from_micros(lag.load(Ordering::Relaxed)) * hops;
    let waiting = tokio::time::Instant::now();
    while !wait_terminal(coordinator, txn, Duration::from_millis(5), Duration::ZERO).await
        && waiting.elapsed() < wait_limit + allowance()
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let evidence = TxnEvidence {
        label: format!("{} (client {plan:?})", txn_label(txn)),
        txn,
        participants: transfer
            .iter()
            .map(|&(account, delta)| {
                let p = bank.account(account);
                let evidence = ParticipantEvidence {
                    name: format!("acct{account}"),
                    delta,
                    record: p.take_record(txn),
                    held: p.resource().held(txn),
                };
                p.resource().forget(txn);
                evidence
            })
            .collect(),
        report: coordinator.transaction_report(txn),
        calls,
    };
    let bounds = Bounds::for_config(config, allowance());
    Ok((check_transaction(&evidence, &bounds), evidence))
}
