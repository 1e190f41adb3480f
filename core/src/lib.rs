//! # sipline
//!
//! A SIP (RFC 3261) endpoint stack with a sans-IO core: this crate consumes
//! bytes and timer ticks and emits actions; it never touches sockets,
//! threads, clocks or global randomness. The runtime crates (one per
//! async runtime, one for blocking threads) own the IO.
//!
//! Built so far: the [`message`] layer (a zero-copy parser, typed headers,
//! URIs, stream framing and a serializer), the [`transaction`] layer
//! (RFC 3261 §17 with RFC 6026), the [`transport`] layer (RFC 3261 §18:
//! UDP, TCP and TLS with rustls, a connection table, RFC 3263 resolution
//! as outputs) and [`auth`] (Digest authentication, RFC 3261 §22 with
//! RFC 7616 and RFC 8760, both sides). The dialog and endpoint layers
//! follow (see `DESIGN.md`). [`registrar`] holds the server side of
//! registration (RFC 3261 §10.3) and a location service; [`proxy`] the
//! stateless message rules of a proxy (RFC 3261 §16) that a stateful
//! proxy is built from.
//!
//! ## The drain rule
//!
//! Every stateful type of the core follows one rule: after each `handle_*`
//! call or command, drain `poll_output()` until it returns `None`, then read
//! `poll_timeout()`. (The message layer is stateless apart from
//! [`message::StreamFramer`], which follows the same "call again after
//! consuming" discipline.)
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod auth;
mod concurrent;
pub mod dialog;
#[cfg(feature = "driver")]
pub mod driver;
pub mod endpoint;
pub mod event;
pub mod message;
pub mod metrics;
pub mod proxy;
pub mod registrar;
pub mod rng;
pub mod sdp;
mod shed;
mod slab;
pub mod transaction;
pub mod transport;
