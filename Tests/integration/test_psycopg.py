"""psycopg 3 through the proxy: automatic prepared statements, pipeline mode, COPY, LISTEN/NOTIFY,
notices, large rows and result sets, ParameterStatus."""

import hashlib
import os
import socket
import struct
import threading

import psycopg
import pytest

from conftest import Wire, query_message, unique, wait_until


@pytest.fixture
def proxy(proxy_in_each_mode):
    """Each test runs through a session-mode and a transaction-mode proxy."""
    return proxy_in_each_mode


def test_automatic_server_side_prepared_statements(proxy):
    with proxy.connect() as conn:
        assert conn.prepare_threshold == 5
        query = "select %s::int * 2 + length(%s::text) as v"
        for i in range(conn.prepare_threshold + 3):
            assert conn.execute(query, (i, "abc")).fetchone()[0] == i * 2 + 3
        # The server itself lists the statement psycopg prepared behind the scenes.
        statements = conn.execute(
            "select name, statement, parameter_types::text[] from pg_prepared_statements where not from_sql").fetchall()
        assert any(s[1] == "select $1::int * 2 + length($2::text) as v" for s in statements), statements
        # Under the proxy's name (servers' statements are shared by the clients that prepare the
        # same text), never psycopg's own.
        assert all(name.startswith("causeway_") for name, _, _ in statements), statements
        # And keeps executing it correctly.
        assert conn.execute(query, (100, "hello")).fetchone()[0] == 205


def test_explicit_prepare_and_deallocate(proxy):
    with proxy.connect() as conn:
        conn.execute("select %s::text || 'x'", ("a",), prepare=True)
        # (In transaction mode the server connection may also hold other clients' statements.)
        texts = [r[0] for r in conn.execute("select statement from pg_prepared_statements").fetchall()]
        assert texts.count("select $1::text || 'x'") == 1, texts
        with conn.transaction():
            conn.execute("deallocate all")
            assert conn.execute("select count(*) from pg_prepared_statements").fetchone()[0] == 0
        # psycopg sees the DEALLOCATE ALL command tag and forgets its statements: this runs unprepared.
        assert conn.execute("select %s::text || 'x'", ("b",)).fetchone()[0] == "bx"


def test_pipeline_mode(proxy, table, superuser):
    with proxy.connect() as conn:
        with conn.pipeline() as pipeline:
            conn.cursor().executemany(f"insert into {table} (id, v) values (%s, %s)",
                                      [(i, i * i) for i in range(1, 301)])
            cursors = [conn.execute(f"select v from {table} where id = %s", (i,)) for i in (7, 100, 300)]
            total = conn.execute(f"select sum(v) from {table}")
            pipeline.sync()
            assert [c.fetchone()[0] for c in cursors] == [49, 10000, 90000]
            assert total.fetchone()[0] == sum(i * i for i in range(1, 301))
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 300


def test_pipeline_error_aborts_the_batch_and_the_connection_recovers(proxy, table, superuser):
    with proxy.connect(autocommit=False) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.pipeline():
                conn.execute(f"insert into {table} (id) values (1)")
                conn.execute(f"insert into {table} (id) values (1)")
                conn.execute(f"insert into {table} (id) values (2)")
        conn.rollback()
        with conn.pipeline():
            conn.execute(f"insert into {table} (id) values (3)")
            cursor = conn.execute(f"select count(*) from {table}")
        assert cursor.fetchone()[0] == 1
        conn.commit()
    assert superuser.execute(f"select array_agg(id order by id) from {table}").fetchone()[0] == [3]


def test_copy_from_and_to_stdin(proxy, table, superuser):
    rows = [(i, i % 97, f"row {i} \t tab \n newline \\ backslash é") for i in range(1, 20001)]
    with proxy.connect() as conn:
        with conn.cursor() as cur:
            # In a transaction; the autocommit form is test_copy_from_stdin_in_autocommit below.
            with conn.transaction():
                with cur.copy(f"copy {table} (id, v, t) from stdin") as copy:
                    for row in rows:
                        copy.write_row(row)
                assert cur.rowcount == len(rows)
            assert superuser.execute(f"select count(*), sum(v) from {table}").fetchone() == (
                len(rows), sum(r[1] for r in rows))
            with cur.copy(f"copy (select id, v, t from {table} order by id) to stdout") as copy:
                back = [(int(a), int(b), c) for a, b, c in copy.rows()]
            assert back == rows
            # Binary COPY too.
            with cur.copy(f"copy (select id, t from {table} where id <= 100 order by id) to stdout (format binary)") as copy:
                copy.set_types(["int4", "text"])
                assert list(copy.rows()) == [(r[0], r[2]) for r in rows[:100]]
        # A COPY that fails half-way leaves the session usable.
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.transaction():
                with conn.cursor().copy(f"copy {table} (id) from stdin") as copy:
                    copy.write_row((20001,))
                    copy.write_row((1,))
        assert conn.execute("select 1").fetchone()[0] == 1
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == len(rows)


def test_copy_from_stdin_in_autocommit(proxy, table, superuser):
    with proxy.connect() as conn:
        with conn.cursor() as cur:
            with cur.copy(f"copy {table} (id, v) from stdin") as copy:
                for i in range(1, 101):
                    copy.write_row((i, i))
            assert cur.rowcount == 100
        assert conn.execute("select 1").fetchone()[0] == 1
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 100


def test_listen_notify_through_the_proxy(proxy, cluster, superuser):
    channel = unique("chan")
    notifier_name = unique("notifier")
    with proxy.connect(application_name=unique("listener")) as listener, \
            proxy.connect(application_name=notifier_name) as notifier:
        listener.execute(f"listen {channel}")
        # From another proxied session...
        notifier.execute("select pg_notify(%s, %s)", (channel, "from the proxy"))
        # ...and from a direct connection to the primary, while the listener is idle.
        superuser.execute("select pg_notify(%s, %s)", (channel, "from the primary"))
        received = list(listener.notifies(timeout=5, stop_after=2))
        assert sorted(n.payload for n in received) == ["from the primary", "from the proxy"]
        assert all(n.channel == channel for n in received)
        # A notification names its sender as the sender's client knows it: the proxied notifier by
        # the pid the proxy gave it, the direct connection by its server pid.
        assert {n.pid for n in received} == {notifier.info.backend_pid, superuser.info.backend_pid}
        # A notification that arrives while the listener is busy with a query (which the proxy may
        # run on another server than the LISTEN) is delivered after that query's result.
        listener_name = listener.info.parameter_status("application_name")
        done = threading.Event()

        def notify_when_busy():
            try:
                wait_until(lambda: any(r["state"] == "active" and "pg_sleep" in r["query"]
                                       for r in cluster.backends_of(listener_name)),
                           timeout=10, message="the listener's query to run")
                superuser.execute("select pg_notify(%s, 'while busy')", (channel,))
            finally:
                done.set()

        thread = threading.Thread(target=notify_when_busy)
        thread.start()
        try:
            assert listener.execute("select 'busy', pg_sleep(0.5)").fetchone()[0] == "busy"
        finally:
            thread.join(timeout=15)
        assert done.is_set()
        assert [n.payload for n in listener.notifies(timeout=5, stop_after=1)] == ["while busy"]
        # The listening session is still fine.
        assert listener.execute("select 1").fetchone()[0] == 1


def test_a_sessions_own_notification_carries_its_own_pid(proxy):
    # psycopg and asyncpg compare a notification's pid with the connection's to recognise their own.
    channel = unique("self")
    with proxy.connect() as conn:
        conn.execute(f"listen {channel}")
        conn.execute(f"notify {channel}, 'hello'")
        received = list(conn.notifies(timeout=5, stop_after=1))
        assert [(n.channel, n.payload) for n in received] == [(channel, "hello")]
        assert received[0].pid == conn.info.backend_pid


def test_notice_response_is_delivered(proxy):
    with proxy.connect() as conn:
        notices = []
        conn.add_notice_handler(lambda diag: notices.append((diag.severity_nonlocalized, diag.sqlstate, diag.message_primary)))
        conn.execute("do $$ begin raise notice 'hello %', 42; raise warning 'careful'; end $$")
        assert notices == [("NOTICE", "00000", "hello 42"), ("WARNING", "01000", "careful")]
        conn.execute("set client_min_messages = warning")
        conn.execute("do $$ begin raise notice 'hidden'; end $$")
        assert len(notices) == 2


def test_a_row_of_tens_of_megabytes_both_ways(proxy):
    size = 30 * 1024 * 1024
    with proxy.connect() as conn:
        value = conn.execute("select repeat('0123456789abcdef', %s)", (size // 16,)).fetchone()[0]
        assert len(value) == size
        assert value == "0123456789abcdef" * (size // 16)

        upload = os.urandom(size // 2).hex()  # 30 MB of text sent by the client
        length, digest = conn.execute("select length(x), md5(x) from (select %s::text as x) s", (upload,)).fetchone()
        assert length == len(upload)
        assert digest == hashlib.md5(upload.encode()).hexdigest()
        assert conn.execute("select 'still here'").fetchone()[0] == "still here"


def test_a_large_result_set_is_streamed(proxy):
    rows = 300_000
    with proxy.connect() as conn:
        count = total = 0
        with conn.cursor() as cur:
            for number, filler in cur.stream("select g, repeat('y', 150) from generate_series(1, %s) g", (rows,)):
                count += 1
                total += number
                assert len(filler) == 150
        assert count == rows
        assert total == rows * (rows + 1) // 2


def proxy_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_client_that_stops_reading_holds_the_server_back_not_the_proxy_memory(proxy, cluster):
    """Backpressure: with a client that reads nothing, the server ends up blocked writing to the
    proxy (wait_event ClientWrite) while the proxy holds only a bounded amount of the result."""
    before = proxy_rss_bytes(proxy.pid)
    wire = Wire(proxy.port, timeout=10)
    try:
        wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        app_name = unique("slowreader")
        wire.login(params={"application_name": app_name})
        # About 400 MB of rows, far more than socket buffers could hold.
        wire.send(query_message("select repeat('z', 1000) from generate_series(1, 400000)"))

        def blocked_backend():
            for row in cluster.backends_of(app_name):
                if row["state"] == "active" and row["wait_event"] == "ClientWrite" and "repeat" in row["query"]:
                    return row
            return None

        pid = wait_until(blocked_backend, timeout=20, message="the server to block on ClientWrite")["pid"]

        def server_blocked():
            return (cluster.backend(pid) or {}).get("wait_event") == "ClientWrite"

        # Let whatever the proxy is going to buffer arrive, then look at its memory.
        wait_until(lambda: all(server_blocked() for _ in range(5)), timeout=10, message="a steady ClientWrite")
        grown = proxy_rss_bytes(proxy.pid) - before
        assert grown < 64 * 1024 * 1024, f"proxy RSS grew by {grown} bytes while the client read nothing"
        # Read a little, to show the stream is intact, then hang up mid-result.
        type_, body = wire.read_message()
        assert type_ == b"T"
        type_, body = wire.read_message()
        assert type_ == b"D" and struct.unpack("!H", body[:2])[0] == 1
    finally:
        wire.close()
    # Hanging up mid-result ends the server's query and backend too.
    wait_until(lambda: cluster.backend(pid) is None, timeout=10,
               message="the server backend of the vanished client to exit")


def test_parameter_status_after_set(proxy, cluster):
    app_name = unique("psycopg_app")
    with proxy.connect(application_name=app_name) as conn:
        info = conn.info
        assert info.parameter_status("application_name") == app_name
        assert info.parameter_status("server_version").startswith("15")
        assert info.parameter_status("in_hot_standby") == "off"
        # The server's own view of the session.
        assert cluster.backend(conn.execute("select pg_backend_pid()").fetchone()[0])["application_name"] == app_name

        conn.execute("set application_name = 'renamed_by_set'")
        assert info.parameter_status("application_name") == "renamed_by_set"
        conn.execute("set timezone = 'Asia/Tokyo'")
        assert info.parameter_status("TimeZone") == "Asia/Tokyo"
        assert str(conn.execute("select now()").fetchone()[0].tzinfo) == "Asia/Tokyo"
        conn.execute("set datestyle = 'German, DMY'")
        assert info.parameter_status("DateStyle") == "German, DMY"
        # A rolled-back SET reports the old value again.
        with conn.transaction(force_rollback=True):
            conn.execute("set local application_name = 'temporary'")
            assert info.parameter_status("application_name") == "temporary"
        assert info.parameter_status("application_name") == "renamed_by_set"
