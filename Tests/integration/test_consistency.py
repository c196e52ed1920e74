"""Read consistency through the proxy, on a cluster whose last replica applies WAL 150 ms late:
read-your-writes in `session` mode (and stale reads in `eventual` mode, so the test can fail),
causal tokens carried to other connections (SET, startup parameter, ParameterStatus with
report_lsn), monotonic reads while sessions move between replicas of different lag, refused
tokens, and the consistency switch.

Most proxies here list only the primary and the delayed replica, so a read cannot escape to the
fast replica and look consistent by luck.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from conftest import (
    ServerError,
    Wire,
    node_names,
    node_port,
    routed_port,
    sandbox_down,
    sandbox_up,
    unique,
    wait_until,
)

DELAY_MS = 150
ROWS = 64


@pytest.fixture(scope="module")
def delayed(workdir):
    """primary, replica1 (streaming) and replica2 (recovery_min_apply_delay = 150ms), with a table
    `counters (id, v)` owned by app."""
    cluster = sandbox_up(workdir / unique("delayed"), replicas=2, delay_ms=DELAY_MS)
    try:
        assert cluster.env["DELAYED_REPLICA"] == "replica2"
        with cluster.superuser(dbname="app") as conn:
            conn.execute("create table counters (id int primary key, v bigint not null default 0)")
            conn.execute(f"insert into counters (id) select generate_series(1, {ROWS})")
            conn.execute("alter table counters owner to app")
        cluster.wait_for_replicas()
        yield cluster
    finally:
        sandbox_down(cluster)


@pytest.fixture
def delayed_proxy(delayed, make_proxy_for):
    """make_proxy_for in front of the primary and the delayed replica only."""
    def start(**routing):
        return make_proxy_for(delayed, routing=routing or None, backends=["primary", "replica2"])
    return start


def lsn_value(token: str) -> int:
    """The LSN of a `timeline:X/Y:system` token (or a bare X/Y) as an integer."""
    parts = token.split(":")
    text = parts[1] if len(parts) == 3 else parts[0]
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


PROTOCOLS = {
    # psycopg's client-side binding: every statement a simple Query message.
    "simple": {"cursor_factory": psycopg.ClientCursor, "prepare_threshold": None},
    # Server-side binding, unnamed statements (Parse/Bind/Execute/Sync each time).
    "extended": {"prepare_threshold": None},
    # Named prepared statements from the first execution on.
    "prepared": {"prepare_threshold": 0},
}


def connect(proxy, protocol: str) -> psycopg.Connection:
    return psycopg.connect(proxy.dsn(), autocommit=True, **PROTOCOLS[protocol])


def write_then_read(proxy, replica_port: int, iterations: int, consistency: str | None = None,
                    combos=None) -> dict:
    """Each (protocol, write style) pair runs in a thread of its own, on its own connection and
    counter row: write the value i (autocommit UPDATE, or BEGIN; UPDATE; COMMIT), then read it back
    (autocommit SELECT). A read that does not return i is stale."""
    combos = combos or [(p, s) for p in PROTOCOLS for s in ("autocommit", "transaction")]
    results = {"stale": 0, "reads": 0, "on_replica": 0, "errors": [], "examples": []}
    lock = threading.Lock()

    def worker(row: int, protocol: str, style: str):
        stale = reads = on_replica = 0
        examples = []
        try:
            with connect(proxy, protocol) as conn:
                if consistency:
                    conn.execute(f"set causeway.consistency = {consistency}")
                for i in range(1, iterations + 1):
                    if style == "autocommit":
                        conn.execute("update counters set v = %s where id = %s", (i, row))
                    else:
                        conn.execute("begin")
                        conn.execute("update counters set v = %s where id = %s", (i, row))
                        conn.execute("commit")
                    v, port = conn.execute("select v, inet_server_port() from counters where id = %s", (row,)).fetchone()
                    reads += 1
                    on_replica += port == replica_port
                    if v != i:
                        stale += 1
                        if len(examples) < 3:
                            examples.append(f"{protocol}/{style}: wrote {i}, read {v} on port {port}")
        except psycopg.Error as e:
            with lock:
                results["errors"].append(f"{protocol}/{style}: {type(e).__name__} {e.sqlstate}: {e}")
        with lock:
            results["stale"] += stale
            results["reads"] += reads
            results["on_replica"] += on_replica
            results["examples"] += examples

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(row, p, s), daemon=True)
               for row, (p, s) in enumerate(combos, start=1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads), "write/read threads did not finish"
    results["elapsed"] = time.monotonic() - started
    return results


# --------------------------------------------------------------------------------------------
# Read-your-writes


def test_session_mode_reads_its_own_writes(delayed, delayed_proxy):
    proxy = delayed_proxy(consistency="session")
    replica = node_port(delayed, "replica2")
    result = write_then_read(proxy, replica, iterations=850)
    print(f"\nsession mode: {result['reads']} write-then-read iterations in {result['elapsed']:.1f}s, "
          f"{result['stale']} stale, {result['on_replica']} reads on the delayed replica")
    assert result["errors"] == []
    assert result["reads"] >= 5000
    assert result["stale"] == 0, result["examples"]


def test_eventual_mode_does_read_stale_data(delayed, delayed_proxy):
    """The same workload without the floor: the delayed replica answers before it has the write.
    Proof that the session-mode test above can fail."""
    proxy = delayed_proxy(consistency="eventual")
    replica = node_port(delayed, "replica2")
    result = write_then_read(proxy, replica, iterations=60)
    print(f"\neventual mode: {result['stale']} stale of {result['reads']} reads "
          f"({result['on_replica']} on the delayed replica)")
    assert result["errors"] == []
    assert result["stale"] > 0


def test_session_mode_waits_for_the_replica_with_causal_wait(delayed, delayed_proxy):
    """With causal_wait_ms the read right after a write waits for the delayed replica to replay it
    instead of using the primary: still never stale, and served by the replica."""
    proxy = delayed_proxy(consistency="session", causal_wait_ms=2000)
    replica = node_port(delayed, "replica2")
    result = write_then_read(proxy, replica, iterations=15,
                             combos=[("simple", "autocommit"), ("extended", "transaction"), ("prepared", "autocommit")])
    print(f"\nsession mode with causal_wait_ms: {result['stale']} stale of {result['reads']} reads, "
          f"{result['on_replica']} on the delayed replica, {result['elapsed']:.1f}s")
    assert result["errors"] == []
    assert result["stale"] == 0, result["examples"]
    assert result["on_replica"] > 0


# --------------------------------------------------------------------------------------------
# Causal tokens


def test_token_carries_read_your_writes_to_another_connection(delayed, delayed_proxy):
    proxy = delayed_proxy(consistency="session")
    replica = node_port(delayed, "replica2")
    row = 40
    writer = connect(proxy, "extended")
    try:
        # Control: without the token, the other session reads the delayed replica and misses writes.
        with connect(proxy, "extended") as reader:
            control_stale = 0
            for i in range(1, 31):
                writer.execute("update counters set v = %s where id = %s", (i, row))
                control_stale += reader.execute("select v from counters where id = %s", (row,)).fetchone()[0] != i

        stale, on_replica, iterations = 0, 0, 0
        examples = []
        value = 1000
        for protocol in ("simple", "extended", "prepared"):
            with connect(proxy, protocol) as reader:
                for _ in range(200):
                    value += 1
                    writer.execute("update counters set v = %s where id = %s", (value, row))
                    token = writer.execute("show causeway.lsn").fetchone()[0]
                    # A simple Query: SET causeway.* through the extended protocol is not seen by
                    # the proxy (test_causeway_settings_through_the_extended_protocol).
                    reader.execute(f"set causeway.min_lsn = '{token}'", prepare=False)
                    iterations += 1
                    if iterations % 30 == 0:
                        # Now and then give the replica time to replay the token, so that it is
                        # honoured by a replica too, not only by falling back to the primary.
                        time.sleep(DELAY_MS / 1000 + 0.25)
                    v, port = reader.execute("select v, inet_server_port() from counters where id = %s",
                                             (row,)).fetchone()
                    on_replica += port == replica
                    if v != value:
                        stale += 1
                        examples.append(f"{protocol}: wrote {value}, read {v} on {port} with token {token}")

        # The startup parameter, on fresh connections (raw protocol: libpq cannot send it).
        startup_stale = 0
        for _ in range(30):
            value += 1
            writer.execute("update counters set v = %s where id = %s", (value, row))
            token = writer.execute("show causeway.lsn").fetchone()[0]
            with Wire(proxy.port) as w:
                w.login(params={"causeway.min_lsn": token})
                result = w.query(f"select v from counters where id = {row}")
                assert not result.errors, result.errors
                startup_stale += int(result.rows[0][0]) != value
                w.terminate()
    finally:
        writer.close()
    print(f"\ntokens: control (no token) {control_stale}/30 stale; SET causeway.min_lsn {stale}/{iterations} stale "
          f"({on_replica} served by the delayed replica); startup parameter {startup_stale}/30 stale")
    assert control_stale > 0
    assert stale == 0, examples[:5]
    assert on_replica > 0
    assert startup_stale == 0


@pytest.mark.parametrize("command", ["set causeway.consistency = strong", "set causeway.min_lsn = 'FFFF/0'",
                                     "set causeway.route = primary", "show causeway.lsn"])
@pytest.mark.parametrize("protocol", ["prepared", "unnamed"])
def test_causeway_settings_through_the_extended_protocol(delayed, delayed_proxy, command, protocol):
    proxy = delayed_proxy(consistency="session")
    with proxy.connect() as conn:
        cursor = conn.cursor()
        if protocol == "prepared":
            cursor.execute(command, prepare=True)
        else:
            cursor.execute(command, binary=True)  # binary results: psycopg uses Parse/Bind/Execute
        if command.startswith("show"):
            assert lsn_value(cursor.fetchone()[0]) >= 0
        else:
            # Each of these SETs sends the next read to the primary.
            assert routed_port(conn) == delayed.primary_port


def test_report_lsn_sends_the_token_as_parameter_status(delayed, delayed_proxy):
    """The token arrives as ParameterStatus causeway.lsn, increases with every write commit, and
    works on another connection. (Read here after one more statement: when it arrives is the
    subject of test_report_lsn_token_is_there_when_the_commit_returns.)"""
    proxy = delayed_proxy(consistency="session", report_lsn=True)
    row = 41
    tokens = []
    with connect(proxy, "extended") as conn, connect(proxy, "simple") as other:
        before = conn.info.parameter_status("causeway.lsn")
        for i in range(1, 31):
            if i % 3 == 0:
                with conn.transaction():
                    conn.execute("update counters set v = %s where id = %s", (i, row))
            else:
                conn.execute("update counters set v = %s where id = %s", (i, row), prepare=i % 2 == 0)
            conn.execute("select 1").fetchone()
            token = conn.info.parameter_status("causeway.lsn")
            assert token is not None, "no causeway.lsn ParameterStatus after a write commit"
            tokens.append(token)
            # The reported token works on another connection like one from SHOW.
            other.execute(f"set causeway.min_lsn = '{token}'")
            assert other.execute("select v from counters where id = %s", (row,)).fetchone() == (i,)
        # Reads do not send a new one.
        last = conn.info.parameter_status("causeway.lsn")
        for _ in range(3):
            conn.execute("select v from counters where id = %s", (row,)).fetchone()
        assert conn.info.parameter_status("causeway.lsn") == last
    values = [lsn_value(t) for t in tokens]
    print(f"\nreport_lsn: before any write {before!r}; after 30 commits {tokens[0]} … {tokens[-1]}")
    assert all(b > a for a, b in zip(values, values[1:])), tokens
    assert len({t.split(":")[0] for t in tokens}) == 1 and len({t.split(":")[2] for t in tokens}) == 1


def test_report_lsn_token_is_there_when_the_commit_returns(delayed, delayed_proxy):
    proxy = delayed_proxy(consistency="session", report_lsn=True)
    seen = []
    with connect(proxy, "extended") as conn:
        for i in range(1, 6):
            conn.execute("update counters set v = %s where id = 44", (i,))
            reported = conn.info.parameter_status("causeway.lsn")
            shown = conn.execute("show causeway.lsn").fetchone()[0]  # the floor: this commit's LSN
            seen.append((reported, shown))
    assert all(reported == shown for reported, shown in seen), seen


def test_without_report_lsn_no_parameter_status_is_sent(delayed, delayed_proxy):
    proxy = delayed_proxy(consistency="session")
    with proxy.connect() as conn:
        conn.execute("update counters set v = v + 1 where id = 42")
        assert conn.info.parameter_status("causeway.lsn") is None
        assert ":" in conn.execute("show causeway.lsn").fetchone()[0]


def test_refused_tokens_get_22023_and_the_session_stays_usable(delayed, delayed_proxy):
    proxy = delayed_proxy(consistency="session")
    replica = node_port(delayed, "replica2")
    with proxy.connect() as conn:
        conn.execute("update counters set v = v + 1 where id = 45")
        token = conn.execute("show causeway.lsn").fetchone()[0]
        timeline, lsn, system = token.split(":")
        far = "FFFF/0"  # beyond anything this cluster wrote: if accepted, the floor would show it
        bad = {
            "garbage": "nonsense",
            "another cluster": f"{timeline}:{far}:{int(system) + 1}",
            "a newer timeline": f"{int(timeline) + 5}:{far}:{system}",
            "empty": "",
            "half a token": f"{timeline}:{far}",
        }
        for label, value in bad.items():
            with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
                conn.execute(f"set causeway.min_lsn = '{value}'")
            assert refused.value.sqlstate == "22023", label
            assert "causeway.min_lsn" in str(refused.value) or "token" in str(refused.value), (label, str(refused.value))
            # Still usable, and the floor did not jump.
            assert conn.execute("select 1").fetchone() == (1,)
            # (prepare=False: psycopg would prepare a sixth identical SHOW, and the proxy does not
            # answer SHOW causeway.* through the extended protocol; see the xfail test above.)
            assert lsn_value(conn.execute("show causeway.lsn", prepare=False).fetchone()[0]) < lsn_value(far), label
        messages = {}
        for label in ("another cluster", "a newer timeline"):
            try:
                conn.execute(f"set causeway.min_lsn = '{bad[label]}'")
            except psycopg.Error as e:
                messages[label] = str(e).strip()
        assert "cluster" in messages["another cluster"], messages
        assert "timeline" in messages["a newer timeline"], messages
        # The session's own token, and a bare LSN, are accepted.
        conn.execute(f"set causeway.min_lsn = '{token}'")
        conn.execute("set causeway.min_lsn = '0/0'")
        # An LSN no replica has reached: reads still work, on the primary.
        conn.execute("set causeway.min_lsn = 'FFFF/FFFFFFFF'")
        assert routed_port(conn) == delayed.primary_port
        with pytest.raises(psycopg.errors.CantChangeRuntimeParam):
            conn.execute(f"set causeway.lsn = '{token}'")
        assert conn.execute("select 2").fetchone() == (2,)

    # At connect time a bad token is refused with 22023 (FATAL).
    with Wire(proxy.port) as w:
        with pytest.raises(ServerError) as refused:
            w.login(params={"causeway.min_lsn": "nonsense"})
        assert refused.value.code == "22023", refused.value.fields
    # A fresh session without a token reads from the replica again.
    with proxy.connect() as conn:
        assert wait_until(lambda: routed_port(conn) == replica, timeout=10, message="a read on the replica")


# --------------------------------------------------------------------------------------------
# Monotonic reads


def monotonic_run(cluster, proxy, consistency: str, seconds: float, readers: int = 4) -> dict:
    """A writer increments counter 50 on the primary directly; `readers` sessions read it through
    the proxy; meanwhile replica1 and replica2 take turns having replay paused, so sessions are
    pushed between the fast replica, the delayed one and the primary. Counts values going back."""
    row = 50
    stop = threading.Event()
    observations: list[list[tuple[int, int]]] = [[] for _ in range(readers)]
    errors: list[str] = []

    def writer():
        with cluster.superuser(dbname="app") as conn:
            while not stop.is_set():
                conn.execute("update counters set v = v + 1 where id = %s", (row,))
                time.sleep(0.002)

    def reader(k: int):
        try:
            with proxy.connect() as conn:
                conn.execute(f"set causeway.consistency = {consistency}")
                while not stop.is_set():
                    observations[k].append(conn.execute(
                        "select v, inet_server_port() from counters where id = %s", (row,)).fetchone())
                    time.sleep(0.002)
        except psycopg.Error as e:
            errors.append(f"{type(e).__name__} {e.sqlstate}: {e}")

    replicas = {name: cluster.superuser(port=node_port(cluster, name)) for name in ("replica1", "replica2")}
    threads = [threading.Thread(target=writer, daemon=True)] + \
        [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(readers)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + seconds
        turn = 0
        time.sleep(0.5)
        while time.monotonic() < deadline:
            name = ("replica1", "replica2")[turn % 2]
            replicas[name].execute("select pg_wal_replay_pause()")
            time.sleep(0.6)
            replicas[name].execute("select pg_wal_replay_resume()")
            time.sleep(0.4)
            turn += 1
    finally:
        for conn in replicas.values():
            conn.execute("select pg_wal_replay_resume()")
            conn.close()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    names = node_names(cluster)
    replica_backwards, after_primary_backwards, moves, examples = 0, 0, 0, []
    served: dict[str, int] = {}
    for seen in observations:
        best_on_replicas = None   # the newest value this session has read from any replica
        previous = None
        for v, port in seen:
            served[names[port]] = served.get(names[port], 0) + 1
            if previous is not None:
                moves += port != previous[1]
                if v < previous[0] and previous[1] == cluster.primary_port and port != cluster.primary_port:
                    after_primary_backwards += 1
            if port != cluster.primary_port:
                if best_on_replicas is not None and v < best_on_replicas:
                    replica_backwards += 1
                    if len(examples) < 3:
                        examples.append(f"{best_on_replicas} seen on a replica, then {v} on {names[port]}")
                best_on_replicas = v if best_on_replicas is None else max(best_on_replicas, v)
            previous = (v, port)
    return {"replica_backwards": replica_backwards, "after_primary_backwards": after_primary_backwards,
            "moves": moves, "reads": sum(map(len, observations)), "served": served, "examples": examples,
            "errors": errors, "sessions_that_moved": sum(len({p for _, p in seen}) > 1 for seen in observations)}


def test_monotonic_reads_while_sessions_move_between_replicas(delayed, make_proxy_for):
    """All three servers behind the proxy (replica2 applies WAL 150 ms late): the values a session
    reads from replicas never go back, though it is pushed between replicas of different lag (the
    floor: the replay position of every replica it read from). A read the proxy sent to the
    primary meanwhile is test_monotonic_reads_after_a_fallback_read_on_the_primary."""
    proxy = make_proxy_for(delayed)
    session = monotonic_run(delayed, proxy, "session", seconds=4.5)
    eventual = monotonic_run(delayed, proxy, "eventual", seconds=3.0)
    print(f"\nmonotonic reads, session mode: {session['reads']} reads, {session['moves']} moves between servers "
          f"({session['sessions_that_moved']} sessions moved), served by {session['served']}, "
          f"{session['replica_backwards']} replica reads went back, "
          f"{session['after_primary_backwards']} went back after a read on the primary; "
          f"eventual mode (not asserted): {eventual['replica_backwards']} of {eventual['reads']} went back "
          f"{eventual['examples'][:2]}")
    assert session["errors"] == [] and eventual["errors"] == []
    assert session["sessions_that_moved"] > 0
    assert session["replica_backwards"] == 0, session["examples"]


def test_monotonic_reads_after_a_fallback_read_on_the_primary(delayed, make_proxy_for):
    cluster = delayed
    proxy = make_proxy_for(cluster, routing={"max_lag_ms": 60_000}, backends=["primary", "replica2"])
    primary, replica = cluster.primary_port, node_port(cluster, "replica2")
    row = 51
    direct = cluster.superuser(port=replica)
    stop = threading.Event()

    def writer():
        with cluster.superuser(dbname="app") as conn:
            while not stop.is_set():
                conn.execute("update counters set v = v + 1 where id = %s", (row,))
                time.sleep(0.005)

    thread = threading.Thread(target=writer, daemon=True)
    # replica2 applies commits 3 s late for this test: far behind, yet within max_lag_ms.
    direct.execute("alter system set recovery_min_apply_delay = '3s'")
    direct.execute("select pg_reload_conf()")
    try:
        thread.start()
        time.sleep(0.5)
        with proxy.connect() as conn:
            def read():
                return conn.execute("select v, inet_server_port() from counters where id = %s", (row,)).fetchone()
            assert wait_until(lambda: read()[1] == replica, timeout=10, message="a first read on replica2")
            direct.execute("select pg_wal_replay_pause()")
            # Paused while behind: not eligible; the read falls back to the primary.
            on_primary = wait_until(lambda: (lambda r: r if r[1] == primary else None)(read()), timeout=10,
                                    message="a fallback read on the primary")
            direct.execute("select pg_wal_replay_resume()")
            # From here on every read must show at least what the primary showed. While the
            # writer keeps going, each primary read raises the floor again, so the session may
            # stay on the primary (the replica, 3 s behind, never reaches it) — that is the
            # price of monotonic reads, and going back to the replica early would break them.
            seen = [on_primary]
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                seen.append(read())
                time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=30)
        direct.execute("select pg_wal_replay_resume()")
        direct.execute("alter system reset recovery_min_apply_delay")
        direct.execute("select pg_reload_conf()")
        direct.close()
    values = [value for value, _ in seen]
    assert values == sorted(values), f"the session went back in time: {values}"


# --------------------------------------------------------------------------------------------
# Choosing the consistency


def test_consistency_switch_routes_reads(delayed, delayed_proxy):
    proxy = delayed_proxy(consistency="session")
    primary, replica = delayed.primary_port, node_port(delayed, "replica2")
    with proxy.connect() as conn:
        assert conn.execute("show causeway.consistency", prepare=False).fetchone() == ("session",)
        wait_until(lambda: routed_port(conn) == replica, timeout=10, message="a session read on the replica")
        conn.execute("set causeway.consistency = strong")
        assert conn.execute("show causeway.consistency", prepare=False).fetchone() == ("strong",)
        assert {routed_port(conn) for _ in range(5)} == {primary}
        assert {routed_port(conn, prepare=True) for _ in range(3)} == {primary}
        conn.execute("set causeway.consistency = eventual")
        assert {routed_port(conn) for _ in range(5)} == {replica}
        # Eventual: even right after a write, the read goes to the (delayed) replica.
        conn.execute("update counters set v = v + 1 where id = 43")
        assert routed_port(conn) == replica
        conn.execute("set causeway.consistency = session")
        # Session: the floor of that write keeps the next read off the delayed replica.
        conn.execute("update counters set v = v + 1 where id = 43")
        assert routed_port(conn) == primary
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("set causeway.consistency = sometimes")
        assert conn.execute("show causeway.consistency", prepare=False).fetchone() == ("session",)
        conn.execute("reset causeway.consistency")
        assert conn.execute("show causeway.consistency", prepare=False).fetchone() == ("session",)

    # From the configuration, and from the startup parameter.
    strong = delayed_proxy(consistency="strong")
    with strong.connect() as conn:
        assert {routed_port(conn) for _ in range(5)} == {primary}
        conn.execute("set causeway.consistency = eventual")
        assert wait_until(lambda: routed_port(conn) == replica, timeout=10, message="an eventual read on the replica")
    for mode, expected in (("strong", {primary}), ("eventual", {replica})):
        with Wire(proxy.port) as w:
            w.login(params={"causeway.consistency": mode})
            ports = {int(w.query("select inet_server_port()").rows[0][0]) for _ in range(3)}
            assert ports == expected, (mode, ports)
            w.terminate()
    with Wire(proxy.port) as w:
        with pytest.raises(ServerError) as refused:
            w.login(params={"causeway.consistency": "sometimes"})
        assert refused.value.code == "22023"
