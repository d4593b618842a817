//! Steps 8 and 10 — the imposed layout, both ways, and minimisation.
//!
//! In: the body must follow the service's request layout — none at all for the JSON look-ups
//! that carry their subject in the envelope, a JSON document following the request schema for
//! those that take one, a SOAP 1.1 envelope following the XML layout for DIV — or the call is
//! refused with `LAYOUT_VIOLATION`, naming the path, before the source is called.
//! Out: the source's answer must follow the published layout, else `UPSTREAM_LAYOUT_VIOLATION`
//! and nothing leaves; then it is reduced to the granted fields (proportionality), a default
//! value stands in for a per-service one only where the consent's scope allows it, and the
//! subjects that leave with the answer are added to the audit record.

use adapters::doc::Doc;
use adapters::layout::{Fallback, SubjectType};
use adapters::xml;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use serde_json::Value;

use super::audit::Trace;
use super::forward::UpstreamAnswer;
use super::route::Route;
use crate::audit::SubjectRef;
use crate::consent::{ConsentId, Registry};
use crate::error::{Code, Refusal};

/// Largest SOAP request a look-up needs; anything bigger is refused unread by the XML reader.
pub const MAX_SOAP_REQUEST_BYTES: usize = 16 * 1024;

/// The request as the layout read it.
#[derive(Debug, Default)]
pub struct Request {
    /// The JSON body, for services that take one.
    pub json: Option<Value>,
}

pub fn check_request(route: &Route, body: &Bytes) -> Result<Request, Refusal> {
    if let Some(soap) = &route.service.soap {
        if body.len() > MAX_SOAP_REQUEST_BYTES {
            return Err(Refusal::new(
                Code::LayoutViolation,
                format!("the request is larger than this layout allows ({MAX_SOAP_REQUEST_BYTES} bytes)"),
            ));
        }
        soap.check_request(body).map_err(|why| {
            let code =
                if why == adapters::xml::VERSION_MISMATCH { Code::SoapVersionMismatch } else { Code::LayoutViolation };
            Refusal::new(code, why)
        })?;
        return Ok(Request::default());
    }
    match &route.layout {
        Some(layout) => {
            let json = layout.check_request(body).map_err(|why| Refusal::new(Code::LayoutViolation, why))?;
            Ok(Request { json })
        }
        None => Ok(Request::default()),
    }
}

fn refuse_status(source: &str, status: StatusCode) -> Result<(), Refusal> {
    if status == StatusCode::NOT_FOUND {
        return Err(Refusal::new(Code::SubjectNotFound, format!("source {source} holds no data about this subject")));
    }
    if status != StatusCode::OK {
        return Err(Refusal::new(
            Code::UpstreamUnavailable,
            format!("source {source} answered HTTP {}", status.as_u16()),
        ));
    }
    Ok(())
}

fn record_subjects(trace: &mut Trace, found: Vec<(SubjectType, String)>) {
    trace.answer_subjects(
        found
            .into_iter()
            .map(|(kind, id)| match kind {
                SubjectType::Person => SubjectRef::Person(id),
                SubjectType::Organisation => SubjectRef::Organisation(id),
            })
            .collect(),
    );
}

/// What the consent behind the call allows beyond its own service (art. 5/4, 7/3).
#[derive(Debug, Clone, Copy)]
pub struct ConsentScope<'a> {
    pub registry: &'a Registry,
    pub consent: Option<ConsentId>,
}

impl ConsentScope<'_> {
    /// Does the consent's scope cover `service` (listed, or `*`)? Reads the record from the
    /// store: only calls that would fall back to a default get here.
    fn covers(&self, service: &str) -> Result<bool, Refusal> {
        let Some(id) = self.consent else { return Ok(false) };
        let record = self.registry.store().get(&id.to_text()).map_err(|e| {
            tracing::error!(error = %e, "consent store unreadable");
            Refusal::new(Code::Internal, "the consent on file could not be read")
        })?;
        Ok(record.is_some_and(|c| c.scope.iter().any(|s| s == service || s == "*")))
    }
}

/// Applies the default/per-service rule to a checked answer.
fn fall_back(rule: &Fallback, request: &Request, answer: &mut Doc<'_>, scope: ConsentScope<'_>) -> Result<(), Refusal> {
    let key = |p: &'static str| p.trim_start_matches('/');
    if answer.get(key(rule.linked)).is_some() {
        // The citizen linked a value to this service: the default is not needed.
        answer.remove(key(rule.default));
        return Ok(());
    }
    if answer.get(key(rule.default)).is_none() {
        return Ok(());
    }
    let service = request.json.as_ref().and_then(|v| v.pointer(rule.service)).and_then(Value::as_str).unwrap_or("");
    if scope.covers(service)? {
        return Ok(());
    }
    Err(Refusal::new(
        Code::ConsentScopeExceeded,
        "the citizen linked no value to this public service and did not consent to the default being used for it",
    ))
}

pub fn check_and_minimise(
    route: &Route,
    request: &Request,
    answer: UpstreamAnswer,
    trace: &mut Trace,
    scope: ConsentScope<'_>,
) -> Result<UpstreamAnswer, Refusal> {
    let source = route.service.source;
    if let Some(soap) = &route.service.soap {
        refuse_status(source, answer.status)?;
        let payload = soap
            .check_response(&answer.body)
            .map_err(|why| Refusal::new(Code::UpstreamLayoutViolation, format!("source {source}: {why}")))?;
        let reduced = xml::minimise(payload, &soap.response, &|f| trace.grants(f))
            .ok_or_else(|| Refusal::new(Code::Internal, "the answer's root was removed"))?;
        let mut found = Vec::new();
        xml::subjects(&reduced, &soap.response, &mut found);
        record_subjects(trace, found);
        return Ok(UpstreamAnswer {
            status: StatusCode::OK,
            content_type: Some(HeaderValue::from_static("text/xml; charset=utf-8")),
            body: Bytes::from(xml::envelope(&reduced)),
        });
    }
    let Some(layout) = &route.layout else { return Ok(answer) };
    refuse_status(source, answer.status)?;
    // One pass over the answer's text where the layout allows it; an answer that pass does
    // not decide (one it would refuse among them) takes the tree path below.
    if let Some((body, found)) = layout.one_pass(&answer.body, |f| trace.grants(f)) {
        record_subjects(trace, found);
        return Ok(UpstreamAnswer {
            status: StatusCode::OK,
            content_type: Some(HeaderValue::from_static("application/json")),
            body: Bytes::from(body),
        });
    }
    let mut value = adapters::layout::parse_answer(&answer.body)
        .map_err(|why| Refusal::new(Code::UpstreamLayoutViolation, format!("source {source}: the answer {why}")))?;
    layout
        .check(&value)
        .map_err(|why| Refusal::new(Code::UpstreamLayoutViolation, format!("source {source}: {why}")))?;
    if let Some(rule) = &layout.def().fallback {
        fall_back(rule, request, &mut value, scope)?;
    }
    let reduced = layout.minimise(value, |f| trace.grants(f));
    record_subjects(trace, layout.subjects(&reduced));
    let body = adapters::layout::write_answer(&reduced, answer.body.len());
    Ok(UpstreamAnswer {
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static("application/json")),
        body: Bytes::from(body),
    })
}
