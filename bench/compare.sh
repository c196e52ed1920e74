#!/usr/bin/env bash
# Side-by-side throughput and CPU comparison: pgbench -S through Causeway and through PgBouncer
# (session mode), against the same primary of a sandbox cluster, alternating A/B/A/B so drift on a
# shared machine hits both equally. Prints tps, the tps ratio and proxy CPU per transaction.
#
#   bench/compare.sh                      # 2 rounds of 20 s each, 16 clients, 2 threads
#   ROUNDS=3 DURATION=30 CLIENTS=32 bench/compare.sh
#   SANDBOX_DIR=.sandbox bench/compare.sh  # reuse a running sandbox instead of starting one
#   CAUSEWAY_WORKERS=1 bench/compare.sh    # pin Causeway's worker threads (default: one per core)
#
# Benchmarks are never asserted in tests; this script only reports.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-20}"
CLIENTS="${CLIENTS:-16}"
THREADS="${THREADS:-2}"
SCALE="${SCALE:-10}"
OUT="${OUT:-/tmp/causeway-bench-out}"
mkdir -p "$OUT"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need pgbouncer && [ ! -x /usr/sbin/pgbouncer ]; then
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pgbouncer >/dev/null
        systemctl disable --now pgbouncer >/dev/null 2>&1 || service pgbouncer stop >/dev/null 2>&1 || true
    else
        echo "pgbouncer is missing: sudo apt-get install pgbouncer" >&2; exit 1
    fi
fi
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"

cd "$ROOT"
swift build -c release --product causeway >/dev/null
CAUSEWAY="$ROOT/.build/release/causeway"

OWN_SANDBOX=0
if [ -z "${SANDBOX_DIR:-}" ]; then
    SANDBOX_DIR="$(mktemp -d /tmp/causeway-bench.XXXXXX)"
    rmdir "$SANDBOX_DIR"
    "$CAUSEWAY" sandbox up --dir "$SANDBOX_DIR" --replicas 0 >/dev/null
    OWN_SANDBOX=1
fi
# shellcheck disable=SC1091
source "$SANDBOX_DIR/sandbox.env"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BOUNCER_PORT="$(free_port)"
BOUNCER_DIR="$(mktemp -d /tmp/causeway-pgbouncer.XXXXXX)"
cat > "$BOUNCER_DIR/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$PRIMARY_PORT dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $BOUNCER_DIR/userlist.txt
pool_mode = session
max_client_conn = 1000
default_pool_size = 100
logfile = $BOUNCER_DIR/pgbouncer.log
pidfile = $BOUNCER_DIR/pgbouncer.pid
INI
echo '"app" "secret"' > "$BOUNCER_DIR/userlist.txt"
RUN_AS=()
if [ "$(id -u)" = 0 ]; then chown -R postgres "$BOUNCER_DIR"; RUN_AS=(runuser -u postgres --); fi

PROXY_LOG="$OUT/causeway.log"
PROXY_CONFIG="$SANDBOX_DIR/causeway.toml"
if [ -n "${CAUSEWAY_WORKERS:-}" ]; then
    PROXY_CONFIG="$OUT/causeway-workers.toml"
    sed "s/^\[proxy\]\$/[proxy]\nworkers = $CAUSEWAY_WORKERS/" "$SANDBOX_DIR/causeway.toml" | awk '!(/^workers = / && seen++)' > "$PROXY_CONFIG"
fi
"$CAUSEWAY" --config "$PROXY_CONFIG" 2>"$PROXY_LOG" &
CAUSEWAY_PID=$!
"${RUN_AS[@]}" "$PGBOUNCER" "$BOUNCER_DIR/pgbouncer.ini" >/dev/null 2>&1 &
sleep 1
BOUNCER_PID="$(cat "$BOUNCER_DIR/pgbouncer.pid")"

cleanup() {
    kill -INT "$CAUSEWAY_PID" 2>/dev/null || true
    kill "$BOUNCER_PID" 2>/dev/null || true
    wait "$CAUSEWAY_PID" 2>/dev/null || true
    rm -rf "$BOUNCER_DIR"
    if [ "$OWN_SANDBOX" = 1 ]; then "$CAUSEWAY" sandbox down --dir "$SANDBOX_DIR" >/dev/null || true; fi
}
trap cleanup EXIT

export PGPASSWORD=secret
conn() { echo "host=127.0.0.1 port=$1 user=app dbname=app"; }
pgbench -i -q -s "$SCALE" "$(conn "$PRIMARY_PORT")" >/dev/null 2>&1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS_PER_SECOND="$(getconf CLK_TCK)"

# run NAME PORT PID -> appends "name tps cpu_us_per_txn" to results
RESULTS="$OUT/compare-$(date +%Y%m%d-%H%M%S).txt"
run() {
    local name="$1" port="$2" pid="$3"
    local before after output tps txns cpu
    before="$(cpu_ticks "$pid")"
    output="$(pgbench -n -S -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$(conn "$port")" 2>&1)"
    after="$(cpu_ticks "$pid")"
    tps="$(echo "$output" | awk '/^tps/ {print $3; exit}')"
    txns="$(echo "$output" | awk '/number of transactions actually processed/ {print $6; exit}')"
    failed="$(echo "$output" | awk '/number of failed transactions/ {print $5; exit}')"
    cpu="$(python3 -c "print(round(($after-$before)/$TICKS_PER_SECOND*1e6/max($txns,1), 2))")"
    printf '%-10s tps=%-12s txns=%-9s failed=%-4s cpu_us_per_txn=%s\n' "$name" "$tps" "$txns" "${failed:-0}" "$cpu" | tee -a "$RESULTS"
}

echo "pgbench -S -c $CLIENTS -j $THREADS -T $DURATION, scale $SCALE, $ROUNDS rounds (A/B alternating), causeway workers: ${CAUSEWAY_WORKERS:-default (one per core)}" | tee "$RESULTS"
for round in $(seq "$ROUNDS"); do
    run causeway "$PROXY_PORT" "$CAUSEWAY_PID"
    run pgbouncer "$BOUNCER_PORT" "$BOUNCER_PID"
done

python3 - "$RESULTS" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r'(\S+)\s+tps=(\S+)\s+txns=\S+\s+failed=\S+\s+cpu_us_per_txn=(\S+)', line)
    if m:
        rows.setdefault(m.group(1), []).append((float(m.group(2)), float(m.group(3))))
mean = lambda xs: sum(xs) / len(xs)
c, b = rows["causeway"], rows["pgbouncer"]
ct, bt = mean([r[0] for r in c]), mean([r[0] for r in b])
cc, bc = mean([r[1] for r in c]), mean([r[1] for r in b])
print(f"\nmean tps:          causeway {ct:.0f}   pgbouncer {bt:.0f}   ratio {ct/bt:.3f} (target >= 0.95)")
print(f"cpu us per txn:    causeway {cc:.2f}   pgbouncer {bc:.2f}   ratio {cc/bc:.3f} (target <= 1.2)")
PY
echo "results: $RESULTS"
