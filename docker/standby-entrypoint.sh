#!/bin/bash
# The standby: on its first start, clone the primary with pg_basebackup (a physical slot `standby`, WAL streamed,
# standby.signal and primary_conninfo written by -R); then run PostgreSQL as a hot standby.
set -euo pipefail

mkdir -p "$PGDATA" /var/lib/postgresql/tablespaces
chown postgres:postgres "$PGDATA" /var/lib/postgresql/tablespaces
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until gosu postgres pg_isready -h primary -U repl -d postgres; do sleep 1; done
  PGPASSWORD="$REPL_PASSWORD" gosu postgres pg_basebackup -h primary -U repl -D "$PGDATA" \
    --wal-method=stream --write-recovery-conf --create-slot --slot=standby --checkpoint=fast
fi
exec gosu postgres postgres -c hot_standby=on
