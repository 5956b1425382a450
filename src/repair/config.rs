//! `repair config`: a repository whose 96-byte config no longer verifies is locked out whole, though nothing a
//! reader needs is in it beyond its magic and version (chunk sizes, zstd level and pack size only steer
//! writers). The layout is in SPEC.md (authoritative).
//!
//! One flipped bit is found exactly: every single-bit change is tried against the config's own checksum. Any
//! other damage rebuilds the config from the defaults of new repositories, keeping the repository id bytes;
//! if the repository was made with other chunk sizes, only deduplication against older snapshots suffers, and
//! only once.

use crate::backend::{Backend, BackendError, Location, Object, S3Settings};
use crate::format::config::Config;
use crate::format::FormatError;
use crate::repo::RepoError;

/// What `repair_config` found and did.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigRepair {
    Intact,
    /// The bit at this byte and bit position was flipped back.
    BitCorrected {
        byte: usize,
        bit: u8,
    },
    RebuiltFromDefaults,
}

pub fn repair_config(location: &Location, s3: &S3Settings) -> Result<ConfigRepair, RepoError> {
    let backend = crate::backend::open(location, s3)?;
    let bytes = match backend.read_all(Object::Config) {
        Ok(b) => b,
        Err(BackendError::NotFound { .. })
            if looks_like_repository(location, backend.as_ref())? =>
        {
            Vec::new()
        }
        Err(BackendError::NotFound { .. }) => {
            return Err(RepoError::NotARepository {
                path: location.to_string().into(),
            })
        }
        Err(e) => return Err(e.into()),
    };
    if Config::decode(&bytes).is_ok() {
        return Ok(ConfigRepair::Intact);
    }
    let (fixed, what) = match one_bit_fix(&bytes) {
        Some((config, byte, bit)) => (config, ConfigRepair::BitCorrected { byte, bit }),
        None if looks_encrypted(&bytes) => {
            // The defaults are unencrypted: rebuilding from them would let the next backup write plaintext.
            return Err(RepoError::Format {
                object: format!("{location}/config"),
                source: FormatError::Invalid {
                    object: "config",
                    offset: 8,
                    what: "an encrypted repository's config, damaged beyond one bit: it is not rebuilt from the \
                           (unencrypted) defaults"
                        .into(),
                },
            });
        }
        None => {
            let mut repo_id = [0u8; 32];
            if let Some(id) = bytes.get(12..44) {
                repo_id.copy_from_slice(id);
            }
            (Config::new(repo_id), ConfigRepair::RebuiltFromDefaults)
        }
    };
    match backend.remove(Object::Config) {
        Ok(()) | Err(BackendError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    backend.write_new(Object::Config, &fixed.encode())?;
    Ok(what)
}

/// Whether a location without a config still holds a repository's objects (so that writing a config restores
/// it, rather than turning some other directory or bucket into one).
fn looks_like_repository(location: &Location, backend: &dyn Backend) -> Result<bool, RepoError> {
    if location
        .local_path()
        .is_some_and(|root| root.join("packs").is_dir())
    {
        return Ok(true);
    }
    Ok(!backend.list_packs()?.is_empty() || !backend.list_manifests()?.is_empty())
}

/// The config that one flipped bit away from `bytes` verifies, with the bit's place.
/// A config written for encryption: its length or its version says so.
fn looks_encrypted(bytes: &[u8]) -> bool {
    bytes.len() == crate::format::config::CONFIG_V2_LEN
        || bytes.get(8..12)
            == Some(&crate::format::magic::CONFIG_VERSION_ENCRYPTED.to_le_bytes()[..])
}

fn one_bit_fix(bytes: &[u8]) -> Option<(Config, usize, u8)> {
    let mut trial = bytes.to_vec();
    for byte in 0..trial.len() {
        for bit in 0..8u8 {
            trial[byte] ^= 1 << bit;
            if let Ok(config) = Config::decode(&trial) {
                return Some((config, byte, bit));
            }
            trial[byte] ^= 1 << bit;
        }
    }
    None
}
