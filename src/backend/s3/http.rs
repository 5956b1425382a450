//! One S3 request, made reliable: signed per attempt, sent to the endpoint that answered last, retried with
//! jittered exponential backoff on another endpoint after a 5xx, a 429/SlowDown, a reset or a timeout, and given
//! up after a bounded number of attempts and a bounded time. Every body's length is checked against what was
//! asked for. Counters of requests and bytes feed the commands' `--json` outputs.

use super::settings::S3Settings;
use rusty_s3::{Bucket, Credentials, UrlStyle};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Signed URLs live this long; each attempt signs anew, so this only has to cover one request.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Error bodies and listings are small; a larger answer is not from a sane server.
const MAX_SMALL_BODY: u64 = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    Put,
    Head,
    Delete,
    List,
}

/// What a request failed with, after retries.
#[derive(Debug)]
pub enum Failure {
    NotFound,
    /// 412: a conditional write found the key taken.
    Exists,
    /// An answer that retrying cannot change (403, 400, a missing bucket...), with the server's code.
    Refused {
        status: u16,
        code: String,
    },
    /// Every attempt failed to reach a working endpoint; the last reason.
    Unreachable {
        attempts: u32,
        last: String,
    },
    /// The server answered with the wrong bytes (length, range).
    BadAnswer(String),
}

pub struct Answer {
    pub body: Vec<u8>,
    pub content_length: Option<u64>,
    pub content_range: Option<String>,
    /// The store's clock (`Date` header), seconds since the epoch.
    pub date: Option<i64>,
}

/// Every request of this process, whatever backend instance made it: what the commands log at their end.
static PROCESS: Counters = Counters::new();

#[derive(Default)]
pub struct Counters {
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    pub heads: AtomicU64,
    pub deletes: AtomicU64,
    pub lists: AtomicU64,
    pub retries: AtomicU64,
    pub bytes_down: AtomicU64,
    pub bytes_up: AtomicU64,
}

impl Counters {
    const fn new() -> Self {
        Self {
            gets: AtomicU64::new(0),
            puts: AtomicU64::new(0),
            heads: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> crate::backend::RequestStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        crate::backend::RequestStats {
            get: get(&self.gets),
            put: get(&self.puts),
            head: get(&self.heads),
            delete: get(&self.deletes),
            list: get(&self.lists),
            retries: get(&self.retries),
            bytes_down: get(&self.bytes_down),
            bytes_up: get(&self.bytes_up),
        }
    }
}

/// The requests this process made to object stores so far.
pub fn process_totals() -> crate::backend::RequestStats {
    PROCESS.snapshot()
}

pub struct Http {
    agent: ureq::Agent,
    /// One bucket handle per endpoint: a signature covers the host.
    buckets: Vec<Bucket>,
    credentials: Option<Credentials>,
    /// The endpoint to try first: the last one that answered.
    preferred: AtomicUsize,
    settings: S3Settings,
    pub counters: Counters,
}

impl Http {
    pub fn new(endpoint: &str, bucket: &str, settings: &S3Settings) -> Result<Self, String> {
        let style = if settings.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let mut buckets = Vec::new();
        for e in
            std::iter::once(endpoint).chain(settings.extra_endpoints.iter().map(|s| s.as_str()))
        {
            let url = e.parse().map_err(|err| format!("endpoint {e:?}: {err}"))?;
            let b = Bucket::new(url, style, bucket.to_string(), settings.region.clone())
                .map_err(|err| format!("endpoint {e:?}: {err}"))?;
            buckets.push(b);
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(settings.connect_timeout))
            .timeout_recv_response(Some(settings.answer_timeout))
            .timeout_send_body(Some(settings.operation_timeout))
            .timeout_recv_body(Some(settings.operation_timeout))
            .max_redirects(0)
            .build();
        Ok(Self {
            agent: config.into(),
            buckets,
            credentials: (settings.credentials.as_ref())
                .map(|c| Credentials::new(c.key_id.clone(), c.secret.clone())),
            preferred: AtomicUsize::new(0),
            settings: settings.clone(),
            counters: Counters::default(),
        })
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Sends one request with retries. `sign` builds the signed URL for a bucket handle (one per endpoint);
    /// `expect_len` is the body length a successful answer must have.
    pub fn send(
        &self,
        verb: Verb,
        sign: &dyn Fn(&Bucket) -> url::Url,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        expect_len: Option<u64>,
    ) -> Result<Answer, Failure> {
        let started = Instant::now();
        let mut last = String::new();
        let mut attempt = 0;
        while attempt < self.settings.attempts {
            if attempt > 0 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                PROCESS.retries.fetch_add(1, Ordering::Relaxed);
                let pause = backoff(attempt);
                if started.elapsed() + pause >= self.settings.operation_timeout {
                    break;
                }
                std::thread::sleep(pause);
            }
            let n =
                (self.preferred.load(Ordering::Relaxed) + attempt as usize) % self.buckets.len();
            attempt += 1;
            let remaining = self
                .settings
                .operation_timeout
                .saturating_sub(started.elapsed());
            let url = sign(&self.buckets[n]);
            match self.attempt(verb, &url, headers, body, expect_len, remaining) {
                Ok(answer) => {
                    self.preferred.store(n, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(Attempt::Final(f)) => return Err(f),
                Err(Attempt::Retry(why)) => {
                    tracing::debug!(
                        "{verb:?} via {}: {why}; retrying",
                        self.buckets[n].base_url().host_str().unwrap_or("?")
                    );
                    last = why;
                }
            }
        }
        Err(Failure::Unreachable {
            attempts: attempt,
            last,
        })
    }

    fn attempt(
        &self,
        verb: Verb,
        url: &url::Url,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        expect_len: Option<u64>,
        remaining: Duration,
    ) -> Result<Answer, Attempt> {
        for c in [&self.counters, &PROCESS] {
            let counter = match verb {
                Verb::Get => &c.gets,
                Verb::Put => &c.puts,
                Verb::Head => &c.heads,
                Verb::Delete => &c.deletes,
                Verb::List => &c.lists,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let url = url.as_str();
        let result = match verb {
            Verb::Get | Verb::List => with_headers(self.agent.get(url), headers, remaining).call(),
            Verb::Head => with_headers(self.agent.head(url), headers, remaining).call(),
            Verb::Delete => with_headers(self.agent.delete(url), headers, remaining).call(),
            Verb::Put => {
                let bytes = body.unwrap_or(&[]);
                for c in [&self.counters, &PROCESS] {
                    c.bytes_up.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                with_headers(self.agent.put(url), headers, remaining).send(bytes)
            }
        };
        let mut response = result.map_err(|e| Attempt::Retry(transport_reason(&e)))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            (response.headers().get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_length = header("content-length").and_then(|v| v.parse().ok());
        let content_range = header("content-range");
        let date = header("date").and_then(|d| parse_http_date(&d));
        // The announced length bounds the read (a 200 to a ranged GET may carry the whole object: the caller
        // slices it); without one, what was asked for, or a small answer.
        let limit = match verb {
            Verb::Head => 0,
            _ => (content_length.or(expect_len))
                .unwrap_or(MAX_SMALL_BODY)
                .min(1 << 30),
        };
        let body = if verb == Verb::Head {
            Vec::new()
        } else {
            let read = response
                .body_mut()
                .with_config()
                .limit(limit.max(1))
                .read_to_vec();
            // A body cut short (a reset, a proxy giving up) is a transport failure: retry.
            read.map_err(|e| {
                Attempt::Retry(format!("reading the answer: {}", transport_reason(&e)))
            })?
        };
        for c in [&self.counters, &PROCESS] {
            c.bytes_down.fetch_add(body.len() as u64, Ordering::Relaxed);
        }
        classify(status, &body)?;
        if verb != Verb::Head {
            if let Some(n) = content_length {
                if body.len() as u64 != n {
                    return Err(Attempt::Retry(format!(
                        "answer of {} bytes where Content-Length said {n}",
                        body.len()
                    )));
                }
            }
        }
        Ok(Answer {
            body,
            content_length,
            content_range,
            date,
        })
    }

    /// Total requests made so far, by verb, with retries and bytes.
    pub fn snapshot(&self) -> crate::backend::RequestStats {
        self.counters.snapshot()
    }
}

enum Attempt {
    Retry(String),
    Final(Failure),
}

fn with_headers<B>(
    req: ureq::RequestBuilder<B>,
    headers: &[(&str, &str)],
    remaining: Duration,
) -> ureq::RequestBuilder<B> {
    // No attempt outlives the operation's bound, whatever the per-phase timeouts allow.
    let mut req = req
        .config()
        .timeout_per_call(Some(remaining.max(Duration::from_millis(100))))
        .build();
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req
}

/// Sorts an answer into success, retry, or a final failure.
fn classify(status: u16, body: &[u8]) -> Result<(), Attempt> {
    let code = || error_code(body);
    match status {
        200..=299 => Ok(()),
        404 => Err(Attempt::Final(match code().as_str() {
            "NoSuchBucket" => Failure::Refused {
                status,
                code: "NoSuchBucket".into(),
            },
            _ => Failure::NotFound,
        })),
        412 => Err(Attempt::Final(Failure::Exists)),
        408 | 429 | 500..=599 => Err(Attempt::Retry(format!("HTTP {status} {}", code()))),
        _ => Err(Attempt::Final(Failure::Refused {
            status,
            code: code(),
        })),
    }
}

/// The `<Code>` of an S3 error document, or "" when the body has none.
fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]);
    let code = text
        .split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(c, _)| c);
    code.unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(64)
        .collect()
}

/// A transport error in a few words: never the URL, whose query holds the signature.
fn transport_reason(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Timeout(t) => format!("timed out ({t:?})"),
        ureq::Error::Io(io) => format!("{}", io.kind()),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::HostNotFound => "host not found".into(),
        ureq::Error::BodyExceedsLimit(n) => format!("answer longer than the {n} bytes asked for"),
        other => {
            let s = other.to_string();
            s.split("http").next().unwrap_or(&s).trim().to_string()
        }
    }
}

/// Exponential from 100 ms, capped at 5 s, with full jitter: retries of many threads spread out.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = (100u64 << attempt.min(6)).min(5000);
    Duration::from_millis(cap_ms / 2 + jitter() % (cap_ms / 2 + 1))
}

fn jitter() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let seed = nanos
        ^ N.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        ^ u64::from(std::process::id());
    let h = blake3::hash(&seed.to_le_bytes());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// An HTTP date (`Mon, 30 Nov 2026 06:31:23 GMT`) as seconds since the epoch.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let zoned = jiff::fmt::rfc2822::parse(s).ok()?;
    Some(zoned.timestamp().as_second())
}

/// A listing's `LastModified` (`2026-11-30T06:31:23.000Z`) as seconds since the epoch.
pub fn parse_iso_time(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

pub const SIGN_FOR: Duration = SIGNATURE_LIFETIME;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:01:40 GMT"), Some(100));
        assert_eq!(parse_iso_time("1970-01-01T00:01:40.000Z"), Some(100));
        assert_eq!(parse_http_date("garbage"), None);
    }

    #[test]
    fn error_codes() {
        let body =
            b"<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body), "NoSuchBucket");
        assert_eq!(error_code(b"<Code>a<b>c</Code>"), "abc");
        assert_eq!(error_code(b""), "");
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for a in 1..20 {
            let d = backoff(a);
            assert!(d <= Duration::from_millis(5000), "{d:?}");
            assert!(d >= Duration::from_millis(100), "{d:?}");
        }
    }
}
