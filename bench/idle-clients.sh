#!/usr/bin/env bash
# Memory with many logged-in idle clients: a sandbox primary, Causeway in transaction mode (one
# worker) and PgBouncer in transaction mode beside it, CLIENTS psycopg connections opened to each
# (SCRAM logins, one query each so every client has used a server connection once, then idle).
# Prints each proxy's resident memory (VmRSS from /proc) before and with the clients, and the
# server connections the primary saw for them. Benchmarks are never asserted in tests.
#
#   bench/idle-clients.sh                      # 10,000 clients
#   CLIENTS=2000 bench/idle-clients.sh
#   CAUSEWAY_BIN=… bench/idle-clients.sh       # use this binary, build nothing
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SAY_PREFIX=idle-clients
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

CLIENTS="${CLIENTS:-10000}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
ensure_debian_package pgbouncer /usr/sbin/pgbouncer
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
[ -x "$PYTHON" ] || { say "$PYTHON is missing: make deps creates the venv with psycopg"; exit 1; }
cd "$ROOT"
if [ -z "${CAUSEWAY_BIN:-}" ]; then swift build -c release --product causeway >/dev/null; fi
CAUSEWAY="${CAUSEWAY_BIN:-$ROOT/.build/release/causeway}"

SANDBOX_DIR="$(mktemp -d /tmp/causeway-idle.XXXXXX)"; rmdir "$SANDBOX_DIR"
WORK_DIR="$(mktemp -d /tmp/causeway-idle-work.XXXXXX)"
chmod 755 "$WORK_DIR"
CAUSEWAY_PID=""; BOUNCER_PID=""
RUN_AS=()
if is_root; then RUN_AS=(runuser -u postgres --); fi
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_running
    [ -n "$CAUSEWAY_PID" ] && { kill -INT "$CAUSEWAY_PID" 2>/dev/null || true; wait_gone "$CAUSEWAY_PID" 20 || kill -KILL "$CAUSEWAY_PID" 2>/dev/null || true; }
    [ -n "$BOUNCER_PID" ] && { kill -TERM "$BOUNCER_PID" 2>/dev/null || true; wait_gone "$BOUNCER_PID" 10 || true; }
    "$CAUSEWAY" sandbox down --dir "$SANDBOX_DIR" >/dev/null 2>&1 || true
    rm -rf "$WORK_DIR"
    exit "$rc"
}
trap cleanup EXIT INT TERM

say "sandbox up in $SANDBOX_DIR"
"$CAUSEWAY" sandbox up --dir "$SANDBOX_DIR" --replicas 0 >"$WORK_DIR/sandbox-up.log" 2>&1 \
    || { cat "$WORK_DIR/sandbox-up.log" >&2; exit 1; }
# shellcheck disable=SC1091
source "$SANDBOX_DIR/sandbox.env"

CAUSEWAY_PORT="$(free_port)"
sed "s/^listen = .*/listen = \"127.0.0.1:$CAUSEWAY_PORT\"/; s/^metrics_listen = .*/metrics_listen = \"\"/" "$SANDBOX_DIR/causeway.toml" \
    | sed "s/^\[proxy\]\$/[proxy]\nworkers = 1\npool_mode = \"transaction\"\nmax_client_conn = $((CLIENTS + 100))/" \
    | awk '!((/^workers = / || /^pool_mode = / || /^max_client_conn = /) && seen[$1]++)' >"$WORK_DIR/causeway.toml"
"$CAUSEWAY" --config "$WORK_DIR/causeway.toml" 2>"$WORK_DIR/causeway.log" &
CAUSEWAY_PID=$!

BOUNCER_PORT="$(free_port)"
write_pgbouncer_config "$WORK_DIR/pgbouncer" "$BOUNCER_PORT" "$PRIMARY_PORT" transaction 20
sed -i "s/^max_client_conn = .*/max_client_conn = $((CLIENTS + 100))/" "$WORK_DIR/pgbouncer/pgbouncer.ini"
# PgBouncer keeps the soft open-file limit it is started with (Causeway raises its own).
"${RUN_AS[@]}" prlimit --nofile=$((CLIENTS + 1000)) "$PGBOUNCER" "$WORK_DIR/pgbouncer/pgbouncer.ini" >/dev/null 2>&1 &
deadline=$((SECONDS + 20))
until [ -s "$WORK_DIR/pgbouncer/pgbouncer.pid" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { say "pgbouncer did not start"; exit 1; }
    sleep 0.1
done
BOUNCER_PID="$(tr -dc 0-9 <"$WORK_DIR/pgbouncer/pgbouncer.pid")"
for port in "$CAUSEWAY_PORT" "$BOUNCER_PORT"; do
    deadline=$((SECONDS + 30))
    until PGPASSWORD=secret PGCONNECT_TIMEOUT=3 psql -X -At "host=127.0.0.1 port=$port user=app dbname=app" -c 'SELECT 1' >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { say "no login on port $port within 30 s"; exit 1; }
        sleep 0.2
    done
done

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

measure() {  # name port pid
    local before after
    before="$(rss_kb "$3")"
    "$PYTHON" - "$2" "$CLIENTS" "$PRIMARY_PORT" <<'PY' >"$WORK_DIR/clients-$1.txt" 2>&1 &
import asyncio, resource, sys
import psycopg
port, count, primary = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def main():
    gate = asyncio.Semaphore(200)
    async def one():
        async with gate:
            conn = await psycopg.AsyncConnection.connect(f"host=127.0.0.1 port={port} user=app password=secret dbname=app", autocommit=True)
            await conn.execute("select 1")
            return conn
    conns = await asyncio.gather(*(one() for _ in range(count)))
    with psycopg.connect(f"host=127.0.0.1 port={primary} user=postgres password=postgres dbname=postgres") as check:
        servers = check.execute("select count(*) from pg_stat_activity where usename = 'app'").fetchone()[0]
    print(f"open {len(conns)} servers {servers}", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
PY
    local pid=$! deadline=$((SECONDS + 600))
    RUNNING+=("$pid")
    until grep -q '^open ' "$WORK_DIR/clients-$1.txt" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || {
            say "the clients for $1 failed:"; tail -5 "$WORK_DIR/clients-$1.txt" >&2
            grep -E "ERROR|WARNING|FATAL" "$WORK_DIR/$1/$1.log" 2>/dev/null | tail -3 >&2 || true
            exit 1
        }
        [ "$SECONDS" -lt "$deadline" ] || { say "$CLIENTS clients did not log in to $1 within 600 s"; exit 1; }
        sleep 1
    done
    sleep 2
    after="$(rss_kb "$3")"
    printf '%-10s clients=%s rss_before_mb=%.1f rss_with_clients_mb=%.1f per_client_kb=%.1f %s\n' "$1" "$CLIENTS" \
        "$(echo "$before / 1024" | bc -l)" "$(echo "$after / 1024" | bc -l)" "$(echo "($after - $before) / $CLIENTS" | bc -l)" \
        "$(grep '^open ' "$WORK_DIR/clients-$1.txt" | sed 's/^open [0-9]* //; s/servers/server_connections=/; s/= /=/')"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget "$pid"
}

say "$CLIENTS idle clients through Causeway (transaction mode, one worker)"
measure causeway "$CAUSEWAY_PORT" "$CAUSEWAY_PID"
say "$CLIENTS idle clients through PgBouncer (transaction mode)"
measure pgbouncer "$BOUNCER_PORT" "$BOUNCER_PID"
