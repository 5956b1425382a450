//! The mount helper `mount.fuse.backupfs`: how mount(8), /etc/fstab and systemd .mount units start a
//! backupfs mount (the same binary, recognised by the name it is invoked as).
//!
//! mount(8) runs `mount.fuse.backupfs SOURCE MOUNTPOINT [-sfnv] -o OPTIONS` for type fuse.backupfs. It always
//! passes `rw` unless told `ro`, drops `noauto`, `defaults`, `x-*` itself, and passes `nofail`, `_netdev` and
//! the rest.

use super::super::*;

/// The helper's mount options, for its --help and its manual page.
pub(crate) const HELPER_OPTIONS: &[(&str, &str)] = &[
    (
        "account=NAME",
        "Show only this account's snapshots (default: one directory per account).",
    ),
    (
        "allow_other",
        "Let other users in, subject to the recorded owners and modes.",
    ),
    (
        "threads=N",
        "Threads serving requests (default: [mount] threads in the configuration file, else 4).",
    ),
    (
        "tree_cache=MIB",
        "Memory for decoded directories (default: [mount] tree_cache_mib, else 16).",
    ),
    (
        "chunk_cache=MIB",
        "Memory for decoded file chunks (default: [mount] chunk_cache_mib, else 32).",
    ),
    (
        "config=PATH",
        "Configuration file (default: $BACKUPFS_CONFIG, else /etc/backupfs/config.toml if it exists).",
    ),
    (
        "log=PATH",
        "Append the daemon's log to PATH (default: syslog, or the journal when systemd runs mount).",
    ),
    (
        "state_dir=PATH",
        "This machine's index and locks of a repository in object storage or encrypted (default: state_dir \
         in the configuration file, else /var/lib/backupfs/ID).",
    ),
    (
        "key_file=PATH",
        "The key file of an encrypted repository (default: key_file in the configuration file, else \
         /etc/backupfs/keys/ID.key).",
    ),
    (
        "replica=LOCATION",
        "A replica of the repository (init --like, filled by copy): blobs missing or damaged here are read \
         from it, verified (read-repair).",
    ),
    (
        "cache_dir=PATH",
        "Object storage: the on-disk cache of verified blobs (default: [mount] cache_dir, else STATE/cache).",
    ),
    (
        "disk_cache=MIB",
        "Object storage: the on-disk cache's size; 0 turns it off (default: [mount] disk_cache_mib, else 1024).",
    ),
    (
        "ro, rw",
        "Accepted: the mount is always read-only (mount(8) passes rw whenever ro is not given).",
    ),
    (
        "defaults, auto, noauto, nofail, _netdev, user, nouser, users, owner, group, nosuid, suid, nodev, \
         dev, noexec, exec, noatime, atime, relatime, norelatime, strictatime, nodiratime, diratime, \
         lazytime, nolazytime, sync, async, dirsync, silent, loud, default_permissions, x-*, comment=*",
        "Accepted and ignored: they are for mount(8) and systemd, or always in force.",
    ),
];

pub(crate) const HELPER_EXAMPLES: &[&str] = &[
    "mount -t fuse.backupfs /srv/backup/repo /home/alice/admin/backup -o account=alice,allow_other",
    "umount /home/alice/admin/backup",
    "# /etc/fstab:",
    "/srv/backup/repo /home/alice/admin/backup fuse.backupfs account=alice,allow_other,nofail 0 0",
    "/srv/backup/repo /home/bob/admin/backup fuse.backupfs account=bob,noauto,x-systemd.automount 0 0",
];

pub(crate) const HELPER_NOTES: &str = "\
Any other option is an error, or with -s a warning. The helper returns once the mount is usable (its \
background daemon has listed the mount's root), and fails if the same repository is already mounted there. \
The daemon stops when the file system is unmounted (umount MOUNTPOINT) or on SIGTERM.";

pub(crate) const HELPER_EXIT: &str =
    "0 mounted; 1 bad invocation or option; 32 mount failure (the reason is on stderr).";

/// `text` in lines of at most 100 columns, each starting with `indent`.
pub(crate) fn wrap(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > 100 {
            out += &format!("{indent}{line}\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line += word;
    }
    out + &format!("{indent}{line}\n")
}

pub(crate) fn helper_after_help() -> String {
    let mut s = String::from("Mount options (-o, comma-separated):\n");
    for (name, what) in HELPER_OPTIONS {
        s += &wrap(name, "  ");
        s += &wrap(what, "      ");
    }
    s += &format!("\n{}\nExamples:\n", wrap(HELPER_NOTES, ""));
    for e in HELPER_EXAMPLES {
        s += &format!("  {e}\n");
    }
    s + &format!("\nExit status: {HELPER_EXIT}")
}

/// mount.fuse.backupfs(8): clap_mangen's sections, then the options, examples and exit status in roff.
pub(crate) fn helper_man_page(dir: &Path) -> std::io::Result<()> {
    let esc = |t: &str| {
        t.replace('\\', "\\\\")
            .replace('-', "\\-")
            .replace('\'', "\\(aq")
    };
    let man = clap_mangen::Man::new(HelperCli::command().after_help("")).section("8");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut roff = String::from(".SH \"MOUNT OPTIONS\"\n");
    for (name, what) in HELPER_OPTIONS {
        roff += &format!(".TP\n\\fB{}\\fR\n{}\n", esc(name), esc(what));
    }
    roff += &format!(".PP\n{}\n.SH EXAMPLES\n.nf\n", esc(HELPER_NOTES));
    for e in HELPER_EXAMPLES {
        roff += &format!("{}\n", esc(e));
    }
    roff += &format!(
        ".fi\n.SH \"EXIT STATUS\"\n{}\n.SH FILES\n/etc/backupfs/config.toml\n.SH \"SEE ALSO\"\n\
         \\fBbackupfs\\fR(1), \\fBbackupfs\\-mount\\fR(1), \\fBmount\\fR(8), \\fBfstab\\fR(5), \
         \\fBsystemd.mount\\fR(5)\n",
        esc(HELPER_EXIT)
    );
    out.extend_from_slice(roff.as_bytes());
    man.render_version_section(&mut out)?;
    std::fs::write(dir.join(man.get_filename()), out)
}

#[derive(Parser)]
#[command(
    name = HELPER_NAME,
    version,
    about = "Mount a backupfs repository read-only (the mount(8) helper for type fuse.backupfs)",
    after_help = helper_after_help()
)]
pub(crate) struct HelperCli {
    /// The repository: a directory or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX].
    #[arg(value_parser = parse_location)]
    source: Location,
    /// Where to show the snapshots.
    mountpoint: PathBuf,
    /// Mount options, comma-separated (see below); may be repeated.
    #[arg(short = 'o', value_name = "OPTIONS")]
    options: Vec<String>,
    /// Sloppy: warn about unknown options instead of failing.
    #[arg(short = 's')]
    sloppy: bool,
    /// Fake: check the arguments and options, mount nothing.
    #[arg(short = 'f')]
    fake: bool,
    /// Do not write /etc/mtab (accepted; nothing is written).
    #[arg(short = 'n')]
    no_mtab: bool,
    /// Verbose: log more.
    #[arg(short = 'v')]
    verbose: bool,
    /// File system type, as mount.fuse receives it (accepted if it is fuse.backupfs).
    #[arg(short = 't', value_name = "TYPE")]
    fstype: Option<String>,
}

/// Options the helper accepts and ignores.
pub(crate) fn ignored_option(name: &str) -> bool {
    const IGNORED: &[&str] = &[
        "ro",
        "rw",
        "defaults",
        "auto",
        "noauto",
        "nofail",
        "_netdev",
        "user",
        "nouser",
        "users",
        "owner",
        "group",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "noatime",
        "atime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "nodiratime",
        "diratime",
        "lazytime",
        "nolazytime",
        "sync",
        "async",
        "dirsync",
        "silent",
        "loud",
        "default_permissions",
    ];
    IGNORED.contains(&name) || name.starts_with("x-") || name == "comment"
}

pub(crate) fn helper_main() -> ! {
    let cli = match HelperCli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_MOUNT_USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    // Silent on success, as mount helpers are; -v shows the daemon's start.
    init_logging(u8::from(cli.verbose), false, "warn", !cli.fake);
    let usage = |msg: String| -> ! {
        eprintln!("{HELPER_NAME}: {msg}");
        std::process::exit(EXIT_MOUNT_USAGE);
    };
    if let Some(t) = &cli.fstype {
        if t != "fuse.backupfs" && t != "backupfs" {
            usage(format!("type {t:?} is not fuse.backupfs"));
        }
    }
    let (mut account, mut allow_other, mut threads) = (None, false, None);
    let (mut config_path, mut log, mut state_dir, mut key_file) = (None, None, None, None);
    let (mut cache_dir, mut disk_cache, mut replica) = (None, None, None);
    let (mut tree_cache, mut chunk_cache) = (None, None);
    for opt in cli.options.iter().flat_map(|o| o.split(',')) {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        match (name, value) {
            ("", None) => {}
            ("account", Some(v)) => match parse_account(v) {
                Ok(a) => account = Some(a),
                Err(e) => usage(format!("option account: {e}")),
            },
            ("allow_other", None) => allow_other = true,
            ("threads", Some(v)) => match v.parse::<usize>().map_err(|e| e.to_string()) {
                Ok(n) => match backupfs::ops::config::valid_threads(n) {
                    Ok(n) => threads = Some(n),
                    Err(e) => usage(format!("option threads={v}: {e}")),
                },
                Err(e) => usage(format!("option threads={v}: {e}")),
            },
            ("tree_cache" | "chunk_cache", Some(v)) => match v.parse::<usize>() {
                Ok(n) if name == "tree_cache" => tree_cache = Some(n),
                Ok(n) => chunk_cache = Some(n),
                _ => usage(format!("option {name}={v}: not a number of MiB")),
            },
            ("config", Some(v)) => config_path = Some(PathBuf::from(v)),
            ("log", Some(v)) => log = Some(PathBuf::from(v)),
            ("state_dir", Some(v)) => state_dir = Some(PathBuf::from(v)),
            ("key_file", Some(v)) => key_file = Some(PathBuf::from(v)),
            ("replica", Some(v)) => match Location::parse(v) {
                Ok(l) => replica = Some(l),
                Err(e) => usage(format!("option replica={v}: {}", e.why)),
            },
            ("cache_dir", Some(v)) => cache_dir = Some(PathBuf::from(v)),
            ("disk_cache", Some(v)) => match v.parse::<u64>() {
                Ok(n) => disk_cache = Some(n),
                _ => usage(format!("option disk_cache={v}: not a number of MiB")),
            },
            ("rw", None) => {
                tracing::debug!("option rw ignored: {} mounts are always read-only", cli.mountpoint.display())
            }
            (n, None) if ignored_option(n) => {}
            (n, Some(_)) if n.starts_with("x-") || n == "comment" => {}
            _ if cli.sloppy => tracing::warn!("ignoring unknown mount option {opt:?}"),
            _ => usage(format!(
                "unknown mount option {opt:?} (known: account=NAME, allow_other, threads=N, tree_cache=MIB, chunk_cache=MIB, config=PATH, log=PATH, state_dir=PATH, key_file=PATH, replica=LOCATION, cache_dir=PATH, disk_cache=MIB)"
            )),
        }
    }
    let config_path =
        config_path.or_else(|| std::env::var_os("BACKUPFS_CONFIG").map(PathBuf::from));
    let config = match Config::load(config_path.as_deref()) {
        Ok(c) => c,
        Err(e) => usage(e.to_string()),
    };
    let caches = config.mount.cache_sizes(tree_cache, chunk_cache);
    let mut open = match open_options(
        &cli.source,
        state_dir.as_deref(),
        key_file.as_deref(),
        &config,
        caches,
    ) {
        Ok(o) => o,
        Err(e) => usage(one_line(&e)),
    };
    open.cache_dir = cache_dir.or(open.cache_dir);
    open.cache_bytes = disk_cache.map_or(open.cache_bytes, |m: u64| m << 20);
    open.replica = match replica {
        Some(at) => match config.s3.replica_settings(&config.replicas, &at) {
            Ok(s3) => Some((at, s3)),
            Err(e) => usage(format!("option replica: {e}")),
        },
        None => None,
    };
    let request = MountRequest {
        fsname: cli.source.to_string(),
        repo: cli.source,
        open,
        account,
        allow_other: allow_other || config.mount.allow_other.unwrap_or(false),
        threads: threads.or(config.mount.threads).unwrap_or(4),
        mountpoint: cli.mountpoint,
    };
    if cli.fake {
        std::process::exit(0);
    }
    match mount_in_background(request, log.as_deref(), EXIT_MOUNT_FAILURE) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("backupfs: error: {}", one_line(&e));
            std::process::exit(EXIT_MOUNT_FAILURE);
        }
    }
}
