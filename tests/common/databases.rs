//! Real PostgreSQL 15 and MariaDB 10.11 servers for the database-dump tests: both run as plain processes of the
//! unprivileged `postgres` OS user (initdb and postgres refuse root), on Unix sockets only (no TCP), in a private
//! temporary directory that holds both data directories, both sockets and both logs. Accounts authenticate by
//! their OS user: PostgreSQL `peer`, MariaDB `unix_socket`, so a `TestUser` needs no password.
//!
//! The data directories are made once per test binary (initdb and mariadb-install-db, side by side: 0.7 s idle,
//! about 2 s on a loaded machine) into a template that `start` copies (0.1-0.2 s), and that is removed when the
//! test binary exits. A test binary that is killed leaves its directories (and servers) behind: they are the
//! processes whose working directory is below `/tmp/backupfs-test-db-*` (see `server_processes`).

use super::{ensure_packages, id_of, run_ok, TempDir, TestUser};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The PostgreSQL 15 programs (server and client): Debian's /usr/bin names are a wrapper that picks a version.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// How long a server may take to come up or go away before the test fails with its log.
const DEADLINE: Duration = Duration::from_secs(30);
/// MariaDB's settings, the same for mariadb-install-db (which runs the server to bootstrap) and every start: small
/// buffers and a 16 MiB redo log (the default 96 MiB would make the copy for each start slow), no durability.
const MARIADB_SETTINGS: &[&str] = &[
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    // What Debian's packaged configuration sets, which --no-defaults skips.
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
];

/// A PostgreSQL and a MariaDB server, stopped and removed (directory included) when dropped.
pub struct DbServers {
    dir: TempDir,
    pg_port: u16,
    my_socket: PathBuf,
    /// The server processes, children of the test: None once stopped or killed.
    pg: Option<Child>,
    my: Option<Child>,
    pg_pid: u32,
    my_pid: u32,
}

impl DbServers {
    /// Both servers started as the `postgres` OS user, sockets only (no TCP), fsync off, small buffers; returns
    /// once both accept connections. Installs the packages first if they are missing.
    pub fn start() -> DbServers {
        let template = template();
        let (uid, gid) = postgres_ids();
        // The struct exists before the first server does, so a panic below still stops what was started.
        let dir = TempDir::new("db");
        let mut s = DbServers {
            my_socket: dir.join("my.sock"),
            dir,
            // Any number works: it only names the socket file (.s.PGSQL.PORT) in this private directory, and
            // no TCP port is opened. Derived from the pid only so that concurrent test binaries' PostgreSQL
            // shared-memory keys (derived from the port) differ, which spares PostgreSQL its probing.
            pg_port: 20000 + (std::process::id() % 20000) as u16,
            pg: None,
            my: None,
            pg_pid: 0,
            my_pid: 0,
        };
        let dir = s.dir.path().to_path_buf();
        let sock = s.my_socket.clone();
        // A socket's path has at most 107 bytes; PostgreSQL's adds 17 to the directory, and a quote would need
        // quoting in postgresql.conf.
        assert!(
            dir.as_os_str().len() < 90 && !dir.to_string_lossy().contains('\''),
            "{}: too long or quoted for the sockets",
            dir.display()
        );
        // Account users traverse it to reach the sockets; only postgres writes in it.
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(template.join("pg"))
                .arg(template.join("my"))
                .arg(&dir),
        );
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("pg/postgresql.conf"))
            .unwrap();
        write!(
            conf,
            "\n# tests/common/databases.rs\nlisten_addresses = ''\nunix_socket_directories = '{}'\nport = {}\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\n",
            dir.display(),
            s.pg_port
        )
        .unwrap();
        drop(conf);

        let log = std::fs::File::create(dir.join("pg.log")).unwrap();
        let pg = s
            .as_postgres(&format!("{PG_BIN}/postgres"))
            .arg("-D")
            .arg(dir.join("pg"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        s.pg_pid = pg.id();
        s.pg = Some(pg);
        // Its standard streams closed: a caller reading a pipe that mariadbd inherited would never see its end.
        let my = s
            .as_postgres("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("my").display()))
            .arg(format!("--socket={}", sock.display()))
            .arg(format!("--pid-file={}", dir.join("my.pid").display()))
            .arg(format!("--log-error={}", dir.join("my.err").display()))
            .args(["--skip-networking", "--skip-log-bin"])
            .args(MARIADB_SETTINGS)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        s.my_pid = my.id();
        s.my = Some(my);

        // PostgreSQL says "ready" on the 8th line of postmaster.pid once it accepts connections.
        let pid_file = dir.join("pg/postmaster.pid");
        s.wait_up("PostgreSQL", |s| {
            std::fs::read_to_string(&pid_file)
                .is_ok_and(|t| t.lines().nth(7).map(str::trim) == Some("ready"))
                .then_some(())
                .ok_or(s.pg.is_none())
        });
        s.wait_up("MariaDB", |s| {
            let up = s.my_socket().exists()
                && s.as_postgres("mariadb-admin")
                    .args(["--no-defaults", "-u", "postgres", "-S"])
                    .arg(s.my_socket())
                    .arg("ping")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|st| st.success());
            up.then_some(()).ok_or(s.my.is_none())
        });
        s
    }

    /// Polls `ready` (Ok when up; Err(true) when the server is known gone) until the deadline; panics with the
    /// logs if a server exited or the deadline passed.
    fn wait_up(&mut self, what: &str, mut ready: impl FnMut(&Self) -> Result<(), bool>) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let mut exited = None;
            for child in [&mut self.pg, &mut self.my] {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    *child = None;
                    exited = Some(status);
                }
            }
            if let Some(status) = exited {
                panic!("a database server exited: {status}\n{}", self.logs());
            }
            match ready(self) {
                Ok(()) => return,
                Err(true) => panic!("{what} is not running\n{}", self.logs()),
                Err(false) => {}
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not come up within {DEADLINE:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory holding both data directories (`pg`, `my`), both sockets and both logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PostgreSQL's socket directory: `psql -h DIR -p PORT` (libpq's `host` takes a directory).
    pub fn pg_socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// PostgreSQL's port number, which here only names its socket, `DIR/.s.PGSQL.PORT`.
    pub fn pg_port(&self) -> u16 {
        self.pg_port
    }

    /// mariadbd's socket: `mariadb -S PATH`.
    pub fn my_socket(&self) -> &Path {
        &self.my_socket
    }

    /// The postmaster's pid (its backends are its children).
    pub fn pg_pid(&self) -> u32 {
        self.pg_pid
    }

    /// mariadbd's pid (one process).
    pub fn my_pid(&self) -> u32 {
        self.my_pid
    }

    /// Both servers' logs (PostgreSQL's, then MariaDB's error log), for failure messages.
    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "--- pg.log\n{}--- my.err\n{}",
            read("pg.log"),
            read("my.err")
        )
    }

    /// `sql` run by psql as the superuser `postgres` in database `db` (`-X -q -At`, ON_ERROR_STOP, statements
    /// sent one by one, so CREATE DATABASE works); panics with psql's stderr on failure, returns its stdout.
    pub fn pg_admin(&self, db: &str, sql: &str) -> String {
        let out = with_input(
            self.as_postgres(&format!("{PG_BIN}/psql"))
                .args(self.psql_args("postgres", db)),
            sql,
        );
        assert!(
            out.status.success(),
            "psql as postgres in {db} failed: {}\n{sql}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `sql` run by the mariadb client (`-N -B`) as the server's admin `postgres` (unix_socket authentication,
    /// like root); panics with its stderr on failure, returns its stdout.
    pub fn my_admin(&self, sql: &str) -> String {
        let out = with_input(
            self.as_postgres("mariadb")
                .args(self.mariadb_args("postgres", None)),
            sql,
        );
        assert!(
            out.status.success(),
            "mariadb as postgres failed: {}\n{sql}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The PostgreSQL role and the MariaDB user of OS user `user` (peer / unix_socket authentication), with
    /// PostgreSQL databases `pg_dbs` owned by it and MariaDB databases `my_dbs` it has ALL on through
    /// `GRANT ALL ON \`<user>\_%\`.*` (so every name in `my_dbs` must start with `<user>_`).
    pub fn add_account(&self, user: &TestUser, pg_dbs: &[&str], my_dbs: &[&str]) {
        let name = &user.name;
        let mut sql = format!("CREATE ROLE {} LOGIN;\n", pg_ident(name));
        for db in pg_dbs {
            sql += &format!(
                "CREATE DATABASE {} OWNER {};\n",
                pg_ident(db),
                pg_ident(name)
            );
        }
        self.pg_admin("postgres", &sql);

        let account = format!("{}@'localhost'", my_string(name));
        // In a GRANT's database name, _ and % are wildcards unless escaped.
        let pattern: String = name
            .chars()
            .flat_map(|c| match c {
                '_' | '%' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        let mut sql = format!(
            "CREATE USER {account} IDENTIFIED VIA unix_socket;\nGRANT ALL ON {}.* TO {account};\n",
            my_ident(&format!("{pattern}\\_%"))
        );
        for db in my_dbs {
            assert!(
                db.starts_with(&format!("{name}_")),
                "MariaDB database {db} of {name} must start with {name}_ (the grant's pattern)"
            );
            sql += &format!("CREATE DATABASE {};\n", my_ident(db));
        }
        self.my_admin(&sql);
    }

    /// `sql` run by psql as OS user `user` (its own role, peer authentication) in database `db`, with `-X -q -At`
    /// and ON_ERROR_STOP (exit status 3 on an SQL error); its output whatever the status.
    pub fn pg_as(&self, user: &TestUser, db: &str, sql: &str) -> Output {
        with_input(
            user.command(&format!("{PG_BIN}/psql"))
                .args(self.psql_args(&user.name, db)),
            sql,
        )
    }

    /// `sql` run by the mariadb client (`--no-defaults -N -B`) as OS user `user` (its own account, unix_socket
    /// authentication) in database `db`; its output whatever the status.
    pub fn my_as(&self, user: &TestUser, db: &str, sql: &str) -> Output {
        with_input(
            user.command("mariadb")
                .args(self.mariadb_args(&user.name, Some(db))),
            sql,
        )
    }

    /// SIGKILLs the postmaster and then every process of this PostgreSQL (its backends would otherwise finish
    /// what they are doing: a dump in progress must fail), and waits until they are gone.
    pub fn kill_pg(&mut self) {
        if let Some(mut c) = self.pg.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_all_in(&self.dir.join("pg"), Duration::ZERO);
    }

    /// SIGKILLs mariadbd and waits until it is gone.
    pub fn kill_my(&mut self) {
        if let Some(mut c) = self.my.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `program` run as the `postgres` OS user, from (and with HOME in) the servers' directory.
    fn as_postgres(&self, program: &str) -> Command {
        let (uid, gid) = postgres_ids();
        let mut c = Command::new(program);
        // As root, std also drops the supplementary groups.
        c.uid(uid)
            .gid(gid)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env("USER", "postgres")
            .env("LOGNAME", "postgres")
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null());
        c
    }

    fn psql_args(&self, role: &str, db: &str) -> Vec<String> {
        let s = |x: &str| x.to_string();
        vec![
            s("-X"),
            s("-q"),
            s("-At"),
            s("-v"),
            s("ON_ERROR_STOP=1"),
            s("-h"),
            self.pg_socket_dir().display().to_string(),
            s("-p"),
            self.pg_port.to_string(),
            s("-U"),
            s(role),
            s("-d"),
            s(db),
            s("-f"),
            s("-"),
        ]
    }

    fn mariadb_args(&self, user: &str, db: Option<&str>) -> Vec<String> {
        let mut args = vec![
            "--no-defaults".to_string(),
            "-N".into(),
            "-B".into(),
            "-u".into(),
            user.into(),
            "-S".into(),
            self.my_socket().display().to_string(),
        ];
        args.extend(db.map(str::to_string));
        args
    }
}

impl Drop for DbServers {
    fn drop(&mut self) {
        // The data go with the directory: PostgreSQL's immediate shutdown (SIGQUIT: the postmaster takes its
        // backends down first), mariadbd's normal one (SIGTERM).
        if let Some(mut c) = self.pg.take() {
            // SAFETY: signalling a child this struct spawned and has not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGQUIT) };
            super::wait_timeout(&mut c, Duration::from_secs(10));
        }
        if let Some(mut c) = self.my.take() {
            // SAFETY: as above.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            super::wait_timeout(&mut c, Duration::from_secs(20));
        }
        // Whatever is left (backends of a killed postmaster) works in this directory; nothing else does.
        kill_all_in(self.dir.path(), Duration::from_secs(10));
        // TempDir's own drop removes the directory.
    }
}

/// The pids of the live processes whose working directory is `dir` or below it, also after `dir` was removed
/// (every PostgreSQL process works in its data directory, mariadbd in its own).
pub fn server_processes(dir: &Path) -> Vec<u32> {
    let dir = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            // A zombie has no working directory: it is gone for this purpose.
            let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
                return false;
            };
            let cwd = cwd.to_string_lossy();
            cwd.strip_prefix(&*dir).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || rest == " (deleted)"
            })
        })
        .collect()
}

/// Waits up to `grace` for the processes working below `dir` to end, then SIGKILLs those left and waits (10 s at
/// most) for them to go.
fn kill_all_in(dir: &Path, grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        let left = server_processes(dir);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for &pid in &left {
                // SAFETY: plain kill(2) of a process of this server (it works in the server's private directory).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if Instant::now() > deadline + Duration::from_secs(10) {
            // Said, not panicked: this runs in Drop, maybe while a failed test unwinds (a panic would abort).
            eprintln!("processes {left:?} in {} do not die", dir.display());
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn postgres_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| (id_of("postgres", "-u"), id_of("postgres", "-g")))
}

/// The data directories as initdb and mariadb-install-db leave them, made once per test binary (in parallel) and
/// removed when it exits.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_template() {
        if let Some(p) = PATH.get() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
    TEMPLATE.get_or_init(|| {
        install();
        let dir = PATH.get_or_init(|| {
            // SAFETY: registers a plain function (no captured state) that removes a directory at exit.
            unsafe { libc::atexit(remove_template) };
            std::env::temp_dir().join(format!("backupfs-test-dbtemplate-{}", std::process::id()))
        });
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
        let started = Instant::now();
        let as_postgres = |program: &str| {
            let mut c = Command::new(program);
            c.uid(uid)
                .gid(gid)
                .current_dir(dir)
                .env("HOME", dir)
                .env("USER", "postgres")
                .env("LOGNAME", "postgres")
                .env("LC_ALL", "C.UTF-8")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c
        };
        let initdb = as_postgres(&format!("{PG_BIN}/initdb"))
            .arg("-D")
            .arg(dir.join("pg"))
            .args(["-U", "postgres", "--auth-local=peer", "--auth-host=reject"])
            .args([
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            ])
            .spawn()
            .expect("spawn initdb");
        // It runs mariadbd --bootstrap, which takes the server settings; root@localhost and postgres@localhost
        // are made with unix_socket authentication (the second after $USER unless named).
        let install_db = as_postgres("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.join("my").display()))
            .args([
                "--auth-root-authentication-method=socket",
                "--auth-root-socket-user=postgres",
            ])
            .arg("--skip-test-db")
            .args(MARIADB_SETTINGS)
            .spawn()
            .expect("spawn mariadb-install-db");
        for (what, child) in [("initdb", initdb), ("mariadb-install-db", install_db)] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{what} failed: {}\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!(
            "database templates made in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        dir.clone()
    })
}

/// The packages, installed if missing, as .ci/install-deps does: a first install of postgresql-common must not
/// make postgresql-15 create (and try to start) a "main" cluster, which a createcluster.conf already there prevents.
fn install() {
    let conf = Path::new("/etc/postgresql-common/createcluster.conf");
    let common_installed = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "postgresql-common"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"));
    if !common_installed && !conf.exists() {
        std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
        std::fs::write(
            conf,
            "# Written by backupfs's tests/common/databases.rs before postgresql-common was installed: its tests\n\
             # run their own servers, so no \"main\" cluster on installing a postgresql-NN package.\n\
             create_main_cluster = false\n",
        )
        .unwrap();
    }
    ensure_packages(&["postgresql-15", "mariadb-server-core", "mariadb-client"]);
}

/// Runs `cmd` with `input` on its standard input; its output whatever the status.
fn with_input(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// A PostgreSQL identifier, quoted.
fn pg_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A MariaDB identifier, quoted.
fn my_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// A MariaDB string literal.
fn my_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}
