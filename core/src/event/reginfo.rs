//! The registration event package's body, `application/reginfo+xml`
//! (RFC 3680 §5): the state of the contacts bound to an address of record.

use super::xml::{self, Element, Ns};
use super::EventError;
use crate::message::grammar::whole_u32;
use std::borrow::Cow;

macro_rules! keyword_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// The value as written in the document.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            fn from_text(s: &str) -> Option<Self> {
                match s.trim_ascii() {
                    $($text => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

keyword_enum! {
    /// Whether a document holds the whole state or changes since the last
    /// one (RFC 3680 §5.1, the `state` attribute of `<reginfo>`).
    DocState {
        /// `full`: every registration the subscription covers.
        Full = "full",
        /// `partial`: only the registrations that changed.
        Partial = "partial",
    }
}

keyword_enum! {
    /// The state of a registration, one AOR (RFC 3680 §5.2).
    RegistrationState {
        /// `init`: no contacts bound, none being set up.
        Init = "init",
        /// `active`: at least one contact bound.
        Active = "active",
        /// `terminated`: the last contact went away.
        Terminated = "terminated",
    }
}

keyword_enum! {
    /// The state of one contact (RFC 3680 §5.2).
    ContactState {
        /// `active`: bound.
        Active = "active",
        /// `terminated`: no longer bound.
        Terminated = "terminated",
    }
}

keyword_enum! {
    /// What last happened to a contact (RFC 3680 §5.2.2 and §5.3).
    ContactEvent {
        /// `registered`: bound by a REGISTER.
        Registered = "registered",
        /// `created`: bound by administrative action.
        Created = "created",
        /// `refreshed`: a REGISTER refreshed it.
        Refreshed = "refreshed",
        /// `shortened`: its expiry was brought forward.
        Shortened = "shortened",
        /// `expired`: it was not refreshed in time.
        Expired = "expired",
        /// `deactivated`: removed; the user may register again at once.
        Deactivated = "deactivated",
        /// `probation`: removed; register again after `retry-after`.
        Probation = "probation",
        /// `unregistered`: removed by a REGISTER with expires 0.
        Unregistered = "unregistered",
        /// `rejected`: removed by policy; do not register again.
        Rejected = "rejected",
    }
}

/// A `<contact>` of a registration (RFC 3680 §5.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegContact<'a> {
    /// The `id` attribute: stable across documents of a subscription.
    pub id: Cow<'a, str>,
    /// The `state` attribute.
    pub state: ContactState,
    /// The `event` attribute.
    pub event: ContactEvent,
    /// The `<uri>` element, trimmed.
    pub uri: Cow<'a, str>,
    /// The `<display-name>` element.
    pub display_name: Option<Cow<'a, str>>,
    /// `expires`: seconds until the binding expires.
    pub expires: Option<u32>,
    /// `retry-after`: seconds before re-registering (with `probation`).
    pub retry_after: Option<u32>,
    /// `duration-registered`: seconds since the binding was made.
    pub duration_registered: Option<u32>,
    /// `q`: the contact's preference as written (a qvalue).
    pub q: Option<Cow<'a, str>>,
    /// `callid`: the Call-ID of the REGISTER that last changed it.
    pub callid: Option<Cow<'a, str>>,
    /// `cseq`: the CSeq number of that REGISTER.
    pub cseq: Option<u32>,
}

impl<'a> RegContact<'a> {
    /// A contact with its required attributes and URI; the optional ones
    /// are `None` (set the fields to add them).
    pub fn new(
        id: impl Into<Cow<'a, str>>,
        uri: impl Into<Cow<'a, str>>,
        state: ContactState,
        event: ContactEvent,
    ) -> Self {
        RegContact {
            id: id.into(),
            state,
            event,
            uri: uri.into(),
            display_name: None,
            expires: None,
            retry_after: None,
            duration_registered: None,
            q: None,
            callid: None,
            cseq: None,
        }
    }
}

/// A `<registration>`: one address of record (RFC 3680 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration<'a> {
    /// The `aor` attribute.
    pub aor: Cow<'a, str>,
    /// The `id` attribute.
    pub id: Cow<'a, str>,
    /// The `state` attribute.
    pub state: RegistrationState,
    /// The contacts, in document order.
    pub contacts: Vec<RegContact<'a>>,
}

impl<'a> Registration<'a> {
    /// A registration without contacts.
    pub fn new(aor: impl Into<Cow<'a, str>>, id: impl Into<Cow<'a, str>>, state: RegistrationState) -> Self {
        Registration { aor: aor.into(), id: id.into(), state, contacts: Vec::new() }
    }

    /// The same registration with one more contact.
    #[must_use]
    pub fn with_contact(mut self, contact: RegContact<'a>) -> Self {
        self.contacts.push(contact);
        self
    }
}

/// A reginfo document (RFC 3680 §5).
///
/// ```
/// use sipline::event::*;
/// let doc = Reginfo::new(0, DocState::Full).with_registration(
///     Registration::new("sip:alice@example.com", "a7", RegistrationState::Active).with_contact(RegContact::new(
///         "c1",
///         "sip:alice@192.0.2.4",
///         ContactState::Active,
///         ContactEvent::Registered,
///     )),
/// );
/// let body = doc.to_body()?;
/// assert_eq!(Reginfo::parse(body.as_bytes())?, doc);
/// # Ok::<(), sipline::event::EventError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reginfo<'a> {
    /// The `version` attribute: 0 in a subscription's first document, one
    /// more in each after (RFC 3680 §5.1).
    pub version: u32,
    /// The `state` attribute.
    pub state: DocState,
    /// The registrations, in document order.
    pub registrations: Vec<Registration<'a>>,
}

fn attr<'s, 'a>(
    el: &'s Element<'a>,
    element: &'static str,
    attribute: &'static str,
) -> Result<&'s Cow<'a, str>, EventError> {
    el.attr(attribute).ok_or(EventError::MissingAttribute { element, attribute })
}

fn number(el: &Element<'_>, attribute: &'static str) -> Result<Option<u32>, EventError> {
    el.attr(attribute)
        .map(|v| whole_u32(v.trim_ascii().as_bytes()).ok_or(EventError::BadValue { field: attribute }))
        .transpose()
}

fn keyword<T>(
    el: &Element<'_>,
    element: &'static str,
    attribute: &'static str,
    f: fn(&str) -> Option<T>,
) -> Result<T, EventError> {
    f(attr(el, element, attribute)?).ok_or(EventError::BadValue { field: attribute })
}

fn trimmed<'a>(c: &Cow<'a, str>) -> Cow<'a, str> {
    match c {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim_ascii()),
        Cow::Owned(s) => Cow::Owned(s.trim_ascii().to_owned()),
    }
}

impl<'a> Reginfo<'a> {
    /// The MIME type of a reginfo body (RFC 3680 §5).
    pub const CONTENT_TYPE: &'static str = "application/reginfo+xml";

    /// An empty document.
    pub fn new(version: u32, state: DocState) -> Self {
        Reginfo { version, state, registrations: Vec::new() }
    }

    /// The same document with one more registration.
    #[must_use]
    pub fn with_registration(mut self, registration: Registration<'a>) -> Self {
        self.registrations.push(registration);
        self
    }

    /// Parses a reginfo body. Elements of other namespaces (extensions,
    /// RFC 3680 §5.4 `any`) are skipped.
    pub fn parse(body: &'a [u8]) -> Result<Self, EventError> {
        let root = xml::parse(body)?;
        if !(root.ns.is(Ns::Reginfo) && root.name == "reginfo") {
            return Err(EventError::WrongRoot { expected: "reginfo" });
        }
        let version = number(&root, "version")?
            .ok_or(EventError::MissingAttribute { element: "reginfo", attribute: "version" })?;
        let state = keyword(&root, "reginfo", "state", DocState::from_text)?;
        let mut registrations = Vec::new();
        for r in root.children_named(Ns::Reginfo, "registration") {
            let mut reg = Registration {
                aor: trimmed(attr(r, "registration", "aor")?),
                id: attr(r, "registration", "id")?.clone(),
                state: keyword(r, "registration", "state", RegistrationState::from_text)?,
                contacts: Vec::new(),
            };
            for c in r.children_named(Ns::Reginfo, "contact") {
                let uri = c
                    .child(Ns::Reginfo, "uri")
                    .map(|u| trimmed(&u.text))
                    .ok_or(EventError::MissingElement { parent: "contact", element: "uri" })?;
                reg.contacts.push(RegContact {
                    id: attr(c, "contact", "id")?.clone(),
                    state: keyword(c, "contact", "state", ContactState::from_text)?,
                    event: keyword(c, "contact", "event", ContactEvent::from_text)?,
                    uri,
                    display_name: c.child(Ns::Reginfo, "display-name").map(|d| d.text.clone()),
                    expires: number(c, "expires")?,
                    retry_after: number(c, "retry-after")?,
                    duration_registered: number(c, "duration-registered")?,
                    q: c.attr("q").map(trimmed),
                    callid: c.attr("callid").cloned(),
                    cseq: number(c, "cseq")?,
                });
            }
            registrations.push(reg);
        }
        Ok(Reginfo { version, state, registrations })
    }

    /// Writes the document (UTF-8, the reginfo namespace as the default).
    pub fn to_body(&self) -> Result<String, EventError> {
        let mut out = String::with_capacity(256);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<reginfo xmlns=\"");
        out.push_str(xml::NS_REGINFO);
        out.push_str("\" version=\"");
        out.push_str(&self.version.to_string());
        out.push_str("\" state=\"");
        out.push_str(self.state.as_str());
        out.push_str("\">\r\n");
        for r in &self.registrations {
            out.push_str("  <registration");
            xml::attribute(&mut out, "aor", &r.aor, "aor")?;
            xml::attribute(&mut out, "id", &r.id, "registration id")?;
            xml::attribute(&mut out, "state", r.state.as_str(), "state")?;
            out.push_str(">\r\n");
            for c in &r.contacts {
                out.push_str("    <contact");
                xml::attribute(&mut out, "id", &c.id, "contact id")?;
                xml::attribute(&mut out, "state", c.state.as_str(), "state")?;
                xml::attribute(&mut out, "event", c.event.as_str(), "event")?;
                for (name, v) in [
                    ("expires", c.expires),
                    ("retry-after", c.retry_after),
                    ("duration-registered", c.duration_registered),
                    ("cseq", c.cseq),
                ] {
                    if let Some(v) = v {
                        xml::attribute(&mut out, name, &v.to_string(), name)?;
                    }
                }
                if let Some(q) = &c.q {
                    xml::attribute(&mut out, "q", q, "q")?;
                }
                if let Some(id) = &c.callid {
                    xml::attribute(&mut out, "callid", id, "callid")?;
                }
                out.push_str(">\r\n      ");
                xml::text_element(&mut out, "uri", &c.uri, "uri")?;
                out.push_str("\r\n");
                if let Some(d) = &c.display_name {
                    out.push_str("      ");
                    xml::text_element(&mut out, "display-name", d, "display-name")?;
                    out.push_str("\r\n");
                }
                out.push_str("    </contact>\r\n");
            }
            out.push_str("  </registration>\r\n");
        }
        out.push_str("</reginfo>\r\n");
        Ok(out)
    }
}
