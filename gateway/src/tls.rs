//! TLS: the data plane's rustls server configuration (client certificate required, chain and
//! CRLs checked by webpki) and the client configuration the demo, tests and load generator use.
//!
//! Only the `ring` crypto provider is compiled in. The server accepts TLS 1.3 and 1.2 and
//! offers `h2` and `http/1.1` by ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} from {path}: {message}")]
    Pem { what: &'static str, path: String, message: String },
    #[error("{what} in {path} holds no certificate")]
    Empty { what: &'static str, path: String },
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_err<'a>(what: &'static str, path: &'a Path) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError + 'a {
    move |e| TlsError::Pem { what, path: path.display().to_string(), message: e.to_string() }
}

/// Reads every certificate of a PEM file.
pub fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err(what, path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err(what, path))?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what, path: path.display().to_string() });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(pem_err("private key", path))
}

fn read_crls(paths: &[impl AsRef<Path>]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut out = Vec::new();
    for p in paths {
        let p = p.as_ref();
        for crl in CertificateRevocationListDer::pem_file_iter(p).map_err(pem_err("CRL", p))? {
            out.push(crl.map_err(pem_err("CRL", p))?);
        }
    }
    Ok(out)
}

/// The data plane's server configuration.
pub fn server_config(cfg: &TlsConfig) -> Result<ServerConfig, TlsError> {
    Ok(server_config_and_verifier(cfg)?.0)
}

/// The mutual-TLS server configuration and its client certificate verifier, with which open
/// connections are checked again after a reload ([`crate::conn::Registry::recheck`]).
pub fn server_config_and_verifier(cfg: &TlsConfig) -> Result<(ServerConfig, Arc<dyn ClientCertVerifier>), TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    let mut anchors = Vec::new();
    for ca in read_certs("client CA bundle", &cfg.client_ca)? {
        anchors.push(Anchor::of(&ca, &cfg.client_ca)?);
        roots.add(ca)?;
    }
    // webpki keeps a trust anchor's name constraints but not its path-length constraint:
    // [`ChainLimit`] enforces that one.
    anchors.retain(|a| a.max_intermediates.is_some());
    let webpki = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(read_crls(&cfg.crls)?)
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier: Arc<dyn ClientCertVerifier> =
        Arc::new(ChainLimit { inner: webpki, max_intermediates: cfg.max_intermediates, anchors });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(read_certs("server certificate", &cfg.cert)?, read_key(&cfg.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, verifier))
}

/// webpki's client verification, refusing first a chain with more intermediates than allowed
/// (`CertificateError::ApplicationVerificationFailure`, counted as `chain-too-long`).
/// A trust anchor's path-length constraint (`pathLenConstraint` of its basic constraints):
/// at most that many intermediates between it and a client certificate.
#[derive(Debug)]
struct Anchor {
    subject: Vec<u8>,
    max_intermediates: Option<u32>,
}

impl Anchor {
    fn of(der: &CertificateDer<'_>, path: &Path) -> Result<Anchor, TlsError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::Pem {
            what: "client CA bundle",
            path: path.display().to_string(),
            message: format!("a CA certificate does not parse: {e}"),
        })?;
        let max_intermediates = match cert.basic_constraints() {
            Ok(Some(bc)) => bc.value.path_len_constraint,
            Ok(None) => None,
            Err(e) => {
                return Err(TlsError::Verifier(format!(
                    "a CA of {} has unreadable basic constraints: {e}",
                    path.display()
                )));
            }
        };
        Ok(Anchor { subject: cert.subject().as_raw().to_vec(), max_intermediates })
    }
}

/// The intermediates between `end_entity` and the first certificate issued by an anchor of
/// `anchors`, following issuer names through `intermediates`: the anchor's constraint and the
/// count, when the chain reaches a constrained anchor.
fn path_to_anchor(end_entity: &[u8], intermediates: &[CertificateDer<'_>], anchors: &[Anchor]) -> Option<(u32, u32)> {
    let parsed: Vec<_> =
        intermediates.iter().filter_map(|c| x509_parser::parse_x509_certificate(c).ok().map(|(_, c)| c)).collect();
    let (_, leaf) = x509_parser::parse_x509_certificate(end_entity).ok()?;
    let mut issuer = leaf.issuer().as_raw();
    let mut used = 0u32;
    loop {
        if let Some(a) = anchors.iter().find(|a| a.subject == issuer) {
            return a.max_intermediates.map(|max| (max, used));
        }
        let next = parsed.iter().find(|c| c.subject().as_raw() == issuer)?;
        used += 1;
        if used as usize > parsed.len() {
            return None;
        }
        issuer = next.issuer().as_raw();
    }
}

#[derive(Debug)]
struct ChainLimit {
    inner: Arc<dyn ClientCertVerifier>,
    max_intermediates: usize,
    /// The trust anchors with a path-length constraint.
    anchors: Vec<Anchor>,
}

impl ClientCertVerifier for ChainLimit {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let refused = || Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        let verdict = if intermediates.len() > self.max_intermediates {
            refused()
        } else {
            match self.inner.verify_client_cert(end_entity, intermediates, now) {
                // With no intermediate, any path-length constraint holds.
                Ok(v) if intermediates.is_empty() || self.anchors.is_empty() => Ok(v),
                Ok(v) => match path_to_anchor(end_entity, intermediates, &self.anchors) {
                    Some((max, used)) if used > max => refused(),
                    _ => Ok(v),
                },
                Err(e) => Err(e),
            }
        };
        if verdict.is_err() {
            // For the audit record of the attempt (only refused certificates are kept).
            crate::audit::attempts::note_refused_certificate(end_entity.as_ref());
        }
        verdict
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The public listener's server configuration: the same certificate, no client certificate.
pub fn public_server_config(cfg: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(read_certs("server certificate", &cfg.cert)?, read_key(&cfg.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The client configuration towards a source: its CA, and the gateway's client certificate
/// when configured. ALPN is left to the HTTPS connector, which offers HTTP/1.1.
pub fn source_client_config(t: &crate::config::SourceTls) -> Result<ClientConfig, TlsError> {
    tls_client_config(t, false)
}

/// The client configuration towards the shared PostgreSQL store (`[store.tls]`).
pub fn store_client_config(t: &crate::config::SourceTls) -> Result<ClientConfig, TlsError> {
    tls_client_config(t, true)
}

fn tls_client_config(t: &crate::config::SourceTls, store: bool) -> Result<ClientConfig, TlsError> {
    let what = |source: &'static str, database: &'static str| if store { database } else { source };
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| TlsError::Pem {
            what,
            path: path.display().to_string(),
            message: e.to_string(),
        })
    };
    let ca = read(what("source CA bundle", "database CA bundle"), &t.ca)?;
    let identity = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => Some((
            read(what("source client certificate", "database client certificate"), c)?,
            read(what("source client key", "database client key"), k)?,
        )),
        (None, None) => None,
        _ => {
            let table = what("sources.*.tls", "store.tls");
            return Err(TlsError::Verifier(format!("{table}: cert and key go together")));
        }
    };
    client_config(&ca, identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())), &[])
}

/// A client configuration trusting `ca_pem` and presenting `cert_pem` / `key_pem` (when given).
/// `alpn` chooses the HTTP version offered (`h2`, `http/1.1`).
pub fn client_config(ca_pem: &[u8], client: Option<(&[u8], &[u8])>, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let pem = |e: rustls_pki_types::pem::Error| TlsError::Pem {
        what: "client material",
        path: "<memory>".into(),
        message: e.to_string(),
    };
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca.map_err(pem)?)?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_webpki_verifier(verifier);
    let mut config = match client {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(pem)?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(pem)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
