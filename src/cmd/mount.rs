//! `backupfs mount`: its arguments, and serving in the foreground, or daemonized with readiness reported to the
//! waiting parent (the mount helper) and to systemd (`NOTIFY_SOCKET`).

use super::super::*;

#[derive(clap::Args)]
pub(crate) struct MountArgs {
    #[command(flatten)]
    repo: RepoArg,
    /// Show only this account's snapshots at the root; without it, one directory per account.
    #[arg(long, value_parser = parse_account)]
    account: Option<String>,
    /// Let other users (subject to file permissions) use the mount [default: `allow_other` in the
    /// configuration file's [mount] section, else off].
    #[arg(long)]
    allow_other: bool,
    /// Threads serving FUSE requests [default: `threads` in [mount], else 4].
    #[arg(long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// Memory for decoded directories, in MiB [default: `tree_cache_mib` in [mount], else 16].
    #[arg(long, value_name = "MIB")]
    tree_cache: Option<usize>,
    /// Memory for decoded file chunks, in MiB [default: `chunk_cache_mib` in [mount], else 32].
    #[arg(long, value_name = "MIB")]
    chunk_cache: Option<usize>,
    /// Object storage: directory of the on-disk cache of verified blobs [default: `cache_dir` in [mount],
    /// else cache/ in the state directory].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Object storage: size of the on-disk blob cache in MiB, 0 for none [default: `disk_cache_mib` in
    /// [mount], else 1024].
    #[arg(long, value_name = "MIB")]
    disk_cache: Option<u64>,
    /// Return once the mount is ready and keep serving in the background (what mount(8) and fstab get
    /// through mount.fuse.backupfs).
    #[arg(long)]
    pub(crate) daemon: bool,
    /// With --daemon: append the log to this file once the mount is ready [default: syslog, or stderr when
    /// that is the systemd journal].
    #[arg(long, requires = "daemon", value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// A replica of the repository (`init --like`, filled by `copy`): a blob missing or damaged here is read
    /// from it, verified, and served (read-repair; each repair is logged).
    #[arg(long, value_parser = parse_location, value_name = "LOCATION")]
    replica: Option<Location>,
    /// Where to show the snapshots [default: the account's `mountpoint` in the configuration file].
    mountpoint: Option<PathBuf>,
}

/// Mounts as the flags, else the configuration, say: in the foreground, or as a daemon that returns once the mount is ready.
pub(crate) fn run(args: MountArgs, config: &Config) -> Result<i32> {
    let MountArgs {
        repo,
        account,
        allow_other,
        threads,
        tree_cache,
        chunk_cache,
        cache_dir,
        disk_cache,
        daemon,
        log_file,
        replica,
        mountpoint,
    } = args;
    let mountpoint = match mountpoint.or_else(|| {
        config
            .account(account.as_deref()?)?
            .mountpoint
            .clone()
    }) {
        Some(m) => m,
        None => missing(&format!(
            "no MOUNTPOINT: give one, or use --account with a `mountpoint` in its [accounts.NAME] of {}",
            config.describe()
        )),
    };
    let location = repo_location(&repo, config);
    let caches = config.mount.cache_sizes(tree_cache, chunk_cache);
    let mut open = open_options(
        &location,
        repo.state_dir.as_deref(),
        repo.key_file.as_deref(),
        config,
        caches,
    )?;
    open.cache_dir = cache_dir.or(open.cache_dir);
    open.cache_bytes = disk_cache.map_or(open.cache_bytes, |m| m << 20);
    open.replica = match replica {
        Some(at) => {
            let s3 = config.s3.replica_settings(&config.replicas, &at)?;
            Some((at, s3))
        }
        None => None,
    };
    let request = MountRequest {
        fsname: format!("backupfs:{location}"),
        open,
        repo: location,
        account,
        allow_other: allow_other || config.mount.allow_other.unwrap_or(false),
        threads: threads.or(config.mount.threads).unwrap_or(4),
        mountpoint,
    };
    if daemon {
        mount_in_background(request, log_file.as_deref(), EXIT_ERROR)?;
    } else {
        mount(&request, None)?;
    }
    Ok(0)
}

/// What `backupfs mount` and the mount helper mount.
pub(crate) struct MountRequest {
    pub(crate) repo: Location,
    pub(crate) open: OpenOptions,
    pub(crate) account: Option<String>,
    pub(crate) allow_other: bool,
    pub(crate) threads: usize,
    pub(crate) mountpoint: PathBuf,
    /// The mount's source as mountinfo, df and findmnt show it.
    pub(crate) fsname: String,
}

/// Mounts and serves in this process until unmounted. With `daemon`, reports readiness (or the error that
/// prevented it) to the waiting parent. In both cases `READY=1` goes to systemd when `NOTIFY_SOCKET` is set.
pub(crate) fn mount(req: &MountRequest, daemon: Option<Daemon>) -> Result<()> {
    backupfs::fuse::block_termination_signals();
    let mountpoint = &req.mountpoint;
    check_mount_point(req)?;
    check_address_space(req)?;
    let meta = std::fs::metadata(mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    let repo = Arc::new(Repository::open(&req.repo, &req.open)?);
    let scope = req.account.clone().map_or(Scope::All, Scope::Account);
    let vfs = Arc::new(Vfs::new(repo.clone(), scope, MountRoot::of(&meta))?);
    static UNUSABLE: AtomicBool = AtomicBool::new(false);
    let shown = mountpoint.display().to_string();
    let account = req.account.clone();
    let on_ready = move |listed: std::io::Result<()>| {
        // Any answer from the daemon means the mount works, even a refusal: an account without snapshots has no
        // root until its first backup, and the listing runs as the daemon's user. Only EIO, ENOTCONN and the
        // like mean it does not.
        let answered = match &listed {
            Ok(()) => true,
            Err(e) => matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EACCES | libc::EPERM)
            ),
        };
        if answered {
            if let Err(e) = &listed {
                let who = account
                    .as_deref()
                    .map_or(String::new(), |a| format!(" (account {a})"));
                tracing::warn!("{shown}{who} is mounted, but its root cannot be listed yet: {e}");
            }
            tracing::debug!("{shown} is ready");
            if let Some(d) = &daemon {
                d.ready();
            }
            notify("READY=1");
            return;
        }
        let e = listed.err().map(|e| e.to_string()).unwrap_or_default();
        let message = format!("the new mount at {shown} does not answer: {e}");
        if !daemon.as_ref().is_some_and(|d| d.failed(&message)) {
            tracing::error!("{message}");
        }
        UNUSABLE.store(true, Ordering::SeqCst);
        // Unmount through the signal thread, as SIGTERM would.
        // SAFETY: signalling this process; the signal is blocked everywhere but the sigwait thread.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    };
    let served = serve_with_ready(
        vfs,
        mountpoint,
        &MountOptions {
            allow_other: req.allow_other,
            threads: req.threads.max(1),
            fsname: req.fsname.clone(),
        },
        on_ready,
    );
    repo.remove_private_files();
    served.with_context(|| format!("mounting {}", mountpoint.display()))?;
    if UNUSABLE.load(Ordering::SeqCst) {
        bail!(
            "the mount at {} did not answer and was unmounted",
            mountpoint.display()
        );
    }
    Ok(())
}

/// `mount --daemon` and the helper: check what can be checked here, fork, and (in the child) mount. The parent
/// exits inside `fork_and_wait` with 0 once the mount is ready or `fail_code` with the child's error.
pub(crate) fn mount_in_background(
    mut req: MountRequest,
    log_file: Option<&Path>,
    fail_code: i32,
) -> Result<()> {
    // The daemon runs in /: relative paths must be resolved first.
    if let Location::Local(path) = &req.repo {
        req.repo = Location::Local(
            std::fs::canonicalize(path)
                .with_context(|| format!("repository {}", path.display()))?,
        );
    }
    if let Some(key) = &req.open.key_file {
        req.open.key_file = Some(std::path::absolute(key)?);
    }
    if let Some((Location::Local(path), s3)) = &req.open.replica {
        req.open.replica = Some((Location::Local(std::path::absolute(path)?), s3.clone()));
    }
    if let Some(state) = &req.open.state_dir {
        req.open.state_dir = Some(std::path::absolute(state)?);
    }
    req.mountpoint = std::fs::canonicalize(&req.mountpoint)
        .with_context(|| format!("mount point {}", req.mountpoint.display()))?;
    check_mount_point(&req)?;
    let log_file = log_file.map(std::path::absolute).transpose()?;
    let daemon = fork_and_wait(log_file.as_deref(), fail_code)?;
    // The child from here on.
    if let Err(e) = mount(&req, Some(daemon.clone())) {
        let message = one_line(&e);
        if !daemon.failed(&message) {
            tracing::error!("{message}");
        }
        std::process::exit(EXIT_ERROR);
    }
    Ok(())
}

/// Refuses a mount point that is not an empty directory, or where this repository is mounted already: FUSE
/// mounts stack (mount(8) only checks this for --all), and a mount over files hides them without a word.
fn check_mount_point(req: &MountRequest) -> Result<()> {
    let shown = req.mountpoint.display();
    let point =
        std::fs::canonicalize(&req.mountpoint).with_context(|| format!("mount point {shown}"))?;
    if !point.is_dir() {
        bail!("mount point {shown} is not a directory");
    }
    let repo = req
        .repo
        .local_path()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()));
    let same_repo = |source: &String| {
        let path = Path::new(source.strip_prefix("backupfs:").unwrap_or(source));
        *source == req.fsname
            || path.is_absolute()
                && repo
                    .as_ref()
                    .is_some_and(|r| std::fs::canonicalize(path).is_ok_and(|p| p == *r))
    };
    if mounted_sources(&point).iter().any(same_repo) {
        bail!("{} is already mounted on {shown}", req.fsname);
    }
    let mut entries = std::fs::read_dir(&point).with_context(|| format!("mount point {shown}"))?;
    if entries.next().is_some() {
        bail!("mount point {shown} is not empty: the mount would hide its files (give an empty directory)");
    }
    Ok(())
}

/// Refuses to mount under an address-space limit (`ulimit -v`) the daemon cannot live within: RocksDB and the
/// serving threads reserve address space as they start, and a failed reservation inside RocksDB aborts the
/// process without a word, after the mount is made. Measured on Debian 12 with 4 threads and the default
/// caches: 537 MiB works, 488 MiB aborts; the estimate adds a margin.
fn check_address_space(req: &MountRequest) -> Result<()> {
    const BASE_MIB: u64 = 480;
    const PER_THREAD_MIB: u64 = 8;
    let caches_mib = ((req.open.caches.trees + req.open.caches.chunks) as u64 * 5 / 4) >> 20;
    let needed_mib = BASE_MIB + PER_THREAD_MIB * req.threads as u64 + caches_mib;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return Ok(());
    }
    let limit_mib = limit.rlim_cur >> 20;
    if limit_mib < needed_mib {
        bail!(
            "the address-space limit (ulimit -v) is {limit_mib} MiB; a mount with {} threads and these caches needs \
             about {needed_mib} MiB: raise the limit, or lower --threads, --tree-cache or --chunk-cache",
            req.threads
        );
    }
    Ok(())
}

/// The sources of the FUSE file systems mounted on `mountpoint`, from /proc/self/mountinfo.
pub(crate) fn mounted_sources(mountpoint: &Path) -> Vec<String> {
    // Spaces, tabs, newlines and backslashes are written as octal escapes.
    fn unescape(field: &str) -> String {
        let (b, mut out, mut i) = (field.as_bytes(), Vec::new(), 0);
        while i < b.len() {
            let code = b
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok());
            match code.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                Some(c) if b[i] == b'\\' => {
                    out.push(c);
                    i += 4;
                }
                _ => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let target = mountpoint.to_string_lossy();
    info.lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let point = unescape(mount.split(' ').nth(4)?);
            let mut fs = fs.split(' ');
            let (fstype, source) = (fs.next()?, unescape(fs.next()?));
            (point == target && (fstype == "fuse" || fstype.starts_with("fuse."))).then_some(source)
        })
        .collect()
}
