#!/usr/bin/env bash
# The one test command: formatting, lints, and the whole test suite.
# Installs what the suite needs when it is missing (apt-get / npm), so it runs on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# apt_ensure <command> <package>: installs <package> when <command> is not on PATH
# (Debian puts the brokers in /usr/sbin, which is not always on a user's PATH).
apt_ensure() {
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$1" ]; then
    log "installing $2 (for $1)"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$2"
  fi
}

# Brokers for the cluster tests: the tests start their own on free ports.
apt_ensure nats-server nats-server
apt_ensure redis-server redis-server

# The JS SDK tests and the browser end-to-end test.
apt_ensure node nodejs
apt_ensure npm npm
apt_ensure chromium chromium

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo deny check licenses bans (the advisory database cannot be fetched here)"
if ! cargo deny --version >/dev/null 2>&1; then
  cargo install cargo-deny --locked --quiet
fi
cargo deny check licenses bans

log "tests"
# The workspace's test build makes target/debug/wshub for wshub's own tests; the bench crate's
# soak test runs that same binary. Left to itself it would build wshub with its own package's
# feature set, which is not the workspace's: a rebuild (~35 s, more beside the running tests)
# that overwrote the binary other tests were starting.
export WSHUB_BIN="$PWD/target/debug/wshub"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # nextest does not run doctests.
  cargo test --workspace --locked --doc
else
  cargo test --workspace --locked --no-fail-fast
fi

log "TypeScript SDK (clients/js) against the wshub binary"
cargo build --locked --bin wshub
(cd clients/js && npm ci --no-audit --no-fund && npm test)

log "browser end-to-end: the chat demo in two Chromium pages on two nodes (screenshots in target/e2e/)"
(cd e2e && npm ci --no-audit --no-fund && npm test)

log "all checks passed"
