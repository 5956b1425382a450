//! `backupfs lag`: its arguments, its table or JSON, and the exit code monitoring checks.

use super::super::*;
use backupfs::replica::lag;

/// Exit status of `lag --max` when an account's replica is further behind.
pub(crate) const EXIT_LAGGING: i32 = 5;

#[derive(clap::Args)]
pub(crate) struct LagArgs {
    #[command(flatten)]
    repo: RepoArg,
    #[command(flatten)]
    replica: cmd::copy::ReplicaArg,
    /// Only this account.
    #[arg(long, value_parser = parse_account)]
    account: Option<String>,
    /// Exit 5 when an account's lag (how long its oldest snapshot missing at the replica has waited) is over
    /// this, e.g. 26h, 90s.
    #[arg(long, value_parser = parse_grace, value_name = "DURATION")]
    max: Option<i64>,
    /// Print a JSON array on stdout.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: LagArgs, config: &Config) -> Result<i32> {
    let LagArgs {
        repo,
        replica,
        account,
        max,
        json,
    } = args;
    let primary = open_repo(&repo, config)?;
    let target = replica.open(&repo, config)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let accounts = lag(&primary, &target, account.as_deref(), now)?;
    let time = |t: Option<backupfs::format::tree::Timestamp>| t.map(naming::rfc3339_utc);
    if json {
        let rows: Vec<_> = (accounts.iter())
            .map(|a| serde_json::json!({
                "account": a.account, "primary_newest": time(a.primary_newest), "replica_newest": time(a.replica_newest),
                "missing": a.missing, "oldest_missing": time(a.oldest_missing), "lag_s": a.lag_s,
                "over_max": max.is_some_and(|m| a.lag_s > m),
            }))
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else {
        println!(
            "{:<16} {:<31} {:<31} {:>7} {:>9}",
            "ACCOUNT", "PRIMARY NEWEST", "REPLICA NEWEST", "MISSING", "LAG (S)"
        );
        for a in &accounts {
            let or_none = |t| time(t).unwrap_or_else(|| "-".into());
            println!(
                "{:<16} {:<31} {:<31} {:>7} {:>9}",
                a.account,
                or_none(a.primary_newest),
                or_none(a.replica_newest),
                a.missing,
                a.lag_s
            );
        }
    }
    let over = max.is_some_and(|m| accounts.iter().any(|a| a.lag_s > m));
    Ok(if over { EXIT_LAGGING } else { 0 })
}
