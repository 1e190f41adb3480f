//! The headers of `sipline::event`: Event, Subscription-State,
//! Allow-Events (RFC 6665 §8.2), Refer-To (RFC 3515), Referred-By
//! (RFC 3892), Replaces (RFC 3891) and Refer-Sub (RFC 4488): the RFCs'
//! examples, Display → parse round trips, typed refusals, reading them out
//! of a parsed message, and a property test that no input panics a parser.

use proptest::prelude::*;
use sipline::event::*;
use sipline::message::{HeaderName, Message, Uri};

// ---------------------------------------------------------------- Event

#[test]
fn event_packages_templates_and_id() {
    // RFC 6665 §8.2.1 and the packages this stack serves.
    for (v, ty, pkg, templates, id) in [
        ("presence", "presence", "presence", &[][..], None),
        ("reg", "reg", "reg", &[], None),
        ("message-summary", "message-summary", "message-summary", &[], None),
        ("refer;id=93809824", "refer", "refer", &[], Some("93809824")),
        ("presence.winfo", "presence.winfo", "presence", &["winfo"][..], None),
        ("foo.bar.baz ; id = 7 ; x=\"y\"", "foo.bar.baz", "foo", &["bar", "baz"][..], Some("7")),
    ] {
        let e = Event::parse(v).unwrap();
        assert_eq!(e.event_type(), ty, "{v}");
        assert_eq!(e.package(), pkg);
        assert_eq!(e.templates().collect::<Vec<_>>(), templates);
        assert_eq!(e.id(), id);
        // Display is canonical and parses back to the same value.
        let again = e.to_string();
        let back = Event::parse(&again).unwrap();
        assert_eq!((back.event_type(), back.id()), (ty, id));
        assert_eq!(back.to_string(), again);
    }
    let e = Event::parse("foo.bar.baz ; id = 7 ; x=\"y\"").unwrap();
    assert_eq!(e.to_string(), "foo.bar.baz;id=7;x=\"y\"");
    assert_eq!(e.params().count(), 2);
}

#[test]
fn event_matching_follows_rfc6665() {
    // §8.2.1: the type and id compared byte for byte; other params ignored;
    // an id never matches its absence.
    let a = Event::parse("refer;id=1;foo=bar").unwrap();
    assert!(a.matches(&Event::new("refer").unwrap().with_id("1").unwrap()));
    assert!(!a.matches(&Event::new("refer").unwrap()));
    assert!(!a.matches(&Event::new("refer").unwrap().with_id("2").unwrap()));
    assert!(!a.matches(&Event::parse("Refer;id=1").unwrap()));
}

#[test]
fn event_refusals() {
    let bad = Err(EventError::Header { header: "Event" });
    for v in [
        "",
        ";id=1",
        "presence..winfo",
        ".presence",
        "presence.",
        "pres ence",
        "refer;id",
        "refer;id=\"1\"",
        "refer;id=a:b",
        "a,b",
    ] {
        assert_eq!(Event::parse(v), bad, "{v:?}");
    }
    assert_eq!(Event::new("a..b"), Err(EventError::BadValue { field: "event-type" }));
    assert_eq!(Event::new("refer").unwrap().with_id("x y"), Err(EventError::BadValue { field: "id" }));
}

// ---------------------------------------------------------------- Subscription-State

#[test]
fn subscription_state_rfc6665_examples() {
    // RFC 6665 §8.2.3 and the flows of RFC 3515 §4 / RFC 3856.
    let s = SubscriptionState::parse("active;expires=60").unwrap();
    assert_eq!((s.state(), s.expires(), s.reason()), (SubState::Active, Some(60), None));
    let s = SubscriptionState::parse("pending;expires=600").unwrap();
    assert_eq!((s.state(), s.expires()), (SubState::Pending, Some(600)));
    let s = SubscriptionState::parse("terminated;reason=noresource").unwrap();
    assert_eq!((s.state(), s.reason()), (SubState::Terminated, Some(Reason::Noresource)));
    let s = SubscriptionState::parse("terminated;reason=probation;retry-after=3600").unwrap();
    assert_eq!((s.reason(), s.retry_after()), (Some(Reason::Probation), Some(3600)));
    let s = SubscriptionState::parse("Terminated ; reason = TIMEOUT").unwrap();
    assert_eq!((s.state(), s.reason()), (SubState::Terminated, Some(Reason::Timeout)));
    let s = SubscriptionState::parse("waiting;reason=later;x=1").unwrap();
    assert_eq!((s.state(), s.reason()), (SubState::Extension("waiting"), Some(Reason::Extension("later"))));
    assert_eq!(s.to_string(), "waiting;reason=later;x=1");
}

#[test]
fn subscription_state_builds_and_round_trips() {
    let reasons = [
        Reason::Deactivated,
        Reason::Probation,
        Reason::Rejected,
        Reason::Timeout,
        Reason::Giveup,
        Reason::Noresource,
        Reason::Invariant,
        Reason::Extension("moved"),
    ];
    for r in reasons {
        let s = SubscriptionState::terminated(Some(r)).with_retry_after(30);
        let text = s.to_string();
        assert_eq!(text, format!("terminated;reason={};retry-after=30", r.as_str()));
        let back = SubscriptionState::parse(&text).unwrap();
        assert_eq!(
            (back.state(), back.reason(), back.retry_after(), back.expires()),
            (SubState::Terminated, Some(r), Some(30), None)
        );
    }
    assert_eq!(SubscriptionState::active(3600).to_string(), "active;expires=3600");
    assert_eq!(SubscriptionState::pending(0).to_string(), "pending;expires=0");
    assert_eq!(SubscriptionState::terminated(None).to_string(), "terminated");
    let back = SubscriptionState::parse("active;expires=3600").unwrap();
    assert_eq!((back.state(), back.expires()), (SubState::Active, Some(3600)));
}

#[test]
fn subscription_state_refusals() {
    let bad = Err(EventError::Header { header: "Subscription-State" });
    for v in [
        "",
        "active;expires",
        "active;expires=soon",
        "active;expires=-1",
        "active;expires=99999999999",
        "active;expires=\"60\"",
        "terminated;retry-after=x",
        "terminated;reason",
        "terminated;reason=\"timeout\"",
        "act ive",
    ] {
        assert_eq!(SubscriptionState::parse(v), bad, "{v:?}");
    }
}

// ---------------------------------------------------------------- Allow-Events

#[test]
fn allow_events_lists() {
    let a = AllowEvents::parse("presence, reg ,\r\n refer,presence.winfo").unwrap();
    assert_eq!(a.types, ["presence", "reg", "refer", "presence.winfo"]);
    assert!(a.contains("presence.winfo") && !a.contains("dialog"));
    assert_eq!(a.to_string(), "presence, reg, refer, presence.winfo");
    assert_eq!(AllowEvents::parse(&a.to_string()).unwrap(), a);
    let built = AllowEvents::new(&["refer", "message-summary"]).unwrap();
    assert_eq!(built.to_string(), "refer, message-summary");
    let bad = Err(EventError::Header { header: "Allow-Events" });
    for v in ["", "  ", "presence,,refer", "presence;id=1", "a..b", "presence,"] {
        assert_eq!(AllowEvents::parse(v), bad, "{v:?}");
    }
    assert_eq!(AllowEvents::new(&["ok", "not ok"]), Err(EventError::BadValue { field: "event-type" }));
}

// ---------------------------------------------------------------- Refer-To

#[test]
fn refer_to_rfc3515_examples() {
    // RFC 3515 §2.1.
    let r = ReferTo::parse("sip:alice@atlanta.example.com").unwrap();
    assert_eq!(r.target().as_str(), "sip:alice@atlanta.example.com");
    assert!(r.headers().is_empty() && r.replaces().is_none() && r.method().is_none());

    let r = ReferTo::parse(
        "<sip:dave@denver.example.org?Replaces=12345%40192.168.118.3%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE-3994>",
    )
    .unwrap();
    assert_eq!(r.target().as_str(), "sip:dave@denver.example.org");
    assert_eq!(
        r.uri().as_str(),
        "sip:dave@denver.example.org?Replaces=12345%40192.168.118.3%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE-3994"
    );
    assert_eq!(r.header("replaces"), Some("12345@192.168.118.3;to-tag=12345;from-tag=5FFE-3994"));
    let rep = r.replaces().unwrap().unwrap();
    assert_eq!(
        (rep.call_id(), rep.to_tag(), rep.from_tag(), rep.early_only()),
        ("12345@192.168.118.3", "12345", "5FFE-3994", false)
    );

    let r = ReferTo::parse("<sip:carol@cleveland.example.org;method=SUBSCRIBE>").unwrap();
    assert_eq!(r.method(), Some("SUBSCRIBE"));
    assert_eq!(r.target().as_str(), "sip:carol@cleveland.example.org;method=SUBSCRIBE");

    let r = ReferTo::parse("http://www.ietf.org").unwrap();
    assert_eq!(r.target().scheme(), "http");

    // RFC 5589 §7: several embedded headers, with a display name.
    let r = ReferTo::parse("\"Carol\" <sips:carol@example.com?Replaces=a%40b%3Bto-tag%3D1%3Bfrom-tag%3D2%3Bearly-only&Require=replaces>;x=1")
        .unwrap();
    assert_eq!(r.address().display_name().unwrap().text(), "Carol");
    assert_eq!(r.target().as_str(), "sips:carol@example.com");
    assert_eq!(r.headers().len(), 2);
    assert_eq!(r.header("Require"), Some("replaces"));
    assert!(r.replaces().unwrap().unwrap().early_only());
    assert!(r.address().params().contains("x"));
}

#[test]
fn refer_to_builds_attended_transfer_and_parses_back() {
    let target = Uri::parse("sip:bob@biloxi.example.com;transport=tcp").unwrap();
    let rep = Replaces::new("a84b4c76e66710@pc33.atlanta.com", "314159", "1928301774").unwrap().with_early_only(true);
    let v = ReferTo::with_replaces(&target, &rep).unwrap();
    assert_eq!(
        v,
        "<sip:bob@biloxi.example.com;transport=tcp?Replaces=a84b4c76e66710%40pc33.atlanta.com%3Bto-tag%3D314159%3Bfrom-tag%3D1928301774%3Bearly-only>"
    );
    let r = ReferTo::parse(&v).unwrap();
    assert!(r.target().equivalent(&target));
    let back = r.replaces().unwrap().unwrap();
    assert_eq!(
        (back.call_id(), back.to_tag(), back.from_tag(), back.early_only()),
        (rep.call_id(), rep.to_tag(), rep.from_tag(), true)
    );
    // Values with characters that must be escaped, added after existing headers.
    let target = Uri::parse("sip:bob@example.com?Subject=hi").unwrap();
    let v = ReferTo::format(&target, &[("X-Note", "a&b=c <d> é")]).unwrap();
    let r = ReferTo::parse(&v).unwrap();
    assert_eq!(r.header("subject"), Some("hi"));
    assert_eq!(r.header("X-Note"), Some("a&b=c <d> é"));
    // Headers only on a SIP target.
    let http = Uri::parse("http://example.com/x").unwrap();
    assert_eq!(ReferTo::format(&http, &[("A", "b")]), Err(EventError::BadValue { field: "Refer-To target" }));
    assert_eq!(ReferTo::format(&http, &[]).unwrap(), "<http://example.com/x>");
}

#[test]
fn refer_to_refusals() {
    let bad = EventError::Header { header: "Refer-To" };
    for v in [
        "",
        "<sip:bob@example.com",
        "sip:bob@example.com?Replaces=x",     // headers need angle brackets
        "<sip:bob@example.com?Replaces=%FF>", // not UTF-8 once decoded
        "bob",
    ] {
        assert_eq!(ReferTo::parse(v).err(), Some(bad), "{v:?}");
    }
    // A malformed embedded Replaces is reported when asked for.
    let r = ReferTo::parse("<sip:b@example.com?Replaces=abc%3Bto-tag%3D1>").unwrap();
    assert_eq!(
        r.replaces().unwrap().map(|_| ()),
        Err(EventError::MissingParam { header: "Replaces", param: "from-tag" })
    );
}

// ---------------------------------------------------------------- Referred-By

#[test]
fn referred_by_rfc3892() {
    // RFC 3892 §3 / §6's example.
    let r =
        ReferredBy::parse("<sip:referrer@referrer.example>;cid=\"20398823.2UWQFN309shb3@referrer.example\"").unwrap();
    assert_eq!(r.uri().as_str(), "sip:referrer@referrer.example");
    assert_eq!(r.cid().as_deref(), Some("20398823.2UWQFN309shb3@referrer.example"));
    let r = ReferredBy::parse("sip:alice@atlanta.example.com").unwrap();
    assert_eq!(r.cid(), None);
    let uri = Uri::parse("sip:alice@atlanta.example.com").unwrap();
    let v = ReferredBy::format(Some("Alice \"the\" \\ boss"), &uri).unwrap();
    assert_eq!(v, r#""Alice \"the\" \\ boss" <sip:alice@atlanta.example.com>"#);
    let back = ReferredBy::parse(&v).unwrap();
    assert_eq!(back.address().display_name().unwrap().text(), "Alice \"the\" \\ boss");
    assert_eq!(back.to_string(), v);
    assert_eq!(ReferredBy::format(None, &uri).unwrap(), "<sip:alice@atlanta.example.com>");
    assert_eq!(ReferredBy::format(Some("a\r\nb"), &uri), Err(EventError::Unwritable { field: "display name" }));
    let bad = Err(EventError::Header { header: "Referred-By" });
    assert_eq!(ReferredBy::parse("<sip:a@b>;cid=unquoted@x"), bad);
    assert_eq!(ReferredBy::parse(""), bad);
}

// ---------------------------------------------------------------- Replaces

#[test]
fn replaces_rfc3891_examples() {
    // RFC 3891 §6.1.
    let r = Replaces::parse("98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff").unwrap();
    assert_eq!(
        (r.call_id(), r.to_tag(), r.from_tag(), r.early_only()),
        ("98732@sip.example.com", "ff87ff", "r33th4x0r", false)
    );
    assert_eq!(r.to_string(), "98732@sip.example.com;to-tag=ff87ff;from-tag=r33th4x0r");
    let r = Replaces::parse("12adf2f34456gs5;to-tag=12345;from-tag=54321;early-only").unwrap();
    assert_eq!((r.call_id(), r.early_only()), ("12adf2f34456gs5", true));
    let r = Replaces::parse("  abc@host ; to-tag = 1 ; from-tag = 2 ; foo=\"bar\" ").unwrap();
    assert_eq!((r.call_id(), r.to_tag(), r.from_tag()), ("abc@host", "1", "2"));
    assert_eq!(r.to_string(), "abc@host;to-tag=1;from-tag=2;foo=\"bar\"");
    let text = r.to_string();
    let back = Replaces::parse(&text).unwrap();
    assert_eq!(back, Replaces::parse("abc@host;to-tag=1;from-tag=2;foo=\"bar\"").unwrap());
}

#[test]
fn replaces_refusals() {
    let h = "Replaces";
    for (v, want) in [
        ("", EventError::Header { header: h }),
        ("abc", EventError::MissingParam { header: h, param: "to-tag" }),
        ("abc;to-tag=1", EventError::MissingParam { header: h, param: "from-tag" }),
        ("abc;from-tag=1", EventError::MissingParam { header: h, param: "to-tag" }),
        ("abc;to-tag=1;to-tag=2;from-tag=3", EventError::Header { header: h }),
        ("abc;to-tag=\"1\";from-tag=3", EventError::Header { header: h }),
        ("abc;to-tag;from-tag=3", EventError::Header { header: h }),
        ("a@b@c;to-tag=1;from-tag=2", EventError::Header { header: h }),
        ("abc def;to-tag=1;from-tag=2", EventError::Header { header: h }),
        // A Call-ID ending in a non-token word character: a known limit.
        ("abc@[2001:db8::1];to-tag=1;from-tag=2", EventError::Header { header: h }),
    ] {
        assert_eq!(Replaces::parse(v), Err(want), "{v:?}");
    }
    assert_eq!(Replaces::new("a b", "1", "2"), Err(EventError::BadValue { field: "call-id" }));
    assert_eq!(Replaces::new("ab", "1;x", "2"), Err(EventError::BadValue { field: "tag" }));
}

// ---------------------------------------------------------------- Refer-Sub

#[test]
fn refer_sub_rfc4488() {
    assert!(ReferSub::parse("true").unwrap().value());
    assert!(!ReferSub::parse("false").unwrap().value());
    assert!(!ReferSub::parse(" FALSE ;x=1").unwrap().value());
    assert_eq!(ReferSub::parse("false;x=1").unwrap().to_string(), "false;x=1");
    assert_eq!(ReferSub::new(false).to_string(), "false");
    for v in ["", "maybe", "1", "true false"] {
        assert_eq!(ReferSub::parse(v), Err(EventError::Header { header: "Refer-Sub" }), "{v:?}");
    }
}

// ---------------------------------------------------------------- in a message

#[test]
fn read_from_a_notify_and_a_refer() {
    let notify = b"NOTIFY sip:alice@192.0.2.1 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK776\r\n\
        Max-Forwards: 70\r\n\
        To: <sip:alice@example.com>;tag=a\r\n\
        From: <sip:bob@example.com>;tag=b\r\n\
        Call-ID: c@example.com\r\n\
        CSeq: 2 NOTIFY\r\n\
        o: refer;id=93809824\r\n\
        Subscription-State: terminated;reason=noresource\r\n\
        u: refer, presence\r\n\
        Content-Type: message/sipfrag;version=2.0\r\n\
        Content-Length: 16\r\n\
        \r\n\
        SIP/2.0 200 OK\r\n";
    let m = Message::parse(notify).unwrap();
    let e: Event<'_> = m.value(HeaderName::Event).unwrap().unwrap();
    assert_eq!((e.event_type(), e.id()), ("refer", Some("93809824")));
    let s: SubscriptionState<'_> = m.value(HeaderName::SubscriptionState).unwrap().unwrap();
    assert_eq!(s.reason(), Some(Reason::Noresource));
    let allow: Vec<AllowEvents<'_>> = m.values(HeaderName::AllowEvents).map(Result::unwrap).collect();
    assert_eq!(allow.iter().flat_map(|a| a.types.iter().copied()).collect::<Vec<_>>(), ["refer", "presence"]);
    let frag = StatusFrag::parse(m.body()).unwrap();
    assert_eq!(frag.code, 200);

    let refer = b"REFER sip:bob@192.0.2.2 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK777\r\n\
        Max-Forwards: 70\r\n\
        To: <sip:bob@example.com>;tag=b\r\n\
        From: <sip:alice@example.com>;tag=a\r\n\
        Call-ID: c@example.com\r\n\
        CSeq: 3 REFER\r\n\
        r: <sip:carol@example.com?Replaces=x%40y%3Bto-tag%3D1%3Bfrom-tag%3D2>\r\n\
        b: <sip:alice@example.com>\r\n\
        Refer-Sub: false\r\n\
        Content-Length: 0\r\n\
        \r\n";
    let m = Message::parse(refer).unwrap();
    let to: ReferTo<'_> = m.value(HeaderName::ReferTo).unwrap().unwrap();
    assert_eq!(to.replaces().unwrap().unwrap().call_id(), "x@y");
    let by: ReferredBy<'_> = m.value(HeaderName::ReferredBy).unwrap().unwrap();
    assert_eq!(by.uri().as_str(), "sip:alice@example.com");
    let sub = m.headers().get("Refer-Sub").map(|h| ReferSub::parse(h.value()));
    assert_eq!(sub.map(|s| s.map(|s| s.value())), Some(Ok(false)));
}

// ---------------------------------------------------------------- properties

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!%*_+`'~-]{1,10}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn header_parsers_never_panic(v in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = Event::parse(&v[..]);
        let _ = SubscriptionState::parse(&v[..]);
        let _ = AllowEvents::parse(&v[..]);
        let _ = ReferSub::parse(&v[..]);
        let _ = ReferredBy::parse(&v[..]);
        let _ = Replaces::parse(&v[..]);
        if let Ok(r) = ReferTo::parse(&v[..]) {
            let _ = r.replaces();
        }
    }

    #[test]
    fn header_parsers_never_panic_on_near_misses(v in "[a-z0-9@.;=\"<>?%&:, \\[\\]-]{0,48}") {
        let _ = Event::parse(&v);
        let _ = SubscriptionState::parse(&v);
        let _ = AllowEvents::parse(&v);
        let _ = Replaces::parse(&v);
        if let Ok(r) = ReferTo::parse(&v) {
            let _ = r.replaces();
            let text = r.to_string();
            prop_assert_eq!(ReferTo::parse(&text), Ok(r));
        }
    }

    #[test]
    fn built_values_parse_back(
        pkg in "[a-z0-9-]{1,8}(\\.[a-z0-9]{1,5}){0,2}",
        id in proptest::option::of(token()),
        call_id in "[A-Za-z0-9.-]{1,12}(@[a-z0-9.]{1,10})?",
        to_tag in token(),
        from_tag in token(),
        early in any::<bool>(),
        expires in any::<u32>(),
        reason in proptest::option::of(token()),
    ) {
        let mut e = Event::new(&pkg).unwrap();
        if let Some(id) = &id {
            e = e.with_id(id).unwrap();
        }
        let text = e.to_string();
        let back = Event::parse(&text).unwrap();
        prop_assert!(back.matches(&e));

        let r = Replaces::new(&call_id, &to_tag, &from_tag).unwrap().with_early_only(early);
        let text = r.to_string();
        let back = Replaces::parse(&text).unwrap();
        prop_assert_eq!((back.call_id(), back.to_tag(), back.from_tag(), back.early_only()), (r.call_id(), r.to_tag(), r.from_tag(), early));
        let refer_to = ReferTo::with_replaces(&Uri::parse("sip:x@example.com").unwrap(), &r).unwrap();
        let parsed = ReferTo::parse(&refer_to).unwrap();
        prop_assert_eq!(parsed.header("Replaces"), Some(text.as_str()));

        let s = SubscriptionState::active(expires);
        prop_assert_eq!(SubscriptionState::parse(&s.to_string()).unwrap().expires(), Some(expires));
        let given = reason.as_ref().map(|r| format!("terminated;reason={r}"));
        let reason = given.as_deref().map(|g| SubscriptionState::parse(g).unwrap().reason().unwrap());
        let t = SubscriptionState::terminated(reason);
        let text = t.to_string();
        let tb = SubscriptionState::parse(&text).unwrap();
        prop_assert_eq!(tb.reason().map(|r| r.as_str().to_ascii_lowercase()), reason.map(|r| r.as_str().to_ascii_lowercase()));
    }
}
