//! Streaming bodies: empty, multi-GiB, failing, and at the inline boundary.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use ferry::{Body, Bucket, ContentHash, Error, PutOptions};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::{
    blob_files, blob_path, new_bucket, pseudo_random, reopen, tmp_files, XorShift, INLINE,
};

/// What a [`Generator`] produced, known once it reached its end.
type Produced = Arc<Mutex<Option<(blake3::Hash, u64)>>>;

/// A deterministic pseudo-random stream of `len` bytes that hashes what it
/// hands out, so huge bodies never sit in memory. After `fail_at` bytes (if
/// set) it returns an error instead.
struct Generator {
    rng: XorShift,
    remaining: u64,
    produced: u64,
    hasher: blake3::Hasher,
    done: Produced,
    fail_at: Option<u64>,
    /// Most bytes handed out per read (to exercise short reads).
    max_read: usize,
}

impl Generator {
    fn new(len: u64, seed: u64) -> (Self, Produced) {
        let done = Produced::default();
        let generator = Generator {
            rng: XorShift::new(seed),
            remaining: len,
            produced: 0,
            hasher: blake3::Hasher::new(),
            done: done.clone(),
            fail_at: None,
            max_read: 1 << 20,
        };
        (generator, done)
    }

    fn failing_at(mut self, at: u64) -> Self {
        self.fail_at = Some(at);
        self
    }

    fn max_read(mut self, n: usize) -> Self {
        self.max_read = n;
        self
    }
}

impl AsyncRead for Generator {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(at) = this.fail_at {
            if this.produced >= at {
                return Poll::Ready(Err(io::Error::other("the generator broke on purpose")));
            }
        }
        if this.remaining == 0 {
            let mut done = this.done.lock().unwrap();
            if done.is_none() {
                *done = Some((this.hasher.finalize(), this.produced));
            }
            return Poll::Ready(Ok(()));
        }
        let mut n = (this.remaining.min(buf.remaining() as u64) as usize).min(this.max_read);
        if let Some(at) = this.fail_at {
            n = n.min((at - this.produced) as usize);
        }
        // Whole words keep the generator cheap; only the stream's tail is short.
        if n >= 8 {
            n -= n % 8;
        }
        let out = buf.initialize_unfilled_to(n);
        this.rng.fill(out);
        this.hasher.update(out);
        buf.advance(n);
        this.remaining -= n as u64;
        this.produced += n as u64;
        Poll::Ready(Ok(()))
    }
}

/// A reader over `data` that hands out at most `max` bytes per read.
fn trickle(data: Vec<u8>, max: usize) -> impl AsyncRead + Send + Unpin + 'static {
    struct Trickle(io::Cursor<Vec<u8>>, usize);
    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = &mut *self;
            let pos = this.0.position() as usize;
            let data = this.0.get_ref();
            let n = (data.len() - pos).min(buf.remaining()).min(this.1);
            buf.put_slice(&data[pos..pos + n]);
            this.0.set_position((pos + n) as u64);
            Poll::Ready(Ok(()))
        }
    }
    Trickle(io::Cursor::new(data), max)
}

/// Streams `key` back, returning the BLAKE3 hash and length of what came out.
async fn stream_back(bucket: &Bucket, key: &str) -> (ferry::ObjectMeta, blake3::Hash, u64) {
    let mut obj = bucket.get(key).await.unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = obj.body.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    (obj.meta, hasher.finalize(), total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_byte_stream_round_trips() {
    let (_tmp, bucket) = new_bucket().await;
    let meta = bucket
        .put(
            "empty",
            Body::from_reader(tokio::io::empty()),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, 0);
    assert_eq!(meta.hash, ContentHash::of(b""));
    let (got, data) = bucket.get_bytes("empty").await.unwrap();
    assert_eq!(got, meta);
    assert!(data.is_empty());
    let (_, hash, len) = stream_back(&bucket, "empty").await;
    assert_eq!((hash, len), (blake3::hash(b""), 0));
    // A generator of length zero behaves the same.
    let (generator, done) = Generator::new(0, 1);
    let meta = bucket
        .put(
            "empty2",
            Body::from_reader(generator),
            PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, 0);
    assert_eq!(done.lock().unwrap().unwrap(), (blake3::hash(b""), 0));
    assert!(blob_files(bucket.dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_chunk_stream_round_trips_with_matching_hash() {
    // Many chunks and a short tail; the 4 GiB run is in the heavy tier.
    const LEN: u64 = (48 << 20) + 123;
    let (_tmp, bucket) = new_bucket().await;
    let (generator, done) = Generator::new(LEN, 2024);
    let meta = bucket
        .put(
            "huge/stream.bin",
            Body::from_reader(generator),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let (expected_hash, produced) = done.lock().unwrap().expect("the generator reached its end");
    assert_eq!(produced, LEN);
    assert_eq!(meta.size, LEN);
    assert_eq!(meta.hash, ContentHash::from(expected_hash));
    assert_eq!(meta.content_type, "application/octet-stream");
    assert_eq!(
        std::fs::metadata(blob_path(bucket.dir(), &meta.hash))
            .unwrap()
            .len(),
        LEN,
        "the blob file holds the whole stream"
    );
    assert!(tmp_files(bucket.dir()).is_empty());

    let (got_meta, out_hash, out_len) = stream_back(&bucket, "huge/stream.bin").await;
    assert_eq!(got_meta, meta);
    assert_eq!(out_len, LEN);
    assert_eq!(out_hash, expected_hash);
    assert_eq!(
        bucket.head("huge/stream.bin").await.unwrap().hash,
        ContentHash::from(expected_hash)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_reader_makes_put_fail_and_leaves_nothing() {
    let (_tmp, bucket) = new_bucket().await;
    bucket
        .put("keep", "kept", PutOptions::default())
        .await
        .unwrap();
    // Fails after 3 MiB (well past the inline threshold, so a temp blob exists),
    // before the inline threshold, and at the very first read.
    for (i, fail_at) in [3 * 1024 * 1024 + 5, 1000, 0].into_iter().enumerate() {
        let key = format!("broken/{i}");
        let (generator, done) = Generator::new(10 * 1024 * 1024, 7);
        let body = Body::from_reader(generator.failing_at(fail_at));
        match bucket.put(&key, body, PutOptions::default()).await {
            Err(Error::Body { key: k, source }) => {
                assert_eq!(k, key);
                assert!(source.to_string().contains("broke on purpose"), "{source}");
            }
            other => panic!("fail at {fail_at}: expected Error::Body, got {other:?}"),
        }
        assert!(done.lock().unwrap().is_none());
        assert!(!bucket.exists(&key).await.unwrap(), "no object may be left");
        assert!(matches!(
            bucket.get(&key).await,
            Err(Error::NotFound { .. })
        ));
        assert!(
            tmp_files(bucket.dir()).is_empty(),
            "temp files left: {:?}",
            tmp_files(bucket.dir())
        );
    }
    // A failed overwrite keeps the old version.
    let (generator, _) = Generator::new(5 * 1024 * 1024, 8);
    let body = Body::from_reader(generator.failing_at(2 * 1024 * 1024));
    assert!(matches!(
        bucket.put("keep", body, PutOptions::default()).await,
        Err(Error::Body { .. })
    ));
    assert_eq!(&bucket.get_bytes("keep").await.unwrap().1[..], b"kept");

    let dir = bucket.dir().to_owned();
    let bucket = reopen(bucket).await;
    assert!(
        tmp_files(&dir).is_empty(),
        "temp files left after reopen: {:?}",
        tmp_files(&dir)
    );
    assert!(
        blob_files(&dir).is_empty(),
        "blobs left after reopen: {:?}",
        blob_files(&dir)
    );
    let keys: Vec<String> = bucket
        .list_all("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["keep"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_at_the_inline_boundary_round_trip_via_bytes_and_reader() {
    let (_tmp, bucket) = new_bucket().await;
    assert_eq!(bucket.config().inline_threshold, INLINE as u64);
    for (len, as_blob) in [
        (INLINE - 1, false),
        (INLINE, false),
        (INLINE + 1, true),
        (INLINE + 2, true),
    ] {
        let data = pseudo_random(len, len as u64);
        let hash = ContentHash::of(&data);
        let bodies: Vec<(&str, Body)> = vec![
            ("bytes", Body::from(data.clone())),
            ("cursor", Body::from_reader(io::Cursor::new(data.clone()))),
            ("trickle", Body::from_reader(trickle(data.clone(), 1000))),
            ("one-byte", Body::from_reader(trickle(data.clone(), 1))),
        ];
        for (how, body) in bodies {
            let key = format!("edge/{len}/{how}");
            let meta = bucket.put(&key, body, PutOptions::default()).await.unwrap();
            assert_eq!(meta.size, len as u64, "{key}");
            assert_eq!(meta.hash, hash, "{key}");
            assert_eq!(
                blob_path(bucket.dir(), &hash).is_file(),
                as_blob,
                "{key}: stored as a blob file only above the threshold"
            );
            let (got, bytes) = bucket.get_bytes(&key).await.unwrap();
            assert_eq!(got, meta, "{key}");
            assert!(bytes[..] == data[..], "{key}: content differs");
            let (_, streamed_hash, streamed_len) = stream_back(&bucket, &key).await;
            assert_eq!(ContentHash::from(streamed_hash), hash, "{key}");
            assert_eq!(streamed_len, len as u64, "{key}");
        }
    }
    // Only the two above-threshold contents became blob files (deduplicated).
    assert_eq!(blob_files(bucket.dir()).len(), 2);
    assert!(tmp_files(bucket.dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_body_of_several_chunks_with_short_reads_round_trips() {
    let (_tmp, bucket) = new_bucket().await;
    let len = 5 * 1024 * 1024 + 3;
    let (generator, done) = Generator::new(len, 99);
    let meta = bucket
        .put(
            "odd.bin",
            Body::from_reader(generator.max_read(12_345)),
            PutOptions::default(),
        )
        .await
        .unwrap();
    let (hash, produced) = done.lock().unwrap().unwrap();
    assert_eq!((meta.size, meta.hash), (produced, ContentHash::from(hash)));
    let (_, out_hash, out_len) = stream_back(&bucket, "odd.bin").await;
    assert_eq!((out_hash, out_len), (hash, len));
}
