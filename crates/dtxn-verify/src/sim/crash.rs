//! Crash runs: the coordinator keeps a decision log, crashes, and a new
//! one recovers from it (see "Crash runs" in the [module docs](super)).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtxn::log::ParticipantRegistry;
use dtxn::{CoordinatorConfig, OutcomeStatus, Participant, TransactionCoordinator, TransactionId};
use tokio::time::Instant;

use super::{
    absorb, evidence_of, finish, ms, paused_runtime, spawn_clients, Begun, CrashSpec, CrashSummary,
    Scenario, SimReport,
};
use crate::bank::Bank;
use crate::check::{check_after_crash, phase2_budget, CrashParticipantEvidence, CrashTxnEvidence};
use crate::disk::SimDisk;
use crate::fault::{CallRecord, Resource};
use crate::lock;
use crate::trace::{txn_label, Trace};

/// What each participant in doubt was answered when it asked, by
/// (transaction, account): the answer it acted on (`committed` or
/// `aborted`; it holds nothing afterwards, so it asks once), or in the
/// last round after the last restart whatever it was told.
type Answers = Arc<Mutex<HashMap<(TransactionId, usize), OutcomeStatus>>>;

/// What survives a crash — the participants, the disk, the trace — and
/// what was seen at the crash.
struct Crashed {
    trace: Trace,
    bank: Arc<Bank>,
    disk: SimDisk,
    begun: Vec<Begun>,
    answers: Answers,
    /// When it crashed, on the trace's clock.
    at: Duration,
    /// Per begun transaction: some participant had received `commit`.
    told_commit: Vec<bool>,
    /// Per begun transaction: its decision had reached the log.
    logged: Vec<bool>,
    /// Per begun transaction and participant: its record and hold at the
    /// crash.
    ground: Vec<Vec<(CallRecord, Option<i64>)>>,
}

/// Runs a crash run: the first coordinator on one paused-clock runtime
/// until the crash, which drops that runtime with everything in it; if the
/// scenario says so a second one, recovered from the same log, until it
/// crashes too; and the last one, recovered again, until everything
/// settled and is checked.
pub(super) fn run(seed: u64, scenario: &Scenario, spec: CrashSpec) -> SimReport {
    let mut report = SimReport {
        seed,
        transactions: scenario.txns.len(),
        crash: Some(CrashSummary::default()),
        ..SimReport::default()
    };
    let first = paused_runtime();
    let crashed = first.block_on(first_life(seed, scenario, spec, &mut report));
    // The crash: every task stops where it is — clients and their calls,
    // participant calls, log writes — and the coordinator's last handle
    // goes down with them (in the runtime's shutdown, where nothing it
    // spawns runs).
    drop(first);
    let Some(mut crashed) = crashed else {
        return report;
    };
    check_nothing_ran_after_the_crash(&crashed, &mut report);
    if let Some(after) = spec.recrash_after {
        let second = paused_runtime();
        let again = second.block_on(second_life(
            &scenario.config,
            spec,
            after,
            crashed,
            &mut report,
        ));
        drop(second);
        let Some(again) = again else {
            return report;
        };
        crashed = again;
        check_nothing_ran_after_the_crash(&crashed, &mut report);
    }
    paused_runtime().block_on(last_life(scenario, spec, crashed, &mut report));
    report
}

fn summary(report: &mut SimReport) -> &mut CrashSummary {
    report.crash.get_or_insert_with(CrashSummary::default)
}

/// The first coordinator, durable from the start, until it crashes.
async fn first_life(
    seed: u64,
    scenario: &Scenario,
    spec: CrashSpec,
    report: &mut SimReport,
) -> Option<Crashed> {
    let config = scenario.config.clone();
    let trace = Trace::new();
    trace.log(format_args!("seed {seed}: {config:?}"));
    trace.log(format_args!("crash run: {spec:?}"));
    let bank = Arc::new(Bank::new(scenario.balances.iter().copied(), Some(&trace)));
    trace.log(format_args!("balances {:?}", scenario.balances));
    let disk = SimDisk::new(spec.disk_seed, spec.write_failure_share, Some(&trace));
    if let Some((event, n)) = spec.on_write {
        disk.crash_on(event, n);
    }
    let recovered =
        TransactionCoordinator::recover(config, disk.attach(), &ParticipantRegistry::new()).await;
    let coordinator = match recovered {
        Ok((coordinator, recovery)) => {
            report.checks += 1;
            if !recovery.redelivering.is_empty() {
                report.violations.push(format!(
                    "coordinator: an empty log gave decisions to deliver: {recovery:?}"
                ));
            }
            coordinator
        }
        Err(e) => {
            report.violations.push(format!(
                "coordinator: recovering from an empty log failed: {e}"
            ));
            report.trace = trace.lines();
            return None;
        }
    };
    let begun: Arc<Mutex<Vec<Begun>>> = Arc::default();
    let answers = Answers::default();
    let tasks = spawn_clients(&coordinator, scenario, &bank, &trace, &begun);
    hold_until_crash(&coordinator);
    if let Some(every) = spec.poll {
        let txns = {
            let begun = Arc::clone(&begun);
            move || transactions(&lock(&begun))
        };
        poll_in_doubt(&coordinator, &bank, &trace, &answers, every, txns);
    }
    drop(coordinator);

    // `biased`: select! would otherwise draw its order at random.
    let trigger = tokio::select! {
        biased;
        () = disk.crash_requested() => "on the armed log write",
        () = tokio::time::sleep(spec.at) => "on time",
    };
    for task in tasks {
        if !task.is_finished() {
            continue;
        }
        match task.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => report.violations.push(format!("client: {e}")),
            Err(e) => report.violations.push(format!("client task failed: {e}")),
        }
    }

    // The crash instant: from here on nothing of the first coordinator
    // runs. What the participants and the disk hold now is what it leaves.
    let begun = std::mem::take(&mut *lock(&begun));
    report.transactions = begun.len();
    let crashed = crash(trace, bank, disk, begun, answers);
    let s = summary(report);
    s.at = crashed.at;
    s.logged = crashed.logged.iter().filter(|l| **l).count();
    s.writes_in_flight = crashed.disk.writes_in_flight();
    s.resolved_before = lock(&crashed.answers).len();
    let by_key: HashMap<&str, usize> = crashed
        .bank
        .accounts()
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.recovery_key().map(|k| (k, i)))
        .collect();
    for record in crashed.disk.in_doubt() {
        let delivered = record.participants.iter().all(|p| {
            by_key
                .get(&*p.key)
                .is_some_and(|&i| crashed.bank.account(i).record(record.txn).acked_commit)
        });
        if delivered {
            s.ends_lost += 1;
        } else {
            s.undelivered += 1;
        }
    }
    crashed.trace.log(format_args!(
        "crash {trigger}: the coordinator's runtime is dropped with every client, call and log write in it ({} decisions logged, {} writes in flight, {} undelivered, {} ends lost)",
        s.logged, s.writes_in_flight, s.undelivered, s.ends_lost
    ));
    crashed.disk.crash();
    Some(crashed)
}

/// A restarted coordinator that crashes again `after` its restart, while
/// it delivers decisions again (and participants in doubt may poll it).
async fn second_life(
    config: &CoordinatorConfig,
    spec: CrashSpec,
    after: Duration,
    crashed: Crashed,
    report: &mut SimReport,
) -> Option<Crashed> {
    let Crashed {
        trace,
        bank,
        disk,
        begun,
        answers,
        at,
        ..
    } = crashed;
    let (coordinator, redelivered) = restart(config, &trace, at, &bank, &disk, report).await?;
    summary(report).redelivered = redelivered.len();
    hold_until_crash(&coordinator);
    if let Some(every) = spec.poll {
        let txns = transactions(&begun);
        poll_in_doubt(&coordinator, &bank, &trace, &answers, every, move || {
            txns.clone()
        });
    }
    tokio::time::sleep(after).await;
    let unfinished = coordinator.stats().unfinished;
    drop(coordinator);
    let s = summary(report);
    s.recrashed = true;
    s.redelivering_at_recrash = unfinished;
    trace.log(format_args!(
        "crash again, {unfinished} decisions still being delivered: the restarted coordinator's runtime is dropped"
    ));
    let crashed = crash(trace, bank, disk, begun, answers);
    crashed.disk.crash();
    Some(crashed)
}

/// The transactions of `begun` and their participants (a snapshot).
fn transactions(begun: &[Begun]) -> Vec<(TransactionId, Vec<(usize, i64)>)> {
    begun
        .iter()
        .map(|b| (b.txn, b.registered.clone()))
        .collect()
}

/// Gives the coordinator's own handle to a task that holds it until its
/// runtime goes down: were the last handle dropped earlier, the
/// coordinator would shut down gracefully (rolling back what is Active or
/// Prepared), which a crash never does.
fn hold_until_crash(coordinator: &TransactionCoordinator) {
    let process = coordinator.clone();
    tokio::spawn(async move {
        let _process = process;
        std::future::pending::<()>().await
    });
}

/// Spawns the participants' side while a coordinator lives: `every` so
/// often, each live participant holding a prepared change for one of
/// `txns()` asks the outcome, and obeys a decision (`pending` leaves it
/// waiting).
fn poll_in_doubt(
    coordinator: &TransactionCoordinator,
    bank: &Arc<Bank>,
    trace: &Trace,
    answers: &Answers,
    every: Duration,
    txns: impl Fn() -> Vec<(TransactionId, Vec<(usize, i64)>)> + Send + 'static,
) {
    let (coordinator, bank, trace, answers) = (
        coordinator.clone(),
        Arc::clone(bank),
        trace.clone(),
        Arc::clone(answers),
    );
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            ask(&coordinator, &bank, &txns(), &trace, &answers, false);
        }
    });
}

/// One round of the participants' side of presumed abort: each live
/// participant still holding a prepared change asks `coordinator` the
/// outcome; on `committed` it applies the change, on `aborted` it releases
/// it. Answers it acts on are kept in `answers`, and in the `last` round
/// (after the last restart, when an undecided answer leaves it stuck) every
/// answer. Returns how many asked and how many were told `aborted`.
fn ask(
    coordinator: &TransactionCoordinator,
    bank: &Bank,
    txns: &[(TransactionId, Vec<(usize, i64)>)],
    trace: &Trace,
    answers: &Answers,
    last: bool,
) -> (usize, usize) {
    let (mut asked, mut aborted) = (0, 0);
    for (txn, registered) in txns {
        for &(account, _) in registered {
            let p = bank.account(account);
            if p.dead().is_some() || p.resource().held(*txn).is_none() {
                continue;
            }
            let answer = coordinator.outcome(*txn);
            match answer {
                OutcomeStatus::Committed => {
                    p.resource().commit(*txn);
                }
                OutcomeStatus::Aborted => {
                    p.resource().rollback(*txn);
                    aborted += 1;
                }
                _ if !last => continue,
                _ => {}
            }
            asked += 1;
            trace.log(format_args!(
                "{} is in doubt about {} and asks: {answer}",
                p.name(),
                txn_label(*txn)
            ));
            lock(answers).insert((*txn, account), answer);
        }
    }
    (asked, aborted)
}

/// Takes what the crashed coordinator leaves, at the crash instant. The
/// caller then fences the disk ([`SimDisk::crash`]) and drops the runtime.
fn crash(
    trace: Trace,
    bank: Arc<Bank>,
    disk: SimDisk,
    begun: Vec<Begun>,
    answers: Answers,
) -> Crashed {
    let mut told_commit = Vec::new();
    let mut logged = Vec::new();
    let mut ground = Vec::new();
    for b in &begun {
        let records: Vec<(CallRecord, Option<i64>)> = b
            .registered
            .iter()
            .map(|&(account, _)| {
                let p = bank.account(account);
                (p.record(b.txn), p.resource().held(b.txn))
            })
            .collect();
        told_commit.push(records.iter().any(|(r, _)| r.commit_calls > 0));
        logged.push(disk.written(b.txn));
        ground.push(records);
    }
    Crashed {
        at: trace.elapsed(),
        trace,
        bank,
        disk,
        begun,
        answers,
        told_commit,
        logged,
        ground,
    }
}

/// Dropping the crashed runtime must not have reached any participant: a
/// crashed process runs no more code.
fn check_nothing_ran_after_the_crash(c: &Crashed, report: &mut SimReport) {
    for (b, records) in c.begun.iter().zip(&c.ground) {
        for (&(account, _), (record, held)) in b.registered.iter().zip(records) {
            let p = c.bank.account(account);
            report.checks += 1;
            let now = (p.record(b.txn), p.resource().held(b.txn));
            if now != (record.clone(), *held) {
                report.violations.push(format!(
                    "{}: {} changed while the crashed coordinator's runtime was dropped: {record} (holding {held:?}) became {} (holding {:?})",
                    txn_label(b.txn),
                    p.name(),
                    now.0,
                    now.1
                ));
            }
        }
    }
}

/// Restarts a coordinator on the disk (on a new runtime, whose clock the
/// trace is moved to first), every account registered, and checks that it
/// delivers again exactly the decisions the log holds.
async fn restart(
    config: &CoordinatorConfig,
    trace: &Trace,
    at: Duration,
    bank: &Bank,
    disk: &SimDisk,
    report: &mut SimReport,
) -> Option<(TransactionCoordinator, BTreeSet<TransactionId>)> {
    // Before anything logs: this runtime's clock is not the last one's.
    trace.resume(at);
    trace.log(format_args!(
        "restart: a new coordinator recovers from the log, every account registered"
    ));
    let mut registry = ParticipantRegistry::new();
    for account in bank.accounts() {
        if let Err(e) = registry.insert(Arc::clone(account) as Arc<dyn Participant>) {
            report.violations.push(format!("registry: {e}"));
        }
    }
    let on_disk: BTreeSet<TransactionId> = disk.in_doubt().iter().map(|r| r.txn).collect();
    let (coordinator, recovery) =
        match TransactionCoordinator::recover(config.clone(), disk.attach(), &registry).await {
            Ok(recovered) => recovered,
            Err(e) => {
                report
                    .violations
                    .push(format!("coordinator: recovery failed: {e}"));
                report.trace = trace.lines();
                return None;
            }
        };
    let redelivered: BTreeSet<TransactionId> = recovery.redelivering.iter().copied().collect();
    trace.log(format_args!(
        "restart: delivering again {:?}",
        labels(&recovery.redelivering)
    ));
    report.checks += 2;
    if redelivered != on_disk {
        report.violations.push(format!(
            "recovery: delivers again {:?}, but the log holds {:?}",
            labels(&redelivered),
            labels(&on_disk)
        ));
    }
    if !recovery.unresolved.is_empty() {
        report.violations.push(format!(
            "recovery: participants not found again: {:?}",
            recovery.unresolved
        ));
    }
    Some((coordinator, redelivered))
}

/// The last coordinator: recovery, the participants in doubt asking it
/// the outcome, settling, and the checks.
async fn last_life(scenario: &Scenario, spec: CrashSpec, crashed: Crashed, report: &mut SimReport) {
    let Crashed {
        trace,
        bank,
        disk,
        begun,
        answers,
        at,
        told_commit,
        logged,
        ground: _,
    } = crashed;
    let config = &scenario.config;
    let Some((coordinator, redelivered)) = restart(config, &trace, at, &bank, &disk, report).await
    else {
        return;
    };
    if !summary(report).recrashed {
        summary(report).redelivered = redelivered.len();
    }

    // The participants' side of presumed abort: each live one still
    // holding a prepared change asks, and obeys.
    tokio::time::sleep(spec.ask_after).await;
    let (asked, aborted) = ask(
        &coordinator,
        &bank,
        &transactions(&begun),
        &trace,
        &answers,
        true,
    );
    let s = summary(report);
    s.asked = asked;
    s.presumed_aborted = aborted;

    // Let the redelivered phase 2 run out, retries and all.
    let horizon = phase2_budget(config) + config.sweep_interval() + ms(100);
    let waited = Instant::now();
    while coordinator.stats().unfinished > 0 && waited.elapsed() < horizon {
        tokio::time::sleep(config.sweep_interval()).await;
    }
    // The last end records land.
    tokio::time::sleep(SimDisk::MAX_DELAY + ms(1)).await;
    trace.log(format_args!("settled; checking"));

    let unfinished = coordinator.stats().unfinished;
    report.checks += 1;
    if unfinished != 0 {
        report.violations.push(format!(
            "coordinator: {unfinished} redelivered transactions still unfinished {horizon:?} after the restart"
        ));
    }
    let answers = std::mem::take(&mut *lock(&answers));
    let mut in_doubt = 0;
    let mut held = 0;
    for (bi, b) in begun.iter().enumerate() {
        let participants = evidence_of(&bank, b.txn, &b.registered)
            .into_iter()
            .zip(&b.registered)
            .map(|(evidence, &(account, _))| {
                let p = bank.account(account);
                CrashParticipantEvidence {
                    evidence,
                    applied: p.resource().is_applied(b.txn),
                    dead: p.dead().is_some(),
                    asked: answers.get(&(b.txn, account)).copied(),
                }
            })
            .collect();
        let evidence = CrashTxnEvidence {
            label: format!(
                "{} (client {:?}, coordinator crashed)",
                txn_label(b.txn),
                scenario.txns[b.spec].plan
            ),
            participants,
            told_commit_before_crash: told_commit[bi],
            logged_before_crash: logged[bi],
            redelivered: redelivered.contains(&b.txn),
            final_answer: coordinator.outcome(b.txn),
        };
        let verdict = check_after_crash(&evidence);
        in_doubt += verdict.in_doubt;
        held += verdict.held;
        absorb(report, &verdict);
        if !verdict.violations.is_empty() {
            report.details.push(format!("{evidence:?}"));
            report.violations.extend(verdict.violations);
        }
    }
    // The log keeps exactly the decisions with a participant given up on
    // (until an operator resolves them); every other one ended.
    let kept: Vec<TransactionId> = disk.in_doubt().iter().map(|r| r.txn).collect();
    let listed: Vec<TransactionId> = coordinator
        .logged_decisions()
        .iter()
        .map(|d| d.txn)
        .collect();
    report.checks += 1;
    if kept != listed {
        report.violations.push(format!(
            "log: holds {:?} at the end, but the coordinator lists {:?} as logged",
            labels(&kept),
            labels(&listed)
        ));
    }
    drop(coordinator);
    finish(report, &bank, in_doubt, held, &trace);
}

fn labels<'a>(txns: impl IntoIterator<Item = &'a TransactionId>) -> Vec<String> {
    txns.into_iter().map(|t| txn_label(*t)).collect()
}
