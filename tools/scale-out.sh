#!/usr/bin/env bash
# Scale-out check of `r2 serve`: three replicas behind HAProxy on loopback (roundrobin, health
# checks on /readyz), a bounded load of 3-turn chat conversations from concurrent clients,
# SIGTERM to one replica mid-run (drain) and SIGKILL to another later. Prints the requests, the
# failures (those in flight at SIGKILL apart), HAProxy's retries, which replica served how many,
# and latency p50/p90/p99. The work is done by the CI test crates/r2-cli/tests/scale_out.rs (one
# implementation; its doc comment lists what it asserts); this script runs it with its report
# shown and keeps the HAProxy config and request log in target/scale-out/.
#
#   tools/scale-out.sh [CONVERSATIONS] [CLIENTS]       (defaults: 80 conversations, 8 clients)
#
# R2_SCALE_RETRY_ON: HAProxy's retry-on (default "conn-failure empty-response").
# R2_SCALE_PROFILE: cargo profile of the build (default: the test profile, as in CI; `release`
# for figures closer to production). Needs HAProxy (/usr/sbin/haproxy, or $R2_HAPROXY) and the
# shared data folder ($R2_SHARED_DIR, else ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."

export R2_SCALE_CONVERSATIONS=${1:-80}
export R2_SCALE_CLIENTS=${2:-8}
export R2_SCALE_OUT_DIR=${R2_SCALE_OUT_DIR:-$PWD/target/scale-out}
export R2_REQUIRE_TOOLS=1
export RUST_BACKTRACE=0
mkdir -p "$R2_SCALE_OUT_DIR"

profile=()
[ -n "${R2_SCALE_PROFILE:-}" ] && profile=(--profile "$R2_SCALE_PROFILE")
start=$(date +%s.%N)
set +e
cargo test -q "${profile[@]}" -p r2-cli --test scale_out -- --nocapture 2>&1 |
  tee "$R2_SCALE_OUT_DIR/report.txt" |
  awk '/^(scale-out:|  failed:|test result)/ {print} /panicked at/ {print; shown = 3; next} shown > 0 {print; shown--}'
status=${PIPESTATUS[0]}
set -e
end=$(date +%s.%N)
echo "config: $R2_SCALE_OUT_DIR/haproxy.cfg, request log: $R2_SCALE_OUT_DIR/haproxy.log," \
  "whole output: $R2_SCALE_OUT_DIR/report.txt; $(echo "$end - $start" | bc) s with the build"
exit "$status"
