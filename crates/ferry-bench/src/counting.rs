//! A remote layer that counts requests, for the requests-per-operation
//! figures.

use std::sync::atomic::{AtomicU64, Ordering};

use ferry::remote::layer::Layer;
use ferry::remote::{
    Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteObject, RemoteReader,
    SharedRemote,
};

/// Requests made through every `Counting` layer of this process.
pub static REQUESTS: AtomicU64 = AtomicU64::new(0);

/// Requests so far.
pub fn requests() -> u64 {
    REQUESTS.load(Ordering::SeqCst)
}

/// Counts each request to `0` in [`REQUESTS`].
#[derive(Debug)]
pub struct Counting(pub SharedRemote);

fn seen() {
    REQUESTS.fetch_add(1, Ordering::SeqCst);
}

#[async_trait::async_trait]
impl Layer for Counting {
    fn inner(&self) -> &dyn Remote {
        self.0.as_ref()
    }
    async fn list_page(
        &self,
        p: &str,
        t: Option<String>,
    ) -> Result<ferry::remote::RemotePage, RemoteError> {
        seen();
        self.0.list_page(p, t).await
    }
    async fn head(&self, k: &str) -> Result<Option<RemoteObject>, RemoteError> {
        seen();
        self.0.head(k).await
    }
    async fn get(&self, k: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        seen();
        self.0.get(k).await
    }
    async fn get_prefix(
        &self,
        k: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, bytes::Bytes)>, RemoteError> {
        seen();
        self.0.get_prefix(k, len).await
    }
    async fn put(
        &self,
        r: &PutRequest,
        b: RemoteBody,
        c: Precondition,
    ) -> Result<String, RemoteError> {
        seen();
        self.0.put(r, b, c).await
    }
    async fn delete(&self, k: &str, c: Precondition) -> Result<(), RemoteError> {
        seen();
        self.0.delete(k, c).await
    }
    /// At least one request (S3 lists the multipart uploads).
    async fn cleanup(&self, device: &str) -> Result<u64, RemoteError> {
        seen();
        self.0.cleanup(device).await
    }
}
