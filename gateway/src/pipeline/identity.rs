//! Step 1 — who is calling. rustls has verified the chain and the CRLs during the handshake;
//! here the organisation is read from the certificate **once per connection** and shared by
//! every request on it. A verified certificate that names no valid enterprise number is still
//! refused, on every request, with `CLIENT_CERT_INVALID`.

use std::net::SocketAddr;

use certs::{IdentityError, OrgIdentity};

use crate::error::{Code, Refusal};

/// The caller behind a connection.
#[derive(Debug)]
pub struct Caller {
    pub identity: Result<OrgIdentity, IdentityError>,
    pub peer: SocketAddr,
}

impl Caller {
    /// Reads the identity from the verified peer chain (leaf first).
    pub fn from_peer_chain(chain: Option<&[rustls_pki_types::CertificateDer<'_>]>, peer: SocketAddr) -> Self {
        let identity = match chain.and_then(|c| c.first()) {
            Some(leaf) => OrgIdentity::from_der(leaf),
            // The verifier requires a certificate, so this only happens if it is misconfigured.
            None => Err(IdentityError::Unparsable),
        };
        Caller { identity, peer }
    }

    /// The organisation, or the refusal every request on this connection gets.
    pub fn org(&self) -> Result<&OrgIdentity, Refusal> {
        self.identity.as_ref().map_err(|e| Refusal::new(Code::ClientCertInvalid, e.to_string()))
    }
}
