//! Verification tooling for dtxn: fault-injecting participants, workloads
//! and invariant checkers shared by the seeded simulation tests and the
//! `dtxn soak` command.
#![warn(missing_docs)]
#![forbid(unsafe_code)]
