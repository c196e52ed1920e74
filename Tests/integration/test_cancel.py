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


def wait_for_active_query(superuser, server_pid: int, fragment: str):
    def active():
        row = superuser.execute("select state, query from pg_stat_activity where pid = %s", (server_pid,)).fetchone()
        return row is not None and row[0] == "active" and fragment in row[1]
    wait_until(active, timeout=10, message=f"backend {server_pid} to run {fragment!r}")


def cancel_while_sleeping(conn, superuser, cancel):
    server_pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    cancelled_at = []

    def canceller():
        wait_for_active_query(superuser, server_pid, "pg_sleep")
        cancelled_at.append(time.monotonic())
        cancel(conn)

    thread = threading.Thread(target=canceller)
    thread.start()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled) as raised:
            conn.execute("select pg_sleep(10)")
        failed_at = time.monotonic()
    finally:
        thread.join(timeout=15)
    assert cancelled_at, "the canceller never saw the query running"
    assert raised.value.sqlstate == "57014"
    assert failed_at - cancelled_at[0] < 1.0, f"cancel took {failed_at - cancelled_at[0]:.2f}s"
    return server_pid


@pytest.mark.parametrize("api", ["cancel", "cancel_safe"])
def test_cancel_a_running_query(proxy, superuser, api):
    with proxy.connect() as conn:
        server_pid = cancel_while_sleeping(conn, superuser, lambda c: getattr(c, api)())
        # The session continues on the same server backend.
        assert conn.execute("select pg_backend_pid(), 1 + 1").fetchone() == (server_pid, 2)
        state = superuser.execute("select state from pg_stat_activity where pid = %s", (server_pid,)).fetchone()
        assert state == ("idle",)


def test_cancel_inside_a_transaction_aborts_only_that_transaction(proxy, superuser, table):
    with proxy.connect(autocommit=False) as conn:
        conn.execute(f"insert into {table} (id) values (1)")
        cancel_while_sleeping(conn, superuser, lambda c: c.cancel_safe())
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 1")
        conn.rollback()
        conn.execute(f"insert into {table} (id) values (2)")
        conn.commit()
    assert superuser.execute(f"select array_agg(id) from {table}").fetchone()[0] == [2]


def test_psql_ctrl_c_cancels_the_query(proxy, superuser):
    app_name = unique("psql_cancel")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD="secret", PGAPPNAME=app_name, PGCONNECT_TIMEOUT="5")
    process = subprocess.Popen(
        ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "app", "-d", "app"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        process.stdin.write("\\set VERBOSITY verbose\nselect pg_sleep(10);\n")
        process.stdin.flush()

        def sleeping_backend():
            row = superuser.execute("select pid from pg_stat_activity where application_name = %s "
                                    "and state = 'active' and query like '%%pg_sleep%%'", (app_name,)).fetchone()
            return row and row[0]

        server_pid = wait_until(sleeping_backend, timeout=10, message="psql's query to run")
        # Interactive Ctrl-C: psql sends a CancelRequest (to the proxy, with the proxy's key).
        process.send_signal(signal.SIGINT)
        wait_until(lambda: superuser.execute("select state from pg_stat_activity where pid = %s",
                                             (server_pid,)).fetchone() != ("active",),
                   timeout=1.0, interval=0.02, message="the server to stop the query")
        # A script stopped by Ctrl-C exits; the cancellation is what it reports.
        _, stderr = process.communicate(timeout=10)
        assert "57014: canceling statement due to user request" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_cancel_requests_with_a_wrong_key_cancel_nothing(proxy, superuser):
    with proxy.connect() as conn:
        server_pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        proxy_pid = conn.info.backend_pid  # the proxy's key, not the server's pid
        results = []
        thread = threading.Thread(target=lambda: results.append(conn.execute("select pg_sleep(1.5), 'done'").fetchone()))
        thread.start()
        try:
            wait_for_active_query(superuser, server_pid, "pg_sleep")
            for pid, secret in [(proxy_pid, b"\0\0\0\0"), (proxy_pid, b"\xff" * 4), (server_pid, b"\x01\x02\x03\x04"),
                                (proxy_pid + 1000, b"abcd")]:
                with Wire(proxy.port) as w:
                    w.send(struct.pack("!III", 16, CANCEL_REQUEST_CODE, pid) + secret)
                    assert w.closed_by_peer(5), "the proxy should close a cancel connection without a reply"
        finally:
            thread.join(timeout=15)
        assert results == [("", "done")]
