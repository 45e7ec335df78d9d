//! Starting `dtxn serve` processes for the end-to-end tests that kill them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Spawns `command` (a `dtxn serve` with its arguments and environment)
/// and waits for the line that says where it listens; returns the process
/// and its base URL (ending in `/`).
pub fn spawn_serve(mut command: Command) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dtxn serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .split_once(" listening on ")
        .map(|(_, url)| format!("{}/", url.trim_end_matches('/')))
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (child, url)
}

/// Waits (up to 20 s of wall time) for `child` to exit on its own and
/// returns how it ended; fails with `what` if it keeps running.
#[allow(
    dead_code,
    reason = "crash.rs uses it only with the failpoints feature"
)]
pub fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
