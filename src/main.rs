//! The `backupfs` command line. Errors end here as one line on stderr and a documented exit code:
//! 0 success, 1 error, 2 usage error, 3 backup completed with warnings (entries skipped or changing while read,
//! repository damage worked around, a database dump failed), 4 check or repair found damage.

use anyhow::{bail, Context, Result};
use backupfs::backend::Location;
use backupfs::check::check;
use backupfs::fuse::{serve_with_ready, MountOptions};
use backupfs::ops::config::Config;
use backupfs::ops::daemon::{fork_and_wait, Daemon};
use backupfs::ops::notify::notify;
use backupfs::prune::policy::Policy;
use backupfs::prune::{prune, PruneOptions};
use backupfs::repair::{rebuild_index, repair_config, ConfigRepair};
use backupfs::repo::{CacheSizes, OpenOptions, Repository};
use backupfs::vfs::{naming, MountRoot, Scope, Vfs};
use clap::{CommandFactory, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

mod cmd;

use cmd::helper::*;
use cmd::mount::*;
use cmd::output::*;

const EXIT_ERROR: i32 = 1;
const EXIT_WARNINGS: i32 = 3;
const EXIT_DAMAGE: i32 = 4;
/// mount(8)'s codes, which the mount helper follows: bad invocation, mount failure.
const EXIT_MOUNT_USAGE: i32 = 1;
const EXIT_MOUNT_FAILURE: i32 = 32;

/// The name under which the binary is the mount helper (a symlink to it, as packaged).
const HELPER_NAME: &str = "mount.fuse.backupfs";

const CLI_AFTER_HELP: &str = "\
Configuration: /etc/backupfs/config.toml, or the file named by --config or BACKUPFS_CONFIG, may set the
repository, each account's source and mount point, mount settings and the retention policy. Flags and
environment variables override it.

Exit status: 0 success; 1 error (for copy: a snapshot that could not be copied); 2 usage error; 3 backup finished
with warnings (unreadable entries skipped, files that kept changing while read, repository damage worked around,
or a database dump that failed); 4 check or repair found damage; 5 lag --max: a replica is further behind.";

#[derive(Parser)]
#[command(
    name = "backupfs",
    version,
    about = "Deduplicated backups browsable as a read-only filesystem",
    after_long_help = CLI_AFTER_HELP
)]
struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Configuration file [default: /etc/backupfs/config.toml if it exists].
    #[arg(long, global = true, env = "BACKUPFS_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RepoArg {
    /// Repository: a directory, or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX] [default: `repository` in the
    /// configuration file].
    #[arg(long, env = "BACKUPFS_REPO", value_parser = parse_location, value_name = "LOCATION")]
    repo: Option<Location>,
    /// This machine's index and locks for a repository in object storage or encrypted [default: `state_dir` in the
    /// configuration file, else /var/lib/backupfs/ID for root, ~/.local/state/backupfs/ID for others].
    #[arg(long, env = "BACKUPFS_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The key file of an encrypted repository [default: `key_file` in the configuration file, else
    /// /etc/backupfs/keys/ID.key for root, ~/.config/backupfs/keys/ID.key for others].
    #[arg(long, env = "BACKUPFS_KEY_FILE", value_name = "PATH")]
    key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create an empty repository in an empty or new directory, or an empty bucket prefix.
    Init(cmd::init::InitArgs),
    /// Back up SOURCE as a new snapshot of an account.
    Backup(cmd::backup::BackupArgs),
    /// List snapshots.
    Snapshots {
        #[command(flatten)]
        repo: RepoArg,
        /// Only this account's snapshots.
        #[arg(long, value_parser = parse_account)]
        account: Option<String>,
        /// Print a JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Forget snapshots the retention policy does not keep and reclaim their space.
    ///
    /// Without any --keep-* flag the policy is the configuration file's [retention] section; any --keep-* flag
    /// replaces that section entirely.
    Prune(cmd::prune::PruneArgs),
    /// Verify the repository; exit 0 only when nothing is damaged.
    Check(cmd::check::CheckArgs),
    /// Repair the repository.
    Repair {
        #[command(subcommand)]
        what: RepairWhat,
    },
    /// Serve an account's snapshots read-only at MOUNTPOINT until SIGINT/SIGTERM or unmount.
    Mount(cmd::mount::MountArgs),
    /// Copy to a replica (made with `init --like`) every snapshot it lacks, verified, manifests last.
    Copy(cmd::copy::CopyArgs),
    /// How far a replica is behind, per account; with --max, exit 5 when one is further behind.
    Lag(cmd::lag::LagArgs),
    /// The key of an encrypted repository.
    Key {
        #[command(subcommand)]
        what: cmd::key::KeyCommand,
    },
}

/// `backupfs generate ...`: packaging files from the command-line definition. Parsed apart from `Cli` (before
/// it), so that it appears in no help, manual page or completion.
#[derive(Parser)]
#[command(
    name = "backupfs generate",
    about = "Generate manual pages or shell completions from the command-line definition"
)]
struct GenerateCli {
    #[command(subcommand)]
    what: GenerateWhat,
}

#[derive(Subcommand)]
enum GenerateWhat {
    /// Manual pages: backupfs(1), one per subcommand, and mount.fuse.backupfs(8).
    Man { dir: PathBuf },
    /// Shell completions for bash (backupfs.bash), zsh (_backupfs) and fish (backupfs.fish).
    Completions { dir: PathBuf },
}

#[derive(Subcommand)]
enum RepairWhat {
    /// Rebuild the index from the packs and manifests alone.
    Index {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Restore a damaged repository config: one flipped bit exactly, anything else from the defaults.
    Config {
        #[command(flatten)]
        repo: RepoArg,
    },
}

fn parse_location(s: &str) -> Result<Location, String> {
    Location::parse(s).map_err(|e| e.why.to_string())
}

/// A grace period: a duration, or seconds (`90s`, `0`), which tests of pack deletion need.
fn parse_grace(s: &str) -> Result<i64, String> {
    if let Ok(n) = s.strip_suffix('s').unwrap_or(s).parse::<i64>() {
        if n >= 0 {
            return Ok(n);
        }
    }
    parse_duration(s)
}

fn parse_duration(s: &str) -> Result<i64, String> {
    backupfs::prune::policy::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 30d, 2w, 1y6m or 36h"))
}

/// A retention count: 0 would make a rule that keeps nothing, and a policy of such rules forget everything.
fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("0 keeps nothing: give at least 1 (a policy must keep something)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a count")),
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?} is not a percentage"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v / 100.0)
    } else {
        Err(format!("{s:?} is not between 0% and 100%"))
    }
}

/// Account names as the format allows them: a name no snapshot can have would silently match nothing.
fn parse_account(s: &str) -> Result<String, String> {
    if backupfs::format::manifest::valid_account(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "invalid account name {s:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'"
        ))
    }
}

fn parse_threads(s: &str) -> Result<usize, String> {
    let n = s.parse::<usize>().map_err(|e| format!("{s:?}: {e}"))?;
    backupfs::ops::config::valid_threads(n)
}

/// A share of the blobs to read: 0% would read nothing while looking like a data check.
fn parse_subset(s: &str) -> Result<f64, String> {
    match parse_percent(s)? {
        0.0 => Err(format!("{s:?} reads nothing: give more than 0%")),
        v => Ok(v),
    }
}

/// How far ahead of this machine's clock a snapshot time may be: clocks of a fleet disagree by seconds, not
/// days, and a snapshot from the future would stay `latest` until the future arrives.
const MAX_TIME_AHEAD_S: i64 = 24 * 3600;

fn parse_time(s: &str) -> Result<backupfs::format::tree::Timestamp, String> {
    let t = naming::parse_rfc3339(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time like 2026-11-20T03:00:00Z"))?;
    if t.sec > backupfs::backup::now().sec.saturating_add(MAX_TIME_AHEAD_S) {
        return Err(format!(
            "{s:?} is more than a day in the future: the snapshot would be `latest` until then"
        ));
    }
    Ok(t)
}

fn init_logging(verbose: u8, quiet: bool, default: &str, daemon: bool) {
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => default,
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("backupfs={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(backupfs::ops::log::LogWriter)
        // A daemon's log ends up in a file or syslog: no colours even if it starts on a terminal.
        .with_ansi(!daemon && std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

/// A required value that neither the command line nor the configuration file gave: a usage error (exit 2).
fn missing(what: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::MissingRequiredArgument, what)
        .exit()
}

/// A flag's value that clap could not check: a usage error (exit 2), as clap's own.
fn usage(what: &str) -> ! {
    Cli::command()
        .error(clap::error::ErrorKind::ValueValidation, what)
        .exit()
}

fn repo_location(repo: &RepoArg, config: &Config) -> Location {
    if let Some(l) = &repo.repo {
        return l.clone();
    }
    match config.repository.as_deref().map(Location::parse) {
        Some(Ok(l)) => l,
        // Checked when the file was read.
        Some(Err(e)) => missing(&e.to_string()),
        None => missing(&format!(
            "no repository: give --repo, set BACKUPFS_REPO, or set `repository` in {}",
            config.describe()
        )),
    }
}

/// The one place where flags, environment and config become a repository to open (CLI and mount helper).
fn open_options(
    location: &Location,
    state_dir: Option<&Path>,
    key_file: Option<&Path>,
    config: &Config,
    caches: CacheSizes,
) -> Result<OpenOptions> {
    let remote = matches!(location, Location::S3(_));
    Ok(OpenOptions {
        state_dir: state_dir
            .map(Path::to_path_buf)
            .or_else(|| config.state_dir.clone()),
        caches,
        s3: config.s3.settings(remote)?,
        sync_interval: config.s3.sync_interval(),
        cache_dir: config.mount.cache_dir.clone(),
        cache_bytes: (config.mount.disk_cache_mib)
            .map_or(backupfs::repo::DEFAULT_DISK_CACHE_BYTES, |m| m << 20),
        replica: None,
        key_file: key_file
            .map(Path::to_path_buf)
            .or_else(|| config.key_file.clone()),
    })
}

/// The location and open options a command's `RepoArg` and the config name (default cache sizes).
fn resolve_repo(repo: &RepoArg, config: &Config) -> Result<(Location, OpenOptions)> {
    let location = repo_location(repo, config);
    let opts = open_options(
        &location,
        repo.state_dir.as_deref(),
        repo.key_file.as_deref(),
        config,
        CacheSizes::default(),
    )?;
    Ok((location, opts))
}

fn open_repo(repo: &RepoArg, config: &Config) -> Result<Repository> {
    let (location, opts) = resolve_repo(repo, config)?;
    Ok(Repository::open(&location, &opts)?)
}

/// A damaged index is damage `check` reports (exit 4), with the way out, rather than an error.
fn is_unusable_index(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<backupfs::repo::RepoError>(),
        Some(backupfs::repo::RepoError::IndexUnusable { .. })
    )
}

fn run(cli: Cli, config: &Config) -> Result<i32> {
    let open = |repo: &RepoArg| open_repo(repo, config);
    match cli.command {
        Command::Init(args) => return cmd::init::run(args, config),
        Command::Key { what } => return cmd::key::run(what, config),
        Command::Copy(args) => return cmd::copy::run(args, config),
        Command::Lag(args) => return cmd::lag::run(args, config),
        Command::Backup(args) => return cmd::backup::run(args, config),
        Command::Prune(args) => return cmd::prune::run(args, config),
        Command::Check(args) => return cmd::check::run(args, config),
        Command::Repair {
            what: RepairWhat::Index { repo },
        } => {
            let report = rebuild_index(&open_for_repair(&repo, config)?)?;
            for line in &report.repaired {
                eprintln!("backupfs: repaired: {line}");
            }
            for line in &report.skipped {
                eprintln!("backupfs: left out of the index: {line}");
            }
            for line in &report.damage {
                eprintln!("backupfs: DAMAGED: {line}");
            }
            println!(
                "rebuilt the index: {} packs, {} snapshots, {} repaired, {} damaged",
                report.packs,
                report.snapshots,
                report.repaired.len(),
                report.damage.len()
            );
            if !report.damage.is_empty() {
                return Ok(EXIT_DAMAGE);
            }
        }
        Command::Repair {
            what: RepairWhat::Config { repo },
        } => {
            let path = repo_location(&repo, config);
            let opts = open_options(&path, None, None, config, CacheSizes::default())?;
            match repair_config(&path, &opts.s3)? {
                ConfigRepair::Intact => println!("{path}/config is intact"),
                ConfigRepair::BitCorrected { byte, bit } => {
                    println!("{path}/config: corrected bit {bit} of byte {byte}")
                }
                ConfigRepair::RebuiltFromDefaults => println!(
                    "{path}/config: rebuilt from the defaults of new repositories (if this repository was made with \
                     other chunk sizes, the next backup stores changed files anew)"
                ),
            }
        }
        Command::Snapshots {
            repo,
            account,
            json,
        } => list_snapshots(&open(&repo)?, account.as_deref(), json)?,
        Command::Mount(args) => return cmd::mount::run(args, config),
    }
    Ok(0)
}

/// An error and its causes on one line, each cause once: the layers' errors already print their source inside
/// their own message ("{path}: {source}"), and anyhow's `{:#}` would append it a second time.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain().map(|c| c.to_string()) {
        if line.is_empty() {
            line = cause;
        } else if !line.contains(&cause) {
            line = format!("{line}: {cause}");
        }
    }
    line.replace('\n', " ")
}

/// Commands that print to stdout end quietly when the reader goes away (`backupfs snapshots | head -1`), as
/// Unix tools do, instead of panicking in `println!` on EPIPE. Not the mount: it never writes to a pipe that
/// matters, and must not die of one.
fn default_sigpipe() {
    // SAFETY: resetting a signal's disposition to the default before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    let invoked_as = std::env::args_os().next().unwrap_or_default();
    if Path::new(&invoked_as).file_name() == Some(HELPER_NAME.as_ref()) {
        helper_main();
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "generate") {
        let what = GenerateCli::parse_from(std::env::args_os().skip(1)).what;
        if let Err(e) = generate(what) {
            eprintln!("backupfs: error: {}", one_line(&e));
            std::process::exit(EXIT_ERROR);
        }
        std::process::exit(0);
    }
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Mount(_)) {
        default_sigpipe();
    }
    let default_level = if matches!(cli.command, Command::Mount(_)) {
        "info"
    } else {
        "warn"
    };
    let daemon = matches!(&cli.command, Command::Mount(args) if args.daemon);
    init_logging(cli.verbose, cli.quiet, default_level, daemon);
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("backupfs: error: {e}");
            std::process::exit(EXIT_ERROR);
        }
    };
    let result = run(cli, &config);
    let store = backupfs::backend::s3::http::process_totals();
    if store.requests() > 0 {
        tracing::info!("store requests: {}", store.to_json());
    }
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("backupfs: error: {}", one_line(&e));
            std::process::exit(EXIT_ERROR);
        }
    }
}
