//! Reading file contents: an open file keeps its extent list with start offsets, so a read is a binary search
//! followed by verified chunk reads from the repository's cache.

use super::{Vfs, VfsError};
use crate::format::tree::{Extent, Payload};
use crate::format::BlobId;
use crate::repo::RepoError;

pub struct OpenFile {
    pub ino: u64,
    pub size: u64,
    extents: Vec<Extent>,
    /// File offset at which each extent starts.
    starts: Vec<u64>,
}

impl Vfs {
    pub fn open(&self, ino: u64) -> Result<OpenFile, VfsError> {
        let entry = self.file_entry(ino)?;
        let Payload::File { extents } = entry.payload else {
            return Err(VfsError::NotFound);
        };
        let mut starts = Vec::with_capacity(extents.len());
        let mut pos = 0;
        for e in &extents {
            starts.push(pos);
            pos += e.len();
        }
        Ok(OpenFile {
            ino,
            size: entry.size,
            extents,
            starts,
        })
    }

    /// Up to `len` bytes from `offset`; shorter only at end of file. Every chunk is verified against its id.
    pub fn read(&self, file: &OpenFile, offset: u64, len: usize) -> Result<Vec<u8>, VfsError> {
        let end = file.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        let mut i = file.starts.partition_point(|&s| s <= offset) - 1;
        while pos < end {
            let (start, extent) = (file.starts[i], file.extents[i]);
            let within = pos - start;
            let n = (extent.len() - within).min(end - pos);
            match extent {
                Extent::Hole { .. } => out.resize(out.len() + n as usize, 0),
                Extent::Data { id, len } => {
                    let chunk = self.repo().chunk(id)?;
                    if chunk.len() != len as usize {
                        return Err(RepoError::BlobMissing {
                            id: BlobId::chunk(id),
                        }
                        .into());
                    }
                    out.extend_from_slice(&chunk[within as usize..(within + n) as usize]);
                }
            }
            pos += n;
            i += 1;
        }
        Ok(out)
    }
}
