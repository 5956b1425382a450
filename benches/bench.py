#!/usr/bin/env python3
"""Benchmark backupfs (and backupfs-enc: encrypted at rest) against restic, borg and squashfuse on one gen_tree
corpus, in one run.

    python3 benches/bench.py --scale small|medium [--install-peers] [--out DIR]
    python3 benches/bench.py --s3 --scale small [--systems backupfs,restic]

Builds backupfs (release), generates the corpus with fixtures/gen_tree.py, and has every installed system
back up the same tree, phase by phase, systems taking turns: initial backup, days 1-3 of `gen_tree mutate`,
a no-change backup, then no-change backups up to 30 snapshots.  Then, on fresh mounts: mount start-up,
metadata walk, sequential reads of the large files (repository in page cache, cold, warm), `cp -a www/`,
and the daemon's peak RSS; the same walk, reads and copy on the source tree are the physical baseline.
Every byte read through a mount is checked against the source; a mismatch marks the figure WRONG.
Prints a table and writes results.tsv, results.json and bench.log to the out dir.  See benches/README.md.

With --s3, the repositories of backupfs and restic (the peers with an S3 backend) live under their own prefix
of one bucket of a 3-node Garage cluster that the script starts in its work directory and stops at exit.

Standard library only.  Runs as root on Linux (FUSE mounts, drop_caches).  Everything it mounts is
unmounted and every process it starts is stopped on exit, Ctrl-C or error.
"""

import argparse
import contextlib
import glob
import hashlib
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN_TREE = os.path.join(ROOT, "fixtures", "gen_tree.py")
BACKUPFS = os.path.join(ROOT, "target", "release", "backupfs")
SEED = "bench"
LARGE_FILES = ("db/dump.sql", "bin/blob.bin")   # read sequentially; sparse/ is never read
SMALL_TREE = "www"                               # copied out with cp -a
DAYS = 3                                         # gen_tree mutate days between incremental backups
SNAPSHOTS = 30
FIRST_SNAPSHOT = datetime(2026, 11, 2, 3, 0, tzinfo=timezone.utc)  # after every day-0 mtime
READ_CHUNK = 1 << 20
PEER_PACKAGES = ["restic", "borgbackup", "python3-pyfuse3", "squashfuse", "squashfs-tools"]
MIB = 1 << 20
# --s3: the Garage cluster (the same fixed test key as tests/common/garage.rs; the cluster lives only on 127.0.0.1)
GARAGE_VERSION = "2.5.0"
S3_BUCKET = "bench"
S3_REGION = "garage"
S3_KEY_ID = "GK0123456789abcdef01234567"
S3_SECRET = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
S3_DEADLINE = 60   # seconds any wait on the cluster may take

# (key, label, unit). Lower is better for every figure.
METRICS = [
    ("backup_initial_s", "initial backup", "s"),
    ("backup_initial_cpu_s", "initial backup, CPU user+sys", "s"),
    ("repo_initial_mib", "repository after initial backup", "MiB"),
    ("backup_day1_s", "incremental backup, day 1", "s"),
    ("backup_day2_s", "incremental backup, day 2", "s"),
    ("backup_day3_s", "incremental backup, day 3", "s"),
    ("repo_growth_mib", "repository growth, days 1-3", "MiB"),
    ("backup_nochange_s", "no-change backup", "s"),
    ("backup_nochange_cpu_s", "no-change backup, CPU user+sys", "s"),
    ("backup_fill_mean_s", f"no-change backups to {SNAPSHOTS}, mean", "s"),
    ("repo_final_mib", f"repository with {SNAPSHOTS} snapshots", "MiB"),
    ("mount1_root_s", "mount, 1 snapshot: root listed", "s"),
    ("mount1_snap_s", "mount, 1 snapshot: snapshot listed", "s"),
    ("mount30_root_s", f"mount, {SNAPSHOTS} snapshots: root listed", "s"),
    ("mount30_snap_s", f"mount, {SNAPSHOTS} snapshots: snapshot listed", "s"),
    ("mount_fresh_root_s", f"mount, {SNAPSHOTS} snapshots, fresh state: root listed", "s"),
    ("walk_s", "find -printf walk, fresh mount", "s"),
    ("read_cached_s", "large files read, repo in page cache", "s"),
    ("read_cold_s", "large files read, cold (drop_caches)", "s"),
    ("read_warm_s", "large files read, second time", "s"),
    ("cp_www_s", "cp -a www/ out", "s"),
    ("cpu_walk_s", "daemon CPU user+sys, walk mount", "s"),
    ("cpu_read_s", "daemon CPU user+sys, cold+warm read mount", "s"),
    ("cpu_cp_s", "daemon CPU user+sys, cp mount", "s"),
    ("rss_walk_mib", "daemon VmHWM, walk mount", "MiB"),
    ("rss_read_mib", "daemon VmHWM, cold+warm read mount", "MiB"),
    ("rss_cp_mib", "daemon VmHWM, cp mount", "MiB"),
]
S3_ONLY_METRICS = {"mount_fresh_root_s"}
S3_LABELS = {"read_cold_s": "large files read, cold (fresh state, drop_caches)"}


# ---------------------------------------------------------------------------------------------------------
# Logging, commands, small helpers
# ---------------------------------------------------------------------------------------------------------

class Log:
    file = None

    @classmethod
    def say(cls, msg):
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, file=sys.stderr, flush=True)
        if cls.file:
            cls.file.write(line + "\n")
            cls.file.flush()


def run(argv, env=None, cwd=None, ok=(0,), capture=True):
    """Runs argv to completion; returns (CompletedProcess, wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE if capture else None,
                          stderr=subprocess.PIPE if capture else None)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in ok:
        tail = (proc.stderr or b"").decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}: " + " | ".join(tail))
    return proc, wall, cpu


def disk_usage(path):
    """Bytes allocated on disk under path (like du -s)."""
    if os.path.isfile(path):
        return os.stat(path).st_blocks * 512
    total = 0
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def read_all(paths):
    """Reads every regular file under paths, so that they are in the page cache."""
    for top in paths:
        for dirpath, _, files in ([(os.path.dirname(top), [], [os.path.basename(top)])]
                                  if os.path.isfile(top) else os.walk(top)):
            for name in files:
                with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as f:
                    while f.read(8 * MIB):
                        pass


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def snapshot_time(n):
    return FIRST_SNAPSHOT + timedelta(days=n)


def load_gen_tree():
    spec = importlib.util.spec_from_file_location("gen_tree", GEN_TREE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_seconds(pid):
    """User + system CPU time of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


# ---------------------------------------------------------------------------------------------------------
# Mounts: start, wait until the root lists, stop; the janitor undoes whatever is left
# ---------------------------------------------------------------------------------------------------------

def mounted_paths():
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            field = line.split(" ")[4]
            out.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field))
    return out


class Mount:
    def __init__(self, argv, mnt, env, log_path, after_exit=None, scratch=None):
        self.argv, self.mnt, self.env, self.log_path = argv, mnt, env, log_path
        self.after_exit = after_exit  # called with the daemon's PID once it has exited
        self.scratch = scratch        # a directory of this mount alone (fresh S3 state), removed once it exited
        self.proc = None

    def start(self):
        """Starts the daemon in the foreground of its own session (Ctrl-C reaches only this script)."""
        os.makedirs(self.mnt, exist_ok=True)
        if self.mnt in mounted_paths():
            raise RuntimeError(f"{self.mnt} is already a mount point")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        Janitor.mounts.append(self)

    def wait_ready(self, timeout=300):
        """Blocks until the mount point is mounted and its root lists something."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} mount exited {self.proc.returncode}: {self.log_tail()}")
            if self.mnt in mounted_paths():
                with contextlib.suppress(OSError):
                    if os.listdir(self.mnt):
                        return
            time.sleep(0.002)
        raise RuntimeError(f"{self.mnt} not ready after {timeout} s: {self.log_tail()}")

    def log_tail(self):
        with open(self.log_path, "rb") as f:
            return " | ".join(f.read().decode(errors="replace").strip().splitlines()[-3:])

    @contextlib.contextmanager
    def watchdog(self, seconds):
        """Kills the daemon (SIGKILL, by PID) if the body takes longer than seconds: the kernel then fails
        every pending request of the mount with ENOTCONN instead of leaving the benchmark hung."""
        def fire():
            Log.say(f"{self.mnt}: no result after {seconds} s, killing the daemon (PID {self.proc.pid})")
            self.proc.kill()
        timer = threading.Timer(seconds, fire)
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def stop(self):
        """Unmounts (fusermount3 -u, then umount -l) and ends the daemon (wait, SIGTERM, SIGKILL)."""
        for _ in range(20):
            if self.mnt not in mounted_paths():
                break
            subprocess.run(["fusermount3", "-u", self.mnt], stderr=subprocess.DEVNULL)
            if self.mnt in mounted_paths():
                time.sleep(0.25)
        if self.mnt in mounted_paths():
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)
        if self.proc is not None:
            for sig, wait in ((None, 10), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
                if sig is not None and self.proc.poll() is None:
                    self.proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(wait)
                    break
            if self.after_exit and self.proc.poll() is not None:
                self.after_exit(self.proc.pid)
        if self.scratch and (self.proc is None or self.proc.poll() is not None):
            shutil.rmtree(self.scratch, ignore_errors=True)
        if self in Janitor.mounts:
            Janitor.mounts.remove(self)


class Tmpfs:
    """The copies' destination with `--cp-dest tmpfs`: writing there costs the same for every system and does
    not depend on what the disk did before (on this VM's ext4, mounted with `discard`, the source's own
    `cp -a` measured 1.7-4.2 s in one run and up to 14 s right after a big `rm -rf`)."""

    def __init__(self, mnt):
        self.mnt = mnt

    def start(self):
        os.makedirs(self.mnt, exist_ok=True)
        run(["mount", "-t", "tmpfs", "-o", "size=16g,mode=0755", "tmpfs", self.mnt])
        Janitor.mounts.append(self)

    def stop(self):
        subprocess.run(["umount", self.mnt], stderr=subprocess.DEVNULL)
        if self.mnt in mounted_paths():
            subprocess.run(["umount", "-l", self.mnt], stderr=subprocess.DEVNULL)
        if self in Janitor.mounts:
            Janitor.mounts.remove(self)


class Janitor:
    """Everything to undo at exit: mounts (with their daemons), servers (the Garage cluster, after the mounts
    that read from it) and the work directory."""
    mounts = []
    servers = []
    workdir = None

    @classmethod
    def clean(cls, keep):
        for m in list(reversed(cls.mounts)):
            try:
                m.stop()
            except Exception as e:  # keep cleaning the rest
                Log.say(f"cleanup: could not stop mount {m.mnt}: {e}")
        for server in list(reversed(cls.servers)):
            try:
                server.stop()
            except Exception as e:
                Log.say(f"cleanup: could not stop {server}: {e}")
        if cls.workdir and os.path.isdir(cls.workdir):
            left = [p for p in mounted_paths() if p.startswith(cls.workdir + "/")]
            if left:
                Log.say(f"cleanup: NOT removing {cls.workdir}, still mounted: {left}")
            elif keep:
                Log.say(f"kept work directory {cls.workdir}")
            else:
                shutil.rmtree(cls.workdir, ignore_errors=True)


def on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------------------------------------------
# --s3: a 3-node Garage cluster on 127.0.0.1 (what tests/common/garage.rs starts for the S3 tests)
# ---------------------------------------------------------------------------------------------------------

def garage_binary():
    """GARAGE_BIN, else the cache .ci/install-garage fills, else `garage` on PATH; None if none."""
    if os.environ.get("GARAGE_BIN"):
        return os.environ["GARAGE_BIN"]
    cache = os.environ.get("BACKUPFS_TEST_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "backupfs")
    built = os.path.join(cache, f"garage-{GARAGE_VERSION}", "bin", "garage")
    return built if os.path.isfile(built) else shutil.which("garage")


def free_port_block():
    """The first of 9 free consecutive ports on 127.0.0.1 (3 per node), in blocks of 10 in 12000-19999: below
    the tests' clusters (20000-31999) and Linux's ephemeral range, checked free by binding them."""
    blocks = 800
    start = os.getpid() * 7919
    for i in range(blocks):
        base = 12000 + (start + i) % blocks * 10
        held = []
        try:
            for k in range(9):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", base + k))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no 9 free consecutive ports in 127.0.0.1:12000-19999")


class Garage:
    """Three `garage server` processes (replication factor 3, one zone each, LMDB, fsync off), connected and laid
    out, with the key S3_KEY_ID owning bucket S3_BUCKET.  Node n listens on base + 3(n-1) (S3), +1 (RPC),
    +2 (admin).  Everything is under dir; the servers run in their own session (Ctrl-C reaches only the
    script) and are stopped by the Janitor after the mounts."""

    def __init__(self, binary, dir):
        self.bin, self.dir = binary, dir
        self.base = None
        self.procs = {}
        # GARAGE_RPC_HOST would send the CLI elsewhere; a RUST_LOG meant for backupfs would flood the logs.
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("GARAGE_RPC_HOST", "GARAGE_RPC_SECRET", "GARAGE_RPC_SECRET_FILE", "RUST_LOG")}
        self.env["NO_COLOR"] = "1"

    def __str__(self):
        return f"garage cluster in {self.dir}"

    def version(self):
        return run([self.bin, "--version"], env=self.env)[0].stdout.decode().strip()

    def port(self, n, kind):
        return self.base + 3 * (n - 1) + kind

    def endpoint(self, n):
        return f"http://127.0.0.1:{self.port(n, 0)}"

    def url(self, prefix):
        """A repository URL under prefix in the bucket, through node 1 (backupfs and restic alike)."""
        return f"s3:{self.endpoint(1)}/{S3_BUCKET}/{prefix}"

    def credentials(self):
        return dict(AWS_ACCESS_KEY_ID=S3_KEY_ID, AWS_SECRET_ACCESS_KEY=S3_SECRET)

    def conf(self, n):
        return os.path.join(self.dir, f"g{n}.toml")

    def log(self, n):
        return os.path.join(self.dir, f"g{n}.log")

    def start(self):
        t0 = time.monotonic()
        os.makedirs(self.dir)
        self.base = free_port_block()
        secret = os.urandom(32).hex()   # a cluster of its own: nodes of another cluster can never join it
        Janitor.servers.append(self)
        for n in (1, 2, 3):
            node = os.path.join(self.dir, f"g{n}")
            for sub in ("meta", "data"):
                os.makedirs(os.path.join(node, sub))
            with open(self.conf(n), "w") as f:
                f.write(f"""metadata_dir = "{node}/meta"
data_dir = "{node}/data"
db_engine = "lmdb"
replication_factor = 3
metadata_fsync = false
data_fsync = false
rpc_bind_addr = "127.0.0.1:{self.port(n, 1)}"
rpc_public_addr = "127.0.0.1:{self.port(n, 1)}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{S3_REGION}"
api_bind_addr = "127.0.0.1:{self.port(n, 0)}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{self.port(n, 2)}"
""")
            with open(self.log(n), "ab") as log:
                self.procs[n] = subprocess.Popen([self.bin, "-c", self.conf(n), "server"], env=self.env,
                                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                 start_new_session=True)
        # A server has its node key once its RPC port listens: CLI calls before that could fail or race it.
        for n in (1, 2, 3):
            self.retry(f"node {n} listening on RPC port {self.port(n, 1)}", lambda n=n: self.listening(n, 1))
        self.until_ok(1, "status")
        ids = [self.until_ok(n, "node id -q").strip() for n in (1, 2, 3)]
        setup = [f"node connect {i}" for i in ids[1:]]
        setup += [f"layout assign -z dc{n} -c 1G {i[:16]}" for n, i in zip((1, 2, 3), ids)]
        setup += ["layout apply --version 1", f"key import --yes -n bench {S3_KEY_ID} {S3_SECRET}",
                  f"bucket create {S3_BUCKET}", f"bucket allow --read --write --owner {S3_BUCKET} --key bench"]
        for cmd in setup:
            self.until_ok(1, cmd)
        # Every node has the layout and the bucket, and answers S3 requests.
        for n in (1, 2, 3):
            self.until_ok(n, f"bucket info {S3_BUCKET}")
            self.retry(f"node {n} answering ListObjectsV2", lambda n=n: self.list_prefix("", n))
        Log.say(f"garage cluster up in {time.monotonic() - t0:.1f} s: S3 at " +
                ", ".join(self.endpoint(n) for n in (1, 2, 3)))

    def listening(self, n, kind):
        with socket.create_connection(("127.0.0.1", self.port(n, kind)), timeout=1):
            pass

    def until_ok(self, n, args):
        """Retries `garage -c gN.toml ARGS` until it succeeds (or says "already exists": an earlier try did
        it); its stdout."""
        def once():
            try:
                proc = subprocess.run([self.bin, "-c", self.conf(n), *args.split()], env=self.env,
                                      stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
            except subprocess.TimeoutExpired:
                raise RuntimeError("timed out after 10 s")
            out = proc.stdout.decode(errors="replace")
            if proc.returncode != 0 and "already exists" not in out + proc.stderr.decode(errors="replace"):
                raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}")
            return out
        return self.retry(f"`garage {args}` on node {n}", once)

    def retry(self, what, attempt):
        """Calls attempt() until it returns; fails with its last error and the logs' tails after S3_DEADLINE,
        or at once when a node exited (its port taken by someone else, a bad config)."""
        deadline = time.monotonic() + S3_DEADLINE
        while True:
            try:
                return attempt()
            except Exception as e:
                err = e
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f" (node {dead[0]} exited)" if dead else ""
                raise RuntimeError(f"garage: {what} failed{why}: {err}; {self.logs_tail()}")
            time.sleep(0.1)

    def logs_tail(self):
        tails = []
        for n in (1, 2, 3):
            with contextlib.suppress(OSError), open(self.log(n), "rb") as f:
                tails.append(f"node {n}: " + " | ".join(f.read().decode(errors="replace").strip()
                                                        .splitlines()[-3:]))
        return "; ".join(tails)

    def list_prefix(self, prefix, n=1):
        """[(key, size)] of every object under prefix: ListObjectsV2 through node n, page by page, signed by
        curl (SigV4, region garage; the query's parameters in their canonical, sorted order)."""
        ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
        objects, token = [], None
        while True:
            query = (f"continuation-token={urllib.parse.quote(token, safe='')}&" if token else "") + \
                f"list-type=2&prefix={urllib.parse.quote(prefix, safe='')}"
            proc, _, _ = run(["curl", "-sS", "--fail-with-body", "--max-time", "30",
                              "--aws-sigv4", f"aws:amz:{S3_REGION}:s3", "--user", f"{S3_KEY_ID}:{S3_SECRET}",
                              "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD",
                              f"{self.endpoint(n)}/{S3_BUCKET}?{query}"])
            root = ET.fromstring(proc.stdout)
            objects += [(c.findtext(f"{ns}Key"), int(c.findtext(f"{ns}Size")))
                        for c in root.iter(f"{ns}Contents")]
            token = root.findtext(f"{ns}NextContinuationToken")
            if root.findtext(f"{ns}IsTruncated") != "true" or not token:
                return objects

    def prefix_bytes(self, prefix):
        return sum(size for _, size in self.list_prefix(prefix))

    def stop(self):
        """SIGCONT and SIGTERM to each node, by PID; SIGKILL to any still there after 10 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self in Janitor.servers:
            Janitor.servers.remove(self)


# ---------------------------------------------------------------------------------------------------------
# The systems under test.  Each knows how to back up, how to mount, and where the snapshot shows up.
# ---------------------------------------------------------------------------------------------------------

class System:
    name = "?"
    binaries = ()
    incremental = True   # False: one image, no incremental backups, one "snapshot"
    s3 = False           # has an S3 backend: runs with --s3, its repository under prefix NAME/ of the bucket

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = os.path.join(ctx.work, self.name)
        self.garage = ctx.garage  # None: a local repository
        self.repo = self.garage.url(self.name) if self.garage else os.path.join(self.dir, "repo")
        self.env = dict(os.environ, TZ="UTC")
        if self.garage:
            self.env.update(self.garage.credentials())

    def missing(self):
        """Why this system cannot run here, or None."""
        absent = [b for b in self.binaries if not shutil.which(b)]
        return f"not installed ({', '.join(absent)} not found)" if absent else None

    def version(self):
        return "?"

    def mount(self, mnt, fresh=False):
        """fresh (S3 only): the mount starts from empty local state, as on a new machine (see fresh_dir)."""
        return Mount(self.mount_argv(mnt), mnt, self.env, os.path.join(self.dir, "mount.log"))

    def fresh_dir(self):
        """An empty directory for one mount's local state, removed once that mount's daemon exited."""
        return tempfile.mkdtemp(prefix="fresh-", dir=self.dir)

    def repo_bytes(self):
        """Bytes on disk (du) of a local repository; with --s3 the sum of the objects' sizes under its prefix."""
        if self.garage:
            return self.garage.prefix_bytes(self.name + "/")
        return disk_usage(self.repo)

    def local_paths(self):
        """This system's local caches or state (not counted in the repository)."""
        return []

    def warm_paths(self):
        """Everything a mount of this system reads: the repository (with --s3 the Garage nodes' files, every
        prefix) and any local cache."""
        return [self.garage.dir if self.garage else self.repo] + self.local_paths()

    def cache_note(self):
        return None


class Backupfs(System):
    name = "backupfs"
    s3 = True
    init_flags = ()   # extra `backupfs init` arguments (BackupfsEnc: --encrypt)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.bin = ctx.args.backupfs_bin
        self.binaries = (self.bin,)
        # The benchmark's own configuration file: nothing from /etc/backupfs/config.toml applies.  Empty for a
        # local repository; with --s3 the region and nodes 2 and 3 as further endpoints (failover only).
        self.env["BACKUPFS_CONFIG"] = os.path.join(self.dir, "config.toml")
        self.state = os.path.join(self.dir, "state")   # --s3: index, locks and blob cache (STATE/cache)

    def state_args(self, state=None):
        return ["--state-dir", state or self.state] if self.garage else []

    def version(self):
        return run([self.bin, "--version"])[0].stdout.decode().strip()

    def init(self):
        os.makedirs(self.dir, exist_ok=True)
        with open(self.env["BACKUPFS_CONFIG"], "w") as f:
            if self.garage:
                others = ", ".join(f'"{self.garage.endpoint(n)}"' for n in (2, 3))
                f.write(f'[s3]\nregion = "{S3_REGION}"\nendpoints = [{others}]\n')
        run([self.bin, "init", *self.init_flags, *self.state_args(), self.repo], env=self.env)

    def backup(self, n):
        when = snapshot_time(n).strftime("%Y-%m-%dT%H:%M:%SZ")
        proc, wall, cpu = run([self.bin, "backup", "--repo", self.repo, *self.state_args(), "--account", "bench",
                               "--time", when, "--json", self.ctx.src], env=self.env, ok=(0, 3))
        summary = json.loads(proc.stdout)
        self.ctx.extra.setdefault(f"{self.name}_backup_json", []).append(summary)
        if proc.returncode == 3 or summary.get("warnings"):
            self.ctx.note(f"{self.name} backup {n}: warnings: {summary.get('warning_messages')}")
        if self.garage:
            requests = summary.get("store_requests")
            self.ctx.extra.setdefault(f"{self.name}_store_requests", []).append(dict(snapshot=n, **(requests or {})))
            if requests:
                Log.say(f"{self.name}: backup {n} store requests: " +
                        ", ".join(f"{k} {v}" for k, v in requests.items()))
            else:
                self.ctx.note(f"{self.name} backup --json printed no store_requests")
        return wall, cpu

    def mount_argv(self, mnt, state=None):
        return [self.bin, "mount", "--repo", self.repo, *self.state_args(state), "--account", "bench", mnt]

    def mount(self, mnt, fresh=False):
        """fresh: a new, empty state directory (the index is rebuilt from the bucket when the mount opens the
        repository, and the blob cache in it starts empty; its budget stays the default)."""
        state = self.fresh_dir() if fresh else None
        return Mount(self.mount_argv(mnt, state), mnt, self.env, os.path.join(self.dir, "mount.log"),
                     after_exit=self.remove_leftovers, scratch=state)

    def local_paths(self):
        return [self.state] if self.garage else []

    def cache_note(self):
        if not self.garage:
            return None
        cache = os.path.join(self.state, "cache")
        return (f"{self.name} state directory {disk_usage(self.state) / MIB:.1f} MiB, of which blob cache "
                f"{disk_usage(cache) / MIB:.1f} MiB (not counted in the repository)")

    def remove_leftovers(self, pid):
        """The index reader's RocksDB secondary directory, $TMPDIR/backupfs-index-PID-N, outlives a mount
        daemon (seen up to commit f8801a2); the bench notes it and removes this daemon's own."""
        left = glob.glob(os.path.join(tempfile.gettempdir(), f"backupfs-index-{pid}-*"))
        if left:
            self.ctx.note(f"backupfs BUG: the mount daemon left {tempfile.gettempdir()}/backupfs-index-PID-N "
                          f"behind after it exited (the bench removes them)")
            for path in left:
                shutil.rmtree(path, ignore_errors=True)

    def snapshot_dir(self, mnt):
        return os.path.realpath(os.path.join(mnt, "latest"))


class BackupfsEnc(Backupfs):
    """backupfs on a repository encrypted at rest (`init --encrypt`), otherwise run exactly as Backupfs.  Its
    key file (written by init, mode 0600) and its state directory are in its own directory of the work dir, and
    every command gets them through BACKUPFS_KEY_FILE and BACKUPFS_STATE_DIR.  An encrypted local repository
    keeps its index apart, in that state directory (with --s3 its state directory is as Backupfs's: the
    environment names it too, and a fresh mount's --state-dir overrides it)."""
    name = "backupfs-enc"
    init_flags = ("--encrypt",)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.key = os.path.join(self.dir, "repo.key")
        self.env.update(BACKUPFS_KEY_FILE=self.key, BACKUPFS_STATE_DIR=self.state)

    def repo_bytes(self):
        """Locally, the state directory (index, locks) is counted too: Backupfs's index is inside its repository
        directory and counted there.  With --s3 neither counts its state."""
        return super().repo_bytes() + (0 if self.garage else disk_usage(self.state))

    def local_paths(self):
        return [self.state]   # the index, read into the page cache with the repository for the warm mounts

    def cache_note(self):
        if self.garage:
            return super().cache_note()
        return (f"backupfs-enc state directory (index, locks) {disk_usage(self.state) / MIB:.1f} MiB, counted in "
                f"its repository size (backupfs keeps its index inside the repository)")


class Restic(System):
    name = "restic"
    binaries = ("restic",)
    s3 = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.cache = os.path.join(self.dir, "cache")
        self.env.update(RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=self.cache, RESTIC_REPOSITORY=self.repo)
        if self.garage:
            self.env.update(AWS_DEFAULT_REGION=S3_REGION)

    def version(self):
        return run(["restic", "version"])[0].stdout.decode().split(" compiled")[0]

    def init(self):
        os.makedirs(self.dir, exist_ok=True)
        run(["restic", "init", "-q"], env=self.env)

    def backup(self, n):
        when = snapshot_time(n).strftime("%Y-%m-%d %H:%M:%S")  # read in TZ=UTC
        proc, wall, cpu = run(["restic", "backup", "-q", "--host", "bench", "--time", when, self.ctx.src],
                              env=self.env, ok=(0, 3))
        if proc.returncode == 3:
            self.ctx.note(f"restic backup {n}: incomplete: {proc.stderr.decode(errors='replace')[:300]}")
        return wall, cpu

    def mount_argv(self, mnt):
        return ["restic", "mount", mnt]

    def mount(self, mnt, fresh=False):
        """fresh: a new, empty cache directory (index, snapshots and trees come from the bucket again)."""
        if not fresh:
            return super().mount(mnt)
        cache = self.fresh_dir()
        return Mount(self.mount_argv(mnt), mnt, dict(self.env, RESTIC_CACHE_DIR=cache),
                     os.path.join(self.dir, "mount.log"), scratch=cache)

    def snapshot_dir(self, mnt):
        return os.path.realpath(os.path.join(mnt, "snapshots", "latest")) + self.ctx.src

    def local_paths(self):
        return [self.cache]

    def cache_note(self):
        return f"restic local cache {disk_usage(self.cache) / MIB:.1f} MiB (not counted in the repository)"


class Borg(System):
    name = "borg"
    binaries = ("borg",)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.base = os.path.join(self.dir, "base")
        self.env.update(BORG_BASE_DIR=self.base, BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", BORG_REPO=self.repo)

    def missing(self):
        why = super().missing()
        if why:
            return why
        with open(shutil.which("borg"), "rb") as f:  # borg mount needs pyfuse3 or llfuse in borg's Python
            python = f.readline()[2:].decode().strip().split()[0]
        probe = subprocess.run([python, "-c", "from borg.fuse_impl import llfuse; assert llfuse"],
                               capture_output=True)
        return None if probe.returncode == 0 else "installed without FUSE support (python3-pyfuse3)"

    def version(self):
        return run(["borg", "--version"])[0].stdout.decode().strip()

    def init(self):
        os.makedirs(self.dir, exist_ok=True)
        run(["borg", "init", "-e", "none"], env=self.env)

    def backup(self, n):
        when = snapshot_time(n).strftime("%Y-%m-%dT%H:%M:%S")
        proc, wall, cpu = run(["borg", "create", "--timestamp", when, f"::snap-{n:02d}", self.ctx.src],
                              env=self.env, ok=(0, 1))
        if proc.returncode == 1:
            self.ctx.note(f"borg create {n}: warning: {proc.stderr.decode(errors='replace')[:300]}")
        return wall, cpu

    def mount_argv(self, mnt):
        return ["borg", "mount", "-f", "::", mnt]

    def snapshot_dir(self, mnt):
        return os.path.join(mnt, max(os.listdir(mnt))) + self.ctx.src

    def local_paths(self):
        return [self.base]

    def cache_note(self):
        return f"borg local cache {disk_usage(self.base) / MIB:.1f} MiB (not counted in the repository)"


class Squashfuse(System):
    name = "squashfuse"
    binaries = ("squashfuse", "mksquashfs")
    incremental = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self.repo = os.path.join(self.dir, "image.sqfs")

    def version(self):
        help_text = subprocess.run(["squashfuse", "--help"], capture_output=True).stderr.decode()
        mk = run(["mksquashfs", "-version"])[0].stdout.decode().splitlines()[0]
        return f"{help_text.splitlines()[0] if help_text else 'squashfuse'}; {mk}"

    def init(self):
        os.makedirs(self.dir, exist_ok=True)

    def backup(self, n):
        if n:
            return None
        _, wall, cpu = run(["mksquashfs", self.ctx.src, self.repo, "-comp", "zstd", "-noappend",
                            "-no-progress", "-quiet"], env=self.env)
        return wall, cpu

    def mount_argv(self, mnt):
        return ["squashfuse", "-f", self.repo, mnt]

    def snapshot_dir(self, mnt):
        return mnt


SYSTEMS = [Backupfs, BackupfsEnc, Restic, Borg, Squashfuse]
OURS = ("backupfs", BackupfsEnc.name)   # not peers: the table's first columns
# Figures (all in seconds) whose ratio backupfs-enc / backupfs is reported: the read and backup paths of an
# encrypted repository may lose at most 10% against an unencrypted one.
ENC_RATIO_KEYS = ["backup_initial_s", "backup_day1_s", "walk_s", "read_cached_s", "read_cold_s", "cp_www_s"]
ENC_BUDGET = 1.10
SOURCE = "source"


# ---------------------------------------------------------------------------------------------------------
# Run context: results, notes, reference data from the source tree
# ---------------------------------------------------------------------------------------------------------

class Ctx:
    def __init__(self, args, work):
        self.args, self.work = args, work
        self.src = os.path.join(work, "src")
        self.garage = None    # --s3: the Garage cluster, started by main()
        self.results = {}     # system -> key -> list of (value, wrong)
        self.notes = []
        self.wanted = (args.systems.split(",") if args.systems
                       else [s.name for s in SYSTEMS if s.s3 or not args.s3])
        self.missing = set()
        self.extra = {}       # raw data for results.json
        self.ref = None       # filled by reference_data()
        self.buf = None       # read buffer, pre-faulted once
        self.gen = load_gen_tree()

    def record(self, system, key, value, wrong=False):
        if value is not None:
            self.results.setdefault(system, {}).setdefault(key, []).append((value, wrong))

    def note(self, msg):
        if msg not in self.notes:
            self.notes.append(msg)
            Log.say("NOTE " + msg)


def gen_tree(ctx, *args):
    run([sys.executable, GEN_TREE, *args, "--seed", SEED, "--scale", ctx.args.scale])
    unique_newest_ctime(ctx)


def unique_newest_ctime(ctx):
    """gen_tree sets the times of thousands of entries within a few kernel clock ticks (ext4 ctimes are
    coarse), so many files share the tree's newest ctime.  borg never memorizes a file whose ctime is the
    newest of its backup (a guard against coarse timestamps) and re-reads all of them at the next backup,
    5 GiB sparse file included.  A real tree has one newest file: chmod (same mode) gives it one."""
    time.sleep(0.05)
    path = os.path.join(ctx.src, "empty.txt")
    os.chmod(path, os.stat(path).st_mode & 0o7777)


def find_listing(root):
    """{relative path: (type, size, mode, mtime)} as `find -printf` shows it, and the wall time."""
    proc, wall, _ = run(["find", root, "-printf", r"%y %s %m %T@ %P\0"])
    listing = {}
    for rec in proc.stdout.split(b"\0")[:-1]:
        kind, size, mode, mtime, path = rec.split(b" ", 4)
        listing[path] = (kind, b"-" if kind == b"d" else size, mode, mtime)
    return listing, wall


def tree_entries(ctx, root):
    """{relative path: (strict fields, metadata fields)} of a tree, via gen_tree's own walk and digest."""
    out = {}
    for rel, st in ctx.gen.walk_sorted(os.fsencode(root)):
        path = os.path.join(os.fsencode(root), rel)
        kind = next(name for test, name in ctx.gen.TYPE_NAMES if test(st.st_mode))
        content = (ctx.gen.content_digest(path) if kind == "file"
                   else os.readlink(path) if kind == "symlink" else None)
        xattrs = tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False))
                              for n in os.listxattr(path, follow_symlinks=False)))
        strict = (kind, st.st_size if kind in ("file", "symlink") else None, content)
        meta = (st.st_mode & 0o7777, st.st_uid, st.st_gid, xattrs, st.st_mtime_ns)
        out[rel] = (strict, meta)
    return out


def reference_data(ctx):
    """What every mount must show: the final source tree's listing, large-file hashes, www/ entries."""
    listing, _ = find_listing(ctx.src)
    sizes = {rel: os.path.getsize(os.path.join(ctx.src, rel)) for rel in LARGE_FILES}
    hashes = {}
    for rel in LARGE_FILES:
        with open(os.path.join(ctx.src, rel), "rb") as f:
            hashes[rel] = hashlib.file_digest(f, "sha256").hexdigest()
    www = tree_entries(ctx, os.path.join(ctx.src, SMALL_TREE))
    ctx.ref = dict(listing=listing, sizes=sizes, sha256=hashes, www=www)
    ctx.buf = bytearray(b"\1") * (max(sizes.values()) + READ_CHUNK)  # touched once: no page faults when timed
    Log.say(f"corpus: {len(listing)} entries; large files " +
            ", ".join(f"{rel} {sizes[rel] / MIB:.1f} MiB" for rel in LARGE_FILES))


# ---------------------------------------------------------------------------------------------------------
# Comparisons against the source
# ---------------------------------------------------------------------------------------------------------

def summarize(missing, extra, differ, truncated):
    """One line: counts with up to three examples each."""
    parts = [f"{len(v)} {label}: " + ", ".join(v[:3]) for label, v in
             (("missing", missing), ("extra", extra), ("differ", differ)) if v]
    if truncated:
        parts.append(f"{truncated} mtimes truncated to whole seconds")
    return "; ".join(parts)


def compare_walk(ref, got):
    """(wrong, summary) of a find listing. Sub-second mtime truncation alone is reported, not wrong."""
    missing = [repr(p) for p in sorted(ref.keys() - got.keys())]
    extra = [repr(p) for p in sorted(got.keys() - ref.keys())]
    differ, truncated = [], 0
    for path in sorted(ref.keys() & got.keys()):
        (k1, s1, m1, t1), (k2, s2, m2, t2) = ref[path], got[path]
        same_second = t1.split(b".")[0] == t2.split(b".")[0] and not t2.split(b".")[-1].strip(b"0")
        if (k1, s1, m1) == (k2, s2, m2) and t1 != t2 and same_second:
            truncated += 1
        elif ref[path] != got[path]:
            differ.append(f"{path!r} ({b' '.join(ref[path]).decode(errors='replace')} -> "
                          f"{b' '.join(got[path]).decode(errors='replace')})")
    return bool(missing or extra or differ), summarize(missing, extra, differ, truncated)


def compare_tree(ref, got):
    """(wrong, summary) for a copied tree: type/size/content, mode/owner/xattrs, mtime."""
    missing = [repr(p) for p in sorted(ref.keys() - got.keys())]
    extra = [repr(p) for p in sorted(got.keys() - ref.keys())]
    differ, truncated = [], 0
    for rel in sorted(ref.keys() & got.keys()):
        (s1, m1), (s2, m2) = ref[rel], got[rel]
        t1, t2 = m1[-1], m2[-1]
        if s1 == s2 and m1[:-1] == m2[:-1] and t1 != t2 and t1 // 10**9 == t2 // 10**9 and not t2 % 10**9:
            truncated += 1
        elif s1 != s2:
            differ.append(f"{rel!r} (content)")
        elif m1 != m2:
            what = [n for n, a, b in zip(("mode", "uid", "gid", "xattrs", "mtime"), m1, m2) if a != b]
            differ.append(f"{rel!r} ({'/'.join(what)})")
    return bool(missing or extra or differ), summarize(missing, extra, differ, truncated)


def timed_read(ctx, path):
    """(seconds, sha256 hex) of one sequential read of path into a pre-faulted buffer; hashed after timing."""
    view = memoryview(ctx.buf)
    n = 0
    with open(path, "rb", buffering=0) as f:
        t0 = time.perf_counter()
        while n < len(view):
            got = f.readinto(view[n:n + READ_CHUNK])
            if not got:
                break
            n += got
        seconds = time.perf_counter() - t0
    return seconds, hashlib.sha256(view[:n]).hexdigest()


def read_large_files(ctx, root):
    """(total seconds, list of mismatching files) for one sequential read of each large file."""
    total, bad = 0.0, []
    for rel in LARGE_FILES:
        seconds, digest = timed_read(ctx, os.path.join(root, rel))
        total += seconds
        if digest != ctx.ref["sha256"][rel]:
            bad.append(rel)
    return total, bad


# ---------------------------------------------------------------------------------------------------------
# Fresh views: a new mount of the latest snapshot (or the source tree itself, for the baseline)
# ---------------------------------------------------------------------------------------------------------

class View:
    def __init__(self, root, mount=None, ready_s=None):
        self.root, self.mount = root, mount
        self.ready_s = ready_s  # mount command start to a listed root


    def rss_mib(self):
        return vm_hwm_mib(self.mount.proc.pid) if self.mount else None

    def cpu_s(self):
        return cpu_seconds(self.mount.proc.pid) if self.mount else None


@contextlib.contextmanager
def fresh_view(ctx, system, warm=True):
    """Mounts system afresh (repository read into the page cache first, if warm) and yields a View of its
    latest snapshot; for SOURCE yields the source tree.  With --s3, a mount that is not warm also starts from
    fresh local state (a new state directory or cache directory: System.mount's fresh)."""
    if system == SOURCE:
        if warm:
            read_all([os.path.join(ctx.src, p) for p in (SMALL_TREE,) + LARGE_FILES])
        yield View(ctx.src)
        return
    if warm:
        read_all(system.warm_paths())
    mount = system.mount(os.path.join(ctx.work, "mnt", system.name), fresh=bool(ctx.garage) and not warm)
    t0 = time.perf_counter()
    mount.start()
    try:
        with mount.watchdog(ctx.args.timeout):
            mount.wait_ready()
            ready = time.perf_counter() - t0
            yield View(system.snapshot_dir(mount.mnt), mount, ready)
    finally:
        mount.stop()


# ---------------------------------------------------------------------------------------------------------
# Measurements, one function each
# ---------------------------------------------------------------------------------------------------------

def measure_initial_backup(ctx, system):
    system.init()
    wall, cpu = system.backup(0)
    ctx.record(system.name, "backup_initial_s", wall)
    ctx.record(system.name, "backup_initial_cpu_s", cpu)
    ctx.record(system.name, "repo_initial_mib", system.repo_bytes() / MIB)
    Log.say(f"{system.name}: initial backup {wall:.2f} s (CPU {cpu:.2f} s), "
            f"{system.repo_bytes() / MIB:.1f} MiB")


def measure_incremental(ctx, system, day):
    if not system.incremental:
        return
    wall, _ = system.backup(day)
    ctx.record(system.name, f"backup_day{day}_s", wall)
    if day == DAYS:
        growth = system.repo_bytes() / MIB - ctx.results[system.name]["repo_initial_mib"][0][0]
        ctx.record(system.name, "repo_growth_mib", growth)
    Log.say(f"{system.name}: day {day} backup {wall:.2f} s")


def measure_nochange_backup(ctx, system):
    if not system.incremental:
        return
    wall, cpu = system.backup(DAYS + 1)
    ctx.record(system.name, "backup_nochange_s", wall)
    ctx.record(system.name, "backup_nochange_cpu_s", cpu)
    Log.say(f"{system.name}: no-change backup {wall:.2f} s (CPU {cpu:.2f} s)")


def fill_snapshots(ctx, system):
    """No-change backups, each on its own day, until the repository holds SNAPSHOTS snapshots.
    A system without incremental backups rebuilds its one image from the final tree instead."""
    if not system.incremental:
        wall, _ = system.backup(0)
        ctx.record(system.name, "repo_final_mib", system.repo_bytes() / MIB)
        ctx.note(f"{system.name}: image rebuilt from the final tree for the mount measurements "
                 f"({wall:.1f} s, not in the table)")
        return
    walls = [system.backup(n)[0] for n in range(DAYS + 2, SNAPSHOTS)]
    ctx.record(system.name, "backup_fill_mean_s", statistics.mean(walls))
    ctx.record(system.name, "repo_final_mib", system.repo_bytes() / MIB)
    Log.say(f"{system.name}: {len(walls)} more no-change backups, mean {statistics.mean(walls):.2f} s, "
            f"max {max(walls):.2f} s")


def measure_mount_startup(ctx, system, label):
    """Command start to a listed root, and to a listed snapshot directory (lazy systems load it then)."""
    if label == "mount30" and not system.incremental:
        return
    read_all(system.warm_paths())
    mount = system.mount(os.path.join(ctx.work, "mnt", system.name))
    t0 = time.perf_counter()
    mount.start()
    try:
        with mount.watchdog(ctx.args.timeout):
            mount.wait_ready()
            root = time.perf_counter() - t0
            entries = os.listdir(system.snapshot_dir(mount.mnt))
            snap = time.perf_counter() - t0
    finally:
        mount.stop()
    wrong = sorted(entries) != sorted(os.listdir(ctx.src))
    ctx.record(system.name, f"{label}_root_s", root)
    ctx.record(system.name, f"{label}_snap_s", snap, wrong)
    if wrong:
        ctx.note(f"{system.name} {label}: snapshot top level differs from the source: {sorted(entries)}")
    Log.say(f"{system.name}: {label} root {root:.3f} s, snapshot {snap:.3f} s")


def measure_walk(ctx, system):
    name = system if system == SOURCE else system.name
    with fresh_view(ctx, system) as view:
        listing, wall = find_listing(view.root)
        rss, cpu = view.rss_mib(), view.cpu_s()
    wrong, summary = compare_walk(ctx.ref["listing"], listing)
    ctx.record(name, "walk_s", wall, wrong)
    ctx.record(name, "rss_walk_mib", rss)
    ctx.record(name, "cpu_walk_s", cpu)
    if summary:
        ctx.note(f"{name} walk: {summary}")
    Log.say(f"{name}: walk of {len(listing)} entries {wall:.3f} s" + (" WRONG" if wrong else ""))


def measure_reads(ctx, system):
    """(a) repository in page cache on a fresh mount; (b) cold on another fresh mount; (c) again, warm."""
    name = system if system == SOURCE else system.name
    with fresh_view(ctx, system) as view:
        cached = read_large_files(ctx, view.root)
    with fresh_view(ctx, system, warm=False) as view:
        fresh_mount = view.ready_s
        drop_caches()
        cold = read_large_files(ctx, view.root)
        warm = read_large_files(ctx, view.root)
        rss, cpu = view.rss_mib(), view.cpu_s()
    if ctx.garage and system != SOURCE:  # that mount started from empty local state
        ctx.record(name, "mount_fresh_root_s", fresh_mount)
    for key, (seconds, bad) in (("read_cached_s", cached), ("read_cold_s", cold), ("read_warm_s", warm)):
        ctx.record(name, key, seconds, bool(bad))
        if bad:
            ctx.note(f"{name} {key}: sha256 mismatch in {bad}")
    ctx.record(name, "rss_read_mib", rss)
    ctx.record(name, "cpu_read_s", cpu)
    Log.say(f"{name}: reads cached {cached[0]:.3f} s, cold {cold[0]:.3f} s, warm {warm[0]:.3f} s")


def clear_copies(ctx):
    """Removes the round's copies only after every system has copied: on a filesystem mounted with
    `discard`, the next journal commits after a big rm are slow, and the next cp would pay for them."""
    cp_root = os.path.join(ctx.work, "cp")
    for name in os.listdir(cp_root) if os.path.isdir(cp_root) else []:
        shutil.rmtree(os.path.join(cp_root, name), ignore_errors=True)
    if ctx.args.cp_dest == "disk":
        os.sync()
        time.sleep(5)


def measure_cp(ctx, system):
    name = system if system == SOURCE else system.name
    dest = os.path.join(ctx.work, "cp", name)
    os.makedirs(dest)
    with fresh_view(ctx, system) as view:
        os.sync()
        proc, wall, _ = run(["cp", "-a", os.path.join(view.root, SMALL_TREE), dest], ok=(0, 1))
        rss, cpu = view.rss_mib(), view.cpu_s()
    if proc.returncode:
        ctx.note(f"{name} cp -a www exited 1: {proc.stderr.decode(errors='replace')[:300]}")
    wrong, summary = compare_tree(ctx.ref["www"], tree_entries(ctx, os.path.join(dest, SMALL_TREE)))
    ctx.record(name, "cp_www_s", wall, wrong)
    ctx.record(name, "rss_cp_mib", rss)
    ctx.record(name, "cpu_cp_s", cpu)
    if summary:
        ctx.note(f"{name} cp -a www: {summary}")
    Log.say(f"{name}: cp -a www {wall:.3f} s" + (" WRONG" if wrong else ""))


# ---------------------------------------------------------------------------------------------------------
# Phases: systems take turns within each
# ---------------------------------------------------------------------------------------------------------

def build_backupfs(ctx):
    if ctx.args.backupfs_bin != BACKUPFS:
        Log.say(f"--backupfs-bin {ctx.args.backupfs_bin}: not building")
        return
    Log.say("building backupfs (cargo build --release)")
    with open(os.path.join(ctx.args.out, "build.log"), "wb") as log:
        proc = subprocess.run(["cargo", "build", "--release"], cwd=ROOT, stdout=log, stderr=log)
    if proc.returncode != 0:
        raise RuntimeError(f"cargo build --release failed, see {ctx.args.out}/build.log")


def install_peers():
    missing = [p for p in PEER_PACKAGES if subprocess.run(
        ["dpkg-query", "-W", "-f", "${Status}", p], capture_output=True).stdout != b"install ok installed"]
    if not missing:
        Log.say("peers already installed")
        return
    Log.say(f"installing {' '.join(missing)} from Debian")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    # Without recommends: borgbackup recommends `fuse` (libfuse 2), which must not replace fuse3.
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def select_systems(ctx):
    systems = []
    for cls in SYSTEMS:
        if cls.name not in ctx.wanted:
            continue
        if ctx.garage and not cls.s3:
            ctx.note(f"{cls.name}: MISSING, no S3 backend (not run with --s3)")
            ctx.missing.add(cls.name)
            continue
        system = cls(ctx)
        why = system.missing()
        if why:
            ctx.note(f"{cls.name}: MISSING, {why}")
            ctx.missing.add(cls.name)
        else:
            systems.append(system)
            version = system.version()
            ctx.extra.setdefault("versions", {})[cls.name] = version
            Log.say(f"{cls.name}: {version}")
    return systems


def start_garage(ctx):
    binary = garage_binary()
    if not binary:
        raise RuntimeError(f"--s3: no garage binary: run .ci/install-garage (it builds Garage {GARAGE_VERSION} "
                           f"into ${{BACKUPFS_TEST_CACHE:-~/.cache/backupfs}}/garage-{GARAGE_VERSION}), "
                           f"or set GARAGE_BIN")
    if not shutil.which("curl"):
        raise RuntimeError("--s3: curl not found (it lists the bucket for the repository sizes)")
    ctx.garage = Garage(binary, os.path.join(ctx.work, "garage"))
    ctx.extra["garage"] = f"{binary}: {ctx.garage.version()}"
    Log.say(f"starting a 3-node Garage cluster ({ctx.extra['garage']})")
    ctx.garage.start()


def attempt(ctx, systems, measure, *args):
    """Runs measure(ctx, system, *args) for each system in turn.  A system whose measurement fails is noted
    as FAILED and dropped from the rest of the run (its figures so far stay)."""
    for system in list(systems):
        try:
            measure(ctx, system, *args)
        except Exception as e:  # not KeyboardInterrupt
            name = system if system == SOURCE else system.name
            ctx.note(f"{name}: {measure.__name__} FAILED, dropped from the rest of the run: {e}")
            systems.remove(system)


def backup_phase(ctx, systems):
    gen_tree(ctx, "create", ctx.src)
    attempt(ctx, systems, measure_initial_backup)
    attempt(ctx, systems, measure_mount_startup, "mount1")
    for day in range(1, DAYS + 1):
        gen_tree(ctx, "mutate", ctx.src, "--day", str(day))
        attempt(ctx, systems, measure_incremental, day)
    attempt(ctx, systems, measure_nochange_backup)
    attempt(ctx, systems, fill_snapshots)
    for s in systems:
        if s.cache_note():
            ctx.note(s.cache_note())
    note_store_requests(ctx)
    attempt(ctx, systems, measure_mount_startup, "mount30")


def note_store_requests(ctx):
    """With --s3: backupfs's (and backupfs-enc's) requests to the store for the initial, day-1 and no-change
    backups."""
    for name in OURS:
        note_store_requests_of(ctx, name)


def note_store_requests_of(ctx, name):
    per = {r["snapshot"]: r for r in ctx.extra.get(f"{name}_store_requests", []) if "requests" in r}
    if not per:
        return
    def one(n):
        r = per[n]
        return (f"{r['requests']} (GET {r.get('get')}, PUT {r.get('put')}, LIST {r.get('list')}, "
                f"{r.get('bytes_up', 0) / MIB:.1f} MiB up, {r.get('bytes_down', 0) / MIB:.1f} MiB down)")
    parts = [f"{label} {one(n)}" for label, n in (("initial", 0), ("day 1", 1), ("no-change", DAYS + 1))
             if n in per]
    retries = sum(r.get("retries", 0) for r in per.values())
    ctx.note(f"{name} store requests per backup: {'; '.join(parts)}; retries over all {len(per)} backups: "
             f"{retries} (all in results.json extra.{name}_store_requests)")


def mount_phase(ctx, systems):
    reference_data(ctx)
    views = systems + [SOURCE]
    if ctx.args.cp_dest == "tmpfs":
        Tmpfs(os.path.join(ctx.work, "cp")).start()
    for rnd in range(ctx.args.rounds):
        Log.say(f"mount measurements, round {rnd + 1} of {ctx.args.rounds}")
        for measure in (measure_walk, measure_reads, measure_cp):
            attempt(ctx, views, measure)
        clear_copies(ctx)


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------

def figure(ctx, system, key):
    """(median value, wrong) over rounds, or None."""
    values = ctx.results.get(system, {}).get(key)
    if not values:
        return None
    return statistics.median(v for v, _ in values), any(w for _, w in values)


def fmt(ctx, system, key):
    if system in ctx.missing:
        return "missing"
    fig = figure(ctx, system, key)
    if fig is None:
        return "-"
    value, wrong = fig
    digits = 4 if value < 0.01 else 3 if value < 1 else 2 if value < 10 else 1 if value < 100 else 0
    text = f"{value:.{digits}f}"
    return f"WRONG {text}" if wrong else text


def ratio_to_best_peer(ctx, peers, key):
    ours = figure(ctx, "backupfs", key)
    valid = [f[0] for f in (figure(ctx, p, key) for p in peers) if f and not f[1] and f[0] > 0]
    if ours is None or not valid:
        return "-"
    return f"{ours[0] / min(valid):.3g}x"


def table_rows(ctx):
    peers = [s for s in ctx.wanted if s not in OURS]
    names = [s for s in OURS[1:] if s in ctx.wanted] + peers + [SOURCE]
    rows = [["metric", "unit", "backupfs", "vs best peer"] + names]
    for key, label, unit in METRICS:
        if key in S3_ONLY_METRICS and not ctx.args.s3:
            continue
        label = S3_LABELS.get(key, label) if ctx.args.s3 else label
        row = [label, unit, fmt(ctx, "backupfs", key), ratio_to_best_peer(ctx, peers, key)]
        rows.append(row + [fmt(ctx, name, key) for name in names])
    return rows


def enc_ratios(ctx):
    """{key: backupfs-enc / backupfs, or None} for ENC_RATIO_KEYS (medians; a WRONG figure of backupfs gives
    None, as for 'vs best peer'); {} unless both systems were asked for."""
    if not all(s in ctx.wanted for s in OURS):
        return {}
    out = {}
    for key in ENC_RATIO_KEYS:
        enc, plain = figure(ctx, OURS[1], key), figure(ctx, "backupfs", key)
        out[key] = enc[0] / plain[0] if enc and plain and not plain[1] and plain[0] > 0 else None
    return out


def metric_label(ctx, key):
    label = next(label for k, label, _ in METRICS if k == key)
    return S3_LABELS.get(key, label) if ctx.args.s3 else label


def enc_ratio_rows(ctx, ratios):
    rows = [["metric", "unit", "backupfs", OURS[1], "enc / plain"]]
    for key, ratio in ratios.items():
        rows.append([metric_label(ctx, key), "s", fmt(ctx, "backupfs", key), fmt(ctx, OURS[1], key),
                     "-" if ratio is None else f"{ratio:.3g}x"])
    return rows


def aligned(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def report(ctx):
    rows = table_rows(ctx)
    print("\n" + aligned(rows))
    print("\n'vs best peer' = backupfs / the lowest peer figure that is not WRONG (lower is better, <1 wins).")
    ratios = enc_ratios(ctx)
    if ratios:
        over = [metric_label(ctx, key) for key, v in ratios.items() if v and v > ENC_BUDGET]
        print(f"\nEncrypted against unencrypted backupfs ('enc / plain' = {OURS[1]} / backupfs, lower is "
              f"better; the budget is {ENC_BUDGET:.2f}x):\n" + aligned(enc_ratio_rows(ctx, ratios)))
        print(f"over {ENC_BUDGET:.2f}x: {'; '.join(over)}" if over else
              f"no ratio above {ENC_BUDGET:.2f}x" + (" (some missing)" if None in ratios.values() else ""))
    if ctx.notes:
        print("\nNotes:\n" + "\n".join(f"- {n}" for n in ctx.notes))
    with open(os.path.join(ctx.args.out, "results.tsv"), "w") as f:
        f.write("\n".join("\t".join(r) for r in rows) + "\n")
    with open(os.path.join(ctx.args.out, "results.json"), "w") as f:
        json.dump(dict(scale=ctx.args.scale, rounds=ctx.args.rounds, s3=ctx.args.s3,
                       backupfs_bin=ctx.args.backupfs_bin, notes=ctx.notes, results=ctx.results,
                       enc_ratios=ratios, extra=ctx.extra), f, indent=1)
    print(f"\nwritten: {ctx.args.out}/results.tsv, results.json, bench.log")


# ---------------------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=("tiny", "small", "medium"), default="small")
    p.add_argument("--install-peers", action="store_true", help="apt-get install restic, borg, squashfuse")
    p.add_argument("--out", help="results directory (default /tmp/backupfs-bench/SCALE-TIME)")
    p.add_argument("--workdir", default="/var/tmp", help="where the corpus and repositories go (ext4)")
    p.add_argument("--systems", help="comma-separated subset of backupfs,backupfs-enc,restic,borg,squashfuse")
    p.add_argument("--rounds", type=int, default=1, help="repeat the mount measurements, report medians")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds one mount may take for a measurement before its daemon is killed")
    p.add_argument("--no-build", action="store_true", help="use the existing target/release/backupfs")
    p.add_argument("--backupfs-bin", default=BACKUPFS,
                   help="the backupfs binary (default target/release/backupfs, built unless --no-build; "
                        "another path is never built)")
    p.add_argument("--s3", action="store_true",
                   help="repositories in a 3-node Garage cluster the script starts (backupfs and restic only)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (corpus, repositories)")
    p.add_argument("--cp-dest", choices=("tmpfs", "disk"), default="tmpfs",
                   help="where cp -a writes: a tmpfs the script mounts (default) or the work directory's disk")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = (f"/tmp/backupfs-bench/{'s3-' if args.s3 else ''}{args.scale}-"
                    f"{time.strftime('%Y%m%d-%H%M%S')}")
    args.out = os.path.abspath(args.out)
    args.backupfs_bin = os.path.abspath(args.backupfs_bin)
    return args


def main(argv=None):
    args = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench.py: must run as root (FUSE mounts, drop_caches, gen_tree owners)")
    os.nice(10)  # every command below inherits it: other work on the machine keeps priority
    os.makedirs(args.out, exist_ok=True)
    Log.file = open(os.path.join(args.out, "bench.log"), "a")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_sigterm)
    Janitor.workdir = tempfile.mkdtemp(prefix="backupfs-bench-", dir=args.workdir)
    ctx = Ctx(args, Janitor.workdir)
    started = time.monotonic()
    try:
        if not args.no_build:
            build_backupfs(ctx)
        if args.install_peers:
            install_peers()
        if args.s3:
            start_garage(ctx)
        systems = select_systems(ctx)
        if args.backupfs_bin != BACKUPFS and "backupfs" in ctx.wanted:
            ctx.note(f"backupfs binary: {args.backupfs_bin}, not target/release/backupfs")
        Log.say(f"scale {args.scale}, work directory {ctx.work}, kernel {os.uname().release}, "
                f"load average {os.getloadavg()}")
        backup_phase(ctx, systems)
        mount_phase(ctx, systems)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            Janitor.clean(args.keep)
        finally:
            if ctx.results:  # also after Ctrl-C or an error: what was measured so far
                report(ctx)
            Log.say(f"done in {(time.monotonic() - started) / 60:.1f} min, load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
