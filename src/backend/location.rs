//! Where a repository is: a local directory, or a prefix in an S3 bucket. Parsed once, at the edge, from
//! `--repo`, `BACKUPFS_REPO`, the config file's `repository` or the fstab helper's source; everything below
//! that sees a `Location` and the backend it opens, never the string.

use std::fmt;
use std::path::PathBuf;

/// A repository location. Displays as it was given (it never holds credentials: they come from the
/// environment or a root-only file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    S3(S3Location),
}

/// `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`, restic's form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Location {
    /// `http[s]://HOST[:PORT]`, without a trailing slash.
    pub endpoint: String,
    pub bucket: String,
    /// Key prefix without leading or trailing slashes; empty for the bucket's root.
    pub prefix: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{given:?}: {why}")]
pub struct LocationError {
    pub given: String,
    pub why: &'static str,
}

impl Location {
    pub fn parse(given: &str) -> Result<Location, LocationError> {
        let fail = |why| LocationError {
            given: given.to_string(),
            why,
        };
        let Some(url) = given.strip_prefix("s3:") else {
            if given.is_empty() {
                return Err(fail("an empty repository location"));
            }
            // `scheme:...` that is not a path: say so rather than create a directory called "sftp:host".
            if let Some((scheme, _)) = given.split_once("://") {
                if !scheme.contains('/') {
                    return Err(fail("unknown scheme: use a directory or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]"));
                }
            }
            return Ok(Location::Local(PathBuf::from(given)));
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| fail("expected s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]"))?;
        if scheme != "http" && scheme != "https" {
            return Err(fail("the endpoint must start with http:// or https://"));
        }
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() || host.contains('@') {
            return Err(fail(
                "a host is needed, and no credentials in the location (use AWS_ACCESS_KEY_ID or a credentials file)",
            ));
        }
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if !valid_bucket(bucket) {
            return Err(fail(
                "a bucket name (3-63 of a-z, 0-9, '.', '-') must follow the host",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..")
            || prefix.contains("//")
            || prefix
                .chars()
                .any(|c| c.is_control() || c == '?' || c == '#')
        {
            return Err(fail(
                "the prefix may not hold empty, '.' or '..' parts, '?', '#' or control characters",
            ));
        }
        Ok(Location::S3(S3Location {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }

    pub fn local_path(&self) -> Option<&std::path::Path> {
        match self {
            Location::Local(p) => Some(p),
            Location::S3(_) => None,
        }
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::S3(s) if s.prefix.is_empty() => write!(f, "s3:{}/{}", s.endpoint, s.bucket),
            Location::S3(s) => write!(f, "s3:{}/{}/{}", s.endpoint, s.bucket, s.prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_forms() {
        let l = Location::parse("s3:http://127.0.0.1:3900/backups/hosting/a").unwrap();
        let Location::S3(s) = &l else { panic!() };
        assert_eq!(s.endpoint, "http://127.0.0.1:3900");
        assert_eq!(
            (s.bucket.as_str(), s.prefix.as_str()),
            ("backups", "hosting/a")
        );
        assert_eq!(l.to_string(), "s3:http://127.0.0.1:3900/backups/hosting/a");
        let l = Location::parse("s3:https://s3.example.com/bkp/").unwrap();
        assert_eq!(l.to_string(), "s3:https://s3.example.com/bkp");
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "sftp://host/x",
            "s3:ftp://h/b",
            "s3:http:///b",
            "s3:http://h",
            "s3:http://h/B_ad",
            "s3:http://k:s@h/bucket",
            "s3:http://h/bucket/a/../b",
            "s3:http://h/bucket/a//b",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Location::parse("/srv/repo").unwrap(),
            Location::Local("/srv/repo".into())
        );
        assert_eq!(
            Location::parse("relative/dir").unwrap(),
            Location::Local("relative/dir".into())
        );
    }
}
