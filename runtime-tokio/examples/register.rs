//! Registers an address of record (answering the registrar's digest
//! challenge), sends one MESSAGE once registered, prints the answer and
//! shuts down, which unregisters.
//!
//! ```sh
//! cargo run -p sipline-tokio --example register -- [AOR] [REGISTRAR] [USER] [PASSWORD] [TARGET]
//! ```
//!
//! Defaults: `sip:alice@127.0.0.1 sip:127.0.0.1:5060 alice secret sip:bob@127.0.0.1`.

use sipline::auth::DigestCredentials;
use sipline::endpoint::{EndpointConfig, Event, RegistrationConfig, RegistrationState, Request};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |n: usize, default: &str| std::env::args().nth(n).unwrap_or_else(|| default.to_owned());
    let mut config = EndpointConfig::new(&arg(1, "sip:alice@127.0.0.1"));
    config.registration = Some(RegistrationConfig::new(&arg(2, "sip:127.0.0.1:5060")));
    config.credentials.push(DigestCredentials::new(arg(3, "alice"), arg(4, "secret")));
    let (endpoint, mut events) = sipline_tokio::bind(config).await?;

    let registered = async {
        while let Some(event) = events.next().await {
            match event {
                Event::Registration(RegistrationState::Registered { contact, .. }) => return Ok(contact),
                Event::Registration(RegistrationState::Failed { error, .. }) => return Err(error.to_string()),
                _ => {}
            }
        }
        Err("the endpoint stopped".to_owned())
    };
    let registered = tokio::time::timeout(Duration::from_secs(10), registered).await;
    // On failure the process ends, closing the sockets.
    let contact = registered.unwrap_or_else(|_| Err("no answer within 10 s".to_owned()));
    println!("registered as {}", contact.map_err(|why| format!("registration failed: {why}"))?);

    let target = arg(5, "sip:bob@127.0.0.1");
    match endpoint.send(Request::message(&target, "text/plain", b"Hello from sipline".to_vec())).await {
        Ok(answer) => println!("{target} answered {} {}", answer.code, answer.reason),
        Err(e) => println!("MESSAGE failed: {e}"),
    }
    endpoint.shutdown().await; // unregisters first
    Ok(())
}
