//! The database test servers themselves (tests/common/databases.rs): accounts of real OS users, dumps as those
//! users, what one user cannot dump of another's, killing the servers under a client, and that dropping them
//! leaves no process and no directory.

mod common;

use common::databases::{server_processes, DbServers, PG_BIN};
use common::*;
use std::os::unix::net::UnixStream;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn accounts_dump_their_own_databases_and_not_each_others() {
    let db = DbServers::start();
    let (alice, bob) = (TestUser::new(), TestUser::new());
    let (shop, blog) = (format!("{}_shop", alice.name), format!("{}_blog", bob.name));
    db.add_account(&alice, &[&shop], &[&shop]);
    db.add_account(&bob, &[&blog], &[&blog]);
    let table = "CREATE TABLE orders (id int PRIMARY KEY, item text);";
    ok(db.pg_as(
        &alice,
        &shop,
        &format!("{table} INSERT INTO orders VALUES (1, 'pg-widget');"),
    ));
    ok(db.my_as(
        &alice,
        &shop,
        &format!("{table} INSERT INTO orders VALUES (1, 'my-widget');"),
    ));
    assert_eq!(
        ok(db.pg_as(&alice, &shop, "SELECT id, item FROM orders")),
        "1|pg-widget\n"
    );
    assert_eq!(
        db.my_admin(&format!("SELECT item FROM `{shop}`.orders")),
        "my-widget\n"
    );
    // Each MariaDB account sees its own databases only.
    let shown = ok(db.my_as(&bob, &blog, "SHOW DATABASES"));
    let mut shown: Vec<&str> = shown.lines().collect();
    shown.sort();
    assert_eq!(shown, [blog.as_str(), "information_schema"]);

    let pg_dump = |user: &TestUser, name: &str| {
        user.command(&format!("{PG_BIN}/pg_dump"))
            .arg("-h")
            .arg(db.pg_socket_dir())
            .args(["-p", &db.pg_port().to_string(), name])
            .output()
            .unwrap()
    };
    let my_dump = |user: &TestUser, name: &str| {
        user.command("mariadb-dump")
            .args(["--no-defaults", "--single-transaction", "-S"])
            .arg(db.my_socket())
            .arg(name)
            .output()
            .unwrap()
    };
    let dump = ok(pg_dump(&alice, &shop));
    assert!(dump.contains("1\tpg-widget\n"), "{dump}");
    // The trailer, before pg_dump 15.14+'s `\unrestrict KEY` line.
    assert!(
        dump.contains("\n-- PostgreSQL database dump complete\n"),
        "{dump}"
    );
    let dump = ok(my_dump(&alice, &shop));
    assert!(dump.contains("(1,'my-widget')"), "{dump}");
    assert!(dump.contains("-- Dump completed"), "{dump}");

    // Bob reaches alice's PostgreSQL database (PUBLIC may connect) but not her table: pg_dump fails on locking
    // it, before writing anything.
    let out = pg_dump(&bob, &shop);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("permission denied for table orders"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("pg-widget"));
    // MariaDB refuses the database itself: error 1044, exit status 2.
    let out = my_dump(&bob, &shop);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("1044"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("my-widget"));
    drop(db);
}

#[test]
fn servers_side_by_side_die_when_killed_and_leave_nothing_when_dropped() {
    let started = Instant::now();
    let a = DbServers::start();
    let first = started.elapsed();
    let started = Instant::now();
    let mut b = DbServers::start();
    eprintln!(
        "start: {:.2} s, then {:.2} s (templates made on the first start in this binary)",
        first.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_ne!(a.dir(), b.dir());
    // Sockets only.
    assert_eq!(a.pg_admin("postgres", "SHOW listen_addresses"), "\n");
    assert_eq!(
        a.my_admin("SELECT @@skip_networking, @@character_set_server"),
        "1\tutf8mb4\n"
    );
    // Two separate servers of each kind.
    a.my_admin("CREATE DATABASE only_a");
    a.pg_admin("postgres", "CREATE DATABASE only_a");
    assert!(!b.my_admin("SHOW DATABASES").contains("only_a"));
    assert_eq!(
        b.pg_admin(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname = 'only_a'"
        ),
        "0\n"
    );
    // The postmaster, its auxiliary processes and mariadbd all work in the servers' directory.
    let procs = server_processes(a.dir());
    assert!(procs.contains(&a.pg_pid()) && procs.contains(&a.my_pid()));
    assert!(procs.len() >= 5, "{procs:?}");

    // Killed under a client in the middle of a query, each server takes the query down with it.
    let user = TestUser::new();
    b.add_account(&user, &[], &[]);
    let mut pg_client = user
        .command(&format!("{PG_BIN}/psql"))
        .args(["-X", "-h"])
        .arg(b.pg_socket_dir())
        .args(["-p", &b.pg_port().to_string(), "-d", "postgres"])
        .args(["-c", "SELECT pg_sleep(60)"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut my_client = user
        .command("mariadb")
        .args(["--no-defaults", "-S"])
        .arg(b.my_socket())
        .args(["-e", "SELECT SLEEP(60)"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("both queries running", Duration::from_secs(10), || {
        b.pg_admin(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'",
        ) == "1\n"
            && b.my_admin(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(60)'",
            ) == "1\n"
    });
    let killed = Instant::now();
    b.kill_pg();
    b.kill_my();
    let pg_status = wait_timeout(&mut pg_client, Duration::from_secs(10));
    let my_status = wait_timeout(&mut my_client, Duration::from_secs(10));
    assert!(killed.elapsed() < Duration::from_secs(5));
    assert!(!pg_status.success() && !my_status.success());
    assert!(server_processes(b.dir()).is_empty());
    let pg_socket = b.pg_socket_dir().join(format!(".s.PGSQL.{}", b.pg_port()));
    assert!(UnixStream::connect(pg_socket).is_err());
    assert!(UnixStream::connect(b.my_socket()).is_err());

    let dirs = [a.dir().to_path_buf(), b.dir().to_path_buf()];
    let stopping = Instant::now();
    drop(a);
    drop(b);
    eprintln!("drop: {:.2} s", stopping.elapsed().as_secs_f64());
    for dir in &dirs {
        assert!(!dir.exists(), "{}", dir.display());
        assert!(server_processes(dir).is_empty(), "{}", dir.display());
    }
}
