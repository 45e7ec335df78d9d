//! `dtxn soak`: a chaos soak of the coordinator.
//!
//! Runs many bank transfers through two-phase commit — up to 1000 at once,
//! each across 1 to 100 accounts — while participants fail at random
//! (errors, panics, hangs, permanent death, slowness at every crash point),
//! then checks the invariants of [`dtxn_verify::check`]: money conserved
//! (amounts left in doubt by heuristic hazards counted apart), every
//! transaction all-or-nothing among its live participants, hazards reported
//! exactly where a participant was lost, nothing left unfinished, every call
//! back within its bound. Exits 1 if any invariant broke.

use std::process::ExitCode;

use clap::Args;
use dtxn_verify::{soak, SoakParams, SoakReport};

/// Options of `dtxn soak`.
#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// Transactions to run.
    #[arg(long, default_value_t = 10_000)]
    pub transactions: usize,
    /// Transactions in flight at once (1 to 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub concurrency: u16,
    /// Participants per transaction: 1 to this many (1 to 100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub max_participants: u8,
    /// Probability that a transaction gets participant faults (errors,
    /// panics, hangs, deaths or slow answers in 1 to 3 of its
    /// participants), between 0 and 1.
    #[arg(long, default_value_t = 0.2, value_parser = probability)]
    pub fault_rate: f64,
    /// Seed of the workload (random when omitted; the summary prints it).
    /// A replay runs the same transfers and faults; the thread
    /// interleaving is not seeded.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print one line of JSON instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not between 0 and 1"))
    }
}

/// Runs the soak (it builds its own runtime: call outside one).
pub fn execute(args: SoakArgs) -> ExitCode {
    dtxn_verify::silence_injected_panics();
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let max_participants = usize::from(args.max_participants);
    let params = SoakParams {
        transactions: args.transactions,
        concurrency: usize::from(args.concurrency),
        max_participants,
        accounts: SoakParams::default().accounts.max(max_participants),
        fault_rate: args.fault_rate,
        seed,
        ..SoakParams::default()
    };
    if !args.json {
        eprintln!(
            "dtxn soak: {} bank transfers, up to {} at once, 1 to {} participants each, \
             participant faults in {}% of transactions, seed {seed}",
            params.transactions,
            params.concurrency,
            max_participants,
            crate::units::round(params.fault_rate * 100.0, 2)
        );
    }
    let report = soak(&params);
    if args.json {
        match crate::units::json_line(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("dtxn soak: cannot serialize the report: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print!("{}", render(&report, &params));
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The report as text; `params` give the replay command.
fn render(r: &SoakReport, params: &SoakParams) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let f = &r.faults;
    let _ = writeln!(
        s,
        "  transactions {:>9}   committed {}, aborted {}, unfinished {}",
        r.transactions, r.committed, r.aborted, r.unfinished
    );
    let _ = writeln!(
        s,
        "  faults       {:>9}   injected: {} errors, {} panics, {} hangs, {} participant deaths, {} slow answers",
        f.error + f.panic + f.hang + f.death + f.slow,
        f.error,
        f.panic,
        f.hang,
        f.death,
        f.slow
    );
    let _ = writeln!(
        s,
        "  hazards      {:>9}   participants given up on after the decision (heuristic hazards), in {} transactions",
        r.hazards, r.transactions_with_hazards
    );
    let _ = writeln!(
        s,
        "  in doubt     {:>9}   money: opening total - closing total, the transfer legs hazards left unapplied",
        r.in_doubt
    );
    let _ = writeln!(
        s,
        "  still held   {:>9}   money reserved by hazard participants that never learned the outcome",
        r.held
    );
    let _ = writeln!(
        s,
        "  checked      {:>9}   invariant checks: money conserved, all-or-nothing, hazards exact, nothing unfinished, calls within bounds",
        r.invariants_checked
    );
    let _ = writeln!(
        s,
        "  wall time    {:>7.1} s   worst scheduler lag {} ms (how late a woken task got a thread)",
        r.elapsed_ms as f64 / 1000.0,
        r.max_scheduler_lag_ms
    );
    let _ = writeln!(s, "  violations   {:>9}", r.violation_count);
    for m in &r.messages {
        let _ = writeln!(s, "    - {m}");
    }
    let _ = writeln!(
        s,
        "replay this workload: dtxn soak --transactions {} --concurrency {} --max-participants {} --fault-rate {} --seed {}",
        r.transactions, params.concurrency, params.max_participants, params.fault_rate, r.seed
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_is_labelled() {
        let report = SoakReport {
            seed: 9,
            transactions: 200,
            committed: 150,
            aborted: 50,
            hazards: 3,
            transactions_with_hazards: 2,
            in_doubt: -83,
            held: 40,
            invariants_checked: 12_345,
            elapsed_ms: 1_500,
            ..SoakReport::default()
        };
        let params = SoakParams {
            transactions: 200,
            concurrency: 50,
            max_participants: 10,
            fault_rate: 0.3,
            seed: 9,
            ..SoakParams::default()
        };
        let text = render(&report, &params);
        let line = |needle: &str| {
            text.lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
                .to_owned()
        };
        let in_doubt = line("-83");
        assert!(in_doubt.contains("in doubt"), "{in_doubt}");
        assert!(in_doubt.contains("money"), "{in_doubt}");
        assert!(line(" 40 ").contains("still held"), "{text}");
        assert!(line("12345").contains("invariant checks"), "{text}");
        assert!(line("1.5 s").contains("wall time"), "{text}");
        assert!(
            line("replay").ends_with(
                "dtxn soak --transactions 200 --concurrency 50 --max-participants 10 --fault-rate 0.3 --seed 9"
            ),
            "{text}"
        );
    }
}
