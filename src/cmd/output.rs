//! What commands print, and the generated documentation (man pages, shell completions).

use super::super::*;

pub(crate) fn generate(what: GenerateWhat) -> Result<()> {
    let (GenerateWhat::Man { dir } | GenerateWhat::Completions { dir }) = &what;
    std::fs::create_dir_all(dir).with_context(|| format!("directory {}", dir.display()))?;
    let in_dir = || format!("writing to {}", dir.display());
    match what {
        GenerateWhat::Man { ref dir } => {
            clap_mangen::generate_to(Cli::command(), dir).with_context(in_dir)?;
            helper_man_page(dir).with_context(in_dir)?;
        }
        GenerateWhat::Completions { ref dir } => {
            use clap_complete::Shell;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                clap_complete::generate_to(shell, &mut Cli::command(), "backupfs", dir)
                    .with_context(in_dir)?;
            }
        }
    }
    Ok(())
}

/// A repository whose index may be missing or damaged: repair must not need it.
pub(crate) fn open_for_repair(repo: &RepoArg, config: &Config) -> Result<Repository> {
    let (location, opts) = resolve_repo(repo, config)?;
    // Only an index that cannot be opened is replaced: a missing key or an unreachable store is no reason to
    // set the index aside.
    use backupfs::repo::RepoError;
    if let Err(RepoError::Index(_) | RepoError::IndexUnusable { .. }) =
        Repository::open(&location, &opts)
    {
        Repository::create_empty_index(&location, &opts)?;
    }
    Ok(Repository::open(&location, &opts)?)
}

pub(crate) fn print_prune(r: &backupfs::prune::PruneReport, dry_run: bool, json: bool) {
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
            "packs_condemned": r.packs_condemned,
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

pub(crate) fn list_snapshots(repo: &Repository, account: Option<&str>, json: bool) -> Result<()> {
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
                    "layout": if m.has_parts() { "parts" } else { "flat" },
                    "parts": m.parts.iter().map(|p| serde_json::json!({
                        "kind": p.kind.label(), "name": p.name, "status": if p.failed { "failed" } else { "ok" },
                        "bytes": p.bytes, "duration_s": p.duration_ms as f64 / 1000.0,
                    })).collect::<Vec<_>>(),
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
