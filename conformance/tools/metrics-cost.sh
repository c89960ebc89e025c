#!/usr/bin/env bash
# The cost of metrics, in one interleaved run: rtm-fixture built without
# them (off), with them and no recorder (idle), and with the Prometheus
# recorder scraped every second (prom). The server on CPU 0, rtm-load on
# CPU 1; `rtm-load calls` (50 connections x 8 in flight, 8 s) and
# `rtm-load emit` (50 events to 2,000 connections). Prints calls/s, the
# server's CPU per call, and deliveries/s. Run from the repository root:
#
#   cargo build --release -p conformance --bin rtm-fixture --bin rtm-load
#   CARGO_TARGET_DIR=target/no-metrics cargo build --release -p conformance --no-default-features --bin rtm-fixture
#   conformance/tools/metrics-cost.sh [ROUNDS]
#
# Every process it starts is stopped by its PID; each run is bounded.
set -u
rounds=${1:-3}
OFF=${OFF:-target/no-metrics/release/rtm-fixture}
ON=${ON:-target/release/rtm-fixture}
LOAD=${LOAD:-target/release/rtm-load}
for bin in "$OFF" "$ON" "$LOAD"; do
  [ -x "$bin" ] || { echo "missing $bin: build it first (see the top of this script)" >&2; exit 1; }
done
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
run() { # name port binary [flags…]
  local name=$1 port=$2 bin=$3; shift 3
  taskset -c 0 "$bin" --listen "127.0.0.1:$port" "$@" >/dev/null 2>&1 &
  local pid=$! scraper=""
  sleep 0.7
  if [ "$name" = prom ]; then
    (for _ in $(seq 1 120); do curl -s "127.0.0.1:$((port + 1))/metrics" >/dev/null; sleep 1; done) &
    scraper=$!
  fi
  local t0 t1 out calls rate emit
  t0=$(ticks $pid)
  out=$(taskset -c 1 "$LOAD" calls --url "ws://127.0.0.1:$port/" --connections 50 --in-flight 8 --seconds 8 2>&1)
  t1=$(ticks $pid)
  emit=$(taskset -c 1 "$LOAD" emit --url "ws://127.0.0.1:$port/" --connections 2000 --events 50 2>&1 | grep -oE '= [0-9]+ deliveries/s')
  [ -n "$scraper" ] && kill "$scraper"
  kill "$pid"; wait "$pid" 2>/dev/null
  calls=$(echo "$out" | grep -oE '[0-9]+ calls in' | grep -oE '[0-9]+')
  rate=$(echo "$out" | grep -oE '= [0-9]+ calls/s')
  echo "$name: calls $rate, server CPU $(awk -v t=$((t1 - t0)) -v c="$calls" -v hz="$hz" 'BEGIN{printf "%.3f", t*1e6/hz/c}') us/call; emit $emit"
}
for _ in $(seq 1 "$rounds"); do
  run off 17400 "$OFF"
  run idle 17410 "$ON"
  run prom 17420 "$ON" --metrics-listen 127.0.0.1:17421
done
