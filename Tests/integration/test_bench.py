"""causeway-bench end to end: a smoke run through Causeway (verified, reports parse, replicas
answered and the servers agree), stale reads caught when reads go straight to a delayed replica
(so the verification can fail) but not through Causeway in front of the same cluster, and lag
injection (a paused replica stops answering reads and comes back after the resume; the replica is
never left paused, also when the bench is stopped by SIGTERM).

CAUSEWAY_BENCH_BIN selects the binary (default .build/debug/causeway-bench).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import (
    HOST,
    REPO,
    node_port,
    reset_statement_stats,
    sandbox_down,
    sandbox_up,
    statement_calls,
    unique,
    wait_until,
)

BENCH_BIN = os.environ.get("CAUSEWAY_BENCH_BIN", str(REPO / ".build" / "debug" / "causeway-bench"))
DELAY_MS = 400


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    if not os.access(BENCH_BIN, os.X_OK):
        pytest.fail(f"{BENCH_BIN} is missing: run `swift build` first (or set CAUSEWAY_BENCH_BIN)")
    return subprocess.run([BENCH_BIN, "run", "--quiet", *args], capture_output=True, text=True, timeout=timeout)


def app_url(port: int) -> str:
    return f"host={HOST} port={port} user=app password=secret dbname=app connect_timeout=5"


def admin_url(port: int) -> str:
    return f"host={HOST} port={port} user=postgres password=postgres dbname=causeway connect_timeout=5"


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def load_report(out: Path) -> dict:
    """report.json and report.html exist and parse; the page has its charts and no script."""
    report = json.loads((out / "report.json").read_text())
    parser = _Tags()
    parser.feed((out / "report.html").read_text())
    parser.close()
    assert parser.tags.count("svg") == 4, parser.tags.count("svg")
    assert "script" not in parser.tags
    return report


def backend_reads(report: dict) -> dict[str, int]:
    return {b["name"]: b["reads"] for b in report["backends"]}


def test_smoke_through_causeway(cluster, proxy, workdir):
    table = unique("bench")
    out = workdir / table
    reset_statement_stats(cluster)
    run = bench("--url", proxy.dsn(), "--admin-url", admin_url(proxy.port), "--clients", "6", "--duration", "3s",
                "--protocol", "mixed", "--cross-read-percent", "20", "--table", table, "--out", str(out), "--fail-on-stale")
    assert run.returncode == 0, run.stdout + run.stderr
    report = load_report(out)
    totals = report["totals"]
    assert totals["reads"] > 100 and totals["writes"] > 10, totals
    assert totals["staleReads"] == 0 and totals["regressions"] == 0, totals
    assert totals["errors"] == 0, report["errors"]
    assert {c["protocol"] for c in report["clients"]} == {"simple", "extended", "prepared"}
    reads = backend_reads(report)
    assert set(reads) == {"primary", "replica1", "replica2"}, reads
    assert reads["replica1"] + reads["replica2"] > 0, reads
    assert report["lagSamples"] and report["target"]["lagSource"] == "admin console"
    assert "verification: no stale read" in run.stdout
    # The servers agree on who answered: pg_stat_statements counted the bench's reads there.
    calls = statement_calls(cluster, f"select (select v from {table}%inet_server_port%")
    names = {cluster.primary_port: "primary", **{node_port(cluster, n): n for n in ("replica1", "replica2")}}
    for port, name in names.items():
        assert calls[port] == reads[name], (name, calls, reads)


@pytest.fixture(scope="module")
def delayed(workdir):
    """A primary and one replica applying WAL DELAY_MS late."""
    cluster = sandbox_up(workdir / unique("bench-delayed"), replicas=1, delay_ms=DELAY_MS)
    try:
        yield cluster
    finally:
        sandbox_down(cluster)


def test_split_target_at_a_delayed_replica_finds_stale_reads(delayed, workdir):
    out = workdir / unique("bench-split")
    replica = delayed.env["DELAYED_REPLICA"]
    replica_port = node_port(delayed, replica)
    run = bench("--write-url", app_url(delayed.primary_port), "--read-url", app_url(replica_port),
                "--replica", f"{replica}=host={HOST} port={replica_port} dbname=postgres",
                "--lag-user", "postgres", "--lag-password", "postgres",
                "--clients", "4", "--duration", "2s", "--reads-after-write", "1", "--out", str(out), "--fail-on-stale")
    assert run.returncode == 3, run.stdout + run.stderr
    report = load_report(out)
    assert report["totals"]["staleReads"] > 0, report["totals"]
    assert report["target"]["mode"] == "split"
    assert backend_reads(report) == {replica: report["totals"]["reads"]}
    stale = [a for a in report["anomalies"] if "stale" in a["kind"]]
    assert stale and all(a["got"] < a["expected"] and a["backend"] == replica for a in stale)
    assert max(p["lagMs"] for s in report["lagSamples"] for p in s["backends"] if p["name"] == replica) >= DELAY_MS / 2
    assert 'class="marker"' in (out / "report.html").read_text()


def test_causeway_in_front_of_the_delayed_replica_reads_its_writes(delayed, make_proxy_for, workdir):
    proxy = make_proxy_for(delayed)
    out = workdir / unique("bench-session")
    run = bench("--url", proxy.dsn(), "--clients", "4", "--duration", "2s", "--reads-after-write", "2",
                "--read-delay", "0-300ms", "--protocol", "mixed", "--out", str(out), "--fail-on-stale")
    assert run.returncode == 0, run.stdout + run.stderr
    report = load_report(out)
    assert report["totals"]["reads"] > 0 and report["totals"]["staleReads"] == 0 and report["totals"]["regressions"] == 0
    replica_port = node_port(delayed, delayed.env["DELAYED_REPLICA"])
    assert any(b["port"] == replica_port and b["reads"] > 0 for b in report["backends"]), report["backends"]


def replay_paused(cluster, port: int) -> bool:
    return cluster.monitor(port).execute("select pg_is_wal_replay_paused()").fetchone()[0]


def test_lag_schedule_moves_reads_off_the_paused_replica_and_back(cluster, proxy, workdir):
    out = workdir / unique("bench-lag")
    run = bench("--url", proxy.dsn(), "--admin-url", admin_url(proxy.port), "--clients", "6", "--duration", "7s",
                "--think", "1ms", "--lag-schedule", "replica1@2s-4s", "--lag-user", "postgres", "--lag-password", "postgres",
                "--out", str(out), "--fail-on-stale")
    assert run.returncode == 0, run.stdout + run.stderr
    report = load_report(out)
    assert not replay_paused(cluster, node_port(cluster, "replica1"))
    events = [(e["action"], e["ok"]) for e in report["lagEvents"]]
    assert events[:2] == [("pause", True), ("resume", True)], report["lagEvents"]
    paused_at, resumed_at = report["lagEvents"][0]["tMs"], report["lagEvents"][1]["tMs"]
    buckets = report["timeline"]["buckets"]
    width = report["timeline"]["bucketMs"]
    # The proxy polls lag every 100 ms: allow it 500 ms to notice the pause.
    during = [b for b in buckets if b["tMs"] >= paused_at + 500 and b["tMs"] + width <= resumed_at]
    after = [b for b in buckets if b["tMs"] >= resumed_at]
    before = [b for b in buckets if b["tMs"] + width <= paused_at]
    assert during and after and before
    assert sum(b["readsByBackend"].get("replica1", 0) for b in before) > 0
    assert sum(b["readsByBackend"].get("replica1", 0) for b in during) == 0, during
    assert sum(b["reads"] for b in during) > 0, "reads went on elsewhere"
    assert sum(b["readsByBackend"].get("replica1", 0) for b in after) > 0, after
    assert max(p["lagMs"] or 0 for s in report["lagSamples"] for p in s["backends"] if p["name"] == "replica1") > 500


def test_sigterm_resumes_the_paused_replica(cluster, proxy, workdir):
    out = workdir / unique("bench-term")
    port = node_port(cluster, "replica2")
    process = subprocess.Popen(
        [BENCH_BIN, "run", "--quiet", "--url", proxy.dsn(), "--admin-url", admin_url(proxy.port), "--clients", "2",
         "--duration", "30s", "--think", "5ms", "--lag-schedule", "replica2@500ms-30s", "--lag-user", "postgres",
         "--lag-password", "postgres", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: replay_paused(cluster, port), timeout=15, message="replica2 paused by the bench")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stdout + stderr
    assert not replay_paused(cluster, port), "the bench left replica2 paused"
    report = load_report(out)
    assert report["interrupted"] is True
    assert report["lagEvents"][-1]["action"] == "resume" and report["lagEvents"][-1]["ok"]
