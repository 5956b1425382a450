//! Bad input: a one-line error naming the path or object, a documented exit code, no panic, nothing written.

mod common;

use common::*;
use std::path::Path;

fn repo_files(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["packs", "snapshots", "tmp"] {
        let mut stack = vec![repo.join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p)
                } else {
                    out.push(p.display().to_string())
                }
            }
        }
    }
    out.sort();
    out
}

fn fails(cmd: &mut std::process::Command, code: i32, needle: &str) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{cmd:?}: {stderr}");
    assert!(
        stderr.contains(needle),
        "{cmd:?}: stderr lacks {needle:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    if code == 1 {
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "not one line: {stderr}"
        );
        assert_no_repeated_cause(&stderr);
    }
}

/// Each cause once: "X: No such file or directory: No such file or directory" says nothing twice as loud.
fn assert_no_repeated_cause(line: &str) {
    let parts: Vec<&str> = line.trim_end().split(": ").collect();
    for (i, part) in parts.iter().enumerate() {
        let again = parts[i + 1..].iter().any(|p| p == part);
        assert!(!again, "{part:?} is printed twice: {line}");
    }
}

/// `backupfs snapshots | head -1`: a reader that goes away ends the command quietly, as with other Unix tools,
/// instead of a panic on EPIPE.
#[test]
fn a_closed_stdout_ends_a_command_without_a_panic() {
    let t = TempDir::new("epipe");
    let (_src, repo) = backed_up_tree(&t, "epipe", "default", None);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = bin()
        .args(["snapshots", "--repo"])
        .arg(&repo)
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let t = TempDir::new("cli");
    let repo = t.join("repo");
    init_repo(&repo);
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    let before = repo_files(&repo);

    let missing = t.join("no-such-source");
    fails(
        bin().arg("backup").arg("--repo").arg(&repo).arg(&missing),
        1,
        &missing.display().to_string(),
    );
    fails(
        bin()
            .arg("backup")
            .arg("--repo")
            .arg(&repo)
            .arg(src.join("a")),
        1,
        "not a directory",
    );
    fails(
        bin()
            .arg("backup")
            .arg("--repo")
            .arg(&repo)
            .args(["--account", "../evil"])
            .arg(&src),
        2,
        "invalid account",
    );
    let mnt = t.join("mnt").display().to_string();
    for args in [
        vec!["snapshots"],
        vec!["prune", "--keep-last", "1"],
        vec!["mount", &mnt],
    ] {
        fails(
            bin()
                .args(&args)
                .arg("--repo")
                .arg(&repo)
                .args(["--account", "../evil"]),
            2,
            "invalid account",
        );
    }
    fails(
        bin()
            .arg("backup")
            .arg("--repo")
            .arg(&repo)
            .args(["--time", "yesterday"])
            .arg(&src),
        2,
        "RFC 3339",
    );
    let norepo = t.join("no-repo");
    fails(
        bin().arg("backup").arg("--repo").arg(&norepo).arg(&src),
        1,
        "not a backupfs repository",
    );
    fails(
        bin().arg("snapshots").arg("--repo").arg(&norepo),
        1,
        "not a backupfs repository",
    );
    fails(bin().arg("init").arg(&repo), 1, "already exists");
    fails(
        bin()
            .arg("mount")
            .arg("--repo")
            .arg(&repo)
            .arg(t.join("no-mountpoint")),
        1,
        "no-mountpoint",
    );
    assert_eq!(
        before,
        repo_files(&repo),
        "a failed command wrote to the repository"
    );
    assert!(!norepo.exists());

    // A damaged config is named, not guessed at.
    let cfg = repo.join("config");
    let mut bytes = std::fs::read(&cfg).unwrap();
    bytes[8] = 99;
    std::fs::write(&cfg, &bytes).unwrap();
    fails(
        bin().arg("snapshots").arg("--repo").arg(&repo),
        1,
        "format version 99 is not supported",
    );
}

#[test]
fn unreadable_files_are_warnings_with_exit_code_3() {
    let t = TempDir::new("warn");
    let repo = t.join("repo");
    init_repo(&repo);
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    std::fs::write(src.join("secret.txt"), b"no").unwrap();
    std::fs::set_permissions(
        src.join("secret.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o000),
    )
    .unwrap();
    // Root reads everything, so back up as "nobody", who cannot read secret.txt.
    let tmp = t.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&repo)
        .arg(&src)
        .arg(&tmp)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::set_permissions(
        t.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_backupfs"))
        .arg("backup")
        .arg("--repo")
        .arg(&repo)
        .arg("--json")
        .arg(&src)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["warnings"], 1);
    assert!(summary["warning_messages"][0]
        .as_str()
        .unwrap()
        .contains("secret.txt"));
    assert_eq!(summary["files"], 1);
}

/// A policy that keeps nothing, a percentage out of range or NaN, a data check of 0%: usage errors that change
/// nothing. `--keep-daily 0` used to forget every snapshot of every account and exit 0.
#[test]
fn policies_that_keep_nothing_and_meaningless_percentages_are_refused() {
    let t = TempDir::new("policy");
    let (_src, repo) = backed_up_tree(&t, "p", "default", None);
    let snapshots = || {
        let out = bin()
            .args(["snapshots", "--json", "--repo"])
            .arg(&repo)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let before = snapshots();
    for keep in [
        "--keep-daily",
        "--keep-last",
        "--keep-weekly",
        "--keep-monthly",
    ] {
        fails(
            bin().args(["prune", "--repo"]).arg(&repo).args([keep, "0"]),
            2,
            "keeps nothing",
        );
    }
    for bad in ["150", "NaN", "-1"] {
        fails(
            bin()
                .args(["prune", "--keep-last", "1", "--repo"])
                .arg(&repo)
                .args(["--repack-threshold", bad]),
            2,
            bad,
        );
    }
    fails(
        bin()
            .args(["check", "--read-data-subset", "0%", "--repo"])
            .arg(&repo),
        2,
        "reads nothing",
    );
    let cfg = t.join("config.toml");
    std::fs::write(&cfg, "[retention]\nkeep_daily = 0\n").unwrap();
    fails(
        bin()
            .arg("--config")
            .arg(&cfg)
            .args(["prune", "--repo"])
            .arg(&repo),
        1,
        "retention.keep_daily = 0 keeps nothing",
    );
    assert_eq!(before, snapshots(), "a refused prune forgot snapshots");
    assert_eq!(before.as_array().map(Vec::len), Some(1));
}

/// `--time` far in the future: the snapshot would own `latest` until then. Refused as a usage error.
#[test]
fn a_snapshot_time_in_the_future_is_refused() {
    let t = TempDir::new("future");
    let (src, repo) = backed_up_tree(&t, "future", "default", None);
    fails(
        bin()
            .args(["backup", "--time", "2099-01-01T00:00:00Z", "--repo"])
            .arg(&repo)
            .arg(&src),
        2,
        "in the future",
    );
}

/// A repository inside the directory it backs up is left out of the snapshot, not copied into itself.
#[test]
fn a_repository_inside_its_source_is_not_backed_up_into_itself() {
    let t = TempDir::new("inside");
    let src = t.join("src");
    gen_tree(&src, "inside");
    let repo = src.join("backups-repo");
    init_repo(&repo);
    let before: String = describe(&src)
        .lines()
        .filter(|l| !l.starts_with("b'backups-repo"))
        .map(|l| format!("{l}\n"))
        .collect();
    let summary = backup(&repo, "default", &src, None);
    assert_eq!(summary["warnings"], 0, "{summary}");
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    assert!(!m.path.join("latest/backups-repo").exists());
    assert_same_tree(&before, &describe(&m.latest_in("")));
}

/// A backup that fills the disk fails with one line naming the file and the cause, leaves no temporary pack
/// taking the space, and loses nothing that was there.
#[test]
fn a_full_disk_fails_the_backup_cleanly_and_frees_its_temporary_files() {
    let t = TempDir::new("fulldisk");
    let small = Tmpfs::new(t.join("small"), "4m");
    let repo = small.0.join("repo");
    init_repo(&repo);
    let src = t.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("small.bin"), noise(1, 100_000)).unwrap();
    backup(&repo, "default", &src, None);
    std::fs::write(src.join("big.bin"), noise(2, 8 << 20)).unwrap();
    fails(
        bin().args(["backup", "--repo"]).arg(&repo).arg(&src),
        1,
        "No space left on device",
    );
    let leftovers: Vec<_> = std::fs::read_dir(repo.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    check_clean(&repo);
}

/// One flipped bit in the 96-byte config used to lock the whole repository out for good. The error names the
/// way out, and `repair config` corrects one bit exactly and rebuilds anything worse from the defaults.
#[test]
fn a_damaged_config_is_repaired() {
    let t = TempDir::new("config");
    let (src, repo) = backed_up_tree(&t, "config", "default", None);
    let cfg = repo.join("config");
    let original = std::fs::read(&cfg).unwrap();
    let mut flipped = original.clone();
    flipped[50] ^= 0x04;
    std::fs::write(&cfg, &flipped).unwrap();
    fails(
        bin().args(["snapshots", "--repo"]).arg(&repo),
        1,
        "backupfs repair config",
    );
    let repair = || {
        let out = bin()
            .args(["repair", "config", "--repo"])
            .arg(&repo)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(repair().contains("corrected bit 2 of byte 50"));
    assert_eq!(std::fs::read(&cfg).unwrap(), original);

    std::fs::write(&cfg, b"not a config at all").unwrap();
    assert!(repair().contains("rebuilt from the defaults"));
    assert!(repair().contains("intact"));
    check_clean(&repo);
    backup(&repo, "default", &src, None);
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
}

/// The config of an encrypted repository (version 2) is corrected by one bit, never rebuilt from the unencrypted
/// defaults: a backup would then write plaintext into it.
#[test]
fn an_encrypted_config_is_never_rebuilt_from_unencrypted_defaults() {
    use backupfs::format::config::{Config, Encryption};
    let t = TempDir::new("config-v2");
    let (_, repo) = backed_up_tree(&t, "config-v2", "default", None);
    let path = repo.join("config");
    let id: [u8; 32] = std::fs::read(&path).unwrap()[12..44].try_into().unwrap();
    let encrypted = Config {
        encryption: Some(Encryption {
            scheme: 1,
            key_check: [9; 16],
        }),
        ..Config::new(id)
    }
    .encode();
    // Without its key file an encrypted repository is refused whole, naming the default key file.
    std::fs::write(&path, &encrypted).unwrap();
    let before = repo_files(&repo);
    for args in [
        &["snapshots"][..],
        &["backup", "--account", "x"],
        &["check"],
    ] {
        let mut cmd = bin();
        cmd.args(args).arg("--repo").arg(&repo);
        if args[0] == "backup" {
            cmd.arg(t.path());
        }
        fails(
            &mut cmd,
            1,
            "is encrypted at rest and its key file /etc/backupfs/keys/",
        );
    }
    assert_eq!(repo_files(&repo), before);
    let cfg = t.join("config.toml");
    std::fs::write(&cfg, "key_file = \"keys/repo.key\"\n").unwrap();
    fails(
        bin()
            .arg("--config")
            .arg(&cfg)
            .args(["snapshots", "--repo"])
            .arg(&repo),
        1,
        "key_file must be an absolute path",
    );
    let repair = || {
        bin()
            .args(["repair", "config", "--repo"])
            .arg(&repo)
            .output()
            .unwrap()
    };
    let mut one_bit = encrypted.clone();
    one_bit[70] ^= 4;
    std::fs::write(&path, &one_bit).unwrap();
    let out = repair();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("corrected bit 2 of byte 70"),
        "{out:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), encrypted);
    let mut two_bits = encrypted.clone();
    two_bits[70] ^= 4;
    two_bits[71] ^= 4;
    std::fs::write(&path, &two_bits).unwrap();
    fails(
        bin().args(["repair", "config", "--repo"]).arg(&repo),
        1,
        "an encrypted repository's config, damaged beyond one bit",
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        two_bits,
        "the damaged config was replaced"
    );
}

/// Databases, mail, users and excludes that cannot work: one line naming the file and the key (exit 1), before
/// anything is written; a mail directory that is missing is a warning (exit 3) and the rest is backed up.
#[test]
fn bad_account_settings_are_clear_errors() {
    let t = TempDir::new("account-settings");
    let (src, repo) = backed_up_tree(&t, "settings", "alice", None);
    let before = repo_files(&repo);
    let cfg = t.join("config.toml");
    let cases: &[(&str, &str)] = &[
        (
            r#"databases = [{ engine = "oracle" }]"#,
            r#"accounts.alice.databases[0]: engine "oracle" is not"#,
        ),
        (
            r#"databases = [{ engine = "mariadb", names = "all" }]"#,
            r#"names = "all": give "discover""#,
        ),
        (
            r#"databases = [{ engine = "mariadb", socket_dir = "/run" }]"#,
            "mariadb takes `socket`",
        ),
        (
            r#"databases = [{ engine = "postgresql", socket = "/run/x" }]"#,
            "postgresql takes `socket_dir`",
        ),
        (
            r#"databases = [{ engine = "postgresql", socket_dir = "run" }]"#,
            "run must be an absolute path",
        ),
        (
            r#"databases = [{ engine = "postgresql", names = ["a/b"] }]"#,
            r#"names: "a/b" cannot be"#,
        ),
        (
            r#"databases = [{ engine = "postgresql", timeout_s = 0 }]"#,
            "timeout_s must be at least 1",
        ),
        (
            r#"databases = [{ engine = "postgresql", port = "x" }]"#,
            "line 4",
        ),
        (
            r#"mail = "vmail""#,
            "accounts.alice.mail must be an absolute path",
        ),
        (
            r#"exclude = ["a//b"]"#,
            r#"accounts.alice.exclude: exclude pattern "a//b""#,
        ),
        (
            "user = \"bfs-no-such-user\"\nmail = \"/nonexistent\"",
            r#"user "bfs-no-such-user": no user named"#,
        ),
    ];
    for (settings, needle) in cases {
        let text =
            format!("repository = {repo:?}\n[accounts.alice]\nsource = {src:?}\n{settings}\n");
        std::fs::write(&cfg, text).unwrap();
        fails(
            bin()
                .arg("--config")
                .arg(&cfg)
                .args(["backup", "--account", "alice"]),
            1,
            needle,
        );
        assert_eq!(
            repo_files(&repo),
            before,
            "{settings} wrote to the repository"
        );
    }
    std::fs::write(
        &cfg,
        format!("repository = {repo:?}\n[accounts.alice]\nsource = {src:?}\nmail = \"/nonexistent/vmail\"\n"),
    )
    .unwrap();
    let (summary, code) = backup_with_config(&cfg, "alice", &[]);
    assert_eq!(code, 3, "{summary}");
    assert!(
        summary["warning_messages"][0]
            .as_str()
            .unwrap()
            .starts_with("/nonexistent/vmail: mail:"),
        "{summary}"
    );
}
