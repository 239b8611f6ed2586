#!/usr/bin/env bash
# The anchors `kassa bench` is compared with, measured on this machine in this run:
#   PostgreSQL: single-row insert transactions/s, 8 clients, synchronous_commit on (pgbench);
#   Redis:      LPUSH+RPOP pairs/s, 16 clients, appendonly with appendfsync always;
#   SQLite:     seconds of an indexed GROUP BY over 1,000,000 payments of one day, 100 partners.
# Needs the Debian packages postgresql, redis-server and sqlite3. Prints one JSON line each.
# Usage: benches/anchors.sh [seconds per PostgreSQL run, default 20]
set -euo pipefail
seconds="${1:-20}"
work="$(mktemp -d)"
trap 'pg_stop; redis-cli -p 56379 shutdown nosave >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
pg_stop() { [ -d "$work/pg" ] && as_pg "'$pg_bin/pg_ctl' -D '$work/pg' -m fast stop" >/dev/null 2>&1 || true; }

# PostgreSQL: a cluster of its own on a private socket.
mkdir -p "$work/pg"
[ "$(id -u)" -eq 0 ] && chown postgres "$work" "$work/pg"
as_pg "'$pg_bin/initdb' -D '$work/pg' -A trust >/dev/null"
as_pg "'$pg_bin/pg_ctl' -D '$work/pg' -o \"-p 55432 -k '$work/pg' -c synchronous_commit=on -c fsync=on\" -l '$work/pg/log' -w start >/dev/null"
as_pg "'$pg_bin/psql' -h '$work/pg' -p 55432 -d postgres -q -c 'create table orders (id bigserial primary key, order_id text not null unique, amount bigint not null, name text not null)'"
cat > "$work/insert.sql" <<'SQL'
insert into orders (order_id, amount, name) values (md5(random()::text || clock_timestamp()::text), 1000, 'bench');
SQL
chmod a+r "$work/insert.sql"
pg_tps="$(as_pg "'$pg_bin/pgbench' -h '$work/pg' -p 55432 -n -c 8 -j 2 -T '$seconds' -f '$work/insert.sql' postgres" | awk '/^tps/ {print int($3)}')"
echo "{\"anchor\":\"postgresql_insert_tps\",\"clients\":8,\"synchronous_commit\":\"on\",\"value\":${pg_tps}}"

# Redis: every write fsynced before it is answered.
redis-server --port 56379 --dir "$work" --appendonly yes --appendfsync always --save '' --daemonize yes >/dev/null
for _ in $(seq 50); do redis-cli -p 56379 ping >/dev/null 2>&1 && break; sleep 0.1; done
csv="$(redis-benchmark -p 56379 -c 16 -n 200000 -t lpush,rpop --csv 2>/dev/null)"
lpush="$(echo "$csv" | awk -F'","' '/LPUSH/ {print $2}' | tr -d '"')"
rpop="$(echo "$csv" | awk -F'","' '/RPOP/ {print $2}' | tr -d '"')"
pairs="$(awk -v a="$lpush" -v b="$rpop" 'BEGIN { printf "%d", 1 / (1 / a + 1 / b) }')"
echo "{\"anchor\":\"redis_lpush_rpop_pairs_per_s\",\"clients\":16,\"appendfsync\":\"always\",\"lpush_per_s\":${lpush%.*},\"rpop_per_s\":${rpop%.*},\"value\":${pairs}}"

# SQLite: the indexed GROUP BY a partner settlement would be.
db="$work/payments.sqlite"
sqlite3 "$db" <<'SQL' >/dev/null
pragma journal_mode = wal;
create table payments (id integer primary key, day text not null, partner_id text not null, amount integer not null, cancelled integer not null);
with recursive n(i) as (select 0 union all select i + 1 from n where i < 999999)
insert into payments (day, partner_id, amount, cancelled) select '2026-11-23', printf('partner-%03d', i % 100), 10000, 0 from n;
create index payments_by_day on payments (day, partner_id, amount, cancelled);
analyze;
SQL
start="$(date +%s.%N)"
sqlite3 "$db" "select partner_id, count(*), sum(amount), sum(cancelled) from payments where day = '2026-11-23' group by partner_id;" >/dev/null
end="$(date +%s.%N)"
echo "{\"anchor\":\"sqlite_group_by_seconds\",\"rows\":1000000,\"partners\":100,\"value\":$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')}"
