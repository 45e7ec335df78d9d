//! `dtxn`: the command-line front end of the dtxn coordinator.
//!
//! Without a subcommand it runs the demo scenario (see [`demo`]), so
//! `dtxn --transactions 5000 --json` and `dtxn demo --transactions 5000
//! --json` are the same run.
//!
//! `bench` and `soak` are behind the cargo features of the same names (on
//! by default); `cargo build --release -p dtxn-cli --no-default-features`
//! builds the lean binary operators deploy: demo, serve, service and
//! loadgen, without benchmark code, peer crates or test utilities.
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `warn`: heuristic
//! hazards and protocol violations, not the failures the demo injects on
//! purpose, which the coordinator logs at `info`).

#[cfg(feature = "bench")]
mod bench;
#[cfg(feature = "bench")]
mod chart;
mod cluster;
mod demo;
mod loadgen;
mod serve;
mod service;
#[cfg(feature = "soak")]
mod soak;
mod units;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// With `bench`, the global allocator counts allocations while workload (e)
/// asks it to (one relaxed atomic load per allocation otherwise); the lean
/// binary keeps the system allocator as it is.
#[cfg(feature = "bench")]
#[global_allocator]
static ALLOCATOR: dtxn_bench::alloc::Counting = dtxn_bench::alloc::Counting;

/// The log filter when `RUST_LOG` is not set.
const DEFAULT_LOG_FILTER: &str = "warn";

/// Two-phase-commit transactions across in-process or HTTP services.
#[derive(Debug, Parser)]
#[command(name = "dtxn", version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Demo options, used when no subcommand is given.
    #[command(flatten, next_help_heading = "Demo options (when no command is given)")]
    demo: demo::DemoArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo scenario: concurrent sign-ups across a user, a product
    /// and an order service, some failing, then a consistency check (the
    /// default command).
    Demo(demo::DemoArgs),
    /// Chaos soak: many bank transfers (1 to 100 participants, up to 1000
    /// at once) with random participant faults, then a check of the
    /// atomicity invariants (exits 1 if one broke).
    #[cfg(feature = "soak")]
    Soak(soak::SoakArgs),
    /// Benchmark dtxn against the floor (the participants called directly,
    /// no coordination), a hand-written baseline coordinator and the peer
    /// crates dist_tx and steno, and check dtxn's performance targets.
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// Run one of the demo's services (users, products or orders) as a
    /// standalone HTTP participant service, with `GET /state` to inspect
    /// its store. Stops on Ctrl-C.
    Service(service::ServiceArgs),
    /// Run the coordinator as an HTTP/JSON service: transactions under
    /// /transactions, OpenAPI at /openapi.json, Prometheus metrics at
    /// /metrics, /health. Ctrl-C or SIGTERM shuts it down gracefully.
    Serve(Box<serve::ServeArgs>),
    /// Load the coordinator's HTTP API with full transactions and report
    /// throughput, latency and failures (without --target, starts the
    /// coordinator and no-op participant services on loopback in this
    /// process).
    Loadgen(loadgen::LoadgenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(feature = "soak")]
    if let Some(Command::Soak(args)) = cli.command {
        // Hazards are the point of a soak: log only errors by default. The
        // soak builds its own runtime.
        init_tracing("error");
        return soak::execute(args);
    }
    #[cfg(feature = "bench")]
    if let Some(Command::Bench(args)) = cli.command {
        // The bench builds its own runtime.
        init_tracing(DEFAULT_LOG_FILTER);
        return bench::execute(args);
    }
    init_tracing(match cli.command {
        Some(Command::Service(_) | Command::Loadgen(_)) => DEFAULT_LOG_FILTER,
        Some(Command::Serve(_)) => serve::LOG_FILTER,
        _ => demo::LOG_FILTER,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dtxn: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Demo(args)) => runtime.block_on(demo::execute(args)),
        None => runtime.block_on(demo::execute(cli.demo)),
        Some(Command::Service(args)) => runtime.block_on(service::execute(args)),
        Some(Command::Serve(args)) => runtime.block_on(serve::execute(*args)),
        Some(Command::Loadgen(args)) => runtime.block_on(loadgen::execute(args)),
        #[cfg(feature = "soak")]
        Some(Command::Soak(_)) => unreachable!("handled above"),
        #[cfg(feature = "bench")]
        Some(Command::Bench(_)) => unreachable!("handled above"),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` or `default_filter`.
fn init_tracing(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
