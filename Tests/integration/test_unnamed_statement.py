"""The client's unnamed prepared statement survives what the proxy sends on its own (the commit-LSN
capture, replayed SETs), in every consistency mode."""

import pytest
from psycopg import pq

from test_psql import psql


@pytest.fixture
def proxy(proxy_in_each_mode):
    """Each test runs through a session-mode and a transaction-mode proxy."""
    return proxy_in_each_mode


@pytest.mark.parametrize("mode", ["eventual", "session", "strong"])
def test_psql_gdesc_of_a_write(proxy, mode):
    name = f"gdesc_{mode}"
    script = (f"set causeway.consistency = {mode};\n"
              f"drop table if exists {name};\n"
              f"create table {name} (a int) \\gdesc\n"
              f"select count(*) from pg_class where relname = '{name}';\n")
    result = psql(proxy, "-At", "-v", "ON_ERROR_STOP=1", input=script, check=False)
    assert result.returncode == 0, result.stderr
    # \gdesc only describes: the table was never created.
    assert result.stdout.splitlines()[-1] == "0"


@pytest.mark.parametrize("mode", ["eventual", "session", "strong"])
def test_libpq_unnamed_prepare_of_an_insert_then_execute_it_twice(proxy, table, superuser, mode):
    pgconn = pq.PGconn.connect(proxy.dsn().encode())
    try:
        assert pgconn.exec_(f"set causeway.consistency = {mode}".encode()).status == pq.ExecStatus.COMMAND_OK
        prepared = pgconn.prepare(b"", f"insert into {table} (id, v) values ($1, $2)".encode())
        assert prepared.status == pq.ExecStatus.COMMAND_OK, prepared.error_message
        for row in (1, 2):
            result = pgconn.exec_prepared(b"", [str(row).encode(), b"10"])
            assert result.status == pq.ExecStatus.COMMAND_OK, result.error_message
    finally:
        pgconn.finish()
    assert superuser.execute(f"select array_agg(id order by id) from {table}").fetchone()[0] == [1, 2]
