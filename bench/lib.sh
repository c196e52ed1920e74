# Shell helpers shared by bench/compare.sh and bench/compare-routing.sh. Source it after setting
# SAY_PREFIX; it defines functions only (and the RUNNING list).

say() { echo "${SAY_PREFIX:-bench}: $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }

# ensure_debian_package PACKAGE BINARY: installs PACKAGE when BINARY is missing (as root, with
# services kept from starting: a benchmark starts its own copy on its own ports).
ensure_debian_package() {
    local package="$1" binary="$2"
    if [ -x "$binary" ] || command -v "$(basename "$binary")" >/dev/null 2>&1; then return 0; fi
    if ! is_root; then
        say "$package is missing: sudo apt-get install $package (or run scripts/install-deps.sh as root)"; exit 1
    fi
    say "installing $package"
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package" >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$package" >/dev/null; }
    [ "$made_policy" = 1 ] && rm -f "$policy"
    if [ -d /run/systemd/system ]; then systemctl disable --now "$package" >/dev/null 2>&1 || true
    else service "$package" stop >/dev/null 2>&1 || true; update-rc.d "$package" disable >/dev/null 2>&1 || true; fi
}

wait_gone() {  # pid seconds: wait until the process is gone, bounded
    local pid="$1" deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    ! kill -0 "$pid" 2>/dev/null
}

# Long-running children run in the background and are waited for, so a signal's trap runs at once
# (bash defers traps while a foreground command runs); cleanup stops the ones still running.
RUNNING=()
run_waited() {  # outfile command...: exit status of the command
    local out="$1" pid rc=0
    shift
    "$@" >"$out" 2>&1 &
    pid=$!
    RUNNING+=("$pid")
    wait "$pid" || rc=$?
    forget "$pid"
    return "$rc"
}
forget() {  # pid: no longer running
    local kept=() p
    for p in "${RUNNING[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
    RUNNING=("${kept[@]}")
}
stop_running() {
    local pid
    for pid in "${RUNNING[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${RUNNING[@]}"; do wait "$pid" 2>/dev/null || true; done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# CPU ticks (user + system) of a process and all its descendants, plus what its reaped children
# used (cutime/cstime), so a pgpool child that exits mid-run is still counted.
tree_ticks() {
    python3 - "$1" <<'PY'
import os, sys
root = int(sys.argv[1])
procs = {}
for entry in os.listdir("/proc"):
    if not entry.isdigit():
        continue
    try:
        text = open(f"/proc/{entry}/stat").read()
    except OSError:
        continue
    rest = text[text.rfind(")") + 2:].split()
    procs[int(entry)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
children = {}
for pid, (ppid, _) in procs.items():
    children.setdefault(ppid, []).append(pid)
total, stack = 0, [root]
while stack:
    pid = stack.pop()
    if pid in procs:
        total += procs[pid][1]
        stack.extend(children.get(pid, []))
print(total)
PY
}

# require_scram NAME PORT: the proxy must ask for SCRAM-SHA-256 (its first answer to a startup
# packet is AuthenticationSASL) and refuse a wrong password; otherwise the comparison is unfair.
require_scram() {
    local name="$1" port="$2" method
    method="$(python3 - "$port" <<'PY'
import socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
body = struct.pack("!I", 196608) + b"user\0app\0database\0app\0\0"
s.sendall(struct.pack("!I", len(body) + 4) + body)
head = s.recv(9)
print({10: "scram-sha-256", 5: "md5", 3: "password", 0: "trust"}.get(struct.unpack("!I", head[5:9])[0], "other") if head[:1] == b"R" else "error")
PY
)"
    [ "$method" = scram-sha-256 ] || { say "$name asks for $method, not SCRAM: the comparison would not be fair"; exit 1; }
    if PGPASSWORD=wrong PGCONNECT_TIMEOUT=5 psql -X -At "host=127.0.0.1 port=$port user=app dbname=app" -c 'SELECT 1' >/dev/null 2>&1; then
        say "$name accepted a wrong password: its client authentication is not what this benchmark assumes"; exit 1
    fi
}

# pgpool_common_conf DIR PORT PCP_PORT CHILDREN: the pgpool.conf lines both scripts use (SCRAM
# for clients through pool_hba.conf + pool_passwd, a connection cache, no health checks or
# failover that could detach a node mid-benchmark, no query cache).
pgpool_common_conf() {
    cat <<CONF
listen_addresses = '127.0.0.1'
port = $2
socket_dir = '$1'
pcp_listen_addresses = ''
pcp_port = $3
pcp_socket_dir = '$1'
pid_file_name = '$1/pgpool.pid'
logdir = '$1'
enable_pool_hba = on
pool_passwd = '$1/pool_passwd'
num_init_children = $4
max_pool = 4
child_life_time = 0
child_max_connections = 0
connection_life_time = 0
client_idle_limit = 0
connection_cache = on
health_check_period = 0
failover_on_backend_error = off
use_watchdog = off
memory_cache_enabled = off
log_destination = 'stderr'
logging_collector = off
log_min_messages = warning
CONF
}

pgpool_backend_conf() {  # index port weight name
    cat <<CONF
backend_hostname$1 = '127.0.0.1'
backend_port$1 = $2
backend_weight$1 = $3
backend_flag$1 = 'ALLOW_TO_FAILOVER'
backend_application_name$1 = '$4'
CONF
}

# pgpool_auth_files DIR: client auth files for pgpool (SCRAM, app/secret and postgres/postgres).
pgpool_auth_files() {
    printf 'host all all 127.0.0.1/32 scram-sha-256\n' >"$1/pool_hba.conf"
    printf 'app:TEXTsecret\npostgres:TEXTpostgres\n' >"$1/pool_passwd"
    : >"$1/pcp.conf"
    chmod 600 "$1/pool_passwd"
}

# pgpool runs in the foreground (-n) under a wrapper pid; POOL_DIR, POOL_PORT, PGPOOL and RUN_AS
# say which and how; POOL_PID (from its pid file) is the process tree to measure.
POOL_PID=""; POOL_WRAPPER_PID=""
start_pgpool() {  # logfile
    local log="$1" deadline=$((SECONDS + 30))
    "${RUN_AS[@]}" "$PGPOOL" -n -D -f "$POOL_DIR/pgpool.conf" -F "$POOL_DIR/pcp.conf" -a "$POOL_DIR/pool_hba.conf" >"$log" 2>&1 &
    POOL_WRAPPER_PID=$!
    until [ -s "$POOL_DIR/pgpool.pid" ] \
        && PGPASSWORD=secret PGCONNECT_TIMEOUT=3 psql -X -At "host=127.0.0.1 port=$POOL_PORT user=app dbname=app" -c 'SELECT 1' >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { say "pgpool did not accept a login within 30 s; log: $log"; tail -20 "$log" >&2; exit 1; }
        kill -0 "$POOL_WRAPPER_PID" 2>/dev/null || { say "pgpool exited; log: $log"; tail -20 "$log" >&2; exit 1; }
        sleep 0.2
    done
    POOL_PID="$(tr -dc 0-9 <"$POOL_DIR/pgpool.pid")"
}
stop_pgpool() {
    if [ -z "$POOL_PID" ] && [ -n "$POOL_DIR" ] && [ -s "$POOL_DIR/pgpool.pid" ]; then
        POOL_PID="$(tr -dc 0-9 <"$POOL_DIR/pgpool.pid")"
    fi
    if [ -n "$POOL_DIR" ] && [ -f "$POOL_DIR/pgpool.conf" ] && [ -n "$POOL_PID" ]; then
        timeout 20 "${RUN_AS[@]}" "$PGPOOL" -f "$POOL_DIR/pgpool.conf" -m fast stop >/dev/null 2>&1 || true
        wait_gone "$POOL_PID" 10 || kill -KILL "$POOL_PID" 2>/dev/null || true
    fi
    if [ -n "$POOL_WRAPPER_PID" ]; then
        wait_gone "$POOL_WRAPPER_PID" 5 || kill -TERM "$POOL_WRAPPER_PID" 2>/dev/null || true
        wait "$POOL_WRAPPER_PID" 2>/dev/null || true
    fi
    POOL_PID=""; POOL_WRAPPER_PID=""
}

stop_causeway() {  # CAUSEWAY_PID: SIGINT (immediate), bounded, then SIGKILL
    [ -n "${CAUSEWAY_PID:-}" ] || return 0
    kill -INT "$CAUSEWAY_PID" 2>/dev/null || true
    wait_gone "$CAUSEWAY_PID" 15 || kill -KILL "$CAUSEWAY_PID" 2>/dev/null || true
    wait "$CAUSEWAY_PID" 2>/dev/null || true
    CAUSEWAY_PID=""
}

# The end of both scripts' cleanup: pgpool, the sandbox (CAUSEWAY, SANDBOX_DIR) and the
# temporary directories (POOL_DIR, WORK_DIR).
cleanup_servers() {
    stop_pgpool
    if [ -n "$SANDBOX_DIR" ] && [ -e "$SANDBOX_DIR" ]; then "$CAUSEWAY" sandbox down --dir "$SANDBOX_DIR" >/dev/null 2>&1 || say "sandbox down failed for $SANDBOX_DIR"; fi
    [ -n "$POOL_DIR" ] && rm -rf "$POOL_DIR"
    [ -n "$WORK_DIR" ] && rm -rf "$WORK_DIR"
    return 0
}

# cleanup (the caller's function) runs on exit; signals exit with 128 + their number, through it.
trap_cleanup() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# write_pgbouncer_config DIR PORT SERVER_PORT MODE POOL_SIZE: DIR/pgbouncer.ini and userlist.txt
# for PgBouncer on 127.0.0.1:PORT in front of database app on SERVER_PORT, authenticating user app
# (password secret) with SCRAM; logfile and pidfile in DIR, owned by postgres when run as root.
write_pgbouncer_config() {
    local dir="$1" port="$2" server_port="$3" mode="$4" pool_size="$5"
    mkdir -p "$dir"
    cat >"$dir/pgbouncer.ini" <<INI
[databases]
app = host=127.0.0.1 port=$server_port dbname=app
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = $mode
max_client_conn = 1000
default_pool_size = $pool_size
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
    echo '"app" "secret"' >"$dir/userlist.txt"
    if is_root; then chown -R postgres "$dir"; fi
}
