//! TLS as tracecov's own HTTP clients speak it: client commands asking a server
//! (`--server https://…`), and an instance asking another of its deployment at an `https://`
//! `--instance-url` (`shared::peers`). What they trust (`Trust`): the system's certificate
//! authorities, plus those of the PEM file `--tls-ca FILE` (`TRACECOV_TLS_CA`) names. The
//! listeners' side of TLS is `net::Tls`; PostgreSQL's (libpq's `sslmode`, `sslrootcert`) is
//! `shared::tls`.
//!
//! Key design decisions:
//! - One crypto provider, ring, as on the listeners (no aws-lc build). reqwest is built with its
//!   `rustls-no-provider` feature, which takes the provider from the process default and panics
//!   when a client is built with none installed. So `install_provider` installs ring before any
//!   client is built: `cli::main` first thing, `Server::start`, and `Trust::client_builder`,
//!   through which every reqwest client of the library is made (with `Trust::default()` where
//!   only the system's roots apply: `--forward`, the demo, the benchmarks). Test code makes its
//!   clients through the same function (`tests/it/common.rs`'s `http`).
//! - The system's roots through rustls-platform-verifier (reqwest's own verifier): it reads the
//!   store the machine's administrator keeps (Debian's `update-ca-certificates`, a company's CA
//!   added there) and checks revocation where the platform does, rather than a list of roots
//!   compiled into the binary (webpki-roots) that only a new tracecov release would update.
//!   `--tls-ca` adds to those roots, never replaces them.
//!
//! Must not: trust anything unverified (there is no "insecure" switch), or read a CA file for
//! every request (it is read once, at start).

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio_rustls::rustls;

/// Installs ring as the process's default crypto provider, once; harmless when one is
/// installed already.
pub fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Another provider installed first (a library user's choice) is kept: reqwest only
        // needs one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the CA file {path} (--tls-ca): {problem}")]
    Read { path: PathBuf, problem: String },
    #[error("the CA file {0} (--tls-ca) holds no PEM certificate")]
    Empty(PathBuf),
    #[error(
        "the CA file {path} (--tls-ca) holds a certificate that cannot be a trust anchor: {problem}"
    )]
    Anchor { path: PathBuf, problem: String },
}

/// What tracecov's HTTP clients trust: the system's roots and the certificates of `--tls-ca`.
#[derive(Clone, Default)]
pub struct Trust {
    /// The file the extra roots came from, for messages.
    file: Option<PathBuf>,
    extra: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.file {
            Some(file) => write!(f, "Trust(system + {})", file.display()),
            None => f.write_str("Trust(system)"),
        }
    }
}

impl Trust {
    /// The system's roots and, with `ca_file`, the certificates in it (PEM, one or more).
    pub fn new(ca_file: Option<&Path>) -> Result<Self, TrustError> {
        let Some(path) = ca_file else {
            return Ok(Self::default());
        };
        let extra = read_certificates(path)?;
        // Checked now so that a bad file is refused at start, naming the file, not at the first
        // request with reqwest's "builder error".
        let mut store = rustls::RootCertStore::empty();
        for cert in &extra {
            store.add(cert.clone()).map_err(|e| TrustError::Anchor {
                path: path.to_owned(),
                problem: e.to_string(),
            })?;
        }
        Ok(Self {
            file: Some(path.to_owned()),
            extra,
        })
    }

    /// The CA file given, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// A reqwest client builder that trusts these roots (and the system's).
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        install_provider();
        let extra = self
            .extra
            .iter()
            .filter_map(|c| reqwest::Certificate::from_der(c.as_ref()).ok());
        reqwest::Client::builder().tls_certs_merge(extra)
    }
}

/// The certificates of a PEM file: at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TrustError::Read {
            path: path.to_owned(),
            problem: match e {
                rustls_pki_types::pem::Error::Io(io) => io.to_string(),
                other => other.to_string(),
            },
        })?;
    if certs.is_empty() {
        return Err(TrustError::Empty(path.to_owned()));
    }
    Ok(certs)
}

/// A hint for an error whose cause is a server certificate this process does not trust (an
/// unknown issuer, a name it is not valid for, an expired one), else `None`.
pub fn untrusted_hint(error: &anyhow::Error) -> Option<&'static str> {
    error
        .chain()
        .any(is_certificate_error)
        .then_some("the server's TLS certificate is not trusted: give the certificate authority that signed it with --tls-ca FILE (or TRACECOV_TLS_CA), and check that the URL names a host the certificate is for")
}

/// Whether `e` is (or wraps, through an `io::Error`) rustls refusing the peer's certificate.
pub fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let rustls_error = e.downcast_ref::<rustls::Error>().or_else(|| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    });
    match rustls_error {
        Some(r) => matches!(
            r,
            rustls::Error::InvalidCertificate(_) | rustls::Error::InvalidCertRevocationList(_)
        ),
        // The clients' layers (hyper's, reqwest's) may hold the error in types of their own
        // that do not give it back as a source: rustls's own words for it, then.
        None => e.to_string().starts_with("invalid peer certificate"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_that_cannot_be_used_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = Trust::new(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("missing.pem") && e.contains("--tls-ca"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = Trust::new(Some(&empty)).unwrap_err().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = Trust::new(Some(&garbage)).unwrap_err().to_string();
        assert!(e.contains("garbage.pem"), "{e}");
        assert!(Trust::new(None).unwrap().ca_file().is_none());
    }
}
