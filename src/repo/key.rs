//! Finding and checking the key of a repository encrypted at rest, and refusing every mix of a key and a
//! repository that would read ciphertext as plaintext or write plaintext where ciphertext belongs.
//!
//! The key file is `--key-file`, `BACKUPFS_KEY_FILE` or the configuration's `key_file`, else the default for the
//! repository's id: `/etc/backupfs/keys/<id>.key` for root, `$XDG_CONFIG_HOME/backupfs/keys/<id>.key`
//! (`~/.config/...`) for other users. Its format is `crypto::KeyFile`'s.

use super::{BlobCodec, RepoError};
use crate::backend::Location;
use crate::crypto::{Cipher, KeyFile, KeyFileError, MasterKey};
use crate::format::config::{Config, Encryption};
use crate::format::ids::hex;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a repository and a key do not go together. Each names the repository and the key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{location} (repository {id}) is encrypted at rest and its key file {} does not exist; give it with \
         --key-file, BACKUPFS_KEY_FILE or `key_file` in the configuration",
        path.display()
    )]
    Missing {
        location: String,
        id: String,
        path: PathBuf,
    },
    #[error("{location} (repository {id}): {source}")]
    File {
        location: String,
        id: String,
        source: KeyFileError,
    },
    #[error(
        "{location} (repository {id}): {} holds another key than the one this repository was made with",
        path.display()
    )]
    Wrong {
        location: String,
        id: String,
        path: PathBuf,
    },
    #[error(
        "{location} (repository {id}) is not encrypted, but a key file was given ({}); nothing is read or \
         written with a key it would not use",
        path.display()
    )]
    KeyForPlainRepository {
        location: String,
        id: String,
        path: PathBuf,
    },
    #[error(
        "{location} (repository {id}): its config says it is not encrypted, but {} holds its key: the config \
         may have been replaced; refusing to read or write it as plaintext",
        path.display()
    )]
    Downgraded {
        location: String,
        id: String,
        path: PathBuf,
    },
    #[error("{}: {what}", path.display())]
    Create { path: PathBuf, what: String },
}

/// The default key file of a repository, from its id.
pub fn default_key_file(repo_id: &[u8; 32]) -> PathBuf {
    let dir = super::state::per_user_dir("/etc/backupfs", "XDG_CONFIG_HOME", ".config");
    dir.join("keys").join(format!("{}.key", hex(repo_id)))
}

/// The key file of a repository with this config: the one given, else the default.
pub fn key_file_of(config: &Config, given: Option<&Path>) -> PathBuf {
    given.map_or_else(|| default_key_file(&config.repo_id), Path::to_path_buf)
}

/// The codec a repository with this config is read and written with: plain, or with the keys of its key file,
/// which must be the key it was made with.
pub fn codec_for(
    location: &Location,
    config: &Config,
    given: Option<&Path>,
) -> Result<BlobCodec, RepoError> {
    let (location, id) = (location.to_string(), hex(&config.repo_id));
    let path = key_file_of(config, given);
    let Some(encryption) = &config.encryption else {
        if given.is_some() {
            return Err(KeyError::KeyForPlainRepository { location, id, path }.into());
        }
        // A repository made encrypted whose config an intruder replaced by a plaintext one would otherwise
        // take plaintext backups from now on.
        if path.exists() {
            return Err(KeyError::Downgraded { location, id, path }.into());
        }
        return Ok(BlobCodec::new(config));
    };
    let key = load_key(&location, config, &path)?;
    if key.check_value() != encryption.key_check {
        return Err(KeyError::Wrong { location, id, path }.into());
    }
    // The config's decoder accepts only the schemes there are.
    let cipher = Cipher::from_scheme(encryption.scheme).unwrap_or(Cipher::ChaCha20Poly1305);
    Ok(BlobCodec::encrypted(config, key.derive(cipher)))
}

/// Reads the key file at `path` for the repository with this config.
pub fn load_key(location: &str, config: &Config, path: &Path) -> Result<MasterKey, KeyError> {
    let (location, id) = (location.to_string(), hex(&config.repo_id));
    match KeyFile::load(path, &config.repo_id) {
        Ok(file) => Ok(file.key),
        Err(KeyFileError::Unreadable { source, path })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Err(KeyError::Missing { location, id, path })
        }
        Err(source) => Err(KeyError::File {
            location,
            id,
            source,
        }),
    }
}

/// A new repository's key and the config that records it (and `cipher`): the key is written first, to a new file
/// (never over another key), so that no repository exists whose key was not kept.
pub fn create_key(config: &mut Config, path: &Path, cipher: Cipher) -> Result<MasterKey, KeyError> {
    let key = MasterKey::generate().map_err(|e| KeyError::Create {
        path: path.to_path_buf(),
        what: e.to_string(),
    })?;
    let file = KeyFile {
        repository: config.repo_id,
        key: key.clone(),
    };
    write_new_private(path, file.to_text().as_bytes())?;
    config.encryption = Some(Encryption {
        scheme: cipher.scheme(),
        key_check: key.check_value(),
    });
    Ok(key)
}

/// Writes `text` to a new file readable by its owner only, in a directory created 0700 if missing, and fsyncs it.
fn write_new_private(path: &Path, text: &[u8]) -> Result<(), KeyError> {
    let failed = |what: String| KeyError::Create {
        path: path.to_path_buf(),
        what,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| failed(format!("cannot create its directory: {e}")))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => failed(
                "already exists; a new repository's key is never written over another file".into(),
            ),
            _ => failed(e.to_string()),
        })?;
    file.write_all(text)
        .and_then(|()| file.sync_all())
        .map_err(|e| failed(e.to_string()))
}
