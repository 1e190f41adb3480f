//! The server side put together: a registrar or proxy deciding whether a
//! request is authenticated (RFC 3261 §22.1–22.3). See [`DigestServer`].

use super::bans::{BanPolicy, BanTable, Banned, Bans};
use super::digest::{ha1, Algorithm, ChallengeError, DigestChallenge, Secret, VerifyError};
use super::nonce::{NonceError, Nonces};
use super::users::Users;
use crate::message::headers::Credentials;
use crate::message::{HeaderName, Message, StatusCode, Uri};
use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;

const UNAUTHORIZED: StatusCode = match StatusCode::new(401) {
    Some(c) => c,
    None => unreachable!(),
};
const PROXY_AUTHENTICATION_REQUIRED: StatusCode = match StatusCode::new(407) {
    Some(c) => c,
    None => unreachable!(),
};
const FORBIDDEN: StatusCode = match StatusCode::new(403) {
    Some(c) => c,
    None => unreachable!(),
};
const BAD_REQUEST: StatusCode = match StatusCode::new(400) {
    Some(c) => c,
    None => unreachable!(),
};

/// The algorithms offered when the user is not known yet, in the order
/// they are offered: SHA-256 first (RFC 8760 §2.4).
/// What is offered unless told otherwise: SHA-256, then MD5 (RFC 8760
/// §2.4: most preferred first).
pub const DEFAULT_ALGORITHMS: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

/// Which side of RFC 3261 §22 the server is on: it sets the status code
/// and the header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A registrar, or any UAS (§22.2): 401 with WWW-Authenticate,
    /// answered in Authorization.
    Registrar,
    /// A proxy (§22.3): 407 with Proxy-Authenticate, answered in
    /// Proxy-Authorization.
    Proxy,
}

impl Role {
    /// 401 Unauthorized or 407 Proxy Authentication Required.
    pub fn status(self) -> StatusCode {
        match self {
            Role::Registrar => UNAUTHORIZED,
            Role::Proxy => PROXY_AUTHENTICATION_REQUIRED,
        }
    }

    /// The header a challenge goes in: WWW-Authenticate or
    /// Proxy-Authenticate.
    pub fn challenge_header(self) -> HeaderName {
        match self {
            Role::Registrar => HeaderName::WwwAuthenticate,
            Role::Proxy => HeaderName::ProxyAuthenticate,
        }
    }

    /// The header the answer comes in: Authorization or
    /// Proxy-Authorization.
    pub fn credentials_header(self) -> HeaderName {
        match self {
            Role::Registrar => HeaderName::Authorization,
            Role::Proxy => HeaderName::ProxyAuthorization,
        }
    }
}

/// Why a request is challenged (again).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChallengeReason {
    /// No Digest credentials for this realm: none at all, only other
    /// schemes, other realms (a proxy passes those on, §22.3), or values
    /// that do not parse.
    NoCredentials,
    /// The nonce is not one this server issued (forged, garbled, from
    /// before a restart). Challenged without `stale`.
    UnknownNonce,
    /// The nonce has expired (or was dropped from the replay table):
    /// `stale=true` (RFC 7616 §3.3: "only if it receives a request for
    /// which the nonce is invalid"), without looking at the digest, so an
    /// old nonce buys no guess. Also when the nonce dropped out between
    /// the check and the recording of a right answer.
    StaleNonce,
    /// The digest was right but its nonce count was already used
    /// (RFC 7616 §3.4): a replay, or requests overtaking each other.
    /// `stale=true`, since the credentials themselves were good.
    Replayed,
    /// An earlier answer with this nonce failed, which used it up
    /// ([`NonceError::Spent`]): challenged without `stale`, without
    /// looking at the digest.
    SpentNonce,
    /// The username is not known in this realm (or has no secret for any
    /// algorithm offered). The answer was checked against a dummy secret
    /// and the challenge is the one a known user with a wrong password
    /// gets (RFC 3261 §22; RFC 8760 §4: nothing on the wire tells the
    /// two apart). For logs and tests only.
    UnknownUser,
    /// The answer uses an algorithm that is not offered (an unknown one,
    /// a "-sess" one) or for which the user has no secret (an HA1 for the
    /// other hash function only). The challenge then offers only what the
    /// user's secrets can check.
    AlgorithmNotOffered {
        /// The `algorithm` value as written (`MD5` when absent).
        algorithm: String,
    },
    /// The answer did not verify: a wrong password
    /// ([`VerifyError::WrongResponse`]), a parameter missing, no `qop`, …
    Invalid(VerifyError),
}

/// Why a request is refused with 403 Forbidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForbiddenReason {
    /// The user authenticated, but is not the one the request acts for
    /// (e.g. a REGISTER for another user's address of record).
    WrongUser,
    /// Too many failed answers for this username or from this source (see
    /// [`BanPolicy`]): refused unread until the ban ends.
    Banned(Banned),
}

/// What a [`DigestServer`] decided about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// The credentials for this realm verified: the request goes on, on
    /// behalf of `username`.
    Authenticated {
        /// The authenticated username.
        username: String,
    },
    /// Answer `code` (401 or 407) with `headers` (RFC 3261 §22.1–22.3).
    Challenge {
        /// 401 Unauthorized or 407 Proxy Authentication Required.
        code: StatusCode,
        /// The WWW-Authenticate or Proxy-Authenticate values to send, in
        /// order: SHA-256 before MD5 (RFC 8760 §2.4), with one fresh nonce.
        headers: Vec<(HeaderName, String)>,
        /// Why, for logs and tests.
        reason: ChallengeReason,
    },
    /// Answer 403 Forbidden (RFC 3261 §22.1: the server may refuse a user
    /// it will not serve, rather than challenge again).
    Forbidden {
        /// The username the credentials gave.
        username: String,
        /// Why.
        reason: ForbiddenReason,
    },
    /// Answer 400 Bad Request: the digest verified, but its `uri` does not
    /// name the Request-URI (RFC 7616 §3.4.6).
    BadRequest,
}

impl Decision {
    /// The status code to answer with; `None` for
    /// [`Decision::Authenticated`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Decision::Authenticated { .. } => None,
            Decision::Challenge { code, .. } => Some(*code),
            Decision::Forbidden { .. } => Some(FORBIDDEN),
            Decision::BadRequest => Some(BAD_REQUEST),
        }
    }
}

/// The digest authentication of a registrar or proxy (RFC 3261 §22.1–22.3,
/// RFC 7616, RFC 8760): checks a request's credentials against [`Users`],
/// with nonces from [`Nonces`], and says what to answer.
///
/// Per request, [`DigestServer::authenticate`]:
///
/// 1. takes the first Digest credentials for its realm (Authorization for
///    a registrar, Proxy-Authorization for a proxy; others are left for
///    other servers, §22.3); without any it challenges;
/// 2. refuses with [`Decision::Forbidden`] ([`ForbiddenReason::Banned`])
///    an answer for a username, or from a source, banned for failing too
///    often ([`Bans`], [`BanPolicy`]), before any digest is computed;
/// 3. checks the nonce (issued here, fresh, not spent by a failed answer,
///    see [`Nonces`]); any other is challenged, an expired one with
///    `stale=true` (RFC 7616 §3.3) once the algorithm is one offered to
///    the user; no digest is computed for any of them;
/// 4. looks the user up: an unknown one (or one without a secret for any
///    algorithm offered) is checked against a dummy secret, at the cost
///    of a known one's check, and always fails (see below);
/// 5. verifies the digest with `qop=auth` (required: every challenge
///    offers it, RFC 3261 §22.4) against the user's password or HA1; a
///    wrong one spends its nonce, counts a failure for the username and
///    the source, and is challenged again;
/// 6. compares the digest `uri` with the Request-URI: as written, or else
///    equal under RFC 3261 §19.1.4 (both parse and are equivalent); if
///    not, [`Decision::BadRequest`] (RFC 7616 §3.4.6). A proxy after one
///    that rewrote the Request-URI sees a mismatch;
/// 7. records the nonce count, refusing a replay (RFC 7616 §3.4);
/// 8. compares the username with the expected one, if given:
///    [`Decision::Forbidden`] if it differs.
///
/// **Unknown users look like known ones** (RFC 3261 §22; RFC 8760 §4;
/// issue 18, the class of Asterisk's AST-2011-011). A wrong answer gets
/// the same status and headers whoever it names: a fresh 401/407
/// challenge, never 403. A challenge rather than 403 because RFC 3261
/// §22.2–22.3 has a server re-challenge credentials it does not accept,
/// a phone whose user mistyped the password then asks again, and it is
/// what Kamailio and Asterisk (`alwaysauthreject`) answer; the guessing
/// it would allow is what the spent nonces and the bans stop. An unknown
/// name is given a synthetic profile: the algorithms and kind of secret
/// (password or HA1) that most users of the realm have, so that even a
/// re-challenge narrowed to a user's algorithms, and the work done,
/// match those of a typical real user.
///
/// Challenges offer SHA-256 then MD5 (RFC 8760 §2.4), both with
/// `qop="auth"` and one fresh nonce. Once the user is known, only the
/// algorithms its secrets can check are offered: a user stored as an MD5
/// HA1 who answers with SHA-256 (as clients prefer) is challenged with MD5
/// alone, so the client does not pick SHA-256 again.
///
/// Not for ACK or CANCEL, which cannot be challenged (RFC 3261 §22.1).
///
/// ```
/// use sipline::auth::{Decision, DigestClient, DigestCredentials, DigestServer, Nonces, Role, Users};
/// use sipline::message::Message;
/// use sipline::rng::Rng;
/// use std::time::Instant;
///
/// // `now` comes from the caller (the core reads no clock): this example is
/// // compiled; `core/tests/auth_server.rs` runs the same exchange.
/// fn example(now: Instant) {
/// let mut rng = Rng::new(1);
/// let users = Users::from_passwords([("bob", "zanzibar")]);
/// let mut server = DigestServer::new("biloxi.com", users, Nonces::new(now, &mut rng)).unwrap();
///
/// let register = |auth: &str| format!(
///     "REGISTER sip:biloxi.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7\r\n\
///      From: <sip:bob@biloxi.com>;tag=a73kszlfl\r\nTo: <sip:bob@biloxi.com>\r\n\
///      Call-ID: 1j9FpLxk3uxtm8tn@192.0.2.4\r\nCSeq: 1 REGISTER\r\n{auth}Content-Length: 0\r\n\r\n");
///
/// // No credentials: 401 with a SHA-256 and an MD5 challenge.
/// let first = register("");
/// let Decision::Challenge { code, headers, .. } =
///     server.authenticate(now, &Message::parse(first.as_bytes()).unwrap(), Role::Registrar, Some("bob"))
/// else { panic!() };
/// assert_eq!((code.as_u16(), headers.len()), (401, 2));
///
/// // The client answers the challenge; the server lets bob in.
/// let challenge = format!("SIP/2.0 401 Unauthorized\r\n{}: {}\r\n\r\n", headers[0].0, headers[0].1);
/// let mut client = DigestClient::new(DigestCredentials::new("bob", "zanzibar"));
/// let answers = client
///     .authorize_response(&Message::parse(challenge.as_bytes()).unwrap(), "REGISTER", "sip:biloxi.com", &mut rng)
///     .unwrap();
/// let second = register(&format!("{}: {}\r\n", answers[0].0, answers[0].1));
/// let decision = server.authenticate(now, &Message::parse(second.as_bytes()).unwrap(), Role::Registrar, Some("bob"));
/// assert_eq!(decision, Decision::Authenticated { username: "bob".into() });
/// }
/// ```
#[derive(Debug)]
pub struct DigestServer {
    realm: String,
    users: Users,
    nonces: Nonces,
    bans: Bans,
    /// The algorithms offered, in the order of the challenges.
    offered: Vec<Algorithm>,
    /// What an unknown user looks like; made again after a change of the
    /// users or the offer.
    synthetic: Option<Synthetic>,
    /// HA1 values no answer is accepted for: the secrets an unknown user
    /// is checked against (MD5, SHA-256).
    dummy_ha1: [String; 2],
    /// Failures and bans counted for operators (issue 22).
    metrics: crate::metrics::Recorder,
}

/// The profile an unknown user is given: the commonest among the realm's
/// users.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Synthetic {
    /// The algorithms it has a secret for, of those offered, in order.
    algorithms: Vec<Algorithm>,
    /// A password (hashed per request) rather than a stored HA1.
    password: bool,
}

/// The password an unknown user is checked against; never accepted
/// whatever the answer (see [`DigestServer::judge`]).
const DUMMY_PASSWORD: &str = "sipline: no such user";

impl DigestServer {
    /// A server for `realm` (RFC 3261 §22.1: e.g. the registrar's domain),
    /// knowing `users`, issuing `nonces`. Fails if the realm cannot go in
    /// a quoted string (a control character).
    pub fn new(realm: impl Into<String>, users: Users, nonces: Nonces) -> Result<DigestServer, ChallengeError> {
        let realm = realm.into();
        DigestChallenge::new(realm.as_str(), "", Algorithm::Md5)?;
        let dummy_ha1 = [Algorithm::Md5, Algorithm::Sha256].map(|a| ha1(a, "", &realm, DUMMY_PASSWORD));
        Ok(DigestServer {
            realm,
            users,
            nonces,
            bans: Bans::new(BanPolicy::default()),
            offered: DEFAULT_ALGORITHMS.to_vec(),
            synthetic: None,
            dummy_ha1,
            metrics: crate::metrics::Recorder::default(),
        })
    }

    /// Counts failed answers and bans into `metrics` (issue 22).
    pub(crate) fn set_metrics(&mut self, metrics: crate::metrics::Recorder) {
        self.metrics = metrics;
    }

    /// When failed answers lead to a ban (default [`BanPolicy::default`]:
    /// 10 failures per 60 s ban for 5 min). Starts an empty table.
    #[must_use]
    pub fn with_bans(mut self, policy: BanPolicy) -> DigestServer {
        self.bans = Bans::new(policy);
        self
    }

    /// [`DigestServer::with_bans`], counting into `table`, shared with the
    /// other servers given it (the workers of one `serve`, issue 19): a
    /// guesser spread over the workers is banned at all of them at once.
    #[must_use]
    pub fn with_ban_table(mut self, policy: BanPolicy, table: &BanTable) -> DigestServer {
        self.bans = Bans::with_table(policy, table);
        self
    }

    /// The failed answers and bans.
    pub fn bans(&self) -> &Bans {
        &self.bans
    }

    /// The algorithms to offer, one challenge each, in this order (RFC
    /// 8760 §2.4: most preferred first); an empty list keeps the default,
    /// [`DEFAULT_ALGORITHMS`]. Credentials in an algorithm not offered are
    /// challenged again. Some clients need another order or fewer: SIPp
    /// 3.6 answers the first challenge whatever its algorithm and knows
    /// only MD5 (`[Md5, Sha256]`); libre-based phones (baresip 1.x) give
    /// up on any challenge that is not MD5 (`[Md5]`).
    #[must_use]
    pub fn offer(mut self, algorithms: &[Algorithm]) -> DigestServer {
        let mut offered: Vec<Algorithm> = Vec::new();
        for &a in algorithms {
            if !offered.contains(&a) {
                offered.push(a);
            }
        }
        if !offered.is_empty() {
            self.offered = offered;
        }
        self.synthetic = None;
        self
    }

    /// MD5 before SHA-256 (`yes`), or the default order: a shorthand for
    /// [`DigestServer::offer`].
    #[must_use]
    pub fn md5_first(self, yes: bool) -> DigestServer {
        if yes {
            self.offer(&[Algorithm::Md5, Algorithm::Sha256])
        } else {
            self.offer(&DEFAULT_ALGORITHMS)
        }
    }

    /// The algorithms offered, in order.
    pub fn offered(&self) -> &[Algorithm] {
        &self.offered
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The users.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// The users, to change them (e.g. after re-reading a users file);
    /// nonces already issued stay valid.
    pub fn users_mut(&mut self) -> &mut Users {
        self.synthetic = None;
        &mut self.users
    }

    /// The nonces.
    pub fn nonces(&self) -> &Nonces {
        &self.nonces
    }

    /// [`DigestServer::authenticate_from`] for a request whose source is
    /// not known: failures are counted per username only.
    pub fn authenticate(
        &mut self,
        now: Instant,
        request: &Message<'_>,
        role: Role,
        expected_user: Option<&str>,
    ) -> Decision {
        self.authenticate_from(now, request, role, expected_user, None)
    }

    /// Decides about `request` from `source` (the sender's address, for
    /// the per-source failure count; see [`Bans`]), as a registrar or
    /// proxy (`role`) at time `now` (see [`DigestServer`] for the steps).
    /// `expected_user` is the username the request must be authenticated
    /// as, if any (for a REGISTER, the user part of the To URI, as the
    /// caller reads it); another verified user is [`Decision::Forbidden`].
    ///
    /// Never fails: malformed credentials are challenged. May issue a
    /// nonce (for a challenge), records the nonce count of an accepted
    /// answer, spends the nonce of a failed one and counts it.
    pub fn authenticate_from(
        &mut self,
        now: Instant,
        request: &Message<'_>,
        role: Role,
        expected_user: Option<&str>,
        source: Option<IpAddr>,
    ) -> Decision {
        let Some(line) = request.request_line() else {
            return self.challenge_all(now, role, ChallengeReason::NoCredentials);
        };
        let values = match role {
            Role::Registrar => request.authorization(),
            Role::Proxy => request.proxy_authorization(),
        };
        let mine = values
            .filter_map(Result::ok)
            .find(|c| c.is_digest() && c.realm().is_some_and(|realm| realm == self.realm.as_str()));
        let Some(credentials) = mine else {
            return self.challenge_all(now, role, ChallengeReason::NoCredentials);
        };
        let decision = self.judge(now, &credentials, line.method.as_str(), line.uri, role, expected_user, source);
        match &decision {
            Decision::Authenticated { username } => {
                tracing::debug!(realm = %self.realm, %username, "digest credentials accepted");
            }
            Decision::Challenge { reason, .. } => {
                tracing::debug!(realm = %self.realm, ?reason, "digest credentials challenged");
            }
            Decision::Forbidden { username, reason } => {
                tracing::debug!(realm = %self.realm, username = ?username, ?reason, "digest credentials forbidden");
            }
            Decision::BadRequest => tracing::debug!(realm = %self.realm, "digest uri is not the Request-URI"),
        }
        decision
    }

    /// Drops finished entries from the failure table
    /// ([`Bans::handle_timeout`]; the nonces' replay table has a fixed size
    /// and needs no timer). Idempotent, safe to call early.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.bans.handle_timeout(now);
    }

    /// When [`DigestServer::handle_timeout`] has something to drop; `None`
    /// while nothing is tracked.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bans.poll_timeout()
    }

    /// Steps 2–8 for the credentials of this realm.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &mut self,
        now: Instant,
        credentials: &Credentials<'_>,
        method: &str,
        request_uri: &str,
        role: Role,
        expected_user: Option<&str>,
        source: Option<IpAddr>,
    ) -> Decision {
        let missing = |name| ChallengeReason::Invalid(VerifyError::MissingParameter { name });
        let Some(username) = credentials.username() else {
            return self.challenge_all(now, role, missing("username"));
        };
        // Banned: refused unread, so a guesser gets nothing more to check
        // and costs almost nothing.
        if let Some(banned) = self.bans.refuse(now, &username, source) {
            self.metrics.banned_refusal();
            return Decision::Forbidden { username: username.into_owned(), reason: ForbiddenReason::Banned(banned) };
        }
        let Some(nonce) = credentials.nonce() else {
            return self.challenge_all(now, role, missing("nonce"));
        };
        let stale = match self.nonces.check(now, &nonce) {
            Ok(()) => false,
            // Answered below, once the algorithm is known to be offered.
            Err(NonceError::Stale) => true,
            Err(NonceError::Spent) => return self.challenge_all(now, role, ChallengeReason::SpentNonce),
            Err(_) => return self.challenge_all(now, role, ChallengeReason::UnknownNonce),
        };
        // What the user has a secret for, of what we offer, in our order;
        // an unknown user gets the synthetic profile.
        let has = self.users.algorithms(&username, &self.realm);
        let offered: Vec<Algorithm> = self.offered.iter().copied().filter(|a| has.contains(a)).collect();
        let (known, offered) =
            if offered.is_empty() { (false, self.synthetic().algorithms.clone()) } else { (true, offered) };
        let name = credentials.algorithm().unwrap_or(Cow::Borrowed("MD5"));
        let algorithm = match Algorithm::from_name(&name) {
            Some(a) if offered.contains(&a) => a,
            _ => {
                let reason = ChallengeReason::AlgorithmNotOffered { algorithm: name.into_owned() };
                return self.challenge(now, role, &offered, false, reason);
            }
        };
        if stale {
            // RFC 7616 §3.3: stale=true for an invalid nonce; the digest is
            // not computed, so a spent nonce that has since expired (and
            // left the replay table) buys no guess either.
            return self.challenge(now, role, &offered, true, ChallengeReason::StaleNonce);
        }
        let verified = match DigestChallenge::new(self.realm.as_str(), nonce.as_ref(), algorithm) {
            Ok(challenge) if known => match self.users.secret(&username, &self.realm, algorithm) {
                Some(secret) => challenge.verify(credentials, method, secret),
                // Cannot happen: `offered` lists only what has a secret.
                None => Err(VerifyError::WrongResponse),
            },
            // The same work as for a known user, against a secret no
            // answer is accepted for: the time taken does not tell.
            Ok(challenge) => {
                let secret = if self.synthetic().password {
                    Secret::Password(DUMMY_PASSWORD)
                } else {
                    let sha = matches!(algorithm, Algorithm::Sha256 | Algorithm::Sha256Sess);
                    Secret::Ha1(&self.dummy_ha1[usize::from(sha)])
                };
                match challenge.verify(credentials, method, secret) {
                    Ok(_) | Err(VerifyError::WrongResponse) => Err(VerifyError::WrongResponse),
                    Err(other) => Err(other),
                }
            }
            // Cannot happen: the realm was checked at construction, the
            // nonce is hex.
            Err(_) => Err(VerifyError::WrongResponse),
        };
        let verified = match verified {
            Ok(verified) => verified,
            Err(VerifyError::WrongResponse) => {
                // A guess that failed: its nonce is used up, and it counts
                // against the username and the source.
                let _ = self.nonces.spend(now, &nonce);
                let bans = self.bans.fail(now, &username, source);
                self.metrics.auth_failure(&bans);
                let reason = if known {
                    ChallengeReason::Invalid(VerifyError::WrongResponse)
                } else {
                    ChallengeReason::UnknownUser
                };
                return self.challenge(now, role, &offered, false, reason);
            }
            Err(error) => return self.challenge(now, role, &offered, false, ChallengeReason::Invalid(error)),
        };
        if !names_request_uri(&verified.uri, request_uri) {
            return Decision::BadRequest;
        }
        match self.nonces.record(now, &nonce, verified.nc) {
            Ok(()) => {}
            Err(NonceError::Replayed) => return self.challenge(now, role, &offered, true, ChallengeReason::Replayed),
            Err(NonceError::Stale) => {
                return self.challenge(now, role, &offered, true, ChallengeReason::StaleNonce);
            }
            Err(NonceError::Spent) => return self.challenge_all(now, role, ChallengeReason::SpentNonce),
            Err(NonceError::Unknown) => {
                return self.challenge_all(now, role, ChallengeReason::UnknownNonce);
            }
        }
        if expected_user.is_some_and(|expected| expected != verified.username) {
            return Decision::Forbidden { username: verified.username, reason: ForbiddenReason::WrongUser };
        }
        Decision::Authenticated { username: verified.username }
    }

    /// What an unknown user looks like: the commonest profile among the
    /// realm's users (ties to the earlier in name order), or every
    /// algorithm offered and a password when no user has a secret here.
    fn synthetic(&mut self) -> &Synthetic {
        if self.synthetic.is_none() {
            // (profile, how many users have it), in order of first seen.
            let mut counts: Vec<((Vec<Algorithm>, bool), usize)> = Vec::new();
            for (algorithms, password) in self.users.profiles(&self.realm) {
                let algorithms: Vec<Algorithm> =
                    self.offered.iter().copied().filter(|a| algorithms.contains(a)).collect();
                if algorithms.is_empty() {
                    continue;
                }
                let profile = (algorithms, password);
                match counts.iter_mut().find(|(p, _)| *p == profile) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((profile, 1)),
                }
            }
            // The first of the commonest (max_by_key would take the last).
            let most = counts.iter().map(|(_, n)| *n).max().unwrap_or(0);
            let commonest = counts.into_iter().find(|(_, n)| *n == most).map(|(profile, _)| profile);
            let (algorithms, password) = commonest.unwrap_or_else(|| (self.offered.clone(), true));
            self.synthetic = Some(Synthetic { algorithms, password });
        }
        self.synthetic.get_or_insert_with(|| Synthetic { algorithms: Vec::new(), password: true })
    }

    /// A challenge per algorithm offered, sharing one fresh nonce.
    fn challenge_all(&mut self, now: Instant, role: Role, reason: ChallengeReason) -> Decision {
        let offered = self.offered.clone();
        self.challenge(now, role, &offered, false, reason)
    }

    /// A challenge per algorithm in `algorithms`, sharing one fresh nonce.
    fn challenge(
        &mut self,
        now: Instant,
        role: Role,
        algorithms: &[Algorithm],
        stale: bool,
        reason: ChallengeReason,
    ) -> Decision {
        let nonce = self.nonces.issue(now);
        let headers = algorithms
            .iter()
            .filter_map(|&algorithm| DigestChallenge::new(self.realm.as_str(), nonce.as_str(), algorithm).ok())
            .map(|challenge| (role.challenge_header(), challenge.with_stale(stale).header_value()))
            .collect();
        Decision::Challenge { code: role.status(), headers, reason }
    }
}

/// Whether the digest `uri` names the Request-URI (RFC 7616 §3.4.6): the
/// same text, or equivalent URIs (RFC 3261 §19.1.4).
///
/// One leniency, for interop: a SIP `uri` with the same scheme and host
/// also names it, whatever its user part and port (SIPp 3.6 writes the
/// address it sends to, `sip:host:port`, whatever the Request-URI says).
/// The response hash covers the `uri`, so this admits no request to
/// another host.
fn names_request_uri(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri == request_uri {
        return true;
    }
    match (Uri::parse(digest_uri), Uri::parse(request_uri)) {
        (Ok(a), Ok(b)) if a.equivalent(&b) => true,
        (Ok(a), Ok(b)) => match (a.as_sip(), b.as_sip()) {
            (Some(a), Some(b)) => a.is_secure() == b.is_secure() && a.host_str().eq_ignore_ascii_case(b.host_str()),
            _ => false,
        },
        _ => false,
    }
}
