#!/usr/bin/env bash
# Load benchmark of `r2 serve`: POST /v1/route with the embedding in the request body, from wrk on
# loopback. Not a CI test: run it by hand on an otherwise idle machine.
#
#   tools/bench-serve.sh [SECONDS] [CONNECTIONS]       (defaults: 30 s, 64 connections;
#                                                       R2_BENCH_THREADS: wrk threads, default 2)
#
# R2_BENCH_BIN: an r2 binary to measure instead of this tree's release build (e.g. an older build);
# the tree's build goes to $CARGO_TARGET_DIR (default target/) like every cargo build.
# R2_BENCH_BASE64=1: the embeddings as base64 of little-endian float32 (OpenAI's
# `encoding_format: "base64"`) instead of JSON numbers.
# Needs wrk (`apt-get install wrk`) and the shared data folder ($R2_SHARED_DIR, else ../shared) for
# the upstream checkpoints and the golden embeddings. Prints req/s, p50/p99 latency, errors, and
# the server's resident memory before and after.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
connections=${2:-64}
shared=${R2_SHARED_DIR:-../shared}
target=${CARGO_TARGET_DIR:-target}
work=$target/bench-serve
mkdir -p "$work"

command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
if [ -z "${R2_BENCH_BIN:-}" ]; then
  cargo build --release -q -p r2-cli
fi
r2=${R2_BENCH_BIN:-$target/release/r2}
if [ ! -f "$work/router/router.safetensors" ]; then
  "$r2" convert --from "$shared/upstream-r2-router" --out "$work/router"
fi

# One request body per golden embedding: {"embedding": [...], "input_tokens": n}.
python3 - "$shared/golden/route-input.jsonl" "${R2_BENCH_BASE64:-0}" > "$work/bodies.jsonl" <<'PY'
import base64, json, struct, sys
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    g = json.loads(line)
    embedding = g["embedding"]
    if sys.argv[2] == "1":
        embedding = base64.b64encode(struct.pack("<%df" % len(embedding), *embedding)).decode()
    print(json.dumps({"embedding": embedding, "input_tokens": g["input_tokens"]}))
PY
cat > "$work/route.lua" <<'LUA'
local bodies = {}
for line in io.lines(os.getenv("R2_BENCH_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/route", {["Content-Type"] = "application/json"}, bodies[i])
end
LUA

# The embeddings server is never called (the requests carry embeddings); port 9 is discard.
"$r2" serve --checkpoints "$work/router" --embed-url http://127.0.0.1:9 \
  --host 127.0.0.1 --port 0 2> "$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  port=$(grep -oE '127\.0\.0\.1:[0-9]+' "$work/serve.log" | head -1 | cut -d: -f2 || true)
  [ -n "${port:-}" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { echo "r2 serve did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$server/status"; }

curl -sf "http://127.0.0.1:$port/healthz" >/dev/null
echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo)"
echo "server RSS before: $(rss)"
# A short warm-up, then the measured run.
R2_BENCH_BODIES="$work/bodies.jsonl" wrk -t"${R2_BENCH_THREADS:-2}" -c"$connections" -d3s -s "$work/route.lua" \
  "http://127.0.0.1:$port" >/dev/null
R2_BENCH_BODIES="$work/bodies.jsonl" wrk -t"${R2_BENCH_THREADS:-2}" -c"$connections" -d"${seconds}s" --latency \
  -s "$work/route.lua" "http://127.0.0.1:$port" | tee "$work/wrk.txt"
echo "server RSS after: $(rss)"
