//! Subscriptions (RFC 6665) between endpoints in the simulated network
//! (virtual time, seeded loss, duplication and reordering): subscribe,
//! NOTIFY, refresh and unsubscribe under loss with every NOTIFY in order;
//! a NOTIFY before the 2xx forming the dialog (§4.1.2.4); Timer N; 489 with
//! Allow-Events; 423 with Min-Expires; a subscription left unrefreshed
//! ending with `terminated;reason=timeout` (§4.2.2); shutdown ending
//! subscriptions in both roles; tables empty at the end.

use sipline::endpoint::{
    Body, Endpoint, EndpointConfig, EndpointState, Event, Output, RequestError, SubState, Subscribe, SubscriptionEnd,
    SubscriptionEvent, SubscriptionId, Tables,
};
use sipline::transport::Transport;
use sipline_tests::sim::{for_each_seed, LinkConfig, Node, NodeId, Sim};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type Policy = Box<dyn FnMut(&mut Endpoint, Instant, &Event)>;

struct Ua {
    ep: Endpoint,
    now: Instant,
    events: Vec<(Instant, Event)>,
    policy: Policy,
    out: VecDeque<(NodeId, Vec<u8>)>,
    /// Every message sent (text), dropped or not.
    wire: Vec<String>,
    /// Outgoing messages starting with this are dropped (this many times).
    drop: Option<(&'static str, usize)>,
}

fn addr(id: NodeId) -> SocketAddr {
    format!("192.0.2.{}:5060", id + 1).parse().unwrap()
}

fn node_of(a: SocketAddr) -> Option<NodeId> {
    match a.ip() {
        std::net::IpAddr::V4(v4) => Some(usize::from(v4.octets()[3]) - 1),
        std::net::IpAddr::V6(_) => None,
    }
}

fn uri(id: NodeId, user: &str) -> String {
    format!("sip:{user}@{}", addr(id))
}

impl Ua {
    fn new(id: NodeId, user: &str, now: Instant, setup: impl FnOnce(&mut EndpointConfig), policy: Policy) -> Ua {
        let mut c = EndpointConfig::new(&uri(id, user));
        c.seed = 11 + id as u64;
        setup(&mut c);
        let mut ep = Endpoint::new(c).unwrap();
        ep.add_listener(Transport::Udp, addr(id));
        ep.start(now);
        Ua { ep, now, events: Vec::new(), policy, out: VecDeque::new(), wire: Vec::new(), drop: None }
    }

    fn pump(&mut self) {
        loop {
            let mut events = Vec::new();
            while let Some(o) = self.ep.poll_output() {
                match o {
                    Output::Datagram { remote, bytes, .. } => {
                        let text = String::from_utf8_lossy(&bytes).into_owned();
                        if let Some((prefix, n)) = &mut self.drop {
                            if *n > 0 && text.starts_with(*prefix) {
                                *n -= 1;
                                self.wire.push(format!("(dropped) {text}"));
                                continue;
                            }
                        }
                        self.wire.push(text);
                        if let Some(to) = node_of(remote) {
                            self.out.push_back((to, bytes.to_vec()));
                        }
                    }
                    Output::Event(e) => events.push(e),
                    _ => {}
                }
            }
            if events.is_empty() {
                return;
            }
            for e in events {
                (self.policy)(&mut self.ep, self.now, &e);
                self.events.push((self.now, e));
            }
        }
    }

    fn sent(&self, prefix: &str) -> Vec<&String> {
        self.wire.iter().filter(|m| m.starts_with(prefix)).collect()
    }

    /// The events of subscription `s`, in order.
    fn of(&self, s: SubscriptionId) -> Vec<SubscriptionEvent> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Subscription { subscription, event } if *subscription == s => Some(event.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every subscription event, whichever subscription.
    fn all(&self) -> Vec<(SubscriptionId, SubscriptionEvent)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Subscription { subscription, event } => Some((*subscription, event.clone())),
                _ => None,
            })
            .collect()
    }

    fn ended(&self, s: SubscriptionId) -> Option<SubscriptionEnd> {
        self.of(s).into_iter().find_map(|e| match e {
            SubscriptionEvent::Ended(why) => Some(why),
            _ => None,
        })
    }

    /// The subscription the notifier's application was offered first.
    fn incoming(&self) -> Option<SubscriptionId> {
        self.events.iter().find_map(|(_, e)| match e {
            Event::IncomingSubscription { subscription, .. } => Some(*subscription),
            _ => None,
        })
    }
}

impl Node for Ua {
    fn handle_datagram(&mut self, now: Instant, from: NodeId, bytes: &[u8]) {
        self.now = now;
        let local = self.ep.transport().listeners()[0].1;
        self.ep.handle_datagram(now, local, addr(from), bytes);
        self.pump();
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.ep.handle_timeout(now);
        self.pump();
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.ep.poll_timeout()
    }
    fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.pump();
        self.out.pop_front()
    }
    fn drain_events(&mut self) -> Vec<String> {
        Vec::new()
    }
}

fn pidf(n: u32) -> Body {
    Body::new("application/pidf+xml", format!("<presence>{n}</presence>"))
}

/// Bob's application: accepts presence subscriptions with state 0, and
/// tells a new state (1, 2, …) at each refresh.
fn notifier() -> Policy {
    let mut n = 0;
    Box::new(move |ep, now, e| match e {
        Event::IncomingSubscription { subscription, .. } => {
            ep.accept_subscription(now, *subscription, SubState::Active, Some(pidf(0))).unwrap();
        }
        Event::Subscription { subscription, event: SubscriptionEvent::Refreshed { .. } } => {
            n += 1;
            // Two states at once: the second waits for the first NOTIFY.
            ep.notify(now, *subscription, SubState::Active, Some(pidf(n * 10))).unwrap();
            ep.notify(now, *subscription, SubState::Active, Some(pidf(n * 10 + 1))).unwrap();
        }
        _ => {}
    })
}

fn idle() -> Policy {
    Box::new(|_, _, _| {})
}

fn presence_server(c: &mut EndpointConfig) {
    c.events = vec!["presence".to_owned()];
}

fn sim(bob: Policy, link: LinkConfig, seed: u64) -> Sim<Ua> {
    let t0 = Instant::now();
    let a = Ua::new(0, "alice", t0, |_| {}, idle());
    let b = Ua::new(1, "bob", t0, presence_server, bob);
    Sim::new(vec![a, b], link, seed, t0)
}

fn subscribe(s: &mut Sim<Ua>, event: &str, expires: u32) -> SubscriptionId {
    let now = s.now();
    let mut sub = Subscribe::new(&uri(1, "bob"), event);
    sub.expires = expires;
    sub.accept = vec!["application/pidf+xml".to_owned()];
    let id = s.nodes[0].ep.subscribe(now, sub).unwrap();
    s.nodes[0].pump();
    id
}

fn go(s: &mut Sim<Ua>, secs: u64) {
    let until = s.elapsed() + Duration::from_secs(secs);
    s.run(until, 2_000_000);
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
}

fn cseq(msg: &str) -> u32 {
    header(msg, "CSeq").and_then(|c| c.split(' ').next()).unwrap().parse().unwrap()
}

/// The bodies of the NOTIFYs Alice was told, in order.
fn told(events: &[SubscriptionEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            SubscriptionEvent::Notified(n) => n.body.as_ref().map(|b| String::from_utf8_lossy(&b.bytes).into_owned()),
            _ => None,
        })
        .collect()
}

/// Whether the trace shows a transaction nearly or wholly timed out: some
/// request sent 8 times or more (Timer E sends 11 copies in 64·T1,
/// §17.1.2.2), or an INVITE 7 times (Timer A: 7 in 64·T1, §17.1.1.2).
fn struggled(ua: &Ua) -> bool {
    let mut copies = std::collections::BTreeMap::<&str, (usize, bool)>::new();
    for m in &ua.wire {
        let m = m.trim_start_matches("(dropped) ");
        if !m.starts_with("SIP/2.0") {
            let e = copies.entry(sipline_tests::sim::top_branch(m.as_bytes())).or_default();
            e.0 += 1;
            e.1 |= m.starts_with("INVITE ");
        }
    }
    copies.values().any(|&(n, invite)| n >= if invite { 7 } else { 8 })
}

/// Whether an end is one loss can explain: a transaction that timed out
/// (all 11 copies, or their answers, lost), and what follows from it.
fn lost(why: &SubscriptionEnd) -> bool {
    matches!(
        why,
        SubscriptionEnd::Failed(RequestError::Timeout)
            | SubscriptionEnd::NoNotify
            | SubscriptionEnd::Expired
            | SubscriptionEnd::Terminated { .. }
    ) || matches!(why, SubscriptionEnd::Failed(RequestError::Failure(r)) if r.code == 481)
}

#[test]
fn subscribe_notify_refresh_and_unsubscribe_on_a_lossy_network() {
    for_each_seed(20, |seed| {
        let mut s = sim(notifier(), LinkConfig::lossy(), seed);
        let sub = subscribe(&mut s, "presence", 120);
        // 400 s: refreshes at 90 s, 180 s, 270 s, 360 s (3/4 of 120 s).
        go(&mut s, 400);
        let now = s.now();
        let alive = s.nodes[0].ended(sub).is_none();
        if alive {
            s.nodes[0].ep.unsubscribe(now, sub).unwrap();
        }
        // Long enough for Bob to let a subscription Alice lost to a
        // timeout expire (120 s) and tell her (Timer F).
        go(&mut s, 200);
        let (alice, bob) = (&s.nodes[0], &s.nodes[1]);
        let events = alice.of(sub);
        let ended = alice.ended(sub).unwrap_or_else(|| panic!("Alice's subscription still lives\n{}", s.trace()));
        assert_eq!(alice.ep.tables(), Tables::default(), "{:?}\n{}", alice.all(), s.trace());
        assert_eq!(bob.ep.tables(), Tables::default(), "{:?}\n{}", alice.all(), s.trace());
        // §4.2.2: NOTIFYs go one at a time, so Alice hears them in order:
        // each state she is told is newer than the one before.
        let states: Vec<u32> = told(&events)
            .iter()
            .map(|b| b.trim_start_matches("<presence>").trim_end_matches("</presence>").parse().unwrap())
            .collect();
        assert!(states.windows(2).all(|w| w[0] <= w[1]), "out of order: {states:?}\n{}", s.trace());
        let notifies = bob.sent("NOTIFY ");
        let mut seqs: Vec<u32> = notifies.iter().map(|n| cseq(n)).collect();
        seqs.dedup();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "§12.2.1.1: NOTIFY CSeq grows: {seqs:?}");
        if !alive {
            assert!(lost(&ended), "ended early without a loss to explain it: {ended:?}\n{}", s.trace());
            assert!(
                struggled(alice) || struggled(bob),
                "{ended:?} with no transaction near its timeout\n{}",
                s.trace()
            );
            return;
        }
        assert_eq!(states.first(), Some(&0), "§4.2.1.2: the first NOTIFY tells the state at once\n{}", s.trace());
        // Each refresh got its 2xx, and Bob told the newest state after
        // each one (the second of each pair, the first maybe overtaken).
        let refreshed = events.iter().filter(|e| matches!(e, SubscriptionEvent::Refreshed { .. })).count();
        assert!(refreshed >= 3, "refreshes at 90, 180, 270, 360 s: {refreshed}\n{}", s.trace());
        // (Bob may have taken a refresh whose 200 Alice never got: his
        // count, and so the newest state, can be ahead of hers.)
        let newest = states.last().copied().unwrap_or_default();
        let at_least = 10 * u32::try_from(refreshed).unwrap() + 1;
        // The last NOTIFY (terminated) tells the newest state; without it
        // (lost, or queued behind a NOTIFY retransmitted past Timer N)
        // Alice's unsubscription ended on Timer N.
        let got_last =
            events.iter().any(|e| matches!(e, SubscriptionEvent::Notified(n) if n.state == SubState::Terminated));
        assert!(newest >= at_least || !got_last, "{states:?}\n{}", s.trace());
        assert!(
            ended == SubscriptionEnd::Unsubscribed || (lost(&ended) && (struggled(alice) || struggled(bob))),
            "{ended:?}\n{}",
            s.trace()
        );
        let refreshes = alice.sent("SUBSCRIBE ").iter().filter(|m| header(m, "Expires") == Some("120")).count();
        assert!(refreshes > refreshed, "the first SUBSCRIBE and {refreshed} refreshes");
        if ended == SubscriptionEnd::Unsubscribed {
            // §4.1.2.3: the unsubscription is a SUBSCRIBE with Expires: 0
            // in the dialog; its last NOTIFY says terminated.
            let last = alice.sent("SUBSCRIBE ").last().map(|m| (*m).clone()).unwrap();
            assert_eq!(header(&last, "Expires"), Some("0"));
            assert!(header(&last, "To").unwrap().contains("tag="));
            let bob_sub = bob.incoming().unwrap();
            let bob_end = bob.ended(bob_sub);
            assert!(
                bob_end == Some(SubscriptionEnd::Unsubscribed) || bob_end.as_ref().is_some_and(lost),
                "{bob_end:?}\n{}",
                s.trace()
            );
        }
    });
}

#[test]
fn the_first_notify_arrives_before_the_2xx_and_forms_the_dialog() {
    let mut s = sim(notifier(), LinkConfig::default(), 1);
    // Bob's first 200 is lost; his NOTIFY goes at once, so it is first.
    s.nodes[1].drop = Some(("SIP/2.0 200", 1));
    let sub = subscribe(&mut s, "presence", 600);
    go(&mut s, 5);
    let events = s.nodes[0].of(sub);
    assert!(matches!(events[0], SubscriptionEvent::Notified(_)), "{events:?}");
    assert!(matches!(events[1], SubscriptionEvent::Accepted(_)), "{events:?}");
    let SubscriptionEvent::Notified(n) = &events[0] else { unreachable!() };
    assert_eq!((n.state, n.expires), (SubState::Active, Some(600)));
    // The dialog the NOTIFY formed carries the unsubscription: CSeq after
    // the first SUBSCRIBE's, Bob's tag in To.
    let now = s.now();
    s.nodes[0].ep.unsubscribe(now, sub).unwrap();
    go(&mut s, 5);
    let alice = &s.nodes[0];
    let subs = alice.sent("SUBSCRIBE ");
    let last = subs.last().unwrap();
    assert_eq!(cseq(last), cseq(subs[0]) + 1);
    assert_eq!(alice.ended(sub), Some(SubscriptionEnd::Unsubscribed));
    let bob = &s.nodes[1];
    assert_eq!(bob.ended(bob.incoming().unwrap()), Some(SubscriptionEnd::Unsubscribed));
    let final_notify = bob.sent("NOTIFY ").last().map(|m| (*m).clone()).unwrap();
    assert_eq!(header(&final_notify, "Subscription-State"), Some("terminated;reason=timeout"));
    // Transactions linger for Timer J and K (§17), then nothing is left.
    go(&mut s, 40);
    assert_eq!(s.nodes[0].ep.tables(), Tables::default());
    assert_eq!(s.nodes[1].ep.tables(), Tables::default());
}

#[test]
fn no_notify_within_timer_n_fails_the_subscription() {
    let mut s = sim(notifier(), LinkConfig::default(), 2);
    s.nodes[1].drop = Some(("NOTIFY ", usize::MAX));
    let sub = subscribe(&mut s, "presence", 600);
    go(&mut s, 31);
    assert_eq!(s.nodes[0].ended(sub), None, "Timer N is 64·T1 = 32 s");
    go(&mut s, 2);
    let alice = &s.nodes[0];
    assert!(alice.of(sub).iter().any(|e| matches!(e, SubscriptionEvent::Accepted(_))));
    assert_eq!(alice.ended(sub), Some(SubscriptionEnd::NoNotify));
    // Bob's NOTIFY timed out: his subscription ended too (§4.2.2).
    go(&mut s, 5);
    let bob = &s.nodes[1];
    assert_eq!(bob.ended(bob.incoming().unwrap()), Some(SubscriptionEnd::Failed(RequestError::Timeout)));
    assert_eq!(bob.ep.tables(), Tables::default());
}

#[test]
fn an_event_not_served_gets_489_with_allow_events() {
    let mut s = sim(notifier(), LinkConfig::default(), 3);
    let sub = subscribe(&mut s, "dialog", 600);
    go(&mut s, 2);
    let why = s.nodes[0].ended(sub).unwrap();
    let SubscriptionEnd::Failed(RequestError::Failure(r)) = why else { panic!("{why:?}") };
    assert_eq!(r.code, 489);
    let text = String::from_utf8_lossy(&r.bytes).into_owned();
    assert_eq!(header(&text, "Allow-Events"), Some("presence"));
    assert_eq!(s.nodes[1].incoming(), None);
}

#[test]
fn too_brief_gets_423_with_min_expires_and_subscribe_is_405_without_events() {
    let mut s = sim(notifier(), LinkConfig::default(), 4);
    let sub = subscribe(&mut s, "presence", 10);
    go(&mut s, 2);
    let SubscriptionEnd::Failed(RequestError::Failure(r)) = s.nodes[0].ended(sub).unwrap() else { panic!() };
    assert_eq!(r.code, 423);
    assert_eq!(header(&String::from_utf8_lossy(&r.bytes), "Min-Expires"), Some("60"));
    // Alice serves no event package: SUBSCRIBE is not allowed at all.
    let now = s.now();
    let mut back = Subscribe::new(&uri(0, "alice"), "presence");
    back.expires = 600;
    let back = s.nodes[1].ep.subscribe(now, back).unwrap();
    go(&mut s, 2);
    let SubscriptionEnd::Failed(RequestError::Failure(r)) = s.nodes[1].ended(back).unwrap() else { panic!() };
    assert_eq!(r.code, 405);
    let allow = header(&String::from_utf8_lossy(&r.bytes), "Allow").unwrap().to_owned();
    assert!(allow.contains("NOTIFY") && !allow.contains("SUBSCRIBE"), "{allow}");
}

#[test]
fn a_subscription_not_refreshed_ends_with_reason_timeout() {
    let mut s = sim(notifier(), LinkConfig::default(), 5);
    let sub = subscribe(&mut s, "presence", 60);
    go(&mut s, 5);
    // From now on Alice's refreshes are lost.
    s.nodes[0].drop = Some(("SUBSCRIBE ", usize::MAX));
    go(&mut s, 56);
    let bob = &s.nodes[1];
    let bob_sub = bob.incoming().unwrap();
    assert_eq!(bob.ended(bob_sub), Some(SubscriptionEnd::Expired), "§4.2.2 at 60 s");
    let last = bob.sent("NOTIFY ").last().map(|m| (*m).clone()).unwrap();
    assert_eq!(header(&last, "Subscription-State"), Some("terminated;reason=timeout"));
    let alice = &s.nodes[0];
    assert_eq!(
        alice.ended(sub),
        Some(SubscriptionEnd::Terminated { reason: Some("timeout".to_owned()), retry_after: None })
    );
    go(&mut s, 40);
    assert_eq!(s.nodes[0].ep.tables(), Tables::default());
    assert_eq!(s.nodes[1].ep.tables(), Tables::default());
}

#[test]
fn refresh_answered_481_ends_the_subscription() {
    let mut s = sim(notifier(), LinkConfig::default(), 6);
    let sub = subscribe(&mut s, "presence", 60);
    go(&mut s, 5);
    // Bob forgets everything (a restart): the refresh finds no dialog.
    let t0 = s.now();
    s.nodes[1] = Ua::new(1, "bob", t0, presence_server, notifier());
    go(&mut s, 45);
    let why = s.nodes[0].ended(sub).unwrap();
    assert!(matches!(&why, SubscriptionEnd::Failed(RequestError::Failure(r)) if r.code == 481), "{why:?}");
}

#[test]
fn shutdown_unsubscribes_and_terminates_with_noresource() {
    let t0 = Instant::now();
    // Alice watches Bob, Bob watches Carol; both serve presence.
    let a = Ua::new(0, "alice", t0, |_| {}, idle());
    let b = Ua::new(1, "bob", t0, presence_server, notifier());
    let c = Ua::new(2, "carol", t0, presence_server, notifier());
    let mut s = Sim::new(vec![a, b, c], LinkConfig::default(), 7, t0);
    let watching_bob = subscribe(&mut s, "presence", 600);
    let now = s.now();
    let mut sub = Subscribe::new(&uri(2, "carol"), "presence");
    sub.expires = 600;
    let watching_carol = s.nodes[1].ep.subscribe(now, sub).unwrap();
    go(&mut s, 3);
    // Bob shuts down: he unsubscribes from Carol and terminates Alice's.
    let now = s.now();
    s.nodes[1].ep.shutdown(now);
    s.nodes[1].pump();
    go(&mut s, 5);
    let bob = &s.nodes[1];
    assert_eq!(bob.ep.state(), EndpointState::Terminated);
    assert_eq!(bob.ended(watching_carol), Some(SubscriptionEnd::Unsubscribed));
    assert_eq!(bob.ended(bob.incoming().unwrap()), Some(SubscriptionEnd::ShutDown));
    assert_eq!(
        s.nodes[0].ended(watching_bob),
        Some(SubscriptionEnd::Terminated { reason: Some("noresource".to_owned()), retry_after: None })
    );
    let carol = &s.nodes[2];
    assert_eq!(carol.ended(carol.incoming().unwrap()), Some(SubscriptionEnd::Unsubscribed));
    go(&mut s, 40);
    for n in &s.nodes {
        assert_eq!(n.ep.tables(), Tables::default());
    }
}

#[test]
fn a_fetch_gets_one_terminated_notify() {
    fetch(false);
    // The NOTIFY's first copy lost: the 200 (Expires: 0) comes first.
    fetch(true);
}

fn fetch(notify_late: bool) {
    let mut s = sim(notifier(), LinkConfig::default(), 8);
    if notify_late {
        s.nodes[1].drop = Some(("NOTIFY ", 1));
    }
    let sub = subscribe(&mut s, "presence", 0);
    go(&mut s, 3);
    let alice = &s.nodes[0];
    assert_eq!(told(&alice.of(sub)), vec!["<presence>0</presence>".to_owned()]);
    assert_eq!(
        alice.ended(sub),
        Some(SubscriptionEnd::Terminated { reason: Some("timeout".to_owned()), retry_after: None })
    );
    assert!(alice.all().iter().all(|(id, _)| *id == sub));
    // A fetch is never refreshed (its 200 says Expires: 0).
    assert_eq!(alice.sent("SUBSCRIBE ").len(), 1, "{:?}", alice.sent("SUBSCRIBE "));
    go(&mut s, 40);
    assert_eq!(s.nodes[1].ep.tables(), Tables::default());
}

/// A NOTIFY from `from` (192.0.2.x) with tag `tag` in the dialog of
/// Alice's SUBSCRIBE `subscribe`, with CSeq `seq`, `event` and `state`.
fn notify_from(subscribe: &str, host: &str, tag: &str, seq: u32, event: &str, state: Option<&str>) -> Vec<u8> {
    let from_tag = header(subscribe, "From").unwrap().split("tag=").nth(1).unwrap();
    let call_id = header(subscribe, "Call-ID").unwrap();
    let state = state.map(|s| format!("Subscription-State: {s}\r\n")).unwrap_or_default();
    format!(
        "NOTIFY sip:alice@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {host}:5060;branch=z9hG4bK{tag}{seq}x{}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@{host}:5060>;tag={tag}\r\nTo: <sip:alice@192.0.2.1:5060>;tag={from_tag}\r\n\
         Call-ID: {call_id}\r\nCSeq: {seq} NOTIFY\r\nContact: <sip:bob@{host}:5060>\r\nEvent: {event}\r\n{state}\
         Content-Length: 0\r\n\r\n",
        event.len()
    )
    .into_bytes()
}

/// The status code of the last response Alice sent.
fn last_status(ua: &Ua) -> u16 {
    let r = ua.wire.iter().rev().find(|m| m.starts_with("SIP/2.0 ")).unwrap();
    r[8..11].parse().unwrap()
}

#[test]
fn forked_notifies_make_a_subscription_each_and_bad_ones_are_refused() {
    let t0 = Instant::now();
    let mut alice = Ua::new(0, "alice", t0, |_| {}, idle());
    let sub = alice.ep.subscribe(t0, Subscribe::new("sip:bob@192.0.2.2:5060", "presence")).unwrap();
    alice.pump();
    let subscribe = alice.sent("SUBSCRIBE ")[0].clone();
    let local = alice.ep.transport().listeners()[0].1;
    let a: SocketAddr = "192.0.2.2:5060".parse().unwrap();
    let b: SocketAddr = "192.0.2.3:5060".parse().unwrap();
    let deliver = |alice: &mut Ua, from: SocketAddr, bytes: &[u8], at: Instant| {
        alice.now = at;
        alice.ep.handle_datagram(at, local, from, bytes);
        alice.pump();
    };
    // §4.1.2.4: the first NOTIFY (fork A) comes before any 2xx: it forms
    // the original subscription's dialog.
    let t = t0 + Duration::from_millis(100);
    deliver(&mut alice, a, &notify_from(&subscribe, "192.0.2.2", "fa", 1, "presence", Some("active;expires=600")), t);
    assert_eq!(last_status(&alice), 200);
    assert!(matches!(alice.of(sub)[..], [SubscriptionEvent::Notified(_)]));
    // Fork B's NOTIFY: a subscription of its own.
    deliver(&mut alice, b, &notify_from(&subscribe, "192.0.2.3", "fb", 7, "presence", Some("pending")), t);
    assert_eq!(last_status(&alice), 200);
    let (fork, first) = alice.all().into_iter().find(|(id, _)| *id != sub).unwrap();
    assert_eq!(first, SubscriptionEvent::Forked { original: sub });
    let SubscriptionEvent::Notified(n) = &alice.of(fork)[1] else { panic!() };
    assert_eq!(n.state, SubState::Pending);
    assert_eq!(alice.ep.subscription_count(), 2);
    // §4.1.3: another package in the dialog: no such subscription (481);
    // no Subscription-State: 400; §12.2.2: an old CSeq: 500.
    deliver(&mut alice, a, &notify_from(&subscribe, "192.0.2.2", "fa", 2, "dialog", Some("active")), t);
    assert_eq!(last_status(&alice), 481);
    deliver(&mut alice, a, &notify_from(&subscribe, "192.0.2.2", "fa", 3, "presence", None), t);
    assert_eq!(last_status(&alice), 400);
    deliver(&mut alice, a, &notify_from(&subscribe, "192.0.2.2", "fa", 1, "presence;x=1", Some("active")), t);
    assert_eq!(last_status(&alice), 500);
    // The fork's unsubscription goes to fork B, in its dialog, CSeq after
    // the SUBSCRIBE's.
    alice.ep.unsubscribe(t, fork).unwrap();
    alice.pump();
    let unsub = alice.sent("SUBSCRIBE ").last().map(|m| (*m).clone()).unwrap();
    assert!(unsub.starts_with("SUBSCRIBE sip:bob@192.0.2.3:5060 "), "{unsub}");
    assert!(header(&unsub, "To").unwrap().ends_with(";tag=fb"));
    assert_eq!(cseq(&unsub), cseq(&subscribe) + 1);
    assert_eq!(header(&unsub, "Expires"), Some("0"));
    // Past Timer N (64·T1) no fork is taken any more.
    let late = t0 + Duration::from_secs(40);
    alice.ep.handle_timeout(late);
    deliver(&mut alice, b, &notify_from(&subscribe, "192.0.2.4", "fc", 1, "presence", Some("active")), late);
    assert_eq!(last_status(&alice), 481);
    // A NOTIFY outside any dialog: 481.
    let stray = String::from_utf8(notify_from(&subscribe, "192.0.2.2", "fa", 9, "presence", Some("active")))
        .unwrap()
        .replace(";tag=fa", "")
        .replace(&format!(";tag={}", header(&subscribe, "From").unwrap().split("tag=").nth(1).unwrap()), "");
    deliver(&mut alice, a, stray.as_bytes(), late);
    assert_eq!(last_status(&alice), 481);
}

/// Bob's application for transfers: answers calls, accepts a REFER,
/// calls its target with Referred-By and reports that call's progress to
/// the transferor (RFC 3515 §2.4.5).
fn transferee() -> Policy {
    let mut placed: std::collections::HashMap<sipline::endpoint::SessionId, SubscriptionId> =
        std::collections::HashMap::new();
    Box::new(move |ep, now, e| match e {
        Event::IncomingSession { session, .. } => ep.accept(now, *session, None).unwrap(),
        Event::Refer { subscription, refer_to, referred_by, .. } => {
            ep.accept_refer(now, *subscription).unwrap();
            let mut invite = sipline::endpoint::Request::invite(refer_to, "application/sdp", b"v=0\r\n".to_vec());
            invite.headers.push(("Referred-By".to_owned(), referred_by.clone().unwrap_or_default()));
            let call = ep.invite(now, invite).unwrap();
            placed.insert(call, *subscription);
        }
        Event::Session { session, event } => {
            let Some(&refer) = placed.get(session) else { return };
            let _ = match event {
                sipline::endpoint::SessionEvent::Progress(r) if r.code > 100 => {
                    ep.refer_progress(now, refer, r.code, &r.reason)
                }
                sipline::endpoint::SessionEvent::Answered(r) => ep.refer_progress(now, refer, r.code, &r.reason),
                sipline::endpoint::SessionEvent::Ended(sipline::endpoint::SessionEnd::Failed(e)) => match e {
                    RequestError::Failure(r) => ep.refer_progress(now, refer, r.code, &r.reason),
                    _ => ep.refer_progress(now, refer, 408, "Request Timeout"),
                },
                _ => Ok(()),
            };
        }
        _ => {}
    })
}

/// Carol: rings, then answers.
fn answering() -> Policy {
    Box::new(|ep, now, e| {
        if let Event::IncomingSession { session, .. } = e {
            ep.ring(now, *session, 180, None).unwrap();
            ep.accept(now, *session, Some(&Body::sdp(b"v=0\r\n".to_vec()))).unwrap();
        }
    })
}

/// Alice calls Bob and transfers him to Carol (RFC 3515): the REFER in
/// the call's dialog, 202, NOTIFYs with sipfrag bodies ending in
/// `SIP/2.0 200 OK` and `terminated;reason=noresource`, Bob's INVITE to
/// Carol with Referred-By. `hang_up_first`: Alice ends the call as soon as
/// the REFER is accepted; the subscription outlives it (RFC 5057).
fn transfer(seed: u64, link: LinkConfig, hang_up_first: bool) {
    let t0 = Instant::now();
    let a = Ua::new(0, "alice", t0, |_| {}, idle());
    let b = Ua::new(1, "bob", t0, |c| c.events = vec!["refer".to_owned()], transferee());
    let c = Ua::new(2, "carol", t0, |_| {}, answering());
    let mut s = Sim::new(vec![a, b, c], link, seed, t0);
    let call = s.nodes[0]
        .ep
        .invite(t0, sipline::endpoint::Request::invite(&uri(1, "bob"), "application/sdp", b"v=0\r\n".to_vec()))
        .unwrap();
    s.nodes[0].pump();
    go(&mut s, 40);
    if s.nodes[0].ep.session_confirmed(call) != Some(true) {
        return; // 30 % loss can defeat the INVITE itself (Timer B).
    }
    let now = s.now();
    let refer = s.nodes[0].ep.refer(now, call, &uri(2, "carol")).unwrap();
    s.nodes[0].pump();
    if hang_up_first {
        s.run_until(s.elapsed() + Duration::from_secs(40), 1_000_000, |s| {
            s.nodes[0].of(refer).iter().any(|e| matches!(e, SubscriptionEvent::Accepted(_)))
        });
        let now = s.now();
        if s.nodes[0].ep.session_confirmed(call).is_some() {
            s.nodes[0].ep.hangup(now, call).unwrap();
            s.nodes[0].pump();
        }
    }
    go(&mut s, 120);
    let (alice, bob, carol) = (&s.nodes[0], &s.nodes[1], &s.nodes[2]);
    let refers = alice.sent("REFER ");
    let Some(first) = refers.first() else { panic!("no REFER\n{}", s.trace()) };
    assert!(header(first, "Refer-To").is_some_and(|r| r.contains("carol@192.0.2.3")), "{first}");
    assert_eq!(header(first, "Referred-By"), Some("<sip:alice@192.0.2.1:5060>"));
    let events = alice.of(refer);
    let ended = alice.ended(refer).unwrap_or_else(|| panic!("transfer not over: {events:?}\n{}", s.trace()));
    let frags: Vec<u16> = events
        .iter()
        .filter_map(|e| match e {
            SubscriptionEvent::Notified(n) => {
                n.body.as_ref().map(|b| b.bytes[8..11].iter().fold(0, |a, d| a * 10 + u16::from(d - b'0')))
            }
            _ => None,
        })
        .collect();
    if ended != (SubscriptionEnd::Terminated { reason: Some("noresource".to_owned()), retry_after: None }) {
        assert!(lost(&ended) && (struggled(alice) || struggled(bob)), "{ended:?}\n{}", s.trace());
        return;
    }
    // Progress in order, ending with Carol's 200 (§2.4.5).
    assert!(frags.windows(2).all(|w| w[0] <= w[1]), "{frags:?}");
    let last = *frags.last().unwrap();
    if last == 200 {
        let invite = carol.sent("SIP/2.0 200").first().map(|_| ()).and(bob.sent("INVITE sip:carol").first().copied());
        let invite = invite.unwrap_or_else(|| panic!("Bob's INVITE to Carol\n{}", s.trace()));
        assert_eq!(header(invite, "Referred-By"), Some("<sip:alice@192.0.2.1:5060>"));
    } else {
        assert!(last >= 300 && struggled(bob), "{frags:?}\n{}", s.trace());
    }
    // Every NOTIFY went in the call's dialog (Alice's tag, Bob's tag).
    let alice_tag = header(first, "From").unwrap().split("tag=").nth(1).unwrap().to_owned();
    for n in bob.sent("NOTIFY ") {
        assert!(header(n, "To").unwrap().ends_with(&format!("tag={alice_tag}")), "{n}");
        assert!(header(n, "Event").unwrap().starts_with("refer;id="), "{n}");
    }
    go(&mut s, 40);
    assert_eq!(s.nodes[0].ep.subscription_count(), 0);
    assert_eq!(s.nodes[1].ep.subscription_count(), 0);
}

#[test]
fn blind_transfer_reports_the_new_call_on_a_lossy_network() {
    for_each_seed(20, |seed| transfer(seed, LinkConfig::lossy(), false));
}

#[test]
fn the_transfer_subscription_outlives_the_call_it_was_made_in() {
    for_each_seed(20, |seed| transfer(seed, LinkConfig::lossy(), true));
    transfer(1, LinkConfig::default(), true);
}

#[test]
fn refer_needs_one_refer_to_and_transfers_taken() {
    let t0 = Instant::now();
    let a = Ua::new(0, "alice", t0, |_| {}, idle());
    let b = Ua::new(1, "bob", t0, |c| c.events = vec!["refer".to_owned()], idle());
    let mut s = Sim::new(vec![a, b], LinkConfig::default(), 9, t0);
    // Outside a dialog, without Refer-To: 400 (§2.4.1).
    let r = s.nodes[0]
        .ep
        .send_request(t0, sipline::endpoint::Request::new(sipline::message::Method::Refer, &uri(1, "bob")));
    let r = r.unwrap();
    s.nodes[0].pump();
    go(&mut s, 2);
    let outcome = s.nodes[0].events.iter().find_map(|(_, e)| match e {
        Event::Outcome { request, result: Err(RequestError::Failure(resp)) } if *request == r => Some(resp.code),
        _ => None,
    });
    assert_eq!(outcome, Some(400));
    // Bob takes transfers: REFER is in his Allow; Alice's is not.
    let now = s.now();
    let o = s.nodes[0]
        .ep
        .send_request(now, sipline::endpoint::Request::new(sipline::message::Method::Options, &uri(1, "bob")));
    o.unwrap();
    s.nodes[0].pump();
    go(&mut s, 2);
    let ok = s.nodes[1].sent("SIP/2.0 200").last().map(|m| (*m).clone()).unwrap();
    assert!(header(&ok, "Allow").unwrap().contains("REFER"), "{ok}");
}

/// Interop (liblinphone 5.1): a NOTIFY without Contact that overtakes the
/// 2xx still forms the dialog (the SUBSCRIBE's target standing in), and a
/// malformed `reason=reason=…` still ends it; the 2xx's Contact then
/// becomes the target of the unsubscription.
#[test]
fn a_notify_without_contact_before_the_2xx_is_taken() {
    let t0 = Instant::now();
    let mut alice = Ua::new(0, "alice", t0, |_| {}, idle());
    let sub = alice.ep.subscribe(t0, Subscribe::new("sip:bob@192.0.2.2:5060", "presence")).unwrap();
    alice.pump();
    let subscribe = alice.sent("SUBSCRIBE ")[0].clone();
    let local = alice.ep.transport().listeners()[0].1;
    let a: SocketAddr = "192.0.2.2:5060".parse().unwrap();
    let t = t0 + Duration::from_millis(50);
    let notify =
        String::from_utf8(notify_from(&subscribe, "192.0.2.2", "fa", 1, "presence", Some("active;expires=60")))
            .unwrap()
            .replace("Contact: <sip:bob@192.0.2.2:5060>\r\n", "");
    alice.ep.handle_datagram(t, local, a, notify.as_bytes());
    alice.pump();
    assert_eq!(last_status(&alice), 200);
    // The 2xx, with the peer's real Contact.
    let from_tag = header(&subscribe, "From").unwrap().split("tag=").nth(1).unwrap().to_owned();
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: <sip:alice@192.0.2.1:5060>;tag={from_tag}\r\n\
         To: <sip:bob@192.0.2.2:5060>;tag=fa\r\nCall-ID: {}\r\nCSeq: 1 SUBSCRIBE\r\n\
         Contact: <sip:bob@192.0.2.2:5999>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n",
        header(&subscribe, "Via").unwrap(),
        header(&subscribe, "Call-ID").unwrap()
    );
    alice.ep.handle_datagram(t, local, a, ok.as_bytes());
    alice.pump();
    assert!(alice.of(sub).iter().any(|e| matches!(e, SubscriptionEvent::Accepted(_))));
    alice.ep.unsubscribe(t, sub).unwrap();
    alice.pump();
    let unsub = alice.sent("SUBSCRIBE ").last().map(|m| (*m).clone()).unwrap();
    assert!(unsub.starts_with("SUBSCRIBE sip:bob@192.0.2.2:5999 "), "{unsub}");
    let last = String::from_utf8(notify_from(
        &subscribe,
        "192.0.2.2",
        "fa",
        2,
        "presence",
        Some("terminated;reason=reason=noresource"),
    ))
    .unwrap()
    .replace("Contact: <sip:bob@192.0.2.2:5060>\r\n", "");
    alice.ep.handle_datagram(t, local, a, last.as_bytes());
    alice.pump();
    assert_eq!(last_status(&alice), 200);
    assert_eq!(alice.ended(sub), Some(SubscriptionEnd::Unsubscribed));
}
