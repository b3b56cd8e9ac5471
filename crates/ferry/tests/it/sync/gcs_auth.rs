//! GCS service-account authentication. Google's token endpoint cannot be
//! reached here, so a local one stands in for it (the only mock in these
//! tests): it verifies the RS256-signed grant ferry sends with the public
//! half of the key, and answers a token; the object requests then go to
//! fake-gcs-server with it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{KeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use base64::Engine as _;
use ferry::remote::gcs::{GcsConfig, GcsRemote};
use ferry::remote::Remote;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves token requests on a loopback port: checks each grant's signature
/// and claims, counts them, answers a token. Returns the token URI.
async fn token_endpoint(public: Vec<u8>, email: &'static str, grants: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/token", listener.local_addr().unwrap());
    let aud = uri.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then the body its Content-Length announces.
            let body = loop {
                let n = sock.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break text[end + 4..end + 4 + len].to_owned();
                    }
                }
                assert!(n > 0, "connection closed mid-request");
            };
            let form: std::collections::BTreeMap<String, String> =
                url_form(&body).into_iter().collect();
            assert_eq!(
                form["grant_type"],
                "urn:ietf:params:oauth:grant-type:jwt-bearer"
            );
            let jwt = &form["assertion"];
            let (signed, sig) = jwt.rsplit_once('.').unwrap();
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public)
                .verify(signed.as_bytes(), &b64.decode(sig).unwrap())
                .expect("the grant is signed with the service account's key");
            let claims: serde_json::Value =
                serde_json::from_slice(&b64.decode(signed.split('.').nth(1).unwrap()).unwrap())
                    .unwrap();
            assert_eq!(claims["iss"], email);
            assert_eq!(claims["aud"], aud.as_str());
            assert!(claims["scope"].as_str().unwrap().contains("devstorage"));
            assert_eq!(
                claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
                3600
            );
            grants.fetch_add(1, Ordering::SeqCst);
            let answer =
                r#"{"access_token":"ya29.test-token","expires_in":3600,"token_type":"Bearer"}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
        }
    });
    uri
}

fn url_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_grants_are_signed_and_tokens_reused() {
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = key.as_der().unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der.as_ref())
    );
    let public = key.public_key().as_ref().to_vec();
    let email = "ferry-test@example.iam.gserviceaccount.com";
    let grants = Arc::new(AtomicUsize::new(0));
    let token_uri = token_endpoint(public, email, grants.clone()).await;
    let location = super::backends::GcsLocation::new();
    let remote = GcsRemote::new(&GcsConfig {
        service_account: Some(
            serde_json::json!({
                "type": "service_account",
                "client_email": email,
                "private_key": pem,
                "token_uri": token_uri,
            })
            .to_string(),
        ),
        ..location.config()
    })
    .unwrap();
    for _ in 0..3 {
        remote.list("").await.unwrap();
    }
    assert_eq!(
        grants.load(Ordering::SeqCst),
        1,
        "one token for many requests"
    );

    // A key file that is not a service account's is refused at once.
    for bad in [
        "not json".to_owned(),
        serde_json::json!({"client_email": email, "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}).to_string(),
    ] {
        let err = GcsRemote::new(&GcsConfig {
            service_account: Some(bad),
            ..location.config()
        })
        .unwrap_err();
        assert!(err.detail.contains("service") || err.detail.contains("private_key"), "{err}");
    }
}
