#!/usr/bin/env bash
# Throughput benchmark of `r2 collect` against a fake OpenAI-compatible provider, judge and
# embeddings server (crates/r2-fixtures/examples/fake_provider.rs, on loopback, each chat answer
# after a fixed delay), so it measures r2's concurrency and bookkeeping, not a real provider. Not a
# CI test: run it by hand.
#
#   tools/bench-collect.sh [QUERIES] [CONCURRENCY] [DELAY_MS] [MODELS]
#                                              (defaults: 50, 8, 50 ms, 11 models; 15 budgets + unlimited)
#
# R2_BENCH_BIN: an r2 binary to measure instead of building this tree's. Needs python3 (standard
# library only) for the pool file and the arithmetic. Prints the calls made, the wall time and calls/s; with concurrency C and delay D
# the ideal is about C / (2·D) keys/s (one generation and one judge call per key).
set -euo pipefail
cd "$(dirname "$0")/.."

queries=${1:-50}
concurrency=${2:-8}
delay_ms=${3:-50}
models=${4:-11}
work=target/bench-collect
rm -rf "$work"
mkdir -p "$work"

if [ -z "${R2_BENCH_BIN:-}" ]; then cargo build --release -q -p r2-cli; fi
r2=${R2_BENCH_BIN:-target/release/r2}

python3 - "$models" > "$work/pool.json" <<'PY'
import json, sys
models = {f"m{i}": {"openrouter_id": f"bench/m{i}", "input_price_per_million": 1, "output_price_per_million": 2}
          for i in range(int(sys.argv[1]))}
print(json.dumps({"embedding_model": "bench/embedder", "embedding_dim": 8, "default_lambda": 0.5, "models": models}))
PY
for i in $(seq 1 "$queries"); do echo "benchmark query number $i"; done > "$work/queries.txt"

cargo build --release -q -p r2-fixtures --example fake_provider
coproc FAKE { exec target/release/examples/fake_provider "$delay_ms"; }
trap 'kill "$FAKE_PID" 2>/dev/null || true' EXIT
read -r port <&"${FAKE[0]}"
base="http://127.0.0.1:$port/v1"

start=$(date +%s.%N)
/usr/bin/time -v "$r2" collect --queries "$work/queries.txt" --pool "$work/pool.json" --out "$work/out" \
  --llm-api-base "$base" --llm-api-key bench --judge-model bench/judge \
  --embed-url "http://127.0.0.1:$port" --concurrency "$concurrency" 2> "$work/time.txt"
grep -E "Maximum resident" "$work/time.txt" || true
end=$(date +%s.%N)
keys=$(wc -l < "$work/out/records.jsonl")
python3 -c "import sys; k, t = int(sys.argv[1]), float(sys.argv[2]); print(f'{k} keys ({2 * k} calls) in {t:.2f} s: {k / t:.1f} keys/s, {2 * k / t:.1f} calls/s')" \
  "$keys" "$(echo "$end - $start" | bc)"
