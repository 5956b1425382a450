//! Sparse files through the mount: the holes a snapshot keeps are visible to SEEK_DATA/SEEK_HOLE and to `stat`'s
//! block count, so `cp -a` and `rsync -S` copy them out sparse and the holes are never read as zeros.

mod common;

use common::*;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A test file: its data regions as (offset, length); everything else is a hole.
struct Sparse {
    name: &'static str,
    size: u64,
    data: &'static [(u64, u64)],
}

impl Sparse {
    fn data_bytes(&self) -> u64 {
        self.data.iter().map(|r| r.1).sum()
    }
}

const FILES: &[Sparse] = &[
    // Data at the start, in the middle and at the very end.
    Sparse {
        name: "big.img",
        size: GIB,
        data: &[(0, MIB), (GIB / 2, MIB), (GIB - MIB, MIB)],
    },
    Sparse {
        name: "ends_in_hole.img",
        size: 64 * MIB,
        data: &[(0, MIB), (8 * MIB, MIB)],
    },
    // Its data ends mid-block, at the end of the file.
    Sparse {
        name: "starts_with_hole.img",
        size: 64 * MIB + 1000,
        data: &[(63 * MIB, MIB + 1000)],
    },
    Sparse {
        name: "all_hole.img",
        size: 256 * MIB,
        data: &[],
    },
];

/// Writes the sparse files of `FILES` into `dir` and checks that this filesystem keeps their holes.
fn make_sparse_files(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for (i, file) in FILES.iter().enumerate() {
        let path = dir.join(file.name);
        let f = File::create(&path).unwrap();
        f.set_len(file.size).unwrap();
        for (k, &(offset, len)) in file.data.iter().enumerate() {
            f.write_all_at(&noise((i * 10 + k) as u64 + 1, len as usize), offset)
                .unwrap();
        }
        f.sync_all().unwrap();
        assert!(
            allocated(&path) <= file.data_bytes() + MIB,
            "{} is not sparse on this filesystem: the test needs one that keeps holes",
            path.display()
        );
    }
}

fn allocated(path: &Path) -> u64 {
    fs::metadata(path).unwrap().blocks() * 512
}

/// The sparse files backed up and mounted; returns (source directory, the mount, the snapshot's directory in it).
/// Declare the TempDir first, so the mount is dropped (unmounted) before the directory is removed.
fn sparse_snapshot(t: &TempDir) -> (PathBuf, Mount, PathBuf) {
    let src = t.join("src");
    make_sparse_files(&src);
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, "default", &src, None);
    let m = Mount::new(&repo, "default", &t.join("mnt"));
    // `latest` is a symlink, which `cp -a` would copy as such: use the directory it names.
    let snap = m.path.join(fs::read_link(m.path.join("latest")).unwrap());
    (src, m, snap)
}

/// lseek(2) on a fresh descriptor: the offset, or the errno.
fn seek(path: &Path, offset: i64, whence: i32) -> Result<i64, i32> {
    let f = File::open(path).unwrap();
    // SAFETY: lseek on a descriptor owned by `f`, which outlives the call.
    let pos = unsafe { libc::lseek(f.as_raw_fd(), offset, whence) };
    if pos < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(pos)
    }
}

/// Offsets worth asking about in a file: its start, every region boundary and the bytes around it, the middle of
/// every hole and region, the end of the file, past it, and before the start.
fn probe_offsets(file: &Sparse) -> Vec<i64> {
    let size = file.size;
    let mut edges = vec![0, size];
    for &(offset, len) in file.data {
        edges.extend([offset, offset + len]);
    }
    edges.sort();
    let mut probes: Vec<u64> = edges.windows(2).map(|w| (w[0] + w[1]) / 2).collect();
    for e in edges {
        probes.extend([e.saturating_sub(1), e, e + 1]);
    }
    probes.extend([size + MIB, 2 * size + 1]);
    probes.sort();
    probes.dedup();
    let mut probes: Vec<i64> = probes.into_iter().map(|p| p as i64).collect();
    probes.push(-1);
    probes
}

#[test]
fn seek_data_and_seek_hole_answer_as_on_the_source() {
    let t = TempDir::new("sparse-seek");
    let (src, _m, snap) = sparse_snapshot(&t);
    let mut wrong = Vec::new();
    for file in FILES {
        let name = file.name;
        for offset in probe_offsets(file) {
            for (whence, label) in [
                (libc::SEEK_DATA, "SEEK_DATA"),
                (libc::SEEK_HOLE, "SEEK_HOLE"),
            ] {
                let expected = seek(&src.join(name), offset, whence);
                let got = seek(&snap.join(name), offset, whence);
                if got != expected {
                    wrong.push(format!(
                        "{name} {label} {offset}: {got:?}, source says {expected:?}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn stat_counts_only_data_as_allocated() {
    let t = TempDir::new("sparse-stat");
    let (src, _m, snap) = sparse_snapshot(&t);
    for file in FILES {
        let name = file.name;
        let meta = fs::metadata(snap.join(name)).unwrap();
        assert_eq!(meta.len(), file.size, "{name}: size");
        // `cp` looks for holes only in files whose blocks cover less than their size.
        let data_blocks = file.data_bytes().div_ceil(512);
        assert_eq!(meta.blocks(), data_blocks, "{name}: st_blocks");
        assert!(meta.blocks() * 512 <= allocated(&src.join(name)), "{name}");
    }
}

/// Asserts that every file of `FILES` in `copy` has the source's bytes and is about as sparse as the source.
fn assert_sparse_copy(src: &Path, copy: &Path, tool: &str) {
    for file in FILES {
        let (name, a, b) = (file.name, src.join(file.name), copy.join(file.name));
        assert_same_bytes(&a, &b);
        assert!(
            allocated(&b) <= allocated(&a) + MIB,
            "{tool}: {name} takes {} bytes, the source {}: its holes were written",
            allocated(&b),
            allocated(&a)
        );
    }
}

fn assert_same_bytes(a: &Path, b: &Path) {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    assert_eq!(
        fa.metadata().unwrap().len(),
        fb.metadata().unwrap().len(),
        "{}",
        b.display()
    );
    let (mut ba, mut bb) = (vec![0; MIB as usize], vec![0; MIB as usize]);
    let mut pos = 0u64;
    loop {
        let n = fa.read(&mut ba).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        assert!(
            ba[..n] == bb[..n],
            "{} differs from the source within 1 MiB of {pos}",
            b.display()
        );
        if n == 0 {
            return;
        }
        pos += n as u64;
    }
}

fn run_within(cmd: &mut Command, limit: Duration) {
    let out = output_within(cmd, limit);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cp_a_copies_sparse_files_out_sparse() {
    let t = TempDir::new("sparse-cp");
    let (src, m, snap) = sparse_snapshot(&t);
    let copy = t.join("copy");
    run_within(
        Command::new("cp").arg("-a").arg(&snap).arg(&copy),
        Duration::from_secs(120),
    );
    assert_sparse_copy(&src, &copy, "cp -a");
    // Every sparse copy ends with a SEEK_DATA that finds no more data: ordinary traffic, not worth a log line.
    let log = m.log_text();
    assert!(!log.contains("lseek"), "lseek failures logged:\n{log}");
}

#[test]
fn rsync_s_copies_sparse_files_out_sparse() {
    ensure_packages(&["rsync"]);
    let t = TempDir::new("sparse-rsync");
    let (src, _m, snap) = sparse_snapshot(&t);
    let copy = t.join("copy");
    // Trailing slash: the snapshot's contents, not the directory itself.
    let from = format!("{}/", snap.display());
    run_within(
        Command::new("rsync").arg("-aS").arg(from).arg(&copy),
        Duration::from_secs(180),
    );
    assert_sparse_copy(&src, &copy, "rsync -aS");
}
