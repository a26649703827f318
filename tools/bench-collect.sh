#!/usr/bin/env bash
# Throughput benchmark of `r2 collect` against a fake OpenAI-compatible provider, judge and
# embeddings server (Python, on loopback, each answer after a fixed delay), so it measures r2's
# concurrency and bookkeeping, not a real provider. Not a CI test: run it by hand.
#
#   tools/bench-collect.sh [QUERIES] [CONCURRENCY] [DELAY_MS]     (defaults: 50, 8, 50 ms)
#
# R2_BENCH_BIN: an r2 binary to measure instead of building this tree's. Needs python3 (standard
# library only). Prints the calls made, the wall time and calls/s; with concurrency C and delay D
# the ideal is about C / (2·D) keys/s (one generation and one judge call per key).
set -euo pipefail
cd "$(dirname "$0")/.."

queries=${1:-50}
concurrency=${2:-8}
delay_ms=${3:-50}
work=target/bench-collect
rm -rf "$work"
mkdir -p "$work"

if [ -z "${R2_BENCH_BIN:-}" ]; then cargo build --release -q -p r2-cli; fi
r2=${R2_BENCH_BIN:-target/release/r2}

cat > "$work/pool.json" <<'JSON'
{"embedding_model": "bench/embedder", "embedding_dim": 8, "default_lambda": 0.5,
 "models": {"a": {"openrouter_id": "bench/a", "input_price_per_million": 1, "output_price_per_million": 2},
            "b": {"openrouter_id": "bench/b", "input_price_per_million": 1, "output_price_per_million": 2}}}
JSON
for i in $(seq 1 "$queries"); do echo "benchmark query number $i"; done > "$work/queries.txt"

cat > "$work/fake.py" <<'PY'
import hashlib, json, sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
delay = float(sys.argv[1]) / 1000
class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args): pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path.endswith("/embeddings"):
            data = [{"index": i, "embedding": [b / 255 for b in hashlib.sha256(t.encode()).digest()[:8]]}
                    for i, t in enumerate(body["input"])]
            answer = {"object": "list", "data": data, "model": body["model"]}
        else:
            time.sleep(delay)
            judge = "response_format" in body
            content = json.dumps({"score": 0.5}) if judge else "an answer"
            answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 20, "completion_tokens": 10}}
        out = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
PY
coproc FAKE { exec python3 "$work/fake.py" "$delay_ms"; }
trap 'kill "$FAKE_PID" 2>/dev/null || true' EXIT
read -r port <&"${FAKE[0]}"
base="http://127.0.0.1:$port/v1"

start=$(date +%s.%N)
"$r2" collect --queries "$work/queries.txt" --pool "$work/pool.json" --out "$work/out" \
  --llm-api-base "$base" --llm-api-key bench --judge-model bench/judge \
  --embed-url "http://127.0.0.1:$port" --concurrency "$concurrency"
end=$(date +%s.%N)
keys=$(wc -l < "$work/out/records.jsonl")
python3 -c "import sys; k, t = int(sys.argv[1]), float(sys.argv[2]); print(f'{k} keys ({2 * k} calls) in {t:.2f} s: {k / t:.1f} keys/s, {2 * k / t:.1f} calls/s')" \
  "$keys" "$(echo "$end - $start" | bc)"
