//! Step 1 — who is calling. rustls has verified the chain and the CRLs during the handshake;
//! here the organisation is read from the certificate **once per connection** and shared by
//! every request on it. A verified certificate that names no valid enterprise number is still
//! refused, on every request, with `CLIENT_CERT_INVALID`. A connection the gateway ended for
//! its certificate ([`crate::conn`]: revoked at a reload, expired, its organisation gone)
//! refuses the requests that still arrive on it with `CLIENT_CERT_REVOKED`.

use std::net::SocketAddr;

use certs::{IdentityError, OrgIdentity};

use crate::conn::Ended;
use crate::error::{Code, Refusal};

/// The caller behind a connection.
#[derive(Debug)]
pub struct Caller {
    pub identity: Result<OrgIdentity, IdentityError>,
    pub peer: SocketAddr,
    /// The connection's state, when a listener drives it.
    pub conn: Option<std::sync::Arc<crate::conn::ConnState>>,
    /// The enterprise number's digits and the certificate's fingerprint in hex, as every
    /// audit record of the connection writes them: worked out once, not once per call.
    texts: Option<(Box<str>, Box<str>)>,
    /// The metric children of the connection's last call.
    pub last_call: crate::metrics::LastCall,
}

impl Caller {
    /// Reads the identity from the verified peer chain (leaf first).
    pub fn from_peer_chain(chain: Option<&[rustls_pki_types::CertificateDer<'_>]>, peer: SocketAddr) -> Self {
        let identity = match chain.and_then(|c| c.first()) {
            Some(leaf) => OrgIdentity::from_der(leaf),
            // The verifier requires a certificate, so this only happens if it is misconfigured.
            None => Err(IdentityError::Unparsable),
        };
        let texts = identity.as_ref().ok().map(|id| {
            let mut d = [0u8; 10];
            (id.kbo.digits(&mut d).into(), id.fingerprint_hex().into())
        });
        Caller { identity, peer, conn: None, texts, last_call: Default::default() }
    }

    /// The enterprise number's 10 digits, when the certificate named a valid one.
    pub fn kbo_text(&self) -> Option<&str> {
        self.texts.as_ref().map(|(k, _)| &**k)
    }

    /// The certificate's SHA-256 fingerprint in lowercase hex, when it named an organisation.
    pub fn fingerprint_text(&self) -> Option<&str> {
        self.texts.as_ref().map(|(_, f)| &**f)
    }

    /// The same caller, on the connection whose state is `conn`.
    pub fn on(mut self, conn: std::sync::Arc<crate::conn::ConnState>) -> Self {
        self.conn = Some(conn);
        self
    }

    /// The organisation, or the refusal every request on this connection gets.
    pub fn org(&self) -> Result<&OrgIdentity, Refusal> {
        if let Some(ended) = self.conn.as_ref().and_then(|c| c.ended()).filter(|e| e.refuses_calls()) {
            return Err(match ended {
                Ended::Expired => Refusal::new(Code::ClientCertInvalid, "the client certificate has expired"),
                Ended::Organisation => {
                    Refusal::new(Code::ClientCertRevoked, "the certificate's organisation is no longer registered")
                }
                _ => Refusal::new(Code::ClientCertRevoked, "the client certificate was revoked"),
            });
        }
        self.identity.as_ref().map_err(|e| Refusal::new(Code::ClientCertInvalid, e.to_string()))
    }
}
