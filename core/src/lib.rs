//! # sipline
//!
//! A SIP (RFC 3261) endpoint stack with a sans-IO core: this crate consumes
//! bytes and timer ticks and emits actions; it never touches sockets,
//! threads, clocks or global randomness. The runtime crates (one per
//! async runtime, one for blocking threads) own the IO.
//!
//! The layers, bottom up: [`message`] (a zero-copy parser, typed headers,
//! URIs, stream framing and a serializer), [`transport`] (RFC 3261 §18:
//! UDP, TCP and TLS with rustls, a connection table, RFC 3263 resolution
//! as outputs), [`transaction`] (RFC 3261 §17 with RFC 6026), [`dialog`]
//! (§12) and [`endpoint`]: the user agent (registration, page mode,
//! INVITE sessions with PRACK, UPDATE and session timers, subscriptions
//! and transfer) and the server role (registrar and stateful proxy).
//! Beside them: [`auth`] (Digest, RFC 3261 §22 with RFC 7616 and RFC 8760,
//! both sides), [`registrar`] (RFC 3261 §10.3 and the location service),
//! [`proxy`] (the stateless rules of RFC 3261 §16), [`sdp`] (RFC 8866 and
//! offer/answer, RFC 3264) and [`event`] (the bodies and headers of event
//! packages and transfer). The runtime crates (one per async runtime,
//! one for plain threads) drive an endpoint over real sockets;
//! `DESIGN.md` in the repository tells how it fits together.
//!
//! The message layer needs nothing around it:
//!
//! ```
//! use sipline::message::{HeaderName, Message, Salvaged, StatusCode};
//!
//! let request = b"OPTIONS sip:bob@192.0.2.7 SIP/2.0\r\n\
//!     Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9\r\n\
//!     Max-Forwards: 70\r\nFrom: <sip:alice@192.0.2.1>;tag=9fxced76sl\r\n\
//!     To: <sip:bob@192.0.2.7>\r\nCall-ID: 3848276298220188511@192.0.2.1\r\n\
//!     CSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n";
//! let m = Message::parse(request)?;
//! assert_eq!(m.method().map(|x| x.as_str()), Some("OPTIONS"));
//! assert_eq!(m.headers().first(HeaderName::CallId).and_then(|h| h.value_str()), Some("3848276298220188511@192.0.2.1"));
//! // A response copies what §8.2.6.2 says it must, and adds our To tag.
//! let mut response = Vec::new();
//! let ok = StatusCode::new(200).ok_or("status")?;
//! assert!(Salvaged::from_message(&m).write_response(&mut response, ok, "OK", "a6c85cf"));
//! assert!(response.starts_with(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
