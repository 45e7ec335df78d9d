//! `dtxn serve --log`: a coordinator process killed with SIGKILL during
//! phase 2 finishes the transaction after a restart on the same log, and
//! answers `aborted` for what it had not decided (presumed abort). The
//! participant services run in this test process, so they see the calls
//! of both coordinator processes.
//!
//! With the `failpoints` feature, the coordinator is also killed at every
//! named crash point of a logged Commit (`dtxn::failpoint`), on SQLite and
//! (with `postgres-tests`) on PostgreSQL, and the bank invariant is checked
//! after the restart: every participant committed, or none did and the
//! transaction is answered `aborted`; nothing left in the log.

#![cfg(unix)]

mod process;

use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtxn::{async_trait, Participant, ParticipantError, PreparedResult, TransactionId};
use serde_json::{json, Value};

/// Votes `Ready`; counts `commit` calls; while `hang` is set, a `commit`
/// never answers (the call is dropped with its connection).
#[derive(Default)]
struct Service {
    commits: AtomicUsize,
    acked: AtomicUsize,
    rollbacks: AtomicUsize,
    hang: AtomicBool,
}

#[async_trait]
impl Participant for Service {
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        PreparedResult::Ready
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        while self.hang.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.acked.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        self.rollbacks.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Serves `service` over HTTP on loopback; returns its base URL.
async fn serve(service: Arc<Service>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let router = dtxn_http::participant_router(service);
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// A `dtxn serve` process, killed when dropped.
struct Coordinator {
    child: Child,
    url: String,
}

impl Coordinator {
    fn start(args: &[String]) -> Self {
        Self::start_with(args, None)
    }

    /// Starts `dtxn serve`, killing itself at the crash point `kill_at`
    /// (`DTXN_KILL_AT`) if given.
    fn start_with(args: &[String], kill_at: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dtxn"));
        command.env_remove("DTXN_KILL_AT");
        if let Some(point) = kill_at {
            command.env("DTXN_KILL_AT", point);
        }
        command.arg("serve").args(args);
        let (child, url) = process::spawn_serve(command);
        Self { child, url }
    }

    /// SIGKILL, and waits for the process to be gone.
    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits (up to 20 s) for the process to die by SIGKILL of its own
    /// (`DTXN_KILL_AT`).
    #[cfg(feature = "failpoints")]
    fn killed_itself(mut self, point: &str) {
        use std::os::unix::process::ExitStatusExt;
        let status = process::wait_exit(
            &mut self.child,
            &format!("the coordinator never reached {point}"),
        );
        assert_eq!(status.signal(), Some(9), "{point}: {status:?}");
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let response = client.post(&url).json(&body).send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {body}");
    body
}

async fn outcome(client: &reqwest::Client, coordinator: &str, txn: &str) -> String {
    let url = format!("{coordinator}transactions/{txn}/outcome");
    let body: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    body["outcome"].as_str().unwrap().to_owned()
}

/// Begins a transaction on `coordinator`, registers the participants
/// `names` and prepares it; returns its id.
async fn begin_prepared(client: &reqwest::Client, coordinator: &str, names: &[&str]) -> String {
    let txn = post(client, format!("{coordinator}transactions"), json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in names {
        post(
            client,
            format!("{coordinator}transactions/{txn}/participants"),
            json!({ "name": name }),
        )
        .await;
    }
    let prepared = post(
        client,
        format!("{coordinator}transactions/{txn}/prepare"),
        json!({}),
    )
    .await;
    assert_eq!(prepared["outcome"], "prepared", "{txn}: {prepared}");
    txn
}

/// `GET /admin/decisions`: the logged decisions not ended yet.
async fn decisions(client: &reqwest::Client, coordinator: &str) -> Value {
    let url = format!("{coordinator}admin/decisions");
    let body: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    body["decisions"].clone()
}

/// Waits (up to 20 s of wall time) for `done`.
async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn a_coordinator_killed_during_phase_2_finishes_it_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.db");
    killed_during_phase_2(&["--log", log.to_str().unwrap()]);
}

/// The same with the log in PostgreSQL (the server at
/// `DTXN_TEST_POSTGRES_URL`, which `.ci/run` starts; with the feature
/// `postgres-tests`; never skipped then).
#[cfg(feature = "postgres-tests")]
#[test]
fn a_coordinator_killed_during_phase_2_finishes_it_after_a_restart_on_postgres() {
    let url = std::env::var("DTXN_TEST_POSTGRES_URL")
        .expect("DTXN_TEST_POSTGRES_URL must name a PostgreSQL server (see .ci/postgres-up)");
    let schema = format!("dtxn_cli_{:016x}", fastrand::u64(..));
    killed_during_phase_2(&["--log", &url, "--log-schema", &schema]);
}

fn killed_during_phase_2(log: &[&str]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = (Arc::new(Service::default()), Arc::new(Service::default()));
    b.hang.store(true, Ordering::SeqCst);
    let (url_a, url_b) =
        runtime.block_on(async { (serve(a.clone()).await, serve(b.clone()).await) });
    let mut args: Vec<String> = log.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "--listen",
            "127.0.0.1:0",
            "--participant",
            &format!("a={url_a}"),
            "--participant",
            &format!("b={url_b}"),
            "--phase2-timeout",
            "200ms",
            "--retry-initial-backoff",
            "50ms",
            "--retry-max-backoff",
            "100ms",
        ]
        .map(String::from),
    );
    let client = reqwest::Client::new();

    let first = Coordinator::start(&args);
    let (txn, undecided) = runtime.block_on(async {
        let txn = begin_prepared(&client, &first.url, &["a", "b"]).await;
        // Commit: `a` acknowledges, `b` hangs and is retried.
        let commit = client
            .post(format!("{}transactions/{txn}/commit", first.url))
            .json(&json!({}))
            .send();
        tokio::spawn(async move { drop(commit.await) });
        until("a committed and b asked twice", async || {
            a.acked.load(Ordering::SeqCst) == 1 && b.commits.load(Ordering::SeqCst) >= 2
        })
        .await;
        // Another transaction, prepared and never decided.
        let undecided = begin_prepared(&client, &first.url, &["a"]).await;
        assert_eq!(outcome(&client, &first.url, &txn).await, "committed");
        let logged = decisions(&client, &first.url).await;
        assert_eq!(
            logged,
            json!([{ "id": txn.clone(), "state": "committing", "hazards": [] }])
        );
        (txn, undecided)
    });
    first.kill_9();
    assert_eq!(b.acked.load(Ordering::SeqCst), 0, "b never acknowledged");
    b.hang.store(false, Ordering::SeqCst);

    let second = Coordinator::start(&args);
    runtime.block_on(async {
        until("the decision delivered again", async || {
            b.acked.load(Ordering::SeqCst) >= 1
        })
        .await;
        assert_eq!(outcome(&client, &second.url, &txn).await, "committed");
        assert_eq!(
            outcome(&client, &second.url, &undecided).await,
            "aborted",
            "presumed abort for an undecided transaction of the dead coordinator"
        );
        until("the decision left the log", async || {
            decisions(&client, &second.url).await == json!([])
        })
        .await;
        let refused = client
            .post(format!("{}transactions/{undecided}/resolve", second.url))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 404, "no hazard to resolve");
        let foreign = "00000000000000010000000000000001";
        assert_eq!(outcome(&client, &second.url, foreign).await, "unknown");
    });
    // `a` is told again (commit is idempotent); nobody rolled back.
    assert_eq!(a.commits.load(Ordering::SeqCst), 2);
    assert_eq!(
        a.rollbacks.load(Ordering::SeqCst) + b.rollbacks.load(Ordering::SeqCst),
        0
    );
}

#[test]
fn a_second_coordinator_on_the_same_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.db");
    let args: Vec<String> = ["--listen", "127.0.0.1:0", "--log", log.to_str().unwrap()]
        .map(String::from)
        .to_vec();
    let _first = Coordinator::start(&args);
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .arg("serve")
        .args(&args)
        .args(["--log-lock-wait", "300ms"])
        .output()
        .expect("dtxn serve runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another coordinator"), "{stderr}");
}

/// Every crash point of a logged Commit with three participants, on an
/// SQLite file.
#[cfg(feature = "failpoints")]
#[test]
fn a_coordinator_killed_at_any_crash_point_leaves_all_or_nothing_after_a_restart() {
    for point in crash_points() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("decisions.db");
        killed_at(&point, &["--log", log.to_str().unwrap()]);
    }
}

/// The same on PostgreSQL (a fresh schema per crash point).
#[cfg(all(feature = "failpoints", feature = "postgres-tests"))]
#[test]
fn a_coordinator_killed_at_any_crash_point_leaves_all_or_nothing_on_postgres() {
    let url = std::env::var("DTXN_TEST_POSTGRES_URL")
        .expect("DTXN_TEST_POSTGRES_URL must name a PostgreSQL server (see .ci/postgres-up)");
    for point in crash_points() {
        let schema = format!("dtxn_cli_{:016x}", fastrand::u64(..));
        killed_at(&point, &["--log", &url, "--log-schema", &schema]);
    }
}

/// `DTXN_KILL_AT` values: every point, the acknowledgement one at each of
/// the three participants.
#[cfg(feature = "failpoints")]
fn crash_points() -> Vec<String> {
    use dtxn::failpoint::*;
    let mut points = vec![COMMIT_DECIDED.to_owned(), COMMIT_LOGGED.to_owned()];
    points.extend((1..=3).map(|n| format!("{COMMIT_ACKNOWLEDGED}@{n}")));
    points.extend([ALL_ACKNOWLEDGED.to_owned(), END_LOGGED.to_owned()]);
    assert_eq!(
        points.len(),
        ALL.len() + 2,
        "a point of dtxn::failpoint is not tested"
    );
    points
}

/// Runs one transaction over three services on a coordinator that kills
/// itself at `point` during commit, restarts it on the same log, and
/// checks all-or-nothing from the services' side.
#[cfg(feature = "failpoints")]
fn killed_at(point: &str, log: &[&str]) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let services: Vec<Arc<Service>> = (0..3).map(|_| Arc::new(Service::default())).collect();
    let urls = runtime.block_on(async {
        let mut urls = Vec::new();
        for service in &services {
            urls.push(serve(service.clone()).await);
        }
        urls
    });
    let mut args: Vec<String> = log.iter().map(|s| s.to_string()).collect();
    args.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
    for (name, url) in ["a", "b", "c"].iter().zip(&urls) {
        args.extend(["--participant".to_owned(), format!("{name}={url}")]);
    }
    let client = reqwest::Client::new();

    let first = Coordinator::start_with(&args, Some(point));
    let txn = runtime.block_on(async {
        let txn = begin_prepared(&client, &first.url, &["a", "b", "c"]).await;
        // The coordinator dies during this call: no answer is expected.
        let _ = client
            .post(format!("{}transactions/{txn}/commit", first.url))
            .json(&json!({}))
            .send()
            .await;
        txn
    });
    first.killed_itself(point);
    let committed_before = services
        .iter()
        .filter(|s| s.acked.load(Ordering::SeqCst) > 0)
        .count();

    let second = Coordinator::start(&args);
    runtime.block_on(async {
        if point == dtxn::failpoint::COMMIT_DECIDED {
            // Nothing was logged: presumed abort, and nobody was told commit.
            assert_eq!(committed_before, 0, "{point}");
            assert_eq!(
                outcome(&client, &second.url, &txn).await,
                "aborted",
                "{point}"
            );
        } else {
            until("every participant committed", async || {
                services.iter().all(|s| s.acked.load(Ordering::SeqCst) > 0)
            })
            .await;
            if point != dtxn::failpoint::END_LOGGED {
                // Delivered again from the log (after END_LOGGED the
                // decision is gone with its end record, as designed).
                assert_eq!(
                    outcome(&client, &second.url, &txn).await,
                    "committed",
                    "{point}"
                );
            }
        }
        until("the log emptied", async || {
            decisions(&client, &second.url).await == json!([])
        })
        .await;
    });
    drop(second);
    let committed: Vec<usize> = services
        .iter()
        .map(|s| s.acked.load(Ordering::SeqCst))
        .collect();
    let decided = point != dtxn::failpoint::COMMIT_DECIDED;
    assert!(
        committed.iter().all(|&n| (n > 0) == decided),
        "{point}: mixed outcome, commits acknowledged per participant {committed:?}"
    );
    let rollbacks: usize = services
        .iter()
        .map(|s| s.rollbacks.load(Ordering::SeqCst))
        .sum();
    assert_eq!(
        rollbacks, 0,
        "{point}: nobody is told rollback after Commit was decided"
    );
}
