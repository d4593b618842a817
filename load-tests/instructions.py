#!/usr/bin/env python3
"""Instructions per call: Passerelle's data plane under callgrind, counted, not timed.

CPU time per call (compare.py) moves with the host: steal, frequency, the other tenant's cache.
The number of instructions a call executes does not, so a change to the data plane can be
judged from one short run, before and after, to the instruction. The same setup as
compare.py (release build, dev PKI, the association register sandbox, the full pipeline with
a durable audit trail), but Passerelle runs under `valgrind --tool=callgrind` on CPU 0: it
gets a warm-up, its counters are zeroed, then a closed-loop run of `--seconds` is counted.

It prints the instructions per call of the data-plane thread (the main thread: pinned to one
CPU the gateway runs a current-thread runtime) and of the whole process, then the functions
that cost the data-plane thread most per call, inclusive of what they call (`--top N`).

Valgrind hides the CPU's SHA extensions, so the audit writer's SHA-256 runs in the software
fallback under it and costs several times its real share: read the audit writer's figure as
an upper bound. The data-plane thread hashes nothing per call.

    python3 load-tests/instructions.py [--seconds 20] [--top 40] [--keep]

(installs valgrind from Debian if missing)
"""

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import compare


def totals(path):
    """The `totals:` line of a callgrind output file."""
    with open(path) as f:
        for line in f:
            if line.startswith("totals:"):
                return int(line.split()[1])
    return 0


def functions(path, calls):
    """Every function by inclusive instructions per call, most first, from `callgrind_annotate`."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    rows, seen = [], set()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r"\s*\[/.*\]\s*$", "", m.group(2))
        # callgrind names a function by file too; inlined copies repeat it: keep the first.
        fn = name.split(":", 1)[-1] if ":" in name else name
        if fn in seen:
            continue
        seen.add(fn)
        rows.append((int(m.group(1).replace(",", "")) / calls, fn))
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--warmup", type=float, default=10)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the work directory (callgrind's files)")
    args = p.parse_args()
    if not shutil.which("valgrind"):
        print("valgrind is missing: installing it from Debian", flush=True)
        compare.run(["apt-get", "update", "-qq"])
        compare.run(["apt-get", "install", "-y", "-qq", "valgrind"],
                    env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if not args.skip_build:
        compare.run(["cargo", "build", "--release", "-j2", "-p", "gateway", "-p", "load-tests"], cwd=compare.ROOT)
    passerelle = os.path.join(compare.RELEASE, "passerelle")
    args.work = tempfile.mkdtemp(prefix="passerelle-instructions-")
    args.pki = os.path.join(args.work, "pki")
    compare.run([passerelle, "certs", "init", "--dir", args.pki], stdout=subprocess.DEVNULL)
    procs = []
    try:
        upstream = compare.free_port()
        sandbox = compare.start_pinned(procs, [passerelle, "sandbox", "associations", "--listen",
                                               f"127.0.0.1:{upstream}"], upstream, 1, stdout=subprocess.PIPE, text=True)
        compare.write_mix(args, sandbox)
        compare.prepare_bundles(args.work)
        port = compare.free_port()
        conf = os.path.join(args.work, "passerelle.toml")
        with open(conf, "w") as f:
            f.write(compare.PASSERELLE_CONF.format(work=args.work, audit=os.path.join(args.work, "audit"),
                                                   upstream=upstream, port=port, pki=args.pki))
        out = os.path.join(args.work, "callgrind.out")
        pa = compare.start_pinned(procs, ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                                          f"--callgrind-out-file={out}", passerelle, "serve", "--config", conf],
                                  port, 0, stderr=open(os.path.join(args.work, "passerelle.log"), "w"))
        time.sleep(1)
        closed = ["--connections", str(args.connections), "--warmup", "0"]
        compare.load(args, port, pa.pid, "closed", closed + ["--duration", str(args.warmup)], "warmup")
        compare.run(["callgrind_control", "--zero", str(pa.pid)], stdout=subprocess.DEVNULL)
        r = compare.load(args, port, pa.pid, "closed", closed + ["--duration", str(args.seconds)], "counted")
        compare.run(["callgrind_control", "--dump", str(pa.pid)], stdout=subprocess.DEVNULL)
        calls = r["requests"]
        if r["unexpected"] or r["transport_errors"]:
            sys.exit(f"{r['unexpected'] + r['transport_errors']} calls failed: no count")
        # With --separate-threads, each dump writes one file per thread: <out>.<dump>-<thread>.
        dumped = sorted(glob.glob(out + ".1-*"))
        if not dumped:
            sys.exit("callgrind wrote no dump")
        by_thread = {int(f.rsplit("-", 1)[1]): totals(f) for f in dumped}
        # Thread 1 is the main thread: the data plane.
        rows = functions(out + ".1-01", calls)
        # The counted run opens its connections anew: their TLS handshakes are not a call's.
        handshakes = next((per for per, fn in rows if fn.startswith("gateway::server::Listen::handshake")), 0)
        print(f"{calls} calls counted ({r['requests_per_second']:.0f}/s under valgrind)")
        print(f"data-plane thread: {by_thread.get(1, 0) / calls - handshakes:,.0f} instructions per call, "
              f"the {args.connections} connections' handshakes excluded ({handshakes:,.0f} a call)")
        print(f"whole process:     {sum(by_thread.values()) / calls:,.0f} instructions per call "
              f"({len(by_thread)} threads: "
              + ", ".join(f"#{t} {v / calls:,.0f}" for t, v in sorted(by_thread.items()) if v / calls >= 100) + ")")
        print(f"\ndata-plane thread, inclusive instructions per call (top {args.top}):")
        for per, fn in rows[:args.top]:
            print(f"{per:>10,.0f}  {fn[:150]}")
    finally:
        compare.stop_all(procs)
        if args.keep:
            print(f"work dir {args.work}")
        else:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
