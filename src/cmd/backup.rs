//! `backupfs backup`: its arguments, the defaults it takes from the account's configuration, and its output.

use super::super::*;
use backupfs::backup::{backup, BackupOptions, Excludes};

#[derive(clap::Args)]
pub(crate) struct BackupArgs {
    #[command(flatten)]
    repo: RepoArg,
    /// The account the snapshot belongs to.
    #[arg(long, default_value = "default", value_parser = parse_account)]
    account: String,
    /// Record the snapshot at this time (RFC 3339) instead of now.
    #[arg(long, value_parser = parse_time)]
    time: Option<backupfs::format::tree::Timestamp>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    /// Leave out what matches PATTERN (gitignore-like, relative to SOURCE), besides the account's `exclude`
    /// list; may be repeated.
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Directory to back up [default: the account's `source` in the configuration file].
    source: Option<PathBuf>,
}

/// Backs up one account: SOURCE, its excludes, and its databases and mail as `[accounts.NAME]` says.
pub(crate) fn run(args: BackupArgs, config: &Config) -> Result<i32> {
    let BackupArgs {
        repo,
        account,
        time,
        json,
        exclude,
        source,
    } = args;
    let settings = config.account(&account).cloned().unwrap_or_default();
    let source = match source.or_else(|| settings.source.clone()) {
        Some(s) => s,
        None => missing(&format!(
            "no SOURCE: give one, or set `source` in [accounts.{account}] of {}",
            config.describe()
        )),
    };
    let patterns: Vec<String> = settings.exclude.iter().chain(&exclude).cloned().collect();
    let excludes = match Excludes::new(&patterns) {
        Ok(e) => e,
        Err(e) => usage(&e.to_string()),
    };
    let parts = settings
        .parts_plan(&source)
        .map_err(|e| anyhow::anyhow!("[accounts.{account}] of {}: {e}", config.describe()))?;
    let repo = open_repo(&repo, config)?;
    let progress = !json && std::io::stderr().is_terminal();
    let summary = backup(
        &repo,
        &BackupOptions {
            account,
            source,
            time,
            progress,
            excludes,
            never: settings.mountpoint.into_iter().collect(),
            parts,
        },
    )?;
    if json {
        let mut v = summary.to_json();
        v["store_requests"] = repo.backend().stats().to_json();
        println!("{v}");
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
    Ok(0)
}
