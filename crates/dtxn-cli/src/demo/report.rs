//! The demo's report: a few readable lines for people, one JSON line for
//! machines.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use dtxn::AbortReason;

use super::check::{Check, StoreTotals};
use super::transport::Transport;
use super::workload::FaultKind;
use super::{TxnRecord, TxnResult};
use crate::units;

/// Latency percentiles in milliseconds, at microsecond resolution.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// The run's results; serialized as the `--json` line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Transactions run.
    pub transactions: usize,
    /// Decided Commit.
    pub committed: usize,
    /// Decided Abort.
    pub aborted: usize,
    /// Did not finish (a coordinator error or a stuck transaction).
    pub failed: usize,
    /// Participants given up on in phase 2, over all transactions.
    pub hazards: usize,
    /// Aborted transactions by normalized reason.
    pub aborted_by_reason: BTreeMap<String, usize>,
    /// Faults actually injected, by kind.
    pub faults_injected: BTreeMap<&'static str, usize>,
    /// Finished transactions per second.
    pub throughput_tps: f64,
    /// Per-transaction latency, begin to final outcome.
    pub latency_ms: LatencyMs,
    /// Wall time of the run.
    pub elapsed_s: f64,
    /// Whether the consistency check passed.
    pub consistent: bool,
    /// What the consistency check found wrong.
    pub violations: Vec<String>,
    /// Store totals after the run.
    pub stores: StoreTotals,
    /// The workload seed (replay with `--seed`).
    pub seed: u64,
    /// Transactions in flight at most.
    pub concurrency: usize,
    /// Probability of a fault per transaction.
    pub fault_rate: f64,
    /// How the coordinator reached the services: `in-process` or `http`.
    pub mode: Transport,
    /// Where the services kept their state: `memory` or `sqlite`.
    pub state: StateKind,
    /// With SQLite state: the temporary directory that held the databases
    /// (removed when the run ended).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
}

/// Where the services kept their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateKind {
    /// In memory, in process.
    Memory,
    /// In one SQLite file per service, behind the participant barrier.
    Sqlite,
}

/// Everything needed to build a [`Summary`] besides the records.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The seed.
    pub seed: u64,
    /// The concurrency limit.
    pub concurrency: usize,
    /// The fault rate.
    pub fault_rate: f64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Faults injected, by kind.
    pub faults_injected: BTreeMap<&'static str, usize>,
    /// How the coordinator reached the services.
    pub transport: Transport,
    /// Where the services kept their state.
    pub state: StateKind,
    /// The removed directory of the SQLite state, if any.
    pub state_dir: Option<String>,
}

impl Summary {
    /// Summarizes the `records` of a run and its consistency `check`.
    pub fn new(records: &[TxnRecord], check: Check, info: RunInfo) -> Self {
        let mut committed = 0;
        let mut aborted = 0;
        let mut failed = 0;
        let mut hazards = 0;
        let mut aborted_by_reason = BTreeMap::new();
        for record in records {
            match &record.result {
                TxnResult::Finished(outcome) => {
                    hazards += outcome.hazards.len();
                    if outcome.is_committed() {
                        committed += 1;
                    } else {
                        aborted += 1;
                        let reason = outcome
                            .abort_reason
                            .as_ref()
                            .map_or_else(|| "no reason given".to_owned(), normalize_reason);
                        *aborted_by_reason.entry(reason).or_default() += 1;
                    }
                }
                TxnResult::Failed(_) => failed += 1,
            }
        }
        let mut latencies: Vec<Duration> = records.iter().map(|r| r.latency).collect();
        latencies.sort_unstable();
        let elapsed_s = info.elapsed.as_secs_f64();
        let finished = committed + aborted;
        Self {
            transactions: records.len(),
            committed,
            aborted,
            failed,
            hazards,
            aborted_by_reason,
            faults_injected: info.faults_injected,
            throughput_tps: if elapsed_s > 0.0 {
                units::round(finished as f64 / elapsed_s, 1)
            } else {
                0.0
            },
            latency_ms: LatencyMs {
                p50: percentile_ms(&latencies, 0.50),
                p90: percentile_ms(&latencies, 0.90),
                p99: percentile_ms(&latencies, 0.99),
                max: percentile_ms(&latencies, 1.0),
            },
            elapsed_s: units::round(elapsed_s, 3),
            consistent: check.consistent(),
            violations: check.violations,
            stores: check.totals,
            seed: info.seed,
            concurrency: info.concurrency,
            fault_rate: info.fault_rate,
            mode: info.transport,
            state: info.state,
            state_dir: info.state_dir,
        }
    }
}

/// An abort reason as a group key: its `Display` without parenthesized
/// details, so "ProductService voted to abort: out of stock (hoodie)" and
/// "... (tote-bag)" count together.
pub fn normalize_reason(reason: &AbortReason) -> String {
    strip_details(&reason.to_string())
}

fn strip_details(text: &str) -> String {
    let mut kept = String::with_capacity(text.len());
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => kept.push(c),
            _ => {}
        }
    }
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Nearest-rank percentile of sorted `latencies`, in milliseconds at
/// microsecond resolution.
fn percentile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    units::millis(sorted[index])
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.transactions;
        writeln!(
            f,
            "dtxn demo: {n} sign-ups with a free welcome product \
             (UserService + ProductService + OrderService, two-phase commit)"
        )?;
        let mode = match self.mode {
            Transport::InProcess => "the coordinator calls the services in process",
            Transport::Http => "the coordinator calls the services over HTTP on loopback",
        };
        writeln!(
            f,
            "  mode {} ({mode}), concurrency {}, fault rate {:.1}%, seed {}",
            self.mode,
            self.concurrency,
            self.fault_rate * 100.0,
            self.seed
        )?;
        match (&self.state, &self.state_dir) {
            (StateKind::Sqlite, Some(dir)) => writeln!(
                f,
                "  state in SQLite behind the participant barrier, one file per service in {dir} (removed)"
            )?,
            (StateKind::Sqlite, None) => {
                writeln!(f, "  state in SQLite behind the participant barrier")?
            }
            (StateKind::Memory, _) => writeln!(f, "  state in memory")?,
        }
        writeln!(f)?;
        writeln!(
            f,
            "  committed    {:>7}  {:5.1}%",
            self.committed,
            percent(self.committed, n)
        )?;
        writeln!(
            f,
            "  aborted      {:>7}  {:5.1}%",
            self.aborted,
            percent(self.aborted, n)
        )?;
        let mut reasons: Vec<_> = self.aborted_by_reason.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (reason, count) in reasons {
            writeln!(f, "    {count:>6}  {reason}")?;
        }
        if self.failed > 0 {
            writeln!(
                f,
                "  failed       {:>7}  {:5.1}%  (did not finish)",
                self.failed,
                percent(self.failed, n)
            )?;
        }
        writeln!(
            f,
            "  hazards      {:>7}  participants given up on after the decision",
            self.hazards
        )?;
        let injected: usize = self.faults_injected.values().sum();
        let kinds: Vec<String> = FaultKind::ALL
            .iter()
            .filter_map(|kind| {
                let count = self.faults_injected.get(kind.label()).copied()?;
                (count > 0).then(|| format!("{count} {}", kind.label()))
            })
            .collect();
        if kinds.is_empty() {
            writeln!(f, "  faults       {injected:>7}  injected")?;
        } else {
            writeln!(
                f,
                "  faults       {injected:>7}  injected: {}",
                kinds.join(", ")
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "  throughput   {:>7.0} tx/s over {:.2} s",
            self.throughput_tps, self.elapsed_s
        )?;
        let l = &self.latency_ms;
        writeln!(
            f,
            "  latency      p50 {:.1} ms   p90 {:.1} ms   p99 {:.1} ms   max {:.1} ms   (begin to outcome)",
            l.p50, l.p90, l.p99, l.max
        )?;
        writeln!(f)?;
        let s = &self.stores;
        if self.consistent {
            writeln!(
                f,
                "  consistency  OK: {} users, {} orders, {} products given out; \
                 inventory conserved ({} = {} in stock + {} given); no reservation left",
                s.users, s.orders, s.units_given, s.initial_stock, s.remaining_stock, s.units_given
            )?;
        } else {
            writeln!(
                f,
                "  consistency  FAILED: {} violation(s)",
                self.violations.len()
            )?;
            for violation in &self.violations {
                writeln!(f, "    - {violation}")?;
            }
        }
        writeln!(f)?;
        let http = match self.mode {
            Transport::InProcess => "",
            Transport::Http => " --http",
        };
        writeln!(
            f,
            "replay: dtxn demo{http} --transactions {n} --concurrency {} --fault-rate {} --seed {}",
            self.concurrency, self.fault_rate, self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtxn::CallFailure;

    #[test]
    fn reasons_group_without_details() {
        let reason = |r: &str| AbortReason::Voted {
            participant: "ProductService".to_owned(),
            index: 1,
            reason: r.to_owned(),
        };
        assert_eq!(
            normalize_reason(&reason("out of stock (hoodie)")),
            normalize_reason(&reason("out of stock (tote-bag)"))
        );
        assert_eq!(
            normalize_reason(&reason("out of stock (hoodie)")),
            "ProductService voted to abort: out of stock"
        );
        let timed_out = AbortReason::PrepareFailed {
            participant: "OrderService".to_owned(),
            index: 2,
            failure: CallFailure::TimedOut,
        };
        assert_eq!(
            normalize_reason(&timed_out),
            "OrderService failed to prepare: timed out"
        );
    }

    #[test]
    fn latencies_print_without_float_noise() {
        // 4.015 ms as a naive float is 4.015000000000001.
        let sorted = [
            Duration::from_nanos(4_015_000),
            Duration::from_micros(7_300),
        ];
        let summary = Summary {
            latency_ms: LatencyMs {
                p50: percentile_ms(&sorted, 0.5),
                p90: percentile_ms(&sorted, 0.9),
                p99: percentile_ms(&sorted, 0.99),
                max: percentile_ms(&sorted, 1.0),
            },
            ..sample_summary()
        };
        let json = units::json_line(&summary).unwrap();
        assert!(
            json.contains(r#""latency_ms":{"p50":4.015,"p90":7.3,"p99":7.3,"max":7.3}"#),
            "{json}"
        );
        assert!(json.contains(r#""elapsed_s":2.5,"#), "{json}");
        let text = summary.to_string();
        assert!(
            text.contains("p50 4.0 ms   p90 7.3 ms   p99 7.3 ms   max 7.3 ms"),
            "{text}"
        );
    }

    fn sample_summary() -> Summary {
        let check = Check {
            violations: Vec::new(),
            totals: StoreTotals {
                users: 0,
                orders: 0,
                units_given: 0,
                initial_stock: 10,
                remaining_stock: 10,
            },
        };
        Summary::new(
            &[],
            check,
            RunInfo {
                seed: 1,
                concurrency: 8,
                fault_rate: 0.05,
                elapsed: Duration::from_nanos(2_500_000_001),
                faults_injected: BTreeMap::new(),
                transport: Transport::InProcess,
                state: StateKind::Memory,
                state_dir: None,
            },
        )
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&sorted, 0.5), 50.0);
        assert_eq!(percentile_ms(&sorted, 0.99), 99.0);
        assert_eq!(percentile_ms(&sorted, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
