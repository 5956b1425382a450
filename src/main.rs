//! The `backupfs` command line. Errors end here as one line on stderr and a documented exit code:
//! 0 success, 1 error, 2 usage error, 3 backup completed with warnings (files skipped), 4 check found damage.

use anyhow::{bail, Context, Result};
use backupfs::backup::{backup, BackupOptions};
use backupfs::check::check;
use backupfs::fuse::{serve, MountOptions};
use backupfs::prune::policy::Policy;
use backupfs::prune::{prune, PruneOptions};
use backupfs::repair::rebuild_index;
use backupfs::repo::{CacheSizes, Repository};
use backupfs::vfs::{naming, Scope, Vfs};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

const EXIT_ERROR: i32 = 1;
const EXIT_WARNINGS: i32 = 3;
const EXIT_DAMAGE: i32 = 4;

#[derive(Parser)]
#[command(
    name = "backupfs",
    version,
    about = "Deduplicated backups browsable as a read-only filesystem"
)]
struct Cli {
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RepoArg {
    /// Repository directory.
    #[arg(long, env = "BACKUPFS_REPO")]
    repo: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Create an empty repository.
    Init { path: PathBuf },
    /// Back up SOURCE as a new snapshot of an account.
    Backup {
        #[command(flatten)]
        repo: RepoArg,
        #[arg(long, default_value = "default")]
        account: String,
        /// Record the snapshot at this time (RFC 3339) instead of now.
        #[arg(long, value_parser = parse_time)]
        time: Option<backupfs::format::tree::Timestamp>,
        /// Print a JSON summary on stdout.
        #[arg(long)]
        json: bool,
        source: PathBuf,
    },
    /// List snapshots.
    Snapshots {
        #[command(flatten)]
        repo: RepoArg,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Forget snapshots the retention policy does not keep and reclaim their space.
    Prune {
        #[command(flatten)]
        repo: RepoArg,
        /// Only this account (default: every account, each with the same policy).
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        keep_last: Option<usize>,
        #[arg(long)]
        keep_daily: Option<usize>,
        #[arg(long)]
        keep_weekly: Option<usize>,
        #[arg(long)]
        keep_monthly: Option<usize>,
        /// Keep everything within this long of the newest snapshot, e.g. 30d, 2w, 1y6m, 36h.
        #[arg(long, value_parser = parse_duration)]
        keep_within: Option<i64>,
        /// Rewrite a pack once this percentage of its bytes is unreferenced.
        #[arg(long, default_value_t = 20.0)]
        repack_threshold: f64,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Verify the repository; exit 0 only when nothing is damaged.
    Check {
        #[command(flatten)]
        repo: RepoArg,
        /// Also read every blob and verify its hash.
        #[arg(long)]
        read_data: bool,
        /// Read and verify this share of the blobs, e.g. 10%.
        #[arg(long, value_parser = parse_percent)]
        read_data_subset: Option<f64>,
    },
    /// Repair the repository.
    Repair {
        #[command(subcommand)]
        what: RepairWhat,
    },
    /// Serve an account's snapshots read-only at MOUNTPOINT until SIGINT/SIGTERM or unmount.
    Mount {
        #[command(flatten)]
        repo: RepoArg,
        /// Show only this account's snapshots at the root; without it, one directory per account.
        #[arg(long)]
        account: Option<String>,
        /// Let other users (subject to file permissions) use the mount.
        #[arg(long)]
        allow_other: bool,
        /// Threads serving FUSE requests.
        #[arg(long, default_value_t = 4)]
        threads: usize,
        mountpoint: PathBuf,
    },
}

#[derive(Subcommand)]
enum RepairWhat {
    /// Rebuild the index from the packs and manifests alone.
    Index {
        #[command(flatten)]
        repo: RepoArg,
    },
}

fn parse_duration(s: &str) -> Result<i64, String> {
    backupfs::prune::policy::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a duration like 30d, 2w, 1y6m or 36h"))
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

fn parse_time(s: &str) -> Result<backupfs::format::tree::Timestamp, String> {
    naming::parse_rfc3339(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 time like 2026-11-20T03:00:00Z"))
}

fn init_logging(cli: &Cli, default: &str) {
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
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
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn open(repo: &RepoArg) -> Result<Repository> {
    Ok(Repository::open(&repo.repo, CacheSizes::default())?)
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Init { path } => {
            Repository::init(&path)?;
            println!("created repository {}", path.display());
        }
        Command::Backup {
            repo,
            account,
            time,
            json,
            source,
        } => {
            let repo = open(&repo)?;
            let progress = !json && std::io::stderr().is_terminal();
            let summary = backup(
                &repo,
                &BackupOptions {
                    account,
                    source,
                    time,
                    progress,
                },
            )?;
            if json {
                println!("{}", summary.to_json());
            } else {
                let s = &summary.manifest.stats;
                println!(
                    "snapshot {} of {}: {} files, {} dirs, {:.1} MiB read, {:.1} MiB added, {:.2}s, {} warnings",
                    summary.snapshot.short(),
                    summary.manifest.account,
                    s.files,
                    s.dirs,
                    summary.bytes_read as f64 / 1048576.0,
                    s.added_bytes as f64 / 1048576.0,
                    summary.duration.as_secs_f64(),
                    summary.warnings.len()
                );
            }
            if !summary.warnings.is_empty() {
                return Ok(EXIT_WARNINGS);
            }
        }
        Command::Prune {
            repo,
            account,
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_within,
            repack_threshold,
            dry_run,
            json,
        } => {
            let policy = Policy {
                last: keep_last,
                daily: keep_daily,
                weekly: keep_weekly,
                monthly: keep_monthly,
                within: keep_within,
            };
            let opts = PruneOptions {
                account,
                policy,
                dry_run,
                repack_threshold: repack_threshold / 100.0,
            };
            let report = prune(&open(&repo)?, &opts)?;
            print_prune(&report, dry_run, json);
        }
        Command::Check {
            repo,
            read_data,
            read_data_subset,
        } => {
            let fraction = if read_data {
                1.0
            } else {
                read_data_subset.unwrap_or(0.0)
            };
            let report = check(&open(&repo)?, fraction)?;
            for l in &report.leftovers {
                println!("leftover: {l}");
            }
            for d in &report.damage {
                println!("DAMAGED: {d}");
            }
            println!(
                "{} snapshots, {} blobs checked, {} read and verified, {} damaged, {} leftovers",
                report.snapshots,
                report.blobs_checked,
                report.blobs_read,
                report.damage.len(),
                report.leftovers.len()
            );
            if !report.damage.is_empty() {
                return Ok(EXIT_DAMAGE);
            }
        }
        Command::Repair {
            what: RepairWhat::Index { repo },
        } => {
            let done = rebuild_index(&open_for_repair(&repo)?)?;
            println!(
                "rebuilt the index: {} packs, {} snapshots",
                done.packs, done.snapshots
            );
            for s in &done.skipped {
                println!("skipped: {s}");
            }
        }
        Command::Snapshots {
            repo,
            account,
            json,
        } => list_snapshots(&open(&repo)?, account.as_deref(), json)?,
        Command::Mount {
            repo,
            account,
            allow_other,
            threads,
            mountpoint,
        } => {
            backupfs::fuse::block_termination_signals();
            let meta = std::fs::metadata(&mountpoint)
                .with_context(|| format!("mount point {}", mountpoint.display()))?;
            if !meta.is_dir() {
                bail!("mount point {} is not a directory", mountpoint.display());
            }
            let fsname = format!("backupfs:{}", repo.repo.display());
            let repo = Arc::new(open(&repo)?);
            let scope = account.map_or(Scope::All, Scope::Account);
            let vfs = Arc::new(Vfs::new(repo, scope, (meta.uid(), meta.gid()))?);
            serve(
                vfs,
                &mountpoint,
                &MountOptions {
                    allow_other,
                    threads,
                    fsname,
                },
            )
            .with_context(|| format!("mounting {}", mountpoint.display()))?;
        }
    }
    Ok(0)
}

/// A repository whose index may be missing or damaged: repair must not need it.
fn open_for_repair(repo: &RepoArg) -> Result<Repository> {
    if Repository::open(&repo.repo, CacheSizes::default()).is_err() {
        Repository::create_empty_index(&repo.repo)?;
    }
    open(repo)
}

fn print_prune(r: &backupfs::prune::PruneReport, dry_run: bool, json: bool) {
    if json {
        let forgotten: Vec<_> = r
            .forgotten
            .iter()
            .map(|(id, m)| serde_json::json!({"id": id.to_hex(), "account": m.account, "time": naming::rfc3339_utc(m.time)}))
            .collect();
        let v = serde_json::json!({
            "dry_run": dry_run, "forgotten": forgotten, "kept": r.kept, "dead_blobs": r.dead_blobs,
            "dead_bytes": r.dead_bytes, "packs_deleted": r.packs_deleted, "packs_rewritten": r.packs_rewritten,
            "bytes_reclaimed": r.bytes_reclaimed, "waited_for_backups": r.waited_for_backups,
        });
        println!("{v}");
        return;
    }
    let verb = if dry_run { "would forget" } else { "forgot" };
    for (id, m) in &r.forgotten {
        println!(
            "{verb} {} {} {}",
            id.short(),
            m.account,
            naming::rfc3339_utc(m.time)
        );
    }
    println!(
        "kept {} snapshots; {} {} unreferenced blobs ({} bytes); deleted {} packs, rewrote {}, reclaimed {} bytes",
        r.kept, if dry_run { "would drop" } else { "dropped" }, r.dead_blobs, r.dead_bytes, r.packs_deleted, r.packs_rewritten, r.bytes_reclaimed
    );
}

fn list_snapshots(repo: &Repository, account: Option<&str>, json: bool) -> Result<()> {
    let snaps = repo.snapshots(account)?;
    if json {
        let items: Vec<_> = snaps
            .iter()
            .map(|s| {
                let m = &s.manifest;
                serde_json::json!({
                    "id": s.id.to_hex(), "ordinal": m.ordinal, "account": m.account,
                    "time": naming::rfc3339_utc(m.time), "hostname": m.hostname,
                    "source": String::from_utf8_lossy(&m.source), "files": m.stats.files,
                    "dirs": m.stats.dirs, "file_bytes": m.stats.file_bytes, "added_bytes": m.stats.added_bytes,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(());
    }
    println!(
        "{:<10} {:<16} {:<31} {:>9} {:>12}  SOURCE",
        "ID", "ACCOUNT", "TIME (UTC)", "FILES", "BYTES"
    );
    for s in snaps {
        let m = &s.manifest;
        println!(
            "{:<10} {:<16} {:<31} {:>9} {:>12}  {}",
            s.id.short(),
            m.account,
            naming::rfc3339_utc(m.time),
            m.stats.files,
            m.stats.file_bytes,
            String::from_utf8_lossy(&m.source)
        );
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Mount { .. }) {
        "info"
    } else {
        "warn"
    };
    init_logging(&cli, default_level);
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("backupfs: error: {e:#}");
            std::process::exit(EXIT_ERROR);
        }
    }
}
