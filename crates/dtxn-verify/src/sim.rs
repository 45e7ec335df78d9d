//! Seeded, deterministic fault simulation on tokio's paused clock.
//!
//! [`simulate`] builds a current-thread runtime whose clock is paused (time
//! jumps straight to the next timer whenever every task waits, so hangs and
//! timeouts cost no real time), derives a whole scenario from the seed —
//! coordinator timeouts and retry policy, bank accounts and balances, a few
//! concurrent transfers with their client behaviours, start times and
//! injected faults — runs it against the real [`TransactionCoordinator`],
//! waits until everything settled, and checks every invariant of
//! [`check`](crate::check).
//!
//! # Determinism
//!
//! All randomness comes from the seed: the scenario from a
//! [`fastrand::Rng`] seeded with it, and the coordinator's retry jitter
//! (drawn by each transaction's core from a generator of its own) from the
//! seed given to the coordinator
//! ([`jitter_seed`](dtxn::CoordinatorConfigBuilder::jitter_seed)). (Without
//! it about half the seeds would replay differently: jitter changes retry
//! times.) With the paused clock,
//! the same seed gives the same interleaving, the same trace and the same
//! violations, so a failing seed replays exactly. The coordinator's deadline
//! sweep walks each of its 64 table shards in `HashMap` order, which is
//! random per run, but a shard only ever holds transactions whose sequence
//! numbers agree modulo 64, and a simulation runs at most a handful of
//! transactions, so that order never comes into play here.
//!
//! # Shutdown runs
//!
//! A share of runs ([`SimParams::shutdown_share`]) ends abruptly: at a
//! random moment every client task is aborted — its calls dropped
//! mid-flight — and the last coordinator handle goes with them. The
//! coordinator must still finish what it started and roll back what no
//! client can finish; with no coordinator left to ask for reports, those
//! runs are checked against the participants' ground truth alone
//! ([`check_after_shutdown`]).
//!
//! # Crash runs
//!
//! In a share of the other runs ([`SimParams::crash_share`]) the
//! coordinator crashes. It is durable from the start: made by
//! [`TransactionCoordinator::recover`] on a [`SimDisk`] (a decision log
//! whose writes take 0–2 ms and sometimes fail, durable only once they
//! complete; its end records are lazy), every account registered under
//! its recovery key (`acct0`, …). At a random time — or exactly when a
//! chosen log write starts, or reaches the disk without the coordinator
//! hearing of it — the whole runtime is dropped: clients, the coordinator,
//! participant calls and log writes stop where they are, and the
//! coordinator's last handle goes down with them (it never shuts down
//! gracefully). The accounts survive, as real services would. A second
//! paused-clock runtime then restarts a coordinator with `recover` on the
//! same disk and a [`ParticipantRegistry`](dtxn::log::ParticipantRegistry)
//! of every account; it delivers the logged Commit decisions again. Then
//! the participants play their side of presumed abort: each live one still
//! holding a prepared change asks
//! [`outcome`](TransactionCoordinator::outcome), commits on `committed`,
//! rolls back on `aborted`, and is stuck (a violation) on anything else.
//! Some runs vary this: participants in doubt also poll the coordinator
//! before it crashes, or the restarted coordinator crashes again while it
//! delivers decisions, and a third one recovers.
//!
//! Once it settled, [`check_after_crash`](crate::check::check_after_crash)
//! checks each transaction from the ground truth: a participant told
//! `commit` before the crash means the decision had reached the log;
//! nothing mixed, nothing stuck, nothing held but by dead participants
//! (hazards, as in shutdown runs), no participant told `aborted` for a
//! Commit; and the restarted coordinator's own answer for each id. Besides:
//! the restart delivers again exactly what the log holds, finishes within
//! the retry budget, and leaves in the log exactly the decisions with a
//! participant given up on; dropping the crashed runtime reached no
//! participant; and money is conserved ([`check_ledger`]).
//! [`SimReport::crash`] says where the crash landed.
//!
//! Two runtimes cannot share `Instant`s: the [`Trace`] is moved onto the
//! new clock ([`Trace::resume`]) so its stamps run on, and the scenario is
//! drawn from the seed before either runtime exists. A crash run replays
//! exactly, like any other.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtxn::{
    CoordinatorConfig, CoordinatorConfigBuilder, RetryPolicy, TransactionCoordinator, TransactionId,
};
use tokio::time::Instant;

mod crash;

use crate::bank::{random_transfer, Bank};
use crate::check::{
    check_after_shutdown, check_ledger, check_transaction, describe, error_summary, phase2_budget,
    Bounds, ClientCall, LedgerTotals, ParticipantEvidence, TxnEvidence, TxnVerdict,
};
use crate::client::{drive, ClientPlan};
#[cfg(doc)]
use crate::disk::SimDisk;
use crate::disk::WriteEvent;
use crate::fault::{Fault, FaultCounts};
use crate::lock;
use crate::trace::{txn_label, Trace};
use crate::workload::random_fault;

/// A hook that adjusts the coordinator configuration a run derived from
/// its seed (for example to plant a bug). Applied last.
pub type Configure = fn(CoordinatorConfigBuilder) -> CoordinatorConfigBuilder;

fn unchanged(builder: CoordinatorConfigBuilder) -> CoordinatorConfigBuilder {
    builder
}

/// The shape of the scenarios [`simulate`] draws from a seed.
#[derive(Debug, Clone, Copy)]
pub struct SimParams {
    /// Concurrent transactions per run: 1 to this many.
    pub max_transactions: usize,
    /// Bank accounts: 2 to this many.
    pub max_accounts: usize,
    /// Participants per transaction: 1 to this many (at most the accounts).
    pub max_participants: usize,
    /// Probability that a given participant of a transaction gets a fault.
    pub fault_probability: f64,
    /// Share of faults that kill their participant for the rest of the run.
    pub death_share: f64,
    /// Share of clients that simply prepare and commit (the rest use the
    /// other [`ClientPlan`]s).
    pub commit_share: f64,
    /// Share of runs that end by a coordinator shutdown: at a random time
    /// every client task is aborted (dropping its calls mid-flight) and the
    /// last coordinator handle is dropped; those runs are checked with
    /// [`check_after_shutdown`].
    pub shutdown_share: f64,
    /// Share of the other runs in which the coordinator crashes: it keeps a
    /// decision log from the start, and at a random moment (or while a
    /// decision is written) its runtime is dropped with everything in it;
    /// a new coordinator recovers from the log and the participants in
    /// doubt ask it the outcome. See the [module docs](self).
    pub crash_share: f64,
    /// Slack added to the call bounds (the paused clock rounds timers up to
    /// the millisecond).
    pub slack: Duration,
    /// Adjusts the coordinator configuration.
    pub configure: Configure,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            max_transactions: 6,
            max_accounts: 6,
            max_participants: 5,
            fault_probability: 0.3,
            death_share: 0.1,
            commit_share: 0.4,
            shutdown_share: 0.1,
            crash_share: 0.1,
            slack: Duration::from_millis(2),
            configure: unchanged,
        }
    }
}

/// What one simulation found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Transactions run.
    pub transactions: usize,
    /// Of which Committed.
    pub committed: usize,
    /// Of which Aborted.
    pub aborted: usize,
    /// Participants reported as heuristic hazards.
    pub hazards: usize,
    /// Faults that fired, by kind.
    pub faults: FaultCounts,
    /// Invariant instances checked.
    pub checks: u64,
    /// Broken invariants (empty = pass).
    pub violations: Vec<String>,
    /// A description of each transaction with a violation.
    pub details: Vec<String>,
    /// What the coordinator crash found, in a crash run.
    pub crash: Option<CrashSummary>,
    /// Everything that happened, timestamped on the paused clock.
    pub trace: Vec<String>,
}

/// Where a crash run's coordinator crashed, and what its restart found.
/// `at` to `ends_lost` describe the first crash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrashSummary {
    /// When it crashed, since the run began.
    pub at: Duration,
    /// Commit decisions that had reached the log by then (ended or not).
    pub logged: usize,
    /// Log writes under way, lost with the crash.
    pub writes_in_flight: usize,
    /// Logged decisions not ended whose participants had not all
    /// acknowledged `commit`.
    pub undelivered: usize,
    /// Logged decisions every participant had acknowledged, whose end
    /// record had not reached the log (delivered once more after the
    /// restart).
    pub ends_lost: usize,
    /// Decisions the (first) restarted coordinator delivered again.
    pub redelivered: usize,
    /// Participants in doubt that learnt the outcome by asking the
    /// coordinator before it crashed.
    pub resolved_before: usize,
    /// Whether the restarted coordinator crashed too, before a third one
    /// recovered.
    pub recrashed: bool,
    /// Redelivered decisions the second crash interrupted.
    pub redelivering_at_recrash: usize,
    /// Participants in doubt after the last restart that asked the
    /// outcome.
    pub asked: usize,
    /// Of which were told `aborted` (presumed abort).
    pub presumed_aborted: usize,
}

impl SimReport {
    /// No invariant broken.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {}: {} transactions ({} committed, {} aborted, {} hazards), {} faults, {} checks, {} violations",
            self.seed,
            self.transactions,
            self.committed,
            self.aborted,
            self.hazards,
            self.faults.total(),
            self.checks,
            self.violations.len()
        )?;
        if let Some(c) = &self.crash {
            writeln!(f, "  crash: {c:?}")?;
        }
        for v in &self.violations {
            writeln!(f, "  violation: {v}")?;
        }
        for d in &self.details {
            writeln!(f, "  {d}")?;
        }
        if !self.violations.is_empty() {
            writeln!(f, "  trace:")?;
            for line in &self.trace {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}

/// One transaction of a scenario.
struct TxnSpec {
    start: Duration,
    transfer: Vec<(usize, i64)>,
    faults: Vec<Vec<Fault>>,
    plan: ClientPlan,
    client_seed: u64,
}

struct Scenario {
    config: CoordinatorConfig,
    balances: Vec<i64>,
    txns: Vec<TxnSpec>,
    /// When every client and coordinator handle goes away, if they do.
    shutdown_at: Option<Duration>,
    /// How the coordinator crashes, if it does.
    crash: Option<CrashSpec>,
}

/// How a crash run crashes (see [`crash`]).
#[derive(Debug, Clone, Copy)]
struct CrashSpec {
    /// When the coordinator crashes, unless an armed write comes first.
    at: Duration,
    /// The write to crash on, if one is armed.
    on_write: Option<(WriteEvent, u64)>,
    /// Seeds the disk's delays and failures.
    disk_seed: u64,
    /// Share of log writes that fail.
    write_failure_share: f64,
    /// How often participants in doubt ask the live coordinator the
    /// outcome before it crashes, if they do.
    poll: Option<Duration>,
    /// When, after the restart, the coordinator crashes again (while it
    /// delivers decisions again), if it does.
    recrash_after: Option<Duration>,
    /// When, after the last restart, the participants in doubt ask the
    /// outcome.
    ask_after: Duration,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn scenario(seed: u64, rng: &mut fastrand::Rng, params: &SimParams) -> Scenario {
    let prepare_timeout = ms(rng.u64(20..=100));
    let initial = ms(rng.u64(1..=20));
    let retry = RetryPolicy::new(rng.u32(1..=4), initial, initial * rng.u32(1..=4))
        .expect("valid retry policy");
    let builder = CoordinatorConfig::builder()
        .prepare_timeout(prepare_timeout)
        .phase2_timeout(ms(rng.u64(10..=60)))
        .retry(retry)
        .transaction_deadline(
            prepare_timeout
                + if rng.u8(0..10) < 3 {
                    // Tight: the deadline races phase 1 and the client.
                    ms(rng.u64(1..=30))
                } else {
                    ms(rng.u64(50..=400))
                },
        )
        .sweep_interval(ms(rng.u64(5..=50)))
        .retention_period(Duration::from_secs(3600))
        .jitter_seed(seed);
    let config = (params.configure)(builder)
        .build()
        .expect("simulation config is valid");
    let accounts = rng.usize(2..=params.max_accounts.max(2));
    let balances: Vec<i64> = (0..accounts).map(|_| rng.i64(0..=100)).collect();
    let txns = (0..rng.usize(1..=params.max_transactions.max(1)))
        .map(|_| {
            let start = ms(rng.u64(0..=50));
            let k = rng.usize(1..=params.max_participants.clamp(1, accounts));
            let transfer = random_transfer(rng, accounts, k, 60);
            let faults = transfer
                .iter()
                .map(|_| {
                    let mut faults = Vec::new();
                    // Usually none or one fault; sometimes a second one.
                    while faults.len() < 2 && rng.f64() < params.fault_probability {
                        faults.push(random_fault(rng, &config, params.death_share));
                    }
                    faults
                })
                .collect();
            TxnSpec {
                start,
                transfer,
                faults,
                plan: ClientPlan::random(rng, params.commit_share),
                client_seed: rng.u64(..),
            }
        })
        .collect();
    let shutdown_at = (rng.f64() < params.shutdown_share).then(|| ms(rng.u64(0..=150)));
    // Drawn last, so that the other runs of a seed stay what they were.
    let crash = (shutdown_at.is_none() && rng.f64() < params.crash_share).then(|| {
        let on_write = match rng.u8(0..6) {
            0 => Some((WriteEvent::Starts, rng.u64(1..=3))),
            1 => Some((WriteEvent::Lands, rng.u64(1..=3))),
            _ => None,
        };
        CrashSpec {
            // With a write armed, a late crash in case it never comes.
            at: if on_write.is_some() {
                ms(400)
            } else {
                ms(rng.u64(0..=300))
            },
            on_write,
            disk_seed: rng.u64(..),
            write_failure_share: if rng.u8(0..4) == 0 { 0.3 } else { 0.0 },
            poll: rng.bool().then(|| ms(rng.u64(5..=40))),
            recrash_after: (rng.u8(0..4) == 0).then(|| ms(rng.u64(0..=60))),
            ask_after: ms(rng.u64(0..=60)),
        }
    });
    Scenario {
        config,
        balances,
        txns,
        shutdown_at,
        crash,
    }
}

/// Runs the scenario of `seed` on a fresh paused-clock runtime (two for a
/// crash run) and checks it. Deterministic: the same seed and params give
/// the same report.
pub fn simulate(seed: u64, params: &SimParams) -> SimReport {
    let mut rng = fastrand::Rng::with_seed(seed);
    let scenario = scenario(seed, &mut rng, params);
    match scenario.crash {
        Some(crash) => crash::run(seed, &scenario, crash),
        None => paused_runtime().block_on(run(seed, params, &scenario)),
    }
}

/// A current-thread runtime on a paused clock.
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
}

/// A transaction a client began, and the participants it registered so
/// far (a client aborted by a shutdown may have registered only some).
struct Begun {
    spec: usize,
    txn: TransactionId,
    registered: Vec<(usize, i64)>,
}

/// A client task's result: its calls, or why it could not run.
type ClientTask = tokio::task::JoinHandle<Result<Vec<ClientCall>, String>>;

/// Spawns the client of every transaction of `scenario`: each begins its
/// transaction at its start time, stages and registers its accounts (with
/// their faults), noting them in `begun`, then follows its plan.
fn spawn_clients(
    coordinator: &TransactionCoordinator,
    scenario: &Scenario,
    bank: &Arc<Bank>,
    trace: &Trace,
    begun: &Arc<Mutex<Vec<Begun>>>,
) -> Vec<ClientTask> {
    let mut tasks = Vec::new();
    for (index, spec) in scenario.txns.iter().enumerate() {
        let c = coordinator.clone();
        let bank = Arc::clone(bank);
        let trace = trace.clone();
        let begun = Arc::clone(begun);
        let start = spec.start;
        let transfer = spec.transfer.clone();
        let faults = spec.faults.clone();
        let plan = spec.plan;
        let client_seed = spec.client_seed;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(start).await;
            let txn = c
                .begin_transaction()
                .map_err(|e| format!("begin: {}", error_summary(&e)))?;
            trace.log(format_args!(
                "client {} begins: transfer {transfer:?}, faults {faults:?}",
                txn_label(txn)
            ));
            let slot = {
                let mut begun = lock(&begun);
                begun.push(Begun {
                    spec: index,
                    txn,
                    registered: Vec::new(),
                });
                begun.len() - 1
            };
            for ((account, delta), faults) in transfer.iter().zip(&faults) {
                let p = bank.account(*account);
                p.resource().stage(txn, *delta);
                for fault in faults {
                    p.plan(txn, *fault);
                }
                c.register_participant(txn, Arc::clone(p) as Arc<dyn dtxn::Participant>)
                    .map_err(|e| format!("{}: register: {}", txn_label(txn), error_summary(&e)))?;
                lock(&begun)[slot].registered.push((*account, *delta));
            }
            let mut rng = fastrand::Rng::with_seed(client_seed);
            Ok::<Vec<ClientCall>, String>(
                drive(&c, txn, plan, &mut rng, ms(30), Some(&trace)).await,
            )
        }));
    }
    tasks
}

async fn run(seed: u64, params: &SimParams, scenario: &Scenario) -> SimReport {
    let config = scenario.config.clone();
    let trace = Trace::new();
    trace.log(format_args!("seed {seed}: {config:?}"));
    let bank = Arc::new(Bank::new(scenario.balances.iter().copied(), Some(&trace)));
    trace.log(format_args!("balances {:?}", scenario.balances));
    let coordinator = TransactionCoordinator::with_config(config.clone());
    let mut report = SimReport {
        seed,
        transactions: scenario.txns.len(),
        ..SimReport::default()
    };
    let begun: Arc<Mutex<Vec<Begun>>> = Arc::default();
    let tasks = spawn_clients(&coordinator, scenario, &bank, &trace, &begun);
    if let Some(at) = scenario.shutdown_at {
        // Every client goes away at once, mid-call or not, and with them
        // every coordinator handle.
        tokio::time::sleep(at).await;
        trace.log(format_args!(
            "shutdown: clients aborted, coordinator dropped"
        ));
        for task in &tasks {
            task.abort();
        }
    }
    let mut calls_by_spec: Vec<Vec<ClientCall>> = vec![Vec::new(); scenario.txns.len()];
    for (index, task) in tasks.into_iter().enumerate() {
        match task.await {
            Ok(Ok(calls)) => calls_by_spec[index] = calls,
            Ok(Err(e)) => report.violations.push(format!("client: {e}")),
            Err(e) if e.is_cancelled() => {}
            Err(e) => report.violations.push(format!("client task failed: {e}")),
        }
    }
    let begun = std::mem::take(&mut *lock(&begun));
    report.transactions = begun.len();
    let budget = phase2_budget(&config);

    if scenario.shutdown_at.is_some() {
        drop(coordinator);
        // No sweeper any more: only the protocol runs already started.
        tokio::time::sleep(config.prepare_timeout() + 2 * budget + ms(100)).await;
        trace.log(format_args!("settled; checking"));
        let mut in_doubt = 0;
        let mut held = 0;
        for b in &begun {
            let participants = evidence_of(&bank, b.txn, &b.registered);
            let label = format!(
                "{} (client {:?}, coordinator shut down)",
                txn_label(b.txn),
                scenario.txns[b.spec].plan
            );
            let verdict = check_after_shutdown(&label, &participants);
            in_doubt += verdict.in_doubt;
            held += verdict.held;
            absorb(&mut report, &verdict);
            if !verdict.violations.is_empty() {
                report.details.push(format!("{label}: {participants:?}"));
                report.violations.extend(verdict.violations);
            }
        }
        finish(&mut report, &bank, in_doubt, held, &trace);
        return report;
    }

    // Let deadlines, rollbacks and retries finish, then let any stray late
    // call land before looking.
    let horizon = config.transaction_deadline()
        + config.sweep_interval()
        + config.prepare_timeout()
        + budget
        + ms(100);
    let waited = Instant::now();
    while coordinator.stats().unfinished > 0 && waited.elapsed() < horizon {
        tokio::time::sleep(config.sweep_interval()).await;
    }
    tokio::time::sleep(config.prepare_timeout() + budget).await;
    trace.log(format_args!("settled; checking"));

    let unfinished = coordinator.stats().unfinished;
    report.checks += 1;
    if unfinished != 0 {
        report.violations.push(format!(
            "coordinator: {unfinished} transactions still unfinished {horizon:?} after the last client finished"
        ));
    }
    let bounds = Bounds::for_config(&config, params.slack);
    let mut in_doubt = 0;
    let mut held = 0;
    for b in &begun {
        let spec = &scenario.txns[b.spec];
        let evidence = TxnEvidence {
            label: format!("{} (client {:?})", txn_label(b.txn), spec.plan),
            txn: b.txn,
            participants: evidence_of(&bank, b.txn, &b.registered),
            report: coordinator.transaction_report(b.txn),
            calls: std::mem::take(&mut calls_by_spec[b.spec]),
        };
        let verdict = check_transaction(&evidence, &bounds);
        in_doubt += verdict.in_doubt;
        held += verdict.held;
        absorb(&mut report, &verdict);
        if !verdict.violations.is_empty() {
            report.details.push(describe(&evidence));
            report.violations.extend(verdict.violations);
        }
    }
    drop(coordinator);
    finish(&mut report, &bank, in_doubt, held, &trace);
    report
}

fn evidence_of(
    bank: &Bank,
    txn: TransactionId,
    registered: &[(usize, i64)],
) -> Vec<ParticipantEvidence> {
    registered
        .iter()
        .map(|&(account, delta)| {
            let p = bank.account(account);
            ParticipantEvidence {
                name: format!("acct{account}"),
                delta,
                record: p.record(txn),
                held: p.resource().held(txn),
            }
        })
        .collect()
}

fn absorb(report: &mut SimReport, verdict: &TxnVerdict) {
    match verdict.decision {
        Some(dtxn::Decision::Commit) => report.committed += 1,
        Some(dtxn::Decision::Abort) => report.aborted += 1,
        None => {}
    }
    report.hazards += verdict.hazards;
    report.checks += verdict.checks;
}

/// The run-wide checks: the ledger, and the fault counts and trace.
fn finish(report: &mut SimReport, bank: &Bank, in_doubt: i64, held: i64, trace: &Trace) {
    let totals = LedgerTotals {
        opening: bank.initial_total(),
        closing: bank.total(),
        in_doubt,
        held_by_transactions: held,
        held_in_accounts: bank.held_total(),
        lowest_balance: bank
            .accounts()
            .iter()
            .map(|a| a.resource().balance())
            .min()
            .unwrap_or(0),
    };
    let (ledger, checks) = check_ledger(&totals);
    report.checks += checks;
    report.violations.extend(ledger);
    report.faults = bank.faults_fired();
    report.trace = trace.lines();
}
