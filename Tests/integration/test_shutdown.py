"""Stopping the proxy: SIGTERM lets open transactions finish (bounded by --shutdown-timeout) and
then disconnects with 57P01; SIGINT disconnects everyone at once. Each test has a proxy of its own."""

import random
import signal
import socket
import subprocess
import threading
import time

import psycopg
import pytest

from conftest import ServerError, Wire, is_disconnect, unique, wait_until


def new_connections_refused(proxy) -> bool:
    """True when a new client cannot get in: TCP refused, or an ErrorResponse 57P01/57P03."""
    try:
        w = Wire(proxy.port, timeout=3)
    except OSError:
        return True
    with w:
        try:
            w.login()
        except ServerError as e:
            assert e.code in ("57P01", "57P03"), e.fields
            return True
        except (EOFError, OSError):
            return True
    return False


def expect_shutdown_error(wire: Wire, timeout: float = 5):
    wire.sock.settimeout(timeout)
    fields = wire.read_error()
    assert fields["S"] == "FATAL"
    assert fields["C"] == "57P01", fields
    assert wire.closed_by_peer(timeout)


def test_sigterm_lets_the_open_transaction_commit_then_disconnects(make_proxy, cluster, superuser, table):
    # A short --shutdown-timeout bounds the test even if the proxy waits for the timeout (see below).
    proxy = make_proxy(args=["--shutdown-timeout", "3"])
    in_tx = Wire(proxy.port)
    idle = Wire(proxy.port)
    with in_tx, idle:
        in_tx.login()
        idle.login()
        assert idle.query("select 1").rows == [["1"]]
        result = in_tx.query(f"begin; insert into {table} (id) values (1)")
        assert result.status == "T" and not result.errors

        proxy.signal(signal.SIGTERM)
        # An idle session is told at once.
        expect_shutdown_error(idle)
        # New clients are turned away.
        wait_until(lambda: new_connections_refused(proxy), timeout=5, message="new connections to be refused")

        # The open transaction goes on, and commits.
        result = in_tx.query(f"insert into {table} (id) values (2)")
        assert result.status == "T" and not result.errors
        result = in_tx.query("commit")
        assert result.tags == ["COMMIT"] and result.status == "I"
        # Then the session is closed.
        expect_shutdown_error(in_tx, timeout=10)

    assert superuser.execute(f"select array_agg(id order by id) from {table}").fetchone()[0] == [1, 2]
    assert proxy.wait(timeout=10) == 0
    assert not proxy.accepts_tcp()


@pytest.mark.parametrize("writes", [
    False,
    pytest.param(True),
], ids=["read-only transaction", "writing transaction"])
def test_sigterm_disconnects_as_soon_as_the_transaction_ends(make_proxy, table, writes):
    proxy = make_proxy()  # default --shutdown-timeout: 30 s
    with Wire(proxy.port) as w:
        w.login()
        sql = f"begin; insert into {table} (id) values (1)" if writes else "begin; select 1"
        assert w.query(sql).status == "T"
        proxy.signal(signal.SIGTERM)
        wait_until(lambda: new_connections_refused(proxy), timeout=5, message="new connections to be refused")
        assert w.query("commit").status == "I"
        expect_shutdown_error(w, timeout=3)
    assert proxy.wait(timeout=10) == 0


def test_sigterm_with_psycopg_clients(make_proxy, superuser, table):
    # The short timeout bounds how long the writing-transaction bug above can keep the session open.
    proxy = make_proxy(args=["--shutdown-timeout", "3"])
    with proxy.connect(autocommit=False) as conn, proxy.connect() as idle:
        conn.execute(f"insert into {table} (id) values (1)")
        proxy.signal(signal.SIGTERM)
        wait_until(lambda: new_connections_refused(proxy), timeout=5, message="new connections to be refused")
        with pytest.raises(psycopg.OperationalError):
            proxy.connect()
        conn.execute(f"insert into {table} (id) values (2)")
        conn.commit()

        def shut_out(c):
            try:
                c.execute("select 1")
                return None
            except psycopg.OperationalError as e:
                return e

        error = wait_until(lambda: shut_out(conn), timeout=10, interval=0.2, message="the session to be closed")
        assert is_disconnect(error, codes=("57P01",)), (error.sqlstate, str(error))
        assert conn.closed
        error = shut_out(idle)
        assert error is not None and is_disconnect(error, codes=("57P01",)), error
    assert superuser.execute(f"select array_agg(id order by id) from {table}").fetchone()[0] == [1, 2]
    assert proxy.wait(timeout=10) == 0


def test_sigterm_timeout_ends_a_transaction_that_does_not_finish(make_proxy, cluster, superuser, table):
    proxy = make_proxy(args=["--shutdown-timeout", "1"])
    app_name = unique("slow_tx")
    with Wire(proxy.port) as w:
        w.login(params={"application_name": app_name})
        assert w.query(f"begin; insert into {table} (id) values (1)").status == "T"
        proxy.signal(signal.SIGTERM)
        # Nothing more from the client: after the timeout the proxy disconnects it.
        expect_shutdown_error(w, timeout=10)
    wait_until(lambda: not cluster.backends_of(app_name), timeout=5, message="the server backends to go away")
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 0
    assert proxy.wait(timeout=10) == 0


def test_sigint_disconnects_at_once_and_rolls_back(make_proxy, cluster, superuser, table):
    proxy = make_proxy()
    app_name = unique("sigint")
    with Wire(proxy.port) as in_tx, Wire(proxy.port) as idle:
        in_tx.login(params={"application_name": app_name})
        idle.login()
        assert in_tx.query(f"begin; insert into {table} (id) values (1)").status == "T"
        proxy.signal(signal.SIGINT)
        expect_shutdown_error(in_tx, timeout=2)
        expect_shutdown_error(idle, timeout=2)
    wait_until(lambda: not cluster.backends_of(app_name), timeout=5, message="the server backends to go away")
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 0
    assert proxy.wait(timeout=10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()


def test_sigint_after_sigterm_escalates_to_an_immediate_stop(make_proxy, cluster, superuser, table):
    proxy = make_proxy()  # default --shutdown-timeout: 30 s
    app_name = unique("escalate")
    with Wire(proxy.port) as w:
        w.login(params={"application_name": app_name})
        assert w.query(f"begin; insert into {table} (id) values (1)").status == "T"
        proxy.signal(signal.SIGTERM)
        wait_until(lambda: new_connections_refused(proxy), timeout=5, message="new connections to be refused")
        proxy.signal(signal.SIGINT)
        expect_shutdown_error(w, timeout=3)
    wait_until(lambda: not cluster.backends_of(app_name), timeout=5, message="the server backends to go away")
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 0
    assert proxy.wait(timeout=10) == 0


def _racing_login(port: int, delay: float):
    time.sleep(delay)
    try:
        with Wire(port, timeout=5) as w:
            w.login()
            w.query("select 1")
    except (OSError, EOFError, ServerError, AssertionError):
        pass  # refused or cut by the shutdown: expected; only the proxy's exit is checked


def test_sigterm_racing_logins_always_exits_within_the_timeout(make_proxy):
    """Logins arriving 0–6 ms around SIGTERM, 200 times: every shutdown ends within its timeout
    and releases the listening port."""
    hung = []
    for attempt in range(200):
        proxy = make_proxy(args=["--shutdown-timeout", "2"])
        threads = [threading.Thread(target=_racing_login, args=(proxy.port, random.uniform(0, 0.006)))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(random.uniform(0, 0.006))
        proxy.signal(signal.SIGTERM)
        try:
            proxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            hung.append(attempt)
            proxy.stop()
        for thread in threads:
            thread.join(timeout=10)
        assert not proxy.accepts_tcp()
        if hung:
            break
    assert hung == [], f"shutdown hung on attempt {hung[0]} of 200"
