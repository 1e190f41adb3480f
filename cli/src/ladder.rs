//! `--ladder`: the message flow drawn as a ladder, one line per message,
//! an arrow between this endpoint and the peer it went to or came from,
//! the way sngrep draws a call flow:
//!
//! ```text
//!   time  this endpoint        127.0.0.1:5062
//!  0.000  |------- INVITE ------->|
//!  0.002  |<--- 180 Ringing ------|
//!  0.004  |<------ 200 OK --------|
//!  0.004  |-------- ACK --------->|
//! ```
//!
//! Peers get a column each, in the order they are first seen; the header
//! is printed again when one is added. Fed from the `sipline::wire` trace
//! (the message text and its `remote` field).

use std::time::Instant;

/// The width of one column (the space between two lifelines).
const WIDTH: usize = 24;

/// The ladder's state: when it started, the peers' columns.
pub(crate) struct Ladder {
    start: Instant,
    peers: Vec<String>,
}

impl Ladder {
    pub(crate) fn new(start: Instant) -> Ladder {
        Ladder { start, peers: Vec::new() }
    }

    /// The lines to print for a message `sent` (or received) to or from
    /// `remote` at `at`, whose text is `message`: the header first when
    /// `remote` is new.
    pub(crate) fn lines(&mut self, at: Instant, sent: bool, remote: &str, message: &str) -> Vec<String> {
        let mut out = Vec::new();
        let column = if let Some(i) = self.peers.iter().position(|p| p == remote) {
            i + 1
        } else {
            self.peers.push(remote.to_owned());
            out.push(self.header());
            self.peers.len()
        };
        let secs = at.saturating_duration_since(self.start).as_secs_f64();
        out.push(format!("{secs:>7.3}  {}", self.arrow(column, sent, &label(message))));
        out
    }

    /// `  time  this endpoint   peer1   peer2…`
    fn header(&self) -> String {
        use std::fmt::Write as _;
        let mut line = format!("{:>7}  {:<WIDTH$}", "time", "this endpoint");
        for p in &self.peers {
            let _ = write!(line, "{p:<WIDTH$}");
        }
        line.trim_end().to_owned()
    }

    /// The lifelines with one arrow between column 0 and `column`.
    fn arrow(&self, column: usize, rightwards: bool, label: &str) -> String {
        let span = column * WIDTH;
        let mut cells: Vec<char> = vec![' '; self.peers.len() * WIDTH + 1];
        for c in 0..=self.peers.len() {
            cells[c * WIDTH] = '|';
        }
        for cell in cells.iter_mut().take(span).skip(1) {
            *cell = '-';
        }
        if rightwards {
            cells[span - 1] = '>';
        } else {
            cells[1] = '<';
        }
        // The label in the middle of the arrow, a space either side.
        let text: Vec<char> = format!(" {label} ").chars().take(span.saturating_sub(4)).collect();
        let from = (span - text.len()) / 2;
        for (i, ch) in text.into_iter().enumerate() {
            cells[from + i] = ch;
        }
        cells.into_iter().collect::<String>().trim_end().to_owned()
    }
}

/// What an arrow says: a request's method, or a response's status and
/// reason (with its CSeq method when it is not an INVITE's).
fn label(message: &str) -> String {
    let first = message.lines().next().unwrap_or_default().trim();
    if let Some(status) = first.strip_prefix("SIP/2.0 ") {
        let method = message
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.trim().eq_ignore_ascii_case("CSeq").then(|| value.split_whitespace().nth(1).map(str::to_owned))?
            })
            .unwrap_or_default();
        if method.is_empty() || method == "INVITE" {
            status.to_owned()
        } else {
            format!("{status} ({method})")
        }
    } else {
        first.split_whitespace().next().unwrap_or("?").to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const INVITE: &str = "INVITE sip:bob@127.0.0.1:5062 SIP/2.0\r\nCSeq: 1 INVITE\r\n\r\n";
    const RINGING: &str = "SIP/2.0 180 Ringing\r\nCSeq: 1 INVITE\r\n\r\n";
    const BYE_OK: &str = "SIP/2.0 200 OK\r\nCSeq: 2 BYE\r\n\r\n";

    #[test]
    fn arrows_point_from_the_sender_with_the_label_in_the_middle() {
        let t0 = Instant::now();
        let mut l = Ladder::new(t0);
        let first = l.lines(t0, true, "127.0.0.1:5062", INVITE);
        assert_eq!(first[0], "   time  this endpoint           127.0.0.1:5062");
        assert_eq!(first[1], "  0.000  |------- INVITE ------->|");
        let ringing = l.lines(t0 + Duration::from_millis(2), false, "127.0.0.1:5062", RINGING);
        assert_eq!(ringing, ["  0.002  |<--- 180 Ringing ------|"]);
        let bye = l.lines(t0 + Duration::from_millis(5), false, "127.0.0.1:5062", BYE_OK);
        assert_eq!(bye, ["  0.005  |<--- 200 OK (BYE) -----|"]);
    }

    #[test]
    fn a_second_peer_gets_a_column_of_its_own() {
        let t0 = Instant::now();
        let mut l = Ladder::new(t0);
        l.lines(t0, false, "192.0.2.1:5060", INVITE);
        let second = l.lines(t0, true, "192.0.2.2:5060", INVITE);
        assert_eq!(second[0], "   time  this endpoint           192.0.2.1:5060          192.0.2.2:5060");
        assert_eq!(second[1], "  0.000  |------------------- INVITE ------------------->|");
        assert!(second[1].chars().filter(|c| *c == '|').count() == 2);
        // Lifelines of the peers between stay visible only outside the arrow.
        let back = l.lines(t0, false, "192.0.2.1:5060", RINGING);
        assert_eq!(back, ["  0.000  |<--- 180 Ringing ------|                       |"]);
    }
}
