//! `dtxn serve --node-id`: several coordinator processes on one PostgreSQL
//! (the server at `DTXN_TEST_POSTGRES_URL`, which `.ci/run` starts; with
//! the feature `postgres-tests`, never skipped then). The bank's two
//! services run in this test process and see the calls of every node.
//!
//! * Three nodes share the load; one is killed with SIGKILL during phase 2;
//!   the survivors finish its committed transactions and answer for its
//!   undecided ones; the bank balances.
//! * A node paused (SIGSTOP) past its lease and resumed (SIGCONT) sends
//!   nothing more and exits: it was fenced out.
//! * PostgreSQL restarted under load (`DTXN_TEST_POSTGRES_RESTART`, a
//!   command that restarts it; `.ci/run` sets it): the nodes ride it out
//!   and lose nothing.
//! * PostgreSQL frozen for longer than the lease
//!   (`DTXN_TEST_POSTGRES_FREEZE`, a command that freezes it for the
//!   seconds it is given): the nodes stop acting and exit; restarted, they
//!   deliver what was logged and presume the rest aborted.
//!
//! Leases are PostgreSQL's time, so these tests wait on the wall clock,
//! polling for what they wait for, up to a bound. They run one at a time
//! (the restart would disturb the others).

#![cfg(all(unix, feature = "postgres-tests"))]

mod process;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dtxn::{
    async_trait, CallContext, Participant, ParticipantError, PreparedResult, TransactionId,
};
use serde_json::{json, Value};

/// One test at a time in this file.
static SERIAL: Mutex<()> = Mutex::new(());

fn pg_url() -> String {
    std::env::var("DTXN_TEST_POSTGRES_URL")
        .expect("DTXN_TEST_POSTGRES_URL must name a PostgreSQL server (see .ci/postgres-up)")
}

/// A bank account service: `commit` moves the transaction's amount (its
/// payload, a signed integer) once, whatever how often it is told.
#[derive(Default)]
struct Account {
    balance: Mutex<i64>,
    applied: Mutex<HashSet<TransactionId>>,
    rolled_back: Mutex<HashSet<TransactionId>>,
    /// Every call received: (kind, transaction).
    calls: Mutex<Vec<(&'static str, TransactionId)>>,
    /// While set, `commit` fails (transiently: the coordinator retries).
    refuse: AtomicBool,
}

impl Account {
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    fn applied(&self) -> HashSet<TransactionId> {
        self.applied.lock().unwrap().clone()
    }
}

#[async_trait]
impl Participant for Account {
    async fn prepare_with(&self, cx: &CallContext) -> Result<PreparedResult, ParticipantError> {
        self.calls
            .lock()
            .unwrap()
            .push(("prepare", cx.transaction_id()));
        Ok(PreparedResult::Ready)
    }
    async fn commit_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.calls
            .lock()
            .unwrap()
            .push(("commit", cx.transaction_id()));
        if self.refuse.load(Ordering::SeqCst) {
            return Err(ParticipantError::transient("busy"));
        }
        let amount: i64 = cx
            .payload()
            .and_then(|p| p.as_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ParticipantError::permanent("no amount"))?;
        if self.applied.lock().unwrap().insert(cx.transaction_id()) {
            *self.balance.lock().unwrap() += amount;
        }
        Ok(())
    }
    async fn rollback_with(&self, cx: &CallContext) -> Result<(), ParticipantError> {
        self.calls
            .lock()
            .unwrap()
            .push(("rollback", cx.transaction_id()));
        self.rolled_back.lock().unwrap().insert(cx.transaction_id());
        Ok(())
    }
    async fn prepare(&self, _: TransactionId) -> PreparedResult {
        unreachable!("prepare_with is implemented")
    }
    async fn commit(&self, _: TransactionId) -> Result<(), ParticipantError> {
        unreachable!("commit_with is implemented")
    }
    async fn rollback(&self, _: TransactionId) -> Result<(), ParticipantError> {
        unreachable!("rollback_with is implemented")
    }
}

async fn serve(account: Arc<Account>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let router = dtxn_http::participant_router(account);
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// A free loopback port (bound, then released for the node to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `dtxn serve --node-id` process, killed when dropped.
struct Node {
    child: Child,
    url: String,
    args: Vec<String>,
}

impl Node {
    fn start(node: &str, schema: &str, lease: &str, bank: &Bank) -> Self {
        Self::start_with(node, schema, lease, bank, &[])
    }

    fn start_with(node: &str, schema: &str, lease: &str, bank: &Bank, extra: &[&str]) -> Self {
        let port = free_port();
        let args: Vec<String> = [
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log",
            &pg_url(),
            "--log-schema",
            schema,
            "--node-id",
            node,
            "--lease",
            lease,
            "--participant",
            &format!("from={}", bank.from_url),
            "--participant",
            &format!("to={}", bank.to_url),
            "--phase2-timeout",
            "200ms",
            "--retry-initial-backoff",
            "50ms",
            "--retry-max-backoff",
            "200ms",
            "--retry-max-attempts",
            "1000",
            "--retry-max-elapsed",
            "10m",
        ]
        .map(String::from)
        .to_vec();
        let mut args = args;
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(args)
    }

    fn spawn(args: Vec<String>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dtxn"));
        command.args(&args).env_remove("DTXN_KILL_AT");
        let (child, url) = process::spawn_serve(command);
        Self { child, url, args }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two accounts: each transaction moves 1 from `from` to `to`.
struct Bank {
    from: Arc<Account>,
    to: Arc<Account>,
    from_url: String,
    to_url: String,
}

impl Bank {
    async fn new() -> Self {
        let (from, to) = (Arc::new(Account::default()), Arc::new(Account::default()));
        *from.balance.lock().unwrap() = 1_000_000;
        let (from_url, to_url) = (serve(from.clone()).await, serve(to.clone()).await);
        Self {
            from,
            to,
            from_url,
            to_url,
        }
    }

    /// Nothing mixed, nothing done twice: the same transactions applied on
    /// both sides, once each, and money conserved.
    fn check(&self) {
        assert_eq!(
            self.from.applied(),
            self.to.applied(),
            "a transaction half applied"
        );
        let moved = self.to.applied().len() as i64;
        assert_eq!(*self.from.balance.lock().unwrap(), 1_000_000 - moved);
        assert_eq!(*self.to.balance.lock().unwrap(), moved);
        for account in [&self.from, &self.to] {
            let rolled_back = account.rolled_back.lock().unwrap();
            assert!(
                account.applied().is_disjoint(&rolled_back),
                "a transaction both committed and rolled back"
            );
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn call(client: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    match client.post(&url).json(&body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!({ "error": e.to_string() })),
    }
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> Value {
    let (status, body) = call(client, url.clone(), body).await;
    assert!((200..300).contains(&status), "{url}: {status} {body}");
    body
}

/// Begins a transfer on `begin_at`, registers both accounts and prepares
/// it through `via` (another node: the requests are forwarded).
async fn prepared(client: &reqwest::Client, begin_at: &str, via: &str) -> String {
    let txn = post(client, format!("{begin_at}transactions"), json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (name, amount) in [("from", -1), ("to", 1)] {
        post(
            client,
            format!("{via}transactions/{txn}/participants"),
            json!({ "name": name, "payload": amount }),
        )
        .await;
    }
    let prepared = post(
        client,
        format!("{via}transactions/{txn}/prepare"),
        json!({}),
    )
    .await;
    assert_eq!(prepared["outcome"], "prepared", "{txn}: {prepared}");
    txn
}

async fn outcome(client: &reqwest::Client, node: &str, txn: &str) -> String {
    let url = format!("{node}transactions/{txn}/outcome");
    match client.get(&url).send().await {
        Ok(response) => {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            body["outcome"].as_str().unwrap_or("unavailable").to_owned()
        }
        Err(_) => "unreachable".to_owned(),
    }
}

async fn metric(client: &reqwest::Client, node: &str, name: &str) -> f64 {
    let text = client
        .get(format!("{node}metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with(name))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// Waits (up to `secs` of wall time) for `done`.
async fn until(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn schema() -> String {
    format!("cl{:012x}", fastrand::u64(..) >> 16)
}

fn txn_id(s: &str) -> TransactionId {
    s.parse().unwrap()
}

#[test]
fn three_nodes_share_the_load_and_survivors_finish_a_killed_nodes_commits() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let bank = rt.block_on(Bank::new());
    let schema = schema();
    let nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| Node::start(id, &schema, "1s", &bank))
        .collect();
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let client = client();
    let (in_flight, undecided) = rt.block_on(async {
        // Spread over the nodes, each begun on one and driven through the
        // next: every request after the begin is forwarded.
        for i in 0..30 {
            let (begin_at, via) = (&urls[i % 3], &urls[(i + 1) % 3]);
            let txn = prepared(&client, begin_at, via).await;
            let body = post(
                &client,
                format!("{via}transactions/{txn}/commit"),
                json!({}),
            )
            .await;
            assert_eq!(body["decision"], "commit", "{body}");
            assert_eq!(
                outcome(&client, &urls[(i + 2) % 3], &txn).await,
                "committed"
            );
        }
        assert_eq!(bank.to.applied().len(), 30);
        assert!(metric(&client, &urls[1], "dtxn_forwarded_requests_total").await >= 30.0);

        // n1 dies during phase 2 of five transfers: `from` acknowledged,
        // `to` refuses for now. One more is prepared and never decided.
        bank.to.refuse.store(true, Ordering::SeqCst);
        let mut in_flight = Vec::new();
        for _ in 0..5 {
            let txn = prepared(&client, &urls[0], &urls[0]).await;
            let commit = client
                .post(format!("{}transactions/{txn}/commit", urls[0]))
                .json(&json!({}))
                .send();
            tokio::spawn(async move { drop(commit.await) });
            in_flight.push(txn);
        }
        let undecided = prepared(&client, &urls[0], &urls[0]).await;
        until("n1's commits under way", 20, async || {
            in_flight.iter().all(|t| {
                bank.from.applied().contains(&txn_id(t))
                    && bank
                        .to
                        .calls
                        .lock()
                        .unwrap()
                        .contains(&("commit", txn_id(t)))
            })
        })
        .await;
        (in_flight, undecided)
    });
    let mut nodes = nodes;
    let n1 = nodes.remove(0);
    n1.kill_9();
    let killed = Instant::now();
    bank.to.refuse.store(false, Ordering::SeqCst);
    rt.block_on(async {
        // Until a survivor takes over, n1's ids cannot be answered.
        let early = outcome(&client, &urls[1], &undecided).await;
        assert!(
            early == "unavailable" || early == "aborted",
            "before the takeover: {early}"
        );
        until("the survivors finished n1's commits", 30, async || {
            in_flight
                .iter()
                .all(|t| bank.to.applied().contains(&txn_id(t)))
        })
        .await;
        let finished = killed.elapsed();
        eprintln!("takeover: n1's 5 commits delivered {finished:?} after kill -9 (lease 1s)");
        for txn in &in_flight {
            for via in &urls[1..] {
                assert_eq!(
                    outcome(&client, via, txn).await,
                    "committed",
                    "{txn} via {via}"
                );
            }
        }
        // n1's undecided transaction is presumed aborted by its new owner.
        assert_eq!(outcome(&client, &urls[2], &undecided).await, "aborted");
        let takeovers = metric(&client, &urls[1], "dtxn_cluster_takeovers_total").await
            + metric(&client, &urls[2], "dtxn_cluster_takeovers_total").await;
        assert_eq!(takeovers, 1.0, "exactly one survivor took n1 over");
        until("every decision left the log", 20, async || {
            let list: Value = client
                .get(format!("{}admin/decisions", urls[1]))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            list["decisions"] == json!([])
        })
        .await;
    });
    bank.check();
    assert_eq!(bank.to.applied().len(), 35);
    assert!(bank.from.rolled_back.lock().unwrap().is_empty());
}

#[test]
fn a_paused_node_does_not_act_on_what_it_lost() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let bank = rt.block_on(Bank::new());
    let schema = schema();
    let mut paused = Node::start("p1", &schema, "1s", &bank);
    let survivor = Node::start("p2", &schema, "1s", &bank);
    let client = client();
    let (logged, undecided) = rt.block_on(async {
        bank.to.refuse.store(true, Ordering::SeqCst);
        let logged = prepared(&client, &paused.url, &paused.url).await;
        let commit = client
            .post(format!("{}transactions/{logged}/commit", paused.url))
            .json(&json!({}))
            .send();
        tokio::spawn(async move { drop(commit.await) });
        let undecided = prepared(&client, &paused.url, &paused.url).await;
        until("the commit under way", 20, async || {
            bank.from.applied().contains(&txn_id(&logged))
        })
        .await;
        (logged, undecided)
    });
    paused.signal("-STOP");
    bank.to.refuse.store(false, Ordering::SeqCst);
    rt.block_on(async {
        until("the survivor took over and delivered", 30, async || {
            bank.to.applied().contains(&txn_id(&logged))
        })
        .await;
        assert_eq!(outcome(&client, &survivor.url, &undecided).await, "aborted");
        assert_eq!(outcome(&client, &survivor.url, &logged).await, "committed");
    });
    // Everything is settled; the paused node wakes up past its lease.
    let before = (bank.from.calls(), bank.to.calls());
    paused.signal("-CONT");
    let status = process::wait_exit(&mut paused.child, "the fenced node never exited");
    assert_eq!(status.code(), Some(3), "exits as fenced: {status:?}");
    assert_eq!(
        (bank.from.calls(), bank.to.calls()),
        before,
        "the fenced node called a participant"
    );
    assert!(bank.from.rolled_back.lock().unwrap().is_empty());
    assert!(bank.to.rolled_back.lock().unwrap().is_empty());
    bank.check();
    // Restarted, it rejoins with a new epoch and serves again.
    let rejoined = Node::spawn(paused.args.clone());
    rt.block_on(async {
        let txn = prepared(&client, &rejoined.url, &survivor.url).await;
        let body = post(
            &client,
            format!("{}transactions/{txn}/commit", survivor.url),
            json!({}),
        )
        .await;
        assert_eq!(body["decision"], "commit");
    });
    bank.check();
}

#[test]
fn postgres_restarted_under_load_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let restart = std::env::var("DTXN_TEST_POSTGRES_RESTART").expect(
        "DTXN_TEST_POSTGRES_RESTART must be a command that restarts the PostgreSQL server (see .ci/run)",
    );
    let rt = runtime();
    let bank = rt.block_on(Bank::new());
    let schema = schema();
    let nodes = [
        Node::start("r1", &schema, "10s", &bank),
        Node::start("r2", &schema, "10s", &bank),
    ];
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let client = client();
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    // Eight clients, each a transaction at a time, spread over both nodes.
    let load: Vec<_> = (0..8usize)
        .map(|worker| {
            let (client, urls, stop, answers) =
                (client.clone(), urls.clone(), stop.clone(), answers.clone());
            rt.spawn(async move {
                let mut i = worker;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let (a, b) = (&urls[i % 2], &urls[(i + 1) % 2]);
                    let (status, begun) =
                        call(&client, format!("{a}transactions"), json!({})).await;
                    if status != 201 {
                        continue;
                    }
                    let txn = begun["id"].as_str().unwrap().to_owned();
                    let mut ok = true;
                    for (name, amount) in [("from", -1), ("to", 1)] {
                        let (status, _) = call(
                            &client,
                            format!("{b}transactions/{txn}/participants"),
                            json!({ "name": name, "payload": amount }),
                        )
                        .await;
                        ok &= (200..300).contains(&status);
                    }
                    let (_, prepared) =
                        call(&client, format!("{b}transactions/{txn}/prepare"), json!({})).await;
                    ok &= prepared["outcome"] == "prepared";
                    let answer = if ok {
                        let (_, body) =
                            call(&client, format!("{a}transactions/{txn}/commit"), json!({})).await;
                        body["decision"].as_str().unwrap_or("unknown").to_owned()
                    } else {
                        let _ = call(
                            &client,
                            format!("{a}transactions/{txn}/rollback"),
                            json!({}),
                        )
                        .await;
                        "rollback".to_owned()
                    };
                    answers.lock().unwrap().insert(txn, answer);
                }
            })
        })
        .collect();
    rt.block_on(async {
        until("load under way", 20, async || {
            answers.lock().unwrap().len() >= 100
        })
        .await;
    });
    let status = Command::new("sh").args(["-c", &restart]).status().unwrap();
    assert!(status.success(), "{restart}: {status}");
    rt.block_on(async {
        let after = answers.lock().unwrap().len();
        until("load carries on after the restart", 60, async || {
            answers.lock().unwrap().len() >= after + 100
        })
        .await;
    });
    stop.store(true, Ordering::SeqCst);
    for worker in load {
        rt.block_on(worker).unwrap();
    }
    let answers = answers.lock().unwrap().clone();
    rt.block_on(async {
        // Every transaction ends; what a client was told holds.
        for (txn, answer) in &answers {
            let mut settled = String::new();
            until("an outcome", 60, async || {
                settled = outcome(&client, &urls[0], txn).await;
                settled == "committed" || settled == "aborted"
            })
            .await;
            if answer == "commit" {
                assert_eq!(settled, "committed", "{txn}");
                until("delivered", 60, async || {
                    bank.to.applied().contains(&txn_id(txn))
                })
                .await;
            }
            if settled == "aborted" {
                assert!(!bank.to.applied().contains(&txn_id(txn)), "{txn}");
            }
        }
    });
    for node in &nodes {
        let alive = Command::new("kill")
            .args(["-0", &node.child.id().to_string()])
            .status()
            .unwrap();
        assert!(alive.success(), "a node exited during the restart");
    }
    bank.check();
    eprintln!(
        "postgres restart: {} transactions, {} committed",
        answers.len(),
        bank.to.applied().len()
    );
}

#[test]
fn loadgen_spreads_transactions_over_the_nodes_and_every_forwarded_one_commits() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let bank = rt.block_on(Bank::new());
    let schema = schema();
    let allow = ["--allow-participant-host", "127.0.0.1"];
    let nodes = [
        Node::start_with("g1", &schema, "10s", &bank, &allow),
        Node::start_with("g2", &schema, "10s", &bank, &allow),
    ];
    let output = Command::new(env!("CARGO_BIN_EXE_dtxn"))
        .args([
            "loadgen",
            "--via-next-node",
            "--transactions",
            "200",
            "--concurrency",
            "8",
            "--json",
        ])
        .args(["--target", &nodes[0].url, "--target", &nodes[1].url])
        .args(["--start-participants", "--participants", "2"])
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(report["committed"], 200, "{report}");
    let client = client();
    let forwarded: f64 = rt.block_on(async {
        let mut sum = 0.0;
        for node in &nodes {
            sum += metric(&client, &node.url, "dtxn_forwarded_requests_total").await;
        }
        sum
    });
    // Register twice, prepare, commit: four requests after each begin,
    // every one sent to the node that did not begin it.
    assert_eq!(forwarded, 800.0);
}

#[test]
fn postgres_frozen_past_the_lease_stops_every_node_and_loses_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let freeze = std::env::var("DTXN_TEST_POSTGRES_FREEZE").expect(
        "DTXN_TEST_POSTGRES_FREEZE must be a command that freezes the PostgreSQL server for N seconds (see .ci/run)",
    );
    let rt = runtime();
    let bank = rt.block_on(Bank::new());
    let schema = schema();
    let mut nodes = vec![
        Node::start("z1", &schema, "1s", &bank),
        Node::start("z2", &schema, "1s", &bank),
    ];
    let client = client();
    let (logged, undecided) = rt.block_on(async {
        bank.to.refuse.store(true, Ordering::SeqCst);
        let logged = prepared(&client, &nodes[0].url, &nodes[0].url).await;
        let commit = client
            .post(format!("{}transactions/{logged}/commit", nodes[0].url))
            .json(&json!({}))
            .send();
        tokio::spawn(async move { drop(commit.await) });
        let undecided = prepared(&client, &nodes[1].url, &nodes[1].url).await;
        until("the commit under way", 20, async || {
            bank.from.applied().contains(&txn_id(&logged))
        })
        .await;
        (logged, undecided)
    });
    // Frozen for three leases: no node can renew.
    let status = Command::new("sh")
        .args(["-c", &format!("{freeze} 3")])
        .status()
        .unwrap();
    assert!(status.success(), "{freeze}: {status}");
    for node in &mut nodes {
        let status = process::wait_exit(&mut node.child, "a node kept running");
        assert_eq!(status.code(), Some(3), "exits as fenced: {status:?}");
    }
    assert!(!bank.to.applied().contains(&txn_id(&logged)));
    bank.to.refuse.store(false, Ordering::SeqCst);
    // Restarted, they find their parts of the log again.
    let restarted: Vec<Node> = nodes.iter().map(|n| Node::spawn(n.args.clone())).collect();
    rt.block_on(async {
        until("the logged decision delivered", 30, async || {
            bank.to.applied().contains(&txn_id(&logged))
        })
        .await;
        for node in &restarted {
            assert_eq!(outcome(&client, &node.url, &logged).await, "committed");
            assert_eq!(outcome(&client, &node.url, &undecided).await, "aborted");
        }
    });
    bank.check();
    assert!(bank.to.rolled_back.lock().unwrap().is_empty());
}
