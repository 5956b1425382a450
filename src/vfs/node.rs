//! Resolving inode numbers to entries, and the metadata operations on them.

use super::inode::{self, Ino};
use super::{Listing, Scope, SnapInfo, Vfs, VfsError};
use crate::format::tree::{Entry, EntryKind, Payload, Timestamp};
use crate::format::TreeId;
use crate::repo::EntryRef;
use std::sync::Arc;

/// What `stat` shows, independent of FUSE's types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub generation: u64,
    pub kind: EntryKind,
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks of storage: a sparse file's holes take none.
    pub blocks: u64,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub rdev: u64,
}

/// One directory entry of a listing; `next_offset` resumes the listing after it.
pub struct DirItem {
    pub name: Vec<u8>,
    pub ino: u64,
    pub kind: EntryKind,
    pub next_offset: u64,
}

pub(super) enum Node {
    /// The root of a mount of all accounts.
    Accounts,
    /// An account's snapshot directories (the root of a one-account mount).
    Listing(Arc<Listing>),
    Latest(Arc<Listing>),
    Entry(EntryNode),
}

pub(super) struct EntryNode {
    snap: Arc<SnapInfo>,
    dfs: u64,
    /// The entry in its directory; None for the snapshot's root directory.
    place: Option<EntryRef>,
    parent_dfs: u64,
}

impl EntryNode {
    fn entry(&self) -> &Entry {
        match &self.place {
            Some(e) => e,
            None => &self.snap.manifest.root,
        }
    }
}

fn dir_tree(e: &Entry) -> Result<TreeId, VfsError> {
    match e.payload {
        Payload::Dir { tree, .. } => Ok(tree),
        _ => Err(VfsError::NotDirectory),
    }
}

impl Vfs {
    pub(super) fn resolve(&self, ino: u64) -> Result<Node, VfsError> {
        match inode::decode(ino) {
            Ino::Root if self.scope == Scope::All => Ok(Node::Accounts),
            Ino::Root | Ino::Latest | Ino::Account(_) => {
                let listing = self.listing(ino).ok_or(VfsError::NotFound)?;
                if ino == listing.ino {
                    Ok(Node::Listing(listing))
                } else if listing.latest.is_some() {
                    Ok(Node::Latest(listing))
                } else {
                    Err(VfsError::NotFound)
                }
            }
            Ino::Entry { ordinal, dfs } => {
                let snap = self.snapshot(ordinal).ok_or(VfsError::NotFound)?;
                self.resolve_in(snap, dfs, &mut |_| {}).map(Node::Entry)
            }
            Ino::Invalid => Err(VfsError::NotFound),
        }
    }

    /// Descends from the snapshot root to DFS number `dfs`, choosing at each level the entry whose subtree spans
    /// it; `on_name` sees each name on the way (for log paths).
    fn resolve_in(
        &self,
        snap: Arc<SnapInfo>,
        dfs: u64,
        on_name: &mut dyn FnMut(&[u8]),
    ) -> Result<EntryNode, VfsError> {
        if dfs == 0 {
            return Ok(EntryNode {
                snap,
                dfs,
                place: None,
                parent_dfs: 0,
            });
        }
        let mut tree_id = dir_tree(&snap.manifest.root)?;
        let mut base = 0;
        loop {
            let dir = self.repo.directory(tree_id)?;
            let e = dir
                .spanning(&self.repo, dfs - base)?
                .ok_or(VfsError::NotFound)?;
            let child_dfs = base + e.rel_dfs;
            on_name(&e.name);
            if child_dfs == dfs {
                return Ok(EntryNode {
                    snap,
                    dfs,
                    place: Some(e),
                    parent_dfs: base,
                });
            }
            tree_id = dir_tree(&e).map_err(|_| VfsError::NotFound)?;
            base = child_dfs;
        }
    }

    /// The path of an inode inside the mount, for log lines.
    pub fn path_of(&self, ino: u64) -> String {
        let Ino::Entry { ordinal, dfs } = inode::decode(ino) else {
            return if ino == inode::LATEST {
                "latest".into()
            } else {
                format!("inode {ino}")
            };
        };
        let Some(snap) = self.snapshot(ordinal) else {
            return format!("inode {ino}");
        };
        let mut path = match self.scope {
            Scope::All => format!("{}/{}", snap.manifest.account, snap.name),
            Scope::Account(_) => snap.name.clone(),
        };
        let _ = self.resolve_in(snap, dfs, &mut |name| {
            path.push('/');
            path.push_str(&String::from_utf8_lossy(name));
        });
        path
    }

    /// Inode number and link count of an entry; every path of a hardlinked file shares its first path's number.
    fn identity(&self, node: &EntryNode) -> Result<(u64, u32), VfsError> {
        let e = node.entry();
        let mut dfs = node.dfs;
        let nlink = match e.kind {
            EntryKind::Dir => self.dir_nlink(dir_tree(e)?),
            _ if e.is_hardlinked() => match node.snap.link_table(&self.repo)?.get(e.source_ino) {
                Some(link) => {
                    dfs = link.dfs;
                    link.nlink
                }
                None => 1,
            },
            _ => 1,
        };
        let ino = inode::encode(node.snap.ordinal(), dfs).ok_or(VfsError::NotFound)?;
        Ok((ino, nlink))
    }

    /// A directory's link count, 2 + its subdirectories, needs its tree. A damaged tree must not make its parent
    /// unlistable (nor a snapshot root the whole mount): the count is then 1, which tools read as "unknown",
    /// and the damage shows where it is, when the directory itself is opened.
    fn dir_nlink(&self, tree: TreeId) -> u32 {
        match self.repo.directory(tree) {
            Ok(dir) => 2 + dir.subdirs(),
            Err(e) => {
                tracing::debug!("link count of tree {tree} unknown: {e}");
                1
            }
        }
    }

    fn entry_attr(&self, node: &EntryNode) -> Result<Attr, VfsError> {
        let e = node.entry();
        let (ino, nlink) = self.identity(node)?;
        Ok(Attr {
            ino,
            generation: node.snap.generation(),
            kind: e.kind,
            perm: e.mode,
            nlink,
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            blocks: super::seek::blocks(e),
            mtime: e.mtime,
            ctime: e.ctime,
            rdev: e.rdev,
        })
    }

    fn synthetic_attr(
        &self,
        ino: u64,
        kind: EntryKind,
        size: u64,
        nlink: u32,
        latest: Option<&SnapInfo>,
    ) -> Attr {
        let time = latest.map(|s| s.manifest.time).unwrap_or_default();
        // The mount root keeps the mount point's permissions (less write), so that a 0700 mount point in a user's
        // home keeps everyone else out; account directories are open, the snapshots' own modes guard the data.
        let perm = match kind {
            EntryKind::Dir if ino == inode::ROOT => self.root.perm & 0o555,
            EntryKind::Dir => 0o555,
            _ => 0o777,
        };
        let (uid, gid) = (self.root.uid, self.root.gid);
        Attr {
            ino,
            generation: 1,
            kind,
            perm,
            nlink,
            uid,
            gid,
            size,
            blocks: size.div_ceil(512),
            mtime: time,
            ctime: time,
            rdev: 0,
        }
    }

    fn attr(&self, node: &Node) -> Result<Attr, VfsError> {
        match node {
            Node::Accounts => {
                let listings = self.listings();
                let newest = listings
                    .iter()
                    .filter_map(|l| l.latest.clone())
                    .max_by_key(|s| (s.manifest.time.sec, s.manifest.time.nsec));
                let nlink = 2 + listings.len() as u32;
                Ok(self.synthetic_attr(inode::ROOT, EntryKind::Dir, 0, nlink, newest.as_deref()))
            }
            Node::Listing(l) => {
                let nlink = 2 + l.snapshots().count() as u32;
                Ok(self.synthetic_attr(l.ino, EntryKind::Dir, 0, nlink, l.latest.as_deref()))
            }
            Node::Latest(l) => {
                let s = l.latest.as_deref().ok_or(VfsError::NotFound)?;
                let size = s.name.len() as u64;
                Ok(self.synthetic_attr(l.latest_ino, EntryKind::Symlink, size, 1, Some(s)))
            }
            Node::Entry(n) => self.entry_attr(n),
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, VfsError> {
        self.attr(&self.resolve(ino)?)
    }

    /// The directory containing `ino` (the root is its own parent).
    pub fn parent(&self, ino: u64) -> Result<u64, VfsError> {
        match self.resolve(ino)? {
            Node::Accounts | Node::Listing(_) => Ok(inode::ROOT),
            Node::Latest(l) => Ok(l.ino),
            Node::Entry(n) if n.dfs == 0 => Ok(n.snap.listing),
            Node::Entry(n) => {
                inode::encode(n.snap.ordinal(), n.parent_dfs).ok_or(VfsError::NotFound)
            }
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr, VfsError> {
        match name {
            b"." => return self.getattr(parent),
            b".." => return self.getattr(self.parent(parent)?),
            _ => {}
        }
        match self.resolve(parent)? {
            Node::Accounts => {
                let account = std::str::from_utf8(name).map_err(|_| VfsError::NotFound)?;
                let listing = self.listings().into_iter().find(|l| l.account == account);
                self.attr(&Node::Listing(listing.ok_or(VfsError::NotFound)?))
            }
            Node::Listing(l) if name == b"latest" && l.latest.is_some() => {
                self.attr(&Node::Latest(l))
            }
            Node::Listing(l) => {
                let snap = l.named(name).ok_or(VfsError::NotFound)?;
                self.entry_attr(&EntryNode {
                    snap,
                    dfs: 0,
                    place: None,
                    parent_dfs: 0,
                })
            }
            Node::Latest(_) => Err(VfsError::NotDirectory),
            Node::Entry(dir) => {
                let entries = self.repo.directory(dir_tree(dir.entry())?)?;
                let e = entries.find(&self.repo, name)?.ok_or(VfsError::NotFound)?;
                self.entry_attr(&EntryNode {
                    snap: dir.snap.clone(),
                    dfs: dir.dfs + e.rel_dfs,
                    place: Some(e),
                    parent_dfs: dir.dfs,
                })
            }
        }
    }

    /// Lists directory `ino` from `offset` (0 = start; `.` and `..` are 0 and 1, then entry i is 2 + i), calling
    /// `add` until it returns true (reply buffer full).
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        add: &mut dyn FnMut(DirItem) -> bool,
    ) -> Result<(), VfsError> {
        let node = self.resolve(ino)?;
        let tree = match &node {
            Node::Latest(_) => return Err(VfsError::NotDirectory),
            Node::Entry(dir) => Some(self.repo.directory(dir_tree(dir.entry())?)?),
            Node::Accounts | Node::Listing(_) => None,
        };
        let dots = [(&b"."[..], ino), (&b".."[..], self.parent(ino)?)];
        for (k, (name, ino)) in dots.into_iter().enumerate().skip(offset as usize) {
            if add(DirItem {
                name: name.to_vec(),
                ino,
                kind: EntryKind::Dir,
                next_offset: k as u64 + 1,
            }) {
                return Ok(());
            }
        }
        let first = (offset as usize).saturating_sub(2);
        match (node, tree) {
            (Node::Entry(dir), Some(entries)) => {
                // Only the part of a large directory that the reply asks for is decoded and turned into items.
                for e in entries.entries_from(&self.repo, first as u64) {
                    let e = e?;
                    let (name, kind, next_offset) = (e.name.clone(), e.kind, 3 + e.position);
                    let child = EntryNode {
                        snap: dir.snap.clone(),
                        dfs: dir.dfs + e.rel_dfs,
                        place: Some(e),
                        parent_dfs: dir.dfs,
                    };
                    let item = DirItem {
                        name,
                        ino: self.listing_ino(&child)?,
                        kind,
                        next_offset,
                    };
                    if add(item) {
                        break;
                    }
                }
            }
            (node, _) => {
                let mut items: Vec<(Vec<u8>, u64, EntryKind)> = Vec::new();
                if let Node::Listing(l) = &node {
                    for s in l.snapshots() {
                        let ino = inode::encode(s.ordinal(), 0).ok_or(VfsError::NotFound)?;
                        items.push((s.name.as_bytes().to_vec(), ino, EntryKind::Dir));
                    }
                    if l.latest.is_some() {
                        items.push((b"latest".to_vec(), l.latest_ino, EntryKind::Symlink));
                    }
                } else {
                    for l in self.listings() {
                        items.push((l.account.as_bytes().to_vec(), l.ino, EntryKind::Dir));
                    }
                }
                for (i, (name, ino, kind)) in items.into_iter().enumerate().skip(first) {
                    if add(DirItem {
                        name,
                        ino,
                        kind,
                        next_offset: 3 + i as u64,
                    }) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Like `readdir`, with each entry's attributes (for READDIRPLUS, which spares the kernel a LOOKUP per entry).
    pub fn readdir_plus(
        &self,
        ino: u64,
        offset: u64,
        add: &mut dyn FnMut(DirItem, &Attr) -> bool,
    ) -> Result<(), VfsError> {
        let mut failure = None;
        self.readdir(ino, offset, &mut |item| match self.item_attr(ino, &item) {
            Ok(attr) => add(item, &attr),
            Err(e) => {
                failure = Some(e);
                true
            }
        })?;
        failure.map_or(Ok(()), Err)
    }

    fn item_attr(&self, dir: u64, item: &DirItem) -> Result<Attr, VfsError> {
        match item.name.as_slice() {
            b"." | b".." => self.getattr(item.ino),
            name => self.lookup(dir, name),
        }
    }

    /// Whether a directory's listing can never change (inside a snapshot), so the kernel may cache it.
    pub fn is_immutable(&self, ino: u64) -> bool {
        matches!(inode::decode(ino), Ino::Entry { .. })
    }

    /// Inode number without the link count (which may cost a tree read); for listings.
    fn listing_ino(&self, node: &EntryNode) -> Result<u64, VfsError> {
        let e = node.entry();
        let dfs = if e.is_hardlinked() {
            node.snap
                .link_table(&self.repo)?
                .get(e.source_ino)
                .map_or(node.dfs, |l| l.dfs)
        } else {
            node.dfs
        };
        inode::encode(node.snap.ordinal(), dfs).ok_or(VfsError::NotFound)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>, VfsError> {
        match self.resolve(ino)? {
            Node::Latest(l) => {
                let latest = l.latest.as_ref().ok_or(VfsError::NotFound)?;
                Ok(latest.name.as_bytes().to_vec())
            }
            Node::Entry(n) => match &n.entry().payload {
                Payload::Symlink { target } => Ok(target.clone()),
                _ => Err(VfsError::NotSymlink),
            },
            Node::Accounts | Node::Listing(_) => Err(VfsError::NotSymlink),
        }
    }

    /// Extended attribute names, NUL-terminated and concatenated as listxattr(2) returns them.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>, VfsError> {
        let mut out = Vec::new();
        if let Node::Entry(n) = self.resolve(ino)? {
            for (name, _) in &n.entry().xattrs {
                out.extend_from_slice(name);
                out.push(0);
            }
        }
        Ok(out)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>, VfsError> {
        match self.resolve(ino)? {
            Node::Entry(n) => n
                .entry()
                .xattrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or(VfsError::NoXattr),
            _ => Err(VfsError::NoXattr),
        }
    }

    /// Regular files of 1 to `max_size` bytes among the `span` entries that follow `ino` in its snapshot's
    /// depth-first order (the order `cp -r` and `find` visit them), as (inode number, size).
    pub fn small_files_after(&self, ino: u64, span: u64, max_size: u64) -> Vec<(u64, u64)> {
        let Ino::Entry { ordinal, dfs } = inode::decode(ino) else {
            return Vec::new();
        };
        (dfs + 1..=dfs + span)
            .filter_map(|next| self.getattr(inode::encode(ordinal, next)?).ok())
            .filter(|a| a.kind == EntryKind::File && (1..=max_size).contains(&a.size))
            .map(|a| (a.ino, a.size))
            .collect()
    }

    pub(super) fn file_entry(&self, ino: u64) -> Result<Entry, VfsError> {
        match self.resolve(ino)? {
            Node::Entry(n) if n.entry().kind == EntryKind::File => Ok(n.entry().clone()),
            Node::Entry(n) if n.entry().kind == EntryKind::Dir => Err(VfsError::IsDirectory),
            Node::Accounts | Node::Listing(_) => Err(VfsError::IsDirectory),
            _ => Err(VfsError::NotFound),
        }
    }
}
