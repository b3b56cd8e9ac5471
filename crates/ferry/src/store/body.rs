//! Object bodies: what `put` accepts and the verifying stream `get` returns.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::error::Error;
use crate::hash::ContentHash;
use crate::store::blobs::CHUNK;

/// The content given to `put`: bytes in memory or a stream of any size.
pub struct Body(pub(crate) BodyInner);

pub(crate) enum BodyInner {
    Bytes(Bytes),
    Reader(Box<dyn AsyncRead + Send + Unpin>),
}

impl Body {
    /// A body read from a stream; memory use stays bounded whatever its size.
    pub fn from_reader(reader: impl AsyncRead + Send + Unpin + 'static) -> Self {
        Body(BodyInner::Reader(Box::new(reader)))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Body(BodyInner::Bytes(Bytes::new()))
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            BodyInner::Bytes(b) => write!(f, "Body::Bytes({} bytes)", b.len()),
            BodyInner::Reader(_) => f.write_str("Body::Reader"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body(BodyInner::Bytes(b))
    }
}
impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body(BodyInner::Bytes(v.into()))
    }
}
impl From<&'static [u8]> for Body {
    fn from(v: &'static [u8]) -> Self {
        Body(BodyInner::Bytes(Bytes::from_static(v)))
    }
}
impl From<&'static str> for Body {
    fn from(v: &'static str) -> Self {
        Body(BodyInner::Bytes(Bytes::from_static(v.as_bytes())))
    }
}
impl From<String> for Body {
    fn from(v: String) -> Self {
        Body(BodyInner::Bytes(v.into()))
    }
}

/// A message from the blob-reading thread.
enum Chunk {
    Data(Bytes),
    /// All data was sent and its hash matched.
    Verified,
    Failed(io::Error),
}

/// An object's content as an `AsyncRead`, verified against its hash.
///
/// Content stored in files is read by a blocking task that hashes as it goes;
/// if the hash or length does not match, the stream ends with an error
/// (kind `InvalidData`, carrying [`Error::Corrupt`]) instead of a clean EOF,
/// so corrupted bytes never look like a successful read. At most a few
/// chunks are buffered, whatever the object's size.
pub struct ObjectReader {
    current: Bytes,
    rx: Option<mpsc::Receiver<Chunk>>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("buffered", &self.current.len())
            .finish()
    }
}

pub(crate) fn corrupt(key: &str, detail: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        Error::Corrupt {
            key: key.to_owned(),
            detail: detail.into(),
        },
    )
}

impl ObjectReader {
    /// A reader over content already in memory (and already verified).
    pub(crate) fn memory(data: Bytes) -> Self {
        ObjectReader {
            current: data,
            rx: None,
        }
    }

    /// Streams the blob file `file` for `key`, verifying `hash` and `size`.
    /// In an encrypted bucket (`keys`), the file is a sealed blob: it is
    /// opened as it streams and checked against the keyed hash.
    pub(crate) fn file(
        file: File,
        path: PathBuf,
        key: String,
        hash: ContentHash,
        size: u64,
        keys: Option<std::sync::Arc<crate::crypto::keyring::Keyring>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let pumped = match &keys {
                None => pump(
                    file,
                    zeroize::Zeroizing::new(blake3::Hasher::new()),
                    &tx,
                    &key,
                    &hash,
                    size,
                ),
                Some(k) => match k.blob_opener(file) {
                    Ok(opener) => pump(opener, k.hasher(), &tx, &key, &hash, size),
                    Err(e) => Err(e),
                },
            };
            let end = match pumped.map_err(|e| sealed_error(&key, e)) {
                Ok(true) => Chunk::Verified,
                Ok(false) => return, // the reader was dropped
                Err(e) if e.kind() == io::ErrorKind::InvalidData => Chunk::Failed(e),
                Err(e) => Chunk::Failed(io::Error::new(
                    e.kind(),
                    Error::Io {
                        context: "reading blob",
                        path,
                        source: e,
                    },
                )),
            };
            let _ = tx.blocking_send(end);
        });
        ObjectReader {
            current: Bytes::new(),
            rx: Some(rx),
        }
    }
}

/// An integrity failure of a sealed blob, as the corrupt-object error naming `key`.
pub(crate) fn sealed_error(key: &str, e: io::Error) -> io::Error {
    let is_crypto = e
        .get_ref()
        .is_some_and(|i| i.is::<crate::crypto::CryptoError>());
    if is_crypto {
        corrupt(key, e.to_string())
    } else {
        e
    }
}

/// Reads, hashes and sends the content; Ok(false) when the receiver went away.
fn pump(
    mut file: impl Read,
    mut hasher: zeroize::Zeroizing<blake3::Hasher>,
    tx: &mpsc::Sender<Chunk>,
    key: &str,
    hash: &ContentHash,
    size: u64,
) -> io::Result<bool> {
    let mut total = 0u64;
    loop {
        let mut buf = BytesMut::zeroed(CHUNK);
        let mut filled = 0;
        while filled < CHUNK {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        hasher.update(&buf);
        total += filled as u64;
        if total > size {
            return Err(corrupt(
                key,
                format!("blob is longer than the recorded {size} bytes"),
            ));
        }
        if tx.blocking_send(Chunk::Data(buf.freeze())).is_err() {
            return Ok(false);
        }
    }
    if total != size {
        return Err(corrupt(
            key,
            format!("blob has {total} bytes, the index records {size}"),
        ));
    }
    if ContentHash::from(hasher.finalize()) != *hash {
        return Err(corrupt(key, "content does not match its hash"));
    }
    Ok(true)
}

impl AsyncRead for ObjectReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                let chunk = self.current.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            let Some(rx) = self.rx.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Chunk::Data(data))) => self.current = data,
                Poll::Ready(Some(Chunk::Verified)) => {
                    self.rx = None;
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Some(Chunk::Failed(e))) => {
                    self.rx = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(None) => {
                    self.rx = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob reader stopped before verifying the content",
                    )));
                }
            }
        }
    }
}
