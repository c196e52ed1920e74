"""psql through the proxy: multi-statement queries, \\copy both ways, errors, \\watch, many queries."""

import os
import random
import subprocess

import pytest

from conftest import unique


def psql(proxy, *args, input=None, timeout=120, check=True, dbname="app"):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = "secret"
    env["PGCONNECT_TIMEOUT"] = "5"
    command = ["psql", "-X", "-h", "127.0.0.1", "-p", str(proxy.port), "-U", "app", "-d", dbname, *args]
    result = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert result.returncode == 0, f"psql exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def test_multi_statement_query_returns_every_result(proxy, cluster):
    result = psql(proxy, "-At", "-c", "select 1; select 2; select inet_server_port()")
    one, two, port = result.stdout.split()
    assert (one, two) == ("1", "2")
    assert int(port) in cluster.server_ports


def test_multi_statement_query_with_ddl_and_writes(proxy):
    result = psql(proxy, "-At", "-c",
                  "create temp table m (a int); insert into m values (1), (2); select sum(a) from m; "
                  "select count(*) from pg_class where relname = 'm' and relpersistence = 't'")
    assert result.stdout.splitlines() == ["CREATE TABLE", "INSERT 0 2", "3", "1"]


def test_multi_statement_query_is_one_implicit_transaction(proxy, table, superuser):
    result = psql(proxy, "-c", f"insert into {table} (id) values (1); select 1/0", check=False)
    assert result.returncode == 1
    assert "division by zero" in result.stderr
    # The server rolled the whole query string back, insert included.
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 0
    psql(proxy, "-c", f"insert into {table} (id) values (2); select 1")
    assert superuser.execute(f"select array_agg(id) from {table}").fetchone()[0] == [2]



def make_copy_file(path):
    rng = random.Random(1234)
    lines = []
    for i in range(1, 40001):
        # text-format COPY escapes: tab, newline and backslash inside values, plus non-ASCII text.
        text = "".join(rng.choice("abcdefghij0123456789") for _ in range(70))
        text += rng.choice(["", "\\t", "\\n", "\\\\", " é ☃ "])
        lines.append(f"{i}\t{rng.randint(-10**6, 10**6)}\t{text}\n")
    lines.append("40001\t0\t\\N\n")
    path.write_text("".join(lines), encoding="utf-8")
    assert path.stat().st_size > 3_000_000
    return path


def test_copy_in_and_out_round_trips_a_few_megabytes(proxy, cluster, table, superuser, tmp_path):
    source = make_copy_file(tmp_path / "in.tsv")
    # Inside a transaction (the autocommit form is test_copy_in_autocommit below).
    copied_in = psql(proxy, input=f"begin;\n\\copy {table} (id, v, t) from '{source}'\ncommit;\n")
    assert "COPY 40001" in copied_in.stdout

    # The server's own count and checksum of what arrived.
    count, nulls = superuser.execute(f"select count(*), count(*) filter (where t is null) from {table}").fetchone()
    assert (count, nulls) == (40001, 1)

    # A new session has no read-your-writes floor: let the replicas catch up, as it may read from one.
    cluster.wait_for_replicas()
    target = tmp_path / "out.tsv"
    copied_out = psql(proxy, "-c", f"\\copy (select id, v, t from {table} order by id) to '{target}'")
    assert "COPY 40001" in copied_out.stdout
    assert target.read_bytes() == source.read_bytes()


def test_copy_in_autocommit(proxy, table, superuser, tmp_path):
    source = make_copy_file(tmp_path / "in.tsv")
    copied_in = psql(proxy, "-c", f"\\copy {table} (id, v, t) from '{source}'")
    assert "COPY 40001" in copied_in.stdout
    assert superuser.execute(f"select count(*) from {table}").fetchone()[0] == 40001


def test_errors_show_their_sqlstate_and_the_session_stays_usable(proxy):
    script = "\n".join([
        "\\set VERBOSITY verbose",
        "selec 1;",
        "\\echo state1=:LAST_ERROR_SQLSTATE",
        "select 1/0;",
        "\\echo state2=:LAST_ERROR_SQLSTATE",
        "begin;",
        "select * from no_such_table_anywhere;",
        "select 1;",
        "\\echo state3=:LAST_ERROR_SQLSTATE",
        "rollback;",
        "select 'alive', 6 * 7;",
        "",
    ])
    result = psql(proxy, "-At", input=script)
    assert 'ERROR:  42601: syntax error at or near "selec"' in result.stderr
    assert "ERROR:  22012: division by zero" in result.stderr
    assert "ERROR:  42P01:" in result.stderr
    assert "ERROR:  25P02:" in result.stderr
    out = result.stdout.splitlines()
    assert "state1=42601" in out
    assert "state2=22012" in out
    assert "state3=25P02" in out
    assert out[-1] == "alive|42"


def test_a_failing_command_sets_the_exit_status(proxy):
    result = psql(proxy, "-v", "ON_ERROR_STOP=1", "-c", "select * from no_such_table_anywhere", check=False)
    assert result.returncode == 1
    assert "does not exist" in result.stderr


def test_watch_repeats_the_query_until_it_fails(proxy, superuser):
    sequence = unique("watch_seq")
    superuser.execute(f"create sequence {sequence} owned by none")
    superuser.execute(f"grant usage, select, update on sequence {sequence} to app")
    try:
        # psql 15's \watch has no count: the watched query stops it by failing on its 20th run.
        script = (f"select 'tick' || 1 / (20 - nextval('{sequence}')) as v \\watch 0.05\n"
                  f"select 'after watch', currval('{sequence}');\n")
        result = psql(proxy, "-At", input=script, timeout=60)
        assert result.stdout.count("tick") == 19
        assert "division by zero" in result.stderr
        assert result.stdout.splitlines()[-1] == "after watch|20"
        assert superuser.execute(f"select last_value from {sequence}").fetchone()[0] == 20
    finally:
        superuser.execute(f"drop sequence {sequence}")


def test_a_loop_of_many_queries_in_one_session(proxy):
    count = 3000
    script = "".join(f"select {i} * 2 as n, pg_backend_pid() as pid;\n" for i in range(count))
    result = psql(proxy, "-At", "-F", " ", input=script)
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [i * 2 for i in range(count)]
    # The session kept its server connections: at most one backend per server, not one per query.
    assert len({r[1] for r in rows}) <= 3
