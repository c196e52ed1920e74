"""When and where the proxy logs in to servers for a client: a replica that refuses the login does
not fail the client's statement."""

import pytest

from conftest import sandbox_down, sandbox_up, unique


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
