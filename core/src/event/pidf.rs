//! PIDF, the Presence Information Data Format (RFC 3863), as the presence
//! event package carries it (RFC 3856 §6.4, `application/pidf+xml`).

use super::xml::{self, Element, Ns};
use super::EventError;
use crate::message::Uri;
use std::borrow::Cow;

/// The `basic` status of a tuple (RFC 3863 §4.1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Basic {
    /// `open`: the contact can be reached.
    Open,
    /// `closed`: it cannot.
    Closed,
}

impl Basic {
    /// The value as written in `<basic>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Basic::Open => "open",
            Basic::Closed => "closed",
        }
    }
}

/// A `<note>`: free text with an optional `xml:lang` (RFC 3863 §4.1.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note<'a> {
    /// The text, references resolved (borrowed from the body when it holds
    /// none).
    pub text: Cow<'a, str>,
    /// The `xml:lang` attribute (RFC 3863 §4.1.6), e.g. `en`.
    pub lang: Option<Cow<'a, str>>,
}

impl<'a> Note<'a> {
    /// A note without a language.
    pub fn new(text: impl Into<Cow<'a, str>>) -> Self {
        Note { text: text.into(), lang: None }
    }

    /// The same note tagged with `xml:lang`.
    #[must_use]
    pub fn with_lang(mut self, lang: impl Into<Cow<'a, str>>) -> Self {
        self.lang = Some(lang.into());
        self
    }
}

/// A `<tuple>`: one segment of presence information (RFC 3863 §4.1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple<'a> {
    /// The `id` attribute, unique within the document.
    pub id: Cow<'a, str>,
    /// `<status><basic>`; `None` when the status carries only extensions
    /// (RFC 3863 §4.1.4 makes `basic` optional).
    pub basic: Option<Basic>,
    /// `<contact>`: the URI to reach this tuple at (§4.1.5), trimmed.
    pub contact: Option<Cow<'a, str>>,
    /// The contact's `priority` attribute, a qvalue as written (§4.1.5).
    pub priority: Option<Cow<'a, str>>,
    /// The tuple's `<note>`s (§4.1.6).
    pub notes: Vec<Note<'a>>,
    /// `<timestamp>` as written, trimmed (§4.1.7).
    pub timestamp: Option<Cow<'a, str>>,
}

impl<'a> Tuple<'a> {
    /// A tuple with its id and basic status.
    pub fn new(id: impl Into<Cow<'a, str>>, basic: Basic) -> Self {
        Tuple { id: id.into(), basic: Some(basic), contact: None, priority: None, notes: Vec::new(), timestamp: None }
    }

    /// The same tuple with a `<contact>`.
    #[must_use]
    pub fn with_contact(mut self, contact: impl Into<Cow<'a, str>>) -> Self {
        self.contact = Some(contact.into());
        self
    }

    /// The same tuple with one more `<note>`.
    #[must_use]
    pub fn with_note(mut self, note: Note<'a>) -> Self {
        self.notes.push(note);
        self
    }

    /// The same tuple with a `<timestamp>` (an RFC 3339 date-time).
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: impl Into<Cow<'a, str>>) -> Self {
        self.timestamp = Some(timestamp.into());
        self
    }
}

/// A `<dm:person>` of the data model (RFC 4479 §3.1, carried in PIDF as
/// RFC 4479 §4 and RPID, RFC 4480, describe): phones put the user's
/// activities and a note there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person<'a> {
    /// The `id` attribute (required by RFC 4479's schema; `None` when a
    /// sender left it out).
    pub id: Option<Cow<'a, str>>,
    /// The person's notes.
    pub notes: Vec<Note<'a>>,
}

/// A PIDF document (RFC 3863 §4): the presentity and its tuples.
///
/// Parsing is namespace aware and tolerant: any prefix may stand for the
/// PIDF namespace (or none at all), elements of other namespaces (RPID,
/// capabilities, vendors') are skipped, and data-model persons' notes are
/// kept in [`Presence::persons`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence<'a> {
    /// The `entity` attribute: the presentity's URI (`pres:` or `sip:`,
    /// RFC 3863 §4.1.1).
    pub entity: Cow<'a, str>,
    /// The tuples, in document order.
    pub tuples: Vec<Tuple<'a>>,
    /// Notes of the whole document (`<presence><note>`, §4.1.6).
    pub notes: Vec<Note<'a>>,
    /// The data-model persons (RFC 4479), in document order.
    pub persons: Vec<Person<'a>>,
}

fn trimmed<'a>(c: &Cow<'a, str>) -> Cow<'a, str> {
    match c {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim_ascii()),
        Cow::Owned(s) => Cow::Owned(s.trim_ascii().to_owned()),
    }
}

fn note<'a>(el: &Element<'a>) -> Note<'a> {
    Note { text: el.text.clone(), lang: el.attr("xml:lang").cloned() }
}

impl<'a> Presence<'a> {
    /// The MIME type of a PIDF body (RFC 3863 §6).
    pub const CONTENT_TYPE: &'static str = "application/pidf+xml";

    /// A document for `entity` with one tuple: what a presence
    /// publication or NOTIFY of a single device holds (RFC 3856 §6.4).
    pub fn new(entity: impl Into<Cow<'a, str>>, tuple: Tuple<'a>) -> Self {
        Presence { entity: entity.into(), tuples: vec![tuple], notes: Vec::new(), persons: Vec::new() }
    }

    /// Whether any tuple is `open`.
    pub fn is_open(&self) -> bool {
        self.tuples.iter().any(|t| t.basic == Some(Basic::Open))
    }

    /// Parses a PIDF body.
    pub fn parse(body: &'a [u8]) -> Result<Self, EventError> {
        let root = xml::parse(body)?;
        if !(root.ns.is(Ns::Pidf) && root.name == "presence") {
            return Err(EventError::WrongRoot { expected: "presence" });
        }
        // §4.1.1: the entity attribute is required.
        let entity = root
            .attr("entity")
            .map(trimmed)
            .filter(|e| !e.is_empty())
            .ok_or(EventError::MissingAttribute { element: "presence", attribute: "entity" })?;
        let mut tuples = Vec::new();
        for t in root.children_named(Ns::Pidf, "tuple") {
            // §4.1.2: id and status are required.
            let id = t.attr("id").cloned().ok_or(EventError::MissingAttribute { element: "tuple", attribute: "id" })?;
            let status =
                t.child(Ns::Pidf, "status").ok_or(EventError::MissingElement { parent: "tuple", element: "status" })?;
            let basic = match status.child(Ns::Pidf, "basic") {
                None => None,
                Some(b) => match b.text.trim_ascii() {
                    "open" => Some(Basic::Open),
                    "closed" => Some(Basic::Closed),
                    _ => return Err(EventError::BadValue { field: "basic" }),
                },
            };
            let contact = t.child(Ns::Pidf, "contact");
            tuples.push(Tuple {
                id,
                basic,
                contact: contact.map(|c| trimmed(&c.text)),
                priority: contact.and_then(|c| c.attr("priority")).map(trimmed),
                notes: t.children_named(Ns::Pidf, "note").map(note).collect(),
                timestamp: t.child(Ns::Pidf, "timestamp").map(|c| trimmed(&c.text)),
            });
        }
        let persons = root
            .children
            .iter()
            .filter(|c| c.ns == Ns::DataModel && c.name == "person")
            .map(|p| Person {
                id: p.attr("id").cloned(),
                // The data model's own note; some senders use PIDF's.
                notes: p
                    .children
                    .iter()
                    .filter(|n| n.name == "note" && matches!(n.ns, Ns::DataModel | Ns::Pidf | Ns::None))
                    .map(note)
                    .collect(),
            })
            .collect();
        Ok(Presence { entity, tuples, notes: root.children_named(Ns::Pidf, "note").map(note).collect(), persons })
    }

    /// Writes the document: UTF-8, the PIDF namespace as the default one,
    /// the data-model namespace as `dm` when there are persons.
    ///
    /// Refused: an entity that is not a URI, a tuple or person id that is
    /// not an XML name, and text XML cannot carry.
    pub fn to_body(&self) -> Result<String, EventError> {
        if Uri::parse(&self.entity).is_err() {
            return Err(EventError::BadValue { field: "entity" });
        }
        let mut out = String::with_capacity(256);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<presence xmlns=\"");
        out.push_str(xml::NS_PIDF);
        out.push('"');
        if !self.persons.is_empty() {
            out.push_str(" xmlns:dm=\"");
            out.push_str(xml::NS_DATA_MODEL);
            out.push('"');
        }
        xml::attribute(&mut out, "entity", &self.entity, "entity")?;
        out.push_str(">\r\n");
        for t in &self.tuples {
            if !xml::is_ascii_ncname(&t.id) {
                return Err(EventError::BadValue { field: "tuple id" });
            }
            // §4.1.2 order: status, contact, note*, timestamp.
            out.push_str("  <tuple");
            xml::attribute(&mut out, "id", &t.id, "tuple id")?;
            out.push_str(">\r\n    <status>");
            if let Some(b) = t.basic {
                out.push_str("<basic>");
                out.push_str(b.as_str());
                out.push_str("</basic>");
            }
            out.push_str("</status>\r\n");
            if let Some(c) = &t.contact {
                out.push_str("    <contact");
                if let Some(p) = &t.priority {
                    xml::attribute(&mut out, "priority", p, "priority")?;
                }
                out.push('>');
                xml::escape_into(&mut out, c, "contact")?;
                out.push_str("</contact>\r\n");
            }
            for n in &t.notes {
                write_note(&mut out, "    ", "note", n)?;
            }
            if let Some(ts) = &t.timestamp {
                out.push_str("    ");
                xml::text_element(&mut out, "timestamp", ts, "timestamp")?;
                out.push_str("\r\n");
            }
            out.push_str("  </tuple>\r\n");
        }
        for n in &self.notes {
            write_note(&mut out, "  ", "note", n)?;
        }
        for p in &self.persons {
            out.push_str("  <dm:person");
            if let Some(id) = &p.id {
                if !xml::is_ascii_ncname(id) {
                    return Err(EventError::BadValue { field: "person id" });
                }
                xml::attribute(&mut out, "id", id, "person id")?;
            }
            out.push_str(">\r\n");
            for n in &p.notes {
                write_note(&mut out, "    ", "dm:note", n)?;
            }
            out.push_str("  </dm:person>\r\n");
        }
        out.push_str("</presence>\r\n");
        Ok(out)
    }
}

fn write_note(out: &mut String, indent: &str, name: &str, n: &Note<'_>) -> Result<(), EventError> {
    out.push_str(indent);
    out.push('<');
    out.push_str(name);
    if let Some(lang) = &n.lang {
        xml::attribute(out, "xml:lang", lang, "xml:lang")?;
    }
    out.push('>');
    xml::escape_into(out, &n.text, "note")?;
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\r\n");
    Ok(())
}
