//! Refusals: one enum of stable codes, mapped to responses in this one module.
//!
//! The codes are part of the public API: add new ones, never rename one. JSON services answer
//! `application/problem+json` (RFC 9457); XML services answer a SOAP 1.1 Fault. Every refusal
//! also carries the code in the `X-Passerelle-Code` header so that tooling need not parse
//! bodies.
//!
//! A refusal's detail is written for the caller and ends up in logs: it names what is wrong
//! (a header, a rule, a field) but never repeats a personal identifier.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// Response body type of every listener: answers are buffered (the layout check and the
/// minimisation need the whole document anyway).
pub type Body = Full<Bytes>;

/// Stable refusal codes (DESIGN.md), plus the transport-level ones the data plane needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    NoLegalBasis,
    LegalBasisNotApplicable,
    /// The caller is eligible for a general instrument but has not adhered to it.
    AdhesionMissing,
    PurposeNotAllowed,
    InstrumentNotActive,
    FlowSuspended,
    ConsentMissing,
    ConsentRevoked,
    ConsentExpired,
    /// A default value would stand in for a service the consent's scope does not cover.
    ConsentScopeExceeded,
    /// The source stops using a consent the citizen has not re-validated in time.
    ConsentRevalidationDue,
    /// The grant's "where" (application, network zone) or "when" (time window) does not hold.
    AccessConditionNotMet,
    EndUserRoleMissing,
    RateExceeded,
    SubjectInvalid,
    LayoutViolation,
    /// A SOAP service received an Envelope of another SOAP version (a `VersionMismatch` Fault).
    SoapVersionMismatch,
    UpstreamUnavailable,
    UpstreamLayoutViolation,
    AuditUnavailable,
    ClientCertInvalid,
    /// The connection's certificate was revoked (or its organisation left the policy) while it
    /// was open.
    ClientCertRevoked,
    /// A required envelope header is missing or malformed.
    EnvelopeInvalid,
    /// No service at this path.
    ServiceUnknown,
    /// The service exists but not with this HTTP method.
    MethodNotAllowed,
    /// The request body is larger than the configured limit.
    BodyTooLarge,
    /// The client did not send its request within the configured time.
    RequestTimeout,
    /// The upstream source did not answer within its timeout.
    UpstreamTimeout,
    /// The source failed several calls in a row; calls are refused at once until a probe
    /// call succeeds (the circuit breaker).
    UpstreamCircuitOpen,
    /// The source's answer is larger than its configured maximum; nothing of it is released.
    UpstreamAnswerTooLarge,
    /// The gateway is at its concurrency limit and sheds load.
    Overloaded,
    /// A replica of a shared store cannot reach the database, or has not yet re-read what it
    /// may have missed: it decides nothing until it has.
    StoreUnavailable,
    /// Another replica changed the policy at the same moment; the change was not made.
    ConcurrentChange,
    /// A bug or an unexpected state; details go to the operator log, not to the caller.
    Internal,
    /// Control plane: the certificate's organisation lacks the role this call needs.
    AdminRoleMissing,
    /// Control plane: an audit query without its case reference and legal ground.
    JustificationMissing,
    /// Control plane: the request body or parameters are malformed.
    RequestInvalid,
    /// The source knows no such subject (the call was permitted; there is no data).
    SubjectNotFound,
    /// Control plane: no organisation, source, instrument … with this identifier.
    ResourceUnknown,
    /// Control plane: the identifier is already taken.
    AlreadyExists,
    /// Control plane: the lifecycle does not allow this move now (or a deadline has passed).
    TransitionNotAllowed,
    /// Control plane: the change would leave the policy invalid; the detail names the key.
    PolicyInvalid,
    /// Control plane: a protocol lacks one of the 13 elements of art. 8.
    ProtocolIncomplete,
    /// Control plane: the organisation's kind may not adhere to this general instrument.
    AdhesionNotEligible,
    /// Control plane: a reload found a problem (a certificate, a bundle); nothing was changed.
    ReloadFailed,
    /// Control plane: a certificate signing request is unreadable, badly signed, or does not
    /// carry exactly the organisation's enterprise number.
    CsrInvalid,
    /// Control plane: a registered service or upstream cannot be used as registered (a layout
    /// that does not compile or lies outside the XSD subset, a catalogue entry the answer
    /// layout does not have, a path already taken, an upstream URL or TLS file that is
    /// unusable); the detail names what and where.
    RegistrationInvalid,
    /// Console: a form that did not come from a console page for this certificate (no token,
    /// another certificate's token, another origin or site).
    FormRejected,
}

impl Code {
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::NoLegalBasis => "NO_LEGAL_BASIS",
            Code::LegalBasisNotApplicable => "LEGAL_BASIS_NOT_APPLICABLE",
            Code::AdhesionMissing => "ADHESION_MISSING",
            Code::PurposeNotAllowed => "PURPOSE_NOT_ALLOWED",
            Code::InstrumentNotActive => "INSTRUMENT_NOT_ACTIVE",
            Code::FlowSuspended => "FLOW_SUSPENDED",
            Code::ConsentMissing => "CONSENT_MISSING",
            Code::ConsentRevoked => "CONSENT_REVOKED",
            Code::ConsentExpired => "CONSENT_EXPIRED",
            Code::ConsentScopeExceeded => "CONSENT_SCOPE_EXCEEDED",
            Code::ConsentRevalidationDue => "CONSENT_REVALIDATION_DUE",
            Code::AccessConditionNotMet => "ACCESS_CONDITION_NOT_MET",
            Code::EndUserRoleMissing => "END_USER_ROLE_MISSING",
            Code::RateExceeded => "RATE_EXCEEDED",
            Code::SubjectInvalid => "SUBJECT_INVALID",
            Code::LayoutViolation => "LAYOUT_VIOLATION",
            Code::SoapVersionMismatch => "SOAP_VERSION_MISMATCH",
            Code::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Code::UpstreamLayoutViolation => "UPSTREAM_LAYOUT_VIOLATION",
            Code::AuditUnavailable => "AUDIT_UNAVAILABLE",
            Code::ClientCertInvalid => "CLIENT_CERT_INVALID",
            Code::ClientCertRevoked => "CLIENT_CERT_REVOKED",
            Code::EnvelopeInvalid => "ENVELOPE_INVALID",
            Code::ServiceUnknown => "SERVICE_UNKNOWN",
            Code::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Code::BodyTooLarge => "BODY_TOO_LARGE",
            Code::RequestTimeout => "REQUEST_TIMEOUT",
            Code::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            Code::UpstreamCircuitOpen => "UPSTREAM_CIRCUIT_OPEN",
            Code::UpstreamAnswerTooLarge => "UPSTREAM_ANSWER_TOO_LARGE",
            Code::Overloaded => "OVERLOADED",
            Code::StoreUnavailable => "STORE_UNAVAILABLE",
            Code::ConcurrentChange => "CONCURRENT_CHANGE",
            Code::Internal => "INTERNAL",
            Code::AdminRoleMissing => "ADMIN_ROLE_MISSING",
            Code::JustificationMissing => "JUSTIFICATION_MISSING",
            Code::RequestInvalid => "REQUEST_INVALID",
            Code::SubjectNotFound => "SUBJECT_NOT_FOUND",
            Code::ResourceUnknown => "RESOURCE_UNKNOWN",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::TransitionNotAllowed => "TRANSITION_NOT_ALLOWED",
            Code::PolicyInvalid => "POLICY_INVALID",
            Code::ProtocolIncomplete => "PROTOCOL_INCOMPLETE",
            Code::AdhesionNotEligible => "ADHESION_NOT_ELIGIBLE",
            Code::ReloadFailed => "RELOAD_FAILED",
            Code::CsrInvalid => "CSR_INVALID",
            Code::RegistrationInvalid => "REGISTRATION_INVALID",
            Code::FormRejected => "FORM_REJECTED",
        }
    }

    pub const fn status(self) -> StatusCode {
        match self {
            Code::NoLegalBasis
            | Code::LegalBasisNotApplicable
            | Code::AdhesionMissing
            | Code::PurposeNotAllowed
            | Code::InstrumentNotActive
            | Code::ConsentMissing
            | Code::ConsentRevoked
            | Code::ConsentExpired
            | Code::ConsentScopeExceeded
            | Code::ConsentRevalidationDue
            | Code::AccessConditionNotMet
            | Code::EndUserRoleMissing
            | Code::ClientCertInvalid
            | Code::ClientCertRevoked
            | Code::AdminRoleMissing
            | Code::AdhesionNotEligible
            | Code::FormRejected => StatusCode::FORBIDDEN,
            Code::AlreadyExists | Code::TransitionNotAllowed | Code::ConcurrentChange => StatusCode::CONFLICT,
            Code::PolicyInvalid
            | Code::ProtocolIncomplete
            | Code::ReloadFailed
            | Code::CsrInvalid
            | Code::RegistrationInvalid => StatusCode::UNPROCESSABLE_ENTITY,
            Code::ResourceUnknown => StatusCode::NOT_FOUND,
            Code::FlowSuspended
            | Code::Overloaded
            | Code::AuditUnavailable
            | Code::UpstreamCircuitOpen
            | Code::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::RateExceeded => StatusCode::TOO_MANY_REQUESTS,
            Code::SubjectInvalid | Code::EnvelopeInvalid | Code::JustificationMissing | Code::RequestInvalid => {
                StatusCode::BAD_REQUEST
            }
            Code::LayoutViolation | Code::SoapVersionMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Code::UpstreamUnavailable | Code::UpstreamLayoutViolation | Code::UpstreamAnswerTooLarge => {
                StatusCode::BAD_GATEWAY
            }
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::ServiceUnknown | Code::SubjectNotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, fixed title for the problem document.
    pub const fn title(self) -> &'static str {
        match self {
            Code::NoLegalBasis => "No legal instrument covers this call",
            Code::LegalBasisNotApplicable => "The named instrument does not apply to this caller or service",
            Code::AdhesionMissing => "The organisation has not adhered to the general instrument",
            Code::PurposeNotAllowed => "The purpose is not allowed by the instrument",
            Code::InstrumentNotActive => "The instrument is not active",
            Code::FlowSuspended => "The flow is suspended by its data owner",
            Code::ConsentMissing => "No consent of the data subject is on file",
            Code::ConsentRevoked => "The data subject revoked the consent",
            Code::ConsentExpired => "The data subject's consent has expired",
            Code::ConsentScopeExceeded => "The data subject did not consent to this use of the value",
            Code::ConsentRevalidationDue => "The data subject has not re-validated the consent in time",
            Code::AccessConditionNotMet => "The call is outside the grant's place or time",
            Code::EndUserRoleMissing => "The end user does not hold the required role",
            Code::RateExceeded => "The grant's periodicity is exceeded",
            Code::SubjectInvalid => "The data subject's identifier is invalid",
            Code::LayoutViolation => "The request does not follow the imposed layout",
            Code::SoapVersionMismatch => "The service speaks SOAP 1.1; the Envelope is of another version",
            Code::UpstreamUnavailable => "The source is unavailable",
            Code::UpstreamLayoutViolation => "The source answered outside its imposed layout",
            Code::AuditUnavailable => "The audit trail cannot be written; no data is released",
            Code::ClientCertInvalid => "The client certificate does not identify an organisation",
            Code::ClientCertRevoked => "The client certificate was revoked while the connection was open",
            Code::EnvelopeInvalid => "The request envelope is incomplete or malformed",
            Code::ServiceUnknown => "No service at this path",
            Code::MethodNotAllowed => "Method not allowed for this service",
            Code::BodyTooLarge => "The request body is too large",
            Code::RequestTimeout => "The request was not received in time",
            Code::UpstreamTimeout => "The source did not answer in time",
            Code::UpstreamCircuitOpen => "The source is failing; calls to it are paused",
            Code::UpstreamAnswerTooLarge => "The source's answer exceeds its size limit",
            Code::Overloaded => "The gateway is overloaded; retry later",
            Code::StoreUnavailable => "The shared store is unavailable; nothing is decided until it is back",
            Code::ConcurrentChange => "Another replica changed the policy at the same time; retry",
            Code::Internal => "Internal error",
            Code::AdminRoleMissing => "The organisation does not hold the role this call needs",
            Code::JustificationMissing => "An audit query needs a case reference and a legal ground",
            Code::RequestInvalid => "The request is malformed",
            Code::SubjectNotFound => "The source holds no data about this subject",
            Code::ResourceUnknown => "No such resource",
            Code::AlreadyExists => "A resource with this identifier already exists",
            Code::TransitionNotAllowed => "The lifecycle does not allow this change now",
            Code::PolicyInvalid => "The change would make the policy invalid",
            Code::ProtocolIncomplete => "The protocol lacks an element required by art. 8",
            Code::AdhesionNotEligible => "This kind of organisation may not adhere to the instrument",
            Code::ReloadFailed => "The reload found a problem; nothing was changed",
            Code::CsrInvalid => "The certificate signing request cannot be signed for this organisation",
            Code::RegistrationInvalid => "The registered service or upstream cannot be used as registered",
            Code::FormRejected => "The form did not come from this console for this certificate",
        }
    }
}

/// A refusal: a stable code and a detail for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: Code,
    pub detail: Cow<'static, str>,
    /// For `METHOD_NOT_ALLOWED`: the methods the resource takes, sent as `Allow`.
    pub allow: Option<&'static str>,
}

impl Refusal {
    pub fn new(code: Code, detail: impl Into<Cow<'static, str>>) -> Self {
        Refusal { code, detail: detail.into(), allow: None }
    }

    /// `METHOD_NOT_ALLOWED` for a resource that takes `allow` (`GET`, `GET, POST`, …).
    pub fn method_not_allowed(detail: impl Into<Cow<'static, str>>, allow: &'static str) -> Self {
        Refusal { code: Code::MethodNotAllowed, detail: detail.into(), allow: Some(allow) }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

impl std::error::Error for Refusal {}

/// How a service speaks, and so how its refusals are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `application/problem+json` (RFC 9457).
    Json,
    /// SOAP 1.1 Fault, `text/xml`.
    Soap,
}

/// Renders a refusal in the service's dialect. `request_id` goes into the document so that a
/// caller can quote it to the operator.
pub fn respond(refusal: &Refusal, dialect: Dialect, request_id: &str) -> Response<Body> {
    let code = refusal.code;
    let (content_type, body, status) = match dialect {
        Dialect::Json => {
            let doc = serde_json::json!({
                "type": format!("urn:passerelle:problem:{}", code.as_str()),
                "title": code.title(),
                "status": code.status().as_u16(),
                "code": code.as_str(),
                "detail": refusal.detail,
                "instance": format!("urn:passerelle:request:{request_id}"),
            });
            ("application/problem+json", doc.to_string(), code.status())
        }
        Dialect::Soap => {
            // WS-I Basic Profile R1126: a Fault travels with HTTP 500. The stable code is in
            // the Fault detail and in the X-Passerelle-Code header.
            let faultcode = if code == Code::SoapVersionMismatch {
                "soap:VersionMismatch"
            } else if code.status().is_client_error() || code.status() == StatusCode::FORBIDDEN {
                "soap:Client"
            } else {
                "soap:Server"
            };
            let mut xml = String::with_capacity(512);
            xml.push_str(r#"<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault>"#);
            let _ = write!(xml, "<faultcode>{faultcode}</faultcode><faultstring>");
            escape_xml(&mut xml, code.title());
            xml.push_str(r#"</faultstring><detail><p:refusal xmlns:p="urn:passerelle:fault"><p:code>"#);
            xml.push_str(code.as_str());
            xml.push_str("</p:code><p:detail>");
            escape_xml(&mut xml, &refusal.detail);
            xml.push_str("</p:detail><p:requestId>");
            escape_xml(&mut xml, request_id);
            xml.push_str("</p:requestId></p:refusal></detail></soap:Fault></soap:Body></soap:Envelope>");
            ("text/xml; charset=utf-8", xml, StatusCode::INTERNAL_SERVER_ERROR)
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("x-passerelle-code", HeaderValue::from_static(code.as_str()));
    if let Some(allow) = refusal.allow {
        h.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(crate::pipeline::envelope::REQUEST_ID, v);
    }
    resp
}

/// Escapes text for XML or HTML content and attribute values.
pub(crate) fn escape_xml(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt;

    async fn body(r: Response<Body>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn problem_json_carries_the_code() {
        let r = respond(&Refusal::new(Code::ConsentRevoked, "consent was revoked"), Dialect::Json, "rid-1");
        assert_eq!(r.status(), 403);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert_eq!(r.headers()["x-passerelle-code"], "CONSENT_REVOKED");
        let v: serde_json::Value = serde_json::from_str(&body(r).await).unwrap();
        assert_eq!(v["code"], "CONSENT_REVOKED");
        assert_eq!(v["status"], 403);
        assert_eq!(v["instance"], "urn:passerelle:request:rid-1");
    }

    #[tokio::test]
    async fn soap_fault_escapes_the_detail() {
        let r = respond(&Refusal::new(Code::LayoutViolation, "element <plate> & co"), Dialect::Soap, "r");
        assert_eq!(r.status(), 500);
        let b = body(r).await;
        assert!(b.contains("<p:code>LAYOUT_VIOLATION</p:code>"));
        assert!(b.contains("element &lt;plate&gt; &amp; co"));
        assert!(b.contains("<faultcode>soap:Client</faultcode>"));
    }
}
