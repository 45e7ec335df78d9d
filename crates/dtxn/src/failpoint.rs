//! Named crash points on the path of a logged Commit, for crash tests.
//!
//! With the `failpoints` feature, each point below is a
//! [`fail`](https://docs.rs/fail) fail point: a test (or an operator
//! rehearsing a failure) configures what happens when the coordinator gets
//! there — `fail::cfg(name, "panic")`, `fail::cfg_callback(name, f)`, or
//! the `FAILPOINTS` environment variable read by
//! `fail::FailScenario::setup`. `dtxn serve`, built with its own
//! `failpoints` feature, kills itself with `SIGKILL` at the point named by
//! `DTXN_KILL_AT` (see `crates/dtxn-cli/tests/crash.rs`). Without the
//! feature the points compile to nothing.
//!
//! In the order a transaction meets them (PROTOCOL.md rule 16):
//!
//! | point | the coordinator has… | a crash here ends as |
//! |---|---|---|
//! | [`COMMIT_DECIDED`] | decided Commit and published `Committing`, not yet asked the log to write it | aborted (presumed abort): nothing was logged, no participant was told commit |
//! | [`COMMIT_LOGGED`] | the decision durable in the log; no `commit` sent | committed: recovery delivers `commit` to every participant |
//! | [`COMMIT_ACKNOWLEDGED`] | received one participant's `commit` acknowledgement (reached once per participant) | committed: recovery delivers `commit` to every participant again |
//! | [`ALL_ACKNOWLEDGED`] | every acknowledgement, the end record not yet asked for | committed: recovery delivers `commit` once more |
//! | [`END_LOGGED`] | the end record durable (in the log's writer) | committed; the decision is gone from the log |
//!
//! "Delivers again" is safe because a participant already accepts a
//! `commit` it has seen: phase-2 calls are retried (PROTOCOL.md rule 11),
//! and an acknowledgement can be lost on the way back.

/// The Commit decision is made and published; the log write is not sent.
pub const COMMIT_DECIDED: &str = "dtxn::commit_decided";
/// The log write of a Commit decision answered durable; no `commit` sent.
pub const COMMIT_LOGGED: &str = "dtxn::commit_logged";
/// A participant acknowledged `commit` (before the coordinator records it).
pub const COMMIT_ACKNOWLEDGED: &str = "dtxn::commit_acknowledged";
/// Every participant acknowledged; the end record is not yet asked for.
pub const ALL_ACKNOWLEDGED: &str = "dtxn::all_acknowledged";
/// Ended decisions were dropped from the log durably (their segment
/// deleted or rewritten without them) by a log backend.
pub const END_LOGGED: &str = "dtxn::end_logged";

/// Every point, in the order a logged Commit meets them.
pub const ALL: [&str; 5] = [
    COMMIT_DECIDED,
    COMMIT_LOGGED,
    COMMIT_ACKNOWLEDGED,
    ALL_ACKNOWLEDGED,
    END_LOGGED,
];

/// Reaches the point `$name` (one of the constants of this module): with
/// the `failpoints` feature, runs what is configured for it.
macro_rules! reach {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        {
            fail::fail_point!($name);
        }
    }};
}
pub(crate) use reach;
