# shellcheck shell=bash
# A private PostgreSQL cluster for benchmarks, sourced by scripts/bench-*.
#
# private_postgres_start: initdb in a new temporary directory PG_DIR (as the `postgres` user via runuser when root:
# initdb refuses root, as in tests/common/postgres.rs), a server on 127.0.0.1 and a free port
# with its Unix socket in DIR, database `venuetrace_bench`; sets PG_URL (postgres://...) and
# PG_ADMIN_URL. private_postgres_stop stops it and removes PG_DIR: call it from the caller's
# EXIT trap.
#
# Durability is PostgreSQL's DEFAULT (fsync on, synchronous_commit on, full_page_writes on):
# benchmarks measure what production would commit. Unlike the tests (fsync off). Only
# shared_buffers is raised (default 128MB -> 1GB) and max_wal_size (1GB -> 4GB, fewer
# checkpoints during a bulk load); both are ordinary production settings.
# Installs nothing: scripts/test installs the `postgresql` package.

private_postgres_bin() {
    local best="" v
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] || continue
        v=$(basename "$(dirname "$d")")
        if [ -z "$best" ] || [ "$v" -gt "$(basename "$(dirname "$best")")" ]; then best=$d; fi
    done
    if [ -z "$best" ]; then
        echo "private-postgres: no /usr/lib/postgresql/*/bin/initdb: install the postgresql package (scripts/test does)" >&2
        return 1
    fi
    echo "$best"
}

private_postgres_run() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

private_postgres_start() {
    PG_BIN=$(private_postgres_bin)
    PG_DIR=$(mktemp -d)
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$PG_DIR"; fi
    private_postgres_run "$PG_BIN/initdb" -D "$PG_DIR/pg" --auth=trust -U postgres -E UTF8 \
        --locale=C >"$PG_DIR/initdb.log" 2>&1 || {
        cat "$PG_DIR/initdb.log" >&2
        return 1
    }
    PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    private_postgres_run "$PG_BIN/pg_ctl" start -w -D "$PG_DIR/pg" -l "$PG_DIR/server.log" \
        -o "-k $PG_DIR -p $PG_PORT -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_wal_size=4GB" \
        >/dev/null || {
        cat "$PG_DIR/server.log" >&2
        return 1
    }
    PG_STARTED=1
    private_postgres_run "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAt \
        -c "CREATE DATABASE venuetrace_bench" >/dev/null
    PG_ADMIN_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/venuetrace_bench"
    echo "private-postgres: $("$PG_BIN/postgres" --version), fsync on, synchronous_commit on, shared_buffers=1GB, max_wal_size=4GB: $PG_URL" >&2
}

# A fresh, empty benchmark database (between runs in one script).
private_postgres_reset() {
    private_postgres_run "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qAt \
        -c "DROP DATABASE IF EXISTS venuetrace_bench WITH (FORCE)" \
        -c "CREATE DATABASE venuetrace_bench" >/dev/null
}

private_postgres_stop() {
    if [ -n "${PG_STARTED:-}" ]; then
        private_postgres_run "$PG_BIN/pg_ctl" stop -m fast -D "$PG_DIR/pg" >/dev/null 2>&1 || true
        PG_STARTED=
    fi
    if [ -n "${PG_DIR:-}" ]; then rm -rf "$PG_DIR"; fi
}
