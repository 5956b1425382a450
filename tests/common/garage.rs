//! A real 3-node Garage S3 cluster on 127.0.0.1 (replication factor 3, one zone per node) for black-box tests of
//! the S3 backend (tests/s3_*.rs), with node faults: kill, SIGSTOP/SIGCONT, restart. Garage (AGPL) is a test
//! server run as separate processes, never a dependency; `.ci/install-garage` builds it. Each cluster owns a
//! temporary directory (configs, data, one log per node) and its own ports, so tests may run clusters in parallel.

use super::TempDir;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KEY_ID: &str = "GK0123456789abcdef01234567";
pub const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const BUCKET: &str = "backups";
pub const REGION: &str = "garage";
/// How long any wait on the cluster may take before the test fails with the nodes' logs.
const DEADLINE: Duration = Duration::from_secs(60);

pub struct Garage {
    dir: TempDir,
    bin: PathBuf,
    /// Node n listens on base + 3(n-1) (S3), +1 (RPC), +2 (admin).
    base: u16,
    /// The servers this struct started; None once killed.
    nodes: [Option<Child>; 3],
}

impl Garage {
    /// Starts the cluster: three servers, connected, laid out, with the key `KEY_ID` owning bucket `BUCKET`.
    pub fn start() -> Garage {
        let started = Instant::now();
        // The struct exists before the first child does, so a panic below still kills what was started.
        let mut g = Garage {
            dir: TempDir::new("garage"),
            bin: find_binary(),
            base: free_port_block(),
            nodes: [None, None, None],
        };
        // A fresh RPC secret per cluster: nodes of two clusters side by side can never join each other.
        let mut random = [0u8; 32];
        let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut urandom, &mut random).unwrap();
        let secret: String = random.iter().map(|b| format!("{b:02x}")).collect();
        for n in 1..=3 {
            for sub in ["meta", "data"] {
                std::fs::create_dir_all(g.dir.join(&format!("g{n}/{sub}"))).unwrap();
            }
            std::fs::write(g.conf(n), g.config(n, &secret)).unwrap();
            g.spawn(n);
        }
        // A server has its node key once its RPC port listens: CLI calls before that could fail or race it.
        for n in 1..=3 {
            g.wait_port(n, 1);
        }
        g.until_ok(1, "status");
        let ids: Vec<String> = (1..=3)
            .map(|n| g.until_ok(n, "node id -q").trim().to_string())
            .collect();
        let mut setup: Vec<String> = ids[1..]
            .iter()
            .map(|id| format!("node connect {id}"))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            let prefix = &id[..16.min(id.len())];
            setup.push(format!("layout assign -z dc{} -c 1G {prefix}", i + 1));
        }
        setup.push("layout apply --version 1".into());
        setup.push(format!("key import --yes -n test {KEY_ID} {SECRET_KEY}"));
        setup.push(format!("bucket create {BUCKET}"));
        setup.push(format!(
            "bucket allow --read --write --owner {BUCKET} --key test"
        ));
        for cmd in &setup {
            g.until_ok(1, cmd);
        }
        g.wait_ready();
        let dir = g.dir.path().display();
        eprintln!("garage cluster up in {:.1?} ({dir})", started.elapsed());
        g
    }

    /// Waits until every running node answers `bucket info` for the bucket (so has the layout and the bucket).
    /// A SIGSTOPped node never answers: cont it first.
    pub fn wait_ready(&self) {
        for n in (1..=3).filter(|&n| self.nodes[n - 1].is_some()) {
            self.until_ok(n, &format!("bucket info {BUCKET}"));
        }
    }

    /// Node n's S3 endpoint, `http://127.0.0.1:PORT` (n in 1..=3).
    pub fn endpoint(&self, n: usize) -> String {
        format!("http://127.0.0.1:{}", self.port(n, 0))
    }

    pub fn endpoints(&self) -> Vec<String> {
        (1..=3).map(|n| self.endpoint(n)).collect()
    }

    /// A repository URL under `prefix` in the bucket, through node 1.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3:{}/{BUCKET}/{prefix}", self.endpoint(1))
    }

    /// The credentials, as environment variables for `backupfs`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
        ]
    }

    /// A backupfs configuration file naming nodes 2 and 3 as further endpoints (node 1 is in the `--repo` URL).
    pub fn config_toml(&self, state_dir: &Path) -> String {
        let state_dir = toml_escape(&state_dir.to_string_lossy());
        let (e2, e3) = (self.endpoint(2), self.endpoint(3));
        format!("state_dir = \"{state_dir}\"\n\n[s3]\nendpoints = [\"{e2}\", \"{e3}\"]\nregion = \"{REGION}\"\n")
    }

    /// Node n's log (server stdout and stderr, appended across restarts).
    pub fn log(&self, n: usize) -> PathBuf {
        self.dir.join(&format!("g{n}.log"))
    }

    /// SIGKILLs node n (a crash) and reaps it.
    pub fn kill(&mut self, n: usize) {
        let mut child = self.nodes[n - 1]
            .take()
            .unwrap_or_else(|| panic!("garage node {n} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGSTOPs node n: a partition, not a crash (its ports still accept connections, nothing answers).
    pub fn stop(&self, n: usize) {
        self.signal(n, libc::SIGSTOP);
    }

    pub fn cont(&self, n: usize) {
        self.signal(n, libc::SIGCONT);
    }

    /// Starts node n again with its configuration and data (killing it first if it still runs) and waits for
    /// its S3 port; it rejoins the others by itself. Call `wait_ready` to wait for the cluster.
    pub fn restart(&mut self, n: usize) {
        if self.nodes[n - 1].is_some() {
            self.kill(n);
        }
        self.spawn(n);
        self.wait_port(n, 0);
    }

    /// The last lines of every node's log, for failure messages (the directory goes with the struct).
    pub fn logs_tail(&self) -> String {
        let mut s = String::new();
        for n in 1..=3 {
            let log = std::fs::read_to_string(self.log(n)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            s += &format!("--- garage node {n}, last lines of its log:\n{tail}\n");
        }
        s
    }

    fn signal(&self, n: usize, sig: libc::c_int) {
        let child = self.nodes[n - 1].as_ref();
        let pid = child
            .unwrap_or_else(|| panic!("garage node {n} is not running"))
            .id();
        // SAFETY: kill(2) touches no memory of ours; the pid is our own unreaped child, so no other process.
        unsafe { libc::kill(pid as libc::pid_t, sig) };
    }

    fn port(&self, n: usize, kind: u16) -> u16 {
        assert!((1..=3).contains(&n), "garage nodes are 1, 2 and 3, not {n}");
        self.base + 3 * (n as u16 - 1) + kind
    }

    fn conf(&self, n: usize) -> PathBuf {
        self.dir.join(&format!("g{n}.toml"))
    }

    fn config(&self, n: usize, secret: &str) -> String {
        let d = self.dir.join(&format!("g{n}"));
        let meta = toml_escape(&d.join("meta").to_string_lossy());
        let data = toml_escape(&d.join("data").to_string_lossy());
        let (s3, rpc, admin) = (self.port(n, 0), self.port(n, 1), self.port(n, 2));
        // fsync off: the tests fail nodes by killing processes, not by cutting power.
        format!(
            r#"metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "lmdb"
replication_factor = 3
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#
        )
    }

    /// `garage -c gN.toml`, shielded from the environment: GARAGE_RPC_HOST would send the CLI elsewhere, a
    /// RUST_LOG meant for backupfs would flood the logs.
    fn garage(&self, n: usize) -> Command {
        let mut c = Command::new(&self.bin);
        for var in [
            "GARAGE_RPC_HOST",
            "GARAGE_RPC_SECRET",
            "GARAGE_RPC_SECRET_FILE",
            "RUST_LOG",
        ] {
            c.env_remove(var);
        }
        c.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .arg("-c")
            .arg(self.conf(n));
        c
    }

    fn spawn(&mut self, n: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(n));
        let log = log.unwrap();
        let mut cmd = self.garage(n);
        cmd.arg("server")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        self.nodes[n - 1] = Some(child);
    }

    /// Runs `garage -c gN.toml ARGS` (ARGS split at spaces); None if it took longer than `limit` (then
    /// killed): a call through a stopped node waits on RPC.
    fn cli(&self, n: usize, args: &str, limit: Duration) -> Option<Output> {
        let mut cmd = self.garage(n);
        cmd.args(args.split_whitespace())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let deadline = Instant::now() + limit;
        // The outputs are a few lines: they fit the pipes, so polling before reading cannot deadlock.
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(child.wait_with_output().unwrap())
    }

    /// Retries a CLI command on node n until it succeeds (or says the thing "already exists": an earlier try
    /// did it); its stdout.
    fn until_ok(&self, n: usize, args: &str) -> String {
        self.retry(&format!("`garage {args}` on node {n}"), || {
            let out = self.cli(n, args, Duration::from_secs(10));
            let msg = match &out {
                Some(o) => format!("{}: {}{}", o.status, lossy(&o.stdout), lossy(&o.stderr)),
                None => "timed out".into(),
            };
            match out {
                Some(o) if o.status.success() || msg.contains("already exists") => {
                    Ok(lossy(&o.stdout))
                }
                _ => Err(msg),
            }
        })
    }

    /// Waits until node n accepts connections on its S3 (kind 0) or RPC (kind 1) port.
    fn wait_port(&self, n: usize, kind: u16) {
        let port = self.port(n, kind);
        self.retry(&format!("node {n} listening on {port}"), || {
            TcpStream::connect(("127.0.0.1", port))
                .map(drop)
                .map_err(|e| e.to_string())
        })
    }

    /// Calls `attempt` until it succeeds; panics with its last error and the logs after DEADLINE, or at once
    /// if a node exited meanwhile (its port taken by someone else, a bad config).
    fn retry<T>(&self, what: &str, mut attempt: impl FnMut() -> Result<T, String>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let err = match attempt() {
                Ok(v) => return v,
                Err(e) => e,
            };
            let dead = (1..=3).find(|&n| self.exited(n));
            if dead.is_some() || Instant::now() > deadline {
                let why = dead.map_or(String::new(), |n| format!(" (node {n} exited)"));
                panic!("garage: {what} failed{why}: {err}\n{}", self.logs_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether node n (started, not yet reaped) has exited: a zombie in /proc, seen without `&mut Child`.
    fn exited(&self, n: usize) -> bool {
        self.nodes[n - 1].as_ref().is_some_and(|c| {
            let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.id()));
            // The state follows the command name's closing parenthesis (the name may hold one too).
            stat.unwrap_or_default()
                .rsplit(") ")
                .next()
                .is_some_and(|s| s.starts_with('Z'))
        })
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs_tail());
        }
        for child in self.nodes.iter_mut().flatten() {
            // SIGCONT first, so that a stopped node dies and is reaped like the others.
            // SAFETY: kill(2) touches no memory of ours; the pid is our own unreaped child, so no other process.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
            let _ = child.kill();
        }
        for child in self.nodes.iter_mut().flatten() {
            let _ = child.wait();
        }
        // `dir` (a TempDir) is removed after this, once no server writes to it.
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// GARAGE_BIN, else the cache `.ci/install-garage` fills, else `garage` on PATH.
fn find_binary() -> PathBuf {
    let var = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("GARAGE_BIN") {
        assert!(p.is_file(), "GARAGE_BIN={} is not a file", p.display());
        return p;
    }
    let cache =
        var("BACKUPFS_TEST_CACHE").or_else(|| var("HOME").map(|h| h.join(".cache/backupfs")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path).map(|d| d.join("garage"));
    let mut candidates = cache
        .map(|c| c.join("garage-2.5.0/bin/garage"))
        .into_iter()
        .chain(on_path);
    candidates
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{NO_GARAGE}"))
}

const NO_GARAGE: &str =
    "no garage binary for the S3 tests: run .ci/install-garage (it builds Garage 2.5.0 \
    into ${BACKUPFS_TEST_CACHE:-~/.cache/backupfs}/garage-2.5.0), or set GARAGE_BIN";

/// The first port of 9 free consecutive ones (3 per node). Blocks of 10 in 20000..32000, below Linux's ephemeral
/// range (32768 and up), so the nodes' own outgoing connections and `free_port()` never take them. The start
/// depends on the pid and a process-wide counter moves on for every cluster, so parallel tests in one binary
/// never share a block, and concurrent test programs start far apart; a block is checked free by binding it.
fn free_port_block() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const BLOCKS: u32 = 1200;
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..BLOCKS {
        let block = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % BLOCKS;
        let base = (20_000 + block * 10) as u16;
        let held: Result<Vec<TcpListener>, _> = (0..9)
            .map(|k| TcpListener::bind(("127.0.0.1", base + k)))
            .collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no 9 free consecutive ports in 127.0.0.1:20000-31999");
}
