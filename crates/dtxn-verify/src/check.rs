//! The invariant checker: compares what the coordinator claimed (its
//! transaction report and the results its calls returned to clients) with
//! what the participants recorded ([`CallRecord`]) and what the accounts
//! hold.
//!
//! # Definitions
//!
//! For a transaction `t` with final decision `D` and participants `p`
//! (each with a staged change `d(p)` and a record of what it was told):
//!
//! * `p` **needed phase 2** if `D` = Commit and `p` returned the vote
//!   `Ready`, or `D` = Abort and `p` did not return `ReadOnly` or `Aborted`
//!   (never asked, prepare failed/timed out, or voted `Ready`) — rules 4 and 5
//!   of the protocol.
//! * `p` was **lost after the decision** if it needed phase 2 and no
//!   `commit` (for Commit) / `rollback` (for Abort) call on it returned
//!   `Ok`. The coordinator must report exactly the lost participants as
//!   heuristic hazards: a lost participant not reported is a *missing
//!   hazard*, a reported one that was not lost is a *spurious hazard*.
//! * The **live** participants of `t` are the ones not reported as hazards.
//!   All-or-nothing holds among them: for Commit every live `Ready` voter
//!   applied the change; for Abort nobody applied anything; and no live
//!   participant still holds a reservation or pending credit for `t`.
//! * The **in-doubt amount** of `t` is, for Commit, the sum of `d(p)` over
//!   hazard participants that did not apply — money the transfer should have
//!   moved at a participant the coordinator lost (an operator must repair
//!   it); zero for Abort. Reservations still held by hazard participants
//!   are counted separately as **held** amounts.
//! * **Conservation** (checked over a whole run by [`check_ledger`]): final
//!   total balance + total in-doubt amount = opening total balance. With no
//!   hazards that is plain conservation; a hidden hazard breaks it, because
//!   its unapplied change is not counted as in doubt. Every hold left in an
//!   account must belong to a (transaction, participant) reported as a
//!   hazard, and no balance may go negative.
//!
//! Besides these, every transaction must be finished (Committed or Aborted)
//! at the end (rule 12); the decision must be Commit only if every
//! participant voted `Ready`/`ReadOnly` (rule 2); nobody gets both `commit`
//! and `rollback`, `commit` goes only to `Ready` voters after Commit, nothing
//! in phase 2 to `ReadOnly`/`Aborted` voters (rules 1, 4); every result a
//! client got agrees with the final decision and hazards, and refusals are
//! the `InvalidState` the API table prescribes (rules 3, 6); and every
//! client call returned within its [`Bounds`] (rules 10, 11). The report
//! itself must be honest: each participant's reported vote (or failed
//! prepare), its number of phase-2 attempts and whether it acknowledged
//! must match what it recorded, and an abort blamed on a participant must
//! match what that participant did.
//!
//! When the coordinator itself is gone (every handle dropped mid-run) there
//! is no report to compare with; [`check_after_shutdown`] checks such a
//! transaction from the participants' side alone. When it crashed and a new
//! one recovered from the decision log, [`check_after_crash`] does, adding
//! what the log promises (write-ahead, presumed abort).

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::time::Duration;

use dtxn::{
    AbortReason, CoordinatorConfig, CoordinatorError, Decision, OutcomeStatus, ParticipantReport,
    Phase2Status, PrepareOutcome, PrepareStatus, PreparedResult, TransactionId, TransactionOutcome,
    TransactionReport, TransactionState,
};

use crate::fault::CallRecord;

/// The time every coordinator call must return within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// `prepare_transaction`: the prepare timeout + slack (rule 10).
    pub prepare: Duration,
    /// `commit_transaction`: the phase-2 budget + slack (rule 11).
    pub commit: Duration,
    /// `rollback_transaction`: prepare timeout + phase-2 budget + slack
    /// (prepares still in flight when Abort is decided must end before
    /// their rollback can start).
    pub rollback: Duration,
}

impl Bounds {
    /// The bounds implied by `config`, with `slack` for scheduling noise
    /// (a millisecond or two on a paused clock, much more on a loaded real
    /// one).
    pub fn for_config(config: &CoordinatorConfig, slack: Duration) -> Self {
        let budget = phase2_budget(config);
        Self {
            prepare: config.prepare_timeout() + slack,
            commit: budget + slack,
            rollback: config.prepare_timeout() + budget + slack,
        }
    }

    /// The bound of `op` (`None` for the synchronous state query).
    pub fn of(&self, op: ClientOp) -> Option<Duration> {
        match op {
            ClientOp::Prepare => Some(self.prepare),
            ClientOp::Commit => Some(self.commit),
            ClientOp::Rollback => Some(self.rollback),
            ClientOp::State => None,
        }
    }
}

/// The longest phase 2 of one participant can take: every attempt runs to
/// the phase-2 timeout and waits the longest backoff before it (jitter only
/// shortens backoffs): `Σ_{a=1..max_attempts} (backoff(a) + phase2_timeout)`.
pub fn phase2_budget(config: &CoordinatorConfig) -> Duration {
    let retry = config.retry();
    (1..=retry.max_attempts())
        .map(|a| retry.backoff(a) + config.phase2_timeout())
        .sum()
}

/// A coordinator call made by a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientOp {
    /// `prepare_transaction`.
    Prepare,
    /// `commit_transaction`.
    Commit,
    /// `rollback_transaction`.
    Rollback,
    /// `get_transaction_state`.
    State,
}

/// What a client call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientResult {
    /// From `prepare_transaction`.
    Prepare(Result<PrepareOutcome, CoordinatorError>),
    /// From `commit_transaction` or `rollback_transaction`.
    Finish(Result<TransactionOutcome, CoordinatorError>),
    /// From `get_transaction_state`.
    State(Result<TransactionState, CoordinatorError>),
    /// The client dropped the future before it finished (its own timeout).
    Cancelled,
}

/// One client call, timed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCall {
    /// Which call.
    pub op: ClientOp,
    /// How long it took (until the client gave up, if cancelled).
    pub elapsed: Duration,
    /// What it returned.
    pub result: ClientResult,
}

/// One participant of a transaction, as the checker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantEvidence {
    /// Its name.
    pub name: String,
    /// The change staged for it (zero if the workload has no amounts).
    pub delta: i64,
    /// What it was told and did.
    pub record: CallRecord,
    /// What it still holds for the transaction at the end (reservation or
    /// pending credit), if the workload tracks that.
    pub held: Option<i64>,
}

/// Everything known about one transaction after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnEvidence {
    /// A name for messages (e.g. `t3 (client: Commit)`).
    pub label: String,
    /// The transaction.
    pub txn: TransactionId,
    /// Participants in registration order.
    pub participants: Vec<ParticipantEvidence>,
    /// The coordinator's final report (taken once the run is quiet).
    pub report: Result<TransactionReport, CoordinatorError>,
    /// Every client call on the transaction.
    pub calls: Vec<ClientCall>,
}

/// The checker's findings for one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnVerdict {
    /// The final decision (`None`: not decided, or the report is missing).
    pub decision: Option<Decision>,
    /// Whether the transaction was Committed or Aborted at the end (after a
    /// shutdown: whether every participant that needed phase 2 got it).
    pub finished: bool,
    /// Participants reported as hazards.
    pub hazards: usize,
    /// The in-doubt amount (see the [module docs](self)).
    pub in_doubt: i64,
    /// The sum of the changes participants applied.
    pub applied: i64,
    /// The sum of the changes participants still hold.
    pub held: i64,
    /// Invariant instances checked.
    pub checks: u64,
    /// Broken invariants, one message each.
    pub violations: Vec<String>,
}

impl TxnVerdict {
    fn check(&mut self, ok: bool, label: &str, message: impl FnOnce() -> String) {
        self.checks += 1;
        if !ok {
            self.violations.push(format!("{label}: {}", message()));
        }
    }
}

/// Checks one finished transaction against every per-transaction invariant
/// of the [module docs](self).
pub fn check_transaction(e: &TxnEvidence, bounds: &Bounds) -> TxnVerdict {
    let mut v = TxnVerdict::default();
    let label = e.label.as_str();
    let report = match &e.report {
        Ok(report) => report,
        Err(err) => {
            v.check(false, label, || {
                format!("no report at the end of the run: {}", error_summary(err))
            });
            return v;
        }
    };
    let state = report.state;
    v.finished = state.is_terminal();
    v.check(state.is_terminal(), label, || {
        format!("left unfinished in state {state}")
    });
    v.check(
        report.participants.len() == e.participants.len(),
        label,
        || {
            format!(
                "report lists {} participants, {} were registered",
                report.participants.len(),
                e.participants.len()
            )
        },
    );
    let decision = state.decision();
    v.decision = decision;
    let reported: BTreeSet<usize> = report
        .participants
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p.phase2, Phase2Status::GaveUp { .. }))
        .map(|(i, _)| i)
        .collect();
    v.hazards = reported.len();

    for (i, p) in e.participants.iter().enumerate() {
        let r = &p.record;
        let who = || format!("{} (#{i}; {r})", p.name);
        let hazard = reported.contains(&i);
        let voted = |want: &PreparedResult| r.vote.as_ref() == Some(want);
        let ready = voted(&PreparedResult::Ready);
        let said_no_work = matches!(
            r.vote,
            Some(PreparedResult::ReadOnly | PreparedResult::Aborted(_))
        );

        v.check(r.prepare_calls <= 1, label, || {
            format!("{} was asked to prepare {} times", who(), r.prepare_calls)
        });
        v.check(r.commit_calls == 0 || r.rollback_calls == 0, label, || {
            format!("{} got both commit and rollback", who())
        });
        if r.commit_calls > 0 {
            v.check(decision == Some(Decision::Commit), label, || {
                format!("{} got commit but the decision is {decision:?}", who())
            });
            v.check(ready, label, || {
                format!("{} got commit without having voted Ready", who())
            });
        }
        if r.rollback_calls > 0 {
            v.check(decision == Some(Decision::Abort), label, || {
                format!("{} got rollback but the decision is {decision:?}", who())
            });
            v.check(!said_no_work, label, || {
                format!("{} got rollback after voting ReadOnly/Aborted", who())
            });
        }
        if decision == Some(Decision::Commit) {
            v.check(ready || voted(&PreparedResult::ReadOnly), label, || {
                format!("decision Commit, but {} did not vote Ready/ReadOnly", who())
            });
        }
        if let Some(decision) = decision {
            let (needed, acked) = match decision {
                Decision::Commit => (ready, r.acked_commit),
                Decision::Abort => (!said_no_work, r.acked_rollback),
            };
            let lost = needed && !acked;
            v.check(!lost || hazard, label, || {
                format!(
                    "{} was lost after the {decision:?} decision but is not reported as a hazard",
                    who()
                )
            });
            v.check(lost || !hazard, label, || {
                format!(
                    "{} is reported as a hazard but was not lost (needed phase 2: {needed}, acknowledged: {acked})",
                    who()
                )
            });
            match decision {
                Decision::Commit if ready && !hazard => {
                    v.check(r.applied, label, || {
                        format!("decision Commit, but live {} never applied", who())
                    });
                }
                Decision::Abort => {
                    v.check(!r.applied, label, || {
                        format!("decision Abort, but {} applied the change", who())
                    });
                }
                Decision::Commit => {}
            }
            if decision == Decision::Commit && hazard && !r.applied {
                v.in_doubt += p.delta;
            }
        }
        if r.applied {
            v.applied += p.delta;
        }
        if let Some(claim) = report.participants.get(i) {
            check_report_entry(&mut v, label, &who, r, claim);
        }
        if let Some(held) = p.held {
            v.held += held;
            v.check(hazard, label, || {
                format!("live {} still holds {held} at the end", who())
            });
        }
    }

    check_abort_reason(&mut v, e, report);
    check_client_calls(&mut v, e, report, &reported, bounds);
    v
}

/// The report must tell the truth about each participant: the vote it
/// returned (or that its prepare failed), and how many phase-2 calls it got
/// and whether it acknowledged one.
fn check_report_entry(
    v: &mut TxnVerdict,
    label: &str,
    who: &dyn Fn() -> String,
    r: &CallRecord,
    claim: &ParticipantReport,
) {
    let prepare_ok = match (&claim.prepare, &r.vote) {
        (PrepareStatus::NotAsked, None) => r.prepare_calls == 0,
        (PrepareStatus::Voted(claimed), Some(vote)) => claimed == vote,
        (PrepareStatus::Failed(_), None) => r.prepare_calls == 1,
        _ => false,
    };
    v.check(prepare_ok, label, || {
        format!("{} is reported with prepare {:?}", who(), claim.prepare)
    });
    let calls = r.commit_calls + r.rollback_calls;
    let acked = r.acked_commit || r.acked_rollback;
    let phase2_ok = match &claim.phase2 {
        Phase2Status::NotSent => calls == 0,
        Phase2Status::Acknowledged { attempts } => acked && *attempts == calls,
        Phase2Status::GaveUp { attempts, .. } => !acked && *attempts == calls,
        Phase2Status::InFlight { .. } => false,
    };
    v.check(phase2_ok, label, || {
        format!("{} is reported with phase 2 {:?}", who(), claim.phase2)
    });
}

/// An abort blamed on a participant must match what that participant did.
fn check_abort_reason(v: &mut TxnVerdict, e: &TxnEvidence, report: &TransactionReport) {
    let label = e.label.as_str();
    let blamed = match &report.abort_reason {
        Some(AbortReason::Voted { index, reason, .. }) => Some((*index, Some(reason))),
        Some(AbortReason::PrepareFailed { index, .. }) => Some((*index, None)),
        _ => None,
    };
    let Some((index, reason)) = blamed else {
        return;
    };
    let Some(p) = e.participants.get(index) else {
        v.check(false, label, || {
            format!("abort blamed on participant #{index}, which does not exist")
        });
        return;
    };
    let r = &p.record;
    let ok = match reason {
        Some(reason) => r.vote == Some(PreparedResult::Aborted(reason.clone())),
        None => r.prepare_calls == 1 && r.vote.is_none(),
    };
    v.check(ok, label, || {
        format!(
            "abort blamed on {} ({:?}), which did otherwise: {r}",
            p.name, report.abort_reason
        )
    });
}

fn check_client_calls(
    v: &mut TxnVerdict,
    e: &TxnEvidence,
    report: &TransactionReport,
    reported: &BTreeSet<usize>,
    bounds: &Bounds,
) {
    let label = e.label.as_str();
    let decision = report.state.decision();
    for (n, call) in e.calls.iter().enumerate() {
        let what = || {
            format!(
                "client call #{n} {:?} -> {}",
                call.op,
                ResultSummary(&call.result)
            )
        };
        if call.result != ClientResult::Cancelled {
            if let Some(bound) = bounds.of(call.op) {
                v.check(call.elapsed <= bound, label, || {
                    format!(
                        "{} took {:?}, over its bound {bound:?}",
                        what(),
                        call.elapsed
                    )
                });
            }
        }
        match (&call.op, &call.result) {
            (_, ClientResult::Cancelled) => {}
            (ClientOp::Prepare, ClientResult::Prepare(Ok(PrepareOutcome::Prepared))) => {}
            (ClientOp::Prepare, ClientResult::Prepare(Ok(PrepareOutcome::Aborted(_)))) => {
                v.check(decision == Some(Decision::Abort), label, || {
                    format!("{} but the decision is {decision:?}", what())
                });
            }
            (ClientOp::Commit | ClientOp::Rollback, ClientResult::Finish(Ok(outcome))) => {
                let expected = if call.op == ClientOp::Commit {
                    Decision::Commit
                } else {
                    Decision::Abort
                };
                v.check(outcome.decision == expected, label, || {
                    format!("{} returned an outcome of the other decision", what())
                });
                v.check(Some(outcome.decision) == decision, label, || {
                    format!("{} but the final decision is {decision:?}", what())
                });
                let hazards: BTreeSet<usize> = outcome.hazards.iter().map(|h| h.index).collect();
                v.check(&hazards == reported, label, || {
                    format!(
                        "{} lists hazards {hazards:?}, the report {reported:?}",
                        what()
                    )
                });
            }
            (
                ClientOp::Commit,
                ClientResult::Finish(Err(CoordinatorError::InvalidState { current, .. })),
            ) => {
                let fine = match current.decision() {
                    None => matches!(
                        current,
                        TransactionState::Active | TransactionState::Preparing
                    ),
                    Some(d) => d == Decision::Abort && decision == Some(Decision::Abort),
                };
                v.check(fine, label, || {
                    format!("{} refused in a state where commit is allowed", what())
                });
            }
            (
                ClientOp::Rollback,
                ClientResult::Finish(Err(CoordinatorError::InvalidState { current, .. })),
            ) => {
                let fine = current.decision() == Some(Decision::Commit)
                    && decision == Some(Decision::Commit);
                v.check(fine, label, || {
                    format!("{} refused in a state where rollback is allowed", what())
                });
            }
            (ClientOp::State, ClientResult::State(Ok(state))) => {
                v.check(
                    state.decision().is_none() || state.decision() == decision,
                    label,
                    || format!("{} but the final decision is {decision:?}", what()),
                );
            }
            _ => v.check(false, label, || format!("unexpected result: {}", what())),
        }
    }
}

/// Checks a transaction whose coordinator was shut down (every handle
/// dropped) while it ran, so no report can be asked for: only the ground
/// truth of the participants counts. The decision is inferred — Commit if
/// any participant got `commit`, else Abort (presumed abort) — and then:
/// agreement and phase discipline as in [`check_transaction`]; commit
/// validity; every participant that needed phase 2 was *told* (got at least
/// one `commit`/`rollback` call: a participant the coordinator gave up on
/// was still tried, one never tried was forgotten — rules 12 and 13); for
/// Abort nobody applied, for Commit every `Ready` voter that acknowledged
/// applied; and holds remain only where a call was tried and never
/// acknowledged. The in-doubt amount is that of `Ready` voters of a Commit
/// that never applied.
pub fn check_after_shutdown(label: &str, participants: &[ParticipantEvidence]) -> TxnVerdict {
    let mut v = TxnVerdict::default();
    let commit = participants.iter().any(|p| p.record.commit_calls > 0);
    let decision = if commit {
        Decision::Commit
    } else {
        Decision::Abort
    };
    v.decision = Some(decision);
    v.finished = true;
    for (i, p) in participants.iter().enumerate() {
        let r = &p.record;
        let who = || format!("{} (#{i}; {r})", p.name);
        let ready = r.vote == Some(PreparedResult::Ready);
        let said_no_work = matches!(
            r.vote,
            Some(PreparedResult::ReadOnly | PreparedResult::Aborted(_))
        );
        v.check(r.prepare_calls <= 1, label, || {
            format!("{} was asked to prepare {} times", who(), r.prepare_calls)
        });
        v.check(r.rollback_calls == 0 || !commit, label, || {
            format!("{} got rollback while others got commit", who())
        });
        v.check(r.commit_calls == 0 || ready, label, || {
            format!("{} got commit without having voted Ready", who())
        });
        v.check(r.rollback_calls == 0 || !said_no_work, label, || {
            format!("{} got rollback after voting ReadOnly/Aborted", who())
        });
        let (needed, calls, acked) = match decision {
            Decision::Commit => {
                v.check(
                    ready || r.vote == Some(PreparedResult::ReadOnly),
                    label,
                    || format!("decision Commit, but {} did not vote Ready/ReadOnly", who()),
                );
                (ready, r.commit_calls, r.acked_commit)
            }
            Decision::Abort => {
                v.check(!r.applied, label, || {
                    format!("decision Abort, but {} applied the change", who())
                });
                (!said_no_work, r.rollback_calls, r.acked_rollback)
            }
        };
        v.finished &= !needed || calls > 0;
        v.check(!needed || calls > 0, label, || {
            format!(
                "{} was never told the {decision:?} outcome after the coordinator shut down",
                who()
            )
        });
        let lost = needed && !acked;
        if lost {
            v.hazards += 1;
        }
        if decision == Decision::Commit && ready {
            v.check(r.applied || !acked, label, || {
                format!("{} acknowledged commit without applying", who())
            });
            if !r.applied {
                v.in_doubt += p.delta;
            }
        }
        if r.applied {
            v.applied += p.delta;
        }
        if let Some(held) = p.held {
            v.held += held;
            v.check(lost && calls > 0, label, || {
                format!("{} still holds {held} at the end", who())
            });
        }
    }
    v
}

/// One participant of a transaction of a crash run, for
/// [`check_after_crash`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashParticipantEvidence {
    /// What the coordinators (before and after the restart) told it, and
    /// what it still holds at the end.
    pub evidence: ParticipantEvidence,
    /// Whether its change was applied, by a coordinator's `commit` or by
    /// the participant itself on learning the outcome.
    pub applied: bool,
    /// Whether it has died: it then answers no call and asks nothing.
    pub dead: bool,
    /// What a coordinator answered when the participant, in doubt (holding
    /// a prepared change), asked the outcome: the answer it acted on
    /// (`committed` or `aborted`, before or after a crash), or whatever
    /// the last restarted coordinator told it; `None` if it did not ask.
    pub asked: Option<OutcomeStatus>,
}

/// Everything known about one transaction of a crash run, for
/// [`check_after_crash`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashTxnEvidence {
    /// A name for messages.
    pub label: String,
    /// Participants in registration order.
    pub participants: Vec<CrashParticipantEvidence>,
    /// Some participant had received `commit` when the coordinator crashed.
    pub told_commit_before_crash: bool,
    /// Its Commit decision had reached the log when the coordinator
    /// crashed (whether or not its end record had too).
    pub logged_before_crash: bool,
    /// The restarted coordinator delivers its decision again
    /// ([`Recovery::redelivering`](dtxn::log::Recovery::redelivering)).
    pub redelivered: bool,
    /// What the restarted coordinator answers for it once everything
    /// settled.
    pub final_answer: OutcomeStatus,
}

/// Checks a transaction of a crash run: its coordinator crashed (every
/// call and log write of it stopped where it was), a new one recovered
/// from the decision log and settled, and every live participant still
/// holding a prepared change asked the new one the outcome and obeyed
/// (committed on `committed`, rolled back on `aborted`), as some did of
/// the coordinator before it crashed. Only the ground
/// truth counts, as in [`check_after_shutdown`], and the decision is
/// inferred: Commit if it reached the log or any participant applied,
/// else Abort. Then:
///
/// * write-ahead (rule 16): a participant told `commit` before the crash
///   means the decision had reached the log;
/// * agreement and phase discipline as in [`check_transaction`] (over the
///   calls of both coordinators), and commit validity;
/// * presumed abort is safe: no participant asking was told `aborted` for
///   a Commit, none was left without an answer (`pending` or `unknown`:
///   stuck in doubt);
/// * all-or-nothing: for Commit every `Ready` voter applied, unless it is
///   dead (a hazard, its change in doubt); for Abort nobody applied;
/// * nothing is held at the end but by dead participants (hazards);
/// * the final answer: `committed` for a decision delivered again;
///   `aborted` for an Abort (presumed abort: the id is the log's);
///   `aborted` or `committed` for a Commit that had ended before the crash
///   (its decision left the log with every participant acknowledged, so
///   nobody is left to ask; the [log docs](dtxn::log) say so); never
///   `pending` or `unknown`.
pub fn check_after_crash(e: &CrashTxnEvidence) -> TxnVerdict {
    let mut v = TxnVerdict::default();
    let label = e.label.as_str();
    let commit = e.logged_before_crash || e.redelivered || e.participants.iter().any(|p| p.applied);
    let decision = if commit {
        Decision::Commit
    } else {
        Decision::Abort
    };
    v.decision = Some(decision);
    v.finished = true;
    v.check(!e.told_commit_before_crash || e.logged_before_crash, label, || {
        "a participant was told commit before the crash, but the decision had not reached the log (rule 16)".to_owned()
    });
    for (i, cp) in e.participants.iter().enumerate() {
        let p = &cp.evidence;
        let r = &p.record;
        let who = || {
            format!(
                "{} (#{i}; {r}{}{})",
                p.name,
                if cp.dead { ", dead" } else { "" },
                match cp.asked {
                    Some(answer) => format!(", asked: {answer}"),
                    None => String::new(),
                }
            )
        };
        let ready = r.vote == Some(PreparedResult::Ready);
        let said_no_work = matches!(
            r.vote,
            Some(PreparedResult::ReadOnly | PreparedResult::Aborted(_))
        );
        v.check(r.prepare_calls <= 1, label, || {
            format!("{} was asked to prepare {} times", who(), r.prepare_calls)
        });
        v.check(r.commit_calls == 0 || r.rollback_calls == 0, label, || {
            format!("{} got both commit and rollback", who())
        });
        v.check(r.commit_calls == 0 || ready, label, || {
            format!("{} got commit without having voted Ready", who())
        });
        v.check(r.rollback_calls == 0 || !said_no_work, label, || {
            format!("{} got rollback after voting ReadOnly/Aborted", who())
        });
        v.check(r.rollback_calls == 0 || !commit, label, || {
            format!("{} got rollback but the decision is Commit", who())
        });
        match cp.asked {
            None | Some(OutcomeStatus::Committed | OutcomeStatus::Aborted) => {}
            Some(answer) => {
                v.finished = false;
                v.check(false, label, || {
                    format!(
                        "{} is stuck in doubt: the restarted coordinator answered {answer}",
                        who()
                    )
                });
            }
        }
        if cp.asked == Some(OutcomeStatus::Aborted) {
            v.check(!commit, label, || {
                format!("{} was told aborted, but the decision is Commit", who())
            });
        }
        let lost = match decision {
            Decision::Commit => {
                v.check(
                    ready || r.vote == Some(PreparedResult::ReadOnly),
                    label,
                    || format!("decision Commit, but {} did not vote Ready/ReadOnly", who()),
                );
                v.check(!ready || cp.applied || cp.dead, label, || {
                    format!("decision Commit, but live {} never applied", who())
                });
                if ready && !cp.applied {
                    v.in_doubt += p.delta;
                }
                ready && !cp.applied
            }
            Decision::Abort => p.held.is_some(),
        };
        if lost && cp.dead {
            v.hazards += 1;
        }
        if cp.applied {
            v.applied += p.delta;
        }
        if let Some(held) = p.held {
            v.held += held;
            v.check(cp.dead, label, || {
                format!("live {} still holds {held} at the end", who())
            });
        }
    }
    let answer = e.final_answer;
    let answer_ok = match decision {
        Decision::Commit if e.redelivered => answer == OutcomeStatus::Committed,
        Decision::Commit => matches!(answer, OutcomeStatus::Committed | OutcomeStatus::Aborted),
        Decision::Abort => answer == OutcomeStatus::Aborted,
    };
    v.check(answer_ok, label, || {
        format!(
            "the restarted coordinator answers {answer} for a {decision:?}{}",
            if e.redelivered {
                " it delivers again"
            } else {
                ""
            }
        )
    });
    v
}

/// Totals over a run, for [`check_ledger`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerTotals {
    /// Opening total balance.
    pub opening: i64,
    /// Final total balance.
    pub closing: i64,
    /// Sum of the in-doubt amounts of every transaction.
    pub in_doubt: i64,
    /// Sum of what the transactions' participants still hold, per the
    /// per-transaction evidence.
    pub held_by_transactions: i64,
    /// Sum of every hold left in the accounts.
    pub held_in_accounts: i64,
    /// The lowest final balance.
    pub lowest_balance: i64,
}

/// Checks conservation over a whole run (see the [module docs](self)).
/// Returns the violations and the number of invariants checked.
pub fn check_ledger(t: &LedgerTotals) -> (Vec<String>, u64) {
    let mut violations = Vec::new();
    let mut check = |ok: bool, message: String| {
        if !ok {
            violations.push(format!("ledger: {message}"));
        }
    };
    check(
        t.closing + t.in_doubt == t.opening,
        format!(
            "money not conserved: opening total {}, closing total {}, in doubt {} (closing + in doubt should equal opening)",
            t.opening, t.closing, t.in_doubt
        ),
    );
    check(
        t.held_in_accounts == t.held_by_transactions,
        format!(
            "accounts hold {} but the checked transactions account for {}",
            t.held_in_accounts, t.held_by_transactions
        ),
    );
    check(
        t.lowest_balance >= 0,
        format!("an account went negative: {}", t.lowest_balance),
    );
    (violations, 3)
}

/// A one-line summary of evidence for failure messages.
pub fn describe(e: &TxnEvidence) -> String {
    let mut out = String::new();
    let _ = write!(out, "{}:", e.label);
    match &e.report {
        Ok(r) => {
            let _ = write!(out, " state {}", r.state);
            if let Some(reason) = &r.abort_reason {
                let _ = write!(out, " ({reason})");
            }
        }
        Err(err) => {
            let _ = write!(out, " {}", error_summary(err));
        }
    }
    for p in &e.participants {
        let _ = write!(out, "\n    {} delta {:+}: {}", p.name, p.delta, p.record);
        if let Some(h) = p.held {
            let _ = write!(out, ", holds {h}");
        }
    }
    for c in &e.calls {
        let _ = write!(
            out,
            "\n    client {:?} in {:?}: {}",
            c.op,
            c.elapsed,
            ResultSummary(&c.result)
        );
    }
    out
}

/// A coordinator error without the transaction id (whose random nonce
/// would make messages differ between otherwise identical runs).
pub fn error_summary(e: &CoordinatorError) -> String {
    match e {
        CoordinatorError::NotFound { .. } => "NotFound".to_owned(),
        CoordinatorError::InvalidState {
            current, operation, ..
        } => format!("InvalidState (cannot {operation} when {current})"),
        CoordinatorError::TooManyParticipants { limit, .. } => {
            format!("TooManyParticipants (limit {limit})")
        }
        CoordinatorError::CapacityExceeded { limit } => {
            format!("CapacityExceeded (limit {limit})")
        }
        CoordinatorError::ShuttingDown => "ShuttingDown".to_owned(),
        other => other.to_string(),
    }
}

struct ResultSummary<'a>(&'a ClientResult);

impl fmt::Display for ResultSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ClientResult::Prepare(Ok(o)) => write!(f, "{o:?}"),
            ClientResult::Finish(Ok(o)) => {
                write!(f, "{:?}, {} hazards", o.decision, o.hazards.len())
            }
            ClientResult::State(Ok(s)) => write!(f, "{s}"),
            ClientResult::Prepare(Err(e))
            | ClientResult::Finish(Err(e))
            | ClientResult::State(Err(e)) => write!(f, "error: {}", error_summary(e)),
            ClientResult::Cancelled => f.write_str("cancelled by the client"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TXN: TransactionId = TransactionId::from_u128(1);

    fn ready_record() -> CallRecord {
        CallRecord {
            prepare_calls: 1,
            vote: Some(PreparedResult::Ready),
            ..CallRecord::default()
        }
    }

    /// One `Ready` voter of a committed transaction, told `commit` `calls`
    /// times, and the report's claim about it.
    fn committed(record: CallRecord, claim: Phase2Status) -> TxnEvidence {
        TxnEvidence {
            label: "t1".into(),
            txn: TXN,
            participants: vec![ParticipantEvidence {
                name: "a".into(),
                delta: 5,
                record,
                held: None,
            }],
            report: Ok(TransactionReport {
                txn: TXN,
                state: TransactionState::Committed,
                abort_reason: None,
                participants: vec![ParticipantReport {
                    name: "a".into(),
                    prepare: PrepareStatus::Voted(PreparedResult::Ready),
                    phase2: claim,
                    prepare_latency: None,
                    phase2_latency: None,
                }],
                elapsed: Duration::ZERO,
                prepare_started: None,
                decided: None,
            }),
            calls: Vec::new(),
        }
    }

    fn bounds() -> Bounds {
        Bounds::for_config(&CoordinatorConfig::default(), Duration::ZERO)
    }

    #[test]
    fn an_honest_commit_passes() {
        let record = CallRecord {
            commit_calls: 1,
            applied: true,
            acked_commit: true,
            ..ready_record()
        };
        let v = check_transaction(
            &committed(record, Phase2Status::Acknowledged { attempts: 1 }),
            &bounds(),
        );
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert!(v.checks > 5);
        assert_eq!((v.applied, v.in_doubt, v.hazards), (5, 0, 0));
    }

    #[test]
    fn a_participant_lost_after_commit_but_reported_acknowledged_is_a_missing_hazard() {
        let record = CallRecord {
            commit_calls: 3,
            ..ready_record()
        };
        let v = check_transaction(
            &committed(record, Phase2Status::Acknowledged { attempts: 3 }),
            &bounds(),
        );
        let text = v.violations.join("\n");
        assert!(text.contains("not reported as a hazard"), "{text}");
        assert!(text.contains("never applied"), "{text}");
    }

    #[test]
    fn a_hazard_on_a_participant_that_acknowledged_is_spurious() {
        let record = CallRecord {
            commit_calls: 1,
            applied: true,
            acked_commit: true,
            ..ready_record()
        };
        let gave_up = Phase2Status::GaveUp {
            attempts: 1,
            last: Box::new(dtxn::CallFailure::TimedOut),
        };
        let v = check_transaction(&committed(record, gave_up), &bounds());
        assert!(
            v.violations.iter().any(|m| m.contains("was not lost")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn an_unapplied_hazard_counts_as_in_doubt() {
        let record = CallRecord {
            commit_calls: 2,
            ..ready_record()
        };
        let gave_up = Phase2Status::GaveUp {
            attempts: 2,
            last: Box::new(dtxn::CallFailure::TimedOut),
        };
        let v = check_transaction(&committed(record, gave_up), &bounds());
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!((v.in_doubt, v.hazards), (5, 1));
    }

    #[test]
    fn a_slow_call_breaks_its_bound() {
        let mut e = committed(
            CallRecord {
                commit_calls: 1,
                applied: true,
                acked_commit: true,
                ..ready_record()
            },
            Phase2Status::Acknowledged { attempts: 1 },
        );
        e.calls.push(ClientCall {
            op: ClientOp::Prepare,
            elapsed: CoordinatorConfig::default().prepare_timeout() + Duration::from_millis(1),
            result: ClientResult::Prepare(Ok(PrepareOutcome::Prepared)),
        });
        let v = check_transaction(&e, &bounds());
        assert!(
            v.violations.iter().any(|m| m.contains("over its bound")),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn money_is_conserved_only_counting_in_doubt_amounts() {
        let mut t = LedgerTotals {
            opening: 100,
            closing: 95,
            in_doubt: 5,
            ..LedgerTotals::default()
        };
        assert!(check_ledger(&t).0.is_empty());
        t.in_doubt = 0;
        assert_eq!(check_ledger(&t).0.len(), 1);
    }

    /// A crashed transaction of `Ready` voters with these (applied, dead,
    /// asked, held) states.
    fn crashed(
        participants: &[(bool, bool, Option<OutcomeStatus>, Option<i64>)],
    ) -> CrashTxnEvidence {
        CrashTxnEvidence {
            label: "t1".into(),
            participants: participants
                .iter()
                .enumerate()
                .map(
                    |(i, &(applied, dead, asked, held))| CrashParticipantEvidence {
                        evidence: ParticipantEvidence {
                            name: format!("p{i}"),
                            delta: 5,
                            record: ready_record(),
                            held,
                        },
                        applied,
                        dead,
                        asked,
                    },
                )
                .collect(),
            told_commit_before_crash: false,
            logged_before_crash: false,
            redelivered: false,
            final_answer: OutcomeStatus::Aborted,
        }
    }

    #[test]
    fn after_a_crash_presumed_abort_with_everyone_rolled_back_passes() {
        let aborted = Some(OutcomeStatus::Aborted);
        let v = check_after_crash(&crashed(&[(false, false, aborted, None); 2]));
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!(
            (v.decision, v.hazards, v.in_doubt),
            (Some(Decision::Abort), 0, 0)
        );
    }

    #[test]
    fn after_a_crash_a_commit_told_before_the_decision_was_logged_is_a_violation() {
        let mut e = crashed(&[(true, false, None, None), (false, false, None, None)]);
        e.told_commit_before_crash = true;
        e.participants[0].evidence.record.commit_calls = 1;
        e.participants[1].asked = Some(OutcomeStatus::Aborted);
        let text = check_after_crash(&e).violations.join("\n");
        assert!(text.contains("had not reached the log"), "{text}");
        assert!(
            text.contains("told aborted, but the decision is Commit"),
            "{text}"
        );
        assert!(text.contains("never applied"), "{text}");
    }

    #[test]
    fn after_a_crash_an_undecided_answer_leaves_a_participant_stuck() {
        let pending = Some(OutcomeStatus::Pending);
        let v = check_after_crash(&crashed(&[(false, false, pending, Some(5))]));
        assert!(!v.finished);
        let text = v.violations.join("\n");
        assert!(text.contains("stuck in doubt"), "{text}");
        assert!(text.contains("still holds 5"), "{text}");
    }

    #[test]
    fn after_a_crash_a_dead_participant_in_doubt_is_a_hazard() {
        let mut e = crashed(&[(true, false, None, None), (false, true, None, Some(5))]);
        e.logged_before_crash = true;
        e.redelivered = true;
        e.final_answer = OutcomeStatus::Committed;
        let v = check_after_crash(&e);
        assert!(v.violations.is_empty(), "{:?}", v.violations);
        assert_eq!((v.hazards, v.in_doubt, v.held), (1, 5, 5));
        e.final_answer = OutcomeStatus::Aborted;
        assert_eq!(check_after_crash(&e).violations.len(), 1);
    }

    #[test]
    fn after_a_shutdown_a_ready_voter_never_told_is_a_violation() {
        let p = ParticipantEvidence {
            name: "a".into(),
            delta: -5,
            record: ready_record(),
            held: Some(-5),
        };
        let v = check_after_shutdown("t1", &[p]);
        assert_eq!(v.decision, Some(Decision::Abort));
        assert_eq!(v.violations.len(), 2, "{:?}", v.violations);
    }
}
