//! The protobuf wire format: a reader over a borrowed buffer and a writer.

/// Reads fields from a message's bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A base-128 varint.
    pub fn varint(&mut self) -> Result<u64, String> {
        let mut out = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(out);
            }
        }
        Err("varint too long".into())
    }

    /// A little-endian 64-bit value.
    pub fn fixed64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// A length-delimited field's bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|e| e.to_string())?;
        self.take(n)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("truncated field".into());
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(b)
    }

    /// The next (field number, wire type), or `None` at the end.
    pub fn tag(&mut self) -> Result<Option<(u32, u8)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let t = self.varint()?;
        let number = u32::try_from(t >> 3).map_err(|_| "field number out of range".to_string())?;
        if number == 0 {
            return Err("field number 0".into());
        }
        Ok(Some((number, (t & 7) as u8)))
    }

    /// Skips a field's value.
    pub fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.take(8).map(|_| ()),
            2 => self.bytes().map(|_| ()),
            5 => self.take(4).map(|_| ()),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

/// A string field's text.
pub fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "invalid UTF-8 in string field".to_string())
}

/// Writes fields.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl From<Vec<u8>> for Writer {
    fn from(buf: Vec<u8>) -> Self {
        Self { buf }
    }
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, n: u32, wire: u8) {
        self.varint((u64::from(n) << 3) | u64::from(wire));
    }

    /// Bytes as they are (a prefix).
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// A length-delimited field.
    pub fn bytes(&mut self, n: u32, b: &[u8]) {
        self.tag(n, 2);
        self.varint(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// A varint field.
    pub fn varint_field(&mut self, n: u32, v: u64) {
        self.tag(n, 0);
        self.varint(v);
    }

    /// A fixed 64-bit field.
    pub fn fixed64_field(&mut self, n: u32, v: u64) {
        self.tag(n, 1);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// The bytes written.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}
