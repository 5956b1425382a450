//! `backupfs key show`: an encrypted repository's key as a recovery text, checked against the repository first.

use super::super::*;
use backupfs::crypto::KeyFile;
use backupfs::repo::{key_file_of, load_key, KeyError};

#[derive(clap::Subcommand)]
pub(crate) enum KeyCommand {
    /// Print the repository's key file, checked against the repository, as text to keep offline: typed back into
    /// a file (mode 0600), it opens the repository again.
    Show {
        #[command(flatten)]
        repo: RepoArg,
    },
}

pub(crate) fn run(command: KeyCommand, config: &Config) -> Result<i32> {
    let KeyCommand::Show { repo } = command;
    let (location, opts) = resolve_repo(&repo, config)?;
    let backend = backupfs::backend::open(&location, &opts.s3)?;
    let repo_config = backupfs::repo::read_config(backend.as_ref(), &location)?;
    let id = backupfs::format::ids::hex(&repo_config.repo_id);
    let path = key_file_of(&repo_config, opts.key_file.as_deref());
    let Some(encryption) = repo_config.encryption else {
        bail!("{location} (repository {id}) is not encrypted: it has no key");
    };
    let key = load_key(&location.to_string(), &repo_config, &path)?;
    if key.check_value() != encryption.key_check {
        let location = location.to_string();
        return Err(KeyError::Wrong { location, id, path }.into());
    }
    let file = KeyFile {
        repository: repo_config.repo_id,
        key,
    };
    println!("# backupfs key of {location}, from {}", path.display());
    println!(
        "# Anyone with this text can read every backup in the repository; without it, nobody can."
    );
    print!("{}", file.to_text());
    Ok(0)
}
