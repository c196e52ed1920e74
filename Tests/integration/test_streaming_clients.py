"""Clients that do not wait for replies: asyncpg (COPY data pipelined behind the COPY statement,
`executemany` streamed), libpq pipeline mode without a sync point, and cancel-then-next-statement.
A proxy must forward each message as it arrives, deliver every byte in order, and let an error
reach the client as soon as the server sends it."""

import asyncio
import select
import time

import asyncpg
import psycopg
import pytest
from psycopg import pq

from conftest import (HOST, PASSWORD, SYNC, bind_message, execute_message, message, parse_message, query_message,
                      reset_statement_stats, statement_calls)


@pytest.fixture
def proxy(proxy_in_each_mode):
    """Each test runs through a session-mode and a transaction-mode proxy: streaming clients must
    work whichever server connection each of their transactions borrows."""
    return proxy_in_each_mode


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


async def asyncpg_connect(proxy, **extra) -> asyncpg.Connection:
    return await asyncpg.connect(host=HOST, port=proxy.port, user="app", password=PASSWORD, database="app",
                                 ssl=False, **extra)


def test_asyncpg_copy_records_to_table_delivers_every_row(proxy, table, superuser):
    async def copy():
        conn = await asyncpg_connect(proxy)
        try:
            small = await conn.copy_records_to_table(table, records=[(i, i, f"r{i}") for i in range(6)],
                                                     columns=["id", "v", "t"])
            large = await conn.copy_records_to_table(table, records=[(i, i, "x" * 50) for i in range(6, 50_006)],
                                                     columns=["id", "v", "t"])
            return small, large
        finally:
            await conn.close()

    assert run(copy()) == ("COPY 6", "COPY 50000")
    assert superuser.execute(f"select count(*), sum(v) from {table}").fetchone() == (50_006, sum(range(50_006)))


def test_copy_data_sent_in_the_same_write_as_the_copy_statement_is_not_dropped(proxy, table, superuser):
    rows = b"".join(message(b"d", f"{i}\t{i}\n".encode()) for i in range(1, 4))
    with proxy.wire() as w:
        w.login()
        w.send(query_message(f"copy {table} (id, v) from stdin") + rows + message(b"c"))
        result = w.read_until_ready()
        assert result.errors == []
        assert result.tags == ["COPY 3"]
        assert result.status == "I"
        # The session goes on normally.
        assert w.query("select 1").rows == [["1"]]
    assert superuser.execute(f"select array_agg(id order by id) from {table}").fetchone()[0] == [1, 2, 3]


def test_asyncpg_executemany_learns_of_an_error_before_sending_every_row(proxy, table, superuser):
    consumed = 0
    total = 1_000_000

    def rows():
        nonlocal consumed
        for i in range(total):
            consumed += 1
            # The second row violates the primary key.
            yield (0 if i < 2 else i, i)

    async def insert():
        conn = await asyncpg_connect(proxy)
        try:
            with pytest.raises(asyncpg.UniqueViolationError):
                await conn.executemany(f"insert into {table} (id, v) values ($1, $2)", rows())
            return await conn.fetchval("select 42")
        finally:
            await conn.close()

    assert run(insert()) == 42
    # Directly against PostgreSQL asyncpg stops after a few thousand rows: the server's error is
    # flushed at once and asyncpg reads it once its writes block. A proxy that holds the batch
    # until Sync lets it send every row; one that forwards as rows come only adds its buffers.
    assert consumed < total // 2, f"asyncpg sent {consumed} of {total} rows before it heard of the error"
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 0


def wait_readable(pgconn, timeout: float) -> bool:
    readable, _, _ = select.select([pgconn.socket], [], [], timeout)
    return bool(readable)


def next_result(pgconn, timeout: float = 10):
    """The next libpq result, reading as it arrives; fails instead of hanging."""
    while pgconn.is_busy():
        assert wait_readable(pgconn, timeout), f"no answer within {timeout}s"
        pgconn.consume_input()
    return pgconn.get_result()


def pipeline_connection(proxy) -> pq.PGconn:
    pgconn = pq.PGconn.connect(proxy.dsn().encode())
    assert pgconn.status == pq.ConnStatus.OK, pgconn.error_message
    pgconn.enter_pipeline_mode()
    return pgconn


def test_libpq_pipeline_error_without_a_sync_point_reaches_the_client(proxy):
    pgconn = pipeline_connection(proxy)
    try:
        pgconn.send_query_params(b"select 1/0", None)
        assert pgconn.flush() == 0
        result = next_result(pgconn)
        assert result.status == pq.ExecStatus.FATAL_ERROR
        assert result.error_field(pq.DiagnosticField.SQLSTATE) == b"22012"
        assert next_result(pgconn) is None  # end of that query's results
        # The rest of the pipeline is aborted until the sync point, then the session goes on.
        pgconn.send_query_params(b"select 2", None)
        pgconn.pipeline_sync()
        assert pgconn.flush() == 0
        assert next_result(pgconn).status == pq.ExecStatus.PIPELINE_ABORTED
        assert next_result(pgconn) is None
        assert next_result(pgconn).status == pq.ExecStatus.PIPELINE_SYNC
        pgconn.send_query_params(b"select 3", None)
        pgconn.pipeline_sync()
        pgconn.flush()
        result = next_result(pgconn)
        assert result.status == pq.ExecStatus.TUPLES_OK and result.get_value(0, 0) == b"3"
    finally:
        pgconn.finish()


def test_libpq_pipeline_results_arrive_with_flush_requests_before_the_sync(proxy, table):
    pgconn = pipeline_connection(proxy)
    try:
        for i in range(1, 4):
            pgconn.send_query_params(f"insert into {table} (id, v) values ({i}, {i}) returning id".encode(), None)
            pgconn.send_flush_request()
            assert pgconn.flush() == 0
            result = next_result(pgconn)
            assert result.status == pq.ExecStatus.TUPLES_OK, result.error_message
            assert result.get_value(0, 0) == str(i).encode()
            assert next_result(pgconn) is None
        pgconn.pipeline_sync()
        pgconn.flush()
        assert next_result(pgconn).status == pq.ExecStatus.PIPELINE_SYNC
    finally:
        pgconn.finish()


def test_libpq_pipeline_read_then_write_under_one_sync_writes_once_on_the_primary(proxy, cluster, table, superuser):
    reset_statement_stats(cluster)
    pgconn = pipeline_connection(proxy)
    try:
        pgconn.send_query_params(f"select count(*) from {table}".encode(), None)
        pgconn.flush()
        pgconn.send_query_params(f"insert into {table} (id, v) values (7, 7)".encode(), None)
        pgconn.pipeline_sync()
        pgconn.flush()
        first = next_result(pgconn)
        assert first.status == pq.ExecStatus.TUPLES_OK, first.error_message
        assert next_result(pgconn) is None
        second = next_result(pgconn)
        assert second.status == pq.ExecStatus.COMMAND_OK, second.error_message
        assert next_result(pgconn) is None
        assert next_result(pgconn).status == pq.ExecStatus.PIPELINE_SYNC
    finally:
        pgconn.finish()
    assert superuser.execute(f"select count(*) from {table} where id = 7").fetchone()[0] == 1
    calls = statement_calls(cluster, f"insert into {table}%")
    assert calls[cluster.primary_port] == 1 and sum(calls.values()) == 1, calls


def next_statements_cancelled(proxy, cancelled_statement, rounds: int) -> int:
    """Runs `cancelled_statement(conn)` (which makes asyncpg cancel it) then `select 1`, `rounds`
    times; returns how many of those next statements were cancelled (directly: none)."""
    async def loop():
        conn = await asyncpg_connect(proxy)
        cancelled_next = 0
        try:
            for _ in range(rounds):
                await cancelled_statement(conn)
                try:
                    assert await conn.fetchval("select 1") == 1
                except asyncpg.QueryCanceledError:
                    cancelled_next += 1
            return cancelled_next
        finally:
            await conn.close()

    return run(loop())


def test_asyncpg_cancel_never_lands_on_the_next_statement(proxy):
    async def timed_out(conn):
        # asyncpg cancels a statement that outlives its timeout, then goes on.
        with pytest.raises(asyncio.TimeoutError):
            await conn.fetchval("select pg_sleep(0.2)", timeout=0.05)

    assert next_statements_cancelled(proxy, timed_out, 40) == 0


def test_asyncpg_copy_out_cancelled_by_a_failing_sink_leaves_the_next_statement_alone(proxy):
    class SinkFailed(Exception):
        pass

    async def sink(data):
        raise SinkFailed()

    async def copy_into_failing_sink(conn):
        with pytest.raises(SinkFailed):
            await conn.copy_from_query("select g, repeat('x', 100) from generate_series(1, 20000) g", output=sink)

    assert next_statements_cancelled(proxy, copy_into_failing_sink, 20) == 0


PID_MAX_LIMIT = 4_194_304  # Linux never gives a process a larger pid (include/linux/threads.h)


def test_backend_pids_are_distinct_and_never_a_real_process_id(proxy, cluster):
    conns = [proxy.connect() for _ in range(12)]
    try:
        pids = [c.info.backend_pid for c in conns]
        assert len(set(pids)) == len(pids), pids
        assert all(pid > PID_MAX_LIMIT for pid in pids), pids
        # Terminating "the backend" by the pid the driver reports ends no server process.
        server_pids = [c.execute("select pg_backend_pid()").fetchone()[0] for c in conns]
        with proxy.connect() as other:
            assert other.execute("select pg_terminate_backend(%s)", (pids[0],)).fetchone()[0] is False
        assert all(cluster.backend(pid) is not None for pid in server_pids)
        for conn in conns:
            assert conn.execute("select 1").fetchone()[0] == 1
    finally:
        for conn in conns:
            conn.close()


def test_a_statement_recreated_in_the_middle_of_a_batch_leaves_the_clients_responses_intact(proxy, cluster):
    """A batch arriving in two parts on a replica, whose second part binds a named statement that
    only the primary has: the proxy prepares it there in the middle of the batch, and the client
    still gets every response of its own, in order (its first ParseComplete included)."""
    with proxy.wire() as w:
        w.login()
        # A named statement prepared on the primary only.
        w.send(parse_message("on_primary", "/* causeway: primary */ select 2") + SYNC)
        assert w.read_message()[0] == b"1" and w.read_message()[0] == b"Z"
        # The batch: its first part (a read) goes to a replica and is forwarded before the rest.
        w.send(parse_message("", "select inet_server_port()") + bind_message("", "") + execute_message(""))
        time.sleep(0.3)
        w.send(bind_message("p2", "on_primary") + execute_message("p2") + SYNC)
        types, rows = [], []
        while True:
            type_, body = w.read_message()
            types.append(type_)
            if type_ == b"D":
                rows.append(body[6:].decode())
            if type_ in (b"Z", b"E"):
                break
        assert types == [b"1", b"2", b"D", b"C", b"2", b"D", b"C", b"Z"], (types, rows)
        assert int(rows[0]) in cluster.replica_ports and rows[1] == "2"
