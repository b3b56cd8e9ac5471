//! The handle of a running engine, held by the bucket (a leaf: the bucket
//! holds it without depending on the engine).

use tokio::sync::watch;

/// A running engine: its stop signal and task.
#[derive(Debug)]
pub(crate) struct EngineHandle {
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}
