//! Who is calling: the identity convention of Belgian organisation certificates (DOMAIN.md §6).
//!
//! The organisation is the enterprise number in a subject `OU` of the form
//! `urn:be:fgov:kbo-bce:organization:cbe-number:0123456789`. An optional `OU` of `PRD`, `ACC` or
//! `INT` names the environment. Administrative rights are not read from the certificate: they
//! belong to the organisation and are held by the gateway. The gateway reads this once per
//! connection, after rustls has verified the chain and the CRLs.

use policies::ids::Kbo;
use sha2::{Digest, Sha256};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Prefix of the subject OU that carries the enterprise number.
pub const ORG_OU_PREFIX: &str = "urn:be:fgov:kbo-bce:organization:cbe-number:";

/// The environment a certificate is meant for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Environment {
    /// `INT`: integration (test) environment.
    Integration,
    /// `ACC`: acceptance (test) environment.
    Acceptance,
    /// `PRD`: production.
    Production,
}

impl Environment {
    pub const fn as_str(self) -> &'static str {
        match self {
            Environment::Integration => "INT",
            Environment::Acceptance => "ACC",
            Environment::Production => "PRD",
        }
    }

    pub fn from_ou(s: &str) -> Option<Self> {
        match s {
            "INT" => Some(Environment::Integration),
            "ACC" => Some(Environment::Acceptance),
            "PRD" => Some(Environment::Production),
            _ => None,
        }
    }

    /// Whether calls from this environment are answered by the test side (sandbox).
    pub const fn is_test(self) -> bool {
        !matches!(self, Environment::Production)
    }
}

/// Why a verified certificate still does not identify an organisation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the client certificate cannot be parsed")]
    Unparsable,
    #[error("the client certificate carries no enterprise number: expected a subject OU '{ORG_OU_PREFIX}<10 digits>'")]
    MissingEnterpriseNumber,
    #[error("the client certificate's enterprise number is invalid: {0}")]
    InvalidEnterpriseNumber(policies::ids::IdError),
    #[error("the client certificate carries more than one enterprise number")]
    SeveralEnterpriseNumbers,
    #[error("the client certificate carries more than one environment OU")]
    SeveralEnvironments,
}

/// The organisation behind a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgIdentity {
    pub kbo: Kbo,
    pub environment: Option<Environment>,
    /// SHA-256 of the certificate's DER encoding.
    pub fingerprint: [u8; 32],
    /// The end of the certificate's validity, in Unix seconds: a connection opened with it
    /// ends then.
    pub not_after: i64,
}

impl OrgIdentity {
    /// Reads the identity from an end-entity certificate in DER.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparsable)?;
        let mut kbo = None;
        let mut environment = None;
        for ou in cert.subject().iter_organizational_unit() {
            let Ok(value) = ou.as_str() else { continue };
            if let Some(number) = value.strip_prefix(ORG_OU_PREFIX) {
                if kbo.is_some() {
                    return Err(IdentityError::SeveralEnterpriseNumbers);
                }
                // The convention writes the bare 10 digits; dots or a BE prefix are refused.
                if number.len() != 10 || !number.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(IdentityError::InvalidEnterpriseNumber(policies::ids::IdError::Length {
                        kind: policies::ids::IdKind::Kbo,
                        expected: 10,
                        found: number.len(),
                    }));
                }
                kbo = Some(Kbo::parse(number).map_err(IdentityError::InvalidEnterpriseNumber)?);
            } else if let Some(env) = Environment::from_ou(value) {
                if environment.is_some() {
                    return Err(IdentityError::SeveralEnvironments);
                }
                environment = Some(env);
            }
        }
        let kbo = kbo.ok_or(IdentityError::MissingEnterpriseNumber)?;
        let not_after = cert.validity().not_after.timestamp();
        Ok(OrgIdentity { kbo, environment, fingerprint: Sha256::digest(der).into(), not_after })
    }

    /// The fingerprint as lowercase hex, as written in the audit trail.
    pub fn fingerprint_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        hex_encode(&self.fingerprint, &mut s);
        s
    }
}

/// Appends `bytes` to `out` as lowercase hex.
pub fn hex_encode(bytes: &[u8], out: &mut String) {
    const H: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(H[usize::from(b >> 4)]));
        out.push(char::from(H[usize::from(b & 15)]));
    }
}

/// Writes `bytes` as lowercase hex into the start of `out` (which holds at least twice as
/// many), as [`hex_encode`] writes them, without allocating.
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const H: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = H[usize::from(b >> 4)];
        pair[1] = H[usize::from(b & 15)];
    }
}

#[cfg(test)]
mod tests {
    use super::{hex_encode, hex_into};

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut s = String::from("x");
        hex_encode(&bytes, &mut s);
        let expected: String =
            std::iter::once("x".to_owned()).chain(bytes.iter().map(|b| format!("{b:02x}"))).collect();
        assert_eq!(s, expected);
        let mut out = [b'.'; 514];
        hex_into(&bytes, &mut out);
        assert_eq!(&out[..512], &expected.as_bytes()[1..]);
        assert_eq!(&out[512..], b"..");
    }
}
