//! Sealed blobs (format v1): STREAM-style chunked AEAD.
//!
//! ```text
//! header (24 bytes): "FRYB" | version = 1 | chunk exponent = 16 | 0 0 | nonce prefix (16 random bytes)
//! chunk i:           XChaCha20-Poly1305(content key, nonce_i, plaintext_i, aad)   (≤ 64 KiB + 16)
//! nonce_i:           prefix (16) | i as u32 big-endian (4) | 0 0 0 | last (1: final chunk, else 0)
//! aad:               header | caller's context (for example the object's keyed hash)
//! ```
//!
//! Every blob gets a fresh random prefix, so no (key, nonce) pair repeats.
//! The counter detects reordering, the last flag truncation (a stream that
//! ends without a final chunk is an error, and a final chunk followed by
//! more data too), and the caller's context binds a blob to its object, so
//! swapping two objects' bodies fails to open.

use std::io::{self, Read, Write};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use super::keys::Key;
use super::CryptoError;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
/// Header length.
pub const HEADER: usize = 24;
const MAGIC: &[u8; 4] = b"FRYB";

fn nonce(prefix: &[u8; 16], counter: u32, last: bool) -> XNonce {
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(prefix);
    n[16..20].copy_from_slice(&counter.to_be_bytes());
    n[23] = u8::from(last);
    *XNonce::from_slice(&n)
}

fn integrity(detail: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        CryptoError::Integrity(detail.into()),
    )
}

/// Seals a stream as it is written.
pub struct Sealer<W: Write> {
    out: W,
    cipher: XChaCha20Poly1305,
    prefix: [u8; 16],
    aad: Vec<u8>,
    counter: u32,
    buf: Vec<u8>,
}

impl<W: Write> Sealer<W> {
    /// Starts a sealed blob with a fresh random nonce prefix.
    pub fn new(key: &Key, context: &[u8], out: W) -> io::Result<Self> {
        Self::with_prefix(key, context, rand::random(), out)
    }

    /// Starts a sealed blob with the given prefix (known-answer tests only).
    pub fn with_prefix(
        key: &Key,
        context: &[u8],
        prefix: [u8; 16],
        mut out: W,
    ) -> io::Result<Self> {
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&[1, 16, 0, 0]);
        header.extend_from_slice(&prefix);
        out.write_all(&header)?;
        let mut aad = header;
        aad.extend_from_slice(context);
        Ok(Sealer {
            out,
            cipher: XChaCha20Poly1305::new((&key.0).into()),
            prefix,
            aad,
            counter: 0,
            buf: Vec::with_capacity(CHUNK + TAG),
        })
    }

    fn emit(&mut self, last: bool) -> io::Result<()> {
        let n = nonce(&self.prefix, self.counter, last);
        // Sealed in place: no allocation or copy per chunk.
        let tag = self
            .cipher
            .encrypt_in_place_detached(&n, &self.aad, &mut self.buf)
            .map_err(|_| io::Error::other("sealing failed"))?;
        self.out.write_all(&self.buf)?;
        self.out.write_all(&tag)?;
        self.buf.clear();
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| io::Error::other("blob too large to seal"))?;
        Ok(())
    }

    /// Seals the final chunk and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let total = data.len();
        while !data.is_empty() {
            // A full chunk is sealed only once more data arrives, so the
            // final chunk (possibly full) always carries the last flag.
            if self.buf.len() == CHUNK {
                self.emit(false)?;
            }
            let take = (CHUNK - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Opens a sealed stream as it is read; any tampering ends the stream with
/// an `InvalidData` error carrying [`CryptoError::Integrity`].
pub struct Opener<R: Read> {
    inner: R,
    cipher: XChaCha20Poly1305,
    prefix: [u8; 16],
    aad: Vec<u8>,
    counter: u32,
    /// One sealed chunk, opened in place: `plain` bytes of plaintext once
    /// opened.
    chunk: Vec<u8>,
    plain: usize,
    pos: usize,
    /// The byte read beyond a full chunk (to know whether it is the last).
    peeked: Option<u8>,
    done: bool,
    /// Set once a chunk failed: every later read fails too.
    failed: bool,
}

impl<R: Read> Opener<R> {
    /// Reads and checks the header.
    pub fn new(key: &Key, context: &[u8], mut inner: R) -> io::Result<Self> {
        let mut header = [0u8; HEADER];
        inner
            .read_exact(&mut header)
            .map_err(|_| integrity("the sealed blob is shorter than its header"))?;
        if &header[..4] != MAGIC {
            return Err(integrity("not a sealed blob (bad magic)"));
        }
        if header[4] != 1 || header[5] != 16 || header[6..8] != [0, 0] {
            return Err(integrity(format!(
                "unsupported sealed blob version {} / chunk {}",
                header[4], header[5]
            )));
        }
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&header[8..24]);
        let mut aad = header.to_vec();
        aad.extend_from_slice(context);
        Ok(Opener {
            inner,
            cipher: XChaCha20Poly1305::new((&key.0).into()),
            prefix,
            aad,
            counter: 0,
            chunk: vec![0u8; CHUNK + TAG],
            plain: 0,
            pos: 0,
            peeked: None,
            done: false,
            failed: false,
        })
    }

    /// Reads until `buf` is full or the input ends; returns the count.
    fn read_full(inner: &mut R, buf: &mut [u8]) -> io::Result<usize> {
        let mut have = 0;
        while have < buf.len() {
            match inner.read(&mut buf[have..]) {
                Ok(0) => break,
                Ok(n) => have += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(have)
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let full = CHUNK + TAG;
        self.plain = 0;
        self.pos = 0;
        let mut len = 0;
        if let Some(b) = self.peeked.take() {
            self.chunk[0] = b;
            len = 1;
        }
        len += Self::read_full(&mut self.inner, &mut self.chunk[len..full])?;
        // One byte beyond a full chunk tells whether more follow.
        let last = if len == full {
            let mut one = [0u8; 1];
            if Self::read_full(&mut self.inner, &mut one)? == 1 {
                self.peeked = Some(one[0]);
                false
            } else {
                true
            }
        } else {
            true
        };
        if len < TAG {
            return Err(integrity("the sealed blob is truncated"));
        }
        let n = nonce(&self.prefix, self.counter, last);
        let (body, tag) = self.chunk[..len].split_at_mut(len - TAG);
        let tag = Tag::clone_from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(&n, &self.aad, body, &tag)
            .map_err(|_| {
                integrity(format!(
                    "chunk {} failed authentication (modified, reordered, truncated or swapped)",
                    self.counter
                ))
            })?;
        self.plain = len - TAG;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| integrity("too many chunks"))?;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for Opener<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.plain {
                let n = (self.plain - self.pos).min(out.len());
                out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.failed {
                return Err(integrity("the sealed blob already failed to open"));
            }
            if self.done {
                return Ok(0);
            }
            if let Err(e) = self.next_chunk() {
                self.failed = true;
                return Err(e);
            }
        }
    }
}

/// Seals `data` in memory.
pub fn seal(key: &Key, context: &[u8], data: &[u8]) -> Vec<u8> {
    let mut s = match Sealer::new(
        key,
        context,
        Vec::with_capacity(data.len() + HEADER + TAG * (data.len() / CHUNK + 1)),
    ) {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    let _ = s.write_all(data);
    s.finish().unwrap_or_default()
}

/// Opens a sealed blob held in memory.
pub fn open(key: &Key, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let to_err = |e: io::Error| match e
        .into_inner()
        .and_then(|i| i.downcast::<CryptoError>().ok())
    {
        Some(c) => *c,
        None => CryptoError::Integrity("unreadable sealed blob".into()),
    };
    let mut o = Opener::new(key, context, sealed).map_err(to_err)?;
    let mut out = Vec::new();
    o.read_to_end(&mut out).map_err(to_err)?;
    Ok(out)
}
