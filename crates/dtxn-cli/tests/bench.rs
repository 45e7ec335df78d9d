//! End-to-end test of `dtxn bench`: a quick run prints one line of JSON
//! with every workload. Nothing about timings is asserted.
//!
//! `dtxn bench` exists only with the `bench` feature (on by default).

#![cfg(feature = "bench")]

mod common;

use std::process::Command;

use serde_json::Value;

#[test]
fn quick_bench_reports_every_workload() {
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .args(["bench", "--quick", "--runs", "1", "--json"])
        .env_remove("DTXN_BENCH_POSTGRES_URL")
        .output()
        .expect("the dtxn binary runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("stdout is UTF-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "--json prints exactly one line: {stdout}");
    common::assert_no_float_noise(lines[0]);
    let report: Value = serde_json::from_str(lines[0]).expect("the line is JSON");

    let overhead = report["overhead"].as_array().expect("(a) rows");
    // 4 sizes × 2 concurrency levels.
    assert_eq!(overhead.len(), 8, "{report}");
    for row in overhead {
        for contender in ["floor", "fan_out_floor", "baseline", "dtxn"] {
            assert!(row[contender]["tx_per_s"].is_number(), "{row}");
        }
        assert!(row["dtxn_over_floor"].is_number(), "{row}");
        assert!(row["dtxn_over_fan_out_floor"].is_number(), "{row}");
        assert!(row["dtxn_over_baseline"].is_number(), "{row}");
        let peers = row["peers"].as_array().expect("peer columns");
        let names: Vec<&str> = peers.iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(names, ["dist_tx", "steno"], "{row}");
        for peer in peers {
            assert!(peer["speed"]["tx_per_s"].is_number(), "{row}");
            assert!(peer["dtxn_over_peer"].is_number(), "{row}");
        }
    }
    let cdf = report["latency"]["cdf"].as_array().expect("(b) CDFs");
    let contenders: Vec<&str> = cdf.iter().filter_map(|c| c["contender"].as_str()).collect();
    assert_eq!(contenders, ["floor", "baseline", "dtxn"], "{report}");
    for c in cdf {
        let points = c["points"].as_array().expect("points");
        assert_eq!(points.last().expect("a point")[1], 1.0, "{c}");
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
        report["memory"]["bytes_per_active_transaction"].is_number()
            && report["memory"]["bytes_per_prepared_transaction"].is_number(),
        "{report}"
    );
    // (e): the dtxn binary installs the counting allocator, so every count
    // is there (how many is not asserted).
    let allocations = &report["allocations"];
    assert_eq!(allocations["installed"], true, "{report}");
    let rows = allocations["rows"].as_array().expect("(e) rows");
    assert_eq!(rows.len(), 4, "one row per size: {report}");
    for row in rows {
        for contender in ["floor", "fan_out_floor", "baseline", "dtxn"] {
            assert!(row[contender].as_f64().is_some_and(|n| n >= 0.0), "{row}");
        }
    }
    let load = &report["load"];
    for contender in ["floor", "dtxn"] {
        for field in ["tx_per_s", "p50_ms", "p99_ms"] {
            assert!(load[contender][field].is_number(), "{load}");
        }
    }
    assert!(load["throughput_over_floor"].is_number(), "{load}");
    assert_durable(&report["durable"]);
    assert!(!report["targets"].as_array().expect("targets").is_empty());
    assert_eq!(report["failed_transactions"], 0, "{report}");
    assert_eq!(report["config"]["runs"], 1);
}

#[test]
fn workloads_can_be_chosen() {
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .args(["bench", "--quick", "--workloads", "c,f", "--json"])
        .output()
        .expect("the dtxn binary runs");
    assert!(output.status.success(), "{output:?}");
    common::assert_no_float_noise(&String::from_utf8_lossy(&output.stdout));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(
        report["overhead"].is_null() && report["memory"].is_null(),
        "{report}"
    );
    assert!(report["early_abort"].is_object(), "{report}");
    assert!(report["load"].is_object(), "{report}");
    assert!(report["allocations"].is_null(), "{report}");
}

#[test]
fn charts_are_written() {
    let dir = std::env::temp_dir().join(format!("dtxn-bench-charts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let (overhead, cdf) = (dir.join("overhead.svg"), dir.join("cdf.svg"));
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .args(["bench", "--quick", "--workloads", "a,b", "--sizes", "1,3"])
        .arg("--svg")
        .arg(&overhead)
        .arg("--cdf-svg")
        .arg(&cdf)
        .output()
        .expect("the dtxn binary runs");
    assert!(output.status.success(), "{output:?}");
    for path in [&overhead, &cdf] {
        let svg = std::fs::read_to_string(path).expect("the chart was written");
        assert!(svg.starts_with("<svg"), "{}", path.display());
    }
    let cdf_svg = std::fs::read_to_string(&cdf).expect("the CDF");
    assert!(
        cdf_svg.contains("baseline"),
        "the CDF has a baseline series"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Workload (g) in a JSON report, without PostgreSQL.
fn assert_durable(durable: &Value) {
    for mode in ["memory", "sqlite"] {
        for field in ["tx_per_s", "p50_ms", "p99_ms"] {
            assert!(durable[mode][field].is_number(), "{durable}");
        }
    }
    for field in [
        "sqlite_over_memory",
        "alone_memory_p50_ms",
        "alone_sqlite_p50_ms",
        "fsync_ms",
    ] {
        assert!(durable[field].is_number(), "{durable}");
    }
    assert_eq!(durable["participants"], 3, "{durable}");
    assert!(durable["dir"].is_string(), "{durable}");
    assert!(
        durable["postgres"].is_null() && durable["postgres_over_memory"].is_null(),
        "{durable}"
    );
}

#[test]
fn the_durable_workload_is_chosen_by_name() {
    let dir = std::env::temp_dir().join(format!("dtxn-bench-durable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let run = |json: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dtxn"));
        command
            .args([
                "bench",
                "--quick",
                "--workloads",
                "durable",
                "--durable-dir",
            ])
            .arg(&dir)
            .env_remove("DTXN_BENCH_POSTGRES_URL");
        if json {
            command.arg("--json");
        }
        let output = command.output().expect("the dtxn binary runs");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).expect("stdout is UTF-8")
    };
    let stdout = run(true);
    common::assert_no_float_noise(&stdout);
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert!(
        report["overhead"].is_null() && report["load"].is_null(),
        "{report}"
    );
    assert_durable(&report["durable"]);
    assert_eq!(report["durable"]["dir"], dir.display().to_string());
    let targets = report["targets"].as_array().expect("targets");
    assert!(targets.iter().any(|t| t["workload"] == "g"), "{report}");
    assert_eq!(report["failed_transactions"], 0, "{report}");

    let table = run(false);
    for needle in ["(g) durable mode", "in memory", "SQLite log", "fsync"] {
        assert!(table.contains(needle), "no {needle:?} in:\n{table}");
    }
    // Its logs were removed with their temporary directory.
    assert_eq!(std::fs::read_dir(&dir).expect("the directory").count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unusable_durable_dir_fails_the_run_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .args(["bench", "--quick", "--workloads", "g", "--durable-dir"])
        .arg("/nonexistent/dtxn-bench")
        .env_remove("DTXN_BENCH_POSTGRES_URL")
        .output()
        .expect("the dtxn binary runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("workload (g)") && stderr.contains("/nonexistent/dtxn-bench"),
        "{stderr}"
    );
}
