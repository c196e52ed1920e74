"""Transaction pooling: a client holds a server connection only for a transaction (or a statement
outside one). Everything that breaks transaction pooling elsewhere is checked from the servers'
side: which server process ran what (pg_backend_pid, pg_stat_activity, pg_prepared_statements),
how many connections each server saw, and that a cancel reaches only its own client's query."""

import asyncio
import re
import resource
import threading
import time

import psycopg
import pytest

from conftest import unique, wait_until
from test_pgbench import bench_db, pgbench  # noqa: F401 (a fixture, used by name)
from test_pools import admin_rows

PRIMARY = "/* causeway:primary */ "


def transaction_proxy(make_proxy, **settings):
    settings.setdefault("pool_mode", "transaction")
    return make_proxy(**settings)


def server_pids(cluster, port: int, application_name: str) -> set[int]:
    return {row["pid"] for row in cluster.activity(
        "usename = 'app' and backend_type = 'client backend' and application_name = %s", (application_name,))
        if row["port"] == port}


def test_clients_take_turns_on_one_server_connection_between_transactions(make_proxy, cluster, table):
    proxy = transaction_proxy(make_proxy, default_pool_size=1, workers=1)
    name = unique("turns")
    first, second = proxy.connect(application_name=name), proxy.connect(application_name=name)
    try:
        pids = set()
        for round_ in range(3):
            for conn in (first, second):
                with conn.transaction():
                    conn.execute(f"insert into {table} (id, v) values (%s, 1)", (round_ * 2 + (conn is second),))
                    pids.add(conn.execute("select pg_backend_pid()").fetchone()[0])
        # Both clients, six transactions, one server process on the primary.
        assert len(pids) == 1
        assert server_pids(cluster, cluster.primary_port, name) == pids
        # SHOW SERVERS lists it, idle in its pool between transactions.
        everything = admin_rows(proxy, "SHOW SERVERS")
        servers = [row for row in everything if row[0] == "primary" and row[1] == "app"]
        assert [(row[3], row[4], row[5]) for row in servers] == [("idle", None, str(pids.pop()))], everything
        # Inside a transaction a second client waits for the connection, then gets it.
        first.execute("begin")
        first.execute(f"insert into {table} (id, v) values (100, 1)")
        done = threading.Event()
        threading.Thread(target=lambda: (second.execute(PRIMARY + "select 1"), done.set()), daemon=True).start()
        time.sleep(0.3)
        assert not done.is_set(), "the second client ran while the first held the only connection"
        first.execute("commit")
        assert done.wait(5)
    finally:
        first.close()
        second.close()


def test_settings_follow_the_client_not_the_connection(make_proxy, cluster):
    proxy = transaction_proxy(make_proxy, default_pool_size=1, workers=1)
    name = unique("settings")
    with proxy.connect(application_name=name) as setter, proxy.connect(application_name=name) as other:
        setter.execute("set search_path = pg_catalog, public")
        setter.execute("set statement_timeout = '7s'")
        setter.execute("set application_name = 'renamed'")
        pid = setter.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0]
        # The other client borrows the same server process and sees its own (default) settings.
        assert other.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0] == pid
        assert other.execute(PRIMARY + "show search_path").fetchone()[0] == '"$user", public'
        assert other.execute(PRIMARY + "show statement_timeout").fetchone()[0] == "0"
        assert other.execute(PRIMARY + "show application_name").fetchone()[0] == name
        assert other.info.parameter_status("application_name") == name
        # And the setter gets its own back, on whatever connection it borrows.
        assert setter.execute(PRIMARY + "show search_path").fetchone()[0] == "pg_catalog, public"
        assert setter.execute(PRIMARY + "show statement_timeout").fetchone()[0] == "7s"
        assert setter.info.parameter_status("application_name") == "renamed"
        # A setting in a transaction that rolls back does not stick; SET LOCAL ends with its transaction.
        with setter.transaction():
            setter.execute("set local statement_timeout = '3s'")
            assert setter.execute("show statement_timeout").fetchone()[0] == "3s"
        assert setter.execute(PRIMARY + "show statement_timeout").fetchone()[0] == "7s"
        setter.execute("begin")
        setter.execute("set statement_timeout = '5s'")
        setter.execute("rollback")
        assert setter.execute(PRIMARY + "show statement_timeout").fetchone()[0] == "7s"
        setter.execute("reset all")
        assert setter.execute(PRIMARY + "show statement_timeout").fetchone()[0] == "0"


def test_prepared_statements_work_whichever_connection_a_client_borrows(make_proxy, cluster):
    proxy = transaction_proxy(make_proxy, default_pool_size=2, workers=1)
    name = unique("prepared")
    clients = [proxy.connect(application_name=name) for _ in range(6)]
    for conn in clients:
        conn.prepare_threshold = 0
    try:
        for round_ in range(5):
            for index, conn in enumerate(clients):
                # The same text from every client, and one text of each client's own.
                assert conn.execute(PRIMARY + "select %s::int + 1", (round_,)).fetchone()[0] == round_ + 1
                assert conn.execute(PRIMARY + f"select %s::int * {index + 2}", (round_,)).fetchone()[0] == round_ * (index + 2)
        # On the servers: statements under the proxy's names, each text prepared at most once
        # per server connection however many clients prepared it.
        seen: dict[tuple[int, str], set[str]] = {}
        for conn in clients:
            pid = conn.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0]
            for statement_name, text in conn.execute(PRIMARY + "select name, statement from pg_prepared_statements").fetchall():
                assert statement_name.startswith("causeway_"), statement_name
                seen.setdefault((pid, text), set()).add(statement_name)
        assert seen and all(len(names) == 1 for names in seen.values()), seen
    finally:
        for conn in clients:
            conn.close()
    assert len(server_pids(cluster, cluster.primary_port, name)) <= 2


def test_psycopg_evicting_its_statements_with_deallocate_keeps_working(make_proxy, cluster):
    proxy = transaction_proxy(make_proxy, default_pool_size=1, workers=1)
    with proxy.connect(application_name=unique("evict")) as conn:
        conn.prepare_threshold = 0
        conn.prepared_max = 3
        for value in range(30):
            # Ten texts with a cache of three: psycopg DEALLOCATEs the oldest as it goes.
            assert conn.execute(PRIMARY + f"select %s::int + {value % 10}", (value,)).fetchone()[0] == value + value % 10
        conn.execute("deallocate all")
        assert conn.execute(PRIMARY + "select %s::int", (5,)).fetchone()[0] == 5


def test_a_small_statement_cap_closes_the_least_recently_used_on_the_server(make_proxy, cluster):
    proxy = transaction_proxy(make_proxy, default_pool_size=1, workers=1, max_prepared_statements=3)
    with proxy.connect(application_name=unique("cap")) as conn:
        conn.prepare_threshold = 0
        for value in range(8):
            assert conn.execute(PRIMARY + f"select %s::int - {value}", (value,)).fetchone()[0] == 0
        # Used again after its eviction: prepared again under the same name.
        assert conn.execute(PRIMARY + "select %s::int - 0", (4,)).fetchone()[0] == 4
        count = conn.execute(PRIMARY + "select count(*) from pg_prepared_statements where name like 'causeway_%'").fetchone()[0]
        assert count <= 4


def test_state_that_cannot_move_pins_the_client_and_show_clients_says_why(make_proxy, cluster):
    proxy = transaction_proxy(make_proxy, default_pool_size=2, workers=1)
    name = unique("pinned")
    with proxy.connect(application_name=name) as pinned, proxy.connect(application_name=name) as other:
        pinned.execute("create temp table scratch (i int)")
        pinned.execute("insert into scratch values (1)")
        pid = pinned.execute("select pg_backend_pid()").fetchone()[0]
        # The other client never lands on the pinned connection while the pin lasts.
        for _ in range(10):
            assert other.execute(PRIMARY + "select pg_backend_pid()").fetchone()[0] != pid
            assert pinned.execute("select count(*) from scratch").fetchone()[0] == 1
        rows = admin_rows(proxy, "SHOW CLIENTS")
        assert any("temporaryTable" in str(row) for row in rows), rows
        pinned.execute(PRIMARY + "select pg_advisory_lock(77)")
        pinned.execute("discard all")
        assert not any("temporaryTable" in str(row) for row in admin_rows(proxy, "SHOW CLIENTS"))


def test_a_cancel_stops_its_own_clients_query_and_never_another_clients(make_proxy, cluster):
    proxy = transaction_proxy(make_proxy, default_pool_size=2, workers=1)
    name = unique("cancel")
    with proxy.connect(application_name=name) as victim, proxy.connect(application_name=name) as bystander:
        results = {}

        def bystander_sleeps():
            try:
                results["bystander"] = bystander.execute(PRIMARY + "select pg_sleep(1.5), 'done'").fetchone()[1]
            except psycopg.Error as error:
                results["bystander"] = error

        thread = threading.Thread(target=bystander_sleeps, daemon=True)
        thread.start()
        started = time.monotonic()
        timer = threading.Timer(0.4, victim.cancel)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            victim.execute(PRIMARY + "select pg_sleep(10)")
        assert time.monotonic() - started < 5
        thread.join(10)
        assert results["bystander"] == "done"
        # Cancels after the query ended reach nobody (the connection may serve someone else).
        for _ in range(5):
            victim.cancel()
            assert bystander.execute(PRIMARY + "select 'still here'").fetchone()[0] == "still here"
        assert victim.execute(PRIMARY + "select 1").fetchone()[0] == 1


def test_pgbench_prepared_and_extended_run_without_failures_on_a_small_pool(make_proxy, cluster, bench_db):
    proxy = transaction_proxy(make_proxy, default_pool_size=3)
    for mode in ("prepared", "extended", "simple"):
        result = pgbench(proxy, bench_db, "-n", "-M", mode, "-c", "8", "-j", "2", "-t", "150")
        assert "number of transactions actually processed: 1200/1200" in result.stdout, result.stdout
        failed = re.search(r"number of failed transactions: (\d+)", result.stdout)
        assert failed and failed.group(1) == "0", result.stdout
    with cluster.superuser(dbname=bench_db) as conn:
        deltas, accounts = conn.execute("select (select sum(delta) from pgbench_history),"
                                        " (select sum(abalance) from pgbench_accounts)").fetchone()
        assert deltas == accounts


def test_a_thousand_clients_share_a_few_dozen_server_connections(make_proxy, cluster, table, superuser):
    """1,000 concurrent psycopg clients, half running write transactions and half autocommit
    reads, pool size 20: no errors, never more than 20 server connections per backend (sampled
    from each server's pg_stat_activity throughout), the reads on the replicas, every write
    there once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    proxy = transaction_proxy(make_proxy, default_pool_size=20, max_client_conn=1100)
    name = unique("thousand")
    clients, rounds = 1000, 3
    peak: dict[int, int] = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            counts: dict[int, int] = {}
            for row in cluster.activity("usename = 'app' and backend_type = 'client backend' and application_name = %s",
                                        (name,)):
                counts[row["port"]] = counts.get(row["port"], 0) + 1
            for port, count in counts.items():
                peak[port] = max(peak.get(port, 0), count)
            time.sleep(0.05)

    async def client(number: int, errors: list, ports: list):
        try:
            conn = await psycopg.AsyncConnection.connect(proxy.dsn(application_name=name), autocommit=True)
        except psycopg.Error as error:
            errors.append(error)
            return
        try:
            for round_ in range(rounds):
                if number % 2 == 0:
                    async with conn.transaction():
                        await conn.execute(f"insert into {table} (id, v) values (%s, %s)", (number * rounds + round_, number))
                        await conn.execute(f"select v from {table} where id = %s", (number * rounds + round_,))
                else:
                    cursor = await conn.execute(f"select inet_server_port(), count(*) from {table}")
                    ports.append((await cursor.fetchone())[0])
        except psycopg.Error as error:
            errors.append(error)
        finally:
            await conn.close()

    async def main():
        errors: list = []
        ports: list = []
        await asyncio.gather(*(client(number, errors, ports) for number in range(clients)))
        return errors, ports

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        errors, ports = asyncio.run(main())
    finally:
        stop.set()
        sampler.join(5)
    assert errors == [], f"{len(errors)} errors, first: {errors[:3]}"
    writes = clients // 2 * rounds
    assert superuser.execute(f"select count(*), count(distinct id) from {table}").fetchone() == (writes, writes)
    assert peak, "no server connection was ever seen"
    assert all(count <= 20 for count in peak.values()), peak
    replica_reads = sum(1 for port in ports if port in cluster.replica_ports)
    assert len(ports) == clients // 2 * rounds
    assert replica_reads > len(ports) // 2, f"{replica_reads} of {len(ports)} reads on replicas"


def test_read_your_writes_holds_when_each_statement_borrows_another_connection(make_proxy, cluster, table):
    proxy = transaction_proxy(make_proxy, default_pool_size=2, workers=1)
    name = unique("ryw")
    with proxy.connect(application_name=name) as writer, proxy.connect(application_name=name) as other:
        ports = []
        for value in range(100):
            writer.execute(f"insert into {table} (id, v) values (%s, %s)", (value, value))
            # Another client takes a turn in between, so the next read may borrow either connection.
            other.execute("select 1")
            row = writer.execute(f"select v, inet_server_port() from {table} where id = %s", (value,)).fetchone()
            assert row is not None and row[0] == value, f"write {value} not visible to its own session"
            ports.append(row[1])
        # Reads without a preceding write of their own still go to the replicas.
        reads = [other.execute(f"select count(*), inet_server_port() from {table}").fetchone()[1] for _ in range(20)]
        assert any(port in cluster.replica_ports for port in reads), reads


def test_clients_that_differ_only_in_application_name_share_connections(make_proxy, cluster):
    proxy = transaction_proxy(make_proxy, default_pool_size=1, workers=1)
    first_name, second_name = unique("app-a"), unique("app-b")
    with proxy.connect(application_name=first_name) as first, proxy.connect(application_name=second_name) as second:
        for _ in range(3):
            first_pid, first_seen = first.execute(PRIMARY + "select pg_backend_pid(), current_setting('application_name')").fetchone()
            second_pid, second_seen = second.execute(PRIMARY + "select pg_backend_pid(), current_setting('application_name')").fetchone()
            # One server connection, and each client sees its own name on it.
            assert first_pid == second_pid
            assert (first_seen, second_seen) == (first_name, second_name)
        assert first.info.parameter_status("application_name") == first_name
        assert second.info.parameter_status("application_name") == second_name
        # RESET brings back the client's own startup name, not the connection's.
        first.execute("set application_name = 'renamed'")
        first.execute("reset application_name")
        assert first.execute(PRIMARY + "show application_name").fetchone()[0] == first_name


def test_after_a_cancel_the_connection_goes_back_to_the_pool_without_the_client_sending_more(make_proxy, cluster):
    # One connection: a client that was cancelled and then stays silent must not keep it.
    proxy = transaction_proxy(make_proxy, default_pool_size=1, workers=1)
    name = unique("cancelled")
    with proxy.connect(application_name=name) as victim, proxy.connect(application_name=name) as other:
        timer = threading.Timer(0.4, victim.cancel)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            victim.execute(PRIMARY + "select pg_sleep(10)")
        done = threading.Event()
        threading.Thread(target=lambda: (other.execute(PRIMARY + "select 1"), done.set()), daemon=True).start()
        assert done.wait(5), "the cancelled client kept the only server connection"
