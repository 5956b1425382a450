//! backupfs against a repository in a test Garage cluster: the commands with the credentials, a config naming
//! the cluster's other nodes, and a state directory per simulated machine; plain S3 access with curl's SigV4.

use super::garage::{Garage, BUCKET, KEY_ID, SECRET_KEY};
use super::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A repository under `prefix` of the cluster's bucket, reached through node 1 with nodes 2 and 3 as failover.
pub struct S3Repo {
    pub url: String,
    pub config: PathBuf,
    pub env: Vec<(String, String)>,
}

impl S3Repo {
    pub fn new(g: &Garage, t: &TempDir, prefix: &str) -> Self {
        let config = t.join(&format!("{prefix}.toml"));
        let (e2, e3) = (g.endpoint(2), g.endpoint(3));
        std::fs::write(
            &config,
            format!("[s3]\nendpoints = [\"{e2}\", \"{e3}\"]\nregion = \"garage\"\ntimeout_s = 20\nlist_interval_s = 2\n"),
        )
        .unwrap();
        Self {
            url: g.url(prefix),
            config,
            env: g.env(),
        }
    }

    /// `backupfs ARGS` against this repository with the given state directory.
    pub fn cmd(&self, state: &Path, args: &[&str]) -> Command {
        let mut c = bin();
        c.env("BACKUPFS_CONFIG", &self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg(args[0]);
        if args[0] != "init" {
            c.args(["--repo", &self.url]);
        }
        c.arg("--state-dir").arg(state).args(&args[1..]);
        c
    }

    pub fn ok(&self, state: &Path, args: &[&str]) -> Output {
        let out = output_within(&mut self.cmd(state, args), Duration::from_secs(300));
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn init(&self, state: &Path) {
        self.ok(state, &["init", &self.url]);
    }

    pub fn backup(&self, state: &Path, account: &str, src: &Path, time: &str) -> serde_json::Value {
        let out = self.ok(
            state,
            &[
                "backup",
                "--account",
                account,
                "--json",
                "--time",
                time,
                src.to_str().unwrap(),
            ],
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn snapshots(&self, state: &Path) -> Vec<serde_json::Value> {
        let out = self.ok(state, &["snapshots", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn mount(&self, state: &Path, account: &str, mnt: &Path) -> Mount {
        let state = state.to_str().unwrap();
        let env: Vec<(&str, &str)> = (self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .chain([("BACKUPFS_CONFIG", self.config.to_str().unwrap())])
            .collect();
        Mount::with(
            Path::new(&self.url),
            account,
            mnt,
            &["--state-dir", state],
            &env,
        )
    }

    pub fn check_clean(&self, state: &Path) {
        let out = self.ok(state, &["check", "--read-data"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("DAMAGED"), "{text}");
    }
}

/// `curl` signing its requests for the test key (SigV4, Garage's region) as Garage wants them.
fn curl_signed() -> Command {
    let mut c = Command::new("curl");
    let auth = format!("{KEY_ID}:{SECRET_KEY}");
    c.args([
        "-sS",
        "--fail",
        "--aws-sigv4",
        "aws:amz:garage:s3",
        "--user",
        &auth,
    ]);
    c.args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"]);
    c
}

/// Runs a signed curl and returns what it printed; any failure fails the test with curl's stderr.
fn curl_ok(mut c: Command) -> Vec<u8> {
    let out = c.output().expect("curl");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Keys under `prefix` of the bucket, listed with curl's SigV4 signing (one page: the tests stay far below 1,000).
pub fn list_keys(g: &Garage, prefix: &str) -> Vec<String> {
    // curl signs the query as written: the prefix's slashes must be encoded already.
    let prefix = prefix.replace('/', "%2F");
    let url = format!("{}/{}?list-type=2&prefix={prefix}", g.endpoint(1), BUCKET);
    let mut c = curl_signed();
    c.arg(&url);
    let listing = String::from_utf8_lossy(&curl_ok(c)).into_owned();
    let keys = listing.split("<Key>").skip(1);
    keys.filter_map(|k| k.split_once("</Key>").map(|(key, _)| key.to_string()))
        .collect()
}

pub fn count_keys(g: &Garage, prefix: &str) -> usize {
    list_keys(g, prefix).len()
}

/// The bytes of the object `key` of the bucket, as a provider sees them.
pub fn get_object(g: &Garage, key: &str) -> Vec<u8> {
    let mut c = curl_signed();
    c.arg(format!("{}/{}/{key}", g.endpoint(1), BUCKET));
    curl_ok(c)
}

/// Uploads an object to each URL with curl's SigV4 signing (Garage, region "garage"), in batches.
pub fn put_objects(urls: &[String], body: &Path) {
    for batch in urls.chunks(100) {
        let mut c = curl_signed();
        for url in batch {
            c.arg("-T").arg(body).arg(url);
        }
        curl_ok(c);
    }
}
