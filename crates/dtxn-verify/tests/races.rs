//! Races on the real driver: many tasks on a two-worker multi-thread
//! runtime call `prepare_transaction`, `commit_transaction`,
//! `rollback_transaction` and `get_transaction_state` on the same
//! transactions — some dropping their futures early, some registering new
//! participants late — while short transaction deadlines fire, with random
//! yields and sleeps between calls.
//!
//! Every iteration checks that each transaction got exactly one decision,
//! that every caller that got an outcome saw that decision and the losers
//! got `InvalidState`, that state observations never go backwards, that no
//! participant got both `commit` and rollback (with the whole invariant
//! checker of `dtxn_verify::check`), that every transaction finished, and
//! that nothing deadlocked (each iteration runs under a generous
//! `tokio::time::timeout`, which turns a deadlock into a failure). A late
//! registration must either join (and then be treated like any other
//! participant) or be refused with `InvalidState`. The same race with a
//! planted bug must be caught, so the checks are known to bite.
//!
//! This is a stress test, not an exhaustive schedule exploration: `loom`
//! and `shuttle` need every synchronisation primitive and the scheduler to
//! be theirs, and dtxn is built on tokio's runtime, timers and channels, so
//! neither fits. The interleavings come from real threads plus randomized
//! pauses; the seed (`DTXN_RACES_SEED`, printed at the start) fixes the
//! operations chosen, not the schedule.

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use dtxn::core::PlantedBug;
use dtxn::{
    CoordinatorConfig, CoordinatorError, Decision, Participant, Registration, RetryPolicy,
    TransactionCoordinator, TransactionId, TransactionState,
};
use dtxn_verify::check::{
    check_transaction, describe, ClientCall, ClientOp, ClientResult, ParticipantEvidence,
    TxnEvidence,
};
use dtxn_verify::client::wait_terminal;
use dtxn_verify::{
    silence_injected_panics, Bounds, CrashPoint, Fault, FaultKind, FaultyParticipant,
};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn base_seed() -> u64 {
    match std::env::var("DTXN_RACES_SEED") {
        Ok(v) => v
            .trim()
            .parse()
            .expect("DTXN_RACES_SEED must be an integer"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn config(rng: &mut fastrand::Rng, plant: Option<PlantedBug>) -> CoordinatorConfig {
    let prepare_timeout = ms(rng.u64(5..=20));
    let builder = CoordinatorConfig::builder();
    let builder = match plant {
        Some(bug) => builder.planted_bug(bug),
        None => builder,
    };
    builder
        .prepare_timeout(prepare_timeout)
        .phase2_timeout(ms(rng.u64(5..=10)))
        .retry(RetryPolicy::new(rng.u32(1..=3), ms(1), ms(3)).unwrap())
        .transaction_deadline(prepare_timeout + ms(rng.u64(1..=40)))
        .sweep_interval(ms(rng.u64(1..=5)))
        .retention_period(Duration::from_secs(3600))
        .build()
        .unwrap()
}

type Node = Arc<FaultyParticipant<()>>;

/// Participants for one transaction: mostly healthy, some slow, a few
/// failing, so that phase 1 and phase 2 take a while and sometimes abort.
fn participants(rng: &mut fastrand::Rng, txn: TransactionId, n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let p = Arc::new(FaultyParticipant::new(format!("p{i}"), ()));
            for point in CrashPoint::ALL {
                let kind = match rng.u8(0..40) {
                    0..=5 => FaultKind::Slow(ms(rng.u64(1..=12))),
                    6 => FaultKind::Error,
                    7 => FaultKind::Panic,
                    8 => FaultKind::Hang,
                    _ => continue,
                };
                p.plan(txn, Fault::new(point, kind));
            }
            p
        })
        .collect()
}

async fn pause(rng: &mut fastrand::Rng) {
    match rng.u8(0..4) {
        0 => {}
        1 => {
            for _ in 0..rng.u8(1..=5) {
                tokio::task::yield_now().await;
            }
        }
        _ => tokio::time::sleep(Duration::from_micros(rng.u64(0..=3000))).await,
    }
}

/// What one racing caller did.
struct Racer {
    calls: Vec<ClientCall>,
    /// Participants it registered late (successfully).
    joined: Vec<Node>,
    /// Registration results that break the API table.
    problems: Vec<String>,
}

/// One racing caller: a few random calls — including late registrations —
/// timed, with pauses in between.
async fn racer(c: TransactionCoordinator, txn: TransactionId, id: usize, seed: u64) -> Racer {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut me = Racer {
        calls: Vec::new(),
        joined: Vec::new(),
        problems: Vec::new(),
    };
    for k in 0..rng.usize(1..=4) {
        pause(&mut rng).await;
        let start = Instant::now();
        // Some callers give up early: their futures are dropped mid-call.
        let patience = rng.bool().then(|| Duration::from_micros(rng.u64(0..=4000)));
        let op = match rng.u8(0..22) {
            0..=5 => ClientOp::Prepare,
            6..=12 => ClientOp::Commit,
            13..=15 => ClientOp::Rollback,
            16..=19 => ClientOp::State,
            _ => {
                register_late(&c, txn, format!("late{id}.{k}"), &mut me);
                continue;
            }
        };
        let result = match op {
            ClientOp::Prepare => {
                within(patience, c.prepare_transaction(txn), ClientResult::Prepare).await
            }
            ClientOp::Commit => {
                within(patience, c.commit_transaction(txn), ClientResult::Finish).await
            }
            ClientOp::Rollback => {
                within(patience, c.rollback_transaction(txn), ClientResult::Finish).await
            }
            ClientOp::State => ClientResult::State(c.get_transaction_state(txn)),
        };
        me.calls.push(ClientCall {
            op,
            elapsed: start.elapsed(),
            result,
        });
    }
    me
}

/// Registers a new participant while others prepare, commit or roll back:
/// it must be either in the transaction (and then treated like any other)
/// or refused with `InvalidState` because the transaction left Active.
fn register_late(c: &TransactionCoordinator, txn: TransactionId, name: String, me: &mut Racer) {
    let p: Node = Arc::new(FaultyParticipant::new(name.clone(), ()));
    match c.register_participant(txn, Arc::clone(&p) as Arc<dyn Participant>) {
        Ok(Registration::Registered) => me.joined.push(p),
        Err(CoordinatorError::InvalidState { current, .. })
            if current != TransactionState::Active => {}
        other => me
            .problems
            .push(format!("registering {name} returned {other:?}")),
    }
}

async fn within<T>(
    patience: Option<Duration>,
    fut: impl std::future::Future<Output = T>,
    wrap: impl FnOnce(T) -> ClientResult,
) -> ClientResult {
    match patience {
        Some(p) => match tokio::time::timeout(p, fut).await {
            Ok(r) => wrap(r),
            Err(_) => ClientResult::Cancelled,
        },
        None => wrap(fut.await),
    }
}

/// Position along the state diagram: observations must never decrease.
fn rank(s: TransactionState) -> u8 {
    match s {
        TransactionState::Active => 0,
        TransactionState::Preparing => 1,
        TransactionState::Prepared => 2,
        TransactionState::Committing | TransactionState::Aborting => 3,
        TransactionState::Committed | TransactionState::Aborted => 4,
        other => panic!("a state this check does not know: {other}"),
    }
}

/// Race-specific checks on top of the invariant checker.
fn race_violations(
    label: &str,
    decision: Option<Decision>,
    per_racer: &[Vec<ClientCall>],
) -> Vec<String> {
    let mut out = Vec::new();
    if decision.is_none() {
        out.push(format!("{label}: no decision at the end"));
    }
    for (r, calls) in per_racer.iter().enumerate() {
        let mut seen: Option<TransactionState> = None;
        for call in calls {
            match (&call.op, &call.result) {
                (ClientOp::State, ClientResult::State(Ok(s))) => {
                    if let Some(prev) = seen {
                        let backwards = rank(*s) < rank(prev)
                            || (prev.decision().is_some() && s.decision() != prev.decision());
                        if backwards {
                            out.push(format!("{label}: racer {r} saw {prev} then {s}"));
                        }
                    }
                    seen = Some(*s);
                }
                // The loser of a commit/rollback race must be refused.
                (op @ (ClientOp::Commit | ClientOp::Rollback), ClientResult::Finish(r)) => {
                    let lost = match op {
                        ClientOp::Commit => decision == Some(Decision::Abort),
                        _ => decision == Some(Decision::Commit),
                    };
                    let refused = matches!(r, Err(dtxn::CoordinatorError::InvalidState { .. }));
                    if lost && !refused {
                        out.push(format!(
                            "{label}: {op:?} after the {decision:?} decision returned {r:?}"
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// One iteration: `txns` transactions, `racers` callers each.
async fn iteration(
    seed: u64,
    txns: usize,
    racers: usize,
    plant: Option<PlantedBug>,
) -> Result<[usize; 3], Vec<String>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let config = config(&mut rng, plant);
    let c = TransactionCoordinator::with_config(config.clone());
    let mut work = Vec::new();
    for _ in 0..txns {
        let txn = c.begin_transaction().unwrap();
        let n = rng.usize(0..=4);
        let nodes = participants(&mut rng, txn, n);
        for p in &nodes {
            c.register_participant(txn, Arc::clone(p) as Arc<dyn Participant>)
                .unwrap();
        }
        let handles: Vec<_> = (0..racers)
            .map(|id| tokio::spawn(racer(c.clone(), txn, id, rng.u64(..))))
            .collect();
        work.push((txn, nodes, handles));
    }
    let bounds = Bounds::for_config(&config, ms(500));
    let limit =
        config.transaction_deadline() + config.prepare_timeout() + bounds.rollback + ms(500);
    let mut violations = Vec::new();
    let (mut committed, mut aborted, mut joined) = (0, 0, 0);
    for (txn, mut nodes, handles) in work {
        let mut per_racer = Vec::new();
        let mut problems = Vec::new();
        for h in handles {
            let r = h.await.expect("racer task panicked");
            per_racer.push(r.calls);
            joined += r.joined.len();
            nodes.extend(r.joined);
            problems.extend(r.problems);
        }
        if !wait_terminal(&c, txn, ms(1), limit).await {
            violations.push(format!(
                "t{}: not finished within {limit:?}",
                txn.as_u128() as u64
            ));
        }
        let report = c.transaction_report(txn);
        // Evidence in registration order, which only the report knows for
        // the late joiners.
        if let Ok(r) = &report {
            nodes.sort_by_key(|p| r.participants.iter().position(|q| q.name == p.name()));
        }
        let evidence = TxnEvidence {
            label: format!("seed {seed} t{}", txn.as_u128() as u64),
            txn,
            participants: nodes
                .iter()
                .map(|p| ParticipantEvidence {
                    name: p.name().to_owned(),
                    delta: 0,
                    record: p.record(txn),
                    held: None,
                })
                .collect(),
            report,
            calls: per_racer.concat(),
        };
        violations.extend(problems);
        let verdict = check_transaction(&evidence, &bounds);
        let race = race_violations(&evidence.label, verdict.decision, &per_racer);
        match verdict.decision {
            Some(Decision::Commit) => committed += 1,
            Some(Decision::Abort) => aborted += 1,
            None => {}
        }
        if !verdict.violations.is_empty() || !race.is_empty() {
            violations.extend(verdict.violations);
            violations.extend(race);
            violations.push(describe(&evidence));
        }
    }
    let unfinished = c.stats().unfinished;
    if unfinished != 0 {
        violations.push(format!("seed {seed}: {unfinished} transactions unfinished"));
    }
    if violations.is_empty() {
        Ok([committed, aborted, joined])
    } else {
        Err(violations)
    }
}

/// Runs iterations until `iterations` are done or `budget` is spent.
fn stress(name: &str, iterations: u64, budget: Duration, txns: usize, racers: usize) {
    silence_injected_panics();
    let base = base_seed();
    eprintln!("{name}: DTXN_RACES_SEED={base}");
    let started = StdInstant::now();
    let rt = runtime();
    let (mut done, mut committed, mut aborted, mut joined) = (0u64, 0, 0, 0);
    while done < iterations && started.elapsed() < budget {
        let seed = base.wrapping_add(done);
        let result = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(20), iteration(seed, txns, racers, None)).await
        });
        match result {
            Err(_) => panic!(
                "{name}: iteration with seed {seed} deadlocked (no progress in 20 s); rerun with DTXN_RACES_SEED={base}"
            ),
            Ok(Err(violations)) => panic!(
                "{name}: seed {seed} (DTXN_RACES_SEED={base}):\n{}",
                violations.join("\n")
            ),
            Ok(Ok([c, a, j])) => {
                committed += c;
                aborted += a;
                joined += j;
            }
        }
        done += 1;
    }
    eprintln!(
        "{name}: {done} iterations in {:.1?}: {committed} committed, {aborted} aborted, {joined} late registrations",
        started.elapsed()
    );
    assert!(done >= 20, "too few iterations ran: {done}");
    assert!(committed > 0 && aborted > 0, "both decisions occur");
    assert!(joined > 0, "some late registrations got in");
}

#[test]
fn racing_callers_agree_on_one_decision_while_deadlines_fire() {
    stress("racing callers", 1_000, Duration::from_secs(25), 8, 6);
}

/// The same race with a planted bug (a commit request after an Abort
/// decision sends `commit`): the checks must notice, or they prove nothing.
#[test]
fn racing_callers_expose_a_planted_commit_after_abort() {
    silence_injected_panics();
    let base = base_seed();
    let rt = runtime();
    let found = (0..2_000).find_map(|i| {
        let seed = base.wrapping_add(i);
        let result = rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(20),
                iteration(seed, 8, 6, Some(PlantedBug::CommitAfterAbort)),
            )
            .await
        });
        result.expect("no deadlock").err()
    });
    let violations = found.expect("2000 iterations never exposed the planted bug");
    let text = violations.join("\n");
    // The bug shows as a participant told to commit in an aborted
    // transaction or, when nobody had voted Ready yet, as the refused
    // commit request being accepted.
    assert!(
        text.contains("got both commit and rollback")
            || text.contains("got commit but")
            || text.contains("Commit after the Some(Abort) decision returned Ok"),
        "{text}"
    );
}

/// Everyone prepares, then piles onto commit and rollback right around the
/// deadline, which the sweeper and the client calls both try to enforce.
#[test]
fn commit_and_rollback_racing_the_deadline_decide_once() {
    silence_injected_panics();
    let base = base_seed();
    eprintln!("deadline race: DTXN_RACES_SEED={base}");
    let rt = runtime();
    let started = StdInstant::now();
    let mut outcomes = [0usize; 2];
    let mut done = 0u64;
    while done < 600 && started.elapsed() < Duration::from_secs(15) {
        let seed = base.wrapping_add(done);
        let result = rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(20), async move {
                let mut rng = fastrand::Rng::with_seed(seed);
                let deadline = ms(rng.u64(20..=30));
                let config = CoordinatorConfig::builder()
                    .prepare_timeout(ms(10))
                    .phase2_timeout(ms(5))
                    .retry(RetryPolicy::new(2, ms(1), ms(2)).unwrap())
                    .transaction_deadline(deadline)
                    .sweep_interval(ms(1))
                    .retention_period(Duration::from_secs(3600))
                    .build()
                    .unwrap();
                let c = TransactionCoordinator::with_config(config.clone());
                let begun = Instant::now();
                let txn = c.begin_transaction().unwrap();
                let nodes: Vec<Node> = (0..rng.usize(1..=3))
                    .map(|i| Arc::new(FaultyParticipant::new(format!("p{i}"), ())))
                    .collect();
                for p in &nodes {
                    c.register_participant(txn, Arc::clone(p) as Arc<dyn Participant>)
                        .unwrap();
                }
                let prepared = c.prepare_transaction(txn).await;
                // Aim at the deadline, give or take two milliseconds.
                let aim = deadline + Duration::from_micros(rng.u64(0..=4000)) - ms(2);
                tokio::time::sleep_until(begun + aim).await;
                let handles: Vec<_> = (0..6)
                    .map(|i| {
                        let c = c.clone();
                        let op = [
                            ClientOp::Commit,
                            ClientOp::Commit,
                            ClientOp::Rollback,
                            ClientOp::State,
                        ][i % 4];
                        tokio::spawn(async move {
                            let start = Instant::now();
                            let result = match op {
                                ClientOp::Commit => {
                                    ClientResult::Finish(c.commit_transaction(txn).await)
                                }
                                ClientOp::Rollback => {
                                    ClientResult::Finish(c.rollback_transaction(txn).await)
                                }
                                _ => ClientResult::State(c.get_transaction_state(txn)),
                            };
                            vec![ClientCall {
                                op,
                                elapsed: start.elapsed(),
                                result,
                            }]
                        })
                    })
                    .collect();
                let mut per_racer = vec![vec![ClientCall {
                    op: ClientOp::Prepare,
                    elapsed: Duration::ZERO,
                    result: ClientResult::Prepare(prepared),
                }]];
                for h in handles {
                    per_racer.push(h.await.unwrap());
                }
                let bounds = Bounds::for_config(&config, ms(500));
                wait_terminal(&c, txn, ms(1), ms(2000)).await;
                let evidence = TxnEvidence {
                    label: format!("seed {seed}"),
                    txn,
                    participants: nodes
                        .iter()
                        .map(|p| ParticipantEvidence {
                            name: p.name().to_owned(),
                            delta: 0,
                            record: p.record(txn),
                            held: None,
                        })
                        .collect(),
                    report: c.transaction_report(txn),
                    calls: per_racer.concat(),
                };
                let verdict = check_transaction(&evidence, &bounds);
                let mut violations = verdict.violations;
                violations.extend(race_violations(
                    &evidence.label,
                    verdict.decision,
                    &per_racer,
                ));
                if c.stats().unfinished != 0 {
                    violations.push("unfinished transactions".into());
                }
                if !violations.is_empty() {
                    violations.push(describe(&evidence));
                }
                (verdict.decision, violations)
            })
            .await
        });
        let (decision, violations) = result.unwrap_or_else(|_| {
            panic!("seed {seed} deadlocked; rerun with DTXN_RACES_SEED={base}")
        });
        assert!(
            violations.is_empty(),
            "seed {seed} (DTXN_RACES_SEED={base}):\n{}",
            violations.join("\n")
        );
        outcomes[usize::from(decision == Some(Decision::Abort))] += 1;
        done += 1;
    }
    eprintln!(
        "deadline race: {done} iterations in {:.1?}: {} committed, {} aborted",
        started.elapsed(),
        outcomes[0],
        outcomes[1]
    );
    assert!(done >= 20, "too few iterations ran: {done}");
    assert!(
        outcomes[0] > 0 && outcomes[1] > 0,
        "the race went both ways: {outcomes:?}"
    );
}
