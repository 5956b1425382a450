//! How to reach an S3 repository: endpoints, region, addressing, timeouts, retries and credentials. Built once at
//! the binary's edge from the config file's `[s3]` section and the environment; the secret never appears in a
//! `Debug`, a log line or an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// An access key pair. `Debug` shows the key id only.
#[derive(Clone)]
pub struct Credentials {
    pub key_id: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ key_id: {:?}, secret: <hidden> }}",
            self.key_id
        )
    }
}

#[derive(Clone, Debug)]
pub struct S3Settings {
    /// Further endpoints of the same cluster, tried after the location's own (failover).
    pub extra_endpoints: Vec<String>,
    pub region: String,
    /// `http://host/bucket/key` (true, what Garage, MinIO and Ceph want) or `http://bucket.host/key`.
    pub path_style: bool,
    pub credentials: Option<Credentials>,
    /// Connecting, and waiting for the first byte of an answer, per attempt.
    pub connect_timeout: Duration,
    pub answer_timeout: Duration,
    /// A whole operation, retries included, gives up after this: what bounds a read's EIO on a dead store.
    pub operation_timeout: Duration,
    /// Attempts per operation (the first included).
    pub attempts: u32,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            extra_endpoints: Vec::new(),
            region: "us-east-1".into(),
            path_style: true,
            credentials: None,
            connect_timeout: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            attempts: 6,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: readable by group or others (mode {mode:o}): make it root-only with chmod 600"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error(
        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or `credentials_file` in [s3] of the \
         config file"
    )]
    Missing,
}

/// The environment's `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, else the file, else an error.
pub fn load_credentials(file: Option<&Path>) -> Result<Credentials, CredentialsError> {
    let env = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
    if let (Some(key_id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials { key_id, secret });
    }
    match file {
        Some(path) => read_credentials_file(path),
        None => Err(CredentialsError::Missing),
    }
}

/// A file of two TOML keys, `access_key_id` and `secret_access_key`, that only its owner may read.
pub fn read_credentials_file(path: &Path) -> Result<Credentials, CredentialsError> {
    use crate::crypto::{read_private, PrivateFileError};
    let text = read_private(path).map_err(|e| match e {
        PrivateFileError::Unreadable(source) => CredentialsError::Read {
            path: path.into(),
            source,
        },
        PrivateFileError::Exposed(mode) => CredentialsError::Exposed {
            path: path.into(),
            mode,
        },
    })?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        access_key_id: String,
        secret_access_key: String,
    }
    // The parser's message may quote the line it failed on, which may hold the secret: say where, not what.
    let parsed: File = toml::from_str(&text).map_err(|e| CredentialsError::Invalid {
        path: path.into(),
        what: format!(
            "not `access_key_id = \"...\"` and `secret_access_key = \"...\"` (error at byte {})",
            e.span().map_or(0, |s| s.start)
        ),
    })?;
    Ok(Credentials {
        key_id: parsed.access_key_id,
        secret: parsed.secret_access_key,
    })
}
