#!/usr/bin/env sh
# Runs the chat demo: builds the TypeScript SDK, assembles the site in target/chat-site/
# (this directory's page files + clients/js/dist as sdk/), and starts wshub serving it.
#
#   examples/chat/serve.sh                       # http://127.0.0.1:8080/
#   examples/chat/serve.sh --addr 127.0.0.1:9000 # extra arguments go to `wshub serve`
#   WSHUB_BIN=target/debug/wshub examples/chat/serve.sh   # an existing binary, no cargo run
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
site="$root/target/chat-site"

cd "$root/clients/js"
[ -d node_modules ] || npm ci
npm run build

rm -rf "$site"
mkdir -p "$site/sdk"
cp "$root"/examples/chat/*.html "$root"/examples/chat/*.css "$root"/examples/chat/*.js "$site/"
cp -R "$root"/clients/js/dist/. "$site/sdk/"

cd "$root"
config="$root/examples/chat/wshub.dev.yaml"
if [ -n "${WSHUB_BIN:-}" ]; then
  exec "$WSHUB_BIN" serve --config "$config" --static "$site" "$@"
else
  exec cargo run --release -- serve --config "$config" --static "$site" "$@"
fi
