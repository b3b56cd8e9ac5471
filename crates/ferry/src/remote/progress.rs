//! Byte progress of one transfer: how much of a body a remote has sent so
//! far (each service reports it where its bytes leave: a streamed request
//! body, a finished part or block, a copied chunk), and how much of a
//! download has been read.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Where a transfer reports how many bytes of its body have moved so far
/// *in this attempt*: a retried request starts again from 0, so a sink
/// that sums attempts keeps the largest value it was told. Cloned into a
/// [`crate::remote::PutRequest`]; does nothing unless the caller gave a
/// sink ([`TransferProgress::new`]).
#[derive(Clone, Default)]
pub struct TransferProgress(Option<Arc<dyn Fn(u64) + Send + Sync>>);

impl std::fmt::Debug for TransferProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "TransferProgress(reported)"
        } else {
            "TransferProgress(none)"
        })
    }
}

impl TransferProgress {
    /// Reports to `sink`, called with the bytes moved so far in the
    /// current attempt (from any thread, often; keep it cheap).
    pub fn new(sink: impl Fn(u64) + Send + Sync + 'static) -> Self {
        TransferProgress(Some(Arc::new(sink)))
    }

    /// Reports nowhere.
    pub fn none() -> Self {
        TransferProgress(None)
    }

    /// True when someone listens.
    pub fn is_reported(&self) -> bool {
        self.0.is_some()
    }

    /// `bytes` of the body have moved so far in this attempt.
    pub fn moved(&self, bytes: u64) {
        if let Some(sink) = &self.0 {
            sink(bytes);
        }
    }

    /// A counter starting at 0 for one attempt: `add` the bytes of each
    /// piece as it goes.
    pub fn attempt(&self) -> Attempt {
        Attempt {
            progress: self.clone(),
            moved: 0,
        }
    }

    /// `reader`, reporting the bytes read through it (a download).
    pub fn reader<R>(&self, reader: R) -> CountingReader<R> {
        CountingReader {
            inner: reader,
            attempt: self.attempt(),
        }
    }
}

/// The running count of one attempt ([`TransferProgress::attempt`]).
#[derive(Debug)]
pub struct Attempt {
    progress: TransferProgress,
    moved: u64,
}

impl Attempt {
    /// `n` more bytes moved.
    pub fn add(&mut self, n: u64) {
        if n > 0 {
            self.moved += n;
            self.progress.moved(self.moved);
        }
    }
}

/// A reader that reports the bytes read through it.
#[derive(Debug)]
pub struct CountingReader<R> {
    inner: R,
    attempt: Attempt,
}

impl<R: AsyncRead + Unpin> AsyncRead for CountingReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let n = buf.filled().len() - before;
            self.attempt.add(n as u64);
        }
        polled
    }
}
