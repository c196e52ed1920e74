"""Client authentication by the proxy and the proxy's own login to the server, for every kind of
user the sandbox defines; failures and what they reveal."""

import struct

import psycopg
import pytest

from conftest import ServerError, Wire, message, scram_server_first, startup_packet

SERVER_SIDE = {
    "app": "scram-sha-256",         # server stores SCRAM; proxy holds the password
    "app_md5": "md5",               # server asks for MD5
    "app_trust": "trust",           # server asks for nothing
    "app_scram": "scram-sha-256",   # proxy holds only the SCRAM verifier and passes the client's proof on
}


@pytest.mark.parametrize("user", list(SERVER_SIDE))
def test_user_logs_in_with_psycopg(proxy, cluster, user):
    with proxy.connect(user=user) as conn:
        # A read may be served by any server of the cluster; that server has a backend for us.
        who, port, server_pid = conn.execute("select current_user, inet_server_port(), pg_backend_pid()").fetchone()
        assert who == user and port in cluster.server_ports
        row = cluster.backend(server_pid)
        assert row is not None
        assert (row["usename"], row["datname"], row["backend_type"], row["port"]) == (user, "app", "client backend", port)
        # A write needs the primary: the proxy logs in there for this user too.
        conn.execute("create temp table here as select inet_server_port() as port, pg_backend_pid() as pid")
        port, server_pid = conn.execute("select port, pid from here").fetchone()
        assert port == cluster.primary_port
        row = cluster.backend(server_pid)
        assert (row["usename"], row["datname"], row["port"]) == (user, "app", cluster.primary_port)


@pytest.mark.parametrize("user", list(SERVER_SIDE))
def test_user_logs_in_over_the_raw_protocol_with_scram(proxy, user):
    with Wire(proxy.port) as w:
        login = w.login(user=user)
        # SASL (10), SASLContinue (11), SASLFinal (12, whose server signature was verified), Ok (0).
        assert login.auth_requests == [10, 11, 12, 0]
        assert login.parameters["session_authorization"] == user
        assert login.backend_key is not None
        assert w.query("select current_user").rows == [[user]]


@pytest.mark.parametrize("user", ["app", "app_md5", "app_trust", "app_scram", "postgres"])
def test_wrong_password_is_28P01(proxy, user):
    with Wire(proxy.port) as w:
        with pytest.raises(ServerError) as raised:
            w.login(user=user, password="not-the-password")
        assert raised.value.fields == {"S": "FATAL", "V": "FATAL", "C": "28P01",
                                       "M": f'password authentication failed for user "{user}"'}
        assert w.closed_by_peer()


def test_wrong_password_with_psycopg(proxy):
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "app"'):
        proxy.connect(password="wrong")
    # A later correct login is unaffected.
    with proxy.connect() as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_unknown_user_fails_exactly_like_a_wrong_password(proxy):
    def failure(user):
        with Wire(proxy.port) as w:
            with pytest.raises(ServerError) as raised:
                w.login(user=user, password="whatever")
            return raised.value.fields

    known = failure("app")
    unknown = failure("no_such_user")
    assert unknown["C"] == "28P01"
    assert set(unknown) == set(known)
    assert unknown == {**known, "M": known["M"].replace('"app"', '"no_such_user"')}

    # The exchange itself looks the same: a full SCRAM round with the same parameters.
    known_first = scram_server_first(proxy.port, "app")
    unknown_first = scram_server_first(proxy.port, "no_such_user")
    assert set(known_first) == set(unknown_first) == {"r", "s", "i"}
    assert unknown_first["i"] == known_first["i"]
    assert len(unknown_first["s"]) == len(known_first["s"])
    assert len(unknown_first["r"]) == len(known_first["r"])


def test_unknown_user_gets_a_stable_salt(proxy):
    assert scram_server_first(proxy.port, "app")["s"] == scram_server_first(proxy.port, "app")["s"]
    assert scram_server_first(proxy.port, "no_such_user")["s"] == scram_server_first(proxy.port, "no_such_user")["s"]


def test_unknown_user_with_psycopg(proxy):
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "nobody_here"'):
        proxy.connect(user="nobody_here")


def test_channel_binding_require_fails_clearly(proxy):
    with pytest.raises(psycopg.OperationalError, match="channel binding required"):
        proxy.connect(channel_binding="require")
    with pytest.raises(psycopg.OperationalError, match="channel binding required"):
        proxy.connect(channel_binding="require", sslmode="disable")
    # channel_binding=prefer (libpq's default) just proceeds without it.
    with proxy.connect(channel_binding="prefer") as conn:
        assert conn.execute("select 1").fetchone()[0] == 1


def test_client_asking_for_scram_plus_is_refused(proxy):
    """A client that insists on SCRAM-SHA-256-PLUS (channel binding) while the proxy offers only
    SCRAM-SHA-256 gets a clear protocol error, not a hang."""
    with Wire(proxy.port) as w:
        w.send(startup_packet({"user": "app", "database": "app"}))
        type_, body = w.read_message()
        assert type_ == b"R" and b"SCRAM-SHA-256\0" in body and b"PLUS" not in body
        data = b"p=tls-server-end-point,,n=,r=abcdefghijklmnop"
        w.send(message(b"p", b"SCRAM-SHA-256-PLUS\0" + struct.pack("!I", len(data)) + data))
        fields = w.read_error()
        assert fields["C"] == "08P01"
        assert "SCRAM-SHA-256-PLUS" in fields["M"]
        assert w.closed_by_peer()


def user_auth_type(user: str, method: str):
    """A config edit giving one [[users]] entry its own auth_type."""
    def edit(text: str) -> str:
        marker = f'name = "{user}"\n'
        assert marker in text
        return text.replace(marker, marker + f'auth_type = "{method}"\n', 1)
    return edit


def test_proxy_md5_client_authentication(make_proxy):
    # app_scram has no plain password, so it keeps SCRAM; everyone else is asked for MD5.
    proxy = make_proxy(auth_type="md5", edit=user_auth_type("app_scram", "scram-sha-256"))
    for user, expected in [("app", [5, 0]), ("app_md5", [5, 0]), ("app_trust", [5, 0]), ("app_scram", [10, 11, 12, 0])]:
        with Wire(proxy.port) as w:
            assert w.login(user=user).auth_requests == expected, user
            assert w.query("select current_user").rows == [[user]]
        with proxy.connect(user=user) as conn:
            assert conn.execute("select current_user").fetchone()[0] == user
    for user in ["app", "no_such_user"]:
        with Wire(proxy.port) as w:
            with pytest.raises(ServerError) as raised:
                w.login(user=user, password="wrong")
            assert raised.value.fields["C"] == "28P01"
            assert raised.value.fields["M"] == f'password authentication failed for user "{user}"'


def test_proxy_trust_client_authentication(make_proxy):
    proxy = make_proxy(auth_type="trust", edit=user_auth_type("app_scram", "scram-sha-256"))
    for user in ["app", "app_md5", "app_trust"]:
        with Wire(proxy.port) as w:
            assert w.login(user=user, password=None).auth_requests == [0]
            assert w.query("select current_user").rows == [[user]]
    # The verifier-only user still has to prove itself: its proof is what logs in to the server.
    with Wire(proxy.port) as w:
        assert w.login(user="app_scram").auth_requests == [10, 11, 12, 0]
