//! The XML underneath [`Presence`](super::Presence) and
//! [`Reginfo`](super::Reginfo): a small borrowed element tree read by
//! `quick-xml`'s namespace-aware reader, and the escaping for writing.
//!
//! The tree keeps what the body parsers walk: each element's namespace
//! (classified), local name, attributes and text. Text and attribute
//! values borrow from the body unless they held references (`&amp;`).

use super::{EventError, MAX_DEPTH};
use crate::message::grammar::offset_of;
use quick_xml::events::Event as XmlEvent;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::borrow::Cow;

/// The PIDF namespace (RFC 3863 §4.1).
pub(crate) const NS_PIDF: &str = "urn:ietf:params:xml:ns:pidf";
/// The PIDF data model namespace (RFC 4479 §4): `person`, `device`.
pub(crate) const NS_DATA_MODEL: &str = "urn:ietf:params:xml:ns:pidf:data-model";
/// The reginfo namespace (RFC 3680 §5.4).
pub(crate) const NS_REGINFO: &str = "urn:ietf:params:xml:ns:reginfo";

/// The namespaces the parsers tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ns {
    /// No namespace: accepted where the document's own namespace is
    /// expected, since some phones leave out `xmlns`.
    None,
    Pidf,
    DataModel,
    Reginfo,
    /// Any other namespace (RPID, caps, vendor extensions), or an unbound
    /// prefix.
    Other,
}

impl Ns {
    fn classify(r: &ResolveResult<'_>) -> Ns {
        match r {
            ResolveResult::Unbound => Ns::None,
            ResolveResult::Bound(ns) => match ns.0 {
                NS_PIDF => Ns::Pidf,
                NS_DATA_MODEL => Ns::DataModel,
                NS_REGINFO => Ns::Reginfo,
                _ => Ns::Other,
            },
            ResolveResult::Unknown(_) => Ns::Other,
        }
    }

    /// Whether this is `want` or no namespace at all.
    pub(crate) fn is(self, want: Ns) -> bool {
        self == want || self == Ns::None
    }
}

/// One element.
#[derive(Debug)]
pub(crate) struct Element<'a> {
    pub(crate) ns: Ns,
    pub(crate) name: Cow<'a, str>,
    attrs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub(crate) children: Vec<Element<'a>>,
    /// The character data directly inside, references resolved.
    pub(crate) text: Cow<'a, str>,
}

impl<'a> Element<'a> {
    /// An unprefixed attribute (or `xml:lang` spelled so) by name.
    pub(crate) fn attr(&self, name: &str) -> Option<&Cow<'a, str>> {
        self.attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The children in namespace `ns` (or none) named `name`.
    pub(crate) fn children_named<'s>(&'s self, ns: Ns, name: &'s str) -> impl Iterator<Item = &'s Element<'a>> + 's {
        self.children.iter().filter(move |c| c.ns.is(ns) && c.name == name)
    }

    /// The first child in namespace `ns` named `name`.
    pub(crate) fn child(&self, ns: Ns, name: &str) -> Option<&Element<'a>> {
        self.children.iter().find(|c| c.ns.is(ns) && c.name == name)
    }
}

/// `s`, which the reader produced from `input`, as a slice of `input` if
/// it is one (no copy), else owned.
fn lift<'a>(input: &'a str, s: &str) -> Cow<'a, str> {
    match offset_of(input.as_bytes(), s.as_bytes()).and_then(|off| input.get(off..off + s.len())) {
        Some(b) => Cow::Borrowed(b),
        None => Cow::Owned(s.to_owned()),
    }
}

fn append<'a>(acc: &mut Cow<'a, str>, piece: Cow<'a, str>) {
    if acc.is_empty() {
        *acc = piece;
    } else {
        acc.to_mut().push_str(&piece);
    }
}

/// Reads a whole document into its root element.
pub(crate) fn parse(body: &[u8]) -> Result<Element<'_>, EventError> {
    let input = std::str::from_utf8(body).map_err(|_| EventError::NotUtf8)?;
    let mut reader = NsReader::from_str(input);
    let mut stack: Vec<Element<'_>> = Vec::new();
    let mut root = None;
    let err = |r: &NsReader<&[u8]>| EventError::Xml { position: r.error_position() };
    // Each event consumes at least one byte of input, so the document is
    // read in at most `input.len() + 1` steps; the bound is a backstop.
    for _ in 0..=input.len() + 1 {
        let (ns, event) = match reader.read_resolved_event() {
            Ok((ns, event)) => (Ns::classify(&ns), event),
            Err(_) => return Err(err(&reader)),
        };
        match event {
            XmlEvent::Start(ref start) | XmlEvent::Empty(ref start) => {
                if root.is_some() {
                    // Content after the root element (XML 1.0 §2.1).
                    return Err(EventError::Xml { position: reader.buffer_position() });
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(EventError::TooDeep);
                }
                let mut attrs = Vec::new();
                for a in start.attributes() {
                    let a = a.map_err(|_| err(&reader))?;
                    let key = a.key.as_ref();
                    // Namespace declarations are the reader's business.
                    if key == "xmlns" || key.starts_with("xmlns:") {
                        continue;
                    }
                    let value = a.normalized_value(quick_xml::XmlVersion::Implicit1_0).map_err(|_| err(&reader))?;
                    attrs.push((lift(input, key), lift(input, &value)));
                }
                let name = lift(input, start.local_name().as_ref());
                let el = Element { ns, name, attrs, children: Vec::new(), text: Cow::Borrowed("") };
                if matches!(event, XmlEvent::Empty(_)) {
                    close(&mut stack, &mut root, el);
                } else {
                    stack.push(el);
                }
            }
            XmlEvent::End(_) => {
                // The reader checks that end names match their starts.
                let Some(el) = stack.pop() else {
                    return Err(EventError::Xml { position: reader.buffer_position() });
                };
                close(&mut stack, &mut root, el);
            }
            XmlEvent::Text(t) => {
                let text = t.xml10_content();
                match stack.last_mut() {
                    Some(el) => append(&mut el.text, text),
                    // Only whitespace may stand outside the root.
                    None if text.trim_ascii().is_empty() => {}
                    None => return Err(EventError::Xml { position: reader.buffer_position() }),
                }
            }
            XmlEvent::CData(c) => {
                let Some(el) = stack.last_mut() else {
                    return Err(EventError::Xml { position: reader.buffer_position() });
                };
                append(&mut el.text, lift(input, c.as_ref()));
            }
            XmlEvent::GeneralRef(r) => {
                let Some(el) = stack.last_mut() else {
                    return Err(EventError::Xml { position: reader.buffer_position() });
                };
                // Character references, or the five entities XML predefines
                // (§4.6); any other entity would need a DTD we never read.
                let piece = match r.resolve_char_ref() {
                    Ok(Some(c)) => Cow::Owned(c.to_string()),
                    Ok(None) => match quick_xml::escape::resolve_predefined_entity(r.as_ref()) {
                        Some(s) => Cow::Borrowed(s),
                        None => return Err(EventError::Xml { position: reader.buffer_position() }),
                    },
                    Err(_) => return Err(EventError::Xml { position: reader.buffer_position() }),
                };
                append(&mut el.text, piece);
            }
            XmlEvent::Eof => break,
            XmlEvent::Comment(_) | XmlEvent::Decl(_) | XmlEvent::PI(_) | XmlEvent::DocType(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(EventError::Xml { position: reader.buffer_position() });
    }
    root.ok_or(EventError::Xml { position: reader.buffer_position() })
}

fn close<'a>(stack: &mut Vec<Element<'a>>, root: &mut Option<Element<'a>>, el: Element<'a>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None => *root = Some(el),
    }
}

/// Whether XML 1.0 can carry `c` at all (§2.2 `Char`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Appends `s` escaped for character data or an attribute value: the five
/// markup characters as entities, and CR, LF and TAB as character
/// references so that a reader's end-of-line and attribute normalization
/// (XML 1.0 §2.11, §3.3.3) gives back exactly `s`.
pub(crate) fn escape_into(out: &mut String, s: &str, field: &'static str) -> Result<(), EventError> {
    if let Some(_bad) = s.chars().find(|&c| !is_xml_char(c)) {
        return Err(EventError::Unwritable { field });
    }
    for piece in s.split_inclusive(['\t', '\n', '\r']) {
        let (text, last) = match piece.char_indices().last() {
            Some((i, c @ ('\t' | '\n' | '\r'))) => (&piece[..i], Some(c)),
            _ => (piece, None),
        };
        out.push_str(&quick_xml::escape::escape(text));
        out.push_str(match last {
            Some('\t') => "&#9;",
            Some('\n') => "&#10;",
            Some('\r') => "&#13;",
            _ => "",
        });
    }
    Ok(())
}

/// Appends `<name attrs>text</name>` with escaped text.
pub(crate) fn text_element(out: &mut String, name: &str, text: &str, field: &'static str) -> Result<(), EventError> {
    out.push('<');
    out.push_str(name);
    out.push('>');
    escape_into(out, text, field)?;
    out.push_str("</");
    out.push_str(name);
    out.push('>');
    Ok(())
}

/// Appends ` name="value"` with the value escaped.
pub(crate) fn attribute(out: &mut String, name: &str, value: &str, field: &'static str) -> Result<(), EventError> {
    out.push(' ');
    out.push_str(name);
    out.push_str("=\"");
    escape_into(out, value, field)?;
    out.push('"');
    Ok(())
}

/// Whether `s` can be an XML `ID` (an NCName, Namespaces in XML §3) as
/// RFC 3863 §4.1.2 wants of a tuple id: an ASCII letter or `_`, then
/// letters, digits, `-`, `_` or `.`. Names beyond ASCII are valid XML but
/// we never write them.
pub(crate) fn is_ascii_ncname(s: &str) -> bool {
    let mut b = s.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_unless_escaped() {
        let root = parse(b"<a xmlns='urn:ietf:params:xml:ns:pidf' k='v'><b>x &amp; y</b><c>plain</c></a>").unwrap();
        assert_eq!(root.ns, Ns::Pidf);
        assert!(matches!(root.attr("k"), Some(Cow::Borrowed("v"))));
        assert_eq!(root.children[0].text, "x & y");
        assert!(matches!(root.children[1].text, Cow::Borrowed("plain")));
    }

    #[test]
    fn refusals() {
        assert!(matches!(parse(b"<a><b></a>").unwrap_err(), EventError::Xml { .. }));
        assert!(matches!(parse(b"<a>").unwrap_err(), EventError::Xml { .. }));
        assert!(matches!(parse(b"<a/><b/>").unwrap_err(), EventError::Xml { .. }));
        assert!(matches!(parse(b"<a>&ent;</a>").unwrap_err(), EventError::Xml { .. }));
        assert!(matches!(parse(b"").unwrap_err(), EventError::Xml { .. }));
        assert_eq!(parse(b"\xff").unwrap_err(), EventError::NotUtf8);
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes()).unwrap_err(), EventError::TooDeep);
    }

    #[test]
    fn escaping_round_trips() {
        let mut out = String::new();
        escape_into(&mut out, "a<b>&\"c'\r\n\td", "t").unwrap();
        let doc = format!("<x a=\"{out}\">{out}</x>");
        let root = parse(doc.as_bytes()).unwrap();
        assert_eq!(root.text, "a<b>&\"c'\r\n\td");
        assert_eq!(root.attr("a").unwrap(), "a<b>&\"c'\r\n\td");
        assert_eq!(escape_into(&mut out, "\u{1}", "t"), Err(EventError::Unwritable { field: "t" }));
    }
}
