//! The bodies of `sipline::event`: PIDF (RFC 3863), reginfo (RFC 3680),
//! message-summary (RFC 3842) and sipfrag (RFC 3420 / RFC 3515 §2.4.5):
//! the RFCs' examples, documents phones send, round trips, escaping,
//! typed refusals, and a property test that no input panics a parser.

use proptest::prelude::*;
use sipline::event::*;
use std::borrow::Cow;

// ---------------------------------------------------------------- PIDF

/// RFC 3863 §4.3: the basic example.
const RFC3863_BASIC: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
     entity="pres:someone@example.com">
  <tuple id="sg89ae">
    <status>
      <basic>open</basic>
    </status>
    <contact priority="0.8">tel:+09012345678</contact>
  </tuple>
</presence>
"#;

/// RFC 3863 §4.4: prefixed PIDF elements, extension elements in
/// another namespace, two tuples and document-level notes.
const RFC3863_EXTENDED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<impp:presence xmlns:impp="urn:ietf:params:xml:ns:pidf"
     xmlns:myex="http://id.example.com/presence/"
     entity="pres:someone@example.com">
  <impp:tuple id="ck38g9">
    <impp:status>
      <impp:basic>open</impp:basic>
      <myex:location>home</myex:location>
    </impp:status>
    <myex:mobility>
      <myex:mobile/>
    </myex:mobility>
    <impp:contact priority="0.65">tel:+09012345678</impp:contact>
  </impp:tuple>
  <impp:tuple id="md6tjhd">
    <impp:status>
      <impp:basic>closed</impp:basic>
      <myex:location>office</myex:location>
    </impp:status>
    <impp:contact priority="1.0">mailto:someone@example.com</impp:contact>
    <impp:timestamp>2001-10-27T16:49:29Z</impp:timestamp>
  </impp:tuple>
  <impp:note xml:lang="en">Don't Disturb Please!</impp:note>
  <impp:note xml:lang="fr">Ne d&#233;rangez pas, s'il vous plait</impp:note>
</impp:presence>
"#;

/// What linphone publishes: RPID activities and a data-model person with a
/// note beside the tuple.
const LINPHONE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:bob@sip.example.org">
  <tuple id="fbdhtj">
    <status>
      <basic>open</basic>
    </status>
    <contact priority="0.8">sip:bob@192.0.2.33:5060;transport=udp</contact>
    <note xml:lang="en">Back soon</note>
    <timestamp>2024-03-18T09:10:11Z</timestamp>
  </tuple>
  <dm:person id="xrkdzp">
    <rpid:activities>
      <rpid:away/>
    </rpid:activities>
    <dm:note xml:lang="en">Lunch &amp; then a &lt;meeting&gt;</dm:note>
  </dm:person>
</presence>
"#;

/// What baresip publishes: no contact, an empty RPID person.
const BARESIP: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
    xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
    entity="sip:carol@example.net">
  <tuple id="t4de1"><status><basic>closed</basic></status></tuple>
  <dm:person id="p4de1"><rpid:activities><rpid:busy/></rpid:activities></dm:person>
</presence>
"#;

#[test]
fn pidf_rfc3863_basic_example() {
    let p = Presence::parse(RFC3863_BASIC.as_bytes()).unwrap();
    assert_eq!(p.entity, "pres:someone@example.com");
    assert_eq!(p.tuples.len(), 1);
    let t = &p.tuples[0];
    assert_eq!(t.id, "sg89ae");
    assert_eq!(t.basic, Some(Basic::Open));
    assert_eq!(t.contact.as_deref(), Some("tel:+09012345678"));
    assert_eq!(t.priority.as_deref(), Some("0.8"));
    assert!(t.notes.is_empty() && p.notes.is_empty() && p.persons.is_empty());
    assert!(p.is_open());
    // Nothing escaped: everything borrowed from the body.
    assert!(matches!(t.contact, Some(Cow::Borrowed(_))));
    assert!(matches!(p.entity, Cow::Borrowed(_)));
}

#[test]
fn pidf_rfc3863_prefixed_example_with_extensions() {
    let p = Presence::parse(RFC3863_EXTENDED.as_bytes()).unwrap();
    assert_eq!(p.entity, "pres:someone@example.com");
    let ids: Vec<_> = p.tuples.iter().map(|t| &*t.id).collect();
    assert_eq!(ids, ["ck38g9", "md6tjhd"]);
    assert_eq!(p.tuples[0].basic, Some(Basic::Open));
    assert_eq!(p.tuples[1].basic, Some(Basic::Closed));
    assert_eq!(p.tuples[0].contact.as_deref(), Some("tel:+09012345678"));
    assert_eq!(p.tuples[1].contact.as_deref(), Some("mailto:someone@example.com"));
    assert_eq!(p.tuples[1].timestamp.as_deref(), Some("2001-10-27T16:49:29Z"));
    assert_eq!(p.notes.len(), 2);
    assert_eq!(p.notes[0], Note::new("Don't Disturb Please!").with_lang("en"));
    assert_eq!(p.notes[1].text, "Ne d\u{e9}rangez pas, s'il vous plait");
    assert_eq!(p.notes[1].lang.as_deref(), Some("fr"));
}

#[test]
fn pidf_from_linphone_with_rpid_and_person() {
    let p = Presence::parse(LINPHONE.as_bytes()).unwrap();
    assert_eq!(p.entity, "sip:bob@sip.example.org");
    assert_eq!(p.tuples.len(), 1);
    let t = &p.tuples[0];
    assert_eq!((t.id.as_ref(), t.basic), ("fbdhtj", Some(Basic::Open)));
    assert_eq!(t.contact.as_deref(), Some("sip:bob@192.0.2.33:5060;transport=udp"));
    assert_eq!(t.notes, [Note::new("Back soon").with_lang("en")]);
    assert_eq!(p.persons.len(), 1);
    assert_eq!(p.persons[0].id.as_deref(), Some("xrkdzp"));
    assert_eq!(p.persons[0].notes, [Note::new("Lunch & then a <meeting>").with_lang("en")]);
    // The RPID activity element is not a note of anything.
    assert!(p.notes.is_empty());
}

#[test]
fn pidf_from_baresip() {
    let p = Presence::parse(BARESIP.as_bytes()).unwrap();
    assert_eq!(p.tuples[0].basic, Some(Basic::Closed));
    assert_eq!(p.tuples[0].contact, None);
    assert!(!p.is_open());
    assert_eq!(p.persons.len(), 1);
    assert!(p.persons[0].notes.is_empty());
}

#[test]
fn pidf_without_namespace_and_without_basic_is_tolerated() {
    let doc = br#"<presence entity="sip:a@b"><tuple id="x"><status/></tuple></presence>"#;
    let p = Presence::parse(doc).unwrap();
    assert_eq!(p.tuples[0].basic, None);
    // Elements in a foreign namespace named like PIDF's are not PIDF.
    let doc = br#"<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:o="urn:other" entity="sip:a@b">
        <o:tuple id="y"><o:status><o:basic>open</o:basic></o:status></o:tuple><o:note>no</o:note></presence>"#;
    let p = Presence::parse(doc).unwrap();
    assert!(p.tuples.is_empty() && p.notes.is_empty());
}

#[test]
fn pidf_build_is_minimal_and_parses_back() {
    let built = Presence::new("pres:alice@example.com", Tuple::new("a1", Basic::Closed));
    let body = built.to_body().unwrap();
    assert_eq!(
        body,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
         <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"pres:alice@example.com\">\r\n  \
         <tuple id=\"a1\">\r\n    <status><basic>closed</basic></status>\r\n  </tuple>\r\n</presence>\r\n"
    );
    assert_eq!(Presence::parse(body.as_bytes()).unwrap(), built);
    assert_eq!(Presence::CONTENT_TYPE, "application/pidf+xml");
}

#[test]
fn pidf_round_trip_of_every_field() {
    let mut built = Presence::new(
        "sip:alice@example.com",
        Tuple::new("t1", Basic::Open)
            .with_contact("sip:alice@192.0.2.1;transport=tcp")
            .with_note(Note::new("first").with_lang("en"))
            .with_note(Note::new("zweite").with_lang("de"))
            .with_timestamp("2024-01-02T03:04:05Z"),
    );
    built.tuples[0].priority = Some("0.5".into());
    built.tuples.push(Tuple::new("t2", Basic::Closed));
    built.tuples.push(Tuple { basic: None, ..Tuple::new("t3", Basic::Open) });
    built.notes.push(Note::new("document note"));
    built.persons.push(Person { id: Some("p1".into()), notes: vec![Note::new("person note").with_lang("en")] });
    let body = built.to_body().unwrap();
    assert_eq!(Presence::parse(body.as_bytes()).unwrap(), built);
}

#[test]
fn pidf_escapes_markup_in_notes() {
    let text = r#"a < b && "c" > 'd'"#;
    let built =
        Presence::new("sip:a@example.com", Tuple::new("t", Basic::Open).with_note(Note::new(text).with_lang("en")));
    let body = built.to_body().unwrap();
    assert!(
        body.contains("<note xml:lang=\"en\">a &lt; b &amp;&amp; &quot;c&quot; &gt; &apos;d&apos;</note>"),
        "{body}"
    );
    let back = Presence::parse(body.as_bytes()).unwrap();
    assert_eq!(back.tuples[0].notes[0].text, text);
    // Line breaks and tabs survive the reader's normalization.
    let text = "line 1\r\nline 2\r\tend";
    let built = Presence::new("sip:a@example.com", Tuple::new("t", Basic::Open).with_note(Note::new(text)));
    let back_body = built.to_body().unwrap();
    assert_eq!(Presence::parse(back_body.as_bytes()).unwrap().tuples[0].notes[0].text, text);
}

#[test]
fn pidf_refusals_are_typed() {
    let cases: [(&[u8], EventError); 7] = [
        (br#"<reginfo xmlns="urn:ietf:params:xml:ns:reginfo"/>"#, EventError::WrongRoot { expected: "presence" }),
        (
            br#"<presence xmlns="urn:ietf:params:xml:ns:pidf"/>"#,
            EventError::MissingAttribute { element: "presence", attribute: "entity" },
        ),
        (
            br#"<presence entity="sip:a@b"><tuple><status/></tuple></presence>"#,
            EventError::MissingAttribute { element: "tuple", attribute: "id" },
        ),
        (
            br#"<presence entity="sip:a@b"><tuple id="t"/></presence>"#,
            EventError::MissingElement { parent: "tuple", element: "status" },
        ),
        (
            br#"<presence entity="sip:a@b"><tuple id="t"><status><basic>busy</basic></status></tuple></presence>"#,
            EventError::BadValue { field: "basic" },
        ),
        (b"<presence entity=\"sip:a@b\">\xff</presence>", EventError::NotUtf8),
        (br#"<presence xmlns="urn:other" entity="sip:a@b"/>"#, EventError::WrongRoot { expected: "presence" }),
    ];
    for (doc, want) in cases {
        assert_eq!(Presence::parse(doc), Err(want), "{}", String::from_utf8_lossy(doc));
    }
    for doc in [
        &b"not xml"[..],
        b"",
        b"<presence entity='sip:a@b'>",
        b"<presence entity='sip:a@b'><tuple></presence>",
        b"<presence entity='sip:a@b'><note>&nbsp;</note></presence>",
        b"<presence entity='sip:a@b'/><presence entity='sip:a@b'/>",
        b"<presence entity='sip:a@b' entity='sip:c@d'/>",
    ] {
        assert!(matches!(Presence::parse(doc), Err(EventError::Xml { .. })), "{}", String::from_utf8_lossy(doc));
    }
    let deep = format!("<presence entity='sip:a@b'>{}", "<x>".repeat(100));
    assert_eq!(Presence::parse(deep.as_bytes()), Err(EventError::TooDeep));

    // Building: the entity must be a URI, ids XML names, text writable.
    let ok = Tuple::new("t", Basic::Open);
    assert_eq!(Presence::new("not a uri", ok.clone()).to_body(), Err(EventError::BadValue { field: "entity" }));
    assert_eq!(
        Presence::new("sip:a@b", Tuple::new("1bad id", Basic::Open)).to_body(),
        Err(EventError::BadValue { field: "tuple id" })
    );
    assert_eq!(
        Presence::new("sip:a@b", ok.with_note(Note::new("bell \u{7}"))).to_body(),
        Err(EventError::Unwritable { field: "note" })
    );
}

// ---------------------------------------------------------------- reginfo

/// RFC 3680 §6: the full state of one AOR with two contacts.
const RFC3680_FULL: &str = r#"<?xml version="1.0"?>
<reginfo xmlns="urn:ietf:params:xml:ns:reginfo"
              version="0" state="full">
  <registration aor="sip:user@example.com" id="as9"
                state="active">
    <contact id="76" state="active" event="registered"
             duration-registered="7322"
             q="0.8">
             <uri>sip:user@pc887.example.com</uri>
    </contact>
    <contact id="77" state="terminated" event="expired"
             duration-registered="3600">
             <uri>sip:user@university.edu</uri>
    </contact>
  </registration>
</reginfo>
"#;

/// RFC 3680 §6: the partial update that follows a new registration.
const RFC3680_PARTIAL: &str = r#"<?xml version="1.0"?>
<reginfo xmlns="urn:ietf:params:xml:ns:reginfo"
              version="1" state="partial">
  <registration aor="sip:user@example.com" id="as9"
                state="active">
    <contact id="78" state="active" event="registered"
             duration-registered="0" expires="3600" callid="a84b4c76e66710" cseq="314159">
             <uri>sip:user@example.org</uri>
             <display-name xml:lang="en">Office</display-name>
    </contact>
  </registration>
</reginfo>
"#;

#[test]
fn reginfo_rfc3680_examples() {
    let r = Reginfo::parse(RFC3680_FULL.as_bytes()).unwrap();
    assert_eq!((r.version, r.state), (0, DocState::Full));
    assert_eq!(r.registrations.len(), 1);
    let reg = &r.registrations[0];
    assert_eq!((&*reg.aor, &*reg.id, reg.state), ("sip:user@example.com", "as9", RegistrationState::Active));
    assert_eq!(reg.contacts.len(), 2);
    let c = &reg.contacts[0];
    assert_eq!((&*c.id, c.state, c.event), ("76", ContactState::Active, ContactEvent::Registered));
    assert_eq!(c.uri, "sip:user@pc887.example.com");
    assert_eq!((c.duration_registered, c.q.as_deref()), (Some(7322), Some("0.8")));
    let c = &reg.contacts[1];
    assert_eq!(
        (c.state, c.event, c.uri.as_ref()),
        (ContactState::Terminated, ContactEvent::Expired, "sip:user@university.edu")
    );

    let r = Reginfo::parse(RFC3680_PARTIAL.as_bytes()).unwrap();
    assert_eq!((r.version, r.state), (1, DocState::Partial));
    let c = &r.registrations[0].contacts[0];
    assert_eq!((c.expires, c.cseq, c.callid.as_deref()), (Some(3600), Some(314_159), Some("a84b4c76e66710")));
    assert_eq!(c.display_name.as_deref(), Some("Office"));
}

#[test]
fn reginfo_round_trip_of_every_field_and_event() {
    let events = [
        ContactEvent::Registered,
        ContactEvent::Created,
        ContactEvent::Refreshed,
        ContactEvent::Shortened,
        ContactEvent::Expired,
        ContactEvent::Deactivated,
        ContactEvent::Probation,
        ContactEvent::Unregistered,
        ContactEvent::Rejected,
    ];
    let mut reg = Registration::new("sip:alice@example.com", "r1", RegistrationState::Active);
    for (i, e) in events.into_iter().enumerate() {
        let state = if i % 2 == 0 { ContactState::Active } else { ContactState::Terminated };
        let mut c = RegContact::new(format!("c{i}"), format!("sip:alice@192.0.2.{i}"), state, e);
        if i == 0 {
            c.expires = Some(3600);
            c.retry_after = Some(30);
            c.duration_registered = Some(12);
            c.q = Some("0.7".into());
            c.callid = Some("x<y>&z@host".into());
            c.cseq = Some(7);
            c.display_name = Some("Alice \"A\" & co".into());
        }
        reg = reg.with_contact(c);
    }
    let doc = Reginfo::new(42, DocState::Partial)
        .with_registration(reg)
        .with_registration(Registration::new("sip:bob@example.com", "r2", RegistrationState::Init))
        .with_registration(Registration::new("sip:carol@example.com", "r3", RegistrationState::Terminated));
    let body = doc.to_body().unwrap();
    assert!(body.contains("callid=\"x&lt;y&gt;&amp;z@host\""), "{body}");
    assert_eq!(Reginfo::parse(body.as_bytes()).unwrap(), doc);
    assert_eq!(Reginfo::CONTENT_TYPE, "application/reginfo+xml");
}

#[test]
fn reginfo_refusals_are_typed() {
    let ns = r#"xmlns="urn:ietf:params:xml:ns:reginfo""#;
    let cases = [
        (format!("<reginfo {ns} state='full'/>"), EventError::MissingAttribute { element: "reginfo", attribute: "version" }),
        (format!("<reginfo {ns} version='x' state='full'/>"), EventError::BadValue { field: "version" }),
        (format!("<reginfo {ns} version='99999999999' state='full'/>"), EventError::BadValue { field: "version" }),
        (format!("<reginfo {ns} version='1' state='most'/>"), EventError::BadValue { field: "state" }),
        (
            format!("<reginfo {ns} version='1' state='full'><registration id='a' state='active'/></reginfo>"),
            EventError::MissingAttribute { element: "registration", attribute: "aor" },
        ),
        (
            format!("<reginfo {ns} version='1' state='full'><registration aor='sip:a@b' id='a' state='active'><contact id='1' state='active' event='registered'/></registration></reginfo>"),
            EventError::MissingElement { parent: "contact", element: "uri" },
        ),
        (
            format!("<reginfo {ns} version='1' state='full'><registration aor='sip:a@b' id='a' state='active'><contact id='1' state='active' event='vanished'><uri>sip:x@y</uri></contact></registration></reginfo>"),
            EventError::BadValue { field: "event" },
        ),
        (
            format!("<reginfo {ns} version='1' state='full'><registration aor='sip:a@b' id='a' state='active'><contact id='1' state='active' event='expired' expires='-1'><uri>sip:x@y</uri></contact></registration></reginfo>"),
            EventError::BadValue { field: "expires" },
        ),
        (format!("<presence {ns}/>"), EventError::WrongRoot { expected: "reginfo" }),
    ];
    for (doc, want) in cases {
        assert_eq!(Reginfo::parse(doc.as_bytes()), Err(want), "{doc}");
    }
}

// ---------------------------------------------------------------- message-summary

#[test]
fn message_summary_rfc3842_examples() {
    // RFC 3842 §5.2 / §7.1: a summary with urgent counts.
    let body = b"Messages-Waiting: yes\r\nMessage-Account: sip:alice@vmail.example.com\r\nVoice-Message: 2/8 (0/2)\r\n";
    let s = MessageSummary::parse(body).unwrap();
    assert!(s.waiting);
    assert_eq!(s.account, Some("sip:alice@vmail.example.com"));
    assert_eq!(s.voice(), Some(MessageCounts { new: 2, old: 8, urgent: Some((0, 2)) }));
    assert_eq!(s.to_body().unwrap().as_bytes(), body);

    // RFC 3842 §5.2: several classes, then the extension headers of the
    // newest message after a blank line.
    let body = "Messages-Waiting: yes\r\n\
        Message-Account: sip:alice@vmail.example.com\r\n\
        Voice-Message: 4/8 (1/2)\r\n\
        Fax-Message: 0/1\r\n\
        \r\n\
        To: <alice@atlanta.example.com>\r\n\
        From: <bob@biloxi.example.com>\r\n\
        Subject: carpool tomorrow?\r\n\
        Date: Sun, 09 May 2004 01:12:23 +0000\r\n\
        Priority: normal\r\n\
        Message-ID: 13784434989@vmail.example.com\r\n";
    let s = MessageSummary::parse(body.as_bytes()).unwrap();
    assert_eq!(s.voice(), Some(MessageCounts::new(4, 8).with_urgent(1, 2)));
    assert_eq!(s.counts("FAX-MESSAGE"), Some(MessageCounts::new(0, 1)));
    assert_eq!(s.headers.len(), 6);
    assert_eq!(s.headers[2], ("Subject", "carpool tomorrow?"));
    assert_eq!(s.to_body().unwrap(), body);
    assert_eq!(MessageSummary::CONTENT_TYPE, "application/simple-message-summary");
}

#[test]
fn message_summary_is_tolerant_of_spacing_and_bare_lf() {
    let s = MessageSummary::parse(b"messages-waiting:no\nvoice-message :  0 / 3 ( 0 / 0 ) \n\nX-Note: a\n  folded\n")
        .unwrap();
    assert!(!s.waiting);
    assert_eq!(s.voice(), Some(MessageCounts::new(0, 3).with_urgent(0, 0)));
    assert_eq!(s.headers, [("X-Note", "a\n  folded")]);
    // A folded header is written back as it came.
    assert!(s.to_body().unwrap().ends_with("X-Note: a\n  folded\r\n"));
    // Without a trailing line end.
    assert!(MessageSummary::parse(b"Messages-Waiting: yes").unwrap().waiting);
}

#[test]
fn message_summary_round_trip_and_refusals() {
    let mut s = MessageSummary::new(true);
    s.account = Some("sip:bob@example.com");
    s.classes.push(("Voice-Message", MessageCounts::new(u32::MAX, 0)));
    s.classes.push(("Text-Message", MessageCounts::new(1, 2).with_urgent(3, 4)));
    s.headers.push(("Subject", "hello"));
    let body = s.to_body().unwrap();
    assert_eq!(MessageSummary::parse(body.as_bytes()).unwrap(), s);

    let line = |line| EventError::Line { body: "message-summary", line };
    for (body, want) in [
        (&b""[..], line(1)),
        (b"Voice-Message: 1/2\r\n", line(1)),
        (b"Messages-Waiting: maybe\r\n", line(1)),
        (b"Messages-Waiting: yes\r\nVoice-Message: 1\r\n", line(2)),
        (b"Messages-Waiting: yes\r\nVoice-Message: 1/2 (3)\r\n", line(2)),
        (b"Messages-Waiting: yes\r\nVoice-Message: 1/2 (3/4\r\n", line(2)),
        (b"Messages-Waiting: yes\r\nVoice-Message: 99999999999/2\r\n", line(2)),
        (b"Messages-Waiting: yes\r\nno colon here\r\n", line(2)),
        (b"Messages-Waiting: yes\r\n\r\n folded-first\r\n", line(3)),
        (b"Messages-Waiting: yes\r\n\xff", EventError::NotUtf8),
    ] {
        assert_eq!(MessageSummary::parse(body), Err(want), "{}", String::from_utf8_lossy(body));
    }
    let mut bad = MessageSummary::new(false);
    bad.account = Some("sip:a@b\r\nInjected: yes");
    assert_eq!(bad.to_body(), Err(EventError::Unwritable { field: "Message-Account" }));
    let mut bad = MessageSummary::new(false);
    bad.classes.push(("Voice Message", MessageCounts::default()));
    assert_eq!(bad.to_body(), Err(EventError::BadValue { field: "message-context-class" }));
}

// ---------------------------------------------------------------- sipfrag

#[test]
fn sipfrag_build_and_parse() {
    // RFC 3515 §2.4.5 / the examples of §3: the NOTIFYs carry these.
    let trying = StatusFrag::new(100, "Trying").unwrap();
    assert_eq!(trying.to_string(), "SIP/2.0 100 Trying\r\n");
    assert!(!trying.is_final());
    let ok = StatusFrag::parse(b"SIP/2.0 200 OK\r\n").unwrap();
    assert_eq!((ok.code, &*ok.reason, ok.rest), (200, "OK", ""));
    assert!(ok.is_final() && ok.is_success());
    assert_eq!(StatusFrag::parse(trying.to_string().as_bytes()).unwrap(), trying);
    assert_eq!(StatusFrag::CONTENT_TYPE, "message/sipfrag;version=2.0");

    // RFC 3420 §2: headers may follow the status line.
    let frag = StatusFrag::parse(b"SIP/2.0 486 Busy Here\r\nRetry-After: 60\r\nContent-Length: 0\r\n\r\n").unwrap();
    assert_eq!((frag.code, &*frag.reason), (486, "Busy Here"));
    assert_eq!(frag.rest, "Retry-After: 60\r\nContent-Length: 0\r\n\r\n");
    assert!(frag.is_final() && !frag.is_success());
    // Tolerated: bare LF, no line end, no reason, lower-case version.
    assert_eq!(StatusFrag::parse(b"SIP/2.0 180 Ringing\nTo: <sip:a@b>").unwrap().rest, "To: <sip:a@b>");
    assert_eq!(StatusFrag::parse(b"SIP/2.0 503").unwrap().reason, "");
    assert_eq!(StatusFrag::parse(b"sip/2.0 603 Declined").unwrap().code, 603);
    assert_eq!(StatusFrag::parse("SIP/2.0 200 Très bien\r\n".as_bytes()).unwrap().reason, "Très bien");
}

#[test]
fn sipfrag_refusals_are_typed() {
    let bad = EventError::Line { body: "sipfrag", line: 1 };
    for body in [
        &b""[..],
        b"INVITE sip:bob@example.com SIP/2.0\r\n",
        b"SIP/2.0 99 Low\r\n",
        b"SIP/2.0 700 High\r\n",
        b"SIP/2.0 2000 OK\r\n",
        b"SIP/2.0 20x OK\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"SIP/2 200 OK\r\n",
        b"SIP/ 200 OK",
        b"S 200 OK",
    ] {
        assert_eq!(StatusFrag::parse(body), Err(bad), "{}", String::from_utf8_lossy(body));
    }
    assert_eq!(StatusFrag::parse(b"SIP/2.0 200 \xff"), Err(EventError::NotUtf8));
    assert_eq!(StatusFrag::new(42, "x"), Err(EventError::BadValue { field: "status code" }));
    assert_eq!(StatusFrag::new(200, "OK\r\nX: y"), Err(EventError::Unwritable { field: "reason phrase" }));
}

// ---------------------------------------------------------------- properties

fn xmlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:a@b'>".to_owned()),
        Just("</presence>".to_owned()),
        Just("<reginfo xmlns='urn:ietf:params:xml:ns:reginfo' version='1' state='full'>".to_owned()),
        Just("</reginfo>".to_owned()),
        Just("<tuple id='t'>".to_owned()),
        Just("</tuple>".to_owned()),
        Just("<status><basic>open</basic></status>".to_owned()),
        Just("<registration aor='sip:a@b' id='r' state='active'>".to_owned()),
        Just("<contact id='c' state='active' event='registered'><uri>sip:x@y</uri></contact>".to_owned()),
        Just("<note xml:lang='en'>".to_owned()),
        Just("</note>".to_owned()),
        Just("<dm:person xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model'>".to_owned()),
        Just("&amp;&#x41;&#0;&bogus;<![CDATA[x]]><!-- c --><?pi x?>".to_owned()),
        "[<>&;'\"=/a-z: \\PC]{0,12}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn body_parsers_never_panic_on_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Presence::parse(&body);
        let _ = Reginfo::parse(&body);
        let _ = MessageSummary::parse(&body);
        let _ = StatusFrag::parse(&body);
    }

    #[test]
    fn xml_parsers_never_panic_on_xmlish_text(doc in xmlish()) {
        // Whatever parses also writes and parses back the same (for
        // documents whose ids we can write).
        if let Ok(p) = Presence::parse(doc.as_bytes()) {
            if let Ok(body) = p.to_body() {
                prop_assert_eq!(Presence::parse(body.as_bytes()), Ok(p));
            }
        }
        if let Ok(r) = Reginfo::parse(doc.as_bytes()) {
            if let Ok(body) = r.to_body() {
                prop_assert_eq!(Reginfo::parse(body.as_bytes()), Ok(r));
            }
        }
    }

    #[test]
    fn text_bodies_never_panic_on_lines(lines in prop::collection::vec("[A-Za-z -]{0,16}:?[ 0-9/()a-z]{0,12}", 0..8)) {
        let body = lines.join("\r\n");
        let _ = StatusFrag::parse(body.as_bytes());
        if let Ok(s) = MessageSummary::parse(body.as_bytes()) {
            if let Ok(out) = s.to_body() {
                prop_assert_eq!(MessageSummary::parse(out.as_bytes()), Ok(s));
            }
        }
    }

    #[test]
    fn any_writable_note_round_trips(text in "\\PC*", lang in "[a-z]{2}(-[A-Z]{2})?") {
        let built = Presence::new("sip:a@example.com", Tuple::new("t", Basic::Open).with_note(Note::new(text.as_str()).with_lang(lang.as_str())));
        match built.to_body() {
            Ok(body) => prop_assert_eq!(Presence::parse(body.as_bytes()), Ok(built)),
            Err(e) => prop_assert_eq!(e, EventError::Unwritable { field: "note" }),
        }
    }
}
