//! A repository under a prefix of an S3 bucket (AWS, Ceph RGW, MinIO, Garage, Scaleway...).
//!
//! Keys are the local layout's paths under the prefix (`PREFIX/packs/ab/ab...pack`, `PREFIX/snapshots/...`,
//! `PREFIX/config`, `PREFIX/leases/...`). Every object is written by one PUT, which S3 makes visible whole or not
//! at all; there are no temporary objects to clean up. Writes carry `If-None-Match: *`: stores that honour it
//! (AWS, MinIO, Ceph) refuse to replace a key, stores that ignore it (Garage) replace it, and the repository is
//! designed to be correct either way (see SPEC.md, "What the storage must guarantee").
//!
//! Requests go through `http::Http`: bounded retries with backoff, failover across the cluster's endpoints,
//! length-checked bodies, counters.

pub mod http;
pub mod settings;

use super::location::S3Location;
use super::{Backend, BackendError, Dir, Listed, Listing, Object, RequestStats};
use crate::format::{PackId, SnapshotId};
use http::{Answer, Failure, Http, Verb, SIGN_FOR};
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::S3Action;
pub use settings::S3Settings;

/// Keys per listing page: the S3 maximum, so that a repository of 100,000 packs lists in 100 requests.
const PAGE: usize = 1000;
/// The largest object `read_all` takes (configs and manifests are small; a pack is read in ranges).
const MAX_WHOLE_OBJECT: u64 = 1 << 30;

pub struct S3Backend {
    location: S3Location,
    http: Http,
}

impl S3Backend {
    pub fn new(location: &S3Location, settings: &S3Settings) -> Result<Self, BackendError> {
        let http = Http::new(&location.endpoint, &location.bucket, settings).map_err(|what| {
            BackendError::Store {
                object: location_display(location),
                what,
            }
        })?;
        Ok(Self {
            location: location.clone(),
            http,
        })
    }

    fn key(&self, relative: &str) -> String {
        if self.location.prefix.is_empty() {
            relative.to_string()
        } else {
            format!("{}/{relative}", self.location.prefix)
        }
    }

    /// How an object is named in errors: the location and its key, never a signed URL.
    fn name(&self, relative: &str) -> String {
        format!("{}/{relative}", location_display(&self.location))
    }

    fn fail(&self, relative: &str, failure: Failure) -> BackendError {
        let object = self.name(relative);
        match failure {
            Failure::NotFound => BackendError::NotFound {
                path: object.into(),
            },
            Failure::Exists => BackendError::AlreadyExists {
                path: object.into(),
            },
            Failure::Refused { status, code } => BackendError::Store {
                object,
                what: refusal(status, &code),
            },
            Failure::Unreachable { attempts, last } => BackendError::Store {
                object,
                what: format!("store unreachable after {attempts} attempts: {last}"),
            },
            Failure::BadAnswer(what) => BackendError::Store { object, what },
        }
    }

    fn get(
        &self,
        relative: &str,
        range: Option<(u64, u64)>,
        expect: Option<u64>,
    ) -> Result<Answer, BackendError> {
        let key = self.key(relative);
        let creds = self.http.credentials();
        let sign = |b: &rusty_s3::Bucket| b.get_object(creds, &key).sign(SIGN_FOR);
        let range_header = range.map(|(start, len)| format!("bytes={start}-{}", start + len - 1));
        let headers: Vec<(&str, &str)> =
            range_header.iter().map(|r| ("range", r.as_str())).collect();
        (self.http.send(Verb::Get, &sign, &headers, None, expect))
            .map_err(|f| self.fail(relative, f))
    }

    /// One page of keys under `dir/`, from `token`.
    fn list_page(
        &self,
        dir: &str,
        token: Option<&str>,
    ) -> Result<(Vec<Listed>, Option<String>, Option<i64>), BackendError> {
        let prefix = match (dir, self.location.prefix.as_str()) {
            ("", "") => String::new(),
            ("", p) => format!("{p}/"),
            _ => self.key(&format!("{dir}/")),
        };
        let creds = self.http.credentials();
        let sign = |b: &rusty_s3::Bucket| {
            let mut list = ListObjectsV2::new(b, creds);
            list.with_prefix(prefix.as_str());
            list.with_max_keys(PAGE);
            if let Some(t) = token {
                list.with_continuation_token(t);
            }
            list.sign(SIGN_FOR)
        };
        let answer =
            (self.http.send(Verb::List, &sign, &[], None, None)).map_err(|f| self.fail(dir, f))?;
        let text = String::from_utf8_lossy(&answer.body);
        let parsed = ListObjectsV2::parse_response(&text).map_err(|e| BackendError::Store {
            object: self.name(dir),
            what: format!("unreadable listing: {e}"),
        })?;
        let mut entries = Vec::with_capacity(parsed.contents.len());
        for c in parsed.contents {
            let Some(name) = c.key.strip_prefix(&prefix) else {
                continue;
            };
            entries.push(Listed {
                name: name.to_string(),
                size: c.size.unwrap_or(0),
                modified: c
                    .last_modified
                    .as_deref()
                    .and_then(http::parse_iso_time)
                    .unwrap_or(0),
            });
        }
        Ok((entries, parsed.next_continuation_token, answer.date))
    }
}

fn location_display(l: &S3Location) -> String {
    super::location::Location::S3(l.clone()).to_string()
}

/// The store's refusal in words a user can act on.
fn refusal(status: u16, code: &str) -> String {
    match (status, code) {
        (_, "NoSuchBucket") => "no such bucket".into(),
        (403, "SignatureDoesNotMatch" | "InvalidAccessKeyId" | "AccessDenied" | "") | (401, _) => {
            format!("access denied (HTTP {status} {code}): check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the credentials file")
        }
        _ => format!("refused: HTTP {status} {code}"),
    }
}

impl Backend for S3Backend {
    fn read_at(&self, obj: Object, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        if buf.is_empty() {
            return Ok(());
        }
        let relative = obj.key();
        let len = buf.len() as u64;
        let answer = self.get(&relative, Some((offset, len)), Some(len))?;
        let bytes = ranged_body(&answer, offset, len).map_err(|what| BackendError::Store {
            object: self.name(&relative),
            what,
        })?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn read_all(&self, obj: Object) -> Result<Vec<u8>, BackendError> {
        let relative = obj.key();
        let answer = self.get(&relative, None, None)?;
        if answer.body.len() as u64 > MAX_WHOLE_OBJECT {
            return Err(BackendError::Store {
                object: self.name(&relative),
                what: "larger than any object read whole".into(),
            });
        }
        Ok(answer.body)
    }

    fn size(&self, obj: Object) -> Result<u64, BackendError> {
        let relative = obj.key();
        let key = self.key(&relative);
        let creds = self.http.credentials();
        let sign = |b: &rusty_s3::Bucket| b.head_object(creds, &key).sign(SIGN_FOR);
        let answer = (self.http.send(Verb::Head, &sign, &[], None, None))
            .map_err(|f| self.fail(&relative, f))?;
        answer.content_length.ok_or_else(|| BackendError::Store {
            object: self.name(&relative),
            what: "HEAD answered without a Content-Length".into(),
        })
    }

    fn write_new(&self, obj: Object, bytes: &[u8]) -> Result<(), BackendError> {
        let relative = obj.key();
        let key = self.key(&relative);
        let creds = self.http.credentials();
        let sign = |b: &rusty_s3::Bucket| b.put_object(creds, &key).sign(SIGN_FOR);
        super::crash::before_change(&format_args!("PUT {}", self.name(&relative)));
        let headers = [("if-none-match", "*")];
        (self
            .http
            .send(Verb::Put, &sign, &headers, Some(bytes), None))
        .map_err(|f| self.fail(&relative, f))?;
        Ok(())
    }

    fn list_packs(&self) -> Result<Vec<PackId>, BackendError> {
        Ok(self
            .list_aged(Dir::Packs)?
            .entries
            .iter()
            .filter_map(|l| pack_from_name(&l.name))
            .collect())
    }

    fn list_manifests(&self) -> Result<Vec<SnapshotId>, BackendError> {
        let listing = self.list_aged(Dir::Snapshots)?;
        Ok(listing
            .entries
            .iter()
            .filter_map(|l| SnapshotId::from_hex(&l.name))
            .collect())
    }

    fn list_aged(&self, dir: Dir) -> Result<Listing, BackendError> {
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let (entries, next, date) = self.list_page(dir.name(), token.as_deref())?;
            listing.entries.extend(entries);
            if listing.now == 0 {
                listing.now = date.unwrap_or_else(super::local_now);
            }
            match next {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(listing),
            }
        }
    }

    fn remove(&self, obj: Object) -> Result<(), BackendError> {
        let relative = obj.key();
        let key = self.key(&relative);
        let creds = self.http.credentials();
        let sign = |b: &rusty_s3::Bucket| b.delete_object(creds, &key).sign(SIGN_FOR);
        super::crash::before_change(&format_args!("DELETE {}", self.name(&relative)));
        (self.http.send(Verb::Delete, &sign, &[], None, None))
            .map_err(|f| self.fail(&relative, f))?;
        Ok(())
    }

    fn clean_leftovers(&self) -> Result<usize, BackendError> {
        // A PUT is whole or absent: a crashed writer leaves no partial object.
        Ok(0)
    }

    fn stats(&self) -> RequestStats {
        self.http.snapshot()
    }

    fn is_empty(&self) -> Result<bool, BackendError> {
        // Anything under the prefix, ours or not, makes it taken: `list_page` of the prefix itself.
        let (entries, _, _) = self.list_page("", None)?;
        Ok(entries.is_empty())
    }

    fn coalesce_gap(&self) -> u64 {
        // A request's round trip costs about what 256 KiB take to transfer on a 100 Mbit/s link at 20 ms.
        256 << 10
    }

    fn describe(&self) -> String {
        location_display(&self.location)
    }
}

/// `ab/ab12...ef.pack` -> the pack id.
fn pack_from_name(name: &str) -> Option<PackId> {
    let (_, file) = name.split_once('/')?;
    PackId::from_hex(file.strip_suffix(".pack")?)
}

/// The requested bytes of a ranged GET: a 206's body, or the slice of a 200 that announces the range it holds
/// in `Content-Range` (as `rclone serve s3` does), or of a 200 carrying the whole object.
fn ranged_body(answer: &Answer, offset: u64, len: u64) -> Result<&[u8], String> {
    let body = &answer.body;
    let start = match &answer.content_range {
        Some(range) => parse_content_range_start(range)
            .ok_or_else(|| format!("bad Content-Range {range:?}"))?,
        None if body.len() as u64 == len => offset,
        None => 0,
    };
    let from = offset
        .checked_sub(start)
        .ok_or("answer starts after the range asked for")?;
    let end = from.checked_add(len).ok_or("range overflows")?;
    if end > body.len() as u64 {
        return Err(format!(
            "answer of {} bytes from offset {start} does not hold {len} bytes at {offset}",
            body.len()
        ));
    }
    Ok(&body[from as usize..end as usize])
}

/// `bytes 100-199/1000` -> 100.
fn parse_content_range_start(v: &str) -> Option<u64> {
    v.strip_prefix("bytes ")?
        .split_once('-')?
        .0
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &[u8], range: Option<&str>) -> Answer {
        Answer {
            body: body.to_vec(),
            content_length: Some(body.len() as u64),
            content_range: range.map(str::to_string),
            date: None,
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(
            ranged_body(&answer(b"cde", Some("bytes 2-4/10")), 2, 3).unwrap(),
            b"cde"
        );
        assert_eq!(
            ranged_body(&answer(b"abcdefghij", Some("bytes 0-9/10")), 2, 3).unwrap(),
            b"cde"
        );
        assert_eq!(
            ranged_body(&answer(b"abcdefghij", None), 2, 3).unwrap(),
            b"cde"
        );
        assert_eq!(ranged_body(&answer(b"cde", None), 2, 3).unwrap(), b"cde");
        assert!(ranged_body(&answer(b"cd", Some("bytes 2-3/10")), 2, 3).is_err());
        assert!(ranged_body(&answer(b"cde", Some("bytes 3-5/10")), 2, 3).is_err());
        assert!(ranged_body(&answer(b"cde", Some("items 2-4")), 2, 3).is_err());
    }

    #[test]
    fn pack_names() {
        let hex = "ab".repeat(32);
        assert!(pack_from_name(&format!("ab/{hex}.pack")).is_some());
        assert!(pack_from_name(&format!("{hex}.pack")).is_none());
    }
}
