//! A repository encrypted at rest, as a user meets it: made with `init --encrypt`, backed up to, mounted and read
//! through the kernel, copied out with `cp -a`; nothing of the source readable in any byte of the repository
//! directory; each kind of object damaged in turn; and every wrong key refused with one line.

mod common;

use common::*;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ACCOUNT: &str = "zanzibar-7q";
const HOST: &str = "enc-host-4kq9zv";

/// An encrypted repository in a temporary directory, with its key file and state directory beside it.
struct Encrypted {
    t: TempDir,
    repo: PathBuf,
    key: PathBuf,
    state: PathBuf,
}

impl Encrypted {
    fn new(label: &str) -> Self {
        Self::with(label, &[])
    }

    /// A new encrypted repository, `init` given `extra` arguments.
    fn with(label: &str, extra: &[&str]) -> Self {
        let t = TempDir::new(label);
        let (repo, key, state) = (t.join("repo"), t.join("keys/repo.key"), t.join("state"));
        let out = bin()
            .args(["init", "--encrypt", "--key-file"])
            .arg(&key)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .arg(&repo)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stdout(&out).contains(&format!("its key is in {}", key.display())),
            "{}",
            stdout(&out)
        );
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key file is the owner's only");
        Self {
            t,
            repo,
            key,
            state,
        }
    }

    /// `backupfs SUB --repo REPO` with the key file and state directory in the environment.
    fn cmd(&self, sub: &[&str]) -> Command {
        let mut c = bin();
        c.env("BACKUPFS_KEY_FILE", &self.key)
            .env("BACKUPFS_STATE_DIR", &self.state)
            .args(sub)
            .arg("--repo")
            .arg(&self.repo);
        c
    }

    fn mount(&self, mountpoint: &Path) -> Mount {
        let (key, state) = (self.key.to_str().unwrap(), self.state.to_str().unwrap());
        let env = [("BACKUPFS_KEY_FILE", key), ("BACKUPFS_STATE_DIR", state)];
        Mount::with(&self.repo, ACCOUNT, mountpoint, &[], &env)
    }

    /// A second machine's view: the same repository and key, a new state directory.
    fn fresh_state(&mut self) {
        self.state = self.t.join(&format!(
            "state-{}",
            fs::read_dir(self.t.path()).unwrap().count()
        ));
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Backs up `src` as ACCOUNT on a machine called HOST (a UTS namespace of its own).
fn backup_as_host(repo: &Path, env: &[(&str, &Path)], src: &Path, time: &str) {
    let out = Command::new("unshare")
        .args([
            "--uts",
            "sh",
            "-c",
            r#"hostname "$1" && shift && exec "$@""#,
            "sh",
            HOST,
        ])
        .arg(env!("CARGO_BIN_EXE_backupfs"))
        .args(["backup", "--account", ACCOUNT, "--time", time, "--repo"])
        .arg(repo)
        .arg(src)
        .envs(env.iter().copied())
        .env_remove("BACKUPFS_REPO")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "backup: {}", stderr(&out));
}

/// Every file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// What must not be readable in an encrypted repository: the account, the host, the source path, every name of
/// 8 bytes or more in the source, and 24 bytes from the middle of every regular file of 64 bytes or more.
fn needles(src: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        ("account".to_string(), ACCOUNT.as_bytes().to_vec()),
        ("hostname".to_string(), HOST.as_bytes().to_vec()),
        (
            "source path".to_string(),
            src.to_str().unwrap().as_bytes().to_vec(),
        ),
    ];
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() >= 8 {
                out.push((format!("name {name}"), name.as_bytes().to_vec()));
            }
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                stack.push(e.path());
            } else if kind.is_file() {
                let data = fs::read(e.path()).unwrap();
                if data.len() >= 64 && data.iter().any(|&b| b != 0) {
                    let mid = data.len() / 2;
                    out.push((format!("content of {name}"), data[mid..mid + 24].to_vec()));
                }
            }
        }
    }
    out
}

/// The needles found in any file under `repo`, by what they are.
fn found_in(repo: &Path, needles: &[(String, Vec<u8>)]) -> Vec<String> {
    let objects: Vec<Vec<u8>> = files_under(repo)
        .iter()
        .map(|p| fs::read(p).unwrap())
        .collect();
    needles
        .iter()
        .filter(|(_, n)| objects.iter().any(|o| o.windows(n.len()).any(|w| w == n)))
        .map(|(what, _)| what.clone())
        .collect()
}

/// A gen_tree source backed up on `nights` nights (a mutation between each) into an encrypted repository.
fn backed_up(label: &str, nights: u32) -> (Encrypted, PathBuf) {
    let r = Encrypted::new(label);
    let src = r.t.join("src");
    gen_tree(&src, "enc");
    let env = [
        ("BACKUPFS_KEY_FILE", r.key.as_path()),
        ("BACKUPFS_STATE_DIR", r.state.as_path()),
    ];
    for night in 1..=nights {
        if night > 1 {
            mutate(&src, "enc", night - 1);
        }
        backup_as_host(
            &r.repo,
            &env,
            &src,
            &format!("2026-11-{night:02}T02:00:00Z"),
        );
    }
    (r, src)
}

#[test]
fn round_trip_through_the_mount_with_nothing_of_the_source_in_the_repository() {
    let (r, src) = backed_up("enc-roundtrip", 2);
    let m = r.mount(&r.t.join("mnt"));
    let latest = m.latest_in("");
    assert_same_tree(&describe(&src), &describe(&latest));
    let restored = cp_a(&latest, &r.t.join("restored"));
    assert_same_tree(&describe(&src), &describe(&restored));
    drop(m);
    assert!(r.cmd(&["check", "--read-data"]).status().unwrap().success());

    // Nothing readable, and nothing of the per-machine state in the repository directory.
    let needles = needles(&src);
    assert!(needles.len() > 100, "{} needles", needles.len());
    let found = found_in(&r.repo, &needles);
    assert!(
        found.is_empty(),
        "readable in the encrypted repository: {found:?}"
    );
    for name in fs::read_dir(&r.repo).unwrap() {
        let name = name.unwrap().file_name().into_string().unwrap();
        assert!(
            [
                "config",
                "packs",
                "snapshots",
                "indexes",
                "leases",
                "condemned",
                "tmp",
                "locks"
            ]
            .contains(&name.as_str()),
            "{name} in the repository directory"
        );
    }

    // The same grep finds them in an unencrypted repository of the same source: it can fail.
    let plain = r.t.join("plain");
    init_repo(&plain);
    backup_as_host(&plain, &[], &src, "2026-11-02T02:00:00Z");
    let in_plain = found_in(&plain, &needles);
    for what in ["account", "hostname", "source path"] {
        assert!(
            in_plain.iter().any(|f| f == what),
            "{what} not found in plaintext: the grep is blind"
        );
    }
    assert!(
        in_plain.iter().any(|f| f.starts_with("content of")),
        "{in_plain:?}"
    );
}

#[test]
fn round_trip_in_a_bucket_with_nothing_of_the_source_in_any_object() {
    use common::garage::Garage;
    use common::s3repo::{get_object, list_keys, S3Repo};
    let g = Garage::start();
    g.wait_ready();
    let t = TempDir::new("enc-s3");
    let repo = S3Repo::new(&g, &t, "sealed");
    let (src, state, key) = (t.join("src"), t.join("state"), t.join("keys/s3.key"));
    let key_arg = key.to_str().unwrap();
    repo.ok(
        &state,
        &["init", "--encrypt", "--key-file", key_arg, &repo.url],
    );
    gen_tree(&src, "enc-s3");
    let mut env: Vec<(&str, &Path)> = repo
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), Path::new(v)))
        .collect();
    env.extend([
        ("BACKUPFS_CONFIG", repo.config.as_path()),
        ("BACKUPFS_KEY_FILE", key.as_path()),
    ]);
    env.push(("BACKUPFS_STATE_DIR", state.as_path()));
    backup_as_host(Path::new(&repo.url), &env, &src, "2026-11-01T02:00:00Z");
    mutate(&src, "enc-s3", 1);
    backup_as_host(Path::new(&repo.url), &env, &src, "2026-11-02T02:00:00Z");

    // A second machine with the key: its own state directory, the mount through the kernel, cp -a.
    let (state2, state2_arg) = (
        t.join("state2"),
        t.join("state2").to_str().unwrap().to_string(),
    );
    let mut mount_env: Vec<(&str, &str)> = (repo.env.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    mount_env.extend([
        ("BACKUPFS_CONFIG", repo.config.to_str().unwrap()),
        ("BACKUPFS_KEY_FILE", key_arg),
    ]);
    let m = Mount::with(
        Path::new(&repo.url),
        ACCOUNT,
        &t.join("mnt"),
        &["--state-dir", &state2_arg],
        &mount_env,
    );
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
    let restored = cp_a(&m.latest_in(""), &t.join("restored"));
    assert_same_tree(&describe(&src), &describe(&restored));
    drop(m);
    let mut check = repo.cmd(&state2, &["check", "--read-data"]);
    assert!(check
        .env("BACKUPFS_KEY_FILE", &key)
        .status()
        .unwrap()
        .success());

    // What the provider holds: every object of the prefix, fetched over S3.
    let keys = list_keys(&g, "sealed/");
    assert!(keys.len() >= 7, "{keys:?}");
    let objects: Vec<Vec<u8>> = keys.iter().map(|k| get_object(&g, k)).collect();
    let needles = needles(&src);
    let found: Vec<&String> = (needles.iter())
        .filter(|(_, n)| objects.iter().any(|o| o.windows(n.len()).any(|w| w == n)))
        .map(|(what, _)| what)
        .collect();
    assert!(found.is_empty(), "readable in the bucket: {found:?}");
    // Without the key, a machine is refused with one line.
    let out = repo
        .cmd(&t.join("state3"), &["snapshots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is encrypted at rest and its key file"),
        "{}",
        stderr(&out)
    );
}

/// The encryption scheme in a config (version 2, byte 64).
fn scheme(repo: &Path) -> u32 {
    let config = fs::read(repo.join("config")).unwrap();
    u32::from_le_bytes(config[64..68].try_into().unwrap())
}

#[test]
fn either_cipher_makes_a_repository_that_round_trips() {
    let chacha = Encrypted::with("enc-chacha", &["--cipher", "chacha20-poly1305"]);
    assert_eq!(scheme(&chacha.repo), 1);
    let src = chacha.t.join("src");
    gen_tree(&src, "chacha");
    let out = chacha
        .cmd(&["backup", "--account", ACCOUNT])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let m = chacha.mount(&chacha.t.join("mnt"));
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
    drop(m);
    assert!(chacha
        .cmd(&["check", "--read-data"])
        .status()
        .unwrap()
        .success());
    // The default is AES-256-GCM where the CPU has AES instructions (every machine this runs on in CI).
    let cpu = fs::read_to_string("/proc/cpuinfo").unwrap();
    let aes = cpu.split_whitespace().any(|f| f == "aes")
        && cpu.split_whitespace().any(|f| f == "pclmulqdq");
    let default = Encrypted::new("enc-default");
    assert_eq!(scheme(&default.repo), if aes { 2 } else { 1 });
    let out = bin()
        .args(["init", "--cipher", "rot13", "--encrypt"])
        .arg(chacha.t.join("x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("known ciphers are aes-256-gcm and chacha20-poly1305"),
        "{}",
        stderr(&out)
    );
}

/// Reads every regular file under the mount's latest snapshot; returns (paths read whole and right, paths
/// that gave EIO). Wrong bytes fail the test.
fn read_all(root: &Path, src: &Path) -> (usize, Vec<PathBuf>) {
    let (mut good, mut eio) = (0, Vec::new());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        // opendir succeeds on a directory whose tree is damaged; reading its entries fails.
        let listed = fs::read_dir(root.join(&rel)).and_then(|d| d.collect::<Result<Vec<_>, _>>());
        let entries = match listed {
            Ok(e) => e,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{}: {e}", rel.display());
                eio.push(rel);
                continue;
            }
        };
        for e in entries {
            let path = rel.join(e.file_name());
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let mut got = Vec::new();
                match fs::File::open(root.join(&path)).and_then(|mut f| f.read_to_end(&mut got)) {
                    Ok(_) => {
                        assert!(
                            got == fs::read(src.join(&path)).unwrap(),
                            "{}: wrong bytes",
                            path.display()
                        );
                        good += 1;
                    }
                    Err(e) => {
                        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{}: {e}", path.display());
                        eio.push(path);
                    }
                }
            }
        }
    }
    (good, eio)
}

fn flip(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

/// `check --read-data`: exit 4 and its output, which must name `what`.
fn check_names(r: &Encrypted, what: &str) {
    let out = r.cmd(&["check", "--read-data"]).output().unwrap();
    let text = stdout(&out) + &stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains(what), "check does not name {what}:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
}

fn pack_of(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_flipped_byte_in_a_data_pack_is_eio_for_its_file_only() {
    let (r, src) = backed_up("enc-flip-data", 2);
    let data = &packs_by_size(&r.repo)[0];
    flip(data, fs::metadata(data).unwrap().len() as usize / 2);
    let m = r.mount(&r.t.join("mnt"));
    let (good, eio) = read_all(&m.latest_in(""), &src);
    assert!(!eio.is_empty() && good > 100, "{good} read, EIO: {eio:?}");
    assert!(
        eio.len() <= 5,
        "more than one chunk's files failed: {eio:?}"
    );
    assert!(
        m.log_text().contains("does not match its id"),
        "{}",
        m.log_text()
    );
    drop(m);
    check_names(&r, &pack_of(data));
}

#[test]
fn a_flipped_byte_in_a_pack_trailer_is_named_by_check_and_reads_go_on() {
    let (r, src) = backed_up("enc-flip-trailer", 2);
    let data = &packs_by_size(&r.repo)[0];
    let len = fs::metadata(data).unwrap().len() as usize;
    // The sealed trailer ends where the 56-byte footer starts; its last 16 bytes are the tag.
    flip(data, len - 56 - 20);
    let m = r.mount(&r.t.join("mnt"));
    let (_, eio) = read_all(&m.latest_in(""), &src);
    assert!(
        eio.is_empty(),
        "the index locates blobs without the trailer: {eio:?}"
    );
    drop(m);
    check_names(&r, &format!("pack {}", pack_of(data)));
}

#[test]
fn a_flipped_byte_in_a_tree_is_eio_for_that_directory_only() {
    let (r, src) = backed_up("enc-flip-tree", 1);
    // One backup writes two packs, and the smaller holds the metadata: trees, written children first, so its
    // first blob is a directory's tree.
    assert_eq!(packs_by_size(&r.repo).len(), 2);
    let meta = packs_by_size(&r.repo).pop().unwrap();
    flip(&meta, 16 + 40);
    let m = r.mount(&r.t.join("mnt"));
    let (good, eio) = read_all(&m.latest_in(""), &src);
    assert!(!eio.is_empty() && good > 50, "{good} read, EIO: {eio:?}");
    drop(m);
    check_names(&r, "tree");
}

#[test]
fn a_flipped_byte_in_a_manifest_hides_that_snapshot_only() {
    let (mut r, src) = backed_up("enc-flip-manifest", 2);
    let mut manifests: Vec<PathBuf> = files_under(&r.repo.join("snapshots"));
    manifests.sort_by_key(|p| fs::metadata(p).unwrap().modified().unwrap());
    let first = &manifests[0];
    flip(first, 60);
    check_names(&r, &format!("snapshot {}", pack_of(first)));
    // A machine that has not seen it: the other snapshot is served whole, the damaged one is skipped.
    r.fresh_state();
    let out = r.cmd(&["snapshots", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert!(stderr(&out).contains(&pack_of(first)), "{}", stderr(&out));
    let m = r.mount(&r.t.join("mnt"));
    let (_, eio) = read_all(&m.latest_in(""), &src);
    assert!(eio.is_empty(), "{eio:?}");
}

#[test]
fn a_flipped_byte_in_the_config_is_one_line_and_repair_config_restores_it() {
    let (r, _) = backed_up("enc-flip-config", 2);
    let config = r.repo.join("config");
    flip(&config, 70); // the key check value
    let out = r.cmd(&["snapshots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("config") && err.contains("repair config"),
        "{err}"
    );
    let out = r.cmd(&["repair", "config"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("corrected bit"), "{}", stdout(&out));
    assert!(r.cmd(&["check", "--read-data"]).status().unwrap().success());
}

#[test]
fn a_flipped_byte_in_a_pack_index_object_makes_a_new_machine_read_the_trailers() {
    let (mut r, src) = backed_up("enc-flip-pidx", 2);
    for object in files_under(&r.repo.join("indexes")) {
        flip(&object, 60);
    }
    r.fresh_state();
    let m = r.mount(&r.t.join("mnt"));
    let (good, eio) = read_all(&m.latest_in(""), &src);
    assert!(eio.is_empty() && good > 100, "{good} read, EIO: {eio:?}");
}

/// A listing of the repository directory (names and sizes), to show that a refused command wrote nothing.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut l: Vec<_> = files_under(dir)
        .into_iter()
        .map(|p| {
            let len = fs::metadata(&p).unwrap().len();
            (p, len)
        })
        .collect();
    l.sort();
    l
}

/// Runs a command that must be refused: exit 1, one line naming `names`, and the repository unchanged.
fn refused(repo: &Path, mut cmd: Command, names: &[&str]) {
    let before = listing(repo);
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{cmd:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{cmd:?}: {err}");
    for n in names {
        assert!(err.contains(n), "{cmd:?} does not name {n}: {err}");
    }
    assert_eq!(listing(repo), before, "{cmd:?} changed the repository");
}

#[test]
fn wrong_missing_or_exposed_keys_are_refused_with_one_line_and_nothing_written() {
    let (r, src) = backed_up("enc-keys", 1);
    let config = fs::read(r.repo.join("config")).unwrap();
    let id: String = config[12..44].iter().map(|b| format!("{b:02x}")).collect();
    let key_text = fs::read_to_string(&r.key).unwrap();
    let backup = |key: &Path| {
        let mut c = r.cmd(&["backup", "--account", ACCOUNT]);
        c.env("BACKUPFS_KEY_FILE", key).arg(&src);
        c
    };

    let missing = r.t.join("keys/missing.key");
    refused(
        &r.repo,
        backup(&missing),
        &[missing.to_str().unwrap(), &id, "does not exist"],
    );

    let exposed = r.t.join("keys/exposed.key");
    fs::write(&exposed, &key_text).unwrap();
    fs::set_permissions(&exposed, fs::Permissions::from_mode(0o644)).unwrap();
    refused(
        &r.repo,
        backup(&exposed),
        &[exposed.to_str().unwrap(), &id, "mode 644"],
    );

    // The right repository id with another key: told apart from damage by the check value.
    let wrong = r.t.join("keys/wrong.key");
    let other_key = key_text.lines().map(|l| {
        if l.starts_with("key ") {
            format!("key {}", "ab".repeat(32))
        } else {
            l.to_string()
        }
    });
    fs::write(&wrong, other_key.collect::<Vec<_>>().join("\n")).unwrap();
    fs::set_permissions(&wrong, fs::Permissions::from_mode(0o600)).unwrap();
    refused(
        &r.repo,
        backup(&wrong),
        &[wrong.to_str().unwrap(), &id, "another key"],
    );

    // Another repository's key file.
    let other = Encrypted::new("enc-keys-other");
    refused(
        &r.repo,
        backup(&other.key),
        &[other.key.to_str().unwrap(), &id, "not of repository"],
    );

    // An unencrypted repository given a key, and an encrypted config swapped for a plaintext one of the same id.
    let plain = r.t.join("plain");
    init_repo(&plain);
    let mut c = bin();
    c.args(["snapshots", "--repo"])
        .arg(&plain)
        .env("BACKUPFS_KEY_FILE", &r.key);
    refused(&plain, c, &[r.key.to_str().unwrap(), "is not encrypted"]);
    let mut downgraded = config[..64].to_vec();
    downgraded[8..12].copy_from_slice(&1u32.to_le_bytes());
    let sum = *blake3::hash(&downgraded).as_bytes();
    downgraded.extend_from_slice(&sum);
    fs::write(r.repo.join("config"), &downgraded).unwrap();
    refused(
        &r.repo,
        backup(&r.key),
        &[r.key.to_str().unwrap(), &id, "is not encrypted"],
    );
    fs::write(r.repo.join("config"), &config).unwrap();

    // init --encrypt never writes over a key file, and makes no repository then.
    let again = r.t.join("again");
    let out = bin()
        .args(["init", "--encrypt", "--key-file"])
        .arg(&r.key)
        .arg(&again)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    assert!(!again.join("config").exists());
    assert_eq!(fs::read_to_string(&r.key).unwrap(), key_text);

    // key show prints a text that, typed back into a file, opens the repository.
    let out = r.cmd(&["key", "show"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let typed = r.t.join("keys/typed-back.key");
    fs::write(&typed, stdout(&out)).unwrap();
    fs::set_permissions(&typed, fs::Permissions::from_mode(0o600)).unwrap();
    let out = backup(&typed).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn prune_and_an_index_rebuild_keep_an_encrypted_repository_whole() {
    let (r, src) = backed_up("enc-prune", 3);
    let bytes = |repo: &Path| -> u64 {
        (packs_by_size(repo).iter())
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    };
    let before = bytes(&r.repo);
    // Its index lives apart, as a bucket's: the first prune condemns unreferenced packs, the next deletes them.
    for _ in 0..2 {
        let out = (r.cmd(&[
            "prune",
            "--keep-last",
            "1",
            "--grace",
            "0",
            "--repack-threshold",
            "1",
        ]))
        .output()
        .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let after = bytes(&r.repo);
    assert!(
        after < before,
        "{before} bytes of packs before, {after} after"
    );
    let out = r.cmd(&["repair", "index"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(r.cmd(&["check", "--read-data"]).status().unwrap().success());
    let m = r.mount(&r.t.join("mnt"));
    assert_eq!(
        fs::read_dir(&m.path).unwrap().count(),
        2,
        "one day and latest"
    );
    assert_same_tree(&describe(&src), &describe(&m.latest_in("")));
    assert!(found_in(&r.repo, &needles(&src)).is_empty());
}

#[test]
fn repair_index_salvages_sealed_packs_with_a_damaged_header_or_trailer() {
    let (r, src) = backed_up("enc-salvage", 1);
    let packs = packs_by_size(&r.repo);
    // The data pack's header (its trailer still opens behind its footer), the metadata pack's sealed trailer
    // (the old index still knows where its blobs are).
    flip(&packs[0], 3);
    let len = fs::metadata(&packs[1]).unwrap().len() as usize;
    flip(&packs[1], len - 56 - 20);
    let out = r.cmd(&["repair", "index"]).output().unwrap();
    let text = stdout(&out) + &stderr(&out);
    assert!(out.status.success(), "{text}");
    for p in &packs {
        let salvaged = format!("pack {}", pack_of(p));
        let line = text.lines().find(|l| l.contains(&salvaged)).unwrap_or("");
        assert!(
            line.contains("salvaged") && line.contains("0 candidates did not"),
            "{salvaged}: {text}"
        );
    }
    // The damaged files stay (unindexed) until a prune; everything reads from the salvaged copies.
    assert!(r.cmd(&["check", "--read-data"]).status().unwrap().success());
    let m = r.mount(&r.t.join("mnt"));
    let (good, eio) = read_all(&m.latest_in(""), &src);
    assert!(eio.is_empty() && good > 100, "{good} read, EIO: {eio:?}");
}

#[test]
fn a_new_machine_salvages_a_sealed_pack_with_a_damaged_header_from_its_own_trailer() {
    let (mut r, src) = backed_up("enc-salvage-new", 1);
    let data = &packs_by_size(&r.repo)[0];
    flip(data, 3);
    // No pack index object and no old index: the sealed trailer behind the footer is all that says where the
    // blobs are.
    fs::remove_dir_all(r.repo.join("indexes")).unwrap();
    r.fresh_state();
    let out = r.cmd(&["repair", "index"]).output().unwrap();
    let text = stdout(&out) + &stderr(&out);
    assert!(out.status.success(), "{text}");
    let line = (text.lines())
        .find(|l| l.contains(&format!("pack {}", pack_of(data))) && l.contains("salvaged"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("0 candidates did not") && !line.contains("salvaged 0 "),
        "{line}"
    );
    let m = r.mount(&r.t.join("mnt"));
    let (good, eio) = read_all(&m.latest_in(""), &src);
    assert!(eio.is_empty() && good > 100, "{good} read, EIO: {eio:?}");
}

/// A copy of the repository and its state directory (the index of an encrypted repository lives apart).
fn copy_of(r: &Encrypted, label: &str) -> Encrypted {
    let t = TempDir::new(label);
    for (from, to) in [
        (&r.repo, t.join("repo")),
        (&r.state, t.join("state")),
        (&r.key, t.join("key")),
    ] {
        cp_a(from, &to);
    }
    let (repo, state, key) = (t.join("repo"), t.join("state"), t.join("key"));
    // The state directory follows the repository to its new place, as after a move.
    fs::remove_file(state.join("location")).unwrap();
    Encrypted {
        t,
        repo,
        key,
        state,
    }
}

#[test]
fn a_backup_killed_before_each_durable_change_leaves_the_encrypted_repository_whole() {
    use std::os::unix::process::ExitStatusExt;
    let (r, src) = backed_up("enc-crash", 1);
    mutate(&src, "enc", 1);
    let want = describe(&src);
    let mut n = 1;
    loop {
        let c = copy_of(&r, "enc-crash-copy");
        let backup = || {
            let mut cmd = c.cmd(&["backup", "--account", ACCOUNT]);
            cmd.arg(&src);
            cmd
        };
        let out = backup()
            .env("BACKUPFS_TEST_CRASH_AT", n.to_string())
            .output()
            .unwrap();
        let killed = out.status.signal() == Some(libc::SIGKILL);
        assert!(killed || out.status.success(), "at {n}: {}", stderr(&out));
        let check = c.cmd(&["check", "--read-data"]).output().unwrap();
        assert!(
            check.status.success(),
            "killed at {n}: {}{}",
            stdout(&check),
            stderr(&check)
        );
        if killed {
            let again = backup().output().unwrap();
            assert!(
                again.status.success(),
                "after a kill at {n}: {}",
                stderr(&again)
            );
        }
        let m = c.mount(&c.t.join("mnt"));
        assert_same_tree(&want, &describe(&m.latest_in("")));
        drop(m);
        if !killed {
            break;
        }
        n += 1;
    }
    assert!(n >= 4, "only {n} crash points");
}
