//! A small JSON writer for `sipline parse --json` (no dependencies needed).

use sipline::message::headers::{Address, Contact, Via};
use sipline::message::{HeaderName, Message, Param, StartLine, Uri};
use std::fmt::Write as _;

/// A JSON string literal.
fn s(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Bytes as a JSON string (invalid UTF-8 replaced by U+FFFD).
fn b(v: &[u8]) -> String {
    s(&String::from_utf8_lossy(v))
}

fn opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "null".to_owned())
}

/// The error object for a file that did not parse.
pub(crate) fn error(file: &str, what: &str) -> String {
    format!("{{\"file\":{},\"ok\":false,\"error\":{}}}", s(file), s(what))
}

fn params<'a>(it: impl Iterator<Item = Param<'a>>) -> String {
    let items: Vec<String> =
        it.map(|p| format!("{{\"name\":{},\"value\":{}}}", s(p.name()), opt(p.value().map(s)))).collect();
    format!("[{}]", items.join(","))
}

fn uri(u: &Uri<'_>) -> String {
    match u {
        Uri::Sip(x) => format!(
            "{{\"scheme\":{},\"user\":{},\"host\":{},\"port\":{},\"params\":{},\"headers\":{}}}",
            s(u.scheme()),
            opt(x.user().map(s)),
            s(x.host_str()),
            opt(x.port().map(|p| p.to_string())),
            params(x.params().iter()),
            opt(x.headers().map(s)),
        ),
        other => format!("{{\"scheme\":{},\"raw\":{}}}", s(other.scheme()), s(other.as_str())),
    }
}

fn address(a: &Address<'_>) -> String {
    format!(
        "{{\"display_name\":{},\"uri\":{},\"params\":{}}}",
        opt(a.display_name().map(|d| s(&d.text()))),
        uri(a.uri()),
        params(a.params().iter())
    )
}

fn via(v: &Via<'_>) -> String {
    format!(
        "{{\"transport\":{},\"host\":{},\"port\":{},\"branch\":{},\"params\":{}}}",
        s(v.transport()),
        s(v.host_str()),
        opt(v.port().map(|p| p.to_string())),
        opt(v.branch().map(s)),
        params(v.params().iter())
    )
}

fn typed(m: &Message<'_>, kind: HeaderName, value: &[u8]) -> Option<String> {
    use sipline::message::headers::{HeaderValue, ListIter};
    let list = |f: &dyn Fn(&[u8]) -> Option<String>| -> Option<String> {
        let items: Option<Vec<String>> = ListIter::new(value).map(f).collect();
        items.map(|v| format!("[{}]", v.join(",")))
    };
    let _ = m;
    match kind {
        HeaderName::Via => list(&|e| Via::parse_value(e).map(|v| via(&v))),
        HeaderName::From | HeaderName::To => Address::parse_value(value).map(|a| address(&a)),
        HeaderName::Route | HeaderName::RecordRoute => list(&|e| Address::parse_value(e).map(|a| address(&a))),
        HeaderName::Contact => list(&|e| {
            Contact::parse_value(e).map(|c| match c {
                Contact::Wildcard => s("*"),
                Contact::Address(a) => address(&a),
            })
        }),
        HeaderName::CSeq => sipline::message::headers::CSeq::parse_value(value)
            .map(|c| format!("{{\"seq\":{},\"method\":{}}}", c.seq(), s(c.method().as_str()))),
        HeaderName::MaxForwards | HeaderName::ContentLength | HeaderName::Expires => {
            u32::parse_value(value).map(|n| n.to_string())
        }
        _ => None,
    }
}

/// The JSON object for a parsed message.
pub(crate) fn message(file: &str, m: &Message<'_>) -> String {
    let mut out = format!("{{\"file\":{},\"ok\":true,", s(file));
    match m.start_line() {
        StartLine::Request(r) => {
            let _ = write!(
                out,
                "\"kind\":\"request\",\"method\":{},\"uri\":{},",
                s(r.method.as_str()),
                r.parse_uri().map_or_else(|_| s(r.uri), |u| uri(&u))
            );
        }
        StartLine::Response(st) => {
            let _ = write!(out, "\"kind\":\"response\",\"status\":{},\"reason\":{},", st.code, b(st.reason));
        }
    }
    let headers: Vec<String> = m
        .headers()
        .iter()
        .map(|h| {
            let canon = match h.kind() {
                HeaderName::Other => h.name(),
                k => k.as_str(),
            };
            let mut o = format!("{{\"name\":{},\"canonical\":{},\"value\":{}", s(h.name()), s(canon), b(h.value()));
            if let Some(t) = typed(m, h.kind(), h.value()) {
                let _ = write!(o, ",\"parsed\":{t}");
            }
            o.push('}');
            o
        })
        .collect();
    let _ = write!(
        out,
        "\"headers\":[{}],\"body_length\":{},\"body\":{}}}",
        headers.join(","),
        m.body().len(),
        b(m.body())
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(s("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
