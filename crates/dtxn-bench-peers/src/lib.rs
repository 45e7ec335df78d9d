//! # dtxn-bench-peers — peer crates driven by `dtxn bench`
//!
//! [`dtxn_bench`] measures dtxn against a floor and a hand-written
//! baseline. This crate adds two transaction systems published on
//! crates.io, as [`Peer`]s driven over the same no-op participants in the
//! same run (workload (a)):
//!
//! * [`DistTx`]: `dist_tx` 0.5, X/Open XA bindings; its
//!   `SimpleTransactionManager` does two-phase commit over registered
//!   resource managers, one after another, one transaction at a time per
//!   manager (so each driving task has its own manager).
//! * [`Steno`]: `steno` 0.5, Oxide's saga executor. A saga is **not**
//!   two-phase commit (no votes, no atomic commit point; failed sagas are
//!   compensated by undo actions), so what is measured is the cost of
//!   running one saga of N parallel actions per transaction through one
//!   saga execution coordinator.
//!
//! The crate is separate so that neither dtxn nor `dtxn-bench` depends on
//! the peers.
//!
//! ```
//! use std::sync::Arc;
//! use dtxn_bench::{drive, participants::many, Contender, Noop};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let participants = many(3, || Arc::new(Noop));
//! for peer in dtxn_bench_peers::all() {
//!     let contender = Contender::peer(peer.as_ref());
//!     let d = drive(&contender, &participants, 20, 4, false).await;
//!     assert_eq!(d.failed, 0, "{} committed every transaction", peer.name());
//! }
//! # }
//! ```

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod saga;
mod xa;

use std::sync::Arc;

use dtxn_bench::Peer;

pub use saga::Steno;
pub use xa::DistTx;

/// Every peer: `dist_tx`, then `steno`.
pub fn all() -> Vec<Arc<dyn Peer>> {
    vec![Arc::new(DistTx::new()), Arc::new(Steno::new())]
}
