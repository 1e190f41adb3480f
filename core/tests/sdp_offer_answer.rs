//! SDP offer/answer (RFC 3264), one test per rule, in the style of RFC
//! 4317's examples; and a property test: `answer` never panics and its
//! answers have the offer's shape and parse back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sipline::sdp::{
    answer, held, negotiated, offer, resumed, static_payload_type, ActiveStream, Capabilities, Codec, Direction,
    Encoding, LocalSession, MediaCapability, Negotiated, OfferAnswerError, OwnedDescription, SdpError,
    SessionDescription, Stream,
};

const BOB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);

fn bob() -> LocalSession {
    LocalSession::new("bob", 7, 1, IpAddr::V4(BOB))
}

fn ports(ports: &[u16]) -> Vec<SocketAddr> {
    ports.iter().map(|p| SocketAddr::new(IpAddr::V4(BOB), *p)).collect()
}

/// An offer from Alice at 198.51.100.1 with `media` after the session
/// lines (`\n` line ends are fine, RFC 8866 §5).
fn offer_text(version: u64, media: &str) -> String {
    format!("v=0\no=alice 2890844526 {version} IN IP4 198.51.100.1\ns=-\nc=IN IP4 198.51.100.1\nt=0 0\n{media}")
}

fn parse(text: &str) -> Result<SessionDescription<'_>, SdpError> {
    SessionDescription::parse(text.as_bytes())
}

/// Answers `media` (in Alice's offer) with the telephony capabilities
/// and ports 40000, 40002…
fn answer_to(media: &str) -> Result<OwnedDescription, Box<dyn std::error::Error>> {
    let text = offer_text(1, media);
    let offered = parse(&text)?;
    Ok(answer(&offered, &Capabilities::telephony(), &ports(&[40000, 40002, 40004]), &mut bob())?)
}

/// The answer's media sections, as text.
fn media_text(sdp: &OwnedDescription) -> String {
    sdp.media.iter().map(ToString::to_string).collect()
}

/// RFC 3264 §6: one m= line per offered one, in order; video, which we
/// do not support, rejected with port 0 and kept (§8.2); RFC 4317 §2.1's
/// shape (audio and video, the answerer takes part of it).
#[test]
fn audio_and_video_offer_when_we_only_do_audio_rejects_video_with_port_0_3264_6(
) -> Result<(), Box<dyn std::error::Error>> {
    let ours = answer_to(
        "m=audio 49170 RTP/AVP 0 8 97\na=rtpmap:0 PCMU/8000\na=rtpmap:8 PCMA/8000\na=rtpmap:97 iLBC/8000\n\
         m=video 51372 RTP/AVP 31 32\na=rtpmap:31 H261/90000\na=rtpmap:32 MPV/90000\n",
    )?;
    assert_eq!(
        ours.to_string(),
        "v=0\r\no=bob 7 1 IN IP4 203.0.113.5\r\ns=-\r\nc=IN IP4 203.0.113.5\r\nt=0 0\r\n\
         m=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=ptime:20\r\na=sendrecv\r\n\
         m=video 0 RTP/AVP 31 32\r\n"
    );
    Ok(())
}

/// RFC 3264 §6.1: the answer uses the offer's payload type for the same
/// codec (opus offered on 97; our own offers use 111).
#[test]
fn the_answer_keeps_the_offers_payload_type_numbers_6_1() -> Result<(), Box<dyn std::error::Error>> {
    let ours = answer_to("m=audio 49170 RTP/AVP 97 9\na=rtpmap:97 OPUS/48000/2\na=fmtp:97 useinbandfec=1\n")?;
    assert_eq!(
        media_text(&ours),
        "m=audio 40000 RTP/AVP 97 9\r\na=rtpmap:97 opus/48000/2\r\na=rtpmap:9 G722/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    );
    // The same name at another rate or channel count is another codec.
    let ours = answer_to("m=audio 49170 RTP/AVP 97 98 0\na=rtpmap:97 opus/48000\na=rtpmap:98 PCMU/16000\n")?;
    assert_eq!(ours.media[0].formats, ["0"]);
    Ok(())
}

/// RFC 4733 §2.4.1 with RFC 3264 §6.1: telephone-event is answered only
/// when offered, with the events both sides support (0–15 when the offer
/// says nothing), on the offer's number; it never makes a stream on its
/// own.
#[test]
fn telephone_event_only_when_offered_with_the_common_events_4733() -> Result<(), Box<dyn std::error::Error>> {
    let none = answer_to("m=audio 49170 RTP/AVP 0\n")?;
    assert_eq!(none.media[0].formats, ["0"]);
    assert!(!media_text(&none).contains("telephone-event"));

    let offered = answer_to("m=audio 49170 RTP/AVP 0 100\na=rtpmap:100 telephone-event/8000\na=fmtp:100 0-11,16,32\n")?;
    assert_eq!(offered.media[0].formats, ["0", "100"]);
    assert!(media_text(&offered).contains("a=rtpmap:100 telephone-event/8000\r\na=fmtp:100 0-11,16\r\n"));

    let default = answer_to("m=audio 49170 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\n")?;
    assert!(media_text(&default).contains("a=fmtp:101 0-15\r\n"));

    let disjoint = answer_to("m=audio 49170 RTP/AVP 0 101\na=rtpmap:101 telephone-event/8000\na=fmtp:101 32-40\n")?;
    assert_eq!(disjoint.media[0].formats, ["0"]);

    // telephone-event alone is no codec (the offer is refused, 488).
    let only_events = answer_to("m=audio 49170 RTP/AVP 101\na=rtpmap:101 telephone-event/8000\n");
    assert!(matches!(
        only_events.map_err(|e| e.downcast_ref::<OfferAnswerError>().copied()),
        Err(Some(OfferAnswerError::NothingAccepted))
    ));
    Ok(())
}

/// RFC 3551 §6: a static payload type without `a=rtpmap` stands for the
/// table's codec; an `a=rtpmap` overrides the table.
#[test]
fn static_payload_types_match_without_rtpmap_3551_6() -> Result<(), Box<dyn std::error::Error>> {
    let ours = answer_to("m=audio 49170 RTP/AVP 18 3 8 0 9\n")?;
    assert_eq!(ours.media[0].formats, ["8", "0", "9"]);
    assert!(media_text(&ours).contains("a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:9 G722/8000\r\n"));

    let remapped = answer_to("m=audio 49170 RTP/AVP 0 8\na=rtpmap:0 L16/8000\n")?;
    assert_eq!(remapped.media[0].formats, ["8"]);

    let table = [(0, "PCMU"), (3, "GSM"), (4, "G723"), (8, "PCMA"), (9, "G722"), (18, "G729")];
    for (pt, name) in table {
        assert_eq!(static_payload_type(pt), Some(Encoding { name, clock_rate: 8000, channels: 1 }));
    }
    assert_eq!(static_payload_type(96), None);
    assert_eq!(static_payload_type(2), None);
    Ok(())
}

/// RFC 3264 §6: a stream with no codec in common is rejected with port
/// 0; the others are answered.
#[test]
fn a_stream_with_no_common_codec_is_rejected_with_port_0_6() -> Result<(), Box<dyn std::error::Error>> {
    let ours = answer_to("m=audio 49170 RTP/AVP 3\nm=audio 49180 RTP/AVP 0\nm=audio 49190 RTP/AVP 98\n")?;
    let shape: Vec<(u16, &[String])> = ours.media.iter().map(|m| (m.port, m.formats.as_slice())).collect();
    assert_eq!(shape, [(0, &["3".to_owned()][..]), (40002, &["0".to_owned()][..]), (0, &["98".to_owned()][..])]);
    Ok(())
}

/// No offered stream acceptable: refused, for a 488 (RFC 3261
/// §21.4.26); an offer whose streams are all disabled gets an answer with
/// all of them at port 0 (RFC 3264 §6, §8.2).
#[test]
fn nothing_acceptable_is_refused_and_all_disabled_is_answered_all_port_0_6_8_2(
) -> Result<(), Box<dyn std::error::Error>> {
    let text = offer_text(1, "m=audio 49170 RTP/AVP 3\nm=video 51372 RTP/AVP 31\n");
    let offered = parse(&text)?;
    let mut session = bob();
    assert_eq!(
        answer(&offered, &Capabilities::telephony(), &ports(&[40000, 40002]), &mut session),
        Err(OfferAnswerError::NothingAccepted)
    );
    assert_eq!(session.last(), None, "a refusal sends nothing");

    let ours = answer_to("m=audio 0 RTP/AVP 0\nm=video 0 RTP/AVP 31\n")?;
    assert_eq!(media_text(&ours), "m=audio 0 RTP/AVP 0\r\nm=video 0 RTP/AVP 31\r\n");
    Ok(())
}

/// RFC 3264 §6: an unsupported protocol and a stream we have no local
/// port for are rejected like an unsupported type.
#[test]
fn unsupported_protocol_or_no_local_port_rejects_the_stream_6() -> Result<(), Box<dyn std::error::Error>> {
    let ours =
        answer_to("m=audio 49170 RTP/SAVP 0\nm=audio 49180 RTP/AVP 0\nm=audio 49190 RTP/AVP 0\nm=audio 4 RTP/AVP 0\n")?;
    let ports: Vec<u16> = ours.media.iter().map(|m| m.port).collect();
    assert_eq!(ports, [0, 40002, 40004, 0]);
    Ok(())
}

/// RFC 3264 §6.1: sendonly → recvonly, recvonly → sendonly, inactive →
/// inactive, sendrecv (or none, RFC 8866 §6.7) → sendrecv; a
/// session-level attribute counts.
#[test]
fn directions_are_answered_mirrored_6_1() -> Result<(), Box<dyn std::error::Error>> {
    let cases = [
        ("a=sendonly\n", Direction::RecvOnly),
        ("a=recvonly\n", Direction::SendOnly),
        ("a=inactive\n", Direction::Inactive),
        ("a=sendrecv\n", Direction::SendRecv),
        ("", Direction::SendRecv),
    ];
    for (attribute, expected) in cases {
        let ours = answer_to(&format!("m=audio 49170 RTP/AVP 0\n{attribute}"))?;
        assert_eq!(ours.direction_of(0), Some(expected), "offer {attribute:?}");
        assert!(media_text(&ours).ends_with(&format!("a={}\r\n", expected.name())));
    }
    let text = "v=0\no=alice 1 1 IN IP4 198.51.100.1\ns=-\nc=IN IP4 198.51.100.1\nt=0 0\na=sendonly\n\
                m=audio 49170 RTP/AVP 0\nm=audio 49180 RTP/AVP 0\na=inactive\n";
    let ours = answer(&parse(text)?, &Capabilities::telephony(), &ports(&[40000, 40002]), &mut bob())?;
    assert_eq!((ours.direction_of(0), ours.direction_of(1)), (Some(Direction::RecvOnly), Some(Direction::Inactive)));
    Ok(())
}

/// RFC 3264 §8.4 (RFC 4317 §3.1's flow, as the held side): a re-offer
/// with sendonly puts us on hold, answered recvonly; the offer back to
/// sendrecv resumes. Each changed answer gets the next version (§8).
#[test]
fn hold_by_sendonly_is_answered_recvonly_and_resume_sendrecv_8_4() -> Result<(), Box<dyn std::error::Error>> {
    let caps = Capabilities::telephony();
    let local = ports(&[40000]);
    let mut session = bob();
    let mut directions = Vec::new();
    for (version, attribute) in [(1, ""), (2, "a=sendonly\n"), (3, "a=sendrecv\n")] {
        let text = offer_text(version, &format!("m=audio 49170 RTP/AVP 0\n{attribute}"));
        let ours = answer(&parse(&text)?, &caps, &local, &mut session)?;
        directions.push((ours.origin.session_version, ours.direction_of(0)));
        let heard = Negotiated::as_answerer(&parse(&text)?, &ours.borrowed())?;
        assert_eq!(heard.active("audio").map(|a| a.direction), ours.direction_of(0));
    }
    assert_eq!(
        directions,
        [(1, Some(Direction::SendRecv)), (2, Some(Direction::RecvOnly)), (3, Some(Direction::SendRecv))]
    );
    Ok(())
}

/// RFC 3264 §8.4: c=0.0.0.0 (RFC 2543 hold) means "send nothing here":
/// answered recvonly, and the offerer's reading of it does not send.
#[test]
fn rfc_2543_hold_with_c_0_0_0_0_is_understood_as_hold_8_4() -> Result<(), Box<dyn std::error::Error>> {
    let text = "v=0\no=alice 1 2 IN IP4 198.51.100.1\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 49170 RTP/AVP 0\n";
    let offered = parse(text)?;
    let ours = answer(&offered, &Capabilities::telephony(), &ports(&[40000]), &mut bob())?;
    assert_eq!(ours.direction_of(0), Some(Direction::RecvOnly));
    let heard = Negotiated::as_answerer(&offered, &ours.borrowed())?;
    let audio = heard.active("audio").ok_or("no audio")?;
    assert_eq!((audio.direction, audio.remote), (Direction::RecvOnly, "0.0.0.0:49170".parse()?));

    // We offered; the answer holds us the old way.
    let mut alice = LocalSession::new("alice", 1, 1, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    let ours = offer(&Capabilities::telephony(), &[SocketAddr::new(alice.address(), 49170)], &mut alice)?;
    let reply = "v=0\no=bob 7 1 IN IP4 203.0.113.5\ns=-\nc=IN IP4 0.0.0.0\nt=0 0\nm=audio 40000 RTP/AVP 0\n";
    let result = negotiated(&ours.borrowed(), &parse(reply)?)?;
    assert_eq!(result.active("audio").map(|a| a.direction), Some(Direction::RecvOnly));
    Ok(())
}

/// RFC 3264 §8.4: to hold, a new offer marks sendrecv streams sendonly
/// and recvonly ones (the peer holds us) inactive; resume undoes it.
/// While we hold, answers to sendrecv are sendonly (§6.1's restriction).
#[test]
fn our_hold_offers_sendonly_or_inactive_when_both_hold_and_resume_undoes_it_8_4(
) -> Result<(), Box<dyn std::error::Error>> {
    let caps = Capabilities::telephony();
    let local = ports(&[40000]);
    let mut session = bob();
    assert_eq!(session.hold(), Err(OfferAnswerError::NothingSent));
    let first = offer(&caps, &local, &mut session)?;
    assert_eq!(first.direction_of(0), Some(Direction::SendRecv));

    let hold = session.hold()?;
    assert_eq!((hold.direction_of(0), hold.origin.session_version), (Some(Direction::SendOnly), 2));
    assert!(session.is_holding());
    // Everything but the direction stays.
    let mut back = hold.clone();
    back.media[0].set_direction(Direction::SendRecv);
    assert!(back.same_apart_from_origin(&first));

    // The peer re-offers sendrecv while we hold: we answer sendonly.
    let text = offer_text(2, "m=audio 49170 RTP/AVP 0\n");
    let ours = answer(&parse(&text)?, &caps, &local, &mut session)?;
    assert_eq!(ours.direction_of(0), Some(Direction::SendOnly));
    // The peer holds us too: inactive.
    let text = offer_text(3, "m=audio 49170 RTP/AVP 0\na=sendonly\n");
    let ours = answer(&parse(&text)?, &caps, &local, &mut session)?;
    assert_eq!(ours.direction_of(0), Some(Direction::Inactive));
    // We resume while the peer still holds: recvonly.
    let resume = session.resume()?;
    assert_eq!(resume.direction_of(0), Some(Direction::RecvOnly));
    assert!(!session.is_holding());

    // The free functions: recvonly → inactive on hold; inactive →
    // recvonly and sendonly → sendrecv on resume; port 0 untouched.
    let text = offer_text(1, "m=audio 1 RTP/AVP 0\na=recvonly\nm=audio 2 RTP/AVP 0\nm=video 0 RTP/AVP 31\n");
    let previous = OwnedDescription::parse(text.as_bytes())?;
    let on_hold = held(&previous);
    let directions = |d: &OwnedDescription| (0..3).map(|i| d.direction_of(i)).collect::<Vec<_>>();
    let (i, s, r) = (Some(Direction::Inactive), Some(Direction::SendOnly), Some(Direction::SendRecv));
    assert_eq!(directions(&on_hold), [i, s, r]);
    assert_eq!(directions(&resumed(&on_hold)), [Some(Direction::RecvOnly), r, r]);
    assert_eq!(on_hold.media[2], previous.media[2]);
    Ok(())
}

/// RFC 3264 §8 and RFC 8866 §5.2: the session id never changes; the
/// version goes up by exactly one when the description changes and stays
/// when the same one is sent again (a refresh re-INVITE).
#[test]
fn the_version_goes_up_by_one_only_when_the_description_changes_8() -> Result<(), Box<dyn std::error::Error>> {
    let caps = Capabilities::telephony();
    let mut session = LocalSession::new("bob", 42, 100, IpAddr::V4(BOB));
    let mut seen = Vec::new();
    let offers = [
        ("m=audio 49170 RTP/AVP 0\n", 1),
        ("m=audio 49170 RTP/AVP 0\n", 2), // refresh: the same answer
        ("m=audio 49170 RTP/AVP 8\n", 3), // another codec
        ("m=audio 49170 RTP/AVP 8\n", 4), // the same again
        ("m=audio 49170 RTP/AVP 8\na=recvonly\n", 5),
    ];
    for (media, version) in offers {
        let text = offer_text(version, media);
        let ours = answer(&parse(&text)?, &caps, &ports(&[40000]), &mut session)?;
        seen.push((ours.origin.session_id.clone(), ours.origin.session_version));
    }
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["42"; 5]);
    let versions: Vec<u64> = seen.iter().map(|(_, v)| *v).collect();
    assert_eq!(versions, [100, 100, 101, 101, 102]);
    assert_eq!(session.version(), 102);

    // Another port is a change too; describing `last()` again is not.
    let moved = answer(
        &parse(&offer_text(6, "m=audio 49170 RTP/AVP 8\na=recvonly\n"))?,
        &caps,
        &ports(&[40010]),
        &mut session,
    )?;
    assert_eq!(moved.origin.session_version, 103);
    let again = session.last().cloned().ok_or("nothing sent")?;
    assert_eq!(session.describe(again).origin.session_version, 103);
    Ok(())
}

/// RFC 3264 §6: an answer must have exactly the offer's number of m=
/// lines, each of the same type; a stream disabled in the offer stays so;
/// an accepted stream has a format of the offer (§6.1).
#[test]
fn answers_that_break_the_rules_are_refused_6() -> Result<(), Box<dyn std::error::Error>> {
    let text = offer_text(1, "m=audio 49170 RTP/AVP 0 8\nm=video 0 RTP/AVP 31\n");
    let ours = parse(&text)?;
    let reply = |media: &str| format!("v=0\no=bob 7 1 IN IP4 203.0.113.5\ns=-\nc=IN IP4 203.0.113.5\nt=0 0\n{media}");
    let check = |media: &str| -> Result<Result<Negotiated, OfferAnswerError>, SdpError> {
        let text = reply(media);
        Ok(negotiated(&ours, &parse(&text)?))
    };
    assert_eq!(check("m=audio 40000 RTP/AVP 0\n")?, Err(OfferAnswerError::MediaCount { offer: 2, answer: 1 }));
    assert_eq!(
        check("m=audio 40000 RTP/AVP 0\nm=video 0 RTP/AVP 31\nm=audio 0 RTP/AVP 0\n")?,
        Err(OfferAnswerError::MediaCount { offer: 2, answer: 3 })
    );
    assert_eq!(
        check("m=video 40000 RTP/AVP 0\nm=video 0 RTP/AVP 31\n")?,
        Err(OfferAnswerError::MediaMismatch { index: 0 })
    );
    assert_eq!(
        check("m=audio 40000 RTP/AVP 0\nm=video 40002 RTP/AVP 31\n")?,
        Err(OfferAnswerError::RevivedStream { index: 1 })
    );
    assert_eq!(
        check("m=audio 40000 RTP/AVP 9\nm=video 0 RTP/AVP 31\n")?,
        Err(OfferAnswerError::NoCommonFormat { index: 0 })
    );
    let no_c = "v=0\no=bob 7 1 IN IP4 203.0.113.5\ns=-\nt=0 0\nm=audio 40000 RTP/AVP 0\nm=video 0 RTP/AVP 31\n";
    assert_eq!(negotiated(&ours, &parse(no_c)?), Err(OfferAnswerError::MissingConnection { index: 0 }));
    let named = reply("m=audio 40000 RTP/AVP 0\nm=video 0 RTP/AVP 31\n")
        .replace("c=IN IP4 203.0.113.5", "c=IN IP4 bob.example");
    assert_eq!(negotiated(&ours, &parse(&named)?), Err(OfferAnswerError::Address { index: 0 }));
    // And the answerer's side: an offer with an active stream and no c=.
    let offer_no_c = "v=0\no=alice 1 1 IN IP4 198.51.100.1\ns=-\nt=0 0\nm=audio 49170 RTP/AVP 0\n";
    assert_eq!(
        answer(&parse(offer_no_c)?, &Capabilities::telephony(), &ports(&[40000]), &mut bob()),
        Err(OfferAnswerError::MissingConnection { index: 0 })
    );
    // A stream we reject needs no c=.
    let partial = "v=0\no=alice 1 1 IN IP4 198.51.100.1\ns=-\nt=0 0\nm=video 51372 RTP/AVP 31\n\
                   m=audio 49170 RTP/AVP 0\nc=IN IP4 198.51.100.1\n";
    let ours = answer(&parse(partial)?, &Capabilities::telephony(), &ports(&[40000, 40002]), &mut bob())?;
    assert_eq!(ours.media.iter().map(|m| m.port).collect::<Vec<_>>(), [0, 40002]);
    Ok(())
}

/// RFC 3264 §5.1: an offer lists our codecs in our order of preference
/// on their payload types, every stream sendrecv.
#[test]
fn an_offer_from_capabilities_5_1() -> Result<(), Box<dyn std::error::Error>> {
    let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let mut session = LocalSession::new("alice", 9, 9, ip);
    let ours = offer(&Capabilities::telephony(), &[SocketAddr::new(ip, 49170)], &mut session)?;
    assert_eq!(
        ours.to_string(),
        "v=0\r\no=alice 9 9 IN IP6 2001:db8::1\r\ns=-\r\nc=IN IP6 2001:db8::1\r\nt=0 0\r\n\
         m=audio 49170 RTP/AVP 0 8 9 111 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=rtpmap:9 G722/8000\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    );

    let refuse = |caps: Capabilities, local: &[SocketAddr]| offer(&caps, local, &mut bob());
    let local = ports(&[40000, 40002]);
    assert_eq!(refuse(Capabilities::default(), &local), Err(OfferAnswerError::NothingToOffer));
    let clash = Capabilities::new(vec![MediaCapability::audio(vec![Codec::opus(101), Codec::telephone_event(101)])]);
    assert_eq!(refuse(clash, &local), Err(OfferAnswerError::PayloadType { payload_type: 101 }));
    let big = Capabilities::new(vec![MediaCapability::audio(vec![Codec::opus(128)])]);
    assert_eq!(refuse(big, &local), Err(OfferAnswerError::PayloadType { payload_type: 128 }));
    let events = Capabilities::new(vec![MediaCapability::audio(vec![Codec::telephone_event(101)])]);
    assert_eq!(refuse(events, &local), Err(OfferAnswerError::NoCodec { index: 0 }));
    let two = Capabilities::new(vec![
        MediaCapability::audio(vec![Codec::pcmu()]),
        MediaCapability::new("video", "RTP/AVP", vec![Codec::new("H264", 90_000, 96)]),
    ]);
    assert_eq!(refuse(two, &local[..1]), Err(OfferAnswerError::MissingLocalAddress { index: 1 }));
    Ok(())
}

/// RFC 3264 §6.1, §7: the offerer reads the codec (the answer's first
/// format that it offered, sent with the answer's number), the peer's RTP
/// address, the direction and the rejected streams.
#[test]
fn the_offerer_reads_codec_address_and_direction_from_the_answer_7() -> Result<(), Box<dyn std::error::Error>> {
    let mut alice = LocalSession::new("alice", 1, 1, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    let caps = Capabilities::new(vec![
        MediaCapability::audio(vec![Codec::pcmu(), Codec::opus(111), Codec::telephone_event(101)]),
        MediaCapability::new("video", "RTP/AVP", vec![Codec::new("H264", 90_000, 96)]),
    ]);
    let addr = |p| SocketAddr::new(alice.address(), p);
    let ours = offer(&caps, &[addr(49170), addr(51372)], &mut alice)?;
    // The peer prefers opus, numbers it 98 and DTMF 100, lists a codec we
    // never offered first, sends from another address for audio, rejects
    // video, and holds us.
    let reply = "v=0\no=bob 7 1 IN IP4 203.0.113.5\ns=-\nc=IN IP4 203.0.113.5\nt=0 0\n\
                 m=audio 40000 RTP/AVP 3 98 0 100\nc=IN IP6 2001:db8::5\na=rtpmap:98 opus/48000/2\na=fmtp:98 stereo=1\n\
                 a=rtpmap:100 telephone-event/8000\na=fmtp:100 0-15\na=ptime:40\na=sendonly\n\
                 m=video 0 RTP/AVP 96\n";
    let result = negotiated(&ours.borrowed(), &parse(reply)?)?;
    let audio = ActiveStream {
        kind: "audio".to_owned(),
        remote: "[2001:db8::5]:40000".parse()?,
        direction: Direction::RecvOnly,
        codec: sipline::sdp::NegotiatedCodec {
            name: "opus".to_owned(),
            clock_rate: 48_000,
            channels: 2,
            send_payload_type: 98,
            receive_payload_type: 111,
            fmtp: Some("stereo=1".to_owned()),
        },
        telephone_event: Some(sipline::sdp::NegotiatedCodec {
            name: "telephone-event".to_owned(),
            clock_rate: 8000,
            channels: 1,
            send_payload_type: 100,
            receive_payload_type: 101,
            fmtp: Some("0-15".to_owned()),
        }),
        ptime: Some(40),
    };
    assert_eq!(result.streams, [Stream::Active(audio), Stream::Rejected { kind: "video".to_owned() }]);
    Ok(())
}

/// Both sides with this crate: our offer, answered by us, read by both;
/// each side sends with the other's numbers (RFC 3264 §5.1, §6.1).
#[test]
fn offerer_and_answerer_agree_on_both_sides_6_1() -> Result<(), Box<dyn std::error::Error>> {
    let mut alice = LocalSession::new("alice", 1, 1, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    let mut caps_a = Capabilities::telephony();
    caps_a.media[0].codecs.retain(|c| c.name != "PCMU");
    let made = offer(&caps_a, &[SocketAddr::new(alice.address(), 49170)], &mut alice)?;
    let text = made.to_string();
    let offered = parse(&text)?;
    let mut caps_b = Capabilities::telephony();
    caps_b.media[0].codecs.reverse();
    let replied = answer(&offered, &caps_b, &ports(&[40000]), &mut bob())?;
    let reply = replied.to_string();
    let a = negotiated(&offered, &parse(&reply)?)?;
    let b = Negotiated::as_answerer(&offered, &parse(&reply)?)?;
    let (a, b) = (a.active("audio").ok_or("a")?, b.active("audio").ok_or("b")?);
    assert_eq!((a.codec.name.as_str(), a.codec.send_payload_type), ("PCMA", 8));
    assert_eq!(
        (a.codec.send_payload_type, a.codec.receive_payload_type),
        (b.codec.receive_payload_type, b.codec.send_payload_type)
    );
    assert_eq!((a.remote, b.remote), ("203.0.113.5:40000".parse()?, "198.51.100.1:49170".parse()?));
    assert_eq!((a.direction, b.direction), (Direction::SendRecv, Direction::SendRecv));
    assert_eq!(a.telephone_event.as_ref().map(|t| t.send_payload_type), Some(101));
    Ok(())
}

/// The owned form keeps everything a parsed description has (RFC 8866
/// §5's example, byte for byte) and is written by the same writer.
#[test]
fn an_owned_description_keeps_and_writes_back_everything() -> Result<(), Box<dyn std::error::Error>> {
    let text = "v=0\r\no=jdoe 3724394400 3724394405 IN IP4 198.51.100.1\r\ns=Call to John Smith\r\n\
                i=SDP Offer #1\r\nu=http://www.jdoe.example.com/home.html\r\ne=Jane Doe <jane@jdoe.example.com>\r\n\
                p=+1 617 555-6011\r\nc=IN IP4 198.51.100.1\r\nb=AS:64\r\nt=0 0\r\nr=604800 3600 0 90000\r\nk=prompt\r\n\
                a=recvonly\r\nm=audio 49170 RTP/AVP 0\r\nm=audio 49180/2 RTP/AVP 0\r\ni=second\r\nb=AS:32\r\n\
                m=video 51372 RTP/AVP 99\r\nc=IN IP6 2001:db8::2\r\na=rtpmap:99 h263-1998/90000\r\n";
    let owned = {
        let parsed = parse(text)?;
        parsed.to_owned_description()
    };
    assert_eq!(owned.to_string(), text);
    assert_eq!(owned.borrowed(), parse(text)?);
    assert_eq!(owned.direction_of(0), Some(Direction::RecvOnly));
    assert_eq!(OwnedDescription::parse(text.as_bytes())?, owned);
    Ok(())
}

mod property {
    use super::*;
    use proptest::prelude::*;

    fn line(pattern: &'static str) -> impl Strategy<Value = String> {
        proptest::string::string_regex(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"))
    }

    fn media() -> impl Strategy<Value = String> {
        let m = line(
            "m=(audio|audio|video|text|AUDIO) (0|49170|49170|[0-9]{1,5}) (RTP/AVP|RTP/AVP|RTP/AVP|rtp/avp|RTP/SAVP|UDP/BFCP)\
             ( (0|8|9|18|3|96|97|101|111|[0-9]{1,3}|0[0-9]|[a-z*+]{1,2})){0,5}",
        );
        let c = proptest::option::of(line(
            "c=IN IP(4|6) (0\\.0\\.0\\.0|192\\.0\\.2\\.[0-9]{1,3}|::|2001:db8::1|host\\.example)(/[0-9])?",
        ));
        let attributes = proptest::collection::vec(
            prop_oneof![
                line("a=rtpmap:(0|8|96|97|101|111|[0-9]{1,3}) (PCMU|pcma|G722|opus|telephone-event|H264|CN|x)/(8000|48000|90000|[0-9]{1,6})(/(1|2|x| 2))?"),
                line("a=fmtp:(96|97|101|111|[0-9]{1,3}) [0-9,-]{0,10}"),
                line("a=(sendrecv|sendonly|recvonly|inactive|ptime:[0-9]{1,3}|ptime:x)"),
            ],
            0..6,
        );
        (m, c, attributes).prop_map(|(m, c, a)| {
            let mut lines = vec![m];
            lines.extend(c);
            lines.extend(a);
            lines.join("\r\n")
        })
    }

    fn offer_strategy() -> impl Strategy<Value = String> {
        let c = proptest::option::weighted(0.8, line("c=IN IP4 (0\\.0\\.0\\.0|198\\.51\\.100\\.1|host\\.example)"));
        let direction = proptest::option::of(line("a=(sendonly|recvonly|inactive)"));
        (c, direction, proptest::collection::vec(media(), 0..5)).prop_map(|(c, d, media)| {
            let mut lines = vec!["v=0".to_owned(), "o=- 1 1 IN IP4 198.51.100.1".to_owned(), "s=-".to_owned()];
            lines.extend(c);
            lines.push("t=0 0".to_owned());
            lines.extend(d);
            lines.extend(media);
            lines.join("\r\n")
        })
    }

    proptest! {
        // About one case in eight answers an active stream: run enough.
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// `answer` never panics on a parsed offer; what it answers has
        /// the offer's m= lines (RFC 3264 §6), kinds and protocols, keeps
        /// disabled streams disabled, uses only offered formats, never
        /// allows a direction the offer does not (§6.1), parses back to
        /// itself, and reads back as a negotiation.
        #[test]
        fn answer_never_panics_and_keeps_the_offers_shape(text in offer_strategy(), hold in any::<bool>(), local in 0usize..=5) {
            let Ok(offered) = SessionDescription::parse(text.as_bytes()) else { return Ok(()) };
            let mut caps = Capabilities::telephony();
            caps.media.push(MediaCapability::new("video", "RTP/AVP", vec![Codec::new("H264", 90_000, 96)]));
            let mut session = bob();
            if hold {
                let _ = offer(&caps, &ports(&[1, 2]), &mut session);
                prop_assert!(session.hold().is_ok());
            }
            let addresses = ports(&[40000, 40002, 40004, 40006, 40008][..local]);
            let Ok(ours) = answer(&offered, &caps, &addresses, &mut session) else { return Ok(()) };
            prop_assert_eq!(ours.media.len(), offered.media.len());
            let written = ours.to_string();
            let again = SessionDescription::parse(written.as_bytes());
            prop_assert!(again.is_ok(), "{written}");
            prop_assert_eq!(again.map(|a| a.to_owned_description()).ok(), Some(ours.clone()));
            for (index, (o, a)) in offered.media.iter().zip(&ours.media).enumerate() {
                prop_assert_eq!((o.kind, o.proto), (a.kind.as_str(), a.proto.as_str()));
                if o.port == 0 {
                    prop_assert_eq!(a.port, 0);
                }
                if a.port != 0 {
                    prop_assert!(a.formats.iter().all(|f| o.formats.contains(&f.as_str())));
                    let offered_direction = offered.direction_of(index).unwrap_or(Direction::SendRecv);
                    let answered = ours.direction_of(index).unwrap_or(Direction::SendRecv);
                    prop_assert_eq!(answered.and(offered_direction.reversed()), answered);
                    if hold {
                        prop_assert!(!answered.receives());
                    }
                }
            }
            match Negotiated::as_answerer(&offered, &ours.borrowed()) {
                Ok(n) => prop_assert_eq!(n.streams.len(), offered.media.len()),
                Err(e) => prop_assert!(matches!(e, OfferAnswerError::Address { .. }), "{e}"),
            }
            prop_assert!(negotiated(&offered, &ours.borrowed()).is_ok());
        }
    }
}
