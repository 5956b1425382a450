#!/usr/bin/env bash
# What a night of typical changes costs a database's dumps: a PostgreSQL and a MariaDB database of about
# 100-200 MB of dump each, backed up, then changed as a busy small shop changes in a day (scattered updates,
# inserts, a few deletes), and backed up again. Prints, per engine, the dump's size, its throughput, and the bytes
# the second backup added. Needs root and the packages of .ci/install-deps; runs its own servers (plain
# processes on private sockets, no TCP) and removes everything it made.
#   bash benches/dump_night.sh [ROWS]        (default 1000000 rows per database)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
cargo build -q
bin="$PWD/target/debug/backupfs"
work=$(mktemp -d /var/tmp/backupfs-dump-night.XXXXXX)
chmod 755 "$work"
pgbin=/usr/lib/postgresql/15/bin
as_pg() { runuser -u postgres -- "$@"; }
cleanup() {
    as_pg "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    [ -f "$work/sock/my.pid" ] && kill "$(cat "$work/sock/my.pid")" 2>/dev/null || true
    sleep 1
    rm -rf "$work"
}
trap cleanup EXIT
mkdir "$work/pg" "$work/sock" "$work/my" && chown postgres "$work/pg" "$work/sock" "$work/my"
as_pg "$pgbin/initdb" -D "$work/pg" -U postgres --auth=peer -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
    -o "-k $work/sock -p 54331 -c listen_addresses='' -c fsync=off" start >/dev/null
as_pg mariadb-install-db --no-defaults --datadir="$work/my" --auth-root-authentication-method=socket \
    --auth-root-socket-user=postgres --skip-test-db >/dev/null
as_pg mariadbd --no-defaults --datadir="$work/my" --socket="$work/sock/my.sock" --skip-networking \
    --pid-file="$work/sock/my.pid" --log-error="$work/my/err" --innodb-flush-log-at-trx-commit=0 --skip-log-bin \
    </dev/null >/dev/null 2>&1 &
my_up() { as_pg mariadb-admin --no-defaults -S "$work/sock/my.sock" -upostgres ping >/dev/null 2>&1; }
for _ in $(seq 150); do my_up && break; sleep 0.2; done
my_up || { echo "mariadbd did not start:" >&2; cat "$work/my/err" >&2; exit 1; }
pg() { "$pgbin/psql" -X -q -h "$work/sock" -p 54331 -v ON_ERROR_STOP=1 "$@" >/dev/null; }
my() { mariadb --no-defaults -S "$work/sock/my.sock" "$@"; }
as_pg "$pgbin/psql" -X -q -h "$work/sock" -p 54331 -d postgres -c "CREATE ROLE root LOGIN" -c "CREATE DATABASE shop OWNER root"
# mariadb-install-db made root@localhost, authenticated by unix_socket: the backup below runs as root.
my -e "CREATE DATABASE wp"

echo "filling both databases with $rows rows each"
pg -d shop -c "CREATE TABLE orders (id int PRIMARY KEY, customer text, status text, total numeric(10,2), note text);
    INSERT INTO orders SELECT i, 'customer ' || (i % 9973), 'shipped', (i % 1000) / 7.0, md5(i::text) || md5((i * 7)::text)
    FROM generate_series(1, $rows) i;"
my wp -e "CREATE TABLE posts (id INT PRIMARY KEY, author VARCHAR(64), status VARCHAR(16), views INT, body TEXT) ENGINE=InnoDB;
    SET SESSION max_recursive_iterations = 100000000;
    INSERT INTO posts WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < $rows)
      SELECT i, CONCAT('author ', i % 997), 'publish', i % 5000, CONCAT(MD5(i), MD5(i * 7)) FROM s;"

mkdir "$work/home"
cat >"$work/config.toml" <<CONF
repository = "$work/repo"
[accounts.night]
source = "$work/home"
databases = [
  { engine = "postgresql", socket_dir = "$work/sock", port = 54331, names = ["shop"] },
  { engine = "mariadb", socket = "$work/sock/my.sock", names = ["wp"] },
]
CONF
"$bin" init "$work/repo" >/dev/null
cat >"$work/report.py" <<'PY'
import json, sys
d = json.load(sys.stdin)
for db in d["databases"]:
    mb, s = db["bytes"] / 1e6, db["duration_s"]
    print(f"  {db['engine']:<10} {db['name']:<5} {mb:8.1f} MB dump in {s:5.1f} s ({mb / s:4.0f} MB/s), {db['status']}")
print(f"  the backup added {d['bytes_added'] / 1e6:.2f} MB (compressed); peak RSS {d['peak_rss_kib'] // 1024} MiB")
PY
report() { python3 "$work/report.py"; }
echo "night 0:"
"$bin" --config "$work/config.toml" backup --account night --json | report
day() {
    local what=$1 from=$2 span=$3
    pg -d shop -c "UPDATE orders SET status = 'refunded'
          WHERE id IN (SELECT $from + (random() * $span)::int FROM generate_series(1, $changed));
        INSERT INTO orders SELECT i, 'new', 'new', 1, 'n' FROM generate_series($next + 1, $next + $added) i;
        DELETE FROM orders WHERE id IN (SELECT $from + (random() * $span)::int FROM generate_series(1, $deleted));"
    my wp -e "UPDATE posts SET views = views + 1
          WHERE id IN (SELECT * FROM (SELECT FLOOR($from + RAND() * $span) FROM seq_1_to_$changed) t);
        INSERT INTO posts SELECT $next + seq, 'new', 'draft', 0, 'n' FROM seq_1_to_$added;
        DELETE FROM posts WHERE id IN (SELECT * FROM (SELECT FLOOR($from + RAND() * $span) FROM seq_1_to_$deleted) t);"
    next=$((next + added))
    echo "$what ($changed rows updated, $added inserted, $deleted deleted in each database):"
    "$bin" --config "$work/config.toml" backup --account night --json | report
}
# A day: 0.2% of the rows updated, 0.5% inserted at the end, 0.05% deleted; first anywhere in the table (the
# worst case for deduplication), then among the newest 2% of the rows (recent orders and posts: the usual case).
changed=$((rows / 500)); added=$((rows / 200)); deleted=$((rows / 2000)); next=$rows
day "night 1, changes anywhere" 1 "$rows"
day "night 2, changes among the newest rows" $((next * 98 / 100)) $((next * 2 / 100))
