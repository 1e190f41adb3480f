//! The Digest scheme itself: answering challenges (the client side) and
//! checking answers (the server side). See the [module docs](super).

use crate::message::headers::{Challenge, Credentials};
use crate::message::{HeaderName, Message};
use crate::rng::Rng;
use md5::{Digest as _, Md5};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// A Digest algorithm: the hash function and whether HA1 is bound to the
/// nonces ("-sess", RFC 7616 §3.4.2). RFC 8760 §2.3 brings SHA-256 to SIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// `MD5`, the default when a challenge names none (RFC 7616 §3.3).
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256` (RFC 7616 §3.3, RFC 8760 §2.3).
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    /// Reads an `algorithm` value, case-insensitively (RFC 7616 §3.3);
    /// `None` for an algorithm this module does not implement.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        [Algorithm::Md5, Algorithm::Md5Sess, Algorithm::Sha256, Algorithm::Sha256Sess]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name))
    }

    /// The name as RFC 7616 §3.3 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Whether HA1 also covers the nonce and cnonce (RFC 7616 §3.4.2).
    pub fn is_session(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// How much a client prefers this algorithm: SHA-256 over MD5
    /// (RFC 8760 §2.4, RFC 7616 §3.7).
    fn strength(self) -> u8 {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => 0,
            Algorithm::Sha256 | Algorithm::Sha256Sess => 1,
        }
    }

    /// `H(parts[0] ":" parts[1] ":" …)` in lower-case hex (RFC 7616 §3.4.1:
    /// the digest as a string of hex digits, `LHEX`).
    fn hash(self, parts: &[&str]) -> String {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => {
                // RFC 1321, from RustCrypto's `md-5`.
                let mut h = Md5::new();
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        h.update(b":");
                    }
                    h.update(part.as_bytes());
                }
                lower_hex(&h.finalize())
            }
            Algorithm::Sha256 | Algorithm::Sha256Sess => {
                let mut h = ring::digest::Context::new(&ring::digest::SHA256);
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        h.update(b":");
                    }
                    h.update(part.as_bytes());
                }
                lower_hex(h.finish().as_ref())
            }
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes as lower-case hex digits.
pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// HA1 for `username` in `realm` (RFC 7616 §3.4.2): `H(username ":" realm
/// ":" password)` in lower-case hex, with the algorithm's hash function.
///
/// This is what a registrar stores instead of the password. For the
/// "-sess" algorithms it is the same value as for their base algorithm:
/// the session step (`H(HA1 ":" nonce ":" cnonce)`) happens per request,
/// inside [`DigestChallenge::verify`].
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash(&[username, realm, password])
}

/// The `request-digest` (RFC 7616 §3.4.1; RFC 2617 §3.2.2.1 for answers
/// without `qop`), from the base HA1 (see [`ha1`]).
///
/// `qop` is `Some((nc, cnonce))` for `qop=auth`, `None` for an RFC 2069
/// style answer. A "-sess" algorithm without a cnonce is refused by both
/// callers before they get here.
fn request_digest(
    algorithm: Algorithm,
    base_ha1: &str,
    nonce: &str,
    cnonce: Option<&str>,
    nc: Option<&str>,
    method: &str,
    uri: &str,
) -> String {
    let ha1 = match (algorithm.is_session(), cnonce) {
        (true, Some(cnonce)) => algorithm.hash(&[base_ha1, nonce, cnonce]),
        _ => base_ha1.to_owned(),
    };
    // A2 = Method ":" request-uri for qop=auth or no qop (RFC 7616 §3.4.3;
    // RFC 3261 §22.4 takes the Request-URI as the digest-uri).
    let ha2 = algorithm.hash(&[method, uri]);
    match (nc, cnonce) {
        (Some(nc), Some(cnonce)) => algorithm.hash(&[&ha1, nonce, nc, cnonce, "auth", &ha2]),
        _ => algorithm.hash(&[&ha1, nonce, &ha2]),
    }
}

/// Compares two hex strings without stopping at the first difference, and
/// ignoring the case of hex letters.
fn same_hex(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff =
        a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase()));
    diff == 0
}

/// Appends `name="value"` as a quoted-string (RFC 3261 §25.1), escaping `"`
/// and `\`. Control characters (other than HTAB) are refused: a CR or LF
/// would end the header line.
fn push_quoted(out: &mut String, name: &'static str, value: &str) -> Result<(), &'static str> {
    if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
        return Err(name);
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(())
}

// ---------------------------------------------------------------------------
// Client side

/// Why a challenge could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The challenge is not for the Digest scheme (RFC 3261 §22.1 allows
    /// others; this module answers only Digest).
    #[error("authentication scheme {scheme} is not Digest")]
    NotDigest {
        /// The scheme as written.
        scheme: String,
    },
    /// The challenge names an algorithm this module does not implement.
    #[error("unsupported digest algorithm {algorithm}")]
    UnknownAlgorithm {
        /// The `algorithm` value as written.
        algorithm: String,
    },
    /// The challenge offers `qop` values but not `auth` (only `auth-int`,
    /// which needs the body and is not implemented).
    #[error("no supported qop among \"{offered}\"")]
    UnsupportedQop {
        /// The `qop` options, comma-separated.
        offered: String,
    },
    /// A "-sess" algorithm in a challenge without `qop`: the session HA1
    /// needs a cnonce, which only `qop` answers carry (RFC 2617 §3.2.2).
    #[error("{algorithm} challenge without qop")]
    SessionWithoutQop {
        /// The algorithm challenged with.
        algorithm: Algorithm,
    },
    /// The challenge lacks a parameter the answer needs (`realm`, `nonce`).
    #[error("digest challenge without {name}")]
    MissingParameter {
        /// The parameter's name.
        name: &'static str,
    },
    /// The configured credentials are for another realm.
    #[error("no credentials for realm {realm}")]
    NoCredentialsForRealm {
        /// The realm challenged for.
        realm: String,
    },
    /// A value for a quoted parameter holds a control character (a CR or LF
    /// would split the header).
    #[error("{field} contains a control character")]
    InvalidCharacter {
        /// The parameter it was meant for.
        field: &'static str,
    },
    /// The response carries no WWW-Authenticate or Proxy-Authenticate
    /// challenge that parses.
    #[error("no authentication challenge in the response")]
    NoChallenge,
    /// [`DigestClient::reauthorize`]: no nonce is known for the realm yet.
    #[error("no nonce known for realm {realm}")]
    NoNonce {
        /// The realm asked for.
        realm: String,
    },
}

/// A user's secret for Digest authentication, as configured on a client.
///
/// `Debug` shows the username and realm, never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    /// The `username` (RFC 3261 §22.4: often the user part of the AOR).
    pub username: String,
    /// The password.
    pub password: String,
    /// The realm these credentials are for; `None` answers any realm.
    pub realm: Option<String>,
}

impl fmt::Debug for DigestCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("realm", &self.realm)
            .finish()
    }
}

impl DigestCredentials {
    /// Credentials that answer any realm.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> DigestCredentials {
        DigestCredentials { username: username.into(), password: password.into(), realm: None }
    }

    /// Restricts the credentials to one realm (RFC 3261 §22.1: the realm
    /// names the protection domain).
    #[must_use]
    pub fn with_realm(mut self, realm: impl Into<String>) -> DigestCredentials {
        self.realm = Some(realm.into());
        self
    }

    /// Whether these credentials may answer a challenge for `realm` (an
    /// exact comparison).
    pub fn answers_realm(&self, realm: &str) -> bool {
        self.realm.as_deref().is_none_or(|r| r == realm)
    }
}

/// A challenge read and checked: everything an answer needs.
struct Offer<'a> {
    realm: Cow<'a, str>,
    nonce: Cow<'a, str>,
    opaque: Option<Cow<'a, str>>,
    algorithm: Algorithm,
    /// The `algorithm` value as written, echoed back; `None` when absent.
    algorithm_name: Option<Cow<'a, str>>,
    /// Whether to answer with `qop=auth` (else RFC 2069 style).
    qop: bool,
}

/// Reads a challenge (RFC 7616 §3.3, RFC 3261 §22.4) and checks that this
/// module can answer it.
fn read_offer<'a>(challenge: &Challenge<'a>) -> Result<Offer<'a>, DigestError> {
    if !challenge.is_digest() {
        return Err(DigestError::NotDigest { scheme: challenge.scheme().to_owned() });
    }
    let algorithm_name = challenge.algorithm();
    let algorithm = match &algorithm_name {
        None => Algorithm::Md5,
        Some(name) => Algorithm::from_name(name)
            .ok_or_else(|| DigestError::UnknownAlgorithm { algorithm: name.clone().into_owned() })?,
    };
    let options: Vec<String> = challenge.qop_options().collect();
    let qop = if options.is_empty() {
        false
    } else if options.iter().any(|q| q.eq_ignore_ascii_case("auth")) {
        true
    } else {
        return Err(DigestError::UnsupportedQop { offered: options.join(",") });
    };
    if algorithm.is_session() && !qop {
        return Err(DigestError::SessionWithoutQop { algorithm });
    }
    let realm = challenge.realm().ok_or(DigestError::MissingParameter { name: "realm" })?;
    let nonce = challenge.nonce().ok_or(DigestError::MissingParameter { name: "nonce" })?;
    Ok(Offer { realm, nonce, opaque: challenge.opaque(), algorithm, algorithm_name, qop })
}

/// Picks the challenge to answer among several (RFC 7616 §3.7, RFC 8760
/// §2.4): the strongest algorithm this module supports, SHA-256 before MD5,
/// and the first listed among equals. Challenges it cannot answer (another
/// scheme, an unknown algorithm, only `auth-int`…) are passed over; `None`
/// if none is left.
///
/// Meant for the challenges of one realm; [`DigestClient::authorize_response`]
/// groups a response's challenges by realm before calling it.
pub fn best_challenge<'a, I>(challenges: I) -> Option<Challenge<'a>>
where
    I: IntoIterator<Item = Challenge<'a>>,
{
    let mut best: Option<(u8, Challenge<'a>)> = None;
    for challenge in challenges {
        let Ok(offer) = read_offer(&challenge) else { continue };
        let strength = offer.algorithm.strength();
        if best.as_ref().is_none_or(|(s, _)| strength > *s) {
            best = Some((strength, challenge));
        }
    }
    best.map(|(_, c)| c)
}

/// What the client remembers of the last challenge from one realm, so that
/// the next request can reuse the nonce with the next nonce count.
#[derive(Debug, Clone)]
struct NonceState {
    nonce: String,
    opaque: Option<String>,
    algorithm: Algorithm,
    algorithm_name: Option<String>,
    qop: bool,
    /// The last `nc` sent with this nonce (0: none yet).
    count: u32,
}

/// The client side of Digest authentication (RFC 3261 §22.2, §22.3): the
/// user's credentials and, per realm, the current nonce with its nonce
/// count (RFC 7616 §3.4: `nc` counts the requests sent with one nonce).
///
/// One realm keeps one nonce, the latest it sent: a new nonce (a fresh
/// challenge, or `stale=true`) replaces the old one and the count starts
/// again at `00000001`.
///
/// Sans-IO like the rest of the core: the cnonce comes from the caller's
/// seeded [`Rng`].
#[derive(Debug, Clone)]
pub struct DigestClient {
    credentials: DigestCredentials,
    realms: BTreeMap<String, NonceState>,
}

impl DigestClient {
    /// A client with no nonce known yet.
    pub fn new(credentials: DigestCredentials) -> DigestClient {
        DigestClient { credentials, realms: BTreeMap::new() }
    }

    /// The configured credentials.
    pub fn credentials(&self) -> &DigestCredentials {
        &self.credentials
    }

    /// The last nonce count sent for `realm` (`None` before the first
    /// answer, or after [`DigestClient::forget`]).
    pub fn nonce_count(&self, realm: &str) -> Option<u32> {
        self.realms.get(realm).map(|s| s.count)
    }

    /// Drops what is known of `realm`'s nonce.
    pub fn forget(&mut self, realm: &str) {
        self.realms.remove(realm);
    }

    /// Answers `challenge` (from a 401's WWW-Authenticate or a 407's
    /// Proxy-Authenticate) for a request with `method` and the Request-URI
    /// `uri` (RFC 3261 §22.4: the digest-uri). Returns the value for the
    /// Authorization (after 401) or Proxy-Authorization (after 407) header.
    ///
    /// The cnonce is 128 bits from `rng` (RFC 7616 §3.4: the cnonce should
    /// be unpredictable to the server); answers without `qop` carry none.
    pub fn authorize(
        &mut self,
        challenge: &Challenge<'_>,
        method: &str,
        uri: &str,
        rng: &mut Rng,
    ) -> Result<String, DigestError> {
        self.answer(challenge, method, uri, Cnonce::Random(rng))
    }

    /// [`DigestClient::authorize`] with a given cnonce, for known-answer
    /// tests and for callers that make their own.
    pub fn authorize_with_cnonce(
        &mut self,
        challenge: &Challenge<'_>,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> Result<String, DigestError> {
        self.answer(challenge, method, uri, Cnonce::Given(cnonce))
    }

    /// Answers again with the nonce last received from `realm` and the next
    /// nonce count, without a new challenge: for the next request to the
    /// same server (RFC 7616 §3.4, "nc"; e.g. a REGISTER refresh). The
    /// server may still answer 401/407 with `stale=true`.
    pub fn reauthorize(&mut self, realm: &str, method: &str, uri: &str, rng: &mut Rng) -> Result<String, DigestError> {
        let Some(state) = self.realms.get_mut(realm) else {
            return Err(DigestError::NoNonce { realm: realm.to_owned() });
        };
        let mut next = state.clone();
        next.count = next.count.checked_add(1).unwrap_or(1);
        let cnonce = if next.qop { Some(rng_cnonce(rng)) } else { None };
        let value = render(&self.credentials, realm, &next, method, uri, cnonce.as_deref())?;
        *state = next;
        Ok(value)
    }

    /// Answers every realm a 401 or 407 challenges (RFC 3261 §22.3: a
    /// request forked or passed through several proxies may be challenged
    /// for more than one realm). Returns one `(header, value)` per realm,
    /// `Authorization` for WWW-Authenticate challenges and
    /// `Proxy-Authorization` for Proxy-Authenticate ones, in the order the
    /// realms first appear. Within a realm [`best_challenge`] picks the
    /// challenge.
    ///
    /// Realms that cannot be answered (other credentials, nothing
    /// supported) are left out; the error of the first one is returned
    /// only when no realm could be answered. Malformed challenge values are
    /// skipped.
    pub fn authorize_response(
        &mut self,
        response: &Message<'_>,
        method: &str,
        uri: &str,
        rng: &mut Rng,
    ) -> Result<Vec<(HeaderName, String)>, DigestError> {
        let mut groups: Vec<(HeaderName, Option<String>, Vec<Challenge<'_>>)> = Vec::new();
        let kinds = [
            (HeaderName::Authorization, response.www_authenticate()),
            (HeaderName::ProxyAuthorization, response.proxy_authenticate()),
        ];
        for (answer, values) in kinds {
            for value in values {
                let Ok(challenge) = value else {
                    tracing::debug!(header = %answer, "skipped a malformed challenge");
                    continue;
                };
                let realm = challenge.realm().map(Cow::into_owned);
                match groups.iter_mut().find(|(h, r, _)| *h == answer && *r == realm) {
                    Some((_, _, list)) => list.push(challenge),
                    None => groups.push((answer, realm, vec![challenge])),
                }
            }
        }
        let mut first_error = None;
        let mut out = Vec::new();
        for (header, _, challenges) in groups {
            let chosen = best_challenge(challenges.iter().copied()).unwrap_or(challenges[0]);
            match self.authorize(&chosen, method, uri, rng) {
                Ok(value) => out.push((header, value)),
                Err(e) => {
                    tracing::debug!(header = %header, error = %e, "could not answer a challenge");
                    first_error.get_or_insert(e);
                }
            }
        }
        if out.is_empty() {
            return Err(first_error.unwrap_or(DigestError::NoChallenge));
        }
        Ok(out)
    }

    fn answer(
        &mut self,
        challenge: &Challenge<'_>,
        method: &str,
        uri: &str,
        cnonce: Cnonce<'_, '_>,
    ) -> Result<String, DigestError> {
        let offer = read_offer(challenge)?;
        if !self.credentials.answers_realm(&offer.realm) {
            return Err(DigestError::NoCredentialsForRealm { realm: offer.realm.into_owned() });
        }
        // The same nonce again keeps counting (RFC 7616 §3.4); a new one
        // starts over. The rest is taken from the challenge as it is now.
        let count = match self.realms.get(offer.realm.as_ref()) {
            Some(state) if state.nonce == offer.nonce => state.count,
            _ => 0,
        };
        let state = NonceState {
            nonce: offer.nonce.into_owned(),
            opaque: offer.opaque.map(Cow::into_owned),
            algorithm: offer.algorithm,
            algorithm_name: offer.algorithm_name.map(Cow::into_owned),
            qop: offer.qop,
            count: count.checked_add(1).unwrap_or(1),
        };
        let cnonce = match (state.qop, cnonce) {
            (false, _) => None,
            (true, Cnonce::Given(c)) => Some(c.to_owned()),
            (true, Cnonce::Random(rng)) => Some(rng_cnonce(rng)),
        };
        // Counted only once the answer is made: a refused one is not sent.
        let value = render(&self.credentials, &offer.realm, &state, method, uri, cnonce.as_deref())?;
        self.realms.insert(offer.realm.into_owned(), state);
        Ok(value)
    }
}

/// Where the cnonce comes from.
enum Cnonce<'r, 'c> {
    Random(&'r mut Rng),
    Given(&'c str),
}

/// 128 random bits as 32 hex digits.
fn rng_cnonce(rng: &mut Rng) -> String {
    rng.hex(32)
}

/// Builds the credentials value (RFC 3261 §25.1 `digest-response`, RFC 7616
/// §3.4) for the current state of one realm.
fn render(
    credentials: &DigestCredentials,
    realm: &str,
    state: &NonceState,
    method: &str,
    uri: &str,
    cnonce: Option<&str>,
) -> Result<String, DigestError> {
    let nc = cnonce.map(|_| format!("{:08x}", state.count));
    let base = ha1(state.algorithm, &credentials.username, realm, &credentials.password);
    let response = request_digest(state.algorithm, &base, &state.nonce, cnonce, nc.as_deref(), method, uri);
    tracing::debug!(
        %realm,
        algorithm = %state.algorithm,
        nc = state.count,
        qop = state.qop,
        "answering a digest challenge"
    );
    let invalid = |field| DigestError::InvalidCharacter { field };
    let mut out = String::with_capacity(256);
    out.push_str("Digest ");
    push_quoted(&mut out, "username", &credentials.username).map_err(invalid)?;
    out.push_str(", ");
    push_quoted(&mut out, "realm", realm).map_err(invalid)?;
    out.push_str(", ");
    push_quoted(&mut out, "nonce", &state.nonce).map_err(invalid)?;
    out.push_str(", ");
    push_quoted(&mut out, "uri", uri).map_err(invalid)?;
    out.push_str(", ");
    push_quoted(&mut out, "response", &response).map_err(invalid)?;
    if let Some(name) = &state.algorithm_name {
        // Checked against the known names, so it is a token.
        out.push_str(", algorithm=");
        out.push_str(name);
    }
    if let Some(cnonce) = cnonce {
        out.push_str(", ");
        push_quoted(&mut out, "cnonce", cnonce).map_err(invalid)?;
    }
    if let Some(opaque) = &state.opaque {
        out.push_str(", ");
        push_quoted(&mut out, "opaque", opaque).map_err(invalid)?;
    }
    if let Some(nc) = nc {
        // message-qop and nonce-count are unquoted (RFC 3261 §25.1).
        out.push_str(", qop=auth, nc=");
        out.push_str(&nc);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Server side

/// Why a [`DigestChallenge`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChallengeError {
    /// A quoted value holds a control character.
    #[error("{field} contains a control character")]
    InvalidCharacter {
        /// The parameter it was meant for.
        field: &'static str,
    },
}

/// Why an Authorization / Proxy-Authorization answer was refused. Every
/// variant means "challenge again"; [`VerifyError::NonceMismatch`] is the
/// one where `stale=true` may apply (RFC 7616 §3.3) if the caller knows the
/// nonce as one it issued and that has expired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The credentials are not for the Digest scheme.
    #[error("authentication scheme {scheme} is not Digest")]
    NotDigest {
        /// The scheme as written.
        scheme: String,
    },
    /// A parameter the answer must carry is absent.
    #[error("digest credentials without {name}")]
    MissingParameter {
        /// The parameter's name.
        name: &'static str,
    },
    /// The answer names an algorithm this module does not implement.
    #[error("unsupported digest algorithm {algorithm}")]
    UnknownAlgorithm {
        /// The `algorithm` value as written.
        algorithm: String,
    },
    /// The answer uses another algorithm than the one challenged with.
    #[error("challenged with {expected}, answered with {got}")]
    AlgorithmMismatch {
        /// The challenge's algorithm.
        expected: Algorithm,
        /// The answer's.
        got: Algorithm,
    },
    /// The answer is for another realm.
    #[error("answer for realm {got}, expected {expected}")]
    RealmMismatch {
        /// The challenge's realm.
        expected: String,
        /// The answer's.
        got: String,
    },
    /// The answer's nonce is not the challenge's.
    #[error("answer for another nonce")]
    NonceMismatch,
    /// The opaque value did not come back unchanged (RFC 7616 §3.3).
    #[error("opaque not returned unchanged")]
    OpaqueMismatch,
    /// The challenge offered `qop=auth` and the answer has no `qop`.
    #[error("answer without qop")]
    QopRequired,
    /// The answer's `qop` is not one the challenge offered (`auth-int` is
    /// never offered).
    #[error("unsupported qop {qop}")]
    UnsupportedQop {
        /// The `qop` value as written.
        qop: String,
    },
    /// `nc` is not 8 hex digits (RFC 7616 §3.4).
    #[error("malformed nonce count {nc}")]
    MalformedNonceCount {
        /// The `nc` value as written.
        nc: String,
    },
    /// The answer hashes the username (`userhash=true`, RFC 7616 §3.4.4),
    /// which is not implemented.
    #[error("userhash is not supported")]
    UnsupportedUserhash,
    /// The response does not match: wrong password, or a tampered answer.
    #[error("wrong digest response")]
    WrongResponse,
}

/// The known secret to check an answer against.
///
/// `Debug` never shows the secret.
#[derive(Clone, Copy)]
pub enum Secret<'a> {
    /// The user's password.
    Password(&'a str),
    /// The stored HA1 (see [`ha1`]), computed with the challenge's hash
    /// function (MD5 for MD5 and MD5-sess, SHA-256 for SHA-256 and
    /// SHA-256-sess) and realm.
    Ha1(&'a str),
}

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<redacted>)"),
            Secret::Ha1(_) => f.write_str("Ha1(<redacted>)"),
        }
    }
}

/// An answer that checked out: what the caller still has to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Verified {
    /// The authenticated `username`.
    pub username: String,
    /// The `uri` answered for. The caller compares it with the request's
    /// Request-URI (RFC 7616 §3.4.6) where no proxy may have changed it.
    pub uri: String,
    /// The algorithm used.
    pub algorithm: Algorithm,
    /// The nonce count (`qop=auth` answers only): the caller rejects an
    /// `nc` not above the last one seen with this nonce (replay,
    /// RFC 7616 §3.4).
    pub nc: Option<u32>,
    /// The client's cnonce (`qop=auth` answers only).
    pub cnonce: Option<String>,
}

/// A challenge a server sends (RFC 3261 §22.1, RFC 7616 §3.3), and the
/// record of it that later checks the answer.
///
/// Making and expiring nonces is the caller's job: it builds one of these
/// with a fresh nonce for the 401/407, and, when the answer arrives, builds
/// it again from the answer's nonce (after looking the nonce up in its own
/// store) and calls [`DigestChallenge::verify`].
///
/// ```
/// use sipline::auth::{ha1, Algorithm, DigestChallenge, DigestClient, DigestCredentials, Secret};
/// use sipline::message::headers::{Challenge, Credentials, HeaderValue};
/// use sipline::rng::Rng;
///
/// let challenge = DigestChallenge::new("biloxi.com", "b4f2e1c0", Algorithm::Sha256).unwrap();
/// let header = challenge.header_value(); // for WWW-Authenticate
///
/// let mut client = DigestClient::new(DigestCredentials::new("bob", "zanzibar"));
/// let parsed = Challenge::parse_value(header.as_bytes()).unwrap();
/// let answer = client.authorize(&parsed, "REGISTER", "sip:biloxi.com", &mut Rng::new(1)).unwrap();
///
/// let credentials = Credentials::parse_value(answer.as_bytes()).unwrap();
/// let stored = ha1(Algorithm::Sha256, "bob", "biloxi.com", "zanzibar");
/// let ok = challenge.verify(&credentials, "REGISTER", Secret::Ha1(&stored)).unwrap();
/// assert_eq!(ok.username, "bob");
/// assert_eq!(ok.nc, Some(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    realm: String,
    nonce: String,
    opaque: Option<String>,
    algorithm: Algorithm,
    qop: bool,
    stale: bool,
}

/// Checks a value meant for a quoted-string.
fn check_quotable(field: &'static str, value: &str) -> Result<(), ChallengeError> {
    if value.chars().any(|c| c.is_ascii_control() && c != '\t') {
        return Err(ChallengeError::InvalidCharacter { field });
    }
    Ok(())
}

impl DigestChallenge {
    /// A challenge offering `qop="auth"`, not stale, without `opaque`.
    pub fn new(
        realm: impl Into<String>,
        nonce: impl Into<String>,
        algorithm: Algorithm,
    ) -> Result<DigestChallenge, ChallengeError> {
        let (realm, nonce) = (realm.into(), nonce.into());
        check_quotable("realm", &realm)?;
        check_quotable("nonce", &nonce)?;
        Ok(DigestChallenge { realm, nonce, opaque: None, algorithm, qop: true, stale: false })
    }

    /// Adds an `opaque` value, which the client returns unchanged.
    pub fn with_opaque(mut self, opaque: impl Into<String>) -> Result<DigestChallenge, ChallengeError> {
        let opaque = opaque.into();
        check_quotable("opaque", &opaque)?;
        self.opaque = Some(opaque);
        Ok(self)
    }

    /// Sets `stale=true`: the previous answer was right but its nonce has
    /// expired, so the client retries without asking the user (RFC 7616
    /// §3.3).
    #[must_use]
    pub fn with_stale(mut self, stale: bool) -> DigestChallenge {
        self.stale = stale;
        self
    }

    /// Offers no `qop`: the RFC 2069 style for old clients. Answers then
    /// carry neither cnonce nor nc, so replay protection rests on the nonce
    /// alone.
    #[must_use]
    pub fn without_qop(mut self) -> DigestChallenge {
        self.qop = false;
        self
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The nonce.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The opaque value, if any.
    pub fn opaque(&self) -> Option<&str> {
        self.opaque.as_deref()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Whether `qop="auth"` is offered.
    pub fn offers_qop(&self) -> bool {
        self.qop
    }

    /// Whether `stale=true` is set.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// The WWW-Authenticate / Proxy-Authenticate value (RFC 3261 §25.1
    /// `digest-cln`), e.g. `Digest realm="biloxi.com", nonce="…",
    /// algorithm=SHA-256, qop="auth"`.
    pub fn header_value(&self) -> String {
        self.to_string()
    }

    /// Checks an answer to this challenge (RFC 7616 §3.4, §3.4.6): the
    /// realm, nonce, opaque and algorithm must be this challenge's, and the
    /// response must match `method` and the answer's own `uri` under
    /// `secret`.
    ///
    /// Left to the caller: that the nonce is one it issued and is still
    /// fresh, that `nc` grows (see [`Verified::nc`]), that the username is
    /// the one `secret` belongs to, and that `uri` is the request's.
    pub fn verify(
        &self,
        credentials: &Credentials<'_>,
        method: &str,
        secret: Secret<'_>,
    ) -> Result<Verified, VerifyError> {
        let result = self.check(credentials, method, secret);
        if let Err(e) = &result {
            tracing::debug!(
                realm = %self.realm,
                username = credentials.username().as_deref().unwrap_or(""),
                error = %e,
                "digest answer refused"
            );
        }
        result
    }

    fn check(&self, credentials: &Credentials<'_>, method: &str, secret: Secret<'_>) -> Result<Verified, VerifyError> {
        if !credentials.is_digest() {
            return Err(VerifyError::NotDigest { scheme: credentials.scheme().to_owned() });
        }
        let missing = |name| VerifyError::MissingParameter { name };
        if credentials.param("userhash").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Err(VerifyError::UnsupportedUserhash);
        }
        let username = credentials.username().ok_or(missing("username"))?;
        let realm = credentials.realm().ok_or(missing("realm"))?;
        if realm != self.realm {
            return Err(VerifyError::RealmMismatch { expected: self.realm.clone(), got: realm.into_owned() });
        }
        let nonce = credentials.nonce().ok_or(missing("nonce"))?;
        if nonce != self.nonce {
            return Err(VerifyError::NonceMismatch);
        }
        let uri = credentials.uri().ok_or(missing("uri"))?;
        let response = credentials.response().ok_or(missing("response"))?;
        let algorithm = match credentials.algorithm() {
            None => Algorithm::Md5,
            Some(name) => Algorithm::from_name(&name)
                .ok_or_else(|| VerifyError::UnknownAlgorithm { algorithm: name.into_owned() })?,
        };
        if algorithm != self.algorithm {
            return Err(VerifyError::AlgorithmMismatch { expected: self.algorithm, got: algorithm });
        }
        if let Some(expected) = &self.opaque {
            if credentials.opaque().as_deref() != Some(expected.as_str()) {
                return Err(VerifyError::OpaqueMismatch);
            }
        }
        let (nc_text, cnonce) = match (credentials.qop(), self.qop) {
            (None, true) => return Err(VerifyError::QopRequired),
            (None, false) => (None, None),
            (Some(qop), offered) => {
                if !offered || !qop.eq_ignore_ascii_case("auth") {
                    return Err(VerifyError::UnsupportedQop { qop: qop.into_owned() });
                }
                let nc = credentials.nc().ok_or(missing("nc"))?;
                let cnonce = credentials.cnonce().ok_or(missing("cnonce"))?;
                (Some(nc), Some(cnonce))
            }
        };
        let nc = match &nc_text {
            None => None,
            Some(text) => {
                Some(parse_nc(text).ok_or_else(|| VerifyError::MalformedNonceCount { nc: text.to_string() })?)
            }
        };
        if algorithm.is_session() && cnonce.is_none() {
            return Err(missing("cnonce"));
        }
        let base = match secret {
            Secret::Password(password) => ha1(algorithm, &username, &self.realm, password),
            Secret::Ha1(stored) => stored.to_ascii_lowercase(),
        };
        let expected =
            request_digest(algorithm, &base, &self.nonce, cnonce.as_deref(), nc_text.as_deref(), method, &uri);
        if !same_hex(&expected, &response) {
            return Err(VerifyError::WrongResponse);
        }
        Ok(Verified {
            username: username.into_owned(),
            uri: uri.into_owned(),
            algorithm,
            nc,
            cnonce: cnonce.map(Cow::into_owned),
        })
    }
}

/// `nc-value = 8LHEX` (RFC 7616 §3.4; upper-case digits accepted).
fn parse_nc(text: &str) -> Option<u32> {
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

impl fmt::Display for DigestChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The values were checked when set, so quoting cannot fail.
        let mut out = String::with_capacity(128);
        out.push_str("Digest ");
        let _ = push_quoted(&mut out, "realm", &self.realm);
        out.push_str(", ");
        let _ = push_quoted(&mut out, "nonce", &self.nonce);
        if let Some(opaque) = &self.opaque {
            out.push_str(", ");
            let _ = push_quoted(&mut out, "opaque", opaque);
        }
        out.push_str(", algorithm=");
        out.push_str(self.algorithm.as_str());
        if self.qop {
            out.push_str(", qop=\"auth\"");
        }
        if self.stale {
            out.push_str(", stale=true");
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::headers::HeaderValue;

    fn challenge(value: &str) -> Challenge<'_> {
        Challenge::parse_value(value.as_bytes()).expect("challenge parses")
    }

    fn credentials(value: &str) -> Credentials<'_> {
        Credentials::parse_value(value.as_bytes()).expect("credentials parse")
    }

    /// The value of `name` in a produced header, through the message
    /// layer's parser.
    fn param(value: &str, name: &str) -> Option<String> {
        credentials(value).param(name).map(Cow::into_owned)
    }

    /// RFC 1321 appendix A.5, the test suite: the digests through
    /// `md-5` as `Algorithm::hash` uses it (one part, no separator).
    #[test]
    fn md5_rfc1321_test_suite() {
        const SUITE: [(&str, &str); 7] = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            ("abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"),
            ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "d174ab98d277d9f5a5611c2c9f419d9f"),
            (
                "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        for (input, expected) in SUITE {
            assert_eq!(Algorithm::Md5.hash(&[input]), expected, "MD5(\"{input}\")");
            assert_eq!(Algorithm::Md5Sess.hash(&[input]), expected, "MD5-sess hashes with MD5");
        }
        // Parts are joined with ':' (RFC 7616 §3.4.1) and fed in pieces:
        // the same digest as the joined string in one piece.
        assert_eq!(Algorithm::Md5.hash(&["message", "digest"]), Algorithm::Md5.hash(&["message:digest"]));
        // Across the 56-byte padding boundary, in one part and in two.
        assert_eq!(Algorithm::Md5.hash(&[&"a".repeat(56)]), "3b0c8ac703f828b04c6c197006d17218");
        assert_eq!(Algorithm::Md5.hash(&[&"a".repeat(28), &"a".repeat(27)]), "ec1a171faa6345055e7d607c1f51fb51");
    }

    const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    fn rfc7616_challenge(algorithm: &str) -> String {
        format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={algorithm}, \
             nonce=\"{RFC7616_NONCE}\", opaque=\"{RFC7616_OPAQUE}\""
        )
    }

    fn mufasa() -> DigestClient {
        DigestClient::new(DigestCredentials::new("Mufasa", "Circle of Life"))
    }

    /// A SIP challenge in the style of RFC 3261 §22.4 / RFC 3665.
    const SIP_CHALLENGE: &str = "Digest realm=\"biloxi.com\", qop=\"auth,auth-int\", \
         nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"";

    fn bob() -> DigestClient {
        DigestClient::new(DigestCredentials::new("bob", "zanzibar"))
    }

    #[test]
    fn rfc2617_section_3_5_example() {
        let c = challenge(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        );
        let mut client = DigestClient::new(DigestCredentials::new("Mufasa", "Circle Of Life"));
        let value = client.authorize_with_cnonce(&c, "GET", "/dir/index.html", "0a4f113b").unwrap();
        assert_eq!(
            value,
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", \
             response=\"6629fae49393a05397450978507c4ef1\", cnonce=\"0a4f113b\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", qop=auth, nc=00000001"
        );
    }

    #[test]
    fn rfc7616_section_3_9_1_md5() {
        let value = mufasa()
            .authorize_with_cnonce(&challenge(&rfc7616_challenge("MD5")), "GET", "/dir/index.html", RFC7616_CNONCE)
            .unwrap();
        assert_eq!(param(&value, "response").unwrap(), "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(param(&value, "algorithm").unwrap(), "MD5");
        assert_eq!(param(&value, "opaque").unwrap(), RFC7616_OPAQUE);
    }

    #[test]
    fn rfc7616_section_3_9_1_sha256() {
        let value = mufasa()
            .authorize_with_cnonce(&challenge(&rfc7616_challenge("SHA-256")), "GET", "/dir/index.html", RFC7616_CNONCE)
            .unwrap();
        assert_eq!(
            param(&value, "response").unwrap(),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert_eq!(param(&value, "algorithm").unwrap(), "SHA-256");
    }

    #[test]
    fn algorithm_names_are_case_insensitive_and_echoed() {
        let value = mufasa()
            .authorize_with_cnonce(&challenge(&rfc7616_challenge("sha-256")), "GET", "/dir/index.html", RFC7616_CNONCE)
            .unwrap();
        assert_eq!(
            param(&value, "response").unwrap(),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        assert!(value.contains(", algorithm=sha-256,"), "{value}");
        assert_eq!(Algorithm::from_name("md5-SESS"), Some(Algorithm::Md5Sess));
        assert_eq!(Algorithm::from_name("SHA-256-sess"), Some(Algorithm::Sha256Sess));
        assert_eq!(Algorithm::from_name("SHA-512-256"), None);
    }

    // Expected responses in the SIP tests below were worked out by hand from
    // RFC 7616 §3.4.1–3.4.3 with an independent MD5/SHA-256 implementation.

    #[test]
    fn sip_invite_md5() {
        let mut client = bob();
        let value = client
            .authorize_with_cnonce(&challenge(SIP_CHALLENGE), "INVITE", "sip:bob@biloxi.com", "0a4f113b")
            .unwrap();
        assert_eq!(
            value,
            "Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             uri=\"sip:bob@biloxi.com\", response=\"89eb0059246c02b2f6ee02c7961d5ea3\", cnonce=\"0a4f113b\", \
             opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", qop=auth, nc=00000001"
        );
        assert_eq!(client.nonce_count("biloxi.com"), Some(1));
    }

    #[test]
    fn sip_invite_sha256_and_sess_variants() {
        let cases = [
            ("SHA-256", "b3b5a6c69453abafaab9ae4dccdac90a076b6c80615d5f3498e7433b6e93bf4f"),
            ("MD5-sess", "e4e4ea61d186d07a92c9e1f6919902e9"),
            ("SHA-256-sess", "5da59c9ca40954be9d5063a15a174066c8251be2c10cf47c144c366dc7daf792"),
        ];
        for (algorithm, expected) in cases {
            let c = format!("{SIP_CHALLENGE}, algorithm={algorithm}");
            let value =
                bob().authorize_with_cnonce(&challenge(&c), "INVITE", "sip:bob@biloxi.com", "0a4f113b").unwrap();
            assert_eq!(param(&value, "response").unwrap(), expected, "{algorithm}");
            assert_eq!(param(&value, "algorithm").unwrap(), algorithm);
        }
    }

    #[test]
    fn nonce_count_grows_on_reuse_and_restarts_with_a_new_nonce() {
        let mut client = bob();
        let c = challenge(SIP_CHALLENGE);
        let first = client.authorize_with_cnonce(&c, "INVITE", "sip:bob@biloxi.com", "0a4f113b").unwrap();
        assert_eq!(param(&first, "nc").unwrap(), "00000001");
        let second = client.authorize_with_cnonce(&c, "INVITE", "sip:bob@biloxi.com", "0a4f113b").unwrap();
        assert_eq!(param(&second, "nc").unwrap(), "00000002");
        assert_eq!(param(&second, "response").unwrap(), "a2ad8a54015a6d71ceed909c3c0ef76f");
        // Without a new challenge: the remembered nonce, the next count.
        let mut rng = Rng::new(3);
        let third = client.reauthorize("biloxi.com", "BYE", "sip:bob@192.0.2.4", &mut rng).unwrap();
        assert_eq!(param(&third, "nc").unwrap(), "00000003");
        assert_eq!(param(&third, "nonce").unwrap(), "dcd98b7102dd2f0e8b11d0f600bfb0c093");
        assert_eq!(param(&third, "opaque").unwrap(), "5ccc069c403ebaf9f0171e9517f40e41");
        assert_eq!(client.nonce_count("biloxi.com"), Some(3));
        // A stale challenge brings a new nonce: back to 1.
        let stale = challenge("Digest realm=\"biloxi.com\", qop=\"auth\", nonce=\"fresh-nonce\", stale=true");
        let fourth = client.authorize(&stale, "INVITE", "sip:bob@biloxi.com", &mut rng).unwrap();
        assert_eq!(param(&fourth, "nc").unwrap(), "00000001");
        assert_eq!(param(&fourth, "opaque"), None, "the new challenge has none");
        // Another realm counts on its own.
        let other =
            challenge("Digest realm=\"atlanta.com\", qop=\"auth\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\"");
        let value = client.authorize(&other, "INVITE", "sip:bob@biloxi.com", &mut rng).unwrap();
        assert_eq!(param(&value, "nc").unwrap(), "00000001");
        client.forget("atlanta.com");
        assert_eq!(client.nonce_count("atlanta.com"), None);
        assert_eq!(
            client.reauthorize("atlanta.com", "INVITE", "sip:x@y", &mut rng),
            Err(DigestError::NoNonce { realm: "atlanta.com".into() })
        );
    }

    #[test]
    fn random_cnonces_come_from_the_rng() {
        let c = challenge(SIP_CHALLENGE);
        let a = bob().authorize(&c, "REGISTER", "sip:biloxi.com", &mut Rng::new(9)).unwrap();
        let b = bob().authorize(&c, "REGISTER", "sip:biloxi.com", &mut Rng::new(9)).unwrap();
        let other = bob().authorize(&c, "REGISTER", "sip:biloxi.com", &mut Rng::new(10)).unwrap();
        assert_eq!(a, b, "same seed, same answer");
        let cnonce = param(&a, "cnonce").unwrap();
        assert_eq!(cnonce.len(), 32);
        assert!(cnonce.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(param(&other, "cnonce").unwrap(), cnonce);
    }

    #[test]
    fn legacy_challenge_without_qop() {
        let c = challenge("Digest realm=\"biloxi.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\"");
        let mut rng = Rng::new(1);
        let value = bob().authorize(&c, "INVITE", "sip:bob@biloxi.com", &mut rng).unwrap();
        assert_eq!(
            value,
            "Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", \
             uri=\"sip:bob@biloxi.com\", response=\"bf57e4e0d0bffc0fbaedce64d59add5e\""
        );
        let sess = challenge("Digest realm=\"biloxi.com\", nonce=\"abc\", algorithm=MD5-sess");
        assert_eq!(
            bob().authorize(&sess, "INVITE", "sip:bob@biloxi.com", &mut rng),
            Err(DigestError::SessionWithoutQop { algorithm: Algorithm::Md5Sess })
        );
    }

    #[test]
    fn auth_int_only_is_unsupported() {
        let c = challenge("Digest realm=\"biloxi.com\", qop=\"auth-int\", nonce=\"abc\"");
        let mut client = bob();
        let err = client.authorize(&c, "INVITE", "sip:bob@biloxi.com", &mut Rng::new(1)).unwrap_err();
        assert_eq!(err, DigestError::UnsupportedQop { offered: "auth-int".into() });
        assert_eq!(client.nonce_count("biloxi.com"), None, "nothing sent, nothing counted");
    }

    #[test]
    fn refused_challenges() {
        let mut rng = Rng::new(1);
        let mut client = bob();
        let mut answer = |c: &str| client.authorize(&challenge(c), "INVITE", "sip:bob@biloxi.com", &mut rng);
        assert_eq!(answer("Basic realm=\"biloxi.com\""), Err(DigestError::NotDigest { scheme: "Basic".into() }));
        assert_eq!(
            answer("Digest realm=\"biloxi.com\", nonce=\"abc\", algorithm=AKAv1-MD5"),
            Err(DigestError::UnknownAlgorithm { algorithm: "AKAv1-MD5".into() })
        );
        assert_eq!(answer("Digest nonce=\"abc\""), Err(DigestError::MissingParameter { name: "realm" }));
        assert_eq!(answer("Digest realm=\"biloxi.com\""), Err(DigestError::MissingParameter { name: "nonce" }));
        // A nonce that unquotes to a control character cannot be sent back.
        assert_eq!(
            answer("Digest realm=\"biloxi.com\", nonce=\"a\\\u{1}b\""),
            Err(DigestError::InvalidCharacter { field: "nonce" })
        );
    }

    #[test]
    fn credentials_for_another_realm() {
        let mut client = DigestClient::new(DigestCredentials::new("bob", "zanzibar").with_realm("atlanta.com"));
        let err = client.authorize(&challenge(SIP_CHALLENGE), "INVITE", "sip:bob@biloxi.com", &mut Rng::new(1));
        assert_eq!(err, Err(DigestError::NoCredentialsForRealm { realm: "biloxi.com".into() }));
        assert_eq!(err.unwrap_err().to_string(), "no credentials for realm biloxi.com");
        let ok = challenge("Digest realm=\"atlanta.com\", nonce=\"abc\", qop=auth");
        assert!(client.authorize(&ok, "INVITE", "sip:bob@biloxi.com", &mut Rng::new(1)).is_ok());
    }

    #[test]
    fn header_injection_is_refused() {
        let mut client = DigestClient::new(DigestCredentials::new("bob\r\nX-Evil: 1", "pw"));
        let err = client.authorize(&challenge(SIP_CHALLENGE), "INVITE", "sip:bob@biloxi.com", &mut Rng::new(1));
        assert_eq!(err, Err(DigestError::InvalidCharacter { field: "username" }));
        assert_eq!(client.nonce_count("biloxi.com"), None);
        let mut client = bob();
        let err = client.authorize(&challenge(SIP_CHALLENGE), "INVITE", "sip:bob@biloxi.com\r\n", &mut Rng::new(1));
        assert_eq!(err, Err(DigestError::InvalidCharacter { field: "uri" }));
    }

    #[test]
    fn quotes_and_backslashes_round_trip() {
        let mut client = DigestClient::new(DigestCredentials::new("b\"o\\b", "zanzibar"));
        let c = challenge("Digest realm=\"bi\\\"loxi\", nonce=\"abc\", qop=auth");
        let value = client.authorize(&c, "INVITE", "sip:bob@biloxi.com", &mut Rng::new(1)).unwrap();
        assert!(value.starts_with(r#"Digest username="b\"o\\b", realm="bi\"loxi""#), "{value}");
        let parsed = credentials(&value);
        assert_eq!(parsed.username().unwrap(), "b\"o\\b");
        assert_eq!(parsed.realm().unwrap(), "bi\"loxi");
        let server = DigestChallenge::new("bi\"loxi", "abc", Algorithm::Md5).unwrap();
        assert!(server.verify(&parsed, "INVITE", Secret::Password("zanzibar")).is_ok());
    }

    #[test]
    fn best_challenge_prefers_sha256() {
        let md5 = "Digest realm=\"biloxi.com\", qop=\"auth\", nonce=\"n1\", algorithm=MD5";
        let sha = "Digest realm=\"biloxi.com\", qop=\"auth\", nonce=\"n1\", algorithm=SHA-256";
        let sha_sess = "Digest realm=\"biloxi.com\", qop=\"auth\", nonce=\"n1\", algorithm=SHA-256-sess";
        let unknown = "Digest realm=\"biloxi.com\", qop=\"auth\", nonce=\"n1\", algorithm=SHA-512-256";
        let basic = "Basic realm=\"biloxi.com\"";
        let pick = |list: &[&'static str]| best_challenge(list.iter().map(|c| challenge(c))).map(|c| c.as_str());
        assert_eq!(pick(&[md5, sha]), Some(sha));
        assert_eq!(pick(&[sha, md5]), Some(sha));
        assert_eq!(pick(&[unknown, basic, md5]), Some(md5));
        assert_eq!(pick(&[sha_sess, sha]), Some(sha_sess), "the first among equals");
        assert_eq!(pick(&[unknown, basic]), None);
        assert_eq!(pick(&[]), None);
    }

    fn response_with(headers: &str) -> String {
        format!(
            "SIP/2.0 407 Proxy Authentication Required\r\n\
             Via: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7\r\n\
             From: <sip:alice@atlanta.com>;tag=9fxced76sl\r\nTo: <sip:bob@biloxi.com>;tag=3flal12sf\r\n\
             Call-ID: 3848276298220188511@atlanta.example.com\r\nCSeq: 1 INVITE\r\n\
             {headers}Content-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn authorize_response_answers_each_realm_once() {
        let text = response_with(
            "Proxy-Authenticate: Digest realm=\"atlanta.com\", qop=\"auth\", nonce=\"n1\", algorithm=MD5\r\n\
             Proxy-Authenticate: Digest realm=\"atlanta.com\", qop=\"auth\", nonce=\"n1\", algorithm=SHA-256\r\n\
             Proxy-Authenticate: Digest realm=\"biloxi.com\", qop=\"auth\", nonce=\"n2\"\r\n\
             Proxy-Authenticate: Digest realm=\"broken\r\n\
             WWW-Authenticate: Digest realm=\"chicago.com\", nonce=\"n3\"\r\n",
        );
        let response = Message::parse(text.as_bytes()).unwrap();
        let mut client = bob();
        let answers = client.authorize_response(&response, "INVITE", "sip:bob@biloxi.com", &mut Rng::new(5)).unwrap();
        let summary: Vec<(HeaderName, String, String)> = answers
            .iter()
            .map(|(h, v)| (*h, param(v, "realm").unwrap(), param(v, "algorithm").unwrap_or_default()))
            .collect();
        assert_eq!(
            summary,
            [
                (HeaderName::Authorization, "chicago.com".to_owned(), String::new()),
                (HeaderName::ProxyAuthorization, "atlanta.com".to_owned(), "SHA-256".to_owned()),
                (HeaderName::ProxyAuthorization, "biloxi.com".to_owned(), String::new()),
            ]
        );
        // Realm-bound credentials answer only their realm.
        let mut client = DigestClient::new(DigestCredentials::new("bob", "zanzibar").with_realm("biloxi.com"));
        let answers = client.authorize_response(&response, "INVITE", "sip:bob@biloxi.com", &mut Rng::new(5)).unwrap();
        assert_eq!(answers.len(), 1);
        assert_eq!(param(&answers[0].1, "realm").unwrap(), "biloxi.com");
    }

    #[test]
    fn authorize_response_errors() {
        let text = response_with("");
        let none = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(
            bob().authorize_response(&none, "INVITE", "sip:bob@biloxi.com", &mut Rng::new(5)),
            Err(DigestError::NoChallenge)
        );
        let text =
            response_with("Proxy-Authenticate: Digest realm=\"atlanta.com\", qop=\"auth-int\", nonce=\"n1\"\r\n");
        let only_int = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(
            bob().authorize_response(&only_int, "INVITE", "sip:bob@biloxi.com", &mut Rng::new(5)),
            Err(DigestError::UnsupportedQop { offered: "auth-int".into() })
        );
    }

    #[test]
    fn produced_header_parses_back() {
        let mut client = mufasa();
        let value = client
            .authorize_with_cnonce(&challenge(&rfc7616_challenge("SHA-256")), "GET", "/dir/index.html", RFC7616_CNONCE)
            .unwrap();
        let c = credentials(&value);
        assert!(c.is_digest());
        assert_eq!(c.username().unwrap(), "Mufasa");
        assert_eq!(c.realm().unwrap(), "http-auth@example.org");
        assert_eq!(c.nonce().unwrap(), RFC7616_NONCE);
        assert_eq!(c.uri().unwrap(), "/dir/index.html");
        assert_eq!(c.response().unwrap(), "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
        assert_eq!(c.algorithm().unwrap(), "SHA-256");
        assert_eq!(c.cnonce().unwrap(), RFC7616_CNONCE);
        assert_eq!(c.opaque().unwrap(), RFC7616_OPAQUE);
        assert_eq!(c.qop().unwrap(), "auth");
        assert_eq!(c.nc().unwrap(), "00000001");
        assert_eq!(c.params().iter().count(), 10);
        // And inside a whole request, through the typed accessor.
        let request =
            format!("GET sip:x@example.org SIP/2.0\r\nAuthorization: {value}\r\nProxy-Authorization: {value}\r\n\r\n");
        let m = Message::parse(request.as_bytes()).unwrap();
        let from_message = m.authorization().next().unwrap().unwrap();
        assert_eq!(from_message.response(), c.response());
        assert_eq!(m.proxy_authorization().count(), 1);
    }

    #[test]
    fn server_checks_the_rfc7616_answer() {
        let server = DigestChallenge::new("http-auth@example.org", RFC7616_NONCE, Algorithm::Sha256)
            .unwrap()
            .with_opaque(RFC7616_OPAQUE)
            .unwrap();
        let answer = format!(
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", uri=\"/dir/index.html\", \
             algorithm=SHA-256, nonce=\"{RFC7616_NONCE}\", nc=00000001, cnonce=\"{RFC7616_CNONCE}\", qop=auth, \
             response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
             opaque=\"{RFC7616_OPAQUE}\""
        );
        let ok = server.verify(&credentials(&answer), "GET", Secret::Password("Circle of Life")).unwrap();
        assert_eq!(
            ok,
            Verified {
                username: "Mufasa".into(),
                uri: "/dir/index.html".into(),
                algorithm: Algorithm::Sha256,
                nc: Some(1),
                cnonce: Some(RFC7616_CNONCE.into()),
            }
        );
        // Upper-case hex in the response is the same digest.
        let upper = answer.replace("753927fa0e85d155", "753927FA0E85D155");
        assert!(server.verify(&credentials(&upper), "GET", Secret::Password("Circle of Life")).is_ok());
        // Another method, another digest.
        assert_eq!(
            server.verify(&credentials(&answer), "POST", Secret::Password("Circle of Life")),
            Err(VerifyError::WrongResponse)
        );
    }

    #[test]
    fn ha1_values() {
        assert_eq!(ha1(Algorithm::Md5, "bob", "biloxi.com", "zanzibar"), "12af60467a33e8518da5c68bbff12b11");
        assert_eq!(ha1(Algorithm::Md5Sess, "bob", "biloxi.com", "zanzibar"), "12af60467a33e8518da5c68bbff12b11");
        assert_eq!(
            ha1(Algorithm::Sha256, "bob", "biloxi.com", "zanzibar"),
            "e65db393e748c5228939a6b4b2879e9ea5625cd79fd5267868cb568d69f6b97e"
        );
    }

    #[test]
    fn round_trip_client_to_server() {
        let algorithms = [Algorithm::Md5, Algorithm::Md5Sess, Algorithm::Sha256, Algorithm::Sha256Sess];
        let mut rng = Rng::new(42);
        for algorithm in algorithms {
            let server =
                DigestChallenge::new("biloxi.com", rng.hex(24), algorithm).unwrap().with_opaque(rng.hex(16)).unwrap();
            let header = server.header_value();
            let mut client = bob();
            let mut alice = DigestClient::new(DigestCredentials::new("bob", "wrong password"));
            for round in 1..=3u32 {
                let parsed = challenge(&header);
                let value = client.authorize(&parsed, "REGISTER", "sip:biloxi.com", &mut rng).unwrap();
                let answer = credentials(&value);
                let by_password = server.verify(&answer, "REGISTER", Secret::Password("zanzibar")).unwrap();
                let stored = ha1(algorithm, "bob", "biloxi.com", "zanzibar");
                let by_ha1 = server.verify(&answer, "REGISTER", Secret::Ha1(&stored)).unwrap();
                assert_eq!(by_password, by_ha1);
                assert_eq!(by_password.nc, Some(round), "{algorithm}");
                assert_eq!(by_password.algorithm, algorithm);
                assert_eq!(by_password.uri, "sip:biloxi.com");
                let wrong = alice.authorize(&parsed, "REGISTER", "sip:biloxi.com", &mut rng).unwrap();
                assert_eq!(
                    server.verify(&credentials(&wrong), "REGISTER", Secret::Password("zanzibar")),
                    Err(VerifyError::WrongResponse),
                    "{algorithm}"
                );
            }
        }
    }

    #[test]
    fn round_trip_without_qop() {
        let server = DigestChallenge::new("biloxi.com", "n0nce", Algorithm::Sha256).unwrap().without_qop();
        let header = server.header_value();
        assert_eq!(header, "Digest realm=\"biloxi.com\", nonce=\"n0nce\", algorithm=SHA-256");
        let value = bob().authorize(&challenge(&header), "INVITE", "sip:bob@biloxi.com", &mut Rng::new(1)).unwrap();
        let ok = server.verify(&credentials(&value), "INVITE", Secret::Password("zanzibar")).unwrap();
        assert_eq!((ok.nc, ok.cnonce), (None, None));
        // An answer with qop to a challenge that offered none is refused.
        let offered = DigestChallenge::new("biloxi.com", "n0nce", Algorithm::Sha256).unwrap();
        let with_qop =
            bob().authorize(&challenge(&offered.header_value()), "INVITE", "sip:b", &mut Rng::new(1)).unwrap();
        assert_eq!(
            server.verify(&credentials(&with_qop), "INVITE", Secret::Password("zanzibar")),
            Err(VerifyError::UnsupportedQop { qop: "auth".into() })
        );
        // And one without qop to a challenge that offered it.
        assert_eq!(
            offered.verify(&credentials(&value), "INVITE", Secret::Password("zanzibar")),
            Err(VerifyError::QopRequired)
        );
    }

    #[test]
    fn server_challenge_header() {
        let c = DigestChallenge::new("biloxi.com", "abc", Algorithm::Md5)
            .unwrap()
            .with_opaque("xyz")
            .unwrap()
            .with_stale(true);
        assert_eq!(
            c.header_value(),
            "Digest realm=\"biloxi.com\", nonce=\"abc\", opaque=\"xyz\", algorithm=MD5, qop=\"auth\", stale=true"
        );
        let shown = c.to_string();
        let parsed = challenge(&shown);
        assert!(parsed.stale());
        assert_eq!(parsed.qop_options().collect::<Vec<_>>(), ["auth"]);
        assert_eq!((c.realm(), c.nonce(), c.opaque()), ("biloxi.com", "abc", Some("xyz")));
        assert!(c.offers_qop() && c.is_stale());
        assert_eq!(c.algorithm(), Algorithm::Md5);
        assert_eq!(
            DigestChallenge::new("bad\nrealm", "abc", Algorithm::Md5),
            Err(ChallengeError::InvalidCharacter { field: "realm" })
        );
        assert_eq!(
            DigestChallenge::new("r", "abc", Algorithm::Md5).unwrap().with_opaque("\r"),
            Err(ChallengeError::InvalidCharacter { field: "opaque" })
        );
    }

    #[test]
    fn server_refusals() {
        let server = DigestChallenge::new("biloxi.com", "n1", Algorithm::Md5).unwrap().with_opaque("op").unwrap();
        let good = "Digest username=\"bob\", realm=\"biloxi.com\", nonce=\"n1\", uri=\"sip:biloxi.com\", \
                    response=\"00\", opaque=\"op\", qop=auth, nc=00000001, cnonce=\"c\"";
        let check = |value: &str| server.verify(&credentials(value), "REGISTER", Secret::Password("zanzibar"));
        assert_eq!(check(good), Err(VerifyError::WrongResponse));
        assert_eq!(check("Basic dXNlcjpwYXNz"), Err(VerifyError::NotDigest { scheme: "Basic".into() }));
        assert_eq!(
            check(&good.replace("realm=\"biloxi.com\"", "realm=\"atlanta.com\"")),
            Err(VerifyError::RealmMismatch { expected: "biloxi.com".into(), got: "atlanta.com".into() })
        );
        assert_eq!(check(&good.replace("nonce=\"n1\"", "nonce=\"n0\"")), Err(VerifyError::NonceMismatch));
        assert_eq!(check(&good.replace("opaque=\"op\"", "opaque=\"OP\"")), Err(VerifyError::OpaqueMismatch));
        assert_eq!(check(&good.replace(", opaque=\"op\"", "")), Err(VerifyError::OpaqueMismatch));
        assert_eq!(
            check(&format!("{good}, algorithm=SHA-256")),
            Err(VerifyError::AlgorithmMismatch { expected: Algorithm::Md5, got: Algorithm::Sha256 })
        );
        assert_eq!(
            check(&format!("{good}, algorithm=SHA-1")),
            Err(VerifyError::UnknownAlgorithm { algorithm: "SHA-1".into() })
        );
        assert_eq!(
            check(&good.replace("qop=auth", "qop=auth-int")),
            Err(VerifyError::UnsupportedQop { qop: "auth-int".into() })
        );
        assert_eq!(check(&good.replace(", qop=auth", "")), Err(VerifyError::QopRequired));
        assert_eq!(
            check(&good.replace("nc=00000001", "nc=1")),
            Err(VerifyError::MalformedNonceCount { nc: "1".into() })
        );
        assert_eq!(check(&good.replace(", nc=00000001", "")), Err(VerifyError::MissingParameter { name: "nc" }));
        assert_eq!(check(&good.replace(", cnonce=\"c\"", "")), Err(VerifyError::MissingParameter { name: "cnonce" }));
        assert_eq!(
            check(&good.replace("uri=\"sip:biloxi.com\", ", "")),
            Err(VerifyError::MissingParameter { name: "uri" })
        );
        assert_eq!(
            check(&good.replace("username=\"bob\"", "username=\"abc123\", userhash=true")),
            Err(VerifyError::UnsupportedUserhash)
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let client = DigestClient::new(DigestCredentials::new("bob", "zanzibar"));
        let shown = format!("{client:?} {:?}", client.credentials());
        assert!(!shown.contains("zanzibar"), "{shown}");
        assert!(shown.contains("bob"));
        let stored = ha1(Algorithm::Md5, "bob", "biloxi.com", "zanzibar");
        let shown = format!("{:?} {:?}", Secret::Password("zanzibar"), Secret::Ha1(&stored));
        assert!(!shown.contains("zanzibar") && !shown.contains(&stored), "{shown}");
    }
}
