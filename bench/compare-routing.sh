#!/usr/bin/env bash
# Read/write routing, side by side: Causeway vs pgpool-II (streaming-replication mode, load
# balancing on), both in front of the same sandbox cluster (a primary and 2 streaming replicas).
#
#  Part 1  pgbench -S through each proxy, alternating A/B/A/B (plus, as a reference, the same load
#          split straight over the two replicas: the ceiling of the machine). Per run: tps, proxy CPU time per
#          transaction (the proxy's whole process tree: Causeway's threads; pgpool's parent and
#          every child), and where the reads went (pg_stat_statements calls of the pgbench query
#          on each node, reset before each run).
#  Part 2  Lag reaction of Causeway (max_lag_ms = 200): a read load runs through the proxy while
#          writes go straight to the primary; then one replica is made to fall behind, and later
#          let go. Reported: time from the event to the last read the proxy routed to that
#          replica, and from the release to the first read routed there again. Two ways to fall
#          behind: (a) pg_wal_replay_pause()/pg_wal_replay_resume(); (b) recovery_min_apply_delay
#          raised to 1 s (ALTER SYSTEM on the replica + reload) and reset — (b) exercises the
#          max_lag_ms bound itself, (a) the monitor's replay-paused detection.
#
# Fairness: both proxies authenticate clients with SCRAM-SHA-256 against the same password
# (pgpool: pool_hba.conf `scram-sha-256` + pool_passwd `app:TEXTsecret`) and log in to the servers
# with SCRAM as `app`. Both send reads only to the replicas: pgpool gets backend_weight0 = 0 for
# the primary (PGPOOL_PRIMARY_WEIGHT=1 gives it pgpool's stock "all nodes weight 1" instead).
# pgpool: sr_check every 1 s as postgres/postgres, delay_threshold 16 MiB (Causeway's
# max_lag_bytes default), health checks off, failover_on_backend_error off (a benchmark must not
# detach nodes), num_init_children = clients + 8, child_life_time 0.
#
#   bench/compare-routing.sh                       # 2 rounds of 20 s, 16 clients, 2 threads, scale 10
#   ROUNDS=3 DURATION=30 CLIENTS=32 bench/compare-routing.sh    (WARMUP=5 s per proxy first, unrecorded)
#   SKIP_LAG=1 bench/compare-routing.sh            # part 1 only;  SKIP_AB=1: part 2 only
#   SKIP_BUILD=1 bench/compare-routing.sh          # use the existing .build/release/causeway
#   DIRECT=0 bench/compare-routing.sh              # no third arm without a proxy (the machine's ceiling)
#
# Everything runs on 127.0.0.1; everything it starts (sandbox, proxies, pgpool, load) is stopped
# on exit. Results: printed, and written to $OUT/routing-<date>.txt (OUT defaults to
# /tmp/causeway-bench-out). Benchmarks are never asserted in tests; this script only reports.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-20}"
CLIENTS="${CLIENTS:-16}"
THREADS="${THREADS:-2}"
SCALE="${SCALE:-10}"
WARMUP="${WARMUP:-5}"
PGPOOL_PRIMARY_WEIGHT="${PGPOOL_PRIMARY_WEIGHT:-0}"
LAG_MAX_MS="${LAG_MAX_MS:-200}"
OUT="${OUT:-/tmp/causeway-bench-out}"
mkdir -p "$OUT"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$OUT/routing-$STAMP.txt"

SAY_PREFIX=compare-routing
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

# --- prerequisites ------------------------------------------------------------------------------
ensure_debian_package pgpool2 /usr/sbin/pgpool
PGPOOL="$(command -v pgpool || echo /usr/sbin/pgpool)"
for tool in pgbench psql python3; do
    command -v "$tool" >/dev/null 2>&1 || { say "$tool is missing (scripts/install-deps.sh installs it)"; exit 1; }
done
PY="$ROOT/.venv/bin/python"
if [ "${SKIP_LAG:-0}" != 1 ] && ! "$PY" -c 'import psycopg' >/dev/null 2>&1; then
    if is_root; then "$ROOT/scripts/install-deps.sh" >&2; else say "no $PY with psycopg: run scripts/install-deps.sh"; exit 1; fi
fi

cd "$ROOT"
if [ -z "${CAUSEWAY_BIN:-}" ] && [ "${SKIP_BUILD:-0}" != 1 ]; then swift build -c release --product causeway >/dev/null; fi
CAUSEWAY="${CAUSEWAY_BIN:-$ROOT/.build/release/causeway}"

# --- state and cleanup ----------------------------------------------------------------------------
SANDBOX_DIR=""; POOL_DIR=""; WORK_DIR=""
CAUSEWAY_PID=""; POOL_WRAPPER_PID=""; POOL_PID=""
RUN_AS=()
if is_root; then RUN_AS=(runuser -u postgres --); fi

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_running
    stop_causeway
    cleanup_servers
    exit "$rc"
}
trap_cleanup

# --- sandbox ------------------------------------------------------------------------------------
SANDBOX_DIR="$(mktemp -d /tmp/causeway-routing.XXXXXX)"; rmdir "$SANDBOX_DIR"
WORK_DIR="$(mktemp -d /tmp/causeway-routing-work.XXXXXX)"
say "sandbox up (2 replicas) in $SANDBOX_DIR"
"$CAUSEWAY" sandbox up --dir "$SANDBOX_DIR" --replicas 2 >"$WORK_DIR/sandbox-up.log" 2>&1 \
    || { cat "$WORK_DIR/sandbox-up.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$SANDBOX_DIR/sandbox.env"
read -r R1_PORT R2_PORT <<<"$REPLICA_PORTS"
NODE_PORTS=("$PRIMARY_PORT" "$R1_PORT" "$R2_PORT")
NODE_NAMES=(primary replica1 replica2)

app_conn() { echo "host=127.0.0.1 port=$1 user=app password=secret dbname=app"; }
su_sql() {  # port sql: run as postgres on database app, unaligned output
    PGPASSWORD=postgres PGCONNECT_TIMEOUT=5 psql -X -q -At -h 127.0.0.1 -p "$1" -U postgres -d app -c "$2"
}

say "pgbench -i -s $SCALE on the primary"
PGPASSWORD=secret run_waited "$WORK_DIR/pgbench-init.log" pgbench -i -q -s "$SCALE" "$(app_conn "$PRIMARY_PORT")" \
    || { cat "$WORK_DIR/pgbench-init.log" >&2; exit 1; }
target_lsn="$(su_sql "$PRIMARY_PORT" "SELECT pg_current_wal_lsn()")"
deadline=$((SECONDS + 60))
for port in "$R1_PORT" "$R2_PORT"; do
    until [ "$(su_sql "$port" "SELECT pg_last_wal_replay_lsn() >= '$target_lsn'::pg_lsn")" = t ]; do
        [ "$SECONDS" -lt "$deadline" ] || { say "replica on $port did not catch up with $target_lsn in 60 s"; exit 1; }
        sleep 0.2
    done
done

# --- proxies ------------------------------------------------------------------------------------
start_causeway() {  # config log
    "$CAUSEWAY" --config "$1" 2>"$2" &
    CAUSEWAY_PID=$!
    local deadline=$((SECONDS + 30)) port=""
    # Ready when a read through the proxy is answered by a replica (the monitor has seen them).
    until [ -n "$port" ] && [ "$port" != "$PRIMARY_PORT" ]; do
        [ "$SECONDS" -lt "$deadline" ] || { say "causeway did not route a read to a replica within 30 s; log: $2"; tail -20 "$2" >&2; exit 1; }
        kill -0 "$CAUSEWAY_PID" 2>/dev/null || { say "causeway exited; log: $2"; tail -20 "$2" >&2; exit 1; }
        sleep 0.2
        port="$(PGPASSWORD=secret PGCONNECT_TIMEOUT=3 psql -X -At "$(app_conn "$PROXY_PORT")" -c 'SELECT inet_server_port()' 2>/dev/null || true)"
    done
}

POOL_DIR="$(mktemp -d /tmp/causeway-pgpool.XXXXXX)"
POOL_PORT="$(free_port)"
PCP_PORT="$(free_port)"
{
    echo "# Written by bench/compare-routing.sh"
    echo "backend_clustering_mode = 'streaming_replication'"
    pgpool_common_conf "$POOL_DIR" "$POOL_PORT" "$PCP_PORT" $((CLIENTS + 8))
    cat <<CONF
load_balance_mode = on
statement_level_load_balance = off
disable_load_balance_on_write = 'transaction'
sr_check_period = 1
sr_check_user = 'postgres'
sr_check_password = 'postgres'
sr_check_database = 'postgres'
delay_threshold = 16777216
CONF
    pgpool_backend_conf 0 "$PRIMARY_PORT" "$PGPOOL_PRIMARY_WEIGHT" primary
    pgpool_backend_conf 1 "$R1_PORT" 1 replica1
    pgpool_backend_conf 2 "$R2_PORT" 1 replica2
} >"$POOL_DIR/pgpool.conf"
pgpool_auth_files "$POOL_DIR"
if is_root; then chown -R postgres "$POOL_DIR"; fi

TICKS_PER_SECOND="$(getconf CLK_TCK)"

reset_statements() {
    local port
    for port in "${NODE_PORTS[@]}"; do su_sql "$port" "SELECT pg_stat_statements_reset()" >/dev/null; done
}
# Calls of pgbench's read on each node: "primary replica1 replica2".
node_reads() {
    local counts=() port
    for port in "${NODE_PORTS[@]}"; do
        counts+=("$(su_sql "$port" "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE 'SELECT abalance FROM pgbench_accounts%'")")
    done
    echo "${counts[*]}"
}

# run NAME PORT PID -> one result line
run_pgbench() {
    local name="$1" port="$2" pid="$3" before after output tps txns failed cpu reads p r1 r2
    reset_statements
    before="$(tree_ticks "$pid")"
    PGPASSWORD=secret run_waited "$WORK_DIR/pgbench.txt" timeout $((DURATION + 60)) pgbench -n -S -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$(app_conn "$port")" \
        || { say "pgbench through $name failed:"; tail -20 "$WORK_DIR/pgbench.txt" >&2; exit 1; }
    output="$(cat "$WORK_DIR/pgbench.txt")"
    after="$(tree_ticks "$pid")"
    reads="$(node_reads)"
    tps="$(echo "$output" | awk '/^tps/ {print $3; exit}')"
    txns="$(echo "$output" | awk '/number of transactions actually processed/ {print $6; exit}')"
    failed="$(echo "$output" | awk '/number of failed transactions/ {print $5; exit}')"
    cpu="$(python3 -c "print(round(($after-$before)/$TICKS_PER_SECOND*1e6/max($txns,1), 2))")"
    read -r p r1 r2 <<<"$reads"
    printf '%-9s tps=%-12s txns=%-9s failed=%-4s cpu_us_per_txn=%-7s reads_primary=%-8s reads_replica1=%-8s reads_replica2=%s\n' \
        "$name" "$tps" "$txns" "${failed:-0}" "$cpu" "$p" "$r1" "$r2" | tee -a "$AB_LOG"
}

# Reference without a proxy: half the clients straight to each replica at once (the same split a
# balancing proxy aims for). Shows the ceiling of this machine; no proxy CPU to report.
run_direct() {
    local half=$((CLIENTS / 2)) jobs=$(((THREADS + 1) / 2)) out1 out2 tps txns failed reads p r1 r2
    reset_statements
    out1="$WORK_DIR/direct1.txt"; out2="$WORK_DIR/direct2.txt"
    PGPASSWORD=secret timeout $((DURATION + 60)) pgbench -n -S -c "$half" -j "$jobs" -T "$DURATION" "$(app_conn "$R1_PORT")" >"$out1" 2>&1 &
    local pid1=$!
    PGPASSWORD=secret timeout $((DURATION + 60)) pgbench -n -S -c "$((CLIENTS - half))" -j "$jobs" -T "$DURATION" "$(app_conn "$R2_PORT")" >"$out2" 2>&1 &
    local pid2=$!
    RUNNING+=("$pid1" "$pid2")
    local rc=0
    wait "$pid1" || rc=1
    wait "$pid2" || rc=1
    forget "$pid1"; forget "$pid2"
    [ "$rc" = 0 ] || { say "direct pgbench failed:"; tail -5 "$out1" "$out2" >&2; exit 1; }
    reads="$(node_reads)"
    tps="$(cat "$out1" "$out2" | awk '/^tps/ {s += $3} END {printf "%.6f", s}')"
    txns="$(cat "$out1" "$out2" | awk '/number of transactions actually processed/ {s += $6} END {print s}')"
    failed="$(cat "$out1" "$out2" | awk '/number of failed transactions/ {s += $5} END {print s + 0}')"
    read -r p r1 r2 <<<"$reads"
    printf '%-9s tps=%-12s txns=%-9s failed=%-4s cpu_us_per_txn=%-7s reads_primary=%-8s reads_replica1=%-8s reads_replica2=%s\n' \
        direct "$tps" "$txns" "$failed" 0 "$p" "$r1" "$r2" | tee -a "$AB_LOG"
}

# --- part 1: pgbench -S, Causeway vs pgpool-II ------------------------------------------------------
AB_LOG="$WORK_DIR/ab.txt"; : >"$AB_LOG"
MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/^Mem:/ {print $2}') GiB; clients, proxies and servers share them"
VERSIONS="causeway $("$CAUSEWAY" --version 2>/dev/null | head -1); $("$PGPOOL" --version 2>&1 | head -1); $(pgbench --version)"
{
    echo "# bench/compare-routing.sh  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
    echo "# machine: $MACHINE"
    echo "# $VERSIONS"
} >"$RESULTS"

if [ "${SKIP_AB:-0}" != 1 ]; then
    start_causeway "$SANDBOX_DIR/causeway.toml" "$OUT/causeway-routing-$STAMP.log"
    start_pgpool "$OUT/pgpool-$STAMP.log"
    # Both must really check the password with SCRAM: the first message after the startup packet
    # is AuthenticationSASL (code 10), and a wrong password is refused.
    require_scram causeway "$PROXY_PORT"
    require_scram pgpool "$POOL_PORT"
    say "pgbench -S -c $CLIENTS -j $THREADS -T $DURATION, scale $SCALE, $ROUNDS rounds, causeway (port $PROXY_PORT) / pgpool (port $POOL_PORT) alternating"
    # Warm-up, not recorded: server caches, proxy connections, pgpool's relation cache.
    for port in "$PROXY_PORT" "$POOL_PORT"; do
        PGPASSWORD=secret run_waited "$WORK_DIR/warmup.txt" timeout $((WARMUP + 60)) pgbench -n -S -c "$CLIENTS" -j "$THREADS" -T "$WARMUP" "$(app_conn "$port")" \
            || { say "warm-up pgbench through port $port failed:"; tail -5 "$WORK_DIR/warmup.txt" >&2; exit 1; }
    done
    for _ in $(seq "$ROUNDS"); do
        run_pgbench causeway "$PROXY_PORT" "$CAUSEWAY_PID"
        run_pgbench pgpool "$POOL_PORT" "$POOL_PID"
        if [ "${DIRECT:-1}" = 1 ]; then run_direct; fi
    done
    stop_pgpool
    stop_causeway
    {
        echo
        echo "## Part 1: pgbench -S -c $CLIENTS -j $THREADS -T $DURATION, scale $SCALE, $ROUNDS rounds A/B alternating"
        echo "## pgpool: streaming_replication, load_balance_mode on, backend_weight primary=$PGPOOL_PRIMARY_WEIGHT replicas=1; both proxies: client auth scram-sha-256"
        cat "$AB_LOG"
        python3 - "$AB_LOG" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split()[1:])
    rows.setdefault(line.split()[0], []).append(f)
mean = lambda xs: sum(xs) / len(xs)
def summary(name):
    r = rows[name]
    tps = mean([float(x["tps"]) for x in r])
    cpu = mean([float(x["cpu_us_per_txn"]) for x in r])
    p = sum(int(x["reads_primary"]) for x in r)
    r1 = sum(int(x["reads_replica1"]) for x in r)
    r2 = sum(int(x["reads_replica2"]) for x in r)
    total = max(p + r1 + r2, 1)
    return tps, cpu, (r1 + r2) / total, p / total, r1 / total, r2 / total
c, g = summary("causeway"), summary("pgpool")
print()
print(f"{'':24}{'causeway':>12}{'pgpool':>12}{'ratio':>10}")
print(f"{'mean tps':24}{c[0]:>12.0f}{g[0]:>12.0f}{c[0]/g[0]:>10.2f}   (causeway/pgpool, target >= 2)")
if "direct" in rows:
    d = summary("direct")
    print(f"{'  share of direct tps':24}{c[0]/d[0]*100:>11.0f}%{g[0]/d[0]*100:>11.0f}%   (no proxy, clients split over the replicas: {d[0]:.0f} tps)")
print(f"{'proxy cpu us per txn':24}{c[1]:>12.2f}{g[1]:>12.2f}{c[1]/g[1]:>10.2f}   (causeway/pgpool)")
print(f"{'reads on replicas':24}{c[2]*100:>11.1f}%{g[2]*100:>11.1f}%")
print(f"{'  primary/r1/r2 split':24}{'%.0f/%.0f/%.0f%%' % (c[3]*100, c[4]*100, c[5]*100):>12}{'%.0f/%.0f/%.0f%%' % (g[3]*100, g[4]*100, g[5]*100):>12}")
PY
    } | tee -a "$RESULTS"
fi

# --- part 2: lag reaction ------------------------------------------------------------------------
if [ "${SKIP_LAG:-0}" != 1 ]; then
    LAG_CONFIG="$WORK_DIR/causeway-lag.toml"
    awk -v ms="$LAG_MAX_MS" '/^\[monitor\]$/ && !done { print "[routing]"; print "max_lag_ms = " ms; print ""; done = 1 } { print }' \
        "$SANDBOX_DIR/causeway.toml" >"$LAG_CONFIG"
    grep -q '^max_lag_ms' "$LAG_CONFIG" || { say "could not add [routing] to the generated config"; exit 1; }
    "$CAUSEWAY" check-config "$LAG_CONFIG" >/dev/null
    start_causeway "$LAG_CONFIG" "$OUT/causeway-lag-$STAMP.log"
    say "lag reaction: read load through causeway (max_lag_ms = $LAG_MAX_MS), writes on the primary"
    cat >"$WORK_DIR/lag.py" <<'PY'
# Lag reaction of the proxy. Readers record (kind, start, port) of every `SELECT inet_server_port()`
# they send through the proxy; the port says which server answered. Times are time.monotonic().
import sys, threading, time
import psycopg

import re, urllib.request
proxy, primary, r1, r2, metrics_port = (int(x) for x in sys.argv[1:6])
APP = "host=127.0.0.1 user=app password=secret dbname=app connect_timeout=5 port=%d"
SU = "host=127.0.0.1 user=postgres password=postgres dbname=app connect_timeout=5 port=%d"
PERSISTENT, RECONNECTING = 4, 2
names = {primary: "primary", r1: "replica1", r2: "replica2"}

stop = threading.Event()
records = []   # (kind, start, port, end); list.append is atomic under the GIL
errors = []

def persistent_reader():
    try:
        with psycopg.connect(APP % proxy, autocommit=True) as c:
            while not stop.is_set():
                t0 = time.monotonic()
                port = c.execute("SELECT inet_server_port()").fetchone()[0]
                records.append(("persistent", t0, port, time.monotonic()))
                time.sleep(0.002)
    except Exception as e:  # reported, never hidden
        errors.append(f"persistent reader: {e!r}")

def reconnecting_reader():
    try:
        while not stop.is_set():
            with psycopg.connect(APP % proxy, autocommit=True) as c:
                t0 = time.monotonic()
                port = c.execute("SELECT inet_server_port()").fetchone()[0]
                records.append(("new", t0, port, time.monotonic()))
    except Exception as e:
        errors.append(f"reconnecting reader: {e!r}")

def writer():
    try:
        with psycopg.connect(APP % primary, autocommit=True) as c:
            c.execute("CREATE TABLE IF NOT EXISTS cw_lag_ticks (t timestamptz NOT NULL DEFAULT now())")
            while not stop.is_set():
                c.execute("INSERT INTO cw_lag_ticks DEFAULT VALUES")
                time.sleep(0.005)
    except Exception as e:
        errors.append(f"writer: {e!r}")

samples = []  # (t, {metric{labels}: value}) from the proxy's /metrics, when it has one
def metrics_poller():
    pattern = re.compile(r'^(causeway_backend_lag_seconds|causeway_routing_decisions_total)\{([^}]*)\} (\S+)$', re.M)
    while not stop.is_set():
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).read().decode()
            samples.append((time.monotonic(), {f"{m}{{{l}}}": float(v) for m, l, v in pattern.findall(text)}))
        except Exception:
            if not samples:
                return   # no metrics endpoint: nothing to explain fallbacks with
        time.sleep(0.02)

def explain(t_from, t_to):
    """Routing decisions by reason, and the highest lag the proxy reported, between two times."""
    inside = [v for t, v in samples if t_from <= t <= t_to]
    if len(inside) < 2:
        return ""
    first, last = inside[0], inside[-1]
    reasons = {k.split('"')[1]: last[k] - first.get(k, 0) for k in last if k.startswith("causeway_routing_decisions_total")}
    lag = {}
    for v in inside:
        for k, x in v.items():
            if k.startswith("causeway_backend_lag_seconds") and "replica" in k:
                name = k.split('"')[1]
                lag[name] = max(lag.get(name, 0), x)
    return ("decisions " + ", ".join(f"{k}={v:.0f}" for k, v in reasons.items() if v) + "; max lag seen "
            + ", ".join(f"{k}={v * 1000:.0f} ms" for k, v in sorted(lag.items())))

def pause(su): su.execute("SELECT pg_wal_replay_pause()")
def resume(su): su.execute("SELECT pg_wal_replay_resume()")
def delay_on(su):
    su.execute("ALTER SYSTEM SET recovery_min_apply_delay = '1s'")
    su.execute("SELECT pg_reload_conf()")
def delay_off(su):
    su.execute("ALTER SYSTEM RESET recovery_min_apply_delay")
    su.execute("SELECT pg_reload_conf()")

def busiest_replica(since):
    counts = {r1: 0, r2: 0}
    for kind, t, port, _ in list(records):
        if kind == "persistent" and t >= since and port in counts:
            counts[port] += 1
    return max(counts, key=counts.get), counts

def scenario(name, fall_behind, release, hold=3.0, settle=3.0):
    t0 = time.monotonic()
    time.sleep(2.0)   # sessions settle
    target, warm = busiest_replica(t0)
    with psycopg.connect(SU % target, autocommit=True) as su:
        t_event = time.monotonic(); fall_behind(su); t_event_done = time.monotonic()
        time.sleep(hold)
        t_release = time.monotonic(); release(su); t_release_done = time.monotonic()
        time.sleep(settle)
    snap = list(records)
    on = lambda kind, lo, hi: [t for k, t, p, e in snap if p == target and k == kind and lo <= t < hi]
    # Held back: reads that began after the event and were answered before the release began.
    held = lambda kind: [t for k, t, p, e in snap if p == target and k == kind and t >= t_event_done and e < t_release]
    def last_after(kind):
        ts = held(kind)
        return (max(ts) - t_event_done) if ts else None
    def first_after(kind):
        ts = on(kind, t_release_done, t_release_done + settle)
        return (min(ts) - t_release_done) if ts else None
    before = [p for k, t, p, e in snap if t0 <= t < t_event]
    late = sum(1 for k in ("persistent", "new") for t in held(k) if t >= t_event_done + 1.0)
    last = [x for x in (last_after("persistent"), last_after("new")) if x is not None]
    on_primary = sorted(t - t_event_done for k, t, p, e in snap if p == primary and t0 <= t < t_release_done + settle)
    return dict(name=name, target=names[target], warm=warm,
                share_before=sum(1 for p in before if p == target) / max(len(before), 1),
                last=max(last) if last else None, last_p=last_after("persistent"), last_n=last_after("new"),
                late=late, first_n=first_after("new"), first_p=first_after("persistent"),
                on_primary=on_primary, release_at=t_release_done - t_event_done,
                why=explain(t0, t_release_done + settle))

threads = [threading.Thread(target=writer), threading.Thread(target=metrics_poller)]
threads += [threading.Thread(target=persistent_reader) for _ in range(PERSISTENT)]
threads += [threading.Thread(target=reconnecting_reader) for _ in range(RECONNECTING)]
for t in threads:
    t.start()
results = []
try:
    results.append(scenario("replay pause", pause, resume))
    results.append(scenario("apply delay 1s", delay_on, delay_off))
finally:
    stop.set()
    for t in threads:
        t.join(timeout=15)
    for port in (r1, r2):   # leave the replicas as they were, whatever happened
        try:
            with psycopg.connect(SU % port, autocommit=True) as su:
                resume(su); delay_off(su)
        except Exception as e:
            errors.append(f"restoring {names[port]}: {e!r}")

ms = lambda x: "never" if x is None else f"{x * 1000:.0f} ms"
by_server = {}
for k, t, p, e in records:
    by_server[names.get(p, p)] = by_server.get(names.get(p, p), 0) + 1
print(f"reads: {len(records)} ({sum(1 for r in records if r[0] == 'new')} on new sessions); by server: "
      + ", ".join(f"{k}={v}" for k, v in sorted(by_server.items())))
print(f"{'event':<16}{'replica':<10}{'share':>7}{'last read':>11}{'(persist.':>11}{'new)':>9}{'reads 1s+':>10}"
      f"{'first new':>11}{'first pers.':>13}")
for r in results:
    print(f"{r['name']:<16}{r['target']:<10}{r['share_before']*100:>6.0f}%{ms(r['last']):>11}{ms(r['last_p']):>11}"
          f"{ms(r['last_n']):>9}{r['late']:>10}{ms(r['first_n']):>11}{ms(r['first_p']):>13}")
    if r["on_primary"]:
        print(f"  {len(r['on_primary'])} read(s) fell back to the primary, at (ms from the event; release at "
              f"{r['release_at'] * 1000:.0f}): " + ", ".join(f"{x * 1000:.0f}" for x in r["on_primary"][:20]))
    if r["why"]:
        print(f"  proxy metrics over the scenario: {r['why']}")
print("share = the replica's share of all reads in the 2 s before the event; last read = from the event "
      "(the pause/ALTER call returning) to the start of the last read answered by that replica while it was "
      "held back (begun after the event, answered before the release call began); reads 1s+ = such reads begun "
      "1 s or more after the event; first new/pers. = from the "
      "release to the first read it answered on a new / a persistent session (sessions keep their replica "
      "while it stays eligible, so persistent sessions that moved need not come back).")
if errors:
    print("ERRORS:")
    for e in errors:
        print("  " + e)
    sys.exit(1)
PY
    LAG_OUT="$WORK_DIR/lag.txt"
    lag_rc=0
    run_waited "$LAG_OUT" timeout 120 "$PY" "$WORK_DIR/lag.py" "$PROXY_PORT" "$PRIMARY_PORT" "$R1_PORT" "$R2_PORT" "$METRICS_PORT" || lag_rc=$?
    stop_causeway
    {
        echo
        echo "## Part 2: lag reaction through causeway (max_lag_ms = $LAG_MAX_MS, monitor interval_ms = 100 default); 4 persistent + 2 reconnecting readers, writer on the primary every 5 ms"
        cat "$LAG_OUT"
    } | tee -a "$RESULTS"
    [ "$lag_rc" = 0 ] || say "lag test failed (exit $lag_rc)"
fi
say "results: $RESULTS"
