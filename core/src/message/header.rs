//! Header fields (RFC 3261 §7.3): names with their compact forms, raw
//! name/value pairs borrowed from the message, and the header table.
//!
//! The table keeps the first [`INLINE_HEADERS`] fields inline, so parsing a
//! typical message allocates nothing; longer messages spill to the heap.

use std::fmt;

macro_rules! header_names {
    ($( $(#[$doc:meta])* $variant:ident = $canon:literal / $lower:literal $(, $compact:literal)? ;)*) => {
        /// The name of a header field, compact forms folded into their long
        /// form (§7.3.3). Names the stack does not know are [`HeaderName::Other`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum HeaderName {
            $( $(#[$doc])* #[doc = concat!("`", $canon, "`")] $variant, )*
            /// A header field the stack does not know; its name is kept in the [`Header`].
            Other,
        }

        impl HeaderName {
            /// The canonical spelling, e.g. `Call-ID` (empty for [`HeaderName::Other`]).
            pub fn as_str(self) -> &'static str {
                match self {
                    $( HeaderName::$variant => $canon, )*
                    HeaderName::Other => "",
                }
            }

            /// The compact form (§7.3.3), if the header has one.
            pub fn compact(self) -> Option<char> {
                match self {
                    $( $( HeaderName::$variant => Some($compact), )? )*
                    _ => None,
                }
            }

            /// Classifies a header name, case-insensitively, compact forms included.
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                if name.len() == 1 {
                    let c = name[0].to_ascii_lowercase() as char;
                    $( $( if c == $compact { return HeaderName::$variant; } )? )*
                    return HeaderName::Other;
                }
                let mut buf = [0u8; 24];
                if name.len() > buf.len() {
                    return HeaderName::Other;
                }
                let lower = &mut buf[..name.len()];
                for (d, s) in lower.iter_mut().zip(name) {
                    *d = s.to_ascii_lowercase();
                }
                match &*lower {
                    $( $lower => HeaderName::$variant, )*
                    _ => HeaderName::Other,
                }
            }
        }
    };
}

header_names! {
    Accept = "Accept" / b"accept";
    AcceptContact = "Accept-Contact" / b"accept-contact", 'a';
    AcceptEncoding = "Accept-Encoding" / b"accept-encoding";
    AcceptLanguage = "Accept-Language" / b"accept-language";
    AlertInfo = "Alert-Info" / b"alert-info";
    Allow = "Allow" / b"allow";
    AllowEvents = "Allow-Events" / b"allow-events", 'u';
    AuthenticationInfo = "Authentication-Info" / b"authentication-info";
    Authorization = "Authorization" / b"authorization";
    CallId = "Call-ID" / b"call-id", 'i';
    CallInfo = "Call-Info" / b"call-info";
    Contact = "Contact" / b"contact", 'm';
    ContentDisposition = "Content-Disposition" / b"content-disposition";
    ContentEncoding = "Content-Encoding" / b"content-encoding", 'e';
    ContentLanguage = "Content-Language" / b"content-language";
    ContentLength = "Content-Length" / b"content-length", 'l';
    ContentType = "Content-Type" / b"content-type", 'c';
    CSeq = "CSeq" / b"cseq";
    Date = "Date" / b"date";
    ErrorInfo = "Error-Info" / b"error-info";
    Event = "Event" / b"event", 'o';
    Expires = "Expires" / b"expires";
    From = "From" / b"from", 'f';
    Identity = "Identity" / b"identity", 'y';
    IdentityInfo = "Identity-Info" / b"identity-info", 'n';
    InReplyTo = "In-Reply-To" / b"in-reply-to";
    MaxForwards = "Max-Forwards" / b"max-forwards";
    MimeVersion = "MIME-Version" / b"mime-version";
    MinExpires = "Min-Expires" / b"min-expires";
    MinSe = "Min-SE" / b"min-se";
    Organization = "Organization" / b"organization";
    Path = "Path" / b"path";
    Priority = "Priority" / b"priority";
    ProxyAuthenticate = "Proxy-Authenticate" / b"proxy-authenticate";
    ProxyAuthorization = "Proxy-Authorization" / b"proxy-authorization";
    ProxyRequire = "Proxy-Require" / b"proxy-require";
    RAck = "RAck" / b"rack";
    RecordRoute = "Record-Route" / b"record-route";
    ReferTo = "Refer-To" / b"refer-to", 'r';
    ReferredBy = "Referred-By" / b"referred-by", 'b';
    RejectContact = "Reject-Contact" / b"reject-contact", 'j';
    ReplyTo = "Reply-To" / b"reply-to";
    RequestDisposition = "Request-Disposition" / b"request-disposition", 'd';
    Require = "Require" / b"require";
    RetryAfter = "Retry-After" / b"retry-after";
    Route = "Route" / b"route";
    RSeq = "RSeq" / b"rseq";
    Server = "Server" / b"server";
    SessionExpires = "Session-Expires" / b"session-expires", 'x';
    Subject = "Subject" / b"subject", 's';
    SubscriptionState = "Subscription-State" / b"subscription-state";
    Supported = "Supported" / b"supported", 'k';
    Timestamp = "Timestamp" / b"timestamp";
    To = "To" / b"to", 't';
    Unsupported = "Unsupported" / b"unsupported";
    UserAgent = "User-Agent" / b"user-agent";
    Via = "Via" / b"via", 'v';
    Warning = "Warning" / b"warning";
    WwwAuthenticate = "WWW-Authenticate" / b"www-authenticate";
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderName::Other => f.write_str("extension header"),
            n => f.write_str(n.as_str()),
        }
    }
}

/// One header field line, borrowed from the message: the name as written,
/// its classification, and the value with surrounding whitespace trimmed
/// (line folds inside the value are kept as written, §7.3.1).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    kind: HeaderName,
    name: &'a str,
    value: &'a [u8],
}

impl fmt::Debug for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, String::from_utf8_lossy(self.value))
    }
}

impl<'a> Header<'a> {
    pub(crate) fn new(kind: HeaderName, name: &'a str, value: &'a [u8]) -> Self {
        Header { kind, name, value }
    }
    /// The classified name.
    pub fn kind(&self) -> HeaderName {
        self.kind
    }
    /// The name exactly as written (`v`, `VIA`, `X-Custom`…).
    pub fn name(&self) -> &'a str {
        self.name
    }
    /// The value as raw bytes (may be non-UTF-8 for extension headers).
    pub fn value(&self) -> &'a [u8] {
        self.value
    }
    /// The value as text, if it is UTF-8.
    pub fn value_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.value).ok()
    }
    /// Whether this field has the given name: known names by kind (so `v`
    /// matches `Via`), others by case-insensitive comparison.
    pub fn is(&self, name: &str) -> bool {
        match HeaderName::from_bytes(name.as_bytes()) {
            HeaderName::Other => self.kind == HeaderName::Other && self.name.eq_ignore_ascii_case(name),
            k => self.kind == k,
        }
    }
}

/// How many header fields a message holds without allocating.
pub const INLINE_HEADERS: usize = 32;

/// The header fields of a message, in order.
#[derive(Clone)]
pub struct Headers<'a> {
    inline: [Header<'a>; INLINE_HEADERS],
    len: usize,
    spill: Vec<Header<'a>>,
}

const EMPTY: Header<'static> = Header { kind: HeaderName::Other, name: "", value: b"" };

impl Default for Headers<'_> {
    fn default() -> Self {
        Headers { inline: [EMPTY; INLINE_HEADERS], len: 0, spill: Vec::new() }
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Headers<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().zip(other.iter()).all(|(a, b)| a == b)
    }
}
impl Eq for Headers<'_> {}

impl<'a> Headers<'a> {
    pub(crate) fn push(&mut self, h: Header<'a>) {
        if self.len < INLINE_HEADERS {
            self.inline[self.len] = h;
            self.len += 1;
        } else {
            self.spill.push(h);
        }
    }

    /// The number of header fields (lines, after unfolding).
    pub fn len(&self) -> usize {
        self.len + self.spill.len()
    }

    /// Whether there are no header fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The field at position `i`.
    pub fn at(&self, i: usize) -> Option<&Header<'a>> {
        if i < self.len {
            Some(&self.inline[i])
        } else {
            self.spill.get(i - self.len)
        }
    }

    /// All fields in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Header<'a>> + Clone {
        self.inline[..self.len].iter().chain(self.spill.iter())
    }

    /// The fields of one known kind, in order.
    pub fn all(&self, kind: HeaderName) -> impl Iterator<Item = &Header<'a>> + Clone {
        self.iter().filter(move |h| h.kind == kind)
    }

    /// The first field of one known kind.
    pub fn first(&self, kind: HeaderName) -> Option<&Header<'a>> {
        self.iter().find(|h| h.kind == kind)
    }

    /// The first field with this name (known or extension; see [`Header::is`]).
    pub fn get(&self, name: &str) -> Option<&Header<'a>> {
        let kind = HeaderName::from_bytes(name.as_bytes());
        self.iter().find(|h| match kind {
            HeaderName::Other => h.kind == HeaderName::Other && h.name.eq_ignore_ascii_case(name),
            k => h.kind == k,
        })
    }

    /// How many fields of one kind there are.
    pub fn count(&self, kind: HeaderName) -> usize {
        self.all(kind).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_classify_case_insensitively_with_compact_forms() {
        assert_eq!(HeaderName::from_bytes(b"VIA"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"call-id"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"i"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"www-authenticate"), HeaderName::WwwAuthenticate);
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"q"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"a-very-long-extension-header-name"), HeaderName::Other);
        for (c, n) in [
            ('i', HeaderName::CallId),
            ('m', HeaderName::Contact),
            ('e', HeaderName::ContentEncoding),
            ('l', HeaderName::ContentLength),
            ('c', HeaderName::ContentType),
            ('f', HeaderName::From),
            ('s', HeaderName::Subject),
            ('k', HeaderName::Supported),
            ('t', HeaderName::To),
            ('v', HeaderName::Via),
            ('o', HeaderName::Event),
            ('u', HeaderName::AllowEvents),
            ('r', HeaderName::ReferTo),
            ('b', HeaderName::ReferredBy),
            ('x', HeaderName::SessionExpires),
            ('y', HeaderName::Identity),
        ] {
            assert_eq!(HeaderName::from_bytes(c.to_string().as_bytes()), n);
            assert_eq!(n.compact(), Some(c));
            assert_eq!(HeaderName::from_bytes(n.as_str().as_bytes()), n);
        }
    }

    #[test]
    fn table_spills_past_inline_capacity() {
        let mut h = Headers::default();
        for _ in 0..INLINE_HEADERS + 3 {
            h.push(Header::new(HeaderName::Via, "Via", b"x"));
        }
        assert_eq!(h.len(), INLINE_HEADERS + 3);
        assert_eq!(h.count(HeaderName::Via), INLINE_HEADERS + 3);
    }
}
