//! The user store of a digest server: who may authenticate, and with
//! what secret. See [`Users`].

use super::digest::{Algorithm, Secret};
use std::collections::BTreeMap;
use std::fmt;

/// Why a users file could not be read. Every variant names the line
/// (counted from 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// Neither `user:password` nor `user:realm:HA1`.
    #[error("line {line}: expected user:password or user:realm:HA1")]
    Malformed {
        /// The line number.
        line: usize,
    },
    /// A field is empty.
    #[error("line {line}: empty {field}")]
    EmptyField {
        /// The line number.
        line: usize,
        /// `user`, `password` or `realm`.
        field: &'static str,
    },
    /// The HA1 is neither 32 hex digits (MD5) nor 64 (SHA-256).
    #[error("line {line}: HA1 must be 32 (MD5) or 64 (SHA-256) hex digits")]
    BadHa1 {
        /// The line number.
        line: usize,
    },
    /// A second password for a user, or a second HA1 for the same user,
    /// realm and algorithm.
    #[error("line {line}: duplicate entry for user {user}")]
    Duplicate {
        /// The line number.
        line: usize,
        /// The user named twice.
        user: String,
    },
}

impl UsersError {
    /// The line the error is on (counted from 1).
    pub fn line(&self) -> usize {
        match self {
            UsersError::Malformed { line }
            | UsersError::EmptyField { line, .. }
            | UsersError::BadHa1 { line }
            | UsersError::Duplicate { line, .. } => *line,
        }
    }
}

/// A stored HA1 (RFC 7616 §3.4.2): the hash of `user:realm:password`.
#[derive(Clone)]
struct StoredHa1 {
    realm: String,
    /// [`Algorithm::Md5`] or [`Algorithm::Sha256`]: the hash function.
    algorithm: Algorithm,
    /// Lower-case hex.
    value: String,
}

/// What is known of one user.
#[derive(Clone, Default)]
struct User {
    password: Option<String>,
    ha1: Vec<StoredHa1>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        if self.password.is_some() {
            list.entry(&format_args!("password"));
        }
        for h in &self.ha1 {
            list.entry(&format_args!("{} HA1 for {:?}", h.algorithm, h.realm));
        }
        list.finish()
    }
}

/// The users a digest server knows (RFC 3261 §22.1, §22.4), by username
/// (compared exactly).
///
/// A user has a password, which answers every algorithm in every realm
/// (the server asks only for its own), and/or stored HA1 values
/// (`H(user:realm:password)`, RFC 7616 §3.4.2; see [`ha1`](super::ha1)),
/// each answering only its own realm and hash function: 32 hex digits are
/// MD5 (RFC 2617, for MD5 and MD5-sess), 64 are SHA-256 (RFC 7616, for
/// SHA-256 and SHA-256-sess).
///
/// `Debug` shows usernames and the kinds of secret, never a password or
/// an HA1; nothing here logs them.
///
/// ```
/// use sipline::auth::{Algorithm, Users};
///
/// let users = Users::parse(
///     "# registrar users\n\
///      alice:wonderland\n\
///      bob:biloxi.com:12af60467a33e8518da5c68bbff12b11\n",
/// ).unwrap();
/// assert_eq!(users.algorithms("alice", "biloxi.com"), [Algorithm::Sha256, Algorithm::Md5]);
/// assert_eq!(users.algorithms("bob", "biloxi.com"), [Algorithm::Md5]);
/// assert!(users.algorithms("bob", "atlanta.com").is_empty());
/// ```
#[derive(Clone, Default)]
pub struct Users {
    /// Shared by clones (the workers of one server, issue 19: one table,
    /// however many cores), copied on the first change after a clone.
    users: std::sync::Arc<BTreeMap<String, User>>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.users.iter()).finish()
    }
}

/// The algorithms a digest server offers, in the order it offers them
/// (SHA-256 first, RFC 8760 §2.4).
const OFFERED: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

impl Users {
    /// No users.
    pub fn new() -> Users {
        Users::default()
    }

    /// Reads a users file: one entry per line, `user:password` or
    /// `user:realm:HA1`; blank lines and lines starting with `#` are
    /// skipped; spaces around a line are trimmed, inside it they count.
    ///
    /// Fields are split at colons, so a password in the file cannot hold
    /// one (use [`Users::from_passwords`]), and a third field must be an
    /// HA1: a typo in one is an error, not a password. A user may have a
    /// password line and HA1 lines (one per realm and hash function).
    pub fn parse(text: &str) -> Result<Users, UsersError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut users = Users::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let entry = raw.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let mut fields = entry.splitn(3, ':');
            let (Some(user), Some(second)) = (fields.next(), fields.next()) else {
                return Err(UsersError::Malformed { line });
            };
            if user.is_empty() {
                return Err(UsersError::EmptyField { line, field: "user" });
            }
            let known = std::sync::Arc::make_mut(&mut users.users).entry(user.to_owned()).or_default();
            match fields.next() {
                None => {
                    if second.is_empty() {
                        return Err(UsersError::EmptyField { line, field: "password" });
                    }
                    if known.password.is_some() {
                        return Err(UsersError::Duplicate { line, user: user.to_owned() });
                    }
                    known.password = Some(second.to_owned());
                }
                Some(value) => {
                    if second.is_empty() {
                        return Err(UsersError::EmptyField { line, field: "realm" });
                    }
                    let algorithm = match value.len() {
                        32 => Algorithm::Md5,
                        64 => Algorithm::Sha256,
                        _ => return Err(UsersError::BadHa1 { line }),
                    };
                    if !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(UsersError::BadHa1 { line });
                    }
                    if known.ha1.iter().any(|h| h.realm == second && h.algorithm == algorithm) {
                        return Err(UsersError::Duplicate { line, user: user.to_owned() });
                    }
                    known.ha1.push(StoredHa1 {
                        realm: second.to_owned(),
                        algorithm,
                        value: value.to_ascii_lowercase(),
                    });
                }
            }
        }
        Ok(users)
    }

    /// Users from `(username, password)` pairs; a later pair for the same
    /// user replaces the earlier password.
    pub fn from_passwords<I, U, P>(pairs: I) -> Users
    where
        I: IntoIterator<Item = (U, P)>,
        U: Into<String>,
        P: Into<String>,
    {
        let mut users = Users::new();
        for (user, password) in pairs {
            users.insert_password(user, password);
        }
        users
    }

    /// Sets a user's password (replacing any earlier one).
    pub fn insert_password(&mut self, user: impl Into<String>, password: impl Into<String>) {
        std::sync::Arc::make_mut(&mut self.users).entry(user.into()).or_default().password = Some(password.into());
    }

    /// Whether `user` is known (in any realm).
    pub fn contains(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// How many users are known.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user is known.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The secret that checks `user`'s answer with `algorithm` in `realm`:
    /// a stored HA1 for that realm and hash function if there is one, else
    /// the password; `None` if neither (unknown user, or only HA1 values
    /// for other realms or the other hash function).
    pub fn secret(&self, user: &str, realm: &str, algorithm: Algorithm) -> Option<Secret<'_>> {
        let known = self.users.get(user)?;
        let base = match algorithm {
            Algorithm::Md5 | Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => Algorithm::Sha256,
        };
        if let Some(stored) = known.ha1.iter().find(|h| h.algorithm == base && h.realm == realm) {
            return Some(Secret::Ha1(&stored.value));
        }
        known.password.as_deref().map(Secret::Password)
    }

    /// Per user, in name order: the algorithms that can check its answers
    /// in `realm` (as [`Users::algorithms`]) and whether it has a password.
    /// What a server makes an unknown user look like from.
    pub(super) fn profiles<'a>(&'a self, realm: &'a str) -> impl Iterator<Item = (Vec<Algorithm>, bool)> + 'a {
        self.users.iter().map(move |(name, user)| (self.algorithms(name, realm), user.password.is_some()))
    }

    /// The algorithms a server offers (SHA-256, MD5; RFC 8760 §2.4) that
    /// can check `user`'s answers in `realm`, strongest first. Empty for
    /// an unknown user or one with no secret for `realm`.
    pub fn algorithms(&self, user: &str, realm: &str) -> Vec<Algorithm> {
        OFFERED.into_iter().filter(|&a| self.secret(user, realm, a).is_some()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::ha1;
    use super::*;

    const BOB_MD5: &str = "12af60467a33e8518da5c68bbff12b11";
    const BOB_SHA256: &str = "e65db393e748c5228939a6b4b2879e9ea5625cd79fd5267868cb568d69f6b97e";

    #[test]
    fn parses_both_kinds_of_entry() {
        let text = format!(
            "\u{feff}# comment\n\n   \nalice:wonderland\r\n  bob:biloxi.com:{}  \n\
             bob:biloxi.com:{BOB_SHA256}\ncarol:pass#word with spaces\n   # indented comment\n",
            BOB_MD5.to_ascii_uppercase()
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.len(), 3);
        assert!(users.contains("alice") && users.contains("bob") && !users.contains("Bob"));
        assert!(matches!(users.secret("alice", "any.realm", Algorithm::Sha256), Some(Secret::Password("wonderland"))));
        assert!(matches!(users.secret("carol", "x", Algorithm::Md5), Some(Secret::Password("pass#word with spaces"))));
        // The HA1 is kept in lower case, per hash function and realm.
        assert!(matches!(users.secret("bob", "biloxi.com", Algorithm::Md5), Some(Secret::Ha1(h)) if h == BOB_MD5));
        assert!(matches!(users.secret("bob", "biloxi.com", Algorithm::Md5Sess), Some(Secret::Ha1(h)) if h == BOB_MD5));
        assert!(
            matches!(users.secret("bob", "biloxi.com", Algorithm::Sha256), Some(Secret::Ha1(h)) if h == BOB_SHA256)
        );
        assert!(users.secret("bob", "atlanta.com", Algorithm::Md5).is_none());
        assert!(users.secret("dave", "biloxi.com", Algorithm::Md5).is_none());
        assert_eq!(users.algorithms("bob", "biloxi.com"), [Algorithm::Sha256, Algorithm::Md5]);
        assert_eq!(users.algorithms("alice", "biloxi.com"), [Algorithm::Sha256, Algorithm::Md5]);
        assert!(users.algorithms("bob", "atlanta.com").is_empty());
        assert!(users.algorithms("dave", "biloxi.com").is_empty());
        assert_eq!(ha1(Algorithm::Md5, "bob", "biloxi.com", "zanzibar"), BOB_MD5);
        assert!(Users::parse("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let cases: [(&str, UsersError); 9] = [
            ("alice:x\nnocolon\n", UsersError::Malformed { line: 2 }),
            ("# c\n\n:password\n", UsersError::EmptyField { line: 3, field: "user" }),
            ("alice:\n", UsersError::EmptyField { line: 1, field: "password" }),
            ("a:b\nc:d\nbob::0123456789abcdef0123456789abcdef\n", UsersError::EmptyField { line: 3, field: "realm" }),
            ("bob:biloxi.com:0123\n", UsersError::BadHa1 { line: 1 }),
            ("x:y\nbob:biloxi.com:0123456789abcdef0123456789abcdeg\n", UsersError::BadHa1 { line: 2 }),
            ("bob:biloxi.com:pass:word\n", UsersError::BadHa1 { line: 1 }),
            ("alice:a\nalice:b\n", UsersError::Duplicate { line: 2, user: "alice".into() }),
            (
                "bob:r:0123456789abcdef0123456789abcdef\nbob:r:0123456789ABCDEF0123456789abcdef\n",
                UsersError::Duplicate { line: 2, user: "bob".into() },
            ),
        ];
        for (text, expected) in cases {
            let error = Users::parse(text).unwrap_err();
            assert_eq!(error, expected, "{text:?}");
            assert_eq!(error.line(), expected.line());
            assert!(error.to_string().starts_with(&format!("line {}: ", expected.line())), "{error}");
        }
    }

    #[test]
    fn from_passwords_answers_every_algorithm() {
        let users = Users::from_passwords([("bob", "old"), ("alice", "a"), ("bob", "zanzibar")]);
        assert_eq!(users.len(), 2);
        assert!(matches!(users.secret("bob", "biloxi.com", Algorithm::Sha256Sess), Some(Secret::Password("zanzibar"))));
        let mut more = users.clone();
        more.insert_password("carol", "c");
        assert_eq!(more.algorithms("carol", "r"), [Algorithm::Sha256, Algorithm::Md5]);
    }

    #[test]
    fn debug_shows_no_secret() {
        let text = format!("bob:zanzibar\nbob:biloxi.com:{BOB_MD5}\nalice:biloxi.com:{BOB_SHA256}\n");
        let users = Users::parse(&text).unwrap();
        let shown = format!("{users:?}");
        assert!(!shown.contains("zanzibar") && !shown.contains(BOB_MD5) && !shown.contains(BOB_SHA256), "{shown}");
        assert!(!shown.contains(&BOB_MD5[..8]) && !shown.contains(&BOB_SHA256[..8]), "{shown}");
        assert!(shown.contains("bob") && shown.contains("MD5 HA1") && shown.contains("password"), "{shown}");
    }
}
