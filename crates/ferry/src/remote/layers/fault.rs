//! Fault injection: a layer that fails a share of requests, for tests of
//! what sync does when the network misbehaves.
//!
//! A fault either fails the request before it reaches the store, or lets it
//! run and then loses the answer (the store changed, the caller hears an
//! error), which is the case crash-idempotent pushes must handle.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::remote::layer::Layer;
use crate::remote::{
    Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind, RemoteObject,
    RemoteReader,
};

/// Wraps a remote and fails `rate` of its requests (seeded, reproducible).
#[derive(Debug)]
pub struct Faulty {
    inner: Arc<dyn Remote>,
    rate: f64,
    rng: Mutex<StdRng>,
    injected: AtomicU64,
}

enum Fault {
    None,
    Before,
    After,
}

impl Faulty {
    /// Fails `rate` (0.0..=1.0) of requests, choosing with a PRNG seeded by `seed`.
    pub fn new(inner: Arc<dyn Remote>, rate: f64, seed: u64) -> Self {
        Faulty {
            inner,
            rate,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            injected: AtomicU64::new(0),
        }
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn roll(&self) -> Fault {
        let Ok(mut rng) = self.rng.lock() else {
            return Fault::None;
        };
        if rng.random_bool(self.rate.clamp(0.0, 1.0)) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            if rng.random_bool(0.5) {
                Fault::Before
            } else {
                Fault::After
            }
        } else {
            Fault::None
        }
    }

    fn error(&self, when: &str) -> RemoteError {
        let kind = if when == "before" {
            RemoteErrorKind::Unreachable
        } else {
            RemoteErrorKind::Retryable
        };
        RemoteError::new(
            kind,
            self.inner.endpoint(),
            format!("injected fault ({when} the request)"),
        )
    }

    async fn run<T, Fut>(&self, fut: Fut) -> Result<T, RemoteError>
    where
        Fut: std::future::Future<Output = Result<T, RemoteError>>,
    {
        match self.roll() {
            Fault::None => fut.await,
            Fault::Before => Err(self.error("before")),
            Fault::After => {
                let _ = fut.await;
                Err(self.error("after"))
            }
        }
    }
}

#[async_trait::async_trait]
impl Layer for Faulty {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<crate::remote::RemotePage, RemoteError> {
        self.run(self.inner.list_page(prefix, token)).await
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        self.run(self.inner.head(key)).await
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        self.run(self.inner.get(key)).await
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        self.run(self.inner.put(req, body, cond)).await
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        self.run(self.inner.delete(key, cond)).await
    }
}
