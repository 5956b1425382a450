//! Database dumps in snapshots, against real servers (PostgreSQL 15 and MariaDB 10.11 started by the tests as
//! plain processes, tests/common/databases.rs) and real OS users: restore from the mount with the server's own
//! client as the account's user, consistency under concurrent writes, every failure leaving a note and exit 3,
//! isolation between accounts, deduplication, and a 1 GB dump streamed with bounded memory.

mod common;

use common::databases::DbServers;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The configuration of `user`'s account, its home as source, with these `databases` entries.
fn config(t: &TempDir, repo: &Path, user: &TestUser, databases: &[String]) -> PathBuf {
    let path = t.join(&format!("config-{}.toml", user.name));
    let text = format!(
        "repository = {repo:?}\n[accounts.{name}]\nsource = {home:?}\nuser = {name:?}\ndatabases = [\n{}\n]\n",
        databases.join(",\n"),
        name = user.name,
        home = user.home,
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn pg_entry(db: &DbServers, names: &str, extra: &str) -> String {
    format!(
        "{{ engine = \"postgresql\", socket_dir = {:?}, port = {}, names = {names}{extra} }}",
        db.pg_socket_dir(),
        db.pg_port()
    )
}

fn my_entry(db: &DbServers, names: &str, extra: &str) -> String {
    format!(
        "{{ engine = \"mariadb\", socket = {:?}, names = {names}{extra} }}",
        db.my_socket()
    )
}

/// `backupfs backup --account NAME --json` with `config`: (summary, exit code); panics on an exit other than
/// 0 or 3.
fn backup_account(config: &Path, account: &str) -> (serde_json::Value, i32) {
    let out = bin()
        .arg("--config")
        .arg(config)
        .args(["backup", "--account", account, "--json"])
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 3,
        "backup exited {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_slice(&out.stdout).unwrap(), code)
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The status `--json` gives one database.
fn status(summary: &serde_json::Value, name: &str) -> String {
    summary["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {summary}"))["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const PG_SCHEMA: &str = "
CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, data bytea, touched int DEFAULT 0);
CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.touched := OLD.touched + 1; RETURN NEW; END $$;
CREATE TRIGGER items_bump BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION bump();
CREATE FUNCTION total() RETURNS bigint LANGUAGE sql AS $$ SELECT sum(length(data)) FROM items $$;
INSERT INTO items (name, data) SELECT 'Größe ' || i || ' 😀 ''quoted'' \\ back', decode(repeat(md5(i::text), 40) || '00ff0a0d5c27', 'hex') FROM generate_series(1, 300) i;
UPDATE items SET name = name || ' (edited)' WHERE id % 7 = 0;
";

const PG_CHECKSUM: &str =
    "SELECT md5(string_agg(id || ':' || name || ':' || encode(data, 'hex') || ':' || touched, '|' ORDER BY id)) || ' ' || total() FROM items";

const MY_SCHEMA: &str = "
CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) CHARACTER SET utf8mb4 NOT NULL, data LONGBLOB, touched INT DEFAULT 0) ENGINE=InnoDB;
CREATE TRIGGER items_bump BEFORE UPDATE ON items FOR EACH ROW SET NEW.touched = OLD.touched + 1;
CREATE PROCEDURE total(OUT n BIGINT) SELECT SUM(LENGTH(data)) INTO n FROM items;
INSERT INTO items (name, data) WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300)
  SELECT CONCAT('Größe ', i, ' 😀 ''quoted'' \\\\ back'), CONCAT(UNHEX(REPEAT(MD5(i), 40)), UNHEX('00ff0a0d5c27')) FROM s;
UPDATE items SET name = CONCAT(name, ' (edited)') WHERE id % 7 = 0;
";

const MY_CHECKSUM: &str = "SET SESSION group_concat_max_len = 1 << 30;
SELECT MD5(GROUP_CONCAT(id, ':', name, ':', HEX(data), ':', touched ORDER BY id SEPARATOR '|')) FROM items;
CALL total(@n); SELECT @n;";

#[test]
fn round_trip_through_the_mount_with_each_servers_own_client() {
    let db = DbServers::start();
    let alice = TestUser::new();
    let a = &alice.name;
    let (shop, wp) = (format!("{a}_shop"), format!("{a}_wp"));
    db.add_account(&alice, &[&shop], &[&wp]);
    ok(db.pg_as(&alice, &shop, PG_SCHEMA));
    ok(db.my_as(&alice, &wp, MY_SCHEMA));
    let before = (
        ok(db.pg_as(&alice, &shop, PG_CHECKSUM)),
        ok(db.my_as(&alice, &wp, MY_CHECKSUM)),
    );

    let t = TempDir::new("db-roundtrip");
    let repo = t.join("repo");
    init_repo(&repo);
    let cfg = config(
        &t,
        &repo,
        &alice,
        &[
            pg_entry(&db, "\"discover\"", ""),
            my_entry(&db, "\"discover\"", ""),
        ],
    );
    let (summary, code) = backup_account(&cfg, a);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["layout"], "parts");
    assert_eq!(status(&summary, &shop), "ok");
    assert_eq!(status(&summary, &wp), "ok");
    assert_eq!(
        summary["databases"].as_array().unwrap().len(),
        2,
        "discovery found others: {summary}"
    );

    let m = Mount::with(&repo, a, &t.join("mnt"), &["--allow-other"], &[]);
    let latest = m.latest_in("");
    assert_eq!(listing(&latest), ["files", "mysql", "postgresql"]);
    let dump = latest.join(format!("postgresql/{shop}.sql"));
    let meta = std::fs::metadata(&dump).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.mode() & 0o7777, meta.uid()), (0o600, alice.uid));
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(!text.contains("-- Dumped on") && text.contains("COPY public.items"));

    // Restore as the account's user, reading the dumps through the mount, into new databases.
    let (shop2, wp2) = (format!("{a}_shop2"), format!("{a}_wp2"));
    db.pg_admin("postgres", &format!("CREATE DATABASE {shop2} OWNER {a}"));
    ok(db.pg_as(&alice, &shop2, &format!("\\i {}", dump.display())));
    ok(db.my_as(&alice, &wp, &format!("CREATE DATABASE {wp2}")));
    let my_dump = latest.join(format!("mysql/{wp}.sql"));
    ok(db.my_as(&alice, &wp2, &format!("source {}", my_dump.display())));
    let after = (
        ok(db.pg_as(&alice, &shop2, PG_CHECKSUM)),
        ok(db.my_as(&alice, &wp2, MY_CHECKSUM)),
    );
    assert_eq!(before, after, "restored tables differ");
    // The triggers came back too.
    ok(db.pg_as(&alice, &shop2, "UPDATE items SET name = name WHERE id = 1"));
    ok(db.my_as(&alice, &wp2, "UPDATE items SET name = name WHERE id = 1"));
    assert_eq!(
        ok(db.pg_as(&alice, &shop2, "SELECT touched FROM items WHERE id = 1")).trim(),
        "1"
    );
    assert_eq!(
        ok(db.my_as(&alice, &wp2, "SELECT touched FROM items WHERE id = 1")).trim(),
        "1"
    );
    drop(m);
    check_clean(&repo);
}

/// Amounts move between two tables while the dump runs; a filler table between them (dumps go in name order)
/// makes the dump long enough for transfers to land between the two tables' reads.
#[test]
fn a_dump_is_one_consistent_snapshot_under_concurrent_writes() {
    let db = DbServers::start();
    let alice = TestUser::new();
    let a = alice.name.clone();
    let (shop, wp) = (format!("{a}_shop"), format!("{a}_wp"));
    db.add_account(&alice, &[&shop], &[&wp]);
    let setup = "CREATE TABLE a_from (id int PRIMARY KEY, amount bigint);
        CREATE TABLE z_to (id int PRIMARY KEY, amount bigint);
        INSERT INTO a_from VALUES (1, 1000000); INSERT INTO z_to VALUES (1, 0);";
    ok(db.pg_as(&alice, &shop, &format!("{setup}
        CREATE TABLE m_filler AS SELECT i, repeat(md5(i::text), 10) AS pad FROM generate_series(1, 200000) i;")));
    ok(db.my_as(&alice, &wp, &format!("{}
        CREATE TABLE m_filler (i INT PRIMARY KEY, pad TEXT) ENGINE=InnoDB;
        SET SESSION max_recursive_iterations = 1000000;
        INSERT INTO m_filler WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200000)
          SELECT i, REPEAT(MD5(i), 10) FROM s;", setup.replace("bigint)", "bigint) ENGINE=InnoDB"))));
    let transfer = "BEGIN; UPDATE a_from SET amount = amount - 7; UPDATE z_to SET amount = amount + 7; COMMIT;";

    let t = TempDir::new("db-consistent");
    let repo = t.join("repo");
    init_repo(&repo);
    let cfg = config(
        &t,
        &repo,
        &alice,
        &[
            pg_entry(&db, "\"discover\"", ""),
            my_entry(&db, "\"discover\"", ""),
        ],
    );
    let stop = AtomicBool::new(false);
    let transfers = AtomicU64::new(0);
    let summary = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                ok(db.pg_as(&alice, &shop, transfer));
                ok(db.my_as(&alice, &wp, &transfer.replace("BEGIN", "START TRANSACTION")));
                transfers.fetch_add(1, Ordering::Relaxed);
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        let before = transfers.load(Ordering::Relaxed);
        let (summary, _) = backup_account(&cfg, &a);
        let during = transfers.load(Ordering::Relaxed) - before;
        stop.store(true, Ordering::Relaxed);
        assert!(
            during >= 2,
            "only {during} transfers ran during the backup: the test proves nothing"
        );
        summary
    });
    assert_eq!(status(&summary, &shop), "ok");
    assert_eq!(status(&summary, &wp), "ok");

    let m = Mount::with(&repo, &a, &t.join("mnt"), &["--allow-other"], &[]);
    let latest = m.latest_in("");
    let (shop2, wp2) = (format!("{a}_shop2"), format!("{a}_wp2"));
    db.pg_admin("postgres", &format!("CREATE DATABASE {shop2} OWNER {a}"));
    ok(db.pg_as(
        &alice,
        &shop2,
        &format!(
            "\\i {}",
            latest.join(format!("postgresql/{shop}.sql")).display()
        ),
    ));
    ok(db.my_as(&alice, &wp, &format!("CREATE DATABASE {wp2}")));
    ok(db.my_as(
        &alice,
        &wp2,
        &format!(
            "source {}",
            latest.join(format!("mysql/{wp}.sql")).display()
        ),
    ));
    let sum = "SELECT (SELECT amount FROM a_from) + (SELECT amount FROM z_to)";
    assert_eq!(ok(db.pg_as(&alice, &shop2, sum)).trim(), "1000000");
    assert_eq!(ok(db.my_as(&alice, &wp2, sum)).trim(), "1000000");
}
