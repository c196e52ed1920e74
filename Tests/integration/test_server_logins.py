"""When and where the proxy logs in to servers for a client: a login whose parameters were seen
before opens no server connection (links open when a unit needs one), read-only clients log in
while no primary is reachable, and a replica that refuses the login does not fail the statement."""

import psycopg
import pytest

from conftest import free_port, sandbox_down, sandbox_up, unique, wait_until


@pytest.fixture(scope="module")
def delayed_cluster(workdir):
    """A primary and one replica that applies WAL 3 s late (recovery_min_apply_delay)."""
    cluster = sandbox_up(workdir / unique("delayed"), replicas=1, delay_ms=3000)
    try:
        yield cluster
    finally:
        sandbox_down(cluster)


def test_a_database_the_replica_has_not_replayed_yet_is_served_by_the_primary(delayed_cluster, make_proxy_for):
    cluster = delayed_cluster
    # Lag bounds wide open: the delayed replica stays eligible for reads, so the first read of a
    # new session on the new database is routed to it, and it refuses the login (3D000).
    proxy = make_proxy_for(cluster, routing={"max_lag_ms": 3_600_000, "max_lag_bytes": 1 << 40,
                                             "consistency": "eventual"})
    name = unique("newdb")
    with proxy.connect(user="postgres", password="postgres", dbname="postgres") as admin:
        admin.execute(f"create database {name}")
    try:
        with proxy.connect(dbname=name) as conn:
            assert conn.execute("select 1").fetchone()[0] == 1
            assert conn.execute("select inet_server_port()").fetchone()[0] == cluster.primary_port
    finally:
        with cluster.superuser() as direct:
            direct.execute(f"drop database {name} with (force)")


def test_a_repeated_login_opens_no_server_connection_until_a_query_needs_one(cluster, proxy):
    name = unique("lazy")
    with proxy.connect(application_name=name) as first:
        greeted = dict(first.info.parameter_status(p) and (p, first.info.parameter_status(p))
                       for p in ("server_version", "DateStyle", "TimeZone", "in_hot_standby", "application_name"))
    # The first session's connection went back to its pool (reset, idle).
    wait_until(lambda: all(row["state"] == "idle" for row in cluster.backends_of(name)), timeout=5,
               message="the first session's connection to be reset into its pool")
    pooled = {(row["port"], row["pid"]) for row in cluster.backends_of(name)}
    with proxy.connect(application_name=name) as second:
        # Greeted like the first login, without logging in to a server.
        assert {p: second.info.parameter_status(p) for p in greeted} == greeted
        assert greeted["in_hot_standby"] == "off"
        assert {(row["port"], row["pid"]) for row in cluster.backends_of(name)} == pooled
        assert second.execute("select 1").fetchone()[0] == 1
        # The query used a connection: a pooled one, or one new connection (a replica's, or one
        # on a worker that holds none of the pooled ones).
        assert len({(row["port"], row["pid"]) for row in cluster.backends_of(name)} - pooled) <= 1


def test_read_only_clients_log_in_while_no_primary_is_reachable(cluster, make_proxy):
    closed_port = free_port()
    proxy = make_proxy(edit=lambda text: text.replace(f"port = {cluster.primary_port}\n", f"port = {closed_port}\n"))
    with proxy.connect(application_name=unique("noprimary")) as conn:
        assert conn.info.parameter_status("in_hot_standby") is None  # never a replica's "on"
        assert conn.execute("select inet_server_port()").fetchone()[0] in cluster.replica_ports
        with pytest.raises(psycopg.OperationalError) as raised:
            conn.execute("create table never_created (a int)")
        assert raised.value.sqlstate == "08006"
        assert "primary" in str(raised.value)
        # The session goes on with reads.
        assert conn.execute("select 2").fetchone()[0] == 2
