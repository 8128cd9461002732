#!/bin/bash
# First start of the primary (run by the postgres image's entrypoint, as user postgres): the replication role
# pgkeep and the standby use, a tablespace on its own volume, and replication access in pg_hba.conf.
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v repl_password="$REPL_PASSWORD" <<'SQL'
CREATE ROLE repl WITH REPLICATION LOGIN PASSWORD :'repl_password';
CREATE TABLESPACE ts1 LOCATION '/var/lib/postgresql/tablespaces/ts1';
SQL

echo "host replication repl all scram-sha-256" >> "$PGDATA/pg_hba.conf"
