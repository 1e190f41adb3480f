//! `-v`: prints the SIP messages the core traces under the
//! `sipline::wire` target (every message sent and received, in plaintext),
//! to standard error; `serve` (unless `--quiet`): the one-line summaries
//! the server role traces under `sipline::serve`, to standard output; and
//! for every network command, the failed TLS handshakes the transport
//! traces at info under `sipline::tls` (peer and reason), to standard
//! output; and the UDP socket buffers each runtime socket got (`sipline::net`,
//! at info), to standard output; with `--ladder`, the messages drawn as a
//! ladder (`ladder.rs`) instead of printed whole. A minimal `tracing`
//! subscriber, nothing else.

use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

struct WireLog {
    wire: bool,
    serve: bool,
    /// `--ladder`: the flow drawn, one line per message.
    ladder: Option<std::sync::Mutex<crate::ladder::Ladder>>,
}

/// The target of the transport's TLS failures (one line per failed
/// connection, at info).
const TLS_TARGET: &str = "sipline::tls";

/// The target of the runtimes' socket set-up (the UDP buffer sizes the
/// kernel granted, one line per socket at start, at info).
const NET_TARGET: &str = "sipline::net";

/// Collects an event's fields: the message last, the rest as `name=value`.
#[derive(Default)]
struct Fields {
    head: String,
    message: String,
    /// The `remote` field (the peer of a wire message).
    remote: Option<String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "remote" {
            self.remote = Some(format!("{value:?}"));
        }
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.head, "{}={value:?} ", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "remote" {
            self.remote = Some(value.to_owned());
        }
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.head, "{}={value} ", field.name());
        }
    }
}

impl Subscriber for WireLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let info = *metadata.level() <= tracing::Level::INFO;
        ((self.wire || self.ladder.is_some()) && metadata.target() == "sipline::wire")
            || (self.serve && metadata.target() == "sipline::serve" && info)
            || ((metadata.target() == TLS_TARGET || metadata.target() == NET_TARGET) && info)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let target = event.metadata().target();
        if target == TLS_TARGET {
            // The message names the peer and the reason; no fields.
            crate::out::emit("log", fields.message.trim_end(), serde_json::json!({"target": target}));
        } else if target == "sipline::serve" || target == NET_TARGET {
            let head = fields.head.trim_end();
            let line = if head.is_empty() {
                fields.message.trim_end().to_owned()
            } else {
                format!("{} {head}", fields.message.trim_end())
            };
            crate::out::emit("log", &line, serde_json::json!({"target": target}));
        } else if let Some(ladder) = &self.ladder {
            let (dir, text) = fields.message.split_once('\n').unwrap_or((fields.message.as_str(), ""));
            let remote = fields.remote.as_deref().unwrap_or("?");
            let lines = match ladder.lock() {
                Ok(mut l) => l.lines(std::time::Instant::now(), dir == "sent", remote, text),
                Err(_) => return,
            };
            for line in lines {
                eprintln!("{line}");
            }
        } else {
            eprintln!("--- {}\n{}", fields.head.trim_end(), fields.message.trim_end());
        }
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// Installs the printer for the whole process: `wire` prints every
/// message (drawn as a ladder with `ladder`), `serve` the server role's
/// summaries; failed TLS connections are printed always.
pub(crate) fn install(wire: bool, serve: bool, ladder: bool) {
    let ladder = ladder.then(|| std::sync::Mutex::new(crate::ladder::Ladder::new(std::time::Instant::now())));
    let _ = tracing::subscriber::set_global_default(WireLog { wire, serve, ladder });
}
