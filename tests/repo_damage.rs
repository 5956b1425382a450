//! A damaged repository: what backup, repair and the mount do with it. Nothing readable is made unreadable, no
//! new snapshot references data that is known to be gone, and each command says what it found.

mod common;

use backupfs::format::tree::Payload;
use backupfs::format::TreeId;
use backupfs::repo::{CacheSizes, Repository};
use common::*;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn pack_id(pack: &Path) -> String {
    pack.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Runs `backup --json` expecting exit status `code`; returns the summary.
fn backup_expecting(repo: &Path, src: &Path, time: &str, code: i32) -> serde_json::Value {
    let out = bin()
        .args(["backup", "--json", "--time", time, "--repo"])
        .arg(repo)
        .arg(src)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A lost data pack: the next backup of the intact source stores the lost blobs again and says so (exit 3); the
/// new snapshot reads back whole, and so does the old one, whose blobs now resolve to the new copies.
#[test]
fn a_backup_over_a_lost_pack_stores_its_blobs_again_and_says_so() {
    let t = TempDir::new("lostpack");
    let (src, repo) = backed_up_tree(&t, "lost", "default", Some("2026-01-01T03:00:00Z"));
    let lost = &packs_by_size(&repo)[0];
    fs::remove_file(lost).unwrap();

    let summary = backup_expecting(&repo, &src, "2026-01-02T03:00:00Z", 3);
    let warnings = summary["warning_messages"].to_string();
    assert!(warnings.contains(&pack_id(lost)), "{warnings}");
    assert!(summary["blobs_added"].as_u64().unwrap() > 0);

    let expected = describe(&src);
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    assert_same_tree(&expected, &describe(&m.latest_in("")));
    assert_same_tree(&expected, &describe(&m.path.join("2026-01-01")));
    drop(m);
    check_clean(&repo);
}

/// A damaged tree blob: the backup reads the old tree to find unchanged files, finds it damaged, and must
/// store the (identical) new tree again rather than point the new snapshot at the damaged copy, and say so.
#[test]
fn a_backup_does_not_reuse_a_tree_that_failed_verification() {
    let t = TempDir::new("badtree");
    let (src, repo) = backed_up_tree(&t, "tree", "default", Some("2026-01-01T03:00:00Z"));
    // The metadata pack is the smallest; its first blob, at byte 16, is the tree of a leaf directory.
    let meta_pack = packs_by_size(&repo).pop().unwrap();
    let mut bytes = fs::read(&meta_pack).unwrap();
    bytes[20] ^= 0x55;
    fs::write(&meta_pack, bytes).unwrap();

    let summary = backup_expecting(&repo, &src, "2026-01-02T03:00:00Z", 3);
    let warnings = summary["warning_messages"].to_string();
    assert!(warnings.contains("tree is damaged"), "{warnings}");
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
}

/// Runs `repair index`; returns (exit code, stderr).
fn repair(repo: &Path) -> (Option<i32>, String) {
    let out = bin()
        .args(["repair", "index", "--repo"])
        .arg(repo)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code(), stderr)
}

/// One way to damage a pack's framing without touching any blob's bytes.
fn damage_framing(pack: &Path, how: &str) {
    let mut bytes = fs::read(pack).unwrap();
    let n = bytes.len();
    match how {
        "header bit" => bytes[3] ^= 0x08,
        "footer checksum bit" => bytes[n - 30] ^= 0x01,
        "footer magic byte" => bytes[n - 1] = b'X',
        "last trailer entry bit" => bytes[n - 56 - 20] ^= 0x80,
        "truncated by one byte" => bytes.truncate(n - 1),
        "bytes appended" => bytes.extend_from_slice(&[0xAB; 100]),
        other => panic!("{other}"),
    }
    fs::write(pack, bytes).unwrap();
}

/// A pack whose header, trailer or footer is damaged still holds intact blobs, which the mount reads through
/// the index. `repair index` used to drop them all and exit 0; it must keep every blob that verifies.
#[test]
fn repair_keeps_the_blobs_of_a_pack_whose_framing_is_damaged() {
    for how in [
        "header bit",
        "footer checksum bit",
        "footer magic byte",
        "last trailer entry bit",
        "truncated by one byte",
        "bytes appended",
    ] {
        let t = TempDir::new("framing");
        let (src, repo) = backed_up_tree(&t, "framing", "default", None);
        damage_framing(&packs_by_size(&repo)[0], how);
        let (code, stderr) = repair(&repo);
        assert_eq!(code, Some(0), "{how}: {stderr}");
        assert!(stderr.contains("salvaged"), "{how}: {stderr}");
        check_clean(&repo);
        let m = Mount::new(&repo, "default", &t.join("mnt"));
        assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
    }
}

/// Without the old index, the blobs are found from the trailer itself where only the footer is damaged; where
/// part of the trailer is gone too, what cannot be found is named and the exit status says damage remains.
#[test]
fn repair_without_an_index_scans_the_trailer_and_names_what_it_lost() {
    let t = TempDir::new("noindex");
    let (src, repo) = backed_up_tree(&t, "noindex", "default", None);
    let pack = &packs_by_size(&repo)[0];
    damage_framing(pack, "footer checksum bit");
    fs::remove_dir_all(repo.join("index")).unwrap();
    let (code, stderr) = repair(&repo);
    assert_eq!(code, Some(0), "{stderr}");
    check_clean(&repo);
    {
        let m = Mount::new(&repo, "default", &t.join("mnt"));
        assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
    }

    // Now the salvaged copy: with the damaged original deleted, destroy the copy's first trailer entry and lose
    // the index again.
    let salvaged = &packs_by_size(&repo)
        .into_iter()
        .find(|p| p != pack && fs::metadata(p).unwrap().len() > 100_000)
        .unwrap();
    fs::remove_file(pack).unwrap();
    let mut bytes = fs::read(salvaged).unwrap();
    let n = bytes.len();
    let entries = u32::from_le_bytes(bytes[n - 56..n - 52].try_into().unwrap()) as usize;
    let first_entry = n - 56 - 52 * entries;
    bytes[first_entry] = 0xEE;
    fs::write(salvaged, bytes).unwrap();
    fs::remove_dir_all(repo.join("index")).unwrap();
    let (code, stderr) = repair(&repo);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("DAMAGED"), "{stderr}");
    assert!(stderr.contains("/"), "names the affected paths: {stderr}");
}

/// A manifest file that is missing or damaged, while the index holds a valid copy: `repair index` used to drop
/// the snapshot, and `check` was clean afterwards. The copy is written back.
#[test]
fn repair_rewrites_a_missing_or_damaged_manifest_from_the_index() {
    let t = TempDir::new("manifest");
    let (src, repo) = backed_up_tree(&t, "manifest", "default", Some("2026-01-01T03:00:00Z"));
    backup(&repo, "default", &src, Some("2026-01-02T03:00:00Z"));
    let mut manifests: Vec<PathBuf> = fs::read_dir(repo.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    manifests.sort();
    let before: Vec<Vec<u8>> = manifests.iter().map(|m| fs::read(m).unwrap()).collect();
    fs::remove_file(&manifests[0]).unwrap();
    let mut damaged = before[1].clone();
    damaged[40] ^= 0x01;
    fs::write(&manifests[1], damaged).unwrap();

    let (code, stderr) = repair(&repo);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("rewritten from the index"), "{stderr}");
    let after: Vec<Vec<u8>> = manifests.iter().map(|m| fs::read(m).unwrap()).collect();
    assert_eq!(before, after, "manifests restored byte for byte");
    check_clean(&repo);
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    for day in ["2026-01-01", "2026-01-02"] {
        assert_same_tree(&describe(&src), &describe(&m.path.join(day)));
    }
}

/// Flips a byte inside a tree blob's stored bytes, found through the index.
fn damage_tree(repo: &Path, tree: backupfs::format::TreeId) {
    use backupfs::backend::Object;
    use backupfs::format::BlobId;
    let r = Repository::open_dir(repo, CacheSizes::default()).unwrap();
    let loc = r.locate(BlobId::tree(tree)).unwrap().unwrap();
    let pack = repo.join(Object::Pack(loc.pack).key());
    let mut bytes = fs::read(&pack).unwrap();
    bytes[loc.offset as usize + loc.stored_len as usize / 2] ^= 0x10;
    fs::write(&pack, bytes).unwrap();
}

/// (root tree, first subdirectory's name and tree) of each snapshot, oldest first.
fn snapshot_trees(repo: &Path) -> Vec<(TreeId, Vec<u8>, TreeId)> {
    let r = Repository::open_dir(repo, CacheSizes::default()).unwrap();
    let tree_of = |p: &Payload| match p {
        Payload::Dir { tree, .. } => Some(*tree),
        _ => None,
    };
    let mut out = Vec::new();
    for s in r.snapshots(None).unwrap() {
        let root = tree_of(&s.manifest.root.payload).unwrap();
        let dir = r.directory(root).unwrap();
        let sub = dir
            .entries_from(&r, 0)
            .map(Result::unwrap)
            .find_map(|e| Some((e.name.clone(), tree_of(&e.payload)?)))
            .unwrap();
        out.push((root, sub.0, sub.1));
    }
    out
}

/// A damaged root tree of the newest snapshot used to stop the mount from starting, and a damaged subdirectory
/// tree made its parent unlistable. Damage stays where it is: everything else lists and copies.
#[test]
fn a_damaged_tree_hides_only_what_it_covers() {
    let t = TempDir::new("localdamage");
    let (src, repo) = backed_up_tree(&t, "local", "default", Some("2026-01-01T03:00:00Z"));
    let mut first_day: Vec<_> = fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    first_day.sort();
    mutate(&src, "local", 1);
    backup(&repo, "default", &src, Some("2026-01-02T03:00:00Z"));
    let trees = snapshot_trees(&repo);
    damage_tree(&repo, trees[1].0);
    damage_tree(&repo, trees[0].2);

    let m = Mount::new(&repo, "default", &t.join("mnt"));
    let mut names: Vec<String> = fs::read_dir(&m.path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["2026-01-01", "2026-01-02", "latest"]);
    let eio = |p: PathBuf| {
        let listed = fs::read_dir(&p).and_then(|d| d.collect::<Result<Vec<_>, _>>());
        let e = listed.map(|_| ()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{}: {e}", p.display());
    };
    eio(m.path.join("2026-01-02"));

    // The old snapshot lists whole; only the damaged subdirectory fails, and every sibling copies.
    let day1 = m.path.join("2026-01-01");
    let mut listed: Vec<_> = fs::read_dir(&day1)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    listed.sort();
    assert_eq!(listed, first_day);
    let bad = std::ffi::OsStr::from_bytes(&trees[0].1);
    eio(day1.join(bad));
    let copy = t.join("copy");
    fs::create_dir(&copy).unwrap();
    for name in listed.iter().filter(|n| n.as_os_str() != bad) {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(day1.join(name))
            .arg(&copy)
            .status()
            .unwrap();
        assert!(status.success(), "cp -a {name:?}");
    }
}

/// Copies every pack and manifest of `from` into `into`, as a careless merge of two repositories would.
fn merge_objects(from: &Path, into: &Path) {
    for dir in ["packs", "snapshots"] {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(from.join(dir).join("."))
            .arg(into.join(dir))
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Two snapshots with one ordinal (a merged copy of another repository): `check` used to be clean and the mount
/// showed one account's files under the other's date. Now the second is never indexed, `check` names it, and
/// `repair index` renumbers it; then each account sees exactly its own files.
#[test]
fn two_snapshots_with_one_ordinal_are_detected_and_renumbered() {
    let t = TempDir::new("ordinals");
    let (alice_src, repo) = backed_up_tree(&t, "alice", "alice", Some("2026-01-01T03:00:00Z"));
    let bob_src = t.join("bob-src");
    gen_tree(&bob_src, "bob");
    let other = t.join("other");
    init_repo(&other);
    backup(&other, "bob", &bob_src, Some("2026-01-01T04:00:00Z"));
    merge_objects(&other, &repo);

    let out = bin().args(["check", "--repo"]).arg(&repo).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("ordinal 1 belongs to another snapshot"),
        "{stdout}"
    );

    // A backup's commit indexes what it finds, but not a snapshot whose ordinal is taken.
    backup(&repo, "alice", &alice_src, Some("2026-01-02T03:00:00Z"));
    let (code, stderr) = repair(&repo);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("belonged to another snapshot"), "{stderr}");
    check_clean(&repo);
    let m = mount_args(&repo, &[], &t.join("mnt"));
    assert_same_tree(
        &describe(&alice_src),
        &describe(&m.path.join("alice/2026-01-01")),
    );
    assert_same_tree(&describe(&alice_src), &describe(&m.latest_in("alice")));
    assert_same_tree(&describe(&bob_src), &describe(&m.latest_in("bob")));
}

/// A damaged RocksDB index used to give raw RocksDB text or "unsupported index version None", never the way
/// out, and `check` exited 1. Now every command names the index and `repair index`, and `check` reports damage.
#[test]
fn a_damaged_index_is_named_with_the_way_out() {
    let t = TempDir::new("badindex");
    let (src, repo) = backed_up_tree(&t, "badindex", "default", None);
    for damage in ["remove CURRENT", "garbage CURRENT"] {
        let current = repo.join("index/CURRENT");
        match damage {
            "remove CURRENT" => fs::remove_file(&current).unwrap(),
            _ => fs::write(&current, b"MANIFEST-999999\n").unwrap(),
        }
        let out = bin()
            .args(["snapshots", "--repo"])
            .arg(&repo)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{damage}: {stderr}");
        assert!(
            stderr.contains("backupfs repair index"),
            "{damage}: {stderr}"
        );
        assert_eq!(stderr.trim_end().lines().count(), 1, "{damage}: {stderr}");
        let out = bin().args(["check", "--repo"]).arg(&repo).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(4), "{damage}: {stdout}");
        assert!(
            stdout.contains("DAMAGED") && stdout.contains("repair index"),
            "{stdout}"
        );
        let (code, stderr) = repair(&repo);
        assert_eq!(code, Some(0), "{damage}: {stderr}");
        check_clean(&repo);
    }
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
}

/// FIFOs where a temporary file, a pack or a manifest belongs used to make `backup` and `repair index` hang
/// forever. Nothing in the repository is opened unless it is a regular file.
#[test]
fn fifos_where_objects_belong_hang_nothing() {
    let t = TempDir::new("fifos");
    let (src, repo) = backed_up_tree(&t, "fifo", "default", None);
    let hex = "ab".repeat(32);
    let sub = repo.join("packs/ab");
    fs::create_dir_all(&sub).unwrap();
    for fifo in [
        repo.join("tmp/999999-0.tmp"),
        sub.join(format!("{hex}.pack")),
        repo.join("snapshots").join(&hex),
    ] {
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        let made = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
        assert_eq!(made, 0, "{}", fifo.display());
    }
    let limit = std::time::Duration::from_secs(60);
    let out = output_within(
        bin()
            .args(["backup", "--json", "--repo"])
            .arg(&repo)
            .arg(&src),
        limit,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = output_within(bin().args(["check", "--repo"]).arg(&repo), limit);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains("not a regular file"), "{stdout}");
    let out = output_within(bin().args(["repair", "index", "--repo"]).arg(&repo), limit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a regular file"), "{stderr}");
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
}
