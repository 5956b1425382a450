//! `backupfs copy`: its arguments, the replica it opens, and its report.

use super::super::*;
use backupfs::replica::{copy, CopyOptions};

/// The replica of `copy` and `lag`: its location and its own state directory.
#[derive(clap::Args)]
pub(crate) struct ReplicaArg {
    /// The replica: a directory or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX], made with `init --like`.
    #[arg(long, value_parser = parse_location, value_name = "LOCATION")]
    pub(crate) to: Location,
    /// The replica's index and locks on this machine when it is in object storage or encrypted [default:
    /// /var/lib/backupfs/ID-HASH for root, a directory of its own beside the primary's].
    #[arg(long, value_name = "DIR")]
    pub(crate) to_state_dir: Option<PathBuf>,
}

impl ReplicaArg {
    /// Opens the replica with the primary's key file and settings, and its own state directory.
    pub(crate) fn open(&self, primary: &RepoArg, config: &Config) -> Result<Repository> {
        let mut opts = open_options(
            &self.to,
            self.to_state_dir.as_deref(),
            primary.key_file.as_deref(),
            config,
            CacheSizes::default(),
        )?;
        // The primary's state directory from the configuration file is not the replica's, nor are its S3 settings.
        opts.state_dir = self.to_state_dir.clone();
        opts.s3 = config.s3.replica_settings(&config.replicas, &self.to)?;
        Ok(Repository::open(&self.to, &opts)?)
    }
}

#[derive(clap::Args)]
pub(crate) struct CopyArgs {
    #[command(flatten)]
    repo: RepoArg,
    #[command(flatten)]
    replica: ReplicaArg,
    /// Only this account's snapshots.
    #[arg(long, value_parser = parse_account)]
    account: Option<String>,
    /// Print a JSON report on stdout (one line per pass with --follow).
    #[arg(long)]
    json: bool,
    /// Keep following the primary: copy each new snapshot as it is committed, until killed (a copy killed at
    /// any moment resumes where it was).
    #[arg(long)]
    follow: bool,
    /// With --follow: how often to look for new snapshots, in seconds (a primary in object storage is listed at
    /// most every `list_interval_s` as well).
    #[arg(long, value_name = "SECONDS", default_value_t = 5, requires = "follow")]
    interval: u64,
}

/// Copies what the replica lacks; exit 1 if a snapshot could not be copied (each named on stderr).
pub(crate) fn run(args: CopyArgs, config: &Config) -> Result<i32> {
    let primary = open_repo(&args.repo, config)?;
    let target = args.replica.open(&args.repo, config)?;
    let opts = CopyOptions {
        account: args.account.clone(),
    };
    loop {
        let code = one_pass(&args, &primary, &target, &opts)?;
        if !args.follow {
            return Ok(code);
        }
        // Wait for a snapshot the replica lacks: a cheap look at the primary's catalog each interval.
        let there: std::collections::HashSet<_> = (target.snapshots(None)?.into_iter())
            .map(|s| s.id)
            .collect();
        loop {
            std::thread::sleep(std::time::Duration::from_secs(args.interval));
            primary.refresh()?;
            let snapshots = primary.snapshots(args.account.as_deref())?;
            if snapshots.iter().any(|s| !there.contains(&s.id)) {
                break;
            }
        }
    }
}

fn one_pass(
    args: &CopyArgs,
    primary: &Repository,
    target: &Repository,
    opts: &CopyOptions,
) -> Result<i32> {
    let (replica, json) = (&args.replica, args.json);
    let started = std::time::Instant::now();
    let report = copy(primary, target, opts)?;
    for line in &report.failed {
        eprintln!("backupfs: not copied: {line}");
    }
    let seconds = started.elapsed().as_secs_f64();
    if json {
        let copied: Vec<_> = (report.copied.iter())
            .map(|s| serde_json::json!({"id": s.id.to_hex(), "account": s.manifest.account, "time": naming::rfc3339_utc(s.manifest.time)}))
            .collect();
        let out = serde_json::json!({
            "copied": copied, "present": report.present, "failed": report.failed,
            "packs_sent": report.packs_sent, "objects_sent": report.objects_sent, "bytes_sent": report.bytes_sent,
            "duration_s": seconds,
        });
        println!("{out}");
    } else if args.follow {
        for s in &report.copied {
            println!(
                "copied snapshot {} ({} {}) to {}",
                s.id,
                s.manifest.account,
                naming::rfc3339_utc(s.manifest.time),
                replica.to
            );
        }
    } else {
        println!(
            "copied {} snapshots to {} ({} already there): {} packs, {} objects, {} bytes in {seconds:.1} s",
            report.copied.len(),
            replica.to,
            report.present,
            report.packs_sent,
            report.objects_sent,
            report.bytes_sent
        );
    }
    Ok(if report.failed.is_empty() {
        0
    } else {
        EXIT_ERROR
    })
}
