//! TLS over stream connections (RFC 3261 §26.2, RFC 5246/8446) with
//! rustls, whose connection types own no IO: ciphertext from the peer is
//! fed in, plaintext comes out for the framer, and what we write comes
//! back out as ciphertext for the runtime to put on the wire.
//!
//! Certificate validity is checked against the wall-clock time the core is
//! given ([`TlsClock`]), never the machine's clock. The one thing the core
//! cannot make reproducible is TLS randomness (key shares, nonces): those
//! come from the ring provider's system RNG, as secret keys must, so a
//! simulated TLS run repeats its plaintext and events but not its
//! ciphertext.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::time_provider::TimeProvider;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};
use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Certificates and keys for TLS, as bytes.
///
/// The core reads no files and no system certificate store: the
/// application reads its PEM files (or gets roots from wherever it trusts
/// them) and hands the bytes in.
///
/// ```no_run
/// use sipline::transport::{TlsConfig, TlsConfigError};
/// // `chain`, `key` and `ca` are the PEM files' bytes, read by the application.
/// fn tls(chain: &[u8], key: &[u8], ca: &[u8]) -> Result<TlsConfig, TlsConfigError> {
///     TlsConfig::default().with_identity_pem(chain, key)?.with_roots_pem(ca)
/// }
/// ```
///
/// Mutual TLS, from bytes already in hand:
///
/// ```
/// # fn demo(chain_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<(), sipline::transport::TlsConfigError> {
/// use sipline::transport::TlsConfig;
/// let tls = TlsConfig::default()
///     .with_identity_pem(chain_pem, key_pem)?
///     .with_roots_pem(ca_pem)?
///     .requiring_client_certificates();
/// # let _ = tls; Ok(()) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct TlsConfig {
    /// Our certificate chain, leaf first (empty: we have none).
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key of the leaf.
    pub key: Option<Arc<PrivateKeyDer<'static>>>,
    /// The roots we trust for peers' certificates.
    pub roots: Vec<CertificateDer<'static>>,
    /// Mutual TLS: as a server, require a client certificate that chains
    /// to [`roots`](Self::roots).
    pub require_client_cert: bool,
}

/// Why a [`TlsConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The PEM holds no certificate.
    #[error("no certificate in the PEM data")]
    NoCertificate,
    /// The PEM holds no private key.
    #[error("no private key in the PEM data")]
    NoKey,
    /// The PEM or DER data could not be read.
    #[error("unreadable PEM or DER data: {0}")]
    Unreadable(String),
    /// rustls refused the certificate, key or roots.
    #[error("rustls refused the configuration: {0}")]
    Rejected(String),
}

impl TlsConfig {
    /// Our certificate chain (leaf first) and private key from PEM text
    /// (PKCS#8, PKCS#1 or SEC1 key). Fails with
    /// [`TlsConfigError::NoCertificate`] or [`TlsConfigError::NoKey`] when
    /// either is missing, [`TlsConfigError::Unreadable`] for broken PEM.
    pub fn with_identity_pem(mut self, chain: &[u8], key: &[u8]) -> Result<Self, TlsConfigError> {
        self.chain = certs_from_pem(chain)?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsConfigError::NoKey,
            e => TlsConfigError::Unreadable(e.to_string()),
        })?;
        self.key = Some(Arc::new(key));
        Ok(self)
    }

    /// Our certificate chain (DER, leaf first) and key (PKCS#8 DER).
    #[must_use]
    pub fn with_identity_der(mut self, chain: Vec<Vec<u8>>, pkcs8_key: Vec<u8>) -> Self {
        self.chain = chain.into_iter().map(CertificateDer::from).collect();
        self.key = Some(Arc::new(PrivateKeyDer::Pkcs8(pkcs8_key.into())));
        self
    }

    /// Adds every certificate of PEM text to the trusted roots. Fails with
    /// [`TlsConfigError::NoCertificate`] when there is none,
    /// [`TlsConfigError::Unreadable`] for broken PEM.
    pub fn with_roots_pem(mut self, roots: &[u8]) -> Result<Self, TlsConfigError> {
        self.roots.extend(certs_from_pem(roots)?);
        Ok(self)
    }

    /// Adds a trusted root in DER.
    #[must_use]
    pub fn with_root_der(mut self, root: Vec<u8>) -> Self {
        self.roots.push(CertificateDer::from(root));
        self
    }

    /// Mutual TLS: as a server, accept only clients with a trusted
    /// certificate.
    #[must_use]
    pub fn requiring_client_certificates(mut self) -> Self {
        self.require_client_cert = true;
        self
    }
}

fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Unreadable(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate);
    }
    Ok(certs)
}

/// Why a TLS connection failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// TLS was asked for but no local certificate is configured (a TLS
    /// server, or a client asked for one, needs one).
    #[error("no local certificate configured")]
    NoLocalCertificate,
    /// The peer's certificate does not chain to a trusted root, or does not
    /// name the peer, or none was presented where one is required.
    #[error("untrusted remote certificate: {0}")]
    Untrusted(String),
    /// The peer's certificate is expired (or not yet valid) at the time
    /// the core was given.
    #[error("remote certificate expired")]
    Expired,
    /// The handshake failed for another reason (rustls' words).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
}

impl TlsFailure {
    fn from_rustls(e: &rustls::Error) -> TlsFailure {
        use rustls::Error as E;
        match e {
            E::InvalidCertificate(
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. },
            ) => TlsFailure::Expired,
            E::InvalidCertificate(c) => TlsFailure::Untrusted(format!("{c:?}")),
            E::NoCertificatesPresented => TlsFailure::Untrusted("no certificate presented".into()),
            e => TlsFailure::Handshake(e.to_string()),
        }
    }
}

/// The wall-clock time rustls checks certificates against: the Unix time
/// the runtime last gave the core, advanced by the core's own `Instant`s.
#[derive(Debug, Default)]
pub(crate) struct TlsClock {
    /// Unix seconds at the core's latest `now`; 0 until set.
    unix_secs: AtomicU64,
}

impl TimeProvider for TlsClock {
    fn current_time(&self) -> Option<UnixTime> {
        match self.unix_secs.load(Ordering::Relaxed) {
            0 => None,
            s => Some(UnixTime::since_unix_epoch(Duration::from_secs(s))),
        }
    }
}

/// The TLS versions spoken, as client and server: 1.3 (RFC 8446) and 1.2
/// (RFC 5246), which many SIP phones still only speak (RFC 3261 §26.2.1
/// asks for TLS without naming a version). 1.0 and 1.1 are refused (RFC
/// 8996). The cipher suites are the ring provider's defaults: for 1.2 only
/// ECDHE key exchange with AES-GCM or ChaCha20-Poly1305.
const PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The rustls configurations built from a [`TlsConfig`], and the clock.
pub(crate) struct TlsContext {
    client: Arc<ClientConfig>,
    server: Option<Arc<ServerConfig>>,
    clock: Arc<TlsClock>,
    /// (Instant, Unix time) pair the clock is derived from.
    anchor: Option<(Instant, Duration)>,
}

impl TlsContext {
    pub(crate) fn new(config: &TlsConfig) -> Result<TlsContext, TlsConfigError> {
        let rejected = |e: rustls::Error| TlsConfigError::Rejected(e.to_string());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let clock = Arc::new(TlsClock::default());
        let mut roots = RootCertStore::empty();
        for root in &config.roots {
            roots.add(root.clone()).map_err(rejected)?;
        }
        let roots = Arc::new(roots);
        let builder = ClientConfig::builder_with_details(provider.clone(), clock.clone())
            .with_protocol_versions(PROTOCOL_VERSIONS)
            .map_err(rejected)?;
        // No roots: nothing is trusted, every server certificate is refused.
        let builder = builder.with_root_certificates(roots.clone());
        let client = match &config.key {
            Some(key) if !config.chain.is_empty() => {
                builder.with_client_auth_cert(config.chain.clone(), key.clone_key()).map_err(rejected)?
            }
            _ => builder.with_no_client_auth(),
        };
        let server = match &config.key {
            Some(key) if !config.chain.is_empty() => {
                let builder = ServerConfig::builder_with_details(provider.clone(), clock.clone())
                    .with_protocol_versions(PROTOCOL_VERSIONS)
                    .map_err(rejected)?;
                let builder = if config.require_client_cert {
                    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|e| TlsConfigError::Rejected(e.to_string()))?;
                    builder.with_client_cert_verifier(verifier)
                } else {
                    builder.with_no_client_auth()
                };
                Some(Arc::new(builder.with_single_cert(config.chain.clone(), key.clone_key()).map_err(rejected)?))
            }
            _ => None,
        };
        Ok(TlsContext { client: Arc::new(client), server, clock, anchor: None })
    }

    /// Anchors the wall clock: at `now` the Unix time is `unix`.
    pub(crate) fn set_wall_clock(&mut self, now: Instant, unix: Duration) {
        self.anchor = Some((now, unix));
        self.tick(now);
    }

    /// The (Instant, Unix time) anchor, if set.
    pub(crate) fn anchor(&self) -> Option<(Instant, Duration)> {
        self.anchor
    }

    /// Moves the wall clock to `now`.
    pub(crate) fn tick(&self, now: Instant) {
        if let Some((at, unix)) = self.anchor {
            let t = unix + now.saturating_duration_since(at);
            self.clock.unix_secs.store(t.as_secs().max(1), Ordering::Relaxed);
        }
    }

    /// A client session towards `server_name` (a DNS name or an IP).
    pub(crate) fn client(&self, server_name: &str) -> Result<TlsSession, TlsFailure> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| TlsFailure::Handshake(format!("invalid server name {server_name:?}")))?;
        let conn = rustls::ClientConnection::new(self.client.clone(), name)
            .map_err(|e| TlsFailure::Handshake(e.to_string()))?;
        Ok(TlsSession { conn: conn.into(), established: false })
    }

    /// A server session for an accepted connection.
    pub(crate) fn server(&self) -> Result<TlsSession, TlsFailure> {
        let config = self.server.clone().ok_or(TlsFailure::NoLocalCertificate)?;
        let conn = rustls::ServerConnection::new(config).map_err(|e| TlsFailure::Handshake(e.to_string()))?;
        Ok(TlsSession { conn: conn.into(), established: false })
    }
}

/// What one batch of ciphertext produced.
#[derive(Debug, Default)]
pub(crate) struct Decrypted {
    /// The handshake completed during this batch.
    pub(crate) established: bool,
    /// The peer sent close_notify.
    pub(crate) closed: bool,
    /// The session failed; any alert is already in the ciphertext to send.
    pub(crate) failure: Option<TlsFailure>,
}

/// A reader that has nothing yet (see [`TlsSession::shrink`]).
struct NothingYet;

impl std::io::Read for NothingYet {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

/// One TLS session on one connection.
pub(crate) struct TlsSession {
    conn: rustls::Connection,
    established: bool,
}

impl TlsSession {
    /// Feeds ciphertext; plaintext is appended to `plain`, ciphertext to
    /// send (handshake, alerts) to `wire`. §5 of RFC 8446 aside, the rule
    /// is rustls': `process_new_packets` after every `read_tls`.
    pub(crate) fn receive(&mut self, mut cipher: &[u8], plain: &mut Vec<u8>, wire: &mut Vec<u8>) -> Decrypted {
        let mut out = Decrypted::default();
        while !cipher.is_empty() {
            match self.conn.read_tls(&mut cipher) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    out.failure = Some(TlsFailure::Handshake(e.to_string()));
                    break;
                }
            }
            match self.conn.process_new_packets() {
                Ok(state) => {
                    let n = state.plaintext_bytes_to_read();
                    if n > 0 {
                        let start = plain.len();
                        plain.resize(start + n, 0);
                        match self.conn.reader().read_exact(&mut plain[start..]) {
                            Ok(()) => {}
                            Err(e) => {
                                plain.truncate(start);
                                out.failure = Some(TlsFailure::Handshake(e.to_string()));
                                break;
                            }
                        }
                    }
                    if state.peer_has_closed() {
                        out.closed = true;
                    }
                }
                Err(e) => {
                    out.failure = Some(TlsFailure::from_rustls(&e));
                    break;
                }
            }
        }
        if !self.established && !self.conn.is_handshaking() && out.failure.is_none() {
            self.established = true;
            out.established = true;
        }
        if out.failure.is_none() && !out.closed {
            self.shrink();
        }
        self.flush(wire);
        out
    }

    /// Gives back what a large record made rustls' receive buffer grow to.
    ///
    /// rustls keeps the buffer it deframes records in at its peak (up to a
    /// whole record, 16 KiB and more) until the next `read_tls`, which first
    /// shrinks it to one read's worth (4 KiB) when no record is pending,
    /// then reads. Reading from [`NothingYet`] runs that first step alone:
    /// the read would block, nothing is read, and no state changes. With a
    /// partial record pending the buffer keeps what that record needs.
    fn shrink(&mut self) {
        let _ = self.conn.read_tls(&mut NothingYet);
    }

    /// Encrypts `plain` for the wire.
    pub(crate) fn send(&mut self, mut plain: &[u8], wire: &mut Vec<u8>) {
        // rustls takes as much as its send buffer allows (64 KiB by
        // default); encrypt that out to `wire` and go on.
        while !plain.is_empty() {
            match self.conn.writer().write(plain) {
                Ok(n) if n > 0 => plain = &plain[n..],
                _ => {
                    if !self.conn.wants_write() {
                        break;
                    }
                }
            }
            self.flush(wire);
        }
        self.flush(wire);
    }

    /// Queues close_notify.
    pub(crate) fn close(&mut self, wire: &mut Vec<u8>) {
        self.conn.send_close_notify();
        self.flush(wire);
    }

    /// Whatever ciphertext rustls has for the wire.
    pub(crate) fn flush(&mut self, wire: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(wire) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
