#!/usr/bin/env python3
"""Held load: Passerelle at 70 % of its saturation rate for 10 minutes, 5 % hostile requests.

Same setup as compare.py (release build, dev PKI, the association register sandbox and the
load generator on CPU 1, Passerelle alone on CPU 0 with its full pipeline and durable audit).
The load is open-loop at a fixed rate (latency measured from each request's schedule, so a
stall shows in the tail) and is measured in one-minute windows. The mix is 95 % permitted
calls and 5 % hostile ones, each of which must get its precise refusal: an unknown route, a
path-traversal route, an invalid vCode, a missing purpose, a purpose the protocol does not
allow, another flow's legal instrument, a body on a service that takes none, and a JSON body
where a SOAP one is expected.

Each window is one run of the load generator; its first second, in which its connections open
and catch up with their schedules, runs at the held rate but is not measured.

The held rate is carried by 128 connections (`--hold-connections`); the closed-loop runs that
set it use 16 (`--connections`). Each connection keeps its own schedule but sends its next call
only once the last is answered, so a connection behind its schedule catches up only by as much
as a call is quicker than its interval. With 16 connections at 16,736 calls/s that interval is
0.96 ms, about what a call takes at that load, and one stall of a few milliseconds left the
connections behind for the rest of the minute (per-minute p99s of 36 ms to 2.5 s, 2026-12-05
07:25). With 128 it is 7 to 9 ms.

The generator paces the held rate on a 250 µs tick (`--tick-us`): it wakes at most once per tick
and sends every call then due, a few at a time, as callers that do not coordinate arrive; no
call goes early, and each call's latency counts from its own schedule, so the wait for the tick
is in every figure. Sent one at a time, 71 µs apart at 14,000 calls/s, each call cost the
generator's core a wake-up of its own and the sandbox behind the gateway another, and that core
(which also takes the kernel's interrupt work) ran out before the gateway's did: a 50 ms stall
of the disk then left a queue that core drained for seconds. Side by side at 18,304 calls/s
(2026-12-05 15:14-15:37, the same gateway): CPU 1 58-65 % busy a minute with the tick against
79-87 % without, and per-minute p99s of 4.3-7.9 ms (worst / median 1.61) against 9.7-115 ms
(6.75). `--tick-us 0` sends each call at its own time.

It prints, per minute: requests, answers by status, p50/p99/p99.9, how busy CPU 0 and CPU 1
were and Passerelle's RSS; then RSS at start and end, the spread of the per-minute p99, and
the audit records written. It exits non-zero if any answer differs from what the mix expects
or any request gets no answer.

To tell where a slow second comes from, it also samples the machine once a second (both CPUs'
busy, iowait and steal time, the disk's writes and flushes, the gateway's CPU time and bytes
written per thread) and prints the twelve seconds with the highest p99 beside those samples
and the gateway's disk events (segments started, index runs and merges, slow record
batches); everything goes to `seconds.json` in the work directory. A run in which the host
took (steal) more than 5 % of CPU 0 over a minute, or more than 10 % in any one second, is
marked as no measurement of upkeep, and the criterion is given again over the windows
without such a second. A window whose median call waited 50 ms or more from its schedule is
marked as behind the held rate: the gateway could not keep up with it there (the host's speed
moves within minutes, so 70 % of a calibration can become more than the host gives), calls
queued, and that window's p99 measures the queue. A window with a second in which CPU 1 was
95 % busy or more is marked too, and the per-second p99s are split by how busy CPU 1 was: CPU 1
carries the load generator, the sandbox upstream and the interrupt and network work the kernel
does there (the disk's completions among it), 83-87 % of it at the held rate on this
2-core machine, and when it is full the sends and the upstream's answers wait there.

    python3 load-tests/soak.py [--load 0.7 | --rate N] [--minutes 10]

The rate is derived from this mix itself: after the warm-up, the same mix runs closed-loop
three times for 10 s (on `--connections`, as fast as the gateway answers), and the held rate
is `--load` (70 % by default) of the median of the calls per second those runs reached. Those
runs saturate the core, where index upkeep (at idle priority) gets no CPU; the hold starts once
upkeep has caught up with them (its thread idle for 3 s) and the page cache is written out, so
that it measures upkeep at the held rate, not the catching up after a saturated half minute. The
mix costs more CPU per call than compare.py's single permitted call (hostile calls, a larger
answer, open-loop bursts): 70 % of compare.py's saturation held the gateway at about 87 % of
its CPU and behind the schedule. `--rate N` sets the rate instead, to compare with an earlier run.

It ends with the criterion for index upkeep bounded per step: the worst window's p99 over the
median window's (at most 2). On a shared host that ratio moves with the host as much as with
upkeep (a build with no upkeep failed it as often: docs/operations.md), so it also gives, for
each background writer, the median per-second p99 of the seconds it wrote over that of the
seconds it did not, within the same run.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

MIX = """
[[request]]
name = "association"
weight = 760
path = "/associations/association"
headers = {{ x-legal-basis = "VL/PROT/2022/017", x-purpose = "SUBSIDY_HANDLING", x-subject = "{vcode}" }}

[[request]]
name = "unknown-route"
weight = 5
path = "/associations/secret"
headers = {{ x-legal-basis = "VL/PROT/2022/017", x-purpose = "SUBSIDY_HANDLING", x-subject = "{vcode}" }}
expect_status = 404
expect_code = "SERVICE_UNKNOWN"

[[request]]
name = "traversal"
weight = 5
path = "/associations/../div/vehicle"
headers = {{ x-legal-basis = "VL/PROT/2022/017", x-purpose = "SUBSIDY_HANDLING", x-subject = "{vcode}" }}
expect_status = 404
expect_code = "SERVICE_UNKNOWN"

[[request]]
name = "invalid-vcode"
weight = 5
path = "/associations/association"
headers = {{ x-legal-basis = "VL/PROT/2022/017", x-purpose = "SUBSIDY_HANDLING", x-subject = "V12X" }}
expect_status = 400
expect_code = "SUBJECT_INVALID"

[[request]]
name = "missing-purpose"
weight = 5
path = "/associations/association"
headers = {{ x-legal-basis = "VL/PROT/2022/017", x-subject = "{vcode}" }}
expect_status = 400
expect_code = "ENVELOPE_INVALID"

[[request]]
name = "other-purpose"
weight = 5
path = "/associations/association"
headers = {{ x-legal-basis = "VL/PROT/2022/017", x-purpose = "DIRECT_MARKETING", x-subject = "{vcode}" }}
expect_status = 403
expect_code = "PURPOSE_NOT_ALLOWED"

[[request]]
name = "foreign-instrument"
weight = 5
path = "/associations/association"
headers = {{ x-legal-basis = "CSI/SSH/19/004/FI", x-purpose = "SUBSIDY_HANDLING", x-subject = "{vcode}" }}
expect_status = 403
expect_code = "LEGAL_BASIS_NOT_APPLICABLE"

[[request]]
name = "body-where-none"
weight = 5
path = "/associations/association"
headers = {{ x-legal-basis = "VL/PROT/2022/017", x-purpose = "SUBSIDY_HANDLING", x-subject = "{vcode}" }}
body = '{{"vCode":"V0001001","__proto__":{{"admin":true}}}}'
expect_status = 422
expect_code = "LAYOUT_VIOLATION"

[[request]]
name = "json-to-soap"
weight = 5
method = "POST"
path = "/div/vehicle"
headers = {{ x-legal-basis = "VL/PROT/2022/017", x-purpose = "SUBSIDY_HANDLING" }}
body = '{{"plate":"1-ABC-123"}}'
expect_status = 500
expect_code = "LEGAL_BASIS_NOT_APPLICABLE"
"""


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """Once a second: both CPUs' time by kind (steal shows the host taking the core), the disk's
    writes and flushes, and the gateway's CPU time by thread name, to set beside the latency of
    the same second."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()
        self.tick = os.sysconf("SC_CLK_TCK")
        disks = [line.split() for line in open("/proc/diskstats")]
        self.disk = max(disks, key=lambda f: int(f[9]))[2]  # the disk written most

    def snapshot(self):
        cpus = {}
        for line in open("/proc/stat"):
            f = line.split()
            if f[0] in ("cpu0", "cpu1"):
                cpus[f[0]] = [int(x) for x in f[1:9]]
        disk = next(line.split()[3:] for line in open("/proc/diskstats") if line.split()[2] == self.disk)
        threads, written = {}, {}
        for t in os.listdir(f"/proc/{self.pid}/task"):
            try:
                with open(f"/proc/{self.pid}/task/{t}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{self.pid}/task/{t}/io") as f:
                    io = dict(line.split(": ") for line in f.read().splitlines())
            except OSError:
                continue
            name = compare.thread_name(stat[stat.index("(") + 1:stat.rindex(")")])
            rest = stat[stat.rindex(")") + 2:].split()
            threads[name] = threads.get(name, 0) + int(rest[11]) + int(rest[12])
            written[name] = written.get(name, 0) + int(io["write_bytes"])
        return time.time(), cpus, [int(x) for x in disk], (threads, written)

    def run(self):
        last = self.snapshot()
        while not self.stop.wait(1.0 - (time.time() % 1.0)):
            now = self.snapshot()
            t, cpus, disk, threads = now
            t0, cpus0, disk0, threads0 = last
            (threads, written), (threads0, written0) = threads, threads0
            ms = lambda ticks: round(ticks * 1000 / self.tick)
            sample = {"at": t0, "seconds": t - t0}
            for c in cpus:
                d = [a - b for a, b in zip(cpus[c], cpus0[c])]
                sample[c] = {"busy": ms(d[0] + d[1] + d[2] + d[5] + d[6]), "iowait": ms(d[4]), "steal": ms(d[7])}
            d = [a - b for a, b in zip(disk, disk0)]
            sample["disk"] = {"writes": d[4], "mb": round(d[6] * 512 / 2**20, 1), "ms_writing": d[7],
                              "flushes": d[15] if len(d) > 16 else None, "ms_flushing": d[16] if len(d) > 16 else None}
            sample["threads_ms"] = {n: ms(v - threads0.get(n, 0)) for n, v in threads.items() if v - threads0.get(n, 0) > 0}
            # Bytes each thread sent to the disk (page cache writeback done on its behalf included).
            sample["threads_mb"] = {n: round((v - written0.get(n, 0)) / 2**20, 1) for n, v in written.items()
                                    if v - written0.get(n, 0) >= 2**20 // 10}
            self.samples.append(sample)
            last = now


def upkeep_ticks(pid):
    """The CPU time, in clock ticks, of the gateway's index upkeep thread so far (ticks, not
    schedstat's nanoseconds: a wake-up that finds nothing to do is not work)."""
    _, user, system = compare.thread_cpu(pid).get("index-upkeep", (0, 0, 0))
    return user + system


def wait_for_upkeep(pid, quiet=3, longest=300):
    """Waits until the index upkeep thread has taken no CPU for `quiet` seconds in a row (at
    most `longest` seconds), then writes out what the page cache holds. The closed-loop runs
    that set the rate saturate the core, where the upkeep thread (`SCHED_IDLE`) gets no CPU:
    they leave sealed tables and a merge behind, which the first minutes of the hold would
    otherwise spend catching up on. Returns the seconds it waited."""
    began, last, still = time.time(), upkeep_ticks(pid), 0
    while still < quiet and time.time() - began < longest:
        time.sleep(1)
        now = upkeep_ticks(pid)
        still = still + 1 if now == last else 0
        last = now
    compare.settle_disk()
    return time.time() - began


def cpu0(samples, since, until, what="steal"):
    """The share of CPU 0's time spent on `what` (the host's steal, or busy) between two
    instants, and the largest share in any one second, from the samples."""
    inside = [m for m in samples if since <= m["at"] < until and m["seconds"] > 0]
    seconds = sum(m["seconds"] for m in inside)
    share = sum(m["cpu0"][what] for m in inside) / 1000 / seconds if seconds else 0.0
    return share, max((m["cpu0"][what] / 1000 / m["seconds"] for m in inside), default=0.0)


# A window with a second in which the host took more than this share of CPU 0: a minute's
# average can hide a few seconds at 30 % that alone make the minute's p99.
STEAL_PEAK = 0.10
# A window whose median call waited this long (µs) from its schedule was behind the held rate.
BEHIND_P50 = 50_000
# A second in which CPU 1 (the load generator, the sandbox upstream, and the interrupt and
# network work the kernel does there) was busy this share of the time: the load's own side was
# full, and its sends and the upstream's answers waited there, not in the gateway.
RIG_FULL = 0.95
# Each window is its own generator run, whose connections open (128 full handshakes at once)
# and catch up with their schedules in its first second: with the tick, ten of the twelve
# slowest seconds of a soak (44-61 ms) were such first seconds (2026-12-05, 16:22-16:32), one a
# minute, lifting every minute's p99, the median minute's too. That second runs at the held
# rate but is not measured.
WINDOW_WARMUP = 1.0


def measured_seconds(windows, samples):
    """Each second that had requests: its start, its latencies, and the machine's sample for it
    (empty when none was taken)."""
    by_time = {int(s["at"]): s for s in samples}
    out = []
    for r in windows:
        for k, s in enumerate(r.get("per_second", [])):
            if s["requests"]:
                at = r["measured_from_unix"] + k
                out.append((at, s, by_time.get(int(at)) or by_time.get(int(at) - 1) or {}))
    return out


def worst_seconds(windows, samples, log_lines, n=12):
    """The seconds with the highest p99, each beside the machine's state and the gateway's events."""
    seconds = measured_seconds(windows, samples)
    if not seconds:
        return []
    events = []
    for line in log_lines:
        m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z\s+\w+\s+\S+:\s*(.*)", line)
        if m:
            ts = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            events.append((ts + float("0" + m.group(1)[19:]), m.group(2)[:110]))
    p99s = sorted(s["p99"] for _, s, _ in seconds)
    out = [f"per-second p99 over {len(seconds)} s: median {rank(p99s, 0.5)} µs, "
           f"99th percentile {rank(p99s, 0.99)} µs, max {p99s[-1]} µs; the {n} worst seconds:"]
    for at, s, m in sorted(seconds, key=lambda x: -x[1]["p99"])[:n]:
        cpu0, cpu1, disk = m.get("cpu0", {}), m.get("cpu1", {}), m.get("disk", {})
        threads = sorted(m.get("threads_ms", {}).items(), key=lambda x: -x[1])[:4]
        wrote = sorted(m.get("threads_mb", {}).items(), key=lambda x: -x[1])[:4]
        near = [e for ts, e in events if at - 3 <= ts <= at + 1]
        out.append(f"  {time.strftime('%H:%M:%S', time.gmtime(at))} p99 {s['p99']} µs max {s['max']} µs | "
                   f"cpu0 busy {cpu0.get('busy')} steal {cpu0.get('steal')} iowait {cpu0.get('iowait')} ms, "
                   f"cpu1 busy {cpu1.get('busy')} steal {cpu1.get('steal')} ms | disk {disk.get('mb')} MB, "
                   f"{disk.get('writes')} writes, {disk.get('flushes')} flushes, {disk.get('ms_writing')} ms writing | "
                   f"gateway threads ms {dict(threads)}, MB written {dict(wrote)}" + "".join(f"\n      event: {e}" for e in near[:4]))
    return out


def rank(ordered, q):
    """The value at quantile `q` of a sorted, non-empty list (the upper one of two middles)."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def spread(p99s):
    """How many seconds, and the median, p90 and p99 of their p99s."""
    p99s = sorted(p99s)
    return f"{len(p99s)} s, median {rank(p99s, 0.5)} µs, p90 {rank(p99s, 0.9)} µs, p99 {rank(p99s, 0.99)} µs"


def criterion_without(p99s, left_out, what):
    """The criterion again over the windows not in `left_out` (when two or more remain)."""
    kept = [p for w, p in enumerate(p99s) if w not in left_out]
    if len(kept) < 2:
        return []
    median = statistics.median(kept)
    return [f"  the {len(kept)} windows {what}: p99 median {median:.0f} µs, max {max(kept)} µs; "
            f"worst / median {max(kept) / max(median, 1):.2f}"]


def by_background_writer(windows, samples, writers=("index-upkeep", "audit-spare")):
    """Per-second p99s split by whether each background writer wrote in that second: what a
    writer adds to the tail, within one run, whatever the host did to the run as a whole."""
    seconds = [(s["p99"], m.get("threads_mb", {})) for _, s, m in measured_seconds(windows, samples)]
    out = []
    for w in writers:
        wrote = [p for p, mb in seconds if mb.get(w, 0) > 0]
        idle = [p for p, mb in seconds if mb.get(w, 0) == 0]
        if wrote and idle:
            # The medians' ratio: what the writer adds to a typical second, beside the same
            # run's other seconds (the host's moments fall on both sides).
            ratio = rank(sorted(wrote), 0.5) / max(rank(sorted(idle), 0.5), 1)
            out.append(f"per-second p99 while {w} wrote: {spread(wrote)}; while it did not: {spread(idle)}; "
                       f"medians {ratio:.2f}x")
        else:
            out.append(f"{w} wrote in {len(wrote)} of {len(seconds)} seconds: no split")
    return out


def rig_busy(window, samples):
    """CPU 1's busy share over a window's measured seconds, and its fullest of them. Only the
    measured seconds: each window starts a new load generator whose 128 full handshakes fill
    CPU 1 for a moment before its first scheduled call."""
    shares = [m["cpu1"]["busy"] / 1000 / m["seconds"]
              for _, _, m in measured_seconds([window], samples) if m.get("seconds")]
    return (statistics.mean(shares), max(shares)) if shares else (0.0, 0.0)


def by_rig_core(windows, samples, bands=(0.9, RIG_FULL)):
    """Per-second p99s split by how busy CPU 1 was in that second. CPU 1 carries everything
    but the gateway: the load generator, the sandbox upstream, and the disk's and the
    loopback's interrupt work the kernel does there. When it is full, sends leave late and the
    upstream answers late, and latency measured from the schedule counts both."""
    seconds = [(s["p99"], m["cpu1"]["busy"] / 1000 / m["seconds"])
               for _, s, m in measured_seconds(windows, samples) if m.get("seconds")]
    edges = [0.0, *bands, float("inf")]
    out = []
    for lo, hi in zip(edges, edges[1:]):
        p99s = [p for p, busy in seconds if lo <= busy < hi]
        if not p99s:
            continue
        what = (f"at least {100 * lo:.0f} %" if hi == float("inf")
                else f"under {100 * hi:.0f} %" if lo == 0 else f"{100 * lo:.0f}-{100 * hi:.0f} %")
        out.append(f"per-second p99 with CPU 1 (the load's side) busy {what}: {spread(p99s)}")
    return out


def audit_bytes(work):
    """Size of the audit trail's directory."""
    total = 0
    for name in os.listdir(os.path.join(work, "audit")):
        total += os.path.getsize(os.path.join(work, "audit", name))
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=int, help="calls per second to hold (default: --load of this mix's saturation)")
    p.add_argument("--load", type=float, default=0.7, help="the share of this mix's closed-loop saturation to hold")
    p.add_argument("--calibrate-seconds", type=float, default=10)
    p.add_argument("--calibrate-runs", type=int, default=3, help="closed-loop runs; the median sets the rate")
    p.add_argument("--minutes", type=int, default=10)
    p.add_argument("--window", type=float, default=60, help="seconds per measured window")
    p.add_argument("--connections", type=int, default=16, help="connections of the closed-loop runs that set the rate")
    p.add_argument("--hold-connections", type=int, default=128,
                   help="connections that carry the held rate (each keeps its own schedule)")
    p.add_argument("--tick-us", type=int, default=250,
                   help="the load generator's pacing tick for the held rate (0: each call at its own time)")
    p.add_argument("--skip-build", action="store_true")
    args = p.parse_args()
    # This script (and its sampling thread) stays off the gateway's CPU 0.
    os.sched_setaffinity(0, {1})

    if not args.skip_build:
        compare.run(["cargo", "build", "--release", "-j2", "-p", "gateway", "-p", "load-tests"], cwd=compare.ROOT)
    compare.settle_disk()
    passerelle = os.path.join(compare.RELEASE, "passerelle")
    work = tempfile.mkdtemp(prefix="passerelle-soak-")
    pki = os.path.join(work, "pki")
    compare.run([passerelle, "certs", "init", "--dir", pki], stdout=subprocess.DEVNULL)
    procs = []

    def start(cmd, port, cpu, **kw):
        return compare.start_pinned(procs, cmd, port, cpu, **kw)

    failed = 0
    try:
        upstream = compare.free_port()
        sandbox = start([passerelle, "sandbox", "associations", "--listen", f"127.0.0.1:{upstream}"], upstream, 1,
                        stdout=subprocess.PIPE, text=True)
        vcode = next(line.split(":", 1)[1].strip() for line in sandbox.stdout if line.startswith("example vCode:"))
        mix = os.path.join(work, "mix.toml")
        with open(mix, "w") as f:
            f.write(MIX.format(vcode=vcode))
        compare.prepare_bundles(work)
        port = compare.free_port()
        conf = compare.PASSERELLE_CONF.format(work=work, audit=f"{work}/audit", upstream=upstream, port=port, pki=pki)
        conf += f'\n[sources.div]\nupstream = "http://127.0.0.1:{upstream}"\n'
        with open(os.path.join(work, "passerelle.toml"), "w") as f:
            f.write(conf)
        # Index runs, merges and segment starts are logged with their times (debug), to set
        # beside the latency of each window.
        env = {**os.environ, "PASSERELLE__LOG__FILTER": "warn,passerelle::audit_index=debug,passerelle::audit_trail=debug,gateway::audit::spare=debug"}
        pa = start([passerelle, "serve", "--config", os.path.join(work, "passerelle.toml")], port, 0,
                   stderr=open(os.path.join(work, "passerelle.log"), "w"), env=env)
        time.sleep(0.5)
        print(f"work dir {work}; {args.minutes} min, 5 % hostile", flush=True)

        def load(seconds, warmup, name, rate=None):
            out = os.path.join(work, f"{name}.json")
            connections = args.hold_connections if rate else args.connections
            mode = ["--mode", "open", "--rate", str(rate), "--tick-us", str(args.tick_us)] if rate else ["--mode", "closed"]
            cmd = ["taskset", "-c", "1", os.path.join(compare.RELEASE, "passerelle-load"),
                   "--target", f"127.0.0.1:{port}", "--ca", f"{pki}/ca.pem",
                   "--cert", f"{pki}/clients/agency-a.pem", "--key", f"{pki}/clients/agency-a.key",
                   "--mix", mix, *mode,
                   "--connections", str(connections), "--duration", str(seconds), "--warmup", str(warmup),
                   "--pid", str(pa.pid), "--json", out]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(out) as f:
                return json.load(f)

        if args.rate is None:
            # Three closed-loop runs, the median taken: one run in a fast (or slow) moment of
            # the host set a rate that minutes later was 86 % of the core, not 70 %.
            runs = []
            for i in range(args.calibrate_runs):
                r = load(args.calibrate_seconds, 5 if i == 0 else 0, f"saturation-{i}")
                failed += r["unexpected"] + r["transport_errors"]
                runs.append(r)
            runs.sort(key=lambda r: r["requests_per_second"])
            r = runs[len(runs) // 2]
            args.rate = int(args.load * r["requests_per_second"])
            rates = ", ".join(f"{x['requests_per_second']:.0f}" for x in runs)
            print(f"this mix closed-loop ({len(runs)} runs of {args.calibrate_seconds:.0f} s: {rates} calls/s), the median "
                  f"{r['requests_per_second']:.0f} calls/s at {r['cpu_us_per_request']:.1f} µs CPU/call; "
                  f"held rate {args.rate}/s ({100 * args.load:.0f} %)", flush=True)
        else:
            print(f"held rate {args.rate}/s (given)", flush=True)
        print(f"the held rate is carried by {args.hold_connections} connections, one call every "
              f"{1e3 * args.hold_connections / args.rate:.2f} ms on each", flush=True)
        waited = wait_for_upkeep(pa.pid)
        print(f"index upkeep caught up with the closed-loop runs in {waited:.0f} s", flush=True)
        load(10, 0, "warmup", args.rate)
        rss_start = rss_kib(pa.pid)
        print(f"RSS after a 10 s warm-up: {rss_start / 1024:.1f} MiB", flush=True)
        sampler = Sampler(pa.pid)
        sampler.start()
        reports = []
        p99s, steals, peaks, busies, rigs, total, refused = [], [], [], [], [], 0, 0
        windows = int(args.minutes * 60 / args.window)
        for w in range(windows):
            r = load(args.window, WINDOW_WARMUP, f"window-{w}", args.rate)
            reports.append(r)
            # The generator says when its measured window began (after its start and warm-up).
            began = r["measured_from_unix"]
            rss = rss_kib(pa.pid)
            lat = r["latency_us"]
            bad = r["unexpected"] + r["transport_errors"]
            failed += bad
            total += r["requests"]
            refused += sum(n for code, n in r["by_code"].items() if code)
            p99s.append(lat["p99"])
            share, peak = cpu0(sampler.samples, began, began + args.window)
            steals.append(share)
            peaks.append(peak)
            # A core near full turns any stall into a queue that drains slowly: at 94 % busy a
            # stall of 20 ms takes a third of a second to catch up.
            busy, _ = cpu0(sampler.samples, began, began + args.window, "busy")
            busies.append(busy)
            rig, rig_peak = rig_busy(r, sampler.samples)
            rigs.append(rig_peak)
            print(f"{(w + 1) * args.window / 60:5.1f} min (from {time.strftime('%H:%M:%S', time.gmtime(began))}): {r['requests']:7} requests ({r['requests_per_second']:.0f}/s), "
                  f"by status {r['by_status']}, p50 {lat['p50']} µs, p99 {lat['p99']} µs, "
                  f"p99.9 {lat['p99_9']} µs, CPU {r['cpu_us_per_request']:.1f} µs/call, CPU 0 busy {100 * busy:.0f} %, "
                  f"CPU 1 busy {100 * rig:.0f} % (its fullest second {100 * rig_peak:.0f} %), RSS {rss / 1024:.1f} MiB, "
                  f"host steal {100 * steals[-1]:.0f} % of CPU 0 (its worst second {100 * peaks[-1]:.0f} %)"
                  + (f", {bad} UNEXPECTED e.g. {(r['unexpected_examples'] + r['transport_examples'])[:3]}" if bad else ""),
                  flush=True)
        rss_end = rss_kib(pa.pid)
        sampler.stop.set()
        print()
        print(f"requests {total}, intended refusals {refused} ({100 * refused / max(total, 1):.2f} %), "
              f"unexpected answers or transport errors {failed}")
        print(f"RSS start {rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB "
              f"({100 * (rss_end - rss_start) / rss_start:+.1f} %)")
        median = statistics.median(p99s)
        print(f"p99 per {args.window:.0f} s window: median {median:.0f} µs, min {min(p99s)} µs, max {max(p99s)} µs; "
              f"worst / median {max(p99s) / max(median, 1):.2f} (bounded upkeep: at most 2); "
              f"CPU 0 busy {100 * statistics.median(busies):.0f} % (median window)")
        # The host taking a share of the gateway's core (steal) removes that share of its
        # capacity: a held rate of 70 % is then no longer 70 %, and the windows measure the host.
        if max(steals) > 0.05 or max(peaks) > STEAL_PEAK:
            print(f"NOT A MEASUREMENT OF UPKEEP: the host took up to {100 * max(steals):.0f} % of CPU 0 in a window "
                  f"(median {100 * statistics.median(steals):.0f} %) and up to {100 * max(peaks):.0f} % in one second; "
                  f"run again on a quiet host")
            stolen = {w for w, peak in enumerate(peaks) if peak > STEAL_PEAK}
            for line in criterion_without(p99s, stolen, f"with no second above {100 * STEAL_PEAK:.0f} % steal"):
                print(line)
        full = {w for w, peak in enumerate(rigs) if peak >= RIG_FULL}
        if full:
            print(f"THE LOAD'S OWN CORE WAS FULL in {len(full)} of {len(rigs)} windows (a second with CPU 1 at least "
                  f"{100 * RIG_FULL:.0f} % busy): there the load generator and the sandbox upstream waited for CPU 1, "
                  f"and those windows' tails are theirs as much as the gateway's")
            for line in criterion_without(p99s, full, "without such a second"):
                print(line)
        behind = [(w, r["latency_us"]["p50"]) for w, r in enumerate(reports) if r["latency_us"]["p50"] >= BEHIND_P50]
        if behind:
            print(f"BEHIND THE HELD RATE in {len(behind)} of {len(reports)} windows "
                  f"({', '.join(f'{(w + 1) * args.window / 60:.1f} min: p50 {p50 / 1000:.0f} ms' for w, p50 in behind)}): "
                  f"half their calls waited {BEHIND_P50 / 1000:.0f} ms or more: the gateway could not keep up with the "
                  f"held rate there (the host's speed moves within minutes), so those windows measure a queue, "
                  f"not upkeep; run again")
        print(f"audit trail on disk: {audit_bytes(work) / 2**20:.0f} MiB")
        with open(os.path.join(work, "passerelle.log")) as f:
            lines = [re.sub(r"\x1b\[[0-9;]*m", "", line.strip()) for line in f]
        events = [line for line in lines if "index runs merged" in line or "index run written" in line]
        segments = [line for line in lines if "audit segment started" in line]
        prepared = sum("prepared=true" in line for line in segments)
        print(f"audit segments started: {len(segments)}, {prepared} of them prepared in advance")
        merges = [e for e in events if "merged" in e]
        print(f"index: {len(events) - len(merges)} runs written, {len(merges)} merges:")
        for e in merges:
            print("  " + e)
        for line in by_background_writer(reports, sampler.samples):
            print(line)
        for line in by_rig_core(reports, sampler.samples):
            print(line)
        for line in worst_seconds(reports, sampler.samples, lines):
            print(line)
        with open(os.path.join(work, "seconds.json"), "w") as f:
            json.dump({"windows": [{k: r[k] for k in ("measured_from_unix", "per_second")} for r in reports],
                       "machine": sampler.samples}, f)
        print(f"per-second latency and machine samples: {work}/seconds.json")
        # Stopped (final checkpoint written), then verified.
        pa.send_signal(signal.SIGTERM)
        pa.wait(timeout=30)
        verify = subprocess.run([passerelle, "audit", "verify", os.path.join(work, "audit"),
                                 "--config", os.path.join(work, "passerelle.toml")],
                                capture_output=True, text=True)
        print(f"audit verify: exit {verify.returncode}: {' '.join(verify.stdout.split())[:300]}")
        if verify.returncode != 0:
            failed += 1
    finally:
        compare.stop_all(procs)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
