//! The commands that talk to the network: `listen`, `register`, `message`,
//! `call`. Each is one endpoint on `sipline-tokio`.

use crate::args::{
    usage_error, Account, Answering, CallArgs, Command, FloodSetting, ListenArgs, Location, MessageArgs, Net,
    OverloadSetting, RegisterArgs, Seconds, ServeArgs, SubscribeArgs, UserAgent,
};
use crate::media::Media;
use crate::out::emit;
use crate::tls_files;
use serde_json::json;
use sipline::auth::DigestCredentials;
use sipline::auth::Users;
use sipline::driver::Error;
use sipline::endpoint::{
    Body, EndpointConfig, EndpointState, Event, RegistrationConfig, RegistrationState, Request, RequestError,
    ServerConfig, SessionEnd, SessionEvent, SessionId, SubState, SubscriptionEnd, SubscriptionEvent, SubscriptionId,
};
use sipline::event::{Basic, Note, Presence, Tuple};
use sipline::transport::{TlsConfig, Transport};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::num::NonZeroU16;
use std::process::ExitCode;
use std::time::Duration;

/// `--server-header` / `--user-agent`: the value, or none at all.
fn apply_user_agent(c: &mut EndpointConfig, value: Option<&str>) {
    match value {
        Some(v) if v.eq_ignore_ascii_case("none") => c.user_agent = None,
        Some(v) => c.user_agent = Some(v.to_owned()),
        None => {}
    }
}

/// An endpoint configuration for `aor` with `net`'s sockets and TLS,
/// listening on `bind`; `mutual_tls`: `--require-client-cert`.
fn endpoint_config(net: &Net, aor: &str, bind: SocketAddr, mutual_tls: bool) -> Result<EndpointConfig, String> {
    let mut c = EndpointConfig::new(aor);
    let transport = net.transport();
    c.default_transport = transport;
    let mut tls = TlsConfig::default();
    if let (Some(cert), Some(key)) = (&net.cert, &net.key) {
        tls = tls_files::with_identity_files(tls, cert, key).map_err(|e| e.to_string())?;
    }
    tls = match &net.ca {
        Some(ca) => tls_files::with_roots_file(tls, ca).map_err(|e| e.to_string())?,
        None if transport == Transport::Tls => tls_files::with_system_roots(tls).map_err(|e| e.to_string())?,
        None => tls,
    };
    let has_identity = !tls.chain.is_empty();
    if mutual_tls {
        // Mutual TLS (RFC 3261 §26.3.2.1): the roots of --ca are the
        // client certificates' issuers.
        if transport != Transport::Tls || !has_identity || net.ca.is_none() {
            return Err("--require-client-cert needs --transport tls, --cert/--key and --ca".to_owned());
        }
        tls = tls.requiring_client_certificates();
    }
    c.transport.tls = tls;
    if let Some(bytes) = net.udp_buffer {
        c.transport.udp_buffer = bytes;
    }
    // TLS is listened on only with an identity; a TLS client without
    // one listens on TCP.
    let listen = match transport {
        Transport::Tls if !has_identity => Transport::Tcp,
        t => t,
    };
    Ok(c.listen(listen, bind))
}

/// `account`'s credentials, outbound proxy and registration (its
/// lifetime `expires`) into `c`.
fn apply_account(c: &mut EndpointConfig, account: &Account, expires: Option<u32>) -> Result<(), String> {
    if let (Some(user), Some(password)) = (&account.user, account.password()?) {
        c.credentials.push(DigestCredentials::new(user, &password));
    }
    c.outbound_proxy.clone_from(&account.proxy);
    if let Some((registrar, fallbacks)) = account.registrar.split_first() {
        let mut r = RegistrationConfig::new(registrar).with_fallbacks(fallbacks.to_vec());
        if let Some(e) = expires {
            r.expires = e;
        }
        c.registration = Some(r);
    }
    Ok(())
}

/// Runs a network command.
pub(crate) fn run(command: Command) -> ExitCode {
    let command = match command {
        Command::Serve(serve) => match serve.with_config_file() {
            Ok(merged) => Command::Serve(merged),
            Err(e) => return usage_error("serve", &e),
        },
        other => other,
    };
    let (verbose, summaries, ladder) = match &command {
        Command::Serve(a) => (a.verbose, !a.quiet, a.ladder),
        Command::Listen(a) => (a.verbosity.verbose, false, a.verbosity.ladder),
        Command::Register(a) => (a.verbosity.verbose, false, a.verbosity.ladder),
        Command::Message(a) => (a.verbosity.verbose, false, a.verbosity.ladder),
        Command::Call(a) => (a.verbosity.verbose, false, a.verbosity.ladder),
        Command::Subscribe(a) => (a.verbosity.verbose, false, a.verbosity.ladder),
        Command::Parse(_) | Command::Completions(_) => (false, false, false),
    };
    let json = match &command {
        Command::Listen(a) => a.verbosity.json,
        Command::Register(a) => a.verbosity.json,
        Command::Message(a) => a.verbosity.json,
        Command::Call(a) => a.verbosity.json,
        Command::Subscribe(a) => a.verbosity.json,
        _ => false,
    };
    crate::out::set_json(json);
    // Always: failed TLS handshakes are printed (at info, `sipline::tls`).
    crate::wire_log::install(verbose, summaries, ladder);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        // Freed memory goes back to the system after a burst (heap.rs).
        tokio::spawn(crate::heap::trim_periodically());
        match &command {
            Command::Listen(a) => listen(a).await,
            Command::Serve(a) => serve_domain(a).await,
            Command::Register(a) => register(a).await,
            Command::Call(a) => call(a).await,
            Command::Subscribe(a) => subscribe(a).await,
            Command::Message(a) => message(a).await,
            Command::Parse(_) | Command::Completions(_) => ExitCode::from(2),
        }
    })
}

async fn bind_endpoint(config: EndpointConfig) -> Result<(sipline_tokio::Endpoint, sipline_tokio::Events), ExitCode> {
    match sipline_tokio::bind(config).await {
        Ok((endpoint, events)) => {
            for (transport, addr) in endpoint.local_addrs() {
                let t = transport.as_str().to_ascii_lowercase();
                emit("bound", &format!("bound {t} {addr}"), json!({"transport": t, "address": addr.to_string()}));
            }
            Ok((endpoint, events))
        }
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(1))
        }
    }
}

/// What `listen` and `register` do with incoming sessions: answer them
/// with `answer` (200 with that body), or reject them 486; with
/// `--presence`, presence subscriptions; with `--answer`, transfers.
#[derive(Clone)]
pub(crate) struct Calls {
    answer: Option<Answer>,
    /// The caller of each live incoming session.
    callers: HashMap<SessionId, String>,
    /// Print nothing per request or call (`--quiet`).
    quiet: bool,
    /// `--presence`: open or not, and the note.
    presence: Option<(bool, Option<String>)>,
    /// Calls placed for a transfer, and the transfer's subscription.
    transfers: HashMap<SessionId, SubscriptionId>,
    /// Each answered call's SDP side (one o= session id, its version
    /// counting up over re-INVITEs, RFC 3264 §8).
    media: HashMap<SessionId, Media>,
}

/// How an incoming INVITE or re-INVITE is answered.
enum Reply {
    Accept(Body),
    Reject(u16, &'static str),
}

/// One event line (`out::emit`: text, or JSON with `--json`) unless
/// `calls` is quiet: `say!(calls, KIND, FIELDS, "format", args…)`.
macro_rules! say {
    ($calls:expr, $kind:expr, $fields:expr, $($arg:tt)*) => {
        if !$calls.quiet {
            emit($kind, &format!($($arg)*), $fields);
        }
    };
}

/// The body `listen --answer` answers with.
#[derive(Clone)]
enum Answer {
    /// The `--body` file (`application/sdp`).
    File(Vec<u8>),
    /// A minimal SDP with the address the INVITE reached.
    Builtin,
}

impl Calls {
    /// Incoming sessions answered as `o` says (`--answer`, `--body`,
    /// `--presence`).
    fn new(o: &Answering) -> Result<Calls, String> {
        let answer = match (&o.body, o.answer) {
            (Some(_), false) => return Err("--body needs --answer".to_owned()),
            (Some(path), true) => {
                Some(Answer::File(std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?))
            }
            (None, true) => Some(Answer::Builtin),
            (None, false) => None,
        };
        Ok(Calls {
            answer,
            callers: HashMap::new(),
            quiet: o.quiet,
            presence: o.presence.clone().map(|p| (p.open, p.note)),
            transfers: HashMap::new(),
            media: HashMap::new(),
        })
    }

    /// The event packages served (`EndpointConfig::events`): presence with
    /// `--presence`, transfers (REFER) with `--answer`.
    fn events(&self) -> Vec<String> {
        let mut events = Vec::new();
        if self.presence.is_some() {
            events.push("presence".to_owned());
        }
        if self.answer.is_some() {
            events.push("refer".to_owned());
        }
        events
    }

    /// The answer to an INVITE (or re-INVITE, `answer` forced to the
    /// built-in SDP) with `offer` in `session`, which reached `local` from
    /// `remote`.
    fn reply(
        &mut self,
        session: SessionId,
        (local, remote): (Option<SocketAddr>, SocketAddr),
        answer: Option<&Answer>,
        offer: Option<&Body>,
    ) -> Reply {
        match answer {
            None => Reply::Reject(486, "Busy Here"),
            Some(Answer::File(bytes)) => Reply::Accept(Body::sdp(bytes.clone())),
            Some(Answer::Builtin) => {
                let offer = offer.filter(|b| b.content_type.eq_ignore_ascii_case("application/sdp"));
                let media = self.media.entry(session).or_insert_with(|| Media::new(media_ip(local, remote)));
                match media.answer(offer.map(|b| b.bytes.as_slice())) {
                    Some(sdp) => Reply::Accept(Body::sdp(sdp)),
                    None => Reply::Reject(488, "Not Acceptable Here"),
                }
            }
        }
    }

    /// Whether incoming calls (and transfers) are answered.
    pub(crate) fn answers(&self) -> bool {
        self.answer.is_some()
    }

    /// Prints `line` unless quiet.
    pub(crate) fn say(&self, kind: &str, line: &str) {
        say!(self, kind, json!({}), "{line}");
    }

    /// A call placed to `target` for the transfer `subscription`.
    pub(crate) fn placed(&mut self, call: SessionId, subscription: SubscriptionId, target: &str) {
        self.transfers.insert(call, subscription);
        self.callers.insert(call, target.to_owned());
    }

    /// The transfer a placed call reports to, while it does.
    pub(crate) fn transfer_of(&self, call: SessionId) -> Option<SubscriptionId> {
        self.transfers.get(&call).copied()
    }

    /// The placed call's outcome is reported: no more reports.
    pub(crate) fn transferred(&mut self, call: SessionId) {
        self.transfers.remove(&call);
    }

    /// Our presence document for `entity` (RFC 3863).
    fn pidf(&self, entity: &str) -> Option<Body> {
        let (open, note) = self.presence.as_ref()?;
        let basic = if *open { Basic::Open } else { Basic::Closed };
        let mut tuple = Tuple::new("sipline", basic);
        if let Some(n) = note {
            tuple = tuple.with_note(Note::new(n.as_str()));
        }
        let doc = Presence::new(entity, tuple).to_body().ok()?;
        Some(Body::new(Presence::CONTENT_TYPE, doc))
    }
}

/// The address to name in SDP: the bound one, or for a wildcard the one
/// the system would send to `remote` from (asked of a connected UDP
/// socket, which sends nothing), or loopback.
pub(crate) fn media_ip(local: Option<SocketAddr>, remote: SocketAddr) -> IpAddr {
    if let Some(l) = local.filter(|l| !l.ip().is_unspecified()) {
        return l.ip();
    }
    source_toward(remote.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The source address the system would send to `remote` from (its
/// routing table's choice; loopback for a loopback peer), asked of a
/// connected UDP socket, which sends nothing.
fn source_toward(remote: IpAddr) -> std::io::Result<IpAddr> {
    let any = if remote.is_ipv4() { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
    let socket = std::net::UdpSocket::bind((any, 0))?;
    // Any port: connecting a UDP socket only picks the route.
    socket.connect((remote, 9))?;
    Ok(socket.local_addr()?.ip())
}

/// Where a client without `--bind` listens: the address it reaches
/// `target` (a SIP URI: the proxy, the registrar or the request's target)
/// from, port 0 — one interface, not all of them. A name is looked up
/// (A/AAAA, as the transport does for a name without SRV records).
fn bind_toward(target: &str) -> Result<SocketAddr, String> {
    let uri = sipline::message::Uri::parse(target).map_err(|e| format!("{target}: {e}"))?;
    let sip = uri.as_sip().ok_or_else(|| format!("{target}: not a SIP URI"))?;
    let remote = if let Some(ip) = sip.host().ip() {
        ip
    } else {
        let name = sip.host_str();
        (name, sip.port().unwrap_or(5060))
            .to_socket_addrs()
            .map_err(|e| format!("cannot look up {name}: {e}"))?
            .next()
            .ok_or_else(|| format!("{name} has no address"))?
            .ip()
    };
    let local = source_toward(remote).map_err(|e| format!("no local address reaches {remote}: {e}"))?;
    Ok(SocketAddr::new(local, 0))
}

/// Prints an event; answers what the listener answers. `false` at the end.
async fn show(endpoint: &sipline_tokio::Endpoint, calls: &mut Calls, event: Event) -> bool {
    match event {
        Event::Message { from, content_type, body, .. } => {
            let ct = content_type.unwrap_or_else(|| "-".to_owned());
            let text = String::from_utf8_lossy(&body);
            say!(
                calls,
                "message",
                json!({"from": from, "content_type": ct, "body": text}),
                "MESSAGE from {from} ({ct}): {text}"
            );
        }
        Event::Incoming { incoming, method, request, .. } => {
            let text = String::from_utf8_lossy(&request);
            say!(calls, "request", json!({"method": method, "request": text}), "{method} request:\n{text}");
            let _ = endpoint.respond(incoming, 200, "OK").await;
        }
        Event::IncomingSession { session, from, source, body, .. } => {
            say!(calls, "incoming_call", json!({"from": from}), "INVITE from {from}");
            let local = source.local.or_else(|| endpoint.local_addr(source.transport));
            let answer = calls.answer.clone();
            let answered = match calls.reply(session, (local, source.remote), answer.as_ref(), body.as_ref()) {
                Reply::Accept(body) => endpoint.accept(session, Some(&body)).await.map(|()| "200 OK"),
                Reply::Reject(code, reason) => endpoint.reject(session, code, reason, &[]).await.map(|()| {
                    if code == 486 {
                        "486 Busy Here"
                    } else {
                        "488 Not Acceptable Here"
                    }
                }),
            };
            match answered {
                Ok(line) => {
                    say!(calls, "answered", json!({"status": line}), "answered {line}");
                    calls.callers.insert(session, from);
                }
                Err(e) => emit("failed", &format!("cannot answer: {e}"), json!({"error": e.to_string()})),
            }
        }
        Event::Session { session, event } => show_session(endpoint, calls, session, event).await,
        Event::IncomingSubscription { subscription, event, from, to, .. } => {
            // --presence: the status, to whoever asks (RFC 3856).
            match calls.pidf(&to).filter(|_| event.split(';').next() == Some("presence")) {
                Some(doc) => {
                    say!(
                        calls,
                        "subscribed",
                        json!({"event_package": event, "from": from}),
                        "SUBSCRIBE {event} from {from}"
                    );
                    if let Err(e) = endpoint.accept_subscription(subscription, SubState::Active, Some(doc)).await {
                        emit(
                            "failed",
                            &format!("cannot accept the subscription: {e}"),
                            json!({"error": e.to_string()}),
                        );
                    }
                }
                None => {
                    let _ = endpoint.reject_subscription(subscription, 489, "Bad Event").await;
                }
            }
        }
        Event::Refer { subscription, refer_to, referred_by, source, .. } => {
            crate::transfer::transferred(endpoint, calls, subscription, &refer_to, referred_by, source).await;
        }
        Event::Subscription { subscription, event: SubscriptionEvent::Ended(why) } => {
            if matches!(why, SubscriptionEnd::Unsubscribed | SubscriptionEnd::Ended) {
                say!(calls, "subscription_ended", json!({}), "subscription ended");
            } else {
                say!(
                    calls,
                    "subscription_ended",
                    json!({"why": format!("{why:?}")}),
                    "subscription {subscription:?} ended: {why:?}"
                );
            }
        }
        Event::Registration(state) => registration(&state),
        Event::State(state) => emit("state", &format!("endpoint: {state:?}"), json!({"state": format!("{state:?}")})),
        Event::ShutDown => return false,
        _ => {}
    }
    true
}

/// Prints what happens in an incoming session.
async fn show_session(endpoint: &sipline_tokio::Endpoint, calls: &mut Calls, session: SessionId, event: SessionEvent) {
    match event {
        SessionEvent::Confirmed { .. } => say!(calls, "ack", json!({}), "ACK"),
        SessionEvent::Reoffer { body, .. } => {
            // A re-INVITE (a hold, a refresh): answered like the INVITE.
            let remote = SocketAddr::from(([127, 0, 0, 1], 9));
            let local = endpoint.local_addrs().first().map(|(_, a)| *a);
            let answer = calls.answer.clone().or(Some(Answer::Builtin));
            let (result, held) = match calls.reply(session, (local, remote), answer.as_ref(), body.as_ref()) {
                Reply::Accept(body) => {
                    let held = String::from_utf8_lossy(&body.bytes).contains("a=recvonly");
                    (endpoint.accept(session, Some(&body)).await, held)
                }
                Reply::Reject(code, reason) => (endpoint.reject(session, code, reason, &[]).await, false),
            };
            let what = match (result.is_ok(), held) {
                (true, true) => "answered (held: recvonly)",
                (true, false) => "answered",
                (false, _) => "not answered",
            };
            say!(calls, "reinvite", json!({"result": what}), "re-INVITE: {what}");
        }
        event if calls.transfers.contains_key(&session) => {
            crate::transfer::progress(endpoint, calls, session, event).await;
        }
        SessionEvent::Ended(why) => {
            calls.media.remove(&session);
            let from = calls.callers.remove(&session).unwrap_or_default();
            match why {
                SessionEnd::PeerHungUp => say!(calls, "ended", json!({"from": from, "why": "BYE"}), "BYE from {from}"),
                SessionEnd::Cancelled => {
                    say!(calls, "ended", json!({"from": from, "why": "CANCEL"}), "CANCEL from {from}");
                }
                // A rejected session was reported when it was answered.
                SessionEnd::Rejected => {}
                other => {
                    let why = end_text(&other);
                    emit("ended", &format!("call from {from} ended: {why}"), json!({"from": from, "why": why}));
                }
            }
        }
        _ => {}
    }
}

/// How a session's end reads.
fn end_text(why: &SessionEnd) -> String {
    match why {
        SessionEnd::HungUp => "hung up".to_owned(),
        SessionEnd::PeerHungUp => "the peer hung up".to_owned(),
        SessionEnd::Cancelled => "cancelled".to_owned(),
        SessionEnd::Rejected => "rejected".to_owned(),
        SessionEnd::Failed(e) => format!("failed: {e}"),
        SessionEnd::NoAck => "no ACK came".to_owned(),
        SessionEnd::Unanswered => "not answered in time".to_owned(),
        SessionEnd::ShutDown => "shut down".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A response line: `CODE REASON`.
fn response(r: &sipline::endpoint::Response) {
    emit("response", &format!("{} {}", r.code, r.reason), json!({"code": r.code, "reason": r.reason}));
}

/// A registration line: `registration: …`.
fn registration(state: &RegistrationState) {
    let text = describe(state);
    let mut fields = json!({"state": format!("{state:?}").split([' ', '{']).next().unwrap_or_default().to_lowercase()});
    if let RegistrationState::Registered { expires, contact, .. } = state {
        fields = json!({"state": "registered", "contact": contact, "expires": expires.as_secs()});
    }
    emit("registration", &format!("registration: {text}"), fields);
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
async fn serve(endpoint: sipline_tokio::Endpoint, mut events: sipline_tokio::Events, mut calls: Calls) -> ExitCode {
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            event = events.next() => match event {
                Some(e) => {
                    if !show(&endpoint, &mut calls, e).await {
                        return ExitCode::SUCCESS;
                    }
                }
                None => return ExitCode::SUCCESS,
            },
        }
    }
    emit("shutting_down", "shutting down", json!({}));
    endpoint.shutdown().await;
    while let Some(e) = events.next().await {
        show(&endpoint, &mut calls, e).await;
    }
    ExitCode::SUCCESS
}

/// `serve`: the registrar and proxy (the project's main job).
async fn serve_domain(o: &ServeArgs) -> ExitCode {
    let bind = o.bind.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5060)));
    let domain = o.domain.clone().unwrap_or_else(|| match bind.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        ip @ IpAddr::V4(_) => ip.to_string(),
    });
    let users = if let Some(path) = &o.users {
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| Users::parse(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(u) => u,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(1);
            }
        }
    } else {
        let password = demo_password();
        println!("no --users file: one-time demo account demo / {password} (realm {domain})");
        Users::from_passwords([("demo", password.as_str())])
    };
    let mut c = EndpointConfig::new(&format!("sip:sipline@{domain}"));
    apply_user_agent(&mut c, o.server_header.as_deref());
    c.seed = 0;
    c = c.listen(Transport::Udp, bind).listen(Transport::Tcp, bind);
    if let Some(bytes) = o.udp_buffer {
        c.transport.udp_buffer = bytes;
    }
    let identity = match (&o.cert, &o.key, o.tls_self_signed) {
        (Some(_), Some(_), true) => return usage_error("serve", "--tls-self-signed or --cert/--key, not both"),
        (Some(cert), Some(key), false) => Some(tls_files::with_identity_files(TlsConfig::default(), cert, key)),
        (None, None, true) => Some(self_signed_identity(&domain, bind)),
        (None, None, false) => None,
        _ => return usage_error("serve", "--cert and --key go together"),
    };
    if o.require_client_cert && (identity.is_none() || o.ca.is_none()) {
        return usage_error("serve", "--require-client-cert needs TLS (--cert/--key or --tls-self-signed) and --ca");
    }
    let has_identity = identity.is_some();
    let tls = identity.unwrap_or_else(|| Ok(TlsConfig::default())).and_then(|tls| match &o.ca {
        Some(ca) => tls_files::with_roots_file(tls, ca),
        None => Ok(tls),
    });
    match tls {
        // Mutual TLS (RFC 3261 §26.3.2.1): clients' certificates must
        // chain to a root of --ca.
        Ok(tls) if o.require_client_cert => c.transport.tls = tls.requiring_client_certificates(),
        Ok(tls) => c.transport.tls = tls,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    }
    if has_identity {
        let tls_port = if bind.port() == 0 { 0 } else { bind.port().saturating_add(1) };
        c = c.listen(Transport::Tls, SocketAddr::new(bind.ip(), tls_port));
    }
    let mut server = ServerConfig::new(&domain, users);
    // MD5 alone by default (ServerConfig's): see --digest.
    if let Some(algorithms) = o.algorithms() {
        server.algorithms = algorithms;
    }
    server.aliases.clone_from(&o.alias);
    server.allow_guests = o.allow_guests;
    match o.flood_limit {
        Some(FloodSetting::Off) => server.flood = None,
        Some(FloodSetting::Limit(l)) => server.flood = Some(l),
        None => {}
    }
    match o.overload_delay {
        Some(OverloadSetting::Off) => server.overload = None,
        Some(OverloadSetting::Delay(d)) => server.overload = Some(sipline::endpoint::OverloadConfig::new(d)),
        None => {}
    }
    // Issue 18: bans for password guessers (defaults: BanPolicy's).
    server.bans.max_failures = o.max_auth_failures.unwrap_or(server.bans.max_failures);
    server.bans.window = o.auth_window.map_or(server.bans.window, |s| s.0);
    server.bans.ban = o.ban.map_or(server.bans.ban, |s| s.0);
    if let Some(min) = o.min_expires {
        server.registrar.min_expires = min;
        server.registrar.default_expires = server.registrar.default_expires.max(min);
    }
    // Issue 19: one worker per core unless told.
    let workers = o.workers.map_or_else(default_workers, NonZeroU16::get);
    // Table positions in the location service that callers choosing AORs
    // cannot predict.
    let keys = random_secret();
    let key = |at: usize| u64::from_le_bytes(keys[at..at + 8].try_into().unwrap_or_default());
    // Issue 20: a store shared with other instances, mirrored from memory.
    let mut _mirror = None;
    match &o.location {
        Some(Location::Redis(url)) => {
            let instance = o.instance.clone().unwrap_or_else(|| lower_hex(&random_secret()[..6]));
            match sipline_tokio::redis_location::mirror(url, &instance, "sipline", (key(0), key(8))) {
                Ok(mirrored) => {
                    let mirror = mirrored.handle;
                    if !mirror.wait_synced(Duration::from_secs(3)) {
                        eprintln!("location store {url} not answering yet: serving from memory until it does");
                    }
                    server.location = mirrored.location;
                    // Answers recorded here are told to the other instances.
                    server.nonce_ledger = mirrored.nonce_ledger;
                    // Bindings made here are reached through here (RFC 3327
                    // Path): the other instances cannot use our flows.
                    server.path = true;
                    _mirror = Some(mirror);
                }
                Err(e) => {
                    eprintln!("--location: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        _ => server.location = sipline::registrar::SharedLocation::with_keys(key(0), key(8)),
    }
    match &o.secret_file {
        // Instances of one domain: one key, and nonces dated by the wall
        // clock, so that a nonce one issued is good at another.
        Some(path) => {
            let text = match std::fs::read(path) {
                Ok(text) if text.len() >= 16 => text,
                Ok(_) => {
                    eprintln!("--secret-file {}: at least 16 bytes of secret", path.display());
                    return ExitCode::from(2);
                }
                Err(e) => {
                    eprintln!("--secret-file {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            };
            let mut secret = [0u8; 32];
            secret.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &text).as_ref());
            server.nonce_secret = Some(secret);
            let unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            server.nonce_clock = Some((std::time::Instant::now(), unix_ms));
        }
        // One key for every worker's nonces (a nonce one issued is good
        // at another); clones of `server` share its location service.
        None if workers > 1 => server.nonce_secret = Some(random_secret()),
        None => {}
    }
    // Issue 22: the workers count into one Metrics, served over HTTP.
    if let Some(addr) = o.metrics {
        let metrics = std::sync::Arc::new(sipline::metrics::Metrics::new(workers));
        c.metrics = Some(std::sync::Arc::clone(&metrics));
        match crate::metrics::start(addr, metrics).await {
            Ok(bound) => println!("metrics http://{bound}/metrics"),
            Err(e) => {
                eprintln!("--metrics {addr}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    c = c.serve(server);
    let quiet = o.quiet;
    let calls = move || Calls {
        answer: None,
        callers: HashMap::new(),
        quiet,
        presence: None,
        transfers: HashMap::new(),
        media: HashMap::new(),
    };
    let workers_note = if workers > 1 { format!(", {workers} workers") } else { String::new() };
    let banner = format!("serving {domain}: registrar and proxy (RFC 3261 §10.3, §16){workers_note}; Ctrl-C stops");
    run_workers(c, workers, calls, Some(&banner)).await
}

/// The machine's available parallelism (1 if unknown), at most 256.
fn default_workers() -> u16 {
    std::thread::available_parallelism().map_or(1, |n| u16::try_from(n.get()).unwrap_or(256).min(256))
}

/// Binds `config` as `workers` endpoints (issue 19; one: on this thread's
/// runtime), prints the bound addresses and `banner`, and runs each
/// worker's event loop (its own `Calls`) until all have shut down.
async fn run_workers(
    config: EndpointConfig,
    workers: u16,
    calls: impl Fn() -> Calls,
    banner: Option<&str>,
) -> ExitCode {
    if workers <= 1 {
        let Ok((endpoint, events)) = bind_endpoint(config).await else { return ExitCode::from(1) };
        if let Some(b) = banner {
            println!("{b}");
        }
        return serve(endpoint, events, calls()).await;
    }
    let started = match sipline_tokio::spawn_workers(vec![config; usize::from(workers)]) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Some((endpoint, _)) = started.first() {
        for (transport, addr) in endpoint.local_addrs() {
            let t = transport.as_str().to_ascii_lowercase();
            emit("bound", &format!("bound {t} {addr}"), json!({"transport": t, "address": addr.to_string()}));
        }
    }
    if let Some(b) = banner {
        println!("{b}");
    }
    let mut all = tokio::task::JoinSet::new();
    for (endpoint, events) in started {
        all.spawn(serve(endpoint, events, calls()));
    }
    let mut code = ExitCode::SUCCESS;
    while let Some(done) = all.join_next().await {
        if !matches!(done, Ok(c) if c == ExitCode::SUCCESS) {
            code = ExitCode::from(1);
        }
    }
    code
}

/// 32 random bytes from the process's randomly keyed hashers (the CLI may
/// use the OS's randomness; the core may not).
fn random_secret() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut secret = [0u8; 32];
    for (i, chunk) in secret.chunks_exact_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    secret
}

/// `--tls-self-signed`: a certificate for the domain and the bound
/// address, its authority's certificate written to a file named on
/// standard output for clients to trust.
fn self_signed_identity(domain: &str, bind: SocketAddr) -> Result<TlsConfig, tls_files::TlsFileError> {
    let mut names = vec![domain.trim_start_matches('[').trim_end_matches(']').to_owned()];
    if !bind.ip().is_unspecified() && bind.ip().to_string() != names[0] {
        names.push(bind.ip().to_string());
    }
    let (tls, ca_pem) = tls_files::self_signed(&names[0], &names, std::time::SystemTime::now())?;
    let path = std::env::temp_dir().join(format!("sipline-serve-{}-ca.pem", std::process::id()));
    tls_files::write(&path, &ca_pem)?;
    println!("tls: self-signed certificate for {}; clients trust it with --ca {}", names.join(", "), path.display());
    Ok(tls)
}

/// A one-time password for the demo account, from the process's own
/// randomly keyed hasher (the CLI may use the OS; the core may not).
fn demo_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

async fn listen(o: &ListenArgs) -> ExitCode {
    // A listener with no --bind is there for anyone: every interface.
    let bind = o.net.bind.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let mut config = match endpoint_config(&o.net, "sip:sipline@sipline.invalid", bind, o.require_client_cert) {
        Ok(c) => c,
        Err(e) => return usage_error("listen", &e),
    };
    apply_user_agent(&mut config, o.server_header.as_deref());
    let calls = match Calls::new(&o.answering) {
        Ok(c) => c,
        Err(e) => return usage_error("listen", &e),
    };
    config.events = calls.events();
    // `--workers N` (issue 19): N answering endpoints on one address.
    run_workers(config, o.workers.get(), || calls.clone(), None).await
}

async fn register(o: &RegisterArgs) -> ExitCode {
    // clap insists on one --registrar.
    let Some(registrar) = o.account.registrar() else {
        return usage_error("register", "register needs --registrar");
    };
    let bind = match o.net.bind.map_or_else(|| bind_toward(o.account.proxy.as_deref().unwrap_or(registrar)), Ok) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let config = endpoint_config(&o.net, &o.aor, bind, false).and_then(|mut c| {
        apply_user_agent(&mut c, o.user_agent.user_agent.as_deref());
        apply_account(&mut c, &o.account, o.expires).map(|()| c)
    });
    let mut config = match config {
        Ok(c) => c,
        Err(e) => return usage_error("register", &e),
    };
    let calls = match Calls::new(&o.answering) {
        Ok(c) => c,
        Err(e) => return usage_error("register", &e),
    };
    config.events = calls.events();
    match bind_endpoint(config).await {
        Ok((endpoint, events)) => serve(endpoint, events, calls).await,
        Err(code) => code,
    }
}

/// Waits for the first registration to succeed (`true`) or fail.
async fn registered(events: &mut sipline_tokio::Events) -> bool {
    while let Some(event) = events.next().await {
        match event {
            Event::Registration(state) => {
                registration(&state);
                match state {
                    RegistrationState::Registered { .. } => return true,
                    // Zero: the next --registrar is being tried at once.
                    RegistrationState::Failed { retry_in, .. } if !retry_in.is_zero() => return false,
                    _ => {}
                }
            }
            Event::State(EndpointState::Terminated) => return false,
            _ => {}
        }
    }
    false
}

/// The From URI: `--from`, else the user (`--user`, or `sipline`) at the
/// registrar's host.
fn from_uri(from: Option<&str>, account: &Account) -> String {
    from.map_or_else(
        || {
            let user = account.user.as_deref().unwrap_or("sipline");
            let host = account
                .registrar()
                .and_then(|r| {
                    sipline::message::Uri::parse(r).ok().and_then(|u| u.as_sip().map(|s| s.host().to_string()))
                })
                .unwrap_or_else(|| "sipline.invalid".to_owned());
            format!("sip:{user}@{host}")
        },
        str::to_owned,
    )
}

/// What a sending endpoint (`message`, `call`, `subscribe`) is made of.
struct Client<'a> {
    /// The subcommand, for its usage errors.
    command: &'static str,
    /// The request's target.
    target: &'a str,
    /// `--from`.
    from: Option<&'a str>,
    account: &'a Account,
    net: &'a Net,
    user_agent: &'a UserAgent,
    /// `--expires` (the registration's, with `--registrar`).
    expires: Option<u32>,
}

/// A sending endpoint (`message`, `call`, `subscribe`): bound, and
/// registered first with `--registrar`.
async fn client(o: &Client<'_>) -> Result<(sipline_tokio::Endpoint, sipline_tokio::Events), ExitCode> {
    // The first hop: the proxy, the registrar, or the target itself.
    let first_hop = o.account.proxy.as_deref().or(o.account.registrar()).unwrap_or(o.target);
    let bind = match o.net.bind {
        Some(b) => b,
        None => bind_toward(first_hop).map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(1)
        })?,
    };
    let config = endpoint_config(o.net, &from_uri(o.from, o.account), bind, false).and_then(|mut c| {
        apply_user_agent(&mut c, o.user_agent.user_agent.as_deref());
        apply_account(&mut c, o.account, o.expires).map(|()| c)
    });
    let config = config.map_err(|e| usage_error(o.command, &e))?;
    let registering = config.registration.is_some();
    let (endpoint, mut events) = bind_endpoint(config).await?;
    // Registering first: wait until the registrar answers.
    if registering && !registered(&mut events).await {
        endpoint.shutdown().await;
        return Err(ExitCode::from(1));
    }
    Ok((endpoint, events))
}

async fn message(o: &MessageArgs) -> ExitCode {
    let (target, text) = (&o.target, &o.text);
    let me = Client {
        command: "message",
        target,
        from: o.from.as_deref(),
        account: &o.account,
        net: &o.net,
        user_agent: &o.user_agent,
        expires: None,
    };
    let (endpoint, _events) = match client(&me).await {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let outcome = endpoint.send(Request::message(target, "text/plain", text.as_bytes().to_vec())).await;
    let code = match &outcome {
        Ok(r) => {
            response(r);
            ExitCode::SUCCESS
        }
        Err(Error::Failed(RequestError::Failure(r))) => {
            response(r);
            ExitCode::from(1)
        }
        Err(e) => {
            emit("failed", &format!("failed: {e}"), json!({"error": e.to_string()}));
            ExitCode::from(1)
        }
    };
    endpoint.shutdown().await;
    code
}

/// `subscribe TARGET --event EVENT`: prints each NOTIFY until the end.
async fn subscribe(o: &SubscribeArgs) -> ExitCode {
    let me = Client {
        command: "subscribe",
        target: &o.target,
        from: o.from.as_deref(),
        account: &o.account,
        net: &o.net,
        user_agent: &o.user_agent,
        expires: o.expires,
    };
    let (endpoint, mut events) = match client(&me).await {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let asked = crate::subscribe::Asked { target: &o.target, event: &o.event, expires: o.expires, accept: &o.accept };
    let accepted = crate::subscribe::run(&endpoint, &mut events, &asked, stop_signal()).await;
    endpoint.shutdown().await;
    if accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// How long `call` waits for its BYE or CANCEL to finish (64·T1 with the
/// default T1, and a little more).
const HANGUP_WAIT: Duration = Duration::from_secs(35);

/// `call`: one outgoing session. Exits 0 if it was answered.
async fn call(o: &CallArgs) -> ExitCode {
    let target = &o.target;
    let body = match &o.body {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) => return usage_error("call", &format!("{}: {e}", path.display())),
        },
        None => None,
    };
    let me = Client {
        command: "call",
        target,
        from: o.from.as_deref(),
        account: &o.account,
        net: &o.net,
        user_agent: &o.user_agent,
        expires: None,
    };
    let (endpoint, mut events) = match client(&me).await {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    // Without --body, an SDP offer of our own (user agents insist on one).
    let local = endpoint.local_addrs().first().map(|(_, a)| *a);
    let ip = local.filter(|a| !a.ip().is_unspecified()).map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip());
    let mut media = Media::new(ip);
    let (content_type, offer) = if let Some(b) = body {
        (o.content_type.clone().unwrap_or_else(|| "application/sdp".to_owned()), b)
    } else {
        ("application/sdp".to_owned(), media.offer())
    };
    let session = match endpoint.invite(Request::invite(target, &content_type, offer)).await {
        Ok(s) => s,
        Err(e) => {
            println!("failed: {e}");
            endpoint.shutdown().await;
            return ExitCode::from(1);
        }
    };
    let answered = follow_call(o, &endpoint, &mut events, session, &mut media).await;
    endpoint.shutdown().await;
    if answered {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Prints the session's responses; puts it on hold, transfers it and hangs
/// up when told to, and waits for its end. Whether it was answered (and
/// transferred, with `--transfer-to`).
async fn follow_call(
    o: &CallArgs,
    endpoint: &sipline_tokio::Endpoint,
    events: &mut sipline_tokio::Events,
    session: SessionId,
    media: &mut Media,
) -> bool {
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut answered = false;
    let mut hanging_up = false;
    // Armed at the answer with --hangup-after, --hold-after and
    // --transfer-to; far away until then.
    let never = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
    let hangup_at = tokio::time::sleep_until(never());
    let hold_at = tokio::time::sleep_until(never());
    let transfer_at = tokio::time::sleep_until(never());
    tokio::pin!(hangup_at, hold_at, transfer_at);
    let (mut hold_armed, mut transfer_armed) = (false, false);
    let mut transfer = crate::transfer::Transferor::default();
    let mut ending_by: Option<tokio::time::Instant> = None;
    loop {
        let give_up = async {
            match ending_by {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let hang_up_now = tokio::select! {
            () = &mut stop, if !hanging_up => true,
            () = &mut hangup_at, if !hanging_up => true,
            () = &mut hold_at, if hold_armed => {
                hold_armed = false;
                // RFC 3264 §8.4: a new offer, sendonly.
                let held = media.hold().map(Body::sdp);
                emit("hold", "hold", json!({}));
                if let Err(e) = endpoint.reinvite(session, held).await {
                    emit("failed", &format!("cannot hold: {e}"), json!({"error": e.to_string()}));
                }
                false
            }
            () = &mut transfer_at, if transfer_armed => {
                transfer_armed = false;
                let target = o.transfer_to.as_deref().unwrap_or_default();
                transfer.start(endpoint, session, target).await
            }
            () = give_up => {
                let secs = HANGUP_WAIT.as_secs();
                emit("failed", &format!("no end to the hangup in {secs} s"), json!({"error": "hangup unanswered"}));
                return answered && transfer.succeeded();
            }
            event = events.next() => {
                let Some(event) = event else { return answered && transfer.succeeded() };
                match event {
                    Event::Session { session: s, event } if s == session => match event {
                        SessionEvent::Progress(r) => response(&r),
                        SessionEvent::Answered(r) => {
                            response(&r);
                            answered = true;
                            let now = tokio::time::Instant::now();
                            if let Some(Seconds(after)) = o.hangup_after {
                                hangup_at.as_mut().reset(now + after);
                            }
                            if let Some(Seconds(after)) = o.hold_after {
                                hold_at.as_mut().reset(now + after);
                                hold_armed = true;
                            }
                            if o.transfer_to.is_some() {
                                transfer_at.as_mut().reset(now + o.transfer_after.map(|s| s.0).unwrap_or_default());
                                transfer_armed = true;
                            }
                        }
                        SessionEvent::Updated(result) => match result {
                            Ok(r) => {
                                let held = String::from_utf8_lossy(&r.bytes).contains("a=recvonly");
                                let text = format!("re-INVITE: {} {}{}", r.code, r.reason, if held { " (held)" } else { "" });
                                emit("updated", &text, json!({"code": r.code, "reason": r.reason, "held": held}));
                            }
                            Err(e) => emit("updated", &format!("re-INVITE failed: {e}"), json!({"error": e.to_string()})),
                        },
                        SessionEvent::Reoffer { body, .. } => {
                            // The peer's re-INVITE: answered from our side.
                            let answer = media.answer(body.as_ref().map(|b| b.bytes.as_slice()));
                            let _ = match answer {
                                Some(sdp) => endpoint.accept(session, Some(&Body::sdp(sdp))).await,
                                None => endpoint.reject(session, 488, "Not Acceptable Here", &[]).await,
                            };
                        }
                        SessionEvent::Ended(why) => {
                            match why {
                                SessionEnd::Failed(RequestError::Failure(r)) => response(&r),
                                SessionEnd::HungUp => emit("ended", "hung up", json!({"why": "hung up"})),
                                SessionEnd::PeerHungUp => emit("ended", "BYE from the peer", json!({"why": "peer hung up"})),
                                other => {
                                    let why = end_text(&other);
                                    emit("ended", &format!("call {why}"), json!({"why": why}));
                                }
                            }
                            return answered && transfer.succeeded();
                        }
                        _ => {}
                    },
                    // The transfer's NOTIFYs (RFC 3515 §2.4.5): its end
                    // hangs up the call.
                    Event::Subscription { subscription, event } => transfer.event(subscription, event),
                    Event::ShutDown => return answered && transfer.succeeded(),
                    _ => {}
                }
                false
            }
        };
        if hang_up_now && !hanging_up {
            hanging_up = true;
            ending_by = Some(tokio::time::Instant::now() + HANGUP_WAIT);
            let what = if answered { "BYE" } else { "CANCEL" };
            emit("hangup", what, json!({"request": what}));
            if let Err(e) = endpoint.hangup(session).await {
                emit("failed", &format!("cannot hang up: {e}"), json!({"error": e.to_string()}));
                return answered && transfer.succeeded();
            }
        }
        if transfer.finished() && !hanging_up {
            // The transferee took it (or not): the call is ours to end.
            hanging_up = true;
            ending_by = Some(tokio::time::Instant::now() + HANGUP_WAIT);
            emit("hangup", "BYE", json!({"request": "BYE"}));
            if endpoint.hangup(session).await.is_err() {
                return answered && transfer.succeeded();
            }
        }
    }
}

/// `bytes` as lower-case hex (a default instance name).
fn lower_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
