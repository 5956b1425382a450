//! A repository in S3-compatible object storage, against a real 3-node Garage cluster on 127.0.0.1
//! (replication factor 3, three zones) that each test starts and stops: round trip through the kernel, a second
//! machine (state directory), concurrent writers, prune's grace period, listing pagination, bad input.
//! Node faults are in tests/s3_faults.rs.

mod common;

use common::garage::Garage;
use common::s3repo::{count_keys, put_objects, S3Repo};
use common::*;
use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

fn day(n: u32) -> String {
    format!("2026-11-{n:02}T03:00:00Z")
}

#[test]
fn nightly_backups_over_s3_mount_prune_and_a_second_machine() {
    let g = Garage::start();
    g.wait_ready();
    let t = TempDir::new("s3-round");
    let repo = S3Repo::new(&g, &t, "hosting");
    let (src, st1, st2) = (t.join("src"), t.join("state1"), t.join("state2"));
    repo.init(&st1);
    gen_tree(&src, "s3");
    let mut expected = Vec::new();
    for d in 1..=3 {
        if d > 1 {
            mutate(&src, "s3", d - 1);
        }
        let summary = repo.backup(&st1, "alice", &src, &day(d));
        let requests = summary["store_requests"]["requests"].as_u64().unwrap();
        assert!(requests > 0, "{summary}");
        // The previous snapshot's trees come from the state directory's cache, not one GET each.
        let gets = summary["store_requests"]["get"].as_u64().unwrap();
        assert!(
            d == 1 || gets <= 3,
            "{gets} GETs for an incremental backup: {summary}"
        );
        expected.push(describe(&src));
    }
    let m = repo.mount(&st1, "alice", &t.join("mnt"));
    for (i, want) in expected.iter().enumerate() {
        assert_same_tree(
            want,
            &describe(&m.path.join(format!("2026-11-{:02}", i + 1))),
        );
    }
    assert_same_tree(&expected[2], &describe(&m.latest_in("")));
    let tree = cp_a(&m.latest_in(""), &t.join("restored"));
    assert_same_tree(&expected[2], &describe(&tree));
    repo.check_clean(&st1);

    // A second machine: a fresh state directory sees the same names and the same inode numbers.
    let m2 = repo.mount(&st2, "alice", &t.join("mnt2"));
    assert_eq!(inode_map(&m.path), inode_map(&m2.path));
    drop(m2);

    // Prune on the first machine: the forgotten day leaves the second machine's view within its sync interval.
    repo.ok(&st1, &["prune", "--keep-last", "2", "--grace", "0"]);
    wait_until(
        "the pruned day to leave the mount",
        Duration::from_secs(30),
        || !m.path.join("2026-11-01").exists(),
    );
    assert_eq!(repo.snapshots(&st2).len(), 2);
    repo.check_clean(&st2);
    assert_same_tree(&expected[2], &describe(&m.latest_in("")));
}

#[test]
fn prune_deletes_unreferenced_packs_only_after_the_grace_period() {
    let g = Garage::start();
    g.wait_ready();
    let t = TempDir::new("s3-grace");
    let repo = S3Repo::new(&g, &t, "grace");
    let (src, st) = (t.join("src"), t.join("state"));
    repo.init(&st);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("old.bin"), noise(1, 3_000_000)).unwrap();
    repo.backup(&st, "bob", &src, &day(1));
    std::fs::write(src.join("old.bin"), noise(2, 3_000_000)).unwrap();
    repo.backup(&st, "bob", &src, &day(2));
    let packs = |_: &Path| count_keys(&g, "grace/packs/");
    let before = packs(&st);
    assert!(before >= 3, "{before} packs");
    // Day 1's data pack is now unreferenced. A long grace keeps it; a short one condemns it first...
    let out = repo.ok(
        &st,
        &["prune", "--keep-last", "1", "--json", "--grace", "24h"],
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["packs_deleted"], 0, "{r}");
    assert_eq!(packs(&st), before);
    // Packs younger than the grace period are not even condemned.
    assert_eq!(r["packs_condemned"], 0, "{r}");
    std::thread::sleep(Duration::from_secs(2));
    let out = repo.ok(
        &st,
        &["prune", "--keep-last", "1", "--json", "--grace", "1s"],
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["packs_condemned"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(r["packs_deleted"], 0, "{r}");
    // ... and the next prune after the grace period deletes it.
    std::thread::sleep(Duration::from_secs(2));
    let out = repo.ok(
        &st,
        &["prune", "--keep-last", "1", "--json", "--grace", "1s"],
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["packs_deleted"].as_u64().unwrap() >= 1, "{r}");
    assert!(packs(&st) < before);
    repo.check_clean(&st);
    let m = repo.mount(&st, "bob", &t.join("mnt"));
    assert_eq!(
        std::fs::read(m.latest_in("").join("old.bin")).unwrap(),
        noise(2, 3_000_000)
    );
}

#[test]
fn two_machines_back_up_into_one_bucket_at_once_without_ordinal_collisions() {
    let g = Garage::start();
    g.wait_ready();
    let t = TempDir::new("s3-writers");
    let repo = S3Repo::new(&g, &t, "shared");
    repo.init(&t.join("init-state"));
    let rounds = 4;
    std::thread::scope(|scope| {
        for (account, seed) in [("alice", "wa"), ("bob", "wb")] {
            let (repo, t) = (&repo, &t);
            scope.spawn(move || {
                let src = t.join(&format!("src-{account}"));
                let state = t.join(&format!("state-{account}"));
                gen_tree(&src, seed);
                for d in 1..=rounds {
                    mutate(&src, seed, d);
                    repo.backup(&state, account, &src, &day(d));
                }
            });
        }
    });
    let all = repo.snapshots(&t.join("observer"));
    assert_eq!(all.len(), 2 * rounds as usize, "{all:?}");
    let ordinals: HashSet<u64> = all.iter().map(|s| s["ordinal"].as_u64().unwrap()).collect();
    assert_eq!(ordinals.len(), all.len(), "ordinals collide: {all:?}");
    repo.check_clean(&t.join("observer"));
    // Both machines' indexes agree with the bucket.
    for account in ["alice", "bob"] {
        assert_eq!(
            repo.snapshots(&t.join(&format!("state-{account}"))).len(),
            all.len()
        );
    }
}

#[test]
fn a_listing_of_more_than_a_thousand_objects_is_read_to_its_end() {
    let g = Garage::start();
    g.wait_ready();
    let t = TempDir::new("s3-pages");
    let repo = S3Repo::new(&g, &t, "pages");
    let (src, st) = (t.join("src"), t.join("state"));
    repo.init(&st);
    gen_tree(&src, "pg");
    let id = repo.backup(&st, "carol", &src, &day(1))["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    // 1,100 foreign keys that sort before the manifest ('-' sorts before every hex digit; names that are no
    // snapshot id): the manifest is on the listing's second page.
    let body = t.join("empty");
    std::fs::write(&body, b"").unwrap();
    let urls: Vec<String> = (0..1100)
        .map(|i| {
            format!(
                "{}/{}/pages/snapshots/-padding-{i:05}",
                g.endpoint(1),
                common::garage::BUCKET
            )
        })
        .collect();
    put_objects(&urls, &body);
    let fresh = t.join("fresh-state");
    let listed = repo.snapshots(&fresh);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
}

#[test]
fn bad_locations_and_credentials_fail_with_one_line_and_write_nothing() {
    let g = Garage::start();
    g.wait_ready();
    let t = TempDir::new("s3-bad");
    let repo = S3Repo::new(&g, &t, "bad");
    let st = t.join("state");
    let one_line = |out: &Output, code: i32, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(code), "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
        // Usage errors (2) are clap's: the message, then a line pointing to --help.
        if code != 2 {
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
        assert!(!err.contains(common::garage::SECRET_KEY), "secret in {err}");
        assert!(!err.contains("X-Amz-Signature"), "signed URL in {err}");
    };
    // An unknown scheme is a usage error.
    let out = bin()
        .args(["snapshots", "--repo", "sftp://host/repo"])
        .output()
        .unwrap();
    one_line(&out, 2, "unknown scheme");
    // A missing bucket.
    let missing = format!("s3:{}/no-such-bucket/x", g.endpoint(1));
    let mut c = repo.cmd(&st, &["init", &missing]);
    one_line(
        &output_within(&mut c, Duration::from_secs(60)),
        1,
        "no such bucket",
    );
    // Wrong credentials.
    let mut c = repo.cmd(&st, &["init", &repo.url]);
    c.env("AWS_SECRET_ACCESS_KEY", "0".repeat(64));
    one_line(
        &output_within(&mut c, Duration::from_secs(60)),
        1,
        "access denied",
    );
    // No credentials at all.
    let mut c = repo.cmd(&st, &["init", &repo.url]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    one_line(
        &output_within(&mut c, Duration::from_secs(60)),
        1,
        "no S3 credentials",
    );
    // A prefix that holds something else: not a repository to open, and init will not take it over.
    let foreign = format!(
        "{}/{}/bad/someone-elses-file",
        g.endpoint(1),
        common::garage::BUCKET
    );
    std::fs::write(t.join("f"), b"not ours").unwrap();
    put_objects(&[foreign], &t.join("f"));
    let mut c = repo.cmd(&st, &["snapshots"]);
    one_line(
        &output_within(&mut c, Duration::from_secs(60)),
        1,
        "not a backupfs repository",
    );
    let mut c = repo.cmd(&st, &["init", &repo.url]);
    one_line(
        &output_within(&mut c, Duration::from_secs(60)),
        1,
        "not empty",
    );
    // Nothing was written: the prefix holds only the foreign file, and a real repository elsewhere still works.
    let other = S3Repo::new(&g, &t, "good");
    other.init(&t.join("good-state"));
    assert!(other.snapshots(&t.join("good-state")).is_empty());
}

/// Another machine's prune rewrites a pack (its live blobs copied to a new one) and, a prune later, deletes the
/// old one. A machine that attached in between read the old pack last (from its trailer: the consolidated pack
/// index lists only the new one), so its entry for the surviving blob pointed into the old pack: it must follow
/// the blob to its new copy, not lose it.
#[test]
fn a_blob_moved_by_another_machines_prune_stays_readable() {
    let g = Garage::start();
    let t = TempDir::new("s3-moved");
    let repo = S3Repo::new(&g, &t, "moved");
    let (src, a, b) = (t.join("src"), t.join("machine-a"), t.join("machine-b"));
    repo.init(&a);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("gone.bin"), noise(1, 3_000_000)).unwrap();
    std::fs::write(src.join("kept.bin"), noise(2, 3_000_000)).unwrap();
    repo.backup(&a, "dana", &src, &day(1));
    std::fs::remove_file(src.join("gone.bin")).unwrap();
    repo.backup(&a, "dana", &src, &day(2));
    let prune = |state: &Path| -> serde_json::Value {
        let args = [
            "prune",
            "--keep-last",
            "1",
            "--repack-threshold",
            "10",
            "--grace",
            "0",
            "--json",
        ];
        serde_json::from_slice(&repo.ok(state, &args).stdout).unwrap()
    };
    let first = prune(&a);
    assert!(first["packs_rewritten"].as_u64().unwrap() >= 1, "{first}");
    // Machine B attaches now: both copies of kept.bin's chunks exist.
    assert_eq!(repo.snapshots(&b).len(), 1);
    let second = prune(&a);
    assert!(second["packs_deleted"].as_u64().unwrap() >= 1, "{second}");
    repo.check_clean(&b);
    let m = repo.mount(&b, "dana", &t.join("mnt"));
    assert_eq!(
        std::fs::read(m.latest_in("").join("kept.bin")).unwrap(),
        noise(2, 3_000_000)
    );
}

/// A sequential read through the mount fetches its chunks in a few ranged reads, not one request per chunk:
/// the prefetch window's neighbours in a pack come together (the mount logs its store requests at exit).
#[test]
fn a_sequential_read_coalesces_neighbouring_chunks() {
    let g = Garage::start();
    let t = TempDir::new("s3-coalesce");
    let repo = S3Repo::new(&g, &t, "coalesce");
    let (src, st) = (t.join("src"), t.join("state"));
    repo.init(&st);
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big.bin"), noise(3, 40 << 20)).unwrap();
    let summary = repo.backup(&st, "erin", &src, &day(1));
    let blobs = summary["blobs_added"].as_u64().unwrap();
    let mut m = uncached_mount(&repo, &t, "erin");
    let data = std::fs::read(m.latest_in("").join("big.bin")).unwrap();
    assert!(data == noise(3, 40 << 20), "wrong bytes");
    m.stop();
    let (gets, line) = gets_logged(&m.log_text());
    eprintln!("{blobs} blobs stored; reading the 40 MiB file took {gets} GETs: {line}");
    // One GET per chunk plus the tree's would be `blobs` (one tree, the rest chunks); how much fewer depends on
    // how far prefetch runs ahead of the reader, which a loaded machine shortens (13 idle, 18 loaded, here).
    assert!(
        gets + 2 <= blobs,
        "{gets} GETs for {blobs} blobs: reads were not coalesced"
    );
}

/// A mount from a fresh state directory without the on-disk cache: every blob it reads is a request.
fn uncached_mount(repo: &S3Repo, t: &TempDir, account: &str) -> Mount {
    let state = t.join("reader");
    let env: Vec<(&str, &str)> = (repo.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .chain([("BACKUPFS_CONFIG", repo.config.to_str().unwrap())])
        .collect();
    let args = ["--state-dir", state.to_str().unwrap(), "--disk-cache", "0"];
    Mount::with(Path::new(&repo.url), account, &t.join("mnt"), &args, &env)
}

/// The GETs of the last "store requests" line of a log, and the line.
fn gets_logged(log: &str) -> (u64, String) {
    let line = log
        .lines()
        .rfind(|l| l.contains("store requests"))
        .unwrap_or_else(|| panic!("no request count in the log:\n{log}"));
    let gets = line
        .split("\"get\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no GET count in {line}"));
    (gets, line.to_string())
}

/// `cp -a` of a directory of small files: the files read ahead of the copy come in shared ranged reads, so the
/// copy costs fewer GETs than files.
#[test]
fn cp_a_of_small_files_shares_requests() {
    let g = Garage::start();
    let t = TempDir::new("s3-small");
    let repo = S3Repo::new(&g, &t, "small");
    let (src, st) = (t.join("src"), t.join("state"));
    repo.init(&st);
    std::fs::create_dir_all(src.join("www")).unwrap();
    let files = 64u64;
    for i in 0..files {
        let page = noise(1000 + i, 2_000 + 100 * i as usize);
        std::fs::write(src.join(format!("www/page{i:03}.html")), page).unwrap();
    }
    repo.backup(&st, "fay", &src, &day(1));
    let mut m = uncached_mount(&repo, &t, "fay");
    let copied = cp_a(&m.latest_in(""), &t.join("copy"));
    assert_same_tree(&describe(&src), &describe(&copied));
    m.stop();
    let (gets, line) = gets_logged(&m.log_text());
    eprintln!("cp -a of {files} small files: {gets} GETs: {line}");
    assert!(
        gets * 2 < files,
        "{gets} GETs for {files} small files: reads ahead were not shared"
    );
}
