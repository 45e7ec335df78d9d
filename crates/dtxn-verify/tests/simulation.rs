//! Seeded fault simulation of the real coordinator on tokio's paused clock
//! (see `dtxn_verify::sim`), plus a short chaos soak.
//!
//! * `every_seed_keeps_every_invariant` runs `DTXN_SIM_SEEDS` seeds
//!   (default 30 000, a tenth of them crash runs) starting at
//!   `DTXN_SIM_FIRST_SEED` (default 0) on all cores, and prints each
//!   failing seed with the command that replays it.
//! * `replay_one_seed` replays `DTXN_SIM_SEED` (default 0) with its full
//!   trace: `DTXN_SIM_SEED=1234 DTXN_SIM_SHUTDOWN_SHARE=0 cargo test -p
//!   dtxn-verify --test simulation replay_one_seed -- --nocapture` (a share
//!   of 1 replays the seeds of the shutdown sweep; `DTXN_SIM_CRASH_SHARE`,
//!   default 0.1, likewise for crash runs). Failing sweeps print the
//!   command with both shares.
//! * `short_soak_keeps_every_invariant` runs a chaos soak of
//!   `DTXN_SOAK_TRANSACTIONS` (default 300) transactions at
//!   `DTXN_SOAK_CONCURRENCY` (default 100) on two worker threads.
//! * `every_seed_survives_a_coordinator_crash_and_restart` runs
//!   `DTXN_SIM_CRASH_SEEDS` (default 2 000) crash runs: the coordinator,
//!   on a decision log, crashes and a new one recovers; it requires the
//!   crashes to land at every interesting point (before any decision is
//!   durable, while one is written, before it reached everyone, before its
//!   end record), so it cannot pass vacuously. Replay one with
//!   `DTXN_SIM_CRASH_SHARE=1` (and `DTXN_SIM_SHUTDOWN_SHARE=0`).
//! * The `catches_*` tests plant each deliberate protocol bug and require
//!   some seed among a modest number to report it, so the checkers cannot
//!   pass vacuously.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dtxn::core::PlantedBug;
use dtxn_verify::sim::Configure;
use dtxn_verify::{
    silence_injected_panics, simulate, soak, CrashSummary, SimParams, SimReport, SoakParams,
};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an integer, got {v:?}")),
        Err(_) => default,
    }
}

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        Err(_) => default,
    }
}

/// The params of the main sweep and of `replay_one_seed`: the defaults,
/// with the shares of shutdown runs (`DTXN_SIM_SHUTDOWN_SHARE`, default
/// `shutdown_share`) and crash runs (`DTXN_SIM_CRASH_SHARE`, default
/// `SimParams::default().crash_share`) given, so a seed means the same
/// scenario in both.
fn params(shutdown_share: f64) -> SimParams {
    SimParams {
        shutdown_share: env_f64("DTXN_SIM_SHUTDOWN_SHARE", shutdown_share),
        crash_share: env_f64("DTXN_SIM_CRASH_SHARE", SimParams::default().crash_share),
        ..SimParams::default()
    }
}

fn replay_command(seed: u64, params: &SimParams) -> String {
    format!(
        "DTXN_SIM_SEED={seed} DTXN_SIM_SHUTDOWN_SHARE={} DTXN_SIM_CRASH_SHARE={} cargo test -p dtxn-verify --test simulation replay_one_seed -- --nocapture",
        params.shutdown_share, params.crash_share
    )
}

/// Runs `seeds` on every core, stopping early once `stop_after` failures
/// were found. Returns the failing reports (by seed) and the passing count.
fn sweep(
    seeds: std::ops::Range<u64>,
    params: &SimParams,
    stop_after: usize,
) -> (Vec<SimReport>, Aggregate) {
    silence_injected_panics();
    let next = AtomicU64::new(seeds.start);
    let failures = Mutex::new(Vec::new());
    let total = Mutex::new(Aggregate::default());
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let mut local = Aggregate::default();
                loop {
                    if failures.lock().unwrap().len() >= stop_after {
                        break;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let report = simulate(seed, params);
                    local.add(&report);
                    if !report.passed() {
                        failures.lock().unwrap().push(report);
                    }
                }
                total.lock().unwrap().merge(&local);
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|r| r.seed);
    (failures, total.into_inner().unwrap())
}

#[derive(Debug, Default)]
struct Aggregate {
    seeds: u64,
    transactions: u64,
    committed: u64,
    aborted: u64,
    hazards: u64,
    checks: u64,
    faults: dtxn_verify::FaultCounts,
    crashes: CrashCounts,
}

/// Where the crash runs crashed: runs counted by what the crash found.
#[derive(Debug, Default)]
struct CrashCounts {
    /// Crash runs.
    runs: u64,
    /// No Commit decision had reached the log.
    before_any_logged: u64,
    /// A log write was under way (and lost).
    write_in_flight: u64,
    /// A logged decision had not reached every participant.
    logged_undelivered: u64,
    /// Every participant had acknowledged, the end record was lost.
    end_lost: u64,
    /// The restart delivered a decision again.
    redelivered: u64,
    /// A participant in doubt was told `aborted` (presumed abort).
    presumed_abort: u64,
    /// A participant in doubt was told `committed`.
    told_committed: u64,
    /// A participant in doubt learnt the outcome before the crash.
    resolved_before: u64,
    /// The restarted coordinator crashed again while delivering decisions.
    recrashed_redelivering: u64,
}

impl CrashCounts {
    fn add(&mut self, c: &CrashSummary) {
        self.runs += 1;
        self.before_any_logged += u64::from(c.logged == 0);
        self.write_in_flight += u64::from(c.writes_in_flight > 0);
        self.logged_undelivered += u64::from(c.undelivered > 0);
        self.end_lost += u64::from(c.ends_lost > 0);
        self.redelivered += u64::from(c.redelivered > 0);
        self.presumed_abort += u64::from(c.presumed_aborted > 0);
        self.told_committed += u64::from(c.asked > c.presumed_aborted);
        self.resolved_before += u64::from(c.resolved_before > 0);
        self.recrashed_redelivering += u64::from(c.recrashed && c.redelivering_at_recrash > 0);
    }
    fn merge(&mut self, o: &CrashCounts) {
        self.runs += o.runs;
        self.before_any_logged += o.before_any_logged;
        self.write_in_flight += o.write_in_flight;
        self.logged_undelivered += o.logged_undelivered;
        self.end_lost += o.end_lost;
        self.redelivered += o.redelivered;
        self.presumed_abort += o.presumed_abort;
        self.told_committed += o.told_committed;
        self.resolved_before += o.resolved_before;
        self.recrashed_redelivering += o.recrashed_redelivering;
    }
}

impl Aggregate {
    fn add(&mut self, r: &SimReport) {
        self.seeds += 1;
        self.transactions += r.transactions as u64;
        self.committed += r.committed as u64;
        self.aborted += r.aborted as u64;
        self.hazards += r.hazards as u64;
        self.checks += r.checks;
        self.faults.add(&r.faults);
        if let Some(c) = &r.crash {
            self.crashes.add(c);
        }
    }
    fn merge(&mut self, o: &Aggregate) {
        self.seeds += o.seeds;
        self.transactions += o.transactions;
        self.committed += o.committed;
        self.aborted += o.aborted;
        self.hazards += o.hazards;
        self.checks += o.checks;
        self.faults.add(&o.faults);
        self.crashes.merge(&o.crashes);
    }
}

#[test]
fn every_seed_keeps_every_invariant() {
    let first = env_u64("DTXN_SIM_FIRST_SEED", 0);
    let count = env_u64("DTXN_SIM_SEEDS", 30_000);
    let started = Instant::now();
    // Shutdown runs have their own test below; crash runs are in (and
    // have their own test too).
    let params = params(0.0);
    let (failures, total) = sweep(first..first + count, &params, 20);
    eprintln!(
        "simulated seeds {first}..{} in {:.1?}: {total:?}",
        first + count,
        started.elapsed()
    );
    for report in failures.iter().take(3) {
        eprintln!("{report}");
    }
    let seeds: Vec<u64> = failures.iter().map(|r| r.seed).collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds (first 20): {seeds:?}\nreplay one with: {}",
        seeds.len(),
        replay_command(seeds[0], &params)
    );
    // The sweep must actually exercise the protocol, or passing means little.
    assert_eq!(total.seeds, count);
    assert!(total.committed > 0 && total.aborted > 0, "{total:?}");
    let f = total.faults;
    assert!(
        count < 1000 || (f.error > 0 && f.panic > 0 && f.hang > 0 && f.death > 0 && f.slow > 0),
        "every fault kind fires somewhere: {total:?}"
    );
    assert!(count < 1000 || total.hazards > 0, "{total:?}");
    assert!(
        count < 1000 || params.crash_share == 0.0 || total.crashes.runs > 0,
        "{total:?}"
    );
}

#[test]
fn replay_one_seed() {
    silence_injected_panics();
    let seed = env_u64("DTXN_SIM_SEED", 0);
    let report = simulate(seed, &params(0.0));
    if report.crash.is_some() {
        eprintln!("(a crash run)");
    }
    // A failing report prints its own trace.
    eprintln!("{report}");
    if report.passed() && std::env::var_os("DTXN_SIM_SEED").is_some() {
        for line in &report.trace {
            eprintln!("    {line}");
        }
    }
    assert!(report.passed(), "seed {seed} failed (report above)");
}

#[test]
fn same_seed_replays_identically() {
    silence_injected_panics();
    // Shutdown and crash runs included: dropping handles, or a whole
    // runtime, must not break replay.
    let params = SimParams {
        shutdown_share: 0.2,
        crash_share: 0.3,
        ..SimParams::default()
    };
    let mut differing = Vec::new();
    let mut crashes = 0;
    for seed in 0..env_u64("DTXN_SIM_REPLAY_SEEDS", 1_000) {
        let a = simulate(seed, &params);
        let b = simulate(seed, &params);
        crashes += u64::from(a.crash.is_some());
        if a != b {
            differing.push(seed);
        }
    }
    assert!(
        differing.is_empty(),
        "these seeds did not replay identically: {differing:?}"
    );
    assert!(crashes > 0, "no crash run was replayed");
}

#[test]
fn every_seed_survives_a_coordinator_shutdown() {
    let count = env_u64("DTXN_SIM_SHUTDOWN_SEEDS", 3_000);
    let params = SimParams {
        shutdown_share: 1.0,
        ..SimParams::default()
    };
    let (failures, total) = sweep(0..count, &params, 20);
    eprintln!("shutdown seeds 0..{count}: {total:?}");
    for report in failures.iter().take(2) {
        eprintln!("{report}");
    }
    let seeds: Vec<u64> = failures.iter().map(|r| r.seed).collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds (first 20): {seeds:?}\nreplay one with: {}",
        seeds.len(),
        replay_command(seeds[0], &params)
    );
}

/// Every run crashes its coordinator (on a decision log) and restarts it:
/// nothing mixed, nothing stuck, money conserved, presumed abort never
/// contradicting a commit. The crash must land at interesting points often
/// enough — before any decision is durable, while one is written, once one
/// is durable but not delivered to everyone, after everyone acknowledged
/// but before the end record — or passing would mean little.
#[test]
fn every_seed_survives_a_coordinator_crash_and_restart() {
    let count = env_u64("DTXN_SIM_CRASH_SEEDS", 2_000);
    let started = Instant::now();
    let params = SimParams {
        shutdown_share: 0.0,
        crash_share: 1.0,
        ..SimParams::default()
    };
    let (failures, total) = sweep(0..count, &params, 20);
    eprintln!(
        "crash seeds 0..{count} in {:.1?}: {total:?}",
        started.elapsed()
    );
    for report in failures.iter().take(2) {
        eprintln!("{report}");
    }
    let seeds: Vec<u64> = failures.iter().map(|r| r.seed).collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds (first 20): {seeds:?}\nreplay one with: {}",
        seeds.len(),
        replay_command(seeds[0], &params)
    );
    let c = &total.crashes;
    assert_eq!(c.runs, count, "every run crashed");
    if count >= 1000 {
        assert!(c.before_any_logged > 0, "{c:?}");
        assert!(c.write_in_flight > 0, "{c:?}");
        assert!(c.logged_undelivered > 0, "{c:?}");
        assert!(c.end_lost > 0, "{c:?}");
        assert!(c.redelivered > 0, "{c:?}");
        assert!(c.presumed_abort > 0 && c.told_committed > 0, "{c:?}");
        assert!(
            c.resolved_before > 0 && c.recrashed_redelivering > 0,
            "{c:?}"
        );
        assert!(
            total.committed > 0 && total.aborted > 0 && total.hazards > 0,
            "{total:?}"
        );
    }
}

/// The smallest reproduction of what `every_seed_survives_a_coordinator_shutdown`
/// finds: the client gives up on `prepare_transaction` (its future is
/// dropped) and drops the last coordinator handle while a slow participant
/// is still preparing. The shutdown sweep only rolls back Active and
/// Prepared transactions and the sweeper then exits, so once phase 1 ends
/// the transaction sits in Prepared forever: its participants keep their
/// reservations and never hear `rollback` (rules 12 and 13).
#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_while_preparing_still_rolls_back() {
    use std::sync::Arc;

    use dtxn::{CoordinatorConfig, Participant, TransactionCoordinator};
    use dtxn_verify::{Account, CrashPoint, Fault, FaultKind, FaultyParticipant};

    let c = TransactionCoordinator::with_config(
        CoordinatorConfig::builder()
            .prepare_timeout(Duration::from_millis(100))
            .transaction_deadline(Duration::from_millis(500))
            .build()
            .unwrap(),
    );
    let txn = c.begin_transaction().unwrap();
    let fast = Arc::new(FaultyParticipant::new("fast", Account::new(100)));
    let slow = Arc::new(FaultyParticipant::new("slow", Account::new(100)));
    fast.resource().stage(txn, -10);
    slow.resource().stage(txn, 10);
    slow.plan(
        txn,
        Fault::new(
            CrashPoint::BeforePrepare,
            FaultKind::Slow(Duration::from_millis(50)),
        ),
    );
    for p in [&fast, &slow] {
        c.register_participant(txn, Arc::clone(p) as Arc<dyn Participant>)
            .unwrap();
    }
    // The client gives up on phase 1 after 10 ms and goes away.
    let gave_up = tokio::time::timeout(Duration::from_millis(10), c.prepare_transaction(txn)).await;
    assert!(gave_up.is_err());
    drop(c);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    for p in [&fast, &slow] {
        let record = p.record(txn);
        assert_eq!(
            record.rollback_calls,
            1,
            "{} was never rolled back: {record}; still holds {:?}",
            p.name(),
            p.resource().held(txn)
        );
        assert_eq!(p.resource().held(txn), None);
    }
}

/// Plants `bug` and searches `seeds` (without crash runs) for one whose
/// report contains `symptom`; checks that seed replays to the same report.
fn catches(configure: Configure, seeds: u64, symptom: &str) -> SimReport {
    catches_with(
        SimParams {
            configure,
            crash_share: 0.0,
            ..params(0.0)
        },
        seeds,
        symptom,
    )
}

/// Searches `seeds` for one whose report under `params` contains
/// `symptom`; checks that seed replays to the same report.
fn catches_with(params: SimParams, seeds: u64, symptom: &str) -> SimReport {
    let (failures, total) = sweep(0..seeds, &params, 4);
    let found = failures
        .into_iter()
        .find(|r| r.violations.iter().any(|v| v.contains(symptom)));
    let Some(report) = found else {
        panic!("no seed in 0..{seeds} reported {symptom:?}; {total:?}");
    };
    assert_eq!(
        simulate(report.seed, &params),
        report,
        "the failing seed replays exactly"
    );
    eprintln!("seed {}: {}", report.seed, report.violations[0]);
    report
}

#[test]
fn catches_forget_in_flight_prepare_as_missing_rollback() {
    catches(
        |b| b.planted_bug(PlantedBug::ForgetInFlightPrepare),
        2_000,
        "still holds",
    );
}

#[test]
fn catches_hide_hazard_as_missing_hazard() {
    let report = catches(
        |b| b.planted_bug(PlantedBug::HideHazard),
        2_000,
        "not reported as a hazard",
    );
    assert!(report.violations.iter().any(|v| v.contains("lost after")));
}

#[test]
fn catches_commit_after_abort_as_broken_agreement() {
    catches(
        |b| b.planted_bug(PlantedBug::CommitAfterAbort),
        2_000,
        "got commit but the decision is Some(Abort)",
    );
}

#[test]
fn catches_aborted_after_commit() {
    catches(
        |b| b.planted_bug(PlantedBug::AbortedAfterCommit),
        2_000,
        "got commit but the decision is Some(Abort)",
    );
}

#[test]
fn catches_prepared_on_first_ready_as_invalid_commit() {
    catches(
        |b| b.planted_bug(PlantedBug::PreparedOnFirstReady),
        2_000,
        "decision Commit, but",
    );
}

#[test]
fn catches_commit_to_read_only_voters() {
    catches(
        |b| b.planted_bug(PlantedBug::CommitReadOnly),
        2_000,
        "got commit without having voted Ready",
    );
}

/// Commit calls sent with the write of the decision instead of after it:
/// a crash before the write lands leaves a participant committed that the
/// restarted coordinator knows nothing of.
#[test]
fn catches_commit_before_logged_in_crash_runs() {
    let report = catches_with(
        SimParams {
            configure: |b| b.planted_bug(PlantedBug::CommitBeforeLogged),
            shutdown_share: 0.0,
            crash_share: 1.0,
            ..SimParams::default()
        },
        2_000,
        "had not reached the log",
    );
    assert!(report.crash.is_some());
}

/// A participant given up on recorded as acknowledged: the decision
/// leaves the log as if everyone had it, so after a crash the participant,
/// still in doubt, is told `aborted` while the others committed.
#[test]
fn catches_hide_hazard_in_crash_runs_as_a_wrong_presumed_abort() {
    catches_with(
        SimParams {
            configure: |b| b.planted_bug(PlantedBug::HideHazard),
            shutdown_share: 0.0,
            crash_share: 1.0,
            ..SimParams::default()
        },
        2_000,
        "was told aborted, but the decision is Commit",
    );
}

#[test]
fn short_soak_keeps_every_invariant() {
    silence_injected_panics();
    let transactions = env_u64("DTXN_SOAK_TRANSACTIONS", 300);
    let params = SoakParams {
        transactions: transactions as usize,
        concurrency: env_u64("DTXN_SOAK_CONCURRENCY", 100) as usize,
        worker_threads: 2,
        deadline: Duration::from_millis(600),
        ..SoakParams::default()
    };
    let report = soak(&params);
    eprintln!("{}", serde_json::to_string(&report).unwrap());
    for message in report.messages.iter().take(20) {
        eprintln!("{message}");
    }
    assert!(report.passed(), "{} violations", report.violation_count);
    assert_eq!(report.transactions, transactions);
    assert_eq!(report.committed + report.aborted, transactions);
    assert!(report.committed > 0 && report.aborted > 0, "{report:?}");
    assert!(report.faults.total() > 0, "{report:?}");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["violations"], 0);
}
