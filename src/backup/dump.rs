//! Database dumps: each database of an account as one plain SQL file in the snapshot, `mysql/<db>.sql` or
//! `postgresql/<db>.sql`, streamed from the dump program's stdout straight into the chunker.
//!
//! The programs run as the account's own user (`child`): the server's peer / unix_socket authentication keeps
//! one account out of another's databases, and discovery lists what that user owns (PostgreSQL) or may see
//! (MariaDB). The flags are chosen for nightly deduplication and a plain restore with the server's own client:
//! one row per INSERT or COPY line, no dump date, never a compressed format.
//!
//! A dump is trusted only if its program exited 0 within its deadline and the stream ends with the program's
//! own end-of-dump line: a killed connection can leave a clean-looking file. Anything else stores
//! `<db>.sql.FAILED`, a short note, instead of the dump.

use super::child::{self, Finished, RunAs};
use std::ffi::OsString;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::Duration;

/// The deadline of one dump when the configuration gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(4 * 3600);
/// How much of a stream's end is kept to look for the end-of-dump line.
const TAIL: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    MariaDb,
    PostgreSql,
}

impl Engine {
    /// The directory of the snapshot holding this engine's dumps.
    pub fn dir(self) -> &'static str {
        match self {
            Engine::MariaDb => "mysql",
            Engine::PostgreSql => "postgresql",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Engine::MariaDb => "mariadb",
            Engine::PostgreSql => "postgresql",
        }
    }

    /// The line the dump program writes last, only after every table.
    fn trailer(self) -> &'static [u8] {
        match self {
            Engine::MariaDb => b"-- Dump completed",
            Engine::PostgreSql => b"-- PostgreSQL database dump complete",
        }
    }
}

/// Which databases of a server an account has dumped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Names {
    /// Every database the account's user owns (PostgreSQL) or may see (MariaDB), system schemas aside.
    Discover,
    Listed(Vec<String>),
}

/// One database server of an account, from `[accounts.NAME] databases = [...]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub engine: Engine,
    /// MariaDB: the server's socket file. PostgreSQL: the directory of its socket.
    pub socket: PathBuf,
    /// PostgreSQL: the port, which names the socket file (`.s.PGSQL.<port>`).
    pub port: u16,
    pub names: Names,
    pub timeout: Duration,
}

/// A database name usable as a file name in the snapshot and as an argument.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == 0 || b == b'\n')
}

/// MariaDB's own schemas: never an account's data, and not dumpable with `--single-transaction`.
const MARIADB_SYSTEM: [&str; 4] = ["information_schema", "performance_schema", "mysql", "sys"];

/// A PostgreSQL connection string value, quoted as libpq wants (`'...'` with `\'` and `\\`).
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A MariaDB string literal.
fn sql_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn pg_conninfo(server: &Server, user: &RunAs, db: &str) -> OsString {
    format!(
        "dbname={} host={} port={} user={}",
        conninfo_quote(db),
        conninfo_quote(&server.socket.to_string_lossy()),
        server.port,
        conninfo_quote(&user.name)
    )
    .into()
}

fn mariadb_client_args(server: &Server, user: &RunAs) -> Vec<OsString> {
    let mut socket = OsString::from("--socket=");
    socket.push(&server.socket);
    vec![
        "--no-defaults".into(),
        socket,
        format!("--user={}", user.name).into(),
    ]
}

/// The first of `programs` found in the directories `child::spawn` searches: MariaDB's names first, MySQL's
/// after, so that either client package works.
fn program(programs: &[&'static str]) -> &'static str {
    for p in programs {
        for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
            if std::path::Path::new(dir).join(p).exists() {
                return p;
            }
        }
    }
    programs[0]
}

/// Runs a short query program as the account and returns its stdout, or a one-line reason.
fn query(
    program: &str,
    args: Vec<OsString>,
    user: &RunAs,
    deadline: Duration,
) -> Result<Vec<u8>, String> {
    let mut running = child::spawn(program, &args, user, deadline).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    if let Some(mut stdout) = running.stdout.take() {
        // A listing of names: a few kilobytes; more than 16 MiB is not a listing.
        let _ = stdout.by_ref().take(16 << 20).read_to_end(&mut out);
    }
    let done = running.finish().map_err(|e| e.to_string())?;
    if done.success() {
        Ok(out)
    } else {
        Err(format!(
            "{}: {}",
            done.describe(deadline),
            last_line(&done.stderr_tail)
        ))
    }
}

fn last_line(text: &str) -> &str {
    text.trim_end().lines().last().unwrap_or("").trim()
}

/// The databases to dump: the configured list, or what the server shows the account's user.
pub fn database_names(server: &Server, user: &RunAs) -> Result<Vec<String>, String> {
    let deadline = server.timeout.min(Duration::from_secs(300));
    let mut names = match &server.names {
        Names::Listed(names) => names.clone(),
        Names::Discover => match server.engine {
            Engine::MariaDb => {
                let mut args = mariadb_client_args(server, user);
                args.extend(
                    [
                        "--batch",
                        "--skip-column-names",
                        "--raw",
                        "--execute",
                        "SHOW DATABASES",
                    ]
                    .map(OsString::from),
                );
                let out = query(program(&["mariadb", "mysql"]), args, user, deadline)?;
                String::from_utf8_lossy(&out)
                    .lines()
                    .filter(|n| !MARIADB_SYSTEM.contains(n))
                    .map(str::to_owned)
                    .collect()
            }
            Engine::PostgreSql => {
                let sql = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate \
                           AND datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user) ORDER BY 1";
                let args: Vec<OsString> = vec![
                    "--no-password".into(),
                    "--no-psqlrc".into(),
                    "--no-align".into(),
                    "--tuples-only".into(),
                    "--record-separator-zero".into(),
                    "--dbname".into(),
                    pg_conninfo(server, user, "postgres"),
                    "--command".into(),
                    sql.into(),
                ];
                let out = query("psql", args, user, deadline)?;
                out.split(|&b| b == 0)
                    .map(|n| String::from_utf8_lossy(n).trim_matches('\n').to_owned())
                    .filter(|n| !n.is_empty())
                    .collect()
            }
        },
    };
    names.sort();
    names.dedup();
    Ok(names)
}

/// The MariaDB tables of `db` that `--single-transaction` cannot snapshot (MyISAM, Aria, MEMORY...): named in a
/// warning. Empty when the query itself fails (the dump then says why).
pub fn inconsistent_tables(server: &Server, user: &RunAs, db: &str) -> Vec<String> {
    if server.engine != Engine::MariaDb {
        return Vec::new();
    }
    let sql = format!(
        "SELECT CONCAT(TABLE_NAME, ' (', ENGINE, ')') FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} \
         AND TABLE_TYPE = 'BASE TABLE' AND ENGINE <> 'InnoDB' ORDER BY 1",
        sql_quote(db)
    );
    let mut args = mariadb_client_args(server, user);
    args.extend(["--batch", "--skip-column-names", "--execute"].map(OsString::from));
    args.push(sql.into());
    let out = query(
        program(&["mariadb", "mysql"]),
        args,
        user,
        Duration::from_secs(60),
    );
    out.map(|o| {
        String::from_utf8_lossy(&o)
            .lines()
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// The dump program and its arguments for one database.
fn dump_command(server: &Server, user: &RunAs, db: &str) -> (&'static str, Vec<OsString>) {
    match server.engine {
        Engine::MariaDb => {
            let mut args = mariadb_client_args(server, user);
            args.extend(
                [
                    // One consistent InnoDB snapshot, without locking the tables against the site.
                    "--single-transaction",
                    // Identical bytes for identical data: no date, one row per INSERT (a changed row changes
                    // one line), and one transaction around the inserts so that a restore is not a commit per row.
                    "--skip-dump-date",
                    "--skip-extended-insert",
                    "--no-autocommit",
                    // BLOBs as hex: the dump stays text whatever the bytes.
                    "--hex-blob",
                    "--routines",
                    "--triggers",
                    "--default-character-set=utf8mb4",
                    "--",
                ]
                .map(OsString::from),
            );
            args.push(db.into());
            (program(&["mariadb-dump", "mysqldump"]), args)
        }
        Engine::PostgreSql => {
            let args = vec![
                "--no-password".into(),
                // Plain SQL (COPY lines, one row per line): a compressed custom format would be new bytes
                // every night.
                "--format=plain".into(),
                "--dbname".into(),
                pg_conninfo(server, user, db),
            ];
            ("pg_dump", args)
        }
    }
}

/// A stream that keeps its last `TAIL` bytes, to check the end-of-dump line after the chunker consumed it.
struct Tail<R> {
    inner: R,
    tail: Vec<u8>,
}

impl<R: Read> Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tail.extend_from_slice(&buf[..n]);
        if self.tail.len() > 2 * TAIL {
            self.tail.drain(..self.tail.len() - TAIL);
        }
        Ok(n)
    }
}

/// Why a dump is not trusted, in one line, or None if it is.
fn failure(
    engine: Engine,
    finished: &Finished,
    deadline: Duration,
    tail: &[u8],
    read: &io::Result<u64>,
) -> Option<String> {
    if !finished.success() {
        let err = last_line(&finished.stderr_tail);
        return Some(if err.is_empty() {
            finished.describe(deadline)
        } else {
            format!("{}: {err}", finished.describe(deadline))
        });
    }
    if let Err(e) = read {
        return Some(format!("reading the dump: {e}"));
    }
    let trailer = engine.trailer();
    if !tail.windows(trailer.len()).any(|w| w == trailer) {
        return Some(format!(
            "the dump does not end with \"{}\": incomplete",
            String::from_utf8_lossy(trailer)
        ));
    }
    None
}

/// Runs the dump of `db` and hands its stdout to `store`, which chunks it into the repository (and returns
/// the bytes read, or the repository's error, which ends everything: the child is then killed).
/// Returns `Ok(None)` for a trusted dump, `Ok(Some((reason, stderr tail)))` for a failed one.
pub fn run_dump<E>(
    server: &Server,
    user: &RunAs,
    db: &str,
    store: impl FnOnce(&mut dyn Read) -> Result<io::Result<u64>, E>,
) -> Result<Option<(String, String)>, E> {
    let (program, args) = dump_command(server, user, db);
    let mut running = match child::spawn(program, &args, user, server.timeout) {
        Ok(r) => r,
        Err(e) => return Ok(Some((e.to_string(), String::new()))),
    };
    let Some(stdout) = running.stdout.take() else {
        return Ok(Some(("no stdout pipe".into(), String::new())));
    };
    let mut tail = Tail {
        inner: stdout,
        tail: Vec::new(),
    };
    let read = match store(&mut tail) {
        Ok(read) => read,
        Err(e) => {
            running.abort();
            return Err(e);
        }
    };
    drop(tail.inner);
    let finished = match running.finish() {
        Ok(f) => f,
        Err(e) => return Ok(Some((format!("waiting for {program}: {e}"), String::new()))),
    };
    let reason = failure(server.engine, &finished, server.timeout, &tail.tail, &read);
    Ok(reason.map(|r| (r, finished.stderr_tail)))
}

/// The text of `<db>.sql.FAILED`: what failed, when, and the end of the program's stderr. Dump programs print
/// no secrets there; nothing secret is passed to them in the first place.
pub fn failure_note(engine: Engine, db: &str, time: &str, reason: &str, stderr: &str) -> Vec<u8> {
    let mut note = format!(
        "backupfs: the {} dump of database {db} failed; this snapshot holds no dump of it.\n\
         time: {time}\nreason: {reason}\n",
        engine.label()
    );
    let stderr = stderr.trim_end();
    if !stderr.is_empty() {
        note.push_str("end of the dump program's stderr:\n");
        for line in stderr.lines() {
            note.push_str("  ");
            note.push_str(line);
            note.push('\n');
        }
    }
    note.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_quoting() {
        assert!(valid_name("alice_wp") && valid_name("a-b.c"));
        assert!(!valid_name("") && !valid_name("..") && !valid_name("a/b") && !valid_name("a\nb"));
        assert_eq!(conninfo_quote(r"it's\x"), r"'it\'s\\x'");
        assert_eq!(sql_quote("o'k"), r"'o\'k'");
    }

    #[test]
    fn only_a_clean_exit_with_the_end_of_dump_line_is_trusted() {
        use std::os::unix::process::ExitStatusExt;
        let done = |raw: i32, timed_out: bool| Finished {
            status: std::process::ExitStatus::from_raw(raw),
            timed_out,
            stderr_tail: "pg_dump: error: connection lost\n".into(),
        };
        let deadline = Duration::from_secs(5);
        let complete = b"...\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc\n";
        let cut = b"COPY public.t (i) FROM stdin;\n1\n2\n\\.\n";
        let read = Ok(100);
        let pg = Engine::PostgreSql;
        assert_eq!(
            failure(pg, &done(0, false), deadline, complete, &read),
            None
        );
        let why = failure(pg, &done(0, false), deadline, cut, &read).unwrap();
        assert!(why.contains("incomplete"), "{why}");
        let why = failure(pg, &done(1 << 8, false), deadline, complete, &read).unwrap();
        assert_eq!(why, "exit status 1: pg_dump: error: connection lost");
        let why = failure(pg, &done(9, false), deadline, complete, &read).unwrap();
        assert!(why.starts_with("killed by signal 9"), "{why}");
        let why = failure(pg, &done(9, true), deadline, cut, &read).unwrap();
        assert!(why.starts_with("timed out after 5 s"), "{why}");
        let broken: io::Result<u64> = Err(io::Error::other("pipe"));
        assert!(failure(pg, &done(0, false), deadline, complete, &broken).is_some());
        let my = Engine::MariaDb;
        assert!(failure(my, &done(0, false), deadline, complete, &read).is_some());
        assert_eq!(
            failure(
                my,
                &done(0, false),
                deadline,
                b"\n-- Dump completed\n",
                &read
            ),
            None
        );
    }

    #[test]
    fn tail_keeps_the_end() {
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut t = Tail {
            inner: &data[..],
            tail: Vec::new(),
        };
        let mut out = Vec::new();
        t.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        assert!(t.tail.len() >= TAIL && data.ends_with(&t.tail));
    }
}
