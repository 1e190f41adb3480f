//! Fuzzes `StreamFramer` the way a stream transport drives it.
//!
//! The whole input is the byte stream; its first two bytes also seed the
//! sizes of the reads it arrives in. Checks that the framer never panics,
//! that every frame it reports lies within the buffer it was given, and that
//! `Message::parse` handles each framed message without panicking (and, if
//! it accepts it, consumes exactly the frame). Also checks that framing the
//! stream in one read gives the same frames as framing it read by read, up
//! to the first error. Keep-alives are compared as runs of CRLF octets
//! between messages, since a ping split across reads may legitimately come
//! out as a pong plus a short ping. A third run with small limits checks
//! that `NeedMore` never leaves more than `max_message` octets buffered.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sipline::message::{Framed, FramingLimits, Message, StreamFramer};

/// Upper bound on `advance` calls per run: each productive call consumes at
/// least one octet and each `NeedMore` waits for a new read, so a correct
/// framer needs far fewer.
const MAX_CALLS_PER_OCTET: usize = 4;

/// What one framing run produced, in stream coordinates.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// `(offset, len)` of every framed message, in order.
    messages: Vec<(usize, usize)>,
    /// Keep-alive octets consumed after the last message.
    trailing_keepalive: usize,
    /// Octets consumed in total.
    consumed: usize,
    /// Whether the run ended in a framing error.
    failed: bool,
}

/// Read sizes from a tiny xorshift generator seeded by the input.
struct Reads {
    state: u32,
    max: usize,
}

impl Reads {
    fn new(data: &[u8]) -> Self {
        let a = u32::from(data.first().copied().unwrap_or(0));
        let b = u32::from(data.get(1).copied().unwrap_or(0));
        // Read sizes up to 1, 2, 4, … 128 octets, by the low bits of byte 0.
        let max = 1usize << (a & 7);
        Reads { state: (a << 8 | b).wrapping_mul(2_654_435_761) | 1, max }
    }

    fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + (self.state as usize) % self.max
    }
}

/// Handles one frame reported for `buf` (the unconsumed octets).
fn frame(out: &mut Outcome, buf: &[u8], f: Framed) -> usize {
    match f {
        Framed::NeedMore => unreachable!(),
        Framed::Ping { len } | Framed::Pong { len } => {
            assert!(len > 0 && len <= buf.len(), "{f:?} with {} octets buffered", buf.len());
            assert!(buf[..len].chunks(2).all(|c| c == b"\r\n"), "{f:?} over non-CRLF octets {:?}", &buf[..len]);
            out.trailing_keepalive += len;
            len
        }
        Framed::Message { len } => {
            assert!(len > 0 && len <= buf.len(), "{f:?} with {} octets buffered", buf.len());
            if let Ok(m) = Message::parse(&buf[..len]) {
                assert_eq!(m.len(), len, "parser and framer disagree on the message end");
            }
            out.messages.push((out.consumed, len));
            out.trailing_keepalive = 0;
            len
        }
    }
}

/// Small limits, so inputs of a few KiB reach them.
const SMALL: FramingLimits = FramingLimits { max_message: 256, max_headers: 8, max_line: 64 };

/// Frames `data` arriving in reads of the sizes `reads` yields.
fn run(data: &[u8], limits: FramingLimits, mut reads: impl FnMut() -> usize) -> Outcome {
    let mut framer = StreamFramer::new(limits);
    let mut out = Outcome::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut budget = MAX_CALLS_PER_OCTET * (data.len() + 1);
    while fed < data.len() {
        let n = reads().min(data.len() - fed);
        buf.extend_from_slice(&data[fed..fed + n]);
        fed += n;
        loop {
            budget = budget.checked_sub(1).expect("framer made no progress");
            match framer.advance(&buf) {
                Ok(Framed::NeedMore) => {
                    // Waiting never lets the buffer outgrow the limit.
                    assert!(buf.len() <= limits.max_message, "NeedMore with {} octets buffered", buf.len());
                    break;
                }
                Ok(f) => {
                    let len = frame(&mut out, &buf, f);
                    buf.drain(..len);
                    out.consumed += len;
                }
                Err(e) => {
                    let _ = e.to_string();
                    out.failed = true;
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut reads = Reads::new(data);
    let mut small_reads = Reads::new(data);
    let _ = run(data, SMALL, || small_reads.next());
    let chunked = run(data, FramingLimits::default(), || reads.next());
    let whole = run(data, FramingLimits::default(), || usize::MAX);

    // Up to the first error on either side, the same messages at the same
    // stream offsets.
    let upto = match (whole.failed, chunked.failed) {
        (false, false) => usize::MAX,
        (true, false) => whole.messages.len(),
        (false, true) => chunked.messages.len(),
        (true, true) => whole.messages.len().min(chunked.messages.len()),
    };
    let cut = |v: &[(usize, usize)]| v[..v.len().min(upto)].to_vec();
    assert_eq!(
        cut(&whole.messages),
        cut(&chunked.messages),
        "frames differ between one read and many ({} reads of at most {})",
        data.len(),
        reads.max
    );
    if upto != usize::MAX {
        assert!(
            whole.messages.len() >= upto && chunked.messages.len() >= upto,
            "one side stopped early without an error: whole {whole:?}, chunked {chunked:?}"
        );
    } else {
        // Neither failed: everything matches except that the read-by-read
        // run may already have taken a CRLF as a pong where the one-read run
        // still waits to see whether it is half of a ping.
        let extra = chunked.trailing_keepalive.checked_sub(whole.trailing_keepalive);
        let pending = &data[whole.consumed..];
        assert!(
            extra == Some(0) || (extra == Some(2) && pending.starts_with(b"\r\n")),
            "keep-alives differ: whole {whole:?}, chunked {chunked:?}"
        );
    }
});
