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

/// A new repository in a new temporary directory.
fn new_repo(label: &str) -> (TempDir, PathBuf) {
    let t = TempDir::new(label);
    let repo = t.join("repo");
    init_repo(&repo);
    (t, repo)
}

/// Both servers, every database the account's user has.
fn discover_both(db: &DbServers) -> [String; 2] {
    [
        pg_entry(db, "\"discover\"", ""),
        my_entry(db, "\"discover\"", ""),
    ]
}

/// Loads the dumps of `shop` (PostgreSQL) and `wp` (MariaDB) from the snapshot at `latest` into new databases
/// `<name>2`, as `user` with each server's own client reading through the mount; returns their names.
fn restore(
    db: &DbServers,
    user: &TestUser,
    latest: &Path,
    shop: &str,
    wp: &str,
) -> (String, String) {
    let (shop2, wp2) = (format!("{shop}2"), format!("{wp}2"));
    db.pg_admin(
        "postgres",
        &format!("CREATE DATABASE {shop2} OWNER {}", user.name),
    );
    let pg_dump = latest.join(format!("postgresql/{shop}.sql"));
    ok(db.pg_as(user, &shop2, &format!("\\i {}", pg_dump.display())));
    ok(db.my_as(user, wp, &format!("CREATE DATABASE {wp2}")));
    let my_dump = latest.join(format!("mysql/{wp}.sql"));
    ok(db.my_as(user, &wp2, &format!("source {}", my_dump.display())));
    (shop2, wp2)
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

    let (t, repo) = new_repo("db-roundtrip");
    let cfg = config(&t, &repo, &alice, &discover_both(&db));
    let (summary, code) = backup_with_config(&cfg, a, &[]);
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
    let (shop2, wp2) = restore(&db, &alice, &latest, &shop, &wp);
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

    let (t, repo) = new_repo("db-consistent");
    let cfg = config(&t, &repo, &alice, &discover_both(&db));
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
        let (summary, _) = backup_with_config(&cfg, &a, &[]);
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
    let (shop2, wp2) = restore(&db, &alice, &latest, &shop, &wp);
    let sum = "SELECT (SELECT amount FROM a_from) + (SELECT amount FROM z_to)";
    assert_eq!(ok(db.pg_as(&alice, &shop2, sum)).trim(), "1000000");
    assert_eq!(ok(db.my_as(&alice, &wp2, sum)).trim(), "1000000");
}

/// The processes of OS user `uid`: (pid, comm).
fn processes_of(uid: u32) -> Vec<(u32, String)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let owner = std::fs::metadata(e.path()).ok()?.uid();
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (owner == uid).then(|| (pid, comm.trim().to_owned()))
        })
        .collect()
}

/// The name of a file the test process opens without close-on-exec, so that backupfs inherits it: the dump
/// programs, which run as the account, must not.
const LEAKED: &str = "inherited-by-backupfs";

fn leaked_file(dir: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::create(dir.join(LEAKED)).unwrap();
    // SAFETY: clears FD_CLOEXEC on a descriptor this function owns; no memory is involved.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFD, 0) };
    f
}

/// Waits for a process `comm` of `uid` and checks that nothing secret reaches it: its environment holds only
/// what backupfs sets, its command line no password option. Returns false if none appeared in time.
fn inspect_dump_process(uid: u32, comm: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Some((pid, _)) = processes_of(uid).into_iter().find(|(_, c)| c == comm) {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let keys: Vec<String> = environ
                .split(|&b| b == 0)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    String::from_utf8_lossy(v.split(|&b| b == b'=').next().unwrap()).into_owned()
                })
                .collect();
            for k in &keys {
                assert!(
                    ["PATH", "HOME", "USER", "LOGNAME", "LC_ALL"].contains(&k.as_str()),
                    "{comm} got {k} in its environment"
                );
            }
            // No descriptor of backupfs's: the test leaves one open without close-on-exec (`leaked_file`).
            for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
            {
                let target = std::fs::read_link(fd.unwrap().path()).unwrap_or_default();
                assert!(
                    !target.ends_with(LEAKED),
                    "{comm} inherited {}",
                    target.display()
                );
            }
            let cmdline = String::from_utf8_lossy(&cmdline).to_lowercase();
            assert!(
                !cmdline.contains("password=")
                    && !cmdline.contains("\0-p")
                    && !cmdline.contains("pwd"),
                "{comm}: {cmdline}"
            );
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A dump killed mid-way, one past its deadline and one that exits 1: each leaves `<db>.sql.FAILED` and no
/// `.sql`, the backup exits 3 naming them, the previous snapshot keeps its dumps, and nothing is left behind.
#[test]
fn failed_dumps_leave_notes_and_exit_3() {
    let db = DbServers::start();
    let alice = TestUser::new();
    let a = alice.name.clone();
    let (shop, locked, missing, big) = (
        format!("{a}_shop"),
        format!("{a}_locked"),
        format!("{a}_missing"),
        format!("{a}_big"),
    );
    db.add_account(&alice, &[&shop, &locked], &[&big]);
    ok(db.pg_as(&alice, &shop, PG_SCHEMA));
    ok(db.pg_as(
        &alice,
        &locked,
        "CREATE TABLE t (i int); INSERT INTO t VALUES (1);",
    ));
    ok(db.my_as(&alice, &big, "CREATE TABLE big (i INT PRIMARY KEY, pad TEXT) ENGINE=InnoDB;
        SET SESSION max_recursive_iterations = 10000000;
        INSERT INTO big WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 400000)
          SELECT i, REPEAT(MD5(i), 8) FROM s;"));

    let (t, repo) = new_repo("db-failures");
    let cfg = config(
        &t,
        &repo,
        &alice,
        &[
            my_entry(&db, "\"discover\"", ""),
            pg_entry(&db, &format!("[{locked:?}]"), ", timeout_s = 2"),
            pg_entry(&db, &format!("[{missing:?}, {shop:?}]"), ""),
        ],
    );
    // The night before: everything there but the database that does not exist.
    let (first, code) = backup_with_config(&cfg, &a, &[]);
    assert_eq!(
        (code, status(&first, &big), status(&first, &missing)),
        (3, "ok".into(), "failed".into())
    );

    let _leaked = leaked_file(t.path());
    let (summary, code) = std::thread::scope(|s| {
        // Someone holds a lock on alice_locked's table for longer than its dump's deadline.
        s.spawn(|| {
            db.pg_admin(
                &locked,
                "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(6); COMMIT;",
            )
        });
        // The server drops the MariaDB dump's connection once it is streaming rows.
        let killer = s.spawn(|| {
            assert!(inspect_dump_process(alice.uid, "mariadb-dump"), "no mariadb-dump seen");
            let find = format!(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = {:?} AND INFO LIKE '%FROM `big`%'",
                alice.name
            );
            for _ in 0..2000 {
                let id = db.my_admin(&find);
                if let Some(id) = id.lines().next() {
                    db.my_admin(&format!("KILL {id}"));
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("the dump's query never showed up");
        });
        let watcher = s.spawn(|| {
            assert!(
                inspect_dump_process(alice.uid, "pg_dump"),
                "no pg_dump seen"
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        let result = backup_with_config(&cfg, &a, &[]);
        killer.join().unwrap();
        watcher.join().unwrap();
        result
    });
    assert_eq!(code, 3, "{summary}");
    for (name, want) in [
        (&big, "failed"),
        (&locked, "failed"),
        (&missing, "failed"),
        (&shop, "ok"),
    ] {
        assert_eq!(status(&summary, name), want, "{name}: {summary}");
        if want == "failed" {
            let warned = summary["warning_messages"].as_array().unwrap().iter();
            assert!(
                warned.clone().any(|w| w
                    .as_str()
                    .unwrap()
                    .contains(&format!("database {name}: dump failed"))),
                "no warning names {name}: {summary}"
            );
        }
    }

    let m = Mount::with(&repo, &a, &t.join("mnt"), &["--allow-other"], &[]);
    let latest = m.latest_in("");
    assert_eq!(
        listing(&latest.join("mysql")),
        [format!("{big}.sql.FAILED")]
    );
    assert_eq!(
        listing(&latest.join("postgresql")),
        [
            format!("{locked}.sql.FAILED"),
            format!("{missing}.sql.FAILED"),
            format!("{shop}.sql")
        ]
    );
    let note = |f: String| std::fs::read_to_string(latest.join(f)).unwrap();
    assert!(note(format!("postgresql/{locked}.sql.FAILED")).contains("timed out after 2 s"));
    assert!(note(format!("postgresql/{missing}.sql.FAILED")).contains("exit status 1"));
    let killed = note(format!("mysql/{big}.sql.FAILED"));
    assert!(
        killed.contains("reason: exit status") && killed.contains("time: "),
        "{killed}"
    );
    // The night before is untouched.
    let days: Vec<String> = listing(&m.path)
        .into_iter()
        .filter(|d| d != "latest")
        .collect();
    let older = m.path.join(&days[0]);
    assert_ne!(older, latest);
    assert_eq!(listing(&older.join("mysql")), [format!("{big}.sql")]);
    drop(m);
    check_clean(&repo);
    assert!(
        processes_of(alice.uid).is_empty(),
        "left running: {:?}",
        processes_of(alice.uid)
    );
}

/// The server keeps one account out of another's databases, whatever the configuration says; a shared mount
/// keeps one account out of another's dumps.
#[test]
fn accounts_are_isolated_by_the_server_and_the_mount() {
    let db = DbServers::start();
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let (a, b) = (alice.name.clone(), bob.name.clone());
    let (alice_wp, bob_blog) = (format!("{a}_wp"), format!("{b}_blog"));
    db.add_account(&alice, &[&alice_wp], &[&alice_wp]);
    ok(db.my_as(
        &alice,
        &alice_wp,
        "CREATE TABLE legacy (i INT) ENGINE=MyISAM;",
    ));
    db.add_account(&bob, &[&bob_blog], &[&bob_blog]);
    ok(db.pg_as(
        &bob,
        &bob_blog,
        "CREATE TABLE secret (s text); INSERT INTO secret VALUES ('bob-only');",
    ));
    ok(db.my_as(
        &bob,
        &bob_blog,
        "CREATE TABLE secret (s text); INSERT INTO secret VALUES ('bob-only');",
    ));

    let (t, repo) = new_repo("db-isolation");
    let names = format!("[{alice_wp:?}, {bob_blog:?}]");
    let cfg = config(
        &t,
        &repo,
        &alice,
        &[pg_entry(&db, &names, ""), my_entry(&db, &names, "")],
    );
    let (summary, code) = backup_with_config(&cfg, &a, &[]);
    assert_eq!(code, 3);
    assert_eq!(status(&summary, &alice_wp), "ok");
    let warnings = summary["warning_messages"].to_string();
    assert!(
        warnings.contains("without a consistent snapshot: legacy (MyISAM)"),
        "MyISAM table not named: {warnings}"
    );
    let failures: Vec<&serde_json::Value> = summary["databases"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["name"] == bob_blog.as_str())
        .collect();
    assert_eq!(failures.len(), 2);
    assert!(
        failures.iter().all(|d| d["status"] == "failed"),
        "{summary}"
    );
    // Discovery as alice lists alice's databases only.
    let cfg_discover = config(&t, &repo, &alice, &discover_both(&db));
    let (discovered, code) = backup_with_config(&cfg_discover, &a, &[]);
    // Exit 3 for the MyISAM table's warning alone.
    assert_eq!(
        (code, &discovered["warnings"]),
        (3, &serde_json::json!(1)),
        "{discovered}"
    );
    let found: Vec<&str> = discovered["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(found, [alice_wp.as_str(), alice_wp.as_str()]);
    let cfg_bob = config(&t, &repo, &bob, &[pg_entry(&db, "\"discover\"", "")]);
    backup_with_config(&cfg_bob, &b, &[]);
    // An account the servers do not know: authentication refused, for discovery and for a named database.
    let carol = TestUser::new();
    let cfg_carol = config(
        &t,
        &repo,
        &carol,
        &[
            pg_entry(&db, "\"discover\"", ""),
            my_entry(&db, "[\"x_db\"]", ""),
        ],
    );
    let (refused, code) = backup_with_config(&cfg_carol, &carol.name, &[]);
    assert_eq!(code, 3, "{refused}");
    assert_eq!(status(&refused, "x_db"), "failed");
    let warnings = refused["warning_messages"].to_string();
    assert!(
        warnings.contains("listing the databases as") && warnings.contains("x_db"),
        "{warnings}"
    );

    // One mount of every account, as an NFS re-export would serve: each reads only its own dumps.
    let m = mount_args(&repo, &["--allow-other"], &t.join("mnt"));
    let alice_dump = m.latest_in(&a).join(format!("postgresql/{alice_wp}.sql"));
    let bob_dump = m.latest_in(&b).join(format!("postgresql/{bob_blog}.sql"));
    let by = |u: &TestUser, p: &Path| u.run("cat", &[p.as_os_str()]);
    let denied = by(&bob, &alice_dump);
    assert!(
        !denied.status.success()
            && String::from_utf8_lossy(&denied.stderr).contains("Permission denied")
    );
    assert!(by(&alice, &alice_dump).status.success());
    let own = by(&bob, &bob_dump);
    assert!(String::from_utf8_lossy(&own.stdout).contains("bob-only"));
    assert!(!by(&alice, &bob_dump).status.success());
}

/// A night of small changes adds under 1% of the dumps (1.6% with the files' 1 MiB chunks; figures printed).
#[test]
fn a_small_change_adds_little() {
    let db = DbServers::start();
    let alice = TestUser::new();
    let a = alice.name.clone();
    let (shop, wp) = (format!("{a}_shop"), format!("{a}_wp"));
    db.add_account(&alice, &[&shop], &[&wp]);
    ok(db.pg_as(&alice, &shop, "CREATE TABLE orders (id int PRIMARY KEY, customer text, note text);
        INSERT INTO orders SELECT i, 'customer ' || (i % 977), repeat(md5(i::text), 4) FROM generate_series(1, 200000) i;"));
    ok(db.my_as(&alice, &wp, "CREATE TABLE posts (id INT PRIMARY KEY, title TEXT, body TEXT) ENGINE=InnoDB;
        SET SESSION max_recursive_iterations = 10000000;
        INSERT INTO posts WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 200000)
          SELECT i, CONCAT('title ', i), REPEAT(MD5(i), 4) FROM s;"));
    let (t, repo) = new_repo("db-dedup");
    let cfg = config(&t, &repo, &alice, &discover_both(&db));
    let (first, _) = backup_with_config(&cfg, &a, &[]);
    // A day on a small site: a few orders edited, new ones, a comment deleted, a post edited.
    ok(db.pg_as(
        &alice,
        &shop,
        "UPDATE orders SET note = 'refunded' WHERE id IN (150000, 150001, 150002);
        INSERT INTO orders SELECT i, 'new', 'n' FROM generate_series(200001, 200050) i;",
    ));
    ok(db.my_as(
        &alice,
        &wp,
        "UPDATE posts SET title = 'edited' WHERE id IN (100000, 100001);
        DELETE FROM posts WHERE id = 100005; INSERT INTO posts VALUES (200001, 'new', 'body');",
    ));
    let (second, _) = backup_with_config(&cfg, &a, &[]);
    let dump_bytes: u64 = second["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["bytes"].as_u64().unwrap())
        .sum();
    let added = second["bytes_added"].as_u64().unwrap();
    eprintln!(
        "dumps {dump_bytes} bytes (first backup added {}), the night's changes added {added} bytes ({:.1}% of the dumps)",
        first["bytes_added"],
        100.0 * added as f64 / dump_bytes as f64
    );
    assert!(dump_bytes > 50_000_000, "{second}");
    assert!(
        added * 100 < dump_bytes,
        "a small change added {added} of {dump_bytes} bytes"
    );
}

/// A dump larger than 1 GB streams through with the backup's memory bounded (its peak resident set).
#[test]
fn a_1_gb_dump_streams_in_bounded_memory() {
    let db = DbServers::start();
    let alice = TestUser::new();
    let a = alice.name.clone();
    let big = format!("{a}_big");
    db.add_account(&alice, &[&big], &[]);
    ok(db.pg_as(&alice, &big, "CREATE TABLE big AS SELECT i, repeat(md5(i::text), 10) AS pad FROM generate_series(1, 3300000) i;"));
    let (t, repo) = new_repo("db-1gb");
    let cfg = config(&t, &repo, &alice, &[pg_entry(&db, "\"discover\"", "")]);
    let (summary, code) = backup_with_config(&cfg, &a, &[]);
    assert_eq!(code, 0, "{summary}");
    let d = &summary["databases"][0];
    let (bytes, secs) = (
        d["bytes"].as_u64().unwrap(),
        d["duration_s"].as_f64().unwrap(),
    );
    let peak = summary["peak_rss_kib"].as_u64().unwrap();
    eprintln!(
        "dump of {bytes} bytes in {secs:.1} s ({:.0} MB/s), backup peak RSS {} MiB",
        bytes as f64 / secs / 1e6,
        peak / 1024
    );
    assert!(bytes > 1_000_000_000, "{summary}");
    assert!(
        peak < 400 * 1024,
        "peak RSS {peak} KiB while streaming {bytes} bytes"
    );
}

/// `backupfs --config CONFIG backup --account ACCOUNT`, not waited for.
fn backup_command(config: &Path, account: &str) -> std::process::Command {
    let mut cmd = bin();
    cmd.arg("--config")
        .arg(config)
        .args(["backup", "--account", account])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// A backup killed with SIGKILL during its dumps: no dump program outlives it, not even one waiting on a lock,
/// and the next backup and `check` find the repository whole. Kills at random moments, `BACKUPFS_CRASH_ROUNDS`
/// rounds (default 4).
#[test]
fn a_backup_killed_during_dumps_leaves_no_dump_running() {
    let db = DbServers::start();
    let alice = TestUser::new();
    let a = alice.name.clone();
    let (shop, big) = (format!("{a}_shop"), format!("{a}_big"));
    db.add_account(&alice, &[&shop], &[&big]);
    ok(db.pg_as(&alice, &shop, PG_SCHEMA));
    ok(db.my_as(&alice, &big, "CREATE TABLE big (i INT PRIMARY KEY, pad TEXT) ENGINE=InnoDB;
        SET SESSION max_recursive_iterations = 10000000;
        INSERT INTO big WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 300000)
          SELECT i, REPEAT(MD5(i), 8) FROM s;"));
    let (t, repo) = new_repo("db-killed");
    let cfg = config(&t, &repo, &alice, &discover_both(&db));
    let gone = |what: &str| {
        wait_until(what, Duration::from_secs(3), || {
            processes_of(alice.uid).is_empty()
        })
    };

    // A dump waiting on a lock when the backup is killed ends with it, while the lock is still held.
    std::thread::scope(|s| {
        let holder = s.spawn(|| {
            db.pg_admin(
                &shop,
                "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(8); COMMIT;",
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut backup = backup_command(&cfg, &a).spawn().unwrap();
        wait_until(
            "pg_dump waiting on the lock",
            Duration::from_secs(20),
            || processes_of(alice.uid).iter().any(|(_, c)| c == "pg_dump"),
        );
        backup.kill().unwrap();
        backup.wait().unwrap();
        gone("the dump to end with the backup killed");
        assert!(
            !holder.is_finished(),
            "the lock was released before the check: the test proves nothing"
        );
    });

    let rounds: u64 = std::env::var("BACKUPFS_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("kill delays from seed {seed}");
    for _ in 0..rounds {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(50 + (seed >> 33) % 1500);
        run_and_kill(&mut backup_command(&cfg, &a), delay);
        gone("the dumps to end with the backup killed");
    }
    let (summary, code) = backup_with_config(&cfg, &a, &[]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(
        (status(&summary, &shop), status(&summary, &big)),
        ("ok".into(), "ok".into())
    );
    check_clean(&repo);
}

/// The repository's disk fills up during a dump: the backup fails with one line naming the path, the dump
/// program ends with it, nothing is committed, and the night before and `check` are unaffected.
#[test]
fn a_full_disk_during_a_dump_fails_the_backup_and_keeps_the_night_before() {
    let db = DbServers::start();
    let alice = TestUser::new();
    let a = alice.name.clone();
    let big = format!("{a}_big");
    db.add_account(&alice, &[], &[&big]);
    ok(db.my_as(&alice, &big, "CREATE TABLE big (i INT PRIMARY KEY, pad TEXT) ENGINE=InnoDB; INSERT INTO big VALUES (1, 'one');"));
    let t = TempDir::new("db-full");
    let disk = Tmpfs::new(t.join("disk"), "24m");
    let repo = disk.0.join("repo");
    init_repo(&repo);
    let cfg = config(&t, &repo, &alice, &[my_entry(&db, "\"discover\"", "")]);
    let (first, code) = backup_with_config(&cfg, &a, &[]);
    assert_eq!(code, 0, "{first}");
    // Distinct hex digests compress about 2:1: some 75 MB of dump cannot fit in what is left of 24 MB.
    ok(db.my_as(&alice, &big, "SET SESSION max_recursive_iterations = 10000000;
        INSERT INTO big WITH RECURSIVE s(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM s WHERE i < 150000)
          SELECT i, CONCAT(SHA2(4 * i, 512), SHA2(4 * i + 1, 512), SHA2(4 * i + 2, 512), SHA2(4 * i + 3, 512)) FROM s;"));
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["backup", "--account", &a])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("backupfs: error"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("No space left on device") && line.contains(&repo.display().to_string()),
        "{err}"
    );
    wait_until(
        "the dump to end with the failed backup",
        Duration::from_secs(3),
        || processes_of(alice.uid).is_empty(),
    );
    check_clean(&repo);
    let m = Mount::with(&repo, &a, &t.join("mnt"), &["--allow-other"], &[]);
    let days: Vec<String> = listing(&m.path)
        .into_iter()
        .filter(|d| d != "latest")
        .collect();
    assert_eq!(days.len(), 1, "a snapshot was committed: {days:?}");
    let dump = std::fs::read_to_string(m.latest_in("").join(format!("mysql/{big}.sql"))).unwrap();
    assert!(dump.contains("(1,'one')") && dump.contains("-- Dump completed"));
}
