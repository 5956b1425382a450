//! `backupfs check`: its arguments and its report.

use super::super::*;

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    repo: RepoArg,
    /// Also read every blob and verify its hash.
    #[arg(long)]
    read_data: bool,
    /// Read and verify this share of the blobs, e.g. 10%.
    #[arg(long, value_parser = parse_subset)]
    read_data_subset: Option<f64>,
}

/// Verifies the repository; exit 4 when anything is damaged (an unusable index included).
pub(crate) fn run(args: CheckArgs, config: &Config) -> Result<i32> {
    let CheckArgs {
        repo,
        read_data,
        read_data_subset,
    } = args;
    let fraction = if read_data {
        1.0
    } else {
        read_data_subset.unwrap_or(0.0)
    };
    let repo = match open_repo(&repo, config) {
        Err(e) if is_unusable_index(&e) => {
            println!("DAMAGED: {}", one_line(&e));
            return Ok(EXIT_DAMAGE);
        }
        other => other?,
    };
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
