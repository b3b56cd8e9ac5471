//! Sealed blobs: STREAM-style chunked AEAD. Format v2 is written; v1 is
//! still read.
//!
//! ```text
//! header (24 bytes): "FRYB" | version | chunk exponent = 16 | aead | 0 | salt or nonce prefix (16)
//!
//! v2 (aead 1 = AES-256-GCM, 2 = ChaCha20-Poly1305):
//!   blob key:  BLAKE3 keyed with the content key over "ferry blob key v2" | aead | salt
//!   chunk i:   AEAD(blob key, nonce_i, plaintext_i, aad)                    (≤ 64 KiB + 16)
//!   nonce_i:   i as u32 big-endian (4) | 0 × 7 | last (1: final chunk, else 0)   (12 bytes)
//! v1 (aead byte 0): XChaCha20-Poly1305 under the content key itself,
//!   nonce_i = prefix (16) | i as u32 big-endian | 0 0 0 | last           (24 bytes)
//! both:        aad = header | caller's context (for example the object's keyed hash)
//! ```
//!
//! v2 derives a key per blob from a fresh random 128-bit salt, so a counter
//! nonce is safe (no key ever sees the same nonce twice) and the AEAD can
//! be AES-256-GCM, several times faster than XChaCha20 where the CPU has
//! AES instructions (ChaCha20-Poly1305 elsewhere; the header says which
//! and readers take both). The counter detects reordering, the last flag
//! truncation (a stream that ends without a final chunk is an error, and a
//! final chunk followed by more data too), and the caller's context binds a
//! blob to its object, so swapping two objects' bodies fails to open.
//!
//! Chunks are independent, so large blobs under a software AEAD
//! (ChaCha20-Poly1305, v1's XChaCha20) are sealed and opened a batch of
//! chunks at a time on several cores (rayon's pool). AES-256-GCM with AES
//! instructions runs on one core: it seals at memory speed there (measured
//! 8 GB/s sealing, 11 GB/s opening, the bare AEAD at 18 GB/s), and a second
//! core only adds hand-offs (0.7× measured; `ferry-bench --suite crypto`).
//!
//! What each library clears: aws-lc frees its AEAD key schedules with
//! `OPENSSL_cleanse`; RustCrypto's XChaCha20-Poly1305 (v1 reads) zeroizes
//! its key on drop (`zeroize` feature); ferry's own key bytes and the
//! derived blob key are `Zeroizing`, and so are the plaintext buffers of
//! sealing and opening, which take their full size at once so no
//! reallocation leaves plaintext behind in freed memory.

use std::io::{self, Read, Write};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use rayon::prelude::*;
use zeroize::Zeroizing;

use super::keys::Key;
use super::CryptoError;

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
/// Header length (both versions).
pub const HEADER: usize = 24;
const MAGIC: &[u8; 4] = b"FRYB";
/// Chunks sealed or opened together (on several cores when there are).
const BATCH: usize = 16;

/// The AEAD of a v2 blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aead {
    /// AES-256-GCM (header byte 1): where the CPU has AES instructions.
    Aes256Gcm,
    /// ChaCha20-Poly1305 (header byte 2): everywhere else.
    ChaCha20Poly1305,
}

impl Aead {
    /// AES-256-GCM when this CPU has AES and carry-less multiply
    /// instructions, else ChaCha20-Poly1305.
    pub fn preferred() -> Aead {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
            {
                return Aead::Aes256Gcm;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("aes")
                && std::arch::is_aarch64_feature_detected!("pmull")
            {
                return Aead::Aes256Gcm;
            }
        }
        Aead::ChaCha20Poly1305
    }

    fn id(self) -> u8 {
        match self {
            Aead::Aes256Gcm => 1,
            Aead::ChaCha20Poly1305 => 2,
        }
    }

    fn from_id(id: u8) -> Option<Aead> {
        match id {
            1 => Some(Aead::Aes256Gcm),
            2 => Some(Aead::ChaCha20Poly1305),
            _ => None,
        }
    }
}

/// How chunks are spread over cores: batches of `batch` chunks, sealed or
/// opened in parallel when `parallel`.
#[derive(Debug, Clone, Copy)]
struct Cores {
    batch: usize,
    parallel: bool,
}

impl Cores {
    /// Parallel batches when the AEAD, not memory, is the bottleneck.
    fn for_cipher(cipher: &Cipher) -> Cores {
        if cipher.parallel() {
            Cores::all()
        } else {
            Cores::one()
        }
    }

    fn one() -> Cores {
        Cores {
            batch: 1,
            parallel: false,
        }
    }

    fn all() -> Cores {
        Cores {
            batch: BATCH,
            parallel: true,
        }
    }

    /// Runs `f(i, piece)` on every piece of a batch, on several cores when
    /// it pays; results in piece order.
    fn each<T: Send>(
        self,
        pieces: &mut [&mut [u8]],
        f: impl Fn(usize, &mut [u8]) -> io::Result<T> + Sync,
    ) -> Vec<io::Result<T>> {
        let one = |(i, piece): (usize, &mut &mut [u8])| f(i, piece);
        if self.parallel && pieces.len() > 1 {
            pieces.par_iter_mut().enumerate().map(one).collect()
        } else {
            pieces.iter_mut().enumerate().map(one).collect()
        }
    }
}

/// The key schedule of one blob.
enum Cipher {
    V1 {
        cipher: Box<XChaCha20Poly1305>,
        prefix: [u8; 16],
    },
    V2(LessSafeKey),
}

fn v2_key(content: &Key, aead: Aead, salt: &[u8; 16]) -> io::Result<LessSafeKey> {
    let mut input = Vec::with_capacity(17 + 1 + 16);
    input.extend_from_slice(b"ferry blob key v2");
    input.push(aead.id());
    input.extend_from_slice(salt);
    let key = Zeroizing::new(*blake3::keyed_hash(&content.0, &input).as_bytes());
    let alg = match aead {
        Aead::Aes256Gcm => &AES_256_GCM,
        Aead::ChaCha20Poly1305 => &CHACHA20_POLY1305,
    };
    let unbound =
        UnboundKey::new(alg, &key[..]).map_err(|_| io::Error::other("AEAD key setup failed"))?;
    Ok(LessSafeKey::new(unbound))
}

impl Cipher {
    /// Whether batches are worth spreading over cores: the AEAD, not
    /// memory, is the bottleneck.
    fn parallel(&self) -> bool {
        match self {
            Cipher::V1 { .. } => true,
            Cipher::V2(key) => key.algorithm() != &AES_256_GCM,
        }
    }

    fn v2_nonce(counter: u32, last: bool) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&counter.to_be_bytes());
        n[11] = u8::from(last);
        Nonce::assume_unique_for_key(n)
    }

    fn v1_nonce(prefix: &[u8; 16], counter: u32, last: bool) -> XNonce {
        let mut n = [0u8; 24];
        n[..16].copy_from_slice(prefix);
        n[16..20].copy_from_slice(&counter.to_be_bytes());
        n[23] = u8::from(last);
        *XNonce::from_slice(&n)
    }

    /// Seals `buf` in place; returns the tag.
    fn seal(&self, counter: u32, last: bool, aad: &[u8], buf: &mut [u8]) -> io::Result<[u8; TAG]> {
        let mut out = [0u8; TAG];
        match self {
            Cipher::V2(key) => {
                let tag = key
                    .seal_in_place_separate_tag(Self::v2_nonce(counter, last), Aad::from(aad), buf)
                    .map_err(|_| io::Error::other("sealing failed"))?;
                out.copy_from_slice(tag.as_ref());
            }
            Cipher::V1 { cipher, prefix } => {
                let tag = cipher
                    .encrypt_in_place_detached(&Self::v1_nonce(prefix, counter, last), aad, buf)
                    .map_err(|_| io::Error::other("sealing failed"))?;
                out.copy_from_slice(&tag);
            }
        }
        Ok(out)
    }

    /// Opens `sealed` (ciphertext then tag) in place; the plaintext is its
    /// first `len - TAG` bytes.
    fn open(&self, counter: u32, last: bool, aad: &[u8], sealed: &mut [u8]) -> io::Result<()> {
        let len = sealed.len();
        if len < TAG {
            return Err(integrity("the sealed blob is truncated"));
        }
        let ok = match self {
            Cipher::V2(key) => key
                .open_in_place(Self::v2_nonce(counter, last), Aad::from(aad), sealed)
                .is_ok(),
            Cipher::V1 { cipher, prefix } => {
                let (body, tag) = sealed.split_at_mut(len - TAG);
                let tag = Tag::clone_from_slice(tag);
                cipher
                    .decrypt_in_place_detached(
                        &Self::v1_nonce(prefix, counter, last),
                        aad,
                        body,
                        &tag,
                    )
                    .is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(integrity(format!(
                "chunk {counter} failed authentication (modified, reordered, truncated or swapped)"
            )))
        }
    }
}

/// Makes room for `cap` bytes in a buffer that holds plaintext without
/// leaving a copy behind: a `Vec` that grows frees its old allocation
/// as it is, so the bytes move to a fresh `Zeroizing` allocation and the
/// old one is cleared when it drops. Buffers get their full size at once,
/// so this runs at most once per buffer.
fn reserve_zeroizing(buf: &mut Zeroizing<Vec<u8>>, cap: usize) {
    if buf.capacity() < cap {
        let mut bigger = Zeroizing::new(Vec::with_capacity(cap));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
}

fn integrity(detail: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        CryptoError::Integrity(detail.into()),
    )
}

/// Seals a stream as it is written (format v2).
pub struct Sealer<W: Write> {
    out: W,
    cipher: Cipher,
    aad: Vec<u8>,
    counter: u32,
    /// Up to a batch of chunks of plaintext, sealed together.
    buf: Zeroizing<Vec<u8>>,
    cores: Cores,
}

impl<W: Write> Sealer<W> {
    /// Starts a sealed blob (v2, this CPU's preferred AEAD, a fresh random
    /// salt), on every core for large blobs.
    pub fn new(key: &Key, context: &[u8], out: W) -> io::Result<Self> {
        let salt = super::random::bytes().map_err(io::Error::other)?;
        Self::with_salt(key, context, Aead::preferred(), salt, out)
    }

    /// Starts a v2 sealed blob with the given AEAD and salt (known-answer
    /// tests, benchmarks).
    pub fn with_salt(
        key: &Key,
        context: &[u8],
        aead: Aead,
        salt: [u8; 16],
        out: W,
    ) -> io::Result<Self> {
        let cipher = Cipher::V2(v2_key(key, aead, &salt)?);
        Self::start(cipher, [2, 16, aead.id(), 0], salt, context, out)
    }

    /// Starts a v1 sealed blob (XChaCha20-Poly1305 under the content key,
    /// random nonce prefix): kept to build v1 data in tests of reading it.
    #[doc(hidden)]
    pub fn v1_with_prefix(key: &Key, context: &[u8], prefix: [u8; 16], out: W) -> io::Result<Self> {
        let cipher = Cipher::V1 {
            cipher: Box::new(XChaCha20Poly1305::new((&key.0).into())),
            prefix,
        };
        Self::start(cipher, [1, 16, 0, 0], prefix, context, out)
    }

    fn start(
        cipher: Cipher,
        format: [u8; 4],
        salt: [u8; 16],
        context: &[u8],
        mut out: W,
    ) -> io::Result<Self> {
        let mut header = Vec::with_capacity(HEADER + context.len());
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&format);
        header.extend_from_slice(&salt);
        out.write_all(&header)?;
        let mut aad = header;
        aad.extend_from_slice(context);
        let cores = Cores::for_cipher(&cipher);
        Ok(Sealer {
            out,
            cipher,
            aad,
            counter: 0,
            buf: Zeroizing::new(Vec::new()),
            cores,
        })
    }

    /// Seals on the calling thread only (benchmarks of one core).
    pub fn single_threaded(mut self) -> Self {
        self.cores = Cores::one();
        self
    }

    /// Seals batches on every core whatever the AEAD (benchmarks).
    pub fn multi_threaded(mut self) -> Self {
        self.cores = Cores::all();
        self
    }

    /// Seals the buffered chunks; with `last`, the final one carries the
    /// last flag (an empty buffer then seals one empty final chunk).
    fn emit(&mut self, last: bool) -> io::Result<()> {
        let mut pieces: Vec<&mut [u8]> = self.buf.chunks_mut(CHUNK).collect();
        let mut empty: [u8; 0] = [];
        if pieces.is_empty() {
            pieces.push(&mut empty);
        }
        let n = pieces.len();
        let first = self.counter;
        let (cipher, aad) = (&self.cipher, &self.aad[..]);
        let tags = self.cores.each(&mut pieces, |i, piece| {
            cipher.seal(first + i as u32, last && i + 1 == n, aad, piece)
        });
        for (piece, tag) in pieces.iter().zip(tags) {
            self.out.write_all(piece)?;
            self.out.write_all(&tag?)?;
        }
        self.buf.clear();
        self.counter = u32::try_from(n)
            .ok()
            .and_then(|n| self.counter.checked_add(n))
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
        let cap = CHUNK * self.cores.batch;
        // The whole batch at once: the buffer never reallocates.
        reserve_zeroizing(&mut self.buf, cap);
        while !data.is_empty() {
            // Full chunks are sealed only once more data arrives, so the
            // final chunk (possibly full) always carries the last flag.
            if self.buf.len() == cap {
                self.emit(false)?;
            }
            let take = (cap - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Opens a sealed stream (v2 or v1) as it is read; any tampering ends the
/// stream with an `InvalidData` error carrying [`CryptoError::Integrity`].
pub struct Opener<R: Read> {
    inner: R,
    cipher: Cipher,
    aad: Vec<u8>,
    counter: u32,
    /// A batch of sealed chunks, opened in place.
    sealed: Zeroizing<Vec<u8>>,
    /// The plaintext ranges of `sealed`, in order, and the one being read.
    ranges: Vec<(usize, usize)>,
    range: usize,
    pos: usize,
    /// The byte read beyond a full batch (to know whether more follow).
    peeked: Option<u8>,
    done: bool,
    /// Set once a chunk failed: every later read fails too.
    failed: bool,
    cores: Cores,
}

impl<R: Read> Opener<R> {
    /// Reads and checks the header.
    pub fn new(key: &Key, context: &[u8], mut inner: R) -> io::Result<Self> {
        let mut header = [0u8; HEADER];
        Self::read_full(&mut inner, &mut header)?
            .eq(&HEADER)
            .then_some(())
            .ok_or_else(|| integrity("the sealed blob is shorter than its header"))?;
        if &header[..4] != MAGIC {
            return Err(integrity("not a sealed blob (bad magic)"));
        }
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&header[8..24]);
        let cipher = match (header[4], header[5], header[6], header[7]) {
            (1, 16, 0, 0) => Cipher::V1 {
                cipher: Box::new(XChaCha20Poly1305::new((&key.0).into())),
                prefix: salt,
            },
            (2, 16, id, 0) if Aead::from_id(id).is_some() => {
                let aead = Aead::from_id(id).ok_or_else(|| integrity("unknown AEAD"))?;
                Cipher::V2(v2_key(key, aead, &salt)?)
            }
            (v, c, a, _) => {
                return Err(integrity(format!(
                    "unsupported sealed blob version {v} / chunk {c} / AEAD {a}"
                )))
            }
        };
        let mut aad = header.to_vec();
        aad.extend_from_slice(context);
        let cores = Cores::for_cipher(&cipher);
        Ok(Opener {
            inner,
            cipher,
            aad,
            counter: 0,
            sealed: Zeroizing::new(Vec::new()),
            ranges: Vec::new(),
            range: 0,
            pos: 0,
            peeked: None,
            done: false,
            failed: false,
            cores,
        })
    }

    /// Opens on the calling thread only (benchmarks of one core).
    pub fn single_threaded(mut self) -> Self {
        self.cores = Cores::one();
        self
    }

    /// Opens batches on every core whatever the AEAD (benchmarks).
    pub fn multi_threaded(mut self) -> Self {
        self.cores = Cores::all();
        self
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

    /// Reads and opens the next batch of chunks.
    fn next_batch(&mut self) -> io::Result<()> {
        // One chunk first (most blobs are small), then whole batches.
        let chunks = if self.counter == 0 {
            1
        } else {
            self.cores.batch
        };
        let full = (CHUNK + TAG) * chunks;
        // Room for a whole batch from the first: opened chunks are
        // plaintext, and a buffer that grew would leave them behind.
        reserve_zeroizing(&mut self.sealed, (CHUNK + TAG) * self.cores.batch);
        self.sealed.resize(full, 0);
        let mut len = 0;
        if let Some(b) = self.peeked.take() {
            self.sealed[0] = b;
            len = 1;
        }
        len += Self::read_full(&mut self.inner, &mut self.sealed[len..full])?;
        // One byte beyond a full batch tells whether more follow.
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
        let mut pieces: Vec<&mut [u8]> = self.sealed[..len].chunks_mut(CHUNK + TAG).collect();
        let n = pieces.len();
        let first = self.counter;
        let (cipher, aad) = (&self.cipher, &self.aad[..]);
        let opened = self.cores.each(&mut pieces, |i, piece| {
            cipher.open(first + i as u32, last && i + 1 == n, aad, piece)
        });
        // The first failure in stream order is the one reported.
        opened.into_iter().collect::<io::Result<Vec<()>>>()?;
        self.ranges.clear();
        let mut at = 0;
        for piece in &pieces {
            self.ranges.push((at, at + piece.len() - TAG));
            at += piece.len();
        }
        self.range = 0;
        self.pos = self.ranges.first().map_or(0, |r| r.0);
        self.counter = u32::try_from(n)
            .ok()
            .and_then(|n| self.counter.checked_add(n))
            .ok_or_else(|| integrity("too many chunks"))?;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for Opener<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(&(start, end)) = self.ranges.get(self.range) {
                let pos = self.pos.max(start);
                if pos < end {
                    let n = (end - pos).min(out.len());
                    out[..n].copy_from_slice(&self.sealed[pos..pos + n]);
                    self.pos = pos + n;
                    return Ok(n);
                }
                self.range += 1;
                continue;
            }
            if self.failed {
                return Err(integrity("the sealed blob already failed to open"));
            }
            if self.done {
                return Ok(0);
            }
            if let Err(e) = self.next_batch() {
                self.failed = true;
                self.ranges.clear();
                return Err(e);
            }
        }
    }
}

/// Seals `data` in memory (format v2).
pub fn seal(key: &Key, context: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let fail = |e: io::Error| CryptoError::Integrity(format!("sealing failed: {e}"));
    let mut s = Sealer::new(
        key,
        context,
        Vec::with_capacity(data.len() + HEADER + TAG * (data.len() / CHUNK + 1)),
    )
    .map_err(fail)?;
    s.write_all(data).map_err(fail)?;
    s.finish().map_err(fail)
}

/// Seals `data` in memory as format v1 did (XChaCha20-Poly1305, random
/// nonce prefix): kept to build v1 data in tests of reading it.
#[doc(hidden)]
pub fn seal_v1(key: &Key, context: &[u8], data: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let fail = |e: io::Error| CryptoError::Integrity(format!("sealing failed: {e}"));
    let prefix = super::random::bytes()?;
    let mut s = Sealer::v1_with_prefix(key, context, prefix, Vec::new()).map_err(fail)?;
    s.write_all(data).map_err(fail)?;
    s.finish().map_err(fail)
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
    // The plaintext is shorter than the sealed bytes: `out` never grows
    // (which would leave copies of it in freed memory).
    let mut out = Vec::with_capacity(sealed.len());
    o.read_to_end(&mut out).map_err(to_err)?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Plaintext buffers take their whole size at the first write (or
    /// batch) and never move: a `Vec` that grows would free its old
    /// allocation, plaintext and all, without clearing it.
    #[test]
    fn plaintext_buffers_never_reallocate() {
        let key = Key([7; 32]);
        for aead in [Aead::Aes256Gcm, Aead::ChaCha20Poly1305] {
            let mut s = Sealer::with_salt(&key, b"ctx", aead, [1; 16], Vec::new())
                .unwrap()
                .multi_threaded();
            s.write_all(b"a few bytes").unwrap();
            let (at, cap) = (s.buf.as_ptr(), s.buf.capacity());
            assert!(cap >= CHUNK * BATCH, "{cap}");
            for _ in 0..BATCH * 3 {
                s.write_all(&[9u8; CHUNK / 2 + 1]).unwrap();
                assert_eq!(s.buf.as_ptr(), at, "the sealing buffer moved");
            }
            let sealed = s.finish().unwrap();

            let mut o = Opener::new(&key, b"ctx", &sealed[..])
                .unwrap()
                .multi_threaded();
            let mut out = [0u8; 1000];
            o.read_exact(&mut out).unwrap();
            let at = o.sealed.as_ptr();
            let mut rest = Vec::new();
            while o.read(&mut out).unwrap() > 0 {
                assert_eq!(o.sealed.as_ptr(), at, "the opening buffer moved");
                rest.push(());
            }
            assert!(rest.len() > 10);
        }
    }
}
