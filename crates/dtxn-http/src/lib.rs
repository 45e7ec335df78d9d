//! # dtxn-http — network mode for [`dtxn`]
//!
//! Real services live in separate processes, often written in other
//! languages. This crate puts [`dtxn`]'s coordinator on the network while
//! keeping all transaction state in memory:
//!
//! * [`HttpParticipant`] (feature `client`): a [`Participant`](dtxn::Participant)
//!   that calls a service's `prepare`, `commit` and `rollback` endpoints
//!   over HTTP, with pooled connections and per-call timeouts.
//! * [`participant_router`] (feature `participant-service`): turns any
//!   `Participant` into an axum router serving those endpoints, so a Rust
//!   service is one line away from joining. [`participant_router_with`]
//!   can require a bearer token, which [`HttpParticipant`] presents
//!   ([`HttpParticipantBuilder::bearer_token`]); see `docs/NETWORK.md`,
//!   "Authentication and TLS", for putting TLS in front (none is built in
//!   yet).
//! * [`server`] (feature `server`): the coordinator as an HTTP/JSON service
//!   (`dtxn serve`), for clients in any language.
//!
//! The [`wire`] module documents the participant wire contract — JSON
//! bodies and status codes — for services written in other languages.

#![warn(missing_docs)]

pub mod wire;

#[cfg(any(feature = "client", feature = "participant-service"))]
mod auth;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
pub use client::{HttpParticipant, HttpParticipantBuilder, HttpParticipantError};

#[cfg(feature = "participant-service")]
mod service;
#[cfg(feature = "participant-service")]
pub use service::{participant_router, participant_router_with, RouterConfig, RouterConfigError};

#[cfg(feature = "server")]
pub mod server;
