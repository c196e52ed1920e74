#!/usr/bin/env bash
# A figure that does not move with the machine's load: the proxy's user-space instructions per
# transaction (valgrind --tool=callgrind) and its system calls per transaction (strace -c -f), for
# Causeway and PgBouncer (session mode) in front of the same PostgreSQL, driven by pgbench -S with
# one client. Each figure is the difference between a run of N2 and a run of N1 transactions,
# divided by N2 - N1, so start-up, logins and shutdown cancel out.
#
# Arms:
#   causeway           one primary, no replicas (every read goes to the primary)
#   causeway-replica   a primary and one replica (reads go to the replica, with lag checks)
#   pgbouncer          PgBouncer in session mode
#   causeway-transaction, pgbouncer-transaction   the same in transaction mode (pool size 20)
# Causeway runs with workers = 1 (PgBouncer is single-threaded).
#
#   bench/instructions.sh
#   ARMS="causeway pgbouncer" MODES=extended bench/instructions.sh
#   CAUSEWAY_BIN=/tmp/old/causeway bench/instructions.sh      # measure another build
#   N1=500 N2=2500 bench/instructions.sh                       # the defaults
#
# Results are printed and written to $OUT/instructions-<date>.txt (OUT defaults to
# /tmp/causeway-bench-out). Benchmarks are never asserted in tests.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SAY_PREFIX=instructions
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

ARMS="${ARMS:-causeway causeway-replica pgbouncer}"
MODES="${MODES:-simple extended}"
N1="${N1:-500}"
N2="${N2:-2500}"
OUT="${OUT:-/tmp/causeway-bench-out}"
mkdir -p "$OUT"
RESULTS="$OUT/instructions-$(date +%Y%m%d-%H%M%S).txt"

ensure_debian_package valgrind /usr/bin/valgrind
ensure_debian_package strace /usr/bin/strace
ensure_debian_package pgbouncer /usr/sbin/pgbouncer
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
cd "$ROOT"
if [ -z "${CAUSEWAY_BIN:-}" ]; then swift build -c release --product causeway >/dev/null; fi
CAUSEWAY="${CAUSEWAY_BIN:-$ROOT/.build/release/causeway}"

WORK_DIR="$(mktemp -d /tmp/causeway-instructions.XXXXXX)"
chmod 755 "$WORK_DIR"
SANDBOXES=()
PROXY_PID=""
RUN_AS=()
if is_root; then RUN_AS=(runuser -u postgres --); fi

cleanup() {
    local rc=$? dir
    trap - EXIT INT TERM
    stop_proxy
    for dir in "${SANDBOXES[@]}"; do "$CAUSEWAY" sandbox down --dir "$dir" >/dev/null 2>&1 || true; done
    rm -rf "$WORK_DIR"
    exit "$rc"
}
trap cleanup EXIT INT TERM

stop_proxy() {
    [ -n "$PROXY_PID" ] || return 0
    # The proxy itself is the innermost process (under runuser and strace, which must see it
    # exit to write their figures): it gets the SIGINT.
    local leaf="$PROXY_PID" child
    while child="$(pgrep -P "$leaf" | head -1)" && [ -n "$child" ]; do leaf="$child"; done
    kill -INT "$leaf" 2>/dev/null || true
    wait_gone "$PROXY_PID" 60 || kill -KILL "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
    PROXY_PID=""
}

# valgrind 3.19 cannot read the DWARF 5 debug information Swift 6 writes: measure a copy without it.
strip --strip-debug -o "$WORK_DIR/causeway" "$CAUSEWAY"

# sandbox name replicas variable: a sandbox cluster with pgbench's tables; its directory goes in
# the variable (not printed: a command substitution's subshell would keep SANDBOXES to itself,
# and cleanup would leave the cluster running)
sandbox() {
    local dir
    dir="$(mktemp -d "/tmp/causeway-instructions-$1.XXXXXX")"; rmdir "$dir"
    SANDBOXES+=("$dir")
    "$CAUSEWAY" sandbox up --dir "$dir" --replicas "$2" >"$WORK_DIR/sandbox-$1.log" 2>&1 \
        || { cat "$WORK_DIR/sandbox-$1.log" >&2; exit 1; }
    # shellcheck disable=SC1091
    (source "$dir/sandbox.env"
     PGPASSWORD=secret pgbench -i -q -s 1 "host=127.0.0.1 port=$PRIMARY_PORT user=app dbname=app" >/dev/null 2>&1)
    printf -v "$3" '%s' "$dir"
}

causeway_config() {  # sandbox port [pool_mode]: the sandbox's configuration, one worker, on its own port
    sed "s/^listen = .*/listen = \"127.0.0.1:$2\"/; s/^metrics_listen = .*/metrics_listen = \"\"/; s/^\[proxy\]\$/[proxy]\nworkers = 1\npool_mode = \"${3:-session}\"/" \
        "$1/causeway.toml" | awk '!((/^workers = / || /^pool_mode = /) && seen[$1]++)' >"$WORK_DIR/causeway-$2.toml"
    echo "$WORK_DIR/causeway-$2.toml"
}

pgbouncer_config() {  # sandbox port [pool_mode]: prints the ini's path
    local dir="$WORK_DIR/pgbouncer-$2"
    write_pgbouncer_config "$dir" "$2" "$(. "$1/sandbox.env"; echo "$PRIMARY_PORT")" "${3:-session}" 20
    echo "$dir/pgbouncer.ini"
}

# start_proxy arm tool port output: the arm's proxy under valgrind or strace, ready for logins
start_proxy() {
    local arm="$1" tool="$2" port="$3" output="$4" config command=()
    case "$tool" in
        callgrind) command=(valgrind --tool=callgrind "--callgrind-out-file=$output") ;;
        strace) command=(strace -c -f -o "$output") ;;
    esac
    case "$arm" in
        causeway) config="$(causeway_config "$PLAIN" "$port")"; "${command[@]}" "$WORK_DIR/causeway" --config "$config" 2>/dev/null & ;;
        causeway-replica) config="$(causeway_config "$REPLICATED" "$port")"; "${command[@]}" "$WORK_DIR/causeway" --config "$config" 2>/dev/null & ;;
        causeway-transaction) config="$(causeway_config "$PLAIN" "$port" transaction)"; "${command[@]}" "$WORK_DIR/causeway" --config "$config" 2>/dev/null & ;;
        pgbouncer) config="$(pgbouncer_config "$PLAIN" "$port")"; "${RUN_AS[@]}" "${command[@]}" "$PGBOUNCER" "$config" 2>/dev/null & ;;
        pgbouncer-transaction) config="$(pgbouncer_config "$PLAIN" "$port" transaction)"; "${RUN_AS[@]}" "${command[@]}" "$PGBOUNCER" "$config" 2>/dev/null & ;;
        *) say "unknown arm $arm (known: causeway causeway-replica causeway-transaction pgbouncer pgbouncer-transaction)"; exit 1 ;;
    esac
    PROXY_PID=$!
    local deadline=$((SECONDS + 120))
    until PGPASSWORD=secret PGCONNECT_TIMEOUT=5 psql -X -At "host=127.0.0.1 port=$port user=app dbname=app" -c 'SELECT 1' >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { say "$arm did not accept a login under $tool"; exit 1; }
        sleep 0.5
    done
}

# measure arm tool mode transactions: the tool's total for one run of that many transactions
measure() {
    local arm="$1" tool="$2" mode="$3" count="$4" port output
    port="$(free_port)"
    output="$WORK_DIR/$arm-$tool-$mode-$count.out"
    rm -f "$output"
    touch "$output"; chmod 666 "$output"
    start_proxy "$arm" "$tool" "$port" "$output"
    PGPASSWORD=secret pgbench -n -S -M "$mode" -c 1 -t "$count" "host=127.0.0.1 port=$port user=app dbname=app" \
        >"$WORK_DIR/pgbench.log" 2>&1 || { cat "$WORK_DIR/pgbench.log" >&2; exit 1; }
    stop_proxy
    case "$tool" in
        callgrind) awk '/^summary:/ {print $2; exit}' "$output" ;;
        strace) awk '$NF == "total" {print $4; exit}' "$output" ;;
    esac
}

say "sandboxes up"
PLAIN=""
REPLICATED=""
sandbox plain 0 PLAIN
case " $ARMS " in *" causeway-replica "*) sandbox replicated 1 REPLICATED ;; esac

{
    echo "pgbench -S, 1 client; per transaction: (run of $N2 - run of $N1) / $((N2 - N1)); causeway with workers = 1"
    printf '%-18s %-9s %14s %14s\n' arm mode instructions syscalls
} | tee "$RESULTS"
for mode in $MODES; do
    for arm in $ARMS; do
        say "$arm, $mode protocol"
        a="$(measure "$arm" callgrind "$mode" "$N1")"; b="$(measure "$arm" callgrind "$mode" "$N2")"
        c="$(measure "$arm" strace "$mode" "$N1")"; d="$(measure "$arm" strace "$mode" "$N2")"
        printf '%-18s %-9s %14d %14.1f\n' "$arm" "$mode" $(((b - a) / (N2 - N1))) \
            "$(python3 -c "print(($d - $c) / ($N2 - $N1))")" | tee -a "$RESULTS"
    done
done
say "results: $RESULTS"
