//! TLS to the shared PostgreSQL, as libpq's `sslmode` and `sslrootcert` in the `--shared-db` URL
//! ask (`postgres://…/DB?sslmode=verify-full&sslrootcert=/etc/tracecov/db-ca.pem`), over rustls
//! with the ring provider (`tokio-postgres-rustls`'s connector, which also gives SCRAM its
//! channel binding).
//!
//! What each mode does, as libpq documents it ("SSL Support", "Protection Provided in Different
//! Modes"):
//! - `disable`: plain TCP.
//! - `prefer` (the default, as in libpq): TLS when the server offers it, else plain.
//! - `require`: TLS or no connection.
//! - `verify-ca`: TLS, and the server's certificate chain must lead to `sslrootcert`'s CA.
//! - `verify-full`: as `verify-ca`, and the certificate must be for the host the URL names (a
//!   name, or an IP address in its subject alternative names).
//!
//! Without `sslrootcert`, `prefer` and `require` encrypt without checking who answers (libpq's
//! behaviour: protection against eavesdropping, not against a man in the middle); with it, they
//! check the chain as `verify-ca` does (libpq's "if a root CA file exists, require behaves like
//! verify-ca"). `sslrootcert=system` trusts the system's roots (rustls-platform-verifier) and, as
//! in libpq 16, makes `verify-full` the default and refuses a weaker mode.
//!
//! Key design decisions:
//! - tokio-postgres knows only `disable`, `prefer` and `require`, and no `sslrootcert`: the libpq
//!   TLS parameters are taken out of the URL here (`split_url`), the rest goes to tokio-postgres,
//!   and `verify-*` are `require` to it with the checks in the verifier given to rustls.
//! - No default root file is read (libpq's `~/.postgresql/root.crt`): a verifying mode without
//!   `sslrootcert` is refused at start, saying what to give. Client certificates (`sslcert`,
//!   `sslkey`), CRLs and `sslmode=allow` are refused the same way rather than ignored.
//!
//! Must not: put the URL (it may hold a password) in a message.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

/// libpq's `sslmode`, less `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// What the server's certificate is checked against (`sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// Not checked (`prefer` and `require` without `sslrootcert`).
    None,
    /// The CA certificates of a PEM file.
    File(PathBuf),
    /// The system's roots (`sslrootcert=system`).
    System,
}

/// The TLS settings of a `--shared-db` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTls {
    pub mode: SslMode,
    pub root: Root,
}

/// Takes libpq's TLS parameters out of `url`'s query: the URL tokio-postgres is given, and the
/// settings. Errors name the parameter, never the URL.
pub fn split_url(url: &str) -> Result<(String, PgTls), String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut kept = Vec::new();
    let (mut mode, mut root) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = Some(match percent_decoded(value)?.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    "allow" => {
                        return Err("--shared-db: sslmode=allow is not supported: use prefer \
                                    (TLS when the server offers it) or disable"
                            .to_owned());
                    }
                    other => {
                        return Err(format!(
                            "--shared-db: unknown sslmode {other:?}: use disable, prefer, \
                             require, verify-ca or verify-full"
                        ));
                    }
                })
            }
            "sslrootcert" => {
                let value = percent_decoded(value)?;
                root = Some(match value.as_str() {
                    "" => return Err("--shared-db: sslrootcert names no file".to_owned()),
                    "system" => Root::System,
                    _ => Root::File(PathBuf::from(value)),
                });
            }
            "sslcert" | "sslkey" | "sslpassword" | "sslcertmode" => {
                return Err(format!(
                    "--shared-db: {key}: client certificates are not supported; the database \
                     must accept a password or trust for this user"
                ));
            }
            "sslcrl" | "sslcrldir" => {
                return Err(format!(
                    "--shared-db: {key}: certificate revocation lists are not supported"
                ));
            }
            _ => kept.push(pair),
        }
    }
    let root = root.unwrap_or(Root::None);
    let mode = mode.unwrap_or(if root == Root::System {
        SslMode::VerifyFull
    } else {
        SslMode::Prefer
    });
    if root == Root::System && mode != SslMode::VerifyFull && mode != SslMode::Disable {
        return Err(format!(
            "--shared-db: sslmode={} may not be used with sslrootcert=system (use verify-full)",
            mode.name()
        ));
    }
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root == Root::None {
        return Err(format!(
            "--shared-db: sslmode={} needs sslrootcert=FILE (the PEM certificate of the CA that \
             signed the server's) or sslrootcert=system",
            mode.name()
        ));
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, PgTls { mode, root }))
}

/// A query value with its `%XX` escapes decoded (a path may hold reserved characters).
fn percent_decoded(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("--shared-db: a bad %-escape in a TLS parameter")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "--shared-db: a TLS parameter is not UTF-8".to_owned())
}

impl PgTls {
    /// What tokio-postgres is told: whether to ask for TLS and whether to insist.
    pub fn tokio_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    /// `sslmode=…[, sslrootcert=…]`, for messages.
    pub fn describe(&self) -> String {
        match &self.root {
            Root::None => format!("sslmode={}", self.mode.name()),
            Root::File(path) => format!(
                "sslmode={}, sslrootcert={}",
                self.mode.name(),
                path.display()
            ),
            Root::System => format!("sslmode={}, sslrootcert=system", self.mode.name()),
        }
    }

    /// The connector the pool makes its connections with (reads `sslrootcert` now).
    pub fn connector(&self) -> Result<MakeRustlsConnect, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match &self.root {
            Root::None => Arc::new(LibpqVerifier {
                roots: None,
                provider: provider.clone(),
            }),
            Root::System => Arc::new(
                rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| {
                    format!("--shared-db: cannot use the system's certificate store: {e}")
                })?,
            ),
            Root::File(path) => {
                let certs = crate::tls::read_certificates(path).map_err(|e| {
                    // The same reasons as `--tls-ca`'s, named after this parameter.
                    format!("--shared-db: sslrootcert: {e}").replace(" (--tls-ca)", "")
                })?;
                let mut roots = rustls::RootCertStore::empty();
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        format!(
                            "--shared-db: sslrootcert {} holds a certificate that cannot be a \
                             trust anchor: {e}",
                            path.display()
                        )
                    })?;
                }
                let roots = Arc::new(roots);
                if self.mode == SslMode::VerifyFull {
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        roots,
                        provider.clone(),
                    )
                    .build()
                    .map_err(|e| format!("--shared-db: sslrootcert {}: {e}", path.display()))?
                } else {
                    Arc::new(LibpqVerifier {
                        roots: Some(roots),
                        provider: provider.clone(),
                    })
                }
            }
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("--shared-db: TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(MakeRustlsConnect::new(config))
    }
}

/// The verifiers libpq's modes need that rustls does not have: `prefer` and `require` without
/// a root (`roots: None`: the connection is encrypted and the server proves it holds its
/// certificate's key, but nobody vouches for the certificate, as libpq does), and `verify-ca`
/// (and `prefer`/`require` with a root: the chain must lead to one of `roots`, whatever host
/// name the certificate is for).
#[derive(Debug)]
struct LibpqVerifier {
    roots: Option<Arc<rustls::RootCertStore>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for LibpqVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.provider.signature_verification_algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> Result<(String, PgTls), String> {
        split_url(url)
    }

    #[test]
    fn libpq_tls_parameters_are_taken_out_of_the_url() {
        let (url, tls) = split("postgres://u:pw@h/d").unwrap();
        assert_eq!(url, "postgres://u:pw@h/d");
        assert_eq!((tls.mode, tls.root), (SslMode::Prefer, Root::None));

        let (url, tls) = split(
            "postgres://u@h:5433/d?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://u@h:5433/d?application_name=x&connect_timeout=3"
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root, Root::File("/etc/ca.pem".into()));
        assert_eq!(tls.tokio_mode(), tokio_postgres::config::SslMode::Require);
        assert_eq!(
            tls.describe(),
            "sslmode=verify-full, sslrootcert=/etc/ca.pem"
        );

        let (_, tls) = split("postgres://u@h/d?sslmode=require").unwrap();
        assert_eq!((tls.mode, tls.root), (SslMode::Require, Root::None));
        // As libpq 16: the system's roots default to verify-full.
        let (_, tls) = split("postgres://u@h/d?sslrootcert=system").unwrap();
        assert_eq!((tls.mode, tls.root), (SslMode::VerifyFull, Root::System));
    }

    #[test]
    fn tls_parameters_that_cannot_be_honoured_are_refused_clearly() {
        for (url, says) in [
            (
                "postgres://u:secret@h/d?sslmode=verify-full",
                "needs sslrootcert",
            ),
            (
                "postgres://u:secret@h/d?sslmode=verify-ca",
                "needs sslrootcert",
            ),
            (
                "postgres://u:secret@h/d?sslmode=allow",
                "sslmode=allow is not supported",
            ),
            ("postgres://u:secret@h/d?sslmode=strict", "unknown sslmode"),
            (
                "postgres://u:secret@h/d?sslmode=require&sslrootcert=system",
                "may not be used with sslrootcert=system",
            ),
            (
                "postgres://u:secret@h/d?sslcert=/c.pem",
                "client certificates",
            ),
            ("postgres://u:secret@h/d?sslrootcert=", "names no file"),
        ] {
            let e = split(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn a_missing_root_file_is_refused_when_the_connector_is_made() {
        let tls = PgTls {
            mode: SslMode::VerifyFull,
            root: Root::File("/nonexistent/ca.pem".into()),
        };
        let e = tls.connector().err().unwrap();
        assert!(
            e.contains("sslrootcert") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        assert!(!e.contains("--tls-ca"), "{e}");
    }
}
