//! The audit trail of the running gateway: one record per call with the right fields, a
//! verification that catches tampering, and failing closed when the trail cannot be written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use bytes::Bytes;
use gateway::audit::format::{self, HEADER_LEN};
use gateway::audit::record::StoredRecord;
use gateway::audit::verify::{read_records, verify_dir};
use gateway::audit::{Outcome, RecordKind, SubjectRef};
use http::{Method, StatusCode};
use tests::{ASSOC_CALLER, Harness, NO_KBO, association, person, send, sigedis, vcode};

fn by_request_id<'a>(records: &'a [StoredRecord], id: &str) -> Vec<&'a StoredRecord> {
    records.iter().filter(|r| r.record.request_id == id).collect()
}

#[tokio::test]
async fn every_call_leaves_exactly_one_record_with_its_facts() {
    let h = Harness::start().await.unwrap();
    let agency = h.client(ASSOC_CALLER);
    let v = vcode();
    fn rid(n: &str) -> [(&'static str, &str); 1] {
        [("x-request-id", n)]
    }
    let mut calls = Vec::new();
    calls.push(("granted", association(&agency, &v, &rid("granted")).await.unwrap()));
    calls.push(("agency-b", association(&h.client("agency-b"), &v, &rid("agency-b")).await.unwrap()));
    calls.push(("consent", sigedis(&h.client("bank-a"), &person(), &rid("consent")).await.unwrap()));
    calls.push(("bad-subject", sigedis(&h.client("bank-a"), "85073003329", &rid("bad-subject")).await.unwrap()));
    calls.push(("no-kbo", association(&h.client(NO_KBO), &v, &rid("no-kbo")).await.unwrap()));
    let unknown = send(&agency, Method::GET, "/nothing/here", &rid("unknown"), Bytes::new()).await.unwrap();
    calls.push(("unknown", unknown));
    // A caller-chosen request id may repeat; generated ones never do.
    let generated = association(&agency, &v, &[]).await.unwrap();
    let generated_id = generated.headers["x-request-id"].to_str().unwrap().to_owned();

    // The trail also holds the policy import of the first start (a policy-change record).
    let records: Vec<StoredRecord> = read_records(&h.demo.config.audit.dir)
        .unwrap()
        .into_iter()
        .filter(|r| r.record.kind != RecordKind::PolicyChange)
        .collect();
    assert_eq!(records.len(), calls.len() + 1, "one record per call, no more");
    for (name, answer) in &calls {
        let found = by_request_id(&records, name);
        assert_eq!(found.len(), 1, "{name}: {found:?}");
        assert_eq!(found[0].record.status, answer.status.as_u16(), "{name}");
        assert_eq!(found[0].record.code.as_deref(), answer.code(), "{name}");
    }
    assert_eq!(by_request_id(&records, &generated_id).len(), 1);

    let g = &by_request_id(&records, "granted")[0].record;
    assert_eq!(g.outcome, Outcome::Granted);
    assert_eq!(g.caller.as_deref(), Some("0207123407"));
    assert_eq!(g.service.as_deref(), Some("associations.association"));
    assert_eq!(g.legal_basis.as_deref(), Some(tests::ASSOC_LEGAL_BASIS));
    assert_eq!(g.purpose.as_deref(), Some(tests::ASSOC_PURPOSE));
    assert_eq!(g.grant.as_deref(), Some("assoc-agency-a-subsidy"));
    // The association named, and the representatives whose data left with the answer.
    assert_eq!(g.subjects[0], SubjectRef::Association(v.clone()));
    assert!(g.subjects[1..].iter().any(|s| matches!(s, SubjectRef::Person(n) if n.len() == 11)), "{:?}", g.subjects);
    assert!(g.fields.contains(&"representatives".to_owned()) && !g.fields.contains(&"recognition".to_owned()));
    assert_eq!(g.upstream_status, Some(200));
    assert_eq!(g.environment.as_deref(), Some("production"));
    assert_eq!(g.cert_fingerprint.as_ref().map(String::len), Some(64));

    let b = &by_request_id(&records, "agency-b")[0].record;
    assert_eq!((b.outcome, b.code.as_deref()), (Outcome::Refused, Some("LEGAL_BASIS_NOT_APPLICABLE")));
    assert!(b.fields.is_empty() && b.upstream_status.is_none());
    let c = &by_request_id(&records, "consent")[0].record;
    assert_eq!(c.code.as_deref(), Some("CONSENT_MISSING"));
    assert_eq!(c.subjects, vec![SubjectRef::Person(person())]);
    let n = &by_request_id(&records, "no-kbo")[0].record;
    assert_eq!((n.caller.as_deref(), n.code.as_deref()), (None, Some("CLIENT_CERT_INVALID")));
    let u = &by_request_id(&records, "unknown")[0].record;
    assert_eq!((u.service.as_deref(), u.operation.as_str()), (None, "GET /nothing/here"));

    // The sequence numbers are contiguous (after the policy import, record 1) and the trail
    // verifies.
    assert_eq!(records[0].seq, 2);
    assert!(records.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    let report = verify_dir(&h.demo.config.audit.dir, &h.demo.gateway.audit.public_key).unwrap();
    assert_eq!(report.problem, None);
    assert_eq!(report.records, records.len() as u64 + 1, "the calls' records and the policy import");
}

/// A copy of a trail directory to damage.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[tokio::test]
async fn verify_names_the_record_after_tampering() {
    let h = Harness::start().await.unwrap();
    let agency = h.client(ASSOC_CALLER);
    for i in 0..12 {
        let id = format!("call-{i}");
        association(&agency, &vcode(), &[("x-request-id", id.as_str())]).await.unwrap();
    }
    let key = h.demo.gateway.audit.public_key;
    let (cfg, _guard) = h.stop().await; // writes the final checkpoint
    let dir = cfg.audit.dir;
    assert_eq!(verify_dir(&dir, &key).unwrap().problem, None);

    let seg = format::segments(&dir).unwrap()[0].1.clone();
    let data = std::fs::read(&seg).unwrap();
    let (frames, _) = format::decode_frames(&data, HEADER_LEN);
    // Record 1 is the policy import of the first start, then the 12 calls.
    assert_eq!(frames.len(), 13);
    let span = |i: usize| {
        let start = frames[i].offset as usize;
        let end = frames.get(i + 1).map_or(data.len(), |f| f.offset as usize);
        start..end
    };
    let work = tempfile::tempdir().unwrap();
    let check = |name: &str, bytes: Vec<u8>, expect: &str| {
        let d = work.path().join(name);
        copy_dir(&dir, &d);
        std::fs::write(d.join(seg.file_name().unwrap()), bytes).unwrap();
        let problem = verify_dir(&d, &key).unwrap().problem.unwrap_or_else(|| panic!("{name}: verified"));
        assert!(problem.contains(expect), "{name}: {problem}");
        // The gateway refuses to start on a damaged trail rather than appending to it.
    };

    // A byte of record 5 flipped.
    let mut b = data.clone();
    b[span(4).start + 60] ^= 0x01;
    check("flip", b, "record 5 ");
    // Record 7 deleted.
    let mut b = data.clone();
    b.drain(span(6));
    check("delete", b, "record 7 ");
    // Records 3 and 4 swapped.
    let mut b = data[..span(2).start].to_vec();
    b.extend_from_slice(&data[span(3)]);
    b.extend_from_slice(&data[span(2)]);
    b.extend_from_slice(&data[span(3).end..]);
    check("swap", b, "record 3 ");
    // The tail cut past the final checkpoint (at record 13).
    check("truncate", data[..span(10).start].to_vec(), "checkpoint at record 13 but the trail ends at record 10");
    // A forged checkpoint key is caught too.
    let d = work.path().join("other-key");
    copy_dir(&dir, &d);
    let other = [7u8; 32];
    assert!(verify_dir(&d, &other).unwrap().problem.unwrap().contains("bad signature"));
}

#[tokio::test]
async fn a_damaged_trail_refuses_to_start_and_a_torn_tail_is_repaired() {
    let h = Harness::start().await.unwrap();
    for _ in 0..3 {
        association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    }
    let (cfg, _guard) = h.stop().await;
    let seg = format::segments(&cfg.audit.dir).unwrap()[0].1.clone();
    let good = std::fs::read(&seg).unwrap();

    // A write cut short by a crash: half a frame after the last one, then the zeros the
    // segment ends in (a direct write covers whole blocks).
    let end = format::frames_end(&format::decode_frames(&good, HEADER_LEN).0, HEADER_LEN) as usize;
    // The torn part ends on a byte that is not zero: zeros after it are the block's padding,
    // so a torn part ending in a zero byte (the frame's bytes vary from run to run) would be
    // counted one byte short.
    let cut = (30..).find(|&n| good[HEADER_LEN + n - 1] != 0).unwrap();
    let mut torn = good[..end].to_vec();
    torn.extend_from_slice(&good[HEADER_LEN..HEADER_LEN + cut]);
    torn.resize(torn.len().next_multiple_of(format::BLOCK), 0);
    std::fs::write(&seg, &torn).unwrap();
    let gw = gateway::server::start(&cfg).await.unwrap();
    // The policy import of the first start, then the 3 calls.
    assert_eq!((gw.recovery.torn_bytes, gw.recovery.last_seq), (cut as u64, 4));
    gw.shutdown().await;
    assert_eq!(std::fs::read(&seg).unwrap(), &good[..end], "only the torn bytes were cut");

    // A record altered in the middle: the gateway will not append to that trail.
    let mut bad = good.clone();
    bad[HEADER_LEN + 50] ^= 0x20;
    let (frames, _) = format::decode_frames(&good, HEADER_LEN);
    assert!(frames.len() == 4);
    // Fix the frame checksum so only the hash chain can tell.
    let f = &frames[0];
    let mut fixed = Vec::new();
    format::encode_frame(&mut fixed, f.kind, &f.hash, &bad[f.offset as usize + 41..frames[1].offset as usize]);
    bad.splice(f.offset as usize..frames[1].offset as usize, fixed);
    std::fs::write(&seg, &bad).unwrap();
    let err = gateway::server::start(&cfg).await.unwrap_err();
    assert!(format!("{err:#}").contains("damaged at record 1"), "{err:#}");
}

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it, which needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_fails_closed_and_recovers() {
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("audit");
    let _fs = Tmpfs::mount(&mnt, "256k");
    let dir = mnt.to_str().unwrap().to_owned();
    let h = Harness::with_overrides(&[("PASSERELLE__AUDIT__DIR", dir.as_str())]).await.unwrap();
    let agency = h.client(ASSOC_CALLER);
    assert_eq!(association(&agency, &vcode(), &[]).await.unwrap().status, StatusCode::OK);

    // Fill the file system completely.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.write_all(&[0u8; 1]);
        let _ = f.sync_all();
    }
    // The segment's last page may still have room for a few records: those calls are answered
    // and recorded. Once it is full every call fails closed.
    let mut answered = 1;
    let mut refused = 0;
    for i in 0..40 {
        let a = association(&agency, &vcode(), &[]).await.unwrap();
        if a.status == StatusCode::OK {
            assert_eq!(refused, 0, "call {i}: answered after the trail was full");
            answered += 1;
            continue;
        }
        assert_eq!(a.code(), Some("AUDIT_UNAVAILABLE"), "call {i}: {}", a.text());
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!a.text().contains(&vcode()), "no data may leave without its record");
        refused += 1;
    }
    assert!(refused >= 30, "the full file system was not noticed: {answered} answered, {refused} refused");
    assert!(!h.demo.gateway.audit.status.writable.load(std::sync::atomic::Ordering::Acquire));

    // Space again: the gateway recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    let a = association(&agency, &vcode(), &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json().unwrap()["vCode"], vcode());
    // Every answered call has its record, and the failed batches left nothing half-written.
    let records = read_records(&mnt).unwrap();
    // The policy import of the first start, the answered calls, the call after recovery.
    assert_eq!(records.len(), answered + 2);
    assert_eq!(verify_dir(&mnt, &h.demo.gateway.audit.public_key).unwrap().problem, None);
}

/// A small ext4 file system on a loop device, mounted with `errors=remount-ro`, so that a
/// file-system error turns it read-only under the gateway's open files, as a failing disk does.
/// Needs root, `mkfs.ext4` and a loop device (CI runs as root).
struct Ext4Loop {
    image: std::path::PathBuf,
    dir: std::path::PathBuf,
    device: String,
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Ext4Loop {
    fn mount(image: &Path, dir: &Path) -> Self {
        std::fs::File::create(image).unwrap().set_len(32 << 20).unwrap();
        run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        std::fs::create_dir_all(dir).unwrap();
        let fs = Ext4Loop { image: image.to_owned(), dir: dir.to_owned(), device: String::new() };
        fs.attach()
    }

    fn attach(mut self) -> Self {
        self.device = run("losetup", &["--find", "--show", self.image.to_str().unwrap()]);
        run("mount", &["-o", "errors=remount-ro", &self.device, self.dir.to_str().unwrap()]);
        self
    }

    /// Makes the kernel record a file-system error: ext4 turns read-only at once, and every
    /// write through an open file fails with EROFS.
    fn fail(&self) {
        let name = self.device.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "passerelle test").unwrap();
    }

    /// The operator's repair: unmount, check, mount again (an ext4 file system that turned
    /// read-only on an error does not remount writable in place).
    fn repair(self) -> Self {
        run("umount", &[self.dir.to_str().unwrap()]);
        run("losetup", &["-d", &self.device]);
        let out = std::process::Command::new("e2fsck").args(["-fy"]).arg(&self.image).output().unwrap();
        // 0: clean, 1: errors corrected.
        assert!(matches!(out.status.code(), Some(0 | 1)), "e2fsck: {}", String::from_utf8_lossy(&out.stdout));
        self.attach()
    }
}

impl Drop for Ext4Loop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::process::Command::new("losetup").args(["-d", &self.device]).status();
    }
}

#[tokio::test]
async fn a_disk_turned_read_only_fails_closed_and_the_gateway_comes_back_after_repair() {
    let (upstream, _hits) = tests::counting_upstream(tests::association_doc("kept")).await.unwrap();
    let url = upstream.url();
    let work = tempfile::tempdir().unwrap();
    let mnt = work.path().join("disk");
    let fs = Ext4Loop::mount(&work.path().join("disk.img"), &mnt);
    let dir = mnt.join("trail");
    let dir_s = dir.to_str().unwrap().to_owned();
    let h = Harness::with_overrides(&[
        ("PASSERELLE__AUDIT__DIR", dir_s.as_str()),
        ("PASSERELLE__SOURCES__ASSOCIATIONS__UPSTREAM", url.as_str()),
    ])
    .await
    .unwrap();
    let agency = h.client(ASSOC_CALLER);
    assert_eq!(association(&agency, &vcode(), &[]).await.unwrap().status, StatusCode::OK);

    fs.fail();
    for i in 0..10 {
        let a = association(&agency, &vcode(), &[]).await.unwrap();
        assert_eq!((a.status, a.code()), (StatusCode::SERVICE_UNAVAILABLE, Some("AUDIT_UNAVAILABLE")), "call {i}");
        assert!(!a.text().contains("kept"), "no data may leave without its record");
    }
    assert!(!h.demo.gateway.audit.status.writable.load(std::sync::atomic::Ordering::Acquire));

    // Stopped (its final checkpoint cannot be written; it must not hang), repaired, started
    // again on the same trail.
    let ca = h.demo.pki.ca.cert_pem();
    let issued = h.demo.pki.client(ASSOC_CALLER).unwrap().clone();
    let (cfg, _guard) = tokio::time::timeout(std::time::Duration::from_secs(20), h.stop()).await.unwrap();
    let _fs = fs.repair();
    let gw = gateway::server::start(&cfg).await.unwrap();
    let client = gateway::client::MtlsClient::new(
        gw.data_addr,
        ca.as_bytes(),
        Some((issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())),
        gateway::client::HttpVersion::Http1,
    )
    .unwrap();
    let a = association(&client, &vcode(), &[]).await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    gw.shutdown().await;
    // The policy import of the first start, the call before the failure, the call after: the
    // refused calls left nothing, and the trail verifies.
    let records: Vec<_> =
        read_records(&dir).unwrap().into_iter().filter(|r| r.record.kind != RecordKind::PolicyChange).collect();
    assert_eq!(records.len(), 2, "nothing of the refused calls was written");
    let key = gateway::audit::trail::signing_public_key(&cfg.audit.signing_key).unwrap();
    assert_eq!(verify_dir(&dir, &key).unwrap().problem, None);
    upstream.abort();
}

/// Rebuilds `checkpoints.log` from `cps`, chained and signed with `key` (what someone with
/// write access to the files but another key could do).
fn resign(cps: &[format::Checkpoint], key: &ring::signature::Ed25519KeyPair) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = format::GENESIS;
    for cp in cps {
        let hash: [u8; 32] = format::unhex(&cp.hash).unwrap().try_into().unwrap();
        prev = format::signed_checkpoint(&mut out, key, cp.seq, &hash, cp.time_ms, &prev);
    }
    out
}

/// checkpoints.log is chained and read to its last byte: a flipped byte, a cut, a removed,
/// inserted or reordered checkpoint, or checkpoints signed with another key are each reported
/// with their place; records no checkpoint seals are counted; a trail emptied of its
/// checkpoints cannot pass as sealed.
#[tokio::test]
async fn every_byte_of_checkpoints_log_counts() {
    let h = Harness::with_overrides(&[("PASSERELLE__AUDIT__CHECKPOINT_EVERY", "2")]).await.unwrap();
    let agency = h.client(ASSOC_CALLER);
    for _ in 0..9 {
        association(&agency, &vcode(), &[]).await.unwrap();
    }
    let key = h.demo.gateway.audit.public_key;
    let (cfg, _guard) = h.stop().await;
    let dir = cfg.audit.dir.clone();
    let report = verify_dir(&dir, &key).unwrap();
    assert_eq!((report.problem.as_deref(), report.unsealed), (None, 0), "a clean stop seals everything");
    assert!(report.checkpoints >= 4, "{report:?}");
    let cp_path = dir.join(format::CHECKPOINTS_FILE);
    let log = std::fs::read(&cp_path).unwrap();
    let (frames, stop) = format::decode_frames_strict(&log, 0);
    assert_eq!(stop, None);
    let span = |i: usize| frames[i].offset as usize..frames.get(i + 1).map_or(log.len(), |f| f.offset as usize);
    let work = tempfile::tempdir().unwrap();
    let with_log = |name: &str, bytes: &[u8]| {
        let d = work.path().join(name);
        copy_dir(&dir, &d);
        std::fs::write(d.join(format::CHECKPOINTS_FILE), bytes).unwrap();
        d
    };
    let problem =
        |d: &Path| verify_dir(d, &key).unwrap().problem.unwrap_or_else(|| panic!("{}: verified", d.display()));

    // One byte flipped in the second checkpoint.
    let mut b = log.clone();
    b[span(1).start + 60] ^= 0x01;
    let p = problem(&with_log("flip", &b));
    assert!(p.contains(&format!("checkpoints.log, offset {}: damaged", span(1).start)), "{p}");
    // Cut in the middle of the last checkpoint.
    let last = frames.len() - 1;
    let p = problem(&with_log("cut", &log[..span(last).start + 20]));
    assert!(p.contains(&format!("checkpoints.log, offset {}: cut short", span(last).start)), "{p}");
    // The second checkpoint removed; the second and third swapped.
    let mut b = log[..span(1).start].to_vec();
    b.extend_from_slice(&log[span(2).start..]);
    let p = problem(&with_log("removed", &b));
    assert!(p.contains("removed, inserted or reordered"), "{p}");
    let mut b = log[..span(1).start].to_vec();
    b.extend_from_slice(&log[span(2)]);
    b.extend_from_slice(&log[span(1)]);
    b.extend_from_slice(&log[span(2).end..]);
    let p = problem(&with_log("swapped", &b));
    assert!(p.contains("removed, inserted or reordered"), "{p}");
    // Every checkpoint re-signed, correctly chained, with another key.
    let cps: Vec<format::Checkpoint> = frames.iter().map(|f| serde_json::from_slice(&f.payload).unwrap()).collect();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let other = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let p = problem(&with_log("other-key", &resign(&cps, &other)));
    assert!(p.contains(&format!("checkpoint at record {}: bad signature", cps[0].seq)), "{p}");
    // Re-signed with the right key, the same chain verifies (the rebuild above is faithful).
    let own = ring::signature::Ed25519KeyPair::from_pkcs8(&std::fs::read(&cfg.audit.signing_key).unwrap()).unwrap();
    assert_eq!(verify_dir(&with_log("same-key", &resign(&cps, &own)), &key).unwrap().problem, None);
    // Emptied: nothing is sealed any more, and verify says so.
    let d = with_log("emptied", &[]);
    let r = verify_dir(&d, &key).unwrap();
    assert_eq!((r.problem, r.unsealed, r.checkpoints), (None, r.records, 0));
}

/// Start-up recovery never cuts an answered record: damage that records follow, or that a
/// checkpoint sealed, stops the start without changing a byte; a torn checkpoint is moved
/// aside before anything is appended; a clean stop right after a recovery seals the trail.
#[tokio::test]
async fn recovery_cuts_only_a_torn_last_write() {
    let h = Harness::with_overrides(&[("PASSERELLE__AUDIT__CHECKPOINT_EVERY", "2")]).await.unwrap();
    for _ in 0..5 {
        association(&h.client(ASSOC_CALLER), &vcode(), &[]).await.unwrap();
    }
    let key = h.demo.gateway.audit.public_key;
    let (cfg, _guard) = h.stop().await;
    let dir = cfg.audit.dir.clone();
    let seg = format::segments(&dir).unwrap()[0].1.clone();
    let good = std::fs::read(&seg).unwrap();
    let (frames, _) = format::decode_frames(&good, HEADER_LEN);
    let cp_path = dir.join(format::CHECKPOINTS_FILE);
    let good_log = std::fs::read(&cp_path).unwrap();

    // The last record damaged, but the final checkpoint sealed it: refused, untouched.
    let mut b = good.clone();
    let last = frames.last().unwrap();
    b[last.offset as usize + 45] ^= 0x01;
    std::fs::write(&seg, &b).unwrap();
    let err = format!("{:#}", gateway::server::start(&cfg).await.unwrap_err());
    assert!(
        err.contains(&format!("offset {}, record {}: damaged, but checkpoint", last.offset, frames.len())),
        "{err}"
    );
    assert_eq!(std::fs::read(&seg).unwrap(), b, "nothing was cut");
    // A record in the middle damaged: refused, untouched.
    let mut b = good.clone();
    b[frames[2].offset as usize + 45] ^= 0x01;
    std::fs::write(&seg, &b).unwrap();
    let err = format!("{:#}", gateway::server::start(&cfg).await.unwrap_err());
    assert!(err.contains(&format!("offset {}, record 3: damaged, and records follow it", frames[2].offset)), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), b);
    std::fs::write(&seg, &good).unwrap();

    // The last checkpoint lost to a crash (its frame torn) and a record written after it:
    // both torn tails are moved aside; the clean stop that follows seals everything again.
    let (cps, _) = format::decode_frames_strict(&good_log, 0);
    let last_cp = cps.last().unwrap().offset as usize;
    let mut torn_log = good_log[..last_cp].to_vec();
    torn_log.extend_from_slice(&good_log[last_cp..last_cp + 25]);
    std::fs::write(&cp_path, &torn_log).unwrap();
    let gw = gateway::server::start(&cfg).await.unwrap();
    gw.shutdown().await;
    assert!(dir.join(format!("{}.torn-{last_cp}", format::CHECKPOINTS_FILE)).exists());
    let r = verify_dir(&dir, &key).unwrap();
    assert_eq!((r.problem, r.unsealed), (None, 0), "the stop after the recovery wrote a checkpoint");
}

/// An export proves itself: a range by sequence number (or by time, translated to one),
/// between a signed anchor and a signed seal, checked from its lines alone; any edit of it is
/// named by line.
#[tokio::test]
async fn an_export_proves_itself_and_any_edit_is_caught() {
    use gateway::audit::verify::{Selection, export, verify_export};
    let h = Harness::with_overrides(&[("PASSERELLE__AUDIT__CHECKPOINT_EVERY", "3")]).await.unwrap();
    let agency = h.client(ASSOC_CALLER);
    for _ in 0..10 {
        association(&agency, &vcode(), &[]).await.unwrap();
    }
    let key = h.demo.gateway.audit.public_key;
    let (cfg, _guard) = h.stop().await;
    let dir = cfg.audit.dir.clone();
    let mut out = Vec::new();
    assert_eq!(export(&dir, Selection::Seq { from: 5, to: Some(7) }, &mut out).unwrap(), 3);
    let text = String::from_utf8(out).unwrap();
    let reports = verify_export(&text, &key).unwrap();
    assert_eq!((reports[0].from_seq, reports[0].to_seq), (5, 7));
    let anchor = reports[0].anchor.expect("anchored on a checkpoint before record 5");
    assert!(anchor < 5 && reports[0].seal >= 7, "{reports:?}");
    assert_eq!(reports[0].context, (5 - anchor - 1) + (reports[0].seal - 7));
    let lines: Vec<&str> = text.lines().collect();
    let edited = |f: &dyn Fn(&mut Vec<String>)| {
        let mut v: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        f(&mut v);
        verify_export(&(v.join("\n") + "\n"), &key).unwrap_err()
    };
    let in_range = lines.iter().position(|l| l.contains("\"in_range\":true")).unwrap();
    // A record's content changed (its hash kept): named.
    let e = edited(&|v| v[in_range] = v[in_range].replace("\"outcome\\\":\\\"granted", "\"outcome\\\":\\\"refused"));
    assert!(e.contains(&format!("line {}: record 5: altered", in_range + 1)), "{e}");
    // A record removed: the next one does not continue the chain.
    let e = edited(&|v| {
        v.remove(in_range);
    });
    assert!(e.contains("expected record 5"), "{e}");
    // The anchor removed: the records no longer start from a signed point.
    let e = edited(&|v| {
        v.remove(1);
    });
    assert!(e.contains("no anchor checkpoint before it"), "{e}");
    // The seal's signature forged.
    let last = lines.len() - 1;
    let e = edited(&|v| {
        let mut seal: serde_json::Value = serde_json::from_str(&v[last]).unwrap();
        seal["signature"] = format::hex(&[1u8; 64]).into();
        v[last] = seal.to_string();
    });
    assert!(e.contains("seal checkpoint") && e.contains("bad signature"), "{e}");
    // Another key: nothing verifies.
    assert!(verify_export(&text, &[9u8; 32]).unwrap_err().contains("bad signature"));

    // By time: the whole day, translated to records 1..last, contiguous.
    let mut out = Vec::new();
    let n = export(&dir, Selection::Time { from_ms: 0, to_ms: u64::MAX }, &mut out).unwrap();
    let r = verify_export(&String::from_utf8(out).unwrap(), &key).unwrap();
    assert_eq!((r[0].from_seq, r[0].to_seq, n), (1, 11, 11), "{r:?}");
}

/// Attempted accesses are logged too (seed 004 §3, §6): refused handshakes on the data plane
/// become records, one per (reason, certificate, peer) and second with their count, and an
/// auditor's query by organisation finds those that presented its enterprise number.
#[tokio::test]
async fn refused_handshakes_are_recorded_and_found_by_organisation() {
    let h = Harness::start().await.unwrap();
    // An expired certificate of agency A, five times; no certificate at all, twice.
    for _ in 0..5 {
        assert!(association(&h.client(tests::EXPIRED), &vcode(), &[]).await.is_err(), "an expired certificate");
    }
    for _ in 0..2 {
        assert!(association(&h.anonymous(), &vcode(), &[]).await.is_err(), "no certificate");
    }
    // The records are written within the second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let attempts = loop {
        let records = read_records(&h.demo.config.audit.dir).unwrap();
        let a: Vec<StoredRecord> =
            records.into_iter().filter(|r| r.record.kind == RecordKind::HandshakeRefused).collect();
        let count = |r: &StoredRecord| {
            r.record.justification.as_deref().and_then(|j| j.split(' ').next()).and_then(|n| n.parse::<u64>().ok())
        };
        if a.iter().filter_map(count).sum::<u64>() >= 7 {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "refused handshakes not recorded: {a:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let agency = tests::Harness::agency_kbo_static().to_string().replace('.', "");
    let expired: Vec<&StoredRecord> = attempts.iter().filter(|r| r.record.caller.as_deref() == Some(&agency)).collect();
    assert!(!expired.is_empty(), "{attempts:?}");
    for r in &expired {
        assert_eq!(r.record.outcome, Outcome::Refused);
        assert_eq!(r.record.operation, "TLS handshake on data");
        assert!(r.record.cert_fingerprint.as_deref().is_some_and(|f| f.len() == 64));
        let j = r.record.justification.as_deref().unwrap();
        assert!(j.contains("attempt(s) from 127.0.0.1; certificate subject:"), "{j}");
    }
    assert!(attempts.len() <= 4, "aggregated per second, not one record per attempt: {}", attempts.len());
    let anonymous: Vec<&StoredRecord> = attempts.iter().filter(|r| r.record.cert_fingerprint.is_none()).collect();
    assert!(!anonymous.is_empty(), "{attempts:?}");

    // An auditor asking about agency A's calls sees its attempts.
    let body = serde_json::json!({
        "caller": agency,
        "justification": { "case_reference": "SSIPVP/2026/3", "legal_ground": "RD 10/12/2017 §6", "requested_by": "SSIPVP" },
    });
    let a = send(&h.control_client("admin"), Method::POST, "/audit/queries", &[], Bytes::from(body.to_string()))
        .await
        .unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let found = a.json().unwrap()["records"].as_array().unwrap().clone();
    assert!(found.iter().any(|r| r["kind"] == "handshake-refused"), "{found:?}");

    // The attempts and the query, as a verifier written from the document reads them.
    let key = h.demo.gateway.audit.public_key;
    let (cfg, _dir) = h.stop().await;
    tests::verifies_by_the_document(&cfg.audit.dir, &key);
}
