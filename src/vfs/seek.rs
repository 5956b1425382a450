//! SEEK_DATA and SEEK_HOLE over an open file's extents, so that `cp` and other sparse-aware copiers skip the holes
//! a snapshot keeps instead of reading and writing them as zeros; and the allocated size `stat` reports, by which
//! `cp` decides whether to look for holes at all.

use super::{OpenFile, VfsError};
use crate::format::tree::{Entry, Extent, Payload};

/// What to look for from an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    /// The first data at or after the offset (SEEK_DATA).
    Data,
    /// The first hole at or after the offset (SEEK_HOLE); the end of the file counts as one.
    Hole,
}

impl OpenFile {
    /// The offset `whence` finds from `offset`, as lseek(2) defines it: `OutOfRange` (ENXIO) from the end of the
    /// file on, or when no data follows. Adjacent extents of one kind count as one region.
    pub fn seek(&self, offset: u64, whence: Whence) -> Result<u64, VfsError> {
        if offset >= self.size {
            return Err(VfsError::OutOfRange);
        }
        let want_data = whence == Whence::Data;
        // The extent holding `offset`, then the first one of the wanted kind from there.
        let i = self
            .starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let found = self
            .starts
            .iter()
            .zip(self.extents())
            .skip(i)
            .find(|(_, e)| matches!(e, Extent::Data { .. }) == want_data)
            .map(|(&start, _)| start.max(offset))
            .filter(|&pos| pos < self.size);
        match (found, whence) {
            (Some(pos), _) => Ok(pos),
            (None, Whence::Hole) => Ok(self.size),
            (None, Whence::Data) => Err(VfsError::OutOfRange),
        }
    }
}

/// The 512-byte blocks `stat` reports for an entry. A file's holes take none, as on the filesystem it was backed
/// up from: `cp` looks for holes (SEEK_DATA) only in files whose blocks cover less than their size.
pub(super) fn blocks(e: &Entry) -> u64 {
    let bytes = match &e.payload {
        Payload::File { extents } => data_bytes(extents),
        _ => e.size,
    };
    bytes.div_ceil(512)
}

fn data_bytes(extents: &[Extent]) -> u64 {
    extents
        .iter()
        .filter(|e| matches!(e, Extent::Data { .. }))
        .map(Extent::len)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ChunkId;

    fn data(len: u32) -> Extent {
        Extent::Data {
            id: ChunkId([7; 32]),
            len,
        }
    }

    fn hole(len: u64) -> Extent {
        Extent::Hole { len }
    }

    fn file(extents: Vec<Extent>) -> OpenFile {
        let size = extents.iter().map(Extent::len).sum();
        OpenFile::new(1, size, extents)
    }

    /// (SEEK_DATA, SEEK_HOLE) from `offset`; None for ENXIO.
    fn both(f: &OpenFile, offset: u64) -> (Option<u64>, Option<u64>) {
        let seek = |whence| match f.seek(offset, whence) {
            Ok(pos) => Some(pos),
            Err(VfsError::OutOfRange) => None,
            Err(e) => panic!("seek {offset} {whence:?}: {e}"),
        };
        (seek(Whence::Data), seek(Whence::Hole))
    }

    const NXIO: Option<u64> = None;

    #[test]
    fn adjacent_extents_of_a_kind_are_one_region() {
        // data 0..30 (two chunks), hole 30..100 (two holes), data 100..110, hole 110..200.
        let f = file(vec![
            data(10),
            data(20),
            hole(50),
            hole(20),
            data(10),
            hole(90),
        ]);
        assert_eq!(both(&f, 0), (Some(0), Some(30)));
        assert_eq!(both(&f, 15), (Some(15), Some(30)));
        assert_eq!(both(&f, 30), (Some(100), Some(30)));
        assert_eq!(both(&f, 85), (Some(100), Some(85)));
        assert_eq!(both(&f, 105), (Some(105), Some(110)));
        assert_eq!(both(&f, 110), (NXIO, Some(110)));
        assert_eq!(both(&f, 199), (NXIO, Some(199)));
        assert_eq!(both(&f, 200), (NXIO, NXIO));
        assert_eq!(both(&f, u64::MAX), (NXIO, NXIO));
    }

    #[test]
    fn the_end_of_the_file_is_a_hole() {
        let f = file(vec![hole(4096), data(100), data(50)]);
        assert_eq!(both(&f, 0), (Some(4096), Some(0)));
        assert_eq!(both(&f, 4096), (Some(4096), Some(4246)));
        assert_eq!(both(&f, 4245), (Some(4245), Some(4246)));
    }

    #[test]
    fn empty_and_all_hole_files_have_no_data() {
        let empty = file(vec![]);
        assert_eq!(both(&empty, 0), (NXIO, NXIO));
        let sparse = file(vec![hole(1 << 40)]);
        assert_eq!(both(&sparse, 0), (NXIO, Some(0)));
        assert_eq!(both(&sparse, (1 << 40) - 1), (NXIO, Some((1 << 40) - 1)));
    }

    #[test]
    fn only_data_extents_take_space() {
        assert_eq!(
            data_bytes(&[hole(1 << 30), data(10), hole(5), data(20)]),
            30
        );
        assert_eq!(data_bytes(&[]), 0);
    }
}
