//! `ferry serve` driven by real S3 clients as child processes: aws-cli
//! (`s3 cp`, `s3 sync`, `s3api` with conditional headers, a 64 MiB
//! multipart upload in 8 MiB parts, a presigned URL fetched with curl) and
//! boto3 (every operation, a conditional-put race between two clients and
//! between a client and the local CLI). Both come from the suite's venv
//! (`./scripts/test.sh` installs them).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::support::{ferry_in_env, json, ok, stdout, FERRY};

struct Server {
    child: Child,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const AK: &str = "AKSERVETEST";
const SK: &str = "serve-secret";

fn venv_bin(name: &str) -> PathBuf {
    let python = std::env::var("FERRY_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("FERRY_TEST_PYTHON is not set: run the suite with ./scripts/test.sh (it installs aws-cli and boto3)")
    });
    Path::new(&python).with_file_name(name)
}

fn serve(dir: &Path, extra: &[&str]) -> Server {
    serve_with_env(dir, extra, &[])
}

fn aws(server: &Server, args: &[&str]) -> std::process::Output {
    Command::new(venv_bin("aws"))
        .env("AWS_ACCESS_KEY_ID", AK)
        .env("AWS_SECRET_ACCESS_KEY", SK)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_CA_BUNDLE")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .args(["--endpoint-url", &server.endpoint])
        .args(args)
        .output()
        .unwrap()
}

fn ferry(dir: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    ferry_env(dir, &[], args, stdin)
}

/// ferry in `dir` (the bucket found from there) with these variables set.
fn ferry_env(
    dir: &Path,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(FERRY)
        .current_dir(dir)
        .env_remove("FERRY_BUCKET")
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn aws_cli_copies_syncs_uploads_multipart_and_presigns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("media");
    std::fs::create_dir_all(&dir).unwrap();
    ok(ferry(&dir, &["init"], b""));
    let server = serve(&dir, &[]);
    // s3 cp of one file, then s3 sync of a tree.
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub dir")).unwrap();
    std::fs::write(src.join("a.txt"), b"alpha").unwrap();
    std::fs::write(src.join("sub dir/b.bin"), vec![9u8; 70_000]).unwrap();
    // Files written an hour ago (S3 listings carry whole seconds, and
    // `s3 sync` uploads a file newer than the listed copy).
    for f in ["a.txt", "sub dir/b.bin"] {
        ok(Command::new("touch")
            .args(["-d", "1 hour ago"])
            .arg(src.join(f))
            .output()
            .unwrap());
    }
    ok(aws(
        &server,
        &[
            "s3",
            "cp",
            src.join("a.txt").to_str().unwrap(),
            "s3://media/one/a.txt",
        ],
    ));
    ok(aws(
        &server,
        &["s3", "sync", src.to_str().unwrap(), "s3://media/tree"],
    ));
    assert_eq!(
        stdout(&ok(ferry(&dir, &["cat", "one/a.txt"], b""))),
        "alpha"
    );
    assert_eq!(
        ok(ferry(&dir, &["cat", "tree/sub dir/b.bin"], b"")).stdout,
        vec![9u8; 70_000]
    );
    // A second sync finds nothing to do.
    let again = ok(aws(
        &server,
        &["s3", "sync", src.to_str().unwrap(), "s3://media/tree"],
    ));
    assert_eq!(stdout(&again).trim(), "", "{}", stdout(&again));
    // s3api with conditional headers.
    let body = tmp.path().join("body");
    std::fs::write(&body, b"v1").unwrap();
    let put = ok(aws(
        &server,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "media",
            "--key",
            "c.txt",
            "--body",
            body.to_str().unwrap(),
            "--if-none-match",
            "*",
        ],
    ));
    let etag: serde_json::Value = serde_json::from_slice(&put.stdout).unwrap();
    let etag = etag["ETag"].as_str().unwrap().to_owned();
    let again = aws(
        &server,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "media",
            "--key",
            "c.txt",
            "--body",
            body.to_str().unwrap(),
            "--if-none-match",
            "*",
        ],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("PreconditionFailed"));
    ok(aws(
        &server,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "media",
            "--key",
            "c.txt",
            "--body",
            body.to_str().unwrap(),
            "--if-match",
            &etag,
        ],
    ));
    // 64 MiB in 8 MiB parts.
    let big = tmp.path().join("big.bin");
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    ok(aws(
        &server,
        &[
            "s3",
            "cp",
            big.to_str().unwrap(),
            "s3://media/big.bin",
            "--expected-size",
            "67108864",
        ],
    ));
    let head = ok(aws(
        &server,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "media",
            "--key",
            "big.bin",
        ],
    ));
    let head: serde_json::Value = serde_json::from_slice(&head.stdout).unwrap();
    assert!(head["ETag"].as_str().unwrap().ends_with("-8\""), "{head}");
    assert_eq!(head["ContentLength"], 64 << 20);
    let back = tmp.path().join("back.bin");
    ok(aws(
        &server,
        &["s3", "cp", "s3://media/big.bin", back.to_str().unwrap()],
    ));
    assert!(
        std::fs::read(&back).unwrap() == data,
        "the 64 MiB object came back whole"
    );
    // A presigned URL, fetched with curl.
    let url = stdout(&ok(aws(
        &server,
        &[
            "s3",
            "presign",
            "s3://media/one/a.txt",
            "--expires-in",
            "60",
        ],
    )));
    let got = ok(Command::new("curl")
        .args(["-sf", url.trim()])
        .output()
        .unwrap());
    assert_eq!(got.stdout, b"alpha");
    // Without a signature: refused.
    let denied = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("{}/media/one/a.txt", server.endpoint),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&denied), "403");
}

#[test]
fn boto3_runs_every_operation_and_conditional_races() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("docs");
    std::fs::create_dir_all(&dir).unwrap();
    ok(ferry(&dir, &["init"], b""));
    let server = serve(&dir, &[]);
    let script = r#"
import sys, json, threading, subprocess, urllib.request
import boto3, botocore
endpoint, ferry_bin, bucket_dir = sys.argv[1:4]
def client(secret='serve-secret', key='AKSERVETEST'):
    return boto3.client('s3', endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name='us-east-1')
s3, other = client(), client()
out = {}
def code(f):
    try:
        f(); return 'ok'
    except botocore.exceptions.ClientError as e:
        return e.response['Error']['Code']
out['buckets'] = [b['Name'] for b in s3.list_buckets()['Buckets']]
s3.head_bucket(Bucket='docs')
out['location'] = s3.get_bucket_location(Bucket='docs').get('LocationConstraint')
r = s3.put_object(Bucket='docs', Key='k', Body=b'base', ContentType='text/x-k', Metadata={'owner': 'ann'})
etag = r['ETag']
h = s3.head_object(Bucket='docs', Key='k')
out['head'] = [h['ContentType'], h['Metadata'], h['ContentLength']]
out['range'] = s3.get_object(Bucket='docs', Key='k', Range='bytes=1-2')['Body'].read().decode()
out['304'] = code(lambda: s3.get_object(Bucket='docs', Key='k', IfNoneMatch=etag))
out['412'] = code(lambda: s3.get_object(Bucket='docs', Key='k', IfMatch='"nope"'))
# Two clients replace the same version at once: one wins.
results = []
def race(c, body):
    results.append(code(lambda: c.put_object(Bucket='docs', Key='k', Body=body, IfMatch=etag)))
ts = [threading.Thread(target=race, args=(c, b)) for c, b in [(s3, b'one'), (other, b'two')]]
[t.start() for t in ts]; [t.join() for t in ts]
out['race'] = sorted(results)
# A client against the local CLI: the CLI writes, the client's If-Match on the old ETag fails.
cur = s3.head_object(Bucket='docs', Key='k')['ETag']
subprocess.run([ferry_bin, '--bucket', bucket_dir, 'put', 'k'], input=b'from the cli', check=True)
out['after_cli'] = code(lambda: s3.put_object(Bucket='docs', Key='k', Body=b'late', IfMatch=cur))
out['create_twice'] = code(lambda: s3.put_object(Bucket='docs', Key='k', Body=b'x', IfNoneMatch='*'))
s3.copy_object(Bucket='docs', Key='k2', CopySource={'Bucket': 'docs', 'Key': 'k'}, MetadataDirective='REPLACE', Metadata={'v': '2'}, ContentType='text/x-two')
h2 = s3.head_object(Bucket='docs', Key='k2')
out['copy'] = [h2['Metadata'], h2['ContentType']]
for i in range(5):
    s3.put_object(Bucket='docs', Key=f'list/{i}', Body=b'x')
p = s3.list_objects_v2(Bucket='docs', Prefix='list/', MaxKeys=2)
out['page'] = [len(p['Contents']), p['IsTruncated']]
p2 = s3.list_objects_v2(Bucket='docs', Prefix='list/', StartAfter='list/3')
out['after'] = [o['Key'] for o in p2['Contents']]
v1 = s3.list_objects(Bucket='docs', Prefix='list/', MaxKeys=3)
out['v1'] = [len(v1['Contents']), v1['IsTruncated'], v1.get('NextMarker')]
enc = s3.list_objects_v2(Bucket='docs', Prefix='list/', EncodingType='url', MaxKeys=1)
out['encoded'] = enc['Contents'][0]['Key']
d = s3.delete_objects(Bucket='docs', Delete={'Objects': [{'Key': f'list/{i}'} for i in range(5)]})
out['deleted'] = len(d['Deleted'])
s3.delete_object(Bucket='docs', Key='k2')
mp = s3.create_multipart_upload(Bucket='docs', Key='mp', ContentType='application/x-mp')
p1 = s3.upload_part(Bucket='docs', Key='mp', UploadId=mp['UploadId'], PartNumber=1, Body=b'a' * (5 << 20))
p2 = s3.upload_part_copy(Bucket='docs', Key='mp', UploadId=mp['UploadId'], PartNumber=2, CopySource={'Bucket': 'docs', 'Key': 'k'}, CopySourceRange='bytes=0-3')
out['uploads'] = len(s3.list_multipart_uploads(Bucket='docs')['Uploads'])
out['parts'] = len(s3.list_parts(Bucket='docs', Key='mp', UploadId=mp['UploadId'])['Parts'])
c = s3.complete_multipart_upload(Bucket='docs', Key='mp', UploadId=mp['UploadId'], MultipartUpload={'Parts': [{'PartNumber': 1, 'ETag': p1['ETag']}, {'PartNumber': 2, 'ETag': p2['CopyPartResult']['ETag']}]})
out['mp'] = [c['ETag'].endswith('-2"'), s3.head_object(Bucket='docs', Key='mp')['ContentLength']]
m2 = s3.create_multipart_upload(Bucket='docs', Key='gone')
s3.abort_multipart_upload(Bucket='docs', Key='gone', UploadId=m2['UploadId'])
out['aborted'] = code(lambda: s3.list_parts(Bucket='docs', Key='gone', UploadId=m2['UploadId']))
out['wrong_secret'] = code(lambda: client(secret='bad').list_objects_v2(Bucket='docs'))
out['unknown_key'] = code(lambda: client(key='NOBODY').list_objects_v2(Bucket='docs'))
out['bad_key'] = code(lambda: s3.put_object(Bucket='docs', Key='a/../b', Body=b'x'))
out['no_bucket'] = code(lambda: s3.head_object(Bucket='nope', Key='x'))
url = s3.generate_presigned_url('get_object', Params={'Bucket': 'docs', 'Key': 'k'}, ExpiresIn=60)
out['presigned'] = urllib.request.urlopen(url).read().decode()
print(json.dumps(out))
"#;
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .arg(&server.endpoint)
        .arg(FERRY)
        .arg(dir.join(".ferry"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["buckets"], serde_json::json!(["docs"]));
    assert_eq!(
        seen["head"],
        serde_json::json!(["text/x-k", {"owner": "ann"}, 4])
    );
    assert_eq!(seen["range"], "as");
    assert_eq!(seen["304"], "304");
    assert_eq!(seen["412"], "PreconditionFailed");
    assert_eq!(
        seen["race"],
        serde_json::json!(["PreconditionFailed", "ok"])
    );
    assert_eq!(seen["after_cli"], "PreconditionFailed");
    assert_eq!(seen["create_twice"], "PreconditionFailed");
    assert_eq!(seen["copy"], serde_json::json!([{"v": "2"}, "text/x-two"]));
    assert_eq!(seen["page"], serde_json::json!([2, true]));
    assert_eq!(seen["after"], serde_json::json!(["list/4"]));
    assert_eq!(seen["v1"], serde_json::json!([3, true, "list/2"]));
    assert_eq!(seen["encoded"], "list/0");
    assert_eq!(seen["deleted"], 5);
    assert_eq!(seen["uploads"], 1);
    assert_eq!(seen["parts"], 2);
    assert_eq!(seen["mp"], serde_json::json!([true, (5 << 20) + 4]));
    assert_eq!(seen["aborted"], "NoSuchUpload");
    assert_eq!(seen["wrong_secret"], "SignatureDoesNotMatch");
    assert_eq!(seen["unknown_key"], "InvalidAccessKeyId");
    assert_eq!(seen["bad_key"], "InvalidArgument");
    assert_eq!(seen["no_bucket"], "404");
    assert_eq!(seen["presigned"], "from the cli");
    // What the clients wrote is in the bucket for the CLI.
    assert_eq!(
        stdout(&ok(ferry(&dir, &["cat", "mp"], b""))).len(),
        (5 << 20) + 4
    );
}

fn serve_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(FERRY);
    cmd.current_dir(dir)
        .env_remove("FERRY_BUCKET")
        .env("FERRY_SERVE_ACCESS_KEY_ID", AK)
        .env("FERRY_SERVE_SECRET_ACCESS_KEY", SK)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("access key id") {
        if err.read(&mut byte).unwrap() == 0 {
            panic!("ferry serve stopped: {}", String::from_utf8_lossy(&seen));
        }
        seen.push(byte[0]);
    }
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = err.read_to_end(&mut sink);
    });
    Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

/// A bucket `ROOT/site` syncing with a new prefix of the moto server's
/// `ferry-test` bucket, served with the signer minting URLs for moto.
struct UpstreamSite {
    dir: PathBuf,
    moto: String,
    server: Server,
}

impl UpstreamSite {
    fn start(root: &Path, config: &str) -> Self {
        let moto = std::env::var("FERRY_TEST_MOTO_ENDPOINT")
            .expect("FERRY_TEST_MOTO_ENDPOINT is not set: run the suite with ./scripts/test.sh");
        let dir = root.join("site");
        std::fs::create_dir_all(&dir).unwrap();
        let env = Self::env_for(&moto);
        let url = format!("s3://ferry-test/site{:016x}", rand::random::<u64>());
        ok(ferry_env(
            &dir,
            &env,
            &["init", "--remote", &url, "--path-style"],
            b"",
        ));
        std::fs::write(dir.join(".ferry/ferry.toml"), config).unwrap();
        let server = serve_with_env(
            &dir,
            &["--signer-base", "/api", "--signer-target", "upstream"],
            &env,
        );
        UpstreamSite { dir, moto, server }
    }

    fn env_for(moto: &str) -> [(&'static str, &str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_ENDPOINT_URL", moto),
        ]
    }

    /// The credentials and endpoint of the site's remote.
    fn env(&self) -> [(&'static str, &str); 3] {
        Self::env_for(&self.moto)
    }
}

const TOKENS: &str = r#"
[serve.tokens.app]
token = "app-token-for-tests"
prefixes = ["uploads/"]

[serve.tokens.reader]
token = "reader-token-for-tests"
verbs = ["download", "list", "status"]
"#;

/// The signer against the moto process: URLs minted for the upstream
/// store upload and download there, a token outside its prefix (or verb)
/// is refused, expiry is clamped and carried in the URL, listing and
/// conditional delete go through it; what was uploaded reaches the bucket
/// at its next sync.
#[test]
fn signer_mints_upstream_urls_that_moto_honours() {
    let tmp = tempfile::tempdir().unwrap();
    let site = UpstreamSite::start(tmp.path(), TOKENS);
    let (server, moto) = (&site.server, &site.moto);
    let script = r#"
import sys, json, time, requests
base = sys.argv[1] + '/api'
app = {'Authorization': 'Bearer app-token-for-tests'}
reader = {'Authorization': 'Bearer reader-token-for-tests'}
out = {}
out['health'] = requests.get(base + '/health').json()
out['no_token'] = requests.post(base + '/v1/sign/upload', json={'key': 'uploads/a.txt'}).status_code
up = requests.post(base + '/v1/sign/upload', headers=app, json={'key': 'uploads/a.txt', 'contentType': 'text/plain', 'size': 5}).json()
out['points_at_moto'] = up['url'].startswith(sys.argv[2])
out['put'] = requests.request(up['method'], up['url'], data=b'hello', headers=up.get('headers', {})).status_code
down = requests.post(base + '/v1/sign/download', headers=reader, json={'key': 'uploads/a.txt'}).json()
out['get'] = requests.get(down['url']).text
out['outside_prefix'] = requests.post(base + '/v1/sign/upload', headers=app, json={'key': 'private/x'}).status_code
out['wrong_verb'] = requests.post(base + '/v1/sign/upload', headers=reader, json={'key': 'uploads/b'}).status_code
out['bad_key'] = requests.post(base + '/v1/sign/upload', headers=app, json={'key': 'uploads/../x'}).status_code
out['malformed'] = requests.post(base + '/v1/sign/upload', headers=app, data=b'{nope').status_code
# Expiry is clamped to the maximum (900 s by default) and carried in the
# URL; moto does not check presigned expiry (measured: an expired URL gets
# 200), so the refusal of an expired URL is tested on the local target.
from urllib.parse import urlparse, parse_qs
long = requests.post(base + '/v1/sign/download', headers=reader, json={'key': 'uploads/a.txt', 'expiresIn': 100000}).json()
out['clamped'] = parse_qs(urlparse(long['url']).query)['X-Amz-Expires'][0]
short = requests.post(base + '/v1/sign/download', headers=reader, json={'key': 'uploads/a.txt', 'expiresIn': 1}).json()
out['short'] = parse_qs(urlparse(short['url']).query)['X-Amz-Expires'][0]
items = requests.post(base + '/v1/list', headers=app, json={'prefix': 'uploads/'}).json()['items']
out['listed'] = [i['key'] for i in items]
etag = items[0]['etag']
out['delete_stale'] = requests.post(base + '/v1/delete', headers=app, json={'key': 'uploads/a.txt', 'ifMatch': '"0123"'}).status_code
out['delete'] = requests.post(base + '/v1/delete', headers=app, json={'key': 'uploads/a.txt', 'ifMatch': etag}).status_code
out['after_delete'] = requests.get(requests.post(base + '/v1/sign/download', headers=reader, json={'key': 'uploads/a.txt'}).json()['url']).status_code
print(json.dumps(out))
"#;
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .arg(&server.endpoint)
        .arg(moto)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["health"]["ok"], true, "{seen}");
    assert_eq!(seen["no_token"], 401);
    assert_eq!(seen["points_at_moto"], true);
    assert_eq!(seen["put"], 200);
    assert_eq!(seen["get"], "hello");
    assert_eq!(seen["outside_prefix"], 403);
    assert_eq!(seen["wrong_verb"], 403);
    assert_eq!(seen["bad_key"], 400);
    assert_eq!(seen["malformed"], 400);
    assert_eq!(seen["clamped"], "900");
    assert_eq!(seen["short"], "1");
    assert_eq!(seen["listed"], serde_json::json!(["uploads/a.txt"]));
    assert_eq!(seen["delete_stale"], 412);
    assert_eq!(seen["delete"], 204);
    assert_eq!(seen["after_delete"], 404);
}

/// The signer pointed at the gateway itself (works offline): a minted
/// upload lands in the bucket, an expired URL is refused; the status and
/// object-state endpoints answer; with `--watch`, a write by the CLI is
/// seen as events on `/v1/events`.
#[test]
fn signer_mints_local_urls_and_apps_see_state_and_events() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let remote = tmp.path().join("remote");
    ok(ferry(
        &dir,
        &["init", "--remote", &format!("file://{}", remote.display())],
        b"",
    ));
    std::fs::write(dir.join(".ferry/ferry.toml"), TOKENS).unwrap();
    let server = serve(&dir, &["--signer-base", "/api", "--watch"]);
    let script = r#"
import sys, json, time, threading, subprocess, requests
base, ferry_bin, bucket = sys.argv[1] + '/api', sys.argv[2], sys.argv[3]
app = {'Authorization': 'Bearer app-token-for-tests'}
out = {}
up = requests.post(base + '/v1/sign/upload', headers=app, json={'key': 'uploads/pic.png', 'contentType': 'image/png'}).json()
out['points_here'] = up['url'].startswith(sys.argv[1])
# A caller that reached the gateway by another name gets URLs for it.
port = sys.argv[1].rsplit(':', 1)[1]
named = requests.post(base + '/v1/sign/download', headers={**app, 'Host': 'localhost:' + port}, json={'key': 'uploads/pic.png'}).json()
out['by_name'] = named['url'].startswith('http://localhost:' + port + '/')
out['put'] = requests.put(up['url'], data=b'png bytes', headers=up.get('headers', {})).status_code
short = requests.post(base + '/v1/sign/download', headers=app, json={'key': 'uploads/pic.png', 'expiresIn': 1}).json()
time.sleep(2.5)
out['expired'] = requests.get(short['url']).status_code
out['state'] = requests.get(base + '/v1/objects/uploads%2Fpic.png/state', headers=app).json()
out['state_outside'] = requests.get(base + '/v1/objects/other/state', headers=app).status_code
out['status'] = requests.get(base + '/v1/status', headers=app).json()
events = []
def listen():
    with requests.get(base + '/v1/events', headers=app, stream=True, timeout=20) as r:
        for line in r.iter_lines():
            if line.startswith(b'data: '):
                events.append(json.loads(line[6:]))
                if len(events) >= 2:
                    return
t = threading.Thread(target=listen, daemon=True)
t.start()
time.sleep(0.5)
subprocess.run([ferry_bin, '--bucket', bucket, 'put', 'uploads/late.txt'], input=b'late', check=True)
t.join(15)
out['events'] = [e.get('event') for e in events]
print(json.dumps(out))
"#;
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .arg(&server.endpoint)
        .arg(FERRY)
        .arg(dir.join(".ferry"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["points_here"], true, "{seen}");
    assert_eq!(seen["by_name"], true, "{seen}");
    assert_eq!(seen["put"], 200);
    assert_eq!(seen["expired"], 403);
    assert_eq!(seen["state"]["cached"], true, "{seen}");
    assert_eq!(seen["state"]["canDisplay"], true, "{seen}");
    assert_eq!(seen["state_outside"], 403);
    assert!(seen["status"]["total"].as_u64().unwrap() >= 1, "{seen}");
    assert!(
        seen["events"].as_array().is_some_and(|e| e.len() >= 2),
        "events from the leader reach the stream: {seen}"
    );
    assert_eq!(
        stdout(&ok(ferry(&dir, &["cat", "uploads/pic.png"], b""))),
        "png bytes"
    );
}

/// Two replicas that hold only a token sync through the signer
/// (`signer+http://`), which mints URLs for the moto bucket behind the
/// gateway: keys with metadata travel both ways, a delete reaches the other
/// replica, concurrent edits are a conflict, the probe finds the store's
/// conditional writes through the signed headers, and a token whose
/// prefixes do not cover `.ferry/` is refused with a message naming it.
#[test]
fn signer_replicas_sync_two_buckets_through_it() {
    let tmp = tempfile::tempdir().unwrap();
    let site = UpstreamSite::start(
        tmp.path(),
        &format!("{TOKENS}\n[serve.tokens.sync]\ntoken = \"sync-token-for-tests\"\nprefixes = [\"\", \".ferry/\"]\n"),
    );
    let server = &site.server;
    let remote = format!(
        "signer+http://{}/api",
        server.endpoint.trim_start_matches("http://")
    );
    let run_with = |token: &str, bucket: &str, args: &[&str], stdin: &[u8]| {
        let env = [("FERRY_SIGNER_TOKEN", token)];
        ferry_in_env(tmp.path(), bucket, &env, args, Some(stdin))
    };
    let run = |bucket: &str, args: &[&str], stdin: &[u8]| {
        run_with("sync-token-for-tests", bucket, args, stdin)
    };
    for b in ["a", "b"] {
        ok(run(b, &["init", "--remote", &remote], b""));
    }
    let keys = ["notes ", "ü/€ #%+&=.txt", "a//b", "photos/cat.jpg"];
    for k in keys {
        ok(run(
            "a",
            &[
                "put",
                k,
                "--meta",
                "owner=ann",
                "--content-type",
                "image/jpeg",
            ],
            k.as_bytes(),
        ));
    }
    let report = json(&ok(run("a", &["sync", "--json"], b"")));
    assert_eq!(report["pushed"], keys.len(), "{report}");
    // What the probe found through the signer: moto's own conditions.
    let shown = json(&ok(run("a", &["remote", "show", "--json"], b"")));
    assert_eq!(shown["probe"]["conditional_put"], true, "{shown}");
    assert_eq!(shown["probe"]["conditional_delete"], true, "{shown}");
    let report = json(&ok(run("b", &["sync", "--json"], b"")));
    assert_eq!(report["pulled"], keys.len(), "{report}");
    for k in keys {
        assert_eq!(stdout(&ok(run("b", &["cat", k], b""))), k);
        let stat = json(&ok(run("b", &["stat", k, "--json"], b"")));
        assert_eq!(stat["metadata"]["owner"], "ann", "{stat}");
        assert_eq!(stat["content_type"], "image/jpeg", "{stat}");
    }
    // An edit and a delete travel back.
    ok(run("b", &["put", "notes "], b"edited on b"));
    ok(run("b", &["rm", "a//b"], b""));
    ok(run("b", &["sync"], b""));
    ok(run("a", &["sync"], b""));
    assert_eq!(
        stdout(&ok(run("a", &["cat", "notes "], b""))),
        "edited on b"
    );
    assert!(!run("a", &["cat", "a//b"], b"").status.success());
    // Both edit one key: the second to sync has a conflict, nothing lost.
    ok(run("a", &["put", "photos/cat.jpg"], b"from a"));
    ok(run("b", &["put", "photos/cat.jpg"], b"from b"));
    ok(run("a", &["sync"], b""));
    let out = run("b", &["sync", "--json"], b"");
    assert_eq!(out.status.code(), Some(3), "conflicts left: exit 3");
    let report = json(&out);
    assert_eq!(report["conflicts"][0]["key"], "photos/cat.jpg", "{report}");
    // The gateway's own bucket, which syncs with the store directly, sees
    // what the replicas wrote.
    ok(ferry_env(&site.dir, &site.env(), &["sync"], b""));
    assert_eq!(
        stdout(&ok(ferry(&site.dir, &["cat", "notes "], b""))),
        "edited on b"
    );
    // A token limited to uploads/ cannot sync: refused, named, nothing made.
    let out = run_with(
        "app-token-for-tests",
        "c",
        &["init", "--remote", &remote],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("403") && err.contains("FERRY_SIGNER_TOKEN"),
        "{err}"
    );
    assert!(!tmp.path().join("c").exists());
    // No token at all: 401, named.
    let out = run_with("", "d", &["init", "--remote", &remote], b"");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("401"), "{err}");
}

/// ferry replicas whose remote is the gateway itself: one over `s3://`
/// with the gateway's key pair, one through the local signer with a
/// token. Their `.ferry/` objects (probes, journal records, an encrypted
/// replica's key file) are kept by the gateway apart from the bucket's
/// objects, with the conditions held; both replicas and the gateway's
/// bucket end up with the same objects.
#[test]
fn replicas_sync_with_the_gateway_over_s3_and_the_local_signer() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    std::fs::create_dir_all(&hub).unwrap();
    ok(ferry(&hub, &["init"], b""));
    std::fs::write(
        hub.join(".ferry/ferry.toml"),
        "[serve.tokens.sync]\ntoken = \"sync-token-for-tests\"\nprefixes = [\"\", \".ferry/\"]\n",
    )
    .unwrap();
    let server = serve(&hub, &["--signer-base", "/api", "--name", "hub"]);
    let run = |bucket: &str, args: &[&str], stdin: &[u8]| {
        let env = [
            ("AWS_ACCESS_KEY_ID", AK),
            ("AWS_SECRET_ACCESS_KEY", SK),
            ("FERRY_SIGNER_TOKEN", "sync-token-for-tests"),
            ("FERRY_PASSPHRASE", "gateway words"),
        ];
        ferry_in_env(tmp.path(), bucket, &env, args, Some(stdin))
    };
    let signer = format!(
        "signer+http://{}/api",
        server.endpoint.trim_start_matches("http://")
    );
    ok(run(
        "s3",
        &[
            "init",
            "--remote",
            "s3://hub",
            "--endpoint",
            &server.endpoint,
            "--path-style",
        ],
        b"",
    ));
    ok(run("signed", &["init", "--remote", &signer], b""));
    // The probe found the gateway's conditions, for both kinds.
    for b in ["s3", "signed"] {
        ok(run(b, &["sync"], b""));
        let shown = json(&ok(run(b, &["remote", "show", "--json"], b"")));
        assert_eq!(shown["probe"]["conditional_put"], true, "{b}: {shown}");
        assert_eq!(shown["probe"]["conditional_delete"], true, "{b}: {shown}");
    }
    ok(run(
        "s3",
        &["put", "from s3/a.txt", "--meta", "who=s3"],
        b"written over s3",
    ));
    let report = json(&ok(run("s3", &["sync", "--json"], b"")));
    assert_eq!(report["pushed"], 1, "{report}");
    let report = json(&ok(run("signed", &["sync", "--json"], b"")));
    assert_eq!(report["pulled"], 1, "{report}");
    assert_eq!(
        stdout(&ok(run("signed", &["cat", "from s3/a.txt"], b""))),
        "written over s3"
    );
    ok(run(
        "signed",
        &["put", "from signer.txt"],
        b"written through the signer",
    ));
    ok(run("signed", &["rm", "from s3/a.txt"], b""));
    ok(run("signed", &["sync"], b""));
    ok(run("s3", &["sync"], b""));
    assert_eq!(
        stdout(&ok(run("s3", &["cat", "from signer.txt"], b""))),
        "written through the signer"
    );
    assert!(!run("s3", &["cat", "from s3/a.txt"], b"").status.success());
    // The gateway's bucket holds the objects, and none of ferry's own.
    let listed = stdout(&ok(ferry(&hub, &["ls"], b"")));
    assert_eq!(listed.trim(), "from signer.txt", "{listed}");
    // The journal records are the gateway's, listed under .ferry/ only.
    let journal = aws(
        &server,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "hub",
            "--prefix",
            ".ferry/journal/",
        ],
    );
    let journal: serde_json::Value = serde_json::from_slice(&ok(journal).stdout).unwrap();
    assert!(
        journal["Contents"].as_array().is_some_and(|c| c.len() >= 2),
        "{journal}"
    );
    let all = aws(&server, &["s3api", "list-objects-v2", "--bucket", "hub"]);
    let all: serde_json::Value = serde_json::from_slice(&ok(all).stdout).unwrap();
    assert_eq!(all["Contents"].as_array().map(Vec::len), Some(1), "{all}");
    // Conditions on them hold: a second create of a record is refused.
    let key = journal["Contents"][0]["Key"].as_str().unwrap().to_owned();
    let out = aws(
        &server,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "hub",
            "--key",
            &key,
            "--if-none-match",
            "*",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PreconditionFailed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An encrypted replica at the root: its key file lives at the gateway
    // too, and a second device joins with the passphrase.
    let enc_hub = tmp.path().join("enchub");
    std::fs::create_dir_all(&enc_hub).unwrap();
    ok(ferry(&enc_hub, &["init"], b""));
    let enc_server = serve(&enc_hub, &["--name", "enchub"]);
    let mut init = vec![
        "init",
        "--encrypt",
        "--remote",
        "s3://enchub",
        "--endpoint",
        enc_server.endpoint.as_str(),
        "--path-style",
    ];
    init.extend(["--kdf-memory", "19", "--kdf-passes", "2"]);
    ok(run("enc1", &init, b""));
    ok(run("enc1", &["put", "secret.txt"], b"sealed words"));
    ok(run("enc1", &["sync"], b""));
    let join = vec![
        "init",
        "--remote",
        "s3://enchub",
        "--endpoint",
        enc_server.endpoint.as_str(),
        "--path-style",
    ];
    ok(run("enc2", &join, b""));
    ok(run("enc2", &["sync"], b""));
    assert_eq!(
        stdout(&ok(run("enc2", &["cat", "secret.txt"], b""))),
        "sealed words"
    );
    // The gateway's bucket holds only ciphertext under an opaque name.
    let names = stdout(&ok(ferry(&enc_hub, &["ls"], b"")));
    assert!(!names.contains("secret"), "{names}");
    let file = aws(
        &enc_server,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "enchub",
            "--key",
            ".ferry/key.json",
        ],
    );
    ok(file);
}

/// Events reach followers: with `ferry watch` leading in its own process,
/// a `ferry serve` without `--watch` streams the leader's sync events on
/// `/v1/events` (through the bucket's event log).
#[test]
fn events_of_another_processs_engine_reach_the_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("app");
    std::fs::create_dir_all(&dir).unwrap();
    let remote = tmp.path().join("remote");
    ok(ferry(
        &dir,
        &["init", "--remote", &format!("file://{}", remote.display())],
        b"",
    ));
    std::fs::write(dir.join(".ferry/ferry.toml"), TOKENS).unwrap();
    let mut leader = Command::new(FERRY)
        .current_dir(&dir)
        .env_remove("FERRY_BUCKET")
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The leader has taken the lock once its pid is recorded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dir.join(".ferry/leader.pid").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "ferry watch never led"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let server = serve(&dir, &["--signer-base", "/api"]);
    let script = r#"
import sys, json, time, threading, subprocess, requests
base, ferry_bin, bucket = sys.argv[1] + '/api', sys.argv[2], sys.argv[3]
app = {'Authorization': 'Bearer app-token-for-tests'}
events = []
def listen():
    with requests.get(base + '/v1/events', headers=app, stream=True, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith(b'data: '):
                e = json.loads(line[6:])
                events.append(e)
                if e.get('event') == 'sync-completed' and e['result']['pushed'] >= 1:
                    return
t = threading.Thread(target=listen, daemon=True)
t.start()
time.sleep(0.5)
subprocess.run([ferry_bin, '--bucket', bucket, 'put', 'uploads/by-cli.txt'], input=b'x', check=True)
t.join(25)
print(json.dumps(events))
"#;
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .arg(&server.endpoint)
        .arg(FERRY)
        .arg(dir.join(".ferry"))
        .output()
        .unwrap();
    let _ = leader.kill();
    let _ = leader.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = seen
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(
        seen.as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"] == "object-pushed" && e["key"] == "uploads/by-cli.txt"),
        "the leader's push reached the follower's stream: {names:?}"
    );
    assert!(names.contains(&"sync-completed"), "{names:?}");
}

/// Issue 23, item 8: header-signed SigV2 (boto3 with
/// `signature_version='s3'`) is refused; presigned URLs (SigV4, and SigV2
/// as aws-cli v1 and boto3 presign by default) living over 7 days are
/// refused, up to 7 days accepted.
#[test]
fn sigv2_and_presigned_urls_over_a_week_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("docs");
    std::fs::create_dir_all(&dir).unwrap();
    ok(ferry(&dir, &["init"], b""));
    let server = serve(&dir, &[]);
    let script = r#"
import sys, json, requests, boto3, botocore
from botocore.config import Config
endpoint = sys.argv[1]
def client(version):
    return boto3.client('s3', endpoint_url=endpoint, aws_access_key_id='AKSERVETEST',
        aws_secret_access_key='serve-secret', region_name='us-east-1',
        config=Config(signature_version=version, s3={'addressing_style': 'path'}))
v4, v2 = client('s3v4'), client('s3')
v4.put_object(Bucket='docs', Key='x.txt', Body=b'x')
out = {}
try:
    v2.get_object(Bucket='docs', Key='x.txt')
    out['v2_header'] = 200
except botocore.exceptions.ClientError as e:
    out['v2_header'] = e.response['ResponseMetadata']['HTTPStatusCode']
    out['v2_code'] = e.response['Error']['Code']
for client, v in [(v4, 'v4'), (v2, 'v2')]:
    for name, secs in [('week', 7 * 24 * 3600 - 60), ('over_a_week', 7 * 24 * 3600 + 3600)]:
        url = client.generate_presigned_url('get_object', Params={'Bucket': 'docs', 'Key': 'x.txt'}, ExpiresIn=secs)
        out[v + '_' + name] = requests.get(url).status_code
# A presigned V2 URL is a GET of its object: an extra x-amz header breaks it.
url = v2.generate_presigned_url('get_object', Params={'Bucket': 'docs', 'Key': 'x.txt'}, ExpiresIn=60)
out['v2_extra_header'] = requests.get(url, headers={'x-amz-copy-source': 'docs/x.txt'}).status_code
print(json.dumps(out))
"#;
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .arg(&server.endpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["v2_header"], 400, "{seen}");
    assert_eq!(seen["v2_code"], "InvalidRequest", "{seen}");
    for v in ["v4", "v2"] {
        assert_eq!(seen[format!("{v}_week")], 200, "{seen}");
        assert_eq!(seen[format!("{v}_over_a_week")], 400, "{seen}");
    }
    assert_eq!(seen["v2_extra_header"], 403, "{seen}");
}

/// Issue 23, item 12: a key pair made at the first start is stored with
/// mode 0600 even over a leftover temp file, and its secret is not
/// printed where it is not read by a person (a log); a short bearer
/// token is refused.
#[test]
fn serve_keys_are_private_and_short_tokens_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("docs");
    std::fs::create_dir_all(&dir).unwrap();
    ok(ferry(&dir, &["init"], b""));
    let leftover = dir.join(".ferry/serve-keys.json.tmp");
    std::fs::write(&leftover, b"old").unwrap();
    std::fs::set_permissions(&leftover, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(FERRY)
        .current_dir(&dir)
        .env_remove("FERRY_BUCKET")
        .env_remove("FERRY_SERVE_ACCESS_KEY_ID")
        .env_remove("FERRY_SERVE_SECRET_ACCESS_KEY")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("secret access key") {
        if err.read(&mut byte).unwrap() == 0 {
            break;
        }
        seen.push(byte[0]);
    }
    while !seen.ends_with(b"\n") {
        if err.read(&mut byte).unwrap() == 0 {
            break;
        }
        seen.push(byte[0]);
    }
    let _ = child.kill();
    let _ = child.wait();
    let file = dir.join(".ferry/serve-keys.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let keys: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let secret = keys["secret_access_key"].as_str().unwrap();
    let printed = String::from_utf8_lossy(&seen).into_owned();
    assert!(printed.contains("serve-keys.json"), "{printed}");
    assert!(!printed.contains(secret), "{printed}");
    // A short token.
    std::fs::write(
        dir.join(".ferry/ferry.toml"),
        "[serve.tokens.web]\ntoken = \"short\"\n",
    )
    .unwrap();
    let out = Command::new(FERRY)
        .current_dir(&dir)
        .env_remove("FERRY_BUCKET")
        .args(["serve", "--listen", "127.0.0.1:0", "--signer-base", "/api"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shorter than 16"), "{err}");
}

/// What stock S3 tools ask before doing anything, and the object headers
/// they expect back (issue 23, item 17): `aws s3 ls` (ListBuckets with
/// `CreationDate` and an owner), versioning and versions of an
/// unversioned bucket, GetObjectAttributes, `partNumber` reads with
/// `PartsCount`, the read conditions, stored `Cache-Control`, `Expires`,
/// `Content-Disposition`, `-Encoding`, `-Language`, non-ASCII metadata as
/// sent, a `Transfer-Encoding: chunked` upload, DeleteObjects over 1,000
/// keys, v1 markers, a copy onto itself, and a folder `v3` served as `v3`
/// (s3s refuses such a name as a copy source: copies within it fail).
#[test]
fn stock_s3_tools_get_what_they_ask_for() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stock");
    std::fs::create_dir_all(&dir).unwrap();
    ok(ferry(&dir, &["init"], b""));
    let server = serve(&dir, &[]);
    let ls = ok(aws(&server, &["s3", "ls"]));
    assert!(
        stdout(&ls).trim_end().ends_with(" stock"),
        "{}",
        stdout(&ls)
    );
    let script = r#"
import sys, json, datetime, http.client, urllib.parse
import boto3, botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
endpoint = sys.argv[1]
s3 = boto3.client('s3', endpoint_url=endpoint, aws_access_key_id='AKSERVETEST', aws_secret_access_key='serve-secret', region_name='us-east-1')
out = {}
def code(f):
    try:
        f(); return 'ok'
    except botocore.exceptions.ClientError as e:
        return e.response['Error']['Code']
b = s3.list_buckets()
out['buckets'] = [[x['Name'], isinstance(x['CreationDate'], datetime.datetime)] for x in b['Buckets']]
out['owner'] = 'ID' in b['Owner']
out['versioning'] = s3.get_bucket_versioning(Bucket='stock').get('Status')
put = s3.put_object(Bucket='stock', Key='page.html', Body=b'<p>hi</p>', ContentType='text/html',
    CacheControl='max-age=60', ContentDisposition='attachment; filename="p.html"', ContentEncoding='identity',
    ContentLanguage='de-CH', Expires=datetime.datetime(2031, 2, 3, 4, 5, 6))
h = s3.head_object(Bucket='stock', Key='page.html')
out['headers'] = [h.get('CacheControl'), h.get('ContentDisposition'), h.get('ContentEncoding'), h.get('ContentLanguage'), h.get('Expires').isoformat() if h.get('Expires') else None, h.get('Metadata')]
g = s3.get_object(Bucket='stock', Key='page.html', ResponseContentDisposition='inline')
out['override'] = [g['ContentDisposition'], g['CacheControl']]
etag, modified = h['ETag'], h['LastModified']
later = modified + datetime.timedelta(seconds=1)
earlier = modified - datetime.timedelta(seconds=1)
out['conditions'] = [
    code(lambda: s3.get_object(Bucket='stock', Key='page.html', IfNoneMatch=etag)),
    code(lambda: s3.head_object(Bucket='stock', Key='page.html', IfNoneMatch=etag)),
    code(lambda: s3.get_object(Bucket='stock', Key='page.html', IfModifiedSince=later)),
    code(lambda: s3.get_object(Bucket='stock', Key='page.html', IfModifiedSince=earlier)),
    code(lambda: s3.get_object(Bucket='stock', Key='page.html', IfMatch='"other"')),
    code(lambda: s3.get_object(Bucket='stock', Key='page.html', IfMatch=etag)),
    code(lambda: s3.get_object(Bucket='stock', Key='page.html', IfUnmodifiedSince=earlier)),
    code(lambda: s3.get_object(Bucket='stock', Key='page.html', IfUnmodifiedSince=later)),
]
# A copy onto itself replaces the metadata (and needs REPLACE to).
out['self_copy'] = code(lambda: s3.copy_object(Bucket='stock', Key='page.html', CopySource={'Bucket': 'stock', 'Key': 'page.html'}))
s3.copy_object(Bucket='stock', Key='page.html', CopySource={'Bucket': 'stock', 'Key': 'page.html'}, MetadataDirective='REPLACE', Metadata={'rev': '2'}, ContentType='text/plain', CacheControl='no-store')
h2 = s3.head_object(Bucket='stock', Key='page.html')
out['replaced'] = [h2['Metadata'], h2['ContentType'], h2.get('CacheControl'), h2.get('ContentDisposition')]
# Non-ASCII metadata, as the conformance suites send it (the header set as text).
def unicode_meta(**kw):
    kw['params']['headers']['x-amz-meta-meta1'] = 'Hello World\xe9'
s3.meta.events.register('before-call.s3.PutObject', unicode_meta)
s3.put_object(Bucket='stock', Key='meta', Body=b'm')
s3.meta.events.unregister('before-call.s3.PutObject', unicode_meta)
out['unicode'] = s3.get_object(Bucket='stock', Key='meta')['Metadata']
# Versions of an unversioned bucket: each object once, as version null.
for k in ['a', 'b', 'c']:
    s3.put_object(Bucket='stock', Key='ver/' + k, Body=b'v')
v = s3.list_object_versions(Bucket='stock', Prefix='ver/', MaxKeys=2)
v2 = s3.list_object_versions(Bucket='stock', Prefix='ver/', KeyMarker=v['NextKeyMarker'], VersionIdMarker=v['NextVersionIdMarker'])
out['versions'] = [[x['Key'], x['VersionId'], x['IsLatest']] for x in v['Versions'] + v2['Versions']]
out['versions_paged'] = [v['IsTruncated'], v2['IsTruncated']]
# Multipart objects: their parts by number, PartsCount, attributes.
mp = s3.create_multipart_upload(Bucket='stock', Key='mp', ContentDisposition='attachment')
p1 = s3.upload_part(Bucket='stock', Key='mp', UploadId=mp['UploadId'], PartNumber=1, Body=b'a' * (5 << 20))
p2 = s3.upload_part(Bucket='stock', Key='mp', UploadId=mp['UploadId'], PartNumber=2, Body=b'second')
s3.complete_multipart_upload(Bucket='stock', Key='mp', UploadId=mp['UploadId'], MultipartUpload={'Parts': [{'PartNumber': 1, 'ETag': p1['ETag']}, {'PartNumber': 2, 'ETag': p2['ETag']}]})
g2 = s3.get_object(Bucket='stock', Key='mp', PartNumber=2)
out['part2'] = [g2['Body'].read().decode(), g2['PartsCount'], g2['ContentRange'], g2['ContentDisposition']]
out['head_part1'] = [s3.head_object(Bucket='stock', Key='mp', PartNumber=1)['ContentLength'], s3.head_object(Bucket='stock', Key='mp', PartNumber=1)['PartsCount']]
out['part3'] = code(lambda: s3.get_object(Bucket='stock', Key='mp', PartNumber=3))
out['single_part1'] = s3.get_object(Bucket='stock', Key='meta', PartNumber=1)['Body'].read().decode()
a = s3.get_object_attributes(Bucket='stock', Key='mp', ObjectAttributes=['ETag', 'ObjectSize', 'ObjectParts', 'StorageClass'])
out['attributes'] = [a['ObjectSize'], a['ObjectParts']['TotalPartsCount'], a['StorageClass'], a['ETag'].strip('"').endswith('-2')]
# DeleteObjects takes at most 1,000 keys.
out['delete_1001'] = code(lambda: s3.delete_objects(Bucket='stock', Delete={'Objects': [{'Key': f'x{i}'} for i in range(1001)]}))
# ListObjects v1 echoes its Marker, encoded as keys are.
s3.put_object(Bucket='stock', Key='m/ü %', Body=b'x')
s3.put_object(Bucket='stock', Key='m/ü %2', Body=b'x')
l1 = s3.list_objects(Bucket='stock', Prefix='m/', Marker='m/a b', MaxKeys=1, Delimiter='/')
out['v1'] = [l1['Marker'], l1['NextMarker'], [c['Key'] for c in l1['Contents']]]
# An upload streamed with Transfer-Encoding: chunked (no length known).
url = endpoint + '/stock/piped'
req = AWSRequest(method='PUT', url=url, headers={'X-Amz-Content-SHA256': 'UNSIGNED-PAYLOAD', 'Transfer-Encoding': 'chunked'})
req.context['payload_signing_enabled'] = False
SigV4Auth(Credentials('AKSERVETEST', 'serve-secret'), 's3', 'us-east-1').add_auth(req)
u = urllib.parse.urlsplit(url)
c = http.client.HTTPConnection(u.hostname, u.port)
c.request('PUT', u.path, body=iter([b'streamed ', b'from ', b'a pipe']), headers=dict(req.headers.items()), encode_chunked=True)
r = c.getresponse(); r.read()
out['chunked'] = [r.status, s3.get_object(Bucket='stock', Key='piped')['Body'].read().decode()]
print(json.dumps(out))
"#;
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .arg(&server.endpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let j = |v: serde_json::Value| v;
    assert_eq!(seen["buckets"], j(serde_json::json!([["stock", true]])));
    assert_eq!(seen["owner"], true);
    assert_eq!(seen["versioning"], serde_json::Value::Null);
    assert_eq!(
        seen["headers"],
        serde_json::json!([
            "max-age=60",
            "attachment; filename=\"p.html\"",
            "identity",
            "de-CH",
            "2031-02-03T04:05:06+00:00",
            {}
        ])
    );
    assert_eq!(
        seen["override"],
        serde_json::json!(["inline", "max-age=60"])
    );
    assert_eq!(
        seen["conditions"],
        serde_json::json!([
            "304",
            "304",
            "304",
            "ok",
            "PreconditionFailed",
            "ok",
            "PreconditionFailed",
            "ok"
        ])
    );
    assert_eq!(seen["self_copy"], "InvalidRequest");
    assert_eq!(
        seen["replaced"],
        serde_json::json!([{"rev": "2"}, "text/plain", "no-store", null])
    );
    assert_eq!(
        seen["unicode"],
        serde_json::json!({"meta1": "Hello World\u{e9}"})
    );
    assert_eq!(
        seen["versions"],
        serde_json::json!([
            ["ver/a", "null", true],
            ["ver/b", "null", true],
            ["ver/c", "null", true]
        ])
    );
    assert_eq!(seen["versions_paged"], serde_json::json!([true, false]));
    assert_eq!(
        seen["part2"],
        serde_json::json!([
            "second",
            2,
            format!("bytes {}-{}/{}", 5 << 20, (5 << 20) + 5, (5 << 20) + 6),
            "attachment"
        ])
    );
    assert_eq!(seen["head_part1"], serde_json::json!([5 << 20, 2]));
    assert_eq!(seen["part3"], "InvalidPartNumber");
    assert_eq!(seen["single_part1"], "m");
    assert_eq!(
        seen["attributes"],
        serde_json::json!([(5 << 20) + 6, 2, "STANDARD", true])
    );
    assert_eq!(seen["delete_1001"], "MalformedXML");
    assert_eq!(seen["v1"], serde_json::json!(["m/a b", "m/ü %", ["m/ü %"]]));
    assert_eq!(
        seen["chunked"],
        serde_json::json!([200, "streamed from a pipe"])
    );
    // The library holds what the clients sent, decoded.
    let stat = stdout(&ok(ferry(&dir, &["stat", "meta"], b"")));
    assert!(stat.contains("meta1=Hello World\u{e9}"), "{stat}");
    // aws-cli sees one version per object too.
    let versions = ok(aws(
        &server,
        &[
            "s3api",
            "list-object-versions",
            "--bucket",
            "stock",
            "--prefix",
            "ver/",
        ],
    ));
    let versions: serde_json::Value = serde_json::from_slice(&versions.stdout).unwrap();
    assert_eq!(versions["Versions"].as_array().unwrap().len(), 3);
    drop(server);
    // A folder named `v3` is served as `v3`, the name a user guesses.
    let short = tmp.path().join("v3");
    std::fs::create_dir_all(&short).unwrap();
    ok(ferry(&short, &["init"], b""));
    let server = serve(&short, &[]);
    assert!(stdout(&ok(aws(&server, &["s3", "ls"])))
        .trim_end()
        .ends_with(" v3"));
    let file = tmp.path().join("f.txt");
    std::fs::write(&file, b"short").unwrap();
    ok(aws(
        &server,
        &["s3", "cp", file.to_str().unwrap(), "s3://v3/f.txt"],
    ));
    assert!(stdout(&ok(aws(&server, &["s3", "ls", "s3://v3/"]))).contains("f.txt"));
    assert_eq!(stdout(&ok(ferry(&short, &["cat", "f.txt"], b""))), "short");
}

/// `x-amz-checksum-*` (issue 23, item 9): each of CRC32, CRC32C,
/// CRC64NVME, SHA1 and SHA256, in a header or in a trailer after an
/// `aws-chunked` body, is checked; a mismatch is `BadDigest` and nothing
/// is stored (an object, a part, one of ferry's own objects).
#[test]
fn checksums_are_verified_and_a_mismatch_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("sums");
    std::fs::create_dir_all(&dir).unwrap();
    ok(ferry(&dir, &["init"], b""));
    let server = serve(&dir, &[]);
    let script = r#"
import sys, json, base64, zlib, hashlib, http.client, urllib.parse
import boto3, botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
endpoint, bucket, ak, sk = sys.argv[1:5]
s3 = boto3.client('s3', endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk, region_name='us-east-1')
def code(f):
    try:
        f(); return 'ok'
    except botocore.exceptions.ClientError as e:
        return e.response['Error']['Code']
def reflected(data, poly, width):
    mask = (1 << width) - 1
    crc = mask
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (poly if crc & 1 else 0)
    return (crc ^ mask).to_bytes(width // 8, 'big')
assert reflected(b'123456789', 0x82F63B78, 32).hex() == 'e3069283'
assert reflected(b'123456789', 0x9A6C9329AC4BC9B5, 64).hex() == 'ae8b14860a799888'
b64 = lambda x: base64.b64encode(x).decode()
body = b'checked body'
sums = {
    'CRC32': b64(zlib.crc32(body).to_bytes(4, 'big')),
    'CRC32C': b64(reflected(body, 0x82F63B78, 32)),
    'CRC64NVME': b64(reflected(body, 0x9A6C9329AC4BC9B5, 64)),
    'SHA1': b64(hashlib.sha1(body).digest()),
    'SHA256': b64(hashlib.sha256(body).digest()),
}
wrong = {k: b64(hashlib.sha256(b'other').digest()[:len(base64.b64decode(v))]) for k, v in sums.items()}
out = {'right': {}, 'wrong': {}}
for alg in sums:
    out['right'][alg] = code(lambda: s3.put_object(Bucket=bucket, Key='ok-' + alg, Body=body, **{'Checksum' + alg: sums[alg]}))
    out['wrong'][alg] = [code(lambda: s3.put_object(Bucket=bucket, Key='bad-' + alg, Body=body, **{'Checksum' + alg: wrong[alg]})),
                         code(lambda: s3.head_object(Bucket=bucket, Key='bad-' + alg))]
out['sdk'] = code(lambda: s3.put_object(Bucket=bucket, Key='sdk', Body=body, ChecksumAlgorithm='SHA256'))
out['reserved'] = code(lambda: s3.put_object(Bucket=bucket, Key='.ferry/x', Body=body, ChecksumSHA1=wrong['SHA1']))
mp = s3.create_multipart_upload(Bucket=bucket, Key='mp')
out['part'] = code(lambda: s3.upload_part(Bucket=bucket, Key='mp', UploadId=mp['UploadId'], PartNumber=1, Body=body, ChecksumCRC32=wrong['CRC32']))
out['parts_left'] = len(s3.list_parts(Bucket=bucket, Key='mp', UploadId=mp['UploadId']).get('Parts', []))
out['part_ok'] = code(lambda: s3.upload_part(Bucket=bucket, Key='mp', UploadId=mp['UploadId'], PartNumber=1, Body=body, ChecksumCRC32=sums['CRC32']))
# A checksum in a trailer after an aws-chunked body, as current SDKs send it.
def trailer(key, value):
    url = endpoint + '/' + bucket + '/' + key
    raw = b'%x\r\n' % len(body) + body + b'\r\n0\r\nx-amz-checksum-crc32:' + value.encode() + b'\r\n\r\n'
    req = AWSRequest(method='PUT', url=url, headers={
        'X-Amz-Content-SHA256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER', 'Content-Encoding': 'aws-chunked',
        'X-Amz-Decoded-Content-Length': str(len(body)), 'X-Amz-Trailer': 'x-amz-checksum-crc32',
        'Content-Length': str(len(raw))})
    SigV4Auth(Credentials(ak, sk), 's3', 'us-east-1').add_auth(req)
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port)
    c.request('PUT', u.path, body=raw, headers=dict(req.headers.items()))
    r = c.getresponse(); text = r.read().decode()
    return [r.status, 'BadDigest' in text]
out['trailer_right'] = trailer('trailed', sums['CRC32'])
out['trailer_wrong'] = trailer('trailed-bad', wrong['CRC32'])
out['trailed'] = [s3.get_object(Bucket=bucket, Key='trailed')['Body'].read().decode(), code(lambda: s3.head_object(Bucket=bucket, Key='trailed-bad'))]
print(json.dumps(out))
"#;
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .args([&server.endpoint, "sums", AK, SK])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for alg in ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"] {
        assert_eq!(seen["right"][alg], "ok", "{alg}");
        assert_eq!(
            seen["wrong"][alg],
            serde_json::json!(["BadDigest", "404"]),
            "{alg}"
        );
    }
    assert_eq!(seen["sdk"], "ok");
    assert_eq!(seen["reserved"], "BadDigest");
    assert_eq!(seen["part"], "BadDigest");
    assert_eq!(seen["parts_left"], 0);
    assert_eq!(seen["part_ok"], "ok");
    assert_eq!(seen["trailer_right"], serde_json::json!([200, false]));
    assert_eq!(seen["trailer_wrong"], serde_json::json!([400, true]));
    assert_eq!(seen["trailed"], serde_json::json!(["checked body", "404"]));
    // Nothing of the refused writes reached the bucket.
    let listed = stdout(&ok(ferry(&dir, &["ls"], b"")));
    assert!(!listed.contains("bad-"), "{listed}");
}

/// The id and secret `ferry serve keys add` printed.
fn added_key(out: &std::process::Output) -> (String, String) {
    let text = stdout(out);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name:?} in {text}"))
            .trim()
            .to_owned()
    };
    (field("access key id:"), field("secret access key:"))
}

/// Issue 23, item 16, through boto3 against `ferry serve --buckets`: keys
/// made with `ferry serve keys add` while the gateway runs work at once;
/// a read key GETs and lists but cannot PUT or DELETE; a key for `alpha`
/// is AccessDenied on `beta` (ListBuckets shows it only `alpha`); a write
/// key cannot copy out of `beta`; `keys ls` shows no secret; the key file
/// is mode 0600; a removed key stops working while the others go on, and
/// the owner's pair keeps full access.
#[test]
fn app_keys_reach_only_their_buckets_through_boto3() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("buckets");
    std::fs::create_dir_all(&root).unwrap();
    let root_arg = root.to_str().unwrap();
    let server = serve(tmp.path(), &["--buckets", root_arg]);
    let keys = |args: &[&str]| {
        let mut all = vec!["serve", "keys", "--buckets", root_arg];
        all.extend_from_slice(args);
        ferry(tmp.path(), &all, b"")
    };
    let (ro_id, ro_secret) = added_key(&ok(keys(&["add", "site", "alpha", "--read-only"])));
    let (rw_id, rw_secret) = added_key(&ok(keys(&["add", "uploader", "alpha"])));
    let err = keys(&["add", "site", "beta"]);
    assert_eq!(err.status.code(), Some(1));
    let mode = std::fs::metadata(root.join("serve-keys.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let listed = stdout(&ok(keys(&["ls"])));
    assert!(
        listed.contains("site") && listed.contains(&ro_id),
        "{listed}"
    );
    assert!(
        listed.contains("uploader") && listed.contains(&rw_id),
        "{listed}"
    );
    assert!(
        !listed.contains(&ro_secret) && !listed.contains(&rw_secret),
        "{listed}"
    );
    let listed = stdout(&ok(keys(&["ls", "--json"])));
    assert!(
        !listed.contains(&ro_secret) && !listed.contains(&rw_secret),
        "{listed}"
    );

    let script = r#"
import sys, json
import boto3, botocore
endpoint, phase, ro_id, ro_secret, rw_id, rw_secret = sys.argv[1:7]
def client(key, secret):
    return boto3.client('s3', endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret, region_name='us-east-1')
owner, ro, rw = client('AKSERVETEST', 'serve-secret'), client(ro_id, ro_secret), client(rw_id, rw_secret)
def code(f):
    try:
        f(); return 'ok'
    except botocore.exceptions.ClientError as e:
        return e.response['Error']['Code']
out = {}
if phase == 'before':
    for b in ['alpha', 'beta']:
        owner.create_bucket(Bucket=b)
        owner.put_object(Bucket=b, Key='k', Body=b'in ' + b.encode())
    out['owner_buckets'] = [b['Name'] for b in owner.list_buckets()['Buckets']]
    out['ro_buckets'] = [b['Name'] for b in ro.list_buckets()['Buckets']]
    out['ro_get'] = ro.get_object(Bucket='alpha', Key='k')['Body'].read().decode()
    out['ro_list'] = [o['Key'] for o in ro.list_objects_v2(Bucket='alpha')['Contents']]
    out['ro_put'] = code(lambda: ro.put_object(Bucket='alpha', Key='n', Body=b'n'))
    out['ro_delete'] = code(lambda: ro.delete_object(Bucket='alpha', Key='k'))
    out['ro_other'] = code(lambda: ro.get_object(Bucket='beta', Key='k'))
    out['ro_other_list'] = code(lambda: ro.list_objects_v2(Bucket='beta'))
    out['rw_put'] = code(lambda: rw.put_object(Bucket='alpha', Key='w', Body=b'w'))
    out['rw_delete'] = code(lambda: rw.delete_object(Bucket='alpha', Key='w'))
    out['rw_other'] = code(lambda: rw.put_object(Bucket='beta', Key='w', Body=b'w'))
    out['rw_copy_out'] = code(lambda: rw.copy_object(Bucket='alpha', Key='stolen', CopySource={'Bucket': 'beta', 'Key': 'k'}))
    out['rw_create'] = code(lambda: rw.create_bucket(Bucket='gamma'))
    out['rw_drop'] = code(lambda: rw.delete_bucket(Bucket='alpha'))
else:
    out['rw_get'] = code(lambda: rw.get_object(Bucket='alpha', Key='k'))
    out['ro_get'] = code(lambda: ro.get_object(Bucket='alpha', Key='k'))
    out['owner_put'] = code(lambda: owner.put_object(Bucket='beta', Key='o', Body=b'o'))
print(json.dumps(out))
"#;
    let run = |phase: &str| -> serde_json::Value {
        let out = Command::new(venv_bin("python"))
            .arg("-c")
            .arg(script)
            .args([
                &server.endpoint,
                phase,
                &ro_id,
                &ro_secret,
                &rw_id,
                &rw_secret,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let seen = run("before");
    assert_eq!(seen["owner_buckets"], serde_json::json!(["alpha", "beta"]));
    assert_eq!(seen["ro_buckets"], serde_json::json!(["alpha"]));
    assert_eq!(seen["ro_get"], "in alpha");
    assert_eq!(seen["ro_list"], serde_json::json!(["k"]));
    for (what, want) in [
        ("ro_put", "AccessDenied"),
        ("ro_delete", "AccessDenied"),
        ("ro_other", "AccessDenied"),
        ("ro_other_list", "AccessDenied"),
        ("rw_put", "ok"),
        ("rw_delete", "ok"),
        ("rw_other", "AccessDenied"),
        ("rw_copy_out", "AccessDenied"),
        ("rw_create", "AccessDenied"),
        ("rw_drop", "AccessDenied"),
    ] {
        assert_eq!(seen[what], want, "{what}: {seen}");
    }
    assert!(!root.join("gamma").exists());

    ok(keys(&["rm", "uploader"]));
    let listed = stdout(&ok(keys(&["ls"])));
    assert!(!listed.contains("uploader"), "{listed}");
    let seen = run("after");
    assert_eq!(seen["rw_get"], "InvalidAccessKeyId", "{seen}");
    assert_eq!(seen["ro_get"], "ok", "{seen}");
    assert_eq!(seen["owner_put"], "ok", "{seen}");
    let err = keys(&["rm", "uploader"]);
    assert_eq!(err.status.code(), Some(1));
}

/// Issue 23, item 15: `signer+http://` is refused for a host that is not
/// this machine, with a clear error, and accepted with `--insecure` (the
/// remote is then tried: here nothing listens, so it fails differently).
#[test]
fn signer_over_plain_http_is_loopback_only_unless_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let refused = tmp.path().join("refused");
    std::fs::create_dir_all(&refused).unwrap();
    let out = ferry_env(
        &refused,
        &[("FERRY_SIGNER_TOKEN", "a-token-long-enough")],
        &["init", "--remote", "signer+http://192.0.2.7:9000/api"],
        b"",
    );
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in the clear") && err.contains("--insecure") && err.contains("192.0.2.7"),
        "{err}"
    );
    let insecure = tmp.path().join("insecure");
    std::fs::create_dir_all(&insecure).unwrap();
    let out = ferry_env(
        &insecure,
        &[("FERRY_SIGNER_TOKEN", "a-token-long-enough")],
        &[
            "init",
            "--remote",
            "signer+http://0.0.0.0:1/api",
            "--insecure",
        ],
        b"",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("in the clear"), "{err}");
}

/// Issue 23, item 15: `ferry serve --tls-cert --tls-key` speaks HTTPS:
/// boto3 trusting the (self-signed, made here) certificate puts, gets and
/// lists; without trusting it boto3 fails; plain HTTP to the port gets no
/// answer.
#[test]
fn serve_speaks_https_with_a_certificate_boto3_trusts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("secure");
    std::fs::create_dir_all(&dir).unwrap();
    ok(ferry(&dir, &["init"], b""));
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = tmp.path().join("cert.pem");
    let key = tmp.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let server = serve(
        &dir,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let port = server.endpoint.rsplit(':').next().unwrap().to_owned();
    let script = r#"
import sys, json, urllib.request
import boto3, botocore
port, cert = sys.argv[1:3]
def client(verify):
    return boto3.client('s3', endpoint_url=f'https://localhost:{port}', aws_access_key_id='AKSERVETEST',
        aws_secret_access_key='serve-secret', region_name='us-east-1', verify=verify,
        config=botocore.config.Config(retries={'max_attempts': 1}))
s3 = client(cert)
out = {}
s3.put_object(Bucket='secure', Key='k', Body=b'over tls')
out['get'] = s3.get_object(Bucket='secure', Key='k')['Body'].read().decode()
out['list'] = [o['Key'] for o in s3.list_objects_v2(Bucket='secure')['Contents']]
try:
    client(True).list_objects_v2(Bucket='secure'); out['untrusted'] = 'ok'
except botocore.exceptions.SSLError:
    out['untrusted'] = 'SSLError'
try:
    urllib.request.urlopen(f'http://127.0.0.1:{port}/secure/k', timeout=30).read(); out['plain'] = 'answered'
except Exception as e:
    out['plain'] = 'failed'
print(json.dumps(out))
"#;
    let out = Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .args([port.as_str(), cert.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        seen,
        serde_json::json!({"get": "over tls", "list": ["k"], "untrusted": "SSLError", "plain": "failed"})
    );
    assert_eq!(stdout(&ok(ferry(&dir, &["cat", "k"], b""))), "over tls");
    // A key that is not a key: a clear error before serving.
    let out = Command::new(FERRY)
        .current_dir(&dir)
        .env_remove("FERRY_BUCKET")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            cert.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("private key"), "{err}");
}
