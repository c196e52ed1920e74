#!/usr/bin/env python3
"""Read-your-writes under replica lag, and what the commit-LSN capture costs a write.

    .venv/bin/python bench/consistency.py                 # defaults below
    .venv/bin/python bench/consistency.py --sessions 8 --cycles 40 --iterations 2000
    .venv/bin/python bench/consistency.py --no-build      # use the existing .build/release/causeway

A sandbox cluster whose replica applies WAL 100 ms late (`sandbox up --delay-ms 100`), and a proxy
config written from the generated one listing only the primary and that delayed replica.

Part 1 — consistency modes. SESSIONS concurrent sessions through Causeway; each cycle writes one
row (autocommit INSERT) and then reads it back 10 times, one read every 50 ms (the first right
after the write, the last 450 ms after it; --first-read-ms 50 shifts them to 50..500 ms). Every read is
    SELECT inet_server_port(), EXISTS (SELECT 1 FROM cw_consistency WHERE id = <the row>)
so the server says who answered, and whether the write was visible. Run once with
`SET causeway.consistency = session`, once with `eventual`. Reported per mode: share of reads
answered by the replica, stale reads (the row was not visible), reads that went back in time (not
visible after an earlier read of the same cycle saw it), and a per-offset profile.
Targets: session replica share >= 70 % of eventual's; 0 stale reads in session mode.

Part 2 — added latency per write from the LSN capture. After every autocommit write on the primary
Causeway pipelines `SELECT pg_current_wal_insert_lsn()` behind it on the same server connection
and holds the session's next request until the answer is in (in every consistency mode). To
isolate that cost, four kinds of statement run back to back in blocks of 50, the kinds rotating
block by block (so machine noise hits them alike), each on its own connection:
    Wc  INSERT through Causeway          Wd  the same INSERT straight to the primary
    Sc  /* causeway: primary */ SELECT 1 through Causeway (a primary round trip, no capture)
    Sd  the same SELECT straight to the primary
(Wc - Wd) is the proxy's cost for a write (relay + capture); (Sc - Sd) is its cost for a primary
round trip without capture; their difference is what the capture adds:
    added = (p50 Wc - p50 Wd) - (p50 Sc - p50 Sd)      target <= 0.2 ms
Back to back matters: the capture's answer arrives just after the client's own ReadyForQuery, so
its cost shows up as the wait of the *next* statement; a client that thinks between writes pays
less.

Everything runs on 127.0.0.1 and is stopped on exit (proxy, sandbox). Results are printed and
written to /tmp/causeway-bench-out/consistency-<date>.txt. This script only reports; it exits
non-zero only when it could not run (or when a proxy error reached a client).
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
CAUSEWAY = ROOT / ".build" / "release" / "causeway"
HOST = "127.0.0.1"
READS_PER_CYCLE = 10
READ_INTERVAL = 0.050


def log(message: str) -> None:
    print(f"consistency: {message}", file=sys.stderr, flush=True)


def parse_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, raw = line.partition("=")
            values[key] = " ".join(shlex.split(raw))
    return values


def proxy_config(generated: str, keep: set[str], routing: dict[str, str], monitor: dict[str, str]) -> str:
    """The generated config without the [[backends]] not in `keep`, plus a [routing] table and
    extra [monitor] keys."""
    blocks: list[list[str]] = [[]]
    for line in generated.splitlines():
        if line.startswith("["):
            blocks.append([])
        blocks[-1].append(line)
    out: list[str] = []
    for block in blocks:
        if block and block[0].strip() == "[[backends]]":
            name = next((l.split("=", 1)[1].strip().strip('"') for l in block if l.startswith("name")), "")
            if name not in keep:
                continue
        if block and block[0].strip() == "[monitor]":
            out += ["[routing]"] + [f"{k} = {v}" for k, v in routing.items()] + [""]
            block = block[:1] + [f"{k} = {v}" for k, v in monitor.items()] + block[1:]
        out += block
    return "\n".join(out) + "\n"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Cluster:
    """The sandbox and the proxy; stop() undoes everything start() did."""

    def __init__(self, args):
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="causeway-consistency.", dir="/tmp"))
        self.dir.rmdir()
        self.sandbox_up = False
        self.proxy: subprocess.Popen | None = None
        self.proxy_log = None
        self.proxy_log_path = None

    def start(self) -> None:
        log(f"sandbox up --replicas {self.args.replicas} --delay-ms {self.args.delay_ms} in {self.dir}")
        self.sandbox_up = True
        result = subprocess.run(
            [str(CAUSEWAY), "sandbox", "up", "--dir", str(self.dir), "--replicas", str(self.args.replicas),
             "--delay-ms", str(self.args.delay_ms)], capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            raise SystemExit(f"sandbox up failed:\n{result.stdout}\n{result.stderr}")
        env = parse_env(self.dir / "sandbox.env")
        self.primary = int(env["PRIMARY_PORT"])
        self.replica_name = env["DELAYED_REPLICA"]
        names, ports = env["REPLICA_NAMES"].split(), [int(p) for p in env["REPLICA_PORTS"].split()]
        self.replica = dict(zip(names, ports))[self.replica_name]
        self.proxy_port = int(env["PROXY_PORT"])
        routing = {"consistency": '"session"'}
        if self.args.causal_wait_ms is not None:
            routing["causal_wait_ms"] = str(self.args.causal_wait_ms)
        monitor = {} if self.args.monitor_interval_ms is None else {"interval_ms": str(self.args.monitor_interval_ms)}
        config = proxy_config((self.dir / "causeway.toml").read_text(), {"primary", self.replica_name}, routing, monitor)
        self.config_path = self.dir / "causeway-consistency.toml"
        self.config_path.write_text(config)
        check = subprocess.run([str(CAUSEWAY), "check-config", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise SystemExit(f"generated config rejected:\n{check.stdout}{check.stderr}")
        out = Path(self.args.out)
        out.mkdir(parents=True, exist_ok=True)
        self.proxy_log_path = out / f"causeway-consistency-{time.strftime('%Y%m%d-%H%M%S')}.log"
        self.proxy_log = open(self.proxy_log_path, "w")
        self.proxy = subprocess.Popen([str(CAUSEWAY), "--config", str(self.config_path)],
                                      stdout=subprocess.DEVNULL, stderr=self.proxy_log)
        # Ready when an eventual read through the proxy is answered by the replica.
        deadline = time.monotonic() + 30
        while True:
            if self.proxy.poll() is not None:
                raise SystemExit(f"causeway exited ({self.proxy.returncode}); log {self.proxy_log_path}")
            try:
                with self.connect(self.proxy_port) as c:
                    c.execute("SET causeway.consistency = eventual")
                    if c.execute("SELECT inet_server_port()").fetchone()[0] == self.replica:
                        break
            except psycopg.Error:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"causeway did not route a read to {self.replica_name} within 30 s; log {self.proxy_log_path}")
            time.sleep(0.2)

    def connect(self, port: int, user: str = "app", password: str = "secret") -> psycopg.Connection:
        return psycopg.connect(host=HOST, port=port, user=user, password=password, dbname="app",
                               autocommit=True, connect_timeout=5)

    def stop(self) -> None:
        if self.proxy is not None and self.proxy.poll() is None:
            self.proxy.send_signal(signal.SIGINT)
            try:
                self.proxy.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait(timeout=10)
        if self.proxy_log:
            self.proxy_log.close()
        if self.sandbox_up and not self.args.keep_sandbox:
            subprocess.run([str(CAUSEWAY), "sandbox", "down", "--dir", str(self.dir)],
                           capture_output=True, text=True, timeout=180)


# --------------------------------------------------------------------------------------------
# Part 1


def run_mode(cluster: Cluster, mode: str, sessions: int, cycles: int, next_id, first: float) -> dict:
    reads: list[tuple[int, float, bool, bool, float]] = []  # (offset index, offset s, on replica, seen, latency s)
    back_in_time = []
    errors: list[str] = []
    deadline = time.monotonic() + 60 + cycles * (READS_PER_CYCLE * READ_INTERVAL + 0.5)
    start = threading.Barrier(sessions)

    def session(index: int) -> None:
        mine = []
        try:
            with cluster.connect(cluster.proxy_port) as c:
                c.execute(f"SET causeway.consistency = {mode}")
                start.wait(timeout=30)
                time.sleep(random.uniform(0, READS_PER_CYCLE * READ_INTERVAL))  # spread the sessions
                for cycle in range(cycles):
                    if time.monotonic() > deadline:
                        errors.append(f"session {index}: out of time after {cycle} cycles")
                        break
                    row = next_id()
                    c.execute("INSERT INTO cw_consistency (id, session, cycle) VALUES (%s, %s, %s)", (row, index, cycle))
                    written = time.monotonic()
                    seen_before = False
                    for i in range(READS_PER_CYCLE):
                        wait = written + first + i * READ_INTERVAL - time.monotonic()
                        if wait > 0:
                            time.sleep(wait)
                        sent = time.monotonic()
                        port, seen = c.execute(
                            "SELECT inet_server_port(), EXISTS (SELECT 1 FROM cw_consistency WHERE id = %s)", (row,)
                        ).fetchone()
                        mine.append((i, sent - written, port == cluster.replica, seen, time.monotonic() - sent))
                        if seen_before and not seen:
                            back_in_time.append((index, cycle, i))
                        seen_before = seen_before or seen
                    time.sleep(max(0.0, written + first + READS_PER_CYCLE * READ_INTERVAL - time.monotonic()))
        except Exception as e:  # a proxy error reaching the client is a finding, never hidden
            errors.append(f"session {index} ({mode}): {e!r}")
        reads.extend(mine)

    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(sessions)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic() + 30))
    errors += [f"a session thread did not finish ({mode})" for t in threads if t.is_alive()]
    return dict(reads=reads, back_in_time=back_in_time, errors=errors, elapsed=time.monotonic() - t0)


def summarize(mode: str, runs: list[dict]) -> dict:
    reads = [r for run in runs for r in run["reads"]]
    total = len(reads)
    profile = []
    for i in range(READS_PER_CYCLE):
        at = [r for r in reads if r[0] == i]
        if at:
            profile.append((i, statistics.median(r[1] for r in at) * 1000,
                            sum(r[2] for r in at) / len(at), sum(not r[3] for r in at) / len(at)))
    return dict(mode=mode, reads=total, cycles=total // READS_PER_CYCLE, elapsed=sum(run["elapsed"] for run in runs),
                replica_share=sum(r[2] for r in reads) / max(total, 1),
                stale=sum(not r[3] for r in reads), back_in_time=sum(len(run["back_in_time"]) for run in runs),
                read_p50=pct([r[4] for r in reads], 0.5) * 1000 if reads else 0,
                read_p95=pct([r[4] for r in reads], 0.95) * 1000 if reads else 0,
                profile=profile, errors=[e for run in runs for e in run["errors"]])


# --------------------------------------------------------------------------------------------
# Part 2


def capture_latency(cluster: Cluster, iterations: int, block: int) -> dict:
    insert = "INSERT INTO cw_latency (v) VALUES (%s)"
    select = "/* causeway: primary */ SELECT 1"
    conns = {k: cluster.connect(cluster.proxy_port if k.endswith("c") else cluster.primary) for k in ("Wc", "Wd", "Sc", "Sd")}
    try:
        port = conns["Sc"].execute("/* causeway: primary */ SELECT inet_server_port()").fetchone()[0]
        if port != cluster.primary:
            raise SystemExit(f"/* causeway: primary */ was answered by port {port}, not the primary {cluster.primary}")
        statements = {"Wc": (insert, True), "Wd": (insert, True), "Sc": (select, False), "Sd": (select, False)}
        samples: dict[str, list[float]] = {k: [] for k in conns}

        def run_block(kind: str, n: int, keep: bool) -> None:
            conn, (sql, has_param) = conns[kind], statements[kind]
            cur = conn.cursor()
            for j in range(n):
                t0 = time.perf_counter_ns()
                if has_param:
                    cur.execute(sql, (j,))
                else:
                    cur.execute(sql)
                    cur.fetchone()
                if keep:
                    samples[kind].append((time.perf_counter_ns() - t0) / 1e6)

        for kind in conns:  # warm-up: connections, prepared statements, caches
            run_block(kind, 2 * block, keep=False)
        kinds = list(conns)
        deadline = time.monotonic() + 300
        blocks = max(1, iterations // block)
        for b in range(blocks):
            if time.monotonic() > deadline:
                break
            order = kinds[b % 4:] + kinds[:b % 4]
            for kind in order:
                run_block(kind, block, keep=True)
    finally:
        for c in conns.values():
            c.close()
    stats = {k: dict(n=len(v), p50=pct(v, 0.5), p95=pct(v, 0.95), mean=statistics.fmean(v)) for k, v in samples.items()}
    added = {q: (stats["Wc"][q] - stats["Wd"][q]) - (stats["Sc"][q] - stats["Sd"][q]) for q in ("p50", "p95", "mean")}
    # Paired by rotation: in each rotation every kind ran one block, close together in time; the
    # spread of the per-rotation estimates shows how much of the figure is noise.
    rounds = min(len(v) for v in samples.values()) // block
    med = lambda k, r: statistics.median(samples[k][r * block:(r + 1) * block])
    paired = [(med("Wc", r) - med("Wd", r)) - (med("Sc", r) - med("Sd", r)) for r in range(rounds)]
    q = statistics.quantiles(paired, n=4) if len(paired) >= 2 else [paired[0]] * 3
    return dict(stats=stats, added=added, block=block, paired=dict(n=rounds, median=statistics.median(paired), q1=q[0], q3=q[2]))


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=40, help="write+10 reads cycles per session and mode")
    parser.add_argument("--rounds", type=int, default=2, help="alternating session/eventual rounds (cycles are split)")
    parser.add_argument("--delay-ms", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=1, help="sandbox replicas (the last is delayed; only it is used)")
    parser.add_argument("--iterations", type=int, default=2000, help="latency samples per statement kind")
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--first-read-ms", type=int, default=0,
                        help="when the first of the 10 reads comes after the write (0: right after; 50: reads at 50..500 ms)")
    parser.add_argument("--causal-wait-ms", type=int, help="routing.causal_wait_ms for the proxy (default: the proxy's, 0)")
    parser.add_argument("--monitor-interval-ms", type=int, help="monitor.interval_ms for the proxy (default: the proxy's, 100)")
    parser.add_argument("--out", default="/tmp/causeway-bench-out")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--keep-sandbox", action="store_true")
    args = parser.parse_args()

    if not args.no_build:
        log("swift build -c release --product causeway")
        subprocess.run(["swift", "build", "-c", "release", "--product", "causeway"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)

    def terminate(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)

    cluster = Cluster(args)
    lines: list[str] = []
    failed = False
    try:
        cluster.start()
        with cluster.connect(cluster.primary) as c:
            c.execute("CREATE TABLE cw_consistency (id bigint PRIMARY KEY, session int, cycle int)")
            c.execute("CREATE TABLE cw_latency (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int)")
        time.sleep(0.5 + args.delay_ms / 1000)  # let the delayed replica have the tables

        counter = iter(range(1, 10**12))
        lock = threading.Lock()

        def next_id() -> int:
            with lock:
                return next(counter)

        git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet"]).returncode != 0
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        lines.append(f"# bench/consistency.py  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}  git {git}{'+dirty' if dirty else ''}")
        lines.append(f"# machine: {os.cpu_count()} cores ({cpu}); clients, proxy and servers share them")
        lines.append(f"# sandbox: primary + {cluster.replica_name} with recovery_min_apply_delay = {args.delay_ms} ms; "
                     f"proxy config: those two backends, max_lag_ms 1000 and fallback primary (defaults), "
                     f"causal_wait_ms {args.causal_wait_ms if args.causal_wait_ms is not None else '0 (default)'}, "
                     f"monitor interval_ms {args.monitor_interval_ms if args.monitor_interval_ms is not None else '100 (default)'}")
        lines.append("")
        per_round = max(1, args.cycles // args.rounds)
        lines.append(f"## Part 1: {args.sessions} sessions x {per_round * args.rounds} cycles per mode, in {args.rounds} rounds "
                     f"alternating session/eventual; a cycle = 1 INSERT, then "
                     f"{READS_PER_CYCLE} reads {READ_INTERVAL * 1000:.0f} ms apart, the first "
                     + ("right after the write" if args.first_read_ms == 0 else f"{args.first_read_ms} ms after it"))
        runs: dict[str, list[dict]] = {"session": [], "eventual": []}
        for round_ in range(args.rounds):   # A/B alternating
            for mode in runs:
                log(f"round {round_ + 1}/{args.rounds}, mode {mode}: {args.sessions} sessions x {per_round} cycles")
                runs[mode].append(run_mode(cluster, mode, args.sessions, per_round, next_id, args.first_read_ms / 1000))
        results = {mode: summarize(mode, r) for mode, r in runs.items()}
        for mode, r in results.items():
            lines.append(f"{mode:<9} reads={r['reads']:<6} cycles={r['cycles']:<5} replica share={r['replica_share'] * 100:5.1f}%  "
                         f"stale reads={r['stale']:<4} ({r['stale'] / max(r['reads'], 1) * 100:.1f}%)  "
                         f"went back in time={r['back_in_time']}  read latency p50 {r['read_p50']:.2f} ms p95 {r['read_p95']:.2f} ms")
        lines.append("per read offset (median ms after the write): replica share / stale share")
        header = "  offset   " + "".join(f"{p[1]:>8.0f}" for p in results["session"]["profile"])
        lines.append(header)
        for mode, r in results.items():
            lines.append(f"  {mode:<9}" + "".join(f"{p[2] * 100:>7.0f}%" for p in r["profile"]) + "   replica")
            lines.append(f"  {'':<9}" + "".join(f"{p[3] * 100:>7.0f}%" for p in r["profile"]) + "   stale")
        s, e = results["session"], results["eventual"]
        ratio = s["replica_share"] / e["replica_share"] if e["replica_share"] else float("nan")
        ok1 = ratio >= 0.70
        ok2 = s["stale"] == 0 and s["back_in_time"] == 0
        lines.append(f"target: session replica share >= 70% of eventual's: {ratio * 100:.1f}% -> {'PASS' if ok1 else 'MISS'}; "
                     f"0 stale reads in session mode: {s['stale']} stale, {s['back_in_time']} back in time -> {'PASS' if ok2 else 'FAIL'}")
        for r in results.values():
            for err in r["errors"]:
                lines.append(f"ERROR: {err}")
                failed = True

        log(f"capture latency: {args.iterations} samples per kind, blocks of {args.block}")
        lat = capture_latency(cluster, args.iterations, args.block)
        st = lat["stats"]
        lines.append("")
        lines.append(f"## Part 2: added latency per write from the LSN capture ({st['Wc']['n']} samples per kind, "
                     f"back to back in blocks of {lat['block']}, kinds rotating; psycopg, autocommit, one connection per kind)")
        names = {"Wc": "INSERT via causeway", "Wd": "INSERT direct", "Sc": "SELECT 1 via causeway (primary hint)",
                 "Sd": "SELECT 1 direct"}
        for k in ("Wc", "Wd", "Sc", "Sd"):
            lines.append(f"  {names[k]:<38} p50 {st[k]['p50']:.3f} ms   p95 {st[k]['p95']:.3f} ms   mean {st[k]['mean']:.3f} ms")
        a = lat["added"]
        lines.append(f"  proxy cost of a write        (Wc-Wd): p50 {st['Wc']['p50'] - st['Wd']['p50']:.3f} ms")
        lines.append(f"  proxy cost of a primary read (Sc-Sd): p50 {st['Sc']['p50'] - st['Sd']['p50']:.3f} ms")
        lines.append(f"  added by the capture = (Wc-Wd)-(Sc-Sd): p50 {a['p50']:.3f} ms  (p95 {a['p95']:.3f} ms, mean {a['mean']:.3f} ms)"
                     f"  target p50 <= 0.2 ms -> {'PASS' if a['p50'] <= 0.2 else 'MISS'}")
        pr = lat["paired"]
        lines.append(f"  the same per rotation (block medians, {pr['n']} rotations): median {pr['median']:.3f} ms, "
                     f"interquartile range {pr['q1']:.3f} .. {pr['q3']:.3f} ms")
    except KeyboardInterrupt:
        log("interrupted")
        lines.append("# INTERRUPTED: the figures above (if any) are incomplete")
        failed = True
    finally:
        cluster.stop()

    text = "\n".join(lines)
    print(text)
    if lines:
        out = Path(args.out) / f"consistency-{time.strftime('%Y%m%d-%H%M%S')}.txt"
        out.write_text(text + "\n")
        log(f"results: {out}; proxy log: {cluster.proxy_log_path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
