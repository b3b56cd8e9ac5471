//! The gateway driven by the AWS SDK for Rust over loopback: conditional
//! writes, ranges, multipart, bad input (with what is left on disk), auth,
//! offline reads of lazy objects, and the directory-of-buckets mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use ferry::{Bucket, BucketConfig, PutOptions};

mod hostile;

const KEY: &str = "AKFERRYTEST";
const SECRET: &str = "secret-for-tests";

struct Served {
    _tmp: tempfile::TempDir,
    bucket: Bucket,
    endpoint: String,
    _gateway: ferry_gateway::Gateway,
}

async fn serve_one(config: ferry_gateway::GatewayConfig) -> Served {
    let tmp = tempfile::tempdir().unwrap();
    let bucket = Bucket::create(tmp.path().join("photos/.ferry"), BucketConfig::default())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = ferry_gateway::start(
        listener,
        ferry_gateway::Served::One {
            name: "photos".into(),
            bucket: bucket.clone(),
        },
        config,
    )
    .unwrap();
    Served {
        endpoint: format!("http://{}", gateway.addr),
        _tmp: tmp,
        bucket,
        _gateway: gateway,
    }
}

fn config() -> ferry_gateway::GatewayConfig {
    ferry_gateway::GatewayConfig {
        access_key_id: KEY.into(),
        secret_access_key: SECRET.into(),
        ..Default::default()
    }
}

fn client(endpoint: &str, key: &str, secret: &str) -> Client {
    let creds = aws_sdk_s3::config::Credentials::new(key, secret, None, None, "test");
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    Client::from_conf(conf)
}

fn code<E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug>(
    e: &aws_sdk_s3::error::SdkError<E>,
) -> String {
    aws_sdk_s3::error::ProvideErrorMetadata::code(e)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{e:?}"))
}

fn status<E>(e: &aws_sdk_s3::error::SdkError<E>) -> u16 {
    e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Files under the gateway's upload directory and the bucket's temp blobs.
fn leftovers(bucket: &Bucket) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in [
        bucket.dir().join("gateway/uploads"),
        bucket.dir().join("tmp"),
    ] {
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() {
                    stack.push(e.path());
                } else {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_exact_keys_metadata_and_md5_etags() {
    let s = serve_one(config()).await;
    let c = client(&s.endpoint, KEY, SECRET);
    for key in ["notes ", "a//b", "dir/", "ü/€ #%+?.txt"] {
        let put = c
            .put_object()
            .bucket("photos")
            .key(key)
            .body(ByteStream::from(key.as_bytes().to_vec()))
            .content_type("text/x-test")
            .metadata("owner", "ann")
            .send()
            .await
            .unwrap();
        let md5 = format!("\"{:x}\"", md5_of(key.as_bytes()));
        assert_eq!(put.e_tag(), Some(md5.as_str()), "{key:?}");
        let got = c
            .get_object()
            .bucket("photos")
            .key(key)
            .send()
            .await
            .unwrap();
        assert_eq!(got.e_tag(), Some(md5.as_str()));
        assert_eq!(got.content_type(), Some("text/x-test"));
        assert_eq!(got.metadata().unwrap()["owner"], "ann");
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], key.as_bytes());
        // The library holds the key exactly.
        assert_eq!(
            s.bucket.get_bytes(key).await.unwrap().1,
            key.as_bytes().to_vec()
        );
    }
    let listed = c.list_objects_v2().bucket("photos").send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["a//b", "dir/", "notes ", "ü/€ #%+?.txt"]);
    // Delimiter and paging.
    let top = c
        .list_objects_v2()
        .bucket("photos")
        .delimiter("/")
        .max_keys(2)
        .send()
        .await
        .unwrap();
    assert_eq!(top.is_truncated(), Some(true));
    let next = c
        .list_objects_v2()
        .bucket("photos")
        .delimiter("/")
        .continuation_token(top.next_continuation_token().unwrap())
        .send()
        .await
        .unwrap();
    let mut seen: Vec<String> = top
        .common_prefixes()
        .iter()
        .chain(next.common_prefixes())
        .filter_map(|p| p.prefix().map(str::to_owned))
        .chain(
            top.contents()
                .iter()
                .chain(next.contents())
                .filter_map(|o| o.key().map(str::to_owned)),
        )
        .collect();
    seen.sort();
    assert_eq!(seen, ["a/", "dir/", "notes ", "ü/"]);
    // A key written by the library gets a non-MD5 ETag in multipart form.
    s.bucket
        .put("local.txt", b"from the CLI".to_vec(), PutOptions::default())
        .await
        .unwrap();
    let head = c
        .head_object()
        .bucket("photos")
        .key("local.txt")
        .send()
        .await
        .unwrap();
    assert!(
        head.e_tag().unwrap().ends_with("-1\""),
        "{:?}",
        head.e_tag()
    );
    // Invalid keys are S3 errors naming the key, and nothing is written.
    let e = c
        .put_object()
        .bucket("photos")
        .key("a/../b")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidArgument", "{e:?}");
    assert!(!s.bucket.exists("a/../b").await.unwrap_or(false));
}

fn md5_of(data: &[u8]) -> u128 {
    use md5::Digest as _;
    u128::from_be_bytes(md5::Md5::digest(data).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_race_and_reads_answer_304_412_and_ranges() {
    let s = serve_one(config()).await;
    let c = client(&s.endpoint, KEY, SECRET);
    let first = c
        .put_object()
        .bucket("photos")
        .key("k")
        .body(ByteStream::from_static(b"0123456789"))
        .if_none_match("*")
        .send()
        .await
        .unwrap();
    let e = c
        .put_object()
        .bucket("photos")
        .key("k")
        .body(ByteStream::from_static(b"again"))
        .if_none_match("*")
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e).as_str(), status(&e)), ("PreconditionFailed", 412));
    // 16 clients replace the version they read: exactly one wins.
    let etag = first.e_tag().unwrap().to_owned();
    let mut racers = Vec::new();
    for i in 0..16 {
        let c = c.clone();
        let etag = etag.clone();
        racers.push(tokio::spawn(async move {
            c.put_object()
                .bucket("photos")
                .key("k")
                .body(ByteStream::from(vec![i as u8; 64]))
                .if_match(etag)
                .send()
                .await
        }));
    }
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => assert_eq!(status(&e), 412, "{e:?}"),
        }
    }
    assert_eq!(won, 1);
    let current = c
        .head_object()
        .bucket("photos")
        .key("k")
        .send()
        .await
        .unwrap();
    let etag = current.e_tag().unwrap().to_owned();
    // 304 and 412 on reads.
    let e = c
        .get_object()
        .bucket("photos")
        .key("k")
        .if_none_match(&etag)
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 304);
    let e = c
        .get_object()
        .bucket("photos")
        .key("k")
        .if_match("\"other\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 412);
    // Ranges.
    c.put_object()
        .bucket("photos")
        .key("r")
        .body(ByteStream::from_static(b"0123456789"))
        .send()
        .await
        .unwrap();
    for (range, want) in [
        ("bytes=2-4", &b"234"[..]),
        ("bytes=7-", b"789"),
        ("bytes=-2", b"89"),
    ] {
        let got = c
            .get_object()
            .bucket("photos")
            .key("r")
            .range(range)
            .send()
            .await
            .unwrap();
        assert!(got.content_range().is_some());
        assert_eq!(
            &got.body.collect().await.unwrap().into_bytes()[..],
            want,
            "{range}"
        );
    }
    let e = c
        .get_object()
        .bucket("photos")
        .key("r")
        .range("bytes=20-30")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 416);
    // A conditional delete names the current ETag, or deletes nothing.
    let e = c
        .delete_object()
        .bucket("photos")
        .key("k")
        .if_match("\"other\"")
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e).as_str(), status(&e)), ("PreconditionFailed", 412));
    c.head_object()
        .bucket("photos")
        .key("k")
        .send()
        .await
        .unwrap();
    c.delete_object()
        .bucket("photos")
        .key("k")
        .if_match(&etag)
        .send()
        .await
        .unwrap();
    let e = c
        .head_object()
        .bucket("photos")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_checks_parts_and_bad_bodies_leave_nothing() {
    let s = serve_one(config()).await;
    let c = client(&s.endpoint, KEY, SECRET);
    let part = vec![7u8; 5 << 20];
    let up = c
        .create_multipart_upload()
        .bucket("photos")
        .key("big")
        .content_type("application/x-big")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let p1 = c
        .upload_part()
        .bucket("photos")
        .key("big")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from(part.clone()))
        .send()
        .await
        .unwrap();
    let p2 = c
        .upload_part()
        .bucket("photos")
        .key("big")
        .upload_id(id)
        .part_number(2)
        .body(ByteStream::from_static(b"tail"))
        .send()
        .await
        .unwrap();
    let listed = c
        .list_parts()
        .bucket("photos")
        .key("big")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.parts().len(), 2);
    let parts = |e1: &str| {
        aws_sdk_s3::types::CompletedMultipartUpload::builder()
            .parts(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(1)
                    .e_tag(e1)
                    .build(),
            )
            .parts(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(2)
                    .e_tag(p2.e_tag().unwrap())
                    .build(),
            )
            .build()
    };
    let e = c
        .complete_multipart_upload()
        .bucket("photos")
        .key("big")
        .upload_id(id)
        .multipart_upload(parts("\"00000000000000000000000000000000\""))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidPart", "{e:?}");
    assert!(!s.bucket.exists("big").await.unwrap());
    let done = c
        .complete_multipart_upload()
        .bucket("photos")
        .key("big")
        .upload_id(id)
        .multipart_upload(parts(p1.e_tag().unwrap()))
        .send()
        .await
        .unwrap();
    assert!(
        done.e_tag().unwrap().ends_with("-2\""),
        "{:?}",
        done.e_tag()
    );
    let head = c
        .head_object()
        .bucket("photos")
        .key("big")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some((5 << 20) + 4));
    assert_eq!(head.content_type(), Some("application/x-big"));
    assert_eq!(head.e_tag(), done.e_tag());
    // An aborted upload leaves nothing.
    let up = c
        .create_multipart_upload()
        .bucket("photos")
        .key("gone")
        .send()
        .await
        .unwrap();
    c.upload_part()
        .bucket("photos")
        .key("gone")
        .upload_id(up.upload_id().unwrap())
        .part_number(1)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        c.list_multipart_uploads()
            .bucket("photos")
            .send()
            .await
            .unwrap()
            .uploads()
            .len(),
        1
    );
    c.abort_multipart_upload()
        .bucket("photos")
        .key("gone")
        .upload_id(up.upload_id().unwrap())
        .send()
        .await
        .unwrap();
    // A body that does not match its Content-MD5: nothing is stored.
    let e = c
        .put_object()
        .bucket("photos")
        .key("digest")
        .body(ByteStream::from(vec![1u8; 300_000]))
        .content_md5("AAAAAAAAAAAAAAAAAAAAAA==")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "BadDigest", "{e:?}");
    assert!(!s.bucket.exists("digest").await.unwrap());
    assert_eq!(leftovers(&s.bucket), Vec::<std::path::PathBuf>::new());
}

/// A client that sends fewer bytes than its Content-Length and hangs up:
/// no object, no temp file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_upload_leaves_nothing() {
    use tokio::io::AsyncWriteExt;
    let s = serve_one(ferry_gateway::GatewayConfig {
        anonymous_read: false,
        ..config()
    })
    .await;
    let c = client(&s.endpoint, KEY, SECRET);
    // A presigned PUT, then a raw connection that stops half way.
    let presigned = c
        .put_object()
        .bucket("photos")
        .key("cut")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(
                60,
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let uri: http::Uri = presigned.uri().parse().unwrap();
    let path = uri.path_and_query().unwrap().as_str().to_owned();
    let mut sock = tokio::net::TcpStream::connect(s.endpoint.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: 1000000\r\n\r\n",
        uri.authority().unwrap()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&vec![1u8; 400_000]).await.unwrap();
    drop(sock);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!s.bucket.exists("cut").await.unwrap());
    assert_eq!(leftovers(&s.bucket), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_errors_are_403_and_public_prefixes_read_unsigned() {
    let s = serve_one(ferry_gateway::GatewayConfig {
        public_read: vec!["pub/".into()],
        cors_origins: vec!["https://app.example".into()],
        ..config()
    })
    .await;
    let c = client(&s.endpoint, KEY, SECRET);
    for key in ["pub/logo.svg", "private/x"] {
        c.put_object()
            .bucket("photos")
            .key(key)
            .body(ByteStream::from_static(b"<svg/>"))
            .content_type("image/svg+xml")
            .send()
            .await
            .unwrap();
    }
    let e = client(&s.endpoint, KEY, "wrong")
        .list_objects_v2()
        .bucket("photos")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        (code(&e).as_str(), status(&e)),
        ("SignatureDoesNotMatch", 403)
    );
    let e = client(&s.endpoint, "NOBODY", SECRET)
        .list_objects_v2()
        .bucket("photos")
        .send()
        .await
        .unwrap_err();
    assert_eq!((code(&e).as_str(), status(&e)), ("InvalidAccessKeyId", 403));
    // Unsigned: the public prefix reads (with ETag, type and 304), the rest is denied.
    let http = reqwest_like::Client::new();
    let (st, headers, body) = http
        .get(&format!("{}/photos/pub/logo.svg", s.endpoint), &[])
        .await;
    assert_eq!(st, 200);
    assert_eq!(body, b"<svg/>");
    assert_eq!(headers["content-type"], "image/svg+xml");
    let etag = headers["etag"].clone();
    let (st, _, _) = http
        .get(
            &format!("{}/photos/pub/logo.svg", s.endpoint),
            &[("if-none-match", etag.as_str())],
        )
        .await;
    assert_eq!(st, 304);
    let (st, _, body) = http
        .get(&format!("{}/photos/private/x", s.endpoint), &[])
        .await;
    assert_eq!(st, 403);
    assert!(String::from_utf8_lossy(&body).contains("AccessDenied"));
    // CORS: a preflight from the allowed origin, and the header on answers.
    let (st, headers, _) = http
        .request(
            "OPTIONS",
            &format!("{}/photos/pub/logo.svg", s.endpoint),
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert_eq!(st, 204);
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
    let (st, _, _) = http
        .request(
            "OPTIONS",
            &format!("{}/photos/pub/logo.svg", s.endpoint),
            &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
    assert_eq!(st, 403);
    let (_, headers, _) = http
        .get(
            &format!("{}/photos/pub/logo.svg", s.endpoint),
            &[("origin", "https://app.example")],
        )
        .await;
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://app.example"
    );
}

/// An object known from the remote but not downloaded: served once the
/// remote answers, a 503 naming the key while it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_objects_are_fetched_online_and_503_offline() {
    let remote_dir = tempfile::tempdir().unwrap();
    let remote: ferry::remote::SharedRemote =
        Arc::new(ferry::remote::folder::FolderRemote::new(remote_dir.path()).unwrap());
    let writer_dir = tempfile::tempdir().unwrap();
    let writer = Bucket::create(writer_dir.path().join(".ferry"), BucketConfig::default())
        .await
        .unwrap();
    writer.attach(remote.clone()).await.unwrap();
    writer
        .put(
            "far/away.txt",
            b"from the remote".to_vec(),
            PutOptions::default(),
        )
        .await
        .unwrap();
    writer.sync(Default::default()).await.unwrap();

    let s = serve_one(config()).await;
    let mut sync = s.bucket.sync_config().unwrap();
    sync.strategy = ferry::plan::PullStrategy::Lazy;
    s.bucket.set_sync_config(sync).await.unwrap();
    s.bucket.attach(remote.clone()).await.unwrap();
    s.bucket.sync(Default::default()).await.unwrap();
    assert!(!s.bucket.residency("far/away.txt").unwrap().cached);
    let c = client(&s.endpoint, KEY, SECRET);
    // Offline: the remote's folder is gone for now.
    let parked = remote_dir.path().with_extension("away");
    std::fs::rename(remote_dir.path(), &parked).unwrap();
    let e = c
        .get_object()
        .bucket("photos")
        .key("far/away.txt")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 503, "{e:?}");
    let message = aws_sdk_s3::error::ProvideErrorMetadata::message(&e)
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("far/away.txt"), "{message}");
    std::fs::rename(&parked, remote_dir.path()).unwrap();
    let got = c
        .get_object()
        .bucket("photos")
        .key("far/away.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        b"from the remote"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_buckets_creates_lists_and_deletes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = ferry_gateway::start(
        listener,
        ferry_gateway::Served::Dir(tmp.path().to_owned()),
        config(),
    )
    .unwrap();
    let c = client(&format!("http://{}", gateway.addr), KEY, SECRET);
    c.create_bucket().bucket("alpha").send().await.unwrap();
    c.create_bucket().bucket("beta").send().await.unwrap();
    let e = c.create_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(code(&e), "BucketAlreadyOwnedByYou");
    let e = c
        .create_bucket()
        .bucket("Bad_Name")
        .send()
        .await
        .unwrap_err();
    assert_eq!(status(&e), 400, "{e:?}");
    let names: Vec<String> = c
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    c.put_object()
        .bucket("alpha")
        .key("x")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    // The bucket is a ferry bucket the library (and the CLI) opens.
    let b = Bucket::open(tmp.path().join("alpha/.ferry")).await.unwrap();
    assert_eq!(b.get_bytes("x").await.unwrap().1, b"x".to_vec());
    let e = c.delete_bucket().bucket("alpha").send().await.unwrap_err();
    assert_eq!(code(&e), "BucketNotEmpty");
    c.delete_bucket().bucket("beta").send().await.unwrap();
    assert!(!tmp.path().join("beta").exists());
    let e = c.head_bucket().bucket("beta").send().await.unwrap_err();
    assert_eq!(status(&e), 404);
}

/// Issue 23, item 15: with a certificate and key the gateway speaks HTTPS
/// (a client trusting that certificate uploads and downloads through
/// presigned URLs; one that does not trust it fails its handshake), and a
/// plain-HTTP request to the same port gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_with_the_given_certificate_and_refuses_plain_http() {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = made.cert.pem();
    let key = made.signing_key.serialize_pem();
    assert!(ferry_gateway::Tls::from_pem(b"", key.as_bytes()).is_err());
    assert!(ferry_gateway::Tls::from_pem(cert.as_bytes(), b"not a key").is_err());
    let tls = ferry_gateway::Tls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    assert!(!format!("{tls:?}").contains("PRIVATE"));
    let s = serve_one(ferry_gateway::GatewayConfig {
        tls: Some(tls),
        ..config()
    })
    .await;
    let port = s.endpoint.rsplit(':').next().unwrap().to_owned();
    let https = format!("https://localhost:{port}");
    // Only for presigning: the SDK makes no request here.
    let signer = client(&https, KEY, SECRET);
    let presign =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(300))
            .unwrap();
    let put = signer
        .put_object()
        .bucket("photos")
        .key("tls.txt")
        .presigned(presign.clone())
        .await
        .unwrap();
    let get = signer
        .get_object()
        .bucket("photos")
        .key("tls.txt")
        .presigned(presign)
        .await
        .unwrap();
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    let r = trusting
        .put(put.uri())
        .body("over tls")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let r = trusting.get(get.uri()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"over tls");
    assert_eq!(
        &s.bucket.get_bytes("tls.txt").await.unwrap().1[..],
        b"over tls"
    );
    // A client that does not trust the certificate stops at the handshake.
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .build()
        .unwrap();
    assert!(untrusting.get(get.uri()).send().await.is_err());
    // Plain HTTP to the TLS port: no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/photos/tls.txt"))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

/// App keys whose set the test changes while the gateway runs.
struct LiveKeys(std::sync::Mutex<Arc<Vec<ferry_gateway::AppKey>>>);

impl ferry_gateway::AppKeys for LiveKeys {
    fn current(&self) -> Arc<Vec<ferry_gateway::AppKey>> {
        self.0.lock().unwrap().clone()
    }
}

fn app_key(name: &str, buckets: &[&str], rights: ferry_gateway::Rights) -> ferry_gateway::AppKey {
    ferry_gateway::AppKey {
        name: name.into(),
        access_key_id: format!("AK{}", name.to_uppercase()),
        secret_access_key: format!("secret-of-{name}"),
        buckets: buckets.iter().map(|b| (*b).to_owned()).collect(),
        rights,
    }
}

/// Issue 23, item 16: an app key reaches only its buckets (ListBuckets
/// shows only those), a read key only reads, no app key creates or
/// deletes buckets or copies from a bucket it does not reach, a presigned
/// URL of an app key is held to the same rules, the owner's key may do
/// everything, and a key removed while the gateway runs stops working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_keys_reach_only_their_buckets_with_their_rights() {
    use ferry_gateway::Rights;
    let tmp = tempfile::tempdir().unwrap();
    let live = Arc::new(LiveKeys(std::sync::Mutex::new(Arc::new(vec![
        app_key("reader", &["alpha"], Rights::Read),
        app_key("writer", &["alpha"], Rights::Write),
    ]))));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = ferry_gateway::start(
        listener,
        ferry_gateway::Served::Dir(tmp.path().to_owned()),
        ferry_gateway::GatewayConfig {
            app_keys: Some(live.clone()),
            ..config()
        },
    )
    .unwrap();
    let endpoint = format!("http://{}", gateway.addr);
    let owner = client(&endpoint, KEY, SECRET);
    let reader = client(&endpoint, "AKREADER", "secret-of-reader");
    let writer = client(&endpoint, "AKWRITER", "secret-of-writer");
    for b in ["alpha", "beta"] {
        owner.create_bucket().bucket(b).send().await.unwrap();
        owner
            .put_object()
            .bucket(b)
            .key("k")
            .body(ByteStream::from_static(b"secret"))
            .send()
            .await
            .unwrap();
    }
    let names = |c: Client| async move {
        c.list_buckets()
            .send()
            .await
            .unwrap()
            .buckets()
            .iter()
            .filter_map(|b| b.name().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(owner.clone()).await, ["alpha", "beta"]);
    assert_eq!(names(reader.clone()).await, ["alpha"]);
    assert_eq!(names(writer.clone()).await, ["alpha"]);

    // The read key reads its bucket and nothing else.
    let got = reader
        .get_object()
        .bucket("alpha")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"secret"
    );
    reader
        .list_objects_v2()
        .bucket("alpha")
        .send()
        .await
        .unwrap();
    let e = reader
        .put_object()
        .bucket("alpha")
        .key("n")
        .body(ByteStream::from_static(b"n"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = reader
        .delete_object()
        .bucket("alpha")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = reader
        .create_multipart_upload()
        .bucket("alpha")
        .key("m")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = reader
        .get_object()
        .bucket("beta")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = reader
        .list_objects_v2()
        .bucket("beta")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");

    // The write key writes its bucket, never another, never buckets.
    writer
        .put_object()
        .bucket("alpha")
        .key("w")
        .body(ByteStream::from_static(b"w"))
        .send()
        .await
        .unwrap();
    writer
        .copy_object()
        .bucket("alpha")
        .key("w2")
        .copy_source("alpha/w")
        .send()
        .await
        .unwrap();
    let e = writer
        .copy_object()
        .bucket("alpha")
        .key("stolen")
        .copy_source("beta/k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let up = writer
        .create_multipart_upload()
        .bucket("alpha")
        .key("m")
        .send()
        .await
        .unwrap();
    let e = writer
        .upload_part_copy()
        .bucket("alpha")
        .key("m")
        .upload_id(up.upload_id().unwrap())
        .part_number(1)
        .copy_source("beta/k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = writer
        .put_object()
        .bucket("beta")
        .key("w")
        .body(ByteStream::from_static(b"w"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = writer
        .create_bucket()
        .bucket("gamma")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    let e = writer
        .delete_bucket()
        .bucket("alpha")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "AccessDenied");
    writer
        .delete_object()
        .bucket("alpha")
        .key("w2")
        .send()
        .await
        .unwrap();
    assert!(!tmp.path().join("gamma").exists());

    // A presigned URL of the read key: a GET works, a PUT is refused.
    let presign =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(300))
            .unwrap();
    let url = reader
        .get_object()
        .bucket("alpha")
        .key("k")
        .presigned(presign.clone())
        .await
        .unwrap();
    let http = reqwest_like::Client::new();
    let (status, _, body) = http.get(url.uri(), &[]).await;
    assert_eq!((status, body.as_slice()), (200, b"secret".as_slice()));
    let url = reader
        .put_object()
        .bucket("alpha")
        .key("p")
        .presigned(presign)
        .await
        .unwrap();
    let (status, _, _) = http
        .request("PUT", url.uri(), &[("content-length", "0")])
        .await;
    assert_eq!(status, 403);

    // Removed while serving: the next request is refused.
    *live.0.lock().unwrap() = Arc::new(vec![app_key("reader", &["alpha"], Rights::Read)]);
    let e = writer
        .get_object()
        .bucket("alpha")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(code(&e), "InvalidAccessKeyId");
    reader
        .get_object()
        .bucket("alpha")
        .key("k")
        .send()
        .await
        .unwrap();
    // The owner's key still does everything.
    owner
        .delete_object()
        .bucket("beta")
        .key("k")
        .send()
        .await
        .unwrap();
    owner.delete_bucket().bucket("beta").send().await.unwrap();
    gateway.stop();
}

/// A minimal HTTP/1.1 client over a TCP socket (the test's "browser"):
/// unsigned requests with chosen headers.
mod reqwest_like {
    use std::collections::HashMap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub struct Client;

    impl Client {
        pub fn new() -> Self {
            Client
        }

        pub async fn get(
            &self,
            url: &str,
            headers: &[(&str, &str)],
        ) -> (u16, HashMap<String, String>, Vec<u8>) {
            self.request("GET", url, headers).await
        }

        pub async fn request(
            &self,
            method: &str,
            url: &str,
            headers: &[(&str, &str)],
        ) -> (u16, HashMap<String, String>, Vec<u8>) {
            let rest = url.trim_start_matches("http://");
            let (host, path) = rest.split_once('/').unwrap();
            let mut sock = tokio::net::TcpStream::connect(host).await.unwrap();
            let mut req =
                format!("{method} /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
            for (n, v) in headers {
                req.push_str(&format!("{n}: {v}\r\n"));
            }
            req.push_str("\r\n");
            sock.write_all(req.as_bytes()).await.unwrap();
            let mut raw = Vec::new();
            sock.read_to_end(&mut raw).await.unwrap();
            let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let head = String::from_utf8_lossy(&raw[..split]).into_owned();
            let mut lines = head.lines();
            let status = lines
                .next()
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let map: HashMap<String, String> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let mut body = raw[split + 4..].to_vec();
            if map.get("transfer-encoding").is_some_and(|t| t == "chunked") {
                body = dechunk(&body);
            }
            (status, map, body)
        }
    }

    fn dechunk(mut raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
                return out;
            };
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
            if size == 0 {
                return out;
            }
            out.extend_from_slice(&raw[end + 2..end + 2 + size]);
            raw = &raw[end + 4 + size..];
        }
    }
}

/// Issue 23, item 10: DeleteBucket waits for a write in flight and then
/// finds the bucket not empty (the write is never acknowledged into a
/// deleted bucket), and removes only what ferry made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_bucket_waits_for_writes_and_removes_only_what_ferry_made() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = ferry_gateway::start(
        listener,
        ferry_gateway::Served::Dir(tmp.path().to_owned()),
        config(),
    )
    .unwrap();
    let addr = gateway.addr.to_string();
    let c = client(&format!("http://{addr}"), KEY, SECRET);
    c.create_bucket().bucket("gamma").send().await.unwrap();
    // A PUT sends half its body and waits.
    let url = c
        .put_object()
        .bucket("gamma")
        .key("slow")
        .presigned(
            aws_sdk_s3::presigning::PresigningConfig::expires_in(std::time::Duration::from_secs(
                300,
            ))
            .unwrap(),
        )
        .await
        .unwrap();
    let uri: http::Uri = url.uri().parse().unwrap();
    let body = vec![7u8; 2 << 20];
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT {} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        uri.path_and_query().unwrap(),
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body[..1 << 20]).await.unwrap();
    // The write has begun once the bucket holds its temp file.
    let temp = tmp.path().join("gamma/.ferry/tmp");
    while std::fs::read_dir(&temp).unwrap().next().is_none() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let deleting = {
        let c = c.clone();
        tokio::spawn(async move { c.delete_bucket().bucket("gamma").send().await })
    };
    sock.write_all(&body[1 << 20..]).await.unwrap();
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let e = deleting.await.unwrap().unwrap_err();
    assert_eq!(code(&e), "BucketNotEmpty");
    let got = c
        .get_object()
        .bucket("gamma")
        .key("slow")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_length(), Some(2 << 20));

    // Deleting an empty bucket leaves what ferry did not make.
    c.create_bucket().bucket("delta").send().await.unwrap();
    let root = tmp.path().join("delta");
    std::fs::write(root.join("notes.txt"), b"mine").unwrap();
    std::fs::write(root.join(".ferry/ferry.toml"), b"# mine too\n").unwrap();
    c.delete_bucket().bucket("delta").send().await.unwrap();
    assert_eq!(std::fs::read(root.join("notes.txt")).unwrap(), b"mine");
    assert!(root.join(".ferry/ferry.toml").is_file());
    assert!(!root.join(".ferry").join(ferry::INDEX_FILE).exists());
    assert!(!root.join(".ferry/blobs").exists());
    assert!(!root.join(".ferry/gateway").exists());
    let e = c.head_bucket().bucket("delta").send().await.unwrap_err();
    assert_eq!(status(&e), 404);
    let names: Vec<String> = c
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(names, ["gamma"]);
    // A bucket with nothing else in its folder goes whole.
    c.create_bucket().bucket("epsilon").send().await.unwrap();
    c.delete_bucket().bucket("epsilon").send().await.unwrap();
    assert!(!tmp.path().join("epsilon").exists());
}

/// Issue 23, item 14: a part and its MD5 are one file (published by one
/// rename, so CompleteMultipartUpload never pairs a part with another's
/// digest), the uploads in progress are bounded, and an abandoned upload
/// goes after the configured age.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_carry_their_md5_uploads_are_bounded_and_abandoned_ones_go() {
    let s = serve_one(ferry_gateway::GatewayConfig {
        uploads: ferry_gateway::UploadLimits {
            max_age: std::time::Duration::from_secs(2),
            max_bytes: 11 << 20,
        },
        ..config()
    })
    .await;
    let c = client(&s.endpoint, KEY, SECRET);
    let up = c
        .create_multipart_upload()
        .bucket("photos")
        .key("big")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap().to_owned();
    let part = |body: Vec<u8>, n: i32| {
        c.upload_part()
            .bucket("photos")
            .key("big")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(body))
            .send()
    };
    let first = part(vec![b'a'; 5 << 20], 1).await.unwrap();
    let e1 = first.e_tag().unwrap().trim_matches('"').to_owned();
    let dir = s.bucket.dir().join("gateway/uploads").join(&id);
    let names = |dir: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "meta.json")
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&dir), [format!("1-{e1}.part")]);
    // Part 1 again, another body: the old one goes, and a completion
    // naming its ETag is refused rather than assembled from the new one.
    let again = part(vec![b'b'; 5 << 20], 1).await.unwrap();
    let e2 = again.e_tag().unwrap().trim_matches('"').to_owned();
    assert_eq!(names(&dir), [format!("1-{e2}.part")]);
    let complete = |etag: String| {
        c.complete_multipart_upload()
            .bucket("photos")
            .key("big")
            .upload_id(&id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .parts(
                        aws_sdk_s3::types::CompletedPart::builder()
                            .part_number(1)
                            .e_tag(format!("\"{etag}\""))
                            .build(),
                    )
                    .build(),
            )
            .send()
    };
    let e = complete(e1).await.unwrap_err();
    assert_eq!(code(&e), "InvalidPart");
    // 5 MiB are held; 7 more would pass the 11 MiB bound (a part being
    // replaced counts while both are on disk).
    let e = part(vec![b'c'; 7 << 20], 2).await.unwrap_err();
    assert_eq!(code(&e), "EntityTooLarge");
    assert_eq!(names(&dir), [format!("1-{e2}.part")]);
    complete(e2).await.unwrap();
    let (_, body) = s.bucket.get_bytes("big").await.unwrap();
    assert!(body.len() == 5 << 20 && body.iter().all(|b| *b == b'b'));
    // An upload nobody sends to is removed after its age.
    let idle = c
        .create_multipart_upload()
        .bucket("photos")
        .key("idle")
        .send()
        .await
        .unwrap();
    let idle_id = idle.upload_id().unwrap().to_owned();
    c.upload_part()
        .bucket("photos")
        .key("idle")
        .upload_id(&idle_id)
        .part_number(1)
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    loop {
        let listed = c
            .list_parts()
            .bucket("photos")
            .key("idle")
            .upload_id(&idle_id)
            .send()
            .await;
        match listed {
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            Err(e) => {
                assert_eq!(code(&e), "NoSuchUpload");
                break;
            }
        }
    }
    assert!(!s
        .bucket
        .dir()
        .join("gateway/uploads")
        .join(&idle_id)
        .exists());
}
