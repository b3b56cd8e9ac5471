//! The forwarding base for remote layers: a layer implements [`Layer`],
//! names the remote it wraps, and overrides only the methods it changes;
//! every other method (ranged reads included) reaches the wrapped remote
//! unchanged. Every [`Layer`] is a [`Remote`].

use std::fmt;

use bytes::Bytes;

use super::{
    Capabilities, MetadataPlace, Precondition, PutRequest, Remote, RemoteBody, RemoteError,
    RemoteObject, RemotePage, RemoteReader,
};

/// A remote wrapped around another. Each method's default forwards to
/// [`Layer::inner`]; see [`Remote`] for what each one does.
#[allow(missing_docs)]
#[async_trait::async_trait]
pub trait Layer: Send + Sync + fmt::Debug {
    /// The wrapped remote.
    fn inner(&self) -> &dyn Remote;

    fn endpoint(&self) -> String {
        self.inner().endpoint()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<RemotePage, RemoteError> {
        self.inner().list_page(prefix, token).await
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        self.inner().head(key).await
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        self.inner().get(key).await
    }

    async fn get_prefix(
        &self,
        key: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, Bytes)>, RemoteError> {
        self.inner().get_prefix(key, len).await
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        self.inner().put(req, body, cond).await
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        self.inner().delete(key, cond).await
    }

    async fn put_multipart_probe(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Option<Result<String, RemoteError>> {
        self.inner().put_multipart_probe(req, body, cond).await
    }

    fn may_write_multipart(&self, size: u64, cond: &Precondition) -> bool {
        self.inner().may_write_multipart(size, cond)
    }

    fn refuses(&self, key: &str) -> Option<String> {
        self.inner().refuses(key)
    }

    async fn cleanup(&self, device: &str) -> Result<u64, RemoteError> {
        self.inner().cleanup(device).await
    }

    async fn create_base(&self) -> Result<bool, RemoteError> {
        self.inner().create_base().await
    }

    fn metadata_place(&self) -> MetadataPlace {
        self.inner().metadata_place()
    }
}

#[async_trait::async_trait]
impl<L: Layer> Remote for L {
    fn endpoint(&self) -> String {
        Layer::endpoint(self)
    }

    fn capabilities(&self) -> Capabilities {
        Layer::capabilities(self)
    }

    // `list` is the trait's default: this layer's own pages, collected.

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<RemotePage, RemoteError> {
        Layer::list_page(self, prefix, token).await
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        Layer::head(self, key).await
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        Layer::get(self, key).await
    }

    async fn get_prefix(
        &self,
        key: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, Bytes)>, RemoteError> {
        Layer::get_prefix(self, key, len).await
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        Layer::put(self, req, body, cond).await
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        Layer::delete(self, key, cond).await
    }

    async fn put_multipart_probe(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Option<Result<String, RemoteError>> {
        Layer::put_multipart_probe(self, req, body, cond).await
    }

    fn may_write_multipart(&self, size: u64, cond: &Precondition) -> bool {
        Layer::may_write_multipart(self, size, cond)
    }

    fn refuses(&self, key: &str) -> Option<String> {
        Layer::refuses(self, key)
    }

    async fn cleanup(&self, device: &str) -> Result<u64, RemoteError> {
        Layer::cleanup(self, device).await
    }

    async fn create_base(&self) -> Result<bool, RemoteError> {
        Layer::create_base(self).await
    }

    fn metadata_place(&self) -> MetadataPlace {
        Layer::metadata_place(self)
    }
}
