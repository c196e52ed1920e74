#!/usr/bin/env bash
# `make run`: a sandbox cluster (a primary and 2 streaming replicas) with the Causeway proxy in
# front of it. The proxy runs until Ctrl-C; then it is stopped and the sandbox removed.
#   CAUSEWAY_BIN (default .build/release/causeway), SANDBOX_DIR (default .sandbox),
#   SANDBOX_REPLICAS (default 2), SANDBOX_DELAY_MS (default 0) change the defaults.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${CAUSEWAY_BIN:-.build/release/causeway}
DIR=${SANDBOX_DIR:-.sandbox}
REPLICAS=${SANDBOX_REPLICAS:-2}
DELAY_MS=${SANDBOX_DELAY_MS:-0}

if [ ! -x "$BIN" ]; then
    echo "run-sandbox: $BIN not found; build it with 'make release'" >&2
    exit 1
fi

proxy_pid=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$proxy_pid" ] && kill -0 "$proxy_pid" 2>/dev/null; then
        echo "run-sandbox: stopping the proxy (pid $proxy_pid)"
        kill -TERM "$proxy_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$proxy_pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$proxy_pid" 2>/dev/null; then
            kill -KILL "$proxy_pid" 2>/dev/null || true
        fi
        wait "$proxy_pid" 2>/dev/null || true
    fi
    echo "run-sandbox: removing the sandbox in $DIR"
    "$BIN" sandbox down --dir "$DIR" || status=1
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts the cluster, or says it is already running.
"$BIN" sandbox up --dir "$DIR" --replicas "$REPLICAS" --delay-ms "$DELAY_MS"

# shellcheck source=/dev/null
. "$DIR/sandbox.env"

echo
echo "Causeway proxy on $HOST:$PROXY_PORT (config $CONFIG). Ctrl-C stops it and removes the sandbox."
echo "  through the proxy:  psql \"host=$HOST port=$PROXY_PORT user=app password=secret dbname=app\""
echo "  admin console:      psql \"host=$HOST port=$PROXY_PORT user=postgres password=postgres dbname=causeway\""
echo "  metrics:            curl http://$HOST:$METRICS_PORT/metrics"
echo "  primary (direct):   psql \"host=$HOST port=$PRIMARY_PORT user=app password=secret dbname=app\""
i=1
for port in $REPLICA_PORTS; do
    printf '  %-19s psql "host=%s port=%s user=app password=secret dbname=app"\n' "replica$i (direct):" "$HOST" "$port"
    i=$((i + 1))
done
echo

# In the background so this script keeps its Ctrl-C handler; the proxy's output still comes here.
"$BIN" --config "$CONFIG" &
proxy_pid=$!
wait "$proxy_pid"
