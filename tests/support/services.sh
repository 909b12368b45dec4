#!/usr/bin/env bash
# What the test suite needs from the system, installed from Debian packages when missing and we are
# root: systemd (for `systemd-analyze verify` of the unit file), chromium with chromium-driver (the
# dashboard's browser tests) and a PostgreSQL server, which this starts. Prints the server's URL on stdout (a role that may create databases and roles; the tests
# reach its superuser `selfloop_test_su` on the same server); a URL already in SELFLOOP_TEST_POSTGRES_URL
# is printed as is (bring your own server).
set -euo pipefail
log() { echo "services.sh: $*" >&2; }
if ! command -v systemd-analyze >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing systemd (for systemd-analyze) from Debian packages"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd) >&2
fi
# Headless Chromium and its WebDriver, for the dashboard's browser tests (Debian's packages: no browser download).
if ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } \
        && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium and chromium-driver from Debian packages (the dashboard's browser tests)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >&2
fi
if [ -n "${SELFLOOP_TEST_POSTGRES_URL:-}" ]; then echo "$SELFLOOP_TEST_POSTGRES_URL"; exit 0; fi
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing postgresql from Debian packages"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
    else
        log "no PostgreSQL server here (not root, or no apt-get): the PostgreSQL tests will skip"
        exit 0
    fi
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -q "^$version main$"; then
    pg_createcluster "$version" main >&2
fi
pg_ctlcluster "$version" main start >&2 2>/dev/null || true   # already running is fine
port=$(pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" {print $3}')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
for _ in $(seq 30); do as_pg psql -p "$port" -Atqc "SELECT 1" >/dev/null 2>&1 && break; sleep 1; done
as_pg psql -p "$port" -Atqc "SELECT 1 FROM pg_roles WHERE rolname = 'selfloop_test'" | grep -q 1 \
    || as_pg psql -p "$port" -qc "CREATE ROLE selfloop_test LOGIN PASSWORD 'selfloop_test'" >&2
# CREATEROLE: the tests create read-only roles (`selfloop db create-reader`) as the schema's owner.
as_pg psql -p "$port" -qc "ALTER ROLE selfloop_test CREATEDB CREATEROLE" >&2
# A superuser, for the tests that show user SQL refuses to run as one (COPY ... TO would write server files).
as_pg psql -p "$port" -Atqc "SELECT 1 FROM pg_roles WHERE rolname = 'selfloop_test_su'" | grep -q 1 \
    || as_pg psql -p "$port" -qc "CREATE ROLE selfloop_test_su LOGIN SUPERUSER PASSWORD 'selfloop_test_su'" >&2
as_pg psql -p "$port" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'selfloop_test'" | grep -q 1 \
    || as_pg psql -p "$port" -qc "CREATE DATABASE selfloop_test OWNER selfloop_test" >&2
echo "postgresql+psycopg://selfloop_test:selfloop_test@127.0.0.1:$port/selfloop_test"
