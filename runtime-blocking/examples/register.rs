//! Registers an address of record (answering the registrar's digest
//! challenge), sends one MESSAGE once registered, prints the answer and
//! shuts down, which unregisters.
//!
//! ```sh
//! cargo run -p sipline-blocking --example register -- [AOR] [REGISTRAR] [USER] [PASSWORD] [TARGET]
//! ```
//!
//! Defaults: `sip:alice@127.0.0.1 sip:127.0.0.1:5060 alice secret sip:bob@127.0.0.1`.

use sipline::auth::DigestCredentials;
use sipline::endpoint::{EndpointConfig, Event, RegistrationConfig, RegistrationState, Request};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |n: usize, default: &str| std::env::args().nth(n).unwrap_or_else(|| default.to_owned());
    let mut config = EndpointConfig::new(&arg(1, "sip:alice@127.0.0.1"));
    config.registration = Some(RegistrationConfig::new(&arg(2, "sip:127.0.0.1:5060")));
    config.credentials.push(DigestCredentials::new(arg(3, "alice"), arg(4, "secret")));
    let (endpoint, mut events) = sipline_blocking::bind(config)?;

    let deadline = Instant::now() + Duration::from_secs(10);
    let contact = loop {
        match events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Event::Registration(RegistrationState::Registered { contact, .. })) => break Ok(contact),
            Ok(Event::Registration(RegistrationState::Failed { error, .. })) => break Err(error.to_string()),
            Ok(_) => {}
            Err(e) => break Err(format!("no answer within 10 s ({e})")),
        }
    };
    // On failure the process ends, closing the sockets.
    println!("registered as {}", contact.map_err(|why| format!("registration failed: {why}"))?);

    let target = arg(5, "sip:bob@127.0.0.1");
    match endpoint.send(Request::message(&target, "text/plain", b"Hello from sipline".to_vec())) {
        Ok(answer) => println!("{target} answered {} {}", answer.code, answer.reason),
        Err(e) => println!("MESSAGE failed: {e}"),
    }
    endpoint.shutdown(); // unregisters first
    Ok(())
}
