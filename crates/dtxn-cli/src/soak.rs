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
    /// Probability that a transaction gets participant faults (0 to 1).
    #[arg(long, default_value_t = 0.2, value_parser = probability)]
    pub fault_rate: f64,
    /// Workload seed (random when omitted); the interleaving is not seeded.
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
            "dtxn soak: {} transactions, up to {} at once, 1-{} participants each, fault rate {:.0}%, seed {seed}",
            params.transactions,
            params.concurrency,
            max_participants,
            params.fault_rate * 100.0
        );
    }
    let report = soak(&params);
    if args.json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("dtxn soak: cannot serialize the report: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        print_human(&report);
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn print_human(r: &SoakReport) {
    let f = &r.faults;
    println!(
        "  transactions {:>8}   committed {}   aborted {}   unfinished {}",
        r.transactions, r.committed, r.aborted, r.unfinished
    );
    println!(
        "  faults       {:>8}   errors {}   panics {}   hangs {}   deaths {}   slow {}",
        f.error + f.panic + f.hang + f.death + f.slow,
        f.error,
        f.panic,
        f.hang,
        f.death,
        f.slow
    );
    println!(
        "  hazards      {:>8}   in {} transactions; in doubt {}, still held {}",
        r.hazards, r.transactions_with_hazards, r.in_doubt, r.held
    );
    println!(
        "  checked      {:>8}   invariants (conservation, all-or-nothing, exact hazards, nothing unfinished, call bounds)",
        r.invariants_checked
    );
    println!(
        "  time         {:>6.1} s   max scheduler lag {} ms",
        r.elapsed_ms as f64 / 1000.0,
        r.max_scheduler_lag_ms
    );
    if r.passed() {
        println!("  violations          0");
    } else {
        println!("  violations   {:>8}", r.violation_count);
        for m in &r.messages {
            println!("    - {m}");
        }
    }
    println!(
        "replay the workload: dtxn soak --transactions {} --seed {}",
        r.transactions, r.seed
    );
}
