//! Reading the source filesystem: metadata, extended attributes, symlink targets, and file contents as data
//! segments separated by holes.

use crate::format::tree::{EntryKind, Timestamp};
use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub fn kind_of(meta: &Metadata) -> EntryKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        EntryKind::Symlink
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_socket() {
        EntryKind::Socket
    } else if ft.is_char_device() {
        EntryKind::CharDev
    } else if ft.is_block_device() {
        EntryKind::BlockDev
    } else {
        EntryKind::File
    }
}

pub fn mtime(meta: &Metadata) -> Timestamp {
    Timestamp {
        sec: meta.mtime(),
        nsec: meta.mtime_nsec() as u32,
    }
}

pub fn ctime(meta: &Metadata) -> Timestamp {
    Timestamp {
        sec: meta.ctime(),
        nsec: meta.ctime_nsec() as u32,
    }
}

fn cpath(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// All extended attributes of `path` itself (not a symlink's target), sorted by name.
pub fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cpath(path)?;
    let names = grow_buffer(|buf| {
        // SAFETY: buf is valid for buf.len() bytes; the path is NUL-terminated.
        unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })?;
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        let value = grow_buffer(|buf| {
            // SAFETY: as above.
            unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            }
        });
        match value {
            Ok(v) => out.push((name.to_vec(), v)),
            // Removed between list and get: it is simply not there.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Calls a size-probing libc function (returns needed size for an empty buffer) until the value fits.
fn grow_buffer(mut call: impl FnMut(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let need = call(&mut []);
        if need < 0 {
            let e = io::Error::last_os_error();
            return if e.raw_os_error() == Some(libc::ENOTSUP) {
                Ok(vec![])
            } else {
                Err(e)
            };
        }
        let mut buf = vec![0u8; need as usize];
        let got = call(&mut buf);
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) {
            return Err(e);
        }
    }
}

/// Opens a regular file for backup without following a symlink swapped in since the stat, and without
/// touching its atime where permitted. O_NONBLOCK: a FIFO swapped in since the stat must not hang the backup
/// (it has no effect on regular files; the caller checks what it opened).
pub fn open_file(path: &Path) -> io::Result<File> {
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
    };
    match open(libc::O_NOFOLLOW | libc::O_NOATIME | libc::O_NONBLOCK) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            open(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        }
        other => other,
    }
}

/// The data segments of a file as (offset, length), from SEEK_DATA/SEEK_HOLE; everything between them is a hole.
/// A filesystem without hole support reports the whole file as one segment.
pub fn data_segments(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let fd = file.as_raw_fd();
    let mut segments = Vec::new();
    let mut pos: u64 = 0;
    while pos < size {
        // SAFETY: lseek on an owned descriptor.
        let data = unsafe { libc::lseek(fd, pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENXIO) => break,
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => return Ok(vec![(0, size)]),
                _ => return Err(e),
            }
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (start, end) = (data as u64, (hole as u64).min(size));
        if end > start {
            segments.push((start, end - start));
        }
        pos = end.max(start + 1);
    }
    Ok(segments)
}

/// Reads `len` bytes of a file from `offset` with pread, stopping early at end of file.
pub struct SegmentReader<'a> {
    pub file: &'a File,
    pub offset: u64,
    pub remaining: u64,
}

impl io::Read for SegmentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = (buf.len() as u64).min(self.remaining) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}
