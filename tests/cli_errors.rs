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
    }
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
        1,
        "invalid account",
    );
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
