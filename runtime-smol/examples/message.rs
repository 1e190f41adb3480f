//! Two endpoints on loopback: one answers MESSAGE requests, the other
//! sends one and prints the answer.
//!
//! ```sh
//! cargo run -p sipline-smol --example message
//! ```

use sipline::endpoint::{EndpointConfig, Event, Request};
use sipline::transport::Transport;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(async {
        let config = EndpointConfig::new("sip:bob@127.0.0.1").listen(Transport::Udp, "127.0.0.1:0".parse()?);
        let (bob, mut events) = sipline_smol::bind(config).await?;
        let at = bob.local_addr(Transport::Udp).ok_or("no UDP address")?;
        println!("bob listens on udp {at}");
        let answering = bob.clone();
        smol::spawn(async move {
            while let Some(event) = events.next().await {
                if let Event::Incoming { incoming, method, request, .. } = event {
                    println!("bob got a {method} ({} bytes)", request.len());
                    let _ = answering.respond(incoming, 200, "OK").await;
                }
            }
        })
        .detach();

        let (alice, _events) = sipline_smol::bind(EndpointConfig::new("sip:alice@127.0.0.1")).await?;
        let target = format!("sip:bob@{at}");
        let answer = alice.send(Request::message(&target, "text/plain", b"Hello, Bob".to_vec())).await?;
        println!("alice got {} {}", answer.code, answer.reason);

        alice.shutdown().await;
        bob.shutdown().await;
        Ok(())
    })
}
