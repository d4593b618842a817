//! The control plane's routes as data: the router matches against this table, and a test
//! checks that the OpenAPI document (`gateway/openapi.json`, served at `/openapi.json`)
//! describes exactly these operations.

use std::borrow::Cow;

use crate::error::{Code, Refusal};

/// Every control-plane operation: method and path template.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/openapi.json"),
    ("POST", "/audit/queries"),
    ("GET", "/audit/report"),
    ("GET", "/audit/requesters"),
    ("POST", "/audit/requesters"),
    ("POST", "/audit/requesters/{id}/end"),
    ("GET", "/audit/requests"),
    ("POST", "/audit/requests"),
    ("GET", "/audit/requests/{id}"),
    ("POST", "/audit/requests/{id}/advice"),
    ("GET", "/audit/requests/{id}/results"),
    ("GET", "/consents"),
    ("POST", "/consents"),
    ("POST", "/consents/{id}/revoke"),
    ("POST", "/consents/{id}/revalidate"),
    ("GET", "/consents/due"),
    ("POST", "/consents/{id}/invite"),
    ("GET", "/organisations"),
    ("POST", "/organisations"),
    ("POST", "/organisations/{kbo}/certificates"),
    ("GET", "/sources"),
    ("POST", "/sources"),
    ("GET", "/services"),
    ("POST", "/services"),
    ("GET", "/instruments"),
    ("POST", "/instruments"),
    ("GET", "/instruments/{reference}"),
    ("POST", "/instruments/{reference}/transitions"),
    ("POST", "/instruments/{reference}/advice"),
    ("POST", "/instruments/{reference}/adhesions"),
    ("POST", "/instruments/{reference}/adhesions/{org}/transitions"),
    ("GET", "/roles"),
    ("POST", "/roles"),
    ("POST", "/roles/withdraw"),
    ("GET", "/exceptional-accesses"),
    ("POST", "/exceptional-accesses"),
    ("POST", "/exceptional-accesses/{id}/advice"),
    ("POST", "/exceptional-accesses/{id}/remark"),
    ("POST", "/exceptional-accesses/{id}/withdraw"),
    ("GET", "/dam-sheets"),
    ("POST", "/dam-sheets"),
    ("POST", "/dam-sheets/{id}/ict-advice"),
    ("POST", "/dam-sheets/{id}/advice"),
    ("POST", "/dam-sheets/{id}/remark"),
    ("POST", "/dam-sheets/{id}/withdraw"),
    ("GET", "/changes"),
    ("GET", "/policy/export"),
    ("POST", "/policy/import"),
    ("POST", "/reload"),
    ("GET", "/activity"),
];

/// A matched route: its template and the decoded path parameters.
#[derive(Debug)]
pub struct Matched {
    pub method: &'static str,
    pub template: &'static str,
    pub params: Vec<String>,
}

/// Finds the route for `method` and `path`; path parameters are percent-decoded (an instrument
/// reference such as `DIV/CONV/2023/0042` travels as `DIV%2FCONV%2F2023%2F0042`).
pub fn find(method: &str, path: &str) -> Result<Matched, Refusal> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (mut get, mut post) = (false, false);
    for (m, template) in ROUTES {
        let parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut params = Vec::new();
        let fits = parts.iter().zip(&segments).all(|(p, s)| {
            if p.starts_with('{') {
                match percent_encoding::percent_decode_str(s).decode_utf8() {
                    Ok(d) if !d.is_empty() => {
                        params.push(d.into_owned());
                        true
                    }
                    _ => false,
                }
            } else {
                p == s
            }
        });
        if !fits {
            continue;
        }
        if *m == method {
            return Ok(Matched { method: m, template, params });
        }
        get |= *m == "GET";
        post |= *m == "POST";
    }
    let detail = "this control-plane resource does not take this method";
    match (get, post) {
        (true, true) => Err(Refusal::method_not_allowed(detail, "GET, POST")),
        (true, false) => Err(Refusal::method_not_allowed(detail, "GET")),
        (false, true) => Err(Refusal::method_not_allowed(detail, "POST")),
        (false, false) => Err(Refusal::new(Code::ServiceUnknown, "no control-plane resource at this path")),
    }
}

/// The value of `name` in a query string, percent-decoded.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn templates_match_with_decoded_parameters() {
        let m = find("POST", "/instruments/DIV%2FCONV%2F2023%2F0042/transitions").unwrap();
        assert_eq!(m.template, "/instruments/{reference}/transitions");
        assert_eq!(m.params, ["DIV/CONV/2023/0042"]);
        assert_eq!(find("GET", "/instruments").unwrap().template, "/instruments");
        let refused = find("DELETE", "/instruments").unwrap_err();
        assert_eq!((refused.code, refused.allow), (Code::MethodNotAllowed, Some("GET, POST")));
        assert_eq!(find("GET", "/reload").unwrap_err().allow, Some("POST"));
        assert_eq!(find("GET", "/nothing/here").unwrap_err().code, Code::ServiceUnknown);
        assert_eq!(find("POST", "/instruments//transitions").unwrap_err().code, Code::ServiceUnknown);
        assert_eq!(query_param(Some("after=3&org=0411330181"), "org").as_deref(), Some("0411330181"));
        assert_eq!(query_param(Some("after=3"), "org"), None);
    }
}
