//! TLS material for the network commands, read where IO belongs (the core
//! takes bytes only): PEM files for `--cert`, `--key` and `--ca`, and the
//! system's trusted roots through `rustls-native-certs` (on Linux the
//! OpenSSL locations such as `/etc/ssl/certs`, honouring `SSL_CERT_FILE`
//! and `SSL_CERT_DIR`).

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
