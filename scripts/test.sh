#!/usr/bin/env bash
# ferry's whole test suite: formatting, lints, docs, and every test.
# Installs and starts whatever the tests need by itself (a moto S3 server in
# a Python venv under target/); .ci/run calls exactly this.
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
export FERRY_TEST_PYTHON="$PWD/$VENV/bin/python"

if [ "$HEAVY" = 1 ]; then
    cargo test -p ferry --release --locked --features heavy --test heavy -- --nocapture
    echo "heavy tier: $(( $(date +%s) - STARTED )) s"
    exit 0
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
cargo test --workspace --locked
echo "test suite: $(( $(date +%s) - STARTED )) s"
