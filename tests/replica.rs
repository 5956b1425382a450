//! Replicas (`init --like`, `copy`, `lag`): a copy is the same repository (same objects, names, inode numbers),
//! only what is missing moves, a copy killed before any of its writes leaves a replica that lists only what it
//! can serve whole, and the lag report's exit code is what monitoring relies on.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every object of a repository directory by name, with its bytes' hash (what a copy must preserve).
fn objects(repo: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for dir in ["packs", "snapshots"] {
        let mut stack = vec![repo.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let hash = blake3::hash(&std::fs::read(&p).unwrap())
                        .to_hex()
                        .to_string();
                    out.insert(p.strip_prefix(repo).unwrap().display().to_string(), hash);
                }
            }
        }
    }
    out
}

/// `check --read-data` of the replica as a machine that never saw it does it: from a new state directory, which
/// lists every manifest the replica holds (a catalog-less manifest a killed copy left would show here).
fn check_as_a_new_machine(t: &TempDir, replica: &Path, when: &str) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let fresh = t.join(&format!("new-machine-{n}"));
    let check = run(bin()
        .args(["check", "--read-data", "--repo"])
        .arg(replica)
        .arg("--state-dir")
        .arg(&fresh));
    assert!(
        check.status.success(),
        "{when}: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Backs up alice's source on each of `nights` (days of November), mutated before each.
fn more_nights(src: &Path, repo: &Path, nights: std::ops::Range<u32>) {
    for night in nights {
        mutate(src, "replica", night - 1);
        backup(
            repo,
            "alice",
            src,
            Some(&format!("2026-11-{night:02}T03:00:00Z")),
        );
    }
}

fn copy(primary: &Path, replica: &Path) -> Command {
    let mut c = bin();
    c.arg("copy")
        .arg("--repo")
        .arg(primary)
        .arg("--to")
        .arg(replica)
        .arg("--json");
    c
}

fn init_like(primary: &Path, replica: &Path) {
    let _ = std::fs::remove_dir_all(replica);
    ok(bin().arg("init").arg("--like").arg(primary).arg(replica));
}

/// A primary with two accounts over two nights.
fn primary(t: &TempDir) -> (PathBuf, PathBuf) {
    let (src, repo) = backed_up_tree(t, "replica", "alice", Some("2026-11-01T03:00:00Z"));
    mutate(&src, "replica", 1);
    backup(&repo, "alice", &src, Some("2026-11-02T03:00:00Z"));
    backup(&repo, "bob", &src, Some("2026-11-02T04:00:00Z"));
    (src, repo)
}

#[test]
fn a_copy_is_the_same_repository_and_only_what_is_missing_moves() {
    let t = TempDir::new("replica-same");
    let (src, repo) = primary(&t);
    let replica = t.join("replica");
    init_like(&repo, &replica);
    let first = json(&ok(&mut copy(&repo, &replica)));
    assert_eq!(first["copied"].as_array().unwrap().len(), 3, "{first}");
    assert_eq!(
        objects(&repo),
        objects(&replica),
        "the replica's objects differ"
    );
    let packs = first["packs_sent"].as_u64().unwrap();
    assert_eq!(
        packs as usize,
        packs_by_size(&repo).len(),
        "{first}: a pack sent twice"
    );

    // Mounted, both show the same entries with the same inode numbers.
    let (m1, m2) = (
        mount_args(&repo, &[], &t.join("m1")),
        mount_args(&replica, &[], &t.join("m2")),
    );
    assert_eq!(inode_map(&m1.path), inode_map(&m2.path));
    assert_same_tree(&describe(&src), &describe(&m2.latest_in("alice")));
    drop((m1, m2));
    check_clean(&replica);

    // Nothing new: nothing sent. A new night: only its new packs.
    let again = json(&ok(&mut copy(&repo, &replica)));
    assert_eq!(
        (again["packs_sent"].as_u64(), again["bytes_sent"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );
    assert_eq!(again["present"].as_u64(), Some(3));
    mutate(&src, "replica", 2);
    let night = backup(&repo, "alice", &src, Some("2026-11-03T03:00:00Z"));
    let third = json(&ok(&mut copy(&repo, &replica)));
    assert_eq!(third["copied"].as_array().unwrap().len(), 1, "{third}");
    let added = night["bytes_added"].as_u64().unwrap();
    let sent = third["bytes_sent"].as_u64().unwrap();
    assert!(
        sent < added + 200_000,
        "sent {sent} bytes for a night that added {added}"
    );
    assert_eq!(objects(&repo), objects(&replica));

    // An account alone.
    let only = t.join("only-bob");
    init_like(&repo, &only);
    let bob = json(&ok(copy(&repo, &only).args(["--account", "bob"])));
    assert_eq!(bob["copied"].as_array().unwrap().len(), 1, "{bob}");
    let m = mount_args(&only, &[], &t.join("m3"));
    let accounts: Vec<String> = std::fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(accounts, ["bob"]);
}

#[test]
fn a_copy_killed_before_each_write_leaves_a_replica_that_serves_all_it_lists() {
    let t = TempDir::new("replica-crash");
    let (src, repo) = primary(&t);
    let total = packs_by_size(&repo).len();
    let want = describe(&src);
    let replica = t.join("replica");
    let mut n = 1;
    loop {
        init_like(&repo, &replica);
        let out = run(copy(&repo, &replica).env("BACKUPFS_TEST_CRASH_AT", n.to_string()));
        let killed = out.status.signal() == Some(libc::SIGKILL);
        assert!(
            killed || out.status.success(),
            "at {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Whatever the replica holds, it serves whole: a new machine lists every manifest it finds there.
        check_as_a_new_machine(&t, &replica, &format!("killed at {n}"));
        let listed = json(&ok(bin()
            .args(["snapshots", "--json", "--repo"])
            .arg(&replica)));
        let there = packs_by_size(&replica).len();
        let rest = json(&ok(&mut copy(&repo, &replica)));
        let resent = rest["packs_sent"].as_u64().unwrap() as usize;
        assert_eq!(
            there + resent,
            total,
            "killed at {n}: a pack was sent twice ({there} + {resent})"
        );
        assert_eq!(
            rest["present"].as_u64().unwrap() as usize,
            listed.as_array().unwrap().len()
        );
        assert_eq!(objects(&repo), objects(&replica), "killed at {n}");
        let m = mount_args(&replica, &["--account", "alice"], &t.join("mnt"));
        assert_same_tree(&want, &describe(&m.latest_in("")));
        drop(m);
        if !killed {
            break;
        }
        n += 1;
    }
    assert!(n > total, "only {n} writes for {total} packs");
}

#[test]
fn lag_reports_per_account_and_exits_5_over_its_maximum() {
    let t = TempDir::new("replica-lag");
    let (src, repo) = primary(&t);
    let replica = t.join("replica");
    init_like(&repo, &replica);
    ok(copy(&repo, &replica).args(["--account", "bob"]));
    let lag = |max: &str| {
        run(bin()
            .args(["lag", "--json", "--max", max, "--repo"])
            .arg(&repo)
            .arg("--to")
            .arg(&replica))
    };
    let out = lag("26h");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json(&out);
    let alice = &rows[0];
    assert_eq!(
        (alice["account"].as_str(), alice["missing"].as_u64()),
        (Some("alice"), Some(2))
    );
    assert_eq!(
        alice["oldest_missing"].as_str(),
        Some("2026-11-01T03:00:00.000000000Z")
    );
    assert!(
        alice["lag_s"].as_i64().unwrap() > 26 * 3600 && alice["over_max"] == true,
        "{rows}"
    );
    assert_eq!(rows[1]["missing"].as_u64(), Some(0), "{rows}");
    assert_eq!(rows[1]["lag_s"].as_i64(), Some(0));
    // Under its maximum: 0, as after the copy whatever the maximum.
    assert_eq!(lag("3650d").status.code(), Some(0));
    ok(&mut copy(&repo, &replica));
    assert_eq!(lag("0").status.code(), Some(0));
    drop(src);
}

#[test]
fn a_copy_to_something_that_is_not_a_replica_is_refused_with_one_line() {
    let t = TempDir::new("replica-refused");
    let (_, repo) = primary(&t);
    let other = t.join("other");
    init_repo(&other);
    let before = objects(&other);
    let out = run(&mut copy(&repo, &other));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("is not a replica of") && err.contains("init") && err.contains("--like"),
        "{err}"
    );
    assert_eq!(objects(&other), before);
}

#[test]
fn an_encrypted_replica_opens_with_the_same_key_and_never_shares_the_primarys_state() {
    let t = TempDir::new("replica-enc");
    let (repo, replica, key) = (t.join("repo"), t.join("replica"), t.join("repo.key"));
    let (state, replica_state) = (t.join("state"), t.join("replica-state"));
    let with_key = |c: &mut Command| {
        c.env("BACKUPFS_KEY_FILE", &key);
    };
    ok(bin()
        .args(["init", "--encrypt", "--key-file"])
        .arg(&key)
        .arg("--state-dir")
        .arg(&state)
        .arg(&repo));
    let src = t.join("src");
    gen_tree(&src, "replica-enc");
    let mut b = bin();
    with_key(&mut b);
    ok(b.args(["backup", "--account", "alice", "--repo"])
        .arg(&repo)
        .arg("--state-dir")
        .arg(&state)
        .arg(&src));
    ok(bin().arg("init").arg("--like").arg(&repo).arg(&replica));
    let mut c = copy(&repo, &replica);
    with_key(&mut c);
    ok(c.arg("--state-dir")
        .arg(&state)
        .arg("--to-state-dir")
        .arg(&replica_state));
    assert_eq!(objects(&repo), objects(&replica));
    // The replica with the primary's state directory: refused, naming both.
    let mut wrong = bin();
    with_key(&mut wrong);
    let out = run(wrong
        .args(["snapshots", "--repo"])
        .arg(&replica)
        .arg("--state-dir")
        .arg(&state));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("holds the index of") && err.contains("give each its own --state-dir"),
        "{err}"
    );
    let (key_s, state_s) = (key.to_str().unwrap(), replica_state.to_str().unwrap());
    let env = [
        ("BACKUPFS_KEY_FILE", key_s),
        ("BACKUPFS_STATE_DIR", state_s),
    ];
    let m = Mount::with(&replica, "alice", &t.join("mnt"), &[], &env);
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
}

fn flip(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damage_at_the_primary_is_served_from_the_replica_and_healed_by_check_repair_from() {
    let t = TempDir::new("replica-repair");
    let (src, repo) = primary(&t);
    let replica = t.join("replica");
    init_like(&repo, &replica);
    ok(&mut copy(&repo, &replica));
    let packs = packs_by_size(&repo);
    flip(
        &packs[0],
        std::fs::metadata(&packs[0]).unwrap().len() as usize / 2,
    );
    std::fs::remove_file(&packs[1]).unwrap();

    // Without the replica, the damage shows; with it, every byte comes back right and the log names each repair.
    let plain = run(bin().args(["check", "--read-data", "--repo"]).arg(&repo));
    assert_eq!(plain.status.code(), Some(4));
    let replica_arg = replica.to_str().unwrap();
    let m = mount_args(
        &repo,
        &["--account", "alice", "--replica", replica_arg],
        &t.join("mnt"),
    );
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
    let log = m.log_text();
    assert!(log.contains("served from the replica"), "{log}");
    drop(m);

    let out = ok(bin()
        .args(["check", "--read-data", "--repo"])
        .arg(&repo)
        .args(["--repair-from", replica_arg]));
    let err = String::from_utf8_lossy(&out.stderr);
    for (p, what) in [(&packs[0], "(damaged)"), (&packs[1], "(missing)")] {
        let name = p.file_stem().unwrap().to_str().unwrap();
        assert!(
            err.contains(&format!("pack {name} {what}: rewritten from")),
            "{err}"
        );
    }
    check_clean(&repo);
    assert_eq!(objects(&repo), objects(&replica));
}

#[test]
fn copy_follow_replicates_each_new_snapshot_within_a_minute() {
    let t = TempDir::new("replica-follow");
    let (src, repo) = primary(&t);
    let replica = t.join("replica");
    init_like(&repo, &replica);
    let mut follow = bin()
        .args(["copy", "--follow", "--interval", "1", "--repo"])
        .arg(&repo)
        .arg("--to")
        .arg(&replica)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let listed = |n: usize| {
        let out = ok(bin().args(["snapshots", "--json", "--repo"]).arg(&replica));
        json(&out).as_array().unwrap().len() >= n
    };
    wait_until("the first pass", std::time::Duration::from_secs(60), || {
        listed(3)
    });
    let mut delays = Vec::new();
    for night in 3..5 {
        mutate(&src, "replica", night - 1);
        backup(
            &repo,
            "alice",
            &src,
            Some(&format!("2026-11-{night:02}T03:00:00Z")),
        );
        let committed = std::time::Instant::now();
        wait_until(
            "the new snapshot at the replica",
            std::time::Duration::from_secs(60),
            || listed(night as usize + 1),
        );
        delays.push(committed.elapsed().as_secs_f64());
    }
    let _ = follow.kill();
    let _ = follow.wait();
    eprintln!("copy --follow: commit to visible at the replica: {delays:.2?} s");
    check_clean(&replica);
}

#[test]
fn a_replica_keeps_its_own_retention_and_copy_does_not_bring_back_what_it_pruned() {
    let t = TempDir::new("replica-retention");
    let (_, repo) = primary(&t);
    let replica = t.join("replica");
    init_like(&repo, &replica);
    ok(&mut copy(&repo, &replica));
    ok(bin()
        .args(["prune", "--keep-last", "1", "--repo"])
        .arg(&replica));
    let kept = json(&ok(bin()
        .args(["snapshots", "--json", "--repo"])
        .arg(&replica)));
    assert_eq!(kept.as_array().unwrap().len(), 2, "one per account: {kept}");
    let again = json(&ok(&mut copy(&repo, &replica)));
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    let out = ok(bin()
        .args(["lag", "--json", "--max", "0", "--repo"])
        .arg(&repo)
        .arg("--to")
        .arg(&replica));
    assert!(json(&out)
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["missing"] == 0));
    // The primary's prune deletes nothing at the replica.
    ok(bin()
        .args(["prune", "--keep-last", "1", "--repo"])
        .arg(&repo));
    assert_eq!(
        json(&ok(bin()
            .args(["snapshots", "--json", "--repo"])
            .arg(&replica))),
        kept
    );
    check_clean(&replica);
}

#[test]
fn replicas_in_buckets_need_no_delete_permission_and_mount_with_the_same_inodes() {
    use common::fault_proxy::FaultProxy;
    use common::garage::{Garage, BUCKET};
    let g = Garage::start();
    g.wait_ready();
    let t = TempDir::new("replica-s3");
    let (src, repo) = primary(&t);
    // The replica's credentials may add objects but not delete them (an IAM policy without s3:DeleteObject).
    let proxy = FaultProxy::start(g.endpoint(1).trim_start_matches("http://"), vec![]);
    proxy.refuse_deletes();
    let offsite = format!("s3:{}/{BUCKET}/offsite", proxy.endpoint());
    let second = format!("s3:{}/{BUCKET}/second", g.endpoint(2));
    // The replica is reached with its own section: the main [s3] (a primary's, at another provider) has a
    // region Garage refuses and a failover node that does not exist.
    let replica_config = t.join("replicas.toml");
    std::fs::write(
        &replica_config,
        format!(
            "[s3]\nregion = \"elsewhere\"\nendpoints = [\"http://127.0.0.1:9\"]\n\
             [replicas.\"{offsite}\"]\nregion = \"garage\"\ntimeout_s = 30\n"
        ),
    )
    .unwrap();
    let config = t.join("s3.toml");
    std::fs::write(
        &config,
        "[s3]\nregion = \"garage\"\ntimeout_s = 30\nlist_interval_s = 2\n",
    )
    .unwrap();
    let with = |c: &mut Command, config: &Path| {
        c.env("BACKUPFS_CONFIG", config).envs(g.env());
    };
    let s3 = |c: &mut Command| with(c, &config);
    let mut init = bin();
    with(&mut init, &replica_config);
    ok(init.arg("init").arg("--like").arg(&repo).arg(&offsite));
    let mut c = copy(&repo, Path::new(&offsite));
    with(&mut c, &replica_config);
    let first = json(&ok(c.arg("--to-state-dir").arg(t.join("offsite-state"))));
    assert_eq!(first["copied"].as_array().unwrap().len(), 3, "{first}");
    // Bucket to bucket, from the replica to a second one (another node of the cluster).
    let mut init = bin();
    s3(&mut init);
    ok(init.arg("init").arg("--like").arg(&offsite).arg(&second));
    let mut c = bin();
    s3(&mut c);
    c.args(["copy", "--json", "--repo", &offsite, "--state-dir"])
        .arg(t.join("offsite-state2"));
    let chained = json(&ok(c
        .args(["--to", &second, "--to-state-dir"])
        .arg(t.join("second-state"))));
    assert_eq!(chained["copied"].as_array().unwrap().len(), 3, "{chained}");
    // A replica without its section is reached with the main [s3] (region "elsewhere"): the store refuses.
    let mut c = bin();
    with(&mut c, &replica_config);
    let out = run(c
        .args(["lag", "--repo"])
        .arg(&repo)
        .args(["--to", &second, "--to-state-dir"])
        .arg(t.join("x")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("second") && !err.contains("not a backupfs repository"),
        "{err}"
    );
    eprintln!("without its section: {err}");
    // A second copy sends nothing.
    let mut c = copy(&repo, Path::new(&offsite));
    with(&mut c, &replica_config);
    let again = json(&ok(c.arg("--to-state-dir").arg(t.join("offsite-state"))));
    assert_eq!(again["packs_sent"].as_u64(), Some(0), "{again}");
    eprintln!(
        "DELETEs refused during the copies: {}",
        proxy.refused_deletes()
    );

    let m1 = mount_args(&repo, &["--account", "alice"], &t.join("m1"));
    let env: Vec<(String, String)> = g
        .env()
        .into_iter()
        .chain([("BACKUPFS_CONFIG".to_string(), config.display().to_string())])
        .collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let state = t.join("mount-state");
    let m2 = Mount::with(
        Path::new(&second),
        "alice",
        &t.join("m2"),
        &["--state-dir", state.to_str().unwrap()],
        &env,
    );
    assert_same_tree(&describe(&src), &describe(&m2.latest_in("")));
    assert!(
        inode_map(&m1.path) == inode_map(&m2.path),
        "inode numbers differ between the primary and the bucket replica"
    );
}

/// Rounds of `copy` killed with SIGKILL at random moments (`BACKUPFS_COPY_ROUNDS`, default 4; raise it for a
/// soak), each followed by a check of the replica as a new machine sees it.
#[test]
fn a_copy_killed_at_random_moments_resumes_and_the_replica_stays_whole() {
    let t = TempDir::new("replica-kill");
    let (src, repo) = primary(&t);
    // More data, so that the copy takes long enough to be killed inside.
    std::fs::write(src.join("big.bin"), noise(7, 24 << 20)).unwrap();
    backup(&repo, "alice", &src, Some("2026-11-03T03:00:00Z"));
    let rounds: u64 = std::env::var("BACKUPFS_COPY_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let replica = t.join("replica");
    let started = std::time::Instant::now();
    init_like(&repo, &replica);
    ok(&mut copy(&repo, &replica));
    let full = started.elapsed();
    for round in 0..rounds {
        init_like(&repo, &replica);
        let seed = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64)
            ^ round;
        let delay = full.mul_f64((seed % 1000) as f64 / 1000.0);
        run_and_kill(&mut copy(&repo, &replica), delay);
        check_as_a_new_machine(
            &t,
            &replica,
            &format!("round {round}, killed after {delay:?}"),
        );
        ok(&mut copy(&repo, &replica));
        assert_eq!(objects(&repo), objects(&replica), "round {round}");
    }
}

#[test]
fn a_prune_of_the_primary_during_a_copy_loses_nothing() {
    let t = TempDir::new("replica-prune-race");
    let (src, repo) = primary(&t);
    more_nights(&src, &repo, 3..6);
    let replica = t.join("replica");
    init_like(&repo, &replica);
    let copier = copy(&repo, &replica)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    ok(bin()
        .args([
            "prune",
            "--keep-last",
            "2",
            "--repack-threshold",
            "1",
            "--repo",
        ])
        .arg(&repo));
    let out = copier.wait_with_output().unwrap();
    // Snapshots the prune forgot before the copy reached them are not copied; what was copied is whole.
    assert!(
        out.status.success() || out.status.code() == Some(1),
        "{out:?}"
    );
    check_clean(&replica);
    ok(&mut copy(&repo, &replica));
    check_clean(&replica);
    let m = mount_args(&replica, &["--account", "alice"], &t.join("mnt"));
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
}

#[test]
fn a_prune_of_the_replica_during_a_copy_leaves_it_whole() {
    let t = TempDir::new("replica-prune-replica");
    let (src, repo) = primary(&t);
    std::fs::write(src.join("big.bin"), noise(9, 16 << 20)).unwrap();
    more_nights(&src, &repo, 3..6);
    let replica = t.join("replica");
    init_like(&repo, &replica);
    ok(copy(&repo, &replica).args(["--account", "bob"]));
    for round in 0..3 {
        let copier = copy(&repo, &replica)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let prune = run(bin()
            .args(["prune", "--keep-last", "2", "--repo"])
            .arg(&replica));
        let copied = copier.wait_with_output().unwrap();
        // Either may lose the race (a copy whose blobs the prune dropped fails and is retried); neither may
        // leave the replica with a snapshot it cannot serve.
        assert!(
            prune.status.success() || prune.status.code() == Some(1),
            "{prune:?}"
        );
        assert!(
            copied.status.success() || copied.status.code() == Some(1),
            "{copied:?}"
        );
        check_as_a_new_machine(&t, &replica, &format!("round {round}"));
    }
    ok(&mut copy(&repo, &replica));
    check_clean(&replica);
    let m = mount_args(&replica, &["--account", "alice"], &t.join("mnt"));
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
}
