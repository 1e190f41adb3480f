//! Recovering what a response needs from a request that did not parse
//! (§8.2: a malformed request still deserves its 400 when it can be routed
//! back). Works on raw bytes, leniently, and never fails loudly.

use super::grammar::{is_token, is_wsp, trim};
use super::{HeaderName, Message, MessageWriter, StatusCode};

/// The raw header values a response copies from its request (§8.2.6.2:
/// Via, From, To, Call-ID, CSeq), found leniently in a malformed request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Salvaged<'a> {
    /// The request's method token, if the first line looked like a request.
    pub method: Option<&'a str>,
    /// Every Via value line, top first.
    pub vias: Vec<&'a [u8]>,
    /// From.
    pub from: Option<&'a [u8]>,
    /// To.
    pub to: Option<&'a [u8]>,
    /// Call-ID.
    pub call_id: Option<&'a [u8]>,
    /// CSeq.
    pub cseq: Option<&'a [u8]>,
    /// Whether To carries a tag, when a parse of the message already told
    /// (`None`: find out when writing).
    pub to_tagged: Option<bool>,
}

impl<'a> Salvaged<'a> {
    /// Scans `input` line by line for the fields a response needs. Lines
    /// that do not look like `name: value` are skipped.
    pub fn scan(input: &'a [u8]) -> Salvaged<'a> {
        let mut s = Salvaged::default();
        let mut lines = Lines { rest: input };
        let Some(first) = lines.next() else { return s };
        if !first.starts_with(b"SIP/") {
            let m = first.iter().take_while(|&&c| is_token(c)).count();
            s.method = std::str::from_utf8(&first[..m]).ok().filter(|m| !m.is_empty());
        }
        for line in lines {
            if line.is_empty() {
                break; // end of the header section
            }
            let n = line.iter().take_while(|&&c| is_token(c)).count();
            let mut k = n;
            while k < line.len() && is_wsp(line[k]) {
                k += 1;
            }
            if n == 0 || line.get(k) != Some(&b':') {
                continue;
            }
            let value = trim(&line[k + 1..]);
            match HeaderName::from_token(&line[..n]) {
                HeaderName::Via => s.vias.push(value),
                HeaderName::From => s.from = s.from.or(Some(value)),
                HeaderName::To => s.to = s.to.or(Some(value)),
                HeaderName::CallId => s.call_id = s.call_id.or(Some(value)),
                HeaderName::CSeq => s.cseq = s.cseq.or(Some(value)),
                _ => {}
            }
        }
        s
    }

    /// The same fields taken from a parsed message (whose values may still
    /// be malformed; they are copied, not interpreted).
    pub fn from_message(m: &Message<'a>) -> Salvaged<'a> {
        let h = m.headers();
        let one = |k| h.first(k).map(super::Header::value);
        Salvaged {
            method: m.method().map(super::Method::as_str),
            vias: h.all(HeaderName::Via).map(super::Header::value).collect(),
            from: one(HeaderName::From),
            to: one(HeaderName::To),
            call_id: one(HeaderName::CallId),
            cseq: one(HeaderName::CSeq),
            to_tagged: m.to().and_then(Result::ok).map(|a| a.tag().is_some()),
        }
    }

    /// Whether a response can be built: the request was a request (not an
    /// ACK, which is never answered, §17.2.1) and every copied field exists.
    pub fn can_respond(&self) -> bool {
        self.method.is_some_and(|m| m != "ACK")
            && !self.vias.is_empty()
            && self.from.is_some()
            && self.to.is_some()
            && self.call_id.is_some()
            && self.cseq.is_some()
    }

    /// Writes a response copying Via, From, To, Call-ID and CSeq (§8.2.6.2),
    /// adding `;tag=to_tag` to To if it has none. Returns `false` (and
    /// writes nothing) if [`can_respond`](Self::can_respond) is false.
    pub fn write_response(&self, buf: &mut Vec<u8>, code: StatusCode, reason: &str, to_tag: &str) -> bool {
        self.write_response_with(buf, code, reason, to_tag, &[])
    }

    /// [`write_response`](Self::write_response) with `extra` header fields
    /// (name, value) after the copied ones (Allow for a 405, Unsupported
    /// for a 420, Accept for a 415…).
    pub fn write_response_with(
        &self,
        buf: &mut Vec<u8>,
        code: StatusCode,
        reason: &str,
        to_tag: &str,
        extra: &[(&str, &str)],
    ) -> bool {
        self.write_response_body(buf, code, reason, to_tag, extra, b"")
    }

    /// The copied fields (§8.2.6.2): every Via, From, To (with `to_tag`
    /// added if it has none and this is not a 100), Call-ID, CSeq.
    fn write_copied(
        &self,
        w: &mut MessageWriter<'_>,
        [from, to, call_id, cseq]: [&[u8]; 4],
        to_tag: &str,
        trying: bool,
    ) {
        for v in &self.vias {
            w.header_bytes("Via", v);
        }
        w.header_bytes("From", from);
        // A To that parses tells exactly; a broken one is searched for "tag=".
        let has_tag = self.to_tagged.unwrap_or_else(|| {
            match <super::headers::Address<'_> as super::headers::HeaderValue<'_>>::parse_value(to) {
                Some(a) => a.tag().is_some(),
                None => to.windows(4).any(|x| x.eq_ignore_ascii_case(b"tag=")),
            }
        });
        if has_tag || trying {
            w.header_bytes("To", to);
        } else {
            w.header_parts("To", &[to, b";tag=", to_tag.as_bytes()]);
        }
        w.header_bytes("Call-ID", call_id);
        w.header_bytes("CSeq", cseq);
    }

    /// [`write_response_with`](Self::write_response_with) with a body
    /// (its Content-Type goes in `extra`).
    pub fn write_response_body(
        &self,
        buf: &mut Vec<u8>,
        code: StatusCode,
        reason: &str,
        to_tag: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> bool {
        let (true, Some(from), Some(to), Some(call_id), Some(cseq)) =
            (self.can_respond(), self.from, self.to, self.call_id, self.cseq)
        else {
            return false;
        };
        let vias: usize = self.vias.iter().map(|v| v.len() + 7).sum();
        buf.reserve(vias + from.len() + to.len() + call_id.len() + cseq.len() + to_tag.len() + 128);
        let mut w = MessageWriter::response(buf, code, reason);
        self.write_copied(&mut w, [from, to, call_id, cseq], to_tag, code.as_u16() == 100);
        for (name, value) in extra {
            w.header(name, value);
        }
        w.finish(body);
        true
    }
}

/// What every response to one request copies from it (§8.2.6.2), written
/// once with the To tag: for a request answered later and perhaps more
/// than once (a UAS's 180 and then its 200, §13.3.1), so that no response
/// needs the request parsed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The Via, From, To, Call-ID and CSeq lines.
    copied: Vec<u8>,
    /// The request's Record-Route lines, as written (§12.1.1).
    record_route: Vec<u8>,
}

impl ResponseHead {
    /// The head of the responses to `request`, with `to_tag` added to To
    /// where it has none; `None` if the request cannot be answered (see
    /// [`Salvaged::can_respond`]).
    pub fn of(request: &Message<'_>, to_tag: &str) -> Option<ResponseHead> {
        let s = Salvaged::from_message(request);
        let (true, Some(from), Some(to), Some(call_id), Some(cseq)) =
            (s.can_respond(), s.from, s.to, s.call_id, s.cseq)
        else {
            return None;
        };
        let mut copied = Vec::with_capacity(256);
        s.write_copied(&mut MessageWriter::append(&mut copied), [from, to, call_id, cseq], to_tag, false);
        let mut record_route = Vec::new();
        let mut w = MessageWriter::append(&mut record_route);
        for h in request.headers().all(HeaderName::RecordRoute) {
            w.header_bytes("Record-Route", h.value());
        }
        Some(ResponseHead { copied, record_route })
    }

    /// Writes a response: the status line, the copied fields, the
    /// Record-Route lines if `record_route` (dialog-creating responses,
    /// §12.1.1), `extra` fields, and `body` with its Content-Length.
    pub fn write(
        &self,
        buf: &mut Vec<u8>,
        code: StatusCode,
        reason: &str,
        record_route: bool,
        extra: &[(&str, &str)],
        body: &[u8],
    ) {
        buf.reserve(self.copied.len() + self.record_route.len() + body.len() + 160);
        let mut w = MessageWriter::response(buf, code, reason);
        w.lines(&self.copied);
        if record_route {
            w.lines(&self.record_route);
        }
        for (name, value) in extra {
            w.header(name, value);
        }
        w.finish(body);
    }
}

/// Logical lines (folds joined) of a header section.
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let mut k = 0;
        loop {
            match memchr::memchr(b'\n', &self.rest[k..]) {
                None => {
                    let line = self.rest;
                    self.rest = &[];
                    return Some(line.strip_suffix(b"\r").unwrap_or(line));
                }
                Some(n) => {
                    let end = k + n;
                    let line = &self.rest[..end];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if !line.is_empty() && self.rest.get(end + 1).is_some_and(|&c| is_wsp(c)) {
                        k = end + 1;
                        continue;
                    }
                    self.rest = &self.rest[end + 1..];
                    return Some(line);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_request_with_a_broken_request_line() {
        let raw = b"INVITE <sip:user@example.com> SIP/2.0\r\nTo: sip:user@example.com\r\nFrom: sip:caller@example.net;tag=39291\r\nMax-Forwards: 23\r\nCall-ID: ltgtruri.1@192.0.2.5\r\nCSeq: 1 INVITE\r\nVia: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bKkdjuw\r\nv: SIP/2.0/UDP 192.0.2.6\r\n\r\n";
        assert!(Message::parse(raw).is_err());
        let s = Salvaged::scan(raw);
        assert_eq!(s.method, Some("INVITE"));
        assert_eq!(s.vias.len(), 2);
        let mut out = Vec::new();
        assert!(s.write_response(&mut out, StatusCode::new(400).unwrap(), "", "srv1"));
        let r = Message::parse(&out).unwrap();
        assert_eq!(r.status().unwrap().as_u16(), 400);
        assert_eq!(r.to().unwrap().unwrap().tag(), Some("srv1"));
        assert_eq!(r.vias().count(), 2);
        assert_eq!(r.cseq().unwrap().unwrap().seq(), 1);
    }

    #[test]
    fn a_kept_head_writes_what_a_fresh_answer_writes() {
        let raw = b"INVITE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 192.0.2.6;branch=z9hG4bK2\r\nRecord-Route: <sip:p1.example.com;lr>\r\nRecord-Route: <sip:p2.example.com;lr>\r\nFrom: <sip:a@example.com>;tag=9\r\nTo: <sip:b@example.com>\r\nCall-ID: c1\r\nCSeq: 4 INVITE\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(raw).unwrap();
        let head = ResponseHead::of(&m, "t1").unwrap();
        let ok = StatusCode::new(200).unwrap();
        let extra = [("Contact", "<sip:b@192.0.2.9>")];
        let mut kept = Vec::new();
        head.write(&mut kept, ok, "OK", false, &extra, b"v=0\r\n");
        let mut fresh = Vec::new();
        assert!(Salvaged::from_message(&m).write_response_body(&mut fresh, ok, "OK", "t1", &extra, b"v=0\r\n"));
        assert_eq!(String::from_utf8(kept).unwrap(), String::from_utf8(fresh).unwrap());
        // §12.1.1: with the Record-Route lines, in their order, after CSeq.
        let mut dialog = Vec::new();
        head.write(&mut dialog, ok, "OK", true, &[], b"");
        let r = Message::parse(&dialog).unwrap();
        let rr: Vec<&str> = r.record_routes().map(|a| a.unwrap().uri().as_str()).collect();
        assert_eq!(rr, ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]);
        assert_eq!(r.to().unwrap().unwrap().tag(), Some("t1"));
        assert_eq!(r.vias().count(), 2);
        // Nothing to build from a request that cannot be answered.
        let ack = Message::parse(b"ACK sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 ACK\r\n\r\n").unwrap();
        assert_eq!(ResponseHead::of(&ack, "t"), None);
    }

    #[test]
    fn nothing_to_answer_without_the_fields() {
        let s = Salvaged::scan(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n");
        assert!(!s.can_respond());
        assert!(!s.write_response(&mut Vec::new(), StatusCode::new(400).unwrap(), "", "t"));
        assert!(!Salvaged::scan(b"").can_respond());
        assert!(!Salvaged::scan(b"SIP/2.0 200 OK\r\n").can_respond());
    }
}
