//! Header fields (RFC 3261 §7.3): names with their compact forms, raw
//! name/value pairs borrowed from the message, and the header table.
//!
//! The table keeps the first [`INLINE_HEADERS`] fields inline, so parsing a
//! typical message allocates nothing; longer messages spill to the heap.

use std::fmt;

macro_rules! header_names {
    ($( $(#[$doc:meta])* $variant:ident = $canon:literal $(, $compact:literal)? ;)*) => {
        /// The name of a header field, compact forms folded into their long
        /// form (§7.3.3). Names the stack does not know are [`HeaderName::Other`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum HeaderName {
            $( $(#[$doc])* #[doc = concat!("`", $canon, "`")] $variant, )*
            /// A header field the stack does not know; its name is kept in the [`Header`].
            Other,
        }

        /// Every known name, in declaration order.
        const ALL: &[HeaderName] = &[$( HeaderName::$variant, )*];
        /// Their canonical spellings, in the same order.
        const CANON: &[&str] = &[$( $canon, )*];

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

            fn from_compact(c: u8) -> HeaderName {
                let c = c.to_ascii_lowercase() as char;
                $( $( if c == $compact { return HeaderName::$variant; } )? )*
                HeaderName::Other
            }
        }
    };
}

/// Size of the open-addressing table that classifies names.
const TABLE_SIZE: usize = 512;

/// A cheap hash of a name: its length and its first and last characters,
/// case-folded.
const fn name_hash(name: &[u8]) -> usize {
    let len = name.len();
    let first = (name[0] | 0x20) as usize;
    let last = (name[len - 1] | 0x20) as usize;
    (len * 31 + first * 7 + last * 131) % TABLE_SIZE
}

/// Longest known name (`Authentication-Info` and friends).
const MAX_NAME: usize = 24;

/// A known name as the words a folded comparison needs: the first and last
/// 8 octets (4 below 8 octets, 2 below 4) and octets 8..16 of long names,
/// all in lower case. Overlapping loads cover every length exactly.
#[derive(Clone, Copy)]
struct Folded {
    len: usize,
    first: u64,
    last: u64,
    mid: u64,
}

/// Little-endian word of `n` lower-cased octets of `b` from `at`.
const fn lower_word(b: &[u8], at: usize, n: usize) -> u64 {
    let mut w = 0u64;
    let mut k = n;
    while k > 0 {
        k -= 1;
        w = w << 8 | b[at + k].to_ascii_lowercase() as u64;
    }
    w
}

/// The width of the words compared for a name of `len` octets.
const fn word_width(len: usize) -> usize {
    if len >= 8 {
        8
    } else if len >= 4 {
        4
    } else {
        2
    }
}

static FOLDED: [Folded; CANON.len()] = {
    let mut t = [Folded { len: 0, first: 0, last: 0, mid: 0 }; CANON.len()];
    let mut i = 0;
    while i < CANON.len() {
        let b = CANON[i].as_bytes();
        let n = word_width(b.len());
        t[i] = Folded {
            len: b.len(),
            first: lower_word(b, 0, n),
            last: lower_word(b, b.len() - n, n),
            mid: if b.len() > 16 { lower_word(b, 8, 8) } else { 0 },
        };
        i += 1;
    }
    t
};

/// Whether `name` (a token of at least 2 octets) equals the known name `k`,
/// ignoring ASCII case. OR-ing 0x20 folds letters and leaves every other
/// token character unchanged except `_`, which no known name contains.
#[inline]
fn eq_folded(name: &[u8], k: &Folded) -> bool {
    const F: u64 = 0x2020_2020_2020_2020;
    if name.len() != k.len {
        return false;
    }
    if k.len >= 8 {
        let (Some(a), Some(b)) = (name.first_chunk::<8>(), name.last_chunk::<8>()) else {
            return false;
        };
        let mid = || name.get(8..).and_then(<[u8]>::first_chunk::<8>).map_or(0, |m| u64::from_le_bytes(*m) | F);
        u64::from_le_bytes(*a) | F == k.first && u64::from_le_bytes(*b) | F == k.last && (k.len <= 16 || mid() == k.mid)
    } else if k.len >= 4 {
        let (Some(a), Some(b)) = (name.first_chunk::<4>(), name.last_chunk::<4>()) else {
            return false;
        };
        u64::from(u32::from_le_bytes(*a) | 0x2020_2020) == k.first
            && u64::from(u32::from_le_bytes(*b) | 0x2020_2020) == k.last
    } else {
        let (Some(a), Some(b)) = (name.first_chunk::<2>(), name.last_chunk::<2>()) else {
            return false;
        };
        u64::from(u16::from_le_bytes(*a) | 0x2020) == k.first && u64::from(u16::from_le_bytes(*b) | 0x2020) == k.last
    }
}

/// Known names by hash, linear probing; `0` is empty, else index + 1.
static TABLE: [u8; TABLE_SIZE] = {
    let mut t = [0u8; TABLE_SIZE];
    let mut i = 0;
    while i < CANON.len() {
        let mut h = name_hash(CANON[i].as_bytes());
        while t[h] != 0 {
            h = (h + 1) % TABLE_SIZE;
        }
        #[allow(clippy::cast_possible_truncation)] // fewer than 255 names
        {
            t[h] = (i + 1) as u8;
        }
        i += 1;
    }
    t
};

impl HeaderName {
    /// Classifies a header name, case-insensitively, compact forms included.
    /// Anything that is not a token is [`HeaderName::Other`].
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if name.iter().all(|&c| super::grammar::is_token(c)) {
            HeaderName::from_token(name)
        } else {
            HeaderName::Other
        }
    }

    /// [`HeaderName::from_bytes`] for a name already known to be a token.
    #[inline]
    pub(crate) fn from_token(name: &[u8]) -> HeaderName {
        match name.len() {
            0 => return HeaderName::Other,
            1 => return HeaderName::from_compact(name[0]),
            n if n > MAX_NAME => return HeaderName::Other,
            _ => {}
        }
        let mut h = name_hash(name);
        loop {
            let e = TABLE[h] as usize;
            if e == 0 {
                return HeaderName::Other;
            }
            if eq_folded(name, &FOLDED[e - 1]) {
                return ALL[e - 1];
            }
            h = (h + 1) % TABLE_SIZE;
        }
    }
}

header_names! {
    Accept = "Accept";
    AcceptContact = "Accept-Contact", 'a';
    AcceptEncoding = "Accept-Encoding";
    AcceptLanguage = "Accept-Language";
    AlertInfo = "Alert-Info";
    Allow = "Allow";
    AllowEvents = "Allow-Events", 'u';
    AuthenticationInfo = "Authentication-Info";
    Authorization = "Authorization";
    CallId = "Call-ID", 'i';
    CallInfo = "Call-Info";
    Contact = "Contact", 'm';
    ContentDisposition = "Content-Disposition";
    ContentEncoding = "Content-Encoding", 'e';
    ContentLanguage = "Content-Language";
    ContentLength = "Content-Length", 'l';
    ContentType = "Content-Type", 'c';
    CSeq = "CSeq";
    Date = "Date";
    ErrorInfo = "Error-Info";
    Event = "Event", 'o';
    Expires = "Expires";
    From = "From", 'f';
    Identity = "Identity", 'y';
    IdentityInfo = "Identity-Info", 'n';
    InReplyTo = "In-Reply-To";
    MaxForwards = "Max-Forwards";
    MimeVersion = "MIME-Version";
    MinExpires = "Min-Expires";
    MinSe = "Min-SE";
    Organization = "Organization";
    Path = "Path";
    Priority = "Priority";
    ProxyAuthenticate = "Proxy-Authenticate";
    ProxyAuthorization = "Proxy-Authorization";
    ProxyRequire = "Proxy-Require";
    RAck = "RAck";
    RecordRoute = "Record-Route";
    ReferTo = "Refer-To", 'r';
    ReferredBy = "Referred-By", 'b';
    RejectContact = "Reject-Contact", 'j';
    ReplyTo = "Reply-To";
    RequestDisposition = "Request-Disposition", 'd';
    Require = "Require";
    RetryAfter = "Retry-After";
    Route = "Route";
    RSeq = "RSeq";
    Server = "Server";
    SessionExpires = "Session-Expires", 'x';
    Subject = "Subject", 's';
    SubscriptionState = "Subscription-State";
    Supported = "Supported", 'k';
    Timestamp = "Timestamp";
    To = "To", 't';
    Unsupported = "Unsupported";
    UserAgent = "User-Agent";
    Via = "Via", 'v';
    Warning = "Warning";
    WwwAuthenticate = "WWW-Authenticate";
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
    name: &'a [u8],
    value: &'a [u8],
}

impl fmt::Debug for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name(), String::from_utf8_lossy(self.value))
    }
}

impl<'a> Header<'a> {
    /// The classified name.
    pub fn kind(self) -> HeaderName {
        self.kind
    }
    /// The name exactly as written (`v`, `VIA`, `X-Custom`…).
    pub fn name(self) -> &'a str {
        // The parser admits only token characters (ASCII) in names.
        std::str::from_utf8(self.name).unwrap_or_default()
    }
    /// The value as raw bytes (may be non-UTF-8 for extension headers).
    pub fn value(self) -> &'a [u8] {
        self.value
    }
    /// The value as text, if it is UTF-8.
    pub fn value_str(self) -> Option<&'a str> {
        std::str::from_utf8(self.value).ok()
    }
    /// Whether this field has the given name: known names by kind (so `v`
    /// matches `Via`), others by case-insensitive comparison.
    pub fn is(self, name: &str) -> bool {
        match HeaderName::from_bytes(name.as_bytes()) {
            HeaderName::Other => self.kind == HeaderName::Other && self.name.eq_ignore_ascii_case(name.as_bytes()),
            k => self.kind == k,
        }
    }
}

/// How many header fields a message holds without allocating.
pub const INLINE_HEADERS: usize = 32;

/// One header field as offsets into the message: 16 bytes instead of two
/// slices, so the inline table stays small and cheap to move.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Slot {
    name_start: u32,
    value_start: u32,
    value_len: u32,
    name_len: u16,
    kind: HeaderName,
}

/// An unused slot: all zero bits (so filling the table is a plain memset);
/// slots past `len` are never read.
const EMPTY: Slot = Slot { name_start: 0, value_start: 0, value_len: 0, name_len: 0, kind: HeaderName::Accept };

/// The header fields of a message, in order.
#[derive(Clone)]
pub struct Headers<'a> {
    buf: &'a [u8],
    inline: [Slot; INLINE_HEADERS],
    len: usize,
    spill: Vec<Slot>,
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
    /// An empty table over `buf`, which must be shorter than 4 GiB.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Headers { buf, inline: [EMPTY; INLINE_HEADERS], len: 0, spill: Vec::new() }
    }

    /// Records a field by its offsets in the buffer.
    #[allow(clippy::cast_possible_truncation)] // offsets < buf.len() < 4 GiB, names < 64 KiB
    pub(crate) fn push(&mut self, kind: HeaderName, name: (usize, usize), value: (usize, usize)) {
        let slot = Slot {
            name_start: name.0 as u32,
            name_len: name.1 as u16,
            value_start: value.0 as u32,
            value_len: value.1 as u32,
            kind,
        };
        if self.len < INLINE_HEADERS {
            self.inline[self.len] = slot;
            self.len += 1;
        } else {
            self.spill.push(slot);
        }
    }

    fn view(&self, s: &Slot) -> Header<'a> {
        let name = s.name_start as usize..s.name_start as usize + s.name_len as usize;
        let value = s.value_start as usize..s.value_start as usize + s.value_len as usize;
        Header {
            kind: s.kind,
            name: self.buf.get(name).unwrap_or_default(),
            value: self.buf.get(value).unwrap_or_default(),
        }
    }

    fn slots(&self) -> impl DoubleEndedIterator<Item = &Slot> + Clone {
        self.inline[..self.len].iter().chain(self.spill.iter())
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
    pub fn at(&self, i: usize) -> Option<Header<'a>> {
        let s = if i < self.len { self.inline.get(i) } else { self.spill.get(i - self.len) };
        s.map(|s| self.view(s))
    }

    /// All fields in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Header<'a>> + Clone + '_ {
        self.slots().map(|s| self.view(s))
    }

    /// The fields of one known kind, in order.
    pub fn all(&self, kind: HeaderName) -> impl Iterator<Item = Header<'a>> + Clone + '_ {
        self.slots().filter(move |s| s.kind == kind).map(|s| self.view(s))
    }

    /// The first field of one known kind.
    pub fn first(&self, kind: HeaderName) -> Option<Header<'a>> {
        self.slots().find(|s| s.kind == kind).map(|s| self.view(s))
    }

    /// The first field with this name (known or extension; see [`Header::is`]).
    pub fn get(&self, name: &str) -> Option<Header<'a>> {
        self.iter().find(|h| h.is(name))
    }

    /// How many fields of one kind there are.
    pub fn count(&self, kind: HeaderName) -> usize {
        self.slots().filter(|s| s.kind == kind).count()
    }

    /// Which known kinds occur, as a bit set (bit `kind as u32`), in one
    /// pass: checks over many kinds skip the absent ones without a scan
    /// each.
    pub(crate) fn kinds(&self) -> u128 {
        self.slots().fold(0, |set, s| set | kind_bit(s.kind))
    }
}

/// The bit of `kind` in [`Headers::kinds`].
pub(crate) fn kind_bit(kind: HeaderName) -> u128 {
    1u128.checked_shl(kind as u32).unwrap_or(0)
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
        // Not tokens: never a known name (a CR would fold onto '-').
        assert_eq!(HeaderName::from_bytes(b"Call\rID"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Call_ID"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
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
    fn every_known_name_classifies_in_any_case() {
        for (canon, &kind) in CANON.iter().zip(ALL) {
            assert_eq!(HeaderName::from_bytes(canon.as_bytes()), kind);
            assert_eq!(HeaderName::from_bytes(canon.to_ascii_lowercase().as_bytes()), kind);
            assert_eq!(HeaderName::from_bytes(canon.to_ascii_uppercase().as_bytes()), kind);
            assert_eq!(kind.as_str(), *canon);
            // A near miss is an extension header.
            let mut near = canon.as_bytes().to_vec();
            near.push(b'x');
            assert_eq!(HeaderName::from_bytes(&near), HeaderName::Other);
        }
    }

    #[test]
    fn table_spills_past_inline_capacity() {
        let buf = b"Via: x";
        let mut h = Headers::new(buf);
        for _ in 0..INLINE_HEADERS + 3 {
            h.push(HeaderName::Via, (0, 3), (5, 1));
        }
        assert_eq!(h.at(INLINE_HEADERS + 1).unwrap().value(), b"x");
        assert_eq!(h.at(INLINE_HEADERS + 3), None);
        assert_eq!(h.len(), INLINE_HEADERS + 3);
        assert_eq!(h.count(HeaderName::Via), INLINE_HEADERS + 3);
    }
}
