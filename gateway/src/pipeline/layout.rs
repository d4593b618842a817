//! Steps 8 and 10 — the imposed layout, both ways, and minimisation.
//!
//! In: a service whose layout takes no request body (the JSON look-ups, which carry their
//! subject in the envelope) refuses one with `LAYOUT_VIOLATION`, before the source is called.
//! Out: the source's answer must be JSON following the published schema, else
//! `UPSTREAM_LAYOUT_VIOLATION` and nothing leaves; then it is reduced to the granted fields
//! (proportionality) and the subjects that leave with it are added to the audit record.
//!
//! The SOAP/XML layouts (DIV) come with their adapter.

use adapters::layout::SubjectType;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::audit::Trace;
use super::forward::UpstreamAnswer;
use super::route::Route;
use crate::audit::SubjectRef;
use crate::error::{Code, Refusal};

pub fn check_request(route: &Route, body: &Bytes) -> Result<(), Refusal> {
    if route.layout.is_some() && !body.is_empty() {
        return Err(Refusal::new(
            Code::LayoutViolation,
            "this service takes no request body: the subject goes in X-Subject",
        ));
    }
    Ok(())
}

pub fn check_and_minimise(route: &Route, answer: UpstreamAnswer, trace: &mut Trace) -> Result<UpstreamAnswer, Refusal> {
    let Some(layout) = &route.layout else { return Ok(answer) };
    let source = route.service.source;
    if answer.status == StatusCode::NOT_FOUND {
        return Err(Refusal::new(Code::SubjectNotFound, format!("source {source} holds no data about this subject")));
    }
    if answer.status != StatusCode::OK {
        return Err(Refusal::new(
            Code::UpstreamUnavailable,
            format!("source {source} answered HTTP {}", answer.status.as_u16()),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(&answer.body).map_err(|_| {
        Refusal::new(Code::UpstreamLayoutViolation, format!("source {source} answered something that is not JSON"))
    })?;
    layout
        .check(&value)
        .map_err(|why| Refusal::new(Code::UpstreamLayoutViolation, format!("source {source}: {why}")))?;
    let granted = trace.granted_fields();
    let reduced = layout.minimise(value, |f| granted.iter().any(|g| g == f));
    let found = layout
        .subjects(&reduced)
        .into_iter()
        .map(|(kind, id)| match kind {
            SubjectType::Person => SubjectRef::Person(id),
            SubjectType::Organisation => SubjectRef::Organisation(id),
        })
        .collect();
    trace.answer_subjects(found);
    let body = serde_json::to_vec(&reduced).map_err(|_| Refusal::new(Code::Internal, "answer not re-encoded"))?;
    Ok(UpstreamAnswer {
        status: StatusCode::OK,
        content_type: Some(HeaderValue::from_static("application/json")),
        body: Bytes::from(body),
    })
}
