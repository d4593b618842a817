//! The hostile-input corpus: every case expects its precise refusal, an audit record where a
//! request reached the pipeline, and no call to any source. All six sources point at one
//! counting upstream; it must see nothing until the last, well-formed call.
//!
//! Malformed and truncated HTTP, huge headers, bodies over the limit, header injection,
//! smuggling attempts; XML with DOCTYPE and entities, deep nesting, huge and repeated
//! attributes; JSON with deep nesting, repeated keys, huge numbers, wrong types; invalid
//! NISS/BIS, KBO, VIN, plate and vCode wherever they are accepted; path traversal and
//! percent-encoding in the route; another organisation's legal instrument; an end-user header
//! spoofing a role; control-plane calls with a data-plane certificate. Slow-loris clients get
//! their own test below.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::audit::verify::read_records;
use gateway::demo::{BILLION_LAUGHS, DIV_CALLER, DIV_LEGAL_BASIS, DIV_PURPOSE};
use http::{Method, StatusCode};
use tests::{ASSOC_CALLER, ASSOC_LEGAL_BASIS, ASSOC_PURPOSE, Harness, SIGEDIS_CALLER, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SOURCES: [&str; 6] = ["DIV", "SIGEDIS", "ASSOCIATIONS", "ACCOUNTS", "CONTACTS", "RN"];
const MAX_BODY: usize = 64 * 1024;

/// One hostile call through a real HTTP client: who, what, and the refusal it must get.
struct Case {
    id: &'static str,
    who: &'static str,
    method: Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
    /// Words the refusal's detail must contain (it names what is wrong).
    detail: &'static str,
}

fn case(id: &'static str, who: &'static str, method: Method, path: &str) -> Case {
    Case {
        id,
        who,
        method,
        path: path.to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
        status: StatusCode::OK,
        code: "",
        detail: "",
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    fn expect(mut self, status: StatusCode, code: &'static str, detail: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self.detail = detail;
        self
    }
}

fn association_call(id: &'static str, who: &'static str, subject: &str) -> Case {
    case(id, who, Method::GET, "/associations/association")
        .header("x-legal-basis", ASSOC_LEGAL_BASIS)
        .header("x-purpose", ASSOC_PURPOSE)
        .header("x-subject", subject)
}

fn niss_call(id: &'static str, service: &str, subject: &str) -> Case {
    let (who, path, method, basis, purpose, body) = match service {
        "sigedis" => {
            (SIGEDIS_CALLER, "/sigedis/pensions", Method::GET, tests::SIGEDIS_LEGAL_BASIS, tests::SIGEDIS_PURPOSE, "")
        }
        "accounts" => (
            ASSOC_CALLER,
            "/accounts/iban",
            Method::POST,
            gateway::demo::ACCOUNTS_LEGAL_BASIS,
            gateway::demo::ACCOUNTS_PURPOSE,
            r#"{"publicService":"JOBBONUS"}"#,
        ),
        "contacts" => (
            ASSOC_CALLER,
            "/contacts/contact",
            Method::POST,
            gateway::demo::CONTACTS_LEGAL_BASIS,
            gateway::demo::CONTACTS_PURPOSE,
            r#"{"publicService":"JOBBONUS"}"#,
        ),
        _ => ("municipality", "/rn/person", Method::GET, "BOSA/LRA/2024", "LRA_REGISTRATION", ""),
    };
    case(id, who, method, path)
        .header("x-legal-basis", basis)
        .header("x-purpose", purpose)
        .header("x-subject", subject)
        .header("x-end-user", "lra-officer-1")
        .body(body)
}

fn div_call(id: &'static str, body: impl Into<Vec<u8>>) -> Case {
    case(id, DIV_CALLER, Method::POST, "/div/vehicle")
        .header("x-legal-basis", DIV_LEGAL_BASIS)
        .header("x-purpose", DIV_PURPOSE)
        .body(body)
        .expect(StatusCode::INTERNAL_SERVER_ERROR, "LAYOUT_VIOLATION", "")
}

fn rn_search(id: &'static str, body: impl Into<Vec<u8>>) -> Case {
    case(id, "municipality", Method::POST, "/rn/persons/search")
        .header("x-legal-basis", "BOSA/LRA/2024")
        .header("x-purpose", "LRA_REGISTRATION")
        .header("x-end-user", "lra-officer-1")
        .body(body)
        .expect(StatusCode::UNPROCESSABLE_ENTITY, "LAYOUT_VIOLATION", "")
}

fn soap(inner: &str) -> String {
    format!(
        r#"<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><GetVehicleRequest xmlns="{}">{inner}</GetVehicleRequest></soap:Body></soap:Envelope>"#,
        adapters::div::NS
    )
}

fn corpus() -> Vec<Case> {
    use StatusCode as S;
    let v = tests::vcode();
    let p = tests::person();
    let mut c = vec![
        // --- The route: traversal, encodings, case, separators.
        association_call("path-dotdot", ASSOC_CALLER, &v).expect(S::NOT_FOUND, "SERVICE_UNKNOWN", ""),
        association_call("path-dot", ASSOC_CALLER, &v).expect(S::NOT_FOUND, "SERVICE_UNKNOWN", ""),
        association_call("path-encoded-slash", ASSOC_CALLER, &v).expect(S::NOT_FOUND, "SERVICE_UNKNOWN", ""),
        association_call("path-encoded-letter", ASSOC_CALLER, &v).expect(S::NOT_FOUND, "SERVICE_UNKNOWN", ""),
        association_call("path-nul", ASSOC_CALLER, &v).expect(S::NOT_FOUND, "SERVICE_UNKNOWN", ""),
        association_call("path-double-slash", ASSOC_CALLER, &v).expect(S::NOT_FOUND, "SERVICE_UNKNOWN", ""),
        association_call("path-params", ASSOC_CALLER, &v).expect(S::NOT_FOUND, "SERVICE_UNKNOWN", ""),
        association_call("path-case", ASSOC_CALLER, &v).expect(S::NOT_FOUND, "SERVICE_UNKNOWN", ""),
        association_call("path-trailing-dotdot", ASSOC_CALLER, &v).expect(S::NOT_FOUND, "SERVICE_UNKNOWN", ""),
        // --- The envelope: repeated, oversized, non-ASCII headers.
        association_call("two-legal-bases", ASSOC_CALLER, &v).header("x-legal-basis", "VL/PROT/2022/018").expect(
            S::BAD_REQUEST,
            "ENVELOPE_INVALID",
            "more than once",
        ),
        association_call("two-subjects", ASSOC_CALLER, &v).header("x-subject", "V0001002").expect(
            S::BAD_REQUEST,
            "ENVELOPE_INVALID",
            "more than once",
        ),
        association_call("long-end-user", ASSOC_CALLER, &v).header("x-end-user", "u".repeat(4000)).expect(
            S::BAD_REQUEST,
            "ENVELOPE_INVALID",
            "longer than",
        ),
        // --- Legal basis: another organisation's instrument, unknown and look-alike ones.
        association_call("foreign-instrument", "agency-b", &v).expect(S::FORBIDDEN, "LEGAL_BASIS_NOT_APPLICABLE", ""),
        case("unknown-instrument", ASSOC_CALLER, Method::GET, "/associations/association")
            .header("x-legal-basis", "VL/PROT/2099/999")
            .header("x-purpose", ASSOC_PURPOSE)
            .header("x-subject", v.clone())
            .expect(S::FORBIDDEN, "NO_LEGAL_BASIS", ""),
        case("lower-case-instrument", ASSOC_CALLER, Method::GET, "/associations/association")
            .header("x-legal-basis", ASSOC_LEGAL_BASIS.to_lowercase())
            .header("x-purpose", ASSOC_PURPOSE)
            .header("x-subject", v.clone())
            .expect(S::FORBIDDEN, "NO_LEGAL_BASIS", ""),
        case("other-purpose", ASSOC_CALLER, Method::GET, "/associations/association")
            .header("x-legal-basis", ASSOC_LEGAL_BASIS)
            .header("x-purpose", "MARKETING")
            .header("x-subject", v.clone())
            .expect(S::FORBIDDEN, "PURPOSE_NOT_ALLOWED", ""),
        // --- End users spoofing a role.
        niss_call("role-from-an-agency", "rn", &p).expect(S::FORBIDDEN, "END_USER_ROLE_MISSING", ""),
        niss_call("role-other-case", "rn", &p).expect(S::FORBIDDEN, "END_USER_ROLE_MISSING", ""),
        niss_call("role-two-users", "rn", &p).expect(S::FORBIDDEN, "END_USER_ROLE_MISSING", ""),
        niss_call("role-twice", "rn", &p).header("x-end-user", "intern").expect(
            S::BAD_REQUEST,
            "ENVELOPE_INVALID",
            "more than once",
        ),
        // --- A body over the limit, announced.
        association_call("body-over-limit", ASSOC_CALLER, &v).body(vec![b'x'; MAX_BODY + 1]).expect(
            S::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            "",
        ),
        // --- XML (DIV, SOAP): entities, external entities, nesting, attributes, repetition.
        div_call("xml-billion-laughs", BILLION_LAUGHS),
        div_call(
            "xml-external-entity",
            format!(
                r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>{}"#,
                soap("<Plate>&e;</Plate>").trim_start_matches(r#"<?xml version="1.0"?>"#)
            ),
        ),
        div_call(
            "xml-deep-nesting",
            soap(&format!("{}<Plate>1-ABC-123</Plate>{}", "<a>".repeat(5000), "</a>".repeat(5000))),
        ),
        div_call("xml-huge-attribute", soap(&format!(r#"<Plate x="{}">1-ABC-123</Plate>"#, "A".repeat(MAX_BODY / 2)))),
        div_call("xml-repeated-attribute", soap(r#"<Plate a="1" a="2">1-ABC-123</Plate>"#)),
        div_call("xml-two-plates", soap("<Plate>1-ABC-123</Plate><Plate>2-XYZ-999</Plate>")),
        div_call("xml-plate-and-vin", soap("<Plate>1-ABC-123</Plate><Vin>WVWZZZ1JZXW000001</Vin>")),
        div_call("xml-processing-instruction", soap("<?evil?><Plate>1-ABC-123</Plate>")),
        // A declaration that lies about the bytes (UTF-8 sent, UTF-16 declared).
        div_call(
            "xml-declared-utf16",
            soap("<Plate>1-ABC-123</Plate>")
                .replace(r#"<?xml version="1.0"?>"#, r#"<?xml version="1.0" encoding="UTF-16"?>"#),
        ),
        div_call("xml-wide-text", soap(&format!("<Plate>{}</Plate>", "1".repeat(20_000)))),
        // --- Invalid plates and VINs where DIV takes them.
        div_call("plate-old-format", soap("<Plate>ABC-123</Plate>")),
        div_call("plate-lower-case", soap("<Plate>1-abc-123</Plate>")),
        div_call("plate-first-digit", soap("<Plate>9-ABC-123</Plate>")),
        div_call("plate-entity-encoded", soap("<Plate>1&#45;ABC&#45;12&#x33;&#x33;</Plate>")),
        div_call("vin-short", soap("<Vin>WVWZZZ1JZXW00000</Vin>")),
        div_call("vin-letter-o", soap("<Vin>WVWZZZ1JZXW0O0001</Vin>")),
        div_call("vin-lower-case", soap("<Vin>wvwzzz1jzxw000001</Vin>")),
        // --- JSON (National Register search): nesting, repetition, numbers, types, encodings.
        rn_search("json-deep-nesting", format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
        rn_search(
            "json-deep-object",
            format!(
                r#"{{"lastName":"X","birthDate":"1980-05-01","x":{}1{}}}"#,
                r#"{"a":"#.repeat(300),
                "}".repeat(300)
            ),
        ),
        rn_search("json-repeated-key", r#"{"lastName":"Peeters","lastName":"Janssens","birthDate":"1980-05-01"}"#),
        rn_search("json-huge-number", r#"{"lastName":"X","birthDate":"1980-05-01","firstName":1e999999}"#),
        rn_search("json-long-integer", format!(r#"{{"lastName":{},"birthDate":"1980-05-01"}}"#, "9".repeat(5000))),
        rn_search("json-wrong-type", r#"{"lastName":["Peeters"],"birthDate":"1980-05-01"}"#),
        rn_search("json-null", "null"),
        rn_search("json-extra-property", r#"{"lastName":"X","birthDate":"1980-05-01","niss":"85073003328"}"#),
        rn_search("json-trailing-garbage", r#"{"lastName":"X","birthDate":"1980-05-01"} {"#),
        rn_search("json-invalid-utf8", b"{\"lastName\":\"\xff\xfe\",\"birthDate\":\"1980-05-01\"}".to_vec()),
        rn_search("json-bom", "\u{feff}{\"lastName\":\"X\",\"birthDate\":\"1980-05-01\"}"),
        rn_search("json-long-name", format!(r#"{{"lastName":"{}","birthDate":"1980-05-01"}}"#, "x".repeat(3000))),
        rn_search("json-empty", ""),
    ];
    // --- Invalid NISS and BIS numbers in X-Subject, for every service that takes one.
    for service in ["sigedis", "accounts", "contacts", "rn"] {
        for (id, subject, detail) in [
            ("check-digits", "85073003329", "check"),
            ("ten-digits", "8507300332", "expected 11"),
            ("twelve-digits", "850730033288", "expected 11"),
            ("letter", "8507300332A", ""),
            ("month-35", "85353003330", "month"),
            ("bis-day-32", "85223203373", "day"),
            ("month-53", "85533003359", "month"),
            ("sign", "-8507300332", ""),
        ] {
            let id: &'static str = Box::leak(format!("niss-{service}-{id}").into_boxed_str());
            c.push(niss_call(id, service, subject).expect(S::BAD_REQUEST, "SUBJECT_INVALID", detail));
        }
    }
    // --- Invalid vCodes and enterprise numbers where an association is named.
    for (id, subject, detail) in [
        ("vcode-short", "V12", "expected 8"),
        ("vcode-letter", "V000100X", ""),
        ("vcode-prefix", "X0001001", ""),
        ("kbo-check-digits", "0431150351", "check"),
        ("kbo-first-digit", "2431150350", ""),
        ("kbo-short", "043115035", ""),
    ] {
        c.push(association_call(id, ASSOC_CALLER, subject).expect(S::BAD_REQUEST, "SUBJECT_INVALID", detail));
    }
    // The paths of the route cases, in their order above.
    let paths = [
        "/associations/../associations/association",
        "/associations/./association",
        "/associations%2Fassociation",
        "/associations/%61ssociation",
        "/associations/association%00",
        "//associations/association",
        "/associations/association;jsessionid=1",
        "/Associations/Association",
        "/associations/association/..",
    ];
    for (case, path) in c.iter_mut().zip(paths) {
        case.path = path.to_owned();
    }
    for case in &mut c {
        match case.id {
            "role-from-an-agency" => {
                case.who = ASSOC_CALLER;
                case.code = "LEGAL_BASIS_NOT_APPLICABLE";
            }
            "role-other-case" => set_end_user(case, "LRA-OFFICER-1"),
            "role-two-users" => set_end_user(case, "lra-officer-1, lra-officer-2"),
            _ => {}
        }
    }
    c
}

fn set_end_user(case: &mut Case, user: &str) {
    for (name, value) in &mut case.headers {
        if *name == "x-end-user" {
            *value = user.to_owned();
        }
    }
}

async fn hostile_harness() -> (Harness, adapters::sandbox::SandboxServer, std::sync::Arc<std::sync::atomic::AtomicUsize>)
{
    let (upstream, hits) = tests::counting_upstream(tests::association_doc("counted")).await.unwrap();
    let url = upstream.url();
    let keys: Vec<(String, String)> = SOURCES
        .iter()
        .flat_map(|s| {
            [
                (format!("PASSERELLE__SOURCES__{s}__UPSTREAM"), url.clone()),
                (format!("PASSERELLE__SOURCES__{s}__TEST_UPSTREAM"), url.clone()),
            ]
        })
        .chain([("PASSERELLE__LIMITS__MAX_BODY_BYTES".to_owned(), MAX_BODY.to_string())])
        .collect();
    let overrides: Vec<(&str, &str)> = keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    (Harness::with_overrides(&overrides).await.unwrap(), upstream, hits)
}

#[tokio::test]
async fn every_hostile_request_gets_its_refusal_and_no_source_is_called() {
    let (h, upstream, hits) = hostile_harness().await;
    let corpus = corpus();
    let mut failures = Vec::new();
    for case in &corpus {
        let mut headers: Vec<(&str, &str)> = case.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        headers.push(("x-request-id", case.id));
        let a = send(&h.client(case.who), case.method.clone(), &case.path, &headers, Bytes::from(case.body.clone()))
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", case.id));
        let detail = if a.headers["content-type"] == "application/problem+json" {
            a.json().ok().and_then(|d| d["detail"].as_str().map(str::to_owned)).unwrap_or_default()
        } else {
            a.text()
        };
        if (a.status, a.code()) != (case.status, Some(case.code)) || !detail.contains(case.detail) {
            failures.push(format!(
                "{}: expected {} {} ({:?}), got {} {:?}: {detail}",
                case.id,
                case.status,
                case.code,
                case.detail,
                a.status,
                a.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), corpus.len(), failures.join("\n"));
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a hostile request reached a source");

    // Every case has exactly one audit record, with its code and no field released.
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    for case in &corpus {
        let found: Vec<_> = records.iter().filter(|r| r.record.request_id == case.id).collect();
        assert_eq!(found.len(), 1, "{}: one audit record", case.id);
        assert_eq!(found[0].record.code.as_deref(), Some(case.code), "{}", case.id);
        assert!(found[0].record.fields.is_empty(), "{}", case.id);
    }
    // The counter counts: a well-formed call reaches the source.
    let a = tests::association(&h.client(ASSOC_CALLER), &tests::vcode(), &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    upstream.abort();
    // The values hostile callers sent are recorded as the document says a verifier finds them.
    let key = h.demo.gateway.audit.public_key;
    let (cfg, _dir) = h.stop().await;
    tests::verifies_by_the_document(&cfg.audit.dir, &key);
}

/// Writes `bytes` on a fresh TLS connection as agency A, then reads what the gateway answers
/// until it closes the connection (at most 10 s).
async fn raw(h: &Harness, bytes: &[u8], then_close: bool) -> String {
    let mut s = tests::raw_tls(h, ASSOC_CALLER).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s.flush().await.unwrap();
    if then_close {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the gateway kept a malformed connection open: {:?}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(answer: &str) -> &str {
    answer.get(9..12).unwrap_or("")
}

#[tokio::test]
async fn malformed_http_is_refused_by_the_protocol_layer_and_reaches_nothing() {
    let (h, upstream, hits) = hostile_harness().await;
    let v = tests::vcode();
    let good_head = format!(
        "GET /associations/association HTTP/1.1\r\nhost: localhost\r\nx-legal-basis: {ASSOC_LEGAL_BASIS}\r\nx-purpose: {ASSOC_PURPOSE}\r\nx-subject: {v}\r\n"
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not HTTP", b"\x16\x03\x01garbage\r\n\r\n".to_vec(), "400"),
        ("bad request line", b"GET\r\n\r\n".to_vec(), "400"),
        ("bad version", b"GET / HTTP/9.9\r\nhost: x\r\n\r\n".to_vec(), "400"),
        ("header without colon", format!("{good_head}x-broken\r\n\r\n").into_bytes(), "400"),
        ("bare CR in a value", format!("{good_head}x-end-user: a\rx-subject: V0001002\r\n\r\n").into_bytes(), "400"),
        ("NUL in a value", format!("{good_head}x-end-user: a\0b\r\n\r\n").into_bytes(), "400"),
        ("obsolete line folding", format!("{good_head}x-end-user: a\r\n b\r\n\r\n").into_bytes(), "400"),
        ("space before colon", format!("{good_head}x-subject : V0001002\r\n\r\n").into_bytes(), "400"),
        (
            "two content lengths",
            format!("{good_head}content-length: 1\r\ncontent-length: 2\r\n\r\nab").into_bytes(),
            "400",
        ),
        ("transfer coding not chunked", format!("{good_head}transfer-encoding: gzip\r\n\r\n").into_bytes(), "400"),
        ("bad chunk size", format!("{good_head}transfer-encoding: chunked\r\n\r\nzz\r\n").into_bytes(), "400"),
        ("huge header", format!("{good_head}x-pad: {}\r\n\r\n", "a".repeat(64 * 1024)).into_bytes(), "431"),
        ("many headers", format!("{good_head}{}\r\n", "x-h: 1\r\n".repeat(500)).into_bytes(), "431"),
    ];
    let mut failures = Vec::new();
    for (name, bytes, want) in &cases {
        let answer = raw(&h, bytes, false).await;
        // A refused request line or header block gets a bare status and a closed connection.
        let got = status_of(&answer);
        if got != *want {
            failures.push(format!("{name}: expected {want}, got {:?}", answer.lines().next().unwrap_or("")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A request cut off in its headers: the connection closes, nothing is called.
    let answer = raw(&h, good_head.as_bytes(), true).await;
    assert!(answer.is_empty() || status_of(&answer) == "400", "truncated: {answer:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a malformed request reached a source");
    // The same head, completed, goes through.
    let answer = raw(&h, format!("{good_head}connection: close\r\n\r\n").as_bytes(), false).await;
    assert_eq!(status_of(&answer), "200", "{answer}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Smuggling: Content-Length and chunked framing disagree about where the body ends, and a
    // second request hides behind it. RFC 9112 §6.3: chunked wins and the connection is closed
    // after the answer, so the hidden request is never read; the source gets one call, framed
    // by the gateway itself.
    let smuggled = format!(
        "{good_head}content-length: 60\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{good_head}x-request-id: hidden\r\n\r\n"
    );
    let answer = raw(&h, smuggled.as_bytes(), false).await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one answer only: {answer}");
    assert_eq!(hits.load(Ordering::SeqCst), 2, "the hidden request never reached the source");
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    assert!(!records.iter().any(|r| r.record.request_id == "hidden"), "the hidden request was never read");
    upstream.abort();
}

#[tokio::test]
async fn slow_loris_clients_are_cut_off_and_hold_no_worker() {
    let (upstream, hits) = tests::counting_upstream(tests::association_doc("counted")).await.unwrap();
    let url = upstream.url();
    let h = Harness::with_overrides(&[
        ("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", url.as_str()),
        ("PASSERELLE__LIMITS__HEADER_READ_TIMEOUT_MS", "1000"),
        ("PASSERELLE__LIMITS__BODY_READ_TIMEOUT_MS", "1000"),
        ("PASSERELLE__LIMITS__MAX_IN_FLIGHT", "2"),
        ("PASSERELLE__TLS__HANDSHAKE_TIMEOUT_MS", "1000"),
    ])
    .await
    .unwrap();
    // 40 clients trickle a header byte every 200 ms, more than the in-flight limit many times.
    const LORIS: usize = 40;
    let mut tasks = Vec::new();
    for _ in 0..LORIS {
        let mut s = tests::raw_tls(&h, ASSOC_CALLER).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            s.write_all(b"GET /associations/association HTTP/1.1\r\nhost: x\r\nx-pad: ").await.unwrap();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if s.write_all(b"a").await.is_err() || s.flush().await.is_err() {
                    break;
                }
                if started.elapsed() > Duration::from_secs(15) {
                    return None;
                }
                // The gateway's answer (408) or its close ends the trickle.
                let mut b = [0u8; 256];
                match tokio::time::timeout(Duration::from_millis(1), s.read(&mut b)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => continue,
                    Err(_) => continue,
                }
            }
            Some(started.elapsed())
        }));
    }
    // Meanwhile, with every slow client connected, a real call is served at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let a = tests::association(&h.client(ASSOC_CALLER), &tests::vcode(), &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let served_in = started.elapsed();
    assert!(served_in < Duration::from_secs(1), "a slow-loris crowd held the gateway: {served_in:?}");
    let mut cut = Vec::new();
    for t in tasks {
        cut.push(t.await.unwrap().expect("a slow client was never cut off"));
    }
    let slowest = cut.iter().max().unwrap();
    assert!(*slowest < Duration::from_secs(5), "cut off after {slowest:?}, the header timeout is 1 s");

    // A client that connects and never starts the handshake is dropped after its timeout.
    let mut idle = tokio::net::TcpStream::connect(h.demo.gateway.data_addr).await.unwrap();
    let mut b = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut b)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "an idle TCP client was not dropped: {closed:?}");

    // A body trickled past its timeout: 408 REQUEST_TIMEOUT, audited, nothing called.
    let mut s = tests::raw_tls(&h, "municipality").await.unwrap();
    let head = "POST /rn/persons/search HTTP/1.1\r\nhost: x\r\nx-legal-basis: BOSA/LRA/2024\r\nx-purpose: LRA_REGISTRATION\r\nx-end-user: lra-officer-1\r\nx-request-id: slow-body\r\ncontent-length: 100\r\n\r\n{\"lastName\":";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("REQUEST_TIMEOUT"), "{text}");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "only the real call reached a source");
    let records = read_records(&h.demo.config.audit.dir).unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.record.request_id == "slow-body" && r.record.code.as_deref() == Some("REQUEST_TIMEOUT"))
    );
    upstream.abort();
}

/// A control-plane call: who, method, path, body, and the refusal it must get.
type CtlCase<'a> = (&'a str, Method, &'a str, Option<serde_json::Value>, StatusCode, &'a str);

#[tokio::test]
async fn the_control_plane_refuses_data_plane_certificates_and_bad_identifiers_and_changes_nothing() {
    use serde_json::json;
    let h = Harness::start().await.unwrap();
    let before = h.ctl("admin", Method::GET, "/changes", None).await.text();
    let orgs = h.ctl("admin", Method::GET, "/organisations", None).await.text();
    let p = tests::person();
    let consent = |subject: &str, org: &str| {
        json!({
            "subject": subject, "recipient": { "org": org }, "service": "sigedis.pensions",
            "purpose": tests::SIGEDIS_PURPOSE, "valid_until": "2030-12-31", "evidence": "x",
        })
    };
    let organisation = |kbo: &str| json!({ "kbo": kbo, "name": "x", "kind": "company" });
    let transitions = format!("/instruments/{}/transitions", ASSOC_LEGAL_BASIS.replace('/', "%2F"));
    let cases: Vec<CtlCase<'_>> = vec![
        // Data-plane certificates (a recipient, a bank) on the control plane.
        (
            ASSOC_CALLER,
            Method::POST,
            "/organisations",
            Some(organisation(tests::FLEET_KBO)),
            StatusCode::FORBIDDEN,
            "ADMIN_ROLE_MISSING",
        ),
        (
            ASSOC_CALLER,
            Method::POST,
            "/consents",
            Some(consent(&p, "0456123494")),
            StatusCode::FORBIDDEN,
            "ADMIN_ROLE_MISSING",
        ),
        (
            SIGEDIS_CALLER,
            Method::POST,
            "/consents",
            Some(consent(&p, "0456123494")),
            StatusCode::FORBIDDEN,
            "ADMIN_ROLE_MISSING",
        ),
        (
            ASSOC_CALLER,
            Method::POST,
            &transitions,
            Some(json!({ "to": "suspended", "reason": "x" })),
            StatusCode::FORBIDDEN,
            "ADMIN_ROLE_MISSING",
        ),
        (SIGEDIS_CALLER, Method::POST, "/reload", None, StatusCode::FORBIDDEN, "ADMIN_ROLE_MISSING"),
        (SIGEDIS_CALLER, Method::POST, "/policy/import", Some(json!({})), StatusCode::FORBIDDEN, "ADMIN_ROLE_MISSING"),
        // Invalid identifiers where the control plane takes them.
        (
            "citizen-portal",
            Method::POST,
            "/consents",
            Some(consent("85073003329", "0456123494")),
            StatusCode::BAD_REQUEST,
            "SUBJECT_INVALID",
        ),
        (
            "citizen-portal",
            Method::POST,
            "/consents",
            Some(consent("85353003330", "0456123494")),
            StatusCode::BAD_REQUEST,
            "SUBJECT_INVALID",
        ),
        (
            "citizen-portal",
            Method::POST,
            "/consents",
            Some(consent(&p, "0456123495")),
            StatusCode::BAD_REQUEST,
            "REQUEST_INVALID",
        ),
        (
            "admin",
            Method::POST,
            "/organisations",
            Some(organisation("0412345615")),
            StatusCode::BAD_REQUEST,
            "REQUEST_INVALID",
        ),
        (
            "admin",
            Method::POST,
            "/organisations",
            Some(organisation("412345614")),
            StatusCode::BAD_REQUEST,
            "REQUEST_INVALID",
        ),
        // Malformed bodies.
        ("admin", Method::POST, "/organisations", Some(json!([1, 2])), StatusCode::BAD_REQUEST, "REQUEST_INVALID"),
        (
            "admin",
            Method::POST,
            "/organisations",
            Some(json!({ "kbo": 412345614, "name": "x", "kind": "company" })),
            StatusCode::BAD_REQUEST,
            "REQUEST_INVALID",
        ),
        ("citizen-portal", Method::POST, "/consents/../organisations", None, StatusCode::NOT_FOUND, "SERVICE_UNKNOWN"),
        ("citizen-portal", Method::POST, "/consents/c-zz/revoke", None, StatusCode::BAD_REQUEST, "REQUEST_INVALID"),
    ];
    let mut failures = Vec::new();
    for (who, method, path, body, status, code) in cases {
        let a = h.ctl(who, method.clone(), path, body).await;
        if (a.status, a.code()) != (status, Some(code)) {
            failures.push(format!(
                "{who} {method} {path}: expected {status} {code}, got {} {:?}: {}",
                a.status,
                a.code(),
                a.text()
            ));
        }
    }
    // A body that is not JSON, and one with a key twice.
    for (body, what) in [
        (&b"{\"kbo\": "[..], "truncated"),
        (&br#"{"kbo":"0412345614","kbo":"0207123407","name":"x","kind":"company"}"#[..], "repeated key"),
    ] {
        let a = send(
            &h.control_client("admin"),
            Method::POST,
            "/organisations",
            &[("content-type", "application/json")],
            Bytes::from_static(body),
        )
        .await
        .unwrap();
        if (a.status, a.code()) != (StatusCode::BAD_REQUEST, Some("REQUEST_INVALID")) {
            failures.push(format!(
                "{what}: expected 400 REQUEST_INVALID, got {} {:?}: {}",
                a.status,
                a.code(),
                a.text()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(h.ctl("admin", Method::GET, "/changes", None).await.text(), before, "no change was made");
    assert_eq!(h.ctl("admin", Method::GET, "/organisations", None).await.text(), orgs);
}
