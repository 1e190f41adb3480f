//! The SDP of `call` and `listen --answer` (RFC 3264 offer/answer, made by
//! `sipline::sdp`) and `call --hold-after` (RFC 3264 §8.4), end to end on
//! loopback: what the commands print and, with `-v`, the SDP on the wire.
//! Every process is stopped on drop and every wait is bounded.

mod support;

use rustix::process::Signal;
use support::cmd::{Dir, Sipline, Wire};

fn sent_request(method: &'static str) -> impl Fn(&Wire) -> bool {
    move |w| w.dir == Dir::Sent && w.is_request(method)
}

/// A scratch file holding `text`, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str, text: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sipline-media-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write the file");
        Scratch(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 path")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The offer: PCMU, PCMA and telephone-event on the discard port, sendrecv;
/// the answer takes the same three (RFC 3264 §6.1) at loopback.
#[test]
fn offer_and_answer() {
    let mut listen = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer", "-v"]);
    let at = listen.bound("udp");
    let mut call = Sipline::start(&["call", &format!("sip:bob@{at}"), "--hangup-after", "0", "-v"]);
    let status = call.finish();
    assert_eq!(status.code(), Some(0), "{}", call.transcript());
    call.assert_order(&["200 OK", "BYE", "hung up"]);
    let wire = call.wire();
    let invite = wire.iter().find(|w| sent_request("INVITE")(w)).expect("the INVITE");
    assert_eq!(invite.header("Content-Type"), Some("application/sdp"), "{}", invite.text());
    let offer = invite.body();
    for line in [
        "v=0",
        "c=IN IP4 127.0.0.1",
        "m=audio 9 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=sendrecv",
    ] {
        assert!(offer.contains(&line), "{line:?} not in the offer:\n{}", invite.text());
    }
    let ok = wire.iter().find(|w| w.dir == Dir::Received && w.is_response(200, "INVITE")).expect("the 200");
    assert_eq!(ok.header("Content-Type"), Some("application/sdp"), "{}", ok.text());
    let answer = ok.body();
    for line in ["c=IN IP4 127.0.0.1", "m=audio 9 RTP/AVP 0 8 101", "a=rtpmap:101 telephone-event/8000", "a=sendrecv"] {
        assert!(answer.contains(&line), "{line:?} not in the answer:\n{}", ok.text());
    }
    listen.line("answered 200 OK");
    listen.line_starting("BYE from ");
}

/// The answer follows the caller's offer (RFC 3264 §6.1): an offer of
/// PCMA alone, sendonly, is answered with PCMA alone, recvonly.
#[test]
fn answer_follows_the_offer() {
    let offer = "v=0\r\no=caller 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendonly\r\n";
    let file = Scratch::new("pcma.sdp", offer);
    let mut listen = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer"]);
    let at = listen.bound("udp");
    let mut call =
        Sipline::start(&["call", &format!("sip:bob@{at}"), "--body", file.path(), "--hangup-after", "0", "-v"]);
    let status = call.finish();
    assert_eq!(status.code(), Some(0), "{}", call.transcript());
    let wire = call.wire();
    let invite = wire.iter().find(|w| sent_request("INVITE")(w)).expect("the INVITE");
    assert!(invite.body().contains(&"m=audio 40000 RTP/AVP 8"), "the file is the offer:\n{}", invite.text());
    let ok = wire.iter().find(|w| w.dir == Dir::Received && w.is_response(200, "INVITE")).expect("the 200");
    let answer = ok.body();
    assert!(answer.contains(&"m=audio 9 RTP/AVP 8"), "{}", ok.text());
    assert!(answer.contains(&"a=rtpmap:8 PCMA/8000"), "{}", ok.text());
    assert!(answer.contains(&"a=recvonly"), "{}", ok.text());
    assert!(!answer.iter().any(|l| l.starts_with("a=rtpmap:0 ") || l.contains("telephone-event")), "{}", ok.text());
}

/// Nothing in common (opus alone): 488 Not Acceptable Here (RFC 3261
/// §21.4.26), `call` exits 1.
#[test]
fn opus_only_offer_gets_488() {
    let offer = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n";
    let file = Scratch::new("opus.sdp", offer);
    let mut listen = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer", "-v"]);
    let at = listen.bound("udp");
    let mut call =
        Sipline::start(&["call", &format!("sip:bob@{at}"), "--body", file.path(), "--hangup-after", "0", "-v"]);
    let status = call.finish();
    assert_eq!(status.code(), Some(1), "{}", call.transcript());
    assert!(call.out.iter().any(|l| l == "488 Not Acceptable Here"), "{}", call.transcript());
    assert!(!call.out.iter().any(|l| l == "200 OK" || l == "BYE"), "{}", call.transcript());
    assert!(
        call.wire().iter().any(|w| w.dir == Dir::Received && w.is_response(488, "INVITE")),
        "{}",
        call.transcript()
    );
    listen.line("answered 488 Not Acceptable Here");
    listen.wait_wire("the 488", |w| w.dir == Dir::Sent && w.is_response(488, "INVITE"));
    assert!(
        !listen.wire().iter().any(|w| w.dir == Dir::Sent && w.is_response(200, "INVITE")),
        "{}",
        listen.transcript()
    );
}

/// `--hold-after 0`: a re-INVITE in the dialog whose offer is the first
/// one's with `a=sendonly` and the o= version one higher (RFC 3264 §8,
/// §8.4); the callee answers recvonly and says so; SIGTERM then hangs up
/// and `call` exits 0.
#[test]
fn hold_after_the_answer() {
    let mut listen = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer", "-v"]);
    let at = listen.bound("udp");
    let mut call = Sipline::start(&["call", &format!("sip:bob@{at}"), "--hold-after", "0", "-v"]);
    call.line("re-INVITE: 200 OK (held)");
    listen.line("re-INVITE: answered (held: recvonly)");
    call.signal(Signal::TERM);
    let status = call.finish();
    assert_eq!(status.code(), Some(0), "{}", call.transcript());
    call.assert_order(&["200 OK", "hold", "re-INVITE: 200 OK (held)", "BYE", "hung up"]);
    listen.assert_order(&["answered 200 OK", "ACK", "re-INVITE: answered (held: recvonly)"]);
    listen.line_starting("BYE from ");

    let wire = call.wire();
    let invites: Vec<&Wire> = wire.iter().filter(|w| sent_request("INVITE")(w)).collect();
    assert_eq!(invites.len(), 2, "{}", call.transcript());
    let (first, hold) = (invites[0], invites[1]);
    // In the dialog: same Call-ID, the callee's tag, a higher CSeq.
    assert_eq!(hold.header("Call-ID"), first.header("Call-ID"));
    assert!(hold.header("To").is_some_and(|t| t.contains(";tag=")), "{}", hold.text());
    assert!(hold.seq() > first.seq(), "{}", hold.text());
    let offer = hold.body();
    assert!(offer.contains(&"a=sendonly"), "{}", hold.text());
    assert!(!offer.contains(&"a=sendrecv"), "{}", hold.text());
    assert!(offer.contains(&"m=audio 9 RTP/AVP 0 8 101"), "{}", hold.text());
    // §8: the same session id, the version one higher.
    let (id, version) = first.sdp_origin();
    assert_eq!(hold.sdp_origin(), (id, version + 1), "{}\n{}", first.text(), hold.text());
    let answers: Vec<&Wire> = wire.iter().filter(|w| w.dir == Dir::Received && w.is_response(200, "INVITE")).collect();
    let held = answers.iter().find(|w| w.seq() == hold.seq()).expect("the 200 to the re-INVITE");
    assert!(held.body().contains(&"a=recvonly"), "{}", held.text());
    // Each 2xx to an INVITE is acknowledged (§13.2.2.4).
    let acks: Vec<&Wire> = wire.iter().filter(|w| sent_request("ACK")(w)).collect();
    assert!(acks.iter().any(|a| a.seq() == hold.seq()), "{}", call.transcript());
}

/// The callee's SDP in one session keeps its o= session id, and its version
/// grows by one when the description changes (RFC 3264 §8; RFC 6337 §5.3:
/// answers too).
#[test]
fn callee_keeps_its_origin_across_the_hold() {
    let mut listen = Sipline::start(&["listen", "--bind", "127.0.0.1:0", "--answer"]);
    let at = listen.bound("udp");
    let mut call = Sipline::start(&["call", &format!("sip:bob@{at}"), "--hold-after", "0", "-v"]);
    call.line("re-INVITE: 200 OK (held)");
    call.signal(Signal::TERM);
    let status = call.finish();
    assert_eq!(status.code(), Some(0), "{}", call.transcript());
    let wire = call.wire();
    let answers: Vec<&Wire> = wire.iter().filter(|w| w.dir == Dir::Received && w.is_response(200, "INVITE")).collect();
    let first = answers.iter().min_by_key(|w| w.seq()).expect("the first 200");
    let held = answers.iter().max_by_key(|w| w.seq()).expect("the 200 to the re-INVITE");
    let (id, version) = first.sdp_origin();
    assert_eq!(held.sdp_origin(), (id, version + 1), "{}\n{}", first.text(), held.text());
}
