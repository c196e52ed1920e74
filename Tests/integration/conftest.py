"""End-to-end fixtures: a real sandbox cluster, the real proxy process and real clients.

Session scope: one `causeway sandbox up --replicas 2` cluster and one proxy in front of it.
Function scope: extra proxies with their own configuration (`make_proxy`), for tests that change
settings or stop the proxy.

The proxy's stderr goes to a file; when a test fails, the part written during that test is attached
to the report. Helpers for talking the wire protocol by hand (`Wire`) live here too, for the
malformed-input and exact-SQLSTATE tests that libpq cannot express.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
CAUSEWAY_BIN = os.environ.get("CAUSEWAY_BIN", str(REPO / ".build" / "debug" / "causeway"))
HOST = "127.0.0.1"
PASSWORD = "secret"


# --------------------------------------------------------------------------------------------
# Small utilities


def wait_until(predicate, timeout: float, interval: float = 0.05, message: str = "condition"):
    """Polls `predicate` until it returns a truthy value (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def run_causeway(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CAUSEWAY_BIN, *args], capture_output=True, text=True, timeout=timeout)


def parse_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        parts = shlex.split(raw)
        values[key] = parts[0] if len(parts) == 1 else " ".join(parts)
    return values


# --------------------------------------------------------------------------------------------
# The cluster


@dataclass
class Cluster:
    dir: Path
    env: dict[str, str]
    _monitors: dict[int, psycopg.Connection] = field(default_factory=dict)

    @property
    def primary_port(self) -> int:
        return int(self.env["PRIMARY_PORT"])

    @property
    def replica_ports(self) -> list[int]:
        return [int(p) for p in self.env.get("REPLICA_PORTS", "").split()]

    @property
    def proxy_port(self) -> int:
        return int(self.env["PROXY_PORT"])

    @property
    def config_path(self) -> Path:
        return Path(self.env.get("CONFIG", self.dir / "causeway.toml"))

    def server_dsn(self, port: int | None = None, user="postgres", password="postgres", dbname="postgres") -> str:
        """A direct connection string to one server (the primary by default), bypassing the proxy."""
        return (f"host={HOST} port={port or self.primary_port} user={user} password={password} "
                f"dbname={dbname} connect_timeout=5")

    @property
    def server_ports(self) -> list[int]:
        return [self.primary_port, *self.replica_ports]

    def superuser(self, dbname="postgres", port: int | None = None) -> psycopg.Connection:
        """A direct autocommit connection to a server (the primary by default) as postgres."""
        return psycopg.connect(self.server_dsn(port=port, dbname=dbname), autocommit=True)

    def monitor(self, port: int) -> psycopg.Connection:
        """A long-lived superuser connection to one server, for looking at pg_stat_activity."""
        conn = self._monitors.get(port)
        if conn is None or conn.closed:
            conn = self._monitors[port] = self.superuser(port=port)
        return conn

    def activity(self, where: str = "true", params: tuple = ()) -> list[dict]:
        """pg_stat_activity rows matching `where`, from every server of the cluster (the proxy may
        route a session's statements to the primary or to replicas). Each row has a `port`."""
        rows = []
        for port in self.server_ports:
            cursor = self.monitor(port).execute(
                "select pid, usename, datname, application_name, state, query, wait_event, backend_type,"
                f" backend_xid from pg_stat_activity where {where}", params)
            names = [c.name for c in cursor.description]
            rows += [dict(zip(names, row), port=port) for row in cursor.fetchall()]
        return rows

    def backend(self, pid: int) -> dict | None:
        """The server backend with this pid, on whichever server runs it (None once it is gone)."""
        rows = self.activity("pid = %s", (pid,))
        return rows[0] if rows else None

    def backends_of(self, application_name: str) -> list[dict]:
        return self.activity("application_name = %s and backend_type = 'client backend'", (application_name,))

    def wait_for_replicas(self, timeout: float = 10):
        """Waits until every replica has replayed everything the primary has written so far, so a
        read the proxy sends to a replica sees objects the test just created on the primary."""
        lsn = self.monitor(self.primary_port).execute("select pg_current_wal_lsn()::text").fetchone()[0]
        for port in self.replica_ports:
            wait_until(lambda: self.monitor(port).execute(
                "select coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)", (lsn,)).fetchone()[0],
                timeout=timeout, message=f"replica on port {port} to replay {lsn}")

    def close_monitors(self):
        for conn in self._monitors.values():
            conn.close()
        self._monitors.clear()

    def config_text(self, proxy_overrides: dict | None = None, listen_port: int | None = None) -> str:
        """The sandbox's causeway.toml with a rewritten [proxy] table."""
        text = self.config_path.read_text()
        lines = text.splitlines()
        out: list[str] = []
        in_proxy = False
        settings = {"listen": f'"{HOST}:{listen_port}"' if listen_port else None, "metrics_listen": '""'}
        for key, value in (proxy_overrides or {}).items():
            settings[key] = toml_value(value)
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("["):
                if in_proxy:
                    in_proxy = False
                if stripped == "[proxy]":
                    in_proxy = True
                    out.append(line)
                    for key, value in settings.items():
                        if value is not None:
                            out.append(f"{key} = {value}")
                    continue
            if in_proxy and "=" in stripped and not stripped.startswith("#"):
                key = stripped.split("=", 1)[0].strip()
                if key in settings and settings[key] is not None:
                    continue  # replaced above
            out.append(line)
        return "\n".join(out) + "\n"


def is_disconnect(error: Exception, codes=("57P01", "08006")) -> bool:
    """True for a psycopg error saying the session was ended with one of `codes`. When the client
    writes its next query after the proxy has already closed the socket, the TCP reset can cost libpq
    the FATAL ErrorResponse, leaving only "server closed the connection unexpectedly"; that is
    accepted too (tests with raw sockets check the exact ErrorResponse without this race)."""
    if not isinstance(error, psycopg.OperationalError):
        return False
    if error.sqlstate in codes:
        return True
    return error.sqlstate is None and "server closed the connection unexpectedly" in str(error)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture(scope="session")
def workdir():
    path = Path(tempfile.mkdtemp(prefix="causeway-it-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(workdir) -> Cluster:
    if not os.access(CAUSEWAY_BIN, os.X_OK):
        pytest.exit(f"{CAUSEWAY_BIN} is missing: run `swift build` first (or set CAUSEWAY_BIN)", returncode=1)
    sandbox_dir = workdir / "sandbox"
    up = run_causeway("sandbox", "up", "--dir", str(sandbox_dir), "--replicas", "2", timeout=180)
    try:
        if up.returncode != 0:
            pytest.exit(f"causeway sandbox up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}", returncode=1)
        env = parse_env_file(sandbox_dir / "sandbox.env")
        cluster = Cluster(dir=sandbox_dir, env=env)
        assert len(cluster.replica_ports) == 2, env
        try:
            yield cluster
        finally:
            cluster.close_monitors()
    finally:
        down = run_causeway("sandbox", "down", "--dir", str(sandbox_dir), timeout=120)
        if down.returncode != 0:
            print(f"causeway sandbox down failed: {down.stdout}\n{down.stderr}")


# --------------------------------------------------------------------------------------------
# Proxy processes


class ProxyProcess:
    """One `causeway --config FILE` process; its stdout and stderr go to `log_path`."""

    def __init__(self, config_path: Path, port: int, log_path: Path, label: str, args=()):
        self.config_path = config_path
        self.port = port
        self.log_path = log_path
        self.label = label
        self.args = list(args)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> "ProxyProcess":
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                [CAUSEWAY_BIN, "--config", str(self.config_path), *self.args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"proxy {self.label} exited with {self.process.returncode}:\n{self.log()}")
            if "event=listening" in self.log() and self.accepts_tcp():
                return self
            if time.monotonic() > deadline:
                raise AssertionError(f"proxy {self.label} did not start listening within {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def accepts_tcp(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1):
                return True
        except OSError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def signal(self, sig: int):
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self):
        """Immediate stop (SIGINT), then SIGKILL if it lingers. Always reaps the process."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def dsn(self, user="app", password=PASSWORD, dbname="app", **extra) -> str:
        parts = [f"host={HOST}", f"port={self.port}", f"user={user}", f"dbname={dbname}", "connect_timeout=5"]
        if password is not None:
            parts.append(f"password={password}")
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def connect(self, user="app", password=PASSWORD, dbname="app", autocommit=True, **extra) -> psycopg.Connection:
        return psycopg.connect(self.dsn(user, password, dbname, **extra), autocommit=autocommit)

    def wire(self, timeout: float = 5) -> "Wire":
        return Wire(self.port, timeout=timeout)


def _attach_log(request, proxy: ProxyProcess):
    logs = getattr(request.node, "_causeway_logs", None)
    if logs is None:
        logs = request.node._causeway_logs = []
    logs.append((proxy, proxy.log_size()))


@pytest.fixture(scope="session")
def _session_proxy(cluster, workdir):
    proxy = ProxyProcess(cluster.config_path, cluster.proxy_port, workdir / "proxy-session.log", "session")
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def proxy(_session_proxy, request) -> ProxyProcess:
    """The shared proxy in front of the sandbox. Fails the test if the proxy died during it (and
    starts a new one for the next test, so one crash does not fail everything after it)."""
    if not _session_proxy.alive():
        _session_proxy.start()
    _attach_log(request, _session_proxy)
    yield _session_proxy
    assert _session_proxy.alive(), f"the proxy exited during the test with {_session_proxy.process.returncode}"


@pytest.fixture(scope="session")
def _transaction_proxy(cluster, workdir):
    """The sandbox's proxy configuration in transaction mode (pool size 4), on a port of its own."""
    port = free_port()
    config = workdir / "proxy-transaction.toml"
    config.write_text(cluster.config_text({"pool_mode": "transaction", "default_pool_size": 4}, listen_port=port))
    proxy = ProxyProcess(config, port, workdir / "proxy-transaction.log", "transaction")
    try:
        proxy.start()
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(params=["session", "transaction"])
def proxy_in_each_mode(request, _session_proxy, _transaction_proxy) -> ProxyProcess:
    """The shared proxy, then the shared transaction-mode proxy: a module whose tests must hold in
    both pool modes defines `proxy` as this."""
    chosen = _session_proxy if request.param == "session" else _transaction_proxy
    if not chosen.alive():
        chosen.start()
    _attach_log(request, chosen)
    yield chosen
    assert chosen.alive(), f"the proxy exited during the test with {chosen.process.returncode}"


@pytest.fixture
def make_proxy(cluster, workdir, request):
    """Starts extra proxies in front of the sandbox: make_proxy(max_client_conn=2, args=[...])."""
    started: list[ProxyProcess] = []

    def start(args=(), edit=None, **proxy_settings) -> ProxyProcess:
        """`proxy_settings` replace keys of [proxy]; `edit(text) -> text` may change the rest."""
        port = free_port()
        name = unique("proxy")
        config_path = workdir / f"{name}.toml"
        text = cluster.config_text(proxy_settings, listen_port=port)
        config_path.write_text(edit(text) if edit else text)
        proxy = ProxyProcess(config_path, port, workdir / f"{name}.log", name, args=args)
        started.append(proxy)
        _attach_log(request, proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for proxy, offset in getattr(item, "_causeway_logs", []):
            text = proxy.log(offset)
            if len(text) > 20000:
                text = "…\n" + text[-20000:]
            report.sections.append((f"causeway log ({proxy.label}, {proxy.log_path})", text or "(empty)"))


# --------------------------------------------------------------------------------------------
# Things the servers know


@pytest.fixture
def superuser(cluster):
    """A direct autocommit superuser connection to the primary's `app` database."""
    with cluster.superuser(dbname="app") as conn:
        yield conn


@pytest.fixture
def table(cluster, superuser):
    """A fresh table owned by app (id int primary key, v int, t text), already on the replicas;
    dropped afterwards."""
    name = unique("t")
    superuser.execute(f"create table {name} (id int primary key, v int not null default 0, t text)")
    superuser.execute(f"alter table {name} owner to app")
    cluster.wait_for_replicas()
    yield name
    superuser.execute(f"drop table if exists {name}")


# --------------------------------------------------------------------------------------------
# The wire protocol by hand

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


class ServerError(Exception):
    def __init__(self, fields: dict[str, str]):
        self.fields = fields
        super().__init__(f"{fields.get('S')} {fields.get('C')}: {fields.get('M')}")

    @property
    def code(self) -> str | None:
        return self.fields.get("C")


def startup_packet(params: dict[str, str] | list[tuple[str, str]], version: int = PROTOCOL_3_0) -> bytes:
    items = params.items() if isinstance(params, dict) else params
    body = struct.pack("!I", version)
    for key, value in items:
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def message(type_: bytes, body: bytes = b"") -> bytes:
    return type_ + struct.pack("!I", len(body) + 4) + body


def query_message(sql: str) -> bytes:
    return message(b"Q", sql.encode() + b"\0")


def parse_message(name: str, sql: str) -> bytes:
    return message(b"P", name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack("!h", 0))


def bind_message(portal: str, statement: str) -> bytes:
    """A Bind with no parameters, text results."""
    return message(b"B", portal.encode() + b"\0" + statement.encode() + b"\0" + struct.pack("!hhh", 0, 0, 0))


def execute_message(portal: str) -> bytes:
    return message(b"E", portal.encode() + b"\0" + struct.pack("!i", 0))


SYNC = message(b"S")


def parse_fields(body: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in body.rstrip(b"\0").split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


@dataclass
class LoginResult:
    parameters: dict[str, str] = field(default_factory=dict)
    backend_key: tuple[int, bytes] | None = None
    negotiate: tuple[int, list[str]] | None = None  # NegotiateProtocolVersion: newest version code, unknown options
    auth_requests: list[int] = field(default_factory=list)
    status: str = ""


@dataclass
class QueryResult:
    rows: list[list[str | None]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    notices: list[dict[str, str]] = field(default_factory=list)
    status: str = ""


class Wire:
    """A raw protocol-3 connection for malformed input and exact error fields."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, n: int):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed by the proxy (wanted {n} bytes, have {len(self.buffer)})")
            self.buffer += chunk

    def read_exact(self, n: int) -> bytes:
        self._fill(n)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_message(self) -> tuple[bytes, bytes]:
        header = self.read_exact(5)
        length = struct.unpack("!I", header[1:])[0]
        return header[:1], self.read_exact(length - 4)

    def read_error(self) -> dict[str, str]:
        """Reads the next message, which must be an ErrorResponse; returns its fields."""
        type_, body = self.read_message()
        assert type_ == b"E", f"expected ErrorResponse, got {type_!r} {body[:200]!r}"
        return parse_fields(body)

    def closed_by_peer(self, timeout: float = 5) -> bool:
        """True once the peer has closed (EOF or reset) with nothing more to read."""
        if self.buffer:
            return False
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    # -- login

    def login(self, user="app", password: str | None = PASSWORD, database="app",
              params: dict | list | None = None, version: int = PROTOCOL_3_0, send_startup: bool = True) -> LoginResult:
        if send_startup:
            items = [("user", user), ("database", database)]
            if params:
                items += list(params.items() if isinstance(params, dict) else params)
            self.send(startup_packet(items, version))
        result = LoginResult()
        scram = None
        while True:
            type_, body = self.read_message()
            if type_ == b"E":
                raise ServerError(parse_fields(body))
            if type_ == b"v":
                newest = struct.unpack("!I", body[:4])[0]
                count = struct.unpack("!I", body[4:8])[0]
                names = body[8:].split(b"\0")[:count]
                result.negotiate = (newest, [n.decode() for n in names])
            elif type_ == b"R":
                code = struct.unpack("!I", body[:4])[0]
                result.auth_requests.append(code)
                if code == 0:
                    pass
                elif code == 3:
                    self.send(message(b"p", password.encode() + b"\0"))
                elif code == 5:
                    salt = body[4:8]
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    digest = "md5" + hashlib.md5(inner.encode() + salt).hexdigest()
                    self.send(message(b"p", digest.encode() + b"\0"))
                elif code == 10:
                    mechanisms = body[4:].split(b"\0")
                    assert b"SCRAM-SHA-256" in mechanisms, mechanisms
                    scram = ScramClient(password)
                    first = scram.client_first()
                    self.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
                elif code == 11:
                    self.send(message(b"p", scram.client_final(body[4:])))
                elif code == 12:
                    scram.verify_server_final(body[4:])
                else:
                    raise AssertionError(f"unexpected authentication request {code}")
            elif type_ == b"S":
                name, value = body.split(b"\0")[:2]
                result.parameters[name.decode()] = value.decode()
            elif type_ == b"K":
                result.backend_key = (struct.unpack("!I", body[:4])[0], body[4:])
            elif type_ == b"N":
                pass
            elif type_ == b"Z":
                result.status = body.decode()
                return result
            else:
                raise AssertionError(f"unexpected message {type_!r} during login")

    # -- queries

    def query(self, sql: str) -> QueryResult:
        self.send(query_message(sql))
        return self.read_until_ready()

    def read_until_ready(self) -> QueryResult:
        result = QueryResult()
        while True:
            type_, body = self.read_message()
            if type_ == b"D":
                count = struct.unpack("!H", body[:2])[0]
                pos, row = 2, []
                for _ in range(count):
                    length = struct.unpack("!i", body[pos:pos + 4])[0]
                    pos += 4
                    if length < 0:
                        row.append(None)
                    else:
                        row.append(body[pos:pos + length].decode())
                        pos += length
                result.rows.append(row)
            elif type_ == b"C":
                result.tags.append(body.rstrip(b"\0").decode())
            elif type_ == b"E":
                result.errors.append(parse_fields(body))
            elif type_ == b"N":
                result.notices.append(parse_fields(body))
            elif type_ == b"Z":
                result.status = body.decode()
                return result

    def terminate(self):
        try:
            self.send(message(b"X"))
        except OSError:
            pass
        self.close()


class ScramClient:
    """SCRAM-SHA-256 as libpq does it (no channel binding)."""

    def __init__(self, password: str):
        self.password = password.encode()
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.server_first = ""
        self.server_signature = b""

    def client_first(self) -> bytes:
        return ("n,," + self.first_bare).encode()

    @staticmethod
    def parse(text: str) -> dict[str, str]:
        return {part[0]: part[2:] for part in text.split(",")}

    def client_final(self, server_first: bytes) -> bytes:
        self.server_first = server_first.decode()
        attrs = self.parse(self.server_first)
        assert attrs["r"].startswith(self.nonce), attrs
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, data: bytes):
        attrs = self.parse(data.decode())
        assert base64.b64decode(attrs["v"]) == self.server_signature, "server signature mismatch"


def scram_server_first(port: int, user: str) -> dict[str, str]:
    """Starts a SCRAM login as `user` and returns the attributes of the server-first-message."""
    with Wire(port) as w:
        w.send(startup_packet({"user": user, "database": "app"}))
        type_, body = w.read_message()
        assert type_ == b"R" and struct.unpack("!I", body[:4])[0] == 10, (type_, body)
        client = ScramClient("irrelevant")
        first = client.client_first()
        w.send(message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first))
        type_, body = w.read_message()
        assert type_ == b"R" and struct.unpack("!I", body[:4])[0] == 11, (type_, body)
        return ScramClient.parse(body[4:].decode())


# --------------------------------------------------------------------------------------------
# Routing and consistency helpers: extra clusters, server control, config edits, where a
# statement ran (used by test_routing.py and test_consistency.py)


def sandbox_up(path: Path, replicas: int = 2, delay_ms: int = 0, timeout: float = 180) -> Cluster:
    """Starts `causeway sandbox up` in `path` (a cluster of its own, beside the shared one);
    stop it with `sandbox_down`. With `delay_ms`, the LAST replica applies WAL that much later."""
    args = ["sandbox", "up", "--dir", str(path), "--replicas", str(replicas)]
    if delay_ms:
        args += ["--delay-ms", str(delay_ms)]
    up = run_causeway(*args, timeout=timeout)
    if up.returncode != 0:
        run_causeway("sandbox", "down", "--dir", str(path), timeout=120)
        raise AssertionError(f"causeway sandbox up --dir {path} failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    return Cluster(dir=path, env=parse_env_file(path / "sandbox.env"))


def sandbox_down(cluster: Cluster):
    cluster.close_monitors()
    down = run_causeway("sandbox", "down", "--dir", str(cluster.dir), timeout=120)
    if down.returncode != 0:
        print(f"causeway sandbox down --dir {cluster.dir} failed: {down.stdout}\n{down.stderr}")


def node_names(cluster: Cluster) -> dict[int, str]:
    """Port → sandbox node name (primary, replica1, …)."""
    names = cluster.env.get("REPLICA_NAMES", "").split()
    return {cluster.primary_port: "primary", **dict(zip(cluster.replica_ports, names))}


def node_port(cluster: Cluster, name: str) -> int:
    return {v: k for k, v in node_names(cluster).items()}[name]


def pg_ctl(cluster: Cluster, node: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs the sandbox's pg_ctl on one node's data directory, as the servers' user (through
    runuser when we are root, as `causeway sandbox` does). Raises on failure."""
    command = [str(Path(cluster.env["BINDIR"]) / "pg_ctl"), "-D", str(cluster.dir / node), *args]
    server_user = cluster.env.get("SERVER_USER", "")
    if os.geteuid() == 0 and server_user:
        command = ["runuser", "-u", server_user, "--", *command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=str(cluster.dir), env=env)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def edit_routing(text: str, **settings) -> str:
    """Sets keys of the [routing] table of a causeway.toml text (adding the table if missing)."""
    return _edit_table(text, "[routing]", settings)


def edit_monitor(text: str, **settings) -> str:
    return _edit_table(text, "[monitor]", settings)


def _edit_table(text: str, header: str, settings: dict) -> str:
    lines = text.splitlines()
    out: list[str] = []
    inside = found = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("["):
            inside = stripped == header
            if inside:
                found = True
                out.append(line)
                out += [f"{key} = {toml_value(value)}" for key, value in settings.items()]
                continue
        if inside and "=" in stripped and not stripped.startswith("#"):
            if stripped.split("=", 1)[0].strip() in settings:
                continue
        out.append(line)
    if not found:
        # A plain table after the last [[array]] item would belong to nobody; put it first.
        out = [header, *[f"{key} = {toml_value(value)}" for key, value in settings.items()], "", *out]
    return "\n".join(out) + "\n"


def keep_backends(text: str, names: set[str] | list[str]) -> str:
    """Drops every [[backends]] item of a causeway.toml text whose name is not in `names`."""
    keep = set(names)
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip().startswith("["):
            blocks.append([])
        blocks[-1].append(line)
    out: list[str] = []
    for block in blocks:
        if block and block[0].strip() == "[[backends]]":
            name = next((l.split("=", 1)[1].strip().strip('"') for l in block
                         if l.strip().startswith("name") and "=" in l), None)
            if name not in keep:
                continue
        out += block
    return "\n".join(out) + "\n"


def routed_port(conn, prepare: bool | None = None) -> int:
    """The port of the server that ran this statement (the proxy chooses it)."""
    return conn.execute("select inet_server_port()", prepare=prepare).fetchone()[0]


def reset_statement_stats(cluster: Cluster):
    """pg_stat_statements_reset() on every server of the cluster, directly."""
    for port in cluster.server_ports:
        with cluster.superuser(dbname="app", port=port) as conn:
            conn.execute("select pg_stat_statements_reset()")


def statement_calls(cluster: Cluster, like: str, user: str = "app") -> dict[int, int]:
    """Per server port: how many times statements whose text matches `like` (an SQL ILIKE pattern;
    pg_stat_statements shows constants as $n) ran there as `user`, from pg_stat_statements read
    directly on each server."""
    calls: dict[int, int] = {}
    for port in cluster.server_ports:
        with cluster.superuser(dbname="app", port=port) as conn:
            calls[port] = int(conn.execute(
                "select coalesce(sum(s.calls), 0) from pg_stat_statements s join pg_roles r on r.oid = s.userid"
                " where r.rolname = %s and s.query ilike %s", (user, like)).fetchone()[0])
    return calls


@pytest.fixture
def make_proxy_for(workdir, request):
    """Starts proxies in front of any cluster (an extra sandbox too):
    make_proxy_for(cluster, routing={...}, backends=[...], monitor={...}, **proxy_settings)."""
    started: list[ProxyProcess] = []

    def start(cluster: Cluster, routing: dict | None = None, backends=None, monitor: dict | None = None,
              args=(), **proxy_settings) -> ProxyProcess:
        port = free_port()
        name = unique("proxy")
        config_path = workdir / f"{name}.toml"
        text = cluster.config_text(proxy_settings, listen_port=port)
        if routing:
            text = edit_routing(text, **routing)
        if monitor:
            text = edit_monitor(text, **monitor)
        if backends is not None:
            text = keep_backends(text, backends)
        config_path.write_text(text)
        proxy = ProxyProcess(config_path, port, workdir / f"{name}.log", name, args=args)
        started.append(proxy)
        _attach_log(request, proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()
