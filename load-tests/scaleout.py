#!/usr/bin/env python3
"""Throughput of one and two Passerelle replicas on a shared PostgreSQL, beside the embedded
store, in one run on this machine (docs/scale-out.md).

Three set-ups, each with the full pipeline and a durable audit record per call, on the same
upstream (the association register sandbox) and the same certificates:

* sled ×1      one gateway on the embedded store;
* postgres ×1  one replica on a throw-away PostgreSQL cluster (Debian's server binaries);
* postgres ×2  two replicas on that cluster, each loaded by its own generator with half the
               connections; figures are the sum (req/s) and the weighted mean (CPU/request);
* postgres ×1 ½  one replica with half the connections: the load each replica of ×2 carries.

Runs alternate between the set-ups (closed loop, keep-alive) after a warm-up, and every figure
is the median of the rounds with its spread. Everything shares this machine's cores, so the
point is correctness and no regression, not a linear speed-up. The database's own CPU time per
request (the postmaster and all its backends) is reported beside the gateways'.

    python3 load-tests/scaleout.py [--seconds 15] [--rounds 3] [--connections 16]
"""

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402

ROOT, RELEASE = compare.ROOT, compare.RELEASE

LISTENERS = """
[control]
listen = "127.0.0.1:{control}"

[ops]
listen = "127.0.0.1:{ops}"

[public]
listen = "127.0.0.1:{public}"
"""


def gateway_conf(args, name, port, store, upstream):
    """compare.py's gateway configuration with its own store, audit directory and listeners."""
    text = compare.PASSERELLE_CONF.format(work=args.work, audit=f"{args.work}/audit", upstream=upstream, port=port, pki=args.pki)
    for old, new in [(f'[store]\npath = "{args.work}/store"\n', f"[store]\n{store}\n"),
                     (f'dir = "{args.work}/audit"', f'dir = "{args.work}/audit-{name}"')]:
        assert old in text, old
        text = text.replace(old, new)
    return text + LISTENERS.format(control=compare.free_port(), ops=compare.free_port(), public=compare.free_port())


class Cluster:
    """A throw-away PostgreSQL cluster in a temp dir, run as the postgres user when we are root."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            print("PostgreSQL's server binaries are missing: installing Debian's postgresql", flush=True)
            compare.run(["apt-get", "update", "-qq"])
            compare.run(["apt-get", "install", "-y", "-qq", "postgresql"],
                        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        self.bin = os.path.dirname(bins[-1])
        # Its own temp dir: the postgres user cannot enter the (0700) work dir.
        self.dir = tempfile.mkdtemp(prefix="passerelle-scaleout-pg-")
        self.root = os.geteuid() == 0
        if self.root:
            compare.run(["chown", "-R", "postgres:postgres", self.dir])
        self.port = compare.free_port()
        self.pg(["initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        self.pg(["pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "server.log"), "-w", "-o",
                 f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start"])

    @property
    def data(self):
        return os.path.join(self.dir, "data")

    def pg(self, cmd):
        exe = [os.path.join(self.bin, cmd[0])] + cmd[1:]
        if self.root:
            exe = ["runuser", "-u", "postgres", "--"] + exe
        subprocess.run(exe, check=True, stdout=subprocess.DEVNULL, cwd=self.dir)

    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def pids(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            master = int(f.readline())
        out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        return [master] + [int(p) for p in out]

    def stop(self):
        self.pg(["pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)


def cpu_seconds(pids):
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tck


def load_many(args, targets, connections, name):
    """Runs one closed-loop generator per (port, pid) target at once; returns their reports."""
    procs, outs = [], []
    for i, (port, pid) in enumerate(targets):
        out = os.path.join(args.work, f"{name}-{i}.json")
        outs.append(out)
        procs.append(subprocess.Popen(
            [os.path.join(RELEASE, "passerelle-load"), "--target", f"127.0.0.1:{port}", "--ca", f"{args.pki}/ca.pem",
             "--cert", f"{args.pki}/clients/agency-a.pem", "--key", f"{args.pki}/clients/agency-a.key",
             "--mix", args.mix, "--mode", "closed", "--pid", str(pid), "--json", out,
             "--connections", str(connections), "--duration", str(args.seconds), "--warmup", "1"],
            stdout=subprocess.DEVNULL))
    for p in procs:
        if p.wait() != 0:
            sys.exit(f"the load generator failed ({name})")
    reports = []
    for out in outs:
        with open(out) as f:
            r = json.load(f)
        bad = r["unexpected"] + r["transport_errors"]
        if bad:
            print(f"  {name}: {bad} failed requests, e.g. {(r['unexpected_examples'] + r['transport_examples'])[:2]}")
        reports.append(r)
    return reports


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--skip-build", action="store_true")
    args = p.parse_args()

    if not args.skip_build:
        compare.run(["cargo", "build", "--release", "-j2", "-p", "gateway", "-p", "load-tests"], cwd=ROOT)
    passerelle = os.path.join(RELEASE, "passerelle")
    args.work = tempfile.mkdtemp(prefix="passerelle-scaleout-")
    args.pki = os.path.join(args.work, "pki")
    compare.run([passerelle, "certs", "init", "--dir", args.pki], stdout=subprocess.DEVNULL)
    procs, cluster = [], None
    try:
        cluster = Cluster()
        upstream = compare.free_port()
        sandbox = subprocess.Popen([passerelle, "sandbox", "associations", "--listen", f"127.0.0.1:{upstream}"],
                                   stdout=subprocess.PIPE, text=True)
        procs.append(sandbox)
        compare.wait_port(upstream, sandbox)
        compare.write_mix(args, sandbox)
        compare.prepare_bundles(args.work)

        stores = {
            "sled": f'path = "{args.work}/store"',
            "pg-a": f'kind = "postgres"\nurl = "{cluster.url()}"\nreplica = "a"',
            "pg-b": f'kind = "postgres"\nurl = "{cluster.url()}"\nreplica = "b"',
        }
        gw = {}
        for name, store in stores.items():
            port = compare.free_port()
            conf = os.path.join(args.work, f"{name}.toml")
            with open(conf, "w") as f:
                f.write(gateway_conf(args, name, port, store, upstream))
            proc = subprocess.Popen([passerelle, "serve", "--config", conf],
                                    stderr=open(os.path.join(args.work, f"{name}.log"), "w"))
            procs.append(proc)
            compare.wait_port(port, proc)
            gw[name] = (port, proc.pid)
        time.sleep(1)  # the replicas follow the store's notifications before they answer

        setups = {
            "sled ×1": ([gw["sled"]], args.connections),
            "postgres ×1": ([gw["pg-a"]], args.connections),
            "postgres ×2": ([gw["pg-a"], gw["pg-b"]], args.connections // 2),
            # One replica with the load of one of the two above: what a replica costs per call
            # at that load, whether or not another one runs beside it.
            "postgres ×1 ½": ([gw["pg-a"]], args.connections // 2),
        }
        print(f"work dir {args.work}; warm-up {args.warmup:.0f} s each", flush=True)
        for name, (targets, conns) in setups.items():
            saved = args.seconds
            args.seconds = args.warmup
            load_many(args, targets, conns, f"warmup-{name}")
            args.seconds = saved

        results = {name: {"rps": [], "cpu": [], "db": []} for name in setups}
        for rnd in range(args.rounds):
            for name, (targets, conns) in setups.items():
                db_before = cpu_seconds(cluster.pids())
                reports = load_many(args, targets, conns, f"{name}-{rnd}")
                db = cpu_seconds(cluster.pids()) - db_before
                n = sum(r["requests"] for r in reports)
                rps = sum(r["requests_per_second"] for r in reports)
                cpu = sum(r["cpu_us_per_request"] * r["requests"] for r in reports) / max(n, 1)
                # The generator measures after its warm-up second; the database's time covers the
                # whole run, so it is divided by the whole run's requests (an upper bound).
                db_us = db * 1e6 / max(n, 1) if name != "sled ×1" else 0.0
                results[name]["rps"].append(rps)
                results[name]["cpu"].append(cpu)
                results[name]["db"].append(db_us)
                print(f"round {rnd + 1} {name:12} {rps:8.0f} req/s, gateway {cpu:6.1f} µs CPU/request, "
                      f"database {db_us:5.1f} µs CPU/request", flush=True)

        print()
        print(f"medians of {args.rounds} rounds (min–max), {args.connections} connections in all, "
              f"everything sharing this machine's {os.cpu_count()} cores")
        print(f"{'':14} {'req/s':>24} {'gateway µs CPU/req':>24} {'database µs CPU/req':>24}")
        for name in setups:
            r = results[name]
            print(f"{name:14} {compare.spread(r['rps'], '{:.0f}'):>24} {compare.spread(r['cpu']):>24} "
                  f"{compare.spread(r['db']):>24}")
        med = lambda name, k: statistics.median(results[name][k])
        print(f"req/s: postgres ×1 / sled ×1 {med('postgres ×1', 'rps') / med('sled ×1', 'rps'):.2f}, "
              f"postgres ×2 / postgres ×1 {med('postgres ×2', 'rps') / med('postgres ×1', 'rps'):.2f}")
    finally:
        compare.stop_all(procs)
        if cluster:
            cluster.stop()
        # Verify every chain written during the run (one per gateway; the replicas' under
        # audit-pg-*/replica-<name>).
        for d in sorted(glob.glob(os.path.join(args.work, "audit-*"))):
            # The key is pinned from the gateway's configuration (audit-sled → sled.toml,
            # audit-pg-a → pg-a.toml; both replicas of pg sign with the same configured key).
            name = os.path.basename(d)[len("audit-"):]
            conf = os.path.join(args.work, f"{name}.toml")
            if not os.path.exists(conf):
                conf = os.path.join(args.work, "pg-a.toml")
            out = subprocess.run([passerelle, "audit", "verify", d, "--config", conf],
                                 capture_output=True, text=True)
            print(f"{os.path.basename(d)}: {out.stdout.strip()}")
        if os.environ.get("KEEP_WORK") is None:
            shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
