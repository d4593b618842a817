#!/usr/bin/env python3
"""A second audit verifier, written from docs/audit-format.md alone (no code of the gateway read
or shared), as a stranger holding a trail and the gateway's public key would write it. The test
suite runs it over the published vectors and over trails the gateway writes, so that the
document, not only the code, is what a trail is checked against: where this and `passerelle
audit verify` disagree, the document or the gateway is wrong.

    verify.py verify DIR PUBLIC_KEY [--require-sealed]
    verify.py verify-export FILE PUBLIC_KEY

PUBLIC_KEY is the pinned key: 64 hex digits, or a file holding them (§5). Prints "verifies: …"
and exits 0, or prints "FAILS: …" naming the file, offset, record or line and exits 1; exits 2
on a usage error. Besides the document's verification rules it checks what §3 says of every
record: its payload is canonical JSON (re-encoding it by §3's rules gives its bytes) and the
members it knows appear in the documented order.
"""

import hashlib
import json
import os
import re
import struct
import sys
import zlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

MAGIC = b"PSLAUDT1"
HEADER = 52
MAX_PAYLOAD = 1_048_576
SEGMENT = re.compile(r"segment-(\d{20})\.log")
# §3: the members of a record, in this order; later versions may add members at the end only.
MEMBERS = [
    "seq", "kind", "time_ms", "request_id", "trace_id", "caller", "cert_fingerprint", "end_user",
    "environment", "service", "operation", "legal_basis", "grant", "purpose", "subjects", "fields",
    "consent_id", "outcome", "status", "code", "upstream_status", "latency_us", "justification",
]
KINDS = {"data-call", "audit-query", "policy-change", "handshake-refused"}
CHECKPOINT = ["seq", "hash", "time_ms", "prev", "public_key", "signature"]
CHECKPOINT_V1 = ["seq", "hash", "time_ms", "public_key", "signature"]


class Fails(Exception):
    pass


def crc32(b):
    return zlib.crc32(b) & 0xFFFFFFFF


def sha256(b):
    return hashlib.sha256(b).digest()


def canonical(value):
    """§3's canonical encoding. Python's encoder with these settings writes exactly its rules:
    the five short escapes, other control characters as lowercase \\u00xx, everything else as
    itself in UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a member appears twice")
    return dict(pairs)


def check_record(payload, where):
    try:
        rec = json.loads(payload.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise Fails(f"{where}: the payload is not a JSON object ({e})")
    if not isinstance(rec, dict):
        raise Fails(f"{where}: the payload is not a JSON object")
    if canonical(rec) != payload:
        raise Fails(f"{where}: the payload is not canonical JSON (§3)")
    keys = list(rec)  # no member twice (`no_duplicates`): unknown members can only follow
    if keys[: len(MEMBERS)] != MEMBERS:
        raise Fails(f"{where}: members not as §3 lists them: {keys}")
    wrong = [k for k, ok in member_checks(rec) if not ok]
    if wrong:
        raise Fails(f"{where}: {', '.join(wrong)} not as §3 describes")
    return rec


def text(v, pattern=None, most=None):
    """A string (matching `pattern`, at most `most` bytes) or null."""
    if v is None:
        return True
    if not isinstance(v, str):
        return False
    return (pattern is None or re.fullmatch(pattern, v) is not None) and (most is None or len(v.encode()) <= most)


def integer(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


SUBJECT = {"person": r"\d{11}", "organisation": r"\d{10}", "association": r"V\d{7}"}


def member_checks(r):
    """§3, member by member."""
    refused = r["outcome"] == "refused"
    method, _, path = r["operation"].partition(" ") if isinstance(r["operation"], str) else ("", "", "")
    yield "seq", integer(r["seq"])
    yield "kind", r["kind"] in KINDS
    yield "time_ms", integer(r["time_ms"])
    yield "request_id", isinstance(r["request_id"], str) and text(r["request_id"], most=256)
    yield "trace_id", text(r["trace_id"], r"[0-9a-f]{32}")
    yield "caller", text(r["caller"], r"\d{10}")
    yield "cert_fingerprint", text(r["cert_fingerprint"], r"[0-9a-f]{64}")
    yield "end_user", text(r["end_user"], most=256)
    yield "environment", r["environment"] in (None, "test", "production")
    yield "service", text(r["service"])
    yield "operation", bool(method) and (r["kind"] != "data-call" or text(path, most=256))
    yield "legal_basis", text(r["legal_basis"], most=256)
    yield "grant", text(r["grant"])
    yield "purpose", text(r["purpose"], most=256)
    yield "subjects", isinstance(r["subjects"], list) and all(
        isinstance(s, dict) and list(s) == ["type", "id"] and s["type"] in SUBJECT and text(s["id"], SUBJECT[s["type"]])
        for s in r["subjects"]
    )
    yield "fields", isinstance(r["fields"], list) and all(isinstance(f, str) for f in r["fields"]) and (
        not refused or not r["fields"]
    )
    yield "consent_id", text(r["consent_id"])
    yield "outcome", r["outcome"] in ("granted", "refused")
    yield "status", integer(r["status"])
    yield "code", (isinstance(r["code"], str) and r["code"] != "") if refused else r["code"] is None
    yield "upstream_status", r["upstream_status"] is None or integer(r["upstream_status"])
    yield "latency_us", integer(r["latency_us"])
    yield "justification", text(r["justification"])


def frames(data, at, zero_tail, where):
    """(offset, kind, hash, payload) of each frame from `at`; with `zero_tail`, stops where every
    remaining byte is zero (§2). `where(offset)` names a frame in a failure."""
    while at < len(data):
        if zero_tail and not any(data[at:]):
            return
        if len(data) - at < 8 + 1 + 32:
            raise Fails(f"{where(at)}: cut short")
        length, crc = struct.unpack_from("<II", data, at)
        end = at + 8 + 1 + 32 + length
        if length == 0 or length > MAX_PAYLOAD or end > len(data):
            raise Fails(f"{where(at)}: cut short or damaged (length {length})")
        body = data[at + 8 : end]
        if crc32(body) != crc:
            raise Fails(f"{where(at)}: damaged (frame CRC)")
        yield at, body[0], body[1:33], body[33:]
        at = end


def checkpoint_message(cp):
    """The signed bytes of a checkpoint (§5), and its version."""
    head = struct.pack(">Q", cp["seq"]) + bytes.fromhex(cp["hash"]) + struct.pack(">Q", cp["time_ms"])
    if "prev" in cp:
        return 2, b"passerelle-audit-checkpoint-v2\x00" + head + bytes.fromhex(cp["prev"])
    return 1, b"passerelle-audit-checkpoint-v1\x00" + head


def signed(key, cp):
    try:
        key.verify(bytes.fromhex(cp["signature"]), checkpoint_message(cp)[1])
        return True
    except (InvalidSignature, ValueError):
        return False


def verify_trail(directory, key, require_sealed):
    names = sorted((int(m.group(1)), f) for f in os.listdir(directory) if (m := SEGMENT.fullmatch(f)))
    if not names:
        raise Fails(f"{directory}: no segment")
    chain = {}  # seq -> hash_seq
    closed_ends = []
    last = prev_hash = None
    for n, name in names:
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        if len(data) < HEADER or data[:8] != MAGIC or crc32(data[:48]) != struct.unpack_from("<I", data, 48)[0]:
            raise Fails(f"{name}, offset 0: the segment header is damaged")
        first = struct.unpack_from("<Q", data, 8)[0]
        if first != n:
            raise Fails(f"{name}, offset 8: first_seq {first} is not the name's {n}")
        anchor = data[16:48]
        if last is None and first == 1 and anchor != bytes(32):
            raise Fails(f"{name}, offset 16: record 1's prev_hash is not 32 zero bytes")
        if last is not None:
            if first != last + 1:
                raise Fails(f"{name}: starts at record {first}, the previous segment ends at {last}")
            if anchor != prev_hash:
                raise Fails(f"{name}, offset 16: prev_hash is not the previous segment's last hash")
        h, seq = anchor, first

        def record_at(at):
            return f"record {seq} ({name}, offset {at})"

        for at, kind, stored, payload in frames(data, HEADER, True, record_at):
            where = record_at(at)
            if kind != 1:
                raise Fails(f"{where}: kind {kind}")
            m = re.match(rb'\{"seq":(0|[1-9][0-9]*),', payload)
            if not m or int(m.group(1)) != seq:
                found = f"record {int(m.group(1))}" if m else repr(payload[:24])
                raise Fails(f"{where}: missing; found {found}")
            h = sha256(h + payload)
            if h != stored:
                raise Fails(f"{where}: altered (chain hash)")
            check_record(payload, where)
            chain[seq] = h
            seq += 1
        if last is not None:
            closed_ends.append(last)
        last, prev_hash = seq - 1, h
    oldest = names[0][0]
    try:
        with open(os.path.join(directory, "checkpoints.log"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = b""
    c_prev, sealed, count, v2 = bytes(32), 0, 0, False
    def checkpoint_at(at):
        return f"checkpoints.log, offset {at}"

    for at, kind, stored, payload in frames(data, 0, False, checkpoint_at):
        where = checkpoint_at(at)
        count += 1
        if kind != 2:
            raise Fails(f"{where}: kind {kind}")
        try:
            cp = json.loads(payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise Fails(f"{where}: not a JSON object ({e})")
        version, _ = checkpoint_message(cp)
        if list(cp) != (CHECKPOINT if version == 2 else CHECKPOINT_V1) or canonical(cp) != payload:
            raise Fails(f"{where}: the checkpoint's members are not as §5 lists them")
        if version == 2:
            v2 = True
            if bytes.fromhex(cp["prev"]) != c_prev:
                raise Fails(f"{where}: the chain of checkpoints is broken (prev)")
            c = sha256(c_prev + payload)
        else:
            if v2:
                raise Fails(f"{where}: a version 1 checkpoint after a version 2 one")
            c = bytes.fromhex(cp["hash"])
        if stored != c:
            raise Fails(f"{where}: the frame's hash is not the checkpoint chain's")
        if not signed(key, cp):
            raise Fails(f"{where}: checkpoint at record {cp['seq']}: the signature fails with the pinned key")
        if cp["seq"] < sealed:
            raise Fails(f"{where}: seq {cp['seq']} below the previous checkpoint's {sealed}")
        if cp["seq"] > last:
            raise Fails(f"{where}: seals record {cp['seq']}, the trail ends at {last}: records lost")
        if cp["seq"] >= oldest and chain[cp["seq"]] != bytes.fromhex(cp["hash"]):
            raise Fails(f"{where}: record {cp['seq']}'s hash is not the one signed")
        c_prev, sealed = c, cp["seq"]
    for end in closed_ends:
        if end > sealed:
            raise Fails(f"record {end} ends a closed segment and is sealed by no checkpoint")
    if require_sealed and last > sealed:
        raise Fails(f"record {last} is sealed by no checkpoint (--require-sealed)")
    return f"verifies: records {oldest}..{last}, {len(names)} segment(s), {count} checkpoint(s), {last - sealed} unsealed"


def verify_export(path, key):
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines[-1] != b"":
        raise Fails(f"line {len(lines)}: no newline at the end")
    lines.pop()
    objects = []
    for i, line in enumerate(lines, 1):
        try:
            objects.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, ValueError) as e:
            raise Fails(f"line {i}: not JSON ({e})")
    i, chains, records = 0, 0, 0

    def at(k):
        if k >= len(objects):
            raise Fails(f"line {k + 1}: the export ends early")
        return objects[k]

    while i < len(objects):
        if at(i)["type"] == "chain":
            i += 1
        header = at(i)
        if header.get("type") != "export" or header.get("version") != 2:
            raise Fails(f"line {i + 1}: not an export header of version 2")
        i += 1
        chains += 1
        lo, hi = header["from_seq"], header["to_seq"]
        if lo is None:
            continue
        if at(i)["type"] == "anchor":
            anchor = at(i)
            if not signed(key, anchor):
                raise Fails(f"line {i + 1}: the anchor's signature fails with the pinned key")
            if anchor["seq"] >= lo:
                raise Fails(f"line {i + 1}: the anchor seals record {anchor['seq']}, not one before {lo}")
            prev, seq = bytes.fromhex(anchor["hash"]), anchor["seq"]
            i += 1
        else:
            prev, seq = bytes(32), 0
        while at(i)["type"] == "record":
            r = at(i)
            seq += 1
            where = f"line {i + 1}: record {r.get('seq')}"
            if r["seq"] != seq:
                raise Fails(f"{where}: expected record {seq}")
            if bytes.fromhex(r["prev_hash"]) != prev:
                raise Fails(f"{where}: prev_hash is not the previous line's hash")
            payload = r["canonical"].encode("utf-8")
            if not payload.startswith(b'{"seq":%d,' % seq):
                raise Fails(f"{where}: canonical does not begin with its seq")
            h = sha256(prev + payload)
            if h != bytes.fromhex(r["hash"]):
                raise Fails(f"{where}: altered")
            if r["in_range"] != (lo <= seq <= hi):
                raise Fails(f"{where}: in_range is {r['in_range']}")
            check_record(payload, where)
            prev = h
            records += 1
            i += 1
        seal = at(i)
        if seal["type"] != "seal":
            raise Fails(f"line {i + 1}: expected the seal")
        if not signed(key, seal):
            raise Fails(f"line {i + 1}: the seal's signature fails with the pinned key")
        if seal["seq"] != seq or bytes.fromhex(seal["hash"]) != prev or seq < hi:
            raise Fails(f"line {i + 1}: the seal does not seal the last record")
        i += 1
    return f"export verifies: {chains} chain(s), {records} record(s)"


def main(argv):
    if len(argv) < 4 or argv[1] not in ("verify", "verify-export"):
        print(__doc__, file=sys.stderr)
        return 2
    pinned = argv[3]
    if os.path.exists(pinned):
        with open(pinned) as f:
            pinned = f.read().strip()
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(pinned))
    except ValueError as e:
        print(f"the pinned key is not 32 bytes in hex ({e})", file=sys.stderr)
        return 2
    try:
        if argv[1] == "verify":
            print(verify_trail(argv[2], key, "--require-sealed" in argv[4:]))
        else:
            print(verify_export(argv[2], key))
    # A member missing, of the wrong type or not hex where the document says hex: the trail is
    # not as the document states, which is a failure to name, not a crash.
    except (Fails, KeyError, TypeError, ValueError, AttributeError, struct.error) as e:
        print(f"FAILS: {e!r}" if not isinstance(e, Fails) else f"FAILS: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
