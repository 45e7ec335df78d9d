//! End-to-end test of the demo: runs the `dtxn` binary and checks its JSON
//! summary.

mod common;

use std::process::Command;

use serde_json::Value;

fn run_json(args: &[&str]) -> (Value, Option<i32>) {
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .args(args)
        .output()
        .expect("the dtxn binary runs");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints exactly one line: {stdout}");
    common::assert_no_float_noise(lines[0]);
    let summary = serde_json::from_str(lines[0]).expect("the line is JSON");
    (summary, output.status.code())
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is a count in {summary}"))
}

#[test]
fn default_command_runs_a_consistent_demo() {
    let (summary, code) = run_json(&["--transactions", "300", "--json", "--seed", "7"]);
    assert_eq!(summary["consistent"], Value::Bool(true), "{summary}");
    assert_eq!(code, Some(0));
    assert_eq!(summary["seed"], 7);
    assert_eq!(summary["mode"], "in-process");
    assert_eq!(summary["state"], "memory");
    assert_eq!(summary.get("state_dir"), None, "{summary}");
    assert_eq!(count(&summary, "transactions"), 300);
    assert_eq!(
        count(&summary, "committed") + count(&summary, "aborted"),
        300
    );
    assert!(count(&summary, "committed") > 0, "{summary}");

    let reasons = summary["aborted_by_reason"]
        .as_object()
        .expect("aborted_by_reason is an object");
    assert!(!reasons.is_empty(), "some sign-ups must abort: {summary}");
    let by_reason: u64 = reasons.values().filter_map(Value::as_u64).sum();
    assert_eq!(by_reason, count(&summary, "aborted"));
    assert!(
        reasons.keys().any(|r| r.contains("out of stock")),
        "limited products run out: {summary}"
    );

    assert_eq!(summary["violations"], Value::Array(Vec::new()));
    let latency = &summary["latency_ms"];
    for key in ["p50", "p90", "p99", "max"] {
        assert!(latency[key].is_number(), "latency_ms.{key} in {summary}");
    }
    assert!(summary["throughput_tps"].as_f64().is_some_and(|t| t > 0.0));
}

#[test]
fn demo_over_http_keeps_the_services_state_in_sqlite() {
    let (summary, code) = run_json(&[
        "demo",
        "--http",
        "--transactions",
        "300",
        "--fault-rate",
        "0.2",
        "--seed",
        "9",
        "--json",
    ]);
    assert_eq!(summary["consistent"], Value::Bool(true), "{summary}");
    assert_eq!(code, Some(0));
    assert_eq!(summary["mode"], "http");
    assert_eq!(summary["state"], "sqlite", "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    let committed = count(&summary, "committed");
    assert!(committed > 0, "{summary}");
    assert_eq!(committed + count(&summary, "aborted"), 300);
    assert_eq!(summary["stores"]["users"], committed);
    assert_eq!(summary["stores"]["orders"], committed);
    assert_eq!(summary["stores"]["units_given"], committed);
    assert_eq!(summary["violations"], Value::Array(Vec::new()));
    let injected: u64 = summary["faults_injected"]
        .as_object()
        .expect("faults_injected is an object")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(injected > 0, "a 20% fault rate injects faults: {summary}");
    let dir = summary["state_dir"]
        .as_str()
        .unwrap_or_else(|| panic!("state_dir names the databases' directory: {summary}"));
    assert!(
        !std::path::Path::new(dir).exists(),
        "the state directory {dir} is removed after the run"
    );
}

#[test]
fn demo_subcommand_takes_the_same_options() {
    let (summary, code) = run_json(&[
        "demo",
        "--transactions",
        "100",
        "--concurrency",
        "16",
        "--fault-rate",
        "0.3",
        "--seed",
        "3",
        "--json",
    ]);
    assert_eq!(summary["consistent"], Value::Bool(true), "{summary}");
    assert_eq!(code, Some(0));
    assert_eq!(
        count(&summary, "committed") + count(&summary, "aborted"),
        100
    );
    let injected: u64 = summary["faults_injected"]
        .as_object()
        .expect("faults_injected is an object")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert!(injected > 0, "a 30% fault rate injects faults: {summary}");
}

#[test]
fn invalid_options_are_refused() {
    for args in [
        &["--fault-rate", "1.5"][..],
        &["--concurrency", "0"],
        &["--transactions", "many"],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_dtxn"))
            .args(args)
            .output()
            .expect("the dtxn binary runs")
            .status;
        assert_eq!(status.code(), Some(2), "{args:?} is refused");
    }
}

#[cfg(feature = "soak")]
#[test]
fn soak_runs_and_reports_no_violations_as_json() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .args([
            "soak",
            "--transactions",
            "200",
            "--concurrency",
            "100",
            "--seed",
            "11",
            "--json",
        ])
        .output()
        .expect("run dtxn soak");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = String::from_utf8(output.stdout).unwrap();
    common::assert_no_float_noise(line.trim());
    let json: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(json["violations"], 0);
    assert_eq!(json["transactions"], 200);
    assert_eq!(
        json["committed"].as_u64().unwrap() + json["aborted"].as_u64().unwrap(),
        200
    );
}
