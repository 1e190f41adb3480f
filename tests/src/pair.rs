//! Two transaction layers wired back to back in memory, for benchmarks:
//! a client sends MESSAGE, a server answers 200, parse and serialize
//! included on both sides.

use sipline::message::{Message, MessageWriter, Method, Salvaged, StatusCode};
use sipline::transaction::{Event, Output, TimerConfig, TransactionLayer};
use std::time::Instant;

/// A client layer and a server layer with a message template.
pub struct Pair {
    /// The client side.
    pub client: TransactionLayer<u8>,
    /// The server side.
    pub server: TransactionLayer<u8>,
    seq: u64,
    /// Responses the server queued.
    buf: Vec<u8>,
}

impl Default for Pair {
    fn default() -> Self {
        Pair {
            client: TransactionLayer::new(TimerConfig::default(), 1),
            server: TransactionLayer::new(TimerConfig::default(), 2),
            seq: 0,
            buf: Vec::with_capacity(512),
        }
    }
}

impl Pair {
    /// A MESSAGE request with a fresh branch, written with the library's
    /// serializer (as a TU would).
    pub fn request(&mut self) -> Vec<u8> {
        use std::fmt::Write as _;
        self.seq += 1;
        let branch = self.client.new_branch();
        let mut via = String::with_capacity(64);
        let _ = write!(via, "SIP/2.0/TCP 192.0.2.1:5060;branch={branch}");
        let mut call_id = String::with_capacity(32);
        let _ = write!(call_id, "bench-{}@192.0.2.1", self.seq);
        let mut cseq = String::with_capacity(24);
        let _ = write!(cseq, "{} MESSAGE", self.seq);
        let mut buf = Vec::with_capacity(400);
        MessageWriter::request(&mut buf, Method::Message, "sip:bob@192.0.2.2")
            .header_bytes("Via", via.as_bytes())
            .header_bytes("Max-Forwards", b"70")
            .header_bytes("From", b"<sip:alice@example.com>;tag=a73kszlfl")
            .header_bytes("To", b"<sip:bob@example.com>")
            .header_bytes("Call-ID", call_id.as_bytes())
            .header_bytes("CSeq", cseq.as_bytes())
            .header_bytes("Content-Type", b"text/plain")
            .finish(b"hello");
        buf
    }

    /// One whole transaction on each side: request out, request in,
    /// 200 out, 200 in. `reliable` transports end both at once; on an
    /// unreliable one they stay in Completed until their timers run.
    /// Returns whether the client saw its 200.
    pub fn exchange(&mut self, now: Instant, reliable: bool) -> bool {
        let req = self.request();
        if self.client.send_request(now, req, 1, reliable).is_err() {
            return false;
        }
        let mut got = false;
        while let Some(o) = self.client.poll_output() {
            if let Output::Transmit { bytes, .. } = o {
                self.server.handle_message(now, &bytes, 0, reliable);
            }
        }
        while let Some(o) = self.server.poll_output() {
            match o {
                Output::Event(Event::Request { server, request, .. }) => {
                    self.buf.clear();
                    let Ok(m) = Message::parse(&request) else { continue };
                    let Some(ok) = StatusCode::new(200) else { continue };
                    if Salvaged::from_message(&m).write_response(&mut self.buf, ok, "", "b1") {
                        let _ = self.server.respond(now, server, std::mem::take(&mut self.buf));
                    }
                }
                Output::Transmit { bytes, .. } => self.client.handle_message(now, &bytes, 1, reliable),
                Output::Event(_) => {}
            }
        }
        while let Some(o) = self.client.poll_output() {
            if let Output::Event(Event::Response { .. }) = o {
                got = true;
            }
        }
        got
    }
}
