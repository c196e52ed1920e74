"""Query cancellation through the proxy: libpq's PQcancel and the newer cancel API (via psycopg),
psql's Ctrl-C, and CancelRequests carrying the wrong key."""

import os
import signal
import struct
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import CANCEL_REQUEST_CODE, Wire, unique, wait_until


@pytest.fixture
def proxy(proxy_in_each_mode):
    """Each test runs through a session-mode and a transaction-mode proxy."""
    return proxy_in_each_mode


def sleeping_backend(cluster, application_name: str):
    """The server backend (on whichever server) of this session that is running pg_sleep."""
    for row in cluster.backends_of(application_name):
        if row["state"] == "active" and "pg_sleep" in row["query"]:
            return row
    return None


def cancel_while_sleeping(conn, cluster, cancel, sql="select pg_sleep(10)"):
    """Runs `sql` on `conn`, cancels it with `cancel(conn)` once a server runs it; returns that backend."""
    app_name = conn.info.parameter_status("application_name")
    assert app_name, "connect with a unique application_name"
    cancelled_at = []
    backend = []

    def canceller():
        backend.append(wait_until(lambda: sleeping_backend(cluster, app_name), timeout=10,
                                  message="the query to run on a server"))
        cancelled_at.append(time.monotonic())
        cancel(conn)

    thread = threading.Thread(target=canceller)
    thread.start()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled) as raised:
            conn.execute(sql)
        failed_at = time.monotonic()
    finally:
        thread.join(timeout=15)
    assert cancelled_at, "the canceller never saw the query running"
    assert raised.value.sqlstate == "57014"
    assert raised.value.diag.message_primary == "canceling statement due to user request"
    assert failed_at - cancelled_at[0] < 1.0, f"cancel took {failed_at - cancelled_at[0]:.2f}s"
    return backend[0]


@pytest.mark.parametrize("api", ["cancel", "cancel_safe"])
def test_cancel_a_running_query(proxy, cluster, api):
    with proxy.connect(application_name=unique("cancel")) as conn:
        backend = cancel_while_sleeping(conn, cluster, lambda c: getattr(c, api)())
        # The server backend survived the cancel and the session goes on.
        assert conn.execute("select 1 + 1").fetchone()[0] == 2
        wait_until(lambda: (cluster.backend(backend["pid"]) or {}).get("state") == "idle", timeout=5,
                   message="the cancelled backend to be idle")


def test_cancel_a_query_that_writes(proxy, cluster, table):
    with proxy.connect(application_name=unique("cancel")) as conn:
        backend = cancel_while_sleeping(
            conn, cluster, lambda c: c.cancel_safe(),
            sql=f"insert into {table} (id) select 1 from pg_sleep(10)")
        assert backend["port"] == cluster.primary_port
        assert conn.execute(f"select count(*) from {table}").fetchone()[0] == 0


def test_cancel_inside_a_transaction_aborts_only_that_transaction(proxy, cluster, superuser, table):
    with proxy.connect(autocommit=False, application_name=unique("cancel")) as conn:
        conn.execute(f"insert into {table} (id) values (1)")
        cancel_while_sleeping(conn, cluster, lambda c: c.cancel_safe())
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        conn.execute(f"insert into {table} (id) values (2)")
        conn.commit()
    assert superuser.execute(f"select array_agg(id) from {table}").fetchone()[0] == [2]


def test_psql_ctrl_c_cancels_the_query(proxy, cluster):
    app_name = unique("psql_cancel")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD="secret", PGAPPNAME=app_name, PGCONNECT_TIMEOUT="5")
    process = subprocess.Popen(
        ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "app", "-d", "app"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        process.stdin.write("\\set VERBOSITY verbose\nselect pg_sleep(10);\n")
        process.stdin.flush()

        backend = wait_until(lambda: sleeping_backend(cluster, app_name), timeout=10, message="psql's query to run")
        # Ctrl-C: psql sends a CancelRequest (to the proxy, with the proxy's key).
        process.send_signal(signal.SIGINT)
        wait_until(lambda: (cluster.backend(backend["pid"]) or {}).get("state") != "active",
                   timeout=1.0, interval=0.02, message="the server to stop the query")
        # A script stopped by Ctrl-C exits; the cancellation is what it reports.
        _, stderr = process.communicate(timeout=10)
        assert "57014: canceling statement due to user request" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cancel_requests_with_a_wrong_key_cancel_nothing(proxy, cluster):
    app_name = unique("cancel")
    with proxy.connect(application_name=app_name) as conn:
        proxy_pid = conn.info.backend_pid  # the proxy's key, not a server's pid
        results = []
        thread = threading.Thread(target=lambda: results.append(conn.execute("select pg_sleep(1.5), 'done'").fetchone()))
        thread.start()
        try:
            server_pid = wait_until(lambda: sleeping_backend(cluster, app_name), timeout=10,
                                    message="the query to run")["pid"]
            for pid, secret in [(proxy_pid, b"\0\0\0\0"), (proxy_pid, b"\xff" * 4), (server_pid, b"\x01\x02\x03\x04"),
                                (proxy_pid + 1000, b"abcd")]:
                with Wire(proxy.port) as w:
                    w.send(struct.pack("!III", 16, CANCEL_REQUEST_CODE, pid) + secret)
                    assert w.closed_by_peer(5), "the proxy should close a cancel connection without a reply"
        finally:
            thread.join(timeout=15)
        assert results == [("", "done")]
