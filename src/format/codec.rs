//! Little-endian field encoding shared by every object, and the bounds-checked reader that decodes them.
//!
//! Every read is checked against the end of the buffer, so a truncated or hostile object is a `FormatError` naming
//! the object kind and the byte offset, never a panic.

use super::FormatError;

/// Appends fixed-width little-endian fields to a byte vector.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// A byte string preceded by its length as u16; callers check the limit before encoding.
    #[allow(clippy::cast_possible_truncation, reason = "callers check the limit")]
    pub fn bytes16(&mut self, v: &[u8]) {
        debug_assert!(v.len() <= u16::MAX as usize);
        self.u16(v.len() as u16);
        self.bytes(v);
    }
    /// A byte string preceded by its length as u32.
    #[allow(clippy::cast_possible_truncation, reason = "callers check the limit")]
    pub fn bytes32(&mut self, v: &[u8]) {
        debug_assert!(v.len() <= u32::MAX as usize);
        self.u32(v.len() as u32);
        self.bytes(v);
    }
}

/// Reads fixed-width little-endian fields from a byte slice, failing cleanly at the end.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    object: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], object: &'static str) -> Self {
        Self {
            buf,
            pos: 0,
            object,
        }
    }

    pub fn offset(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.remaining() < n {
            return Err(FormatError::Truncated {
                object: self.object,
                offset: self.pos,
                needed: n,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, FormatError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, FormatError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, FormatError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn bytes16(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    pub fn bytes32(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// Checks an object's 8-byte magic and u32 version, the first fields of every object.
    pub fn header(&mut self, magic: [u8; 8], supported: u32) -> Result<(), FormatError> {
        self.header_any(magic, &[supported]).map(|_| ())
    }

    /// Like `header`, for an object kind with several versions a reader understands (`supported` ascending);
    /// returns the one found.
    pub fn header_any(&mut self, magic: [u8; 8], supported: &[u32]) -> Result<u32, FormatError> {
        let newest = supported.last().copied().unwrap_or(0);
        let found = self.array::<8>()?;
        if found != magic {
            return Err(FormatError::BadMagic {
                object: self.object,
                found,
            });
        }
        let version = self.u32()?;
        if !supported.contains(&version) {
            return Err(FormatError::UnsupportedVersion {
                object: self.object,
                found: version,
                supported: newest,
            });
        }
        Ok(version)
    }

    pub fn invalid(&self, what: impl Into<String>) -> FormatError {
        self.invalid_at(self.pos, what)
    }

    /// An invalid field that started at `offset` (the reader has usually moved past it by the time it is checked).
    pub fn invalid_at(&self, offset: usize, what: impl Into<String>) -> FormatError {
        FormatError::Invalid {
            object: self.object,
            offset,
            what: what.into(),
        }
    }

    /// Fails unless every byte was consumed: trailing garbage means the object is not what it claims.
    pub fn finish(&self) -> Result<(), FormatError> {
        if self.remaining() != 0 {
            return Err(self.invalid(format!("{} unexpected trailing bytes", self.remaining())));
        }
        Ok(())
    }
}
