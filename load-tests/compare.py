#!/usr/bin/env python3
"""Passerelle side by side with nginx, in one run on this machine.

nginx is a bare TLS 1.3 mTLS reverse proxy (client certificate required, CRL checked, keep-alive
to the upstream, no access log). Passerelle runs its full pipeline on the same upstream with
the same certificates: identity, envelope, decision, layout in and out, minimisation, and a
durable audit record per call (fdatasync before the answer leaves). Each proxy under test runs
alone on CPU 0; the upstream (the association register sandbox) and the load generator share
CPU 1. Runs alternate A B A B A B after a warm-up, and every figure is the median of the rounds
with its spread (min–max):

* CPU µs per request of the proxy (closed loop, keep-alive, ~1 KB answers) — the main figure —
  and the part of it the kernel counts as system time (socket sends and receives, waits, flushes);
* saturation throughput (the same closed-loop runs);
* p50 / p99 latency at fixed open-loop rates (latency from each request's schedule);
* full mTLS handshakes per second (a new connection per request, no session resumption).

It ends with one line of ratios Passerelle / nginx.

    python3 load-tests/compare.py [--seconds 20] [--rounds 3] [--rates 2000,5000]

`--audit-dir /dev/shm/x` puts the audit trail on tmpfs, where fdatasync costs nothing: a
diagnostic that shows what the durable write adds to Passerelle's figures (such a trail would
not survive a crash; never run the gateway so).

After each of Passerelle's closed-loop runs it prints where the CPU went by thread (from
schedstat; the kernel's part of each from its user and system clock ticks) and the audit trail's
records per group commit. Each open-loop run prints its CPU per request too. `--syscalls` adds
each proxy's system calls and context switches per request, by thread (`perf stat`, first round
only, closed loop and each open-loop rate); `--perf FILE` records a profile of Passerelle's
first closed-loop run.

`--baseline BINARY` puts another Passerelle build in nginx's place (same configuration, its own
trail and store): an A/B of two versions, e.g. `git worktree add /tmp/old <commit>`, build it
there, and pass `/tmp/old/target/release/passerelle` (with `--baseline-bundles
/tmp/old/policies/bundles` when the older build cannot read this tree's bundles).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"a process exited during start (code {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def settle_disk():
    """Writes out what the machine holds dirty before measuring. A build leaves hundreds of MB
    in the page cache, which the kernel writes back about 30 s later, in the middle of the
    measurement: soaks started right after a build showed 130-200 MB/s of writes that no thread
    of the gateway made, about 25 s in, and the audit writer's fdatasync waited behind them
    (batches of 28-50 ms); soaks started without a build just before did not."""
    os.sync()


def run(cmd, **kw):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def ensure_nginx():
    if shutil.which("nginx"):
        return shutil.which("nginx")
    print("nginx is missing: installing it from Debian", flush=True)
    run(["apt-get", "update", "-qq"])
    run(["apt-get", "install", "-y", "-qq", "nginx"], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("nginx") or "/usr/sbin/nginx"


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    upstream register {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate {pki}/server.pem;
        ssl_certificate_key {pki}/server.key;
        ssl_client_certificate {pki}/ca.pem;
        ssl_crl {pki}/crl.pem;
        ssl_verify_client on;
        ssl_session_tickets off;
        ssl_session_cache off;
        keepalive_requests 1000000;
        location = /associations/association {{
            proxy_pass http://register/v1/verenigingen;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

PASSERELLE_CONF = """
[data]
listen = "127.0.0.1:{port}"

[tls]
cert = "{pki}/server.pem"
key = "{pki}/server.key"
client_ca = "{pki}/ca.pem"
crls = ["{pki}/crl.pem"]

[store]
path = "{work}/store"

[audit]
dir = "{audit}"
signing_key = "{pki}/audit-signing.key"

[policy]
bundles = ["{work}/bundles"]

[log]
filter = "warn"

[sources.associations]
upstream = "http://127.0.0.1:{upstream}"
"""

MIX = """
[[request]]
name = "association"
path = "/associations/association"
headers = {{ x-legal-basis = "VL/PROT/2022/017", x-purpose = "SUBSIDY_HANDLING", x-subject = "{vcode}" }}
"""


def prepare_bundles(work, source=None, name="bundles"):
    """The seed bundles (of this tree, or of `source`) in `work/<name>`, with the association
    protocol's periodicity (2,000 calls a day) raised so that the rate check runs on every call
    but never refuses one."""
    bundles = os.path.join(work, name)
    shutil.copytree(source or os.path.join(ROOT, "policies", "bundles"), bundles)
    path = os.path.join(bundles, "associations.toml")
    with open(path) as f:
        text = f.read()
    assert 'rate = { max = 2000, per = "day" }' in text
    with open(path, "w") as f:
        f.write(text.replace('rate = { max = 2000, per = "day" }', 'rate = { max = 1000000000, per = "day" }'))


def write_mix(args, sandbox):
    """Reads the example vCode the association sandbox prints and writes the mix for it to
    `args.mix` (in `args.work`)."""
    vcode = next((line.split(":", 1)[1].strip() for line in sandbox.stdout if line.startswith("example vCode:")), None)
    if vcode is None:
        sys.exit("the sandbox printed no example vCode")
    args.mix = os.path.join(args.work, "mix.toml")
    with open(args.mix, "w") as f:
        f.write(MIX.format(vcode=vcode))


def start_pinned(procs, cmd, port, cpu, **kw):
    """Starts `cmd` pinned to `cpu`, records it in `procs`, and waits until `port` listens."""
    proc = subprocess.Popen(["taskset", "-c", str(cpu)] + cmd, **kw)
    procs.append(proc)
    wait_port(port, proc)
    return proc


def stop_all(procs):
    """SIGTERM to every process still running, then up to 15 s each before SIGKILL."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def worker_pid(master_pid):
    """nginx's worker (the process that does the work) under its master."""
    out = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    return int(out[0]) if out else master_pid


# The gateway's first retention pass, seconds after it starts (server::prune_daily).
PRUNE_AFTER_S = 60

# Seconds of warm-up `load` asks of each run before it measures.
LOAD_WARMUP = 1


def thread_name(name):
    """A thread's name without its number (`sled-io-3`, `tokio-rt-worker-12` → one name each).

    Pinned to one CPU, the gateway runs a current-thread runtime: its data plane is then the
    main thread, `passerelle`, where a multi-thread runtime has `tokio-rt-worker`s."""
    return re.sub(r"[-_]?\d+$", "", name)


def thread_cpu(pid):
    """CPU time of each of `pid`'s threads, summed by thread name: (ns from schedstat, user clock
    ticks, system clock ticks); the ticks give the kernel's share of the precise figure."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                name = thread_name(f.read().strip())
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                # After the name in parentheses: utime and stime are fields 14 and 15 of proc(5).
                fields = f.read().rsplit(")", 1)[1].split()
                user, system = int(fields[11]), int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
        ns0, user0, system0 = out.get(name, (0, 0, 0))
        out[name] = (ns0 + ns, user0 + user, system0 + system)
    return out


SYSCALL_EVENTS = [f"syscalls:sys_enter_{c}" for c in (
    "read", "readv", "recvfrom", "recvmsg", "write", "writev", "sendto", "sendmsg", "epoll_wait",
    "futex", "fdatasync", "pwrite64")] + ["sched:sched_switch", "sched:sched_wakeup"]


def start_counting(args, pid, csv):
    """`perf stat` of the system calls and context switches of process `pid`, by thread."""
    counting = subprocess.Popen(["perf", "stat", "--per-thread", "-x", ",", "-e", ",".join(SYSCALL_EVENTS),
                                 "-p", str(pid), "-o", os.path.join(args.work, csv)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return counting


def stop_counting(counting, args, csv, r):
    counting.send_signal(signal.SIGINT)
    counting.wait()
    print_syscalls(os.path.join(args.work, csv), r)


def print_syscalls(csv, r):
    """Per request, the counts `perf stat` wrote to `csv` (over the whole run, warm-up included)."""
    calls = run_calls(r)
    totals, threads = {}, {}
    for line in open(csv):
        f = line.strip().split(",")
        # --per-thread lines: thread-tid, count, unit, event, ...
        if len(f) > 3 and f[1].replace(".", "").isdigit():
            thread = thread_name(re.sub(r"-\d+$", "", f[0]))  # perf appends "-<tid>"
            event = f[3].split(":")[-1].replace("sys_enter_", "")
            totals[event] = totals.get(event, 0) + float(f[1]) / calls
            threads.setdefault(thread, {})
            threads[thread][event] = threads[thread].get(event, 0) + float(f[1]) / calls
    print("        per request: " + ", ".join(f"{n} {v:.2f}" for n, v in totals.items() if v >= 0.01))
    if len(threads) > 1:
        for thread, events in sorted(threads.items(), key=lambda t: -sum(t[1].values())):
            shown = [f"{n} {v:.2f}" for n, v in events.items() if v >= 0.01]
            if shown:
                print(f"          {thread}: " + ", ".join(shown))


def run_calls(r):
    """Calls in a whole run of `load`, warm-up included, estimated from its measured rate."""
    return r["requests"] + r["requests_per_second"] * LOAD_WARMUP


def audit_commits():
    """(records, group commits) so far, from Passerelle's operations listener (127.0.0.1:9464)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    values = dict(line.split()[:2] for line in text.splitlines() if line.startswith("passerelle_audit_"))
    return int(float(values.get("passerelle_audit_records_total", 0))), int(float(values.get("passerelle_audit_batches_total", 0)))


def load(args, target, pid, mode, extra, name):
    out = os.path.join(args.work, f"{name}.json")
    cmd = ["taskset", "-c", "1", os.path.join(RELEASE, "passerelle-load"),
           "--target", f"127.0.0.1:{target}", "--ca", f"{args.pki}/ca.pem",
           "--cert", f"{args.pki}/clients/agency-a.pem", "--key", f"{args.pki}/clients/agency-a.key",
           "--mix", args.mix, "--mode", mode, "--pid", str(pid), "--json", out] + extra
    if "--duration" not in extra:
        cmd += ["--duration", str(args.seconds)]
    if "--warmup" not in extra:
        cmd += ["--warmup", str(LOAD_WARMUP)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with open(out) as f:
        r = json.load(f)
    bad = r["unexpected"] + r["transport_errors"]
    if bad:
        print(f"  {name}: {bad} failed requests, e.g. {(r['unexpected_examples'] + r['transport_examples'])[:2]}")
    return r


def spread(values, fmt="{:.1f}"):
    if not values:
        return "n/a"
    m = statistics.median(values)
    return f"{fmt.format(m)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--rates", default="2000,5000")
    p.add_argument("--warmup", type=float, default=10)
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--audit-dir", metavar="DIR",
                   help="put Passerelle's audit trail in DIR (a diagnostic: on /dev/shm, fdatasync costs nothing "
                        "and the figures show what the durable write adds; such a trail survives no crash)")
    p.add_argument("--baseline-bundles", metavar="DIR",
                   help="the seed bundles the --baseline build reads (its tree's policies/bundles), "
                        "when it cannot read this tree's")
    p.add_argument("--baseline", metavar="BINARY",
                   help="instead of nginx, another Passerelle build (e.g. one built from an earlier commit), "
                        "with the same configuration and full pipeline: an A/B of two versions in one run")
    p.add_argument("--perf", metavar="FILE",
                   help="record a CPU profile of Passerelle (perf -e cpu-clock -g) during its first closed-loop run")
    p.add_argument("--syscalls", action="store_true",
                   help="count each proxy's system calls and context switches per request (perf stat) "
                        "during its first closed-loop run")
    args = p.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]

    if not args.skip_build:
        run(["cargo", "build", "--release", "-j2", "-p", "gateway", "-p", "load-tests"], cwd=ROOT)
    settle_disk()
    other = "baseline" if args.baseline else "nginx"
    nginx = None if args.baseline else ensure_nginx()
    passerelle = os.path.join(RELEASE, "passerelle")
    args.work = tempfile.mkdtemp(prefix="passerelle-compare-")
    args.pki = os.path.join(args.work, "pki")
    run([passerelle, "certs", "init", "--dir", args.pki], stdout=subprocess.DEVNULL)
    procs = []

    def start(cmd, port, cpu, **kw):
        return start_pinned(procs, cmd, port, cpu, **kw)

    try:
        upstream = free_port()
        sandbox = start([passerelle, "sandbox", "associations", "--listen", f"127.0.0.1:{upstream}"], upstream, 1,
                        stdout=subprocess.PIPE, text=True)
        write_mix(args, sandbox)

        ng_port, pa_port = free_port(), free_port()
        with open(os.path.join(args.work, "nginx.conf"), "w") as f:
            f.write(NGINX_CONF.format(work=args.work, upstream=upstream, port=ng_port, pki=args.pki))
        prepare_bundles(args.work)
        with open(os.path.join(args.work, "passerelle.toml"), "w") as f:
            audit = args.audit_dir or os.path.join(args.work, "audit")
            f.write(PASSERELLE_CONF.format(work=args.work, audit=audit, upstream=upstream, port=pa_port, pki=args.pki))
        if args.baseline:
            # Its own port, trail and store; its operations and control listeners on free ports.
            conf = PASSERELLE_CONF.format(work=args.work, audit=os.path.join(args.work, "audit-baseline"),
                                          upstream=upstream, port=ng_port, pki=args.pki)
            conf = conf.replace(f"{args.work}/store", f"{args.work}/store-baseline")
            if args.baseline_bundles:
                # An older build may not read this tree's bundles: it gets those of its own.
                prepare_bundles(args.work, args.baseline_bundles, "bundles-baseline")
                conf = conf.replace(f"{args.work}/bundles", f"{args.work}/bundles-baseline")
            conf += '\n[ops]\nlisten = "127.0.0.1:0"\n\n[control]\nlisten = "127.0.0.1:0"\n'
            with open(os.path.join(args.work, "baseline.toml"), "w") as f:
                f.write(conf)
            ng = start([os.path.abspath(args.baseline), "serve", "--config", os.path.join(args.work, "baseline.toml")],
                       ng_port, 0, stderr=open(os.path.join(args.work, "baseline.log"), "w"))
            other_pid = ng.pid
        else:
            ng = start([nginx, "-c", os.path.join(args.work, "nginx.conf"), "-p", args.work], ng_port, 0,
                       stderr=subprocess.DEVNULL)
            other_pid = worker_pid(ng.pid)
        pa = start([passerelle, "serve", "--config", os.path.join(args.work, "passerelle.toml")], pa_port, 0,
                   stderr=open(os.path.join(args.work, "passerelle.log"), "w"))
        time.sleep(0.5)
        started = time.time()
        targets = {other: (ng_port, other_pid), "passerelle": (pa_port, pa.pid)}

        # The answer size the figures are for.
        probe = load(args, pa_port, pa.pid, "closed", ["--connections", "1", "--duration", "0.5", "--warmup", "0"], "probe")
        print(f"work dir {args.work}; answers: {probe['by_status']}")
        for name, (port, pid) in targets.items():
            print(f"warm-up {name} ({args.warmup:.0f} s)", flush=True)
            load(args, port, pid, "closed", ["--connections", str(args.connections), "--duration", str(args.warmup)],
                 f"warmup-{name}")

        # A gateway's first retention pass runs 60 s after it starts (then once a day) and reads
        # the oldest segment. Both start together, so that pass would land in one side's measured
        # round (the second's first; before the pass parsed one record instead of all of them, it
        # showed as 2.5 us/request on a blocking thread), and an older build's still does: wait.
        settle = PRUNE_AFTER_S + 5 - (time.time() - started)
        if settle > 0:
            print(f"waiting {settle:.0f} s for the gateways' first retention pass", flush=True)
            time.sleep(settle)
        results = {name: {"cpu": [], "kernel": [], "rps": [], "hs": [], "writer": []} for name in targets}
        for rate in rates:
            for name in targets:
                results[name][f"p50@{rate}"] = []
                results[name][f"p99@{rate}"] = []
        for rnd in range(args.rounds):
            for name, (port, pid) in targets.items():
                perf = None
                if args.perf and name == "passerelle" and rnd == 0:
                    perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-g", "-p", str(pid), "-o", args.perf],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                counting = start_counting(args, pid, f"syscalls-{name}.csv") if args.syscalls and rnd == 0 else None
                before, commits = thread_cpu(pid), audit_commits() if pid == pa.pid else None
                r = load(args, port, pid, "closed", ["--connections", str(args.connections)], f"closed-{name}-{rnd}")
                after = thread_cpu(pid)
                if perf:
                    perf.send_signal(signal.SIGINT)
                    perf.wait()
                results[name]["cpu"].append(r["cpu_us_per_request"])
                results[name]["kernel"].append(r["cpu_us_per_request_kernel"])
                results[name]["rps"].append(r["requests_per_second"])
                print(f"round {rnd + 1} {name:10} closed: {r['requests_per_second']:8.0f} req/s, "
                      f"{r['cpu_us_per_request']:6.1f} µs CPU/request ({r['cpu_us_per_request_kernel']:.1f} in the kernel), "
                      f"p99 {r['latency_us']['p99']} µs", flush=True)
                # Where the CPU per request goes, by thread (each thread's share of the whole run,
                # warm-up second included, applied to the measured figure).
                used = {n: tuple(a - b for a, b in zip(after[n], before.get(n, (0, 0, 0)))) for n in after}
                total = sum(u[0] for u in used.values()) or 1
                per = sorted(((n, r["cpu_us_per_request"] * u[0] / total, u[2] / max(u[1] + u[2], 1))
                              for n, u in used.items()), key=lambda x: -x[1])
                if len(per) > 1:
                    print("        by thread (µs/request, kernel's part): "
                          + ", ".join(f"{n} {v:.1f} ({v * k:.1f})" for n, v, k in per if v >= 0.05))
                # The durable write itself: the audit writer thread's share (the limit below
                # counts it on top of the bare proxy's CPU).
                writer = next((v for n, v, _ in per if n == "audit-writer"), None)
                if writer is not None:
                    results[name]["writer"].append(writer)
                if counting:
                    stop_counting(counting, args, f"syscalls-{name}.csv", r)
                if commits:
                    (r0, b0), (r1, b1) = commits, audit_commits() or commits
                    print(f"        audit: {(r1 - r0) / max(b1 - b0, 1):.1f} records per group commit, "
                          f"{(b1 - b0) / (args.seconds + LOAD_WARMUP):.0f} commits/s")
            for rate in rates:
                for name, (port, pid) in targets.items():
                    csv = f"syscalls-{name}-{rate}.csv"
                    counting = start_counting(args, pid, csv) if args.syscalls and rnd == 0 else None
                    r = load(args, port, pid, "open", ["--rate", str(rate), "--connections", str(args.connections)],
                             f"open{rate}-{name}-{rnd}")
                    results[name][f"p50@{rate}"].append(r["latency_us"]["p50"])
                    results[name][f"p99@{rate}"].append(r["latency_us"]["p99"])
                    # Open loop, calls arrive one by one: fewer calls share each wake-up and
                    # each group commit than in the closed loop, so a call costs more CPU.
                    print(f"round {rnd + 1} {name:10} {rate}/s: p50 {r['latency_us']['p50']} µs, "
                          f"p99 {r['latency_us']['p99']} µs ({r['requests']} requests), "
                          f"{r['cpu_us_per_request']:.1f} µs CPU/request", flush=True)
                    if counting:
                        stop_counting(counting, args, csv, r)
            for name, (port, pid) in targets.items():
                r = load(args, port, pid, "handshake", ["--connections", "8"], f"hs-{name}-{rnd}")
                results[name]["hs"].append(r["requests_per_second"])
                print(f"round {rnd + 1} {name:10} handshakes: {r['requests_per_second']:7.0f}/s", flush=True)

        print()
        print(f"medians of {args.rounds} rounds (min–max); proxies alone on CPU 0, upstream and load on CPU 1")
        rows = [("CPU µs per request", "cpu", "{:.1f}"), ("  of which in the kernel", "kernel", "{:.1f}"),
                ("saturation req/s", "rps", "{:.0f}")]
        for rate in rates:
            rows += [(f"p50 µs at {rate}/s", f"p50@{rate}", "{:.0f}"), (f"p99 µs at {rate}/s", f"p99@{rate}", "{:.0f}")]
        rows.append(("full handshakes/s", "hs", "{:.0f}"))
        print(f"{'':24} {other:>26} {'passerelle':>26}")
        for label, key, fmt in rows:
            print(f"{label:24} {spread(results[other][key], fmt):>26} {spread(results['passerelle'][key], fmt):>26}")
        ratio = lambda k: statistics.median(results["passerelle"][k]) / statistics.median(results[other][k])
        parts = [f"CPU/request {ratio('cpu'):.2f}", f"req/s {ratio('rps'):.2f}"]
        parts += [f"p99@{r} {ratio(f'p99@{r}'):.2f}" for r in rates]
        parts.append(f"handshakes/s {ratio('hs'):.2f}")
        print(f"passerelle/{other}: " + ", ".join(parts))
        # The limit on this machine: the bare proxy's CPU per call plus what the durable write
        # itself costs (the audit writer thread's CPU per call, from the same rounds).
        if results["passerelle"].get("writer"):
            bare = statistics.median(results[other]["cpu"])
            writer = statistics.median(results["passerelle"]["writer"])
            limit = bare + writer
            ours = statistics.median(results["passerelle"]["cpu"])
            print(f"limit: {other} {bare:.1f} + audit writer {writer:.1f} = {limit:.1f} µs CPU/request; "
                  f"passerelle {ours:.1f} = {ours / limit:.2f}× the limit")
    finally:
        stop_all(procs)


if __name__ == "__main__":
    main()
