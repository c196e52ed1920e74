"""pgbench through the proxy: initialisation (COPY) and the simple, extended and prepared protocols."""

import os
import re
import subprocess

import pytest

from conftest import unique

CLIENTS, THREADS, TRANSACTIONS = 4, 2, 200


def pgbench(proxy, dbname, *args, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = "secret"
    env["PGCONNECT_TIMEOUT"] = "5"
    command = ["pgbench", "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "app", *args, dbname]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"pgbench exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def bench_db(cluster, _session_proxy):
    """A database of its own, initialised by `pgbench -i` through the proxy."""
    name = unique("bench")
    with cluster.superuser() as conn:
        conn.execute(f"create database {name} owner app")
    try:
        result = pgbench(_session_proxy, name, "-i", "-s", "1", "-q")
        assert "done" in result.stderr
        with cluster.superuser(dbname=name) as conn:
            assert conn.execute("select count(*) from pgbench_accounts").fetchone()[0] == 100_000
            assert conn.execute("select count(*) from pgbench_branches").fetchone()[0] == 1
        yield name
    finally:
        with cluster.superuser() as conn:
            conn.execute(f"drop database if exists {name} with (force)")


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_runs_without_failed_transactions(proxy, cluster, bench_db, mode):
    with cluster.superuser(dbname=bench_db) as conn:
        history_before = conn.execute("select count(*) from pgbench_history").fetchone()[0]

    result = pgbench(proxy, bench_db, "-n", "-M", mode, "-c", str(CLIENTS), "-j", str(THREADS),
                     "-t", str(TRANSACTIONS))
    expected = CLIENTS * TRANSACTIONS
    assert f"query mode: {mode}" in result.stdout
    assert f"number of transactions actually processed: {expected}/{expected}" in result.stdout
    failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
    assert failed and failed.group(1) == "0", result.stdout

    # The server saw every transaction whole: one history row each, and every balance moved by the
    # same total as the history records.
    with cluster.superuser(dbname=bench_db) as conn:
        history_after, deltas, accounts, tellers, branches = conn.execute(
            "select (select count(*) from pgbench_history), (select sum(delta) from pgbench_history),"
            " (select sum(abalance) from pgbench_accounts), (select sum(tbalance) from pgbench_tellers),"
            " (select sum(bbalance) from pgbench_branches)").fetchone()
    assert history_after - history_before == expected
    assert deltas == accounts == tellers == branches
