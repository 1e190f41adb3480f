use super::*;

const INVITE: &[u8] = b"INVITE sips:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/TLS pc33.example.com;branch=z9hG4bKnashds8\r\n\
Max-Forwards: 70\r\n\
To: Bob <sips:bob@biloxi.example.com>\r\n\
From: Alice <sips:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sips:alice@pc33.example.com>\r\n\
Content-Length: 0\r\n\r\n";

fn response(code: u16, extra: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} X\r\n\
Via: SIP/2.0/TLS pc33.example.com;branch=z9hG4bKnashds8\r\n\
To: Bob <sips:bob@biloxi.example.com>;tag=a6c85cf\r\n\
From: Alice <sips:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\n\
CSeq: 314159 INVITE\r\n\
{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn uac_dialog_per_12_1_2() {
    let req = Message::parse(INVITE).unwrap();
    let bytes = response(
        180,
        "Contact: <sips:bob@192.0.2.4>\r\nRecord-Route: <sip:p2.example.com;lr>\r\n\
Record-Route: <sip:p1.example.com;lr>\r\n",
    );
    let resp = Message::parse(&bytes).unwrap();
    let mut d = Dialog::from_uac(&req, &resp).unwrap();
    assert_eq!(d.state(), DialogState::Early);
    assert!(d.is_secure());
    assert_eq!(
        d.id(),
        &DialogId { call_id: "a84b4c76e66710".into(), local_tag: "1928301774".into(), remote_tag: "a6c85cf".into() }
    );
    // Route set: Record-Route reversed.
    assert_eq!(d.route_set(), ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]);
    let bye = d.next_request();
    assert_eq!(bye.cseq, 314_160, "§12.2.1.1: local CSeq + 1");
    assert_eq!(bye.uri, "sips:bob@192.0.2.4");
    assert_eq!(bye.from, "<sips:alice@example.com>;tag=1928301774");
    assert_eq!(bye.to, "<sips:bob@biloxi.example.com>;tag=a6c85cf");
    assert_eq!(bye.next_hop(), "sip:p1.example.com;lr");
    // The ACK of the INVITE reuses its number.
    assert_eq!(d.head(314_159).cseq, 314_159);

    // A 2xx confirms it, and its Contact / Record-Route win (§13.2.2.4).
    let ok = response(200, "Contact: <sips:bob@192.0.2.5>\r\nRecord-Route: <sip:p1.example.com;lr>\r\n");
    d.confirm_with(&Message::parse(&ok).unwrap());
    assert_eq!(d.state(), DialogState::Confirmed);
    assert_eq!(d.remote_target(), "sips:bob@192.0.2.5");
    assert_eq!(d.route_set(), ["<sip:p1.example.com;lr>"]);
}

#[test]
fn uac_dialog_needs_a_tag_and_a_contact() {
    let req = Message::parse(INVITE).unwrap();
    let no_tag = response(200, "Contact: <sip:bob@192.0.2.4>\r\n");
    let no_tag = String::from_utf8(no_tag).unwrap().replace(";tag=a6c85cf", "");
    assert_eq!(Dialog::from_uac(&req, &Message::parse(no_tag.as_bytes()).unwrap()), Err(DialogError::NoTag));
    let no_contact = response(200, "");
    assert_eq!(Dialog::from_uac(&req, &Message::parse(&no_contact).unwrap()), Err(DialogError::NoContact));
}

#[test]
fn uas_dialog_per_12_1_1_and_remote_cseq_per_12_2_2() {
    let mut inv = INVITE.to_vec();
    let rr = b"Record-Route: <sip:p1.example.com;lr>\r\nRecord-Route: <sip:p2.example.com;lr>\r\n";
    let at = inv.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    inv.splice(at..at, rr.iter().copied());
    let req = Message::parse(&inv).unwrap();
    let mut d = Dialog::from_uas(&req, "uas1").unwrap();
    assert_eq!(d.state(), DialogState::Early);
    assert_eq!(d.route_set(), ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"], "§12.1.1: order kept");
    assert_eq!(d.local_seq(), None);
    let bye = d.next_request();
    assert_eq!(bye.cseq, 1, "§12.2.1.1: an empty local sequence starts fresh");
    assert_eq!(bye.uri, "sips:alice@pc33.example.com");
    assert_eq!(bye.from, "<sips:bob@biloxi.example.com>;tag=uas1");
    assert_eq!(bye.to, "<sips:alice@example.com>;tag=1928301774");

    assert_eq!(d.check_remote_seq(314_159), Err(OrderError::OutOfOrder), "equal is not higher");
    assert_eq!(d.check_remote_seq(100), Err(OrderError::OutOfOrder));
    assert_eq!(d.check_remote_seq(314_160), Ok(()));
    assert_eq!(d.check_remote_seq(314_160), Err(OrderError::OutOfOrder));
}

#[test]
fn matches_requests_by_call_id_and_both_tags() {
    let req = Message::parse(INVITE).unwrap();
    let d = Dialog::from_uas(&req, "uas1").unwrap();
    let bye = |to_tag: &str, from_tag: &str, call_id: &str| {
        format!(
            "BYE sips:bob@192.0.2.4 SIP/2.0\r\nVia: SIP/2.0/TLS pc33.example.com;branch=z9hG4bK2\r\n\
To: <sips:bob@biloxi.example.com>;tag={to_tag}\r\nFrom: <sips:alice@example.com>;tag={from_tag}\r\n\
Call-ID: {call_id}\r\nCSeq: 314160 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let yes = bye("uas1", "1928301774", "a84b4c76e66710");
    assert!(d.matches_request(&Message::parse(yes.as_bytes()).unwrap()));
    for no in [
        bye("other", "1928301774", "a84b4c76e66710"),
        bye("uas1", "other", "a84b4c76e66710"),
        bye("uas1", "1928301774", "other"),
    ] {
        assert!(!d.matches_request(&Message::parse(no.as_bytes()).unwrap()), "{no}");
    }
}

#[test]
fn strict_first_route_becomes_the_request_uri() {
    let req = Message::parse(INVITE).unwrap();
    let bytes = response(
        200,
        "Contact: <sip:bob@192.0.2.4>\r\nRecord-Route: <sip:p2.example.com;lr>, <sip:p1.example.com>\r\n",
    );
    let mut d = Dialog::from_uac(&req, &Message::parse(&bytes).unwrap()).unwrap();
    let head = d.next_request();
    // §12.2.1.1: strict router p1 first: it is the Request-URI; the remote
    // target goes last.
    assert_eq!(head.uri, "sip:p1.example.com");
    assert_eq!(head.routes, ["<sip:p2.example.com;lr>", "<sip:bob@192.0.2.4>"]);
    assert_eq!(head.next_hop(), "sip:p2.example.com;lr");
}

#[test]
fn target_refresh_takes_the_new_contact() {
    let req = Message::parse(INVITE).unwrap();
    let mut d = Dialog::from_uas(&req, "t").unwrap();
    let reinvite = b"INVITE sips:bob@192.0.2.4 SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK3\r\n\
To: <sips:bob@biloxi.example.com>;tag=t\r\nFrom: <sips:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710\r\nCSeq: 314160 INVITE\r\nContact: <sips:alice@198.51.100.7:5071>\r\n\
Content-Length: 0\r\n\r\n";
    d.refresh_target(&Message::parse(reinvite).unwrap());
    assert_eq!(d.remote_target(), "sips:alice@198.51.100.7:5071");
}
