//! The web console: server-rendered pages on the control listener for data owners, privacy
//! offices and the integrator.
//!
//! The console has no authority of its own. A page reads what it shows by calling the control
//! plane's own operations ([`ControlPlane::call`]) as the caller — the organisation of the
//! client certificate on this connection — so the role table ([`crate::admin::authority`])
//! decides what every page shows, exactly as for the API; a form turns into the same request
//! the API takes, so every action is the same audited change. The console adds no route to the
//! data plane and nothing on its path.
//!
//! Forms are protected against cross-site requests: the browser presents the client
//! certificate to any site that makes it post here, so every form carries a token bound to the
//! caller's certificate (an HMAC under a key drawn when the gateway starts), and a post whose
//! `Origin` or `Sec-Fetch-Site` shows another site is refused with `FORM_REJECTED`. Pages run
//! no script; the `Content-Security-Policy` forbids scripts, inline styles, frames and form
//! targets elsewhere.

mod i18n;
mod pages;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};

pub use i18n::{CATALOGUE, Lang};

use crate::admin::ControlPlane;
use crate::error::{Body, Code, Refusal};
use crate::pipeline::identity::Caller;
use crate::policy::PolicyHandle;

/// Where the console lives on the control listener.
pub const PREFIX: &str = "/console";
const CSS: &str = include_str!("console.css");
/// A form's body: URL encoding can triple a registration's XSD, which the API then bounds
/// as it bounds any body (16 KiB of JSON).
const MAX_FORM: usize = 64 * 1024;
/// No script at all, styles only from the console's own sheet, forms only back to it.
pub const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` is the console's.
pub fn owns(path: &str) -> bool {
    path == PREFIX || path.starts_with("/console/")
}

/// The console over one control plane.
#[derive(Debug)]
pub struct Console {
    plane: Arc<ControlPlane>,
    policy: Arc<PolicyHandle>,
    /// Signs the forms' tokens; drawn at start, so a form from before a restart is refused.
    key: ring::hmac::Key,
    /// The operations listener's metrics, linked from the integrator's page.
    metrics_url: Option<String>,
    /// The public listener's port: the registered services' WSDL and OpenAPI documents are
    /// linked there, on the host name the browser used for the console.
    public_port: Option<u16>,
}

/// What a control-plane operation answered.
#[derive(Debug)]
struct Api {
    status: StatusCode,
    json: Value,
}

impl Api {
    fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The refusal's stable code and detail.
    fn problem(&self) -> (String, String) {
        let s = |k: &str| self.json.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        (s("code"), s("detail"))
    }

    fn items(&self) -> Vec<Value> {
        self.json.get("items").and_then(Value::as_array).cloned().unwrap_or_default()
    }
}

/// Who is looking, as the pages need it.
#[derive(Debug)]
pub(crate) struct Viewer {
    pub lang: Lang,
    /// The enterprise number, digits only.
    pub kbo: String,
    pub name: Option<String>,
    pub kind: Option<String>,
    /// The token the forms carry.
    pub token: String,
    /// Days until the certificate on this connection expires.
    pub cert_days: i64,
    /// The public listener as this browser reaches it (`https://host:port`), when there is one.
    pub public_base: Option<String>,
    /// The register as `GET /organisations` shows it to this caller (read once a page).
    register: Api,
}

impl Viewer {
    pub fn t(&self, key: &'static str) -> &'static str {
        self.lang.t(key)
    }

    pub fn integrator(&self) -> bool {
        self.kind.as_deref() == Some("integrator")
    }
}

/// What a path segment keeps as it is: RFC 3986's unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A percent-encoded path segment (references such as `DIV/CONV/2023/0042` hold slashes).
pub(crate) fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The fields of an `application/x-www-form-urlencoded` body.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    std::str::from_utf8(body)
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// A submitted form.
#[derive(Debug)]
struct Form(Vec<(String, String)>);

impl Form {
    /// The trimmed value of `name`, when given and not empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }
}

impl Console {
    pub fn new(
        plane: Arc<ControlPlane>,
        policy: Arc<PolicyHandle>,
        metrics_url: Option<String>,
        public_port: Option<u16>,
    ) -> anyhow::Result<Self> {
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| anyhow::anyhow!("console: no randomness for the form key"))?;
        Ok(Console { plane, policy, key, metrics_url, public_port })
    }

    /// Calls the control plane as `caller`: the page sees what the operation shows this caller.
    async fn api(&self, caller: &Caller, method: Method, path: &str, body: Option<Value>) -> Api {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes).map_err(|never| match never {}).boxed());
        let Ok(req) = req else {
            return Api {
                status: StatusCode::BAD_REQUEST,
                json: json!({ "code": "REQUEST_INVALID", "detail": "bad path" }),
            };
        };
        let resp = self.plane.call(req, caller).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        Api { status, json: serde_json::from_slice(&body).unwrap_or(Value::Null) }
    }

    fn token(&self, fingerprint: &str) -> String {
        crate::audit::format::hex(ring::hmac::sign(&self.key, fingerprint.as_bytes()).as_ref())
    }

    fn token_valid(&self, fingerprint: &str, token: &str) -> bool {
        crate::audit::format::unhex(token)
            .is_some_and(|tag| ring::hmac::verify(&self.key, fingerprint.as_bytes(), &tag).is_ok())
    }

    /// Who is looking: its organisation as the register shows it to this caller.
    async fn viewer(&self, caller: &Caller, lang: Lang, host: Option<&str>) -> Result<Viewer, Refusal> {
        let org = caller.org()?;
        let mut d = [0u8; 10];
        let kbo = org.kbo.digits(&mut d).to_owned();
        let register = self.api(caller, Method::GET, "/organisations", None).await;
        let me = register.json["items"].as_array().and_then(|a| a.iter().find(|o| o["kbo"] == kbo.as_str()));
        Ok(Viewer {
            lang,
            name: me.and_then(|o| o["name"].as_str()).map(str::to_owned),
            kind: me.and_then(|o| o["kind"].as_str()).map(str::to_owned),
            token: self.token(&org.fingerprint_hex()),
            cert_days: (org.not_after - self.policy.now_secs()).div_euclid(86_400),
            public_base: self.public_port.zip(host).map(|(port, host)| format!("https://{host}:{port}")),
            kbo,
            register,
        })
    }

    /// Answers a request under [`PREFIX`].
    pub async fn handle(&self, req: Request<Incoming>, caller: &Caller) -> Response<Body> {
        let lang = Lang::from_accept(req.headers().get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()));
        let path = req.uri().path().to_owned();
        if path == "/console/static/console.css" {
            return secure(respond(StatusCode::OK, "text/css; charset=utf-8", Bytes::from_static(CSS.as_bytes())));
        }
        let host = host_name(&req);
        let viewer = match self.viewer(caller, lang, host.as_deref()).await {
            Ok(v) => v,
            Err(r) => return secure(refused(lang, &r)),
        };
        let resp = match *req.method() {
            Method::GET => self.page(&path, caller, &viewer).await,
            Method::POST => self.submit(req, &path, caller, &viewer).await.unwrap_or_else(|r| refused(lang, &r)),
            _ => refused(lang, &Refusal::method_not_allowed("console pages take GET, and its forms POST", "GET, POST")),
        };
        secure(resp)
    }

    /// A page.
    async fn page(&self, path: &str, caller: &Caller, v: &Viewer) -> Response<Body> {
        let rest = path.strip_prefix(PREFIX).unwrap_or_default();
        let parts: Vec<String> = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        match parts.as_slice() {
            [] => {
                let version = self.policy.version();
                html(StatusCode::OK, pages::home(v, version))
            }
            ["sources"] => {
                let sources = self.api(caller, Method::GET, "/sources", None).await;
                let services = self.api(caller, Method::GET, "/services", None).await;
                if !sources.ok() {
                    return self.failed(v, &sources);
                }
                let mine: Vec<Value> = sources
                    .items()
                    .into_iter()
                    .filter(|s| v.integrator() || s["owner"].as_str() == Some(v.kbo.as_str()))
                    .collect();
                if mine.is_empty() {
                    return html(StatusCode::FORBIDDEN, pages::forbidden(v, v.t("sources_forbidden")));
                }
                html(StatusCode::OK, pages::sources(v, &mine, &services.items()))
            }
            ["instruments"] => {
                let list = self.api(caller, Method::GET, "/instruments", None).await;
                if !list.ok() {
                    return self.failed(v, &list);
                }
                html(StatusCode::OK, pages::instruments(v, &list.items()))
            }
            ["instruments", reference] => {
                let ins = self.api(caller, Method::GET, &format!("/instruments/{}", seg(reference)), None).await;
                if !ins.ok() {
                    return self.failed(v, &ins);
                }
                html(StatusCode::OK, pages::instrument(v, &ins.json, &v.register.items()))
            }
            ["exceptional-accesses"] => {
                let list = self.api(caller, Method::GET, "/exceptional-accesses", None).await;
                if !list.ok() {
                    return self.failed(v, &list);
                }
                html(StatusCode::OK, pages::exceptional(v, &list.items(), self.policy.now_secs()))
            }
            ["audit-requests"] => {
                let list = self.api(caller, Method::GET, "/audit/requests", None).await;
                if !list.ok() {
                    return self.failed(v, &list);
                }
                html(StatusCode::OK, pages::audit_requests(v, &list.items()))
            }
            ["audit-requests", id, "results"] => {
                // The result as the API gives it (its read is audited there), to download.
                let path = format!("/audit/requests/{}/results?limit=10000", seg(id));
                let a = self.api(caller, Method::GET, &path, None).await;
                if !a.ok() {
                    return self.failed(v, &a);
                }
                let mut r = respond(StatusCode::OK, "application/json", Bytes::from(a.json.to_string()));
                let name: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
                if let Ok(h) = HeaderValue::from_str(&format!("attachment; filename=\"audit-request-{name}.json\"")) {
                    r.headers_mut().insert(header::CONTENT_DISPOSITION, h);
                }
                r
            }
            ["organisations"] => {
                if !v.register.ok() {
                    return self.failed(v, &v.register);
                }
                html(StatusCode::OK, pages::organisations(v, &v.register.items(), self.policy.now_secs()))
            }
            ["activity"] => {
                let a = self.api(caller, Method::GET, "/activity", None).await;
                if !a.ok() {
                    return self.failed(v, &a);
                }
                html(StatusCode::OK, pages::activity(v, &a.json, self.metrics_url.as_deref()))
            }
            ["publication"] => {
                // What the public listener publishes: public by nature, shown to anyone here.
                let doc =
                    crate::publication::document(&self.policy.model(), &self.policy.current(), self.policy.now_secs());
                html(StatusCode::OK, pages::publication(v, &doc))
            }
            ["changes"] => {
                // The last 100 changes.
                let after = self.policy.version().saturating_sub(100);
                let list = self.api(caller, Method::GET, &format!("/changes?after={after}&limit=100"), None).await;
                if !list.ok() {
                    return self.failed(v, &list);
                }
                let changes = list.json["changes"].as_array().cloned().unwrap_or_default();
                html(StatusCode::OK, pages::changes(v, &changes))
            }
            _ => html(StatusCode::NOT_FOUND, pages::not_found(v)),
        }
    }

    /// The page for an operation the control plane refused.
    fn failed(&self, v: &Viewer, api: &Api) -> Response<Body> {
        let (code, detail) = api.problem();
        if api.status == StatusCode::FORBIDDEN {
            return html(StatusCode::FORBIDDEN, pages::forbidden(v, &detail));
        }
        html(api.status, pages::refusal(v, &code, &detail, None))
    }

    /// A submitted form: checked to come from a console page for this caller, turned into the
    /// API's request, and answered by a redirect to the page it came from, or by the refusal.
    async fn submit(
        &self,
        req: Request<Incoming>,
        path: &str,
        caller: &Caller,
        v: &Viewer,
    ) -> Result<Response<Body>, Refusal> {
        let form_rejected = |detail: String| Refusal::new(Code::FormRejected, detail);
        let headers = req.headers();
        if headers
            .get("sec-fetch-site")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|s| s != "same-origin" && s != "none")
        {
            return Err(form_rejected("the form was sent from another site".into()));
        }
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok()) {
            if origin != format!("https://{}", authority(&req).unwrap_or_default()) {
                return Err(form_rejected(format!("the form was sent from another origin ({origin})")));
            }
        }
        let is_form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(Refusal::new(
                Code::RequestInvalid,
                "a console form is sent as application/x-www-form-urlencoded",
            ));
        }
        let body = Limited::new(req.into_body(), MAX_FORM)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|_| Refusal::new(Code::BodyTooLarge, format!("a form holds at most {MAX_FORM} bytes")))?;
        let form = Form(form_fields(&body));
        let fingerprint = caller.org().map(|o| o.fingerprint_hex()).unwrap_or_default();
        if !form.get("csrf").is_some_and(|t| self.token_valid(&fingerprint, t)) {
            return Err(form_rejected("the form's token is missing or not this certificate's; reload the page".into()));
        }
        let (api_path, body, back) = action(path, &form).ok_or_else(|| {
            Refusal::new(Code::ResourceUnknown, "no console form posts here, or a field it needs is empty")
        })?;
        let answer = self.api(caller, Method::POST, &api_path, Some(body)).await;
        if answer.ok() {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SEE_OTHER;
            if let Ok(loc) = HeaderValue::from_str(&back) {
                r.headers_mut().insert(header::LOCATION, loc);
            }
            return Ok(r);
        }
        let (code, detail) = answer.problem();
        Ok(html(answer.status, pages::refusal(v, &code, &detail, Some(&back))))
    }
}

/// The API operation a console form stands for: its path, its JSON body and the page to go
/// back to. The fields are the API's; empty ones are left out, and the API refuses what is
/// missing, as it would for any client.
fn action(path: &str, f: &Form) -> Option<(String, Value, String)> {
    let rest = path.strip_prefix("/console/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let opt = |name: &str| f.get(name).map(|s| Value::String(s.to_owned()));
    let put = |body: &mut Value, key: &str, value: Option<Value>| {
        if let Some(v) = value {
            body[key] = v;
        }
    };
    match parts.as_slice() {
        ["instruments", reference, "transitions"] => {
            let reference = percent_decode_str(reference).decode_utf8_lossy().into_owned();
            let mut body = json!({ "to": f.get("to")? });
            put(&mut body, "reason", opt("reason"));
            put(&mut body, "text_version", opt("text_version"));
            put(&mut body, "layout_version", opt("layout_version"));
            if let Some(title) = f.get("document_title") {
                let mut d = json!({ "title": title });
                put(&mut d, "reference", opt("document_reference"));
                body["documents"] = json!([d]);
            }
            if let (Some(name), Some(capacity)) = (f.get("signatory_name"), f.get("signatory_capacity")) {
                body["signatory"] = json!({ "name": name, "capacity": capacity });
            }
            if let Some(name) = f.get("contact_name") {
                let mut c = json!({ "name": name });
                put(&mut c, "email", opt("contact_email"));
                put(&mut c, "phone", opt("contact_phone"));
                body["contact"] = c;
            }
            Some((
                format!("/instruments/{}/transitions", seg(&reference)),
                body,
                format!("/console/instruments/{}", seg(&reference)),
            ))
        }
        ["instruments", reference, "adhesions", org, "transitions"] => {
            let reference = percent_decode_str(reference).decode_utf8_lossy().into_owned();
            let mut body = json!({ "to": f.get("to")? });
            put(&mut body, "reason", opt("reason"));
            if let Some(title) = f.get("document_title") {
                let mut d = json!({ "title": title });
                put(&mut d, "reference", opt("document_reference"));
                body["documents"] = json!([d]);
            }
            Some((
                format!("/instruments/{}/adhesions/{}/transitions", seg(&reference), seg(org)),
                body,
                format!("/console/instruments/{}", seg(&reference)),
            ))
        }
        ["services"] => {
            let mut exposure = json!({
                "method": "POST", "path": f.get("path")?, "upstream_path": f.get("upstream_path")?,
                "dialect": "soap",
                "layout": { "xsd": f.get("xsd")?, "request_element": f.get("request_element")?,
                            "response_element": f.get("response_element")? },
                "catalogue": catalogue(f.get("catalogue")?),
            });
            put(&mut exposure, "subject", opt("subject"));
            let body = json!({ "id": f.get("id")?, "source": f.get("source")?, "exposure": exposure });
            Some(("/services".to_owned(), body, "/console/sources".to_owned()))
        }
        ["exceptional-accesses", id, step @ ("advice" | "remark" | "withdraw")] => {
            let id = percent_decode_str(id).decode_utf8_lossy().into_owned();
            let body = match *step {
                "advice" => json!({ "reference": f.get("reference")?, "favourable": f.get("favourable")? == "true" }),
                "remark" => json!({ "remark": f.get("remark")? }),
                _ => json!({ "reason": f.get("reason")? }),
            };
            Some((format!("/exceptional-accesses/{}/{step}", seg(&id)), body, "/console/exceptional-accesses".into()))
        }
        ["audit-requests", id, "advice"] => {
            let id = percent_decode_str(id).decode_utf8_lossy().into_owned();
            let body = json!({ "favourable": f.get("favourable")? == "true", "reason": f.get("reason")? });
            Some((format!("/audit/requests/{}/advice", seg(&id)), body, "/console/audit-requests".into()))
        }
        _ => None,
    }
}

/// The catalogue of a registration as the form gives it, one entry a line: `field: Path` (a
/// grantable field), `Path` (always kept), either followed by `[person]` or `[organisation]`
/// when the part identifies a data subject.
fn catalogue(text: &str) -> Value {
    let entries: Vec<Value> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|line| {
            let (rest, subject) = match line.strip_suffix(']').and_then(|l| l.rsplit_once('[')) {
                Some((rest, subject)) => (rest.trim(), Some(subject.trim())),
                None => (line, None),
            };
            let mut entry = match rest.split_once(':') {
                Some((field, path)) => json!({ "field": field.trim(), "path": path.trim() }),
                None => json!({ "path": rest }),
            };
            if let Some(subject) = subject {
                entry["subject"] = json!(subject);
            }
            entry
        })
        .collect();
    Value::Array(entries)
}

/// Where the browser sent the request (`host:port`): `Host`, or the HTTP/2 authority.
fn authority<B>(req: &Request<B>) -> Option<&str> {
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().authority().map(|a| a.as_str()))
}

/// The host name the browser used, without the port.
fn host_name<B>(req: &Request<B>) -> Option<String> {
    let authority: http::uri::Authority = authority(req)?.parse().ok()?;
    let host = authority.host();
    // Only a name or an address: nothing a link could be turned with.
    host.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)).then(|| host.to_owned())
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The page of a refusal by the console itself (the certificate, the form, the method).
fn refused(lang: Lang, r: &Refusal) -> Response<Body> {
    let mut resp = html(r.code.status(), pages::refused(lang, r.code.as_str(), &r.detail));
    if let Some(allow) = r.allow {
        resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    resp
}

fn html(status: StatusCode, page: maud::Markup) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", Bytes::from(page.into_string()))
}

/// The headers every console answer carries.
fn secure(mut r: Response<Body>) -> Response<Body> {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        let f = Form(form_fields(b"to=convention-sent&reason=signed+copy%20%C3%A9&empty=&csrf=ab"));
        assert_eq!(f.get("to"), Some("convention-sent"));
        assert_eq!(f.get("reason"), Some("signed copy é"));
        assert_eq!(f.get("empty"), None);
        assert_eq!(f.get("missing"), None);
    }

    #[test]
    fn a_transition_form_becomes_the_api_body() {
        let f = Form(form_fields(
            b"to=signed-by-beneficiary&signatory_name=An&signatory_capacity=Director&contact_name=Desk&contact_email=d%40x",
        ));
        let (path, body, back) = action("/console/instruments/DIV%2FCONV%2F1/transitions", &f).unwrap();
        assert_eq!(path, "/instruments/DIV%2FCONV%2F1/transitions");
        assert_eq!(back, "/console/instruments/DIV%2FCONV%2F1");
        assert_eq!(
            body,
            json!({ "to": "signed-by-beneficiary", "signatory": { "name": "An", "capacity": "Director" },
                    "contact": { "name": "Desk", "email": "d@x" } })
        );
        assert!(action("/console/instruments/X/elsewhere", &f).is_none());
        assert!(action("/console/audit-requests/1/advice", &f).is_none(), "favourable and reason are required");
    }

    #[test]
    fn a_registration_form_becomes_the_api_body() {
        let f = Form(form_fields(
            b"source=div&id=div.history&path=%2Fdiv%2Fhistory&upstream_path=%2Fh&request_element=Rq&response_element=Rs\
              &subject=none&xsd=%3Cxs%3Aschema%2F%3E&catalogue=Plate%0D%0Aperiods%3A+Entry%2FFrom%0D%0A\
              Entry%2FHolder%2FId%2FNiss+%5Bperson%5D%0D%0A",
        ));
        let (path, body, back) = action("/console/services", &f).unwrap();
        assert_eq!((path.as_str(), back.as_str()), ("/services", "/console/sources"));
        assert_eq!(
            body,
            json!({ "id": "div.history", "source": "div", "exposure": {
                "method": "POST", "path": "/div/history", "upstream_path": "/h", "dialect": "soap", "subject": "none",
                "layout": { "xsd": "<xs:schema/>", "request_element": "Rq", "response_element": "Rs" },
                "catalogue": [
                    { "path": "Plate" },
                    { "field": "periods", "path": "Entry/From" },
                    { "path": "Entry/Holder/Id/Niss", "subject": "person" },
                ] } })
        );
    }

    #[test]
    fn the_catalogue_has_english_for_every_key_once() {
        let mut keys: Vec<&str> = CATALOGUE.iter().map(|r| r.0).collect();
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key is in the catalogue twice");
        assert!(CATALOGUE.iter().all(|r| !r.1.is_empty()));
        let untranslated: Vec<&str> =
            CATALOGUE.iter().filter(|r| r.2.is_none() || r.3.is_none()).map(|r| r.0).collect();
        assert!(untranslated.is_empty(), "without French or Dutch: {untranslated:?}");
        assert_eq!(Lang::from_accept(Some("nl-BE,nl;q=0.9,en;q=0.8")), Lang::Nl);
        assert_eq!(Lang::from_accept(Some("de-DE, fr;q=0.5")), Lang::Fr);
        assert_eq!(Lang::from_accept(None), Lang::En);
        assert_eq!(Lang::Nl.t("end_user"), "Eindgebruiker");
        assert_eq!(Lang::Fr.t("no-such-key"), "no-such-key", "a key the catalogue lacks shows as itself");
    }

    #[test]
    fn every_key_the_pages_name_is_in_the_catalogue() {
        let pages = include_str!("pages.rs");
        let mut named = 0;
        for part in pages.split(".t(\"").skip(1) {
            let key = part.split('"').next().unwrap();
            assert!(CATALOGUE.iter().any(|r| r.0 == key), "{key} is not in the catalogue");
            named += 1;
        }
        // The tables' columns.
        for part in pages.split("head(v, &[").skip(1) {
            for key in part.split(']').next().unwrap().split(',') {
                let key = key.trim().trim_matches('"');
                assert!(CATALOGUE.iter().any(|r| r.0 == key), "{key} is not in the catalogue");
                named += 1;
            }
        }
        // The navigation's and the evidence form's keys, given as data.
        for key in ["home", "sources", "instruments", "exceptional", "audit_requests", "organisations", "contact_phone"]
        {
            assert!(CATALOGUE.iter().any(|r| r.0 == key), "{key}");
        }
        assert!(named > 50, "the pages name their words through the catalogue ({named})");
    }
}
