//! The published JSON Schemas are real contracts: answers recorded from the sandboxes are
//! validated by a second, independent validator (Python's `jsonschema`, Draft 2020-12), and a
//! broken answer is rejected by it too — so the schema and the sandboxes cannot drift apart
//! unnoticed, and the schema is not decoration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const CHECK: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema)
bad = 0
for line in open(sys.argv[2]):
    if list(v.iter_errors(json.loads(line))):
        bad += 1
print(bad)
"#;

fn python_rejects(schema: &str, answers: &[serde_json::Value]) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let (s, a) = (dir.path().join("schema.json"), dir.path().join("answers.jsonl"));
    std::fs::write(&s, schema).unwrap();
    std::fs::write(&a, answers.iter().map(|v| v.to_string() + "\n").collect::<String>()).unwrap();
    let out = Command::new("python3").arg("-c").arg(CHECK).arg(&s).arg(&a).output().expect("python3");
    assert!(
        out.status.success(),
        "the independent validator did not run (scripts/test installs Python's jsonschema): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// Calls a sandbox over a real socket: `(subject, body)` per call; a `POST` when there is a body.
async fn call(server: &adapters::sandbox::SandboxServer, path: &str, subject: Option<&str>, body: &str) -> String {
    let (status, answer) = server.call(path, subject, body).await.unwrap();
    let text = String::from_utf8(answer).unwrap();
    assert_eq!(status, 200, "{text}");
    text
}

async fn record(
    server: &adapters::sandbox::SandboxServer,
    path: &str,
    calls: &[(Option<String>, String)],
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for (subject, body) in calls {
        out.push(serde_json::from_str(&call(server, path, subject.as_deref(), body).await).unwrap());
    }
    out
}

fn by_subject(subjects: &[String]) -> Vec<(Option<String>, String)> {
    subjects.iter().map(|s| (Some(s.clone()), String::new())).collect()
}

fn digits(p: &policies::ids::Niss) -> String {
    let mut d = [0u8; 11];
    p.digits(&mut d).to_owned()
}

#[tokio::test]
async fn sandbox_answers_follow_the_published_schemas_by_an_independent_validator() {
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let assoc = adapters::associations::sandbox::serve(bind().await).unwrap();
    let sigedis = adapters::sigedis::sandbox::serve(bind().await).unwrap();
    let rn = adapters::rn::sandbox::serve(bind().await).unwrap();
    let flemish = adapters::accounts::sandbox::serve(bind().await).unwrap();
    let rn_register = adapters::rn::sandbox::Register::generate();
    let rn_people = adapters::rn::sandbox::Register::persons();
    let rn_persons: Vec<String> = rn_people.iter().step_by(15).map(digits).collect();
    // Searches by the name and birth date of known persons, with and without the first name.
    let searches: Vec<(Option<String>, String)> = rn_people
        .iter()
        .step_by(60)
        .enumerate()
        .map(|(i, p)| {
            let doc = rn_register.person(*p).unwrap();
            let mut q = serde_json::json!({"lastName": doc["names"]["last"], "birthDate": doc["birthDate"]});
            if i % 2 == 0 {
                q["firstName"] = doc["names"]["first"][0].clone();
            }
            (None, q.to_string())
        })
        .collect();
    let citizens: Vec<(Option<String>, String)> = adapters::accounts::sandbox::Register::persons()
        .iter()
        .take(150)
        .enumerate()
        .map(|(i, p)| {
            let service = adapters::accounts::PUBLIC_SERVICES[i % adapters::accounts::PUBLIC_SERVICES.len()];
            (Some(digits(p)), serde_json::json!({ "publicService": service }).to_string())
        })
        .collect();
    let vcodes: Vec<String> =
        adapters::associations::sandbox::Register::vcodes(200).iter().map(|v| v.to_string()).collect();
    let persons: Vec<String> = adapters::sigedis::sandbox::Register::persons().iter().take(200).map(digits).collect();
    let cases = [
        (adapters::associations::association_service(), &assoc, by_subject(&vcodes)),
        (adapters::sigedis::pensions_service(), &sigedis, by_subject(&persons)),
        (adapters::rn::person_service(), &rn, by_subject(&rn_persons)),
        (adapters::rn::search_service(), &rn, searches),
        (adapters::accounts::iban_service(), &flemish, citizens.clone()),
        (adapters::contacts::contact_service(), &flemish, citizens),
    ];
    for (service, server, calls) in &cases {
        let answers = record(server, service.upstream_path, calls).await;
        let layout = service.layout.unwrap();
        let ours = adapters::layout::Layout::new(layout).unwrap();
        // The requests that produced them follow the request layout, by both validators.
        if let Some(request_schema) = layout.request_schema {
            let requests: Vec<serde_json::Value> =
                calls.iter().map(|(_, b)| serde_json::from_str(b).unwrap()).collect();
            assert!(requests.iter().all(|r| ours.check_request(r.to_string().as_bytes()).is_ok()));
            assert_eq!(python_rejects(request_schema, &requests), 0, "{}: requests", service.id);
            let wrong =
                [serde_json::json!({"publicService": 7, "lastName": 7, "birthDate": 7}), serde_json::json!({"x": 1})];
            assert_eq!(python_rejects(request_schema, &wrong), 2, "{}", service.id);
            assert!(wrong.iter().all(|r| ours.check_request(r.to_string().as_bytes()).is_err()));
        }
        if service.id == "rn.search" {
            let found: usize = answers.iter().map(|a| a["persons"].as_array().unwrap().len()).sum();
            assert!(found >= answers.len(), "every search finds its person");
        }
        // Each answer is checked as the gateway reads it: from its text, in place.
        let check = |a: &serde_json::Value| {
            let text = serde_json::to_vec(a).unwrap();
            ours.check(&adapters::layout::parse_answer(&text).unwrap())
        };
        assert!(answers.iter().all(|a| check(a).is_ok()), "{}", service.id);
        assert_eq!(
            python_rejects(layout.response_schema, &answers),
            0,
            "{}: the independent validator rejects answers",
            service.id
        );
        // A damaged answer is rejected by both.
        let mut broken = answers[0].clone();
        broken.as_object_mut().unwrap().insert("unexpected".into(), serde_json::json!(1));
        assert!(check(&broken).is_err());
        assert_eq!(python_rejects(layout.response_schema, &[broken]), 1, "{}", service.id);
    }
}
