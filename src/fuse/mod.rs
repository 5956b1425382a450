//! The fuser adapter: translates kernel requests to `vfs` calls and results to replies, nothing more.
//!
//! One errno mapping (`errno`), one log line per failed request (`fail`). Missing names are ordinary traffic
//! (shells probe for files all the time) and are not logged, nor is SEEK_DATA finding no more data (every sparse
//! copy ends so); damage is logged with the inode's path.

mod store_ahead;

use crate::cache::LruCache;
use crate::format::tree::{EntryKind, Timestamp};
use crate::vfs::{inode, Attr, OpenFile, Vfs, VfsError, Whence};
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr,
    Request, Session, SessionACL,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Snapshot contents never change; the root listing and `latest` do.
const SNAPSHOT_TTL: Duration = Duration::from_secs(3600);
const ROOT_TTL: Duration = Duration::from_secs(1);
/// How often the daemon looks for new snapshots; with ROOT_TTL this bounds how late one shows up.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

pub struct BackupFs {
    vfs: Arc<Vfs>,
    /// The kernel opens files without asking us (FUSE_NO_OPEN_SUPPORT, answered by ENOSYS to the first OPEN).
    /// Either way reads carry no handle of ours: a file is found by inode in `by_ino` (its contents are
    /// immutable, so an evicted one is rebuilt the same).
    no_open: bool,
    by_ino: LruCache<u64, Arc<OpenFile>>,
    /// Hints for `store_ahead`, once the session (which owns the notifier) has started it.
    store_ahead: Arc<std::sync::OnceLock<std::sync::mpsc::SyncSender<u64>>>,
}

fn errno(e: &VfsError) -> Errno {
    match e {
        VfsError::NotFound => Errno::ENOENT,
        VfsError::NotDirectory => Errno::ENOTDIR,
        VfsError::NotSymlink => Errno::EINVAL,
        VfsError::NoXattr => Errno::from_i32(libc::ENODATA),
        VfsError::IsDirectory => Errno::EISDIR,
        VfsError::OutOfRange => Errno::ENXIO,
        VfsError::Repo(_) => Errno::EIO,
    }
}

fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(t.nsec as u64);
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.sec as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nanos
    }
}

fn file_type(k: EntryKind) -> FileType {
    match k {
        EntryKind::File => FileType::RegularFile,
        EntryKind::Dir => FileType::Directory,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Fifo => FileType::NamedPipe,
        EntryKind::Socket => FileType::Socket,
        EntryKind::CharDev => FileType::CharDevice,
        EntryKind::BlockDev => FileType::BlockDevice,
    }
}

/// The kernel's 32-bit "new" device encoding, which FUSE attributes use.
fn fuse_rdev(dev: u64) -> u32 {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn file_attr(a: &Attr) -> FileAttr {
    let mtime = system_time(a.mtime);
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: mtime,
        mtime,
        ctime: system_time(a.ctime),
        crtime: mtime,
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: fuse_rdev(a.rdev),
        blksize: 1 << 20,
        flags: 0,
    }
}

fn ttl(ino: u64) -> Duration {
    if ino == inode::ROOT || ino == inode::LATEST {
        ROOT_TTL
    } else {
        SNAPSHOT_TTL
    }
}

impl BackupFs {
    pub fn new(vfs: Arc<Vfs>) -> Self {
        Self {
            vfs,
            no_open: false,
            by_ino: LruCache::new(1 << 20),
            store_ahead: Arc::default(),
        }
    }

    /// Logs a failed request once, with the path it concerns, and returns the errno to reply with.
    fn fail(&self, op: &str, ino: u64, e: &VfsError) -> Errno {
        if !matches!(
            e,
            VfsError::NotFound | VfsError::NoXattr | VfsError::NotSymlink | VfsError::OutOfRange
        ) {
            tracing::error!("{op} {}: {e}", self.vfs.path_of(ino));
        }
        errno(e)
    }

    fn entry(&self, ino: u64, result: Result<Attr, VfsError>, reply: ReplyEntry) {
        match result {
            Ok(a) => reply.entry(&ttl(a.ino), &file_attr(&a), Generation(a.generation)),
            Err(e) => reply.error(self.fail("lookup", ino, &e)),
        }
    }

    /// The file a read is for, by inode.
    fn open_file(&self, ino: u64) -> Result<Arc<OpenFile>, Errno> {
        if let Some(file) = self.by_ino.get(&ino) {
            return Ok(file);
        }
        let file = self.vfs.open(ino).map_err(|e| match e {
            // The kernel reads only files it has opened: the file's snapshot was pruned since.
            VfsError::NotFound => Errno::ESTALE,
            e => self.fail("open", ino, &e),
        })?;
        Ok(self.remember(ino, file))
    }

    fn remember(&self, ino: u64, file: OpenFile) -> Arc<OpenFile> {
        let file = Arc::new(file);
        self.by_ino.insert(ino, file.clone(), file.heap_size());
        file
    }
}

impl Filesystem for BackupFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Handles that survive restarts (NFS re-export): the kernel may then ask for "." and ".." by number.
        let _ = config.add_capabilities(InitFlags::FUSE_EXPORT_SUPPORT);
        // Listings carry attributes (one round trip instead of one per entry) and directory operations run in
        // parallel; a kernel without either simply does without.
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_PARALLEL_DIROPS,
        ] {
            let _ = config.add_capabilities(flag);
        }
        // `cp -a` of small files spends more in round trips than in reading. The kernel may cache symlink
        // targets (`latest`'s is invalidated explicitly when it changes, see `serve_with_ready`) and open files
        // without an OPEN and RELEASE each: two to three fewer round trips per file.
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        // The kernel checks recorded POSIX ACLs, not only the mode bits they fold into (with the mode alone, a
        // user an ACL shuts out of a world-readable file could read it through the mount). It asks for an
        // inode's ACL once (GETXATTR) and keeps it with the inode.
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        self.no_open = config
            .capabilities()
            .contains(InitFlags::FUSE_NO_OPEN_SUPPORT);
        // No readahead request: the kernel offers its default (128 KiB) as the maximum and only accepts less.
        // Raising it by sysfs (read_ahead_kb 4096) measured no gain: `vfs::prefetch` keeps the cores busy.
        Ok(())
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // A snapshot's directories never change: the kernel may keep their listings in its page cache.
        let flags = if self.vfs.is_immutable(ino.0) {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        reply.opened(FileHandle(0), flags);
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        let result = self.vfs.readdir_plus(ino.0, offset, &mut |item, attr| {
            let name = OsStr::from_bytes(&item.name);
            let (ttl, attr_out) = (ttl(attr.ino), file_attr(attr));
            reply.add(
                INodeNo(item.ino),
                item.next_offset,
                name,
                &ttl,
                &attr_out,
                Generation(attr.generation),
            )
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("readdirplus", ino.0, &e)),
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(parent.0, self.vfs.lookup(parent.0, name.as_bytes()), reply);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.vfs.getattr(ino.0) {
            Ok(a) => reply.attr(&ttl(a.ino), &file_attr(&a)),
            Err(e) => reply.error(self.fail("getattr", ino.0, &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.vfs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.fail("readlink", ino.0, &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        if self.no_open {
            // The kernel takes ENOSYS as "opens need no message" from now on, and keeps the page cache.
            return reply.error(Errno::ENOSYS);
        }
        match self.vfs.open(ino.0) {
            Ok(file) => {
                self.remember(ino.0, file);
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
            }
            Err(e) => reply.error(self.fail("open", ino.0, &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let file = match self.open_file(ino.0) {
            Ok(file) => file,
            Err(e) => return reply.error(e),
        };
        let mut reply = Some(reply);
        let sent = self.vfs.read_with(&file, offset, size as usize, |data| {
            if let Some(r) = reply.take() {
                r.data(data)
            }
        });
        match (sent, reply) {
            (Err(e), Some(r)) => r.error(self.fail(&format!("read at {offset}"), ino.0, &e)),
            // A small file read whole: the next ones are probably wanted too.
            (Ok(()), None) if offset == 0 && file.size <= store_ahead::MAX_FILE => {
                if let Some(hints) = self.store_ahead.get() {
                    let _ = hints.try_send(ino.0);
                }
            }
            _ => {}
        }
    }

    /// Only SEEK_DATA and SEEK_HOLE come here (the kernel answers the others itself): with them `cp` skips the
    /// holes of sparse files instead of reading them as zeros. Found by inode, like reads (see `no_open`).
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let whence = match whence {
            libc::SEEK_DATA => Whence::Data,
            libc::SEEK_HOLE => Whence::Hole,
            _ => return reply.error(Errno::EINVAL),
        };
        let file = match self.open_file(ino.0) {
            Ok(file) => file,
            Err(e) => return reply.error(e),
        };
        // A negative offset is before the file, which lseek(2) answers with ENXIO as past its end.
        let from = u64::try_from(offset).unwrap_or(u64::MAX);
        match file.seek(from, whence).map(i64::try_from) {
            Ok(Ok(pos)) => reply.offset(pos),
            // Only a damaged tree has a size past what an offset can say.
            Ok(Err(_)) => reply.error(Errno::EOVERFLOW),
            Err(e) => reply.error(self.fail(&format!("lseek from {offset}"), ino.0, &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.vfs.readdir(ino.0, offset, &mut |item| {
            reply.add(
                INodeNo(item.ino),
                item.next_offset,
                file_type(item.kind),
                OsStr::from_bytes(&item.name),
            )
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.fail("readdir", ino.0, &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.vfs.getxattr(ino.0, name.as_bytes()) {
            Ok(v) => xattr_reply(v, size, reply),
            Err(e) => reply.error(self.fail("getxattr", ino.0, &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.vfs.listxattr(ino.0) {
            Ok(v) => xattr_reply(v, size, reply),
            Err(e) => reply.error(self.fail("listxattr", ino.0, &e)),
        }
    }

    // Everything that would change the filesystem: read-only, always.
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }
    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }
    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }
    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }
    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }
    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }
    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }
}

fn xattr_reply(value: Vec<u8>, size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(&value);
    } else {
        reply.error(Errno::ERANGE);
    }
}

pub struct MountOptions {
    pub allow_other: bool,
    pub threads: usize,
    pub fsname: String,
}

/// Mounts `vfs` at `mountpoint` and serves it until SIGINT, SIGTERM or an external unmount.
pub fn serve(vfs: Arc<Vfs>, mountpoint: &Path, opts: &MountOptions) -> std::io::Result<()> {
    serve_with_ready(vfs, mountpoint, opts, |_| {})
}

/// `serve`, calling `on_ready` (from another thread) once the mount is usable: after this process has listed the
/// mount's root through the kernel. It gets that listing's result. Mount helpers and sd_notify wait for it.
pub fn serve_with_ready(
    vfs: Arc<Vfs>,
    mountpoint: &Path,
    opts: &MountOptions,
    on_ready: impl FnOnce(std::io::Result<()>) + Send + 'static,
) -> std::io::Result<()> {
    bound_heap_growth();
    let signals = block_termination_signals();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
        MountOption::FSName(opts.fsname.clone()),
        // fuser's own mount(2) leaves MountOption::Subtype to fusermount; as a kernel option it makes the type
        // `fuse.backupfs` in mountinfo, which `findmnt -t`, `umount -t` and `mount -a` match against fstab.
        MountOption::CUSTOM("subtype=backupfs".into()),
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    let fs = BackupFs::new(vfs.clone());
    let store_ahead = fs.store_ahead.clone();
    let mut session = Session::new(fs, mountpoint, &config)?;
    let mut unmounter = session.unmount_callable();
    let notifier = session.notifier();
    let _ = store_ahead.set(store_ahead::start(vfs.clone(), session.notifier()));
    let where_ = mountpoint.to_path_buf();
    std::thread::spawn(move || loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `signals` is an initialised set; sigwait only writes `sig`.
        unsafe { libc::sigwait(&signals, &mut sig) };
        tracing::info!("signal {sig}: unmounting {}", where_.display());
        if let Err(e) = unmounter.unmount() {
            // Busy (a shell sits in it, a file is open): detach it now; the kernel ends the session, and so this
            // process, when the last user lets go. Waiting for a second signal would leave systemd to SIGKILL us.
            tracing::warn!(
                "unmounting {}: {e}; detached lazily, exiting when it is no longer in use",
                where_.display()
            );
            detach(&where_);
        }
    });
    std::thread::spawn(move || loop {
        std::thread::sleep(REFRESH_INTERVAL);
        match vfs.refresh() {
            // The kernel caches symlink targets (FUSE_CACHE_SYMLINKS); `latest`'s may have changed. It also keeps
            // pruned snapshots' names in its dentry cache for SNAPSHOT_TTL: a lookup by name would still find
            // them. An inode or name the kernel never saw gives ENOENT, which is fine.
            Ok(Some(gone)) => {
                for ino in vfs.latest_inodes() {
                    let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
                }
                for (parent, name) in gone {
                    let _ =
                        notifier.inval_entry(INodeNo(parent), std::ffi::OsStr::from_bytes(&name));
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "refreshing the snapshot list of {}: {e}",
                vfs.repo().location()
            ),
        }
    });
    tracing::info!("serving {}", mountpoint.display());
    let root = mountpoint.to_path_buf();
    std::thread::spawn(move || {
        on_ready(std::fs::read_dir(&root).and_then(|mut d| d.next().transpose().map(drop)))
    });
    session.run()
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread started after, so one thread can take
/// them with sigwait and unmount cleanly. Call it before anything starts threads (opening the repository
/// starts RocksDB's): a thread with the signals unblocked would take the default action and die mounted.
pub fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Chunk buffers are 1-4 MiB and are freed as fast as they are made, on several threads. glibc would raise its
/// mmap threshold after the first such free and then keep them in per-thread arenas for good; a fixed threshold
/// returns them to the system, so the daemon's memory is its caches' budget and not the allocation history.
/// What that costs in page faults the repository avoids by reusing evicted chunks' buffers (`repo::spare`).
fn bound_heap_growth() {
    // SAFETY: mallopt only changes allocator parameters; called before the serving threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Lazy unmount (MNT_DETACH) of `path`.
fn detach(path: &Path) {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        tracing::error!(
            "detaching {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
}
