//! The sync behaviour suite: the same scenarios against every remote kind.
//!
//! Each backend provides a fresh, empty remote location per test and a way to
//! read and write it as a plain (non-ferry) client would.

/// Runs each named scenario `async fn name(&dyn Backend)` of the calling
/// module as a test against the backend `$make` builds, in a module `$backend`.
macro_rules! suite {
    ($backend:ident: $make:expr; $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = $make;
                    super::$name(&backend).await;
                }
            )*
        }
    };
}

pub mod backends;
mod convergence;
mod fidelity;
mod findings;
mod gcs_auth;
mod journal;
pub mod layers;
mod paging;
mod review;
mod scenarios;

use ferry::remote::SharedRemote;
use ferry::{Bucket, BucketConfig, SyncConfig};
use tempfile::TempDir;

/// What a plain client sees of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plain {
    pub data: Vec<u8>,
    pub content_type: Option<String>,
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// A remote location for one test.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// A new handle on the location (as a second device would build one).
    fn remote(&self) -> SharedRemote;
    /// Writes like a plain S3 client (no ferry metadata).
    async fn foreign_put(&self, key: &str, data: &[u8], content_type: &str);
    /// Reads like a plain S3 client.
    async fn foreign_get(&self, key: &str) -> Option<Plain>;
    /// Keys present, as a plain listing shows them.
    async fn foreign_keys(&self) -> Vec<String>;
    /// Copies every stored object (`.ferry/` too) into files under `dir`,
    /// and their names into `dir/NAMES`, for stores whose bytes are not
    /// files already (the leak scan reads files). Others: nothing.
    async fn dump_to(&self, dir: &std::path::Path) {
        let _ = dir;
    }
}

/// A replica: a bucket in its own directory, attached to the backend.
pub struct Replica {
    pub bucket: Bucket,
    _dir: TempDir,
}

/// A replica whose every run is a full reconcile (it sees what plain
/// clients write at once); the journal scenarios use `replica_with`.
pub async fn replica(backend: &dyn Backend) -> Replica {
    replica_with(
        backend,
        SyncConfig {
            full_sync_interval_secs: 0,
            ..SyncConfig::default()
        },
    )
    .await
}

pub async fn replica_with(backend: &dyn Backend, config: SyncConfig) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let bucket = Bucket::create(dir.path().join(".ferry"), BucketConfig::default())
        .await
        .unwrap();
    // Small planning windows: every scenario crosses window boundaries.
    let config = SyncConfig {
        retry_base_delay_ms: 5,
        window_keys: 3,
        ..config
    };
    bucket.set_sync_config(config).await.unwrap();
    bucket.attach(backend.remote()).await.unwrap();
    Replica { bucket, _dir: dir }
}
