//! The gateway against an attacker: raw HTTP requests an SDK would not
//! send (presigned URLs with unsigned headers, form POSTs, bodies that
//! never end, odd routes, odd keys and bucket names), unsigned reads of
//! ferry's own objects, and app tokens reaching past their prefixes.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use ferry::PutOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{client, config, serve_one, Served, KEY, SECRET};

/// An answer read off the socket.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses what a server sent before closing (or `None`: no answer).
fn parse(raw: &[u8]) -> Option<Reply> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        body = dechunk(&body);
    }
    Some(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 || raw.len() < end + 4 + size {
            return out;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 4 + size..];
    }
}

/// Sends `raw` to `addr` and reads until the server closes, at most
/// `wait`: the answer, or `None` if none came in time (or the server
/// closed without one).
pub async fn exchange(addr: &str, raw: &[u8], wait: Duration) -> Option<Reply> {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = sock.write_all(raw).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(wait, sock.read_to_end(&mut got)).await;
    parse(&got)
}

/// A request with `Host`, `Connection: close` and a `Content-Length`.
pub fn request(
    method: &str,
    addr: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut r = format!(
        "{method} {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

pub async fn call(
    addr: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let raw = request(method, addr, target, headers, body);
    exchange(addr, &raw, Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no answer to {method} {target}"))
}

fn addr_of(endpoint: &str) -> String {
    endpoint.trim_start_matches("http://").to_owned()
}

/// A presigned request: the path and query, and the headers to send.
async fn presigned(
    req: Result<aws_sdk_s3::presigning::PresignedRequest, impl std::fmt::Debug>,
) -> (String, Vec<(String, String)>) {
    let p = req.unwrap();
    let uri: http::Uri = p.uri().parse().unwrap();
    let target = uri.path_and_query().unwrap().to_string();
    let headers = p
        .headers()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("host"))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    (target, headers)
}

fn with<'a>(
    signed: &'a [(String, String)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    signed
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(extra.iter().copied())
        .collect()
}

fn presigning() -> PresigningConfig {
    PresigningConfig::expires_in(Duration::from_secs(300)).unwrap()
}

/// Issue 23, item 1: a presigned upload URL is not a copy of any key, and
/// unsigned `x-amz-*` headers are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_do_exactly_what_was_signed() {
    let s = serve_one(config()).await;
    let addr = addr_of(&s.endpoint);
    let c = client(&s.endpoint, KEY, SECRET);
    for (key, body) in [("private/secret", "top secret"), ("uploads/x", "mine")] {
        c.put_object()
            .bucket("photos")
            .key(key)
            .body(ByteStream::from(body.as_bytes().to_vec()))
            .send()
            .await
            .unwrap();
    }
    // A signed upload with an unsigned copy source: refused, nothing copied.
    let (target, signed) = presigned(
        c.put_object()
            .bucket("photos")
            .key("uploads/x")
            .presigned(presigning())
            .await,
    )
    .await;
    let r = call(
        &addr,
        "PUT",
        &target,
        &with(&signed, &[("x-amz-copy-source", "photos/private/secret")]),
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        &s.bucket.get_bytes("uploads/x").await.unwrap().1[..],
        b"mine"
    );
    // The same with a signed If-None-Match: * (create only).
    let (target, signed) = presigned(
        c.put_object()
            .bucket("photos")
            .key("uploads/x")
            .if_none_match("*")
            .presigned(presigning())
            .await,
    )
    .await;
    let r = call(
        &addr,
        "PUT",
        &target,
        &with(&signed, &[("x-amz-copy-source", "photos/private/secret")]),
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        &s.bucket.get_bytes("uploads/x").await.unwrap().1[..],
        b"mine"
    );
    // Any unsigned x-amz-* header is refused, on a download too.
    let (target, signed) = presigned(
        c.get_object()
            .bucket("photos")
            .key("uploads/x")
            .presigned(presigning())
            .await,
    )
    .await;
    let r = call(
        &addr,
        "GET",
        &target,
        &with(&signed, &[("x-amz-meta-extra", "1")]),
        b"",
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    // What was signed still works.
    let r = call(&addr, "GET", &target, &with(&signed, &[]), b"").await;
    assert_eq!((r.status, r.text().as_str()), (200, "mine"));
    let (target, signed) = presigned(
        c.put_object()
            .bucket("photos")
            .key("uploads/new")
            .presigned(presigning())
            .await,
    )
    .await;
    let r = call(&addr, "PUT", &target, &with(&signed, &[]), b"new bytes").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        &s.bucket.get_bytes("uploads/new").await.unwrap().1[..],
        b"new bytes"
    );
}

/// Issue 23, item 2: a form POST (PostObject, which ferry does not offer)
/// is refused before its body is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_posts_are_refused_before_the_body_is_read() {
    let s = serve_one(config()).await;
    let addr = addr_of(&s.endpoint);
    let mut head = format!(
        "POST /photos HTTP/1.1\r\nhost: {addr}\r\ncontent-type: multipart/form-data; boundary=XX\r\n\
         content-length: 300000000\r\n\r\n--XX\r\ncontent-disposition: form-data; name=\"key\"\r\n\r\n"
    )
    .into_bytes();
    head.extend(std::iter::repeat_n(b'a', 4096));
    let r = exchange(&addr, &head, Duration::from_secs(5))
        .await
        .expect("an answer before the body is sent");
    assert_eq!(r.status, 501, "{}", r.text());
    assert!(r.text().contains("NotImplemented"), "{}", r.text());
}

/// Issue 23, item 6: unsigned reads never reach ferry's own objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrys_own_objects_are_never_read_unsigned() {
    for public in [
        vec![],
        vec![String::new()],
        vec![".ferry/".to_owned(), "open.txt".to_owned()],
    ] {
        let s = serve_one(ferry_gateway::GatewayConfig {
            anonymous_read: public.is_empty(),
            public_read: public.clone(),
            ..config()
        })
        .await;
        let addr = addr_of(&s.endpoint);
        let c = client(&s.endpoint, KEY, SECRET);
        c.put_object()
            .bucket("photos")
            .key(".ferry/journal/r1")
            .body(ByteStream::from_static(b"a journal record"))
            .send()
            .await
            .unwrap();
        s.bucket
            .put("open.txt", b"open".to_vec(), PutOptions::default())
            .await
            .unwrap();
        let r = call(&addr, "GET", "/photos/open.txt", &[], b"").await;
        assert_eq!(r.status, 200, "{public:?}: {}", r.text());
        for target in [
            "/photos/.ferry/journal/r1",
            "/photos/.ferry%2Fjournal%2Fr1",
            "/photos?list-type=2&prefix=.ferry/",
            "/photos?prefix=.ferry%2Fj",
        ] {
            let r = call(&addr, "GET", target, &[], b"").await;
            assert_eq!(r.status, 403, "{public:?} {target}: {}", r.text());
            assert!(!r.text().contains("journal record"), "{}", r.text());
        }
        let r = call(&addr, "HEAD", "/photos/.ferry/journal/r1", &[], b"").await;
        assert_eq!(r.status, 403, "{public:?}");
    }
}

/// Issue 23, item 7: a public prefix names a folder or an exact key, and
/// the bucket's name is not part of what it matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_prefixes_have_a_folder_boundary() {
    let s = serve_one(ferry_gateway::GatewayConfig {
        public_read: vec!["pho".into(), "pub".into(), "site/".into()],
        ..config()
    })
    .await;
    let addr = addr_of(&s.endpoint);
    for key in [
        "pub",
        "public/x",
        "pub/a",
        "photo.jpg",
        "site/index.html",
        "site.txt",
    ] {
        s.bucket
            .put(key, b"x".to_vec(), PutOptions::default())
            .await
            .unwrap();
    }
    for (key, want) in [
        ("pub", 200),
        ("public/x", 403),
        ("pub/a", 403),
        ("photo.jpg", 403),
        ("site/index.html", 200),
        ("site.txt", 403),
    ] {
        let r = call(&addr, "GET", &format!("/photos/{key}"), &[], b"").await;
        assert_eq!(r.status, want, "{key}: {}", r.text());
    }
}

/// The app endpoints with these tokens, serving one bucket.
async fn serve_app(tokens: &[(&str, &[&str])]) -> crate::Served {
    serve_one(ferry_gateway::GatewayConfig {
        app: Some(ferry_gateway::app::AppConfig {
            base: "/api".into(),
            tokens: tokens
                .iter()
                .map(|(t, p)| ferry_gateway::app::Token {
                    token: (*t).to_owned(),
                    prefixes: p.iter().map(|p| (*p).to_owned()).collect(),
                    verbs: vec![],
                })
                .collect(),
            max_expiry: Duration::from_secs(900),
            target: ferry_gateway::app::SignerTarget::Local,
            public_url: "http://127.0.0.1".into(),
        }),
        ..config()
    })
    .await
}

async fn app_post(addr: &str, token: &str, route: &str, body: serde_json::Value) -> Reply {
    let auth = format!("Bearer {token}");
    call(
        addr,
        "POST",
        &format!("/api{route}"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

/// Issue 23, items 6 and 7 for tokens: only a token naming `.ferry/`
/// reaches ferry's own objects; token prefixes have a folder boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_reach_ferrys_own_objects_only_by_name() {
    let s = serve_app(&[
        ("web", &[""]),
        ("up", &["uploads"]),
        ("replica", &["", ".ferry/"]),
    ])
    .await;
    let addr = addr_of(&s.endpoint);
    let key = serde_json::json!({ "key": ".ferry/key.json" });
    for route in ["/v1/sign/download", "/v1/sign/upload", "/v1/delete"] {
        let r = app_post(&addr, "web", route, key.clone()).await;
        assert_eq!(r.status, 403, "{route}: {}", r.text());
    }
    let r = app_post(
        &addr,
        "web",
        "/v1/list",
        serde_json::json!({ "prefix": ".ferry/" }),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = app_post(&addr, "replica", "/v1/sign/download", key.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = app_post(
        &addr,
        "replica",
        "/v1/list",
        serde_json::json!({ "prefix": ".ferry/" }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // `uploads` is the key `uploads`, not every key starting so.
    for (k, want) in [("uploads", 200), ("uploads2/x", 403), ("uploads/x", 403)] {
        let r = app_post(
            &addr,
            "up",
            "/v1/sign/upload",
            serde_json::json!({ "key": k }),
        )
        .await;
        assert_eq!(r.status, want, "{k}: {}", r.text());
    }
}

/// Issue 23, item 5: what a token sees is only what its prefixes cover:
/// listings (and their cursors), events and status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_see_nothing_outside_their_prefixes() {
    let s = serve_app(&[("up", &["uploads/"])]).await;
    let addr = addr_of(&s.endpoint);
    let remote_dir = tempfile::tempdir().unwrap();
    let remote: ferry::remote::SharedRemote =
        std::sync::Arc::new(ferry::remote::folder::FolderRemote::new(remote_dir.path()).unwrap());
    s.bucket.attach(remote).await.unwrap();
    for key in ["private/a", "uploads/1", "zz-private"] {
        s.bucket
            .put(key, b"x".to_vec(), PutOptions::default())
            .await
            .unwrap();
    }
    // Events: a sync pushes all three; the token hears of its key only.
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    sock.write_all(
        format!("GET /api/v1/events HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer up\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("ferry events") {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&buf[..n]);
    }
    s.bucket.sync(Default::default()).await.unwrap();
    while !String::from_utf8_lossy(&seen).contains("sync-completed") {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
            .await
            .expect("the sync's events")
            .unwrap();
        assert!(n > 0);
        seen.extend_from_slice(&buf[..n]);
    }
    let events = String::from_utf8_lossy(&seen).into_owned();
    assert!(events.contains("uploads/1"), "{events}");
    assert!(!events.contains("private"), "{events}");
    // Status counts what the token covers.
    let r = call(
        &addr,
        "GET",
        "/api/v1/status",
        &[("authorization", "Bearer up")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(status["total"], 1, "{status}");
    assert!(status.get("remote").is_none_or(|r| r.is_null()), "{status}");
    // Listings: more than a page of keys outside the token's prefix never
    // show, neither as items nor as the cursor, whatever cursor is given.
    for i in 0..1001 {
        s.bucket
            .put(
                &format!("private/{i:04}"),
                b"x".to_vec(),
                PutOptions::default(),
            )
            .await
            .unwrap();
    }
    for body in [
        serde_json::json!({}),
        serde_json::json!({ "prefix": "" }),
        serde_json::json!({ "prefix": "", "cursor": "private/0500" }),
        serde_json::json!({ "prefix": "", "cursor": "a" }),
    ] {
        let r = app_post(&addr, "up", "/v1/list", body.clone()).await;
        assert!(!r.text().contains("private"), "{body}: {}", r.text());
        if body.get("cursor").is_none() {
            assert_eq!(r.status, 200, "{body}: {}", r.text());
            let listed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(listed["items"][0]["key"], "uploads/1", "{listed}");
            assert!(listed.get("cursor").is_none(), "{listed}");
        } else {
            // A cursor the gateway did not give is refused.
            assert_eq!(r.status, 400, "{body}: {}", r.text());
        }
    }
}

/// Issue 23, item 4: the app endpoints stop reading a body past 64 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_bodies_are_bounded_while_read() {
    let s = serve_app(&[("web", &[""])]).await;
    let addr = addr_of(&s.endpoint);
    let mut raw = format!(
        "POST /api/v1/sign/upload HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer web\r\n\
         content-length: 100000000\r\n\r\n"
    )
    .into_bytes();
    raw.extend(std::iter::repeat_n(b' ', 128 << 10));
    let r = exchange(&addr, &raw, Duration::from_secs(5))
        .await
        .expect("an answer before the body ends");
    assert_eq!(r.status, 413, "{}", r.text());
    // Chunked, no length given.
    let mut raw = format!(
        "POST /api/v1/sign/upload HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer web\r\n\
         transfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..40 {
        raw.extend_from_slice(b"1000\r\n");
        raw.extend(std::iter::repeat_n(b' ', 0x1000));
        raw.extend_from_slice(b"\r\n");
    }
    let r = exchange(&addr, &raw, Duration::from_secs(5))
        .await
        .expect("an answer before the body ends");
    assert_eq!(r.status, 413, "{}", r.text());
}

/// Issue 23, item 11: odd paths under the app base answer 4xx, never a
/// panic (a closed connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_routes_answer_odd_paths() {
    let s = serve_app(&[("web", &[""])]).await;
    let addr = addr_of(&s.endpoint);
    let auth = [("authorization", "Bearer web")];
    for (method, path, want) in [
        ("GET", "/api/v1/objects/state", 404),
        ("GET", "/api/v1/objects//state", 404),
        ("GET", "/api/v1/objects/%FF/state", 400),
        ("GET", "/api/v1/objects/a/state/state", 404),
        ("GET", "/api/v1/objects/.ferry%2Fkey.json/state", 403),
        ("GET", "/api/v1/objects/missing/state", 404),
        ("GET", "/api/v1/objects/", 404),
        ("GET", "/api/v1/", 404),
        ("GET", "/api/v1/sign/upload", 404),
        ("PUT", "/api/v1/list", 404),
        ("DELETE", "/api/v1/status", 404),
        ("POST", "/api/v1/nothing", 404),
        ("GET", "/api/health", 200),
    ] {
        let r = call(&addr, method, path, &auth, b"").await;
        assert_eq!(r.status, want, "{method} {path}: {}", r.text());
    }
}

/// What a hostile client sends that no SDK would: each is answered with
/// an error and leaves the bucket as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_get_errors_and_change_nothing() {
    let s = serve_one(config()).await;
    let addr = addr_of(&s.endpoint);
    let c = client(&s.endpoint, KEY, SECRET);
    c.put_object()
        .bucket("photos")
        .key("small.txt")
        .body(ByteStream::from_static(b"0123456789"))
        .send()
        .await
        .unwrap();
    // A header of 1 MiB, and 10,000 headers: refused (431 or a closed
    // connection), and the gateway still serves.
    let big = "a".repeat(1 << 20);
    let raw = request("GET", &addr, "/photos/small.txt", &[("x-big", &big)], b"");
    if let Some(r) = exchange(&addr, &raw, Duration::from_secs(5)).await {
        assert_eq!(r.status, 431, "{}", r.text());
    }
    let many: Vec<(String, String)> = (0..10_000)
        .map(|i| (format!("x-h{i}"), "v".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let raw = request("GET", &addr, "/photos/small.txt", &many, b"");
    if let Some(r) = exchange(&addr, &raw, Duration::from_secs(5)).await {
        assert_eq!(r.status, 431, "{}", r.text());
    }
    // Ranges past the end: 416; a range running past the end is cut.
    let got = c
        .get_object()
        .bucket("photos")
        .key("small.txt")
        .range("bytes=100-200")
        .send()
        .await
        .unwrap_err();
    assert_eq!(crate::status(&got), 416, "{got:?}");
    let got = c
        .get_object()
        .bucket("photos")
        .key("small.txt")
        .range("bytes=5-200")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_range(), Some("bytes 5-9/10"));
    // Keys with `..`, an encoded slash, NUL, over 1,024 bytes: refused
    // with 400, nothing written.
    let long = format!("/photos/{}", "k".repeat(1100));
    for target in [
        "/photos/a/../b",
        "/photos/a/%2e%2e/b",
        "/photos/..",
        "/photos/a%00b",
        long.as_str(),
    ] {
        let r = c
            .put_object()
            .bucket("photos")
            .key(
                target
                    .trim_start_matches("/photos/")
                    .replace("%2e", ".")
                    .replace("%00", "\0"),
            )
            .body(ByteStream::from_static(b"x"))
            .send()
            .await;
        let e = r.expect_err(target);
        assert_eq!(crate::status(&e), 400, "{target}: {e:?}");
    }
    // A `%` in a key is kept as it is.
    c.put_object()
        .bucket("photos")
        .key("dir%2Fx")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    assert!(s.bucket.exists("dir%2Fx").await.unwrap());
    let listed = s.bucket.list(ferry::ListOptions::prefix("")).await.unwrap();
    let keys: Vec<&str> = listed.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["dir%2Fx", "small.txt"]);
    // Bucket names that are paths or ferry's own: no such bucket.
    for target in [
        "/../small.txt",
        "/.ferry/small.txt",
        "/a%2Fb/small.txt",
        "/%2e%2e/x",
    ] {
        let r = call(&addr, "GET", target, &[], b"").await;
        assert!(
            matches!(r.status, 400 | 403 | 404),
            "{target}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("0123456789"), "{target}");
    }
}

/// Reads from `sock` until the server closes it (or `wait` passes):
/// what it sent, and whether it closed.
async fn until_closed(sock: &mut tokio::net::TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(wait, sock.read_to_end(&mut got))
        .await
        .is_ok();
    (got, closed)
}

/// Issue 23, item 3: silent, half-sent, idle and slow-bodied connections
/// are closed on time; past the connection cap a new one is answered 503
/// and served again once others close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_on_time() {
    let limits = ferry_gateway::Limits {
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(1),
        max_connections: 64,
    };
    let s = serve_one(ferry_gateway::GatewayConfig { limits, ..config() }).await;
    let addr = addr_of(&s.endpoint);
    // Sends nothing.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Sends half a request head.
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(format!("GET /photos/x HTTP/1.1\r\nhost: {addr}\r\nx-a: ").as_bytes())
        .await
        .unwrap();
    // One request, then nothing (keep-alive).
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(format!("GET /photos?list-type=2 HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    for (name, sock) in [
        ("silent", &mut silent),
        ("half", &mut half),
        ("idle", &mut idle),
    ] {
        let (_, closed) = until_closed(sock, Duration::from_secs(6)).await;
        assert!(closed, "{name} is still open after {:?}", started.elapsed());
    }
    // A body that stops: the upload fails, nothing is stored.
    let c = client(&s.endpoint, KEY, SECRET);
    let (target, signed) = presigned(
        c.put_object()
            .bucket("photos")
            .key("slow.txt")
            .presigned(presigning())
            .await,
    )
    .await;
    let mut head = request("PUT", &addr, &target, &with(&signed, &[]), b"");
    // Claim 1000 bytes (the request's own Content-Length says 0: replace it).
    let text = String::from_utf8(head.clone()).unwrap();
    head = text
        .replace("content-length: 0\r\n", "content-length: 1000\r\n")
        .into_bytes();
    head.extend_from_slice(b"0123456789");
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(&head).await.unwrap();
    let (_, closed) = until_closed(&mut slow, Duration::from_secs(6)).await;
    assert!(closed, "a stalled body holds its connection");
    assert!(!s.bucket.exists("slow.txt").await.unwrap());
    c.list_objects_v2().bucket("photos").send().await.unwrap();
}

/// A signed PUT head claiming a 1000-byte body that never comes: a
/// request that runs (it waits for its body) until the body timeout.
async fn running_request(s: &Served, addr: &str, key: &str) -> tokio::net::TcpStream {
    let c = client(&s.endpoint, KEY, SECRET);
    let (target, signed) = presigned(
        c.put_object()
            .bucket("photos")
            .key(key)
            .presigned(presigning())
            .await,
    )
    .await;
    let head = request("PUT", addr, &target, &with(&signed, &[]), b"");
    let head = String::from_utf8(head)
        .unwrap()
        .replace("content-length: 0\r\n", "content-length: 1000\r\n")
        .into_bytes();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(&head).await.unwrap();
    sock
}

/// Issue 23, item 3: the connection cap. Connections that never started a
/// request give way to new ones, oldest first; when every open one runs a
/// request, a new one is answered 503, and served again once others close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_answered_503() {
    let s = serve_one(ferry_gateway::GatewayConfig {
        limits: ferry_gateway::Limits {
            max_connections: 4,
            ..Default::default()
        },
        ..config()
    })
    .await;
    let addr = addr_of(&s.endpoint);
    // Four silent connections fill the cap; a request still gets in.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = call(&addr, "GET", "/photos?list-type=2", &[], b"").await;
    assert_ne!(r.status, 503, "a silent connection gave way: {}", r.text());
    // One of them (the first the gateway registered) was closed for it.
    let mut closed = 0;
    for sock in &mut silent {
        if until_closed(sock, Duration::from_millis(500)).await.1 {
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "one silent connection gave way, the others stay");
    drop(silent);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Four running requests fill it: the next connection is answered 503.
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(running_request(&s, &addr, &format!("held-{i}")).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = call(&addr, "GET", "/photos?list-type=2", &[], b"").await;
    assert_eq!(r.status, 503, "{}", r.text());
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = client(&s.endpoint, KEY, SECRET);
    c.list_objects_v2().bucket("photos").send().await.unwrap();
}

/// Issue 23, hostile suite: slowloris with 2,000 connections (each sends
/// half a request head, then nothing) against the default limits (1,024
/// connections): a legitimate SDK request still succeeds within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_with_two_thousand_connections_does_not_shut_out_a_client() {
    let s = serve_one(config()).await;
    let addr = addr_of(&s.endpoint);
    let mut held = Vec::new();
    for i in 0..2000 {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(mut sock) => {
                let half = format!("GET /photos/k{i} HTTP/1.1\r\nhost: {addr}\r\nx-a: ");
                let _ = sock.write_all(half.as_bytes()).await;
                held.push(sock);
            }
            Err(e) => panic!("connection {i} of the slowloris: {e}"),
        }
    }
    let c = client(&s.endpoint, KEY, SECRET);
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(5), async {
        c.put_object()
            .bucket("photos")
            .key("legit.txt")
            .body(b"still here".to_vec().into())
            .send()
            .await
            .map_err(|e| format!("PUT: {e:?}"))?;
        c.get_object()
            .bucket("photos")
            .key("legit.txt")
            .send()
            .await
            .map_err(|e| format!("GET: {e:?}"))
    })
    .await
    .expect("a legitimate request is answered within 5 s");
    let got = answer.expect("a legitimate request succeeds");
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"still here");
    eprintln!(
        "answered in {:?} with 2,000 slowloris connections",
        started.elapsed()
    );
    drop(held);
}

/// Issue 23, item 13: answers carry `nosniff`, unsigned reads of active
/// types a sandbox; a request naming another host is refused (DNS
/// rebinding) unless allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_nosniff_a_sandbox_and_a_host_check() {
    let s = serve_one(ferry_gateway::GatewayConfig {
        anonymous_read: true,
        allowed_hosts: vec!["files.example".into()],
        ..config()
    })
    .await;
    let addr = addr_of(&s.endpoint);
    s.bucket
        .put(
            "page.html",
            b"<script>alert(1)</script>".to_vec(),
            PutOptions {
                content_type: Some("text/html".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let port = addr.rsplit(':').next().unwrap();
    for (host, want) in [
        (addr.clone(), 200),
        (format!("localhost:{port}"), 200),
        (format!("files.example:{port}"), 200),
        (format!("evil.example:{port}"), 400),
        ("attacker.test".to_owned(), 400),
    ] {
        let raw =
            format!("GET /photos/page.html HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        let r = exchange(&addr, raw.as_bytes(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.status, want, "{host}: {}", r.text());
        assert_eq!(
            r.headers.get("x-content-type-options").map(String::as_str),
            Some("nosniff"),
            "{host}"
        );
        if want == 200 {
            assert!(
                r.headers
                    .get("content-security-policy")
                    .is_some_and(|c| c.contains("sandbox")),
                "{:?}",
                r.headers
            );
        }
    }
}

/// Issue 23, item 12: secrets stay out of `Debug`; the gateway's folder
/// is its user's only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_debug_and_the_gateway_folder_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = serve_app(&[("a-long-bearer-token-value", &[""])]).await;
    let shown = format!(
        "{:?}",
        ferry_gateway::GatewayConfig {
            app: Some(ferry_gateway::app::AppConfig {
                base: "/api".into(),
                tokens: vec![ferry_gateway::app::Token {
                    token: "a-long-bearer-token-value".into(),
                    prefixes: vec![String::new()],
                    verbs: vec![],
                }],
                max_expiry: Duration::from_secs(1),
                target: ferry_gateway::app::SignerTarget::Local,
                public_url: String::new(),
            }),
            ..config()
        }
    );
    assert!(!shown.contains(SECRET), "{shown}");
    assert!(!shown.contains("a-long-bearer-token-value"), "{shown}");
    let mode = std::fs::metadata(s.bucket.dir().join("gateway"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

/// Issue 23, item 6: the objects kept under `.ferry/` are bounded in
/// number (and bytes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrys_own_objects_are_bounded() {
    let s = serve_one(config()).await;
    let c = client(&s.endpoint, KEY, SECRET);
    c.put_object()
        .bucket("photos")
        .key(".ferry/journal/first")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    // Fill the table to the bound directly (what many PUTs would do).
    {
        let db = rusqlite::Connection::open(s.bucket.dir().join("gateway/etags.db")).unwrap();
        db.busy_timeout(Duration::from_secs(5)).unwrap();
        let tx = db.unchecked_transaction().unwrap();
        {
            let mut st = tx
                .prepare(
                    "INSERT INTO reserved (key, body, etag, content_type, metadata, modified_ms) \
                     VALUES (?1, x'00', 'e', 'application/octet-stream', '{}', 0)",
                )
                .unwrap();
            for i in 1..ferry_gateway::store::MAX_RESERVED_OBJECTS {
                st.execute([format!(".ferry/filler/{i}")]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let e = c
        .put_object()
        .bucket("photos")
        .key(".ferry/journal/one-more")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(crate::status(&e), 507, "{e:?}");
    // Replacing one that is there is still allowed.
    c.put_object()
        .bucket("photos")
        .key(".ferry/journal/first")
        .body(ByteStream::from_static(b"y"))
        .send()
        .await
        .unwrap();
}
