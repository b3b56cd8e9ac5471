//! ferry: local-first object storage.
//!
//! A [`Bucket`] is a directory holding content-addressed blobs and a SQLite
//! index. Every read and write is local and works offline; writes return
//! only once they are durable. See `ARCHITECTURE.md` for the code map and
//! `docs/design.md` for the on-disk formats.
//!
//! ```no_run
//! # async fn demo() -> ferry::Result<()> {
//! use ferry::{Bucket, BucketConfig, PutOptions};
//! let bucket = Bucket::create("/tmp/demo/.ferry", BucketConfig::default()).await?;
//! bucket.put("notes/hello.txt", "hello", PutOptions::default()).await?;
//! let (meta, bytes) = bucket.get_bytes("notes/hello.txt").await?;
//! assert_eq!(&bytes[..], b"hello");
//! assert_eq!(meta.content_type, "text/plain");
//! # Ok(()) }
//! ```

mod blobs;
mod body;
mod bucket;
mod cache;
mod commit;
pub mod crypto;
mod encryption;
mod engine;
mod error;
pub mod events;
mod hash;
mod index;
pub mod journal;
mod key;
mod list;
mod metadata;
pub mod plan;
mod record;
pub mod remote;
pub mod schedule;
mod state;
mod sync;

pub use body::{Body, ObjectReader};
pub use bucket::{Bucket, BucketConfig, GarbageReport, Object, PutOptions, INDEX_FILE};
pub use cache::{CacheUsage, Eviction};
pub use crypto::keyring::KeyFile;
pub use crypto::keys::KdfParams;
pub use encryption::MAX_ENCRYPTED_KEY_LEN;
pub use error::{Error, Result};
pub use events::{Event, SyncSummary};
pub use hash::{version_id, ContentHash, MetaDigest, ParseHashError};
pub use index::{ObjectMeta, SCHEMA_VERSION};
pub use key::{validate_key, validate_key_bytes, KeyError, KeyRule, MAX_KEY_LEN, RESERVED_PREFIX};
pub use list::{ListOptions, ListPage};
pub use metadata::{
    content_type_for, normalize_metadata, Metadata, MetadataError, DEFAULT_CONTENT_TYPE,
    MAX_METADATA_BYTES, RESERVED_METADATA_PREFIX, STORE_METADATA_BYTES,
};
pub use state::{ParseStateError, SyncState};
pub use sync::{
    ConflictInfo, DeleteLimit, GetOptions, ProgressFn, Residency, Resolution, ResolveOutcome,
    Status, SyncConfig, SyncIssue, SyncMode, SyncOptions, SyncProgress, SyncReport,
};
