//! A layer that retries retryable failures with exponential backoff and
//! full jitter, up to `max_retries` times.
//!
//! A store that stopped answering (accepts the connection, or not even
//! that, and sends nothing) is not waited for again and again: an attempt
//! that failed only after the no-progress time limit (`stall`) is a
//! stall, and a request that stalled once gives up at the next failure,
//! and never retries past `budget` after it began. So a frozen store costs
//! one time limit plus a short budget, not the limit times every retry.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::remote::layer::Layer;
use crate::remote::{
    Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteObject, RemoteReader,
};

/// Backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff.
    pub base_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
    /// An attempt that fails after at least this long (the no-progress
    /// time limit) is a stall: not retried. `None`: every failure may be.
    pub stall: Option<Duration>,
    /// No retry starts later than this after the first attempt began,
    /// once an attempt stalled or failed as unreachable.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            stall: None,
            budget: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (0-based): a uniform draw from
    /// `0..=min(max_delay, base_delay * 2^attempt)` ("full jitter").
    pub fn delay(&self, attempt: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max_delay);
        let millis = cap.as_millis() as u64;
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }
}

/// Wraps a remote with retries.
#[derive(Debug)]
pub struct Retrying {
    inner: Arc<dyn Remote>,
    policy: RetryPolicy,
}

impl Retrying {
    /// Retries `inner`'s retryable failures per `policy`.
    pub fn new(inner: Arc<dyn Remote>, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    /// Runs `op` (the request `what` on `key`), retrying what may be
    /// retried; every attempt is logged at debug level with its timing.
    async fn run<T, F, Fut>(
        &self,
        what: &'static str,
        key: &str,
        mut op: F,
    ) -> Result<T, RemoteError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, RemoteError>>,
    {
        let mut attempt = 0;
        let first = std::time::Instant::now();
        loop {
            let started = std::time::Instant::now();
            let result = op().await;
            let took = started.elapsed();
            let ms = format!("{:.1}", took.as_secs_f64() * 1e3);
            match &result {
                Ok(_) => tracing::debug!(request = what, key, attempt, ms = %ms, "ok"),
                Err(e) => {
                    tracing::debug!(request = what, key, attempt, ms = %ms, error = %e, "failed")
                }
            }
            match result {
                Err(e) if e.is_retryable() && attempt < self.policy.max_retries => {
                    let wait = self.policy.delay(attempt);
                    let stalled =
                        e.is_no_answer() && self.policy.stall.is_some_and(|limit| took >= limit);
                    let down = stalled || e.kind == crate::remote::RemoteErrorKind::Unreachable;
                    if stalled || (down && first.elapsed() + wait > self.policy.budget) {
                        tracing::info!(request = what, key, attempt, error = %e, "not retrying: the remote does not answer");
                        return Err(e);
                    }
                    tracing::info!(request = what, key, attempt, wait_ms = wait.as_millis() as u64, error = %e, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait::async_trait]
impl Layer for Retrying {
    fn inner(&self) -> &dyn Remote {
        self.inner.as_ref()
    }

    async fn get_prefix(
        &self,
        key: &str,
        len: u64,
    ) -> Result<Option<(RemoteObject, bytes::Bytes)>, RemoteError> {
        self.run("get-prefix", key, || self.inner.get_prefix(key, len))
            .await
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<crate::remote::RemotePage, RemoteError> {
        self.run("list", prefix, || {
            self.inner.list_page(prefix, token.clone())
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        self.run("head", key, || self.inner.head(key)).await
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        self.run("get", key, || self.inner.get(key)).await
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        self.run("put", &req.key, || {
            self.inner.put(req, body.clone(), cond.clone())
        })
        .await
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        self.run("delete", key, || self.inner.delete(key, cond.clone()))
            .await
    }

    async fn create_base(&self) -> Result<bool, RemoteError> {
        self.run("create-base", "", || self.inner.create_base())
            .await
    }
}
