//! The DIV layout is a real contract: requests and answers recorded from the DIV sandbox over
//! a real socket, and the same answers reduced to several grants, are validated against the
//! published XSD by `xmllint --schema` (libxml2; `scripts/test` installs it) — and documents the
//! gateway refuses for their layout are refused by `xmllint` too. So the gateway's XML layout
//! and the XSD agree, both ways, on these documents.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use adapters::div::{self, LAYOUT, sandbox::Register};
use adapters::xml;

fn layouts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("layouts")
}

/// Runs `xmllint --schema soap-envelope.xsd` on each document; returns which ones it accepts.
fn xmllint_accepts(docs: &[String]) -> Vec<bool> {
    let dir = tempfile::tempdir().unwrap();
    let schema = layouts().join("soap-envelope.xsd");
    docs.iter()
        .enumerate()
        .map(|(i, d)| {
            let f = dir.path().join(format!("doc{i}.xml"));
            std::fs::write(&f, d).unwrap();
            let out = Command::new("xmllint")
                .args(["--noout", "--nonet", "--schema"])
                .arg(&schema)
                .arg(&f)
                .output()
                .expect("xmllint (package libxml2-utils; scripts/test installs it)");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("failed to compile"), "the XSD does not compile: {stderr}");
            out.status.success()
        })
        .collect()
}

async fn post(server: &adapters::sandbox::SandboxServer, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        div::vehicle_service().upstream_path,
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let status = text[9..12].parse().unwrap();
    (status, text.split("\r\n\r\n").nth(1).unwrap().to_owned())
}

#[tokio::test]
async fn recorded_div_messages_follow_the_xsd() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = div::sandbox::serve(listener).unwrap();
    let register = Register::generate();
    let mut docs = Vec::new();
    for (i, v) in register.vehicles().iter().step_by(97).enumerate() {
        let request =
            if i % 2 == 0 { div::request_by_plate(v.plate.as_str()) } else { div::request_by_vin(v.vin.as_str()) };
        LAYOUT.check_request(request.as_bytes()).unwrap();
        let (status, answer) = post(&server, &request).await;
        assert_eq!(status, 200, "{answer}");
        let payload = LAYOUT.check_response(answer.as_bytes()).unwrap();
        // The answer reduced to a few grants, as the gateway sends it on.
        for grant in [&["plate", "make"][..], &["holderId", "holderName"], &["insurer", "vin", "fuel"], &[]] {
            let reduced = xml::minimise(payload.clone(), &LAYOUT.response, &|f| grant.contains(&f)).unwrap();
            docs.push(xml::envelope(&reduced));
        }
        docs.push(request);
        docs.push(answer);
    }
    // The sandbox's "no such vehicle" fault is a SOAP 1.1 Fault the envelope schema accepts.
    let (status, fault) = post(&server, &div::request_by_plate("1-ZZZ-999")).await;
    assert_eq!(status, 404);
    docs.push(fault);
    let n = docs.len();
    assert!(n > 300, "{n} documents");
    let accepted = xmllint_accepts(&docs);
    let rejected: Vec<usize> = accepted.iter().enumerate().filter(|(_, ok)| !**ok).map(|(i, _)| i).collect();
    assert!(rejected.is_empty(), "xmllint rejects documents {rejected:?}, e.g. {}", docs[rejected[0]]);
    server.abort();
}

#[test]
fn documents_the_gateway_refuses_the_xsd_refuses_too() {
    let register = Register::generate();
    let v = &register.vehicles()[0];
    let env = |inner: &str| {
        format!(r#"<?xml version="1.0"?><s:Envelope xmlns:s="{}"><s:Body>{inner}</s:Body></s:Envelope>"#, xml::SOAP_NS)
    };
    let ns = div::NS;
    let requests = [
        env(&format!(r#"<GetVehicleRequest xmlns="{ns}"><Colour>red</Colour></GetVehicleRequest>"#)),
        env(&format!(r#"<GetVehicleRequest xmlns="{ns}"><Plate>ABC-123</Plate></GetVehicleRequest>"#)),
        env(&format!(r#"<GetVehicleRequest xmlns="{ns}"><Vin>WVWZZZ1JZ3W38669I</Vin></GetVehicleRequest>"#)),
        env(&format!(
            r#"<GetVehicleRequest xmlns="{ns}"><Plate>{}</Plate><Vin>{}</Vin></GetVehicleRequest>"#,
            v.plate, v.vin
        )),
        env(&format!(r#"<GetVehicleRequest xmlns="urn:other"><Plate>{}</Plate></GetVehicleRequest>"#, v.plate)),
        env(&format!(r#"<GetVehicleRequest xmlns="{ns}"/>"#)),
    ];
    // A payload without its SOAP envelope: a valid document for the XSD set, not a SOAP call.
    let bare = format!(r#"<GetVehicleRequest xmlns="{ns}"><Plate>{}</Plate></GetVehicleRequest>"#, v.plate);
    assert!(LAYOUT.check_request(bare.as_bytes()).unwrap_err().contains("not a SOAP 1.1 Envelope"));
    let answer = xml::envelope(&v.doc);
    let answers = [
        answer.replace("<Fuel>", "<Colour>red</Colour><Fuel>"),
        answer.replacen("<Plate>", "<Plate>X", 1),
        answer.replacen("<FirstRegistrationDate>", "<FirstRegistrationDate>31/", 1),
        answer.replacen("<Make>", "<Vin>WVWZZZ1JZ3W386698</Vin><Make>", 1),
        answer.replace("<Country>BE</Country>", ""),
    ];
    for doc in &requests {
        assert!(LAYOUT.check_request(doc.as_bytes()).is_err(), "the gateway accepts {doc}");
    }
    for doc in &answers {
        assert!(LAYOUT.check_response(doc.as_bytes()).is_err(), "the gateway accepts {doc}");
    }
    let all: Vec<String> = requests.iter().chain(answers.iter()).cloned().collect();
    let accepted = xmllint_accepts(&all);
    for (doc, ok) in all.iter().zip(accepted) {
        assert!(!ok, "the gateway refuses but xmllint accepts {doc}");
    }
}
