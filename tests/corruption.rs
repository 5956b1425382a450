//! A damaged pack: the affected file reads as EIO (never wrong bytes), everything else keeps working.

mod common;

use common::*;
use std::fs;
use std::io::Read;

fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn a_flipped_byte_gives_eio_on_that_file_only() {
    let t = TempDir::new("corrupt");
    let src = t.join("src");
    fs::create_dir(&src).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("f{i}.bin"), random_bytes(i, 200_000)))
        .collect();
    for (name, data) in &files {
        fs::write(src.join(name), data).unwrap();
    }
    let repo = t.join("repo");
    init_repo(&repo);
    backup(&repo, "default", &src, None);
    // The largest pack holds the three chunks (incompressible, stored raw); the first blob starts at byte 16.
    let pack = &packs_by_size(&repo)[0];
    let mut bytes = fs::read(pack).unwrap();
    bytes[16 + 1000] ^= 0x40;
    fs::write(pack, bytes).unwrap();

    let m = Mount::new(&repo, "default", &t.join("mnt"));
    let mut failed = Vec::new();
    for (name, data) in &files {
        let mut got = Vec::new();
        match fs::File::open(m.path.join("latest").join(name))
            .unwrap()
            .read_to_end(&mut got)
        {
            Ok(_) => assert_eq!(&got, data, "{name}: wrong bytes returned"),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EIO), "{name}: {e}");
                failed.push(name.clone());
            }
        }
    }
    assert_eq!(failed.len(), 1, "exactly one file is damaged: {failed:?}");
    // Still serving: listings and the other files.
    assert_eq!(fs::read_dir(m.path.join("latest")).unwrap().count(), 3);
    let log = m.log_text();
    assert!(
        log.contains("does not match its id") && log.contains(&failed[0]),
        "log names chunk and path:\n{log}"
    );
}
