//! `--suite serve`, its last phase: a fresh `ferry serve` under hostile
//! load, its peak RSS (`VmHWM`) beside a 128 MiB budget. At once: HTTP/2
//! (h2c, prior knowledge) stream floods, an unsigned 300 MB form POST,
//! 1 MiB headers, 10,000 headers, an unsigned chunked PUT that never
//! ends, and 2,000 slowloris connections (more than the gateway's cap),
//! reopened whenever the gateway closes them; meanwhile one signed SDK
//! PUT+GET, and another once the attack is over.
//!
//! Every attack is raw bytes on a socket (no client library sends them);
//! every body is streamed from one reused buffer, never held whole; every
//! wait has a deadline, so the phase ends in well under a minute whatever
//! the gateway does. What each attack was answered is printed too (info
//! rows): the budget is the only verdict besides the signed requests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::serve_bench::{client, peak_rss_mib, start_ferry};
use crate::Row;

/// The budget of the gateway's peak RSS under this load (issue 23).
const BUDGET_MIB: f64 = 128.0;
/// Slowloris connections kept open (fewer if the fd limit is low).
const SLOWLORIS: usize = 2_000;
/// How long the slowloris connections are kept up. Past the gateway's
/// 10 s header timeout, so its cutting them (and their reopening) is in.
const HOLD: Duration = Duration::from_secs(15);
/// Parallel copies of each header attack.
const COPIES: usize = 16;
/// The form POST's declared (and streamed) length.
const FORM_BYTES: u64 = 300_000_000;
/// Where the never-ending chunked PUT stops sending.
const CHUNKED_CUT: u64 = 64 << 20;
/// Streams of the rapid-reset flood, and of the flood that never reads.
const H2_RESET_STREAMS: u32 = 50_000;
const H2_OPEN_STREAMS: u32 = 5_000;
/// The most any one attack waits for its answer.
const ATTACK_WAIT: Duration = Duration::from_secs(15);
/// The signed object's size.
const LEGIT_BYTES: usize = 64 << 10;
/// Each body write.
const BLOCK: usize = 64 << 10;

/// What one raw request was answered.
struct Answer {
    /// The status of the answer; `None`: closed (or timed out) without one.
    status: Option<u16>,
    /// Bytes written after the head before the answer (or the close):
    /// what the gateway read, plus what the loopback buffers held.
    sent: u64,
    /// When the answer, or the close, came.
    after: Duration,
    /// Neither came within the wait.
    timed_out: bool,
}

impl Answer {
    fn label(&self) -> String {
        match (self.status, self.timed_out) {
            (Some(s), _) => s.to_string(),
            (None, true) => "no answer".into(),
            (None, false) => "closed".into(),
        }
    }
}

/// "431 ×16", "431 ×12, closed ×4".
fn summary(answers: &[Answer]) -> String {
    let mut counts = BTreeMap::new();
    for a in answers {
        *counts.entry(a.label()).or_insert(0usize) += 1;
    }
    counts
        .iter()
        .map(|(l, n)| format!("{l} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn status_of(raw: &[u8]) -> Option<u16> {
    let line = raw.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    if !line.starts_with("HTTP/") {
        return None;
    }
    line.split_whitespace().nth(1)?.parse().ok()
}

/// How a body is put on the wire.
#[derive(Clone, Copy)]
enum Framing {
    /// As is (the head gives its length).
    Plain,
    /// In 64 KiB chunks, never the last one: a body that never ends.
    Chunked,
}

/// Sends `head`, then `body` bytes of `fill` framed so (stopping when the
/// gateway answers or closes), and waits at most `wait` for the answer.
async fn attack(
    addr: &str,
    head: Vec<u8>,
    body: u64,
    framing: Framing,
    fill: u8,
    wait: Duration,
) -> Result<Answer> {
    let started = Instant::now();
    let sock = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .context("connecting (timed out)")?
        .context("connecting")?;
    let (mut rd, mut wr) = sock.into_split();
    let sent = AtomicU64::new(0);
    let block = vec![fill; BLOCK];
    let write = async {
        if wr.write_all(&head).await.is_ok() {
            let mut left = body;
            while left > 0 {
                let n = left.min(BLOCK as u64) as usize;
                let written = match framing {
                    Framing::Plain => wr.write_all(&block[..n]).await,
                    Framing::Chunked => {
                        let mut frame = format!("{n:x}\r\n").into_bytes();
                        frame.extend_from_slice(&block[..n]);
                        frame.extend_from_slice(b"\r\n");
                        wr.write_all(&frame).await
                    }
                };
                if written.is_err() {
                    break;
                }
                sent.fetch_add(n as u64, Ordering::Relaxed);
                left -= n as u64;
            }
        }
        // Kept, not dropped: dropping it would end the body (a FIN).
        wr
    };
    let read = async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return status_of(&got),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.contains(&b'\n') {
                        return status_of(&got);
                    }
                }
            }
        }
    };
    tokio::pin!(write, read);
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    let mut writer = None;
    let (status, timed_out) = loop {
        tokio::select! {
            w = &mut write, if writer.is_none() => writer = Some(w),
            s = &mut read => break (s, false),
            _ = &mut deadline => break (None, true),
        }
    };
    Ok(Answer {
        status,
        sent: sent.load(Ordering::Relaxed),
        after: started.elapsed(),
        timed_out,
    })
}

/// `COPIES` of one header attack at once.
async fn copies(addr: &str, head: Vec<u8>) -> Result<Vec<Answer>> {
    let runs = (0..COPIES).map(|_| {
        attack(
            addr,
            head.clone(),
            0,
            Framing::Plain,
            0,
            Duration::from_secs(5),
        )
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

/// A GET with a 1 MiB header.
fn big_header(addr: &str) -> Vec<u8> {
    let mut r = format!("GET /bench/x HTTP/1.1\r\nhost: {addr}\r\nx-big: ").into_bytes();
    r.extend(std::iter::repeat_n(b'a', 1 << 20));
    r.extend_from_slice(b"\r\n\r\n");
    r
}

/// A GET with 10,000 headers.
fn many_headers(addr: &str) -> Vec<u8> {
    let mut r = format!("GET /bench/x HTTP/1.1\r\nhost: {addr}\r\n");
    for i in 0..10_000 {
        r.push_str(&format!("x-h{i}: v\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// An unsigned form POST declaring `FORM_BYTES`; its file part is
/// streamed to that length.
fn form_post(addr: &str) -> (Vec<u8>, u64) {
    let part = "--XX\r\ncontent-disposition: form-data; name=\"key\"\r\n\r\nx\r\n--XX\r\n\
                content-disposition: form-data; name=\"file\"; filename=\"x\"\r\n\
                content-type: application/octet-stream\r\n\r\n";
    let head = format!(
        "POST /bench HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: multipart/form-data; boundary=XX\r\ncontent-length: {FORM_BYTES}\r\n\r\n{part}"
    );
    (head.into_bytes(), FORM_BYTES - part.len() as u64)
}

/// An unsigned PUT whose chunked body never ends.
fn chunked_put(addr: &str) -> Vec<u8> {
    format!(
        "PUT /bench/hostile/endless HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\n\
         x-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\r\n"
    )
    .into_bytes()
}

/// What the slowloris connections met, counted as they go.
#[derive(Default)]
struct Slowloris {
    /// Connections made.
    opened: AtomicUsize,
    /// Connections that could not be made.
    failed: AtomicUsize,
    /// Answered 503 (the connection cap).
    refused: AtomicUsize,
    /// Answered with another status.
    answered: AtomicUsize,
    /// Closed by the gateway without an answer (its header timeout).
    cut: AtomicUsize,
    /// Still open, unanswered, when the attack ended.
    held: AtomicUsize,
    /// The longest a connection was held before the gateway cut it.
    longest_ms: AtomicU64,
}

/// One slowloris client until `until`: a request head sent to its last
/// header, then a byte of it a second; reopened 1 s after the gateway
/// answers or closes it.
async fn slowloris(addr: Arc<str>, until: Instant, t: Arc<Slowloris>) {
    let head = format!("GET /bench/slow HTTP/1.1\r\nhost: {addr}\r\nx-a: ");
    while Instant::now() < until {
        let connect = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&*addr));
        let Ok(Ok(mut sock)) = connect.await else {
            t.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        t.opened.fetch_add(1, Ordering::Relaxed);
        let opened = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let mut alive = sock.write_all(head.as_bytes()).await.is_ok();
        while alive {
            tokio::select! {
                r = sock.read(&mut buf) => match r {
                    Ok(n) if n > 0 => {
                        got.extend_from_slice(&buf[..n]);
                        alive = !got.contains(&b'\n');
                    }
                    _ => alive = false,
                },
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if Instant::now() >= until {
                        t.held.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    alive = sock.write_all(b"a").await.is_ok();
                }
            }
        }
        match status_of(&got) {
            Some(503) => t.refused.fetch_add(1, Ordering::Relaxed),
            Some(_) => t.answered.fetch_add(1, Ordering::Relaxed),
            None => {
                let ms = opened.elapsed().as_millis() as u64;
                t.longest_ms.fetch_max(ms, Ordering::Relaxed);
                t.cut.fetch_add(1, Ordering::Relaxed)
            }
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The soft limit on this process's open files.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One HTTP/2 frame onto `out`.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

const H2_HEADERS: u8 = 0x1;
const H2_RST_STREAM: u8 = 0x3;
const H2_SETTINGS: u8 = 0x4;
const H2_GOAWAY: u8 = 0x7;

/// An unsigned `GET path`, HPACK-coded without the dynamic table:
/// `:method GET` and `:scheme http` from the static table, `:path` and
/// `:authority` as literals with indexed names.
fn h2_get(authority: &str, path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x04, path.len() as u8];
    b.extend_from_slice(path.as_bytes());
    b.extend_from_slice(&[0x01, authority.len() as u8]);
    b.extend_from_slice(authority.as_bytes());
    b
}

/// What one h2c connection met.
#[derive(Default)]
struct H2 {
    /// Streams opened.
    streams: AtomicU64,
    /// Responses (HEADERS frames) received.
    responses: AtomicU64,
    /// RST_STREAM frames received, and the error code of the last.
    resets: AtomicU64,
    reset_code: AtomicU64,
    /// GOAWAY's error code (+1: 0 is none) and its last stream id.
    goaway: AtomicU64,
    goaway_last: AtomicU64,
    /// The gateway closed the connection.
    closed: AtomicBool,
}

impl H2 {
    fn goaway(&self) -> Option<(u64, u64)> {
        match self.goaway.load(Ordering::Relaxed) {
            0 => None,
            code => Some((code - 1, self.goaway_last.load(Ordering::Relaxed))),
        }
    }

    fn describe(&self) -> String {
        let ended = match self.goaway() {
            Some((code, last)) => format!("GOAWAY {}, last stream {last}", h2_error(code)),
            None if self.closed.load(Ordering::Relaxed) => "closed, no GOAWAY".into(),
            None => "no GOAWAY".into(),
        };
        let resets = match self.resets.load(Ordering::Relaxed) {
            0 => "0 reset".to_owned(),
            n => format!(
                "{n} reset ({})",
                h2_error(self.reset_code.load(Ordering::Relaxed))
            ),
        };
        format!(
            "{ended}; {} answered, {resets}",
            self.responses.load(Ordering::Relaxed)
        )
    }
}

fn h2_error(code: u64) -> String {
    match code {
        0x0 => "NO_ERROR".into(),
        0x1 => "PROTOCOL_ERROR".into(),
        0x2 => "INTERNAL_ERROR".into(),
        0x7 => "REFUSED_STREAM".into(),
        0x8 => "CANCEL".into(),
        0xb => "ENHANCE_YOUR_CALM".into(),
        c => format!("0x{c:x}"),
    }
}

/// Reads one frame: (type, flags, payload); `None` at the end.
async fn read_frame<R: AsyncReadExt + Unpin>(rd: &mut R) -> Option<(u8, u8, Vec<u8>)> {
    let mut h = [0u8; 9];
    rd.read_exact(&mut h).await.ok()?;
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await.ok()?;
    Some((h[3], h[4], payload))
}

/// An h2c (prior knowledge) connection opening `streams` unsigned GETs
/// as fast as it can, each reset at once if `reset` (rapid reset), or
/// left open, their answers never granted flow-control window. `None`:
/// the gateway does not speak h2c.
async fn h2_flood(addr: &str, streams: u32, reset: bool) -> Result<Option<H2>> {
    let mut sock = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .context("connecting (timed out)")?
        .context("connecting")?;
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut hello, H2_SETTINGS, 0, 0, &[]);
    sock.write_all(&hello).await?;
    // The gateway's first frame is its SETTINGS, if it speaks h2c.
    let first = tokio::time::timeout(Duration::from_secs(3), read_frame(&mut sock)).await;
    match first {
        Ok(Some((H2_SETTINGS, flags, _))) if flags & 1 == 0 => {}
        _ => return Ok(None),
    }
    let mut ack = Vec::new();
    frame(&mut ack, H2_SETTINGS, 1, 0, &[]);
    sock.write_all(&ack).await?;
    let (mut rd, mut wr) = sock.into_split();
    let met = H2::default();
    let block = h2_get(addr, "/bench/flood");
    let write = async {
        let mut id = 1u32;
        let mut batch = Vec::new();
        while id / 2 < streams && met.goaway().is_none() {
            batch.clear();
            let first = id;
            while id / 2 < streams && id - first < 1024 {
                // END_STREAM | END_HEADERS.
                frame(&mut batch, H2_HEADERS, 0x5, id, &block);
                if reset {
                    // CANCEL.
                    frame(&mut batch, H2_RST_STREAM, 0, id, &8u32.to_be_bytes());
                }
                id += 2;
            }
            if wr.write_all(&batch).await.is_err() {
                break;
            }
            met.streams
                .fetch_add(u64::from((id - first) / 2), Ordering::Relaxed);
        }
        // Kept open until the end: dropping it would end the connection.
        wr
    };
    let read = async {
        while let Some((kind, _, payload)) = read_frame(&mut rd).await {
            match kind {
                H2_HEADERS => {
                    met.responses.fetch_add(1, Ordering::Relaxed);
                }
                H2_RST_STREAM if payload.len() >= 4 => {
                    met.resets.fetch_add(1, Ordering::Relaxed);
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    met.reset_code.store(u64::from(code), Ordering::Relaxed);
                }
                H2_GOAWAY if payload.len() >= 8 && met.goaway().is_none() => {
                    let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    met.goaway_last
                        .store(u64::from(last & 0x7fff_ffff), Ordering::Relaxed);
                    met.goaway.store(u64::from(code) + 1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        met.closed.store(true, Ordering::Relaxed);
    };
    {
        tokio::pin!(write, read);
        let deadline = tokio::time::sleep(ATTACK_WAIT);
        tokio::pin!(deadline);
        let mut writer = None;
        loop {
            tokio::select! {
                w = &mut write, if writer.is_none() => {
                    writer = Some(w);
                    // Every stream sent: two seconds more for the answers.
                    let settle = Instant::now() + Duration::from_secs(2);
                    if settle < deadline.deadline() {
                        deadline.as_mut().reset(settle);
                    }
                }
                () = &mut read => break,
                () = &mut deadline => break,
            }
        }
    }
    Ok(Some(met))
}

/// What the gateway's process was seen to hold, sampled every 100 ms.
struct Watched {
    /// The most resident memory of each second (MiB).
    rss_by_second: Vec<f64>,
    /// The most open descriptors.
    fds: usize,
}

/// Samples the gateway's resident memory and open descriptors until `stop`.
async fn watch(pid: u32, stop: Arc<AtomicBool>, began: Instant) -> Watched {
    let mut w = Watched {
        rss_by_second: Vec::new(),
        fds: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        if let Some(now) = status_mib(pid, "VmRSS:") {
            let second = began.elapsed().as_secs() as usize;
            if w.rss_by_second.len() <= second {
                w.rss_by_second.resize(second + 1, 0.0);
            }
            w.rss_by_second[second] = w.rss_by_second[second].max(now);
        }
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            w.fds = w.fds.max(dir.count());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w
}

/// A field of `/proc/PID/status` given in kB, in MiB.
fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// A signed PUT of `LEGIT_BYTES` then its GET, through the SDK with its
/// default retries: how long both took, or what failed.
async fn signed_put_get(endpoint: &str, key: &str) -> std::result::Result<Duration, String> {
    fn failed<E: ProvideErrorMetadata + std::error::Error + 'static>(
        what: &str,
        e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> String {
        eprintln!(
            "measured: serve: the signed {what} failed: {}",
            DisplayErrorContext(e)
        );
        match e {
            SdkError::ServiceError(_) => {
                let status = e
                    .raw_response()
                    .map(|r| r.status().as_u16().to_string())
                    .unwrap_or_default();
                let code = e.code().map(|c| format!(" {c}")).unwrap_or_default();
                format!("{what}: {status}{code}")
            }
            SdkError::DispatchFailure(_) => format!("{what}: dispatch failure"),
            SdkError::TimeoutError(_) => format!("{what}: timed out"),
            SdkError::ResponseError(_) => format!("{what}: unreadable answer"),
            _ => format!("{what}: failed"),
        }
    }
    let c = client(endpoint);
    let body = crate::random_bytes(LEGIT_BYTES);
    let started = Instant::now();
    let run = async {
        c.put_object()
            .bucket("bench")
            .key(key)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .map_err(|e| failed("PUT", &e))?;
        let got = c
            .get_object()
            .bucket("bench")
            .key(key)
            .send()
            .await
            .map_err(|e| failed("GET", &e))?;
        let got = got
            .body
            .collect()
            .await
            .map_err(|e| format!("GET body: {e}"))?
            .into_bytes();
        if got[..] != body[..] {
            return Err(format!(
                "GET: {} bytes, not the {LEGIT_BYTES} put",
                got.len()
            ));
        }
        Ok(started.elapsed())
    };
    match tokio::time::timeout(Duration::from_secs(30), run).await {
        Ok(r) => r,
        Err(_) => Err("no answer in 30 s".into()),
    }
}

fn info(name: String, ferry: String, baseline: String) -> Row {
    Row {
        name,
        ferry,
        baseline,
        ratio: f64::NAN,
        target: "info".into(),
        ok: true,
    }
}

fn signed_row(name: &str, r: &std::result::Result<Duration, String>) -> Row {
    let (ferry, baseline) = match r {
        Ok(t) => (
            format!("{:.0} ms", t.as_secs_f64() * 1e3),
            "answered".to_owned(),
        ),
        Err(e) => ("failed".to_owned(), e.clone()),
    };
    eprintln!("measured: {name}: {ferry} ({baseline})");
    Row {
        name: name.to_owned(),
        ferry,
        baseline,
        ratio: f64::NAN,
        target: "succeeds".into(),
        ok: r.is_ok(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// The phase: a fresh `ferry serve` of `bucket` under the hostile load,
/// then its rows (peak RSS first).
pub(crate) async fn run(ferry: &Path, bucket: &Path) -> Result<Vec<Row>> {
    // Each slowloris connection is a descriptor here; keep 256 spare.
    let limit = open_files_limit().unwrap_or(1024);
    let slow_n = SLOWLORIS.min(limit.saturating_sub(256));
    let (serve, endpoint) = start_ferry(ferry, bucket)?;
    let pid = serve.0.id();
    let addr: Arc<str> = endpoint.trim_start_matches("http://").into();
    let at_start = peak_rss_mib(pid)?;
    let began = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch(pid, stop.clone(), began));

    // The attacks that need the gateway to take their connection start
    // first; the slowloris connections then fill its cap.
    let (form_head, form_body) = form_post(&addr);
    let heavy = async {
        tokio::join!(
            h2_flood(&addr, H2_RESET_STREAMS, true),
            h2_flood(&addr, H2_OPEN_STREAMS, false),
            attack(
                &addr,
                form_head,
                form_body,
                Framing::Plain,
                b'a',
                ATTACK_WAIT
            ),
            attack(
                &addr,
                chunked_put(&addr),
                CHUNKED_CUT,
                Framing::Chunked,
                b'c',
                ATTACK_WAIT
            ),
            copies(&addr, big_header(&addr)),
            copies(&addr, many_headers(&addr)),
        )
    };
    let slow = Arc::new(Slowloris::default());
    let until = began + HOLD;
    let mut slowloris_tasks = tokio::task::JoinSet::new();
    let ramp = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..slow_n {
            slowloris_tasks.spawn(slowloris(addr.clone(), until, slow.clone()));
        }
    };
    // The signed request, once the slowloris connections are up.
    let during = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        signed_put_get(&endpoint, "hostile/during").await
    };
    let ((h2_reset, h2_open, form, chunked, big, many), (), during) =
        tokio::join!(heavy, ramp, during);
    // Each slowloris client ends within a second or so of `until`.
    let ended = tokio::time::timeout_at(until + Duration::from_secs(5), async {
        while slowloris_tasks.join_next().await.is_some() {}
    })
    .await;
    if ended.is_err() {
        slowloris_tasks.abort_all();
    }
    let attack_secs = began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = signed_put_get(&endpoint, "hostile/after").await;
    let peak = peak_rss_mib(pid)?;
    let rss_after = status_mib(pid, "VmRSS:").unwrap_or(f64::NAN);
    stop.store(true, Ordering::Relaxed);
    let watched = watcher.await?;
    let fds = watched.fds;
    let by_second = watched
        .rss_by_second
        .iter()
        .map(|m| format!("{m:.0}"))
        .collect::<Vec<_>>()
        .join(" ");
    drop(serve);

    let (h2_reset, h2_open) = (h2_reset?, h2_open?);
    let (form, chunked, big, many) = (form?, chunked?, big?, many?);
    let no_h2c = h2_reset.is_none() || h2_open.is_none();
    let mut name = "serve: peak RSS under hostile load".to_owned();
    if no_h2c {
        name.push_str(" (no h2c: h2 flood skipped)");
    }
    if slow_n < SLOWLORIS {
        name.push_str(&format!(" ({slow_n} slowloris: fd limit {limit})"));
    }
    eprintln!(
        "measured: {name}: {peak:.1} MiB (VmHWM; {at_start:.1} MiB at start, \
         {rss_after:.1} MiB after), budget {BUDGET_MIB:.0} MiB; attack {attack_secs:.1} s; \
         VmRSS each second (MiB): {by_second}; {fds} descriptors open at most"
    );
    let mut rows = vec![Row {
        name,
        ferry: format!("{peak:.1} MiB"),
        baseline: format!("{BUDGET_MIB:.0} MiB budget"),
        ratio: peak / BUDGET_MIB,
        target: "< 1.0× budget".into(),
        ok: peak < BUDGET_MIB,
    }];
    rows.push(signed_row(
        &format!("  signed {} KiB PUT+GET during it", LEGIT_BYTES >> 10),
        &during,
    ));
    rows.push(signed_row("  signed PUT+GET after it", &after));

    let opened = slow.opened.load(Ordering::Relaxed);
    let refused = slow.refused.load(Ordering::Relaxed);
    let cut = slow.cut.load(Ordering::Relaxed);
    let held = slow.held.load(Ordering::Relaxed);
    let answered = slow.answered.load(Ordering::Relaxed);
    let failed = slow.failed.load(Ordering::Relaxed);
    let longest = slow.longest_ms.load(Ordering::Relaxed) as f64 / 1e3;
    eprintln!(
        "measured: serve: slowloris, {slow_n} clients for {} s: {opened} connections, {refused} \
         answered 503, {cut} cut unanswered (longest held {longest:.1} s), {held} still held at \
         the end, {answered} answered otherwise, {failed} connects failed; the gateway had \
         {fds} descriptors open at most",
        HOLD.as_secs()
    );
    rows.push(info(
        format!("  slowloris: {slow_n} clients, {} s", HOLD.as_secs()),
        format!("{} accepted", opened - refused),
        format!("{refused} of {opened} refused 503"),
    ));
    rows.push(info(
        "  form POST, 300 MB, unsigned".into(),
        form.label(),
        format!("{} sent, {:.2} s", mib(form.sent), form.after.as_secs_f64()),
    ));
    rows.push(info(
        format!("  chunked PUT, unsigned, cut at {}", mib(CHUNKED_CUT)),
        chunked.label(),
        format!(
            "{} sent, {:.2} s",
            mib(chunked.sent),
            chunked.after.as_secs_f64()
        ),
    ));
    let slowest = |a: &[Answer]| a.iter().map(|a| a.after).max().unwrap_or_default();
    rows.push(info(
        format!("  1 MiB header, {COPIES} at once"),
        summary(&big),
        format!("last in {:.2} s", slowest(&big).as_secs_f64()),
    ));
    rows.push(info(
        format!("  10,000 headers, {COPIES} at once"),
        summary(&many),
        format!("last in {:.2} s", slowest(&many).as_secs_f64()),
    ));
    for (what, met) in [("rapid reset", &h2_reset), ("never read", &h2_open)] {
        let row = match met {
            Some(m) => {
                let d = m.describe();
                eprintln!(
                    "measured: serve: h2c {what}: {} streams sent; {d}",
                    m.streams.load(Ordering::Relaxed)
                );
                info(
                    format!("  h2c {what} flood"),
                    format!("{} streams", m.streams.load(Ordering::Relaxed)),
                    d,
                )
            }
            None => info(
                format!("  h2c {what} flood"),
                "skipped".into(),
                "the gateway has no h2c".into(),
            ),
        };
        rows.push(row);
    }
    Ok(rows)
}
