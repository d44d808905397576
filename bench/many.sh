#!/usr/bin/env bash
# More connections than one process may hold here (20,000 descriptors): 3 wshub processes, every
# one pinned to core 0, each held at N idle authenticated connections (each joined to a room) by
# a load generator of its own on core 1, all at once. The nodes run standalone (embedded bus):
# on this machine a NATS cluster's room joins are bounded by the state store (about 240 joins/s
# per node with nats-server on the same core; beyond that joins time out with 1004), which
# would make this a measure of that instead of memory per connection.
# Prints one line per node and a total line:
#   RESULT {"node":0,...}   (wshub-bench idle's output for that node)
#   MANY {"nodes":3,"connections":45000,"held_at_once":45000,"bytes_per_conn":...}
# `held_at_once` is the sum of the nodes' `wshub_connections` gauges sampled while every load
# generator holds its connections.
#
# Usage: bench/many.sh [n_per_node]   (after `cargo build --release -p wshub -p wshub-bench`)
set -Eeuo pipefail
cd "$(dirname "$0")/.."
N=${1:-15000}
SECRET=bench-secret
SETTLE=20
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }
gauge() { # port -> wshub_connections
  local v
  v=$(curl -s "http://127.0.0.1:$1/metrics" | awk '$1 ~ /^wshub_connections[{]/ { print int($2) }')
  echo "${v:-0}"
}

PORTS=(); PIDS=()
for i in 0 1 2; do
  port=$(free_port)
  WSHUB_LOG__LEVEL=warn WSHUB_AUTH__ENABLED=true WSHUB_AUTH__SECRET_KEY=$SECRET \
    taskset -c 0 target/release/wshub serve --addr "127.0.0.1:$port" >/dev/null 2>&1 &
  PIDS+=($!); PORTS+=("$port")
done
for p in "${PORTS[@]}"; do wait_port "$p"; done
sleep 2

LOADS=()
for i in 0 1 2; do
  taskset -c 1 target/release/wshub-bench idle --target wshub --jwt-secret "$SECRET" \
    --server "127.0.0.1:${PORTS[$i]}" --n "$N" --pid "${PIDS[$i]}" --settle-secs "$SETTLE" \
    --timeout 300 > "$WORK/load-$i.out" 2>"$WORK/load-$i.err" &
  LOADS+=($!)
done
# The highest total the gauges reach while the generators hold their connections.
HELD=0
while kill -0 "${LOADS[@]}" 2>/dev/null; do
  total=0
  for p in "${PORTS[@]}"; do total=$((total + $(gauge "$p"))); done
  [ "$total" -gt "$HELD" ] && HELD=$total
  sleep 1
done
for i in 0 1 2; do
  wait "${LOADS[$i]}" || { echo "load generator $i failed:" >&2; grep -v '^ ' "$WORK/load-$i.err" | tail -5 >&2; exit 1; }
  sed -n "s/^RESULT {/RESULT {\"node\":$i,/p" "$WORK/load-$i.out"
done
python3 - "$N" "$HELD" "$WORK"/load-*.out <<'EOF'
import json, sys
n, held, files = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
rows = [json.loads(l[7:]) for f in files for l in open(f) if l.startswith("RESULT ")]
grown = sum(r["rss_after_kb"] - r["rss_before_kb"] for r in rows) * 1024
print("MANY " + json.dumps({"nodes": len(rows), "connections": n * len(rows), "held_at_once": held,
      "bytes_per_conn": round(grown / (n * len(rows)))}))
EOF
