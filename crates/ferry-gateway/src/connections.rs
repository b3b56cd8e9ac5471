//! The listener's side of the gateway: accepting connections (a cap on
//! how many are open, a backoff when `accept` fails) and the time limits
//! each connection lives within.
//!
//! Invariants:
//! - A connection that has not started a request within
//!   [`Limits::header_timeout`] is closed (this covers the protocol
//!   detection before hyper's own HTTP/1 header timeout applies); hyper
//!   closes an HTTP/1 connection whose next request head takes longer.
//! - A connection with no request running for [`Limits::idle_timeout`] is
//!   shut down gracefully (what is in flight finishes).
//! - A request body that sends nothing for [`Limits::body_timeout`] fails
//!   its request: the upload is not committed.
//! - At [`Limits::max_connections`] open connections, the oldest one that
//!   has not started a request yet gives way to the new one (a client
//!   opening connections and sending nothing, or half a head, cannot hold
//!   the gateway); when every one has, the new one is answered `503` and
//!   closed, with a log line (at most one per minute); serving TLS, it is
//!   closed without an answer (a plain one would not read as TLS).
//! - Serving TLS, the handshake must end within [`Limits::header_timeout`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long and how many: the gateway's limits on connections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The longest a request's head may take to arrive (also the longest
    /// an HTTP/1 connection waits for its next request).
    pub header_timeout: Duration,
    /// The longest a connection stays open with no request running.
    pub idle_timeout: Duration,
    /// The longest a request body may send nothing.
    pub body_timeout: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

type Resp = http::Response<s3s::Body>;
type Handled = Pin<Box<dyn Future<Output = Result<Resp, s3s::HttpError>> + Send>>;

/// What answers a request.
pub(crate) type Handler = Arc<dyn Fn(http::Request<s3s::Body>) -> Handled + Send + Sync>;

/// The answer to a connection over the cap.
fn busy() -> Vec<u8> {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                <Message>too many connections</Message></Error>";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\n\
         content-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The open connections, oldest first, with what their watchdogs read and
/// how to close them.
#[derive(Default)]
struct Open {
    next: u64,
    conns: BTreeMap<u64, (Arc<Activity>, Arc<tokio::sync::Notify>)>,
}

impl Open {
    fn add(&mut self, activity: Arc<Activity>, close: Arc<tokio::sync::Notify>) -> u64 {
        let id = self.next;
        self.next += 1;
        self.conns.insert(id, (activity, close));
        id
    }

    /// Closes the oldest connection that has not started a request (and
    /// forgets it); false when every one has.
    fn evict_waiting(&mut self) -> bool {
        let oldest = self
            .conns
            .iter()
            .find(|(_, (a, _))| a.started.load(Ordering::Relaxed) == 0)
            .map(|(id, _)| *id);
        match oldest.and_then(|id| self.conns.remove(&id)) {
            Some((_, close)) => {
                close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Accepts connections on `listener` and serves each with `handler`.
pub(crate) async fn accept(
    listener: tokio::net::TcpListener,
    limits: Limits,
    tls: Option<crate::tls::Tls>,
    handler: Handler,
) {
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let registry = Arc::new(std::sync::Mutex::new(Open::default()));
    let mut backoff = Duration::from_millis(5);
    let mut warned: Option<Instant> = None;
    let mut http =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    http.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(128)
        .max_header_list_size(64 << 10);
    let http = Arc::new(http);
    loop {
        let socket = match listener.accept().await {
            Ok((socket, _)) => {
                backoff = Duration::from_millis(5);
                socket
            }
            Err(e) => {
                // EMFILE and the like: wait for connections to close
                // rather than spin.
                tracing::warn!("accepting a connection failed ({e}); trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            // At the cap: the oldest connection still waiting for its
            // first request head gives way; the new one takes its slot
            // once it closed.
            Err(_)
                if registry
                    .lock()
                    .map(|mut o| o.evict_waiting())
                    .unwrap_or(false) =>
            {
                None
            }
            Err(_) => {
                busy_answer(socket, &limits, &tls, &mut warned);
                continue;
            }
        };
        let http = http.clone();
        let handler = handler.clone();
        let limits = limits.clone();
        let tls = tls.clone();
        let open = open.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            let permit = match permit {
                Some(p) => p,
                None => {
                    match tokio::time::timeout(Duration::from_secs(1), open.acquire_owned()).await {
                        Ok(Ok(p)) => p,
                        _ => return,
                    }
                }
            };
            let activity = Arc::new(Activity::default());
            let close = Arc::new(tokio::sync::Notify::new());
            let id = match registry.lock() {
                Ok(mut o) => o.add(activity.clone(), close.clone()),
                Err(_) => return,
            };
            let conn = Conn { activity, close };
            match tls {
                None => serve(&http, socket, &limits, handler, &conn).await,
                Some(tls) => {
                    let shake =
                        tokio::time::timeout(limits.header_timeout, tls.acceptor.accept(socket));
                    tokio::select! {
                        shaken = shake => match shaken {
                            Ok(Ok(stream)) => serve(&http, stream, &limits, handler, &conn).await,
                            Ok(Err(e)) => tracing::debug!("a TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!("a TLS handshake did not end in time"),
                        },
                        _ = conn.close.notified() => {}
                    }
                }
            }
            if let Ok(mut o) = registry.lock() {
                o.conns.remove(&id);
            }
            drop(permit);
        });
    }
}

/// Answers a connection over the cap (`503`, or a close when serving TLS).
fn busy_answer(
    socket: tokio::net::TcpStream,
    limits: &Limits,
    tls: &Option<crate::tls::Tls>,
    warned: &mut Option<Instant>,
) {
    if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
        tracing::warn!(
            "{} connections are open, the most allowed: new ones are answered 503 until some close",
            limits.max_connections
        );
        *warned = Some(Instant::now());
    }
    if tls.is_some() {
        drop(socket);
        return;
    }
    // Answered and closed by a short task of its own: the
    // request is drained for at most a second so the answer is
    // not lost to a reset.
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut socket = socket;
        let _ = socket.write_all(&busy()).await;
        let _ = socket.shutdown().await;
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let mut left = 64usize << 10;
            while left > 0 {
                match socket.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    });
}

/// What a connection's watchdog reads: requests started and running, and
/// when the last one started or ended (ms after `born`).
#[derive(Default)]
struct Activity {
    started: AtomicUsize,
    running: AtomicUsize,
    last_ms: AtomicU64,
}

/// One open connection: what its watchdog reads, and the signal that
/// closes it (it gave way to a newer one at the cap).
struct Conn {
    activity: Arc<Activity>,
    close: Arc<tokio::sync::Notify>,
}

async fn serve<S>(
    http: &hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    socket: S,
    limits: &Limits,
    handler: Handler,
    conn_of: &Conn,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let born = Instant::now();
    let activity = conn_of.activity.clone();
    let seen = activity.clone();
    let body_timeout = limits.body_timeout;
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let activity = seen.clone();
        activity.started.fetch_add(1, Ordering::Relaxed);
        activity.running.fetch_add(1, Ordering::Relaxed);
        let req = req.map(|b| s3s::Body::http_body(Timed::new(b, body_timeout)));
        let answered = handler(req);
        async move {
            let r = answered.await;
            activity
                .last_ms
                .store(born.elapsed().as_millis() as u64, Ordering::Relaxed);
            activity.running.fetch_sub(1, Ordering::Relaxed);
            r
        }
    });
    let conn = http
        .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
        .into_owned();
    tokio::pin!(conn);
    let tick = (limits.header_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(50));
    let mut ticks = tokio::time::interval(tick);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = conn_of.close.notified() => return,
            _ = ticks.tick() => {
                let now = born.elapsed();
                if activity.started.load(Ordering::Relaxed) == 0 {
                    if now > limits.header_timeout {
                        return;
                    }
                    continue;
                }
                let last = Duration::from_millis(activity.last_ms.load(Ordering::Relaxed));
                if !closing
                    && activity.running.load(Ordering::Relaxed) == 0
                    && now.saturating_sub(last) > limits.idle_timeout
                {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// A request body that fails when it sends nothing for a while.
struct Timed<B> {
    inner: B,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Timed<B> {
    fn new(inner: B, idle: Duration) -> Self {
        Timed {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<B> http_body::Body for Timed<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let me = self.get_mut();
        match Pin::new(&mut me.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + me.idle;
                me.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match me.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the request body sent nothing for {:?}",
                    me.idle
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
