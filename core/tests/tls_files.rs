//! TLS material from files: errors name the file and say what is wrong.
#![cfg(feature = "driver")]

use sipline::driver::files::TlsFileError;
use sipline::transport::{TlsConfig, TlsConfigError};

#[test]
fn missing_files_name_the_path() {
    let err = TlsConfig::default()
        .with_identity_pem_files("/nonexistent/cert.pem".as_ref(), "/nonexistent/key.pem".as_ref())
        .unwrap_err();
    assert!(matches!(&err, TlsFileError::Read { path, .. } if path.ends_with("cert.pem")));
}

#[test]
fn a_file_without_certificates_is_a_config_error() {
    let dir = std::env::temp_dir().join(format!("sipline-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, b"not a certificate\n").unwrap();
    let err = TlsConfig::default().with_roots_pem_file(&empty).unwrap_err();
    assert!(matches!(err, TlsFileError::Config { source: TlsConfigError::NoCertificate, .. }), "{err:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
