//! `sipline parse --json`: one JSON object per file, written by `serde`
//! from views that borrow the parsed message.

use serde::Serialize;
use sipline::message::headers::{Address, CSeq, Contact, HeaderValue, ListIter, Via};
use sipline::message::{HeaderName, Message, Param, StartLine, Uri};
use std::borrow::Cow;

/// A file that did not parse.
#[derive(Serialize)]
struct Failure<'a> {
    file: &'a str,
    ok: bool,
    error: &'a str,
}

/// A parsed message.
#[derive(Serialize)]
struct Parsed<'a> {
    file: &'a str,
    ok: bool,
    #[serde(flatten)]
    start: Start<'a>,
    headers: Vec<HeaderView<'a>>,
    body_length: usize,
    body: Cow<'a, str>,
}

/// The start line: `"kind": "request"` with method and URI, or
/// `"kind": "response"` with status and reason.
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Start<'a> {
    Request { method: &'a str, uri: UriOrRaw<'a> },
    Response { status: u16, reason: Cow<'a, str> },
}

/// A Request-URI: parsed, or as written when it does not parse.
#[derive(Serialize)]
#[serde(untagged)]
enum UriOrRaw<'a> {
    Parsed(UriView<'a>),
    Raw(&'a str),
}

#[derive(Serialize)]
#[serde(untagged)]
enum UriView<'a> {
    Sip {
        scheme: &'a str,
        user: Option<&'a str>,
        host: &'a str,
        port: Option<u16>,
        params: Vec<ParamView<'a>>,
        headers: Option<&'a str>,
    },
    Other {
        scheme: &'a str,
        raw: &'a str,
    },
}

#[derive(Serialize)]
struct ParamView<'a> {
    name: &'a str,
    value: Option<&'a str>,
}

#[derive(Serialize)]
struct AddressView<'a> {
    display_name: Option<String>,
    uri: UriView<'a>,
    params: Vec<ParamView<'a>>,
}

#[derive(Serialize)]
struct ViaView<'a> {
    transport: &'a str,
    host: &'a str,
    port: Option<u16>,
    branch: Option<&'a str>,
    params: Vec<ParamView<'a>>,
}

/// A header field: as written, and parsed where the stack has a type.
#[derive(Serialize)]
struct HeaderView<'a> {
    name: &'a str,
    canonical: &'a str,
    value: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parsed: Option<Typed<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Typed<'a> {
    List(Vec<Typed<'a>>),
    Via(ViaView<'a>),
    Address(AddressView<'a>),
    Wildcard(&'static str),
    CSeq { seq: u32, method: &'a str },
    Number(u32),
}

fn params<'a>(it: impl Iterator<Item = Param<'a>>) -> Vec<ParamView<'a>> {
    it.map(|p| ParamView { name: p.name(), value: p.value() }).collect()
}

fn uri<'a>(u: &Uri<'a>) -> UriView<'a> {
    match u {
        Uri::Sip(x) => UriView::Sip {
            scheme: u.scheme(),
            user: x.user(),
            host: x.host_str(),
            port: x.port(),
            params: params(x.params().iter()),
            headers: x.headers(),
        },
        other => UriView::Other { scheme: other.scheme(), raw: other.as_str() },
    }
}

fn address<'a>(a: &Address<'a>) -> AddressView<'a> {
    AddressView {
        display_name: a.display_name().map(|d| d.text().into_owned()),
        uri: uri(a.uri()),
        params: params(a.params().iter()),
    }
}

fn via<'a>(v: &Via<'a>) -> ViaView<'a> {
    ViaView {
        transport: v.transport(),
        host: v.host_str(),
        port: v.port(),
        branch: v.branch(),
        params: params(v.params().iter()),
    }
}

/// The parsed form of a header value of `kind`, if the stack types it.
fn typed(kind: HeaderName, value: &[u8]) -> Option<Typed<'_>> {
    let list = |f: &dyn Fn(&[u8]) -> Option<Typed<'_>>| -> Option<Typed<'_>> {
        ListIter::new(value).map(f).collect::<Option<Vec<_>>>().map(Typed::List)
    };
    match kind {
        HeaderName::Via => list(&|e| Via::parse_value(e).map(|v| Typed::Via(via(&v)))),
        HeaderName::From | HeaderName::To => Address::parse_value(value).map(|a| Typed::Address(address(&a))),
        HeaderName::Route | HeaderName::RecordRoute => {
            list(&|e| Address::parse_value(e).map(|a| Typed::Address(address(&a))))
        }
        HeaderName::Contact => list(&|e| {
            Contact::parse_value(e).map(|c| match c {
                Contact::Wildcard => Typed::Wildcard("*"),
                Contact::Address(a) => Typed::Address(address(&a)),
            })
        }),
        HeaderName::CSeq => CSeq::parse_value(value).map(|c| Typed::CSeq { seq: c.seq(), method: c.method().as_str() }),
        HeaderName::MaxForwards | HeaderName::ContentLength | HeaderName::Expires => {
            u32::parse_value(value).map(Typed::Number)
        }
        _ => None,
    }
}

/// One JSON line; `{}` if it could not be written (never, for these types).
fn line(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}

/// The error object for a file that did not parse.
pub(crate) fn error(file: &str, what: &str) -> String {
    line(&Failure { file, ok: false, error: what })
}

/// The JSON object for a parsed message.
pub(crate) fn message(file: &str, m: &Message<'_>) -> String {
    let start = match m.start_line() {
        StartLine::Request(r) => Start::Request {
            method: r.method.as_str(),
            uri: r.parse_uri().map_or(UriOrRaw::Raw(r.uri), |u| UriOrRaw::Parsed(uri(&u))),
        },
        StartLine::Response(st) => {
            Start::Response { status: st.code.as_u16(), reason: String::from_utf8_lossy(st.reason) }
        }
    };
    let headers = m
        .headers()
        .iter()
        .map(|h| HeaderView {
            name: h.name(),
            canonical: match h.kind() {
                HeaderName::Other => h.name(),
                k => k.as_str(),
            },
            value: String::from_utf8_lossy(h.value()),
            parsed: typed(h.kind(), h.value()),
        })
        .collect();
    line(&Parsed {
        file,
        ok: true,
        start,
        headers,
        body_length: m.body().len(),
        body: String::from_utf8_lossy(m.body()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_and_objects_ordered() {
        assert_eq!(error("a\"b", "x\\y\n\u{1}"), "{\"file\":\"a\\\"b\",\"ok\":false,\"error\":\"x\\\\y\\n\\u0001\"}");
        let m = Message::parse(
            b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nCSeq: 2 INVITE\r\n\r\n",
        )
        .unwrap();
        let out = message("f", &m);
        assert!(
            out.starts_with("{\"file\":\"f\",\"ok\":true,\"kind\":\"response\",\"status\":180,\"reason\":\"Ringing\""),
            "{out}"
        );
        assert!(out.contains("\"parsed\":{\"seq\":2,\"method\":\"INVITE\"}"), "{out}");
        assert!(out.contains("\"port\":null,\"branch\":\"z9hG4bK1\""), "{out}");
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["headers"][0]["parsed"][0]["transport"], "UDP");
    }
}
