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

mod bucket;
pub mod clock;
pub mod crypto;
mod engine;
mod error;
pub mod filter;
mod hash;
mod key;
mod metadata;
pub mod remote;
pub mod sim;
mod state;
mod store;
mod sync;

pub use engine::{events, schedule};
pub use sync::{journal, plan};

pub use bucket::cache::{CacheUsage, Eviction};
pub use bucket::rebuild::RebuildReport;
pub use bucket::setup::{check_new_bucket, check_remote, create_remote_base, NewKey};
pub use bucket::{
    Bucket, BucketConfig, GarbageReport, Object, PutCondition, PutOptions, INDEX_FILE,
};
pub use crypto::keyring::KeyFile;
pub use crypto::keyring::MAX_ENCRYPTED_KEY_LEN;
pub use crypto::keys::KdfParams;
pub use engine::events::{Event, SyncSummary};
pub use error::{Error, Result, StorageMode};
pub use filter::{Filter, FilterError};
pub use hash::{version_id, ContentHash, MetaDigest, ParseHashError};
pub use key::{validate_key, validate_key_bytes, KeyError, KeyRule, MAX_KEY_LEN, RESERVED_PREFIX};
pub use metadata::{
    content_type_for, from_headers, normalize_metadata, to_headers, Metadata, MetadataError,
    DEFAULT_CONTENT_TYPE, MAX_METADATA_BYTES, RESERVED_METADATA_PREFIX, STORE_METADATA_BYTES,
};
pub use state::{ParseStateError, SyncState};
pub use store::body::{Body, ObjectReader};
pub use store::index::{ObjectMeta, SCHEMA_VERSION};
pub use store::list::{ListOptions, ListPage};
pub use sync::rejoin::RejoinReport;
pub use sync::rekey::{RekeyProgressFn, RekeyReport, RekeyStep};
pub use sync::{
    ConflictInfo, DeleteLimit, DiffKind, Difference, GetOptions, Mismatch, ProgressFn, RemoteCheck,
    Repair, Residency, Resolution, ResolveOutcome, Status, SyncConfig, SyncIssue, SyncMode,
    SyncOptions, SyncProgress, SyncReport,
};
