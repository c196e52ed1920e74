"""Online reload (RELOAD and SIGHUP) and a PAUSE/promote/RESUME switchover, under load, on a private
sandbox with three replicas. What the servers report (pg_stat_activity pids, inet_server_port())
decides what happened, not the proxy's own counters."""
import signal
import threading
import time

import psycopg
import pytest

from conftest import (edit_routing, keep_backends, node_port, pg_ctl, sandbox_down, sandbox_up, unique,
                      wait_until)
from test_admin import admin, backends


@pytest.fixture(scope="module")
def four_nodes(workdir):
    cluster = sandbox_up(workdir / unique("reload"), replicas=3)
    try:
        with cluster.superuser(dbname="app") as conn:
            conn.execute("create table reload_t (id serial primary key, note text)")
            conn.execute("alter table reload_t owner to app")
        cluster.wait_for_replicas()
        yield cluster
    finally:
        sandbox_down(cluster)


class Load:
    """Reader threads through the proxy, each on its own long-lived session (`application_name`
    tags them on the servers), plus one writer; every error is kept."""

    def __init__(self, proxy, tag, readers=4, writer=True, reconnecting=0):
        self.proxy, self.tag, self.has_writer = proxy, tag, writer
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.ports: list[int] = []
        self.writes = 0
        self.threads = [threading.Thread(target=self.read, daemon=True) for _ in range(readers)]
        self.threads += [threading.Thread(target=self.read_reconnecting, daemon=True) for _ in range(reconnecting)]
        if writer:
            self.threads.append(threading.Thread(target=self.write, daemon=True))

    def read(self):
        try:
            with self.proxy.connect(application_name=self.tag) as conn:
                while not self.stop.is_set():
                    self.ports.append(conn.execute("select inet_server_port()").fetchone()[0])
                    time.sleep(0.002)
        except BaseException as error:  # noqa: BLE001 - every failure counts
            self.errors.append(error)

    def read_reconnecting(self):
        try:
            while not self.stop.is_set():
                with self.proxy.connect(application_name=self.tag + "-new") as conn:
                    self.ports.append(conn.execute("select inet_server_port()").fetchone()[0])
        except BaseException as error:  # noqa: BLE001
            self.errors.append(error)

    def write(self):
        try:
            with self.proxy.connect(application_name=self.tag) as conn:
                while not self.stop.is_set():
                    conn.execute("insert into reload_t (note) values (%s)", (self.tag,))
                    self.writes += 1
                    time.sleep(0.005)
        except BaseException as error:  # noqa: BLE001
            self.errors.append(error)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        wait_until(lambda: len(self.ports) > 100 and (self.writes > 5 or not self.has_writer),
                   timeout=20, message="load flowing")
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def server_pids(cluster, tag, ports):
    """(port, pid) of every server process serving sessions tagged `tag`, read on each server."""
    pids = set()
    for port in ports:
        with cluster.superuser(port=port) as conn:
            for (pid,) in conn.execute("select pid from pg_stat_activity where application_name = %s", (tag,)):
                pids.add((port, pid))
    return pids


def write_config(proxy, text):
    proxy.config_path.write_text(text)


def test_reload_adding_a_third_replica_sends_it_reads_and_leaves_other_connections_alone(four_nodes, make_proxy_for):
    cluster = four_nodes
    proxy = make_proxy_for(cluster, backends=["primary", "replica1", "replica2"])
    full = proxy.config_path.read_text()
    everything = cluster.config_text(None, listen_port=proxy.port)
    replica3 = node_port(cluster, "replica3")
    untouched = [cluster.primary_port, node_port(cluster, "replica1"), node_port(cluster, "replica2")]
    assert "replica3" not in backends(proxy)
    tag = unique("keep")
    with Load(proxy, tag, reconnecting=2) as load:
        before = server_pids(cluster, tag, untouched)
        assert before, "the load's sessions hold server connections"
        write_config(proxy, everything)
        rows, _ = admin(proxy, "RELOAD")
        assert ["added", "replica3", f"127.0.0.1:{replica3}"] in rows
        assert "replica3" in backends(proxy)
        mark = len(load.ports)
        wait_until(lambda: replica3 in load.ports[mark:], timeout=15, message="reads on replica3")
        after = server_pids(cluster, tag, untouched)
    assert load.errors == [], load.errors[:5]
    assert before == after, "connections to the untouched backends were replaced"
    assert backends(proxy)["replica3"]["role"] == "replica"
    assert full != everything


def test_reload_removing_a_replica_moves_its_sessions_off_with_zero_errors(four_nodes, make_proxy_for):
    cluster = four_nodes
    proxy = make_proxy_for(cluster)
    replica3 = node_port(cluster, "replica3")
    others = [cluster.primary_port, node_port(cluster, "replica1"), node_port(cluster, "replica2")]
    tag = unique("move")
    with Load(proxy, tag, readers=8) as load:
        wait_until(lambda: replica3 in load.ports, timeout=10, message="some session reads on replica3")
        kept_before = server_pids(cluster, tag, others)
        write_config(proxy, keep_backends(proxy.config_path.read_text(), ["primary", "replica1", "replica2"]))
        rows, _ = admin(proxy, "RELOAD")
        assert rows[0][:2] == ["removed", "replica3"]
        wait_until(lambda: not server_pids(cluster, tag, [replica3]), timeout=10,
                   message="replica3's server connections from the load reach 0")
        mark = len(load.ports)
        wait_until(lambda: len(load.ports) > mark + 200, timeout=20, message="reads continue")
        assert replica3 not in load.ports[mark:]
        kept_after = server_pids(cluster, tag, others)
    assert load.errors == [], load.errors[:5]
    # Sessions that read from replica3 opened a link elsewhere; nobody else's connection changed.
    assert kept_before <= kept_after
    assert "replica3" not in backends(proxy)


def test_an_invalid_config_is_refused_with_the_reason_and_the_old_one_stays(four_nodes, make_proxy_for):
    proxy = make_proxy_for(four_nodes)
    good = proxy.config_path.read_text()
    write_config(proxy, edit_routing(good, max_lag_ms="soon"))
    _, result = admin(proxy, "RELOAD", check=False)
    assert result.returncode != 0
    assert "F0000" in result.stderr or "invalid" in result.stderr
    assert "max_lag_ms" in result.stderr, result.stderr
    assert "previous configuration stays in force" in result.stderr
    rows, _ = admin(proxy, "SHOW CONFIG")
    assert ["config_generation", "0"] in rows
    with proxy.connect() as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    # A backend whose host does not resolve is refused as a whole too.
    write_config(proxy, good + '\n[[backends]]\nname = "ghost"\nhost = "no-such-host.invalid"\nport = 5432\n')
    _, result = admin(proxy, "RELOAD", check=False)
    assert result.returncode != 0 and "ghost" in result.stderr
    assert "ghost" not in backends(proxy)


def test_sighup_applies_routing_settings_to_the_next_unit(four_nodes, make_proxy_for):
    proxy = make_proxy_for(four_nodes)
    with proxy.connect() as conn:
        conn.execute("select 1")
        write_config(proxy, edit_routing(proxy.config_path.read_text(), max_lag_ms=123, report_lsn=True))
        offset = proxy.log_size()
        proxy.signal(signal.SIGHUP)
        wait_until(lambda: "event=reload " in proxy.log(offset), timeout=10, message="reload logged")
        log = proxy.log(offset)
        assert "routing.max_lag_ms" in log and "routing.report_lsn" in log
        rows, _ = admin(proxy, "SHOW CONFIG")
        assert ["routing.max_lag_ms", "123"] in rows
        assert ["config_generation", "1"] in rows
        # The same session: its next write reports its LSN now that report_lsn is on.
        conn.execute("insert into reload_t (note) values ('after sighup')")
        assert conn.info.parameter_status("causeway.lsn") is not None
    assert proxy.alive()


def test_pause_promote_resume_switches_writes_to_the_new_primary_with_zero_errors(workdir, make_proxy_for):
    cluster = sandbox_up(workdir / unique("switchover"), replicas=1)
    try:
        with cluster.superuser(dbname="app") as conn:
            conn.execute("create table sw (id serial primary key, writer int, n int)")
            conn.execute("alter table sw owner to app")
        cluster.wait_for_replicas()
        new_primary = node_port(cluster, "replica1")
        proxy = make_proxy_for(cluster)
        stop = threading.Event()
        errors: list[BaseException] = []
        done: dict[int, int] = {}
        ports: list[int] = []

        def writer(number):
            try:
                with proxy.connect(application_name="switchover") as conn:
                    n = 0
                    while not stop.is_set():
                        n += 1
                        ports.append(conn.execute("insert into sw (writer, n) values (%s, %s) returning inet_server_port()",
                                                  (number, n)).fetchone()[0])
                        done[number] = n
                        time.sleep(0.01)
            except BaseException as error:  # noqa: BLE001
                errors.append(error)

        threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: len(ports) > 100, timeout=20, message="writes flowing")
            admin(proxy, "PAUSE 30")
            # Switchover: the old primary stops cleanly (its WAL reaches the replica), the replica
            # is promoted, then writes go on.
            pg_ctl(cluster, "primary", "stop", "-m", "fast", "-w")
            cluster.close_monitors()
            pg_ctl(cluster, "replica1", "promote", "-w")
            wait_until(lambda: backends(proxy)["replica1"]["role"] == "primary", timeout=10,
                       message="causeway sees the promoted replica as primary")
            mark = len(ports)
            admin(proxy, "RESUME")
            wait_until(lambda: errors or len(ports) > mark + 100, timeout=20, message="writes resume")
            assert errors == [], errors[:5]
            assert set(ports[mark:]) == {new_primary}
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert errors == [], errors[:5]
        with cluster.superuser(dbname="app", port=new_primary) as conn:
            rows = dict(conn.execute("select writer, count(*) from sw group by writer").fetchall())
            duplicates = conn.execute("select count(*) from (select writer, n from sw group by writer, n"
                                      " having count(*) > 1) d").fetchone()[0]
        # Every write a client saw succeed is on the new primary exactly once.
        for number, n in done.items():
            assert rows.get(number) == n, (number, n, rows)
        assert duplicates == 0
    finally:
        sandbox_down(cluster)


def test_a_transaction_open_on_a_removed_replica_finishes_there_then_the_session_moves(four_nodes, make_proxy_for):
    cluster = four_nodes
    proxy = make_proxy_for(cluster)
    replicas = {node_port(cluster, name): name for name in ("replica1", "replica2", "replica3")}
    with proxy.connect() as conn:
        conn.execute("begin read only")
        port = conn.execute("select inet_server_port()").fetchone()[0]
        assert port in replicas
        removed = replicas[port]
        keep = [name for name in ("primary", "replica1", "replica2", "replica3") if name != removed]
        write_config(proxy, keep_backends(proxy.config_path.read_text(), keep))
        rows, _ = admin(proxy, "RELOAD")
        assert ["removed", removed] == rows[0][:2]
        # The open transaction goes on where it started, and commits.
        assert conn.execute("select inet_server_port()").fetchone()[0] == port
        conn.execute("commit")
        wait_until(lambda: conn.execute("select inet_server_port()").fetchone()[0] != port, timeout=5,
                   message="the session reads elsewhere after the transaction")
    assert proxy.alive()
