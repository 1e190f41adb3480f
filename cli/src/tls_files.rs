//! TLS material for the network commands, read where IO belongs (the core
//! takes bytes only): PEM files for `--cert`, `--key` and `--ca`, and the
//! system's trusted roots through `rustls-native-certs` (on Linux the
//! OpenSSL locations such as `/etc/ssl/certs`, honouring `SSL_CERT_FILE`
//! and `SSL_CERT_DIR`); and, for `serve --tls-self-signed`, a certificate
//! made on the spot with `rcgen`.

use sipline::transport::{TlsConfig, TlsConfigError};
use std::path::{Path, PathBuf};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsFileError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A file's contents are unusable.
    #[error("{path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: TlsConfigError,
    },
    /// The system's store yielded no certificate.
    #[error("no trusted roots found in the system's store: {0}")]
    NoSystemRoots(String),
    /// A certificate could not be made (`--tls-self-signed`).
    #[error("cannot make a certificate for {names:?}: {reason}")]
    SelfSigned {
        /// The names asked for.
        names: Vec<String>,
        /// What failed.
        reason: String,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read { path: path.to_owned(), source })
}

fn in_file(path: &Path) -> impl FnOnce(TlsConfigError) -> TlsFileError + '_ {
    move |source| TlsFileError::Config { path: path.to_owned(), source }
}

/// `tls` with our certificate chain (leaf first) and key from PEM files.
pub(crate) fn with_identity_files(tls: TlsConfig, chain: &Path, key: &Path) -> Result<TlsConfig, TlsFileError> {
    let (chain_pem, key_pem) = (read(chain)?, read(key)?);
    tls.with_identity_pem(&chain_pem, &key_pem).map_err(|e| match e {
        TlsConfigError::NoKey => in_file(key)(e),
        e => in_file(chain)(e),
    })
}

/// `tls` trusting, in addition, the certificates of a PEM file.
pub(crate) fn with_roots_file(tls: TlsConfig, roots: &Path) -> Result<TlsConfig, TlsFileError> {
    tls.with_roots_pem(&read(roots)?).map_err(in_file(roots))
}

/// `tls` trusting, in addition, the system's roots. Unreadable entries of
/// the store are skipped; an error only when no root at all was found.
pub(crate) fn with_system_roots(mut tls: TlsConfig) -> Result<TlsConfig, TlsFileError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = found.errors.first().map_or_else(|| "the store is empty".to_owned(), ToString::to_string);
        return Err(TlsFileError::NoSystemRoots(why));
    }
    for e in &found.errors {
        tracing::debug!(error = %e, "skipped an entry of the system's root store");
    }
    tls.roots.extend(found.certs);
    Ok(tls)
}

/// How long before "now" a made certificate starts: clocks of peers that
/// run a little behind still accept it.
const SELF_SIGNED_BACKDATE: std::time::Duration = std::time::Duration::from_secs(3600);

/// How long a made certificate lasts (a year).
const SELF_SIGNED_LIFETIME: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

/// An identity made on the spot (`serve --tls-self-signed`): a throwaway
/// certificate authority of its own and a certificate signed by it whose
/// subject's common name is `domain` and whose subject alternative names
/// are `names` (DNS names or IP addresses: RFC 5922 §7.1 matches SIP
/// domains against those), ECDSA P-256 (what OpenSSL-based peers read
/// too), valid from an hour before `now` for a year. Returns the TLS
/// config presenting it and the authority's certificate (PEM), which
/// clients trust (`--ca`); the authority's key is dropped at once, so it
/// can sign nothing else.
pub(crate) fn self_signed(
    domain: &str,
    names: &[String],
    now: std::time::SystemTime,
) -> Result<(TlsConfig, String), TlsFileError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};
    let fail = |reason: String| TlsFileError::SelfSigned { names: names.to_vec(), reason };
    let at = |t: std::time::SystemTime| {
        let secs = t.duration_since(std::time::UNIX_EPOCH).map_err(|e| fail(e.to_string()))?.as_secs();
        let secs = i64::try_from(secs).map_err(|e| fail(e.to_string()))?;
        time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| fail(e.to_string()))
    };
    let not_before = at(now.checked_sub(SELF_SIGNED_BACKDATE).unwrap_or(now))?;
    let not_after = at(now + SELF_SIGNED_LIFETIME)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(e.to_string()))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, format!("sipline serve CA for {domain} (self-signed)"));
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| fail(e.to_string()))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| fail(e.to_string()))?;
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(names.to_vec()).map_err(|e| fail(e.to_string()))?;
    // rcgen's default subject is "rcgen self signed cert": name the domain.
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, domain);
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| fail(e.to_string()))?;
    let cert = leaf.signed_by(&key, &issuer).map_err(|e| fail(e.to_string()))?;
    let chain = format!("{}{}", cert.pem(), ca_cert.pem());
    let tls = TlsConfig::default()
        .with_identity_pem(chain.as_bytes(), key.serialize_pem().as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    Ok((tls, ca_cert.pem()))
}

/// Writes `text` to `path`.
pub(crate) fn write(path: &Path, text: &str) -> Result<(), TlsFileError> {
    std::fs::write(path, text).map_err(|source| TlsFileError::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sipline_tests::certs::Ca;

    /// A directory of its own, removed at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("sipline-cli-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn self_signed_presents_a_leaf_for_the_names_under_its_own_authority() {
        let names = ["sipline.test".to_owned(), "127.0.0.1".to_owned()];
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(sipline_tests::certs::SIM_UNIX_TIME);
        let (tls, ca_pem) = self_signed("sipline.test", &names, now).expect("made");
        // Leaf, then the authority; the authority is what clients trust.
        assert_eq!(tls.chain.len(), 2);
        let client = TlsConfig::default().with_roots_pem(ca_pem.as_bytes()).expect("CA PEM");
        assert_eq!(client.roots.last().map(AsRef::as_ref), Some(tls.chain[1].as_ref()));
        // Two runs make two different authorities (nothing is reused).
        let (_, again) = self_signed("sipline.test", &names, now).expect("made");
        assert_ne!(again, ca_pem);
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = with_identity_files(
            TlsConfig::default(),
            "/nonexistent/cert.pem".as_ref(),
            "/nonexistent/key.pem".as_ref(),
        )
        .unwrap_err();
        assert!(matches!(&err, TlsFileError::Read { path, .. } if path.ends_with("cert.pem")), "{err:?}");
        assert!(err.to_string().starts_with("cannot read /nonexistent/cert.pem: "), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_a_config_error_naming_it() {
        let dir = Scratch::new("no-certs");
        let empty = dir.write("empty.pem", b"not a certificate\n");
        let err = with_roots_file(TlsConfig::default(), &empty).unwrap_err();
        assert!(
            matches!(&err, TlsFileError::Config { path, source: TlsConfigError::NoCertificate } if *path == empty),
            "{err:?}"
        );
    }

    #[test]
    fn a_key_file_without_a_key_is_named() {
        let dir = Scratch::new("no-key");
        let cert = dir.write("cert.pem", Ca::new("sipline CLI test CA").pem.as_bytes());
        let err = with_identity_files(TlsConfig::default(), &cert, &cert).unwrap_err();
        assert!(matches!(&err, TlsFileError::Config { source: TlsConfigError::NoKey, .. }), "{err:?}");
    }

    #[test]
    fn a_roots_file_loads_every_certificate() {
        let dir = Scratch::new("roots");
        let (a, b) = (Ca::new("sipline CLI test CA a"), Ca::new("sipline CLI test CA b"));
        let two = dir.write("two.pem", format!("{}{}", a.pem, b.pem).as_bytes());
        let tls = with_roots_file(TlsConfig::default(), &two).unwrap();
        assert_eq!(tls.roots.len(), 2);
        assert_eq!(tls.roots[0].as_ref(), a.der.as_slice());
        assert_eq!(tls.roots[1].as_ref(), b.der.as_slice());
    }
}
