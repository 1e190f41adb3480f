//! Several endpoints serving as one (issue 19: `serve` on every core). A
//! runtime runs one sans-IO endpoint per worker thread, each with its own
//! sockets on the same addresses (`SO_REUSEPORT`: the kernel spreads
//! datagrams over the workers by the sender's address, so a sender's
//! requests and their retransmissions stay on one worker). What the
//! workers share travels in clones of [`super::ServerConfig`], every table
//! lock-free: the bindings ([`crate::registrar::SharedLocation`]), the
//! nonce secret and ledger ([`super::ServerConfig::nonce_secret`],
//! [`crate::auth::NonceLedger`]), failed answers and bans
//! ([`crate::auth::BanTable`]), flood buckets ([`super::FloodTable`]),
//! and the directory of accepted connections
//! ([`crate::transport::SharedFlows`]).
//!
//! A response comes back from the peer the request went to, which the
//! kernel may hand to another worker than the one that holds the client
//! transaction (RFC 3261 §17.1.3 matches it by the branch of the top Via).
//! So every branch a worker writes ends in its tag (`.w<id>`), and
//! [`response_worker`] reads it back from a response's top Via without a
//! full parse: the runtime hands the datagram to that worker as it came.

use crate::message::headers::MAGIC_COOKIE;

/// Which of several workers an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Worker {
    /// This worker, `0..count`.
    pub id: u16,
    /// How many workers serve together.
    pub count: u16,
}

impl Worker {
    /// Worker `id` of `count` (`id` below `count`).
    ///
    /// ```
    /// use sipline::endpoint::Worker;
    /// let w = Worker::new(1, 4);
    /// assert_eq!(w.tag("z9hG4bK5f1a"), "z9hG4bK5f1a.w1");
    /// ```
    pub fn new(id: u16, count: u16) -> Worker {
        debug_assert!(id < count, "worker {id} of {count}");
        Worker { id, count }
    }

    /// `branch` with this worker's tag appended.
    pub fn tag(&self, branch: &str) -> String {
        format!("{branch}.w{}", self.id)
    }
}

/// The worker whose tag ends the branch of the top Via of `message`, if
/// it is a response and the branch carries one of our tags: the worker
/// holding the client transaction the response belongs to.
///
/// Reads only as far as the first Via header field (long or compact form,
/// any case), so that a receiving worker can decide where a datagram goes
/// for a fraction of the cost of handling it; anything malformed is left
/// to whoever receives it (`None`).
///
/// ```
/// use sipline::endpoint::response_worker;
/// let response = b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK77.w3;rport=5060\r\n\r\n";
/// assert_eq!(response_worker(response), Some(3));
/// let request = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1.w3\r\n\r\n";
/// assert_eq!(response_worker(request), None);
/// ```
pub fn response_worker(message: &[u8]) -> Option<u16> {
    if !message.starts_with(b"SIP/2.0 ") {
        return None;
    }
    let head_end = find(message, b"\r\n\r\n").unwrap_or(message.len());
    let mut lines = message[..head_end].split(|&b| b == b'\n').skip(1);
    let via = lines.find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let name = trim(&line[..colon]);
        (name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v")).then(|| &line[colon + 1..])
    })?;
    // The top value only: up to a comma outside any quotes (§7.3.1);
    // Via parameters hold no quoted strings in practice, so a comma ends it.
    let top = via.split(|&b| b == b',').next()?;
    let branch = top.split(|&b| b == b';').skip(1).find_map(|param| {
        let (name, value) = split_once(param, b'=')?;
        trim(name).eq_ignore_ascii_case(b"branch").then(|| trim(value))
    })?;
    if !branch.starts_with(MAGIC_COOKIE.as_bytes()) {
        return None;
    }
    let at = branch.windows(2).rposition(|w| w == b".w")?;
    let digits = &branch[at + 2..];
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split_once(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == sep)?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tag_of_the_top_via_only() {
        let r = |s: &str| response_worker(s.as_bytes());
        assert_eq!(r("SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKab.0.w12\r\nVia: SIP/2.0/UDP b;branch=z9hG4bKx.w1\r\n\r\n"), Some(12));
        assert_eq!(r("SIP/2.0 180 Ringing\r\nVIA :SIP/2.0/UDP a ; BRANCH = z9hG4bKab.w0 , SIP/2.0/UDP b;branch=z9hG4bKx.w1\r\n\r\n"), Some(0));
        // Not ours, or not a response, or no tag: no handover.
        assert_eq!(
            r("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKab\r\nVia: SIP/2.0/UDP b;branch=z9hG4bKx.w1\r\n\r\n"),
            None
        );
        assert_eq!(r("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=1234.w1\r\n\r\n"), None);
        assert_eq!(r("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK.w\r\n\r\n"), None);
        assert_eq!(r("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK.w999999\r\n\r\n"), None);
        assert_eq!(r("SIP/2.0 200 OK\r\nFrom: <sip:a@b>;tag=x\r\n\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1.w1"), None);
        assert_eq!(r("OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1.w1\r\n\r\n"), None);
        assert_eq!(r(""), None);
    }
}
