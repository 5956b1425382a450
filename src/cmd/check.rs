//! `backupfs check`: its arguments and its report.

use super::super::*;

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    repo: RepoArg,
    /// Also read every blob and verify its hash.
    #[arg(long)]
    read_data: bool,
    /// With --read-data: first rewrite every pack and manifest that is missing or damaged here from this
    /// replica's verified copy (made with `init --like`, filled by `copy`), then check.
    #[arg(long, value_parser = parse_location, value_name = "REPLICA", requires = "read_data")]
    repair_from: Option<Location>,
    /// Read and verify this share of the blobs, e.g. 10%.
    #[arg(long, value_parser = parse_subset)]
    read_data_subset: Option<f64>,
}

/// Verifies the repository; exit 4 when anything is damaged (an unusable index included).
pub(crate) fn run(args: CheckArgs, config: &Config) -> Result<i32> {
    let CheckArgs {
        repo,
        read_data,
        repair_from,
        read_data_subset,
    } = args;
    let fraction = if read_data {
        1.0
    } else {
        read_data_subset.unwrap_or(0.0)
    };
    let s3 = match &repair_from {
        Some(at) => Some(config.s3.replica_settings(&config.replicas, at)?),
        None => None,
    };
    let repo = match open_repo(&repo, config) {
        Err(e) if is_unusable_index(&e) => {
            println!("DAMAGED: {}", one_line(&e));
            return Ok(EXIT_DAMAGE);
        }
        other => other?,
    };
    if let (Some(replica), Some(s3)) = (repair_from, s3) {
        repair_from_replica(&repo, &replica, &s3)?;
    }
    let report = check(&repo, fraction)?;
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
    Ok(0)
}

/// Rewrites what the primary lacks or holds damaged from the replica, each object named on stderr.
fn repair_from_replica(
    repo: &Repository,
    replica: &Location,
    s3: &backupfs::backend::S3Settings,
) -> Result<()> {
    let backend = backupfs::backend::open(replica, s3)?;
    if &backupfs::repo::read_config(backend.as_ref(), replica)? != repo.config() {
        bail!(
            "{replica} is not a replica of {} (its config differs)",
            repo.location()
        );
    }
    let report = backupfs::replica::repair_from(repo, backend.as_ref())?;
    for line in &report.rewritten {
        eprintln!("backupfs: repaired: {line}");
    }
    for line in &report.unrepaired {
        eprintln!("backupfs: not repaired: {line}");
    }
    Ok(())
}
