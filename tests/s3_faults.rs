//! Faults of the object store under a repository: a Garage node killed during a backup, two nodes down, the
//! node the client talks to stopped (a partition) during `cp -a` from the mount, the whole cluster stopped, and a
//! fault-injecting proxy (503, SlowDown, resets, truncated bodies, slow answers) in front of Garage.

mod common;

use common::fault_proxy::{Fault, FaultProxy};
use common::garage::Garage;
use common::s3repo::S3Repo;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn day(n: u32) -> String {
    format!("2026-11-{n:02}T03:00:00Z")
}

/// A source with a generated tree and `mib` MiB of incompressible data in `data.bin` (several packs).
fn source(t: &TempDir, seed: &str, mib: usize) -> std::path::PathBuf {
    let src = t.join("src");
    gen_tree(&src, seed);
    std::fs::write(src.join("data.bin"), noise(7, mib << 20)).unwrap();
    src
}

#[test]
fn a_backup_survives_a_node_killed_midway_and_checks_clean() {
    let mut g = Garage::start();
    let t = TempDir::new("s3-kill1");
    let repo = S3Repo::new(&g, &t, "kill1");
    let st = t.join("state");
    repo.init(&st);
    let src = source(&t, "k1", 96);
    let mut child = repo
        .cmd(
            &st,
            &[
                "backup",
                "--account",
                "a",
                "--json",
                "--time",
                &day(1),
                src.to_str().unwrap(),
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // Node 1 is the one in the repository URL: the backup must fail over to nodes 2 and 3.
    g.kill(1);
    let status = wait_timeout(&mut child, Duration::from_secs(180));
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    repo.check_clean(&st);
    let m = repo.mount(&t.join("state2"), "a", &t.join("mnt"));
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
}

#[test]
fn two_nodes_down_fail_the_backup_cleanly_and_a_rerun_succeeds() {
    let mut g = Garage::start();
    let t = TempDir::new("s3-kill2");
    let repo = S3Repo::new(&g, &t, "kill2");
    let st = t.join("state");
    repo.init(&st);
    let src = source(&t, "k2", 8);
    repo.backup(&st, "a", &src, &day(1));
    g.kill(2);
    g.kill(3);
    mutate(&src, "k2", 1);
    let started = Instant::now();
    let out = output_within(
        &mut repo.cmd(
            &st,
            &[
                "backup",
                "--account",
                "a",
                "--time",
                &day(2),
                src.to_str().unwrap(),
            ],
        ),
        Duration::from_secs(120),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("s3:http://127.0.0.1"),
        "names the location: {err}"
    );
    eprintln!(
        "with two of three nodes down the backup failed after {:.1?}: {err}",
        started.elapsed()
    );
    g.restart(2);
    g.restart(3);
    g.wait_ready();
    // No snapshot appeared from the failed run.
    assert_eq!(repo.snapshots(&t.join("observer")).len(), 1);
    // Garage needs a few seconds to reconnect its nodes; the rerun's own retries cover part of that.
    let mut rerun = None;
    for _ in 0..10 {
        let out = output_within(
            &mut repo.cmd(
                &st,
                &[
                    "backup",
                    "--account",
                    "a",
                    "--time",
                    &day(2),
                    src.to_str().unwrap(),
                ],
            ),
            Duration::from_secs(120),
        );
        if out.status.success() {
            rerun = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        rerun.is_some(),
        "the rerun after the restart never succeeded"
    );
    assert_eq!(repo.snapshots(&t.join("observer")).len(), 2);
    repo.check_clean(&t.join("observer"));
}

#[test]
fn a_stopped_node_under_cp_a_fails_over_and_a_stopped_cluster_gives_eio_in_bounded_time() {
    let g = Garage::start();
    let t = TempDir::new("s3-stop");
    let repo = S3Repo::new(&g, &t, "stop");
    let st = t.join("state");
    repo.init(&st);
    let src = source(&t, "st", 64);
    std::fs::write(src.join("second.bin"), noise(8, 8 << 20)).unwrap();
    repo.backup(&st, "a", &src, &day(1));
    let m = repo.mount(&st, "a", &t.join("mnt"));
    let latest = m.latest_in("");
    let mut cp = Command::new("cp")
        .arg("-a")
        .arg(latest.join("data.bin"))
        .arg(t.join("copy.bin"))
        .stderr(std::fs::File::create(t.join("cp.err")).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    g.stop(1);
    let started = Instant::now();
    let status = wait_timeout(&mut cp, Duration::from_secs(150));
    eprintln!(
        "cp -a with node 1 stopped took {:.1?} more",
        started.elapsed()
    );
    // Garage itself may stall requests through the other nodes while one is stopped (its RPCs to the stopped
    // node wait for their own timeouts), so both outcomes are allowed: the copy fails over and completes with the
    // right bytes, or it fails with EIO; what may not happen is a hang (wait_timeout) or a wrong byte.
    if status.success() {
        assert_eq!(
            std::fs::read(t.join("copy.bin")).unwrap(),
            noise(7, 64 << 20)
        );
        eprintln!("the copy failed over and completed");
    } else {
        let err = std::fs::read_to_string(t.join("cp.err")).unwrap();
        assert!(err.contains("Input/output error"), "cp -a: {err}");
        eprintln!("the copy ended with EIO within the bound");
    }

    // The whole cluster stopped: a read of data not cached fails with EIO within the bound, never hangs.
    g.stop(2);
    g.stop(3);
    let started = Instant::now();
    let read = output_within(
        Command::new("cat")
            .arg(latest.join("second.bin"))
            .stdout(std::process::Stdio::null()),
        Duration::from_secs(90),
    );
    let took = started.elapsed();
    eprintln!("a read with the cluster stopped failed after {took:.1?}");
    // The config's timeout_s is 20: one bound for the read, not one per retry the kernel makes of it.
    assert!(
        took < Duration::from_secs(35),
        "EIO took {took:?}, over the 20 s bound"
    );
    assert!(
        !read.status.success(),
        "read succeeded with every node stopped"
    );
    assert!(
        String::from_utf8_lossy(&read.stderr).contains("Input/output error"),
        "{read:?}"
    );
    for n in 1..=3 {
        g.cont(n);
    }
    // Serving resumes by itself.
    wait_until("reads to work again", Duration::from_secs(60), || {
        std::fs::read(latest.join("second.bin")).is_ok_and(|b| b == noise(8, 8 << 20))
    });
}

#[test]
fn a_proxy_injecting_errors_resets_and_truncations_never_yields_a_wrong_byte() {
    let g = Garage::start();
    let t = TempDir::new("s3-proxy");
    let upstream = g.endpoint(1).trim_start_matches("http://").to_string();
    // Every kind of fault, one request in three: hostile enough that every operation meets some, mild enough
    // that a pass reading blob after blob finishes in tens of seconds.
    let plan = vec![
        Fault::Pass,
        Fault::Status503,
        Fault::Pass,
        Fault::Pass,
        Fault::Reset,
        Fault::Pass,
        Fault::Pass,
        Fault::TruncateBody,
        Fault::Pass,
        Fault::Pass,
        Fault::SlowDown,
        Fault::Pass,
        Fault::Pass,
        Fault::ResetAfterForward,
        Fault::Pass,
        Fault::Pass,
        Fault::Slow(Duration::from_millis(1200)),
        Fault::Pass,
    ];
    let proxy = FaultProxy::start(&upstream, plan);
    // Only the proxy: no failover endpoint to escape to.
    let config = t.join("proxy.toml");
    std::fs::write(
        &config,
        "[s3]\nregion = \"garage\"\ntimeout_s = 60\nlist_interval_s = 2\n",
    )
    .unwrap();
    let repo = S3Repo {
        url: format!("s3:{}/{}/proxied", proxy.endpoint(), common::garage::BUCKET),
        config,
        env: g.env(),
    };
    let st = t.join("state");
    repo.init(&st);
    // A few files and 24 MiB of data: every blob is read one by one below, through the faults.
    let src = t.join("src");
    std::fs::create_dir_all(src.join("www")).unwrap();
    for i in 0..12u64 {
        let page = noise(100 + i, 5_000 + i as usize);
        std::fs::write(src.join(format!("www/page{i}.html")), page).unwrap();
    }
    let mut retries = 0;
    for d in 1..=2u64 {
        std::fs::write(src.join("data.bin"), noise(d, 24 << 20)).unwrap();
        let summary = repo.backup(&st, "a", &src, &day(d as u32));
        retries += summary["store_requests"]["retries"].as_u64().unwrap();
    }
    assert!(retries > 0, "no retries: the faults were not exercised");
    assert!(proxy.faults() > 5, "{} faults injected", proxy.faults());
    // What reached the store, read directly: whole and verified (a PUT cut off never left a partial object).
    let direct = S3Repo::new(&g, &t, "proxied");
    direct.check_clean(&t.join("direct-state"));
    // Reads through the faults: the mount on a fresh state directory, and `cp -a` from it.
    let m = repo.mount(&t.join("state2"), "a", &t.join("mnt"));
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
    let copied = t.join("copy");
    let out = output_within(
        Command::new("cp")
            .arg("-a")
            .arg(m.latest_in(""))
            .arg(&copied),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&describe(&src), &describe(&copied));
    assert_eq!(
        std::fs::read(copied.join("data.bin")).unwrap(),
        noise(2, 24 << 20)
    );
    eprintln!(
        "through the proxy: {} requests, {} faults injected, {retries} retries by the backups",
        proxy.requests(),
        proxy.faults()
    );
}

/// A writer that died holding the commit lease (killed on another machine, its lease object left in the
/// bucket) blocks other machines' commits only until the lease expires by the store's clock, never forever; the
/// next writer then deletes it. (`BACKUPFS_TEST_LEASE_TTL_S` shortens the 120 s TTL; the lease is planted with
/// a plain PUT, as a killed writer leaves it: the crash hook's change numbers shift with what earlier killed
/// runs left, so they cannot name "after the lease PUT" reliably.)
#[test]
fn a_lease_left_by_a_dead_writer_expires() {
    let g = Garage::start();
    let t = TempDir::new("s3-lease");
    let repo = S3Repo::new(&g, &t, "lease");
    let b = t.join("machine-b");
    repo.init(&t.join("machine-a"));
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), noise(1, 10_000)).unwrap();
    let ttl = "8";
    let lease = format!(
        "{}/{}/lease/leases/{}",
        g.endpoint(1),
        common::garage::BUCKET,
        "ab".repeat(16)
    );
    std::fs::write(t.join("lease-body"), b"backupfs commit lease\n").unwrap();
    common::s3repo::put_objects(&[lease], &t.join("lease-body"));
    assert_eq!(count_leases(&g), 1);
    let started = Instant::now();
    let out = output_within(
        repo.cmd(
            &b,
            &[
                "backup",
                "--account",
                "b",
                "--time",
                &day(1),
                src.to_str().unwrap(),
            ],
        )
        .env("BACKUPFS_TEST_LEASE_TTL_S", ttl),
        Duration::from_secs(120),
    );
    let waited = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("the backup committed after {waited:.1?} beside a dead writer's lease (TTL {ttl} s)");
    assert!(
        waited >= Duration::from_secs(4),
        "did not wait for the live lease: {waited:?}"
    );
    assert_eq!(repo.snapshots(&t.join("observer")).len(), 1);
    assert_eq!(
        count_leases(&g),
        0,
        "the dead lease, or the writer's own, was left behind"
    );
}

fn count_leases(g: &Garage) -> usize {
    common::s3repo::count_keys(g, "lease/leases/")
}

/// A machine's first backup into a bucket killed before each of its durable changes in turn (creating the state
/// directory's index, the PUTs of packs, pack index, lease and manifest, the index batches): every next run
/// recovers by itself (a half-created index once stopped every later command), and the last one commits.
#[test]
fn a_first_backup_killed_at_every_change_recovers_by_itself() {
    let g = Garage::start();
    let t = TempDir::new("s3-crashpoints");
    let repo = S3Repo::new(&g, &t, "crashpoints");
    let st = t.join("state");
    repo.init(&t.join("init-state"));
    let src = t.join("src");
    gen_tree(&src, "cp");
    let mut kills = 0;
    for n in 1..60 {
        let out = output_within(
            repo.cmd(
                &st,
                &[
                    "backup",
                    "--account",
                    "a",
                    "--time",
                    &day(1),
                    src.to_str().unwrap(),
                ],
            )
            .env("BACKUPFS_TEST_CRASH_AT", n.to_string()),
            Duration::from_secs(120),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            break;
        }
        assert!(
            err.contains("killed before change"),
            "run {n} failed instead of recovering: {err}"
        );
        kills += 1;
    }
    assert!(kills >= 5, "only {kills} crash points");
    // A run killed after its manifest PUT committed its snapshot (the store has it); later runs add theirs.
    let listed = repo.snapshots(&st);
    let ordinals: std::collections::HashSet<u64> = listed
        .iter()
        .map(|s| s["ordinal"].as_u64().unwrap())
        .collect();
    assert!(
        !listed.is_empty() && ordinals.len() == listed.len(),
        "{listed:?}"
    );
    repo.check_clean(&t.join("observer"));
    let m = repo.mount(&st, "a", &t.join("mnt"));
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
}
