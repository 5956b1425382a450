//! Reusing the memory of evicted chunks for the next chunk loads.
//!
//! A sequential read loads a chunk of about 1 MiB per megabyte read and evicts one as old. Allocating each anew
//! cost page faults, zeroing and munmap (the allocator maps buffers this large directly, see `fuse`'s
//! `bound_heap_growth`), which profiled as a third of the mount's CPU time; handing the evicted chunk's buffer
//! to the next load costs nothing. The pool is bounded, so it adds at most its budget to the chunk cache's.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use zstd::bulk::Decompressor;

pub(super) struct SpareBuffers {
    buffers: Mutex<Vec<Vec<u8>>>,
    budget: usize,
}

impl SpareBuffers {
    pub(super) fn new(budget: usize) -> Self {
        Self {
            buffers: Mutex::new(Vec::new()),
            budget,
        }
    }

    /// A buffer with room for `len` bytes (its length is whatever it held: initialised bytes the caller may
    /// overwrite without zeroing them first): the smallest spare one that fits, or a new, empty one.
    pub(super) fn take(&self, len: usize) -> Vec<u8> {
        let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let best = (buffers.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => buffers.swap_remove(i),
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps an evicted chunk's buffer if nobody else holds the chunk and the pool has room.
    pub(super) fn give_back(&self, chunk: Arc<Vec<u8>>) {
        let Ok(buffer) = Arc::try_unwrap(chunk) else {
            return;
        };
        let mut buffers = self.buffers.lock().unwrap_or_else(|p| p.into_inner());
        let held: usize = buffers.iter().map(Vec::capacity).sum();
        if held + buffer.capacity() <= self.budget {
            buffers.push(buffer);
        }
    }
}

/// Decompresses a zstd frame into `out` (emptied first, its capacity kept); returns the plaintext length. Fails
/// if the plaintext does not fit `out`'s capacity, which the caller set to the expected length.
pub(super) fn decompress_into(stored: &[u8], out: &mut Vec<u8>) -> std::io::Result<usize> {
    thread_local! {
        static CONTEXT: RefCell<Option<Decompressor<'static>>> = const { RefCell::new(None) };
    }
    out.clear();
    CONTEXT.with(|context| {
        let mut context = context.borrow_mut();
        let decompressor = match context.as_mut() {
            Some(d) => d,
            None => context.insert(Decompressor::new()?),
        };
        decompressor.decompress_to_buffer(stored, out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_smallest_fitting_buffer_within_budget() {
        let spare = SpareBuffers::new(3 << 20);
        spare.give_back(Arc::new(Vec::with_capacity(2 << 20)));
        spare.give_back(Arc::new(Vec::with_capacity(1 << 20)));
        spare.give_back(Arc::new(Vec::with_capacity(1 << 20))); // over budget: dropped
        let shared = Arc::new(Vec::with_capacity(1 << 20));
        spare.give_back(shared.clone()); // still in use elsewhere: not taken
        assert_eq!(spare.take(1000).capacity(), 1 << 20);
        assert_eq!(spare.take(1000).capacity(), 2 << 20);
        assert!(
            spare.take(1000).capacity() < 1 << 20,
            "pool is empty: a new buffer"
        );
    }

    #[test]
    fn a_frame_larger_than_the_buffer_is_an_error() {
        let frame = zstd::bulk::compress(&[7u8; 5000], 3).unwrap();
        let mut out = Vec::with_capacity(5000);
        assert_eq!(decompress_into(&frame, &mut out).unwrap(), 5000);
        assert_eq!(out, vec![7u8; 5000]);
        let mut small = Vec::with_capacity(4000);
        assert!(decompress_into(&frame, &mut small).is_err());
    }
}
