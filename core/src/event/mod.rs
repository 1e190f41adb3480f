//! The bodies and headers of SIP events (RFC 6665) and call transfer
//! (RFC 3515, RFC 3891, RFC 3892, RFC 4488): typed, borrowed views that
//! parse what peers send and writers for what we send (issue 21).
//!
//! Bodies:
//! - [`Presence`]: PIDF, `application/pidf+xml` (RFC 3863, as the presence
//!   package of RFC 3856 carries it), tuples with their basic status,
//!   contact and notes, and the notes of RPID/data-model persons (RFC 4479,
//!   RFC 4480) that phones add.
//! - [`Reginfo`]: the registration event package, `application/reginfo+xml`
//!   (RFC 3680 §5).
//! - [`MessageSummary`]: message waiting indication,
//!   `application/simple-message-summary` (RFC 3842 §5).
//! - [`StatusFrag`]: the `message/sipfrag` status line (RFC 3420) that the
//!   NOTIFYs of a REFER carry (RFC 3515 §2.4.5).
//!
//! Headers, each parsed from a header value with `parse` (and through
//! [`HeaderValue`](crate::message::headers::HeaderValue), so
//! [`Message::value`](crate::message::Message::value) reads them) and
//! written back with [`Display`](std::fmt::Display): [`Event`],
//! [`SubscriptionState`], [`AllowEvents`] (RFC 6665 §8.2), [`ReferTo`]
//! (RFC 3515 §2.1), [`ReferredBy`] (RFC 3892 §3), [`Replaces`]
//! (RFC 3891 §6.1) and [`ReferSub`] (RFC 4488 §3).
//!
//! XML is read by `quick-xml` (namespace aware: prefixes are resolved, and
//! elements of other namespaces are skipped) and written with its escaping;
//! text is borrowed from the body wherever it holds no escapes. Nothing
//! here panics on any input: every refusal is an [`EventError`].
//!
//! ```
//! use sipline::event::{Basic, Note, Presence, Tuple};
//!
//! // What a phone publishes: one tuple, open, with a note.
//! let doc = Presence::new(
//!     "sip:alice@example.com",
//!     Tuple::new("t1", Basic::Open).with_contact("sip:alice@192.0.2.1").with_note(Note::new("In a <meeting> & busy")),
//! )
//! .to_body()?;
//! assert!(doc.contains("In a &lt;meeting&gt; &amp; busy"));
//!
//! // What a watcher reads back.
//! let pres = Presence::parse(doc.as_bytes())?;
//! assert_eq!(pres.entity, "sip:alice@example.com");
//! assert_eq!(pres.tuples[0].basic, Some(Basic::Open));
//! assert_eq!(pres.tuples[0].contact.as_deref(), Some("sip:alice@192.0.2.1"));
//! assert_eq!(pres.tuples[0].notes[0].text, "In a <meeting> & busy");
//! # Ok::<(), sipline::event::EventError>(())
//! ```

mod headers;
mod pidf;
mod reginfo;
mod sipfrag;
mod summary;
mod xml;

pub use headers::{AllowEvents, Event, Reason, ReferSub, ReferTo, ReferredBy, Replaces, SubState, SubscriptionState};
pub use pidf::{Basic, Note, Person, Presence, Tuple};
pub use reginfo::{ContactEvent, ContactState, DocState, RegContact, Reginfo, Registration, RegistrationState};
pub use sipfrag::StatusFrag;
pub use summary::{MessageCounts, MessageSummary};

/// Why a body or header value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The body is not UTF-8 (the XML bodies here are UTF-8; RFC 3842 §5.2
    /// and RFC 3420 text is UTF-8 too).
    #[error("body is not UTF-8")]
    NotUtf8,
    /// The XML is not well-formed (or uses an entity that XML does not
    /// predefine): where the reader stopped, in bytes.
    #[error("malformed XML near byte {position}")]
    Xml {
        /// The offset in the body.
        position: u64,
    },
    /// Elements nest deeper than [`MAX_DEPTH`].
    #[error("XML nests deeper than {MAX_DEPTH} elements")]
    TooDeep,
    /// The root element is not the one the content type promises
    /// (`presence` in the PIDF namespace, `reginfo`…).
    #[error("root element is not <{expected}>")]
    WrongRoot {
        /// The element expected.
        expected: &'static str,
    },
    /// A required attribute is absent (RFC 3863 §4.1.1 `entity`, §4.1.2
    /// tuple `id`; RFC 3680 §5.3 `version`, `state`, `aor`, `id`…).
    #[error("<{element}> lacks its {attribute} attribute")]
    MissingAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// A required element is absent (RFC 3863 §4.1.2: a tuple's `status`;
    /// RFC 3680 §5.3: a contact's `uri`).
    #[error("<{parent}> lacks a <{element}>")]
    MissingElement {
        /// The enclosing element.
        parent: &'static str,
        /// The element.
        element: &'static str,
    },
    /// An attribute or element holds a value outside its grammar (a
    /// `basic` other than open/closed, a state, a number…).
    #[error("bad value for {field}")]
    BadValue {
        /// Which attribute or element.
        field: &'static str,
    },
    /// A character that XML 1.0 cannot carry (§2.2 `Char`: most control
    /// characters), or a line break where a single line is due.
    #[error("{field} holds a character that cannot be written")]
    Unwritable {
        /// Which value.
        field: &'static str,
    },
    /// A line of a text body does not follow its grammar (RFC 3842 §5.2,
    /// RFC 3420 §2): its number, from 1.
    #[error("{body} line {line} is malformed")]
    Line {
        /// Which body.
        body: &'static str,
        /// The line number, from 1.
        line: usize,
    },
    /// A header value does not follow its grammar.
    #[error("malformed {header} header value")]
    Header {
        /// The header's name.
        header: &'static str,
    },
    /// A header value lacks a parameter its RFC requires (RFC 3891 §6.1:
    /// Replaces' `to-tag` and `from-tag`).
    #[error("{header} lacks its {param} parameter")]
    MissingParam {
        /// The header's name.
        header: &'static str,
        /// The parameter.
        param: &'static str,
    },
}

/// How deeply elements of an XML body may nest: PIDF with RPID needs five
/// levels; far deeper is an attack on the reader, refused as
/// [`EventError::TooDeep`].
pub const MAX_DEPTH: usize = 32;
