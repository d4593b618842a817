#!/usr/bin/env python3
"""The disk alone, as the audit writer uses it: what a durable write costs on this machine,
minute by minute, with no gateway running.

    python3 load-tests/disk_probe.py [--rate 2000] [--minutes 10] [--dir DIR]

Writes 4 KiB blocks with `O_DIRECT | O_DSYNC` (the audit writer's durable write, see
gateway/src/audit/durable.rs) at a held rate into a file written beforehand (so no write
extends it or changes its block map, as the prepared next segment is), each block after the
last, and measures every write from its schedule, so that a stalled disk shows in the tail
instead of slowing the probe down. It prints each minute's p50 / p99 / worst, the same
criterion soak.py prints for the gateway (the worst minute's p99 over the median minute's),
and the slowest seconds.

Why: soak.py's per-minute p99 moves with everything under a call, the disk's flushes among
them. A probe run just before or after a soak tells whether the disk alone kept its minutes
within that bound then. The default rate is below the audit writer's 3,000-5,500 durable
writes a second in soak.py's holds, because a write takes 150-300 µs here: at 4,000 a second
the probe would queue behind its own writes and measure that queue.
"""

import argparse
import mmap
import os
import statistics
import sys
import tempfile
import time

BLOCK = 4096
FILE_BYTES = 256 << 20


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * q))]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, default=2000, help="durable writes a second")
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--dir", default=None, help="where to put the probe's file (a temporary directory under target/ by default)")
    args = p.parse_args()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target")
    os.makedirs(root, exist_ok=True)
    work = args.dir or tempfile.mkdtemp(prefix="disk-probe-", dir=root)
    path = os.path.join(work, "probe.dat")

    # The file is written and synced first: the probe's writes then change neither its size
    # nor its block map.
    zeros = mmap.mmap(-1, 1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT)
    for off in range(0, FILE_BYTES, 1 << 20):
        os.pwrite(fd, zeros, off)
    os.fsync(fd)
    os.close(fd)

    block = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
    block.write(os.urandom(BLOCK))
    fd = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_DSYNC)
    period = 1.0 / args.rate
    seconds = {}
    start = time.monotonic()
    k = off = 0
    try:
        while True:
            due = start + k * period
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            os.pwrite(fd, block, off)
            done = time.monotonic()
            off = (off + BLOCK) % FILE_BYTES
            seconds.setdefault(int(due - start), []).append(done - due)
            k += 1
            if done - start >= args.minutes * 60:
                break
    finally:
        os.close(fd)
        os.unlink(path)
        if not args.dir:
            os.rmdir(work)

    print(f"{k} durable 4 KiB writes at {args.rate}/s held, latency from each write's schedule")
    minutes = []
    for m in range(args.minutes):
        v = [x for s in range(m * 60, m * 60 + 60) for x in seconds.get(s, [])]
        if not v:
            continue
        minutes.append(pct(v, 0.99))
        print(f"  {m + 1:2d} min: p50 {pct(v, 0.5) * 1e6:7.0f} µs, p99 {pct(v, 0.99) * 1e6:8.0f} µs, worst {max(v) * 1e3:7.1f} ms")
    med = statistics.median(minutes)
    print(f"p99 per minute: median {med * 1e6:.0f} µs, max {max(minutes) * 1e6:.0f} µs; worst / median {max(minutes) / med:.2f}")
    slow = sorted(seconds.items(), key=lambda kv: -max(kv[1]))[:5]
    print("slowest seconds: " + ", ".join(f"{s} s: worst {max(v) * 1e3:.1f} ms, p99 {pct(v, 0.99) * 1e3:.2f} ms" for s, v in slow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
