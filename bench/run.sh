#!/usr/bin/env bash
# Side-by-side benchmark: wshub vs the bare reference servers of shared/bench-peers and the
# Socket.IO peers of bench/peers (Node socket.io, socketioxide), each scenario on a freshly
# started server pinned to core 0, the load generator on core 1.
# Writes BENCHMARKS.md. Loopback only. Usage: bench/run.sh [idle_n] [fanout_n] [fanout_messages]
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE_N=${1:-10000}
FAN_N=${2:-5000}
FAN_M=${3:-300}
PEERS=${PEERS_DIR:-../shared/bench-peers}
PEER_TARGET=/tmp/wshub-bench-peers

cargo build --release -p wshub -p wshub-bench >&2
cargo build --release --manifest-path "$PEERS/Cargo.toml" --target-dir "$PEER_TARGET" >&2
cargo build --release --manifest-path bench/peers/socketioxide/Cargo.toml --target-dir "$PEER_TARGET" >&2
[ -d bench/peers/socketio/node_modules ] || (cd bench/peers/socketio && npm ci --no-audit --no-fund >&2)
BENCH=target/release/wshub-bench
PORT=19100

start() { # name -> sets PID
  case "$1" in
    tt) WORKERS=1 taskset -c 0 "$PEER_TARGET/release/server_tt" "127.0.0.1:$PORT" >/dev/null 2>&1 & PID=$! ;;
    fws) WORKERS=1 taskset -c 0 "$PEER_TARGET/release/server_fws" "127.0.0.1:$PORT" >/dev/null 2>&1 & PID=$! ;;
    sio) taskset -c 0 node bench/peers/socketio/server.js 127.0.0.1 "$PORT" >/dev/null 2>&1 & PID=$! ;;
    sioxide) WORKERS=1 taskset -c 0 "$PEER_TARGET/release/socketioxide-peer" 127.0.0.1 "$PORT" >/dev/null 2>&1 & PID=$! ;;
    wshub) WSHUB_LOG__LEVEL=warn taskset -c 0 target/release/wshub serve --addr "127.0.0.1:$PORT" >/dev/null 2>&1 & PID=$! ;;
  esac
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
  sleep 0.5
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PORT=$((PORT + 1)); }
target_of() { case "$1" in wshub) echo wshub ;; sio|sioxide) echo socketio ;; *) echo bare ;; esac; }
field() { sed -n 's/^RESULT //p' | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

declare -A IDLE FAN P99 ECHO
for s in tt fws sio sioxide wshub; do
  start "$s"; IDLE[$s]=$(taskset -c 1 "$BENCH" idle --target "$(target_of $s)" --server "127.0.0.1:$PORT" --n "$IDLE_N" --pid "$PID" 2>/dev/null | field bytes_per_conn); stop
  start "$s"; OUT=$(taskset -c 1 "$BENCH" fanout --target "$(target_of $s)" --server "127.0.0.1:$PORT" --n "$FAN_N" --messages "$FAN_M" --window 8 2>/dev/null)
  FAN[$s]=$(echo "$OUT" | field delivered_per_s); P99[$s]=$(echo "$OUT" | field p99_us)
  LOST=$(echo "$OUT" | field lost); [ "$LOST" = 0 ] || { echo "$s lost $LOST messages" >&2; exit 1; }
  BAD=$(echo "$OUT" | field out_of_order_or_duplicate); [ "$BAD" = 0 ] || { echo "$s: $BAD deliveries out of order or doubled" >&2; exit 1; }
  stop
  start "$s"; ECHO[$s]=$(taskset -c 1 "$BENCH" echo --target "$(target_of $s)" --server "127.0.0.1:$PORT" --clients 50 --round-trips 1000 2>/dev/null | field round_trips_per_s); stop
done

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
inv() { python3 -c "print(f'{$2/$1:.2f}')"; }
{
  echo "# Benchmarks"
  echo
  echo "Produced by \`bench/run.sh $IDLE_N $FAN_N $FAN_M\` on $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))."
  echo "Each scenario runs on a fresh server pinned to core 0 (\`taskset -c 0\`, one worker thread"
  echo "for the peers; wshub's default runtime on that core), the load generator \`wshub-bench\` on"
  echo "core 1. Ratios compare wshub with each peer measured in the same run; absolute numbers on"
  echo "this shared 2-core machine are noisy and bounded by the single-core load generator."
  echo "wshub runs its full protocol: JSON envelopes, rooms, \`room_message\`, \`ping\`. The Socket.IO"
  echo "peers (\`bench/peers/\`: Node socket.io 4 with its in-memory adapter, socketioxide on a"
  echo "current-thread runtime) run the same scenarios over Engine.IO v4 / WebSocket: idle clients join a"
  echo "room, the publisher emits \`publish\` and members get \`message\`, echo is an event with an ack."
  echo
  row() { # label, array name
    local -n a=$2
    echo "| $1 | ${a[wshub]} | ${a[tt]} | ${a[fws]} | ${a[sio]} | ${a[sioxide]} | $(ratio ${a[wshub]} ${a[tt]}) | $(ratio ${a[wshub]} ${a[fws]}) | $(ratio ${a[wshub]} ${a[sio]}) | $(ratio ${a[wshub]} ${a[sioxide]}) |"
  }
  echo "| scenario | wshub | tokio-tungstenite (tt) | fastwebsockets (fws) | Socket.IO (sio) | socketioxide (sioxide) | wshub / tt | wshub / fws | wshub / sio | wshub / sioxide |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  row "idle: server RSS per connection, bytes (lower is better; $IDLE_N connections)" IDLE
  row "fan-out: delivered msgs/s ($FAN_N members × $FAN_M, window 8)" FAN
  row "fan-out: p99 latency, µs (lower is better)" P99
  row "echo: round trips/s (50 clients × 1000)" ECHO
  echo
  echo "Every fan-out run delivered every message to every member, in order (the generator counts"
  echo "lost, duplicated and reordered deliveries; the run fails on any)."
  echo
  echo "Not yet measured here: the cluster fan-out over NATS/Redis (wshub) and over the Redis adapters"
  echo "(both Socket.IO peers take \`REDIS_URL\`), churn with JWT, open-loop latency curves and plots"
  echo "(see the performance issue)."
  cat bench/changes.md
} > BENCHMARKS.md
cat BENCHMARKS.md
