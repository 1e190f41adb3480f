//! The commands that talk to the network: `listen`, `register`, `message`.
//! Each is one endpoint on `sipline-tokio`.

use crate::tls_files;
use sipline::auth::DigestCredentials;
use sipline::endpoint::{EndpointConfig, EndpointState, Event, RegistrationConfig, RegistrationState, Request};
use sipline::transport::{TlsConfig, Transport};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

pub(crate) const USAGE: &str = "\
usage: sipline listen [--bind ADDR] [--transport udp|tcp|tls] [options]
       sipline register URI --registrar URI [--user U --password P] [--expires N] [options]
       sipline message TARGET TEXT [--from URI] [--registrar URI | --proxy URI] [--user U --password P] [options]
options: --bind ADDR (default 0.0.0.0:0)  --transport udp|tcp|tls (default udp)
         --cert FILE --key FILE (TLS identity)  --ca FILE (trusted roots; default: the system's)
         -v (print every SIP message sent and received)";

/// Parsed options.
#[derive(Default)]
struct Options {
    positional: Vec<String>,
    bind: Option<SocketAddr>,
    transport: Option<Transport>,
    registrar: Option<String>,
    proxy: Option<String>,
    from: Option<String>,
    user: Option<String>,
    password: Option<String>,
    expires: Option<u32>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    verbose: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "-v" | "--verbose" => o.verbose = true,
            "--bind" => o.bind = Some(value()?.parse().map_err(|e| format!("--bind: {e}"))?),
            "--transport" => {
                o.transport = Some(match value()?.to_ascii_lowercase().as_str() {
                    "udp" => Transport::Udp,
                    "tcp" => Transport::Tcp,
                    "tls" => Transport::Tls,
                    t => return Err(format!("unknown transport {t}")),
                });
            }
            "--registrar" => o.registrar = Some(value()?),
            "--proxy" => o.proxy = Some(value()?),
            "--from" => o.from = Some(value()?),
            "--user" => o.user = Some(value()?),
            "--password" => o.password = Some(value()?),
            "--expires" => o.expires = Some(value()?.parse().map_err(|e| format!("--expires: {e}"))?),
            "--cert" => o.cert = Some(value()?.into()),
            "--key" => o.key = Some(value()?.into()),
            "--ca" => o.ca = Some(value()?.into()),
            s if s.starts_with('-') && s.len() > 1 => return Err(format!("unknown option {s}")),
            s => o.positional.push(s.to_owned()),
        }
    }
    Ok(o)
}

impl Options {
    fn transport(&self) -> Transport {
        self.transport.unwrap_or(Transport::Udp)
    }

    /// An endpoint configuration for `aor` with these options.
    fn config(&self, aor: &str) -> Result<EndpointConfig, String> {
        let mut c = EndpointConfig::new(aor);
        c.default_transport = self.transport();
        let bind = self.bind.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut tls = TlsConfig::default();
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            tls = tls_files::with_identity_files(tls, cert, key).map_err(|e| e.to_string())?;
        }
        tls = match &self.ca {
            Some(ca) => tls_files::with_roots_file(tls, ca).map_err(|e| e.to_string())?,
            None if self.transport() == Transport::Tls => {
                tls_files::with_system_roots(tls).map_err(|e| e.to_string())?
            }
            None => tls,
        };
        let has_identity = !tls.chain.is_empty();
        c.transport.tls = tls;
        // TLS is listened on only with an identity; a TLS client without
        // one listens on TCP.
        let listen = match self.transport() {
            Transport::Tls if !has_identity => Transport::Tcp,
            t => t,
        };
        c = c.listen(listen, bind);
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            c.credentials.push(DigestCredentials::new(user, password));
        }
        c.outbound_proxy.clone_from(&self.proxy);
        if let Some(registrar) = &self.registrar {
            let mut r = RegistrationConfig::new(registrar);
            if let Some(e) = self.expires {
                r.expires = e;
            }
            c.registration = Some(r);
        }
        Ok(c)
    }
}

fn usage_error(why: &str) -> ExitCode {
    eprintln!("{why}\n{USAGE}");
    ExitCode::from(2)
}

/// Runs `command` (`listen`, `register`, `message`) with `args`.
pub(crate) fn run(command: &str, args: &[String]) -> ExitCode {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    if options.verbose {
        crate::wire_log::install();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        match command {
            "listen" => listen(&options).await,
            "register" => register(&options).await,
            _ => message(&options).await,
        }
    })
}

async fn bind(config: EndpointConfig) -> Result<(sipline_tokio::Endpoint, sipline_tokio::Events), ExitCode> {
    match sipline_tokio::bind(config).await {
        Ok((endpoint, events)) => {
            for (transport, addr) in endpoint.local_addrs() {
                println!("bound {} {addr}", transport.as_str().to_ascii_lowercase());
            }
            Ok((endpoint, events))
        }
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(1))
        }
    }
}

/// Prints an event; answers what the listener answers. `false` at the end.
async fn show(endpoint: &sipline_tokio::Endpoint, event: Event) -> bool {
    match event {
        Event::Message { from, content_type, body, .. } => {
            let ct = content_type.unwrap_or_else(|| "-".to_owned());
            println!("MESSAGE from {from} ({ct}): {}", String::from_utf8_lossy(&body));
        }
        Event::Incoming { incoming, method, request, .. } => {
            println!("{method} request:\n{}", String::from_utf8_lossy(&request));
            let _ = endpoint.respond(incoming, 200, "OK").await;
        }
        Event::Registration(state) => println!("registration: {}", describe(&state)),
        Event::State(state) => println!("endpoint: {state:?}"),
        Event::ShutDown => return false,
        _ => {}
    }
    true
}

fn describe(state: &RegistrationState) -> String {
    match state {
        RegistrationState::Registered { expires, contact, pub_gruu, .. } => {
            let gruu = pub_gruu.as_deref().map(|g| format!(", public GRUU {g}")).unwrap_or_default();
            format!("registered as {contact} for {} s{gruu}", expires.as_secs())
        }
        RegistrationState::Failed { error, retry_in } => {
            format!("failed ({error}), retrying in {} s", retry_in.as_secs())
        }
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Prints events until a signal, then shuts down (unregistering first).
async fn serve(endpoint: sipline_tokio::Endpoint, mut events: sipline_tokio::Events) -> ExitCode {
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            event = events.next() => match event {
                Some(e) => {
                    if !show(&endpoint, e).await {
                        return ExitCode::SUCCESS;
                    }
                }
                None => return ExitCode::SUCCESS,
            },
        }
    }
    println!("shutting down");
    endpoint.shutdown().await;
    while let Some(e) = events.next().await {
        show(&endpoint, e).await;
    }
    ExitCode::SUCCESS
}

async fn listen(o: &Options) -> ExitCode {
    if !o.positional.is_empty() {
        return usage_error("listen takes no arguments");
    }
    let config = match o.config("sip:sipline@sipline.invalid") {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    match bind(config).await {
        Ok((endpoint, events)) => serve(endpoint, events).await,
        Err(code) => code,
    }
}

async fn register(o: &Options) -> ExitCode {
    let ([aor], Some(_)) = (o.positional.as_slice(), &o.registrar) else {
        return usage_error("register needs a URI and --registrar");
    };
    let config = match o.config(aor) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    match bind(config).await {
        Ok((endpoint, events)) => serve(endpoint, events).await,
        Err(code) => code,
    }
}

/// Waits for the first registration to succeed (`true`) or fail.
async fn registered(events: &mut sipline_tokio::Events) -> bool {
    while let Some(event) = events.next().await {
        match event {
            Event::Registration(state) => {
                println!("registration: {}", describe(&state));
                match state {
                    RegistrationState::Registered { .. } => return true,
                    RegistrationState::Failed { .. } => return false,
                    _ => {}
                }
            }
            Event::State(EndpointState::Terminated) => return false,
            _ => {}
        }
    }
    false
}

async fn message(o: &Options) -> ExitCode {
    let [target, text] = o.positional.as_slice() else {
        return usage_error("message needs a TARGET and a TEXT");
    };
    if o.registrar.is_some() && o.proxy.is_some() {
        return usage_error("--registrar and --proxy exclude each other");
    }
    let from = o.from.clone().unwrap_or_else(|| {
        let user = o.user.as_deref().unwrap_or("sipline");
        let host = o
            .registrar
            .as_deref()
            .and_then(|r| sipline::message::Uri::parse(r).ok().and_then(|u| u.as_sip().map(|s| s.host().to_string())))
            .unwrap_or_else(|| "sipline.invalid".to_owned());
        format!("sip:{user}@{host}")
    });
    let config = match o.config(&from) {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let registering = config.registration.is_some();
    let (endpoint, mut events) = match bind(config).await {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    // Registering first: wait until the registrar answers.
    if registering && !registered(&mut events).await {
        endpoint.shutdown().await;
        return ExitCode::from(1);
    }
    let outcome = endpoint.send(Request::message(target, "text/plain", text.as_bytes().to_vec())).await;
    let code = match &outcome {
        Ok(r) => {
            println!("{} {}", r.code, r.reason);
            ExitCode::SUCCESS
        }
        Err(sipline::driver::Error::Failed(sipline::endpoint::RequestError::Failure(r))) => {
            println!("{} {}", r.code, r.reason);
            ExitCode::from(1)
        }
        Err(e) => {
            println!("failed: {e}");
            ExitCode::from(1)
        }
    };
    endpoint.shutdown().await;
    code
}
