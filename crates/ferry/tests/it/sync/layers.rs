//! Test layers over a remote: a third party that writes at the worst moment,
//! a lost answer (crash between push and record), and an outage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use ferry::remote::layer::Layer;
use ferry::remote::{
    Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind, RemoteObject,
    RemoteReader, SharedRemote,
};

type Hook = Box<dyn Fn(String) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// Runs `hook(key)` right before forwarding the first HEAD or PUT of each key
/// in `keys`: the last moment a third party can write before our push. (A
/// store that enforces preconditions sees the PUT first; one whose
/// preconditions ferry emulates sees the checking HEAD first. A write landing
/// between that HEAD and the PUT is the emulation's documented race.)
pub struct Interposer {
    pub inner: SharedRemote,
    pub keys: Mutex<Vec<String>>,
    pub hook: Hook,
}

impl std::fmt::Debug for Interposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interposer")
    }
}

/// Lets the first put of a key succeed on the store but reports a failure.
#[derive(Debug)]
pub struct LoseAnswer {
    pub inner: SharedRemote,
    pub armed: AtomicBool,
}

/// Fails every request once `after` requests have been made, until healed.
#[derive(Debug)]
pub struct Outage {
    pub inner: SharedRemote,
    pub after: u64,
    pub seen: AtomicU64,
    pub healed: AtomicBool,
}

impl Interposer {
    async fn fire(&self, key: &str) {
        let fire = {
            let mut keys = self.keys.lock().unwrap();
            let pos = keys.iter().position(|k| *k == key);
            pos.map(|i| keys.remove(i)).is_some()
        };
        if fire {
            (self.hook)(key.to_owned()).await;
        }
    }
}

#[async_trait::async_trait]
impl Layer for Interposer {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }

    async fn head(&self, k: &str) -> Result<Option<RemoteObject>, RemoteError> {
        self.fire(k).await;
        self.inner.head(k).await
    }
    async fn put(
        &self,
        r: &PutRequest,
        b: RemoteBody,
        c: Precondition,
    ) -> Result<String, RemoteError> {
        self.fire(&r.key).await;
        self.inner.put(r, b, c).await
    }
}

#[async_trait::async_trait]
impl Layer for LoseAnswer {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }

    async fn put(
        &self,
        r: &PutRequest,
        b: RemoteBody,
        c: Precondition,
    ) -> Result<String, RemoteError> {
        let result = self.inner.put(r, b, c).await;
        if result.is_ok()
            && !r.key.starts_with(".ferry/")
            && self.armed.swap(false, Ordering::SeqCst)
        {
            return Err(RemoteError::new(
                RemoteErrorKind::Retryable,
                self.inner.endpoint(),
                "connection reset (test: answer lost)",
            ));
        }
        result
    }
}

impl Outage {
    fn gate(&self) -> Result<(), RemoteError> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        if n >= self.after && !self.healed.load(Ordering::SeqCst) {
            Err(RemoteError::new(
                RemoteErrorKind::Unreachable,
                self.inner.endpoint(),
                "connection refused (test outage)",
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Layer for Outage {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }

    async fn list_page(
        &self,
        p: &str,
        t: Option<String>,
    ) -> Result<ferry::remote::RemotePage, RemoteError> {
        self.gate()?;
        self.inner.list_page(p, t).await
    }
    async fn head(&self, k: &str) -> Result<Option<RemoteObject>, RemoteError> {
        self.gate()?;
        self.inner.head(k).await
    }
    async fn get(&self, k: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        self.gate()?;
        self.inner.get(k).await
    }
    async fn put(
        &self,
        r: &PutRequest,
        b: RemoteBody,
        c: Precondition,
    ) -> Result<String, RemoteError> {
        self.gate()?;
        self.inner.put(r, b, c).await
    }
    async fn delete(&self, k: &str, c: Precondition) -> Result<(), RemoteError> {
        self.gate()?;
        self.inner.delete(k, c).await
    }
}
