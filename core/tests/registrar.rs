//! `sipline::registrar`: RFC 3261 §10.3 steps 5–8 and RFC 5627 GRUUs through the public API.
// Each test takes one arbitrary origin from the clock (core/src never reads
// one); after that, time only moves when a test says so.
#![allow(clippy::disallowed_methods)]

use sipline::message::{HeaderName, Message, MessageWriter, Uri};
use sipline::registrar::*;
use sipline::rng::Rng;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const INSTANCE: &str = "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
const OTHER_INSTANCE: &str = "urn:uuid:00000000-0000-1000-8000-000a95a0e128";

/// A REGISTER for alice, with `extra` header lines (each ending in CRLF).
fn request(call_id: &str, cseq: u32, extra: &str) -> Vec<u8> {
    request_to("<sip:alice@example.com>", call_id, cseq, extra)
}

fn request_to(to: &str, call_id: &str, cseq: u32, extra: &str) -> Vec<u8> {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{cseq}x{call_id}\r\n\
         Max-Forwards: 70\r\n\
         To: {to}\r\n\
         From: <sip:alice@example.com>;tag=a73kszlfl\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} REGISTER\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn instance_contact(uri: &str, instance: &str, extra: &str) -> String {
    format!("Contact: <{uri}>;+sip.instance=\"<{instance}>\"{extra}\r\n")
}

/// Some instant to start from; only differences matter to the registrar,
/// and after this one reading time moves only when a test says so.
fn epoch() -> Instant {
    Instant::now()
}

struct Fixture<L: Location = MemoryLocation> {
    registrar: Registrar<L>,
    rng: Rng,
    t0: Instant,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(RegistrarConfig::new(["example.com", "Example.NET."]))
    }
    fn with(config: RegistrarConfig) -> Fixture {
        Fixture { registrar: Registrar::new(config), rng: Rng::new(7), t0: epoch() }
    }
}

impl<L: Location> Fixture<L> {
    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }
    fn send(&mut self, secs: u64, bytes: &[u8]) -> RegisterReply {
        let m = Message::parse(bytes).expect("test REGISTER parses");
        let now = self.at(secs);
        self.registrar.register(now, &m, &mut self.rng)
    }
    fn lookup(&self, secs: u64, uri: &str) -> Lookup {
        self.registrar.targets(self.at(secs), &Uri::parse(uri).unwrap())
    }
    /// The contact URIs alice's AOR leads to, in order.
    fn targets(&self, secs: u64) -> Vec<String> {
        match self.lookup(secs, "sip:alice@example.com") {
            Lookup::Aor(b) => b.into_iter().map(|b| b.contact).collect(),
            Lookup::NoBindings => Vec::new(),
            other => panic!("{other:?}"),
        }
    }
    fn resolve(&self, secs: u64, uri: &str) -> Option<Binding> {
        self.registrar.resolve_gruu(self.at(secs), &Uri::parse(uri).unwrap())
    }
}

/// The response the caller would build from `reply`, as bytes.
fn response(reply: &RegisterReply) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = MessageWriter::response(&mut buf, reply.status, &reply.reason);
    w.header("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1")
        .header("To", "<sip:alice@example.com>;tag=r1")
        .header("From", "<sip:alice@example.com>;tag=a73kszlfl")
        .header("Call-ID", "c1")
        .header("CSeq", "1 REGISTER");
    for (name, value) in &reply.headers {
        w.header(name, value);
    }
    w.finish(b"");
    buf
}

/// (URI, expires, q, pub-gruu, temp-gruu) of each Contact of the 200, read
/// back with the crate's own parser.
type Listed = (String, Option<u32>, Option<u16>, Option<String>, Option<String>);
fn listed(reply: &RegisterReply) -> Vec<Listed> {
    let bytes = response(reply);
    let m = Message::parse(&bytes).unwrap();
    m.contacts()
        .map(|c| {
            let c = c.unwrap();
            let uri = c.address().unwrap().uri().as_str().to_owned();
            (uri, c.expires(), c.q(), c.pub_gruu().map(Into::into), c.temp_gruu().map(Into::into))
        })
        .collect()
}

fn expires_of(reply: &RegisterReply) -> Vec<(String, u32)> {
    listed(reply).into_iter().map(|(u, e, ..)| (u, e.unwrap())).collect()
}

fn rejected(reply: &RegisterReply) -> RegisterError {
    match &reply.outcome {
        RegisterOutcome::Rejected(e) => *e,
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn register_refresh_and_expire() {
    let mut f = Fixture::new();
    let r = f.send(0, &request("c1", 1, "Contact: <sip:alice@192.0.2.10:5060>;expires=600\r\n"));
    assert_eq!((r.status.as_u16(), r.reason.as_str()), (200, "OK"));
    assert_eq!(expires_of(&r), [("sip:alice@192.0.2.10:5060".to_owned(), 600)]);
    assert_eq!(
        r.outcome,
        RegisterOutcome::Updated {
            aor: "sip:alice@example.com".into(),
            added: 1,
            refreshed: 0,
            removed: 0,
            bindings: 1
        }
    );
    assert_eq!(r.outcome.to_string(), "sip:alice@example.com: 1 binding(s) (1 added, 0 refreshed, 0 removed)");
    assert_eq!(f.targets(599), ["sip:alice@192.0.2.10:5060"]);

    // A refresh 500 s later: the same binding, a new expiry.
    let r = f.send(500, &request("c1", 2, "Contact: <sip:alice@192.0.2.10:5060>;expires=600\r\n"));
    assert_eq!(expires_of(&r), [("sip:alice@192.0.2.10:5060".to_owned(), 600)]);
    assert!(matches!(r.outcome, RegisterOutcome::Updated { added: 0, refreshed: 1, bindings: 1, .. }));
    assert_eq!(f.registrar.poll_timeout(), Some(f.at(1100)));
    assert_eq!(f.targets(1099), ["sip:alice@192.0.2.10:5060"]);

    // Expired at 1100 whether or not it was pruned.
    assert_eq!(f.lookup(1100, "sip:alice@example.com"), Lookup::NoBindings);
    let gone = f.registrar.handle_timeout(f.at(1100));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].cseq, 2);
    assert_eq!(f.registrar.poll_timeout(), None);
    assert!(f.registrar.location().is_empty());
}

#[test]
fn unregister_one_contact_with_expires_zero() {
    let mut f = Fixture::new();
    f.send(0, &request("c1", 1, "Contact: <sip:alice@192.0.2.10>, <sip:alice@198.51.100.7>\r\nExpires: 300\r\n"));
    assert_eq!(f.targets(1).len(), 2);
    let r = f.send(10, &request("c1", 2, "Contact: <sip:alice@192.0.2.10>;expires=0\r\n"));
    assert!(matches!(r.outcome, RegisterOutcome::Updated { removed: 1, bindings: 1, .. }));
    // §10.3 step 8: the other binding is still listed, with its time left.
    assert_eq!(expires_of(&r), [("sip:alice@198.51.100.7".to_owned(), 290)]);
    assert_eq!(f.targets(11), ["sip:alice@198.51.100.7"]);
    // Removing a binding that is not there is a 200 that changes nothing.
    let r = f.send(20, &request("c1", 3, "Contact: <sip:alice@203.0.113.1>\r\nExpires: 0\r\n"));
    assert!(matches!(r.outcome, RegisterOutcome::Updated { added: 0, removed: 0, bindings: 1, .. }));
}

#[test]
fn expiry_comes_from_the_param_then_the_header_then_the_default() {
    let mut f = Fixture::new();
    let r = f.send(
        0,
        &request(
            "c1",
            1,
            "Contact: <sip:a@192.0.2.1>;expires=120, <sip:a@192.0.2.2>\r\nContact: sip:a@192.0.2.3\r\nExpires: 900\r\n",
        ),
    );
    let mut got = expires_of(&r);
    got.sort();
    assert_eq!(
        got,
        [("sip:a@192.0.2.1".into(), 120), ("sip:a@192.0.2.2".into(), 900), ("sip:a@192.0.2.3".into(), 900)]
    );
    let r = f.send(0, &request("c2", 1, "Contact: <sip:a@192.0.2.4>\r\n"));
    assert!(expires_of(&r).contains(&("sip:a@192.0.2.4".into(), 3600)));
    // Longer than the maximum: shortened to it (§10.3 step 7); past 2^32-1
    // saturates rather than failing.
    let r = f.send(0, &request("c3", 1, "Contact: <sip:a@192.0.2.5>;expires=99999999999999\r\n"));
    assert!(expires_of(&r).contains(&("sip:a@192.0.2.5".into(), 86_400)));
}

#[test]
fn contacts_are_ordered_by_q_then_most_recent() {
    let mut f = Fixture::new();
    let r = f.send(
        0,
        &request("c1", 1, "Contact: <sip:low@192.0.2.1>;q=0.1, <sip:none@192.0.2.2>, <sip:mid@192.0.2.3>;q=0.5\r\n"),
    );
    // A missing q ranks as 1.0 and is not invented in the 200.
    let qs: Vec<_> = listed(&r).into_iter().map(|(u, _, q, ..)| (u, q)).collect();
    assert_eq!(
        qs,
        [
            ("sip:none@192.0.2.2".to_owned(), None),
            ("sip:mid@192.0.2.3".to_owned(), Some(500)),
            ("sip:low@192.0.2.1".to_owned(), Some(100)),
        ]
    );
    // Another contact at q=0.5 registered later comes before the older one.
    f.send(5, &request("c2", 1, "Contact: <sip:mid2@192.0.2.4>;q=0.500\r\n"));
    assert_eq!(f.targets(6), ["sip:none@192.0.2.2", "sip:mid2@192.0.2.4", "sip:mid@192.0.2.3", "sip:low@192.0.2.1"]);
    // Refreshing the older one makes it the most recent.
    f.send(7, &request("c1", 2, "Contact: <sip:mid@192.0.2.3>;q=0.5\r\n"));
    assert_eq!(f.targets(8), ["sip:none@192.0.2.2", "sip:mid@192.0.2.3", "sip:mid2@192.0.2.4", "sip:low@192.0.2.1"]);
    // q values are written back in qvalue form.
    let r = f.send(
        9,
        &request("c3", 1, "Contact: <sip:x@192.0.2.9>;q=0.005, <sip:y@192.0.2.9>;q=1.0, <sip:z@192.0.2.9>;q=0\r\n"),
    );
    let values: Vec<&str> = r.contacts().collect();
    assert!(values.contains(&"<sip:x@192.0.2.9>;expires=3600;q=0.005"));
    assert!(values.contains(&"<sip:y@192.0.2.9>;expires=3600;q=1"));
    assert!(values.contains(&"<sip:z@192.0.2.9>;expires=3600;q=0"));
}

#[test]
fn interval_too_brief_is_423_with_min_expires() {
    let mut f = Fixture::new();
    let r = f.send(0, &request("c1", 1, "Contact: <sip:alice@192.0.2.10>;expires=30\r\n"));
    assert_eq!((r.status.as_u16(), r.reason.as_str()), (423, "Interval Too Brief"));
    assert_eq!(r.headers, [("Min-Expires".to_owned(), "60".to_owned())]);
    assert_eq!(rejected(&r), RegisterError::IntervalTooBrief { min_expires: 60 });
    // The crate's UA side reads it back.
    let bytes = response(&r);
    assert_eq!(Message::parse(&bytes).unwrap().min_expires(), Some(Ok(60)));
    // Nothing was bound, not even the other, acceptable contact.
    let r = f.send(0, &request("c1", 2, "Contact: <sip:alice@192.0.2.11>, <sip:alice@192.0.2.10>;expires=59\r\n"));
    assert_eq!(r.status.as_u16(), 423);
    assert!(f.targets(0).is_empty());
    assert!(f.registrar.location().is_empty());
    // Through the Expires header too; exactly the minimum is fine.
    assert_eq!(f.send(0, &request("c1", 3, "Contact: <sip:alice@192.0.2.10>\r\nExpires: 1\r\n")).status.as_u16(), 423);
    assert_eq!(f.send(0, &request("c1", 4, "Contact: <sip:alice@192.0.2.10>\r\nExpires: 60\r\n")).status.as_u16(), 200);

    // §10.3 step 7: only intervals under one hour may be refused.
    let mut config = RegistrarConfig::new(["example.com"]);
    config.min_expires = 7200;
    let mut f = Fixture::with(config);
    assert_eq!(f.send(0, &request("c1", 1, "Contact: <sip:a@192.0.2.1>;expires=3599\r\n")).status.as_u16(), 423);
    let r = f.send(0, &request("c1", 2, "Contact: <sip:a@192.0.2.1>;expires=3600\r\n"));
    assert_eq!(expires_of(&r), [("sip:a@192.0.2.1".into(), 3600)]);
}

#[test]
fn wildcard_removes_every_binding() {
    let mut f = Fixture::new();
    f.send(0, &request("c1", 1, "Contact: <sip:alice@192.0.2.10>, <sip:alice@192.0.2.11>\r\n"));
    f.send(0, &request("other-ua", 7, "Contact: <sip:alice@198.51.100.1>\r\n"));
    assert_eq!(f.targets(1).len(), 3);
    let r = f.send(5, &request("c1", 2, "Contact: *\r\nExpires: 0\r\n"));
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.contacts().count(), 0);
    assert_eq!(r.outcome, RegisterOutcome::Cleared { aor: "sip:alice@example.com".into(), removed: 3 });
    assert!(f.targets(6).is_empty());
    assert_eq!(f.registrar.location().aor_count(), 0);
    assert_eq!(f.registrar.poll_timeout(), None);
}

#[test]
fn wildcard_rules_violated_are_400() {
    let mut f = Fixture::new();
    f.send(0, &request("c1", 1, "Contact: <sip:alice@192.0.2.10>\r\n"));
    for (extra, why) in [
        ("Contact: *\r\n", RegisterError::WildcardExpires),
        ("Contact: *\r\nExpires: 3600\r\n", RegisterError::WildcardExpires),
        ("Contact: *, <sip:alice@192.0.2.11>\r\nExpires: 0\r\n", RegisterError::WildcardWithOthers),
        ("Contact: <sip:alice@192.0.2.11>\r\nContact: *\r\nExpires: 0\r\n", RegisterError::WildcardWithOthers),
        ("Contact: *;expires=0\r\nExpires: 0\r\n", RegisterError::Malformed(HeaderName::Contact)),
    ] {
        let r = f.send(1, &request("c1", 2, extra));
        assert_eq!(r.status.as_u16(), 400, "{extra}");
        assert_eq!(rejected(&r), why, "{extra}");
        assert_eq!(r.reason, why.to_string());
    }
    assert_eq!(f.send(1, &request("c1", 2, "Contact: *\r\nExpires: 0\r\n")).reason, "OK");
}

#[test]
fn wildcard_obeys_the_call_id_cseq_rule() {
    let mut f = Fixture::new();
    f.send(0, &request("c1", 5, "Contact: <sip:alice@192.0.2.10>\r\n"));
    f.send(0, &request("c2", 1, "Contact: <sip:alice@192.0.2.11>\r\n"));
    // Same Call-ID as one binding, CSeq not higher: the whole request fails.
    let r = f.send(1, &request("c1", 5, "Contact: *\r\nExpires: 0\r\n"));
    assert_eq!(r.status.as_u16(), 500);
    assert_eq!(rejected(&r), RegisterError::OutOfOrder { stored: 5, cseq: 5 });
    assert_eq!(f.targets(2).len(), 2);
    // A new Call-ID removes them all.
    let r = f.send(3, &request("c3", 1, "Contact: *\r\nExpires: 0\r\n"));
    assert_eq!(r.outcome, RegisterOutcome::Cleared { aor: "sip:alice@example.com".into(), removed: 2 });
}

#[test]
fn contact_fetch_changes_nothing() {
    let mut f = Fixture::new();
    f.send(0, &request("c1", 1, "Contact: <sip:alice@192.0.2.10>;expires=600;q=0.7\r\n"));
    let before = f.registrar.location().bindings("sip:alice@example.com", f.at(0));
    let r = f.send(100, &request("fetcher", 1, "Expires: 0\r\n"));
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.outcome, RegisterOutcome::Fetched { aor: "sip:alice@example.com".into(), bindings: 1 });
    assert_eq!(r.contacts().collect::<Vec<_>>(), ["<sip:alice@192.0.2.10>;expires=500;q=0.7"]);
    assert_eq!(f.registrar.location().bindings("sip:alice@example.com", f.at(0)), before);
    // An AOR without bindings fetches an empty list.
    let r = f.send(100, &request_to("<sip:bob@example.com>", "f2", 1, ""));
    assert_eq!((r.status.as_u16(), r.contacts().count()), (200, 0));
    assert!(f.registrar.location().bindings("sip:bob@example.com", f.at(0)).is_empty());
}

#[test]
fn call_id_and_cseq_rule() {
    let mut f = Fixture::new();
    f.send(0, &request("c1", 10, "Contact: <sip:alice@192.0.2.10>;expires=600\r\n"));
    // Out of order: same Call-ID, lower CSeq, then the same CSeq.
    for cseq in [9, 10] {
        let r = f.send(1, &request("c1", cseq, "Contact: <sip:alice@192.0.2.10>;expires=0\r\n"));
        assert_eq!(r.status.as_u16(), 500);
        assert_eq!(rejected(&r), RegisterError::OutOfOrder { stored: 10, cseq });
        assert_eq!(r.reason, format!("Out-of-order REGISTER (CSeq {cseq}, binding has 10)"));
    }
    assert_eq!(f.targets(2), ["sip:alice@192.0.2.10"]);
    // The failed request committed nothing, not even its other contacts.
    let r = f.send(2, &request("c1", 9, "Contact: <sip:alice@192.0.2.99>, <sip:alice@192.0.2.10>\r\n"));
    assert_eq!(r.status.as_u16(), 500);
    assert_eq!(f.targets(2), ["sip:alice@192.0.2.10"]);
    // A new Call-ID (a rebooted UA) may use any CSeq.
    let r = f.send(3, &request("c2", 1, "Contact: <sip:alice@192.0.2.10>;expires=300\r\n"));
    assert_eq!(expires_of(&r), [("sip:alice@192.0.2.10".into(), 300)]);
    let b = &f.registrar.location().bindings("sip:alice@example.com", f.at(3))[0];
    assert_eq!((b.call_id.as_str(), b.cseq), ("c2", 1));
    // Higher CSeq under the same Call-ID goes through.
    assert_eq!(f.send(4, &request("c2", 2, "Contact: <sip:alice@192.0.2.10>\r\n")).status.as_u16(), 200);
    // Matching is by §19.1.4 comparison: a parameter only one side has
    // (other than transport, user, ttl, method, maddr) does not matter…
    let r = f.send(5, &request("c2", 2, "Contact: <sip:alice@192.0.2.10;x=1>\r\nExpires: 0\r\n"));
    assert_eq!(rejected(&r), RegisterError::OutOfOrder { stored: 2, cseq: 2 }, "found, CSeq not higher");
    // …a transport does: another contact, so removing it changes nothing.
    let r = f.send(5, &request("c2", 3, "Contact: <sip:alice@192.0.2.10;transport=udp>\r\nExpires: 0\r\n"));
    assert!(matches!(r.outcome, RegisterOutcome::Updated { removed: 0, bindings: 1, .. }), "{:?}", r.outcome);
    let r = f.send(5, &request("c2", 4, "Contact: <sip:alice@192.0.2.10;x=1>\r\nExpires: 0\r\n"));
    assert!(matches!(r.outcome, RegisterOutcome::Updated { removed: 1, bindings: 0, .. }), "{:?}", r.outcome);
}

#[test]
fn instance_replaces_its_binding_even_with_a_new_uri() {
    let mut f = Fixture::new();
    f.send(0, &request("c1", 1, &instance_contact("sip:alice@192.0.2.10:5060", INSTANCE, "")));
    // The UA came back from another address (new Call-ID after a reboot).
    let r = f.send(10, &request("c2", 1, &instance_contact("sip:alice@198.51.100.4:6000", INSTANCE, "")));
    assert!(matches!(r.outcome, RegisterOutcome::Updated { added: 0, refreshed: 1, bindings: 1, .. }));
    assert_eq!(f.targets(11), ["sip:alice@198.51.100.4:6000"]);
    let b = &f.registrar.location().bindings("sip:alice@example.com", f.at(11))[0];
    assert_eq!(b.instance.as_deref(), Some(INSTANCE));
    // Instance ids compare case-insensitively.
    f.send(12, &request("c2", 2, &instance_contact("sip:alice@198.51.100.4:6001", &INSTANCE.to_uppercase(), "")));
    assert_eq!(f.targets(13), ["sip:alice@198.51.100.4:6001"]);
    // Another instance is another binding.
    f.send(14, &request("c3", 1, &instance_contact("sip:alice@198.51.100.4:6001", OTHER_INSTANCE, "")));
    assert_eq!(f.targets(15).len(), 2);
    // A contact registered before the UA sent an instance is the same binding.
    let mut f = Fixture::new();
    f.send(0, &request("c1", 1, "Contact: <sip:alice@192.0.2.10>\r\n"));
    f.send(1, &request("c1", 2, &instance_contact("sip:alice@192.0.2.10", INSTANCE, "")));
    let all = f.registrar.location().bindings("sip:alice@example.com", f.at(1));
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].instance.as_deref(), Some(INSTANCE));
}

#[test]
fn reg_id_flows_are_separate_bindings_of_one_instance() {
    let mut f = Fixture::new();
    let flows = format!(
        "{}{}",
        instance_contact("sip:alice@192.0.2.10;transport=tcp;ob", INSTANCE, ";reg-id=1"),
        instance_contact("sip:alice@192.0.2.10;transport=tcp;ob", INSTANCE, ";reg-id=2")
    );
    let r = f.send(0, &request("c1", 1, &flows));
    // Same URI, different reg-ids: two flows, not duplicates.
    assert!(matches!(r.outcome, RegisterOutcome::Updated { added: 2, bindings: 2, .. }), "{:?}", r.outcome);
    let values: Vec<&str> = r.contacts().collect();
    assert!(values[0].contains(";reg-id="));
    // Flow 2 re-registers from a new connection: it replaces flow 2 only.
    f.send(
        5,
        &request("c1", 2, &instance_contact("sip:alice@192.0.2.10:7000;transport=tcp;ob", INSTANCE, ";reg-id=2")),
    );
    let all = f.registrar.location().bindings("sip:alice@example.com", f.at(5));
    let by_flow: Vec<_> = all.iter().map(|b| (b.reg_id, b.contact.as_str())).collect();
    assert_eq!(
        by_flow,
        [(Some(2), "sip:alice@192.0.2.10:7000;transport=tcp;ob"), (Some(1), "sip:alice@192.0.2.10;transport=tcp;ob")]
    );
    // A bad reg-id is a malformed Contact; without an instance it is ignored.
    let r = f.send(6, &request("c1", 3, &instance_contact("sip:alice@192.0.2.10", INSTANCE, ";reg-id=x")));
    assert_eq!(rejected(&r), RegisterError::Malformed(HeaderName::Contact));
    let r = f.send(6, &request("c9", 3, "Contact: <sip:alice@192.0.2.77>;reg-id=x\r\n"));
    assert_eq!(r.status.as_u16(), 200);
}

#[test]
fn gruus_are_issued_resolved_and_invalidated() {
    let mut f = Fixture::new();
    let contact = instance_contact("sip:alice@192.0.2.10:5060", INSTANCE, "");
    let r = f.send(0, &request("c1", 1, &format!("Supported: path, gruu\r\n{contact}Expires: 600\r\n")));
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.headers.contains(&("Supported".to_owned(), "gruu".to_owned())));
    let got = listed(&r);
    assert_eq!(got.len(), 1);
    let (uri, expires, _, pub_gruu, temp1) = got[0].clone();
    assert_eq!((uri.as_str(), expires), ("sip:alice@192.0.2.10:5060", Some(600)));
    // RFC 5627 §3.1: the AOR with gr= the instance id.
    assert_eq!(pub_gruu.as_deref(), Some(format!("sip:alice@example.com;gr={INSTANCE}").as_str()));
    let temp1 = temp1.unwrap();
    assert!(temp1.starts_with("sip:tgruu.") && temp1.ends_with("@example.com;gr"), "{temp1}");
    // The 200 also names the instance (the UA finds its binding by it).
    let bytes = response(&r);
    let m = Message::parse(&bytes).unwrap();
    let c = m.contacts().next().unwrap().unwrap();
    assert_eq!(c.instance().as_deref(), Some(format!("<{INSTANCE}>").as_str()));

    // Both resolve to the binding; the public one also through targets().
    let by_temp = f.resolve(1, &temp1).unwrap();
    assert_eq!(by_temp.contact, "sip:alice@192.0.2.10:5060");
    assert_eq!(f.resolve(1, pub_gruu.as_deref().unwrap()), Some(by_temp.clone()));
    assert_eq!(f.resolve(1, &format!("sip:alice@EXAMPLE.com;gr=%3C{INSTANCE}%3E")), Some(by_temp.clone()));
    assert_eq!(f.lookup(1, pub_gruu.as_deref().unwrap()), Lookup::Gruu(vec![by_temp.clone()]));
    assert_eq!(f.lookup(1, &temp1), Lookup::Gruu(vec![by_temp]));

    // A refresh under the same Call-ID gives a new temporary GRUU; the
    // old one stays valid (RFC 5627 §3.2).
    let r = f.send(300, &request("c1", 2, &format!("Supported: gruu\r\n{contact}Expires: 600\r\n")));
    let temp2 = listed(&r)[0].4.clone().unwrap();
    assert_ne!(temp1, temp2);
    assert!(f.resolve(301, &temp1).is_some());
    assert!(f.resolve(301, &temp2).is_some());
    assert_eq!(f.registrar.location().bindings("sip:alice@example.com", f.at(301))[0].temp_gruus.len(), 2);

    // Another AOR's users cannot reach this binding with its instance.
    assert_eq!(f.resolve(301, &format!("sip:bob@example.com;gr={INSTANCE}")), None);
    assert_eq!(f.lookup(301, &format!("sip:bob@example.com;gr={INSTANCE}")), Lookup::NoBindings);
    assert_eq!(f.lookup(301, "sip:tgruu.0000@example.com;gr"), Lookup::UnknownGruu);

    // Expired: every GRUU with it.
    assert_eq!(f.resolve(900, &temp1), None);
    assert_eq!(f.resolve(900, &temp2), None);
    assert_eq!(f.resolve(900, pub_gruu.as_deref().unwrap()), None);
    assert_eq!(f.lookup(900, &temp2), Lookup::UnknownGruu);
    f.registrar.handle_timeout(f.at(900));
    assert!(f.registrar.location().is_empty());
    assert_eq!(f.resolve(900, &temp1), None);
}

#[test]
fn a_new_call_id_invalidates_older_temporary_gruus() {
    let mut f = Fixture::new();
    let contact = instance_contact("sip:alice@192.0.2.10", INSTANCE, "");
    let r = f.send(0, &request("c1", 1, &format!("Supported: gruu\r\n{contact}")));
    let temp1 = listed(&r)[0].4.clone().unwrap();
    let r = f.send(10, &request("rebooted", 1, &format!("Supported: gruu\r\n{contact}")));
    let temp2 = listed(&r)[0].4.clone().unwrap();
    assert_eq!(f.resolve(11, &temp1), None);
    assert!(f.resolve(11, &temp2).is_some());
    // Unregistering the instance drops its GRUUs.
    f.send(12, &request("rebooted", 2, &format!("{contact}Expires: 0\r\n")));
    assert_eq!(f.resolve(13, &temp2), None);
    assert_eq!(f.lookup(13, &temp2), Lookup::UnknownGruu);
}

#[test]
fn no_gruus_unless_asked_or_enabled() {
    let mut f = Fixture::new();
    let contact = instance_contact("sip:alice@192.0.2.10", INSTANCE, "");
    let r = f.send(0, &request("c1", 1, &contact));
    assert!(listed(&r).iter().all(|(.., p, t)| p.is_none() && t.is_none()));
    assert!(!r.headers.iter().any(|(n, _)| n == "Supported"));
    assert!(f.registrar.location().bindings("sip:alice@example.com", f.at(0))[0].temp_gruus.is_empty());
    // Without an instance there is nothing to make a GRUU of.
    let r = f.send(0, &request("c2", 1, "Supported: gruu\r\nContact: <sip:alice@192.0.2.20>\r\n"));
    let plain: Vec<&str> = r.contacts().filter(|c| c.starts_with("<sip:alice@192.0.2.20>")).collect();
    assert_eq!(plain, ["<sip:alice@192.0.2.20>;expires=3600"]);

    let mut config = RegistrarConfig::new(["example.com"]);
    config.gruu = false;
    let mut f = Fixture::with(config);
    assert!(f.registrar.extensions().is_empty());
    let r = f.send(0, &request("c1", 1, &format!("Supported: gruu\r\n{contact}")));
    assert!(!r.contacts().any(|c| c.contains("gruu")));
    assert_eq!(Fixture::new().registrar.extensions(), ["gruu"]);
}

#[test]
fn temporary_gruus_per_binding_are_capped() {
    let mut config = RegistrarConfig::new(["example.com"]);
    config.temp_gruu_limit = 3;
    let mut f = Fixture::with(config);
    let contact = instance_contact("sip:alice@192.0.2.10", INSTANCE, "");
    let temps: Vec<String> = (1..=5)
        .map(|n| {
            let r = f.send(u64::from(n), &request("c1", n, &format!("Supported: gruu\r\n{contact}")));
            listed(&r)[0].4.clone().unwrap()
        })
        .collect();
    let live: Vec<bool> = temps.iter().map(|t| f.resolve(6, t).is_some()).collect();
    assert_eq!(live, [false, false, true, true, true]);
}

#[test]
fn pruning_frees_aor_entries_and_the_timeout_moves_on() {
    let mut f = Fixture::new();
    f.send(0, &request("c1", 1, "Contact: <sip:alice@192.0.2.1>;expires=100, <sip:alice@192.0.2.2>;expires=200\r\n"));
    f.send(0, &request_to("<sip:bob@example.com>", "c2", 1, "Contact: <sip:bob@192.0.2.3>;expires=150\r\n"));
    let loc = f.registrar.location();
    assert_eq!((loc.aor_count(), loc.binding_count()), (2, 3));
    assert_eq!(loc.aors().collect::<Vec<_>>(), ["sip:alice@example.com", "sip:bob@example.com"]);
    let mut fired = Vec::new();
    while let Some(t) = f.registrar.poll_timeout() {
        let gone = f.registrar.handle_timeout(t);
        fired.push((t.duration_since(f.t0).as_secs(), gone.iter().map(|b| b.contact.clone()).collect::<Vec<_>>()));
        // DESIGN.md: after handle_timeout(t), the next deadline is later.
        assert!(f.registrar.poll_timeout().is_none_or(|next| next > t));
        // Early and repeated calls are harmless.
        assert!(f.registrar.handle_timeout(t).is_empty());
    }
    assert_eq!(
        fired,
        [
            (100, vec!["sip:alice@192.0.2.1".to_owned()]),
            (150, vec!["sip:bob@192.0.2.3".to_owned()]),
            (200, vec!["sip:alice@192.0.2.2".to_owned()]),
        ]
    );
    let loc = f.registrar.location();
    assert_eq!((loc.aor_count(), loc.binding_count()), (0, 0));
}

#[test]
fn same_seed_same_answers() {
    let run = |seed: u64| {
        let mut f = Fixture::new();
        f.rng = Rng::new(seed);
        let mut out = Vec::new();
        for (n, c) in [(1, INSTANCE), (2, OTHER_INSTANCE), (3, INSTANCE)] {
            let contact = instance_contact(&format!("sip:alice@192.0.2.{n}"), c, ";q=0.5");
            out.push(f.send(u64::from(n), &request("c1", n, &format!("Supported: gruu\r\n{contact}"))));
        }
        out.push(f.send(9, &request("c1", 4, "Supported: gruu\r\n")));
        out
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43), "temporary GRUUs come from the RNG");
}

#[test]
fn bad_requests_get_a_reason_never_a_panic() {
    let mut f = Fixture::new();
    let base = |headers: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n\
             From: <sip:alice@example.com>;tag=1\r\n{headers}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let ok = "To: <sip:alice@example.com>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n";
    let cases: Vec<(String, u16, RegisterError)> = vec![
        (
            "Call-ID: c1\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@b>\r\n".into(),
            400,
            RegisterError::Missing(HeaderName::To),
        ),
        (format!("{ok}To: <sip:alice@example.com>\r\n"), 400, RegisterError::Multiple(HeaderName::To)),
        ("To: nonsense <\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\n".into(), 400, RegisterError::Malformed(HeaderName::To)),
        ("To: <sip:alice@example.com>\r\nCSeq: 1 REGISTER\r\n".into(), 400, RegisterError::Missing(HeaderName::CallId)),
        ("To: <sip:alice@example.com>\r\nCall-ID: c1\r\n".into(), 400, RegisterError::Missing(HeaderName::CSeq)),
        ("To: <sip:alice@example.com>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n".into(), 400, RegisterError::CSeqMethod),
        (format!("{ok}Contact: <sip:a@b\r\n"), 400, RegisterError::Malformed(HeaderName::Contact)),
        (format!("{ok}Contact: <sip:a@b>;expires=soon\r\n"), 400, RegisterError::Malformed(HeaderName::Contact)),
        (format!("{ok}Contact: <sip:a@b>;q=2\r\n"), 400, RegisterError::Malformed(HeaderName::Contact)),
        (format!("{ok}Contact: <sip:a@b>\r\nExpires: soon\r\n"), 400, RegisterError::Malformed(HeaderName::Expires)),
        (format!("{ok}Contact: <sip:a@b>\r\nExpires: -1\r\n"), 400, RegisterError::Malformed(HeaderName::Expires)),
        (
            format!("{ok}Contact: <sip:a@b>\r\nExpires: 60\r\nExpires: 60\r\n"),
            400,
            RegisterError::Multiple(HeaderName::Expires),
        ),
        (format!("{ok}Contact: <sip:a@b>, <sip:a@B>\r\n"), 400, RegisterError::DuplicateContact),
        (
            "To: <tel:+15551234>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@b>\r\n".into(),
            404,
            RegisterError::NotSipAor,
        ),
        (
            "To: <sip:alice@elsewhere.org>\r\nCall-ID: c1\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@b>\r\n".into(),
            404,
            RegisterError::ForeignDomain,
        ),
    ];
    for (headers, status, why) in cases {
        let bytes = base(&headers);
        let r = f.send(0, &bytes);
        assert_eq!((r.status.as_u16(), rejected(&r)), (status, why), "{headers}");
        assert_eq!(r.reason, why.to_string());
        assert!(!r.reason.is_empty() && !r.reason.contains(['\r', '\n']));
    }
    assert_eq!(RegisterError::Missing(HeaderName::To).to_string(), "Missing To header");
    assert!(f.registrar.location().is_empty());
    // Not a REGISTER at all.
    let options = String::from_utf8(base(ok)).unwrap().replace("REGISTER sip", "OPTIONS sip");
    assert_eq!(rejected(&f.send(0, options.as_bytes())), RegisterError::NotRegister);
    // Response bytes through the same door.
    let resp = response(&f.send(0, &base(ok)));
    assert_eq!(rejected(&f.send(0, &resp)), RegisterError::NotRegister);
}

#[test]
fn aors_are_canonical() {
    let mut f = Fixture::new();
    // Escapes, host case, a trailing dot, the port and URI parameters do not
    // make another AOR (§10.3 step 5).
    f.send(
        0,
        &request_to("\"Alice\" <sip:%61lice@EXAMPLE.com.:5060;user=phone>", "c1", 1, "Contact: <sip:a@192.0.2.1>\r\n"),
    );
    f.send(0, &request_to("sip:alice@example.com;tag=x", "c2", 1, "Contact: <sip:a@192.0.2.2>\r\n"));
    assert_eq!(f.registrar.location().aors().collect::<Vec<_>>(), ["sip:alice@example.com"]);
    assert_eq!(f.targets(1).len(), 2);
    assert_eq!(f.lookup(1, "sip:%61lice@Example.COM;transport=tcp"), f.lookup(1, "sip:alice@example.com"));
    // The user part is case-sensitive, and sips is another AOR (§19.1.4).
    assert_eq!(f.lookup(1, "sip:Alice@example.com"), Lookup::NoBindings);
    assert_eq!(f.lookup(1, "sips:alice@example.com"), Lookup::NoBindings);
    // Configured domains compare case-insensitively, trailing dot or not.
    f.send(0, &request_to("<sip:carol@example.net>", "c3", 1, "Contact: <sip:c@192.0.2.3>\r\n"));
    assert!(matches!(f.lookup(1, "sip:carol@EXAMPLE.NET"), Lookup::Aor(_)));
    assert_eq!(f.lookup(1, "sip:carol@example.org"), Lookup::NotLocal);
    assert_eq!(f.lookup(1, "tel:+15551234"), Lookup::NotLocal);
    let uri = Uri::parse("sip:alice@example.com:5070").unwrap();
    assert_eq!(f.registrar.local_aor(&uri).as_deref(), Some("sip:alice@example.com"));
    assert_eq!(f.registrar.local_aor(&Uri::parse("sip:alice@example.org").unwrap()), None);
    // With no domains configured, every domain is served.
    let mut f = Fixture::with(RegistrarConfig::new(Vec::<String>::new()));
    let r = f.send(0, &request_to("<sip:dave@anywhere.example>", "c4", 1, "Contact: <sip:d@192.0.2.4>\r\n"));
    assert_eq!(r.status.as_u16(), 200);
}

#[test]
fn too_many_bindings_is_403_and_commits_nothing() {
    let mut config = RegistrarConfig::new(["example.com"]);
    config.max_bindings = 2;
    let mut f = Fixture::with(config);
    f.send(0, &request("c1", 1, "Contact: <sip:a@192.0.2.1>, <sip:a@192.0.2.2>\r\n"));
    let r = f.send(1, &request("c1", 2, "Contact: <sip:a@192.0.2.3>\r\n"));
    assert_eq!((r.status.as_u16(), rejected(&r)), (403, RegisterError::TooManyBindings { limit: 2 }));
    assert_eq!(f.targets(1).len(), 2);
    // Swapping one for another within the limit is fine.
    let r = f.send(2, &request("c1", 3, "Contact: <sip:a@192.0.2.3>, <sip:a@192.0.2.1>;expires=0\r\n"));
    assert!(r.is_success(), "{r:?}");
    let r = f.send(3, &request("c1", 4, "Contact: <sip:a@192.0.2.4>, <sip:a@192.0.2.5>, <sip:a@192.0.2.6>\r\n"));
    assert_eq!(r.status.as_u16(), 403);
    // Over a limit lowered later, bindings can still be refreshed and removed.
    let mut config = RegistrarConfig::new(["example.com"]);
    config.max_bindings = 1;
    let location = f.registrar.location().clone();
    let mut f = Fixture { registrar: Registrar::with_location(config, location), rng: Rng::new(1), t0: f.t0 };
    assert!(f.send(4, &request("c1", 5, "Contact: <sip:a@192.0.2.3>\r\n")).is_success());
    assert!(f.send(4, &request("c1", 6, "Contact: <sip:a@192.0.2.2>\r\n")).is_success());
    assert_eq!(f.send(4, &request("c1", 7, "Contact: <sip:a@192.0.2.9>\r\n")).status.as_u16(), 403);
    assert!(f.send(4, &request("c1", 8, "Contact: <sip:a@192.0.2.3>;expires=0\r\n")).is_success());
    assert_eq!(f.targets(5), ["sip:a@192.0.2.2"]);
}

#[test]
fn the_source_is_kept_with_the_binding() {
    let mut f = Fixture::new();
    let source = Source { addr: SocketAddr::from(([203, 0, 113, 9], 40_000)), transport: "UDP".into() };
    let bytes = request("c1", 1, "Contact: <sip:alice@10.0.0.5:5060>\r\n");
    let m = Message::parse(&bytes).unwrap();
    let r = f.registrar.register_from(f.at(0), &m, Some(&source), &mut f.rng);
    assert!(r.is_success());
    let Lookup::Aor(b) = f.lookup(1, "sip:alice@example.com") else { panic!() };
    assert_eq!(b[0].source.as_ref(), Some(&source));
    // A refresh without a source keeps the one known.
    f.send(2, &request("c1", 2, "Contact: <sip:alice@10.0.0.5:5060>\r\n"));
    let Lookup::Aor(b) = f.lookup(3, "sip:alice@example.com") else { panic!() };
    assert_eq!(b[0].source.as_ref(), Some(&source));
}

/// A store that refuses to commit, to check §10.3 step 7's all-or-nothing.
#[derive(Default)]
struct Failing {
    inner: MemoryLocation,
    down: bool,
}

impl Location for Failing {
    fn bindings(&self, aor: &str, now: Instant) -> Vec<Binding> {
        self.inner.bindings(aor, now)
    }
    fn replace(&mut self, aor: &str, bindings: Vec<Binding>) -> Result<(), LocationError> {
        if self.down {
            return Err(LocationError::Unavailable);
        }
        self.inner.replace(aor, bindings)
    }
    fn find_gruu(&self, gruu: Gruu<'_>, now: Instant) -> Option<Binding> {
        self.inner.find_gruu(gruu, now)
    }
    fn prune(&mut self, now: Instant) -> Vec<Binding> {
        self.inner.prune(now)
    }
    fn next_expiry(&self) -> Option<Instant> {
        self.inner.next_expiry()
    }
}

#[test]
fn a_store_failure_is_500_and_a_boxed_store_works() {
    let location: Box<dyn Location> = Box::new(Failing::default());
    let registrar = Registrar::with_location(RegistrarConfig::new(["example.com"]), location);
    let mut f = Fixture { registrar, rng: Rng::new(1), t0: epoch() };
    assert!(f.send(0, &request("c1", 1, "Contact: <sip:a@192.0.2.1>\r\n")).is_success());
    let mut f = Fixture {
        registrar: Registrar::with_location(RegistrarConfig::new(["example.com"]), Failing::default()),
        rng: Rng::new(1),
        t0: f.t0,
    };
    f.send(0, &request("c1", 1, "Contact: <sip:a@192.0.2.1>\r\n"));
    f.registrar.location_mut().down = true;
    for extra in ["Contact: <sip:a@192.0.2.2>\r\n", "Contact: *\r\nExpires: 0\r\n"] {
        let r = f.send(1, &request("c1", 2, extra));
        assert_eq!((r.status.as_u16(), rejected(&r)), (500, RegisterError::Location(LocationError::Unavailable)));
        assert_eq!(r.reason, "Location service unavailable");
    }
    assert_eq!(f.targets(2), ["sip:a@192.0.2.1"]);
}

#[test]
fn location_defaults_insert_remove_and_find() {
    let t0 = epoch();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let binding = |contact: &str, instance: Option<&str>, q: Option<u16>, expires: u64| Binding {
        aor: "sip:alice@example.com".into(),
        contact: contact.into(),
        q,
        expires: at(expires),
        registered_at: t0,
        call_id: "c".into(),
        cseq: 1,
        instance: instance.map(Into::into),
        reg_id: None,
        temp_gruus: instance.map(|_| vec!["sip:tgruu.1@example.com".to_owned()]).unwrap_or_default(),
        source: None,
        path: Vec::new(),
    };
    let mut loc = MemoryLocation::new();
    let aor = "sip:alice@example.com";
    loc.insert(at(0), binding("sip:a@1", None, Some(300), 100)).unwrap();
    loc.insert(at(0), binding("sip:a@2", Some(INSTANCE), None, 50)).unwrap();
    loc.insert(at(0), binding("sip:a@1", None, Some(900), 100)).unwrap();
    let order: Vec<_> = loc.bindings(aor, at(0)).into_iter().map(|b| (b.contact, b.q)).collect();
    assert_eq!(order, [("sip:a@2".to_owned(), None), ("sip:a@1".to_owned(), Some(900))]);
    assert_eq!(loc.next_expiry(), Some(at(50)));
    let pub_gruu = Gruu::Public { aor, instance: INSTANCE };
    assert_eq!(loc.find_gruu(pub_gruu, at(0)).map(|b| b.contact), Some("sip:a@2".into()));
    assert!(loc.find_gruu(Gruu::Temporary("sip:tgruu.1@example.com"), at(0)).is_some());
    assert!(loc.find_gruu(Gruu::Temporary("sip:tgruu.1@example.com"), at(50)).is_none());
    assert_eq!(loc.remove(aor, "sip:a@2", at(0)).unwrap().map(|b| b.contact), Some("sip:a@2".into()));
    assert!(loc.find_gruu(Gruu::Temporary("sip:tgruu.1@example.com"), at(0)).is_none());
    assert_eq!(loc.remove(aor, "sip:a@2", at(0)).unwrap(), None);
    assert_eq!(loc.next_expiry(), Some(at(100)));
    loc.remove_all(aor).unwrap();
    assert!(loc.is_empty());
    assert_eq!(loc.next_expiry(), None);
    // A binding filed under another AOR is stored under the one given.
    loc.replace("sip:bob@example.com", vec![binding("sip:b@1", None, None, 10)]).unwrap();
    assert_eq!(loc.bindings("sip:bob@example.com", t0)[0].aor, "sip:bob@example.com");
}

/// Issue 19: registrars of several workers over one `SharedLocation`,
/// REGISTERing different contacts of one AOR at the same moment. Each
/// commits only over the set it decided on (`Location::replace_if`), so
/// no binding is lost to another worker's write (with a read, then a
/// blind `replace`, the last writer won and the others' bindings were
/// gone until their next refresh).
#[test]
fn concurrent_registers_for_one_aor_on_several_workers_lose_no_binding() {
    let t0 = epoch();
    let store = SharedLocation::new();
    let mut config = RegistrarConfig::new(["example.com"]);
    config.max_bindings = 1000;
    std::thread::scope(|s| {
        for w in 0..4 {
            let (store, config) = (store.clone(), config.clone());
            s.spawn(move || {
                let mut registrar = Registrar::with_location(config, store);
                let mut rng = Rng::new(w);
                for k in 0..50 {
                    let contact = format!("Contact: <sip:alice@192.0.2.{w}:{}>\r\n", 5000 + k);
                    let bytes = request(&format!("w{w}-{k}"), 1, &contact);
                    let message = Message::parse(&bytes).unwrap();
                    let reply = registrar.register(t0, &message, &mut rng);
                    assert_eq!(reply.status.as_u16(), 200, "{reply:?}");
                }
            });
        }
    });
    assert_eq!(store.bindings("sip:alice@example.com", t0).len(), 200);
    assert_eq!(store.binding_count(), 200);
}
