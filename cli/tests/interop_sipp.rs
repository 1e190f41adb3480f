//! SIPp's built-in `uac` scenario against `sipline listen --answer`, over
//! UDP and TCP: every call (INVITE, 200 with SDP, ACK, BYE) succeeds for
//! SIPp, and sipline prints each INVITE, ACK and BYE. sipline runs under
//! `timeout` in a process group of its own, stopped on drop; SIPp is
//! bounded by the harness (`sipline_tests::kamailio::Sipp`).

mod support;

use sipline::transport::Transport;
use sipline_tests::kamailio::Sipp;
use std::net::SocketAddr;
use support::Listener;

const CALLS: u32 = 5;

fn sipp_uac_calls_listen(transport: Transport) {
    let name = transport.as_str().to_ascii_lowercase();
    let mut listen = Listener::start(&["listen", "--answer", "--bind", "127.0.0.1:0", "--transport", &name]);
    let bound = listen.lines_starting(&format!("bound {name} "), 1);
    let at: SocketAddr = bound[0].rsplit(' ').next().and_then(|a| a.parse().ok()).expect("bound address");
    let out = Sipp::builtin("uac").remote(at).transport(transport).calls(CALLS).run();
    assert!(out.success(), "SIPp uac -> sipline listen over {name} failed:\n{out}\nsipline: {:#?}", listen.seen);
    // SIPp got a 200 with an SDP answer on loopback.
    let ok = out
        .messages
        .split("message received")
        .find(|m| m.contains("\nSIP/2.0 200 ") && m.contains("INVITE"))
        .unwrap_or_else(|| panic!("no 200 to an INVITE:\n{out}"));
    assert!(ok.contains("application/sdp") && ok.contains("c=IN IP4 127.0.0.1"), "no SDP answer:\n{ok}");
    for prefix in ["INVITE from ", "ACK", "BYE from "] {
        assert_eq!(listen.lines_starting(prefix, CALLS).len(), CALLS as usize, "{prefix}");
    }
}

#[test]
fn sipp_uac_calls_sipline_listen_over_udp() {
    sipp_uac_calls_listen(Transport::Udp);
}

#[test]
fn sipp_uac_calls_sipline_listen_over_tcp() {
    sipp_uac_calls_listen(Transport::Tcp);
}
