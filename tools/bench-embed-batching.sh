#!/usr/bin/env bash
# Load benchmark of the in-process embedder behind `r2 serve`: POST /v1/route with {"query": ...}
# bodies (about 30 tokens each), from wrk on loopback, at concurrency 1 and 8, so that concurrent
# requests can share forward passes. Not a CI test: run it by hand on an otherwise idle machine.
#
#   tools/bench-embed-batching.sh [SECONDS] [RUNS]     (defaults: 20 s per measurement, 3 runs)
#
# The model is a network of Qwen3-0.6B's exact shape with random weights (the same work per
# token; nothing to download), written once by `cargo run -p r2-fixtures --example random_qwen3`
# into target/bench-embed/qwen3-0.6b-random (1.2 GB; the tokenizer is the tiny fixture's, so a
# token is about 5 characters of English).
#
# R2_BENCH_BIN: an r2 binary to measure instead of this tree's (e.g. a build of an older commit).
# R2_BENCH_SERVE_FLAGS: more flags for `r2 serve` (e.g. "--max-batch-tokens 0").
# Needs wrk and the shared data folder ($R2_SHARED_DIR, else ../shared) for the upstream
# checkpoints. Prints req/s and p50/p99 latency per run, then the medians and the ratio of the
# throughputs at concurrency 8 and 1.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
runs=${2:-3}
shared=${R2_SHARED_DIR:-../shared}
target=${CARGO_TARGET_DIR:-target}
work=$target/bench-embed
model=$work/qwen3-0.6b-random
mkdir -p "$work"

command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
r2=${R2_BENCH_BIN:-}
if [ -z "$r2" ]; then
  cargo build --release -q -p r2-cli
  r2=$target/release/r2
fi
if [ ! -f "$model/model.safetensors" ]; then
  cargo run --release -q -p r2-fixtures --example random_qwen3 -- "$model"
fi
if [ ! -f "$work/router/router.safetensors" ]; then
  "$r2" convert --from "$shared/upstream-r2-router" --out "$work/router"
fi

# 40 distinct queries of about 30 tokens (60 characters with the fixture's tokenizer), one JSON
# body a line.
python3 - > "$work/bodies.jsonl" <<'PY'
import json
subjects = ["a Python function", "the French revolution", "a prime sieve", "TCP and UDP",
            "photosynthesis", "a binary search tree", "the Krebs cycle", "Hamlet's plot"]
asks = ["Explain briefly how {} works and why it matters.",
        "Write a short summary of {} for a new student.",
        "List three common mistakes about {}, briefly.",
        "Compare {} with the most similar idea, briefly.",
        "Give one worked example that uses {}, briefly."]
for i in range(40):
    q = asks[i % len(asks)].format(subjects[i % len(subjects)]) + f" Case {i}."
    print(json.dumps({"query": (q + " Be concise and accurate, please.")[:60]}))
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

# shellcheck disable=SC2086
"$r2" serve --checkpoints "$work/router" --embedding-model-dir "$model" \
  --host 127.0.0.1 --port 0 --drain-timeout 0 ${R2_BENCH_SERVE_FLAGS:-} 2> "$work/serve.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 1200); do
  port=$(grep -aoE '127\.0\.0\.1:[0-9]+' "$work/serve.log" | head -1 | cut -d: -f2 || true)
  [ -n "${port:-}" ] && break
  kill -0 $server 2>/dev/null || break
  sleep 0.1
done
[ -n "${port:-}" ] || { echo "r2 serve did not start:" >&2; cat "$work/serve.log" >&2; exit 1; }
probe() { # one request, waited for: it queues behind whatever the model still runs
  curl -sf -H 'Content-Type: application/json' -d "$(head -1 "$work/bodies.jsonl")" \
    "http://127.0.0.1:$port/v1/route" >/dev/null
}
probe

echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo)"
echo "binary: $r2 ${R2_BENCH_SERVE_FLAGS:-}"

# `wrk --latency` output → "req/s p50_ms p99_ms errors".
summarise() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
      if (v ~ /m$/) return v * 60000; return v * 1000
    }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /Requests\/sec/ { rps = $2 }
    /Non-2xx|Socket errors/ { errors = errors " " $0 }
    END { printf "%.2f %.0f %.0f%s\n", rps, p50, p99, (errors == "" ? "" : " |" errors) }'
}

measure() { # CONNECTIONS → one summary line
  # A warm-up; the requests it leaves in flight are given up by wrk, but a forward pass that has
  # started runs to its end, so wait for the model to be free before measuring.
  R2_BENCH_BODIES="$work/bodies.jsonl" wrk -t1 -c"$1" -d3s --timeout 60s -s "$work/route.lua" \
    "http://127.0.0.1:$port" >/dev/null
  probe
  R2_BENCH_BODIES="$work/bodies.jsonl" wrk -t1 -c"$1" -d"${seconds}s" --timeout 60s --latency \
    -s "$work/route.lua" "http://127.0.0.1:$port" | tee -a "$work/wrk.txt" | summarise
}

: > "$work/wrk.txt"
: > "$work/runs.txt"
for run in $(seq 1 "$runs"); do
  for c in 1 8; do
    line=$(measure "$c")
    echo "run $run, concurrency $c: req/s p50_ms p99_ms = $line"
    echo "$c $line" >> "$work/runs.txt"
  done
done

python3 - "$work/runs.txt" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    c, rps, p50, p99 = line.split()[:4]
    rows.setdefault(int(c), []).append((float(rps), float(p50), float(p99)))
med = {c: [statistics.median(v[i] for v in rs) for i in range(3)] for c, rs in rows.items()}
for c in sorted(med):
    rps, p50, p99 = med[c]
    print(f"median of {len(rows[c])} runs, concurrency {c}: {rps:.2f} req/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms")
if 1 in med and 8 in med:
    print(f"throughput ratio, concurrency 8 / 1: {med[8][0] / med[1][0]:.2f}")
PY
