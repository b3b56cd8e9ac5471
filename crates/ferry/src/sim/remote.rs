//! The simulated remote: one in-memory store that every replica reaches
//! through its own gated handle. Each request stops at the gate and waits
//! for the scheduler's verdict (apply it, fail it before it applies, or
//! apply it and lose the answer), so the order in which the replicas'
//! requests reach the store, and what each one hears back, is the
//! scheduler's seeded choice, never thread timing.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::remote::memory::MemoryRemote;
use crate::remote::{
    Capabilities, Precondition, PutRequest, Remote, RemoteBody, RemoteError, RemoteErrorKind,
    RemoteObject, RemotePage, RemoteReader,
};

/// The endpoint every replica's handle names (probes and journal
/// positions are kept per endpoint).
pub(crate) const ENDPOINT: &str = "sim://store";

/// What the scheduler decides for a request waiting at the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Apply it and answer.
    Apply,
    /// Fail it before it reaches the store (a 503 or a timeout).
    FailBefore,
    /// Apply it, then lose the answer (the caller hears a timeout).
    LoseAnswer,
}

/// A message from a replica's task to the scheduler.
#[derive(Debug)]
pub(crate) enum Msg {
    /// Replica `actor` waits at the gate with request `what`.
    Blocked {
        actor: usize,
        what: String,
        reply: oneshot::Sender<Verdict>,
    },
    /// Replica `actor` finished its operation.
    Finished {
        actor: usize,
        outcome: Box<super::Outcome>,
    },
}

/// One replica's handle on the shared store.
#[derive(Debug)]
pub(crate) struct SimRemote {
    actor: usize,
    store: MemoryRemote,
    tx: mpsc::UnboundedSender<Msg>,
    /// Off while the scheduler itself drives the replica (setup, reopening,
    /// the final settling): requests then apply at once.
    gated: AtomicBool,
}

impl SimRemote {
    /// A handle for replica `actor`.
    pub fn new(actor: usize, store: MemoryRemote, tx: mpsc::UnboundedSender<Msg>) -> Self {
        SimRemote {
            actor,
            store,
            tx,
            gated: AtomicBool::new(false),
        }
    }

    /// Turns the gate on or off.
    pub fn set_gated(&self, on: bool) {
        self.gated.store(on, Ordering::SeqCst);
    }

    async fn gate(&self, what: String) -> Verdict {
        if !self.gated.load(Ordering::SeqCst) {
            return Verdict::Apply;
        }
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Msg::Blocked {
                actor: self.actor,
                what,
                reply,
            })
            .is_err()
        {
            return Verdict::FailBefore;
        }
        rx.await.unwrap_or(Verdict::FailBefore)
    }

    fn lost(&self, what: &str, applied: bool) -> RemoteError {
        RemoteError::new(
            if applied {
                RemoteErrorKind::Retryable
            } else {
                RemoteErrorKind::Unreachable
            },
            ENDPOINT,
            format!(
                "simulated fault on {what} ({})",
                if applied {
                    "applied, answer lost"
                } else {
                    "before it applied"
                }
            ),
        )
    }

    async fn run<T, F>(&self, what: String, f: F) -> Result<T, RemoteError>
    where
        F: std::future::Future<Output = Result<T, RemoteError>>,
    {
        match self.gate(what.clone()).await {
            Verdict::Apply => f.await,
            Verdict::FailBefore => Err(self.lost(&what, false)),
            Verdict::LoseAnswer => {
                let _ = f.await;
                Err(self.lost(&what, true))
            }
        }
    }
}

#[async_trait::async_trait]
impl Remote for SimRemote {
    fn endpoint(&self) -> String {
        ENDPOINT.into()
    }

    fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }

    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
    ) -> Result<RemotePage, RemoteError> {
        let what = format!("LIST {prefix:?} from {token:?}");
        self.run(what, self.store.list_page(prefix, token)).await
    }

    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, RemoteError> {
        self.run(format!("HEAD {key}"), self.store.head(key)).await
    }

    async fn get(&self, key: &str) -> Result<(RemoteObject, RemoteReader), RemoteError> {
        self.run(format!("GET {key}"), self.store.get(key)).await
    }

    async fn put(
        &self,
        req: &PutRequest,
        body: RemoteBody,
        cond: Precondition,
    ) -> Result<String, RemoteError> {
        let what = format!("PUT {} {cond:?}", req.key);
        self.run(what, self.store.put(req, body, cond)).await
    }

    async fn delete(&self, key: &str, cond: Precondition) -> Result<(), RemoteError> {
        let what = format!("DELETE {key} {cond:?}");
        self.run(what, self.store.delete(key, cond)).await
    }
}
