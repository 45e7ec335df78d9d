//! End-to-end test of `dtxn bench`: a quick run prints one line of JSON
//! with every workload. Nothing about timings is asserted.

use std::process::Command;

use serde_json::Value;

#[test]
fn quick_bench_reports_every_workload() {
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .args(["bench", "--quick", "--runs", "1", "--json"])
        .output()
        .expect("the dtxn binary runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints exactly one line: {stdout}");
    let report: Value = serde_json::from_str(lines[0]).expect("the line is JSON");

    let overhead = report["overhead"].as_array().expect("(a) rows");
    // 4 sizes × 2 concurrency levels.
    assert_eq!(overhead.len(), 8, "{report}");
    for row in overhead {
        for contender in ["floor", "baseline", "dtxn"] {
            assert!(row[contender]["tx_per_s"].is_number(), "{row}");
        }
        assert!(row["dtxn_over_floor"].is_number(), "{row}");
        assert!(row["dtxn_over_baseline"].is_number(), "{row}");
    }
    assert!(
        report["latency"]["low"]["dtxn_p99_ms"].is_number(),
        "{report}"
    );
    assert!(
        report["latency"]["high"]["throughput_over_floor"].is_number(),
        "{report}"
    );
    assert!(
        report["early_abort"]["after_abort_vote_ms"].is_number(),
        "{report}"
    );
    assert!(
        report["memory"]["bytes_per_active_transaction"].is_number(),
        "{report}"
    );
    assert!(!report["targets"].as_array().expect("targets").is_empty());
    assert_eq!(report["failed_transactions"], 0, "{report}");
    assert_eq!(report["config"]["runs"], 1);
}

#[test]
fn workloads_can_be_chosen() {
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .args(["bench", "--quick", "--workloads", "c", "--json"])
        .output()
        .expect("the dtxn binary runs");
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(
        report["overhead"].is_null() && report["memory"].is_null(),
        "{report}"
    );
    assert!(report["early_abort"].is_object(), "{report}");
}
