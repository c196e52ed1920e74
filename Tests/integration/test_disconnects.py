"""Connections that end badly: a client killed mid-transaction, a server backend terminated by the
DBA. The servers are asked directly what is left behind."""

import os
import signal
import subprocess
import sys
import textwrap
import threading

import psycopg
import pytest

from conftest import Wire, is_disconnect, message, query_message, unique, wait_until


def idle_in_transaction_on_primary(cluster, app_name):
    rows = [r for r in cluster.backends_of(app_name)
            if r["port"] == cluster.primary_port and r["state"] == "idle in transaction" and r["backend_xid"]]
    return rows[0] if rows else None


def assert_lock_released_and_rolled_back(superuser, table):
    # Would wait on the row lock if the killed client's transaction were still open.
    superuser.execute("set lock_timeout = '2s'")
    superuser.execute(f"update {table} set v = v + 10 where id = 1")
    assert superuser.execute(f"select v from {table} where id = 1").fetchone()[0] == 10


def psql_child(proxy, app_name):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD="secret", PGAPPNAME=app_name, PGCONNECT_TIMEOUT="5")
    return subprocess.Popen(["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "app", "-d", "app"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            text=True, env=env)


def python_child(proxy, app_name, table):
    script = textwrap.dedent(f"""
        import sys, psycopg
        conn = psycopg.connect({proxy.dsn(application_name=app_name)!r})
        conn.execute("update {table} set v = v + 1 where id = 1")
        sys.stdin.read()  # hold the transaction until killed
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


@pytest.mark.parametrize("client", ["psql", "python"])
def test_client_killed_mid_transaction_leaves_nothing_behind(proxy, cluster, superuser, table, client):
    superuser.execute(f"insert into {table} (id, v) values (1, 0)")
    app_name = unique(f"killed_{client}")
    if client == "psql":
        child = psql_child(proxy, app_name)
        child.stdin.write(f"begin;\nupdate {table} set v = v + 1 where id = 1;\n")
        child.stdin.flush()
    else:
        child = python_child(proxy, app_name, table)
    try:
        backend = wait_until(lambda: idle_in_transaction_on_primary(cluster, app_name), timeout=15,
                             message="the child's open transaction on the primary")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        # Within a couple of seconds nothing of the session is left on any server.
        wait_until(lambda: not cluster.backends_of(app_name), timeout=3,
                   message="the killed client's server backends to go away")
        assert cluster.backend(backend["pid"]) is None
        assert_lock_released_and_rolled_back(superuser, table)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def test_client_vanishing_mid_copy_leaves_nothing_behind(proxy, cluster, superuser, table):
    superuser.execute(f"insert into {table} (id, v) values (1, 0)")
    app_name = unique("vanished_copy")
    wire = Wire(proxy.port)
    try:
        wire.login(params={"application_name": app_name})
        assert wire.query(f"begin; update {table} set v = v + 1 where id = 1").status == "T"
        wire.send(query_message(f"copy {table} (id, v) from stdin"))
        type_, _ = wire.read_message()
        assert type_ == b"G"  # CopyInResponse
        wire.send(b"".join(message(b"d", f"{i}\t{i}\n".encode()) for i in range(2, 1000)))
        wait_until(lambda: any(r["port"] == cluster.primary_port and "copy" in r["query"].lower()
                               for r in cluster.backends_of(app_name)),
                   timeout=10, message="the COPY to run on the primary")
    finally:
        wire.close()  # no CopyDone, no Terminate: the client is simply gone
    wait_until(lambda: not cluster.backends_of(app_name), timeout=3,
               message="the vanished client's server backends to go away")
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 1
    assert_lock_released_and_rolled_back(superuser, table)


def primary_backend_of(cluster, app_name):
    rows = [r for r in cluster.backends_of(app_name) if r["port"] == cluster.primary_port]
    return rows[0] if rows else None


def terminate(superuser, pid):
    assert superuser.execute("select pg_terminate_backend(%s)", (pid,)).fetchone()[0] is True


def test_server_backend_terminated_in_a_transaction(proxy, cluster, superuser, table):
    app_name = unique("terminated")
    with proxy.connect(application_name=app_name) as bystander_conn, \
            proxy.connect(autocommit=False, application_name=app_name + "_victim") as victim:
        bystander_conn.execute(f"insert into {table} (id) values (100)")
        victim.execute(f"insert into {table} (id) values (1)")
        backend = wait_until(lambda: primary_backend_of(cluster, app_name + "_victim"), timeout=5,
                             message="the victim's primary backend")
        terminate(superuser, backend["pid"])
        with pytest.raises(psycopg.OperationalError) as raised:
            victim.execute(f"insert into {table} (id) values (2)")
            victim.commit()
        assert is_disconnect(raised.value), (raised.value.sqlstate, str(raised.value))
        assert victim.closed
        # The other session is unaffected, and the victim's transaction is gone.
        assert bystander_conn.execute(f"select array_agg(id) from {table}").fetchone()[0] == [100]
    # A new session works.
    with proxy.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_server_backend_terminated_during_a_query(proxy, cluster, superuser, table):
    app_name = unique("terminated_query")
    with proxy.connect() as bystander_conn, proxy.connect(autocommit=False, application_name=app_name) as victim:
        victim.execute(f"insert into {table} (id) values (1)")  # the transaction now lives on the primary

        def sleeping():
            rows = [r for r in cluster.backends_of(app_name) if r["state"] == "active" and "pg_sleep" in r["query"]]
            return rows[0] if rows else None

        errors = []

        def run():
            try:
                victim.execute("select pg_sleep(10)")
            except psycopg.Error as e:
                errors.append(e)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            backend = wait_until(sleeping, timeout=10, message="the query to run")
            assert backend["port"] == cluster.primary_port
            terminate(superuser, backend["pid"])
        finally:
            thread.join(timeout=15)
        assert not thread.is_alive()
        assert len(errors) == 1, "the query should fail, not complete"
        error = errors[0]
        assert isinstance(error, psycopg.OperationalError)
        assert error.sqlstate in ("57P01", "08006"), (error.sqlstate, str(error))
        assert bystander_conn.execute("select 'fine'").fetchone()[0] == "fine"
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 0


def test_server_backend_terminated_while_idle_with_session_state(proxy, cluster, superuser):
    """A session whose server connection held state (a temp table) cannot be silently replaced."""
    app_name = unique("terminated_idle")
    with proxy.connect(application_name=app_name) as victim:
        victim.execute("create temp table mine (a int)")
        backend = wait_until(lambda: primary_backend_of(cluster, app_name), timeout=5,
                             message="the victim's primary backend")
        terminate(superuser, backend["pid"])
        wait_until(lambda: cluster.backend(backend["pid"]) is None, timeout=5, message="the backend to exit")
        with pytest.raises(psycopg.OperationalError) as raised:
            victim.execute("insert into mine values (1)")
        assert is_disconnect(raised.value), (raised.value.sqlstate, str(raised.value))
        assert victim.closed


def test_server_backend_terminated_the_client_is_told_at_once(proxy, cluster, superuser, table):
    """Without sending anything, a client whose transaction's backend is terminated receives the
    server's FATAL 57P01 (relayed) and then the connection closes."""
    app_name = unique("terminated_raw")
    with proxy.connect() as bystander_conn, Wire(proxy.port) as victim:
        victim.login(params={"application_name": app_name})
        assert victim.query(f"begin; insert into {table} (id) values (1)").status == "T"
        backend = wait_until(lambda: primary_backend_of(cluster, app_name), timeout=5,
                             message="the victim's primary backend")
        terminate(superuser, backend["pid"])
        fields = victim.read_error()
        assert fields["S"] == "FATAL"
        assert fields["C"] == "57P01", fields
        assert fields["M"] == "terminating connection due to administrator command"
        # The proxy may add its own FATAL (08006, naming the lost server), then it hangs up.
        if not victim.closed_by_peer():
            fields = victim.read_error()
            assert (fields["S"], fields["C"]) == ("FATAL", "08006"), fields
            assert victim.closed_by_peer()
        assert bystander_conn.execute("select 'fine'").fetchone()[0] == "fine"
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 0
