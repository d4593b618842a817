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
        "the independent validator did not run (.ci/run installs Python's jsonschema): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

async fn record(server: &adapters::sandbox::SandboxServer, path: &str, subjects: &[String]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for s in subjects {
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Subject: {s}\r\nConnection: close\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buf).await.unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        out.push(serde_json::from_str(body).unwrap());
    }
    out
}

#[tokio::test]
async fn sandbox_answers_follow_the_published_schemas_by_an_independent_validator() {
    let bind = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap() };
    let assoc = adapters::associations::sandbox::serve(bind().await).unwrap();
    let sigedis = adapters::sigedis::sandbox::serve(bind().await).unwrap();
    let rn = adapters::rn::sandbox::serve(bind().await).unwrap();
    let rn_persons: Vec<String> = adapters::rn::sandbox::Register::persons()
        .iter()
        .step_by(15)
        .map(|p| {
            let mut d = [0u8; 11];
            p.digits(&mut d).to_owned()
        })
        .collect();
    let vcodes: Vec<String> =
        adapters::associations::sandbox::Register::vcodes(200).iter().map(|v| v.to_string()).collect();
    let persons: Vec<String> = adapters::sigedis::sandbox::Register::persons()
        .iter()
        .take(200)
        .map(|p| {
            let mut d = [0u8; 11];
            p.digits(&mut d).to_owned()
        })
        .collect();
    let cases = [
        (adapters::associations::association_service(), record(&assoc, "/v1/verenigingen", &vcodes).await),
        (adapters::sigedis::pensions_service(), record(&sigedis, "/db2p/pensions", &persons).await),
        (adapters::rn::person_service(), record(&rn, "/v1/persons", &rn_persons).await),
    ];
    for (service, answers) in &cases {
        let layout = service.layout.unwrap();
        let ours = adapters::layout::Layout::new(layout).unwrap();
        assert!(answers.iter().all(|a| ours.check(a).is_ok()), "{}", service.id);
        assert_eq!(
            python_rejects(layout.response_schema, answers),
            0,
            "{}: the independent validator rejects answers",
            service.id
        );
        // A damaged answer is rejected by both.
        let mut broken = answers[0].clone();
        broken.as_object_mut().unwrap().insert("unexpected".into(), serde_json::json!(1));
        assert!(ours.check(&broken).is_err());
        assert_eq!(python_rejects(layout.response_schema, &[broken]), 1, "{}", service.id);
    }
}
