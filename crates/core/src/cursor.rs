//! A bounds-checked reader of stored little-endian fields, shared by every
//! decoder of stored state and log entries.

use crate::error::DecodeError;

/// Reads little-endian fields from stored bytes; every read is bounds
/// checked, so damaged input is an error, never a panic.
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, at: 0 }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or(DecodeError::EndsEarly)?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(|_| ())
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self, len: usize) -> Result<String, DecodeError> {
        std::str::from_utf8(self.take(len)?)
            .map(str::to_string)
            .map_err(|_| DecodeError::NotUtf8 { what: "stored text" })
    }

    /// A borrowed string preceded by its u8 length.
    pub fn str_u8_ref(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.u8()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::NotUtf8 { what: "stored text" })
    }

    /// A borrowed string preceded by its u16 length.
    pub fn str_u16_ref(&mut self) -> Result<&'a str, DecodeError> {
        let len = self.u16()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::NotUtf8 { what: "stored text" })
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.bytes[self.at..];
        self.at = self.bytes.len();
        out
    }

    /// A string preceded by its u8 length.
    pub fn str_u8(&mut self) -> Result<String, DecodeError> {
        let len = self.u8()? as usize;
        self.string(len)
    }

    /// A string preceded by its u16 length.
    pub fn str_u16(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        self.string(len)
    }

    pub fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// Fails if bytes are left over.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes { count: self.bytes.len() - self.at }) }
    }
}
