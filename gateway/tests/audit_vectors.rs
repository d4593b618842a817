//! The published test vectors of docs/audit-format.md (`docs/audit-vectors/`): a small valid
//! trail and export, and tampered copies, each with the verdict and the place a verifier must
//! report (`expect.json`). `vectors_give_their_verdicts` runs `passerelle audit verify` and
//! `verify-export` over every one of them.
//!
//! The vectors were written by `write_vectors` (ignored; run it with
//! `PASSERELLE_WRITE_VECTORS=1 cargo test -p gateway --test audit_vectors write_vectors -- --ignored`) with
//! the test key `docs/audit-vectors/test-signing.key`, published on purpose: it signs nothing
//! else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gateway::audit::format::{self, HEADER_LEN};
use gateway::audit::{self, Outcome, Record, RecordKind, SubjectRef};
use gateway::store::SledStore;
use serde_json::{Value, json};

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/audit-vectors")
}

fn passerelle() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_passerelle"))
}

#[test]
fn vectors_give_their_verdicts() {
    let root = vectors();
    let mut seen = 0;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in dirs.into_iter().filter(|d| d.join("expect.json").exists()) {
        let expect: Value = serde_json::from_slice(&std::fs::read(dir.join("expect.json")).unwrap()).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut cmd = passerelle();
        cmd.current_dir(&dir).arg("audit");
        for a in expect["args"].as_array().unwrap() {
            cmd.arg(a.as_str().unwrap());
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), expect["exit"].as_i64().map(|c| c as i32), "{name}: {stdout}");
        let says = expect["says"].as_str().unwrap();
        assert!(stdout.contains(says), "{name}: expected '{says}' in: {stdout}");
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} vectors found in {}", root.display());
}

fn record(i: u64) -> Record {
    Record {
        kind: RecordKind::DataCall,
        time_ms: 1_795_435_200_000 + i * 1_000,
        request_id: format!("vector-{i}"),
        trace_id: None,
        caller: Some("0207123407".into()),
        cert_fingerprint: Some("915380cff7b44b3397e82dca909ea8b07157b829a0b652159e2904cc0e0ab70f".into()),
        end_user: Some("case-handler-17".into()),
        environment: Some("production".into()),
        service: Some("associations.association".into()),
        operation: "GET /associations/association".into(),
        legal_basis: Some("VL/PROT/2022/017".into()),
        grant: Some("assoc-agency-a-subsidy".into()),
        purpose: Some("SUBSIDY_HANDLING".into()),
        subjects: vec![SubjectRef::Association(format!("V{:07}", 1001 + i))],
        fields: ["vCode", "name", "status"].map(String::from).to_vec(),
        consent_id: None,
        outcome: Outcome::Granted,
        status: 200,
        code: None,
        upstream_status: Some(200),
        latency_us: 850 + i,
        justification: None,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn expect(dir: &Path, args: &[&str], exit: i32, says: &str) {
    let v = json!({ "args": args, "exit": exit, "says": says });
    std::fs::write(dir.join("expect.json"), serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
}

/// Writes the vectors anew (new checkpoint times, so new bytes): run it only when the format
/// changes, and commit the result with the document.
#[tokio::test]
#[ignore = "writes docs/audit-vectors; run with PASSERELLE_WRITE_VECTORS=1"]
async fn write_vectors() {
    if std::env::var("PASSERELLE_WRITE_VECTORS").is_err() {
        return;
    }
    let root = vectors();
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let work = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&work.path().join("store")).unwrap());
    let key_path = root.join("test-signing.key");
    let cfg = gateway::config::AuditConfig {
        dir: work.path().join("trail"),
        signing_key: key_path.clone(),
        segment_bytes: 4_096,
        checkpoint_every: 3,
        ..Default::default()
    };
    let (trail, _) = audit::open(&cfg, store).unwrap();
    for i in 1..=10 {
        trail.append(&record(i)).await.unwrap();
    }
    trail.close();
    let _ = std::fs::remove_file(cfg.dir.join("next-segment.spare"));
    let key = format!("../{}", key_path.with_extension("pub").file_name().unwrap().to_string_lossy());

    // The valid trail, and its export of records 4..6.
    let valid = root.join("valid-trail");
    copy_dir(&cfg.dir, &valid);
    expect(&valid, &["verify", ".", "--require-sealed", "--public-key", &key], 0, "verifies: ");
    let export = root.join("valid-export");
    std::fs::create_dir_all(&export).unwrap();
    let mut out = Vec::new();
    gateway::audit::verify::export(&cfg.dir, gateway::audit::verify::Selection::Seq { from: 4, to: Some(6) }, &mut out)
        .unwrap();
    std::fs::write(export.join("export.jsonl"), &out).unwrap();
    expect(&export, &["verify-export", "export.jsonl", "--public-key", &key], 0, "export verifies: records 4..6");

    let segs = format::segments(&cfg.dir).unwrap();
    let seg_name = segs[0].1.file_name().unwrap().to_string_lossy().into_owned();
    let seg = std::fs::read(&segs[0].1).unwrap();
    let (frames, _) = format::decode_frames(&seg, HEADER_LEN);
    let tampered = |name: &str, file: &str, bytes: &[u8], args: &[&str], exit: i32, says: &str| {
        let d = root.join(name);
        copy_dir(&cfg.dir, &d);
        std::fs::write(d.join(file), bytes).unwrap();
        let mut a = vec!["verify", ".", "--public-key", key.as_str()];
        a.extend_from_slice(args);
        expect(&d, &a, exit, says);
    };
    // A byte of record 2 flipped: its frame checksum fails.
    let mut b = seg.clone();
    b[frames[1].offset as usize + 60] ^= 0x01;
    let at = frames[1].offset;
    tampered("record-flipped", &seg_name, &b, &[], 1, &format!("record 2 ({seg_name}, offset {at}): damaged"));
    // Record 2 rewritten with a valid checksum: only the hash chain tells.
    let f = &frames[1];
    let mut payload = f.payload.clone();
    let pos = payload.windows(7).position(|w| w == b"granted").unwrap();
    payload[pos..pos + 7].copy_from_slice(b"refused");
    let mut frame = Vec::new();
    format::encode_frame(&mut frame, f.kind, &f.hash, &payload);
    let mut b = seg.clone();
    b.splice(f.offset as usize..frames[2].offset as usize, frame);
    tampered("record-rewritten", &seg_name, &b, &[], 1, &format!("record 2 ({seg_name}, offset {at}): altered"));
    // Record 3 removed.
    let mut b = seg.clone();
    b.drain(frames[2].offset as usize..frames[3].offset as usize);
    let says = format!("record 3 ({seg_name}, offset {}): missing; found record 4", frames[2].offset);
    tampered("record-removed", &seg_name, &b, &[], 1, &says);

    let log = std::fs::read(cfg.dir.join(format::CHECKPOINTS_FILE)).unwrap();
    let (cps, _) = format::decode_frames_strict(&log, 0);
    let span = |i: usize| cps[i].offset as usize..cps.get(i + 1).map_or(log.len(), |c| c.offset as usize);
    let cpf = format::CHECKPOINTS_FILE;
    // A byte of the second checkpoint flipped.
    let mut b = log.clone();
    b[span(1).start + 30] ^= 0x01;
    let says = format!("{cpf}, offset {}: damaged", span(1).start);
    tampered("checkpoint-flipped", cpf, &b, &[], 1, &says);
    // The second checkpoint removed.
    let mut b = log[..span(1).start].to_vec();
    b.extend_from_slice(&log[span(1).end..]);
    tampered("checkpoint-removed", cpf, &b, &[], 1, "removed, inserted or reordered");
    // Cut in the middle of the last checkpoint.
    let last = cps.len() - 1;
    let says = format!("{cpf}, offset {}: cut short", span(last).start);
    tampered("checkpoint-cut", cpf, &log[..span(last).start + 20], &[], 1, &says);
    // Every checkpoint re-signed, correctly chained, with another key.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let other = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut resigned = Vec::new();
    let mut prev = format::GENESIS;
    let parsed: Vec<format::Checkpoint> = cps.iter().map(|c| serde_json::from_slice(&c.payload).unwrap()).collect();
    let first_seq = parsed[0].seq;
    for cp in &parsed {
        let hash: [u8; 32] = format::unhex(&cp.hash).unwrap().try_into().unwrap();
        prev = format::signed_checkpoint(&mut resigned, &other, cp.seq, &hash, cp.time_ms, &prev);
    }
    let says = format!("checkpoint at record {first_seq}: bad signature");
    tampered("checkpoints-other-key", cpf, &resigned, &[], 1, &says);
    // checkpoints.log emptied: closed segments are no longer sealed.
    tampered("checkpoints-emptied", cpf, &[], &[], 1, "sealed by no checkpoint (checkpoints were removed)");
    // The last segment's records after the last checkpoint but one: reported as unsealed,
    // a failure with --require-sealed.
    let b = log[..span(last).start].to_vec();
    tampered(
        "last-checkpoint-dropped",
        cpf,
        &b,
        &["--require-sealed"],
        1,
        "sealed by no checkpoint (--require-sealed)",
    );

    // The export with a record changed.
    let text = String::from_utf8(out).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let i = lines.iter().position(|l| l.contains("\"in_range\":true")).unwrap();
    lines[i] = lines[i].replace("case-handler-17", "case-handler-18");
    let d = root.join("export-altered");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("export.jsonl"), lines.join("\n") + "\n").unwrap();
    expect(
        &d,
        &["verify-export", "export.jsonl", "--public-key", &key],
        1,
        &format!("line {}: record 4: altered", i + 1),
    );
}

/// The places (`record N`, `offset N`, `line N`) a verdict names.
fn places(says: &str) -> Vec<String> {
    let words: Vec<&str> = says.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| ["record", "offset", "line"].contains(&w[0]))
        .filter_map(|w| {
            let n = w[1].trim_end_matches([':', ',', ')']);
            n.parse::<u64>().ok().map(|n| format!("{} {n}", w[0]))
        })
        .collect()
}

/// A verifier written from docs/audit-format.md alone (`tests/audit-verifier/verify.py`) gives
/// every vector the verdict of its `expect.json` and names the same records, offsets and
/// lines: what the document says is enough to check a trail.
#[test]
fn the_documents_own_verifier_gives_the_same_verdicts() {
    let mut seen = 0;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(vectors()).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in dirs.into_iter().filter(|d| d.join("expect.json").exists()) {
        let expect: Value = serde_json::from_slice(&std::fs::read(dir.join("expect.json")).unwrap()).unwrap();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let given: Vec<&str> = expect["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        let key = given.iter().position(|a| *a == "--public-key").map(|i| given[i + 1]).unwrap();
        let mut args = vec![given[0].into(), dir.join(given[1]).into_os_string(), dir.join(key).into_os_string()];
        if given.contains(&"--require-sealed") {
            args.push("--require-sealed".into());
        }
        let (code, said) = testkit::document_verifier(&args);
        assert_eq!(code, expect["exit"].as_i64().map(|c| c as i32), "{name}: {said}");
        if code != Some(0) {
            for place in places(expect["says"].as_str().unwrap()) {
                assert!(said.contains(&place), "{name}: the document's verifier does not name {place}: {said}");
            }
        }
        seen += 1;
    }
    assert!(seen >= 10, "only {seen} vectors");
}

/// A trail of some size written by the gateway's writer (`passerelle audit generate`: group
/// commits, checkpoints by count, by time and at the stop) and its exports by sequence number
/// and by time verify with the document's verifier; an export with one record changed does
/// not, and the verifier names its line.
#[test]
fn generated_trails_and_their_exports_verify_by_the_document() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("g");
    let out = passerelle()
        .args(["audit", "generate", "--records", "25000", "--subjects", "3000", "--organisations", "20"])
        .args(["--years", "1", "--until", "2026-06-30"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let trail = dir.join("audit");
    let key = dir.join("pki/audit-signing.pub");
    let (code, said) = testkit::document_verifier_on_trail(&trail, &key);
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("records 1..25000"), "{said}");

    let export = |args: &[&str], file: &str| {
        let out = passerelle().args(["audit", "export"]).arg(&trail).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let path = work.path().join(file);
        std::fs::write(&path, &out.stdout).unwrap();
        (path, String::from_utf8(out.stdout).unwrap())
    };
    for (args, file) in [
        (&["--from-seq", "12345", "--to-seq", "23456"][..], "by-seq.jsonl"),
        (&["--from", "2026-03-01", "--to", "2026-03-02"][..], "by-time.jsonl"),
    ] {
        let (path, text) = export(args, file);
        assert!(text.lines().count() > 3, "{file}: {text}");
        let (code, said) = testkit::document_verifier(&["verify-export".as_ref(), path.as_os_str(), key.as_os_str()]);
        assert_eq!(code, Some(0), "{file}: {said}");

        // One record's outcome changed, its hash kept.
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let at = lines.iter().position(|l| l.contains("\"in_range\":true")).unwrap();
        lines[at] = lines[at].replacen("granted", "refused", 1);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let (code, said) = testkit::document_verifier(&["verify-export".as_ref(), path.as_os_str(), key.as_os_str()]);
        assert_eq!(code, Some(1), "{file}: {said}");
        assert!(said.contains(&format!("line {}: record", at + 1)) && said.contains("altered"), "{file}: {said}");
    }
}
