//! The `reg` event package (RFC 3680), served by the registrar: a user
//! subscribes to its own address of record (phones do, to learn when
//! their registration is cut short) and is told its bindings as
//! `application/reginfo+xml`, in full each time, the document version
//! counting up (§5.1). The registrar looks at the location service once a
//! second for each such subscription and notifies when a binding was
//! made, refreshed, removed or expired — changes made by any worker or
//! instance alike, since they all share the store.

use super::{Phase, Role, SubState, SubscriptionId, Timer};
use crate::dialog::Dialog;
use crate::endpoint::{uas, Body, Endpoint};
use crate::event::{ContactEvent, ContactState, DocState, RegContact, Reginfo, Registration};
use crate::message::{Message, ResponseHead, Uri};
use crate::registrar::{Binding, Lookup};
use crate::transaction::ServerId;
use crate::transport::{Peer, Source};
use std::time::{Duration, Instant};

/// How often the bindings are looked at.
const POLL: Duration = Duration::from_secs(1);

/// RFC 3680 §6: the package's default subscription duration.
const DEFAULT_EXPIRES: u32 = 3761;

/// One binding as last told.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Told {
    contact: String,
    call_id: String,
    cseq: u32,
    expires: Instant,
    /// The `id` of its `<contact>` (stable for the subscription, §5.3).
    id: u32,
    /// What last happened to it.
    event: ContactEvent,
}

/// What a `reg` subscription watches and last told.
#[derive(Debug, Clone)]
pub(super) struct RegWatch {
    aor: String,
    told: Vec<Told>,
    /// The next document's version (§5.1: 0 first, then one more each).
    version: u32,
    next_id: u32,
}

impl Endpoint {
    /// A SUBSCRIBE for `reg` at one of the domain's AORs, from its owner
    /// (authenticated by the caller, RFC 3680 §5): accepted at once, with
    /// the bindings in the first NOTIFY.
    pub(in crate::endpoint) fn reg_subscribe(
        &mut self,
        now: Instant,
        server: ServerId,
        m: &Message<'_>,
        source: Source,
        aor: String,
    ) {
        let limits = self.config.subscription_expires;
        let asked = super::expires_of(m).unwrap_or(DEFAULT_EXPIRES);
        if asked != 0 && asked < limits.min {
            let min = limits.min.to_string();
            self.answer_with(now, server, m, uas::status(423), "Interval Too Brief", &[("Min-Expires", &min)]);
            return;
        }
        let tag = self.subscription_tag();
        let Ok(dialog) = Dialog::from_uas(m, &tag) else {
            self.answer(now, server, m, uas::status(400), "Bad Request");
            return;
        };
        let Some(head) = ResponseHead::of(m, &tag) else { return };
        let event = m
            .headers()
            .first(crate::message::HeaderName::Event)
            .and_then(crate::message::Header::value_str)
            .unwrap_or("reg")
            .to_owned();
        let (call_id, remote) = (dialog.id().call_id.clone(), dialog.id().remote_tag.clone());
        let s = self.new_subscription(Role::Notifier, Phase::Offered, event, call_id, tag);
        if let Some(x) = self.subscriptions.all.get_mut(&s) {
            x.dialog = Some(dialog);
            x.expires = asked.min(limits.max.max(DEFAULT_EXPIRES));
            x.offer = Some(super::Offer { server, head, peer: Peer::reply_to_message(&source, m) });
            x.reg = Some(Box::new(RegWatch { aor, told: Vec::new(), version: 0, next_id: 1 }));
        }
        self.subscriptions.rekey(s, &remote);
        self.pin_subscription(now, s, source.conn);
        let doc = self.reg_document(now, s, true);
        if self.accept_as(now, s, (200, "OK"), SubState::Active, doc).is_ok() {
            self.subscriptions.set_timer(s, Timer::RegPoll, now + POLL);
        }
    }

    /// The reginfo document for `s` if its bindings changed since the last
    /// one told (or always with `force`); `None` if nothing changed.
    pub(super) fn reg_document(&mut self, now: Instant, s: SubscriptionId, force: bool) -> Option<Body> {
        let aor = self.subscriptions.all.get(&s)?.reg.as_ref()?.aor.clone();
        let uri = Uri::parse(&aor).ok()?;
        let bindings = match self.server_state(now)?.registrar().targets(now, &uri) {
            Lookup::Aor(b) => b,
            _ => Vec::new(),
        };
        let watch = self.subscriptions.all.get_mut(&s)?.reg.as_mut()?;
        watch.document(now, &bindings, force)
    }

    /// A `reg` subscription's poll: NOTIFY if its bindings changed.
    pub(super) fn reg_poll(&mut self, now: Instant, s: SubscriptionId) {
        let active = self.subscriptions.all.get(&s).is_some_and(|x| x.phase == Phase::Active);
        if !active {
            return;
        }
        if let Some(doc) = self.reg_document(now, s, false) {
            self.send_notify(now, s, (SubState::Active, None, Some(doc)));
        }
        self.subscriptions.set_timer(s, Timer::RegPoll, now + POLL);
    }
}

impl RegWatch {
    /// Compares `bindings` with what was told; a new full document if
    /// anything changed (or `force`).
    fn document(&mut self, now: Instant, bindings: &[Binding], force: bool) -> Option<Body> {
        let mut contacts = Vec::new();
        let mut told = Vec::with_capacity(bindings.len());
        let mut changed = false;
        for b in bindings {
            let before = self.told.iter().find(|t| t.contact == b.contact);
            let event = match before {
                None => ContactEvent::Registered,
                Some(t) if t.call_id != b.call_id || t.cseq != b.cseq => {
                    if b.expires < t.expires {
                        ContactEvent::Shortened
                    } else {
                        ContactEvent::Refreshed
                    }
                }
                Some(t) => t.event,
            };
            changed |= before.is_none_or(|t| t.call_id != b.call_id || t.cseq != b.cseq);
            let id = before.map_or_else(
                || {
                    self.next_id += 1;
                    self.next_id
                },
                |t| t.id,
            );
            told.push(Told {
                contact: b.contact.clone(),
                call_id: b.call_id.clone(),
                cseq: b.cseq,
                expires: b.expires,
                id,
                event,
            });
            contacts.push(contact_of(b, id, now, ContactState::Active, event));
        }
        // §5.3: a contact gone is told once more, terminated: expired if
        // its time ran out, unregistered otherwise.
        for gone in self.told.iter().filter(|t| !bindings.iter().any(|b| b.contact == t.contact)) {
            changed = true;
            let event = if gone.expires <= now { ContactEvent::Expired } else { ContactEvent::Unregistered };
            let mut c = RegContact::new(format!("c{}", gone.id), gone.contact.clone(), ContactState::Terminated, event);
            c.callid = Some(gone.call_id.clone().into());
            c.cseq = Some(gone.cseq);
            contacts.push(c);
        }
        self.told = told;
        if !changed && !force {
            return None;
        }
        let state = match (bindings.is_empty(), self.version) {
            (false, _) => crate::event::RegistrationState::Active,
            (true, 0) => crate::event::RegistrationState::Init,
            (true, _) => crate::event::RegistrationState::Terminated,
        };
        let mut registration = Registration::new(self.aor.clone(), "r1", state);
        for c in contacts {
            registration = registration.with_contact(c);
        }
        let doc = Reginfo::new(self.version, DocState::Full).with_registration(registration);
        self.version = self.version.wrapping_add(1);
        let text = doc.to_body().ok()?;
        Some(Body::new(Reginfo::CONTENT_TYPE, text))
    }
}

/// A bound contact as a `<contact>` (§5.3).
fn contact_of(b: &Binding, id: u32, now: Instant, state: ContactState, event: ContactEvent) -> RegContact<'static> {
    let mut c = RegContact::new(format!("c{id}"), b.contact.clone(), state, event);
    c.expires = u32::try_from(b.remaining(now).as_secs()).ok();
    c.duration_registered = u32::try_from(now.saturating_duration_since(b.registered_at).as_secs()).ok();
    c.callid = Some(b.call_id.clone().into());
    c.cseq = Some(b.cseq);
    c.q = b.q.map(|q| format!("{}.{:03}", q / 1000, q % 1000).into());
    c
}
