//! `backupfs prune`: its arguments, the policy it resolves from them or the configuration, and its report.

use super::super::*;

#[derive(clap::Args)]
pub(crate) struct PruneArgs {
    #[command(flatten)]
    repo: RepoArg,
    /// Only this account (default: every account, each with the same policy).
    #[arg(long, value_parser = parse_account)]
    account: Option<String>,
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_last: Option<usize>,
    /// Keep the newest snapshot of each of the last N days that have one.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_daily: Option<usize>,
    /// Keep the newest snapshot of each of the last N weeks that have one.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_weekly: Option<usize>,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N", value_parser = parse_count)]
    keep_monthly: Option<usize>,
    /// Keep everything within this long of the newest snapshot, e.g. 30d, 2w, 1y6m, 36h.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    keep_within: Option<i64>,
    /// Rewrite a pack once this percentage of its bytes is unreferenced [default: 20].
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    repack_threshold: Option<f64>,
    /// Object storage: how long, by the store's clock, a pack must have been unreferenced before it is
    /// deleted (backups and mounts on other machines may still use it), e.g. 24h, 90s [default: 24h]. A local
    /// repository reclaims space at once.
    #[arg(long, value_parser = parse_grace, value_name = "DURATION")]
    grace: Option<i64>,
    /// Say what would be forgotten and reclaimed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON report on stdout.
    #[arg(long)]
    json: bool,
}

/// Forgets what the policy (the flags, else `[retention]`) does not keep and reclaims the space.
pub(crate) fn run(args: PruneArgs, config: &Config) -> Result<i32> {
    let PruneArgs {
        repo,
        account,
        keep_last,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_within,
        repack_threshold,
        grace,
        dry_run,
        json,
    } = args;
    let flags = Policy {
        last: keep_last,
        daily: keep_daily,
        weekly: keep_weekly,
        monthly: keep_monthly,
        within: keep_within,
    };
    // Flags replace the file's policy as a whole: mixing them would keep what neither says.
    let policy = if flags.is_empty() {
        config.policy()
    } else {
        flags
    };
    if policy.is_empty() {
        bail!(
            "no retention policy: refusing to forget every snapshot (give --keep-daily 30, for example, \
             or set [retention] in {})",
            config.describe()
        );
    }
    let repack_threshold = repack_threshold
        .or(config.retention.repack_threshold.map(|p| p / 100.0))
        .unwrap_or(0.2);
    let opts = PruneOptions {
        account,
        policy,
        dry_run,
        repack_threshold,
        grace_s: grace,
    };
    let report = prune(&open_repo(&repo, config)?, &opts)?;
    print_prune(&report, dry_run, json);
    Ok(0)
}
