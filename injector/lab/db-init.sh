#!/usr/bin/env bash
# Create the lab's PostgreSQL cluster: initdb as user postgres, our generated config, the seeded table.
# Shared by the netns lab (injector/lab/netlab.py runs it for every `lab up`) and the db VM (vagrant/provision/db.sh).
#   db-init.sh DATADIR CONFDIR
# CONFDIR holds what `python3 -m chaosinject.lab.definition render db` wrote: lab.conf, pg_hba.conf, seed-*.sql,
# dbname; the log goes there too (initdb.log).
# Nothing is started: seeding uses single-user mode, so no listening socket exists before the caller starts it.
set -euo pipefail
datadir=$(realpath -m "$1") confdir=$(realpath -m "$2")
cd /   # initdb as postgres must be able to stay in its working directory
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/initdb" ] || { echo "db-init: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

if [ -e "$datadir/PG_VERSION" ]; then
  echo "db-init: $datadir already initialised"; exit 0
fi
install -d -o postgres -g postgres -m 0700 "$datadir"
as_pg "$bindir/initdb" --pgdata="$datadir" --username=postgres --encoding=UTF8 --no-locale \
  --auth-local=peer --auth-host=scram-sha-256 --no-sync >"$confdir/initdb.log" 2>&1 \
  || { cat "$confdir/initdb.log" >&2; exit 1; }
install -o postgres -g postgres -m 0600 "$confdir/lab.conf" "$confdir/pg_hba.conf" "$datadir/"
echo "include 'lab.conf'" >>"$datadir/postgresql.conf"
# single-user mode (-j: statements end at ';' + empty line): no server, no socket, no network while seeding
as_pg "$bindir/postgres" --single -j -D "$datadir" postgres <"$confdir/seed-cluster.sql" >>"$confdir/initdb.log" 2>&1
as_pg "$bindir/postgres" --single -j -D "$datadir" "$(cat "$confdir/dbname")" <"$confdir/seed-db.sql" >>"$confdir/initdb.log" 2>&1
if grep -q 'ERROR:' "$confdir/initdb.log"; then
  grep 'ERROR:' "$confdir/initdb.log" >&2; exit 1
fi
echo "db-init: $datadir ready"
