"""The admin console (database `causeway`), DRAIN under load, and the Prometheus endpoint."""
import os
import re
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from conftest import HOST, ServerError, free_port, message, wait_until


def admin(proxy, command, user="postgres", password="postgres", check=True):
    """Runs one admin command with psql (simple protocol, as operators do); rows as lists."""
    env = dict(os.environ, PGPASSWORD=password, PGCONNECT_TIMEOUT="5")
    result = subprocess.run(
        ["psql", "-X", "-At", "-F", "|", "-h", HOST, "-p", str(proxy.port), "-U", user, "-d", "causeway",
         "-v", "ON_ERROR_STOP=1", "-c", command],
        env=env, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise AssertionError(f"admin command {command!r} failed: {result.stderr}")
    rows = [line.split("|") for line in result.stdout.splitlines() if line]
    return rows, result


def backends(proxy):
    rows, _ = admin(proxy, "SHOW BACKENDS")
    columns = ["name", "address", "zone", "role", "state", "lag_ms", "lag_bytes", "replay_lsn", "catch_up_ms",
               "sessions", "server_conns", "reads", "writes"]
    return {row[0]: dict(zip(columns, row)) for row in rows}


def test_show_backends_reports_every_backend_with_its_measured_role(proxy, cluster):
    table = backends(proxy)
    assert set(table) == {"primary", "replica1", "replica2"}
    assert table["primary"]["role"] == "primary"
    assert table["primary"]["address"] == f"{HOST}:{cluster.primary_port}"
    for name in ("replica1", "replica2"):
        assert table[name]["role"] == "replica"
        assert table[name]["state"].startswith("up")


def test_every_show_command_returns_a_row_set(proxy):
    for command, minimum in [("SHOW CLIENTS", 1), ("SHOW POOLS", 3), ("SHOW STATS", 5), ("SHOW CONFIG", 5),
                             ("SHOW VERSION", 1), ("SHOW HELP", 5), ("SHOW SERVERS", 0)]:
        rows, _ = admin(proxy, command)
        assert len(rows) >= minimum, command
    version, _ = admin(proxy, "SHOW VERSION")
    assert version[0][0].startswith("causeway ")


def test_unknown_admin_command_names_the_commands_that_exist(proxy):
    _, result = admin(proxy, "SHOW NONSENSE", check=False)
    assert result.returncode != 0
    assert "unknown admin command" in result.stderr
    assert "SHOW BACKENDS" in result.stderr and "DRAIN" in result.stderr


def test_admin_console_refuses_users_not_in_admin_users_with_42501(proxy):
    with proxy.wire() as wire:
        with pytest.raises(ServerError) as failure:
            wire.login(user="app", database="causeway")
    assert failure.value.fields["C"] == "42501"
    assert "admin_users" in failure.value.fields.get("H", "")


def test_draining_the_primary_is_refused_with_an_explanation(proxy):
    _, result = admin(proxy, "DRAIN primary", check=False)
    assert result.returncode != 0
    assert "cannot drain primary" in result.stderr


def test_drain_under_load_moves_reads_off_with_zero_client_errors(make_proxy, cluster, table):
    proxy = make_proxy()
    replica1_port = cluster.replica_ports[0]
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = {"total": 0}

    def reader():
        try:
            with proxy.connect(application_name="drain-load") as conn:
                while not stop.is_set():
                    conn.execute("SELECT inet_server_port()").fetchone()
                    reads["total"] += 1
        except BaseException as error:  # noqa: BLE001 - every failure counts
            errors.append(error)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: reads["total"] > 200, timeout=20, message="reads flowing")
        admin(proxy, "DRAIN replica1 10")

        def replica1_released():
            state = backends(proxy)["replica1"]
            return state["state"] == "drained" and state["server_conns"] == "0"
        wait_until(replica1_released, timeout=10, message="replica1 drained")
        # The servers' own view: no connection from the proxy's sessions remains on replica1.
        with cluster.superuser(port=replica1_port) as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'drain-load'").fetchone()[0]
        assert left == 0
        before = reads["total"]
        wait_until(lambda: reads["total"] > before + 200, timeout=20, message="reads continue elsewhere")
        admin(proxy, "UNDRAIN replica1")
        assert backends(proxy)["replica1"]["state"].startswith("up")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=20)
    assert errors == []


def fetch(port, path):
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


SAMPLE = re.compile(r'^([a-z_]+)(\{([a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*)\})? (-?[0-9.e+]+)$')


def parse_metrics(text):
    samples = {}
    declared = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            declared.append(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not Prometheus text: {line!r}"
        family = declared[-1]
        assert match.group(1) in (family, family + "_bucket", family + "_sum", family + "_count"), \
            f"sample {line!r} outside its family"
        samples[(match.group(1), match.group(3) or "")] = float(match.group(5))
    return samples


def test_metrics_endpoint_exposes_backends_routing_and_connections(make_proxy):
    port = free_port()
    proxy = make_proxy(metrics_listen=f"{HOST}:{port}")
    with proxy.connect() as conn:
        for _ in range(20):
            conn.execute("SELECT 1").fetchone()
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table_for_metrics")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("set causeway.min_lsn = 'half:a'")
        status, text = fetch(port, "/metrics")
        assert status == 200
        samples = parse_metrics(text)
        for name in ("primary", "replica1", "replica2"):
            role = "primary" if name == "primary" else "replica"
            assert samples[("causeway_backend_up", f'backend="{name}",role="{role}"')] == 1
        assert samples[("causeway_routing_decisions_total", 'reason="read"')] >= 20
        assert samples[("causeway_client_connections", "")] >= 1
        assert samples[("causeway_errors_total", 'source="server"')] >= 1
        assert samples[("causeway_errors_total", 'source="proxy",sqlstate="22023"')] >= 1
        assert ("causeway_config_generation", "") in samples
    status, _ = fetch(port, "/nothing-here")
    assert status == 404


def test_admin_shutdown_stops_the_proxy_gracefully(make_proxy):
    proxy = make_proxy()
    admin(proxy, "SHUTDOWN")
    assert proxy.wait(timeout=20) == 0


def test_pause_holds_writes_but_not_reads_and_resume_releases_them(make_proxy, table):
    proxy = make_proxy()
    admin(proxy, "PAUSE 30")
    done = threading.Event()
    failures: list[BaseException] = []

    def writer():
        try:
            with proxy.connect() as conn:
                conn.execute(f"INSERT INTO {table} (id, t) VALUES (1, 'held')")
        except BaseException as error:  # noqa: BLE001
            failures.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        with proxy.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,), "reads go on during PAUSE"
        assert not done.wait(1.0), "the write should be held while paused"
        admin(proxy, "RESUME")
        assert done.wait(10), "RESUME should release the write"
    finally:
        admin(proxy, "RESUME")
        thread.join(timeout=20)
    assert failures == []
    with proxy.connect() as conn:
        assert conn.execute(f"/* causeway: primary */ SELECT t FROM {table} WHERE id = 1").fetchone() == ("held",)


def test_pause_holds_a_function_call_too(make_proxy):
    """A FunctionCall message names its function by OID; it may write, so PAUSE holds it like a
    write until RESUME."""
    proxy = make_proxy()
    admin(proxy, "PAUSE 30")
    try:
        with proxy.wire(timeout=10) as w:
            w.login()
            # pg_backend_pid() (OID 2026): no arguments, text result.
            w.send(message(b"F", struct.pack("!ihhh", 2026, 0, 0, 0)))
            w.sock.settimeout(1.0)
            with pytest.raises(socket.timeout):
                w.read_message()
            admin(proxy, "RESUME")
            w.sock.settimeout(10)
            type_, body = w.read_message()
            assert type_ == b"V", (type_, body)
            assert int(body[4:].decode()) > 0
            assert w.read_message() == (b"Z", b"I")
    finally:
        admin(proxy, "RESUME")


def test_a_write_paused_past_its_timeout_gets_a_clear_error(make_proxy, table):
    proxy = make_proxy()
    admin(proxy, "PAUSE 1")
    try:
        with proxy.connect() as conn:
            started = time.monotonic()
            with pytest.raises(psycopg.Error) as failure:
                conn.execute(f"INSERT INTO {table} (id, t) VALUES (2, 'late')")
            assert time.monotonic() - started >= 0.9
            assert failure.value.sqlstate == "57P03"
            assert "paused" in str(failure.value)
            assert conn.execute("SELECT 1").fetchone() == (1,), "the session stays usable"
    finally:
        admin(proxy, "RESUME")


def test_kill_disconnects_one_client_and_rolls_back_its_transaction(make_proxy, table, cluster):
    proxy = make_proxy()
    victim = proxy.connect(autocommit=False, application_name="kill-me")
    bystander = proxy.connect()
    try:
        victim.execute(f"INSERT INTO {table} (id, t) VALUES (7, 'uncommitted')")
        rows, _ = admin(proxy, "SHOW CLIENTS")
        ids = [row[0] for row in rows if row[1] == "app"]
        assert len(ids) == 2
        # The victim is the older of the two app sessions.
        admin(proxy, f"KILL {min(ids, key=int)}")
        with pytest.raises(psycopg.OperationalError):
            wait_until(lambda: victim.execute("SELECT 1") and False, timeout=5, message="victim disconnected")
        assert bystander.execute("SELECT 1").fetchone() == (1,)
        with cluster.superuser(dbname="app") as conn:
            wait_until(lambda: conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'kill-me'")
                       .fetchone()[0] == 0, timeout=5, message="server backend gone")
            assert conn.execute(f"SELECT count(*) FROM {table} WHERE id = 7").fetchone()[0] == 0
    finally:
        victim.close()
        bystander.close()


def test_kill_of_an_unknown_client_is_an_error(proxy):
    _, result = admin(proxy, "KILL 999999", check=False)
    assert result.returncode != 0
    assert "no client with id 999999" in result.stderr


def test_show_clients_reports_each_sessions_state_and_what_pins_it(make_proxy):
    proxy = make_proxy(default_pool_size=4, workers=1)
    pinned = proxy.connect(application_name="pinned")
    in_transaction = proxy.connect(application_name="in-transaction")
    try:
        pinned.execute("create temp table pinned_here(a int)")
        pinned.execute("select pg_advisory_lock(77)")
        pinned_pid = pinned.info.backend_pid
        in_transaction.execute("begin")
        in_transaction.execute("select 1")
        transaction_pid = in_transaction.info.backend_pid

        def clients():
            rows, _ = admin(proxy, "SHOW CLIENTS")
            columns = ["id", "user", "database", "client", "worker", "connected_s", "state", "pinned_by"]
            return {int(row[0]): dict(zip(columns, row)) for row in rows}

        wait_until(lambda: clients()[pinned_pid]["state"] == "idle", timeout=5, message="the pinned session to be idle")
        shown = clients()
        assert shown[pinned_pid]["pinned_by"] == "temporaryTable,sessionAdvisoryLock"
        assert shown[transaction_pid]["state"] == "idle in transaction"
        assert shown[transaction_pid]["pinned_by"] == ""
    finally:
        pinned.close()
        in_transaction.close()
