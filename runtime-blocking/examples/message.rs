//! Two endpoints on loopback: one answers MESSAGE requests on a thread of
//! its own, the other sends one and prints the answer.
//!
//! ```sh
//! cargo run -p sipline-blocking --example message
//! ```

use sipline::endpoint::{EndpointConfig, Event, Request};
use sipline::transport::Transport;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = EndpointConfig::new("sip:bob@127.0.0.1").listen(Transport::Udp, "127.0.0.1:0".parse()?);
    let (bob, events) = sipline_blocking::bind(config)?;
    let at = bob.local_addr(Transport::Udp).ok_or("no UDP address")?;
    println!("bob listens on udp {at}");
    let answering = bob.clone();
    let answerer = std::thread::spawn(move || {
        // The iterator ends when bob shuts down.
        for event in events {
            if let Event::Incoming { incoming, method, request, .. } = event {
                println!("bob got a {method} ({} bytes)", request.len());
                let _ = answering.respond(incoming, 200, "OK");
            }
        }
    });

    let (alice, _events) = sipline_blocking::bind(EndpointConfig::new("sip:alice@127.0.0.1"))?;
    let target = format!("sip:bob@{at}");
    let answer = alice.send(Request::message(&target, "text/plain", b"Hello, Bob".to_vec()))?;
    println!("alice got {} {}", answer.code, answer.reason);

    alice.shutdown();
    bob.shutdown();
    answerer.join().map_err(|_| "answerer panicked")?;
    Ok(())
}
