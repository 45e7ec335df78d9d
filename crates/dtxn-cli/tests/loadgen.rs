//! `dtxn loadgen`: failed transactions are counted, by kind, with their
//! own latency, and its JSON carries no float noise.

mod common;

use std::process::Command;

use serde_json::Value;

fn loadgen_json(args: &[&str]) -> (Value, Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .arg("loadgen")
        .args(args)
        .arg("--json")
        .output()
        .expect("the dtxn binary runs");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let line = stdout.trim().to_owned();
    let report = serde_json::from_str(&line).expect("one JSON line");
    (report, output.status.code(), line)
}

/// A coordinator that does not answer fails every transaction: each is
/// counted, under its kind, with its latency, and the run exits 1.
#[test]
fn loadgen_counts_failed_transactions_by_kind() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let target = format!("http://{}/", closed.local_addr().expect("its address"));
    drop(closed);
    let (report, code, line) = loadgen_json(&[
        "--target",
        &target,
        "--transactions",
        "5",
        "--concurrency",
        "2",
    ]);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(report["transactions"], 5, "{report}");
    assert_eq!(report["committed"], 0, "{report}");
    assert_eq!(report["failed"], 5, "{report}");
    assert_eq!(
        report["failures_by_kind"],
        serde_json::json!({"begin: no answer": 5}),
        "{report}"
    );
    assert_eq!(report["latency_ms"]["failed"]["count"], 5, "{report}");
    assert!(
        report["latency_ms"]["failed"]["max"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{report}"
    );
    assert_eq!(report["latency_ms"]["committed"]["count"], 0, "{report}");
    common::assert_no_float_noise(&line);
}

/// A self-contained run commits everything and reports the latency of
/// committed transactions without float noise.
#[test]
fn loadgen_json_has_no_float_noise() {
    let (report, code, line) = loadgen_json(&[
        "--transactions",
        "100",
        "--concurrency",
        "4",
        "--participants",
        "2",
    ]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(report["committed"], 100, "{report}");
    assert_eq!(report["latency_ms"]["committed"]["count"], 100, "{report}");
    assert!(
        report["latency_ms"]["committed"]["p99"].is_number(),
        "{report}"
    );
    assert_eq!(report["latency_ms"]["failed"]["count"], 0, "{report}");
    common::assert_no_float_noise(&line);
}
