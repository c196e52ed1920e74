#!/usr/bin/env bash
# Side by side: direct PostgreSQL, Causeway (session and transaction mode), PgBouncer (session
# mode), PgBouncer (transaction mode) and pgpool-II, all in front of the same primary of a sandbox cluster, each driven by
# pgbench (-S, select only) and by causeway-bench (a verified read/write mix). Arms alternate
# within each round, and their order rotates from round to round, so drift on a shared machine
# hits all of them alike. Per run: tps, latency p50/p99 and the proxy's CPU per transaction (user
# + system time of its whole process tree from /proc: Causeway's threads, PgBouncer's process,
# pgpool's parent and children). Summary: tps ratios against direct PostgreSQL and against
# Causeway, latency, CPU per transaction; printed, and written as HTML + JSON by
# `causeway-bench compare-report`.
#
# Fairness: every proxy authenticates clients with SCRAM-SHA-256 (checked before measuring: the
# first answer to a startup packet is AuthenticationSASL and a wrong password is refused) and logs
# in to the server with SCRAM as app. PgBouncer session mode: default_pool_size 100 (no queueing
# at 16 clients); both transaction-mode arms (PgBouncer's and Causeway's): default_pool_size
# TXN_POOL_SIZE (20), so CLIENTS=200 measures 200 clients sharing 20 connections. pgpool-II: raw mode with the one server, connection_cache on, num_init_children =
# clients + 8, no health checks or failover. Causeway: the sandbox's generated config. A 2 s
# warm-up per arm is not recorded. pgbench's latencies come from its per-transaction log (-l,
# sampled at 5 %); causeway-bench's from its own HdrHistogram (all operations).
#
#   bench/compare.sh                                   # 2 rounds of 10 s per arm and tool, 16 clients, 2 threads
#   ROUNDS=3 DURATION=20 CLIENTS=32 bench/compare.sh
#   ARMS="causeway-transaction pgbouncer-transaction" TOOLS=pgbench CLIENTS=200 bench/compare.sh
#   CAUSEWAY_BIN=… CAUSEWAY_BENCH_BIN=… bench/compare.sh   # use these binaries, build nothing
#   CAUSEWAY_WORKERS=1 bench/compare.sh                # pin Causeway's worker threads
#   CAUSEWAY_BASELINE_BIN=/tmp/old/causeway ARMS="causeway-baseline causeway pgbouncer-session" \
#       bench/compare.sh                               # before/after a change, in one run
#   BENCH_ARGS="--read-percent 50 --protocol prepared" bench/compare.sh   # causeway-bench workload
#
# Everything runs on 127.0.0.1 and is stopped on exit (also on Ctrl-C). Results: printed, and in
# $OUT/compare-<date>.txt (measurements) and $OUT/compare-<date>/compare.{html,json}
# (OUT defaults to /tmp/causeway-bench-out). Benchmarks are never asserted in tests.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SAY_PREFIX=compare
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-16}"
THREADS="${THREADS:-2}"
SCALE="${SCALE:-10}"
WARMUP="${WARMUP:-2}"
ARMS="${ARMS:-direct causeway causeway-transaction pgbouncer-session pgbouncer-transaction pgpool}"
TXN_POOL_SIZE="${TXN_POOL_SIZE:-20}"
TOOLS="${TOOLS:-pgbench causeway-bench}"
BENCH_ARGS="${BENCH_ARGS:---protocol extended}"
SAMPLING="${SAMPLING:-0.05}"
OUT="${OUT:-/tmp/causeway-bench-out}"
mkdir -p "$OUT"
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$OUT/compare-$STAMP.txt"
REPORT_DIR="$OUT/compare-$STAMP"

# --- prerequisites ------------------------------------------------------------------------------
ensure_debian_package pgbouncer /usr/sbin/pgbouncer
ensure_debian_package pgpool2 /usr/sbin/pgpool
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
PGPOOL="$(command -v pgpool || echo /usr/sbin/pgpool)"
for tool in pgbench psql python3; do
    command -v "$tool" >/dev/null 2>&1 || { say "$tool is missing (scripts/install-deps.sh installs it)"; exit 1; }
done
cd "$ROOT"
if [ -z "${CAUSEWAY_BIN:-}" ] && [ "${SKIP_BUILD:-0}" != 1 ]; then swift build -c release --product causeway >/dev/null; fi
if [ -z "${CAUSEWAY_BENCH_BIN:-}" ] && [ "${SKIP_BUILD:-0}" != 1 ]; then swift build -c release --product causeway-bench >/dev/null; fi
CAUSEWAY="${CAUSEWAY_BIN:-$ROOT/.build/release/causeway}"
BENCH="${CAUSEWAY_BENCH_BIN:-$ROOT/.build/release/causeway-bench}"

# --- state and cleanup ----------------------------------------------------------------------------
SANDBOX_DIR=""; WORK_DIR=""; POOL_DIR=""
CAUSEWAY_PID=""
declare -A PID PORT BOUNCER_WRAPPER
RUN_AS=()
if is_root; then RUN_AS=(runuser -u postgres --); fi

cleanup() {
    local rc=$? arm
    trap - EXIT INT TERM
    stop_running
    stop_causeway
    local extra
    for extra in "${BASELINE_PID:-}" "${TRANSACTION_PID:-}"; do
        [ -n "$extra" ] || continue
        kill -INT "$extra" 2>/dev/null || true
        wait_gone "$extra" 15 || kill -KILL "$extra" 2>/dev/null || true
    done
    for arm in pgbouncer-session pgbouncer-transaction; do
        if [ -n "${PID[$arm]:-}" ]; then
            kill -TERM "${PID[$arm]}" 2>/dev/null || true
            wait_gone "${PID[$arm]}" 10 || kill -KILL "${PID[$arm]}" 2>/dev/null || true
        fi
        [ -n "${BOUNCER_WRAPPER[$arm]:-}" ] && wait "${BOUNCER_WRAPPER[$arm]}" 2>/dev/null || true
    done
    cleanup_servers
    exit "$rc"
}
trap_cleanup

app_conn() { echo "host=127.0.0.1 port=$1 user=app password=secret dbname=app"; }

# --- sandbox: one primary, no replicas (every arm talks to the same single server) --------------
SANDBOX_DIR="$(mktemp -d /tmp/causeway-compare.XXXXXX)"; rmdir "$SANDBOX_DIR"
WORK_DIR="$(mktemp -d /tmp/causeway-compare-work.XXXXXX)"
chmod 755 "$WORK_DIR"
say "sandbox up in $SANDBOX_DIR"
"$CAUSEWAY" sandbox up --dir "$SANDBOX_DIR" --replicas 0 >"$WORK_DIR/sandbox-up.log" 2>&1 \
    || { cat "$WORK_DIR/sandbox-up.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$SANDBOX_DIR/sandbox.env"
PGPASSWORD=secret run_waited "$WORK_DIR/pgbench-init.log" pgbench -i -q -s "$SCALE" "$(app_conn "$PRIMARY_PORT")" \
    || { cat "$WORK_DIR/pgbench-init.log" >&2; exit 1; }

# --- proxies --------------------------------------------------------------------------------------
PORT[direct]="$PRIMARY_PORT"; PID[direct]=""

PROXY_CONFIG="$SANDBOX_DIR/causeway.toml"
if [ -n "${CAUSEWAY_WORKERS:-}" ]; then
    PROXY_CONFIG="$WORK_DIR/causeway-workers.toml"
    sed "s/^\[proxy\]\$/[proxy]\nworkers = $CAUSEWAY_WORKERS/" "$SANDBOX_DIR/causeway.toml" | awk '!(/^workers = / && seen++)' >"$PROXY_CONFIG"
fi
"$CAUSEWAY" --config "$PROXY_CONFIG" 2>"$OUT/causeway-compare-$STAMP.log" &
CAUSEWAY_PID=$!
PORT[causeway]="$PROXY_PORT"; PID[causeway]="$CAUSEWAY_PID"
# Another Causeway build (an earlier commit), beside this one with the same configuration.
BASELINE_PID=""
if [ -n "${CAUSEWAY_BASELINE_BIN:-}" ]; then
    BASELINE_PORT="$(free_port)"
    sed "s/^listen = .*/listen = \"127.0.0.1:$BASELINE_PORT\"/; s/^metrics_listen = .*/metrics_listen = \"\"/" \
        "$PROXY_CONFIG" >"$WORK_DIR/causeway-baseline.toml"
    "$CAUSEWAY_BASELINE_BIN" --config "$WORK_DIR/causeway-baseline.toml" 2>"$OUT/causeway-baseline-$STAMP.log" &
    BASELINE_PID=$!
    PORT[causeway-baseline]="$BASELINE_PORT"; PID[causeway-baseline]="$BASELINE_PID"
fi

# The same Causeway in transaction mode, with the transaction arms' pool size.
TRANSACTION_PORT="$(free_port)"
sed "s/^listen = .*/listen = \"127.0.0.1:$TRANSACTION_PORT\"/; s/^metrics_listen = .*/metrics_listen = \"\"/" "$PROXY_CONFIG" \
    | sed "s/^\[proxy\]\$/[proxy]\npool_mode = \"transaction\"\ndefault_pool_size = $TXN_POOL_SIZE/" \
    | awk '!((/^pool_mode = / || /^default_pool_size = /) && seen[$1]++)' >"$WORK_DIR/causeway-transaction.toml"
"$CAUSEWAY" --config "$WORK_DIR/causeway-transaction.toml" 2>"$OUT/causeway-transaction-$STAMP.log" &
TRANSACTION_PID=$!
PORT[causeway-transaction]="$TRANSACTION_PORT"; PID[causeway-transaction]="$TRANSACTION_PID"

start_pgbouncer() {  # arm mode pool_size
    local arm="$1" mode="$2" dir port
    dir="$WORK_DIR/$arm"
    port="$(free_port)"
    write_pgbouncer_config "$dir" "$port" "$PRIMARY_PORT" "$mode" "$3"
    "${RUN_AS[@]}" "$PGBOUNCER" "$dir/pgbouncer.ini" >/dev/null 2>&1 &
    BOUNCER_WRAPPER[$arm]=$!
    local deadline=$((SECONDS + 20))
    until [ -s "$dir/pgbouncer.pid" ]; do
        [ "$SECONDS" -lt "$deadline" ] || { say "pgbouncer ($mode) did not start; log: $dir/pgbouncer.log"; exit 1; }
        sleep 0.1
    done
    PID[$arm]="$(tr -dc 0-9 <"$dir/pgbouncer.pid")"
    PORT[$arm]="$port"
}
start_pgbouncer pgbouncer-session session 100
start_pgbouncer pgbouncer-transaction transaction "$TXN_POOL_SIZE"

POOL_DIR="$(mktemp -d /tmp/causeway-pgpool.XXXXXX)"
POOL_PORT="$(free_port)"
{
    echo "# Written by bench/compare.sh"
    echo "backend_clustering_mode = 'raw'"
    pgpool_common_conf "$POOL_DIR" "$POOL_PORT" "$(free_port)" $((CLIENTS + 8))
    echo "load_balance_mode = off"
    pgpool_backend_conf 0 "$PRIMARY_PORT" 1 primary
} >"$POOL_DIR/pgpool.conf"
pgpool_auth_files "$POOL_DIR"
if is_root; then chown -R postgres "$POOL_DIR"; fi
start_pgpool "$OUT/pgpool-compare-$STAMP.log"
PORT[pgpool]="$POOL_PORT"; PID[pgpool]="$POOL_PID"

deadline=$((SECONDS + 30))
until PGPASSWORD=secret PGCONNECT_TIMEOUT=3 psql -X -At "$(app_conn "$PROXY_PORT")" -c 'SELECT 1' >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { say "causeway did not accept a login within 30 s"; tail -20 "$OUT/causeway-compare-$STAMP.log" >&2; exit 1; }
    sleep 0.2
done
for arm in $ARMS; do
    [ -n "${PORT[$arm]:-}" ] || { say "unknown arm $arm (known: direct causeway causeway-transaction pgbouncer-session pgbouncer-transaction pgpool, and causeway-baseline with CAUSEWAY_BASELINE_BIN)"; exit 1; }
    deadline=$((SECONDS + 30))
    until PGPASSWORD=secret PGCONNECT_TIMEOUT=3 psql -X -At "$(app_conn "${PORT[$arm]}")" -c 'SELECT 1' >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { say "$arm did not accept a login within 30 s"; exit 1; }
        sleep 0.2
    done
    [ "$arm" = direct ] || require_scram "$arm" "${PORT[$arm]}"
done

# --- measuring ------------------------------------------------------------------------------------
TICKS_PER_SECOND="$(getconf CLK_TCK)"
ticks() { if [ -n "$1" ]; then tree_ticks "$1"; else echo 0; fi; }
cpu_per_txn() {  # before after transactions (pid empty: no proxy)
    [ -n "$4" ] || { echo ""; return; }
    python3 -c "print(round(($2-$1)/$TICKS_PER_SECOND*1e6/max($3,1), 2))"
}

run_pgbench() {  # arm round
    local arm="$1" round="$2" port="${PORT[$1]}" pid="${PID[$1]}" before after out tps txns failed lat
    before="$(ticks "$pid")"
    PGPASSWORD=secret run_waited "$WORK_DIR/pgbench.txt" timeout $((DURATION + 60)) \
        pgbench -n -S -c "$CLIENTS" -j "$THREADS" -T "$DURATION" -l --sampling-rate "$SAMPLING" --log-prefix "$WORK_DIR/pgb" "$(app_conn "$port")" \
        || { say "pgbench through $arm failed:"; tail -20 "$WORK_DIR/pgbench.txt" >&2; exit 1; }
    after="$(ticks "$pid")"
    out="$(cat "$WORK_DIR/pgbench.txt")"
    tps="$(echo "$out" | awk '/^tps/ {print $3; exit}')"
    txns="$(echo "$out" | awk '/number of transactions actually processed/ {print $6; exit}')"
    failed="$(echo "$out" | awk '/number of failed transactions/ {print $5; exit}')"
    # Per-transaction log lines: client_id transaction_no time_us script_no time_epoch time_us.
    lat="$(python3 - "$WORK_DIR" <<'PY'
import glob, sys
times = sorted(int(line.split()[2]) for f in glob.glob(sys.argv[1] + "/pgb.*") for line in open(f) if line.strip())
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1000 if times else float("nan")
print(f"{pick(0.5):.3f} {pick(0.99):.3f}")
PY
)"
    rm -f "$WORK_DIR"/pgb.*
    printf 'arm=%s tool=pgbench round=%s tps=%s txns=%s failed=%s p50_ms=%s p99_ms=%s cpu_us=%s\n' \
        "$arm" "$round" "$tps" "$txns" "${failed:-0}" "${lat% *}" "${lat#* }" "$(cpu_per_txn "$before" "$after" "$txns" "$pid")" | tee -a "$RESULTS"
}

run_causeway_bench() {  # arm round
    local arm="$1" round="$2" port="${PORT[$1]}" pid="${PID[$1]}" before after fields dir="$WORK_DIR/cb-$1-$2"
    before="$(ticks "$pid")"
    # shellcheck disable=SC2086
    run_waited "$WORK_DIR/cb.txt" timeout $((DURATION + 60)) "$BENCH" run --quiet --no-lag-sampling --url "$(app_conn "$port")" \
        --clients "$CLIENTS" --threads "$THREADS" --duration "${DURATION}s" --table cwb_compare --out "$dir" $BENCH_ARGS \
        || { say "causeway-bench through $arm failed:"; tail -20 "$WORK_DIR/cb.txt" >&2; exit 1; }
    after="$(ticks "$pid")"
    fields="$(python3 - "$dir/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = r["totals"]
lat = next(l for l in r["latency"] if l["kind"] == "all")
print(t["operationsPerSecond"], t["operations"], t["errors"], lat["p50Ms"], lat["p99Ms"], t["staleReads"] + t["regressions"])
PY
)"
    local tps ops errors p50 p99 anomalies
    read -r tps ops errors p50 p99 anomalies <<<"$fields"
    [ "$anomalies" = 0 ] || say "causeway-bench through $arm saw $anomalies stale reads/regressions (one server: there should be none)"
    printf 'arm=%s tool=causeway-bench round=%s tps=%s txns=%s failed=%s p50_ms=%s p99_ms=%s cpu_us=%s\n' \
        "$arm" "$round" "$tps" "$ops" "$errors" "$p50" "$p99" "$(cpu_per_txn "$before" "$after" "$ops" "$pid")" | tee -a "$RESULTS"
}

{
    echo "# bench/compare.sh  $(date -u '+%Y-%m-%d %H:%M:%S UTC')  git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
    echo "setting rounds=$ROUNDS duration_s=$DURATION clients=$CLIENTS threads=$THREADS scale=$SCALE causeway_workers=${CAUSEWAY_WORKERS:-cores} cores=$(nproc) transaction_pool_size=$TXN_POOL_SIZE"
    echo "setting pgbench=-S causeway_bench=$(echo "$BENCH_ARGS" | tr ' ' '_')"
} >"$RESULTS"

say "warm-up: pgbench -S -T $WARMUP through every arm"
for arm in $ARMS; do
    PGPASSWORD=secret run_waited "$WORK_DIR/warmup.txt" timeout $((WARMUP + 60)) pgbench -n -S -c "$CLIENTS" -j "$THREADS" -T "$WARMUP" "$(app_conn "${PORT[$arm]}")" \
        || { say "warm-up through $arm failed:"; tail -5 "$WORK_DIR/warmup.txt" >&2; exit 1; }
done

read -r -a arm_list <<<"$ARMS"
for round in $(seq "$ROUNDS"); do
    # Rotate the order each round so no arm always runs first (or right after a heavy one).
    shift_by=$(( (round - 1) % ${#arm_list[@]} ))
    ordered=("${arm_list[@]:$shift_by}" "${arm_list[@]:0:$shift_by}")
    say "round $round/$ROUNDS: ${ordered[*]}"
    for arm in "${ordered[@]}"; do
        for tool in $TOOLS; do
            case "$tool" in
                pgbench) run_pgbench "$arm" "$round" ;;
                causeway-bench) run_causeway_bench "$arm" "$round" ;;
                *) say "unknown tool $tool (pgbench, causeway-bench)"; exit 1 ;;
            esac
        done
    done
done

echo
"$BENCH" compare-report "$RESULTS" --out "$REPORT_DIR"
say "measurements: $RESULTS"
