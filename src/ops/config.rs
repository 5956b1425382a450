//! The configuration file: `/etc/backupfs/config.toml` unless `--config PATH` or `BACKUPFS_CONFIG` names
//! another. Every setting is optional; flags and environment variables override the file, the file overrides
//! the built-in defaults. A missing default file is the same as an empty one; a file named explicitly must exist.
//!
//! ```toml
//! repository = "/srv/backup/repo"        # --repo / BACKUPFS_REPO; or "s3:https://HOST/BUCKET/PREFIX"
//! state_dir = "/var/lib/backupfs/hosting" # --state-dir / BACKUPFS_STATE_DIR (object storage: index, locks)
//! key_file = "/etc/backupfs/keys/hosting.key" # --key-file / BACKUPFS_KEY_FILE (encrypted repositories)
//!
//! [s3]                                   # repositories in S3-compatible object storage
//! endpoints = ["http://10.0.0.2:3900"]   # more endpoints of the same cluster, tried when one fails
//! region = "garage"                      # default us-east-1
//! credentials_file = "/etc/backupfs/s3-credentials"  # root-only; else AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
//! path_style = true                      # http://host/bucket/key (default); false: http://bucket.host/key
//! timeout_s = 30                         # a request, retries included, fails after this (a read's EIO)
//! list_interval_s = 30                   # how often mounts list the bucket for new snapshots
//!
//! [replicas."s3:https://s3.other.example/offsite"]  # a replica's store (copy --to, mount --replica, ...)
//! region = "eu-west-1"                   # its own [s3]-like settings; without a section: [s3] minus endpoints
//! credentials_file = "/etc/backupfs/offsite-credentials"
//!
//! [mount]                                # backupfs mount, mount.fuse.backupfs
//! allow_other = true                     # --allow-other
//! threads = 4                            # --threads
//! tree_cache_mib = 16                    # --tree-cache: decoded directories kept in memory
//! chunk_cache_mib = 32                   # --chunk-cache: decoded file chunks kept in memory
//! cache_dir = "/var/cache/backupfs"      # --cache-dir: object storage's on-disk blob cache [STATE/cache]
//! disk_cache_mib = 1024                  # --disk-cache: its size; 0 turns it off
//!
//! [retention]                            # backupfs prune, when no --keep-* flag is given
//! keep_daily = 30
//! keep_weekly = 8
//! keep_monthly = 12
//! keep_last = 3
//! keep_within = "2w"
//! repack_threshold = 20                  # percent, --repack-threshold
//!
//! [accounts.alice]                       # backupfs backup/mount --account alice
//! source = "/home/alice"                 # what `backup` reads when no SOURCE is given
//! mountpoint = "/home/alice/admin/backup"  # where `mount` serves when no MOUNTPOINT is given; never backed up
//! exclude = ["**/cache/**", "*.tmp"]     # gitignore-like patterns, relative to source (and --exclude)
//! user = "alice"                         # the account's OS user [default: the owner of source]
//! mail = "/var/vmail/alice"              # Maildir root (<domain>/<mailbox>/{cur,new,tmp}), under mails/
//! databases = [                          # one dump per database, under mysql/ and postgresql/
//!   { engine = "mariadb", socket = "/run/mysqld/mysqld.sock", names = "discover" },
//!   { engine = "postgresql", socket_dir = "/var/run/postgresql", port = 5432, names = ["alice_shop"],
//!     timeout_s = 14400 },
//! ]
//! ```
//!
//! Unknown keys are errors (a misspelt `keep_dayly` must not silently keep nothing), reported with the file's
//! path, line and column.

use crate::prune::policy::{parse_duration, Policy};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The most threads a mount serves FUSE requests with: each is a kernel request channel and a stack, and more
/// than the cores of a large server only adds contention. More is refused where it is given, before mounting.
pub const MAX_MOUNT_THREADS: usize = 256;

/// A `threads` value from the command line, the mount helper's options or the configuration file.
pub fn valid_threads(n: usize) -> Result<usize, String> {
    if (1..=MAX_MOUNT_THREADS).contains(&n) {
        Ok(n)
    } else {
        Err(format!(
            "threads {n} is not between 1 and {MAX_MOUNT_THREADS}"
        ))
    }
}

/// Where the configuration is read from when neither `--config` nor `BACKUPFS_CONFIG` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/backupfs/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The repository: a directory or an `s3:` location.
    pub repository: Option<String>,
    /// Per-machine state of a repository in object storage.
    pub state_dir: Option<PathBuf>,
    /// The key file of an encrypted repository.
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub s3: S3Section,
    /// The S3 settings of replicas elsewhere (`copy --to`, `mount --replica`, `check --repair-from`), by location:
    /// another provider has its own region, credentials and nodes.
    #[serde(default)]
    pub replicas: BTreeMap<String, S3Section>,
    #[serde(default)]
    pub mount: MountSection,
    #[serde(default)]
    pub retention: Retention,
    /// Per account: where its files are and where its backups are shown.
    #[serde(default)]
    pub accounts: BTreeMap<String, Account>,
    /// The file this was read from (None: built-in defaults only).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Section {
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub region: Option<String>,
    pub credentials_file: Option<PathBuf>,
    pub path_style: Option<bool>,
    pub timeout_s: Option<u64>,
    pub list_interval_s: Option<u64>,
}

impl S3Section {
    /// The settings of the S3 backend: this section over the built-in defaults. Credentials are read here
    /// (environment first) only when `need_credentials`: a local repository needs none.
    pub fn settings(
        &self,
        need_credentials: bool,
    ) -> Result<crate::backend::S3Settings, crate::backend::s3::settings::CredentialsError> {
        let mut s = crate::backend::S3Settings::default();
        s.extra_endpoints = self.endpoints.clone();
        if let Some(r) = &self.region {
            s.region = r.clone();
        }
        if let Some(p) = self.path_style {
            s.path_style = p;
        }
        if let Some(t) = self.timeout_s {
            s.operation_timeout = std::time::Duration::from_secs(t);
            s.answer_timeout = s.answer_timeout.min(s.operation_timeout / 2);
        }
        if need_credentials {
            s.credentials = Some(crate::backend::s3::settings::load_credentials(
                self.credentials_file.as_deref(),
            )?);
        }
        Ok(s)
    }

    /// The settings of a replica's store: its own `[replicas."LOCATION"]` section if there is one, else this
    /// section without its failover endpoints (they are the primary's cluster's nodes, not the replica's).
    pub fn replica_settings(
        &self,
        replicas: &BTreeMap<String, S3Section>,
        at: &crate::backend::Location,
    ) -> Result<crate::backend::S3Settings, crate::backend::s3::settings::CredentialsError> {
        let remote = matches!(at, crate::backend::Location::S3(_));
        let own = (replicas.iter()).find(|(k, _)| {
            crate::backend::Location::parse(k).is_ok_and(|l| l.to_string() == at.to_string())
        });
        match own {
            Some((_, section)) => section.settings(remote),
            None => {
                let mut s = self.settings(remote)?;
                s.extra_endpoints.clear();
                Ok(s)
            }
        }
    }

    pub fn sync_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.list_interval_s.unwrap_or(30))
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSection {
    pub allow_other: Option<bool>,
    pub threads: Option<usize>,
    pub tree_cache_mib: Option<usize>,
    pub chunk_cache_mib: Option<usize>,
    /// Object storage: where verified blobs are kept on disk, and how much (0: no disk cache).
    pub cache_dir: Option<PathBuf>,
    pub disk_cache_mib: Option<u64>,
}

impl MountSection {
    /// The cache budgets, from flags (MiB) first, then this section, then the built-in defaults.
    pub fn cache_sizes(
        &self,
        tree_mib: Option<usize>,
        chunk_mib: Option<usize>,
    ) -> crate::repo::CacheSizes {
        let default = crate::repo::CacheSizes::default();
        let bytes = |mib: Option<usize>, dflt: usize| mib.map_or(dflt, |m| m << 20);
        crate::repo::CacheSizes {
            trees: bytes(tree_mib.or(self.tree_cache_mib), default.trees),
            chunks: bytes(chunk_mib.or(self.chunk_cache_mib), default.chunks),
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<usize>,
    pub keep_daily: Option<usize>,
    pub keep_weekly: Option<usize>,
    pub keep_monthly: Option<usize>,
    /// A duration like `30d`, `2w`, `1y6m`, `36h`.
    pub keep_within: Option<String>,
    /// Percent of a pack's bytes that must be dead before prune rewrites it.
    pub repack_threshold: Option<f64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub source: Option<PathBuf>,
    pub mountpoint: Option<PathBuf>,
    #[serde(default)]
    pub exclude: Vec<String>,
    pub user: Option<String>,
    pub mail: Option<PathBuf>,
    #[serde(default)]
    pub databases: Vec<DatabaseEntry>,
}

impl Account {
    /// What a backup of this account holds besides its files (None: a flat snapshot, the files at the root).
    /// The account's OS user is `user`, else the owner of `source`.
    pub fn parts_plan(&self, source: &Path) -> Result<Option<crate::backup::PartsPlan>, String> {
        use crate::backup::child::RunAs;
        use std::os::unix::fs::MetadataExt;
        if self.databases.is_empty() && self.mail.is_none() {
            return Ok(None);
        }
        let user = match &self.user {
            Some(name) => RunAs::by_name(name).map_err(|e| format!("user {name:?}: {e}"))?,
            None => std::fs::metadata(source)
                .and_then(|m| RunAs::by_uid(m.uid()))
                .map_err(|e| {
                    format!("{}: the account's user (its owner): {e}", source.display())
                })?,
        };
        let databases = (self.databases.iter())
            .map(DatabaseEntry::server)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(crate::backup::PartsPlan {
            user,
            databases,
            mail: self.mail.clone(),
        }))
    }
}

/// One database server of an account: `{ engine = "mariadb" | "postgresql", ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseEntry {
    pub engine: String,
    /// MariaDB: the server's socket file [default /run/mysqld/mysqld.sock].
    pub socket: Option<PathBuf>,
    /// PostgreSQL: the directory of the server's socket [default /var/run/postgresql].
    pub socket_dir: Option<PathBuf>,
    /// PostgreSQL: the server's port, which names its socket file [default 5432].
    pub port: Option<u16>,
    /// "discover" (the default) or a list of names.
    #[serde(default)]
    pub names: DatabaseNames,
    /// The longest one dump may take before its processes are killed and it is recorded as failed.
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DatabaseNames {
    Keyword(String),
    List(Vec<String>),
}

impl Default for DatabaseNames {
    fn default() -> Self {
        DatabaseNames::Keyword("discover".into())
    }
}

impl DatabaseEntry {
    /// The server this entry names, with the defaults filled in; an error says which key is wrong.
    pub fn server(&self) -> Result<crate::backup::dump::Server, String> {
        use crate::backup::dump::{Engine, Names, Server, DEFAULT_TIMEOUT};
        let engine = match self.engine.as_str() {
            "mariadb" | "mysql" => Engine::MariaDb,
            "postgresql" => Engine::PostgreSql,
            other => {
                return Err(format!(
                    "engine {other:?} is not \"mariadb\" or \"postgresql\""
                ))
            }
        };
        let socket = match engine {
            Engine::MariaDb if self.socket_dir.is_some() || self.port.is_some() => {
                return Err(
                    "mariadb takes `socket` (the socket file), not socket_dir or port".into(),
                )
            }
            Engine::PostgreSql if self.socket.is_some() => {
                return Err("postgresql takes `socket_dir` and `port`, not socket".into())
            }
            Engine::MariaDb => self
                .socket
                .clone()
                .unwrap_or_else(|| "/run/mysqld/mysqld.sock".into()),
            Engine::PostgreSql => self
                .socket_dir
                .clone()
                .unwrap_or_else(|| "/var/run/postgresql".into()),
        };
        if !socket.is_absolute() {
            return Err(format!("{} must be an absolute path", socket.display()));
        }
        let names = match &self.names {
            DatabaseNames::Keyword(k) if k == "discover" => Names::Discover,
            DatabaseNames::Keyword(k) => {
                return Err(format!(
                    "names = {k:?}: give \"discover\" or a list of database names"
                ))
            }
            DatabaseNames::List(list) => {
                if let Some(bad) = list.iter().find(|n| !crate::backup::dump::valid_name(n)) {
                    return Err(format!("names: {bad:?} cannot be a dump's file name"));
                }
                Names::Listed(list.clone())
            }
        };
        if self.timeout_s == Some(0) {
            return Err("timeout_s must be at least 1".into());
        }
        Ok(Server {
            engine,
            socket,
            port: self.port.unwrap_or(5432),
            names,
            timeout: self
                .timeout_s
                .map_or(DEFAULT_TIMEOUT, std::time::Duration::from_secs),
        })
    }
}

impl Config {
    /// Reads `explicit` (which must exist), else the default path if it exists, else returns the defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, must_exist) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses and checks the text of the file at `path` (which only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut config: Config = toml::from_str(text).map_err(|e| invalid(one_line(&e, text)))?;
        if let Some(w) = &config.retention.keep_within {
            if parse_duration(w).is_none() {
                return Err(invalid(format!(
                    "retention.keep_within {w:?} is not a duration like 30d, 2w, 1y6m or 36h"
                )));
            }
        }
        let r = &config.retention;
        for (key, n) in [
            ("keep_last", r.keep_last),
            ("keep_daily", r.keep_daily),
            ("keep_weekly", r.keep_weekly),
            ("keep_monthly", r.keep_monthly),
        ] {
            if n == Some(0) {
                return Err(invalid(format!(
                    "retention.{key} = 0 keeps nothing: give at least 1 or leave it out"
                )));
            }
        }
        if let Some(t) = config.retention.repack_threshold {
            if !(0.0..=100.0).contains(&t) {
                return Err(invalid(format!(
                    "retention.repack_threshold {t} is not a percentage between 0 and 100"
                )));
            }
        }
        if let Some(n) = config.mount.threads {
            valid_threads(n).map_err(|e| invalid(format!("mount.{e}")))?;
        }
        for (name, a) in &config.accounts {
            for (i, db) in a.databases.iter().enumerate() {
                db.server()
                    .map_err(|e| invalid(format!("accounts.{name}.databases[{i}]: {e}")))?;
            }
            crate::backup::Excludes::new(&a.exclude)
                .map_err(|e| invalid(format!("accounts.{name}.exclude: {e}")))?;
            for (key, p) in [
                ("source", &a.source),
                ("mountpoint", &a.mountpoint),
                ("mail", &a.mail),
            ] {
                if p.as_ref().is_some_and(|p| !p.is_absolute()) {
                    return Err(invalid(format!(
                        "accounts.{name}.{key} must be an absolute path"
                    )));
                }
            }
        }
        if let Some(r) = &config.repository {
            match crate::backend::Location::parse(r) {
                Ok(crate::backend::Location::Local(p)) if !p.is_absolute() => {
                    return Err(invalid(
                        "repository must be an absolute path or an s3: location".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(invalid(format!("repository {e}"))),
            }
        }
        if config.state_dir.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(invalid("state_dir must be an absolute path".into()));
        }
        if config.key_file.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(invalid("key_file must be an absolute path".into()));
        }
        for at in config.replicas.keys() {
            if let Err(e) = crate::backend::Location::parse(at) {
                return Err(invalid(format!("replicas.{at:?}: {e}")));
            }
        }
        for e in &config.s3.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(invalid(format!(
                    "s3.endpoints: {e:?} does not start with http:// or https://"
                )));
            }
        }
        if config.s3.timeout_s == Some(0) || config.s3.list_interval_s == Some(0) {
            return Err(invalid(
                "s3.timeout_s and s3.list_interval_s must be at least 1".into(),
            ));
        }
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// How error messages refer to this configuration.
    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => format!("{DEFAULT_PATH} (absent)"),
        }
    }

    pub fn account(&self, name: &str) -> Option<&Account> {
        self.accounts.get(name)
    }

    /// The retention policy of `[retention]` (empty when the file sets none).
    pub fn policy(&self) -> Policy {
        let r = &self.retention;
        Policy {
            last: r.keep_last,
            daily: r.keep_daily,
            weekly: r.keep_weekly,
            monthly: r.keep_monthly,
            within: r.keep_within.as_deref().and_then(parse_duration),
        }
    }
}

/// toml's messages span several lines (a source excerpt with a caret); errors here are one line.
fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {msg}")
        }
        None => msg,
    }
}
