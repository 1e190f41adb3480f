//! What the endpoint does with a request that reaches it (RFC 3261 §8.2),
//! before the application sees anything: the checks of §8.2.1–§8.2.3 with
//! their answers, 481 for requests inside a dialog that does not exist
//! (§12.2.2), OPTIONS answered on the application's behalf (§11.2), and
//! MESSAGE answered 200 and reported (RFC 3428 §7) unless the application
//! asked to answer it itself.

use crate::message::validate::{inspect_request, Capabilities, Invalid};
use crate::message::{Message, Method, StatusCode};

/// The methods every endpoint takes (Allow, §20.5): PRACK (RFC 3262) and
/// UPDATE (RFC 3311) belong to sessions too, NOTIFY to the subscriptions
/// it makes (RFC 6665 §4.1.3).
const BUILT_IN: [Method<'static>; 9] = [
    Method::Invite,
    Method::Ack,
    Method::Bye,
    Method::Cancel,
    Method::Options,
    Method::Message,
    Method::Prack,
    Method::Update,
    Method::Notify,
];

/// What the endpoint is able to take, from its configuration.
pub(super) struct Abilities<'c> {
    /// Methods the application answers itself ([`super::Event::Incoming`]).
    pub handled: &'c [Method<'static>],
    /// Body types understood (`type/subtype`).
    pub accept: &'c [&'c str],
    /// Option tags supported (Require, §8.2.2.3).
    pub extensions: &'c [&'c str],
    /// Whether the application serves event packages (then SUBSCRIBE is
    /// taken, RFC 6665 §4.2.1).
    pub events: bool,
    /// Whether the application takes transfers (REFER, RFC 3515).
    pub refer: bool,
}

/// The decision about one arriving request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Answer it now with this status and these extra header fields.
    Reply { code: u16, reason: String, headers: Vec<(&'static str, String)> },
    /// A page-mode MESSAGE: answer 200 and report it.
    Message,
    /// Hand it to the application.
    Deliver,
    /// Sessions take it: INVITE, CANCEL, BYE, or any request with a To
    /// tag (inside a dialog, §12.2.2).
    Session,
    /// Subscriptions take it (SUBSCRIBE, NOTIFY; RFC 6665), or sessions
    /// if it is in the dialog of one.
    Subscription,
    /// Nothing to answer (an ACK: §17.1.1.3, never answered).
    Absorb,
}

impl Abilities<'_> {
    /// Methods the endpoint takes: sessions (INVITE, ACK, BYE, CANCEL),
    /// OPTIONS, MESSAGE and NOTIFY always, SUBSCRIBE when it serves
    /// events, plus those the application handles.
    pub(super) fn methods(&self) -> Vec<Method<'static>> {
        let mut all = BUILT_IN.to_vec();
        let events: &[Method<'static>] = match (self.events, self.refer) {
            (true, true) => &[Method::Subscribe, Method::Refer],
            (true, false) => &[Method::Subscribe],
            (false, true) => &[Method::Refer],
            (false, false) => &[],
        };
        for m in self.handled.iter().chain(events) {
            if !all.contains(m) {
                all.push(*m);
            }
        }
        all
    }

    /// The Allow header value (§20.5).
    pub(super) fn allow(&self) -> String {
        self.methods().iter().map(Method::as_str).collect::<Vec<_>>().join(", ")
    }

    /// The Supported header value (§20.37).
    pub(super) fn supported(&self) -> String {
        self.extensions.join(", ")
    }

    /// Decides what to do with `m`, a request the transaction layer handed up.
    pub(super) fn judge(&self, m: &Message<'_>) -> Verdict {
        let Some(method) = m.method().copied() else { return Verdict::Absorb };
        if method == Method::Ack {
            return Verdict::Absorb;
        }
        // The common case needs no list built (one fewer allocation per
        // request): the built-in methods when the application adds none.
        let built;
        let plain = !self.events && !self.refer;
        let methods: &[Method<'static>] = if plain && self.handled.iter().all(|m| BUILT_IN.contains(m)) {
            &BUILT_IN
        } else {
            built = self.methods();
            &built
        };
        // RFC 6665 §4.1.3: a NOTIFY carries whatever its subscription's
        // Accept asked for (PIDF, reginfo, sipfrag…), not what the
        // endpoint takes in sessions and messages.
        let media_types = if method == Method::Notify { &["*/*"][..] } else { self.accept };
        let caps = Capabilities { methods, schemes: &["sip", "sips"], extensions: self.extensions, media_types };
        if let Err(why) = inspect_request(m, &caps) {
            return self.refusal(&why);
        }
        // RFC 6665: SUBSCRIBE and NOTIFY go to the subscriptions (unless
        // the application takes them itself), and REFER (RFC 3515) when
        // transfers are taken.
        let taken = matches!(method, Method::Subscribe | Method::Notify) || (method == Method::Refer && self.refer);
        if taken && !self.handled.contains(&method) {
            return Verdict::Subscription;
        }
        // §12.2.2: a request with a To tag belongs to a dialog: the
        // sessions find it (or answer 481).
        let in_dialog = m.to().and_then(Result::ok).is_some_and(|to| to.tag().is_some());
        if in_dialog || matches!(method, Method::Invite | Method::Cancel | Method::Bye | Method::Prack | Method::Update)
        {
            return Verdict::Session;
        }
        if self.handled.contains(&method) {
            return Verdict::Deliver;
        }
        match method {
            // §11.2: what a request would get, with what we support.
            Method::Options => reply(
                200,
                "OK",
                vec![("Allow", self.allow()), ("Accept", self.accept.join(", ")), ("Supported", self.supported())],
            ),
            Method::Message => Verdict::Message,
            _ => reply(405, "Method Not Allowed", vec![("Allow", self.allow())]),
        }
    }

    /// The answer to a request that failed the §8.2 checks.
    fn refusal(&self, why: &Invalid<'_>) -> Verdict {
        match why {
            // §8.2.1: 405 with Allow. (An unrecognised method may get 501;
            // 405 with Allow tells the sender more.)
            Invalid::Method(_) => reply(405, "Method Not Allowed", vec![("Allow", self.allow())]),
            // §8.2.2.1.
            Invalid::Scheme(_) => reply(416, "Unsupported URI Scheme", Vec::new()),
            // §8.2.2.3: the tags we do not support, in Unsupported.
            Invalid::Extensions(tags) => reply(420, "Bad Extension", vec![("Unsupported", tags.join(", "))]),
            // §8.2.3: what we accept, in Accept.
            Invalid::MediaType => reply(415, "Unsupported Media Type", vec![("Accept", self.accept.join(", "))]),
            Invalid::NotAcceptable => reply(406, "Not Acceptable", vec![("Accept", self.accept.join(", "))]),
            // §8.2.2 / §8.1.1: missing, repeated or malformed fields, CSeq
            // method mismatch: 400 with the reason in the phrase.
            other => reply(400, &format!("Bad Request ({other})"), Vec::new()),
        }
    }
}

fn reply(code: u16, reason: &str, headers: Vec<(&'static str, String)>) -> Verdict {
    Verdict::Reply { code, reason: reason.to_owned(), headers }
}

/// `code` as a status code (the codes above are all valid).
pub(super) fn status(code: u16) -> StatusCode {
    StatusCode::new(code).unwrap_or(StatusCode::new(500).unwrap_or_else(|| unreachable!()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
        Max-Forwards: 70\r\nFrom: <sip:a@192.0.2.1>;tag=1\r\nCall-ID: c1\r\n";

    fn request(method: &str, extra: &str, body: &str) -> Vec<u8> {
        let to = if extra.contains("To:") { String::new() } else { "To: <sip:b@192.0.2.2>\r\n".to_owned() };
        format!(
            "{method} sip:b@192.0.2.2 SIP/2.0\r\n{BASE}{to}CSeq: 1 {method}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn judge(abilities: &Abilities<'_>, bytes: &[u8]) -> Verdict {
        abilities.judge(&Message::parse(bytes).unwrap())
    }

    const UA: Abilities<'static> =
        Abilities { handled: &[], accept: &["text/plain"], extensions: &["gruu"], events: false, refer: false };

    fn code(v: &Verdict) -> u16 {
        match v {
            Verdict::Reply { code, .. } => *code,
            other => panic!("no reply: {other:?}"),
        }
    }

    fn header<'v>(v: &'v Verdict, name: &str) -> Option<&'v str> {
        match v {
            Verdict::Reply { headers, .. } => headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()),
            _ => None,
        }
    }

    #[test]
    fn message_is_taken_and_options_answered_with_what_we_support() {
        assert_eq!(judge(&UA, &request("MESSAGE", "Content-Type: text/plain\r\n", "hi")), Verdict::Message);
        let v = judge(&UA, &request("OPTIONS", "", ""));
        assert_eq!(code(&v), 200);
        assert_eq!(header(&v, "Allow"), Some("INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, PRACK, UPDATE, NOTIFY"));
        assert_eq!(header(&v, "Accept"), Some("text/plain"));
        assert_eq!(header(&v, "Supported"), Some("gruu"));
    }

    #[test]
    fn unknown_and_unhandled_methods_get_405_with_allow() {
        for method in ["INFO", "SUBSCRIBE", "PUBLISH", "FOOBAR"] {
            let v = judge(&UA, &request(method, "", ""));
            assert_eq!(code(&v), 405, "{method}");
            assert_eq!(header(&v, "Allow"), Some("INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, PRACK, UPDATE, NOTIFY"));
        }
        let info = Abilities { handled: &[Method::Info], ..UA };
        assert_eq!(judge(&info, &request("INFO", "", "")), Verdict::Deliver);
        assert_eq!(
            header(&judge(&info, &request("PUBLISH", "", "")), "Allow"),
            Some("INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, PRACK, UPDATE, NOTIFY, INFO")
        );
    }

    #[test]
    fn sessions_take_invite_cancel_bye_and_in_dialog_requests() {
        for method in ["INVITE", "CANCEL", "BYE", "PRACK", "UPDATE"] {
            assert_eq!(judge(&UA, &request(method, "", "")), Verdict::Session, "{method}");
        }
        // In a dialog (a To tag): the sessions answer, 481 when none matches.
        assert_eq!(judge(&UA, &request("MESSAGE", "To: <sip:b@192.0.2.2>;tag=77\r\n", "")), Verdict::Session);
        // The §8.2 checks come first.
        let v = judge(&UA, &request("INVITE", "Require: 100rel\r\n", ""));
        assert_eq!((code(&v), header(&v, "Unsupported")), (420, Some("100rel")));
    }

    #[test]
    fn section_8_2_checks() {
        let v = judge(&UA, &request("MESSAGE", "Require: foo, gruu, bar\r\n", ""));
        assert_eq!((code(&v), header(&v, "Unsupported")), (420, Some("foo, bar")));
        let v = judge(&UA, &request("MESSAGE", "Content-Type: application/weird\r\n", "x"));
        assert_eq!((code(&v), header(&v, "Accept")), (415, Some("text/plain")));
        let tel = b"MESSAGE tel:+15551234 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK2\r\n\
            From: <sip:a@192.0.2.1>;tag=1\r\nTo: <tel:+15551234>\r\nCall-ID: c2\r\nCSeq: 1 MESSAGE\r\n\
            Content-Length: 0\r\n\r\n";
        assert_eq!(code(&judge(&UA, tel)), 416);
        let mismatch =
            String::from_utf8(request("MESSAGE", "", "")).unwrap().replace("CSeq: 1 MESSAGE", "CSeq: 1 OPTIONS");
        let v = judge(&UA, mismatch.as_bytes());
        assert_eq!(code(&v), 400);
        let twice = request("MESSAGE", "Call-ID: c9\r\n", "");
        assert_eq!(code(&judge(&UA, &twice)), 400);
    }

    #[test]
    fn acks_are_never_answered() {
        assert_eq!(judge(&UA, &request("ACK", "", "")), Verdict::Absorb);
    }
}
