"""Malformed and unusual input from clients: bad startup packets, encryption requests, protocol
negotiation, garbage after login, unknown databases, replication connections, too many clients.
Every refusal must be an ErrorResponse with the right SQLSTATE, and other sessions must not notice."""

import os
import struct

import psycopg
import pytest

from conftest import (GSSENC_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE, ServerError, Wire, message,
                      query_message, startup_packet, unique, wait_until)


@pytest.fixture
def bystander(proxy):
    """A psycopg session opened before the bad input; it must be unaffected afterwards."""
    with proxy.connect() as conn:
        pid = conn.execute("select pg_backend_pid()").fetchone()[0]
        yield conn
        assert conn.execute("select pg_backend_pid(), 'unaffected'").fetchone() == (pid, "unaffected")


MALFORMED_STARTUP = {
    "length 3": struct.pack("!I", 3),
    "length 0": struct.pack("!I", 0),
    "negative length": struct.pack("!i", -8) + b"\0" * 8,
    "length 100000": struct.pack("!II", 100_000, PROTOCOL_3_0) + b"user\0app\0" * 100,
    "http request": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "unterminated parameters": struct.pack("!II", 16, PROTOCOL_3_0) + b"user\0app",
    "parameter without value": struct.pack("!II", 14, PROTOCOL_3_0) + b"user\0\0",
    "ssl request with a body": struct.pack("!III", 12, SSL_REQUEST_CODE, 0),
    "random bytes": bytes.fromhex("0000001000030000") + os.urandom(8).replace(b"\0", b"\1"),
}


@pytest.mark.parametrize("payload", list(MALFORMED_STARTUP.values()), ids=list(MALFORMED_STARTUP))
def test_malformed_startup_packet_is_08P01_then_closed(proxy, bystander, payload):
    with Wire(proxy.port) as w:
        w.send(payload)
        fields = w.read_error()
        assert fields["S"] == "FATAL"
        assert fields["C"] == "08P01", fields
        assert w.closed_by_peer()
    # The proxy still accepts new clients.
    with proxy.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_unsupported_protocol_version_is_refused_like_postgresql(proxy, bystander):
    for version in [(2 << 16), (4 << 16), 0x12345678]:
        with Wire(proxy.port) as w:
            w.send(startup_packet({"user": "app", "database": "app"}, version=version))
            fields = w.read_error()
            assert fields["C"] == "0A000"
            assert "unsupported frontend protocol" in fields["M"]
            assert w.closed_by_peer()


def test_clients_that_hang_up_early_do_no_harm(proxy, bystander):
    # Nothing at all, half a length word, half a startup packet, a startup packet then silence.
    for payload in [b"", b"\0\0", startup_packet({"user": "app", "database": "app"})[:11],
                    startup_packet({"user": "app", "database": "app"})]:
        with Wire(proxy.port) as w:
            if payload:
                w.send(payload)
    with proxy.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_ssl_request_is_answered_N_and_login_proceeds(proxy, bystander):
    with Wire(proxy.port) as w:
        w.send(struct.pack("!II", 8, SSL_REQUEST_CODE))
        assert w.read_exact(1) == b"N"
        w.login()
        assert w.query("select 'plain text'").rows == [["plain text"]]


def test_sslmode_prefer_works_and_sslmode_require_fails_clearly(proxy):
    with proxy.connect(sslmode="prefer") as conn:
        assert conn.execute("select 1").fetchone()[0] == 1
        assert conn.pgconn.ssl_in_use is False
    with pytest.raises(psycopg.OperationalError, match="server does not support SSL"):
        proxy.connect(sslmode="require")


def test_bytes_after_an_ssl_request_are_a_protocol_violation(proxy, bystander):
    # Sent in one write: anything pipelined behind SSLRequest would be read as if it had been
    # encrypted (CVE-2021-23222), so it must be refused.
    with Wire(proxy.port) as w:
        w.send(struct.pack("!II", 8, SSL_REQUEST_CODE) + startup_packet({"user": "app", "database": "app"}))
        fields = w.read_error()
        assert fields["C"] == "08P01"
        assert w.closed_by_peer()


def test_gssenc_request_is_answered_N_and_login_proceeds(proxy, bystander):
    with Wire(proxy.port) as w:
        w.send(struct.pack("!II", 8, GSSENC_REQUEST_CODE))
        assert w.read_exact(1) == b"N"
        # libpq's gssencmode=prefer then sslmode=prefer sequence: GSSENC, N, SSL, N, startup.
        w.send(struct.pack("!II", 8, SSL_REQUEST_CODE))
        assert w.read_exact(1) == b"N"
        w.login()
        assert w.query("select 1").rows == [["1"]]


@pytest.mark.parametrize("version,options,expected", [
    # The newest version is a whole version code (3.0 = 196608), as PostgreSQL 15 sends it.
    ((3 << 16) | 2, {}, (PROTOCOL_3_0, [])),
    (PROTOCOL_3_0, {"_pq_.unknown_extension": "on"}, (PROTOCOL_3_0, ["_pq_.unknown_extension"])),
    ((3 << 16) | 2, {"_pq_.a": "1", "_pq_.b": "2"}, (PROTOCOL_3_0, ["_pq_.a", "_pq_.b"])),
    ((3 << 16) | 9999, {}, (PROTOCOL_3_0, [])),
], ids=["protocol 3.2", "_pq_ option", "3.2 with two _pq_ options", "protocol 3.9999"])
def test_newer_protocol_gets_negotiate_protocol_version_and_still_logs_in(proxy, cluster, version, options, expected):
    app_name = unique("negotiate")
    with Wire(proxy.port) as w:
        login = w.login(version=version, params={**options, "application_name": app_name})
        assert login.negotiate == expected
        assert login.status == "I"
        # The session is an ordinary 3.0 session: a 4-byte cancel key and working queries.
        assert len(login.backend_key[1]) == 4
        pid = int(w.query("select pg_backend_pid()").rows[0][0])
        # The server got the ordinary parameters (a _pq_ one would have made it fail the login).
        assert cluster.backend(pid)["application_name"] == app_name


def test_protocol_3_0_without_options_gets_no_negotiation(proxy):
    with Wire(proxy.port) as w:
        assert w.login().negotiate is None


def assert_server_backend_gone(cluster, pid):
    wait_until(lambda: cluster.backend(pid) is None, timeout=5, message=f"server backend {pid} to exit")


def assert_server_backend_released(cluster, pid):
    """The session's server connection is not left busy: it closed, or it went back to its pool,
    where it was reset (DISCARD ALL) and sits idle."""
    def released():
        row = cluster.backend(pid)
        return row is None or (row["state"] == "idle" and row["query"] == "DISCARD ALL")
    wait_until(released, timeout=5, message=f"server backend {pid} to close or be reset into its pool")


GARBAGE_AFTER_LOGIN = {
    "length 2": b"Q" + struct.pack("!I", 2),
    "negative length": b"Q" + struct.pack("!i", -1),
    "length 2 GiB": b"Q" + struct.pack("!I", 0x7FFFFFFF) + b"select 1",
    "unknown message type": message(b"z", b"junk"),
    "NUL byte type": message(b"\0"),
    # Damaged extended-protocol messages are refused, never read as the unnamed statement.
    "Bind without its statement name": message(b"B", b"portal\0"),
    "Bind whose value runs past the end": message(b"B", b"\0\0" + struct.pack("!hhi", 0, 1, 9) + b"x"),
    "Describe of an unknown kind": message(b"D", b"Xname\0"),
    "Close without a name": message(b"C", b"S"),
    "Execute without its row limit": message(b"E", b"\0"),
}


@pytest.mark.parametrize("payload", list(GARBAGE_AFTER_LOGIN.values()), ids=list(GARBAGE_AFTER_LOGIN))
def test_garbage_after_login_is_08P01_and_nothing_leaks(proxy, cluster, bystander, payload):
    with Wire(proxy.port) as w:
        w.login()
        pid = int(w.query("select pg_backend_pid()").rows[0][0])
        w.send(payload)
        fields = w.read_error()
        assert fields["C"] == "08P01", fields
        assert fields["S"] == "FATAL"
        assert w.closed_by_peer()
    assert_server_backend_released(cluster, pid)


def test_garbage_during_authentication_is_08P01(proxy, bystander):
    with Wire(proxy.port) as w:
        w.send(startup_packet({"user": "app", "database": "app"}))
        assert w.read_message()[0] == b"R"
        w.send(query_message("select 1"))
        fields = w.read_error()
        assert fields["C"] == "08P01"
        assert w.closed_by_peer()
    with Wire(proxy.port) as w:
        w.send(startup_packet({"user": "app", "database": "app"}))
        assert w.read_message()[0] == b"R"
        w.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", 1000) + b"short"))
        fields = w.read_error()
        assert fields["C"] == "08P01"
        assert w.closed_by_peer()


def test_oversized_message_during_authentication_is_refused_at_once(proxy, bystander):
    with Wire(proxy.port, timeout=3) as w:
        w.send(startup_packet({"user": "app", "database": "app"}))
        assert w.read_message()[0] == b"R"
        w.send(b"p" + struct.pack("!I", 512 * 1024 * 1024) + b"x" * 4096)
        fields = w.read_error()
        assert fields["C"] in ("08P01", "28P01")
        assert w.closed_by_peer()


def test_unknown_database_is_3D000(proxy, bystander):
    with Wire(proxy.port) as w:
        with pytest.raises(ServerError) as raised:
            w.login(database="no_such_database")
        assert raised.value.code == "3D000"
        assert raised.value.fields["M"] == 'database "no_such_database" does not exist'
        assert w.closed_by_peer()
    with pytest.raises(psycopg.OperationalError, match='database "no_such_database" does not exist'):
        proxy.connect(dbname="no_such_database")


@pytest.mark.parametrize("value", ["true", "database", "on", "1"])
def test_replication_connections_are_refused_clearly(proxy, bystander, value):
    with Wire(proxy.port) as w:
        with pytest.raises(ServerError) as raised:
            w.login(params={"replication": value})
        assert raised.value.code == "0A000"
        assert "replication connections are not supported" in raised.value.fields["M"]
        assert w.closed_by_peer()
    with pytest.raises(psycopg.OperationalError, match="replication connections are not supported"):
        proxy.connect(replication=value)


def test_replication_false_is_an_ordinary_connection(proxy):
    with proxy.connect(replication="false") as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_too_many_clients_is_53300(make_proxy):
    proxy = make_proxy(max_client_conn=2)
    # Failed logins must not use up slots.
    for _ in range(4):
        with pytest.raises(psycopg.OperationalError):
            proxy.connect(password="wrong")
    first = proxy.connect()
    second = proxy.connect()
    try:
        with Wire(proxy.port) as w:
            with pytest.raises(ServerError) as raised:
                w.login()
            assert raised.value.code == "53300"
            assert "max_client_conn = 2" in raised.value.fields["M"]
            assert w.closed_by_peer()
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            proxy.connect()
        # The two admitted sessions work.
        assert first.execute("select 1").fetchone()[0] == 1
        assert second.execute("select 2").fetchone()[0] == 2
    finally:
        first.close()
    # A slot frees up when a client leaves.
    third = wait_until(lambda: _try_connect(proxy), timeout=5, message="a free client slot")
    try:
        assert third.execute("select 3").fetchone()[0] == 3
    finally:
        third.close()
        second.close()


def _try_connect(proxy):
    try:
        return proxy.connect()
    except psycopg.OperationalError:
        return None
