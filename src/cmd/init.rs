//! `backupfs init`: its arguments, the new repository's key when it is encrypted, and what it prints.

use super::super::*;
use backupfs::crypto::Cipher;
use backupfs::format::config::Config as RepoConfig;
use backupfs::repo::{create_key, default_key_file};

fn parse_cipher(s: &str) -> Result<Cipher, String> {
    [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305]
        .into_iter()
        .find(|c| c.name() == s)
        .ok_or_else(|| format!("{s:?}: known ciphers are aes-256-gcm and chacha20-poly1305"))
}

#[derive(clap::Args)]
pub(crate) struct InitArgs {
    /// This machine's index and locks (object storage and encrypted repositories; see --state-dir of the other
    /// commands).
    #[arg(long, env = "BACKUPFS_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Encrypt the repository at rest (contents, names, owners, snapshot manifests and pack trailers), with a
    /// new key written to a root-only key file. Without that key nothing in the repository can be read.
    #[arg(long)]
    encrypt: bool,
    /// The cipher of --encrypt: aes-256-gcm is several times as fast on CPUs with AES instructions,
    /// chacha20-poly1305 everywhere else [default: aes-256-gcm if this machine has AES instructions].
    #[arg(long, value_parser = parse_cipher, value_name = "CIPHER", requires = "encrypt")]
    cipher: Option<Cipher>,
    /// Where --encrypt writes the new key (a new file; never over another) [default: `key_file` in the
    /// configuration file, else /etc/backupfs/keys/ID.key for root, ~/.config/backupfs/keys/ID.key for others].
    #[arg(
        long,
        env = "BACKUPFS_KEY_FILE",
        value_name = "PATH",
        requires = "encrypt"
    )]
    key_file: Option<PathBuf>,
    /// Make a replica of this repository: the same config (id, chunking, encryption and so key), to be filled
    /// by `copy`.
    #[arg(long, value_parser = parse_location, value_name = "PRIMARY", conflicts_with = "encrypt")]
    like: Option<Location>,
    /// A directory, or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX].
    #[arg(value_parser = parse_location, value_name = "LOCATION")]
    location: Location,
}

pub(crate) fn run(args: InitArgs, config: &Config) -> Result<i32> {
    let InitArgs {
        state_dir,
        encrypt,
        cipher,
        key_file,
        like,
        location,
    } = args;
    let cipher = cipher.unwrap_or_else(Cipher::preferred);
    let opts = open_options(
        &location,
        state_dir.as_deref(),
        None,
        config,
        CacheSizes::default(),
    )?;
    if let Some(primary) = like {
        let primary_s3 = open_options(&primary, None, None, config, CacheSizes::default())?.s3;
        let backend = backupfs::backend::open(&primary, &primary_s3)?;
        let repo_config = backupfs::repo::read_config(backend.as_ref(), &primary)?;
        // The new location is a replica: reached with its own settings (`[replicas."LOCATION"]`).
        let mut opts = opts;
        opts.s3 = config.s3.replica_settings(&config.replicas, &location)?;
        Repository::init(&location, &opts, &repo_config)?;
        println!(
            "created repository {location}, a replica of {primary} (fill it with `backupfs copy`)"
        );
        return Ok(0);
    }
    let mut repo_config = RepoConfig::new(backupfs::repo::random_bytes::<32>()?);
    let key_path = encrypt.then(|| {
        key_file
            .or_else(|| config.key_file.clone())
            .unwrap_or_else(|| default_key_file(&repo_config.repo_id))
    });
    if let Some(path) = &key_path {
        create_key(&mut repo_config, path, cipher)?;
    }
    if let Err(e) = Repository::init(&location, &opts, &repo_config) {
        // The key of a repository that was not made: only the file just created, never another.
        if let Some(path) = &key_path {
            let _ = std::fs::remove_file(path);
        }
        return Err(e.into());
    }
    println!("created repository {location}");
    if let Some(path) = key_path {
        println!(
            "encrypted at rest with {}; its key is in {} (root only).\n\
             Without that key nothing in the repository can be read, by you or anyone: keep a copy offline now.\n\
             `backupfs key show --repo {location}` prints it as text to print or store.",
            cipher.name(),
            path.display()
        );
    }
    Ok(0)
}
