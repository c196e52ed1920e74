"""Server connection pools in session mode: a server connection outlives its client, is reset
(server_reset_query) and handed to the next client that logs in with the same parameters; pool
limits hold for the whole proxy; a client that waits too long for a full pool gets a clear error.
Everything is asserted from the servers' side (pg_stat_activity, pg_backend_pid)."""

import socket
import threading
import time

import psycopg
import pytest

from conftest import (HOST, SYNC, bind_message, execute_message, free_port, parse_message, unique,
                      wait_until)
from test_admin import fetch, parse_metrics

PRIMARY = "/* causeway:primary */ "


def app_backends(cluster, port: int, application_name: str) -> list[dict]:
    return [row for row in cluster.activity("usename = 'app' and backend_type = 'client backend' and application_name = %s",
                                            (application_name,)) if row["port"] == port]


def test_connect_query_disconnect_churn_logs_in_to_the_server_no_more_than_the_pool_size(make_proxy, cluster):
    proxy = make_proxy(default_pool_size=2, workers=2)
    name = unique("churn")
    pids = set()
    for _ in range(200):
        with proxy.connect(application_name=name) as conn:
            pids.add(conn.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0])
    # pg_stat_database.sessions would also count the lag monitor's own logins: count the server
    # processes that served the 200 sessions instead, and check they are the same processes
    # still (each logged in once, before the first session ended).
    assert len(pids) <= 2, f"200 sessions used {len(pids)} server connections"
    started = {row["pid"] for row in app_backends(cluster, cluster.primary_port, name)}
    assert started == pids


def test_no_session_state_reaches_the_next_client(make_proxy, cluster):
    # One worker: both clients are served by the same loop, so the second gets the same connection.
    proxy = make_proxy(default_pool_size=1, workers=1)
    name = unique("leak")
    with proxy.connect(application_name=name) as first:
        pid = first.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0]
        first.execute("set search_path = pg_catalog")
        first.execute("set statement_timeout = '7s'")
        first.execute("create temp table leftover(a int)")
        first.execute("prepare leftover_plan as select 1")
        first.execute(PRIMARY + "select pg_advisory_lock(4242)")
        first.execute("listen leftover_channel")
    with proxy.connect(application_name=name) as second:
        assert second.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0] == pid, "the pooled connection was not reused"
        assert second.execute(PRIMARY + "show search_path").fetchone()[0] == '"$user", public'
        assert second.execute(PRIMARY + "show statement_timeout").fetchone()[0] == "0"
        assert second.execute(PRIMARY + "select count(*) from pg_prepared_statements").fetchone()[0] == 0
        assert second.execute(PRIMARY + "select count(*) from pg_locks where locktype = 'advisory'"
                              " and pid = pg_backend_pid()").fetchone()[0] == 0
        assert second.execute(PRIMARY + "select count(*) from pg_listening_channels()").fetchone()[0] == 0
        assert second.execute(PRIMARY + "select to_regclass('pg_temp.leftover')").fetchone()[0] is None


def test_a_connection_left_in_a_transaction_is_closed_not_pooled(make_proxy, cluster):
    proxy = make_proxy(default_pool_size=2)
    name = unique("abandoned")
    conn = proxy.connect(application_name=name)
    conn.execute("begin")
    pid = conn.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0]
    conn.close()
    wait_until(lambda: cluster.backend(pid) is None, timeout=5, message="the abandoned transaction's connection to close")
    with proxy.connect(application_name=name) as again:
        assert again.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0] != pid


def test_clients_with_different_startup_parameters_get_different_connections(make_proxy, cluster):
    proxy = make_proxy(default_pool_size=4)
    first, second = unique("params-a"), unique("params-b")
    with proxy.connect(application_name=first) as conn:
        pid = conn.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0]
    with proxy.connect(application_name=second) as conn:
        assert conn.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0] != pid
        assert conn.execute(PRIMARY + "show application_name").fetchone()[0] == second


def test_the_pool_limit_holds_and_a_client_waiting_too_long_gets_53300(make_proxy, cluster):
    proxy = make_proxy(default_pool_size=2, query_wait_timeout=1)
    name = unique("full")
    holders = [proxy.connect(application_name=name) for _ in range(2)]
    try:
        for conn in holders:
            conn.execute("begin")
            conn.execute(PRIMARY + "select 1")
        assert len(app_backends(cluster, cluster.primary_port, name)) == 2
        with proxy.connect(application_name=name) as third:
            started = time.monotonic()
            with pytest.raises(psycopg.errors.TooManyConnections) as caught:
                third.execute(PRIMARY + "select 1")
            assert time.monotonic() - started >= 0.9
            assert "query_wait_timeout" in str(caught.value)
            assert len(app_backends(cluster, cluster.primary_port, name)) == 2
            # The session goes on: once a connection is free, the next statement runs.
            holders[0].execute("commit")
            holders[0].close()
            assert third.execute(PRIMARY + "select 1").fetchone()[0] == 1
    finally:
        for conn in holders:
            conn.close()


def test_a_waiting_client_gets_the_connection_another_client_releases(make_proxy, cluster):
    proxy = make_proxy(default_pool_size=1, query_wait_timeout=30, workers=1)
    name = unique("handoff")
    holder = proxy.connect(application_name=name)
    holder.execute("begin")
    holder_pid = holder.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0]
    result = {}

    def waiter():
        with proxy.connect(application_name=name) as conn:
            result["pid"] = conn.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0]

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive(), "the second client should wait for the pool"
    holder.execute("commit")
    holder.close()
    thread.join(timeout=10)
    assert result.get("pid") == holder_pid


def test_a_client_waiting_on_one_worker_is_served_when_another_worker_releases(make_proxy, cluster):
    # Idle connections belong to one worker's loop; a pool that is full of another worker's idle
    # connections closes one so the waiting worker can open its own. Whichever worker each client
    # lands on, every client of a one-connection pool gets served.
    proxy = make_proxy(default_pool_size=1, query_wait_timeout=10, workers=2)
    name = unique("cross-worker")
    for _ in range(12):
        with proxy.connect(application_name=name) as conn:
            assert conn.execute(PRIMARY + "select 1").fetchone()[0] == 1
    assert len(app_backends(cluster, cluster.primary_port, name)) <= 1


def test_show_pools_lists_each_pool_with_pgbouncers_columns(make_proxy, cluster):
    proxy = make_proxy(default_pool_size=3)
    name = unique("shown")
    with proxy.connect(application_name=name) as conn:
        conn.execute(PRIMARY + "select 1")
    with psycopg.connect(proxy.dsn(user="postgres", password="postgres", dbname="causeway"), autocommit=True) as admin:
        cursor = admin.execute("SHOW POOLS")
        columns = [c.name for c in cursor.description]
        rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
    assert columns == ["backend", "role", "database", "user", "cl_active", "cl_waiting", "sv_active", "sv_idle",
                       "sv_used", "sv_login", "maxwait", "pool_mode"]
    primary = [row for row in rows if row["role"] == "primary" and row["database"] == "app" and row["user"] == "app"]
    assert primary, rows
    assert int(primary[0]["sv_idle"]) + int(primary[0]["sv_used"]) >= 1


def test_server_idle_timeout_closes_unused_pooled_connections(make_proxy, cluster):
    proxy = make_proxy(default_pool_size=2, server_idle_timeout=1)
    name = unique("idle")
    with proxy.connect(application_name=name) as conn:
        pid = conn.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0]
    assert cluster.backend(pid) is not None, "the connection should stay pooled for a while"
    wait_until(lambda: cluster.backend(pid) is None, timeout=10, message="the idle pooled connection to close")


def admin_rows(proxy, command):
    with psycopg.connect(proxy.dsn(user="postgres", password="postgres", dbname="causeway"), autocommit=True) as admin:
        cursor = admin.execute(command)
        return cursor.fetchall() if cursor.description else []


def test_drain_closes_a_replicas_idle_pooled_connections(make_proxy, cluster):
    proxy = make_proxy(default_pool_size=4)
    name = unique("drained")
    with proxy.connect(application_name=name) as conn:
        port = conn.execute("select inet_server_port()").fetchone()[0]
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
    assert port in cluster.replica_ports
    replica = "replica1" if port == cluster.replica_ports[0] else "replica2"
    wait_until(lambda: (cluster.backend(pid) or {}).get("query") == "DISCARD ALL", timeout=5,
               message="the replica connection to be reset into its pool")
    admin_rows(proxy, f"DRAIN {replica}")
    try:
        wait_until(lambda: cluster.backend(pid) is None, timeout=5, message="the drained replica's pooled connection to close")
    finally:
        admin_rows(proxy, f"UNDRAIN {replica}")


def test_reload_changes_a_pools_size_without_dropping_its_connections(make_proxy, cluster):
    proxy = make_proxy(default_pool_size=1, query_wait_timeout=1)
    name = unique("resized")
    holder = proxy.connect(application_name=name)
    try:
        holder.execute("begin")
        holder_pid = holder.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0]
        with proxy.connect(application_name=name) as second:
            with pytest.raises(psycopg.errors.TooManyConnections):
                second.execute(PRIMARY + "select 1")
        proxy.config_path.write_text(proxy.config_path.read_text().replace("default_pool_size = 1", "default_pool_size = 2"))
        changes = admin_rows(proxy, "RELOAD")
        assert any("default_pool_size" in " ".join(str(v) for v in row) for row in changes), changes
        with proxy.connect(application_name=name) as second:
            assert second.execute(PRIMARY + "select 1").fetchone()[0] == 1
        # The connection in use was not touched.
        assert holder.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0] == holder_pid
        holder.execute("commit")
    finally:
        holder.close()


def test_a_server_that_accepts_but_never_answers_is_given_up_after_server_connect_timeout(make_proxy, cluster):
    """A primary that takes the TCP connection and then says nothing (hung, or a half-open network
    path): the login gives up on it after server_connect_timeout and the client gets in through a
    replica, for reads."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    try:
        proxy = make_proxy(server_connect_timeout=1,
                           edit=lambda text: text.replace(f"port = {cluster.primary_port}\n", f"port = {port}\n"))
        started = time.monotonic()
        with proxy.connect(application_name=unique("silent"), connect_timeout=20) as conn:
            assert time.monotonic() - started >= 0.9
            assert conn.execute("select inet_server_port()").fetchone()[0] in cluster.replica_ports
        assert "within server_connect_timeout" in proxy.log()
    finally:
        silent.close()


def test_metrics_show_each_pools_connections_waits_and_timeouts(make_proxy, cluster):
    port = free_port()
    proxy = make_proxy(default_pool_size=1, query_wait_timeout=1, workers=1, metrics_listen=f"{HOST}:{port}")
    name = unique("metered")
    holder = proxy.connect(application_name=name)
    try:
        holder.execute("begin")
        holder.execute(PRIMARY + "select 1")
        with proxy.connect(application_name=name) as second:
            with pytest.raises(psycopg.errors.TooManyConnections):
                second.execute(PRIMARY + "select 1")
        status, text = fetch(port, "/metrics")
        assert status == 200
        samples = parse_metrics(text)
        labels = 'backend="primary",database="app",user="app"'
        assert samples[("causeway_pool_server_connections", labels + ',state="active"')] == 1
        assert samples[("causeway_pool_wait_timeouts_total", labels)] == 1
        assert samples[("causeway_pool_wait_seconds_count", labels)] == 1
        assert samples[("causeway_pool_wait_seconds_bucket", labels + ',le="0.5"')] == 0
        assert samples[("causeway_pool_wait_seconds_bucket", labels + ',le="5.0"')] == 1
        assert samples[("causeway_pool_wait_seconds_sum", labels)] >= 0.9
    finally:
        holder.close()


def test_a_pooled_replica_connection_keeps_a_mid_batch_injection_apart_from_the_clients_responses(make_proxy, cluster):
    """A replica connection that served another client's extended-protocol statements is pooled and
    handed to a new session, which then needs a statement prepared there in the middle of a batch:
    the new client still gets each of its own responses (its counts start from zero)."""
    proxy = make_proxy(workers=1)
    with proxy.wire() as w:
        w.login()
        # Three Parse messages on a replica connection, which then goes back to its pool.
        w.send(parse_message("a", "select 1") + parse_message("b", "select 2") + parse_message("c", "select 3") + SYNC)
        assert [w.read_message()[0] for _ in range(4)] == [b"1", b"1", b"1", b"Z"]
    with proxy.wire() as w:
        w.login()
        w.send(parse_message("on_primary", "/* causeway: primary */ select 2") + SYNC)
        assert w.read_message()[0] == b"1" and w.read_message()[0] == b"Z"
        w.send(parse_message("", "select inet_server_port()") + bind_message("", "") + execute_message(""))
        time.sleep(0.3)
        w.send(bind_message("p2", "on_primary") + execute_message("p2") + SYNC)
        types = []
        while True:
            type_, _ = w.read_message()
            types.append(type_)
            if type_ in (b"Z", b"E"):
                break
        assert types == [b"1", b"2", b"D", b"C", b"2", b"D", b"C", b"Z"], types


def test_min_pool_size_keeps_a_used_pool_warm_and_refills_it(make_proxy, cluster):
    proxy = make_proxy(default_pool_size=5, min_pool_size=3, workers=1)
    name = unique("warm")
    with proxy.connect(application_name=name) as conn:
        conn.execute(PRIMARY + "select 1")
    # The pool this client used grows to min_pool_size on its own, and stays there idle.
    wait_until(lambda: len(app_backends(cluster, cluster.primary_port, name)) == 3, timeout=10,
               message="the pool to be filled to min_pool_size")
    time.sleep(0.5)
    assert len(app_backends(cluster, cluster.primary_port, name)) == 3
    # Connections the server ends are replaced.
    with cluster.superuser() as admin:
        for row in app_backends(cluster, cluster.primary_port, name)[:2]:
            admin.execute("select pg_terminate_backend(%s)", (row["pid"],))
    wait_until(lambda: len(app_backends(cluster, cluster.primary_port, name)) == 3, timeout=10,
               message="the pool to be refilled")
    # A client of that pool is served by one of them, without a new login.
    pids = {row["pid"] for row in app_backends(cluster, cluster.primary_port, name)}
    with proxy.connect(application_name=name) as conn:
        assert conn.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0] in pids
